//! The OCSP responder: a map of pre-signed responses, and the hot path over it.
//!
//! The hot path is parse, look up, write: a request for one certificate, without a nonce, is
//! answered from memory with no HSM call and no disk read. Everything else (a nonce, several
//! CertIDs, a serial the CA never issued, a response being re-signed) needs a live signature:
//! those go through a bounded number of permits, and past the bound a nonce request gets the
//! pre-signed response (RFC 9654 allows a responder to ignore the nonce) and the rest `tryLater`.
//!
//! Responses are persisted (without audit events or fsync: they are derived data) so that a
//! restart serves again as soon as they are read back; they are re-signed on issuance, on
//! revocation, and before half of their validity has passed.
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use bytes::Bytes;
use tokio::sync::Semaphore;

use super::responses::{CertIdHash, IssuerIdentity, ResponseSigner, SignedResponse, Status, Use};
use super::{Metrics, VaError};
use crate::store::schema::{ExpiryIndex, OcspResponses, Revocations};
use crate::store::{CertKey, IssuerId, ResponseKey, Store};
use crate::x509::ocsp::{CertIdRef, OcspResponseStatus, parse_request};
use crate::x509::revocation::RevocationReason;
use crate::x509::{Serial, Timestamp};

const SHARDS: usize = 64;
/// Most "unknown" answers kept for serials the CA never issued (a flood of random serials
/// costs at most this much memory, and signatures only under the live-signing bound).
const UNKNOWN_CACHE: usize = 10_000;
/// Longest wait for a live signature before falling back to the pre-signed answer.
const LIVE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);

/// The answer to a request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A signed response: `head` followed by the shared `tail`.
    Signed {
        head: Bytes,
        tail: Bytes,
        this_update: Timestamp,
        next_update: Timestamp,
        /// Pre-signed (cacheable by HTTP caches) rather than signed for this request.
        presigned: bool,
    },
    /// An unsigned error status (malformedRequest, unauthorized, tryLater, internalError).
    Error(OcspResponseStatus),
}

/// A serial as a fixed-size map key (no allocation per entry).
#[derive(Copy, Clone, PartialEq, Eq, Hash)]
struct SerialKey([u8; 21]);

impl SerialKey {
    fn new(magnitude: &[u8]) -> Option<Self> {
        if magnitude.is_empty() || magnitude.len() > 20 {
            return None;
        }
        let mut key = [0u8; 21];
        key[0] = magnitude.len() as u8;
        key[1..=magnitude.len()].copy_from_slice(magnitude);
        Some(SerialKey(key))
    }

    fn shard(&self) -> usize {
        // Serials are random: their last octet spreads them evenly.
        self.0[self.0[0] as usize] as usize % SHARDS
    }
}

/// Boxed in its shard's map: a map slot then costs 32 octets instead of the entry's 176, which
/// matters because a map is between 44 % and 87 % full (1,000,000 entries in 64 maps of 32,768
/// slots: 400 octets an entry unboxed, 260 boxed).
type Shard = HashMap<SerialKey, Box<Entry>>;

#[derive(Clone, Debug)]
struct Entry {
    status: Status,
    /// By CertIdHash (SHA-1, SHA-256); `None` while waiting to be (re-)signed.
    responses: [Option<SignedResponse>; 2],
}

/// One issuing CA: its identity in CertIDs, the delegated responder it certified (a responder
/// answers only for the CA that issued its certificate, RFC 6960 §4.2.2.2), and its responses.
struct IssuerResponses {
    identity: IssuerIdentity,
    /// The current delegated responder; replaced when it is renewed. None on a responder node
    /// (no HSM): it serves what the CA host signed, never signs.
    signer: RwLock<Option<Arc<ResponseSigner>>>,
    /// Earlier responders whose certificates are still valid: responses they signed are read
    /// back at start-up and served (with their certificate) until re-signed.
    previous: Vec<Arc<ResponseSigner>>,
    shards: Vec<RwLock<Shard>>,
}

impl IssuerResponses {
    fn new(setup: IssuerSetup) -> Self {
        Self {
            identity: setup.identity,
            signer: RwLock::new(setup.signer.map(Arc::new)),
            previous: setup.previous.into_iter().map(Arc::new).collect(),
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
        }
    }

    fn signer(&self) -> Option<Arc<ResponseSigner>> {
        self.signer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn read(&self, key: &SerialKey) -> std::sync::RwLockReadGuard<'_, Shard> {
        self.shards[key.shard()]
            .read()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self, key: &SerialKey) -> std::sync::RwLockWriteGuard<'_, Shard> {
        self.shards[key.shard()]
            .write()
            .unwrap_or_else(|p| p.into_inner())
    }
}

/// An issuing CA as the responder needs it.
#[derive(Debug)]
pub struct IssuerSetup {
    pub identity: IssuerIdentity,
    /// None on a responder node.
    pub signer: Option<ResponseSigner>,
    pub previous: Vec<ResponseSigner>,
}

/// Issuing CAs the responder can answer for in one run: those of the CA state at start-up,
/// plus the ones `sceau ca rotate` adds while it runs. Fixed slots filled in order keep the hot
/// path free of locks while issuers are added.
const ISSUER_SLOTS: usize = 32;

/// A certificate's status as responder nodes receive it: the status, and each pre-signed
/// response (head, the responder's `certs` tail, thisUpdate, nextUpdate) by CertID hash.
#[derive(Clone, Debug)]
pub struct PublishedStatus {
    pub status: Status,
    pub sha1: Option<SignedResponse>,
    pub sha256: Option<SignedResponse>,
}

/// A certificate whose responses must be signed.
#[derive(Clone, Debug)]
pub struct SigningJob {
    pub key: CertKey,
    pub status: Status,
}

/// The responder.
pub struct Responder {
    issuers: Box<[OnceLock<IssuerResponses>]>,
    /// Serialises additions of issuers (readers never wait for it).
    adding: Mutex<()>,
    /// How long responses are valid.
    validity_seconds: u64,
    live: Semaphore,
    unknown: Mutex<HashMap<(usize, CertIdHash, SerialKey), SignedResponse>>,
    /// Where responses are persisted (the CA host); none on a responder node.
    store: Option<Store>,
    metrics: Arc<Metrics>,
    entries: AtomicU64,
    /// Set on a responder node whose view of the engine is incomplete: it serves what it
    /// can stand behind (a revocation is final), and nothing that says "good".
    revoked_only: std::sync::atomic::AtomicBool,
}

impl core::fmt::Debug for Responder {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Responder")
            .field("entries", &self.entries)
            .finish()
    }
}

impl Responder {
    pub fn new(
        issuers: Vec<IssuerSetup>,
        validity_seconds: u64,
        live_limit: usize,
        store: Option<Store>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, VaError> {
        let responder = Self {
            issuers: (0..ISSUER_SLOTS).map(|_| OnceLock::new()).collect(),
            adding: Mutex::new(()),
            validity_seconds,
            live: Semaphore::new(live_limit.max(1)),
            unknown: Mutex::new(HashMap::new()),
            store,
            metrics,
            entries: AtomicU64::new(0),
            revoked_only: std::sync::atomic::AtomicBool::new(false),
        };
        for issuer in issuers {
            responder.add_issuer(issuer)?;
        }
        Ok(responder)
    }

    /// Starts answering for an issuing CA (a CA rollover while the daemon runs). Its
    /// certificates are added with [`Responder::set_status`] and signed like any others.
    pub fn add_issuer(&self, setup: IssuerSetup) -> Result<(), VaError> {
        let _one_at_a_time = self.adding.lock().unwrap_or_else(|p| p.into_inner());
        if self.issuer_index(setup.identity.id).is_some() {
            return Ok(());
        }
        let slot = self
            .issuers
            .iter()
            .find(|slot| slot.get().is_none())
            .ok_or_else(|| {
                VaError::NotReady(format!(
                    "{ISSUER_SLOTS} issuing CAs already loaded: restart the daemon to drop expired ones"
                ))
            })?;
        slot.set(IssuerResponses::new(setup))
            .map_err(|_| VaError::NotReady("issuer slot taken".into()))
    }

    /// The issuers loaded, in the order they were added (the slots fill in order).
    fn issuers(&self) -> impl Iterator<Item = &IssuerResponses> {
        self.issuers.iter().map_while(OnceLock::get)
    }

    fn issuer(&self, index: usize) -> Option<&IssuerResponses> {
        self.issuers.get(index).and_then(OnceLock::get)
    }

    /// Whether the current responder key's token is connected (the responders of all issuers
    /// live in the same token).
    pub fn signer_available(&self) -> bool {
        self.issuers()
            .last()
            .is_some_and(|i| i.signer().is_some_and(|s| s.available()))
    }

    /// Whether the current responder key's token answers and holds the key now (a real call;
    /// blocking): asked before a revocation is committed, which must be signed right after.
    pub fn signer_ready(&self) -> bool {
        self.issuers()
            .last()
            .is_some_and(|i| i.signer().is_some_and(|s| s.probe()))
    }

    /// The current responder of an issuing CA.
    pub fn signer_of(&self, issuer: IssuerId) -> Option<Arc<ResponseSigner>> {
        self.issuer_index(issuer)
            .and_then(|i| self.issuer(i))
            .and_then(IssuerResponses::signer)
    }

    /// Puts a renewed responder of an issuing CA in force: new live responses use it at once;
    /// the pre-signed ones made by the previous responder are served until
    /// [`Responder::due`] has them re-signed.
    pub fn renew_signer(&self, issuer: IssuerId, signer: ResponseSigner) -> Result<(), VaError> {
        let index = self.issuer_index(issuer).ok_or(VaError::UnknownIssuer)?;
        let issuer = self.issuer(index).ok_or(VaError::UnknownIssuer)?;
        *issuer.signer.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(signer));
        Ok(())
    }

    /// How long responses are valid.
    pub fn validity_seconds(&self) -> u64 {
        self.validity_seconds
    }

    /// Certificates with responses in memory.
    pub fn entries(&self) -> u64 {
        self.entries.load(Ordering::Relaxed)
    }

    fn issuer_index(&self, id: IssuerId) -> Option<usize> {
        self.issuers().position(|i| i.identity.id == id)
    }

    /// Answers a DER OCSPRequest.
    pub async fn respond(&self, request: &[u8], now: Timestamp) -> Reply {
        let parsed = match parse_request(request) {
            Ok(parsed) => parsed,
            Err(_) => return Reply::Error(OcspResponseStatus::MalformedRequest),
        };
        // The hot path: one CertID, no nonce, pre-signed and fresh.
        let mut presigned = None;
        if parsed.cert_ids.len() == 1 {
            match self.lookup(&parsed.cert_ids[0], now) {
                // An incomplete node cannot say it does not answer for an issuer either.
                Lookup::NoIssuer if self.revoked_only.load(Ordering::Relaxed) => {
                    return Reply::Error(OcspResponseStatus::TryLater);
                }
                Lookup::NoIssuer => return Reply::Error(OcspResponseStatus::Unauthorized),
                Lookup::Presigned(response) if parsed.nonce.is_none() => {
                    return self.reply(response, true);
                }
                Lookup::Presigned(response) => presigned = Some(response),
                Lookup::Missing => {}
            }
        }
        // Live: a nonce, several CertIDs, or nothing fresh pre-signed.
        let Ok(_permit) = self.live.try_acquire() else {
            self.metrics.live_refused.fetch_add(1, Ordering::Relaxed);
            return match presigned {
                Some(response) => self.reply(response, true),
                None => Reply::Error(OcspResponseStatus::TryLater),
            };
        };
        let single = presigned.is_some();
        drop(presigned);
        // A hung (not failing) HSM must not hold the permits: past the deadline the request
        // gets the pre-signed answer (or tryLater) and the permit is free again.
        let live = tokio::time::timeout(
            LIVE_DEADLINE,
            self.sign_live(&parsed.cert_ids, parsed.nonce, now),
        );
        match live.await {
            Ok(Ok(reply)) => reply,
            // Looked up again: the status may have changed (a revocation) while the HSM was
            // asked, and the pre-signed response found before would then be outdated.
            Ok(Err(_)) | Err(_) => match single.then(|| self.lookup(&parsed.cert_ids[0], now)) {
                Some(Lookup::Presigned(response)) => self.reply(response, true),
                _ => Reply::Error(OcspResponseStatus::TryLater),
            },
        }
    }

    fn reply(&self, response: SignedResponse, presigned: bool) -> Reply {
        Reply::Signed {
            head: response.head,
            tail: response.tail,
            this_update: response.this_update,
            next_update: response.next_update,
            presigned,
        }
    }

    fn lookup(&self, cert_id: &CertIdRef<'_>, now: Timestamp) -> Lookup {
        let Some(hash) = CertIdHash::from_oid(cert_id.hash_algorithm.oid) else {
            return Lookup::NoIssuer;
        };
        let name_hash = cert_id.issuer_name_hash.as_bytes();
        let key_hash = cert_id.issuer_key_hash.as_bytes();
        let Some((index, issuer)) = self
            .issuers()
            .enumerate()
            .find(|(_, i)| i.identity.matches(hash, name_hash, key_hash))
        else {
            return Lookup::NoIssuer;
        };
        let Some(serial) = serial_key(cert_id) else {
            return Lookup::Missing;
        };
        if let Some(entry) = issuer.read(&serial).get(&serial) {
            if !matches!(entry.status, Status::Revoked { .. })
                && self.revoked_only.load(Ordering::Relaxed)
            {
                return Lookup::Missing;
            }
            return match &entry.responses[hash as usize] {
                Some(response) if response.next_update > now => Lookup::Presigned(response.clone()),
                _ => Lookup::Missing,
            };
        }
        let cache = self.unknown.lock().unwrap_or_else(|p| p.into_inner());
        match cache.get(&(index, hash, serial)) {
            Some(response) if response.next_update > now => Lookup::Presigned(response.clone()),
            _ => Lookup::Missing,
        }
    }

    /// Signs a response for this request now (nonce echoed), and keeps "unknown" answers for
    /// single requests without a nonce.
    async fn sign_live(
        &self,
        cert_ids: &[CertIdRef<'_>],
        nonce: Option<&[u8]>,
        now: Timestamp,
    ) -> Result<Reply, VaError> {
        let next_update = now.plus_seconds(self.validity_seconds);
        let mut singles = Vec::with_capacity(cert_ids.len());
        let mut signed_statuses = Vec::with_capacity(cert_ids.len());
        let mut cacheable = None;
        // One response has one signer: the CertIDs must all name the CA of that responder.
        let mut answering: Option<usize> = None;
        for cert_id in cert_ids {
            let Some((index, hash)) = self.issuer_of(cert_id) else {
                return Ok(Reply::Error(OcspResponseStatus::Unauthorized));
            };
            if *answering.get_or_insert(index) != index {
                return Ok(Reply::Error(OcspResponseStatus::Unauthorized));
            }
            let Some(issuer) = self.issuer(index) else {
                return Ok(Reply::Error(OcspResponseStatus::Unauthorized));
            };
            let status = serial_key(cert_id)
                .and_then(|s| issuer.read(&s).get(&s).map(|e| e.status))
                .unwrap_or(Status::Unknown);
            signed_statuses.push(status);
            let cert_id_der =
                der::Encode::to_der(cert_id).map_err(|e| VaError::Encoding(e.to_string()))?;
            let cutoff = issuer.identity.archive_cutoff;
            singles.push(
                ResponseSigner::single(&cert_id_der, status, now, next_update, cutoff)
                    .map_err(|e| VaError::Encoding(e.to_string()))?,
            );
            if cert_ids.len() == 1 && nonce.is_none() && status == Status::Unknown {
                cacheable = serial_key(cert_id).map(|s| (index, hash, s));
            }
        }
        let Some(issuer) = answering.and_then(|i| self.issuer(i)) else {
            return Ok(Reply::Error(OcspResponseStatus::MalformedRequest));
        };
        let Some(signer) = issuer.signer() else {
            return Err(VaError::NotReady("no responder key on this node".into()));
        };
        // A response for one request (its nonce, or several CertIDs) is used once; an "unknown"
        // kept in the cache below is served again, so it is checked like a pre-signed one.
        let usage = if cacheable.is_some() {
            Use::Kept
        } else {
            Use::Once
        };
        let head = signer.sign(singles, now, nonce, usage).await?;
        // A status that changed while the HSM signed (a revocation) makes this answer outdated.
        let changed = cert_ids
            .iter()
            .zip(&signed_statuses)
            .any(|(cert_id, signed)| {
                let now_in_force = serial_key(cert_id)
                    .and_then(|s| issuer.read(&s).get(&s).map(|e| e.status))
                    .unwrap_or(Status::Unknown);
                now_in_force != *signed
            });
        if changed {
            return Err(VaError::NotReady("a status changed while signing".into()));
        }
        self.metrics.live_signed.fetch_add(1, Ordering::Relaxed);
        let response = SignedResponse {
            head,
            tail: signer.certs_tail().clone(),
            this_update: now,
            next_update,
        };
        if let Some(key) = cacheable {
            let mut cache = self.unknown.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() >= UNKNOWN_CACHE {
                cache.clear();
            }
            cache.insert(key, response.clone());
        }
        Ok(self.reply(response, false))
    }

    fn issuer_of(&self, cert_id: &CertIdRef<'_>) -> Option<(usize, CertIdHash)> {
        let hash = CertIdHash::from_oid(cert_id.hash_algorithm.oid)?;
        let index = self.issuers().position(|i| {
            i.identity.matches(
                hash,
                cert_id.issuer_name_hash.as_bytes(),
                cert_id.issuer_key_hash.as_bytes(),
            )
        })?;
        Some((index, hash))
    }

    /// Sets a certificate's status and returns the status in force afterwards. A changed status
    /// drops its old responses at once, so that a revoked certificate is never answered "good"
    /// while its new responses are being signed. Revocation is final: once a certificate is
    /// revoked here, nothing (a late issuance notice, a re-signing job read before the
    /// revocation) makes it good again or changes its revocation time and reason; the returned
    /// status then says so, and the caller signs that instead.
    pub fn set_status(&self, key: &CertKey, status: Status) -> Option<Status> {
        let index = self.issuer_index(key.issuer)?;
        let serial = SerialKey::new(key.serial.as_bytes())?;
        let issuer = self.issuer(index)?;
        let mut shard = issuer.write(&serial);
        let in_force = match shard.get_mut(&serial) {
            Some(entry) if entry.status == status => status,
            Some(entry) if !may_replace(entry.status, status) => {
                tracing::debug!(serial = %key.serial, "a late status change of a revoked certificate is ignored");
                entry.status
            }
            Some(entry) => {
                entry.status = status;
                entry.responses = [None, None];
                status
            }
            None => {
                shard.insert(
                    serial,
                    Box::new(Entry {
                        status,
                        responses: [None, None],
                    }),
                );
                self.entries.fetch_add(1, Ordering::Relaxed);
                status
            }
        };
        drop(shard);
        let mut cache = self.unknown.lock().unwrap_or_else(|p| p.into_inner());
        for hash in CertIdHash::ALL {
            cache.remove(&(index, hash, serial));
        }
        Some(in_force)
    }

    /// Signs both responses of each job, installs them, and persists them. Returns how many
    /// certificates were signed.
    pub async fn sign_jobs(
        self: &Arc<Self>,
        jobs: Vec<SigningJob>,
        now: Timestamp,
    ) -> Result<usize, VaError> {
        const IN_FLIGHT: usize = 64;
        let limit = Arc::new(Semaphore::new(IN_FLIGHT));
        let mut tasks = tokio::task::JoinSet::new();
        let mut rows = Vec::new();
        let mut signed = 0;
        let mut first_error = None;
        for job in jobs {
            let permit = limit
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| VaError::ShuttingDown)?;
            let this = Arc::clone(self);
            tasks.spawn(async move {
                let _permit = permit;
                this.sign_one(job, now).await
            });
            while let Some(done) = tasks.try_join_next() {
                collect(done, &mut rows, &mut signed, &mut first_error);
            }
            if rows.len() >= 1024 {
                self.persist(std::mem::take(&mut rows)).await?;
            }
        }
        while let Some(done) = tasks.join_next().await {
            collect(done, &mut rows, &mut signed, &mut first_error);
        }
        self.persist(rows).await?;
        match first_error {
            Some(error) if signed == 0 => Err(error),
            Some(error) => {
                tracing::warn!(%error, signed, "some OCSP responses could not be signed; they will be retried");
                Ok(signed)
            }
            None => Ok(signed),
        }
    }

    async fn sign_one(
        &self,
        job: SigningJob,
        now: Timestamp,
    ) -> Result<Vec<(ResponseKey, Option<Vec<u8>>)>, VaError> {
        let index = self
            .issuer_index(job.key.issuer)
            .ok_or(VaError::UnknownIssuer)?;
        let issuer = self.issuer(index).ok_or(VaError::UnknownIssuer)?;
        // A job read before a revocation is not signed at all: the revocation's own job is.
        if self
            .status_of(&job.key)
            .is_some_and(|current| current != job.status)
        {
            return Ok(Vec::new());
        }
        let identity = &issuer.identity;
        let Some(signer) = issuer.signer() else {
            return Err(VaError::NotReady("no responder key on this node".into()));
        };
        let next_update = now.plus_seconds(self.validity_seconds);
        let mut responses: [Option<SignedResponse>; 2] = [None, None];
        let mut rows = Vec::with_capacity(2);
        for hash in CertIdHash::ALL {
            let cert_id = identity
                .cert_id(hash, &job.key.serial)
                .map_err(|e| VaError::Encoding(e.to_string()))?;
            let single = ResponseSigner::single(
                &cert_id,
                job.status,
                now,
                next_update,
                identity.archive_cutoff,
            )
            .map_err(|e| VaError::Encoding(e.to_string()))?;
            let head = signer.sign(vec![single], now, None, Use::Kept).await?;
            let response = SignedResponse {
                head,
                tail: signer.certs_tail().clone(),
                this_update: now,
                next_update,
            };
            rows.push((
                ResponseKey {
                    certificate: job.key.clone(),
                    hash: hash.code(),
                },
                Some(encode_row(&response, job.status, signer.key_hash())),
            ));
            responses[hash as usize] = Some(response);
        }
        self.metrics.presigned.fetch_add(2, Ordering::Relaxed);
        if self.install(index, &job.key.serial, job.status, responses) {
            Ok(rows)
        } else {
            // The status changed while signing: persisting these would put an outdated
            // answer back on disk.
            Ok(Vec::new())
        }
    }

    /// Installs responses unless the status changed meanwhile (a revocation won the race);
    /// returns whether they were installed.
    fn install(
        &self,
        index: usize,
        serial: &Serial,
        status: Status,
        responses: [Option<SignedResponse>; 2],
    ) -> bool {
        let Some(key) = SerialKey::new(serial.as_bytes()) else {
            return false;
        };
        let Some(issuer) = self.issuer(index) else {
            return false;
        };
        let mut shard = issuer.write(&key);
        match shard.get_mut(&key) {
            Some(entry) if entry.status == status => {
                entry.responses = responses;
                true
            }
            Some(_) => false,
            None => {
                shard.insert(key, Box::new(Entry { status, responses }));
                self.entries.fetch_add(1, Ordering::Relaxed);
                true
            }
        }
    }

    async fn persist(&self, mut rows: Vec<(ResponseKey, Option<Vec<u8>>)>) -> Result<(), VaError> {
        // A row signed before a revocation that landed while the batch waited is not written:
        // only the status in force goes to disk (the revocation table settles any row that
        // slips through at the next start).
        rows.retain(|(key, row)| {
            let persisted = row
                .as_deref()
                .and_then(decode_row)
                .map(|(status, ..)| status);
            persisted.is_some() && persisted == self.status_of(&key.certificate)
        });
        if rows.is_empty() {
            return Ok(());
        }
        // Responder nodes learn of new responses through the outbox, written in the same batch.
        let mut changed: Vec<String> = rows
            .iter()
            .map(|(key, _)| crate::store::status_change(&key.certificate))
            .collect();
        changed.dedup();
        let Some(store) = self.store.clone() else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || {
            store.write_derived_marked::<OcspResponses>(&rows, &changed)
        })
        .await
        .map_err(|_| VaError::ShuttingDown)??;
        Ok(())
    }

    /// A status published by the CA host, on a responder node: applied under the rule of
    /// [`Responder::set_status`] (revocation is final), and its responses installed only when
    /// that status is the one in force (a late "good" never brings back a "good" response for a
    /// revoked certificate). `None` for an issuer this responder does not answer for.
    pub fn apply_published(
        &self,
        key: &CertKey,
        status: Status,
        responses: [Option<SignedResponse>; 2],
    ) -> Option<bool> {
        let in_force = self.set_status(key, status)?;
        if in_force != status {
            return Some(false);
        }
        let index = self.issuer_index(key.issuer)?;
        Some(self.install(index, &key.serial, status, responses))
    }

    /// What a responder node must know of a certificate, as this responder holds it now: its
    /// status and its two pre-signed responses (`None` while being re-signed). `None` for an
    /// issuer or serial this responder does not know.
    pub fn published(&self, key: &CertKey) -> Option<PublishedStatus> {
        let index = self.issuer_index(key.issuer)?;
        let serial = SerialKey::new(key.serial.as_bytes())?;
        let issuer = self.issuer(index)?;
        let shard = issuer.read(&serial);
        let entry = shard.get(&serial)?;
        Some(PublishedStatus {
            status: entry.status,
            sha1: entry.responses[CertIdHash::Sha1 as usize].clone(),
            sha256: entry.responses[CertIdHash::Sha256 as usize].clone(),
        })
    }

    /// At start-up: reads back the persisted responses (dropping any signed by another
    /// responder key, expired, or contradicting the revocation table), and returns the
    /// certificates whose responses must be signed.
    pub fn load(&self, now: Timestamp) -> Result<Vec<SigningJob>, VaError> {
        let Some(store) = self.store.as_ref() else {
            return Ok(Vec::new());
        };
        let mut loaded = 0u64;
        for issuer in self.issuers() {
            // Responses by the issuer's current responder, or by an earlier one still valid
            // (served with its certificate until re-signed: a renewal leaves no gap, even
            // across a restart).
            let signers: Vec<Arc<ResponseSigner>> = issuer
                .signer()
                .into_iter()
                .chain(issuer.previous.iter().cloned())
                .collect();
            let prefix = ResponseKey::issuer_prefix(issuer.identity.id);
            for row in store.scan::<OcspResponses>(&prefix, &prefix)? {
                let (key, value) = row?;
                let Some((status, responder, mut response)) = decode_row(&value) else {
                    continue;
                };
                let hash = match key.hash {
                    1 => CertIdHash::Sha1,
                    2 => CertIdHash::Sha256,
                    _ => continue,
                };
                let Some(signer) = signers.iter().find(|s| s.key_hash() == responder) else {
                    continue;
                };
                if response.next_update <= now {
                    continue;
                }
                response.tail = signer.certs_tail().clone();
                let Some(serial) = SerialKey::new(key.certificate.serial.as_bytes()) else {
                    continue;
                };
                let mut shard = issuer.write(&serial);
                let entry = shard.entry(serial).or_insert_with(|| {
                    loaded += 1;
                    Box::new(Entry {
                        status,
                        responses: [None, None],
                    })
                });
                if entry.status == status {
                    entry.responses[hash as usize] = Some(response);
                }
            }
        }
        self.entries.store(loaded, Ordering::Relaxed);
        // The store is the truth: revocations made while the responder was down (offline CLI),
        // and certificates issued meanwhile.
        let mut jobs = Vec::new();
        for row in store.scan::<Revocations>(&[], &[])? {
            let (key, record) = row?;
            if self.issuer_index(key.issuer).is_none() {
                continue;
            }
            let status = Status::Revoked {
                at: record.revoked_at,
                reason: record.reason,
            };
            if self.status_of(&key) != Some(status) {
                self.set_status(&key, status);
                jobs.push(SigningJob { key, status });
            }
        }
        for row in store.scan::<ExpiryIndex>(&[], &[])? {
            let (expiry, ()) = row?;
            let key = expiry.certificate;
            if self.issuer_index(key.issuer).is_none() || self.status_of(&key).is_some() {
                continue;
            }
            self.set_status(&key, Status::Good);
            jobs.push(SigningJob {
                key,
                status: Status::Good,
            });
        }
        // Entries loaded with one of their two responses missing or expired.
        jobs.extend(self.due(now, u64::MAX));
        jobs.sort_by(|a, b| a.key.cmp(&b.key));
        jobs.dedup_by(|a, b| a.key == b.key);
        tracing::info!(
            loaded,
            to_sign = jobs.len(),
            "OCSP responses loaded from the store"
        );
        Ok(jobs)
    }

    fn status_of(&self, key: &CertKey) -> Option<Status> {
        let index = self.issuer_index(key.issuer)?;
        let serial = SerialKey::new(key.serial.as_bytes())?;
        self.issuer(index)?
            .read(&serial)
            .get(&serial)
            .map(|e| e.status)
    }

    /// Every certificate this responder holds a status for (a full publication to the nodes).
    pub fn keys(&self) -> Vec<CertKey> {
        let mut keys = Vec::with_capacity(self.entries() as usize);
        for issuer in self.issuers() {
            for shard in &issuer.shards {
                let shard = shard.read().unwrap_or_else(|p| p.into_inner());
                for serial in shard.keys() {
                    let magnitude = &serial.0[1..=serial.0[0] as usize];
                    if let Ok(serial) = Serial::from_magnitude(magnitude) {
                        keys.push(CertKey {
                            issuer: issuer.identity.id,
                            serial,
                        });
                    }
                }
            }
        }
        keys
    }

    /// Certificates whose responses are missing, expired, or older than `max_age` seconds.
    pub fn due(&self, now: Timestamp, max_age: u64) -> Vec<SigningJob> {
        let mut jobs = Vec::new();
        for issuer in self.issuers() {
            let Some(current) = issuer.signer() else {
                continue;
            };
            for shard in &issuer.shards {
                let shard = shard.read().unwrap_or_else(|p| p.into_inner());
                for (serial, entry) in shard.iter() {
                    let stale = entry.responses.iter().any(|r| match r {
                        Some(r) => {
                            r.this_update.plus_seconds(max_age) <= now
                                || r.next_update <= now
                                || !r.signed_by(&current)
                        }
                        None => true,
                    });
                    if stale {
                        let magnitude = &serial.0[1..=serial.0[0] as usize];
                        if let Ok(serial) = Serial::from_magnitude(magnitude) {
                            jobs.push(SigningJob {
                                key: CertKey {
                                    issuer: issuer.identity.id,
                                    serial,
                                },
                                status: entry.status,
                            });
                        }
                    }
                }
            }
        }
        jobs
    }

    /// On a responder node: while `on`, only "revoked" answers are served, every other one gets
    /// `tryLater` (a view that may miss a revocation must not say "good").
    pub fn serve_revoked_only(&self, on: bool) {
        self.revoked_only.store(on, Ordering::Relaxed);
    }

    /// Half of the responses' validity: the age at which they are re-signed.
    pub fn refresh_age(&self) -> u64 {
        self.validity_seconds / 2
    }
}

/// Whether a certificate whose status is `current` may be given `next`: anything but a
/// revocation may change; a revocation is final, time and reason included.
fn may_replace(current: Status, next: Status) -> bool {
    !matches!(current, Status::Revoked { .. }) || current == next
}

enum Lookup {
    Presigned(SignedResponse),
    NoIssuer,
    /// Nothing fresh pre-signed: the issuer is ours, the answer must be signed now.
    Missing,
}

/// The serial of a CertID as a map key; `None` for values no certificate of ours can have
/// (negative, zero, longer than 20 octets).
fn serial_key(cert_id: &CertIdRef<'_>) -> Option<SerialKey> {
    let bytes = cert_id.serial_number.as_bytes();
    if bytes.first().is_some_and(|b| b & 0x80 != 0) {
        return None;
    }
    let magnitude = match bytes {
        [0, rest @ ..] => rest,
        other => other,
    };
    SerialKey::new(magnitude)
}

type Rows = Vec<(ResponseKey, Option<Vec<u8>>)>;

fn collect(
    done: Result<Result<Rows, VaError>, tokio::task::JoinError>,
    rows: &mut Rows,
    signed: &mut usize,
    first_error: &mut Option<VaError>,
) {
    match done {
        Ok(Ok(mut more)) => {
            rows.append(&mut more);
            *signed += 1;
        }
        Ok(Err(error)) => {
            first_error.get_or_insert(error);
        }
        Err(_) => {
            first_error.get_or_insert(VaError::ShuttingDown);
        }
    }
}

/// A persisted response: version (1) || status (0 good, 1 revoked) || revoked_at (8) ||
/// reason code (1, 0xff none) || this_update (8) || next_update (8) || responder key hash (20)
/// || head.
fn encode_row(response: &SignedResponse, status: Status, responder: [u8; 20]) -> Vec<u8> {
    let mut out = Vec::with_capacity(47 + response.head.len());
    out.push(1);
    let (code, at, reason) = match status {
        Status::Good => (0u8, 0u64, 0xffu8),
        Status::Revoked { at, reason } => (1, at.unix_seconds(), reason.code().unwrap_or(0xff)),
        Status::Unknown => (2, 0, 0xff),
    };
    out.push(code);
    out.extend_from_slice(&at.to_be_bytes());
    out.push(reason);
    out.extend_from_slice(&response.this_update.unix_seconds().to_be_bytes());
    out.extend_from_slice(&response.next_update.unix_seconds().to_be_bytes());
    out.extend_from_slice(&responder);
    out.extend_from_slice(&response.head);
    out
}

fn decode_row(value: &[u8]) -> Option<(Status, [u8; 20], SignedResponse)> {
    if value.len() < 47 || value[0] != 1 {
        return None;
    }
    let u64_at = |at: usize| {
        value
            .get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
    };
    let status = match value[1] {
        0 => Status::Good,
        1 => Status::Revoked {
            at: Timestamp::from_unix_seconds(u64_at(2)?),
            reason: RevocationReason::from_code(match value[10] {
                0xff => None,
                c => Some(c),
            })?,
        },
        _ => return None,
    };
    let responder: [u8; 20] = value.get(27..47)?.try_into().ok()?;
    Some((
        status,
        responder,
        SignedResponse {
            tail: Bytes::new(),
            this_update: Timestamp::from_unix_seconds(u64_at(11)?),
            next_update: Timestamp::from_unix_seconds(u64_at(19)?),
            head: Bytes::copy_from_slice(&value[47..]),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip() {
        let response = SignedResponse {
            head: Bytes::from_static(b"\x30\x03abc"),
            tail: Bytes::new(),
            this_update: Timestamp::from_unix_seconds(100),
            next_update: Timestamp::from_unix_seconds(200),
        };
        for status in [
            Status::Good,
            Status::Revoked {
                at: Timestamp::from_unix_seconds(50),
                reason: RevocationReason::KeyCompromise,
            },
        ] {
            let row = encode_row(&response, status, [7; 20]);
            let (back, responder, decoded) = decode_row(&row).unwrap();
            assert_eq!((back, responder), (status, [7; 20]));
            assert_eq!(decoded.head, response.head);
            assert_eq!(decoded.next_update, response.next_update);
        }
        assert!(decode_row(&[1, 2, 3]).is_none());
    }
}
