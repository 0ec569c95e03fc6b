//! The async driver: runs a [`Core`] over orb-transport.
//!
//! [`Overlay::spawn`] starts an actor task that owns the core. Handles
//! ([`Overlay`], cheap to clone) talk to it over a bounded command channel.
//! The actor sends each [`crate::Transmit`] as a [`Request::Dht`] on a cached
//! connection in its own task (bounded concurrency, each bounded by the RPC
//! timeout) and feeds answers back through a bounded channel.
//!
//! The driver dials but does not accept: a node multiplexes DHT requests
//! with its other requests on the same connections, so its own accept loop
//! hands [`Request::Dht`] to [`Overlay::handle_request`]. Applications that
//! embed only the overlay can use [`serve`] as that accept loop.
//!
//! A node can also hand the driver connections it already holds
//! ([`Overlay::adopt_connection`]): a client's DHT requests to its home
//! super then travel on its tunnel to that super instead of on a second
//! QUIC connection, so the super holds one connection per client, not two.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use orb_proto::dht::{DhtMessage, DhtRequest, DhtResponse, Key, Record};
use orb_proto::wire::{ErrorKind, Request, Response, WireError};
use orb_proto::{OrbId, PeerAddr};
use orb_transport::{Connection, Endpoint};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::Millis;
use crate::core::{
    Config, Core, CoreError, Event, LookupResult, QueryId, Role, RpcId, Snapshot, Stats,
};
use crate::lookup::LookupKind;

/// Largest DHT answer body accepted (answers carry no body; this is a cap).
const MAX_RESPONSE_BODY: usize = 1024 * 1024;

/// Errors from the overlay.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum OverlayError {
    /// The overlay task has stopped.
    #[error("overlay is shut down")]
    Closed,
    /// The core refused to start the operation.
    #[error(transparent)]
    Core(#[from] CoreError),
    /// Bootstrapping reached no server.
    #[error("bootstrap failed: no server answered")]
    BootstrapFailed,
    /// No server stored the record.
    #[error("record stored nowhere: {0}")]
    NotStored(String),
    /// As many adopted connections are live as the driver keeps.
    #[error("already {limit} adopted connections live")]
    TooManyAdopted {
        /// The limit ([`OverlayConfig::max_adopted`]).
        limit: usize,
    },
}

/// Driver settings.
#[derive(Debug, Clone)]
pub struct OverlayConfig {
    /// Core settings.
    pub core: Config,
    /// RPCs on the wire at once at most.
    pub max_concurrent_rpcs: usize,
    /// Outgoing connections cached at most (least recently used go first).
    pub max_connections: usize,
    /// Live connections adopted from the embedding node at most (see
    /// [`Overlay::adopt_connection`]); they are not counted in, and never
    /// evicted by, `max_connections`.
    pub max_adopted: usize,
    /// Commands queued for the actor at most.
    pub command_queue: usize,
    /// Seed for the core's random choices; `None`: from the clock.
    pub seed: Option<u64>,
    /// State to start from (see [`Overlay::snapshot`]).
    pub restore: Option<Snapshot>,
}

impl Default for OverlayConfig {
    fn default() -> Self {
        OverlayConfig {
            core: Config::default(),
            max_concurrent_rpcs: 64,
            max_connections: 256,
            max_adopted: 16,
            command_queue: 256,
            seed: None,
            restore: None,
        }
    }
}

/// Counters and averages.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OverlayStats {
    /// The core's counters.
    pub core: Stats,
    /// Lookups finished.
    pub lookups: u64,
    /// Lookups that reached at least one server.
    pub lookups_ok: u64,
    /// Mean rounds per lookup.
    pub mean_rounds: f64,
    /// Routing table size.
    pub peers: usize,
    /// Records held.
    pub records: usize,
}

enum Command {
    Bootstrap(Vec<PeerAddr>, oneshot::Sender<Result<usize, OverlayError>>),
    Lookup(
        Key,
        LookupKind,
        oneshot::Sender<Result<LookupResult, OverlayError>>,
    ),
    Put(
        Box<Record>,
        oneshot::Sender<Result<PutOutcome, OverlayError>>,
    ),
    Request(
        Option<PeerAddr>,
        Box<DhtRequest>,
        oneshot::Sender<DhtResponse>,
    ),
    Table(oneshot::Sender<Vec<PeerAddr>>),
    Records(oneshot::Sender<Vec<Record>>),
    Stats(oneshot::Sender<OverlayStats>),
    Snapshot(oneshot::Sender<Snapshot>),
    Shutdown(oneshot::Sender<()>),
}

/// Where a put ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutOutcome {
    /// Servers that stored the record.
    pub stored_on: Vec<OrbId>,
    /// Refusals and failures, as `peer: reason`.
    pub refused: Vec<String>,
}

enum Waiter {
    Bootstrap(oneshot::Sender<Result<usize, OverlayError>>),
    Lookup(oneshot::Sender<Result<LookupResult, OverlayError>>),
    Put(oneshot::Sender<Result<PutOutcome, OverlayError>>),
}

/// A handle on a running overlay. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Overlay {
    tx: mpsc::Sender<Command>,
    local: PeerAddr,
    role: Role,
    conns: Arc<Mutex<ConnCache>>,
}

fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

impl Overlay {
    /// Start the overlay for the node at `local` (its ID and the address
    /// others reach it at) on `endpoint`. Must be called inside a tokio
    /// runtime. Returns the handle and the actor task, which ends after
    /// [`Overlay::shutdown`] or when every handle is dropped.
    pub fn spawn(
        endpoint: Endpoint,
        local: PeerAddr,
        role: Role,
        config: OverlayConfig,
    ) -> (Overlay, JoinHandle<()>) {
        let now = now_ms();
        let seed = config.seed.unwrap_or_else(|| {
            now ^ u64::from_le_bytes(local.id.0[..8].try_into().unwrap_or([0; 8]))
        });
        let core = match config.restore.clone() {
            Some(s) => Core::restore(local, role, config.core.clone(), seed, s, now),
            None => Core::new(local, role, config.core.clone(), seed, now),
        };
        let (tx, rx) = mpsc::channel(config.command_queue.max(1));
        let conns = Arc::new(Mutex::new(ConnCache::new(
            config.max_connections.max(1),
            config.max_adopted,
        )));
        let actor = Actor {
            core,
            endpoint,
            conns: conns.clone(),
            permits: Arc::new(Semaphore::new(config.max_concurrent_rpcs.max(1))),
            rpc_timeout: Duration::from_millis(config.core.rpc_timeout),
            waiters: HashMap::new(),
        };
        let task = tokio::spawn(actor.run(rx));
        (
            Overlay {
                tx,
                local,
                role,
                conns,
            },
            task,
        )
    }

    /// The local node.
    pub fn local(&self) -> PeerAddr {
        self.local
    }

    /// The local role.
    pub fn role(&self) -> Role {
        self.role
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, OverlayError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| OverlayError::Closed)?;
        rx.await.map_err(|_| OverlayError::Closed)
    }

    /// Join through `peers` (known servers): a lookup of the local ID, then
    /// bucket refreshes in the background. Returns the routing table size.
    pub async fn bootstrap(&self, peers: Vec<PeerAddr>) -> Result<usize, OverlayError> {
        self.ask(|tx| Command::Bootstrap(peers, tx)).await?
    }

    /// The k closest servers to `key` (partial if the deadline passed).
    pub async fn lookup(&self, key: Key) -> Result<Vec<PeerAddr>, OverlayError> {
        Ok(self.lookup_full(key, LookupKind::FindNode).await?.closest)
    }

    /// A lookup with its full result (rounds, peers queried, duration).
    pub async fn lookup_full(
        &self,
        key: Key,
        kind: LookupKind,
    ) -> Result<LookupResult, OverlayError> {
        self.ask(|tx| Command::Lookup(key, kind, tx)).await?
    }

    /// Valid records under `key`, one per publisher (empty if none).
    pub async fn get(&self, key: Key) -> Result<Vec<Record>, OverlayError> {
        Ok(self.lookup_full(key, LookupKind::FindValue).await?.records)
    }

    /// Store `record` on the k closest servers; returns how many stored it.
    /// Fails when none did (with their reasons, e.g. a name owned by
    /// another key). The record is republished until it expires.
    pub async fn put(&self, record: Record) -> Result<usize, OverlayError> {
        let out = self.put_full(record).await?;
        if out.stored_on.is_empty() {
            return Err(OverlayError::NotStored(out.refused.join("; ")));
        }
        Ok(out.stored_on.len())
    }

    /// [`Overlay::put`] with the full outcome, refusals included.
    pub async fn put_full(&self, record: Record) -> Result<PutOutcome, OverlayError> {
        self.ask(|tx| Command::Put(Box::new(record), tx)).await?
    }

    /// Answer a DHT request that arrived on a connection from `from` (the
    /// peer ID the transport proved, and the connection's remote address).
    /// The sender enters the routing table only if it says it is a server
    /// under that same ID.
    pub async fn handle_request(&self, from: PeerAddr, msg: DhtMessage) -> DhtResponse {
        let server = msg.from_server.filter(|p| p.id == from.id);
        self.ask(|tx| Command::Request(server, Box::new(msg.body), tx))
            .await
            .unwrap_or_else(|e| DhtResponse::Refused(e.to_string()))
    }

    /// Send DHT requests to `conn`'s peer on `conn`, a connection the
    /// embedding node already holds (a client's tunnel to its home super),
    /// instead of dialing a connection of the driver's own.
    ///
    /// An adopted connection is preferred to a dialed one while it is live,
    /// is never closed or evicted by the driver (the node owns it; a failed
    /// request does not drop it), and is forgotten once it closes; the
    /// driver then dials as usual until the node adopts a new one. Adopting
    /// a connection to a peer already adopted replaces the old one. At most
    /// [`OverlayConfig::max_adopted`] live ones are kept.
    pub fn adopt_connection(&self, conn: Connection) -> Result<(), OverlayError> {
        let mut cache = self.conns.lock().map_err(|_| OverlayError::Closed)?;
        cache.adopt(conn)
    }

    /// Peers whose adopted connection is live.
    pub fn adopted_peers(&self) -> Vec<OrbId> {
        self.conns
            .lock()
            .map(|mut c| c.live_adopted())
            .unwrap_or_default()
    }

    /// The routing table's peers.
    pub async fn routing_table(&self) -> Result<Vec<PeerAddr>, OverlayError> {
        self.ask(Command::Table).await
    }

    /// The records held.
    pub async fn records(&self) -> Result<Vec<Record>, OverlayError> {
        self.ask(Command::Records).await
    }

    /// Counters.
    pub async fn stats(&self) -> Result<OverlayStats, OverlayError> {
        self.ask(Command::Stats).await
    }

    /// State to persist; pass it back as [`OverlayConfig::restore`].
    pub async fn snapshot(&self) -> Result<Snapshot, OverlayError> {
        self.ask(Command::Snapshot).await
    }

    /// Stop the actor. Pending operations fail with [`OverlayError::Closed`].
    pub async fn shutdown(&self) {
        let _ = self.ask(Command::Shutdown).await;
    }
}

/// Bounded LRU of outgoing connections, and the (bounded) connections the
/// node handed over, which take precedence and are never evicted.
#[derive(Debug)]
struct ConnCache {
    max: usize,
    tick: u64,
    conns: HashMap<OrbId, (Connection, u64)>,
    max_adopted: usize,
    adopted: HashMap<OrbId, Connection>,
}

impl ConnCache {
    fn new(max: usize, max_adopted: usize) -> Self {
        ConnCache {
            max,
            tick: 0,
            conns: HashMap::new(),
            max_adopted,
            adopted: HashMap::new(),
        }
    }

    fn adopt(&mut self, conn: Connection) -> Result<(), OverlayError> {
        let id = conn.peer_id();
        if !self.adopted.contains_key(&id) {
            self.adopted.retain(|_, c| !c.is_closed());
            if self.adopted.len() >= self.max_adopted {
                return Err(OverlayError::TooManyAdopted {
                    limit: self.max_adopted,
                });
            }
        }
        // The driver's own connection to that peer is no longer needed;
        // requests in flight on it keep it open until they finish.
        self.conns.remove(&id);
        self.adopted.insert(id, conn);
        Ok(())
    }

    fn live_adopted(&mut self) -> Vec<OrbId> {
        self.adopted.retain(|_, c| !c.is_closed());
        let mut ids: Vec<OrbId> = self.adopted.keys().copied().collect();
        ids.sort();
        ids
    }

    fn get(&mut self, id: &OrbId) -> Option<Connection> {
        match self.adopted.get(id) {
            Some(c) if c.is_closed() => {
                self.adopted.remove(id);
            }
            Some(c) => return Some(c.clone()),
            None => {}
        }
        self.tick += 1;
        let tick = self.tick;
        match self.conns.get_mut(id) {
            Some((c, _)) if c.is_closed() => {
                self.conns.remove(id);
                None
            }
            Some((c, used)) => {
                *used = tick;
                Some(c.clone())
            }
            None => None,
        }
    }

    fn insert(&mut self, id: OrbId, conn: Connection) {
        self.tick += 1;
        if !self.conns.contains_key(&id) && self.conns.len() >= self.max {
            // Evict the least recently used; a linear scan over at most a
            // few hundred entries is cheaper than keeping an order index.
            if let Some(old) = self
                .conns
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| *k)
            {
                self.conns.remove(&old);
            }
        }
        self.conns.insert(id, (conn, self.tick));
    }

    /// A request on `conn` failed: drop the driver's own connection (the
    /// next request redials), but an adopted one only once it has closed.
    fn failed(&mut self, id: &OrbId, conn: &Connection) {
        if self.adopted.contains_key(id) {
            if conn.is_closed() {
                self.adopted.remove(id);
            }
        } else {
            self.conns.remove(id);
        }
    }
}

struct Actor {
    core: Core,
    endpoint: Endpoint,
    conns: Arc<Mutex<ConnCache>>,
    permits: Arc<Semaphore>,
    rpc_timeout: Duration,
    waiters: HashMap<QueryId, Waiter>,
}

type RpcResult = (RpcId, Option<DhtResponse>);

impl Actor {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        // Bounded: answer tasks wait when it is full, and each is itself
        // bounded by the RPC timeout.
        let (res_tx, mut res_rx) = mpsc::channel::<RpcResult>(1024);
        loop {
            self.flush(&res_tx);
            let now = now_ms();
            let wait = self
                .core
                .poll_timeout()
                .map(|t| Duration::from_millis(t.saturating_sub(now)))
                .unwrap_or(Duration::from_secs(60));
            tokio::select! {
                cmd = rx.recv() => {
                    let Some(cmd) = cmd else { break };
                    if let Some(done) = self.command(cmd) {
                        let _ = done.send(());
                        break;
                    }
                }
                Some((rpc, resp)) = res_rx.recv() => {
                    let now = now_ms();
                    match resp {
                        Some(resp) => self.core.handle_response(rpc, resp, now),
                        None => self.core.handle_failure(rpc, now),
                    }
                }
                _ = tokio::time::sleep(wait) => {
                    self.core.handle_timeout(now_ms());
                }
            }
        }
        debug!(node = %self.core.local().id.short(), "overlay stopped");
    }

    /// Returns the shutdown acknowledgement when asked to stop.
    fn command(&mut self, cmd: Command) -> Option<oneshot::Sender<()>> {
        let now = now_ms();
        match cmd {
            Command::Bootstrap(peers, tx) => {
                for p in peers {
                    if p.id != self.core.local().id {
                        self.core.add_peer(p, now);
                    }
                }
                match self.core.bootstrap(now) {
                    Ok(q) => {
                        self.waiters.insert(q, Waiter::Bootstrap(tx));
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.into()));
                    }
                }
            }
            Command::Lookup(key, kind, tx) => match self.core.start_lookup(key, kind, now) {
                Ok(q) => {
                    self.waiters.insert(q, Waiter::Lookup(tx));
                }
                Err(e) => {
                    let _ = tx.send(Err(e.into()));
                }
            },
            Command::Put(record, tx) => match self.core.put(*record, now) {
                Ok(q) => {
                    self.waiters.insert(q, Waiter::Put(tx));
                }
                Err(e) => {
                    let _ = tx.send(Err(e.into()));
                }
            },
            Command::Request(from, req, tx) => {
                let _ = tx.send(self.core.handle_request(from, *req, now));
            }
            Command::Table(tx) => {
                let _ = tx.send(self.core.table().peers());
            }
            Command::Records(tx) => {
                let _ = tx.send(self.core.store().all());
            }
            Command::Stats(tx) => {
                let s = self.core.stats();
                let _ = tx.send(OverlayStats {
                    core: s,
                    lookups: s.lookups,
                    lookups_ok: s.lookups_ok,
                    mean_rounds: if s.lookups == 0 {
                        0.0
                    } else {
                        s.rounds_total as f64 / s.lookups as f64
                    },
                    peers: self.core.table().len(),
                    records: self.core.store().len(),
                });
            }
            Command::Snapshot(tx) => {
                let _ = tx.send(self.core.snapshot());
            }
            Command::Shutdown(tx) => return Some(tx),
        }
        None
    }

    /// Send what the core wants sent; hand finished operations to waiters.
    fn flush(&mut self, res_tx: &mpsc::Sender<RpcResult>) {
        while let Some(t) = self.core.poll_transmit() {
            let endpoint = self.endpoint.clone();
            let conns = self.conns.clone();
            let permits = self.permits.clone();
            let res_tx = res_tx.clone();
            let timeout = self.rpc_timeout;
            tokio::spawn(async move {
                let attempt = async {
                    let _permit = permits.acquire().await.ok()?;
                    send_rpc(&endpoint, &conns, t.to, t.msg).await
                };
                let resp = tokio::time::timeout(timeout, attempt).await.ok().flatten();
                let _ = res_tx.send((t.rpc, resp)).await;
            });
        }
        while let Some(e) = self.core.poll_event() {
            match e {
                Event::LookupFinished(r) => match self.waiters.remove(&r.id) {
                    Some(Waiter::Lookup(tx)) => {
                        let _ = tx.send(Ok(r));
                    }
                    Some(Waiter::Bootstrap(tx)) => {
                        let _ = tx.send(if r.closest.is_empty() {
                            Err(OverlayError::BootstrapFailed)
                        } else {
                            Ok(self.core.table().len())
                        });
                    }
                    _ => {}
                },
                Event::PutFinished {
                    id,
                    stored_on,
                    refused,
                    ..
                } => {
                    if let Some(Waiter::Put(tx)) = self.waiters.remove(&id) {
                        let _ = tx.send(Ok(PutOutcome { stored_on, refused }));
                    }
                }
                Event::Expiring(r) => {
                    warn!(key = %r.key, kind = r.kind.label(), "a published record expires soon; publish a re-signed one");
                }
            }
        }
    }
}

/// One RPC: `None` on any failure (the core counts it and may retry).
async fn send_rpc(
    endpoint: &Endpoint,
    conns: &Mutex<ConnCache>,
    to: PeerAddr,
    msg: DhtMessage,
) -> Option<DhtResponse> {
    let cached = conns.lock().ok().and_then(|mut c| c.get(&to.id));
    let conn = match cached {
        Some(c) => c,
        None => {
            let c = endpoint
                .connect(to)
                .await
                .map_err(|e| debug!(peer = ?to, "dial failed: {e}"))
                .ok()?;
            if let Ok(mut cache) = conns.lock() {
                cache.insert(to.id, c.clone());
            }
            c
        }
    };
    match conn
        .request(&Request::Dht(msg), &[], MAX_RESPONSE_BODY)
        .await
    {
        Ok((Response::Dht(resp), _)) => Some(resp),
        // A node that does not serve the DHT: make it leave routing tables.
        Ok((Response::Error(e), _)) => Some(DhtResponse::Refused(e.message)),
        Ok((other, _)) => {
            debug!(peer = ?to, "unexpected answer to a DHT request: {other:?}");
            None
        }
        Err(e) => {
            debug!(peer = ?to, "DHT request failed: {e}");
            if let Ok(mut cache) = conns.lock() {
                cache.failed(&to.id, &conn);
            }
            None
        }
    }
}

/// An accept loop that answers DHT requests (and refuses everything else)
/// for applications that embed only the overlay. Runs until the endpoint
/// closes; spawn it.
pub async fn serve(endpoint: Endpoint, overlay: Overlay) {
    while let Some(conn) = endpoint.accept().await {
        let overlay = overlay.clone();
        // One task per connection; the transport bounds connections and
        // streams per connection.
        tokio::spawn(async move {
            let from = PeerAddr {
                id: conn.peer_id(),
                addr: conn.remote_addr(),
            };
            while let Ok(incoming) = conn.accept_request().await {
                let (req, _body, responder) = incoming.split();
                let resp = match req {
                    Request::Dht(msg) => Response::Dht(overlay.handle_request(from, msg).await),
                    _ => Response::Error(WireError::new(
                        ErrorKind::BadRequest,
                        "this node serves DHT requests only",
                    )),
                };
                if let Err(e) = responder.respond(&resp, &[]).await {
                    debug!(peer = ?from, "cannot answer: {e}");
                }
            }
        });
    }
}
