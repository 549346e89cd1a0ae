//! The CA certificates: their templates, extensions and signing requests, issued and checked.

use der::asn1::{AnyRef, BitString, SetOfVec};
use der::{Decode, Encode};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::Certificate;
use x509_cert::certificate::Version;
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages};
use x509_cert::request::{CertReq, CertReqInfo};
use x509_cert::time::Validity;

use super::{
    ExtensionsFrom, ISSUING_POLICY, RESPONDER_POLICY, ROOT_POLICY, generate, stored_event,
    years_later,
};
use crate::audit::AuditEvent;
use crate::ca::CaError;
use crate::ca::issue::{PendingCertificate, issue_all};
use crate::config::{Config, KeyConfig, PublishedUrls};
use crate::hsm::{Hsm, SigningKey};
use crate::issuer::Issuer;
use crate::issuer::state::StoredCa;
use crate::store::{CertKey, IssuerId, Store};
use crate::x509::ext::{self, Criticality, PolicyEntry};
use crate::x509::name::{Attribute, DistinguishedName};
use crate::x509::tbs::{TbsCertificateV3, raw_parts};
use crate::x509::{Serial, Timestamp, keys, oid, sigalg};

/// The fields of a CA or responder certificate; the extensions are built from its SKI.
pub(super) struct CaTemplate<'a> {
    pub(super) issuer_id: IssuerId,
    pub(super) issuer_subject: &'a [u8],
    /// DER of the subject Name.
    pub(super) subject: Vec<u8>,
    pub(super) public_key: &'a SubjectPublicKeyInfoOwned,
    pub(super) not_after: Timestamp,
    pub(super) policy: &'static str,
    pub(super) extensions: ExtensionsFrom<'a>,
}

/// A self-signed root (docs/design.md#ca-certificates).
pub(super) fn root_template<'a>(
    config: &'a Config,
    subject_der: &'a [u8],
    key: &'a SigningKey,
    now: Timestamp,
) -> Result<CaTemplate<'a>, CaError> {
    Ok(CaTemplate {
        issuer_id: IssuerId(keys::key_identifier(key.public_key())),
        issuer_subject: subject_der,
        subject: subject_der.to_vec(),
        public_key: key.public_key(),
        not_after: years_later(now, config.root.validity_years)?,
        policy: ROOT_POLICY,
        // Self-signed: its own key identifier as AKI, and nothing to point at above it.
        extensions: Box::new(|ski: &[u8; 20]| ca_extensions(ski, ski, None, None)),
    })
}

/// An issuing CA under `root`; `urls` are those of that root's generation (its ARL and
/// certificate).
pub(super) fn issuing_template<'a>(
    config: &'a Config,
    subject: &DistinguishedName,
    urls: &'a PublishedUrls,
    root: &'a Issuer,
    key: &'a SigningKey,
    now: Timestamp,
) -> Result<CaTemplate<'a>, CaError> {
    let not_after = years_later(now, config.issuing.validity_years)?.min(root.not_after);
    let root_key_id = root.key_identifier;
    Ok(CaTemplate {
        issuer_id: root.id,
        issuer_subject: &root.subject_der,
        subject: subject
            .to_der()
            .map_err(|e| CaError::Encoding(e.to_string()))?,
        public_key: key.public_key(),
        not_after,
        policy: ISSUING_POLICY,
        // RGS A4 II.1.2: pathLen 0 for a CA that certifies persons.
        extensions: Box::new(move |ski: &[u8; 20]| {
            ca_extensions(ski, &root_key_id, Some(0), Some(urls))
        }),
    })
}

/// The extensions of a CA certificate (docs/design.md#ca-certificates): basicConstraints cA (with
/// `path_len`), keyCertSign and cRLSign, the key identifiers, anyPolicy and, for a certificate
/// signed by a root, that root's ARL and certificate URLs (`issuer_urls`).
pub(super) fn ca_extensions(
    ski: &[u8; 20],
    authority_key_id: &[u8; 20],
    path_len: Option<u8>,
    issuer_urls: Option<&PublishedUrls>,
) -> Result<Vec<Extension>, der::Error> {
    let mut extensions = vec![
        ext::basic_constraints(true, path_len, Criticality::Critical)?,
        ext::key_usage(
            KeyUsages::KeyCertSign | KeyUsages::CRLSign,
            Criticality::Critical,
        )?,
        ext::subject_key_identifier(ski)?,
        ext::authority_key_identifier(authority_key_id)?,
        ext::certificate_policies(&[PolicyEntry {
            oid: oid::ANY_POLICY,
            cps_uri: None,
        }])?,
    ];
    if let Some(urls) = issuer_urls {
        extensions.push(ext::crl_distribution_points(&urls.arl)?);
        extensions.push(ext::authority_info_access(
            Some(&urls.root_ca_issuers),
            None,
        )?);
    }
    Ok(extensions)
}

/// The subject of generation `generation` of a CA configured with `configured`: the
/// configured name for the first, then the same name with ` <generation>` after its common
/// name (`AC AGENTS JUSTICE TEST 2`), or with `common_name` when one is given. Every
/// generation has a name of its own, so that relying parties and tools that find an issuer,
/// a CRL or a responder by name never take one generation for another.
pub(super) fn generation_name(
    configured: &DistinguishedName,
    generation: usize,
    common_name: Option<&str>,
) -> DistinguishedName {
    match (common_name, configured.first(Attribute::CommonName)) {
        (Some(common_name), _) => configured.with_common_name(common_name),
        (None, _) if generation <= 1 => configured.clone(),
        (None, Some(base)) => configured.with_common_name(&format!("{base} {generation}")),
        (None, None) => configured.with_common_name(&format!("{generation}")),
    }
}

/// The delegated OCSP responder (docs/design.md#ocsp-responder-certificate): a new key, a
/// short-lived certificate issued by `issuing`, with id-kp-OCSPSigning and
/// id-pkix-ocsp-nocheck and no AIA OCSP.
#[allow(clippy::too_many_arguments)]
pub(super) fn issue_responder(
    config: &Config,
    key_config: &KeyConfig,
    store: &Store,
    hsm: &Hsm,
    (issuing, generation): (&Issuer, usize),
    now: Timestamp,
    events: &mut Vec<AuditEvent>,
) -> Result<StoredCa, CaError> {
    let key = generate(hsm, key_config, config.keys.rsa_pss, events)?;
    let issuer_key_id = issuing.key_identifier;
    let not_after = now
        .plus_seconds(u64::from(config.ocsp_responder.validity_days) * 86_400)
        .min(issuing.not_after);
    let der = issue_ca_certificate(
        store,
        &issuing.key,
        now,
        CaTemplate {
            issuer_id: issuing.id,
            issuer_subject: &issuing.subject_der,
            subject: generation_name(&config.ocsp_responder.subject, generation, None)
                .to_der()
                .map_err(|e| CaError::Encoding(e.to_string()))?,
            public_key: key.public_key(),
            not_after,
            policy: RESPONDER_POLICY,
            extensions: Box::new(move |ski: &[u8; 20]| {
                Ok(vec![
                    ext::basic_constraints(false, None, Criticality::Critical)?,
                    ext::key_usage(KeyUsages::DigitalSignature.into(), Criticality::Critical)?,
                    ext::extended_key_usage(&[oid::KP_OCSP_SIGNING], Criticality::NonCritical)?,
                    ext::subject_key_identifier(ski)?,
                    ext::authority_key_identifier(&issuer_key_id)?,
                    ext::ocsp_nocheck()?,
                    ext::certificate_policies(&[PolicyEntry {
                        oid: oid::ANY_POLICY,
                        cps_uri: None,
                    }])?,
                ])
            }),
        },
    )?;
    let name = format!("ocsp-{}", issuing.name);
    events.push(stored_event(&name, "ocsp-responder", key.label(), &der)?);
    Ok(StoredCa {
        name,
        key_label: key.label().to_owned(),
        scheme: key.scheme(),
        certificate: der,
    })
}

/// Builds, records, signs and stores one CA certificate; returns its DER.
pub(super) fn issue_ca_certificate(
    store: &Store,
    signer: &SigningKey,
    now: Timestamp,
    template: CaTemplate<'_>,
) -> Result<Vec<u8>, CaError> {
    let algorithm = signer
        .scheme()
        .algorithm_identifier()
        .map_err(|e| CaError::Encoding(e.to_string()))?;
    let ski = keys::key_identifier(template.public_key);
    let signed = issue_all(
        store,
        signer,
        1,
        now,
        |serials| {
            let serial = serials
                .into_iter()
                .next()
                .ok_or(CaError::Encoding("no serial".into()))?;
            let tbs_der = ca_tbs(&serial, &algorithm, &template, &ski, now)
                .map_err(|e| CaError::Encoding(e.to_string()))?;
            Ok(vec![PendingCertificate {
                key: CertKey {
                    issuer: template.issuer_id,
                    serial,
                },
                tbs_der,
                policy: template.policy.to_owned(),
                holder: None,
                card: None,
                not_before: now,
                not_after: template.not_after,
                subject_der: None,
                public_key_der: None,
            }])
        },
        |_| None,
    )?;
    signed
        .signed
        .into_iter()
        .next()
        .map(|s| s.der)
        .ok_or_else(|| CaError::Encoding("no certificate signed".into()))
}

pub(super) fn ca_tbs(
    serial: &Serial,
    algorithm: &AlgorithmIdentifierOwned,
    template: &CaTemplate<'_>,
    ski: &[u8; 20],
    now: Timestamp,
) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let subject = x509_cert::name::Name::from_der(&template.subject)?;
    // Self-signed: the issuer is this very subject.
    let tbs = TbsCertificateV3 {
        version: Version::V3,
        serial_number: serial.to_serial_number()?,
        signature: algorithm.clone(),
        issuer: AnyRef::from_der(template.issuer_subject)?,
        validity: Validity::new(now.to_x509_time()?, template.not_after.to_x509_time()?),
        subject,
        subject_public_key_info: template.public_key.clone(),
        extensions: (template.extensions)(ski)?,
    };
    Ok(tbs.to_der()?)
}

/// A PKCS#10 request for the issuing CA, signed by its HSM key (for an external root).
pub(super) fn certification_request(
    key: &SigningKey,
    subject: &DistinguishedName,
) -> Result<Vec<u8>, CaError> {
    let encode = |e: der::Error| CaError::Encoding(e.to_string());
    let info = CertReqInfo {
        version: x509_cert::request::Version::V1,
        subject: subject
            .to_name()
            .map_err(|e| CaError::Encoding(e.to_string()))?,
        public_key: key.public_key().clone(),
        attributes: SetOfVec::new(),
    };
    let info_der = info.to_der().map_err(encode)?;
    let signature = key.sign(&info_der)?;
    key.verify(&info_der, &signature)?;
    let request = CertReq {
        info,
        algorithm: key.scheme().algorithm_identifier().map_err(encode)?,
        signature: BitString::from_bytes(&signature).map_err(encode)?,
    };
    request.to_der().map_err(encode)
}

/// A CA certificate: cA TRUE, keyCertSign and cRLSign; the issuing CA also pathLen 0.
pub(super) fn check_ca_certificate(
    certificate: &Certificate,
    issuing: bool,
) -> Result<(), CaError> {
    let tbs = certificate.tbs_certificate();
    let bc = tbs
        .get_extension::<BasicConstraints>()
        .map_err(|e| CaError::Import(e.to_string()))?;
    match bc {
        Some((true, bc)) if bc.ca => {
            if issuing && bc.path_len_constraint != Some(0) {
                tracing::warn!(
                    "the issuing CA certificate has no pathLenConstraint 0 (RGS A4 II.1.2 asks for it)"
                );
            }
        }
        _ => {
            return Err(CaError::Import(
                "not a CA certificate (basicConstraints cA TRUE, critical)".into(),
            ));
        }
    }
    let ku = tbs
        .get_extension::<KeyUsage>()
        .map_err(|e| CaError::Import(e.to_string()))?;
    match ku {
        Some((true, ku)) if ku.key_cert_sign() && ku.crl_sign() => Ok(()),
        _ => Err(CaError::Import(
            "keyUsage must be critical with keyCertSign and cRLSign".into(),
        )),
    }
}

/// Checks a certificate's signature against a public key.
pub fn verify_certificate_signature(
    certificate_der: &[u8],
    signer: &SubjectPublicKeyInfoOwned,
) -> Result<(), String> {
    let certificate = Certificate::from_der(certificate_der).map_err(|e| e.to_string())?;
    let tbs = raw_parts(certificate_der)
        .map_err(|e| e.to_string())?
        .tbs_der;
    let signature = certificate
        .signature()
        .as_bytes()
        .ok_or("signature has unused bits")?;
    sigalg::verify(signer, certificate.signature_algorithm(), tbs, signature)
        .map_err(|e| e.to_string())
}
