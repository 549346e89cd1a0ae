//! The service layer: one function per action of the CA (issue, issue a card, revoke, schedule,
//! cancel, bootstrap the RA, rotate a key, renew the responders, back up, checkpoint, publish),
//! each of which commits *and* makes the commit true everywhere it must be (OCSP, CRL, the
//! outbox to responder nodes). Every entry point calls it and none re-implements it: the admin
//! API (`http::admin`) parses, authorises, calls and maps the answer; the CLI calls it
//! offline (no daemon: no OCSP, the daemon re-signs at its start) with the same request types it
//! sends to the daemon online; the daemon's timers call it; the RA's effects go through
//! [`Effects`].
//!
//! What follows a commit never depends on the caller staying connected: an action that commits
//! runs in a task of its own (`Service::to_the_end`), so a client that hangs up loses only the
//! answer.

pub mod ceremonies;
mod error;
mod issuance;
mod keys;
mod operations;
mod policies;
pub mod revocation;
pub mod unseal;
pub mod wire;

use std::sync::Arc;

pub use error::ServiceError;

use crate::ca::CertificateAuthority;
use crate::ca::revoke::RevokedCertificate;
use crate::config::Config;
use crate::hsm::Hsm;
use crate::store::{CertKey, Store};
use crate::va::ValidationAuthority;
use crate::x509::Timestamp;
use crate::x509::time::Clock;

/// What is told of the CA state after a key rollover (the RA trusts operator cards of a new CA).
pub type RolloverHook = Arc<dyn Fn(&crate::ca::CaState) + Send + Sync>;

/// The CA's actions, for whoever runs them: the daemon (with its validation authority) or the
/// CLI offline (without one).
#[derive(Clone)]
pub struct Service {
    config: Config,
    store: Store,
    clock: Arc<dyn Clock>,
    /// The token and the issuing CA, when the action needs them (not for an offline revocation:
    /// a revocation is recorded even with the token away).
    hsm: Option<Hsm>,
    ca: Option<CertificateAuthority>,
    effects: Effects,
    daemon: Option<Arc<Daemon>>,
}

/// What only the daemon has.
struct Daemon {
    audit_watch: Arc<crate::audit::checkpoint::ChainWatch>,
    publisher: Option<Arc<crate::va::publish::PublisherMetrics>>,
    on_rollover: Option<RolloverHook>,
}

impl core::fmt::Debug for Service {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Service")
            .field("daemon", &self.daemon.is_some())
            .finish()
    }
}

impl Service {
    /// The daemon's service: every effect applied at once.
    #[allow(clippy::too_many_arguments)]
    pub fn daemon(
        config: Config,
        store: Store,
        hsm: Hsm,
        ca: CertificateAuthority,
        va: Arc<ValidationAuthority>,
        audit_watch: Arc<crate::audit::checkpoint::ChainWatch>,
        publisher: Option<Arc<crate::va::publish::PublisherMetrics>>,
        on_rollover: Option<RolloverHook>,
    ) -> Self {
        Service {
            config,
            store,
            clock: va.clock(),
            hsm: Some(hsm),
            ca: Some(ca),
            effects: Effects::of(va),
            daemon: Some(Arc::new(Daemon {
                audit_watch,
                publisher,
                on_rollover,
            })),
        }
    }

    /// The CLI's service while no daemon runs: commits only (the daemon signs OCSP responses
    /// and publishes to nodes when it starts).
    pub fn offline(config: Config, store: Store, clock: Arc<dyn Clock>) -> Self {
        Service {
            config,
            store,
            clock,
            hsm: None,
            ca: None,
            effects: Effects(None),
            daemon: None,
        }
    }

    /// The same, with the token open and the issuing CA loaded (for actions that sign).
    pub fn with_token(mut self, hsm: Hsm, ca: Option<CertificateAuthority>) -> Self {
        self.hsm = Some(hsm);
        self.ca = ca;
        self
    }

    /// The effects of a commit, for the RA (which commits its own records).
    pub fn effects(&self) -> Effects {
        self.effects.clone()
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    fn va(&self) -> Option<&Arc<ValidationAuthority>> {
        self.effects.0.as_ref()
    }

    fn hsm(&self) -> Result<&Hsm, ServiceError> {
        self.hsm.as_ref().ok_or(ServiceError::HsmUnavailable)
    }

    /// The token's state (for health and metrics).
    pub fn token_status(&self) -> Option<crate::hsm::HsmStatus> {
        self.hsm.as_ref().map(Hsm::status)
    }

    fn ca(&self) -> Result<&CertificateAuthority, ServiceError> {
        self.ca.as_ref().ok_or(ServiceError::HsmUnavailable)
    }

    fn state(&self) -> Result<crate::ca::CaState, ServiceError> {
        crate::ca::load_state(&self.store)?.ok_or(ServiceError::NotInitialized)
    }

    /// Runs `work` on a blocking thread (the store and the token block).
    async fn blocking<T: Send + 'static>(
        work: impl FnOnce() -> Result<T, ServiceError> + Send + 'static,
    ) -> Result<T, ServiceError> {
        tokio::task::spawn_blocking(work)
            .await
            .unwrap_or(Err(ServiceError::ShuttingDown))
    }

    /// Runs an action that commits in a task of its own: hyper drops a request's future when its
    /// client hangs up, and a committed change must still reach OCSP, the CRL publisher and the
    /// issuer in force. Only the answer is lost with the client.
    async fn to_the_end<T: Send + 'static>(
        work: impl Future<Output = Result<T, ServiceError>> + Send + 'static,
    ) -> Result<T, ServiceError> {
        tokio::spawn(work)
            .await
            .unwrap_or(Err(ServiceError::ShuttingDown))
    }
}

/// "Commit, then make it true everywhere": after certificates are stored or revoked, the
/// responder's status and responses (and, through the responder's write, the outbox to nodes)
/// and the CRL. Offline (no daemon) there is nothing to apply: the daemon re-signs at start.
#[derive(Clone)]
pub struct Effects(Option<Arc<ValidationAuthority>>);

impl core::fmt::Debug for Effects {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_tuple("Effects").field(&self.0.is_some()).finish()
    }
}

/// What OCSP says of a revocation once its effects are applied.
pub const OCSP_REVOKED: &str = "revoked";
const OCSP_PENDING: &str =
    "pending: OCSP answers tryLater for it until the HSM signs its responses";
const OCSP_OFFLINE: &str = "the daemon is not running: its responses are re-signed when it starts";

impl Effects {
    /// The daemon's effects, applied through its validation authority.
    pub fn of(va: Arc<ValidationAuthority>) -> Self {
        Effects(Some(va))
    }

    /// After a revocation is committed: OCSP revoked (signed now), the CRL triggered. Returns
    /// what OCSP says of it.
    pub async fn revoked(&self, revoked: &[RevokedCertificate]) -> &'static str {
        let Some(va) = &self.0 else {
            return OCSP_OFFLINE;
        };
        match va.after_revocation(revoked).await {
            Ok(()) => OCSP_REVOKED,
            Err(error) => {
                tracing::error!(%error, "revocation stored, but its OCSP responses could not be signed yet");
                OCSP_PENDING
            }
        }
    }

    /// After certificates are committed: OCSP good (signed now).
    pub async fn issued(&self, keys: &[CertKey]) {
        let Some(va) = &self.0 else {
            return;
        };
        if !keys.is_empty()
            && let Err(error) = va.after_issuance(keys).await
        {
            tracing::error!(%error, "certificates stored, but their OCSP responses could not be signed yet");
        }
    }

    /// After something that changes the CRLs (a revocation by a failed ceremony, a new CA).
    fn crl_changed(&self) {
        if let Some(va) = &self.0 {
            va.crls.trigger.notify_one();
        }
    }
}

impl crate::ra::StatusPublisher for Effects {
    fn issued(&self, keys: Vec<CertKey>) -> crate::ra::BoxFuture<'_> {
        Box::pin(async move { Effects::issued(self, &keys).await })
    }

    fn available(&self) -> bool {
        // Called on a blocking thread, before the commit: a real call to the token.
        self.0
            .as_ref()
            .is_some_and(|va| va.signer_available() && va.responder.signer_ready())
    }

    fn revoked(&self, revoked: Vec<RevokedCertificate>) -> crate::ra::BoxFuture<'_> {
        Box::pin(async move {
            Effects::revoked(self, &revoked).await;
        })
    }
}
