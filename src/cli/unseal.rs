//! `sceau unseal`: a security officer presents their share of the PIN to the sealed daemon
//! (docs/ceremonies.md, "The PIN"): sealed to the daemon's key of this start, signed by their
//! card. Runs on the CA host (it reads the admin token of the data directory).

use std::path::Path;

use base64::Engine;

use super::actions::online;
use super::card::Card;
use super::{CliError, Context, ContextAs, Failure, UnsealArgs};
use crate::ca::ceremony::pin_split::{Challenge, ShareFile, UnsealRequest};
use crate::config::Config;
use crate::service::unseal::Progress;

pub(super) fn unseal(config: &Config, args: UnsealArgs) -> Result<(), CliError> {
    if let Some(path) = &args.signed {
        let bytes = std::fs::read(path).context(|| format!("--signed {}", path.display()))?;
        let der = crate::x509::pem::decode_pem_or_der(&bytes, &["CMS", "PKCS7"])
            .context_as(Failure::Data, || {
                format!("--signed {}: neither DER nor a CMS PEM", path.display())
            })?;
        return present(config, &der);
    }
    let Some(share_path) = &args.share else {
        // Where the unsealing stands.
        println!("{}", serde_json::to_string_pretty(&challenge(config)?)?);
        return Ok(());
    };
    let share = read_share(share_path)?;
    if let Some(out) = &args.request_out {
        let request = UnsealRequest::seal(&challenge(config)?, &share)
            .context_as(Failure::Data, || {
                format!("--share {}", share_path.display())
            })?;
        write_private(out, &request.canonical_bytes())?;
        println!(
            "written to {}: sign it with your card (openssl cms -sign -binary -nodetach -outform DER -in {} ...), then sceau unseal --signed FILE",
            out.display(),
            out.display()
        );
        return Ok(());
    }
    let card = match (args.module, args.token, args.key_label, args.certificate) {
        (Some(module), Some(token), Some(key_label), Some(certificate)) => Card {
            module,
            token,
            key_label,
            certificate,
            pin_file: args.pin_file,
        },
        _ => {
            return Err(CliError::usage(
                "--share FILE needs the card (--module --token --key-label --certificate) or --request-out FILE",
            ));
        }
    };
    let (certificate, scheme) = card.certificate()?;
    let challenge = challenge(config)?;
    // Escaped: the share file may come from anywhere.
    println!(
        "presenting share {} of split {:?}, dealt to {:?}, to the CA {:?} (this start: {})",
        share.index,
        share.split.escape_debug().to_string(),
        share.name.escape_debug().to_string(),
        challenge.ca,
        challenge.nonce
    );
    let request = UnsealRequest::seal(&challenge, &share).context_as(Failure::Data, || {
        format!("--share {}", share_path.display())
    })?;
    let signed = card.sign(&request.canonical_bytes(), &certificate, scheme)?;
    present(config, &signed)
}

fn read_share(path: &Path) -> Result<ShareFile, CliError> {
    let bytes = zeroize::Zeroizing::new(
        std::fs::read(path).context(|| format!("--share {}", path.display()))?,
    );
    serde_json::from_slice(&bytes).context_as(Failure::Data, || {
        format!("--share {}: not a share file of sceau", path.display())
    })
}

/// The sealed daemon's nonce of this start, and where the unsealing stands.
fn challenge(config: &Config) -> Result<Challenge, CliError> {
    let answer = online(config, "/admin/unseal/challenge", &serde_json::json!({}))?
        .ok_or_else(not_running)?;
    Ok(serde_json::from_slice(&answer)?)
}

fn present(config: &Config, presentation: &[u8]) -> Result<(), CliError> {
    let body = serde_json::json!({
        "presentation": base64::engine::general_purpose::STANDARD.encode(presentation),
    });
    let answer = online(config, "/admin/unseal", &body)?.ok_or_else(not_running)?;
    let progress: Progress = serde_json::from_slice(&answer)?;
    if progress.unsealed {
        println!("unsealed: the daemon's PIN is whole; it opens the CA now");
    } else {
        println!(
            "share taken: {} of {} (the daemon is still sealed)",
            progress.have, progress.need
        );
    }
    Ok(())
}

fn not_running() -> CliError {
    CliError::new(
        Failure::Unavailable,
        "no daemon answers on the admin address: sceau unseal presents a share to a running, sealed daemon (sceau serve)",
    )
}

/// Writes `bytes` to a new file readable by its owner only (it holds a share).
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .context(|| format!("--request-out {} (a new file)", path.display()))?;
    file.write_all(bytes)
        .context(|| format!("writing {}", path.display()))?;
    Ok(())
}
