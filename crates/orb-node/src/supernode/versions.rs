//! Versions, rollback and removal of the functions deployed through this
//! super, and keeping every super's replicas in line with the name records
//! in the DHT (the owner's word on which version is current).
//!
//! * `versions`, `rollback` and `remove` serve the owner (the peer of the
//!   request must be the record's owner). A rollback makes a kept version
//!   current again as a new version: its replicas are placed first, then
//!   the record switches in one step, so this super's gateway goes from the
//!   old version to the new one between two calls; the owner then signs the
//!   new name record, which the other gateways resolve.
//! * Once the DHT holds the new record, [`retire`] stops the replicas of
//!   the old module here and asks the supers of the other replicas to stop
//!   theirs. They do not take this super's word for it: a super stops a
//!   replica for another super ([`unplace_for_peer`]) only when the name
//!   record in the DHT no longer points at it.
//! * [`reconcile_loop`] forgets a record here once the owner removed the
//!   function or deployed a newer version through another super, so this
//!   super's gateway never serves a version the owner moved away from.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use orb_proto::wire::{ErrorKind, Request, Response, VersionInfo, WireError};
use orb_proto::{ContentHash, OrbId, PeerAddr};
use orb_store::{FunctionRecord, FunctionVersion};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::{Shared, forwarding, placement};
use crate::common::util::{blocking, check_name, lock, now_ms, read_lock, write_lock};
use crate::dht;
use crate::error::NodeError;
use crate::policy::versions::{self as policy, MAX_VERSIONS, Published, Reconcile};

/// How long [`retire`] waits for the owner's new name record.
const RETIRE_WAIT: Duration = Duration::from_secs(60);
/// How often [`reconcile_loop`] runs.
const RECONCILE_EVERY: Duration = Duration::from_secs(10);
/// Records checked against the DHT per round, at most.
const RECONCILE_BATCH: usize = 32;
/// Other supers asked to stop replicas of one module, at most.
const MAX_PEER_SUPERS: usize = 16;
/// How long another super may take to stop its replicas.
const PEER_TIMEOUT: Duration = Duration::from_secs(15);

/// The refusal for a request about a function this super does not hold.
fn not_here(name: &str) -> WireError {
    WireError::new(
        ErrorKind::NotFound,
        format!(
            "function {name:?} is not deployed through this super (never deployed, removed, or deployed through another super)"
        ),
    )
}

/// The refusal for a peer that is not the owner.
fn not_owner(name: &str, owner: OrbId, what: &str) -> WireError {
    WireError::new(
        ErrorKind::Forbidden,
        format!("function {name:?} belongs to node {owner}; only its owner can {what} it"),
    )
}

/// The owner's record of `name` here.
fn owned_record(
    shared: &Shared,
    peer: OrbId,
    name: &str,
    what: &str,
) -> Result<FunctionRecord, WireError> {
    check_name(name)?;
    let rec = read_lock(&shared.functions)
        .get(name)
        .cloned()
        .ok_or_else(|| not_here(name))?;
    if rec.owner != peer {
        return Err(not_owner(name, rec.owner, what));
    }
    Ok(rec)
}

fn info(v: &FunctionVersion) -> VersionInfo {
    VersionInfo {
        version: v.version,
        hash: v.hash,
        size: v.size,
        settings: v.settings.clone(),
        created_ms: v.created_ms,
    }
}

/// `Versions`: the versions kept, for the owner.
pub(super) fn versions(shared: &Shared, peer: OrbId, name: &str) -> Result<Response, WireError> {
    let rec = owned_record(shared, peer, name, "list the versions of")?;
    Ok(Response::Versions {
        current: rec.version,
        versions: rec.history.iter().map(info).collect(),
    })
}

/// The newest version of `name` the DHT knows from `owner`.
async fn published_version(shared: &Shared, name: &str, owner: OrbId) -> Option<u64> {
    match dht::name_record(&shared.overlay, name).await {
        Ok(Some((_, n))) if n.owner.id() == owner => Some(n.version),
        _ => None,
    }
}

/// `Rollback`: make a kept version current again, as a new version.
pub(super) async fn rollback(
    shared: &Arc<Shared>,
    peer: OrbId,
    name: &str,
    to: Option<u64>,
) -> Result<Response, WireError> {
    let rec = owned_record(shared, peer, name, "roll back")?;
    let target = policy::rollback_target(&rec.history, rec.version, to)
        .map_err(|e| {
            let kind = match e {
                policy::RollbackError::NotKept { .. } => ErrorKind::NotFound,
                _ => ErrorKind::BadRequest,
            };
            WireError::new(kind, format!("cannot roll back {name:?}: {e}"))
        })?
        .clone();
    let store = shared.store.clone();
    let have = blocking(move || store.has_module(&target.hash))
        .await
        .map_err(|e| e.to_wire())?
        .map_err(|e| NodeError::from(e).to_wire())?;
    if !have {
        return Err(WireError::new(
            ErrorKind::Internal,
            format!(
                "the module of version {} is no longer stored on this super",
                target.version
            ),
        ));
    }
    let published = published_version(shared, name, peer).await;
    let now = now_ms();
    let version = policy::next_version(Some(rec.version), published);
    let mut next = FunctionRecord {
        hash: target.hash,
        size: target.size,
        settings: target.settings.clone(),
        updated_ms: now,
        placements: Vec::new(),
        version,
        ..rec.clone()
    };
    let dropped = policy::push(
        &mut next.history,
        FunctionVersion {
            version,
            created_ms: now,
            ..target
        },
        MAX_VERSIONS,
    );
    // Replicas first: the gateway switches only once they are ready. A
    // client this super still counts as holding the old module may have
    // replaced it under this name since (a client holds one module per
    // name); placing it again is cheap (the module is kept) and makes sure.
    let counted: Vec<(OrbId, orb_transport::Connection)> = lock(&shared.clients)
        .iter()
        .filter(|(_, c)| c.hosted.contains(&target.hash))
        .map(|(id, c)| (*id, c.conn.clone()))
        .collect();
    for (id, conn) in counted {
        placement::place_on(shared, (name, next.hash, next.settings.files), id, &conn).await;
    }
    let holders = placement::place(shared, &next, None).await;
    next.placements = holders.clone();
    {
        let _change = shared.changes.lock().await;
        let still = read_lock(&shared.functions)
            .get(name)
            .is_some_and(|r| r.version == rec.version);
        if !still {
            return Err(WireError::new(
                ErrorKind::Unavailable,
                format!("{name:?} changed during the rollback (another deploy?); try again"),
            ));
        }
        let store = shared.store.clone();
        let r = next.clone();
        blocking(move || store.put_function(&r))
            .await
            .map_err(|e| e.to_wire())?
            .map_err(|e| NodeError::from(e).to_wire())?;
        write_lock(&shared.functions).insert(name.to_string(), next.clone());
    }
    info!(function = %name, version, to = target.version, hash = %target.hash.short(), "rolled back");
    drop_unused(shared, dropped.iter().map(|v| v.hash).collect()).await;
    if rec.hash != next.hash {
        tokio::spawn(retire(shared.clone(), name.to_string(), rec.hash, version));
    }
    let current = next
        .history
        .last()
        .map(info)
        .unwrap_or_else(|| VersionInfo {
            version,
            hash: next.hash,
            size: next.size,
            settings: next.settings.clone(),
            created_ms: now,
        });
    Ok(Response::RolledBack {
        current: Box::new(current),
        placed_on: holders,
    })
}

/// `Remove` from the owner, who has published its tombstone already: drop
/// the record and the modules nothing else here uses, and stop the
/// replicas here and under the other supers.
pub(super) async fn remove(
    shared: &Arc<Shared>,
    peer: OrbId,
    name: &str,
) -> Result<Response, WireError> {
    check_name(name)?;
    let local = read_lock(&shared.functions).get(name).cloned();
    let hash = match &local {
        Some(rec) if rec.owner != peer => return Err(not_owner(name, rec.owner, "remove")),
        Some(rec) => rec.hash,
        // Not deployed through this super: the owner may still remove it
        // here, for the replicas of this super and the others.
        None => match dht::name_record(&shared.overlay, name).await? {
            Some((_, n)) if n.owner.id() != peer => {
                return Err(not_owner(name, n.owner.id(), "remove"));
            }
            Some((_, n)) => n.hash,
            None => {
                return Err(WireError::new(
                    ErrorKind::NotFound,
                    format!("no function named {name:?}"),
                ));
            }
        },
    };
    if let Some(rec) = &local {
        forget(shared, rec).await?;
    }
    let mut stopped = unplace_own(shared, name, hash).await;
    stopped += unplace_elsewhere(shared, name, hash).await;
    info!(function = %name, replicas = stopped, "function removed");
    Ok(Response::Removed {
        name: name.to_string(),
        replicas: stopped,
    })
}

/// Drop `rec` here: the record, its autoscaling state, and the modules of
/// its versions that nothing else here uses.
async fn forget(shared: &Arc<Shared>, rec: &FunctionRecord) -> Result<(), WireError> {
    {
        let _change = shared.changes.lock().await;
        let store = shared.store.clone();
        let name = rec.name.clone();
        blocking(move || store.remove_function(&name))
            .await
            .map_err(|e| e.to_wire())?
            .map_err(|e| NodeError::from(e).to_wire())?;
        write_lock(&shared.functions).remove(&rec.name);
    }
    lock(&shared.scale).remove(&rec.name);
    drop_unused(shared, record_hashes(rec)).await;
    Ok(())
}

/// Every content hash a record refers to: its modules and file bundles,
/// current and kept.
fn record_hashes(rec: &FunctionRecord) -> Vec<ContentHash> {
    let mut out = vec![rec.hash];
    out.extend(rec.settings.files.map(|b| b.hash));
    for v in &rec.history {
        out.push(v.hash);
        out.extend(v.settings.files.map(|b| b.hash));
    }
    out
}

/// Delete the stored modules (and bundles) among `hashes` that no record
/// here refers to any more.
pub(super) async fn drop_unused(shared: &Shared, hashes: Vec<ContentHash>) {
    let in_use: HashSet<ContentHash> = read_lock(&shared.functions)
        .values()
        .flat_map(record_hashes)
        .collect();
    let gone: Vec<ContentHash> = hashes
        .into_iter()
        .filter(|h| !in_use.contains(h))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    if gone.is_empty() {
        return;
    }
    let store = shared.store.clone();
    let n = gone.len();
    match blocking(move || {
        gone.iter()
            .try_for_each(|h| store.remove_module(h).map(|_| ()))
    })
    .await
    {
        Ok(Ok(())) => debug!(modules = n, "unused modules dropped"),
        Ok(Err(e)) => warn!(error = %e, "could not drop unused modules"),
        Err(e) => warn!(error = %e, "could not drop unused modules"),
    }
}

/// Stop this super's clients' replicas of `name` at `hash`, unless another
/// function here runs the same module (a client's replicas are tracked by
/// module). Returns how many were asked.
async fn unplace_own(shared: &Arc<Shared>, name: &str, hash: ContentHash) -> u32 {
    let shared_module = read_lock(&shared.functions)
        .values()
        .any(|f| f.name != name && f.hash == hash);
    if shared_module {
        return 0;
    }
    let holders: Vec<OrbId> = lock(&shared.clients)
        .iter()
        .filter(|(_, c)| c.hosted.contains(&hash))
        .map(|(id, _)| *id)
        .collect();
    let mut set = JoinSet::new();
    for node in &holders {
        let (s, n, node) = (shared.clone(), name.to_string(), *node);
        set.spawn(async move { placement::unplace_replica(&s, &n, hash, node).await });
    }
    while set.join_next().await.is_some() {}
    holders.len() as u32
}

/// Ask the home supers of the other replicas of `hash` (from their
/// provider records) to stop them. Each checks the DHT itself. Returns how
/// many replicas they stopped.
async fn unplace_elsewhere(shared: &Arc<Shared>, name: &str, hash: ContentHash) -> u32 {
    let providers = dht::providers(&shared.overlay, &hash)
        .await
        .unwrap_or_default();
    let mut supers: Vec<PeerAddr> = Vec::new();
    for p in &providers {
        for s in &p.supers {
            if s.id != shared.id
                && !supers.iter().any(|x| x.id == s.id)
                && supers.len() < MAX_PEER_SUPERS
            {
                supers.push(*s);
            }
        }
    }
    let mut set = JoinSet::new();
    for sup in supers {
        let (s, name) = (shared.clone(), name.to_string());
        set.spawn(async move {
            let conn = forwarding::peer_conn(&s, sup).await.ok()?;
            let req = Request::Unplace { name, hash };
            match tokio::time::timeout(PEER_TIMEOUT, conn.request(&req, &[], 1024)).await {
                Ok(Ok((Response::Removed { replicas, .. }, _))) => Some(replicas),
                other => {
                    debug!(via = %sup.id.short(), answer = ?other.map(|r| r.map(|(r, _)| r)), "other super did not stop its replicas");
                    None
                }
            }
        });
    }
    let mut stopped = 0;
    while let Some(r) = set.join_next().await {
        stopped += r.ok().flatten().unwrap_or(0);
    }
    stopped
}

/// Another super (or anyone) asks this one to stop its clients' replicas
/// of `name` at `hash`. Done only if the name record in the DHT no longer
/// points at `hash` (a newer version, or a tombstone): nobody can stop the
/// replicas of a function its owner still runs there.
pub(super) async fn unplace_for_peer(
    shared: &Arc<Shared>,
    from: OrbId,
    name: &str,
    hash: ContentHash,
) -> Result<Response, WireError> {
    check_name(name)?;
    if let Some((_, n)) = dht::name_record(&shared.overlay, name).await?
        && !n.removed
        && n.hash == hash
    {
        return Err(WireError::new(
            ErrorKind::Forbidden,
            format!("{name:?} still runs module {hash}; its replicas stay"),
        ));
    }
    let stopped = unplace_own(shared, name, hash).await;
    debug!(function = %name, asked_by = %from.short(), replicas = stopped, "replicas of an old version stopped");
    // A module fetched only to place replicas for another super goes too.
    drop_unused(shared, vec![hash]).await;
    Ok(Response::Removed {
        name: name.to_string(),
        replicas: stopped,
    })
}

/// After a deploy or rollback replaced `old` by version `version` of
/// `name`: once the owner's new name record is in the DHT, stop the
/// replicas of `old` here and under the other supers. Until then (or if it
/// never comes) they stay: other gateways still resolve the old record.
pub(super) async fn retire(shared: Arc<Shared>, name: String, old: ContentHash, version: u64) {
    let deadline = tokio::time::Instant::now() + RETIRE_WAIT;
    loop {
        if let Ok(Some((_, n))) = dht::name_record(&shared.overlay, &name).await
            && n.version >= version
        {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            debug!(function = %name, version, "new name record not seen; old replicas kept");
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if read_lock(&shared.functions)
        .get(&name)
        .is_some_and(|f| f.hash == old)
    {
        // Rolled back to it meanwhile.
        return;
    }
    let here = unplace_own(&shared, &name, old).await;
    let elsewhere = unplace_elsewhere(&shared, &name, old).await;
    info!(function = %name, version, hash = %old.short(), replicas = here + elsewhere, "replicas of the previous version stopped");
}

/// Every [`RECONCILE_EVERY`], compare a batch of this super's records with
/// the name records in the DHT ([`policy::reconcile`]) and forget the ones
/// the owner moved away from.
pub(super) async fn reconcile_loop(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut cursor: Option<String> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(RECONCILE_EVERY) => {}
            _ = shutdown.changed() => return,
        }
        let mut names: Vec<String> = read_lock(&shared.functions).keys().cloned().collect();
        names.sort();
        let start = cursor
            .as_ref()
            .map_or(0, |c| names.partition_point(|n| n <= c));
        let batch: Vec<String> = names
            .iter()
            .cycle()
            .skip(start)
            .take(RECONCILE_BATCH.min(names.len()))
            .cloned()
            .collect();
        cursor = batch.last().cloned();
        for name in batch {
            let Some(rec) = read_lock(&shared.functions).get(&name).cloned() else {
                continue;
            };
            let published = match dht::name_record(&shared.overlay, &name).await {
                Ok(Some((_, n))) => Some(Published {
                    version: n.version,
                    hash: n.hash,
                    removed: n.removed,
                    same_owner: n.owner.id() == rec.owner,
                }),
                _ => None,
            };
            if let Reconcile::Forget { unplace } =
                policy::reconcile(rec.version, rec.hash, published)
            {
                // Only if nothing changed here meanwhile.
                if read_lock(&shared.functions)
                    .get(&name)
                    .is_none_or(|r| r.version != rec.version)
                {
                    continue;
                }
                info!(function = %name, version = rec.version, "the owner moved on (removed, or redeployed through another super); forgetting the record here");
                if let Err(e) = forget(&shared, &rec).await {
                    warn!(function = %name, error = %e.message, "could not forget the record");
                    continue;
                }
                if unplace {
                    unplace_own(&shared, &name, rec.hash).await;
                }
            }
        }
    }
}
