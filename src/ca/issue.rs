//! The issuance cycle. Read top to bottom, it is the order things happen in:
//!
//! 1. the policy checks the request and builds a linted TBS ([`crate::policy::prepare`]);
//! 2. the intent (serial, TBS, holder) is written durably, with its audit event, after checking
//!    that the serial, the key and the holder's name are free ([`record_intents`]);
//! 3. the HSM signs exactly the recorded TBS, and the signature is verified ([`sign`]);
//! 4. the certificate, its indexes and its audit event are written in one batch, which also
//!    resolves the intent ([`store_issued`]).
//!
//! A crash between 2 and 4 leaves an intent without a certificate; [`recover_intents`] revokes
//! it at the next start, so that no valid certificate can exist that the CA does not know
//! (invariant 1, docs/invariants.md). A failure seen in 3 or 4 revokes the intents at once.
use crate::audit::AuditEvent;
use crate::failpoint;
use crate::hsm::SigningKey;
use crate::policy::{LintedTbs, Rejection, Violation};
use crate::store::schema::{
    Cards, Certificates, CertifiedKeys, ExpiryIndex, HolderIndex, Intents, Revocations, Serials,
    SubjectOwners,
};
use crate::store::{
    CardRecord, CertKey, CertRecord, Digest, ExpiryKey, HolderKey, IntentRecord, IssuerId, Reader,
    RevocationRecord, Store, StoreError, Txn,
};
use crate::x509::revocation::RevocationReason;
use crate::x509::tbs::assemble_certificate;
use crate::x509::{Serial, Timestamp, keys};

use super::CaError;
use super::revoke::{RevocationRequest, RevocationTarget, RevokedCertificate, revoke_one};

/// A certificate to be issued: its TBS and what it is for.
#[derive(Clone, Debug)]
pub(super) struct PendingCertificate {
    pub key: CertKey,
    pub tbs_der: Vec<u8>,
    pub policy: String,
    pub holder: Option<String>,
    pub card: Option<String>,
    pub not_before: Timestamp,
    pub not_after: Timestamp,
    /// Holder certificates: the subject and key, reserved so they are never certified for
    /// someone else (subject) or twice (key).
    pub subject_der: Option<Vec<u8>>,
    pub public_key_der: Option<Vec<u8>>,
}

impl PendingCertificate {
    /// A holder certificate from a linted TBS.
    pub fn from_linted(
        issuer: IssuerId,
        tbs: LintedTbs,
        holder: Option<String>,
        card: Option<String>,
    ) -> Self {
        Self {
            key: CertKey {
                issuer,
                serial: tbs.serial().clone(),
            },
            tbs_der: tbs.der().to_vec(),
            policy: tbs.policy().to_owned(),
            holder,
            card,
            not_before: tbs.not_before(),
            not_after: tbs.not_after(),
            subject_der: Some(tbs.subject_der().to_vec()),
            public_key_der: Some(tbs.public_key_der().to_vec()),
        }
    }
}

/// An intent that is durably recorded: the only thing [`sign`] accepts.
#[derive(Debug)]
pub(super) struct RecordedIntent(PendingCertificate);

impl RecordedIntent {
    pub fn key(&self) -> &CertKey {
        &self.0.key
    }
}

/// A signed certificate, not yet stored.
#[derive(Debug)]
pub(super) struct SignedCertificate {
    pub pending: PendingCertificate,
    pub der: Vec<u8>,
}

/// Why an intent could not be recorded.
pub(super) enum IntentRefused {
    /// The serial is taken: draw another one.
    SerialTaken,
    Error(CaError),
}

impl From<StoreError> for IntentRefused {
    fn from(e: StoreError) -> Self {
        IntentRefused::Error(CaError::Store(e))
    }
}

/// Step 2: records the intents of `certificates` in one durable write, or none of them.
pub(super) fn record_intents(
    store: &Store,
    certificates: Vec<PendingCertificate>,
    now: Timestamp,
) -> Result<Vec<RecordedIntent>, IntentRefused> {
    store.commit(move |txn| {
        let mut violations = Vec::new();
        for pending in &certificates {
            check_free(txn, pending, &mut violations)?;
        }
        if !violations.is_empty() {
            let policy = certificates
                .first()
                .map(|p| p.policy.clone())
                .unwrap_or_default();
            return Err(IntentRefused::Error(CaError::Rejected(Rejection {
                policy,
                violations,
            })));
        }
        let mut recorded = Vec::with_capacity(certificates.len());
        for pending in certificates {
            txn.put::<Serials>(&pending.key.serial, &pending.key.issuer)?;
            txn.put::<Intents>(
                &pending.key,
                &IntentRecord {
                    tbs: pending.tbs_der.clone(),
                    policy: pending.policy.clone(),
                    holder: pending.holder.clone(),
                    card: pending.card.clone(),
                    not_after: pending.not_after,
                    recorded_at: now,
                },
            )?;
            if let Some(spki) = &pending.public_key_der {
                txn.put::<CertifiedKeys>(&Digest(keys::sha256(spki)), &pending.key)?;
            }
            if let (Some(subject), Some(holder)) = (&pending.subject_der, &pending.holder) {
                txn.put::<SubjectOwners>(&Digest(keys::sha256(subject)), holder)?;
            }
            if super::ceremony::is_ca_policy(&pending.policy) {
                super::ceremony_intent::note_certificate(txn, &pending.key)?;
            }
            txn.audit(AuditEvent::IssuanceIntent {
                issuer: pending.key.issuer.to_hex(),
                serial: pending.key.serial.to_hex(),
                policy: pending.policy.clone(),
                holder: pending.holder.clone(),
                card: pending.card.clone(),
                tbs: hex::encode(&pending.tbs_der),
            });
            recorded.push(RecordedIntent(pending));
        }
        Ok(recorded)
    })
}

/// A dry run of [`record_intents`]'s checks, reading the store without writing.
pub(super) fn precheck(store: &Store, certificates: &[PendingCertificate]) -> Result<(), CaError> {
    let mut violations = Vec::new();
    for pending in certificates {
        match check_free(store, pending, &mut violations) {
            Ok(()) | Err(IntentRefused::SerialTaken) => {}
            Err(IntentRefused::Error(e)) => return Err(e),
        }
    }
    match certificates.first() {
        Some(first) if !violations.is_empty() => Err(CaError::Rejected(Rejection {
            policy: first.policy.clone(),
            violations,
        })),
        _ => Ok(()),
    }
}

/// The serial is unused (RFC 5280 §4.1.2.2), the key was never certified (RGS A2 IV.6: no
/// re-certification of a key), and the name belongs to no other holder (RGS A2 III.1.5).
fn check_free(
    txn: &impl Reader,
    pending: &PendingCertificate,
    violations: &mut Vec<Violation>,
) -> Result<(), IntentRefused> {
    if txn.contains::<Serials>(&pending.key.serial)? {
        return Err(IntentRefused::SerialTaken);
    }
    if let Some(spki) = &pending.public_key_der
        && let Some(existing) = txn.get::<CertifiedKeys>(&Digest(keys::sha256(spki)))?
    {
        violations.push(Violation {
                rule: "key-already-certified",
                message: format!(
                    "this public key was already certified (serial {}); every certificate needs a new key pair (RGS A2 IV.6)",
                    existing.serial
                ),
            });
    }
    if let Some(subject) = &pending.subject_der
        && let Some(owner) = txn.get::<SubjectOwners>(&Digest(keys::sha256(subject)))?
    {
        match &pending.holder {
                Some(holder) if holder == &owner => {}
                Some(_) => violations.push(Violation {
                    rule: "subject-already-given",
                    message: "this distinguished name was given to another holder; a DN is never reused (RGS A2 III.1.5)".into(),
                }),
                None => violations.push(Violation {
                    rule: "subject-already-given",
                    message: format!("this distinguished name belongs to holder {owner:?}; name the holder to issue for it"),
                }),
            }
    }
    Ok(())
}

/// Step 3: the HSM signs the recorded TBS; the signature is verified with the public key.
pub(super) fn sign(key: &SigningKey, intent: RecordedIntent) -> Result<SignedCertificate, CaError> {
    let RecordedIntent(pending) = intent;
    let signature = key.sign(&pending.tbs_der)?;
    key.verify(&pending.tbs_der, &signature)?;
    let algorithm = key
        .scheme()
        .algorithm_identifier()
        .map_err(|e| CaError::Encoding(e.to_string()))?;
    let der = assemble_certificate(&pending.tbs_der, &algorithm, &signature)
        .map_err(|e| CaError::Encoding(e.to_string()))?;
    Ok(SignedCertificate { pending, der })
}

/// Writes of the caller's that land in the same batch as a card's certificates (the RA's
/// request going to "issued", with its audit event): one commit, so that a crash never leaves
/// a card issued while the request that asked for it still says "approved".
/// It is given the card and the certificates a renewal superseded.
pub type AlongWrite = Box<
    dyn for<'t> FnOnce(&mut Txn<'t>, &CardRecord, &[RevokedCertificate]) -> Result<(), CaError>
        + Send,
>;

/// What an issuance does to a card.
pub(super) enum CardWrite {
    /// A new card: refused if its identifier exists.
    New(CardRecord, Option<AlongWrite>),
    /// A renewal: the card exists and was never renewed; the certificates it held are revoked
    /// as superseded in the same write.
    Renewal(CardRecord, Option<AlongWrite>),
}

impl core::fmt::Debug for CardWrite {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            CardWrite::New(card, _) => f.debug_tuple("New").field(card).finish(),
            CardWrite::Renewal(card, _) => f.debug_tuple("Renewal").field(card).finish(),
        }
    }
}

/// Step 4: stores the certificates (and the card grouping them) in one write that also
/// resolves their intents. Returns the certificates a renewal superseded.
pub(super) fn store_issued(
    store: &Store,
    certificates: Vec<SignedCertificate>,
    card: Option<CardWrite>,
    now: Timestamp,
) -> Result<Vec<RevokedCertificate>, CaError> {
    store.commit(move |txn| -> Result<Vec<RevokedCertificate>, CaError> {
        for signed in &certificates {
            let pending = &signed.pending;
            txn.delete::<Intents>(&pending.key);
            txn.changed(crate::store::status_change(&pending.key));
            txn.put::<Certificates>(
                &pending.key,
                &CertRecord {
                    der: signed.der.clone(),
                    policy: pending.policy.clone(),
                    holder: pending.holder.clone(),
                    card: pending.card.clone(),
                    not_before: pending.not_before,
                    not_after: pending.not_after,
                    issued_at: now,
                },
            )?;
            if let Some(holder) = &pending.holder {
                txn.put::<HolderIndex>(
                    &HolderKey {
                        holder: holder.clone(),
                        certificate: pending.key.clone(),
                    },
                    &(),
                )?;
            }
            txn.put::<ExpiryIndex>(
                &ExpiryKey {
                    not_after: pending.not_after,
                    certificate: pending.key.clone(),
                },
                &(),
            )?;
            txn.audit(AuditEvent::CertificateIssued {
                issuer: pending.key.issuer.to_hex(),
                serial: pending.key.serial.to_hex(),
                policy: pending.policy.clone(),
                holder: pending.holder.clone(),
                card: pending.card.clone(),
                not_after: pending.not_after,
                certificate: hex::encode(&signed.der),
            });
        }
        let mut superseded = Vec::new();
        match card {
            None => {}
            Some(CardWrite::New(card, along)) => {
                super::refuse_existing::<Cards>(txn, &card.card, || format!("card {}", card.card))?;
                txn.audit(AuditEvent::CardIssued {
                    card: card.card.clone(),
                    holder: card.holder.clone(),
                    authentication: card.authentication.serial.to_hex(),
                    signature: card.signature.serial.to_hex(),
                });
                txn.put::<Cards>(&card.card.clone(), &card)?;
                if let Some(along) = along {
                    along(txn, &card, &[])?;
                }
            }
            Some(CardWrite::Renewal(card, along)) => {
                let previous = txn
                    .get::<Cards>(&card.card)?
                    .ok_or_else(|| CaError::NotFound(format!("card {} is unknown", card.card)))?;
                if previous.renewals > 0 || previous.holder != card.holder {
                    return Err(CaError::Refused(format!(
                        "card {} was already renewed",
                        card.card
                    )));
                }
                let request = RevocationRequest {
                    target: RevocationTarget::Card(card.card.clone()),
                    reason: RevocationReason::Superseded,
                    invalidity_date: None,
                    requested_by: "renewal".into(),
                };
                for key in [&previous.authentication, &previous.signature] {
                    if let Some(revoked) = revoke_one(txn, key, &request, now)? {
                        superseded.push(revoked);
                    }
                }
                txn.audit(AuditEvent::CardRenewed {
                    card: card.card.clone(),
                    holder: card.holder.clone(),
                    authentication: card.authentication.serial.to_hex(),
                    signature: card.signature.serial.to_hex(),
                    superseded: [&previous.authentication, &previous.signature]
                        .iter()
                        .map(|k| k.serial.to_hex())
                        .collect(),
                });
                txn.put::<Cards>(&card.card.clone(), &card)?;
                if let Some(along) = along {
                    along(txn, &card, &superseded)?;
                }
            }
        }
        Ok(superseded)
    })
}

/// Revokes recorded intents whose certificates will never be delivered (the HSM or the store
/// failed after the intent was written): whatever the HSM may have signed is revoked.
pub(super) fn revoke_intents(
    store: &Store,
    keys: Vec<CertKey>,
    release: Vec<(Digest, CertKey)>,
    why: String,
    now: Timestamp,
) -> Result<(), CaError> {
    store.commit(move |txn| -> Result<(), CaError> {
        for key in &keys {
            revoke_intent_in(txn, key, &why, now)?;
        }
        // A key reservation is released only if it still points at one of these intents.
        for (digest, key) in &release {
            if txn.get::<CertifiedKeys>(digest)?.as_ref() == Some(key) {
                txn.delete::<CertifiedKeys>(digest);
            }
        }
        Ok(())
    })
}

pub(super) fn revoke_intent_in(
    txn: &mut Txn<'_>,
    key: &CertKey,
    why: &str,
    now: Timestamp,
) -> Result<(), CaError> {
    let Some(intent) = txn.get::<Intents>(key)? else {
        return Ok(());
    };
    txn.delete::<Intents>(key);
    if txn.contains::<Certificates>(key)? {
        // Stored after all: nothing to revoke.
        return Ok(());
    }
    txn.put::<Revocations>(
        key,
        &RevocationRecord {
            revoked_at: now,
            reason: RevocationReason::Unspecified,
            invalidity_date: None,
            not_after: intent.not_after,
        },
    )?;
    txn.audit(AuditEvent::IntentRevoked {
        issuer: key.issuer.to_hex(),
        serial: key.serial.to_hex(),
        why: why.to_owned(),
    });
    Ok(())
}

/// At start-up: every intent without a stored certificate is revoked and logged.
/// Returns the serials revoked.
pub fn recover_intents(store: &Store, now: Timestamp) -> Result<Vec<CertKey>, CaError> {
    let pending: Vec<CertKey> = store
        .scan::<Intents>(&[], &[])?
        .map(|item| item.map(|(key, _)| key))
        .collect::<Result<_, _>>()?;
    if pending.is_empty() {
        return Ok(pending);
    }
    for key in &pending {
        tracing::warn!(issuer = %key.issuer, serial = %key.serial, "issuance intent without a certificate: revoking it");
    }
    let revoked = pending.clone();
    store.commit(move |txn| -> Result<(), CaError> {
        for key in &pending {
            revoke_intent_in(
                txn,
                key,
                "recorded intent without a stored certificate at start-up",
                now,
            )?;
        }
        Ok(())
    })?;
    Ok(revoked)
}

/// Draws serials until one is free, runs steps 2–4 for `make` (a function from serials to
/// pending certificates), and returns the signed certificates. On any failure after the
/// intents were recorded, they are revoked.
pub(super) fn issue_all<F>(
    store: &Store,
    signer: &SigningKey,
    count: usize,
    now: Timestamp,
    mut make: F,
    card: impl FnOnce(&[SignedCertificate]) -> Option<CardWrite>,
) -> Result<Issued, CaError>
where
    F: FnMut(Vec<Serial>) -> Result<Vec<PendingCertificate>, CaError>,
{
    const TRIES: u32 = 4;
    // With the token known to be gone, refuse before recording anything.
    if !signer.available() {
        return Err(CaError::Hsm(crate::hsm::HsmError::Unavailable(
            "the token is not connected; retry when it is back".into(),
        )));
    }
    let mut recorded = None;
    for _ in 0..TRIES {
        let serials = (0..count)
            .map(|_| Serial::random())
            .collect::<Result<Vec<_>, _>>()?;
        let pending = make(serials)?;
        match record_intents(store, pending, now) {
            Ok(intents) => {
                recorded = Some(intents);
                break;
            }
            Err(IntentRefused::SerialTaken) => continue,
            Err(IntentRefused::Error(e)) => return Err(e),
        }
    }
    let intents = recorded.ok_or(CaError::SerialExhausted(TRIES))?;
    failpoint::hit("after-intent");

    let keys: Vec<CertKey> = intents.iter().map(|i| i.key().clone()).collect();
    // The holder keys reserved by these intents, released if the HSM returns no signature.
    let reserved: Vec<(Digest, CertKey)> = intents
        .iter()
        .filter_map(|i| {
            let spki = i.0.public_key_der.as_ref()?;
            Some((Digest(keys::sha256(spki)), i.key().clone()))
        })
        .collect();
    let mut signed = Vec::with_capacity(intents.len());
    for intent in intents {
        match sign(signer, intent) {
            Ok(certificate) => signed.push(certificate),
            Err(error) => {
                // No signature came back, so no certificate exists for these keys: the serials
                // stay revoked, but the holder may ask again with the same keys once the HSM is
                // back (otherwise an HSM outage would burn the keys of a card).
                abandon(store, keys, reserved, &error, now);
                return Err(error);
            }
        }
    }
    failpoint::hit("after-sign");

    let card_record = card(&signed);
    let stored: Vec<SignedCertificate> = signed
        .iter()
        .map(|s| SignedCertificate {
            pending: s.pending.clone(),
            der: s.der.clone(),
        })
        .collect();
    match store_issued(store, stored, card_record, now) {
        Ok(superseded) => {
            failpoint::hit("after-store");
            Ok(Issued { signed, superseded })
        }
        Err(error) => {
            abandon(store, keys, Vec::new(), &error, now);
            Err(error)
        }
    }
}

/// What [`issue_all`] did: the certificates signed and stored, and those a card renewal
/// superseded (revoked in the same write).
#[derive(Debug)]
pub(super) struct Issued {
    pub signed: Vec<SignedCertificate>,
    pub superseded: Vec<RevokedCertificate>,
}

fn abandon(
    store: &Store,
    keys: Vec<CertKey>,
    release: Vec<(Digest, CertKey)>,
    error: &CaError,
    now: Timestamp,
) {
    let why = format!("issuance failed after the intent was recorded: {error}");
    if let Err(e) = revoke_intents(store, keys, release, why, now) {
        // The intents stay; the next start-up revokes them.
        tracing::error!(error = %e, "could not revoke abandoned intents now; they will be revoked at the next start");
    }
}
