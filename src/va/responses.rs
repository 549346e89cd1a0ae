//! Building and signing OCSP responses (RFC 6960 §4.2, RFC 9919 profile;
//! docs/design.md#ocsp-responses).
//!
//! Every response: ResponderID byKey (SHA-1 of the responder's public key, 20 octets, also for
//! SHA-256 CertIDs), producedAt, one SingleResponse per CertID with thisUpdate, nextUpdate and
//! archiveCutoff (the issuing CA's notBefore), signed by the delegated responder key in the HSM,
//! the responder certificate in `certs`. A nonce is echoed only when asked for (RFC 9654).
//!
//! A response is kept as its *head* (every octet up to and including the signature, with the
//! outer lengths already counting the certificates) plus the `certs` tail, which is the same for
//! every response: a million pre-signed responses share one copy of the responder certificate.
use bytes::Bytes;
use der::asn1::{GeneralizedTime, Null, OctetString};
use der::{Decode, Encode};
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::CrlReason;

use super::VaError;
use crate::hsm::SigningKey;
use crate::store::IssuerId;
use crate::x509::ocsp::{
    CertStatus, OCSP_ARCHIVE_CUTOFF, OCSP_NONCE, ResponderId, ResponseData, RevokedInfo,
    SingleResponse,
};
use crate::x509::revocation::RevocationReason;
use crate::x509::tlv::header;
use crate::x509::{Serial, Timestamp, keys};

/// The CertID hash algorithms answered (RFC 9919: SHA-256; legacy clients: SHA-1).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum CertIdHash {
    Sha1,
    Sha256,
}

impl CertIdHash {
    pub const ALL: [CertIdHash; 2] = [CertIdHash::Sha1, CertIdHash::Sha256];

    pub fn from_oid(oid: const_oid::ObjectIdentifier) -> Option<Self> {
        match oid {
            crate::x509::oid::SHA1 => Some(CertIdHash::Sha1),
            crate::x509::oid::SHA256 => Some(CertIdHash::Sha256),
            _ => None,
        }
    }

    /// The key code in the store (`ResponseKey::hash`).
    pub fn code(self) -> u8 {
        match self {
            CertIdHash::Sha1 => 1,
            CertIdHash::Sha256 => 2,
        }
    }

    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            CertIdHash::Sha1 => keys::sha1(data).to_vec(),
            CertIdHash::Sha256 => keys::sha256(data).to_vec(),
        }
    }

    /// The AlgorithmIdentifier written in CertIDs: with NULL parameters, as OpenSSL writes it.
    fn algorithm_der(self) -> &'static [u8] {
        match self {
            CertIdHash::Sha1 => &[
                0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00,
            ],
            CertIdHash::Sha256 => &[
                0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
                0x00,
            ],
        }
    }
}

/// What identifies an issuing CA in CertIDs, for both hash algorithms.
#[derive(Clone, Debug)]
pub struct IssuerIdentity {
    pub id: IssuerId,
    pub name: String,
    name_hashes: [Vec<u8>; 2],
    key_hashes: [Vec<u8>; 2],
    /// archiveCutoff: the CA's notBefore (EN 319 411-2 CSS-6.3.10-10).
    pub archive_cutoff: Timestamp,
}

impl IssuerIdentity {
    pub fn new(
        id: IssuerId,
        name: &str,
        subject_der: &[u8],
        public_key_bits: &[u8],
        not_before: Timestamp,
    ) -> Self {
        Self {
            id,
            name: name.to_owned(),
            name_hashes: CertIdHash::ALL.map(|h| h.digest(subject_der)),
            key_hashes: CertIdHash::ALL.map(|h| h.digest(public_key_bits)),
            archive_cutoff: not_before,
        }
    }

    pub fn matches(&self, hash: CertIdHash, name_hash: &[u8], key_hash: &[u8]) -> bool {
        let i = hash as usize;
        self.name_hashes[i] == name_hash && self.key_hashes[i] == key_hash
    }

    /// The DER of this issuer's CertID for `serial`.
    pub fn cert_id(&self, hash: CertIdHash, serial: &Serial) -> Result<Vec<u8>, der::Error> {
        let i = hash as usize;
        let mut body = hash.algorithm_der().to_vec();
        OctetString::new(self.name_hashes[i].clone())?.encode_to_vec(&mut body)?;
        OctetString::new(self.key_hashes[i].clone())?.encode_to_vec(&mut body)?;
        serial.to_serial_number()?.encode_to_vec(&mut body)?;
        let mut out = header(0x30, body.len());
        out.extend_from_slice(&body);
        Ok(out)
    }
}

/// The status a response asserts.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Status {
    Good,
    Revoked {
        at: Timestamp,
        reason: RevocationReason,
    },
    /// Never issued by this CA: never "good" (EN 319 411-1 OVR-6.6.3-02).
    Unknown,
}

/// The `certs [0] EXPLICIT SEQUENCE OF Certificate` that ends every response a responder
/// signs: its certificate, alone.
pub fn certs_tail(certificate_der: &[u8]) -> Vec<u8> {
    let sequence = header(0x30, certificate_der.len());
    let mut tail = header(0xa0, sequence.len() + certificate_der.len());
    tail.extend_from_slice(&sequence);
    tail.extend_from_slice(certificate_der);
    tail
}

/// Where the `certs` of a DER OCSPResponse start (RFC 6960 §4.2.1: the last field of the
/// BasicOCSPResponse), when it carries them: what a responder node shares between the
/// responses one responder signed.
pub fn certs_offset(der: &[u8]) -> Option<usize> {
    use der::{Decode, Header, Reader, SliceReader};
    let mut reader = SliceReader::new(der).ok()?;
    Header::decode(&mut reader).ok()?; // OCSPResponse
    reader.tlv_bytes().ok()?; // responseStatus
    Header::decode(&mut reader).ok()?; // [0] EXPLICIT
    Header::decode(&mut reader).ok()?; // ResponseBytes
    reader.tlv_bytes().ok()?; // responseType
    Header::decode(&mut reader).ok()?; // response OCTET STRING
    Header::decode(&mut reader).ok()?; // BasicOCSPResponse
    for _ in 0..3 {
        reader.tlv_bytes().ok()?; // tbsResponseData, signatureAlgorithm, signature
    }
    let offset = u32::from(reader.position()) as usize;
    (der.get(offset) == Some(&0xa0)).then_some(offset)
}

/// A signed response: its head, and the `certs` tail of the responder that signed it (shared,
/// static), so that responses of an old signer are served with its certificate until re-signed.
#[derive(Clone, Debug)]
pub struct SignedResponse {
    pub head: Bytes,
    pub tail: Bytes,
    pub this_update: Timestamp,
    pub next_update: Timestamp,
}

impl SignedResponse {
    /// Whether `signer` made this response (its tail is that signer's, by address).
    pub fn signed_by(&self, signer: &ResponseSigner) -> bool {
        self.tail.as_ptr() == signer.certs_tail().as_ptr()
    }
}

/// The delegated responder: its HSM key and certificate.
#[derive(Debug)]
pub struct ResponseSigner {
    key: SigningKey,
    key_hash: [u8; 20],
    signature_algorithm: Vec<u8>,
    certs_tail: Bytes,
    pub validity_seconds: u64,
}

impl ResponseSigner {
    pub fn new(
        key: SigningKey,
        certificate_der: &[u8],
        validity_seconds: u64,
    ) -> Result<Self, VaError> {
        let encoding = |e: der::Error| VaError::Encoding(e.to_string());
        let signature_algorithm = key
            .scheme()
            .algorithm_identifier()
            .map_err(encoding)?
            .to_der()
            .map_err(encoding)?;
        // certs [0] EXPLICIT SEQUENCE OF Certificate, with the one responder certificate.
        let tail = certs_tail(certificate_der);
        Ok(Self {
            key_hash: keys::key_identifier(key.public_key()),
            // Responders sign at request rate: through in-memory copies of their key.
            key: key.session_copy(),
            signature_algorithm,
            // Leaked once per signer (about 1 KiB): a static Bytes clones without touching a
            // reference count that both cores would fight over on every response.
            certs_tail: Bytes::from_static(Box::leak(tail.into_boxed_slice())),
            validity_seconds,
        })
    }

    /// The shared `certs` tail that completes every head.
    pub fn certs_tail(&self) -> &Bytes {
        &self.certs_tail
    }

    /// The responder key identifier (ResponderID byKey).
    pub fn key_hash(&self) -> [u8; 20] {
        self.key_hash
    }

    /// A SingleResponse for a CertID given as DER.
    pub fn single(
        cert_id_der: &[u8],
        status: Status,
        this_update: Timestamp,
        next_update: Timestamp,
        archive_cutoff: Timestamp,
    ) -> Result<SingleResponse, der::Error> {
        let cert_status = match status {
            Status::Good => CertStatus::Good(Null),
            Status::Unknown => CertStatus::Unknown(Null),
            Status::Revoked { at, reason } => CertStatus::Revoked(RevokedInfo {
                revocation_time: at.to_generalized_time()?,
                revocation_reason: reason.code().map(crl_reason).transpose()?,
            }),
        };
        let cutoff: GeneralizedTime = archive_cutoff.to_generalized_time()?;
        Ok(SingleResponse {
            cert_id: der::asn1::Any::from_der(cert_id_der)?,
            cert_status,
            this_update: this_update.to_generalized_time()?,
            next_update: Some(next_update.to_generalized_time()?),
            single_extensions: Some(vec![Extension {
                extn_id: OCSP_ARCHIVE_CUTOFF,
                critical: false,
                extn_value: OctetString::new(cutoff.to_der()?)?,
            }]),
        })
    }

    /// Whether the responder key's token is connected.
    pub fn available(&self) -> bool {
        self.key.available()
    }

    /// Whether the token holds this responder's key now (a real call; blocking).
    pub fn probe(&self) -> bool {
        self.key.probe()
    }

    /// Signs a response for `singles`, echoing `nonce` (the request's extnValue) when given.
    ///
    /// Every response, pre-signed or live, is checked against the responder's public key
    /// before it leaves, like every certificate and CRL, on the HSM session thread that signed
    /// it (off the runtime). A live response was once checked one time in 16, to spare CPU:
    /// the fault campaign (tests/fault_campaign.rs) then saw a token signing with another key
    /// release about 1,000 bad responses in 100,000. A failed check drops the response (the
    /// client gets the pre-signed one or tryLater) and is reported like an HSM fault.
    pub async fn sign(
        &self,
        singles: Vec<SingleResponse>,
        produced_at: Timestamp,
        nonce: Option<&[u8]>,
    ) -> Result<Bytes, VaError> {
        let data = self.response_data(singles, produced_at, nonce)?;
        let signature = self.key.sign_verified_async(&data).await?;
        Ok(self.assemble(&data, &signature))
    }

    /// [`ResponseSigner::sign`] for blocking callers.
    pub fn sign_blocking(
        &self,
        singles: Vec<SingleResponse>,
        produced_at: Timestamp,
    ) -> Result<Bytes, VaError> {
        let data = self.response_data(singles, produced_at, None)?;
        let signature = self.key.sign(&data)?;
        self.key.verify(&data, &signature)?;
        Ok(self.assemble(&data, &signature))
    }

    fn response_data(
        &self,
        singles: Vec<SingleResponse>,
        produced_at: Timestamp,
        nonce: Option<&[u8]>,
    ) -> Result<Vec<u8>, VaError> {
        let encoding = |e: der::Error| VaError::Encoding(e.to_string());
        let response_extensions = match nonce {
            Some(value) => Some(vec![Extension {
                extn_id: OCSP_NONCE,
                critical: false,
                extn_value: OctetString::new(value).map_err(encoding)?,
            }]),
            None => None,
        };
        ResponseData {
            responder_id: ResponderId::ByKey(
                OctetString::new(self.key_hash.to_vec()).map_err(encoding)?,
            ),
            produced_at: produced_at.to_generalized_time().map_err(encoding)?,
            responses: singles,
            response_extensions,
        }
        .to_der()
        .map_err(encoding)
    }

    /// OCSPResponse { successful, [0] ResponseBytes { basic, OCTET STRING { BasicOCSPResponse {
    /// data, algorithm, signature, certs } } } }, minus the certs tail.
    fn assemble(&self, data: &[u8], signature: &[u8]) -> Bytes {
        let bits = header(0x03, signature.len() + 1);
        let basic_len = data.len()
            + self.signature_algorithm.len()
            + bits.len()
            + 1
            + signature.len()
            + self.certs_tail.len();
        let basic = header(0x30, basic_len);
        let octets = header(0x04, basic.len() + basic_len);
        // id-pkix-ocsp-basic, 1.3.6.1.5.5.7.48.1.1 (crate::x509::ocsp::OCSP_BASIC).
        const BASIC_OID: [u8; 11] = [
            0x06, 0x09, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x01,
        ];
        let response_bytes_len = BASIC_OID.len() + octets.len() + basic.len() + basic_len;
        let response_bytes = header(0x30, response_bytes_len);
        let explicit = header(0xa0, response_bytes.len() + response_bytes_len);
        let outer_len = 3 + explicit.len() + response_bytes.len() + response_bytes_len;
        let outer = header(0x30, outer_len);
        let mut head = Vec::with_capacity(outer.len() + outer_len - self.certs_tail.len());
        head.extend_from_slice(&outer);
        head.extend_from_slice(&[0x0a, 0x01, 0x00]); // successful
        head.extend_from_slice(&explicit);
        head.extend_from_slice(&response_bytes);
        head.extend_from_slice(&BASIC_OID);
        head.extend_from_slice(&octets);
        head.extend_from_slice(&basic);
        head.extend_from_slice(data);
        head.extend_from_slice(&self.signature_algorithm);
        head.extend_from_slice(&bits);
        head.push(0);
        head.extend_from_slice(signature);
        Bytes::from(head)
    }
}

fn crl_reason(code: u8) -> Result<CrlReason, der::Error> {
    Ok(match code {
        1 => CrlReason::KeyCompromise,
        2 => CrlReason::CaCompromise,
        3 => CrlReason::AffiliationChanged,
        4 => CrlReason::Superseded,
        5 => CrlReason::CessationOfOperation,
        9 => CrlReason::PrivilegeWithdrawn,
        _ => {
            return Err(der::ErrorKind::Value {
                tag: der::Tag::Enumerated,
            }
            .into());
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The offset of the `certs` tail in a response laid out as a responder signs it, and
    /// none in a response without certificates or in garbage.
    #[test]
    fn the_certs_tail_of_a_response_is_found() {
        const BASIC_OID: [u8; 11] = [
            0x06, 0x09, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x01,
        ];
        let wrap = |tag: u8, parts: &[&[u8]]| {
            let body: Vec<u8> = parts.concat();
            let mut out = header(tag, body.len());
            out.extend_from_slice(&body);
            out
        };
        let tail = certs_tail(&wrap(0x30, &[&[0x02, 0x01, 0x05]]));
        let response = |with_tail: bool| {
            let mut basic: Vec<&[u8]> = vec![&[0x30, 0x00], &[0x30, 0x00], &[0x03, 0x01, 0x00]];
            if with_tail {
                basic.push(&tail);
            }
            let basic = wrap(0x30, &basic);
            let bytes = wrap(0x30, &[&BASIC_OID, &wrap(0x04, &[&basic])]);
            wrap(0x30, &[&[0x0a, 0x01, 0x00], &wrap(0xa0, &[&bytes])])
        };
        let with = response(true);
        let offset = certs_offset(&with).unwrap();
        assert_eq!(&with[offset..], &tail[..]);
        assert_eq!(certs_offset(&response(false)), None);
        assert_eq!(certs_offset(&[0x30, 0x03, 0x0a, 0x01, 0x01]), None);
        assert_eq!(certs_offset(b"garbage"), None);
    }
}
