//! The RA listener's TLS: the operators' CAs as client-certificate trust, an expired card still admitted to the handshake (so that the refusal is a problem document naming the rule).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore};

/// The TLS configuration of the RA listener: its certificate and key (files), and client
/// certificates checked against `operator_cas` (DER). The returned [`OperatorTrust`] changes
/// those CAs while the listener runs (a CA rollover).
pub fn tls_config(
    certificate: &Path,
    private_key: &Path,
    operator_cas: &[Vec<u8>],
) -> Result<(Arc<rustls::ServerConfig>, Arc<OperatorTrust>), String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certificate)
        .map_err(|e| format!("{}: {e}", certificate.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", certificate.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate", certificate.display()));
    }
    let key = PrivateKeyDer::from_pem_file(private_key)
        .map_err(|e| format!("{}: {e}", private_key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let trust = Arc::new(OperatorTrust {
        verifier: std::sync::RwLock::new(client_verifier(&provider, operator_cas)?),
        provider: provider.clone(),
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(Arc::new(OperatorVerifier {
            trust: trust.clone(),
        }))
        .with_single_cert(chain, key)
        .map_err(|e| format!("{}: {e}", private_key.display()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((Arc::new(config), trust))
}

/// The CAs operators' client certificates chain to.
pub struct OperatorTrust {
    verifier: std::sync::RwLock<Arc<dyn ClientCertVerifier>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl core::fmt::Debug for OperatorTrust {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("OperatorTrust").finish()
    }
}

impl OperatorTrust {
    /// Trusts `operator_cas` (DER) from the next handshake on.
    pub fn reload(&self, operator_cas: &[Vec<u8>]) -> Result<(), String> {
        let verifier = client_verifier(&self.provider, operator_cas)?;
        *self.verifier.write().unwrap_or_else(|p| p.into_inner()) = verifier;
        Ok(())
    }

    fn current(&self) -> Arc<dyn ClientCertVerifier> {
        self.verifier
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

pub(super) fn client_verifier(
    provider: &Arc<rustls::crypto::CryptoProvider>,
    operator_cas: &[Vec<u8>],
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let mut roots = RootCertStore::empty();
    for ca in operator_cas {
        roots
            .add(CertificateDer::from(ca.clone()))
            .map_err(|e| format!("operator CA: {e}"))?;
    }
    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("client verifier: {e}"))
}

/// WebPKI client verification, except that an expired (or not yet valid) certificate whose
/// chain is otherwise valid is let through to be refused by the RA with a problem document.
#[derive(Debug)]
pub(super) struct OperatorVerifier {
    trust: Arc<OperatorTrust>,
}

impl ClientCertVerifier for OperatorVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: the CAs can change while the listener runs, and a client sends its one
        // operator certificate anyway.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let inner = self.trust.current();
        match inner.verify_client_cert(end_entity, intermediates, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. },
            )) => {
                // Check everything else at a moment the certificate was valid.
                let last_valid = <x509_cert::Certificate as der::Decode>::from_der(end_entity)
                    .map(|c| {
                        crate::x509::Timestamp::from_x509_time(
                            &c.tbs_certificate().validity().not_after,
                        )
                        .unix_seconds()
                        .saturating_sub(1)
                    })
                    .map_err(|_| {
                        rustls::Error::InvalidCertificate(CertificateError::BadEncoding)
                    })?;
                inner.verify_client_cert(
                    end_entity,
                    intermediates,
                    UnixTime::since_unix_epoch(Duration::from_secs(last_valid)),
                )
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.trust
            .current()
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.trust
            .current()
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.trust.current().supported_verify_schemes()
    }
}
