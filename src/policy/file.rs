//! The TOML schema of a policy file, before validation.
use serde::Deserialize;
use serde_spanned::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PolicyFile {
    pub name: Spanned<String>,
    pub oid: Spanned<String>,
    pub description: String,
    pub max_validity_years: Spanned<u16>,
    pub certificate_policies: CertificatePoliciesSection,
    pub key_usage: KeyUsageSection,
    pub extended_key_usage: Option<ExtendedKeyUsageSection>,
    pub basic_constraints: Option<BasicConstraintsSection>,
    pub subject: SubjectSection,
    pub keys: Vec<KeySection>,
    pub qc_statements: Option<QcStatementsSection>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CertificatePoliciesSection {
    pub cps_qualifier: bool,
    #[serde(default)]
    pub additional: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KeyUsageSection {
    pub usages: Spanned<Vec<String>>,
    pub critical: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ExtendedKeyUsageSection {
    pub purposes: Spanned<Vec<String>>,
    pub critical: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BasicConstraintsSection {
    pub critical: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SubjectSection {
    pub required: Spanned<Vec<String>>,
    pub optional: Option<Spanned<Vec<String>>>,
    pub max_organizational_units: Spanned<usize>,
    pub country: Option<Spanned<String>>,
    pub siren_unit: bool,
    pub common_name: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KeySection {
    pub algorithm: Spanned<String>,
    pub min_bits: Option<Spanned<u32>>,
    pub max_bits: Option<Spanned<u32>>,
    pub not_after_until: Option<Spanned<toml::value::Datetime>>,
    pub curve: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct QcStatementsSection {
    pub enabled: bool,
    pub compliance: bool,
    pub sscd: bool,
    #[serde(rename = "type")]
    pub qc_type: Spanned<String>,
    #[serde(default)]
    pub pds: Vec<PdsSection>,
    pub policy: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PdsSection {
    pub url: Spanned<String>,
    pub language: Spanned<String>,
}
