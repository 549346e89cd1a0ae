//! Card requests: submitted (after the face-to-face meeting) -> approved by a different AED
//! or above -> issued; or rejected; or failed when the CA refuses to issue.
//!
//! A submission is checked against the certification policies at once (CSR signatures, names,
//! keys, keys never certified, names never given to another holder), so that an approver only
//! ever sees requests the CA would accept. Approval is written before the CA is asked to issue,
//! and the request becomes "issued" in the same write as the card's certificates, so that the
//! two never disagree. If the HSM is unavailable the request stays approved and a later approval
//! resumes it with the same keys. If the daemon dies between the issuance intent and the stored
//! certificates, the intent is revoked at the next start and its keys stay reserved (whatever
//! the HSM may have signed for them is revoked, and a key is certified once): a later approval
//! closes the request as failed, naming the reserved key, and the card needs new keys.
use serde::{Deserialize, Serialize};

use super::request::SignedRequest;
use super::{
    Effects, Operator, RaError, Refusal, RegistrationAuthority, check_holder_scope, check_scope,
    claim, subject_text,
};
use crate::audit::AuditEvent;
use crate::ca::{CaError, CardRequest};
use crate::policy::IssuanceRequest;
use crate::store::base64_bytes;
use crate::store::schema::Cards;
use crate::x509::Timestamp;
use crate::x509::csr::ParsedCsr;
use crate::x509::name::{DistinguishedName, parse_distinguished_name, same_values};

/// A card request and where it stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardRequestRecord {
    pub id: String,
    /// A renewal of `card` rather than a new card.
    pub renewal: bool,
    pub holder: String,
    pub card: String,
    pub subject: String,
    #[serde(with = "base64_bytes")]
    pub subject_der: Vec<u8>,
    pub authentication_policy: String,
    pub signature_policy: String,
    #[serde(with = "base64_bytes")]
    pub authentication_csr: Vec<u8>,
    #[serde(with = "base64_bytes")]
    pub signature_csr: Vec<u8>,
    pub submitted_by: String,
    pub submitted_at: Timestamp,
    pub state: RequestState,
    /// Submitted by the holder on their own card (holder self-service), not by an operator.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub self_service: bool,
}

crate::store::table!(
    /// Card requests, by request id.
    CardRequests, "card_requests", String, CardRequestRecord
);
crate::store::json_value!(CardRequestRecord);

/// The states of a card request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum RequestState {
    Pending,
    Approved {
        by: String,
        at: Timestamp,
        /// The id of the signed approval (single or batch), kept as evidence under that id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        approval: Option<String>,
    },
    Issued {
        by: String,
        at: Timestamp,
        authentication: String,
        signature: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        approval: Option<String>,
    },
    Rejected {
        by: String,
        at: Timestamp,
        reason: String,
    },
    /// The CA refused to issue after approval (e.g. a key certified meanwhile).
    Failed {
        at: Timestamp,
        why: String,
        /// The approval (single or batch) that was carried out: its retry answers this
        /// request as failed, and goes on with the others.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        approval: Option<String>,
    },
}

impl CardRequestRecord {
    /// What the API shows of a request (the CSRs left out).
    pub fn summary(&self) -> serde_json::Value {
        let mut value = serde_json::json!({
            "request": self.id,
            "renewal": self.renewal,
            "holder": self.holder,
            "card": self.card,
            "subject": self.subject,
            "submitted_by": self.submitted_by,
            "submitted_at": self.submitted_at,
        });
        if let (Some(object), Ok(serde_json::Value::Object(state))) =
            (value.as_object_mut(), serde_json::to_value(&self.state))
        {
            object.extend(state);
        }
        value
    }

    /// Writes the submitted request with its audit event (in the caller's commit).
    pub(super) fn write_submitted(&self, txn: &mut crate::store::Txn<'_>) -> Result<(), RaError> {
        txn.audit(AuditEvent::CardRequestSubmitted {
            request: self.id.clone(),
            operator: self.submitted_by.clone(),
            holder: self.holder.clone(),
            card: self.card.clone(),
            subject: self.subject.clone(),
            renewal: self.renewal,
        });
        txn.put::<CardRequests>(&self.id, self)?;
        Ok(())
    }

    fn card_request(&self) -> CardRequest {
        CardRequest {
            holder: self.holder.clone(),
            card: Some(self.card.clone()),
            authentication: IssuanceRequest {
                policy: self.authentication_policy.clone(),
                csr: self.authentication_csr.clone(),
                ..Default::default()
            },
            signature: IssuanceRequest {
                policy: self.signature_policy.clone(),
                csr: self.signature_csr.clone(),
                ..Default::default()
            },
        }
    }
}

/// What a submit or renew request carries.
#[derive(Debug)]
pub(super) struct Submission {
    pub holder: String,
    pub card: Option<String>,
    /// A renewal: the subject of the card's holder as it is now.
    pub renewal: Option<DistinguishedName>,
    /// The holder asks for the renewal of their own (operator's) card, signed with it.
    pub by_holder: bool,
    pub authentication_csr: String,
    pub signature_csr: String,
}

impl RegistrationAuthority {
    pub(super) fn submit(
        &self,
        actor: &Operator,
        request: &SignedRequest,
        submission: Submission,
        now: Timestamp,
    ) -> Result<serde_json::Value, RaError> {
        if !actor.record.role.may_submit() && !submission.by_holder {
            return Err(RaError::refused(
                Refusal::RoleNotAllowed,
                format!("an {} does not submit card requests", actor.record.role),
            ));
        }
        let (subject_der, subject) = csr_subject(&submission.authentication_csr)?;
        // The name first: a letter outside the repertoire is named as such, whoever it
        // looks like.
        super::check_name_repertoire(&self.settings.authentication_policy, &subject)?;
        let policies = [
            self.settings.authentication_policy.clone(),
            self.settings.signature_policy.clone(),
        ];
        // The holder renewing their own card needs no scope over themselves.
        if !submission.by_holder {
            for policy in &policies {
                check_scope(&actor.record.scope, &subject, policy)?;
            }
        }
        if !submission.by_holder {
            refuse_own(actor, &subject, &submission.holder)?;
            // A card in the name of an operator at or above the submitter's rank (a new card
            // as much as a renewal) is asked for only from above them.
            super::check_rank_over_holder(
                &super::active_operators(&self.store)?,
                &actor.record,
                &subject,
                Some(&submission.holder),
            )?;
        }
        let record = self.card_request_record(
            request,
            submission,
            &actor.record.id,
            (subject_der, subject),
            now,
        )?;
        let mut summary = record.summary();
        // What the approver's batch names this request by (`batch`).
        summary["submission_sha256"] =
            hex::encode(crate::x509::keys::sha256(&request.evidence)).into();
        let evidence = self.evidence(actor, request, now).answered(&summary);
        let actor_id = actor.record.id.clone();
        self.store.commit(move |txn| -> Result<(), RaError> {
            claim(txn, &record.id, &evidence)?;
            super::check_still_active(txn, &actor_id)?;
            record.write_submitted(txn)
        })?;
        Ok(summary)
    }

    /// The record of a card request as submitted (the submitter's own checks done): the same
    /// subject for a renewal, a card id free for a new card, and every policy rule now, so
    /// that an approver only sees requests the CA would accept.
    pub(super) fn card_request_record(
        &self,
        request: &SignedRequest,
        submission: Submission,
        submitted_by: &str,
        (subject_der, subject): (Vec<u8>, DistinguishedName),
        now: Timestamp,
    ) -> Result<CardRequestRecord, RaError> {
        let policies = [
            self.settings.authentication_policy.clone(),
            self.settings.signature_policy.clone(),
        ];
        // A renewal gives new keys to the same person: it never re-binds the card to another
        // subject.
        if let Some(current) = &submission.renewal
            && !same_values(current, &subject)
        {
            return Err(RaError::refused(
                Refusal::RenewalNotAllowed,
                format!(
                    "a renewal keeps the holder's subject ({}); the new requests are for {}",
                    subject_text(current),
                    subject_text(&subject)
                ),
            ));
        }
        let renewal = submission.renewal.is_some();
        let card = match submission.card {
            Some(card) => card,
            None => format!("card-{}", &request.id[..request.id.len().min(32)]),
        };
        if !renewal && self.store.get::<Cards>(&card)?.is_some() {
            return Err(RaError::refused(
                Refusal::CardExists,
                format!("card {card} already exists"),
            ));
        }
        let record = CardRequestRecord {
            id: request.id.clone(),
            renewal,
            holder: submission.holder,
            card,
            subject: subject_text(&subject),
            subject_der,
            authentication_policy: policies[0].clone(),
            signature_policy: policies[1].clone(),
            authentication_csr: submission.authentication_csr.into_bytes(),
            signature_csr: submission.signature_csr.into_bytes(),
            submitted_by: submitted_by.to_owned(),
            submitted_at: now,
            state: RequestState::Pending,
            self_service: false,
        };
        // Every policy rule, now: the approver only sees requests the CA would accept.
        self.ca.check_card(&record.card_request())?;
        Ok(record)
    }

    /// The checks an approver or a rejecter passes, for a request still open.
    fn decidable(
        &self,
        actor: &Operator,
        id: &str,
        allow_approved: bool,
    ) -> Result<CardRequestRecord, RaError> {
        if !actor.record.role.may_decide() {
            return Err(RaError::refused(
                Refusal::RoleNotAllowed,
                format!(
                    "an {} does not approve or reject requests",
                    actor.record.role
                ),
            ));
        }
        let record = self
            .store
            .get::<CardRequests>(&id.to_owned())?
            .ok_or_else(|| RaError::refused(Refusal::NotFound, format!("no request {id}")))?;
        let subject = parse_distinguished_name(&record.subject_der)
            .map_err(|e| RaError::Malformed(e.to_string()))?;
        let in_scope = check_holder_scope(&actor.record.scope, &subject).and_then(|()| {
            [&record.authentication_policy, &record.signature_policy]
                .into_iter()
                .try_for_each(|policy| check_scope(&actor.record.scope, &subject, policy))
        });
        super::unknown_outside_scope(in_scope, &format!("no request {id}"))?;
        // Persons, not certificates: an operator with a second certificate (another card, or
        // their own signature certificate) is still the person who submitted (issue 10
        // problem 1).
        let submitter = self
            .store
            .get::<super::operators::Operators>(&record.submitted_by)?;
        if record.submitted_by == actor.record.id
            || submitter.as_ref().is_some_and(|submitter| {
                submitter.person == actor.record.person || submitter.holder == actor.record.holder
            })
        {
            return Err(RaError::refused(
                Refusal::OwnSubmission,
                "the operator who submitted a request may not decide on it (two-person rule)",
            ));
        }
        refuse_own(actor, &subject, &record.holder)?;
        match &record.state {
            RequestState::Pending => Ok(record),
            RequestState::Approved { .. } if allow_approved => Ok(record),
            other => Err(RaError::refused(
                Refusal::NotPending,
                format!("request {id} is {}", state_name(other)),
            )),
        }
    }

    pub(super) fn approve(
        &self,
        actor: &Operator,
        request: &SignedRequest,
        id: &str,
        now: Timestamp,
    ) -> Result<(serde_json::Value, Effects), RaError> {
        let _one_at_a_time = self.approving.lock(id);
        let record = self.approvable(actor, id, now)?;
        let evidence = self.evidence(actor, request, now);
        let request_id = request.id.clone();
        let operator = actor.record.id.clone();
        let targets = vec![(
            record.id.clone(),
            record.submitted_by.clone(),
            record.self_service,
        )];
        self.store.commit(move |txn| -> Result<(), RaError> {
            claim(txn, &request_id, &evidence)?;
            mark_approved(txn, &operator, &request_id, &targets, now)
        })?;
        self.issue_approved(actor, &request.id, &record, now, true)
    }

    /// The checks of an approval, as things are now: those of a decision, the submitter still
    /// acts, the approver is above any operator the card belongs to, and a card to renew is still
    /// renewable. A request already approved (its issuance to resume) passes too.
    pub(super) fn approvable(
        &self,
        actor: &Operator,
        id: &str,
        now: Timestamp,
    ) -> Result<CardRequestRecord, RaError> {
        let record = self.decidable(actor, id, true)?;
        // A holder's own renewal has no operator behind it: their card's state is checked
        // (`card_renewable`) instead.
        let submitter_active = record.self_service
            || self
                .store
                .get::<super::operators::Operators>(&record.submitted_by)?
                .is_some_and(|submitter| submitter.is_active());
        if !submitter_active {
            return Err(RaError::refused(
                Refusal::OperatorWithdrawn,
                format!(
                    "request {id} was submitted by an operator withdrawn since: it must be submitted again"
                ),
            ));
        }
        let subject = parse_distinguished_name(&record.subject_der)
            .map_err(|e| RaError::Malformed(e.to_string()))?;
        super::check_rank(
            &super::active_operators(&self.store)?,
            &actor.record,
            &subject,
            Some(&record.holder),
            record.renewal,
        )?;
        if record.renewal {
            let card = self
                .store
                .get::<crate::store::schema::Cards>(&record.card)?
                .ok_or_else(|| RaError::refused(Refusal::NotFound, format!("no request {id}")))?;
            self.card_renewable(&card, now)?;
        }
        Ok(record)
    }

    /// Issues the card of `record`, approved by the signed approval `approval`. The request
    /// goes to "issued" in the same write as the card: a crash leaves either an approved request
    /// without a card (a later approval resumes it) or both. With `settle`, the answer is kept
    /// with the approval's evidence in that write (a batch keeps its whole answer instead).
    pub(super) fn issue_approved(
        &self,
        actor: &Operator,
        approval: &str,
        record: &CardRequestRecord,
        now: Timestamp,
        settle: bool,
    ) -> Result<(serde_json::Value, Effects), RaError> {
        let card_request = record.card_request();
        let (by, target) = (actor.record.id.clone(), record.id.clone());
        // The answer is built in the batch that stores the card and kept with the evidence, so
        // that a retry of this approval gets the same answer (issue 12 problem 4).
        let answered = std::sync::Arc::new(std::sync::Mutex::new(None));
        let (answer_slot, approval_id) = (answered.clone(), approval.to_owned());
        let along: crate::ca::AlongWrite = Box::new(move |txn, card, superseded| {
            let mut current = txn
                .get::<CardRequests>(&target)?
                .ok_or_else(|| CaError::NotFound(format!("no request {target}")))?;
            // Two approvals of one request at once (a retry, a second approver): the first to
            // store its card wins; the other's batch is refused whole.
            if !matches!(current.state, RequestState::Approved { .. }) {
                return Err(CaError::Refused(format!(
                    "request {target} is {} already",
                    state_name(&current.state)
                )));
            }
            current.state = RequestState::Issued {
                by,
                at: now,
                authentication: card.authentication.serial.to_hex(),
                signature: card.signature.serial.to_hex(),
                approval: Some(approval_id.clone()),
            };
            txn.audit(AuditEvent::CardRequestIssued {
                request: target.clone(),
                card: card.card.clone(),
                authentication: card.authentication.serial.to_hex(),
                signature: card.signature.serial.to_hex(),
            });
            txn.put::<CardRequests>(&target, &current)?;
            let answer = issued_answer(txn, &target, card, superseded)?;
            if settle {
                super::settle(txn, &approval_id, &answer)
                    .map_err(|e| CaError::Refused(e.to_string()))?;
            }
            *answer_slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(answer);
            Ok(())
        });
        let issued = if record.renewal {
            self.ca.renew_card(&card_request, Some(along))
        } else {
            self.ca
                .issue_card(&card_request, Some(along))
                .map(|card| crate::ca::RenewedCard {
                    card,
                    superseded: Vec::new(),
                })
        };
        let issued = match issued {
            Ok(issued) => issued,
            Err(error) if error.is_unavailable() => return Err(error.into()),
            Err(error) => {
                self.close_failed(&record.id, &error, now)?;
                return Err(error.into());
            }
        };
        let card = issued.card;
        let answer = answered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or_else(|| RaError::Malformed("the issuing write left no answer".into()))?;
        Ok((
            answer,
            Effects {
                issued: vec![
                    crate::store::CertKey {
                        issuer: card.authentication.issuer,
                        serial: card.authentication.serial.clone(),
                    },
                    crate::store::CertKey {
                        issuer: card.signature.issuer,
                        serial: card.signature.serial.clone(),
                    },
                ],
                revoked: issued.superseded,
            },
        ))
    }

    /// Closes an approved request the CA refused to issue.
    fn close_failed(&self, id: &str, error: &CaError, now: Timestamp) -> Result<(), RaError> {
        let target = id.to_owned();
        let why = error.to_string();
        self.store.commit(move |txn| -> Result<(), RaError> {
            // Only a request still waiting for its card fails: one that another approval issued
            // meanwhile stays issued.
            if let Some(mut current) = txn.get::<CardRequests>(&target)?
                && matches!(current.state, RequestState::Approved { .. })
            {
                txn.audit(AuditEvent::CardRequestFailed {
                    request: target.clone(),
                    why: why.clone(),
                });
                let approval = match &current.state {
                    RequestState::Approved { approval, .. } => approval.clone(),
                    _ => None,
                };
                current.state = RequestState::Failed {
                    at: now,
                    why,
                    approval,
                };
                txn.put::<CardRequests>(&target, &current)?;
            }
            Ok(())
        })
    }

    pub(super) fn reject(
        &self,
        actor: &Operator,
        request: &SignedRequest,
        id: &str,
        reason: String,
        now: Timestamp,
    ) -> Result<serde_json::Value, RaError> {
        let record = self.decidable(actor, id, false)?;
        let request_id = request.id.clone();
        let operator = actor.record.id.clone();
        let target = record.id.clone();
        let answer =
            serde_json::json!({ "request": target, "state": "rejected", "reason": reason });
        let evidence = self.evidence(actor, request, now).answered(&answer);
        self.store.commit(move |txn| -> Result<(), RaError> {
            claim(txn, &request_id, &evidence)?;
            super::check_still_active(txn, &operator)?;
            let mut current = txn.get::<CardRequests>(&target)?.ok_or_else(|| {
                RaError::refused(Refusal::NotFound, format!("no request {target}"))
            })?;
            if current.state != RequestState::Pending {
                return Err(RaError::refused(
                    Refusal::NotPending,
                    format!("request {target} is {}", state_name(&current.state)),
                ));
            }
            txn.audit(AuditEvent::CardRequestRejected {
                request: target.clone(),
                operator: operator.clone(),
                reason: reason.clone(),
            });
            current.state = RequestState::Rejected {
                by: operator,
                at: now,
                reason,
            };
            txn.put::<CardRequests>(&target, &current)?;
            Ok(())
        })?;
        Ok(answer)
    }
}

/// The subject (DER and parsed) of a card request's authentication CSR.
pub(super) fn csr_subject(csr: &str) -> Result<(Vec<u8>, DistinguishedName), RaError> {
    let parsed = ParsedCsr::parse(csr.as_bytes())
        .map_err(|e| RaError::Malformed(format!("authentication_csr: {e}")))?;
    let subject_der = der::Encode::to_der(parsed.subject())
        .map_err(|e| RaError::Malformed(format!("authentication_csr subject: {e}")))?;
    let subject = parse_distinguished_name(&subject_der)
        .map_err(|e| RaError::Malformed(format!("authentication_csr subject: {e}")))?;
    Ok((subject_der, subject))
}

/// The answer to an approval that issued `card`: its certificates, read in the batch that
/// stores them, and what a renewal superseded.
fn issued_answer(
    txn: &crate::store::Txn<'_>,
    request: &str,
    card: &crate::store::CardRecord,
    superseded: &[crate::ca::revoke::RevokedCertificate],
) -> Result<serde_json::Value, CaError> {
    let certificate = |key: &crate::store::CertKey| -> Result<serde_json::Value, CaError> {
        let stored = txn
            .get::<crate::store::schema::Certificates>(key)?
            .ok_or_else(|| CaError::NotFound(format!("certificate {} not stored", key.serial)))?;
        Ok(serde_json::json!({
            "serial": key.serial.to_hex(),
            "certificate": crate::x509::pem::encode(crate::x509::pem::CERTIFICATE, &stored.der),
        }))
    };
    Ok(serde_json::json!({
        "request": request,
        "state": "issued",
        "card": card.card,
        "holder": card.holder,
        "authentication": certificate(&card.authentication)?,
        "signature": certificate(&card.signature)?,
        "superseded": superseded,
    }))
}

/// Nobody acts on a request for their own certificate (EN 319 411-1 REG-6.2.2-26: the
/// registration officer is not the subject): neither by name nor by holder id.
pub(super) fn refuse_own(
    actor: &Operator,
    holder: &DistinguishedName,
    holder_id: &str,
) -> Result<(), RaError> {
    use super::operators::person_key;
    if same_values(&actor.subject, holder)
        || person_key(&actor.subject) == person_key(holder)
        || actor.record.holder == holder_id
    {
        Err(RaError::refused(
            Refusal::OwnCertificate,
            "the holder of this request is the operator itself",
        ))
    } else {
        Ok(())
    }
}

/// Marks the requests `targets` (id, submitter, self-service) approved by `operator` with the
/// signed approval `approval`, in the caller's commit: the approver and each submitter still
/// act, as the writer orders things; a request already approved (an issuance to resume) stays.
pub(super) fn mark_approved(
    txn: &mut crate::store::Txn<'_>,
    operator: &str,
    approval: &str,
    targets: &[(String, String, bool)],
    now: Timestamp,
) -> Result<(), RaError> {
    super::check_still_active(txn, operator)?;
    for (target, submitter, self_service) in targets {
        if !self_service {
            super::check_still_active(txn, submitter)?;
        }
        let mut current = txn
            .get::<CardRequests>(target)?
            .ok_or_else(|| RaError::refused(Refusal::NotFound, format!("no request {target}")))?;
        match current.state {
            RequestState::Pending => {
                txn.audit(AuditEvent::CardRequestApproved {
                    request: target.clone(),
                    operator: operator.to_owned(),
                    approval: Some(approval.to_owned()),
                });
                current.state = RequestState::Approved {
                    by: operator.to_owned(),
                    at: now,
                    approval: Some(approval.to_owned()),
                };
                txn.put::<CardRequests>(target, &current)?;
            }
            // Resuming an issuance the HSM could not do earlier.
            RequestState::Approved { .. } => {}
            ref other => {
                return Err(RaError::refused(
                    Refusal::NotPending,
                    format!("request {target} is {}", state_name(other)),
                ));
            }
        }
    }
    Ok(())
}

pub(super) fn state_name(state: &RequestState) -> &'static str {
    match state {
        RequestState::Pending => "pending",
        RequestState::Approved { .. } => "approved",
        RequestState::Issued { .. } => "issued",
        RequestState::Rejected { .. } => "rejected",
        RequestState::Failed { .. } => "failed",
    }
}
