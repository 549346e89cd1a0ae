//! One signature on a session thread: the key found again by label and `CKA_ID` (its handle
//! cached), a context-specific login first for a key that asks one, the signature made.

use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::UserType;

use std::cell::Cell;

use cryptoki::error::{Error as CkError, RvError};

use super::{
    MISSING_KEY_BACKOFF, WRONG_PIN_BACKOFF, Worker, connection, find_objects, is_connection_fault,
};
use crate::hsm::HsmError;
use crate::x509::sigalg::{self, SignatureScheme};

/// A signature job, prepared on the caller's thread (hashing for ECDSA happens there).
pub(in crate::hsm) struct SignJob {
    pub(in crate::hsm) label: String,
    pub(in crate::hsm) scheme: SignatureScheme,
    /// The key's CKA_ID, as checked at load.
    pub(in crate::hsm) id: Vec<u8>,
    pub(in crate::hsm) data: Vec<u8>,
    /// Sign with this session's in-memory copy of the key (see [`SigningKey::session_copy`]).
    ///
    /// [`SigningKey::session_copy`]: crate::hsm::SigningKey::session_copy
    pub(in crate::hsm) session_copy: bool,
    /// A context-specific login before each signature (`CKA_ALWAYS_AUTHENTICATE`).
    pub(in crate::hsm) login_per_signature: bool,
}

impl SignJob {
    pub(in crate::hsm) fn run(self, worker: &mut Worker) -> Result<Vec<u8>, HsmError> {
        crate::failpoint::stall("hsm-sign");
        let mechanism = match self.scheme {
            SignatureScheme::EcdsaP256Sha256 | SignatureScheme::EcdsaP384Sha384 => Mechanism::Ecdsa,
            SignatureScheme::RsaPkcs1Sha256 => Mechanism::Sha256RsaPkcs,
            SignatureScheme::RsaPkcs1Sha384 => Mechanism::Sha384RsaPkcs,
            SignatureScheme::RsaPssSha256 => Mechanism::Sha256RsaPkcsPss(PkcsPssParams {
                hash_alg: MechanismType::SHA256,
                mgf: PkcsMgfType::MGF1_SHA256,
                s_len: 32u64.into(),
            }),
            SignatureScheme::RsaPssSha384 => Mechanism::Sha384RsaPkcsPss(PkcsPssParams {
                hash_alg: MechanismType::SHA384,
                mgf: PkcsMgfType::MGF1_SHA384,
                s_len: 48u64.into(),
            }),
        };
        let label = self.label;
        let id = self.id;
        let data = self.data;
        let session_copy = self.session_copy;
        // For a key that asks a login before each signature: the PIN, read as for the token's
        // login, and the module's own C_Sign.
        let per_signature = if self.login_per_signature {
            let pin = connection::read_pin(&worker.connection.settings.pin)?;
            Some((pin, worker.connection.single_sign()?))
        } else {
            None
        };
        // The context-specific login's refusal of the PIN, if it was one (what it means for
        // the token differs from any other failure: see below).
        let pin_refused: Cell<Option<RvError>> = Cell::new(None);
        let raw = worker.with_retry(|session, handles| {
            // Cached per (label and id, token object or session copy).
            let cache_key = (format!("{label}\u{0}{}", hex::encode(&id)), !session_copy);
            let key = match handles.get(&cache_key) {
                Some(handle) => *handle,
                None => {
                    // By label, then by CKA_ID (read, not searched: some tokens cannot search
                    // by id): exactly the key that was checked at load, or none.
                    let found = find_objects(session, &label, ObjectClass::PRIVATE_KEY)?;
                    let [handle] = found[..] else {
                        // Reported as unavailable below.
                        return Ok(None);
                    };
                    let same_key = session
                        .get_attributes(handle, &[AttributeType::Id])?
                        .iter()
                        .any(|a| matches!(a, Attribute::Id(found) if *found == id));
                    if !same_key {
                        return Ok(None);
                    }
                    let handle = if session_copy {
                        // C_CopyObject keeps CKA_SENSITIVE and CKA_EXTRACTABLE as they are (it
                        // cannot weaken them); a token that refuses copies (CKA_COPYABLE false)
                        // signs with the token object.
                        match session.copy_object(handle, &[Attribute::Token(false)]) {
                            Ok(copy) => copy,
                            Err(error) if is_connection_fault(&error) => return Err(error),
                            Err(_) => handle,
                        }
                    } else {
                        handle
                    };
                    handles.insert(cache_key, handle);
                    handle
                }
            };
            match &per_signature {
                None => session.sign(&mechanism, key, &data).map(Some),
                Some((pin, single_sign)) => {
                    let _one_at_a_time = single_sign.one_at_a_time();
                    session.sign_init(&mechanism, key)?;
                    if let Err(error) =
                        session.login(UserType::ContextSpecific, Some(&pin.to_auth_pin()))
                    {
                        if let CkError::Pkcs11(
                            rv @ (RvError::PinIncorrect | RvError::PinLocked | RvError::PinExpired),
                            _,
                        ) = error
                        {
                            pin_refused.set(Some(rv));
                        }
                        return Err(error);
                    }
                    single_sign.sign(session, &data).map(Some)
                }
            }
        });
        if let Some(refusal) = pin_refused.get() {
            // Each refused login may count towards locking the token, and a nonce request
            // reaches this path: no more logins until the back-off has passed (the next job
            // reconnects, and the token's own login says whether the PIN is good).
            let error = if refusal == RvError::PinLocked {
                HsmError::PinLocked
            } else {
                HsmError::PinIncorrect {
                    retry_after_secs: WRONG_PIN_BACKOFF.as_secs(),
                }
            };
            worker.connection_lost(&error, WRONG_PIN_BACKOFF);
            return Err(error);
        }
        if raw.is_err() && per_signature.is_some() {
            // A signing operation may still be active on the session (the login failed): a
            // new session, rather than a C_SignInit answered CKR_OPERATION_ACTIVE.
            worker.discard_session();
        }
        let raw = raw?;
        let Some(raw) = raw else {
            // The key was there when it was loaded (every signing key is checked first): a
            // token whose objects vanish is not usable. Reported as unavailable, so that the
            // callers answer 503, health says degraded, and the next job reconnects.
            let error = HsmError::Unavailable(format!(
                "the key {label:?} (CKA_ID {}) is no longer on the token, or no longer alone under its label",
                hex::encode(&id)
            ));
            worker.connection_lost(&error, MISSING_KEY_BACKOFF);
            return Err(error);
        };
        if self.scheme.is_ecdsa() {
            sigalg::ecdsa_raw_to_der(&raw)
                .map_err(|e| HsmError::Pkcs11(format!("ECDSA signature: {e}")))
        } else {
            Ok(raw)
        }
    }
}
