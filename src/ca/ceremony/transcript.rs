//! A ceremony's transcript: the one record an auditor files. The proposal, every approval (the
//! CMS blobs as given), the officer set they were checked against, who approved, what was done
//! and where both steps sit in the audit chain, signed by the HSM's audit key.
//!
//! [`verify`] needs nothing but the file and the audit key's public key (the anchor that
//! `sceau init` writes beside the CA certificates): it checks the signature, then checks the
//! approvals again as [`super::quorum::check`] did when the ceremony was claimed (same bytes,
//! distinct persons, active officers, quorum), so a transcript with an approval removed, the
//! quorum lowered or any byte changed is refused.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use spki::SubjectPublicKeyInfoOwned;

use super::control::{CeremonyRecord, Outcome};
use super::quorum::{self, ApprovedBy, Context, OfficerSet, Proposal};
use crate::store::base64_bytes;
use crate::x509::Timestamp;
use crate::x509::sigalg::SignatureScheme;

/// The first field of every transcript.
pub const TRANSCRIPT_KIND: &str = "sceau-ceremony-transcript/v1";

/// What the audit key signs: this prefix, then the body. The same key signs audit checkpoints
/// (a sequence number and a hash): the prefix keeps either from being read as the other.
fn signed_message(body: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(TRANSCRIPT_KIND.len() + 1 + body.len());
    message.extend_from_slice(TRANSCRIPT_KIND.as_bytes());
    message.push(0);
    message.extend_from_slice(body);
    message
}

/// The file: the body's bytes and the audit key's signature over them.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transcript {
    pub kind: String,
    /// [`TranscriptBody`] as JSON; the signature covers exactly these bytes.
    #[serde(with = "base64_bytes")]
    pub body: Vec<u8>,
    /// ECDSA P-256 with SHA-256 (DER), by the audit key, over [`TRANSCRIPT_KIND`], a zero
    /// octet, then the body.
    #[serde(with = "base64_bytes")]
    pub signature: Vec<u8>,
}

/// What the transcript says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TranscriptBody {
    pub ca: String,
    pub id: String,
    pub operation: String,
    /// The proposal's canonical bytes, as the officers signed them.
    #[serde(with = "base64_bytes")]
    pub proposal: Vec<u8>,
    /// The approvals (CMS SignedData, DER), base64.
    pub approvals: Vec<String>,
    pub officers: OfficerSet,
    pub approved_by: Vec<ApprovedBy>,
    pub claimed_at: Timestamp,
    /// The audit sequence number of the approval's event and of the outcome's event.
    pub audit_approved: u64,
    pub audit_finished: u64,
    pub outcome: Outcome,
}

/// Why a transcript does not verify.
#[derive(Debug, thiserror::Error)]
pub enum TranscriptError {
    #[error("not a ceremony transcript: {0}")]
    Malformed(String),
    #[error(
        "the audit key's signature does not verify: the transcript was changed, or signed by another key"
    )]
    Signature,
    #[error("the approvals do not hold: {0}")]
    Quorum(#[from] quorum::QuorumError),
    #[error("the transcript says {field} {said:?}, its proposal and approvals say {found:?}")]
    Inconsistent {
        field: &'static str,
        said: String,
        found: String,
    },
}

impl TranscriptBody {
    /// The body of the finished ceremony `record`; `finished_seq` is its outcome's audit entry.
    pub fn of(record: &CeremonyRecord, finished_seq: u64) -> Result<Self, TranscriptError> {
        let proposal = Proposal::from_canonical_bytes(&record.proposal)?;
        let outcome = record
            .outcome
            .clone()
            .ok_or_else(|| TranscriptError::Malformed("the ceremony is not finished".into()))?;
        let approved_seq = record
            .claimed_after
            .split_once(':')
            .and_then(|(seq, _)| seq.parse::<u64>().ok())
            .and_then(|seq| seq.checked_add(1))
            .ok_or_else(|| TranscriptError::Malformed("claimed_after".into()))?;
        use base64::Engine;
        Ok(Self {
            ca: proposal.ca,
            id: proposal.id,
            operation: proposal.operation.as_str().to_owned(),
            proposal: record.proposal.clone(),
            approvals: record
                .approvals
                .iter()
                .map(|a| base64::engine::general_purpose::STANDARD.encode(&a.0))
                .collect(),
            officers: record.officers.clone(),
            approved_by: record.approved_by.clone(),
            claimed_at: record.claimed_at,
            audit_approved: approved_seq,
            audit_finished: finished_seq,
            outcome,
        })
    }
}

/// Signs `body` with `sign` (the HSM's audit key): the transcript file's bytes.
pub fn seal(
    body: &TranscriptBody,
    sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, String>,
) -> Result<Vec<u8>, String> {
    let body = serde_json::to_vec(body).map_err(|e| e.to_string())?;
    let signature = sign(&signed_message(&body))?;
    let transcript = Transcript {
        kind: TRANSCRIPT_KIND.to_owned(),
        body,
        signature,
    };
    serde_json::to_vec_pretty(&transcript).map_err(|e| e.to_string())
}

/// Checks a transcript file offline against the audit key `anchor`: its signature, then its
/// approvals against its officer set, as when the ceremony was claimed.
pub fn verify(
    file: &[u8],
    anchor: &SubjectPublicKeyInfoOwned,
) -> Result<TranscriptBody, TranscriptError> {
    let transcript: Transcript =
        serde_json::from_slice(file).map_err(|e| TranscriptError::Malformed(e.to_string()))?;
    if transcript.kind != TRANSCRIPT_KIND {
        return Err(TranscriptError::Malformed(format!(
            "kind {:?}",
            transcript.kind
        )));
    }
    let algorithm = SignatureScheme::EcdsaP256Sha256
        .algorithm_identifier()
        .map_err(|e| TranscriptError::Malformed(e.to_string()))?;
    crate::x509::sigalg::verify(
        anchor,
        &algorithm,
        &signed_message(&transcript.body),
        &transcript.signature,
    )
    .map_err(|_| TranscriptError::Signature)?;
    let body: TranscriptBody = serde_json::from_slice(&transcript.body)
        .map_err(|e| TranscriptError::Malformed(e.to_string()))?;
    let proposal = Proposal::from_canonical_bytes(&body.proposal)?;
    let consistent = |field: &'static str, said: &str, found: &str| {
        if said == found {
            Ok(())
        } else {
            Err(TranscriptError::Inconsistent {
                field,
                said: said.to_owned(),
                found: found.to_owned(),
            })
        }
    };
    consistent("ca", &body.ca, &proposal.ca)?;
    consistent("id", &body.id, &proposal.id)?;
    consistent("operation", &body.operation, proposal.operation.as_str())?;
    use base64::Engine;
    let approvals = body
        .approvals
        .iter()
        .map(|a| base64::engine::general_purpose::STANDARD.decode(a))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TranscriptError::Malformed(format!("an approval: {e}")))?;
    // As at the claim: the officers' cards valid then; revocation was checked then, against
    // the CA's store, and cannot be checked again offline.
    let approved = quorum::check(
        &proposal,
        &approvals,
        &body.officers,
        &Context {
            now: body.claimed_at,
            ca: &proposal.ca,
            audit_head: &proposal.audit_head,
            carried_out: &|_| false,
            revoked: &|_| false,
        },
    )?;
    if approved != body.approved_by {
        return Err(TranscriptError::Inconsistent {
            field: "approved_by",
            said: persons(&body.approved_by),
            found: persons(&approved),
        });
    }
    if body.audit_finished <= body.audit_approved {
        return Err(TranscriptError::Malformed(
            "its outcome precedes its approval in the audit chain".into(),
        ));
    }
    Ok(body)
}

fn persons(approved: &[ApprovedBy]) -> String {
    approved
        .iter()
        .map(|a| a.person.replace('\u{1f}', " "))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The readable report of a verified transcript (HTML), for a security officer to sign and file.
pub fn report(body: &TranscriptBody) -> String {
    let escape = |text: &str| {
        text.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let mut rows = BTreeMap::new();
    rows.insert("CA", body.ca.clone());
    rows.insert("Ceremony", body.id.clone());
    rows.insert("Operation", body.operation.clone());
    rows.insert("Approved at", body.claimed_at.to_string());
    rows.insert(
        "Quorum",
        format!(
            "{} of {} officers",
            body.officers.quorum,
            body.officers.officers.iter().filter(|o| o.active).count()
        ),
    );
    rows.insert(
        "Audit entries",
        format!(
            "{} (approval), {} (outcome)",
            body.audit_approved, body.audit_finished
        ),
    );
    rows.insert(
        "Outcome",
        if body.outcome.succeeded {
            "done"
        } else {
            "FAILED"
        }
        .to_owned(),
    );
    let mut html = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Key ceremony</title></head><body>\n<h1>Key ceremony transcript</h1>\n<table>\n",
    );
    for (name, value) in rows {
        html.push_str(&format!(
            "<tr><th>{name}</th><td>{}</td></tr>\n",
            escape(&value)
        ));
    }
    html.push_str("</table>\n<h2>Approved by</h2>\n<ol>\n");
    for approver in &body.approved_by {
        // The certificate's subject as written on the card, not the folded person key.
        let subject = body
            .officers
            .officers
            .iter()
            .find(|o| {
                hex::encode(crate::x509::keys::sha256(&o.certificate))
                    == approver.certificate_sha256
            })
            .and_then(|o| <x509_cert::Certificate as der::Decode>::from_der(&o.certificate).ok())
            .map(|c| c.tbs_certificate().subject().to_string())
            .unwrap_or_else(|| approver.person.replace('\u{1f}', " "));
        html.push_str(&format!(
            "<li>{} (card certificate SHA-256 {})</li>\n",
            escape(&subject),
            approver.certificate_sha256
        ));
    }
    html.push_str("</ol>\n<h2>What was done</h2>\n<table>\n");
    for (name, value) in &body.outcome.details {
        html.push_str(&format!(
            "<tr><th>{}</th><td>{}</td></tr>\n",
            escape(name),
            escape(value)
        ));
    }
    html.push_str("</table>\n<h2>The proposal as approved</h2>\n<pre>");
    html.push_str(&escape(&String::from_utf8_lossy(&body.proposal)));
    html.push_str("</pre>\n<p>Signed for the record by: ____________________ date: __________</p>\n</body></html>\n");
    html
}
