//! Handing a call to another super: the home super of a replica found in
//! the DHT, at most once per call (the forwarded call carries a header that
//! forbids a second hop), and never to a second super once the first may
//! have started it. Connections to other supers are cached and bounded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use orb_proto::wire::{CallMeta, ErrorKind, Request, Response, RunOutcome, WireError};
use orb_proto::{OrbId, PeerAddr};
use orb_store::FunctionRecord;
use orb_transport::Connection;

use super::Shared;
use crate::common::util::{lock, max_call_output, unexpected};
use crate::dht;
use crate::error::NodeError;
use crate::policy::routing::{self as policy, Attempt, Next};

/// Header a super adds when it forwards a call to another super, so the
/// receiver never forwards it again (no loops, at most one extra hop).
pub(super) const FORWARDED: &str = "x-orb-forwarded-by";
/// Connections to other supers kept for forwarding calls, at most.
const MAX_PEER_CONNS: usize = 256;
/// How long a super that could not be reached is asked only after the
/// others. A dead super costs a connection timeout (10 s) to whoever tries
/// it; without this, every call forwarded while it is down would pay that
/// before moving on to a live home super of the same replica.
pub(super) const UNREACHABLE_FOR: Duration = Duration::from_secs(30);
/// How long a forwarded call may take end to end.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(120);

/// Forward a call to the home supers of the function's providers (from the
/// DHT), nearest first, each at most once.
pub(super) async fn forward_to_providers(
    shared: &Arc<Shared>,
    f: &FunctionRecord,
    mut meta: CallMeta,
    input: Bytes,
) -> Result<(OrbId, RunOutcome, Bytes), WireError> {
    let providers = dht::providers(&shared.overlay, &f.hash).await?;
    let mut supers: Vec<PeerAddr> = Vec::new();
    for p in &providers {
        for s in &p.supers {
            if s.id != shared.id && !supers.iter().any(|x| x.id == s.id) {
                supers.push(*s);
            }
        }
    }
    if supers.is_empty() {
        return Err(WireError::new(
            ErrorKind::NotFound,
            format!("no provider of {:?} elsewhere in the network", f.name),
        ));
    }
    reachable_first(shared, &mut supers);
    meta.headers
        .push((FORWARDED.to_string(), shared.id.to_string()));
    let req = Request::Invoke {
        name: f.name.clone(),
        meta,
    };
    let max_out = max_call_output(&f.settings);
    let mut busy = 0usize;
    let mut last_error = None;
    for sup in &supers {
        let conn = match peer_conn(shared, *sup).await {
            Ok(c) => c,
            Err(e) => {
                mark_unreachable(shared, sup.id);
                last_error = Some(WireError::new(
                    ErrorKind::Unavailable,
                    format!("super {} unreachable: {e}", sup.id.short()),
                ));
                continue;
            }
        };
        shared.stats.calls_forwarded.inc();
        let answer =
            tokio::time::timeout(FORWARD_TIMEOUT, conn.request(&req, &input, max_out)).await;
        let (attempt, error) = match answer {
            Ok(Ok((Response::Ran { node, outcome, .. }, out))) => {
                lock(&shared.unreachable).remove(&sup.id);
                return Ok((node, outcome, out));
            }
            Ok(Ok((Response::Error(e), _))) if e.kind == ErrorKind::Busy => (Attempt::Busy, None),
            Ok(Ok((Response::Error(e), _))) => (Attempt::Refused(e.kind), Some(e)),
            Ok(Ok((other, _))) => (
                Attempt::Unexpected,
                Some(unexpected(ErrorKind::Unavailable, &other)),
            ),
            Ok(Err(e)) => {
                forget_peer(shared, sup.id);
                if e.request_not_sent() {
                    (
                        Attempt::NotSent,
                        Some(WireError::new(
                            ErrorKind::Unavailable,
                            format!("super {} unreachable: {e}", sup.id.short()),
                        )),
                    )
                } else {
                    // The call reached that super, which may have handed it
                    // to a live replica before its link failed.
                    (
                        Attempt::FailedAfterSend,
                        Some(WireError::new(
                            ErrorKind::Unavailable,
                            format!(
                                "super {} failed during the forwarded call (not retried, to never run it twice): {e}",
                                sup.id.short()
                            ),
                        )),
                    )
                }
            }
            Err(_) => (
                Attempt::TimedOut,
                Some(WireError::new(
                    ErrorKind::Unavailable,
                    "forwarded call timed out (not retried, to never run it twice)",
                )),
            ),
        };
        if attempt == Attempt::Busy {
            busy += 1;
        }
        match policy::after_forward(attempt) {
            Next::Stop => {
                return Err(error.unwrap_or_else(|| {
                    WireError::new(ErrorKind::Internal, "forwarded call stopped")
                }));
            }
            Next::TryNext | Next::ForgetAndTryNext => {
                if error.is_some() {
                    last_error = error;
                }
            }
        }
    }
    if busy == supers.len() {
        return Err(WireError::new(
            ErrorKind::Busy,
            format!("every replica of {:?} is busy", f.name),
        ));
    }
    Err(last_error.unwrap_or_else(|| {
        WireError::new(
            ErrorKind::Unavailable,
            format!("no replica of {:?} answered", f.name),
        )
    }))
}

/// Remember that `id` could not be reached just now.
pub(super) fn mark_unreachable(shared: &Shared, id: OrbId) {
    let now = Instant::now();
    let mut m = lock(&shared.unreachable);
    m.retain(|_, t| now.duration_since(*t) < UNREACHABLE_FOR);
    if m.len() < MAX_PEER_CONNS {
        m.insert(id, now);
    }
}

/// Drop the cached connection to `id` and mark it unreachable.
pub(super) fn forget_peer(shared: &Shared, id: OrbId) {
    lock(&shared.peer_conns).remove(&id);
    mark_unreachable(shared, id);
}

/// Put the supers that could not be reached lately last.
pub(super) fn reachable_first(shared: &Shared, supers: &mut [PeerAddr]) {
    let m = lock(&shared.unreachable);
    policy::reachable_first(supers, &m, Instant::now(), UNREACHABLE_FOR);
}

/// A connection to another super, reused across calls.
pub(super) async fn peer_conn(
    shared: &Arc<Shared>,
    peer: PeerAddr,
) -> Result<Connection, NodeError> {
    if let Some(c) = lock(&shared.peer_conns)
        .get(&peer.id)
        .filter(|c| !c.is_closed())
    {
        return Ok(c.clone());
    }
    let conn = shared.endpoint.connect(peer).await?;
    let mut peers = lock(&shared.peer_conns);
    peers.retain(|_, c| !c.is_closed());
    if peers.len() >= MAX_PEER_CONNS
        && let Some(k) = peers.keys().next().copied()
        && let Some(old) = peers.remove(&k)
    {
        old.close("connection cache full");
    }
    peers.insert(peer.id, conn.clone());
    Ok(conn)
}
