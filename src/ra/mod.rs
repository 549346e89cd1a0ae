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
pub mod bulk;
pub mod cards;
mod designation;
mod errors;
pub mod holders;
pub mod operators;
mod persons;
mod queries;
pub mod refusals;
pub mod request;
mod review;
mod revocations;
mod signed;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use der::Decode;
use serde::{Deserialize, Serialize};
use x509_cert::Certificate;

use crate::ca::revoke::RevokedCertificate;
use crate::ca::{CaError, CaState, CertificateAuthority};
use crate::store::CardRecord;
use crate::store::schema::{Cards, Certificates, Revocations};
use crate::store::{CertKey, IssuerId, Reader, Store, Txn, base64_bytes};
use crate::x509::name::{DistinguishedName, parse_distinguished_name};
use crate::x509::time::Clock;
use crate::x509::{Serial, Timestamp, keys};
use operators::{OperatorRecord, Operators, Role, Scope, operator_id};

use designation::active_operators;
pub use designation::bootstrap;
pub use errors::{RaError, Refusal};
use signed::{claim, settle};

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

    // --- operators -----------------------------------------------------------------------------

    // --- queries -------------------------------------------------------------------------------
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
