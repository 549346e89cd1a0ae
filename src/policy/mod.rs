//! Certification policies, as data.
//!
//! Each `policies/*.toml` file is parsed once, at start-up, into a validated [`Policy`]; an error
//! names the file, the line and the key (invariant 7, docs/invariants.md). Issuance then applies
//! a policy as a pure function: [`prepare`] turns a request into a [`LintedTbs`] — the DER of
//! the TBSCertificate, already checked by independent lints against the same policy — or into a
//! [`Rejection`] listing every rule the request breaks. Nothing here signs or stores.

mod file;
mod lint;
mod load;
pub mod names;
mod prepare;

use core::fmt;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use const_oid::ObjectIdentifier;
use der::flagset::FlagSet;
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

/// A digest of every file of the policy directory `dir` (its name, then the SHA-256 of its
/// bytes, in name order): what the officers approve when they change the policies in force.
pub fn files_digest(dir: &Path) -> Result<[u8; 32], std::io::Error> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    paths.sort();
    let mut listing = Vec::new();
    for path in paths.iter().filter(|p| p.is_file()) {
        let bytes = std::fs::read(path)?;
        listing.extend_from_slice(path.file_name().unwrap_or_default().as_encoded_bytes());
        listing.push(0);
        listing.extend_from_slice(&crate::x509::keys::sha256(&bytes));
    }
    Ok(crate::x509::keys::sha256(&listing))
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
        // The two certificates of an agent's card: the policy OID and the one key usage.
        for (name, oid, usage) in [
            (
                "justice-auth",
                "1.2.250.1.120.2.2.1.3",
                KeyUsages::DigitalSignature,
            ),
            (
                "justice-sign",
                "1.2.250.1.120.2.3.1.3",
                KeyUsages::NonRepudiation,
            ),
        ] {
            let policy = set.get(name).unwrap();
            assert_eq!(policy.oid.to_string(), oid, "{name}");
            assert_eq!(policy.key_usage, FlagSet::from(usage), "{name}");
        }
        assert!(set.get("justice-auth").unwrap().qc_statements.is_none());
        assert!(
            set.get("justice-sign")
                .unwrap()
                .extended_key_usage
                .is_none()
        );
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
