//! Slow-client protection for the validation listener, without a timer per request.
//!
//! hyper's `header_read_timeout` arms a timer for every request (a boxed sleep inserted into and
//! removed from tokio's timer wheel, with a clock read each time): about 4 % of the daemon's CPU
//! at 100,000 OCSP requests/s. Here each connection has one watchdog instead, waking every
//! second. The connection marks two phases with plain atomic stores: *receiving* from the first
//! byte of a request until its response is ready (headers and body: a client that trickles
//! either is caught), and *idle* between requests. The watchdog closes a connection that has
//! been receiving one request for longer than [`REQUEST_DEADLINE`] or idle for longer than
//! [`IDLE_DEADLINE`]. Time is a coarse clock in seconds, advanced by one ticker task.
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::Request;
use hyper::body::Incoming;
use hyper::service::Service;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// From the first byte of a request to its response.
pub const REQUEST_DEADLINE: u64 = 10;
/// Between two requests of a keep-alive connection.
pub const IDLE_DEADLINE: u64 = 60;
/// Set in a phase word while a request is being received.
const RECEIVING: u64 = 1 << 63;

/// Seconds since the first listener started, advanced by [`run_clock`].
static COARSE_NOW: AtomicU64 = AtomicU64::new(0);
static EPOCH: OnceLock<Instant> = OnceLock::new();

fn now() -> u64 {
    COARSE_NOW.load(Ordering::Relaxed)
}

/// Advances the coarse clock four times a second until the task is dropped.
pub async fn run_clock() {
    let epoch = *EPOCH.get_or_init(Instant::now);
    loop {
        COARSE_NOW.store(epoch.elapsed().as_secs(), Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Where a connection is: the phase bit and the second the phase began.
#[derive(Debug)]
pub struct Progress {
    phase: AtomicU64,
}

impl Progress {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            phase: AtomicU64::new(now()),
        })
    }

    fn receiving(&self) {
        if self.phase.load(Ordering::Relaxed) & RECEIVING == 0 {
            self.phase.store(RECEIVING | now(), Ordering::Relaxed);
        }
    }

    fn answered(&self) {
        self.phase.store(now(), Ordering::Relaxed);
    }

    /// Bytes of a response went out: a connection downloading a large CRL slowly is not
    /// idle, whatever phase it is in (over HTTP/2 a downloading client also sends window
    /// updates, which start a receiving phase): its deadline counts from the last byte sent.
    fn sent(&self) {
        let phase = self.phase.load(Ordering::Relaxed);
        let refreshed = (phase & RECEIVING) | now();
        if phase != refreshed {
            self.phase.store(refreshed, Ordering::Relaxed);
        }
    }

    /// Whether the connection overstayed its phase.
    fn expired(&self) -> bool {
        let phase = self.phase.load(Ordering::Relaxed);
        let since = phase & !RECEIVING;
        let deadline = if phase & RECEIVING != 0 {
            REQUEST_DEADLINE
        } else {
            IDLE_DEADLINE
        };
        now().saturating_sub(since) > deadline
    }
}

/// Resolves when the connection has overstayed a phase: the caller drops the connection.
pub async fn expired(progress: Arc<Progress>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if progress.expired() {
            return;
        }
    }
}

/// A stream whose reads mark the start of a request.
#[derive(Debug)]
pub struct WatchedStream<T> {
    inner: T,
    progress: Arc<Progress>,
}

impl<T> WatchedStream<T> {
    pub fn new(inner: T, progress: Arc<Progress>) -> Self {
        Self { inner, progress }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WatchedStream<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled
            && buf.filled().len() > before
        {
            self.progress.receiving();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WatchedStream<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = polled
            && written > 0
        {
            self.progress.sent();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(written)) = polled
            && written > 0
        {
            self.progress.sent();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A service whose answers end the receiving phase.
#[derive(Clone, Debug)]
pub struct WatchedService<S> {
    inner: S,
    progress: Arc<Progress>,
}

impl<S> WatchedService<S> {
    pub fn new(inner: S, progress: Arc<Progress>) -> Self {
        Self { inner, progress }
    }
}

impl<S> Service<Request<Incoming>> for WatchedService<S>
where
    S: Service<Request<Incoming>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let answer = self.inner.call(request);
        let progress = self.progress.clone();
        Box::pin(async move {
            let response = answer.await;
            progress.answered();
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tests set the one coarse clock: one at a time.
    static CLOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn a_connection_expires_only_past_the_deadline_of_its_phase() {
        let _clock = CLOCK.lock().unwrap_or_else(|p| p.into_inner());
        COARSE_NOW.store(1_000, Ordering::Relaxed);
        let progress = Progress::new();
        progress.receiving();
        COARSE_NOW.store(1_000 + REQUEST_DEADLINE, Ordering::Relaxed);
        assert!(!progress.expired());
        COARSE_NOW.store(1_001 + REQUEST_DEADLINE, Ordering::Relaxed);
        assert!(progress.expired(), "a request received for too long");
        progress.answered();
        assert!(!progress.expired());
        // More bytes of the next request restart the clock only once per request.
        COARSE_NOW.store(2_000, Ordering::Relaxed);
        progress.receiving();
        COARSE_NOW.store(2_005, Ordering::Relaxed);
        progress.receiving();
        COARSE_NOW.store(2_001 + REQUEST_DEADLINE, Ordering::Relaxed);
        assert!(progress.expired());
        progress.answered();
        COARSE_NOW.store(2_002 + REQUEST_DEADLINE + IDLE_DEADLINE, Ordering::Relaxed);
        assert!(progress.expired(), "idle for too long");
    }

    #[test]
    fn a_slow_download_that_makes_progress_is_not_cut() {
        let _clock = CLOCK.lock().unwrap_or_else(|p| p.into_inner());
        COARSE_NOW.store(5_000, Ordering::Relaxed);
        let progress = Progress::new();
        progress.receiving();
        progress.answered();
        // A 49 MB CRL at 0.5 MB/s: bytes go out for 100 s, more than the idle deadline.
        for second in 1..=100 {
            COARSE_NOW.store(5_000 + second, Ordering::Relaxed);
            progress.sent();
            assert!(!progress.expired(), "cut after {second} s of progress");
        }
        // A client that stops reading is cut once the idle deadline passes.
        COARSE_NOW.store(5_101 + IDLE_DEADLINE, Ordering::Relaxed);
        assert!(progress.expired());
        // Over HTTP/2 the client's window updates start a receiving phase during the download:
        // bytes going out keep it alive too; once they stop, the request deadline applies.
        progress.receiving();
        for second in 1..=30 {
            COARSE_NOW.store(5_101 + IDLE_DEADLINE + second, Ordering::Relaxed);
            progress.sent();
            assert!(!progress.expired(), "HTTP/2 download cut after {second} s");
        }
        COARSE_NOW.store(5_132 + IDLE_DEADLINE + REQUEST_DEADLINE, Ordering::Relaxed);
        assert!(progress.expired());
    }
}
