//! The super node role: tunnels to clients, module store, placement, call
//! routing and the HTTP gateway.
//!
//! Clients dial the super and keep that QUIC connection open; the super
//! sends `Place` and `Run` requests back down the same connection. That
//! connection is the public-to-private tunnel: a NATed client never has to
//! accept an inbound dial.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Json, Response as HttpResponse};
use axum::routing::{get, post};
use orb_overlay::{Overlay, OverlayConfig};
use orb_proto::wire::{
    CallMeta, ErrorKind, FunctionInfo, FunctionSettings, Hello, Request, Response, Role,
    RunOutcome, Welcome, WireError,
};
use orb_proto::{ContentHash, OrbId, PeerAddr};
use orb_runtime::{Runtime, RuntimeConfig};
use orb_store::{FunctionRecord, Store};
use orb_transport::{Connection, Endpoint, IncomingRequest};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::config::SuperConfig;
use crate::dht;
use crate::error::NodeError;
use crate::http_util;
use crate::ledger::{Expected, Ledger};
use crate::metrics::{Counter, Exposition, Histogram};
use crate::util::{
    blocking, check_name, lock, max_call_output, now_ms, read_lock, request_id, write_lock,
};

/// How long a new connection may take to say Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long placing a replica (fetch + compile) may take.
const PLACE_TIMEOUT: Duration = Duration::from_secs(120);
/// Header a super adds when it forwards a call to another super, so the
/// receiver never forwards it again (no loops, at most one extra hop).
const FORWARDED: &str = "x-orb-forwarded-by";
/// Connections to other supers kept for forwarding calls, at most.
const MAX_PEER_CONNS: usize = 256;
/// How long a super that could not be reached is asked only after the
/// others. A dead super costs a connection timeout (10 s) to whoever tries
/// it; without this, every call forwarded while it is down would pay that
/// before moving on to a live home super of the same replica.
const UNREACHABLE_FOR: Duration = Duration::from_secs(30);
/// How long a forwarded call may take end to end.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(120);
/// STOREs a peer may send per second, and in a burst.
const STORE_RATE: f64 = 50.0;
const STORE_BURST: f64 = 500.0;
/// Peers with a STORE rate limiter, at most.
const MAX_STORE_LIMITERS: usize = 4096;

/// Per-peer token bucket for DHT STOREs: one peer cannot fill the record
/// store or keep the actor busy (the overlay bounds totals and per
/// publisher on top of this).
fn store_allowed(shared: &Shared, peer: OrbId) -> bool {
    lock(&shared.store_limiters).allow(peer, Instant::now())
}

/// Functions with autoscaling state, at most.
const MAX_SCALED_FUNCTIONS: usize = 10_000;
/// How often the DHT state is checked and, when it changed, saved.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(5);

/// Namespace for starting a super node.
pub struct SuperNode;

/// A running super node.
pub struct SuperHandle {
    /// This node's Orb ID.
    pub id: OrbId,
    /// The bound QUIC address.
    pub quic_addr: SocketAddr,
    /// The bound HTTP address.
    pub http_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    endpoint: Endpoint,
}

impl SuperHandle {
    /// Stop accepting, close connections, and wait for the tasks to end.
    pub async fn shutdown(mut self) {
        crate::util::stop_node(&self.shutdown, &mut self.tasks, &self.endpoint).await;
    }
}

/// A connected client as the super sees it.
#[derive(Clone)]
struct ClientEntry {
    conn: Connection,
    generation: u64,
    capacity: u32,
    in_flight: Arc<AtomicU32>,
    served: Arc<AtomicU64>,
    hosted: HashSet<ContentHash>,
    observed: SocketAddr,
    agent: String,
    connected_ms: u64,
}

/// Counters behind `GET /metrics` and `/api/status`.
#[derive(Default)]
struct Stats {
    calls: Counter,
    call_errors: Counter,
    calls_busy: Counter,
    calls_failed_over: Counter,
    call_latency: Histogram,
    deploys: Counter,
    deploys_refused: Counter,
    receipts_refused: Counter,
    calls_forwarded: Counter,
    dht_stores_throttled: Counter,
    /// Client tunnels closed because the client stopped answering pings.
    health_closed: Counter,
    /// Calls, errors, in flight and latency per function name.
    per_function: crate::metrics::FunctionStats,
    /// The gateway's connections, refusals and timeouts.
    http: Arc<crate::http_server::HttpStats>,
}

pub(crate) struct Shared {
    id: OrbId,
    config: SuperConfig,
    quic_addr: SocketAddr,
    http_addr: Mutex<Option<SocketAddr>>,
    store: Store,
    runtime: Runtime,
    clients: Mutex<HashMap<OrbId, ClientEntry>>,
    functions: RwLock<HashMap<String, FunctionRecord>>,
    next_generation: AtomicU64,
    started: Instant,
    stats: Stats,
    ledger: Ledger,
    endpoint: Endpoint,
    overlay: Overlay,
    /// Connections to other supers, for forwarded calls.
    peer_conns: Mutex<HashMap<OrbId, Connection>>,
    /// Supers that could not be reached lately, and when (see
    /// [`UNREACHABLE_FOR`]).
    unreachable: Mutex<HashMap<OrbId, Instant>>,
    /// Autoscaling state per function name.
    scale: Mutex<HashMap<String, ScaleState>>,
    /// DHT STORE rate limiters per peer.
    store_limiters: Mutex<orb_nat::PeerLimiter<OrbId>>,
    /// Hole-punch coordination, relay circuits, dial-backs.
    bridge: Arc<crate::bridge::Bridge>,
}

/// Load counters of one function, shared with the calls that update them.
#[derive(Default)]
struct ScaleCounters {
    in_flight: Arc<AtomicU32>,
    calls: AtomicU64,
    busy: AtomicU64,
    last_call_ms: AtomicU64,
}

/// One scaling decision, shown by `GET /api/functions/NAME`.
#[derive(Debug, Clone, Serialize)]
struct Decision {
    time_ms: u64,
    action: &'static str,
    replicas: u32,
    reason: String,
}

/// Scaling decisions kept per function.
const MAX_DECISIONS: usize = 32;

struct ScaleState {
    counters: Arc<ScaleCounters>,
    /// Replicas wanted now: between `replicas` and `max_replicas`.
    desired: u32,
    /// Consecutive ticks above the target.
    hot_ticks: u32,
    busy_seen: u64,
    last_change: Instant,
    decisions: std::collections::VecDeque<Decision>,
}

impl ScaleState {
    fn new(desired: u32) -> Self {
        ScaleState {
            counters: Arc::new(ScaleCounters::default()),
            desired,
            hot_ticks: 0,
            busy_seen: 0,
            last_change: Instant::now(),
            decisions: std::collections::VecDeque::new(),
        }
    }

    fn decide(&mut self, action: &'static str, replicas: u32, reason: String) {
        info!(action, replicas, reason = %reason, "scaling decision");
        if self.decisions.len() >= MAX_DECISIONS {
            self.decisions.pop_front();
        }
        self.decisions.push_back(Decision {
            time_ms: now_ms(),
            action,
            replicas,
            reason,
        });
        self.desired = replicas;
        self.hot_ticks = 0;
        self.last_change = Instant::now();
    }
}

struct DecrementOnDrop(Arc<AtomicU32>);

impl Drop for DecrementOnDrop {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn scale_counters(shared: &Shared, name: &str) -> Arc<ScaleCounters> {
    let mut scale = lock(&shared.scale);
    if !scale.contains_key(name) && scale.len() >= MAX_SCALED_FUNCTIONS {
        // Bounded: forget the state of a function this super does not own.
        let owned = read_lock(&shared.functions);
        if let Some(k) = scale.keys().find(|k| !owned.contains_key(*k)).cloned() {
            scale.remove(&k);
        }
    }
    scale
        .entry(name.to_string())
        .or_insert_with(|| ScaleState::new(0))
        .counters
        .clone()
}

/// Replicas `f` should have now.
fn wanted(shared: &Shared, f: &FunctionRecord) -> u32 {
    let desired = lock(&shared.scale).get(&f.name).map_or(0, |s| s.desired);
    desired.clamp(
        f.settings.replicas,
        f.settings.max_replicas.max(f.settings.replicas),
    )
}

/// Stop routing to a replica whose connection is gone.
fn forget_replica(shared: &Shared, conn: &Connection, hash: &ContentHash) {
    let mut clients = lock(&shared.clients);
    if let Some(entry) = clients.get_mut(&conn.peer_id())
        && entry.conn.is_closed()
    {
        entry.hosted.remove(hash);
    }
}

/// Watch every function this super owns once a second: sustained load
/// above the target adds a replica (up to `max_replicas`), long idleness
/// removes one (down to `replicas`).
async fn autoscale(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let cfg = &shared.config;
    let up_ticks = cfg.scale_up_after.as_secs().max(1) as u32;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.changed() => return,
        }
        let functions: Vec<FunctionRecord> =
            read_lock(&shared.functions).values().cloned().collect();
        for f in functions {
            let max = f.settings.max_replicas.max(f.settings.replicas);
            let holders: Vec<(OrbId, u64)> = {
                let clients = lock(&shared.clients);
                clients
                    .iter()
                    .filter(|(_, c)| c.hosted.contains(&f.hash))
                    .map(|(id, c)| (*id, c.served.load(Ordering::Relaxed)))
                    .collect()
            };
            let mut action: Option<(u32, Option<OrbId>)> = None;
            {
                let mut scale = lock(&shared.scale);
                let st = scale
                    .entry(f.name.clone())
                    .or_insert_with(|| ScaleState::new(f.settings.replicas));
                if st.desired < f.settings.replicas {
                    st.desired = f.settings.replicas;
                }
                let live = holders.len().max(1) as f64;
                let in_flight = f64::from(st.counters.in_flight.load(Ordering::Relaxed));
                let busy_total = st.counters.busy.load(Ordering::Relaxed);
                let busy_new = busy_total.saturating_sub(st.busy_seen);
                st.busy_seen = busy_total;
                let load = in_flight / live;
                let hot = load >= cfg.scale_target || busy_new > 0;
                st.hot_ticks = if hot { st.hot_ticks + 1 } else { 0 };
                let cooled = st.last_change.elapsed() >= cfg.scale_up_after;
                let idle_ms =
                    now_ms().saturating_sub(st.counters.last_call_ms.load(Ordering::Relaxed));
                if st.hot_ticks >= up_ticks
                    && st.desired < max
                    && cooled
                    && holders.len() as u32 >= st.desired
                {
                    let reason = if busy_new > 0 {
                        format!(
                            "calls answered busy for {up_ticks} s with {} replicas",
                            holders.len()
                        )
                    } else {
                        format!(
                            "{load:.1} calls in flight per replica for {up_ticks} s (target {})",
                            cfg.scale_target
                        )
                    };
                    let to = st.desired + 1;
                    st.decide("scale-up", to, reason);
                    action = Some((to, None));
                } else if st.desired > f.settings.replicas
                    && in_flight == 0.0
                    && idle_ms >= cfg.scale_idle.as_millis() as u64
                    && st.last_change.elapsed() >= cfg.scale_idle
                {
                    let to = st.desired - 1;
                    st.decide(
                        "scale-down",
                        to,
                        format!("no calls for {} s", idle_ms / 1000),
                    );
                    // Remove the replica that served least.
                    let victim = holders
                        .iter()
                        .min_by_key(|(_, served)| *served)
                        .map(|(id, _)| *id);
                    action = Some((to, victim));
                }
            }
            match action {
                Some((_, None)) => {
                    place(&shared, &f, None).await;
                }
                Some((to, Some(victim))) if holders.len() as u32 > to => {
                    unplace(&shared, &f, victim).await
                }
                _ => {}
            }
        }
    }
}

/// Ask `node` to stop hosting `f`, and stop routing to it.
async fn unplace(shared: &Arc<Shared>, f: &FunctionRecord, node: OrbId) {
    let conn = {
        let mut clients = lock(&shared.clients);
        clients.get_mut(&node).map(|c| {
            c.hosted.remove(&f.hash);
            c.conn.clone()
        })
    };
    let Some(conn) = conn else { return };
    let req = Request::Unplace {
        name: f.name.clone(),
        hash: f.hash,
    };
    match tokio::time::timeout(PLACE_TIMEOUT, conn.request(&req, &[], 1024)).await {
        Ok(Ok((Response::Placed, _))) => {
            info!(function = %f.name, node = %node.short(), "replica removed")
        }
        Ok(Ok((other, _))) => {
            warn!(function = %f.name, node = %node.short(), answer = ?other, "unplace refused")
        }
        Ok(Err(e)) => warn!(function = %f.name, node = %node.short(), error = %e, "unplace failed"),
        Err(_) => warn!(function = %f.name, node = %node.short(), "unplace timed out"),
    }
}

impl SuperNode {
    /// Open the store, bind QUIC and HTTP, and start serving.
    pub async fn start(config: SuperConfig) -> Result<SuperHandle, NodeError> {
        let dir = config.data_dir.clone();
        let store = blocking(move || Store::open(&dir)).await??;
        let s = store.clone();
        let keypair = blocking(move || s.load_or_create_identity()).await??;
        let s = store.clone();
        let functions = blocking(move || s.functions()).await??;
        let s = store.clone();
        let ledger = blocking(move || Ledger::load(&s)).await??;

        let endpoint = Endpoint::bind(config.listen, &keypair, config.transport.clone())?;
        let quic_addr = endpoint.local_addr()?;
        // A second socket on the same IP for dial-back reachability checks.
        let dial_back = match Endpoint::bind(
            SocketAddr::new(quic_addr.ip(), 0),
            &keypair,
            config.transport.clone(),
        ) {
            Ok(ep) => Some(ep),
            Err(e) => {
                warn!(error = %e, "no dial-back socket: clients cannot check their reachability here");
                None
            }
        };
        // The super runs no functions; its runtime only validates deploys.
        let runtime = Runtime::new(RuntimeConfig {
            capacity: 0,
            ..RuntimeConfig::default()
        })?;

        let listener = tokio::net::TcpListener::bind(config.http)
            .await
            .map_err(|source| NodeError::Bind {
                what: "HTTP gateway",
                addr: config.http,
                source,
            })?;
        let http_addr = listener
            .local_addr()
            .map_err(|e| NodeError::Internal(e.to_string()))?;

        // The address other nodes are told to dial. A wildcard listen address
        // cannot be dialed; loopback is right for local networks and
        // --public-addr is how an operator states the real one.
        let advertised = match config.public_addr {
            Some(a) => a,
            None if quic_addr.ip().is_unspecified() => {
                warn!(listen = %quic_addr, "listening on a wildcard address: advertising loopback in the DHT; set --public-addr for other machines");
                SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), quic_addr.port())
            }
            None => quic_addr,
        };
        let local = PeerAddr {
            id: keypair.id(),
            addr: advertised,
        };
        let s = store.clone();
        let snapshot = blocking(move || dht::load_snapshot(&s)).await?;
        let remembered: Vec<PeerAddr> = snapshot
            .as_ref()
            .map(|s| s.peers.clone())
            .unwrap_or_default();
        let (overlay, _overlay_task) = Overlay::spawn(
            endpoint.clone(),
            local,
            orb_overlay::Role::Server,
            OverlayConfig {
                restore: snapshot,
                ..OverlayConfig::default()
            },
        );

        let shared = Arc::new(Shared {
            id: keypair.id(),
            config,
            quic_addr,
            http_addr: Mutex::new(Some(http_addr)),
            store,
            runtime,
            clients: Mutex::new(HashMap::new()),
            functions: RwLock::new(functions.into_iter().map(|f| (f.name.clone(), f)).collect()),
            next_generation: AtomicU64::new(1),
            started: Instant::now(),
            stats: Stats::default(),
            ledger,
            endpoint: endpoint.clone(),
            overlay,
            peer_conns: Mutex::new(HashMap::new()),
            unreachable: Mutex::new(HashMap::new()),
            scale: Mutex::new(HashMap::new()),
            store_limiters: Mutex::new(orb_nat::PeerLimiter::new(
                STORE_RATE,
                STORE_BURST,
                MAX_STORE_LIMITERS,
            )),
            bridge: Arc::new(crate::bridge::Bridge::new(
                orb_nat::RelayLimits::default(),
                dial_back,
            )),
        });

        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tasks.spawn(accept_loop(
            shared.clone(),
            endpoint.clone(),
            shutdown_rx.clone(),
        ));
        tasks.spawn(serve_http(shared.clone(), listener, shutdown_rx.clone()));
        tasks.spawn(flush_ledger(shared.clone(), shutdown_rx.clone()));
        tasks.spawn(autoscale(shared.clone(), shutdown_rx.clone()));
        tasks.spawn(health(shared.clone(), shutdown_rx.clone()));
        tasks.spawn(overlay_maintenance(shared.clone(), remembered, shutdown_rx));
        info!(id = %shared.id, quic = %quic_addr, http = %http_addr, "super node started");
        Ok(SuperHandle {
            id: shared.id,
            quic_addr,
            http_addr,
            shutdown,
            tasks,
            endpoint,
        })
    }
}

async fn accept_loop(shared: Arc<Shared>, endpoint: Endpoint, mut shutdown: watch::Receiver<bool>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            conn = endpoint.accept() => match conn {
                Some(conn) => { conns.spawn(serve_connection(shared.clone(), conn)); }
                None => break,
            },
            _ = shutdown.changed() => break,
            // Reap finished connection tasks so the set stays small.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.abort_all();
}

async fn serve_connection(shared: Arc<Shared>, conn: Connection) {
    let peer = conn.peer_id();
    let first = match tokio::time::timeout(HELLO_TIMEOUT, conn.accept_request()).await {
        Ok(Ok(first)) => first,
        Ok(Err(e)) => {
            debug!(peer = %peer.short(), error = %e, "connection ended before hello");
            return;
        }
        Err(_) => {
            conn.close("no hello in time");
            return;
        }
    };
    let from = PeerAddr {
        id: peer,
        addr: conn.remote_addr(),
    };
    let Request::Hello(hello) = first.request().clone() else {
        // Another super (DHT, forwarded calls) or a tool: no registration,
        // every request is served on its own.
        let s = shared.clone();
        tokio::spawn(async move { handle_request(s, from, first).await });
        serve_requests(&shared, &conn, from).await;
        return;
    };
    let (_req, _body, responder) = first.split();
    let welcome = Response::Welcome(Welcome {
        node: shared.id,
        observed_addr: conn.remote_addr(),
    });
    if responder.respond(&welcome, &[]).await.is_err() {
        return;
    }
    let generation = shared.next_generation.fetch_add(1, Ordering::Relaxed);
    if hello.role == Role::Client {
        register_client(&shared, &conn, &hello, generation);
        let s = shared.clone();
        tokio::spawn(async move { rebalance(&s).await });
    }
    serve_requests(&shared, &conn, from).await;
    if hello.role == Role::Client {
        let removed = {
            let mut clients = lock(&shared.clients);
            // Only remove our own entry: the client may already have reconnected.
            if clients
                .get(&peer)
                .is_some_and(|c| c.generation == generation)
            {
                clients.remove(&peer);
                true
            } else {
                false
            }
        };
        if removed {
            info!(client = %peer.short(), "client disconnected");
            rebalance(&shared).await;
        }
    }
}

fn register_client(shared: &Shared, conn: &Connection, hello: &Hello, generation: u64) {
    let entry = ClientEntry {
        conn: conn.clone(),
        generation,
        capacity: hello.capacity,
        in_flight: Arc::new(AtomicU32::new(0)),
        served: Arc::new(AtomicU64::new(0)),
        hosted: hello.hosted.iter().map(|h| h.hash).collect(),
        observed: conn.remote_addr(),
        agent: hello.agent.chars().take(64).collect(),
        connected_ms: now_ms(),
    };
    info!(client = %conn.peer_id().short(), addr = %conn.remote_addr(), capacity = hello.capacity,
          hosted = hello.hosted.len(), "client registered");
    let mut clients = lock(&shared.clients);
    if let Some(old) = clients.insert(conn.peer_id(), entry) {
        // A reconnect replaces the old tunnel; close it so its calls fail fast.
        old.conn.close("replaced by a newer connection");
    }
}

/// A registered client says Hello again on its link when the replicas it
/// holds change: another of its home supers placed one there. Without this,
/// only the super that placed a replica would route calls to it, and while
/// that super is down the others (its other home supers included) would
/// forward the calls to it and fail. Additions only: a replica that left
/// answers `NotFound` to its next call and is dropped then
/// (`run_on_own_replicas`), and a stale Hello overtaking a newer placement
/// on another stream must not erase it.
fn learn_hosted(shared: &Shared, client: OrbId, hello: &Hello) {
    // Bounded: a client cannot grow the set without end by sending Hellos
    // with ever new lists; one Hello (a frame of at most 1 MiB) lists far
    // fewer replicas, and past the bound its own list replaces the set.
    const MAX_HOSTED: usize = 65_536;
    if let Some(entry) = lock(&shared.clients).get_mut(&client) {
        let before = entry.hosted.len();
        if before + hello.hosted.len() > MAX_HOSTED {
            entry.hosted.clear();
        }
        entry.hosted.extend(hello.hosted.iter().map(|h| h.hash));
        if entry.hosted.len() > before {
            debug!(client = %client.short(), hosted = entry.hosted.len(), "client announced replicas");
        }
    }
}

/// How often every client is pinged.
const HEALTH_EVERY: Duration = Duration::from_secs(1);
/// How long a ping may take before it counts as missed.
const HEALTH_TIMEOUT: Duration = Duration::from_millis(1500);
/// Missed pings in a row after which a client's tunnel is closed (its
/// replicas stop receiving calls and are placed elsewhere).
const HEALTH_MISSES: u32 = 2;

/// Ping every client each second. QUIC's idle timeout (10 s) would notice
/// a dead client too, but a replica that stops answering should leave the
/// provider set within a few seconds: after [`HEALTH_MISSES`] missed pings
/// its tunnel is closed, which unregisters it and triggers re-placement.
/// Pongs are answered by the client's async side, never behind a running
/// function, so a busy replica is not mistaken for a dead one.
async fn health(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut misses: HashMap<(OrbId, u64), u32> = HashMap::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(HEALTH_EVERY) => {}
            _ = shutdown.changed() => return,
        }
        let clients: Vec<(OrbId, u64, Connection)> = lock(&shared.clients)
            .iter()
            .map(|(id, c)| (*id, c.generation, c.conn.clone()))
            .collect();
        let mut probes = JoinSet::new();
        for (id, generation, conn) in clients {
            probes.spawn(async move {
                let ok = matches!(
                    tokio::time::timeout(
                        HEALTH_TIMEOUT,
                        conn.request(&Request::Ping { nonce: generation }, &[], 0)
                    )
                    .await,
                    Ok(Ok((Response::Pong { .. }, _)))
                );
                (id, generation, conn, ok)
            });
        }
        let mut seen = HashSet::new();
        while let Some(Ok((id, generation, conn, ok))) = probes.join_next().await {
            seen.insert((id, generation));
            if ok {
                misses.remove(&(id, generation));
                continue;
            }
            let n = misses.entry((id, generation)).or_insert(0);
            *n += 1;
            if *n >= HEALTH_MISSES {
                warn!(client = %id.short(), missed = *n, "client stopped answering pings; closing its tunnel");
                shared.stats.health_closed.inc();
                conn.close("health check failed");
                misses.remove(&(id, generation));
            }
        }
        misses.retain(|k, _| seen.contains(k));
    }
}

/// The tunnel of a client connected here, if it is.
fn client_conn(shared: &Shared, id: &OrbId) -> Option<Connection> {
    lock(&shared.clients)
        .get(id)
        .map(|c| c.conn.clone())
        .filter(|c| !c.is_closed())
}

/// Round trip to a connected client (zero if unknown).
fn caller_rtt(shared: &Shared, id: &OrbId) -> Duration {
    lock(&shared.clients)
        .get(id)
        .map(|c| c.conn.rtt())
        .unwrap_or_default()
}

/// Serve every request of one connection until it closes.
async fn serve_requests(shared: &Arc<Shared>, conn: &Connection, from: PeerAddr) {
    loop {
        match conn.accept_request().await {
            Ok(incoming) => {
                let s = shared.clone();
                tokio::spawn(async move { handle_request(s, from, incoming).await });
            }
            Err(e) => {
                debug!(peer = %from.id.short(), error = %e, "connection closed");
                break;
            }
        }
    }
}

async fn handle_request(shared: Arc<Shared>, from: PeerAddr, incoming: IncomingRequest) {
    let peer = from.id;
    if let Request::Relay { target } = incoming.request() {
        let target = *target;
        let target_conn = client_conn(&shared, &target);
        shared
            .bridge
            .clone()
            .relay(peer, target, target_conn, incoming)
            .await;
        return;
    }
    let (req, body, responder) = incoming.split();
    let (resp, out): (Response, Bytes) = match req {
        Request::Hello(hello) => {
            if hello.role == Role::Client {
                learn_hosted(&shared, peer, &hello);
            }
            (
                Response::Welcome(Welcome {
                    node: shared.id,
                    observed_addr: shared.quic_addr,
                }),
                Bytes::new(),
            )
        }
        Request::Ping { nonce } => (Response::Pong { nonce }, Bytes::new()),
        Request::Deploy {
            name,
            hash,
            settings,
            here,
        } => match deploy(&shared, peer, name, hash, settings, body, here).await {
            Ok(r) => (r, Bytes::new()),
            Err(e) => {
                shared.stats.deploys_refused.inc();
                warn!(peer = %peer.short(), error = %e.message, "deploy refused");
                (Response::Error(e), Bytes::new())
            }
        },
        Request::Invoke { name, mut meta } => {
            if meta.request_id.is_empty() {
                meta.request_id = request_id();
            }
            match route_call(&shared, &name, meta, body, peer).await {
                Ok((node, outcome, out)) => (
                    Response::Ran {
                        node,
                        outcome,
                        receipt: None,
                    },
                    out,
                ),
                Err(e) => (Response::Error(e), Bytes::new()),
            }
        }
        Request::FetchModule { hash } => {
            let store = shared.store.clone();
            match blocking(move || store.module(&hash)).await {
                Ok(Ok(Some(bytes))) => (Response::Module { hash }, Bytes::from(bytes)),
                Ok(Ok(None)) => (
                    Response::Error(WireError::new(
                        ErrorKind::NotFound,
                        format!("no module {hash}"),
                    )),
                    Bytes::new(),
                ),
                Ok(Err(e)) => (Response::Error(NodeError::from(e).to_wire()), Bytes::new()),
                Err(e) => (Response::Error(e.to_wire()), Bytes::new()),
            }
        }
        Request::ListFunctions => (Response::Functions(function_infos(&shared)), Bytes::new()),
        Request::Punch { target, addrs } => {
            let target_conn = client_conn(&shared, &target);
            let rtt = caller_rtt(&shared, &peer);
            (
                shared.bridge.punch(from, rtt, addrs, target_conn).await,
                Bytes::new(),
            )
        }
        Request::DialBack => (shared.bridge.dial_back(from).await, Bytes::new()),
        Request::Receipt(r) => {
            let exp = Expected {
                request_id: &r.receipt.request_id,
                function: r.receipt.function,
                caller: peer,
                executor: r.receipt.executor,
            };
            match shared.ledger.record(&r, &exp) {
                Ok(_) => (Response::ReceiptRecorded, Bytes::new()),
                Err(e) => {
                    shared.stats.receipts_refused.inc();
                    warn!(peer = %peer.short(), error = %e, "submitted receipt refused");
                    (
                        Response::Error(WireError::new(ErrorKind::Forbidden, e.to_string())),
                        Bytes::new(),
                    )
                }
            }
        }
        Request::Relay { .. } | Request::RelayIncoming { .. } | Request::PunchNow { .. } => (
            Response::Error(WireError::new(
                ErrorKind::BadRequest,
                "a super node does not take that request",
            )),
            Bytes::new(),
        ),
        Request::Place { name, hash } => match place_for_peer(&shared, from, &name, hash).await {
            Ok(node) => (
                Response::Deployed {
                    name,
                    hash,
                    placed_on: vec![node],
                },
                Bytes::new(),
            ),
            Err(e) => (Response::Error(e), Bytes::new()),
        },
        Request::Run { .. } | Request::Unplace { .. } => (
            Response::Error(WireError::new(
                ErrorKind::BadRequest,
                "a super node does not host replicas",
            )),
            Bytes::new(),
        ),
        Request::Balance => {
            let b = shared.ledger.balance(&peer);
            (
                Response::Balance(orb_proto::wire::Credits {
                    earned: b.earned,
                    spent: b.spent,
                    calls_served: b.calls_served,
                    calls_made: b.calls_made,
                }),
                Bytes::new(),
            )
        }
        Request::Dht(msg) => {
            if matches!(msg.body, orb_proto::dht::DhtRequest::Store { .. })
                && !store_allowed(&shared, peer)
            {
                shared.stats.dht_stores_throttled.inc();
                debug!(peer = %peer.short(), "DHT STORE flood: refused");
                (
                    Response::Dht(orb_proto::dht::DhtResponse::Refused(
                        "too many STOREs from this peer; slow down".into(),
                    )),
                    Bytes::new(),
                )
            } else {
                (
                    Response::Dht(shared.overlay.handle_request(from, msg).await),
                    Bytes::new(),
                )
            }
        }
    };
    if let Err(e) = responder.respond(&resp, &out).await {
        debug!(peer = %peer.short(), error = %e, "could not send response");
    }
}

async fn deploy(
    shared: &Arc<Shared>,
    owner: OrbId,
    name: String,
    hash: ContentHash,
    mut settings: FunctionSettings,
    module: Bytes,
    here: bool,
) -> Result<Response, WireError> {
    check_name(&name)?;
    if here {
        let capacity = lock(&shared.clients).get(&owner).map(|c| c.capacity);
        match capacity {
            Some(c) if c > 0 => {}
            Some(_) => {
                return Err(WireError::new(
                    ErrorKind::BadRequest,
                    "--here: this node runs with capacity 0 and cannot host a replica",
                ));
            }
            None => {
                return Err(WireError::new(
                    ErrorKind::BadRequest,
                    "--here: only a client connected to this super can host its own replica",
                ));
            }
        }
    }
    if module.len() > orb_proto::limits::MAX_MODULE {
        return Err(WireError::new(
            ErrorKind::TooLarge,
            format!(
                "module of {} bytes is over the {}-byte limit",
                module.len(),
                orb_proto::limits::MAX_MODULE
            ),
        ));
    }
    let actual = ContentHash::of(&module);
    if actual != hash {
        return Err(WireError::new(
            ErrorKind::BadRequest,
            format!("module bytes hash to {actual}, not the declared {hash}"),
        ));
    }
    let previous = read_lock(&shared.functions).get(&name).cloned();
    if let Some(prev) = &previous
        && prev.owner != owner
    {
        return Err(WireError::new(
            ErrorKind::Forbidden,
            format!(
                "function {name:?} belongs to node {}; only its owner can update it",
                prev.owner
            ),
        ));
    }
    // The DHT is the network-wide registry: a name owned by another key
    // anywhere is refused here too, not only names this super knows.
    if let Ok(Some((_, n))) = dht::name_record(&shared.overlay, &name).await
        && n.owner.id() != owner
    {
        return Err(WireError::new(
            ErrorKind::Forbidden,
            format!(
                "function {name:?} belongs to node {}; only its owner can update it",
                n.owner.id()
            ),
        ));
    }
    let rt = shared.runtime.clone();
    let m = module.clone();
    blocking(move || rt.validate(&m))
        .await
        .map_err(|e| e.to_wire())?
        .map_err(|e| WireError::new(ErrorKind::BadRequest, format!("module refused: {e}")))?;

    if settings.replicas == 0 {
        settings.replicas = 1;
    }
    settings.max_replicas = settings.max_replicas.max(settings.replicas);
    let now = now_ms();
    let record = FunctionRecord {
        name: name.clone(),
        hash,
        owner,
        size: module.len() as u64,
        settings,
        created_ms: previous.as_ref().map_or(now, |p| p.created_ms),
        updated_ms: now,
        placements: Vec::new(),
    };
    let store = shared.store.clone();
    let rec = record.clone();
    blocking(move || store.put_deploy(&rec, &module))
        .await
        .map_err(|e| e.to_wire())?
        .map_err(|e| NodeError::from(e).to_wire())?;
    write_lock(&shared.functions).insert(name.clone(), record.clone());
    shared.stats.deploys.inc();
    info!(function = %name, hash = %hash.short(), owner = %owner.short(), "function deployed");

    let placed = place(shared, &record, here.then_some(owner)).await;
    Ok(Response::Deployed {
        name,
        hash,
        placed_on: placed,
    })
}

/// Reorder `ranked` (best first) so that each pick comes from a network
/// (public IP) not in `used` while there is one; otherwise keep the rank.
fn spread_by_network<T>(
    mut ranked: Vec<(T, std::net::IpAddr)>,
    used: &mut HashSet<std::net::IpAddr>,
) -> Vec<T> {
    let mut out = Vec::with_capacity(ranked.len());
    while !ranked.is_empty() {
        let i = ranked
            .iter()
            .position(|(_, ip)| !used.contains(ip))
            .unwrap_or(0);
        let (item, ip) = ranked.remove(i);
        used.insert(ip);
        out.push(item);
    }
    out
}

/// This super's clients that could host `hash`, best first: fewest hosted
/// replicas, then least busy, spread over networks (public IPs) not yet
/// holding it; `first` goes first when it qualifies.
fn ranked_candidates(
    clients: &HashMap<OrbId, ClientEntry>,
    hash: &ContentHash,
    first: Option<OrbId>,
) -> Vec<(OrbId, Connection)> {
    let mut ranked: Vec<(usize, u32, OrbId, Connection, std::net::IpAddr)> = clients
        .iter()
        .filter(|(_, c)| c.capacity > 0 && !c.hosted.contains(hash))
        .map(|(id, c)| {
            (
                c.hosted.len(),
                c.in_flight.load(Ordering::Relaxed),
                *id,
                c.conn.clone(),
                c.observed.ip(),
            )
        })
        .collect();
    ranked.sort_by_key(|(n, busy, id, _, _)| (*n, *busy, *id));
    // A candidate seen from a public address no holder (or earlier pick)
    // has goes first, so one site's outage does not take every replica.
    let mut used: HashSet<std::net::IpAddr> = clients
        .values()
        .filter(|c| c.hosted.contains(hash))
        .map(|c| c.observed.ip())
        .collect();
    let mut out = spread_by_network(
        ranked
            .into_iter()
            .map(|(_, _, id, conn, ip)| ((id, conn), ip))
            .collect(),
        &mut used,
    );
    if let Some(first) = first
        && let Some(i) = out.iter().position(|(id, _)| *id == first)
    {
        let c = out.remove(i);
        out.insert(0, c);
    }
    out
}

/// Ask client `id` to fetch, verify and prepare `name`/`hash`.
async fn place_on(
    shared: &Arc<Shared>,
    name: &str,
    hash: ContentHash,
    id: OrbId,
    conn: &Connection,
) -> bool {
    let req = Request::Place {
        name: name.to_string(),
        hash,
    };
    match tokio::time::timeout(PLACE_TIMEOUT, conn.request(&req, &[], 1024)).await {
        Ok(Ok((Response::Placed, _))) => {
            if let Some(c) = lock(&shared.clients).get_mut(&id) {
                c.hosted.insert(hash);
            }
            info!(function = %name, node = %id.short(), "replica placed");
            true
        }
        Ok(Ok((other, _))) => {
            warn!(function = %name, node = %id.short(), answer = ?other, "placement refused");
            false
        }
        Ok(Err(e)) => {
            warn!(function = %name, node = %id.short(), error = %e, "placement failed");
            false
        }
        Err(_) => {
            warn!(function = %name, node = %id.short(), "placement timed out");
            false
        }
    }
}

/// Nodes holding `hash` that are clients of other supers, as their
/// provider records in the DHT say.
async fn remote_holders(shared: &Arc<Shared>, hash: &ContentHash) -> Vec<OrbId> {
    let own: HashSet<OrbId> = lock(&shared.clients).keys().copied().collect();
    match dht::providers(&shared.overlay, hash).await {
        Ok(ps) => ps
            .iter()
            .filter_map(|p| p.node.parse::<OrbId>().ok())
            .filter(|id| !own.contains(id) && *id != shared.id)
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Ask other supers (from the routing table) to place `need` replicas of
/// `f` on their clients; each fetches the module from this super by hash.
/// Nodes in `have` already hold one and do not count as new replicas.
async fn place_elsewhere(
    shared: &Arc<Shared>,
    f: &FunctionRecord,
    need: usize,
    have: &[OrbId],
) -> Vec<OrbId> {
    let mut placed = Vec::new();
    if need == 0 {
        return placed;
    }
    let mut supers = shared.overlay.routing_table().await.unwrap_or_default();
    reachable_first(shared, &mut supers);
    for sup in supers.into_iter().filter(|s| s.id != shared.id) {
        if placed.len() >= need {
            break;
        }
        let Ok(conn) = peer_conn(shared, sup).await else {
            mark_unreachable(shared, sup.id);
            continue;
        };
        let req = Request::Place {
            name: f.name.clone(),
            hash: f.hash,
        };
        match tokio::time::timeout(PLACE_TIMEOUT, conn.request(&req, &[], 1024)).await {
            Ok(Ok((Response::Deployed { placed_on, .. }, _))) => {
                info!(function = %f.name, via = %sup.id.short(), nodes = placed_on.len(), "replica placed through another super");
                // A client with several home supers is a client of the other
                // super too, which may not know yet that it holds a replica:
                // a node placed twice is still one replica, so ask on.
                for n in placed_on {
                    if !have.contains(&n) && !placed.contains(&n) {
                        placed.push(n);
                    }
                }
            }
            Ok(Ok((Response::Error(e), _))) => {
                debug!(function = %f.name, via = %sup.id.short(), error = %e, "other super cannot place")
            }
            Ok(Err(e)) => {
                lock(&shared.peer_conns).remove(&sup.id);
                mark_unreachable(shared, sup.id);
                debug!(function = %f.name, via = %sup.id.short(), error = %e, "other super unreachable")
            }
            other => {
                debug!(function = %f.name, via = %sup.id.short(), answer = ?other.map(|r| r.map(|(r, _)| r)), "other super did not place")
            }
        }
    }
    placed
}

/// Another super asks this one to host a replica of `name`/`hash` on one
/// of its clients: fetch the module from it by hash (unless stored),
/// verify and validate it, store it, and place it.
async fn place_for_peer(
    shared: &Arc<Shared>,
    from: PeerAddr,
    name: &str,
    hash: ContentHash,
) -> Result<OrbId, WireError> {
    check_name(name)?;
    if lock(&shared.clients).contains_key(&from.id) {
        return Err(WireError::new(
            ErrorKind::BadRequest,
            "clients do not place replicas",
        ));
    }
    let candidates = ranked_candidates(&lock(&shared.clients), &hash, None);
    if candidates.is_empty() {
        return Err(WireError::new(
            ErrorKind::Unavailable,
            "no client with spare capacity on this super",
        ));
    }
    let store = shared.store.clone();
    let have = blocking(move || store.has_module(&hash))
        .await
        .map_err(|e| e.to_wire())?
        .unwrap_or(false);
    if !have {
        let conn = peer_conn(shared, from).await.map_err(|e| e.to_wire())?;
        let answer = tokio::time::timeout(
            PLACE_TIMEOUT,
            conn.request(
                &Request::FetchModule { hash },
                &[],
                orb_proto::limits::MAX_MODULE,
            ),
        )
        .await
        .map_err(|_| WireError::new(ErrorKind::Unavailable, "module fetch timed out"))?
        .map_err(|e| NodeError::from(e).to_wire())?;
        let bytes = match answer {
            (Response::Module { .. }, bytes) => bytes,
            (Response::Error(e), _) => return Err(e),
            (other, _) => {
                return Err(WireError::new(
                    ErrorKind::Internal,
                    format!("unexpected answer to FetchModule: {other:?}"),
                ));
            }
        };
        // Content addressing: the bytes must be the module asked for, and
        // this super validates them itself before any client sees them.
        if ContentHash::of(&bytes) != hash {
            return Err(WireError::new(
                ErrorKind::BadRequest,
                format!(
                    "module bytes from {} do not hash to {hash}",
                    from.id.short()
                ),
            ));
        }
        let rt = shared.runtime.clone();
        let m = bytes.clone();
        blocking(move || rt.validate(&m))
            .await
            .map_err(|e| e.to_wire())?
            .map_err(|e| WireError::new(ErrorKind::BadRequest, format!("module refused: {e}")))?;
        let store = shared.store.clone();
        blocking(move || store.put_module(&hash, &bytes))
            .await
            .map_err(|e| e.to_wire())?
            .map_err(|e| NodeError::from(e).to_wire())?;
    }
    for (id, conn) in candidates {
        if place_on(shared, name, hash, id, &conn).await {
            return Ok(id);
        }
    }
    Err(WireError::new(
        ErrorKind::Unavailable,
        "no client of this super accepted the replica",
    ))
}

/// Place `f` until it has its wanted number of live holders, trying
/// `first` before anyone else. When other supers are known, about half the
/// replicas go to their clients (spread across home supers), and either
/// side takes up what the other cannot. Returns the holders afterwards.
async fn place(shared: &Arc<Shared>, f: &FunctionRecord, first: Option<OrbId>) -> Vec<OrbId> {
    let want = wanted(shared, f) as usize;
    let (mut holders, candidates) = {
        let clients = lock(&shared.clients);
        let holders: Vec<OrbId> = clients
            .iter()
            .filter(|(_, c)| c.hosted.contains(&f.hash))
            .map(|(id, _)| *id)
            .collect();
        (holders, ranked_candidates(&clients, &f.hash, first))
    };
    // Only the super the function was deployed through spreads it to others
    // (one decision-maker per function, no ping-pong).
    let owner_here = read_lock(&shared.functions).contains_key(&f.name);
    let remote = if owner_here {
        remote_holders(shared, &f.hash).await
    } else {
        Vec::new()
    };
    let others_known = owner_here
        && shared
            .overlay
            .routing_table()
            .await
            .is_ok_and(|t| t.iter().any(|p| p.id != shared.id));
    let local_quota = if others_known { want.div_ceil(2) } else { want };
    let mut candidates = candidates.into_iter();
    let mut place_locally = |holders: &mut Vec<OrbId>, upto: usize| {
        let mut picks = Vec::new();
        while holders.len() + picks.len() < upto {
            match candidates.next() {
                Some(c) => picks.push(c),
                None => break,
            }
        }
        picks
    };
    // Replicas held behind other supers count too: when this super restarts,
    // a client that reconnects before the ones holding replicas (they are
    // still in the DHT as providers) must not get one more.
    let local_upto = local_quota.min(want.saturating_sub(remote.len()));
    for (id, conn) in place_locally(&mut holders, local_upto) {
        if place_on(shared, &f.name, f.hash, id, &conn).await {
            holders.push(id);
        }
    }
    let mut total = holders.len() + remote.len();
    if owner_here && total < want {
        let have: Vec<OrbId> = holders.iter().chain(&remote).copied().collect();
        let got = place_elsewhere(shared, f, want - total, &have).await;
        total += got.len();
        holders.extend(got);
    }
    if total < want {
        let upto = holders.len() + (want - total);
        for (id, conn) in place_locally(&mut holders, upto) {
            if place_on(shared, &f.name, f.hash, id, &conn).await {
                holders.push(id);
            }
        }
    }
    for r in remote {
        if !holders.contains(&r) {
            holders.push(r);
        }
    }
    if holders.is_empty() {
        warn!(function = %f.name, "no client with spare capacity is connected; the function has no replica yet");
    }
    // Only if the name still holds this module: `f` may be stale (a newer
    // deploy of the name can commit while this placement waits on a slow
    // client), and saving the whole old record would revert the name on
    // disk, losing the newer deploy at the next restart.
    let store = shared.store.clone();
    let (name, hash, list) = (f.name.clone(), f.hash, holders.clone());
    if let Ok(Err(e)) = blocking(move || store.update_placements(&name, &hash, &list)).await {
        warn!(error = %e, "could not save placements");
    }
    if let Some(r) = write_lock(&shared.functions).get_mut(&f.name)
        && r.hash == f.hash
    {
        r.placements = holders.clone();
    }
    holders
}

/// Keep every function at its wanted replica count with the clients that
/// are connected now (after a client joins or leaves).
async fn rebalance(shared: &Arc<Shared>) {
    let functions: Vec<FunctionRecord> = read_lock(&shared.functions).values().cloned().collect();
    for f in functions {
        let live = {
            let clients = lock(&shared.clients);
            clients
                .values()
                .filter(|c| c.hosted.contains(&f.hash))
                .count()
        };
        if live < wanted(shared, &f) as usize {
            place(shared, &f, None).await;
        }
    }
}

/// Route one call to a replica: least loaded first; a Busy answer or a
/// replica that cannot be reached moves the call on to the next one.
pub(crate) async fn route_call(
    shared: &Arc<Shared>,
    name: &str,
    meta: CallMeta,
    input: Bytes,
    caller: OrbId,
) -> Result<(OrbId, RunOutcome, Bytes), WireError> {
    let started = Instant::now();
    shared.stats.calls.inc();
    let per_function = shared.stats.per_function.start(name);
    let result = route_call_inner(shared, name, meta, input, caller).await;
    shared.stats.call_latency.observe(started.elapsed());
    per_function.finish(matches!(&result, Ok((_, o, _)) if o.is_success()));
    match &result {
        Ok((_, o, _)) if o.is_success() => {}
        Err(e) if e.kind == ErrorKind::Busy => {
            shared.stats.calls_busy.inc();
            shared.stats.call_errors.inc();
        }
        _ => shared.stats.call_errors.inc(),
    }
    result
}

/// Where a call goes: a replica on one of this super's own clients first;
/// otherwise (and not already forwarded) the home super of a provider found
/// in the DHT.
async fn route_call_inner(
    shared: &Arc<Shared>,
    name: &str,
    meta: CallMeta,
    input: Bytes,
    caller: OrbId,
) -> Result<(OrbId, RunOutcome, Bytes), WireError> {
    let forwarded = meta.headers.iter().any(|(k, _)| k == FORWARDED);
    let local = read_lock(&shared.functions).get(name).cloned();
    let (hash, settings) = match local {
        Some(f) => (f.hash, f.settings),
        None => match dht::name_record(&shared.overlay, name).await? {
            Some((_, n)) => (n.hash, n.settings),
            None => {
                return Err(WireError::new(
                    ErrorKind::NotFound,
                    format!("no function named {name:?}"),
                ));
            }
        },
    };
    let f = FunctionRecord {
        name: name.to_string(),
        hash,
        owner: shared.id,
        size: 0,
        settings,
        created_ms: 0,
        updated_ms: 0,
        placements: Vec::new(),
    };
    let local_error =
        match run_on_own_replicas(shared, &f, meta.clone(), input.clone(), caller).await {
            Ok(done) => return Ok(done),
            Err(e) if forwarded => return Err(e),
            Err(e) if matches!(e.kind, ErrorKind::Busy | ErrorKind::Unavailable) => e,
            Err(e) => return Err(e),
        };
    match forward_to_providers(shared, &f, meta, input).await {
        Ok(done) => Ok(done),
        // Nothing elsewhere either: the local answer (busy beats unavailable)
        // says more than "no provider".
        Err(e)
            if e.kind == ErrorKind::NotFound
                || (local_error.kind == ErrorKind::Busy && e.kind != ErrorKind::Busy) =>
        {
            Err(local_error)
        }
        Err(e) => Err(e),
    }
}

/// Forward a call to the home supers of the function's providers (from the
/// DHT), nearest first, each at most once.
async fn forward_to_providers(
    shared: &Arc<Shared>,
    f: &FunctionRecord,
    mut meta: CallMeta,
    input: Bytes,
) -> Result<(OrbId, RunOutcome, Bytes), WireError> {
    let providers = dht::providers(&shared.overlay, &f.hash).await?;
    let mut supers: Vec<PeerAddr> = Vec::new();
    for p in &providers {
        for s in &p.supers {
            if s.id != shared.id && !supers.iter().any(|x| x.id == s.id) {
                supers.push(*s);
            }
        }
    }
    if supers.is_empty() {
        return Err(WireError::new(
            ErrorKind::NotFound,
            format!("no provider of {:?} elsewhere in the network", f.name),
        ));
    }
    reachable_first(shared, &mut supers);
    meta.headers
        .push((FORWARDED.to_string(), shared.id.to_string()));
    let req = Request::Invoke {
        name: f.name.clone(),
        meta,
    };
    let max_out = max_call_output(&f.settings);
    let mut busy = 0usize;
    let mut last_error = None;
    for sup in &supers {
        let conn = match peer_conn(shared, *sup).await {
            Ok(c) => c,
            Err(e) => {
                mark_unreachable(shared, sup.id);
                last_error = Some(WireError::new(
                    ErrorKind::Unavailable,
                    format!("super {} unreachable: {e}", sup.id.short()),
                ));
                continue;
            }
        };
        shared.stats.calls_forwarded.inc();
        match tokio::time::timeout(FORWARD_TIMEOUT, conn.request(&req, &input, max_out)).await {
            Ok(Ok((Response::Ran { node, outcome, .. }, out))) => {
                lock(&shared.unreachable).remove(&sup.id);
                return Ok((node, outcome, out));
            }
            Ok(Ok((Response::Error(e), _))) if e.kind == ErrorKind::Busy => busy += 1,
            Ok(Ok((Response::Error(e), _)))
                if matches!(e.kind, ErrorKind::Unavailable | ErrorKind::NotFound) =>
            {
                last_error = Some(e)
            }
            Ok(Ok((Response::Error(e), _))) => return Err(e),
            Ok(Ok((other, _))) => {
                last_error = Some(WireError::new(
                    ErrorKind::Unavailable,
                    format!("unexpected answer {other:?}"),
                ))
            }
            // That super never got the call: the next one may run it.
            Ok(Err(e)) if e.request_not_sent() => {
                lock(&shared.peer_conns).remove(&sup.id);
                mark_unreachable(shared, sup.id);
                last_error = Some(WireError::new(
                    ErrorKind::Unavailable,
                    format!("super {} unreachable: {e}", sup.id.short()),
                ));
            }
            // The call reached that super, which may have handed it to a
            // live replica before its link failed: unlike a dead replica,
            // that replica can still be running it, so asking another super
            // could run the call twice.
            Ok(Err(e)) => {
                lock(&shared.peer_conns).remove(&sup.id);
                mark_unreachable(shared, sup.id);
                return Err(WireError::new(
                    ErrorKind::Unavailable,
                    format!(
                        "super {} failed during the forwarded call (not retried, to never run it twice): {e}",
                        sup.id.short()
                    ),
                ));
            }
            Err(_) => {
                return Err(WireError::new(
                    ErrorKind::Unavailable,
                    "forwarded call timed out (not retried, to never run it twice)",
                ));
            }
        }
    }
    if busy == supers.len() {
        return Err(WireError::new(
            ErrorKind::Busy,
            format!("every replica of {:?} is busy", f.name),
        ));
    }
    Err(last_error.unwrap_or_else(|| {
        WireError::new(
            ErrorKind::Unavailable,
            format!("no replica of {:?} answered", f.name),
        )
    }))
}

/// Remember that `id` could not be reached just now.
fn mark_unreachable(shared: &Shared, id: OrbId) {
    let now = Instant::now();
    let mut m = lock(&shared.unreachable);
    m.retain(|_, t| now.duration_since(*t) < UNREACHABLE_FOR);
    if m.len() < MAX_PEER_CONNS {
        m.insert(id, now);
    }
}

/// Put the supers that could not be reached lately last, keeping the order
/// otherwise. They are still asked when the others fail.
fn reachable_first(shared: &Shared, supers: &mut [PeerAddr]) {
    let m = lock(&shared.unreachable);
    supers.sort_by_key(|s| m.get(&s.id).is_some_and(|t| t.elapsed() < UNREACHABLE_FOR));
}

/// A connection to another super, reused across calls.
async fn peer_conn(shared: &Arc<Shared>, peer: PeerAddr) -> Result<Connection, NodeError> {
    if let Some(c) = lock(&shared.peer_conns)
        .get(&peer.id)
        .filter(|c| !c.is_closed())
    {
        return Ok(c.clone());
    }
    let conn = shared.endpoint.connect(peer).await?;
    let mut peers = lock(&shared.peer_conns);
    peers.retain(|_, c| !c.is_closed());
    if peers.len() >= MAX_PEER_CONNS
        && let Some(k) = peers.keys().next().copied()
        && let Some(old) = peers.remove(&k)
    {
        old.close("connection cache full");
    }
    peers.insert(peer.id, conn.clone());
    Ok(conn)
}

/// Run a call on one of this super's own clients holding a replica.
async fn run_on_own_replicas(
    shared: &Arc<Shared>,
    f: &FunctionRecord,
    meta: CallMeta,
    input: Bytes,
    caller: OrbId,
) -> Result<(OrbId, RunOutcome, Bytes), WireError> {
    let name = f.name.as_str();
    let mut candidates: Vec<ClientEntry> = {
        let clients = lock(&shared.clients);
        clients
            .values()
            .filter(|c| c.hosted.contains(&f.hash))
            .cloned()
            .collect()
    };
    if candidates.is_empty() {
        return Err(WireError::new(
            ErrorKind::Unavailable,
            format!("no replica of {name:?} is connected"),
        ));
    }
    candidates.sort_by_key(|c| {
        (
            c.in_flight.load(Ordering::Relaxed) * 1000 / c.capacity.max(1),
            c.conn.rtt(),
        )
    });
    let mut busy = 0usize;
    let mut last_error: Option<WireError> = None;
    let request_id = meta.request_id.clone();
    let req = Request::Run {
        name: f.name.clone(),
        hash: f.hash,
        settings: f.settings.clone(),
        meta,
        caller,
    };
    let max_out = max_call_output(&f.settings);
    let sc = scale_counters(shared, name);
    sc.calls.fetch_add(1, Ordering::Relaxed);
    sc.last_call_ms.store(now_ms(), Ordering::Relaxed);
    sc.in_flight.fetch_add(1, Ordering::AcqRel);
    let _in_flight = DecrementOnDrop(sc.in_flight.clone());
    for (attempt, c) in candidates.iter().enumerate() {
        if attempt > 0 {
            shared.stats.calls_failed_over.inc();
        }
        // Reserve a slot; a replica at capacity is skipped without a round trip.
        let before = c.in_flight.fetch_add(1, Ordering::AcqRel);
        if before >= c.capacity {
            c.in_flight.fetch_sub(1, Ordering::AcqRel);
            busy += 1;
            continue;
        }
        let res = c.conn.request(&req, &input, max_out).await;
        c.in_flight.fetch_sub(1, Ordering::AcqRel);
        match res {
            Ok((
                Response::Ran {
                    node: _,
                    outcome,
                    receipt,
                },
                out,
            )) => {
                c.served.fetch_add(1, Ordering::Relaxed);
                let executor = c.conn.peer_id();
                match receipt {
                    Some(r) => {
                        let exp = Expected {
                            request_id: &request_id,
                            function: f.hash,
                            caller,
                            executor,
                        };
                        if let Err(e) = shared.ledger.record(&r, &exp) {
                            shared.stats.receipts_refused.inc();
                            warn!(node = %executor.short(), error = %e, "receipt refused");
                        }
                    }
                    None => {
                        shared.stats.receipts_refused.inc();
                        warn!(node = %executor.short(), "call answered without a receipt");
                    }
                }
                return Ok((executor, outcome, out));
            }
            Ok((Response::Error(e), _)) if e.kind == ErrorKind::Busy => busy += 1,
            Ok((Response::Error(e), _)) if e.kind == ErrorKind::NotFound => {
                // The replica lost the module (wiped data dir): stop routing there.
                let mut clients = lock(&shared.clients);
                if let Some(entry) = clients.get_mut(&c.conn.peer_id()) {
                    entry.hosted.remove(&f.hash);
                }
                last_error = Some(e);
            }
            Ok((Response::Error(e), _)) => return Err(e),
            Ok((other, _)) => {
                last_error = Some(WireError::new(
                    ErrorKind::Unavailable,
                    format!("unexpected answer {other:?}"),
                ));
            }
            // The replica never got the call, or it is gone (its process or
            // its link died before answering, so no result can ever come
            // back): the next replica may run it.
            Err(e)
                if e.request_not_sent()
                    || matches!(e, orb_transport::TransportError::ConnectionLost(_)) =>
            {
                warn!(function = %name, node = %c.conn.peer_id().short(), error = %e, "replica unreachable, trying the next");
                forget_replica(shared, &c.conn, &f.hash);
                last_error = Some(WireError::new(
                    ErrorKind::Unavailable,
                    format!("replica unreachable: {e}"),
                ));
            }
            // The replica is alive and may have run the call: never run it
            // a second time elsewhere.
            Err(e) => {
                warn!(function = %name, node = %c.conn.peer_id().short(), error = %e, "call failed after it started; not retried");
                return Err(WireError::new(
                    ErrorKind::Unavailable,
                    format!(
                        "the replica failed during the call (not retried, to never run it twice): {e}"
                    ),
                ));
            }
        }
    }
    if busy == candidates.len() {
        sc.busy.fetch_add(1, Ordering::Relaxed);
        return Err(WireError::new(
            ErrorKind::Busy,
            format!("all {busy} replicas of {name:?} are busy"),
        ));
    }
    Err(last_error.unwrap_or_else(|| {
        WireError::new(
            ErrorKind::Unavailable,
            format!("no replica of {name:?} answered"),
        )
    }))
}

fn function_infos(shared: &Shared) -> Vec<FunctionInfo> {
    let clients = lock(&shared.clients);
    let mut list: Vec<FunctionInfo> = read_lock(&shared.functions)
        .values()
        .map(|f| {
            let mut replicas: Vec<OrbId> = clients
                .iter()
                .filter(|(_, c)| c.hosted.contains(&f.hash))
                .map(|(id, _)| *id)
                .collect();
            replicas.sort();
            FunctionInfo {
                name: f.name.clone(),
                hash: f.hash,
                owner: f.owner,
                size: f.size,
                settings: f.settings.clone(),
                replicas,
            }
        })
        .collect();
    list.sort_by(|a, b| a.name.cmp(&b.name));
    list
}

// ---------------------------------------------------------------- HTTP

async fn serve_http(
    shared: Arc<Shared>,
    listener: tokio::net::TcpListener,
    shutdown: watch::Receiver<bool>,
) {
    let app = Router::new()
        .route("/fn/{name}", post(http_invoke))
        .route("/api/status", get(http_status))
        .route("/api/functions", get(http_functions))
        .route("/api/functions/{name}", get(http_function))
        .route("/api/nodes", get(http_nodes))
        .route("/api/ledger", get(http_ledger))
        .route("/api/dht", get(http_dht))
        .route("/api/resolve/{name}", get(http_resolve))
        .route("/metrics", get(http_metrics))
        .route("/", get(http_dashboard))
        .with_state(shared.clone());
    crate::http_server::serve(
        listener,
        app,
        shared.config.http_limits.clone(),
        shared.stats.http.clone(),
        shutdown,
        "HTTP gateway",
    )
    .await;
}

async fn http_invoke(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> HttpResponse {
    let input = match http_util::read_body(&headers, body, shared.config.max_body).await {
        Ok(b) => b,
        Err(e) => return http_util::error_response(&e),
    };
    let rid = request_id();
    let meta = http_util::call_meta("POST", query.as_deref(), &headers, rid.clone());
    match route_call(&shared, &name, meta, input, shared.id).await {
        Ok((node, outcome, out)) => {
            debug!(function = %name, request = %rid, node = %node.short(), "call served");
            http_util::call_response(node, &outcome, out, &rid)
        }
        Err(e) => http_util::error_response(&e),
    }
}

#[derive(Serialize)]
struct StatusJson {
    id: String,
    role: &'static str,
    agent: &'static str,
    quic: String,
    http: String,
    uptime_s: u64,
    clients: usize,
    functions: usize,
    calls: u64,
    call_errors: u64,
    deploys: u64,
    /// Gateway-wide median call latency, ms (None before the first call).
    p50_ms: Option<f64>,
    /// Gateway-wide 99th percentile call latency, ms.
    p99_ms: Option<f64>,
    /// The gateway's connections, refusals and timeouts.
    http_server: crate::http_server::HttpStatsJson,
}

async fn http_status(State(shared): State<Arc<Shared>>) -> Json<StatusJson> {
    let clients = lock(&shared.clients).len();
    let http = lock(&shared.http_addr)
        .map(|a| a.to_string())
        .unwrap_or_default();
    Json(StatusJson {
        id: shared.id.to_string(),
        role: "super",
        agent: crate::AGENT,
        quic: shared
            .config
            .public_addr
            .unwrap_or(shared.quic_addr)
            .to_string(),
        http,
        uptime_s: shared.started.elapsed().as_secs(),
        clients,
        functions: read_lock(&shared.functions).len(),
        calls: shared.stats.calls.get(),
        call_errors: shared.stats.call_errors.get(),
        deploys: shared.stats.deploys.get(),
        p50_ms: shared.stats.call_latency.quantile(0.5).map(|s| s * 1000.0),
        p99_ms: shared.stats.call_latency.quantile(0.99).map(|s| s * 1000.0),
        http_server: shared.stats.http.json(),
    })
}

async fn http_functions(State(shared): State<Arc<Shared>>) -> Json<Vec<http_util::FunctionJson>> {
    Json(
        function_infos(&shared)
            .iter()
            .map(|f| with_stats(&shared, f))
            .collect(),
    )
}

/// A function's JSON with this super's counters for it.
fn with_stats(shared: &Shared, f: &FunctionInfo) -> http_util::FunctionJson {
    let mut j = http_util::FunctionJson::from(f);
    j.stats = Some(shared.stats.per_function.get(&f.name));
    j
}

async fn http_function(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> HttpResponse {
    match function_infos(&shared).iter().find(|f| f.name == name) {
        Some(f) => {
            // The detail view: replicas as objects, and the scaling history.
            let mut v = serde_json::to_value(with_stats(&shared, f)).unwrap_or_default();
            let replicas: Vec<serde_json::Value> = {
                let clients = lock(&shared.clients);
                let mut r: Vec<serde_json::Value> = clients
                    .iter()
                    .filter(|(_, c)| c.hosted.contains(&f.hash))
                    .map(|(id, c)| {
                        serde_json::json!({
                            "node": id.to_string(),
                            "path": "tunnel",
                            "in_flight": c.in_flight.load(Ordering::Relaxed),
                            "calls_served": c.served.load(Ordering::Relaxed),
                            "capacity": c.capacity,
                        })
                    })
                    .collect();
                r.sort_by_key(|x| x["node"].as_str().unwrap_or_default().to_string());
                r
            };
            let (desired, decisions) = lock(&shared.scale)
                .get(&name)
                .map(|s| {
                    (
                        s.desired,
                        s.decisions.iter().rev().cloned().collect::<Vec<_>>(),
                    )
                })
                .unwrap_or((f.settings.replicas, Vec::new()));
            if let Some(obj) = v.as_object_mut() {
                obj.insert("replicas".into(), serde_json::Value::Array(replicas));
                obj.insert("replicas_desired".into(), desired.into());
                obj.insert(
                    "scaling".into(),
                    serde_json::to_value(decisions).unwrap_or_default(),
                );
            }
            Json(v).into_response()
        }
        None => http_util::error_response(&WireError::new(
            ErrorKind::NotFound,
            format!("no function named {name:?}"),
        )),
    }
}

#[derive(Serialize)]
struct NodeJson {
    id: String,
    role: &'static str,
    addr: String,
    capacity: u32,
    in_flight: u32,
    served: u64,
    hosted: usize,
    agent: String,
    connected_ms: u64,
    rtt_ms: f64,
    /// How this super reaches the node: "tunnel" (down the client's own
    /// outbound QUIC connection).
    path: &'static str,
}

async fn http_nodes(State(shared): State<Arc<Shared>>) -> Json<Vec<NodeJson>> {
    let clients = lock(&shared.clients);
    let mut nodes: Vec<NodeJson> = clients
        .iter()
        .map(|(id, c)| NodeJson {
            id: id.to_string(),
            role: "client",
            addr: c.observed.to_string(),
            capacity: c.capacity,
            in_flight: c.in_flight.load(Ordering::Relaxed),
            served: c.served.load(Ordering::Relaxed),
            hosted: c.hosted.len(),
            agent: c.agent.clone(),
            connected_ms: c.connected_ms,
            rtt_ms: c.conn.rtt().as_secs_f64() * 1000.0,
            path: "tunnel",
        })
        .collect();
    nodes.sort_by(|a, b| a.id.cmp(&b.id));
    Json(nodes)
}

async fn http_dashboard() -> Html<&'static str> {
    Html(include_str!("dashboard.html"))
}

/// Flush ledger balances to the store once a second, and once more at shutdown.
/// Join the DHT (through `--bootstrap`, else the peers remembered in the
/// store), retry while the routing table is empty, and save the overlay's
/// state every [`SNAPSHOT_EVERY`] and once more at shutdown.
async fn overlay_maintenance(
    shared: Arc<Shared>,
    remembered: Vec<PeerAddr>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut seeds: Vec<PeerAddr> = shared.config.bootstrap.clone();
    for p in remembered {
        if p.id != shared.id && !seeds.iter().any(|s| s.id == p.id) {
            seeds.push(p);
        }
    }
    let mut joined = seeds.is_empty();
    if joined {
        info!("no --bootstrap and no remembered peers: this super starts a new network");
    }
    let mut backoff = Duration::from_secs(1);
    let mut saved: Option<blake3::Hash> = None;
    loop {
        if !joined {
            match shared.overlay.bootstrap(seeds.clone()).await {
                Ok(n) => {
                    info!(peers = n, "joined the DHT");
                    joined = true;
                }
                Err(e) => {
                    warn!(error = %e, retry_in = ?backoff, "cannot join the DHT yet");
                }
            }
        }
        // Save when something changed, so a kill -9 loses at most a few
        // seconds of routing table and records.
        match shared.overlay.snapshot().await {
            Ok(snap) => {
                let digest = orb_proto::codec::encode(&snap)
                    .ok()
                    .map(|b| blake3::hash(&b));
                if digest.is_some() && digest != saved {
                    let s = shared.clone();
                    match blocking(move || dht::save_snapshot(&s.store, &snap)).await {
                        Ok(Ok(())) => saved = digest,
                        Ok(Err(e)) => warn!(error = %e, "could not save the DHT state"),
                        Err(e) => warn!(error = %e, "could not save the DHT state"),
                    }
                }
            }
            Err(e) => debug!(error = %e, "no DHT snapshot"),
        }
        let stop = tokio::select! {
            _ = tokio::time::sleep(if joined { SNAPSHOT_EVERY } else { backoff }) => false,
            _ = shutdown.changed() => true,
        };
        backoff = (backoff * 2).min(Duration::from_secs(30));
        if stop {
            if let Ok(snap) = shared.overlay.snapshot().await {
                let s = shared.clone();
                let _ = blocking(move || dht::save_snapshot(&s.store, &snap)).await;
            }
            shared.overlay.shutdown().await;
            return;
        }
    }
}

async fn flush_ledger(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let stop = tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => false,
            _ = shutdown.changed() => true,
        };
        let s = shared.clone();
        if let Ok(Err(e)) = blocking(move || s.ledger.flush(&s.store)).await {
            warn!(error = %e, "could not save the ledger");
        }
        if stop {
            return;
        }
    }
}

#[derive(Serialize)]
struct LedgerJson {
    node: String,
    earned: u64,
    spent: u64,
    calls_served: u64,
    calls_made: u64,
}

#[derive(Serialize)]
struct DhtJson {
    id: String,
    routing_table: Vec<String>,
    records: usize,
    lookups: u64,
    lookups_ok: u64,
    mean_rounds: f64,
}

async fn http_dht(State(shared): State<Arc<Shared>>) -> HttpResponse {
    let table = shared.overlay.routing_table().await.unwrap_or_default();
    match shared.overlay.stats().await {
        Ok(st) => Json(DhtJson {
            id: shared.id.to_string(),
            routing_table: table.iter().map(|p| p.to_string()).collect(),
            records: st.records,
            lookups: st.lookups,
            lookups_ok: st.lookups_ok,
            mean_rounds: st.mean_rounds,
        })
        .into_response(),
        Err(e) => http_util::error_response(&WireError::new(ErrorKind::Unavailable, e.to_string())),
    }
}

async fn http_resolve(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> HttpResponse {
    if let Err(e) = check_name(&name) {
        return http_util::error_response(&e);
    }
    match dht::resolve(&shared.overlay, &name).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => http_util::error_response(&e),
    }
}

async fn http_ledger(State(shared): State<Arc<Shared>>) -> Json<Vec<LedgerJson>> {
    Json(
        shared
            .ledger
            .balances()
            .into_iter()
            .map(|(id, b)| LedgerJson {
                node: id.to_string(),
                earned: b.earned,
                spent: b.spent,
                calls_served: b.calls_served,
                calls_made: b.calls_made,
            })
            .collect(),
    )
}

async fn http_metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let st = &shared.stats;
    let mut e = Exposition::default();
    let b = &shared.bridge.stats;
    for (name, help, v) in [
        (
            "orb_clients_unresponsive_total",
            "Client tunnels closed after missed health pings.",
            st.health_closed.get(),
        ),
        (
            "orb_punches_coordinated_total",
            "Hole punches this super coordinated.",
            b.punches_coordinated.get(),
        ),
        (
            "orb_relay_circuits_total",
            "Relay circuits opened.",
            b.relay_circuits.get(),
        ),
        (
            "orb_relay_refused_total",
            "Relay circuits refused (quota, unknown target, flood).",
            b.relay_refused.get(),
        ),
        (
            "orb_relay_bytes_total",
            "Bytes relayed (both directions).",
            b.relay_bytes.get(),
        ),
        (
            "orb_punch_relay_throttled_total",
            "Punch or relay requests refused by the per-node rate limit.",
            b.coord_throttled.get(),
        ),
        (
            "orb_dial_backs_total",
            "Reachability dial-backs made.",
            b.dial_backs.get(),
        ),
    ] {
        e.sample(name, "counter", help, v as f64);
    }
    e.sample(
        "orb_relay_circuits_open",
        "gauge",
        "Relay circuits open now.",
        shared.bridge.circuits() as f64,
    );
    e.sample(
        "orb_calls_total",
        "counter",
        "Calls routed by this super.",
        st.calls.get() as f64,
    );
    e.sample(
        "orb_call_errors_total",
        "counter",
        "Calls that did not succeed.",
        st.call_errors.get() as f64,
    );
    e.sample(
        "orb_calls_busy_total",
        "counter",
        "Calls refused because every replica was busy.",
        st.calls_busy.get() as f64,
    );
    e.sample(
        "orb_calls_failed_over_total",
        "counter",
        "Attempts moved to another replica.",
        st.calls_failed_over.get() as f64,
    );
    e.histogram(
        "orb_call_duration_seconds",
        "Gateway-side latency of routed calls.",
        &st.call_latency,
    );
    e.sample(
        "orb_deploys_total",
        "counter",
        "Deploys accepted.",
        st.deploys.get() as f64,
    );
    e.sample(
        "orb_deploys_refused_total",
        "counter",
        "Deploys refused (bad module, wrong owner, bad name).",
        st.deploys_refused.get() as f64,
    );
    e.sample(
        "orb_calls_forwarded_total",
        "counter",
        "Calls forwarded to another super (provider behind it).",
        st.calls_forwarded.get() as f64,
    );
    e.sample(
        "orb_dht_stores_throttled_total",
        "counter",
        "DHT STOREs refused because one peer sent too many.",
        st.dht_stores_throttled.get() as f64,
    );
    e.sample(
        "orb_receipts_refused_total",
        "counter",
        "Receipts refused (forged, mismatched, replayed).",
        st.receipts_refused.get() as f64,
    );
    let (clients, in_flight) = {
        let c = lock(&shared.clients);
        (
            c.len(),
            c.values()
                .map(|e| e.in_flight.load(Ordering::Relaxed))
                .sum::<u32>(),
        )
    };
    e.labelled(
        "orb_connections",
        "gauge",
        "Open connections by kind.",
        &[("kind", "client", clients as f64)],
    );
    e.sample(
        "orb_calls_in_flight",
        "gauge",
        "Calls in flight on connected replicas.",
        f64::from(in_flight),
    );
    e.sample(
        "orb_functions",
        "gauge",
        "Functions known to this super.",
        read_lock(&shared.functions).len() as f64,
    );
    let supers = lock(&shared.peer_conns)
        .values()
        .filter(|c| !c.is_closed())
        .count();
    crate::metrics::connections_by_path(&mut e, clients, supers);
    st.http.render(&mut e);
    st.per_function.render(&mut e);
    if let Ok(dht) = shared.overlay.stats().await {
        crate::metrics::dht(&mut e, &dht);
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        e.finish(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_spreads_over_networks_before_reusing_one() {
        let a: std::net::IpAddr = [10, 0, 0, 1].into();
        let b: std::net::IpAddr = [10, 0, 0, 2].into();
        let c: std::net::IpAddr = [10, 0, 0, 3].into();
        // Ranked best first: two on network a, then b, then c.
        let ranked = vec![(1, a), (2, a), (3, b), (4, c)];
        let mut used = HashSet::new();
        assert_eq!(
            spread_by_network(ranked.clone(), &mut used),
            vec![1, 3, 4, 2]
        );
        // A holder already on b: b's candidate waits its turn.
        let mut used = HashSet::from([b]);
        assert_eq!(spread_by_network(ranked, &mut used), vec![1, 4, 2, 3]);
    }
}
