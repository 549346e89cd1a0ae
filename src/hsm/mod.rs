//! The HSM: a PKCS#11 module reached through cryptoki.
//!
//! A pool of sessions, each owned by its own thread (`pool`), takes jobs from a bounded queue,
//! so that the async side never blocks on PKCS#11 and a burst cannot queue without limit. Keys
//! are generated sensitive and non-extractable, found by label, and handed out as
//! [`SigningKey`] capabilities that can sign but never reveal the key. A session or device error
//! is returned as a typed [`HsmError`] and the pool reconnects (re-opening the module and logging
//! in again) on the next job.
//!
//! SoftHSM2 notes (from this machine): initialise with OS locking, or concurrent sessions fail;
//! no CKM_ECDSA_SHA384, so ECDSA hashes in software and signs with CKM_ECDSA; ECDSA output is
//! raw r || s; CKA_EC_POINT is wrapped in an OCTET STRING; slots change after C_InitToken, so
//! tokens are found by label.

mod pin;
mod pool;

use core::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use spki::SubjectPublicKeyInfoOwned;

pub use pin::{Pin, PinError, PinSlot, PinSource};
pub use pool::HsmStatus;

use crate::x509::keys::Curve;
use crate::x509::sigalg::{self, SignatureScheme};

/// How to reach the token.
#[derive(Clone, Debug)]
pub struct HsmSettings {
    /// Path of the PKCS#11 module (e.g. `/usr/lib/softhsm/libsofthsm2.so`).
    pub module: PathBuf,
    pub token_label: String,
    /// The token's serial number (CK_TOKEN_INFO.serialNumber, blanks trimmed), when the label
    /// alone could name more than one token: with it, a token of the right label but another
    /// serial is not used. Slot ids are never configured: modules renumber them.
    pub token_serial: Option<String>,
    /// What the module's `C_Initialize` reads in `pReserved`, for modules that take a
    /// configuration there (NSS softokn: `configdir='sql:/path' ...`); `None` for the others.
    pub module_parameters: Option<String>,
    pub pin: PinSource,
    /// Number of sessions, each on its own thread.
    pub sessions: usize,
    /// Jobs that may wait for a session before callers get [`HsmError::Busy`].
    pub queue_capacity: usize,
}

/// The kinds of key sceau generates (docs/design.md#common-rules, CA and responder keys).
#[derive(Copy, Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeySpec {
    P256,
    P384,
    Rsa3072,
    Rsa4096,
}

impl KeySpec {
    /// The signature scheme a key of this kind signs with. RSA keys use PKCS#1 v1.5 unless
    /// `rsa_pss` is set.
    pub fn scheme(self, rsa_pss: bool) -> SignatureScheme {
        match (self, rsa_pss) {
            (KeySpec::P256, _) => SignatureScheme::EcdsaP256Sha256,
            (KeySpec::P384, _) => SignatureScheme::EcdsaP384Sha384,
            (KeySpec::Rsa3072 | KeySpec::Rsa4096, false) => SignatureScheme::RsaPkcs1Sha256,
            (KeySpec::Rsa3072 | KeySpec::Rsa4096, true) => SignatureScheme::RsaPssSha256,
        }
    }

    fn curve(self) -> Option<Curve> {
        match self {
            KeySpec::P256 => Some(Curve::P256),
            KeySpec::P384 => Some(Curve::P384),
            KeySpec::Rsa3072 | KeySpec::Rsa4096 => None,
        }
    }

    fn rsa_bits(self) -> Option<u64> {
        match self {
            KeySpec::Rsa3072 => Some(3072),
            KeySpec::Rsa4096 => Some(4096),
            KeySpec::P256 | KeySpec::P384 => None,
        }
    }
}

impl fmt::Display for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeySpec::P256 => "EC P-256",
            KeySpec::P384 => "EC P-384",
            KeySpec::Rsa3072 => "RSA-3072",
            KeySpec::Rsa4096 => "RSA-4096",
        })
    }
}

/// A handle on the token: cheap to clone, shared by every part of the CA.
#[derive(Clone)]
pub struct Hsm {
    pool: Arc<pool::Pool>,
}

impl fmt::Debug for Hsm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hsm")
            .field("status", &self.status())
            .finish()
    }
}

impl Hsm {
    /// Starts the session threads and logs in, so that a wrong module, token or PIN is reported
    /// now rather than at the first signature.
    pub fn open(settings: HsmSettings) -> Result<Self, HsmError> {
        let pool = pool::Pool::start(settings)?;
        let hsm = Self {
            pool: Arc::new(pool),
        };
        hsm.pool
            .run_blocking(|worker| worker.session().map(|_| ()))?;
        Ok(hsm)
    }

    /// Generates a key pair on the token: private key sensitive, non-extractable, sign only.
    /// Refuses a label that is already used.
    pub fn generate_key(
        &self,
        label: &str,
        spec: KeySpec,
    ) -> Result<SubjectPublicKeyInfoOwned, HsmError> {
        let label = label.to_owned();
        self.pool
            .run_blocking(move |worker| worker.generate_key_pair(&label, spec))
    }

    /// Marks the token unavailable because it lacks a key it should hold: the next call
    /// reconnects, finalising and re-initialising the module.
    pub fn mark_unavailable(&self, reason: &str) {
        self.pool.mark_unavailable(reason);
    }

    /// Destroys the key pair `label` on the token (its private and public objects): how many
    /// objects were destroyed.
    pub fn destroy_key(&self, label: &str) -> Result<usize, HsmError> {
        let label = label.to_owned();
        self.pool
            .run_blocking(move |worker| worker.destroy_key_pair(&label))
    }

    /// The shortest and longest PIN the token accepts.
    pub fn pin_length_range(&self) -> Result<(usize, usize), HsmError> {
        self.pool.run_blocking(|worker| worker.pin_length_range())
    }

    /// Sets the token's user PIN to `new`, from the PIN of the configured source (C_SetPIN on
    /// a logged-in session). Sessions already open stay logged in; a reconnection logs in
    /// with what the source then gives, so the caller puts `new` there.
    pub fn change_pin(&self, new: Pin) -> Result<(), HsmError> {
        self.pool
            .run_blocking(move |worker| worker.change_pin(&new))
    }

    /// Whether a private key with this label exists.
    pub fn has_key(&self, label: &str) -> Result<bool, HsmError> {
        let label = label.to_owned();
        self.pool
            .run_blocking(move |worker| worker.has_private_key(&label))
    }

    /// The certificates stored on the token (DER), in the order it lists them.
    pub fn certificates(&self) -> Result<Vec<Vec<u8>>, HsmError> {
        self.pool.run_blocking(|worker| worker.certificates())
    }

    /// The labels of the token's public keys that are `public_key` (how a card's key is found
    /// from its certificate).
    pub fn labels_of_key(
        &self,
        public_key: &SubjectPublicKeyInfoOwned,
    ) -> Result<Vec<String>, HsmError> {
        let wanted = public_key.clone();
        self.pool
            .run_blocking(move |worker| worker.labels_of_key(&wanted))
    }

    /// A signing capability for the key `label`, after checking that the private key exists,
    /// cannot be extracted, and suits `scheme`.
    pub fn signing_key(
        &self,
        label: &str,
        scheme: SignatureScheme,
    ) -> Result<SigningKey, HsmError> {
        let owned = label.to_owned();
        let (public_key, id, login_per_signature) = self
            .pool
            .run_blocking(move |worker| worker.check_signing_key(&owned))?;
        let kind = crate::x509::keys::describe(&public_key)
            .map_err(|e| HsmError::PublicKey(e.to_string()))?;
        let suits = match (scheme, kind) {
            (
                SignatureScheme::EcdsaP256Sha256,
                crate::x509::keys::PublicKeyKind::Ec(Curve::P256),
            ) => true,
            (
                SignatureScheme::EcdsaP384Sha384,
                crate::x509::keys::PublicKeyKind::Ec(Curve::P384),
            ) => true,
            (s, crate::x509::keys::PublicKeyKind::Rsa { .. }) => !s.is_ecdsa(),
            _ => false,
        };
        if !suits {
            return Err(HsmError::KeyMismatch {
                label: label.to_owned(),
                key: kind.to_string(),
                scheme,
            });
        }
        let key = SigningKey {
            inner: Arc::new(SigningKeyInner {
                pool: self.pool.clone(),
                label: label.to_owned(),
                scheme,
                public_key,
                id,
                session_copy: false,
                login_per_signature,
            }),
        };
        // The public key object is only a claim (a program sharing the token may replace it, and
        // the audit key's is adopted as read): a fresh challenge signed by the private key and
        // checked with that public key proves they are a pair.
        let mut challenge = [0u8; 32];
        aws_lc_rs::rand::SecureRandom::fill(&aws_lc_rs::rand::SystemRandom::new(), &mut challenge)
            .map_err(|_| HsmError::Pkcs11("no randomness for the key's challenge".into()))?;
        let signature = key.sign(&challenge)?;
        key.verify(&challenge, &signature)
            .map_err(|_| HsmError::KeyAttributes {
                label: label.to_owned(),
                problem: "a challenge signed by the private key does not verify with the public key object of its label: they are not a pair".into(),
            })?;
        Ok(key)
    }

    /// Health and queue depth, for `/healthz` and metrics.
    pub fn status(&self) -> HsmStatus {
        self.pool.status()
    }
}

/// A private key in the HSM, usable to sign and nothing else.
#[derive(Clone)]
pub struct SigningKey {
    inner: Arc<SigningKeyInner>,
}

struct SigningKeyInner {
    pool: Arc<pool::Pool>,
    label: String,
    scheme: SignatureScheme,
    public_key: SubjectPublicKeyInfoOwned,
    /// CKA_ID of the key pair, checked at load and at every look-up of the key.
    id: Vec<u8>,
    session_copy: bool,
    /// The key has `CKA_ALWAYS_AUTHENTICATE`: a context-specific login before each signature.
    login_per_signature: bool,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("label", &self.inner.label)
            .field("scheme", &self.inner.scheme)
            .finish()
    }
}

impl SigningKey {
    pub fn label(&self) -> &str {
        &self.inner.label
    }

    pub fn scheme(&self) -> SignatureScheme {
        self.inner.scheme
    }

    pub fn public_key(&self) -> &SubjectPublicKeyInfoOwned {
        &self.inner.public_key
    }

    /// The same key, used through an in-memory copy in each HSM session: for the keys that sign
    /// at request rate (the OCSP responders' live and pre-signed responses). SoftHSM2 reads a
    /// token object's attributes from its files, with locks and system calls, on every
    /// C_SignInit; a session object lives in memory. The copy (C_CopyObject with CKA_TOKEN false) stays
    /// sensitive and non-extractable, is made inside the token, and disappears with its
    /// session; a token that refuses copies signs with the token object. CA keys are never
    /// copied.
    pub fn session_copy(&self) -> SigningKey {
        SigningKey {
            inner: Arc::new(SigningKeyInner {
                pool: self.inner.pool.clone(),
                label: self.inner.label.clone(),
                scheme: self.inner.scheme,
                public_key: self.inner.public_key.clone(),
                id: self.inner.id.clone(),
                session_copy: true,
                login_per_signature: self.inner.login_per_signature,
            }),
        }
    }

    /// Whether the token is connected (the last call did not find it gone).
    pub fn available(&self) -> bool {
        self.inner.pool.status().available
    }

    /// Whether the token answers and holds this key now: a real PKCS#11 call, where
    /// [`SigningKey::available`] reports the last known state (a token that went away since
    /// the last call still looks available). Asked before committing a change that needs the
    /// key right after (a revocation's OCSP responses). Blocking.
    pub fn probe(&self) -> bool {
        let label = self.inner.label.clone();
        match self
            .inner
            .pool
            .run_blocking(move |worker| worker.has_private_key(&label))
        {
            Ok(true) => true,
            Ok(false) => {
                self.inner.pool.mark_unavailable(&format!(
                    "the key {:?} is not on the token",
                    self.inner.label
                ));
                false
            }
            Err(_) => false,
        }
    }

    /// Signs `message` and returns the signature as X.509 carries it (DER Ecdsa-Sig-Value for
    /// ECDSA, the raw octets for RSA). Blocks until a session is free.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, HsmError> {
        let job = self.prepare(message);
        self.inner.pool.run_blocking(move |worker| job.run(worker))
    }

    /// [`SigningKey::sign`] for async callers: waits without blocking the runtime.
    pub async fn sign_async(&self, message: &[u8]) -> Result<Vec<u8>, HsmError> {
        let job = self.prepare(message);
        self.inner
            .pool
            .run_async(move |worker| job.run(worker))
            .await
    }

    /// [`SigningKey::sign_async`], with the signature checked on the HSM session thread that
    /// made it: a mass re-signing (a responder renewal re-signs every response) never spends
    /// the runtime's threads, which answer OCSP, on verification.
    pub async fn sign_verified_async(&self, message: &[u8]) -> Result<Vec<u8>, HsmError> {
        let job = self.prepare(message);
        let key = self.clone();
        let message = message.to_vec();
        self.inner
            .pool
            .run_async(move |worker| {
                let signature = job.run(worker)?;
                key.verify(&message, &signature)?;
                Ok(signature)
            })
            .await
    }

    fn prepare(&self, message: &[u8]) -> pool::SignJob {
        let scheme = self.inner.scheme;
        // SoftHSM2 2.6 has no CKM_ECDSA_SHA384: ECDSA hashes here and signs the digest.
        let data = if scheme.is_ecdsa() {
            scheme.hash().digest(message)
        } else {
            message.to_vec()
        };
        pool::SignJob {
            label: self.inner.label.clone(),
            scheme,
            id: self.inner.id.clone(),
            data,
            session_copy: self.inner.session_copy,
            login_per_signature: self.inner.login_per_signature,
        }
    }

    /// Checks a signature this key made (the CA checks every HSM signature before using it).
    /// A signature that does not verify means the token signed with something else than the key
    /// checked at load: the connection is dropped, so that the next call resets the module and
    /// looks every key up again (no cached handle survives).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), HsmError> {
        let algorithm = self
            .inner
            .scheme
            .algorithm_identifier()
            .map_err(|e| HsmError::PublicKey(e.to_string()))?;
        sigalg::verify(&self.inner.public_key, &algorithm, message, signature).map_err(|e| {
            self.inner.pool.mark_unavailable(&format!(
                "a signature by the key {:?} did not verify",
                self.inner.label
            ));
            HsmError::BadSignature(e.to_string())
        })
    }
}

/// Initialises a PKCS#11 module loaded with cryptoki as sceau's pool does: `C_Initialize` with
/// OS locking and `parameters` (`[hsm] module_parameters`) in `pReserved`; a module this
/// process already initialised is fine. For tools that call the module directly beside
/// sceau (benches/issuance.rs's raw C_Sign reference).
pub fn initialize_module(
    context: &cryptoki::context::Pkcs11,
    parameters: Option<&str>,
) -> Result<(), HsmError> {
    pool::initialize(context, parameters)
}

/// What went wrong with the HSM. Never contains the PIN.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HsmError {
    #[error("cannot load the PKCS#11 module {}: {reason}", path.display())]
    Module { path: PathBuf, reason: String },
    #[error(
        "no token labelled {label:?} (are the module, its module_parameters or SOFTHSM2_CONF right? is the token there?)"
    )]
    TokenNotFound { label: String },
    #[error(
        "more than one token is labelled {label:?} (serial numbers {serials}): set [hsm] token_serial to the one to use"
    )]
    TokenAmbiguous { label: String, serials: String },
    #[error("the token labelled {label:?} has serial number {found:?}, not {expected:?}")]
    TokenSerialMismatch {
        label: String,
        expected: String,
        found: String,
    },
    #[error("reading the PIN: {0}")]
    Pin(#[from] PinError),
    #[error(
        "the token refused the PIN (retrying after {retry_after_secs} s, to avoid locking the token)"
    )]
    PinIncorrect { retry_after_secs: u64 },
    #[error("the token's user PIN is locked")]
    PinLocked,
    /// C_SetPIN refused by the token itself (the new PIN's length or characters, or the old
    /// PIN wrong): the PIN is unchanged.
    #[error("the token refused the PIN change: {0}")]
    PinRefused(String),
    #[error("no private key labelled {label:?} on the token")]
    KeyNotFound { label: String },
    #[error("a key labelled {label:?} already exists on the token")]
    KeyExists { label: String },
    #[error("key {label:?} can leave the HSM (extractable or not sensitive): refused")]
    KeyExportable { label: String },
    #[error("key {label:?} is refused: {problem}")]
    KeyAttributes { label: String, problem: String },
    #[error("the label {label:?} names {objects} on the token: remove or relabel all but one")]
    DuplicateKey { label: String, objects: String },
    #[error("key {label:?} is {key}, which cannot sign with {scheme}")]
    KeyMismatch {
        label: String,
        key: String,
        scheme: SignatureScheme,
    },
    #[error("the HSM is unavailable: {0}")]
    Unavailable(String),
    #[error("PKCS#11 call failed: {0}")]
    Pkcs11(String),
    #[error("the HSM queue is full")]
    Busy,
    #[error("public key on the token: {0}")]
    PublicKey(String),
    #[error("the HSM returned a signature that does not verify: {0}")]
    BadSignature(String),
}

impl HsmError {
    /// Whether the error means "the token cannot be used right now" (callers answer 503).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            HsmError::Unavailable(_)
                | HsmError::Busy
                | HsmError::Module { .. }
                | HsmError::TokenNotFound { .. }
                | HsmError::TokenAmbiguous { .. }
                | HsmError::TokenSerialMismatch { .. }
                | HsmError::PinIncorrect { .. }
                | HsmError::PinLocked
                | HsmError::Pin(_)
        )
    }
}
