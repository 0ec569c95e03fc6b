//! The QUIC requests peers send a super (clients down their tunnels, other
//! supers, tools), each answered on its own stream.

use std::sync::Arc;

use axum::body::Bytes;
use orb_proto::PeerAddr;
use orb_proto::wire::{ErrorKind, Request, Response, Role, Welcome, WireError};
use orb_transport::IncomingRequest;
use tracing::{debug, warn};

use super::{Shared, bundles, clients, deploy, logs, overlay, placement, routing, versions};
use crate::common::util::request_id;
use crate::policy::accounting::Expected;

pub(super) async fn handle(shared: Arc<Shared>, from: PeerAddr, incoming: IncomingRequest) {
    let peer = from.id;
    if let Request::Relay { target } = incoming.request() {
        let target = *target;
        let target_conn = clients::client_conn(&shared, &target);
        shared
            .bridge
            .clone()
            .relay(peer, target, target_conn, incoming)
            .await;
        return;
    }
    let (req, body, responder) = incoming.split();
    let (resp, out): (Response, Bytes) = match req {
        Request::Hello(hello) => {
            if hello.role == Role::Client {
                clients::learn_hosted(&shared, peer, &hello);
            }
            (
                Response::Welcome(Welcome {
                    node: shared.id,
                    observed_addr: shared.quic_addr,
                }),
                Bytes::new(),
            )
        }
        Request::Ping { nonce } => (Response::Pong { nonce }, Bytes::new()),
        Request::Deploy {
            name,
            hash,
            settings,
            here,
        } => match deploy::deploy(&shared, peer, name, hash, settings, body, here).await {
            Ok(r) => (r, Bytes::new()),
            Err(e) => {
                shared.stats.deploys_refused.inc();
                warn!(peer = %peer.short(), error = %e.message, "deploy refused");
                (Response::Error(e), Bytes::new())
            }
        },
        Request::Invoke { name, mut meta } => {
            if meta.request_id.is_empty() {
                meta.request_id = request_id();
            }
            match routing::route_call(&shared, &name, meta, body, peer).await {
                Ok((node, outcome, out)) => (
                    Response::Ran {
                        node,
                        outcome,
                        receipt: None,
                    },
                    out,
                ),
                Err(e) => (Response::Error(e), Bytes::new()),
            }
        }
        Request::FetchModule { hash } => deploy::module_answer(&shared, hash).await,
        Request::FetchBundle { hash } => bundles::answer(&shared, hash).await,
        Request::ListFunctions => (
            Response::Functions(deploy::function_infos(&shared)),
            Bytes::new(),
        ),
        Request::Punch { target, addrs } => {
            let target_conn = clients::client_conn(&shared, &target);
            let rtt = clients::caller_rtt(&shared, &peer);
            (
                shared.bridge.punch(from, rtt, addrs, target_conn).await,
                Bytes::new(),
            )
        }
        Request::DialBack => (shared.bridge.dial_back(from).await, Bytes::new()),
        Request::Receipt(r) => {
            let exp = Expected {
                request_id: &r.receipt.request_id,
                function: r.receipt.function,
                caller: peer,
                executor: r.receipt.executor,
            };
            match shared.ledger.record(&r, &exp) {
                Ok(_) => (Response::ReceiptRecorded, Bytes::new()),
                Err(e) => {
                    shared.stats.receipts_refused.inc();
                    warn!(peer = %peer.short(), error = %e, "submitted receipt refused");
                    (
                        Response::Error(WireError::new(ErrorKind::Forbidden, e.to_string())),
                        Bytes::new(),
                    )
                }
            }
        }
        Request::Relay { .. } | Request::RelayIncoming { .. } | Request::PunchNow { .. } => (
            Response::Error(WireError::new(
                ErrorKind::BadRequest,
                "a super node does not take that request",
            )),
            Bytes::new(),
        ),
        Request::Place { name, hash, files } => {
            match placement::place_for_peer(&shared, from, &name, hash, files).await {
                Ok(node) => (
                    Response::Deployed {
                        name,
                        hash,
                        placed_on: vec![node],
                        version: 0,
                    },
                    Bytes::new(),
                ),
                Err(e) => (Response::Error(e), Bytes::new()),
            }
        }
        Request::Unplace { name, hash } => {
            answer(versions::unplace_for_peer(&shared, peer, &name, hash).await)
        }
        Request::Remove { name } => answer(versions::remove(&shared, peer, &name).await),
        Request::Rollback { name, to } => {
            answer(versions::rollback(&shared, peer, &name, to).await)
        }
        Request::Versions { name } => answer(versions::versions(&shared, peer, &name)),
        Request::Logs { query, fan_out } => {
            answer(logs::logs(&shared, from, *query, fan_out).await)
        }
        Request::Run { .. } => (
            Response::Error(WireError::new(
                ErrorKind::BadRequest,
                "a super node does not host replicas",
            )),
            Bytes::new(),
        ),
        Request::Balance => {
            let b = shared.ledger.balance(&peer);
            (
                Response::Balance(orb_proto::wire::Credits {
                    earned: b.earned,
                    spent: b.spent,
                    calls_served: b.calls_served,
                    calls_made: b.calls_made,
                }),
                Bytes::new(),
            )
        }
        Request::Dht(msg) => (overlay::dht_request(&shared, from, msg).await, Bytes::new()),
    };
    if let Err(e) = responder.respond(&resp, &out).await {
        debug!(peer = %peer.short(), error = %e, "could not send response");
    }
}

/// A response without a body from a handler's result.
fn answer(r: Result<Response, WireError>) -> (Response, Bytes) {
    (r.unwrap_or_else(Response::Error), Bytes::new())
}
