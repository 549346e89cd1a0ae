//! Key ceremonies as intents: `init`, `ca rotate`, `ca rotate --root` and responder renewal
//! record what they are about to do (the labels of the keys they will generate) before they
//! generate a key or sign anything; every CA or responder certificate they sign is noted in
//! that record in the same write as its issuance intent; the CA state, the certificates and
//! the end of the record are committed in one write. A ceremony interrupted anywhere (a crash,
//! an HSM failure) is resolved before the CA is used again: the certificates it signed that the
//! CA state does not know are revoked (they appear on the CRL or ARL of their issuer), and the
//! keys it made are reported as orphans, in the audit log and in `sceau check`, so that every
//! key in the token is accounted for.
use serde::{Deserialize, Serialize};

use super::CaError;
use super::revoke::{RevocationRequest, RevocationTarget, revoke_one};
use crate::audit::AuditEvent;
use crate::store::schema::{Certificates, Intents, Meta, meta_keys};
use crate::store::{CertKey, Reader, Store, StoreError, Txn};
use crate::x509::Timestamp;
use crate::x509::revocation::RevocationReason;

/// The key ceremonies (stored by name: `init`, `import`, `rotate-issuing`, `rotate-root`,
/// `renew-responder`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CeremonyKind {
    Init,
    /// The issuing CA's certificate from an external root (`sceau ca import-cert`).
    Import,
    RotateIssuing,
    RotateRoot,
    RenewResponder,
}

impl CeremonyKind {
    pub fn name(self) -> &'static str {
        match self {
            CeremonyKind::Init => "init",
            CeremonyKind::Import => "import",
            CeremonyKind::RotateIssuing => "rotate-issuing",
            CeremonyKind::RotateRoot => "rotate-root",
            CeremonyKind::RenewResponder => "renew-responder",
        }
    }
}

impl core::fmt::Display for CeremonyKind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a ceremony under way has announced and done so far.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CeremonyIntent {
    pub kind: CeremonyKind,
    pub started_at: Timestamp,
    /// The labels of the keys it generates, announced before the first one is made.
    pub key_labels: Vec<String>,
    /// The CA and responder certificates it recorded for issuance, in order.
    #[serde(default)]
    pub certificates: Vec<CertKey>,
}

/// What resolving an interrupted ceremony did.
#[derive(Clone, Debug, Serialize)]
pub struct Resolution {
    pub kind: CeremonyKind,
    /// Certificates of the ceremony unknown to the CA state, now revoked.
    pub revoked: Vec<CertKey>,
    /// Labels of keys the ceremony announced that no CA or responder of the state uses.
    pub orphan_keys: Vec<String>,
}

fn read(reader: &impl Reader) -> Result<Option<CeremonyIntent>, CaError> {
    match reader.get::<Meta>(&meta_keys::CEREMONY.to_owned())? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| CaError::Corrupt(format!("ceremony record: {e}"))),
        None => Ok(None),
    }
}

fn write(txn: &mut Txn<'_>, intent: &CeremonyIntent) -> Result<(), CaError> {
    let bytes = serde_json::to_vec(intent).map_err(|e| CaError::Encoding(e.to_string()))?;
    txn.put::<Meta>(&meta_keys::CEREMONY.to_owned(), &bytes)?;
    Ok(())
}

/// The ceremony under way or left unfinished, if any.
pub fn unfinished(store: &Store) -> Result<Option<CeremonyIntent>, CaError> {
    read(store)
}

/// Records that a ceremony of `kind` starts and will generate keys under `key_labels`.
/// Refused while another ceremony is under way or unfinished.
pub fn begin(
    store: &Store,
    kind: CeremonyKind,
    key_labels: Vec<String>,
    now: Timestamp,
) -> Result<(), CaError> {
    let intent = CeremonyIntent {
        kind,
        started_at: now,
        key_labels,
        certificates: Vec::new(),
    };
    store.commit(move |txn| -> Result<(), CaError> {
        if let Some(other) = read(txn)? {
            return Err(CaError::Refused(format!(
                "another key ceremony ({}, started {}) is under way or was interrupted; nothing was changed (an interrupted one is resolved at the next start)",
                other.kind, other.started_at
            )));
        }
        txn.audit(AuditEvent::CeremonyStarted {
            kind: intent.kind.to_string(),
            key_labels: intent.key_labels.clone(),
        });
        write(txn, &intent)
    })
}

/// Inside the issuance intent's write: notes a CA or responder certificate of the ceremony.
pub(super) fn note_certificate(txn: &mut Txn<'_>, key: &CertKey) -> Result<(), StoreError> {
    let Ok(Some(mut intent)) = read(txn) else {
        return Ok(());
    };
    intent.certificates.push(key.clone());
    let bytes = serde_json::to_vec(&intent).unwrap_or_default();
    txn.put::<Meta>(&meta_keys::CEREMONY.to_owned(), &bytes)
}

/// Inside the write that commits the CA state: the ceremony is over.
pub(super) fn finish(txn: &mut Txn<'_>) {
    txn.delete::<Meta>(&meta_keys::CEREMONY.to_owned());
}

/// Resolves an interrupted ceremony: revokes its certificates that the CA state does not
/// know, reports its keys that the state does not use, and ends the record, in one write with
/// a `ceremony_abandoned` audit event. Nothing to do (None) when no ceremony was interrupted.
pub fn resolve(store: &Store, now: Timestamp) -> Result<Option<Resolution>, CaError> {
    if read(store)?.is_none() {
        return Ok(None);
    }
    let resolution = store.commit(move |txn| -> Result<Option<Resolution>, CaError> {
        let Some(intent) = read(txn)? else {
            return Ok(None);
        };
        let state: Option<super::CaState> =
            match txn.get::<Meta>(&meta_keys::CA_STATE.to_owned())? {
                Some(bytes) => Some(
                    serde_json::from_slice(&bytes).map_err(|e| CaError::Corrupt(e.to_string()))?,
                ),
                None => None,
            };
        let known_certificates: Vec<&[u8]> = state
            .iter()
            .flat_map(|s| {
                s.roots()
                    .map(|r| r.certificate.as_slice())
                    .chain(s.issuing.iter().map(|c| c.certificate.as_slice()))
                    .chain(s.ocsp_responders.iter().map(|c| c.certificate.as_slice()))
                    .chain(
                        s.root_links
                            .iter()
                            .flat_map(|l| [l.new_with_old.as_slice(), l.old_with_new.as_slice()]),
                    )
            })
            .collect();
        let known_labels: Vec<&str> = state
            .iter()
            .flat_map(crate::issuer::state::CaState::key_labels)
            .collect();
        let mut revoked = Vec::new();
        for key in &intent.certificates {
            if let Some(record) = txn.get::<Certificates>(key)? {
                if known_certificates.contains(&record.der.as_slice()) {
                    continue;
                }
                let request = RevocationRequest {
                    target: RevocationTarget::Serial(key.serial.clone()),
                    reason: RevocationReason::CessationOfOperation,
                    invalidity_date: None,
                    requested_by: format!("interrupted {} ceremony", intent.kind),
                };
                if revoke_one(txn, key, &request, now)?.is_some() {
                    revoked.push(key.clone());
                }
            } else if txn.contains::<Intents>(key)? {
                // Recorded, maybe signed, never stored: revoked like any such intent.
                super::issue::revoke_intent_in(
                    txn,
                    key,
                    &format!("interrupted {} ceremony", intent.kind),
                    now,
                )?;
                revoked.push(key.clone());
            }
        }
        let orphan_keys: Vec<String> = intent
            .key_labels
            .iter()
            .filter(|label| !known_labels.contains(&label.as_str()))
            .cloned()
            .collect();
        let mut orphans = orphan_key_labels(txn)?;
        for label in &orphan_keys {
            if !orphans.contains(label) {
                orphans.push(label.clone());
            }
        }
        let bytes = serde_json::to_vec(&orphans).map_err(|e| CaError::Encoding(e.to_string()))?;
        txn.put::<Meta>(&meta_keys::ORPHAN_KEYS.to_owned(), &bytes)?;
        txn.audit(AuditEvent::CeremonyAbandoned {
            kind: intent.kind.to_string(),
            started_at: intent.started_at,
            revoked: revoked.iter().map(|k| k.serial.to_hex()).collect(),
            orphan_keys: orphan_keys.clone(),
        });
        finish(txn);
        Ok(Some(Resolution {
            kind: intent.kind,
            revoked,
            orphan_keys,
        }))
    })?;
    if let Some(resolution) = &resolution {
        tracing::warn!(
            ceremony = %resolution.kind,
            revoked = resolution.revoked.len(),
            orphan_keys = ?resolution.orphan_keys,
            "resolved an interrupted key ceremony: its certificates unknown to the CA are revoked; its keys are orphans (unused; destroy them in a ceremony)"
        );
    }
    Ok(resolution)
}

/// One key ceremony at a time in a process ([`run`]).
static RUNNING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Resolves an interrupted ceremony now, unless one is under way in this process (its record
/// is then its own, not an interrupted one's): before a ceremony is proposed, so that the keys
/// it left are known.
pub fn resolve_when_idle(store: &Store, now: Timestamp) -> Result<Option<Resolution>, CaError> {
    match RUNNING.try_lock() {
        Ok(_idle) => resolve(store, now),
        Err(std::sync::TryLockError::Poisoned(poisoned)) => {
            let _idle = poisoned.into_inner();
            resolve(store, now)
        }
        Err(std::sync::TryLockError::WouldBlock) => Ok(None),
    }
}

/// Destroys nothing itself: records, once the HSM destroyed the key `label` (a ceremony's
/// `destroy-key`), that it is no longer an orphan, with its audit event. Refused (nothing
/// written) when `label` is not an orphan.
pub fn forget_orphan(store: &Store, label: &str, objects: usize) -> Result<(), CaError> {
    let label = label.to_owned();
    store.commit(move |txn| -> Result<(), CaError> {
        let mut orphans = orphan_key_labels(txn)?;
        let before = orphans.len();
        orphans.retain(|l| *l != label);
        if orphans.len() == before {
            return Err(CaError::Refused(format!("{label:?} is not an orphan key")));
        }
        let bytes = serde_json::to_vec(&orphans).map_err(|e| CaError::Encoding(e.to_string()))?;
        txn.put::<Meta>(&meta_keys::ORPHAN_KEYS.to_owned(), &bytes)?;
        txn.audit(AuditEvent::KeyDestroyed { label, objects });
        Ok(())
    })
}

/// Keys left in the token by interrupted ceremonies (reported by `sceau check`).
pub fn orphan_key_labels(reader: &impl Reader) -> Result<Vec<String>, CaError> {
    match reader.get::<Meta>(&meta_keys::ORPHAN_KEYS.to_owned())? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| CaError::Corrupt(format!("orphan keys: {e}"))),
        None => Ok(Vec::new()),
    }
}

/// Runs a ceremony body under a recorded intent: on failure the ceremony is resolved at once
/// (its certificates revoked, its keys reported), so that the next ceremony can start. One
/// ceremony at a time in a process; a record left by an earlier one of this process (whose
/// resolution failed) is resolved before the next begins.
pub fn run<T>(
    store: &Store,
    kind: CeremonyKind,
    key_labels: Vec<String>,
    now: Timestamp,
    body: impl FnOnce() -> Result<T, CaError>,
) -> Result<T, CaError> {
    let _only_one = match RUNNING.try_lock() {
        Ok(guard) => guard,
        Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => {
            return Err(CaError::Refused(
                "another key ceremony is under way; nothing was changed, run it again".into(),
            ));
        }
    };
    // No ceremony runs in this process, and the store is this process's alone: a record
    // found now belongs to one that ended without being resolved.
    resolve(store, now)?;
    begin(store, kind, key_labels, now)?;
    let outcome = body();
    if outcome.is_err()
        && let Err(error) = resolve(store, now)
    {
        tracing::error!(%error, "an interrupted key ceremony could not be resolved now; it will be at the next start");
    }
    outcome
}
