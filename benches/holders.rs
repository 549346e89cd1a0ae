//! Holder key pairs and certification requests for the benchmarks (included by each bench with
//! `#[path]`): P-256 keys made in software, which is what a card would hold; never a CA key.
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use der::Encode;
use der::asn1::{BitString, SetOfVec};
use sceau::x509::keys::{Curve, ec_spki};
use sceau::x509::name::{Attribute, DistinguishedName};
use sceau::x509::sigalg::SignatureScheme;
use x509_cert::request::{CertReq, CertReqInfo, Version};

/// A new key pair and its CSR (DER) for `C=FR, O, OU=0002 …, GN=given, SN=surname,
/// CN=given surname`; also the key's PKCS#8 (for a TLS client).
// Each bench uses the parts it needs (the RA load uses the key and its PKCS#8, the others the CSR).
#[allow(dead_code)]
pub struct Holder {
    pub key: EcdsaKeyPair,
    pub pkcs8: Vec<u8>,
    pub csr: Vec<u8>,
}

pub fn holder(given: &str, surname: &str) -> Holder {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).expect("key");
    let key =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref()).expect("key");
    let mut subject = DistinguishedName::new();
    subject
        .push(Attribute::Country, "FR")
        .push(Attribute::Organization, "MINISTERE DE LA JUSTICE TEST")
        .push(Attribute::OrganizationalUnit, "0002 123456789")
        .push(Attribute::GivenName, given)
        .push(Attribute::Surname, surname)
        .push(Attribute::CommonName, format!("{given} {surname}"));
    let info = CertReqInfo {
        version: Version::V1,
        subject: subject.to_name().expect("name"),
        public_key: ec_spki(Curve::P256, key.public_key().as_ref()).expect("spki"),
        attributes: SetOfVec::new(),
    };
    let signature = key.sign(&rng, &info.to_der().expect("der")).expect("sign");
    let csr = CertReq {
        info,
        algorithm: SignatureScheme::EcdsaP256Sha256
            .algorithm_identifier()
            .expect("algorithm"),
        signature: BitString::from_bytes(signature.as_ref()).expect("bits"),
    }
    .to_der()
    .expect("csr");
    Holder {
        key,
        pkcs8: pkcs8.as_ref().to_vec(),
        csr,
    }
}
