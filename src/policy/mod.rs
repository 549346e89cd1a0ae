//! Certification policies, as data.
//!
//! Each `policies/*.toml` file is parsed once, at start-up, into a validated [`Policy`]; an error
//! names the file, the line and the key (invariant 7, docs/invariants.md). Issuance then applies
//! a policy as a pure function: [`prepare`] turns a request into a [`LintedTbs`] — the DER of
//! the TBSCertificate, already checked by independent lints against the same policy — or into a
//! [`Rejection`] listing every rule the request breaks. Nothing here signs or stores.

mod file;
mod lint;
pub mod names;
mod prepare;

use core::fmt;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use const_oid::ObjectIdentifier;
use der::flagset::FlagSet;
use serde_spanned::Spanned;
use x509_cert::ext::pkix::KeyUsages;

pub use lint::lint_tbs;
pub use prepare::{IssuanceRequest, IssuerProfile, LintedTbs, prepare};

/// The organizational unit rule, shared with the configuration of the CA's own names (which
/// stands on a lower floor).
pub use crate::config::is_siren_unit;
use crate::config::{LoadError, SourceFile};
use crate::x509::Timestamp;
use crate::x509::ext::{Criticality, QcStatements};
use crate::x509::keys::{Curve, PublicKeyKind};
use crate::x509::name::Attribute;
use crate::x509::oid;

/// A validated certification policy.
#[derive(Clone, Debug)]
pub struct Policy {
    pub name: String,
    pub oid: ObjectIdentifier,
    pub description: String,
    /// RGS A2 VI.3.2: an "Agent" certificate lives at most 3 years.
    pub max_validity_years: u16,
    pub cps_qualifier: bool,
    pub additional_policies: Vec<ObjectIdentifier>,
    pub key_usage: FlagSet<KeyUsages>,
    pub key_usage_criticality: Criticality,
    pub extended_key_usage: Option<(Vec<ObjectIdentifier>, Criticality)>,
    /// basicConstraints with cA FALSE, when the policy includes it.
    pub basic_constraints: Option<Criticality>,
    pub subject: SubjectRules,
    pub keys: Vec<KeyRule>,
    /// qcStatements for EU qualified signature certificates, with the QCP OID they bring.
    pub qc_statements: Option<(QcStatements, ObjectIdentifier)>,
}

impl Policy {
    /// The latest notAfter of a certificate of this policy whose notBefore is `not_before`:
    /// `max_validity_years` calendar years later (whatever 29 February they span), less one
    /// second, as RFC 5280 validity includes both ends. The one rule of issuance, renewal and
    /// the lint.
    pub fn latest_not_after(&self, not_before: Timestamp) -> Result<Timestamp, der::Error> {
        Ok(not_before
            .plus_years(self.max_validity_years)?
            .minus_seconds(1))
    }
}

/// What a holder subject must and may contain.
#[derive(Clone, Debug)]
pub struct SubjectRules {
    pub required: BTreeSet<Attribute>,
    pub optional: BTreeSet<Attribute>,
    pub max_organizational_units: usize,
    pub country: Option<String>,
    /// The first OU is "0002 " + SIREN or SIRET (RGS A4 VII.1).
    pub siren_unit: bool,
    pub common_name: CommonNameRule,
}

/// How the CN relates to the other attributes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum CommonNameRule {
    /// Any CN.
    Free,
    /// CN = `"<givenName> <SURNAME>"` (RGS A4 VII.2.2: "Prénom NOM").
    GivenNameThenSurname,
}

/// One kind of holder key a policy accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyRule {
    Rsa {
        min_bits: u32,
        max_bits: u32,
        /// Only for certificates that end on or before this time (RGS B1 RègleFact-1: 2048-bit
        /// RSA until 2030).
        not_after_until: Option<Timestamp>,
    },
    Ec {
        curve: Curve,
    },
}

impl KeyRule {
    /// Whether a key of this kind may be certified until `not_after`.
    pub fn accepts(&self, key: &PublicKeyKind, not_after: Timestamp) -> bool {
        match (self, key) {
            (
                KeyRule::Rsa {
                    min_bits,
                    max_bits,
                    not_after_until,
                },
                PublicKeyKind::Rsa { modulus_bits, .. },
            ) => {
                modulus_bits >= min_bits
                    && modulus_bits <= max_bits
                    && not_after_until.is_none_or(|until| not_after <= until)
            }
            (KeyRule::Ec { curve }, PublicKeyKind::Ec(key_curve)) => curve == key_curve,
            _ => false,
        }
    }
}

impl fmt::Display for KeyRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyRule::Rsa {
                min_bits,
                not_after_until: Some(until),
                ..
            } => write!(
                f,
                "RSA ≥ {min_bits} bits for certificates ending by {until}"
            ),
            KeyRule::Rsa { min_bits, .. } => write!(f, "RSA ≥ {min_bits} bits"),
            KeyRule::Ec { curve } => write!(f, "EC {curve}"),
        }
    }
}

/// The loaded policies, by name.
#[derive(Clone, Debug, Default)]
pub struct PolicySet {
    policies: BTreeMap<String, Policy>,
}

impl PolicySet {
    /// Loads every `*.toml` file of `dir`. A file's `name` must equal its file name.
    pub fn load_dir(dir: &Path) -> Result<Self, LoadError> {
        let entries = std::fs::read_dir(dir).map_err(|e| LoadError {
            file: dir.to_path_buf(),
            line: None,
            key: None,
            message: format!("cannot read the policies directory: {e}"),
        })?;
        let mut paths: Vec<_> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        paths.sort();
        let mut set = PolicySet::default();
        for path in paths {
            let source = SourceFile::read(&path)?;
            let policy = Policy::from_source(&source)?;
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            if policy.name != stem {
                return Err(source.file_error(
                    Some("name"),
                    format!(
                        "the policy is named {:?} but its file is {stem}.toml",
                        policy.name
                    ),
                ));
            }
            if let Some(other) = set.policies.values().find(|p| p.oid == policy.oid) {
                return Err(source.file_error(
                    Some("oid"),
                    format!(
                        "OID {} is already used by policy {}",
                        policy.oid, other.name
                    ),
                ));
            }
            set.policies.insert(policy.name.clone(), policy);
        }
        if set.policies.is_empty() {
            return Err(LoadError {
                file: dir.to_path_buf(),
                line: None,
                key: None,
                message: "no policy (*.toml) in this directory".into(),
            });
        }
        Ok(set)
    }

    pub fn get(&self, name: &str) -> Option<&Policy> {
        self.policies.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.policies.keys().map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Policy> {
        self.policies.values()
    }
}

impl Policy {
    pub fn from_source(source: &SourceFile) -> Result<Self, LoadError> {
        let raw: file::PolicyFile = source.parse()?;
        let err = |span: core::ops::Range<usize>, key: &str, message: String| {
            source.error(span, key, message)
        };

        let name = raw.name.get_ref().clone();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(err(
                raw.name.span(),
                "name",
                "lower-case letters, digits and '-' only".into(),
            ));
        }
        let oid = parse_oid(source, &raw.oid, "oid")?;
        let years = *raw.max_validity_years.get_ref();
        if !(1..=3).contains(&years) {
            return Err(err(
                raw.max_validity_years.span(),
                "max_validity_years",
                "must be 1 to 3 (RGS A2 VI.3.2: agent certificates live at most 3 years)".into(),
            ));
        }
        let mut additional_policies = Vec::new();
        for (i, text) in raw.certificate_policies.additional.iter().enumerate() {
            additional_policies.push(parse_oid(
                source,
                text,
                &format!("certificate_policies.additional[{i}]"),
            )?);
        }

        let mut key_usage = FlagSet::<KeyUsages>::default();
        for usage in raw.key_usage.usages.get_ref() {
            key_usage |= match usage.as_str() {
                "digitalSignature" => KeyUsages::DigitalSignature,
                "nonRepudiation" | "contentCommitment" => KeyUsages::NonRepudiation,
                "keyEncipherment" => KeyUsages::KeyEncipherment,
                "keyAgreement" => KeyUsages::KeyAgreement,
                other => {
                    return Err(err(
                        raw.key_usage.usages.span(),
                        "key_usage.usages",
                        format!(
                            "{other:?} is not a holder key usage (digitalSignature, nonRepudiation, keyEncipherment, keyAgreement)"
                        ),
                    ));
                }
            };
        }
        if key_usage.is_empty() {
            return Err(err(
                raw.key_usage.usages.span(),
                "key_usage.usages",
                "at least one usage".into(),
            ));
        }
        if !raw.key_usage.critical {
            return Err(source.file_error(
                Some("key_usage.critical"),
                "must be true (RGS A4 II.2.2; EN 319 412-2)",
            ));
        }

        let extended_key_usage = match &raw.extended_key_usage {
            Some(section) => {
                if section.critical {
                    return Err(source.file_error(
                        Some("extended_key_usage.critical"),
                        "must be false (EN 319 412-2 GEN-4.3.10-1)",
                    ));
                }
                let mut purposes = Vec::new();
                for purpose in section.purposes.get_ref() {
                    purposes.push(match purpose.as_str() {
                        "clientAuth" => oid::KP_CLIENT_AUTH,
                        "smartcardLogon" => oid::KP_MS_SMARTCARD_LOGON,
                        "emailProtection" => {
                            return Err(err(
                                section.purposes.span(),
                                "extended_key_usage.purposes",
                                "emailProtection brings the CA/B Forum S/MIME requirements into play (docs/design.md#authentication-certificate)".into(),
                            ));
                        }
                        other => ObjectIdentifier::new(other).map_err(|_| {
                            err(
                                section.purposes.span(),
                                "extended_key_usage.purposes",
                                format!("{other:?} is neither clientAuth, smartcardLogon nor an OID"),
                            )
                        })?,
                    });
                }
                if purposes.is_empty() {
                    return Err(err(
                        section.purposes.span(),
                        "extended_key_usage.purposes",
                        "at least one purpose, or remove the table".into(),
                    ));
                }
                Some((purposes, Criticality::NonCritical))
            }
            None => None,
        };
        let basic_constraints = raw.basic_constraints.as_ref().map(|bc| {
            if bc.critical {
                Criticality::Critical
            } else {
                Criticality::NonCritical
            }
        });

        let subject = subject_rules(source, &raw.subject)?;
        if raw.keys.is_empty() {
            return Err(source.file_error(Some("keys"), "at least one [[keys]] entry"));
        }
        let mut keys = Vec::new();
        for (i, key) in raw.keys.iter().enumerate() {
            keys.push(key_rule(source, key, i)?);
        }

        let qc_statements = match &raw.qc_statements {
            Some(qc) if qc.enabled => {
                if qc.qc_type.get_ref() != "esign" {
                    return Err(err(
                        qc.qc_type.span(),
                        "qc_statements.type",
                        "only \"esign\" (id-etsi-qct-esign) is supported".into(),
                    ));
                }
                let mut pds = Vec::new();
                let mut languages = BTreeSet::new();
                for (i, location) in qc.pds.iter().enumerate() {
                    if !location.url.get_ref().starts_with("https://")
                        || !location.url.get_ref().is_ascii()
                    {
                        return Err(err(
                            location.url.span(),
                            &format!("qc_statements.pds[{i}].url"),
                            "an https URL (EN 319 412-5 QCS-4.3.4)".into(),
                        ));
                    }
                    let language = location.language.get_ref();
                    if language.len() != 2 || !language.chars().all(|c| c.is_ascii_lowercase()) {
                        return Err(err(
                            location.language.span(),
                            &format!("qc_statements.pds[{i}].language"),
                            "an ISO 639-1 code such as \"en\"".into(),
                        ));
                    }
                    if !languages.insert(language.clone()) {
                        return Err(err(
                            location.language.span(),
                            &format!("qc_statements.pds[{i}].language"),
                            "at most one PDS per language".into(),
                        ));
                    }
                    pds.push((location.url.get_ref().clone(), language.clone()));
                }
                if !pds.is_empty() && !languages.contains("en") {
                    return Err(source.file_error(
                        Some("qc_statements.pds"),
                        "at least one PDS must be in English (EN 319 412-5 QCS-4.3.4-01)",
                    ));
                }
                let qcp = parse_oid(source, &qc.policy, "qc_statements.policy")?;
                Some((
                    QcStatements {
                        compliance: qc.compliance,
                        sscd: qc.sscd,
                        esign_type: true,
                        pds,
                    },
                    qcp,
                ))
            }
            _ => None,
        };

        Ok(Policy {
            name,
            oid,
            description: raw.description,
            max_validity_years: years,
            cps_qualifier: raw.certificate_policies.cps_qualifier,
            additional_policies,
            key_usage,
            key_usage_criticality: Criticality::Critical,
            extended_key_usage,
            basic_constraints,
            subject,
            keys,
            qc_statements,
        })
    }
}

fn parse_oid(
    source: &SourceFile,
    text: &Spanned<String>,
    key: &str,
) -> Result<ObjectIdentifier, LoadError> {
    ObjectIdentifier::new(text.get_ref()).map_err(|_| {
        source.error(
            text.span(),
            key,
            format!("{:?} is not an OID", text.get_ref()),
        )
    })
}

fn attributes(
    source: &SourceFile,
    list: &Spanned<Vec<String>>,
    key: &str,
) -> Result<BTreeSet<Attribute>, LoadError> {
    let mut out = BTreeSet::new();
    for name in list.get_ref() {
        let attribute = Attribute::from_short_name(name).ok_or_else(|| {
            source.error(
                list.span(),
                key,
                format!("{name:?} is not an attribute sceau writes (C, O, OU, organizationIdentifier, GN, SN, CN, serialNumber)"),
            )
        })?;
        out.insert(attribute);
    }
    Ok(out)
}

fn subject_rules(
    source: &SourceFile,
    raw: &file::SubjectSection,
) -> Result<SubjectRules, LoadError> {
    let required = attributes(source, &raw.required, "subject.required")?;
    let optional = match &raw.optional {
        Some(list) => {
            let optional = attributes(source, list, "subject.optional")?;
            if let Some(both) = required.intersection(&optional).next() {
                return Err(source.error(
                    list.span(),
                    "subject.optional",
                    format!("{both} is also required"),
                ));
            }
            optional
        }
        None => BTreeSet::new(),
    };
    // EN 319 412-2 NAT-4.2.4-1: a natural person has C, GN and/or SN (or a pseudonym), and CN.
    for needed in [Attribute::Country, Attribute::CommonName] {
        if !required.contains(&needed) {
            return Err(source.error(
                raw.required.span(),
                "subject.required",
                format!("{needed} is required for a natural person (EN 319 412-2 NAT-4.2.4-1)"),
            ));
        }
    }
    if !required.contains(&Attribute::GivenName) && !required.contains(&Attribute::Surname) {
        return Err(source.error(
            raw.required.span(),
            "subject.required",
            "GN or SN is required for a natural person (EN 319 412-2 NAT-4.2.4-1)",
        ));
    }
    let common_name = match raw.common_name.get_ref().as_str() {
        "free" => CommonNameRule::Free,
        "given-name-then-surname" => {
            if !required.contains(&Attribute::GivenName) || !required.contains(&Attribute::Surname)
            {
                return Err(source.error(
                    raw.common_name.span(),
                    "subject.common_name",
                    "needs GN and SN to be required",
                ));
            }
            CommonNameRule::GivenNameThenSurname
        }
        other => {
            return Err(source.error(
                raw.common_name.span(),
                "subject.common_name",
                format!("{other:?}: expected \"free\" or \"given-name-then-surname\""),
            ));
        }
    };
    let max_ou = *raw.max_organizational_units.get_ref();
    if max_ou > 4 {
        return Err(source.error(
            raw.max_organizational_units.span(),
            "subject.max_organizational_units",
            "at most 4",
        ));
    }
    let country = match &raw.country {
        Some(c)
            if c.get_ref().len() == 2 && c.get_ref().chars().all(|x| x.is_ascii_uppercase()) =>
        {
            Some(c.get_ref().clone())
        }
        Some(c) => return Err(source.error(c.span(), "subject.country", "two upper-case letters")),
        None => None,
    };
    Ok(SubjectRules {
        required,
        optional,
        max_organizational_units: max_ou,
        country,
        siren_unit: raw.siren_unit,
        common_name,
    })
}

fn key_rule(
    source: &SourceFile,
    raw: &file::KeySection,
    index: usize,
) -> Result<KeyRule, LoadError> {
    let key = |field: &str| format!("keys[{index}].{field}");
    match raw.algorithm.get_ref().as_str() {
        "rsa" => {
            let min = raw.min_bits.as_ref().ok_or_else(|| {
                source.error(
                    raw.algorithm.span(),
                    &key("min_bits"),
                    "an RSA rule needs min_bits".to_owned(),
                )
            })?;
            let min_bits = *min.get_ref();
            // RGS B1 RègleFact-1: at least 2048 bits.
            if min_bits < 2048 {
                return Err(source.error(
                    min.span(),
                    &key("min_bits"),
                    "RGS B1 RègleFact-1 requires at least 2048 bits",
                ));
            }
            let max_bits = raw.max_bits.as_ref().map_or(8192, |m| *m.get_ref());
            if max_bits < min_bits || max_bits > 8192 {
                return Err(source.error(
                    raw.algorithm.span(),
                    &key("max_bits"),
                    "between min_bits and 8192",
                ));
            }
            let not_after_until = match &raw.not_after_until {
                Some(t) => Some(Timestamp::parse_rfc3339(&t.get_ref().to_string()).map_err(
                    |_| {
                        source.error(
                            t.span(),
                            &key("not_after_until"),
                            "a UTC date-time such as 2030-12-31T23:59:59Z",
                        )
                    },
                )?),
                None => None,
            };
            // RGS B1 RègleFact-2: below 3072 bits only until the end of 2030.
            let end_2030 = Timestamp::from_unix_seconds(1_924_991_999);
            if min_bits < 3072 && not_after_until.is_none_or(|t| t > end_2030) {
                return Err(source.error(
                    raw.algorithm.span(),
                    &key("not_after_until"),
                    "RSA below 3072 bits needs not_after_until no later than 2030-12-31T23:59:59Z (RGS B1 RègleFact-2)",
                ));
            }
            Ok(KeyRule::Rsa {
                min_bits,
                max_bits,
                not_after_until,
            })
        }
        "ec" => {
            let curve = raw.curve.as_ref().ok_or_else(|| {
                source.error(
                    raw.algorithm.span(),
                    &key("curve"),
                    "an EC rule needs a curve",
                )
            })?;
            let parsed = match curve.get_ref().as_str() {
                "P-256" => Curve::P256,
                "P-384" => Curve::P384,
                other => {
                    return Err(source.error(
                        curve.span(),
                        &key("curve"),
                        format!("{other:?}: P-256 or P-384"),
                    ));
                }
            };
            Ok(KeyRule::Ec { curve: parsed })
        }
        other => Err(source.error(
            raw.algorithm.span(),
            &key("algorithm"),
            format!("{other:?}: \"rsa\" or \"ec\""),
        )),
    }
}

/// One broken rule: a stable identifier and a sentence that says what was wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub rule: &'static str,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.rule, self.message)
    }
}

/// Why a request was refused: every broken rule, with the policy that refused it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct Rejection {
    pub policy: String,
    pub violations: Vec<Violation>,
}

impl Rejection {
    pub fn single(policy: &str, rule: &'static str, message: impl Into<String>) -> Self {
        Self {
            policy: policy.to_owned(),
            violations: vec![Violation {
                rule,
                message: message.into(),
            }],
        }
    }

    /// The problem type of the rejection, `policy-violation:` and the names of the broken rules,
    /// each once, in the order first broken (a request breaks a bounded set of named rules, so
    /// the type stays short however many times it breaks them).
    pub fn problem_rule(&self) -> String {
        let mut names: Vec<&str> = Vec::new();
        for violation in &self.violations {
            if !names.contains(&violation.rule) {
                names.push(violation.rule);
            }
        }
        format!("policy-violation:{}", names.join(","))
    }

    /// Whether one of the violations is `rule`.
    pub fn breaks(&self, rule: &str) -> bool {
        self.violations.iter().any(|v| v.rule == rule)
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "policy {} refused the request: ", self.policy)?;
        for (i, violation) in self.violations.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{violation}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policies_dir() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")
    }

    #[test]
    fn the_shipped_policies_load() {
        let set = PolicySet::load_dir(&policies_dir()).unwrap();
        let auth = set.get("justice-auth").unwrap();
        assert_eq!(
            auth.oid,
            ObjectIdentifier::new_unwrap("1.2.250.1.120.2.2.1.3")
        );
        assert_eq!(auth.key_usage, FlagSet::from(KeyUsages::DigitalSignature));
        assert!(auth.qc_statements.is_none());
        let sign = set.get("justice-sign").unwrap();
        assert_eq!(
            sign.oid,
            ObjectIdentifier::new_unwrap("1.2.250.1.120.2.3.1.3")
        );
        assert_eq!(sign.key_usage, FlagSet::from(KeyUsages::NonRepudiation));
        assert!(sign.extended_key_usage.is_none());
    }

    #[test]
    fn an_invalid_policy_names_file_line_and_key() {
        let text = std::fs::read_to_string(policies_dir().join("justice-auth.toml")).unwrap();
        let broken = text.replace("max_validity_years = 3", "max_validity_years = 5");
        let source = SourceFile::from_text(Path::new("justice-auth.toml"), &broken);
        let err = Policy::from_source(&source).unwrap_err();
        let line = broken
            .lines()
            .position(|l| l.starts_with("max_validity_years"))
            .unwrap()
            + 1;
        assert_eq!(
            (err.line, err.key.as_deref()),
            (Some(line), Some("max_validity_years")),
            "{err}"
        );

        let weak = text.replace("min_bits = 3072", "min_bits = 1024");
        let source = SourceFile::from_text(Path::new("justice-auth.toml"), &weak);
        let err = Policy::from_source(&source).unwrap_err();
        assert!(err.message.contains("RègleFact-1"), "{err}");
    }

    #[test]
    fn siren_units() {
        assert!(is_siren_unit("0002 123456789"));
        assert!(is_siren_unit("0002 12345678901234"));
        assert!(!is_siren_unit("0002 12345678"));
        assert!(!is_siren_unit("123456789"));
    }
}

#[cfg(test)]
mod prepare_tests;
