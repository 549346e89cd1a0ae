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
//! officer, one person twice, a proposal past its expiry, made in the future, meant to live
//! more than a day, made for another CA, or already carried out, and a proposal made over
//! another audit head than the current one (something happened since the officers read it).
//!
//! A person is the folded first given name and surname of the certificate's subject (the
//! RA's [`crate::policy::names::person_key`] without the country, which one card may carry and
//! another not): namesakes count as one person, which fails closed. Both names are required,
//! and two officers may not share a key. [`check`] trusts no stored field for this: it reads
//! every person again from the certificates.

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
    SplitPin,
}

impl Operation {
    /// Every operation, in the order the docs list them.
    pub const ALL: [Operation; 10] = [
        Operation::Init,
        Operation::RotateIssuing,
        Operation::RotateRoot,
        Operation::RenewResponders,
        Operation::Backup,
        Operation::Restore,
        Operation::DestroyKey,
        Operation::ChangeOfficers,
        Operation::ChangePolicies,
        Operation::SplitPin,
    ];

    /// The name proposals and the command line use (`rotate-issuing`).
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Init => "init",
            Operation::RotateIssuing => "rotate-issuing",
            Operation::RotateRoot => "rotate-root",
            Operation::RenewResponders => "renew-responders",
            Operation::Backup => "backup",
            Operation::Restore => "restore",
            Operation::DestroyKey => "destroy-key",
            Operation::ChangeOfficers => "change-officers",
            Operation::ChangePolicies => "change-policies",
            Operation::SplitPin => "split-pin",
        }
    }

    /// The operation named `name` ([`Operation::as_str`]).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == name)
    }
}

/// The first field of every proposal: the bytes an officer signs for a ceremony can never be
/// read as anything else (an RA request, signed by the same cards, has no such field).
pub const PROPOSAL_KIND: &str = "sceau-ceremony-proposal/v1";

/// The longest a proposal may wait for its approvals: approvals are not kept for later.
pub const MAX_LIFETIME_SECONDS: u64 = 24 * 3600;

/// How far ahead of this host's clock a proposal's time may be (another host proposed it).
const CLOCK_SKEW_SECONDS: u64 = 300;

/// What will happen, as the officers read and sign it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proposal {
    /// [`PROPOSAL_KIND`].
    pub kind: String,
    /// The CA this ceremony is for (an id drawn when its store was made): approvals gathered
    /// on a rehearsal instance do not run on the real one.
    pub ca: String,
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
        if proposal.kind != PROPOSAL_KIND {
            return Err(QuorumError::Malformed(format!(
                "not a ceremony proposal (kind {:?})",
                proposal.kind
            )));
        }
        if proposal.canonical_bytes() != bytes {
            return Err(QuorumError::Malformed(
                "the proposal is not in canonical form (compact JSON, fields in order)".into(),
            ));
        }
        Ok(proposal)
    }
}

/// A security officer: the certificate of their card's signature key (the person is read from
/// it at each check, never stored beside it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Officer {
    /// The signature certificate, DER.
    pub certificate: Vec<u8>,
    /// Withdrawn officers stay listed (their past approvals remain readable) but count no more.
    pub active: bool,
}

impl Officer {
    /// An officer known by `certificate_der`; refused when its subject lacks a given name or a
    /// surname (it could not be told apart from another person's card).
    pub fn from_certificate(certificate_der: &[u8]) -> Result<Self, QuorumError> {
        read_certificate(certificate_der)?;
        Ok(Self {
            certificate: certificate_der.to_vec(),
            active: true,
        })
    }
}

/// A person key ([`crate::policy::names::person_key`]) without its country (see the module's
/// comment): the first given name and the surname.
pub fn without_country(person_key: &str) -> String {
    person_key
        .split('\u{1f}')
        .skip(1)
        .collect::<Vec<_>>()
        .join("\u{1f}")
}

/// The person an officer's certificate names.
pub fn person_of(certificate_der: &[u8]) -> Result<String, QuorumError> {
    Ok(read_certificate(certificate_der)?.0)
}

/// The person a certificate names and its public key (DER), read from the certificate itself.
fn read_certificate(certificate_der: &[u8]) -> Result<(String, Vec<u8>), QuorumError> {
    let malformed = |e: &dyn std::fmt::Display| {
        QuorumError::Malformed(format!("an officer's certificate: {e}"))
    };
    let certificate = Certificate::from_der(certificate_der).map_err(|e| malformed(&e))?;
    let tbs = certificate.tbs_certificate();
    let subject = der::Encode::to_der(tbs.subject()).map_err(|e| malformed(&e))?;
    let name = crate::x509::name::parse_distinguished_name(&subject).map_err(|e| malformed(&e))?;
    let person = without_country(&crate::policy::names::person_key(&name));
    if person.split('\u{1f}').any(str::is_empty) {
        return Err(QuorumError::Malformed(
            "an officer's certificate names no given name or no surname: it cannot be told apart from another person's".into(),
        ));
    }
    // The card's signature key (nonRepudiation), never its authentication key: an approval
    // is a signature the officer answers for.
    use x509_cert::ext::pkix::{KeyUsage, KeyUsages};
    let non_repudiation = tbs
        .extensions()
        .into_iter()
        .flatten()
        .find(|e| e.extn_id == const_oid::db::rfc5280::ID_CE_KEY_USAGE)
        .and_then(|e| KeyUsage::from_der(e.extn_value.as_bytes()).ok())
        .is_some_and(|usage| usage.0.contains(KeyUsages::NonRepudiation));
    if !non_repudiation {
        return Err(QuorumError::Malformed(format!(
            "{}'s certificate is not a signature certificate (keyUsage nonRepudiation)",
            person.replace('\u{1f}', " ")
        )));
    }
    let public_key =
        der::Encode::to_der(tbs.subject_public_key_info()).map_err(|e| malformed(&e))?;
    Ok((person, public_key))
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
        let set = Self { quorum, officers };
        set.validate()?;
        Ok(set)
    }

    /// The set a proposal's parameters name (`init`, `change-officers`): `quorum` and
    /// `officer.N`, each a base64 DER certificate.
    pub fn from_parameters(parameters: &BTreeMap<String, String>) -> Result<Self, QuorumError> {
        use base64::Engine;
        let quorum = parameters
            .get("quorum")
            .and_then(|q| q.parse::<usize>().ok())
            .ok_or_else(|| {
                QuorumError::Malformed("quorum: the number of approvals a ceremony needs".into())
            })?;
        let mut officers = Vec::new();
        for (name, value) in parameters.range("officer.".to_owned()..) {
            if !name.starts_with("officer.") {
                break;
            }
            let der = base64::engine::general_purpose::STANDARD
                .decode(value)
                .map_err(|e| QuorumError::Malformed(format!("{name}: {e}")))?;
            officers.push(Officer::from_certificate(&der)?);
        }
        Self::new(quorum, officers)
    }

    /// The officers who may sign now, with their persons (from [`OfficerSet::validate`]):
    /// active, their certificate valid at `now` and not revoked.
    pub(super) fn usable<'a>(
        &'a self,
        persons: &'a [String],
        now: Timestamp,
        revoked: &dyn Fn(&[u8]) -> bool,
    ) -> Result<Vec<(&'a Officer, &'a str, Certificate)>, QuorumError> {
        let mut usable = Vec::new();
        for (officer, person) in self.officers.iter().zip(persons) {
            if !officer.active {
                continue;
            }
            let certificate = Certificate::from_der(&officer.certificate)
                .map_err(|e| QuorumError::Malformed(format!("an officer's certificate: {e}")))?;
            let validity = certificate.tbs_certificate().validity();
            let valid = Timestamp::from_x509_time(&validity.not_before) <= now
                && now <= Timestamp::from_x509_time(&validity.not_after);
            if valid && !revoked(&officer.certificate) {
                usable.push((officer, person.as_str(), certificate));
            }
        }
        Ok(usable)
    }

    /// The set's rules, read from the certificates (never from stored fields): every officer a
    /// distinct person with a key of their own, and a quorum of at least two that the active
    /// officers can reach. Returns each officer's person.
    pub(super) fn validate(&self) -> Result<Vec<String>, QuorumError> {
        let (mut persons, mut keys, mut read) = (BTreeSet::new(), BTreeSet::new(), Vec::new());
        for officer in &self.officers {
            let (person, key) = read_certificate(&officer.certificate)?;
            if !persons.insert(person.clone()) {
                return Err(QuorumError::SamePerson(person));
            }
            if !keys.insert(key) {
                return Err(QuorumError::SharedKey(person));
            }
            read.push(person);
        }
        let active = self.officers.iter().filter(|o| o.active).count();
        if self.quorum < LEAST_QUORUM || self.quorum > active {
            return Err(QuorumError::Quorum {
                quorum: self.quorum,
                active,
            });
        }
        Ok(read)
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
    #[error("{0} approves twice, or holds two officer cards: one person counts once")]
    SamePerson(String),
    #[error("{0}'s key is another officer's too")]
    SharedKey(String),
    #[error("the proposal is for the CA {proposed}, this is {current}")]
    OtherCa { proposed: String, current: String },
    #[error("the proposal's times are out of bounds: {0}")]
    Times(String),
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
    /// This CA's id ([`Proposal::ca`]).
    pub ca: &'a str,
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
    if proposal.kind != PROPOSAL_KIND {
        return Err(QuorumError::Malformed("not a ceremony proposal".into()));
    }
    if proposal.ca != context.ca {
        return Err(QuorumError::OtherCa {
            proposed: proposal.ca.clone(),
            current: context.ca.to_owned(),
        });
    }
    if carried_out(&proposal.id) {
        return Err(QuorumError::AlreadyCarriedOut(proposal.id.clone()));
    }
    let (proposed, expires) = (
        proposal.proposed_at.unix_seconds(),
        proposal.expires_at.unix_seconds(),
    );
    if proposed > now.unix_seconds() + CLOCK_SKEW_SECONDS {
        return Err(QuorumError::Times(format!(
            "made at {}, after this host's {now}",
            proposal.proposed_at
        )));
    }
    if expires <= proposed || expires - proposed > MAX_LIFETIME_SECONDS {
        return Err(QuorumError::Times(format!(
            "it would wait for approvals from {} to {} (at most {MAX_LIFETIME_SECONDS} s)",
            proposal.proposed_at, proposal.expires_at
        )));
    }
    if now >= proposal.expires_at {
        return Err(QuorumError::Expired(proposal.expires_at));
    }
    // The set is checked again here, from the certificates: a stored set is not trusted.
    let persons = officers.validate()?;
    if proposal.audit_head != current_head {
        return Err(QuorumError::HeadMoved {
            proposed: proposal.audit_head.clone(),
            current: current_head.to_owned(),
        });
    }
    let active = officers.usable(&persons, now, context.revoked)?;
    let candidates: Vec<&Certificate> = active.iter().map(|(_, _, c)| c).collect();
    let expected = proposal.canonical_bytes();
    let mut approvers = BTreeSet::new();
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
        let (officer, person, _) = active[signer];
        if !approvers.insert(person.to_owned()) {
            return Err(QuorumError::SamePerson(person.to_owned()));
        }
        approved.push(ApprovedBy {
            person: person.to_owned(),
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
