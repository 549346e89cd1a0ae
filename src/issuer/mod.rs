//! The issuer state: what the certification authority (`ca`) records of its CAs and what the
//! validation authority (`va`) needs of them to sign CRLs and OCSP responses, one floor below
//! both so that neither imports the other.
//!
//! - [`state`]: what the key ceremony leaves in the store ([`CaState`], [`StoredCa`]).
//! - [`Issuer`]: a CA that can sign: its certificate, the facts the policies need, and its HSM
//!   key.
//! - [`RevokedCertificate`]: a certificate a revocation request revoked (what the VA re-signs).
pub mod state;

use der::{Decode, Encode};
use spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;
use x509_cert::ext::pkix::SubjectKeyIdentifier;

pub use state::{CaState, StoredCa};

use crate::config::PublishedUrls;
use crate::hsm::{Hsm, HsmError, SigningKey};
use crate::policy::IssuerProfile;
use crate::store::{CertKey, IssuerId};
use crate::x509::revocation::RevocationReason;
use crate::x509::tbs::{self, assemble_certificate};
use crate::x509::{Timestamp, keys};

/// What went wrong loading or using an issuer. Each variant becomes the variant of the same
/// name, with the same text, of the CA's error (`ca::CaError`, a floor above).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IssuerError {
    #[error("the key {label:?} in the HSM does not match the certificate of {name}")]
    KeyMismatch { name: String, label: String },
    #[error("HSM: {0}")]
    Hsm(#[from] HsmError),
    #[error("stored CA data is inconsistent: {0}")]
    Corrupt(String),
    #[error("encoding: {0}")]
    Encoding(String),
}

/// A certificate that was revoked by a request.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RevokedCertificate {
    #[serde(flatten)]
    pub key: CertKey,
    pub revoked_at: Timestamp,
    pub reason: RevocationReason,
}

/// A loaded CA: certificate and key checked against each other.
#[derive(Clone, Debug)]
pub struct Issuer {
    pub id: IssuerId,
    pub name: String,
    pub certificate_der: Vec<u8>,
    pub certificate: Certificate,
    pub key: SigningKey,
    /// The subject, as DER (the issuer field of what it signs).
    pub subject_der: Vec<u8>,
    pub key_identifier: [u8; 20],
    pub not_before: Timestamp,
    pub not_after: Timestamp,
}

impl Issuer {
    /// Loads a stored CA and refuses a key that does not match its certificate (as Boulder's
    /// issuer loading does).
    pub fn load(hsm: &Hsm, stored: &StoredCa) -> Result<Self, IssuerError> {
        let certificate = Certificate::from_der(&stored.certificate)
            .map_err(|e| IssuerError::Corrupt(format!("certificate of {}: {e}", stored.name)))?;
        let key = hsm.signing_key(&stored.key_label, stored.scheme)?;
        let certified = certificate.tbs_certificate().subject_public_key_info();
        if key.public_key() != certified {
            return Err(IssuerError::KeyMismatch {
                name: stored.name.clone(),
                label: stored.key_label.clone(),
            });
        }
        Self::from_parts(
            stored.name.clone(),
            stored.certificate.clone(),
            certificate,
            key,
        )
    }

    pub(crate) fn from_parts(
        name: String,
        certificate_der: Vec<u8>,
        certificate: Certificate,
        key: SigningKey,
    ) -> Result<Self, IssuerError> {
        let subject_der = tbs::raw_parts(&certificate_der)
            .map_err(|e| IssuerError::Corrupt(format!("certificate of {name}: {e}")))?
            .subject
            .to_vec();
        let spki = certificate.tbs_certificate().subject_public_key_info();
        // The SKI extension when present (AKIs must copy it byte for byte), else method 1.
        let key_identifier = match certificate
            .tbs_certificate()
            .get_extension::<SubjectKeyIdentifier>()
        {
            Ok(Some((_, ski))) => ski
                .0
                .as_bytes()
                .try_into()
                .unwrap_or(keys::key_identifier(spki)),
            _ => keys::key_identifier(spki),
        };
        let validity = certificate.tbs_certificate().validity();
        Ok(Self {
            id: IssuerId(keys::key_identifier(spki)),
            name,
            not_before: Timestamp::from_x509_time(&validity.not_before),
            not_after: Timestamp::from_x509_time(&validity.not_after),
            certificate_der,
            certificate,
            key,
            subject_der,
            key_identifier,
        })
    }

    pub fn signature_algorithm(&self) -> Result<AlgorithmIdentifierOwned, IssuerError> {
        self.key
            .scheme()
            .algorithm_identifier()
            .map_err(|e| IssuerError::Encoding(e.to_string()))
    }

    /// What the policies need to build holder certificates under this CA.
    pub fn profile(&self, urls: &PublishedUrls) -> Result<IssuerProfile, IssuerError> {
        Ok(IssuerProfile {
            subject_der: self.subject_der.clone(),
            key_identifier: self.key_identifier,
            not_after: self.not_after,
            signature_algorithm: self.signature_algorithm()?,
            crl_url: urls.crl.clone(),
            ocsp_url: urls.ocsp.clone(),
            ca_issuers_url: urls.ca_issuers.clone(),
            cps_url: urls.cps.clone(),
        })
    }

    /// Signs TBS bytes with the HSM, checks the signature with the CA's public key, and
    /// returns the certificate. Every HSM signature is verified before it leaves the CA.
    pub fn sign_tbs(&self, tbs_der: &[u8]) -> Result<Vec<u8>, IssuerError> {
        let signature = self.key.sign(tbs_der)?;
        self.key.verify(tbs_der, &signature)?;
        let algorithm = self.signature_algorithm()?;
        assemble_certificate(tbs_der, &algorithm, &signature)
            .map_err(|e| IssuerError::Encoding(e.to_string()))
    }

    /// The certificate as PEM.
    pub fn pem(&self) -> String {
        crate::x509::pem::encode(crate::x509::pem::CERTIFICATE, &self.certificate_der)
    }

    /// DER of the certificate's SubjectPublicKeyInfo.
    pub fn public_key_der(&self) -> Result<Vec<u8>, IssuerError> {
        self.certificate
            .tbs_certificate()
            .subject_public_key_info()
            .to_der()
            .map_err(|e| IssuerError::Encoding(e.to_string()))
    }
}
