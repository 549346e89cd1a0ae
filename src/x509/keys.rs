//! Public keys as the policies see them: algorithm, size, curve; and key identifiers.
use core::fmt;

use aws_lc_rs::digest;
use const_oid::ObjectIdentifier;
use der::asn1::UintRef;
use der::{Decode, Encode, Sequence};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};

use super::oid;

/// The elliptic curves sceau accepts (RGS B1 RègleECp-2; docs/design.md#common-rules).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Curve {
    #[serde(rename = "P-256")]
    P256,
    #[serde(rename = "P-384")]
    P384,
}

impl Curve {
    pub fn oid(self) -> ObjectIdentifier {
        match self {
            Curve::P256 => oid::SECP256R1,
            Curve::P384 => oid::SECP384R1,
        }
    }

    pub fn from_oid(oid: ObjectIdentifier) -> Option<Self> {
        [Curve::P256, Curve::P384]
            .into_iter()
            .find(|c| c.oid() == oid)
    }

    /// Length of an uncompressed point: 0x04 || X || Y.
    pub fn point_len(self) -> usize {
        match self {
            Curve::P256 => 65,
            Curve::P384 => 97,
        }
    }
}

impl fmt::Display for Curve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
        })
    }
}

/// What a subjectPublicKeyInfo holds, in the terms the policies use.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PublicKeyKind {
    Rsa { modulus_bits: u32, exponent: u64 },
    Ec(Curve),
}

impl fmt::Display for PublicKeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublicKeyKind::Rsa { modulus_bits, .. } => write!(f, "RSA-{modulus_bits}"),
            PublicKeyKind::Ec(curve) => write!(f, "EC {curve}"),
        }
    }
}

/// RSAPublicKey (RFC 8017 appendix A.1.1).
///
/// ```text
/// RSAPublicKey ::= SEQUENCE {
///     modulus           INTEGER,  -- n
///     publicExponent    INTEGER   -- e
/// }
/// ```
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct RsaPublicKey<'a> {
    pub modulus: UintRef<'a>,
    pub public_exponent: UintRef<'a>,
}

/// Reads the algorithm and size of a public key; refuses the ones sceau cannot use at all.
pub fn describe(spki: &SubjectPublicKeyInfoOwned) -> Result<PublicKeyKind, KeyError> {
    let key_bytes = spki
        .subject_public_key
        .as_bytes()
        .ok_or(KeyError::Malformed("subjectPublicKey has unused bits"))?;
    if spki.algorithm.oid == oid::RSA_ENCRYPTION {
        // RFC 3279 §2.3.1: the parameters field MUST have ASN.1 type NULL.
        let params_null = spki
            .algorithm
            .parameters
            .as_ref()
            .is_some_and(|p| p.is_null());
        if !params_null {
            return Err(KeyError::Malformed("rsaEncryption parameters are not NULL"));
        }
        let key = RsaPublicKey::from_der(key_bytes)
            .map_err(|_| KeyError::Malformed("RSAPublicKey does not decode"))?;
        let modulus = key.modulus.as_bytes();
        let first = *modulus
            .first()
            .ok_or(KeyError::Malformed("empty modulus"))?;
        let modulus_bits = (modulus.len() as u32 - 1) * 8 + (8 - first.leading_zeros());
        let e = key.public_exponent.as_bytes();
        if e.len() > 8 {
            return Err(KeyError::Malformed("public exponent longer than 64 bits"));
        }
        let exponent = e.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        Ok(PublicKeyKind::Rsa {
            modulus_bits,
            exponent,
        })
    } else if spki.algorithm.oid == oid::EC_PUBLIC_KEY {
        // RFC 5480 §2.1.1: namedCurve only.
        let curve_oid = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<ObjectIdentifier>().ok())
            .ok_or(KeyError::Malformed("id-ecPublicKey without a named curve"))?;
        let curve = Curve::from_oid(curve_oid).ok_or(KeyError::UnsupportedCurve(curve_oid))?;
        if key_bytes.len() != curve.point_len() || key_bytes.first() != Some(&0x04) {
            return Err(KeyError::Malformed(
                "EC point is not uncompressed or has the wrong size",
            ));
        }
        Ok(PublicKeyKind::Ec(curve))
    } else {
        Err(KeyError::UnsupportedAlgorithm(spki.algorithm.oid))
    }
}

/// RFC 5280 §4.2.1.2 method (1): the SHA-1 of the subjectPublicKey BIT STRING value (without
/// tag, length and unused-bits octet). Used for SKI/AKI and, identically, by OCSP
/// (issuerKeyHash, ResponderID byKey).
pub fn key_identifier(spki: &SubjectPublicKeyInfoOwned) -> [u8; 20] {
    sha1(spki.subject_public_key.raw_bytes())
}

/// SHA-1 of some bytes (key identifiers and legacy OCSP CertIDs only; never for signatures).
pub fn sha1(data: &[u8]) -> [u8; 20] {
    let d = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, data);
    let mut out = [0u8; 20];
    out.copy_from_slice(d.as_ref());
    out
}

/// SHA-1 over several parts, without joining them (ETags of pre-signed responses).
pub fn sha1_parts(parts: &[&[u8]]) -> [u8; 20] {
    let mut context = digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY);
    for part in parts {
        context.update(part);
    }
    let mut out = [0u8; 20];
    out.copy_from_slice(context.finish().as_ref());
    out
}

/// SHA-256 of some bytes.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The SubjectPublicKeyInfo of an RSA key from its modulus and exponent (PKCS#11 attributes).
pub fn rsa_spki(modulus: &[u8], exponent: &[u8]) -> Result<SubjectPublicKeyInfoOwned, der::Error> {
    let key = RsaPublicKey {
        modulus: UintRef::new(modulus)?,
        public_exponent: UintRef::new(exponent)?,
    };
    Ok(SubjectPublicKeyInfoOwned {
        algorithm: AlgorithmIdentifierOwned {
            oid: oid::RSA_ENCRYPTION,
            parameters: Some(der::asn1::Any::null()),
        },
        subject_public_key: der::asn1::BitString::from_bytes(&key.to_der()?)?,
    })
}

/// The SubjectPublicKeyInfo of an EC key from its uncompressed point.
pub fn ec_spki(curve: Curve, point: &[u8]) -> Result<SubjectPublicKeyInfoOwned, der::Error> {
    Ok(SubjectPublicKeyInfoOwned {
        algorithm: AlgorithmIdentifierOwned {
            oid: oid::EC_PUBLIC_KEY,
            parameters: Some(der::asn1::Any::encode_from(&curve.oid())?),
        },
        subject_public_key: der::asn1::BitString::from_bytes(point)?,
    })
}

/// Why a public key cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    #[error("malformed public key: {0}")]
    Malformed(&'static str),
    #[error("unsupported public key algorithm {0}")]
    UnsupportedAlgorithm(ObjectIdentifier),
    #[error("unsupported elliptic curve {0}")]
    UnsupportedCurve(ObjectIdentifier),
}
