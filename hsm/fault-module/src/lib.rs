//! A PKCS#11 module that wraps a real one and injects faults on command: the misbehaving HSM
//! of sceau's tests (issue 20; docs/hsm.md, "Faults at the module boundary").
//!
//! Loaded like any module (`[hsm] module = ".../libsceau_fault_module.so"`), it loads the
//! module named by `SCEAU_FAULT_REAL` (set through `[hsm] module_env`), takes its function
//! list, and answers every call through it, except a few it intercepts. `pReserved` goes
//! through unchanged, so NSS softokn and kryoptic can be wrapped too. What to inject is read
//! at each intercepted call from the file `SCEAU_FAULT_CONTROL`: one line, `MODE [P] [MS]`,
//! where P is the probability per signature (default 1) and MS a delay:
//!
//! | mode | effect |
//! |---|---|
//! | `none` (or no file) | nothing |
//! | `device_error`, `session_handle_invalid`, `device_removed`, `token_not_present`, `not_initialized`, `general_error` | `C_Sign` signs, then answers that error instead of the signature |
//! | `delay` (or `hang`, `slow`) | `C_Sign` waits MS milliseconds first |
//! | `wrong_key` | `C_SignInit` signs with the private key labelled `sceau-fault-decoy` instead |
//! | `vanish` | the token is gone: no slot lists it, calls about its slot answer `CKR_TOKEN_NOT_PRESENT` and calls on its sessions (login, search, attributes, copy, destroy, generation, signing) `CKR_DEVICE_REMOVED`; when the mode changes again, it comes back under new slot ids and object handles (one of before names nothing; translated in the calls sceau makes with handles: search, attributes, copy, destroy, generation, `C_SignInit`) |
//!
//! Each injected fault (a signature refused, delayed or made with the decoy) adds one to the
//! count in the file `SCEAU_FAULT_CONTROL.injected`. The tests replace the control file by a
//! rename, so that a call never reads it half-written.
//!
//! This is an FFI boundary by nature: every function here is called by C conventions with raw
//! pointers from the consumer, and forwards them to the real module unchanged. The `unsafe`
//! blocks only call the real module's functions with the arguments received, or read and write
//! through pointers the PKCS#11 contract makes valid for the call (checked for NULL first).
#![allow(unsafe_code)]
#![allow(non_snake_case)]

use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use cryptoki_sys::*;

/// What the control file asks for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Control {
    pub mode: Mode,
    /// Probability that a signature meets the fault.
    pub probability: f64,
    pub delay: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    None,
    /// `C_Sign` answers this error (after signing, so the token's operation ends).
    Error(CK_RV),
    Delay,
    WrongKey,
    Vanish,
}

impl Control {
    pub const NONE: Control = Control {
        mode: Mode::None,
        probability: 0.0,
        delay: Duration::ZERO,
    };

    /// Reads one line `MODE [P] [MS]`; anything unreadable means no fault (and says so on
    /// standard error, once per call).
    pub fn parse(text: &str) -> Result<Control, String> {
        let mut words = text.split_whitespace();
        let mode = match words.next().unwrap_or("none") {
            "none" | "off" => Mode::None,
            "device_error" => Mode::Error(CKR_DEVICE_ERROR),
            "session_handle_invalid" => Mode::Error(CKR_SESSION_HANDLE_INVALID),
            "device_removed" => Mode::Error(CKR_DEVICE_REMOVED),
            "token_not_present" => Mode::Error(CKR_TOKEN_NOT_PRESENT),
            "not_initialized" => Mode::Error(CKR_CRYPTOKI_NOT_INITIALIZED),
            "general_error" => Mode::Error(CKR_GENERAL_ERROR),
            "delay" | "hang" | "slow" => Mode::Delay,
            "wrong_key" => Mode::WrongKey,
            "vanish" => Mode::Vanish,
            other => return Err(format!("unknown fault mode {other:?}")),
        };
        let probability = match words.next() {
            Some(p) => p
                .parse::<f64>()
                .ok()
                .filter(|p| (0.0..=1.0).contains(p))
                .ok_or_else(|| format!("probability {p:?} is not between 0 and 1"))?,
            None => 1.0,
        };
        let delay = match words.next() {
            Some(ms) => Duration::from_millis(
                ms.parse()
                    .map_err(|_| format!("delay {ms:?} is not a number of milliseconds"))?,
            ),
            None => Duration::ZERO,
        };
        Ok(Control {
            mode,
            probability,
            delay,
        })
    }
}

/// The real module's functions, and ours.
struct Wrapper {
    real: CK_FUNCTION_LIST,
    ours: CK_FUNCTION_LIST,
    control: Option<PathBuf>,
}

static WRAPPER: OnceLock<Result<Wrapper, String>> = OnceLock::new();
/// Added to every slot id the consumer sees; grows each time a vanished token comes back.
static SLOT_OFFSET: AtomicU64 = AtomicU64::new(0);
/// Added to every object handle the consumer sees; grows with the slot ids. A handle of an
/// earlier appearance names nothing (`CKR_OBJECT_HANDLE_INVALID`), as after a real HSM's
/// failover, and never another object.
static HANDLE_OFFSET: AtomicU64 = AtomicU64::new(0);
static VANISHED: AtomicBool = AtomicBool::new(false);
static INJECTED: AtomicU64 = AtomicU64::new(0);
static RANDOM: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);

const DECOY_LABEL: &[u8] = b"sceau-fault-decoy";
/// Large enough that an id of an earlier appearance never names a slot of the current one.
const SLOT_STEP: CK_SLOT_ID = 1 << 32;
/// The real modules' object handles are below this (SoftHSM2, NSS softokn and kryoptic number
/// them in 32 bits); each appearance of the token gets a span of its own.
const HANDLE_SPAN: CK_OBJECT_HANDLE = 1 << 32;

fn wrapper() -> Option<&'static Wrapper> {
    WRAPPER.get_or_init(load).as_ref().ok()
}

/// Loads the real module and builds our function list: the real one with the intercepted
/// entries replaced.
fn load() -> Result<Wrapper, String> {
    let path =
        std::env::var_os("SCEAU_FAULT_REAL").ok_or("SCEAU_FAULT_REAL names no module to wrap")?;
    // SAFETY: loading a PKCS#11 module runs its initialisers, as any consumer does.
    let library = unsafe { libloading::Library::new(&path) }
        .map_err(|e| format!("loading {}: {e}", path.to_string_lossy()))?;
    let library: &'static libloading::Library = Box::leak(Box::new(library));
    // SAFETY: the symbol has the signature PKCS#11 gives it.
    let get: libloading::Symbol<'static, unsafe extern "C" fn(*mut CK_FUNCTION_LIST_PTR) -> CK_RV> =
        unsafe { library.get(b"C_GetFunctionList\0") }.map_err(|e| e.to_string())?;
    let mut list: CK_FUNCTION_LIST_PTR = std::ptr::null_mut();
    // SAFETY: `list` is a valid place for the module to write its list's address.
    let rv = unsafe { get(&mut list) };
    if rv != CKR_OK || list.is_null() {
        return Err(format!(
            "the real module's C_GetFunctionList answered {rv:#x}"
        ));
    }
    // SAFETY: the module returned a valid list, which lives as long as the module (forever).
    let real = unsafe { *list };
    let mut ours = real;
    ours.C_GetFunctionList = Some(C_GetFunctionList);
    ours.C_GetSlotList = Some(get_slot_list);
    ours.C_GetSlotInfo = Some(get_slot_info);
    ours.C_GetTokenInfo = Some(get_token_info);
    ours.C_GetMechanismList = Some(get_mechanism_list);
    ours.C_GetMechanismInfo = Some(get_mechanism_info);
    ours.C_OpenSession = Some(open_session);
    ours.C_CloseAllSessions = Some(close_all_sessions);
    ours.C_GetSessionInfo = Some(get_session_info);
    ours.C_Login = Some(login);
    ours.C_Logout = Some(logout);
    ours.C_FindObjectsInit = Some(find_objects_init);
    ours.C_FindObjects = Some(find_objects);
    ours.C_GetAttributeValue = Some(get_attribute_value);
    ours.C_CopyObject = Some(copy_object);
    ours.C_DestroyObject = Some(destroy_object);
    ours.C_GenerateKeyPair = Some(generate_key_pair);
    ours.C_SignInit = Some(sign_init);
    ours.C_Sign = Some(sign);
    Ok(Wrapper {
        real,
        ours,
        control: std::env::var_os("SCEAU_FAULT_CONTROL").map(PathBuf::from),
    })
}

/// The fault in force now. Reading the file at every call keeps the module stateless for the
/// test that drives it.
fn current() -> Control {
    let Some(wrapper) = wrapper() else {
        return Control::NONE;
    };
    let Some(path) = &wrapper.control else {
        return Control::NONE;
    };
    let control = match std::fs::read_to_string(path) {
        Ok(text) => Control::parse(&text).unwrap_or_else(|error| {
            eprintln!("sceau-fault-module: {}: {error}", path.display());
            Control::NONE
        }),
        Err(_) => Control::NONE,
    };
    let vanished = control.mode == Mode::Vanish;
    if VANISHED.swap(vanished, Ordering::SeqCst) && !vanished {
        // Back from a disappearance: the token comes back under other slot ids and object
        // handles.
        SLOT_OFFSET.fetch_add(SLOT_STEP, Ordering::SeqCst);
        HANDLE_OFFSET.fetch_add(HANDLE_SPAN, Ordering::SeqCst);
    }
    control
}

/// Whether this call meets the fault (a draw against its probability).
fn draw(control: &Control) -> bool {
    if control.probability >= 1.0 {
        return true;
    }
    // xorshift64: enough for spreading faults, no dependency.
    let mut x = RANDOM.load(Ordering::Relaxed);
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    RANDOM.store(x, Ordering::Relaxed);
    (x >> 11) as f64 / (1u64 << 53) as f64 <= control.probability
}

fn injected() {
    let count = INJECTED.fetch_add(1, Ordering::SeqCst) + 1;
    if let Some(path) = wrapper().and_then(|w| w.control.as_ref()) {
        let mut name = path.clone().into_os_string();
        name.push(".injected");
        let _ = std::fs::write(name, count.to_string());
    }
}

fn vanished() -> bool {
    current().mode == Mode::Vanish
}

/// The real module's slot id for the id the consumer gave, or None for an id of an earlier
/// appearance of the token.
fn real_slot(slot: CK_SLOT_ID) -> Option<CK_SLOT_ID> {
    slot.checked_sub(SLOT_OFFSET.load(Ordering::SeqCst))
}

/// The handle the consumer sees for the real module's `handle`.
fn seen(handle: CK_OBJECT_HANDLE) -> CK_OBJECT_HANDLE {
    handle.wrapping_add(HANDLE_OFFSET.load(Ordering::SeqCst))
}

/// The real module's handle for one the consumer gave, or None for a handle of an earlier
/// appearance of the token.
fn real_handle(handle: CK_OBJECT_HANDLE) -> Option<CK_OBJECT_HANDLE> {
    let real = handle.checked_sub(HANDLE_OFFSET.load(Ordering::SeqCst))?;
    (real < HANDLE_SPAN).then_some(real)
}

macro_rules! real {
    ($name:ident) => {
        match wrapper().and_then(|w| w.real.$name) {
            Some(function) => function,
            None => return CKR_GENERAL_ERROR,
        }
    };
}

/// # Safety
/// The PKCS#11 contract: `list` is valid for one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetFunctionList(list: CK_FUNCTION_LIST_PTR_PTR) -> CK_RV {
    if list.is_null() {
        return CKR_ARGUMENTS_BAD;
    }
    match WRAPPER.get_or_init(load) {
        Ok(wrapper) => {
            // SAFETY: `list` is non-NULL and valid for a write; our list lives in a static and
            // consumers only read through the pointer PKCS#11 makes mutable.
            unsafe { *list = &wrapper.ours as *const CK_FUNCTION_LIST as CK_FUNCTION_LIST_PTR };
            CKR_OK
        }
        Err(error) => {
            eprintln!("sceau-fault-module: {error}");
            CKR_GENERAL_ERROR
        }
    }
}

unsafe extern "C" fn get_slot_list(
    token_present: CK_BBOOL,
    slots: CK_SLOT_ID_PTR,
    count: CK_ULONG_PTR,
) -> CK_RV {
    let function = real!(C_GetSlotList);
    if count.is_null() {
        return CKR_ARGUMENTS_BAD;
    }
    if vanished() {
        // SAFETY: `count` is non-NULL.
        unsafe { *count = 0 };
        return CKR_OK;
    }
    // SAFETY: the consumer's arguments, forwarded.
    let rv = unsafe { function(token_present, slots, count) };
    if rv == CKR_OK && !slots.is_null() {
        let offset = SLOT_OFFSET.load(Ordering::SeqCst);
        // SAFETY: the module wrote `*count` ids into `slots`.
        let written = unsafe { std::slice::from_raw_parts_mut(slots, *count as usize) };
        for slot in written {
            *slot = slot.wrapping_add(offset);
        }
    }
    rv
}

/// Forwards a call about a slot, with the slot id translated; refused while the token is gone
/// and for ids of an earlier appearance.
macro_rules! slot_call {
    ($name:ident, $real:ident, ($($arg:ident: $ty:ty),*)) => {
        unsafe extern "C" fn $name(slot: CK_SLOT_ID, $($arg: $ty),*) -> CK_RV {
            let function = real!($real);
            if vanished() {
                return CKR_TOKEN_NOT_PRESENT;
            }
            let Some(slot) = real_slot(slot) else {
                return CKR_SLOT_ID_INVALID;
            };
            // SAFETY: the consumer's arguments, forwarded.
            unsafe { function(slot, $($arg),*) }
        }
    };
}

slot_call!(get_slot_info, C_GetSlotInfo, (info: CK_SLOT_INFO_PTR));
slot_call!(get_token_info, C_GetTokenInfo, (info: CK_TOKEN_INFO_PTR));
slot_call!(
    get_mechanism_list,
    C_GetMechanismList,
    (list: CK_MECHANISM_TYPE_PTR, count: CK_ULONG_PTR)
);
slot_call!(
    get_mechanism_info,
    C_GetMechanismInfo,
    (mechanism: CK_MECHANISM_TYPE, info: CK_MECHANISM_INFO_PTR)
);
slot_call!(
    open_session,
    C_OpenSession,
    (flags: CK_FLAGS, application: CK_VOID_PTR, notify: CK_NOTIFY, session: CK_SESSION_HANDLE_PTR)
);
slot_call!(close_all_sessions, C_CloseAllSessions, ());

unsafe extern "C" fn get_session_info(
    session: CK_SESSION_HANDLE,
    info: CK_SESSION_INFO_PTR,
) -> CK_RV {
    let function = real!(C_GetSessionInfo);
    if vanished() {
        return CKR_DEVICE_REMOVED;
    }
    // SAFETY: the consumer's arguments, forwarded.
    let rv = unsafe { function(session, info) };
    if rv == CKR_OK && !info.is_null() {
        // SAFETY: the module filled `*info`.
        unsafe {
            (*info).slotID = (*info)
                .slotID
                .wrapping_add(SLOT_OFFSET.load(Ordering::SeqCst))
        };
    }
    rv
}

/// Forwards a call on a session, refused while the token is gone (its sessions, login and
/// handles are gone with it, whatever the real module still holds).
macro_rules! session_call {
    ($name:ident, $real:ident, ($($arg:ident: $ty:ty),*)) => {
        unsafe extern "C" fn $name(session: CK_SESSION_HANDLE, $($arg: $ty),*) -> CK_RV {
            let function = real!($real);
            if vanished() {
                return CKR_DEVICE_REMOVED;
            }
            // SAFETY: the consumer's arguments, forwarded.
            unsafe { function(session, $($arg),*) }
        }
    };
}

session_call!(
    login,
    C_Login,
    (user: CK_USER_TYPE, pin: CK_UTF8CHAR_PTR, pin_len: CK_ULONG)
);
session_call!(logout, C_Logout, ());
session_call!(
    find_objects_init,
    C_FindObjectsInit,
    (template: CK_ATTRIBUTE_PTR, count: CK_ULONG)
);

/// Renumbers the `count` handles the module wrote at `handles` as the consumer sees them.
///
/// # Safety
/// `handles` is NULL or valid for `count` handles.
unsafe fn renumber(handles: CK_OBJECT_HANDLE_PTR, count: usize) {
    if handles.is_null() {
        return;
    }
    // SAFETY: the caller's promise.
    for handle in unsafe { std::slice::from_raw_parts_mut(handles, count) } {
        *handle = seen(*handle);
    }
}

/// Forwards a call on a session about one object: refused while the token is gone, the
/// handle translated (one of an earlier appearance names nothing), and handles the module
/// writes at the pointers `$out` renumbered.
macro_rules! object_call {
    ($name:ident, $real:ident, ($($arg:ident: $ty:ty),*) -> [$($out:ident),*]) => {
        unsafe extern "C" fn $name(
            session: CK_SESSION_HANDLE,
            object: CK_OBJECT_HANDLE,
            $($arg: $ty),*
        ) -> CK_RV {
            let function = real!($real);
            if vanished() {
                return CKR_DEVICE_REMOVED;
            }
            let Some(object) = real_handle(object) else {
                return CKR_OBJECT_HANDLE_INVALID;
            };
            // SAFETY: the consumer's arguments, forwarded.
            let rv = unsafe { function(session, object, $($arg),*) };
            if rv == CKR_OK {
                // SAFETY: on success the module wrote one handle at each output pointer.
                $(unsafe { renumber($out, 1) };)*
            }
            rv
        }
    };
}

object_call!(
    get_attribute_value,
    C_GetAttributeValue,
    (template: CK_ATTRIBUTE_PTR, count: CK_ULONG) -> []
);
object_call!(
    copy_object,
    C_CopyObject,
    (template: CK_ATTRIBUTE_PTR, count: CK_ULONG, copy: CK_OBJECT_HANDLE_PTR) -> [copy]
);
object_call!(destroy_object, C_DestroyObject, () -> []);

unsafe extern "C" fn find_objects(
    session: CK_SESSION_HANDLE,
    objects: CK_OBJECT_HANDLE_PTR,
    max: CK_ULONG,
    found: CK_ULONG_PTR,
) -> CK_RV {
    let function = real!(C_FindObjects);
    if vanished() {
        return CKR_DEVICE_REMOVED;
    }
    // SAFETY: the consumer's arguments, forwarded.
    let rv = unsafe { function(session, objects, max, found) };
    if rv == CKR_OK && !found.is_null() {
        // SAFETY: the module wrote `*found` (at most `max`) handles at `objects`.
        unsafe { renumber(objects, (*found).min(max) as usize) };
    }
    rv
}

unsafe extern "C" fn generate_key_pair(
    session: CK_SESSION_HANDLE,
    mechanism: CK_MECHANISM_PTR,
    public_template: CK_ATTRIBUTE_PTR,
    public_count: CK_ULONG,
    private_template: CK_ATTRIBUTE_PTR,
    private_count: CK_ULONG,
    public_key: CK_OBJECT_HANDLE_PTR,
    private_key: CK_OBJECT_HANDLE_PTR,
) -> CK_RV {
    let function = real!(C_GenerateKeyPair);
    if vanished() {
        return CKR_DEVICE_REMOVED;
    }
    // SAFETY: the consumer's arguments, forwarded.
    let rv = unsafe {
        function(
            session,
            mechanism,
            public_template,
            public_count,
            private_template,
            private_count,
            public_key,
            private_key,
        )
    };
    if rv == CKR_OK {
        // SAFETY: on success the module wrote one handle at each.
        unsafe {
            renumber(public_key, 1);
            renumber(private_key, 1);
        }
    }
    rv
}

unsafe extern "C" fn sign_init(
    session: CK_SESSION_HANDLE,
    mechanism: CK_MECHANISM_PTR,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    let function = real!(C_SignInit);
    let control = current();
    if control.mode == Mode::Vanish {
        return CKR_DEVICE_REMOVED;
    }
    // A handle of an earlier appearance names nothing, decoy or not.
    let Some(key) = real_handle(key) else {
        return CKR_OBJECT_HANDLE_INVALID;
    };
    match control.mode {
        Mode::WrongKey if draw(&control) => match find_decoy(session) {
            Some(decoy) => {
                injected();
                // SAFETY: the consumer's arguments, with another key of the same token.
                return unsafe { function(session, mechanism, decoy) };
            }
            None => eprintln!(
                "sceau-fault-module: wrong_key, but no private key labelled sceau-fault-decoy: not injected"
            ),
        },
        _ => {}
    }
    // SAFETY: the consumer's arguments, forwarded (the key's handle translated).
    unsafe { function(session, mechanism, key) }
}

/// The private key labelled `sceau-fault-decoy`, searched in the consumer's session.
fn find_decoy(session: CK_SESSION_HANDLE) -> Option<CK_OBJECT_HANDLE> {
    let wrapper = wrapper()?;
    let (init, find, last) = (
        wrapper.real.C_FindObjectsInit?,
        wrapper.real.C_FindObjects?,
        wrapper.real.C_FindObjectsFinal?,
    );
    let mut class: CK_OBJECT_CLASS = CKO_PRIVATE_KEY;
    let mut label = DECOY_LABEL.to_vec();
    let mut template = [
        CK_ATTRIBUTE {
            type_: CKA_CLASS,
            pValue: &mut class as *mut CK_OBJECT_CLASS as CK_VOID_PTR,
            ulValueLen: std::mem::size_of::<CK_OBJECT_CLASS>() as CK_ULONG,
        },
        CK_ATTRIBUTE {
            type_: CKA_LABEL,
            pValue: label.as_mut_ptr() as CK_VOID_PTR,
            ulValueLen: label.len() as CK_ULONG,
        },
    ];
    let mut handle: CK_OBJECT_HANDLE = 0;
    let mut found: CK_ULONG = 0;
    // SAFETY: a search in the consumer's session with a template and outputs that live across
    // the three calls.
    unsafe {
        if init(session, template.as_mut_ptr(), template.len() as CK_ULONG) != CKR_OK {
            return None;
        }
        let rv = find(session, &mut handle, 1, &mut found);
        last(session);
        (rv == CKR_OK && found == 1).then_some(handle)
    }
}

unsafe extern "C" fn sign(
    session: CK_SESSION_HANDLE,
    data: CK_BYTE_PTR,
    data_len: CK_ULONG,
    signature: CK_BYTE_PTR,
    signature_len: CK_ULONG_PTR,
) -> CK_RV {
    let function = real!(C_Sign);
    // A length query (no output buffer) never meets a fault: the operation goes on.
    if signature.is_null() {
        // SAFETY: the consumer's arguments, forwarded.
        return unsafe { function(session, data, data_len, signature, signature_len) };
    }
    let control = current();
    if control.mode == Mode::Delay && draw(&control) {
        injected();
        std::thread::sleep(control.delay);
    }
    // SAFETY: the consumer's arguments, forwarded. Always called, so that the token's
    // operation ends whatever is answered.
    let rv = unsafe { function(session, data, data_len, signature, signature_len) };
    // Only a signature that was made is turned into a fault: an answer such as
    // CKR_BUFFER_TOO_SMALL leaves the operation active, and must reach the caller as it is.
    if rv != CKR_OK {
        return rv;
    }
    match control.mode {
        Mode::Vanish => {
            injected();
            CKR_DEVICE_REMOVED
        }
        Mode::Error(error) if draw(&control) => {
            injected();
            error
        }
        _ => rv,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_control_line_reads_mode_probability_and_delay() {
        assert_eq!(Control::parse("").unwrap().mode, Mode::None);
        let c = Control::parse("device_error 0.25\n").unwrap();
        assert_eq!(c.mode, Mode::Error(CKR_DEVICE_ERROR));
        assert_eq!(c.probability, 0.25);
        let c = Control::parse("hang 1 3000").unwrap();
        assert_eq!((c.mode, c.delay), (Mode::Delay, Duration::from_secs(3)));
        assert_eq!(Control::parse("vanish").unwrap().probability, 1.0);
        assert!(Control::parse("explode").is_err());
        assert!(Control::parse("device_error 2").is_err());
        assert!(Control::parse("delay 1 soon").is_err());
    }

    #[test]
    fn a_handle_of_an_earlier_appearance_names_nothing() {
        let before = seen(7);
        assert_eq!(real_handle(before), Some(7));
        // The token comes back: what the consumer held names nothing, the same object has a
        // new number, and no number of the new span reaches beyond it.
        HANDLE_OFFSET.fetch_add(HANDLE_SPAN, Ordering::SeqCst);
        assert_eq!(real_handle(before), None);
        assert_ne!(seen(7), before);
        assert_eq!(real_handle(seen(7)), Some(7));
        assert_eq!(real_handle(seen(0) + HANDLE_SPAN), None);
    }
}
