//! The token PIN: read from a file or an environment variable, never from the configuration,
//! never printed. Wiped from memory when dropped. Or split among the security officers
//! ([`PinSource::Split`]): then the daemon holds it in memory only, once they have unsealed it.
use core::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

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
    /// Split M-of-N among the security officers (`pin_split = true`, docs/ceremonies.md#the-pin):
    /// nothing to read until they unseal the daemon, which then holds the PIN in this slot.
    Split(Arc<PinSlot>),
    /// Typed by the card's holder at a prompt (`sceau ra`, `sceau ceremony approve`), held in
    /// this process's memory for the session.
    Typed(Arc<PinSlot>),
}

/// Where an unsealed PIN lives: in this process's memory only, shared by every clone of the
/// configuration (the HSM's reconnections read it again).
#[derive(Default)]
pub struct PinSlot(Mutex<Option<Zeroizing<String>>>);

impl PinSlot {
    /// Puts the PIN the officers' shares made in force.
    pub fn fill(&self, pin: Pin) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(pin.0);
    }

    /// Forgets the PIN (the token refused it).
    pub fn empty(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    pub fn is_filled(&self) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    fn pin(&self) -> Option<Pin> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|pin| Pin(Zeroizing::new(pin.as_str().to_owned())))
    }
}

impl fmt::Debug for PinSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_filled() {
            "PinSlot(unsealed)"
        } else {
            "PinSlot(sealed)"
        })
    }
}

/// Two slots are the same slot (one configuration's), never compared by content.
impl PartialEq for PinSlot {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Eq for PinSlot {}

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
            PinSource::Split(slot) => return slot.pin().ok_or(PinError::Sealed),
            PinSource::Typed(slot) => {
                return match slot.pin() {
                    Some(pin) if !pin.expose().is_empty() => Ok(pin),
                    _ => Err(PinError::Empty {
                        origin: self.to_string(),
                    }),
                };
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
            PinSource::Split(_) => f.write_str("the security officers' shares (pin_split)"),
            PinSource::Typed(_) => f.write_str("the PIN typed at the prompt"),
        }
    }
}

/// A PIN. Not `Clone`; its `Debug` shows nothing; zeroed on drop.
pub struct Pin(Zeroizing<String>);

impl Pin {
    /// A new PIN of `length` characters drawn from the system's random generator: hexadecimal
    /// digits, which every token's PIN rules accept (16 characters or more: 64 bits or more).
    pub fn random(length: usize) -> Result<Self, PinError> {
        use aws_lc_rs::rand::SecureRandom;
        let mut bytes = Zeroizing::new(vec![0u8; length.div_ceil(2)]);
        aws_lc_rs::rand::SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| PinError::Random)?;
        let mut text = Zeroizing::new(hex::encode(&*bytes));
        text.truncate(length);
        Ok(Pin(text))
    }

    /// A PIN the officers' shares made (see `ca::ceremony::pin_split`).
    pub fn from_secret(secret: Zeroizing<String>) -> Self {
        Pin(secret)
    }

    /// A second copy of this PIN (also wiped when dropped): one for the token, one to keep.
    pub fn duplicate(&self) -> Self {
        Pin(Zeroizing::new(self.0.as_str().to_owned()))
    }

    /// The PIN's bytes, to split or to check against a digest.
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }

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
    #[error(
        "the PIN is split among the security officers and the daemon is sealed: `sceau unseal` (docs/ceremonies.md#the-pin)"
    )]
    Sealed,
    #[error("the system random number generator failed")]
    Random,
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
