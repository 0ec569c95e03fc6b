//! The super's side of the DHT: joining it, saving its state so a restart
//! needs no `--bootstrap`, and limiting how fast one peer may STORE.

use std::sync::Arc;
use std::time::{Duration, Instant};

use orb_proto::PeerAddr;
use orb_proto::dht::{DhtMessage, DhtRequest, DhtResponse};
use orb_proto::wire::Response;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::Shared;
use crate::common::util::{blocking, lock};
use crate::dht;

/// STOREs a peer may send per second, and in a burst.
const STORE_RATE: f64 = 50.0;
const STORE_BURST: f64 = 500.0;
/// Peers with a STORE rate limiter, at most.
const MAX_STORE_LIMITERS: usize = 4096;
/// How often the DHT state is checked and, when it changed, saved.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(5);

/// Per-peer token buckets for DHT STOREs: one peer cannot fill the record
/// store or keep the actor busy (the overlay bounds totals and per
/// publisher on top of this).
pub(super) fn store_limiters() -> orb_nat::PeerLimiter<orb_proto::OrbId> {
    orb_nat::PeerLimiter::new(STORE_RATE, STORE_BURST, MAX_STORE_LIMITERS)
}

/// Answer a DHT request from a peer, refusing STORE floods.
pub(super) async fn dht_request(shared: &Shared, from: PeerAddr, msg: DhtMessage) -> Response {
    if matches!(msg.body, DhtRequest::Store { .. })
        && !lock(&shared.store_limiters).allow(from.id, Instant::now())
    {
        shared.stats.dht_stores_throttled.inc();
        debug!(peer = %from.id.short(), "DHT STORE flood: refused");
        return Response::Dht(DhtResponse::Refused(
            "too many STOREs from this peer; slow down".into(),
        ));
    }
    Response::Dht(shared.overlay.handle_request(from, msg).await)
}

/// Join the DHT (through `--bootstrap`, else the peers remembered in the
/// store), retry while the routing table is empty, and save the overlay's
/// state every [`SNAPSHOT_EVERY`] and once more at shutdown.
pub(super) async fn maintenance(
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
