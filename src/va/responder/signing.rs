//! Keeping the responses signed: statuses set, signing jobs run and their responses installed and persisted, read back at start, re-signed before half their validity.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use tokio::sync::Semaphore;

use super::{Entry, Responder, SerialKey, SigningJob};
use crate::store::schema::{ExpiryIndex, OcspResponses, Revocations};
use crate::store::{CertKey, ResponseKey, Store};
use crate::va::VaError;
use crate::va::responses::{CertIdHash, ResponseSigner, SignedResponse, Status};
use crate::x509::revocation::RevocationReason;
use crate::x509::{Serial, Timestamp};

impl Responder {
    /// Sets a certificate's status and returns the status in force afterwards. A changed status
    /// drops its old responses at once, so that a revoked certificate is never answered "good"
    /// while its new responses are being signed. Revocation is final: once a certificate is
    /// revoked here, nothing (a late issuance notice, a re-signing job read before the
    /// revocation) makes it good again or changes its revocation time and reason; the returned
    /// status then says so, and the caller signs that instead.
    pub fn set_status(&self, key: &CertKey, status: Status) -> Option<Status> {
        let index = self.issuer_index(key.issuer)?;
        let serial = SerialKey::new(key.serial.as_bytes())?;
        let issuer = self.issuer(index)?;
        let mut shard = issuer.write(&serial);
        let in_force = match shard.get_mut(&serial) {
            Some(entry) if entry.status == status => status,
            Some(entry) if !may_replace(entry.status, status) => {
                tracing::debug!(serial = %key.serial, "a late status change of a revoked certificate is ignored");
                entry.status
            }
            Some(entry) => {
                entry.status = status;
                entry.responses = [None, None];
                status
            }
            None => {
                shard.insert(
                    serial,
                    Box::new(Entry {
                        status,
                        responses: [None, None],
                    }),
                );
                self.entries.fetch_add(1, Ordering::Relaxed);
                status
            }
        };
        drop(shard);
        let mut cache = self.unknown.lock().unwrap_or_else(|p| p.into_inner());
        for hash in CertIdHash::ALL {
            cache.remove(&(index, hash, serial));
        }
        Some(in_force)
    }

    /// Signs both responses of each job, installs them, and persists them. Returns how many
    /// certificates were signed.
    pub async fn sign_jobs(
        self: &Arc<Self>,
        jobs: Vec<SigningJob>,
        now: Timestamp,
    ) -> Result<usize, VaError> {
        const IN_FLIGHT: usize = 64;
        let limit = Arc::new(Semaphore::new(IN_FLIGHT));
        let mut tasks = tokio::task::JoinSet::new();
        let mut rows = Vec::new();
        let mut signed = 0;
        let mut first_error = None;
        for job in jobs {
            let permit = limit
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| VaError::ShuttingDown)?;
            let this = Arc::clone(self);
            tasks.spawn(async move {
                let _permit = permit;
                this.sign_one(job, now).await
            });
            while let Some(done) = tasks.try_join_next() {
                collect(done, &mut rows, &mut signed, &mut first_error);
            }
            if rows.len() >= 1024 {
                self.persist(std::mem::take(&mut rows)).await?;
            }
        }
        while let Some(done) = tasks.join_next().await {
            collect(done, &mut rows, &mut signed, &mut first_error);
        }
        self.persist(rows).await?;
        match first_error {
            Some(error) if signed == 0 => Err(error),
            Some(error) => {
                tracing::warn!(%error, signed, "some OCSP responses could not be signed; they will be retried");
                Ok(signed)
            }
            None => Ok(signed),
        }
    }

    pub(super) async fn sign_one(
        &self,
        job: SigningJob,
        now: Timestamp,
    ) -> Result<Vec<(ResponseKey, Option<Vec<u8>>)>, VaError> {
        let index = self
            .issuer_index(job.key.issuer)
            .ok_or(VaError::UnknownIssuer)?;
        let issuer = self.issuer(index).ok_or(VaError::UnknownIssuer)?;
        // A job read before a revocation is not signed at all: the revocation's own job is.
        if self
            .status_of(&job.key)
            .is_some_and(|current| current != job.status)
        {
            return Ok(Vec::new());
        }
        let identity = &issuer.identity;
        let Some(signer) = issuer.signer() else {
            return Err(VaError::NotReady("no responder key on this node".into()));
        };
        let next_update = now.plus_seconds(self.validity_seconds);
        let mut responses: [Option<SignedResponse>; 2] = [None, None];
        let mut rows = Vec::with_capacity(2);
        for hash in CertIdHash::ALL {
            let cert_id = identity
                .cert_id(hash, &job.key.serial)
                .map_err(|e| VaError::Encoding(e.to_string()))?;
            let single = ResponseSigner::single(
                &cert_id,
                job.status,
                now,
                next_update,
                identity.archive_cutoff,
            )
            .map_err(|e| VaError::Encoding(e.to_string()))?;
            let head = signer.sign(vec![single], now, None).await?;
            let response = SignedResponse {
                head,
                tail: signer.certs_tail().clone(),
                this_update: now,
                next_update,
            };
            rows.push((
                ResponseKey {
                    certificate: job.key.clone(),
                    hash: hash.code(),
                },
                Some(encode_row(&response, job.status, signer.key_hash())),
            ));
            responses[hash as usize] = Some(response);
        }
        self.metrics.presigned.fetch_add(2, Ordering::Relaxed);
        if self.install(index, &job.key.serial, job.status, responses) {
            Ok(rows)
        } else {
            // The status changed while signing: persisting these would put an outdated
            // answer back on disk.
            Ok(Vec::new())
        }
    }

    /// Installs responses unless the status changed meanwhile (a revocation won the race);
    /// returns whether they were installed.
    pub(super) fn install(
        &self,
        index: usize,
        serial: &Serial,
        status: Status,
        responses: [Option<SignedResponse>; 2],
    ) -> bool {
        let Some(key) = SerialKey::new(serial.as_bytes()) else {
            return false;
        };
        let Some(issuer) = self.issuer(index) else {
            return false;
        };
        let mut shard = issuer.write(&key);
        match shard.get_mut(&key) {
            Some(entry) if entry.status == status => {
                entry.responses = responses;
                true
            }
            Some(_) => false,
            None => {
                shard.insert(key, Box::new(Entry { status, responses }));
                self.entries.fetch_add(1, Ordering::Relaxed);
                true
            }
        }
    }

    pub(super) async fn persist(
        &self,
        mut rows: Vec<(ResponseKey, Option<Vec<u8>>)>,
    ) -> Result<(), VaError> {
        // A row signed before a revocation that landed while the batch waited is not written:
        // only the status in force goes to disk (the revocation table settles any row that
        // slips through at the next start).
        rows.retain(|(key, row)| {
            let persisted = row
                .as_deref()
                .and_then(decode_row)
                .map(|(status, ..)| status);
            persisted.is_some() && persisted == self.status_of(&key.certificate)
        });
        if rows.is_empty() {
            return Ok(());
        }
        // Responder nodes learn of new responses through the outbox, written in the same batch.
        let mut changed: Vec<String> = rows
            .iter()
            .map(|(key, _)| crate::store::status_change(&key.certificate))
            .collect();
        changed.dedup();
        let Some(store) = self.store.clone() else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || {
            store.write_derived_marked::<OcspResponses>(&rows, &changed)
        })
        .await
        .map_err(|_| VaError::ShuttingDown)??;
        Ok(())
    }

    /// At start-up: reads back the persisted responses (dropping any signed by another
    /// responder key, expired, or contradicting the revocation table), and returns the
    /// certificates whose responses must be signed.
    pub fn load(&self, now: Timestamp) -> Result<Vec<SigningJob>, VaError> {
        let Some(store) = self.store.as_ref() else {
            return Ok(Vec::new());
        };
        self.load_signed(store, now, &[])?;
        self.jobs_at_start(store, now)
    }

    /// A sealed daemon's responder (no key to sign with): reads back the persisted responses
    /// signed by any of `responders` (responder key hash, `certs` tail), then takes the store's
    /// revocations and certificates as at every start, and signs nothing: a certificate whose
    /// response says otherwise than the store (revoked offline since) or has none is answered
    /// `tryLater` until the daemon is unsealed.
    pub fn load_presigned(
        &self,
        now: Timestamp,
        responders: &[([u8; 20], Bytes)],
    ) -> Result<u64, VaError> {
        let Some(store) = self.store.as_ref() else {
            return Ok(0);
        };
        let loaded = self.load_signed(store, now, responders)?;
        let unsigned = self.jobs_at_start(store, now)?;
        if !unsigned.is_empty() {
            tracing::warn!(
                certificates = unsigned.len(),
                "sealed: certificates without a valid pre-signed response are answered tryLater until unsealed"
            );
        }
        Ok(loaded)
    }

    /// Reads back the persisted responses of each issuer signed by its responders (and by
    /// `known`), unexpired; returns how many certificates have one.
    fn load_signed(
        &self,
        store: &Store,
        now: Timestamp,
        known: &[([u8; 20], Bytes)],
    ) -> Result<u64, VaError> {
        let mut loaded = 0u64;
        for issuer in self.issuers() {
            // Responses by the issuer's current responder, or by an earlier one still valid
            // (served with its certificate until re-signed: a renewal leaves no gap, even
            // across a restart).
            let signers: Vec<([u8; 20], Bytes)> = issuer
                .signer()
                .into_iter()
                .chain(issuer.previous.iter().cloned())
                .map(|s| (s.key_hash(), s.certs_tail().clone()))
                .chain(known.iter().cloned())
                .collect();
            let prefix = ResponseKey::issuer_prefix(issuer.identity.id);
            for row in store.scan::<OcspResponses>(&prefix, &prefix)? {
                let (key, value) = row?;
                let Some((status, responder, mut response)) = decode_row(&value) else {
                    continue;
                };
                let hash = match key.hash {
                    1 => CertIdHash::Sha1,
                    2 => CertIdHash::Sha256,
                    _ => continue,
                };
                let Some((_, tail)) = signers.iter().find(|(hash, _)| *hash == responder) else {
                    continue;
                };
                if response.next_update <= now {
                    continue;
                }
                response.tail = tail.clone();
                let Some(serial) = SerialKey::new(key.certificate.serial.as_bytes()) else {
                    continue;
                };
                let mut shard = issuer.write(&serial);
                let entry = shard.entry(serial).or_insert_with(|| {
                    loaded += 1;
                    Box::new(Entry {
                        status,
                        responses: [None, None],
                    })
                });
                if entry.status == status {
                    entry.responses[hash as usize] = Some(response);
                }
            }
        }
        self.entries.store(loaded, Ordering::Relaxed);
        Ok(loaded)
    }

    /// After the responses are read back: the certificates whose responses must be signed.
    fn jobs_at_start(&self, store: &Store, now: Timestamp) -> Result<Vec<SigningJob>, VaError> {
        let loaded = self.entries.load(Ordering::Relaxed);
        // The store is the truth: revocations made while the responder was down (offline CLI),
        // and certificates issued meanwhile.
        let mut jobs = Vec::new();
        for row in store.scan::<Revocations>(&[], &[])? {
            let (key, record) = row?;
            if self.issuer_index(key.issuer).is_none() {
                continue;
            }
            let status = Status::Revoked {
                at: record.revoked_at,
                reason: record.reason,
            };
            if self.status_of(&key) != Some(status) {
                self.set_status(&key, status);
                jobs.push(SigningJob { key, status });
            }
        }
        for row in store.scan::<ExpiryIndex>(&[], &[])? {
            let (expiry, ()) = row?;
            let key = expiry.certificate;
            if self.issuer_index(key.issuer).is_none() || self.status_of(&key).is_some() {
                continue;
            }
            self.set_status(&key, Status::Good);
            jobs.push(SigningJob {
                key,
                status: Status::Good,
            });
        }
        // Entries loaded with one of their two responses missing or expired.
        jobs.extend(self.due(now, u64::MAX));
        jobs.sort_by(|a, b| a.key.cmp(&b.key));
        jobs.dedup_by(|a, b| a.key == b.key);
        tracing::info!(
            loaded,
            to_sign = jobs.len(),
            "OCSP responses loaded from the store"
        );
        Ok(jobs)
    }

    /// Certificates whose responses are missing, expired, or older than `max_age` seconds.
    pub fn due(&self, now: Timestamp, max_age: u64) -> Vec<SigningJob> {
        let mut jobs = Vec::new();
        for issuer in self.issuers() {
            let Some(current) = issuer.signer() else {
                continue;
            };
            for shard in &issuer.shards {
                let shard = shard.read().unwrap_or_else(|p| p.into_inner());
                for (serial, entry) in shard.iter() {
                    let stale = entry.responses.iter().any(|r| match r {
                        Some(r) => {
                            r.this_update.plus_seconds(max_age) <= now
                                || r.next_update <= now
                                || !r.signed_by(&current)
                        }
                        None => true,
                    });
                    if stale {
                        let magnitude = &serial.0[1..=serial.0[0] as usize];
                        if let Ok(serial) = Serial::from_magnitude(magnitude) {
                            jobs.push(SigningJob {
                                key: CertKey {
                                    issuer: issuer.identity.id,
                                    serial,
                                },
                                status: entry.status,
                            });
                        }
                    }
                }
            }
        }
        jobs
    }
}

/// Whether a certificate whose status is `current` may be given `next`: anything but a
/// revocation may change; a revocation is final, time and reason included.
pub(super) fn may_replace(current: Status, next: Status) -> bool {
    !matches!(current, Status::Revoked { .. }) || current == next
}

type Rows = Vec<(ResponseKey, Option<Vec<u8>>)>;

pub(super) fn collect(
    done: Result<Result<Rows, VaError>, tokio::task::JoinError>,
    rows: &mut Rows,
    signed: &mut usize,
    first_error: &mut Option<VaError>,
) {
    match done {
        Ok(Ok(mut more)) => {
            rows.append(&mut more);
            *signed += 1;
        }
        Ok(Err(error)) => {
            first_error.get_or_insert(error);
        }
        Err(_) => {
            first_error.get_or_insert(VaError::ShuttingDown);
        }
    }
}

/// A persisted response: version (1) || status (0 good, 1 revoked) || revoked_at (8) ||
/// reason code (1, 0xff none) || this_update (8) || next_update (8) || responder key hash (20)
/// || head.
pub(super) fn encode_row(
    response: &SignedResponse,
    status: Status,
    responder: [u8; 20],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(47 + response.head.len());
    out.push(1);
    let (code, at, reason) = match status {
        Status::Good => (0u8, 0u64, 0xffu8),
        Status::Revoked { at, reason } => (1, at.unix_seconds(), reason.code().unwrap_or(0xff)),
        Status::Unknown => (2, 0, 0xff),
    };
    out.push(code);
    out.extend_from_slice(&at.to_be_bytes());
    out.push(reason);
    out.extend_from_slice(&response.this_update.unix_seconds().to_be_bytes());
    out.extend_from_slice(&response.next_update.unix_seconds().to_be_bytes());
    out.extend_from_slice(&responder);
    out.extend_from_slice(&response.head);
    out
}

pub(super) fn decode_row(value: &[u8]) -> Option<(Status, [u8; 20], SignedResponse)> {
    if value.len() < 47 || value[0] != 1 {
        return None;
    }
    let u64_at = |at: usize| {
        value
            .get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
    };
    let status = match value[1] {
        0 => Status::Good,
        1 => Status::Revoked {
            at: Timestamp::from_unix_seconds(u64_at(2)?),
            reason: RevocationReason::from_code(match value[10] {
                0xff => None,
                c => Some(c),
            })?,
        },
        _ => return None,
    };
    let responder: [u8; 20] = value.get(27..47)?.try_into().ok()?;
    Some((
        status,
        responder,
        SignedResponse {
            tail: Bytes::new(),
            this_update: Timestamp::from_unix_seconds(u64_at(11)?),
            next_update: Timestamp::from_unix_seconds(u64_at(19)?),
            head: Bytes::copy_from_slice(&value[47..]),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip() {
        let response = SignedResponse {
            head: Bytes::from_static(b"\x30\x03abc"),
            tail: Bytes::new(),
            this_update: Timestamp::from_unix_seconds(100),
            next_update: Timestamp::from_unix_seconds(200),
        };
        for status in [
            Status::Good,
            Status::Revoked {
                at: Timestamp::from_unix_seconds(50),
                reason: RevocationReason::KeyCompromise,
            },
        ] {
            let row = encode_row(&response, status, [7; 20]);
            let (back, responder, decoded) = decode_row(&row).unwrap();
            assert_eq!((back, responder), (status, [7; 20]));
            assert_eq!(decoded.head, response.head);
            assert_eq!(decoded.next_update, response.next_update);
        }
        assert!(decode_row(&[1, 2, 3]).is_none());
    }
}
