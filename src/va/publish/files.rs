//! The files bucket: CRLs, CA certificates and response tails, as objects.

use async_nats::jetstream;

use crate::va::ValidationAuthority;

/// What publishing one outbox entry came to.
pub(super) enum Outcome {
    Published,
    /// What the entry names is not there yet (a CRL committed but not yet in place): try again
    /// shortly, keeping the order.
    NotYet,
}

/// Puts the file an outbox entry names (`crl.<name>.<number>`, `ca`), as it is now.
pub(super) async fn publish_file_entry(
    va: &ValidationAuthority,
    files: &jetstream::object_store::ObjectStore,
    name: &str,
) -> Result<Outcome, String> {
    if let Some(rest) = name.strip_prefix("crl.") {
        let Some((crl, number)) = rest
            .rsplit_once('.')
            .and_then(|(crl, n)| Some((crl, n.parse::<u64>().ok()?)))
        else {
            return Ok(Outcome::Published);
        };
        return match va.crls.latest(crl) {
            Some(latest) if latest.number >= number => {
                publish_files(va, files, Some(crl)).await?;
                Ok(Outcome::Published)
            }
            // A CA this daemon no longer publishes for (its configuration changed): waiting
            // would stall every entry behind it.
            _ if !va.crls.publishes(crl) => {
                tracing::warn!(name, "publisher: a CRL of no CA published here; dropped");
                Ok(Outcome::Published)
            }
            // Committed, not yet renamed into place (or not yet read back after a restart).
            _ => Ok(Outcome::NotYet),
        };
    }
    if name == crate::store::CA_CHANGE {
        publish_files(va, files, Some("")).await?;
    }
    Ok(Outcome::Published)
}

/// Puts the latest CRL named `only` (`Some("")`: the CA certificates only; `None`: every CRL
/// and every CA certificate).
pub(super) async fn publish_files(
    va: &ValidationAuthority,
    files: &jetstream::object_store::ObjectStore,
    only: Option<&str>,
) -> Result<(), String> {
    for crl in va.crls.all_latest() {
        if only.is_some_and(|name| name != crl.name) {
            continue;
        }
        put_file(files, &format!("crl/{}", crl.name), &crl.der).await?;
    }
    if only.is_none_or(str::is_empty) {
        for (name, der) in va.all_ca_certificates().iter() {
            put_file(files, &format!("ca/{name}"), der).await?;
        }
    }
    Ok(())
}

/// Puts `bytes` as the object `name` (a CRL, a CA certificate: few, and put again on every
/// connection, so that one the engine lost or damaged is repaired).
pub(super) async fn put_file(
    files: &jetstream::object_store::ObjectStore,
    name: &str,
    bytes: &[u8],
) -> Result<(), String> {
    files
        .put(name, &mut &bytes[..])
        .await
        .map(drop)
        .map_err(|e| format!("{name}: {e}"))
}

/// Puts a response tail (`tail/<id>`, named after its content) unless the files bucket holds
/// it already: replacing an object purges its chunks, and a node reading it at that moment
/// would wait for chunks that are gone; a full publication would otherwise rewrite it.
pub(super) async fn put_tail(
    files: &jetstream::object_store::ObjectStore,
    id: &str,
    tail: &[u8],
) -> Result<(), String> {
    use base64::Engine as _;
    let name = format!("tail/{id}");
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, tail);
    // As the object store writes it.
    let digest = format!(
        "SHA-256={}",
        base64::engine::general_purpose::URL_SAFE.encode(digest.as_ref())
    );
    if let Ok(held) = files.info(&name).await
        && !held.deleted
        && held.size == tail.len()
        && held.digest.as_deref() == Some(digest.as_str())
    {
        return Ok(());
    }
    put_file(files, &name, tail).await
}
