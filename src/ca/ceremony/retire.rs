//! Retired keys destroyed in the HSM (`destroy-key`, a ceremony): a delegated responder's key
//! once another responder is in force for its CA, and a superseded issuing CA's key once every
//! certificate it issued has expired (RFC 5280 §3.3: a CRL is owed until then). Their
//! certificates stay in the CA state, their status unchanged; the state records the
//! destruction, and nothing loads those keys again (OCSP, CRLs, restore).
//!
//! The state is marked first, the key destroyed next: a crash in between leaves a key that
//! nothing uses, and `destroy-key` run again on it finishes the work.

use super::update_state;
use crate::audit::AuditEvent;
use crate::ca::CaError;
use crate::hsm::Hsm;
use crate::issuer::CaState;
use crate::issuer::state::DestroyedKey;
use crate::store::schema::{ExpiryIndex, Revocations};
use crate::store::{IssuerId, Store};
use crate::x509::Timestamp;

/// What a retired key was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retired {
    /// A delegated OCSP responder's, another responder in force for its CA (or its CA retired).
    Responder,
    /// A superseded issuing CA's, every certificate it issued expired.
    Issuing,
}

/// Whether `label` is a retired key of `state` that may be destroyed at `now`, and why not.
pub fn retired(
    store: &Store,
    state: &CaState,
    label: &str,
    now: Timestamp,
) -> Result<Retired, CaError> {
    let refuse = |why: String| Err(CaError::Refused(format!("{label:?}: {why}")));
    if state
        .roots()
        .any(|r| r.key.as_ref().is_some_and(|k| k.label == label))
        || state
            .pending_issuing
            .as_ref()
            .is_some_and(|p| p.key_label == label)
    {
        return refuse("a root's or the pending issuing CA's key: never destroyed here".into());
    }
    if let Some(position) = state.issuing.iter().position(|c| c.key_label == label) {
        if position + 1 == state.issuing.len() {
            return refuse("the issuing CA in force".into());
        }
        let issuer = issuer_id(&state.issuing[position].certificate)?;
        let from = now.unix_seconds().to_be_bytes();
        let mut last = None;
        for row in store.scan::<ExpiryIndex>(&from, &[])? {
            let (key, ()) = row?;
            if key.certificate.issuer == issuer && key.not_after > now {
                last = last.max(Some(key.not_after));
            }
        }
        // Certificates a crashed issuance signed and never committed are only in the
        // revocation table: their CRL entry is owed until they expire too.
        for row in store.scan::<Revocations>(&issuer.0, &issuer.0)? {
            let (_, record) = row?;
            if record.not_after > now {
                last = last.max(Some(record.not_after));
            }
        }
        if let Some(until) = last {
            return refuse(format!(
                "certificates it issued are valid until {until}: its CRL is owed until then"
            ));
        }
        return Ok(Retired::Issuing);
    }
    if let Some(responder) = state.ocsp_responders.iter().find(|r| r.key_label == label) {
        let Some(issuer) = responder.authority_key_identifier() else {
            return refuse("a responder certificate without an authority key identifier".into());
        };
        // Its CA, known by the key identifier its certificates carry (the subjectKeyIdentifier,
        // or the key's hash when the CA certificate has none, as `Issuer` reads it).
        let Some(ca) = state.issuing.iter().find(|c| {
            c.subject_key_identifier() == Some(issuer)
                || issuer_id(&c.certificate).is_ok_and(|id| id.0 == issuer)
        }) else {
            return refuse("its issuing CA is not in this CA's state".into());
        };
        let issuer_retired = state.key_destroyed(&ca.key_label);
        let current = state
            .responders_of(&issuer)
            .last()
            .is_some_and(|r| r.key_label == label);
        if current && !issuer_retired {
            return refuse("the OCSP responder in force for its CA".into());
        }
        return Ok(Retired::Responder);
    }
    refuse("not a key of this CA's state".into())
}

/// The issuer id of the CA whose certificate is `der` (the hash of its key, as `Issuer` and the
/// store key certificates by).
pub fn issuer_id(der: &[u8]) -> Result<IssuerId, CaError> {
    let certificate = <x509_cert::Certificate as der::Decode>::from_der(der)
        .map_err(|e| CaError::Corrupt(format!("a CA certificate: {e}")))?;
    Ok(IssuerId(crate::x509::keys::key_identifier(
        certificate.tbs_certificate().subject_public_key_info(),
    )))
}

/// Destroys the retired key `label` in the HSM (its private and public objects), after
/// recording it destroyed in the CA state; the audit log records `key_destroyed`. How many
/// objects were destroyed.
pub fn destroy_retired(
    store: &Store,
    hsm: &Hsm,
    label: &str,
    now: Timestamp,
) -> Result<(Retired, usize), CaError> {
    let state = super::super::load_state(store)?
        .ok_or_else(|| CaError::NotInitialized(store.path().to_path_buf()))?;
    let kind = retired(store, &state, label, now)?;
    let mark = state
        .destroyed_keys
        .iter()
        .find(|k| k.label == label)
        .cloned();
    let state = match mark {
        Some(DestroyedKey { recorded: true, .. }) => {
            return Err(CaError::Refused(format!("{label:?} was destroyed already")));
        }
        // Marked by a run that stopped before the HSM call or before its record: finish it.
        Some(_) => state,
        None => {
            let marked = label.to_owned();
            update_state(store, &state, Vec::new(), move |state| {
                state.destroyed_keys.push(DestroyedKey {
                    label: marked,
                    destroyed_at: now,
                    recorded: false,
                });
            })?
        }
    };
    crate::failpoint::hit("destroy-retired-before-hsm");
    let objects = if hsm.has_key(label)? {
        hsm.destroy_key(label)?
    } else {
        0
    };
    let recorded = label.to_owned();
    update_state(
        store,
        &state,
        vec![AuditEvent::KeyDestroyed {
            label: label.to_owned(),
            objects,
        }],
        move |state| {
            for key in &mut state.destroyed_keys {
                if key.label == recorded {
                    key.recorded = true;
                }
            }
        },
    )?;
    Ok((kind, objects))
}
