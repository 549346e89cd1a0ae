//! `sceau serve`: the daemon.
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{CliError, Context, apply_module_env, clock};
use crate::ca::{self, CertificateAuthority};
use crate::config::Config;
use crate::hsm::Hsm;
use crate::http::admin::AdminService;
use crate::http::ra::{RaMetrics, RaService};
use crate::http::va::VaService;
use crate::policy::PolicySet;
use crate::ra::{RaSettings, RegistrationAuthority};
use crate::service::{RolloverHook, Service};
use crate::store::Store;
use crate::va::ValidationAuthority;

/// Listener addresses given on the command line, over the configuration's.
#[derive(Debug, Default, Clone)]
pub struct ListenOverrides {
    pub va: Option<SocketAddr>,
    pub ra: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
}

/// Files the daemon writes for the CLI in the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
pub const ADMIN_ADDRESS_FILE: &str = "admin.addr";

pub fn serve(config: &Config, overrides: ListenOverrides) -> Result<(), CliError> {
    apply_module_env(config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sceau")
        .build()
        .context(|| "starting the runtime".into())?;
    runtime.block_on(daemon(config, overrides))
}

/// The newest backup of the configured backup directory, to name it when the store is missing.
fn newest_backup(config: &Config) -> Option<std::path::PathBuf> {
    let dir = config.backup.as_ref()?.dir.clone();
    let mut backups: Vec<_> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join(crate::backup::MANIFEST).is_file())
        .collect();
    backups.sort();
    backups.pop()
}

async fn daemon(config: &Config, overrides: ListenOverrides) -> Result<(), CliError> {
    let policies = Arc::new(PolicySet::load_dir(&config.policies_dir)?);
    let hsm = Hsm::open(config.hsm.clone()).context(|| {
        format!(
            "{}: [hsm] token {:?}",
            config.path.display(),
            config.hsm.token_label
        )
    })?;
    let store = Store::open_existing(&config.store_dir()).map_err(|e| {
        CliError(format!(
            "{e}: `sceau init` creates a CA; `sceau restore --from DIR` brings one back from a backup{}",
            newest_backup(config)
                .map(|b| format!(" (the newest in [backup] dir: {})", b.display()))
                .unwrap_or_default()
        ))
    })?;
    let clock = clock();
    // Opening the CA checks its keys and revokes intents left by a crash.
    let ca = CertificateAuthority::open(
        store.clone(),
        &hsm,
        policies,
        config.urls.clone(),
        clock.clone(),
    )?;
    let state =
        ca::load_state(&store)?.ok_or_else(|| ca::CaError::NotInitialized(config.store_dir()))?;
    let (va, initial) =
        ValidationAuthority::open(config, store.clone(), &hsm, &state, clock.clone())
            .context(|| "starting the validation authority".into())?;
    let va = Arc::new(va);

    let va_address = overrides.va.unwrap_or(config.listen.va);
    let admin_address = overrides.admin.unwrap_or(config.listen.admin);
    // Plain HTTP with a bearer token: never beyond this host.
    if !admin_address.ip().is_loopback() {
        return Err(CliError(format!(
            "{}: [listen] admin = {admin_address}: the admin listener binds a loopback address only (it speaks plain HTTP)",
            config.path.display()
        )));
    }
    let va_listener = TcpListener::bind(va_address)
        .await
        .context(|| format!("binding the validation listener {va_address}"))?;
    let admin_listener = TcpListener::bind(admin_address)
        .await
        .context(|| format!("binding the admin listener {admin_address}"))?;
    let va_bound = va_listener.local_addr()?;
    let admin_bound = admin_listener.local_addr()?;
    let token = admin_token(&config.data_dir)?;
    crate::ca::ceremony::write_file(
        &config.data_dir.join(ADMIN_ADDRESS_FILE),
        admin_bound.to_string().as_bytes(),
    )?;

    let audit_watch = Arc::new(crate::audit::checkpoint::ChainWatch::default());
    let publisher = config
        .nats
        .as_ref()
        .map(|_| Arc::new(crate::va::publish::PublisherMetrics::default()));
    let health = {
        let hsm = hsm.clone();
        let va = va.clone();
        let audit_watch = audit_watch.clone();
        let publisher = publisher.clone();
        let lag_alert = config.nats.as_ref().map_or(0, |n| n.lag_alert_seconds);
        Arc::new(move || {
            let status = hsm.status();
            let crls: Vec<_> = va
                .crls
                .all_latest()
                .into_iter()
                .map(|c| serde_json::json!({"name": c.name, "number": c.number, "this_update": c.this_update, "next_update": c.next_update}))
                .collect();
            let broken = audit_watch.broken();
            // Responder nodes fall behind when what changed waits to be published.
            let engine = publisher.as_ref().map(|m| {
                let lag = m.lag_seconds(va.now());
                (
                    lag <= lag_alert,
                    serde_json::json!({
                        "connected": m.connected.load(std::sync::atomic::Ordering::Relaxed) == 1,
                        "outbox": m.depth.load(std::sync::atomic::Ordering::Relaxed),
                        "lag_seconds": lag,
                    }),
                )
            });
            let publishing = engine.as_ref().is_none_or(|(ok, _)| *ok);
            let healthy = status.available && broken.is_none() && publishing;
            let audit = match &broken {
                Some(why) => serde_json::json!({"chain": "broken", "why": why}),
                None => {
                    serde_json::json!({"chain": "ok", "last_checkpoint": audit_watch.last_signed().map(|h| h.seq)})
                }
            };
            let body = serde_json::json!({
                "status": if healthy { "ok" } else { "degraded" },
                "hsm": status,
                "audit": audit,
                "engine": engine.map(|(_, body)| body),
                "ocsp": {"certificates": va.responder.entries()},
                "crls": crls,
            });
            (healthy, body)
        })
    };
    let va_service = Arc::new(VaService {
        va: va.clone(),
        cache_max_age: config.ocsp.cache_max_age_seconds,
        cache_control: crate::http::va::cache_control_header(config.ocsp.cache_max_age_seconds),
        health: health.clone(),
        metrics_text: None,
    });
    let ra_metrics = config.ra.as_ref().map(|_| Arc::new(RaMetrics::default()));
    let ra = match &config.ra {
        Some(ra_config) => Some(
            registration_authority(
                config,
                ra_config,
                overrides.ra.unwrap_or(config.listen.ra),
                (&ca, &state, &va),
                clock.clone(),
                ra_metrics.clone().unwrap_or_default(),
            )
            .await?,
        ),
        None => None,
    };
    let expiring = Arc::new(crate::ca::expiry::ExpiringGauge::default());
    let service = Service::daemon(
        config.clone(),
        store.clone(),
        hsm.clone(),
        ca.clone(),
        va.clone(),
        audit_watch.clone(),
        publisher.clone(),
        ra.as_ref().map(|parts| parts.on_rollover.clone()),
    );
    let admin_service = Arc::new(AdminService {
        service: service.clone(),
        va: va.clone(),
        ra_metrics: ra_metrics.clone(),
        token,
        health,
        audit_watch: audit_watch.clone(),
        publisher: publisher.clone(),
        expiring: expiring.clone(),
    });

    let shutdown = CancellationToken::new();
    let mut background = va.spawn_background(initial, shutdown.clone());
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
    background.spawn(checkpoints(
        store.clone(),
        hsm.clone(),
        config.keys.audit.clone(),
        audit_watch,
        shutdown.clone(),
    ));
    let mut listeners = tokio::task::JoinSet::new();
    listeners.spawn(crate::http::serve_validation(
        va_listener,
        hyper::service::service_fn(move |request| va_service.clone().handle(request)),
        shutdown.clone(),
    ));
    listeners.spawn(crate::http::serve(
        admin_listener,
        hyper::service::service_fn(move |request| admin_service.clone().handle(request)),
        shutdown.clone(),
    ));
    let mut ra_upkeep = None;
    let ra_bound = match ra {
        Some(RaParts {
            listener,
            service,
            tls,
            ..
        }) => {
            let bound = listener.local_addr()?;
            ra_upkeep = Some(service.clone());
            background.spawn(ra_housekeeping(service.clone(), shutdown.clone()));
            listeners.spawn(crate::http::serve_tls(
                listener,
                tls,
                move |peer| {
                    let service = service.clone();
                    hyper::service::service_fn(move |request| {
                        service.clone().handle(peer.clone(), request)
                    })
                },
                shutdown.clone(),
            ));
            Some(bound)
        }
        None => None,
    };
    let ra_text = ra_bound.map_or_else(|| "off".to_owned(), |a| a.to_string());
    tracing::info!(va = %va_bound, ra = %ra_text, admin = %admin_bound, "sceau is serving");
    // The ready line, on standard output, for supervisors and tests.
    println!("sceau ready: va={va_bound} ra={ra_text} admin={admin_bound}");
    // systemd (Type=notify): the listeners are bound and the responses in memory.
    sd_notify(&format!(
        "READY=1\nSTATUS=serving: va={va_bound} ra={ra_text} admin={admin_bound}"
    ));

    let mut signals = Signals::new()?;
    while let Signal::Reload = signals.next().await {
        sd_notify("RELOADING=1");
        match PolicySet::load_dir(&config.policies_dir) {
            Ok(policies) => {
                let names: Vec<String> = policies.names().map(str::to_owned).collect();
                ca.reload_policies(policies);
                tracing::info!(policies = ?names, "policies reloaded");
            }
            Err(error) => {
                tracing::error!(%error, "policies not reloaded: the ones in force stay");
            }
        }
        sd_notify("READY=1");
    }
    sd_notify("STOPPING=1");
    tracing::info!("shutting down: draining in-flight requests");
    shutdown.cancel();
    while listeners.join_next().await.is_some() {}
    // Repeated refusals still being counted are written before the store closes.
    if let Some(service) = ra_upkeep {
        service.ra.flush_refusals(true).await;
    }
    background.abort_all();
    while background.join_next().await.is_some() {}
    drop(ca);
    tracing::info!("stopped");
    Ok(())
}

/// The RA: its TLS configuration (client certificates from the issuing CAs), its listener and
/// its service.
async fn registration_authority(
    config: &Config,
    ra_config: &crate::config::RaConfig,
    address: SocketAddr,
    (ca, state, va): (
        &CertificateAuthority,
        &ca::CaState,
        &Arc<ValidationAuthority>,
    ),
    clock: Arc<dyn crate::x509::time::Clock>,
    metrics: Arc<RaMetrics>,
) -> Result<RaParts, CliError> {
    let (tls, trust) = crate::http::ra::tls_config(
        &ra_config.tls_certificate,
        &ra_config.tls_private_key,
        &operator_ca_certificates(state),
    )
    .map_err(|e| CliError(format!("{}: [ra] {e}", config.path.display())))?;
    let ra = RegistrationAuthority::new(
        ca.clone(),
        state,
        Arc::new(crate::service::Effects::of(va.clone())),
        clock,
        RaSettings {
            time_window_seconds: ra_config.time_window_seconds,
            authentication_policy: ra_config.authentication_policy.clone(),
            signature_policy: ra_config.signature_policy.clone(),
        },
    )
    .context(|| "starting the registration authority".into())?;
    let listener = TcpListener::bind(address)
        .await
        .context(|| format!("binding the RA listener {address}"))?;
    let service = Arc::new(RaService {
        ra: Arc::new(ra),
        limiter: crate::http::ra::rate_limiter(ra_config.requests_per_minute, ra_config.burst),
        metrics,
    });
    let on_rollover: RolloverHook = {
        let (ra, trust) = (service.ra.clone(), trust.clone());
        Arc::new(move |state: &ca::CaState| {
            let reloaded = ra
                .reload_operator_cas(state)
                .map_err(|e| e.to_string())
                .and_then(|()| trust.reload(&operator_ca_certificates(state)));
            match reloaded {
                Ok(()) => tracing::info!("the RA trusts operator cards of every issuing CA"),
                Err(error) => {
                    tracing::error!(%error, "the RA could not trust the new issuing CA: restart the daemon")
                }
            }
        })
    };
    Ok(RaParts {
        listener,
        service,
        tls,
        on_rollover,
    })
}

/// Every ten seconds: the counts of repeated refusals whose window ended go to the audit log,
/// and the rate limiter forgets the clients it has not seen for a while (its map would
/// otherwise grow with every certificate that ever connected).
async fn ra_housekeeping(service: Arc<RaService>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(10)) => {}
        }
        service.ra.flush_refusals(false).await;
        service.limiter.retain_recent();
        service.limiter.shrink_to_fit();
    }
}

/// The RA listener, ready to serve.
struct RaParts {
    listener: TcpListener,
    service: Arc<RaService>,
    tls: Arc<rustls::ServerConfig>,
    on_rollover: RolloverHook,
}

/// Operators carry agent cards: their certificates come from the issuing CAs.
fn operator_ca_certificates(state: &ca::CaState) -> Vec<Vec<u8>> {
    state
        .issuing
        .iter()
        .map(|c| c.certificate.clone())
        .collect()
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
            if first {
                watch.checkpoint_or_verify(&store, &hsm, &label)
            } else {
                watch.checkpoint(&store, &hsm, &label)
            }
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

/// What a signal asks of the daemon.
enum Signal {
    /// SIGTERM or SIGINT: drain and stop.
    Stop,
    /// SIGHUP: reload the policies.
    Reload,
}

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Self, CliError> {
        use tokio::signal::unix::{SignalKind, signal};
        let listen =
            |kind: SignalKind| signal(kind).context(|| "installing the signal handlers".into());
        Ok(Self {
            term: listen(SignalKind::terminate())?,
            int: listen(SignalKind::interrupt())?,
            hup: listen(SignalKind::hangup())?,
        })
    }

    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Stop,
            _ = self.int.recv() => Signal::Stop,
            _ = self.hup.recv() => Signal::Reload,
        }
    }
}

/// systemd's readiness protocol (sd_notify(3)): one datagram to `$NOTIFY_SOCKET`, when set.
fn sd_notify(message: &str) {
    use std::os::unix::net::UnixDatagram;
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = UnixDatagram::unbound().and_then(|socket| {
        let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
        match bytes.strip_prefix(b"@") {
            // An abstract socket (Linux).
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                socket.send_to_addr(message.as_bytes(), &address)
            }
            None => socket.send_to(message.as_bytes(), &path),
        }
    });
    if let Err(error) = sent {
        tracing::warn!(%error, "cannot notify systemd");
    }
}

/// The bearer token of the admin API, made once (mode 0600).
fn admin_token(data_dir: &Path) -> Result<String, CliError> {
    // A new token at every start: a token captured while the daemon was stopped (by a process
    // that bound the admin address) is worthless once it runs again.
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CliError("the system random number generator failed".into()))?;
    let token = hex::encode(bytes);
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let temporary = data_dir.join(format!("{ADMIN_TOKEN_FILE}.new"));
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(&temporary)
        .context(|| format!("writing {}", temporary.display()))?;
    file.write_all(token.as_bytes())?;
    file.sync_all()?;
    // The mode is set whatever the umask or an earlier file's mode.
    std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o600))?;
    crate::durable::rename(&temporary, &path).context(|| format!("writing {}", path.display()))?;
    Ok(token)
}
