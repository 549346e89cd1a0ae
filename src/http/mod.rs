//! The listeners: hyper accept loops with graceful shutdown.
//!
//! Each listener `select!`s between accepting and a cancellation token; connections are watched
//! by a graceful-shutdown guard, so that on SIGTERM the loop stops accepting, in-flight requests
//! finish (up to a deadline), then the listener returns. HTTP/1.1 and HTTP/2 are both served;
//! a client gets 10 s to send its headers (slow-loris): hyper's timer on the admin and RA
//! listeners, a per-connection [`watchdog`] on the validation listener's hot path.
pub mod admin;
pub mod metrics;
pub mod problem;
pub mod ra;
pub mod sealed;
pub mod va;
pub mod watchdog;

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long in-flight requests may take to finish after shutdown began.
const DRAIN: Duration = Duration::from_secs(10);

/// A response body of up to two parts (a pre-signed response's head and the shared tail), sent
/// without copying them together.
#[derive(Debug, Default)]
pub struct Body {
    parts: [Option<Bytes>; 2],
}

impl Body {
    pub fn empty() -> Self {
        Self::default()
    }

    pub fn one(bytes: impl Into<Bytes>) -> Self {
        Self {
            parts: [Some(bytes.into()), None],
        }
    }

    pub fn two(head: Bytes, tail: Bytes) -> Self {
        Self {
            parts: [Some(head), Some(tail)],
        }
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let next = self.parts.iter_mut().find_map(Option::take);
        Poll::Ready(next.map(|bytes| Ok(Frame::data(bytes))))
    }

    fn is_end_stream(&self) -> bool {
        self.parts.iter().all(Option::is_none)
    }

    fn size_hint(&self) -> SizeHint {
        let len: usize = self.parts.iter().flatten().map(Bytes::len).sum();
        SizeHint::with_exact(len as u64)
    }
}

/// The validation listener's connections: no per-request timer (see [`watchdog`]).
fn validation_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().header_read_timeout(None).keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(128);
    builder
}

fn connection_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(128);
    builder
}

/// Accepts until `shutdown`, handing each connection to `spawn`; then waits for the
/// connections `graceful` watches to finish, up to the drain deadline.
async fn accept_loop(
    listener: TcpListener,
    shutdown: CancellationToken,
    graceful: GracefulShutdown,
    mut spawn: impl FnMut(tokio::net::TcpStream, Watcher),
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                match accepted {
                    Ok((stream, _)) => {
                        let _ = stream.set_nodelay(true);
                        spawn(stream, graceful.watcher());
                    }
                    Err(error) => {
                        // Out of file descriptors and the like: do not spin.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            _ = shutdown.cancelled() => break,
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(DRAIN) => tracing::warn!("connections still open after the drain deadline"),
    }
}

/// Serves `service` on `listener` until `shutdown`, then drains.
pub async fn serve<S>(listener: TcpListener, service: S, shutdown: CancellationToken)
where
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let builder = connection_builder();
    accept_loop(
        listener,
        shutdown,
        GracefulShutdown::new(),
        move |stream, watcher| {
            let connection = builder
                .serve_connection(TokioIo::new(stream), service.clone())
                .into_owned();
            let watched = watcher.watch(connection);
            tokio::spawn(async move {
                let _ = watched.await;
            });
        },
    )
    .await;
}

/// Serves the validation listener: like [`serve`], with each connection under a [`watchdog`]
/// (closed when a request takes more than 10 s to arrive, or after a minute idle) instead of
/// a timer per request.
pub async fn serve_validation<S>(listener: TcpListener, service: S, shutdown: CancellationToken)
where
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let builder = validation_builder();
    let clock = tokio::spawn(watchdog::run_clock());
    accept_loop(
        listener,
        shutdown,
        GracefulShutdown::new(),
        move |stream, watcher| {
            let progress = watchdog::Progress::new();
            let stream = watchdog::WatchedStream::new(stream, progress.clone());
            let service = watchdog::WatchedService::new(service.clone(), progress.clone());
            let connection = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            let watched = watcher.watch(connection);
            tokio::spawn(async move {
                tokio::select! {
                    _ = watched => {}
                    _ = watchdog::expired(progress) => {
                        tracing::debug!("closing a connection that overstayed (slow request or idle)");
                    }
                }
            });
        },
    )
    .await;
    clock.abort();
}

/// Serves HTTPS with client certificates: `make` builds the service of a connection from the
/// client's end-entity certificate (DER). A handshake gets 10 s.
pub async fn serve_tls<S, M>(
    listener: TcpListener,
    tls: std::sync::Arc<rustls::ServerConfig>,
    make: M,
    shutdown: CancellationToken,
) where
    M: Fn(std::sync::Arc<Vec<u8>>) -> S + Clone + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let builder = std::sync::Arc::new(connection_builder());
    accept_loop(
        listener,
        shutdown,
        GracefulShutdown::new(),
        move |stream, watcher| {
            let acceptor = acceptor.clone();
            let builder = builder.clone();
            let make = make.clone();
            tokio::spawn(async move {
                let handshake =
                    tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await;
                let stream = match handshake {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        tracing::info!(%error, "RA TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
                let Some(peer) = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .map(|c| std::sync::Arc::new(c.to_vec()))
                else {
                    return;
                };
                let connection = builder
                    .serve_connection(TokioIo::new(stream), make(peer))
                    .into_owned();
                let _ = watcher.watch(connection).await;
            });
        },
    )
    .await;
}

/// An HTTP-date (RFC 9110 §5.6.7), e.g. `Wed, 25 Nov 2026 10:00:00 GMT`.
pub fn http_date(time: crate::x509::Timestamp) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let seconds = time.unix_seconds();
    match time.to_date_time() {
        Ok(t) => format!(
            "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
            DAYS[((seconds / 86_400) % 7) as usize],
            t.day(),
            MONTHS[usize::from(t.month().saturating_sub(1)).min(11)],
            t.year(),
            t.hour(),
            t.minutes(),
            t.seconds()
        ),
        Err(_) => "Thu, 01 Jan 1970 00:00:00 GMT".to_owned(),
    }
}

/// How long a client of the administration or RA listener may take to send a request body
/// (hyper's timer covers the headers only).
pub const BODY_DEADLINE: Duration = Duration::from_secs(10);

/// Reads a request body of at most `limit` octets within [`BODY_DEADLINE`]; otherwise the
/// problem to answer (413, or 408 for a client that trickles its body).
pub async fn read_body_within(body: Incoming, limit: usize) -> Result<Bytes, problem::Problem> {
    match tokio::time::timeout(BODY_DEADLINE, read_body(body, limit)).await {
        Ok(Some(bytes)) => Ok(bytes),
        Ok(None) => Err(problem::Problem::new(
            hyper::StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            format!("a request body here is at most {limit} octets"),
        )),
        Err(_) => Err(problem::Problem::new(
            hyper::StatusCode::REQUEST_TIMEOUT,
            "body-timeout",
            format!(
                "the request body did not arrive within {} s",
                BODY_DEADLINE.as_secs()
            ),
        )),
    }
}

/// Reads a request body up to `limit` octets; `None` if it is longer or cannot be read.
pub async fn read_body(body: Incoming, limit: usize) -> Option<Bytes> {
    use http_body_util::BodyExt;
    let limited = http_body_util::Limited::new(body, limit);
    limited
        .collect()
        .await
        .ok()
        .map(|collected| collected.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x509::Timestamp;

    #[test]
    fn http_dates() {
        assert_eq!(
            http_date(Timestamp::from_unix_seconds(0)),
            "Thu, 01 Jan 1970 00:00:00 GMT"
        );
        let t = Timestamp::parse_rfc3339("2026-11-25T10:00:05Z").unwrap();
        assert_eq!(http_date(t), "Wed, 25 Nov 2026 10:00:05 GMT");
    }
}
