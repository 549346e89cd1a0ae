//! An officer's card, reached through its PKCS#11 module: it signs what an officer approves
//! (`sceau ceremony approve`, which needs no configuration: it runs on the officer's own
//! workstation) and the share they present (`sceau unseal`, at the CA host).

use std::path::PathBuf;

use super::{CliError, Context, ContextAs, Failure};
use crate::hsm::{Hsm, HsmSettings, PinSource};
use crate::x509::keys::{Curve, PublicKeyKind, describe};
use crate::x509::sigalg::SignatureScheme;

/// The scheme a card's key signs with, from its certificate: ECDSA on P-256 or P-384,
/// RSA PKCS#1 v1.5 with SHA-256; none for another key.
pub(super) fn scheme_for(certificate: &x509_cert::Certificate) -> Option<SignatureScheme> {
    match describe(certificate.tbs_certificate().subject_public_key_info()) {
        Ok(PublicKeyKind::Ec(Curve::P256)) => Some(SignatureScheme::EcdsaP256Sha256),
        Ok(PublicKeyKind::Ec(Curve::P384)) => Some(SignatureScheme::EcdsaP384Sha384),
        Ok(PublicKeyKind::Rsa { .. }) => Some(SignatureScheme::RsaPkcs1Sha256),
        _ => None,
    }
}

/// An officer's card as the command line names it.
pub(super) struct Card {
    pub(super) module: PathBuf,
    pub(super) token: String,
    pub(super) key_label: String,
    pub(super) certificate: PathBuf,
    pub(super) pin_file: Option<PathBuf>,
}

impl Card {
    /// The card's signature certificate, and the scheme its key signs with.
    pub(super) fn certificate(
        &self,
    ) -> Result<(x509_cert::Certificate, SignatureScheme), CliError> {
        let pem = std::fs::read(&self.certificate)
            .context(|| format!("--certificate {}", self.certificate.display()))?;
        let der = crate::x509::pem::decode_pem_or_der(&pem, &["CERTIFICATE"]).context_as(
            Failure::Data,
            || {
                format!(
                    "--certificate {}: not a certificate",
                    self.certificate.display()
                )
            },
        )?;
        let certificate = <x509_cert::Certificate as der::Decode>::from_der(&der)
            .context(|| format!("--certificate {}", self.certificate.display()))?;
        let scheme = scheme_for(&certificate).ok_or_else(|| {
            CliError::data(format!(
                "--certificate {}: a P-256, P-384 or RSA key is needed",
                self.certificate.display()
            ))
        })?;
        Ok((certificate, scheme))
    }

    /// An attached CMS SignedData over `bytes` (what `openssl cms -sign -binary -nodetach`
    /// makes), signed by the card's key, after checking that it is the certificate's key.
    pub(super) fn sign(
        &self,
        bytes: &[u8],
        certificate: &x509_cert::Certificate,
        scheme: SignatureScheme,
    ) -> Result<Vec<u8>, CliError> {
        let hsm = Hsm::open(HsmSettings {
            module: self.module.clone(),
            token_label: self.token.clone(),
            token_serial: None,
            module_parameters: None,
            pin: match &self.pin_file {
                Some(path) => PinSource::File(path.clone()),
                None => PinSource::Env("SCEAU_CARD_PIN".into()),
            },
            sessions: 1,
            queue_capacity: 1,
        })
        .context(|| {
            format!(
                "--module {} --token {:?}",
                self.module.display(),
                self.token
            )
        })?;
        let key = hsm
            .signing_key(&self.key_label, scheme)
            .context(|| format!("--key-label {:?}", self.key_label))?;
        if key.public_key() != certificate.tbs_certificate().subject_public_key_info() {
            return Err(CliError::data(format!(
                "the key {:?} on the card is not the key of --certificate {}",
                self.key_label,
                self.certificate.display()
            )));
        }
        let approval = crate::x509::cms::sign_attached(bytes, certificate, scheme, |attributes| {
            key.sign(attributes)
        })
        .context_as(Failure::Unavailable, || "signing with the card".into())?;
        Ok(approval)
    }
}
