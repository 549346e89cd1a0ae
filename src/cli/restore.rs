//! `sceau restore --from DIR [--proposal P --approval A ...]`: a backup brought back into an
//! empty data directory, its keys checked in the token, its transcript sealed when it ran as a
//! ceremony.

use std::path::{Path, PathBuf};

use super::{CliError, Context, actions, ceremony, clock, open_hsm, open_store};
use crate::ca;
use crate::config::Config;
use crate::store::Store;

pub(super) fn restore(
    config: &Config,
    from: &Path,
    proposal: Option<&Path>,
    approvals: &[PathBuf],
) -> Result<(), CliError> {
    // A CA with officers is restored by a ceremony, claimed in the copy being restored.
    let ceremony = match proposal {
        Some(path) => Some((
            std::fs::read(path).context(|| format!("--proposal {}", path.display()))?,
            ceremony::read_approvals(approvals)?,
        )),
        None => None,
    };
    let now = clock().now();
    let mut claimed = None;
    let authorize = |store: &Store| -> Result<(), String> {
        let Some((bytes, approvals)) = ceremony else {
            return ca::ceremony::control::require_single_person(store, "a restore")
                .map_err(|e| e.to_string());
        };
        let proposal = ca::ceremony::quorum::Proposal::from_canonical_bytes(&bytes)
            .map_err(|e| format!("--proposal: {e}"))?;
        let manifest = crate::backup::manifest_sha256(from).map_err(|e| e.to_string())?;
        let configuration =
            crate::service::ceremonies::configuration(config).map_err(|e| e.to_string())?;
        let expected = std::collections::BTreeMap::from([
            ("manifest".to_owned(), manifest),
            ("configuration".to_owned(), configuration),
        ]);
        if proposal.operation != ca::ceremony::quorum::Operation::Restore
            || proposal.parameters != expected
        {
            return Err(format!(
                "--proposal: it is not the restore of the backup {} (operation {}, parameters {:?})",
                from.display(),
                proposal.operation.as_str(),
                proposal.parameters
            ));
        }
        let revocations = store.clone();
        ca::ceremony::control::claim(store, bytes, approvals, None, now, move |c| {
            ca::ceremony::control::revoked_in(&revocations, c)
        })
        .map_err(|e| e.to_string())?;
        claimed = Some(proposal.id);
        Ok(())
    };
    // The engine first: if it cannot be read, nothing is touched.
    let engine = match &config.nats {
        Some(settings) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            Some(
                runtime
                    .block_on(crate::va::publish::read_engine(settings))
                    .map_err(|e| {
                        CliError::unavailable(format!(
                            "{}: [nats]: {e} (a restore takes back what the engine published; start it, or restore with a configuration without [nats] knowing that revocations made after the backup are lost)",
                            config.path.display()
                        ))
                    })?,
            )
        }
        None => None,
    };
    let hsm = open_hsm(config)?;
    let check_keys = |state: &ca::CaState| -> Result<(), String> {
        for stored in state
            .issuing
            .iter()
            .chain(&state.ocsp_responders)
            .filter(|c| !state.key_destroyed(&c.key_label))
        {
            ca::Issuer::load(&hsm, stored).map_err(|e| {
                format!(
                    "the HSM token {:?} does not hold the key of {} ({:?}): {e}",
                    config.hsm.token_label, stored.name, stored.key_label
                )
            })?;
        }
        Ok(())
    };
    let restored = crate::backup::restore(
        from,
        &config.store_dir(),
        &config.publish_dir,
        engine.as_ref(),
        check_keys,
        authorize,
        now,
    )
    .map_err(|e| CliError::refused(e.to_string()))?;
    // The CA certificates, where `sceau init` writes them (kept if present).
    let certs = config.certs_dir();
    std::fs::create_dir_all(&certs).context(|| format!("creating {}", certs.display()))?;
    if let Ok(entries) = std::fs::read_dir(from.join("certs")) {
        for entry in entries.flatten() {
            let target = certs.join(entry.file_name());
            if !target.exists() {
                std::fs::copy(entry.path(), &target)
                    .context(|| format!("copying {}", entry.path().display()))?;
            }
        }
    }
    println!("{}", serde_json::to_string_pretty(&restored)?);
    if let Some(id) = claimed {
        // On record in the store restored: its transcript, signed by the audit key.
        let service =
            crate::service::Service::offline(config.clone(), open_store(config)?, clock())
                .with_token(hsm, None);
        let details = std::collections::BTreeMap::from([
            ("backup".to_owned(), from.display().to_string()),
            (
                "manifest".to_owned(),
                crate::backup::manifest_sha256(from).map_err(|e| CliError::data(e.to_string()))?,
            ),
        ]);
        let done = actions::run(service.conclude(id, Ok(details)))?;
        println!("{}", serde_json::to_string_pretty(&done)?);
    }
    Ok(())
}
