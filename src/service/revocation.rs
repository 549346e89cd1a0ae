//! Revocation: now, at a time to come, cancelled, and when its time comes.

use super::wire::{Cancelled, RevokeBody, Revoked, Scheduled};
use super::{Service, ServiceError};
use crate::ca::revoke::{RevocationRequest, RevocationTarget, RevokedCertificate};
use crate::ca::schedule::ScheduledRevocation;
use crate::x509::revocation::RevocationReason;
use crate::x509::{Serial, Timestamp};

/// What a revocation request asks, checked: the request now, or for its time.
#[derive(Debug)]
pub enum Revocation {
    Now(RevocationRequest),
    At(RevocationRequest, Timestamp),
}

impl Revocation {
    /// Reads a request; `requested_by` names the entry point in the audit log.
    pub fn parse(
        body: RevokeBody,
        requested_by: &str,
        now: Timestamp,
    ) -> Result<Self, ServiceError> {
        let invalid = |field, detail| ServiceError::Invalid { field, detail };
        let at = match body.at.as_deref() {
            None => None,
            Some(text) => Some(
                Timestamp::parse_rfc3339(text)
                    .map_err(|e| invalid("at", format!("{text:?}: {e}")))?,
            ),
        };
        let target = match (body.serial, body.card) {
            (Some(serial), None) => RevocationTarget::Serial(
                Serial::from_hex(&serial)
                    .map_err(|e| invalid("serial", format!("serial {serial:?}: {e}")))?,
            ),
            (None, Some(card)) => RevocationTarget::Card(card),
            _ => {
                return Err(invalid(
                    "target",
                    "give exactly one of serial and card".into(),
                ));
            }
        };
        let reason: RevocationReason = match (&body.reason, &at) {
            (Some(reason), _) => reason.parse().map_err(|e: String| invalid("reason", e))?,
            (None, Some(_)) => RevocationReason::AffiliationChanged,
            (None, None) => return Err(invalid("reason", "give a reason".into())),
        };
        let invalidity_date = match body.invalidity_date {
            Some(text) => Some(
                Timestamp::parse_rfc3339(&text)
                    .map_err(|e| invalid("invalidity-date", format!("{text:?}: {e}")))?,
            ),
            None => None,
        };
        let request = RevocationRequest {
            target,
            reason,
            invalidity_date,
            requested_by: requested_by.into(),
        };
        // A time to come is scheduled; a time already past is an immediate revocation.
        Ok(match at.filter(|at| *at > now) {
            Some(at) => Revocation::At(request, at),
            None => Revocation::Now(request),
        })
    }
}

impl Service {
    /// Revokes now, and answers once OCSP says so (and the CRL follows). With the daemon's token
    /// gone, refuses and changes nothing (the caller retries): a revocation is answered only once
    /// OCSP can say so. Offline, records it (the daemon signs its responses when it starts).
    pub async fn revoke(&self, request: RevocationRequest) -> Result<Revoked, ServiceError> {
        if let Some(va) = self.va() {
            if !self.hsm()?.status().available {
                return Err(ServiceError::HsmUnavailable);
            }
            // The last known state may be stale (a token gone since the last call): ask it.
            let responder = va.responder.clone();
            if !tokio::task::spawn_blocking(move || responder.signer_ready())
                .await
                .unwrap_or(false)
            {
                return Err(ServiceError::HsmUnavailable);
            }
        }
        let service = self.clone();
        Self::to_the_end(async move {
            let (store, now) = (service.store.clone(), service.now());
            let revoked =
                Self::blocking(move || Ok(crate::ca::revoke::revoke(&store, request, now)?))
                    .await?;
            let ocsp = service.effects.revoked(&revoked).await;
            for r in &revoked {
                tracing::info!(serial = %r.key.serial, reason = %r.reason, "certificate revoked");
            }
            Ok(Revoked {
                revoked,
                ocsp: ocsp.into(),
            })
        })
        .await
    }

    /// Records a revocation for its time: the daemon's timer carries it out
    /// ([`Service::revoke_due`]), or the daemon when it starts.
    pub async fn schedule(
        &self,
        request: RevocationRequest,
        at: Timestamp,
    ) -> Result<Scheduled, ServiceError> {
        let (service, now) = (self.clone(), self.now());
        Self::blocking(move || {
            let entry = ScheduledRevocation::new(
                crate::ca::random_card_id()?,
                &request.target,
                at,
                request.reason,
                // Scheduled by `sceau revoke --at`, through the daemon or not.
                "cli".into(),
                now,
            );
            match &service.ca {
                // The daemon's CA also wakes its timer for it.
                Some(ca) => ca.schedule_revocation(entry.clone())?,
                None => {
                    let written = entry.clone();
                    service
                        .store
                        .commit(move |txn| crate::ca::schedule::schedule_in(txn, &written, now))?
                }
            }
            Ok(Scheduled { scheduled: entry })
        })
        .await
    }

    /// Cancels a scheduled revocation.
    pub async fn cancel_scheduled(&self, id: String, by: &str) -> Result<Cancelled, ServiceError> {
        let (service, by) = (self.clone(), by.to_owned());
        Self::blocking(move || {
            let cancelled = match &service.ca {
                Some(ca) => ca.cancel_scheduled(&id, &by)?,
                None => service
                    .store
                    .commit(move |txn| crate::ca::schedule::cancel_in(txn, &id, &by))?,
            };
            Ok(Cancelled { cancelled })
        })
        .await
    }

    /// Carries out the scheduled revocations whose time has come (the daemon's timer).
    pub async fn revoke_due(&self) -> Result<Vec<RevokedCertificate>, ServiceError> {
        let ca = self.ca()?.clone();
        let service = self.clone();
        Self::to_the_end(async move {
            let revoked = Self::blocking(move || Ok(ca.revoke_due()?)).await?;
            if !revoked.is_empty() {
                for r in &revoked {
                    tracing::info!(serial = %r.key.serial, reason = %r.reason, "certificate revoked at its scheduled time");
                }
                service.effects.revoked(&revoked).await;
            }
            Ok(revoked)
        })
        .await
    }
}
