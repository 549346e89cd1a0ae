//! Session threads and the connection they share.
//!
//! Each worker thread owns one PKCS#11 session (a `Session` is `Send` but not `Sync`) and takes
//! jobs from a bounded crossbeam queue. The [`Connection`] owns the loaded module, the slot and a
//! login session kept open for the life of the connection (closing the last session would log
//! the token out). When a call fails with a session or device error, the worker drops its
//! session, marks the connection broken, and the next job reconnects; an operation that failed
//! that way is retried once on the fresh connection.
//!
//! A reconnection after a fault also finalises and re-initialises the module (C_Finalize, then
//! C_Initialize): a module that stays initialised may keep its view of a token that went away
//! and came back (a network HSM or its client restarting, token files restored) and never see
//! its keys again, as Boulder found with its HSMs. The reset waits for the calls in flight
//! (a read-write gate) and never lets a session of the finalised module be closed on the new
//! one (its handle could name a new session): those are forgotten, not closed.
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use cryptoki::context::Function;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState};
use der::Decode;
use der::asn1::OctetString;
use spki::SubjectPublicKeyInfoOwned;

use super::{HsmError, HsmSettings, KeySpec};
use crate::x509::keys;
use crate::x509::sigalg::{self, SignatureScheme};

mod connection;
use connection::{Connection, classify, is_connection_fault};

/// After a failed connection attempt, wait this long before trying again.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(500);
/// After a key was found missing on a connected token, wait this long before the next
/// reconnection (each one resets the module).
const MISSING_KEY_BACKOFF: Duration = Duration::from_secs(1);
/// After the token refused the PIN, wait this long: each try counts towards locking the token.
const WRONG_PIN_BACKOFF: Duration = Duration::from_secs(30);

type Job = Box<dyn FnOnce(&mut Worker) + Send>;

pub(super) struct Pool {
    /// `None` once the pool is shutting down.
    jobs: Option<Sender<Job>>,
    workers: Vec<std::thread::JoinHandle<()>>,
    connection: Arc<Connection>,
    completed: AtomicU64,
}

/// What `/healthz` and the metrics report about the HSM.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct HsmStatus {
    pub available: bool,
    /// The last connection or device error, while unavailable.
    pub last_error: Option<String>,
    pub queue_depth: usize,
    pub sessions: usize,
    pub reconnects: u64,
    pub errors: u64,
}

impl Pool {
    pub(super) fn start(settings: HsmSettings) -> Result<Self, HsmError> {
        let sessions = settings.sessions.max(1);
        let (jobs, queue) = crossbeam_channel::bounded::<Job>(settings.queue_capacity.max(1));
        let connection = Arc::new(Connection::new(settings));
        let mut workers = Vec::with_capacity(sessions);
        for index in 0..sessions {
            let queue: Receiver<Job> = queue.clone();
            let mut worker = Worker {
                connection: connection.clone(),
                session: None,
                handles: HashMap::new(),
            };
            let handle = std::thread::Builder::new()
                .name(format!("hsm-session-{index}"))
                .spawn(move || {
                    // The loop ends when every `Pool` handle (and so every sender) is gone.
                    for job in queue.iter() {
                        job(&mut worker);
                    }
                })
                .map_err(|e| {
                    HsmError::Unavailable(format!("cannot start a session thread: {e}"))
                })?;
            workers.push(handle);
        }
        connection
            .sessions
            .store(sessions as u64, Ordering::Relaxed);
        Ok(Self {
            jobs: Some(jobs),
            workers,
            connection,
            completed: AtomicU64::new(0),
        })
    }

    fn submit(&self, job: Job) -> Result<(), HsmError> {
        let Some(jobs) = &self.jobs else {
            return Err(HsmError::Unavailable(
                "the HSM pool is shutting down".into(),
            ));
        };
        match jobs.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(HsmError::Busy),
            Err(TrySendError::Disconnected(_)) => Err(HsmError::Unavailable(
                "the session threads have stopped".into(),
            )),
        }
    }

    /// Runs `f` on a session thread and waits for its result.
    pub(super) fn run_blocking<R, F>(&self, f: F) -> Result<R, HsmError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Worker) -> Result<R, HsmError> + Send + 'static,
    {
        let (reply, result) = crossbeam_channel::bounded(1);
        self.submit(Box::new(move |worker| {
            let _ = reply.send(f(worker));
        }))?;
        let outcome = result
            .recv()
            .map_err(|_| HsmError::Unavailable("a session thread stopped".into()))?;
        self.completed.fetch_add(1, Ordering::Relaxed);
        outcome
    }

    /// Runs `f` on a session thread; the caller's task waits without blocking its thread.
    pub(super) async fn run_async<R, F>(&self, f: F) -> Result<R, HsmError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Worker) -> Result<R, HsmError> + Send + 'static,
    {
        let (reply, result) = tokio::sync::oneshot::channel();
        self.submit(Box::new(move |worker| {
            let _ = reply.send(f(worker));
        }))?;
        let outcome = result
            .await
            .map_err(|_| HsmError::Unavailable("a session thread stopped".into()))?;
        self.completed.fetch_add(1, Ordering::Relaxed);
        outcome
    }

    /// Drops the connection (the next job reconnects and resets the module): the token is
    /// reachable but does not hold what it should (a key went missing).
    pub(super) fn mark_unavailable(&self, reason: &str) {
        let mut state = self.connection.lock();
        if state.live.is_some() {
            tracing::warn!(reason, "HSM token marked unavailable; reconnecting");
            state.live = None;
            state.last_failure = Some((Instant::now(), reason.to_owned(), MISSING_KEY_BACKOFF));
        }
    }

    pub(super) fn status(&self) -> HsmStatus {
        let state = self.connection.lock();
        HsmStatus {
            available: state.live.is_some(),
            last_error: if state.live.is_some() {
                None
            } else {
                state
                    .last_failure
                    .as_ref()
                    .map(|(_, reason, _)| reason.clone())
            },
            queue_depth: self.jobs.as_ref().map_or(0, Sender::len),
            sessions: self.connection.sessions.load(Ordering::Relaxed) as usize,
            reconnects: self.connection.reconnects.load(Ordering::Relaxed),
            errors: self.connection.errors.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Pool {
    /// Closes the queue and waits for the session threads, which close their sessions: the
    /// module must not be unloaded (at process exit) while a thread still holds a session.
    fn drop(&mut self) {
        drop(self.jobs.take());
        let current = std::thread::current().id();
        for worker in self.workers.drain(..) {
            // Never join oneself (the last handle dropped by a job on a session thread).
            if worker.thread().id() != current {
                let _ = worker.join();
            }
        }
    }
}

/// What a worker thread owns: its session and the key handles it has looked up.
pub(super) struct Worker {
    connection: Arc<Connection>,
    session: Option<(u64, Session)>,
    handles: HashMap<(String, bool), ObjectHandle>,
}

impl Drop for Worker {
    /// A session of a module finalised since it was opened is forgotten, not closed (its
    /// handle may name another session of the module as initialised again).
    fn drop(&mut self) {
        self.discard_session();
    }
}

impl Worker {
    /// This thread's session, opened (and the connection made) if needed.
    pub(super) fn session(&mut self) -> Result<&Session, HsmError> {
        let current = self.connection.lock().generation;
        let stale = match &self.session {
            Some((generation, _)) => {
                *generation != current || self.connection.lock().live.is_none()
            }
            None => true,
        };
        if stale {
            self.discard_session();
            self.session = Some(self.connection.open_session()?);
        }
        match &self.session {
            Some((_, session)) => Ok(session),
            None => Err(HsmError::Unavailable("no session".into())),
        }
    }

    /// Runs `op` on this thread's session. After a session or device fault it reconnects and
    /// runs `op` again (once); after a stale key handle it looks the key up again (once). The
    /// two are separate: a token that was logged out first shows stale handles, then the lost
    /// login.
    fn with_retry<R>(
        &mut self,
        op: impl Fn(&Session, &mut HashMap<(String, bool), ObjectHandle>) -> Result<R, CkError>,
    ) -> Result<R, HsmError> {
        let mut reconnected = false;
        let mut refreshed = false;
        loop {
            self.session()?;
            let Some((generation, session)) = &self.session else {
                return Err(HsmError::Unavailable("no session".into()));
            };
            let generation = *generation;
            let outcome = {
                // Never while the module is being reset; released before the state lock.
                let (_shared, finalised) = self.connection.enter(generation);
                if finalised {
                    Err(CkError::Pkcs11(
                        RvError::SessionHandleInvalid,
                        Function::Sign,
                    ))
                } else {
                    op(session, &mut self.handles)
                }
            };
            match outcome {
                Ok(value) => return Ok(value),
                Err(error) if is_connection_fault(&error) => {
                    let typed = classify(&error);
                    {
                        let mut state = self.connection.lock();
                        self.connection
                            .mark_broken(&mut state, generation, &typed, Duration::ZERO);
                    }
                    self.discard_session();
                    if reconnected {
                        return Err(typed);
                    }
                    reconnected = true;
                }
                Err(CkError::Pkcs11(
                    RvError::KeyHandleInvalid | RvError::ObjectHandleInvalid,
                    _,
                )) if !refreshed => {
                    self.handles.clear();
                    refreshed = true;
                }
                Err(error) => return Err(classify(&error)),
            }
        }
    }

    /// Drops this worker's session and marks the connection broken: the next job reconnects
    /// after `wait` (and resets the module).
    fn connection_lost(&mut self, error: &HsmError, wait: Duration) {
        if let Some((generation, _)) = &self.session {
            let generation = *generation;
            let mut state = self.connection.lock();
            self.connection
                .mark_broken(&mut state, generation, error, wait);
        }
        self.discard_session();
    }

    /// Closes this worker's session, unless its module was finalised since it was opened: its
    /// handle may then name a session of the module as initialised again, so it is forgotten
    /// (the finalisation closed it).
    fn discard_session(&mut self) {
        self.handles.clear();
        let Some((generation, session)) = self.session.take() else {
            return;
        };
        let (_shared, finalised) = self.connection.enter(generation);
        if finalised {
            std::mem::forget(session);
        } else {
            drop(session);
        }
    }

    /// Whether the token holds a private key labelled `label`. Token objects only: the
    /// in-memory session copies of the responder keys carry the same label and outlive the
    /// token's files.
    pub(super) fn has_private_key(&mut self, label: &str) -> Result<bool, HsmError> {
        self.with_retry(|session, _| {
            let found = session.find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Token(true),
                Attribute::Label(label.as_bytes().to_vec()),
            ])?;
            if found.is_empty() {
                ensure_logged_in(session)?;
            }
            Ok(!found.is_empty())
        })
    }

    /// Checks that the private key `label` exists, is sensitive and non-extractable, and returns
    /// its public key.
    pub(super) fn check_signing_key(
        &mut self,
        label: &str,
    ) -> Result<SubjectPublicKeyInfoOwned, HsmError> {
        let (private, public) = self.with_retry(|session, _| {
            let private = find_objects(session, label, ObjectClass::PRIVATE_KEY)?;
            let public = find_objects(session, label, ObjectClass::PUBLIC_KEY)?;
            let flags = match private.first() {
                Some(handle) => Some(session.get_attributes(
                    *handle,
                    &[
                        AttributeType::Sensitive,
                        AttributeType::Extractable,
                        AttributeType::Sign,
                    ],
                )?),
                None => None,
            };
            let public_attributes = match public.first() {
                Some(handle) => Some(read_public_attributes(session, *handle)?),
                None => None,
            };
            Ok((flags, public_attributes))
        })?;
        let flags = private.ok_or_else(|| HsmError::KeyNotFound {
            label: label.to_owned(),
        })?;
        let mut sensitive = false;
        let mut extractable = true;
        let mut can_sign = false;
        for attribute in flags {
            match attribute {
                Attribute::Sensitive(v) => sensitive = v,
                Attribute::Extractable(v) => extractable = v,
                Attribute::Sign(v) => can_sign = v,
                _ => {}
            }
        }
        if !sensitive || extractable {
            return Err(HsmError::KeyExportable {
                label: label.to_owned(),
            });
        }
        if !can_sign {
            return Err(HsmError::Pkcs11(format!(
                "key {label:?} does not allow signing"
            )));
        }
        let public = public.ok_or_else(|| {
            HsmError::PublicKey(format!("no public key object labelled {label:?}"))
        })?;
        spki_from_attributes(public)
    }

    pub(super) fn generate_key_pair(
        &mut self,
        label: &str,
        spec: KeySpec,
    ) -> Result<SubjectPublicKeyInfoOwned, HsmError> {
        if self.has_private_key(label)? {
            return Err(HsmError::KeyExists {
                label: label.to_owned(),
            });
        }
        let id = keys::sha256(label.as_bytes())[..16].to_vec();
        let mut public_template = vec![
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.clone()),
        ];
        // Invariant 5: the private key is sensitive and never extractable.
        let private_template = vec![
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Decrypt(false),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id),
        ];
        let mechanism = match (spec.curve(), spec.rsa_bits()) {
            (Some(curve), _) => {
                let params = der::Encode::to_der(&curve.oid())
                    .map_err(|e| HsmError::PublicKey(e.to_string()))?;
                public_template.push(Attribute::EcParams(params));
                Mechanism::EccKeyPairGen
            }
            (None, Some(bits)) => {
                public_template.push(Attribute::ModulusBits(bits.into()));
                public_template.push(Attribute::PublicExponent(vec![0x01, 0x00, 0x01]));
                Mechanism::RsaPkcsKeyPairGen
            }
            (None, None) => return Err(HsmError::Pkcs11(format!("cannot generate {spec}"))),
        };
        // Retried after a device fault (on a new connection): the first attempt may have made
        // the key before failing, so each attempt checks the label again rather than make a
        // second key under it.
        let public = self.with_retry(|session, handles| {
            if !find_objects(session, label, ObjectClass::PRIVATE_KEY)?.is_empty() {
                return Ok(None);
            }
            let (public, _private) =
                session.generate_key_pair(&mechanism, &public_template, &private_template)?;
            handles.clear();
            read_public_attributes(session, public).map(Some)
        })?;
        let Some(public) = public else {
            return Err(HsmError::KeyExists {
                label: label.to_owned(),
            });
        };
        tracing::info!(label, %spec, "generated a key pair in the HSM");
        spki_from_attributes(public)
    }
}

/// A signature job, prepared on the caller's thread (hashing for ECDSA happens there).
pub(super) struct SignJob {
    pub(super) label: String,
    pub(super) scheme: SignatureScheme,
    pub(super) data: Vec<u8>,
    /// Sign with this session's in-memory copy of the key (see [`SigningKey::session_copy`]).
    ///
    /// [`SigningKey::session_copy`]: super::SigningKey::session_copy
    pub(super) session_copy: bool,
}

impl SignJob {
    pub(super) fn run(self, worker: &mut Worker) -> Result<Vec<u8>, HsmError> {
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
        let data = self.data;
        let session_copy = self.session_copy;
        let raw = worker.with_retry(|session, handles| {
            // Cached per (label, token object or session copy).
            let cache_key = (label.clone(), !session_copy);
            let key = match handles.get(&cache_key) {
                Some(handle) => *handle,
                None => {
                    let found = find_objects(session, &label, ObjectClass::PRIVATE_KEY)?;
                    let Some(handle) = found.first().copied() else {
                        // Reported as KeyNotFound below.
                        return Ok(None);
                    };
                    let handle = if session_copy {
                        // C_CopyObject keeps CKA_SENSITIVE and CKA_EXTRACTABLE as they are (it
                        // cannot weaken them); a token that refuses copies (CKA_COPYABLE false)
                        // signs with the token object.
                        session
                            .copy_object(handle, &[Attribute::Token(false)])
                            .unwrap_or(handle)
                    } else {
                        handle
                    };
                    handles.insert(cache_key, handle);
                    handle
                }
            };
            session.sign(&mechanism, key, &data).map(Some)
        })?;
        let Some(raw) = raw else {
            // The key was there when it was loaded (every signing key is checked first): a
            // token whose objects vanish is not usable. Reported as unavailable, so that the
            // callers answer 503, health says degraded, and the next job reconnects.
            let error =
                HsmError::Unavailable(format!("the key {label:?} is no longer on the token"));
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

fn find_objects(
    session: &Session,
    label: &str,
    class: ObjectClass,
) -> Result<Vec<ObjectHandle>, CkError> {
    let found = session.find_objects(&[
        Attribute::Class(class),
        Attribute::Label(label.as_bytes().to_vec()),
    ])?;
    if found.is_empty() && class == ObjectClass::PRIVATE_KEY {
        ensure_logged_in(session)?;
    }
    Ok(found)
}

/// Private objects are invisible to a session that lost its login (the token was logged out
/// or reset): report that as the fault it is, so that the pool reconnects, rather than as a
/// missing key.
fn ensure_logged_in(session: &Session) -> Result<(), CkError> {
    match session.get_session_info()?.session_state() {
        SessionState::RoUser | SessionState::RwUser => Ok(()),
        _ => Err(CkError::Pkcs11(
            RvError::UserNotLoggedIn,
            Function::FindObjects,
        )),
    }
}

fn read_public_attributes(
    session: &Session,
    handle: ObjectHandle,
) -> Result<Vec<Attribute>, CkError> {
    session.get_attributes(
        handle,
        &[
            AttributeType::KeyType,
            AttributeType::EcParams,
            AttributeType::EcPoint,
            AttributeType::Modulus,
            AttributeType::PublicExponent,
        ],
    )
}

/// Builds the SubjectPublicKeyInfo from the public key object's attributes.
fn spki_from_attributes(attributes: Vec<Attribute>) -> Result<SubjectPublicKeyInfoOwned, HsmError> {
    let mut key_type = None;
    let (mut params, mut point, mut modulus, mut exponent) = (None, None, None, None);
    for attribute in attributes {
        match attribute {
            Attribute::KeyType(t) => key_type = Some(t),
            Attribute::EcParams(v) => params = Some(v),
            Attribute::EcPoint(v) => point = Some(v),
            Attribute::Modulus(v) => modulus = Some(v),
            Attribute::PublicExponent(v) => exponent = Some(v),
            _ => {}
        }
    }
    let bad = |what: &str| HsmError::PublicKey(what.to_owned());
    match key_type {
        Some(KeyType::EC) => {
            let params = params.ok_or_else(|| bad("EC key without CKA_EC_PARAMS"))?;
            let curve_oid = const_oid::ObjectIdentifier::from_der(&params)
                .map_err(|_| bad("CKA_EC_PARAMS is not a named curve"))?;
            let curve = keys::Curve::from_oid(curve_oid).ok_or_else(|| bad("unsupported curve"))?;
            let wrapped = point.ok_or_else(|| bad("EC key without CKA_EC_POINT"))?;
            // CKA_EC_POINT is DER: an OCTET STRING around the uncompressed point.
            let point = OctetString::from_der(&wrapped)
                .map(|o| o.as_bytes().to_vec())
                .unwrap_or(wrapped);
            keys::ec_spki(curve, &point).map_err(|e| bad(&e.to_string()))
        }
        Some(KeyType::RSA) => {
            let modulus = modulus.ok_or_else(|| bad("RSA key without CKA_MODULUS"))?;
            let exponent = exponent.ok_or_else(|| bad("RSA key without CKA_PUBLIC_EXPONENT"))?;
            keys::rsa_spki(&modulus, &exponent).map_err(|e| bad(&e.to_string()))
        }
        _ => Err(bad("unsupported key type")),
    }
}
