//! The client table: a client's first request is `Hello`; its connection
//! is then kept as the tunnel the super sends `Place` and `Run` down.
//! Clients are pinged every second and given up after missed pings.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use orb_proto::wire::{Hello, Request, Response, Role, Welcome};
use orb_proto::{ContentHash, OrbId, PeerAddr};
use orb_transport::{Connection, Endpoint};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::{Shared, placement, requests};
use crate::common::util::{accepted, lock, now_ms, serve_each};
use crate::policy::health::Health;

/// How long a new connection may take to say Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How often every client is pinged.
const HEALTH_EVERY: Duration = Duration::from_secs(1);
/// How long a ping may take before it counts as missed.
const HEALTH_TIMEOUT: Duration = Duration::from_millis(1500);

/// A connected client as the super sees it.
#[derive(Clone)]
pub(super) struct ClientEntry {
    pub conn: Connection,
    pub generation: u64,
    pub capacity: u32,
    pub in_flight: Arc<AtomicU32>,
    pub served: Arc<AtomicU64>,
    pub hosted: HashSet<ContentHash>,
    pub observed: SocketAddr,
    pub agent: String,
    pub connected_ms: u64,
}

pub(super) async fn accept_loop(
    shared: Arc<Shared>,
    endpoint: Endpoint,
    shutdown: watch::Receiver<bool>,
) {
    serve_each(
        accepted(endpoint),
        |conn| Some(serve_connection(shared.clone(), conn)),
        shutdown,
    )
    .await;
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
        tokio::spawn(async move { requests::handle(s, from, first).await });
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
        register(&shared, &conn, &hello, generation);
        let s = shared.clone();
        tokio::spawn(async move { placement::rebalance(&s).await });
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
            placement::rebalance(&shared).await;
        }
    }
}

fn register(shared: &Shared, conn: &Connection, hello: &Hello, generation: u64) {
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
/// answers `NotFound` to its next call and is dropped then (routing), and
/// a stale Hello overtaking a newer placement on another stream must not
/// erase it.
pub(super) fn learn_hosted(shared: &Shared, client: OrbId, hello: &Hello) {
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

/// Ping every client each second and close the tunnel of one that missed
/// too many (see [`crate::policy::health`]): its replicas leave the set and
/// are placed elsewhere.
pub(super) async fn health(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut tracker: Health<(OrbId, u64)> = Health::default();
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
        let mut results = Vec::new();
        let mut conns = std::collections::HashMap::new();
        while let Some(Ok((id, generation, conn, ok))) = probes.join_next().await {
            results.push(((id, generation), ok));
            conns.insert((id, generation), conn);
        }
        for key in tracker.round(&results) {
            warn!(client = %key.0.short(), missed = crate::policy::health::MISSES, "client stopped answering pings; closing its tunnel");
            shared.stats.health_closed.inc();
            if let Some(conn) = conns.get(&key) {
                conn.close("health check failed");
            }
        }
    }
}

/// The tunnel of a client connected here, if it is.
pub(super) fn client_conn(shared: &Shared, id: &OrbId) -> Option<Connection> {
    lock(&shared.clients)
        .get(id)
        .map(|c| c.conn.clone())
        .filter(|c| !c.is_closed())
}

/// Round trip to a connected client (zero if unknown).
pub(super) fn caller_rtt(shared: &Shared, id: &OrbId) -> Duration {
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
                tokio::spawn(async move { requests::handle(s, from, incoming).await });
            }
            Err(e) => {
                debug!(peer = %from.id.short(), error = %e, "connection closed");
                break;
            }
        }
    }
}
