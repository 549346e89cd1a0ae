//! A policy file (`policies/*.toml`) read into a [`Policy`]: every field checked, every error
//! naming the file, the line and the key.
use std::collections::BTreeSet;

use const_oid::ObjectIdentifier;
use der::flagset::FlagSet;
use serde_spanned::Spanned;
use x509_cert::ext::pkix::KeyUsages;

use super::{CommonNameRule, KeyRule, Policy, SubjectRules, file};
use crate::config::{LoadError, SourceFile};
use crate::x509::Timestamp;
use crate::x509::ext::{Criticality, QcStatements};
use crate::x509::keys::Curve;
use crate::x509::name::Attribute;
use crate::x509::oid;

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

        let key_usage = key_usage_rule(source, &raw.key_usage)?;
        let extended_key_usage = extended_key_usage_rule(source, raw.extended_key_usage.as_ref())?;
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

        let qc_statements = qc_statements_rule(source, raw.qc_statements.as_ref())?;

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

/// `[key_usage]`: the holder's key usages, critical.
fn key_usage_rule(
    source: &SourceFile,
    section: &file::KeyUsageSection,
) -> Result<FlagSet<KeyUsages>, LoadError> {
    let err = |span: core::ops::Range<usize>, key: &str, message: String| {
        source.error(span, key, message)
    };
    let mut key_usage = FlagSet::<KeyUsages>::default();
    for usage in section.usages.get_ref() {
        key_usage |= match usage.as_str() {
            "digitalSignature" => KeyUsages::DigitalSignature,
            "nonRepudiation" | "contentCommitment" => KeyUsages::NonRepudiation,
            "keyEncipherment" => KeyUsages::KeyEncipherment,
            "keyAgreement" => KeyUsages::KeyAgreement,
            other => {
                return Err(err(
                    section.usages.span(),
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
            section.usages.span(),
            "key_usage.usages",
            "at least one usage".into(),
        ));
    }
    if !section.critical {
        return Err(source.file_error(
            Some("key_usage.critical"),
            "must be true (RGS A4 II.2.2; EN 319 412-2)",
        ));
    }
    Ok(key_usage)
}

/// `[extended_key_usage]`: the purposes, non-critical; `None` without the table.
fn extended_key_usage_rule(
    source: &SourceFile,
    section: Option<&file::ExtendedKeyUsageSection>,
) -> Result<Option<(Vec<ObjectIdentifier>, Criticality)>, LoadError> {
    let err = |span: core::ops::Range<usize>, key: &str, message: String| {
        source.error(span, key, message)
    };
    Ok(match section {
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
    })
}

/// `[qc_statements]` (EN 319 412-5) and the QCP policy OID that goes with them; `None` when
/// absent or disabled.
fn qc_statements_rule(
    source: &SourceFile,
    section: Option<&file::QcStatementsSection>,
) -> Result<Option<(QcStatements, ObjectIdentifier)>, LoadError> {
    let err = |span: core::ops::Range<usize>, key: &str, message: String| {
        source.error(span, key, message)
    };
    Ok(match section {
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
    })
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
