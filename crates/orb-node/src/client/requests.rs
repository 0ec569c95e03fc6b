//! Requests other nodes send this client: its home supers down their links
//! (`Place`, `Run`, `Unplace`, `PunchNow`, relay circuits), and other
//! nodes over node-to-node paths (`Run`, pings).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use orb_proto::wire::{ErrorKind, Request, Response, Welcome, WireError};
use orb_transport::{Connection, Endpoint, IncomingRequest};
use tokio::sync::watch;
use tracing::debug;

use super::{Shared, discovery, hosting, is_home_super, logs};
use crate::common::util::{accepted, blocking, serve_each};

/// Serve the requests of peer connections (dialed or accepted) until they
/// close; bounded by the peer table's size.
pub(super) async fn serve_peers(
    shared: Arc<Shared>,
    rx: tokio::sync::mpsc::Receiver<Connection>,
    shutdown: watch::Receiver<bool>,
) {
    serve_each(
        futures_util::stream::unfold(rx, |mut rx| async move {
            let conn = rx.recv().await?;
            Some((conn, rx))
        }),
        |conn| Some(serve_super(shared.clone(), conn)),
        shutdown,
    )
    .await;
}

/// Serve requests the super sends down the link until it closes. Returns why.
pub(super) async fn serve_super(shared: Arc<Shared>, conn: Connection) -> String {
    loop {
        match conn.accept_request().await {
            Ok(incoming) if matches!(incoming.request(), Request::RelayIncoming { .. }) => {
                // Only a home super may open circuits to us; the TLS inside
                // the circuit then proves who is at the other end.
                if is_home_super(&shared, &conn.peer_id()) {
                    match incoming.accept_tunnel().await {
                        Ok(tunnel) => shared.paths.accept_relayed(tunnel),
                        Err(e) => debug!(error = %e, "relay circuit failed to open"),
                    }
                } else {
                    debug!(peer = %conn.peer_id().short(), "relay circuit from a non-home node refused");
                }
            }
            Ok(incoming) => {
                let s = shared.clone();
                let c = conn.clone();
                tokio::spawn(async move { handle_request(s, c, incoming).await });
            }
            Err(e) => return e.to_string(),
        }
    }
}

/// Direct dials to this client: other nodes' node-to-node paths (served
/// like any link) and supers' dial-back checks.
pub(super) async fn accept_loop(
    shared: Arc<Shared>,
    endpoint: Endpoint,
    shutdown: watch::Receiver<bool>,
) {
    serve_each(
        accepted(endpoint),
        |conn| {
            if is_home_super(&shared, &conn.peer_id()) {
                Some(serve_super(shared.clone(), conn))
            } else {
                shared.paths.accepted(conn);
                None
            }
        },
        shutdown,
    )
    .await;
}

pub(super) async fn handle_request(
    shared: Arc<Shared>,
    conn: Connection,
    incoming: IncomingRequest,
) {
    let (req, body, responder) = incoming.split();
    let (resp, out) = match req {
        Request::Hello(_) => (
            Response::Welcome(Welcome {
                node: shared.id,
                observed_addr: conn.remote_addr(),
            }),
            Bytes::new(),
        ),
        Request::Ping { nonce } => (Response::Pong { nonce }, Bytes::new()),
        Request::PunchNow {
            from,
            addrs,
            rtt_ms,
        } => {
            // Punch orders come from home supers only, and at a bounded
            // rate: anything else is ignored (answered, never dialed).
            if !is_home_super(&shared, &conn.peer_id()) || !shared.paths.punch_now_allowed() {
                debug!(peer = %conn.peer_id().short(), "punch request ignored");
                (
                    Response::Error(WireError::new(
                        ErrorKind::Forbidden,
                        "punch request ignored",
                    )),
                    Bytes::new(),
                )
            } else {
                let mut addrs = addrs;
                addrs.truncate(8);
                shared
                    .paths
                    .punch_back(from, addrs, Duration::from_millis(u64::from(rtt_ms)));
                (
                    Response::PunchAddrs {
                        addrs: discovery::my_addrs(&shared).all(),
                        rtt_ms,
                    },
                    Bytes::new(),
                )
            }
        }
        Request::Run {
            name,
            hash,
            settings,
            meta,
            caller,
        } => {
            // A node calling directly must name itself as the caller: the
            // receipt (and the ledger) then charge the right node.
            let caller = if is_home_super(&shared, &conn.peer_id()) {
                caller
            } else {
                conn.peer_id()
            };
            let args = hosting::RunArgs {
                name,
                hash,
                settings: *settings,
                meta: *meta,
                caller,
                sender: Some(conn.clone()),
            };
            hosting::run_call(&shared, args, body).await
        }
        Request::Unplace { name, hash } => {
            hosting::unplace(&shared, &name, hash).await;
            (Response::Placed, Bytes::new())
        }
        // Checked against the owner's signature, whoever passes it on.
        Request::Logs { query, .. } => (logs::answer(&shared, &query).await, Bytes::new()),
        Request::Place { name, hash, files } => {
            match hosting::place(&shared, &conn, name, hash, files).await {
                Ok(()) => (Response::Placed, Bytes::new()),
                Err(e) => (Response::Error(e), Bytes::new()),
            }
        }
        Request::FetchModule { hash } => {
            let store = shared.store.clone();
            match blocking(move || store.module(&hash)).await {
                Ok(Ok(Some(bytes))) => (Response::Module { hash }, Bytes::from(bytes)),
                _ => (
                    Response::Error(WireError::new(
                        ErrorKind::NotFound,
                        format!("no module {hash}"),
                    )),
                    Bytes::new(),
                ),
            }
        }
        other => (
            Response::Error(WireError::new(
                ErrorKind::BadRequest,
                format!("a client does not serve {}", other.kind()),
            )),
            Bytes::new(),
        ),
    };
    if let Err(e) = responder.respond(&resp, &out).await {
        debug!(error = %e, "could not send response");
    }
}
