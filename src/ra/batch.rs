//! Batch approval: one signature over a list of reviewed card requests, so that an AED approving
//! forty requests enters her PIN once.
//!
//! The signed document (`"action":"approve-batch"`, `POST /ra/v1/approvals`) lists each request
//! by its id and the SHA-256 of its signed submission as the approver reviewed it (the CMS bytes
//! the submitter sent, kept as the request's evidence; `submission_sha256` in
//! `GET /ra/v1/requests/{id}` and in the submission's answer). A batch holds 1 to
//! [`MAX_BATCH`] requests, each once.
//!
//! All or nothing: every request is checked as a single approval would check it (it exists and
//! is in the approver's scope, is pending, was submitted by another person who still acts, the
//! approver ranks above any operator the card belongs to, a renewal is still possible) and its
//! digest compared, before anything is written. One bad request refuses the whole batch with a
//! problem naming it, and nothing changes. Then one write marks them all approved, with the
//! batch's evidence (the signed bytes, stored once under the batch id, which each request's
//! state and audit event name), and each card is issued in turn. A retry of the same bytes gets
//! the first answer; if the HSM went away midway, it resumes the cards not issued yet.
use serde::Deserialize;

use super::cards::{CardRequestRecord, CardRequests, RequestState, mark_approved};
use super::request::SignedRequest;
use super::{Effects, Evidence, Operator, RaError, Refusal, RegistrationAuthority, claim};
use crate::x509::Timestamp;

/// The most requests one batch approves.
pub const MAX_BATCH: usize = 100;

/// One request of a batch, as the approver reviewed it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchItem {
    pub request: String,
    /// SHA-256 of the signed submission (hexadecimal).
    pub submission_sha256: String,
}

/// The SHA-256 (lowercase hex) of the signed submission of request `id`, if it is kept.
pub(super) fn submission_digest(
    store: &crate::store::Store,
    id: &str,
) -> Result<Option<String>, RaError> {
    Ok(store
        .get::<Evidence>(&id.to_owned())?
        .map(|evidence| hex::encode(crate::x509::keys::sha256(&evidence.cms))))
}

/// What the check of a batch found for one request.
enum Checked {
    /// To approve (or to resume: approved by this batch, card not issued yet).
    Approve(Box<CardRequestRecord>),
    /// Issued by this batch before (a retry resuming it): its part of the answer.
    Done(serde_json::Value),
}

impl RegistrationAuthority {
    pub(super) fn approve_batch(
        &self,
        actor: &Operator,
        request: &SignedRequest,
        items: &[BatchItem],
        now: Timestamp,
    ) -> Result<(serde_json::Value, Effects), RaError> {
        if items.is_empty() || items.len() > MAX_BATCH {
            return Err(RaError::Malformed(format!(
                "a batch approves 1 to {MAX_BATCH} requests, not {}",
                items.len()
            )));
        }
        let mut ids: Vec<&str> = items.iter().map(|item| item.request.as_str()).collect();
        ids.sort_unstable();
        if let Some(twice) = ids.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(RaError::Malformed(format!(
                "request {} is listed twice in the batch",
                twice[0]
            )));
        }
        // One approval of a request at a time; taken in one order, so batches never wait on
        // each other in a cycle.
        let _held: Vec<_> = ids.iter().map(|id| self.approving.lock(id)).collect();

        let batch = request.id.as_str();
        let mut checked = Vec::with_capacity(items.len());
        for item in items {
            let named = |error: RaError| name_request(&item.request, error);
            checked.push(self.check_item(actor, batch, item, now).map_err(named)?);
        }

        let targets: Vec<(String, String, bool)> = checked
            .iter()
            .filter_map(|c| match c {
                Checked::Approve(record) => Some((
                    record.id.clone(),
                    record.submitted_by.clone(),
                    record.self_service,
                )),
                Checked::Done(_) => None,
            })
            .collect();
        let evidence = self.evidence(actor, request, now);
        let operator = actor.record.id.clone();
        let batch_id = batch.to_owned();
        self.store.commit(move |txn| -> Result<(), RaError> {
            claim(txn, &batch_id, &evidence)?;
            mark_approved(txn, &operator, &batch_id, &targets, now)
        })?;

        let mut results = Vec::with_capacity(checked.len());
        let mut effects = Effects::default();
        for item in checked {
            let record = match item {
                Checked::Done(answer) => {
                    results.push(answer);
                    continue;
                }
                Checked::Approve(record) => record,
            };
            match self.issue_approved(actor, batch, &record, now, false) {
                Ok((answer, done)) => {
                    results.push(short_answer(&answer));
                    effects.issued.extend(done.issued);
                    effects.revoked.extend(done.revoked);
                }
                // The HSM went away: the rest stays approved, and a retry of these bytes
                // resumes it (the batch has no answer yet).
                Err(RaError::Ca(error)) if error.is_unavailable() => {
                    // What the batch issued before (and the certificates its renewals
                    // superseded) is in force: OCSP and the nodes learn it now, not after a
                    // restart. A retry answers those requests as done without doing it again.
                    self.apply_effects_now(effects);
                    return Err(RaError::Ca(error));
                }
                // The CA refused this card (the request is closed as failed): the others go on.
                Err(error) => results.push(serde_json::json!({
                    "request": record.id,
                    "state": "failed",
                    "why": error.to_string(),
                })),
            }
        }
        let answer = serde_json::json!({
            "batch": batch,
            "approved": results.len(),
            "requests": results,
        });
        let (batch_id, settled) = (batch.to_owned(), answer.clone());
        self.store
            .commit(move |txn| super::settle(txn, &batch_id, &settled))?;
        Ok((answer, effects))
    }

    /// The checks of one request of `batch`: those of a single approval, and the digest.
    fn check_item(
        &self,
        actor: &Operator,
        batch: &str,
        item: &BatchItem,
        now: Timestamp,
    ) -> Result<Checked, RaError> {
        // A retry resuming this batch: what it issued already is part of its answer.
        if let Some(record) = self.store.get::<CardRequests>(&item.request)? {
            match &record.state {
                RequestState::Issued {
                    approval: Some(by),
                    authentication,
                    signature,
                    ..
                } if by == batch => {
                    return Ok(Checked::Done(serde_json::json!({
                        "request": record.id,
                        "state": "issued",
                        "card": record.card,
                        "authentication": authentication,
                        "signature": signature,
                    })));
                }
                // Refused by the CA while this batch ran: answered so again.
                RequestState::Failed {
                    approval: Some(by),
                    why,
                    ..
                } if by == batch => {
                    return Ok(Checked::Done(serde_json::json!({
                        "request": record.id,
                        "state": "failed",
                        "why": why,
                    })));
                }
                // Approved by another approval: that one resumes it, not this batch.
                RequestState::Approved { approval, .. } if approval.as_deref() != Some(batch) => {
                    return Err(RaError::refused(
                        Refusal::NotPending,
                        format!("request {} is approved", record.id),
                    ));
                }
                _ => {}
            }
        }
        let record = self.approvable(actor, &item.request, now)?;
        let digest = submission_digest(&self.store, &record.id)?.unwrap_or_default();
        if !digest.eq_ignore_ascii_case(item.submission_sha256.trim()) || digest.is_empty() {
            return Err(RaError::refused(
                Refusal::DigestMismatch,
                format!(
                    "the signed submission of request {} has SHA-256 {digest}, the batch names {:?}: approve what was reviewed",
                    record.id, item.submission_sha256
                ),
            ));
        }
        Ok(Checked::Approve(Box::new(record)))
    }
}

/// A refusal about one request of a batch, naming it (the rule stays that of the request's).
fn name_request(id: &str, error: RaError) -> RaError {
    match error {
        RaError::Refused { refusal, detail } if !detail.contains(id) => RaError::Refused {
            refusal,
            detail: format!("request {id}: {detail}; the batch is refused whole, nothing changed"),
        },
        RaError::Refused { refusal, detail } => RaError::Refused {
            refusal,
            detail: format!("{detail}; the batch is refused whole, nothing changed"),
        },
        RaError::Malformed(detail) => RaError::Malformed(format!(
            "request {id}: {detail}; the batch is refused whole"
        )),
        other => other,
    }
}

/// A request's part of a batch's answer: its card and the certificates' serials (each is read
/// with `GET /ra/v1/certificates/{serial}`).
fn short_answer(issued: &serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "request": issued["request"],
        "state": issued["state"],
        "card": issued["card"],
        "authentication": issued["authentication"]["serial"],
        "signature": issued["signature"]["serial"],
    })
}
