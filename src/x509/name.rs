//! Distinguished names: reading them strictly and writing them canonically.
//!
//! Reading ([`read_name`]) refuses what docs/design.md#common-rules forbids in a holder name:
//! multi-valued RDNs, string types other than UTF8String and PrintableString, and bytes that are
//! not UTF-8.
//! Writing ([`DistinguishedName::to_der`]) encodes every attribute as UTF8String except
//! countryName and serialNumber, which X.520 makes PrintableString.
use core::fmt;

use const_oid::ObjectIdentifier;
use der::asn1::{Any, PrintableStringRef, Utf8StringRef};
use der::{Decode, Encode, Tag, Tagged};
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};

use super::oid;

/// The attribute types a sceau name may carry, in the order the CA writes them.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Attribute {
    Country,
    Organization,
    OrganizationalUnit,
    OrganizationIdentifier,
    GivenName,
    Surname,
    CommonName,
    SerialNumber,
}

impl Attribute {
    pub const ALL: [Attribute; 8] = [
        Attribute::Country,
        Attribute::Organization,
        Attribute::OrganizationalUnit,
        Attribute::OrganizationIdentifier,
        Attribute::GivenName,
        Attribute::Surname,
        Attribute::CommonName,
        Attribute::SerialNumber,
    ];

    pub fn oid(self) -> ObjectIdentifier {
        match self {
            Attribute::Country => oid::AT_COUNTRY_NAME,
            Attribute::Organization => oid::AT_ORGANIZATION_NAME,
            Attribute::OrganizationalUnit => oid::AT_ORGANIZATIONAL_UNIT_NAME,
            Attribute::OrganizationIdentifier => oid::AT_ORGANIZATION_IDENTIFIER,
            Attribute::GivenName => oid::AT_GIVEN_NAME,
            Attribute::Surname => oid::AT_SURNAME,
            Attribute::CommonName => oid::AT_COMMON_NAME,
            Attribute::SerialNumber => oid::AT_SERIAL_NUMBER,
        }
    }

    pub fn from_oid(oid: ObjectIdentifier) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.oid() == oid)
    }

    /// The short name used in policies, configuration and messages (RFC 4514 where it has one).
    pub fn short_name(self) -> &'static str {
        match self {
            Attribute::Country => "C",
            Attribute::Organization => "O",
            Attribute::OrganizationalUnit => "OU",
            Attribute::OrganizationIdentifier => "organizationIdentifier",
            Attribute::GivenName => "GN",
            Attribute::Surname => "SN",
            Attribute::CommonName => "CN",
            Attribute::SerialNumber => "serialNumber",
        }
    }

    pub fn from_short_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.short_name() == name)
    }

    /// X.520 upper bounds (RFC 5280 appendix A.1, ub-*), in characters.
    pub fn max_length(self) -> usize {
        match self {
            Attribute::Country => 2,
            Attribute::SerialNumber => 64,
            Attribute::Organization | Attribute::OrganizationalUnit => 64,
            Attribute::CommonName => 64,
            Attribute::GivenName | Attribute::Surname => 32768,
            Attribute::OrganizationIdentifier => 64,
        }
    }

    /// countryName and serialNumber are PrintableString (X.520); the rest UTF8String.
    fn printable(self) -> bool {
        matches!(self, Attribute::Country | Attribute::SerialNumber)
    }
}

impl fmt::Display for Attribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short_name())
    }
}

/// A name as an ordered list of single-valued attributes, as sceau writes them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DistinguishedName {
    attributes: Vec<(Attribute, String)>,
}

impl DistinguishedName {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, attribute: Attribute, value: impl Into<String>) -> &mut Self {
        self.attributes.push((attribute, value.into()));
        self
    }

    pub fn attributes(&self) -> &[(Attribute, String)] {
        &self.attributes
    }

    /// All values of one attribute, in order.
    pub fn values(&self, attribute: Attribute) -> impl Iterator<Item = &str> {
        self.attributes
            .iter()
            .filter(move |(a, _)| *a == attribute)
            .map(|(_, v)| v.as_str())
    }

    pub fn first(&self, attribute: Attribute) -> Option<&str> {
        self.values(attribute).next()
    }

    /// The same name with another common name (the last CN replaced, or one added): the name
    /// of a later generation of a CA after a key rollover.
    pub fn with_common_name(&self, common_name: &str) -> Self {
        let mut renamed = self.clone();
        match renamed
            .attributes
            .iter_mut()
            .rev()
            .find(|(a, _)| *a == Attribute::CommonName)
        {
            Some((_, value)) => *value = common_name.to_owned(),
            None => {
                renamed.push(Attribute::CommonName, common_name);
            }
        }
        renamed
    }

    /// DER of the Name: one attribute per RDN, in the order pushed.
    pub fn to_der(&self) -> Result<Vec<u8>, NameError> {
        let mut rdns = RdnSequence::default();
        for (attribute, value) in &self.attributes {
            let encoded = if attribute.printable() {
                let printable =
                    PrintableStringRef::new(value).map_err(|_| NameError::NotPrintable {
                        attribute: *attribute,
                    })?;
                Any::encode_from(&printable)?
            } else {
                Any::encode_from(&Utf8StringRef::new(value)?)?
            };
            let atv = AttributeTypeAndValue {
                oid: attribute.oid(),
                value: encoded,
            };
            let rdn = RelativeDistinguishedName::try_from(vec![atv])?;
            rdns.push(rdn);
        }
        Ok(rdns.to_der()?)
    }

    pub fn to_name(&self) -> Result<Name, NameError> {
        Ok(Name::from_der(&self.to_der()?)?)
    }
}

impl fmt::Display for DistinguishedName {
    /// `C=FR, O=..., CN=...` for messages and logs (not an RFC 4514 string).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (attribute, value)) in self.attributes.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{attribute}={value}")?;
        }
        Ok(())
    }
}

/// One attribute of a name being read. Unknown types are kept so that the policy can name them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadAttribute {
    Known(Attribute, String),
    Unknown(ObjectIdentifier),
}

/// Reads a name strictly: single-valued RDNs, UTF8String or PrintableString values (IA5String
/// is tolerated only for emailAddress so that the policy can refuse it by name), valid UTF-8.
pub fn read_name(name: &Name) -> Result<Vec<ReadAttribute>, NameError> {
    let mut out = Vec::new();
    for rdn in name.iter_rdn() {
        if rdn.len() != 1 {
            return Err(NameError::MultiValuedRdn);
        }
        for atv in rdn.iter() {
            match Attribute::from_oid(atv.oid) {
                Some(attribute) => {
                    let value = directory_string(attribute, &atv.value)?;
                    out.push(ReadAttribute::Known(attribute, value));
                }
                None => out.push(ReadAttribute::Unknown(atv.oid)),
            }
        }
    }
    Ok(out)
}

fn directory_string(attribute: Attribute, value: &Any) -> Result<String, NameError> {
    let text = match value.tag() {
        Tag::Utf8String => {
            let s = core::str::from_utf8(value.value())
                .map_err(|_| NameError::NotUtf8 { attribute })?;
            s.to_owned()
        }
        Tag::PrintableString => value
            .decode_as::<PrintableStringRef<'_>>()
            .map_err(|_| NameError::NotPrintable { attribute })?
            .as_str()
            .to_owned(),
        other => {
            return Err(NameError::StringType {
                attribute,
                tag: other.to_string(),
            });
        }
    };
    if text.is_empty() {
        return Err(NameError::Empty { attribute });
    }
    if text.chars().any(|c| c.is_control()) {
        return Err(NameError::ControlCharacter { attribute });
    }
    Ok(text)
}

/// Why a name could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    #[error("a relative distinguished name holds more than one attribute")]
    MultiValuedRdn,
    #[error("{attribute} is not valid UTF-8")]
    NotUtf8 { attribute: Attribute },
    #[error("{attribute} is not a valid PrintableString")]
    NotPrintable { attribute: Attribute },
    #[error("{attribute} is encoded as {tag}; only UTF8String and PrintableString are accepted")]
    StringType { attribute: Attribute, tag: String },
    #[error("{attribute} is empty")]
    Empty { attribute: Attribute },
    #[error("{attribute} contains a control character")]
    ControlCharacter { attribute: Attribute },
    #[error("attribute type {0} is not one sceau writes")]
    UnknownAttribute(ObjectIdentifier),
    #[error("DER: {0}")]
    Der(#[from] der::Error),
}

/// Reads all attribute values of a DER Name into a [`DistinguishedName`], refusing unknown types.
pub fn parse_distinguished_name(der: &[u8]) -> Result<DistinguishedName, NameError> {
    let name = Name::from_der(der)?;
    let mut dn = DistinguishedName::new();
    for attribute in read_name(&name)? {
        match attribute {
            ReadAttribute::Known(a, v) => {
                dn.push(a, v);
            }
            ReadAttribute::Unknown(oid) => return Err(NameError::UnknownAttribute(oid)),
        }
    }
    Ok(dn)
}

/// The set of attribute values, canonicalised for equality tests (same attributes, same values).
pub fn same_values(a: &DistinguishedName, b: &DistinguishedName) -> bool {
    let mut left: Vec<_> = a.attributes().to_vec();
    let mut right: Vec<_> = b.attributes().to_vec();
    left.sort();
    right.sort();
    left == right
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> DistinguishedName {
        let mut dn = DistinguishedName::new();
        dn.push(Attribute::Country, "FR")
            .push(Attribute::Organization, "Ministère de la Justice")
            .push(Attribute::OrganizationalUnit, "0002 110014016")
            .push(Attribute::GivenName, "Anne-Sophie")
            .push(Attribute::Surname, "DURAND")
            .push(Attribute::CommonName, "Anne-Sophie DURAND");
        dn
    }

    #[test]
    fn country_is_printable_and_the_rest_utf8() {
        let der = sample().to_der().unwrap();
        // First RDN: SET { SEQUENCE { OID 2.5.4.6, PrintableString "FR" } }
        assert_eq!(
            &der[3..16],
            &[
                0x31, 0x0b, 0x30, 0x09, 0x06, 0x03, 0x55, 0x04, 0x06, 0x13, 0x02, b'F', b'R'
            ]
        );
        let name = Name::from_der(&der).unwrap();
        let read = read_name(&name).unwrap();
        assert_eq!(read.len(), 6);
        assert_eq!(
            read[1],
            ReadAttribute::Known(Attribute::Organization, "Ministère de la Justice".into())
        );
        let back = parse_distinguished_name(&der).unwrap();
        assert_eq!(back, sample());
    }

    #[test]
    fn refuses_invalid_utf8_and_bmp_strings() {
        // CN as UTF8String holding 0xC3 0x28 (an invalid sequence).
        let bad_utf8 = [
            0x30, 0x0f, 0x31, 0x0d, 0x30, 0x0b, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x04, b'a',
            0xc3, 0x28, b'b',
        ];
        let name = Name::from_der(&bad_utf8).unwrap();
        assert!(matches!(read_name(&name), Err(NameError::NotUtf8 { .. })));
        // CN as BMPString "ab".
        let bmp = [
            0x30, 0x0f, 0x31, 0x0d, 0x30, 0x0b, 0x06, 0x03, 0x55, 0x04, 0x03, 0x1e, 0x04, 0x00,
            b'a', 0x00, b'b',
        ];
        let name = Name::from_der(&bmp).unwrap();
        assert!(matches!(
            read_name(&name),
            Err(NameError::StringType { .. })
        ));
    }
}
