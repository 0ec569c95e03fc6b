//! Address discovery: classify the NAT from what the supers observe, ask
//! for a dial-back, publish the signed node record, and start the super
//! role next to the client when it is public (`--promote auto`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use orb_proto::PeerAddr;
use orb_proto::wire::{Request, Response};
use orb_transport::Connection;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::{Shared, links};
use crate::SuperNode;
use crate::common::util::lock;
use crate::dht;

/// This node's addresses: as its supers observe them, and its own.
pub(super) fn my_addrs(shared: &Shared) -> orb_nat::NodeAddrs {
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

/// The interface address this host uses to reach `to` (no packet is sent:
/// connecting a UDP socket only picks a route).
pub(super) fn route_addr(to: SocketAddr) -> Option<std::net::IpAddr> {
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
pub(super) const DISCOVERY_EVERY: Duration = Duration::from_secs(60);

/// Address discovery: classify the NAT from what the supers observed, ask
/// one for a dial-back, publish the node record, and start the super role
/// when promotion is on and the node is public.
pub(super) async fn discovery(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
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
            links::adopt_super(&shared, &shutdown).await;
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

/// Start the super role next to the client (once): DHT server, relay and
/// gateway, bootstrapped from the home supers. It has its own identity and
/// store under `<data-dir>/super`, listens on the next port, and serves
/// its gateway on port 7780 (or any free port when that is taken).
pub(super) async fn promote(shared: &Arc<Shared>, local: SocketAddr, bootstrap: Vec<PeerAddr>) {
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
    let started = match SuperNode::start(cfg.clone()).await {
        Ok(h) => Ok(h),
        Err(_) => {
            cfg.http = SocketAddr::new(local.ip(), 0);
            SuperNode::start(cfg).await
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
