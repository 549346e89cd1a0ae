//! Why an action of the service layer failed, in terms each entry point maps once: the admin
//! API to a problem document (`http::problem`), the CLI to its message.

use crate::ca::CaError;

#[derive(Debug)]
pub enum ServiceError {
    /// The CA refused or failed (its own error says which).
    Ca(CaError),
    /// A field of the request is wrong: nothing was changed.
    Invalid {
        field: &'static str,
        detail: String,
    },
    /// No CA in this store.
    NotInitialized,
    /// The token is unavailable: nothing was changed; retry later.
    HsmUnavailable,
    /// The daemon is stopping.
    ShuttingDown,
    /// The RA refused to register the first AE (the rule it broke, and why).
    Bootstrap {
        rule: String,
        detail: String,
    },
    Backup(String),
    Checkpoint(String),
    Crl(String),
    /// New certificates are in force, but their OCSP responses could not be signed now.
    Resigning(String),
    /// A new CA is stored, but the daemon could not put it in force.
    RolloverIncomplete(String),
    /// `[nats]` is not configured.
    NoEngine,
    /// A share presented to the sealed daemon was refused: nothing was taken.
    Unseal(crate::ca::ceremony::pin_split::UnsealError),
}

impl core::fmt::Display for ServiceError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ServiceError::Ca(error) => write!(f, "{error}"),
            ServiceError::Invalid { field, detail } => write!(f, "{field}: {detail}"),
            ServiceError::NotInitialized => f.write_str("no CA in this store"),
            ServiceError::HsmUnavailable => {
                f.write_str("the HSM token is unavailable; nothing was changed, retry later")
            }
            ServiceError::ShuttingDown => f.write_str("the daemon is stopping"),
            ServiceError::Bootstrap { detail, .. } => f.write_str(detail),
            ServiceError::Backup(detail)
            | ServiceError::Checkpoint(detail)
            | ServiceError::Crl(detail)
            | ServiceError::Resigning(detail) => f.write_str(detail),
            ServiceError::RolloverIncomplete(detail) => write!(
                f,
                "the new CA is stored, but the daemon could not put it in force (restart it): {detail}"
            ),
            ServiceError::NoEngine => {
                f.write_str("[nats] is not configured: there is no engine to publish to")
            }
            ServiceError::Unseal(error) => write!(f, "share refused, nothing taken: {error}"),
        }
    }
}

impl std::error::Error for ServiceError {}

impl From<CaError> for ServiceError {
    fn from(error: CaError) -> Self {
        ServiceError::Ca(error)
    }
}

impl From<crate::store::StoreError> for ServiceError {
    fn from(error: crate::store::StoreError) -> Self {
        ServiceError::Ca(CaError::from(error))
    }
}

impl From<crate::issuer::IssuerError> for ServiceError {
    fn from(error: crate::issuer::IssuerError) -> Self {
        ServiceError::Ca(CaError::from(error))
    }
}
