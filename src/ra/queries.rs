//! What an operator may read: a request's state, the cards that expire, a certificate.

use super::cards::RequestState;
use super::request::SignedRequest;
use crate::store::schema::{Certificates, ExpiryIndex, Revocations};
use crate::store::{CertKey, ExpiryKey, IssuerId, KeyCodec, Reader};
use crate::x509::{Serial, Timestamp, pem};

use super::{
    EvidenceRecord, Operator, RaError, Refusal, RegistrationAuthority, cards, certificate_subject,
    check_scope, subject_text, unknown_outside_scope,
};

impl RegistrationAuthority {
    pub(super) fn evidence(
        &self,
        actor: &Operator,
        request: &SignedRequest,
        now: Timestamp,
    ) -> EvidenceRecord {
        EvidenceRecord {
            operator: actor.record.id.clone(),
            action: request.action.name().to_owned(),
            received_at: now,
            cms: request.evidence.clone(),
            outcome: None,
        }
    }

    /// A card request, if it is in the operator's scope; with the certificates once issued.
    pub fn request_status(
        &self,
        operator: &Operator,
        id: &str,
    ) -> Result<serde_json::Value, RaError> {
        let record = self
            .store
            .get::<cards::CardRequests>(&id.to_owned())?
            .ok_or_else(|| RaError::refused(Refusal::NotFound, format!("no request {id}")))?;
        // The scope of a request is its holder and its policies, as for a decision on it.
        if !self.in_scope(operator, &record)? {
            return Err(RaError::refused(
                Refusal::NotFound,
                format!("no request {id}"),
            ));
        }
        let mut answer = self.review(operator, &record)?;
        if let RequestState::Issued {
            authentication,
            signature,
            ..
        } = &record.state
        {
            for (field, serial) in [("authentication", authentication), ("signature", signature)] {
                if let Some(pem) = self.certificate_pem(serial)? {
                    answer[field] = serde_json::json!({ "serial": serial, "certificate": pem });
                }
            }
        }
        Ok(answer)
    }

    /// Certificates in the operator's scope that expire within `days`, soonest first, revoked
    /// ones left out: what the RA application warns holders about.
    pub fn expiring(&self, operator: &Operator, days: u32) -> Result<serde_json::Value, RaError> {
        let now = self.clock.now();
        let until = now.plus_seconds(u64::from(days) * 86_400);
        let from = ExpiryKey {
            not_after: now,
            certificate: CertKey {
                issuer: IssuerId([0; 20]),
                serial: Serial::from_magnitude(&[1])
                    .map_err(|e| RaError::Malformed(e.to_string()))?,
            },
        }
        .encode_key();
        let mut out = Vec::new();
        for row in self.store.scan::<ExpiryIndex>(&from[..8], &[])? {
            let (key, ()) = row?;
            if key.not_after > until {
                break;
            }
            if self.store.contains::<Revocations>(&key.certificate)? {
                continue;
            }
            let Some(record) = self.store.get::<Certificates>(&key.certificate)? else {
                continue;
            };
            let Ok(holder) = certificate_subject(&record.der) else {
                continue;
            };
            if check_scope(&operator.record.scope, &holder, &record.policy).is_err() {
                continue;
            }
            out.push(serde_json::json!({
                "serial": key.certificate.serial.to_hex(),
                "policy": record.policy,
                "holder": record.holder,
                "card": record.card,
                "subject": subject_text(&holder),
                "not_after": record.not_after,
            }));
        }
        Ok(serde_json::json!({ "days": days, "certificates": out }))
    }

    /// A certificate in the operator's scope, PEM.
    pub fn certificate(&self, operator: &Operator, serial_hex: &str) -> Result<String, RaError> {
        let serial = Serial::from_hex(serial_hex.trim_end_matches(".pem"))
            .map_err(|e| RaError::Malformed(format!("serial {serial_hex:?}: {e}")))?;
        // One wording for a serial never issued and one outside the scope, whatever the
        // spelling of the URL (case, leading zeros).
        let text = format!("no certificate {serial}");
        let not_found = {
            let text = text.clone();
            move || RaError::refused(Refusal::NotFound, text)
        };
        let issuer = self
            .store
            .get::<crate::store::schema::Serials>(&serial)?
            .ok_or_else(not_found.clone())?;
        let record = self
            .store
            .get::<Certificates>(&CertKey { issuer, serial })?
            .ok_or_else(not_found)?;
        unknown_outside_scope(
            check_scope(
                &operator.record.scope,
                &certificate_subject(&record.der)?,
                &record.policy,
            ),
            &text,
        )?;
        Ok(pem::encode(pem::CERTIFICATE, &record.der))
    }

    pub(super) fn certificate_pem(&self, serial_hex: &str) -> Result<Option<String>, RaError> {
        let serial = Serial::from_hex(serial_hex).map_err(|e| RaError::Malformed(e.to_string()))?;
        let Some(issuer) = self.store.get::<crate::store::schema::Serials>(&serial)? else {
            return Ok(None);
        };
        Ok(self
            .store
            .get::<Certificates>(&CertKey { issuer, serial })?
            .map(|record| pem::encode(pem::CERTIFICATE, &record.der)))
    }
}
