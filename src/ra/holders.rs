//! Holders on their own card, and the handover of a card.
//!
//! A holder authenticates over mutual TLS with their card's current authentication
//! certificate and reaches only `/ra/v1/holder/…`: their card as it stands, the renewal of it
//! (two new CSRs in a request they sign with the card's signature certificate, their
//! "attestation de renouvellement", kept as evidence; an AED in scope approves it like any
//! renewal) and its immediate revocation (compromise, suspicion). An operator is a holder too
//! on these routes; a holder is never an operator on the others.
//!
//! At the face-to-face handover the holder signs a receipt with the new card's signature key
//! and an operator countersigns it (the "PV de remise"): the receipt is verified against the
//! card's own signature certificate, stored with the card, and the card goes from issued to
//! delivered.
use std::sync::Arc;

use der::Decode;
use serde::{Deserialize, Serialize};
use x509_cert::Certificate;

use super::cards::CardRequests;
use super::cards::{CardRequestRecord, RequestState, Submission};
use super::request::{Action, SignedRequest};
use super::{
    Effects, EvidenceRecord, Operator, RaError, Refusal, RegistrationAuthority,
    certificate_subject, check_holder_scope, check_scope, claim, settle, unknown_outside_scope,
};
use crate::audit::AuditEvent;
use crate::ca::revoke::{RevocationRequest, RevocationTarget};
use crate::store::schema::{Cards, Certificates, Revocations};
use crate::store::{CardRecord, CertKey, Reader, base64_bytes};
use crate::x509::name::DistinguishedName;
use crate::x509::revocation::RevocationReason;
use crate::x509::{Timestamp, cms};

/// A card's holder, authenticated by the card's current authentication certificate.
#[derive(Clone, Debug)]
pub struct Holder {
    pub card: CardRecord,
    pub subject: DistinguishedName,
    /// The card's signature certificate, when valid and not revoked: the only signer of the
    /// holder's requests.
    pub signature_certificate: Option<Certificate>,
    /// The card's authentication certificate (the TLS client's): never a signer.
    pub authentication: Certificate,
}

impl Holder {
    /// The client id in logs and the audit log.
    pub fn client(&self) -> String {
        format!("holder:{}", self.card.card)
    }
}

/// The handover of a card: the receipt its holder signed, countersigned by the operator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoverRecord {
    pub card: String,
    /// The operator who countersigned (their signed request is the evidence under `request`).
    pub by: String,
    pub at: Timestamp,
    pub request: String,
    /// The receipt: CMS SignedData by the card's signature key.
    #[serde(with = "base64_bytes")]
    pub receipt: Vec<u8>,
    /// What the holder signed.
    pub receipt_content: serde_json::Value,
}

crate::store::table!(
    /// Card handovers, by card id: the receipt its holder signed (the "PV de remise").
    Handovers, "handovers", String, HandoverRecord
);
crate::store::json_value!(HandoverRecord);

/// What a holder signs at the handover.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Receipt {
    /// Always "handover".
    receipt: String,
    card: String,
    time: String,
    #[serde(default)]
    #[allow(dead_code)]
    statement: Option<String>,
}

impl RegistrationAuthority {
    /// The holder behind a TLS client certificate: the current authentication certificate of a
    /// card of this CA, valid now and not revoked.
    pub fn authenticate_holder(&self, certificate_der: &[u8]) -> Result<Holder, RaError> {
        let unknown = || {
            RaError::refused(
                Refusal::UnknownHolder,
                "the client certificate is not the current authentication certificate of a card",
            )
        };
        let key = self
            .certificate_key(certificate_der)
            .map_err(|_| unknown())?;
        let stored = self
            .store
            .get::<Certificates>(&key)?
            .filter(|stored| stored.der == certificate_der)
            .ok_or_else(unknown)?;
        let card_id = stored.card.clone().ok_or_else(unknown)?;
        let card = self.store.get::<Cards>(&card_id)?.ok_or_else(unknown)?;
        if card.authentication != key {
            return Err(unknown());
        }
        let now = self.clock.now();
        if self.store.contains::<Revocations>(&key)?
            || now > stored.not_after
            || now < stored.not_before
        {
            return Err(RaError::refused(
                Refusal::HolderCertificateInvalid,
                format!(
                    "the card's authentication certificate {} is revoked or not valid now",
                    key.serial
                ),
            ));
        }
        let subject = certificate_subject(&stored.der)?;
        let signature_certificate = match self.store.get::<Certificates>(&card.signature)? {
            Some(stored) => self.check_signature_certificate(&stored.der, now).ok(),
            None => None,
        };
        let authentication = Certificate::from_der(&stored.der)
            .map_err(|e| RaError::Malformed(format!("holder certificate: {e}")))?;
        Ok(Holder {
            card,
            subject,
            signature_certificate,
            authentication,
        })
    }

    /// A card as its holder, or an operator in scope, sees it: its certificates, expiry,
    /// whether a renewal is due and allowed, the renewal waiting, and the handover.
    pub fn card_view(&self, card: &CardRecord) -> Result<serde_json::Value, RaError> {
        let now = self.clock.now();
        let mut certificates = Vec::new();
        let mut ends = None::<Timestamp>;
        for (usage, key) in [
            ("authentication", &card.authentication),
            ("signature", &card.signature),
        ] {
            let Some(stored) = self.store.get::<Certificates>(key)? else {
                continue;
            };
            let revoked = self.store.get::<Revocations>(key)?;
            ends = Some(ends.map_or(stored.not_after, |e| e.min(stored.not_after)));
            certificates.push(serde_json::json!({
                "usage": usage,
                "serial": key.serial.to_hex(),
                "policy": stored.policy,
                "not_before": stored.not_before,
                "not_after": stored.not_after,
                "status": if revoked.is_some() { "revoked" } else if now > stored.not_after { "expired" } else { "valid" },
                "certificate": crate::x509::pem::encode(crate::x509::pem::CERTIFICATE, &stored.der),
            }));
        }
        let renewal_allowed = self.card_renewable(card, now);
        // Due: the certificates end within 90 days (the alert window of the expiry metric).
        let due = ends.is_some_and(|end| end <= now.plus_seconds(90 * 86_400));
        let pending = self.pending_renewal(&card.card)?;
        let handover = self.store.get::<Handovers>(&card.card)?;
        Ok(serde_json::json!({
            "card": card.card,
            "holder": card.holder,
            "state": if handover.is_some() { "delivered" } else { "issued" },
            "issued_at": card.issued_at,
            "card_expires_at": card.card_expires_at,
            "certificates": certificates,
            "renewal": {
                "due": due,
                "allowed": renewal_allowed.is_ok(),
                "why_not": renewal_allowed.err().map(|e| e.to_string()),
                "pending": pending.map(|r| r.summary()),
            },
            "handover": handover.map(|h| serde_json::json!({
                "by": h.by,
                "at": h.at,
                "request": h.request,
                "receipt": base64_text(&h.receipt),
                "receipt_content": h.receipt_content,
            })),
        }))
    }

    /// The card `card`, for an operator whose scope covers its holder (one outside looks like
    /// no card at all).
    pub fn card_for_operator(
        &self,
        operator: &Operator,
        card: &str,
    ) -> Result<serde_json::Value, RaError> {
        let (record, _) = self.card_in_scope(operator, card)?;
        self.card_view(&record)
    }

    fn card_in_scope(
        &self,
        operator: &Operator,
        card: &str,
    ) -> Result<(CardRecord, DistinguishedName), RaError> {
        let unknown = || RaError::refused(Refusal::NotFound, format!("card {card} is unknown"));
        let record = self
            .store
            .get::<Cards>(&card.to_owned())?
            .ok_or_else(unknown)?;
        let stored = self
            .store
            .get::<Certificates>(&record.authentication)?
            .ok_or_else(unknown)?;
        let holder = certificate_subject(&stored.der)?;
        let in_scope = check_holder_scope(&operator.record.scope, &holder)
            .and_then(|()| check_scope(&operator.record.scope, &holder, &stored.policy));
        unknown_outside_scope(in_scope, &format!("card {card} is unknown"))?;
        Ok((record, holder))
    }

    fn pending_renewal(&self, card: &str) -> Result<Option<CardRequestRecord>, RaError> {
        // Few requests per card; the table is keyed by request id.
        for row in self.store.scan::<CardRequests>(&[], &[])? {
            let (_, record) = row?;
            if record.card == card
                && record.renewal
                && matches!(
                    record.state,
                    RequestState::Pending | RequestState::Approved { .. }
                )
            {
                return Ok(Some(record));
            }
        }
        Ok(None)
    }

    /// A holder's signed request (`renew` or `revoke` of their own card).
    pub async fn handle_holder(
        self: &Arc<Self>,
        holder: &Holder,
        expected: super::request::ActionKind,
        cms: Vec<u8>,
    ) -> Result<serde_json::Value, RaError> {
        let expected = expected.name();
        let holder = holder.clone();
        self.run_signed(holder.client(), expected, cms, move |ra, cms| {
            let request = match ra.open_holder(&holder, expected, cms) {
                Ok(request) => request,
                Err(error) => return (None, Err(error)),
            };
            let id = request.id.clone();
            (Some(id), ra.carry_out_for_holder(&holder, request))
        })
        .await
        .1
    }

    /// Verifies a holder's request: signed by the card's signature certificate (their
    /// attestation), fresh, for the action the URL names, on their own card.
    fn open_holder(
        &self,
        holder: &Holder,
        expected: &str,
        cms_der: Vec<u8>,
    ) -> Result<SignedRequest, RaError> {
        let Some(signer) = &holder.signature_certificate else {
            return Err(RaError::refused(
                Refusal::HolderCertificateInvalid,
                "the card's signature certificate cannot sign (revoked or not valid now)",
            ));
        };
        let request = self.open_signed(
            cms_der,
            (signer, &holder.authentication),
            "a holder's request is signed with their card's signature certificate",
            expected,
        )?;
        let named = match &request.action {
            Action::Renew { card, .. } => Some(card.as_str()),
            Action::Revoke {
                card,
                serial: None,
                at: None,
                ..
            } => card.as_deref(),
            _ => None,
        };
        if named != Some(holder.card.card.as_str()) {
            return Err(RaError::refused(
                Refusal::ActionMismatch,
                "a holder acts on their own card, now, and names it",
            ));
        }
        self.check_unused(&request)?;
        Ok(request)
    }

    fn carry_out_for_holder(
        &self,
        holder: &Holder,
        request: SignedRequest,
    ) -> Result<(serde_json::Value, Effects), RaError> {
        let now = self.clock.now();
        match request.action.clone() {
            Action::Renew {
                card,
                authentication_csr,
                signature_csr,
            } => {
                let existing = self.store.get::<Cards>(&card)?.ok_or_else(|| {
                    RaError::refused(Refusal::NotFound, format!("card {card} is unknown"))
                })?;
                self.card_renewable(&existing, now)?;
                if self.pending_renewal(&card)?.is_some() {
                    return Err(RaError::refused(
                        Refusal::RenewalNotAllowed,
                        format!("a renewal of card {card} is waiting for approval already"),
                    ));
                }
                let submission = Submission {
                    holder: existing.holder.clone(),
                    card: Some(card),
                    renewal: Some(holder.subject.clone()),
                    by_holder: true,
                    authentication_csr,
                    signature_csr,
                };
                self.submit_for_holder(holder, &request, submission, now)
                    .map(|v| (v, Effects::default()))
            }
            Action::Revoke {
                reason,
                invalidity_date,
                ..
            } => {
                let reason: RevocationReason = reason
                    .as_deref()
                    .unwrap_or("key-compromise")
                    .parse()
                    .map_err(|e: String| RaError::Malformed(format!("reason: {e}")))?;
                if matches!(
                    reason,
                    RevocationReason::CaCompromise | RevocationReason::Superseded
                ) {
                    return Err(RaError::Malformed(format!(
                        "reason: {reason} is not a holder's reason"
                    )));
                }
                if !self.publisher.available() {
                    return Err(RaError::Unavailable);
                }
                // An invalidity date disowns what the card signed since: an operator records
                // it after looking into the loss, never the holder alone.
                if invalidity_date.is_some() {
                    return Err(RaError::Malformed(
                        "invalidity_date: not a holder's to give (an operator records it)".into(),
                    ));
                }
                let revocation = RevocationRequest {
                    target: RevocationTarget::Card(holder.card.card.clone()),
                    reason,
                    invalidity_date: None,
                    requested_by: holder.client(),
                };
                let evidence = holder_evidence(holder, &request, now);
                let request_id = request.id.clone();
                let revoked = self.store.commit(move |txn| -> Result<_, RaError> {
                    claim(txn, &request_id, &evidence)?;
                    let revoked = crate::ca::revoke::revoke_in(txn, &revocation, now)?;
                    settle(txn, &request_id, &serde_json::json!({ "revoked": revoked }))?;
                    Ok(revoked)
                })?;
                Ok((
                    serde_json::json!({ "revoked": revoked }),
                    Effects {
                        issued: Vec::new(),
                        revoked,
                    },
                ))
            }
            _ => Err(RaError::refused(
                Refusal::ActionMismatch,
                "not a holder's action",
            )),
        }
    }

    /// Records the handover of `card`: `receipt` (CMS, base64) signed by the card's own
    /// signature key and naming the card; countersigned by `actor`'s signed request.
    pub(super) fn deliver(
        &self,
        actor: &Operator,
        request: &SignedRequest,
        card: &str,
        receipt_base64: &str,
        now: Timestamp,
    ) -> Result<serde_json::Value, RaError> {
        if !actor.record.role.may_submit() {
            return Err(RaError::refused(
                Refusal::RoleNotAllowed,
                format!("an {} does not hand cards over", actor.record.role),
            ));
        }
        let (record, holder) = self.card_in_scope(actor, card)?;
        super::cards::refuse_own(actor, &holder, &record.holder)?;
        // The card of an operator is handed over by an operator above them, as it was issued.
        super::check_rank_over_holder(
            &super::active_operators(&self.store)?,
            &actor.record,
            &holder,
            Some(&record.holder),
        )?;
        let receipt = base64_decode(receipt_base64)
            .ok_or_else(|| RaError::Malformed("receipt: not base64".into()))?;
        let bad = |why: String| RaError::refused(Refusal::BadReceipt, why);
        let signature = self
            .store
            .get::<Certificates>(&record.signature)?
            .ok_or_else(|| bad(format!("card {card} has no signature certificate")))?;
        let signature_certificate = Certificate::from_der(&signature.der)
            .map_err(|e| RaError::Malformed(format!("signature certificate: {e}")))?;
        let content = cms::verify_attached_by_one_of(&receipt, &[&signature_certificate])
            .map(|(content, _)| content)
            .map_err(|e| {
                bad(format!(
                    "the receipt is not signed by the card's signature certificate ({e})"
                ))
            })?;
        let signed: Receipt = serde_json::from_slice(&content)
            .map_err(|e| bad(format!("the receipt's content: {e}")))?;
        if signed.receipt != "handover" || signed.card != card {
            return Err(bad(format!(
                "the receipt is a {:?} receipt for card {:?}, not the handover of card {card}",
                signed.receipt, signed.card
            )));
        }
        Timestamp::parse_rfc3339(&signed.time)
            .map_err(|e| bad(format!("the receipt's time: {e}")))?;
        if self.store.contains::<Revocations>(&record.signature)? {
            return Err(bad(format!("card {card} is revoked")));
        }
        let receipt_content: serde_json::Value =
            serde_json::from_slice(&content).map_err(|e| bad(e.to_string()))?;
        let handover = HandoverRecord {
            card: card.to_owned(),
            by: actor.record.id.clone(),
            at: now,
            request: request.id.clone(),
            receipt,
            receipt_content,
        };
        let answer =
            serde_json::json!({ "card": card, "state": "delivered", "at": now, "by": handover.by });
        let evidence = self.evidence(actor, request, now).answered(&answer);
        let (request_id, actor_id, key) =
            (request.id.clone(), actor.record.id.clone(), card.to_owned());
        let serial = record.signature.serial.to_hex();
        self.store.commit(move |txn| -> Result<(), RaError> {
            claim(txn, &request_id, &evidence)?;
            super::check_still_active(txn, &actor_id)?;
            if txn.contains::<Handovers>(&key)? {
                return Err(RaError::refused(
                    Refusal::AlreadyDelivered,
                    format!("card {key} was handed over already"),
                ));
            }
            txn.audit(AuditEvent::CardDelivered {
                card: key.clone(),
                operator: actor_id.clone(),
                request: request_id.clone(),
                receipt_signer: serial,
            });
            txn.put::<Handovers>(&key, &handover)?;
            Ok(())
        })?;
        Ok(answer)
    }
}

fn holder_evidence(holder: &Holder, request: &SignedRequest, now: Timestamp) -> EvidenceRecord {
    EvidenceRecord {
        operator: holder.client(),
        action: request.action.name().to_owned(),
        received_at: now,
        cms: request.evidence.clone(),
        outcome: None,
    }
}

impl RegistrationAuthority {
    /// A holder's renewal request: pending until an AED (or above) in scope approves it; the
    /// signed request is the holder's attestation, kept as evidence.
    fn submit_for_holder(
        &self,
        holder: &Holder,
        request: &SignedRequest,
        submission: Submission,
        now: Timestamp,
    ) -> Result<serde_json::Value, RaError> {
        let (subject_der, subject) = super::cards::csr_subject(&submission.authentication_csr)?;
        let mut record = self.card_request_record(
            request,
            submission,
            &holder.card.card,
            (subject_der, subject),
            now,
        )?;
        record.self_service = true;
        let summary = record.summary();
        let evidence = holder_evidence(holder, request, now).answered(&summary);
        let key: CertKey = holder.card.authentication.clone();
        self.store.commit(move |txn| -> Result<(), RaError> {
            claim(txn, &record.id, &evidence)?;
            // The card still authenticates its holder, as the writer orders things.
            if txn.contains::<Revocations>(&key)? {
                return Err(RaError::refused(
                    Refusal::HolderCertificateInvalid,
                    "the card is revoked",
                ));
            }
            record.write_submitted(txn)
        })?;
        Ok(summary)
    }
}

fn base64_text(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()
}
