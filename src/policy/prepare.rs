//! From an issuance request to a linted TBS certificate.
use der::asn1::AnyRef;
use der::{Decode, Encode};
use spki::AlgorithmIdentifierOwned;
use x509_cert::certificate::Version;
use x509_cert::ext::Extension;
use x509_cert::time::Validity;

use super::{CommonNameRule, Policy, Rejection, SubjectRules, Violation};
use crate::x509::csr::{ParsedCsr, VerifiedCsr};
use crate::x509::ext::{self, PolicyEntry};
use crate::x509::keys::{self, PublicKeyKind};
use crate::x509::name::{self, Attribute, DistinguishedName, ReadAttribute};
use crate::x509::tbs::TbsCertificateV3;
use crate::x509::{Serial, Timestamp, oid};

/// What the policy needs to know about the issuing CA.
#[derive(Clone, Debug)]
pub struct IssuerProfile {
    /// The CA certificate's subject, as DER: copied byte for byte into `issuer`.
    pub subject_der: Vec<u8>,
    /// The CA's subjectKeyIdentifier, written as the authorityKeyIdentifier.
    pub key_identifier: [u8; 20],
    pub not_after: Timestamp,
    pub signature_algorithm: AlgorithmIdentifierOwned,
    pub crl_url: String,
    pub ocsp_url: String,
    pub ca_issuers_url: String,
    pub cps_url: String,
}

/// A request for one certificate.
#[derive(Clone, Debug, Default)]
pub struct IssuanceRequest {
    /// The policy name (`justice-auth`, `justice-sign`).
    pub policy: String,
    /// The PKCS#10 request, PEM or DER.
    pub csr: Vec<u8>,
    /// The holder's name as the registration authority verified it. When absent, the CSR's
    /// subject is used (offline issuance by an administrator).
    pub subject: Option<DistinguishedName>,
    /// The end of validity asked for; by default the longest the policy allows.
    pub not_after: Option<Timestamp>,
}

/// The DER of a TBSCertificate that the policy's lints accepted. Only [`prepare`] makes one, and
/// signing consumes it, so what is signed is what was linted.
#[derive(Clone, Debug)]
pub struct LintedTbs {
    der: Vec<u8>,
    serial: Serial,
    policy: String,
    not_before: Timestamp,
    not_after: Timestamp,
    subject_der: Vec<u8>,
    public_key_der: Vec<u8>,
}

impl LintedTbs {
    pub fn der(&self) -> &[u8] {
        &self.der
    }
    pub fn serial(&self) -> &Serial {
        &self.serial
    }
    pub fn policy(&self) -> &str {
        &self.policy
    }
    pub fn not_before(&self) -> Timestamp {
        self.not_before
    }
    pub fn not_after(&self) -> Timestamp {
        self.not_after
    }
    /// DER of the subject Name.
    pub fn subject_der(&self) -> &[u8] {
        &self.subject_der
    }
    /// DER of the SubjectPublicKeyInfo.
    pub fn public_key_der(&self) -> &[u8] {
        &self.public_key_der
    }
}

/// Checks `request` against `policy` and builds the TBS certificate for `serial`, issued at
/// `now` by `issuer`; then lints the encoded TBS against the same policy. Returns every rule
/// the request breaks.
pub fn prepare(
    policy: &Policy,
    issuer: &IssuerProfile,
    request: &IssuanceRequest,
    serial: Serial,
    now: Timestamp,
) -> Result<LintedTbs, Rejection> {
    let mut violations = Vec::new();
    let mut refuse =
        |rule: &'static str, message: String| violations.push(Violation { rule, message });

    let csr = ParsedCsr::parse(&request.csr)
        .map_err(|e| Rejection::single(&policy.name, "csr-malformed", e.to_string()))?;

    // Validity (RGS A2 VI.3.2): at most max_validity_years, and never past the issuing CA.
    let not_before = now;
    let longest = policy
        .latest_not_after(now)
        .map_err(|e| Rejection::single(&policy.name, "validity", e.to_string()))?;
    let not_after = request.not_after.unwrap_or(longest);
    check_validity(
        policy,
        issuer,
        (not_before, not_after),
        longest,
        &mut refuse,
    );

    // Holder key (RGS B1), before proof of possession so that a weak key is named as such.
    let key_ok = check_holder_key(policy, csr.public_key(), not_after, &mut refuse);

    // Proof of possession.
    let verified: Option<VerifiedCsr> = if key_ok {
        match csr.verify() {
            Ok(v) => Some(v),
            Err(e) => {
                refuse("csr-signature", e.to_string());
                None
            }
        }
    } else {
        None
    };

    // Subject: the RA's verified identity, or the CSR's subject.
    let subject = match (&request.subject, &verified) {
        (Some(dn), _) => Some(dn.clone()),
        (None, Some(v)) => match read_subject(v) {
            Ok(dn) => Some(dn),
            Err(violation) => {
                violations.push(violation);
                None
            }
        },
        (None, None) => None,
    };
    let subject = subject.map(|dn| {
        violations.extend(check_subject(&policy.subject, &dn));
        canonical_order(&dn)
    });

    // Requested extensions are never copied; a request for what the policy forbids is refused.
    if let Some(v) = &verified {
        for requested in v.requested_extensions() {
            if requested.extn_id == oid::EXT_SUBJECT_ALT_NAME {
                violations.push(Violation {
                    rule: "subject-alt-name-forbidden",
                    message: "the CSR asks for a subjectAltName; holder certificates carry none (personal data limited to name and first name)".into(),
                });
            }
        }
    }

    let (Some(verified), Some(subject), true) = (verified, subject, violations.is_empty()) else {
        return Err(Rejection {
            policy: policy.name.clone(),
            violations,
        });
    };

    let built = build_tbs(
        policy, issuer, &verified, &subject, &serial, not_before, not_after,
    )
    .map_err(|e| Rejection::single(&policy.name, "encoding", e.to_string()))?;
    let findings = super::lint_tbs(policy, issuer, &built.der);
    if !findings.is_empty() {
        return Err(Rejection {
            policy: policy.name.clone(),
            violations: findings,
        });
    }
    Ok(LintedTbs {
        der: built.der,
        serial,
        policy: policy.name.clone(),
        not_before,
        not_after,
        subject_der: built.subject_der,
        public_key_der: built.public_key_der,
    })
}

/// The validity rules (RGS A2 VI.3.2): at most the policy's years, not empty, never past the
/// issuing CA.
fn check_validity(
    policy: &Policy,
    issuer: &IssuerProfile,
    (not_before, not_after): (Timestamp, Timestamp),
    longest: Timestamp,
    refuse: &mut impl FnMut(&'static str, String),
) {
    if not_after > longest {
        refuse(
            "validity-too-long",
            format!(
                "notAfter {not_after} is more than {} years after notBefore {not_before} (RGS A2 VI.3.2)",
                policy.max_validity_years
            ),
        );
    }
    if not_after <= not_before {
        refuse(
            "validity-empty",
            format!("notAfter {not_after} is not after notBefore {not_before}"),
        );
    }
    if not_after > issuer.not_after {
        refuse(
            "validity-beyond-issuer",
            format!(
                "notAfter {not_after} is after the issuing CA's notAfter {} (RGS A2 VI.3.2)",
                issuer.not_after
            ),
        );
    }
}

/// The holder's key (RGS B1): one the policy accepts for this validity, an RSA exponent odd
/// and above 2^16. Whether the key could be read at all.
fn check_holder_key(
    policy: &Policy,
    public_key: &spki::SubjectPublicKeyInfoOwned,
    not_after: Timestamp,
    refuse: &mut impl FnMut(&'static str, String),
) -> bool {
    match keys::describe(public_key) {
        Ok(kind) => {
            if !policy
                .keys
                .iter()
                .any(|rule| rule.accepts(&kind, not_after))
            {
                let allowed: Vec<String> = policy.keys.iter().map(ToString::to_string).collect();
                refuse(
                    "key-not-allowed",
                    format!(
                        "a {kind} key ending {not_after} is not allowed; the policy accepts: {}",
                        allowed.join(", ")
                    ),
                );
            }
            if let PublicKeyKind::Rsa { exponent, .. } = kind {
                // RGS B1 2.2.1.1: public exponent above 2^16, and odd.
                if exponent <= 65536 || exponent % 2 == 0 {
                    refuse(
                        "key-rsa-exponent",
                        format!(
                            "RSA public exponent {exponent} must be odd and above 2^16 (RGS B1)"
                        ),
                    );
                }
            }
            true
        }
        Err(e) => {
            refuse("key-not-allowed", e.to_string());
            false
        }
    }
}

fn read_subject(csr: &VerifiedCsr) -> Result<DistinguishedName, Violation> {
    let attributes = name::read_name(csr.subject()).map_err(|e| Violation {
        rule: "subject-encoding",
        message: format!("the CSR subject cannot be used: {e}"),
    })?;
    let mut dn = DistinguishedName::new();
    for attribute in attributes {
        match attribute {
            ReadAttribute::Known(a, value) => {
                dn.push(a, value);
            }
            ReadAttribute::Unknown(oid) if oid == oid::AT_EMAIL_ADDRESS => {
                return Err(Violation {
                    rule: "subject-attribute-forbidden",
                    message: "emailAddress is not allowed: personal data is limited to name and first name".into(),
                });
            }
            ReadAttribute::Unknown(oid) => {
                return Err(Violation {
                    rule: "subject-attribute-forbidden",
                    message: format!("attribute {oid} is not allowed in a holder name"),
                });
            }
        }
    }
    Ok(dn)
}

/// The subject rules of RGS A4 VII.2 and EN 319 412-2 NAT-4.2.4, as the policy sets them.
pub(super) fn check_subject(rules: &SubjectRules, dn: &DistinguishedName) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut refuse = |rule: &'static str, message: String| out.push(Violation { rule, message });
    for (attribute, value) in dn.attributes() {
        if !rules.required.contains(attribute) && !rules.optional.contains(attribute) {
            refuse(
                "subject-attribute-forbidden",
                format!("{attribute} is not allowed by this policy"),
            );
        }
        if value.chars().count() > attribute.max_length() {
            refuse(
                "subject-value-too-long",
                format!(
                    "{attribute} is longer than {} characters",
                    attribute.max_length()
                ),
            );
        }
        if value.trim() != value || value.is_empty() {
            refuse(
                "subject-value-blank",
                format!("{attribute} is empty or has leading or trailing spaces"),
            );
        }
        // One repertoire for every name of this PKI (`policy::names`): two names that read
        // the same must be the same name, or the rules that compare persons could be dodged.
        if let Some(refused) = super::names::check_value(*attribute, value) {
            refuse("subject-character", refused.to_string());
        }
    }
    for required in &rules.required {
        if dn.first(*required).is_none() {
            refuse(
                "subject-attribute-missing",
                format!("{required} is required"),
            );
        }
    }
    for attribute in Attribute::ALL {
        let count = dn.values(attribute).count();
        let limit = if attribute == Attribute::OrganizationalUnit {
            rules.max_organizational_units
        } else {
            1
        };
        if count > limit {
            refuse(
                "subject-attribute-repeated",
                format!("{attribute} appears {count} times (at most {limit})"),
            );
        }
    }
    if let (Some(expected), Some(country)) = (&rules.country, dn.first(Attribute::Country))
        && country != expected
    {
        refuse(
            "subject-country",
            format!("C is {country:?}, the policy requires {expected:?}"),
        );
    }
    if rules.siren_unit {
        match dn.first(Attribute::OrganizationalUnit) {
            Some(unit) if super::is_siren_unit(unit) => {}
            Some(unit) => refuse(
                "subject-siren-unit",
                format!(
                    "the first OU {unit:?} is not \"0002 \" followed by a SIREN or SIRET (RGS A4 VII.1)"
                ),
            ),
            None => {}
        }
    }
    if rules.common_name == CommonNameRule::GivenNameThenSurname
        && let (Some(gn), Some(sn), Some(cn)) = (
            dn.first(Attribute::GivenName),
            dn.first(Attribute::Surname),
            dn.first(Attribute::CommonName),
        )
    {
        let expected = format!("{gn} {}", sn.to_uppercase());
        if cn != expected {
            refuse(
                "subject-common-name",
                format!(
                    "CN {cn:?} must be the given name then the surname in capitals: {expected:?} (RGS A4 VII.2.2)"
                ),
            );
        }
    }
    out
}

/// C, O, OU..., GN, SN, CN, serialNumber: the order of RGS A4 VII.2 and the samples.
fn canonical_order(dn: &DistinguishedName) -> DistinguishedName {
    let mut attributes = dn.attributes().to_vec();
    attributes.sort_by_key(|(attribute, _)| *attribute);
    let mut out = DistinguishedName::new();
    for (attribute, value) in attributes {
        out.push(attribute, value);
    }
    out
}

struct BuiltTbs {
    der: Vec<u8>,
    subject_der: Vec<u8>,
    public_key_der: Vec<u8>,
}

fn build_tbs(
    policy: &Policy,
    issuer: &IssuerProfile,
    csr: &VerifiedCsr,
    subject: &DistinguishedName,
    serial: &Serial,
    not_before: Timestamp,
    not_after: Timestamp,
) -> Result<BuiltTbs, Box<dyn std::error::Error>> {
    let spki = csr.public_key();
    let subject_der = subject.to_der()?;
    let tbs = TbsCertificateV3 {
        version: Version::V3,
        serial_number: serial.to_serial_number()?,
        signature: issuer.signature_algorithm.clone(),
        issuer: AnyRef::from_der(&issuer.subject_der)?,
        validity: Validity::new(not_before.to_x509_time()?, not_after.to_x509_time()?),
        subject: x509_cert::name::Name::from_der(&subject_der)?,
        subject_public_key_info: spki.clone(),
        extensions: end_entity_extensions(policy, issuer, &keys::key_identifier(spki))?,
    };
    Ok(BuiltTbs {
        der: tbs.to_der()?,
        subject_der,
        public_key_der: spki.to_der()?,
    })
}

/// The extensions of a holder certificate, in the order docs/design.md#holder-certificates
/// lists them.
pub(super) fn end_entity_extensions(
    policy: &Policy,
    issuer: &IssuerProfile,
    subject_key_id: &[u8; 20],
) -> Result<Vec<Extension>, der::Error> {
    let mut out = Vec::new();
    if let Some(criticality) = policy.basic_constraints {
        out.push(ext::basic_constraints(false, None, criticality)?);
    }
    out.push(ext::key_usage(
        policy.key_usage,
        policy.key_usage_criticality,
    )?);
    if let Some((purposes, criticality)) = &policy.extended_key_usage {
        out.push(ext::extended_key_usage(purposes, *criticality)?);
    }
    out.push(ext::subject_key_identifier(subject_key_id)?);
    out.push(ext::authority_key_identifier(&issuer.key_identifier)?);
    let mut policies = vec![PolicyEntry {
        oid: policy.oid,
        cps_uri: policy.cps_qualifier.then(|| issuer.cps_url.clone()),
    }];
    for extra in &policy.additional_policies {
        policies.push(PolicyEntry {
            oid: *extra,
            cps_uri: None,
        });
    }
    if let Some((_, qcp)) = &policy.qc_statements {
        policies.push(PolicyEntry {
            oid: *qcp,
            cps_uri: None,
        });
    }
    out.push(ext::certificate_policies(&policies)?);
    out.push(ext::crl_distribution_points(&issuer.crl_url)?);
    out.push(ext::authority_info_access(
        Some(&issuer.ca_issuers_url),
        Some(&issuer.ocsp_url),
    )?);
    if let Some((qc, _)) = &policy.qc_statements {
        out.push(ext::qc_statements(qc)?);
    }
    Ok(out)
}
