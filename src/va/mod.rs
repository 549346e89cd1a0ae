//! The validation authority: the OCSP responder and CRL publication.
//!
//! It reads what the CA wrote (certificates and revocations in the store) and never issues.
//! OCSP is answered from pre-signed responses in memory, so it keeps answering while the HSM or
//! the registration side is down; CRLs are files in the publish directory and are also served.

pub mod crl;
pub mod node;
pub mod publish;
pub mod responder;
pub mod responses;
pub mod sealed;
pub mod snapshot;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;

use crate::config::Config;
use crate::hsm::{Hsm, HsmError};
use crate::issuer::state::StoredCa;
use crate::issuer::{CaState, Issuer, RevokedCertificate};
use crate::store::{CertKey, Store, StoreError};
use crate::x509::Timestamp;
use crate::x509::time::Clock;
use crl::{CrlKind, CrlPublisher, CrlSettings, CrlSource};
use responder::{IssuerSetup, Responder, SigningJob};
use responses::{IssuerIdentity, ResponseSigner, Status};

/// What went wrong in the validation authority.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaError {
    #[error("HSM: {0}")]
    Hsm(#[from] HsmError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("encoding: {0}")]
    Encoding(String),
    #[error("no such issuer")]
    UnknownIssuer,
    #[error("the CA is not set up for OCSP: {0}")]
    NotReady(String),
    #[error("shutting down")]
    ShuttingDown,
    #[error("{0}")]
    Io(String),
}

/// Counters for /metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    pub ocsp_get: Counter,
    pub ocsp_post: Counter,
    pub ocsp_presigned: Counter,
    pub ocsp_live: Counter,
    pub ocsp_malformed: Counter,
    pub ocsp_unauthorized: Counter,
    pub ocsp_try_later: Counter,
    pub ocsp_not_modified: Counter,
    /// Signatures made ahead of time (two per certificate).
    pub presigned: AtomicU64,
    pub live_signed: AtomicU64,
    pub live_refused: AtomicU64,
    pub revocations: AtomicU64,
    /// Certificates whose responses were signed after issuance (through the daemon).
    pub issued: AtomicU64,
    /// OCSP request durations, from the request to the response headers.
    pub latency: LatencyHistogram,
}

/// Upper bounds of the latency buckets, in microseconds (then +Inf).
pub const LATENCY_BUCKETS_US: [u64; 10] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 1_000_000,
];
const LATENCY_SHARDS: usize = 4;

/// A latency histogram for the OCSP hot path, sharded by thread: each worker thread counts in
/// its own cache lines, so that two cores answering at 100,000 requests/s do not fight over
/// one counter. Read (summed) only when /metrics is scraped.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    shards: [LatencyShard; LATENCY_SHARDS],
}

#[derive(Debug, Default)]
#[repr(align(128))]
struct LatencyShard {
    /// Per bucket (the last one is +Inf), then the sum of microseconds.
    counts: [AtomicU64; LATENCY_BUCKETS_US.len() + 2],
}

/// This thread's shard of the hot-path counters.
fn thread_shard() -> usize {
    thread_local! {
        static SHARD: usize = {
            static NEXT: AtomicU64 = AtomicU64::new(0);
            NEXT.fetch_add(1, Ordering::Relaxed) as usize % LATENCY_SHARDS
        };
    }
    SHARD.with(|s| *s)
}

/// A counter of the OCSP hot path, sharded by thread like [`LatencyHistogram`]: a counter
/// shared by both cores moves its cache line between them on every request.
#[derive(Debug, Default)]
pub struct Counter {
    shards: [PaddedCount; LATENCY_SHARDS],
}

#[derive(Debug, Default)]
#[repr(align(128))]
struct PaddedCount(AtomicU64);

impl Counter {
    pub fn count(&self) {
        self.shards[thread_shard()]
            .0
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .sum()
    }
}

impl LatencyHistogram {
    pub fn record(&self, elapsed: std::time::Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BUCKETS_US
            .iter()
            .position(|bound| micros <= *bound)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        let shard = &self.shards[thread_shard()];
        shard.counts[bucket].fetch_add(1, Ordering::Relaxed);
        shard.counts[LATENCY_BUCKETS_US.len() + 1].fetch_add(micros, Ordering::Relaxed);
    }

    /// Cumulative counts per bucket (the last is +Inf, i.e. the total), and the sum in µs.
    pub fn snapshot(&self) -> (Vec<u64>, u64) {
        let mut counts = vec![0u64; LATENCY_BUCKETS_US.len() + 1];
        let mut sum = 0;
        for shard in &self.shards {
            for (i, count) in counts.iter_mut().enumerate() {
                *count += shard.counts[i].load(Ordering::Relaxed);
            }
            sum += shard.counts[LATENCY_BUCKETS_US.len() + 1].load(Ordering::Relaxed);
        }
        let mut running = 0;
        for count in &mut counts {
            running += *count;
            *count = running;
        }
        (counts, sum)
    }
}

impl Metrics {
    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The CRL publisher of a CA: a CRL per issuing CA, and the root's ARL when the root key is in
/// this HSM.
pub fn crl_publisher(
    config: &Config,
    store: Store,
    hsm: &Hsm,
    state: &CaState,
) -> Result<CrlPublisher, VaError> {
    let mut sources = Vec::new();
    // A retired issuing CA whose key was destroyed owes no more CRLs (all it issued expired).
    for stored in state.issuing_in_hsm() {
        sources.push(crl_source(hsm, stored, CrlKind::Crl)?);
    }
    // Every root generation whose key is here signs its ARL.
    for root in state.roots() {
        if let Some(stored) = root.signing() {
            sources.push(crl_source(hsm, &stored, CrlKind::Arl)?);
        }
    }
    let settings = CrlSettings {
        next_update_seconds: u64::from(config.crl.next_update_hours) * 3600,
        interval_seconds: u64::from(config.crl.interval_hours) * 3600,
        coalesce_seconds: config.crl.coalesce_seconds,
        arl_next_update_seconds: u64::from(config.crl.arl_next_update_days) * 86_400,
    };
    CrlPublisher::new(store, config.publish_dir.clone(), settings, sources)
}

/// The CRL (or ARL) of a CA whose key is in the HSM.
fn crl_source(hsm: &Hsm, stored: &StoredCa, kind: CrlKind) -> Result<CrlSource, VaError> {
    let issuer = Issuer::load(hsm, stored).map_err(|e| VaError::NotReady(e.to_string()))?;
    Ok(CrlSource {
        name: issuer.name.clone(),
        issuer: Arc::new(issuer),
        kind,
    })
}

/// The certificates served as `/ca/<name>.crt`: every root, link and issuing CA certificate.
pub fn ca_certificates(state: &CaState) -> HashMap<String, Bytes> {
    let mut certificates = HashMap::new();
    let mut add = |name: &str, der: &[u8]| {
        certificates.insert(format!("{name}.crt"), Bytes::copy_from_slice(der));
    };
    for root in state.roots() {
        add(&root.name, &root.certificate);
    }
    for link in &state.root_links {
        add(
            &format!("{}-signed-by-{}", link.new, link.old),
            &link.new_with_old,
        );
        add(
            &format!("{}-signed-by-{}", link.old, link.new),
            &link.old_with_new,
        );
    }
    for issuing in &state.issuing {
        add(&issuing.name, &issuing.certificate);
    }
    certificates
}

/// The delegated responder of a stored responder certificate and its HSM key.
fn response_signer(
    hsm: &Hsm,
    stored: &StoredCa,
    validity_seconds: u64,
) -> Result<ResponseSigner, VaError> {
    let responder = Issuer::load(hsm, stored).map_err(|e| VaError::NotReady(e.to_string()))?;
    ResponseSigner::new(
        responder.key.clone(),
        &responder.certificate_der,
        validity_seconds,
    )
}

/// What the responder needs of an issuing CA: its identity in CertIDs and the delegated
/// responders it certified (the last in force; earlier ones still valid serve the responses
/// they signed until re-signed).
pub fn issuer_setup(
    hsm: &Hsm,
    state: &CaState,
    issuer: &Issuer,
    validity: u64,
    now: Timestamp,
) -> Result<IssuerSetup, VaError> {
    let responders = state.responders_of(&issuer.key_identifier);
    let Some((current, earlier)) = responders.split_last() else {
        return Err(VaError::NotReady(format!(
            "no OCSP responder certificate issued by {} (run `sceau ocsp renew-signer`)",
            issuer.name
        )));
    };
    let signer = response_signer(hsm, current, validity)?;
    let mut previous = Vec::new();
    for stored in earlier {
        if state.key_destroyed(&stored.key_label) {
            continue;
        }
        match Issuer::load(hsm, stored) {
            Ok(old) if old.not_after > now => previous.push(ResponseSigner::new(
                old.key.clone(),
                &old.certificate_der,
                validity,
            )?),
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(responder = %stored.name, %error, "an earlier OCSP responder cannot be loaded; its responses are re-signed")
            }
        }
    }
    let spki = issuer
        .certificate
        .tbs_certificate()
        .subject_public_key_info();
    Ok(IssuerSetup {
        identity: IssuerIdentity::new(
            issuer.id,
            &issuer.name,
            &issuer.subject_der,
            spki.subject_public_key.raw_bytes(),
            issuer.not_before,
        ),
        signer: Some(signer),
        previous,
    })
}

/// The OCSP responder and the CRL publisher, sharing one store and one HSM.
pub struct ValidationAuthority {
    /// Set once the responses missing at start-up are signed.
    ready: Arc<std::sync::atomic::AtomicBool>,
    pub responder: Arc<Responder>,
    pub crls: Arc<CrlPublisher>,
    pub metrics: Arc<Metrics>,
    /// `/ca/<name>.crt`; grows with CA rollovers.
    ca_certificates: RwLock<Arc<HashMap<String, Bytes>>>,
    clock: Arc<dyn Clock>,
}

/// What the validation listener reads: the responder, the CRLs and CA certificates to serve,
/// the clock and the counters. The CA host's [`ValidationAuthority`] and a responder node
/// ([`node::Node`]) both provide it: one listener, one responder, two sources of status.
pub trait Served: Send + Sync {
    fn responder(&self) -> &Responder;
    fn metrics(&self) -> &Metrics;
    fn now(&self) -> Timestamp;
    /// The latest CRL or ARL of `name`.
    fn crl(&self, name: &str) -> Option<crl::PublishedCrl>;
    /// A CA certificate by file name (`racine.crt`).
    fn ca_certificate(&self, name: &str) -> Option<Bytes>;
    /// Whether every status is loaded (`/readyz`).
    fn is_ready(&self) -> bool;
}

/// The accessors of [`Served`] that read a `responder`, `metrics` and `clock` field: both
/// providers hold them under those names.
macro_rules! served_fields {
    () => {
        fn responder(&self) -> &$crate::va::responder::Responder {
            &self.responder
        }

        fn metrics(&self) -> &$crate::va::Metrics {
            &self.metrics
        }

        fn now(&self) -> $crate::x509::Timestamp {
            self.clock.now()
        }
    };
}
pub(crate) use served_fields;

impl Served for ValidationAuthority {
    served_fields!();

    fn crl(&self, name: &str) -> Option<crl::PublishedCrl> {
        self.crls.latest(name)
    }

    fn ca_certificate(&self, name: &str) -> Option<Bytes> {
        ValidationAuthority::ca_certificate(self, name)
    }

    fn is_ready(&self) -> bool {
        ValidationAuthority::is_ready(self)
    }
}

impl core::fmt::Debug for ValidationAuthority {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ValidationAuthority")
            .field("responder", &self.responder)
            .finish()
    }
}

impl ValidationAuthority {
    /// Loads the responder key and certificate and the CAs from the CA state, reads back the
    /// persisted responses, and returns the certificates whose responses must be signed.
    pub fn open(
        config: &Config,
        store: Store,
        hsm: &Hsm,
        state: &CaState,
        clock: Arc<dyn Clock>,
    ) -> Result<(Self, Vec<SigningJob>), VaError> {
        let validity = u64::from(config.ocsp.validity_hours) * 3600;
        let now = clock.now();
        let mut issuers = Vec::new();
        for stored in state.issuing_in_hsm() {
            let issuer = Issuer::load(hsm, stored).map_err(|e| VaError::NotReady(e.to_string()))?;
            issuers.push(issuer_setup(hsm, state, &issuer, validity, now)?);
        }
        let metrics = Arc::new(Metrics::default());
        let responder = Responder::new(
            issuers,
            validity,
            config.ocsp.live_signing_limit,
            Some(store.clone()),
            metrics.clone(),
        )?;
        let jobs = responder.load(clock.now())?;
        let crls = crl_publisher(config, store, hsm, state)?;
        Ok((
            Self {
                ready: Arc::new(std::sync::atomic::AtomicBool::new(false)),
                responder: Arc::new(responder),
                crls: Arc::new(crls),
                metrics,
                ca_certificates: RwLock::new(Arc::new(ca_certificates(state))),
                clock,
            },
            jobs,
        ))
    }

    /// A CA certificate served as `/ca/<name>` (`ac-agents.crt`).
    /// Every certificate served under `/ca/`, by name.
    pub fn all_ca_certificates(&self) -> Arc<HashMap<String, Bytes>> {
        self.ca_certificates
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn ca_certificate(&self, name: &str) -> Option<Bytes> {
        self.ca_certificates
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// Puts what a key ceremony changed in force while the daemon runs (`sceau ca rotate`):
    /// a new issuing CA is answered for by OCSP (with its own responder) and gets its CRL; a
    /// new root gets its ARL; their certificates are served. The CRLs are published before
    /// this returns, so that the URLs in the first certificates of a new CA already resolve.
    pub async fn after_rollover(&self, hsm: &Hsm, state: &CaState) -> Result<(), VaError> {
        let now = self.now();
        let validity = self.responder.validity_seconds();
        for stored in state.issuing_in_hsm() {
            let issuer = Issuer::load(hsm, stored).map_err(|e| VaError::NotReady(e.to_string()))?;
            if self.responder.signer_of(issuer.id).is_none() {
                self.responder
                    .add_issuer(issuer_setup(hsm, state, &issuer, validity, now)?)?;
                tracing::info!(issuer = %issuer.name, "OCSP answers for a new issuing CA");
            }
            self.crls
                .add_source(crl_source(hsm, stored, CrlKind::Crl)?)?;
        }
        for root in state.roots() {
            if let Some(stored) = root.signing() {
                self.crls
                    .add_source(crl_source(hsm, &stored, CrlKind::Arl)?)?;
            }
        }
        for retired in state
            .issuing
            .iter()
            .filter(|c| state.key_destroyed(&c.key_label))
        {
            self.crls.retire(&retired.name);
        }
        *self
            .ca_certificates
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(ca_certificates(state));
        let crls = self.crls.clone();
        tokio::task::spawn_blocking(move || crls.publish_all(now))
            .await
            .map_err(|_| VaError::ShuttingDown)??;
        Ok(())
    }

    /// Whether start-up is over: every certificate has its pre-signed responses.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Whether responses can be signed now (the responder key's token is connected).
    pub fn signer_available(&self) -> bool {
        self.responder.signer_available()
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    /// Makes revocations visible: OCSP stops answering "good" at once (the old responses are
    /// dropped before anything else), new responses are signed before this returns, and a new
    /// CRL follows within the coalescing delay.
    pub async fn after_revocation(&self, revoked: &[RevokedCertificate]) -> Result<(), VaError> {
        crate::failpoint::pause("before-ocsp-revoked").await;
        let jobs: Vec<SigningJob> = revoked
            .iter()
            .map(|r| SigningJob {
                key: r.key.clone(),
                status: Status::Revoked {
                    at: r.revoked_at,
                    reason: r.reason,
                },
            })
            .collect();
        for job in &jobs {
            self.responder.set_status(&job.key, job.status);
            Metrics::count(&self.metrics.revocations);
        }
        self.crls.trigger.notify_one();
        self.responder.sign_jobs(jobs, self.now()).await.map(|_| ())
    }

    /// Puts a renewed delegated responder of `issuer` in force and re-signs every response
    /// with it. The responses of the previous responder (still valid) are served until their
    /// replacement is signed: no gap. Returns how many certificates were re-signed.
    pub async fn renew_signer(
        &self,
        hsm: &Hsm,
        issuer: crate::store::IssuerId,
        responder: &StoredCa,
    ) -> Result<usize, VaError> {
        let signer = response_signer(hsm, responder, self.responder.validity_seconds())?;
        self.responder.renew_signer(issuer, signer)?;
        let scan = self.responder.clone();
        let now = self.now();
        let jobs = tokio::task::spawn_blocking(move || scan.due(now, u64::MAX))
            .await
            .map_err(|_| VaError::ShuttingDown)?;
        let count = jobs.len();
        let signed = self.responder.sign_jobs(jobs, self.now()).await?;
        tracing::info!(signed, of = count, responder = %responder.name, "OCSP responses re-signed by the renewed responder");
        Ok(signed)
    }

    /// Signs the responses of newly issued certificates.
    pub async fn after_issuance(&self, keys: &[CertKey]) -> Result<(), VaError> {
        crate::failpoint::pause("before-ocsp-issued").await;
        // A certificate revoked before this notice arrived stays revoked (the responder
        // refuses to make it good again): its revocation job signs it.
        let jobs: Vec<SigningJob> = keys
            .iter()
            .filter_map(|key| {
                Metrics::count(&self.metrics.issued);
                let status = self.responder.set_status(key, Status::Good)?;
                Some(SigningJob {
                    key: key.clone(),
                    status,
                })
            })
            .collect();
        self.responder.sign_jobs(jobs, self.now()).await.map(|_| ())
    }

    /// Background work until `shutdown`: sign what `open` found missing, re-sign responses
    /// before half their validity, publish CRLs.
    pub fn spawn_background(
        self: &Arc<Self>,
        initial: Vec<SigningJob>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinSet<()> {
        let mut tasks = tokio::task::JoinSet::new();
        let responder = self.responder.clone();
        let clock = self.clock.clone();
        let stop = shutdown.clone();
        let ready = self.ready.clone();
        tasks.spawn(async move {
            if !initial.is_empty() {
                let count = initial.len();
                match responder.sign_jobs(initial, clock.now()).await {
                    Ok(signed) => tracing::info!(signed, of = count, "OCSP responses signed at start-up"),
                    Err(error) => tracing::error!(%error, "signing OCSP responses at start-up failed; retrying"),
                }
            }
            ready.store(true, Ordering::Relaxed);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(60)) => {}
                }
                // A scan of every entry: off the runtime's threads, which answer OCSP.
                let scan = responder.clone();
                let now = clock.now();
                let Ok(due) =
                    tokio::task::spawn_blocking(move || scan.due(now, scan.refresh_age())).await
                else {
                    return;
                };
                if !due.is_empty() {
                    let count = due.len();
                    match responder.sign_jobs(due, clock.now()).await {
                        Ok(signed) => tracing::info!(signed, of = count, "OCSP responses re-signed"),
                        Err(error) => tracing::warn!(%error, "re-signing OCSP responses failed; the pre-signed ones are still served"),
                    }
                }
            }
        });
        let crls = self.crls.clone();
        let clock = self.clock.clone();
        tasks.spawn(async move { crls.run(shutdown, clock).await });
        tasks
    }
}
