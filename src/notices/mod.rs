//! Notices to people and systems (`[notices]`): a webhook (JSON POST) and e-mail through an
//! SMTP relay when card requests wait for an approver (and still wait after N hours), cards
//! expire within 90/60/30 days, a scheduled revocation ran, an operator was withdrawn.
//!
//! Notices never sit in an RA action's path: a task of their own derives them from what the
//! store already holds (the audit log, read from a cursor that starts at the log's head the
//! first time; the pending requests; the expiry index), records each one in the `notices`
//! table under a key that makes it unique (a restart neither forgets one nor derives it twice),
//! then delivers it, each receiver on its own, with retries and backoff. Delivery is at least
//! once: a crash between a receiver's answer and its record sends again; each notice carries
//! its key as `id` (and as the e-mail's Message-ID) for receivers to drop repeats. A dead
//! receiver slows nothing but its own deliveries. Notices name requests, cards, holders and
//! operators by their ids, not by their names.

pub mod deliver;

use serde::{Deserialize, Serialize};

use crate::audit::AuditEvent;
use crate::config::NoticesConfig;
use crate::ra::cards::{CardRequests, RequestState};
use crate::store::schema::{Cards, Certificates, ExpiryIndex, Meta, Revocations};
use crate::store::{CertKey, ExpiryKey, IssuerId, KeyCodec, Reader, Store, StoreError};
use crate::x509::{Serial, Timestamp};

/// The `meta` key of the last audit entry read.
const CURSOR: &str = "notices-cursor";

/// Notices are kept this long after they were made, then forgotten (a card's 90-day window
/// never sees its notice twice).
const KEEP_SECONDS: u64 = 400 * 86_400;
/// A delivery still failing after this many attempts (about three days at the longest
/// backoff) is given up, and says so.
const MAX_ATTEMPTS: u32 = 80;

/// One notice and where its deliveries stand.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoticeRecord {
    /// `request-waiting`, `request-still-waiting`, `card-expiring`, `scheduled-revocation`,
    /// `operator-withdrawn`.
    pub kind: String,
    pub created_at: Timestamp,
    /// What the receivers get (JSON), and the e-mail's subject line.
    pub payload: serde_json::Value,
    pub subject: String,
    /// Per receiver (`webhook URL`, `email`): delivered or not, attempts, next try, last
    /// error.
    pub deliveries: Vec<Delivery>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub channel: String,
    pub delivered_at: Option<Timestamp>,
    pub attempts: u32,
    pub next_attempt: Timestamp,
    pub last_error: Option<String>,
}

crate::store::table!(
    /// Notices, by a key that makes each unique (`request-waiting:ID`, `card-expiring:CARD:90`...).
    Notices, "notices", String, NoticeRecord
);
crate::store::table!(
    /// The keys of the notices with a delivery still to make: what the task reads each second.
    NoticeOutbox, "notice_outbox", String, Vec<u8>
);
crate::store::json_value!(NoticeRecord);

impl NoticeRecord {
    fn new(
        kind: &str,
        subject: String,
        payload: serde_json::Value,
        config: &NoticesConfig,
        now: Timestamp,
    ) -> Self {
        // One delivery per receiver: a dead one delays no other.
        let mut deliveries: Vec<Delivery> = config
            .webhooks
            .iter()
            .map(|url| Delivery::new(&format!("webhook {url}"), now))
            .collect();
        if config.smtp_relay.is_some() {
            deliveries.push(Delivery::new("email", now));
        }
        let mut payload = payload;
        payload["kind"] = serde_json::Value::String(kind.to_owned());
        payload["at"] = serde_json::Value::String(now.to_string());
        NoticeRecord {
            kind: kind.to_owned(),
            created_at: now,
            payload,
            subject,
            deliveries,
        }
    }

    pub fn delivered(&self) -> bool {
        self.deliveries.iter().all(|d| d.delivered_at.is_some())
    }
}

impl Delivery {
    fn new(channel: &str, now: Timestamp) -> Self {
        Delivery {
            channel: channel.to_owned(),
            delivered_at: None,
            attempts: 0,
            next_attempt: now,
            last_error: None,
        }
    }
}

/// The notices the audit log calls for after the cursor, and the cursor's new place.
fn from_audit(
    store: &Store,
    config: &NoticesConfig,
    now: Timestamp,
) -> Result<Vec<(String, NoticeRecord)>, StoreError> {
    let (cursor, stored) = cursor(store)?;
    let mut found = Vec::new();
    let mut last = cursor;
    let from = (cursor + 1).encode_key();
    for entry in store.scan::<crate::store::schema::Audit>(&from, &[])? {
        let (seq, stored) = entry?;
        last = seq;
        let Ok((_, record)) = crate::audit::decode(&stored) else {
            continue;
        };
        let notice = match record.event {
            // Decided already by the time it is read (a restart after a long stop): no notice.
            AuditEvent::CardRequestSubmitted { ref request, .. }
                if store
                    .get::<CardRequests>(request)?
                    .is_none_or(|r| r.state != RequestState::Pending) =>
            {
                None
            }
            AuditEvent::CardRequestSubmitted {
                request,
                operator,
                holder,
                card,
                subject,
                renewal,
            } => Some((
                format!("request-waiting:{request}"),
                NoticeRecord::new(
                    "request-waiting",
                    format!("Card request {request} waits for an approver"),
                    serde_json::json!({
                        "request": request, "submitted_by": operator, "holder": holder,
                        "card": card, "units": units_of(&subject), "renewal": renewal,
                    }),
                    config,
                    now,
                ),
            )),
            AuditEvent::OperatorWithdrawn {
                operator,
                by,
                reason,
                ..
            } => Some((
                format!("operator-withdrawn:{operator}:{seq}"),
                NoticeRecord::new(
                    "operator-withdrawn",
                    format!("Operator {operator} was withdrawn by {by}"),
                    serde_json::json!({ "operator": operator, "by": by, "reason": reason.map(|r| r.chars().take(200).collect::<String>()) }),
                    config,
                    now,
                ),
            )),
            AuditEvent::ScheduledRevocationExecuted { id, .. } => Some((
                format!("scheduled-revocation:{id}"),
                NoticeRecord::new(
                    "scheduled-revocation",
                    format!("Scheduled revocation {id} was carried out"),
                    serde_json::json!({ "scheduled": id }),
                    config,
                    now,
                ),
            )),
            _ => None,
        };
        found.extend(notice);
    }
    // Kept from the first read on: the head it started from must not move with the log.
    if last != cursor || !stored {
        found.push((String::new(), cursor_marker(last, now)));
    }
    Ok(found)
}

/// A pseudo-notice carrying the cursor's new place (written by [`record`], not delivered).
fn cursor_marker(seq: u64, now: Timestamp) -> NoticeRecord {
    NoticeRecord {
        kind: "cursor".into(),
        created_at: now,
        payload: serde_json::json!(seq),
        subject: String::new(),
        deliveries: Vec::new(),
    }
}

/// The last audit entry read; the first time, the log's head (what happened before notices
/// were set up is not sent).
fn cursor(store: &Store) -> Result<(u64, bool), StoreError> {
    Ok(store
        .get::<Meta>(&CURSOR.to_owned())?
        .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_slice()).ok())
        .map_or_else(
            || (store.audit_head().seq, false),
            |b| (u64::from_be_bytes(b), true),
        ))
}

/// The OUs of a subject as sceau writes it (`C=FR, O=..., OU=A, GN=...`): where the holder
/// works, without their name.
fn units_of(subject: &str) -> Vec<&str> {
    subject
        .split(", ")
        .filter_map(|part| part.strip_prefix("OU="))
        .collect()
}

/// Requests pending for longer than `still_waiting_hours`.
fn still_waiting(
    store: &Store,
    config: &NoticesConfig,
    now: Timestamp,
) -> Result<Vec<(String, NoticeRecord)>, StoreError> {
    let mut found = Vec::new();
    let limit = config.still_waiting_hours.saturating_mul(3600);
    for row in store.scan::<CardRequests>(&[], &[])? {
        let (id, record) = row?;
        if record.state == RequestState::Pending
            && now
                .unix_seconds()
                .saturating_sub(record.submitted_at.unix_seconds())
                >= limit
        {
            found.push((
                format!("request-still-waiting:{id}"),
                NoticeRecord::new(
                    "request-still-waiting",
                    format!(
                        "Card request {id} still waits for an approver, since {}",
                        record.submitted_at
                    ),
                    serde_json::json!({
                        "request": id, "submitted_by": record.submitted_by,
                        "submitted_at": record.submitted_at, "holder": record.holder,
                        "units": units_of(&record.subject),
                    }),
                    config,
                    now,
                ),
            ));
        }
    }
    Ok(found)
}

/// Cards whose authentication certificate ends within one of `expiry_days` (the smallest
/// window it is in), not revoked.
fn expiring(
    store: &Store,
    config: &NoticesConfig,
    now: Timestamp,
) -> Result<Vec<(String, NoticeRecord)>, StoreError> {
    let Some(widest) = config.expiry_days.iter().max() else {
        return Ok(Vec::new());
    };
    let until = now.plus_seconds(u64::from(*widest) * 86_400);
    let from = ExpiryKey {
        not_after: now,
        certificate: CertKey {
            issuer: IssuerId([0; 20]),
            serial: Serial::from_magnitude(&[1]).map_err(|e| StoreError::Corrupt {
                table: "notices",
                detail: e.to_string(),
            })?,
        },
    }
    .encode_key();
    let mut found = Vec::new();
    for row in store.scan::<ExpiryIndex>(&from[..8], &[])? {
        let (key, ()) = row?;
        if key.not_after > until {
            break;
        }
        if store.contains::<Revocations>(&key.certificate)? {
            continue;
        }
        let Some(certificate) = store.get::<Certificates>(&key.certificate)? else {
            continue;
        };
        let Some(card_id) = certificate.card.clone() else {
            continue;
        };
        // One notice a card: for its authentication certificate.
        match store.get::<Cards>(&card_id)? {
            Some(card) if card.authentication == key.certificate => {}
            _ => continue,
        }
        let left_days = key
            .not_after
            .unix_seconds()
            .saturating_sub(now.unix_seconds())
            / 86_400;
        let Some(window) = config
            .expiry_days
            .iter()
            .filter(|d| u64::from(**d) > left_days)
            .min()
        else {
            continue;
        };
        found.push((
            format!("card-expiring:{card_id}:{window}"),
            NoticeRecord::new(
                "card-expiring",
                format!(
                    "Card {card_id} expires within {window} days ({})",
                    key.not_after
                ),
                serde_json::json!({
                    "card": card_id, "holder": certificate.holder, "not_after": key.not_after,
                    "within_days": window,
                }),
                config,
                now,
            ),
        ));
    }
    Ok(found)
}

/// Records the notices not recorded yet (and the audit cursor): one write. Returns how many
/// were new.
fn record(store: &Store, notices: Vec<(String, NoticeRecord)>) -> Result<usize, StoreError> {
    if notices.is_empty() {
        return Ok(0);
    }
    store.commit(move |txn| {
        let mut new = 0;
        for (key, notice) in notices {
            if notice.kind == "cursor" {
                let seq = notice.payload.as_u64().unwrap_or(0);
                txn.put::<Meta>(&CURSOR.to_owned(), &seq.to_be_bytes().to_vec())?;
                continue;
            }
            if txn.get::<Notices>(&key)?.is_none() {
                if !notice.delivered() {
                    txn.put::<NoticeOutbox>(&key, &Vec::new())?;
                }
                txn.put::<Notices>(&key, &notice)?;
                new += 1;
            }
        }
        Ok::<_, StoreError>(new)
    })
}

/// Derives and records what is due now: from the audit log every call, the scans when `scan`.
pub fn collect(
    store: &Store,
    config: &NoticesConfig,
    now: Timestamp,
    scan: bool,
) -> Result<usize, StoreError> {
    let mut notices = from_audit(store, config, now)?;
    if scan {
        notices.extend(still_waiting(store, config, now)?);
        notices.extend(expiring(store, config, now)?);
        forget_old(store, now)?;
    }
    record(store, notices)
}

/// The notices with a delivery due at `now` (from the outbox), at most `limit`.
pub fn due(
    store: &Store,
    now: Timestamp,
    limit: usize,
) -> Result<Vec<(String, NoticeRecord)>, StoreError> {
    let mut found = Vec::new();
    for row in store.scan::<NoticeOutbox>(&[], &[])? {
        let (key, _) = row?;
        let Some(notice) = store.get::<Notices>(&key)? else {
            continue;
        };
        if notice.deliveries.iter().any(|d| {
            d.delivered_at.is_none()
                && !d
                    .last_error
                    .as_deref()
                    .is_some_and(|e| e.starts_with(GIVEN_UP))
                && d.next_attempt <= now
        }) {
            found.push((key, notice));
            if found.len() == limit {
                break;
            }
        }
    }
    Ok(found)
}

/// What a delivery given up says.
pub const GIVEN_UP: &str = "given up";

/// Writes back a notice after delivery attempts; out of the outbox once nothing is left to
/// try.
pub fn update(store: &Store, key: String, notice: NoticeRecord) -> Result<(), StoreError> {
    store.commit(move |txn| {
        let finished = notice.deliveries.iter().all(|d| {
            d.delivered_at.is_some()
                || d.last_error
                    .as_deref()
                    .is_some_and(|e| e.starts_with(GIVEN_UP))
        });
        if finished {
            txn.delete::<NoticeOutbox>(&key);
        }
        txn.put::<Notices>(&key, &notice)
    })
}

/// Forgets notices made more than 400 days ago (with the scans).
pub fn forget_old(store: &Store, now: Timestamp) -> Result<usize, StoreError> {
    let mut old = Vec::new();
    for row in store.scan::<Notices>(&[], &[])? {
        let (key, notice) = row?;
        if now > notice.created_at.plus_seconds(KEEP_SECONDS) {
            old.push(key);
        }
    }
    let count = old.len();
    if count > 0 {
        store.commit(move |txn| {
            for key in &old {
                txn.delete::<Notices>(key);
                txn.delete::<NoticeOutbox>(key);
            }
            Ok::<_, StoreError>(())
        })?;
    }
    Ok(count)
}

/// Whether a delivery that keeps failing should be given up.
pub(crate) fn give_up(attempts: u32) -> bool {
    attempts >= MAX_ATTEMPTS
}
