//! What the engine holds, read back for a restore.

use async_nats::jetstream;
use serde::Serialize;

use super::{StatusValue, connect, parse_status_key};
use crate::config::NatsConfig;
use crate::store::CertKey;
use crate::x509::Timestamp;

/// A revocation as the outside world saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PublishedRevocation {
    pub revoked_at: Timestamp,
    pub reason: crate::x509::revocation::RevocationReason,
    pub invalidity_date: Option<Timestamp>,
}

/// What the engine of the responder nodes holds, read at restore time.
#[derive(Debug, Default)]
pub struct EngineView {
    /// Every status published: (certificate, its revocation if revoked).
    pub statuses: Vec<(CertKey, Option<PublishedRevocation>)>,
    /// The CRLs published there (DER).
    pub crls: Vec<Vec<u8>>,
}

/// Everything the engine holds, for a restore (`sceau restore`): every published status and
/// every published CRL. Reads only: the buckets must exist.
pub async fn read_engine(settings: &NatsConfig) -> Result<EngineView, String> {
    use futures_util::TryStreamExt;
    use tokio::io::AsyncReadExt;
    let client = connect(settings).await?;
    let js = jetstream::new(client);
    let status = js
        .get_key_value(&settings.status_bucket)
        .await
        .map_err(|e| format!("bucket {}: {e}", settings.status_bucket))?;
    let mut view = EngineView::default();
    let keys: Vec<String> = status
        .keys()
        .await
        .map_err(|e| format!("bucket {}: {e}", settings.status_bucket))?
        .try_collect()
        .await
        .map_err(|e| format!("bucket {}: {e}", settings.status_bucket))?;
    for name in keys {
        let Some(key) = parse_status_key(&name) else {
            continue;
        };
        let Some(bytes) = status
            .get(&name)
            .await
            .map_err(|e| format!("{}: {e}", settings.status_bucket))?
        else {
            continue;
        };
        // Fail closed: a status not understood could be a revocation.
        let value = serde_json::from_slice::<StatusValue>(&bytes)
            .map_err(|e| format!("{}/{name}: {e}", settings.status_bucket))?;
        let revoked = match (value.status.as_str(), value.revoked_at) {
            ("revoked", Some(at)) => Some(PublishedRevocation {
                revoked_at: Timestamp::from_unix_seconds(at),
                reason: crate::x509::revocation::RevocationReason::from_code(value.reason)
                    .unwrap_or(crate::x509::revocation::RevocationReason::Unspecified),
                invalidity_date: value.invalidity_date.map(Timestamp::from_unix_seconds),
            }),
            _ => None,
        };
        view.statuses.push((key, revoked));
    }
    {
        // Its CRL numbers must not be reused: no guessing when it cannot be read.
        let files = js
            .get_object_store(&settings.files_bucket)
            .await
            .map_err(|e| format!("bucket {}: {e}", settings.files_bucket))?;
        let names: Vec<String> = files
            .list()
            .await
            .map_err(|e| format!("bucket {}: {e}", settings.files_bucket))?
            .map_ok(|info| info.name)
            .try_collect()
            .await
            .map_err(|e| format!("bucket {}: {e}", settings.files_bucket))?;
        for name in names.into_iter().filter(|n| n.starts_with("crl/")) {
            let mut object = files
                .get(&name)
                .await
                .map_err(|e| format!("{}/{name}: {e}", settings.files_bucket))?;
            let mut der = Vec::new();
            object
                .read_to_end(&mut der)
                .await
                .map_err(|e| format!("{}/{name}: {e}", settings.files_bucket))?;
            view.crls.push(der);
        }
    }
    Ok(view)
}
