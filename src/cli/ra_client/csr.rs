//! `sceau ra csr`: a PKCS#10 request signed by a key on the card, so that a card's keys are
//! made on the card and certified without ever leaving it. Also the CSR files `submit` reads.

use std::path::Path;

use der::Encode;
use der::asn1::BitString;
use x509_cert::request::{CertReq, CertReqInfo, Version};

use super::super::{CliError, Context, ContextAs, Failure};
use super::ClientOptions;
use crate::hsm::HsmError;
use crate::x509::name::{Attribute, DistinguishedName};
use crate::x509::pem;
use crate::x509::sigalg::SignatureScheme;

/// Writes the CSR of the card's key `key_label` for `subject` to `out`.
pub(super) fn write(
    options: &ClientOptions,
    key_label: &str,
    subject: &str,
    out: &Path,
) -> Result<(), CliError> {
    let name = parse_subject(subject)?
        .to_name()
        .context_as(Failure::Usage, || format!("--subject {subject:?}"))?;
    let hsm = super::card::open_token(options)?;
    // The key's type decides the scheme: the first that suits it (a mismatch is found from
    // the public key, before anything is signed).
    let mut key = None;
    for scheme in [
        SignatureScheme::EcdsaP256Sha256,
        SignatureScheme::EcdsaP384Sha384,
        SignatureScheme::RsaPkcs1Sha256,
    ] {
        match hsm.signing_key(key_label, scheme) {
            Ok(found) => {
                key = Some(found);
                break;
            }
            Err(HsmError::KeyMismatch { .. }) => continue,
            Err(e) => return Err(e).context(|| format!("--key-label {key_label:?}")),
        }
    }
    let key = key.ok_or_else(|| {
        CliError::data(format!(
            "--key-label {key_label:?}: neither a P-256, P-384 nor an RSA key"
        ))
    })?;
    let info = CertReqInfo {
        version: Version::V1,
        subject: name,
        public_key: key.public_key().clone(),
        attributes: Default::default(),
    };
    let encoding = |e: der::Error| CliError::internal(format!("encoding the CSR: {e}"));
    let signed_part = info.to_der().map_err(encoding)?;
    let signature = key
        .sign(&signed_part)
        .context(|| format!("signing with the card's key {key_label:?}"))?;
    let request = CertReq {
        info,
        algorithm: key.scheme().algorithm_identifier().map_err(encoding)?,
        signature: BitString::from_bytes(&signature).map_err(encoding)?,
    };
    let der = request.to_der().map_err(encoding)?;
    std::fs::write(out, pem::encode(pem::CERTIFICATE_REQUEST, &der))
        .context(|| format!("--out {}", out.display()))?;
    println!("{}", out.display());
    Ok(())
}

/// `/C=FR/O=.../CN=...` as OpenSSL's `-subj` writes it (a value holds no `/`).
fn parse_subject(subject: &str) -> Result<DistinguishedName, CliError> {
    let mut name = DistinguishedName::new();
    let parts = subject
        .strip_prefix('/')
        .ok_or_else(|| CliError::usage(format!("--subject {subject:?}: starts with '/'")))?;
    for part in parts.split('/').filter(|p| !p.is_empty()) {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| CliError::usage(format!("--subject: {part:?} is not NAME=VALUE")))?;
        let attribute = Attribute::from_short_name(key).ok_or_else(|| {
            CliError::usage(format!(
                "--subject: {key:?} is not one of C, O, OU, organizationIdentifier, GN, SN, CN, serialNumber"
            ))
        })?;
        name.push(attribute, value);
    }
    Ok(name)
}

/// A CSR file (PEM or DER) as the PEM text a submission carries.
pub(super) fn read_pem(path: &Path, flag: &str) -> Result<String, CliError> {
    let bytes = std::fs::read(path).context(|| format!("{flag} {}", path.display()))?;
    let der = pem::decode_pem_or_der(
        &bytes,
        &[pem::CERTIFICATE_REQUEST, "NEW CERTIFICATE REQUEST"],
    )
    .context_as(Failure::Data, || format!("{flag} {}", path.display()))?;
    crate::x509::csr::ParsedCsr::parse(&der).context_as(Failure::Data, || {
        format!("{flag} {}: not a PKCS#10 request", path.display())
    })?;
    Ok(pem::encode(pem::CERTIFICATE_REQUEST, &der))
}
