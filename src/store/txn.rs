//! The writer thread and the transactions it runs: reads through the group's staged writes,
//! audit events linked at the end of the chain, outbox entries, one synced batch per group.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crossbeam_channel::Receiver;
use rocksdb::{DB, IteratorMode, WriteBatch, WriteOptions};

use super::chain::{self, ChainEntry, ChainHead, Link};
use super::schema::{Audit, KeyCodec, Meta, Outbox, Table, ValueCodec, meta_keys};
use super::{OutboxCounter, Reader, StoreError, TxnJob, cf, db_error, decode_row};
use crate::x509::Timestamp;

/// A staged write: table, key, and the value (or `None` for a delete).
type Staged = (&'static str, Vec<u8>, Option<Vec<u8>>);
/// Staged writes by (table, key), for reads within a group.
type Overlay = HashMap<(&'static str, Vec<u8>), Option<Vec<u8>>>;

/// Most transactions committed in one write batch.
const MAX_GROUP: usize = 512;

/// A transaction being run by the writer thread.
///
/// Reads see, in order: this transaction's own staged writes, the writes staged by earlier
/// transactions of the same group, then the database. (Scans see only the database.)
pub struct Txn<'g> {
    db: &'g DB,
    group: &'g Overlay,
    staged: Vec<Staged>,
    own: Overlay,
    events: Vec<Link>,
    changed: Vec<String>,
    /// The chain's head before this transaction's own events.
    head_before: ChainHead,
}

impl core::fmt::Debug for Txn<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Txn")
            .field("staged", &self.staged.len())
            .finish()
    }
}

impl Txn<'_> {
    pub fn get<T: Table>(&self, key: &T::Key) -> Result<Option<T::Value>, StoreError> {
        let encoded = key.encode_key();
        let lookup = (T::NAME, encoded);
        let raw = match self.own.get(&lookup).or_else(|| self.group.get(&lookup)) {
            Some(staged) => staged.clone(),
            None => self
                .db
                .get_cf(cf(self.db, T::NAME)?, &lookup.1)
                .map_err(db_error)?,
        };
        decode_row::<T>(raw.as_deref())
    }

    pub fn contains<T: Table>(&self, key: &T::Key) -> Result<bool, StoreError> {
        Ok(self.get::<T>(key)?.is_some())
    }

    /// Whether the table holds any row (staged in this group, or in the database).
    pub fn any<T: Table>(&self) -> Result<bool, StoreError> {
        let staged = |overlay: &Overlay| {
            overlay
                .iter()
                .any(|((table, _), value)| *table == T::NAME && value.is_some())
        };
        if staged(&self.own) || staged(self.group) {
            return Ok(true);
        }
        let mut rows = self
            .db
            .iterator_cf(cf(self.db, T::NAME)?, IteratorMode::Start);
        Ok(rows.next().transpose().map_err(db_error)?.is_some())
    }

    pub fn put<T: Table>(&mut self, key: &T::Key, value: &T::Value) -> Result<(), StoreError> {
        let bytes = value.encode_value().map_err(|detail| StoreError::Corrupt {
            table: T::NAME,
            detail,
        })?;
        self.stage(T::NAME, key.encode_key(), Some(bytes));
        Ok(())
    }

    pub fn delete<T: Table>(&mut self, key: &T::Key) {
        self.stage(T::NAME, key.encode_key(), None);
    }

    fn stage(&mut self, table: &'static str, key: Vec<u8>, value: Option<Vec<u8>>) {
        self.own.insert((table, key.clone()), value.clone());
        self.staged.push((table, key, value));
    }

    /// Records an audit event in the same write as this transaction's changes: the writer
    /// links it at the end of the chain ([`ChainEntry`]).
    pub fn audit(&mut self, event: impl ChainEntry) {
        self.events.push(chain::link_later(event));
    }

    /// The audit chain's head before this transaction's events: what its first event will
    /// chain from (transactions of a group run one after another on the writer thread).
    pub fn audit_head(&self) -> ChainHead {
        self.head_before
    }

    /// Records, in this transaction's batch, that `name` changed and responder nodes must
    /// learn it (an outbox entry).
    pub fn changed(&mut self, name: String) {
        self.changed.push(name);
    }
}

/// The one thread that writes: runs the transactions waiting in its queue and commits each
/// group in one synced batch.
pub(super) struct Writer {
    pub(super) db: Arc<DB>,
    pub(super) head: Arc<Mutex<ChainHead>>,
    pub(super) outbox: Arc<OutboxCounter>,
}

impl Writer {
    pub(super) fn run(self, queue: Receiver<TxnJob>) {
        let mut sync = WriteOptions::default();
        // Durable before the caller hears "done": an issuance intent must survive a power cut.
        sync.set_sync(true);
        while let Ok(first) = queue.recv() {
            let mut jobs = vec![first];
            while jobs.len() < MAX_GROUP {
                match queue.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            let start_head = *self.head.lock().unwrap_or_else(|p| p.into_inner());
            let mut head = start_head;
            let mut batch = WriteBatch::default();
            let mut group = Overlay::new();
            let mut completions = Vec::with_capacity(jobs.len());
            let mut failure: Option<StoreError> = None;
            let mut outbox_added = false;
            // Taken at the first outbox entry of the group, released after its write.
            let mut in_order = None;
            for job in jobs {
                let mut txn = Txn {
                    db: &self.db,
                    group: &group,
                    staged: Vec::new(),
                    own: HashMap::new(),
                    events: Vec::new(),
                    changed: Vec::new(),
                    head_before: head,
                };
                let (keep, completion) = job(&mut txn);
                completions.push(completion);
                if !keep {
                    continue;
                }
                let Txn {
                    staged,
                    events,
                    changed,
                    ..
                } = txn;
                let mut entries = Vec::with_capacity(events.len());
                let now = Timestamp::now();
                let mut txn_head = head;
                let mut audit_failed = None;
                for event in events {
                    match event(txn_head, now) {
                        Ok((stored, next)) => {
                            entries.push((next.seq, stored));
                            txn_head = next;
                        }
                        Err(e) => {
                            audit_failed = Some(e);
                            break;
                        }
                    }
                }
                if let Some(e) = audit_failed {
                    failure = Some(StoreError::Corrupt {
                        table: Audit::NAME,
                        detail: e,
                    });
                    continue;
                }
                for (table, key, value) in staged {
                    if let Err(e) = apply(&self.db, &mut batch, table, &key, value.as_deref()) {
                        failure = Some(e);
                    }
                    group.insert((table, key), value);
                }
                for (seq, stored) in entries {
                    if let Err(e) = apply(
                        &self.db,
                        &mut batch,
                        Audit::NAME,
                        &seq.to_be_bytes(),
                        Some(&stored),
                    ) {
                        failure = Some(e);
                    }
                }
                for name in changed {
                    in_order.get_or_insert_with(|| {
                        self.outbox.order.lock().unwrap_or_else(|p| p.into_inner())
                    });
                    let seq = self.outbox.take();
                    if let Err(e) = apply(
                        &self.db,
                        &mut batch,
                        Outbox::NAME,
                        &seq.encode_key(),
                        Some(name.as_bytes()),
                    ) {
                        failure = Some(e);
                    }
                    outbox_added = true;
                }
                head = txn_head;
            }
            let result = match failure {
                Some(error) => Err(error),
                None if batch.is_empty() => Ok(()),
                None => {
                    // Entries written without the head that covers them would read as a
                    // broken chain: both or neither.
                    let head_staged = if head != start_head {
                        apply(
                            &self.db,
                            &mut batch,
                            Meta::NAME,
                            meta_keys::AUDIT_HEAD.as_bytes(),
                            Some(&head.to_bytes()),
                        )
                    } else {
                        Ok(())
                    };
                    head_staged.and_then(|()| self.db.write_opt(batch, &sync).map_err(db_error))
                }
            };
            drop(in_order);
            if result.is_ok() {
                *self.head.lock().unwrap_or_else(|p| p.into_inner()) = head;
                if outbox_added {
                    self.outbox.added.notify_one();
                }
            } else if let Err(error) = &result {
                tracing::error!(%error, "store write failed; nothing in this group was written");
            }
            for completion in completions {
                completion(result.as_ref().map(|_| ()));
            }
        }
    }
}

fn apply(
    db: &DB,
    batch: &mut WriteBatch,
    table: &'static str,
    key: &[u8],
    value: Option<&[u8]>,
) -> Result<(), StoreError> {
    let family = cf(db, table)?;
    match value {
        Some(value) => batch.put_cf(family, key, value),
        None => batch.delete_cf(family, key),
    }
    Ok(())
}

impl Reader for Txn<'_> {
    fn get<T: Table>(&self, key: &T::Key) -> Result<Option<T::Value>, StoreError> {
        Txn::get::<T>(self, key)
    }
}
