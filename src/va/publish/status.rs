//! A certificate's status as the publisher puts it (in the status bucket, in a snapshot), and
//! the puts in flight.

use async_nats::jetstream;
use base64::Engine as _;
use bytes::Bytes;

use super::files::put_tail;
use super::{PresignedValue, PublisherMetrics, StatusValue, status_key, tail_id};
use crate::store::{CertKey, Store};
use crate::va::ValidationAuthority;
use crate::va::responses::{SignedResponse, Status};
use crate::va::snapshot::{PresignedRef, StatusRecord, StatusWord};
use std::sync::atomic::Ordering;

/// The `certs` tails this connection of the publisher has put in the files bucket: a status
/// goes out only after the tail its responses need.
#[derive(Default)]
pub(super) struct Tails(Vec<(Bytes, String)>);

impl Tails {
    /// The id of `tail`, and whether it still has to be put.
    pub(super) fn id(&mut self, tail: &Bytes) -> (String, bool) {
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

/// Entries put at once during a full publication (acknowledgements awaited together).
pub(super) const IN_FLIGHT: usize = 256;

/// Status puts sent and not yet acknowledged, at most one per certificate (two puts of one key
/// in flight could land in either order).
#[derive(Default)]
pub(super) struct InFlight {
    puts: tokio::task::JoinSet<Result<u64, String>>,
    keys: std::collections::HashSet<CertKey>,
}

impl InFlight {
    pub(super) fn len(&self) -> usize {
        self.puts.len()
    }

    pub(super) fn holds(&self, key: &CertKey) -> bool {
        self.keys.contains(key)
    }

    pub(super) fn put(&mut self, bucket: &jetstream::kv::Store, key: &CertKey, value: Vec<u8>) {
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
    pub(super) async fn settle(&mut self, metrics: &PublisherMetrics) -> Result<u64, String> {
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

/// A pre-signed response as the publisher puts it.
pub(super) struct PresignedNow {
    head: Bytes,
    this_update: u64,
    next_update: u64,
    tail: Option<String>,
}

/// A certificate's status as the CA holds it now, ready to be put in the status bucket
/// ([`Self::to_json`]) or written in a snapshot ([`Self::record`]).
pub(super) struct CurrentStatus {
    status: StatusWord,
    revoked_at: Option<u64>,
    reason: Option<u8>,
    invalidity_date: Option<u64>,
    /// SHA-1 and SHA-256 CertIDs.
    responses: [Option<PresignedNow>; 2],
}

impl CurrentStatus {
    /// The status bucket's value.
    pub(super) fn to_json(&self) -> Result<Vec<u8>, String> {
        let presigned = |response: &Option<PresignedNow>| {
            response.as_ref().map(|response| PresignedValue {
                der: base64::engine::general_purpose::STANDARD.encode(&response.head),
                this_update: response.this_update,
                next_update: response.next_update,
                tail: response.tail.clone(),
            })
        };
        let value = StatusValue {
            status: self.status.as_str().into(),
            revoked_at: self.revoked_at,
            reason: self.reason,
            invalidity_date: self.invalidity_date,
            sha1: presigned(&self.responses[0]),
            sha256: presigned(&self.responses[1]),
        };
        serde_json::to_vec(&value).map_err(|e| e.to_string())
    }

    /// The snapshot's record of the certificate whose status bucket key is `key`.
    pub(super) fn record<'a>(&'a self, key: &'a str) -> StatusRecord<'a> {
        let presigned = |response: &'a Option<PresignedNow>| {
            response.as_ref().map(|response| PresignedRef {
                der: &response.head,
                this_update: response.this_update,
                next_update: response.next_update,
                tail: response.tail.as_deref(),
            })
        };
        StatusRecord {
            key,
            status: self.status,
            revoked_at: self.revoked_at,
            reason: self.reason,
            invalidity_date: self.invalidity_date,
            responses: [presigned(&self.responses[0]), presigned(&self.responses[1])],
        }
    }
}

/// Whether [`current_status`] puts the tails its responses need, or only checks that the files
/// bucket holds them (the snapshot task: the outbox's publisher is the one writer of tails, so
/// that no tail is put twice, the second put purging the first under a node reading it).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum TailsBy {
    Putting,
    Checking,
}

/// A certificate's status as the responder holds it now (`None`: a certificate the responder
/// does not answer for), with the invalidity date the store recorded; the tails its responses
/// refer to are put in the files bucket first (or found there: [`TailsBy`]).
pub(super) async fn current_status(
    store: &Store,
    va: &ValidationAuthority,
    (files, tails_by): (&jetstream::object_store::ObjectStore, TailsBy),
    tails: &mut Tails,
    key: &CertKey,
) -> Result<Option<CurrentStatus>, String> {
    let Some(mut published) = va.responder.published(key) else {
        return Ok(None);
    };
    // The store is the truth: a revocation committed that the responder's memory does not
    // show yet (the outbox entry drained before the revocation was applied, or its re-signing
    // failed) goes out as "revoked", without responses (a node answers tryLater for it), never
    // as the "good" memory still holds.
    let recorded = store
        .get::<crate::store::schema::Revocations>(key)
        .map_err(|e| format!("revocation {}: {e}", key.serial))?;
    let (status, revoked_at, reason) = match (published.status, &recorded) {
        (Status::Revoked { at, reason }, _) => {
            (StatusWord::Revoked, Some(at.unix_seconds()), reason.code())
        }
        (_, Some(record)) => {
            published.sha1 = None;
            published.sha256 = None;
            (
                StatusWord::Revoked,
                Some(record.revoked_at.unix_seconds()),
                record.reason.code(),
            )
        }
        (Status::Good, None) => (StatusWord::Good, None, None),
        (Status::Unknown, None) => (StatusWord::Unknown, None, None),
    };
    let invalidity_date = recorded
        .and_then(|record| record.invalidity_date)
        .map(|date| date.unix_seconds());
    let mut presigned = async |response: Option<SignedResponse>| {
        let Some(response) = response else {
            return Ok::<_, String>(None);
        };
        let tail = if response.tail.is_empty() {
            None
        } else {
            let (id, new) = tails.id(&response.tail);
            match (new, tails_by) {
                (false, _) => {}
                (true, TailsBy::Putting) => put_tail(files, &id, &response.tail).await?,
                (true, TailsBy::Checking) => {
                    let held = files.info(&format!("tail/{id}")).await;
                    if !held.is_ok_and(|info| !info.deleted) {
                        return Err(format!("tail/{id} is not published yet"));
                    }
                }
            }
            Some(id)
        };
        Ok(Some(PresignedNow {
            head: response.head,
            this_update: response.this_update.unix_seconds(),
            next_update: response.next_update.unix_seconds(),
            tail,
        }))
    };
    Ok(Some(CurrentStatus {
        status,
        revoked_at,
        reason,
        invalidity_date,
        responses: [
            presigned(published.sha1).await?,
            presigned(published.sha256).await?,
        ],
    }))
}

/// The bucket's value of a certificate as the responder holds it now (see
/// [`current_status`]).
pub(super) async fn status_value_of(
    store: &Store,
    va: &ValidationAuthority,
    files: &jetstream::object_store::ObjectStore,
    tails: &mut Tails,
    key: &CertKey,
) -> Result<Option<Vec<u8>>, String> {
    current_status(store, va, (files, TailsBy::Putting), tails, key)
        .await?
        .map(|current| current.to_json())
        .transpose()
}
