//! The HTTP listener: ledgerd's own accept loop and the limits on connections.
//!
//! This module owns how connections are accepted and served: tokio's `TcpListener`, TLS by
//! rustls (`tokio-rustls`) when a certificate is configured, hyper's HTTP/1 connections, and
//! the bounds the contract puts on them (API.md §2):
//!
//! - at most `server.connections_max` connections are open at once; at the limit the oldest
//!   connection that is idle or has not finished a request head is closed to make room, and a
//!   new connection is refused only when every open one is busy with a request;
//! - a request head must arrive within `server.header_timeout_ms` of its first byte (a TLS
//!   handshake within the same time), else the connection is closed;
//! - a keep-alive connection idle for `server.idle_timeout_ms` is closed;
//! - the answers hyper writes itself for a request it cannot parse (400, 414, 431) are
//!   replaced by the API's JSON error shape ([`ErrorShaped`]).
//!
//! Every limit counts in `ledger_connections_closed_total{reason}` or
//! `ledger_connections_refused_total` when it bites; `ledger_connections_open` shows how many
//! are open. On shutdown the loop stops accepting, every connection finishes the request it is
//! serving (hyper's graceful shutdown), and [`serve_connections`] returns once all are closed.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::ConnectInfo;
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

/// Connections closed by a limit, by `reason` (`evicted`, `header_timeout`, `idle_timeout`).
pub const CONNECTIONS_CLOSED_TOTAL: &str = "ledger_connections_closed_total";
/// Connections refused because every open connection was busy.
pub const CONNECTIONS_REFUSED_TOTAL: &str = "ledger_connections_refused_total";
/// Connections open now.
pub const CONNECTIONS_OPEN: &str = "ledger_connections_open";
/// The reasons of [`CONNECTIONS_CLOSED_TOTAL`].
pub const CLOSE_REASONS: [&str; 3] = ["evicted", "header_timeout", "idle_timeout"];

/// Largest request head hyper buffers (request line and headers; beyond it hyper answers 431
/// itself): twice the headers the routes accept, so that a head just over their limit is read
/// whole and answered with the JSON shape by [`crate::http::layers`].
const REQUEST_HEAD_BYTES_MAX: usize = 2 * crate::http::layers::REQUEST_HEADERS_BYTES_MAX;

/// How long the accept loop pauses when accepting fails (out of file descriptors).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// The listener's limits and TLS, from `[server]`.
#[derive(Clone)]
pub struct ListenerSettings {
    pub connections_max: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    /// HTTPS only, when set.
    pub tls: Option<TlsAcceptor>,
}

/// Where a connection is between requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    /// Waiting for the first byte of a request head (a fresh or keep-alive connection).
    Idle = 0,
    /// Bytes of a request head (or of a TLS handshake) have arrived; the head is not complete.
    Head = 1,
    /// A request is being served (its body read, its answer computed or written).
    Busy = 2,
}

/// What the accept loop and a connection's task share about the connection.
struct Tracker {
    phase: AtomicU8,
    /// Milliseconds since `origin` when the phase last changed.
    phase_since_ms: AtomicU64,
    origin: Instant,
    /// Raised to close the connection now (evicted).
    close: Notify,
    /// Raised when the phase changes, so that the task re-arms its timer.
    changed: Notify,
}

impl Tracker {
    fn new(origin: Instant, phase: Phase) -> Tracker {
        let tracker = Tracker {
            phase: AtomicU8::new(phase as u8),
            phase_since_ms: AtomicU64::new(0),
            origin,
            close: Notify::new(),
            changed: Notify::new(),
        };
        tracker.set(phase);
        tracker
    }

    fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Idle,
            1 => Phase::Head,
            _ => Phase::Busy,
        }
    }

    fn set(&self, phase: Phase) {
        let elapsed = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.phase_since_ms.store(elapsed, Ordering::Release);
        self.phase.store(phase as u8, Ordering::Release);
        self.changed.notify_one();
    }

    /// Bytes arrived: an idle connection starts a request head.
    fn saw_bytes(&self) {
        if self.phase() == Phase::Idle {
            self.set(Phase::Head);
        }
    }

    /// When the current phase's timeout runs out (`None` while busy: no timeout applies).
    fn deadline(&self, settings: &ListenerSettings) -> Option<(Instant, &'static str)> {
        let since = self.origin + Duration::from_millis(self.phase_since_ms.load(Ordering::Acquire));
        match self.phase() {
            Phase::Idle => Some((since + settings.idle_timeout, "idle_timeout")),
            Phase::Head => Some((since + settings.header_timeout, "header_timeout")),
            Phase::Busy => None,
        }
    }
}

/// The open connections, oldest first (ids grow with time).
#[derive(Default)]
struct Registry {
    open: Mutex<BTreeMap<u64, Arc<Tracker>>>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Tracker>>> {
        self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a connection when there is room, making room by closing the oldest idle or
    /// head-not-finished connection at the limit; `false` when every open one is busy.
    fn admit(&self, id: u64, tracker: Arc<Tracker>, connections_max: usize) -> bool {
        let mut open = self.lock();
        if open.len() >= connections_max {
            let victim = open.iter().find(|(_, tracker)| tracker.phase() != Phase::Busy).map(|(id, _)| *id);
            let Some(victim) = victim.and_then(|victim| open.remove(&victim)) else {
                return false;
            };
            victim.close.notify_one();
            metrics::counter!(CONNECTIONS_CLOSED_TOTAL, "reason" => "evicted").increment(1);
        }
        open.insert(id, tracker);
        metrics::gauge!(CONNECTIONS_OPEN).set(count_as_gauge(open.len()));
        true
    }

    fn remove(&self, id: u64) {
        let mut open = self.lock();
        open.remove(&id);
        metrics::gauge!(CONNECTIONS_OPEN).set(count_as_gauge(open.len()));
    }
}

fn count_as_gauge(count: usize) -> f64 {
    f64::from(u32::try_from(count).unwrap_or(u32::MAX))
}

/// Registers the listener's metric families at zero.
pub fn register_metrics() {
    metrics::describe_counter!(CONNECTIONS_CLOSED_TOTAL, "Connections closed by a limit, by reason.");
    metrics::describe_counter!(CONNECTIONS_REFUSED_TOTAL, "Connections refused because every open one was busy.");
    metrics::describe_gauge!(CONNECTIONS_OPEN, "Connections open now.");
    for reason in CLOSE_REASONS {
        metrics::counter!(CONNECTIONS_CLOSED_TOTAL, "reason" => reason).absolute(0);
    }
    metrics::counter!(CONNECTIONS_REFUSED_TOTAL).absolute(0);
    metrics::gauge!(CONNECTIONS_OPEN).set(0.0);
}

/// Serves `router` on `listener` until `shutdown` is raised, then drains: returns once every
/// connection is closed.
pub async fn serve_connections(
    listener: TcpListener,
    router: Router,
    settings: ListenerSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    let registry = Arc::new(Registry::default());
    let origin = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut next_id: u64 = 0;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|raised| *raised) => break,
            // Reap finished connection tasks as they end, so the set stays small.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accepting a connection failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        next_id += 1;
        let id = next_id;
        let tracker = Arc::new(Tracker::new(origin, Phase::Head));
        if !registry.admit(id, tracker.clone(), settings.connections_max) {
            metrics::counter!(CONNECTIONS_REFUSED_TOTAL).increment(1);
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let settings = settings.clone();
        let registry = registry.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            match settings.tls.clone() {
                // A fresh connection owes its first request head within the header timeout.
                None => serve_one(stream, remote, router, &settings, &tracker, shutdown).await,
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(settings.header_timeout, acceptor.accept(stream));
                    tokio::select! {
                        handshake = handshake => match handshake {
                            Ok(Ok(stream)) => {
                                tracker.set(Phase::Head);
                                serve_one(stream, remote, router, &settings, &tracker, shutdown).await;
                            }
                            Ok(Err(error)) => tracing::debug!(%error, %remote, "TLS handshake failed"),
                            Err(_) => {
                                metrics::counter!(CONNECTIONS_CLOSED_TOTAL, "reason" => "header_timeout").increment(1);
                            }
                        },
                        () = tracker.close.notified() => {}
                    }
                }
            }
            registry.remove(id);
        });
    }
    drop(listener);
    while tasks.join_next().await.is_some() {}
}

/// Serves one connection until it closes, times out, is evicted, or drains on shutdown.
async fn serve_one<S>(
    stream: S,
    remote: SocketAddr,
    router: Router,
    settings: &ListenerSettings,
    tracker: &Arc<Tracker>,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(ErrorShaped::new(stream, tracker.clone()));
    let service_tracker = tracker.clone();
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let router = router.clone();
        let tracker = service_tracker.clone();
        tracker.set(Phase::Busy);
        async move {
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(ConnectInfo(remote));
            let response = router.oneshot(request).await.unwrap_or_else(|never: Infallible| match never {});
            // The connection is busy until the answer's body has been handed to hyper.
            Ok::<_, Infallible>(response.map(|body| TrackedBody { inner: body, tracker: Some(tracker) }))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The header and idle timeouts are this module's (hyper's own header timer would also run
    // while a keep-alive connection is idle).
    builder.timer(TokioTimer::new()).header_read_timeout(None).max_buf_size(REQUEST_HEAD_BYTES_MAX);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let mut draining = false;
    loop {
        let deadline = tracker.deadline(settings);
        let sleep_until = deadline.map_or_else(|| Instant::now() + settings.idle_timeout, |(at, _)| at);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, %remote, "connection ended with an error");
                }
                return;
            }
            () = tokio::time::sleep_until(sleep_until.into()) => {
                if let Some((at, reason)) = tracker.deadline(settings)
                    && at <= Instant::now()
                {
                    metrics::counter!(CONNECTIONS_CLOSED_TOTAL, "reason" => reason).increment(1);
                    return;
                }
            }
            () = tracker.changed.notified() => {}
            () = tracker.close.notified() => return,
            _ = shutdown.wait_for(|raised| *raised), if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// An answer's body that marks its connection idle again once hyper has taken all of it (or
/// dropped it).
struct TrackedBody {
    inner: Body,
    tracker: Option<Arc<Tracker>>,
}

impl TrackedBody {
    fn finish(&mut self) {
        if let Some(tracker) = self.tracker.take() {
            tracker.set(Phase::Idle);
        }
    }
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        self.finish();
    }
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) {
            self.finish();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The connection's stream, watched: reads move an idle connection to "head started", and the
/// bare answers hyper writes itself for a request it cannot parse (`400`, `414`, `431` with an
/// empty body) are replaced by the API's JSON error shape.
struct ErrorShaped<S> {
    inner: S,
    tracker: Arc<Tracker>,
    /// A replacement being written, and how far.
    replacement: Option<(Vec<u8>, usize)>,
}

impl<S> ErrorShaped<S> {
    fn new(inner: S, tracker: Arc<Tracker>) -> ErrorShaped<S> {
        ErrorShaped { inner, tracker, replacement: None }
    }
}

/// The JSON answer that replaces hyper's own answer `head`, when it is one.
fn replacement_for(head: &[u8]) -> Option<Vec<u8>> {
    let status_line_end = head.windows(2).position(|pair| pair == b"\r\n")?;
    let status_line = std::str::from_utf8(&head[..status_line_end]).ok()?;
    let status = status_line.strip_prefix("HTTP/1.1 ").or_else(|| status_line.strip_prefix("HTTP/1.0 "))?;
    let (code, message) = match status.get(..3)? {
        "400" => ("invalid_request", "the request line or a header is malformed"),
        "414" => ("uri_too_long", "the request target is too long"),
        "431" => ("headers_too_large", "the request head is too large"),
        _ => return None,
    };
    let head_text = String::from_utf8_lossy(head).to_ascii_lowercase();
    if !head_text.contains("\r\ncontent-length: 0\r\n") {
        return None;
    }
    let body = format!("{{\"error\":{{\"code\":\"{code}\",\"message\":\"{message}\"}}}}");
    let reason = &status[4..];
    Some(
        format!(
            "HTTP/1.1 {} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\
             x-content-type-options: nosniff\r\ncache-control: no-store\r\n\r\n{body}",
            &status[..3],
            body.len()
        )
        .into_bytes(),
    )
}

impl<S: AsyncRead + Unpin> AsyncRead for ErrorShaped<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.tracker.saw_bytes();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ErrorShaped<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.replacement.is_none()
            && self.tracker.phase() != Phase::Busy
            && let Some(bytes) = replacement_for(buf)
        {
            self.replacement = Some((bytes, 0));
        }
        let this = &mut *self;
        let Some((bytes, written)) = &mut this.replacement else {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        };
        while *written < bytes.len() {
            match Pin::new(&mut this.inner).poll_write(cx, &bytes[*written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(count)) => *written += count,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return Poll::Pending,
            }
        }
        // hyper's own answer counts as written; the connection closes after it.
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hyper_s_bare_parse_error_answers_are_replaced() {
        let bare = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let replaced = String::from_utf8(replacement_for(bare).unwrap()).unwrap();
        assert!(replaced.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"), "{replaced}");
        assert!(
            replaced.ends_with(
                "{\"error\":{\"code\":\"headers_too_large\",\"message\":\"the request head is too large\"}}"
            )
        );
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 52\r\n\r\n";
        assert_eq!(replacement_for(ours), None);
        assert_eq!(replacement_for(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"), None);
    }
}
