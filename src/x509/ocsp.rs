//! OCSP (RFC 6960) as types: requests are decoded as borrowed views of the input, responses
//! are built from owned types. No x509-ocsp release exists for der 0.8, so the productions are
//! defined here, one type each, with the ASN.1 they implement.
use const_oid::ObjectIdentifier;
use der::asn1::{AnyRef, GeneralizedTime, IntRef, Null, OctetString, OctetStringRef};
use der::{Choice, Decode, Enumerated, Sequence, Tagged};
use spki::{AlgorithmIdentifierOwned, AlgorithmIdentifierRef};
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::CrlReason;

/// id-pkix-ocsp-basic (RFC 6960 §4.2.1).
pub const OCSP_BASIC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.1");
/// id-pkix-ocsp-nonce (RFC 6960 §4.4.1, RFC 9654).
pub const OCSP_NONCE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.2");
/// id-pkix-ocsp-response (RFC 6960 §4.4.3): the response types a client accepts.
pub const OCSP_ACCEPTABLE_RESPONSES: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.4");
/// id-pkix-ocsp-archive-cutoff (RFC 6960 §4.4.4).
pub const OCSP_ARCHIVE_CUTOFF: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.6");

/// OCSPResponseStatus (RFC 6960 §4.2.1). Value 4 is unassigned and never used.
///
/// ```text
/// OCSPResponseStatus ::= ENUMERATED {
///     successful (0), malformedRequest (1), internalError (2), tryLater (3),
///     sigRequired (5), unauthorized (6) }
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq, Enumerated)]
#[repr(u32)]
pub enum OcspResponseStatus {
    Successful = 0,
    MalformedRequest = 1,
    InternalError = 2,
    TryLater = 3,
    SigRequired = 5,
    Unauthorized = 6,
}

impl OcspResponseStatus {
    /// The whole OCSPResponse for an error status: `SEQUENCE { ENUMERATED status }`, unsigned.
    pub const fn error_response(self) -> [u8; 5] {
        [0x30, 0x03, 0x0a, 0x01, self as u8]
    }
}

/// OCSPRequest (RFC 6960 §4.1.1), decoded without copying.
///
/// ```text
/// OCSPRequest ::= SEQUENCE {
///     tbsRequest              TBSRequest,
///     optionalSignature   [0] EXPLICIT Signature OPTIONAL }
/// ```
#[derive(Clone, Debug, Sequence)]
pub struct OcspRequest<'a> {
    pub tbs_request: TbsRequest<'a>,
    /// Signed requests may be ignored (RFC 9919): the signature is not checked.
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub optional_signature: Option<AnyRef<'a>>,
}

/// ```text
/// TBSRequest ::= SEQUENCE {
///     version             [0] EXPLICIT Version DEFAULT v1,
///     requestorName       [1] EXPLICIT GeneralName OPTIONAL,
///     requestList             SEQUENCE OF Request,
///     requestExtensions   [2] EXPLICIT Extensions OPTIONAL }
/// ```
#[derive(Clone, Debug, Sequence)]
pub struct TbsRequest<'a> {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub version: Option<u8>,
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    pub requestor_name: Option<AnyRef<'a>>,
    pub request_list: Vec<Request<'a>>,
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT", optional = "true")]
    pub request_extensions: Option<Vec<ExtensionRef<'a>>>,
}

/// ```text
/// Request ::= SEQUENCE {
///     reqCert                     CertID,
///     singleRequestExtensions [0] EXPLICIT Extensions OPTIONAL }
/// ```
#[derive(Clone, Debug, Sequence)]
pub struct Request<'a> {
    pub req_cert: CertIdRef<'a>,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub single_request_extensions: Option<Vec<ExtensionRef<'a>>>,
}

/// CertID as read from a request.
///
/// ```text
/// CertID ::= SEQUENCE {
///     hashAlgorithm       AlgorithmIdentifier,
///     issuerNameHash      OCTET STRING, -- Hash of issuer's DN
///     issuerKeyHash       OCTET STRING, -- Hash of issuer's public key
///     serialNumber        CertificateSerialNumber }
/// ```
#[derive(Clone, Debug, Sequence)]
pub struct CertIdRef<'a> {
    pub hash_algorithm: AlgorithmIdentifierRef<'a>,
    pub issuer_name_hash: &'a OctetStringRef,
    pub issuer_key_hash: &'a OctetStringRef,
    pub serial_number: IntRef<'a>,
}

/// An extension read without copying (RFC 5280 §4.1).
#[derive(Clone, Debug, Sequence)]
pub struct ExtensionRef<'a> {
    pub extn_id: ObjectIdentifier,
    #[asn1(default = "Default::default")]
    pub critical: bool,
    pub extn_value: &'a OctetStringRef,
}

/// CertID, to be written in a response.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct CertId {
    pub hash_algorithm: AlgorithmIdentifierOwned,
    pub issuer_name_hash: OctetString,
    pub issuer_key_hash: OctetString,
    pub serial_number: x509_cert::serial_number::SerialNumber,
}

/// ```text
/// OCSPResponse ::= SEQUENCE {
///     responseStatus         OCSPResponseStatus,
///     responseBytes      [0] EXPLICIT ResponseBytes OPTIONAL }
/// ```
#[derive(Clone, Debug, Sequence)]
pub struct OcspResponse {
    pub response_status: OcspResponseStatus,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub response_bytes: Option<ResponseBytes>,
}

/// ```text
/// ResponseBytes ::= SEQUENCE {
///     responseType   OBJECT IDENTIFIER,
///     response       OCTET STRING }
/// ```
#[derive(Clone, Debug, Sequence)]
pub struct ResponseBytes {
    pub response_type: ObjectIdentifier,
    pub response: OctetString,
}

/// ```text
/// ResponseData ::= SEQUENCE {
///     version              [0] EXPLICIT Version DEFAULT v1,
///     responderID              ResponderID,
///     producedAt               GeneralizedTime,
///     responses                SEQUENCE OF SingleResponse,
///     responseExtensions   [1] EXPLICIT Extensions OPTIONAL }
/// ```
/// The version is v1, the default, so it is never written.
#[derive(Clone, Debug, Sequence)]
pub struct ResponseData {
    pub responder_id: ResponderId,
    pub produced_at: GeneralizedTime,
    pub responses: Vec<SingleResponse>,
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    pub response_extensions: Option<Vec<Extension>>,
}

/// ```text
/// ResponderID ::= CHOICE {
///     byName   [1] Name,
///     byKey    [2] KeyHash }
/// KeyHash ::= OCTET STRING -- SHA-1 hash of the responder's public key (the value of the
///                          -- BIT STRING subjectPublicKey, without tag, length and unused bits)
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Choice)]
pub enum ResponderId {
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", constructed = "true")]
    ByName(x509_cert::name::Name),
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT", constructed = "true")]
    ByKey(OctetString),
}

/// ```text
/// SingleResponse ::= SEQUENCE {
///     certID                       CertID,
///     certStatus                   CertStatus,
///     thisUpdate                   GeneralizedTime,
///     nextUpdate         [0]       EXPLICIT GeneralizedTime OPTIONAL,
///     singleExtensions   [1]       EXPLICIT Extensions OPTIONAL }
/// ```
/// The CertID is kept as its DER so that a live response echoes the request's CertID byte for
/// byte.
#[derive(Clone, Debug, Sequence)]
pub struct SingleResponse {
    pub cert_id: der::asn1::Any,
    pub cert_status: CertStatus,
    pub this_update: GeneralizedTime,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub next_update: Option<GeneralizedTime>,
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    pub single_extensions: Option<Vec<Extension>>,
}

/// ```text
/// CertStatus ::= CHOICE {
///     good        [0]     IMPLICIT NULL,
///     revoked     [1]     IMPLICIT RevokedInfo,
///     unknown     [2]     IMPLICIT UnknownInfo }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Choice)]
pub enum CertStatus {
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT")]
    Good(Null),
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", constructed = "true")]
    Revoked(RevokedInfo),
    #[asn1(context_specific = "2", tag_mode = "IMPLICIT")]
    Unknown(Null),
}

/// ```text
/// RevokedInfo ::= SEQUENCE {
///     revocationTime              GeneralizedTime,
///     revocationReason    [0]     EXPLICIT CRLReason OPTIONAL }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Sequence)]
pub struct RevokedInfo {
    pub revocation_time: GeneralizedTime,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub revocation_reason: Option<CrlReason>,
}

/// A request as the responder uses it: the CertIDs and the nonce.
#[derive(Debug)]
pub struct ParsedRequest<'a> {
    pub cert_ids: Vec<CertIdRef<'a>>,
    /// The nonce extension's extnValue, as it is echoed (RFC 9654).
    pub nonce: Option<&'a [u8]>,
}

/// Why a request is malformed. Each becomes `malformedRequest`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    #[error("not a DER OCSPRequest: {0}")]
    Der(String),
    #[error("the request asks about no certificate")]
    Empty,
    #[error("the request asks about {0} certificates (at most {MAX_CERT_IDS})")]
    TooManyCertIds(usize),
    #[error("the nonce must hold 1 to 128 octets (RFC 9654)")]
    BadNonce,
    #[error("unsupported request version")]
    Version,
    /// RFC 5280 §4.2, which RFC 6960 §4.4 follows: an extension marked critical that is not
    /// understood fails the request.
    #[error("the request has a critical extension {0} this responder does not understand")]
    CriticalExtension(ObjectIdentifier),
    /// A CertID's hash algorithm with parameters other than absent or NULL (RFC 5754 §2).
    #[error("CertID hash algorithm parameters must be absent or NULL")]
    HashParameters,
}

/// Largest OCSP request read (a POST body, or what a GET path decodes to).
pub const MAX_REQUEST: usize = 64 * 1024;

/// Most CertIDs answered in one request (RFC 9919 clients send one).
pub const MAX_CERT_IDS: usize = 16;

/// Decodes a request strictly (DER, no trailing bytes) and extracts what the responder needs.
pub fn parse_request(bytes: &[u8]) -> Result<ParsedRequest<'_>, RequestError> {
    let request = OcspRequest::from_der(bytes).map_err(|e| RequestError::Der(e.to_string()))?;
    let tbs = request.tbs_request;
    if tbs.version.is_some_and(|v| v != 0) {
        return Err(RequestError::Version);
    }
    if tbs.request_list.is_empty() {
        return Err(RequestError::Empty);
    }
    if tbs.request_list.len() > MAX_CERT_IDS {
        return Err(RequestError::TooManyCertIds(tbs.request_list.len()));
    }
    let mut nonce = None;
    for request in &tbs.request_list {
        // No single-request extension is acted upon (a service locator names another
        // responder): a critical one is not understood.
        if let Some(critical) = request
            .single_request_extensions
            .iter()
            .flatten()
            .find(|e| e.critical)
        {
            return Err(RequestError::CriticalExtension(critical.extn_id));
        }
        // The parameters are echoed in live responses and kept with cached "unknown" ones:
        // anything but absent or NULL is refused, which also bounds a CertID's size.
        if let Some(parameters) = &request.req_cert.hash_algorithm.parameters
            && !(parameters.tag() == der::Tag::Null && parameters.value().is_empty())
        {
            return Err(RequestError::HashParameters);
        }
    }
    for extension in tbs.request_extensions.iter().flatten() {
        if extension.critical
            && extension.extn_id != OCSP_NONCE
            && extension.extn_id != OCSP_ACCEPTABLE_RESPONSES
        {
            return Err(RequestError::CriticalExtension(extension.extn_id));
        }
        if extension.extn_id == OCSP_NONCE {
            let value = extension.extn_value.as_bytes();
            // RFC 9654 §2.1: Nonce ::= OCTET STRING (SIZE(1..128)), carried as the DER of an
            // OCTET STRING in extnValue. Reject 0 or more than 128 octets.
            let inner = OctetString::from_der(value)
                .map(|o| o.as_bytes().len())
                .unwrap_or(value.len());
            if inner == 0 || inner > 128 {
                return Err(RequestError::BadNonce);
            }
            nonce = Some(value);
        }
    }
    Ok(ParsedRequest {
        cert_ids: tbs.request_list.into_iter().map(|r| r.req_cert).collect(),
        nonce,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `openssl ocsp -issuer ac-agents.pem -serial 0x1234 -reqout req.der` (OpenSSL 3.0: SHA-1
    /// CertID with NULL parameters, a 16-octet nonce).
    const OPENSSL_REQUEST: &str = "30683066303f303d303b300906052b0e03021a050004144d24b94f5e911d3283e176ad9ff2707af1c01da504142271e954db2eed78ea4d4f3703756420d0cc0ba502021234a2233021301f06092b0601050507300102041204106d6e57cc098e5b53bff027d2f6014f9e";

    #[test]
    fn an_openssl_request_parses() {
        let der = hex::decode(OPENSSL_REQUEST).unwrap();
        let parsed = parse_request(&der).unwrap();
        assert_eq!(parsed.cert_ids.len(), 1);
        assert_eq!(parsed.cert_ids[0].serial_number.as_bytes(), &[0x12, 0x34]);
        assert_eq!(parsed.cert_ids[0].issuer_key_hash.as_bytes().len(), 20);
        assert_eq!(parsed.nonce.map(<[u8]>::len), Some(18));
    }

    #[test]
    fn garbage_and_trailing_bytes_are_malformed() {
        let der = hex::decode(OPENSSL_REQUEST).unwrap();
        let mut trailing = der.clone();
        trailing.push(0);
        assert!(matches!(
            parse_request(&trailing),
            Err(RequestError::Der(_))
        ));
        assert!(parse_request(&der[..der.len() - 1]).is_err());
        assert!(parse_request(b"").is_err());
        assert!(parse_request(b"GET / HTTP/1.1").is_err());
    }

    /// The OpenSSL request with its nonce extension marked critical and its OID changed.
    fn with_extension(oid_last: u8, critical: bool) -> Vec<u8> {
        let mut der = hex::decode(OPENSSL_REQUEST).unwrap();
        // ... 06 09 2b 06 01 05 05 07 30 01 02 04 12 ...: the nonce's OID and its value.
        let at = der
            .windows(11)
            .position(|w| w == hex::decode("06092b0601050507300102").unwrap())
            .unwrap();
        der[at + 10] = oid_last;
        if critical {
            // Insert BOOLEAN TRUE after the OID, and grow every enclosing length by 3.
            der.splice(at + 11..at + 11, [0x01, 0x01, 0xff]);
            for (position, _) in [
                (0usize, 0),
                (2, 0),
                (at - 2 - 4, 0),
                (at - 2 - 2, 0),
                (at - 2, 0),
            ] {
                der[position + 1] += 3;
            }
        }
        der
    }

    #[test]
    fn critical_extensions_that_are_not_understood_are_refused() {
        // The nonce, critical: understood, accepted.
        assert!(parse_request(&with_extension(0x02, true)).is_ok());
        // An unknown extension (…48.1.99), not critical: ignored (RFC 6960 §4.4).
        let unknown = with_extension(99, false);
        assert_eq!(parse_request(&unknown).unwrap().nonce, None);
        // The same, critical: refused.
        assert_eq!(
            parse_request(&with_extension(99, true)).unwrap_err(),
            RequestError::CriticalExtension(ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.99"))
        );
    }

    #[test]
    fn cert_id_hash_parameters_must_be_absent_or_null() {
        let der = hex::decode(OPENSSL_REQUEST).unwrap();
        // 30 09 06 05 2b0e03021a 05 00: SHA-1 with NULL parameters.
        let null = hex::decode("300906052b0e03021a0500").unwrap();
        let at = der.windows(null.len()).position(|w| w == null).unwrap();
        // NULL -> OCTET STRING of length 0 (same size): refused.
        let mut other = der.clone();
        other[at + 9] = 0x04;
        assert_eq!(
            parse_request(&other).unwrap_err(),
            RequestError::HashParameters
        );
        // NULL with content is not DER NULL at all.
        let mut fat = der.clone();
        fat[at + 9] = 0x30;
        assert!(parse_request(&fat).is_err());
        assert!(parse_request(&der).is_ok());
    }

    #[test]
    fn error_responses_are_five_octets() {
        assert_eq!(
            OcspResponseStatus::MalformedRequest.error_response(),
            [0x30, 3, 0x0a, 1, 1]
        );
        assert_eq!(
            OcspResponseStatus::Unauthorized.error_response(),
            [0x30, 3, 0x0a, 1, 6]
        );
    }
}
