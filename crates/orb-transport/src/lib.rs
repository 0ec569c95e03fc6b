//! QUIC transport between Orb nodes.
//!
//! Every node owns one [`Endpoint`]: a single UDP socket that both dials and
//! accepts, so NAT mappings opened by outgoing traffic also serve incoming
//! connections.
//!
//! # Identity
//!
//! Each node presents a self-signed TLS 1.3 certificate made from its Ed25519
//! node key, and both sides must present one (mutual TLS). A verifier takes
//! the certificate's Ed25519 public key, checks the handshake signature with
//! it (proof of possession), and derives the [`OrbId`] from it. The dialer
//! refuses a server whose ID differs from the one it asked for
//! ([`TransportError::WrongPeer`]); the acceptor learns the dialer's ID from
//! its client certificate. No names, issuers or dates are checked: the key is
//! the identity. TLS 1.2 is refused, and the ALPN is [`orb_proto::ALPN`].
//!
//! # Streams
//!
//! Each request uses its own bidirectional stream:
//!
//! ```text
//! dialer -> acceptor:  [u32 BE length][bincode Request]  [request body bytes ...] FIN
//! acceptor -> dialer:  [u32 BE length][bincode Response] [response body bytes ...] FIN
//! ```
//!
//! Frames are made by [`orb_proto::codec::encode_frame`] and are at most
//! [`orb_proto::limits::MAX_FRAME`] bytes; a declared length above that is
//! refused before anything is allocated. Bodies run to the end of the stream
//! and are capped by the reader ([`TransportConfig::max_request_body`] on the
//! accepting side, `max_response_body` per call on the dialing side). A
//! malformed request resets only its own stream.

mod punch;
mod relay;
mod setup;
mod tls;

pub use punch::{
    MAX_PROBE_SOCKETS, PUNCH_PACKET_LEN, ProbeSockets, ProbeWin, PunchKind, PunchPacket,
};
pub use relay::{SpliceGate, SpliceReport, Tunnel, TunnelReader, TunnelWriter, splice};

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use orb_proto::codec::{CodecError, check_frame_len, decode, encode_frame};
use orb_proto::wire::{ErrorKind, Request, Response, WireError};
use orb_proto::{Keypair, OrbId, PeerAddr};
use quinn::crypto::rustls::QuicClientConfig;
use quinn::{ConnectionError, ReadError, ReadExactError, ReadToEndError, VarInt, WriteError};
use tokio::sync::{Mutex, mpsc};
use tracing::{debug, warn};

use crate::setup::{Parts, accept_loop};
use crate::tls::{Identity, SERVER_NAME};

/// How long an accepted stream may take to deliver its request frame. Bounds
/// how long a slow or silent peer can hold a stream (and a reader task).
const REQUEST_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an accepted stream may take to deliver its body after the frame.
/// Generous, because a module upload over a slow link is legitimate.
const REQUEST_BODY_TIMEOUT: Duration = Duration::from_secs(300);

/// Handshaken connections waiting for [`Endpoint::accept`]. Small: handshake
/// tasks simply wait when it is full, and the connection cap bounds them.
const ACCEPT_QUEUE: usize = 64;

/// Longest close reason sent to a peer (QUIC frames must fit a packet).
const MAX_CLOSE_REASON: usize = 200;

/// Stream error codes sent with `RESET_STREAM` / `STOP_SENDING`.
mod code {
    use quinn::VarInt;
    /// The request frame could not be decoded.
    pub(crate) const MALFORMED: VarInt = VarInt::from_u32(1);
    /// A body was larger than the reader accepts.
    pub(crate) const TOO_LARGE: VarInt = VarInt::from_u32(2);
    /// The peer was too slow to send its request.
    pub(crate) const TIMEOUT: VarInt = VarInt::from_u32(3);
    /// The request was dropped without an answer.
    pub(crate) const NO_RESPONSE: VarInt = VarInt::from_u32(4);
    /// The stream failed part way.
    pub(crate) const ABORTED: VarInt = VarInt::from_u32(5);
}

/// Errors from the transport.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The UDP socket could not be bound (or the settings are invalid).
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The underlying error.
        source: io::Error,
    },
    /// Building the TLS configuration failed.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// The peer proved a different identity than the one dialed.
    #[error("wrong peer: expected {expected}, but the peer is {found}")]
    WrongPeer {
        /// The ID we dialed.
        expected: OrbId,
        /// The ID the peer's certificate proves.
        found: OrbId,
    },
    /// Dialing failed (unreachable, handshake refused, bad certificate).
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The connection ended while a request was in flight.
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    /// A single stream failed (reset, ended early, malformed answer).
    #[error("stream failed: {0}")]
    Stream(String),
    /// A message could not be encoded, or a request frame not decoded.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// A body was larger than the limit in force.
    #[error("body is over the {limit}-byte limit")]
    BodyTooLarge {
        /// The limit in force.
        limit: usize,
    },
    /// The handshake did not finish in time.
    #[error("timed out")]
    Timeout,
    /// The connection or endpoint was closed before the request was sent.
    #[error("closed")]
    Closed,
    /// A hole-punching datagram could not be sent or received.
    #[error("punch: {0}")]
    Punch(String),
}

impl TransportError {
    /// True when the peer cannot have received the request: dialing failed,
    /// the stream could not be opened, or the request could not be encoded.
    /// Callers may then retry on another replica without running a call twice.
    pub fn request_not_sent(&self) -> bool {
        matches!(
            self,
            TransportError::Bind { .. }
                | TransportError::Tls(_)
                | TransportError::WrongPeer { .. }
                | TransportError::Connect(_)
                | TransportError::Codec(_)
                | TransportError::Timeout
                | TransportError::Closed
        )
    }
}

/// Transport settings.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// A connection with no traffic for this long is closed. Default 10 s:
    /// with a 2 s keep-alive, a peer that died silently (kill -9, cable
    /// pulled) is noticed within seconds, and its replicas stop being used.
    pub idle_timeout: Duration,
    /// Keep-alive interval; must be below `idle_timeout` to keep idle
    /// connections (and NAT mappings) open.
    pub keep_alive: Duration,
    /// Bidirectional streams (requests) a peer may have open at once on one
    /// connection.
    pub max_concurrent_streams: u32,
    /// Largest request body an accepted stream may carry.
    pub max_request_body: usize,
    /// Open connections (in and out) above which incoming ones are refused.
    pub max_connections: usize,
    /// Longest a TLS handshake may take, dialing or accepting.
    pub handshake_timeout: Duration,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            idle_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(2),
            // Each stream slot a peer has used keeps quinn's receive state
            // (~370 B) for the life of the connection, and every connection
            // pays for its whole table: at 256 slots a super held ~255 KiB
            // per connected daemon once its DHT lookups had cycled through
            // them (docs/load.md). 64 requests in flight per peer is more
            // than a client's capacity, and a 65th waits for a free slot
            // rather than failing.
            max_concurrent_streams: 64,
            max_request_body: orb_proto::limits::MAX_MODULE + 64 * 1024,
            max_connections: 4096,
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

struct EndpointInner {
    ep: quinn::Endpoint,
    id: OrbId,
    cfg: TransportConfig,
    identity: Identity,
    transport: Arc<quinn::TransportConfig>,
    incoming: Mutex<mpsc::Receiver<(quinn::Connection, OrbId)>>,
    closed: AtomicBool,
    /// A second handle on the UDP socket for raw punch datagrams; `None`
    /// for an endpoint over a relay tunnel.
    raw: Option<punch::RawSender>,
}

impl Drop for EndpointInner {
    fn drop(&mut self) {
        // The accept loop holds its own handle to the quinn endpoint; closing
        // here lets it (and the socket) go once nobody can use them.
        self.ep.close(VarInt::from_u32(0), b"endpoint dropped");
    }
}

/// A node's QUIC endpoint: one UDP socket that dials and accepts.
///
/// Cloning is cheap and shares the socket.
#[derive(Clone)]
pub struct Endpoint {
    inner: Arc<EndpointInner>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Endpoint({})", self.inner.id.short())
    }
}

impl Endpoint {
    /// Bind `addr` and start accepting connections for the node `keypair`.
    ///
    /// Must be called inside a tokio runtime.
    pub fn bind(
        addr: SocketAddr,
        keypair: &Keypair,
        cfg: TransportConfig,
    ) -> Result<Endpoint, TransportError> {
        let socket = std::net::UdpSocket::bind(addr)
            .map_err(|source| TransportError::Bind { addr, source })?;
        Self::from_socket(socket, keypair, cfg)
    }

    /// Start an endpoint for the node `keypair` on a UDP socket that is
    /// already bound, e.g. the one that won a birthday punch
    /// ([`ProbeSockets::wait`]), with the same identity pinning as
    /// [`Endpoint::bind`].
    ///
    /// Must be called inside a tokio runtime.
    pub fn from_socket(
        socket: std::net::UdpSocket,
        keypair: &Keypair,
        cfg: TransportConfig,
    ) -> Result<Endpoint, TransportError> {
        let addr = socket
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let bind_err = |source: io::Error| TransportError::Bind { addr, source };
        let parts = Parts::new(keypair, &cfg, None).map_err(|e| match e {
            TransportError::Bind { source, .. } => bind_err(source),
            other => other,
        })?;
        // A second descriptor of the same socket: raw datagrams leave from
        // the very address QUIC uses, so they open the same NAT mapping.
        let raw = punch::RawSender::new(socket.try_clone().map_err(bind_err)?);
        let runtime = quinn::default_runtime()
            .ok_or_else(|| bind_err(io::Error::other("no async runtime (call inside tokio)")))?;
        let socket = runtime.wrap_udp_socket(socket).map_err(bind_err)?;
        Self::build(parts, socket, runtime, keypair, cfg, Some(raw)).map_err(bind_err)
    }

    /// An endpoint whose "socket" is a relay circuit: QUIC packets travel as
    /// length-prefixed frames inside `tunnel`, so the two ends run their own
    /// TLS handshake through the relay and the relay cannot read, alter or
    /// impersonate either side. Dial the other end at
    /// [`Endpoint::tunnel_peer`]; the endpoint closes when the tunnel ends.
    pub fn over_tunnel(
        tunnel: Tunnel,
        keypair: &Keypair,
        cfg: TransportConfig,
    ) -> Result<Endpoint, TransportError> {
        let parts = Parts::new(keypair, &cfg, Some(relay::TUNNEL_MTU))?;
        let runtime = quinn::default_runtime().ok_or_else(|| TransportError::Bind {
            addr: relay::LOCAL,
            source: io::Error::other("no async runtime (call inside tokio)"),
        })?;
        let socket = relay::TunnelSocket::spawn(tunnel);
        Self::build(parts, socket, runtime, keypair, cfg, None).map_err(|source| {
            TransportError::Bind {
                addr: relay::LOCAL,
                source,
            }
        })
    }

    /// The address under which an endpoint made by [`Endpoint::over_tunnel`]
    /// reaches the node at the other end of its tunnel.
    pub fn tunnel_peer(id: OrbId) -> PeerAddr {
        PeerAddr {
            id,
            addr: relay::REMOTE,
        }
    }

    fn build(
        parts: Parts,
        socket: Arc<dyn quinn::AsyncUdpSocket>,
        runtime: Arc<dyn quinn::Runtime>,
        keypair: &Keypair,
        cfg: TransportConfig,
        raw: Option<punch::RawSender>,
    ) -> io::Result<Endpoint> {
        let Parts {
            endpoint_config,
            server,
            identity,
            transport,
        } = parts;
        let ep = quinn::Endpoint::new_with_abstract_socket(
            endpoint_config,
            Some(server),
            socket,
            runtime,
        )?;
        let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
        tokio::spawn(accept_loop(
            ep.clone(),
            tx,
            cfg.max_connections,
            cfg.handshake_timeout,
        ));
        Ok(Endpoint {
            inner: Arc::new(EndpointInner {
                ep,
                id: keypair.id(),
                cfg,
                identity,
                transport,
                incoming: Mutex::new(rx),
                closed: AtomicBool::new(false),
                raw,
            }),
        })
    }

    /// The bound address (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> Result<SocketAddr, TransportError> {
        self.inner
            .ep
            .local_addr()
            .map_err(|source| TransportError::Bind {
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                source,
            })
    }

    /// This node's Orb ID.
    pub fn id(&self) -> OrbId {
        self.inner.id
    }

    /// Dial `peer` and check that it proves `peer.id`.
    pub async fn connect(&self, peer: PeerAddr) -> Result<Connection, TransportError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(TransportError::Closed);
        }
        let (tls, verifier) = self.inner.identity.client_config(peer.id)?;
        let quic_tls =
            QuicClientConfig::try_from(tls).map_err(|e| TransportError::Tls(e.to_string()))?;
        let mut client = quinn::ClientConfig::new(Arc::new(quic_tls));
        client.transport_config(self.inner.transport.clone());
        let connecting = self
            .inner
            .ep
            .connect_with(client, peer.addr, SERVER_NAME)
            .map_err(|e| TransportError::Connect(format!("{peer:?}: {e}")))?;
        let result = tokio::time::timeout(self.inner.cfg.handshake_timeout, connecting)
            .await
            .map_err(|_| TransportError::Timeout)?;
        match result {
            Ok(conn) => Ok(Connection::new(conn, peer.id, self.inner.clone())),
            Err(e) => match verifier.found() {
                Some(found) if found != peer.id => Err(TransportError::WrongPeer {
                    expected: peer.id,
                    found,
                }),
                _ => Err(TransportError::Connect(format!("{peer:?}: {e}"))),
            },
        }
    }

    /// The next incoming connection whose handshake completed, with the
    /// dialer's ID learned from its certificate. `None` once the endpoint is
    /// closed. Failed handshakes are logged and skipped.
    pub async fn accept(&self) -> Option<Connection> {
        if self.inner.closed.load(Ordering::Acquire) {
            return None;
        }
        let next = self.inner.incoming.lock().await.recv().await;
        if self.inner.closed.load(Ordering::Acquire) {
            return None;
        }
        let (conn, peer) = next?;
        Some(Connection::new(conn, peer, self.inner.clone()))
    }

    /// Close every connection and stop accepting.
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.ep.close(VarInt::from_u32(0), b"endpoint closed");
    }

    /// Wait until every connection has finished closing, so that peers were
    /// told. Call after [`Endpoint::close`].
    pub async fn wait_idle(&self) {
        self.inner.ep.wait_idle().await;
    }
}

/// Limits an accepted stream is read under.
#[derive(Clone, Copy)]
struct StreamLimits {
    peer: OrbId,
    max_request_body: usize,
}

struct ConnInner {
    conn: quinn::Connection,
    peer: OrbId,
    limits: StreamLimits,
    queue_len: usize,
    /// Started on the first `accept_request`, so a connection used only for
    /// dialing never reads (and buffers) streams nobody will answer.
    /// Boxed: tokio allocates channel slots in blocks of 32 whatever their
    /// use, and an `IncomingRequest` is ~420 bytes; per connection, that
    /// was 13 KiB of mostly empty queue.
    requests: Mutex<Option<mpsc::Receiver<Box<IncomingRequest>>>>,
    /// Keeps the socket open while the connection is in use.
    _endpoint: Arc<EndpointInner>,
}

impl Drop for ConnInner {
    fn drop(&mut self) {
        // The stream reader task holds its own quinn handle; without this the
        // connection would outlive every user handle.
        self.conn.close(VarInt::from_u32(0), b"connection dropped");
    }
}

/// An authenticated connection to one peer. Cloning is cheap.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<ConnInner>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Connection({}@{})",
            self.inner.peer.short(),
            self.inner.conn.remote_address()
        )
    }
}

impl Connection {
    fn new(conn: quinn::Connection, peer: OrbId, endpoint: Arc<EndpointInner>) -> Self {
        let limits = StreamLimits {
            peer,
            max_request_body: endpoint.cfg.max_request_body,
        };
        let queue_len = (endpoint.cfg.max_concurrent_streams as usize).clamp(1, 1024);
        Connection {
            inner: Arc::new(ConnInner {
                conn,
                peer,
                limits,
                queue_len,
                requests: Mutex::new(None),
                _endpoint: endpoint,
            }),
        }
    }

    /// The peer's proven Orb ID.
    pub fn peer_id(&self) -> OrbId {
        self.inner.peer
    }

    /// The peer's current address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.inner.conn.remote_address()
    }

    /// Current round-trip time estimate.
    pub fn rtt(&self) -> Duration {
        self.inner.conn.rtt()
    }

    /// Send `req` with `body` on a new stream and read the answer, whose body
    /// may be at most `max_response_body` bytes.
    ///
    /// There is no timeout here; wrap the call in one.
    pub async fn request(
        &self,
        req: &Request,
        body: &[u8],
        max_response_body: usize,
    ) -> Result<(Response, Bytes), TransportError> {
        let frame = encode_frame(req)?;
        let (mut send, mut recv) = self.inner.conn.open_bi().await.map_err(|e| {
            debug!(peer = %self.inner.peer.short(), "cannot open stream: {e}");
            TransportError::Closed
        })?;
        let written = async {
            send.write_all(&frame).await?;
            send.write_all(body).await?;
            send.finish().map_err(|_| WriteError::ClosedStream)
        }
        .await;
        match written {
            Ok(()) => {}
            // The peer stopped reading early (e.g. the body is too large);
            // its answer says why, so read it rather than failing here.
            Err(WriteError::Stopped(code)) => {
                debug!(peer = %self.inner.peer.short(), %code, "peer stopped reading request");
            }
            Err(e) => return Err(write_err(e)),
        }
        let frame = read_frame(&mut recv).await.map_err(|e| match e {
            TransportError::Codec(e) => TransportError::Stream(format!("bad response frame: {e}")),
            other => other,
        })?;
        // A bad answer is the peer's fault after the request went out, so it
        // is a stream error, not a (retry-safe) codec error.
        let resp: Response = decode(&frame)
            .map_err(|e| TransportError::Stream(format!("malformed response: {e}")))?;
        let body = match recv.read_to_end(max_response_body).await {
            Ok(b) => Bytes::from(b),
            Err(ReadToEndError::TooLong) => {
                let _ = recv.stop(code::TOO_LARGE);
                return Err(TransportError::BodyTooLarge {
                    limit: max_response_body,
                });
            }
            Err(ReadToEndError::Read(e)) => return Err(read_err(e)),
        };
        Ok((resp, body))
    }

    /// Send `req` (one that [`Request::opens_tunnel`]) on a new stream and
    /// read the answer frame; on [`Response::RelayReady`] the stream stays
    /// open as a [`Tunnel`]. Any other answer comes back with `None`.
    ///
    /// There is no timeout here; wrap the call in one.
    pub async fn open_tunnel(
        &self,
        req: &Request,
    ) -> Result<(Response, Option<Tunnel>), TransportError> {
        let frame = encode_frame(req)?;
        let (mut send, mut recv) = self.inner.conn.open_bi().await.map_err(|e| {
            debug!(peer = %self.inner.peer.short(), "cannot open stream: {e}");
            TransportError::Closed
        })?;
        send.write_all(&frame).await.map_err(write_err)?;
        let frame = read_frame(&mut recv).await.map_err(|e| match e {
            TransportError::Codec(e) => TransportError::Stream(format!("bad response frame: {e}")),
            other => other,
        })?;
        let resp: Response = decode(&frame)
            .map_err(|e| TransportError::Stream(format!("malformed response: {e}")))?;
        if matches!(resp, Response::RelayReady) {
            Ok((
                resp,
                Some(Tunnel {
                    send,
                    recv,
                    conn: Some(self.clone()),
                }),
            ))
        } else {
            let _ = send.finish();
            Ok((resp, None))
        }
    }

    /// The next request the peer sent, with its body read. Malformed or slow
    /// streams are reset and skipped; an error means the connection is gone.
    pub async fn accept_request(&self) -> Result<IncomingRequest, TransportError> {
        let mut guard = self.inner.requests.lock().await;
        let rx = guard.get_or_insert_with(|| {
            let (tx, rx) = mpsc::channel(self.inner.queue_len);
            tokio::spawn(read_streams(self.inner.conn.clone(), self.inner.limits, tx));
            rx
        });
        match rx.recv().await {
            Some(req) => Ok(*req),
            None => Err(self
                .inner
                .conn
                .close_reason()
                .map(conn_err)
                .unwrap_or(TransportError::Closed)),
        }
    }

    /// Close the connection, telling the peer `reason`.
    pub fn close(&self, reason: &str) {
        let mut end = reason.len().min(MAX_CLOSE_REASON);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        self.inner
            .conn
            .close(VarInt::from_u32(0), &reason.as_bytes()[..end]);
    }

    /// True once the connection has ended, for whatever reason.
    pub fn is_closed(&self) -> bool {
        self.inner.conn.close_reason().is_some()
    }

    /// Wait for the connection to end, and say why.
    pub async fn closed(&self) -> TransportError {
        conn_err(self.inner.conn.closed().await)
    }

    /// Test helper: send raw `bytes` on a new stream, finish it, and return
    /// whatever the peer answers (an error if it resets the stream).
    #[doc(hidden)]
    pub async fn send_raw(&self, bytes: &[u8]) -> Result<Bytes, TransportError> {
        let (mut send, mut recv) = self
            .inner
            .conn
            .open_bi()
            .await
            .map_err(|_| TransportError::Closed)?;
        match send.write_all(bytes).await {
            Ok(()) | Err(WriteError::Stopped(_)) => {}
            Err(e) => return Err(write_err(e)),
        }
        let _ = send.finish();
        match recv.read_to_end(orb_proto::limits::MAX_FRAME).await {
            Ok(b) => Ok(Bytes::from(b)),
            Err(ReadToEndError::TooLong) => Err(TransportError::BodyTooLarge {
                limit: orb_proto::limits::MAX_FRAME,
            }),
            Err(ReadToEndError::Read(e)) => Err(read_err(e)),
        }
    }
}

/// Accepts the peer's streams and reads each in its own task, so one slow
/// stream never holds up the others. Ends when the connection does.
async fn read_streams(
    conn: quinn::Connection,
    limits: StreamLimits,
    tx: mpsc::Sender<Box<IncomingRequest>>,
) {
    loop {
        let (send, recv) = match conn.accept_bi().await {
            Ok(streams) => streams,
            Err(e) => {
                debug!(peer = %limits.peer.short(), "connection ended: {e}");
                return;
            }
        };
        let tx = tx.clone();
        // Tasks are bounded by max_concurrent_streams: a stream stays open
        // until its request is answered or refused.
        tokio::spawn(async move {
            if let Some(req) = read_request(send, recv, limits).await {
                // If nobody accepts any more, dropping the request resets it.
                let _ = tx.send(Box::new(req)).await;
            }
        });
    }
}

/// Read one request; on failure, tell the peer and return `None`.
async fn read_request(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    limits: StreamLimits,
) -> Option<IncomingRequest> {
    let peer = limits.peer.short();
    let header = async {
        let frame = read_frame(&mut recv).await?;
        Ok::<Request, TransportError>(decode(&frame)?)
    };
    let req = match tokio::time::timeout(REQUEST_HEADER_TIMEOUT, header).await {
        Ok(Ok(req)) => req,
        Ok(Err(e)) => {
            warn!(%peer, "refusing request: {e}");
            refuse(send, recv, code::MALFORMED);
            return None;
        }
        Err(_) => {
            debug!(%peer, "request frame not received in time");
            refuse(send, recv, code::TIMEOUT);
            return None;
        }
    };
    if req.opens_tunnel() {
        // The rest of the stream is the tunnel's, not a body.
        return Some(IncomingRequest {
            req,
            body: Bytes::new(),
            responder: Responder { send: Some(send) },
            tunnel_recv: Some(recv),
        });
    }
    let body = match tokio::time::timeout(
        REQUEST_BODY_TIMEOUT,
        recv.read_to_end(limits.max_request_body),
    )
    .await
    {
        Ok(Ok(body)) => Bytes::from(body),
        Ok(Err(ReadToEndError::TooLong)) => {
            debug!(%peer, limit = limits.max_request_body, "request body too large");
            let _ = recv.stop(code::TOO_LARGE);
            // Answer properly so the caller learns why, not just "reset".
            let resp = Response::Error(WireError::new(
                ErrorKind::TooLarge,
                format!(
                    "request body is over the {}-byte limit",
                    limits.max_request_body
                ),
            ));
            let responder = Responder { send: Some(send) };
            let _ =
                tokio::time::timeout(REQUEST_HEADER_TIMEOUT, responder.respond(&resp, &[])).await;
            return None;
        }
        Ok(Err(ReadToEndError::Read(e))) => {
            debug!(%peer, "request body read failed: {e}");
            let _ = send.reset(code::ABORTED);
            return None;
        }
        Err(_) => {
            debug!(%peer, "request body not received in time");
            refuse(send, recv, code::TIMEOUT);
            return None;
        }
    };
    Some(IncomingRequest {
        req,
        body,
        responder: Responder { send: Some(send) },
        tunnel_recv: None,
    })
}

fn refuse(mut send: quinn::SendStream, mut recv: quinn::RecvStream, code: VarInt) {
    // Errors only mean the stream is already gone, which is the goal.
    let _ = recv.stop(code);
    let _ = send.reset(code);
}

/// Read one length-prefixed frame, refusing an oversized length before
/// allocating and growing the buffer only as bytes actually arrive.
async fn read_frame(recv: &mut quinn::RecvStream) -> Result<Vec<u8>, TransportError> {
    let mut head = [0u8; 4];
    recv.read_exact(&mut head).await.map_err(read_exact_err)?;
    let len = check_frame_len(u32::from_be_bytes(head))?;
    let mut buf = Vec::with_capacity(len.min(64 * 1024));
    while buf.len() < len {
        match recv.read_chunk(len - buf.len(), true).await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
            Ok(None) => {
                return Err(TransportError::Stream(format!(
                    "stream ended inside a frame ({} of {len} bytes)",
                    buf.len()
                )));
            }
            Err(e) => return Err(read_err(e)),
        }
    }
    Ok(buf)
}

fn conn_err(e: ConnectionError) -> TransportError {
    match e {
        ConnectionError::LocallyClosed => TransportError::Closed,
        other => TransportError::ConnectionLost(other.to_string()),
    }
}

fn read_err(e: ReadError) -> TransportError {
    match e {
        ReadError::Reset(code) => TransportError::Stream(format!("reset by peer (code {code})")),
        ReadError::ConnectionLost(e) => conn_err(e),
        other => TransportError::Stream(other.to_string()),
    }
}

fn read_exact_err(e: ReadExactError) -> TransportError {
    match e {
        ReadExactError::FinishedEarly(n) => {
            TransportError::Stream(format!("stream ended after {n} bytes, before a full frame"))
        }
        ReadExactError::ReadError(e) => read_err(e),
    }
}

fn write_err(e: WriteError) -> TransportError {
    match e {
        WriteError::Stopped(code) => {
            TransportError::Stream(format!("stopped by peer (code {code})"))
        }
        WriteError::ConnectionLost(e) => conn_err(e),
        other => TransportError::Stream(other.to_string()),
    }
}

/// A request read from a stream, waiting for an answer.
pub struct IncomingRequest {
    req: Request,
    body: Bytes,
    responder: Responder,
    /// The receiving side of a tunnel request's stream (unread).
    tunnel_recv: Option<quinn::RecvStream>,
}

impl std::fmt::Debug for IncomingRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncomingRequest")
            .field("req", &self.req)
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl IncomingRequest {
    /// The request.
    pub fn request(&self) -> &Request {
        &self.req
    }

    /// Take the request, its body, and the handle to answer it with.
    /// For a tunnel request, this gives up the tunnel (answer with an
    /// error); use [`IncomingRequest::accept_tunnel`] to take it.
    pub fn split(self) -> (Request, Bytes, Responder) {
        (self.req, self.body, self.responder)
    }

    /// Answer a tunnel request with [`Response::RelayReady`] and keep its
    /// stream as a [`Tunnel`].
    pub async fn accept_tunnel(mut self) -> Result<Tunnel, TransportError> {
        let Some(recv) = self.tunnel_recv.take() else {
            return Err(TransportError::Stream("not a tunnel request".into()));
        };
        let Some(mut send) = self.responder.send.take() else {
            return Err(TransportError::Closed);
        };
        let frame = encode_frame(&Response::RelayReady)?;
        send.write_all(&frame).await.map_err(write_err)?;
        Ok(Tunnel {
            send,
            recv,
            conn: None,
        })
    }
}

/// Answers one request. Dropping it without answering resets the stream, so
/// the caller sees an error instead of waiting.
pub struct Responder {
    send: Option<quinn::SendStream>,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Responder")
    }
}

impl Responder {
    /// Send `resp` followed by `body`, then end the stream.
    pub async fn respond(mut self, resp: &Response, body: &[u8]) -> Result<(), TransportError> {
        let frame = encode_frame(resp)?; // on error, Drop resets the stream
        let Some(mut send) = self.send.take() else {
            return Err(TransportError::Closed);
        };
        send.write_all(&frame).await.map_err(write_err)?;
        send.write_all(body).await.map_err(write_err)?;
        send.finish()
            .map_err(|_| TransportError::Stream("stream already closed".into()))
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if let Some(mut send) = self.send.take() {
            // quinn would otherwise finish the stream cleanly, and the caller
            // would see an empty answer instead of a refusal.
            let _ = send.reset(code::NO_RESPONSE);
        }
    }
}
