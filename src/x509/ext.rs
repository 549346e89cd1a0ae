//! Certificate extensions, built from x509-cert's extension types (and our own for
//! qcStatements and id-pkix-ocsp-nocheck), in the exact shapes docs/design.md#profiles gives.
use const_oid::{AssociatedOid, ObjectIdentifier};
use der::asn1::{Any, Ia5String, Null, OctetString, PrintableString};
use der::{Encode, Sequence};
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::certpolicy::{PolicyInformation, PolicyQualifierInfo};
use x509_cert::ext::pkix::crl::dp::DistributionPoint;
use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};
use x509_cert::ext::pkix::{
    AccessDescription, AuthorityInfoAccessSyntax, AuthorityKeyIdentifier, BasicConstraints,
    CertificatePolicies, CrlDistributionPoints, ExtendedKeyUsage, KeyUsage, KeyUsages,
    SubjectKeyIdentifier,
};

use super::oid;

/// Criticality of an extension, instead of a bare `bool` argument.
#[derive(Copy, Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Criticality {
    Critical,
    NonCritical,
}

impl Criticality {
    pub fn is_critical(self) -> bool {
        self == Criticality::Critical
    }
}

fn extension<T: Encode>(
    oid: ObjectIdentifier,
    criticality: Criticality,
    value: &T,
) -> Result<Extension, der::Error> {
    Ok(Extension {
        extn_id: oid,
        critical: criticality.is_critical(),
        extn_value: OctetString::new(value.to_der()?)?,
    })
}

/// basicConstraints (RFC 5280 §4.2.1.9). `cA FALSE` is the DER default and so is omitted,
/// giving an empty SEQUENCE for end entities.
pub fn basic_constraints(
    ca: bool,
    path_len: Option<u8>,
    criticality: Criticality,
) -> Result<Extension, der::Error> {
    extension(
        BasicConstraints::OID,
        criticality,
        &BasicConstraints {
            ca,
            path_len_constraint: path_len,
        },
    )
}

/// keyUsage (RFC 5280 §4.2.1.3), a minimal DER BIT STRING.
pub fn key_usage(
    usages: der::flagset::FlagSet<KeyUsages>,
    criticality: Criticality,
) -> Result<Extension, der::Error> {
    extension(KeyUsage::OID, criticality, &KeyUsage(usages))
}

/// extendedKeyUsage (RFC 5280 §4.2.1.12).
pub fn extended_key_usage(
    purposes: &[ObjectIdentifier],
    criticality: Criticality,
) -> Result<Extension, der::Error> {
    extension(
        ExtendedKeyUsage::OID,
        criticality,
        &ExtendedKeyUsage(purposes.to_vec()),
    )
}

/// subjectKeyIdentifier (RFC 5280 §4.2.1.2), non-critical.
pub fn subject_key_identifier(key_id: &[u8]) -> Result<Extension, der::Error> {
    extension(
        SubjectKeyIdentifier::OID,
        Criticality::NonCritical,
        &SubjectKeyIdentifier(OctetString::new(key_id)?),
    )
}

/// authorityKeyIdentifier with keyIdentifier only (RFC 5280 §4.2.1.1), non-critical.
pub fn authority_key_identifier(key_id: &[u8]) -> Result<Extension, der::Error> {
    extension(
        AuthorityKeyIdentifier::OID,
        Criticality::NonCritical,
        &AuthorityKeyIdentifier {
            key_identifier: Some(OctetString::new(key_id)?),
            authority_cert_issuer: None,
            authority_cert_serial_number: None,
        },
    )
}

/// One entry of certificatePolicies: a policy OID and an optional CPS URI qualifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyEntry {
    pub oid: ObjectIdentifier,
    pub cps_uri: Option<String>,
}

/// certificatePolicies (RFC 5280 §4.2.1.4), non-critical.
pub fn certificate_policies(entries: &[PolicyEntry]) -> Result<Extension, der::Error> {
    let mut policies = Vec::with_capacity(entries.len());
    for entry in entries {
        let qualifiers = match &entry.cps_uri {
            Some(uri) => Some(vec![PolicyQualifierInfo {
                policy_qualifier_id: oid::QT_CPS,
                qualifier: Some(Any::encode_from(&Ia5String::new(uri)?)?),
            }]),
            None => None,
        };
        policies.push(PolicyInformation {
            policy_identifier: entry.oid,
            policy_qualifiers: qualifiers,
        });
    }
    extension(
        CertificatePolicies::OID,
        Criticality::NonCritical,
        &CertificatePolicies(policies),
    )
}

/// cRLDistributionPoints with one full-name URI (RFC 5280 §4.2.1.13), non-critical.
pub fn crl_distribution_points(uri: &str) -> Result<Extension, der::Error> {
    let point = DistributionPoint {
        distribution_point: Some(DistributionPointName::FullName(vec![
            GeneralName::UniformResourceIdentifier(Ia5String::new(uri)?),
        ])),
        reasons: None,
        crl_issuer: None,
    };
    extension(
        CrlDistributionPoints::OID,
        Criticality::NonCritical,
        &CrlDistributionPoints(vec![point]),
    )
}

/// authorityInfoAccess (RFC 5280 §4.2.2.1): caIssuers first, then OCSP, as OpenSSL orders them.
pub fn authority_info_access(
    ca_issuers: Option<&str>,
    ocsp: Option<&str>,
) -> Result<Extension, der::Error> {
    let mut access = Vec::new();
    if let Some(uri) = ca_issuers {
        access.push(AccessDescription {
            access_method: oid::AD_CA_ISSUERS,
            access_location: GeneralName::UniformResourceIdentifier(Ia5String::new(uri)?),
        });
    }
    if let Some(uri) = ocsp {
        access.push(AccessDescription {
            access_method: oid::AD_OCSP,
            access_location: GeneralName::UniformResourceIdentifier(Ia5String::new(uri)?),
        });
    }
    extension(
        AuthorityInfoAccessSyntax::OID,
        Criticality::NonCritical,
        &AuthorityInfoAccessSyntax(access),
    )
}

/// id-pkix-ocsp-nocheck (RFC 6960 §4.2.2.2.1): "SHOULD be a non-critical extension. The value
/// of the extension SHALL be NULL."
pub fn ocsp_nocheck() -> Result<Extension, der::Error> {
    extension(oid::EXT_OCSP_NOCHECK, Criticality::NonCritical, &Null)
}

/// QCStatement (RFC 3739 §3.2.6).
///
/// ```text
/// QCStatement ::= SEQUENCE {
///     statementId   QC-STATEMENT.&Id({SupportedStatements}),
///     statementInfo QC-STATEMENT.&Type({SupportedStatements}{@statementId}) OPTIONAL }
/// ```
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct QcStatement {
    pub statement_id: ObjectIdentifier,
    #[asn1(optional = "true")]
    pub statement_info: Option<Any>,
}

/// PdsLocation (ETSI EN 319 412-5 §4.3.4).
///
/// ```text
/// PdsLocation ::= SEQUENCE {
///     url      IA5String,
///     language PrintableString (SIZE(2)) } -- ISO 639-1 language code
/// ```
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct PdsLocation {
    pub url: Ia5String,
    pub language: PrintableString,
}

/// What the qcStatements extension of an EU qualified signature certificate says
/// (EN 319 412-5 QCS-5-01: QcCompliance, QcSSCD, QcType esign; QcPDS optional).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QcStatements {
    pub compliance: bool,
    pub sscd: bool,
    pub esign_type: bool,
    /// (https URL, ISO 639-1 language) pairs.
    pub pds: Vec<(String, String)>,
}

/// qcStatements (RFC 3739 §3.2.6), non-critical (EN 319 412-5 §4.1).
pub fn qc_statements(qc: &QcStatements) -> Result<Extension, der::Error> {
    let mut statements = Vec::new();
    if qc.compliance {
        statements.push(QcStatement {
            statement_id: oid::QCS_QC_COMPLIANCE,
            statement_info: None,
        });
    }
    if qc.sscd {
        statements.push(QcStatement {
            statement_id: oid::QCS_QC_SSCD,
            statement_info: None,
        });
    }
    if qc.esign_type {
        statements.push(QcStatement {
            statement_id: oid::QCS_QC_TYPE,
            statement_info: Some(Any::encode_from(&vec![oid::QCT_ESIGN])?),
        });
    }
    if !qc.pds.is_empty() {
        let mut locations = Vec::with_capacity(qc.pds.len());
        for (url, language) in &qc.pds {
            locations.push(PdsLocation {
                url: Ia5String::new(url)?,
                language: PrintableString::new(language)?,
            });
        }
        statements.push(QcStatement {
            statement_id: oid::QCS_QC_PDS,
            statement_info: Some(Any::encode_from(&locations)?),
        });
    }
    extension(
        oid::EXT_QC_STATEMENTS,
        Criticality::NonCritical,
        &statements,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_usage_bit_strings_are_minimal() {
        // docs/design.md#pitfalls, 6: 03 02 07 80 (digitalSignature), 03 02 06 40 (nonRepudiation).
        let ds = key_usage(KeyUsages::DigitalSignature.into(), Criticality::Critical).unwrap();
        assert_eq!(ds.extn_value.as_bytes(), &[0x03, 0x02, 0x07, 0x80]);
        let nr = key_usage(KeyUsages::NonRepudiation.into(), Criticality::Critical).unwrap();
        assert_eq!(nr.extn_value.as_bytes(), &[0x03, 0x02, 0x06, 0x40]);
        let ca = key_usage(
            KeyUsages::KeyCertSign | KeyUsages::CRLSign,
            Criticality::Critical,
        )
        .unwrap();
        assert_eq!(ca.extn_value.as_bytes(), &[0x03, 0x02, 0x01, 0x06]);
    }

    #[test]
    fn end_entity_basic_constraints_is_an_empty_sequence() {
        let bc = basic_constraints(false, None, Criticality::Critical).unwrap();
        assert_eq!(bc.extn_value.as_bytes(), &[0x30, 0x00]);
        let ca = basic_constraints(true, Some(0), Criticality::Critical).unwrap();
        assert_eq!(
            ca.extn_value.as_bytes(),
            &[0x30, 0x06, 0x01, 0x01, 0xff, 0x02, 0x01, 0x00]
        );
    }

    #[test]
    fn nocheck_is_null() {
        assert_eq!(ocsp_nocheck().unwrap().extn_value.as_bytes(), &[0x05, 0x00]);
    }
}
