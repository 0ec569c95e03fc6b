//! The client daemon: home-super links, hosted replicas, node-to-node
//! paths, address discovery and promotion, and the local API.
//!
//! The daemon dials each home super and keeps the connection open with QUIC
//! keepalives (shorter than NAT mapping timeouts). Supers send `Place` and
//! `Run` down that connection, so a client behind NAT serves calls without
//! any inbound port. When a link drops, it is redialed with exponential
//! backoff; the `Hello` on each new link lists the replicas held, so a
//! restarted super learns them again.
//!
//! One module per concern:
//!
//! * [`links`]: the links to home supers and adopting new ones.
//! * [`requests`]: what supers and other nodes ask of this node.
//! * [`hosting`]: placed replicas and running calls on them.
//! * [`records`]: provider and name records in the DHT.
//! * [`paths`]: node-to-node paths (LAN, punched, relayed); [`peers`]: their
//!   local API views.
//! * [`discovery`]: NAT classification, reachability, node record,
//!   promotion.
//! * [`api`], [`deploy`], [`invoke`], [`metrics`]: the local API;
//!   [`guard`]: who may use it (Host, Origin, the daemon's token).
//! * [`manage`]: the names this node owns: remove, rollback, versions.
//! * [`logs`]: the replica's log rings and the owner's logs.

mod api;
mod bundles;
mod deploy;
mod discovery;
mod guard;
mod hosting;
mod invoke;
mod links;
mod logs;
mod manage;
mod metrics;
mod paths;
mod peers;
mod records;
mod requests;
mod upload;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use orb_overlay::{Overlay, OverlayConfig};
use orb_proto::wire::{HostedReplica, Role};
use orb_proto::{Keypair, OrbId, PeerAddr};
use orb_runtime::{Runtime, RuntimeConfig};
use orb_store::{HostedRecord, Store};
use orb_transport::{Connection, Endpoint};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::SuperHandle;
use crate::common::util::{blocking, lock, read_lock};
use crate::config::ClientConfig;
use crate::error::NodeError;

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
    /// The file holding the local API's token (`<data-dir>/api-token`).
    pub token_path: std::path::PathBuf,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    endpoint: Endpoint,
    promoted: Arc<tokio::sync::Mutex<Option<SuperHandle>>>,
}

impl ClientHandle {
    /// The local API's token (`Authorization: Bearer TOKEN` on requests
    /// that change something).
    pub fn api_token(&self) -> std::io::Result<String> {
        std::fs::read_to_string(&self.token_path).map(|t| t.trim().to_string())
    }

    /// Stop serving, close links, and wait for the tasks to end.
    pub async fn shutdown(mut self) {
        if let Some(promoted) = self.promoted.lock().await.take() {
            promoted.shutdown().await;
        }
        crate::common::util::stop_node(&self.shutdown, &mut self.tasks, &self.endpoint).await;
        if let Some(dir) = self.token_path.parent() {
            crate::local_api::unregister(self.api_addr.port(), dir);
        }
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

pub(crate) struct Shared {
    id: OrbId,
    keypair: Keypair,
    stats: metrics::ClientStats,
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
    paths: Arc<paths::Paths>,
    /// What address discovery found out.
    nat: Mutex<NatState>,
    /// The super role this node runs after promotion.
    promoted: Arc<tokio::sync::Mutex<Option<SuperHandle>>>,
    /// Decoded file trees of the bundles of functions run here.
    trees: bundles::TreeCache,
    /// Replicas unplaced lately (name, module): they answer no more calls
    /// (bounded by [`hosting::MAX_RETIRED`]).
    retired: Mutex<std::collections::VecDeque<(String, orb_proto::ContentHash)>>,
    /// What the replicas here logged, per function.
    logs: Mutex<crate::common::logs::LogBook>,
    /// Owners of hosted functions, for checking logs queries.
    owners: Mutex<logs::Owners>,
    /// The local API's token and address, for [`guard`].
    guard: guard::Guard,
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
        let d = config.data_dir.clone();
        let token = blocking(move || guard::load_or_create_token(&d)).await??;
        // Tell the CLI (which knows only --api) where the token is.
        if let Err(e) = crate::local_api::register(api_addr.port(), &config.data_dir) {
            warn!(error = %e, file = %crate::local_api::registry_file(api_addr.port()).display(),
                "cannot record where the API token is; the CLI then needs ORB_CLIENT_DATA_DIR");
        }
        if !api_addr.ip().is_loopback() {
            warn!(api = %api_addr, "the local API listens beyond this machine: every request but the dashboard page needs the token in {}", guard::token_path(&config.data_dir).display());
        }

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
        let paths = Arc::new(paths::Paths::new(
            endpoint.clone(),
            keypair.clone(),
            serve_tx,
        ));
        let stats = metrics::ClientStats::new(&paths.stats);
        let shared = Arc::new(Shared {
            paths,
            nat: Mutex::new(NatState {
                mapping: orb_nat::NatMapping::Unknown,
                reachable: None,
                local: (!quic_addr.ip().is_unspecified()).then_some(quic_addr),
            }),
            promoted: Arc::new(tokio::sync::Mutex::new(None)),
            trees: bundles::TreeCache::new(config.max_cached_trees),
            id: keypair.id(),
            keypair: keypair.clone(),
            stats,
            config,
            quic_addr,
            store,
            runtime,
            endpoint: endpoint.clone(),
            supers: Mutex::new(supers),
            hosted: RwLock::new(hosted.into_iter().map(|h| (h.name.clone(), h)).collect()),
            started: Instant::now(),
            overlay,
            retired: Mutex::new(Default::default()),
            logs: Mutex::new(Default::default()),
            owners: Mutex::new(Default::default()),
            guard: guard::Guard::new(token, api_addr),
        });

        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        for peer in peers {
            tasks.spawn(links::super_link(shared.clone(), peer, shutdown_rx.clone()));
        }
        tasks.spawn(requests::accept_loop(
            shared.clone(),
            endpoint.clone(),
            shutdown_rx.clone(),
        ));
        tasks.spawn(records::refresh_records(
            shared.clone(),
            shutdown_rx.clone(),
        ));
        tasks.spawn(requests::serve_peers(
            shared.clone(),
            serve_rx,
            shutdown_rx.clone(),
        ));
        tasks.spawn(discovery::discovery(shared.clone(), shutdown_rx.clone()));
        tasks.spawn(api::serve_api(shared.clone(), listener, shutdown_rx));
        info!(id = %shared.id, api = %api_addr, quic = %quic_addr, "client daemon started");
        Ok(ClientHandle {
            id: shared.id,
            api_addr,
            quic_addr,
            token_path: guard::token_path(&shared.config.data_dir),
            shutdown,
            tasks,
            endpoint,
            promoted: shared.promoted.clone(),
        })
    }
}

pub(super) fn hosted_list(shared: &Shared) -> Vec<HostedReplica> {
    let hosted = read_lock(&shared.hosted);
    hosted
        .values()
        .map(|h| HostedReplica {
            name: h.name.clone(),
            hash: h.hash,
        })
        .collect()
}

/// Whether `id` is one of this node's home supers.
pub(super) fn is_home_super(shared: &Shared, id: &OrbId) -> bool {
    lock(&shared.supers).contains_key(id)
}

/// This node's home supers, as written in its provider records.
pub(super) fn home_supers(shared: &Shared) -> Vec<PeerAddr> {
    lock(&shared.supers)
        .values()
        .filter(|l| l.conn.as_ref().is_some_and(|c| !c.is_closed()))
        .map(|l| l.peer)
        .collect()
}

/// Live links to home supers.
pub(super) fn home_links(shared: &Shared) -> Vec<Connection> {
    lock(&shared.supers)
        .values()
        .filter_map(|l| l.conn.clone())
        .filter(|c| !c.is_closed())
        .collect()
}

/// The connected super with the lowest round-trip time.
pub(super) fn best_super(shared: &Shared) -> Result<Connection, NodeError> {
    let supers = lock(&shared.supers);
    supers
        .values()
        .filter_map(|l| l.conn.clone())
        .filter(|c| !c.is_closed())
        .min_by_key(|c| c.rtt())
        .ok_or(NodeError::NoSuper)
}

pub(crate) use deploy::deploy_params;
