//! Test-only fail points.
//!
//! With the `failpoints` cargo feature, `SCEAU_FAILPOINT=<name>` makes the process abort (as a
//! power cut or `kill -9` would) when it reaches the named point. Integration tests use this to
//! prove crash safety; without the feature every call compiles to nothing.

/// Aborts the process if the fail point `name` is armed.
#[inline]
pub fn hit(name: &str) {
    #[cfg(feature = "failpoints")]
    if std::env::var("SCEAU_FAILPOINT").is_ok_and(|armed| armed == name) {
        eprintln!("sceau: fail point {name} reached, aborting");
        std::process::abort();
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}
