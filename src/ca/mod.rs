//! The certification authority: the key ceremony, and issuance.
//!
//! [`CertificateAuthority`] ties the policies, the HSM and the store together. It takes its
//! clock as a parameter so that tests can pin the date. See the private `issue` module
//! (src/ca/issue.rs) for the order of the issuance cycle and why it is safe against crashes.

mod cards;
pub mod ceremony;
pub mod ceremony_intent;
pub mod expiry;
mod issue;
pub mod revoke;
pub mod schedule;

/// What the ceremony leaves in the store, declared one floor below (`issuer::state`), shared
/// with the validation authority.
pub use crate::issuer::state;
use cards::check_identifier;
pub use cards::{CARD_LIFETIME_YEARS, CardRequest, IssuedCard, RenewedCard, random_card_id};

use std::path::PathBuf;
use std::sync::Arc;

pub use crate::issuer::{CaState, Issuer, IssuerError};
pub use issue::{AlongWrite, recover_intents};

use crate::config::PublishedUrls;
use crate::hsm::{Hsm, HsmError};
use crate::policy::{IssuanceRequest, PolicySet, Rejection};
use crate::store::schema::{Meta, meta_keys};
use crate::store::{CertKey, IssuerId, Store, StoreError};
use crate::x509::serial::SerialError;
use crate::x509::time::Clock;
use crate::x509::{Serial, Timestamp};
use issue::{CardWrite, PendingCertificate, issue_all};

/// What went wrong in the CA.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    #[error("the store at {} holds no CA: run `sceau init` first", .0.display())]
    NotInitialized(PathBuf),
    #[error("this store already holds a CA (created {0}); `sceau init` runs once per store")]
    AlreadyInitialized(Timestamp),
    #[error(
        "the issuing CA is waiting for its certificate from the external root: run `sceau ca import-cert FILE`"
    )]
    AwaitingImport,
    #[error("the key {label:?} in the HSM does not match the certificate of {name}")]
    KeyMismatch { name: String, label: String },
    #[error("{0}")]
    Rejected(#[from] Rejection),
    #[error("unknown policy {name:?} (known: {known})")]
    UnknownPolicy { name: String, known: String },
    #[error("HSM: {0}")]
    Hsm(#[from] HsmError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("serial number: {0}")]
    Serial(#[from] SerialError),
    #[error("no free serial number after {0} draws")]
    SerialExhausted(u32),
    #[error("importing the CA certificate: {0}")]
    Import(String),
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0} is already revoked (revocation is final)")]
    AlreadyRevoked(String),
    #[error("stored CA data is inconsistent: {0}")]
    Corrupt(String),
    #[error("encoding: {0}")]
    Encoding(String),
    #[error("writing {0}")]
    Io(String),
}

impl From<IssuerError> for CaError {
    /// The variant of the same name: same text, same HTTP problem.
    fn from(error: IssuerError) -> Self {
        match error {
            IssuerError::KeyMismatch { name, label } => CaError::KeyMismatch { name, label },
            IssuerError::Hsm(e) => CaError::Hsm(e),
            IssuerError::Corrupt(detail) => CaError::Corrupt(detail),
            IssuerError::Encoding(detail) => CaError::Encoding(detail),
        }
    }
}

impl CaError {
    /// Whether the failure is the HSM being unavailable (callers answer 503 and retry).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, CaError::Hsm(e) if e.is_unavailable())
    }
}

/// Refuses to write the row `key` of `T` in `txn` when it exists: `what` says what it is
/// ("card c-1", "a scheduled revocation s-1").
fn refuse_existing<T: crate::store::Table>(
    txn: &crate::store::Txn<'_>,
    key: &T::Key,
    what: impl FnOnce() -> String,
) -> Result<(), CaError> {
    if txn.contains::<T>(key)? {
        return Err(CaError::Refused(format!("{} already exists", what())));
    }
    Ok(())
}

/// Reads the CA state, if the ceremony has run.
pub fn load_state(store: &Store) -> Result<Option<CaState>, CaError> {
    match store.get::<Meta>(&meta_keys::CA_STATE.to_owned())? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| CaError::Corrupt(format!("CA state: {e}"))),
        None => Ok(None),
    }
}

/// A certificate just issued.
#[derive(Clone, Debug)]
pub struct IssuedCertificate {
    pub issuer: IssuerId,
    pub serial: Serial,
    pub policy: String,
    pub der: Vec<u8>,
    pub not_after: Timestamp,
}

impl IssuedCertificate {
    pub fn pem(&self) -> String {
        crate::x509::pem::encode(crate::x509::pem::CERTIFICATE, &self.der)
    }
}

/// The issuing side of the CA.
#[derive(Clone)]
pub struct CertificateAuthority {
    store: Store,
    /// Swapped whole on SIGHUP: an issuance uses the set it started with.
    policies: Arc<std::sync::RwLock<Arc<PolicySet>>>,
    urls: PublishedUrls,
    clock: Arc<dyn Clock>,
    /// The issuing CA of new certificates; swapped by a CA rollover (`sceau ca rotate`). Each
    /// issuance takes it once and uses that CA from start to end.
    issuer: Arc<std::sync::RwLock<Arc<Issuer>>>,
    /// The name of the first issuing CA, as written in the configured URLs (later generations
    /// publish under their own names, see [`PublishedUrls::for_ca`]).
    first_issuing_name: String,
    /// Unix time of the soonest scheduled revocation (`u64::MAX`: none), so that the daemon's
    /// once-every-200-ms look reads the store only when one is due.
    next_scheduled: Arc<std::sync::atomic::AtomicU64>,
}

impl core::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("issuer", &self.issuer().name)
            .finish()
    }
}

impl CertificateAuthority {
    /// Loads the CA from the store (checking each key against its certificate) and revokes any
    /// issuance intent left without a certificate by a crash.
    pub fn open(
        store: Store,
        hsm: &Hsm,
        policies: Arc<PolicySet>,
        urls: PublishedUrls,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, CaError> {
        // A key ceremony interrupted by a crash is resolved before anything else: what it
        // signed that the CA state does not know is revoked, its keys are reported.
        ceremony_intent::resolve(&store, clock.now())?;
        let state = load_state(&store)?
            .ok_or_else(|| CaError::NotInitialized(store.path().to_path_buf()))?;
        let current = match state.issuing.last() {
            Some(current) => current,
            None if state.pending_issuing.is_some() => return Err(CaError::AwaitingImport),
            None => return Err(CaError::Corrupt("no issuing CA".into())),
        };
        let issuer = Issuer::load(hsm, current)?;
        let first_issuing_name = state
            .issuing
            .first()
            .map(|c| c.name.clone())
            .unwrap_or_default();
        let revoked = recover_intents(&store, clock.now())?;
        if !revoked.is_empty() {
            tracing::warn!(
                count = revoked.len(),
                "revoked issuance intents left by an interrupted run"
            );
        }
        // Revocations whose time came while the CA was down run now, before anything is
        // served (the validation authority opens after the CA and reads what is revoked).
        let due = schedule::execute_due(&store, clock.now())?;
        if !due.is_empty() {
            tracing::warn!(
                count = due.len(),
                "revoked certificates whose scheduled time passed while the daemon was down"
            );
        }
        let next = schedule::next_due(&store)?.map_or(u64::MAX, |t| t.unix_seconds());
        Ok(Self {
            store,
            policies: Arc::new(std::sync::RwLock::new(policies)),
            urls,
            clock,
            issuer: Arc::new(std::sync::RwLock::new(Arc::new(issuer))),
            first_issuing_name,
            next_scheduled: Arc::new(std::sync::atomic::AtomicU64::new(next)),
        })
    }

    /// Schedules a revocation (`sceau revoke --at`); one at a time in the past or now is
    /// refused (revoke at once instead).
    pub fn schedule_revocation(&self, entry: schedule::ScheduledRevocation) -> Result<(), CaError> {
        let now = self.clock.now();
        let at = entry.at;
        self.store
            .commit(move |txn| schedule::schedule_in(txn, &entry, now))?;
        self.note_scheduled(at);
        Ok(())
    }

    /// Cancels a scheduled revocation (`by`: who, for the audit log).
    pub fn cancel_scheduled(
        &self,
        id: &str,
        by: &str,
    ) -> Result<schedule::ScheduledRevocation, CaError> {
        let (id, by) = (id.to_owned(), by.to_owned());
        self.store
            .commit(move |txn| schedule::cancel_in(txn, &id, &by))
    }

    /// Tells the timer about a revocation scheduled at `at` (written by the caller's commit).
    pub fn note_scheduled(&self, at: Timestamp) {
        self.next_scheduled
            .fetch_min(at.unix_seconds(), std::sync::atomic::Ordering::SeqCst);
    }

    /// Carries out the scheduled revocations whose time has come; returns what was revoked.
    /// Cheap when none is due.
    pub fn revoke_due(&self) -> Result<Vec<revoke::RevokedCertificate>, CaError> {
        let now = self.clock.now();
        let next = self
            .next_scheduled
            .load(std::sync::atomic::Ordering::SeqCst);
        if now.unix_seconds() < next {
            return Ok(Vec::new());
        }
        // Re-read after the run: anything scheduled meanwhile lowers it again. Whatever fails,
        // the timer looks again within a second (never left at "none").
        self.next_scheduled
            .store(u64::MAX, std::sync::atomic::Ordering::SeqCst);
        let revoked = schedule::execute_due(&self.store, now);
        match schedule::next_due(&self.store) {
            Ok(Some(next)) => self.note_scheduled(next),
            Ok(None) if revoked.is_ok() => {}
            _ => self.note_scheduled(now.plus_seconds(1)),
        }
        revoked
    }

    /// The issuing CA of new certificates.
    pub fn issuer(&self) -> Arc<Issuer> {
        self.issuer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Makes `issuer` the CA of new certificates (a CA rollover): issuances already running
    /// finish with the CA they started with.
    pub fn switch_issuer(&self, issuer: Issuer) {
        tracing::info!(issuer = %issuer.name, key = issuer.key.label(), "new certificates are issued by a new CA");
        *self.issuer.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(issuer);
    }

    /// The URLs written in certificates of `issuer`.
    fn urls_of(&self, issuer: &Issuer) -> Result<PublishedUrls, CaError> {
        self.urls
            .for_ca(&self.first_issuing_name, &issuer.name)
            .map_err(CaError::Refused)
    }

    /// The policies in force.
    pub fn policies(&self) -> Arc<PolicySet> {
        self.policies
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts a new set of policies in force (SIGHUP); requests already running keep theirs.
    pub fn reload_policies(&self, policies: PolicySet) {
        *self.policies.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(policies);
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    fn policy(&self, name: &str) -> Result<crate::policy::Policy, CaError> {
        let policies = self.policies();
        policies
            .get(name)
            .cloned()
            .ok_or_else(|| CaError::UnknownPolicy {
                name: name.to_owned(),
                known: policies.names().collect::<Vec<_>>().join(", "),
            })
    }

    /// Issues one certificate. Nothing is stored and the HSM is not asked to sign unless every
    /// rule of the policy holds.
    pub fn issue(
        &self,
        request: &IssuanceRequest,
        holder: Option<&str>,
    ) -> Result<IssuedCertificate, CaError> {
        if let Some(holder) = holder {
            check_identifier("holder", holder)?;
        }
        let policy = self.policy(&request.policy)?;
        let issuer = self.issuer();
        let profile = issuer.profile(&self.urls_of(&issuer)?)?;
        let now = self.clock.now();
        let issuer_id = issuer.id;
        let holder = holder.map(str::to_owned);
        let signed = issue_all(
            &self.store,
            &issuer.key,
            1,
            now,
            |serials| {
                let mut pending = Vec::new();
                for serial in serials {
                    let tbs = crate::policy::prepare(&policy, &profile, request, serial, now)?;
                    pending.push(PendingCertificate::from_linted(
                        issuer_id,
                        tbs,
                        holder.clone(),
                        None,
                    ));
                }
                Ok(pending)
            },
            |_| None,
        )?;
        let signed = signed
            .signed
            .into_iter()
            .next()
            .ok_or(CaError::Encoding("nothing signed".into()))?;
        Ok(IssuedCertificate {
            issuer: issuer_id,
            serial: signed.pending.key.serial.clone(),
            policy: signed.pending.policy.clone(),
            der: signed.der,
            not_after: signed.pending.not_after,
        })
    }

    /// The stored certificate for a serial, under whichever CA issued it.
    pub fn certificate(
        &self,
        serial: &Serial,
    ) -> Result<Option<crate::store::CertRecord>, CaError> {
        let Some(issuer) = self.store.get::<crate::store::schema::Serials>(serial)? else {
            return Ok(None);
        };
        let key = CertKey {
            issuer,
            serial: serial.clone(),
        };
        Ok(self.store.get::<crate::store::schema::Certificates>(&key)?)
    }
}

/// What the store knows of a serial number.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SerialInfo {
    pub serial: String,
    pub state: SerialState,
    pub issuer: Option<IssuerId>,
    pub policy: Option<String>,
    pub holder: Option<String>,
    pub card: Option<String>,
    pub not_after: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    pub reason: Option<crate::x509::revocation::RevocationReason>,
}

/// The states a serial can be in.
#[derive(Copy, Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SerialState {
    /// Issued and not revoked.
    Issued,
    Revoked,
    /// Recorded before signing, not resolved yet.
    Intent,
    /// Never reserved by this CA.
    Unknown,
}

/// Looks a serial up under whichever issuer reserved it.
pub fn lookup(store: &Store, serial: &Serial) -> Result<SerialInfo, CaError> {
    use crate::store::schema::{Certificates, Intents, Revocations, Serials};
    let mut info = SerialInfo {
        serial: serial.to_hex(),
        state: SerialState::Unknown,
        issuer: None,
        policy: None,
        holder: None,
        card: None,
        not_after: None,
        revoked_at: None,
        reason: None,
    };
    let Some(issuer) = store.get::<Serials>(serial)? else {
        return Ok(info);
    };
    info.issuer = Some(issuer);
    let key = CertKey {
        issuer,
        serial: serial.clone(),
    };
    if let Some(record) = store.get::<Certificates>(&key)? {
        info.state = SerialState::Issued;
        info.policy = Some(record.policy);
        info.holder = record.holder;
        info.card = record.card;
        info.not_after = Some(record.not_after);
    } else if let Some(intent) = store.get::<Intents>(&key)? {
        info.state = SerialState::Intent;
        info.policy = Some(intent.policy);
        info.holder = intent.holder;
        info.not_after = Some(intent.not_after);
    }
    if let Some(revocation) = store.get::<Revocations>(&key)? {
        info.state = SerialState::Revoked;
        info.revoked_at = Some(revocation.revoked_at);
        info.reason = Some(revocation.reason);
        info.not_after = Some(revocation.not_after);
    }
    Ok(info)
}
