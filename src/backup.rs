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
//! the restored CA never reuses a CRL number already published (it starts above the highest one
//! found in the publish directory and, when configured, the engine of the responder nodes), and
//! takes back from that engine the revocations published after the backup. A certificate the
//! engine knows but the backup does not (issued after it) cannot be accounted for any more: it
//! is revoked, its serial kept reserved (nothing may be valid that the CA does not know).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aws_lc_rs::digest;
use serde::{Deserialize, Serialize};

use crate::audit::AuditEvent;
use crate::ca::CaState;
use crate::store::schema::{
    CardRequests, Cards, Certificates, Evidence, Handovers, Meta, Operators, Revocations,
    ScheduledRevocations, Serials, meta_keys,
};
use crate::store::{CertKey, IssuerId, RevocationRecord, Store, StoreError};
use crate::x509::Timestamp;
use crate::x509::revocation::RevocationReason;

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

/// What the engine of the responder nodes holds, read at restore time.
#[derive(Debug, Default)]
pub struct EngineView {
    /// Every status published: (certificate, revoked at and reason if revoked).
    pub statuses: Vec<(CertKey, Option<(Timestamp, RevocationReason)>)>,
    /// The CRLs published there (DER).
    pub crls: Vec<Vec<u8>>,
}

/// What a restore did.
#[derive(Debug, Serialize)]
pub struct Restored {
    pub audit_head: AuditHead,
    /// Issuer -> the number the next CRL will follow.
    pub crl_numbers: BTreeMap<String, u64>,
    /// Revocations published after the backup, taken back from the engine.
    pub revocations_reapplied: Vec<String>,
    /// Certificates the engine knew but the backup did not: revoked, serials reserved.
    pub unaccounted_revoked: Vec<String>,
    /// CRL files (first 8 octets of their SHA-256) not signed by this CA: ignored.
    pub ignored_crls: Vec<String>,
    /// The revocations scheduled in the backup: one cancelled after it comes back, and runs
    /// when the daemon starts if its time has passed (cancel it first: `sceau scheduled
    /// cancel`); one scheduled after the backup is not in it.
    pub scheduled: Vec<crate::ca::schedule::ScheduledRevocation>,
}

/// Rebuilds `store_dir` (which must not exist, or be empty) from the backup `from`: checks the
/// backup, copies its store beside, checks that `hsm_check` accepts its CA state (the HSM holds
/// every CA key), raises the CRL numbers above every one found in `publish_dir` and `engine`,
/// takes back the engine's revocations, and moves the store into place.
pub fn restore(
    from: &Path,
    store_dir: &Path,
    publish_dir: &Path,
    engine: Option<&EngineView>,
    hsm_check: impl FnOnce(&CaState) -> Result<(), String>,
    now: Timestamp,
) -> Result<Restored, BackupError> {
    let manifest = check(from)?;
    if store_dir.exists()
        && std::fs::read_dir(store_dir)
            .map_err(|e| io(store_dir, e))?
            .next()
            .is_some()
    {
        return Err(BackupError(format!(
            "{}: not empty; a restore never overwrites a store (move it aside first)",
            store_dir.display()
        )));
    }
    let staging = store_dir.with_extension("restoring");
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| io(&staging, e))?;
    }
    copy_tree(&from.join("store"), &staging)?;
    let restored = (|| {
        let store = Store::open(&staging)?;
        let state = crate::ca::load_state(&store)
            .map_err(|e| BackupError(format!("CA state: {e}")))?
            .ok_or_else(|| BackupError("the backup holds no CA".into()))?;
        hsm_check(&state).map_err(BackupError)?;
        let restored = bring_up_to_date(&store, &state, &manifest, publish_dir, engine, now)?;
        drop(store);
        Ok::<_, BackupError>(restored)
    })();
    let restored = match restored {
        Ok(restored) => restored,
        Err(error) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(error);
        }
    };
    if store_dir.exists() {
        std::fs::remove_dir(store_dir).map_err(|e| io(store_dir, e))?;
    }
    std::fs::rename(&staging, store_dir).map_err(|e| io(store_dir, e))?;
    Ok(restored)
}

/// What happened after the backup, as far as the outside world saw it: CRL numbers and
/// revocations. One write, with its audit event.
fn bring_up_to_date(
    store: &Store,
    state: &CaState,
    manifest: &Manifest,
    publish_dir: &Path,
    engine: Option<&EngineView>,
    now: Timestamp,
) -> Result<Restored, BackupError> {
    // The highest CRL number seen anywhere, per issuer (by the CRL's authority key id).
    let issuers = ca_names(state)?;
    let mut seen: BTreeMap<IssuerId, u64> = BTreeMap::new();
    let mut crls: Vec<Vec<u8>> = Vec::new();
    // Times are never in the future (a CRL or an engine entry saying otherwise is clamped).
    let bounded = |at: Timestamp| at.min(now);
    if let Ok(entries) = std::fs::read_dir(publish_dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) == Some("crl")
                && let Ok(der) = std::fs::read(&path)
            {
                crls.push(der);
            }
        }
    }
    if let Some(engine) = engine {
        crls.extend(engine.crls.iter().cloned());
    }
    // Only CRLs this CA signed count: a file in a web root or an engine entry is not trusted
    // for what it says, only for the signature it carries.
    let keys = ca_keys(state)?;
    let mut ignored = Vec::new();
    crls.retain(|der| {
        let signed = crate::x509::crl::authority_key_identifier(der)
            .and_then(|aki| keys.iter().find(|(id, _)| id.0 == aki))
            .is_some_and(|(_, key)| crate::x509::crl::signed_by(der, key));
        if !signed {
            ignored.push(hex::encode(
                &digest::digest(&digest::SHA256, der).as_ref()[..8],
            ));
        }
        signed
    });
    for der in &crls {
        let (Ok(summary), Some(issuer)) = (
            crate::x509::crl::summarize(der),
            crate::x509::crl::authority_key_identifier(der),
        ) else {
            continue;
        };
        if let (Some(number), Some((_, id))) = (
            summary.number,
            issuers.iter().find(|(_, id)| id.0 == issuer),
        ) {
            let highest = seen.entry(*id).or_default();
            *highest = (*highest).max(number);
        }
    }
    // Revocations the CRLs published: (certificate, time, reason), each CRL's issuer by its
    // authority key identifier.
    let mut published: Vec<(CertKey, Option<(Timestamp, RevocationReason)>)> = Vec::new();
    for der in &crls {
        let Some(issuer) = crate::x509::crl::authority_key_identifier(der) else {
            continue;
        };
        // Signed by this CA yet unreadable: no guessing what it revoked.
        let entries = crate::x509::crl::revoked_entries(der).ok_or_else(|| {
            BackupError("a CRL signed by this CA could not be read: nothing restored".into())
        })?;
        for (serial, at, code) in entries {
            let reason = RevocationReason::from_code(code).unwrap_or(RevocationReason::Unspecified);
            published.push((
                CertKey {
                    issuer: IssuerId(issuer),
                    serial,
                },
                Some((at, reason)),
            ));
        }
    }
    let mut raised = BTreeMap::new();
    for (_, id) in &issuers {
        let stored = crl_number(store, *id)?.unwrap_or(0);
        let highest = seen.get(id).copied().unwrap_or(0).max(stored);
        raised.insert(*id, highest);
    }
    // Statuses the engine published that the backup lacks.
    let mut reapply: Vec<(CertKey, Timestamp, RevocationReason)> = Vec::new();
    let mut unaccounted: Vec<CertKey> = Vec::new();
    // Only what this CA's issuing CAs signed (a stray key in the bucket is not ours to revoke).
    let issuing: Vec<IssuerId> = ca_names(&CaState {
        root: None,
        previous_roots: Vec::new(),
        ..state.clone()
    })?
    .into_iter()
    .map(|(_, id)| id)
    .collect();
    let from_engine = engine.map(|e| e.statuses.as_slice()).unwrap_or_default();
    let mut seen_keys = std::collections::BTreeSet::new();
    for (key, revoked) in published.iter().chain(from_engine) {
        if !issuing.contains(&key.issuer)
            || !seen_keys.insert(key.clone())
            || store.get::<Revocations>(key)?.is_some()
        {
            continue;
        }
        let known = store.get::<Certificates>(key)?.is_some();
        match (known, revoked) {
            (true, Some((at, reason))) => reapply.push((key.clone(), bounded(*at), *reason)),
            (true, None) => {}
            (false, _) => unaccounted.push(key.clone()),
        }
    }
    let restored = Restored {
        audit_head: manifest.audit_head.clone(),
        crl_numbers: raised.iter().map(|(id, n)| (id.to_hex(), *n)).collect(),
        revocations_reapplied: reapply.iter().map(|(k, ..)| k.serial.to_hex()).collect(),
        unaccounted_revoked: unaccounted.iter().map(|k| k.serial.to_hex()).collect(),
        ignored_crls: ignored,
        scheduled: crate::ca::schedule::list(store)
            .map_err(|e| BackupError(format!("scheduled revocations: {e}")))?,
    };
    let event = AuditEvent::StoreRestored {
        backup_created_at: manifest.created_at,
        backup_audit_head: manifest.audit_head.seq,
        crl_numbers: restored.crl_numbers.clone(),
        revocations_reapplied: restored.revocations_reapplied.clone(),
        unaccounted_revoked: restored.unaccounted_revoked.clone(),
    };
    store.commit(move |txn| -> Result<(), BackupError> {
        txn.audit(event);
        for (id, number) in raised {
            txn.put::<Meta>(&meta_keys::crl_number(id), &number.to_be_bytes().to_vec())?;
        }
        for (key, at, reason) in reapply {
            let certificate = txn
                .get::<Certificates>(&key)?
                .ok_or_else(|| BackupError(format!("certificate {} vanished", key.serial)))?;
            txn.changed(crate::store::status_change(&key));
            txn.put::<Revocations>(
                &key,
                &RevocationRecord {
                    revoked_at: at,
                    reason,
                    invalidity_date: None,
                    not_after: certificate.not_after,
                },
            )?;
            txn.audit(AuditEvent::CertificateRevoked {
                issuer: key.issuer.to_hex(),
                serial: key.serial.to_hex(),
                reason: reason.code().map(|_| reason.to_string()),
                invalidity_date: None,
                requested_by: "restore: published to the responder nodes after the backup".into(),
            });
        }
        for key in unaccounted {
            // Never reused, and never valid: the CA no longer knows what it says. A serial the
            // index gives to another issuer stays theirs (serials are unique across issuers).
            match txn.get::<Serials>(&key.serial)? {
                Some(issuer) if issuer != key.issuer => continue,
                Some(_) => {}
                None => txn.put::<Serials>(&key.serial, &key.issuer)?,
            }
            txn.changed(crate::store::status_change(&key));
            txn.put::<Revocations>(
                &key,
                &RevocationRecord {
                    revoked_at: now,
                    reason: RevocationReason::Unspecified,
                    invalidity_date: None,
                    // Unknown: kept on CRLs for a card's whole lifetime.
                    not_after: now.plus_seconds(6 * 366 * 86_400),
                },
            )?;
            txn.audit(AuditEvent::CertificateRevoked {
                issuer: key.issuer.to_hex(),
                serial: key.serial.to_hex(),
                reason: None,
                invalidity_date: None,
                requested_by: "restore: issued after the backup, not in it".into(),
            });
        }
        Ok(())
    })?;
    Ok(restored)
}

/// Copies the files of `from` into `to` (created), one level: a RocksDB directory.
fn copy_tree(from: &Path, to: &Path) -> Result<(), BackupError> {
    std::fs::create_dir_all(to).map_err(|e| io(to, e))?;
    for entry in std::fs::read_dir(from).map_err(|e| io(from, e))? {
        let path = entry.map_err(|e| io(from, e))?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        if path.is_file()
            && name
                .as_deref()
                .is_some_and(|n| n != "LOCK" && !n.starts_with("LOG"))
        {
            let target = to.join(path.file_name().unwrap_or_default());
            std::fs::copy(&path, &target).map_err(|e| io(&path, e))?;
        }
    }
    Ok(())
}
