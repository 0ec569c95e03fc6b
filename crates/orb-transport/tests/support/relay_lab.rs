//! A relay lab on loopback, shared by `crates/orb-transport/tests/relay.rs`
//! and `benches/relay.rs` (which includes this file with `#[path]`, as a
//! bench cannot import a test's modules): the relay's accept loop that
//! splices circuits, and the target's side that turns each circuit into an
//! endpoint answering Ping.

use std::sync::Arc;

use orb_proto::Keypair;
use orb_proto::wire::{Request, Response};
use orb_transport::{Connection, Endpoint, SpliceGate, TransportConfig, splice};

/// Answer every Ping on every connection `ep` accepts with a Pong that
/// carries the request's body back when `echo`, and nothing otherwise.
pub fn serve_pings(ep: Endpoint, echo: bool) {
    tokio::spawn(async move {
        while let Some(conn) = ep.accept().await {
            tokio::spawn(async move {
                while let Ok(req) = conn.accept_request().await {
                    let (req, body, responder) = req.split();
                    if let Request::Ping { nonce } = req {
                        let body = if echo { body } else { Default::default() };
                        tokio::spawn(async move {
                            let _ = responder.respond(&Response::Pong { nonce }, &body).await;
                        });
                    }
                }
            });
        }
    });
}

/// The target's side of its link to the relay: every `RelayIncoming`
/// becomes an endpoint over the circuit (as `keypair`), whose connections
/// answer Ping (see [`serve_pings`] for `echo`).
pub fn serve_relayed(link: Connection, keypair: Keypair, echo: bool) {
    tokio::spawn(async move {
        while let Ok(incoming) = link.accept_request().await {
            if !matches!(incoming.request(), Request::RelayIncoming { .. }) {
                continue;
            }
            let Ok(tunnel) = incoming.accept_tunnel().await else {
                continue;
            };
            let Ok(ep) = Endpoint::over_tunnel(tunnel, &keypair, TransportConfig::default()) else {
                continue;
            };
            serve_pings(ep, echo);
        }
    });
}

/// The relay: accept `Relay { target }` from anyone and splice it, through
/// `gate`, to a `RelayIncoming` stream on the target's link.
pub fn serve_relay(relay: Endpoint, target_link: Connection, gate: Arc<dyn SpliceGate>) {
    tokio::spawn(async move {
        while let Some(conn) = relay.accept().await {
            let target_link = target_link.clone();
            let gate = gate.clone();
            tokio::spawn(async move {
                while let Ok(incoming) = conn.accept_request().await {
                    let from = conn.peer_id();
                    let target_link = target_link.clone();
                    let gate = gate.clone();
                    tokio::spawn(async move {
                        let Ok((_, Some(to_target))) = target_link
                            .open_tunnel(&Request::RelayIncoming { from })
                            .await
                        else {
                            return;
                        };
                        let Ok(to_caller) = incoming.accept_tunnel().await else {
                            return;
                        };
                        splice(to_caller, to_target, gate).await;
                    });
                }
            });
        }
    });
}
