//! What the `sceau` command says when it fails: one message (what was being done, and why it
//! failed) and a kind, which decides the exit status.
//!
//! The statuses are those of `sysexits.h`, which scripts and systemd already read: a unit can
//! refuse to restart a daemon whose configuration is wrong (`RestartPreventExitStatus=78`)
//! while it still restarts one that lost its HSM for a moment.

use std::fmt;
use std::process::ExitCode;

use crate::audit;
use crate::ca::CaError;
use crate::config;
use crate::hsm::HsmError;
use crate::service::ServiceError;
use crate::store::StoreError;
use crate::va::VaError;

/// Why a command failed, as far as what to do next is concerned.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// An argument on the command line is wrong (64, `EX_USAGE`): fix the command.
    Usage,
    /// What a file or a record holds is wrong (65, `EX_DATAERR`): a CSR, a certificate, a
    /// backup, an audit chain that does not verify.
    Data,
    /// Something needed is not there now (69, `EX_UNAVAILABLE`): the HSM, the daemon, a store
    /// another process holds; the same command may work later.
    Unavailable,
    /// A bug or a state that should not be (70, `EX_SOFTWARE`).
    Internal,
    /// A file or the store could not be read or written (74, `EX_IOERR`).
    Io,
    /// The CA, the RA or the daemon refused what was asked (77, `EX_NOPERM`): a policy rule,
    /// the CA's state (already revoked, not initialised), the daemon's answer.
    Refused,
    /// The configuration is wrong (78, `EX_CONFIG`): a file, a PIN, a key that is not where the
    /// configuration says.
    Config,
}

impl Failure {
    /// The process's exit status for this kind of failure.
    pub fn exit_status(self) -> u8 {
        match self {
            Failure::Usage => 64,
            Failure::Data => 65,
            Failure::Unavailable => 69,
            Failure::Internal => 70,
            Failure::Io => 74,
            Failure::Refused => 77,
            Failure::Config => 78,
        }
    }
}

/// An error for the user: what was being done, and why it failed.
#[derive(Debug)]
pub struct CliError {
    failure: Failure,
    message: String,
}

impl CliError {
    pub fn new(failure: Failure, message: impl Into<String>) -> Self {
        Self {
            failure,
            message: message.into(),
        }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(Failure::Usage, message)
    }

    pub fn data(message: impl Into<String>) -> Self {
        Self::new(Failure::Data, message)
    }

    pub fn refused(message: impl Into<String>) -> Self {
        Self::new(Failure::Refused, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(Failure::Unavailable, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Failure::Internal, message)
    }

    pub fn failure(&self) -> Failure {
        self.failure
    }

    /// The process's exit status.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.failure.exit_status())
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// The kind of failure an error of the library stands for.
pub(crate) trait Classify: fmt::Display {
    fn failure(&self) -> Failure;
}

impl Classify for CliError {
    fn failure(&self) -> Failure {
        self.failure
    }
}

impl Classify for config::LoadError {
    fn failure(&self) -> Failure {
        Failure::Config
    }
}

impl Classify for HsmError {
    fn failure(&self) -> Failure {
        match self {
            HsmError::Module { .. }
            | HsmError::TokenNotFound { .. }
            | HsmError::TokenAmbiguous { .. }
            | HsmError::TokenSerialMismatch { .. }
            | HsmError::DuplicateKey { .. }
            | HsmError::KeyAttributes { .. }
            | HsmError::Pin(_)
            | HsmError::PinIncorrect { .. }
            | HsmError::PinLocked
            | HsmError::KeyNotFound { .. }
            | HsmError::KeyExportable { .. }
            | HsmError::KeyMismatch { .. } => Failure::Config,
            HsmError::KeyExists { .. } => Failure::Refused,
            HsmError::Unavailable(_) | HsmError::Busy => Failure::Unavailable,
            _ => Failure::Internal,
        }
    }
}

impl Classify for StoreError {
    fn failure(&self) -> Failure {
        match self {
            StoreError::Locked { .. } | StoreError::WriterStopped => Failure::Unavailable,
            StoreError::Corrupt { .. } => Failure::Data,
            StoreError::NewerSchema { .. } => Failure::Refused,
            _ => Failure::Io,
        }
    }
}

impl Classify for CaError {
    fn failure(&self) -> Failure {
        match self {
            CaError::Hsm(error) => error.failure(),
            CaError::Store(error) => error.failure(),
            CaError::Serial(_) | CaError::UnknownPolicy { .. } | CaError::NotFound(_) => {
                Failure::Usage
            }
            CaError::KeyMismatch { .. } => Failure::Config,
            CaError::Import(_) | CaError::Corrupt(_) => Failure::Data,
            CaError::Io(_) => Failure::Io,
            CaError::SerialExhausted(_) | CaError::Encoding(_) => Failure::Internal,
            _ => Failure::Refused,
        }
    }
}

impl Classify for ServiceError {
    fn failure(&self) -> Failure {
        match self {
            ServiceError::Ca(error) => error.failure(),
            ServiceError::Invalid { .. } => Failure::Usage,
            ServiceError::HsmUnavailable | ServiceError::ShuttingDown => Failure::Unavailable,
            ServiceError::NoEngine => Failure::Config,
            ServiceError::NotInitialized | ServiceError::Bootstrap { .. } => Failure::Refused,
            _ => Failure::Internal,
        }
    }
}

impl Classify for VaError {
    fn failure(&self) -> Failure {
        match self {
            VaError::Hsm(error) => error.failure(),
            VaError::Store(error) => error.failure(),
            VaError::NotReady(_) => Failure::Refused,
            VaError::ShuttingDown => Failure::Unavailable,
            VaError::Io(_) => Failure::Io,
            VaError::Encoding(_) | VaError::UnknownIssuer => Failure::Internal,
        }
    }
}

impl Classify for audit::ChainBreak {
    fn failure(&self) -> Failure {
        Failure::Data
    }
}

impl Classify for crate::x509::serial::SerialError {
    fn failure(&self) -> Failure {
        Failure::Usage
    }
}

impl Classify for std::io::Error {
    fn failure(&self) -> Failure {
        Failure::Io
    }
}

impl Classify for serde_json::Error {
    fn failure(&self) -> Failure {
        Failure::Data
    }
}

impl Classify for der::Error {
    fn failure(&self) -> Failure {
        Failure::Data
    }
}

/// Errors from the library become messages (each already says what failed) of their kind.
macro_rules! cli_error_from {
    ($($t:ty),*) => {$(
        impl From<$t> for CliError {
            fn from(error: $t) -> Self {
                CliError::new(error.failure(), error.to_string())
            }
        }
    )*};
}
cli_error_from!(
    config::LoadError,
    CaError,
    HsmError,
    StoreError,
    audit::ChainBreak,
    crate::x509::serial::SerialError,
    std::io::Error,
    serde_json::Error,
    der::Error
);

impl From<ServiceError> for CliError {
    fn from(error: ServiceError) -> Self {
        match error {
            // The CLI's options carry the request's field names.
            ServiceError::Invalid { field, detail } => {
                CliError::usage(format!("--{field}: {detail}"))
            }
            other => CliError::new(other.failure(), other.to_string()),
        }
    }
}

/// Adds what was being done to an error, keeping its kind.
pub(crate) trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, CliError>;
}

impl<T, E: Classify> Context<T> for Result<T, E> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, CliError> {
        self.map_err(|e| CliError::new(e.failure(), format!("{}: {e}", what())))
    }
}

/// Adds what was being done to an error whose kind the caller knows (an error type of one
/// use, such as the RA's at start-up).
pub(crate) trait ContextAs<T> {
    fn context_as(self, failure: Failure, what: impl FnOnce() -> String) -> Result<T, CliError>;
}

impl<T, E: fmt::Display> ContextAs<T> for Result<T, E> {
    fn context_as(self, failure: Failure, what: impl FnOnce() -> String) -> Result<T, CliError> {
        self.map_err(|e| CliError::new(failure, format!("{}: {e}", what())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each kind has its own status, none of them 0, 1 (a panic's) or 2 (clap's usage errors).
    #[test]
    fn every_kind_exits_with_a_status_of_its_own() {
        let kinds = [
            Failure::Usage,
            Failure::Data,
            Failure::Unavailable,
            Failure::Internal,
            Failure::Io,
            Failure::Refused,
            Failure::Config,
        ];
        let statuses: std::collections::BTreeSet<u8> =
            kinds.iter().map(|k| k.exit_status()).collect();
        assert_eq!(statuses.len(), kinds.len());
        assert!(statuses.iter().all(|s| *s > 2));
    }

    /// Context keeps the kind of what failed, and says what was being done first.
    #[test]
    fn context_keeps_the_kind_and_prefixes_the_message() {
        let missing: Result<(), std::io::Error> = Err(std::io::ErrorKind::NotFound.into());
        let error = missing.context(|| "reading x.pem".into()).unwrap_err();
        assert_eq!(error.failure(), Failure::Io);
        assert!(error.to_string().starts_with("reading x.pem: "));
        let locked: Result<(), StoreError> = Err(StoreError::Locked {
            path: "/var/lib/sceau/store".into(),
        });
        let error = locked.context(|| "opening the store".into()).unwrap_err();
        assert_eq!(error.failure(), Failure::Unavailable);
        let refused = CliError::from(ServiceError::Invalid {
            field: "reason",
            detail: "unknown".into(),
        });
        assert_eq!(
            (refused.failure(), refused.to_string().as_str()),
            (Failure::Usage, "--reason: unknown")
        );
    }
}
