//! Logs on the client: the replica's side (keep a bounded ring per hosted
//! function, answer the owner's signed queries) and the owner's side
//! (`GET /api/logs/NAME`: sign a query and have the name's super gather the
//! entries from the replicas under every super).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Json, Response as HttpResponse};
use orb_proto::OrbId;
use orb_proto::logs::{LogEntry, LogKind, LogsQuery, SignedLogsQuery};
use orb_proto::wire::{ErrorKind, Request, Response, RunOutcome, WireError};
use serde::Serialize;

use super::{Shared, manage};
use crate::common::http_util;
use crate::common::util::{lock, now_ms, read_lock, unexpected};
use crate::dht;
use crate::error::NodeError;

/// How long a function's owner, once looked up, is trusted without asking
/// the DHT again.
const OWNER_TTL: Duration = Duration::from_secs(60);
/// Owners remembered at most.
const MAX_OWNERS: usize = 256;
/// How long the owner's gathering may take.
const GATHER_TIMEOUT: Duration = Duration::from_secs(20);

/// Owners of hosted functions, recently looked up.
#[derive(Default)]
pub(super) struct Owners(HashMap<String, (OrbId, Instant)>);

/// Keep a call that ran here in the function's ring.
pub(super) fn record(shared: &Shared, function: &str, request_id: &str, outcome: &RunOutcome) {
    lock(&shared.logs).record(function, shared.id, request_id, now_ms(), outcome);
}

/// The owner of `name`, from the cache or the DHT.
async fn owner_of(shared: &Shared, name: &str) -> Result<OrbId, WireError> {
    let now = Instant::now();
    if let Some((owner, at)) = lock(&shared.owners).0.get(name)
        && now.duration_since(*at) < OWNER_TTL
    {
        return Ok(*owner);
    }
    let owner = match dht::name_record(&shared.overlay, name).await? {
        Some((_, n)) => n.owner.id(),
        None => {
            return Err(WireError::new(
                ErrorKind::NotFound,
                format!("no function named {name:?}"),
            ));
        }
    };
    let mut owners = lock(&shared.owners);
    owners
        .0
        .retain(|_, (_, at)| now.duration_since(*at) < OWNER_TTL);
    if owners.0.len() < MAX_OWNERS {
        owners.0.insert(name.to_string(), (owner, now));
    }
    Ok(owner)
}

/// Answer a `Logs` query (from a super, or any node): the entries of the
/// replica here, if the query is the owner's.
pub(super) async fn answer(shared: &Shared, query: &SignedLogsQuery) -> Response {
    let signer = match query.verify(now_ms()) {
        Ok(s) => s,
        Err(e) => {
            return Response::Error(WireError::new(ErrorKind::Forbidden, e.to_string()));
        }
    };
    let name = &query.query.name;
    if !read_lock(&shared.hosted).contains_key(name) {
        return Response::Logs(Vec::new());
    }
    match owner_of(shared, name).await {
        Ok(owner) if owner == signer => {
            Response::Logs(lock(&shared.logs).read(name, query.query.since_ms))
        }
        Ok(owner) => Response::Error(WireError::new(
            ErrorKind::Forbidden,
            format!("the logs of {name:?} are for its owner, node {owner}, only"),
        )),
        Err(e) => Response::Error(e),
    }
}

/// One entry as the local API shows it.
#[derive(Serialize)]
struct EntryJson {
    time_ms: u64,
    node: String,
    seq: u64,
    request_id: String,
    /// `stderr` or `call`.
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fuel: Option<u64>,
}

impl From<LogEntry> for EntryJson {
    fn from(e: LogEntry) -> Self {
        let mut j = EntryJson {
            time_ms: e.time_ms,
            node: e.node.to_string(),
            seq: e.seq,
            request_id: e.request_id,
            kind: "stderr",
            line: None,
            status: None,
            duration_us: None,
            fuel: None,
        };
        match e.kind {
            LogKind::Stderr(line) => j.line = Some(line),
            LogKind::Call {
                status,
                duration_us,
                fuel,
            } => {
                j.kind = "call";
                j.status = Some(status);
                j.duration_us = Some(duration_us);
                j.fuel = Some(fuel);
            }
        }
        j
    }
}

/// `GET /api/logs/NAME[?since_ms=T]`: the function's logs from every
/// replica, oldest first; the owner's only.
pub(super) async fn api_logs(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> HttpResponse {
    let result = async {
        let since_ms = manage::number_param(query.as_deref(), "since_ms")?.unwrap_or(0);
        let current = manage::check_owner(&shared, &name, "read the logs of").await?;
        if current.removed {
            return Err(WireError::new(
                ErrorKind::NotFound,
                format!("function {name:?} was removed"),
            ));
        }
        let signed = LogsQuery {
            name: name.clone(),
            since_ms,
            issued_ms: now_ms(),
        }
        .sign(&shared.keypair)
        .map_err(|e| WireError::new(ErrorKind::Internal, e.to_string()))?;
        let conn = manage::name_super(&shared, &name).await?;
        let req = Request::Logs {
            query: Box::new(signed),
            fan_out: true,
        };
        let answer = tokio::time::timeout(
            GATHER_TIMEOUT,
            conn.request(&req, &[], orb_proto::limits::MAX_FRAME),
        )
        .await
        .map_err(|_| WireError::new(ErrorKind::Unavailable, "gathering the logs timed out"))?
        .map_err(|e| NodeError::from(e).to_wire())?;
        match answer {
            (Response::Logs(entries), _) => Ok(entries),
            (Response::Error(e), _) => Err(e),
            (other, _) => Err(unexpected(ErrorKind::Internal, &other)),
        }
    }
    .await;
    match result {
        Ok(entries) => {
            Json(entries.into_iter().map(EntryJson::from).collect::<Vec<_>>()).into_response()
        }
        Err(e) => http_util::error_response(&e),
    }
}
