//! PKCS#10 certification requests (RFC 2986): strict parsing and proof of possession.
use der::{Decode, Encode};
use spki::SubjectPublicKeyInfoOwned;
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::request::{CertReq, ExtensionReq, Version};

use super::{oid, pem, sigalg};

/// Largest CSR sceau reads (an RSA-4096 CSR is about 1.7 KiB).
pub const MAX_CSR_LEN: usize = 16 * 1024;

/// A parsed certification request whose signature has been checked.
#[derive(Clone, Debug)]
pub struct VerifiedCsr {
    subject: Name,
    public_key: SubjectPublicKeyInfoOwned,
    requested_extensions: Vec<Extension>,
}

impl VerifiedCsr {
    pub fn subject(&self) -> &Name {
        &self.subject
    }

    pub fn public_key(&self) -> &SubjectPublicKeyInfoOwned {
        &self.public_key
    }

    /// Extensions asked for in the PKCS#9 extensionRequest attribute. The CA never copies them;
    /// policies use them only to refuse requests that ask for what they forbid (e.g. a SAN).
    pub fn requested_extensions(&self) -> &[Extension] {
        &self.requested_extensions
    }
}

/// A CSR that decoded but has not been checked yet.
#[derive(Clone, Debug)]
pub struct ParsedCsr {
    request: CertReq,
    info_der: Vec<u8>,
}

impl ParsedCsr {
    /// Reads a CSR from PEM (`CERTIFICATE REQUEST`) or DER. Trailing bytes are refused.
    pub fn parse(input: &[u8]) -> Result<Self, CsrError> {
        if input.len() > MAX_CSR_LEN {
            return Err(CsrError::TooLarge(input.len()));
        }
        let der = pem::decode_pem_or_der(
            input,
            &[pem::CERTIFICATE_REQUEST, "NEW CERTIFICATE REQUEST"],
        )
        .map_err(|e| CsrError::Malformed(e.to_string()))?;
        let request = CertReq::from_der(&der).map_err(|e| CsrError::Malformed(e.to_string()))?;
        if request.info.version != Version::V1 {
            return Err(CsrError::Malformed("version is not v1 (0)".into()));
        }
        let info_der = request
            .info
            .to_der()
            .map_err(|e| CsrError::Malformed(e.to_string()))?;
        Ok(Self { request, info_der })
    }

    pub fn public_key(&self) -> &SubjectPublicKeyInfoOwned {
        &self.request.info.public_key
    }

    pub fn subject(&self) -> &Name {
        &self.request.info.subject
    }

    /// Proof of possession: the request is signed by the key it asks a certificate for.
    pub fn verify(self) -> Result<VerifiedCsr, CsrError> {
        let signature = self
            .request
            .signature
            .as_bytes()
            .ok_or(CsrError::Signature(sigalg::SignatureError::Invalid))?;
        sigalg::verify(
            &self.request.info.public_key,
            &self.request.algorithm,
            &self.info_der,
            signature,
        )
        .map_err(CsrError::Signature)?;
        let mut requested_extensions = Vec::new();
        for attribute in self.request.info.attributes.iter() {
            if attribute.oid != oid::PKCS9_EXTENSION_REQUEST {
                continue;
            }
            for value in attribute.values.iter() {
                let request: ExtensionReq = value
                    .decode_as()
                    .map_err(|e| CsrError::Malformed(format!("extensionRequest: {e}")))?;
                requested_extensions.extend(request.0);
            }
        }
        Ok(VerifiedCsr {
            subject: self.request.info.subject,
            public_key: self.request.info.public_key,
            requested_extensions,
        })
    }
}

/// Why a CSR was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CsrError {
    #[error("CSR is {0} bytes, more than the {MAX_CSR_LEN} allowed")]
    TooLarge(usize),
    #[error("CSR does not decode: {0}")]
    Malformed(String),
    #[error("CSR signature (proof of possession): {0}")]
    Signature(sigalg::SignatureError),
}
