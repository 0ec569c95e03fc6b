//! Node-to-node paths as the local API sees them: the best path to a
//! node, the peer table, and `ping`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Json, Response as HttpResponse};
use orb_proto::OrbId;
use orb_proto::wire::{ErrorKind, Request, Response, WireError};
use serde::Serialize;

use super::{Shared, discovery, home_links};
use crate::common::http_util;
use crate::common::util::now_ms;
use crate::dht;
use crate::error::NodeError;

/// Connection context for node-to-node paths.
pub(super) fn path_ctx(shared: &Shared) -> super::paths::Ctx {
    super::paths::Ctx {
        me: discovery::my_addrs(shared),
        homes: home_links(shared),
    }
}

/// The best path to `target` (an existing one, or LAN, punch, relay).
pub(super) async fn peer_link(
    shared: &Arc<Shared>,
    target: OrbId,
) -> Result<super::paths::PeerLink, WireError> {
    if let Some(l) = shared.paths.get(&target) {
        return Ok(l);
    }
    let record = dht::node_record(&shared.overlay, &target).await?;
    shared.paths.connect(target, record, path_ctx(shared)).await
}

#[derive(Serialize)]
pub(super) struct PeerJson {
    id: String,
    path: &'static str,
    addr: String,
    rtt_ms: f64,
    since_ms: u64,
}

/// Node-to-node connections and their path kinds.
pub(super) async fn api_peers(State(shared): State<Arc<Shared>>) -> Json<Vec<PeerJson>> {
    Json(
        shared
            .paths
            .list()
            .into_iter()
            .map(|(id, l)| PeerJson {
                id: id.to_string(),
                path: l.path.as_str(),
                addr: l.conn.remote_addr().to_string(),
                rtt_ms: l.conn.rtt().as_secs_f64() * 1000.0,
                since_ms: l.since_ms,
            })
            .collect(),
    )
}

#[derive(Serialize)]
pub(super) struct PingJson {
    peer: String,
    path: &'static str,
    /// Round trip of one ping on the path.
    rtt_ms: f64,
    /// From the start of the command to the first answer (path set-up
    /// included: LAN tries, punching, relay).
    first_byte_ms: f64,
}

/// Connect to another node over the best path and ping it.
pub(super) async fn api_ping(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> HttpResponse {
    let started = Instant::now();
    let result = async {
        let target: OrbId = id.parse().map_err(|e| {
            WireError::new(ErrorKind::BadRequest, format!("not an Orb ID: {id:?}: {e}"))
        })?;
        if target == shared.id {
            return Err(WireError::new(ErrorKind::BadRequest, "that is this node"));
        }
        let (conn, path) = match home_links(&shared)
            .into_iter()
            .find(|c| c.peer_id() == target)
        {
            Some(c) => {
                let kind = super::paths::direct_kind(c.remote_addr());
                (c, kind)
            }
            None => {
                let l = peer_link(&shared, target).await?;
                (l.conn, l.path)
            }
        };
        let nonce = now_ms();
        let t = Instant::now();
        match tokio::time::timeout(
            Duration::from_secs(10),
            conn.request(&Request::Ping { nonce }, &[], 0),
        )
        .await
        {
            Ok(Ok((Response::Pong { nonce: n }, _))) if n == nonce => Ok(PingJson {
                peer: target.to_string(),
                path: path.as_str(),
                rtt_ms: t.elapsed().as_secs_f64() * 1000.0,
                first_byte_ms: started.elapsed().as_secs_f64() * 1000.0,
            }),
            Ok(Ok((other, _))) => Err(WireError::new(
                ErrorKind::Internal,
                format!("unexpected answer to ping: {other:?}"),
            )),
            Ok(Err(e)) => Err(NodeError::from(e).to_wire()),
            Err(_) => Err(WireError::new(ErrorKind::Unavailable, "ping timed out")),
        }
    }
    .await;
    match result {
        Ok(j) => Json(j).into_response(),
        Err(e) => http_util::error_response(&e),
    }
}
