//! The HTTP/1.1 server under the super's gateway and the client's local
//! API: hyper with limits that hold against hostile clients.
//!
//! `axum::serve` has no limits at all: every connection is accepted and
//! kept for as long as the client likes. Here:
//!
//! * **Connections.** At most [`HttpLimits::max_connections`] open at once,
//!   and [`HttpLimits::max_connections_per_ip`] from one address (one IPv6
//!   /64), so a single host cannot take every slot. A connection over a cap
//!   gets a short `503` with `Retry-After: 1` and is closed at once: it is
//!   never queued and never holds up the accept loop.
//! * **Slow or missing request heads** (slowloris). A head must arrive
//!   within [`HttpLimits::header_timeout`]; hyper runs that timer from the
//!   moment it waits for a head, so a connection that sends nothing, before
//!   its first request or between two, is closed after the same time.
//! * **Slow bodies** (R.U.D.Y.). A request body must arrive within
//!   [`HttpLimits::request_timeout`] of its head, else `408` and close.
//! * **Responses nobody reads.** A write that makes no progress for
//!   `request_timeout` ends the connection.
//! * **Huge heads.** Over [`HttpLimits::max_header_bytes`] or
//!   [`HttpLimits::max_headers`] hyper answers `431` and closes.
//!
//! Each refusal and timeout is counted ([`HttpStats`], rendered on
//! `/metrics`) and logged with `warn!`, at most one line per reason every
//! few seconds carrying the count since the last line, so a flood cannot
//! flood the log too.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Sleep;
use tracing::{debug, warn};

mod limits;
mod stats;

pub use limits::{HttpLimits, LimitsError};
use stats::Event;
pub use stats::{HttpStats, HttpStatsJson};

use crate::common::util::lock;

/// The answer to a connection over a cap. Written whole in one go into a
/// fresh socket's empty send buffer.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: text/plain\r\n\
retry-after: 1\r\n\
connection: close\r\n\
content-length: 32\r\n\
\r\n\
too many connections, try again\n";

/// How long a refused connection may linger: writing the 503, then
/// reading what the client sent so that closing does not reset the
/// connection (a reset can discard the 503 before the client reads it).
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// Refused connections lingering at once; past this they are closed
/// without waiting, so refusing stays cheap under any flood.
const MAX_LINGERING_REFUSALS: usize = 256;

/// Pause after an accept error such as running out of file descriptors,
/// so the loop does not spin while nothing can be accepted.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Connections open, in all and per address.
#[derive(Default)]
struct Table {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// What every connection task of one server shares.
struct Ctx {
    what: &'static str,
    app: Router,
    limits: HttpLimits,
    stats: Arc<HttpStats>,
    table: Mutex<Table>,
    lingering: Arc<Semaphore>,
}

/// One admitted connection's place in [`Table`], given back on drop
/// however the connection task ends (finished, failed, panicked or
/// aborted), so the counts cannot leak.
struct Slot {
    ctx: Arc<Ctx>,
    key: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut t = lock(&self.ctx.table);
        t.total = t.total.saturating_sub(1);
        if let Some(n) = t.per_ip.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                t.per_ip.remove(&self.key);
            }
        }
        drop(t);
        self.ctx.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The key per-address limits count under: IPv4 (and IPv4-mapped IPv6)
/// addresses as they are, IPv6 by /64, since one host usually holds a
/// whole /64 and could otherwise open connections from endless addresses.
fn ip_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

impl Ctx {
    fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Slot, Event> {
        let key = ip_key(peer);
        let mut t = lock(&self.table);
        if t.total >= self.limits.max_connections.max(1) {
            return Err(Event::RefusedConnections);
        }
        let n = t.per_ip.get(&key).copied().unwrap_or(0);
        if n >= self.limits.max_connections_per_ip.max(1) {
            return Err(Event::RefusedPerIp);
        }
        t.total += 1;
        t.per_ip.insert(key, n + 1);
        drop(t);
        self.stats.open.fetch_add(1, Ordering::Relaxed);
        self.stats.accepted.inc();
        Ok(Slot {
            ctx: self.clone(),
            key,
        })
    }

    /// Answer a connection over a cap with 503 and close it, without
    /// waiting in the accept loop.
    fn refuse(&self, mut stream: TcpStream, conns: &mut JoinSet<()>) {
        match self.lingering.clone().try_acquire_owned() {
            Ok(permit) => {
                conns.spawn(async move {
                    let _permit = permit;
                    let _ = tokio::time::timeout(REFUSAL_LINGER, async {
                        stream.write_all(REFUSAL).await?;
                        stream.shutdown().await?;
                        // Read (and drop) what the client sent until it
                        // closes, so our close is a FIN, not a reset.
                        let mut sink = [0u8; 4096];
                        let mut left = 64 * 1024usize;
                        loop {
                            let n = tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await?;
                            if n == 0 || n >= left {
                                break;
                            }
                            left -= n;
                        }
                        io::Result::Ok(())
                    })
                    .await;
                });
            }
            Err(_) => {
                // Too many lingering already: best effort, then close.
                let _ = stream.try_write(REFUSAL);
            }
        }
    }
}

/// Resolve once shutdown is asked for (or the sender is gone).
async fn shutdown_asked(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Serve `app` on `listener` under `limits` until `shutdown` turns true,
/// counting into `stats`. `what` names the server in log lines ("HTTP
/// gateway", "local API"). At shutdown the accept loop stops at once and
/// requests in flight finish; idle connections are closed.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    stats: Arc<HttpStats>,
    mut shutdown: watch::Receiver<bool>,
    what: &'static str,
) {
    let ctx = Arc::new(Ctx {
        what,
        app,
        limits,
        stats,
        table: Mutex::new(Table::default()),
        lingering: Arc::new(Semaphore::new(MAX_LINGERING_REFUSALS)),
    });
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            _ = shutdown_asked(&mut shutdown) => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match ctx.admit(peer.ip()) {
                    Ok(slot) => {
                        let ctx = ctx.clone();
                        let rx = shutdown.clone();
                        conns.spawn(connection(ctx, stream, peer, slot, rx));
                    }
                    Err(event) => {
                        ctx.stats.event(what, event, peer.ip());
                        ctx.refuse(stream, &mut conns);
                    }
                },
                Err(e) if is_per_connection(&e) => {
                    debug!(server = what, error = %e, "accept failed for one connection");
                }
                Err(e) => {
                    ctx.stats.accept_errors.inc();
                    if let Some(n) = ctx.stats.log.allow(Event::AcceptFailed) {
                        warn!(server = what, error = %e, suppressed = n, "{}", Event::AcceptFailed.message());
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    }
    // No new connections from here; those open saw the same signal and
    // finish their request in flight, if any.
    drop(listener);
    while conns.join_next().await.is_some() {}
}

/// Accept errors about one connection (it went away before we took it),
/// as opposed to the listener being unable to accept at all.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    )
}

/// What the server knows about one connection beyond hyper's view.
#[derive(Default)]
struct ConnState {
    /// Bytes arrived since the last response was produced (or since the
    /// connection opened): a header timeout then cut off a slow head, not
    /// an idle connection. (Bytes of a pipelined next request read while
    /// the previous one was served are missed; that only moves a count
    /// from "header" to "idle".)
    head_bytes: AtomicBool,
    /// A write made no progress for the stall limit.
    write_stalled: AtomicBool,
    /// Requests seen on this connection.
    requests: AtomicU32,
}

async fn connection(
    ctx: Arc<Ctx>,
    stream: TcpStream,
    peer: SocketAddr,
    slot: Slot,
    mut shutdown: watch::Receiver<bool>,
) {
    let _slot = slot;
    // Without Nagle's delay the last segment of a response goes out at
    // once instead of waiting for the client's ACK.
    let _ = stream.set_nodelay(true);
    let state = Arc::new(ConnState::default());
    let io = TokioIo::new(GuardedIo {
        inner: stream,
        stall: ctx.limits.request_timeout,
        write_timer: None,
        state: state.clone(),
    });
    let service = GuardedService {
        app: TowerToHyperService::new(ctx.app.clone()),
        ctx: ctx.clone(),
        state: state.clone(),
        peer: peer.ip(),
        remote: peer,
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(ctx.limits.header_timeout)
        .max_header_size(ctx.limits.max_header_bytes.max(1))
        .max_headers(ctx.limits.max_headers.max(1))
        .keep_alive(true);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown_asked(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    let ip = peer.ip();
    match result {
        Err(_) if state.write_stalled.load(Ordering::Relaxed) => {
            ctx.stats.event(ctx.what, Event::WriteTimeout, ip);
        }
        Err(e) if e.is_timeout() && state.head_bytes.load(Ordering::Relaxed) => {
            ctx.stats.event(ctx.what, Event::HeaderTimeout, ip);
        }
        Err(e) if e.is_timeout() => {
            // Nothing sent: an idle keep-alive connection or a pre-opened
            // one. Normal for browsers, so counted but not logged.
            ctx.stats.timeouts_idle.inc();
            debug!(server = ctx.what, peer = %peer, "idle HTTP connection closed");
        }
        Err(e) if e.is_parse_too_large() => {
            ctx.stats.event(ctx.what, Event::HeadersTooLarge, ip);
        }
        Err(e) => debug!(server = ctx.what, peer = %peer, error = %e, "HTTP connection failed"),
        Ok(()) => {}
    }
}

/// The router behind hyper, with the per-request limits around it.
struct GuardedService {
    app: TowerToHyperService<Router>,
    ctx: Arc<Ctx>,
    state: Arc<ConnState>,
    peer: IpAddr,
    /// The caller's address, handed to handlers as `ConnectInfo` (a
    /// function's `REMOTE_ADDR`).
    remote: SocketAddr,
}

type ServiceFuture =
    Pin<Box<dyn Future<Output = Result<Response<axum::body::Body>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for GuardedService {
    type Response = Response<axum::body::Body>;
    type Error = Infallible;
    type Future = ServiceFuture;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let served = self.state.requests.fetch_add(1, Ordering::Relaxed) + 1;
        let timed_out = Arc::new(AtomicBool::new(false));
        let limit = self.ctx.limits.request_timeout;
        let mut req = req.map(|body| TimedBody {
            inner: body,
            deadline: tokio::time::Instant::now() + limit,
            timer: None,
            timed_out: timed_out.clone(),
        });
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(self.remote));
        let fut = hyper::service::Service::call(&self.app, req);
        let ctx = self.ctx.clone();
        let state = self.state.clone();
        let peer = self.peer;
        Box::pin(async move {
            let mut resp = fut.await?;
            state.head_bytes.store(false, Ordering::Relaxed);
            if timed_out.load(Ordering::Relaxed) {
                // The handler saw a failed body read and answered for that
                // (413 or 400); the real reason is the clock.
                ctx.stats.event(ctx.what, Event::BodyTimeout, peer);
                resp = (
                    StatusCode::REQUEST_TIMEOUT,
                    [(header::CONNECTION, "close")],
                    format!(
                        "request body not received within {} s\n",
                        limit.as_secs_f64()
                    ),
                )
                    .into_response();
            } else if ctx
                .limits
                .max_requests_per_connection
                .is_some_and(|max| served >= max)
            {
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok(resp)
        })
    }
}

/// Why a request body read failed: its deadline passed.
#[derive(Debug, thiserror::Error)]
#[error("request body not received in time")]
struct BodyTimeout;

/// A request body that fails once its deadline passes, flagging
/// `timed_out` so the service can answer 408.
struct TimedBody {
    inner: Incoming,
    deadline: tokio::time::Instant,
    /// Armed at the first read that has to wait.
    timer: Option<Pin<Box<Sleep>>>,
    timed_out: Arc<AtomicBool>,
}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.timed_out.load(Ordering::Relaxed) {
            return Poll::Ready(Some(Err(Box::new(BodyTimeout))));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|r| r.map_err(Into::into))),
            Poll::Pending => {
                let deadline = this.deadline;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.as_mut().poll(cx).is_ready() {
                    this.timed_out.store(true, Ordering::Relaxed);
                    return Poll::Ready(Some(Err(Box::new(BodyTimeout))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The TCP stream under hyper: notes bytes arriving, and fails a write
/// that makes no progress for `stall` (a client that never reads its
/// response would otherwise hold the connection forever).
struct GuardedIo {
    inner: TcpStream,
    stall: Duration,
    /// Armed when a write has to wait, cleared when one makes progress.
    write_timer: Option<Pin<Box<Sleep>>>,
    state: Arc<ConnState>,
}

impl GuardedIo {
    /// After a write (or flush) came back pending: has it stalled too long?
    fn stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let stall = self.stall;
        let timer = self
            .write_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        if timer.as_mut().poll(cx).is_ready() {
            self.state.write_stalled.store(true, Ordering::Relaxed);
            return Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing of the response",
            ));
        }
        Poll::Pending
    }

    fn progress<T>(&mut self, r: Poll<io::Result<T>>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(r) => {
                self.write_timer = None;
                Poll::Ready(r)
            }
            Poll::Pending => self.stalled(cx).map(Err),
        }
    }
}

impl AsyncRead for GuardedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.state.head_bytes.store(true, Ordering::Relaxed);
        }
        r
    }
}

impl AsyncWrite for GuardedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.progress(r, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.progress(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        this.progress(r, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.progress(r, cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn limits_validate() {
        assert_eq!(HttpLimits::default().validate(), Ok(()));
        let l = HttpLimits {
            max_connections_per_ip: 0,
            ..HttpLimits::default()
        };
        assert_eq!(
            l.validate(),
            Err(LimitsError::Zero("max_connections_per_ip"))
        );
        let l = HttpLimits {
            header_timeout: Duration::ZERO,
            ..HttpLimits::default()
        };
        assert!(l.validate().is_err());
    }

    #[test]
    fn ipv6_counts_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(ip_key(a), ip_key(b));
        assert_ne!(ip_key(a), ip_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().expect("ip");
        assert_eq!(ip_key(mapped), "192.0.2.7".parse::<IpAddr>().expect("ip"));
    }

    /// A response body that never ends.
    struct Endless;

    impl HttpBody for Endless {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            static CHUNK: [u8; 64 * 1024] = [0; 64 * 1024];
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&CHUNK)))))
        }
    }

    async fn start(
        app: Router,
        limits: HttpLimits,
    ) -> (
        SocketAddr,
        Arc<HttpStats>,
        watch::Sender<bool>,
        tokio::task::JoinHandle<()>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stats = Arc::new(HttpStats::default());
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(serve(listener, app, limits, stats.clone(), rx, "test"));
        (addr, stats, tx, task)
    }

    #[tokio::test]
    async fn a_client_that_reads_nothing_is_cut_off() {
        let app = Router::new().route(
            "/",
            axum::routing::get(|| async { axum::body::Body::new(Endless) }),
        );
        let limits = HttpLimits {
            request_timeout: Duration::from_secs(1),
            ..HttpLimits::default()
        };
        let (addr, stats, _tx, _task) = start(app, limits).await;
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        // Never read: the socket buffers fill, then the server's writes stall.
        let deadline = Instant::now() + Duration::from_secs(20);
        while stats.json().timeouts_write == 0 {
            assert!(
                Instant::now() < deadline,
                "no write timeout: {:?}",
                stats.json()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(stats.open(), 0);
    }

    #[tokio::test]
    async fn shutdown_lets_requests_in_flight_finish() {
        let app = Router::new().route(
            "/",
            axum::routing::get(|| async {
                tokio::time::sleep(Duration::from_millis(500)).await;
                "done"
            }),
        );
        let (addr, stats, tx, task) = start(app, HttpLimits::default()).await;
        let mut busy = TcpStream::connect(addr).await.expect("connect");
        busy.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let _idle = TcpStream::connect(addr).await.expect("connect");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(stats.open(), 2);
        tx.send(true).expect("shutdown");
        let mut answer = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut busy, &mut answer)
            .await
            .expect("read");
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("done"),
            "{answer}"
        );
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("serve() returns after shutdown")
            .expect("no panic");
        assert_eq!(stats.open(), 0);
        assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
    }

    #[tokio::test]
    async fn slots_are_given_back() {
        let ctx = Arc::new(Ctx {
            what: "test",
            app: Router::new(),
            limits: HttpLimits {
                max_connections: 3,
                max_connections_per_ip: 2,
                ..HttpLimits::default()
            },
            stats: Arc::new(HttpStats::default()),
            table: Mutex::new(Table::default()),
            lingering: Arc::new(Semaphore::new(1)),
        });
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let s1 = ctx.admit(a).expect("first");
        let s2 = ctx.admit(a).expect("second");
        assert_eq!(ctx.admit(a).err(), Some(Event::RefusedPerIp));
        let s3 = ctx.admit(b).expect("other address");
        assert_eq!(ctx.admit(b).err(), Some(Event::RefusedConnections));
        assert_eq!(ctx.stats.open(), 3);
        drop((s1, s2, s3));
        assert_eq!(ctx.stats.open(), 0);
        assert_eq!(lock(&ctx.table).per_ip.len(), 0);
        assert!(ctx.admit(a).is_ok());
    }
}
