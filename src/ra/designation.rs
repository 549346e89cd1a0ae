//! Designating and withdrawing operators: who may act, on whom, as which person (one person is one operator whatever the letters of their name), and the first AE's registration on the CA host.

use der::Decode;
use x509_cert::Certificate;

use super::operators::{
    OperatorPersons, OperatorRecord, Operators, Role, Scope, Withdrawal, designated_through,
};
use super::request::SignedRequest;
use crate::audit::AuditEvent;
use crate::ca::CaState;
use crate::store::CardRecord;
use crate::store::schema::{Cards, Certificates, Revocations};
use crate::store::{CertKey, IssuerId, Reader, Store, Txn};
use crate::x509::name::{DistinguishedName, parse_distinguished_name};
use crate::x509::{Serial, Timestamp};

use super::{
    Operator, RaError, Refusal, RegistrationAuthority, certificate_subject, check_holder_scope,
    check_name_repertoire, check_still_active, claim, operator_cas, operators, persons,
    subject_text, unknown_outside_scope,
};

impl RegistrationAuthority {
    pub(super) fn designate(
        &self,
        actor: &Operator,
        request: &SignedRequest,
        (holder, card_id): (&str, &str),
        role: Role,
        scope: Scope,
        now: Timestamp,
    ) -> Result<serde_json::Value, RaError> {
        if !actor.record.role.may_designate(role) {
            return Err(RaError::refused(
                Refusal::RoleNotAllowed,
                format!("an {} may not designate an {role}", actor.record.role),
            ));
        }
        if let Some(why) = scope.widening_over(&actor.record.scope) {
            return Err(RaError::refused(Refusal::ScopeWidening, why));
        }
        self.check_scope_shape(&scope)?;
        // The designee is a card of this CA, held by `holder`, whose holder is in the
        // designator's scope; anything else is answered like a card that does not exist.
        let not_found = || {
            RaError::refused(
                Refusal::NotFound,
                format!("no card {card_id:?} of holder {holder:?}"),
            )
        };
        let card = self
            .store
            .get::<Cards>(&card_id.to_owned())?
            .filter(|card| card.holder == holder)
            .ok_or_else(not_found)?;
        let der = self
            .store
            .get::<Certificates>(&card.authentication)?
            .ok_or_else(not_found)?
            .der;
        // A card on its way out (a departure scheduled) carries no role.
        if let Some(entry) = crate::ca::schedule::scheduled_for_card(&self.store, &card)? {
            return Err(RaError::refused(
                Refusal::RoleNotAllowed,
                format!(
                    "card {} is to be revoked at {}: it carries no role",
                    card.card, entry.at
                ),
            ));
        }
        let subject = certificate_subject(&der)?;
        unknown_outside_scope(
            check_holder_scope(&actor.record.scope, &subject),
            &format!("no card {card_id:?} of holder {holder:?}"),
        )?;
        let (_, subject) = self.check_operator_certificate(&self.store, &der, now)?;
        check_name_repertoire(&self.settings.authentication_policy, &subject)?;
        let person = operators::person_key(&subject);
        if person == actor.record.person || card.holder == actor.record.holder {
            return Err(RaError::refused(
                Refusal::OwnCertificate,
                "nobody designates themselves",
            ));
        }
        let record = OperatorRecord {
            id: card.card.clone(),
            holder: card.holder.clone(),
            person: person.clone(),
            subject: subject_text(&subject),
            issuer: card.authentication.issuer,
            certificate: der,
            role,
            scope,
            designated_by: Some(actor.record.id.clone()),
            designated_at: now,
            withdrawn: None,
        };
        let answer = serde_json::json!({
            "operator": record.id,
            "holder": record.holder,
            "role": record.role,
            "subject": record.subject,
            "scope": record.scope,
        });
        let evidence = self.evidence(actor, request, now).answered(&answer);
        let request_id = request.id.clone();
        let actor_role = actor.record.role;
        let actor_id = actor.record.id.clone();
        self.store.commit(move |txn| -> Result<(), RaError> {
            claim(txn, &request_id, &evidence)?;
            // The designator still acts (a withdrawal may have landed since the request came).
            check_still_active(txn, &actor_id)?;
            // One active role per person and per holder id, whichever of their cards: checked
            // here, in the writer's order, so that two designations cannot both pass; a
            // withdrawal stands against anyone below the withdrawer's rank.
            claim_person(txn, &record, Some(actor_role))?;
            txn.audit(AuditEvent::OperatorDesignated {
                operator: record.id.clone(),
                subject: record.subject.clone(),
                role: record.role.to_string(),
                scope: serde_json::to_value(&record.scope).unwrap_or_default(),
                designated_by: record.designated_by.clone(),
                request: Some(request_id.clone()),
            });
            txn.put::<Operators>(&record.id.clone(), &record)?;
            Ok(())
        })?;
        Ok(answer)
    }

    pub(super) fn withdraw(
        &self,
        actor: &Operator,
        request: &SignedRequest,
        target: &str,
        reason: Option<String>,
        now: Timestamp,
    ) -> Result<serde_json::Value, RaError> {
        // Anyone but the target's designators (directly or above) learns nothing of it: an
        // operator that does not exist and one designated by someone else answer alike.
        let unknown =
            || RaError::refused(Refusal::NotFound, format!("operator {target} is unknown"));
        let record = self
            .store
            .get::<Operators>(&target.to_owned())?
            .ok_or_else(unknown)?;
        let lookup = |id: &str| self.store.get::<Operators>(&id.to_owned()).ok().flatten();
        if !designated_through(&record, &actor.record.id, lookup) {
            return Err(unknown());
        }
        if !record.is_active() {
            return Err(RaError::refused(
                Refusal::OperatorWithdrawn,
                format!("operator {target} is already withdrawn"),
            ));
        }
        // Checked after the designator rule, so that it tells nothing to anyone else.
        if record.role == Role::Ae
            && active_operators(&self.store)?
                .iter()
                .all(|other| other.id == record.id || other.role != Role::Ae)
        {
            return Err(RaError::refused(
                Refusal::RoleNotAllowed,
                "the last active AE cannot be withdrawn: designate an alter ego first",
            ));
        }
        // Everyone designated below the target goes with it.
        let all: Vec<OperatorRecord> = self
            .store
            .scan::<Operators>(&[], &[])?
            .map(|row| row.map(|(_, record)| record))
            .collect::<Result<_, _>>()?;
        let mut withdrawn = vec![(record, None::<String>)];
        let mut next = 0;
        while next < withdrawn.len() {
            let parent = withdrawn[next].0.id.clone();
            for child in all
                .iter()
                .filter(|o| o.is_active() && o.designated_by.as_deref() == Some(parent.as_str()))
            {
                if !withdrawn.iter().any(|(w, _)| w.id == child.id) {
                    withdrawn.push((child.clone(), Some(parent.clone())));
                }
            }
            next += 1;
        }
        let ids: Vec<String> = withdrawn.iter().map(|(w, _)| w.id.clone()).collect();
        let answer = serde_json::json!({ "withdrawn": ids });
        let evidence = self.evidence(actor, request, now).answered(&answer);
        let request_id = request.id.clone();
        let by = actor.record.id.clone();
        let by_role = actor.record.role;
        self.store.commit(move |txn| -> Result<(), RaError> {
            claim(txn, &request_id, &evidence)?;
            check_still_active(txn, &by)?;
            for (snapshot, cascade_from) in withdrawn {
                // As the record is now: one withdrawn meanwhile keeps its own withdrawal.
                let Some(mut record) = txn.get::<Operators>(&snapshot.id)? else {
                    continue;
                };
                if !record.is_active() {
                    continue;
                }
                txn.audit(AuditEvent::OperatorWithdrawn {
                    operator: record.id.clone(),
                    by: by.clone(),
                    cascade_from: cascade_from.clone(),
                    request: request_id.clone(),
                    reason: reason.clone(),
                });
                let withdrawal = Withdrawal {
                    at: now,
                    by: by.clone(),
                    by_role: Some(by_role),
                    cascade_from,
                };
                release_person(txn, &record, &withdrawal)?;
                record.withdrawn = Some(withdrawal);
                txn.put::<Operators>(&record.id.clone(), &record)?;
            }
            Ok(())
        })?;
        Ok(answer)
    }

    /// Policies named in a scope exist; a scope names at least one organisation.
    pub(super) fn check_scope_shape(&self, scope: &Scope) -> Result<(), RaError> {
        if scope.organizations.is_empty() || scope.policies.is_empty() {
            return Err(RaError::Malformed(
                "a scope names at least one organisation and one policy".into(),
            ));
        }
        if let Some(unknown) = scope
            .policies
            .iter()
            .find(|p| self.ca.policies().get(p).is_none())
        {
            return Err(RaError::Malformed(format!("unknown policy {unknown:?}")));
        }
        Ok(())
    }

    /// An operator certificate: issued by an operator CA (signature checked), valid at `now`,
    /// not revoked in this CA's store.
    pub(super) fn check_operator_certificate(
        &self,
        reader: &impl Reader,
        der: &[u8],
        now: Timestamp,
    ) -> Result<(Certificate, DistinguishedName), RaError> {
        let certificate = Certificate::from_der(der)
            .map_err(|e| RaError::Malformed(format!("operator certificate: {e}")))?;
        let issuer = self.issuer_of(der)?;
        let tbs = certificate.tbs_certificate();
        let not_before = Timestamp::from_x509_time(&tbs.validity().not_before);
        let not_after = Timestamp::from_x509_time(&tbs.validity().not_after);
        if now < not_before || now > not_after {
            return Err(RaError::refused(
                Refusal::OperatorCertificateExpired,
                format!("the operator certificate is valid from {not_before} to {not_after}"),
            ));
        }
        let serial = Serial::from_serial_number(tbs.serial_number())
            .map_err(|e| RaError::Malformed(format!("operator certificate serial: {e}")))?;
        if reader.contains::<Revocations>(&CertKey {
            issuer,
            serial: serial.clone(),
        })? {
            return Err(RaError::refused(
                Refusal::OperatorCertificateRevoked,
                format!("the operator certificate {serial} is revoked"),
            ));
        }
        check_authentication_usage(&certificate)?;
        let subject_der = der::Encode::to_der(tbs.subject())
            .map_err(|e| RaError::Malformed(format!("operator subject: {e}")))?;
        let subject = parse_distinguished_name(&subject_der)
            .map_err(|e| RaError::Malformed(format!("operator subject: {e}")))?;
        Ok((certificate, subject))
    }

    /// The operator CA that signed `der`.
    pub(super) fn issuer_of(&self, der: &[u8]) -> Result<IssuerId, RaError> {
        let certificate = Certificate::from_der(der)
            .map_err(|e| RaError::Malformed(format!("operator certificate: {e}")))?;
        let issuer_der = der::Encode::to_der(certificate.tbs_certificate().issuer())
            .map_err(|e| RaError::Malformed(e.to_string()))?;
        let cas = self
            .operator_cas
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        cas.iter()
            .find(|ca| {
                ca.subject_der == issuer_der
                    && crate::ca::ceremony::verify_certificate_signature(der, &ca.public_key)
                        .is_ok()
            })
            .map(|ca| ca.id)
            .ok_or_else(|| {
                RaError::refused(
                    Refusal::UntrustedCertificate,
                    "the certificate was not issued by an operator CA",
                )
            })
    }
}

/// A DN as `C=FR, O=…, CN=…`.
/// The active operators.
pub(super) fn active_operators(store: &Store) -> Result<Vec<OperatorRecord>, RaError> {
    let mut active = Vec::new();
    for row in store.scan::<Operators>(&[], &[])? {
        let (_, record) = row?;
        if record.is_active() {
            active.push(record);
        }
    }
    Ok(active)
}

/// The keys under which an operator is indexed as a person: their name and their holder id
/// (one active role for each).
pub(super) fn person_index_keys(record: &OperatorRecord) -> [String; 2] {
    [record.person.clone(), operators::holder_key(&record.holder)]
}

/// Binds `record`'s person (name and holder id) to it, inside the commit that designates:
/// refused when either already has an active role, or (for a designator of rank `by`; `None`
/// for security staff) when either was withdrawn by a higher rank.
pub(super) fn claim_person(
    txn: &mut Txn<'_>,
    record: &OperatorRecord,
    by: Option<Role>,
) -> Result<(), RaError> {
    let person = crate::ca::ceremony::quorum::without_country(&record.person);
    if crate::ca::ceremony::control::officer_persons(txn)?.contains(&person) {
        return Err(RaError::refused(
            Refusal::PersonIsOfficer,
            format!(
                "{} is a security officer of this CA: an officer is never also an RA operator",
                record.subject
            ),
        ));
    }
    for key in person_index_keys(record) {
        let mut person = txn.get::<OperatorPersons>(&key)?.unwrap_or_default();
        if let Some(other) = &person.active
            && txn.get::<Operators>(other)?.is_some_and(|o| o.is_active())
        {
            return Err(RaError::refused(
                Refusal::PersonIsOperator,
                format!(
                    "{} (holder {}) already holds an active operator role; withdraw it first",
                    record.subject, record.holder
                ),
            ));
        }
        if let (Some(by), Some(withdrawal)) = (by, &person.withdrawn) {
            let withdrawer = match withdrawal.by_role {
                Some(role) => role,
                None => txn
                    .get::<Operators>(&withdrawal.by)?
                    .map_or(Role::Ae, |w| w.role),
            };
            if by > withdrawer {
                return Err(RaError::refused(
                    Refusal::WithdrawalStands,
                    format!(
                        "{} was withdrawn by an {withdrawer}: only an {withdrawer} or above may designate them again",
                        record.subject
                    ),
                ));
            }
        }
        person.active = Some(record.id.clone());
        txn.put::<OperatorPersons>(&key, &person)?;
    }
    Ok(())
}

/// Unbinds a withdrawn operator's person, recording the withdrawal against it.
pub(super) fn release_person(
    txn: &mut Txn<'_>,
    record: &OperatorRecord,
    withdrawal: &Withdrawal,
) -> Result<(), RaError> {
    for key in person_index_keys(record) {
        let mut person = txn.get::<OperatorPersons>(&key)?.unwrap_or_default();
        if person.active.as_deref() == Some(record.id.as_str()) {
            person.active = None;
        }
        person.withdrawn = Some(withdrawal.clone());
        txn.put::<OperatorPersons>(&key, &person)?;
    }
    Ok(())
}

/// An operator credential is the authentication certificate of a card: keyUsage
/// digitalSignature without nonRepudiation, and, when it has an extendedKeyUsage, TLS client
/// authentication. A signature certificate (nonRepudiation) of the same person is refused, so
/// that one person cannot hold two operator credentials from one card (issue 10 problem 1).
pub(super) fn check_authentication_usage(certificate: &Certificate) -> Result<(), RaError> {
    use x509_cert::ext::pkix::{ExtendedKeyUsage, KeyUsage};
    let refuse = |why: &str| {
        Err(RaError::refused(
            Refusal::NotAuthenticationCertificate,
            format!("an operator certificate is a card's authentication certificate: {why}"),
        ))
    };
    let tbs = certificate.tbs_certificate();
    match tbs.get_extension::<KeyUsage>() {
        Ok(Some((_, usage))) if usage.digital_signature() && !usage.non_repudiation() => {}
        Ok(Some(_)) => return refuse("its keyUsage is not digitalSignature alone"),
        Ok(None) => return refuse("it has no keyUsage"),
        Err(e) => return Err(RaError::Malformed(format!("operator keyUsage: {e}"))),
    }
    match tbs.get_extension::<ExtendedKeyUsage>() {
        Ok(Some((_, usages))) if !usages.0.contains(&crate::x509::oid::KP_CLIENT_AUTH) => {
            refuse("its extendedKeyUsage has no clientAuth")
        }
        Ok(_) => Ok(()),
        Err(e) => Err(RaError::Malformed(format!(
            "operator extendedKeyUsage: {e}"
        ))),
    }
}

/// Registers an AE on the CA host (`sceau ra bootstrap --card ID`): the first one, or a
/// replacement when no AE can act any more. `scope.organizations` empty means the card's own
/// organisation.
pub fn bootstrap(
    store: &Store,
    state: &CaState,
    card_id: &str,
    mut scope: Scope,
    now: Timestamp,
) -> Result<OperatorRecord, RaError> {
    let cas = operator_cas(state)?;
    persons::rekey(store)?;
    let no_card = || RaError::refused(Refusal::NotFound, format!("no card {card_id:?}"));
    let card: CardRecord = store
        .get::<Cards>(&card_id.to_owned())?
        .ok_or_else(no_card)?;
    let certificate_der = store
        .get::<Certificates>(&card.authentication)?
        .ok_or_else(no_card)?
        .der;
    let certificate_der = certificate_der.as_slice();
    let certificate = Certificate::from_der(certificate_der)
        .map_err(|e| RaError::Malformed(format!("certificate: {e}")))?;
    let issuer_der = der::Encode::to_der(certificate.tbs_certificate().issuer())
        .map_err(|e| RaError::Malformed(e.to_string()))?;
    let issuer = cas
        .iter()
        .find(|ca| {
            ca.subject_der == issuer_der
                && crate::ca::ceremony::verify_certificate_signature(
                    certificate_der,
                    &ca.public_key,
                )
                .is_ok()
        })
        .map(|ca| ca.id)
        .ok_or_else(|| {
            RaError::refused(
                Refusal::UntrustedCertificate,
                "the certificate was not issued by this CA's issuing CA",
            )
        })?;
    let validity = certificate.tbs_certificate().validity();
    if now > Timestamp::from_x509_time(&validity.not_after)
        || now < Timestamp::from_x509_time(&validity.not_before)
    {
        return Err(RaError::refused(
            Refusal::OperatorCertificateExpired,
            "the certificate is not valid now",
        ));
    }
    check_authentication_usage(&certificate)?;
    let subject = certificate_subject(certificate_der)?;
    check_name_repertoire("operator", &subject)?;
    if scope.organizations.is_empty() {
        scope.organizations = subject
            .values(crate::x509::name::Attribute::Organization)
            .map(str::to_owned)
            .collect();
    }
    if scope.organizations.is_empty() || scope.policies.is_empty() {
        return Err(RaError::Malformed(
            "a scope names at least one organisation and one policy".into(),
        ));
    }
    let record = OperatorRecord {
        id: card.card.clone(),
        holder: card.holder.clone(),
        person: operators::person_key(&subject),
        certificate: certificate_der.to_vec(),
        subject: subject_text(&subject),
        issuer,
        role: Role::Ae,
        scope,
        designated_by: None,
        designated_at: now,
        withdrawn: None,
    };
    let stored = record.clone();
    // Security staff on the CA host bring in a replacement AE when none is active (every AE
    // withdrawn, their cards revoked); audited like a designation.
    let mut active_ae = false;
    for ae in active_operators(store)?
        .into_iter()
        .filter(|o| o.role == Role::Ae)
    {
        // An AE whose card (as it is now: renewed or not) was revoked or expired can no longer
        // act: it does not count.
        let Some(current) = store.get::<Cards>(&ae.id)?.map(|card| card.authentication) else {
            continue;
        };
        let Some(stored) = store.get::<Certificates>(&current)? else {
            continue;
        };
        let valid = now <= stored.not_after;
        let revoked = store.contains::<Revocations>(&current)?;
        active_ae |= valid && !revoked;
    }
    store.commit(move |txn| -> Result<(), RaError> {
        let serial = Serial::from_serial_number(certificate.tbs_certificate().serial_number())
            .map_err(|e| RaError::Malformed(e.to_string()))?;
        if txn.contains::<Revocations>(&CertKey { issuer, serial })? {
            return Err(RaError::refused(
                Refusal::OperatorCertificateRevoked,
                "the certificate is revoked",
            ));
        }
        if active_ae {
            return Err(RaError::refused(
                Refusal::OperatorExists,
                "an AE is already registered: an AE designates the others (and its alter ego); security staff bootstrap an AE only when none is active",
            ));
        }
        // Security staff act above every rank: a withdrawal does not stand against them.
        claim_person(txn, &stored, None)?;
        txn.audit(AuditEvent::OperatorDesignated {
            operator: stored.id.clone(),
            subject: stored.subject.clone(),
            role: stored.role.to_string(),
            scope: serde_json::to_value(&stored.scope).unwrap_or_default(),
            designated_by: None,
            request: None,
        });
        txn.put::<Operators>(&stored.id.clone(), &stored)?;
        Ok(())
    })?;
    Ok(record)
}
