//! Revocations at a date: the planned departure of an agent ("à compter d'une date précise").
//!
//! A scheduled revocation is a row of its own table, written with its audit event. When its
//! time comes the daemon revokes exactly as an immediate revocation does (one write with the
//! certificates' revocations and the outbox entries, then OCSP re-signed and the CRL
//! triggered); a daemon that was down at that time does it when it opens the CA, before
//! anything is served. Until then nothing about the certificates changes: OCSP says good.
//!
//! A card is resolved when the revocation runs, so that a card renewed in between loses its
//! current certificates. Revocation stays final: an executed schedule is not undone.
use serde::{Deserialize, Serialize};

use super::CaError;
use super::revoke::{RevocationRequest, RevocationTarget, RevokedCertificate, revoke_in, targets};
use crate::audit::AuditEvent;
use crate::store::schema::{Certificates, Revocations};
use crate::store::{Store, Txn};
use crate::x509::revocation::RevocationReason;
use crate::x509::{Serial, Timestamp};

/// A revocation waiting for its time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledRevocation {
    pub id: String,
    /// Both certificates of this card, as they are when the time comes...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card: Option<String>,
    /// ...or this one certificate (hexadecimal serial).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    pub at: Timestamp,
    pub reason: RevocationReason,
    /// Who asked (`operator:<id>`, `cli`), for the audit log and the listing.
    pub requested_by: String,
    /// The asking operator's role then (`AE`…`OC`): a cancellation comes from that rank or above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by_role: Option<String>,
    pub scheduled_at: Timestamp,
}

crate::store::table!(
    /// Revocations waiting for their time, by id.
    ScheduledRevocations, "scheduled_revocations", String, ScheduledRevocation
);
crate::store::json_value!(ScheduledRevocation);

impl ScheduledRevocation {
    pub fn target(&self) -> Result<RevocationTarget, CaError> {
        match (&self.card, &self.serial) {
            (Some(card), None) => Ok(RevocationTarget::Card(card.clone())),
            (None, Some(serial)) => Ok(RevocationTarget::Serial(Serial::from_hex(serial)?)),
            _ => Err(CaError::Refused(
                "a scheduled revocation names a card or a serial".into(),
            )),
        }
    }

    /// The entry for `target`.
    pub fn new(
        id: String,
        target: &RevocationTarget,
        at: Timestamp,
        reason: RevocationReason,
        requested_by: String,
        now: Timestamp,
    ) -> Self {
        let (card, serial) = match target {
            RevocationTarget::Card(card) => (Some(card.clone()), None),
            RevocationTarget::Serial(serial) => (None, Some(serial.to_hex())),
        };
        ScheduledRevocation {
            id,
            card,
            serial,
            at,
            reason,
            requested_by,
            requested_by_role: None,
            scheduled_at: now,
        }
    }
}

/// Records `entry` in `txn`. Its time is after `now` (the caller revokes at once otherwise);
/// what it names exists, is not all revoked already, and is still valid at that time.
pub fn schedule_in(
    txn: &mut Txn<'_>,
    entry: &ScheduledRevocation,
    now: Timestamp,
) -> Result<(), CaError> {
    if entry.at <= now {
        return Err(CaError::Refused(format!(
            "{} is not in the future: revoke now instead",
            entry.at
        )));
    }
    if entry.reason == RevocationReason::Superseded {
        return Err(CaError::Refused(
            "superseded is the reason of renewals, never scheduled".into(),
        ));
    }
    let mut live = 0;
    for key in targets(txn, &entry.target()?)? {
        if txn.contains::<Revocations>(&key)? {
            continue;
        }
        let certificate = txn.get::<Certificates>(&key)?.ok_or_else(|| {
            CaError::NotFound(format!("serial {} has no stored certificate", key.serial))
        })?;
        if entry.at >= certificate.not_after {
            return Err(CaError::Refused(format!(
                "certificate {} expires at {}, before {}: nothing to revoke then",
                key.serial, certificate.not_after, entry.at
            )));
        }
        live += 1;
    }
    if live == 0 {
        return Err(CaError::AlreadyRevoked(entry.id.clone()));
    }
    super::refuse_existing::<ScheduledRevocations>(txn, &entry.id, || {
        format!("a scheduled revocation {}", entry.id)
    })?;
    txn.audit(AuditEvent::RevocationScheduled {
        id: entry.id.clone(),
        card: entry.card.clone(),
        serial: entry.serial.clone(),
        at: entry.at,
        reason: entry.reason.to_string(),
        requested_by: entry.requested_by.clone(),
    });
    txn.put::<ScheduledRevocations>(&entry.id, entry)?;
    Ok(())
}

/// Cancels the scheduled revocation `id` in `txn`; returns it.
pub fn cancel_in(txn: &mut Txn<'_>, id: &str, by: &str) -> Result<ScheduledRevocation, CaError> {
    let key = id.to_owned();
    let entry = txn
        .get::<ScheduledRevocations>(&key)?
        .ok_or_else(|| CaError::NotFound(format!("no scheduled revocation {id}")))?;
    txn.delete::<ScheduledRevocations>(&key);
    txn.audit(AuditEvent::ScheduledRevocationCancelled {
        id: key,
        by: by.to_owned(),
    });
    Ok(entry)
}

/// Every scheduled revocation, soonest first.
pub fn list(store: &Store) -> Result<Vec<ScheduledRevocation>, CaError> {
    let mut all: Vec<ScheduledRevocation> = store
        .scan::<ScheduledRevocations>(&[], &[])?
        .map(|row| row.map(|(_, entry)| entry))
        .collect::<Result<_, _>>()?;
    all.sort_by(|a, b| (a.at, &a.id).cmp(&(b.at, &b.id)));
    Ok(all)
}

/// Carries out every scheduled revocation whose time has come, each in one write with its
/// audit event; returns what was revoked (for OCSP and the CRL).
pub fn execute_due(store: &Store, now: Timestamp) -> Result<Vec<RevokedCertificate>, CaError> {
    let mut revoked = Vec::new();
    for due in list(store)?.into_iter().filter(|entry| entry.at <= now) {
        let id = due.id.clone();
        let done = store.commit(move |txn| -> Result<_, CaError> {
            // Cancelled meanwhile: nothing to do.
            let Some(entry) = txn.get::<ScheduledRevocations>(&id)? else {
                return Ok(Vec::new());
            };
            txn.delete::<ScheduledRevocations>(&id);
            let request = RevocationRequest {
                target: entry.target()?,
                reason: entry.reason,
                invalidity_date: None,
                requested_by: format!("schedule {id} ({})", entry.requested_by),
            };
            let (done, note) = match revoke_in(txn, &request, now) {
                Ok(done) => (done, None),
                // A certificate a renewal superseded: the departure follows its card, whose
                // current certificates are revoked (a renewal must not outlive a departure).
                Err(CaError::AlreadyRevoked(what))
                    if superseded_card(txn, &request.target)?.is_some() =>
                {
                    let card = superseded_card(txn, &request.target)?.unwrap_or_default();
                    let by_card = RevocationRequest {
                        target: RevocationTarget::Card(card.clone()),
                        ..request.clone()
                    };
                    match revoke_in(txn, &by_card, now) {
                        Ok(done) => (
                            done,
                            Some(format!("{what} was superseded: card {card} revoked")),
                        ),
                        Err(CaError::AlreadyRevoked(_)) => (
                            Vec::new(),
                            Some(format!("{what} and card {card} revoked already")),
                        ),
                        Err(other) => return Err(other),
                    }
                }
                // Revoked meanwhile (the holder's own revocation, a card lost): done already.
                Err(CaError::AlreadyRevoked(what)) => {
                    (Vec::new(), Some(format!("{what} revoked already")))
                }
                Err(CaError::NotFound(what)) => (Vec::new(), Some(what)),
                Err(other) => return Err(other),
            };
            txn.audit(AuditEvent::ScheduledRevocationExecuted {
                id,
                at: entry.at,
                revoked: done.iter().map(|r| r.key.serial.to_hex()).collect(),
                note,
            });
            Ok(done)
        });
        match done {
            Ok(done) => revoked.extend(done),
            // One entry that cannot run does not hold the others back; it is tried again.
            Err(error) => {
                tracing::error!(id = %due.id, %error, "a scheduled revocation could not run")
            }
        }
    }
    Ok(revoked)
}

/// A revocation scheduled for `card` or one of its certificates, if any.
pub fn scheduled_for_card(
    store: &Store,
    card: &crate::store::CardRecord,
) -> Result<Option<ScheduledRevocation>, CaError> {
    let serials = [
        card.authentication.serial.to_hex(),
        card.signature.serial.to_hex(),
    ];
    Ok(list(store)?.into_iter().find(|entry| {
        entry.card.as_deref() == Some(card.card.as_str())
            || entry.serial.as_ref().is_some_and(|s| serials.contains(s))
    }))
}

/// The card of the certificate `target` names, if a renewal superseded that certificate.
fn superseded_card(txn: &Txn<'_>, target: &RevocationTarget) -> Result<Option<String>, CaError> {
    let RevocationTarget::Serial(_) = target else {
        return Ok(None);
    };
    for key in targets(txn, target)? {
        let revoked = txn.get::<Revocations>(&key)?;
        if revoked.is_some_and(|r| r.reason == RevocationReason::Superseded)
            && let Some(card) = txn.get::<Certificates>(&key)?.and_then(|c| c.card)
        {
            return Ok(Some(card));
        }
    }
    Ok(None)
}

/// The time of the soonest scheduled revocation.
pub fn next_due(store: &Store) -> Result<Option<Timestamp>, CaError> {
    Ok(list(store)?.first().map(|entry| entry.at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_table_is_opened_by_the_store() {
        use crate::store::Table;
        assert!(crate::store::schema::ALL_TABLES.contains(&ScheduledRevocations::NAME));
    }
}
