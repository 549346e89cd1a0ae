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

use super::responses::{CertIdHash, IssuerIdentity, ResponseSigner, SignedResponse, Status};
use super::{Metrics, VaError};
use crate::store::{CertKey, IssuerId, Store};
use crate::x509::ocsp::{CertIdRef, OcspResponseStatus, parse_request};
use crate::x509::{Serial, Timestamp};

mod signing;

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

    /// Stops signing for an issuing CA whose key (and its responder's) was destroyed as
    /// retired: what was signed before stays served until it expires, nothing is signed again.
    pub fn retire_signer(&self, issuer: IssuerId) {
        if let Some(issuer) = self.issuer_index(issuer).and_then(|i| self.issuer(i)) {
            *issuer.signer.write().unwrap_or_else(|p| p.into_inner()) = None;
        }
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
        let head = signer.sign(singles, now, nonce).await?;
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
