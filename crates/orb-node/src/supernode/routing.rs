//! Running a call: on a replica of this super's own clients when there is
//! one (order and retry rules from [`crate::policy::routing`]), otherwise
//! forwarded to the home super of a replica elsewhere.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use axum::body::Bytes;
use orb_proto::OrbId;
use orb_proto::wire::{CallMeta, ErrorKind, Request, Response, RunOutcome, WireError};
use orb_store::FunctionRecord;
use orb_transport::Connection;
use tracing::warn;

use super::clients::ClientEntry;
use super::{Shared, forwarding, scaling};
use crate::common::util::{lock, max_call_output, now_ms, read_lock, unexpected};
use crate::dht;
use crate::policy::accounting::Expected;
use crate::policy::routing::{self as policy, Attempt, Next, ReplicaLoad};

/// What a routed call gives: the node that ran it, how it went, its output.
pub(super) type CallResult = Result<(OrbId, RunOutcome, Bytes), WireError>;

/// Route one call to a replica and count it.
pub(crate) async fn route_call(
    shared: &Arc<Shared>,
    name: &str,
    meta: CallMeta,
    input: Bytes,
    caller: OrbId,
) -> CallResult {
    let started = Instant::now();
    shared.stats.calls.inc();
    let per_function = shared.stats.per_function.start(name);
    let result = match resolve(shared, name).await {
        Ok(f) => route(shared, &f, meta, input, caller).await,
        Err(e) => Err(e),
    };
    shared.stats.call_latency.observe(started.elapsed());
    per_function.finish(matches!(&result, Ok((_, o, _)) if o.is_success()));
    match &result {
        Ok((_, o, _)) if o.is_success() => {}
        Err(e) if e.kind == ErrorKind::Busy => {
            shared.stats.calls_busy.inc();
            shared.stats.call_errors.inc();
        }
        _ => {
            shared.stats.call_errors.inc();
        }
    }
    result
}

/// The function called `name`: deployed here, else its name record in the
/// DHT.
async fn resolve(shared: &Shared, name: &str) -> Result<FunctionRecord, WireError> {
    let local = read_lock(&shared.functions).get(name).cloned();
    let (hash, settings) = match local {
        Some(f) => (f.hash, f.settings),
        None => match dht::live_name(&shared.overlay, name).await? {
            Some((_, n)) => (n.hash, n.settings),
            None => {
                return Err(WireError::new(
                    ErrorKind::NotFound,
                    format!("no function named {name:?}"),
                ));
            }
        },
    };
    Ok(FunctionRecord {
        name: name.to_string(),
        hash,
        owner: shared.id,
        size: 0,
        settings,
        created_ms: 0,
        updated_ms: 0,
        placements: Vec::new(),
        version: 1,
        history: Vec::new(),
    })
}

/// Where a call goes: a replica on one of this super's own clients first;
/// otherwise (and not already forwarded) the home super of a provider found
/// in the DHT.
async fn route(
    shared: &Arc<Shared>,
    f: &FunctionRecord,
    meta: CallMeta,
    input: Bytes,
    caller: OrbId,
) -> CallResult {
    let forwarded = meta.headers.iter().any(|(k, _)| k == forwarding::FORWARDED);
    let local_error =
        match run_on_own_replicas(shared, f, (meta.clone(), input.clone()), caller).await {
            Ok(done) => return Ok(done),
            Err(e) if forwarded => return Err(e),
            Err(e) if matches!(e.kind, ErrorKind::Busy | ErrorKind::Unavailable) => e,
            Err(e) => return Err(e),
        };
    forwarding::forward_to_providers(shared, f, meta, input)
        .await
        .map_err(|e| policy::combine(local_error, e))
}

/// Keeps a function's in-flight count up while a call runs.
struct DecrementOnDrop(Arc<AtomicU32>);

impl Drop for DecrementOnDrop {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Stop routing to a replica whose connection is gone.
fn forget_replica(shared: &Shared, conn: &Connection, hash: &orb_proto::ContentHash) {
    let mut clients = lock(&shared.clients);
    if let Some(entry) = clients.get_mut(&conn.peer_id())
        && entry.conn.is_closed()
    {
        entry.hosted.remove(hash);
    }
}

/// Run a call on one of this super's own clients holding a replica.
async fn run_on_own_replicas(
    shared: &Arc<Shared>,
    f: &FunctionRecord,
    (meta, input): (CallMeta, Bytes),
    caller: OrbId,
) -> CallResult {
    let name = f.name.as_str();
    let candidates: Vec<ClientEntry> = {
        let clients = lock(&shared.clients);
        clients
            .values()
            .filter(|c| c.hosted.contains(&f.hash))
            .cloned()
            .collect()
    };
    if candidates.is_empty() {
        return Err(WireError::new(
            ErrorKind::Unavailable,
            format!("no replica of {name:?} is connected"),
        ));
    }
    let loads: Vec<ReplicaLoad> = candidates
        .iter()
        .map(|c| ReplicaLoad {
            in_flight: c.in_flight.load(Ordering::Relaxed),
            capacity: c.capacity,
            rtt: c.conn.rtt(),
        })
        .collect();
    let order = policy::order_replicas(&loads);
    let mut busy = 0usize;
    let mut last_error: Option<WireError> = None;
    let request_id = meta.request_id.clone();
    let req = Request::Run {
        name: f.name.clone(),
        hash: f.hash,
        settings: Box::new(f.settings.clone()),
        meta: Box::new(meta),
        caller,
    };
    let max_out = max_call_output(&f.settings);
    let sc = scaling::counters(shared, name);
    sc.calls.fetch_add(1, Ordering::Relaxed);
    sc.last_call_ms.store(now_ms(), Ordering::Relaxed);
    sc.in_flight.fetch_add(1, Ordering::AcqRel);
    let _in_flight = DecrementOnDrop(sc.in_flight.clone());
    for (attempt_no, &i) in order.iter().enumerate() {
        let c = &candidates[i];
        if attempt_no > 0 {
            shared.stats.calls_failed_over.inc();
        }
        // Reserve a slot; a replica at capacity is skipped without a round trip.
        let before = c.in_flight.fetch_add(1, Ordering::AcqRel);
        if before >= c.capacity {
            c.in_flight.fetch_sub(1, Ordering::AcqRel);
            busy += 1;
            continue;
        }
        let res = c.conn.request(&req, &input, max_out).await;
        c.in_flight.fetch_sub(1, Ordering::AcqRel);
        let (attempt, error) = match res {
            Ok((
                Response::Ran {
                    node: _,
                    outcome,
                    receipt,
                },
                out,
            )) => {
                c.served.fetch_add(1, Ordering::Relaxed);
                let executor = c.conn.peer_id();
                match receipt {
                    Some(r) => {
                        let exp = Expected {
                            request_id: &request_id,
                            function: f.hash,
                            caller,
                            executor,
                        };
                        if let Err(e) = shared.ledger.record(&r, &exp) {
                            shared.stats.receipts_refused.inc();
                            warn!(node = %executor.short(), error = %e, "receipt refused");
                        }
                    }
                    None => {
                        shared.stats.receipts_refused.inc();
                        warn!(node = %executor.short(), "call answered without a receipt");
                    }
                }
                return Ok((executor, outcome, out));
            }
            Ok((Response::Error(e), _)) if e.kind == ErrorKind::Busy => (Attempt::Busy, None),
            Ok((Response::Error(e), _)) => (Attempt::Refused(e.kind), Some(e)),
            Ok((other, _)) => (
                Attempt::Unexpected,
                Some(unexpected(ErrorKind::Unavailable, &other)),
            ),
            Err(e) => {
                let attempt = if e.request_not_sent() {
                    Attempt::NotSent
                } else if matches!(e, orb_transport::TransportError::ConnectionLost(_)) {
                    Attempt::ConnectionLost
                } else {
                    Attempt::FailedAfterSend
                };
                let error = if attempt == Attempt::FailedAfterSend {
                    warn!(function = %name, node = %c.conn.peer_id().short(), error = %e, "call failed after it started; not retried");
                    WireError::new(
                        ErrorKind::Unavailable,
                        format!(
                            "the replica failed during the call (not retried, to never run it twice): {e}"
                        ),
                    )
                } else {
                    warn!(function = %name, node = %c.conn.peer_id().short(), error = %e, "replica unreachable, trying the next");
                    WireError::new(ErrorKind::Unavailable, format!("replica unreachable: {e}"))
                };
                (attempt, Some(error))
            }
        };
        if attempt == Attempt::Busy {
            busy += 1;
        }
        match policy::after_replica(attempt) {
            Next::Stop => {
                return Err(
                    error.unwrap_or_else(|| WireError::new(ErrorKind::Internal, "call stopped"))
                );
            }
            Next::ForgetAndTryNext => {
                if matches!(attempt, Attempt::Refused(_)) {
                    // The replica lost the module (wiped data dir): stop
                    // routing there.
                    if let Some(entry) = lock(&shared.clients).get_mut(&c.conn.peer_id()) {
                        entry.hosted.remove(&f.hash);
                    }
                } else {
                    forget_replica(shared, &c.conn, &f.hash);
                }
                last_error = error;
            }
            Next::TryNext => {
                if error.is_some() {
                    last_error = error;
                }
            }
        }
    }
    if busy == candidates.len() {
        sc.busy.fetch_add(1, Ordering::Relaxed);
    }
    Err(policy::exhausted(busy, candidates.len(), last_error, name))
}
