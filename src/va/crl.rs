//! CRL and ARL publication (RFC 5280 §5; docs/design.md#crl-and-arl).
//!
//! A CRL is generated from the revocation table in one pass ([`crate::x509::crl::CrlWriter`]),
//! signed once by the CA key in the HSM, and published atomically into the publish directory,
//! where any web server or CDN can serve it, and into memory, where the daemon serves it.
//!
//! CRL numbers go up by exactly one (RGS A4 III.2) and are persisted before publication
//! (invariant 4, docs/invariants.md): the signed CRL is first written to
//! `<name>.crl.pending-<n>` and synced, then number `n` is committed with its audit event, then
//! the file is renamed into place. A crash before the commit leaves a pending file that is
//! deleted at the next start (`n` was never used); a crash after it leaves one that is renamed
//! into place (`n` was published). Either way no number is skipped or reused.
use std::collections::HashMap;

/// How far a CRL's thisUpdate may run ahead of the clock (two CRLs of a CA in one second take
/// consecutive seconds).
pub const MAX_AHEAD_SECONDS: u64 = 60;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use der::Encode;
use der::asn1::OctetString;
use x509_cert::ext::Extension;

use super::VaError;
use crate::audit::AuditEvent;
use crate::issuer::Issuer;
use crate::store::Store;
use crate::store::schema::{Meta, Revocations, meta_keys};
use crate::x509::crl::{CrlHeader, CrlWriter};
use crate::x509::{Timestamp, ext, keys, oid};

/// When and how long CRLs are valid.
#[derive(Clone, Debug)]
pub struct CrlSettings {
    /// nextUpdate - thisUpdate for CRLs (RGS ***; 26 h, a choice: docs/design.md#crl-and-arl).
    pub next_update_seconds: u64,
    /// Regenerate at least this often (6 h).
    pub interval_seconds: u64,
    /// After a revocation, wait this long so that several revocations make one CRL.
    pub coalesce_seconds: u64,
    /// nextUpdate - thisUpdate for the root's ARL.
    pub arl_next_update_seconds: u64,
}

/// What a CRL is for.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum CrlKind {
    /// The issuing CA's CRL (holder certificates).
    Crl,
    /// The root's ARL (CA certificates).
    Arl,
}

/// One CA whose CRL is published.
#[derive(Clone, Debug)]
pub struct CrlSource {
    /// File name without `.crl` (`ac-agents`, `racine`).
    pub name: String,
    pub issuer: Arc<Issuer>,
    pub kind: CrlKind,
}

/// A published CRL.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PublishedCrl {
    pub name: String,
    pub number: u64,
    pub this_update: Timestamp,
    pub next_update: Timestamp,
    pub entries: usize,
    pub path: PathBuf,
    #[serde(skip)]
    pub der: Bytes,
}

/// The CRL or ARL of `name` in the publish directory `dir`, if one is there and reads.
pub fn read_published(dir: &std::path::Path, name: &str) -> Option<PublishedCrl> {
    let path = dir.join(format!("{name}.crl"));
    let der = std::fs::read(&path).ok()?;
    let summary = crate::x509::crl::summarize(&der).ok()?;
    Some(PublishedCrl {
        name: name.to_owned(),
        number: summary.number.unwrap_or(0),
        this_update: summary.this_update,
        next_update: summary
            .next_update
            .unwrap_or(Timestamp::from_unix_seconds(0)),
        entries: summary.entries,
        path,
        der: Bytes::from(der),
    })
}

/// Generates and publishes the CRLs of its sources.
pub struct CrlPublisher {
    store: Store,
    dir: PathBuf,
    settings: CrlSettings,
    /// Grows when a CA rollover adds a CA while the daemon runs.
    sources: RwLock<Vec<CrlSource>>,
    latest: RwLock<HashMap<String, PublishedCrl>>,
    /// One generation at a time (numbers go up by one).
    generating: Mutex<()>,
    /// Set by a revocation; the background task coalesces and publishes.
    pub trigger: tokio::sync::Notify,
}

impl core::fmt::Debug for CrlPublisher {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CrlPublisher")
            .field("dir", &self.dir)
            .finish()
    }
}

impl CrlPublisher {
    pub fn new(
        store: Store,
        dir: PathBuf,
        settings: CrlSettings,
        sources: Vec<CrlSource>,
    ) -> Result<Self, VaError> {
        std::fs::create_dir_all(&dir)
            .map_err(|e| VaError::Io(format!("{}: {e}", dir.display())))?;
        let publisher = Self {
            store,
            dir,
            settings,
            sources: RwLock::new(Vec::new()),
            latest: RwLock::new(HashMap::new()),
            generating: Mutex::new(()),
            trigger: tokio::sync::Notify::new(),
        };
        for source in sources {
            publisher.add_source(source)?;
        }
        Ok(publisher)
    }

    /// Starts publishing the CRL of one more CA (a CA rollover while the daemon runs); the
    /// next [`CrlPublisher::publish_all`] includes it.
    pub fn add_source(&self, source: CrlSource) -> Result<(), VaError> {
        if self.sources().iter().any(|s| s.name == source.name) {
            return Ok(());
        }
        self.recover_pending(&source)?;
        self.load_published(&source);
        self.sources
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(source);
        Ok(())
    }

    /// Stops publishing the CRL of a CA whose key was destroyed (every certificate it issued
    /// expired); the last one published stays served.
    pub fn retire(&self, name: &str) {
        self.sources
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|s| s.name != name);
    }

    /// Whether `name` is the CRL of a CA this publisher publishes for.
    pub fn publishes(&self, name: &str) -> bool {
        self.sources
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|s| s.name == name)
    }

    fn sources(&self) -> Vec<CrlSource> {
        self.sources
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn settings(&self) -> &CrlSettings {
        &self.settings
    }

    /// The CRL served as `/crl/<name>.crl`.
    pub fn latest(&self, name: &str) -> Option<PublishedCrl> {
        self.latest
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    pub fn all_latest(&self) -> Vec<PublishedCrl> {
        self.latest
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.crl"))
    }

    /// Completes or discards the pending files of an interrupted publication.
    fn recover_pending(&self, source: &CrlSource) -> Result<(), VaError> {
        {
            let persisted = self.persisted_number(source)?;
            let prefix = format!("{}.crl.pending-", source.name);
            let Ok(entries) = std::fs::read_dir(&self.dir) else {
                return Ok(());
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(number) = name
                    .strip_prefix(&prefix)
                    .and_then(|n| n.parse::<u64>().ok())
                else {
                    continue;
                };
                if Some(number) == persisted {
                    tracing::warn!(crl = %source.name, number, "completing the publication of an interrupted CRL");
                    rename_durably(&entry.path(), &self.file(&source.name))?;
                } else {
                    tracing::warn!(crl = %source.name, number, "discarding a CRL whose number was never committed");
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Ok(())
    }

    /// Serves the CRLs already in the publish directory until new ones are made.
    fn load_published(&self, source: &CrlSource) {
        if let Some(published) = read_published(&self.dir, &source.name) {
            self.latest
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(source.name.clone(), published);
        }
    }

    fn persisted_number(&self, source: &CrlSource) -> Result<Option<u64>, VaError> {
        let key = meta_keys::crl_number(source.issuer.id);
        Ok(match self.store.get::<Meta>(&key)? {
            Some(bytes) => {
                Some(u64::from_be_bytes(bytes.as_slice().try_into().map_err(
                    |_| VaError::Encoding("stored CRL number".into()),
                )?))
            }
            None => None,
        })
    }

    /// Generates, signs and publishes every CRL now, each CA on its own: one that fails does
    /// not stop the others (the first error is returned once all were tried). Blocking (run
    /// it off the async runtime).
    pub fn publish_all(&self, now: Timestamp) -> Result<Vec<PublishedCrl>, VaError> {
        let mut out = Vec::new();
        let mut first_error = None;
        for source in self.sources() {
            match self.publish_source(&source, now) {
                Ok(published) => out.push(published),
                Err(error) => {
                    tracing::error!(crl = %source.name, %error, "CRL publication failed");
                    first_error.get_or_insert(error);
                }
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(out),
        }
    }

    /// Why the CRL of `source` must be made again now, if it must: it is missing, past half
    /// its validity, or it does not list every revocation the store holds for its CA (a
    /// revocation made while the daemon was down, one whose trigger a crash lost, an intent
    /// revoked at start-up). Revocations are final and never leave the table, so a count that
    /// differs is a CRL that differs.
    pub fn stale(&self, source: &CrlSource, now: Timestamp) -> Result<Option<String>, VaError> {
        let Some(latest) = self.latest(&source.name) else {
            return Ok(Some("no CRL published yet".into()));
        };
        let half_life = match source.kind {
            CrlKind::Crl => self.settings.next_update_seconds,
            CrlKind::Arl => self.settings.arl_next_update_seconds,
        } / 2;
        if latest.next_update <= now.plus_seconds(half_life) {
            return Ok(Some("past half of its validity".into()));
        }
        let revoked = self.store.count::<Revocations>(&source.issuer.id.0)?;
        if revoked != latest.entries as u64 {
            return Ok(Some(format!(
                "the store holds {revoked} revocations, the CRL lists {}",
                latest.entries
            )));
        }
        Ok(None)
    }

    /// Publishes every CRL that is stale or named in `force` (all of them with `force_all`),
    /// each CA on its own. Returns the names of those that failed. Blocking.
    fn converge(
        &self,
        now: Timestamp,
        force_all: bool,
        force: &std::collections::BTreeSet<String>,
    ) -> std::collections::BTreeSet<String> {
        let mut failed = std::collections::BTreeSet::new();
        for source in self.sources() {
            let why = if force_all {
                Some("scheduled".to_owned())
            } else if force.contains(&source.name) {
                Some("an earlier attempt failed".to_owned())
            } else {
                match self.stale(&source, now) {
                    Ok(why) => why,
                    Err(error) => Some(format!("its state could not be read ({error})")),
                }
            };
            let Some(why) = why else { continue };
            tracing::info!(crl = %source.name, %why, "publishing a CRL");
            if let Err(error) = self.publish_source(&source, now) {
                tracing::error!(crl = %source.name, %error, "CRL publication failed; retrying shortly");
                failed.insert(source.name.clone());
            }
        }
        failed
    }

    /// Generates, signs and publishes one CRL (by its position among the sources).
    pub fn publish(&self, index: usize, now: Timestamp) -> Result<PublishedCrl, VaError> {
        let source = self
            .sources()
            .get(index)
            .cloned()
            .ok_or(VaError::UnknownIssuer)?;
        self.publish_source(&source, now)
    }

    fn publish_source(&self, source: &CrlSource, now: Timestamp) -> Result<PublishedCrl, VaError> {
        let _one_at_a_time = self.generating.lock().unwrap_or_else(|p| p.into_inner());
        // thisUpdate goes up with every CRL of a CA, even two in one second or a clock that
        // stepped back: HTTP caches and If-Modified-Since compare it (one-second resolution),
        // and a CRL must never look as old as the one it replaces.
        // Never more than MAX_AHEAD_SECONDS ahead of the clock, so that at most one number a
        // second is used: what a restore with no CRL to go on relies on (the `backup` module).
        let now = match self.latest(&source.name) {
            Some(previous) if previous.this_update >= now.plus_seconds(MAX_AHEAD_SECONDS) => {
                return Err(VaError::NotReady(format!(
                    "{}: CRLs are being made faster than one a second; the next one waits for the clock",
                    source.name
                )));
            }
            Some(previous) if previous.this_update >= now => previous.this_update.plus_seconds(1),
            _ => now,
        };
        let started = std::time::Instant::now();
        let issuer = &source.issuer;
        let previous = self.persisted_number(source)?;
        let number = previous.map_or(1, |n| n + 1);
        let next_update = now.plus_seconds(match source.kind {
            CrlKind::Crl => self.settings.next_update_seconds,
            CrlKind::Arl => self.settings.arl_next_update_seconds,
        });
        let encoding = |e: der::Error| VaError::Encoding(e.to_string());

        // One pass over the revocation table, in key order.
        let expected = self.latest(&source.name).map_or(1024, |c| c.entries + 1024);
        let mut writer = CrlWriter::new(expected);
        let prefix = issuer.id.0;
        for row in self.store.scan::<Revocations>(&prefix, &prefix)? {
            let (key, record) = row?;
            writer
                .push(
                    key.serial.as_bytes(),
                    record.revoked_at,
                    record.reason.code(),
                    record.invalidity_date,
                )
                .map_err(encoding)?;
        }
        let entries = writer.entries();
        let algorithm = issuer
            .signature_algorithm()
            .map_err(|e| VaError::Encoding(e.to_string()))?
            .to_der()
            .map_err(encoding)?;
        let extensions = crl_extensions(issuer, number).map_err(encoding)?;
        let tbs = writer
            .finish_tbs(&CrlHeader {
                signature_algorithm: &algorithm,
                issuer: &issuer.subject_der,
                this_update: now,
                next_update,
                extensions: &extensions,
            })
            .map_err(encoding)?;
        let signature = issuer.key.sign(tbs)?;
        issuer.key.verify(tbs, &signature)?;
        let crl = writer.finish(&algorithm, &signature).map_err(encoding)?;

        // Pending file (synced), then the number, then the rename.
        let pending = self
            .dir
            .join(format!("{}.crl.pending-{number}", source.name));
        write_synced(&pending, crl.as_der())?;
        crate::failpoint::hit("crl-before-commit");
        let sha256 = hex::encode(keys::sha256(crl.as_der()));
        let crl_key = meta_keys::crl_number(issuer.id);
        let name = source.name.clone();
        let committed = self.store.commit(move |txn| -> Result<(), VaError> {
            txn.changed(crate::store::crl_change(&name, number));
            let current = match txn.get::<Meta>(&crl_key)? {
                Some(bytes) => {
                    Some(u64::from_be_bytes(bytes.as_slice().try_into().map_err(
                        |_| VaError::Encoding("stored CRL number".into()),
                    )?))
                }
                None => None,
            };
            if current != previous {
                return Err(VaError::Encoding(
                    "the CRL number moved during generation".into(),
                ));
            }
            txn.put::<Meta>(&crl_key, &number.to_be_bytes().to_vec())?;
            txn.audit(AuditEvent::CrlPublished {
                name,
                number,
                this_update: now,
                next_update,
                entries: entries as u64,
                sha256,
            });
            Ok(())
        });
        if let Err(error) = committed {
            let _ = std::fs::remove_file(&pending);
            return Err(error);
        }
        crate::failpoint::hit("crl-after-commit");
        let path = self.file(&source.name);
        rename_durably(&pending, &path)?;
        let published = PublishedCrl {
            name: source.name.clone(),
            number,
            this_update: now,
            next_update,
            entries,
            path,
            der: crl.into_bytes(),
        };
        self.latest
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(source.name.clone(), published.clone());
        tracing::info!(
            crl = %source.name,
            number,
            entries,
            ms = started.elapsed().as_millis() as u64,
            "CRL published"
        );
        Ok(published)
    }

    /// Keeps the published CRLs equal to the store until `shutdown`: at start (without
    /// waiting), after every revocation (coalesced), every minute (a count per CA), at least
    /// every interval, and after a
    /// failure with a backoff of seconds (1 s doubling up to 10 s), so that a CRL follows
    /// within seconds of the HSM coming back. Each CA is published on its own.
    pub async fn run(
        self: Arc<Self>,
        shutdown: tokio_util::sync::CancellationToken,
        clock: Arc<dyn crate::x509::time::Clock>,
    ) {
        const FIRST_RETRY: std::time::Duration = std::time::Duration::from_secs(1);
        const LAST_RETRY: std::time::Duration = std::time::Duration::from_secs(10);
        // Revocations that no trigger announces (intents revoked after an HSM failure, an
        // interrupted ceremony resolved in the daemon) are caught by this check, a count of keys
        // per CA.
        const CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
        let interval = std::time::Duration::from_secs(self.settings.interval_seconds.max(1));
        let mut failed = std::collections::BTreeSet::new();
        let mut force_all = false;
        let mut retry = FIRST_RETRY;
        let mut next_scheduled = tokio::time::Instant::now() + interval;
        loop {
            let this = self.clone();
            let now = clock.now();
            let previous = std::mem::take(&mut failed);
            let all = std::mem::take(&mut force_all);
            failed = match tokio::task::spawn_blocking(move || this.converge(now, all, &previous))
                .await
            {
                Ok(failed) => failed,
                Err(error) => {
                    tracing::error!(%error, "CRL publication task failed");
                    self.sources().into_iter().map(|s| s.name).collect()
                }
            };
            if all {
                next_scheduled = tokio::time::Instant::now() + interval;
            }
            let wait = if failed.is_empty() {
                retry = FIRST_RETRY;
                next_scheduled
                    .saturating_duration_since(tokio::time::Instant::now())
                    .min(CHECK_EVERY)
            } else {
                let wait = retry;
                retry = (retry * 2).min(LAST_RETRY);
                wait
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.trigger.notified() => {
                    // Let a burst of revocations settle into one CRL.
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(std::time::Duration::from_secs(self.settings.coalesce_seconds)) => {}
                    }
                }
                _ = tokio::time::sleep(wait) => {}
            }
            if tokio::time::Instant::now() >= next_scheduled {
                force_all = true;
            }
        }
    }
}

/// authorityKeyIdentifier, cRLNumber and ExpiredCertsOnCRL (expired revoked entries are kept,
/// EN 319 411-2 CSS-6.3.10-03..06: GeneralizedTime = the CA's notBefore), all non-critical.
fn crl_extensions(issuer: &Issuer, number: u64) -> Result<Vec<u8>, der::Error> {
    let number_bytes = number.to_be_bytes();
    let number = x509_cert::ext::pkix::CrlNumber(der::asn1::Uint::new(&number_bytes)?);
    let extensions = vec![
        ext::authority_key_identifier(&issuer.key_identifier)?,
        Extension {
            extn_id: oid::EXT_CRL_NUMBER,
            critical: false,
            extn_value: OctetString::new(number.to_der()?)?,
        },
        Extension {
            extn_id: oid::EXT_EXPIRED_CERTS_ON_CRL,
            critical: false,
            extn_value: OctetString::new(issuer.not_before.to_generalized_time()?.to_der()?)?,
        },
    ];
    extensions.to_der()
}

/// Writes the pending file and syncs it and its directory: its name must be durable before the
/// number it carries is committed, or a crash could lose a CRL whose number was used.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), VaError> {
    crate::durable::write_synced(path, bytes)
        .map_err(|e| VaError::Io(format!("{}: {e}", path.display())))
}

/// Renames and syncs the directory, so that the new name survives a power cut.
fn rename_durably(from: &Path, to: &Path) -> Result<(), VaError> {
    crate::durable::rename(from, to)
        .map_err(|e| VaError::Io(format!("{} -> {}: {e}", from.display(), to.display())))
}
