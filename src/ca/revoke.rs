//! Revocation: final (no certificateHold, no un-revoke: EN 319 411-1 REV-6.3.9-04), one atomic
//! write with its audit event per request, whether it names one serial or a whole card.
use super::CaError;
use crate::audit::AuditEvent;
use crate::store::schema::{Cards, Certificates, Revocations, Serials};
use crate::store::{CertKey, RevocationRecord, Store, Txn};
use crate::x509::revocation::RevocationReason;
use crate::x509::{Serial, Timestamp};

/// What to revoke.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RevocationTarget {
    Serial(Serial),
    /// Both certificates of a card.
    Card(String),
}

/// A revocation request, as the CLI, the admin API or the RA make it.
#[derive(Clone, Debug)]
pub struct RevocationRequest {
    pub target: RevocationTarget,
    pub reason: RevocationReason,
    /// When the key is known or suspected to have been compromised (RFC 5280 §5.3.2).
    pub invalidity_date: Option<Timestamp>,
    /// Who asked (an operator, `cli`, `admin-api`), for the audit log.
    pub requested_by: String,
}

/// A certificate that was revoked by a request (declared with the issuer state, which the
/// validation authority reads).
pub use crate::issuer::RevokedCertificate;

/// Revokes durably; returns what was revoked (the validation authority then re-signs it).
pub fn revoke(
    store: &Store,
    request: RevocationRequest,
    now: Timestamp,
) -> Result<Vec<RevokedCertificate>, CaError> {
    store.commit(move |txn| revoke_in(txn, &request, now))
}

/// The certificates a revocation request names.
pub fn targets(
    txn: &impl crate::store::Reader,
    target: &RevocationTarget,
) -> Result<Vec<CertKey>, CaError> {
    Ok(match target {
        RevocationTarget::Serial(serial) => {
            let issuer = txn.get::<Serials>(serial)?.ok_or_else(|| {
                CaError::NotFound(format!("serial {serial} was never issued by this CA"))
            })?;
            vec![CertKey {
                issuer,
                serial: serial.clone(),
            }]
        }
        RevocationTarget::Card(card) => {
            let record = txn
                .get::<Cards>(card)?
                .ok_or_else(|| CaError::NotFound(format!("card {card} is unknown")))?;
            vec![record.authentication, record.signature]
        }
    })
}

/// Revokes within a transaction (the caller adds its own writes, e.g. the RA's evidence).
pub fn revoke_in(
    txn: &mut Txn<'_>,
    request: &RevocationRequest,
    now: Timestamp,
) -> Result<Vec<RevokedCertificate>, CaError> {
    if request.invalidity_date.is_some_and(|date| date > now) {
        return Err(CaError::Refused(
            "the invalidity date is in the future".into(),
        ));
    }
    let mut revoked = Vec::new();
    for key in targets(txn, &request.target)? {
        if let Some(done) = revoke_one(txn, &key, request, now)? {
            revoked.push(done);
        }
    }
    if revoked.is_empty() {
        return Err(CaError::AlreadyRevoked(match &request.target {
            RevocationTarget::Serial(serial) => format!("serial {serial}"),
            RevocationTarget::Card(card) => format!("both certificates of card {card}"),
        }));
    }
    Ok(revoked)
}

pub(crate) fn revoke_one(
    txn: &mut Txn<'_>,
    key: &CertKey,
    request: &RevocationRequest,
    now: Timestamp,
) -> Result<Option<RevokedCertificate>, CaError> {
    if txn.contains::<Revocations>(key)? {
        return Ok(None);
    }
    let certificate = txn.get::<Certificates>(key)?.ok_or_else(|| {
        CaError::NotFound(format!("serial {} has no stored certificate", key.serial))
    })?;
    if request
        .invalidity_date
        .is_some_and(|date| date < certificate.not_before)
    {
        return Err(CaError::Refused(format!(
            "the invalidity date is before the certificate {} was valid",
            key.serial
        )));
    }
    txn.changed(crate::store::status_change(key));
    txn.put::<Revocations>(
        key,
        &RevocationRecord {
            revoked_at: now,
            reason: request.reason,
            invalidity_date: request.invalidity_date,
            not_after: certificate.not_after,
        },
    )?;
    txn.audit(AuditEvent::CertificateRevoked {
        issuer: key.issuer.to_hex(),
        serial: key.serial.to_hex(),
        reason: request.reason.code().map(|_| request.reason.to_string()),
        invalidity_date: request.invalidity_date,
        requested_by: request.requested_by.clone(),
    });
    Ok(Some(RevokedCertificate {
        key: key.clone(),
        revoked_at: now,
        reason: request.reason,
    }))
}
