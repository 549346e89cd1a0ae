//! The daemon's timers and background tasks: the HSM watch, revocations that fall due,
//! scheduled backups, the expiry gauge, responder renewal, the engine publisher and audit
//! checkpoints. Each one stops at shutdown.
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::ca::CertificateAuthority;
use crate::config::Config;
use crate::hsm::Hsm;
use crate::service::Service;
use crate::store::Store;
use crate::va::ValidationAuthority;

/// The daemon's timers and background tasks: the HSM watch, due revocations, scheduled
/// backups, the expiry gauge, responder renewal, the engine publisher, audit checkpoints.
pub(super) fn spawn_timers(
    background: &mut tokio::task::JoinSet<()>,
    config: &Config,
    (store, hsm, ca, va, clock): (
        &Store,
        &Hsm,
        &CertificateAuthority,
        &Arc<ValidationAuthority>,
        &Arc<dyn crate::x509::time::Clock>,
    ),
    (service, publisher, audit_watch, expiring): (
        &Service,
        &Option<Arc<crate::va::publish::PublisherMetrics>>,
        Arc<crate::audit::checkpoint::ChainWatch>,
        Arc<crate::ca::expiry::ExpiringGauge>,
    ),
    shutdown: &CancellationToken,
) {
    background.spawn(watch_hsm(hsm.clone(), ca.clone(), shutdown.clone()));
    background.spawn(revoke_when_due(service.clone(), shutdown.clone()));
    if let Some(settings) = &config.backup {
        background.spawn(scheduled_backups(
            config.clone(),
            settings.clone(),
            store.clone(),
            clock.clone(),
            shutdown.clone(),
        ));
    }
    background.spawn(count_expiring(
        store.clone(),
        clock.clone(),
        expiring,
        shutdown.clone(),
    ));
    background.spawn(renew_responder_when_due(service.clone(), shutdown.clone()));
    if let (Some(settings), Some(metrics)) = (&config.nats, &publisher) {
        background.spawn(crate::va::publish::run(
            store.clone(),
            va.clone(),
            settings.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));
    }
    if let Some(settings) = &config.notices {
        background.spawn(crate::notices::deliver::run(
            store.clone(),
            settings.clone(),
            clock.clone(),
            shutdown.clone(),
        ));
    }
    background.spawn(checkpoints(
        store.clone(),
        hsm.clone(),
        config.keys.audit.clone(),
        audit_watch,
        shutdown.clone(),
    ));
}

/// `[backup]`: a checked backup every `every_hours` (the first one an interval after start),
/// into `dir/<UTC time>`, keeping the `keep` newest.
async fn scheduled_backups(
    config: crate::config::Config,
    settings: crate::config::BackupConfig,
    store: Store,
    clock: Arc<dyn crate::x509::time::Clock>,
    shutdown: CancellationToken,
) {
    let every = crate::failpoint::backup_interval(std::time::Duration::from_secs(
        settings.every_hours * 3600,
    ));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (config, settings, store, now) =
            (config.clone(), settings.clone(), store.clone(), clock.now());
        let made = tokio::task::spawn_blocking(move || {
            let name = now.to_string().replace(':', "");
            let out = settings.dir.join(name);
            std::fs::create_dir_all(&settings.dir).map_err(|e| {
                crate::backup::BackupError(format!("{}: {e}", settings.dir.display()))
            })?;
            let manifest =
                crate::backup::create(&store, &config.certs_dir(), &config.publish_dir, &out, now)?;
            let removed = crate::backup::prune(&settings.dir, settings.keep)?;
            Ok::<_, crate::backup::BackupError>((out, manifest, removed))
        })
        .await;
        match made {
            Ok(Ok((out, manifest, removed))) => tracing::info!(
                backup = %out.display(),
                audit_head = manifest.audit_head.seq,
                removed = removed.len(),
                "scheduled backup written and checked"
            ),
            Ok(Err(error)) => tracing::error!(%error, "scheduled backup failed"),
            Err(_) => return,
        }
    }
}

/// Counts the certificates ending within 30, 60 and 90 days, at start and every minute.
async fn count_expiring(
    store: Store,
    clock: Arc<dyn crate::x509::time::Clock>,
    gauge: Arc<crate::ca::expiry::ExpiringGauge>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (store, now) = (store.clone(), clock.now());
        match tokio::task::spawn_blocking(move || crate::ca::expiry::count_expiring(&store, now))
            .await
        {
            Ok(Ok(counts)) => gauge.set(counts),
            Ok(Err(error)) => {
                tracing::error!(%error, "could not count the certificates ending soon")
            }
            Err(_) => return,
        }
    }
}

/// Carries out scheduled revocations when their time comes (looked at five times a second, so
/// within a second of it), then makes OCSP say so and the CRL follow, as an immediate
/// revocation does.
async fn revoke_when_due(service: Service, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match service.revoke_due().await {
            Ok(_) => {}
            Err(crate::service::ServiceError::ShuttingDown) => return,
            Err(error) => tracing::error!(%error, "scheduled revocations could not run; retrying"),
        }
    }
}

/// While the token is unavailable, tries it every five seconds, so that the daemon recovers (and
/// health says so) when the token is back, even if no request needs it. A token that answers
/// without the current issuing CA's key is marked unavailable again: the next try resets the
/// PKCS#11 module, which may have kept a stale view of a token that went away.
async fn watch_hsm(hsm: Hsm, ca: CertificateAuthority, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
        }
        if hsm.status().available {
            continue;
        }
        let label = ca.issuer().key.label().to_owned();
        let probe = hsm.clone();
        let key = label.clone();
        match tokio::task::spawn_blocking(move || probe.has_key(&key)).await {
            Ok(Ok(true)) => tracing::info!("HSM token available again"),
            Ok(Ok(false)) => {
                tracing::warn!(
                    label,
                    "HSM token back, but without the CA key; resetting the module"
                );
                hsm.mark_unavailable(&format!("the token does not hold the CA key {label:?}"));
            }
            Ok(Err(error)) => tracing::debug!(%error, "HSM token still unavailable"),
            Err(_) => return,
        }
    }
}

/// Renews the delegated OCSP responders once two thirds of their certificates' life have
/// passed (RFC 9919: short-lived, renewed regularly); checked at start and every hour.
async fn renew_responder_when_due(service: Service, shutdown: CancellationToken) {
    let mut wait = std::time::Duration::from_secs(5);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = std::time::Duration::from_secs(3600);
        let token_up = service
            .token_status()
            .is_some_and(|status| status.available);
        if !token_up || !service.responders_due() {
            continue;
        }
        tracing::info!("an OCSP responder certificate is past two thirds of its life: renewing it");
        match service.renew_responders(false).await {
            Ok(renewed) => tracing::info!(renewed = ?renewed.renewed, "OCSP responder renewed"),
            Err(error) => {
                tracing::error!(%error, "OCSP responder renewal failed; retrying in a minute");
                wait = std::time::Duration::from_secs(60);
            }
        }
    }
}

/// Checks the audit chain and signs a checkpoint at start, then every five minutes when the log
/// has grown; a broken chain is reported (log, health, metric) and never vouched for.
async fn checkpoints(
    store: Store,
    hsm: Hsm,
    label: String,
    watch: Arc<crate::audit::checkpoint::ChainWatch>,
    shutdown: CancellationToken,
) {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(300);
    let mut wait = std::time::Duration::ZERO;
    let mut at_start = true;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = EVERY;
        let (store, hsm, label, watch) = (store.clone(), hsm.clone(), label.clone(), watch.clone());
        let first = std::mem::replace(&mut at_start, false);
        let checked = tokio::task::spawn_blocking(move || {
            use crate::audit::checkpoint::{write, write_or_verify};
            watch.record(if first {
                write_or_verify(&store, &hsm, &label)
            } else {
                write(&store, &hsm, &label)
            })
        });
        match checked.await {
            // A start-up check that could not run (the HSM away) runs again in a minute.
            Ok(Err(crate::audit::checkpoint::CheckpointError::Hsm(_))) if first => {
                at_start = true;
                wait = std::time::Duration::from_secs(60);
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}
