//! The audit log: every state change appends one or more [`AuditEvent`]s, in the same RocksDB
//! write batch as the change itself (invariant 2, docs/invariants.md).
//!
//! Entries form a hash chain. Entry `n` is stored as `hash(n) || body(n)`, where `body(n)` is the
//! JSON of `{seq, time, prev, event}` with `prev = hex(hash(n-1))`, and
//! `hash(n) = SHA-256(hash(n-1) || body(n))` (the first entry chains from 32 zero octets).
//! Hashing the stored bytes, rather than a re-serialisation, makes verification independent of
//! how JSON is written; storing each entry's own hash lets [`verify_chain`] name the first entry
//! that was altered, not the one after it.
//!
//! Checkpoints ([`checkpoint`]) are entries of their own that carry an HSM signature over the
//! sequence number and hash of an earlier entry: rewriting the log (all hashes recomputed)
//! then needs the HSM key, not only write access to the database.
pub mod bundle;
pub mod checkpoint;
pub mod report;

use serde::{Deserialize, Serialize};

use crate::store::ChainEntry;
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
    /// A CA key rollover (`sceau ca rotate`): `current` issues from now on, `previous` keeps
    /// signing CRLs (and, for an issuing CA, OCSP responses) for what it issued.
    CaRolledOver {
        role: String,
        previous: String,
        current: String,
    },
    /// A key ceremony starts: the keys it will generate, before the first one is made.
    CeremonyStarted {
        kind: String,
        key_labels: Vec<String>,
    },
    /// M security officers approved a key ceremony's proposal (`sceau ceremony run`): it is
    /// claimed, and runs next.
    CeremonyApproved {
        id: String,
        operation: String,
        proposal_sha256: String,
        approved_by: Vec<String>,
    },
    /// An approved key ceremony ended: what it made or changed, or why it failed.
    CeremonyFinished {
        id: String,
        succeeded: bool,
        details: std::collections::BTreeMap<String, String>,
    },
    /// The security officers in force from now on, and how many approve a ceremony (their
    /// signature certificates' SHA-256).
    OfficersDeclared {
        quorum: usize,
        certificates: Vec<String>,
    },
    /// A key was destroyed in the HSM by a ceremony (`destroy-key`): its private and public
    /// objects (`objects` of them).
    KeyDestroyed { label: String, objects: usize },
    /// The token's PIN was replaced by a random one and split among the officers (`split-pin`):
    /// any `quorum` of the holders' shares make it (the persons, in share order).
    PinSplit {
        split: String,
        quorum: usize,
        holders: Vec<String>,
    },
    /// The daemon was unsealed by these officers' shares after a start (`sceau unseal`).
    Unsealed { split: String, persons: Vec<String> },
    /// The policy files in force changed by a ceremony (`change-policies`): their digest
    /// ([`crate::policy::files_digest`]) and names.
    PoliciesChanged { sha256: String, files: Vec<String> },
    /// A share presented to the sealed daemon was refused (nothing taken), and why.
    UnsealRefused { reason: String },
    /// The CA was made without dual control (`sceau init --without-dual-control`): one person
    /// runs its key operations. For development and tests only.
    SinglePersonControl,
    /// An interrupted key ceremony was resolved: its certificates unknown to the CA state were
    /// revoked, its keys unused by the CA state are orphans.
    CeremonyAbandoned {
        kind: String,
        started_at: Timestamp,
        revoked: Vec<String>,
        orphan_keys: Vec<String>,
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
    /// valid (invariant 1, docs/invariants.md).
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
    /// A card was handed over: its holder signed the receipt (certificate `receipt_signer`),
    /// the operator countersigned (request `request`).
    CardDelivered {
        card: String,
        operator: String,
        request: String,
        receipt_signer: String,
    },
    /// The store was rebuilt from a backup: CRL numbers raised above every published one,
    /// revocations published after the backup taken back, certificates it lacks revoked.
    StoreRestored {
        backup_created_at: Timestamp,
        backup_audit_head: u64,
        crl_numbers: std::collections::BTreeMap<String, u64>,
        revocations_reapplied: Vec<String>,
        unaccounted_revoked: Vec<String>,
    },
    /// A revocation was scheduled for a later time (issue 12: a departure date).
    RevocationScheduled {
        id: String,
        card: Option<String>,
        serial: Option<String>,
        at: Timestamp,
        reason: String,
        requested_by: String,
    },
    /// A scheduled revocation was cancelled before its time.
    ScheduledRevocationCancelled { id: String, by: String },
    /// A scheduled revocation's time came: what it revoked (nothing if already revoked).
    ScheduledRevocationExecuted {
        id: String,
        at: Timestamp,
        revoked: Vec<String>,
        note: Option<String>,
    },
    /// A certificate was revoked.
    CertificateRevoked {
        issuer: String,
        serial: String,
        reason: Option<String>,
        invalidity_date: Option<Timestamp>,
        requested_by: String,
    },
    /// A card got new certificates; its previous ones were revoked as superseded.
    CardRenewed {
        card: String,
        holder: String,
        authentication: String,
        signature: String,
        superseded: Vec<String>,
    },
    /// An operator was registered: by `sceau ra bootstrap` (no designator) or designated.
    OperatorDesignated {
        operator: String,
        subject: String,
        role: String,
        scope: serde_json::Value,
        designated_by: Option<String>,
        request: Option<String>,
    },
    /// The person keys of operators were recomputed from their certificates by a newer rule of
    /// names (at the opening of the store); `shared` lists the groups of active operators the
    /// new rule finds to be one person (look-alike names registered before it).
    OperatorPersonsRekeyed {
        operators: Vec<String>,
        shared: Vec<Vec<String>>,
    },
    /// An operator's rights were withdrawn, directly or because its designator's were.
    OperatorWithdrawn {
        operator: String,
        by: String,
        cascade_from: Option<String>,
        request: String,
        reason: Option<String>,
    },
    /// A card request (new card or renewal) was submitted after the face-to-face meeting.
    CardRequestSubmitted {
        request: String,
        operator: String,
        holder: String,
        card: String,
        subject: String,
        renewal: bool,
    },
    /// An auditor's bundle of the period `from`..`to` was exported: the checkpoint that follows
    /// vouches for it, which binds the period to the bundle and shows where the log stood.
    AuditBundleExported { from: Timestamp, to: Timestamp },
    /// A bulk revocation was proposed: the query, and the list it froze (its count and digest).
    BulkRevocationProposed {
        bulk: String,
        operator: String,
        query: serde_json::Value,
        reason: String,
        count: usize,
        certificates_sha256: String,
    },
    /// A bulk revocation was approved by another person and carried out (each certificate has
    /// its own `certificate_revoked` in the same write).
    BulkRevocationApproved {
        bulk: String,
        operator: String,
        proposed_by: String,
        revoked: usize,
        approval: String,
    },
    CardRequestApproved {
        request: String,
        operator: String,
        /// The signed approval (a single approval or a batch) kept as evidence under this id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        approval: Option<String>,
    },
    CardRequestRejected {
        request: String,
        operator: String,
        reason: String,
    },
    /// The certificates of an approved request were issued.
    CardRequestIssued {
        request: String,
        card: String,
        authentication: String,
        signature: String,
    },
    /// The CA refused to issue an approved request (the request is closed).
    CardRequestFailed { request: String, why: String },
    /// A registration-authority request was refused; nothing else changed.
    RequestRefused {
        operator: Option<String>,
        action: String,
        request: Option<String>,
        rule: String,
        detail: String,
    },
    /// Refusals that repeated one already written (same client, same rule) within a window,
    /// counted instead of written one by one.
    RequestsRefusedRepeatedly {
        operator: String,
        action: String,
        rule: String,
        detail: String,
        count: u64,
        first: Timestamp,
        last: Timestamp,
    },
    /// A signed checkpoint of the chain: `signature` (hex) is the HSM's signature, with the key
    /// `key_label`, over `checkpoint_message(entry, entry_hash)`.
    Checkpoint {
        entry: u64,
        entry_hash: String,
        key_label: String,
        signature: String,
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

/// The end of the chain, kept by the store (which links the entries, see [`ChainEntry`]).
pub use crate::store::ChainHead;

/// An event is linked into the store's chain by [`append`], in the write of its transaction.
impl ChainEntry for AuditEvent {
    fn link(self, head: ChainHead, time: Timestamp) -> Result<(Vec<u8>, ChainHead), String> {
        append(head, time, self).map_err(|e| e.to_string())
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

/// What [`verify_chain`] checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verified {
    pub entries: u64,
    /// Checkpoints whose signature verified against the audit key.
    pub checkpoints: u64,
    /// The last checkpoint: its own entry and the entry it vouches for.
    pub last_checkpoint: Option<(u64, u64)>,
}

/// The bytes a checkpoint signs: a fixed label, the entry's sequence number (8 octets,
/// big-endian) and its chain hash.
pub fn checkpoint_message(seq: u64, hash: &[u8; 32]) -> Vec<u8> {
    let mut message = b"sceau audit checkpoint\0".to_vec();
    message.extend_from_slice(&seq.to_be_bytes());
    message.extend_from_slice(hash);
    message
}

/// Checks a whole log, given as (key sequence number, stored bytes) in key order, against the
/// head recorded beside it, and every checkpoint against the chain and `audit_key` (the public
/// key of the HSM key that signs checkpoints; without it, a checkpoint fails).
pub fn verify_chain<I>(
    entries: I,
    recorded_head: ChainHead,
    audit_key: Option<&spki::SubjectPublicKeyInfoOwned>,
) -> Result<Verified, ChainBreak>
where
    I: IntoIterator<Item = (u64, Vec<u8>)>,
{
    let verified = verify_chain_from(ChainHead::GENESIS, entries, audit_key)?;
    if verified.head != recorded_head {
        return Err(ChainBreak {
            seq: verified.head.seq + 1,
            why: format!(
                "the recorded head is entry {} but the log ends at entry {}",
                recorded_head.seq, verified.head.seq
            ),
        });
    }
    Ok(Verified {
        entries: verified.head.seq,
        checkpoints: verified.checkpoints,
        last_checkpoint: verified.last_checkpoint,
    })
}

/// What [`verify_chain_from`] checked: the head it reached, the checkpoints it verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifiedPart {
    pub head: ChainHead,
    pub checkpoints: u64,
    /// The last checkpoint: its own entry and the entry it vouches for.
    pub last_checkpoint: Option<(u64, u64)>,
}

/// Checks a part of a log that follows `start` (an entry and its hash, taken as given: the
/// genesis, or an entry a signed checkpoint vouches for), as [`verify_chain`] checks a whole
/// one: the entries follow each other and chain, and every checkpoint vouches for an entry of
/// the part (or `start` itself) and is signed by `audit_key`.
pub fn verify_chain_from<I>(
    start: ChainHead,
    entries: I,
    audit_key: Option<&spki::SubjectPublicKeyInfoOwned>,
) -> Result<VerifiedPart, ChainBreak>
where
    I: IntoIterator<Item = (u64, Vec<u8>)>,
{
    let mut head = start;
    // Every entry's hash, to check what checkpoints vouch for (32 octets an entry).
    let mut hashes: Vec<[u8; 32]> = Vec::new();
    let mut checkpoints = 0;
    let mut last_checkpoint: Option<(u64, u64)> = None;
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
        if let AuditEvent::Checkpoint {
            entry: seq,
            entry_hash: hash,
            signature,
            ..
        } = &record.event
        {
            let vouched = if *seq == start.seq && start.seq > 0 {
                Some(&start.hash)
            } else {
                seq.checked_sub(start.seq + 1)
                    .and_then(|i| hashes.get(i as usize))
            }
            .ok_or_else(|| {
                bad(format!(
                    "it vouches for entry {seq}, which is not before it"
                ))
            })?;
            // Checkpoints follow one another: each vouches for an entry after the previous
            // checkpoint (a stale head signed again, or a checkpoint moved, does not pass).
            if let Some((previous, _)) = last_checkpoint
                && *seq <= previous
            {
                return Err(bad(format!(
                    "it vouches for entry {seq}, not after the previous checkpoint (entry {previous})"
                )));
            }
            if hex::encode(vouched) != *hash {
                return Err(bad(format!(
                    "it vouches for a hash of entry {seq} that the chain does not have"
                )));
            }
            let key = audit_key.ok_or_else(|| bad("no audit key to check its signature".into()))?;
            let signature = hex::decode(signature).map_err(|e| bad(e.to_string()))?;
            let algorithm = crate::x509::sigalg::SignatureScheme::EcdsaP256Sha256
                .algorithm_identifier()
                .map_err(|e| bad(e.to_string()))?;
            crate::x509::sigalg::verify(
                key,
                &algorithm,
                &checkpoint_message(*seq, vouched),
                &signature,
            )
            .map_err(|e| bad(format!("its signature: {e}")))?;
            checkpoints += 1;
            last_checkpoint = Some((key_seq, *seq));
        }
        hashes.push(computed);
        head = ChainHead {
            seq: key_seq,
            hash: computed,
        };
    }
    Ok(VerifiedPart {
        head,
        checkpoints,
        last_checkpoint,
    })
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
        assert_eq!(verify_chain(entries, head, None).map(|v| v.entries), Ok(5));
    }

    #[test]
    fn one_changed_byte_names_its_entry() {
        let (mut entries, head) = log(5);
        let last = entries[2].1.len() - 3;
        entries[2].1[last] ^= 0x01;
        let err = verify_chain(entries, head, None).unwrap_err();
        assert_eq!(err.seq, 3, "{err}");
    }

    /// A log of `n` events with checkpoints appended after the entries `after` (each vouching
    /// for `vouch(entry before it)`), signed with a software P-256 key; and that key.
    fn log_with_checkpoints(
        n: u64,
        after: &[u64],
        vouch: impl Fn(u64) -> u64,
    ) -> (
        Vec<(u64, Vec<u8>)>,
        ChainHead,
        spki::SubjectPublicKeyInfoOwned,
    ) {
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref()).unwrap();
        let public =
            crate::x509::keys::ec_spki(crate::x509::keys::Curve::P256, key.public_key().as_ref())
                .unwrap();
        let mut head = ChainHead::GENESIS;
        let mut entries = Vec::new();
        let mut hashes: Vec<[u8; 32]> = Vec::new();
        fn push(
            event: AuditEvent,
            head: &mut ChainHead,
            entries: &mut Vec<(u64, Vec<u8>)>,
            hashes: &mut Vec<[u8; 32]>,
        ) {
            let seq = head.seq + 1;
            let (stored, next) = append(*head, Timestamp::from_unix_seconds(seq), event).unwrap();
            entries.push((seq, stored));
            hashes.push(next.hash);
            *head = next;
        }
        for i in 1..=n {
            push(event(i), &mut head, &mut entries, &mut hashes);
            if after.contains(&i) {
                let vouched = vouch(head.seq);
                let hash = hashes[(vouched - 1) as usize];
                let signature = key.sign(&rng, &checkpoint_message(vouched, &hash)).unwrap();
                let checkpoint = AuditEvent::Checkpoint {
                    entry: vouched,
                    entry_hash: hex::encode(hash),
                    key_label: "audit".into(),
                    signature: hex::encode(signature.as_ref()),
                };
                push(checkpoint, &mut head, &mut entries, &mut hashes);
            }
        }
        (entries, head, public)
    }

    #[test]
    fn checkpoints_verify_and_follow_one_another() {
        let (entries, head, key) = log_with_checkpoints(6, &[2, 4], |last| last);
        let verified = verify_chain(entries, head, Some(&key)).unwrap();
        assert_eq!(verified.checkpoints, 2);
        // Entries: 1 2 [3: checkpoint of 2] 3→4 4→5 [6: checkpoint of 5] …
        assert_eq!(verified.last_checkpoint, Some((6, 5)));
        // A second checkpoint vouching for an entry before the first one: refused.
        let (entries, head, key) =
            log_with_checkpoints(6, &[3, 4], |last| if last > 4 { 2 } else { last });
        let err = verify_chain(entries, head, Some(&key)).unwrap_err();
        assert!(
            err.why.contains("not after the previous checkpoint"),
            "{err}"
        );
        // Without the key, a checkpoint cannot pass.
        let (entries, head, _) = log_with_checkpoints(3, &[2], |last| last);
        assert!(verify_chain(entries, head, None).is_err());
    }

    #[test]
    fn a_deleted_or_truncated_log_is_detected() {
        let (mut entries, head) = log(5);
        entries.remove(1);
        assert_eq!(verify_chain(entries, head, None).unwrap_err().seq, 2);
        let (mut entries, head) = log(5);
        entries.pop();
        assert_eq!(verify_chain(entries, head, None).unwrap_err().seq, 5);
    }

    /// The store's writes and the chain it links, together (the store's hook, [`ChainEntry`]).
    mod in_the_store {
        use super::super::*;
        use crate::store::schema::{Certificates, Serials};
        use crate::store::{CertKey, IssuerId, Store, StoreError};
        use crate::x509::Serial;

        #[derive(Debug, thiserror::Error)]
        enum TestError {
            #[error("store: {0}")]
            Store(#[from] StoreError),
            #[error("refused")]
            Refused,
        }

        fn event(serial: &str) -> AuditEvent {
            AuditEvent::IntentRevoked {
                issuer: "test".into(),
                serial: serial.into(),
                why: "test".into(),
            }
        }

        /// The chain is read as one consistent view while commits go on: a commit landing
        /// between reading the head and reading the log is not a broken chain (it was reported
        /// as one at start-up, the CRL publication committing beside the first checkpoint).
        #[test]
        fn the_chain_read_while_commits_land_is_never_broken() {
            use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path()).unwrap();
            let done = std::sync::Arc::new(AtomicBool::new(false));
            let commits = std::sync::Arc::new(AtomicU32::new(0));
            let writer = {
                let (store, done, commits) = (store.clone(), done.clone(), commits.clone());
                std::thread::spawn(move || {
                    while !done.load(Ordering::Relaxed) {
                        let n = commits.fetch_add(1, Ordering::Relaxed);
                        store
                            .commit(move |txn| -> Result<(), TestError> {
                                txn.audit(event(&format!("{n:X}")));
                                Ok(())
                            })
                            .unwrap();
                    }
                })
            };
            // Reads interleaved with at least 200 commits.
            let mut checked = 0;
            while checked < 300 || commits.load(Ordering::Relaxed) < 200 {
                let verified = store
                    .read_audit_log(|head, entries| verify_chain(entries, head, None))
                    .unwrap();
                assert!(verified.is_ok(), "{verified:?}");
                checked += 1;
            }
            done.store(true, Ordering::Relaxed);
            writer.join().unwrap();
        }

        #[test]
        fn a_transaction_and_its_audit_event_land_together_or_not_at_all() {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path()).unwrap();
            let serial = Serial::from_hex("01").unwrap();
            let issuer = IssuerId([7; 20]);
            let s = serial.clone();
            store
                .commit(move |txn| -> Result<(), TestError> {
                    txn.put::<Serials>(&s, &issuer)?;
                    txn.audit(event("01"));
                    Ok(())
                })
                .unwrap();
            assert_eq!(store.get::<Serials>(&serial).unwrap(), Some(issuer));
            assert_eq!(store.audit_head().seq, 1);

            // A refused transaction stages nothing, not even its audit event.
            let other = Serial::from_hex("02").unwrap();
            let o = other.clone();
            let refused = store.commit(move |txn| -> Result<(), TestError> {
                txn.put::<Serials>(&o, &issuer)?;
                txn.audit(event("02"));
                Err(TestError::Refused)
            });
            assert!(matches!(refused, Err(TestError::Refused)));
            assert_eq!(store.get::<Serials>(&other).unwrap(), None);
            assert_eq!(store.audit_head().seq, 1);
            drop(store);

            // Reopened: the chain head and the data persisted and verify.
            let store = Store::open(dir.path()).unwrap();
            assert_eq!(store.audit_head().seq, 1);
            let entries: Vec<_> = store.audit_entries().unwrap().map(|e| e.unwrap()).collect();
            assert_eq!(
                verify_chain(entries, store.audit_head(), None).map(|v| v.entries),
                Ok(1)
            );
            assert!(
                store
                    .get::<Certificates>(&CertKey { issuer, serial })
                    .unwrap()
                    .is_none()
            );
        }
    }
}
