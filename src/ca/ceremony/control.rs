//! What the store keeps of dual control: who authorises key operations on this CA (the
//! security officers and their quorum, or, for development, one person), the CA's identity
//! that proposals name, the position in the audit chain of the last key change that proposals
//! follow, and one record per ceremony carried out.
//!
//! The quorum check itself is [`super::quorum::check`]; [`claim`] runs it inside a store
//! transaction (the writer thread runs one at a time), so that two runs of one proposal, or
//! two proposals made over the same key state, cannot both pass.

use serde::{Deserialize, Serialize};

use super::quorum::{self, ApprovedBy, Context, OfficerSet, Proposal, QuorumError};
use crate::audit::AuditEvent;
use crate::ca::CaError;
use crate::store::schema::Meta;
use crate::store::{Store, Txn};
use crate::x509::Timestamp;

/// Who authorises the key operations of this CA.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum DualControl {
    /// Development and tests only (`sceau init --without-dual-control`): whoever runs `sceau`
    /// with the PIN runs every key operation alone. `sceau check` says so.
    SinglePerson { declared_at: Timestamp },
    /// M of N security officers approve each key operation ([`super::quorum`]).
    Officers(OfficerSet),
}

const DUAL_CONTROL: &str = "dual-control";
const CA_ID: &str = "ca-id";
/// `SEQ:HASH` of the audit chain just before the last key change.
const KEY_HEAD: &str = "key-head";
const RECORD_PREFIX: &str = "ceremony-record/";
/// The digest of the policy files the officers approved last (init, change-policies).
const APPROVED_POLICIES: &str = "approved-policies";

/// The audit position a store with no key change yet starts from.
pub fn genesis_head() -> String {
    format!("0@0:{}", hex::encode([0u8; 32]))
}

pub(super) fn read_json<T: serde::de::DeserializeOwned>(
    store: &Store,
    key: &str,
) -> Result<Option<T>, CaError> {
    store
        .get::<Meta>(&key.to_owned())?
        .map(|bytes| {
            serde_json::from_slice(&bytes).map_err(|e| CaError::Corrupt(format!("{key}: {e}")))
        })
        .transpose()
}

pub(super) fn txn_json<T: serde::de::DeserializeOwned>(
    txn: &Txn<'_>,
    key: &str,
) -> Result<Option<T>, CaError> {
    txn.get::<Meta>(&key.to_owned())?
        .map(|bytes| {
            serde_json::from_slice(&bytes).map_err(|e| CaError::Corrupt(format!("{key}: {e}")))
        })
        .transpose()
}

pub(super) fn put_json<T: Serialize>(
    txn: &mut Txn<'_>,
    key: &str,
    value: &T,
) -> Result<(), CaError> {
    let bytes = serde_json::to_vec(value).map_err(|e| CaError::Encoding(e.to_string()))?;
    txn.put::<Meta>(&key.to_owned(), &bytes)?;
    Ok(())
}

/// How this CA's key operations are authorised; `None` before `init`.
pub fn dual_control(store: &Store) -> Result<Option<DualControl>, CaError> {
    read_json(store, DUAL_CONTROL)
}

/// The CA's id, drawn the first time it is asked (a proposal for `init` names it).
pub fn ca_id(store: &Store) -> Result<String, CaError> {
    if let Some(id) = store.get::<Meta>(&CA_ID.to_owned())? {
        return String::from_utf8(id).map_err(|e| CaError::Corrupt(format!("{CA_ID}: {e}")));
    }
    let mut drawn = [0u8; 16];
    aws_lc_rs::rand::SecureRandom::fill(&aws_lc_rs::rand::SystemRandom::new(), &mut drawn)
        .map_err(|_| CaError::Encoding("no random numbers".into()))?;
    let drawn = hex::encode(drawn);
    store.commit(move |txn| -> Result<String, CaError> {
        // Two first calls at once: the first one's id stays.
        if let Some(id) = txn.get::<Meta>(&CA_ID.to_owned())? {
            return String::from_utf8(id).map_err(|e| CaError::Corrupt(format!("{CA_ID}: {e}")));
        }
        txn.put::<Meta>(&CA_ID.to_owned(), &drawn.clone().into_bytes())?;
        Ok(drawn)
    })
}

/// The CA's id if one was drawn (read-only: a backup's store).
pub fn existing_ca_id(store: &Store) -> Result<Option<String>, CaError> {
    store
        .get::<Meta>(&CA_ID.to_owned())?
        .map(|id| String::from_utf8(id).map_err(|e| CaError::Corrupt(format!("{CA_ID}: {e}"))))
        .transpose()
}

/// A new proposal of `operation` for the CA `ca` whose keys last changed at `head`, made
/// `now` and waiting at most `valid_for_seconds` for its approvals.
pub fn new_proposal(
    ca: String,
    head: String,
    operation: super::quorum::Operation,
    parameters: std::collections::BTreeMap<String, String>,
    now: Timestamp,
    valid_for_seconds: u64,
) -> Result<Proposal, CaError> {
    if valid_for_seconds == 0 || valid_for_seconds > quorum::MAX_LIFETIME_SECONDS {
        return Err(CaError::Refused(format!(
            "a proposal waits 1 to {} s for its approvals (they are not kept for later)",
            quorum::MAX_LIFETIME_SECONDS
        )));
    }
    Ok(Proposal {
        kind: quorum::PROPOSAL_KIND.to_owned(),
        ca,
        id: new_id()?,
        operation,
        parameters,
        audit_head: head,
        proposed_at: now,
        expires_at: now.plus_seconds(valid_for_seconds),
    })
}

/// A fresh random id (96 bits, hexadecimal): of a proposal, of a split of the PIN.
pub fn new_id() -> Result<String, CaError> {
    let mut id = [0u8; 12];
    aws_lc_rs::rand::SecureRandom::fill(&aws_lc_rs::rand::SystemRandom::new(), &mut id)
        .map_err(|_| CaError::Encoding("no random numbers".into()))?;
    Ok(hex::encode(id))
}

/// The audit position that a proposal made now follows ([`Proposal::audit_head`]).
pub fn key_head(store: &Store) -> Result<String, CaError> {
    Ok(match store.get::<Meta>(&KEY_HEAD.to_owned())? {
        Some(bytes) => {
            String::from_utf8(bytes).map_err(|e| CaError::Corrupt(format!("{KEY_HEAD}: {e}")))?
        }
        None => genesis_head(),
    })
}

/// Records, in `txn`, that the CA's keys change here: every proposal made before is out of
/// date. Called by every transaction that writes the CA state or the officer set. The
/// position is `N@SEQ:HASH`: the N-th key change, made after audit entry SEQ (whose hash is
/// HASH). N makes it move even when no audit entry came between two changes.
pub fn mark_key_change(txn: &mut Txn<'_>) -> Result<(), CaError> {
    let previous = match txn.get::<Meta>(&KEY_HEAD.to_owned())? {
        Some(bytes) => {
            String::from_utf8(bytes).map_err(|e| CaError::Corrupt(format!("{KEY_HEAD}: {e}")))?
        }
        None => genesis_head(),
    };
    let count: u64 = previous
        .split_once('@')
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or(0);
    let head = txn.audit_head();
    txn.put::<Meta>(
        &KEY_HEAD.to_owned(),
        &format!(
            "{}@{}:{}",
            count.saturating_add(1),
            head.seq,
            hex::encode(head.hash)
        )
        .into_bytes(),
    )?;
    Ok(())
}

/// The persons of the active security officers, read in `txn` (none on a single-person CA).
pub fn officer_persons(txn: &Txn<'_>) -> Result<std::collections::BTreeSet<String>, CaError> {
    let mut persons = std::collections::BTreeSet::new();
    if let Some(DualControl::Officers(set)) = txn_json::<DualControl>(txn, DUAL_CONTROL)? {
        for officer in set.officers.iter().filter(|o| o.active) {
            persons.insert(quorum::person_of(&officer.certificate).map_err(refused)?);
        }
    }
    Ok(persons)
}

/// `sceau init --without-dual-control`: one person runs this CA's key operations. Declared
/// once, before the keys are made (a second call on such a store changes nothing); refused
/// where officers are declared.
pub fn declare_single_person(store: &Store, now: Timestamp) -> Result<(), CaError> {
    store.commit(move |txn| -> Result<(), CaError> {
        match txn_json::<DualControl>(txn, DUAL_CONTROL)? {
            Some(DualControl::SinglePerson { .. }) => Ok(()),
            Some(DualControl::Officers(_)) => Err(CaError::Refused(
                "this CA's security officers are declared: its key operations are ceremonies (sceau ceremony propose)".into(),
            )),
            None if txn.contains::<Meta>(&crate::store::schema::meta_keys::CA_STATE.to_owned())? => {
                Err(CaError::Refused(
                    "this store holds a CA made before dual control was declared: nothing was changed".into(),
                ))
            }
            None => {
                put_json(txn, DUAL_CONTROL, &DualControl::SinglePerson { declared_at: now })?;
                txn.audit(AuditEvent::SinglePersonControl);
                mark_key_change(txn)
            }
        }
    })
}

/// Refuses, in the transaction that stores a new CA, a store where nobody declared who
/// authorises its key operations.
pub fn require_declared(txn: &Txn<'_>) -> Result<(), CaError> {
    match txn_json::<DualControl>(txn, DUAL_CONTROL)? {
        Some(_) => Ok(()),
        None => Err(CaError::Refused(
            "no dual control declared: make the CA with `sceau ceremony propose init` (or, for development only, `sceau init --without-dual-control`)".into(),
        )),
    }
}

/// Refuses a key operation run outside a ceremony on a CA whose officers are declared
/// (`sceau ca rotate`, `ocsp renew-signer`, `backup`, `restore` alone).
pub fn require_single_person(store: &Store, what: &str) -> Result<(), CaError> {
    match dual_control(store)? {
        Some(DualControl::SinglePerson { .. }) => Ok(()),
        Some(DualControl::Officers(set)) => Err(CaError::Refused(format!(
            "{what} is a key ceremony on this CA: {} of its security officers approve it (sceau ceremony propose)",
            set.quorum
        ))),
        None => Err(CaError::Refused(format!(
            "{what}: this CA declares no dual control; nothing was changed"
        ))),
    }
}

/// A ceremony as the store keeps it: what was approved, by whom, under which officer set, and
/// what was done.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CeremonyRecord {
    /// The proposal's canonical bytes.
    #[serde(with = "crate::store::base64_bytes")]
    pub proposal: Vec<u8>,
    /// The approvals, CMS SignedData (DER), as given.
    pub approvals: Vec<Approval>,
    pub approved_by: Vec<ApprovedBy>,
    /// The officer set the approvals were checked against.
    pub officers: OfficerSet,
    /// The audit entry the claim chained from (`SEQ:HASH`); its own event is the next one.
    pub claimed_after: String,
    pub claimed_at: Timestamp,
    /// What was done, once done (or why it failed).
    pub outcome: Option<Outcome>,
}

/// One approval's bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval(#[serde(with = "crate::store::base64_bytes")] pub Vec<u8>);

/// What a ceremony did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub succeeded: bool,
    /// What was made or changed (key labels, public key hashes, certificate fingerprints,
    /// files), or the error.
    pub details: std::collections::BTreeMap<String, String>,
    pub finished_at: Timestamp,
}

/// The ceremony `id`, if it was claimed.
pub fn record(store: &Store, id: &str) -> Result<Option<CeremonyRecord>, CaError> {
    read_json(store, &format!("{RECORD_PREFIX}{id}"))
}

/// Every ceremony claimed on this CA, oldest claim first.
pub fn records(store: &Store) -> Result<Vec<CeremonyRecord>, CaError> {
    let mut all = Vec::new();
    for row in store.scan::<Meta>(RECORD_PREFIX.as_bytes(), RECORD_PREFIX.as_bytes())? {
        let (key, bytes) = row?;
        let record: CeremonyRecord =
            serde_json::from_slice(&bytes).map_err(|e| CaError::Corrupt(format!("{key}: {e}")))?;
        all.push(record);
    }
    all.sort_by_key(|r| (r.claimed_at, r.claimed_after.clone()));
    Ok(all)
}

/// Checks the approvals of `proposal` and, in the same transaction, claims it: recorded as
/// carried out (never run twice, even if the operation then fails), the key position moved
/// (every other pending proposal is out of date), an audit event naming the approvers.
///
/// `declares` is the officer set an `init` proposal declares: on a store without officers
/// every one of them must approve (each shows their card works before the CA depends on
/// them), and the set is in force from this transaction on, so an init that fails later is
/// proposed again to the same officers. `revoked` says whether an officer's certificate is
/// revoked.
pub fn claim(
    store: &Store,
    proposal_bytes: Vec<u8>,
    approvals: Vec<Vec<u8>>,
    declares: Option<OfficerSet>,
    now: Timestamp,
    revoked: impl Fn(&[u8]) -> bool + Send + 'static,
) -> Result<CeremonyRecord, CaError> {
    let proposal = Proposal::from_canonical_bytes(&proposal_bytes).map_err(refused)?;
    store.commit(move |txn| -> Result<CeremonyRecord, CaError> {
        let in_force = txn_json::<DualControl>(txn, DUAL_CONTROL)?;
        if declares.is_some()
            && txn.contains::<Meta>(&crate::store::schema::meta_keys::CA_STATE.to_owned())?
        {
            return Err(CaError::Refused(
                "this store already holds a CA: init runs once".into(),
            ));
        }
        let (officers, declare) = match (declares, in_force) {
            (Some(declared), None) => {
                let everyone = OfficerSet {
                    quorum: declared.officers.iter().filter(|o| o.active).count(),
                    officers: declared.officers.clone(),
                };
                (everyone, Some(declared))
            }
            (Some(declared), Some(DualControl::Officers(set))) if declared == set => (set, None),
            (Some(_), Some(_)) => {
                return Err(CaError::Refused(
                    "this CA's dual control is already declared otherwise: init names the officers in force".into(),
                ));
            }
            (None, Some(DualControl::Officers(set))) => (set, None),
            (None, Some(DualControl::SinglePerson { .. })) => {
                return Err(CaError::Refused(
                    "this CA was made without dual control (development): it has no officers to approve ceremonies".into(),
                ));
            }
            (None, None) => {
                return Err(CaError::Refused(
                    "this CA has no security officers yet: the first ceremony is init".into(),
                ));
            }
        };
        let ca = match txn.get::<Meta>(&CA_ID.to_owned())? {
            Some(id) => String::from_utf8(id).map_err(|e| CaError::Corrupt(e.to_string()))?,
            None => return Err(CaError::Refused("this store has no CA id: make the proposal with `sceau ceremony propose`".into())),
        };
        let head = match txn.get::<Meta>(&KEY_HEAD.to_owned())? {
            Some(bytes) => String::from_utf8(bytes).map_err(|e| CaError::Corrupt(e.to_string()))?,
            None => genesis_head(),
        };
        let record_key = format!("{RECORD_PREFIX}{}", proposal.id);
        let carried_out = txn.contains::<Meta>(&record_key)?;
        let approved_by = quorum::check(
            &proposal,
            &approvals,
            &officers,
            &Context {
                now,
                ca: &ca,
                audit_head: &head,
                carried_out: &|_| carried_out,
                revoked: &revoked,
            },
        )
        .map_err(refused)?;
        let before = txn.audit_head();
        let record = CeremonyRecord {
            proposal: proposal_bytes,
            approvals: approvals.into_iter().map(Approval).collect(),
            approved_by: approved_by.clone(),
            officers,
            claimed_after: format!("{}:{}", before.seq, hex::encode(before.hash)),
            claimed_at: now,
            outcome: None,
        };
        put_json(txn, &record_key, &record)?;
        if let Some(declared) = &declare {
            put_json(txn, DUAL_CONTROL, &DualControl::Officers(declared.clone()))?;
        }
        mark_key_change(txn)?;
        txn.audit(AuditEvent::CeremonyApproved {
            id: proposal.id.clone(),
            operation: proposal.operation.as_str().to_owned(),
            proposal_sha256: hex::encode(crate::x509::keys::sha256(&record.proposal)),
            approved_by: approved_by.into_iter().map(|a| a.person).collect(),
        });
        // After the claim's own event, which is always the entry right after `claimed_after`.
        if let Some(declared) = &declare {
            txn.audit(officers_event(declared));
        }
        Ok(record)
    })
}

/// Records what a claimed ceremony did, with its audit event: the record, and the audit
/// sequence number of that event.
pub fn finish(store: &Store, id: &str, outcome: Outcome) -> Result<(CeremonyRecord, u64), CaError> {
    let key = format!("{RECORD_PREFIX}{id}");
    let id = id.to_owned();
    store.commit(move |txn| -> Result<(CeremonyRecord, u64), CaError> {
        let mut record: CeremonyRecord = txn_json(txn, &key)?
            .ok_or_else(|| CaError::Corrupt(format!("the record of ceremony {id} vanished")))?;
        if record.outcome.is_some() {
            return Err(CaError::Refused(format!(
                "ceremony {id} is already finished"
            )));
        }
        // The claim is in the audit chain, right after the position it recorded: a record
        // written into the store by other means is never concluded (nor sealed).
        let claimed_seq = record
            .claimed_after
            .split_once(':')
            .and_then(|(seq, _)| seq.parse::<u64>().ok())
            .and_then(|seq| seq.checked_add(1))
            .ok_or_else(|| CaError::Corrupt(format!("ceremony {id}: claimed_after")))?;
        let entry = txn
            .get::<crate::store::schema::Audit>(&claimed_seq)?
            .ok_or_else(|| CaError::Corrupt(format!("ceremony {id}: no audit entry {claimed_seq}")))?;
        let claimed_in_chain = matches!(
            crate::audit::decode(&entry).map(|(_, r)| r.event),
            Ok(AuditEvent::CeremonyApproved { id: ref logged, ref proposal_sha256, .. })
                if *logged == id
                    && *proposal_sha256 == hex::encode(crate::x509::keys::sha256(&record.proposal))
        );
        if !claimed_in_chain {
            return Err(CaError::Corrupt(format!(
                "ceremony {id}: its claim is not audit entry {claimed_seq}; the record was not written by a claim"
            )));
        }
        txn.audit(AuditEvent::CeremonyFinished {
            id: id.clone(),
            succeeded: outcome.succeeded,
            details: outcome.details.clone(),
        });
        record.outcome = Some(outcome);
        put_json(txn, &key, &record)?;
        Ok((record, txn.audit_head().seq.saturating_add(1)))
    })
}

/// Changes the officer set in force, in the transaction of a ceremony that was approved.
pub fn replace_officers(txn: &mut Txn<'_>, set: &OfficerSet) -> Result<(), CaError> {
    match txn_json::<DualControl>(txn, DUAL_CONTROL)? {
        Some(DualControl::Officers(_)) => {}
        _ => {
            return Err(CaError::Refused(
                "this CA has no officer set to change".into(),
            ));
        }
    }
    put_json(txn, DUAL_CONTROL, &DualControl::Officers(set.clone()))?;
    txn.audit(officers_event(set));
    mark_key_change(txn)
}

/// Records `digest` (hex, [`crate::policy::files_digest`]) as the policy files the officers
/// approved, in the transaction of the ceremony that approved them.
pub fn approve_policies(txn: &mut Txn<'_>, digest: &str) -> Result<(), CaError> {
    put_json(txn, APPROVED_POLICIES, &digest)
}

/// Refuses the policy files of `dir` on a CA under dual control when they are not those its
/// officers approved last: a change of the policies in force is a ceremony (`change-policies`).
/// A CA run by one person, or made before approvals of policies were recorded, is not checked.
pub fn check_policies(store: &Store, dir: &std::path::Path) -> Result<(), CaError> {
    let Some(DualControl::Officers(_)) = dual_control(store)? else {
        return Ok(());
    };
    let Some(approved) = read_json::<String>(store, APPROVED_POLICIES)? else {
        return Ok(());
    };
    let found = crate::policy::files_digest(dir)
        .map(hex::encode)
        .map_err(|e| CaError::Io(format!("{}: {e}", dir.display())))?;
    if found != approved {
        return Err(CaError::Refused(format!(
            "the policy files in {} (sha256 {found}) are not those the security officers approved (sha256 {approved}): put those back, or change them by the ceremony change-policies",
            dir.display()
        )));
    }
    Ok(())
}

/// The audit event that says who the officers are now: the chain, checked against the audit
/// key's anchor, records every officer set a CA ever had.
fn officers_event(set: &OfficerSet) -> AuditEvent {
    AuditEvent::OfficersDeclared {
        quorum: set.quorum,
        certificates: set
            .officers
            .iter()
            .filter(|o| o.active)
            .map(|o| hex::encode(crate::x509::keys::sha256(&o.certificate)))
            .collect(),
    }
}

/// Whether `certificate` (DER) is revoked in this CA's store (an officer's card issued by this
/// CA; a card of another CA is checked against that CA by whoever declared it).
pub fn revoked_in(store: &Store, certificate: &[u8]) -> bool {
    use x509_cert::ext::pkix::AuthorityKeyIdentifier;
    let Ok(parsed) = <x509_cert::Certificate as der::Decode>::from_der(certificate) else {
        return true;
    };
    let tbs = parsed.tbs_certificate();
    let issuer = tbs
        .extensions()
        .into_iter()
        .flatten()
        .find(|e| e.extn_id == const_oid::db::rfc5280::ID_CE_AUTHORITY_KEY_IDENTIFIER)
        .and_then(|e| {
            <AuthorityKeyIdentifier as der::Decode>::from_der(e.extn_value.as_bytes()).ok()
        })
        .and_then(|aki| <[u8; 20]>::try_from(aki.key_identifier?.as_bytes()).ok());
    let (Some(issuer), Ok(serial)) = (
        issuer,
        crate::x509::Serial::from_serial_number(tbs.serial_number()),
    ) else {
        return false;
    };
    // A store that cannot be read counts as revoked: fail closed.
    store
        .get::<crate::store::schema::Revocations>(&crate::store::CertKey {
            issuer: crate::store::IssuerId(issuer),
            serial,
        })
        .map_or(true, |row| row.is_some())
}

fn refused(error: QuorumError) -> CaError {
    CaError::Refused(format!("ceremony refused, nothing changed: {error}"))
}
