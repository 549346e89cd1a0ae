//! The connection to the token: the PKCS#11 module loaded and initialised, the token found, logged in once, and reconnected after a fault (the module finalised first, sessions of an older generation dropped).

use std::ffi::{CString, c_void};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::{Limit, Slot};

use super::single_sign::SingleSign;
use super::{RECONNECT_BACKOFF, WRONG_PIN_BACKOFF};
use crate::hsm::{HsmError, HsmSettings, PinSource};

/// The module, slot and login, shared by the session threads.
pub(super) struct Connection {
    pub(super) settings: HsmSettings,
    pub(super) state: Mutex<ConnectionState>,
    /// Held by the one thread that reconnects.
    pub(super) reconnecting: Mutex<()>,
    /// Held (shared) by every PKCS#11 call on a worker session, and (exclusively) while the
    /// module is finalised and initialised again.
    pub(super) gate: RwLock<()>,
    /// Sessions of a generation below this one belong to a finalised module (written under
    /// the exclusive gate, read under the shared one).
    pub(super) module_generation: AtomicU64,
    pub(super) sessions: AtomicU64,
    pub(super) reconnects: AtomicU64,
    pub(super) errors: AtomicU64,
    /// The module's own `C_Sign`, looked up when a key that asks a login per signature is
    /// first loaded, and kept (with the module loaded) for the pool's life.
    single_sign: std::sync::OnceLock<Result<Arc<SingleSign>, String>>,
}

pub(super) struct ConnectionState {
    /// Bumped on every successful connection; sessions from an older generation are dropped.
    pub(super) generation: u64,
    pub(super) live: Option<Live>,
    /// When and why the last attempt failed, and how long to wait before the next one.
    pub(super) last_failure: Option<(Instant, String, Duration)>,
    /// The module of the last connection, kept after a fault so that the next connection
    /// finalises it first.
    pub(super) module: Option<Pkcs11>,
}

pub(super) struct Live {
    pub(super) context: Pkcs11,
    pub(super) slot: Slot,
    /// Kept open so that the token stays logged in while worker sessions come and go.
    pub(super) _login_session: Session,
    /// The most sessions the token allows, when it says (`ulMaxSessionCount`).
    pub(super) max_sessions: Option<u64>,
}

impl Connection {
    pub(super) fn new(settings: HsmSettings) -> Self {
        Self {
            settings,
            state: Mutex::new(ConnectionState {
                generation: 0,
                live: None,
                last_failure: None,
                module: None,
            }),
            reconnecting: Mutex::new(()),
            gate: RwLock::new(()),
            module_generation: AtomicU64::new(0),
            sessions: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            single_sign: std::sync::OnceLock::new(),
        }
    }

    /// The module's `C_Sign`, for keys that ask a login before each signature.
    pub(super) fn single_sign(&self) -> Result<Arc<SingleSign>, HsmError> {
        self.single_sign
            .get_or_init(|| SingleSign::load(&self.settings.module).map(Arc::new))
            .clone()
            .map_err(|reason| HsmError::Module {
                path: self.settings.module.clone(),
                reason: format!("C_Sign for a key that asks a login per signature: {reason}"),
            })
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, ConnectionState> {
        // A panic while holding this lock leaves plain data behind: keep going with it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Opens a new session on the current connection, connecting first if needed.
    pub(super) fn open_session(&self) -> Result<(u64, Session), HsmError> {
        if self.lock().live.is_none() {
            self.reconnect()?;
        }
        let mut state = self.lock();
        let generation = state.generation;
        let live = state
            .live
            .as_ref()
            .ok_or_else(|| HsmError::Unavailable("not connected".into()))?;
        match live.context.open_rw_session(live.slot) {
            Ok(session) => Ok((generation, session)),
            Err(error) => {
                let typed = classify(&error);
                if is_connection_fault(&error) {
                    self.mark_broken(&mut state, generation, &typed, Duration::ZERO);
                }
                Err(typed)
            }
        }
    }

    /// Connects again: finalises the module of the failed connection (after the calls in
    /// flight), initialises it, logs in. One thread at a time, without holding the state lock
    /// while waiting (a hung call must not block `status`).
    pub(super) fn reconnect(&self) -> Result<(), HsmError> {
        let _one_at_a_time = self.reconnecting.lock().unwrap_or_else(|p| p.into_inner());
        let (previous, next_generation) = {
            let mut state = self.lock();
            if state.live.is_some() {
                // Another thread reconnected while this one waited.
                return Ok(());
            }
            if let Some((at, reason, wait)) = &state.last_failure
                && at.elapsed() < *wait
            {
                return Err(if reason.contains("refused the PIN") {
                    HsmError::PinIncorrect {
                        retry_after_secs: wait.saturating_sub(at.elapsed()).as_secs() + 1,
                    }
                } else {
                    HsmError::Unavailable(reason.clone())
                });
            }
            (state.module.take(), state.generation + 1)
        };
        if let Some(previous) = previous {
            self.finalize(previous, next_generation);
        }
        let connected = self.connect();
        let mut state = self.lock();
        match connected {
            Ok(live) => {
                state.module = Some(live.context.clone());
                state.generation += 1;
                if state.generation > 1 {
                    self.reconnects.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(generation = state.generation, "HSM connection restored");
                }
                state.live = Some(live);
                state.last_failure = None;
                Ok(())
            }
            Err((error, initialised)) => {
                // A module initialised by a failed attempt is finalised by the next one.
                state.module = initialised;
                let wait = if matches!(error, HsmError::PinIncorrect { .. }) {
                    WRONG_PIN_BACKOFF
                } else {
                    RECONNECT_BACKOFF
                };
                state.last_failure = Some((Instant::now(), error.to_string(), wait));
                Err(error)
            }
        }
    }

    /// The shared side of the gate (no module reset while it is held), and whether sessions
    /// of `generation` belong to a module finalised since.
    pub(super) fn enter(&self, generation: u64) -> (std::sync::RwLockReadGuard<'_, ()>, bool) {
        let shared = self.gate.read().unwrap_or_else(|p| p.into_inner());
        let finalised = generation < self.module_generation.load(Ordering::Relaxed);
        (shared, finalised)
    }

    /// Finalises a module whose connection failed: waits for the calls in flight on its
    /// sessions, and marks them as belonging to a finalised module (sessions of a generation
    /// below `next_generation`).
    pub(super) fn finalize(&self, module: Pkcs11, next_generation: u64) {
        let _exclusive = self.gate.write().unwrap_or_else(|p| p.into_inner());
        self.module_generation
            .store(next_generation, Ordering::Relaxed);
        match module.finalize() {
            Ok(()) => tracing::info!("PKCS#11 module finalised; initialising it again"),
            Err(error) => tracing::debug!(%error, "finalising the PKCS#11 module"),
        }
    }

    /// Loads the module, finds the token by label, and logs in. On failure, returns the
    /// module if it was initialised, for the next attempt to finalise.
    pub(super) fn connect(&self) -> Result<Live, (HsmError, Option<Pkcs11>)> {
        let settings = &self.settings;
        let context = Pkcs11::new(&settings.module).map_err(|e| {
            (
                HsmError::Module {
                    path: settings.module.clone(),
                    reason: e.to_string(),
                },
                None,
            )
        })?;
        // Without OS locking SoftHSM2 turns its own locks off and concurrent sessions fail.
        let parameters = match &settings.module_parameters {
            Some(text) => Some(CString::new(text.as_str()).map_err(|_| {
                (
                    HsmError::Module {
                        path: settings.module.clone(),
                        reason: "hsm.module_parameters holds a NUL".into(),
                    },
                    None,
                )
            })?),
            None => None,
        };
        // Whether this attempt initialised the module: only then may a failure finalise it
        // (another library of the process may be using a module it initialised).
        let initialised_here = match context.initialize(initialize_args(parameters.as_ref())) {
            Ok(()) => true,
            // Already initialised in this process (a module shared with another library): its
            // state is usable as is.
            Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => false,
            Err(e) if is_connection_fault(&e) => return Err((classify(&e), None)),
            // Anything else is the module refusing its settings (NSS softokn naming a database
            // that is not there answers CKR_ARGUMENTS_BAD): a configuration error, which a
            // restart does not cure.
            Err(e) => {
                return Err((
                    HsmError::Module {
                        path: settings.module.clone(),
                        reason: format!("C_Initialize: {e}"),
                    },
                    None,
                ));
            }
        };
        self.log_in(&context)
            .map(|(slot, login_session, max_sessions)| Live {
                context: context.clone(),
                slot,
                _login_session: login_session,
                max_sessions,
            })
            .map_err(|error| (error, initialised_here.then_some(context)))
    }

    /// Finds the token and opens the session that keeps it logged in (the login of a token
    /// is shared by all its sessions: one login, never one per session).
    pub(super) fn log_in(
        &self,
        context: &Pkcs11,
    ) -> Result<(Slot, Session, Option<u64>), HsmError> {
        let settings = &self.settings;
        let (slot, max_sessions) = find_token(
            context,
            &settings.token_label,
            settings.token_serial.as_deref(),
        )?;
        let login_session = context.open_rw_session(slot).map_err(|e| classify(&e))?;
        let pin = read_pin(&settings.pin)?;
        match login_session.login(UserType::User, Some(&pin.to_auth_pin())) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => {
                return Err(HsmError::PinIncorrect {
                    retry_after_secs: WRONG_PIN_BACKOFF.as_secs(),
                });
            }
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => return Err(HsmError::PinLocked),
            Err(e) => return Err(classify(&e)),
        }
        tracing::debug!(token = %settings.token_label, "logged in to the HSM token");
        Ok((slot, login_session, max_sessions))
    }

    /// Drops the connection if it is still the one that failed; the next job reconnects (after
    /// `wait`), resetting the module.
    pub(super) fn mark_broken(
        &self,
        state: &mut ConnectionState,
        generation: u64,
        error: &HsmError,
        wait: Duration,
    ) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if state.generation == generation && state.live.is_some() {
            tracing::warn!(%error, "HSM connection lost; reconnecting on the next request");
            state.live = None;
            state.last_failure = Some((Instant::now(), error.to_string(), wait));
        }
    }
}

pub(super) fn read_pin(source: &PinSource) -> Result<crate::hsm::Pin, HsmError> {
    Ok(source.read()?)
}

/// The slot holding the token labelled `label` (and numbered `serial`, when given), and the
/// most sessions it allows (`ulMaxSessionCount`, when it states one). Found anew at every
/// connection: slot ids change when a module is initialised again or a token re-inserted.
/// Two tokens answering to the description are refused, naming their serial numbers: which
/// one signs must never depend on slot order.
pub(super) fn find_token(
    context: &Pkcs11,
    label: &str,
    serial: Option<&str>,
) -> Result<(Slot, Option<u64>), HsmError> {
    let slots = context.get_slots_with_token().map_err(|e| classify(&e))?;
    let mut labelled = Vec::new();
    for slot in slots {
        // A slot whose token cannot be read now (a reader being unplugged) is not this one.
        let info = match context.get_token_info(slot) {
            Ok(info) => info,
            Err(error) => {
                tracing::debug!(%error, ?slot, "skipping a slot whose token cannot be read");
                continue;
            }
        };
        if info.label().trim_end() == label {
            // Every session sceau opens is read-write: the smaller of the two limits.
            let limit = |limit: Limit| match limit {
                Limit::Max(n) => Some(n),
                Limit::Unavailable | Limit::Infinite => None,
            };
            let max_sessions = match (
                limit(info.max_session_count()),
                limit(info.max_rw_session_count()),
            ) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            labelled.push((
                slot,
                info.serial_number().trim_end().to_owned(),
                max_sessions,
            ));
        }
    }
    let candidates: Vec<_> = match serial {
        Some(wanted) => labelled.iter().filter(|(_, s, _)| s == wanted).collect(),
        None => labelled.iter().collect(),
    };
    match candidates.as_slice() {
        [(slot, _, max_sessions)] => Ok((*slot, *max_sessions)),
        [] => match (serial, labelled.first()) {
            (Some(expected), Some((_, found, _))) => Err(HsmError::TokenSerialMismatch {
                label: label.to_owned(),
                expected: expected.to_owned(),
                found: found.clone(),
            }),
            _ => Err(HsmError::TokenNotFound {
                label: label.to_owned(),
            }),
        },
        several => Err(HsmError::TokenAmbiguous {
            label: label.to_owned(),
            serials: several
                .iter()
                .map(|(_, s, _)| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// Errors after which the session, or the whole connection, cannot be trusted any more.
pub(super) fn is_connection_fault(error: &CkError) -> bool {
    matches!(
        error,
        CkError::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::DeviceError
                | RvError::DeviceRemoved
                | RvError::DeviceMemory
                | RvError::TokenNotPresent
                | RvError::TokenNotRecognized
                | RvError::CryptokiNotInitialized
                | RvError::UserNotLoggedIn
                | RvError::GeneralError
                | RvError::SlotIdInvalid,
            _
        ) | CkError::LibraryLoading(_)
            | CkError::NullFunctionPointer
    )
}

pub(super) fn classify(error: &CkError) -> HsmError {
    if is_connection_fault(error) {
        HsmError::Unavailable(error.to_string())
    } else {
        HsmError::Pkcs11(error.to_string())
    }
}

/// Initialises `context` as sceau does (OS locking, `parameters` in `pReserved`): for a tool
/// that calls the module directly beside sceau's pool (the benchmarks' raw C_Sign reference).
/// A module this process already initialised is fine.
pub(crate) fn initialize(context: &Pkcs11, parameters: Option<&str>) -> Result<(), HsmError> {
    let parameters = parameters
        .map(CString::new)
        .transpose()
        .map_err(|_| HsmError::Pkcs11("module parameters hold a NUL".into()))?;
    match context.initialize(initialize_args(parameters.as_ref())) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(()),
        Err(e) => Err(classify(&e)),
    }
}

/// `C_Initialize`'s arguments: OS locking, and the module's own parameters in `pReserved` when
/// it takes some (NSS softokn reads its database directory there, and refuses NULL).
///
/// The one `unsafe` of the crate, reviewed: `new_with_reserved` hands the pointer to the module
/// as is. It points at `parameters`, a NUL-terminated string the caller keeps alive across the
/// `initialize` call that consumes these arguments; modules read `pReserved` during
/// `C_Initialize` only (NSS copies it), and never write through it.
#[allow(unsafe_code)]
fn initialize_args(parameters: Option<&CString>) -> CInitializeArgs {
    let flags = CInitializeFlags::OS_LOCKING_OK;
    match parameters.and_then(|p| NonNull::new(p.as_ptr() as *mut c_void)) {
        // SAFETY: see above; the pointer is valid, NUL-terminated and outlives the call.
        Some(reserved) => unsafe { CInitializeArgs::new_with_reserved(flags, reserved) },
        None => CInitializeArgs::new(flags),
    }
}
