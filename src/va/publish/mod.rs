//! The publisher: what responder nodes must know goes from the CA store's outbox, in order,
//! into NATS JetStream, and an outbox entry is deleted only once JetStream acknowledged it.
//!
//! An outbox entry names what changed (`status.<issuer>.<serial>`, `crl.<name>.<number>`, `ca`);
//! it is written in the same RocksDB batch as the change itself, so nothing outside the store is
//! ever ahead of it. The publisher reads the *current* value of what the entry names and puts
//! it: publishing twice is harmless (a crash or an engine outage replays from the outbox), and a
//! node never lets a late "good" overwrite "revoked".
//!
//! - status: key-value bucket (`[nats] status_bucket`), key `<issuer hex>.<serial hex>`, value
//!   [`StatusValue`] as JSON: the status, the revocation time, reason and invalidity date, and
//!   the pre-signed responses (SHA-1 and SHA-256 CertIDs) with their validity. Each response
//!   is published without its `certs` field (the responder's certificate, more than half of
//!   its size), which the files bucket holds once as `tail/<id>`: a node appends it.
//! - files: object store (`[nats] files_bucket`), objects `crl/<name>` (the latest CRL or ARL,
//!   DER) and `ca/<name>` (CA and link certificates, DER), as the validation listener serves
//!   them under `/crl/` and `/ca/`, and `tail/<id>` (the `certs` tail of a responder's
//!   responses; `<id>`: the first 16 octets of its SHA-256, hex).
mod engine_view;
mod files;
mod snapshot;
mod status;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::ValidationAuthority;
use crate::config::NatsConfig;
use crate::store::schema::{Meta, Outbox};
use crate::store::{CertKey, IssuerId, Store};
use crate::x509::{Serial, Timestamp};
pub use engine_view::{EngineView, PublishedRevocation, read_engine};
use files::{Outcome, publish_file_entry, publish_files};
pub use snapshot::SnapshotRef;
use status::{IN_FLIGHT, InFlight, Tails, status_value_of};

/// Outbox entries read and published in one round.
const BATCH: usize = 256;

/// A certificate's status as the status bucket holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusValue {
    /// `good`, `revoked` or `unknown`.
    pub status: String,
    /// Revocation time (Unix seconds) and reason code (RFC 5280 CRLReason; none: unspecified
    /// without a code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<u8>,
    /// Invalidity date (Unix seconds, RFC 5280 §5.3.2), when the revocation gave one: a
    /// restore takes the revocation back exactly as it was published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalidity_date: Option<u64>,
    /// Pre-signed responses by CertID hash (`sha1`, `sha256`); absent while being re-signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha1: Option<PresignedValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<PresignedValue>,
}

/// One pre-signed OCSP response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresignedValue {
    /// The OCSPResponse, DER, base64: whole, or, with `tail`, all of it but the `certs` tail.
    pub der: String,
    pub this_update: u64,
    pub next_update: u64,
    /// The files bucket's `tail/<id>` that completes `der` (its outer lengths count it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<String>,
}

/// The id of a `certs` tail: the first 16 octets of its SHA-256, hex.
pub fn tail_id(tail: &[u8]) -> String {
    hex::encode(&aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, tail).as_ref()[..16])
}

/// The status bucket's key of the publisher's manifest (a status key is `<hex>.<hex>`: no
/// certificate can take it).
pub const MANIFEST_KEY: &str = "manifest";

/// What the publisher announces once the status bucket holds every certificate the CA store
/// knows: put after a full publication (a new, re-created or truncated bucket) and the outbox
/// drained behind it. A responder node vouches for "good" only once it has read the manifest
/// of the bucket it follows and holds at least `statuses` entries from it: a bucket rebuilt
/// from nothing has no manifest until it is whole again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineManifest {
    /// Certificates whose status the full publication put.
    pub statuses: u64,
    /// When it was completed (Unix seconds).
    pub completed_at: u64,
    /// The latest snapshot of every status, for new nodes (written a few seconds after the
    /// full publication, then again as the bucket moves on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotRef>,
}

/// The status bucket's key of a certificate.
pub fn status_key(key: &CertKey) -> String {
    format!("{}.{}", key.issuer.to_hex(), key.serial.to_hex())
}

/// The certificate a status bucket key names. (Decoded on the stack: a node warming up parses
/// a million of them.)
pub fn parse_status_key(text: &str) -> Option<CertKey> {
    let (issuer, serial) = text.split_once('.')?;
    let mut id = [0u8; 20];
    hex::decode_to_slice(issuer, &mut id).ok()?;
    let mut magnitude = [0u8; 64];
    let serial = match magnitude.get_mut(..serial.len() / 2) {
        Some(octets) if serial.len() % 2 == 0 => {
            hex::decode_to_slice(serial, octets).ok()?;
            Serial::from_magnitude(octets)
                .ok()
                .filter(|s| !s.as_bytes().is_empty())?
        }
        _ => Serial::from_hex(serial).ok()?,
    };
    Some(CertKey {
        issuer: IssuerId(id),
        serial,
    })
}

/// The publisher's counters, for `/metrics` and `/healthz`.
#[derive(Debug, Default)]
pub struct PublisherMetrics {
    /// Outbox entries waiting (as last counted: by the drain, or from the store while the
    /// engine is unreachable), up to one batch.
    pub depth: AtomicU64,
    /// Every outbox entry below this sequence number was published and deleted.
    pub deleted_below: AtomicU64,
    /// Outbox entries published since start.
    pub published: AtomicU64,
    /// Since when (Unix seconds) entries have been waiting; 0 when the outbox is empty.
    pub waiting_since: AtomicU64,
    /// 1 while connected to the engine.
    pub connected: AtomicU64,
    /// Full publications of every status (a new, re-created or truncated bucket, or `sceau
    /// publish --all`), and how long the last one took.
    pub full_publications: AtomicU64,
    pub last_full_publication_ms: AtomicU64,
    /// Status snapshots written for new nodes, and how long the last one took.
    pub snapshots: AtomicU64,
    pub last_snapshot_ms: AtomicU64,
    /// The highest status bucket revision a put of this process got: a bucket whose last
    /// revision is below it went back (restored from a snapshot) and is published again.
    pub highest_revision: AtomicU64,
    /// Set by `sceau publish --all`: the publisher publishes everything again.
    pub full_requested: std::sync::atomic::AtomicBool,
    pub wake: tokio::sync::Notify,
}

impl PublisherMetrics {
    /// Asks for a full publication (`sceau publish --all`); the publisher starts it within a
    /// second.
    pub fn request_full(&self) {
        self.full_requested.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// Seconds the oldest waiting entry has waited (0 when none waits).
    pub fn lag_seconds(&self, now: Timestamp) -> u64 {
        match self.waiting_since.load(Ordering::Relaxed) {
            0 => 0,
            since => now.unix_seconds().saturating_sub(since),
        }
    }
}

/// Connects to the servers of `settings` (credentials and TLS as configured).
pub async fn connect(settings: &NatsConfig) -> Result<async_nats::Client, String> {
    let mut options = async_nats::ConnectOptions::new()
        .name("sceau")
        .connection_timeout(Duration::from_secs(5))
        // After an outage, a node must catch up within a second of the engine's return: retry
        // often (a refused connection costs nothing), rather than the client's default
        // backoff of several seconds.
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((50u64 << attempts.min(4)).min(500))
        });
    if let Some(path) = &settings.credentials {
        options = options
            .credentials_file(path)
            .await
            .map_err(|e| format!("[nats] credentials {}: {e}", path.display()))?;
    }
    if let Some(path) = &settings.tls_ca {
        options = options
            .add_root_certificates(path.clone())
            .require_tls(true);
    }
    options
        .connect(settings.servers.as_slice())
        .await
        .map_err(|e| format!("connecting to {:?}: {e}", settings.servers))
}

/// The buckets, created when missing.
pub async fn buckets(
    js: &jetstream::Context,
    settings: &NatsConfig,
) -> Result<(jetstream::kv::Store, jetstream::object_store::ObjectStore), String> {
    let status = match js.get_key_value(&settings.status_bucket).await {
        Ok(bucket) => bucket,
        Err(_) => js
            .create_key_value(jetstream::kv::Config {
                bucket: settings.status_bucket.clone(),
                description: "sceau: certificate status and pre-signed OCSP responses".into(),
                history: 1,
                num_replicas: settings.replicas,
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("bucket {}: {e}", settings.status_bucket))?,
    };
    let files = match js.get_object_store(&settings.files_bucket).await {
        Ok(bucket) => bucket,
        Err(_) => js
            .create_object_store(jetstream::object_store::Config {
                bucket: settings.files_bucket.clone(),
                description: Some("sceau: CRLs and CA certificates".into()),
                num_replicas: settings.replicas,
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("bucket {}: {e}", settings.files_bucket))?,
    };
    Ok((status, files))
}

/// Runs until `shutdown`: drains the outbox into the engine, reconnecting with backoff.
pub async fn run(
    store: Store,
    va: Arc<ValidationAuthority>,
    settings: NatsConfig,
    metrics: Arc<PublisherMetrics>,
    shutdown: CancellationToken,
) {
    match recorded_highest_revision(&store, &settings.status_bucket).await {
        Ok(revision) => {
            metrics
                .highest_revision
                .fetch_max(revision, Ordering::Relaxed);
        }
        // Not knowing it, a bucket put back while the CA was down would go unnoticed: every
        // status is published again instead.
        Err(error) => {
            tracing::warn!(%error, "publisher: the highest revision put is not known; publishing every status");
            metrics.full_requested.store(true, Ordering::Relaxed);
        }
    }
    let mut backoff = Duration::from_millis(250);
    loop {
        let connected = async {
            let client = connect(&settings).await?;
            let js = jetstream::new(client);
            let (status, files) = buckets(&js, &settings).await?;
            Ok::<_, String>(snapshot::Engine {
                js,
                status,
                files,
                settings: settings.clone(),
            })
        };
        let engine = tokio::select! {
            _ = shutdown.cancelled() => return,
            connected = connected => match connected {
                Ok(buckets) => buckets,
                Err(error) => {
                    tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "publisher: the engine is unreachable");
                    metrics.connected.store(0, Ordering::Relaxed);
                    // The drain that counts them is not running: what waits is counted here.
                    match count_waiting(&store, metrics.deleted_below.load(Ordering::Relaxed)).await {
                        Ok(waiting) => metrics.depth.store(waiting, Ordering::Relaxed),
                        Err(error) => tracing::warn!(%error, "publisher: the outbox cannot be read"),
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                    continue;
                }
            }
        };
        metrics.connected.store(1, Ordering::Relaxed);
        tracing::info!(servers = ?settings.servers, "publisher: connected to the engine");
        backoff = Duration::from_millis(250);
        let (status, files) = (&engine.status, &engine.files);
        // A new or emptied engine gets every file at once.
        if let Err(error) = publish_files(&va, files, None).await {
            tracing::warn!(%error, "publisher: CRLs and CA certificates not published");
        }
        let outcome = async {
            // The tails this connection put (the files bucket may be a new one).
            let mut tails = Tails::default();
            let buckets = (status, files);
            // The store rebuilds the engine: a bucket without the manifest, or with fewer
            // entries than the store has certificates, gets every status again.
            let manifest = match full_publication_needed(&va, status, &metrics).await? {
                Some(why) => Some(
                    publish_everything(&store, &va, buckets, &mut tails, &metrics, &why).await?,
                ),
                None => None,
            };
            drain(
                &store, &va, &engine, &mut tails, &metrics, manifest, &shutdown,
            )
            .await
        };
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return,
            outcome = outcome => outcome,
        };
        match outcome {
            Ok(Drained::Shutdown) => return,
            Ok(Drained::FullPublication) => {}
            Err(error) => {
                metrics.connected.store(0, Ordering::Relaxed);
                tracing::warn!(%error, "publisher: lost the engine; the outbox keeps what is not published");
            }
        }
    }
}

/// Outbox entries from `from` on, up to one batch (the entries below it were deleted: a scan
/// from there does not step over their tombstones).
async fn count_waiting(store: &Store, from: u64) -> Result<u64, String> {
    Ok(read_outbox(store, from).await?.len() as u64)
}

/// Why every status must be published again, if it must: asked for (`sceau publish --all`),
/// no manifest (a new bucket, or one deleted and re-created), or fewer entries than the CA
/// knows certificates (a truncated or purged bucket).
async fn full_publication_needed(
    va: &ValidationAuthority,
    status: &jetstream::kv::Store,
    metrics: &PublisherMetrics,
) -> Result<Option<String>, String> {
    if metrics.full_requested.swap(false, Ordering::Relaxed) {
        return Ok(Some("asked for (sceau publish --all)".into()));
    }
    let manifest = status
        .get(MANIFEST_KEY)
        .await
        .map_err(|e| format!("{MANIFEST_KEY}: {e}"))?;
    if manifest.is_none() {
        return Ok(Some(
            "the status bucket has no manifest (new or re-created)".into(),
        ));
    }
    // Asked of the server now: `Store::status` answers with what was read when the bucket was
    // opened, older than every put since (each check would find the bucket "gone back").
    let state = status
        .stream
        .get_info()
        .await
        .map_err(|e| format!("status bucket: {e}"))?
        .state;
    let highest = metrics.highest_revision.load(Ordering::Relaxed);
    if state.last_sequence < highest {
        return Ok(Some(format!(
            "the status bucket went back to revision {} (this publisher put {highest})",
            state.last_sequence
        )));
    }
    let held = state.messages;
    // One entry per key (history 1): the certificates, and the manifest.
    let expected = va.responder.entries() + 1;
    if held < expected {
        return Ok(Some(format!(
            "the status bucket holds {held} entries, the CA {expected}"
        )));
    }
    Ok(None)
}

/// The store's key of the highest revision this CA's puts got in `bucket`: kept across
/// restarts, so that a bucket put back from an older copy while the CA was down is found out
/// too (its last revision below it).
fn highest_revision_key(bucket: &str) -> String {
    format!("publisher.highest_revision.{bucket}")
}

/// The highest revision recorded for `bucket` (0: none).
async fn recorded_highest_revision(store: &Store, bucket: &str) -> Result<u64, String> {
    let reader = store.clone();
    let key = highest_revision_key(bucket);
    let bytes = tokio::task::spawn_blocking(move || reader.get::<Meta>(&key))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    match bytes {
        None => Ok(0),
        Some(bytes) => <[u8; 8]>::try_from(bytes.as_slice())
            .map(u64::from_be_bytes)
            .map_err(|_| format!("{}: not 8 octets", highest_revision_key(bucket))),
    }
}

/// Records the publisher's highest revision in `bucket`, before the outbox entries it covers
/// are deleted (a crash between the two publishes those entries again: harmless).
async fn record_highest_revision(
    store: &Store,
    bucket: &str,
    metrics: &PublisherMetrics,
) -> Result<(), String> {
    let value = metrics.highest_revision.load(Ordering::Relaxed);
    let row = (
        highest_revision_key(bucket),
        Some(value.to_be_bytes().to_vec()),
    );
    let writer = store.clone();
    tokio::task::spawn_blocking(move || writer.write_derived::<Meta>(&[row]))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// Puts the status of every certificate the responder knows, as it is now; returns the
/// manifest to put once the outbox is drained behind it (so that a change made meanwhile,
/// which the outbox holds, is in the bucket before the manifest says it is whole).
async fn publish_everything(
    store: &Store,
    va: &ValidationAuthority,
    (status, files): (&jetstream::kv::Store, &jetstream::object_store::ObjectStore),
    tails: &mut Tails,
    metrics: &PublisherMetrics,
    why: &str,
) -> Result<EngineManifest, String> {
    let started = Instant::now();
    tracing::warn!(why, "publisher: publishing every status");
    // Nodes stop vouching for "good" until the new manifest: the old one no longer says the
    // bucket is whole.
    status
        .delete(MANIFEST_KEY)
        .await
        .map_err(|e| format!("{MANIFEST_KEY}: {e}"))?;
    metrics.highest_revision.store(0, Ordering::Relaxed);
    let keys = va.responder.keys();
    let mut published = 0u64;
    let mut in_flight = InFlight::default();
    for key in &keys {
        if in_flight.len() == IN_FLIGHT {
            published += in_flight.settle(metrics).await?;
        }
        if let Some(value) = status_value_of(store, va, files, tails, key).await? {
            in_flight.put(status, key, value);
        }
    }
    published += in_flight.settle(metrics).await?;
    // From now on the bucket is measured against this publication's revisions (a re-created
    // bucket counts from 1 again).
    record_highest_revision(store, &status.name, metrics).await?;
    let ms = started.elapsed().as_millis() as u64;
    metrics.full_publications.fetch_add(1, Ordering::Relaxed);
    metrics
        .last_full_publication_ms
        .store(ms, Ordering::Relaxed);
    tracing::warn!(
        statuses = published,
        ms,
        "publisher: every status published"
    );
    Ok(EngineManifest {
        statuses: published,
        completed_at: va.now().unix_seconds(),
        snapshot: None,
    })
}

/// How a drain ended without an engine error.
enum Drained {
    Shutdown,
    /// A full publication is needed (asked for, or the bucket was found re-created).
    FullPublication,
}

/// How often the publisher checks that the bucket is still whole (a bucket deleted and
/// re-created under it, a purge).
const CHECK_EVERY: Duration = Duration::from_secs(5);

/// Publishes outbox entries as they come until shutdown, a full publication is needed, or an
/// engine error. `manifest`, when a full publication preceded, is put once the outbox is
/// empty.
async fn drain(
    store: &Store,
    va: &Arc<ValidationAuthority>,
    engine: &snapshot::Engine,
    tails: &mut Tails,
    metrics: &Arc<PublisherMetrics>,
    mut manifest: Option<EngineManifest>,
    shutdown: &CancellationToken,
) -> Result<Drained, String> {
    let status = &engine.status;
    let mut next_check = Instant::now() + CHECK_EVERY;
    // The outbox is a queue in RocksDB: each drained entry leaves a tombstone until compaction,
    // and a scan from the start would step over all of them (a million-entry drain would slow
    // to a crawl). Entries are appended in sequence order, so the scan starts where the last
    // one stopped.
    let mut resume_at = 0u64;
    // The snapshot being written beside the drain (a million statuses take seconds: changes do
    // not wait for it). Dropped with the drain, which aborts it.
    let mut snapshot = tokio::task::JoinSet::new();
    loop {
        if metrics.full_requested.load(Ordering::Relaxed) {
            return Ok(Drained::FullPublication);
        }
        if manifest.is_none() && Instant::now() >= next_check {
            next_check = Instant::now() + CHECK_EVERY;
            if let Some(why) = full_publication_needed(va, status, metrics).await? {
                tracing::warn!(why, "publisher: the status bucket is not whole");
                metrics.full_requested.store(true, Ordering::Relaxed);
                return Ok(Drained::FullPublication);
            }
            snapshot::keep_one_going(&mut snapshot, store, va, engine, metrics);
        }
        // Registered before reading, so that an entry added meanwhile wakes the next wait.
        let added = store.outbox().added.notified();
        let batch = read_outbox(store, resume_at).await?;
        if batch.is_empty() {
            metrics.depth.store(0, Ordering::Relaxed);
            metrics.waiting_since.store(0, Ordering::Relaxed);
            if let Some(whole) = manifest.take() {
                let bytes = serde_json::to_vec(&whole).map_err(|e| e.to_string())?;
                status
                    .put(MANIFEST_KEY, bytes.into())
                    .await
                    .map_err(|e| format!("{MANIFEST_KEY}: {e}"))?;
                tracing::info!(
                    statuses = whole.statuses,
                    "publisher: the status bucket is whole"
                );
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(Drained::Shutdown),
                _ = added => {}
                _ = metrics.wake.notified() => {}
                // A missed signal costs at most this.
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            continue;
        }
        metrics.depth.store(batch.len() as u64, Ordering::Relaxed);
        if metrics.waiting_since.load(Ordering::Relaxed) == 0 {
            metrics
                .waiting_since
                .store(va.now().unix_seconds().max(1), Ordering::Relaxed);
        }
        let started = Instant::now();
        let (done, stalled) = publish_batch(store, va, engine, tails, metrics, &batch).await?;
        resume_at = match (stalled, batch.get(done.len())) {
            // The entry that is not ready yet is read again.
            (true, Some((seq, _))) => *seq,
            _ => batch.last().map_or(resume_at, |(seq, _)| seq + 1),
        };
        if !done.is_empty() {
            record_highest_revision(store, &status.name, metrics).await?;
            metrics
                .published
                .fetch_add(done.len() as u64, Ordering::Relaxed);
            let writer = store.clone();
            tokio::task::spawn_blocking(move || writer.write_derived::<Outbox>(&done))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            metrics.deleted_below.store(resume_at, Ordering::Relaxed);
            metrics
                .waiting_since
                .store(va.now().unix_seconds().max(1), Ordering::Relaxed);
        }
        tracing::debug!(
            entries = batch.len(),
            ms = started.elapsed().as_millis() as u64,
            "publisher: batch"
        );
        if stalled {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(Drained::Shutdown),
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    }
}

/// Up to [`BATCH`] outbox entries, from sequence `from` on.
async fn read_outbox(store: &Store, from: u64) -> Result<Vec<(u64, String)>, String> {
    let reader = store.clone();
    tokio::task::spawn_blocking(move || -> Result<_, String> {
        let mut rows = Vec::new();
        for row in reader
            .scan::<Outbox>(&from.to_be_bytes(), &[])
            .map_err(|e| e.to_string())?
        {
            rows.push(row.map_err(|e| e.to_string())?);
            if rows.len() == BATCH {
                break;
            }
        }
        Ok(rows)
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Publishes a batch of outbox entries in order; returns what was published (to delete from
/// the outbox once every put is acknowledged) and whether it stopped at a file entry that is
/// not ready yet.
async fn publish_batch(
    store: &Store,
    va: &Arc<ValidationAuthority>,
    engine: &snapshot::Engine,
    tails: &mut Tails,
    metrics: &Arc<PublisherMetrics>,
    batch: &[(u64, String)],
) -> Result<(Vec<(u64, Option<String>)>, bool), String> {
    let (status, files) = (&engine.status, &engine.files);
    let mut done = Vec::with_capacity(batch.len());
    let mut stalled = false;
    // Statuses go out together (one acknowledgement awaited per batch, not per entry);
    // a file entry, or a second entry for a certificate already in flight, waits for
    // those before it, so the engine sees every key's changes in the outbox's order.
    let mut in_flight = InFlight::default();
    for (seq, name) in batch {
        if let Some(rest) = name.strip_prefix("status.") {
            let Some(key) = parse_status_key(rest) else {
                tracing::warn!(
                    name,
                    "publisher: an outbox entry names no certificate; dropped"
                );
                done.push((*seq, None));
                continue;
            };
            if in_flight.holds(&key) {
                in_flight.settle(metrics).await?;
            }
            // A certificate the responder does not know (an issuer it does not answer
            // for) has nothing to publish.
            if let Some(value) = status_value_of(store, va, files, tails, &key).await? {
                in_flight.put(status, &key, value);
            }
            done.push((*seq, None));
            continue;
        }
        in_flight.settle(metrics).await?;
        match publish_file_entry(va, files, name).await? {
            Outcome::Published => done.push((*seq, None)),
            Outcome::NotYet => {
                stalled = true;
                break;
            }
        }
    }
    // Deleted from the outbox only once every put before it was acknowledged.
    in_flight.settle(metrics).await?;
    Ok((done, stalled))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key read back names the same certificate, whatever the serial's length or top bit;
    /// what is not a key names nothing, and an odd number of digits still reads (as
    /// `Serial::from_hex` reads it).
    #[test]
    fn status_keys_read_back() {
        let issuer = IssuerId([0xab; 20]);
        for magnitude in [vec![1u8], vec![0x80], vec![0x7f; 20], vec![0xff; 19]] {
            let key = CertKey {
                issuer,
                serial: Serial::from_magnitude(&magnitude).unwrap(),
            };
            assert_eq!(parse_status_key(&status_key(&key)), Some(key));
        }
        let odd = format!("{}.abc", issuer.to_hex());
        assert_eq!(
            parse_status_key(&odd).map(|k| k.serial),
            Some(Serial::from_magnitude(&[0x0a, 0xbc]).unwrap())
        );
        for bad in [
            "manifest",
            "ab.01",
            &format!("{}.00", issuer.to_hex()),
            &format!("{}.0g", issuer.to_hex()),
            &format!("{}.{}", issuer.to_hex(), "01".repeat(40)),
        ] {
            assert_eq!(parse_status_key(bad), None, "{bad}");
        }
    }
}
