//! Gathering a function's logs for its owner: from this super's clients
//! that hold a replica and, for the owner's own request, from the supers of
//! the other replicas.
//!
//! The query is signed by the owner (see [`orb_proto::logs`]). This super
//! checks the signature and that the signer owns the name; the owner's own
//! super also checks that the query came over the owner's own connection.
//! Every node it passes the query to checks it again, so none of them has
//! to trust this super.

use std::sync::Arc;
use std::time::Duration;

use orb_proto::logs::{LogEntry, SignedLogsQuery};
use orb_proto::wire::{ErrorKind, Request, Response, WireError};
use orb_proto::{OrbId, PeerAddr};
use orb_transport::Connection;
use tokio::task::JoinSet;
use tracing::debug;

use super::{Shared, forwarding};
use crate::common::logs::merge;
use crate::common::util::{check_name, lock, now_ms, read_lock};
use crate::dht;

/// Replicas of this super asked per query, at most.
const MAX_REPLICAS_ASKED: usize = 64;
/// Other supers asked per query, at most.
const MAX_SUPERS_ASKED: usize = 16;
/// How long one node may take to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// Answer `Logs` from `from`.
pub(super) async fn logs(
    shared: &Arc<Shared>,
    from: PeerAddr,
    query: SignedLogsQuery,
    fan_out: bool,
) -> Result<Response, WireError> {
    let signer = query
        .verify(now_ms())
        .map_err(|e| WireError::new(ErrorKind::Forbidden, e.to_string()))?;
    let name = query.query.name.clone();
    check_name(&name)?;
    // Only the owner's own request fans out (no amplification by others).
    let own_request = signer == from.id;
    let local = read_lock(&shared.functions)
        .get(&name)
        .map(|f| (f.owner, f.hash));
    let (owner, hash) = match local {
        Some(x) => x,
        None => match dht::live_name(&shared.overlay, &name).await? {
            Some((_, n)) => (n.owner.id(), n.hash),
            None => {
                return Err(WireError::new(
                    ErrorKind::NotFound,
                    format!("no function named {name:?}"),
                ));
            }
        },
    };
    if owner != signer {
        return Err(WireError::new(
            ErrorKind::Forbidden,
            format!("the logs of {name:?} are for its owner, node {owner}, only"),
        ));
    }
    let forward = Request::Logs {
        query: Box::new(query),
        fan_out: false,
    };
    let targets: Vec<(OrbId, Connection)> = lock(&shared.clients)
        .iter()
        .filter(|(_, c)| c.hosted.contains(&hash))
        .take(MAX_REPLICAS_ASKED)
        .map(|(id, c)| (*id, c.conn.clone()))
        .collect();
    let mut supers: Vec<PeerAddr> = Vec::new();
    if fan_out && own_request {
        for p in dht::providers(&shared.overlay, &hash)
            .await
            .unwrap_or_default()
        {
            for s in p.supers {
                if s.id != shared.id
                    && !supers.iter().any(|x| x.id == s.id)
                    && supers.len() < MAX_SUPERS_ASKED
                {
                    supers.push(s);
                }
            }
        }
    }
    let mut set: JoinSet<Vec<LogEntry>> = JoinSet::new();
    for (id, conn) in targets {
        let req = forward.clone();
        set.spawn(async move { ask(&conn, &req, id).await });
    }
    for sup in supers {
        let (s, req) = (shared.clone(), forward.clone());
        set.spawn(async move {
            match forwarding::peer_conn(&s, sup).await {
                Ok(conn) => ask(&conn, &req, sup.id).await,
                Err(e) => {
                    debug!(via = %sup.id.short(), error = %e, "logs: super unreachable");
                    Vec::new()
                }
            }
        });
    }
    let mut answers = Vec::new();
    while let Some(r) = set.join_next().await {
        answers.push(r.unwrap_or_default());
    }
    Ok(Response::Logs(merge(answers)))
}

/// One node's entries (none if it does not answer in time).
async fn ask(conn: &Connection, req: &Request, id: OrbId) -> Vec<LogEntry> {
    match tokio::time::timeout(
        ASK_TIMEOUT,
        conn.request(req, &[], orb_proto::limits::MAX_FRAME),
    )
    .await
    {
        Ok(Ok((Response::Logs(entries), _))) => entries,
        other => {
            debug!(node = %id.short(), answer = ?other.map(|r| r.map(|(r, _)| r)), "logs: no entries from node");
            Vec::new()
        }
    }
}
