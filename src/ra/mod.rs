//! The registration authority: operators, their signed requests, and the card workflow.
//!
//! An operator is a person holding an agent card of this CA, registered with a role and a scope
//! ([`operators`]): the card's authentication certificate is the TLS client credential, and every
//! state-changing request is a JSON document signed with CMS by the same card's signature
//! certificate, and by nothing else ([`request`]). The workflow follows RGS *** separation of duties: an OC (or AED) submits a
//! card request after meeting the holder face to face; a *different* AED or above approves it,
//! and only then does the CA issue both certificates; any operator whose scope covers a holder
//! may revoke.
//!
//! Each accepted request is one atomic write that carries its audit event and the signed bytes
//! as evidence (its id, once used, is refused again). Each refused request writes only a
//! `request_refused` audit event. The RA reaches the CA through [`CertificateAuthority`] and
//! tells the validation authority what changed through [`StatusPublisher`]; it never signs.

pub mod batch;
pub mod cards;
pub mod holders;
pub mod operators;
mod persons;
pub mod refusals;
pub mod request;
mod revocations;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use der::Decode;
use serde::{Deserialize, Serialize};
use x509_cert::Certificate;

use crate::audit::AuditEvent;
use crate::ca::revoke::RevokedCertificate;
use crate::ca::{CaError, CaState, CertificateAuthority};
use crate::store::CardRecord;
use crate::store::schema::{Cards, Certificates, ExpiryIndex, Revocations};
use crate::store::{
    CertKey, ExpiryKey, IssuerId, KeyCodec, Reader, Store, StoreError, Txn, base64_bytes,
};
use crate::x509::name::{DistinguishedName, parse_distinguished_name};
use crate::x509::time::Clock;
use crate::x509::{Serial, Timestamp, cms, keys, pem};
use cards::RequestState;
use operators::{
    OperatorPersons, OperatorRecord, Operators, Role, Scope, Withdrawal, designated_through,
    operator_id,
};
use request::{Action, SignedRequest};

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
    pub const ALL: [Refusal; 30] = [
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
    /// changed now. Not a refusal: [`RegistrationAuthority::handle`] answers it as a success.
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

/// How the RA tells the validation authority what changed, so that OCSP answers for new
/// certificates and says "revoked" before a revocation request returns.
pub trait StatusPublisher: Send + Sync {
    fn issued(&self, keys: Vec<CertKey>) -> BoxFuture<'_>;
    fn revoked(&self, revoked: Vec<RevokedCertificate>) -> BoxFuture<'_>;
    /// Whether new statuses can be signed now (the HSM token is connected).
    fn available(&self) -> bool;
}

pub type BoxFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// RA settings (`[ra]` in the configuration).
#[derive(Clone, Debug)]
pub struct RaSettings {
    /// How far a signed request's `time` may be from the CA's clock.
    pub time_window_seconds: u64,
    pub authentication_policy: String,
    pub signature_policy: String,
}

/// An authenticated operator: the TLS client, registered, active, valid, not revoked.
#[derive(Clone, Debug)]
pub struct Operator {
    pub record: OperatorRecord,
    /// The card's authentication certificate (the TLS client's).
    pub certificate: Certificate,
    /// The same card's signature certificate, when it is valid and not revoked.
    pub signature_certificate: Option<Certificate>,
    pub subject: DistinguishedName,
}

/// A CA whose certificates operators may hold.
#[derive(Clone, Debug)]
struct OperatorCa {
    id: IssuerId,
    subject_der: Vec<u8>,
    public_key: spki::SubjectPublicKeyInfoOwned,
}

/// A signed request, kept as evidence (its id is the key, so an id is used once).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceRecord {
    pub operator: String,
    pub action: String,
    pub received_at: Timestamp,
    #[serde(with = "base64_bytes")]
    pub cms: Vec<u8>,
    /// The answer given, written in the batch that carried the request out: a retry of the
    /// same bytes gets it again (issue 12 problem 4). `None` for an approval whose card is not
    /// stored yet (a retry resumes it) and for records written before answers were kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<serde_json::Value>,
}

crate::store::table!(
    /// Signed RA requests that were carried out, by request id: the evidence, and the
    /// replay guard (an id is used once).
    Evidence, "evidence", String, EvidenceRecord
);
crate::store::json_value!(EvidenceRecord);

impl EvidenceRecord {
    /// With the answer the request gets, recorded in the same batch.
    fn answered(mut self, answer: &serde_json::Value) -> Self {
        self.outcome = Some(answer.clone());
        self
    }
}

/// What a request changed that the validation authority must publish.
#[derive(Debug, Default)]
struct Effects {
    issued: Vec<CertKey>,
    revoked: Vec<RevokedCertificate>,
}

/// The registration authority.
pub struct RegistrationAuthority {
    store: Store,
    ca: CertificateAuthority,
    publisher: Arc<dyn StatusPublisher>,
    clock: Arc<dyn Clock>,
    settings: RaSettings,
    /// The issuing CAs whose cards operators carry; grows with CA rollovers.
    operator_cas: std::sync::RwLock<Arc<Vec<OperatorCa>>>,
    /// Refusals repeated by one client, counted before they are written.
    refusals: refusals::RefusalLog,
    /// Card requests being approved: one approval of a request at a time (two at once, a
    /// client's retry or two approvers, would each reserve the keys and fail each other).
    approving: KeyedLocks,
}

/// Mutual exclusion per key (a request id), for the blocking threads that carry requests out.
#[derive(Default)]
struct KeyedLocks {
    held: std::sync::Mutex<std::collections::HashSet<String>>,
    released: std::sync::Condvar,
}

/// Holds a key of [`KeyedLocks`] until dropped.
struct KeyGuard<'a> {
    locks: &'a KeyedLocks,
    key: String,
}

impl KeyedLocks {
    /// Waits until nobody holds `key`, then holds it.
    fn lock(&self, key: &str) -> KeyGuard<'_> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        while held.contains(key) {
            held = self.released.wait(held).unwrap_or_else(|p| p.into_inner());
        }
        held.insert(key.to_owned());
        KeyGuard {
            locks: self,
            key: key.to_owned(),
        }
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        let mut held = self.locks.held.lock().unwrap_or_else(|p| p.into_inner());
        held.remove(&self.key);
        self.locks.released.notify_all();
    }
}

impl core::fmt::Debug for RegistrationAuthority {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RegistrationAuthority").finish()
    }
}

impl RegistrationAuthority {
    pub fn new(
        ca: CertificateAuthority,
        state: &CaState,
        publisher: Arc<dyn StatusPublisher>,
        clock: Arc<dyn Clock>,
        settings: RaSettings,
    ) -> Result<Self, RaError> {
        let rekeyed = persons::rekey(ca.store())?;
        if !rekeyed.is_empty() {
            tracing::info!(operators = ?rekeyed, "operators' person keys recomputed by the rule of names");
        }
        Ok(Self {
            store: ca.store().clone(),
            operator_cas: std::sync::RwLock::new(Arc::new(operator_cas(state)?)),
            ca,
            publisher,
            clock,
            settings,
            refusals: refusals::RefusalLog::default(),
            approving: KeyedLocks::default(),
        })
    }

    /// Trusts the operator cards of every issuing CA of `state` (after a CA rollover).
    pub fn reload_operator_cas(&self, state: &CaState) -> Result<(), RaError> {
        let cas = operator_cas(state)?;
        *self.operator_cas.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(cas);
        Ok(())
    }

    /// The operator behind a TLS client certificate: the current authentication certificate of
    /// a card whose holder is an active operator.
    pub fn authenticate(&self, certificate_der: &[u8]) -> Result<Operator, RaError> {
        let unknown = || {
            RaError::refused(
                Refusal::UnknownOperator,
                format!(
                    "certificate {} is not the authentication certificate of an operator's card",
                    operator_id(certificate_der)
                ),
            )
        };
        let key = match self.certificate_key(certificate_der) {
            Ok(key) => key,
            Err(RaError::Refused { .. }) => return Err(unknown()),
            Err(other) => return Err(other),
        };
        let stored = self.store.get::<Certificates>(&key)?;
        let Some(card_id) = stored
            .as_ref()
            .filter(|stored| stored.der == certificate_der)
            .and_then(|stored| stored.card.clone())
        else {
            return Err(unknown());
        };
        let card = self.store.get::<Cards>(&card_id)?.ok_or_else(unknown)?;
        let record = self.store.get::<Operators>(&card_id)?.ok_or_else(unknown)?;
        if let Some(withdrawal) = &record.withdrawn {
            return Err(RaError::refused(
                Refusal::OperatorWithdrawn,
                format!("operator {} was withdrawn on {}", record.id, withdrawal.at),
            ));
        }
        // An operator acts only while everyone above them in the designation chain does: a
        // designation that raced its designator's withdrawal (and so escaped the cascade) gives
        // no rights.
        let mut above = record.designated_by.clone();
        for _ in 0..64 {
            let Some(id) = above else { break };
            match self.store.get::<Operators>(&id)? {
                Some(designator) if designator.is_active() => above = designator.designated_by,
                _ => {
                    return Err(RaError::refused(
                        Refusal::OperatorWithdrawn,
                        format!(
                            "operator {} was designated by a withdrawn operator",
                            record.id
                        ),
                    ));
                }
            }
        }
        let now = self.clock.now();
        let (certificate, subject) =
            self.check_operator_certificate(&self.store, certificate_der, now)?;
        // A certificate the card's renewal replaced is revoked (superseded), so refused above;
        // this catches a card record that moved on without it.
        if card.authentication != key {
            return Err(unknown());
        }
        let signature_certificate = match self.store.get::<Certificates>(&card.signature)? {
            Some(stored) => self.check_signature_certificate(&stored.der, now).ok(),
            None => None,
        };
        Ok(Operator {
            record,
            certificate,
            signature_certificate,
            subject,
        })
    }

    /// Where a certificate of an operator CA is stored: its issuer (signature checked) and
    /// serial.
    fn certificate_key(&self, der: &[u8]) -> Result<CertKey, RaError> {
        let issuer = self.issuer_of(der)?;
        let certificate = Certificate::from_der(der)
            .map_err(|e| RaError::Malformed(format!("operator certificate: {e}")))?;
        let serial = Serial::from_serial_number(certificate.tbs_certificate().serial_number())
            .map_err(|e| RaError::Malformed(format!("operator certificate serial: {e}")))?;
        Ok(CertKey { issuer, serial })
    }

    /// A card's signature certificate as a request signer: valid now, not revoked,
    /// nonRepudiation.
    fn check_signature_certificate(
        &self,
        der: &[u8],
        now: Timestamp,
    ) -> Result<Certificate, RaError> {
        use x509_cert::ext::pkix::KeyUsage;
        let key = self.certificate_key(der)?;
        let certificate = Certificate::from_der(der)
            .map_err(|e| RaError::Malformed(format!("signature certificate: {e}")))?;
        let validity = certificate.tbs_certificate().validity();
        let valid = Timestamp::from_x509_time(&validity.not_before) <= now
            && now <= Timestamp::from_x509_time(&validity.not_after);
        let non_repudiation = matches!(
            certificate.tbs_certificate().get_extension::<KeyUsage>(),
            Ok(Some((_, usage))) if usage.non_repudiation()
        );
        if !valid || !non_repudiation || self.store.contains::<Revocations>(&key)? {
            return Err(RaError::refused(
                Refusal::OperatorCertificateRevoked,
                "the card's signature certificate cannot sign",
            ));
        }
        Ok(certificate)
    }

    /// Checks a signed request from `operator` and carries it out. `expected` is the action
    /// the URL names and `target` the object it names (`None` when the URL names none).
    /// A refusal is recorded in the audit log and changes nothing else.
    pub async fn handle(
        self: &Arc<Self>,
        operator: &Operator,
        expected: request::ActionKind,
        target: Option<String>,
        cms: Vec<u8>,
    ) -> Result<serde_json::Value, RaError> {
        let expected = expected.name();
        let actor = operator.clone();
        self.run_signed(operator.record.id.clone(), expected, cms, move |ra, cms| {
            let request = match ra.open(&actor, expected, target.as_deref(), cms) {
                Ok(request) => request,
                Err(error) => return (None, Err(error)),
            };
            let id = request.id.clone();
            (Some(id), ra.carry_out(&actor, request))
        })
        .await
        .1
    }

    /// Runs a signed request of `client` (an operator id, or a holder's card): `carry_out`
    /// opens and carries it out, returning its id once known. A retry gets its first answer;
    /// a refusal is audited. The commit and what must follow it (OCSP, the CRL trigger) run in
    /// a task of their own: hyper drops this future if the client hangs up, and a committed
    /// change must still reach the validation authority.
    async fn run_signed<F>(
        self: &Arc<Self>,
        client: String,
        expected: &'static str,
        cms: Vec<u8>,
        carry_out: F,
    ) -> (Option<String>, Result<serde_json::Value, RaError>)
    where
        F: FnOnce(
                &Arc<Self>,
                Vec<u8>,
            ) -> (
                Option<String>,
                Result<(serde_json::Value, Effects), RaError>,
            ) + Send
            + 'static,
    {
        let ra = self.clone();
        let work = async move {
            let carried_out = ra.clone();
            let outcome = tokio::task::spawn_blocking(move || {
                let ra = carried_out;
                let sent = cms.clone();
                let (request_id, result) = carry_out(&ra, cms);
                let result = match result {
                    Err(RaError::CarriedOut(answer)) => Ok(retried_effects(*answer)),
                    // Two copies of one request at once: the one that lost the race is
                    // answered as the retry it is, whatever stopped it.
                    Err(error) => match request_id
                        .as_deref()
                        .and_then(|id| ra.answer_to_retry(id, &sent))
                    {
                        Some(answer) => Ok(retried_effects(answer)),
                        None => Err(error),
                    },
                    carried_out => carried_out,
                };
                if let Err(error) = &result {
                    ra.record_refusal(&client, expected, request_id.clone(), error);
                }
                (request_id, result)
            })
            .await;
            let (request_id, outcome) = match outcome {
                Ok(done) => done,
                Err(e) => {
                    return (
                        None,
                        Err(RaError::Malformed(format!("request task failed: {e}"))),
                    );
                }
            };
            let (value, effects) = match outcome {
                Ok(done) => done,
                Err(error) => return (request_id, Err(error)),
            };
            if !effects.revoked.is_empty() {
                ra.publisher.revoked(effects.revoked).await;
            }
            if !effects.issued.is_empty() {
                ra.publisher.issued(effects.issued).await;
            }
            (request_id, Ok(value))
        };
        match tokio::spawn(work).await {
            Ok(done) => done,
            Err(e) => (
                None,
                Err(RaError::Malformed(format!("request task failed: {e}"))),
            ),
        }
    }

    /// Applies the effects of what was carried out when the rest of a request failed (a batch
    /// stopped by the HSM), from the blocking task that carried it out.
    fn apply_effects_now(&self, effects: Effects) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!(
                "ra: no runtime to apply a partial batch's effects on; the CA applies them at its next start"
            );
            return;
        };
        runtime.block_on(async {
            if !effects.revoked.is_empty() {
                self.publisher.revoked(effects.revoked).await;
            }
            if !effects.issued.is_empty() {
                self.publisher.issued(effects.issued).await;
            }
        });
    }

    /// Verifies the CMS envelope against the operator's certificate, then the id, the time and
    /// that the action is the one the URL names.
    fn open(
        &self,
        operator: &Operator,
        expected: &str,
        target: Option<&str>,
        cms_der: Vec<u8>,
    ) -> Result<SignedRequest, RaError> {
        // Operators sign with their card's signature certificate (nonRepudiation): an act of
        // the RA is attributable to a person. The authentication key only proves presence.
        let Some(signer) = &operator.signature_certificate else {
            return Err(RaError::refused(
                Refusal::OperatorCertificateRevoked,
                "the card's signature certificate cannot sign (revoked, or not valid now): requests are signed with it",
            ));
        };
        let request = self.open_signed(
            cms_der,
            (signer, &operator.certificate),
            "the request is signed by another certificate than the TLS client's card's signature certificate",
            expected,
        )?;
        let named = match &request.action {
            Action::Withdraw { operator, .. } => Some(operator.as_str()),
            Action::Approve { request, .. } | Action::Reject { request, .. } => {
                Some(request.as_str())
            }
            Action::Renew { card, .. } => Some(card.as_str()),
            Action::CancelRevocation { scheduled } => Some(scheduled.as_str()),
            Action::Deliver { card, .. } => Some(card.as_str()),
            _ => None,
        };
        if named != target {
            return Err(RaError::refused(
                Refusal::ActionMismatch,
                format!("the signed request names {named:?}, the URL {target:?}"),
            ));
        }
        self.check_unused(&request)?;
        Ok(request)
    }

    /// Verifies a CMS envelope signed by `signer`, the card's signature certificate
    /// (`wrong_signer`: the refusal's wording otherwise; one signed by the card's
    /// `authentication` certificate is refused as such), answers a retry of bytes already
    /// carried out, then checks the id, the time and that the action is `expected`.
    fn open_signed(
        &self,
        cms_der: Vec<u8>,
        (signer, authentication): (&Certificate, &Certificate),
        wrong_signer: &str,
        expected: &str,
    ) -> Result<SignedRequest, RaError> {
        let content = cms::verify_attached_by_one_of(&cms_der, &[signer])
            .map(|(content, _)| content)
            .map_err(|e| match e {
                cms::CmsError::WrongSigner
                    if cms::verify_attached_by_one_of(&cms_der, &[authentication]).is_ok() =>
                {
                    RaError::refused(
                        Refusal::SignatureKeyRequired,
                        "the request is signed with the card's authentication key, which proves presence only: sign it with the card's signature key (its certificate has keyUsage nonRepudiation)",
                    )
                }
                cms::CmsError::WrongSigner => {
                    RaError::refused(Refusal::SignerNotClient, wrong_signer)
                }
                cms::CmsError::Signature(_) | cms::CmsError::Attribute(..) => {
                    RaError::refused(Refusal::BadSignature, e.to_string())
                }
                other => RaError::Malformed(other.to_string()),
            })?;
        // A retry of bytes already carried out gets their answer, even once their time has
        // left the window: the signature is the one checked then.
        if let Some(id) = request::id_of(&content)
            && let Some(answer) = self.answer_to_retry(&id, &cms_der)
        {
            return Err(RaError::CarriedOut(Box::new(answer)));
        }
        let request = request::parse(
            &content,
            cms_der,
            self.clock.now(),
            self.settings.time_window_seconds,
        )?;
        if request.action.name() != expected {
            return Err(RaError::refused(
                Refusal::ActionMismatch,
                format!(
                    "the signed action is {:?}, this URL takes {expected:?}",
                    request.action.name()
                ),
            ));
        }
        Ok(request)
    }

    /// The request's id was never used, or it is an approval being resumed by its own bytes.
    fn check_unused(&self, request: &SignedRequest) -> Result<(), RaError> {
        if let Some(earlier) = self.store.get::<Evidence>(&request.id)? {
            match retried(&earlier, &request.evidence) {
                Retry::Answered(outcome) => return Err(RaError::CarriedOut(Box::new(outcome))),
                Retry::Resume => {}
                Retry::Other => return Err(replayed(&request.id)),
            }
        }
        Ok(())
    }

    /// The recorded answer to request `id`, if `cms` is the very request carried out under it.
    fn answer_to_retry(&self, id: &str, cms: &[u8]) -> Option<serde_json::Value> {
        let earlier = self.store.get::<Evidence>(&id.to_owned()).ok()??;
        match retried(&earlier, cms) {
            Retry::Answered(answer) => Some(answer),
            Retry::Resume | Retry::Other => None,
        }
    }

    fn carry_out(
        &self,
        operator: &Operator,
        request: SignedRequest,
    ) -> Result<(serde_json::Value, Effects), RaError> {
        let now = self.clock.now();
        match request.action.clone() {
            Action::Designate {
                holder,
                card,
                role,
                scope,
            } => self
                .designate(operator, &request, (&holder, &card), role, scope, now)
                .map(|v| (v, Effects::default())),
            Action::Withdraw {
                operator: target,
                reason,
            } => self
                .withdraw(operator, &request, &target, reason, now)
                .map(|v| (v, Effects::default())),
            Action::Submit {
                holder,
                card,
                authentication_csr,
                signature_csr,
            } => self
                .submit(
                    operator,
                    &request,
                    cards::Submission {
                        holder,
                        card,
                        renewal: None,
                        by_holder: false,
                        authentication_csr,
                        signature_csr,
                    },
                    now,
                )
                .map(|v| (v, Effects::default())),
            Action::Renew {
                card,
                authentication_csr,
                signature_csr,
            } => {
                let (existing, holder, by_holder) = self.renewable(&operator.record, &card, now)?;
                self.submit(
                    operator,
                    &request,
                    cards::Submission {
                        holder: existing.holder,
                        card: Some(card),
                        renewal: Some(holder),
                        by_holder,
                        authentication_csr,
                        signature_csr,
                    },
                    now,
                )
                .map(|v| (v, Effects::default()))
            }
            Action::Approve { request: id } => self.approve(operator, &request, &id, now),
            Action::ApproveBatch { requests } => {
                self.approve_batch(operator, &request, &requests, now)
            }
            Action::Reject {
                request: id,
                reason,
            } => self
                .reject(operator, &request, &id, reason, now)
                .map(|v| (v, Effects::default())),
            Action::Revoke {
                serial,
                card,
                reason,
                invalidity_date,
                at,
            } => self.revoke(
                operator,
                &request,
                revocations::Asked {
                    serial,
                    card,
                    reason,
                    invalidity_date,
                    at,
                },
                now,
            ),
            Action::Deliver { card, receipt } => self
                .deliver(operator, &request, &card, &receipt, now)
                .map(|v| (v, Effects::default())),
            Action::CancelRevocation { scheduled } => self
                .cancel_scheduled(operator, &request, &scheduled, now)
                .map(|v| (v, Effects::default())),
        }
    }

    /// The card `card` as it is now, if `actor` may ask for its renewal: in the actor's scope
    /// (holder and policies; a card outside it looks like no card at all, issue 10 problem 3),
    /// and still renewable ([`Self::card_renewable`]). The card of an operator is renewed only
    /// at its holder's own request, signed with that card: anyone else could otherwise give
    /// an operator's role to keys of their own. Returns the card, its holder's subject and
    /// whether the actor is that holder.
    fn renewable(
        &self,
        actor: &OperatorRecord,
        card: &str,
        now: Timestamp,
    ) -> Result<(CardRecord, DistinguishedName, bool), RaError> {
        let unknown = || RaError::refused(Refusal::NotFound, format!("card {card} is unknown"));
        let existing = self
            .store
            .get::<Cards>(&card.to_owned())?
            .ok_or_else(unknown)?;
        let current = self
            .store
            .get::<Certificates>(&existing.authentication)?
            .ok_or_else(unknown)?;
        let holder = certificate_subject(&current.der)?;
        let in_scope = [
            &self.settings.authentication_policy,
            &self.settings.signature_policy,
        ]
        .into_iter()
        .try_for_each(|policy| check_scope(&actor.scope, &holder, policy));
        unknown_outside_scope(in_scope, &format!("card {card} is unknown"))?;
        let person = operators::person_key(&holder);
        let holds_it = |o: &OperatorRecord| {
            o.id == existing.card || o.person == person || o.holder == existing.holder
        };
        let by_holder = holds_it(actor);
        if !by_holder {
            if !actor.role.may_submit() {
                return Err(RaError::refused(
                    Refusal::RoleNotAllowed,
                    format!("an {} does not submit card requests", actor.role),
                ));
            }
            if active_operators(&self.store)?.iter().any(holds_it) {
                return Err(RaError::refused(
                    Refusal::RoleNotAllowed,
                    "the card of an operator is renewed at its holder's own request, signed with that card, and approved from above",
                ));
            }
        }
        self.card_renewable(&existing, now)?;
        Ok((existing, holder, by_holder))
    }

    /// Whether `card` can still be renewed: once, before it expires, and not revoked (a revoked
    /// card is replaced by a new one, never renewed back to life). Checked at submission and
    /// again at approval.
    pub(super) fn card_renewable(&self, card: &CardRecord, now: Timestamp) -> Result<(), RaError> {
        if card.renewals > 0 || now >= card.card_expires_at {
            return Err(RaError::refused(
                Refusal::RenewalNotAllowed,
                format!(
                    "card {} can no longer be renewed (renewed {} time(s), expires {})",
                    card.card, card.renewals, card.card_expires_at
                ),
            ));
        }
        // A departure on its way: the card is not given new certificates that would outlive it.
        if crate::ca::schedule::scheduled_for_card(&self.store, card)?.is_some() {
            return Err(RaError::refused(
                Refusal::RenewalNotAllowed,
                // Worded for anyone: a holder learns no departure date from it (operators
                // list scheduled revocations).
                format!("card {} cannot be renewed now", card.card),
            ));
        }
        if self.store.contains::<Revocations>(&card.authentication)?
            || self.store.contains::<Revocations>(&card.signature)?
        {
            return Err(RaError::refused(
                Refusal::RenewalNotAllowed,
                format!("card {} is revoked: a new card replaces it", card.card),
            ));
        }
        Ok(())
    }

    /// Records a refusal: one audit event, nothing else.
    fn record_refusal(&self, client: &str, action: &str, request: Option<String>, error: &RaError) {
        let Some(event) = refusal_event(Some(client), action, request, error) else {
            return;
        };
        let events = self.refusals.admit(event, self.clock.now());
        if events.is_empty() {
            return;
        }
        let written = self.store.commit(move |txn| -> Result<(), StoreError> {
            events.into_iter().for_each(|event| txn.audit(event));
            Ok(())
        });
        if let Err(error) = written {
            tracing::error!(%error, "could not record a refusal in the audit log");
        }
    }

    /// Records a refusal made before a signed request was opened: a client certificate that is
    /// not an active, valid operator, or a read outside the operator's scope.
    pub async fn record_early_refusal(&self, operator: &str, action: &str, error: &RaError) {
        let Some(event) = refusal_event(Some(operator), action, None, error) else {
            return;
        };
        self.write_refusals(self.refusals.admit(event, self.clock.now()))
            .await;
    }

    /// Writes the counts of repeated refusals whose window ended (all of them when `all`, at
    /// shutdown). The daemon calls it every few seconds.
    pub async fn flush_refusals(&self, all: bool) {
        self.write_refusals(self.refusals.due(all)).await;
    }

    async fn write_refusals(&self, events: Vec<AuditEvent>) {
        if events.is_empty() {
            return;
        }
        let written = self
            .store
            .commit_async(move |txn| -> Result<(), StoreError> {
                events.into_iter().for_each(|event| txn.audit(event));
                Ok(())
            })
            .await;
        if let Err(error) = written {
            tracing::error!(%error, "could not record a refusal in the audit log");
        }
    }

    // --- operators -----------------------------------------------------------------------------

    fn designate(
        &self,
        actor: &Operator,
        request: &SignedRequest,
        (holder, card_id): (&str, &str),
        role: Role,
        scope: Scope,
        now: Timestamp,
    ) -> Result<serde_json::Value, RaError> {
        if !actor.record.role.may_designate(role) {
            return Err(RaError::refused(
                Refusal::RoleNotAllowed,
                format!("an {} may not designate an {role}", actor.record.role),
            ));
        }
        if let Some(why) = scope.widening_over(&actor.record.scope) {
            return Err(RaError::refused(Refusal::ScopeWidening, why));
        }
        self.check_scope_shape(&scope)?;
        // The designee is a card of this CA, held by `holder`, whose holder is in the
        // designator's scope; anything else is answered like a card that does not exist.
        let not_found = || {
            RaError::refused(
                Refusal::NotFound,
                format!("no card {card_id:?} of holder {holder:?}"),
            )
        };
        let card = self
            .store
            .get::<Cards>(&card_id.to_owned())?
            .filter(|card| card.holder == holder)
            .ok_or_else(not_found)?;
        let der = self
            .store
            .get::<Certificates>(&card.authentication)?
            .ok_or_else(not_found)?
            .der;
        // A card on its way out (a departure scheduled) carries no role.
        if let Some(entry) = crate::ca::schedule::scheduled_for_card(&self.store, &card)? {
            return Err(RaError::refused(
                Refusal::RoleNotAllowed,
                format!(
                    "card {} is to be revoked at {}: it carries no role",
                    card.card, entry.at
                ),
            ));
        }
        let subject = certificate_subject(&der)?;
        unknown_outside_scope(
            check_holder_scope(&actor.record.scope, &subject),
            &format!("no card {card_id:?} of holder {holder:?}"),
        )?;
        let (_, subject) = self.check_operator_certificate(&self.store, &der, now)?;
        check_name_repertoire(&self.settings.authentication_policy, &subject)?;
        let person = operators::person_key(&subject);
        if person == actor.record.person || card.holder == actor.record.holder {
            return Err(RaError::refused(
                Refusal::OwnCertificate,
                "nobody designates themselves",
            ));
        }
        let record = OperatorRecord {
            id: card.card.clone(),
            holder: card.holder.clone(),
            person: person.clone(),
            subject: subject_text(&subject),
            issuer: card.authentication.issuer,
            certificate: der,
            role,
            scope,
            designated_by: Some(actor.record.id.clone()),
            designated_at: now,
            withdrawn: None,
        };
        let answer = serde_json::json!({
            "operator": record.id,
            "holder": record.holder,
            "role": record.role,
            "subject": record.subject,
            "scope": record.scope,
        });
        let evidence = self.evidence(actor, request, now).answered(&answer);
        let request_id = request.id.clone();
        let actor_role = actor.record.role;
        let actor_id = actor.record.id.clone();
        self.store.commit(move |txn| -> Result<(), RaError> {
            claim(txn, &request_id, &evidence)?;
            // The designator still acts (a withdrawal may have landed since the request came).
            check_still_active(txn, &actor_id)?;
            // One active role per person and per holder id, whichever of their cards: checked
            // here, in the writer's order, so that two designations cannot both pass; a
            // withdrawal stands against anyone below the withdrawer's rank.
            claim_person(txn, &record, Some(actor_role))?;
            txn.audit(AuditEvent::OperatorDesignated {
                operator: record.id.clone(),
                subject: record.subject.clone(),
                role: record.role.to_string(),
                scope: serde_json::to_value(&record.scope).unwrap_or_default(),
                designated_by: record.designated_by.clone(),
                request: Some(request_id.clone()),
            });
            txn.put::<Operators>(&record.id.clone(), &record)?;
            Ok(())
        })?;
        Ok(answer)
    }

    fn withdraw(
        &self,
        actor: &Operator,
        request: &SignedRequest,
        target: &str,
        reason: Option<String>,
        now: Timestamp,
    ) -> Result<serde_json::Value, RaError> {
        // Anyone but the target's designators (directly or above) learns nothing of it: an
        // operator that does not exist and one designated by someone else answer alike.
        let unknown =
            || RaError::refused(Refusal::NotFound, format!("operator {target} is unknown"));
        let record = self
            .store
            .get::<Operators>(&target.to_owned())?
            .ok_or_else(unknown)?;
        let lookup = |id: &str| self.store.get::<Operators>(&id.to_owned()).ok().flatten();
        if !designated_through(&record, &actor.record.id, lookup) {
            return Err(unknown());
        }
        if !record.is_active() {
            return Err(RaError::refused(
                Refusal::OperatorWithdrawn,
                format!("operator {target} is already withdrawn"),
            ));
        }
        // Checked after the designator rule, so that it tells nothing to anyone else.
        if record.role == Role::Ae
            && active_operators(&self.store)?
                .iter()
                .all(|other| other.id == record.id || other.role != Role::Ae)
        {
            return Err(RaError::refused(
                Refusal::RoleNotAllowed,
                "the last active AE cannot be withdrawn: designate an alter ego first",
            ));
        }
        // Everyone designated below the target goes with it.
        let all: Vec<OperatorRecord> = self
            .store
            .scan::<Operators>(&[], &[])?
            .map(|row| row.map(|(_, record)| record))
            .collect::<Result<_, _>>()?;
        let mut withdrawn = vec![(record, None::<String>)];
        let mut next = 0;
        while next < withdrawn.len() {
            let parent = withdrawn[next].0.id.clone();
            for child in all
                .iter()
                .filter(|o| o.is_active() && o.designated_by.as_deref() == Some(parent.as_str()))
            {
                if !withdrawn.iter().any(|(w, _)| w.id == child.id) {
                    withdrawn.push((child.clone(), Some(parent.clone())));
                }
            }
            next += 1;
        }
        let ids: Vec<String> = withdrawn.iter().map(|(w, _)| w.id.clone()).collect();
        let answer = serde_json::json!({ "withdrawn": ids });
        let evidence = self.evidence(actor, request, now).answered(&answer);
        let request_id = request.id.clone();
        let by = actor.record.id.clone();
        let by_role = actor.record.role;
        self.store.commit(move |txn| -> Result<(), RaError> {
            claim(txn, &request_id, &evidence)?;
            check_still_active(txn, &by)?;
            for (snapshot, cascade_from) in withdrawn {
                // As the record is now: one withdrawn meanwhile keeps its own withdrawal.
                let Some(mut record) = txn.get::<Operators>(&snapshot.id)? else {
                    continue;
                };
                if !record.is_active() {
                    continue;
                }
                txn.audit(AuditEvent::OperatorWithdrawn {
                    operator: record.id.clone(),
                    by: by.clone(),
                    cascade_from: cascade_from.clone(),
                    request: request_id.clone(),
                    reason: reason.clone(),
                });
                let withdrawal = Withdrawal {
                    at: now,
                    by: by.clone(),
                    by_role: Some(by_role),
                    cascade_from,
                };
                release_person(txn, &record, &withdrawal)?;
                record.withdrawn = Some(withdrawal);
                txn.put::<Operators>(&record.id.clone(), &record)?;
            }
            Ok(())
        })?;
        Ok(answer)
    }

    /// Policies named in a scope exist; a scope names at least one organisation.
    fn check_scope_shape(&self, scope: &Scope) -> Result<(), RaError> {
        if scope.organizations.is_empty() || scope.policies.is_empty() {
            return Err(RaError::Malformed(
                "a scope names at least one organisation and one policy".into(),
            ));
        }
        if let Some(unknown) = scope
            .policies
            .iter()
            .find(|p| self.ca.policies().get(p).is_none())
        {
            return Err(RaError::Malformed(format!("unknown policy {unknown:?}")));
        }
        Ok(())
    }

    /// An operator certificate: issued by an operator CA (signature checked), valid at `now`,
    /// not revoked in this CA's store.
    fn check_operator_certificate(
        &self,
        reader: &impl Reader,
        der: &[u8],
        now: Timestamp,
    ) -> Result<(Certificate, DistinguishedName), RaError> {
        let certificate = Certificate::from_der(der)
            .map_err(|e| RaError::Malformed(format!("operator certificate: {e}")))?;
        let issuer = self.issuer_of(der)?;
        let tbs = certificate.tbs_certificate();
        let not_before = Timestamp::from_x509_time(&tbs.validity().not_before);
        let not_after = Timestamp::from_x509_time(&tbs.validity().not_after);
        if now < not_before || now > not_after {
            return Err(RaError::refused(
                Refusal::OperatorCertificateExpired,
                format!("the operator certificate is valid from {not_before} to {not_after}"),
            ));
        }
        let serial = Serial::from_serial_number(tbs.serial_number())
            .map_err(|e| RaError::Malformed(format!("operator certificate serial: {e}")))?;
        if reader.contains::<Revocations>(&CertKey {
            issuer,
            serial: serial.clone(),
        })? {
            return Err(RaError::refused(
                Refusal::OperatorCertificateRevoked,
                format!("the operator certificate {serial} is revoked"),
            ));
        }
        check_authentication_usage(&certificate)?;
        let subject_der = der::Encode::to_der(tbs.subject())
            .map_err(|e| RaError::Malformed(format!("operator subject: {e}")))?;
        let subject = parse_distinguished_name(&subject_der)
            .map_err(|e| RaError::Malformed(format!("operator subject: {e}")))?;
        Ok((certificate, subject))
    }

    /// The operator CA that signed `der`.
    fn issuer_of(&self, der: &[u8]) -> Result<IssuerId, RaError> {
        let certificate = Certificate::from_der(der)
            .map_err(|e| RaError::Malformed(format!("operator certificate: {e}")))?;
        let issuer_der = der::Encode::to_der(certificate.tbs_certificate().issuer())
            .map_err(|e| RaError::Malformed(e.to_string()))?;
        let cas = self
            .operator_cas
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        cas.iter()
            .find(|ca| {
                ca.subject_der == issuer_der
                    && crate::ca::ceremony::verify_certificate_signature(der, &ca.public_key)
                        .is_ok()
            })
            .map(|ca| ca.id)
            .ok_or_else(|| {
                RaError::refused(
                    Refusal::UntrustedCertificate,
                    "the certificate was not issued by an operator CA",
                )
            })
    }

    fn evidence(
        &self,
        actor: &Operator,
        request: &SignedRequest,
        now: Timestamp,
    ) -> EvidenceRecord {
        EvidenceRecord {
            operator: actor.record.id.clone(),
            action: request.action.name().to_owned(),
            received_at: now,
            cms: request.evidence.clone(),
            outcome: None,
        }
    }

    // --- queries -------------------------------------------------------------------------------

    /// A card request, if it is in the operator's scope; with the certificates once issued.
    pub fn request_status(
        &self,
        operator: &Operator,
        id: &str,
    ) -> Result<serde_json::Value, RaError> {
        let record = self
            .store
            .get::<cards::CardRequests>(&id.to_owned())?
            .ok_or_else(|| RaError::refused(Refusal::NotFound, format!("no request {id}")))?;
        let subject = parse_distinguished_name(&record.subject_der)
            .map_err(|e| RaError::Malformed(e.to_string()))?;
        // The scope of a request is its holder and its policies, as for a decision on it.
        let in_scope = check_holder_scope(&operator.record.scope, &subject).and_then(|()| {
            [&record.authentication_policy, &record.signature_policy]
                .into_iter()
                .try_for_each(|policy| check_scope(&operator.record.scope, &subject, policy))
        });
        unknown_outside_scope(in_scope, &format!("no request {id}"))?;
        let mut answer = record.summary();
        // What a batch approval names the request by (`batch`).
        if let Some(digest) = batch::submission_digest(&self.store, id)? {
            answer["submission_sha256"] = serde_json::Value::String(digest);
        }
        if let RequestState::Issued {
            authentication,
            signature,
            ..
        } = &record.state
        {
            for (field, serial) in [("authentication", authentication), ("signature", signature)] {
                if let Some(pem) = self.certificate_pem(serial)? {
                    answer[field] = serde_json::json!({ "serial": serial, "certificate": pem });
                }
            }
        }
        Ok(answer)
    }

    /// Certificates in the operator's scope that expire within `days`, soonest first, revoked
    /// ones left out: what the RA application warns holders about.
    pub fn expiring(&self, operator: &Operator, days: u32) -> Result<serde_json::Value, RaError> {
        let now = self.clock.now();
        let until = now.plus_seconds(u64::from(days) * 86_400);
        let from = ExpiryKey {
            not_after: now,
            certificate: CertKey {
                issuer: IssuerId([0; 20]),
                serial: Serial::from_magnitude(&[1])
                    .map_err(|e| RaError::Malformed(e.to_string()))?,
            },
        }
        .encode_key();
        let mut out = Vec::new();
        for row in self.store.scan::<ExpiryIndex>(&from[..8], &[])? {
            let (key, ()) = row?;
            if key.not_after > until {
                break;
            }
            if self.store.contains::<Revocations>(&key.certificate)? {
                continue;
            }
            let Some(record) = self.store.get::<Certificates>(&key.certificate)? else {
                continue;
            };
            let Ok(holder) = certificate_subject(&record.der) else {
                continue;
            };
            if check_scope(&operator.record.scope, &holder, &record.policy).is_err() {
                continue;
            }
            out.push(serde_json::json!({
                "serial": key.certificate.serial.to_hex(),
                "policy": record.policy,
                "holder": record.holder,
                "card": record.card,
                "subject": subject_text(&holder),
                "not_after": record.not_after,
            }));
        }
        Ok(serde_json::json!({ "days": days, "certificates": out }))
    }

    /// A certificate in the operator's scope, PEM.
    pub fn certificate(&self, operator: &Operator, serial_hex: &str) -> Result<String, RaError> {
        let serial = Serial::from_hex(serial_hex.trim_end_matches(".pem"))
            .map_err(|e| RaError::Malformed(format!("serial {serial_hex:?}: {e}")))?;
        // One wording for a serial never issued and one outside the scope, whatever the
        // spelling of the URL (case, leading zeros).
        let text = format!("no certificate {serial}");
        let not_found = {
            let text = text.clone();
            move || RaError::refused(Refusal::NotFound, text)
        };
        let issuer = self
            .store
            .get::<crate::store::schema::Serials>(&serial)?
            .ok_or_else(not_found.clone())?;
        let record = self
            .store
            .get::<Certificates>(&CertKey { issuer, serial })?
            .ok_or_else(not_found)?;
        unknown_outside_scope(
            check_scope(
                &operator.record.scope,
                &certificate_subject(&record.der)?,
                &record.policy,
            ),
            &text,
        )?;
        Ok(pem::encode(pem::CERTIFICATE, &record.der))
    }

    fn certificate_pem(&self, serial_hex: &str) -> Result<Option<String>, RaError> {
        let serial = Serial::from_hex(serial_hex).map_err(|e| RaError::Malformed(e.to_string()))?;
        let Some(issuer) = self.store.get::<crate::store::schema::Serials>(&serial)? else {
            return Ok(None);
        };
        Ok(self
            .store
            .get::<Certificates>(&CertKey { issuer, serial })?
            .map(|record| pem::encode(pem::CERTIFICATE, &record.der)))
    }
}

/// The issuing CAs of the state: operators carry agent cards.
fn operator_cas(state: &CaState) -> Result<Vec<OperatorCa>, RaError> {
    state
        .issuing
        .iter()
        .map(|stored| {
            let certificate = Certificate::from_der(&stored.certificate)
                .map_err(|e| CaError::Corrupt(format!("issuing CA certificate: {e}")))?;
            let tbs = certificate.tbs_certificate();
            let public_key = tbs.subject_public_key_info().clone();
            Ok(OperatorCa {
                id: IssuerId(keys::key_identifier(&public_key)),
                subject_der: der::Encode::to_der(tbs.subject())
                    .map_err(|e| CaError::Corrupt(e.to_string()))?,
                public_key,
            })
        })
        .collect()
}

/// The audit event of a refusal; `None` for failures that are not refusals (HSM or store
/// unavailable), which are logged instead.
fn refusal_event(
    operator: Option<&str>,
    action: &str,
    request: Option<String>,
    error: &RaError,
) -> Option<AuditEvent> {
    let Some(rule) = error.rule() else {
        tracing::warn!(operator, action, %error, "request failed");
        return None;
    };
    Some(AuditEvent::RequestRefused {
        operator: operator.map(str::to_owned),
        action: action.to_owned(),
        request,
        rule,
        // Bounded: a detail may quote what the client sent.
        detail: error.to_string().chars().take(512).collect(),
    })
}

/// Stores the evidence of an accepted request under its id, refusing an id already used.
///
/// The same bytes again are a client's retry, not a replay: their recorded answer ends the
/// commit ([`RaError::CarriedOut`]), or, for an approval whose card was not stored (the HSM was
/// unavailable), the approval resumes. Other bytes under a used id are a replay.
fn claim(txn: &mut Txn<'_>, id: &str, evidence: &EvidenceRecord) -> Result<(), RaError> {
    let key = id.to_owned();
    match txn.get::<Evidence>(&key)? {
        None => {
            txn.put::<Evidence>(&key, evidence)?;
            Ok(())
        }
        Some(earlier) => match retried(&earlier, &evidence.cms) {
            Retry::Answered(outcome) => Err(RaError::CarriedOut(Box::new(outcome))),
            Retry::Resume => Ok(()),
            Retry::Other => Err(replayed(id)),
        },
    }
}

/// A retry's answer, and what it must still wait for: a revocation is answered only once OCSP
/// says so, and the first copy may still be signing (re-signing "revoked" is harmless).
fn retried_effects(answer: serde_json::Value) -> (serde_json::Value, Effects) {
    let revoked = answer
        .get("revoked")
        .and_then(|r| serde_json::from_value::<Vec<RevokedCertificate>>(r.clone()).ok())
        .unwrap_or_default();
    (
        answer,
        Effects {
            issued: Vec::new(),
            revoked,
        },
    )
}

/// What a request whose id was used before is.
enum Retry {
    /// The same bytes, answered: the answer again.
    Answered(serde_json::Value),
    /// The same bytes of an approval still waiting for its card.
    Resume,
    /// Other bytes under a used id: a replay.
    Other,
}

fn retried(earlier: &EvidenceRecord, cms: &[u8]) -> Retry {
    if earlier.cms != cms {
        return Retry::Other;
    }
    match &earlier.outcome {
        Some(outcome) => Retry::Answered(outcome.clone()),
        None if earlier.action == "approve" || earlier.action == "approve-batch" => Retry::Resume,
        None => Retry::Other,
    }
}

/// Records `outcome` as the answer to request `id`, in the batch that carries it out.
fn settle(txn: &mut Txn<'_>, id: &str, outcome: &serde_json::Value) -> Result<(), RaError> {
    let key = id.to_owned();
    if let Some(mut evidence) = txn.get::<Evidence>(&key)? {
        evidence.outcome = Some(outcome.clone());
        txn.put::<Evidence>(&key, &evidence)?;
    }
    Ok(())
}

fn replayed(id: &str) -> RaError {
    RaError::refused(
        Refusal::Replayed,
        format!("request id {id} was already used"),
    )
}

/// The holder and the policy are in the scope.
fn check_scope(scope: &Scope, holder: &DistinguishedName, policy: &str) -> Result<(), RaError> {
    check_holder_scope(scope, holder)?;
    if !scope.covers_policy(policy) {
        return Err(RaError::refused(
            Refusal::PolicyOutOfScope,
            format!("policy {policy:?} is outside the operator's scope"),
        ));
    }
    Ok(())
}

/// An existing object (a request, a certificate, a card) outside the caller's scope is
/// answered exactly like one that does not exist: the refusal says nothing about it.
pub(crate) fn unknown_outside_scope<T>(
    result: Result<T, RaError>,
    unknown: &str,
) -> Result<T, RaError> {
    match result {
        Err(RaError::Refused {
            refusal: Refusal::OutOfScope | Refusal::PolicyOutOfScope,
            ..
        }) => Err(RaError::refused(Refusal::NotFound, unknown.to_owned())),
        other => other,
    }
}

fn check_holder_scope(scope: &Scope, holder: &DistinguishedName) -> Result<(), RaError> {
    if scope.covers_holder(holder) {
        Ok(())
    } else {
        Err(RaError::refused(
            Refusal::OutOfScope,
            format!(
                "holder {} is outside the operator's organisations and units",
                subject_text(holder)
            ),
        ))
    }
}

/// The subject of a stored certificate.
fn certificate_subject(der: &[u8]) -> Result<DistinguishedName, RaError> {
    let certificate =
        Certificate::from_der(der).map_err(|e| RaError::Malformed(format!("certificate: {e}")))?;
    let subject = der::Encode::to_der(certificate.tbs_certificate().subject())
        .map_err(|e| RaError::Malformed(e.to_string()))?;
    parse_distinguished_name(&subject).map_err(|e| RaError::Malformed(e.to_string()))
}

/// A DN as `C=FR, O=…, CN=…`.
/// The active operators.
fn active_operators(store: &Store) -> Result<Vec<OperatorRecord>, RaError> {
    let mut active = Vec::new();
    for row in store.scan::<Operators>(&[], &[])? {
        let (_, record) = row?;
        if record.is_active() {
            active.push(record);
        }
    }
    Ok(active)
}

/// The keys under which an operator is indexed as a person: their name and their holder id
/// (one active role for each).
fn person_index_keys(record: &OperatorRecord) -> [String; 2] {
    [record.person.clone(), operators::holder_key(&record.holder)]
}

/// Binds `record`'s person (name and holder id) to it, inside the commit that designates:
/// refused when either already has an active role, or (for a designator of rank `by`; `None`
/// for security staff) when either was withdrawn by a higher rank.
fn claim_person(
    txn: &mut Txn<'_>,
    record: &OperatorRecord,
    by: Option<Role>,
) -> Result<(), RaError> {
    for key in person_index_keys(record) {
        let mut person = txn.get::<OperatorPersons>(&key)?.unwrap_or_default();
        if let Some(other) = &person.active
            && txn.get::<Operators>(other)?.is_some_and(|o| o.is_active())
        {
            return Err(RaError::refused(
                Refusal::PersonIsOperator,
                format!(
                    "{} (holder {}) already holds an active operator role; withdraw it first",
                    record.subject, record.holder
                ),
            ));
        }
        if let (Some(by), Some(withdrawal)) = (by, &person.withdrawn) {
            let withdrawer = match withdrawal.by_role {
                Some(role) => role,
                None => txn
                    .get::<Operators>(&withdrawal.by)?
                    .map_or(Role::Ae, |w| w.role),
            };
            if by > withdrawer {
                return Err(RaError::refused(
                    Refusal::WithdrawalStands,
                    format!(
                        "{} was withdrawn by an {withdrawer}: only an {withdrawer} or above may designate them again",
                        record.subject
                    ),
                ));
            }
        }
        person.active = Some(record.id.clone());
        txn.put::<OperatorPersons>(&key, &person)?;
    }
    Ok(())
}

/// Unbinds a withdrawn operator's person, recording the withdrawal against it.
fn release_person(
    txn: &mut Txn<'_>,
    record: &OperatorRecord,
    withdrawal: &Withdrawal,
) -> Result<(), RaError> {
    for key in person_index_keys(record) {
        let mut person = txn.get::<OperatorPersons>(&key)?.unwrap_or_default();
        if person.active.as_deref() == Some(record.id.as_str()) {
            person.active = None;
        }
        person.withdrawn = Some(withdrawal.clone());
        txn.put::<OperatorPersons>(&key, &person)?;
    }
    Ok(())
}

/// Refuses a change by an operator withdrawn since its request was authenticated.
pub(super) fn check_still_active(txn: &Txn<'_>, operator: &str) -> Result<(), RaError> {
    match txn.get::<Operators>(&operator.to_owned())? {
        Some(record) if record.is_active() => Ok(()),
        _ => Err(RaError::refused(
            Refusal::OperatorWithdrawn,
            format!("operator {operator} was withdrawn"),
        )),
    }
}

/// Refuses an action on the card of a person who is an active operator, unless the actor is
/// above them in the hierarchy (or is that person: a holder may act on their own card where
/// the rules allow it). Revocations and renewals both supersede a card.
fn check_rank_over_holder(
    operators: &[OperatorRecord],
    actor: &OperatorRecord,
    holder: &DistinguishedName,
    holder_id: Option<&str>,
) -> Result<(), RaError> {
    check_rank(operators, actor, holder, holder_id, false)
}

/// [`check_rank_over_holder`]; with `alter_ego`, an AE counts as above another AE (the
/// approval of an AE's own renewal: nobody ranks above an AE but its alter ego).
pub(super) fn check_rank(
    operators: &[OperatorRecord],
    actor: &OperatorRecord,
    holder: &DistinguishedName,
    holder_id: Option<&str>,
    alter_ego: bool,
) -> Result<(), RaError> {
    let person = operators::person_key(holder);
    let is_holder = |o: &OperatorRecord| o.person == person || Some(o.holder.as_str()) == holder_id;
    // One's own card: the same person, and not another holder (two namesakes whose names fold
    // to one person key are one person for every refusal, never for a permission).
    let own = holder_id.is_none_or(|id| id == actor.holder) && is_holder(actor);
    if own {
        return Ok(());
    }
    match operators
        .iter()
        .filter(|o| is_holder(o))
        .map(|o| o.role)
        .min()
    {
        Some(Role::Ae) if alter_ego && actor.role == Role::Ae => Ok(()),
        // The message names no role: it must not tell who is an operator.
        Some(target) if actor.role >= target => Err(RaError::refused(
            Refusal::RoleNotAllowed,
            "this holder's card is asked for, renewed, approved or revoked only by an operator above them, or by security staff on the CA host",
        )),
        _ => Ok(()),
    }
}

/// An operator credential is the authentication certificate of a card: keyUsage
/// digitalSignature without nonRepudiation, and, when it has an extendedKeyUsage, TLS client
/// authentication. A signature certificate (nonRepudiation) of the same person is refused, so
/// that one person cannot hold two operator credentials from one card (issue 10 problem 1).
fn check_authentication_usage(certificate: &Certificate) -> Result<(), RaError> {
    use x509_cert::ext::pkix::{ExtendedKeyUsage, KeyUsage};
    let refuse = |why: &str| {
        Err(RaError::refused(
            Refusal::NotAuthenticationCertificate,
            format!("an operator certificate is a card's authentication certificate: {why}"),
        ))
    };
    let tbs = certificate.tbs_certificate();
    match tbs.get_extension::<KeyUsage>() {
        Ok(Some((_, usage))) if usage.digital_signature() && !usage.non_repudiation() => {}
        Ok(Some(_)) => return refuse("its keyUsage is not digitalSignature alone"),
        Ok(None) => return refuse("it has no keyUsage"),
        Err(e) => return Err(RaError::Malformed(format!("operator keyUsage: {e}"))),
    }
    match tbs.get_extension::<ExtendedKeyUsage>() {
        Ok(Some((_, usages))) if !usages.0.contains(&crate::x509::oid::KP_CLIENT_AUTH) => {
            refuse("its extendedKeyUsage has no clientAuth")
        }
        Ok(_) => Ok(()),
        Err(e) => Err(RaError::Malformed(format!(
            "operator extendedKeyUsage: {e}"
        ))),
    }
}

/// An operator's name is written in the repertoire of names (`policy::names`), as a card
/// issued now would be: a card issued before that rule, with a look-alike letter, carries no
/// role (`policy-violation:subject-character`, naming the attribute and the character).
pub(super) fn check_name_repertoire(
    policy: &str,
    subject: &DistinguishedName,
) -> Result<(), RaError> {
    let violations: Vec<crate::policy::Violation> = crate::policy::names::check_name(subject)
        .into_iter()
        .map(|refused| crate::policy::Violation {
            rule: "subject-character",
            message: refused.to_string(),
        })
        .collect();
    if violations.is_empty() {
        return Ok(());
    }
    Err(RaError::Ca(CaError::Rejected(crate::policy::Rejection {
        policy: policy.to_owned(),
        violations,
    })))
}

fn subject_text(dn: &DistinguishedName) -> String {
    dn.attributes()
        .iter()
        .map(|(attribute, value)| format!("{}={value}", attribute.short_name()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Registers an AE on the CA host (`sceau ra bootstrap --card ID`): the first one, or a
/// replacement when no AE can act any more. `scope.organizations` empty means the card's own
/// organisation.
pub fn bootstrap(
    store: &Store,
    state: &CaState,
    card_id: &str,
    mut scope: Scope,
    now: Timestamp,
) -> Result<OperatorRecord, RaError> {
    let cas = operator_cas(state)?;
    persons::rekey(store)?;
    let no_card = || RaError::refused(Refusal::NotFound, format!("no card {card_id:?}"));
    let card: CardRecord = store
        .get::<Cards>(&card_id.to_owned())?
        .ok_or_else(no_card)?;
    let certificate_der = store
        .get::<Certificates>(&card.authentication)?
        .ok_or_else(no_card)?
        .der;
    let certificate_der = certificate_der.as_slice();
    let certificate = Certificate::from_der(certificate_der)
        .map_err(|e| RaError::Malformed(format!("certificate: {e}")))?;
    let issuer_der = der::Encode::to_der(certificate.tbs_certificate().issuer())
        .map_err(|e| RaError::Malformed(e.to_string()))?;
    let issuer = cas
        .iter()
        .find(|ca| {
            ca.subject_der == issuer_der
                && crate::ca::ceremony::verify_certificate_signature(
                    certificate_der,
                    &ca.public_key,
                )
                .is_ok()
        })
        .map(|ca| ca.id)
        .ok_or_else(|| {
            RaError::refused(
                Refusal::UntrustedCertificate,
                "the certificate was not issued by this CA's issuing CA",
            )
        })?;
    let validity = certificate.tbs_certificate().validity();
    if now > Timestamp::from_x509_time(&validity.not_after)
        || now < Timestamp::from_x509_time(&validity.not_before)
    {
        return Err(RaError::refused(
            Refusal::OperatorCertificateExpired,
            "the certificate is not valid now",
        ));
    }
    check_authentication_usage(&certificate)?;
    let subject = certificate_subject(certificate_der)?;
    check_name_repertoire("operator", &subject)?;
    if scope.organizations.is_empty() {
        scope.organizations = subject
            .values(crate::x509::name::Attribute::Organization)
            .map(str::to_owned)
            .collect();
    }
    if scope.organizations.is_empty() || scope.policies.is_empty() {
        return Err(RaError::Malformed(
            "a scope names at least one organisation and one policy".into(),
        ));
    }
    let record = OperatorRecord {
        id: card.card.clone(),
        holder: card.holder.clone(),
        person: operators::person_key(&subject),
        certificate: certificate_der.to_vec(),
        subject: subject_text(&subject),
        issuer,
        role: Role::Ae,
        scope,
        designated_by: None,
        designated_at: now,
        withdrawn: None,
    };
    let stored = record.clone();
    // Security staff on the CA host bring in a replacement AE when none is active (every AE
    // withdrawn, their cards revoked); audited like a designation.
    let mut active_ae = false;
    for ae in active_operators(store)?
        .into_iter()
        .filter(|o| o.role == Role::Ae)
    {
        // An AE whose card (as it is now: renewed or not) was revoked or expired can no longer
        // act: it does not count.
        let Some(current) = store.get::<Cards>(&ae.id)?.map(|card| card.authentication) else {
            continue;
        };
        let Some(stored) = store.get::<Certificates>(&current)? else {
            continue;
        };
        let valid = now <= stored.not_after;
        let revoked = store.contains::<Revocations>(&current)?;
        active_ae |= valid && !revoked;
    }
    store.commit(move |txn| -> Result<(), RaError> {
        let serial = Serial::from_serial_number(certificate.tbs_certificate().serial_number())
            .map_err(|e| RaError::Malformed(e.to_string()))?;
        if txn.contains::<Revocations>(&CertKey { issuer, serial })? {
            return Err(RaError::refused(
                Refusal::OperatorCertificateRevoked,
                "the certificate is revoked",
            ));
        }
        if active_ae {
            return Err(RaError::refused(
                Refusal::OperatorExists,
                "an AE is already registered: an AE designates the others (and its alter ego); security staff bootstrap an AE only when none is active",
            ));
        }
        // Security staff act above every rank: a withdrawal does not stand against them.
        claim_person(txn, &stored, None)?;
        txn.audit(AuditEvent::OperatorDesignated {
            operator: stored.id.clone(),
            subject: stored.subject.clone(),
            role: stored.role.to_string(),
            scope: serde_json::to_value(&stored.scope).unwrap_or_default(),
            designated_by: None,
            request: None,
        });
        txn.put::<Operators>(&stored.id.clone(), &stored)?;
        Ok(())
    })?;
    Ok(record)
}
