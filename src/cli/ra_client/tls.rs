//! Mutual TLS with the card: the client's TLS signature (CertificateVerify) is made by the
//! card's authentication key through PKCS#11, as every other signature of the card.

use std::path::Path;
use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::pki_types::CertificateDer;
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme as TlsScheme};

use super::super::{CliError, Context, ContextAs, Failure};
use crate::hsm;
use crate::x509::sigalg::SignatureScheme;

/// The card's authentication key, as rustls signs with it.
struct CardKey {
    key: hsm::SigningKey,
    scheme: TlsScheme,
    algorithm: SignatureAlgorithm,
}

impl std::fmt::Debug for CardKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CardKey")
            .field("label", &self.key.label())
            .field("scheme", &self.scheme)
            .finish()
    }
}

impl SigningKey for CardKey {
    fn choose_scheme(&self, offered: &[TlsScheme]) -> Option<Box<dyn Signer>> {
        offered.contains(&self.scheme).then(|| {
            Box::new(CardSigner {
                key: self.key.clone(),
                scheme: self.scheme,
            }) as Box<dyn Signer>
        })
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        self.algorithm
    }
}

struct CardSigner {
    key: hsm::SigningKey,
    scheme: TlsScheme,
}

impl std::fmt::Debug for CardSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CardSigner")
            .field("scheme", &self.scheme)
            .finish()
    }
}

impl Signer for CardSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        // DER Ecdsa-Sig-Value, or the RSA-PSS octets: what TLS carries too.
        self.key
            .sign(message)
            .map_err(|e| rustls::Error::General(format!("the card did not sign: {e}")))
    }

    fn scheme(&self) -> TlsScheme {
        self.scheme
    }
}

/// The key scheme the card's authentication key must be opened with for TLS (RSA signs with
/// PSS in TLS 1.3), from the scheme its certificate implies.
pub(super) fn tls_key_scheme(certificate_scheme: SignatureScheme) -> SignatureScheme {
    match certificate_scheme {
        SignatureScheme::RsaPkcs1Sha256 | SignatureScheme::RsaPkcs1Sha384 => {
            SignatureScheme::RsaPssSha256
        }
        other => other,
    }
}

fn tls_scheme(key_scheme: SignatureScheme) -> Option<(TlsScheme, SignatureAlgorithm)> {
    Some(match key_scheme {
        SignatureScheme::EcdsaP256Sha256 => {
            (TlsScheme::ECDSA_NISTP256_SHA256, SignatureAlgorithm::ECDSA)
        }
        SignatureScheme::EcdsaP384Sha384 => {
            (TlsScheme::ECDSA_NISTP384_SHA384, SignatureAlgorithm::ECDSA)
        }
        SignatureScheme::RsaPssSha256 => (TlsScheme::RSA_PSS_SHA256, SignatureAlgorithm::RSA),
        _ => return None,
    })
}

/// Always the card's credential.
#[derive(Debug)]
struct CardCredential(Arc<CertifiedKey>);

impl ResolvesClientCert for CardCredential {
    fn resolve(&self, _hints: &[&[u8]], _offered: &[TlsScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The client configuration: the RA's certificate checked against `ra_ca` (its CA, or the
/// self-signed certificate itself), the card's authentication certificate and key as the
/// client credential.
pub(super) fn client_config(
    ra_ca: &Path,
    auth_certificate: Vec<u8>,
    auth_key: hsm::SigningKey,
) -> Result<rustls::ClientConfig, CliError> {
    let (scheme, algorithm) = tls_scheme(auth_key.scheme()).ok_or_else(|| {
        CliError::data(format!(
            "the card's authentication key signs with {}, which TLS does not use",
            auth_key.scheme()
        ))
    })?;
    let pem = std::fs::read_to_string(ra_ca).context(|| format!("--ra-ca {}", ra_ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for block in crate::x509::pem::decode_all(&pem, crate::x509::pem::CERTIFICATE)
        .context_as(Failure::Data, || format!("--ra-ca {}", ra_ca.display()))?
    {
        roots
            .add(CertificateDer::from(block))
            .context_as(Failure::Data, || format!("--ra-ca {}", ra_ca.display()))?;
    }
    if roots.is_empty() {
        return Err(CliError::data(format!(
            "--ra-ca {}: no certificate",
            ra_ca.display()
        )));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let key = Arc::new(CardKey {
        key: auth_key,
        scheme,
        algorithm,
    });
    let credential = CardCredential(Arc::new(CertifiedKey::new(
        vec![CertificateDer::from(auth_certificate)],
        key,
    )));
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context_as(Failure::Internal, || "TLS versions".into())?
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(credential)))
}
