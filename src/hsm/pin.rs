//! The token PIN: read from a file or an environment variable, never from the configuration,
//! never printed. Wiped from memory when dropped.
use core::fmt;
use std::path::PathBuf;

use zeroize::Zeroizing;

/// Where the PIN comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PinSource {
    /// A file holding the PIN (systemd `LoadCredential=` puts one in `$CREDENTIALS_DIRECTORY`).
    File(PathBuf),
    /// An environment variable holding the PIN. Prefer a file or a credential: the environment
    /// of a process stays readable in /proc to its user and to root.
    Env(String),
    /// A systemd credential (`LoadCredential=NAME:…`): the file `$CREDENTIALS_DIRECTORY/NAME`,
    /// readable by the service alone.
    Credential(String),
}

impl PinSource {
    /// Reads the PIN now. A trailing newline is removed; an empty PIN is refused.
    pub fn read(&self) -> Result<Pin, PinError> {
        let raw = match self {
            PinSource::File(path) => {
                Zeroizing::new(std::fs::read_to_string(path).map_err(|e| PinError::File {
                    path: path.clone(),
                    reason: e.kind().to_string(),
                })?)
            }
            PinSource::Env(name) => Zeroizing::new(
                std::env::var(name).map_err(|_| PinError::Env { name: name.clone() })?,
            ),
            PinSource::Credential(name) => {
                let directory = std::env::var_os("CREDENTIALS_DIRECTORY")
                    .ok_or_else(|| PinError::Credential { name: name.clone() })?;
                let path = PathBuf::from(directory).join(name);
                Zeroizing::new(std::fs::read_to_string(&path).map_err(|e| PinError::File {
                    path,
                    reason: e.kind().to_string(),
                })?)
            }
        };
        let pin = raw.trim_end_matches(['\r', '\n']);
        if pin.is_empty() {
            return Err(PinError::Empty {
                origin: self.to_string(),
            });
        }
        Ok(Pin(Zeroizing::new(pin.to_owned())))
    }
}

impl fmt::Display for PinSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinSource::File(path) => write!(f, "file {}", path.display()),
            PinSource::Env(name) => write!(f, "environment variable {name}"),
            PinSource::Credential(name) => write!(f, "systemd credential {name}"),
        }
    }
}

/// A PIN. Not `Clone`; its `Debug` shows nothing; zeroed on drop.
pub struct Pin(Zeroizing<String>);

impl Pin {
    pub(crate) fn to_auth_pin(&self) -> cryptoki::types::AuthPin {
        cryptoki::types::AuthPin::new(self.0.as_str().into())
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(<redacted>)")
    }
}

/// Why the PIN could not be read. Never contains the PIN.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PinError {
    #[error("cannot read the PIN file {}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
    #[error("the PIN environment variable {name} is not set")]
    Env { name: String },
    #[error(
        "the PIN credential {name} needs $CREDENTIALS_DIRECTORY (systemd LoadCredential={name}:FILE)"
    )]
    Credential { name: String },
    #[error("the PIN from {origin} is empty")]
    Empty { origin: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_never_shows_in_debug_and_newline_is_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pin");
        std::fs::write(&path, "123456\n").unwrap();
        let pin = PinSource::File(path).read().unwrap();
        assert_eq!(format!("{pin:?}"), "Pin(<redacted>)");
        assert_eq!(pin.0.as_str(), "123456");
    }

    #[test]
    fn empty_or_missing_pin_is_an_error_that_does_not_leak() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pin");
        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(
            PinSource::File(path).read(),
            Err(PinError::Empty { .. })
        ));
        let missing = PinSource::File(dir.path().join("absent"));
        let message = missing.read().unwrap_err().to_string();
        assert!(message.contains("absent"), "{message}");
    }
}
