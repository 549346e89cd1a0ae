//! What the key ceremony leaves in the store: the CA certificates and the labels of their keys.
use serde::{Deserialize, Serialize};

use crate::store::base64_bytes;
use crate::x509::Timestamp;
use crate::x509::sigalg::SignatureScheme;

/// The CA's state, stored under `meta/ca-state`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaState {
    /// The root, when it is known (created here, or imported with the issuing CA certificate).
    pub root: Option<RootCa>,
    /// Earlier roots, oldest first (`sceau ca rotate --root`): their keys keep signing their
    /// ARLs while what they certified is valid.
    #[serde(default)]
    pub previous_roots: Vec<RootCa>,
    /// The link certificates between consecutive roots (RFC 4210 §4.4), oldest first.
    #[serde(default)]
    pub root_links: Vec<RootLink>,
    /// Issuing CAs, oldest first; the last one issues new certificates.
    pub issuing: Vec<StoredCa>,
    /// Delegated OCSP responder certificates, oldest first.
    pub ocsp_responders: Vec<StoredCa>,
    /// `init --external-root`: the issuing key exists and its CSR was written; waiting for
    /// `ca import-cert`.
    pub pending_issuing: Option<PendingIssuing>,
    pub created_at: Timestamp,
    /// Retired keys destroyed in the HSM by a ceremony (`destroy-key`): their certificates
    /// stay above, their status unchanged; nothing loads their keys any more.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destroyed_keys: Vec<DestroyedKey>,
}

/// A retired key destroyed in the HSM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestroyedKey {
    pub label: String,
    pub destroyed_at: Timestamp,
    /// Whether the HSM's destruction is done and on record (`key_destroyed` in the audit log):
    /// false between the mark and the HSM call's outcome.
    #[serde(default)]
    pub recorded: bool,
}

/// A CA (or OCSP responder) certificate and the HSM key it belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCa {
    /// Short name, used for file names (`racine`, `ac-agents`, `ocsp-ac-agents`).
    pub name: String,
    pub key_label: String,
    pub scheme: SignatureScheme,
    #[serde(with = "base64_bytes")]
    pub certificate: Vec<u8>,
}

/// The root certificate, and its key when the root was created here (an external root's key
/// lives elsewhere).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootCa {
    pub name: String,
    #[serde(with = "base64_bytes")]
    pub certificate: Vec<u8>,
    pub key: Option<KeyRef>,
}

/// The two link certificates of a root rollover: relying parties that trust either root can
/// validate certificates under the other.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootLink {
    pub old: String,
    pub new: String,
    /// The new root's key certified by the old root.
    #[serde(with = "base64_bytes")]
    pub new_with_old: Vec<u8>,
    /// The old root's key certified by the new root.
    #[serde(with = "base64_bytes")]
    pub old_with_new: Vec<u8>,
}

impl RootCa {
    /// The root as a CA that can sign here, when its key is in this HSM.
    pub fn signing(&self) -> Option<StoredCa> {
        self.key.as_ref().map(|key| StoredCa {
            name: self.name.clone(),
            key_label: key.label.clone(),
            scheme: key.scheme,
            certificate: self.certificate.clone(),
        })
    }
}

/// A key in the HSM and the scheme it signs with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRef {
    pub label: String,
    pub scheme: SignatureScheme,
}

/// An issuing CA key waiting for its certificate from an external root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingIssuing {
    pub name: String,
    pub key_label: String,
    pub scheme: SignatureScheme,
    #[serde(with = "base64_bytes")]
    pub csr: Vec<u8>,
}

impl CaState {
    /// The labels of every key the CA state names (roots, current and earlier, issuing CAs,
    /// responders, a pending issuing CA): keys a ceremony never destroys.
    pub fn key_labels(&self) -> Vec<&str> {
        self.roots()
            .filter_map(|r| r.key.as_ref().map(|k| k.label.as_str()))
            .chain(self.issuing.iter().map(|c| c.key_label.as_str()))
            .chain(self.ocsp_responders.iter().map(|c| c.key_label.as_str()))
            .chain(self.pending_issuing.iter().map(|p| p.key_label.as_str()))
            .collect()
    }

    pub fn is_ready(&self) -> bool {
        !self.issuing.is_empty()
    }

    /// Whether the key `label` was destroyed as retired.
    pub fn key_destroyed(&self, label: &str) -> bool {
        self.destroyed_keys.iter().any(|k| k.label == label)
    }

    /// The issuing CAs whose keys are still in the HSM (oldest first): what signs CRLs and
    /// certifies responders.
    pub fn issuing_in_hsm(&self) -> impl Iterator<Item = &StoredCa> {
        self.issuing
            .iter()
            .filter(|c| !self.key_destroyed(&c.key_label))
    }

    /// Every root generation, oldest first (the current one last).
    pub fn roots(&self) -> impl Iterator<Item = &RootCa> {
        self.previous_roots.iter().chain(self.root.iter())
    }

    /// The first root's name: the one written in the configured root URLs.
    pub fn first_root_name(&self) -> Option<&str> {
        self.roots().next().map(|r| r.name.as_str())
    }

    /// The first issuing CA's name: the one written in the configured URLs.
    pub fn first_issuing_name(&self) -> Option<&str> {
        self.issuing.first().map(|c| c.name.as_str())
    }

    /// The issuing CAs still in service whose responder must be renewed: all of them when
    /// `force`, else those whose responder is past two thirds of its life (or has none).
    pub fn responders_due(&self, now: Timestamp, force: bool) -> Vec<&StoredCa> {
        self.issuing_in_hsm()
            .filter(|ca| ca.validity().is_some_and(|(_, end)| end > now))
            .filter(|ca| {
                if force {
                    return true;
                }
                let Some(key_id) = ca.subject_key_identifier() else {
                    return false;
                };
                match self
                    .responders_of(&key_id)
                    .last()
                    .and_then(|r| r.validity())
                {
                    Some((start, end)) => {
                        let (start, end) = (start.unix_seconds(), end.unix_seconds());
                        now.unix_seconds() >= start + end.saturating_sub(start) * 2 / 3
                    }
                    None => true,
                }
            })
            .collect()
    }

    /// The delegated OCSP responders certified by the CA whose key identifier is
    /// `issuer_key_id`, oldest first (the last one is in force).
    pub fn responders_of(&self, issuer_key_id: &[u8; 20]) -> Vec<&StoredCa> {
        self.ocsp_responders
            .iter()
            .filter(|r| r.authority_key_identifier().as_ref() == Some(issuer_key_id))
            .collect()
    }
}

impl StoredCa {
    /// The certificate, decoded (`None` if the stored bytes are not one).
    fn parsed(&self) -> Option<x509_cert::Certificate> {
        der::Decode::from_der(&self.certificate).ok()
    }

    /// notBefore and notAfter of the certificate.
    pub fn validity(&self) -> Option<(Timestamp, Timestamp)> {
        let certificate = self.parsed()?;
        let validity = certificate.tbs_certificate().validity();
        Some((
            Timestamp::from_x509_time(&validity.not_before),
            Timestamp::from_x509_time(&validity.not_after),
        ))
    }

    /// An extension of the certificate, decoded (`None` if absent or not decodable).
    fn extension<T: der::DecodeOwned + const_oid::AssociatedOid>(&self) -> Option<T> {
        let certificate = self.parsed()?;
        let (_, value) = certificate.tbs_certificate().get_extension::<T>().ok()??;
        Some(value)
    }

    /// The subjectKeyIdentifier of the certificate (what the AKIs of its children copy).
    pub fn subject_key_identifier(&self) -> Option<[u8; 20]> {
        let ski = self.extension::<x509_cert::ext::pkix::SubjectKeyIdentifier>()?;
        ski.0.as_bytes().try_into().ok()
    }

    /// The authorityKeyIdentifier of the certificate: which CA key signed it.
    pub fn authority_key_identifier(&self) -> Option<[u8; 20]> {
        let aki = self.extension::<x509_cert::ext::pkix::AuthorityKeyIdentifier>()?;
        aki.key_identifier?.as_bytes().try_into().ok()
    }
}
