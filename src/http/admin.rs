//! The administration listener: health, readiness, Prometheus metrics, and the commands the
//! `sceau` CLI sends to a running daemon (revoke, regenerate CRLs).
//!
//! Commands need `Authorization: Bearer <token>`, the token the daemon writes at start-up into
//! `<data_dir>/admin.token` (mode 0600): whoever can read the CA's data directory can revoke.
//! The listener binds loopback by default.
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;

use super::problem::Problem;
use super::{Body, read_body_within};
use crate::ca::revoke::{RevocationRequest, RevocationTarget, revoke};
use crate::ca::{CaError, CaState, CardRequest, CertificateAuthority, IssuedCertificate};
use crate::hsm::Hsm;
use crate::policy::IssuanceRequest;
use crate::store::CertKey;
use crate::store::Store;
use crate::va::ValidationAuthority;
use crate::x509::revocation::RevocationReason;
use crate::x509::{Serial, Timestamp};

/// What the administration listener serves.
pub struct AdminService {
    pub config: crate::config::Config,
    pub va: Arc<ValidationAuthority>,
    pub ca: CertificateAuthority,
    pub store: Store,
    pub hsm: Hsm,
    pub audit_key_label: String,
    /// The RA listener's counters, when it runs.
    pub ra_metrics: Option<Arc<crate::http::ra::RaMetrics>>,
    pub token: String,
    pub health: Arc<dyn Fn() -> (bool, serde_json::Value) + Send + Sync>,
    /// The audit chain as the last checkpoint found it.
    pub audit_watch: Arc<crate::audit::checkpoint::ChainWatch>,
    /// The publisher to responder nodes, when `[nats]` is configured.
    pub publisher: Option<Arc<crate::va::publish::PublisherMetrics>>,
    /// Told of a new CA state after a rollover (the RA trusts operator cards of a new CA).
    pub on_rollover: Option<RolloverHook>,
    /// Certificates ending within 30, 60 and 90 days, as last counted.
    pub expiring: Arc<crate::ca::expiry::ExpiringGauge>,
}

/// What is told of the CA state after a key rollover.
pub type RolloverHook = Arc<dyn Fn(&CaState) + Send + Sync>;

impl core::fmt::Debug for AdminService {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AdminService").finish()
    }
}

/// `POST /admin/revoke`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeBody {
    pub serial: Option<String>,
    pub card: Option<String>,
    /// Required unless `at` is given (a departure: affiliation-changed by default).
    pub reason: Option<String>,
    pub invalidity_date: Option<String>,
    /// Revoke at this time (RFC 3339) rather than now; a time already past revokes now.
    pub at: Option<String>,
}

/// `POST /admin/backup`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupBody {
    /// An absolute path, which must not exist.
    pub out: std::path::PathBuf,
}

/// `POST /admin/revoke/cancel`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    pub id: String,
}

impl AdminService {
    pub async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
    ) -> Result<Response<Body>, Infallible> {
        let response = match (request.method(), request.uri().path()) {
            (&Method::GET, "/healthz") => super::va::health(&*self.health),
            // Ready once the responses missing at start-up are signed (until then, OCSP answers
            // tryLater for those certificates).
            (&Method::GET, "/readyz") => {
                let ready = self.va.is_ready();
                json(
                    if ready {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    },
                    &serde_json::json!({ "ready": ready }),
                )
            }
            (&Method::GET, "/metrics") => self.metrics(),
            // No token needed: the daemon proves it knows the token before a client sends it.
            (&Method::POST, "/admin/identity") => self.identity(request).await,
            (&Method::POST, "/admin/revoke") => match self.authorize(&request) {
                Ok(()) => self.clone().revoke(request).await,
                Err(problem) => problem.response(),
            },
            (&Method::POST, "/admin/backup") => match self.authorize(&request) {
                Ok(()) => self.clone().backup(request).await,
                Err(problem) => problem.response(),
            },
            (&Method::POST, "/admin/revoke/cancel") => match self.authorize(&request) {
                Ok(()) => self.clone().cancel_scheduled(request).await,
                Err(problem) => problem.response(),
            },
            (&Method::POST, "/admin/crl") => match self.authorize(&request) {
                Ok(()) => self.crl().await,
                Err(problem) => problem.response(),
            },
            // The CA certificates (no secret in there), for `sceau ca export` while the daemon
            // holds the store.
            (&Method::POST, "/admin/ca/state") => match self.authorize(&request) {
                Ok(()) => match crate::ca::load_state(&self.store) {
                    Ok(Some(state)) => json(StatusCode::OK, &state),
                    Ok(None) => {
                        Problem::new(StatusCode::NOT_FOUND, "not-initialized", "no CA").response()
                    }
                    Err(error) => ca_problem(&error).response(),
                },
                Err(problem) => problem.response(),
            },
            (&Method::POST, "/admin/ocsp/renew-signer") => match self.authorize(&request) {
                Ok(()) => self.clone().renew_signer().await,
                Err(problem) => problem.response(),
            },
            (&Method::POST, "/admin/publish/all") => match self.authorize(&request) {
                Ok(()) => self.publish_all(),
                Err(problem) => problem.response(),
            },
            (&Method::POST, "/admin/ca/rotate") => match self.authorize(&request) {
                Ok(()) => self.clone().rotate(Rollover::Issuing, request).await,
                Err(problem) => problem.response(),
            },
            (&Method::POST, "/admin/ca/rotate-root") => match self.authorize(&request) {
                Ok(()) => self.clone().rotate(Rollover::Root, request).await,
                Err(problem) => problem.response(),
            },
            (&Method::POST, "/admin/audit/checkpoint") => match self.authorize(&request) {
                Ok(()) => self.checkpoint().await,
                Err(problem) => problem.response(),
            },
            (&Method::POST, "/admin/issue" | "/admin/card" | "/admin/ra/bootstrap") => {
                match self.authorize(&request) {
                    Ok(()) => self.clone().command(request).await,
                    Err(problem) => problem.response(),
                }
            }
            (
                _,
                "/healthz"
                | "/readyz"
                | "/metrics"
                | "/admin/revoke"
                | "/admin/revoke/cancel"
                | "/admin/backup"
                | "/admin/crl"
                | "/admin/issue"
                | "/admin/card"
                | "/admin/ra/bootstrap"
                | "/admin/audit/checkpoint"
                | "/admin/ocsp/renew-signer"
                | "/admin/publish/all"
                | "/admin/ca/rotate"
                | "/admin/ca/rotate-root"
                | "/admin/ca/state"
                | "/admin/identity",
            ) => Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "wrong method",
            )
            .response(),
            _ => Problem::new(StatusCode::NOT_FOUND, "not-found", "no such resource").response(),
        };
        Ok(response)
    }

    /// `POST /admin/identity {"challenge": hex}`: the daemon answers with an HMAC of the
    /// client's challenge under the admin token ([`identity_proof`]), so that the CLI sends its
    /// token only to the daemon of its own data directory, never to whatever process listens
    /// on the admin address.
    async fn identity(&self, request: Request<Incoming>) -> Response<Body> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Challenge {
            challenge: String,
        }
        let body: Challenge = match small_json_body(request).await {
            Ok(body) => body,
            Err(problem) => return problem.response(),
        };
        match hex::decode(&body.challenge) {
            Ok(challenge) if (16..=64).contains(&challenge.len()) => json(
                StatusCode::OK,
                &serde_json::json!({ "proof": identity_proof(&self.token, &challenge) }),
            ),
            _ => Problem::new(
                StatusCode::BAD_REQUEST,
                "challenge",
                "the challenge is 16 to 64 octets, hexadecimal",
            )
            .response(),
        }
    }

    fn authorize(&self, request: &Request<Incoming>) -> Result<(), Problem> {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let matches = presented.is_some_and(|p| constant_time_eq(p, &self.token));
        if matches {
            Ok(())
        } else {
            Err(Problem::new(
                StatusCode::UNAUTHORIZED,
                "admin-token",
                "administration commands need the bearer token from <data_dir>/admin.token",
            ))
        }
    }

    async fn revoke(self: Arc<Self>, request: Request<Incoming>) -> Response<Body> {
        let parsed: RevokeBody = match small_json_body(request).await {
            Ok(parsed) => parsed,
            Err(problem) => return problem.response(),
        };
        let at = match parsed.at.as_deref().map(Timestamp::parse_rfc3339) {
            None => None,
            Some(Ok(at)) => Some(at),
            Some(Err(e)) => {
                return Problem::new(StatusCode::BAD_REQUEST, "at", format!("at: {e}")).response();
            }
        };
        let request = match revocation_request(parsed) {
            Ok(request) => request,
            Err(problem) => return problem.response(),
        };
        // A time to come is scheduled; a time already past is an immediate revocation.
        if let Some(at) = at.filter(|at| *at > self.va.now()) {
            return self.schedule(request, at).await;
        }
        // A revocation is answered only once OCSP says so: with the token gone, refuse now
        // and change nothing (the caller retries).
        if !self.hsm.status().available {
            return hsm_unavailable();
        }
        // The last known state may be stale (a token gone since the last call): ask the token.
        let responder = self.va.responder.clone();
        if !tokio::task::spawn_blocking(move || responder.signer_ready())
            .await
            .unwrap_or(false)
        {
            return hsm_unavailable();
        }
        to_the_end(async move { self.revoke_parsed(request).await }).await
    }

    /// `sceau revoke --at`: records the revocation for its time.
    async fn schedule(&self, request: RevocationRequest, at: Timestamp) -> Response<Body> {
        let ca = self.ca.clone();
        let now = self.va.now();
        let scheduled = tokio::task::spawn_blocking(move || {
            let entry = crate::ca::schedule::ScheduledRevocation::new(
                crate::ca::random_card_id()?,
                &request.target,
                at,
                request.reason,
                "cli".into(),
                now,
            );
            ca.schedule_revocation(entry.clone()).map(|()| entry)
        })
        .await;
        match scheduled {
            Ok(Ok(entry)) => json(
                StatusCode::CREATED,
                &serde_json::json!({ "scheduled": entry }),
            ),
            Ok(Err(error)) => ca_problem(&error).response(),
            Err(_) => shutting_down().response(),
        }
    }

    /// `sceau backup` while the daemon holds the store.
    async fn backup(self: Arc<Self>, request: Request<Incoming>) -> Response<Body> {
        let parsed: BackupBody = match small_json_body(request).await {
            Ok(parsed) => parsed,
            Err(problem) => return problem.response(),
        };
        if !parsed.out.is_absolute() {
            return Problem::new(StatusCode::BAD_REQUEST, "out", "out: give an absolute path")
                .response();
        }
        let (store, config, now) = (self.store.clone(), self.config.clone(), self.va.now());
        let made = tokio::task::spawn_blocking(move || {
            crate::backup::create(
                &store,
                &config.certs_dir(),
                &config.publish_dir,
                &parsed.out,
                now,
            )
        })
        .await;
        match made {
            Ok(Ok(manifest)) => json(StatusCode::CREATED, &serde_json::json!(manifest)),
            Ok(Err(error)) => {
                Problem::new(StatusCode::BAD_REQUEST, "backup", error.to_string()).response()
            }
            Err(_) => shutting_down().response(),
        }
    }

    /// `sceau scheduled cancel`.
    async fn cancel_scheduled(self: Arc<Self>, request: Request<Incoming>) -> Response<Body> {
        let parsed: CancelBody = match small_json_body(request).await {
            Ok(parsed) => parsed,
            Err(problem) => return problem.response(),
        };
        let ca = self.ca.clone();
        match tokio::task::spawn_blocking(move || ca.cancel_scheduled(&parsed.id, "cli")).await {
            Ok(Ok(entry)) => json(StatusCode::OK, &serde_json::json!({ "cancelled": entry })),
            Ok(Err(error)) => ca_problem(&error).response(),
            Err(_) => shutting_down().response(),
        }
    }

    /// Commits a revocation and makes OCSP say so (and the CRL follow), then answers.
    async fn revoke_parsed(&self, request: RevocationRequest) -> Response<Body> {
        let store = self.store.clone();
        let now = self.va.now();
        let revoked = match tokio::task::spawn_blocking(move || revoke(&store, request, now)).await
        {
            Ok(Ok(revoked)) => revoked,
            Ok(Err(error)) => return ca_problem(&error).response(),
            Err(_) => {
                return shutting_down().response();
            }
        };
        // Durable in the store; now make OCSP say so before answering.
        let ocsp = match self.va.after_revocation(&revoked).await {
            Ok(()) => "revoked",
            Err(error) => {
                tracing::error!(%error, "revocation stored, but its OCSP responses could not be signed yet");
                "pending: OCSP answers tryLater for it until the HSM signs its responses"
            }
        };
        for r in &revoked {
            tracing::info!(serial = %r.key.serial, reason = %r.reason, "certificate revoked");
        }
        json(
            StatusCode::OK,
            &serde_json::json!({ "revoked": revoked, "ocsp": ocsp }),
        )
    }

    /// `sceau issue`, `sceau card issue` and `sceau ra bootstrap` while the daemon holds the
    /// store.
    async fn command(self: Arc<Self>, request: Request<Incoming>) -> Response<Body> {
        let path = request.uri().path().to_owned();
        let body = match read_body_within(request.into_body(), 256 * 1024).await {
            Ok(body) => body,
            Err(problem) => return problem.response(),
        };
        let parsed = |body: &[u8]| -> Result<AdminCommand, Problem> {
            let command = match path.as_str() {
                "/admin/issue" => serde_json::from_slice(body).map(AdminCommand::Issue),
                "/admin/card" => serde_json::from_slice(body).map(AdminCommand::Card),
                _ => serde_json::from_slice(body).map(AdminCommand::Bootstrap),
            };
            command
                .map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "malformed-json", e.to_string()))
        };
        let command = match parsed(&body) {
            Ok(command) => command,
            Err(problem) => return problem.response(),
        };
        to_the_end(async move { self.command_parsed(command).await }).await
    }

    /// Runs an issuance or a bootstrap, and signs the OCSP responses of what it issued, then
    /// answers.
    async fn command_parsed(&self, command: AdminCommand) -> Response<Body> {
        let ca = self.ca.clone();
        let store = self.store.clone();
        let now = self.va.now();
        let outcome = tokio::task::spawn_blocking(move || {
            let state = crate::ca::load_state(&store)
                .map_err(|e| ca_problem(&e))?
                .ok_or_else(|| {
                    Problem::new(
                        StatusCode::CONFLICT,
                        "not-initialized",
                        "no CA in this store",
                    )
                })?;
            command.run(&ca, &state, &store, now)
        })
        .await;
        match outcome {
            Ok(Ok((value, issued))) => {
                for key in &issued {
                    tracing::info!(issuer = %key.issuer, serial = %key.serial, card = value["card"].as_str().unwrap_or("-"), "certificate issued");
                }
                if !issued.is_empty()
                    && let Err(error) = self.va.after_issuance(&issued).await
                {
                    tracing::error!(%error, "certificates stored, but their OCSP responses could not be signed yet");
                }
                json(StatusCode::OK, &value)
            }
            Ok(Err(problem)) => problem.response(),
            Err(_) => shutting_down().response(),
        }
    }

    /// `sceau ocsp renew-signer`: a new responder key and certificate, then every response
    /// re-signed with it before answering.
    async fn renew_signer(self: Arc<Self>) -> Response<Body> {
        if !self.hsm.status().available {
            return hsm_unavailable();
        }
        to_the_end(async move {
            let renewed =
                renew_responders(&self.config, &self.store, &self.hsm, &self.va, true).await;
            // A failed renewal revokes what it signed: the CRL follows.
            self.va.crls.trigger.notify_one();
            match renewed {
                Ok(value) => json(StatusCode::OK, &value),
                Err(problem) => problem.response(),
            }
        })
        .await
    }

    /// `sceau publish --all`: the publisher puts every status again, then the manifest that
    /// tells responder nodes the bucket is whole. 202: it runs in the background (seconds per
    /// hundred thousand certificates; `sceau_publisher_full_publications_total` counts them).
    fn publish_all(&self) -> Response<Body> {
        match &self.publisher {
            Some(publisher) => {
                publisher.request_full();
                json(
                    StatusCode::ACCEPTED,
                    &serde_json::json!({"full_publication": "requested", "statuses": self.va.responder.entries()}),
                )
            }
            None => Problem::new(
                StatusCode::CONFLICT,
                "no-engine",
                "[nats] is not configured: there is no engine to publish to",
            )
            .response(),
        }
    }

    /// `sceau ca rotate [--root]`: the key ceremony, then everything it changed put in force
    /// without a restart. For an issuing CA, in this order: OCSP answers for it and its CRL is
    /// published, then new certificates are issued by it (their CRL URL already resolves).
    async fn rotate(
        self: Arc<Self>,
        rollover: Rollover,
        request: Request<Incoming>,
    ) -> Response<Body> {
        let body: RotateBody = match small_json_body(request).await {
            Ok(body) => body,
            Err(problem) => return problem.response(),
        };
        if !self.hsm.status().available {
            return hsm_unavailable();
        }
        to_the_end(async move { self.rotate_parsed(rollover, body).await }).await
    }

    /// The ceremony and everything it puts in force, then the answer.
    async fn rotate_parsed(&self, rollover: Rollover, body: RotateBody) -> Response<Body> {
        let (config, store, hsm, now) = (
            self.config.clone(),
            self.store.clone(),
            self.hsm.clone(),
            self.va.now(),
        );
        let name = body.common_name;
        let ceremony = tokio::task::spawn_blocking(move || match rollover {
            Rollover::Issuing => {
                crate::ca::ceremony::rotate_issuing(&config, &store, &hsm, now, name.as_deref())
                    .map(|r| (r.state, Some((r.issuing, r.responder))))
            }
            Rollover::Root => {
                crate::ca::ceremony::rotate_root(&config, &store, &hsm, now, name.as_deref())
                    .map(|s| (s, None))
            }
        })
        .await;
        // A failed ceremony revokes what it signed; a successful one adds a CRL or an ARL.
        self.va.crls.trigger.notify_one();
        let (state, issuing) = match ceremony {
            Ok(Ok(done)) => done,
            Ok(Err(error)) => return ca_problem(&error).response(),
            Err(_) => return shutting_down().response(),
        };
        let applied = async {
            self.va.after_rollover(&self.hsm, &state).await.map_err(|e| {
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "rollover-incomplete",
                    format!("the new CA is stored, but the daemon could not put it in force (restart it): {e}"),
                )
            })?;
            let Some((issuing, responder)) = &issuing else {
                let root = state.root.as_ref().map(|r| r.name.clone());
                return Ok(serde_json::json!({ "root": root, "links": state.root_links.last().map(|l| [format!("{}-signed-by-{}", l.new, l.old), format!("{}-signed-by-{}", l.old, l.new)]) }));
            };
            if let Some(key) = responder_certificate_key(responder) {
                self.va.after_issuance(&[key]).await.map_err(|e| {
                    Problem::new(StatusCode::SERVICE_UNAVAILABLE, "resigning-failed", e.to_string())
                })?;
            }
            let issuer = crate::ca::Issuer::load(&self.hsm, issuing).map_err(|e| ca_problem(&e.into()))?;
            self.ca.switch_issuer(issuer);
            let (not_before, not_after) = readable_validity(issuing);
            Ok::<_, Problem>(serde_json::json!({
                "issuing": issuing.name,
                "key_label": issuing.key_label,
                "not_before": not_before,
                "not_after": not_after,
                "responder": responder.name,
                "previous": state.issuing.iter().rev().skip(1).map(|c| c.name.clone()).collect::<Vec<_>>(),
            }))
        }
        .await;
        match applied {
            Ok(value) => {
                if let Some(hook) = &self.on_rollover {
                    hook(&state);
                }
                json(StatusCode::OK, &value)
            }
            Err(problem) => problem.response(),
        }
    }

    async fn checkpoint(&self) -> Response<Body> {
        let store = self.store.clone();
        let hsm = self.hsm.clone();
        let label = self.audit_key_label.clone();
        let watch = self.audit_watch.clone();
        match tokio::task::spawn_blocking(move || watch.checkpoint_or_verify(&store, &hsm, &label))
            .await
        {
            Ok(Ok(signed)) => json(StatusCode::OK, &crate::cli::checkpoint_answer(signed)),
            Ok(Err(error)) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "checkpoint-failed",
                error.to_string(),
            )
            .response(),
            Err(_) => shutting_down().response(),
        }
    }

    async fn crl(&self) -> Response<Body> {
        let crls = self.va.crls.clone();
        let now = self.va.now();
        match tokio::task::spawn_blocking(move || crls.publish_all(now)).await {
            Ok(Ok(published)) => json(StatusCode::OK, &published),
            Ok(Err(error)) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "crl-failed",
                error.to_string(),
            )
            .response(),
            Err(_) => shutting_down().response(),
        }
    }

    fn metrics(&self) -> Response<Body> {
        let m = &self.va.metrics;
        let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        let hsm = self.hsm.status();
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            for (labels, value) in samples {
                out.push_str(&format!("{name}{labels} {value}\n"));
            }
        };
        let expiring = self.expiring.get();
        metric(
            "sceau_certificates_expiring",
            "gauge",
            "Unrevoked certificates whose notAfter falls within the next N days (counted every minute)",
            &[
                ("{within_days=\"30\"}", expiring[0]),
                ("{within_days=\"60\"}", expiring[1]),
                ("{within_days=\"90\"}", expiring[2]),
            ],
        );
        metric(
            "sceau_ocsp_requests_total",
            "counter",
            "OCSP requests by method",
            &[
                ("{method=\"get\"}", m.ocsp_get.get()),
                ("{method=\"post\"}", m.ocsp_post.get()),
            ],
        );
        metric(
            "sceau_ocsp_responses_total",
            "counter",
            "OCSP answers by kind",
            &[
                ("{kind=\"presigned\"}", m.ocsp_presigned.get()),
                ("{kind=\"live\"}", m.ocsp_live.get()),
                ("{kind=\"not_modified\"}", m.ocsp_not_modified.get()),
                ("{kind=\"malformed_request\"}", m.ocsp_malformed.get()),
                ("{kind=\"unauthorized\"}", m.ocsp_unauthorized.get()),
                ("{kind=\"try_later\"}", m.ocsp_try_later.get()),
            ],
        );
        metric(
            "sceau_ocsp_signatures_total",
            "counter",
            "OCSP responses signed",
            &[
                ("{kind=\"ahead\"}", get(&m.presigned)),
                ("{kind=\"live\"}", get(&m.live_signed)),
            ],
        );
        metric(
            "sceau_ocsp_live_refused_total",
            "counter",
            "live signatures refused past the bound",
            &[("", get(&m.live_refused))],
        );
        metric(
            "sceau_ocsp_certificates",
            "gauge",
            "certificates with responses in memory",
            &[("", self.va.responder.entries())],
        );
        if let Some(publisher) = &self.publisher {
            metric(
                "sceau_outbox_depth",
                "gauge",
                "changes waiting to be published to responder nodes (up to one batch)",
                &[("", get(&publisher.depth))],
            );
            metric(
                "sceau_publication_lag_seconds",
                "gauge",
                "how long the oldest waiting change has waited",
                &[("", publisher.lag_seconds(self.va.now()))],
            );
            metric(
                "sceau_published_total",
                "counter",
                "changes published to the engine",
                &[("", get(&publisher.published))],
            );
            metric(
                "sceau_engine_connected",
                "gauge",
                "1 while the publisher is connected to the engine",
                &[("", get(&publisher.connected))],
            );
            metric(
                "sceau_publisher_full_publications_total",
                "counter",
                "full publications of every status (new, re-created or short bucket; sceau publish --all)",
                &[("", get(&publisher.full_publications))],
            );
            metric(
                "sceau_publisher_last_full_publication_ms",
                "gauge",
                "how long the last full publication took",
                &[("", get(&publisher.last_full_publication_ms))],
            );
        }
        metric(
            "sceau_audit_chain_broken",
            "gauge",
            "1 when the last check found the audit chain broken (no checkpoint vouches for it)",
            &[("", u64::from(self.audit_watch.broken().is_some()))],
        );
        metric(
            "sceau_audit_last_checkpoint",
            "gauge",
            "the audit entry the last checkpoint signed by this process vouches for",
            &[("", self.audit_watch.last_signed().map_or(0, |h| h.seq))],
        );
        metric(
            "sceau_revocations_total",
            "counter",
            "revocations processed",
            &[("", get(&m.revocations))],
        );
        metric(
            "sceau_hsm_available",
            "gauge",
            "1 when the HSM answers",
            &[("", u64::from(hsm.available))],
        );
        metric(
            "sceau_hsm_queue_depth",
            "gauge",
            "signing jobs waiting for a session",
            &[("", hsm.queue_depth as u64)],
        );
        metric(
            "sceau_hsm_errors_total",
            "counter",
            "HSM session or device errors",
            &[("", hsm.errors)],
        );
        metric(
            "sceau_hsm_reconnects_total",
            "counter",
            "HSM reconnections",
            &[("", hsm.reconnects)],
        );
        let now = self.va.now().unix_seconds();
        let crls = self.va.crls.all_latest();
        let numbers: Vec<(String, u64)> = crls
            .iter()
            .map(|c| (format!("{{crl=\"{}\"}}", c.name), c.number))
            .collect();
        let ages: Vec<(String, u64)> = crls
            .iter()
            .map(|c| {
                (
                    format!("{{crl=\"{}\"}}", c.name),
                    now.saturating_sub(c.this_update.unix_seconds()),
                )
            })
            .collect();
        metric(
            "sceau_crl_number",
            "gauge",
            "number of the last CRL published",
            &as_refs(&numbers),
        );
        metric(
            "sceau_crl_age_seconds",
            "gauge",
            "age of the last CRL published",
            &as_refs(&ages),
        );
        metric(
            "sceau_certificates_issued_total",
            "counter",
            "certificates issued through the daemon (their OCSP responses signed)",
            &[("", get(&m.issued))],
        );
        if let Some(ra) = &self.ra_metrics {
            metric(
                "sceau_ra_requests_total",
                "counter",
                "requests on the registration authority listener",
                &[("", get(&ra.requests))],
            );
            metric(
                "sceau_ra_refused_total",
                "counter",
                "RA requests answered with an error status",
                &[("", get(&ra.refused))],
            );
            metric(
                "sceau_ra_rate_limited_total",
                "counter",
                "RA requests refused by an operator's rate limit (429)",
                &[("", get(&ra.rate_limited))],
            );
        }
        let (buckets, sum_us) = m.latency.snapshot();
        out.push_str("# HELP sceau_ocsp_request_duration_seconds OCSP request durations\n");
        out.push_str("# TYPE sceau_ocsp_request_duration_seconds histogram\n");
        for (bound, count) in crate::va::LATENCY_BUCKETS_US.iter().zip(&buckets) {
            out.push_str(&format!(
                "sceau_ocsp_request_duration_seconds_bucket{{le=\"{}\"}} {count}\n",
                *bound as f64 / 1e6
            ));
        }
        let total = buckets.last().copied().unwrap_or(0);
        out.push_str(&format!(
            "sceau_ocsp_request_duration_seconds_bucket{{le=\"+Inf\"}} {total}\n\
             sceau_ocsp_request_duration_seconds_sum {}\n\
             sceau_ocsp_request_duration_seconds_count {total}\n",
            sum_us as f64 / 1e6
        ));
        let mut response = Response::new(Body::one(out));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        );
        response
    }
}

fn as_refs(samples: &[(String, u64)]) -> Vec<(&str, u64)> {
    samples
        .iter()
        .map(|(labels, value)| (labels.as_str(), *value))
        .collect()
}

/// `POST /admin/issue`: one certificate (`sceau issue`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueBody {
    pub policy: String,
    /// PEM.
    pub csr: String,
    pub holder: Option<String>,
    pub not_after: Option<String>,
}

/// `POST /admin/card`: both certificates of a card (`sceau card issue`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CardBody {
    pub holder: String,
    pub card: Option<String>,
    pub authentication_csr: String,
    pub signature_csr: String,
    pub authentication_policy: String,
    pub signature_policy: String,
}

/// `POST /admin/ra/bootstrap`: the first AE (`sceau ra bootstrap`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapBody {
    /// The AE's card: its authentication certificate becomes the credential.
    pub card: String,
    pub scope: crate::ra::operators::Scope,
}

enum AdminCommand {
    Issue(IssueBody),
    Card(CardBody),
    Bootstrap(BootstrapBody),
}

type CommandOutcome = Result<(serde_json::Value, Vec<CertKey>), Problem>;

impl AdminCommand {
    /// Runs the command (blocking: the HSM signs); returns the answer and what was issued.
    fn run(
        self,
        ca: &CertificateAuthority,
        state: &CaState,
        store: &Store,
        now: Timestamp,
    ) -> CommandOutcome {
        let key = |c: &IssuedCertificate| CertKey {
            issuer: c.issuer,
            serial: c.serial.clone(),
        };
        let view = |c: &IssuedCertificate| serde_json::json!({ "serial": c.serial.to_hex(), "policy": c.policy, "certificate": c.pem() });
        match self {
            AdminCommand::Issue(body) => {
                let not_after = match &body.not_after {
                    Some(text) => Some(Timestamp::parse_rfc3339(text).map_err(|e| {
                        Problem::new(
                            StatusCode::BAD_REQUEST,
                            "not-after",
                            format!("{text:?}: {e}"),
                        )
                    })?),
                    None => None,
                };
                let request = IssuanceRequest {
                    policy: body.policy,
                    csr: body.csr.into_bytes(),
                    subject: None,
                    not_after,
                };
                let issued = ca
                    .issue(&request, body.holder.as_deref())
                    .map_err(|e| ca_problem(&e))?;
                Ok((view(&issued), vec![key(&issued)]))
            }
            AdminCommand::Card(body) => {
                let request = CardRequest {
                    holder: body.holder,
                    card: body.card,
                    authentication: IssuanceRequest {
                        policy: body.authentication_policy,
                        csr: body.authentication_csr.into_bytes(),
                        ..Default::default()
                    },
                    signature: IssuanceRequest {
                        policy: body.signature_policy,
                        csr: body.signature_csr.into_bytes(),
                        ..Default::default()
                    },
                };
                let card = ca.issue_card(&request).map_err(|e| ca_problem(&e))?;
                let value = serde_json::json!({
                    "card": card.card,
                    "holder": card.holder,
                    "authentication": view(&card.authentication),
                    "signature": view(&card.signature),
                });
                Ok((value, vec![key(&card.authentication), key(&card.signature)]))
            }
            AdminCommand::Bootstrap(body) => {
                let record = crate::ra::bootstrap(store, state, &body.card, body.scope, now)
                    .map_err(|e| {
                        Problem::new(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            &e.rule().unwrap_or_else(|| "internal".into()),
                            e.to_string(),
                        )
                    })?;
                Ok((
                    serde_json::json!({ "operator": record.id, "role": record.role, "subject": record.subject, "scope": record.scope }),
                    Vec::new(),
                ))
            }
        }
    }
}

/// Whether two secrets are equal, compared in constant time (for their common length).
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The proof that whoever answers knows the admin token: HMAC-SHA256 under the token of a
/// label and the client's challenge, hexadecimal.
pub fn identity_proof(token: &str, challenge: &[u8]) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, token.as_bytes());
    let mut context = aws_lc_rs::hmac::Context::with_key(&key);
    context.update(b"sceau admin identity\0");
    context.update(challenge);
    hex::encode(context.sign().as_ref())
}

/// Runs the rest of a request (a commit and what must follow it) in a task of its own: hyper
/// drops a request's future when its client hangs up, and a committed change must still reach
/// OCSP, the CRL publisher and the issuer in force. Only the answer is lost with the client.
async fn to_the_end(work: impl Future<Output = Response<Body>> + Send + 'static) -> Response<Body> {
    tokio::spawn(work)
        .await
        .unwrap_or_else(|_| shutting_down().response())
}

fn revocation_request(body: RevokeBody) -> Result<RevocationRequest, Problem> {
    let bad = |rule: &str, detail: String| Problem::new(StatusCode::BAD_REQUEST, rule, detail);
    let target = match (body.serial, body.card) {
        (Some(serial), None) => RevocationTarget::Serial(
            Serial::from_hex(&serial)
                .map_err(|e| bad("serial", format!("serial {serial:?}: {e}")))?,
        ),
        (None, Some(card)) => RevocationTarget::Card(card),
        _ => return Err(bad("target", "give exactly one of serial and card".into())),
    };
    let reason: RevocationReason = match (&body.reason, &body.at) {
        (Some(reason), _) => reason.parse().map_err(|e: String| bad("reason", e))?,
        (None, Some(_)) => RevocationReason::AffiliationChanged,
        (None, None) => return Err(bad("reason", "give a reason".into())),
    };
    let invalidity_date = match body.invalidity_date {
        Some(text) => Some(
            Timestamp::parse_rfc3339(&text)
                .map_err(|e| bad("invalidity-date", format!("{text:?}: {e}")))?,
        ),
        None => None,
    };
    Ok(RevocationRequest {
        target,
        reason,
        invalidity_date,
        requested_by: "admin-api".into(),
    })
}

/// A CA error as a problem document, with the status that fits it.
pub fn ca_problem(error: &CaError) -> Problem {
    let (status, rule) = match error {
        CaError::NotFound(_) => (StatusCode::NOT_FOUND, "not-found"),
        CaError::AlreadyRevoked(_) => (StatusCode::CONFLICT, "already-revoked"),
        CaError::Refused(_) => (StatusCode::BAD_REQUEST, "refused"),
        CaError::Rejected(rejection) => {
            return Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                &rejection.problem_rule(),
                error.to_string(),
            );
        }
        CaError::UnknownPolicy { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "unknown-policy"),
        e if e.is_unavailable() => (StatusCode::SERVICE_UNAVAILABLE, "hsm-unavailable"),
        CaError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "store-unavailable"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    };
    Problem::new(status, rule, error.to_string())
}

/// A JSON request body of at most 16 KiB.
async fn small_json_body<T: serde::de::DeserializeOwned>(
    request: Request<Incoming>,
) -> Result<T, Problem> {
    let body = read_body_within(request.into_body(), 16 * 1024).await?;
    serde_json::from_slice(&body)
        .map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "malformed-json", e.to_string()))
}

/// `POST /admin/ca/rotate` and `/admin/ca/rotate-root`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    /// The new CA's common name (default: the configured one followed by the generation).
    pub common_name: Option<String>,
}

/// Which key `sceau ca rotate` replaces.
#[derive(Copy, Clone, Debug)]
enum Rollover {
    Issuing,
    Root,
}

/// Renews the delegated OCSP responders (key, certificate, state) of the issuing CAs in
/// service, every one when `force`, else those past two thirds of their life, and re-signs
/// their responses; what the admin API and the daemon's renewal task both do.
pub async fn renew_responders(
    config: &crate::config::Config,
    store: &Store,
    hsm: &Hsm,
    va: &ValidationAuthority,
    force: bool,
) -> Result<serde_json::Value, Problem> {
    let now = va.now();
    let state = crate::ca::load_state(store)
        .map_err(|e| ca_problem(&e))?
        .ok_or_else(|| Problem::new(StatusCode::CONFLICT, "not-initialized", "no CA"))?;
    let mut renewed = Vec::new();
    let mut resigned = 0;
    for issuing in state.responders_due(now, force) {
        let issuer = crate::ca::Issuer::load(hsm, issuing).map_err(|e| ca_problem(&e.into()))?;
        let (config, store_owned, hsm_owned, name) = (
            config.clone(),
            store.clone(),
            hsm.clone(),
            issuing.name.clone(),
        );
        let stored = tokio::task::spawn_blocking(move || {
            crate::ca::ceremony::renew_responder(&config, &store_owned, &hsm_owned, now, &name)
        })
        .await
        .map_err(|_| shutting_down())?
        .map_err(|e| ca_problem(&e))?;
        resigned += va.renew_signer(hsm, issuer.id, &stored).await.map_err(|e| {
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "resigning-failed",
                format!("the new responder is in force, but re-signing failed (retried in the background): {e}"),
            )
        })?;
        // The new responder certificate is a certificate of the issuing CA like any other:
        // OCSP answers for it too.
        if let Some(key) = responder_certificate_key(&stored)
            && let Err(error) = va.after_issuance(&[key]).await
        {
            tracing::warn!(%error, "the new responder certificate's own OCSP responses are signed later");
        }
        let (not_before, not_after) = readable_validity(&stored);
        renewed.push(serde_json::json!({
            "issuing": issuing.name,
            "responder": stored.name,
            "key_label": stored.key_label,
            "not_before": not_before,
            "not_after": not_after,
        }));
    }
    Ok(serde_json::json!({ "renewed": renewed, "responses_resigned": resigned }))
}

/// notBefore and notAfter of a CA certificate, as text for people.
fn readable_validity(stored: &crate::ca::state::StoredCa) -> (Option<String>, Option<String>) {
    stored
        .validity()
        .map(|(start, end)| (start.to_string(), end.to_string()))
        .unzip()
}

/// The store key of a responder certificate (its issuer from the AKI, its serial).
fn responder_certificate_key(stored: &crate::ca::state::StoredCa) -> Option<CertKey> {
    let certificate: x509_cert::Certificate = der::Decode::from_der(&stored.certificate).ok()?;
    let serial =
        crate::x509::Serial::from_serial_number(certificate.tbs_certificate().serial_number())
            .ok()?;
    Some(CertKey {
        issuer: crate::store::IssuerId(stored.authority_key_identifier()?),
        serial,
    })
}

/// The problem of a command whose blocking task was cancelled: the daemon is stopping.
fn shutting_down() -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "shutting-down",
        "the daemon is stopping",
    )
}

/// The problem of a request refused while the token is unavailable.
pub fn hsm_unavailable_problem() -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "hsm-unavailable",
        "the HSM token is unavailable; nothing was changed, retry later",
    )
}

/// 503 while the token is unavailable.
pub fn hsm_unavailable() -> Response<Body> {
    let mut response = hsm_unavailable_problem().response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
    response
}

fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let mut response = Response::new(Body::one(serde_json::to_vec(value).unwrap_or_default()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
