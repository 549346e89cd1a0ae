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
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::ValidationAuthority;
use super::responses::Status;
use crate::config::NatsConfig;
use crate::store::schema::{Meta, Outbox};
use crate::store::{CertKey, IssuerId, Store};
use crate::x509::{Serial, Timestamp};

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

/// The `certs` tails this connection of the publisher has put in the files bucket: a status
/// goes out only after the tail its responses need.
#[derive(Default)]
struct Tails(Vec<(Bytes, String)>);

impl Tails {
    /// The id of `tail`, and whether it still has to be put.
    fn id(&mut self, tail: &Bytes) -> (String, bool) {
        if let Some((_, id)) = self
            .0
            .iter()
            .find(|(known, _)| known.as_ptr() == tail.as_ptr() || known == tail)
        {
            return (id.clone(), false);
        }
        let id = tail_id(tail);
        self.0.push((tail.clone(), id.clone()));
        (id, true)
    }
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
}

/// The status bucket's key of a certificate.
pub fn status_key(key: &CertKey) -> String {
    format!("{}.{}", key.issuer.to_hex(), key.serial.to_hex())
}

/// The certificate a status bucket key names.
pub fn parse_status_key(text: &str) -> Option<CertKey> {
    let (issuer, serial) = text.split_once('.')?;
    Some(CertKey {
        issuer: IssuerId::from_hex(issuer)?,
        serial: Serial::from_hex(serial).ok()?,
    })
}

/// The publisher's counters, for `/metrics` and `/healthz`.
#[derive(Debug, Default)]
pub struct PublisherMetrics {
    /// Outbox entries waiting (as last counted).
    pub depth: AtomicU64,
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

/// What publishing one outbox entry came to.
enum Outcome {
    Published,
    /// What the entry names is not there yet (a CRL committed but not yet in place): try again
    /// shortly, keeping the order.
    NotYet,
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
            Ok::<_, String>((status, files))
        };
        let (status, files) = tokio::select! {
            _ = shutdown.cancelled() => return,
            connected = connected => match connected {
                Ok(buckets) => buckets,
                Err(error) => {
                    tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "publisher: the engine is unreachable");
                    metrics.connected.store(0, Ordering::Relaxed);
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
        // A new or emptied engine gets every file at once.
        if let Err(error) = publish_files(&va, &files, None).await {
            tracing::warn!(%error, "publisher: CRLs and CA certificates not published");
        }
        let outcome = async {
            // The tails this connection put (the files bucket may be a new one).
            let mut tails = Tails::default();
            let buckets = (&status, &files);
            // The store rebuilds the engine: a bucket without the manifest, or with fewer
            // entries than the store has certificates, gets every status again.
            let manifest = match full_publication_needed(&va, &status, &metrics).await? {
                Some(why) => Some(
                    publish_everything(&store, &va, buckets, &mut tails, &metrics, &why).await?,
                ),
                None => None,
            };
            drain(
                &store, &va, buckets, &mut tails, &metrics, manifest, &shutdown,
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

/// Entries put at once during a full publication (acknowledgements awaited together).
const IN_FLIGHT: usize = 256;

/// Status puts sent and not yet acknowledged, at most one per certificate (two puts of one key
/// in flight could land in either order).
#[derive(Default)]
struct InFlight {
    puts: tokio::task::JoinSet<Result<u64, String>>,
    keys: std::collections::HashSet<CertKey>,
}

impl InFlight {
    fn len(&self) -> usize {
        self.puts.len()
    }

    fn holds(&self, key: &CertKey) -> bool {
        self.keys.contains(key)
    }

    fn put(&mut self, bucket: &jetstream::kv::Store, key: &CertKey, value: Vec<u8>) {
        let bucket = bucket.clone();
        let name = status_key(key);
        self.keys.insert(key.clone());
        self.puts.spawn(async move {
            bucket
                .put(name.as_str(), value.into())
                .await
                .map_err(|e| format!("status {name}: {e}"))
        });
    }

    /// Waits for every put in flight; returns how many were acknowledged. This publisher is
    /// the bucket's only writer: a put acknowledged at or below a revision it already got means
    /// the bucket went back (put back from an older copy while connected), even if enough puts
    /// since brought its last revision above the highest again. Everything is published again.
    async fn settle(&mut self, metrics: &PublisherMetrics) -> Result<u64, String> {
        let floor = metrics.highest_revision.load(Ordering::Relaxed);
        let mut acknowledged = 0;
        let mut went_back = None;
        while let Some(put) = self.puts.join_next().await {
            let revision = put.map_err(|e| e.to_string())??;
            if revision <= floor {
                went_back = Some(revision);
            } else {
                metrics
                    .highest_revision
                    .fetch_max(revision, Ordering::Relaxed);
            }
            acknowledged += 1;
        }
        self.keys.clear();
        if let Some(revision) = went_back {
            metrics.full_requested.store(true, Ordering::Relaxed);
            return Err(format!(
                "the status bucket went back: a put got revision {revision}, this publisher had got {floor}"
            ));
        }
        Ok(acknowledged)
    }
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
    va: &ValidationAuthority,
    (status, files): (&jetstream::kv::Store, &jetstream::object_store::ObjectStore),
    tails: &mut Tails,
    metrics: &PublisherMetrics,
    mut manifest: Option<EngineManifest>,
    shutdown: &CancellationToken,
) -> Result<Drained, String> {
    let mut next_check = Instant::now() + CHECK_EVERY;
    // The outbox is a queue in RocksDB: each drained entry leaves a tombstone until compaction,
    // and a scan from the start would step over all of them (a million-entry drain would slow
    // to a crawl). Entries are appended in sequence order, so the scan starts where the last
    // one stopped.
    let mut resume_at = 0u64;
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
        }
        // Registered before reading, so that an entry added meanwhile wakes the next wait.
        let added = store.outbox().added.notified();
        let reader = store.clone();
        let batch = tokio::task::spawn_blocking(move || -> Result<_, String> {
            let mut rows = Vec::new();
            let from = resume_at.to_be_bytes();
            for row in reader
                .scan::<Outbox>(&from, &[])
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
        .map_err(|e| e.to_string())??;
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
        let mut done = Vec::with_capacity(batch.len());
        let mut stalled = false;
        // Statuses go out together (one acknowledgement awaited per batch, not per entry);
        // a file entry, or a second entry for a certificate already in flight, waits for
        // those before it, so the engine sees every key's changes in the outbox's order.
        let mut in_flight = InFlight::default();
        for (seq, name) in &batch {
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
        resume_at = match (stalled, batch.get(done.len())) {
            // The entry that is not ready yet is read again.
            (true, Some((seq, _))) => *seq,
            _ => batch.last().map_or(resume_at, |(seq, _)| seq + 1),
        };
        // Deleted from the outbox only once every put before it was acknowledged.
        in_flight.settle(metrics).await?;
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

/// Puts the file an outbox entry names (`crl.<name>.<number>`, `ca`), as it is now.
async fn publish_file_entry(
    va: &ValidationAuthority,
    files: &jetstream::object_store::ObjectStore,
    name: &str,
) -> Result<Outcome, String> {
    if let Some(rest) = name.strip_prefix("crl.") {
        let Some((crl, number)) = rest
            .rsplit_once('.')
            .and_then(|(crl, n)| Some((crl, n.parse::<u64>().ok()?)))
        else {
            return Ok(Outcome::Published);
        };
        return match va.crls.latest(crl) {
            Some(latest) if latest.number >= number => {
                publish_files(va, files, Some(crl)).await?;
                Ok(Outcome::Published)
            }
            // A CA this daemon no longer publishes for (its configuration changed): waiting
            // would stall every entry behind it.
            _ if !va.crls.publishes(crl) => {
                tracing::warn!(name, "publisher: a CRL of no CA published here; dropped");
                Ok(Outcome::Published)
            }
            // Committed, not yet renamed into place (or not yet read back after a restart).
            _ => Ok(Outcome::NotYet),
        };
    }
    if name == crate::store::CA_CHANGE {
        publish_files(va, files, Some("")).await?;
    }
    Ok(Outcome::Published)
}

/// Puts the latest CRL named `only` (`Some("")`: the CA certificates only; `None`: every CRL
/// and every CA certificate).
async fn publish_files(
    va: &ValidationAuthority,
    files: &jetstream::object_store::ObjectStore,
    only: Option<&str>,
) -> Result<(), String> {
    for crl in va.crls.all_latest() {
        if only.is_some_and(|name| name != crl.name) {
            continue;
        }
        put_file(files, &format!("crl/{}", crl.name), &crl.der).await?;
    }
    if only.is_none_or(str::is_empty) {
        for (name, der) in va.all_ca_certificates().iter() {
            put_file(files, &format!("ca/{name}"), der).await?;
        }
    }
    Ok(())
}

/// Puts `bytes` as the object `name` (a CRL, a CA certificate: few, and put again on every
/// connection, so that one the engine lost or damaged is repaired).
async fn put_file(
    files: &jetstream::object_store::ObjectStore,
    name: &str,
    bytes: &[u8],
) -> Result<(), String> {
    files
        .put(name, &mut &bytes[..])
        .await
        .map(drop)
        .map_err(|e| format!("{name}: {e}"))
}

/// Puts a response tail (`tail/<id>`, named after its content) unless the files bucket holds
/// it already: replacing an object purges its chunks, and a node reading it at that moment
/// would wait for chunks that are gone; a full publication would otherwise rewrite it.
async fn put_tail(
    files: &jetstream::object_store::ObjectStore,
    id: &str,
    tail: &[u8],
) -> Result<(), String> {
    use base64::Engine as _;
    let name = format!("tail/{id}");
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, tail);
    // As the object store writes it.
    let digest = format!(
        "SHA-256={}",
        base64::engine::general_purpose::URL_SAFE.encode(digest.as_ref())
    );
    if let Ok(held) = files.info(&name).await
        && !held.deleted
        && held.size == tail.len()
        && held.digest.as_deref() == Some(digest.as_str())
    {
        return Ok(());
    }
    put_file(files, &name, tail).await
}

/// The bucket's value of a certificate as the responder holds it now (`None`: a certificate
/// the responder does not answer for), with the invalidity date the store recorded; the tails
/// it refers to are put in the files bucket first.
async fn status_value_of(
    store: &Store,
    va: &ValidationAuthority,
    files: &jetstream::object_store::ObjectStore,
    tails: &mut Tails,
    key: &CertKey,
) -> Result<Option<Vec<u8>>, String> {
    let Some(published) = va.responder.published(key) else {
        return Ok(None);
    };
    // The store is the truth: a revocation committed that the responder's memory does not
    // show yet (the outbox entry drained before the revocation was applied, or its re-signing
    // failed) goes out as "revoked", without responses (a node answers tryLater for it), never
    // as the "good" memory still holds.
    let recorded = store
        .get::<crate::store::schema::Revocations>(key)
        .map_err(|e| format!("revocation {}: {e}", key.serial))?;
    let mut published = published;
    let (status, revoked_at, reason) = match (published.status, &recorded) {
        (Status::Revoked { at, reason }, _) => ("revoked", Some(at.unix_seconds()), reason.code()),
        (_, Some(record)) => {
            published.sha1 = None;
            published.sha256 = None;
            (
                "revoked",
                Some(record.revoked_at.unix_seconds()),
                record.reason.code(),
            )
        }
        (Status::Good, None) => ("good", None, None),
        (Status::Unknown, None) => ("unknown", None, None),
    };
    let invalidity_date = recorded
        .and_then(|record| record.invalidity_date)
        .map(Timestamp::unix_seconds);
    let mut presigned = async |response: Option<super::responses::SignedResponse>| {
        let Some(response) = response else {
            return Ok::<_, String>(None);
        };
        let tail = if response.tail.is_empty() {
            None
        } else {
            let (id, new) = tails.id(&response.tail);
            if new {
                put_tail(files, &id, &response.tail).await?;
            }
            Some(id)
        };
        Ok(Some(PresignedValue {
            der: base64::engine::general_purpose::STANDARD.encode(&response.head),
            this_update: response.this_update.unix_seconds(),
            next_update: response.next_update.unix_seconds(),
            tail,
        }))
    };
    let value = StatusValue {
        status: status.into(),
        revoked_at,
        reason,
        invalidity_date,
        sha1: presigned(published.sha1).await?,
        sha256: presigned(published.sha256).await?,
    };
    serde_json::to_vec(&value)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// A revocation as the outside world saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PublishedRevocation {
    pub revoked_at: Timestamp,
    pub reason: crate::x509::revocation::RevocationReason,
    pub invalidity_date: Option<Timestamp>,
}

/// What the engine of the responder nodes holds, read at restore time.
#[derive(Debug, Default)]
pub struct EngineView {
    /// Every status published: (certificate, its revocation if revoked).
    pub statuses: Vec<(CertKey, Option<PublishedRevocation>)>,
    /// The CRLs published there (DER).
    pub crls: Vec<Vec<u8>>,
}

/// Everything the engine holds, for a restore (`sceau restore`): every published status and
/// every published CRL. Reads only: the buckets must exist.
pub async fn read_engine(settings: &NatsConfig) -> Result<EngineView, String> {
    use futures_util::TryStreamExt;
    use tokio::io::AsyncReadExt;
    let client = connect(settings).await?;
    let js = jetstream::new(client);
    let status = js
        .get_key_value(&settings.status_bucket)
        .await
        .map_err(|e| format!("bucket {}: {e}", settings.status_bucket))?;
    let mut view = EngineView::default();
    let keys: Vec<String> = status
        .keys()
        .await
        .map_err(|e| format!("bucket {}: {e}", settings.status_bucket))?
        .try_collect()
        .await
        .map_err(|e| format!("bucket {}: {e}", settings.status_bucket))?;
    for name in keys {
        let Some(key) = parse_status_key(&name) else {
            continue;
        };
        let Some(bytes) = status
            .get(&name)
            .await
            .map_err(|e| format!("{}: {e}", settings.status_bucket))?
        else {
            continue;
        };
        // Fail closed: a status not understood could be a revocation.
        let value = serde_json::from_slice::<StatusValue>(&bytes)
            .map_err(|e| format!("{}/{name}: {e}", settings.status_bucket))?;
        let revoked = match (value.status.as_str(), value.revoked_at) {
            ("revoked", Some(at)) => Some(PublishedRevocation {
                revoked_at: Timestamp::from_unix_seconds(at),
                reason: crate::x509::revocation::RevocationReason::from_code(value.reason)
                    .unwrap_or(crate::x509::revocation::RevocationReason::Unspecified),
                invalidity_date: value.invalidity_date.map(Timestamp::from_unix_seconds),
            }),
            _ => None,
        };
        view.statuses.push((key, revoked));
    }
    {
        // Its CRL numbers must not be reused: no guessing when it cannot be read.
        let files = js
            .get_object_store(&settings.files_bucket)
            .await
            .map_err(|e| format!("bucket {}: {e}", settings.files_bucket))?;
        let names: Vec<String> = files
            .list()
            .await
            .map_err(|e| format!("bucket {}: {e}", settings.files_bucket))?
            .map_ok(|info| info.name)
            .try_collect()
            .await
            .map_err(|e| format!("bucket {}: {e}", settings.files_bucket))?;
        for name in names.into_iter().filter(|n| n.starts_with("crl/")) {
            let mut object = files
                .get(&name)
                .await
                .map_err(|e| format!("{}/{name}: {e}", settings.files_bucket))?;
            let mut der = Vec::new();
            object
                .read_to_end(&mut der)
                .await
                .map_err(|e| format!("{}/{name}: {e}", settings.files_bucket))?;
            view.crls.push(der);
        }
    }
    Ok(view)
}
