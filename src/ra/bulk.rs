//! Bulk revocation by query: the cards of a closing unit, of a policy, of a list of holders,
//! issued between two dates. Like a card request, it is proposed by one operator and approved
//! by another person in scope (an AED or above):
//!
//! 1. the proposal (`propose-bulk-revocation`) names the query and the reason; with
//!    `"dry_run": true` it only lists what would be revoked. Otherwise the list is frozen with
//!    the proposal, with its SHA-256 ([`list_digest`]).
//! 2. the approval (`approve-bulk-revocation`) names the proposal and that digest: what the
//!    approver reviewed is what is revoked. Every certificate must still be in the approver's
//!    scope; those revoked since are skipped. All revocations are one atomic write, one
//!    `certificate_revoked` audit event each; OCSP says revoked for all of them when the
//!    approval returns, and the CRLs are published once.
//!
//! Operators' own cards are never in a bulk revocation: they are revoked one by one, from
//! above (the rank rule of single revocations).

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::operators::{OperatorRecord, Operators};
use super::request::SignedRequest;
use super::{
    Effects, Operator, RaError, Refusal, RegistrationAuthority, active_operators,
    certificate_subject, check_rank_over_holder, check_scope, check_still_active, claim, settle,
    subject_text,
};
use crate::audit::AuditEvent;
use crate::ca::revoke::{RevocationRequest, RevocationTarget};
use crate::store::schema::{Certificates, Revocations};
use crate::store::{CertKey, Reader};
use crate::x509::Timestamp;
use crate::x509::name::{Attribute, DistinguishedName};
use crate::x509::revocation::RevocationReason;

/// At most this many certificates in one bulk revocation.
pub const BULK_LIMIT: usize = 50_000;

/// A proposal not approved within this time is void (what was reviewed grows stale).
pub const PROPOSAL_LIFETIME_SECONDS: u64 = 72 * 3600;

/// What a bulk revocation selects: every criterion given must hold (at least one is).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkQuery {
    /// Subject OU values: the holder carries one of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub units: Vec<String>,
    /// Certification policies (file names).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<String>,
    /// Holder ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holders: Vec<String>,
    /// Issued at or after (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_after: Option<String>,
    /// Issued before (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_before: Option<String>,
}

/// A proposed bulk revocation and where it stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkRevocationRecord {
    pub id: String,
    pub proposed_by: String,
    pub proposed_at: Timestamp,
    pub query: BulkQuery,
    pub reason: String,
    /// The certificates selected at the proposal, in key order.
    pub certificates: Vec<CertKey>,
    /// [`list_digest`] of `certificates`.
    pub certificates_sha256: String,
    pub state: BulkState,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum BulkState {
    Pending,
    Revoked {
        by: String,
        at: Timestamp,
        /// How many were revoked (those revoked since the proposal are not counted).
        revoked: usize,
    },
}

crate::store::table!(
    /// Bulk revocations, by the id of their proposal.
    BulkRevocations, "bulk_revocations", String, BulkRevocationRecord
);
crate::store::json_value!(BulkRevocationRecord);

/// The SHA-256 (lowercase hex) of a list of certificates: one line `ISSUER:SERIAL` each, in
/// the list's order. What the approver names.
pub fn list_digest(certificates: &[CertKey]) -> String {
    let mut text = String::with_capacity(certificates.len() * 64);
    for key in certificates {
        text.push_str(&key.issuer.to_hex());
        text.push(':');
        text.push_str(&key.serial.to_hex());
        text.push('\n');
    }
    hex::encode(crate::x509::keys::sha256(text.as_bytes()))
}

/// A query, read and checked.
struct Selection {
    units: HashSet<String>,
    policies: HashSet<String>,
    holders: HashSet<String>,
    after: Option<Timestamp>,
    before: Option<Timestamp>,
}

impl Selection {
    fn of(query: &BulkQuery) -> Result<Self, RaError> {
        let time = |field: &str, text: &Option<String>| {
            text.as_deref()
                .map(|t| {
                    Timestamp::parse_rfc3339(t)
                        .map_err(|e| RaError::Malformed(format!("query.{field} {t:?}: {e}")))
                })
                .transpose()
        };
        let selection = Selection {
            units: query.units.iter().cloned().collect(),
            policies: query.policies.iter().cloned().collect(),
            holders: query.holders.iter().cloned().collect(),
            after: time("issued_after", &query.issued_after)?,
            before: time("issued_before", &query.issued_before)?,
        };
        if selection.units.is_empty()
            && selection.policies.is_empty()
            && selection.holders.is_empty()
            && selection.after.is_none()
            && selection.before.is_none()
        {
            return Err(RaError::Malformed(
                "query: name at least one of units, policies, holders, issued_after, issued_before"
                    .into(),
            ));
        }
        Ok(selection)
    }

    fn selects(&self, record: &crate::store::CertRecord, subject: &DistinguishedName) -> bool {
        (self.units.is_empty()
            || subject
                .values(Attribute::OrganizationalUnit)
                .any(|ou| self.units.contains(ou)))
            && (self.policies.is_empty() || self.policies.contains(&record.policy))
            && (self.holders.is_empty()
                || record
                    .holder
                    .as_ref()
                    .is_some_and(|h| self.holders.contains(h)))
            && self.after.is_none_or(|after| record.not_before >= after)
            && self.before.is_none_or(|before| record.not_before < before)
    }
}

/// One certificate of a list, as the approver reviews it.
fn listed(
    key: &CertKey,
    record: &crate::store::CertRecord,
    subject: &DistinguishedName,
) -> serde_json::Value {
    serde_json::json!({
        // With the serial, what the list's digest is made of.
        "issuer": key.issuer.to_hex(),
        "serial": key.serial.to_hex(),
        "policy": record.policy,
        "holder": record.holder,
        "card": record.card,
        "subject": subject_text(subject),
        "not_after": record.not_after,
    })
}

fn reason_of(text: &str) -> Result<RevocationReason, RaError> {
    let reason: RevocationReason = text
        .parse()
        .map_err(|e: String| RaError::Malformed(format!("reason: {e}")))?;
    if reason == RevocationReason::CaCompromise {
        return Err(RaError::Malformed(
            "reason: ca-compromise is not an operator's reason".into(),
        ));
    }
    Ok(reason)
}

/// Whether `holder` is (or its card belongs to) an active operator.
fn is_operator(
    operators: &[OperatorRecord],
    subject: &DistinguishedName,
    holder: Option<&str>,
) -> bool {
    let person = super::operators::person_key(subject);
    operators
        .iter()
        .any(|o| o.person == person || Some(o.holder.as_str()) == holder)
}

impl RegistrationAuthority {
    /// The certificates `query` selects in the operator's scope: valid now, not revoked, not an
    /// operator's. In key order, with what the approver reviews of each.
    fn select(
        &self,
        operator: &OperatorRecord,
        query: &BulkQuery,
        now: Timestamp,
    ) -> Result<(Vec<CertKey>, Vec<serde_json::Value>), RaError> {
        let selection = Selection::of(query)?;
        let operators = active_operators(&self.store)?;
        let (mut keys, mut views) = (Vec::new(), Vec::new());
        for row in self.store.scan::<Certificates>(&[], &[])? {
            let (key, record) = row?;
            if record.not_after <= now
                || (!selection.policies.is_empty() && !selection.policies.contains(&record.policy))
                || self.store.contains::<Revocations>(&key)?
            {
                continue;
            }
            let Ok(subject) = certificate_subject(&record.der) else {
                continue;
            };
            if !selection.selects(&record, &subject)
                || check_scope(&operator.scope, &subject, &record.policy).is_err()
                || is_operator(&operators, &subject, record.holder.as_deref())
            {
                continue;
            }
            if keys.len() == BULK_LIMIT {
                return Err(RaError::Malformed(format!(
                    "query: more than {BULK_LIMIT} certificates; narrow it"
                )));
            }
            views.push(listed(&key, &record, &subject));
            keys.push(key);
        }
        Ok((keys, views))
    }

    /// A proposal, or with `dry_run` only the list it would freeze.
    pub(super) fn propose_bulk(
        &self,
        actor: &Operator,
        request: &SignedRequest,
        (query, reason, dry_run): (BulkQuery, String, bool),
        now: Timestamp,
    ) -> Result<(serde_json::Value, Effects), RaError> {
        reason_of(&reason)?;
        let (certificates, views) = self.select(&actor.record, &query, now)?;
        let digest = list_digest(&certificates);
        if dry_run {
            let answer = serde_json::json!({
                "dry_run": true,
                "count": certificates.len(),
                "certificates_sha256": digest,
                "certificates": views,
            });
            return Ok((answer, Effects::default()));
        }
        if certificates.is_empty() {
            return Err(RaError::refused(
                Refusal::NotFound,
                "the query selects no certificate in your scope".to_owned(),
            ));
        }
        let record = BulkRevocationRecord {
            id: request.id.clone(),
            proposed_by: actor.record.id.clone(),
            proposed_at: now,
            query,
            reason,
            certificates,
            certificates_sha256: digest,
            state: BulkState::Pending,
        };
        let answer = bulk_summary(&record);
        let evidence = self.evidence(actor, request, now);
        let (id, actor_id, settled) = (request.id.clone(), actor.record.id.clone(), answer.clone());
        self.store.commit(move |txn| -> Result<(), RaError> {
            claim(txn, &id, &evidence)?;
            check_still_active(txn, &actor_id)?;
            txn.audit(AuditEvent::BulkRevocationProposed {
                bulk: record.id.clone(),
                operator: actor_id.clone(),
                query: serde_json::to_value(&record.query).unwrap_or_default(),
                reason: record.reason.clone(),
                count: record.certificates.len(),
                certificates_sha256: record.certificates_sha256.clone(),
            });
            txn.put::<BulkRevocations>(&record.id, &record)?;
            settle(txn, &id, &settled)?;
            Ok(())
        })?;
        Ok((answer, Effects::default()))
    }

    /// A proposal, with its list, if the operator may see it (every certificate in its scope).
    pub fn bulk_revocation(
        &self,
        operator: &Operator,
        id: &str,
    ) -> Result<serde_json::Value, RaError> {
        let unknown = || RaError::refused(Refusal::NotFound, format!("no bulk revocation {id}"));
        let record = self
            .store
            .get::<BulkRevocations>(&id.to_owned())?
            .ok_or_else(unknown)?;
        let mut views = Vec::with_capacity(record.certificates.len());
        for key in &record.certificates {
            let stored = self.store.get::<Certificates>(key)?.ok_or_else(unknown)?;
            let subject = certificate_subject(&stored.der)?;
            if check_scope(&operator.record.scope, &subject, &stored.policy).is_err() {
                return Err(unknown());
            }
            views.push(listed(key, &stored, &subject));
        }
        let mut answer = bulk_summary(&record);
        answer["certificates"] = serde_json::Value::Array(views);
        Ok(answer)
    }

    /// Revokes what a proposal froze, after the approver's checks; one atomic write.
    pub(super) fn approve_bulk(
        &self,
        actor: &Operator,
        request: &SignedRequest,
        (id, digest): (String, String),
        now: Timestamp,
    ) -> Result<(serde_json::Value, Effects), RaError> {
        if !actor.record.role.may_decide() {
            return Err(RaError::refused(
                Refusal::RoleNotAllowed,
                format!("an {} does not approve bulk revocations", actor.record.role),
            ));
        }
        // A revocation is answered only once OCSP says so.
        if !self.publisher.available() {
            return Err(RaError::Unavailable);
        }
        let evidence = self.evidence(actor, request, now);
        let (request_id, approver) = (request.id.clone(), actor.record.clone());
        // Who is an operator now: their cards are revoked only from above.
        let operators = active_operators(&self.store)?;
        let revoked = self.store.commit(move |txn| -> Result<_, RaError> {
            claim(txn, &request_id, &evidence)?;
            check_still_active(txn, &approver.id)?;
            let unknown =
                || RaError::refused(Refusal::NotFound, format!("no bulk revocation {id}"));
            let mut record = txn.get::<BulkRevocations>(&id)?.ok_or_else(unknown)?;
            // The scope first: a list with anything outside it is as unknown as no list.
            let mut listed = Vec::with_capacity(record.certificates.len());
            for key in &record.certificates {
                let stored = txn.get::<Certificates>(key)?.ok_or_else(unknown)?;
                let subject = certificate_subject(&stored.der)?;
                if check_scope(&approver.scope, &subject, &stored.policy).is_err() {
                    return Err(unknown());
                }
                listed.push((key, stored, subject));
            }
            if record.state != BulkState::Pending {
                return Err(RaError::refused(
                    Refusal::NotPending,
                    format!("bulk revocation {id} was carried out already"),
                ));
            }
            if now > record.proposed_at.plus_seconds(PROPOSAL_LIFETIME_SECONDS) {
                return Err(RaError::refused(
                    Refusal::NotPending,
                    format!(
                        "bulk revocation {id} was proposed at {}, more than {} hours ago: propose it again",
                        record.proposed_at,
                        PROPOSAL_LIFETIME_SECONDS / 3600
                    ),
                ));
            }
            let proposer = txn
                .get::<Operators>(&record.proposed_by)?
                .filter(|o| o.is_active())
                .ok_or_else(|| {
                    RaError::refused(
                        Refusal::OperatorWithdrawn,
                        format!(
                            "{} who proposed it is no longer an operator",
                            record.proposed_by
                        ),
                    )
                })?;
            if proposer.person == approver.person
                || proposer.id == approver.id
                || proposer.holder == approver.holder
            {
                return Err(RaError::refused(
                    Refusal::OwnSubmission,
                    "a bulk revocation is approved by another person than who proposed it"
                        .to_owned(),
                ));
            }
            if digest != record.certificates_sha256 {
                return Err(RaError::refused(
                    Refusal::DigestMismatch,
                    format!("bulk revocation {id}: the list's SHA-256 is not {digest}"),
                ));
            }
            let reason = reason_of(&record.reason)?;
            let requested_by = format!("operator:{} bulk:{id}", approver.id);
            let mut revoked = Vec::with_capacity(record.certificates.len());
            for (key, stored, subject) in listed {
                // A holder who became an operator since the proposal: from above only, as
                // for a single revocation.
                if is_operator(&operators, &subject, stored.holder.as_deref()) {
                    check_rank_over_holder(&operators, &approver, &subject, stored.holder.as_deref())?;
                }
                let revocation = RevocationRequest {
                    target: RevocationTarget::Serial(key.serial.clone()),
                    reason,
                    invalidity_date: None,
                    requested_by: requested_by.clone(),
                };
                if let Some(done) = crate::ca::revoke::revoke_one(txn, key, &revocation, now)? {
                    revoked.push(done);
                }
            }
            record.state = BulkState::Revoked {
                by: approver.id.clone(),
                at: now,
                revoked: revoked.len(),
            };
            txn.audit(AuditEvent::BulkRevocationApproved {
                bulk: id.clone(),
                operator: approver.id.clone(),
                proposed_by: record.proposed_by.clone(),
                revoked: revoked.len(),
                approval: request_id.clone(),
            });
            txn.put::<BulkRevocations>(&id, &record)?;
            settle(txn, &request_id, &bulk_summary(&record))?;
            Ok((record, revoked))
        })?;
        let (record, revoked) = revoked;
        Ok((
            bulk_summary(&record),
            Effects {
                issued: Vec::new(),
                revoked,
            },
        ))
    }
}

/// A bulk revocation without its list: what the proposal and the approval answer.
fn bulk_summary(record: &BulkRevocationRecord) -> serde_json::Value {
    let mut summary = serde_json::json!({
        "bulk": record.id,
        "proposed_by": record.proposed_by,
        "proposed_at": record.proposed_at,
        "query": record.query,
        "reason": record.reason,
        "count": record.certificates.len(),
        "certificates_sha256": record.certificates_sha256,
    });
    if let (Some(object), Ok(serde_json::Value::Object(state))) =
        (summary.as_object_mut(), serde_json::to_value(&record.state))
    {
        object.extend(state);
    }
    summary
}
