//! The `change-policies` ceremony: the policy files the officers approved put in force, on a
//! CA that refuses any other (`ca::ceremony::control::check_policies`: at start, at SIGHUP and
//! offline).

use std::path::PathBuf;

use super::ceremonies::policies_digest;
use super::{Service, ServiceError};
use crate::audit::AuditEvent;
use crate::ca::CaError;
use crate::ca::ceremony::control;
use crate::policy::PolicySet;

impl Service {
    /// Copies the files of `from` (whose digest the officers approved) over the policy
    /// directory, files it had and `from` has not removed, checks that the directory now has
    /// the approved digest, records it approved and, in the daemon, puts the policies in force.
    pub(super) async fn change_policies(
        &self,
        from: PathBuf,
        digest: String,
    ) -> Result<serde_json::Value, ServiceError> {
        let (service, approved_digest) = (self.clone(), digest.clone());
        let (policies, files) = Self::blocking(move || {
            let digest = approved_digest;
            let dir = service.config.policies_dir.clone();
            let io = |path: &std::path::Path, e: std::io::Error| {
                ServiceError::Ca(CaError::Io(format!("{}: {e}", path.display())))
            };
            let files_of = |path: &std::path::Path| -> Result<Vec<std::ffi::OsString>, ServiceError> {
                let mut names = Vec::new();
                for entry in std::fs::read_dir(path).map_err(|e| io(path, e))? {
                    let entry = entry.map_err(|e| io(path, e))?;
                    if entry.path().is_file() {
                        names.push(entry.file_name());
                    }
                }
                names.sort();
                Ok(names)
            };
            let wanted = files_of(&from)?;
            for name in &wanted {
                let source = from.join(name);
                let bytes = std::fs::read(&source).map_err(|e| io(&source, e))?;
                crate::ca::ceremony::write_file(&dir.join(name), &bytes)?;
            }
            for name in files_of(&dir)? {
                if !wanted.contains(&name) {
                    let stale = dir.join(&name);
                    std::fs::remove_file(&stale).map_err(|e| io(&stale, e))?;
                }
            }
            let installed = policies_digest(&dir)?;
            if installed != digest {
                return Err(ServiceError::Ca(CaError::Io(format!(
                    "{} holds sha256 {installed} after the copy, not the approved {digest} (changed meanwhile?)",
                    dir.display()
                ))));
            }
            let policies = PolicySet::load_dir(&dir).map_err(|e| ServiceError::Invalid {
                field: "policies",
                detail: e.to_string(),
            })?;
            let files: Vec<String> = wanted
                .iter()
                .map(|n| n.to_string_lossy().into_owned())
                .collect();
            let (event_files, approved) = (files.clone(), digest.clone());
            service
                .store
                .commit(move |txn| -> Result<(), CaError> {
                    control::approve_policies(txn, &approved)?;
                    txn.audit(AuditEvent::PoliciesChanged {
                        sha256: approved,
                        files: event_files,
                    });
                    Ok(())
                })?;
            Ok((policies, files))
        })
        .await?;
        let names: Vec<String> = policies.names().map(str::to_owned).collect();
        if self.va().is_some() {
            self.ca()?.reload_policies(policies);
            tracing::info!(policies = ?names, "policies changed by a ceremony and in force");
        }
        Ok(serde_json::json!({
            "policies": names.join(", "),
            "files": files.join(", "),
            "sha256": digest,
        }))
    }
}
