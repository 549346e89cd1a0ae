//! The CLI's state-changing commands. Each is one action of the service layer: sent to the
//! running daemon's admin API (it holds the store) as the service's request type, or, when no
//! daemon runs, carried out by the service offline on the store (the daemon signs the OCSP
//! responses and publishes to nodes when it starts).

use std::io::Write;
use std::path::Path;

use super::{
    CliError, Context, Failure, IssueArgs, admin_client, clock, open_ca, open_hsm, open_store,
};
use crate::config::Config;
use crate::service::wire::{
    BackupBody, BootstrapBody, CancelBody, CardBody, IssueBody, RevokeBody, Rollover, RotateBody,
};
use crate::service::{Service, ServiceError};

/// Sends `body` to the daemon's admin API at `path`: its answer, or `None` when no daemon runs.
pub(super) fn online<B: serde::Serialize>(
    config: &Config,
    path: &str,
    body: &B,
) -> Result<Option<bytes::Bytes>, CliError> {
    admin_client::call(config, path, serde_json::to_value(body)?)
}

/// The service on the store, without a daemon; with the token when the action signs.
pub(super) fn offline(config: &Config, token: Token) -> Result<Service, CliError> {
    Ok(match token {
        Token::None => Service::offline(config.clone(), open_store(config)?, clock()),
        Token::Open => {
            let hsm = open_hsm(config)?;
            Service::offline(config.clone(), open_store(config)?, clock()).with_token(hsm, None)
        }
        Token::WithIssuingCa => {
            let (ca, hsm) = open_ca(config)?;
            Service::offline(config.clone(), ca.store().clone(), clock()).with_token(hsm, Some(ca))
        }
    })
}

/// What an offline action needs of the token.
pub(super) enum Token {
    None,
    Open,
    WithIssuingCa,
}

/// Runs an action of the service to its end on this thread.
pub(super) fn run<T>(action: impl Future<Output = Result<T, ServiceError>>) -> Result<T, CliError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(action)?)
}

/// Prints the daemon's answer as it came.
fn print_answer(answer: &[u8]) {
    println!("{}", String::from_utf8_lossy(answer));
}

/// A CSR file as PEM text (DER input is armoured): what the service takes.
fn csr_text(path: &Path, option: &str) -> Result<String, CliError> {
    let bytes = std::fs::read(path).context(|| format!("{option} {}", path.display()))?;
    Ok(if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
        String::from_utf8_lossy(&bytes).into_owned()
    } else {
        crate::x509::pem::encode(crate::x509::pem::CERTIFICATE_REQUEST, &bytes)
    })
}

pub(super) fn issue(config: &Config, args: &IssueArgs) -> Result<(), CliError> {
    if args.out.is_some() && args.csr.len() > 1 {
        return Err(CliError::usage("--out takes a single --csr"));
    }
    if let Some(text) = &args.not_after {
        crate::x509::Timestamp::parse_rfc3339(text)
            .map_err(|e| CliError::usage(format!("--not-after {text:?}: {e}")))?;
    }
    let mut stdout = std::io::stdout().lock();
    let mut service = None;
    for path in &args.csr {
        let body = IssueBody {
            policy: args.policy.clone(),
            csr: csr_text(path, "--csr")?,
            holder: args.holder.clone(),
            not_after: args.not_after.clone(),
        };
        let pem = match &service {
            None => match online(config, "/admin/issue", &body)
                .context(|| format!("issuing from {}", path.display()))?
            {
                Some(answer) => {
                    let answer: crate::service::wire::Issued = serde_json::from_slice(&answer)?;
                    answer.certificate
                }
                None => {
                    let offline = service.insert(offline(config, Token::WithIssuingCa)?);
                    run(offline.issue(body))
                        .context(|| format!("issuing from {}", path.display()))?
                        .certificate
                }
            },
            Some(offline) => {
                run(offline.issue(body))
                    .context(|| format!("issuing from {}", path.display()))?
                    .certificate
            }
        };
        // Printed (and flushed) only once stored: a reader never holds a certificate the CA
        // does not know.
        match &args.out {
            Some(out) => crate::ca::ceremony::write_file(out, pem.as_bytes())?,
            None => {
                stdout.write_all(pem.as_bytes())?;
                stdout.flush()?;
            }
        }
    }
    Ok(())
}

pub(super) fn card_issue(
    config: &Config,
    body: CardBody,
    out_dir: Option<&Path>,
) -> Result<(), CliError> {
    let card: crate::service::wire::CardIssued = match online(config, "/admin/card", &body)? {
        Some(answer) => serde_json::from_slice(&answer)?,
        None => run(offline(config, Token::WithIssuingCa)?.issue_card(body))?,
    };
    match out_dir {
        Some(dir) => {
            crate::ca::ceremony::write_file(
                &dir.join("auth.pem"),
                card.authentication.certificate.as_bytes(),
            )?;
            crate::ca::ceremony::write_file(
                &dir.join("sign.pem"),
                card.signature.certificate.as_bytes(),
            )?;
            println!(
                "card {} for {}: {}/auth.pem, {}/sign.pem",
                card.card,
                card.holder,
                dir.display(),
                dir.display()
            );
        }
        None => {
            let mut stdout = std::io::stdout();
            stdout.write_all(card.authentication.certificate.as_bytes())?;
            stdout.write_all(card.signature.certificate.as_bytes())?;
        }
    }
    Ok(())
}

pub(super) fn card_body(
    holder: String,
    card: Option<String>,
    (auth_csr, sign_csr): (&Path, &Path),
    (auth_policy, sign_policy): (String, String),
) -> Result<CardBody, CliError> {
    Ok(CardBody {
        holder,
        card,
        authentication_csr: csr_text(auth_csr, "--auth-csr")?,
        signature_csr: csr_text(sign_csr, "--sign-csr")?,
        authentication_policy: auth_policy,
        signature_policy: sign_policy,
    })
}

pub(super) fn ra_bootstrap(config: &Config, body: BootstrapBody) -> Result<(), CliError> {
    let card = body.card.clone();
    let answer: crate::service::wire::Bootstrapped =
        match online(config, "/admin/ra/bootstrap", &body)? {
            Some(answer) => serde_json::from_slice(&answer)?,
            None => run(offline(config, Token::None)?.bootstrap(body))
                .context(|| format!("--card {card}"))?,
        };
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}

/// `sceau revoke`, now or `--at` a time to come (a time already past revokes now).
pub(super) fn revoke(config: &Config, body: RevokeBody) -> Result<(), CliError> {
    use crate::service::revocation::Revocation;
    // Checked here too, so that a typo is reported the same way online and offline.
    let revocation = Revocation::parse(body.clone(), "cli", clock().now())?;
    if let Some(answer) = online(config, "/admin/revoke", &body)? {
        print_answer(&answer);
        return Ok(());
    }
    let service = offline(config, Token::None)?;
    let answer = match revocation {
        Revocation::Now(request) => serde_json::to_value(run(service.revoke(request))?)?,
        Revocation::At(request, at) => serde_json::to_value(run(service.schedule(request, at))?)?,
    };
    println!("{answer}");
    Ok(())
}

pub(super) fn scheduled_cancel(config: &Config, id: &str) -> Result<(), CliError> {
    let body = CancelBody { id: id.to_owned() };
    if let Some(answer) = online(config, "/admin/revoke/cancel", &body)? {
        print_answer(&answer);
        return Ok(());
    }
    let cancelled = run(offline(config, Token::None)?.cancel_scheduled(body.id, "cli"))?;
    println!("{}", serde_json::to_string(&cancelled)?);
    Ok(())
}

pub(super) fn backup(config: &Config, out: &Path) -> Result<(), CliError> {
    let out = std::path::absolute(out).context(|| format!("--out {}", out.display()))?;
    let body = BackupBody { out };
    if let Some(answer) = online(config, "/admin/backup", &body)? {
        print_answer(&answer);
        return Ok(());
    }
    let manifest = run(offline(config, Token::None)?.backup(body))?;
    println!("{}", serde_json::to_string_pretty(&manifest)?);
    Ok(())
}

pub(super) fn publish_all(config: &Config) -> Result<(), CliError> {
    if config.nats.is_none() {
        return Err(CliError::new(
            Failure::Config,
            format!(
                "{}: [nats]: not configured; there is no engine to publish to",
                config.path.display()
            ),
        ));
    }
    match online(config, "/admin/publish/all", &serde_json::json!({}))? {
        Some(answer) => {
            print_answer(&answer);
            Ok(())
        }
        None => Err(CliError::unavailable(
            "the daemon is not running: its publisher makes the full publication (it also makes one when it starts and finds the status bucket new, re-created or short of entries)",
        )),
    }
}

pub(super) fn crl(config: &Config) -> Result<(), CliError> {
    if let Some(answer) = online(config, "/admin/crl", &serde_json::json!({}))? {
        print_answer(&answer);
        return Ok(());
    }
    let published = run(offline(config, Token::Open)?.publish_crls())?;
    println!("{}", serde_json::to_string(&published)?);
    Ok(())
}

pub(super) fn ocsp_renew_signer(config: &Config) -> Result<(), CliError> {
    if let Some(answer) = online(config, "/admin/ocsp/renew-signer", &serde_json::json!({}))? {
        print_answer(&answer);
        return Ok(());
    }
    let renewed = run(offline(config, Token::Open)?.renew_responders(true))?;
    println!("{}", serde_json::to_string(&renewed)?);
    Ok(())
}

pub(super) fn ca_rotate(
    config: &Config,
    root: bool,
    common_name: Option<&str>,
) -> Result<(), CliError> {
    let (path, rollover) = if root {
        ("/admin/ca/rotate-root", Rollover::Root)
    } else {
        ("/admin/ca/rotate", Rollover::Issuing)
    };
    let body = RotateBody {
        common_name: common_name.map(str::to_owned),
    };
    if let Some(answer) = online(config, path, &body)? {
        print_answer(&answer);
        return Ok(());
    }
    let rotated = run(offline(config, Token::Open)?.rotate(rollover, body.common_name))?;
    println!("{}", serde_json::to_string(&rotated)?);
    Ok(())
}

/// Records the export of a bundle of `from`..`to` and signs a checkpoint after it: through
/// the daemon when it runs.
pub(super) fn audit_bundle_mark(
    config: &Config,
    from: crate::x509::Timestamp,
    to: crate::x509::Timestamp,
) -> Result<(), CliError> {
    let body = crate::service::wire::BundleMarkBody { from, to };
    if online(
        config,
        "/admin/audit/bundle-mark",
        &serde_json::to_value(&body)?,
    )?
    .is_some()
    {
        return Ok(());
    }
    run(offline(config, Token::Open)?.mark_bundle(body))
        .context(|| "recording the bundle's export".into())?;
    Ok(())
}

pub(super) fn audit_checkpoint(config: &Config) -> Result<(), CliError> {
    if let Some(answer) = online(config, "/admin/audit/checkpoint", &serde_json::json!({}))? {
        print_answer(&answer);
        return Ok(());
    }
    let signed = run(offline(config, Token::Open)?.checkpoint())
        .context(|| "signing an audit checkpoint".into())?;
    println!("{}", serde_json::to_string(&signed)?);
    Ok(())
}
