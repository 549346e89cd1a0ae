//! Revocation reasons (RFC 5280 §5.3.1 CRLReason) as sceau accepts them.
//!
//! docs/design.md#crl-and-arl: omit reasonCode rather than use unspecified (0); no
//! certificateHold (6), since revocation is final at RGS *** (EN 319 411-1 REV-6.3.9-04);
//! removeFromCRL (8) only in delta CRLs, which sceau does not publish.
use core::fmt;
use core::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RevocationReason {
    /// No reason given: the CRL entry and the OCSP response carry no reasonCode.
    Unspecified,
    /// Card lost or stolen, or key suspected compromised (give an invalidity date).
    KeyCompromise,
    CaCompromise,
    /// The holder left, or changed service.
    AffiliationChanged,
    /// Replaced by a new certificate (renewal).
    Superseded,
    CessationOfOperation,
    /// Misuse.
    PrivilegeWithdrawn,
}

impl RevocationReason {
    pub const ALL: [RevocationReason; 7] = [
        RevocationReason::Unspecified,
        RevocationReason::KeyCompromise,
        RevocationReason::CaCompromise,
        RevocationReason::AffiliationChanged,
        RevocationReason::Superseded,
        RevocationReason::CessationOfOperation,
        RevocationReason::PrivilegeWithdrawn,
    ];

    /// The CRLReason code written in CRL entries and OCSP responses, or `None` for unspecified
    /// (which is written as no reasonCode at all).
    pub fn code(self) -> Option<u8> {
        match self {
            RevocationReason::Unspecified => None,
            RevocationReason::KeyCompromise => Some(1),
            RevocationReason::CaCompromise => Some(2),
            RevocationReason::AffiliationChanged => Some(3),
            RevocationReason::Superseded => Some(4),
            RevocationReason::CessationOfOperation => Some(5),
            RevocationReason::PrivilegeWithdrawn => Some(9),
        }
    }

    pub fn from_code(code: Option<u8>) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.code() == code)
    }

    pub fn name(self) -> &'static str {
        match self {
            RevocationReason::Unspecified => "unspecified",
            RevocationReason::KeyCompromise => "key-compromise",
            RevocationReason::CaCompromise => "ca-compromise",
            RevocationReason::AffiliationChanged => "affiliation-changed",
            RevocationReason::Superseded => "superseded",
            RevocationReason::CessationOfOperation => "cessation-of-operation",
            RevocationReason::PrivilegeWithdrawn => "privilege-withdrawn",
        }
    }
}

impl fmt::Display for RevocationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for RevocationReason {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase().replace('_', "-");
        Self::ALL
            .into_iter()
            .find(|r| r.name() == wanted || r.name().replace('-', "") == wanted)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|r| r.name()).collect();
                format!(
                    "unknown revocation reason {s:?} (certificateHold and removeFromCRL are not allowed); expected one of: {}",
                    names.join(", ")
                )
            })
    }
}
