//! The audit log: every state change appends one or more [`AuditEvent`]s, in the same RocksDB
//! write batch as the change itself (DESIGN.md invariant 2).
//!
//! Entries form a hash chain. Entry `n` is stored as `hash(n) || body(n)`, where `body(n)` is the
//! JSON of `{seq, time, prev, event}` with `prev = hex(hash(n-1))`, and
//! `hash(n) = SHA-256(hash(n-1) || body(n))` (the first entry chains from 32 zero octets).
//! Hashing the stored bytes, rather than a re-serialisation, makes verification independent of
//! how JSON is written; storing each entry's own hash lets [`verify_chain`] name the first entry
//! that was altered, not the one after it.
use serde::{Deserialize, Serialize};

use crate::x509::Timestamp;
use crate::x509::keys::sha256;

/// What happened. Events are data, never format strings; each names what it acted on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuditEvent {
    /// A key pair was generated in the HSM.
    KeyGenerated {
        label: String,
        algorithm: String,
        key_id: String,
    },
    /// A CA or OCSP responder certificate was signed and stored.
    CaCertificateStored {
        name: String,
        role: String,
        serial: String,
        subject: String,
        key_label: String,
        sha256: String,
    },
    /// The key ceremony finished.
    CaInitialized {
        root: Option<String>,
        issuing: String,
        external_root: bool,
    },
    /// A CSR for the issuing CA was written, for a root kept elsewhere.
    ExternalRootRequestCreated { key_label: String, subject: String },
    /// Before the HSM signs: the exact TBS that will be signed (hex DER).
    IssuanceIntent {
        issuer: String,
        serial: String,
        policy: String,
        holder: Option<String>,
        card: Option<String>,
        tbs: String,
    },
    /// After the HSM signed: the certificate (hex DER).
    CertificateIssued {
        issuer: String,
        serial: String,
        policy: String,
        holder: Option<String>,
        card: Option<String>,
        not_after: Timestamp,
        certificate: String,
    },
    /// Both certificates of a card were stored.
    CardIssued {
        card: String,
        holder: String,
        authentication: String,
        signature: String,
    },
    /// A recorded intent had no stored certificate at start-up (or its issuance failed after
    /// the HSM was asked to sign): the serial is revoked so that no unknown certificate can be
    /// valid (DESIGN.md invariant 1).
    IntentRevoked {
        issuer: String,
        serial: String,
        why: String,
    },
    /// A CRL was signed; its number is committed before the file is published.
    CrlPublished {
        name: String,
        number: u64,
        this_update: Timestamp,
        next_update: Timestamp,
        entries: u64,
        sha256: String,
    },
    /// A certificate was revoked.
    CertificateRevoked {
        issuer: String,
        serial: String,
        reason: Option<String>,
        invalidity_date: Option<Timestamp>,
        requested_by: String,
    },
}

/// One stored entry, as written and as exported (with its hash).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: u64,
    pub time: Timestamp,
    /// Hex SHA-256 of the previous entry.
    pub prev: String,
    #[serde(flatten)]
    pub event: AuditEvent,
}

/// The end of the chain: the last sequence number and its hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainHead {
    pub seq: u64,
    pub hash: [u8; 32],
}

impl ChainHead {
    /// The head of an empty log.
    pub const GENESIS: ChainHead = ChainHead {
        seq: 0,
        hash: [0; 32],
    };

    pub fn to_bytes(self) -> [u8; 40] {
        let mut out = [0u8; 40];
        out[..8].copy_from_slice(&self.seq.to_be_bytes());
        out[8..].copy_from_slice(&self.hash);
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let seq = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
        let hash = bytes.get(8..40)?.try_into().ok()?;
        (bytes.len() == 40).then_some(ChainHead { seq, hash })
    }
}

/// Appends `event` after `head`: returns the stored bytes of the new entry and the new head.
pub fn append(
    head: ChainHead,
    time: Timestamp,
    event: AuditEvent,
) -> Result<(Vec<u8>, ChainHead), serde_json::Error> {
    let record = AuditRecord {
        seq: head.seq + 1,
        time,
        prev: hex::encode(head.hash),
        event,
    };
    let body = serde_json::to_vec(&record)?;
    let hash = chain_hash(&head.hash, &body);
    let mut stored = Vec::with_capacity(32 + body.len());
    stored.extend_from_slice(&hash);
    stored.extend_from_slice(&body);
    Ok((
        stored,
        ChainHead {
            seq: record.seq,
            hash,
        },
    ))
}

fn chain_hash(prev: &[u8; 32], body: &[u8]) -> [u8; 32] {
    let mut input = Vec::with_capacity(32 + body.len());
    input.extend_from_slice(prev);
    input.extend_from_slice(body);
    sha256(&input)
}

/// Splits a stored entry into its hash and its parsed record.
pub fn decode(stored: &[u8]) -> Result<([u8; 32], AuditRecord), String> {
    let (hash, body) = stored
        .split_at_checked(32)
        .ok_or_else(|| "entry shorter than its hash".to_owned())?;
    let record: AuditRecord =
        serde_json::from_slice(body).map_err(|e| format!("entry does not parse: {e}"))?;
    let mut fixed = [0u8; 32];
    fixed.copy_from_slice(hash);
    Ok((fixed, record))
}

/// The first entry that breaks the chain, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit entry {seq} is bad: {why}")]
pub struct ChainBreak {
    pub seq: u64,
    pub why: String,
}

/// Checks a whole log, given as (key sequence number, stored bytes) in key order, against the
/// head recorded beside it. Returns the number of entries checked.
pub fn verify_chain<I>(entries: I, recorded_head: ChainHead) -> Result<u64, ChainBreak>
where
    I: IntoIterator<Item = (u64, Vec<u8>)>,
{
    let mut head = ChainHead::GENESIS;
    for (key_seq, stored) in entries {
        let expected = head.seq + 1;
        let bad = |why: String| ChainBreak { seq: key_seq, why };
        if key_seq != expected {
            return Err(ChainBreak {
                seq: expected,
                why: format!("missing (next stored entry is {key_seq})"),
            });
        }
        let (stored_hash, record) = decode(&stored).map_err(bad)?;
        let body = &stored[32..];
        let computed = chain_hash(&head.hash, body);
        if computed != stored_hash {
            return Err(bad("its content does not match its hash".into()));
        }
        if record.seq != key_seq {
            return Err(bad(format!("it says it is entry {}", record.seq)));
        }
        if record.prev != hex::encode(head.hash) {
            return Err(bad("it does not chain to the entry before it".into()));
        }
        head = ChainHead {
            seq: key_seq,
            hash: computed,
        };
    }
    if head != recorded_head {
        return Err(ChainBreak {
            seq: head.seq + 1,
            why: format!(
                "the recorded head is entry {} but the log ends at entry {}",
                recorded_head.seq, head.seq
            ),
        });
    }
    Ok(head.seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u64) -> AuditEvent {
        AuditEvent::IntentRevoked {
            issuer: "ac".into(),
            serial: format!("{n:X}"),
            why: "test".into(),
        }
    }

    fn log(n: u64) -> (Vec<(u64, Vec<u8>)>, ChainHead) {
        let mut head = ChainHead::GENESIS;
        let mut entries = Vec::new();
        for i in 1..=n {
            let (stored, next) = append(head, Timestamp::from_unix_seconds(i), event(i)).unwrap();
            entries.push((i, stored));
            head = next;
        }
        (entries, head)
    }

    #[test]
    fn an_intact_chain_verifies() {
        let (entries, head) = log(5);
        assert_eq!(verify_chain(entries, head), Ok(5));
    }

    #[test]
    fn one_changed_byte_names_its_entry() {
        let (mut entries, head) = log(5);
        let last = entries[2].1.len() - 3;
        entries[2].1[last] ^= 0x01;
        let err = verify_chain(entries, head).unwrap_err();
        assert_eq!(err.seq, 3, "{err}");
    }

    #[test]
    fn a_deleted_or_truncated_log_is_detected() {
        let (mut entries, head) = log(5);
        entries.remove(1);
        assert_eq!(verify_chain(entries, head).unwrap_err().seq, 2);
        let (mut entries, head) = log(5);
        entries.pop();
        assert_eq!(verify_chain(entries, head).unwrap_err().seq, 5);
    }
}
