//! Following the engine: warm-up (from the latest snapshot when there is one), then every
//! change, across reconnections, re-created buckets and buckets put back.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream;
use futures_util::StreamExt;
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

use super::{Node, Taken};
use crate::config::NatsConfig;
use crate::va::publish::{EngineManifest, MANIFEST_KEY};
use crate::va::snapshot;

/// Follows the engine until `shutdown`: warm-up, then every change; reconnects with backoff
/// and resumes from the last revision applied.
pub async fn follow(node: Arc<Node>, settings: NatsConfig, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(250);
    loop {
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return,
            outcome = follow_once(&node, &settings) => outcome,
        };
        node.connected.store(0, Ordering::Relaxed);
        if let Err(error) = outcome {
            tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "node: the engine is unreachable; serving what it has");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_millis(500));
    }
}

async fn follow_once(node: &Arc<Node>, settings: &NatsConfig) -> Result<(), String> {
    let client = crate::va::publish::connect(settings).await?;
    let js = jetstream::new(client.clone());
    let bucket = &settings.status_bucket;
    // The bucket's identity first: the engine answering without it, or with another one, is
    // an engine that lost what it held, not an outage.
    let info = bucket_info(node, &js, bucket).await?;
    let incarnation = format!("{:?}", info.created);
    let applied = node.revision.load(Ordering::Relaxed);
    let followed = node.view().incarnation.clone();
    match followed {
        None => node.start_reading(incarnation.clone(), "warming up: reading the bucket".into()),
        Some(known) if known != incarnation => node.start_reading(
            incarnation.clone(),
            format!(
                "the status bucket was re-created ({known} -> {incarnation}); reading it again"
            ),
        ),
        Some(_) if info.state.last_sequence < applied => node.start_reading(
            incarnation.clone(),
            format!(
                "the status bucket went back to revision {} (applied {applied}); reading it again",
                info.state.last_sequence
            ),
        ),
        Some(_) => {}
    }
    let status = js
        .get_key_value(bucket)
        .await
        .map_err(|e| format!("bucket {bucket}: {e}"))?;
    let files = js
        .get_object_store(&settings.files_bucket)
        .await
        .map_err(|e| format!("bucket {}: {e}", settings.files_bucket))?;
    // The server announces a stream deleted at once: the node stops vouching for "good" then,
    // not at its next look. (Without the permission to read advisories, the look below still
    // finds it within a second.)
    let mut deleted = client
        .subscribe(format!("$JS.EVENT.ADVISORY.STREAM.DELETED.KV_{bucket}"))
        .await
        .map_err(|e| format!("advisories: {e}"))?;
    node.connected.store(1, Ordering::Relaxed);
    // The files first: they say which CAs the node answers for.
    let mut file_watch = files.watch().await.map_err(|e| e.to_string())?;
    read_every_file(node, &files).await?;
    // Then the status: a new reading starts from the latest snapshot when it can; a
    // reconnection resumes from the last revision applied.
    if node.revision.load(Ordering::Relaxed) == 0 {
        let snapshots = js.get_object_store(&settings.snapshot_bucket).await.ok();
        let warmed = match &snapshots {
            Some(snapshots) => {
                let buckets = (&status, &files, snapshots);
                warm_from_snapshot(node, buckets, &incarnation, info.state.last_sequence).await
            }
            None => Err(format!("no bucket {}", settings.snapshot_bucket)),
        };
        start_after(node, warmed);
    }
    let from = node.revision.load(Ordering::Relaxed) + 1;
    let mut watch = status
        .watch_all_from_revision(from)
        .await
        .map_err(|e| e.to_string())?;
    // Nothing to read (an empty bucket, or resuming where it ends): caught up already, and
    // complete again if the manifest of this bucket was read (a transient error made the node
    // incomplete; the bucket is the same one).
    if info.state.last_sequence < from {
        node.view().caught_up = true;
        node.settle();
    }
    tracing::info!(servers = ?settings.servers, from, "node: following the engine");
    // Every second the bucket is looked at: gone, re-created or gone backwards, the node
    // is incomplete and reads it again; behind with no progress since the previous look, the
    // watch stalled (seen with three servers: the client reconnected, the watch delivered
    // nothing more) and is rebuilt from where it stopped.
    let mut probe = tokio::time::interval(Duration::from_secs(1));
    probe.tick().await;
    let mut seen_at_probe = node.revision.load(Ordering::Relaxed);
    loop {
        tokio::select! {
            Some(_) = deleted.next() => {
                node.incomplete(format!("the status bucket {bucket} was deleted"));
                return Err("the status bucket was deleted".into());
            }
            _ = probe.tick() => {
                if !node.is_complete() {
                    node.settle();
                }
                seen_at_probe = look_at_bucket(node, &js, bucket, &incarnation, seen_at_probe).await?;
            }
            entry = watch.next() => {
                let Some(entry) = entry else {
                    return Err("the status watch ended".into());
                };
                let entry = entry.map_err(|e| e.to_string())?;
                let put = matches!(entry.operation, jetstream::kv::Operation::Put);
                take_entry(node, &files, &entry.key, put, &entry.value).await?;
                node.revision.store(entry.revision, Ordering::Relaxed);
                if entry.delta == 0 {
                    node.view().caught_up = true;
                }
                if !node.is_complete() {
                    node.settle();
                }
            }
            info = file_watch.next() => {
                let Some(info) = info else {
                    return Err("the files watch ended".into());
                };
                let info = info.map_err(|e| e.to_string())?;
                if !info.deleted && !info.name.starts_with(snapshot::PREFIX) {
                    read_file_or_warn(node, &files, &info.name).await;
                }
            }
        }
    }
}

/// The status bucket's stream as the engine describes it now; a bucket the engine says it does
/// not have makes the node incomplete at once.
async fn bucket_info(
    node: &Node,
    js: &jetstream::Context,
    bucket: &str,
) -> Result<jetstream::stream::Info, String> {
    let stream = match js.get_stream(format!("KV_{bucket}")).await {
        Ok(stream) => stream,
        Err(error) => {
            if stream_not_found(&error) {
                node.incomplete(format!("the engine has no status bucket {bucket}"));
            }
            return Err(format!("bucket {bucket}: {error}"));
        }
    };
    stream
        .get_info()
        .await
        .map_err(|e| format!("bucket {bucket}: {e}"))
}

/// The look taken every second: the bucket re-created or gone backwards (read it again), or
/// ahead with no progress since the previous look (the watch stalled: resume it). Returns the
/// revision applied now, for the next look.
async fn look_at_bucket(
    node: &Node,
    js: &jetstream::Context,
    bucket: &str,
    incarnation: &str,
    seen_at_previous_look: u64,
) -> Result<u64, String> {
    let applied = node.revision.load(Ordering::Relaxed);
    let info = bucket_info(node, js, bucket).await?;
    if format!("{:?}", info.created) != incarnation {
        return Err("the status bucket was re-created".into());
    }
    let last = info.state.last_sequence;
    if last < applied {
        return Err(format!("the status bucket went back to revision {last}"));
    }
    if last > applied && applied == seen_at_previous_look {
        return Err(format!(
            "the status watch stalled at revision {applied} (the bucket is at {last}); resuming"
        ));
    }
    Ok(applied)
}

/// Whether the engine answered that the stream does not exist (not that it could not answer).
fn stream_not_found(error: &jetstream::context::GetStreamError) -> bool {
    matches!(
        error.kind(),
        jetstream::context::GetStreamErrorKind::JetStream(inner)
            if inner.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}

/// How long reading a file may wait for its next chunk. An object replaced while it is read
/// has its chunks purged, and the read would wait for them forever, the node applying no
/// status meanwhile; a large CRL over a slow link still reads, chunk after chunk.
pub(super) const FILE_CHUNK_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) async fn read_file(
    node: &Node,
    files: &jetstream::object_store::ObjectStore,
    name: &str,
) -> Result<(), String> {
    let mut object = tokio::time::timeout(FILE_CHUNK_TIMEOUT, files.get(name))
        .await
        .map_err(|_| format!("{name}: no answer within {FILE_CHUNK_TIMEOUT:?}"))?
        .map_err(|e| format!("{name}: {e}"))?;
    let mut der = Vec::new();
    loop {
        let read = tokio::time::timeout(FILE_CHUNK_TIMEOUT, object.read_buf(&mut der))
            .await
            .map_err(|_| format!("{name}: no chunk within {FILE_CHUNK_TIMEOUT:?}"))?
            .map_err(|e| format!("{name}: {e}"))?;
        if read == 0 {
            break;
        }
    }
    node.take_file(name, der);
    Ok(())
}

/// Reads a file; one that cannot be read is said and skipped (read again when it changes),
/// so that it does not keep the node from applying every status after it.
async fn read_file_or_warn(node: &Node, files: &jetstream::object_store::ObjectStore, name: &str) {
    if let Err(error) = read_file(node, files, name).await {
        tracing::warn!(%error, "node: a file cannot be read; skipped");
    }
}

/// Takes one entry of the status bucket: a status, the manifest, or a deletion (of the
/// manifest: the publisher is publishing every status again).
async fn take_entry(
    node: &Node,
    files: &jetstream::object_store::ObjectStore,
    key: &str,
    put: bool,
    value: &[u8],
) -> Result<(), String> {
    if key == MANIFEST_KEY && !put {
        node.view().manifest = None;
        node.incomplete("the publisher is publishing every status again".into());
    } else if put && key == MANIFEST_KEY {
        node.take_manifest(value);
    } else if put {
        match node.take_status(key, value, false) {
            Taken::Applied => {}
            Taken::UnknownIssuer => {
                // Its certificate is in the files bucket.
                read_every_file(node, files).await?;
                node.take_status(key, value, true);
            }
            Taken::UnknownTail(id) => {
                if let Err(error) = read_file(node, files, &format!("tail/{id}")).await {
                    tracing::warn!(%error, "node: a response's tail cannot be read; its responses are left out");
                }
                node.take_status(key, value, true);
            }
        }
    }
    Ok(())
}

/// Reads every file of the files bucket but the snapshots (read only to warm up).
async fn read_every_file(
    node: &Node,
    files: &jetstream::object_store::ObjectStore,
) -> Result<(), String> {
    let mut listed = files.list().await.map_err(|e| e.to_string())?;
    while let Some(info) = listed.next().await {
        let info = info.map_err(|e| e.to_string())?;
        if !info.name.starts_with(snapshot::PREFIX) {
            read_file_or_warn(node, files, &info.name).await;
        }
    }
    Ok(())
}

/// Where following the bucket starts after a warm-up: past the snapshot's revision, or, with
/// no snapshot read, from the bucket's start.
fn start_after(node: &Node, warmed: Result<u64, String>) {
    match warmed {
        Ok(revision) => node.revision.store(revision, Ordering::Relaxed),
        Err(why) => {
            tracing::info!(
                why,
                "node: no snapshot read; reading the bucket from its start"
            );
            node.held.store(0, Ordering::Relaxed);
        }
    }
}

/// Applies the snapshot the manifest names, if it was taken from this very bucket (same
/// creation time), the bucket did not go back below it, and the object is the one the manifest
/// means (same digest); returns its revision, where following the bucket takes over. Anything
/// wrong (no snapshot, another bucket's, another object, damaged, more or fewer records than
/// announced, an issuer the node does not know) is said and the bucket is read from its start
/// instead. What was applied before the damage was found stays: records of the object the
/// publisher wrote (its digest is checked before, its content at its end), and each answer a
/// node gives is a response the CA signed; a revocation among them is final here as anywhere.
async fn warm_from_snapshot(
    node: &Arc<Node>,
    (status, files, snapshots): (
        &jetstream::kv::Store,
        &jetstream::object_store::ObjectStore,
        &jetstream::object_store::ObjectStore,
    ),
    incarnation: &str,
    last_revision: u64,
) -> Result<u64, String> {
    let value = status
        .get(MANIFEST_KEY)
        .await
        .map_err(|e| format!("{MANIFEST_KEY}: {e}"))?
        .ok_or("the bucket has no manifest")?;
    let manifest: EngineManifest =
        serde_json::from_slice(&value).map_err(|e| format!("{MANIFEST_KEY}: {e}"))?;
    let taken = manifest
        .snapshot
        .clone()
        .ok_or("the manifest names no snapshot")?;
    if taken.incarnation != incarnation {
        return Err(format!(
            "{} was taken from another bucket ({}, this one {incarnation})",
            taken.object, taken.incarnation
        ));
    }
    if taken.revision > last_revision {
        return Err(format!(
            "{} shows revision {}, the bucket ends at {last_revision}",
            taken.object, taken.revision
        ));
    }
    // The object the manifest means, not one that took its name since: its digest, which the
    // object store checks against the content when the last chunk is read.
    let object = snapshots
        .info(&taken.object)
        .await
        .map_err(|e| format!("{}: {e}", taken.object))?;
    if object.digest.as_deref() != Some(taken.digest.as_str()) {
        return Err(format!(
            "{} is not the object the manifest names (digest {:?}, announced {})",
            taken.object, object.digest, taken.digest
        ));
    }
    let started = std::time::Instant::now();
    let read = super::snapshot::read_snapshot(node, (files, snapshots), &taken).await?;
    if read != taken.entries {
        return Err(format!(
            "{} holds {read} records, the manifest announces {}",
            taken.object, taken.entries
        ));
    }
    node.view().manifest = Some(manifest);
    node.snapshot_entries.store(read, Ordering::Relaxed);
    tracing::info!(
        object = taken.object,
        entries = read,
        ms = started.elapsed().as_millis() as u64,
        "node: warmed up from a snapshot"
    );
    Ok(taken.revision)
}
