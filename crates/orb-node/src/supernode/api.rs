//! The super's HTTP side: the routes, the JSON APIs and the dashboard.
//! (`/fn/NAME` is the gateway; `/metrics` is in the metrics module.)

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse, Json, Response as HttpResponse};
use axum::routing::{any, get};
use orb_proto::wire::{ErrorKind, FunctionInfo, WireError};
use serde::Serialize;
use tokio::sync::watch;

use super::{Shared, deploy, gateway, metrics};
use crate::common::http_util;
use crate::common::util::{check_name, lock, read_lock};
use crate::dht;

/// Serve the gateway and the APIs until shutdown.
pub(super) async fn serve_http(
    shared: Arc<Shared>,
    listener: tokio::net::TcpListener,
    shutdown: watch::Receiver<bool>,
) {
    let app = Router::new()
        .route("/fn/{*call}", any(gateway::invoke))
        .route("/api/status", get(status))
        .route("/api/functions", get(functions))
        .route("/api/functions/{name}", get(function))
        .route("/api/nodes", get(nodes))
        .route("/api/ledger", get(ledger))
        .route("/api/dht", get(dht_view))
        .route("/api/resolve/{name}", get(resolve))
        .route("/metrics", get(metrics::http_metrics))
        .route("/", get(dashboard))
        .with_state(shared.clone());
    crate::common::http_server::serve(
        listener,
        app,
        shared.config.http_limits.clone(),
        shared.stats.http.clone(),
        shutdown,
        "HTTP gateway",
    )
    .await;
}

#[derive(Serialize)]
struct StatusJson {
    id: String,
    role: &'static str,
    agent: &'static str,
    quic: String,
    http: String,
    uptime_s: u64,
    clients: usize,
    functions: usize,
    calls: u64,
    call_errors: u64,
    deploys: u64,
    /// Gateway-wide median call latency, ms (None before the first call).
    p50_ms: Option<f64>,
    /// Gateway-wide 99th percentile call latency, ms.
    p99_ms: Option<f64>,
    /// The gateway's connections, refusals and timeouts.
    http_server: crate::common::http_server::HttpStatsJson,
}

async fn status(State(shared): State<Arc<Shared>>) -> Json<StatusJson> {
    let clients = lock(&shared.clients).len();
    let http = lock(&shared.http_addr)
        .map(|a| a.to_string())
        .unwrap_or_default();
    Json(StatusJson {
        id: shared.id.to_string(),
        role: "super",
        agent: crate::AGENT,
        quic: shared
            .config
            .public_addr
            .unwrap_or(shared.quic_addr)
            .to_string(),
        http,
        uptime_s: shared.started.elapsed().as_secs(),
        clients,
        functions: read_lock(&shared.functions).len(),
        calls: shared.stats.calls.get(),
        call_errors: shared.stats.call_errors.get(),
        deploys: shared.stats.deploys.get(),
        p50_ms: shared.stats.call_latency.quantile(0.5).map(|s| s * 1000.0),
        p99_ms: shared.stats.call_latency.quantile(0.99).map(|s| s * 1000.0),
        http_server: shared.stats.http.json(),
    })
}

async fn functions(State(shared): State<Arc<Shared>>) -> Json<Vec<http_util::FunctionJson>> {
    Json(
        deploy::function_infos(&shared)
            .iter()
            .map(|f| with_stats(&shared, f))
            .collect(),
    )
}

/// A function's JSON with this super's counters for it.
fn with_stats(shared: &Shared, f: &FunctionInfo) -> http_util::FunctionJson {
    let mut j = http_util::FunctionJson::from(f);
    j.stats = Some(shared.stats.per_function.get(&f.name));
    j
}

async fn function(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> HttpResponse {
    match deploy::function_infos(&shared)
        .iter()
        .find(|f| f.name == name)
    {
        Some(f) => {
            // The detail view: replicas as objects, and the scaling history.
            let mut v = serde_json::to_value(with_stats(&shared, f)).unwrap_or_default();
            let replicas: Vec<serde_json::Value> = {
                let clients = lock(&shared.clients);
                let mut r: Vec<serde_json::Value> = clients
                    .iter()
                    .filter(|(_, c)| c.hosted.contains(&f.hash))
                    .map(|(id, c)| {
                        serde_json::json!({
                            "node": id.to_string(),
                            "path": "tunnel",
                            "in_flight": c.in_flight.load(Ordering::Relaxed),
                            "calls_served": c.served.load(Ordering::Relaxed),
                            "capacity": c.capacity,
                        })
                    })
                    .collect();
                r.sort_by_key(|x| x["node"].as_str().unwrap_or_default().to_string());
                r
            };
            let (desired, decisions) = lock(&shared.scale)
                .get(&name)
                .map(|s| {
                    (
                        s.scaler.desired,
                        s.scaler.decisions().cloned().collect::<Vec<_>>(),
                    )
                })
                .unwrap_or((f.settings.replicas, Vec::new()));
            if let Some(obj) = v.as_object_mut() {
                obj.insert("replicas".into(), serde_json::Value::Array(replicas));
                obj.insert("replicas_desired".into(), desired.into());
                obj.insert(
                    "scaling".into(),
                    serde_json::to_value(decisions).unwrap_or_default(),
                );
            }
            Json(v).into_response()
        }
        None => http_util::error_response(&WireError::new(
            ErrorKind::NotFound,
            format!("no function named {name:?}"),
        )),
    }
}

#[derive(Serialize)]
struct NodeJson {
    id: String,
    role: &'static str,
    addr: String,
    capacity: u32,
    in_flight: u32,
    served: u64,
    hosted: usize,
    agent: String,
    connected_ms: u64,
    rtt_ms: f64,
    /// How this super reaches the node: "tunnel" (down the client's own
    /// outbound QUIC connection).
    path: &'static str,
}

async fn nodes(State(shared): State<Arc<Shared>>) -> Json<Vec<NodeJson>> {
    let clients = lock(&shared.clients);
    let mut nodes: Vec<NodeJson> = clients
        .iter()
        .map(|(id, c)| NodeJson {
            id: id.to_string(),
            role: "client",
            addr: c.observed.to_string(),
            capacity: c.capacity,
            in_flight: c.in_flight.load(Ordering::Relaxed),
            served: c.served.load(Ordering::Relaxed),
            hosted: c.hosted.len(),
            agent: c.agent.clone(),
            connected_ms: c.connected_ms,
            rtt_ms: c.conn.rtt().as_secs_f64() * 1000.0,
            path: "tunnel",
        })
        .collect();
    nodes.sort_by(|a, b| a.id.cmp(&b.id));
    Json(nodes)
}

async fn dashboard() -> Html<&'static str> {
    Html(crate::common::DASHBOARD)
}

#[derive(Serialize)]
struct LedgerJson {
    node: String,
    earned: u64,
    spent: u64,
    calls_served: u64,
    calls_made: u64,
}

async fn ledger(State(shared): State<Arc<Shared>>) -> Json<Vec<LedgerJson>> {
    Json(
        shared
            .ledger
            .balances()
            .into_iter()
            .map(|(id, b)| LedgerJson {
                node: id.to_string(),
                earned: b.earned,
                spent: b.spent,
                calls_served: b.calls_served,
                calls_made: b.calls_made,
            })
            .collect(),
    )
}

#[derive(Serialize)]
struct DhtJson {
    id: String,
    routing_table: Vec<String>,
    records: usize,
    lookups: u64,
    lookups_ok: u64,
    mean_rounds: f64,
}

async fn dht_view(State(shared): State<Arc<Shared>>) -> HttpResponse {
    let table = shared.overlay.routing_table().await.unwrap_or_default();
    match shared.overlay.stats().await {
        Ok(st) => Json(DhtJson {
            id: shared.id.to_string(),
            routing_table: table.iter().map(|p| p.to_string()).collect(),
            records: st.records,
            lookups: st.lookups,
            lookups_ok: st.lookups_ok,
            mean_rounds: st.mean_rounds,
        })
        .into_response(),
        Err(e) => http_util::error_response(&WireError::new(ErrorKind::Unavailable, e.to_string())),
    }
}

async fn resolve(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> HttpResponse {
    if let Err(e) = check_name(&name) {
        return http_util::error_response(&e);
    }
    match dht::resolve(&shared.overlay, &name).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => http_util::error_response(&e),
    }
}
