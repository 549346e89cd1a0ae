//! Backups of a CA, and getting it back after losing the machine.
//!
//! A backup is a directory: `store/`, a RocksDB checkpoint (a consistent copy taken while the
//! daemon serves), `certs/` (the CA certificates) and `publish/` (the CRLs as published), and
//! `manifest.json`: the store's identity (its CA certificates), the audit chain's head, the last
//! CRL numbers, the row counts, and the SHA-256 of every file. A backup is checked after it is
//! written: every digest, the whole audit chain up to the recorded head, every count.
//!
//! A restore rebuilds an empty data directory from a checked backup, and only once the HSM was
//! found to hold the keys of every CA in it. What happened after the backup is not in it, so
//! the restore takes back what the outside world saw:
//!
//! - **Revocations** published after the backup (signed CRLs in the publish directory and the
//!   engine of the responder nodes, and the engine's statuses) come back exactly as published:
//!   time, reason and invalidity date. A certificate the engine knows but the backup does not
//!   (issued after it) cannot be accounted for any more: it is revoked (as published if it was,
//!   else at the restore's time, listed entry by entry), its serial kept reserved (nothing may
//!   be valid that the CA does not know).
//! - **CRL numbers** are never reused: the restored CA starts above the highest one found in
//!   signed CRLs (publish directory, engine). With none found for a CA, it starts above what
//!   could have been published since its last CRL in the backup: CRL thisUpdate times go up by
//!   at least a second per CRL and never run more than [`crate::va::crl::MAX_AHEAD_SECONDS`]
//!   ahead of the clock, so at most one number a second can have been used since (plus a
//!   margin for clocks that disagree, [`CLOCK_MARGIN_SECONDS`]). The report says which.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aws_lc_rs::digest;
use serde::{Deserialize, Serialize};

use crate::ca::CaState;
use crate::ca::schedule::ScheduledRevocations;
use crate::ra::Evidence;
use crate::ra::cards::CardRequests;
use crate::ra::holders::Handovers;
use crate::ra::operators::Operators;
use crate::store::schema::{Cards, Certificates, Meta, Revocations, Serials, meta_keys};
use crate::store::{IssuerId, Store, StoreError};
use crate::x509::Timestamp;

mod restore;
pub use restore::{CrlNumberFloor, Reapplied, Restored, manifest_sha256, propose_restore, restore};

/// The manifest's file name.
pub const MANIFEST: &str = "manifest.json";

/// What went wrong; each message names the file or the field.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BackupError(pub String);

impl From<StoreError> for BackupError {
    fn from(error: StoreError) -> Self {
        BackupError(format!("store: {error}"))
    }
}

fn io(path: &Path, error: std::io::Error) -> BackupError {
    BackupError(format!("{}: {error}", path.display()))
}

/// What a backup holds, and how to check it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub created_at: Timestamp,
    pub sceau_version: String,
    pub schema_version: u32,
    /// The CA certificates of the store (name -> SHA-256 of the DER): which CA this is.
    pub identity: BTreeMap<String, String>,
    pub audit_head: AuditHead,
    /// The last CRL number of each issuer (hexadecimal key identifier).
    pub crl_numbers: BTreeMap<String, u64>,
    /// Rows by table.
    pub counts: BTreeMap<String, u64>,
    /// SHA-256 of every file (path relative to the backup directory).
    pub files: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    pub seq: u64,
    pub hash: String,
}

/// Backs up `store` (the daemon's, while it serves) into `out`, which must not exist, with the
/// CA certificates of `certs_dir` and the CRLs of `publish_dir`; then checks what was written.
pub fn create(
    store: &Store,
    certs_dir: &Path,
    publish_dir: &Path,
    out: &Path,
    now: Timestamp,
) -> Result<Manifest, BackupError> {
    // Resolved through its parent (symbolic links, `..`), so that the checks below see where
    // it really goes.
    let out = match (
        out.parent().and_then(|p| p.canonicalize().ok()),
        out.file_name(),
    ) {
        (Some(parent), Some(name)) => parent.join(name),
        _ => std::path::absolute(out).map_err(|e| io(out, e))?,
    };
    if out.exists() {
        return Err(BackupError(format!(
            "{}: exists; a backup goes into a new directory",
            out.display()
        )));
    }
    // Not where the store lives (lost with it), nor where files are served from.
    let data_dir = certs_dir.parent().unwrap_or(certs_dir);
    for (inside, what) in [
        (data_dir, "the data directory"),
        (publish_dir, "the publish directory"),
    ] {
        if let Ok(inside) = inside
            .canonicalize()
            .or_else(|_| std::path::absolute(inside))
            && out.starts_with(&inside)
        {
            return Err(BackupError(format!(
                "{}: inside {what} {}; back up elsewhere",
                out.display(),
                inside.display()
            )));
        }
    }
    // Written beside, renamed into place once checked and synced: a directory named `out` is a
    // whole, checked backup. A leftover of ours is never guessed at: it is reported.
    let name = out
        .file_name()
        .ok_or_else(|| BackupError(format!("{}: not a directory name", out.display())))?;
    let partial = out.with_file_name(format!("{}.sceau-partial", name.to_string_lossy()));
    if partial.exists() {
        return Err(BackupError(format!(
            "{}: left by an interrupted backup; remove it",
            partial.display()
        )));
    }
    std::fs::create_dir_all(&partial).map_err(|e| io(&partial, e))?;
    let written = (|| {
        store.checkpoint(&partial.join("store"))?;
        copy_files(certs_dir, &partial.join("certs"), "pem")?;
        copy_files(publish_dir, &partial.join("publish"), "crl")?;
        let copy = Store::open_read_only(&partial.join("store"))?;
        let mut manifest = describe(&copy, now)?;
        drop(copy);
        manifest.files = digests(&partial)?;
        write_manifest(&partial, &manifest)?;
        check(&partial)?;
        sync_tree(&partial)?;
        crate::durable::rename(&partial, &out).map_err(|e| io(&out, e))?;
        Ok(manifest)
    })();
    if written.is_err() {
        let _ = std::fs::remove_dir_all(&partial);
    }
    written
}

/// Every file and directory under `dir` on disk (copies are not synced by themselves).
fn sync_tree(dir: &Path) -> Result<(), BackupError> {
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let path = entry.map_err(|e| io(dir, e))?.path();
        if path.is_dir() {
            sync_tree(&path)?;
        } else {
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|e| io(&path, e))?;
        }
    }
    crate::durable::sync_dir(dir).map_err(|e| io(dir, e))
}

/// Checks a backup: every file's digest, the audit chain up to the recorded head, the counts.
pub fn check(dir: &Path) -> Result<Manifest, BackupError> {
    let path = dir.join(MANIFEST);
    let text = std::fs::read(&path).map_err(|e| io(&path, e))?;
    let manifest: Manifest = serde_json::from_slice(&text)
        .map_err(|e| BackupError(format!("{}: {e}", path.display())))?;
    let found = digests(dir)?;
    for (file, digest) in &manifest.files {
        match found.get(file) {
            None => {
                return Err(BackupError(format!(
                    "{}: missing",
                    dir.join(file).display()
                )));
            }
            Some(actual) if actual != digest => {
                return Err(BackupError(format!(
                    "{}: its SHA-256 is not the manifest's",
                    dir.join(file).display()
                )));
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = found.keys().find(|f| !manifest.files.contains_key(*f)) {
        return Err(BackupError(format!(
            "{}: not in the manifest",
            dir.join(extra).display()
        )));
    }
    let copy = Store::open_read_only(&dir.join("store"))?;
    let entries = copy.audit_entries()?.collect::<Result<Vec<_>, _>>()?;
    let key = crate::audit::checkpoint::recorded_key(&copy)
        .map_err(|e| BackupError(format!("audit key: {e}")))?;
    crate::audit::verify_chain(entries, copy.audit_head(), key.as_ref()).map_err(|e| {
        BackupError(format!(
            "{}: the audit chain is broken at entry {}: {}",
            dir.join("store").display(),
            e.seq,
            e.why
        ))
    })?;
    let described = describe(&copy, manifest.created_at)?;
    let differs = |field: &str| {
        BackupError(format!(
            "{}: {field} differs from the store's",
            path.display()
        ))
    };
    if described.audit_head != manifest.audit_head {
        return Err(differs("audit_head"));
    }
    if described.counts != manifest.counts {
        return Err(differs("counts"));
    }
    if described.crl_numbers != manifest.crl_numbers || described.identity != manifest.identity {
        return Err(differs("crl_numbers or identity"));
    }
    Ok(manifest)
}

/// The manifest of `store`, without file digests.
fn describe(store: &Store, now: Timestamp) -> Result<Manifest, BackupError> {
    let state = crate::ca::load_state(store)
        .map_err(|e| BackupError(format!("CA state: {e}")))?
        .ok_or_else(|| BackupError("the store holds no CA".into()))?;
    let head = store.audit_head();
    let mut counts = BTreeMap::new();
    counts.insert("certificates".into(), store.count::<Certificates>(&[])?);
    counts.insert("revocations".into(), store.count::<Revocations>(&[])?);
    counts.insert("serials".into(), store.count::<Serials>(&[])?);
    counts.insert("cards".into(), store.count::<Cards>(&[])?);
    counts.insert("operators".into(), store.count::<Operators>(&[])?);
    counts.insert("card_requests".into(), store.count::<CardRequests>(&[])?);
    counts.insert("evidence".into(), store.count::<Evidence>(&[])?);
    counts.insert("handovers".into(), store.count::<Handovers>(&[])?);
    counts.insert(
        "scheduled_revocations".into(),
        store.count::<ScheduledRevocations>(&[])?,
    );
    counts.insert("audit_entries".into(), head.seq);
    let mut crl_numbers = BTreeMap::new();
    for (_, id) in ca_names(&state)? {
        if let Some(number) = crl_number(store, id)? {
            crl_numbers.insert(id.to_hex(), number);
        }
    }
    Ok(Manifest {
        format: 1,
        created_at: now,
        sceau_version: env!("CARGO_PKG_VERSION").into(),
        schema_version: store.schema_version()?,
        identity: identity(&state),
        audit_head: AuditHead {
            seq: head.seq,
            hash: hex::encode(head.hash),
        },
        crl_numbers,
        counts,
        files: BTreeMap::new(),
    })
}

/// Every CA certificate of the state, by name: what makes this CA this one.
fn identity(state: &CaState) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let roots = state.root.iter().chain(&state.previous_roots);
    for root in roots {
        out.insert(root.name.clone(), sha256_hex(&root.certificate));
    }
    for ca in state.issuing.iter().chain(&state.ocsp_responders) {
        out.insert(ca.name.clone(), sha256_hex(&ca.certificate));
    }
    out
}

/// The public keys of the state's CRL issuers, by key identifier.
fn ca_keys(
    state: &CaState,
) -> Result<Vec<(IssuerId, spki::SubjectPublicKeyInfoOwned)>, BackupError> {
    let roots = state.root.iter().chain(&state.previous_roots);
    let certificates = roots
        .map(|r| (&r.name, &r.certificate))
        .chain(state.issuing.iter().map(|c| (&c.name, &c.certificate)));
    let mut out = Vec::new();
    for (name, der) in certificates {
        let certificate = <x509_cert::Certificate as der::Decode>::from_der(der)
            .map_err(|e| BackupError(format!("certificate of {name}: {e}")))?;
        let spki = certificate
            .tbs_certificate()
            .subject_public_key_info()
            .clone();
        out.push((IssuerId(crate::x509::keys::key_identifier(&spki)), spki));
    }
    Ok(out)
}

/// The CRL issuers of the state: (file name, key identifier).
fn ca_names(state: &CaState) -> Result<Vec<(String, IssuerId)>, BackupError> {
    let mut out = Vec::new();
    let roots = state.root.iter().chain(&state.previous_roots);
    let certificates = roots
        .map(|r| (&r.name, &r.certificate))
        .chain(state.issuing.iter().map(|c| (&c.name, &c.certificate)));
    for (name, der) in certificates {
        let certificate = <x509_cert::Certificate as der::Decode>::from_der(der)
            .map_err(|e| BackupError(format!("certificate of {name}: {e}")))?;
        let spki = certificate.tbs_certificate().subject_public_key_info();
        out.push((
            name.clone(),
            IssuerId(crate::x509::keys::key_identifier(spki)),
        ));
    }
    Ok(out)
}

fn crl_number(store: &Store, issuer: IssuerId) -> Result<Option<u64>, BackupError> {
    match store.get::<Meta>(&meta_keys::crl_number(issuer))? {
        Some(bytes) => Ok(Some(u64::from_be_bytes(
            bytes
                .as_slice()
                .try_into()
                .map_err(|_| BackupError("stored CRL number".into()))?,
        ))),
        None => Ok(None),
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, bytes))
}

/// Copies the files of `from` ending in `.extension` into `to` (created).
fn copy_files(from: &Path, to: &Path, extension: &str) -> Result<(), BackupError> {
    std::fs::create_dir_all(to).map_err(|e| io(to, e))?;
    let Ok(entries) = std::fs::read_dir(from) else {
        return Ok(());
    };
    for entry in entries {
        let path = entry.map_err(|e| io(from, e))?.path();
        if path.extension().and_then(|e| e.to_str()) == Some(extension)
            && let Some(name) = path.file_name()
        {
            std::fs::copy(&path, to.join(name)).map_err(|e| io(&path, e))?;
        }
    }
    Ok(())
}

/// SHA-256 of every file under `dir` but the manifest and RocksDB's info logs (which a
/// read-only open writes).
fn digests(dir: &Path) -> Result<BTreeMap<String, String>, BackupError> {
    let mut out = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).map_err(|e| io(&current, e))? {
            let path = entry.map_err(|e| io(&current, e))?.path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let relative = path
                .strip_prefix(dir)
                .map_err(|_| BackupError(format!("{}: outside the backup", path.display())))?
                .to_string_lossy()
                .into_owned();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            let skipped = relative == MANIFEST
                || name
                    .as_deref()
                    .is_some_and(|n| n == "LOG" || n.starts_with("LOG.old") || n == "LOCK");
            if skipped {
                continue;
            }
            let bytes = std::fs::read(&path).map_err(|e| io(&path, e))?;
            out.insert(relative, sha256_hex(&bytes));
        }
    }
    Ok(out)
}

fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<(), BackupError> {
    let path = dir.join(MANIFEST);
    let text = serde_json::to_vec_pretty(manifest)
        .map_err(|e| BackupError(format!("{}: {e}", path.display())))?;
    crate::durable::write_file(&path, &text).map_err(|e| io(&path, e))
}

/// Keeps the `keep` newest backups of `dir` (directories with a manifest, by name: their names
/// are their UTC times), removing the others.
pub fn prune(dir: &Path, keep: usize) -> Result<Vec<PathBuf>, BackupError> {
    let mut backups: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join(MANIFEST).is_file())
        .collect();
    backups.sort();
    let excess = backups.len().saturating_sub(keep);
    let removed: Vec<PathBuf> = backups.into_iter().take(excess).collect();
    for path in &removed {
        std::fs::remove_dir_all(path).map_err(|e| io(path, e))?;
    }
    Ok(removed)
}

/// Seconds added to the clock-derived CRL number floor for a restoring host whose clock is
/// behind the lost one's.
pub const CLOCK_MARGIN_SECONDS: u64 = 3600;

/// What the engine holds, as the validation authority reads it back
/// ([`crate::va::publish::read_engine`]).
pub use crate::va::publish::{EngineView, PublishedRevocation};
