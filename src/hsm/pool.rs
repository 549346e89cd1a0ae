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
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState};
use spki::SubjectPublicKeyInfoOwned;

use super::{HsmError, HsmSettings, KeySpec};
use crate::x509::keys;

mod attributes;
mod connection;
mod sign;
mod single_sign;
use attributes::{PRIVATE_KEY_ATTRIBUTES, PUBLIC_KEY_ATTRIBUTES, PrivateKeyFacts, public_key_from};
pub(super) use connection::initialize;
use connection::{Connection, classify, is_connection_fault};
pub(super) use sign::SignJob;

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
    /// Connects (a wrong module, token or PIN is reported now, not at the first signature),
    /// then starts as many session threads as asked and the token allows.
    pub(super) fn start(settings: HsmSettings) -> Result<Self, HsmError> {
        let requested = settings.sessions;
        let (jobs, queue) = crossbeam_channel::bounded::<Job>(settings.queue_capacity.max(1));
        let connection = Arc::new(Connection::new(settings));
        if let Err(error) = connection.reconnect() {
            // Nothing will retry: a module the attempt initialised is finalised now, not left
            // initialised in the process (a later `Hsm::open` starts from a clean module).
            let initialised = connection.lock().module.take();
            if let Some(module) = initialised
                && let Err(finalising) = module.finalize()
            {
                tracing::debug!(%finalising, "finalising the PKCS#11 module");
            }
            return Err(error);
        }
        let token_limit = connection
            .lock()
            .live
            .as_ref()
            .and_then(|live| live.max_sessions);
        let sessions = sessions_allowed(requested, token_limit);
        if sessions < requested {
            tracing::warn!(
                requested,
                sessions,
                token_limit,
                "the token allows fewer sessions than [hsm] sessions asks (one more is kept for the login): using fewer"
            );
        }
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

/// Worker sessions for `requested`, within the token's `ulMaxSessionCount` (`limit`), which
/// must also leave room for the session that keeps the token logged in. At least one.
fn sessions_allowed(requested: usize, limit: Option<u64>) -> usize {
    let requested = requested.max(1);
    match limit {
        Some(limit) => {
            let room = usize::try_from(limit.saturating_sub(1)).unwrap_or(usize::MAX);
            requested.min(room).max(1)
        }
        None => requested,
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

    /// The lengths of PIN the token accepts (its token information: ulMinPinLen, ulMaxPinLen).
    pub(super) fn pin_length_range(&mut self) -> Result<(usize, usize), HsmError> {
        self.session()?;
        let state = self.connection.lock();
        let Some(live) = &state.live else {
            return Err(HsmError::Unavailable("no session".into()));
        };
        let info = live
            .context
            .get_token_info(live.slot)
            .map_err(|e| classify(&e))?;
        Ok((info.min_pin_length(), info.max_pin_length()))
    }

    /// Changes the token's user PIN from the configured one to `new` (C_SetPIN), once: a
    /// PIN change is never retried, since a retry after a change that took effect would be
    /// refused and hide it.
    pub(super) fn change_pin(&mut self, new: &crate::hsm::Pin) -> Result<(), HsmError> {
        let old = connection::read_pin(&self.connection.settings.pin)?;
        self.session()?;
        let Some((generation, session)) = &self.session else {
            return Err(HsmError::Unavailable("no session".into()));
        };
        let (_shared, finalised) = self.connection.enter(*generation);
        if finalised {
            return Err(HsmError::Unavailable("the module was reset".into()));
        }
        session
            .set_pin(&old.to_auth_pin(), &new.to_auth_pin())
            .map_err(|e| match e {
                CkError::Pkcs11(
                    code @ (RvError::PinInvalid | RvError::PinLenRange | RvError::PinIncorrect),
                    _,
                ) => HsmError::PinRefused(format!("{code}")),
                other => classify(&other),
            })
    }

    /// Destroys the key pair labelled `label` (its private and public token objects); how
    /// many objects there were. Refused, nothing destroyed, when the label names more than one
    /// private key: which one the ceremony meant is not known.
    pub(super) fn destroy_key_pair(&mut self, label: &str) -> Result<usize, HsmError> {
        let privates = self.with_retry(|session, _| {
            ensure_logged_in(session)?;
            Ok(find_objects(session, label, ObjectClass::PRIVATE_KEY)?.len())
        })?;
        if privates > 1 {
            return Err(HsmError::DuplicateKey {
                label: label.to_owned(),
                objects: format!("{privates} private keys: nothing was destroyed"),
            });
        }
        self.with_retry(|session, _| {
            ensure_logged_in(session)?;
            let mut destroyed = 0;
            for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
                for handle in find_objects(session, label, class)? {
                    session.destroy_object(handle)?;
                    destroyed += 1;
                }
            }
            Ok(destroyed)
        })
    }

    /// Whether the token holds a private key labelled `label`. Token objects only: the
    /// in-memory session copies of the responder keys carry the same label and outlive the
    /// token's files.
    pub(super) fn has_private_key(&mut self, label: &str) -> Result<bool, HsmError> {
        self.with_retry(|session, _| {
            let found = session.find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Label(label.as_bytes().to_vec()),
            ])?;
            if found.is_empty() {
                ensure_logged_in(session)?;
            }
            Ok(!found.is_empty())
        })
    }

    /// Checks that exactly one private key and one public key carry `label` on the token, that
    /// they are a pair (the same `CKA_ID`), and that the private key never could leave the
    /// token and may sign ([`PrivateKeyFacts::refusal`]); returns the public key, the id, and
    /// whether the key asks a login before each signature.
    pub(super) fn check_signing_key(
        &mut self,
        label: &str,
    ) -> Result<(SubjectPublicKeyInfoOwned, Vec<u8>, bool), HsmError> {
        let (private, public) = self.with_retry(|session, _| {
            let mut private = Vec::new();
            for handle in find_objects(session, label, ObjectClass::PRIVATE_KEY)? {
                private.push(session.get_attributes(handle, PRIVATE_KEY_ATTRIBUTES)?);
            }
            let mut public = Vec::new();
            for handle in find_objects(session, label, ObjectClass::PUBLIC_KEY)? {
                public.push(session.get_attributes(handle, PUBLIC_KEY_ATTRIBUTES)?);
            }
            Ok((private, public))
        })?;
        let mut private: Vec<PrivateKeyFacts> =
            private.into_iter().map(PrivateKeyFacts::read).collect();
        let public = public
            .into_iter()
            .map(public_key_from)
            .collect::<Result<Vec<_>, _>>()?;
        refuse_duplicates(label, "private keys", private.iter().map(|k| &k.id))?;
        refuse_duplicates(label, "public keys", public.iter().map(|(id, _)| id))?;
        let facts = private.pop().ok_or_else(|| HsmError::KeyNotFound {
            label: label.to_owned(),
        })?;
        if let Some(refusal) = facts.refusal(label) {
            return Err(refusal);
        }
        let (public_id, spki) = public.into_iter().next().ok_or_else(|| {
            HsmError::PublicKey(format!("no public key object labelled {label:?}"))
        })?;
        if public_id != facts.id {
            return Err(HsmError::KeyAttributes {
                label: label.to_owned(),
                problem: format!(
                    "the public key has CKA_ID {} and the private key {}: not a pair",
                    hex::encode(&public_id),
                    hex::encode(&facts.id)
                ),
            });
        }
        if facts.always_authenticate {
            // Checked now, not at the first signature: the module's own C_Sign must exist and
            // belong to the module instance whose sessions sceau opens.
            let single_sign = self.connection.single_sign()?;
            let slot = self
                .connection
                .lock()
                .live
                .as_ref()
                .map(|live| live.slot.id());
            let checked = self.with_retry(|session, _| {
                Ok(match slot {
                    Some(slot) => single_sign.check(session, slot),
                    None => Err("not connected".to_owned()),
                })
            })?;
            checked.map_err(|reason| HsmError::Module {
                path: self.connection.settings.module.clone(),
                reason,
            })?;
        }
        Ok((spki, facts.id, facts.always_authenticate))
    }

    /// The certificates stored on the token (`CKO_CERTIFICATE`, their `CKA_VALUE`), as a card
    /// keeps its holder's.
    pub(super) fn certificates(&mut self) -> Result<Vec<Vec<u8>>, HsmError> {
        self.with_retry(|session, _| {
            let mut found = Vec::new();
            let template = [
                Attribute::Class(ObjectClass::CERTIFICATE),
                Attribute::Token(true),
            ];
            for handle in session.find_objects(&template)? {
                for attribute in session.get_attributes(handle, &[AttributeType::Value])? {
                    if let Attribute::Value(der) = attribute {
                        found.push(der);
                    }
                }
            }
            Ok(found)
        })
    }

    /// The labels of the token's public-key objects whose key is `wanted`: how a card's key is
    /// found from its certificate.
    pub(super) fn labels_of_key(
        &mut self,
        wanted: &SubjectPublicKeyInfoOwned,
    ) -> Result<Vec<String>, HsmError> {
        let objects = self.with_retry(|session, _| {
            let mut objects = Vec::new();
            let template = [
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::Token(true),
            ];
            for handle in session.find_objects(&template)? {
                let key = session.get_attributes(handle, PUBLIC_KEY_ATTRIBUTES)?;
                let label = session.get_attributes(handle, &[AttributeType::Label])?;
                objects.push((key, label));
            }
            Ok(objects)
        })?;
        let mut labels = Vec::new();
        for (key, label) in objects {
            // A key of a kind sceau cannot read is not the one sought.
            let Ok((_, spki)) = public_key_from(key) else {
                continue;
            };
            if spki != *wanted {
                continue;
            }
            for attribute in label {
                if let Attribute::Label(bytes) = attribute {
                    labels.push(String::from_utf8_lossy(&bytes).into_owned());
                }
            }
        }
        Ok(labels)
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
        // Invariant 5: the private key is sensitive and never extractable. Every security
        // attribute is stated, none left to the token's defaults, and all are read back below.
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
        let generated = self.with_retry(|session, handles| {
            if !find_objects(session, label, ObjectClass::PRIVATE_KEY)?.is_empty() {
                return Ok(None);
            }
            let (public, private) =
                session.generate_key_pair(&mechanism, &public_template, &private_template)?;
            handles.clear();
            let facts = session.get_attributes(private, PRIVATE_KEY_ATTRIBUTES)?;
            let public_attributes = session.get_attributes(public, PUBLIC_KEY_ATTRIBUTES)?;
            Ok(Some((facts, public_attributes)))
        })?;
        let Some((facts, public_attributes)) = generated else {
            return Err(HsmError::KeyExists {
                label: label.to_owned(),
            });
        };
        // A token that did not set what the template asked: the pair is destroyed, never used.
        let facts = PrivateKeyFacts::read(facts);
        if let Some(refusal) = facts.refusal(label) {
            // Found again by label and id at each try: after a reconnection the handles of the
            // generation could name other objects.
            let destroyed = self.with_retry(|session, _| {
                for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
                    for handle in session.find_objects(&[
                        Attribute::Class(class),
                        Attribute::Token(true),
                        Attribute::Label(label.as_bytes().to_vec()),
                        Attribute::Id(facts.id.clone()),
                    ])? {
                        session.destroy_object(handle)?;
                    }
                }
                Ok(())
            });
            tracing::error!(label, %refusal, destroyed = destroyed.is_ok(), "the token did not generate the key as asked");
            return Err(refusal);
        }
        tracing::info!(label, %spec, "generated a key pair in the HSM");
        public_key_from(public_attributes).map(|(_, spki)| spki)
    }
}

/// Refuses a label that names more than one object of a kind, naming their ids: which key
/// signs must never depend on the order a token lists its objects in.
fn refuse_duplicates<'a>(
    label: &str,
    what: &str,
    ids: impl Iterator<Item = &'a Vec<u8>>,
) -> Result<(), HsmError> {
    let ids: Vec<String> = ids
        .map(|id| format!("CKA_ID {}", hex::encode(id)))
        .collect();
    if ids.len() > 1 {
        return Err(HsmError::DuplicateKey {
            label: label.to_owned(),
            objects: format!("{} {what}: {}", ids.len(), ids.join(", ")),
        });
    }
    Ok(())
}

/// The token objects of `class` labelled `label`. Token objects only: the responders' session
/// copies carry the same label, and session objects are visible to every session of the
/// process.
fn find_objects(
    session: &Session,
    label: &str,
    class: ObjectClass,
) -> Result<Vec<ObjectHandle>, CkError> {
    let mut template = vec![
        Attribute::Class(class),
        Attribute::Token(true),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    if class == ObjectClass::PRIVATE_KEY {
        // A private-key object anyone could make without the PIN is not one of sceau's.
        template.push(Attribute::Private(true));
    }
    let found = session.find_objects(&template)?;
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

#[cfg(test)]
mod tests {
    use super::sessions_allowed;

    #[test]
    fn the_pool_never_asks_more_sessions_than_the_token_allows() {
        // A YubiHSM 2 allows 16 sessions: one keeps the login, 15 are left for workers.
        assert_eq!(sessions_allowed(64, Some(16)), 15);
        assert_eq!(sessions_allowed(4, Some(16)), 4);
        // A token that allows one session still gets a worker (the module refuses the second
        // session with a clear error rather than sceau refusing to start).
        assert_eq!(sessions_allowed(4, Some(1)), 1);
        assert_eq!(sessions_allowed(4, Some(0)), 1);
        // No stated limit (CK_UNAVAILABLE_INFORMATION or CK_EFFECTIVELY_INFINITE).
        assert_eq!(sessions_allowed(8, None), 8);
        assert_eq!(sessions_allowed(0, None), 1);
    }
}
