//! The registration authority's listener: its TLS configuration (operators' cards, from the
//! issuing CAs), its service and its housekeeping.
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::super::{CliError, Context, ContextAs, Failure};
use crate::ca::{self, CertificateAuthority};
use crate::config::Config;
use crate::http::ra::{RaMetrics, RaService};
use crate::ra::{RaSettings, RegistrationAuthority};
use crate::service::RolloverHook;
use crate::va::ValidationAuthority;

/// The RA: its TLS configuration (client certificates from the issuing CAs), its listener and
/// its service.
pub(super) async fn registration_authority(
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
    .map_err(|e| {
        CliError::new(
            Failure::Config,
            format!("{}: [ra] {e}", config.path.display()),
        )
    })?;
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
    .context_as(Failure::Config, || {
        "starting the registration authority".into()
    })?;
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
pub(super) struct RaParts {
    listener: TcpListener,
    service: Arc<RaService>,
    tls: Arc<rustls::ServerConfig>,
    pub(super) on_rollover: RolloverHook,
}

/// Operators carry agent cards: their certificates come from the issuing CAs.
fn operator_ca_certificates(state: &ca::CaState) -> Vec<Vec<u8>> {
    state
        .issuing
        .iter()
        .map(|c| c.certificate.clone())
        .collect()
}

/// Serves the RA listener with `parts` (its housekeeping among the background tasks); returns
/// its address and its service (whose refusals are flushed at shutdown).
pub(super) fn serve_ra(
    parts: RaParts,
    background: &mut tokio::task::JoinSet<()>,
    listeners: &mut tokio::task::JoinSet<()>,
    shutdown: &CancellationToken,
) -> Result<(SocketAddr, Arc<RaService>), CliError> {
    let RaParts {
        listener,
        service,
        tls,
        ..
    } = parts;
    let bound = listener.local_addr()?;
    background.spawn(ra_housekeeping(service.clone(), shutdown.clone()));
    let serving = service.clone();
    listeners.spawn(crate::http::serve_tls(
        listener,
        tls,
        move |peer| {
            let service = serving.clone();
            hyper::service::service_fn(move |request| service.clone().handle(peer.clone(), request))
        },
        shutdown.clone(),
    ));
    Ok((bound, service))
}
