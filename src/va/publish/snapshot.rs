//! Writing status snapshots (format: [`crate::va::snapshot`]): a new responder node reads one
//! object instead of one message per certificate, then follows the bucket from the snapshot's
//! revision.
//!
//! Why a node may trust a snapshot as the bucket's content up to its revision: the revision is
//! read from the server *before* the statuses are read from the store, and the publisher is the
//! bucket's only writer, so every entry at or below that revision was put from a state no
//! newer than what the snapshot holds (a status only moves forward: revocation is final). What
//! changed since is in the bucket above the revision, where the node reads it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use async_nats::jetstream;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use super::status::{Tails, TailsBy, current_status};
use super::{EngineManifest, MANIFEST_KEY, PublisherMetrics, status_key};
use crate::config::NatsConfig;
use crate::store::Store;
use crate::va::ValidationAuthority;
use crate::va::snapshot::{MAGIC, PREFIX, encode};

/// The engine as the publisher writes it.
#[derive(Clone)]
pub(super) struct Engine {
    pub(super) js: jetstream::Context,
    pub(super) status: jetstream::kv::Store,
    pub(super) files: jetstream::object_store::ObjectStore,
    pub(super) settings: NatsConfig,
}

/// A snapshot, as the manifest names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRef {
    /// Its object in the files bucket (`snapshot/<revision>`).
    pub object: String,
    /// The status bucket's last revision when it was taken: it holds every entry at or below
    /// it, as it was then or newer.
    pub revision: u64,
    /// The creation time of the status bucket's stream it was taken from: a bucket re-created
    /// since makes it worthless.
    pub incarnation: String,
    /// Its records.
    pub entries: u64,
    /// Its SHA-256 as the object store recorded it (`SHA-256=<base64url>`): a node reads only
    /// the object whose digest this is (a name comes back with a re-created bucket; a digest
    /// does not). Empty in a manifest written before snapshots had one: never read, and
    /// replaced at the next look.
    #[serde(default)]
    pub digest: String,
    /// When it was written (Unix seconds).
    #[serde(default)]
    pub taken_at: u64,
}

/// A new snapshot is taken once the bucket moved this many revisions past the last one, or a
/// twentieth of the statuses if more: a node replays what changed since one message at a time
/// (about 10 µs each; 50,000 for a million statuses, while writing the snapshot takes the CA
/// host about 30 s of work). Every response is re-signed once per validity period, so the
/// bucket moves by every status that often.
const SNAPSHOT_AFTER_CHANGES: u64 = 10_000;

/// The object's chunks: four times the object store's default, each a message a node reads
/// (fewer, larger messages cost the engine and the node less; nats-server's default largest
/// message is 1 MiB).
const OBJECT_CHUNK: usize = 512 * 1024;

/// Octets written to the object at once.
const WRITE_CHUNK: usize = OBJECT_CHUNK;

/// At most one snapshot every this often: a node reading one has at least this long before
/// the one after next deletes it.
const MIN_INTERVAL_SECONDS: u64 = 600;

/// A snapshot not written within this is given up (its chunks are purged by the next one).
pub(super) const SNAPSHOT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(900);

/// Whether the bucket moved far enough past the manifest's snapshot (or has none) that a new
/// one is worth writing, at `now` (Unix seconds).
pub(super) fn snapshot_due(manifest: &EngineManifest, last_revision: u64, now: u64) -> bool {
    match &manifest.snapshot {
        None => true,
        Some(taken) if taken.digest.is_empty() => true,
        Some(taken) => {
            last_revision.saturating_sub(taken.revision)
                >= (manifest.statuses / 20).max(SNAPSHOT_AFTER_CHANGES)
                && now >= taken.taken_at.saturating_add(MIN_INTERVAL_SECONDS)
        }
    }
}

/// The snapshot bucket, created when missing.
async fn snapshot_bucket(engine: &Engine) -> Result<jetstream::object_store::ObjectStore, String> {
    let name = &engine.settings.snapshot_bucket;
    match engine.js.get_object_store(name).await {
        Ok(bucket) => Ok(bucket),
        Err(_) => engine
            .js
            .create_object_store(jetstream::object_store::Config {
                bucket: name.clone(),
                description: Some("sceau: status snapshots for new responder nodes".into()),
                num_replicas: engine.settings.replicas,
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("bucket {name}: {e}")),
    }
}

/// Reports how the last snapshot task ended, and starts the next (which writes a snapshot if
/// one is due) unless one is running: one at a time, each given [`SNAPSHOT_TIMEOUT`].
pub(super) fn keep_one_going(
    running: &mut tokio::task::JoinSet<Result<Option<SnapshotRef>, String>>,
    store: &Store,
    va: &Arc<ValidationAuthority>,
    engine: &Engine,
    metrics: &Arc<PublisherMetrics>,
) {
    match running.try_join_next() {
        Some(Ok(Err(error))) => {
            tracing::warn!(%error, "publisher: no status snapshot written");
        }
        Some(Err(error)) => {
            tracing::warn!(%error, "publisher: the status snapshot task failed");
        }
        _ => {}
    }
    if !running.is_empty() {
        return;
    }
    let work = write_snapshot_if_due(store.clone(), va.clone(), engine.clone(), metrics.clone());
    running.spawn(async move {
        tokio::time::timeout(SNAPSHOT_TIMEOUT, work)
            .await
            .unwrap_or_else(|_| Err(format!("not written within {SNAPSHOT_TIMEOUT:?}")))
    });
}

/// Writes a snapshot of every status if one is due, and names it in the manifest. Does
/// nothing while the bucket has no manifest (not whole). The manifest is replaced only if it
/// is still the one read at the start (a full publication that began meanwhile deleted it:
/// the snapshot is then dropped). Keeps the previous snapshot (a node may be reading it) and
/// deletes older ones.
pub(super) async fn write_snapshot_if_due(
    store: Store,
    va: Arc<ValidationAuthority>,
    engine: Engine,
    metrics: Arc<PublisherMetrics>,
) -> Result<Option<SnapshotRef>, String> {
    let status = &engine.status;
    let Some(entry) = status
        .entry(MANIFEST_KEY)
        .await
        .map_err(|e| format!("{MANIFEST_KEY}: {e}"))?
    else {
        return Ok(None);
    };
    if !matches!(entry.operation, jetstream::kv::Operation::Put) {
        return Ok(None);
    }
    let manifest: EngineManifest =
        serde_json::from_slice(&entry.value).map_err(|e| format!("{MANIFEST_KEY}: {e}"))?;
    // Read before any status (see the module's documentation).
    let info = status
        .stream
        .get_info()
        .await
        .map_err(|e| format!("status bucket: {e}"))?;
    let revision = info.state.last_sequence;
    if !snapshot_due(&manifest, revision, va.now().unix_seconds()) {
        return Ok(None);
    }
    let started = Instant::now();
    let snapshots = snapshot_bucket(&engine).await?;
    let previous = manifest.snapshot.clone();
    // What an earlier write left when it was cut short (an engine error, a restart): chunks
    // without an object, which nothing else would ever delete.
    purge_stale_chunks(
        &engine,
        &snapshots,
        &[previous.as_ref().map(|p| p.object.as_str())],
    )
    .await?;
    let object = format!("{PREFIX}{revision}");
    let (entries, written) = write_object(&store, &va, &engine, &snapshots, &object).await?;
    let taken = SnapshotRef {
        object: object.clone(),
        revision,
        incarnation: format!("{:?}", info.created),
        entries,
        digest: written
            .digest
            .ok_or_else(|| format!("{object}: the object store recorded no digest"))?,
        taken_at: va.now().unix_seconds(),
    };
    let named = EngineManifest {
        snapshot: Some(taken.clone()),
        ..manifest
    };
    let bytes = serde_json::to_vec(&named).map_err(|e| e.to_string())?;
    if let Err(error) = status
        .update(MANIFEST_KEY, bytes.into(), entry.revision)
        .await
    {
        // The update may have landed and only its answer been lost: the object is deleted
        // only if the manifest does not name it.
        let named_now = status
            .get(MANIFEST_KEY)
            .await
            .ok()
            .flatten()
            .and_then(|bytes| serde_json::from_slice::<EngineManifest>(&bytes).ok())
            .and_then(|manifest| manifest.snapshot)
            .is_some_and(|named| named.object == object && named.digest == taken.digest);
        if !named_now {
            let _ = snapshots.delete(&object).await;
            return Err(format!(
                "{MANIFEST_KEY} changed while the snapshot was written ({error}); dropped"
            ));
        }
    }
    let ms = started.elapsed().as_millis() as u64;
    metrics.snapshots.fetch_add(1, Ordering::Relaxed);
    metrics.last_snapshot_ms.store(ms, Ordering::Relaxed);
    tracing::info!(object, entries, ms, "publisher: status snapshot written");
    let kept = [
        Some(object.as_str()),
        previous.as_ref().map(|p| p.object.as_str()),
    ];
    prune(&snapshots, &kept).await;
    purge_stale_chunks(&engine, &snapshots, &kept).await?;
    Ok(Some(taken))
}

/// Writes every status the responder holds into the object `object`; returns how many, and
/// the object as the store recorded it.
async fn write_object(
    store: &Store,
    va: &ValidationAuthority,
    engine: &Engine,
    snapshots: &jetstream::object_store::ObjectStore,
    object: &str,
) -> Result<(u64, jetstream::object_store::ObjectInfo), String> {
    let files = &engine.files;
    let (mut reader, writer) = tokio::io::duplex(2 * OBJECT_CHUNK);
    let produce = async {
        let mut writer = writer;
        let mut tails = Tails::default();
        let mut buffer = Vec::with_capacity(2 * WRITE_CHUNK);
        buffer.extend_from_slice(MAGIC);
        let mut entries = 0u64;
        for key in va.responder.keys() {
            let tails_by = (files, TailsBy::Checking);
            let Some(current) = current_status(store, va, tails_by, &mut tails, &key).await? else {
                continue;
            };
            let name = status_key(&key);
            encode(&current.record(&name), &mut buffer).map_err(|e| format!("{name}: {e}"))?;
            entries += 1;
            if buffer.len() >= WRITE_CHUNK {
                writer
                    .write_all(&buffer)
                    .await
                    .map_err(|e| format!("{object}: {e}"))?;
                buffer.clear();
            }
        }
        writer
            .write_all(&buffer)
            .await
            .map_err(|e| format!("{object}: {e}"))?;
        writer
            .shutdown()
            .await
            .map_err(|e| format!("{object}: {e}"))?;
        Ok::<_, String>(entries)
    };
    // An error while producing drops the put before it writes the object's metadata: no
    // object, only chunks, which the next snapshot purges.
    let put = async {
        let metadata = jetstream::object_store::ObjectMetadata {
            name: object.to_owned(),
            chunk_size: Some(OBJECT_CHUNK),
            ..Default::default()
        };
        snapshots
            .put(metadata, &mut reader)
            .await
            .map_err(|e| format!("{object}: {e}"))
    };
    tokio::try_join!(produce, put)
}

/// Purges the chunks of the snapshot bucket that belong to no object in `kept` (an object's
/// chunks are `$O.<bucket>.C.<its nuid>`).
async fn purge_stale_chunks(
    engine: &Engine,
    snapshots: &jetstream::object_store::ObjectStore,
    kept: &[Option<&str>],
) -> Result<(), String> {
    use futures_util::StreamExt;
    let bucket = &engine.settings.snapshot_bucket;
    let mut keep = Vec::new();
    for name in kept.iter().flatten() {
        if let Ok(info) = snapshots.info(name).await {
            keep.push(format!("$O.{bucket}.C.{}", info.nuid));
        }
    }
    let stream = engine
        .js
        .get_stream(format!("OBJ_{bucket}"))
        .await
        .map_err(|e| format!("bucket {bucket}: {e}"))?;
    let mut subjects = stream
        .info_with_subjects(format!("$O.{bucket}.C.>"))
        .await
        .map_err(|e| format!("bucket {bucket}: {e}"))?;
    let mut stale = Vec::new();
    while let Some(subject) = subjects.next().await {
        let (subject, _) = subject.map_err(|e| format!("bucket {bucket}: {e}"))?;
        if !keep.contains(&subject) {
            stale.push(subject);
        }
    }
    for subject in stale {
        stream
            .purge()
            .filter(subject.as_str())
            .await
            .map_err(|e| format!("bucket {bucket}: {subject}: {e}"))?;
    }
    Ok(())
}

/// Deletes every snapshot but those in `kept`.
async fn prune(snapshots: &jetstream::object_store::ObjectStore, kept: &[Option<&str>]) {
    use futures_util::StreamExt;
    let Ok(mut listed) = snapshots.list().await else {
        return;
    };
    let mut stale = Vec::new();
    while let Some(Ok(info)) = listed.next().await {
        if info.name.starts_with(PREFIX) && !kept.contains(&Some(info.name.as_str())) {
            stale.push(info.name);
        }
    }
    for name in stale {
        if let Err(error) = snapshots.delete(&name).await {
            tracing::warn!(%error, name, "publisher: an old snapshot cannot be deleted");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(statuses: u64, snapshot_at: Option<u64>) -> EngineManifest {
        EngineManifest {
            statuses,
            completed_at: 0,
            snapshot: snapshot_at.map(|revision| SnapshotRef {
                object: format!("{PREFIX}{revision}"),
                revision,
                incarnation: String::new(),
                entries: statuses,
                digest: "SHA-256=x".into(),
                taken_at: 1_000_000,
            }),
        }
    }

    /// The first snapshot is due at once; the next after 10,000 changes, or a twentieth of the
    /// statuses when that is more, and never within ten minutes of the last.
    #[test]
    fn a_snapshot_is_due_when_the_bucket_moved_far_enough() {
        let later = 1_000_000 + 600;
        assert!(snapshot_due(&manifest(5, None), 6, 0));
        assert!(!snapshot_due(&manifest(5, Some(6)), 9_999 + 6, later));
        assert!(snapshot_due(&manifest(5, Some(6)), 10_000 + 6, later));
        assert!(!snapshot_due(&manifest(5, Some(6)), 10_000 + 6, later - 1));
        assert!(!snapshot_due(&manifest(1_000_000, Some(1)), 49_999, later));
        assert!(snapshot_due(&manifest(1_000_000, Some(1)), 50_001, later));
        // A bucket behind the snapshot is the full publication's business, not this.
        assert!(!snapshot_due(&manifest(5, Some(100)), 50, later));
    }
}
