//! Signed checkpoints of the audit chain.
//!
//! A checkpoint signs, with a P-256 key kept in the HSM for this use only (the CA keys sign
//! certificates and CRLs, nothing else), the sequence number and hash of the last entry, and is
//! appended to the log as an entry of its own. The key is made the first time it is needed and
//! its public key is kept in the store (`meta/audit-key`), where `sceau audit verify` reads it.
use der::{Decode, Encode};
use spki::SubjectPublicKeyInfoOwned;

use super::{AuditEvent, ChainHead, checkpoint_message};
use crate::hsm::{Hsm, HsmError, KeySpec};
use crate::store::schema::{Meta, meta_keys};
use crate::store::{Store, StoreError, Table};
use crate::x509::keys;

/// What went wrong while making a checkpoint.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    #[error("HSM: {0}")]
    Hsm(#[from] HsmError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("the audit key {label:?} in the HSM is not the one recorded in the store")]
    KeyMismatch { label: String },
    #[error("encoding: {0}")]
    Encoding(String),
    /// The chain does not verify: the daemon refuses to vouch for it with a checkpoint.
    #[error("the audit chain is broken, no checkpoint signed: {0}")]
    Broken(String),
}

/// The public key that signs checkpoints, as recorded in the store.
pub fn recorded_key(store: &Store) -> Result<Option<SubjectPublicKeyInfoOwned>, StoreError> {
    match store.get::<Meta>(&meta_keys::AUDIT_KEY.to_owned())? {
        Some(der) => SubjectPublicKeyInfoOwned::from_der(&der)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                table: Meta::NAME,
                detail: format!("audit key: {e}"),
            }),
        None => Ok(None),
    }
}

/// Signs the current head, unless the log is empty or ends with a checkpoint already. Returns
/// the head that was signed.
pub fn write(store: &Store, hsm: &Hsm, label: &str) -> Result<Option<ChainHead>, CheckpointError> {
    sign_or_check(store, hsm, label, false)
}

/// [`write()`], and when the log ends with a checkpoint already, verify the chain all the same
/// (what the daemon does at start: a log changed while it was stopped is reported at once).
pub fn write_or_verify(
    store: &Store,
    hsm: &Hsm,
    label: &str,
) -> Result<Option<ChainHead>, CheckpointError> {
    sign_or_check(store, hsm, label, true)
}

/// One checkpoint at a time in this process (the timer and `POST /checkpoint`): two that read
/// the same head would both sign it, and the second, vouching for an entry not after the
/// first checkpoint, would break the chain for good. The store is this process's alone
/// (RocksDB's lock), so a process-wide lock is enough.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn sign_or_check(
    store: &Store,
    hsm: &Hsm,
    label: &str,
    verify_anyway: bool,
) -> Result<Option<ChainHead>, CheckpointError> {
    let _one_at_a_time = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let head = store.audit_head();
    if head.seq == 0 {
        return Ok(None);
    }
    let signed_already = last_is_checkpoint(store, head)?;
    if signed_already && !verify_anyway {
        return Ok(None);
    }
    let recorded = recorded_key(store)?;
    let mut new_key = None;
    if !hsm.has_key(label)? {
        let public_key = hsm.generate_key(label, KeySpec::P256)?;
        new_key = Some(public_key);
    }
    let key = hsm.signing_key(label, KeySpec::P256.scheme(false))?;
    if let Some(recorded) = &recorded
        && recorded != key.public_key()
    {
        return Err(CheckpointError::KeyMismatch {
            label: label.to_owned(),
        });
    }
    // A checkpoint vouches for the whole chain: it is signed only over a chain that verifies,
    // with the HSM's key (not only the one the store records), up to the head it signs. Entries
    // are streamed (a read error ends the stream, and the head then does not match).
    // The head signed is the one verified: log and head read as of one instant (commits may
    // have landed since `head` was read).
    let head = store.read_audit_log(|head, entries| {
        super::verify_chain(entries, head, Some(key.public_key())).map(|_| head)
    })?;
    let head = head.map_err(|broken| CheckpointError::Broken(broken.to_string()))?;
    if signed_already || last_is_checkpoint(store, head)? {
        return Ok(None);
    }
    let message = checkpoint_message(head.seq, &head.hash);
    let signature = key.sign(&message)?;
    key.verify(&message, &signature)?;
    let spki_der = key
        .public_key()
        .to_der()
        .map_err(|e| CheckpointError::Encoding(e.to_string()))?;
    let key_id = hex::encode_upper(keys::key_identifier(key.public_key()));
    let label = label.to_owned();
    store.commit(move |txn| -> Result<(), CheckpointError> {
        if new_key.is_some() {
            txn.audit(AuditEvent::KeyGenerated {
                label: label.clone(),
                algorithm: KeySpec::P256.to_string(),
                key_id,
            });
        }
        if recorded.is_none() {
            txn.put::<Meta>(&meta_keys::AUDIT_KEY.to_owned(), &spki_der)?;
        }
        txn.audit(AuditEvent::Checkpoint {
            entry: head.seq,
            entry_hash: hex::encode(head.hash),
            key_label: label,
            signature: hex::encode(signature),
        });
        Ok(())
    })?;
    Ok(Some(head))
}

fn last_is_checkpoint(store: &Store, head: ChainHead) -> Result<bool, StoreError> {
    let Some(stored) = store.get::<crate::store::schema::Audit>(&head.seq)? else {
        return Ok(false);
    };
    Ok(matches!(
        super::decode(&stored),
        Ok((_, record)) if matches!(record.event, AuditEvent::Checkpoint { .. })
    ))
}

/// The audit key's public key as PEM (`PUBLIC KEY`), to be kept outside the store: `sceau init`
/// writes it beside the CA certificates, and `sceau audit verify --anchor FILE` checks every
/// checkpoint against it (a store whose key was swapped does not pass).
pub fn anchor_pem(store: &Store) -> Result<Option<String>, CheckpointError> {
    Ok(match recorded_key(store)? {
        Some(key) => Some(crate::x509::pem::encode(
            "PUBLIC KEY",
            &key.to_der()
                .map_err(|e| CheckpointError::Encoding(e.to_string()))?,
        )),
        None => None,
    })
}

/// What the daemon knows of its audit chain: whether the last check found it broken, and the
/// last checkpoint it signed. Health, metrics and the log all read it: a broken chain is not
/// vouched for, and says so loudly.
#[derive(Debug, Default)]
pub struct ChainWatch {
    broken: std::sync::Mutex<Option<String>>,
    last_signed: std::sync::Mutex<Option<ChainHead>>,
}

impl ChainWatch {
    /// Records the outcome of a checkpoint ([`write()`] or [`write_or_verify`]): the signed
    /// head goes to the journal (target `sceau::audit`, a copy outside the store that `sceau
    /// audit verify --expect SEQ:HASH` checks), a broken chain to the error log, the health
    /// and the metrics.
    pub fn record(
        &self,
        outcome: Result<Option<ChainHead>, CheckpointError>,
    ) -> Result<Option<ChainHead>, CheckpointError> {
        match &outcome {
            Ok(signed) => {
                *self.broken.lock().unwrap_or_else(|p| p.into_inner()) = None;
                if let Some(head) = signed {
                    tracing::info!(
                        target: "sceau::audit",
                        seq = head.seq,
                        hash = %hex::encode(head.hash),
                        "audit checkpoint signed"
                    );
                    *self.last_signed.lock().unwrap_or_else(|p| p.into_inner()) = Some(*head);
                }
            }
            Err(CheckpointError::Broken(why)) => {
                tracing::error!(
                    %why,
                    "THE AUDIT CHAIN IS BROKEN: no checkpoint will vouch for it; run sceau audit verify --anchor"
                );
                *self.broken.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.clone());
            }
            Err(error) => tracing::warn!(%error, "audit checkpoint failed; retrying later"),
        }
        outcome
    }

    /// Why the chain is broken, when the last check found it so.
    pub fn broken(&self) -> Option<String> {
        self.broken
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The last checkpoint this process signed.
    pub fn last_signed(&self) -> Option<ChainHead> {
        *self.last_signed.lock().unwrap_or_else(|p| p.into_inner())
    }
}
