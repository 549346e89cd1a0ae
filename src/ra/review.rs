//! What an approver sees before approving: the queue of pending requests in their scope, and
//! each request as a person must see it (holder, subject, policies, who submitted it, the key
//! types, and what changed since the holder's previous card).

use super::cards::{CardRequestRecord, CardRequests, RequestState};
use super::operators::Operators;
use super::{
    Operator, RaError, RegistrationAuthority, batch, certificate_subject, check_holder_scope,
    check_scope, subject_text,
};
use crate::store::schema::{Cards, Certificates, HolderIndex};
use crate::store::{CertKey, HolderKey, Reader};
use crate::x509::csr::ParsedCsr;
use crate::x509::keys::describe;
use crate::x509::name::parse_distinguished_name;

/// At most this many requests in one answer of the queue (the oldest first).
const QUEUE_LIMIT: usize = 500;

impl RegistrationAuthority {
    /// The pending requests in the operator's scope (their own submissions included), oldest
    /// first, a line each; the full review is each request's own read.
    pub fn queue(&self, operator: &Operator) -> Result<serde_json::Value, RaError> {
        let mut pending = Vec::new();
        for row in self.store.scan::<CardRequests>(&[], &[])? {
            let (_, record) = row?;
            // A record that cannot be read is left out, not the whole queue.
            if record.state == RequestState::Pending
                && self.in_scope(operator, &record).unwrap_or(false)
            {
                pending.push(record);
            }
        }
        pending.sort_by(|a, b| (a.submitted_at, &a.id).cmp(&(b.submitted_at, &b.id)));
        let total = pending.len();
        // Light: the previous card and the digest are in each request's own review.
        let requests: Vec<serde_json::Value> = pending
            .iter()
            .take(QUEUE_LIMIT)
            .map(|record| {
                let mut line = record.summary();
                line["self_service"] = serde_json::Value::Bool(record.self_service);
                line
            })
            .collect();
        Ok(serde_json::json!({ "pending": total, "requests": requests }))
    }

    /// Whether a request is in the operator's scope: its holder and both of its policies, as
    /// for a decision on it.
    pub(super) fn in_scope(
        &self,
        operator: &Operator,
        record: &CardRequestRecord,
    ) -> Result<bool, RaError> {
        let subject = parse_distinguished_name(&record.subject_der)
            .map_err(|e| RaError::Malformed(e.to_string()))?;
        Ok(check_holder_scope(&operator.record.scope, &subject).is_ok()
            && [&record.authentication_policy, &record.signature_policy]
                .into_iter()
                .all(|policy| check_scope(&operator.record.scope, &subject, policy).is_ok()))
    }

    /// A request as a person must see it before approving it (`operator` reads it).
    pub(super) fn review(
        &self,
        operator: &Operator,
        record: &CardRequestRecord,
    ) -> Result<serde_json::Value, RaError> {
        let mut view = record.summary();
        view["self_service"] = serde_json::Value::Bool(record.self_service);
        view["policies"] = serde_json::json!({
            "authentication": record.authentication_policy,
            "signature": record.signature_policy,
        });
        let keys = serde_json::json!({
            "authentication": csr_key_type(&record.authentication_csr),
            "signature": csr_key_type(&record.signature_csr),
        });
        view["key_types"] = keys.clone();
        // A holder's own renewal was submitted with their card, not by an operator met face to
        // face (and whether that holder is an operator is not the reader's to learn).
        if !record.self_service
            && let Some(submitter) = self.store.get::<Operators>(&record.submitted_by)?
        {
            view["submitter"] = serde_json::json!({
                "operator": submitter.id,
                "subject": submitter.subject,
                "role": submitter.role,
                "active": submitter.is_active(),
            });
        }
        // What a batch approval names the request by.
        if let Some(digest) = batch::submission_digest(&self.store, &record.id)? {
            view["submission_sha256"] = serde_json::Value::String(digest);
        }
        match self.previous_card(record)? {
            // The holder id is the submitter's word: a card of that id outside the reader's
            // scope is not shown.
            Some(previous)
                if check_scope(&operator.record.scope, &previous.holder, &previous.policy)
                    .is_err() =>
            {
                view["previous_card"] = serde_json::json!({ "outside_scope": true });
            }
            Some(previous) => {
                let mut changes = Vec::new();
                if previous.subject != record.subject {
                    changes.push(format!(
                        "subject: {} -> {}",
                        previous.subject, record.subject
                    ));
                }
                for (usage, before) in [
                    ("authentication", &previous.authentication_key),
                    ("signature", &previous.signature_key),
                ] {
                    let now = keys[usage].as_str().unwrap_or("unreadable");
                    if before != now {
                        changes.push(format!("{usage} key: {before} -> {now}"));
                    }
                }
                view["previous_card"] = serde_json::json!({
                    "card": previous.card,
                    "subject": previous.subject,
                    "not_after": previous.not_after,
                    "revoked": previous.revoked,
                });
                view["changes"] = serde_json::json!(changes);
            }
            None => {}
        }
        Ok(view)
    }

    /// The card a request follows: the card itself for a renewal, else the holder's most
    /// recent card (by the start of its authentication certificate).
    fn previous_card(&self, record: &CardRequestRecord) -> Result<Option<PreviousCard>, RaError> {
        let card = if record.renewal {
            self.store.get::<Cards>(&record.card)?
        } else {
            let mut latest: Option<(crate::x509::Timestamp, String)> = None;
            let prefix = HolderKey::prefix(&record.holder);
            for row in self.store.scan::<HolderIndex>(&prefix, &prefix)? {
                let (key, ()) = row?;
                let Some(stored) = self.store.get::<Certificates>(&key.certificate)? else {
                    continue;
                };
                if let Some(card) = stored.card
                    && latest
                        .as_ref()
                        .is_none_or(|(at, _)| stored.not_before > *at)
                {
                    latest = Some((stored.not_before, card));
                }
            }
            match latest {
                Some((_, card)) => self.store.get::<Cards>(&card)?,
                None => None,
            }
        };
        let Some(card) = card else {
            return Ok(None);
        };
        let Some(authentication) = self.store.get::<Certificates>(&card.authentication)? else {
            return Ok(None);
        };
        let signature_key = self.certificate_key_type(&card.signature)?;
        let holder = certificate_subject(&authentication.der)?;
        Ok(Some(PreviousCard {
            subject: subject_text(&holder),
            holder,
            policy: authentication.policy.clone(),
            authentication_key: certificate_key_type(&authentication.der),
            signature_key,
            not_after: authentication.not_after,
            revoked: self
                .store
                .contains::<crate::store::schema::Revocations>(&card.authentication)?,
            card: card.card,
        }))
    }

    fn certificate_key_type(&self, key: &CertKey) -> Result<String, RaError> {
        Ok(match self.store.get::<Certificates>(key)? {
            Some(stored) => certificate_key_type(&stored.der),
            None => "unknown".into(),
        })
    }
}

struct PreviousCard {
    card: String,
    subject: String,
    holder: crate::x509::name::DistinguishedName,
    policy: String,
    authentication_key: String,
    signature_key: String,
    not_after: crate::x509::Timestamp,
    revoked: bool,
}

/// "EC P-256", "RSA 3072"...: the key a CSR asks to certify.
fn csr_key_type(csr: &[u8]) -> String {
    match ParsedCsr::parse(csr) {
        Ok(parsed) => match describe(parsed.public_key()) {
            Ok(kind) => kind.to_string(),
            Err(e) => format!("unusable key ({e})"),
        },
        Err(_) => "unreadable".into(),
    }
}

fn certificate_key_type(der: &[u8]) -> String {
    match <x509_cert::Certificate as der::Decode>::from_der(der) {
        Ok(certificate) => {
            match describe(certificate.tbs_certificate().subject_public_key_info()) {
                Ok(kind) => kind.to_string(),
                Err(e) => format!("unusable key ({e})"),
            }
        }
        Err(_) => "unreadable".into(),
    }
}
