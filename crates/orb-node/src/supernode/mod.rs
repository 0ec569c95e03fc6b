//! The super node role: tunnels to clients, module store, placement, call
//! routing, the bridge for NATed nodes, and the HTTP gateway.
//!
//! Clients dial the super and keep that QUIC connection open; the super
//! sends `Place` and `Run` requests back down the same connection. That
//! connection is the public-to-private tunnel: a NATed client never has to
//! accept an inbound dial.
//!
//! One module per concern:
//!
//! * [`clients`]: the client table, registration, replicas each client
//!   announces, and health pings.
//! * [`requests`]: the QUIC requests peers send, dispatched to the others.
//! * [`deploy`]: accepting a module, and fetching one from another super.
//! * [`bundles`]: the same for function file bundles.
//! * [`placement`]: putting replicas on clients, here and through other
//!   supers; removing them.
//! * [`routing`]: running a call on a replica of this super's clients.
//! * [`forwarding`]: handing a call to the super of a replica elsewhere.
//! * [`scaling`]: the autoscaler loop.
//! * [`ledger`]: credit balances from receipts.
//! * [`overlay`]: joining the DHT, saving its state, STORE rate limits.
//! * [`bridge`]: hole-punch coordination, relay circuits, dial-backs.
//! * [`versions`]: versions, rollback and removal; keeping replicas in line
//!   with the name records in the DHT. [`logs`]: gathering logs.
//! * [`gateway`] and [`api`]: the HTTP side; [`metrics`]: `/metrics`.

mod api;
mod bridge;
pub(crate) mod bundles;
mod clients;
mod deploy;
mod forwarding;
mod gateway;
pub(crate) mod ledger;
mod logs;
mod metrics;
mod overlay;
mod placement;
mod requests;
mod routing;
mod scaling;
mod versions;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use orb_overlay::{Overlay, OverlayConfig};
use orb_proto::{OrbId, PeerAddr};
use orb_runtime::{Runtime, RuntimeConfig};
use orb_store::{FunctionRecord, Store};
use orb_transport::{Connection, Endpoint};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::common::util::blocking;
use crate::config::SuperConfig;
use crate::dht;
use crate::error::NodeError;

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
        crate::common::util::stop_node(&self.shutdown, &mut self.tasks, &self.endpoint).await;
    }
}

/// Everything the super's tasks share.
pub(crate) struct Shared {
    id: OrbId,
    config: SuperConfig,
    quic_addr: SocketAddr,
    http_addr: Mutex<Option<SocketAddr>>,
    store: Store,
    runtime: Runtime,
    clients: Mutex<HashMap<OrbId, clients::ClientEntry>>,
    functions: RwLock<HashMap<String, FunctionRecord>>,
    next_generation: AtomicU64,
    started: Instant,
    stats: metrics::Stats,
    ledger: ledger::Ledger,
    endpoint: Endpoint,
    overlay: Overlay,
    /// Connections to other supers, for forwarded calls and placement.
    peer_conns: Mutex<HashMap<OrbId, Connection>>,
    /// Supers that could not be reached lately, and when (see
    /// [`forwarding::UNREACHABLE_FOR`]).
    unreachable: Mutex<HashMap<OrbId, Instant>>,
    /// Autoscaling state per function name.
    scale: Mutex<HashMap<String, scaling::ScaleState>>,
    /// DHT STORE rate limiters per peer.
    store_limiters: Mutex<orb_nat::PeerLimiter<OrbId>>,
    /// Hole-punch coordination, relay circuits, dial-backs.
    bridge: Arc<bridge::Bridge>,
    /// Held while a function's record is read, changed and committed
    /// (deploy, rollback, removal), so two changes never interleave.
    changes: tokio::sync::Mutex<()>,
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
        let ledger = blocking(move || ledger::Ledger::load(&s)).await??;

        // A deploy's body is its module and its file bundle: let a stream
        // carry both at their largest.
        let mut transport = config.transport.clone();
        let deploy_body = orb_proto::limits::MAX_MODULE
            .saturating_add(usize::try_from(config.bundle_limits.max_bytes).unwrap_or(usize::MAX))
            .saturating_add(64 * 1024);
        transport.max_request_body = transport.max_request_body.max(deploy_body);
        let endpoint = Endpoint::bind(config.listen, &keypair, transport)?;
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

        let bridge = Arc::new(bridge::Bridge::new(
            orb_nat::RelayLimits::default(),
            dial_back,
        ));
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
            stats: metrics::Stats::new(&bridge.stats),
            ledger,
            endpoint: endpoint.clone(),
            overlay,
            peer_conns: Mutex::new(HashMap::new()),
            unreachable: Mutex::new(HashMap::new()),
            scale: Mutex::new(HashMap::new()),
            store_limiters: Mutex::new(overlay::store_limiters()),
            bridge,
            changes: tokio::sync::Mutex::new(()),
        });

        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tasks.spawn(clients::accept_loop(
            shared.clone(),
            endpoint.clone(),
            shutdown_rx.clone(),
        ));
        tasks.spawn(api::serve_http(
            shared.clone(),
            listener,
            shutdown_rx.clone(),
        ));
        tasks.spawn(ledger::flush_loop(shared.clone(), shutdown_rx.clone()));
        tasks.spawn(scaling::autoscale(shared.clone(), shutdown_rx.clone()));
        tasks.spawn(clients::health(shared.clone(), shutdown_rx.clone()));
        tasks.spawn(versions::reconcile_loop(
            shared.clone(),
            shutdown_rx.clone(),
        ));
        tasks.spawn(overlay::maintenance(
            shared.clone(),
            remembered,
            shutdown_rx,
        ));
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
