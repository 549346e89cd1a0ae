//! `sceau ra ...`: the RA operator's client (docs/ra-client.md). It reaches the RA over mutual
//! TLS and signs with the operator's card through PKCS#11: the card's authentication key in
//! the TLS handshake, its signature key on every request that changes something. Nothing of
//! the card leaves it; the PIN is asked once per command.

mod args;
mod card;
mod connection;
mod csr;
mod show;
mod tls;

use std::io::{IsTerminal, Write};

use base64::Engine;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

pub use args::{ClientCommand, ClientOptions};
use card::OperatorCard;
use connection::RaConnection;

use super::{CliError, Context, ContextAs, Failure};

/// How many requests one signed approval names at most (the RA's limit).
const BATCH_LIMIT: usize = 100;

pub(super) fn run(options: &ClientOptions, command: ClientCommand) -> Result<(), CliError> {
    if let ClientCommand::Csr {
        key_label,
        subject,
        out,
    } = &command
    {
        return csr::write(options, key_label, subject, out);
    }
    let mut session = Session::open(options)?;
    match command {
        ClientCommand::Me => {
            let me = session.get("/ra/v1/operators/me")?;
            session.print(&me, show::operator)
        }
        ClientCommand::Queue => {
            let queue = session.get("/ra/v1/requests")?;
            session.print(&queue, show::queue)
        }
        ClientCommand::Show { request } => {
            let view = session.get(&format!("/ra/v1/requests/{}", segment(&request)?))?;
            session.print(&view, show::request)
        }
        ClientCommand::Approve { requests, yes } => approve(&mut session, &requests, yes),
        ClientCommand::Reject { request, reason } => {
            let path = format!("/ra/v1/requests/{}/reject", segment(&request)?);
            let answer = session.post(
                &path,
                json!({"action": "reject", "request": request, "reason": reason}),
            )?;
            session.print(&answer, show::request)
        }
        ClientCommand::Submit {
            holder,
            card,
            auth_csr,
            sign_csr,
        } => {
            let mut action = json!({
                "action": "submit",
                "holder": holder,
                "authentication_csr": csr::read_pem(&auth_csr, "--auth-csr")?,
                "signature_csr": csr::read_pem(&sign_csr, "--sign-csr")?,
            });
            if let Some(card) = card {
                action["card"] = Value::String(card);
            }
            let answer = session.post("/ra/v1/requests", action)?;
            session.print(&answer, show::request)
        }
        ClientCommand::Revoke {
            card,
            serial,
            reason,
            at,
        } => {
            let mut action = json!({"action": "revoke"});
            for (field, value) in [
                ("card", card),
                ("serial", serial),
                ("reason", reason),
                ("at", at),
            ] {
                if let Some(value) = value {
                    action[field] = Value::String(value);
                }
            }
            let answer = session.post("/ra/v1/revocations", action)?;
            session.print(&answer, show::generic)
        }
        ClientCommand::Designate {
            role,
            holder,
            card,
            organizations,
            units,
            policies,
        } => {
            let answer = session.post(
                "/ra/v1/operators",
                json!({
                    "action": "designate",
                    "role": role,
                    "holder": holder,
                    "card": card,
                    "scope": {"organizations": organizations, "units": units, "policies": policies},
                }),
            )?;
            session.print(&answer, show::operator)
        }
        ClientCommand::Withdraw { operator, reason } => {
            let path = format!("/ra/v1/operators/{}/withdraw", segment(&operator)?);
            let mut action = json!({"action": "withdraw", "operator": operator});
            if let Some(reason) = reason {
                action["reason"] = Value::String(reason);
            }
            let answer = session.post(&path, action)?;
            session.print(&answer, show::generic)
        }
        ClientCommand::Handover {
            card,
            holder_token,
            statement,
            receipt,
        } => {
            let receipt = match (receipt, holder_token) {
                (Some(file), _) => {
                    let bytes =
                        std::fs::read(&file).context(|| format!("--receipt {}", file.display()))?;
                    crate::x509::pem::decode_pem_or_der(&bytes, &["CMS", "PKCS7"])
                        .context_as(Failure::Data, || {
                            format!("--receipt {}: neither DER nor a CMS PEM", file.display())
                        })?
                }
                (None, Some(token)) => {
                    let holder = card::HolderCard::open(options, &token)?;
                    let content = json!({
                        "receipt": "handover",
                        "card": card,
                        "time": crate::x509::Timestamp::now().to_string(),
                        "statement": statement,
                    });
                    holder.sign(&serde_json::to_vec(&content)?)?
                }
                (None, None) => {
                    return Err(CliError::usage("--holder-token LABEL or --receipt FILE"));
                }
            };
            let path = format!("/ra/v1/cards/{}/deliver", segment(&card)?);
            let answer = session.post(
                &path,
                json!({
                    "action": "deliver",
                    "card": card,
                    "receipt": base64::engine::general_purpose::STANDARD.encode(receipt),
                }),
            )?;
            session.print(&answer, show::generic)
        }
        ClientCommand::Export { card, out_dir } => export(&mut session, &card, &out_dir),
        ClientCommand::BulkRevoke {
            units,
            policies,
            mut holders,
            holders_from,
            issued_after,
            issued_before,
            reason,
            dry_run,
        } => {
            if let Some(file) = holders_from {
                let text = std::fs::read_to_string(&file)
                    .context(|| format!("--holders-from {}", file.display()))?;
                holders.extend(
                    text.lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(str::to_owned),
                );
            }
            let answer = session.post(
                "/ra/v1/bulk-revocations",
                json!({
                    "action": "propose-bulk-revocation",
                    "query": {
                        "units": units,
                        "policies": policies,
                        "holders": holders,
                        "issued_after": issued_after,
                        "issued_before": issued_before,
                    },
                    "reason": reason,
                    "dry_run": dry_run,
                }),
            )?;
            session.print(&answer, show::bulk)
        }
        ClientCommand::BulkShow { bulk } => {
            let view = session.get(&format!("/ra/v1/bulk-revocations/{}", segment(&bulk)?))?;
            session.print(&view, show::bulk)
        }
        ClientCommand::BulkApprove { bulk, yes } => {
            let view = session.get(&format!("/ra/v1/bulk-revocations/{}", segment(&bulk)?))?;
            if view["state"] != "pending" {
                return Err(CliError::refused(format!(
                    "bulk revocation {bulk} is {}, not pending",
                    view["state"].as_str().unwrap_or("unknown")
                )));
            }
            let digest = view["certificates_sha256"].as_str().ok_or_else(|| {
                CliError::unavailable(format!("bulk revocation {bulk}: no digest from the RA"))
            })?;
            // The digest approved is the one of the list shown, computed here, not taken on
            // the RA's word.
            let shown = list_digest(&view["certificates"]);
            if shown.as_deref() != Some(digest) {
                return Err(CliError::data(format!(
                    "bulk revocation {bulk}: the list the RA sent does not match its digest; nothing approved"
                )));
            }
            confirm(
                &session,
                &view,
                show::bulk,
                yes,
                "Revoke these certificates?",
            )?;
            let answer = session.post(
                &format!("/ra/v1/bulk-revocations/{}/approve", segment(&bulk)?),
                json!({
                    "action": "approve-bulk-revocation",
                    "bulk": bulk,
                    "certificates_sha256": digest,
                }),
            )?;
            session.print(&answer, show::bulk)
        }
        ClientCommand::Csr { .. } => Ok(()),
    }
}

/// A path segment from the command line: ids are letters, digits, `-`, `_` and `.`, never
/// `.` or `..` alone (a URL path of its own).
fn segment(value: &str) -> Result<&str, CliError> {
    if !value.is_empty()
        && value != "."
        && value != ".."
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        Ok(value)
    } else {
        Err(CliError::usage(format!(
            "{value:?}: an id is made of letters, digits, '-', '_' and '.'"
        )))
    }
}

/// The card and the connection of one command.
struct Session {
    card: OperatorCard,
    connection: RaConnection,
    json: bool,
}

impl Session {
    fn open(options: &ClientOptions) -> Result<Self, CliError> {
        let url = options
            .ra
            .as_deref()
            .ok_or_else(|| CliError::usage("the RA: --ra URL or SCEAU_RA"))?;
        let ra_ca = options
            .ra_ca
            .as_deref()
            .ok_or_else(|| CliError::usage("the RA's certificate: --ra-ca FILE or SCEAU_RA_CA"))?;
        let card = OperatorCard::open(options)?;
        let config = tls::client_config(ra_ca, card.auth_der.clone(), card.auth_key.clone())?;
        Ok(Self {
            card,
            connection: RaConnection::new(url, config)?,
            json: options.json,
        })
    }

    fn get(&mut self, path: &str) -> Result<Value, CliError> {
        let answer = self.connection.send(Method::GET, path, None)?;
        parse(answer.status, &answer.body, path)
    }

    /// Signs `action` (with a fresh id and the time) with the card and POSTs it.
    fn post(&mut self, path: &str, mut action: Value) -> Result<Value, CliError> {
        action["id"] = Value::String(
            crate::ca::ceremony::control::new_id()
                .map_err(|e| CliError::internal(format!("a request id: {e}")))?,
        );
        action["time"] = Value::String(crate::x509::Timestamp::now().to_string());
        let content = serde_json::to_vec(&action)?;
        let signed = self.card.sign(&content)?;
        let answer = self.connection.send(Method::POST, path, Some(signed))?;
        parse(answer.status, &answer.body, path)
    }

    fn print(&self, value: &Value, text: fn(&Value) -> String) -> Result<(), CliError> {
        let out = if self.json {
            serde_json::to_string_pretty(value)?
        } else {
            text(value)
        };
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{out}").context(|| "standard output".into())
    }
}

/// The RA's answer: its JSON, or an error carrying its problem document's rule and detail.
fn parse(status: StatusCode, body: &[u8], path: &str) -> Result<Value, CliError> {
    let value: Option<Value> = serde_json::from_slice(body).ok();
    if status.is_success() {
        return value.ok_or_else(|| {
            CliError::unavailable(format!("{path}: the RA answered {status} without JSON"))
        });
    }
    let (rule, detail) = match &value {
        Some(problem) => (
            problem["type"]
                .as_str()
                .and_then(|t| t.rsplit(':').next())
                .unwrap_or("")
                .to_owned(),
            problem["detail"].as_str().unwrap_or("").to_owned(),
        ),
        None => (String::new(), String::from_utf8_lossy(body).into_owned()),
    };
    let failure = match status.as_u16() {
        400 | 422 => Failure::Data,
        401 | 403 | 404 | 409 => Failure::Refused,
        _ => Failure::Unavailable,
    };
    Err(CliError::new(
        failure,
        format!("the RA refused ({} {rule}): {detail}", status.as_u16()),
    ))
}

/// Shows `shown` on standard error (as JSON with `--json`), then asks, unless `yes`. Without
/// a terminal to ask on and without `yes`, refuses.
fn confirm(
    session: &Session,
    shown: &Value,
    text: fn(&Value) -> String,
    yes: bool,
    question: &str,
) -> Result<(), CliError> {
    if session.json {
        eprintln!("{}", serde_json::to_string_pretty(shown)?);
    } else {
        eprintln!("{}\n", text(shown));
    }
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::usage(
            "no terminal to confirm on: add --yes once you have read the above",
        ));
    }
    eprint!("{question} [y/N] ");
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context(|| "standard input".into())?;
    if matches!(line.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(CliError::refused("nothing done"))
    }
}

/// Shows each request, asks once, then approves them all with one signature per hundred,
/// each named by the digest of the submission shown. Exits with an error when any request
/// was not issued, after printing what was.
fn approve(session: &mut Session, ids: &[String], yes: bool) -> Result<(), CliError> {
    let mut items = Vec::with_capacity(ids.len());
    let mut shown = Vec::with_capacity(ids.len());
    for id in ids {
        let view = session.get(&format!("/ra/v1/requests/{}", segment(id)?))?;
        if view["state"] != "pending" {
            return Err(CliError::refused(format!(
                "request {id} is {}, not pending: nothing approved",
                view["state"].as_str().unwrap_or("unknown")
            )));
        }
        let digest = view["submission_sha256"].as_str().ok_or_else(|| {
            CliError::unavailable(format!("request {id}: the RA gave no submission digest"))
        })?;
        items.push(json!({"request": id, "submission_sha256": digest}));
        shown.push(view);
    }
    let question = format!("Approve these {} request(s)?", items.len());
    confirm(
        session,
        &Value::Array(shown),
        show::requests,
        yes,
        &question,
    )?;
    let total = items.len();
    let mut results: Vec<Value> = Vec::new();
    let mut stopped = None;
    for chunk in items.chunks(BATCH_LIMIT) {
        match session.post(
            "/ra/v1/approvals",
            json!({"action": "approve-batch", "requests": chunk}),
        ) {
            Ok(answer) => {
                results.extend(answer["requests"].as_array().into_iter().flatten().cloned());
                if total > BATCH_LIMIT {
                    eprintln!("approved {}/{total}", results.len());
                }
            }
            Err(error) => {
                stopped = Some(error);
                break;
            }
        }
    }
    let issued = results.iter().filter(|r| r["state"] == "issued").count();
    let summary = json!({ "approved": issued, "of": total, "requests": results });
    session.print(&summary, show::batch)?;
    if let Some(error) = stopped {
        return Err(error);
    }
    if issued < total {
        return Err(CliError::refused(format!(
            "{} of {total} request(s) were not issued (see above)",
            total - issued
        )));
    }
    Ok(())
}

/// The SHA-256 of a bulk revocation's list as the RA defines it (one `ISSUER:SERIAL` line a
/// certificate, in the list's order); `None` for a list without them.
fn list_digest(list: &Value) -> Option<String> {
    let mut text = String::new();
    for certificate in list.as_array()? {
        text.push_str(certificate["issuer"].as_str()?);
        text.push(':');
        text.push_str(certificate["serial"].as_str()?);
        text.push('\n');
    }
    Some(hex::encode(crate::x509::keys::sha256(text.as_bytes())))
}

/// Writes a card's current certificates as auth.pem and sign.pem.
fn export(session: &mut Session, card: &str, out_dir: &std::path::Path) -> Result<(), CliError> {
    let view = session.get(&format!("/ra/v1/cards/{}", segment(card)?))?;
    std::fs::create_dir_all(out_dir).context(|| format!("--out-dir {}", out_dir.display()))?;
    let mut written = Vec::new();
    for certificate in view["certificates"].as_array().into_iter().flatten() {
        let file = match certificate["usage"].as_str() {
            Some("authentication") => "auth.pem",
            Some("signature") => "sign.pem",
            _ => continue,
        };
        let Some(pem) = certificate["certificate"].as_str() else {
            continue;
        };
        let path = out_dir.join(file);
        std::fs::write(&path, pem).context(|| format!("{}", path.display()))?;
        written.push(path.display().to_string());
    }
    if written.is_empty() {
        return Err(CliError::unavailable(format!(
            "card {card}: the RA gave no certificate"
        )));
    }
    session.print(&json!({"card": card, "written": written}), show::generic)
}
