//! `C_Sign` called directly, for keys that need a login before each signature.
//!
//! A key with `CKA_ALWAYS_AUTHENTICATE` signs only after `C_SignInit`, then `C_Login` as
//! `CKU_CONTEXT_SPECIFIC`, then `C_Sign` (PKCS#11 2.40 §4.9, §5.6). The `cryptoki` crate offers
//! `C_SignInit` and `C_Login` alone, but its single-part `sign` calls `C_SignInit` itself, and
//! raw `CKM_ECDSA` (how sceau signs with EC keys, as SoftHSM2 has no hash-and-sign ECDSA) has
//! no multi-part form. So the module's own `C_Sign` is taken from its function list and called
//! on the session `cryptoki` opened.
//!
//! The second `unsafe` boundary of the crate, reviewed:
//! - the library is opened again by the path the pool loaded (the dynamic loader hands back the
//!   module already in the process, and this handle keeps it loaded for as long as the pool
//!   lives, across finalisations: the function pointer stays valid);
//! - `C_GetFunctionList` writes one pointer to a table the module owns and never frees while
//!   loaded; `C_Sign` is copied out of it once;
//! - `C_Sign` reads `data` (length given) and writes at most `*len` octets to `out` (a buffer
//!   of that length), then the signature's length to `len`.

use cryptoki::context::Function;
use cryptoki::error::{Error as CkError, Rv};
use cryptoki::session::Session;
use cryptoki_sys::{CK_BYTE_PTR, CK_FUNCTION_LIST_PTR, CK_RV, CK_SESSION_HANDLE, CK_ULONG};

/// `C_Sign`'s signature in PKCS#11.
type SignFn = unsafe extern "C" fn(
    CK_SESSION_HANDLE,
    CK_BYTE_PTR,
    CK_ULONG,
    CK_BYTE_PTR,
    *mut CK_ULONG,
) -> CK_RV;

/// Large enough for any signature sceau makes (RSA-4096: 512 octets).
const SIGNATURE_BUFFER: usize = 1024;

/// The module's `C_Sign`, and the handle that keeps the module loaded.
pub(super) struct SingleSign {
    _library: libloading::Library,
    sign: SignFn,
}

impl SingleSign {
    /// Looks up `C_Sign` in the module at `path`.
    #[allow(unsafe_code)]
    pub(super) fn load(path: &std::path::Path) -> Result<Self, String> {
        // SAFETY: see the module's comment; the module is the one the pool already loaded and
        // initialised, so loading it runs no initialiser of its own again.
        let library = unsafe { libloading::Library::new(path) }.map_err(|e| e.to_string())?;
        let mut list: CK_FUNCTION_LIST_PTR = std::ptr::null_mut();
        // SAFETY: C_GetFunctionList has this signature in every PKCS#11 module; it writes the
        // table's address into `list`.
        let rv = unsafe {
            let get: libloading::Symbol<
                '_,
                unsafe extern "C" fn(*mut CK_FUNCTION_LIST_PTR) -> CK_RV,
            > = library
                .get(b"C_GetFunctionList\0")
                .map_err(|e| e.to_string())?;
            get(&mut list)
        };
        if rv != cryptoki_sys::CKR_OK || list.is_null() {
            return Err(format!("C_GetFunctionList answered {rv:#x}"));
        }
        // SAFETY: `list` is the module's table (non-null, checked), valid while it is loaded.
        let sign = unsafe { (*list).C_Sign }.ok_or("the module has no C_Sign")?;
        Ok(Self {
            _library: library,
            sign,
        })
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
        out.truncate(usize::try_from(len)?.min(SIGNATURE_BUFFER));
        Ok(out)
    }
}
