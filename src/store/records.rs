//! The values stored in the tables.
use serde::{Deserialize, Serialize};

use super::schema::{CertKey, ValueCodec};
use crate::x509::Timestamp;
use crate::x509::revocation::RevocationReason;

/// An issued certificate and what it was issued for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertRecord {
    #[serde(with = "base64_bytes")]
    pub der: Vec<u8>,
    pub policy: String,
    pub holder: Option<String>,
    pub card: Option<String>,
    pub not_before: Timestamp,
    pub not_after: Timestamp,
    pub issued_at: Timestamp,
}

/// An issuance intent: written (durably) before the HSM is asked to sign `tbs`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntentRecord {
    #[serde(with = "base64_bytes")]
    pub tbs: Vec<u8>,
    pub policy: String,
    pub holder: Option<String>,
    pub card: Option<String>,
    pub not_after: Timestamp,
    pub recorded_at: Timestamp,
}

/// A card: one holder's authentication and signature certificates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardRecord {
    pub card: String,
    pub holder: String,
    pub authentication: CertKey,
    pub signature: CertKey,
    pub issued_at: Timestamp,
    /// Cards live 6 years; their certificates 3 (a renewal at mid-life gives new keys).
    pub card_expires_at: Timestamp,
    /// Renewals so far (at most one: two 3-year certificates cover a 6-year card).
    #[serde(default)]
    pub renewals: u32,
    /// The certificates a renewal replaced (revoked as superseded).
    #[serde(default)]
    pub superseded: Vec<CertKey>,
}

/// A revocation: compact, because CRLs read a million of them in one pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RevocationRecord {
    pub revoked_at: Timestamp,
    pub reason: RevocationReason,
    pub invalidity_date: Option<Timestamp>,
    /// The certificate's notAfter (CRLs keep expired entries, with ExpiredCertsOnCRL).
    pub not_after: Timestamp,
}

impl ValueCodec for RevocationRecord {
    /// revoked_at (8) || reason code (1, 0xFF = none) || invalidity date (8, 0 = none) ||
    /// not_after (8), all big-endian.
    fn encode_value(&self) -> Result<Vec<u8>, String> {
        let mut out = Vec::with_capacity(25);
        out.extend_from_slice(&self.revoked_at.unix_seconds().to_be_bytes());
        out.push(self.reason.code().unwrap_or(0xff));
        out.extend_from_slice(
            &self
                .invalidity_date
                .map_or(0, |t| t.unix_seconds())
                .to_be_bytes(),
        );
        out.extend_from_slice(&self.not_after.unix_seconds().to_be_bytes());
        Ok(out)
    }

    fn decode_value(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() != 25 {
            return Err(format!("revocation record of {} octets", bytes.len()));
        }
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            u64::from_be_bytes(b)
        };
        let code = match bytes[8] {
            0xff => None,
            c => Some(c),
        };
        let reason = RevocationReason::from_code(code)
            .ok_or_else(|| format!("unknown reason code {}", bytes[8]))?;
        let invalidity = u64_at(9);
        Ok(Self {
            revoked_at: Timestamp::from_unix_seconds(u64_at(0)),
            reason,
            invalidity_date: (invalidity != 0).then(|| Timestamp::from_unix_seconds(invalidity)),
            not_after: Timestamp::from_unix_seconds(u64_at(17)),
        })
    }
}

/// DER in JSON records, as standard base64.
pub mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocation_record_round_trips() {
        for reason in RevocationReason::ALL {
            let record = RevocationRecord {
                revoked_at: Timestamp::from_unix_seconds(1_800_000_000),
                reason,
                invalidity_date: Some(Timestamp::from_unix_seconds(1_799_990_000)),
                not_after: Timestamp::from_unix_seconds(1_900_000_000),
            };
            let bytes = record.encode_value().unwrap();
            assert_eq!(RevocationRecord::decode_value(&bytes).unwrap(), record);
        }
        assert!(RevocationRecord::decode_value(&[0; 3]).is_err());
    }
}
