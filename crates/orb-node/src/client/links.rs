//! Links to the home supers: dial, say Hello, keep the connection up
//! (redial with backoff and jitter), remember the super, and adopt another
//! one from the DHT when fewer than two are alive.

use std::sync::Arc;
use std::time::Duration;

use orb_proto::PeerAddr;
use orb_proto::wire::{Hello, Request, Response, Role, Welcome};
use orb_store::PeerEntry;
use orb_transport::Connection;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::{Shared, SuperLink, hosted_list, requests};
use crate::common::util::{blocking, lock, now_ms};
use crate::error::NodeError;

/// First redial delay after a link drops.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
/// Longest redial delay.
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Keep one home-super link up for the daemon's lifetime.
pub(super) async fn super_link(
    shared: Arc<Shared>,
    peer: PeerAddr,
    mut shutdown: watch::Receiver<bool>,
) {
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
                    reason = requests::serve_super(shared.clone(), conn.clone()) => {
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
pub(super) fn hello(shared: &Shared) -> Request {
    Request::Hello(Hello {
        role: Role::Client,
        version: orb_proto::wire::PROTOCOL_VERSION,
        capacity: u32::try_from(shared.runtime.capacity()).unwrap_or(u32::MAX),
        listen_addrs: vec![shared.quic_addr],
        hosted: hosted_list(shared),
        agent: crate::AGENT.to_string(),
    })
}

pub(super) async fn connect_super(
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

/// Home supers a client links to at most (given, remembered and adopted).
pub(super) const MAX_HOME_SUPERS: usize = 8;

/// With fewer than two live home supers, adopt another super from the DHT
/// (the ones closest to this node's ID), so one super dying never leaves
/// the node unreachable for long.
pub(super) async fn adopt_super(shared: &Arc<Shared>, shutdown: &watch::Receiver<bool>) {
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
