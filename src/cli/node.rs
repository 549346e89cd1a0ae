//! `sceau node`: a responder node. Its configuration names the engine and the listen address,
//! nothing else: no HSM, no store, no PIN.
//!
//! ```toml
//! listen = "0.0.0.0:8080"          # OCSP, /crl/, /ca/, /healthz, /readyz, /metrics
//! cache_max_age_seconds = 300      # optional, as [ocsp] on the CA host
//! [nats]                           # as on the CA host
//! servers = ["nats://10.0.0.5:4222", "nats://10.0.0.6:4222", "nats://10.0.0.7:4222"]
//! ```
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{CliError, Context, Failure, clock};
use crate::config::NatsConfig;
use crate::http::va::VaService;
use crate::va::Served;
use crate::va::node::Node;

/// A responder node's configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeConfig {
    listen: SocketAddr,
    #[serde(default = "default_max_age")]
    cache_max_age_seconds: u64,
    nats: NatsConfig,
}

fn default_max_age() -> u64 {
    300
}

fn load(path: &Path) -> Result<NodeConfig, CliError> {
    let text = std::fs::read_to_string(path).context(|| format!("reading {}", path.display()))?;
    let config: NodeConfig = toml::from_str(&text).map_err(|e| {
        CliError::new(
            Failure::Config,
            format!("{}: {}", path.display(), e.message()),
        )
    })?;
    if config.nats.servers.is_empty() {
        return Err(CliError::new(
            Failure::Config,
            format!("{}: nats.servers: name at least one server", path.display()),
        ));
    }
    Ok(config)
}

/// Runs a responder node until SIGTERM or SIGINT.
pub fn node(path: &Path) -> Result<(), CliError> {
    let config = load(path)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sceau-node")
        .build()
        .context(|| "starting the runtime".into())?;
    runtime.block_on(run(config))
}

async fn run(config: NodeConfig) -> Result<(), CliError> {
    let node = Arc::new(Node::new(clock(), 64).map_err(|e| CliError::internal(e.to_string()))?);
    let listener = TcpListener::bind(config.listen)
        .await
        .context(|| format!("binding {}", config.listen))?;
    let bound = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let follower = tokio::spawn(crate::va::node::follow(
        node.clone(),
        config.nats.clone(),
        shutdown.clone(),
    ));
    let health = {
        let node = node.clone();
        Arc::new(move || {
            let connected = node.connected.load(Ordering::Relaxed) == 1;
            let ready = node.is_ready();
            // "view": whether the node holds every status the CA published, and if not, why
            // (it then answers "revoked" only, tryLater otherwise).
            let body = serde_json::json!({
                "status": if connected && ready { "ok" } else { "degraded" },
                "role": "responder node",
                "engine": {"connected": connected, "revision": node.revision.load(Ordering::Relaxed)},
                "ready": ready,
                "view": node.view_health(),
                "ocsp": {"certificates": node.responder().entries()},
            });
            (connected && ready, body)
        })
    };
    let metrics_text = {
        let node = node.clone();
        Arc::new(move || {
            let m = node.metrics();
            let mut out = String::new();
            let mut metric = |name: &str, kind: &str, value: u64| {
                out.push_str(&format!("# TYPE {name} {kind}\n{name} {value}\n"));
            };
            metric(
                "sceau_node_engine_connected",
                "gauge",
                node.connected.load(Ordering::Relaxed),
            );
            metric(
                "sceau_node_revision",
                "gauge",
                node.revision.load(Ordering::Relaxed),
            );
            metric(
                "sceau_node_applied_total",
                "counter",
                node.applied.load(Ordering::Relaxed),
            );
            metric("sceau_node_ready", "gauge", u64::from(node.is_ready()));
            metric(
                "sceau_ocsp_certificates",
                "gauge",
                node.responder().entries(),
            );
            metric("sceau_ocsp_get_total", "counter", m.ocsp_get.get());
            metric("sceau_ocsp_post_total", "counter", m.ocsp_post.get());
            metric(
                "sceau_ocsp_presigned_total",
                "counter",
                m.ocsp_presigned.get(),
            );
            metric(
                "sceau_ocsp_try_later_total",
                "counter",
                m.ocsp_try_later.get(),
            );
            out
        })
    };
    let service = Arc::new(VaService {
        va: node.clone(),
        cache_max_age: config.cache_max_age_seconds,
        cache_control: crate::http::va::cache_control_header(config.cache_max_age_seconds),
        health,
        metrics_text: Some(metrics_text),
    });
    let serving = tokio::spawn(crate::http::serve_validation(
        listener,
        hyper::service::service_fn(move |request| service.clone().handle(request)),
        shutdown.clone(),
    ));
    tracing::info!(listen = %bound, servers = ?config.nats.servers, "responder node serving");
    println!("sceau node ready: listen={bound}");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context(|| "installing the signal handlers".into())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    shutdown.cancel();
    let _ = serving.await;
    let _ = follower.await;
    Ok(())
}
