//! Signed requests: the JSON documents operators sign (CMS SignedData, as `openssl cms -sign
//! -nodetach -outform DER` makes it), one per state change.
//!
//! Every document carries a unique `id` (16 to 64 of `A-Z a-z 0-9 _ -`; a second request with
//! the same id is refused as a replay) and the `time` it was made (RFC 3339; refused outside the
//! configured window around the CA's clock), and names its `action`:
//!
//! ```json
//! {"id": "5c0f…", "time": "2026-11-28T14:00:00Z", "action": "approve", "request": "9d2e…"}
//! ```
//!
//! The signer is the signature certificate (keyUsage nonRepudiation) of the operator's card
//! (the card whose authentication certificate is the TLS client's), never the authentication
//! certificate (`signature-key-required`); the signed bytes are kept as evidence with the
//! change they caused.
use serde::Deserialize;

use super::RaError;
use super::operators::{Role, Scope};
use crate::x509::Timestamp;

/// What a signed request asks for.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Action {
    /// Register an operator below the signer: the holder of a card of this CA.
    Designate {
        /// The holder's identifier.
        holder: String,
        /// The card the role is bound to (it follows the card's renewal).
        card: String,
        role: Role,
        scope: Scope,
    },
    /// Withdraw an operator's rights (and those of everyone it designated).
    Withdraw {
        operator: String,
        #[serde(default)]
        reason: Option<String>,
    },
    /// A card request, after meeting the holder face to face.
    Submit {
        /// The holder's identifier (agent number).
        holder: String,
        /// The card's identifier; made up when absent.
        #[serde(default)]
        card: Option<String>,
        /// PKCS#10 requests, PEM: two key pairs on the card.
        authentication_csr: String,
        signature_csr: String,
    },
    Approve {
        request: String,
    },
    /// Approve several reviewed requests with one signature (`super::batch`).
    ApproveBatch {
        requests: Vec<super::batch::BatchItem>,
    },
    Reject {
        request: String,
        reason: String,
    },
    /// Revoke one certificate (`serial`, hexadecimal) or both of a card; now, or at `at` (a
    /// departure date; the reason is then affiliation-changed unless given).
    Revoke {
        #[serde(default)]
        serial: Option<String>,
        #[serde(default)]
        card: Option<String>,
        #[serde(default)]
        reason: Option<String>,
        #[serde(default)]
        invalidity_date: Option<String>,
        #[serde(default)]
        at: Option<String>,
    },
    /// The handover of a card: the receipt (CMS, base64) its holder signed with the card's
    /// signature key, countersigned by the operator's request.
    Deliver {
        card: String,
        receipt: String,
    },
    /// Cancel a scheduled revocation before its time.
    CancelRevocation {
        scheduled: String,
    },
    /// Propose to revoke every certificate a query selects in the proposer's scope (with
    /// `dry_run`, only list them): `super::bulk`.
    ProposeBulkRevocation {
        query: super::bulk::BulkQuery,
        reason: String,
        #[serde(default)]
        dry_run: bool,
    },
    /// Approve a proposed bulk revocation, naming the digest of the list reviewed.
    ApproveBulkRevocation {
        bulk: String,
        certificates_sha256: String,
    },
    /// New keys for the same holder on the same card, once, within the card's lifetime.
    Renew {
        card: String,
        authentication_csr: String,
        signature_csr: String,
    },
}

/// The kinds of signed request: what a URL of the RA asks to be signed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ActionKind {
    Designate,
    Withdraw,
    Submit,
    Approve,
    ApproveBatch,
    Reject,
    Revoke,
    Renew,
    CancelRevocation,
    Deliver,
    ProposeBulkRevocation,
    ApproveBulkRevocation,
}

impl ActionKind {
    /// The action's name, as in the JSON.
    pub fn name(self) -> &'static str {
        match self {
            ActionKind::Designate => "designate",
            ActionKind::Withdraw => "withdraw",
            ActionKind::Submit => "submit",
            ActionKind::Approve => "approve",
            ActionKind::ApproveBatch => "approve-batch",
            ActionKind::Reject => "reject",
            ActionKind::Revoke => "revoke",
            ActionKind::Renew => "renew",
            ActionKind::CancelRevocation => "cancel-revocation",
            ActionKind::Deliver => "deliver",
            ActionKind::ProposeBulkRevocation => "propose-bulk-revocation",
            ActionKind::ApproveBulkRevocation => "approve-bulk-revocation",
        }
    }

    /// Whether carrying it out creates something (a request, a card, an operator): HTTP 201.
    pub fn creates(self) -> bool {
        matches!(
            self,
            ActionKind::Submit
                | ActionKind::Renew
                | ActionKind::Designate
                | ActionKind::ProposeBulkRevocation
        )
    }
}

impl Action {
    pub fn kind(&self) -> ActionKind {
        match self {
            Action::Designate { .. } => ActionKind::Designate,
            Action::Withdraw { .. } => ActionKind::Withdraw,
            Action::Submit { .. } => ActionKind::Submit,
            Action::Approve { .. } => ActionKind::Approve,
            Action::ApproveBatch { .. } => ActionKind::ApproveBatch,
            Action::Reject { .. } => ActionKind::Reject,
            Action::Revoke { .. } => ActionKind::Revoke,
            Action::Renew { .. } => ActionKind::Renew,
            Action::CancelRevocation { .. } => ActionKind::CancelRevocation,
            Action::Deliver { .. } => ActionKind::Deliver,
            Action::ProposeBulkRevocation { .. } => ActionKind::ProposeBulkRevocation,
            Action::ApproveBulkRevocation { .. } => ActionKind::ApproveBulkRevocation,
        }
    }

    /// The action's name, as in the JSON.
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }
}

/// A request whose signature, freshness and shape were checked.
#[derive(Clone, Debug)]
pub struct SignedRequest {
    pub id: String,
    pub time: Timestamp,
    pub action: Action,
    /// The CMS bytes, kept as evidence.
    pub evidence: Vec<u8>,
}

#[derive(Deserialize)]
struct Wire {
    id: String,
    time: String,
    #[serde(flatten)]
    action: Action,
}

/// Parses the signed content (already verified) into a request, checking its id and its time.
pub fn parse(
    content: &[u8],
    evidence: Vec<u8>,
    now: Timestamp,
    window_seconds: u64,
) -> Result<SignedRequest, RaError> {
    let wire: Wire = serde_json::from_slice(content)
        .map_err(|e| RaError::Malformed(format!("signed content: {e}")))?;
    check_id(&wire.id)?;
    let time = Timestamp::parse_rfc3339(&wire.time)
        .map_err(|e| RaError::Malformed(format!("time {:?}: {e}", wire.time)))?;
    let skew = time.unix_seconds().abs_diff(now.unix_seconds());
    if skew > window_seconds {
        return Err(RaError::refused(
            super::Refusal::Stale,
            format!(
                "the request was made at {time}, {skew} s from the CA's clock ({now}); at most {window_seconds} s are allowed"
            ),
        ));
    }
    Ok(SignedRequest {
        id: wire.id,
        time,
        action: wire.action,
        evidence,
    })
}

/// The id a signed content names, if it names one (read before anything else is checked, to
/// recognise a retry).
pub fn id_of(content: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Id {
        id: String,
    }
    let id = serde_json::from_slice::<Id>(content).ok()?.id;
    check_id(&id).ok()?;
    Some(id)
}

/// Request ids: 16 to 64 of `A-Z a-z 0-9 _ -` (a random 128-bit hex value fits).
fn check_id(id: &str) -> Result<(), RaError> {
    let ok = (16..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        // Never echoed whole: the message goes to the audit log, and an id can be 256 KiB.
        let shown: String = id.chars().take(64).collect();
        let more = if id.chars().count() > 64 { "…" } else { "" };
        Err(RaError::Malformed(format!(
            "id {shown:?}{more}: 16 to 64 characters among A-Z a-z 0-9 _ -"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_id_is_not_echoed_whole() {
        let long = "x".repeat(256 * 1024);
        let message = check_id(&long).unwrap_err().to_string();
        assert!(message.len() < 200, "{} octets", message.len());
        assert!(check_id("0123456789abcdef").is_ok());
    }

    fn now() -> Timestamp {
        Timestamp::parse_rfc3339("2026-11-28T12:00:00Z").unwrap()
    }

    #[test]
    fn a_request_parses_with_its_action() {
        let json = br#"{"id":"0f1e2d3c4b5a69788796a5b4c3d2e1f0","time":"2026-11-28T12:01:00Z","action":"reject","request":"r1","reason":"documents incomplete"}"#;
        let parsed = parse(json, vec![1], now(), 300).unwrap();
        assert_eq!(parsed.id, "0f1e2d3c4b5a69788796a5b4c3d2e1f0");
        assert_eq!(
            parsed.action,
            Action::Reject {
                request: "r1".into(),
                reason: "documents incomplete".into()
            }
        );
    }

    #[test]
    fn unknown_fields_actions_bad_ids_and_stale_times_are_refused() {
        let cases: [&[u8]; 5] = [
            br#"{"id":"0f1e2d3c4b5a69788796a5b4c3d2e1f0","time":"2026-11-28T12:00:00Z","action":"approve","request":"r1","extra":1}"#,
            br#"{"id":"0f1e2d3c4b5a69788796a5b4c3d2e1f0","time":"2026-11-28T12:00:00Z","action":"promote","request":"r1"}"#,
            br#"{"id":"short","time":"2026-11-28T12:00:00Z","action":"approve","request":"r1"}"#,
            br#"{"id":"0f1e2d3c4b5a69788796a5b4c3d2e1f0","time":"yesterday","action":"approve","request":"r1"}"#,
            br#"not json"#,
        ];
        for case in cases {
            assert!(
                matches!(parse(case, vec![], now(), 300), Err(RaError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(case)
            );
        }
        let stale = br#"{"id":"0f1e2d3c4b5a69788796a5b4c3d2e1f0","time":"2026-11-28T11:50:00Z","action":"approve","request":"r1"}"#;
        assert!(matches!(
            parse(stale, vec![], now(), 300),
            Err(RaError::Refused {
                refusal: super::super::Refusal::Stale,
                ..
            })
        ));
    }
}
