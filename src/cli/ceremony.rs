//! `sceau ceremony propose | run | status | approve | verify`: key ceremonies under dual
//! control. Propose and run are actions of the service layer (through the running daemon when
//! there is one, else on the store); status reads the store; approve is an officer's (their
//! card, no configuration) and verify an auditor's (only its files).

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;

use super::actions::{Token, offline, online, run};
use super::card::Card;
use super::{CeremonyCommand, CliError, Context, ContextAs, Failure};
use crate::config::Config;
use crate::service::wire::{CarriedOut, ProposeBody, RunBody};

pub(super) fn ceremony(config: &Config, command: CeremonyCommand) -> Result<(), CliError> {
    match command {
        CeremonyCommand::Propose {
            operation,
            officers,
            quorum,
            common_name,
            backup_to,
            backup,
            shares_out,
            policies_from,
            key_label,
            valid_for,
            out,
        } => {
            if operation == "restore" {
                let from = backup.ok_or_else(|| CliError::usage("restore: --backup DIR"))?;
                let configuration = crate::service::ceremonies::configuration(config)?;
                let bytes = crate::backup::propose_restore(
                    &from,
                    &configuration,
                    super::clock().now(),
                    seconds(&valid_for)?,
                )
                .map_err(|e| CliError::refused(format!("{}: {e}", from.display())))?;
                return written(&out, &bytes);
            }
            let mut parameters = BTreeMap::new();
            for (index, path) in officers.iter().enumerate() {
                let bytes =
                    std::fs::read(path).context(|| format!("--officer {}", path.display()))?;
                let der = crate::x509::pem::decode_pem_or_der(&bytes, &["CERTIFICATE"])
                    .context_as(Failure::Data, || {
                        format!("--officer {}: not a certificate", path.display())
                    })?;
                parameters.insert(
                    format!("officer.{}", index + 1),
                    base64::engine::general_purpose::STANDARD.encode(der),
                );
            }
            if let Some(quorum) = quorum {
                parameters.insert("quorum".into(), quorum.to_string());
            }
            if let Some(label) = key_label {
                parameters.insert("key-label".into(), label);
            }
            if let Some(name) = common_name {
                parameters.insert("common-name".into(), name);
            }
            if let Some(dir) = backup_to {
                let dir = std::path::absolute(&dir)
                    .context(|| format!("--backup-to {}", dir.display()))?;
                parameters.insert("out".into(), dir.display().to_string());
            }
            if let Some(dir) = policies_from {
                let dir = std::path::absolute(&dir)
                    .context(|| format!("--policies-from {}", dir.display()))?;
                parameters.insert("policies-from".into(), dir.display().to_string());
            }
            if let Some(dir) = shares_out {
                let dir = std::path::absolute(&dir)
                    .context(|| format!("--shares-out {}", dir.display()))?;
                parameters.insert("shares-out".into(), dir.display().to_string());
            }
            let body = ProposeBody {
                operation,
                parameters,
                valid_for_seconds: seconds(&valid_for)?,
            };
            let bytes = match online(config, "/admin/ceremony/propose", &body)? {
                Some(answer) => answer.to_vec(),
                None => run(offline(config, Token::None)?.propose(body))?,
            };
            written(&out, &bytes)
        }
        CeremonyCommand::Run {
            proposal,
            approvals,
        } => {
            let engine = base64::engine::general_purpose::STANDARD;
            let proposal_bytes =
                std::fs::read(&proposal).context(|| format!("reading {}", proposal.display()))?;
            let mut encoded = Vec::new();
            for path in &approvals {
                let bytes =
                    std::fs::read(path).context(|| format!("--approval {}", path.display()))?;
                let der = crate::x509::pem::decode_pem_or_der(&bytes, &["CMS", "PKCS7"])
                    .context_as(Failure::Data, || {
                        format!("--approval {}: neither DER nor a CMS PEM", path.display())
                    })?;
                encoded.push(engine.encode(der));
            }
            let body = RunBody {
                proposal: engine.encode(&proposal_bytes),
                approvals: encoded,
            };
            let done: CarriedOut = match online(config, "/admin/ceremony/run", &body)? {
                Some(answer) => serde_json::from_slice(&answer)?,
                None => run(offline(config, Token::Open)?.carry_out(body))
                    .context(|| format!("ceremony {}", proposal.display()))?,
            };
            println!("{}", serde_json::to_string_pretty(&done)?);
            Ok(())
        }
        CeremonyCommand::Status => status(config),
        command @ (CeremonyCommand::Verify { .. } | CeremonyCommand::Approve { .. }) => {
            without_configuration(command)
        }
    }
}

/// `sceau ceremony verify` (an auditor's) and `approve` (an officer's): no configuration.
pub(super) fn without_configuration(command: CeremonyCommand) -> Result<(), CliError> {
    match command {
        CeremonyCommand::Verify {
            transcripts,
            anchor,
            report,
        } => verify(&transcripts, &anchor, report.as_deref()),
        CeremonyCommand::Approve {
            proposal,
            module,
            token,
            key_label,
            certificate,
            pin_file,
            out,
        } => approve(
            Card {
                module,
                token,
                key_label,
                certificate,
                pin_file,
            },
            &proposal,
            &out,
        ),
        _ => Err(CliError::internal("a command that needs the configuration")),
    }
}

/// Signs the proposal's exact bytes with the card, after checking that they are a proposal
/// and that the card's key is the certificate's; prints what was approved.
fn approve(card: Card, proposal_path: &Path, out: &Path) -> Result<(), CliError> {
    let bytes =
        std::fs::read(proposal_path).context(|| format!("reading {}", proposal_path.display()))?;
    // Only a ceremony's proposal is signed here: the same card signs RA requests.
    let proposal = crate::ca::ceremony::quorum::Proposal::from_canonical_bytes(&bytes)
        .context_as(Failure::Data, || format!("{}", proposal_path.display()))?;
    let (certificate, scheme) = card.certificate()?;
    // What is signed, shown before the card is opened (escaped: the file is the proposer's).
    println!(
        "approving ceremony {:?}: {} of CA {:?}, key position {:?}, proposed at {}, valid until {}",
        proposal.id,
        proposal.operation.as_str(),
        proposal.ca,
        proposal.audit_head,
        proposal.proposed_at,
        proposal.expires_at
    );
    for (name, value) in &proposal.parameters {
        let shown = if name.starts_with("officer.") {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(value)
                .ok()
                .and_then(|der| <x509_cert::Certificate as der::Decode>::from_der(&der).ok())
                .map_or_else(
                    || "an unreadable certificate".to_owned(),
                    |c| {
                        format!(
                            "officer {}",
                            c.tbs_certificate().subject().to_string().escape_debug()
                        )
                    },
                )
        } else {
            format!("\"{}\"", value.escape_debug())
        };
        // Escaped: control characters in the proposer's file never reach the terminal.
        println!("  {}: {shown}", name.escape_debug());
    }
    let approval = card.sign(&bytes, &certificate, scheme)?;
    crate::ca::ceremony::write_file(out, &approval)?;
    println!("approved: written to {}", out.display());
    Ok(())
}

fn status(config: &Config) -> Result<(), CliError> {
    use crate::ca::ceremony::control::{self, DualControl};
    let (_scratch, store) = super::open_store_for_reading(config)?;
    let subject = |der: &[u8]| {
        <x509_cert::Certificate as der::Decode>::from_der(der)
            .map(|c| c.tbs_certificate().subject().to_string())
            .unwrap_or_else(|e| format!("unreadable certificate: {e}"))
    };
    let control = match control::dual_control(&store)? {
        None => serde_json::json!({ "mode": "none declared" }),
        Some(DualControl::SinglePerson { declared_at }) => serde_json::json!({
            "mode": "single person (development)",
            "declared_at": declared_at.to_string(),
        }),
        Some(DualControl::Officers(set)) => serde_json::json!({
            "mode": "security officers",
            "quorum": set.quorum,
            "officers": set.officers.iter().filter(|o| o.active).map(|o| serde_json::json!({
                "subject": subject(&o.certificate),
                "certificate_sha256": hex::encode(crate::x509::keys::sha256(&o.certificate)),
            })).collect::<Vec<_>>(),
        }),
    };
    let ceremonies: Vec<_> = control::records(&store)?
        .iter()
        .map(|record| {
            let proposal =
                crate::ca::ceremony::quorum::Proposal::from_canonical_bytes(&record.proposal).ok();
            serde_json::json!({
                "id": proposal.as_ref().map(|p| p.id.clone()),
                "operation": proposal.as_ref().map(|p| p.operation.as_str()),
                "claimed_at": record.claimed_at.to_string(),
                "approved_by": record.approved_by.iter().map(|a| a.certificate_sha256.clone()).collect::<Vec<_>>(),
                "succeeded": record.outcome.as_ref().map(|o| o.succeeded),
            })
        })
        .collect();
    let status = serde_json::json!({
        "orphan_keys": crate::ca::ceremony_intent::orphan_key_labels(&store)?,
        "dual_control": control,
        "key_head": control::key_head(&store)?,
        "ceremonies": ceremonies,
    });
    println!("{}", serde_json::to_string_pretty(&status)?);
    Ok(())
}

/// Writes the proposal and says how an officer approves it.
fn written(out: &Path, bytes: &[u8]) -> Result<(), CliError> {
    crate::ca::ceremony::write_file(out, bytes)?;
    println!("proposal written to {}", out.display());
    println!("{}", String::from_utf8_lossy(bytes));
    println!(
        "each officer approves it with their card's signature key, e.g.:\n  openssl cms -sign -binary -nodetach -outform DER -md sha256 -in {} -signer SIGN-CERT.pem -inkey SIGN-KEY -out approval-NAME.der",
        out.display()
    );
    Ok(())
}

/// The approvals' files, DER (or CMS PEM), base64 for the service.
pub(super) fn read_approvals(approvals: &[std::path::PathBuf]) -> Result<Vec<Vec<u8>>, CliError> {
    let mut all = Vec::new();
    for path in approvals {
        let bytes = std::fs::read(path).context(|| format!("--approval {}", path.display()))?;
        let der = crate::x509::pem::decode_pem_or_der(&bytes, &["CMS", "PKCS7"])
            .context_as(Failure::Data, || {
                format!("--approval {}: neither DER nor a CMS PEM", path.display())
            })?;
        all.push(der);
    }
    Ok(all)
}

/// `90s`, `30m`, `8h`.
fn seconds(duration: &str) -> Result<u64, CliError> {
    let bad = || {
        CliError::usage(format!(
            "--valid-for {duration:?}: a number then s, m or h (90s, 30m, 8h)"
        ))
    };
    let (number, factor) = [("s", 1), ("m", 60), ("h", 3600)]
        .into_iter()
        .find_map(|(unit, factor)| duration.strip_suffix(unit).map(|n| (n, factor)))
        .ok_or_else(bad)?;
    let number: u64 = number.parse().map_err(|_| bad())?;
    number.checked_mul(factor).ok_or_else(bad)
}

fn verify(
    transcripts: &[std::path::PathBuf],
    anchor: &Path,
    report: Option<&Path>,
) -> Result<(), CliError> {
    use crate::ca::ceremony::quorum::{OfficerSet, Operation, Proposal};
    if report.is_some() && transcripts.len() != 1 {
        return Err(CliError::usage("--report takes a single transcript"));
    }
    let anchor = super::read_anchor(anchor)?;
    let mut verified = Vec::new();
    for path in transcripts {
        let bytes = std::fs::read(path).context(|| format!("reading {}", path.display()))?;
        let body = crate::ca::ceremony::transcript::verify(&bytes, &anchor)
            .context_as(Failure::Data, || format!("{}", path.display()))?;
        verified.push((path, body));
    }
    // The transcripts of one CA, in the order of its audit chain: each ceremony was approved
    // by the officers the ones before it declared (init, change-officers), not by a set the
    // transcript states on its own word.
    verified.sort_by_key(|(_, body)| (body.ca.clone(), body.audit_approved));
    let mut declared: Option<(String, OfficerSet)> = None;
    for (path, body) in &verified {
        let proposal = Proposal::from_canonical_bytes(&body.proposal)
            .context_as(Failure::Data, || format!("{}", path.display()))?;
        if let Some((ca, set)) = &declared
            && *ca == body.ca
            && proposal.operation != Operation::Init
            && body.officers != *set
        {
            return Err(CliError::data(format!(
                "{}: approved against an officer set that the earlier ceremonies given did not declare",
                path.display()
            )));
        }
        if body.outcome.succeeded
            && matches!(
                proposal.operation,
                Operation::Init | Operation::ChangeOfficers
            )
        {
            let set = OfficerSet::from_parameters(&proposal.parameters)
                .context_as(Failure::Data, || format!("{}", path.display()))?;
            declared = Some((body.ca.clone(), set));
        }
    }
    for (path, body) in transcripts
        .iter()
        .filter_map(|t| verified.iter().find(|(p, _)| *p == t))
    {
        println!(
            "{}: ceremony {} ({}) approved by {} of {} officers: {}; {}",
            path.display(),
            body.id,
            body.operation,
            body.approved_by.len(),
            body.officers.officers.iter().filter(|o| o.active).count(),
            body.approved_by
                .iter()
                .map(|a| a.person.replace('\u{1f}', " "))
                .collect::<Vec<_>>()
                .join(", "),
            if body.outcome.succeeded {
                "done"
            } else {
                "FAILED"
            }
        );
        if let Some(out) = report {
            crate::ca::ceremony::write_file(
                out,
                crate::ca::ceremony::transcript::report(body).as_bytes(),
            )?;
        }
    }
    Ok(())
}
