//! The local API's routes (all behind [`guard::check`]) and its read-only
//! views (status, functions, nodes, resolve, the dashboard). Deploy,
//! invoke, the peer views, function management and logs have modules of
//! their own.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse, Json, Response as HttpResponse};
use axum::routing::{any, get, post};
use orb_proto::wire::{Request, Response};
use serde::Serialize;
use tokio::sync::watch;

use super::{Shared, best_super, deploy, guard, hosted_list, invoke, logs, manage, metrics, peers};
use crate::common::http_util::{self, FunctionJson};
use crate::common::util::{check_name, lock};
use crate::dht;
use crate::error::NodeError;

pub(super) async fn serve_api(
    shared: Arc<Shared>,
    listener: tokio::net::TcpListener,
    shutdown: watch::Receiver<bool>,
) {
    let limits = shared.config.http_limits.clone();
    let stats = shared.stats.http.clone();
    let app = Router::new()
        .route("/api/status", get(api_status))
        .route("/api/functions", get(api_functions))
        .route("/api/nodes", get(api_nodes))
        .route(
            "/api/deploy",
            post(deploy::api_deploy).layer(DefaultBodyLimit::disable()),
        )
        .route("/api/invoke/{*call}", any(invoke::api_invoke))
        .route("/api/resolve/{name}", get(api_resolve))
        .route("/api/peers", get(peers::api_peers))
        .route("/api/ping/{id}", post(peers::api_ping))
        .route("/api/owned", get(manage::api_owned))
        .route("/api/versions/{name}", get(manage::api_versions))
        .route("/api/rollback/{name}", post(manage::api_rollback))
        .route("/api/remove/{name}", post(manage::api_remove))
        .route("/api/logs/{name}", get(logs::api_logs))
        .route("/metrics", get(metrics::api_metrics))
        .route("/", get(api_dashboard))
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            guard::check,
        ))
        .with_state(shared);
    crate::common::http_server::serve(listener, app, limits, stats, shutdown, "local API").await;
}

#[derive(Serialize)]
pub(super) struct SuperJson {
    id: String,
    addr: String,
    pub connected: bool,
    observed_addr: Option<String>,
    last_error: Option<String>,
    rtt_ms: Option<f64>,
}

#[derive(Serialize)]
pub(super) struct HostedJson {
    name: String,
    hash: String,
}

#[derive(Serialize)]
pub(super) struct ClientStatusJson {
    id: String,
    role: &'static str,
    agent: &'static str,
    quic: String,
    uptime_s: u64,
    capacity: usize,
    in_flight: usize,
    supers: Vec<SuperJson>,
    hosted: Vec<HostedJson>,
    /// Credits as the best connected super's ledger holds them.
    #[serde(skip_serializing_if = "Option::is_none")]
    credits: Option<orb_proto::wire::Credits>,
    /// `public` when a super's dial-back from another socket got in,
    /// `private` when it did not, `unknown` before the check.
    reachability: &'static str,
    /// NAT mapping: none, endpoint-independent, endpoint-dependent, unknown.
    nat: &'static str,
    /// This node's own (LAN) address.
    local_addr: Option<String>,
    /// The super role this node runs after promotion.
    promoted: Option<PromotedJson>,
}

#[derive(Serialize)]
pub(super) struct PromotedJson {
    id: String,
    addr: String,
    gateway: String,
}

pub(super) fn super_views(shared: &Shared) -> Vec<SuperJson> {
    let supers = lock(&shared.supers);
    let mut v: Vec<SuperJson> = supers
        .values()
        .map(|l| {
            let live = l.conn.as_ref().filter(|c| !c.is_closed());
            SuperJson {
                id: l.peer.id.to_string(),
                addr: l.peer.addr.to_string(),
                connected: live.is_some(),
                observed_addr: l.observed.map(|a| a.to_string()),
                last_error: l.last_error.clone(),
                rtt_ms: live.map(|c| c.rtt().as_secs_f64() * 1000.0),
            }
        })
        .collect();
    v.sort_by(|a, b| a.id.cmp(&b.id));
    v
}

pub(super) async fn api_status(State(shared): State<Arc<Shared>>) -> Json<ClientStatusJson> {
    let credits = match best_super(&shared) {
        Ok(conn) => match tokio::time::timeout(
            Duration::from_secs(2),
            conn.request(&Request::Balance, &[], 1024),
        )
        .await
        {
            Ok(Ok((Response::Balance(c), _))) => Some(c),
            _ => None,
        },
        Err(_) => None,
    };
    let mut hosted: Vec<HostedJson> = hosted_list(&shared)
        .into_iter()
        .map(|h| HostedJson {
            name: h.name,
            hash: h.hash.to_string(),
        })
        .collect();
    hosted.sort_by(|a, b| a.name.cmp(&b.name));
    let nat = lock(&shared.nat).clone();
    let promoted = shared.promoted.lock().await.as_ref().map(|h| PromotedJson {
        id: h.id.to_string(),
        addr: h.quic_addr.to_string(),
        gateway: h.http_addr.to_string(),
    });
    Json(ClientStatusJson {
        reachability: match nat.reachable {
            Some(true) => "public",
            Some(false) => "private",
            None => "unknown",
        },
        nat: nat.mapping.as_str(),
        local_addr: nat.local.map(|a| a.to_string()),
        promoted,
        id: shared.id.to_string(),
        role: "client",
        agent: crate::AGENT,
        quic: shared.quic_addr.to_string(),
        uptime_s: shared.started.elapsed().as_secs(),
        capacity: shared.runtime.capacity(),
        in_flight: shared.runtime.in_flight(),
        supers: super_views(&shared),
        hosted,
        credits,
    })
}

#[derive(Serialize)]
pub(super) struct NodeJson {
    id: String,
    role: &'static str,
    addr: String,
    capacity: Option<u32>,
    in_flight: Option<u32>,
    served: Option<u64>,
    rtt_ms: f64,
    connected: bool,
}

pub(super) async fn api_nodes(State(shared): State<Arc<Shared>>) -> Json<Vec<NodeJson>> {
    Json(
        super_views(&shared)
            .into_iter()
            .map(|s| NodeJson {
                id: s.id,
                role: "super",
                addr: s.addr,
                capacity: None,
                in_flight: None,
                served: None,
                rtt_ms: s.rtt_ms.unwrap_or(0.0),
                connected: s.connected,
            })
            .collect(),
    )
}

pub(super) async fn api_functions(State(shared): State<Arc<Shared>>) -> HttpResponse {
    let result = async {
        let conn = best_super(&shared)?;
        match conn
            .request(&Request::ListFunctions, &[], orb_proto::limits::MAX_FRAME)
            .await?
        {
            (Response::Functions(list), _) => Ok(list),
            (Response::Error(e), _) => Err(NodeError::Remote(e)),
            (other, _) => Err(NodeError::Protocol(format!(
                "expected Functions, got {other:?}"
            ))),
        }
    }
    .await;
    match result {
        Ok(list) => Json(
            list.iter()
                .map(|f| {
                    // Counters of the calls this node ran.
                    let mut j = FunctionJson::from(f);
                    j.stats = Some(shared.stats.per_function.get(&f.name));
                    j
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => http_util::error_response(&e.to_wire()),
    }
}

pub(super) async fn api_resolve(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> HttpResponse {
    if let Err(e) = check_name(&name) {
        return http_util::error_response(&e);
    }
    match dht::resolve(&shared.overlay, &name).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => http_util::error_response(&e),
    }
}

/// The dashboard, carrying the API token when the guard allows it.
pub(super) async fn api_dashboard(
    State(shared): State<Arc<Shared>>,
    hand: Option<axum::Extension<guard::HandToken>>,
) -> Html<String> {
    Html(guard::page(&shared, hand.map(|axum::Extension(h)| h)))
}
