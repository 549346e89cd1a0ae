//! The administration listener (`[listen] admin`, loopback): health, readiness and metrics,
//! and the CLI's commands while the daemon holds the store. A handler parses, authorises (the
//! bearer token of `<data_dir>/admin.token`), calls the service layer ([`crate::service`]) and
//! maps its answer; it touches neither the store nor the token.

use std::convert::Infallible;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;

use super::problem::Problem;
use super::{Body, read_body_within};
use crate::service::wire::{
    BackupBody, BootstrapBody, CancelBody, CardBody, IssueBody, ProposeBody, RevokeBody, Rollover,
    RotateBody, RunBody,
};
use crate::service::{Service, ServiceError};
use crate::va::ValidationAuthority;

/// What the administration listener serves.
pub struct AdminService {
    pub service: Service,
    pub va: Arc<ValidationAuthority>,
    /// The RA listener's counters, when it runs.
    pub ra_metrics: Option<Arc<crate::http::ra::RaMetrics>>,
    pub token: String,
    pub health: Arc<dyn Fn() -> (bool, serde_json::Value) + Send + Sync>,
    /// The audit chain as the last checkpoint found it.
    pub audit_watch: Arc<crate::audit::checkpoint::ChainWatch>,
    /// The publisher to responder nodes, when `[nats]` is configured.
    pub publisher: Option<Arc<crate::va::publish::PublisherMetrics>>,
    /// Certificates ending within 30, 60 and 90 days, as last counted.
    pub expiring: Arc<crate::ca::expiry::ExpiringGauge>,
}

impl core::fmt::Debug for AdminService {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AdminService").finish()
    }
}

/// The routes of the administration listener.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) enum Route {
    Health,
    Ready,
    Metrics,
    Identity,
    Revoke,
    CancelScheduled,
    Backup,
    Crl,
    CaState,
    RenewSigner,
    PublishAll,
    Rotate(Rollover),
    Checkpoint,
    BundleMark,
    Issue,
    Card,
    Bootstrap,
    Propose,
    CarryOut,
    /// `sceau unseal` (served by [`super::sealed::SealedAdmin`] while the daemon is sealed).
    UnsealChallenge,
    Unseal,
}

impl Route {
    /// The route at `path`, its method, and whether it needs the admin token.
    pub(super) fn find(path: &str) -> Option<(Route, Method, bool)> {
        let (route, method) = match path {
            "/healthz" => (Route::Health, Method::GET),
            "/readyz" => (Route::Ready, Method::GET),
            "/metrics" => (Route::Metrics, Method::GET),
            // No token needed: the daemon proves it knows the token before a client sends it.
            "/admin/identity" => return Some((Route::Identity, Method::POST, false)),
            "/admin/revoke" => (Route::Revoke, Method::POST),
            "/admin/revoke/cancel" => (Route::CancelScheduled, Method::POST),
            "/admin/backup" => (Route::Backup, Method::POST),
            "/admin/crl" => (Route::Crl, Method::POST),
            // The CA certificates (no secret in there), for `sceau ca export`.
            "/admin/ca/state" => (Route::CaState, Method::POST),
            "/admin/ocsp/renew-signer" => (Route::RenewSigner, Method::POST),
            "/admin/publish/all" => (Route::PublishAll, Method::POST),
            "/admin/ca/rotate" => (Route::Rotate(Rollover::Issuing), Method::POST),
            "/admin/ca/rotate-root" => (Route::Rotate(Rollover::Root), Method::POST),
            "/admin/audit/checkpoint" => (Route::Checkpoint, Method::POST),
            "/admin/audit/bundle-mark" => (Route::BundleMark, Method::POST),
            "/admin/issue" => (Route::Issue, Method::POST),
            "/admin/card" => (Route::Card, Method::POST),
            "/admin/ra/bootstrap" => (Route::Bootstrap, Method::POST),
            "/admin/ceremony/propose" => (Route::Propose, Method::POST),
            "/admin/ceremony/run" => (Route::CarryOut, Method::POST),
            "/admin/unseal/challenge" => (Route::UnsealChallenge, Method::POST),
            "/admin/unseal" => (Route::Unseal, Method::POST),
            _ => return None,
        };
        Some((route, method.clone(), method == Method::POST))
    }
}

impl AdminService {
    pub async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
    ) -> Result<Response<Body>, Infallible> {
        let Some((route, method, needs_token)) = Route::find(request.uri().path()) else {
            return Ok(
                Problem::new(StatusCode::NOT_FOUND, "not-found", "no such resource").response(),
            );
        };
        if request.method() != method {
            return Ok(Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "wrong method",
            )
            .response());
        }
        if needs_token && let Err(problem) = authorize(&self.token, &request) {
            return Ok(problem.response());
        }
        Ok(match self.serve(route, request).await {
            Ok(response) => response,
            Err(problem) => problem.response(),
        })
    }

    async fn serve(
        &self,
        route: Route,
        request: Request<Incoming>,
    ) -> Result<Response<Body>, Problem> {
        let service = &self.service;
        Ok(match route {
            Route::Health => super::va::health(&*self.health),
            // Ready once the responses missing at start-up are signed (until then, OCSP
            // answers tryLater for those certificates).
            Route::Ready => {
                let ready = self.va.is_ready();
                let status = if ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                json(status, &serde_json::json!({ "ready": ready }))
            }
            Route::Metrics => {
                let mut response = Response::new(Body::one(super::metrics::render(self)));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                response
            }
            Route::Identity => identity(&self.token, request).await?,
            Route::UnsealChallenge | Route::Unseal => {
                return Err(Problem::new(
                    StatusCode::CONFLICT,
                    "not-sealed",
                    "the daemon is not sealed: the officers' shares made its PIN already",
                ));
            }
            Route::Revoke => {
                let body: RevokeBody = json_body(request, SMALL_BODY_LIMIT).await?;
                use crate::service::revocation::Revocation;
                match Revocation::parse(body, "admin-api", service.now()).map_err(problem)? {
                    Revocation::Now(request) => json(
                        StatusCode::OK,
                        &service.revoke(request).await.map_err(problem)?,
                    ),
                    Revocation::At(request, at) => json(
                        StatusCode::CREATED,
                        &service.schedule(request, at).await.map_err(problem)?,
                    ),
                }
            }
            Route::CancelScheduled => {
                let body: CancelBody = json_body(request, SMALL_BODY_LIMIT).await?;
                let cancelled = service.cancel_scheduled(body.id, "cli").await;
                json(StatusCode::OK, &cancelled.map_err(problem)?)
            }
            Route::Backup => {
                let body: BackupBody = json_body(request, SMALL_BODY_LIMIT).await?;
                json(
                    StatusCode::CREATED,
                    &service.backup(body).await.map_err(problem)?,
                )
            }
            Route::Crl => json(
                StatusCode::OK,
                &service.publish_crls().await.map_err(problem)?,
            ),
            Route::CaState => match service.ca_state().await {
                Ok(state) => json(StatusCode::OK, &state),
                Err(ServiceError::NotInitialized) => {
                    Problem::new(StatusCode::NOT_FOUND, "not-initialized", "no CA").response()
                }
                Err(error) => return Err(problem(error)),
            },
            Route::RenewSigner => json(
                StatusCode::OK,
                &service.renew_responders(true).await.map_err(problem)?,
            ),
            // 202: it runs in the background (seconds per hundred thousand certificates;
            // `sceau_publisher_full_publications_total` counts them).
            Route::PublishAll => json(
                StatusCode::ACCEPTED,
                &service.publish_all().map_err(problem)?,
            ),
            Route::Rotate(rollover) => {
                let body: RotateBody = json_body(request, SMALL_BODY_LIMIT).await?;
                let rotated = service.rotate(rollover, body.common_name).await;
                json(StatusCode::OK, &rotated.map_err(problem)?)
            }
            Route::Checkpoint => json(
                StatusCode::OK,
                &service.checkpoint().await.map_err(problem)?,
            ),
            Route::BundleMark => {
                let body: crate::service::wire::BundleMarkBody =
                    json_body(request, SMALL_BODY_LIMIT).await?;
                json(
                    StatusCode::OK,
                    &service.mark_bundle(body).await.map_err(problem)?,
                )
            }
            Route::Issue => {
                let body: IssueBody = json_body(request, COMMAND_BODY_LIMIT).await?;
                json(StatusCode::OK, &service.issue(body).await.map_err(problem)?)
            }
            Route::Card => {
                let body: CardBody = json_body(request, COMMAND_BODY_LIMIT).await?;
                json(
                    StatusCode::OK,
                    &service.issue_card(body).await.map_err(problem)?,
                )
            }
            Route::Propose => {
                let body: ProposeBody = json_body(request, COMMAND_BODY_LIMIT).await?;
                let proposal = service.propose(body).await.map_err(problem)?;
                let mut response = Response::new(Body::one(bytes::Bytes::from(proposal)));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                response
            }
            Route::CarryOut => {
                let body: RunBody = json_body(request, COMMAND_BODY_LIMIT).await?;
                json(
                    StatusCode::OK,
                    &service.carry_out(body).await.map_err(problem)?,
                )
            }
            Route::Bootstrap => {
                let body: BootstrapBody = json_body(request, COMMAND_BODY_LIMIT).await?;
                json(
                    StatusCode::OK,
                    &service.bootstrap(body).await.map_err(problem)?,
                )
            }
        })
    }
}

/// `POST /admin/identity {"challenge": hex}`: the daemon answers with an HMAC of the
/// client's challenge under the admin token ([`identity_proof`]), so that the CLI sends its
/// token only to the daemon of its own data directory, never to whatever process listens
/// on the admin address.
pub(super) async fn identity(
    token: &str,
    request: Request<Incoming>,
) -> Result<Response<Body>, Problem> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Challenge {
        challenge: String,
    }
    let body: Challenge = json_body(request, SMALL_BODY_LIMIT).await?;
    match hex::decode(&body.challenge) {
        Ok(challenge) if (16..=64).contains(&challenge.len()) => Ok(json(
            StatusCode::OK,
            &serde_json::json!({ "proof": identity_proof(token, &challenge) }),
        )),
        _ => Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "challenge",
            "the challenge is 16 to 64 octets, hexadecimal",
        )),
    }
}

/// Whether the request carries the admin bearer token.
pub(super) fn authorize(token: &str, request: &Request<Incoming>) -> Result<(), Problem> {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if presented.is_some_and(|p| constant_time_eq(p, token)) {
        Ok(())
    } else {
        Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "admin-token",
            "administration commands need the bearer token from <data_dir>/admin.token",
        ))
    }
}

/// A service error as the problem document the admin API answers.
fn problem(error: ServiceError) -> Problem {
    Problem::from(&error)
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

/// The body of a command that carries CSRs (`issue`, `card`, `bootstrap`).
const COMMAND_BODY_LIMIT: usize = 256 * 1024;

/// The body of every other command.
pub(super) const SMALL_BODY_LIMIT: usize = 16 * 1024;

/// A JSON request body of at most `limit` octets.
pub(super) async fn json_body<T: serde::de::DeserializeOwned>(
    request: Request<Incoming>,
    limit: usize,
) -> Result<T, Problem> {
    let body = read_body_within(request.into_body(), limit).await?;
    serde_json::from_slice(&body)
        .map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "malformed-json", e.to_string()))
}

pub(super) fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let mut response = Response::new(Body::one(serde_json::to_vec(value).unwrap_or_default()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
