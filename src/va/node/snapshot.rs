//! Reading a status snapshot (format: [`crate::va::snapshot`]) at warm-up, in two stages:
//! this task reads the object's chunks (the client checks the object's SHA-256 when the last
//! one is read), a blocking thread applies the records. A million records are mostly memory to take from the
//! system, which the second stage does while the first waits for the engine.

use std::collections::HashSet;
use std::sync::Arc;

use async_nats::jetstream::object_store::ObjectStore;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use super::follow::{FILE_CHUNK_TIMEOUT, read_file};
use super::{Node, Taken};
use crate::va::publish::SnapshotRef;
use crate::va::snapshot::{MAGIC, StatusRecord, next_record};

/// Octets handed from the reader to the applier at once.
const CHUNK: usize = 1 << 20;

/// Chunks in flight between the two stages (their buffers are used again, not reallocated).
const IN_FLIGHT: usize = 4;

/// Applies every record of the snapshot `taken` names; returns how many (never more than it
/// announces: a longer object is refused).
pub(super) async fn read_snapshot(
    node: &Arc<Node>,
    (files, snapshots): (&ObjectStore, &ObjectStore),
    taken: &SnapshotRef,
) -> Result<u64, String> {
    let name = taken.object.as_str();
    let mut object = tokio::time::timeout(FILE_CHUNK_TIMEOUT, snapshots.get(name))
        .await
        .map_err(|_| format!("{name}: no answer within {FILE_CHUNK_TIMEOUT:?}"))?
        .map_err(|e| format!("{name}: {e}"))?;
    let mut magic = vec![0u8; MAGIC.len()];
    tokio::time::timeout(FILE_CHUNK_TIMEOUT, object.read_exact(&mut magic))
        .await
        .map_err(|_| format!("{name}: no chunk within {FILE_CHUNK_TIMEOUT:?}"))?
        .map_err(|e| format!("{name}: {e}"))?;
    if magic != MAGIC {
        return Err(format!("{name}: not a status snapshot"));
    }
    let (full, mut filled) = mpsc::channel::<Vec<u8>>(IN_FLIGHT);
    let (empty, mut emptied) = mpsc::channel::<Vec<u8>>(IN_FLIGHT);
    for _ in 0..IN_FLIGHT {
        // Capacity is enough: the channel holds IN_FLIGHT.
        let _ = empty.try_send(Vec::with_capacity(CHUNK));
    }
    let mut applier = Applier {
        node: node.clone(),
        files: files.clone(),
        runtime: tokio::runtime::Handle::current(),
        name: name.to_owned(),
        carry: Vec::new(),
        records: 0,
        announced: taken.entries,
        missing_tails: HashSet::new(),
    };
    let applying = tokio::task::spawn_blocking(move || {
        while let Some(chunk) = filled.blocking_recv() {
            applier.apply_chunk(&chunk)?;
            // The reader may be gone (it failed): its error is the one that counts.
            let _ = empty.blocking_send(chunk);
        }
        applier.finish()
    });
    let reading = async {
        loop {
            let Some(mut chunk) = emptied.recv().await else {
                // The applier stopped: its error says why.
                return Ok(());
            };
            // Zeroed once: the buffers go round, the memory is taken from the system once.
            chunk.resize(CHUNK, 0);
            let mut filled = 0;
            let mut ended = false;
            while filled < CHUNK {
                let read =
                    tokio::time::timeout(FILE_CHUNK_TIMEOUT, object.read(&mut chunk[filled..]))
                        .await
                        .map_err(|_| format!("{name}: no chunk within {FILE_CHUNK_TIMEOUT:?}"))?
                        .map_err(|e| format!("{name}: {e}"))?;
                if read == 0 {
                    ended = true;
                    break;
                }
                filled += read;
            }
            chunk.truncate(filled);
            if full.send(chunk).await.is_err() || ended {
                return Ok::<_, String>(());
            }
        }
    };
    let read = reading.await;
    drop(full);
    let applied = applying.await.map_err(|e| format!("{name}: {e}"))?;
    read?;
    applied
}

/// The second stage: records out of chunks, a record cut by a chunk's end carried over.
struct Applier {
    node: Arc<Node>,
    files: ObjectStore,
    runtime: tokio::runtime::Handle,
    name: String,
    /// The start of a record the previous chunk cut.
    carry: Vec<u8>,
    records: u64,
    /// Records the manifest announces: one more is damage.
    announced: u64,
    /// Tails that could not be read: asked for once, not once per record.
    missing_tails: HashSet<String>,
}

impl Applier {
    fn apply_chunk(&mut self, chunk: &[u8]) -> Result<(), String> {
        let mut at = 0;
        // First the record the previous chunk cut, completed from this one.
        while !self.carry.is_empty() {
            let carried = std::mem::take(&mut self.carry);
            if let Some((record, _)) = self.next(&carried)? {
                self.apply(&record)?;
                continue;
            }
            self.carry = carried;
            let needed = match self.carry.get(..4) {
                Some(length) => {
                    4 + u32::from_be_bytes([length[0], length[1], length[2], length[3]]) as usize
                        - self.carry.len()
                }
                None => 4 - self.carry.len(),
            };
            let taken = needed.min(chunk.len() - at);
            if taken == 0 {
                return Ok(());
            }
            self.carry.extend_from_slice(&chunk[at..at + taken]);
            at += taken;
        }
        while let Some((record, used)) = self.next(&chunk[at..])? {
            self.apply(&record)?;
            at += used;
        }
        self.carry.extend_from_slice(&chunk[at..]);
        Ok(())
    }

    fn next<'a>(&self, octets: &'a [u8]) -> Result<Option<(StatusRecord<'a>, usize)>, String> {
        next_record(octets).map_err(|e| format!("{}: {e}", self.name))
    }

    fn apply(&mut self, record: &StatusRecord<'_>) -> Result<(), String> {
        if self.records == self.announced {
            return Err(format!(
                "{}: more records than the {} announced",
                self.name, self.announced
            ));
        }
        match self.node.apply_record(record, false) {
            Taken::Applied => {}
            Taken::UnknownIssuer => {
                return Err(format!(
                    "{}: {}: an issuer the node does not know",
                    self.name, record.key
                ));
            }
            Taken::UnknownTail(id) => {
                if !self.missing_tails.contains(&id) {
                    let read = self.runtime.block_on(read_file(
                        &self.node,
                        &self.files,
                        &format!("tail/{id}"),
                    ));
                    if let Err(error) = read {
                        tracing::warn!(%error, "node: a response's tail cannot be read; its responses are left out");
                        self.missing_tails.insert(id);
                    }
                }
                self.node.apply_record(record, true);
            }
        }
        self.records += 1;
        Ok(())
    }

    fn finish(self) -> Result<u64, String> {
        if !self.carry.is_empty() {
            return Err(format!("{}: ends inside a record", self.name));
        }
        Ok(self.records)
    }
}
