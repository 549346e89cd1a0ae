//! The CA's housekeeping actions: back up, sign an audit checkpoint, publish the CRLs, publish
//! every status to the nodes, read the CA state.

use super::wire::{BackupBody, Checkpointed, FullPublication};
use super::{Service, ServiceError};

impl Service {
    /// A checked backup into `out` (an absolute path that must not exist).
    /// On a CA with security officers, only as a ceremony.
    pub async fn backup(&self, body: BackupBody) -> Result<crate::backup::Manifest, ServiceError> {
        self.outside_ceremony("a backup")?;
        self.backup_approved(body).await
    }

    /// [`Service::backup`], authorised.
    pub(super) async fn backup_approved(
        &self,
        body: BackupBody,
    ) -> Result<crate::backup::Manifest, ServiceError> {
        if !body.out.is_absolute() {
            return Err(ServiceError::Invalid {
                field: "out",
                detail: "give an absolute path".into(),
            });
        }
        let service = self.clone();
        Self::blocking(move || {
            crate::backup::create(
                &service.store,
                &service.config.certs_dir(),
                &service.config.publish_dir,
                &body.out,
                service.now(),
            )
            .map_err(|e| ServiceError::Backup(e.to_string()))
        })
        .await
    }

    /// Checks the audit chain and signs a checkpoint at its end (none when the log is empty or
    /// already ends with one).
    pub async fn checkpoint(&self) -> Result<Checkpointed, ServiceError> {
        let service = self.clone();
        let hsm = self.hsm()?.clone();
        Self::blocking(move || {
            let label = &service.config.keys.audit;
            let outcome = crate::audit::checkpoint::write_or_verify(&service.store, &hsm, label);
            let signed = match &service.daemon {
                // The daemon's watch also remembers the chain as this checkpoint found it.
                Some(daemon) => daemon.audit_watch.record(outcome),
                None => outcome,
            }
            .map_err(|e| ServiceError::Checkpoint(e.to_string()))?;
            Ok(Checkpointed::from_head(signed))
        })
        .await
    }

    /// Records that an auditor's bundle of `from`..`to` is exported, then signs a checkpoint
    /// that vouches for that record (src/audit/bundle.rs).
    pub async fn mark_bundle(
        &self,
        body: super::wire::BundleMarkBody,
    ) -> Result<Checkpointed, ServiceError> {
        if body.to < body.from {
            return Err(ServiceError::Invalid {
                field: "to",
                detail: "the period ends before it starts".into(),
            });
        }
        let store = self.store.clone();
        Self::blocking(move || {
            store.commit(move |txn| {
                txn.audit(crate::audit::AuditEvent::AuditBundleExported {
                    from: body.from,
                    to: body.to,
                });
                Ok::<_, crate::store::StoreError>(())
            })?;
            Ok(())
        })
        .await?;
        self.checkpoint().await
    }

    /// Publishes every CRL now.
    pub async fn publish_crls(&self) -> Result<Vec<crate::va::crl::PublishedCrl>, ServiceError> {
        let service = self.clone();
        Self::blocking(move || {
            let now = service.now();
            match service.va() {
                Some(va) => va
                    .crls
                    .publish_all(now)
                    .map_err(|e| ServiceError::Crl(e.to_string())),
                None => {
                    let state = service.state()?;
                    let publisher = crate::va::crl_publisher(
                        &service.config,
                        service.store.clone(),
                        service.hsm()?,
                        &state,
                    )
                    .map_err(|e| ServiceError::Crl(format!("preparing the CRLs: {e}")))?;
                    publisher
                        .publish_all(now)
                        .map_err(|e| ServiceError::Crl(format!("publishing the CRLs: {e}")))
                }
            }
        })
        .await
    }

    /// Asks the publisher to put every status in the engine again, then the manifest that
    /// tells responder nodes the bucket is whole (it runs in the background).
    pub fn publish_all(&self) -> Result<FullPublication, ServiceError> {
        let publisher = self
            .daemon
            .as_ref()
            .and_then(|d| d.publisher.as_ref())
            .ok_or(ServiceError::NoEngine)?;
        publisher.request_full();
        Ok(FullPublication {
            full_publication: "requested".into(),
            statuses: self.va().map_or(0, |va| va.responder.entries()),
        })
    }

    /// The CA certificates (no secret in there).
    pub async fn ca_state(&self) -> Result<crate::ca::CaState, ServiceError> {
        let service = self.clone();
        Self::blocking(move || service.state()).await
    }
}
