//! The requests and answers of the service layer as they travel: the CLI serialises a request,
//! the admin API deserialises the same type, and both print or send the same answer type. One
//! declaration per shape, so that client and server cannot drift apart.

use serde::{Deserialize, Serialize};

use crate::ca::revoke::RevokedCertificate;
use crate::ca::schedule::ScheduledRevocation;

/// `sceau revoke` / `POST /admin/revoke`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeBody {
    pub serial: Option<String>,
    pub card: Option<String>,
    /// Required unless `at` is given (a departure: affiliation-changed by default).
    pub reason: Option<String>,
    pub invalidity_date: Option<String>,
    /// Revoke at this time (RFC 3339) rather than now; a time already past revokes now.
    pub at: Option<String>,
}

/// `sceau backup` / `POST /admin/backup`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupBody {
    /// An absolute path, which must not exist.
    pub out: std::path::PathBuf,
}

/// `sceau audit export --bundle` / `POST /admin/audit/bundle-mark`: the period exported.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleMarkBody {
    pub from: crate::x509::Timestamp,
    pub to: crate::x509::Timestamp,
}

/// `sceau scheduled cancel` / `POST /admin/revoke/cancel`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    pub id: String,
}

/// `sceau issue` / `POST /admin/issue`: one certificate.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueBody {
    pub policy: String,
    /// PEM.
    pub csr: String,
    pub holder: Option<String>,
    pub not_after: Option<String>,
}

/// `sceau card issue` / `POST /admin/card`: both certificates of a card.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CardBody {
    pub holder: String,
    pub card: Option<String>,
    pub authentication_csr: String,
    pub signature_csr: String,
    pub authentication_policy: String,
    pub signature_policy: String,
}

/// `sceau ra bootstrap` / `POST /admin/ra/bootstrap`: the first AE.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapBody {
    /// The AE's card: its authentication certificate becomes the credential.
    pub card: String,
    pub scope: crate::ra::operators::Scope,
}

/// `sceau ca rotate [--root]` / `POST /admin/ca/rotate` and `/admin/ca/rotate-root`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    /// The new CA's common name (default: the configured one followed by the generation).
    pub common_name: Option<String>,
}

/// Which key `sceau ca rotate` replaces.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Rollover {
    Issuing,
    Root,
}

/// The answer to a revocation: what was revoked and what OCSP says of it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Revoked {
    pub revoked: Vec<RevokedCertificate>,
    pub ocsp: String,
}

/// The answer to a revocation for a time to come.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Scheduled {
    pub scheduled: ScheduledRevocation,
}

/// The answer to a cancelled scheduled revocation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Cancelled {
    pub cancelled: ScheduledRevocation,
}

/// One issued certificate.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Issued {
    pub serial: String,
    pub policy: String,
    /// PEM.
    pub certificate: String,
}

/// Both certificates of a card.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CardIssued {
    pub card: String,
    pub holder: String,
    pub authentication: Issued,
    pub signature: Issued,
}

/// The first AE, registered.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Bootstrapped {
    pub operator: String,
    pub role: crate::ra::operators::Role,
    pub subject: String,
    pub scope: crate::ra::operators::Scope,
}

/// One renewed delegated OCSP responder.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RenewedResponder {
    pub issuing: String,
    pub responder: String,
    pub key_label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
}

/// The answer to a responder renewal: by the daemon, with its responses re-signed; offline,
/// with what happens to them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Renewed {
    pub renewed: Vec<RenewedResponder>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub responses_resigned: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub responses: Option<String>,
}

/// The answer to a key rollover.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Rotated {
    Issuing {
        issuing: String,
        key_label: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        not_before: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        not_after: Option<String>,
        responder: String,
        #[serde(default)]
        previous: Vec<String>,
    },
    Root {
        root: Option<String>,
        /// The two link certificates between the old and the new root.
        #[serde(default)]
        links: Option<[String; 2]>,
    },
}

/// The answer to an audit checkpoint request.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Checkpointed {
    pub checkpoint: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

impl Checkpointed {
    pub fn from_head(signed: Option<crate::audit::ChainHead>) -> Self {
        match signed {
            Some(head) => Checkpointed {
                checkpoint: Some(head.seq),
                hash: Some(hex::encode(head.hash)),
                why: None,
            },
            None => Checkpointed {
                checkpoint: None,
                hash: None,
                why: Some("the log is empty or already ends with a checkpoint".into()),
            },
        }
    }
}

/// The answer to `sceau publish --all`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FullPublication {
    pub full_publication: String,
    pub statuses: u64,
}

/// `sceau ceremony propose` / `POST /admin/ceremony/propose`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProposeBody {
    pub operation: String,
    /// The operation's own parameters (`common-name`, `out`, `quorum`, `officer.N`).
    #[serde(default)]
    pub parameters: std::collections::BTreeMap<String, String>,
    /// How long the proposal waits for its approvals (at most 24 h).
    pub valid_for_seconds: u64,
}

/// `sceau ceremony run` / `POST /admin/ceremony/run`: the proposal's bytes and the approvals,
/// base64.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunBody {
    pub proposal: String,
    pub approvals: Vec<String>,
}

/// What a ceremony run answers: the transcript file's bytes (JSON) and where it was written.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CarriedOut {
    pub id: String,
    pub operation: String,
    pub succeeded: bool,
    pub transcript: std::path::PathBuf,
    pub report: std::path::PathBuf,
    pub details: std::collections::BTreeMap<String, String>,
}
