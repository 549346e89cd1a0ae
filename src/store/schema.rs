//! The store's own column families, their key encodings and value types, and the `table!`
//! macro with which the domain modules declare theirs beside their records (`ra::operators`,
//! `ra::cards`, `ra::holders`, `ra`, `ca::schedule`). [`ALL_TABLES`] names them all.
//!
//! Keys are typed ([`IssuerId`], [`CertKey`], [`Serial`]), never bare byte slices, and sort so
//! that the scans the CA needs are range scans: a CA's certificates and revocations are
//! contiguous under its [`IssuerId`], and the expiry index is ordered by time.
use core::fmt;

use serde::{Deserialize, Serialize};

use super::records::{CardRecord, CertRecord, IntentRecord, RevocationRecord};
use crate::x509::{Serial, Timestamp};

/// A table: a column family with a typed key and value.
pub trait Table {
    const NAME: &'static str;
    type Key: KeyCodec;
    type Value: ValueCodec;
}

/// How a key is written; keys decode back for scans.
pub trait KeyCodec: Sized {
    fn encode_key(&self) -> Vec<u8>;
    fn decode_key(bytes: &[u8]) -> Option<Self>;
}

/// How a value is written.
pub trait ValueCodec: Sized {
    fn encode_value(&self) -> Result<Vec<u8>, String>;
    fn decode_value(bytes: &[u8]) -> Result<Self, String>;
}

/// Declares a table: `table!(/// doc, Name, "column family", Key, Value)`. A domain module
/// declares its tables beside its records with `crate::store::table!`; the column family's name
/// must also be in [`ALL_TABLES`] (each module tests it).
macro_rules! table {
    ($(#[$doc:meta])* $name:ident, $cf:literal, $key:ty, $value:ty) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub enum $name {}
        impl $crate::store::Table for $name {
            const NAME: &'static str = $cf;
            type Key = $key;
            type Value = $value;
        }
    };
}
pub(crate) use table;

table!(
    /// Singletons: the CA state, the audit chain head, counters.
    Meta, "meta", String, Vec<u8>
);
table!(
    /// Issued certificates, by issuer then serial.
    Certificates, "certificates", CertKey, CertRecord
);
table!(
    /// Every serial ever reserved, under any issuer: a serial is never used twice.
    Serials, "serials", Serial, IssuerId
);
table!(
    /// Issuance intents recorded before signing and not yet resolved (invariant 1,
    /// docs/invariants.md).
    Intents, "intents", CertKey, IntentRecord
);
table!(
    /// Revoked serials, by issuer then serial: what CRLs and OCSP publish.
    Revocations, "revocations", CertKey, RevocationRecord
);
table!(
    /// Certificates by holder.
    HolderIndex, "holder_index", HolderKey, ()
);
table!(
    /// Certificates by notAfter.
    ExpiryIndex, "expiry_index", ExpiryKey, ()
);
table!(
    /// SHA-256 of a subject DN -> the holder it was given to. RGS: a DN given to a holder is
    /// never given to another for the CA's lifetime.
    SubjectOwners, "subject_owners", Digest, String
);
table!(
    /// SHA-256 of a certified SubjectPublicKeyInfo -> its certificate. RGS A2 IV.6: a
    /// certificate is never re-issued for the same key.
    CertifiedKeys, "certified_keys", Digest, CertKey
);
table!(
    /// Cards: one holder's authentication and signature certificates.
    Cards, "cards", String, CardRecord
);
table!(
    /// The audit log, by sequence number (written only through `Txn::audit`).
    Audit, "audit", u64, Vec<u8>
);
table!(
    /// Pre-signed OCSP responses: derived data (re-signing rebuilds it), so written without
    /// audit events and without fsync (`Store::write_derived`).
    OcspResponses, "ocsp_responses", ResponseKey, Vec<u8>
);

table!(
    /// What responder nodes must learn, in the order it changed: sequence number -> the name of
    /// what changed (`status.<issuer>.<serial>`, or `files` for CRLs and CA certificates),
    /// written in the same batch as the change and deleted once the engine has it.
    Outbox, "outbox", u64, String
);

/// Every column family the store opens (and creates in a new store, in this order): its own
/// tables and, by name, the domain tables declared beside their records. These names are the
/// layout of [`SCHEMA_VERSION`]: existing stores and backups open with them, so none changes.
pub const ALL_TABLES: &[&str] = &[
    Meta::NAME,
    Certificates::NAME,
    Serials::NAME,
    Intents::NAME,
    Revocations::NAME,
    HolderIndex::NAME,
    ExpiryIndex::NAME,
    SubjectOwners::NAME,
    CertifiedKeys::NAME,
    Cards::NAME,
    Audit::NAME,
    OcspResponses::NAME,
    // `ra::operators::Operators`, `ra::operators::OperatorPersons`, `ra::cards::CardRequests`,
    // `ra::Evidence`.
    "operators",
    "operator_persons",
    "card_requests",
    "evidence",
    Outbox::NAME,
    // `ca::schedule::ScheduledRevocations`, `ra::holders::Handovers`,
    // `ra::bulk::BulkRevocations`.
    "scheduled_revocations",
    "handovers",
    "bulk_revocations",
    // `notices::Notices`, `notices::NoticeOutbox`.
    "notices",
    "notice_outbox",
];

/// Keys of the `meta` table.
pub mod meta_keys {
    pub const CA_STATE: &str = "ca-state";
    pub const AUDIT_HEAD: &str = "audit-head";
    /// The SubjectPublicKeyInfo (DER) of the HSM key that signs audit checkpoints.
    pub const AUDIT_KEY: &str = "audit-key";
    pub const SCHEMA_VERSION: &str = "schema-version";
    /// The key ceremony under way (or interrupted), until its state is committed.
    pub const CEREMONY: &str = "ceremony";
    /// Labels of keys left in the token by interrupted ceremonies.
    pub const ORPHAN_KEYS: &str = "orphan-keys";

    /// The last CRL number published by an issuer (`crl-number/<issuer hex>`).
    pub fn crl_number(issuer: super::IssuerId) -> String {
        format!("crl-number/{}", issuer.to_hex())
    }
}

/// The current layout; a store written by a newer sceau is refused.
pub const SCHEMA_VERSION: u32 = 1;

/// Identifies a CA key: the 20-octet key identifier (RFC 5280 method 1), which is also the
/// issuerKeyHash of SHA-1 OCSP CertIDs.
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IssuerId(pub [u8; 20]);

impl IssuerId {
    pub fn to_hex(self) -> String {
        hex::encode_upper(self.0)
    }

    /// Reads [`IssuerId::to_hex`]'s text back.
    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes = hex::decode(text).ok()?;
        Some(IssuerId(bytes.try_into().ok()?))
    }
}

impl fmt::Debug for IssuerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IssuerId({})", self.to_hex())
    }
}

impl fmt::Display for IssuerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for IssuerId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for IssuerId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let bytes = hex::decode(&text).map_err(serde::de::Error::custom)?;
        let id: [u8; 20] = bytes
            .try_into()
            .map_err(|_| serde::de::Error::custom("issuer id is not 20 octets"))?;
        Ok(IssuerId(id))
    }
}

/// A certificate: issuer, then serial.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CertKey {
    pub issuer: IssuerId,
    #[serde(with = "serial_hex")]
    pub serial: Serial,
}

mod serial_hex {
    use crate::x509::Serial;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(serial: &Serial, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&serial.to_hex())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Serial, D::Error> {
        let text = String::deserialize(d)?;
        Serial::from_hex(&text).map_err(serde::de::Error::custom)
    }
}

/// A holder's certificate: holder id, a zero octet, then the certificate key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HolderKey {
    pub holder: String,
    pub certificate: CertKey,
}

/// A certificate by expiry: notAfter (big-endian seconds), then the certificate key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpiryKey {
    pub not_after: Timestamp,
    pub certificate: CertKey,
}

/// A pre-signed OCSP response: issuer, CertID hash algorithm (1 = SHA-1, 2 = SHA-256), serial.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseKey {
    pub certificate: CertKey,
    pub hash: u8,
}

impl ResponseKey {
    /// The prefix of an issuer's responses.
    pub fn issuer_prefix(issuer: IssuerId) -> Vec<u8> {
        issuer.0.to_vec()
    }
}

impl KeyCodec for ResponseKey {
    fn encode_key(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(41);
        out.extend_from_slice(&self.certificate.issuer.0);
        out.push(self.hash);
        out.extend_from_slice(self.certificate.serial.as_bytes());
        out
    }
    fn decode_key(bytes: &[u8]) -> Option<Self> {
        let (issuer, rest) = bytes.split_at_checked(20)?;
        let (hash, serial) = rest.split_first()?;
        Some(ResponseKey {
            certificate: CertKey {
                issuer: IssuerId(issuer.try_into().ok()?),
                serial: Serial::from_magnitude(serial).ok()?,
            },
            hash: *hash,
        })
    }
}

/// A SHA-256 digest used as a key.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Digest(pub [u8; 32]);

impl KeyCodec for String {
    fn encode_key(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
    fn decode_key(bytes: &[u8]) -> Option<Self> {
        String::from_utf8(bytes.to_vec()).ok()
    }
}

impl KeyCodec for u64 {
    fn encode_key(&self) -> Vec<u8> {
        self.to_be_bytes().to_vec()
    }
    fn decode_key(bytes: &[u8]) -> Option<Self> {
        Some(u64::from_be_bytes(bytes.try_into().ok()?))
    }
}

impl KeyCodec for Serial {
    fn encode_key(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
    fn decode_key(bytes: &[u8]) -> Option<Self> {
        Serial::from_magnitude(bytes).ok()
    }
}

impl KeyCodec for Digest {
    fn encode_key(&self) -> Vec<u8> {
        self.0.to_vec()
    }
    fn decode_key(bytes: &[u8]) -> Option<Self> {
        Some(Digest(bytes.try_into().ok()?))
    }
}

impl KeyCodec for CertKey {
    fn encode_key(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(20 + self.serial.as_bytes().len());
        out.extend_from_slice(&self.issuer.0);
        out.extend_from_slice(self.serial.as_bytes());
        out
    }
    fn decode_key(bytes: &[u8]) -> Option<Self> {
        let (issuer, serial) = bytes.split_at_checked(20)?;
        Some(CertKey {
            issuer: IssuerId(issuer.try_into().ok()?),
            serial: Serial::from_magnitude(serial).ok()?,
        })
    }
}

impl KeyCodec for HolderKey {
    fn encode_key(&self) -> Vec<u8> {
        let mut out = self.holder.as_bytes().to_vec();
        out.push(0);
        out.extend_from_slice(&self.certificate.encode_key());
        out
    }
    fn decode_key(bytes: &[u8]) -> Option<Self> {
        let zero = bytes.iter().position(|b| *b == 0)?;
        Some(HolderKey {
            holder: String::from_utf8(bytes[..zero].to_vec()).ok()?,
            certificate: CertKey::decode_key(&bytes[zero + 1..])?,
        })
    }
}

impl HolderKey {
    /// The prefix under which all of a holder's certificates sort.
    pub fn prefix(holder: &str) -> Vec<u8> {
        let mut out = holder.as_bytes().to_vec();
        out.push(0);
        out
    }
}

impl KeyCodec for ExpiryKey {
    fn encode_key(&self) -> Vec<u8> {
        let mut out = self.not_after.unix_seconds().to_be_bytes().to_vec();
        out.extend_from_slice(&self.certificate.encode_key());
        out
    }
    fn decode_key(bytes: &[u8]) -> Option<Self> {
        let (time, rest) = bytes.split_at_checked(8)?;
        Some(ExpiryKey {
            not_after: Timestamp::from_unix_seconds(u64::from_be_bytes(time.try_into().ok()?)),
            certificate: CertKey::decode_key(rest)?,
        })
    }
}

impl ValueCodec for Vec<u8> {
    fn encode_value(&self) -> Result<Vec<u8>, String> {
        Ok(self.clone())
    }
    fn decode_value(bytes: &[u8]) -> Result<Self, String> {
        Ok(bytes.to_vec())
    }
}

impl ValueCodec for () {
    fn encode_value(&self) -> Result<Vec<u8>, String> {
        Ok(Vec::new())
    }
    fn decode_value(_: &[u8]) -> Result<Self, String> {
        Ok(())
    }
}

impl ValueCodec for String {
    fn encode_value(&self) -> Result<Vec<u8>, String> {
        Ok(self.as_bytes().to_vec())
    }
    fn decode_value(bytes: &[u8]) -> Result<Self, String> {
        String::from_utf8(bytes.to_vec()).map_err(|e| e.to_string())
    }
}

impl ValueCodec for IssuerId {
    fn encode_value(&self) -> Result<Vec<u8>, String> {
        Ok(self.0.to_vec())
    }
    fn decode_value(bytes: &[u8]) -> Result<Self, String> {
        Ok(IssuerId(
            bytes.try_into().map_err(|_| "issuer id is not 20 octets")?,
        ))
    }
}

impl ValueCodec for CertKey {
    fn encode_value(&self) -> Result<Vec<u8>, String> {
        Ok(self.encode_key())
    }
    fn decode_value(bytes: &[u8]) -> Result<Self, String> {
        CertKey::decode_key(bytes).ok_or_else(|| "malformed certificate key".to_owned())
    }
}

/// JSON values: readable with `ldb`, and tolerant of added optional fields. Domain modules
/// give their records this encoding with `crate::store::json_value!`.
macro_rules! json_value {
    ($($t:ty),*) => {$(
        impl $crate::store::ValueCodec for $t {
            fn encode_value(&self) -> Result<Vec<u8>, String> {
                serde_json::to_vec(self).map_err(|e| e.to_string())
            }
            fn decode_value(bytes: &[u8]) -> Result<Self, String> {
                serde_json::from_slice(bytes).map_err(|e| e.to_string())
            }
        }
    )*};
}
pub(crate) use json_value;

json_value!(CertRecord, IntentRecord, CardRecord);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_column_families_of_schema_1_are_frozen() {
        // Existing stores and backups open with exactly these names, created in this order.
        assert_eq!(
            ALL_TABLES,
            [
                "meta",
                "certificates",
                "serials",
                "intents",
                "revocations",
                "holder_index",
                "expiry_index",
                "subject_owners",
                "certified_keys",
                "cards",
                "audit",
                "ocsp_responses",
                "operators",
                "operator_persons",
                "card_requests",
                "evidence",
                "outbox",
                "scheduled_revocations",
                "handovers",
                "bulk_revocations",
                "notices",
                "notice_outbox",
            ]
        );
        assert_eq!(SCHEMA_VERSION, 1);
    }

    #[test]
    fn keys_round_trip_and_sort_by_issuer_then_serial() {
        let a = CertKey {
            issuer: IssuerId([1; 20]),
            serial: Serial::from_hex("0102").unwrap(),
        };
        let b = CertKey {
            issuer: IssuerId([2; 20]),
            serial: Serial::from_hex("01").unwrap(),
        };
        assert!(a.encode_key() < b.encode_key());
        assert_eq!(CertKey::decode_key(&a.encode_key()), Some(a.clone()));
        let holder = HolderKey {
            holder: "agent-42".into(),
            certificate: a.clone(),
        };
        assert_eq!(HolderKey::decode_key(&holder.encode_key()), Some(holder));
        let expiry = ExpiryKey {
            not_after: Timestamp::from_unix_seconds(7),
            certificate: a,
        };
        assert_eq!(ExpiryKey::decode_key(&expiry.encode_key()), Some(expiry));
    }
}
