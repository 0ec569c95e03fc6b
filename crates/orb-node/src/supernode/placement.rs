//! Putting replicas on clients: this super's own (ranked by
//! [`crate::policy::placement`]) and, for functions deployed here, other
//! supers' clients through `Place`; and removing them again.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use orb_proto::wire::{BundleRef, ErrorKind, Request, Response, WireError};
use orb_proto::{ContentHash, OrbId, PeerAddr};
use orb_store::FunctionRecord;
use orb_transport::Connection;
use tracing::{debug, info, warn};

use super::clients::ClientEntry;
use super::{Shared, bundles, deploy, forwarding, scaling};
use crate::common::util::{blocking, check_name, lock, read_lock, write_lock};
use crate::dht;
use crate::policy::placement::{self as policy, Candidate};

/// How long placing a replica (fetch + compile) may take.
const PLACE_TIMEOUT: Duration = Duration::from_secs(120);

/// This super's clients that could host `hash`, best first, with their
/// tunnels.
fn ranked_candidates(
    clients: &HashMap<OrbId, ClientEntry>,
    hash: &ContentHash,
    first: Option<OrbId>,
) -> Vec<(OrbId, Connection)> {
    let candidates: Vec<Candidate> = clients
        .iter()
        .map(|(id, c)| Candidate {
            id: *id,
            capacity: c.capacity,
            hosted: c.hosted.len(),
            in_flight: c.in_flight.load(Ordering::Relaxed),
            network: c.observed.ip(),
            holds: c.hosted.contains(hash),
        })
        .collect();
    policy::rank(&candidates, first)
        .into_iter()
        .filter_map(|id| clients.get(&id).map(|c| (id, c.conn.clone())))
        .collect()
}

/// Ask client `id` to fetch, verify and prepare `name`/`hash`.
pub(super) async fn place_on(
    shared: &Arc<Shared>,
    (name, hash, files): (&str, ContentHash, Option<BundleRef>),
    id: OrbId,
    conn: &Connection,
) -> bool {
    let req = Request::Place {
        name: name.to_string(),
        hash,
        files,
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
    forwarding::reachable_first(shared, &mut supers);
    for sup in supers.into_iter().filter(|s| s.id != shared.id) {
        if placed.len() >= need {
            break;
        }
        let Ok(conn) = forwarding::peer_conn(shared, sup).await else {
            forwarding::mark_unreachable(shared, sup.id);
            continue;
        };
        let req = Request::Place {
            name: f.name.clone(),
            hash: f.hash,
            files: f.settings.files,
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
                forwarding::forget_peer(shared, sup.id);
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
pub(super) async fn place_for_peer(
    shared: &Arc<Shared>,
    from: PeerAddr,
    name: &str,
    hash: ContentHash,
    files: Option<BundleRef>,
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
    deploy::ensure_module_from(shared, from, hash).await?;
    if let Some(b) = files {
        bundles::ensure_from(shared, from, b).await?;
    }
    for (id, conn) in candidates {
        if place_on(shared, (name, hash, files), id, &conn).await {
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
pub(super) async fn place(
    shared: &Arc<Shared>,
    f: &FunctionRecord,
    first: Option<OrbId>,
) -> Vec<OrbId> {
    let want = scaling::wanted(shared, f) as usize;
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
    let local_upto = policy::local_target(want, remote.len(), others_known);
    for (id, conn) in place_locally(&mut holders, local_upto) {
        if place_on(shared, (&f.name, f.hash, f.settings.files), id, &conn).await {
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
            if place_on(shared, (&f.name, f.hash, f.settings.files), id, &conn).await {
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
pub(super) async fn rebalance(shared: &Arc<Shared>) {
    let functions: Vec<FunctionRecord> = read_lock(&shared.functions).values().cloned().collect();
    for f in functions {
        let live = {
            let clients = lock(&shared.clients);
            clients
                .values()
                .filter(|c| c.hosted.contains(&f.hash))
                .count()
        };
        if live < scaling::wanted(shared, &f) as usize {
            place(shared, &f, None).await;
        }
    }
}

/// Ask `node` to stop hosting `f`, and stop routing to it.
pub(super) async fn unplace(shared: &Arc<Shared>, f: &FunctionRecord, node: OrbId) {
    unplace_replica(shared, &f.name, f.hash, node).await;
}

/// Ask `node` to stop hosting `name` at `hash`, and stop routing to it.
pub(super) async fn unplace_replica(
    shared: &Arc<Shared>,
    name: &str,
    hash: ContentHash,
    node: OrbId,
) {
    let conn = {
        let mut clients = lock(&shared.clients);
        clients.get_mut(&node).map(|c| {
            c.hosted.remove(&hash);
            c.conn.clone()
        })
    };
    let Some(conn) = conn else { return };
    let req = Request::Unplace {
        name: name.to_string(),
        hash,
    };
    match tokio::time::timeout(PLACE_TIMEOUT, conn.request(&req, &[], 1024)).await {
        Ok(Ok((Response::Placed, _))) => {
            info!(function = %name, node = %node.short(), "replica removed")
        }
        Ok(Ok((other, _))) => {
            warn!(function = %name, node = %node.short(), answer = ?other, "unplace refused")
        }
        Ok(Err(e)) => warn!(function = %name, node = %node.short(), error = %e, "unplace failed"),
        Err(_) => warn!(function = %name, node = %node.short(), "unplace timed out"),
    }
}
