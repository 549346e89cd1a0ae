//! The registration-authority listener: HTTPS with mutual TLS (rustls), for the RA applications
//! acting for operators.
//!
//! The client certificate must chain to an operator CA (sceau's issuing CAs: operators carry
//! agent cards). An expired client certificate still completes the handshake when its chain is
//! otherwise valid, so that the refusal can be an HTTP 403 problem document naming the rule
//! rather than a bare TLS alert; every request then turns the certificate into an
//! [`Operator`] (registered, active, valid, not revoked) before anything else.
//!
//! | request | action |
//! | --- | --- |
//! | `GET /ra/v1/operators/me` | the operator's own record |
//! | `POST /ra/v1/operators` | designate (signed) |
//! | `POST /ra/v1/operators/{id}/withdraw` | withdraw, with everyone designated below (signed) |
//! | `POST /ra/v1/requests` | submit a card request (signed) |
//! | `GET /ra/v1/requests/{id}` | a request, with its certificates once issued |
//! | `POST /ra/v1/requests/{id}/approve`, `/reject` | decide (signed) |
//! | `POST /ra/v1/approvals` | approve up to 100 reviewed requests with one signature |
//! | `POST /ra/v1/cards/{card}/renew` | renewal request (signed) |
//! | `POST /ra/v1/revocations` | revoke a certificate or a card, now or at a date (signed) |
//! | `GET /ra/v1/revocations/scheduled` | scheduled revocations in scope |
//! | `POST /ra/v1/revocations/scheduled/{id}/cancel` | cancel one (signed) |
//! | `GET /ra/v1/certificates/expiring?days=N` | certificates in scope ending within N days |
//! | `GET /ra/v1/certificates/{serial}` | a certificate in scope, PEM |
//! | `GET /ra/v1/cards/{card}` | a card in scope, with its handover |
//! | `POST /ra/v1/cards/{card}/deliver` | the handover receipt, countersigned (signed) |
//! | `GET /ra/v1/holder/card` | a holder: their own card |
//! | `POST /ra/v1/holder/card/renew`, `/revoke` | a holder: renew or revoke it (signed by it) |
//!
//! Signed requests are `application/cms` (or `application/pkcs7-mime`) bodies of at most
//! 256 KiB. Each operator has a rate limit (429 with `Retry-After`). Every refusal is an
//! RFC 9457 problem document whose `type` names the rule.
use std::convert::Infallible;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Instant;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use super::problem::Problem;
use super::{Body, read_body_within};
use crate::ra::holders::Holder;
use crate::ra::request::ActionKind;
use crate::ra::{Operator, RaError, Refusal, RegistrationAuthority};

/// Where holders' own routes start.
const HOLDER_PREFIX: &str = "/ra/v1/holder/";
use crate::x509::cms::MAX_CMS_LEN;

mod tls;
pub use tls::{OperatorTrust, tls_config};

/// What the RA listener serves.
pub struct RaService {
    pub ra: Arc<RegistrationAuthority>,
    pub limiter: Arc<DefaultKeyedRateLimiter<String>>,
    pub metrics: Arc<RaMetrics>,
}

impl core::fmt::Debug for RaService {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RaService").finish()
    }
}

/// Counters for /metrics.
#[derive(Debug, Default)]
pub struct RaMetrics {
    pub requests: std::sync::atomic::AtomicU64,
    pub refused: std::sync::atomic::AtomicU64,
    pub rate_limited: std::sync::atomic::AtomicU64,
}

/// A per-operator limiter: `per_minute` requests, with bursts of `burst`.
pub fn rate_limiter(per_minute: u32, burst: u32) -> Arc<DefaultKeyedRateLimiter<String>> {
    let per_minute = NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
    Arc::new(RateLimiter::keyed(
        Quota::per_minute(per_minute).allow_burst(burst),
    ))
}

impl RaService {
    /// Serves one request of the client whose certificate is `peer`.
    pub async fn handle(
        self: Arc<Self>,
        peer: Arc<Vec<u8>>,
        request: Request<Incoming>,
    ) -> Result<Response<Body>, Infallible> {
        let started = Instant::now();
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        self.metrics
            .requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // The body is read whole (bounded) before anything is answered: over HTTP/2, an answer
        // to a request whose body is still arriving (a refusal: wrong media type, rate limit,
        // unknown operator) goes with a reset of the stream, and clients such as curl then
        // report no answer at all.
        let (parts, body) = request.into_parts();
        let body = match read_body_within(body, MAX_CMS_LEN).await {
            Ok(body) => Some(body),
            // A client that trickles its body is cut after the deadline, before anything else.
            Err(problem) if problem.status == 408 => return Ok(problem.response()),
            Err(_) => None,
        };
        // Rate limits come before anything that costs: the operator lookup, signature checks
        // and the audit write of a refusal. They are per client certificate, whether or not it
        // is an operator's (a holder's card could otherwise flood the audit log).
        let client = crate::ra::operators::operator_id(&peer);
        if let Err(not_until) = self.limiter.check_key(&client) {
            self.metrics
                .rate_limited
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.metrics
                .refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Ok(rate_limited(not_until));
        }
        // Holders reach only their own routes, authenticated as holders of a card; operators
        // reach theirs (and, holding a card, the holder routes too).
        if path.starts_with(HOLDER_PREFIX) {
            let (client, response) = match self.ra.authenticate_holder(&peer) {
                Ok(holder) => {
                    let response = self.route_holder(&parts, body, &holder).await;
                    (holder.client(), response)
                }
                Err(error) => {
                    let id = format!("holder-certificate:{client}");
                    self.ra
                        .record_early_refusal(&id, "authenticate", &error)
                        .await;
                    (id, problem_for(&error).response())
                }
            };
            return Ok(self.finish(started, &method, &path, Some(client), response));
        }
        let (operator, response) = match self.ra.authenticate(&peer) {
            Ok(operator) => {
                let response = self.route(&operator, &parts, body).await;
                (Some(operator.record.id), response)
            }
            Err(error) => {
                let id = crate::ra::operators::operator_id(&peer);
                self.ra
                    .record_early_refusal(&id, "authenticate", &error)
                    .await;
                (Some(id), problem_for(&error).response())
            }
        };
        Ok(self.finish(started, &method, &path, operator, response))
    }

    /// Counts a refusal and writes the request's log line.
    fn finish(
        &self,
        started: Instant,
        method: &Method,
        path: &str,
        client: Option<String>,
        response: Response<Body>,
    ) -> Response<Body> {
        if response.status().is_client_error() || response.status().is_server_error() {
            self.metrics
                .refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        // One line per request (issue 5: structured logs on the RA side).
        tracing::info!(
            target: "sceau::ra",
            operator = client.as_deref().unwrap_or("-"),
            %method,
            path,
            status = response.status().as_u16(),
            ms = started.elapsed().as_millis() as u64,
            "ra request"
        );
        response
    }

    /// A holder's request on their own card.
    async fn route_holder(
        &self,
        request: &hyper::http::request::Parts,
        body: Option<bytes::Bytes>,
        holder: &Holder,
    ) -> Response<Body> {
        let (method, path) = (&request.method, request.uri.path());
        let action = match resolve(method, path) {
            Err(RouteError::MethodNotAllowed) => return method_not_allowed(method, path),
            Ok(Route::HolderCard) => {
                return match self.ra.card_view(&holder.card) {
                    Ok(value) => json(StatusCode::OK, &value),
                    Err(error) => problem_for(&error).response(),
                };
            }
            Ok(Route::HolderSigned(action)) => action,
            Err(RouteError::NotFound) | Ok(_) => return not_found(),
        };
        let body = match signed_body(request, body) {
            Ok(body) => body,
            Err(problem) => return problem.response(),
        };
        match self.ra.handle_holder(holder, action, body.to_vec()).await {
            Ok(value) => json(
                if action.creates() {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                },
                &value,
            ),
            Err(error) => problem_for(&error).response(),
        }
    }

    async fn route(
        &self,
        operator: &Operator,
        request: &hyper::http::request::Parts,
        body: Option<bytes::Bytes>,
    ) -> Response<Body> {
        let path = request.uri.path();
        let method = &request.method;
        let action = match resolve(method, path) {
            Err(RouteError::NotFound) => return not_found(),
            Err(RouteError::MethodNotAllowed) => return method_not_allowed(method, path),
            // Not an operator's: a holder's routes are reached as a holder.
            Ok(Route::HolderCard | Route::HolderSigned(_)) => return not_found(),
            Ok(Route::Card(card)) => {
                return match self.ra.card_for_operator(operator, card) {
                    Ok(value) => json(StatusCode::OK, &value),
                    Err(error) => self.refuse_read(operator, &error).await,
                };
            }
            Ok(Route::Me) => return json(StatusCode::OK, &operator_view(operator)),
            Ok(Route::Request(id)) => {
                return match self.ra.request_status(operator, id) {
                    Ok(value) => json(StatusCode::OK, &value),
                    Err(error) => self.refuse_read(operator, &error).await,
                };
            }
            Ok(Route::Expiring) => {
                let days = request
                    .uri
                    .query()
                    .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("days=")))
                    .map(str::parse::<u32>);
                return match days {
                    Some(Ok(days)) if (1..=1100).contains(&days) => {
                        // Parses every certificate that ends within `days`: off the runtime.
                        let (ra, reader) = (self.ra.clone(), operator.clone());
                        let listed =
                            tokio::task::spawn_blocking(move || ra.expiring(&reader, days)).await;
                        match listed {
                            Ok(Ok(value)) => json(StatusCode::OK, &value),
                            Ok(Err(error)) => self.refuse_read(operator, &error).await,
                            Err(_) => shutting_down(),
                        }
                    }
                    _ => Problem::new(
                        StatusCode::BAD_REQUEST,
                        "malformed-request",
                        "give ?days=N, 1 to 1100",
                    )
                    .response(),
                };
            }
            Ok(Route::Certificate(serial)) => {
                return match self.ra.certificate(operator, serial) {
                    Ok(pem) => {
                        let mut response = Response::new(Body::one(pem));
                        response.headers_mut().insert(
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("application/pem-certificate-chain"),
                        );
                        response
                    }
                    Err(error) => self.refuse_read(operator, &error).await,
                };
            }
            Ok(Route::Bulk(id)) => {
                // Reads every certificate of the list: off the runtime.
                let (ra, reader, id) = (self.ra.clone(), operator.clone(), id.to_owned());
                return match tokio::task::spawn_blocking(move || ra.bulk_revocation(&reader, &id))
                    .await
                {
                    Ok(Ok(value)) => json(StatusCode::OK, &value),
                    Ok(Err(error)) => self.refuse_read(operator, &error).await,
                    Err(_) => shutting_down(),
                };
            }
            Ok(Route::Queue) => {
                // Reads every request: off the runtime.
                let (ra, reader) = (self.ra.clone(), operator.clone());
                return match tokio::task::spawn_blocking(move || ra.queue(&reader)).await {
                    Ok(Ok(value)) => json(StatusCode::OK, &value),
                    Ok(Err(error)) => self.refuse_read(operator, &error).await,
                    Err(_) => shutting_down(),
                };
            }
            Ok(Route::Scheduled) => {
                let (ra, reader) = (self.ra.clone(), operator.clone());
                return match tokio::task::spawn_blocking(move || ra.scheduled(&reader)).await {
                    Ok(Ok(value)) => json(StatusCode::OK, &value),
                    Ok(Err(error)) => self.refuse_read(operator, &error).await,
                    Err(_) => shutting_down(),
                };
            }
            Ok(Route::Signed { action, target }) => (action, target.map(str::to_owned)),
        };
        let body = match signed_body(request, body) {
            Ok(body) => body,
            Err(problem) => return problem.response(),
        };
        let (action, target) = action;
        match self
            .ra
            .handle(operator, action, target, body.to_vec())
            .await
        {
            Ok(value) => {
                // A revocation recorded for its time is accepted, not carried out yet.
                let scheduled = value.get("scheduled").is_some();
                // A dry run creates nothing.
                let dry_run = value.get("dry_run") == Some(&serde_json::Value::Bool(true));
                let status = match (action.creates() && !dry_run, scheduled) {
                    (true, _) => StatusCode::CREATED,
                    (false, true) => StatusCode::ACCEPTED,
                    (false, false) => StatusCode::OK,
                };
                json(status, &value)
            }
            Err(error) => problem_for(&error).response(),
        }
    }
}

/// What a request names, before anything is checked.
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    /// `GET /ra/v1/operators/me`
    Me,
    /// `GET /ra/v1/requests/{id}`
    Request(&'a str),
    /// `GET /ra/v1/requests`: the pending requests in the operator's scope.
    Queue,
    /// `GET /ra/v1/bulk-revocations/{id}`: a bulk revocation and its list.
    Bulk(&'a str),
    /// `GET /ra/v1/certificates/expiring`
    Expiring,
    /// `GET /ra/v1/certificates/{serial}`
    Certificate(&'a str),
    /// `GET /ra/v1/revocations/scheduled`
    Scheduled,
    /// `GET /ra/v1/cards/{card}`
    Card(&'a str),
    /// `GET /ra/v1/holder/card`: a holder's own card.
    HolderCard,
    /// A holder's signed request on their own card.
    HolderSigned(ActionKind),
    /// A signed request: the action it must sign, and the object the URL names.
    Signed {
        action: ActionKind,
        target: Option<&'a str>,
    },
}

#[derive(Debug, PartialEq, Eq)]
enum RouteError {
    NotFound,
    MethodNotAllowed,
}

/// The route of `method path` (the RA's whole URL space; docs/ra-openapi.yaml describes it, and a
/// test compares the two).
fn resolve<'a>(method: &Method, path: &'a str) -> Result<Route<'a>, RouteError> {
    let rest = path.strip_prefix("/ra/v1/").ok_or(RouteError::NotFound)?;
    let segments: Vec<&str> = rest.split('/').collect();
    let signed = |action: ActionKind, target: Option<&'a str>| Route::Signed { action, target };
    let known = match segments.as_slice() {
        ["operators", "me"] => (Method::GET, Route::Me),
        ["requests", id] => (Method::GET, Route::Request(id)),
        ["certificates", "expiring"] => (Method::GET, Route::Expiring),
        ["certificates", serial] => (Method::GET, Route::Certificate(serial)),
        ["operators"] => (Method::POST, signed(ActionKind::Designate, None)),
        ["operators", id, "withdraw"] => (Method::POST, signed(ActionKind::Withdraw, Some(id))),
        // One path, two methods: the queue is read, a submission is signed.
        ["requests"] if *method == Method::GET => (Method::GET, Route::Queue),
        ["requests"] => (Method::POST, signed(ActionKind::Submit, None)),
        ["requests", id, "approve"] => (Method::POST, signed(ActionKind::Approve, Some(id))),
        ["requests", id, "reject"] => (Method::POST, signed(ActionKind::Reject, Some(id))),
        ["approvals"] => (Method::POST, signed(ActionKind::ApproveBatch, None)),
        ["cards", card, "renew"] => (Method::POST, signed(ActionKind::Renew, Some(card))),
        ["cards", card] => (Method::GET, Route::Card(card)),
        ["cards", card, "deliver"] => (Method::POST, signed(ActionKind::Deliver, Some(card))),
        ["holder", "card"] => (Method::GET, Route::HolderCard),
        ["holder", "card", "renew"] => (Method::POST, Route::HolderSigned(ActionKind::Renew)),
        ["holder", "card", "revoke"] => (Method::POST, Route::HolderSigned(ActionKind::Revoke)),
        ["revocations"] => (Method::POST, signed(ActionKind::Revoke, None)),
        ["bulk-revocations"] => (
            Method::POST,
            signed(ActionKind::ProposeBulkRevocation, None),
        ),
        ["bulk-revocations", id] => (Method::GET, Route::Bulk(id)),
        ["bulk-revocations", id, "approve"] => (
            Method::POST,
            signed(ActionKind::ApproveBulkRevocation, Some(id)),
        ),
        ["revocations", "scheduled"] => (Method::GET, Route::Scheduled),
        ["revocations", "scheduled", id, "cancel"] => {
            (Method::POST, signed(ActionKind::CancelRevocation, Some(id)))
        }
        _ => return Err(RouteError::NotFound),
    };
    if *method == known.0 {
        Ok(known.1)
    } else {
        Err(RouteError::MethodNotAllowed)
    }
}

impl RaService {
    /// A refused read: audited like any refusal.
    async fn refuse_read(&self, operator: &Operator, error: &RaError) -> Response<Body> {
        self.ra
            .record_early_refusal(&operator.record.id, "read", error)
            .await;
        problem_for(error).response()
    }
}

fn operator_view(operator: &Operator) -> serde_json::Value {
    serde_json::json!({
        "operator": operator.record.id,
        "holder": operator.record.holder,
        "subject": operator.record.subject,
        "role": operator.record.role,
        "scope": operator.record.scope,
        "designated_by": operator.record.designated_by,
        "designated_at": operator.record.designated_at,
    })
}

/// The one place where RA errors become HTTP statuses and problem documents.
/// 429 with Retry-After.
fn rate_limited(not_until: governor::NotUntil<governor::clock::QuantaInstant>) -> Response<Body> {
    let wait = not_until.wait_time_from(governor::clock::Clock::now(
        &governor::clock::DefaultClock::default(),
    ));
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut response = Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate-limited",
        format!("too many requests from this client certificate; retry in {seconds} s"),
    )
    .response();
    if let Ok(value) = HeaderValue::from_str(&seconds.max(1).to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

fn problem_for(error: &RaError) -> Problem {
    let (status, rule) = match error {
        RaError::Malformed(_) => (StatusCode::BAD_REQUEST, "malformed-request".to_owned()),
        RaError::Refused { refusal, .. } => {
            let status = match refusal {
                Refusal::BadSignature | Refusal::Stale | Refusal::ActionMismatch => {
                    StatusCode::BAD_REQUEST
                }
                Refusal::Replayed
                | Refusal::OperatorExists
                | Refusal::CardExists
                | Refusal::NotPending
                | Refusal::DigestMismatch
                | Refusal::PersonIsOperator
                | Refusal::RenewalNotAllowed
                | Refusal::AlreadyDelivered => StatusCode::CONFLICT,
                Refusal::NotFound => StatusCode::NOT_FOUND,
                Refusal::UntrustedCertificate | Refusal::BadReceipt => {
                    StatusCode::UNPROCESSABLE_ENTITY
                }
                _ => StatusCode::FORBIDDEN,
            };
            (status, refusal.rule().to_owned())
        }
        RaError::Ca(ca) => return Problem::from(ca),
        RaError::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "store-error".into()),
        RaError::Unavailable => return super::problem::hsm_unavailable(),
        // `RegistrationAuthority::handle` answers a retry with its recorded answer; nothing
        // else returns this.
        RaError::CarriedOut(_) => (StatusCode::CONFLICT, Refusal::Replayed.rule().to_owned()),
    };
    if status.is_server_error() {
        tracing::error!(%error, "RA request failed");
    }
    Problem::new(status, &rule, error.to_string())
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(Body::one(serde_json::to_vec(value).unwrap_or_default()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The body of a signed request: CMS, within the size limit.
fn signed_body(
    request: &hyper::http::request::Parts,
    body: Option<bytes::Bytes>,
) -> Result<bytes::Bytes, Problem> {
    let content_type = request
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if !matches!(
        essence.as_str(),
        "application/cms" | "application/pkcs7-mime"
    ) {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "signed requests are application/cms (openssl cms -sign -nodetach -outform DER)",
        ));
    }
    let Some(body) = body else {
        return Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            format!("a signed request is at most {MAX_CMS_LEN} bytes"),
        ));
    };
    Ok(body)
}

fn method_not_allowed(method: &Method, path: &str) -> Response<Body> {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        format!("{method} is not served on {path}"),
    )
    .response()
}

fn shutting_down() -> Response<Body> {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "shutting-down",
        "the daemon is stopping",
    )
    .response()
}

fn not_found() -> Response<Body> {
    Problem::new(StatusCode::NOT_FOUND, "not-found", "no such resource").response()
}

/// docs/ra-openapi.yaml against the code: every documented path and method is a route and every
/// route is documented; every documented signed body is accepted by the action its route
/// names; every problem type the RA listener can answer is documented, and nothing else is.
#[cfg(test)]
mod openapi_tests;
