//! `sceau serve`: the daemon.
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

mod ra_listener;
mod timers;

use super::{CliError, Context, Failure, apply_module_env, clock};
use crate::ca::{self, CertificateAuthority};
use crate::config::Config;
use crate::hsm::Hsm;
use crate::http::admin::AdminService;
use crate::http::ra::RaMetrics;
use crate::http::va::VaService;
use crate::policy::PolicySet;
use crate::service::Service;
use crate::store::Store;
use crate::va::ValidationAuthority;
use ra_listener::registration_authority;
use timers::spawn_timers;

/// What `/healthz` answers: healthy or not, and the report.
type HealthReport = Arc<dyn Fn() -> (bool, serde_json::Value) + Send + Sync>;

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

/// What the daemon opens before it listens.
struct Opened {
    hsm: Hsm,
    store: Store,
    clock: Arc<dyn crate::x509::time::Clock>,
    ca: CertificateAuthority,
    state: crate::ca::CaState,
}

/// Opens the store of an initialised CA (named in the error: `sceau init`, or the newest
/// backup to restore).
fn open_store(config: &Config) -> Result<Store, CliError> {
    Store::open_existing(&config.store_dir()).map_err(|e| {
        CliError::new(Failure::Config, format!(
            "{e}: `sceau init` creates a CA; `sceau restore --from DIR` brings one back from a backup{}",
            newest_backup(config)
                .map(|b| format!(" (the newest in [backup] dir: {})", b.display()))
                .unwrap_or_default()
        ))
    })
}

/// Opens the HSM and the CA: its keys checked, intents a crash left revoked.
fn open_ca(
    config: &Config,
    store: Store,
    clock: Arc<dyn crate::x509::time::Clock>,
) -> Result<Opened, CliError> {
    let hsm = Hsm::open(config.hsm.clone()).context(|| {
        format!(
            "{}: [hsm] token {:?}",
            config.path.display(),
            config.hsm.token_label
        )
    })?;
    open_ca_on(config, hsm, store, clock)
}

/// [`open_ca`] on a token already open (the sealed daemon opened it to try the PIN).
fn open_ca_on(
    config: &Config,
    hsm: Hsm,
    store: Store,
    clock: Arc<dyn crate::x509::time::Clock>,
) -> Result<Opened, CliError> {
    crate::ca::ceremony::control::check_policies(&store, &config.policies_dir)?;
    let policies = Arc::new(PolicySet::load_dir(&config.policies_dir)?);
    let ca = CertificateAuthority::open(
        store.clone(),
        &hsm,
        policies,
        config.urls.clone(),
        clock.clone(),
    )?;
    let state =
        ca::load_state(&store)?.ok_or_else(|| ca::CaError::NotInitialized(config.store_dir()))?;
    Ok(Opened {
        hsm,
        store,
        clock,
        ca,
        state,
    })
}

/// How an attempt to open the CA with the PIN the officers' shares made ended.
enum Opening {
    Opened(Box<Opened>),
    /// The token refused the PIN.
    WrongPin(String),
    /// Something else (the token away, the policies not approved...): the PIN is kept.
    Failed(String),
}

/// What the validation listener serves: the CA's validation authority, or, while the daemon is
/// sealed, the responses signed before. Switched once, when the officers unseal it.
type VaSwitch = Arc<std::sync::RwLock<Arc<VaService>>>;

/// What the administration listener serves: the unseal intake, then the admin API.
#[derive(Clone)]
enum AdminPhase {
    Sealed(Arc<crate::http::sealed::SealedAdmin>),
    Open(Arc<AdminService>),
}

async fn daemon(config: &Config, overrides: ListenOverrides) -> Result<(), CliError> {
    let mut signals = Signals::new()?;
    let store = open_store(config)?;
    let clock = clock();
    let sealed =
        crate::service::unseal::Sealed::new(config, store.clone(), clock.clone())?.map(Arc::new);
    let (va_listener, admin_listener) = bind_local_listeners(config, &overrides).await?;
    let va_bound = va_listener.local_addr()?;
    let admin_bound = admin_listener.local_addr()?;
    let token = admin_token(&config.data_dir)?;
    crate::ca::ceremony::write_file(
        &config.data_dir.join(ADMIN_ADDRESS_FILE),
        admin_bound.to_string().as_bytes(),
    )?;
    let shutdown = CancellationToken::new();
    let mut listeners = tokio::task::JoinSet::new();
    let admin_phase = Arc::new(std::sync::RwLock::new(None::<AdminPhase>));
    // Sealed: serve the responses signed before and take the officers' shares until the PIN is
    // whole; then the CA opens with it, and the listeners switch over without closing.
    let (opened, va_listening) = match &sealed {
        Some(sealed) => {
            let state = ca::load_state(&store)?
                .ok_or_else(|| ca::CaError::NotInitialized(config.store_dir()))?;
            let sealed_va =
                crate::va::sealed::SealedVa::open(config, store.clone(), &state, clock.clone())
                    .context(|| "serving the pre-signed responses while sealed".into())?;
            let sealed_health: HealthReport =
                Arc::new(|| (false, serde_json::json!({"status": "sealed"})));
            let switch: VaSwitch = Arc::new(std::sync::RwLock::new(Arc::new(VaService {
                va: Arc::new(sealed_va),
                cache_max_age: config.ocsp.cache_max_age_seconds,
                cache_control: crate::http::va::cache_control_header(
                    config.ocsp.cache_max_age_seconds,
                ),
                health: sealed_health,
                metrics_text: None,
            })));
            let serving = switch.clone();
            listeners.spawn(crate::http::serve_validation(
                va_listener,
                hyper::service::service_fn(move |request| {
                    let current = serving.read().unwrap_or_else(|p| p.into_inner()).clone();
                    current.handle(request)
                }),
                shutdown.clone(),
            ));
            *admin_phase.write().unwrap_or_else(|p| p.into_inner()) = Some(AdminPhase::Sealed(
                Arc::new(crate::http::sealed::SealedAdmin {
                    sealed: sealed.clone(),
                    token: token.clone(),
                }),
            ));
            spawn_admin(&mut listeners, admin_listener, &admin_phase, &shutdown);
            tracing::info!(va = %va_bound, admin = %admin_bound, "sealed: waiting for the officers' shares (sceau unseal)");
            say(&format!("sceau sealed: va={va_bound} admin={admin_bound}"));
            sd_notify(&format!(
                "READY=1\nSTATUS=sealed: OCSP from pre-signed responses, waiting for sceau unseal (va={va_bound})"
            ));
            let opened = loop {
                tokio::select! {
                    () = sealed.unsealed() => {}
                    signal = signals.next() => {
                        if let Signal::Stop = signal {
                            shutdown.cancel();
                            while listeners.join_next().await.is_some() {}
                            return Ok(());
                        }
                        continue;
                    }
                }
                let (config_copy, store_copy, clock_copy) =
                    (config.clone(), store.clone(), clock.clone());
                let attempt = tokio::task::spawn_blocking(move || {
                    // The PIN first, alone: a refusal spends one of the token's attempts, and
                    // must not be repeated with the same shares.
                    let hsm = match Hsm::open(config_copy.hsm.clone()) {
                        Err(
                            error @ (crate::hsm::HsmError::PinIncorrect { .. }
                            | crate::hsm::HsmError::PinLocked),
                        ) => return Opening::WrongPin(error.to_string()),
                        Err(error) => return Opening::Failed(error.to_string()),
                        Ok(hsm) => hsm,
                    };
                    match open_ca_on(&config_copy, hsm, store_copy, clock_copy) {
                        Ok(opened) => Opening::Opened(Box::new(opened)),
                        Err(error) => Opening::Failed(error.to_string()),
                    }
                })
                .await
                .map_err(|_| CliError::internal("opening the CA stopped"))?;
                match attempt {
                    Opening::Opened(opened) => break *opened,
                    Opening::WrongPin(error) => {
                        tracing::error!(%error, "the token refuses the PIN the shares made: that split is set aside, sealed again under a new nonce");
                        sealed.reseal(true)?;
                    }
                    Opening::Failed(error) => {
                        tracing::error!(%error, "the CA does not open: retrying in 5 s with the PIN held");
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
                    signal = signals.next() => {
                        if let Signal::Stop = signal {
                            shutdown.cancel();
                            while listeners.join_next().await.is_some() {}
                            return Ok(());
                        }
                    }
                }
            };
            sealed.record()?;
            (opened, VaListener::Switch(switch))
        }
        None => (
            open_ca(config, store.clone(), clock.clone())?,
            VaListener::Idle(va_listener, admin_listener),
        ),
    };
    let Opened {
        hsm,
        store,
        clock,
        ca,
        state,
    } = opened;
    let (va, initial) =
        ValidationAuthority::open(config, store.clone(), &hsm, &state, clock.clone())
            .context(|| "starting the validation authority".into())?;
    let va = Arc::new(va);

    let audit_watch = Arc::new(crate::audit::checkpoint::ChainWatch::default());
    let publisher = config
        .nats
        .as_ref()
        .map(|_| Arc::new(crate::va::publish::PublisherMetrics::default()));
    let health = health_report(
        hsm.clone(),
        va.clone(),
        audit_watch.clone(),
        publisher.clone(),
        config.nats.as_ref().map_or(0, |n| n.lag_alert_seconds),
    );
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

    let mut background = va.spawn_background(initial, shutdown.clone());
    spawn_timers(
        &mut background,
        config,
        (&store, &hsm, &ca, &va, &clock),
        (&service, &publisher, audit_watch, expiring),
        &shutdown,
    );
    *admin_phase.write().unwrap_or_else(|p| p.into_inner()) = Some(AdminPhase::Open(admin_service));
    match va_listening {
        VaListener::Switch(switch) => {
            *switch.write().unwrap_or_else(|p| p.into_inner()) = va_service;
        }
        VaListener::Idle(va_listener, admin_listener) => {
            listeners.spawn(crate::http::serve_validation(
                va_listener,
                hyper::service::service_fn(move |request| va_service.clone().handle(request)),
                shutdown.clone(),
            ));
            spawn_admin(&mut listeners, admin_listener, &admin_phase, &shutdown);
        }
    }
    let (ra_bound, ra_upkeep) = match ra {
        Some(parts) => {
            let (bound, service) =
                ra_listener::serve_ra(parts, &mut background, &mut listeners, &shutdown)?;
            (Some(bound), Some(service))
        }
        None => (None, None),
    };
    let ra_text = ra_bound.map_or_else(|| "off".to_owned(), |a| a.to_string());
    tracing::info!(va = %va_bound, ra = %ra_text, admin = %admin_bound, "sceau is serving");
    // The ready line, on standard output, for supervisors and tests.
    say(&format!(
        "sceau ready: va={va_bound} ra={ra_text} admin={admin_bound}"
    ));
    // systemd (Type=notify): the listeners are bound and the responses in memory.
    sd_notify(&format!(
        "READY=1\nSTATUS=serving: va={va_bound} ra={ra_text} admin={admin_bound}"
    ));

    until_stopped(config, &ca, &mut signals).await?;
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

/// The validation and admin listeners: already serving (sealed first), or bound and waiting
/// for the CA to open.
enum VaListener {
    Switch(VaSwitch),
    Idle(TcpListener, TcpListener),
}

/// Serves the administration listener with whichever phase is in force.
fn spawn_admin(
    listeners: &mut tokio::task::JoinSet<()>,
    admin_listener: TcpListener,
    phase: &Arc<std::sync::RwLock<Option<AdminPhase>>>,
    shutdown: &CancellationToken,
) {
    let phase = phase.clone();
    listeners.spawn(crate::http::serve(
        admin_listener,
        hyper::service::service_fn(move |request| {
            let current = phase.read().unwrap_or_else(|p| p.into_inner()).clone();
            async move {
                match current {
                    Some(AdminPhase::Open(admin)) => admin.handle(request).await,
                    Some(AdminPhase::Sealed(sealed)) => sealed.handle(request).await,
                    None => Ok(crate::http::problem::Problem::new(
                        hyper::StatusCode::SERVICE_UNAVAILABLE,
                        "starting",
                        "the daemon is starting",
                    )
                    .response()),
                }
            }
        }),
        shutdown.clone(),
    ));
}

/// The validation and admin listeners (the admin one on a loopback address only: it speaks
/// plain HTTP with a bearer token).
async fn bind_local_listeners(
    config: &Config,
    overrides: &ListenOverrides,
) -> Result<(TcpListener, TcpListener), CliError> {
    let va_address = overrides.va.unwrap_or(config.listen.va);
    let admin_address = overrides.admin.unwrap_or(config.listen.admin);
    // Plain HTTP with a bearer token: never beyond this host.
    if !admin_address.ip().is_loopback() {
        return Err(CliError::new(
            Failure::Config,
            format!(
                "{}: [listen] admin = {admin_address}: the admin listener binds a loopback address only (it speaks plain HTTP)",
                config.path.display()
            ),
        ));
    }
    let va_listener = TcpListener::bind(va_address)
        .await
        .context(|| format!("binding the validation listener {va_address}"))?;
    let admin_listener = TcpListener::bind(admin_address)
        .await
        .context(|| format!("binding the admin listener {admin_address}"))?;
    Ok((va_listener, admin_listener))
}

/// What `/healthz` says (both listeners): healthy while the HSM answers, the audit chain
/// holds and, with responder nodes, what changed is published within `lag_alert` seconds.
fn health_report(
    hsm: Hsm,
    va: Arc<ValidationAuthority>,
    audit_watch: Arc<crate::audit::checkpoint::ChainWatch>,
    publisher: Option<Arc<crate::va::publish::PublisherMetrics>>,
    lag_alert: u64,
) -> HealthReport {
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
}

/// Serves until SIGTERM or SIGINT; SIGHUP reloads the certification policies (a set that
/// does not load is refused, the one in force stays).
async fn until_stopped(
    config: &Config,
    ca: &CertificateAuthority,
    signals: &mut Signals,
) -> Result<(), CliError> {
    while let Signal::Reload = signals.next().await {
        sd_notify("RELOADING=1");
        let approved =
            crate::ca::ceremony::control::check_policies(ca.store(), &config.policies_dir);
        match approved
            .map_err(|e| e.to_string())
            .and_then(|()| PolicySet::load_dir(&config.policies_dir).map_err(|e| e.to_string()))
        {
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
    Ok(())
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

/// A line on standard output for supervisors and tests; a closed pipe is not a reason to stop.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{line}");
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
        .map_err(|_| CliError::internal("the system random number generator failed"))?;
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
