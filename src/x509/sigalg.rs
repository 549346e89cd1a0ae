//! Signature algorithms: the identifiers the CA writes, and verification of signatures made by
//! others (CSRs, RA requests) or by the HSM (checked before anything leaves the CA).
//!
//! Verification uses aws-lc-rs. The CA never signs in software: signing is in the `hsm` module
//! (a floor above this one).
use core::fmt;

use aws_lc_rs::signature::{self as awslc, VerificationAlgorithm};
use der::asn1::{Any, UintRef};
use der::{Encode, Sequence};
use serde::{Deserialize, Serialize};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};

use super::keys::{self, Curve, PublicKeyKind};
use super::oid;

/// The schemes the CA's own keys sign with (RGS B1: SHA-2 only; docs/design.md#common-rules).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureScheme {
    EcdsaP256Sha256,
    EcdsaP384Sha384,
    RsaPkcs1Sha256,
    RsaPkcs1Sha384,
    RsaPssSha256,
    RsaPssSha384,
}

impl SignatureScheme {
    /// The AlgorithmIdentifier written in `signature` and `signatureAlgorithm` (the two must be
    /// equal byte for byte, RFC 5280 §4.1.1.2). RSA PKCS#1 carries NULL parameters, ECDSA none,
    /// PSS the full RSASSA-PSS-params with NULL hash parameters, as OpenSSL and the CA/B Forum
    /// encode them.
    pub fn algorithm_identifier(self) -> Result<AlgorithmIdentifierOwned, der::Error> {
        let (oid, parameters) = match self {
            SignatureScheme::EcdsaP256Sha256 => (oid::ECDSA_WITH_SHA256, None),
            SignatureScheme::EcdsaP384Sha384 => (oid::ECDSA_WITH_SHA384, None),
            SignatureScheme::RsaPkcs1Sha256 => (oid::SHA256_WITH_RSA, Some(Any::null())),
            SignatureScheme::RsaPkcs1Sha384 => (oid::SHA384_WITH_RSA, Some(Any::null())),
            SignatureScheme::RsaPssSha256 => (
                oid::RSASSA_PSS,
                Some(Any::encode_from(&PssParameters::for_hash(
                    HashAlgorithm::Sha256,
                )?)?),
            ),
            SignatureScheme::RsaPssSha384 => (
                oid::RSASSA_PSS,
                Some(Any::encode_from(&PssParameters::for_hash(
                    HashAlgorithm::Sha384,
                )?)?),
            ),
        };
        Ok(AlgorithmIdentifierOwned { oid, parameters })
    }

    pub fn hash(self) -> HashAlgorithm {
        match self {
            SignatureScheme::EcdsaP256Sha256
            | SignatureScheme::RsaPkcs1Sha256
            | SignatureScheme::RsaPssSha256 => HashAlgorithm::Sha256,
            SignatureScheme::EcdsaP384Sha384
            | SignatureScheme::RsaPkcs1Sha384
            | SignatureScheme::RsaPssSha384 => HashAlgorithm::Sha384,
        }
    }

    pub fn is_ecdsa(self) -> bool {
        matches!(
            self,
            SignatureScheme::EcdsaP256Sha256 | SignatureScheme::EcdsaP384Sha384
        )
    }
}

impl fmt::Display for SignatureScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SignatureScheme::EcdsaP256Sha256 => "ecdsa-with-SHA256",
            SignatureScheme::EcdsaP384Sha384 => "ecdsa-with-SHA384",
            SignatureScheme::RsaPkcs1Sha256 => "sha256WithRSAEncryption",
            SignatureScheme::RsaPkcs1Sha384 => "sha384WithRSAEncryption",
            SignatureScheme::RsaPssSha256 => "RSASSA-PSS with SHA-256",
            SignatureScheme::RsaPssSha384 => "RSASSA-PSS with SHA-384",
        })
    }
}

/// SHA-2 digests used with signatures.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum HashAlgorithm {
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlgorithm {
    pub fn oid(self) -> const_oid::ObjectIdentifier {
        match self {
            HashAlgorithm::Sha256 => oid::SHA256,
            HashAlgorithm::Sha384 => oid::SHA384,
            HashAlgorithm::Sha512 => oid::SHA512,
        }
    }

    pub fn output_len(self) -> usize {
        match self {
            HashAlgorithm::Sha256 => 32,
            HashAlgorithm::Sha384 => 48,
            HashAlgorithm::Sha512 => 64,
        }
    }

    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        let algorithm = match self {
            HashAlgorithm::Sha256 => &aws_lc_rs::digest::SHA256,
            HashAlgorithm::Sha384 => &aws_lc_rs::digest::SHA384,
            HashAlgorithm::Sha512 => &aws_lc_rs::digest::SHA512,
        };
        aws_lc_rs::digest::digest(algorithm, data).as_ref().to_vec()
    }

    pub fn from_oid(oid: const_oid::ObjectIdentifier) -> Option<Self> {
        [
            HashAlgorithm::Sha256,
            HashAlgorithm::Sha384,
            HashAlgorithm::Sha512,
        ]
        .into_iter()
        .find(|h| h.oid() == oid)
    }
}

/// RSASSA-PSS-params (RFC 4055 §3.1).
///
/// ```text
/// RSASSA-PSS-params ::= SEQUENCE {
///     hashAlgorithm      [0] HashAlgorithm DEFAULT sha1Identifier,
///     maskGenAlgorithm   [1] MaskGenAlgorithm DEFAULT mgf1SHA1Identifier,
///     saltLength         [2] INTEGER DEFAULT 20,
///     trailerField       [3] INTEGER DEFAULT 1 }
/// ```
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct PssParameters {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub hash_algorithm: Option<AlgorithmIdentifierOwned>,
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    pub mask_gen_algorithm: Option<AlgorithmIdentifierOwned>,
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT", optional = "true")]
    pub salt_length: Option<u32>,
    #[asn1(context_specific = "3", tag_mode = "EXPLICIT", optional = "true")]
    pub trailer_field: Option<u32>,
}

impl PssParameters {
    /// MGF1 with the same hash, salt as long as the hash, trailer field default (omitted).
    pub fn for_hash(hash: HashAlgorithm) -> Result<Self, der::Error> {
        let hash_id = AlgorithmIdentifierOwned {
            oid: hash.oid(),
            parameters: Some(Any::null()),
        };
        Ok(Self {
            hash_algorithm: Some(hash_id.clone()),
            mask_gen_algorithm: Some(AlgorithmIdentifierOwned {
                oid: oid::MGF1,
                parameters: Some(Any::encode_from(&hash_id)?),
            }),
            salt_length: Some(hash.output_len() as u32),
            trailer_field: None,
        })
    }

    /// The hash of a PSS signature, if MGF1 uses the same hash and the salt is as long as it
    /// (the only PSS shape sceau verifies).
    fn hash(&self) -> Option<HashAlgorithm> {
        let hash = HashAlgorithm::from_oid(self.hash_algorithm.as_ref()?.oid)?;
        let mgf = self.mask_gen_algorithm.as_ref()?;
        let mgf_hash = mgf
            .parameters
            .as_ref()?
            .decode_as::<AlgorithmIdentifierOwned>()
            .ok()?;
        let trailer_ok = self.trailer_field.is_none_or(|t| t == 1);
        (mgf.oid == oid::MGF1
            && mgf_hash.oid == hash.oid()
            && self.salt_length == Some(hash.output_len() as u32)
            && trailer_ok)
            .then_some(hash)
    }
}

/// Verifies `signature` over `message` with the public key in `spki`, for the algorithm named by
/// `algorithm`. SHA-1 and unknown algorithms are refused.
pub fn verify(
    spki: &SubjectPublicKeyInfoOwned,
    algorithm: &AlgorithmIdentifierOwned,
    message: &[u8],
    signature: &[u8],
) -> Result<(), SignatureError> {
    let kind = keys::describe(spki).map_err(SignatureError::Key)?;
    let verification: &dyn VerificationAlgorithm = match (kind, algorithm.oid) {
        (PublicKeyKind::Ec(curve), alg) => {
            // RFC 5758 §3.2: the parameters field MUST be absent for ecdsa-with-SHA2.
            if algorithm.parameters.is_some() {
                return Err(SignatureError::Parameters);
            }
            match (curve, alg) {
                (Curve::P256, oid::ECDSA_WITH_SHA256) => &awslc::ECDSA_P256_SHA256_ASN1,
                (Curve::P256, oid::ECDSA_WITH_SHA384) => &awslc::ECDSA_P256_SHA384_ASN1,
                (Curve::P256, oid::ECDSA_WITH_SHA512) => &awslc::ECDSA_P256_SHA512_ASN1,
                (Curve::P384, oid::ECDSA_WITH_SHA256) => &awslc::ECDSA_P384_SHA256_ASN1,
                (Curve::P384, oid::ECDSA_WITH_SHA384) => &awslc::ECDSA_P384_SHA384_ASN1,
                (Curve::P384, oid::ECDSA_WITH_SHA512) => &awslc::ECDSA_P384_SHA512_ASN1,
                (_, other) => return Err(SignatureError::Unsupported(other)),
            }
        }
        (PublicKeyKind::Rsa { .. }, oid::RSASSA_PSS) => {
            let params = algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as::<PssParameters>().ok())
                .ok_or(SignatureError::Parameters)?;
            match params.hash().ok_or(SignatureError::Parameters)? {
                HashAlgorithm::Sha256 => &awslc::RSA_PSS_2048_8192_SHA256,
                HashAlgorithm::Sha384 => &awslc::RSA_PSS_2048_8192_SHA384,
                HashAlgorithm::Sha512 => &awslc::RSA_PSS_2048_8192_SHA512,
            }
        }
        (PublicKeyKind::Rsa { .. }, alg) => {
            // RFC 4055 §5: NULL parameters (absent is tolerated when reading).
            if algorithm.parameters.as_ref().is_some_and(|p| !p.is_null()) {
                return Err(SignatureError::Parameters);
            }
            match alg {
                oid::SHA256_WITH_RSA => &awslc::RSA_PKCS1_2048_8192_SHA256,
                oid::SHA384_WITH_RSA => &awslc::RSA_PKCS1_2048_8192_SHA384,
                oid::SHA512_WITH_RSA => &awslc::RSA_PKCS1_2048_8192_SHA512,
                oid::SHA1_WITH_RSA => return Err(SignatureError::WeakHash),
                other => return Err(SignatureError::Unsupported(other)),
            }
        }
    };
    let key_bytes = spki.subject_public_key.raw_bytes();
    awslc::UnparsedPublicKey::new(verification, key_bytes)
        .verify(message, signature)
        .map_err(|_| SignatureError::Invalid)
}

/// Converts a PKCS#11 ECDSA signature (r || s, each the size of the group order) to the DER
/// `Ecdsa-Sig-Value` X.509 carries (RFC 5480 §2.2 ... RFC 3279 §2.2.3).
pub fn ecdsa_raw_to_der(raw: &[u8]) -> Result<Vec<u8>, der::Error> {
    #[derive(Sequence)]
    struct EcdsaSigValue<'a> {
        r: UintRef<'a>,
        s: UintRef<'a>,
    }
    if raw.is_empty() || !raw.len().is_multiple_of(2) {
        return Err(der::ErrorKind::Length {
            tag: der::Tag::Sequence,
        }
        .into());
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    EcdsaSigValue {
        r: UintRef::new(r)?,
        s: UintRef::new(s)?,
    }
    .to_der()
}

/// Why a signature was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignatureError {
    #[error("the signature does not verify")]
    Invalid,
    #[error("signature algorithm {0} is not supported for this key")]
    Unsupported(const_oid::ObjectIdentifier),
    #[error("SHA-1 signatures are not accepted (RGS B1 RègleHash-2)")]
    WeakHash,
    #[error("signature algorithm parameters are malformed or not supported")]
    Parameters,
    #[error("public key: {0}")]
    Key(keys::KeyError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pss_sha256_identifier_matches_openssl_bytes() {
        let der = SignatureScheme::RsaPssSha256
            .algorithm_identifier()
            .unwrap()
            .to_der()
            .unwrap();
        // As OpenSSL and the CA/B Forum BRs (7.1.3.2.1) encode RSASSA-PSS with SHA-256.
        let expected = hex::decode(concat!(
            "304106092a864886f70d01010a3034a00f300d06096086480165030402010500",
            "a11c301a06092a864886f70d010108300d06096086480165030402010500a203020120"
        ))
        .unwrap();
        assert_eq!(der, expected);
    }

    #[test]
    fn ecdsa_identifier_has_no_parameters_and_rsa_has_null() {
        for (scheme, expected) in [
            (SignatureScheme::EcdsaP384Sha384, "300a06082a8648ce3d040303"),
            (
                SignatureScheme::RsaPkcs1Sha256,
                "300d06092a864886f70d01010b0500",
            ),
        ] {
            let der = scheme.algorithm_identifier().unwrap().to_der().unwrap();
            assert_eq!(hex::encode(der), expected, "{scheme:?}");
        }
    }

    #[test]
    fn raw_ecdsa_signature_becomes_minimal_der() {
        let mut raw = vec![0u8; 64];
        raw[31] = 1; // r = 1 (leading zeros stripped)
        raw[32] = 0x80; // s has its top bit set: needs a 0x00 pad
        let der = ecdsa_raw_to_der(&raw).unwrap();
        assert_eq!(&der[..5], &[0x30, 0x26, 0x02, 0x01, 0x01]);
        assert_eq!(&der[5..8], &[0x02, 0x21, 0x00]);
        assert!(ecdsa_raw_to_der(&raw[..63]).is_err());
    }
}
