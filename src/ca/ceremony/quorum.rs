//! M-of-N control of a key ceremony: a proposal that says exactly what will happen, and the
//! check that M distinct security officers approved those very bytes.
//!
//! An officer approves by signing the proposal's canonical bytes with the signature key of
//! their card, as an attached CMS SignedData (`openssl cms -sign -binary -nodetach -outform
//! DER`, or any card middleware). An officer is known by that certificate, pinned whole (its
//! DER): the set of officers and the quorum are themselves decided by a ceremony, so no other
//! CA's word can add one. Persons are compared as the RA compares them
//! ([`crate::policy::names::person_key`]): one person holding two cards, or two spellings of
//! one name, counts once.
//!
//! What is refused, with nothing changed: fewer than M approvals, an approval of another
//! proposal (other bytes), a signature that does not verify, a signer who is not an active
//! officer, one person twice, a proposal past its expiry or already carried out, and a
//! proposal made over another audit head than the current one (something happened since the
//! officers read it).

use std::collections::{BTreeMap, BTreeSet};

use der::Decode;
use serde::{Deserialize, Serialize};
use x509_cert::Certificate;

use crate::x509::Timestamp;
use crate::x509::cms::{self, CmsError};

/// The key operations that need a quorum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Operation {
    Init,
    RotateIssuing,
    RotateRoot,
    RenewResponders,
    Backup,
    Restore,
    DestroyKey,
    ChangeOfficers,
    ChangePolicies,
}

/// What will happen, as the officers read and sign it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// Unique per proposal (a replayed approval names an earlier one).
    pub id: String,
    pub operation: Operation,
    /// The operation's parameters (key specs, names, files' digests), by name.
    pub parameters: BTreeMap<String, String>,
    /// The audit chain's head when the proposal was made: `SEQ:HASH` (hex).
    pub audit_head: String,
    pub proposed_at: Timestamp,
    pub expires_at: Timestamp,
}

impl Proposal {
    /// The bytes the officers sign: compact JSON, fields in the order above, parameters sorted
    /// by name. Parsing and writing again gives the same bytes.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        // A struct of strings, numbers and a sorted map: serialising cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a proposal from its canonical bytes; bytes that are not canonical (other spacing,
    /// other field order, unknown fields) are refused, so that what was signed is what is run.
    pub fn from_canonical_bytes(bytes: &[u8]) -> Result<Self, QuorumError> {
        let proposal: Proposal = serde_json::from_slice(bytes)
            .map_err(|e| QuorumError::Malformed(format!("the proposal: {e}")))?;
        if proposal.canonical_bytes() != bytes {
            return Err(QuorumError::Malformed(
                "the proposal is not in canonical form (compact JSON, fields in order)".into(),
            ));
        }
        Ok(proposal)
    }
}

/// A security officer: a person, and the certificate of their card's signature key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Officer {
    /// [`crate::policy::names::person_key`] of the certificate's subject.
    pub person: String,
    /// The signature certificate, DER.
    pub certificate: Vec<u8>,
    /// Withdrawn officers stay listed (their past approvals remain readable) but count no more.
    pub active: bool,
}

impl Officer {
    /// An officer known by `certificate_der`; the person is read from its subject.
    pub fn from_certificate(certificate_der: &[u8]) -> Result<Self, QuorumError> {
        let certificate = Certificate::from_der(certificate_der)
            .map_err(|e| QuorumError::Malformed(format!("an officer's certificate: {e}")))?;
        let subject = der::Encode::to_der(certificate.tbs_certificate().subject())
            .map_err(|e| QuorumError::Malformed(e.to_string()))?;
        let name = crate::x509::name::parse_distinguished_name(&subject)
            .map_err(|e| QuorumError::Malformed(format!("an officer's subject: {e}")))?;
        Ok(Self {
            person: crate::policy::names::person_key(&name),
            certificate: certificate_der.to_vec(),
            active: true,
        })
    }
}

/// The officers and how many of them must approve a ceremony.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfficerSet {
    pub quorum: usize,
    pub officers: Vec<Officer>,
}

/// The least quorum: RGS *** and ETSI EN 319 411-1 ask at least two persons.
pub const LEAST_QUORUM: usize = 2;

impl OfficerSet {
    /// A set with `quorum` of `officers`: at least two persons, each once, and a quorum the
    /// active officers can reach.
    pub fn new(quorum: usize, officers: Vec<Officer>) -> Result<Self, QuorumError> {
        let mut persons = BTreeSet::new();
        for officer in &officers {
            if !persons.insert(officer.person.as_str()) {
                return Err(QuorumError::SamePerson(officer.person.clone()));
            }
        }
        let active = officers.iter().filter(|o| o.active).count();
        if quorum < LEAST_QUORUM || quorum > active {
            return Err(QuorumError::Quorum { quorum, active });
        }
        Ok(Self { quorum, officers })
    }
}

/// Who approved, in the order the approvals were given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovedBy {
    pub person: String,
    /// SHA-256 of the officer's certificate, hex.
    pub certificate_sha256: String,
}

/// Why a ceremony may not run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum QuorumError {
    #[error("malformed: {0}")]
    Malformed(String),
    #[error("approval {index}: {reason}")]
    Approval { index: usize, reason: String },
    #[error("approval {index} is not signed by an active security officer")]
    NotAnOfficer { index: usize },
    #[error("approval {index} approves other bytes than this proposal")]
    OtherProposal { index: usize },
    #[error("{0} approves twice: one person counts once")]
    SamePerson(String),
    #[error("{have} approvals of distinct officers, {need} needed")]
    TooFew { have: usize, need: usize },
    #[error("the proposal expired at {0}")]
    Expired(Timestamp),
    #[error(
        "the proposal was made at audit head {proposed}, the chain is now at {current}: propose again"
    )]
    HeadMoved { proposed: String, current: String },
    #[error("the proposal {0} was already carried out")]
    AlreadyCarriedOut(String),
    #[error("a quorum of {quorum} cannot be met by {active} active officers (at least 2)")]
    Quorum { quorum: usize, active: usize },
}

/// Where a ceremony stands when its approvals are checked.
pub struct Context<'a> {
    pub now: Timestamp,
    /// The audit chain's head now, `SEQ:HASH`.
    pub audit_head: &'a str,
    /// Whether the proposal with this id was carried out already.
    pub carried_out: &'a dyn Fn(&str) -> bool,
    /// Whether this certificate (DER) is revoked.
    pub revoked: &'a dyn Fn(&[u8]) -> bool,
}

impl std::fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("now", &self.now)
            .field("audit_head", &self.audit_head)
            .finish_non_exhaustive()
    }
}

/// Checks that `approvals` (CMS SignedData, DER) hold a quorum of `officers` for `proposal`.
/// An officer counts only with a certificate valid now and not revoked.
pub fn check(
    proposal: &Proposal,
    approvals: &[Vec<u8>],
    officers: &OfficerSet,
    context: &Context<'_>,
) -> Result<Vec<ApprovedBy>, QuorumError> {
    let (now, current_head) = (context.now, context.audit_head);
    let carried_out = context.carried_out;
    if carried_out(&proposal.id) {
        return Err(QuorumError::AlreadyCarriedOut(proposal.id.clone()));
    }
    if now >= proposal.expires_at {
        return Err(QuorumError::Expired(proposal.expires_at));
    }
    if proposal.audit_head != current_head {
        return Err(QuorumError::HeadMoved {
            proposed: proposal.audit_head.clone(),
            current: current_head.to_owned(),
        });
    }
    let mut active: Vec<(&Officer, Certificate)> = Vec::new();
    for officer in officers.officers.iter().filter(|o| o.active) {
        let certificate = Certificate::from_der(&officer.certificate)
            .map_err(|e| QuorumError::Malformed(format!("an officer's certificate: {e}")))?;
        let validity = certificate.tbs_certificate().validity();
        let valid = Timestamp::from_x509_time(&validity.not_before) <= now
            && now <= Timestamp::from_x509_time(&validity.not_after);
        if valid && !(context.revoked)(&officer.certificate) {
            active.push((officer, certificate));
        }
    }
    let candidates: Vec<&Certificate> = active.iter().map(|(_, c)| c).collect();
    let expected = proposal.canonical_bytes();
    let mut persons = BTreeSet::new();
    let mut approved = Vec::new();
    for (index, approval) in approvals.iter().enumerate() {
        let (content, signer) = match cms::verify_attached_by_one_of(approval, &candidates) {
            Ok(verified) => verified,
            Err(CmsError::WrongSigner) => return Err(QuorumError::NotAnOfficer { index }),
            Err(error) => {
                return Err(QuorumError::Approval {
                    index,
                    reason: error.to_string(),
                });
            }
        };
        if content != expected {
            return Err(QuorumError::OtherProposal { index });
        }
        let (officer, _) = active[signer];
        if !persons.insert(officer.person.clone()) {
            return Err(QuorumError::SamePerson(officer.person.clone()));
        }
        approved.push(ApprovedBy {
            person: officer.person.clone(),
            certificate_sha256: hex::encode(crate::x509::keys::sha256(&officer.certificate)),
        });
    }
    if approved.len() < officers.quorum {
        return Err(QuorumError::TooFew {
            have: approved.len(),
            need: officers.quorum,
        });
    }
    Ok(approved)
}
