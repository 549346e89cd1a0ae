//! What a key object's attributes must say before sceau signs with it, and the public key they
//! describe. Read from the token after generation and at every load, never assumed from the
//! template: a token may ignore an attribute it was given (its defaults are "token
//! dependent"), and `C_GetAttributeValue` may answer part of a template (cryptoki leaves out
//! what the token marks unavailable, and a missing security attribute counts as the unsafe
//! value).

use cryptoki::object::{Attribute, AttributeType, KeyType};
use der::Decode;
use der::asn1::OctetString;
use spki::SubjectPublicKeyInfoOwned;

use crate::hsm::HsmError;
use crate::x509::keys;

/// The private-key attributes read at load and after generation.
pub(super) const PRIVATE_KEY_ATTRIBUTES: &[AttributeType] = &[
    AttributeType::Id,
    AttributeType::Token,
    AttributeType::Private,
    AttributeType::Sensitive,
    AttributeType::AlwaysSensitive,
    AttributeType::Extractable,
    AttributeType::NeverExtractable,
    AttributeType::Sign,
    AttributeType::AlwaysAuthenticate,
];

/// The public-key attributes that make the SubjectPublicKeyInfo, and the id that pairs the
/// public key with its private key.
pub(super) const PUBLIC_KEY_ATTRIBUTES: &[AttributeType] = &[
    AttributeType::Id,
    AttributeType::KeyType,
    AttributeType::EcParams,
    AttributeType::EcPoint,
    AttributeType::Modulus,
    AttributeType::PublicExponent,
];

/// A private key's security attributes as the token reports them. `CKA_LOCAL` (generated on
/// the token) is not among them: NSS softokn reports it false for keys it generated itself.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct PrivateKeyFacts {
    pub(super) id: Vec<u8>,
    token: bool,
    private: bool,
    sensitive: bool,
    always_sensitive: bool,
    /// Unreported counts as extractable.
    extractable: Option<bool>,
    never_extractable: bool,
    sign: bool,
    /// `CKA_ALWAYS_AUTHENTICATE`: a context-specific login before each signature.
    pub(super) always_authenticate: bool,
}

impl PrivateKeyFacts {
    pub(super) fn read(attributes: Vec<Attribute>) -> Self {
        let mut facts = PrivateKeyFacts::default();
        for attribute in attributes {
            match attribute {
                Attribute::Id(v) => facts.id = v,
                Attribute::Token(v) => facts.token = v,
                Attribute::Private(v) => facts.private = v,
                Attribute::Sensitive(v) => facts.sensitive = v,
                Attribute::AlwaysSensitive(v) => facts.always_sensitive = v,
                Attribute::Extractable(v) => facts.extractable = Some(v),
                Attribute::NeverExtractable(v) => facts.never_extractable = v,
                Attribute::Sign(v) => facts.sign = v,
                Attribute::AlwaysAuthenticate(v) => facts.always_authenticate = v,
                _ => {}
            }
        }
        facts
    }

    /// Why sceau must not sign with this key, if it must not. Invariant 5 of the design (the
    /// private key never leaves the HSM) needs more than "sensitive and not extractable now":
    /// a key that was ever extractable or not sensitive may have been copied out before.
    pub(super) fn refusal(&self, label: &str) -> Option<HsmError> {
        if !self.sensitive || self.extractable != Some(false) {
            return Some(HsmError::KeyExportable {
                label: label.to_owned(),
            });
        }
        let problem = if !self.always_sensitive {
            "CKA_ALWAYS_SENSITIVE is false: the key was not sensitive at some point"
        } else if !self.never_extractable {
            "CKA_NEVER_EXTRACTABLE is false: the key was extractable at some point"
        } else if !self.private {
            "CKA_PRIVATE is false: the key is usable without logging in"
        } else if !self.token {
            "CKA_TOKEN is false: the key is a session object"
        } else if self.id.is_empty() {
            "it has no CKA_ID, which pairs it with its public key and identifies it at each use"
        } else if !self.sign {
            "CKA_SIGN is false: the key may not sign"
        } else {
            return None;
        };
        Some(HsmError::KeyAttributes {
            label: label.to_owned(),
            problem: problem.to_owned(),
        })
    }
}

/// The public key object's id (`CKA_ID`), and its SubjectPublicKeyInfo.
pub(super) fn public_key_from(
    attributes: Vec<Attribute>,
) -> Result<(Vec<u8>, SubjectPublicKeyInfoOwned), HsmError> {
    let mut id = Vec::new();
    let mut key_type = None;
    let (mut params, mut point, mut modulus, mut exponent) = (None, None, None, None);
    for attribute in attributes {
        match attribute {
            Attribute::Id(v) => id = v,
            Attribute::KeyType(t) => key_type = Some(t),
            Attribute::EcParams(v) => params = Some(v),
            Attribute::EcPoint(v) => point = Some(v),
            Attribute::Modulus(v) => modulus = Some(v),
            Attribute::PublicExponent(v) => exponent = Some(v),
            _ => {}
        }
    }
    let bad = |what: &str| HsmError::PublicKey(what.to_owned());
    let spki = match key_type {
        Some(KeyType::EC) => {
            let params = params.ok_or_else(|| bad("EC key without CKA_EC_PARAMS"))?;
            let curve_oid = const_oid::ObjectIdentifier::from_der(&params)
                .map_err(|_| bad("CKA_EC_PARAMS is not a named curve"))?;
            let curve = keys::Curve::from_oid(curve_oid).ok_or_else(|| bad("unsupported curve"))?;
            let value = point.ok_or_else(|| bad("EC key without CKA_EC_POINT"))?;
            let point = uncompressed_point(&value, curve.point_len()).ok_or_else(|| {
                bad("CKA_EC_POINT is neither an uncompressed point nor one in a DER OCTET STRING")
            })?;
            keys::ec_spki(curve, point).map_err(|e| bad(&e.to_string()))?
        }
        Some(KeyType::RSA) => {
            let modulus = modulus.ok_or_else(|| bad("RSA key without CKA_MODULUS"))?;
            let exponent = exponent.ok_or_else(|| bad("RSA key without CKA_PUBLIC_EXPONENT"))?;
            keys::rsa_spki(&modulus, &exponent).map_err(|e| bad(&e.to_string()))?
        }
        _ => return Err(bad("unsupported key type")),
    };
    Ok((id, spki))
}

/// The uncompressed point (0x04 || X || Y) in `CKA_EC_POINT`, which PKCS#11 says is DER (an
/// OCTET STRING around the point: SoftHSM2, NSS) and some tokens return raw (kryoptic by
/// default, opencryptoki). Decided by length, not by trying DER first: a raw P-256 point is
/// also a valid OCTET STRING header whenever its X starts with 0x3f.
fn uncompressed_point(value: &[u8], point_len: usize) -> Option<&[u8]> {
    let is_point = |v: &[u8]| v.len() == point_len && v.first() == Some(&0x04);
    if is_point(value) {
        return Some(value);
    }
    let wrapped = OctetString::from_der(value).ok()?;
    let inner = wrapped.as_bytes();
    let offset = value.len() - inner.len();
    let point = value.get(offset..)?;
    is_point(point).then_some(point)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p256_point(first_x: u8) -> Vec<u8> {
        let mut point = vec![0x04, first_x];
        point.extend(std::iter::repeat_n(0x11, 63));
        point
    }

    #[test]
    fn ec_points_are_read_raw_or_wrapped_whatever_their_bytes() {
        let raw = p256_point(0x2a);
        assert_eq!(uncompressed_point(&raw, 65), Some(&raw[..]));
        let mut wrapped = vec![0x04, 65];
        wrapped.extend_from_slice(&raw);
        assert_eq!(uncompressed_point(&wrapped, 65), Some(&raw[..]));
        // A raw point whose X starts with 0x3f reads as an OCTET STRING of 63 bytes: it is
        // still taken raw.
        let lookalike = p256_point(0x3f);
        assert_eq!(uncompressed_point(&lookalike, 65), Some(&lookalike[..]));
        // Compressed, truncated or wrapped garbage: refused.
        assert_eq!(uncompressed_point(&[0x02; 33], 65), None);
        assert_eq!(uncompressed_point(&raw[..64], 65), None);
        assert_eq!(uncompressed_point(&[0x04, 0x02, 0x04, 0x01], 65), None);
        assert_eq!(uncompressed_point(&[], 65), None);
    }

    fn good_key() -> Vec<Attribute> {
        vec![
            Attribute::Id(vec![1, 2, 3]),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::AlwaysSensitive(true),
            Attribute::Extractable(false),
            Attribute::NeverExtractable(true),
            Attribute::Sign(true),
            Attribute::AlwaysAuthenticate(false),
        ]
    }

    #[test]
    fn a_key_is_refused_unless_the_token_says_it_never_could_leave() {
        assert!(PrivateKeyFacts::read(good_key()).refusal("k").is_none());
        let with = |changed: Attribute| {
            let mut attributes = good_key();
            let kind = changed.attribute_type();
            attributes.retain(|a| a.attribute_type() != kind);
            attributes.push(changed);
            PrivateKeyFacts::read(attributes).refusal("k")
        };
        assert!(matches!(
            with(Attribute::Extractable(true)),
            Some(HsmError::KeyExportable { .. })
        ));
        assert!(matches!(
            with(Attribute::Sensitive(false)),
            Some(HsmError::KeyExportable { .. })
        ));
        for (changed, named) in [
            (Attribute::AlwaysSensitive(false), "CKA_ALWAYS_SENSITIVE"),
            (Attribute::NeverExtractable(false), "CKA_NEVER_EXTRACTABLE"),
            (Attribute::Private(false), "CKA_PRIVATE"),
            (Attribute::Token(false), "CKA_TOKEN"),
            (Attribute::Sign(false), "CKA_SIGN"),
            (Attribute::Id(Vec::new()), "no CKA_ID"),
        ] {
            let refusal = with(changed).map(|e| e.to_string()).unwrap_or_default();
            assert!(refusal.contains(named), "{named}: {refusal}");
        }
        // A key that asks a login per signature is usable (sceau logs in for each one).
        let per_signature = with(Attribute::AlwaysAuthenticate(true));
        assert!(per_signature.is_none(), "{per_signature:?}");
        // A token that leaves CKA_EXTRACTABLE out of its answer: counted as extractable.
        let mut partial = good_key();
        partial.retain(|a| a.attribute_type() != AttributeType::Extractable);
        assert!(matches!(
            PrivateKeyFacts::read(partial).refusal("k"),
            Some(HsmError::KeyExportable { .. })
        ));
    }
}
