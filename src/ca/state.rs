//! What the key ceremony leaves in the store: the CA certificates and the labels of their keys.
use serde::{Deserialize, Serialize};

use crate::store::base64_bytes;
use crate::x509::Timestamp;
use crate::x509::sigalg::SignatureScheme;

/// The CA's state, stored under `meta/ca-state`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaState {
    /// The root, when it is known (created here, or imported with the issuing CA certificate).
    pub root: Option<RootCa>,
    /// Issuing CAs, oldest first; the last one issues new certificates.
    pub issuing: Vec<StoredCa>,
    /// Delegated OCSP responder certificates, oldest first.
    pub ocsp_responders: Vec<StoredCa>,
    /// `init --external-root`: the issuing key exists and its CSR was written; waiting for
    /// `ca import-cert`.
    pub pending_issuing: Option<PendingIssuing>,
    pub created_at: Timestamp,
}

/// A CA (or OCSP responder) certificate and the HSM key it belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCa {
    /// Short name, used for file names (`racine`, `ac-agents`, `ocsp-ac-agents`).
    pub name: String,
    pub key_label: String,
    pub scheme: SignatureScheme,
    #[serde(with = "base64_bytes")]
    pub certificate: Vec<u8>,
}

/// The root certificate, and its key when the root was created here (an external root's key
/// lives elsewhere).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootCa {
    pub name: String,
    #[serde(with = "base64_bytes")]
    pub certificate: Vec<u8>,
    pub key: Option<KeyRef>,
}

/// A key in the HSM and the scheme it signs with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRef {
    pub label: String,
    pub scheme: SignatureScheme,
}

/// An issuing CA key waiting for its certificate from an external root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingIssuing {
    pub name: String,
    pub key_label: String,
    pub scheme: SignatureScheme,
    #[serde(with = "base64_bytes")]
    pub csr: Vec<u8>,
}

impl CaState {
    pub fn is_ready(&self) -> bool {
        !self.issuing.is_empty()
    }
}
