//! The auditor's bundle: the audit log over a period, checkable offline (no store, no HSM)
//! against the audit key's public key the auditor holds (`certs/audit-key.pem`, published with
//! the CA certificates).
//!
//! The bundle is the stored entries themselves, from a signed checkpoint at or before the
//! period's start (or the log's first entry) to the signed checkpoint that follows the
//! export's own record (`audit_bundle_exported`, naming the period). The HSM's checkpoint
//! signatures at both ends, and the hash chain between them, are what make it a signed whole:
//! a byte changed breaks an entry's hash, an entry removed breaks the chain, a start cut off
//! loses its checkpoint, an end cut off or a period edited loses the export's record (which the
//! closing checkpoint vouches for), a checkpoint re-signed by another key does not verify with
//! the anchor.

use base64::Engine;
use serde::{Deserialize, Serialize};
use spki::SubjectPublicKeyInfoOwned;

use super::{AuditEvent, AuditRecord, ChainHead, decode, verify_chain_from};
use crate::x509::Timestamp;

/// The bundle format's name, in every bundle.
pub const FORMAT: &str = "sceau-audit-bundle/1";

/// A bundle as written to its file (JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    pub format: String,
    pub from: Timestamp,
    pub to: Timestamp,
    pub exported_at: Timestamp,
    /// The audit key's public key as the store records it (PEM), for information: the
    /// verification uses the auditor's own copy.
    pub audit_key: String,
    /// The sequence number of the first entry.
    pub first: u64,
    /// The stored entries (their chain hash, then their JSON), base64, in order.
    pub entries: Vec<String>,
}

/// What is wrong with a bundle, named for the auditor.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BundleError {
    #[error("not an audit bundle: {0}")]
    Format(String),
    #[error("the bundle's audit key is not the anchor: it was signed, if at all, by another key")]
    OtherKey,
    #[error("audit entry {seq}: {why}")]
    Entry { seq: u64, why: String },
    #[error("the bundle does not cover its period: {0}")]
    Coverage(String),
}

/// What a verified bundle holds.
#[derive(Debug)]
pub struct VerifiedBundle {
    pub from: Timestamp,
    pub to: Timestamp,
    /// The entries whose time is within the period, checked.
    pub records: Vec<AuditRecord>,
    /// Entries in the bundle, checkpoints verified.
    pub entries: u64,
    pub checkpoints: u64,
}

/// Makes a bundle from `entries` (sequence number and stored bytes, in order, as the store
/// keeps them): the part from the last checkpoint at or before `from` to the first checkpoint
/// that follows the export's record of this period and vouches for the entry just before it.
/// `None` when there is no such record or checkpoint yet (record the export, sign one, then
/// try again).
pub fn build(
    entries: &[(u64, Vec<u8>)],
    (from, to): (Timestamp, Timestamp),
    audit_key_pem: String,
    now: Timestamp,
) -> Result<Option<Bundle>, BundleError> {
    let mut start = 0;
    let mut marked = false;
    let mut end = None;
    for (index, (seq, stored)) in entries.iter().enumerate() {
        let (_, record) = decode(stored).map_err(|why| BundleError::Entry { seq: *seq, why })?;
        match record.event {
            AuditEvent::AuditBundleExported { from: f, to: t } if f == from && t == to => {
                marked = true;
            }
            // Each vouches for the entry just before it, to which it chains.
            AuditEvent::Checkpoint { entry, .. } if entry.checked_add(1) == Some(*seq) => {
                if marked {
                    end = Some(index);
                    break;
                }
                if record.time <= from {
                    start = index;
                }
            }
            _ => {}
        }
    }
    let Some(end) = end else {
        return Ok(None);
    };
    let part = &entries[start..=end];
    Ok(Some(Bundle {
        format: FORMAT.into(),
        from,
        to,
        exported_at: now,
        audit_key: audit_key_pem,
        first: part.first().map_or(1, |(seq, _)| *seq),
        entries: part
            .iter()
            .map(|(_, stored)| base64::engine::general_purpose::STANDARD.encode(stored))
            .collect(),
    }))
}

/// Checks a bundle against `anchor` (the audit key's public key the auditor holds).
pub fn verify(
    bundle: &Bundle,
    anchor: &SubjectPublicKeyInfoOwned,
) -> Result<VerifiedBundle, BundleError> {
    if bundle.format != FORMAT {
        return Err(BundleError::Format(format!(
            "format {:?}, not {FORMAT:?}",
            bundle.format
        )));
    }
    let key_in_bundle =
        crate::x509::pem::decode_pem_or_der(bundle.audit_key.as_bytes(), &["PUBLIC KEY"])
            .ok()
            .and_then(|der| <SubjectPublicKeyInfoOwned as der::Decode>::from_der(&der).ok());
    if key_in_bundle.as_ref() != Some(anchor) {
        return Err(BundleError::OtherKey);
    }
    if bundle.to < bundle.from {
        return Err(BundleError::Coverage(format!(
            "its period ends ({}) before it starts ({})",
            bundle.to, bundle.from
        )));
    }
    let too_long = || BundleError::Format("entry numbers overflow".into());
    let mut stored = Vec::with_capacity(bundle.entries.len());
    for (offset, text) in bundle.entries.iter().enumerate() {
        let seq = bundle
            .first
            .checked_add(offset as u64)
            .ok_or_else(too_long)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| BundleError::Entry {
                seq,
                why: format!("not base64 ({e})"),
            })?;
        stored.push((seq, bytes));
    }
    let records = stored
        .iter()
        .map(|(seq, bytes)| {
            decode(bytes)
                .map(|(_, record)| record)
                .map_err(|why| BundleError::Entry { seq: *seq, why })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let Some(first) = records.first() else {
        return Err(BundleError::Format("no entries".into()));
    };
    // Where the part starts: the log's genesis, or the entry its first checkpoint vouches for
    // (which that checkpoint's signature fixes, and which the checkpoint chains to).
    let start = if bundle.first == 1 {
        ChainHead::GENESIS
    } else {
        let AuditEvent::Checkpoint {
            entry, entry_hash, ..
        } = &first.event
        else {
            return Err(BundleError::Coverage(format!(
                "it starts at entry {}, which is not a signed checkpoint",
                bundle.first
            )));
        };
        let hash = hex::decode(entry_hash)
            .ok()
            .and_then(|h| <[u8; 32]>::try_from(h).ok())
            .filter(|h| entry.checked_add(1) == Some(bundle.first) && hex::encode(h) == first.prev)
            .ok_or_else(|| BundleError::Entry {
                seq: bundle.first,
                why: "the first checkpoint does not vouch for the entry it follows".into(),
            })?;
        ChainHead { seq: *entry, hash }
    };
    let verified =
        verify_chain_from(start, stored, Some(anchor)).map_err(|b| BundleError::Entry {
            seq: b.seq,
            why: b.why,
        })?;
    // The end: a checkpoint, last, vouching for the entry just before it (so for every entry
    // of the bundle), after the export's record of this very period.
    let last_seq = verified.head.seq;
    match verified.last_checkpoint {
        Some((entry, vouched)) if entry == last_seq && vouched.checked_add(1) == Some(last_seq) => {
        }
        _ => {
            return Err(BundleError::Coverage(format!(
                "it ends at entry {last_seq}, which is not a signed checkpoint of the entry before it"
            )));
        }
    }
    let marked = records.iter().any(|r| {
        matches!(
            r.event,
            AuditEvent::AuditBundleExported { from, to } if from == bundle.from && to == bundle.to
        )
    });
    if !marked {
        return Err(BundleError::Coverage(format!(
            "no record of this export (from {} to {}) before its closing checkpoint: its end was cut or its period changed",
            bundle.from, bundle.to
        )));
    }
    if bundle.first > 1 && first.time > bundle.from {
        return Err(BundleError::Coverage(format!(
            "it starts at {} (entry {}), after the period's start {}",
            first.time, bundle.first, bundle.from
        )));
    }
    let checkpoints = verified.checkpoints;
    let entries = records.len() as u64;
    Ok(VerifiedBundle {
        from: bundle.from,
        to: bundle.to,
        records: records
            .into_iter()
            .filter(|r| r.time >= bundle.from && r.time <= bundle.to)
            .collect(),
        entries,
        checkpoints,
    })
}
