//! Storage: RocksDB, and the only module that touches it.
//!
//! Reads go straight to the database from any thread. Writes go through one writer thread:
//! a caller hands it a transaction (a closure that reads and stages writes through a [`Txn`]),
//! the writer runs the transactions waiting in its queue one after the other, chains their audit
//! events, and writes them all in a single synced write batch (group commit). Each
//! transaction's writes and audit events therefore land together or not at all (invariant 2,
//! docs/invariants.md), later transactions in a group see the writes of earlier ones, and one fsync
//! serves many transactions. A transaction that returns an error stages nothing.

mod chain;
mod records;
pub mod schema;
mod txn;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crossbeam_channel::Sender;
use rocksdb::{ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteBatch};

pub use records::{CardRecord, CertRecord, IntentRecord, RevocationRecord, base64_bytes};
pub use schema::{
    CertKey, Digest, ExpiryKey, HolderKey, IssuerId, KeyCodec, ResponseKey, Table, ValueCodec,
};
pub(crate) use schema::{json_value, table};

pub use chain::{ChainEntry, ChainHead};
pub use txn::Txn;
use txn::Writer;

use schema::{Audit, Meta, Outbox, meta_keys};

/// One decoded row of a scan.
pub type Entry<T> = Result<(<T as Table>::Key, <T as Table>::Value), StoreError>;

/// What went wrong in the store. Cloneable, because one failed group write fails every
/// transaction in it.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("the store at {} is locked by another process (is `sceau serve` running? stop it, or use its admin API)", path.display())]
    Locked { path: PathBuf },
    #[error("RocksDB: {0}")]
    Database(String),
    #[error("table {table}: {detail}")]
    Corrupt { table: &'static str, detail: String },
    #[error("the store was written by a newer sceau (schema {found}, this one knows {known})")]
    NewerSchema { found: u32, known: u32 },
    #[error("the store's writer thread has stopped")]
    WriterStopped,
}

/// A handle on the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<DB>,
    path: PathBuf,
    jobs: Option<Sender<TxnJob>>,
    writer: Option<std::thread::JoinHandle<()>>,
    head: Arc<Mutex<ChainHead>>,
    outbox: Arc<OutboxCounter>,
}

/// The outbox name of a certificate's status.
pub fn status_change(key: &CertKey) -> String {
    format!("status.{}.{}", key.issuer.to_hex(), key.serial.to_hex())
}

/// The outbox name of CRL number `number` of the CA or root `name`.
pub fn crl_change(name: &str, number: u64) -> String {
    format!("crl.{name}.{number}")
}

/// The outbox name of a change of the CA certificates (a ceremony, a rollover).
pub const CA_CHANGE: &str = "ca";

/// The outbox's next sequence number, and a signal raised when entries are added.
#[derive(Debug, Default)]
pub struct OutboxCounter {
    next: std::sync::atomic::AtomicU64,
    /// Held from taking a sequence number until the write that holds it is done, so that
    /// entries become visible in sequence order (the publisher reads on from the last entry
    /// it saw and would never see one written late below it).
    order: Mutex<()>,
    /// Raised after each write that added outbox entries (the publisher waits on it).
    pub added: tokio::sync::Notify,
}

impl OutboxCounter {
    fn starting_after(db: &DB) -> Result<Self, StoreError> {
        let mut iter = db.raw_iterator_cf(cf(db, Outbox::NAME)?);
        iter.seek_to_last();
        let last = iter.key().and_then(u64::decode_key).unwrap_or(0);
        Ok(Self {
            next: std::sync::atomic::AtomicU64::new(last + 1),
            order: Mutex::new(()),
            added: tokio::sync::Notify::new(),
        })
    }

    fn take(&self) -> u64 {
        self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for Inner {
    /// Stops the writer after it has written what it was given, so that the database is closed
    /// (and its lock released) when the last handle goes.
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl core::fmt::Debug for Store {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .finish()
    }
}

type Completion = Box<dyn FnOnce(Result<(), &StoreError>) + Send>;
type TxnJob = Box<dyn FnOnce(&mut Txn<'_>) -> (bool, Completion) + Send>;

impl Store {
    /// Opens (creating if needed) the store in `dir`.
    /// Opens the store in `dir`, which must exist: the daemon never creates one (a start on a
    /// lost data directory must not leave an empty store where a restore will go).
    pub fn open_existing(dir: &Path) -> Result<Self, StoreError> {
        if !dir.join("CURRENT").is_file() {
            return Err(StoreError::Database(format!(
                "{}: no store here",
                dir.display()
            )));
        }
        Self::open(dir)
    }

    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Database(format!("creating {}: {e}", dir.display())))?;
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.increase_parallelism(2);
        options.set_keep_log_file_num(10);
        let families = schema::ALL_TABLES
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
        let db = DB::open_cf_descriptors(&options, dir, families).map_err(|e| {
            let text = e.to_string();
            if text.contains("lock") {
                StoreError::Locked {
                    path: dir.to_path_buf(),
                }
            } else {
                StoreError::Database(text)
            }
        })?;
        let db = Arc::new(db);
        let version = match db
            .get_cf(cf(&db, Meta::NAME)?, meta_keys::SCHEMA_VERSION)
            .map_err(db_error)?
        {
            Some(bytes) => {
                let found = u32::from_be_bytes(bytes.as_slice().try_into().map_err(|_| {
                    StoreError::Corrupt {
                        table: Meta::NAME,
                        detail: "schema version".into(),
                    }
                })?);
                if found > schema::SCHEMA_VERSION {
                    return Err(StoreError::NewerSchema {
                        found,
                        known: schema::SCHEMA_VERSION,
                    });
                }
                found
            }
            None => {
                db.put_cf(
                    cf(&db, Meta::NAME)?,
                    meta_keys::SCHEMA_VERSION,
                    schema::SCHEMA_VERSION.to_be_bytes(),
                )
                .map_err(db_error)?;
                schema::SCHEMA_VERSION
            }
        };
        tracing::debug!(path = %dir.display(), version, "store opened");
        let head = recorded_head(&db)?;
        let head = Arc::new(Mutex::new(head));
        let outbox = Arc::new(OutboxCounter::starting_after(&db)?);
        let (jobs, queue) = crossbeam_channel::bounded::<TxnJob>(4096);
        let writer = Writer {
            db: db.clone(),
            head: head.clone(),
            outbox: outbox.clone(),
        };
        let writer = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run(queue))
            .map_err(|e| StoreError::Database(format!("cannot start the writer thread: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                path: dir.to_path_buf(),
                jobs: Some(jobs),
                writer: Some(writer),
                head,
                outbox,
            }),
        })
    }

    /// Opens the store in `dir` for reading only, beside the process that holds it (`sceau
    /// serve`): a RocksDB secondary instance, caught up with the primary once, whose private
    /// files live in `scratch` (a fresh directory the caller removes). It sees every write the
    /// primary made durable before this call; it cannot commit (no writer).
    pub fn open_reader(dir: &Path, scratch: &Path) -> Result<Self, StoreError> {
        let mut options = Options::default();
        // A secondary instance keeps every file open (RocksDB requires it).
        options.set_max_open_files(-1);
        let db = DB::open_cf_as_secondary(&options, dir, scratch, schema::ALL_TABLES.iter())
            .map_err(db_error)?;
        db.try_catch_up_with_primary().map_err(db_error)?;
        Self::without_writer(db, dir)
    }

    /// A store that reads `db` and cannot commit.
    fn without_writer(db: DB, dir: &Path) -> Result<Self, StoreError> {
        let head = recorded_head(&db)?;
        let outbox = Arc::new(OutboxCounter::starting_after(&db)?);
        Ok(Self {
            inner: Arc::new(Inner {
                db: Arc::new(db),
                path: dir.to_path_buf(),
                jobs: None,
                writer: None,
                head: Arc::new(Mutex::new(head)),
                outbox,
            }),
        })
    }

    /// Opens a copy of a store (a backup's) for reading only: nothing in `dir` is written but
    /// RocksDB's info log, so that the copy's digests stay as they were.
    pub fn open_read_only(dir: &Path) -> Result<Self, StoreError> {
        let mut options = Options::default();
        options.set_keep_log_file_num(1);
        let db = DB::open_cf_for_read_only(&options, dir, schema::ALL_TABLES.iter(), false)
            .map_err(db_error)?;
        Self::without_writer(db, dir)
    }

    /// A consistent copy of the whole store, as of now, in `dir` (which must not exist):
    /// RocksDB's checkpoint (hard links where `dir` is on the same file system, copies
    /// otherwise), taken while the store keeps serving.
    pub fn checkpoint(&self, dir: &Path) -> Result<(), StoreError> {
        let checkpoint = rocksdb::checkpoint::Checkpoint::new(&self.inner.db).map_err(db_error)?;
        checkpoint.create_checkpoint(dir).map_err(db_error)
    }

    /// The schema version the store was written with.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        let db = &self.inner.db;
        match db
            .get_cf(cf(db, Meta::NAME)?, meta_keys::SCHEMA_VERSION)
            .map_err(db_error)?
        {
            Some(bytes) => Ok(u32::from_be_bytes(bytes.as_slice().try_into().map_err(
                |_| StoreError::Corrupt {
                    table: Meta::NAME,
                    detail: "schema version".into(),
                },
            )?)),
            None => Ok(0),
        }
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Reads one value.
    pub fn get<T: Table>(&self, key: &T::Key) -> Result<Option<T::Value>, StoreError> {
        let db = &self.inner.db;
        let bytes = db
            .get_pinned_cf(cf(db, T::NAME)?, key.encode_key())
            .map_err(db_error)?;
        decode_row::<T>(bytes.as_deref())
    }

    /// Scans a table from the first key at or after `from`, in key order, while keys start
    /// with `prefix`.
    pub fn scan<T: Table>(
        &self,
        from: &[u8],
        prefix: &[u8],
    ) -> Result<impl Iterator<Item = Entry<T>> + '_, StoreError> {
        let db = &self.inner.db;
        let prefix = prefix.to_vec();
        let iter = db.iterator_cf(
            cf(db, T::NAME)?,
            IteratorMode::From(from, Direction::Forward),
        );
        Ok(iter
            .take_while(move |item| match item {
                Ok((key, _)) => key.starts_with(&prefix),
                Err(_) => true,
            })
            .map(|item| {
                let (key, value) = item.map_err(db_error)?;
                let key = T::Key::decode_key(&key).ok_or(StoreError::Corrupt {
                    table: T::NAME,
                    detail: format!("undecodable key {}", hex::encode(&key)),
                })?;
                let value =
                    T::Value::decode_value(&value).map_err(|detail| StoreError::Corrupt {
                        table: T::NAME,
                        detail,
                    })?;
                Ok((key, value))
            }))
    }

    /// Counts the keys of a table that start with `prefix`, without decoding them.
    pub fn count<T: Table>(&self, prefix: &[u8]) -> Result<u64, StoreError> {
        let db = &self.inner.db;
        let mut iter = db.raw_iterator_cf(cf(db, T::NAME)?);
        iter.seek(prefix);
        let mut count = 0;
        while iter.valid() && iter.key().is_some_and(|key| key.starts_with(prefix)) {
            count += 1;
            iter.next();
        }
        iter.status().map_err(db_error)?;
        Ok(count)
    }

    /// Runs a transaction on the writer thread and waits until it is durable.
    pub fn commit<R, E, F>(&self, f: F) -> Result<R, E>
    where
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&mut Txn<'_>) -> Result<R, E> + Send + 'static,
    {
        let (reply, result) = crossbeam_channel::bounded(1);
        self.submit(f, move |outcome| {
            let _ = reply.send(outcome);
        })?;
        result
            .recv()
            .map_err(|_| E::from(StoreError::WriterStopped))?
    }

    /// [`Store::commit`] for async callers.
    pub async fn commit_async<R, E, F>(&self, f: F) -> Result<R, E>
    where
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&mut Txn<'_>) -> Result<R, E> + Send + 'static,
    {
        let (reply, result) = tokio::sync::oneshot::channel();
        self.submit(f, move |outcome| {
            let _ = reply.send(outcome);
        })?;
        result
            .await
            .map_err(|_| E::from(StoreError::WriterStopped))?
    }

    fn submit<R, E, F>(
        &self,
        f: F,
        deliver: impl FnOnce(Result<R, E>) + Send + 'static,
    ) -> Result<(), StoreError>
    where
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&mut Txn<'_>) -> Result<R, E> + Send + 'static,
    {
        let job: TxnJob = Box::new(move |txn| {
            let result = f(txn);
            let keep = result.is_ok();
            let completion: Completion = Box::new(move |written| {
                let outcome = match (result, written) {
                    (Ok(value), Ok(())) => Ok(value),
                    (Ok(_), Err(error)) => Err(E::from(error.clone())),
                    (Err(error), _) => Err(error),
                };
                deliver(outcome);
            });
            (keep, completion)
        });
        match &self.inner.jobs {
            Some(jobs) => jobs.send(job).map_err(|_| StoreError::WriterStopped),
            None => Err(StoreError::WriterStopped),
        }
    }

    /// Writes rows of derived data (pre-signed OCSP responses) directly, outside the writer:
    /// no audit event, no fsync. Losing them in a crash only means signing them again.
    pub fn write_derived<T: Table>(
        &self,
        rows: &[(T::Key, Option<T::Value>)],
    ) -> Result<(), StoreError> {
        self.write_derived_marked::<T>(rows, &[])
    }

    /// [`Store::write_derived`], with outbox entries for `changed` in the same batch (derived
    /// data that responder nodes must learn, e.g. re-signed OCSP responses).
    pub fn write_derived_marked<T: Table>(
        &self,
        rows: &[(T::Key, Option<T::Value>)],
        changed: &[String],
    ) -> Result<(), StoreError> {
        let db = &self.inner.db;
        let family = cf(db, T::NAME)?;
        let mut batch = WriteBatch::default();
        for (key, value) in rows {
            match value {
                Some(value) => {
                    let bytes = value.encode_value().map_err(|detail| StoreError::Corrupt {
                        table: T::NAME,
                        detail,
                    })?;
                    batch.put_cf(family, key.encode_key(), bytes);
                }
                None => batch.delete_cf(family, key.encode_key()),
            }
        }
        let outbox = cf(db, Outbox::NAME)?;
        let _in_order = self
            .inner
            .outbox
            .order
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for name in changed {
            batch.put_cf(
                outbox,
                self.inner.outbox.take().encode_key(),
                name.as_bytes(),
            );
        }
        db.write(batch).map_err(db_error)?;
        if !changed.is_empty() {
            self.inner.outbox.added.notify_one();
        }
        Ok(())
    }

    /// The outbox's counter and signal.
    pub fn outbox(&self) -> &OutboxCounter {
        &self.inner.outbox
    }

    /// The last audit entry written.
    pub fn audit_head(&self) -> ChainHead {
        *self.inner.head.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The audit log and its recorded head as of one instant, for `read` (a commit landing
    /// meanwhile is in neither). Reading the head, then the log, would find entries the head
    /// does not cover yet: a chain that looks broken.
    pub fn read_audit_log<R>(
        &self,
        read: impl FnOnce(ChainHead, &mut dyn Iterator<Item = (u64, Vec<u8>)>) -> R,
    ) -> Result<R, StoreError> {
        let db = &self.inner.db;
        let snapshot = db.snapshot();
        let head = decode_head(
            snapshot
                .get_cf(cf(db, Meta::NAME)?, meta_keys::AUDIT_HEAD)
                .map_err(db_error)?,
        )?;
        // A read error or an undecodable key ends the entries: the head then does not match,
        // and the reader says the chain is broken there.
        let mut entries = snapshot
            .iterator_cf(cf(db, Audit::NAME)?, IteratorMode::Start)
            .map_while(Result::ok)
            .map_while(|(key, value)| Some((u64::decode_key(&key)?, value.into_vec())));
        Ok(read(head, &mut entries))
    }

    /// Every audit entry, in order, as stored.
    pub fn audit_entries(
        &self,
    ) -> Result<impl Iterator<Item = Result<(u64, Vec<u8>), StoreError>> + '_, StoreError> {
        self.scan::<Audit>(&[], &[])
    }
}

/// Point reads, from the database ([`Store`]) or within a transaction ([`Txn`]), so that a
/// check can run as a dry run before a write and again inside it.
pub trait Reader {
    fn get<T: Table>(&self, key: &T::Key) -> Result<Option<T::Value>, StoreError>;

    fn contains<T: Table>(&self, key: &T::Key) -> Result<bool, StoreError> {
        Ok(self.get::<T>(key)?.is_some())
    }
}

impl Reader for Store {
    fn get<T: Table>(&self, key: &T::Key) -> Result<Option<T::Value>, StoreError> {
        Store::get::<T>(self, key)
    }
}

/// The audit chain's head as the database records it.
fn recorded_head(db: &DB) -> Result<ChainHead, StoreError> {
    decode_head(
        db.get_cf(cf(db, Meta::NAME)?, meta_keys::AUDIT_HEAD)
            .map_err(db_error)?,
    )
}

/// The audit head from its stored bytes (none: the chain's start).
fn decode_head(bytes: Option<Vec<u8>>) -> Result<ChainHead, StoreError> {
    match bytes {
        Some(bytes) => ChainHead::from_bytes(&bytes).ok_or(StoreError::Corrupt {
            table: Meta::NAME,
            detail: "audit head".into(),
        }),
        None => Ok(ChainHead::GENESIS),
    }
}

/// A row's value as stored (none: no row), decoded.
fn decode_row<T: Table>(bytes: Option<&[u8]>) -> Result<Option<T::Value>, StoreError> {
    bytes
        .map(|bytes| {
            T::Value::decode_value(bytes).map_err(|detail| StoreError::Corrupt {
                table: T::NAME,
                detail,
            })
        })
        .transpose()
}

fn cf<'a>(db: &'a DB, name: &'static str) -> Result<&'a rocksdb::ColumnFamily, StoreError> {
    db.cf_handle(name).ok_or(StoreError::Corrupt {
        table: name,
        detail: "column family missing".into(),
    })
}

fn db_error(error: rocksdb::Error) -> StoreError {
    StoreError::Database(error.to_string())
}

#[cfg(test)]
mod tests {
    // That a transaction's writes and its audit events land together is tested with the
    // events themselves, in `audit` (a floor above).
    use super::schema::Serials;
    use super::*;
    use crate::x509::Serial;

    #[derive(Debug, thiserror::Error)]
    enum TestError {
        #[error("store: {0}")]
        Store(#[from] StoreError),
    }

    #[test]
    fn concurrent_transactions_see_each_other_in_a_group() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let serial = Serial::from_hex("0A").unwrap();
        let mut handles = Vec::new();
        for i in 0..8u8 {
            let store = store.clone();
            let serial = serial.clone();
            handles.push(std::thread::spawn(move || {
                store.commit(move |txn| -> Result<bool, TestError> {
                    if txn.contains::<Serials>(&serial)? {
                        return Ok(false);
                    }
                    txn.put::<Serials>(&serial, &IssuerId([i; 20]))?;
                    Ok(true)
                })
            }));
        }
        let winners = handles
            .into_iter()
            .map(|h| h.join().unwrap().unwrap())
            .filter(|won| *won)
            .count();
        assert_eq!(winners, 1, "exactly one transaction may reserve the serial");
    }

    /// The publisher reads the outbox on from the last entry it saw: an entry must never
    /// appear below one already visible (commits and derived writes take sequence numbers on
    /// different threads).
    #[test]
    fn outbox_entries_become_visible_in_sequence_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        const EACH: usize = 2000;
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for i in 0..EACH {
                        let name = format!("w{w}.{i}");
                        if w % 2 == 0 {
                            store
                                .commit(move |txn| -> Result<(), TestError> {
                                    txn.changed(name);
                                    Ok(())
                                })
                                .unwrap();
                        } else {
                            store.write_derived_marked::<Meta>(&[], &[name]).unwrap();
                        }
                    }
                })
            })
            .collect();
        // A reader that resumes after the last sequence seen, as the publisher does.
        let mut seen = std::collections::BTreeSet::new();
        let mut resume_at = 0u64;
        let mut skipped_below = Vec::new();
        loop {
            let done = writers.iter().all(|w| w.is_finished());
            for row in store.scan::<Outbox>(&resume_at.to_be_bytes(), &[]).unwrap() {
                let (seq, _) = row.unwrap();
                seen.insert(seq);
                resume_at = seq + 1;
            }
            if done {
                break;
            }
        }
        for writer in writers {
            writer.join().unwrap();
        }
        for row in store.scan::<Outbox>(&[], &[]).unwrap() {
            let (seq, _) = row.unwrap();
            if !seen.contains(&seq) {
                skipped_below.push(seq);
            }
        }
        assert_eq!(seen.len(), 4 * EACH);
        assert!(
            skipped_below.is_empty(),
            "entries written below the reader: {skipped_below:?}"
        );
    }
}
