//! Revocations asked for by operators: now, or at a date (the planned departure of an agent),
//! and the cancellation and listing of those scheduled.
//!
//! Who may revoke a card may schedule and cancel its revocation: the holder and the policy in
//! the operator's scope, and the operator above any operator the card belongs to. These are
//! checked inside the commit, as the writer orders things.
use super::operators::Operators;
use super::operators::{OperatorRecord, Role};
use super::request::SignedRequest;
use super::{
    Effects, Operator, RaError, Refusal, RegistrationAuthority, active_operators,
    certificate_subject, check_rank_over_holder, check_scope, check_still_active, claim, settle,
    unknown_outside_scope,
};
use crate::ca::CaError;
use crate::ca::revoke::{RevocationRequest, RevocationTarget, RevokedCertificate};
use crate::ca::schedule::{self, ScheduledRevocation, ScheduledRevocations};
use crate::store::Reader;
use crate::store::schema::Certificates;
use crate::x509::revocation::RevocationReason;
use crate::x509::{Serial, Timestamp};

/// What a revoke request asks for, as signed.
#[derive(Debug)]
pub(super) struct Asked {
    pub serial: Option<String>,
    pub card: Option<String>,
    pub reason: Option<String>,
    pub invalidity_date: Option<String>,
    pub at: Option<String>,
}

impl RegistrationAuthority {
    /// Revokes now, or schedules the revocation when `at` is to come.
    pub(super) fn revoke(
        &self,
        actor: &Operator,
        request: &SignedRequest,
        asked: Asked,
        now: Timestamp,
    ) -> Result<(serde_json::Value, Effects), RaError> {
        let at = asked
            .at
            .as_deref()
            .map(|t| {
                Timestamp::parse_rfc3339(t)
                    .map_err(|e| RaError::Malformed(format!("at {t:?}: {e}")))
            })
            .transpose()?
            // A time already past is an immediate revocation.
            .filter(|at| *at > now);
        let reason: RevocationReason = match (&asked.reason, &asked.at) {
            (Some(reason), _) => reason
                .parse()
                .map_err(|e: String| RaError::Malformed(format!("reason: {e}")))?,
            (None, Some(_)) => RevocationReason::AffiliationChanged,
            (None, None) => return Err(RaError::Malformed("reason: missing".into())),
        };
        // A CA's compromise is declared by security staff on the CA host, never by an operator
        // about a holder's card (and the OpenAPI document does not offer it).
        if reason == RevocationReason::CaCompromise {
            return Err(RaError::Malformed(
                "reason: ca-compromise is not an operator's reason".into(),
            ));
        }
        let invalidity_date = asked
            .invalidity_date
            .map(|t| {
                Timestamp::parse_rfc3339(&t)
                    .map_err(|e| RaError::Malformed(format!("invalidity_date {t:?}: {e}")))
            })
            .transpose()?;
        if at.is_some() && invalidity_date.is_some() {
            return Err(RaError::Malformed(
                "invalidity_date: a compromise is revoked now, not at a date".into(),
            ));
        }
        let target = match (asked.serial, asked.card) {
            (Some(serial), None) => RevocationTarget::Serial(
                Serial::from_hex(&serial)
                    .map_err(|e| RaError::Malformed(format!("serial {serial:?}: {e}")))?,
            ),
            (None, Some(card)) => RevocationTarget::Card(card),
            _ => {
                return Err(RaError::Malformed("name either a serial or a card".into()));
            }
        };
        match at {
            Some(at) => self
                .schedule(actor, request, target, reason, at, now)
                .map(|answer| (answer, Effects::default())),
            None => self.revoke_now(
                actor,
                request,
                RevocationRequest {
                    target,
                    reason,
                    invalidity_date,
                    requested_by: format!("operator:{}", actor.record.id),
                },
                now,
            ),
        }
    }

    fn revoke_now(
        &self,
        actor: &Operator,
        request: &SignedRequest,
        revocation: RevocationRequest,
        now: Timestamp,
    ) -> Result<(serde_json::Value, Effects), RaError> {
        // A revocation is answered only once OCSP says so.
        if !self.publisher.available() {
            return Err(RaError::Unavailable);
        }
        let evidence = self.evidence(actor, request, now);
        let request_id = request.id.clone();
        let scope = Permission::of(&self.store, actor)?;
        let revoked = self.store.commit(move |txn| -> Result<_, RaError> {
            claim(txn, &request_id, &evidence)?;
            check_still_active(txn, &scope.actor.id)?;
            scope.check(txn, &revocation.target)?;
            let revoked = crate::ca::revoke::revoke_in(txn, &revocation, now)?;
            settle(txn, &request_id, &revocation_answer(&revoked))?;
            Ok(revoked)
        })?;
        let answer = revocation_answer(&revoked);
        Ok((
            answer,
            Effects {
                issued: Vec::new(),
                revoked,
            },
        ))
    }

    /// Records a revocation for `at`: its id is the request's.
    fn schedule(
        &self,
        actor: &Operator,
        request: &SignedRequest,
        target: RevocationTarget,
        reason: RevocationReason,
        at: Timestamp,
        now: Timestamp,
    ) -> Result<serde_json::Value, RaError> {
        let entry = ScheduledRevocation {
            requested_by_role: Some(actor.record.role.to_string()),
            ..ScheduledRevocation::new(
                request.id.clone(),
                &target,
                at,
                reason,
                format!("operator:{}", actor.record.id),
                now,
            )
        };
        let answer = serde_json::json!({ "scheduled": entry });
        let evidence = self.evidence(actor, request, now).answered(&answer);
        let request_id = request.id.clone();
        let scope = Permission::of(&self.store, actor)?;
        self.store.commit(move |txn| -> Result<(), RaError> {
            claim(txn, &request_id, &evidence)?;
            check_still_active(txn, &scope.actor.id)?;
            scope.check(txn, &target)?;
            schedule::schedule_in(txn, &entry, now)?;
            Ok(())
        })?;
        self.ca.note_scheduled(at);
        Ok(answer)
    }

    /// Cancels a scheduled revocation whose target the operator may revoke.
    pub(super) fn cancel_scheduled(
        &self,
        actor: &Operator,
        request: &SignedRequest,
        id: &str,
        now: Timestamp,
    ) -> Result<serde_json::Value, RaError> {
        let missing = format!("no scheduled revocation {id}");
        let not_found = move || RaError::refused(Refusal::NotFound, missing.clone());
        let entry = self
            .store
            .get::<ScheduledRevocations>(&id.to_owned())?
            .ok_or_else(&not_found)?;
        let answer = serde_json::json!({ "cancelled": entry });
        let evidence = self.evidence(actor, request, now).answered(&answer);
        let request_id = request.id.clone();
        let scope = Permission::of(&self.store, actor)?;
        let (id, by) = (id.to_owned(), format!("operator:{}", actor.record.id));
        self.store.commit(move |txn| -> Result<(), RaError> {
            claim(txn, &request_id, &evidence)?;
            check_still_active(txn, &scope.actor.id)?;
            // As the entry is now: gone (run or cancelled) is not found.
            let current = txn
                .get::<ScheduledRevocations>(&id)?
                .ok_or_else(&not_found)?;
            let target = current.target().map_err(RaError::Ca)?;
            scope.check(txn, &target).map_err(|e| match e {
                RaError::Refused {
                    refusal: Refusal::NotFound,
                    ..
                } => not_found(),
                other => other,
            })?;
            // Undone only at the rank that scheduled it or above; security staff's, on the
            // CA host only.
            match current.requested_by.strip_prefix("operator:") {
                Some(scheduler) if scheduler == scope.actor.id => {}
                Some(scheduler) => {
                    // The rank it was scheduled at (recorded then); for older entries, the
                    // scheduler's record; with neither, only the scheduler cancels.
                    let recorded = current
                        .requested_by_role
                        .as_deref()
                        .and_then(|role| serde_json::from_value::<Role>(serde_json::json!(role)).ok());
                    let role = match recorded {
                        Some(role) => Some(role),
                        None => txn.get::<Operators>(&scheduler.to_owned())?.map(|r| r.role),
                    };
                    if role.is_none_or(|role| scope.actor.role > role) {
                        return Err(RaError::refused(
                            Refusal::RoleNotAllowed,
                            "scheduled by an operator above you: cancelled at that rank or above",
                        ));
                    }
                }
                None => {
                    return Err(RaError::refused(
                        Refusal::RoleNotAllowed,
                        "scheduled by security staff on the CA host: cancelled there (sceau scheduled cancel)",
                    ));
                }
            }
            schedule::cancel_in(txn, &id, &by)?;
            Ok(())
        })?;
        Ok(answer)
    }

    /// The scheduled revocations of cards and certificates the operator may revoke.
    pub fn scheduled(&self, operator: &Operator) -> Result<serde_json::Value, RaError> {
        let scope = Permission::of(&self.store, operator)?;
        let mut visible = Vec::new();
        for entry in schedule::list(&self.store)? {
            let Ok(target) = entry.target() else { continue };
            if scope.check(&self.store, &target).is_ok() {
                visible.push(entry);
            }
        }
        Ok(serde_json::json!({ "scheduled": visible }))
    }
}

/// What an operator may revoke: holders and policies in its scope, and nobody of its rank or
/// above.
struct Permission {
    actor: OperatorRecord,
    /// The active operators, to find those a card belongs to.
    operators: Vec<OperatorRecord>,
}

impl Permission {
    fn of(store: &crate::store::Store, actor: &Operator) -> Result<Self, RaError> {
        Ok(Permission {
            actor: actor.record.clone(),
            operators: active_operators(store)?,
        })
    }

    /// Every certificate `target` names is one the operator may revoke. A target outside the
    /// scope is worded as one that does not exist.
    fn check(&self, reader: &impl Reader, target: &RevocationTarget) -> Result<(), RaError> {
        let unknown = match target {
            RevocationTarget::Serial(serial) => {
                format!("serial {serial} was never issued by this CA")
            }
            RevocationTarget::Card(card) => format!("card {card} is unknown"),
        };
        let keys = crate::ca::revoke::targets(reader, target).map_err(|e| match e {
            CaError::NotFound(_) => RaError::refused(Refusal::NotFound, unknown.clone()),
            other => RaError::Ca(other),
        })?;
        for key in keys {
            let record = reader.get::<Certificates>(&key)?.ok_or_else(|| {
                RaError::refused(
                    Refusal::NotFound,
                    format!("serial {} has no stored certificate", key.serial),
                )
            })?;
            let holder = certificate_subject(&record.der)?;
            // An operator may revoke its own card too (loss, theft): a holder's right.
            unknown_outside_scope(
                check_scope(&self.actor.scope, &holder, &record.policy),
                &unknown,
            )?;
            check_rank_over_holder(
                &self.operators,
                &self.actor,
                &holder,
                record.holder.as_deref(),
            )?;
        }
        Ok(())
    }
}

fn revocation_answer(revoked: &[RevokedCertificate]) -> serde_json::Value {
    serde_json::json!({ "revoked": revoked })
}
