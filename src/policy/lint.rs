//! Lints: independent checks of an encoded TBSCertificate against its policy, run before the
//! HSM is asked to sign (as Boulder lints every precertificate).
//!
//! The lints decode the DER again with x509-cert's own types rather than trusting the builder,
//! so a bug in [`super::prepare`] shows up here as a refusal, not in a signed certificate. Each
//! lint is a small function that cites the rule it enforces.
use std::collections::BTreeSet;

use const_oid::AssociatedOid;
use der::{Decode, Encode, Tag, Tagged};
use x509_cert::certificate::{TbsCertificate, Version};
use x509_cert::ext::pkix::crl::dp::DistributionPoint;
use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};
use x509_cert::ext::pkix::{
    AuthorityInfoAccessSyntax, AuthorityKeyIdentifier, BasicConstraints, CertificatePolicies,
    CrlDistributionPoints, ExtendedKeyUsage, KeyUsage, SubjectKeyIdentifier,
};
use x509_cert::time::Time;

use super::prepare::{IssuerProfile, check_subject};
use super::{Policy, Violation};
use crate::x509::name::{self, Attribute, DistinguishedName, ReadAttribute};
use crate::x509::{Timestamp, keys, oid};

type LintResult = Result<(), String>;

struct Context<'a> {
    policy: &'a Policy,
    issuer: &'a IssuerProfile,
    tbs: &'a TbsCertificate,
    tbs_der: &'a [u8],
}

/// The lints, each with the rule name reported when it fails.
type Lint = fn(&Context<'_>) -> LintResult;

const LINTS: &[(&str, Lint)] = &[
    ("lint:der-canonical", der_canonical),
    ("lint:version", version_is_v3),
    ("lint:serial", serial_number),
    ("lint:signature-algorithm", signature_algorithm),
    ("lint:issuer-bytes", issuer_bytes),
    ("lint:validity", validity),
    ("lint:time-encoding", time_encoding),
    ("lint:subject", subject),
    ("lint:public-key", public_key),
    ("lint:extensions-set", extension_set),
    ("lint:basic-constraints", basic_constraints),
    ("lint:key-usage", key_usage),
    ("lint:extended-key-usage", extended_key_usage),
    ("lint:key-identifiers", key_identifiers),
    ("lint:certificate-policies", certificate_policies),
    ("lint:crl-distribution-points", crl_distribution_points),
    ("lint:authority-info-access", authority_info_access),
];

/// Runs every lint on `tbs_der`; an empty result means the TBS may be signed.
pub fn lint_tbs(policy: &Policy, issuer: &IssuerProfile, tbs_der: &[u8]) -> Vec<Violation> {
    let tbs = match TbsCertificate::from_der(tbs_der) {
        Ok(tbs) => tbs,
        Err(e) => {
            return vec![Violation {
                rule: "lint:decodes",
                message: format!("the TBS certificate does not decode: {e}"),
            }];
        }
    };
    let context = Context {
        policy,
        issuer,
        tbs: &tbs,
        tbs_der,
    };
    LINTS
        .iter()
        .filter_map(|(rule, lint)| {
            lint(&context)
                .err()
                .map(|message| Violation { rule, message })
        })
        .collect()
}

/// DER is canonical: decoding then encoding gives the same bytes (X.690 §10).
fn der_canonical(c: &Context<'_>) -> LintResult {
    let again = c.tbs.to_der().map_err(|e| e.to_string())?;
    (again == c.tbs_der)
        .then_some(())
        .ok_or_else(|| "the TBS does not re-encode to the same DER".into())
}

/// RFC 5280 §4.1.2.1: extensions require v3.
fn version_is_v3(c: &Context<'_>) -> LintResult {
    (c.tbs.version() == Version::V3)
        .then_some(())
        .ok_or_else(|| format!("version is {:?}, not v3", c.tbs.version()))
}

/// RFC 5280 §4.1.2.2: positive, at most 20 octets (docs/design.md#pitfalls, 1).
fn serial_number(c: &Context<'_>) -> LintResult {
    let bytes = c.tbs.serial_number().as_bytes();
    let magnitude: Vec<u8> = bytes.iter().copied().skip_while(|b| *b == 0).collect();
    if bytes.first().is_some_and(|b| b & 0x80 != 0) {
        return Err("serial number is negative".into());
    }
    if magnitude.is_empty() {
        return Err("serial number is zero".into());
    }
    let encoded = c.tbs.serial_number().to_der().map_err(|e| e.to_string())?;
    if encoded.len() - 2 > 20 {
        return Err(format!(
            "serial number has {} content octets (at most 20)",
            encoded.len() - 2
        ));
    }
    Ok(())
}

/// RFC 5280 §4.1.2.3: the algorithm the issuer signs with.
fn signature_algorithm(c: &Context<'_>) -> LintResult {
    (c.tbs.signature() == &c.issuer.signature_algorithm)
        .then_some(())
        .ok_or_else(|| "signature algorithm differs from the issuing CA's".into())
}

/// docs/design.md#common-rules: the issuer is the CA certificate's subject, byte for byte.
fn issuer_bytes(c: &Context<'_>) -> LintResult {
    let issuer = c.tbs.issuer().to_der().map_err(|e| e.to_string())?;
    (issuer == c.issuer.subject_der)
        .then_some(())
        .ok_or_else(|| "issuer is not a byte copy of the CA certificate's subject".into())
}

/// RGS A2 VI.3.2: at most the policy's years, and not past the issuing CA.
fn validity(c: &Context<'_>) -> LintResult {
    let not_before = Timestamp::from_x509_time(&c.tbs.validity().not_before);
    let not_after = Timestamp::from_x509_time(&c.tbs.validity().not_after);
    if not_after <= not_before {
        return Err("notAfter is not after notBefore".into());
    }
    let longest = c
        .policy
        .latest_not_after(not_before)
        .map_err(|e| e.to_string())?;
    if not_after > longest {
        return Err(format!(
            "validity exceeds {} years",
            c.policy.max_validity_years
        ));
    }
    if not_after > c.issuer.not_after {
        return Err("notAfter is after the issuing CA's notAfter".into());
    }
    Ok(())
}

/// RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050.
fn time_encoding(c: &Context<'_>) -> LintResult {
    for (field, time) in [
        ("notBefore", &c.tbs.validity().not_before),
        ("notAfter", &c.tbs.validity().not_after),
    ] {
        let year = time.to_date_time().year();
        let ok = match time {
            Time::UtcTime(_) => year < 2050,
            Time::GeneralTime(_) => year >= 2050,
        };
        if !ok {
            return Err(format!("{field} in {year} uses the wrong time type"));
        }
    }
    Ok(())
}

/// RGS A4 VII.2, EN 319 412-2 NAT-4.2.4: the policy's subject rules, on the encoded name;
/// C and serialNumber as PrintableString, the rest as UTF8String (docs/design.md#common-rules).
fn subject(c: &Context<'_>) -> LintResult {
    for atv in c.tbs.subject().iter() {
        let printable = atv.oid == oid::AT_COUNTRY_NAME || atv.oid == oid::AT_SERIAL_NUMBER;
        let expected = if printable {
            Tag::PrintableString
        } else {
            Tag::Utf8String
        };
        if atv.value.tag() != expected {
            return Err(format!(
                "attribute {} is {} (expected {expected})",
                atv.oid,
                atv.value.tag()
            ));
        }
    }
    let mut dn = DistinguishedName::new();
    for attribute in name::read_name(c.tbs.subject()).map_err(|e| e.to_string())? {
        match attribute {
            ReadAttribute::Known(a, v) => {
                dn.push(a, v);
            }
            ReadAttribute::Unknown(oid) => return Err(format!("attribute {oid} is not allowed")),
        }
    }
    let problems = check_subject(&c.policy.subject, &dn);
    if let Some(first) = problems.first() {
        return Err(first.message.clone());
    }
    if dn.first(Attribute::CommonName).is_none() {
        return Err("no CN".into());
    }
    Ok(())
}

/// RGS B1: the holder key is one the policy accepts until notAfter.
fn public_key(c: &Context<'_>) -> LintResult {
    let kind = keys::describe(c.tbs.subject_public_key_info()).map_err(|e| e.to_string())?;
    let not_after = Timestamp::from_x509_time(&c.tbs.validity().not_after);
    c.policy
        .keys
        .iter()
        .any(|rule| rule.accepts(&kind, not_after))
        .then_some(())
        .ok_or_else(|| format!("{kind} is not an allowed holder key"))
}

/// Exactly the extensions the policy gives, each once (RFC 5280 §4.2), nothing else (no SAN,
/// no policy constraints: EN 319 412-2 GEN-4.3.4/8/9/12-1).
fn extension_set(c: &Context<'_>) -> LintResult {
    let extensions = c.tbs.extensions().ok_or("no extensions")?;
    let mut seen = BTreeSet::new();
    for extension in extensions {
        if !seen.insert(extension.extn_id) {
            return Err(format!("extension {} appears twice", extension.extn_id));
        }
    }
    let mut expected: BTreeSet<_> = [
        KeyUsage::OID,
        SubjectKeyIdentifier::OID,
        AuthorityKeyIdentifier::OID,
        CertificatePolicies::OID,
        CrlDistributionPoints::OID,
        AuthorityInfoAccessSyntax::OID,
    ]
    .into_iter()
    .collect();
    if c.policy.basic_constraints.is_some() {
        expected.insert(BasicConstraints::OID);
    }
    if c.policy.extended_key_usage.is_some() {
        expected.insert(ExtendedKeyUsage::OID);
    }
    if c.policy.qc_statements.is_some() {
        expected.insert(oid::EXT_QC_STATEMENTS);
    }
    if let Some(extra) = seen.difference(&expected).next() {
        return Err(format!("extension {extra} is not allowed by the policy"));
    }
    if let Some(missing) = expected.difference(&seen).next() {
        return Err(format!("extension {missing} is missing"));
    }
    for extension in extensions {
        if extension.extn_id == oid::EXT_QC_STATEMENTS && extension.critical {
            return Err("qcStatements must not be critical (EN 319 412-5 §4.1)".into());
        }
    }
    Ok(())
}

/// RFC 5280 §4.2.1.9: an end entity is cA FALSE, without pathLenConstraint.
fn basic_constraints(c: &Context<'_>) -> LintResult {
    let Some(criticality) = c.policy.basic_constraints else {
        return Ok(());
    };
    let (critical, bc) = c
        .tbs
        .get_extension::<BasicConstraints>()
        .map_err(|e| e.to_string())?
        .ok_or("basicConstraints missing")?;
    if bc.ca || bc.path_len_constraint.is_some() {
        return Err("an end-entity certificate must be cA FALSE without pathLenConstraint".into());
    }
    (critical == criticality.is_critical())
        .then_some(())
        .ok_or_else(|| "basicConstraints criticality differs from the policy".into())
}

/// RGS A4 II.2.2, EN 319 412-2 NAT-4.3.2: exactly the policy's bits, critical.
fn key_usage(c: &Context<'_>) -> LintResult {
    let (critical, usage) = c
        .tbs
        .get_extension::<KeyUsage>()
        .map_err(|e| e.to_string())?
        .ok_or("keyUsage missing")?;
    if !critical {
        return Err("keyUsage must be critical".into());
    }
    (usage.0 == c.policy.key_usage)
        .then_some(())
        .ok_or_else(|| {
            format!(
                "keyUsage {:?} differs from the policy's {:?}",
                usage.0, c.policy.key_usage
            )
        })
}

/// EN 319 412-2 GEN-4.3.10-1: EKU never critical; exactly the policy's purposes.
fn extended_key_usage(c: &Context<'_>) -> LintResult {
    let found = c
        .tbs
        .get_extension::<ExtendedKeyUsage>()
        .map_err(|e| e.to_string())?;
    match (&c.policy.extended_key_usage, found) {
        (None, None) => Ok(()),
        (Some((purposes, _)), Some((false, eku))) if &eku.0 == purposes => Ok(()),
        (Some(_), Some((true, _))) => Err("extendedKeyUsage must not be critical".into()),
        _ => Err("extendedKeyUsage differs from the policy".into()),
    }
}

/// RFC 5280 §4.2.1.1–2: SKI = method 1 of the subject key; AKI = keyIdentifier of the issuer's
/// SKI only (docs/design.md#pitfalls, 3).
fn key_identifiers(c: &Context<'_>) -> LintResult {
    let (_, ski) = c
        .tbs
        .get_extension::<SubjectKeyIdentifier>()
        .map_err(|e| e.to_string())?
        .ok_or("subjectKeyIdentifier missing")?;
    if ski.0.as_bytes() != keys::key_identifier(c.tbs.subject_public_key_info()) {
        return Err("subjectKeyIdentifier is not the SHA-1 of the subject public key".into());
    }
    let (critical, aki) = c
        .tbs
        .get_extension::<AuthorityKeyIdentifier>()
        .map_err(|e| e.to_string())?
        .ok_or("authorityKeyIdentifier missing")?;
    if critical || aki.authority_cert_issuer.is_some() || aki.authority_cert_serial_number.is_some()
    {
        return Err(
            "authorityKeyIdentifier must be non-critical and hold keyIdentifier only".into(),
        );
    }
    match aki.key_identifier {
        Some(id) if id.as_bytes() == c.issuer.key_identifier => Ok(()),
        _ => Err("authorityKeyIdentifier is not the issuing CA's key identifier".into()),
    }
}

/// RGS A4 II.2.2: the policy OID first (with the CPS qualifier when configured), then the
/// additional and QCP OIDs; non-critical.
fn certificate_policies(c: &Context<'_>) -> LintResult {
    let (critical, policies) = c
        .tbs
        .get_extension::<CertificatePolicies>()
        .map_err(|e| e.to_string())?
        .ok_or("certificatePolicies missing")?;
    if critical {
        return Err("certificatePolicies must not be critical".into());
    }
    let first = policies.0.first().ok_or("no policy")?;
    if first.policy_identifier != c.policy.oid {
        return Err(format!(
            "the first policy is {}, not {}",
            first.policy_identifier, c.policy.oid
        ));
    }
    let has_cps = first
        .policy_qualifiers
        .as_ref()
        .is_some_and(|q| q.iter().any(|pq| pq.policy_qualifier_id == oid::QT_CPS));
    if has_cps != c.policy.cps_qualifier {
        return Err("the CPS qualifier does not match the policy".into());
    }
    let mut expected: Vec<_> = vec![c.policy.oid];
    expected.extend(&c.policy.additional_policies);
    if let Some((_, qcp)) = &c.policy.qc_statements {
        expected.push(*qcp);
    }
    let found: Vec<_> = policies.0.iter().map(|p| p.policy_identifier).collect();
    (found == expected)
        .then_some(())
        .ok_or_else(|| format!("policies {found:?} differ from {expected:?}"))
}

/// EN 319 412-2 GEN-4.3.11-2: a CRL distribution point with the configured http URL.
fn crl_distribution_points(c: &Context<'_>) -> LintResult {
    let (critical, points) = c
        .tbs
        .get_extension::<CrlDistributionPoints>()
        .map_err(|e| e.to_string())?
        .ok_or("cRLDistributionPoints missing")?;
    if critical {
        return Err("cRLDistributionPoints must not be critical".into());
    }
    match points.0.as_slice() {
        [
            DistributionPoint {
                distribution_point: Some(DistributionPointName::FullName(names)),
                reasons: None,
                crl_issuer: None,
            },
        ] if matches!(names.as_slice(), [GeneralName::UniformResourceIdentifier(uri)] if uri.as_str() == c.issuer.crl_url) => {
            Ok(())
        }
        _ => Err("cRLDistributionPoints is not the single configured CRL URL".into()),
    }
}

/// EN 319 412-2 GEN-4.4.1-2/3/8: caIssuers and OCSP, with the configured URLs.
fn authority_info_access(c: &Context<'_>) -> LintResult {
    let (critical, access) = c
        .tbs
        .get_extension::<AuthorityInfoAccessSyntax>()
        .map_err(|e| e.to_string())?
        .ok_or("authorityInfoAccess missing")?;
    if critical {
        return Err("authorityInfoAccess must not be critical".into());
    }
    let uri_of = |method| {
        access.0.iter().find_map(|a| match &a.access_location {
            GeneralName::UniformResourceIdentifier(uri) if a.access_method == method => {
                Some(uri.as_str().to_owned())
            }
            _ => None,
        })
    };
    if uri_of(oid::AD_CA_ISSUERS).as_deref() != Some(c.issuer.ca_issuers_url.as_str()) {
        return Err("caIssuers is missing or not the configured URL".into());
    }
    if uri_of(oid::AD_OCSP).as_deref() != Some(c.issuer.ocsp_url.as_str()) {
        return Err("OCSP is missing or not the configured URL".into());
    }
    Ok(())
}
