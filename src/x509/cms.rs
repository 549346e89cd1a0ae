//! CMS SignedData (RFC 5652) as registration authorities send it: one signer, the content
//! attached, as `openssl cms -sign -nodetach -outform DER` makes it.
//!
//! ```text
//! ContentInfo ::= SEQUENCE { contentType id-signedData, content [0] EXPLICIT SignedData }
//! SignedData ::= SEQUENCE { version, digestAlgorithms, encapContentInfo, certificates [0]
//!     IMPLICIT OPTIONAL, crls [1] IMPLICIT OPTIONAL, signerInfos SET OF SignerInfo }
//! ```
//!
//! [`verify_attached`] checks the signature against a certificate the caller already trusts
//! (the RA passes the TLS client certificate: the signer must be the operator on the
//! connection), never against a certificate carried inside the message. Decoding is strict DER
//! and refuses trailing bytes.
use cms::content_info::ContentInfo;
use cms::signed_data::{SignedData, SignerIdentifier};
use der::asn1::OctetString;
use der::{Decode, Encode};
use spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;
use x509_cert::ext::pkix::SubjectKeyIdentifier;

use super::oid;
use super::sigalg::{self, HashAlgorithm, SignatureError};

/// Largest signed request read (two RSA-4096 CSRs and a certificate fit in a few KiB).
pub const MAX_CMS_LEN: usize = 256 * 1024;

/// Why a signed message was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CmsError {
    #[error("the message is {0} bytes, more than the {MAX_CMS_LEN} allowed")]
    TooLarge(usize),
    #[error("not a DER CMS SignedData: {0}")]
    Malformed(String),
    #[error("the content is not attached (sign with -nodetach)")]
    Detached,
    #[error("exactly one signer is expected, found {0}")]
    SignerCount(usize),
    #[error("the message is signed by another certificate than the one presented")]
    WrongSigner,
    #[error("digest algorithm {0} is not accepted (SHA-256, SHA-384 or SHA-512)")]
    Digest(const_oid::ObjectIdentifier),
    #[error("signed attribute {0}: {1}")]
    Attribute(&'static str, String),
    #[error("signature: {0}")]
    Signature(#[from] SignatureError),
    #[error("signing: {0}")]
    Signing(String),
}

/// Verifies `der`, a SignedData with attached content signed by `signer`; returns the content.
pub fn verify_attached(der: &[u8], signer: &Certificate) -> Result<Vec<u8>, CmsError> {
    verify_attached_by_one_of(der, &[signer]).map(|(content, _)| content)
}

/// Verifies `der`, a SignedData with attached content signed by one of `signers` (the one its
/// SignerInfo identifies); returns the content and the signer's index in `signers`.
pub fn verify_attached_by_one_of(
    der: &[u8],
    signers: &[&Certificate],
) -> Result<(Vec<u8>, usize), CmsError> {
    if der.len() > MAX_CMS_LEN {
        return Err(CmsError::TooLarge(der.len()));
    }
    let malformed = |e: der::Error| CmsError::Malformed(e.to_string());
    let info = ContentInfo::from_der(der).map_err(malformed)?;
    if info.content_type != oid::CMS_SIGNED_DATA {
        return Err(CmsError::Malformed(format!(
            "content type {} is not id-signedData",
            info.content_type
        )));
    }
    let signed: SignedData = info.content.decode_as().map_err(malformed)?;
    if signed.encap_content_info.econtent_type != oid::CMS_DATA {
        return Err(CmsError::Malformed(format!(
            "encapsulated content type {} is not id-data",
            signed.encap_content_info.econtent_type
        )));
    }
    let content = signed
        .encap_content_info
        .econtent
        .as_ref()
        .ok_or(CmsError::Detached)?
        .decode_as::<OctetString>()
        .map_err(malformed)?
        .into_bytes()
        .into_vec();
    let count = signed.signer_infos.0.len();
    let [signer_info] = signed.signer_infos.0.as_slice() else {
        return Err(CmsError::SignerCount(count));
    };
    let (index, signer) = signers
        .iter()
        .enumerate()
        .find(|(_, candidate)| identifies(&signer_info.sid, candidate))
        .ok_or(CmsError::WrongSigner)?;
    let digest = HashAlgorithm::from_oid(signer_info.digest_alg.oid)
        .ok_or(CmsError::Digest(signer_info.digest_alg.oid))?;

    // RFC 5652 §5.4: with signed attributes, the signature covers their DER encoding as a
    // SET OF (not the [0] IMPLICIT tag they travel under), and they must carry the content type
    // and the digest of the content.
    let signed_message = match &signer_info.signed_attrs {
        Some(attributes) => {
            let mut content_type = None;
            let mut message_digest = None;
            for attribute in attributes.iter() {
                // The attribute's one value; `name` says which attribute in an error.
                let single = |name: &'static str| {
                    let mut values = attribute.values.iter();
                    match (values.next(), values.next()) {
                        (Some(value), None) => Ok(value),
                        _ => Err(CmsError::Attribute(name, "one value expected".into())),
                    }
                };
                if attribute.oid == oid::CMS_CONTENT_TYPE {
                    let value = single("content-type")?;
                    content_type = Some(
                        value
                            .decode_as::<const_oid::ObjectIdentifier>()
                            .map_err(|e| CmsError::Attribute("content-type", e.to_string()))?,
                    );
                } else if attribute.oid == oid::CMS_MESSAGE_DIGEST {
                    let value = single("message-digest")?;
                    message_digest = Some(
                        value
                            .decode_as::<OctetString>()
                            .map_err(|e| CmsError::Attribute("message-digest", e.to_string()))?
                            .into_bytes()
                            .into_vec(),
                    );
                }
            }
            if content_type != Some(oid::CMS_DATA) {
                return Err(CmsError::Attribute(
                    "content-type",
                    "missing or not id-data".into(),
                ));
            }
            if message_digest.as_deref() != Some(digest.digest(&content).as_slice()) {
                return Err(CmsError::Attribute(
                    "message-digest",
                    "missing or not the digest of the content".into(),
                ));
            }
            attributes.to_der().map_err(malformed)?
        }
        None => content.clone(),
    };
    let algorithm = signature_algorithm(&signer_info.signature_algorithm, digest)?;
    sigalg::verify(
        signer.tbs_certificate().subject_public_key_info(),
        &algorithm,
        &signed_message,
        signer_info.signature.as_bytes(),
    )?;
    Ok((content, index))
}

/// Whether a SignerIdentifier names `certificate` (by issuer and serial, or by key identifier).
fn identifies(sid: &SignerIdentifier, certificate: &Certificate) -> bool {
    let tbs = certificate.tbs_certificate();
    match sid {
        SignerIdentifier::IssuerAndSerialNumber(isn) => {
            isn.issuer == *tbs.issuer() && isn.serial_number == *tbs.serial_number()
        }
        SignerIdentifier::SubjectKeyIdentifier(ski) => {
            matches!(tbs.get_extension::<SubjectKeyIdentifier>(), Ok(Some((_, own))) if own == *ski)
        }
    }
}

/// The X.509 signature algorithm a CMS SignerInfo means. RFC 5754 §3.2 and RFC 8017 let CMS
/// name only the key type (rsaEncryption, id-ecPublicKey) and take the hash from digestAlgorithm;
/// OpenSSL writes rsaEncryption for RSA signers. A named hash must agree with digestAlgorithm.
fn signature_algorithm(
    named: &AlgorithmIdentifierOwned,
    digest: HashAlgorithm,
) -> Result<AlgorithmIdentifierOwned, CmsError> {
    let with = |oid, parameters| AlgorithmIdentifierOwned { oid, parameters };
    let null = || Some(der::Any::null());
    Ok(match (named.oid, digest) {
        (oid::RSA_ENCRYPTION, HashAlgorithm::Sha256) => with(oid::SHA256_WITH_RSA, null()),
        (oid::RSA_ENCRYPTION, HashAlgorithm::Sha384) => with(oid::SHA384_WITH_RSA, null()),
        (oid::RSA_ENCRYPTION, HashAlgorithm::Sha512) => with(oid::SHA512_WITH_RSA, null()),
        (oid::EC_PUBLIC_KEY, HashAlgorithm::Sha256) => with(oid::ECDSA_WITH_SHA256, None),
        (oid::EC_PUBLIC_KEY, HashAlgorithm::Sha384) => with(oid::ECDSA_WITH_SHA384, None),
        (oid::EC_PUBLIC_KEY, HashAlgorithm::Sha512) => with(oid::ECDSA_WITH_SHA512, None),
        (oid::SHA256_WITH_RSA | oid::ECDSA_WITH_SHA256, HashAlgorithm::Sha256)
        | (oid::SHA384_WITH_RSA | oid::ECDSA_WITH_SHA384, HashAlgorithm::Sha384)
        | (oid::SHA512_WITH_RSA | oid::ECDSA_WITH_SHA512, HashAlgorithm::Sha512)
        | (oid::RSASSA_PSS, _) => named.clone(),
        (other, _) => return Err(SignatureError::Unsupported(other).into()),
    })
}

/// An attached CMS SignedData of `content` by the holder of `certificate`, as `openssl cms
/// -sign -binary -nodetach` writes it: one signer named by issuer and serial number, the
/// signed attributes content-type and message-digest, and `certificate` included. `sign`
/// signs the DER of the signed attributes with the certificate's key under `scheme` (a card
/// through PKCS#11, for an officer's approval) and returns the signature as X.509 carries it.
pub fn sign_attached<E: std::fmt::Display>(
    content: &[u8],
    certificate: &Certificate,
    scheme: sigalg::SignatureScheme,
    sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, E>,
) -> Result<Vec<u8>, CmsError> {
    use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
    use cms::content_info::CmsVersion;
    use cms::signed_data::{CertificateSet, EncapsulatedContentInfo, SignerInfo, SignerInfos};
    use der::asn1::{Any, SetOfVec};
    let malformed = |e: der::Error| CmsError::Malformed(e.to_string());
    let hash = scheme.hash();
    let digest_algorithm = AlgorithmIdentifierOwned {
        oid: hash.oid(),
        parameters: None,
    };
    let attribute = |oid, value: Any| -> Result<x509_cert::attr::Attribute, CmsError> {
        Ok(x509_cert::attr::Attribute {
            oid,
            values: SetOfVec::try_from(vec![value]).map_err(malformed)?,
        })
    };
    let attributes = SetOfVec::try_from(vec![
        attribute(
            oid::CMS_CONTENT_TYPE,
            Any::encode_from(&oid::CMS_DATA).map_err(malformed)?,
        )?,
        attribute(
            oid::CMS_MESSAGE_DIGEST,
            Any::encode_from(&OctetString::new(hash.digest(content)).map_err(malformed)?)
                .map_err(malformed)?,
        )?,
    ])
    .map_err(malformed)?;
    let signature = sign(&attributes.to_der().map_err(malformed)?)
        .map_err(|e| CmsError::Signing(e.to_string()))?;
    let tbs = certificate.tbs_certificate();
    let signer = SignerInfo {
        version: CmsVersion::V1,
        sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: tbs.issuer().clone(),
            serial_number: tbs.serial_number().clone(),
        }),
        digest_alg: digest_algorithm.clone(),
        signed_attrs: Some(attributes),
        signature_algorithm: scheme.algorithm_identifier().map_err(malformed)?,
        signature: OctetString::new(signature).map_err(malformed)?,
        unsigned_attrs: None,
    };
    let signed = SignedData {
        version: CmsVersion::V1,
        digest_algorithms: SetOfVec::try_from(vec![digest_algorithm]).map_err(malformed)?,
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: oid::CMS_DATA,
            econtent: Some(
                Any::encode_from(&OctetString::new(content).map_err(malformed)?)
                    .map_err(malformed)?,
            ),
        },
        certificates: Some(
            CertificateSet::try_from(vec![CertificateChoices::Certificate(certificate.clone())])
                .map_err(malformed)?,
        ),
        crls: None,
        signer_infos: SignerInfos::try_from(vec![signer]).map_err(malformed)?,
    };
    ContentInfo {
        content_type: oid::CMS_SIGNED_DATA,
        content: Any::encode_from(&signed).map_err(malformed)?,
    }
    .to_der()
    .map_err(malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    // tests/fixtures/cms/make.sh says how each fixture was made.
    fn certificate(pem: &str) -> Certificate {
        let der =
            crate::pem::decode_pem_or_der(pem.as_bytes(), &[crate::pem::CERTIFICATE]).unwrap();
        Certificate::from_der(&der).unwrap()
    }
    const EC: &str = include_str!("../../tests/fixtures/cms/ec.pem");
    const RSA: &str = include_str!("../../tests/fixtures/cms/rsa.pem");
    const OTHER: &str = include_str!("../../tests/fixtures/cms/other.pem");
    const CONTENT: &[u8] = include_bytes!("../../tests/fixtures/cms/request.json");

    /// The message with one octet of its signed content flipped.
    fn with_content_changed(message: &[u8]) -> Vec<u8> {
        let mut changed = message.to_vec();
        let at = changed
            .windows(CONTENT.len())
            .position(|w| w == CONTENT)
            .unwrap();
        changed[at + 10] ^= 0x01;
        changed
    }

    #[test]
    fn openssl_signed_messages_verify_and_give_their_content() {
        let ec = include_bytes!("../../tests/fixtures/cms/ec.cms");
        assert_eq!(verify_attached(ec, &certificate(EC)).unwrap(), CONTENT);
        let rsa = include_bytes!("../../tests/fixtures/cms/rsa.cms");
        assert_eq!(verify_attached(rsa, &certificate(RSA)).unwrap(), CONTENT);
        let noattr = include_bytes!("../../tests/fixtures/cms/ec-noattr.cms");
        assert_eq!(verify_attached(noattr, &certificate(EC)).unwrap(), CONTENT);
    }

    #[test]
    fn another_signer_a_detached_content_and_a_changed_byte_are_refused() {
        let ec = include_bytes!("../../tests/fixtures/cms/ec.cms");
        assert!(matches!(
            verify_attached(ec, &certificate(OTHER)),
            Err(CmsError::WrongSigner)
        ));
        let detached = include_bytes!("../../tests/fixtures/cms/detached.cms");
        assert!(matches!(
            verify_attached(detached, &certificate(EC)),
            Err(CmsError::Detached)
        ));
        // Flip one octet of the content: the message digest no longer matches.
        assert!(matches!(
            verify_attached(&with_content_changed(ec), &certificate(EC)),
            Err(CmsError::Attribute("message-digest", _))
        ));
        // Without signed attributes the signature itself covers the content.
        let noattr = include_bytes!("../../tests/fixtures/cms/ec-noattr.cms");
        assert!(matches!(
            verify_attached(&with_content_changed(noattr), &certificate(EC)),
            Err(CmsError::Signature(SignatureError::Invalid))
        ));
    }

    #[test]
    fn garbage_and_trailing_bytes_are_malformed() {
        let mut trailing = include_bytes!("../../tests/fixtures/cms/ec.cms").to_vec();
        trailing.push(0);
        assert!(matches!(
            verify_attached(&trailing, &certificate(EC)),
            Err(CmsError::Malformed(_))
        ));
        for garbage in [
            &b""[..],
            b"\x30\x80",
            b"{\"id\":1}",
            &[0x30, 0x03, 0x02, 0x01, 0x01],
        ] {
            assert!(matches!(
                verify_attached(garbage, &certificate(EC)),
                Err(CmsError::Malformed(_))
            ));
        }
        let huge = vec![0u8; MAX_CMS_LEN + 1];
        assert!(matches!(
            verify_attached(&huge, &certificate(EC)),
            Err(CmsError::TooLarge(_))
        ));
    }
}
