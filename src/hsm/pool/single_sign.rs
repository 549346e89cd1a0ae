//! `C_Sign` called directly, for keys that need a login before each signature.
//!
//! A key with `CKA_ALWAYS_AUTHENTICATE` signs only after `C_SignInit`, then `C_Login` as
//! `CKU_CONTEXT_SPECIFIC`, then `C_Sign` (PKCS#11 2.40 §4.9, §5.6). The `cryptoki` crate offers
//! `C_SignInit` and `C_Login` alone, but its single-part `sign` calls `C_SignInit` itself, and
//! raw `CKM_ECDSA` (how sceau signs with EC keys, as SoftHSM2 has no hash-and-sign ECDSA) has
//! no multi-part form. So the module's own `C_Sign` is taken from its function table and called
//! on the session `cryptoki` opened.
//!
//! The second `unsafe` boundary of the crate, reviewed:
//! - the library is opened again by the path the pool loaded (the dynamic loader hands back the
//!   module already in the process, and this handle keeps it loaded for as long as the pool
//!   lives, across finalisations: the function pointers stay valid);
//! - the table is found as `cryptoki` finds its own: `C_GetInterface` (PKCS#11 3.x, whose
//!   table begins with the 2.40 one's fields, in order) when the module has it, else
//!   `C_GetFunctionList`; each writes one pointer to a table the module owns and never frees
//!   while loaded; `C_Sign` and `C_GetSessionInfo` are copied out of it once;
//! - a module that hands each caller a table of its own (a proxy) would not know the sessions
//!   `cryptoki` opened: [`SingleSign::check`] asks the table about one, and a table that does
//!   not know it is refused when the key is loaded;
//! - `C_Sign` reads `data` (length given) and writes at most `*len` octets to `out` (a buffer
//!   of that length), then the signature's length to `len`.

use cryptoki::context::Function;
use cryptoki::error::{Error as CkError, Rv, RvError};
use cryptoki::session::Session;
use cryptoki_sys::{
    CK_BYTE_PTR, CK_FLAGS, CK_FUNCTION_LIST, CK_FUNCTION_LIST_PTR, CK_INTERFACE, CK_RV,
    CK_SESSION_HANDLE, CK_SESSION_INFO, CK_ULONG, CK_UTF8CHAR, CK_VERSION,
};

/// `C_Sign`'s signature in PKCS#11.
type SignFn = unsafe extern "C" fn(
    CK_SESSION_HANDLE,
    CK_BYTE_PTR,
    CK_ULONG,
    CK_BYTE_PTR,
    *mut CK_ULONG,
) -> CK_RV;

/// `C_GetSessionInfo`'s signature in PKCS#11.
type SessionInfoFn = unsafe extern "C" fn(CK_SESSION_HANDLE, *mut CK_SESSION_INFO) -> CK_RV;

/// `C_GetInterface`'s signature in PKCS#11 3.x.
type GetInterfaceFn = unsafe extern "C" fn(
    *mut CK_UTF8CHAR,
    *mut CK_VERSION,
    *mut *mut CK_INTERFACE,
    CK_FLAGS,
) -> CK_RV;

/// `C_GetFunctionList`'s signature in PKCS#11.
type GetFunctionListFn = unsafe extern "C" fn(*mut CK_FUNCTION_LIST_PTR) -> CK_RV;

/// Large enough for any signature sceau makes (RSA-4096: 512 octets; RSA-8192 would fit).
const SIGNATURE_BUFFER: usize = 1024;

/// The module's `C_Sign` (and `C_GetSessionInfo`, to check the table), and the handle that
/// keeps the module loaded.
pub(super) struct SingleSign {
    _library: libloading::Library,
    sign: SignFn,
    session_info: SessionInfoFn,
    /// Held across `C_SignInit`, the context-specific login and `C_Sign`.
    one_at_a_time: std::sync::Mutex<()>,
}

impl SingleSign {
    /// Looks up `C_Sign` in the module at `path`.
    #[allow(unsafe_code)]
    pub(super) fn load(path: &std::path::Path) -> Result<Self, String> {
        // SAFETY: see the module's comment; the module is the one the pool already loaded and
        // initialised, so loading it runs no initialiser of its own again.
        let library = unsafe { libloading::Library::new(path) }.map_err(|e| e.to_string())?;
        let list = function_list(&library)?;
        // SAFETY: `list` is the module's table (non-null, checked), valid while it is loaded.
        let (sign, session_info) = unsafe { ((*list).C_Sign, (*list).C_GetSessionInfo) };
        Ok(Self {
            _library: library,
            sign: sign.ok_or("the module has no C_Sign")?,
            session_info: session_info.ok_or("the module has no C_GetSessionInfo")?,
            one_at_a_time: std::sync::Mutex::new(()),
        })
    }

    /// One per-signature login at a time on this module: on tokens where that login
    /// authenticates the whole device (smart-card HSMs), two interleaved logins spend each
    /// other's. Held from `C_SignInit` to `C_Sign`.
    pub(super) fn one_at_a_time(&self) -> std::sync::MutexGuard<'_, ()> {
        self.one_at_a_time
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether this table knows `session` (which `cryptoki` opened) on `slot`: a module that
    /// gave this table to another instance of itself does not.
    #[allow(unsafe_code)]
    pub(super) fn check(&self, session: &Session, slot: CK_ULONG) -> Result<(), String> {
        // SAFETY: all-zero is a valid CK_SESSION_INFO (integers only); the module fills it.
        let mut info: CK_SESSION_INFO = unsafe { std::mem::zeroed() };
        // SAFETY: a session handle and a place for its information.
        let rv = unsafe { (self.session_info)(session.handle(), &mut info) };
        if rv != cryptoki_sys::CKR_OK || info.slotID != slot {
            return Err(format!(
                "the module's C_Sign does not belong to the instance sceau opened (C_GetSessionInfo answered {rv:#x})"
            ));
        }
        Ok(())
    }

    /// `C_Sign` on `session`, whose signing operation `C_SignInit` started (and a context-
    /// specific login allowed).
    #[allow(unsafe_code)]
    pub(super) fn sign(&self, session: &Session, data: &[u8]) -> Result<Vec<u8>, CkError> {
        let mut out = vec![0u8; SIGNATURE_BUFFER];
        let mut len = out.len() as CK_ULONG;
        let data_len = CK_ULONG::try_from(data.len())?;
        // SAFETY: see the module's comment; the module reads `data` and writes within `out`.
        let rv = unsafe {
            (self.sign)(
                session.handle(),
                data.as_ptr() as CK_BYTE_PTR,
                data_len,
                out.as_mut_ptr(),
                &mut len,
            )
        };
        Rv::from(rv).into_result(Function::Sign)?;
        let len = usize::try_from(len)?;
        if len > out.len() {
            // The module claims more than the buffer holds: nothing it wrote is trusted.
            return Err(CkError::Pkcs11(RvError::GeneralError, Function::Sign));
        }
        out.truncate(len);
        Ok(out)
    }
}

/// The module's default function table, found as `cryptoki` finds its own.
#[allow(unsafe_code)]
fn function_list(library: &libloading::Library) -> Result<*const CK_FUNCTION_LIST, String> {
    // SAFETY: C_GetInterface has this signature in PKCS#11 3.x.
    if let Ok(get) = unsafe { library.get::<GetInterfaceFn>(b"C_GetInterface\0") } {
        let mut interface: *mut CK_INTERFACE = std::ptr::null_mut();
        // SAFETY: with no name and no version, the module writes the address of its default
        // interface into `interface`.
        let rv = unsafe {
            get(
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                &mut interface,
                0,
            )
        };
        if rv == cryptoki_sys::CKR_OK && !interface.is_null() {
            // SAFETY: the module's interface (non-null, checked), valid while it is loaded.
            let list = unsafe { (*interface).pFunctionList } as *const CK_FUNCTION_LIST;
            // SAFETY: a non-null table begins with its version, then the 2.40 functions.
            if !list.is_null() && unsafe { (*list).version.major } >= 3 {
                return Ok(list);
            }
        }
    }
    let mut list: CK_FUNCTION_LIST_PTR = std::ptr::null_mut();
    // SAFETY: C_GetFunctionList has this signature in every PKCS#11 module; it writes the
    // table's address into `list`.
    let rv = unsafe {
        let get = library
            .get::<GetFunctionListFn>(b"C_GetFunctionList\0")
            .map_err(|e| e.to_string())?;
        get(&mut list)
    };
    if rv != cryptoki_sys::CKR_OK || list.is_null() {
        return Err(format!("C_GetFunctionList answered {rv:#x}"));
    }
    Ok(list)
}
