//! `invoke` through the local API: straight to a replica on another node
//! over a node-to-node path when there is one (the receipt then goes to a
//! home super's ledger), else through a super.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response as HttpResponse;
use orb_proto::OrbId;
use orb_proto::wire::{ErrorKind, Request, Response, WireError};
use tracing::debug;

use super::{Shared, best_super, peers};
use crate::common::http_util;
use crate::common::util::{request_id, unexpected};
use crate::dht;
use crate::error::NodeError;

/// How long a routed call may take at most, on top of the function's own limit.
const INVOKE_TIMEOUT: Duration = Duration::from_secs(120);

/// Where calls live on the local API: any method on
/// `/api/invoke/NAME[/PATH][?QUERY]`, as on a gateway's `/fn/`.
pub(super) const PREFIX: &str = "/api/invoke/";

pub(super) async fn api_invoke(
    State(shared): State<Arc<Shared>>,
    req: axum::extract::Request,
) -> HttpResponse {
    let rid = request_id();
    let mut method = String::new();
    let result = async {
        let (name, meta, input) =
            http_util::read_call(req, PREFIX, shared.config.max_body, rid.clone()).await?;
        method.clone_from(&meta.method);
        if let Some(done) = direct_invoke(&shared, &name, &meta, &input).await? {
            return Ok(done);
        }
        let conn = best_super(&shared).map_err(|e| e.to_wire())?;
        let req = Request::Invoke { name, meta };
        let max_out = orb_proto::limits::DEFAULT_MAX_OUTPUT + 64 * 1024;
        let answer = tokio::time::timeout(INVOKE_TIMEOUT, conn.request(&req, &input, max_out))
            .await
            .map_err(|_| WireError::new(ErrorKind::Unavailable, "call timed out"))?
            .map_err(|e| NodeError::from(e).to_wire())?;
        match answer {
            (Response::Ran { node, outcome, .. }, out) => Ok((node, outcome, out, "super")),
            (Response::Error(e), _) => Err(e),
            (other, _) => Err(unexpected(ErrorKind::Internal, &other)),
        }
    }
    .await;
    match result {
        Ok((node, outcome, out, path)) => {
            let mut resp = http_util::call_response(node, &outcome, out, &rid, &method);
            resp.headers_mut()
                .insert("x-orb-path", axum::http::HeaderValue::from_static(path));
            resp
        }
        Err(e) => http_util::error_response(&e),
    }
}

/// Call `name` on a replica held by another client, over a node-to-node
/// path. `Ok(None)`: no other client holds one (use a super).
pub(super) async fn direct_invoke(
    shared: &Arc<Shared>,
    name: &str,
    meta: &orb_proto::wire::CallMeta,
    input: &Bytes,
) -> Result<Option<(OrbId, orb_proto::wire::RunOutcome, Bytes, &'static str)>, WireError> {
    let Some((_, record)) = dht::live_name(&shared.overlay, name).await? else {
        return Ok(None);
    };
    let mut nodes: Vec<OrbId> = dht::providers(&shared.overlay, &record.hash)
        .await?
        .iter()
        .filter_map(|p| p.node.parse::<OrbId>().ok())
        .filter(|id| *id != shared.id)
        .collect();
    // Prefer peers we already have a path to, best path first.
    nodes.sort_by_key(|id| shared.paths.get(id).map_or(3, |l| l.path as u8));
    let max_out = orb_proto::limits::DEFAULT_MAX_OUTPUT + 64 * 1024;
    for node in nodes {
        let link = match peers::peer_link(shared, node).await {
            Ok(l) => l,
            Err(e) => {
                debug!(node = %node.short(), error = %e, "no path to replica; trying the next");
                continue;
            }
        };
        let req = Request::Run {
            name: name.to_string(),
            hash: record.hash,
            settings: Box::new(record.settings.clone()),
            meta: Box::new(meta.clone()),
            caller: shared.id,
        };
        match tokio::time::timeout(INVOKE_TIMEOUT, link.conn.request(&req, input, max_out)).await {
            Ok(Ok((
                Response::Ran {
                    node,
                    outcome,
                    receipt,
                },
                out,
            ))) => {
                if let Some(r) = receipt {
                    submit_receipt(shared, r);
                }
                return Ok(Some((node, outcome, out, link.path.as_str())));
            }
            Ok(Ok((Response::Error(e), _)))
                if matches!(e.kind, ErrorKind::Busy | ErrorKind::NotFound) =>
            {
                debug!(node = %node.short(), error = %e, "replica cannot take the call; trying the next");
            }
            Ok(Ok((Response::Error(e), _))) => return Err(e),
            Ok(Ok((other, _))) => {
                return Err(unexpected(ErrorKind::Internal, &other));
            }
            // At most once: only a call that was never sent moves on.
            Ok(Err(e)) if e.request_not_sent() => continue,
            Ok(Err(e)) => return Err(NodeError::from(e).to_wire()),
            Err(_) => return Err(WireError::new(ErrorKind::Unavailable, "call timed out")),
        }
    }
    Ok(None)
}

/// Hand the receipt of a direct call to a home super's ledger, in the
/// background (the caller pays for what it used).
pub(super) fn submit_receipt(
    shared: &Arc<Shared>,
    receipt: Box<orb_proto::receipt::SignedReceipt>,
) {
    let Ok(conn) = best_super(shared) else {
        return;
    };
    tokio::spawn(async move {
        match tokio::time::timeout(
            Duration::from_secs(10),
            conn.request(&Request::Receipt(receipt), &[], 0),
        )
        .await
        {
            Ok(Ok((Response::ReceiptRecorded, _))) => {}
            other => debug!(answer = ?other.map(|r| r.map(|(r, _)| r)), "receipt not recorded"),
        }
    });
}
