//! Signed requests: opened, checked against the operator and the rules, carried out once (a retry gets its first answer, a replay is refused), with their evidence and audit event in the same commit.

use std::sync::Arc;

use x509_cert::Certificate;

use super::operators::OperatorRecord;
use super::request::{Action, SignedRequest};
use crate::audit::AuditEvent;
use crate::ca::revoke::RevokedCertificate;
use crate::store::CardRecord;
use crate::store::schema::{Cards, Certificates};
use crate::store::{StoreError, Txn};
use crate::x509::name::DistinguishedName;
use crate::x509::{Timestamp, cms};

use super::{
    Effects, Evidence, EvidenceRecord, Operator, RaError, Refusal, RegistrationAuthority,
    active_operators, cards, certificate_subject, check_scope, operators, request, revocations,
    unknown_outside_scope,
};

impl RegistrationAuthority {
    /// Checks a signed request from `operator` and carries it out. `expected` is the action
    /// the URL names and `target` the object it names (`None` when the URL names none).
    /// A refusal is recorded in the audit log and changes nothing else.
    pub async fn handle(
        self: &Arc<Self>,
        operator: &Operator,
        expected: request::ActionKind,
        target: Option<String>,
        cms: Vec<u8>,
    ) -> Result<serde_json::Value, RaError> {
        let expected = expected.name();
        let actor = operator.clone();
        self.run_signed(operator.record.id.clone(), expected, cms, move |ra, cms| {
            let request = match ra.open(&actor, expected, target.as_deref(), cms) {
                Ok(request) => request,
                Err(error) => return (None, Err(error)),
            };
            let id = request.id.clone();
            (Some(id), ra.carry_out(&actor, request))
        })
        .await
        .1
    }

    /// Runs a signed request of `client` (an operator id, or a holder's card): `carry_out`
    /// opens and carries it out, returning its id once known. A retry gets its first answer;
    /// a refusal is audited. The commit and what must follow it (OCSP, the CRL trigger) run in
    /// a task of their own: hyper drops this future if the client hangs up, and a committed
    /// change must still reach the validation authority.
    pub(super) async fn run_signed<F>(
        self: &Arc<Self>,
        client: String,
        expected: &'static str,
        cms: Vec<u8>,
        carry_out: F,
    ) -> (Option<String>, Result<serde_json::Value, RaError>)
    where
        F: FnOnce(
                &Arc<Self>,
                Vec<u8>,
            ) -> (
                Option<String>,
                Result<(serde_json::Value, Effects), RaError>,
            ) + Send
            + 'static,
    {
        let ra = self.clone();
        let work = async move {
            let carried_out = ra.clone();
            let outcome = tokio::task::spawn_blocking(move || {
                let ra = carried_out;
                let sent = cms.clone();
                let (request_id, result) = carry_out(&ra, cms);
                let result = match result {
                    Err(RaError::CarriedOut(answer)) => Ok(retried_effects(*answer)),
                    // Two copies of one request at once: the one that lost the race is
                    // answered as the retry it is, whatever stopped it.
                    Err(error) => match request_id
                        .as_deref()
                        .and_then(|id| ra.answer_to_retry(id, &sent))
                    {
                        Some(answer) => Ok(retried_effects(answer)),
                        None => Err(error),
                    },
                    carried_out => carried_out,
                };
                if let Err(error) = &result {
                    ra.record_refusal(&client, expected, request_id.clone(), error);
                }
                (request_id, result)
            })
            .await;
            let (request_id, outcome) = match outcome {
                Ok(done) => done,
                Err(e) => {
                    return (
                        None,
                        Err(RaError::Malformed(format!("request task failed: {e}"))),
                    );
                }
            };
            let (value, effects) = match outcome {
                Ok(done) => done,
                Err(error) => return (request_id, Err(error)),
            };
            if !effects.revoked.is_empty() {
                ra.publisher.revoked(effects.revoked).await;
            }
            if !effects.issued.is_empty() {
                ra.publisher.issued(effects.issued).await;
            }
            (request_id, Ok(value))
        };
        match tokio::spawn(work).await {
            Ok(done) => done,
            Err(e) => (
                None,
                Err(RaError::Malformed(format!("request task failed: {e}"))),
            ),
        }
    }

    /// Applies the effects of what was carried out when the rest of a request failed (a batch
    /// stopped by the HSM), from the blocking task that carried it out.
    pub(super) fn apply_effects_now(&self, effects: Effects) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!(
                "ra: no runtime to apply a partial batch's effects on; the CA applies them at its next start"
            );
            return;
        };
        runtime.block_on(async {
            if !effects.revoked.is_empty() {
                self.publisher.revoked(effects.revoked).await;
            }
            if !effects.issued.is_empty() {
                self.publisher.issued(effects.issued).await;
            }
        });
    }

    /// Verifies the CMS envelope against the operator's certificate, then the id, the time and
    /// that the action is the one the URL names.
    pub(super) fn open(
        &self,
        operator: &Operator,
        expected: &str,
        target: Option<&str>,
        cms_der: Vec<u8>,
    ) -> Result<SignedRequest, RaError> {
        // Operators sign with their card's signature certificate (nonRepudiation): an act of
        // the RA is attributable to a person. The authentication key only proves presence.
        let Some(signer) = &operator.signature_certificate else {
            return Err(RaError::refused(
                Refusal::OperatorCertificateRevoked,
                "the card's signature certificate cannot sign (revoked, or not valid now): requests are signed with it",
            ));
        };
        let request = self.open_signed(
            cms_der,
            (signer, &operator.certificate),
            "the request is signed by another certificate than the TLS client's card's signature certificate",
            expected,
        )?;
        let named = match &request.action {
            Action::Withdraw { operator, .. } => Some(operator.as_str()),
            Action::Approve { request, .. } | Action::Reject { request, .. } => {
                Some(request.as_str())
            }
            Action::Renew { card, .. } => Some(card.as_str()),
            Action::CancelRevocation { scheduled } => Some(scheduled.as_str()),
            Action::Deliver { card, .. } => Some(card.as_str()),
            Action::ApproveBulkRevocation { bulk, .. } => Some(bulk.as_str()),
            _ => None,
        };
        if named != target {
            return Err(RaError::refused(
                Refusal::ActionMismatch,
                format!("the signed request names {named:?}, the URL {target:?}"),
            ));
        }
        self.check_unused(&request)?;
        Ok(request)
    }

    /// Verifies a CMS envelope signed by `signer`, the card's signature certificate
    /// (`wrong_signer`: the refusal's wording otherwise; one signed by the card's
    /// `authentication` certificate is refused as such), answers a retry of bytes already
    /// carried out, then checks the id, the time and that the action is `expected`.
    pub(super) fn open_signed(
        &self,
        cms_der: Vec<u8>,
        (signer, authentication): (&Certificate, &Certificate),
        wrong_signer: &str,
        expected: &str,
    ) -> Result<SignedRequest, RaError> {
        let content = cms::verify_attached_by_one_of(&cms_der, &[signer])
            .map(|(content, _)| content)
            .map_err(|e| match e {
                cms::CmsError::WrongSigner
                    if cms::verify_attached_by_one_of(&cms_der, &[authentication]).is_ok() =>
                {
                    RaError::refused(
                        Refusal::SignatureKeyRequired,
                        "the request is signed with the card's authentication key, which proves presence only: sign it with the card's signature key (its certificate has keyUsage nonRepudiation)",
                    )
                }
                cms::CmsError::WrongSigner => {
                    RaError::refused(Refusal::SignerNotClient, wrong_signer)
                }
                cms::CmsError::Signature(_) | cms::CmsError::Attribute(..) => {
                    RaError::refused(Refusal::BadSignature, e.to_string())
                }
                other => RaError::Malformed(other.to_string()),
            })?;
        // A retry of bytes already carried out gets their answer, even once their time has
        // left the window: the signature is the one checked then.
        if let Some(id) = request::id_of(&content)
            && let Some(answer) = self.answer_to_retry(&id, &cms_der)
        {
            return Err(RaError::CarriedOut(Box::new(answer)));
        }
        let request = request::parse(
            &content,
            cms_der,
            self.clock.now(),
            self.settings.time_window_seconds,
        )?;
        if request.action.name() != expected {
            return Err(RaError::refused(
                Refusal::ActionMismatch,
                format!(
                    "the signed action is {:?}, this URL takes {expected:?}",
                    request.action.name()
                ),
            ));
        }
        Ok(request)
    }

    /// The request's id was never used, or it is an approval being resumed by its own bytes.
    pub(super) fn check_unused(&self, request: &SignedRequest) -> Result<(), RaError> {
        if let Some(earlier) = self.store.get::<Evidence>(&request.id)? {
            match retried(&earlier, &request.evidence) {
                Retry::Answered(outcome) => return Err(RaError::CarriedOut(Box::new(outcome))),
                Retry::Resume => {}
                Retry::Other => return Err(replayed(&request.id)),
            }
        }
        Ok(())
    }

    /// The recorded answer to request `id`, if `cms` is the very request carried out under it.
    pub(super) fn answer_to_retry(&self, id: &str, cms: &[u8]) -> Option<serde_json::Value> {
        let earlier = self.store.get::<Evidence>(&id.to_owned()).ok()??;
        match retried(&earlier, cms) {
            Retry::Answered(answer) => Some(answer),
            Retry::Resume | Retry::Other => None,
        }
    }

    pub(super) fn carry_out(
        &self,
        operator: &Operator,
        request: SignedRequest,
    ) -> Result<(serde_json::Value, Effects), RaError> {
        let now = self.clock.now();
        match request.action.clone() {
            Action::Designate {
                holder,
                card,
                role,
                scope,
            } => self
                .designate(operator, &request, (&holder, &card), role, scope, now)
                .map(|v| (v, Effects::default())),
            Action::Withdraw {
                operator: target,
                reason,
            } => self
                .withdraw(operator, &request, &target, reason, now)
                .map(|v| (v, Effects::default())),
            Action::Submit {
                holder,
                card,
                authentication_csr,
                signature_csr,
            } => self
                .submit(
                    operator,
                    &request,
                    cards::Submission {
                        holder,
                        card,
                        renewal: None,
                        by_holder: false,
                        authentication_csr,
                        signature_csr,
                    },
                    now,
                )
                .map(|v| (v, Effects::default())),
            Action::Renew {
                card,
                authentication_csr,
                signature_csr,
            } => {
                let (existing, holder, by_holder) = self.renewable(&operator.record, &card, now)?;
                self.submit(
                    operator,
                    &request,
                    cards::Submission {
                        holder: existing.holder,
                        card: Some(card),
                        renewal: Some(holder),
                        by_holder,
                        authentication_csr,
                        signature_csr,
                    },
                    now,
                )
                .map(|v| (v, Effects::default()))
            }
            Action::Approve { request: id } => self.approve(operator, &request, &id, now),
            Action::ApproveBatch { requests } => {
                self.approve_batch(operator, &request, &requests, now)
            }
            Action::Reject {
                request: id,
                reason,
            } => self
                .reject(operator, &request, &id, reason, now)
                .map(|v| (v, Effects::default())),
            Action::Revoke {
                serial,
                card,
                reason,
                invalidity_date,
                at,
            } => self.revoke(
                operator,
                &request,
                revocations::Asked {
                    serial,
                    card,
                    reason,
                    invalidity_date,
                    at,
                },
                now,
            ),
            Action::Deliver { card, receipt } => self
                .deliver(operator, &request, &card, &receipt, now)
                .map(|v| (v, Effects::default())),
            Action::ProposeBulkRevocation {
                query,
                reason,
                dry_run,
            } => self.propose_bulk(operator, &request, (query, reason, dry_run), now),
            Action::ApproveBulkRevocation {
                bulk,
                certificates_sha256,
            } => self.approve_bulk(operator, &request, (bulk, certificates_sha256), now),
            Action::CancelRevocation { scheduled } => self
                .cancel_scheduled(operator, &request, &scheduled, now)
                .map(|v| (v, Effects::default())),
        }
    }

    /// The card `card` as it is now, if `actor` may ask for its renewal: in the actor's scope
    /// (holder and policies; a card outside it looks like no card at all, issue 10 problem 3),
    /// and still renewable ([`Self::card_renewable`]). The card of an operator is renewed only
    /// at its holder's own request, signed with that card: anyone else could otherwise give
    /// an operator's role to keys of their own. Returns the card, its holder's subject and
    /// whether the actor is that holder.
    pub(super) fn renewable(
        &self,
        actor: &OperatorRecord,
        card: &str,
        now: Timestamp,
    ) -> Result<(CardRecord, DistinguishedName, bool), RaError> {
        let unknown = || RaError::refused(Refusal::NotFound, format!("card {card} is unknown"));
        let existing = self
            .store
            .get::<Cards>(&card.to_owned())?
            .ok_or_else(unknown)?;
        let current = self
            .store
            .get::<Certificates>(&existing.authentication)?
            .ok_or_else(unknown)?;
        let holder = certificate_subject(&current.der)?;
        let in_scope = [
            &self.settings.authentication_policy,
            &self.settings.signature_policy,
        ]
        .into_iter()
        .try_for_each(|policy| check_scope(&actor.scope, &holder, policy));
        unknown_outside_scope(in_scope, &format!("card {card} is unknown"))?;
        let person = operators::person_key(&holder);
        let holds_it = |o: &OperatorRecord| {
            o.id == existing.card || o.person == person || o.holder == existing.holder
        };
        let by_holder = holds_it(actor);
        if !by_holder {
            if !actor.role.may_submit() {
                return Err(RaError::refused(
                    Refusal::RoleNotAllowed,
                    format!("an {} does not submit card requests", actor.role),
                ));
            }
            if active_operators(&self.store)?.iter().any(holds_it) {
                return Err(RaError::refused(
                    Refusal::RoleNotAllowed,
                    "the card of an operator is renewed at its holder's own request, signed with that card, and approved from above",
                ));
            }
        }
        self.card_renewable(&existing, now)?;
        Ok((existing, holder, by_holder))
    }

    /// Records a refusal: one audit event, nothing else.
    pub(super) fn record_refusal(
        &self,
        client: &str,
        action: &str,
        request: Option<String>,
        error: &RaError,
    ) {
        let Some(event) = refusal_event(Some(client), action, request, error) else {
            return;
        };
        let events = self.refusals.admit(event, self.clock.now());
        if events.is_empty() {
            return;
        }
        let written = self.store.commit(move |txn| -> Result<(), StoreError> {
            events.into_iter().for_each(|event| txn.audit(event));
            Ok(())
        });
        if let Err(error) = written {
            tracing::error!(%error, "could not record a refusal in the audit log");
        }
    }

    /// Records a refusal made before a signed request was opened: a client certificate that is
    /// not an active, valid operator, or a read outside the operator's scope.
    pub async fn record_early_refusal(&self, operator: &str, action: &str, error: &RaError) {
        let Some(event) = refusal_event(Some(operator), action, None, error) else {
            return;
        };
        self.write_refusals(self.refusals.admit(event, self.clock.now()))
            .await;
    }

    /// Writes the counts of repeated refusals whose window ended (all of them when `all`, at
    /// shutdown). The daemon calls it every few seconds.
    pub async fn flush_refusals(&self, all: bool) {
        self.write_refusals(self.refusals.due(all)).await;
    }

    pub(super) async fn write_refusals(&self, events: Vec<AuditEvent>) {
        if events.is_empty() {
            return;
        }
        let written = self
            .store
            .commit_async(move |txn| -> Result<(), StoreError> {
                events.into_iter().for_each(|event| txn.audit(event));
                Ok(())
            })
            .await;
        if let Err(error) = written {
            tracing::error!(%error, "could not record a refusal in the audit log");
        }
    }
}

/// The audit event of a refusal; `None` for failures that are not refusals (HSM or store
/// unavailable), which are logged instead.
pub(super) fn refusal_event(
    operator: Option<&str>,
    action: &str,
    request: Option<String>,
    error: &RaError,
) -> Option<AuditEvent> {
    let Some(rule) = error.rule() else {
        tracing::warn!(operator, action, %error, "request failed");
        return None;
    };
    Some(AuditEvent::RequestRefused {
        operator: operator.map(str::to_owned),
        action: action.to_owned(),
        request,
        rule,
        // Bounded: a detail may quote what the client sent.
        detail: error.to_string().chars().take(512).collect(),
    })
}

/// Stores the evidence of an accepted request under its id, refusing an id already used.
///
/// The same bytes again are a client's retry, not a replay: their recorded answer ends the
/// commit ([`RaError::CarriedOut`]), or, for an approval whose card was not stored (the HSM was
/// unavailable), the approval resumes. Other bytes under a used id are a replay.
pub(super) fn claim(txn: &mut Txn<'_>, id: &str, evidence: &EvidenceRecord) -> Result<(), RaError> {
    let key = id.to_owned();
    match txn.get::<Evidence>(&key)? {
        None => {
            txn.put::<Evidence>(&key, evidence)?;
            Ok(())
        }
        Some(earlier) => match retried(&earlier, &evidence.cms) {
            Retry::Answered(outcome) => Err(RaError::CarriedOut(Box::new(outcome))),
            Retry::Resume => Ok(()),
            Retry::Other => Err(replayed(id)),
        },
    }
}

/// A retry's answer, and what it must still wait for: a revocation is answered only once OCSP
/// says so, and the first copy may still be signing (re-signing "revoked" is harmless).
pub(super) fn retried_effects(answer: serde_json::Value) -> (serde_json::Value, Effects) {
    let revoked = answer
        .get("revoked")
        .and_then(|r| serde_json::from_value::<Vec<RevokedCertificate>>(r.clone()).ok())
        .unwrap_or_default();
    (
        answer,
        Effects {
            issued: Vec::new(),
            revoked,
        },
    )
}

/// What a request whose id was used before is.
pub(super) enum Retry {
    /// The same bytes, answered: the answer again.
    Answered(serde_json::Value),
    /// The same bytes of an approval still waiting for its card.
    Resume,
    /// Other bytes under a used id: a replay.
    Other,
}

pub(super) fn retried(earlier: &EvidenceRecord, cms: &[u8]) -> Retry {
    if earlier.cms != cms {
        return Retry::Other;
    }
    match &earlier.outcome {
        Some(outcome) => Retry::Answered(outcome.clone()),
        None if earlier.action == "approve" || earlier.action == "approve-batch" => Retry::Resume,
        None => Retry::Other,
    }
}

/// Records `outcome` as the answer to request `id`, in the batch that carries it out.
pub(super) fn settle(
    txn: &mut Txn<'_>,
    id: &str,
    outcome: &serde_json::Value,
) -> Result<(), RaError> {
    let key = id.to_owned();
    if let Some(mut evidence) = txn.get::<Evidence>(&key)? {
        evidence.outcome = Some(outcome.clone());
        txn.put::<Evidence>(&key, &evidence)?;
    }
    Ok(())
}

pub(super) fn replayed(id: &str) -> RaError {
    RaError::refused(
        Refusal::Replayed,
        format!("request id {id} was already used"),
    )
}
