//! The client daemon: home-super links, hosted replicas, and the local API.
//!
//! The daemon dials each home super and keeps the connection open with QUIC
//! keepalives (shorter than NAT mapping timeouts). Supers send `Place` and
//! `Run` down that connection, so a client behind NAT serves calls without
//! any inbound port. When a link drops, it is redialed with exponential
//! backoff; the `Hello` on each new link lists the replicas held, so a
//! restarted super learns them again.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Json, Response as HttpResponse};
use axum::routing::{get, post};
use orb_overlay::{Overlay, OverlayConfig};
use orb_proto::receipt::Receipt;
use orb_proto::wire::{
    ErrorKind, FunctionSettings, Hello, HostedReplica, Request, Response, Role, Welcome, WireError,
};
use orb_proto::{ContentHash, Keypair, OrbId, PeerAddr};
use orb_runtime::{Invocation, Runtime, RuntimeConfig, RuntimeError};
use orb_store::{HostedRecord, PeerEntry, Store};
use orb_transport::{Connection, Endpoint, IncomingRequest};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::config::ClientConfig;
use crate::dht;
use crate::error::NodeError;
use crate::http_util::{self, FunctionJson};
use crate::metrics::{Counter, Exposition, Histogram};
use crate::util::{blocking, check_name, lock, now_ms, read_lock, request_id, write_lock};

/// First redial delay after a link drops.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
/// Longest redial delay.
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// How long a deploy may take end to end (upload, validation, placement).
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a routed call may take at most, on top of the function's own limit.
const INVOKE_TIMEOUT: Duration = Duration::from_secs(120);

/// Namespace for starting a client daemon.
pub struct ClientNode;

/// A running client daemon.
pub struct ClientHandle {
    /// This node's Orb ID.
    pub id: OrbId,
    /// The bound local API address.
    pub api_addr: SocketAddr,
    /// The bound QUIC address.
    pub quic_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    endpoint: Endpoint,
    promoted: Arc<tokio::sync::Mutex<Option<crate::super_node::SuperHandle>>>,
}

impl ClientHandle {
    /// Stop serving, close links, and wait for the tasks to end.
    pub async fn shutdown(mut self) {
        if let Some(promoted) = self.promoted.lock().await.take() {
            promoted.shutdown().await;
        }
        crate::util::stop_node(&self.shutdown, &mut self.tasks, &self.endpoint).await;
    }
}

/// State of the link to one home super.
#[derive(Clone)]
struct SuperLink {
    peer: PeerAddr,
    conn: Option<Connection>,
    observed: Option<SocketAddr>,
    connected_ms: Option<u64>,
    last_error: Option<String>,
}

struct Shared {
    id: OrbId,
    keypair: Keypair,
    stats: ClientStats,
    config: ClientConfig,
    quic_addr: SocketAddr,
    store: Store,
    runtime: Runtime,
    endpoint: Endpoint,
    supers: Mutex<HashMap<OrbId, SuperLink>>,
    hosted: RwLock<HashMap<String, HostedRecord>>,
    started: Instant,
    /// A DHT client: resolves names and publishes this node's records, but
    /// never sits in anyone's routing table.
    overlay: Overlay,
    /// Node-to-node paths (LAN, punched, relayed).
    paths: Arc<crate::paths::Paths>,
    /// What address discovery found out.
    nat: Mutex<NatState>,
    /// The super role this node runs after promotion.
    promoted: Arc<tokio::sync::Mutex<Option<crate::super_node::SuperHandle>>>,
}

/// Results of address discovery and the dial-back check.
#[derive(Clone, Debug)]
struct NatState {
    mapping: orb_nat::NatMapping,
    /// `Some(true)`: a super's dial-back from another socket got in.
    reachable: Option<bool>,
    /// This node's own address on its LAN (the listen address, or the
    /// interface address used to reach a super when listening on 0.0.0.0).
    local: Option<SocketAddr>,
}

impl ClientNode {
    /// Open the store, bind QUIC and the local API, and start the links to
    /// the home supers (from `config.supers` and from the store).
    pub async fn start(config: ClientConfig) -> Result<ClientHandle, NodeError> {
        let dir = config.data_dir.clone();
        let store = blocking(move || Store::open(&dir)).await??;
        let s = store.clone();
        let keypair = blocking(move || s.load_or_create_identity()).await??;
        let s = store.clone();
        let hosted = blocking(move || s.hosted()).await??;
        let s = store.clone();
        let known = blocking(move || s.peers()).await??;

        let endpoint = Endpoint::bind(config.listen, &keypair, config.transport.clone())?;
        let quic_addr = endpoint.local_addr()?;
        let runtime = Runtime::new(RuntimeConfig {
            capacity: config.capacity,
            ..RuntimeConfig::default()
        })?;
        let listener = tokio::net::TcpListener::bind(config.api)
            .await
            .map_err(|source| NodeError::Bind {
                what: "local API",
                addr: config.api,
                source,
            })?;
        let api_addr = listener
            .local_addr()
            .map_err(|e| NodeError::Internal(e.to_string()))?;

        // Home supers: the command line first, then the ones remembered.
        let mut supers: HashMap<OrbId, SuperLink> = HashMap::new();
        let remembered = known
            .into_iter()
            .filter(|p| p.role == Role::Super)
            .map(|p| PeerAddr {
                id: p.id,
                addr: p.addr,
            });
        for peer in config.supers.iter().copied().chain(remembered) {
            supers.entry(peer.id).or_insert(SuperLink {
                peer,
                conn: None,
                observed: None,
                connected_ms: None,
                last_error: None,
            });
        }
        if supers.is_empty() {
            warn!(
                "no super node known: pass --super ORBID@HOST:PORT once; it is remembered afterwards"
            );
        }
        let peers: Vec<PeerAddr> = supers.values().map(|l| l.peer).collect();

        let (overlay, _overlay_task) = Overlay::spawn(
            endpoint.clone(),
            PeerAddr {
                id: keypair.id(),
                addr: quic_addr,
            },
            orb_overlay::Role::Client,
            OverlayConfig {
                core: orb_overlay::Config {
                    // Records are re-signed every REFRESH_EVERY (10 min) and
                    // the shortest lives 30 min, so a healthy record never
                    // has under 20 min left. The overlay's 2 h default would
                    // warn about every provider and node record at once.
                    expiry_warning: 15 * 60 * 1000,
                    ..orb_overlay::Config::default()
                },
                ..OverlayConfig::default()
            },
        );
        let (serve_tx, serve_rx) = tokio::sync::mpsc::channel(64);
        let paths = Arc::new(crate::paths::Paths::new(
            endpoint.clone(),
            keypair.clone(),
            serve_tx,
        ));
        let shared = Arc::new(Shared {
            paths,
            nat: Mutex::new(NatState {
                mapping: orb_nat::NatMapping::Unknown,
                reachable: None,
                local: (!quic_addr.ip().is_unspecified()).then_some(quic_addr),
            }),
            promoted: Arc::new(tokio::sync::Mutex::new(None)),
            id: keypair.id(),
            keypair: keypair.clone(),
            stats: ClientStats::default(),
            config,
            quic_addr,
            store,
            runtime,
            endpoint: endpoint.clone(),
            supers: Mutex::new(supers),
            hosted: RwLock::new(hosted.into_iter().map(|h| (h.name.clone(), h)).collect()),
            started: Instant::now(),
            overlay,
        });

        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        for peer in peers {
            tasks.spawn(super_link(shared.clone(), peer, shutdown_rx.clone()));
        }
        tasks.spawn(accept_loop(
            shared.clone(),
            endpoint.clone(),
            shutdown_rx.clone(),
        ));
        tasks.spawn(refresh_records(shared.clone(), shutdown_rx.clone()));
        tasks.spawn(serve_peers(shared.clone(), serve_rx, shutdown_rx.clone()));
        tasks.spawn(discovery(shared.clone(), shutdown_rx.clone()));
        tasks.spawn(serve_api(shared.clone(), listener, shutdown_rx));
        info!(id = %shared.id, api = %api_addr, quic = %quic_addr, "client daemon started");
        Ok(ClientHandle {
            id: shared.id,
            api_addr,
            quic_addr,
            shutdown,
            tasks,
            endpoint,
            promoted: shared.promoted.clone(),
        })
    }
}

fn hosted_list(shared: &Shared) -> Vec<HostedReplica> {
    let hosted = read_lock(&shared.hosted);
    hosted
        .values()
        .map(|h| HostedReplica {
            name: h.name.clone(),
            hash: h.hash,
        })
        .collect()
}

/// Keep one home-super link up for the daemon's lifetime.
async fn super_link(shared: Arc<Shared>, peer: PeerAddr, mut shutdown: watch::Receiver<bool>) {
    let mut backoff = BACKOFF_MIN;
    let mut failures = 0u32;
    loop {
        if *shutdown.borrow() {
            return;
        }
        match connect_super(&shared, peer).await {
            Ok((conn, welcome)) => {
                backoff = BACKOFF_MIN;
                failures = 0;
                info!(super_node = %peer.id.short(), addr = %peer.addr, observed = %welcome.observed_addr, "connected to super node");
                {
                    let mut supers = lock(&shared.supers);
                    if let Some(l) = supers.get_mut(&peer.id) {
                        l.conn = Some(conn.clone());
                        l.observed = Some(welcome.observed_addr);
                        l.connected_ms = Some(now_ms());
                        l.last_error = None;
                    }
                }
                let store = shared.store.clone();
                let entry = PeerEntry {
                    id: peer.id,
                    addr: peer.addr,
                    role: Role::Super,
                    last_seen_ms: now_ms(),
                };
                if let Ok(Err(e)) = blocking(move || store.put_peer(&entry)).await {
                    warn!(error = %e, "could not remember super node");
                }
                let overlay = shared.overlay.clone();
                tokio::spawn(async move {
                    if let Err(e) = overlay.bootstrap(vec![peer]).await {
                        debug!(error = %e, "DHT bootstrap through the home super failed");
                    }
                });
                tokio::select! {
                    reason = serve_super(shared.clone(), conn.clone()) => {
                        warn!(super_node = %peer.id.short(), reason = %reason, "link to super node lost; reconnecting");
                        let mut supers = lock(&shared.supers);
                        if let Some(l) = supers.get_mut(&peer.id) {
                            l.conn = None;
                            l.connected_ms = None;
                            l.last_error = Some(reason);
                        }
                    }
                    _ = shutdown.changed() => { conn.close("shutting down"); return; }
                }
            }
            Err(e) => {
                failures += 1;
                // Log the first failure loudly, then quietly: a super that is
                // down for an hour should not flood the log.
                if failures == 1 {
                    warn!(super_node = %peer.id.short(), addr = %peer.addr, error = %e, "cannot reach super node; retrying with backoff");
                } else {
                    debug!(super_node = %peer.id.short(), error = %e, failures, "still cannot reach super node");
                }
                if let Some(l) = lock(&shared.supers).get_mut(&peer.id) {
                    l.last_error = Some(e.to_string());
                }
            }
        }
        // Jitter spreads the reconnect storm after a super restarts.
        let jitter = Duration::from_millis(u64::from(now_ms() as u32 % 100));
        tokio::select! {
            _ = tokio::time::sleep(backoff + jitter) => {}
            _ = shutdown.changed() => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// The Hello a client says on a link: capacity and the replicas it holds.
fn hello(shared: &Shared) -> Request {
    Request::Hello(Hello {
        role: Role::Client,
        version: orb_proto::wire::PROTOCOL_VERSION,
        capacity: u32::try_from(shared.runtime.capacity()).unwrap_or(u32::MAX),
        listen_addrs: vec![shared.quic_addr],
        hosted: hosted_list(shared),
        agent: crate::AGENT.to_string(),
    })
}

async fn connect_super(
    shared: &Arc<Shared>,
    peer: PeerAddr,
) -> Result<(Connection, Welcome), NodeError> {
    let conn = shared.endpoint.connect(peer).await?;
    match conn.request(&hello(shared), &[], 1024).await? {
        (Response::Welcome(w), _) => Ok((conn, w)),
        (Response::Error(e), _) => Err(NodeError::Remote(e)),
        (other, _) => Err(NodeError::Protocol(format!(
            "expected Welcome, got {other:?}"
        ))),
    }
}

/// Whether `id` is one of this node's home supers.
fn is_home_super(shared: &Shared, id: &OrbId) -> bool {
    lock(&shared.supers).contains_key(id)
}

/// Serve the requests of peer connections (dialed or accepted) until they
/// close; bounded by the peer table's size.
async fn serve_peers(
    shared: Arc<Shared>,
    mut rx: tokio::sync::mpsc::Receiver<Connection>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            conn = rx.recv() => match conn {
                Some(conn) => { conns.spawn(serve_super(shared.clone(), conn)); }
                None => break,
            },
            _ = shutdown.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.abort_all();
}

/// Serve requests the super sends down the link until it closes. Returns why.
async fn serve_super(shared: Arc<Shared>, conn: Connection) -> String {
    loop {
        match conn.accept_request().await {
            Ok(incoming) if matches!(incoming.request(), Request::RelayIncoming { .. }) => {
                // Only a home super may open circuits to us; the TLS inside
                // the circuit then proves who is at the other end.
                if is_home_super(&shared, &conn.peer_id()) {
                    match incoming.accept_tunnel().await {
                        Ok(tunnel) => shared.paths.accept_relayed(tunnel),
                        Err(e) => debug!(error = %e, "relay circuit failed to open"),
                    }
                } else {
                    debug!(peer = %conn.peer_id().short(), "relay circuit from a non-home node refused");
                }
            }
            Ok(incoming) => {
                let s = shared.clone();
                let c = conn.clone();
                tokio::spawn(async move { handle_request(s, c, incoming).await });
            }
            Err(e) => return e.to_string(),
        }
    }
}

/// Direct dials to this client: other nodes' node-to-node paths (served
/// like any link) and supers' dial-back checks.
async fn accept_loop(shared: Arc<Shared>, endpoint: Endpoint, mut shutdown: watch::Receiver<bool>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            conn = endpoint.accept() => match conn {
                Some(conn) if is_home_super(&shared, &conn.peer_id()) => {
                    conns.spawn(serve_super(shared.clone(), conn));
                }
                Some(conn) => shared.paths.accepted(conn),
                None => break,
            },
            _ = shutdown.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.abort_all();
}

async fn handle_request(shared: Arc<Shared>, conn: Connection, incoming: IncomingRequest) {
    let (req, body, responder) = incoming.split();
    let (resp, out) = match req {
        Request::Hello(_) => (
            Response::Welcome(Welcome {
                node: shared.id,
                observed_addr: conn.remote_addr(),
            }),
            Bytes::new(),
        ),
        Request::Ping { nonce } => (Response::Pong { nonce }, Bytes::new()),
        Request::PunchNow {
            from,
            addrs,
            rtt_ms,
        } => {
            // Punch orders come from home supers only, and at a bounded
            // rate: anything else is ignored (answered, never dialed).
            if !is_home_super(&shared, &conn.peer_id()) || !shared.paths.punch_now_allowed() {
                debug!(peer = %conn.peer_id().short(), "punch request ignored");
                (
                    Response::Error(WireError::new(
                        ErrorKind::Forbidden,
                        "punch request ignored",
                    )),
                    Bytes::new(),
                )
            } else {
                let mut addrs = addrs;
                addrs.truncate(8);
                shared
                    .paths
                    .punch_back(from, addrs, Duration::from_millis(u64::from(rtt_ms)));
                (
                    Response::PunchAddrs {
                        addrs: my_addrs(&shared).all(),
                        rtt_ms,
                    },
                    Bytes::new(),
                )
            }
        }
        Request::Run {
            name,
            hash,
            settings,
            meta,
            caller,
        } => {
            // A node calling directly must name itself as the caller: the
            // receipt (and the ledger) then charge the right node.
            let caller = if is_home_super(&shared, &conn.peer_id()) {
                caller
            } else {
                conn.peer_id()
            };
            run_call(&shared, name, hash, settings, meta, caller, body).await
        }
        Request::Unplace { name, hash } => {
            unplace(&shared, &name, hash).await;
            (Response::Placed, Bytes::new())
        }
        Request::Place { name, hash } => match place(&shared, &conn, name, hash).await {
            Ok(()) => (Response::Placed, Bytes::new()),
            Err(e) => (Response::Error(e), Bytes::new()),
        },
        Request::FetchModule { hash } => {
            let store = shared.store.clone();
            match blocking(move || store.module(&hash)).await {
                Ok(Ok(Some(bytes))) => (Response::Module { hash }, Bytes::from(bytes)),
                _ => (
                    Response::Error(WireError::new(
                        ErrorKind::NotFound,
                        format!("no module {hash}"),
                    )),
                    Bytes::new(),
                ),
            }
        }
        other => (
            Response::Error(WireError::new(
                ErrorKind::BadRequest,
                format!("a client does not serve {}", other.kind()),
            )),
            Bytes::new(),
        ),
    };
    if let Err(e) = responder.respond(&resp, &out).await {
        debug!(error = %e, "could not send response");
    }
}

/// Make sure `hash` is compiled and ready, loading it from the store if the
/// daemon restarted since it was placed.
async fn ensure_prepared(shared: &Arc<Shared>, hash: ContentHash) -> Result<(), WireError> {
    if shared.runtime.is_prepared(&hash) {
        return Ok(());
    }
    let store = shared.store.clone();
    let rt = shared.runtime.clone();
    blocking(move || -> Result<(), WireError> {
        let module = store
            .module(&hash)
            .map_err(|e| WireError::new(ErrorKind::Internal, e.to_string()))?
            .ok_or_else(|| {
                WireError::new(
                    ErrorKind::NotFound,
                    format!("this node holds no module {hash}"),
                )
            })?;
        prepare_cached(&store, &rt, hash, &module)
    })
    .await
    .map_err(|e| e.to_wire())?
}

/// Compile `module` (already verified against `hash`), reusing the compiled
/// artifact this node saved earlier when there is one. Artifacts are keyed
/// by the runtime's cache key, so another wasmer version or metering setup
/// recompiles. Blocking: run it on a blocking thread.
fn prepare_cached(
    store: &Store,
    rt: &Runtime,
    hash: ContentHash,
    module: &[u8],
) -> Result<(), WireError> {
    let key = format!("{}/{hash}", rt.cache_key());
    match store.artifact(&key) {
        Ok(Some(artifact)) => match rt.prepare_artifact(hash, &artifact) {
            Ok(()) => {
                debug!(hash = %hash.short(), "compiled artifact loaded from the store");
                return Ok(());
            }
            Err(e) => {
                warn!(hash = %hash.short(), error = %e, "stored artifact unusable, recompiling");
                let _ = store.remove_artifact(&key);
            }
        },
        Ok(None) => {}
        Err(e) => warn!(error = %e, "cannot read the artifact cache"),
    }
    rt.prepare(hash, module).map_err(|e| {
        WireError::new(ErrorKind::BadRequest, format!("cannot prepare module: {e}"))
    })?;
    if let Some(artifact) = rt.artifact(&hash)
        && let Err(e) = store.put_artifact(&key, &artifact)
    {
        warn!(error = %e, "cannot save the compiled artifact");
    }
    Ok(())
}

async fn run_call(
    shared: &Arc<Shared>,
    name: String,
    hash: ContentHash,
    settings: FunctionSettings,
    meta: orb_proto::wire::CallMeta,
    caller: OrbId,
    input: Bytes,
) -> (Response, Bytes) {
    let started = Instant::now();
    let per_function = shared.stats.per_function.start(&name);
    let answer = run_call_inner(shared, name, hash, settings, meta, caller, input).await;
    shared.stats.calls.inc();
    shared.stats.call_latency.observe(started.elapsed());
    per_function.finish(matches!(&answer.0, Response::Ran { outcome, .. } if outcome.is_success()));
    match &answer.0 {
        Response::Ran { outcome, .. } if outcome.is_success() => {}
        Response::Error(e) if e.kind == ErrorKind::Busy => shared.stats.busy.inc(),
        _ => shared.stats.errors.inc(),
    }
    answer
}

async fn run_call_inner(
    shared: &Arc<Shared>,
    name: String,
    hash: ContentHash,
    settings: FunctionSettings,
    meta: orb_proto::wire::CallMeta,
    caller: OrbId,
    input: Bytes,
) -> (Response, Bytes) {
    if let Err(e) = ensure_prepared(shared, hash).await {
        return (Response::Error(e), Bytes::new());
    }
    let request_id = meta.request_id.clone();
    let inv = Invocation {
        function: name.clone(),
        input,
        args: settings.args,
        env: settings.env,
        meta,
        limits: settings.limits,
    };
    match shared.runtime.call(hash, inv).await {
        Ok(result) => {
            debug!(function = %name, request = %request_id, status = ?result.outcome.status, fuel = result.outcome.fuel_used, "call ran");
            let receipt = Receipt {
                function: hash,
                caller,
                executor: shared.id,
                fuel_used: result.outcome.fuel_used,
                duration_us: result.outcome.duration_us,
                time_ms: now_ms(),
                request_id,
            }
            .sign(&shared.keypair)
            .map(Box::new)
            .map_err(|e| warn!(error = %e, "cannot sign receipt"))
            .ok();
            (
                Response::Ran {
                    node: shared.id,
                    outcome: result.outcome,
                    receipt,
                },
                Bytes::from(result.stdout),
            )
        }
        Err(RuntimeError::Busy) => (
            Response::Error(WireError::new(ErrorKind::Busy, "node at capacity")),
            Bytes::new(),
        ),
        Err(RuntimeError::NotPrepared(h)) => (
            Response::Error(WireError::new(
                ErrorKind::NotFound,
                format!("module {h} is not ready here"),
            )),
            Bytes::new(),
        ),
        Err(e) => (
            Response::Error(WireError::new(ErrorKind::Internal, e.to_string())),
            Bytes::new(),
        ),
    }
}

/// Fetch (from the super that asked), verify, compile and remember a replica.
async fn place(
    shared: &Arc<Shared>,
    conn: &Connection,
    name: String,
    hash: ContentHash,
) -> Result<(), WireError> {
    check_name(&name)?;
    let store = shared.store.clone();
    let have = blocking(move || store.has_module(&hash))
        .await
        .map_err(|e| e.to_wire())?
        .unwrap_or(false);
    let module = if have {
        None
    } else {
        let (resp, bytes) = conn
            .request(
                &Request::FetchModule { hash },
                &[],
                orb_proto::limits::MAX_MODULE,
            )
            .await
            .map_err(|e| WireError::new(ErrorKind::Unavailable, format!("fetching module: {e}")))?;
        match resp {
            Response::Module { .. } => {}
            Response::Error(e) => return Err(e),
            other => {
                return Err(WireError::new(
                    ErrorKind::Internal,
                    format!("unexpected answer {other:?}"),
                ));
            }
        }
        // Never trust the sender: the hash is the module's identity.
        let actual = ContentHash::of(&bytes);
        if actual != hash {
            return Err(WireError::new(
                ErrorKind::BadRequest,
                format!("fetched module hashes to {actual}, not {hash}"),
            ));
        }
        Some(bytes)
    };
    let store = shared.store.clone();
    let rt = shared.runtime.clone();
    let record = HostedRecord {
        name: name.clone(),
        hash,
        settings: FunctionSettings::default(),
    };
    let rec = record.clone();
    blocking(move || -> Result<(), WireError> {
        match module {
            Some(b) => {
                // Compile before storing: a module this node cannot run is
                // never kept.
                prepare_cached(&store, &rt, hash, &b)?;
                store
                    .put_module(&hash, &b)
                    .map_err(|e| WireError::new(ErrorKind::Internal, e.to_string()))?;
            }
            None => {
                let b = store
                    .module(&hash)
                    .map_err(|e| WireError::new(ErrorKind::Internal, e.to_string()))?
                    .ok_or_else(|| {
                        WireError::new(ErrorKind::Internal, "module vanished from the store")
                    })?;
                prepare_cached(&store, &rt, hash, &b)?;
            }
        }
        store
            .put_hosted(&rec)
            .map_err(|e| WireError::new(ErrorKind::Internal, e.to_string()))
    })
    .await
    .map_err(|e| e.to_wire())??;
    write_lock(&shared.hosted).insert(name.clone(), record);
    info!(function = %name, hash = %hash.short(), "hosting replica");
    let s = shared.clone();
    tokio::spawn(async move { publish_provider(&s, hash).await });
    announce_hosted(shared, conn.peer_id());
    Ok(())
}

/// Tell the home supers other than `placer` (which knows) the replicas this
/// node now holds, with a Hello on their links, in the background. Each of
/// them routes calls only to replicas it knows of; without this, a replica
/// placed by one home super would be unreachable through the others while
/// that one is down.
fn announce_hosted(shared: &Arc<Shared>, placer: OrbId) {
    let hello = hello(shared);
    for conn in home_links(shared)
        .into_iter()
        .filter(|c| c.peer_id() != placer)
    {
        let hello = hello.clone();
        // A super that misses it learns the list from the Hello of the
        // next link anyway.
        tokio::spawn(async move {
            match tokio::time::timeout(Duration::from_secs(5), conn.request(&hello, &[], 1024))
                .await
            {
                Ok(Ok((Response::Welcome(_), _))) => {}
                other => {
                    debug!(super_node = %conn.peer_id().short(), answer = ?other.map(|r| r.map(|(r, _)| r)), "replica list not announced")
                }
            }
        });
    }
}

/// Stop hosting a replica (the super scaled it down). The module bytes stay
/// in the store, so a later placement needs no fetch.
async fn unplace(shared: &Arc<Shared>, name: &str, hash: ContentHash) {
    let removed = {
        let mut hosted = write_lock(&shared.hosted);
        match hosted.get(name) {
            Some(h) if h.hash == hash => hosted.remove(name).is_some(),
            _ => false,
        }
    };
    if removed {
        let store = shared.store.clone();
        let key = name.to_string();
        if let Ok(Err(e)) = blocking(move || store.remove_hosted(&key)).await {
            warn!(error = %e, "cannot forget the replica in the store");
        }
        info!(function = %name, hash = %hash.short(), "replica removed (scaled down)");
    }
}

/// This node's home supers, as written in its provider records.
fn home_supers(shared: &Shared) -> Vec<PeerAddr> {
    lock(&shared.supers)
        .values()
        .filter(|l| l.conn.as_ref().is_some_and(|c| !c.is_closed()))
        .map(|l| l.peer)
        .collect()
}

/// Tell the DHT that this node holds a ready replica of `hash`.
async fn publish_provider(shared: &Arc<Shared>, hash: ContentHash) -> bool {
    let record = match dht::sign_provider(&shared.keypair, hash, home_supers(shared)) {
        Ok(r) => r,
        Err(e) => {
            warn!(error = %e.message, "cannot sign provider record");
            return false;
        }
    };
    match shared.overlay.put(record).await {
        Ok(n) => {
            debug!(hash = %hash.short(), stored_on = n, "provider record published");
            true
        }
        Err(e) => {
            debug!(hash = %hash.short(), error = %e, "provider record not published yet");
            false
        }
    }
}

const OWNED_NS: &str = "owned-names";

/// Publish (again) the name record of a function this node deployed.
async fn publish_name(
    shared: &Arc<Shared>,
    name: &str,
    hash: ContentHash,
    settings: &FunctionSettings,
) -> Result<usize, WireError> {
    let record = dht::sign_name(&shared.keypair, name, hash, settings)?;
    shared.overlay.put(record).await.map_err(|e| {
        let msg = e.to_string();
        let kind = if msg.contains("belongs to") {
            ErrorKind::Forbidden
        } else {
            ErrorKind::Unavailable
        };
        WireError::new(kind, format!("name record not published: {msg}"))
    })
}

/// Re-sign and re-publish this node's records before they expire: provider
/// records of hosted replicas and name records of functions it owns. Runs
/// every few seconds until the first round succeeds, then every
/// [`dht::REFRESH_EVERY`].
async fn refresh_records(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut ok_once = false;
    loop {
        let wait = if ok_once {
            dht::REFRESH_EVERY
        } else {
            Duration::from_secs(3)
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        if home_supers(&shared).is_empty() {
            continue;
        }
        let hosted: Vec<ContentHash> = read_lock(&shared.hosted).values().map(|h| h.hash).collect();
        let mut all_ok = true;
        for hash in hosted {
            all_ok &= publish_provider(&shared, hash).await;
        }
        let store = shared.store.clone();
        let owned = blocking(move || store.blobs(OWNED_NS))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        for (name, value) in owned {
            let Ok(name) = String::from_utf8(name) else {
                continue;
            };
            match orb_proto::codec::decode::<(ContentHash, FunctionSettings)>(&value) {
                Ok((hash, settings)) => {
                    if let Err(e) = publish_name(&shared, &name, hash, &settings).await {
                        debug!(function = %name, error = %e.message, "name record not refreshed");
                        all_ok = false;
                    }
                }
                Err(e) => warn!(function = %name, error = %e, "corrupt owned-name entry"),
            }
        }
        ok_once |= all_ok;
    }
}

/// This node's addresses: as its supers observe them, and its own.
fn my_addrs(shared: &Shared) -> orb_nat::NodeAddrs {
    let mut observed: Vec<SocketAddr> = lock(&shared.supers)
        .values()
        .filter(|l| l.conn.as_ref().is_some_and(|c| !c.is_closed()))
        .filter_map(|l| l.observed)
        .collect();
    observed.sort();
    observed.dedup();
    let local = lock(&shared.nat).local.into_iter().collect();
    orb_nat::NodeAddrs { observed, local }
}

/// Live links to home supers.
fn home_links(shared: &Shared) -> Vec<Connection> {
    lock(&shared.supers)
        .values()
        .filter_map(|l| l.conn.clone())
        .filter(|c| !c.is_closed())
        .collect()
}

/// The interface address this host uses to reach `to` (no packet is sent:
/// connecting a UDP socket only picks a route).
fn route_addr(to: SocketAddr) -> Option<std::net::IpAddr> {
    let bind: SocketAddr = if to.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let s = std::net::UdpSocket::bind(bind).ok()?;
    s.connect(to).ok()?;
    s.local_addr().ok().map(|a| a.ip())
}

/// How often discovery runs once it has published a record.
const DISCOVERY_EVERY: Duration = Duration::from_secs(60);

/// Address discovery: classify the NAT from what the supers observed, ask
/// one for a dial-back, publish the node record, and start the super role
/// when promotion is on and the node is public.
async fn discovery(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut published: Option<(String, Vec<SocketAddr>, Vec<PeerAddr>)> = None;
    let mut since_publish = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = shutdown.changed() => return,
        }
        let links: Vec<(PeerAddr, Connection)> = lock(&shared.supers)
            .values()
            .filter_map(|l| Some((l.peer, l.conn.clone().filter(|c| !c.is_closed())?)))
            .collect();
        if links.len() < 2 {
            adopt_super(&shared, &shutdown).await;
        }
        let Some((first, first_conn)) = links.first().cloned() else {
            continue;
        };
        let local = {
            let mut nat = lock(&shared.nat);
            if nat.local.is_none()
                && let Some(ip) = route_addr(first.addr)
            {
                nat.local = Some(SocketAddr::new(ip, shared.quic_addr.port()));
            }
            nat.local
        };
        let me = my_addrs(&shared);
        // One observation per super (not deduplicated): two supers seeing
        // the same address is what shows an endpoint-independent mapping.
        let per_super: Vec<SocketAddr> = lock(&shared.supers)
            .values()
            .filter(|l| l.conn.as_ref().is_some_and(|c| !c.is_closed()))
            .filter_map(|l| l.observed)
            .collect();
        let mapping = orb_nat::classify(&local.into_iter().collect::<Vec<_>>(), &per_super);
        // Ask for a dial-back until one answers; then only on changes.
        let need_dial_back = lock(&shared.nat).reachable.is_none()
            || published
                .as_ref()
                .is_some_and(|(_, obs, _)| *obs != me.observed);
        let mut reachable = lock(&shared.nat).reachable;
        if need_dial_back {
            match tokio::time::timeout(
                Duration::from_secs(5),
                first_conn.request(&Request::DialBack, &[], 0),
            )
            .await
            {
                Ok(Ok((
                    Response::DialBack {
                        reachable: r,
                        dialed,
                    },
                    _,
                ))) => {
                    info!(dialed = %dialed, reachable = r, nat = mapping.as_str(), "reachability checked");
                    reachable = Some(r);
                }
                other => {
                    debug!(answer = ?other.map(|r| r.map(|(r, _)| r)), "dial-back not available");
                }
            }
        }
        {
            let mut nat = lock(&shared.nat);
            nat.mapping = mapping;
            nat.reachable = reachable;
        }
        let homes: Vec<PeerAddr> = links.iter().map(|(p, _)| *p).collect();
        let current = (
            mapping.as_str().to_string(),
            me.observed.clone(),
            homes.clone(),
        );
        if published.as_ref() != Some(&current) || since_publish.elapsed() >= DISCOVERY_EVERY * 10 {
            let record = orb_proto::dht::NodeRecord {
                id: shared.id,
                home_supers: homes,
                observed: me.observed.clone(),
                local: me.local.clone(),
                nat: mapping.as_str().to_string(),
                capacity: u32::try_from(shared.runtime.capacity()).unwrap_or(u32::MAX),
            };
            match dht::sign_node(&shared.keypair, record) {
                Ok(r) => match shared.overlay.put(r).await {
                    Ok(_) => {
                        published = Some(current);
                        since_publish = Instant::now();
                    }
                    Err(e) => debug!(error = %e, "node record not published yet"),
                },
                Err(e) => warn!(error = %e.message, "cannot sign node record"),
            }
        }
        if shared.config.promote
            && reachable == Some(true)
            && mapping == orb_nat::NatMapping::None
            && let Some(local) = local
        {
            promote(&shared, local, links.iter().map(|(p, _)| *p).collect()).await;
        }
        if published.is_some() {
            tokio::select! {
                _ = tokio::time::sleep(DISCOVERY_EVERY) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Home supers a client links to at most (given, remembered and adopted).
const MAX_HOME_SUPERS: usize = 8;

/// With fewer than two live home supers, adopt another super from the DHT
/// (the ones closest to this node's ID), so one super dying never leaves
/// the node unreachable for long.
async fn adopt_super(shared: &Arc<Shared>, shutdown: &watch::Receiver<bool>) {
    if lock(&shared.supers).len() >= MAX_HOME_SUPERS {
        return;
    }
    let Ok(found) = shared
        .overlay
        .lookup(orb_proto::dht::Key::for_node(&shared.id))
        .await
    else {
        return;
    };
    let mut supers = lock(&shared.supers);
    let live = supers
        .values()
        .filter(|l| l.conn.as_ref().is_some_and(|c| !c.is_closed()))
        .count();
    if live >= 2 || supers.len() >= MAX_HOME_SUPERS {
        return;
    }
    if let Some(peer) = found
        .into_iter()
        .find(|p| p.id != shared.id && !supers.contains_key(&p.id))
    {
        info!(super_node = %peer.id.short(), addr = %peer.addr, "adopting another home super");
        supers.insert(
            peer.id,
            SuperLink {
                peer,
                conn: None,
                observed: None,
                connected_ms: None,
                last_error: None,
            },
        );
        tokio::spawn(super_link(shared.clone(), peer, shutdown.clone()));
    }
}

/// Start the super role next to the client (once): DHT server, relay and
/// gateway, bootstrapped from the home supers. It has its own identity and
/// store under `<data-dir>/super`, listens on the next port, and serves
/// its gateway on port 7780 (or any free port when that is taken).
async fn promote(shared: &Arc<Shared>, local: SocketAddr, bootstrap: Vec<PeerAddr>) {
    let mut promoted = shared.promoted.lock().await;
    if promoted.is_some() {
        return;
    }
    let port = match shared.quic_addr.port() {
        0 | u16::MAX => 0,
        p => p + 1,
    };
    let mut cfg = crate::config::SuperConfig::new(shared.config.data_dir.join("super"));
    cfg.listen = SocketAddr::new(local.ip(), port);
    cfg.bootstrap = bootstrap;
    cfg.http = SocketAddr::new(local.ip(), 7780);
    // The operator's limits hold for the role this node grows into too.
    cfg.http_limits = shared.config.http_limits.clone();
    cfg.transport = shared.config.transport.clone();
    let started = match crate::super_node::SuperNode::start(cfg.clone()).await {
        Ok(h) => Ok(h),
        Err(_) => {
            cfg.http = SocketAddr::new(local.ip(), 0);
            crate::super_node::SuperNode::start(cfg).await
        }
    };
    match started {
        Ok(h) => {
            info!(id = %h.id, quic = %h.quic_addr, http = %h.http_addr, "publicly reachable: promoted to super node");
            *promoted = Some(h);
        }
        Err(e) => warn!(error = %e, "promotion to super node failed"),
    }
}

/// Connection context for node-to-node paths.
fn path_ctx(shared: &Shared) -> crate::paths::Ctx {
    crate::paths::Ctx {
        me: my_addrs(shared),
        homes: home_links(shared),
    }
}

/// The best path to `target` (an existing one, or LAN, punch, relay).
async fn peer_link(
    shared: &Arc<Shared>,
    target: OrbId,
) -> Result<crate::paths::PeerLink, WireError> {
    if let Some(l) = shared.paths.get(&target) {
        return Ok(l);
    }
    let record = dht::node_record(&shared.overlay, &target).await?;
    shared.paths.connect(target, record, path_ctx(shared)).await
}

/// The connected super with the lowest round-trip time.
fn best_super(shared: &Shared) -> Result<Connection, NodeError> {
    let supers = lock(&shared.supers);
    supers
        .values()
        .filter_map(|l| l.conn.clone())
        .filter(|c| !c.is_closed())
        .min_by_key(|c| c.rtt())
        .ok_or(NodeError::NoSuper)
}

// ---------------------------------------------------------------- local API

async fn serve_api(
    shared: Arc<Shared>,
    listener: tokio::net::TcpListener,
    shutdown: watch::Receiver<bool>,
) {
    let limits = shared.config.http_limits.clone();
    let stats = shared.stats.http.clone();
    let app = Router::new()
        .route("/api/status", get(api_status))
        .route("/api/functions", get(api_functions))
        .route("/api/nodes", get(api_nodes))
        .route("/api/deploy", post(api_deploy))
        .route("/api/invoke/{name}", post(api_invoke))
        .route("/api/resolve/{name}", get(api_resolve))
        .route("/api/peers", get(api_peers))
        .route("/api/ping/{id}", post(api_ping))
        .route("/metrics", get(api_metrics))
        .route("/", get(api_dashboard))
        .with_state(shared);
    crate::http_server::serve(listener, app, limits, stats, shutdown, "local API").await;
}

#[derive(Serialize)]
struct SuperJson {
    id: String,
    addr: String,
    connected: bool,
    observed_addr: Option<String>,
    last_error: Option<String>,
    rtt_ms: Option<f64>,
}

#[derive(Serialize)]
struct HostedJson {
    name: String,
    hash: String,
}

#[derive(Serialize)]
struct ClientStatusJson {
    id: String,
    role: &'static str,
    agent: &'static str,
    quic: String,
    uptime_s: u64,
    capacity: usize,
    in_flight: usize,
    supers: Vec<SuperJson>,
    hosted: Vec<HostedJson>,
    /// Credits as the best connected super's ledger holds them.
    #[serde(skip_serializing_if = "Option::is_none")]
    credits: Option<orb_proto::wire::Credits>,
    /// `public` when a super's dial-back from another socket got in,
    /// `private` when it did not, `unknown` before the check.
    reachability: &'static str,
    /// NAT mapping: none, endpoint-independent, endpoint-dependent, unknown.
    nat: &'static str,
    /// This node's own (LAN) address.
    local_addr: Option<String>,
    /// The super role this node runs after promotion.
    promoted: Option<PromotedJson>,
}

#[derive(Serialize)]
struct PromotedJson {
    id: String,
    addr: String,
    gateway: String,
}

fn super_views(shared: &Shared) -> Vec<SuperJson> {
    let supers = lock(&shared.supers);
    let mut v: Vec<SuperJson> = supers
        .values()
        .map(|l| {
            let live = l.conn.as_ref().filter(|c| !c.is_closed());
            SuperJson {
                id: l.peer.id.to_string(),
                addr: l.peer.addr.to_string(),
                connected: live.is_some(),
                observed_addr: l.observed.map(|a| a.to_string()),
                last_error: l.last_error.clone(),
                rtt_ms: live.map(|c| c.rtt().as_secs_f64() * 1000.0),
            }
        })
        .collect();
    v.sort_by(|a, b| a.id.cmp(&b.id));
    v
}

async fn api_status(State(shared): State<Arc<Shared>>) -> Json<ClientStatusJson> {
    let credits = match best_super(&shared) {
        Ok(conn) => match tokio::time::timeout(
            Duration::from_secs(2),
            conn.request(&Request::Balance, &[], 1024),
        )
        .await
        {
            Ok(Ok((Response::Balance(c), _))) => Some(c),
            _ => None,
        },
        Err(_) => None,
    };
    let mut hosted: Vec<HostedJson> = hosted_list(&shared)
        .into_iter()
        .map(|h| HostedJson {
            name: h.name,
            hash: h.hash.to_string(),
        })
        .collect();
    hosted.sort_by(|a, b| a.name.cmp(&b.name));
    let nat = lock(&shared.nat).clone();
    let promoted = shared.promoted.lock().await.as_ref().map(|h| PromotedJson {
        id: h.id.to_string(),
        addr: h.quic_addr.to_string(),
        gateway: h.http_addr.to_string(),
    });
    Json(ClientStatusJson {
        reachability: match nat.reachable {
            Some(true) => "public",
            Some(false) => "private",
            None => "unknown",
        },
        nat: nat.mapping.as_str(),
        local_addr: nat.local.map(|a| a.to_string()),
        promoted,
        id: shared.id.to_string(),
        role: "client",
        agent: crate::AGENT,
        quic: shared.quic_addr.to_string(),
        uptime_s: shared.started.elapsed().as_secs(),
        capacity: shared.runtime.capacity(),
        in_flight: shared.runtime.in_flight(),
        supers: super_views(&shared),
        hosted,
        credits,
    })
}

#[derive(Serialize)]
struct NodeJson {
    id: String,
    role: &'static str,
    addr: String,
    capacity: Option<u32>,
    in_flight: Option<u32>,
    served: Option<u64>,
    rtt_ms: f64,
    connected: bool,
}

async fn api_nodes(State(shared): State<Arc<Shared>>) -> Json<Vec<NodeJson>> {
    Json(
        super_views(&shared)
            .into_iter()
            .map(|s| NodeJson {
                id: s.id,
                role: "super",
                addr: s.addr,
                capacity: None,
                in_flight: None,
                served: None,
                rtt_ms: s.rtt_ms.unwrap_or(0.0),
                connected: s.connected,
            })
            .collect(),
    )
}

async fn api_functions(State(shared): State<Arc<Shared>>) -> HttpResponse {
    let result = async {
        let conn = best_super(&shared)?;
        match conn
            .request(&Request::ListFunctions, &[], orb_proto::limits::MAX_FRAME)
            .await?
        {
            (Response::Functions(list), _) => Ok(list),
            (Response::Error(e), _) => Err(NodeError::Remote(e)),
            (other, _) => Err(NodeError::Protocol(format!(
                "expected Functions, got {other:?}"
            ))),
        }
    }
    .await;
    match result {
        Ok(list) => Json(
            list.iter()
                .map(|f| {
                    // Counters of the calls this node ran.
                    let mut j = FunctionJson::from(f);
                    j.stats = Some(shared.stats.per_function.get(&f.name));
                    j
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => http_util::error_response(&e.to_wire()),
    }
}

#[derive(Serialize)]
struct DeployedJson {
    name: String,
    hash: String,
    placed_on: Vec<String>,
    /// DHT servers that stored the name record.
    published_on: usize,
    /// Why the name record could not be published (the function still
    /// works through the super it was deployed to; the record is retried).
    #[serde(skip_serializing_if = "Option::is_none")]
    dht_error: Option<String>,
}

/// Deploy settings from the query string: `name`, `replicas`,
/// `max_replicas`, repeatable `arg` and `env` (`K=V`), and the per-call
/// limits `fuel`, `memory_bytes`, `timeout_ms` and `max_output` (each node
/// clamps them to its own maxima when it runs a call).
pub(crate) fn deploy_params(
    query: Option<&str>,
) -> Result<(String, FunctionSettings, bool), WireError> {
    let bad = |m: String| WireError::new(ErrorKind::BadRequest, m);
    let mut name = None;
    let mut here = false;
    let mut settings = FunctionSettings {
        replicas: 2,
        ..FunctionSettings::default()
    };
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "name" => name = Some(v.into_owned()),
            "here" => here = matches!(v.as_ref(), "1" | "true" | ""),
            "replicas" => {
                settings.replicas = v
                    .parse()
                    .map_err(|_| bad(format!("replicas must be a number, not {v:?}")))?
            }
            "max_replicas" => {
                settings.max_replicas = v
                    .parse()
                    .map_err(|_| bad(format!("max_replicas must be a number, not {v:?}")))?
            }
            "arg" => settings.args.push(v.into_owned()),
            "fuel" => settings.limits.fuel = Some(positive(&k, &v)?),
            "memory_bytes" => settings.limits.memory_bytes = Some(positive(&k, &v)?),
            "timeout_ms" => settings.limits.timeout_ms = Some(positive(&k, &v)?),
            "max_output" => settings.limits.max_output = Some(positive(&k, &v)?),
            "env" => {
                let (key, val) = v
                    .split_once('=')
                    .ok_or_else(|| bad(format!("env must be KEY=VALUE, not {v:?}")))?;
                settings.env.push((key.to_string(), val.to_string()));
            }
            other => return Err(bad(format!("unknown deploy parameter {other:?}"))),
        }
    }
    let name = name.ok_or_else(|| bad("missing name".into()))?;
    check_name(&name)?;
    if settings.replicas == 0 {
        return Err(bad("replicas must be at least 1".into()));
    }
    settings.max_replicas = settings.max_replicas.max(settings.replicas);
    Ok((name, settings, here))
}

/// A limit from the deploy query: a whole number of at least 1.
fn positive(key: &str, value: &str) -> Result<u64, WireError> {
    match value.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(WireError::new(
            ErrorKind::BadRequest,
            format!("{key} must be a whole number of at least 1, not {value:?}"),
        )),
    }
}

async fn api_deploy(
    State(shared): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> HttpResponse {
    let result = async {
        let (name, settings, here) = deploy_params(query.as_deref())?;
        let module = http_util::read_body(&headers, body, orb_proto::limits::MAX_MODULE).await?;
        // Validate here first: a bad file gets a clear answer without a
        // round trip, and nothing is sent or stored.
        let rt = shared.runtime.clone();
        let m = module.clone();
        blocking(move || rt.validate(&m))
            .await
            .map_err(|e| e.to_wire())?
            .map_err(|e| WireError::new(ErrorKind::BadRequest, format!("module refused: {e}")))?;
        let hash = ContentHash::of(&module);
        let conn = best_super(&shared).map_err(|e| e.to_wire())?;
        let settings_kept = settings.clone();
        let req = Request::Deploy {
            name,
            hash,
            settings,
            here,
        };
        let answer = tokio::time::timeout(DEPLOY_TIMEOUT, conn.request(&req, &module, 1024 * 1024))
            .await
            .map_err(|_| WireError::new(ErrorKind::Unavailable, "deploy timed out"))?
            .map_err(|e| NodeError::from(e).to_wire())?;
        match answer {
            (
                Response::Deployed {
                    name,
                    hash,
                    placed_on,
                },
                _,
            ) => {
                // The super accepted it (and checked ownership against the
                // DHT); now publish the signed name record so that every
                // super can resolve it, and remember it for refreshing.
                let published = publish_name(&shared, &name, hash, &settings_kept).await;
                if let Ok(value) = orb_proto::codec::encode(&(hash, settings_kept.clone())) {
                    let store = shared.store.clone();
                    let key = name.clone();
                    if let Ok(Err(e)) =
                        blocking(move || store.put_blob(OWNED_NS, key.as_bytes(), &value)).await
                    {
                        warn!(error = %e, "cannot remember the deployed name");
                    }
                }
                Ok(DeployedJson {
                    name,
                    hash: hash.to_string(),
                    placed_on: placed_on.iter().map(|p| p.to_string()).collect(),
                    published_on: published.as_ref().map_or(0, |n| *n),
                    dht_error: published.err().map(|e| e.message),
                })
            }
            (Response::Error(e), _) => Err(e),
            (other, _) => Err(WireError::new(
                ErrorKind::Internal,
                format!("unexpected answer {other:?}"),
            )),
        }
    }
    .await;
    match result {
        Ok(d) => (StatusCode::OK, Json(d)).into_response(),
        Err(e) => http_util::error_response(&e),
    }
}

async fn api_resolve(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> HttpResponse {
    if let Err(e) = check_name(&name) {
        return http_util::error_response(&e);
    }
    match dht::resolve(&shared.overlay, &name).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => http_util::error_response(&e),
    }
}

async fn api_invoke(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> HttpResponse {
    let rid = request_id();
    let result = async {
        let input = http_util::read_body(&headers, body, shared.config.max_body).await?;
        let meta = http_util::call_meta("POST", query.as_deref(), &headers, rid.clone());
        if let Some(done) = direct_invoke(&shared, &name, &meta, &input).await? {
            return Ok(done);
        }
        let conn = best_super(&shared).map_err(|e| e.to_wire())?;
        let req = Request::Invoke { name, meta };
        let max_out = orb_proto::limits::DEFAULT_MAX_OUTPUT + 64 * 1024;
        let answer = tokio::time::timeout(INVOKE_TIMEOUT, conn.request(&req, &input, max_out))
            .await
            .map_err(|_| WireError::new(ErrorKind::Unavailable, "call timed out"))?
            .map_err(|e| NodeError::from(e).to_wire())?;
        match answer {
            (Response::Ran { node, outcome, .. }, out) => Ok((node, outcome, out, "super")),
            (Response::Error(e), _) => Err(e),
            (other, _) => Err(WireError::new(
                ErrorKind::Internal,
                format!("unexpected answer {other:?}"),
            )),
        }
    }
    .await;
    match result {
        Ok((node, outcome, out, path)) => {
            let mut resp = http_util::call_response(node, &outcome, out, &rid);
            resp.headers_mut()
                .insert("x-orb-path", axum::http::HeaderValue::from_static(path));
            resp
        }
        Err(e) => http_util::error_response(&e),
    }
}

#[derive(Serialize)]
struct PeerJson {
    id: String,
    path: &'static str,
    addr: String,
    rtt_ms: f64,
    since_ms: u64,
}

/// Node-to-node connections and their path kinds.
async fn api_peers(State(shared): State<Arc<Shared>>) -> Json<Vec<PeerJson>> {
    Json(
        shared
            .paths
            .list()
            .into_iter()
            .map(|(id, l)| PeerJson {
                id: id.to_string(),
                path: l.path.as_str(),
                addr: l.conn.remote_addr().to_string(),
                rtt_ms: l.conn.rtt().as_secs_f64() * 1000.0,
                since_ms: l.since_ms,
            })
            .collect(),
    )
}

#[derive(Serialize)]
struct PingJson {
    peer: String,
    path: &'static str,
    /// Round trip of one ping on the path.
    rtt_ms: f64,
    /// From the start of the command to the first answer (path set-up
    /// included: LAN tries, punching, relay).
    first_byte_ms: f64,
}

/// Connect to another node over the best path and ping it.
async fn api_ping(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> HttpResponse {
    let started = Instant::now();
    let result = async {
        let target: OrbId = id.parse().map_err(|e| {
            WireError::new(ErrorKind::BadRequest, format!("not an Orb ID: {id:?}: {e}"))
        })?;
        if target == shared.id {
            return Err(WireError::new(ErrorKind::BadRequest, "that is this node"));
        }
        let (conn, path) = match home_links(&shared)
            .into_iter()
            .find(|c| c.peer_id() == target)
        {
            Some(c) => {
                let kind = crate::paths::direct_kind(c.remote_addr());
                (c, kind)
            }
            None => {
                let l = peer_link(&shared, target).await?;
                (l.conn, l.path)
            }
        };
        let nonce = now_ms();
        let t = Instant::now();
        match tokio::time::timeout(
            Duration::from_secs(10),
            conn.request(&Request::Ping { nonce }, &[], 0),
        )
        .await
        {
            Ok(Ok((Response::Pong { nonce: n }, _))) if n == nonce => Ok(PingJson {
                peer: target.to_string(),
                path: path.as_str(),
                rtt_ms: t.elapsed().as_secs_f64() * 1000.0,
                first_byte_ms: started.elapsed().as_secs_f64() * 1000.0,
            }),
            Ok(Ok((other, _))) => Err(WireError::new(
                ErrorKind::Internal,
                format!("unexpected answer to ping: {other:?}"),
            )),
            Ok(Err(e)) => Err(NodeError::from(e).to_wire()),
            Err(_) => Err(WireError::new(ErrorKind::Unavailable, "ping timed out")),
        }
    }
    .await;
    match result {
        Ok(j) => Json(j).into_response(),
        Err(e) => http_util::error_response(&e),
    }
}

/// Call `name` on a replica held by another client, over a node-to-node
/// path. `Ok(None)`: no other client holds one (use a super).
async fn direct_invoke(
    shared: &Arc<Shared>,
    name: &str,
    meta: &orb_proto::wire::CallMeta,
    input: &Bytes,
) -> Result<Option<(OrbId, orb_proto::wire::RunOutcome, Bytes, &'static str)>, WireError> {
    let Some((_, record)) = dht::name_record(&shared.overlay, name).await? else {
        return Ok(None);
    };
    let mut nodes: Vec<OrbId> = dht::providers(&shared.overlay, &record.hash)
        .await?
        .iter()
        .filter_map(|p| p.node.parse::<OrbId>().ok())
        .filter(|id| *id != shared.id)
        .collect();
    // Prefer peers we already have a path to, best path first.
    nodes.sort_by_key(|id| shared.paths.get(id).map_or(3, |l| l.path as u8));
    let max_out = orb_proto::limits::DEFAULT_MAX_OUTPUT + 64 * 1024;
    for node in nodes {
        let link = match peer_link(shared, node).await {
            Ok(l) => l,
            Err(e) => {
                debug!(node = %node.short(), error = %e, "no path to replica; trying the next");
                continue;
            }
        };
        let req = Request::Run {
            name: name.to_string(),
            hash: record.hash,
            settings: record.settings.clone(),
            meta: meta.clone(),
            caller: shared.id,
        };
        match tokio::time::timeout(INVOKE_TIMEOUT, link.conn.request(&req, input, max_out)).await {
            Ok(Ok((
                Response::Ran {
                    node,
                    outcome,
                    receipt,
                },
                out,
            ))) => {
                if let Some(r) = receipt {
                    submit_receipt(shared, r);
                }
                return Ok(Some((node, outcome, out, link.path.as_str())));
            }
            Ok(Ok((Response::Error(e), _)))
                if matches!(e.kind, ErrorKind::Busy | ErrorKind::NotFound) =>
            {
                debug!(node = %node.short(), error = %e, "replica cannot take the call; trying the next");
            }
            Ok(Ok((Response::Error(e), _))) => return Err(e),
            Ok(Ok((other, _))) => {
                return Err(WireError::new(
                    ErrorKind::Internal,
                    format!("unexpected answer {other:?}"),
                ));
            }
            // At most once: only a call that was never sent moves on.
            Ok(Err(e)) if e.request_not_sent() => continue,
            Ok(Err(e)) => return Err(NodeError::from(e).to_wire()),
            Err(_) => return Err(WireError::new(ErrorKind::Unavailable, "call timed out")),
        }
    }
    Ok(None)
}

/// Hand the receipt of a direct call to a home super's ledger, in the
/// background (the caller pays for what it used).
fn submit_receipt(shared: &Arc<Shared>, receipt: Box<orb_proto::receipt::SignedReceipt>) {
    let Ok(conn) = best_super(shared) else {
        return;
    };
    tokio::spawn(async move {
        match tokio::time::timeout(
            Duration::from_secs(10),
            conn.request(&Request::Receipt(receipt), &[], 0),
        )
        .await
        {
            Ok(Ok((Response::ReceiptRecorded, _))) => {}
            other => debug!(answer = ?other.map(|r| r.map(|(r, _)| r)), "receipt not recorded"),
        }
    });
}

async fn api_dashboard() -> Html<&'static str> {
    Html(include_str!("dashboard.html"))
}

/// Counters behind the client's `GET /metrics`.
#[derive(Default)]
struct ClientStats {
    calls: Counter,
    errors: Counter,
    busy: Counter,
    call_latency: Histogram,
    /// Calls, errors, in flight and latency per function run here.
    per_function: crate::metrics::FunctionStats,
    /// Connections, refusals and timeouts of the local API server.
    http: Arc<crate::http_server::HttpStats>,
}

async fn api_metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let st = &shared.stats;
    let mut e = Exposition::default();
    let p = &shared.paths.stats;
    for (name, help, v) in [
        (
            "orb_paths_direct_total",
            "Direct node-to-node connections made (LAN or punched).",
            p.direct.get(),
        ),
        (
            "orb_paths_relayed_total",
            "Relayed node-to-node connections made.",
            p.relayed.get(),
        ),
        (
            "orb_punch_attempts_total",
            "Hole punches tried.",
            p.punch_attempts.get(),
        ),
        (
            "orb_punch_successes_total",
            "Hole punches that gave a direct path.",
            p.punch_successes.get(),
        ),
        (
            "orb_path_upgrades_total",
            "Relayed paths later upgraded to direct.",
            p.upgrades.get(),
        ),
    ] {
        e.sample(name, "counter", help, v as f64);
    }
    e.histogram(
        "orb_time_to_first_direct_byte_seconds",
        "From wanting a peer to a direct path being up.",
        &p.first_direct_byte,
    );
    e.sample(
        "orb_calls_total",
        "counter",
        "Calls run on this node.",
        st.calls.get() as f64,
    );
    e.sample(
        "orb_call_errors_total",
        "counter",
        "Calls that failed or hit a limit.",
        st.errors.get() as f64,
    );
    e.sample(
        "orb_calls_busy_total",
        "counter",
        "Calls refused at capacity.",
        st.busy.get() as f64,
    );
    e.histogram(
        "orb_call_duration_seconds",
        "Time to run a call on this node.",
        &st.call_latency,
    );
    st.http.render(&mut e);
    e.sample(
        "orb_calls_in_flight",
        "gauge",
        "Calls running now.",
        shared.runtime.in_flight() as f64,
    );
    let connected = super_views(&shared).iter().filter(|s| s.connected).count();
    e.labelled(
        "orb_connections",
        "gauge",
        "Open connections by kind.",
        &[("kind", "super", connected as f64)],
    );
    crate::metrics::connections_by_path(&mut e, 0, connected);
    st.per_function.render(&mut e);
    if let Ok(dht) = shared.overlay.stats().await {
        crate::metrics::dht(&mut e, &dht);
    }
    e.sample(
        "orb_hosted_replicas",
        "gauge",
        "Replicas this node hosts.",
        hosted_list(&shared).len() as f64,
    );
    e.sample(
        "orb_runtime_compiles_total",
        "counter",
        "Modules compiled since the daemon started.",
        shared.runtime.compiles() as f64,
    );
    e.sample(
        "orb_runtime_artifacts_loaded_total",
        "counter",
        "Compiled artifacts loaded from the store instead of compiling.",
        shared.runtime.artifacts_loaded() as f64,
    );
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        e.finish(),
    )
}
