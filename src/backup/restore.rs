//! Restoring a backup into an empty data directory, then taking back what the outside world saw after it (see the module above).

use std::collections::BTreeMap;
use std::path::Path;

use aws_lc_rs::digest;
use serde::Serialize;

use super::{
    AuditHead, BackupError, CLOCK_MARGIN_SECONDS, Manifest, ca_keys, ca_names, check, crl_number,
    io,
};
use crate::audit::AuditEvent;
use crate::ca::CaState;
use crate::store::schema::{Certificates, Meta, Revocations, Serials, meta_keys};
use crate::store::{CertKey, IssuerId, RevocationRecord, Store};
use crate::va::publish::{EngineView, PublishedRevocation};
use crate::x509::Timestamp;
use crate::x509::revocation::RevocationReason;

/// A revocation the restore wrote back.
#[derive(Debug, Serialize)]
pub struct Reapplied {
    pub serial: String,
    #[serde(flatten)]
    pub revocation: PublishedRevocation,
    /// Where it was read: `crl` (a CRL this CA signed) or `engine` (the status bucket).
    pub source: &'static str,
}

/// Where a restored CA's next CRL number comes from.
#[derive(Debug, Serialize)]
pub struct CrlNumberFloor {
    /// The number the next CRL follows.
    pub number: u64,
    /// `published` (the highest found in a signed CRL) or `clock` (none found: derived from
    /// the time since the backup's last CRL).
    pub source: &'static str,
    pub detail: String,
}

/// What a restore did.
#[derive(Debug, Serialize)]
pub struct Restored {
    pub audit_head: AuditHead,
    /// Issuer -> the number the next CRL will follow.
    pub crl_numbers: BTreeMap<String, u64>,
    /// CRL name -> where its number comes from.
    pub crl_number_floors: BTreeMap<String, CrlNumberFloor>,
    /// Revocations published after the backup, taken back as published.
    pub revocations_reapplied: Vec<Reapplied>,
    /// Certificates the engine knew but the backup did not: revoked, serials reserved.
    pub unaccounted_revoked: Vec<String>,
    /// Those of them nothing published as revoked: revoked at the restore's time, reason
    /// unspecified (the only revocations whose time is the restore's).
    pub revoked_at_restore_time: Vec<String>,
    /// CRL files (first 8 octets of their SHA-256) not signed by this CA: ignored.
    pub ignored_crls: Vec<String>,
    /// What the restore could not check, and what it costs.
    pub unverified: Vec<String>,
    /// The revocations scheduled in the backup: one cancelled after it comes back, and runs
    /// when the daemon starts if its time has passed (cancel it first: `sceau scheduled
    /// cancel`); one scheduled after the backup is not in it.
    pub scheduled: Vec<crate::ca::schedule::ScheduledRevocation>,
}

/// Whether `store_dir` holds no CA: absent, empty, or a store a start created before failing
/// (no CA state, no certificate, no audit entry). Anything else is never overwritten.
pub(super) fn holds_nothing(store_dir: &Path) -> Result<bool, BackupError> {
    let Ok(mut entries) = std::fs::read_dir(store_dir) else {
        return Ok(!store_dir.exists());
    };
    if entries.next().is_none() {
        return Ok(true);
    }
    let Ok(store) = Store::open_read_only(store_dir) else {
        return Ok(false);
    };
    let empty = crate::ca::load_state(&store)
        .map_err(|e| BackupError(format!("{}: CA state: {e}", store_dir.display())))?
        .is_none()
        && store.audit_head().seq == 0
        && store.count::<Certificates>(&[])? == 0;
    Ok(empty)
}

/// SHA-256 of a backup's manifest (hex): what a restore proposal names, so that its approvals
/// restore that backup and no other.
pub fn manifest_sha256(from: &Path) -> Result<String, BackupError> {
    let path = from.join(super::MANIFEST);
    let bytes = std::fs::read(&path).map_err(|e| io(&path, e))?;
    Ok(hex::encode(crate::x509::keys::sha256(&bytes)))
}

/// `sceau ceremony propose restore --backup DIR`: a proposal to restore the backup `from`, for
/// the officers its store declares, over its key head, with the configuration of the host
/// restored to (`configuration`: which engine's revocations are taken back, where CRLs go).
pub fn propose_restore(
    from: &Path,
    configuration: &str,
    now: Timestamp,
    valid_for_seconds: u64,
) -> Result<Vec<u8>, BackupError> {
    check(from)?;
    let store = Store::open_read_only(&from.join("store"))?;
    let refused = |e: crate::ca::CaError| BackupError(e.to_string());
    let ca = crate::ca::ceremony::control::existing_ca_id(&store)
        .map_err(refused)?
        .ok_or_else(|| BackupError("the backup's CA has no id: it predates dual control".into()))?;
    let head = crate::ca::ceremony::control::key_head(&store).map_err(refused)?;
    let parameters = BTreeMap::from([
        ("manifest".to_owned(), manifest_sha256(from)?),
        ("configuration".to_owned(), configuration.to_owned()),
    ]);
    let proposal = crate::ca::ceremony::control::new_proposal(
        ca,
        head,
        crate::ca::ceremony::quorum::Operation::Restore,
        parameters,
        now,
        valid_for_seconds,
    )
    .map_err(refused)?;
    Ok(proposal.canonical_bytes())
}

/// Rebuilds `store_dir` from the backup `from`: checks the backup, copies its store beside,
/// checks that `hsm_check` accepts its CA state (the HSM holds every CA key), raises the CRL
/// numbers above every one that may have been published, takes back the published
/// revocations, and moves the store into place. `store_dir` must hold no CA: absent, empty,
/// or left empty by a start (replaced); a `.restoring` leftover of an interrupted restore is
/// replaced.
pub fn restore(
    from: &Path,
    store_dir: &Path,
    publish_dir: &Path,
    engine: Option<&EngineView>,
    hsm_check: impl FnOnce(&CaState) -> Result<(), String>,
    authorize: impl FnOnce(&Store) -> Result<(), String>,
    now: Timestamp,
) -> Result<Restored, BackupError> {
    let manifest = check(from)?;
    if !holds_nothing(store_dir)? {
        return Err(BackupError(format!(
            "{}: holds a store with a CA in it (or one that cannot be read); a restore never overwrites one: move it aside first",
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
        // Who may restore this CA is what its backup says: its officers (a ceremony claimed
        // in the copy, so it is on record in the store restored) or its single person.
        authorize(&store).map_err(BackupError)?;
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
        // Nothing in it (checked above): what a start left.
        std::fs::remove_dir_all(store_dir).map_err(|e| io(store_dir, e))?;
    }
    crate::durable::rename(&staging, store_dir).map_err(|e| io(store_dir, e))?;
    Ok(restored)
}

/// The signed CRLs found in the publish directory and the engine; the others are listed by
/// digest and ignored (a file in a web root or an engine entry is trusted only for the
/// signature it carries).
pub(super) fn signed_crls(
    state: &CaState,
    publish_dir: &Path,
    engine: Option<&EngineView>,
) -> Result<(Vec<Vec<u8>>, Vec<String>), BackupError> {
    let mut crls: Vec<Vec<u8>> = Vec::new();
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
    Ok((crls, ignored))
}

/// The thisUpdate of the last CRL of each name the backup's audit log records.
pub(super) fn last_crl_times(store: &Store) -> Result<BTreeMap<String, Timestamp>, BackupError> {
    let mut out = BTreeMap::new();
    for entry in store.audit_entries()? {
        let (_, body) = entry?;
        // Most entries are not CRLs: looked at before being parsed.
        if !body.windows(13).any(|w| w == b"crl_published") {
            continue;
        }
        let (_, record) =
            crate::audit::decode(&body).map_err(|e| BackupError(format!("audit: {e}")))?;
        if let AuditEvent::CrlPublished {
            name, this_update, ..
        } = record.event
        {
            out.insert(name, this_update);
        }
    }
    Ok(out)
}

/// The number each CA's next CRL follows: above the highest found in a signed CRL, or, with
/// none found, above what may have been published since the backup's last CRL.
pub(super) fn crl_number_floors(
    store: &Store,
    issuers: &[(String, IssuerId)],
    crls: &[Vec<u8>],
    manifest: &Manifest,
    now: Timestamp,
) -> Result<BTreeMap<String, (IssuerId, CrlNumberFloor)>, BackupError> {
    let mut seen: BTreeMap<IssuerId, u64> = BTreeMap::new();
    for der in crls {
        let (Ok(summary), Some(aki)) = (
            crate::x509::crl::summarize(der),
            crate::x509::crl::authority_key_identifier(der),
        ) else {
            continue;
        };
        if let (Some(number), Some((_, id))) =
            (summary.number, issuers.iter().find(|(_, id)| id.0 == aki))
        {
            let highest = seen.entry(*id).or_default();
            *highest = (*highest).max(number);
        }
    }
    let last_times = last_crl_times(store)?;
    let mut out = BTreeMap::new();
    for (name, id) in issuers {
        let stored = crl_number(store, *id)?.unwrap_or(0);
        // Since the backup's last CRL, at most one CRL a second, never more than MAX_AHEAD
        // ahead of the clock: above that, no number can have been used. Taken even when a
        // CRL was found (the publish directory may have been brought back from the backup
        // itself, the engine may lag): a jump costs nothing, a number used twice does.
        let since = last_times.get(name).copied().unwrap_or(manifest.created_at);
        let elapsed = now.unix_seconds().saturating_sub(since.unix_seconds());
        let clock = stored
            .saturating_add(elapsed)
            .saturating_add(crate::va::crl::MAX_AHEAD_SECONDS)
            .saturating_add(CLOCK_MARGIN_SECONDS);
        let floor = match seen.get(id) {
            Some(found) if *found >= clock => CrlNumberFloor {
                number: *found,
                source: "published",
                detail: format!(
                    "highest number in a CRL this CA signed: {found}; in the backup: {stored}"
                ),
            },
            found => CrlNumberFloor {
                number: clock,
                source: "clock",
                detail: format!(
                    "{stored} in the backup, plus one a second for the {elapsed} s since its last CRL, plus {} s; {}",
                    crate::va::crl::MAX_AHEAD_SECONDS + CLOCK_MARGIN_SECONDS,
                    match found {
                        Some(found) => format!("the highest published number found is {found}"),
                        None =>
                            format!("no CRL of {name} found in the publish directory or the engine"),
                    }
                ),
            },
        };
        out.insert(name.clone(), (*id, floor));
    }
    Ok(out)
}

/// What was published of each certificate (`None`: "good"), and where it was read.
type Published = BTreeMap<CertKey, (Option<PublishedRevocation>, &'static str)>;
/// A revocation to apply again, and where it was read.
type Reapply = (CertKey, PublishedRevocation, &'static str);
/// A certificate the backup does not hold, and its revocation if one was published.
type Unaccounted = (CertKey, Option<PublishedRevocation>);

/// What happened after the backup, as far as the outside world saw it: CRL numbers and
/// revocations. One write, with its audit event.
pub(super) fn bring_up_to_date(
    store: &Store,
    state: &CaState,
    manifest: &Manifest,
    publish_dir: &Path,
    engine: Option<&EngineView>,
    now: Timestamp,
) -> Result<Restored, BackupError> {
    let issuers = ca_names(state)?;
    let (crls, ignored) = signed_crls(state, publish_dir, engine)?;
    let floors = crl_number_floors(store, &issuers, &crls, manifest, now)?;
    let published = published_revocations(store, manifest, &crls, engine, now)?;
    let (reapply, unaccounted) = not_in_the_backup(store, state, &published)?;
    let mut unverified = Vec::new();
    if engine.is_none() {
        unverified.push("no engine ([nats] not configured): revocations and certificates published only to the responder nodes after the backup are not known".into());
    }
    for (name, (id, _)) in &floors {
        if !crls.iter().any(|der| {
            crate::x509::crl::authority_key_identifier(der).is_some_and(|aki| aki == id.0)
        }) {
            unverified.push(format!(
                "{name}: no CRL of it found in the publish directory or the engine; its numbers jump from the clock"
            ));
        }
    }
    let restored = Restored {
        audit_head: manifest.audit_head.clone(),
        crl_numbers: floors
            .values()
            .map(|(id, floor)| (id.to_hex(), floor.number))
            .collect(),
        crl_number_floors: floors
            .iter()
            .map(|(name, (_, floor))| {
                (
                    name.clone(),
                    CrlNumberFloor {
                        number: floor.number,
                        source: floor.source,
                        detail: floor.detail.clone(),
                    },
                )
            })
            .collect(),
        revocations_reapplied: reapply
            .iter()
            .map(|(key, revocation, source)| (key, revocation, *source))
            .chain(unaccounted.iter().filter_map(|(key, revoked)| {
                let source = published.get(key).map_or("engine", |(_, s)| *s);
                revoked.as_ref().map(|r| (key, r, source))
            }))
            .map(|(key, revocation, source)| Reapplied {
                serial: key.serial.to_hex(),
                revocation: *revocation,
                source,
            })
            .collect(),
        unaccounted_revoked: unaccounted.iter().map(|(k, _)| k.serial.to_hex()).collect(),
        revoked_at_restore_time: unaccounted
            .iter()
            .filter(|(_, revoked)| revoked.is_none())
            .map(|(k, _)| k.serial.to_hex())
            .collect(),
        ignored_crls: ignored,
        unverified,
        scheduled: crate::ca::schedule::list(store)
            .map_err(|e| BackupError(format!("scheduled revocations: {e}")))?,
    };
    let event = AuditEvent::StoreRestored {
        backup_created_at: manifest.created_at,
        backup_audit_head: manifest.audit_head.seq,
        crl_numbers: restored.crl_numbers.clone(),
        revocations_reapplied: restored
            .revocations_reapplied
            .iter()
            .map(|r| r.serial.clone())
            .collect(),
        unaccounted_revoked: restored.unaccounted_revoked.clone(),
    };
    let raised: Vec<(IssuerId, u64)> = floors.values().map(|(id, f)| (*id, f.number)).collect();
    commit_what_was_published(store, event, raised, (reapply, unaccounted), now)?;
    Ok(restored)
}

/// What was published of each certificate revoked after the backup, and where it was read: a
/// revocation in a signed CRL first (signed, with every field), then the engine's statuses.
fn published_revocations(
    store: &Store,
    manifest: &Manifest,
    crls: &[Vec<u8>],
    engine: Option<&EngineView>,
    now: Timestamp,
) -> Result<Published, BackupError> {
    // Times are never in the future (a CRL or an engine entry saying otherwise is clamped).
    let bounded = |at: Timestamp| at.min(now);
    let mut published = Published::new();
    for der in crls {
        let Some(issuer) = crate::x509::crl::authority_key_identifier(der) else {
            continue;
        };
        // Signed by this CA yet unreadable: no guessing what it revoked.
        let entries = crate::x509::crl::revoked_entries(der).ok_or_else(|| {
            BackupError("a CRL signed by this CA could not be read: nothing restored".into())
        })?;
        for entry in entries {
            let key = CertKey {
                issuer: IssuerId(issuer),
                serial: entry.serial,
            };
            let revocation = PublishedRevocation {
                revoked_at: bounded(entry.revoked_at),
                reason: RevocationReason::from_code(entry.reason)
                    .unwrap_or(RevocationReason::Unspecified),
                invalidity_date: entry.invalidity_date,
            };
            published.entry(key).or_insert((Some(revocation), "crl"));
        }
    }
    for (key, revoked) in engine.map(|e| e.statuses.as_slice()).unwrap_or_default() {
        let revoked = revoked.map(|r| PublishedRevocation {
            revoked_at: bounded(r.revoked_at),
            ..r
        });
        // A revocation the backup does not hold was made after it: an engine entry dated
        // earlier was not written by this CA (the engine's values are not signed). Fail
        // closed, naming it; restoring without [nats] is the way out.
        if let Some(revocation) = &revoked
            && revocation.revoked_at < manifest.created_at.minus_seconds(CLOCK_MARGIN_SECONDS)
            && store.get::<Revocations>(key)?.is_none()
        {
            return Err(BackupError(format!(
                "engine status {}: revoked at {} s, before the backup ({} s) that does not list it: not believed; nothing restored",
                key.serial.to_hex(),
                revocation.revoked_at.unix_seconds(),
                manifest.created_at.unix_seconds()
            )));
        }
        match published.get_mut(key) {
            None => {
                published.insert(key.clone(), (revoked, "engine"));
            }
            // A CRL's entry keeps its time; the engine may know an invalidity date it lacks
            // only if the CRL was made before the revocation was recorded: never the case,
            // since a CRL lists what the store holds.
            Some((Some(_), _)) => {}
            Some(slot @ (None, _)) => *slot = (revoked, "engine"),
        }
    }
    Ok(published)
}

/// Of what was published, what the restored store lacks: revocations of certificates it holds
/// (to apply again), and certificates it never heard of (issued after the backup).
fn not_in_the_backup(
    store: &Store,
    state: &CaState,
    published: &Published,
) -> Result<(Vec<Reapply>, Vec<Unaccounted>), BackupError> {
    // Only what this CA's issuing CAs signed (a stray key in the bucket is not ours to revoke).
    let issuing: Vec<IssuerId> = ca_names(&CaState {
        root: None,
        previous_roots: Vec::new(),
        ..state.clone()
    })?
    .into_iter()
    .map(|(_, id)| id)
    .collect();
    let mut reapply: Vec<Reapply> = Vec::new();
    let mut unaccounted: Vec<Unaccounted> = Vec::new();
    for (key, (revoked, source)) in published {
        if !issuing.contains(&key.issuer) || store.get::<Revocations>(key)?.is_some() {
            continue;
        }
        let known = store.get::<Certificates>(key)?.is_some();
        match (known, revoked) {
            (true, Some(revocation)) => reapply.push((key.clone(), *revocation, source)),
            (true, None) => {}
            (false, revoked) => unaccounted.push((key.clone(), *revoked)),
        }
    }
    Ok((reapply, unaccounted))
}

/// The restore's one write: the CRL number floors, the revocations published after the backup,
/// the certificates issued after it (revoked), and the audit event.
fn commit_what_was_published(
    store: &Store,
    event: AuditEvent,
    raised: Vec<(IssuerId, u64)>,
    (reapply, unaccounted): (Vec<Reapply>, Vec<Unaccounted>),
    now: Timestamp,
) -> Result<(), BackupError> {
    store.commit(move |txn| -> Result<(), BackupError> {
        txn.audit(event);
        for (id, number) in raised {
            txn.put::<Meta>(&meta_keys::crl_number(id), &number.to_be_bytes().to_vec())?;
        }
        for (key, revocation, _) in reapply {
            let certificate = txn
                .get::<Certificates>(&key)?
                .ok_or_else(|| BackupError(format!("certificate {} vanished", key.serial)))?;
            write_revocation(
                txn,
                &key,
                revocation,
                certificate.not_after,
                "restore: published after the backup",
            )?;
        }
        for (key, revoked) in unaccounted {
            // Never reused, and never valid: the CA no longer knows what it says. A serial the
            // index gives to another issuer stays theirs (serials are unique across issuers).
            match txn.get::<Serials>(&key.serial)? {
                Some(issuer) if issuer != key.issuer => continue,
                Some(_) => {}
                None => txn.put::<Serials>(&key.serial, &key.issuer)?,
            }
            let (revocation, why) = match revoked {
                Some(published) => (
                    published,
                    "restore: issued after the backup, revoked as published",
                ),
                None => (
                    PublishedRevocation {
                        revoked_at: now,
                        reason: RevocationReason::Unspecified,
                        invalidity_date: None,
                    },
                    "restore: issued after the backup, not in it",
                ),
            };
            // Unknown validity: kept on CRLs for a card's whole lifetime.
            write_revocation(
                txn,
                &key,
                revocation,
                now.plus_seconds(6 * 366 * 86_400),
                why,
            )?;
        }
        Ok(())
    })
}

/// Writes one revocation as the restore takes it back, with its audit event.
pub(super) fn write_revocation(
    txn: &mut crate::store::Txn<'_>,
    key: &CertKey,
    revocation: PublishedRevocation,
    not_after: Timestamp,
    requested_by: &str,
) -> Result<(), BackupError> {
    txn.changed(crate::store::status_change(key));
    txn.put::<Revocations>(
        key,
        &RevocationRecord {
            revoked_at: revocation.revoked_at,
            reason: revocation.reason,
            invalidity_date: revocation.invalidity_date,
            not_after,
        },
    )?;
    txn.audit(AuditEvent::CertificateRevoked {
        issuer: key.issuer.to_hex(),
        serial: key.serial.to_hex(),
        reason: revocation
            .reason
            .code()
            .map(|_| revocation.reason.to_string()),
        invalidity_date: revocation.invalidity_date,
        requested_by: requested_by.into(),
    });
    Ok(())
}

/// Copies the files of `from` into `to` (created), one level: a RocksDB directory.
pub(super) fn copy_tree(from: &Path, to: &Path) -> Result<(), BackupError> {
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
