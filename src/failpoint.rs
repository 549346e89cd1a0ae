//! Test-only hooks: fail points and a pinned clock.
//!
//! With the `test-hooks` cargo feature, `SCEAU_FAILPOINT=<name>` makes the process abort (as a
//! power cut or `kill -9` would) when it reaches the named point, and `SCEAU_NOW=<RFC 3339>`
//! pins the clock of the `sceau` command. Integration tests use them to prove crash safety and
//! date-dependent rules. Without the feature, [`hit`] compiles to nothing and [`pinned_now`] is
//! always `None`.
use crate::x509::Timestamp;

/// Aborts the process if the fail point `name` is armed.
#[inline]
pub fn hit(name: &str) {
    #[cfg(feature = "test-hooks")]
    if std::env::var("SCEAU_FAILPOINT").is_ok_and(|armed| armed == name) {
        eprintln!("sceau: fail point {name} reached, aborting");
        std::process::abort();
    }
    #[cfg(not(feature = "test-hooks"))]
    let _ = name;
}

/// The time pinned by `SCEAU_NOW`, in test builds.
pub fn pinned_now() -> Option<Timestamp> {
    #[cfg(feature = "test-hooks")]
    if let Ok(text) = std::env::var("SCEAU_NOW") {
        return Timestamp::parse_rfc3339(&text).ok();
    }
    None
}
