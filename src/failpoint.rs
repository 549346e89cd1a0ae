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

/// Waits if the pause point `name` is armed (`SCEAU_PAUSE=<name>:<milliseconds>`): tests widen
/// a race window with it (several points: `a:500,b:800`) (a revocation landing between an issuance's commit and its OCSP
/// update, a client hanging up after a commit) to show it is closed, deterministically.
pub async fn pause(name: &str) {
    #[cfg(feature = "test-hooks")]
    if let Ok(armed) = std::env::var("SCEAU_PAUSE") {
        let millis = armed.split(',').find_map(|point| {
            let (point, millis) = point.split_once(':')?;
            (point == name)
                .then(|| millis.parse::<u64>().ok())
                .flatten()
        });
        if let Some(millis) = millis {
            tokio::time::sleep(std::time::Duration::from_millis(millis)).await;
        }
    }
    #[cfg(not(feature = "test-hooks"))]
    let _ = name;
}

/// Blocks the calling thread while the stall point `name` is armed
/// (`SCEAU_STALL=<name>:<file>`) and the file exists: a hung device (an HSM that stops
/// answering without failing), switched on and off by the test.
pub fn stall(name: &str) {
    #[cfg(feature = "test-hooks")]
    if let Ok(armed) = std::env::var("SCEAU_STALL")
        && let Some((point, file)) = armed.split_once(':')
        && point == name
    {
        while std::path::Path::new(file).exists() {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    #[cfg(not(feature = "test-hooks"))]
    let _ = name;
}

/// The scheduled backups' interval: `configured`, or `SCEAU_BACKUP_EVERY_MS` in test builds.
pub fn backup_interval(configured: std::time::Duration) -> std::time::Duration {
    #[cfg(feature = "test-hooks")]
    if let Some(millis) = std::env::var("SCEAU_BACKUP_EVERY_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        return std::time::Duration::from_millis(millis);
    }
    configured
}

/// The time pinned by `SCEAU_NOW`, in test builds.
pub fn pinned_now() -> Option<Timestamp> {
    #[cfg(feature = "test-hooks")]
    if let Ok(text) = std::env::var("SCEAU_NOW") {
        return Timestamp::parse_rfc3339(&text).ok();
    }
    None
}
