//! Building a TBSCertificate, and attaching the signature to it.
//!
//! [`TbsCertificateV3`] is the RFC 5280 §4.1 production with the issuer held as raw bytes, so that
//! the issuer field is a byte-for-byte copy of the CA certificate's subject
//! (docs/design.md#common-rules).
//! [`assemble_certificate`] wraps TBS bytes, unchanged, with the algorithm and signature: the
//! signed bytes are the bytes that were linted and recorded.
use der::asn1::{AnyRef, BitStringRef};
use der::{Decode, Encode, Reader, Sequence, Tag};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::Certificate;
use x509_cert::certificate::Version;
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::Validity;

/// TBSCertificate (RFC 5280 §4.1), version 3, without unique identifiers (§4.1.2.8: "CAs
/// conforming to this profile MUST NOT generate certificates with unique identifiers").
///
/// ```text
/// TBSCertificate  ::=  SEQUENCE  {
///      version         [0]  EXPLICIT Version DEFAULT v1,
///      serialNumber         CertificateSerialNumber,
///      signature            AlgorithmIdentifier,
///      issuer               Name,
///      validity             Validity,
///      subject              Name,
///      subjectPublicKeyInfo SubjectPublicKeyInfo,
///      extensions      [3]  EXPLICIT Extensions OPTIONAL }
/// ```
#[derive(Clone, Debug, Sequence)]
pub struct TbsCertificateV3<'a> {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    pub version: Version,
    pub serial_number: SerialNumber,
    pub signature: AlgorithmIdentifierOwned,
    /// The issuing CA certificate's subject, as its DER bytes.
    pub issuer: AnyRef<'a>,
    pub validity: Validity,
    pub subject: Name,
    pub subject_public_key_info: SubjectPublicKeyInfoOwned,
    #[asn1(context_specific = "3", tag_mode = "EXPLICIT")]
    pub extensions: Vec<Extension>,
}

/// Certificate (RFC 5280 §4.1) over TBS bytes that are kept exactly as given.
#[derive(Sequence)]
struct CertificateOverRawTbs<'a> {
    tbs_certificate: AnyRef<'a>,
    signature_algorithm: AlgorithmIdentifierOwned,
    signature_value: BitStringRef<'a>,
}

/// Wraps `tbs_der` with the signature algorithm and signature, and checks that the result
/// decodes as a certificate whose two algorithm fields agree (RFC 5280 §4.1.1.2).
pub fn assemble_certificate(
    tbs_der: &[u8],
    signature_algorithm: &AlgorithmIdentifierOwned,
    signature: &[u8],
) -> Result<Vec<u8>, der::Error> {
    let certificate = CertificateOverRawTbs {
        tbs_certificate: AnyRef::from_der(tbs_der)?,
        signature_algorithm: signature_algorithm.clone(),
        signature_value: BitStringRef::from_bytes(signature)?,
    }
    .to_der()?;
    let decoded = Certificate::from_der(&certificate)?;
    if decoded.tbs_certificate().signature() != decoded.signature_algorithm() {
        return Err(der::ErrorKind::Value {
            tag: der::Tag::Sequence,
        }
        .into());
    }
    Ok(certificate)
}

/// The raw DER of a certificate's TBSCertificate and of its subject, without re-encoding.
pub fn raw_parts(certificate_der: &[u8]) -> Result<RawCertificateParts<'_>, der::Error> {
    let certificate = AnyRef::from_der(certificate_der)?;
    let tbs_der = der::SliceReader::new(certificate.value())?.tlv_bytes()?;
    let tbs = AnyRef::from_der(tbs_der)?;
    let mut fields = der::SliceReader::new(tbs.value())?;
    // [0] version (present in v3), serialNumber, signature, issuer, validity, subject.
    if Tag::peek(&fields)?.is_context_specific() {
        fields.tlv_bytes()?;
    }
    for _ in 0..4 {
        fields.tlv_bytes()?;
    }
    let subject = fields.tlv_bytes()?;
    Ok(RawCertificateParts { tbs_der, subject })
}

/// The byte slices of a certificate that must be copied, never re-encoded.
#[derive(Debug, Clone, Copy)]
pub struct RawCertificateParts<'a> {
    pub tbs_der: &'a [u8],
    /// DER of the subject Name (the issuer field of what this certificate's key signs).
    pub subject: &'a [u8],
}
