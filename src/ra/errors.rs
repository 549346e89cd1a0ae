//! Why the registration authority refuses a request, and what else can go wrong.

use crate::ca::CaError;
use crate::store::StoreError;

/// Why a request was refused: each is a rule, named in the problem document.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The client certificate is not a registered operator.
    UnknownOperator,
    OperatorWithdrawn,
    OperatorCertificateExpired,
    OperatorCertificateRevoked,
    /// The CMS signer is not the TLS client.
    SignerNotClient,
    /// The request is signed with the card's authentication key, not its signature key.
    SignatureKeyRequired,
    BadSignature,
    /// The request's time is outside the window around the CA's clock.
    Stale,
    /// The request id was used before.
    Replayed,
    /// The signed action is not the one the URL names, or targets another object.
    ActionMismatch,
    /// The role may not do this.
    RoleNotAllowed,
    /// The holder is outside the operator's organisations or units.
    OutOfScope,
    /// The certification policy is outside the operator's scope.
    PolicyOutOfScope,
    /// A designation would give more than the designator has.
    ScopeWidening,
    /// Approving or rejecting one's own submission.
    OwnSubmission,
    /// A batch approval names a request by a digest that is not its signed submission's.
    DigestMismatch,
    /// Acting on one's own certificate (the holder is the operator).
    OwnCertificate,
    /// Designating again an operator withdrawn by someone of a higher rank.
    WithdrawalStands,
    /// An operator credential is an authentication certificate (digitalSignature, TLS client),
    /// not a signature certificate (nonRepudiation).
    NotAuthenticationCertificate,
    /// The person already holds an active operator role (one role per person).
    PersonIsOperator,
    /// The person is one of the CA's security officers (never also an RA operator).
    PersonIsOfficer,
    /// The designee's certificate does not chain to an operator CA.
    UntrustedCertificate,
    OperatorExists,
    CardExists,
    NotPending,
    /// A card is renewed once, before it expires.
    RenewalNotAllowed,
    NotFound,
    /// The client certificate is not the current authentication certificate of a card.
    UnknownHolder,
    /// The holder's card is revoked or not valid now.
    HolderCertificateInvalid,
    /// A handover receipt not signed by the card's signature key, or not for this card.
    BadReceipt,
    AlreadyDelivered,
}

impl Refusal {
    /// Every refusal (the API document lists each rule; a test compares them).
    pub const ALL: [Refusal; 31] = [
        Refusal::UnknownOperator,
        Refusal::OperatorWithdrawn,
        Refusal::OperatorCertificateExpired,
        Refusal::OperatorCertificateRevoked,
        Refusal::SignerNotClient,
        Refusal::SignatureKeyRequired,
        Refusal::BadSignature,
        Refusal::Stale,
        Refusal::Replayed,
        Refusal::ActionMismatch,
        Refusal::RoleNotAllowed,
        Refusal::OutOfScope,
        Refusal::PolicyOutOfScope,
        Refusal::ScopeWidening,
        Refusal::OwnSubmission,
        Refusal::DigestMismatch,
        Refusal::OwnCertificate,
        Refusal::WithdrawalStands,
        Refusal::NotAuthenticationCertificate,
        Refusal::PersonIsOperator,
        Refusal::PersonIsOfficer,
        Refusal::UntrustedCertificate,
        Refusal::OperatorExists,
        Refusal::CardExists,
        Refusal::NotPending,
        Refusal::RenewalNotAllowed,
        Refusal::NotFound,
        Refusal::UnknownHolder,
        Refusal::HolderCertificateInvalid,
        Refusal::BadReceipt,
        Refusal::AlreadyDelivered,
    ];

    /// The rule's name (`urn:sceau:problem:<rule>`).
    pub fn rule(self) -> &'static str {
        match self {
            Refusal::UnknownOperator => "unknown-operator",
            Refusal::OperatorWithdrawn => "operator-withdrawn",
            Refusal::OperatorCertificateExpired => "operator-certificate-expired",
            Refusal::OperatorCertificateRevoked => "operator-certificate-revoked",
            Refusal::SignerNotClient => "signer-not-client",
            Refusal::SignatureKeyRequired => "signature-key-required",
            Refusal::BadSignature => "bad-signature",
            Refusal::Stale => "request-time-outside-window",
            Refusal::Replayed => "replayed-request",
            Refusal::ActionMismatch => "action-mismatch",
            Refusal::RoleNotAllowed => "role-not-allowed",
            Refusal::OutOfScope => "holder-out-of-scope",
            Refusal::PolicyOutOfScope => "policy-out-of-scope",
            Refusal::ScopeWidening => "scope-widening",
            Refusal::OwnSubmission => "own-submission",
            Refusal::DigestMismatch => "submission-digest-mismatch",
            Refusal::OwnCertificate => "own-certificate",
            Refusal::WithdrawalStands => "withdrawal-stands",
            Refusal::NotAuthenticationCertificate => "not-an-authentication-certificate",
            Refusal::PersonIsOperator => "person-already-operator",
            Refusal::PersonIsOfficer => "person-is-security-officer",
            Refusal::UntrustedCertificate => "untrusted-certificate",
            Refusal::OperatorExists => "operator-exists",
            Refusal::CardExists => "card-exists",
            Refusal::NotPending => "request-not-pending",
            Refusal::RenewalNotAllowed => "renewal-not-allowed",
            Refusal::NotFound => "not-found",
            Refusal::UnknownHolder => "unknown-holder",
            Refusal::HolderCertificateInvalid => "holder-certificate-invalid",
            Refusal::BadReceipt => "bad-receipt",
            Refusal::AlreadyDelivered => "card-already-delivered",
        }
    }
}

/// What went wrong in the registration authority.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RaError {
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("{detail}")]
    Refused { refusal: Refusal, detail: String },
    #[error("{0}")]
    Ca(#[from] CaError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The HSM token is unavailable: nothing was changed; retry later.
    #[error("the HSM token is unavailable; nothing was changed, retry later")]
    Unavailable,
    /// The same signed bytes were carried out before: this is their answer, and nothing was
    /// changed now. Not a refusal: [`super::RegistrationAuthority::handle`] answers it as a success.
    #[error("request carried out before")]
    CarriedOut(Box<serde_json::Value>),
}

impl RaError {
    pub fn refused(refusal: Refusal, detail: impl Into<String>) -> Self {
        RaError::Refused {
            refusal,
            detail: detail.into(),
        }
    }

    /// The rule a refusal names, for the audit log (`None` for failures that are not refusals:
    /// the HSM or the store being unavailable).
    pub fn rule(&self) -> Option<String> {
        match self {
            RaError::Malformed(_) => Some("malformed-request".into()),
            RaError::Refused { refusal, .. } => Some(refusal.rule().into()),
            RaError::Ca(CaError::Rejected(rejection)) => Some(rejection.problem_rule()),
            RaError::Ca(CaError::NotFound(_)) => Some("not-found".into()),
            RaError::Ca(CaError::AlreadyRevoked(_)) => Some("already-revoked".into()),
            RaError::Ca(CaError::Refused(_) | CaError::UnknownPolicy { .. }) => {
                Some("refused-by-ca".into())
            }
            RaError::Ca(_) | RaError::Store(_) | RaError::Unavailable | RaError::CarriedOut(_) => {
                None
            }
        }
    }
}
