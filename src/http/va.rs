//! The public validation listener: OCSP (POST and GET, RFC 6960 appendix A, RFC 9919 caching),
//! CRLs and CA certificates, health. Plain HTTP: what it serves is signed.
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use super::problem::Problem;
use super::{Body, http_date, read_body};
use crate::va::Served;
use crate::va::responder::Reply;
pub use crate::x509::ocsp::MAX_REQUEST;
use crate::x509::ocsp::OcspResponseStatus;
use crate::x509::ocsp_get::decode_get_path;

/// What the validation listener serves.
pub struct VaService {
    /// The CA host's validation authority, or a responder node.
    pub va: Arc<dyn Served>,
    pub cache_max_age: u64,
    /// The Cache-Control of a response valid beyond `cache_max_age` (almost all of them).
    pub cache_control: Option<HeaderValue>,
    pub health: Arc<dyn Fn() -> (bool, serde_json::Value) + Send + Sync>,
    /// `/metrics` in the Prometheus text format, on a responder node (the CA host serves its
    /// metrics on the admin listener).
    pub metrics_text: Option<Arc<dyn Fn() -> String + Send + Sync>>,
}

impl core::fmt::Debug for VaService {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("VaService").finish()
    }
}

impl VaService {
    pub async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
    ) -> Result<Response<Body>, Infallible> {
        let path = request.uri().path();
        let started = std::time::Instant::now();
        // HEAD is GET without the body (RFC 9110 §9.3.2): same status and headers.
        let head = request.method() == Method::HEAD;
        let get = Method::GET;
        let method = if head { &get } else { request.method() };
        let response = match (method, path) {
            (&Method::POST, "/ocsp" | "/") => {
                let response = self.ocsp_post(request).await;
                self.va.metrics().latency.record(started.elapsed());
                response
            }
            (&Method::GET, p) if p.starts_with("/ocsp/") => {
                let response = self.ocsp_get(request).await;
                self.va.metrics().latency.record(started.elapsed());
                response
            }
            (&Method::GET, p) if p.starts_with("/crl/") => self.crl(p, request.headers()),
            (&Method::GET, p) if p.starts_with("/ca/") => self.ca_certificate(p),
            // The validation listener answers from memory even when the HSM is down: its health
            // stays 200 (the body says "degraded"), so that load balancers keep sending OCSP
            // traffic. The admin listener's /healthz turns 503.
            (&Method::GET, "/healthz") => {
                let mut response = health(&*self.health);
                *response.status_mut() = StatusCode::OK;
                response
            }
            // Ready once every status is loaded (load balancers add the node then).
            (&Method::GET, "/readyz") => {
                let ready = self.va.is_ready();
                let mut response =
                    Response::new(Body::one(if ready { "ready\n" } else { "warming up\n" }));
                if !ready {
                    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                }
                response
            }
            (&Method::GET, "/metrics") if self.metrics_text.is_some() => {
                let text = self.metrics_text.as_ref().map(|f| f()).unwrap_or_default();
                let mut response = Response::new(Body::one(text));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                response
            }
            (_, "/ocsp" | "/" | "/healthz" | "/readyz") => method_not_allowed(),
            (_, p)
                if p.starts_with("/ocsp/") || p.starts_with("/crl/") || p.starts_with("/ca/") =>
            {
                method_not_allowed()
            }
            _ => Problem::new(StatusCode::NOT_FOUND, "not-found", "no such resource").response(),
        };
        Ok(if head {
            without_body(response)
        } else {
            response
        })
    }

    async fn ocsp_post(&self, request: Request<Incoming>) -> Response<Body> {
        self.va.metrics().ocsp_post.count();
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        // Media types are case-insensitive (RFC 9110 §8.3.1).
        if !content_type.is_some_and(|c| {
            c.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/ocsp-request")
        }) {
            return self.error(OcspResponseStatus::MalformedRequest);
        }
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|len| len > MAX_REQUEST) {
            return self.error(OcspResponseStatus::MalformedRequest);
        }
        let Some(body) = read_body(request.into_body(), MAX_REQUEST).await else {
            return self.error(OcspResponseStatus::MalformedRequest);
        };
        let now = self.va.now();
        let reply = self.va.responder().respond(&body, now).await;
        self.ocsp_response(reply, None, now)
    }

    async fn ocsp_get(&self, request: Request<Incoming>) -> Response<Body> {
        self.va.metrics().ocsp_get.count();
        // RFC 6960 appendix A.1: GET {url}/{url-encoding of base-64 encoding of the DER}.
        // Everything after /ocsp/ is the request (some clients leave '/' unencoded).
        let encoded = &request.uri().path()["/ocsp/".len()..];
        let Some(der) = decode_get_path(encoded, MAX_REQUEST) else {
            return self.error(OcspResponseStatus::MalformedRequest);
        };
        let if_none_match = request.headers().get(header::IF_NONE_MATCH).cloned();
        let now = self.va.now();
        let reply = self.va.responder().respond(&der, now).await;
        self.ocsp_response(reply, Some(if_none_match), now)
    }

    fn error(&self, status: OcspResponseStatus) -> Response<Body> {
        let metrics = self.va.metrics();
        match status {
            OcspResponseStatus::MalformedRequest => &metrics.ocsp_malformed,
            OcspResponseStatus::Unauthorized => &metrics.ocsp_unauthorized,
            _ => &metrics.ocsp_try_later,
        }
        .count();
        let mut response =
            Response::new(Body::one(Bytes::copy_from_slice(&status.error_response())));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/ocsp-response"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }

    /// The OCSP response; for GET, the RFC 9919 caching headers of pre-signed responses.
    fn ocsp_response(
        &self,
        reply: Reply,
        get: Option<Option<HeaderValue>>,
        now: crate::x509::Timestamp,
    ) -> Response<Body> {
        let (head, tail, this_update, next_update, presigned) = match reply {
            Reply::Signed {
                head,
                tail,
                this_update,
                next_update,
                presigned,
            } => (head, tail, this_update, next_update, presigned),
            Reply::Error(status) => return self.error(status),
        };
        if presigned {
            &self.va.metrics().ocsp_presigned
        } else {
            &self.va.metrics().ocsp_live
        }
        .count();
        let cacheable = get.is_some() && presigned;
        // RFC 9919 §6.2 leaves the ETag to the responder (RFC 5019 suggested a SHA-1 of the
        // response). The last 16 octets of the head are the end of its signature: a response
        // signed again gets another ETag, and nothing is hashed per request.
        let etag = cacheable.then(|| {
            let end = &head[head.len().saturating_sub(16)..];
            let mut quoted = [b'"'; 34];
            hex::encode_to_slice(end, &mut quoted[1..1 + 2 * end.len()]).ok();
            quoted
        });
        if let (Some(etag), Some(Some(wanted))) = (&etag, &get)
            && if_none_match(wanted, etag)
        {
            self.va.metrics().ocsp_not_modified.count();
            let mut response = Response::new(Body::empty());
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            self.cache_headers(
                response.headers_mut(),
                etag,
                (this_update, next_update),
                now,
            );
            return response;
        }
        let mut response = Response::new(Body::two(head, tail));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/ocsp-response"),
        );
        match &etag {
            Some(etag) => self.cache_headers(headers, etag, (this_update, next_update), now),
            // A response with a nonce, or answered to a POST, is for this request only.
            None => {
                headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            }
        }
        response
    }

    /// RFC 9919 §6.2 (RFC 5019 §6.2): max-age never beyond nextUpdate, and no longer than the
    /// configured bound, so that HTTP caches pick up a revocation quickly.
    fn cache_headers(
        &self,
        headers: &mut hyper::HeaderMap,
        etag: &[u8],
        (this_update, next_update): (crate::x509::Timestamp, crate::x509::Timestamp),
        now: crate::x509::Timestamp,
    ) {
        let max_age = next_update
            .unix_seconds()
            .saturating_sub(now.unix_seconds())
            .min(self.cache_max_age);
        let cache_control = if max_age == self.cache_max_age {
            self.cache_control.clone()
        } else {
            HeaderValue::from_str(&cache_control(max_age)).ok()
        };
        if let Some(value) = cache_control {
            headers.insert(header::CACHE_CONTROL, value);
        }
        if let Ok(value) = HeaderValue::from_bytes(etag) {
            headers.insert(header::ETAG, value);
        }
        if let Some(value) = cached_http_date(this_update, 0) {
            headers.insert(header::LAST_MODIFIED, value);
        }
        if let Some(value) = cached_http_date(next_update, 1) {
            headers.insert(header::EXPIRES, value);
        }
    }

    fn crl(&self, path: &str, request: &hyper::HeaderMap) -> Response<Body> {
        let Some(name) = path
            .strip_prefix("/crl/")
            .and_then(|p| p.strip_suffix(".crl"))
        else {
            return Problem::new(StatusCode::NOT_FOUND, "not-found", "CRLs are /crl/<ca>.crl")
                .response();
        };
        let Some(crl) = self.va.crl(name) else {
            return Problem::new(
                StatusCode::NOT_FOUND,
                "not-found",
                format!("no CRL published for {name:?}"),
            )
            .response();
        };
        // A CRL is named by its number: the same number, the same bytes.
        let etag = format!("\"{name}-{}\"", crl.number);
        // If-None-Match, when present, decides; otherwise If-Modified-Since (RFC 9110 §13.2.2).
        let not_modified = match request.get(header::IF_NONE_MATCH) {
            Some(wanted) => if_none_match(wanted, etag.as_bytes()),
            None => request
                .get(header::IF_MODIFIED_SINCE)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_http_date)
                // A date in the future is no validator (RFC 9110 §13.1.3).
                .is_some_and(|since| crl.this_update <= since && since <= self.va.now()),
        };
        let mut response = if not_modified {
            let mut response = Response::new(Body::empty());
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            response
        } else {
            Response::new(Body::one(crl.der))
        };
        let headers = response.headers_mut();
        if let Ok(value) = HeaderValue::from_str(&etag) {
            headers.insert(header::ETAG, value);
        }
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/pkix-crl"),
        );
        if let Ok(value) = HeaderValue::from_str(&http_date(crl.this_update)) {
            headers.insert(header::LAST_MODIFIED, value);
        }
        if let Ok(value) = HeaderValue::from_str(&http_date(crl.next_update)) {
            headers.insert(header::EXPIRES, value);
        }
        // A new CRL follows every revocation: caches revalidate.
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=60, public, no-transform"),
        );
        response
    }

    fn ca_certificate(&self, path: &str) -> Response<Body> {
        let name = &path["/ca/".len()..];
        // CA certificates by file name (`racine.crt`, `ac-agents.crt`), DER (AIA caIssuers).
        match self.va.ca_certificate(name) {
            Some(der) => {
                let mut response = Response::new(Body::one(der));
                let headers = response.headers_mut();
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/pkix-cert"),
                );
                headers.insert(
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("max-age=86400, public"),
                );
                response
            }
            None => Problem::new(
                StatusCode::NOT_FOUND,
                "not-found",
                format!("no CA certificate {name:?}"),
            )
            .response(),
        }
    }
}

/// `/healthz`: 200 when healthy, 503 when degraded, with what is wrong.
pub fn health(report: &(dyn Fn() -> (bool, serde_json::Value) + Send + Sync)) -> Response<Body> {
    let (healthy, body) = report();
    let mut response = Response::new(Body::one(serde_json::to_vec(&body).unwrap_or_default()));
    if !healthy {
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    }
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// [`http_date`], remembered per thread for the last two times asked (responses signed in one
/// batch share their thisUpdate and nextUpdate): formatting dates is most of a GET's own work.
fn cached_http_date(time: crate::x509::Timestamp, slot: usize) -> Option<HeaderValue> {
    thread_local! {
        static LAST: std::cell::RefCell<[(u64, Option<HeaderValue>); 2]> =
            const { std::cell::RefCell::new([(u64::MAX, None), (u64::MAX, None)]) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        let entry = &mut last[slot % 2];
        if entry.0 != time.unix_seconds() {
            *entry = (
                time.unix_seconds(),
                HeaderValue::from_str(&http_date(time)).ok(),
            );
        }
        // A clone shares the bytes: the count is touched by this thread only.
        entry.1.clone()
    })
}

/// The usual Cache-Control, made once: a static value clones without touching a reference
/// count that both cores would share on every response (leaked once, some 60 bytes).
pub fn cache_control_header(max_age: u64) -> Option<HeaderValue> {
    let text: &'static str = Box::leak(cache_control(max_age).into_boxed_str());
    HeaderValue::from_maybe_shared(Bytes::from_static(text.as_bytes())).ok()
}

/// RFC 9919 §6.2 Cache-Control of a pre-signed response.
fn cache_control(max_age: u64) -> String {
    format!("max-age={max_age}, public, no-transform, must-revalidate")
}

/// Whether an `If-None-Match` value names `etag` (or is `*`). The comparison is weak (RFC 9110
/// §13.1.2): `W/"x"` matches `"x"`.
fn if_none_match(wanted: &HeaderValue, etag: &[u8]) -> bool {
    wanted.as_bytes().split(|b| *b == b',').any(|tag| {
        let tag = tag.trim_ascii();
        let tag = tag.strip_prefix(b"W/").unwrap_or(tag);
        tag == etag || tag == b"*"
    })
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`, RFC 9110 §5.6.7); `None` for anything
/// else (a date that cannot be read makes the request unconditional).
pub fn parse_http_date(text: &str) -> Option<crate::x509::Timestamp> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let mut words = text.split_ascii_whitespace();
    let (_weekday, day, month, year, time, zone) = (
        words.next()?,
        words.next()?,
        words.next()?,
        words.next()?,
        words.next()?,
        words.next()?,
    );
    if words.next().is_some() || zone != "GMT" || day.len() != 2 || year.len() != 4 {
        return None;
    }
    let month = MONTHS.iter().position(|m| *m == month)? + 1;
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if !digits(day) || !digits(year) || time.len() != 8 {
        return None;
    }
    crate::x509::Timestamp::parse_rfc3339(&format!("{year}-{month:02}-{day}T{time}Z")).ok()
}

/// The response to a HEAD request: the GET response's status and headers, its length, no body.
fn without_body(response: Response<Body>) -> Response<Body> {
    use hyper::body::Body as _;
    let (mut parts, body) = response.into_parts();
    if let Some(length) = body.size_hint().exact() {
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    Response::from_parts(parts, Body::empty())
}

fn method_not_allowed() -> Response<Body> {
    let mut response = Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "this resource does not accept this method",
    )
    .response();
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, POST"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_tags_compare_weakly_and_lists_are_read_whole() {
        let etag = b"\"ab12\"";
        let matches = |value: &'static str| if_none_match(&HeaderValue::from_static(value), etag);
        assert!(matches("\"ab12\""));
        assert!(matches("W/\"ab12\""));
        assert!(matches("\"zz\", W/\"ab12\""));
        assert!(matches("*"));
        assert!(!matches("\"ab1\""));
        assert!(!matches("W/\"zz\""));
        assert!(!matches("ab12"));
    }

    #[test]
    fn http_dates_parse_back() {
        let t = crate::x509::Timestamp::parse_rfc3339("2026-11-25T10:00:05Z").unwrap();
        assert_eq!(parse_http_date(&http_date(t)), Some(t));
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").map(|t| t.unix_seconds()),
            Some(784_111_777)
        );
        for bad in [
            "",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 GMT extra",
            "Sun, 99 Nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad:?}");
        }
    }
}
