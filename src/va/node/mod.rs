//! A responder node: OCSP, CRLs and CA certificates served from what the CA host published to
//! NATS JetStream ([`super::publish`]), with no HSM, no CA store and no PIN.
//!
//! The node holds the same [`Responder`] as the CA host, without a signer: a request answered
//! from a pre-signed response on the CA host is answered the same way here; a request with a
//! nonce gets the pre-signed response (RFC 9654 §2.1 lets a responder leave the nonce out); a
//! serial the node does not know, or whose response is being re-signed, gets `tryLater` (never
//! "good"); nothing is served past its nextUpdate. Revocation is final here too: a late "good"
//! never replaces "revoked" ([`Responder::apply_published`]).
//!
//! Warm-up: the CA certificates and CRLs first (the issuers the node answers for), then every
//! status: from the publisher's latest snapshot when the manifest names one taken from this
//! bucket ([`super::snapshot`]), then from the bucket past the snapshot's revision (from its
//! start when there is no usable snapshot). The node is *complete* (`/readyz` 200) once it has read the
//! publisher's manifest of the bucket it follows ([`super::publish::EngineManifest`]: the
//! bucket holds every certificate the CA store knows), caught up with the bucket, and holds at
//! least as many entries from it as the manifest announces. Then it follows both buckets.
//!
//! When the engine is unreachable it keeps serving what it has (it was complete at its last
//! contact), reconnects with backoff, and resumes from the last revision it applied. When the
//! engine answers without the bucket (deleted, a cluster rebuilt), or with a bucket that was
//! re-created (another creation time) or went backwards (its last revision below the one
//! applied), the node is incomplete: it says why in `/healthz`, `/readyz` is 503, it serves
//! "revoked" answers only (a revocation is final) and `tryLater` for everything else, and it
//! reads the new bucket from its first revision until the publisher's manifest says it is
//! whole again.
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use bytes::Bytes;

mod follow;
mod snapshot;

use super::crl::PublishedCrl;
use super::publish::parse_status_key;
use super::responder::{IssuerSetup, Responder};
use super::responses::{IssuerIdentity, SignedResponse, Status};
use super::snapshot::{PresignedRef, StatusRecord, StatusWord};
use super::{Metrics, Served, VaError};
use crate::store::IssuerId;
use crate::x509::Timestamp;
use crate::x509::revocation::RevocationReason;
use crate::x509::time::Clock;
pub use follow::follow;

/// Tails found in whole responses that the node shares.
const MAX_TAILS: usize = 64;

/// A responder node's state: the responder and the files it serves.
pub struct Node {
    responder: Responder,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    crls: RwLock<HashMap<String, PublishedCrl>>,
    ca_certificates: RwLock<HashMap<String, Bytes>>,
    /// Whether the node's view is whole ([`Node::is_complete`]).
    complete: AtomicBool,
    /// What the node follows and how far it is.
    view: std::sync::Mutex<View>,
    /// Status entries applied from the bucket followed (or from its snapshot).
    held: AtomicU64,
    /// Statuses read from a snapshot at the last warm-up (0: the bucket was read from its
    /// start).
    snapshot_entries: AtomicU64,
    /// The `certs` tails of the responses (their responder's certificate): one copy shared by
    /// every response that ends with it (the responder certificate is most of a response's
    /// size).
    tails: RwLock<HashMap<String, Bytes>>,
    /// 1 while connected to the engine.
    pub connected: AtomicU64,
    /// The last status bucket revision applied (where a reconnection resumes).
    pub revision: AtomicU64,
    /// Status entries applied since start.
    pub applied: AtomicU64,
}

impl core::fmt::Debug for Node {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Node")
            .field("responder", &self.responder)
            .finish()
    }
}

impl Served for Node {
    super::served_fields!();

    fn crl(&self, name: &str) -> Option<PublishedCrl> {
        self.crls
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    fn ca_certificate(&self, name: &str) -> Option<Bytes> {
        self.ca_certificates
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    fn is_ready(&self) -> bool {
        self.is_complete()
    }
}

/// The bucket a node follows and how far it got in it.
#[derive(Debug, Default)]
struct View {
    /// The creation time of the status bucket's stream (its identity: a bucket deleted and
    /// re-created has another).
    incarnation: Option<String>,
    /// The manifest read from it, if any.
    manifest: Option<super::publish::EngineManifest>,
    /// Whether the watcher reached the end of the bucket at least once.
    caught_up: bool,
    /// Why the view is not whole (for `/healthz`); empty when it is.
    why: String,
}

/// What `/healthz` says of a node's view.
#[derive(Debug, serde::Serialize)]
pub struct ViewHealth {
    pub complete: bool,
    pub why: String,
    pub held: u64,
    pub announced: Option<u64>,
    /// Statuses read from a snapshot at the last warm-up (0: read from the bucket).
    pub from_snapshot: u64,
}

impl Node {
    pub fn new(clock: Arc<dyn Clock>, live_limit: usize) -> Result<Self, VaError> {
        let metrics = Arc::new(Metrics::default());
        Ok(Self {
            // Validity is the CA host's business: a node signs nothing.
            responder: Responder::new(Vec::new(), 0, live_limit, None, metrics.clone())?,
            metrics,
            clock,
            crls: RwLock::new(HashMap::new()),
            ca_certificates: RwLock::new(HashMap::new()),
            complete: AtomicBool::new(false),
            view: std::sync::Mutex::new(View {
                why: "warming up: no manifest read yet".into(),
                ..View::default()
            }),
            held: AtomicU64::new(0),
            snapshot_entries: AtomicU64::new(0),
            tails: RwLock::new(HashMap::new()),
            connected: AtomicU64::new(0),
            revision: AtomicU64::new(0),
            applied: AtomicU64::new(0),
        })
    }

    /// Whether the node holds every status the CA published: `/readyz`, and "good" answers.
    pub fn is_complete(&self) -> bool {
        self.complete.load(Ordering::Relaxed)
    }

    /// The view's state for `/healthz`.
    pub fn view_health(&self) -> ViewHealth {
        let view = self.view();
        ViewHealth {
            complete: self.is_complete(),
            why: view.why.clone(),
            held: self.held.load(Ordering::Relaxed),
            announced: view.manifest.as_ref().map(|m| m.statuses),
            from_snapshot: self.snapshot_entries.load(Ordering::Relaxed),
        }
    }

    fn view(&self) -> std::sync::MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The view is no longer whole: "good" is withheld until it is.
    fn incomplete(&self, why: String) {
        let mut view = self.view();
        if self.complete.swap(false, Ordering::Relaxed) || view.why != why {
            tracing::warn!(why, "node: incomplete; serving revocations only");
        }
        view.why = why;
        self.responder.serve_revoked_only(true);
    }

    /// Follows a bucket from its first revision (a new node, or a bucket re-created).
    fn start_reading(&self, incarnation: String, why: String) {
        {
            let mut view = self.view();
            view.incarnation = Some(incarnation);
            view.manifest = None;
            view.caught_up = false;
        }
        self.held.store(0, Ordering::Relaxed);
        self.snapshot_entries.store(0, Ordering::Relaxed);
        self.revision.store(0, Ordering::Relaxed);
        self.incomplete(why);
    }

    /// Complete once the manifest was read, the watcher caught up, and the entries held
    /// reach what the manifest announces.
    fn settle(&self) {
        let mut view = self.view();
        let Some(manifest) = view.manifest.as_ref() else {
            return;
        };
        if !view.caught_up {
            return;
        }
        let held = self.held.load(Ordering::Relaxed);
        if held < manifest.statuses {
            view.why = format!(
                "{held} statuses held of {} announced by the publisher",
                manifest.statuses
            );
            return;
        }
        view.why.clear();
        drop(view);
        if !self.complete.swap(true, Ordering::Relaxed) {
            tracing::info!("node: complete; serving every answer");
        }
        self.responder.serve_revoked_only(false);
    }

    fn take_manifest(&self, value: &[u8]) {
        match serde_json::from_slice::<super::publish::EngineManifest>(value) {
            Ok(manifest) => self.view().manifest = Some(manifest),
            Err(error) => tracing::warn!(%error, "node: unreadable manifest; ignored"),
        }
    }

    /// Takes in a file of the files bucket: `ca/<name>` (a CA certificate: the node answers
    /// for the CA it certifies) or `crl/<name>` (a CRL or ARL).
    fn take_file(&self, object: &str, der: Vec<u8>) {
        if let Some(name) = object.strip_prefix("ca/") {
            if let Some(identity) = issuer_identity(name, &der) {
                let setup = IssuerSetup {
                    identity,
                    signer: None,
                    previous: Vec::new(),
                };
                if let Err(error) = self.responder.add_issuer(setup) {
                    tracing::warn!(%error, name, "node: cannot answer for this CA");
                }
            }
            self.ca_certificates
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(name.to_owned(), Bytes::from(der));
        } else if let Some(id) = object.strip_prefix("tail/") {
            // Content-addressed: what does not hash to its name is not taken.
            if super::publish::tail_id(&der) == id {
                self.tails
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(id.to_owned(), Bytes::from(der));
            } else {
                tracing::warn!(
                    object,
                    "node: a tail that does not hash to its name; ignored"
                );
            }
        } else if let Some(name) = object.strip_prefix("crl/") {
            let Ok(summary) = crate::x509::crl::summarize(&der) else {
                tracing::warn!(object, "node: not a CRL; ignored");
                return;
            };
            let crl = PublishedCrl {
                name: name.to_owned(),
                number: summary.number.unwrap_or(0),
                this_update: summary.this_update,
                next_update: summary.next_update.unwrap_or(summary.this_update),
                entries: summary.entries,
                path: std::path::PathBuf::new(),
                der: Bytes::from(der),
            };
            let mut crls = self.crls.write().unwrap_or_else(|p| p.into_inner());
            // A CRL never goes back to an older number.
            if crls
                .get(name)
                .is_none_or(|known| known.number <= crl.number)
            {
                crls.insert(name.to_owned(), crl);
            }
        }
    }

    /// The `certs` tail `id` names, if the node read it (`tail/<id>` in the files bucket).
    fn known_tail(&self, id: &str) -> Option<Bytes> {
        self.tails
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// The one copy of a `certs` tail found at the end of a whole response (as an older
    /// publisher published them) that every response it ends shares. A few responders at a
    /// time (one per issuing CA, two across a renewal): past [`MAX_TAILS`] a tail is kept
    /// with its response.
    fn shared_tail(&self, tail: &[u8]) -> Bytes {
        if let Some(known) = self
            .tails
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .find(|t| t.as_ref() == tail)
        {
            return known.clone();
        }
        let mut tails = self.tails.write().unwrap_or_else(|p| p.into_inner());
        let tail = Bytes::copy_from_slice(tail);
        if tails.len() < MAX_TAILS {
            tails.insert(super::publish::tail_id(&tail), tail.clone());
        }
        tail
    }

    /// Applies one entry of the status bucket (JSON: [`super::publish::StatusValue`]); see
    /// [`Node::apply_record`].
    fn take_status(&self, key: &str, value: &[u8], partial: bool) -> Taken {
        let Ok(value) = serde_json::from_slice::<StatusEntry<'_>>(value) else {
            tracing::warn!(key, "node: unreadable status entry; ignored");
            return Taken::Applied;
        };
        let presigned = [&value.sha1, &value.sha256];
        let mut ders = [Vec::new(), Vec::new()];
        for (der, presigned) in ders.iter_mut().zip(presigned) {
            if let Some(presigned) = presigned
                && base64::engine::general_purpose::STANDARD
                    .decode_vec(presigned.der.as_bytes(), der)
                    .is_err()
            {
                der.clear();
            }
        }
        let mut responses = [None, None];
        for ((slot, der), presigned) in responses.iter_mut().zip(&ders).zip(presigned) {
            if let Some(presigned) = presigned
                && !der.is_empty()
            {
                *slot = Some(PresignedRef {
                    der,
                    this_update: presigned.this_update,
                    next_update: presigned.next_update,
                    tail: presigned.tail.as_deref(),
                });
            }
        }
        let record = StatusRecord {
            key,
            status: StatusWord::from_word(&value.status),
            revoked_at: value.revoked_at,
            reason: value.reason,
            // Not served by the responder (the CA host's CRLs carry it).
            invalidity_date: None,
            responses,
        };
        self.apply_record(&record, partial)
    }

    /// Applies one certificate's status (a bucket entry, a snapshot record), unless it needs
    /// what the node does not know yet (an issuer, a `certs` tail: in the files bucket). With
    /// `partial`, a response whose tail cannot be had is left out (the status still applies; a
    /// missing response is answered `tryLater`).
    fn apply_record(&self, record: &StatusRecord<'_>, partial: bool) -> Taken {
        let Some(key) = parse_status_key(record.key) else {
            return Taken::Applied;
        };
        let status = match record.status {
            StatusWord::Good => Status::Good,
            StatusWord::Revoked => {
                match (
                    record.revoked_at,
                    RevocationReason::from_code(record.reason),
                ) {
                    (Some(at), Some(reason)) => Status::Revoked {
                        at: Timestamp::from_unix_seconds(at),
                        reason,
                    },
                    _ => return Taken::Applied,
                }
            }
            StatusWord::Unknown => Status::Unknown,
        };
        let mut responses = [None, None];
        for (slot, presigned) in responses.iter_mut().zip(&record.responses) {
            let Some(presigned) = presigned else {
                continue;
            };
            let der = presigned.der;
            // The head alone is kept (an allocation of its own size); the responder
            // certificate that completes it is shared.
            let (head, tail) = match presigned.tail {
                Some(id) => match self.known_tail(id) {
                    Some(tail) => (der, tail),
                    None if partial => continue,
                    None => return Taken::UnknownTail(id.to_string()),
                },
                // A whole response (an older publisher): its tail found in it.
                None => match super::responses::certs_offset(der) {
                    Some(offset) => (&der[..offset], self.shared_tail(&der[offset..])),
                    None => (der, Bytes::new()),
                },
            };
            *slot = Some(SignedResponse {
                head: Bytes::copy_from_slice(head),
                tail,
                this_update: Timestamp::from_unix_seconds(presigned.this_update),
                next_update: Timestamp::from_unix_seconds(presigned.next_update),
            });
        }
        match self.responder.apply_published(&key, status, responses) {
            Some(_) => {
                self.applied.fetch_add(1, Ordering::Relaxed);
                self.held.fetch_add(1, Ordering::Relaxed);
                Taken::Applied
            }
            None => Taken::UnknownIssuer,
        }
    }
}

/// What became of a status entry.
#[derive(Debug, PartialEq, Eq)]
enum Taken {
    /// Applied (or ignored: not a status the node can read).
    Applied,
    /// For an issuer whose certificate the node has not read yet.
    UnknownIssuer,
    /// Its responses need this `certs` tail, not read yet.
    UnknownTail(String),
}

/// A status value ([`super::publish::StatusValue`]) as a node reads it: borrowed from the
/// entry where JSON allows (no copy of the base64 text, about 2.6 KB an entry).
#[derive(serde::Deserialize)]
struct StatusEntry<'a> {
    #[serde(borrow)]
    status: std::borrow::Cow<'a, str>,
    #[serde(default)]
    revoked_at: Option<u64>,
    #[serde(default)]
    reason: Option<u8>,
    #[serde(default, borrow)]
    sha1: Option<PresignedEntry<'a>>,
    #[serde(default, borrow)]
    sha256: Option<PresignedEntry<'a>>,
}

#[derive(serde::Deserialize)]
struct PresignedEntry<'a> {
    #[serde(borrow)]
    der: std::borrow::Cow<'a, str>,
    this_update: u64,
    next_update: u64,
    #[serde(default, borrow)]
    tail: Option<std::borrow::Cow<'a, str>>,
}

/// The identity of the CA a certificate names (its subject and key), for CertIDs.
pub(crate) fn issuer_identity(name: &str, der: &[u8]) -> Option<IssuerIdentity> {
    use der::{Decode, Encode};
    let certificate = x509_cert::Certificate::from_der(der).ok()?;
    let tbs = certificate.tbs_certificate();
    let spki = tbs.subject_public_key_info();
    Some(IssuerIdentity::new(
        IssuerId(crate::x509::keys::key_identifier(spki)),
        name.trim_end_matches(".crt"),
        &tbs.subject().to_der().ok()?,
        spki.subject_public_key.raw_bytes(),
        Timestamp::from_x509_time(&tbs.validity().not_before),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::va::publish::{PresignedValue, StatusValue};

    /// What the publisher writes, the node reads: the borrowed form agrees with the owned one,
    /// fields added later (the invalidity date) are skipped, and an escaped string (which
    /// cannot be borrowed) still reads.
    #[test]
    fn a_node_reads_what_the_publisher_writes() {
        let value = StatusValue {
            status: "revoked".into(),
            revoked_at: Some(1_796_000_000),
            reason: Some(1),
            invalidity_date: Some(1_795_000_000),
            sha1: Some(PresignedValue {
                der: "MAMCAQA=".into(),
                this_update: 1,
                next_update: 2,
                tail: Some("00ff".into()),
            }),
            sha256: None,
        };
        let json = serde_json::to_vec(&value).unwrap();
        let entry: StatusEntry<'_> = serde_json::from_slice(&json).unwrap();
        assert_eq!(entry.status, "revoked");
        assert_eq!(
            (entry.revoked_at, entry.reason),
            (Some(1_796_000_000), Some(1))
        );
        let sha1 = entry.sha1.unwrap();
        assert_eq!(
            (sha1.der.as_ref(), sha1.this_update, sha1.next_update),
            ("MAMCAQA=", 1, 2)
        );
        assert!(matches!(sha1.der, std::borrow::Cow::Borrowed(_)));
        assert_eq!(sha1.tail.as_deref(), Some("00ff"));
        assert!(entry.sha256.is_none());
        let escaped: StatusEntry<'_> =
            serde_json::from_slice(br#"{"status":"go\u006fd"}"#).unwrap();
        assert_eq!(escaped.status, "good");
    }
}
