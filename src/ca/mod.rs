//! The certification authority: the key ceremony, and issuance.
//!
//! [`CertificateAuthority`] ties the policies, the HSM and the store together. It takes its
//! clock as a parameter so that tests can pin the date. See the private `issue` module
//! (src/ca/issue.rs) for the order of the issuance cycle and why it is safe against crashes.

pub mod ceremony;
pub mod ceremony_intent;
pub mod expiry;
mod issue;
pub mod revoke;
pub mod schedule;
/// What the ceremony leaves in the store, declared one floor below (`issuer::state`), shared
/// with the validation authority.
pub use crate::issuer::state;

use std::path::PathBuf;
use std::sync::Arc;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};

pub use crate::issuer::{CaState, Issuer, IssuerError};
pub use issue::{AlongWrite, recover_intents};

use crate::config::PublishedUrls;
use crate::hsm::{Hsm, HsmError};
use crate::policy::{IssuanceRequest, PolicySet, Rejection, Violation};
use crate::store::schema::{Cards, Meta, meta_keys};
use crate::store::{CardRecord, CertKey, IssuerId, Store, StoreError};
use crate::x509::serial::SerialError;
use crate::x509::time::Clock;
use crate::x509::{Serial, Timestamp, keys};
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

/// A request for a card: one holder, two CSRs (two key pairs: a combined certificate is not
/// allowed at RGS ***, RGS A2 I.1.1).
#[derive(Clone, Debug)]
pub struct CardRequest {
    pub holder: String,
    /// The card's identifier; a random one is made when absent.
    pub card: Option<String>,
    pub authentication: IssuanceRequest,
    pub signature: IssuanceRequest,
}

/// Both certificates of a card.
#[derive(Clone, Debug)]
pub struct IssuedCard {
    pub card: String,
    pub holder: String,
    pub authentication: IssuedCertificate,
    pub signature: IssuedCertificate,
}

/// How long a card lives (the brief: certificates 3 years, cards 6).
pub const CARD_LIFETIME_YEARS: u16 = 6;

/// A card issued by a renewal (or a new card, with nothing superseded).
#[derive(Clone, Debug)]
pub struct RenewedCard {
    pub card: IssuedCard,
    /// The previous certificates, revoked as superseded in the same write.
    pub superseded: Vec<revoke::RevokedCertificate>,
}

/// Whether a card issuance makes a new card or renews one.
#[derive(Clone, Debug)]
enum CardPlan {
    New,
    Renewal(CardRecord),
}

impl CardPlan {
    fn card_expires_at(&self, now: Timestamp) -> Result<Timestamp, CaError> {
        match self {
            CardPlan::New => now
                .plus_years(CARD_LIFETIME_YEARS)
                .map_err(|e| CaError::Encoding(e.to_string())),
            CardPlan::Renewal(existing) => Ok(existing.card_expires_at),
        }
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

    /// Issues both certificates of a card, or neither.
    pub fn issue_card(&self, request: &CardRequest) -> Result<IssuedCard, CaError> {
        self.issue_card_with(request, None)
    }

    /// Issues both certificates of a card, or neither, with `along` written in the same batch
    /// as the card (the RA's request record).
    pub fn issue_card_with(
        &self,
        request: &CardRequest,
        along: Option<AlongWrite>,
    ) -> Result<IssuedCard, CaError> {
        let card_id = match &request.card {
            Some(id) => id.clone(),
            None => random_card_id()?,
        };
        let issued = self.issue_pair(request, &card_id, CardPlan::New, along)?;
        Ok(issued.card)
    }

    /// Renews a card: two new certificates for new keys of the same holder, at most once and
    /// within the card's lifetime; the card's previous certificates are revoked as superseded
    /// in the same write (RGS A2 IV.6: a renewal needs new keys).
    pub fn renew_card(&self, request: &CardRequest) -> Result<RenewedCard, CaError> {
        self.renew_card_with(request, None)
    }

    /// Renews a card, with `along` written in the same batch as the new certificates.
    pub fn renew_card_with(
        &self,
        request: &CardRequest,
        along: Option<AlongWrite>,
    ) -> Result<RenewedCard, CaError> {
        let card_id = request
            .card
            .clone()
            .ok_or_else(|| CaError::Refused("a renewal names its card".into()))?;
        let existing = self
            .store
            .get::<Cards>(&card_id)?
            .ok_or_else(|| CaError::NotFound(format!("card {card_id} is unknown")))?;
        if existing.holder != request.holder {
            return Err(CaError::Refused(format!(
                "card {card_id} belongs to another holder"
            )));
        }
        if existing.renewals > 0 {
            return Err(CaError::Refused(format!(
                "card {card_id} was already renewed (a card is renewed once)"
            )));
        }
        if self.clock.now() >= existing.card_expires_at {
            return Err(CaError::Refused(format!(
                "card {card_id} expired on {}",
                existing.card_expires_at
            )));
        }
        self.issue_pair(request, &card_id, CardPlan::Renewal(existing), along)
    }

    /// Checks a card request against the policies and the store (keys never certified, names
    /// not given to another holder) without recording or signing anything: what the
    /// registration authority runs when a request is submitted.
    pub fn check_card(&self, request: &CardRequest) -> Result<(), CaError> {
        let card_id = request.card.clone().unwrap_or_default();
        let plan = match &request.card {
            Some(card) => match self.store.get::<Cards>(card)? {
                Some(existing) => CardPlan::Renewal(existing),
                None => CardPlan::New,
            },
            None => CardPlan::New,
        };
        let pending =
            self.card_certificates(&self.issuer(), request, &card_id, &plan, self.clock.now())?;
        issue::precheck(&self.store, &pending)
    }

    /// The two linted certificates of a card, under fresh serials.
    fn card_certificates(
        &self,
        issuer: &Issuer,
        request: &CardRequest,
        card_id: &str,
        plan: &CardPlan,
        now: Timestamp,
    ) -> Result<Vec<PendingCertificate>, CaError> {
        let serials = (0..2).map(|_| Serial::random()).collect::<Result<_, _>>()?;
        self.card_pending(issuer, request, card_id, plan, now, serials)
    }

    fn card_pending(
        &self,
        issuer: &Issuer,
        request: &CardRequest,
        card_id: &str,
        plan: &CardPlan,
        now: Timestamp,
        serials: Vec<Serial>,
    ) -> Result<Vec<PendingCertificate>, CaError> {
        check_identifier("holder", &request.holder)?;
        check_identifier("card", card_id)?;
        let auth_policy = self.policy(&request.authentication.policy)?;
        let sign_policy = self.policy(&request.signature.policy)?;
        if auth_policy.name == sign_policy.name {
            return Err(CaError::Refused(
                "a card needs two different policies (authentication and signature)".into(),
            ));
        }
        let profile = issuer.profile(&self.urls_of(issuer)?)?;
        let card_expires_at = plan.card_expires_at(now)?;
        // A renewed card's certificates end with the card at the latest.
        let cap = |issuance: &IssuanceRequest, policy: &crate::policy::Policy| {
            let mut capped = issuance.clone();
            if let CardPlan::Renewal(_) = plan {
                // The policy's own rule: capping at exactly three calendar years (one second
                // too many) refused every renewal (issue 10 problem 4).
                let longest = policy
                    .latest_not_after(now)
                    .map_err(|e| CaError::Encoding(e.to_string()))?;
                let wanted = capped.not_after.unwrap_or(longest).min(card_expires_at);
                capped.not_after = Some(wanted);
            }
            Ok::<_, CaError>(capped)
        };
        let mut serials = serials.into_iter();
        let (Some(first), Some(second)) = (serials.next(), serials.next()) else {
            return Err(CaError::Encoding("two serials expected".into()));
        };
        let auth = crate::policy::prepare(
            &auth_policy,
            &profile,
            &cap(&request.authentication, &auth_policy)?,
            first,
            now,
        )?;
        let sign = crate::policy::prepare(
            &sign_policy,
            &profile,
            &cap(&request.signature, &sign_policy)?,
            second,
            now,
        )?;
        check_card_pair(&auth_policy.name, &auth, &sign, card_expires_at)?;
        let holder = Some(request.holder.clone());
        let card = Some(card_id.to_owned());
        Ok(vec![
            PendingCertificate::from_linted(issuer.id, auth, holder.clone(), card.clone()),
            PendingCertificate::from_linted(issuer.id, sign, holder, card),
        ])
    }

    fn issue_pair(
        &self,
        request: &CardRequest,
        card_id: &str,
        plan: CardPlan,
        along: Option<AlongWrite>,
    ) -> Result<RenewedCard, CaError> {
        if let CardPlan::New = plan
            && self.store.get::<Cards>(&card_id.to_owned())?.is_some()
        {
            return Err(CaError::Refused(format!("card {card_id} already exists")));
        }
        let now = self.clock.now();
        let issuer = self.issuer();
        let issuer_id = issuer.id;
        let card_expires_at = plan.card_expires_at(now)?;
        let issued = issue_all(
            &self.store,
            &issuer.key,
            2,
            now,
            |serials| self.card_pending(&issuer, request, card_id, &plan, now, serials),
            |signed| {
                let key = |i: usize| signed.get(i).map(|s| s.pending.key.clone());
                let record = CardRecord {
                    card: card_id.to_owned(),
                    holder: request.holder.clone(),
                    authentication: key(0)?,
                    signature: key(1)?,
                    issued_at: now,
                    card_expires_at,
                    renewals: 0,
                    superseded: Vec::new(),
                };
                Some(match &plan {
                    CardPlan::New => CardWrite::New(record, along),
                    CardPlan::Renewal(previous) => CardWrite::Renewal(
                        CardRecord {
                            issued_at: previous.issued_at,
                            renewals: previous.renewals + 1,
                            superseded: vec![
                                previous.authentication.clone(),
                                previous.signature.clone(),
                            ],
                            ..record
                        },
                        along,
                    ),
                })
            },
        )?;
        let mut certificates = issued.signed.into_iter().map(|s| IssuedCertificate {
            issuer: issuer_id,
            serial: s.pending.key.serial.clone(),
            policy: s.pending.policy.clone(),
            der: s.der,
            not_after: s.pending.not_after,
        });
        let (Some(authentication), Some(signature)) = (certificates.next(), certificates.next())
        else {
            return Err(CaError::Encoding("two certificates expected".into()));
        };
        Ok(RenewedCard {
            card: IssuedCard {
                card: card_id.to_owned(),
                holder: request.holder.clone(),
                authentication,
                signature,
            },
            superseded: issued.superseded,
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

/// The two certificates of a card: two different keys (RGS A2 I.1.1: no dual use at ***), the
/// same holder name, and neither outlives the card.
fn check_card_pair(
    policy: &str,
    authentication: &crate::policy::LintedTbs,
    signature: &crate::policy::LintedTbs,
    card_expires_at: Timestamp,
) -> Result<(), CaError> {
    let mut violations = Vec::new();
    if keys::sha256(authentication.public_key_der()) == keys::sha256(signature.public_key_der()) {
        violations.push(Violation {
            rule: "card-keys-identical",
            message: "the authentication and signature certificates need two different key pairs (RGS A2 I.1.1)".into(),
        });
    }
    if authentication.subject_der() != signature.subject_der() {
        violations.push(Violation {
            rule: "card-subjects-differ",
            message: "both certificates of a card name the same holder".into(),
        });
    }
    if authentication.not_after() > card_expires_at || signature.not_after() > card_expires_at {
        violations.push(Violation {
            rule: "card-validity",
            message: "a certificate may not outlive its card".into(),
        });
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(CaError::Rejected(Rejection {
            policy: policy.to_owned(),
            violations,
        }))
    }
}

/// Holder and card identifiers: 1 to 64 of [A-Za-z0-9._-] (they appear in store keys and URLs).
fn check_identifier(what: &str, value: &str) -> Result<(), CaError> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(CaError::Refused(format!(
            "{what} identifier {value:?}: 1 to 64 characters among A-Z a-z 0-9 . _ -"
        )))
    }
}

/// 128 random bits, hexadecimal: card ids and scheduled revocation ids.
pub fn random_card_id() -> Result<String, CaError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CaError::Serial(SerialError::Rng))?;
    Ok(hex::encode(bytes))
}
