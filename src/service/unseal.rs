//! Activation under dual control (docs/ceremonies.md#the-pin): the `split-pin` ceremony's
//! work, and the sealed daemon's intake of the officers' shares (`sceau unseal`).
//!
//! `split-pin` writes each share to a file of its own before the token's PIN changes, records
//! the split (holders and digests, never a share) before it too, and only then calls C_SetPIN:
//! whatever point a crash stops it at, the token's PIN is one that can still be had (the former
//! source offline, the former split's shares through the daemon, or the new shares).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{Service, ServiceError};
use crate::audit::AuditEvent;
use crate::ca::CaError;
use crate::ca::ceremony::control::{self, DualControl};
use crate::ca::ceremony::pin_split::{
    self, Challenge, Offered, PIN_LENGTH, UnsealError, Unsealing,
};
use crate::ca::ceremony::quorum::OfficerSet;
use crate::config::Config;
use crate::hsm::{Pin, PinSlot, PinSource};
use crate::store::Store;
use crate::x509::time::Clock;

/// The shortest PIN a split may have (hexadecimal: 64 bits).
const MIN_PIN_LENGTH: usize = 16;

fn invalid(field: &'static str, detail: impl Into<String>) -> ServiceError {
    ServiceError::Invalid {
        field,
        detail: detail.into(),
    }
}

/// The officers in force, for a CA under dual control.
fn officers(store: &Store) -> Result<OfficerSet, ServiceError> {
    match control::dual_control(store)? {
        Some(DualControl::Officers(set)) => Ok(set),
        Some(DualControl::SinglePerson { .. }) => Err(invalid(
            "operation",
            "this CA has no security officers to split the PIN among",
        )),
        None => Err(ServiceError::NotInitialized),
    }
}

/// Why the PIN's current split no longer fits the officer set `set` (a holder withdrawn, the
/// quorum changed, fewer holders in office than it needs): `None` when it fits, or when the
/// PIN is not split.
pub(super) fn split_misfit(
    store: &Store,
    set: &OfficerSet,
) -> Result<Option<String>, ServiceError> {
    let Some(split) = pin_split::split_state(store)?.and_then(|s| s.current) else {
        return Ok(None);
    };
    let persons: std::collections::BTreeSet<String> = set
        .officers
        .iter()
        .filter(|o| o.active)
        .filter_map(|o| crate::ca::ceremony::quorum::person_of(&o.certificate).ok())
        .collect();
    let in_office = split
        .holders
        .iter()
        .filter(|h| persons.contains(&h.person))
        .count();
    let withdrawn = split.holders.len() - in_office;
    let mut why = Vec::new();
    if withdrawn > 0 {
        why.push(format!(
            "{withdrawn} holder(s) of a share are no longer officers (with {} other shares, theirs still make the PIN)",
            split.quorum.saturating_sub(1)
        ));
    }
    if set.quorum != split.quorum {
        why.push(format!(
            "the quorum is now {}, the PIN's split needs {}",
            set.quorum, split.quorum
        ));
    }
    if in_office < split.quorum {
        why.push(format!(
            "{in_office} officers in office hold a share, {} are needed to unseal",
            split.quorum
        ));
    }
    Ok((!why.is_empty()).then(|| {
        format!(
            "{}: run split-pin through this daemon before it stops",
            why.join("; ")
        )
    }))
}

/// Writes each share file into `out` (created, mode 0700; each file 0600, synced).
fn write_shares(out: &Path, files: &[pin_split::ShareFile]) -> Result<Vec<PathBuf>, ServiceError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let io = |path: &Path, e: std::io::Error| CaError::Io(format!("{}: {e}", path.display()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(out)
        .map_err(|e| {
            invalid(
                "parameters.shares-out",
                format!("{}: {e} (a new directory)", out.display()),
            )
        })?;
    let mut written = Vec::new();
    for file in files {
        let path = out.join(format!("share-{}.json", file.index));
        let bytes = zeroize::Zeroizing::new(
            serde_json::to_vec_pretty(file).map_err(|e| CaError::Encoding(e.to_string()))?,
        );
        let mut handle = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        std::io::Write::write_all(&mut handle, &bytes).map_err(|e| io(&path, e))?;
        handle.sync_all().map_err(|e| io(&path, e))?;
        written.push(path);
    }
    std::fs::File::open(out)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(out, e))?;
    if let Some(parent) = out.parent() {
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(|e| io(parent, e))?;
    }
    Ok(written)
}

impl Service {
    /// The `split-pin` ceremony: a new random PIN on the token, dealt out to the officers as
    /// share files in `out`. Offline with the PIN's configured source, or through a daemon that
    /// the officers unsealed (which then holds the new PIN).
    pub(super) async fn split_pin(&self, out: PathBuf) -> Result<serde_json::Value, ServiceError> {
        let slot = match &self.config.hsm.pin {
            PinSource::Split(slot) if self.va().is_some() => Some(slot.clone()),
            PinSource::Split(_) => {
                return Err(invalid(
                    "operation",
                    "the PIN is split already: run split-pin through the unsealed daemon (sceau serve, sceau unseal)",
                ));
            }
            _ if self.va().is_some() => {
                return Err(invalid(
                    "operation",
                    "the daemon reads the PIN from its configured source, which would hold the former PIN: stop it and run split-pin offline",
                ));
            }
            _ => None,
        };
        // The daemon may see a filesystem of its own (systemd's PrivateTmp): its shares go
        // where its operators find them, under its data directory.
        let climbs = out
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir));
        if slot.is_some() && (climbs || !out.starts_with(&self.config.data_dir)) {
            return Err(invalid(
                "parameters.shares-out",
                format!(
                    "run through the daemon, the shares go under its data directory {}",
                    self.config.data_dir.display()
                ),
            ));
        }
        let (service, hsm) = (self.clone(), self.hsm()?.clone());
        Self::blocking(move || {
            let store = &service.store;
            let set = officers(store)?;
            let (ca, now) = (control::ca_id(store)?, service.now());
            let (shortest, longest) = hsm.pin_length_range().map_err(CaError::from)?;
            let length = PIN_LENGTH.min(longest).max(shortest);
            if length < MIN_PIN_LENGTH {
                return Err(invalid(
                    "operation",
                    format!(
                        "the token takes PINs of at most {longest} characters: a split PIN needs {MIN_PIN_LENGTH} or more"
                    ),
                ));
            }
            let split = control::new_id()?;
            let pin = Pin::random(length).map_err(|e| CaError::Io(e.to_string()))?;
            let revocations = store.clone();
            let revoked = move |c: &[u8]| control::revoked_in(&revocations, c);
            let (record, files) = pin_split::deal(&ca, &split, &pin, &set, now, &revoked)
                .map_err(|e| invalid("parameters", e.to_string()))?;
            let paths = write_shares(&out, &files)?;
            drop(files);
            // Recorded, pending, before the PIN changes: after a crash in between, the token
            // holds the current split's PIN or this one, and both can unseal.
            let pending = record.clone();
            store.commit(move |txn| -> Result<(), CaError> {
                let mut state = pin_split::txn_split_state(txn)?.unwrap_or_default();
                state.pending = Some(pending);
                pin_split::put_split_state(txn, &state)
            })?;
            crate::failpoint::hit("split-pin-before-set-pin");
            let kept = pin.duplicate();
            if let Err(error) = hsm.change_pin(pin) {
                // Only the token's own refusal of a PIN says nothing changed on it.
                if !matches!(error, crate::hsm::HsmError::PinRefused(_)) {
                    return Err(ServiceError::Ca(CaError::Io(format!(
                        "C_SetPIN: {error}: the token may hold the former PIN or the new one; both splits can unseal it (the new shares are in {})",
                        out.display()
                    ))));
                }
                // Refused by the token: nothing changed on it; the new split goes.
                store.commit(move |txn| -> Result<(), CaError> {
                    let mut state = pin_split::txn_split_state(txn)?.unwrap_or_default();
                    state.pending = None;
                    pin_split::put_split_state(txn, &state)
                })?;
                for path in &paths {
                    let _ = std::fs::remove_file(path);
                }
                let _ = std::fs::remove_dir(&out);
                return Err(ServiceError::Ca(CaError::Refused(format!(
                    "the token refused the new PIN (C_SetPIN: {error}): its PIN is unchanged"
                ))));
            }
            if let Some(slot) = &slot {
                slot.fill(kept);
            }
            let holders: Vec<String> = record.holders.iter().map(|h| h.name.clone()).collect();
            let (id, quorum, event_holders) = (record.id.clone(), record.quorum, holders.clone());
            store.commit(move |txn| -> Result<(), CaError> {
                let state = pin_split::txn_split_state(txn)?.unwrap_or_default();
                pin_split::put_split_state(txn, &state.confirmed(&id))?;
                txn.audit(AuditEvent::PinSplit {
                    split: id,
                    quorum,
                    holders: event_holders,
                });
                Ok(())
            })?;
            Ok(serde_json::json!({
                "split": record.id,
                "quorum": format!("{quorum} of {}", holders.len()),
                "holders": holders,
                "pin_length": length,
                "shares": paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            }))
        })
        .await
    }
}

/// What a sealed daemon does: take the officers' shares until the PIN is whole again.
pub struct Sealed {
    store: Store,
    clock: Arc<dyn Clock>,
    slot: Arc<PinSlot>,
    unsealing: Mutex<Unsealing>,
    /// The split that made the PIN and the officers whose shares did, for the audit event
    /// once the CA is open.
    unsealed_by: Mutex<Option<(String, Vec<String>)>>,
    /// Splits whose PIN the token refused since this start.
    set_aside: Mutex<std::collections::BTreeSet<String>>,
    done: tokio::sync::Notify,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealed")
            .field("unsealed", &self.slot.is_filled())
            .finish_non_exhaustive()
    }
}

/// What `POST /admin/unseal` answers.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Progress {
    pub unsealed: bool,
    pub have: usize,
    pub need: usize,
}

impl Sealed {
    /// A sealed daemon's intake, when the PIN is split (`pin_split = true`); `None` otherwise.
    pub fn new(
        config: &Config,
        store: Store,
        clock: Arc<dyn Clock>,
    ) -> Result<Option<Self>, ServiceError> {
        let PinSource::Split(slot) = &config.hsm.pin else {
            return Ok(None);
        };
        let splits = pin_split::split_state(&store)?
            .filter(|s| s.current.is_some() || s.pending.is_some())
            .ok_or_else(|| {
                invalid(
                    "hsm.pin_split",
                    "this store records no split of the PIN: run the split-pin ceremony offline, with the PIN's former source, first",
                )
            })?;
        let unsealing = Unsealing::new(control::ca_id(&store)?, splits)?;
        Ok(Some(Self {
            store,
            clock,
            slot: slot.clone(),
            unsealing: Mutex::new(unsealing),
            unsealed_by: Mutex::new(None),
            set_aside: Mutex::new(std::collections::BTreeSet::new()),
            done: tokio::sync::Notify::new(),
        }))
    }

    pub fn challenge(&self) -> Challenge {
        self.lock().challenge()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Unsealing> {
        self.unsealing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes one officer's presentation of their share (CMS SignedData, DER). A refusal is
    /// recorded in the audit log (`unseal_refused`), and takes nothing.
    pub async fn present(
        self: &Arc<Self>,
        presentation: Vec<u8>,
    ) -> Result<Progress, ServiceError> {
        let sealed = self.clone();
        Service::blocking(move || {
            // One presentation at a time, and never beside a reseal.
            let mut unsealing = sealed.lock();
            if sealed.slot.is_filled() {
                return Err(ServiceError::Unseal(UnsealError::Unsealed));
            }
            let officers = officers(&sealed.store)?;
            let revocations = sealed.store.clone();
            let revoked = move |c: &[u8]| control::revoked_in(&revocations, c);
            let now = sealed.clock.now();
            let offered = match unsealing.offer(&presentation, &officers, now, &revoked) {
                Ok(offered) => offered,
                Err(error) => {
                    let reason = error.to_string();
                    sealed.store.commit(move |txn| -> Result<(), CaError> {
                        txn.audit(AuditEvent::UnsealRefused { reason });
                        Ok(())
                    })?;
                    return Err(ServiceError::Unseal(error));
                }
            };
            match offered {
                Offered::Waiting { have, need } => {
                    tracing::info!(have, need, "unseal: a share was taken");
                    Ok(Progress {
                        unsealed: false,
                        have,
                        need,
                    })
                }
                Offered::Complete { pin, split } => {
                    let challenge = unsealing.challenge();
                    sealed.slot.fill(pin);
                    *sealed.unsealed_by.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some((split, challenge.given.clone()));
                    sealed.done.notify_one();
                    tracing::info!("unseal: the PIN is whole; opening the CA");
                    Ok(Progress {
                        unsealed: true,
                        have: unsealing.given(),
                        need: challenge.quorum,
                    })
                }
            }
        })
        .await
    }

    /// Waits until a quorum of shares made the PIN.
    pub async fn unsealed(&self) {
        while !self.slot.is_filled() {
            self.done.notified().await;
        }
    }

    /// Forgets the PIN and every share, and asks again under a new nonce and key; when the
    /// token refused the PIN (`wrong_pin`), the split that made it is set aside for the life of
    /// this process, so that its shares never spend another of the token's attempts.
    pub fn reseal(&self, wrong_pin: bool) -> Result<(), ServiceError> {
        let mut unsealing = self.lock();
        self.slot.empty();
        let made_by = self
            .unsealed_by
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let mut set_aside = self.set_aside.lock().unwrap_or_else(|p| p.into_inner());
        if let (true, Some((split, _))) = (wrong_pin, made_by) {
            set_aside.insert(split);
        }
        let mut splits = pin_split::split_state(&self.store)?.unwrap_or_default();
        let keep =
            |record: Option<pin_split::SplitRecord>| record.filter(|r| !set_aside.contains(&r.id));
        splits.current = keep(splits.current);
        splits.pending = keep(splits.pending);
        *unsealing = Unsealing::new(control::ca_id(&self.store)?, splits)?;
        Ok(())
    }

    /// Once the CA opened with the PIN: the split that made it is the token's (a pending one
    /// becomes current), and the audit log records who unsealed.
    pub fn record(&self) -> Result<(), ServiceError> {
        let Some((split, persons)) = self
            .unsealed_by
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return Ok(());
        };
        self.store.commit(move |txn| -> Result<(), CaError> {
            if let Some(state) = pin_split::txn_split_state(txn)? {
                pin_split::put_split_state(txn, &state.confirmed(&split))?;
            }
            txn.audit(AuditEvent::Unsealed { split, persons });
            Ok(())
        })?;
        Ok(())
    }
}
