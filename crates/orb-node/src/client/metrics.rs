//! The client's metrics: what it counts as it goes (registered once) and
//! what `/metrics` reads off its state at scrape time.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;

use super::{Shared, api, hosted_list};
use crate::common::http_server::HttpStats;
use crate::common::metrics::{
    Counter, FunctionStats, Histogram, Registry, Scrape, counters, histogram, register, render,
};

/// Counters behind the client's `GET /metrics`.
pub(super) struct ClientStats {
    pub calls: Counter,
    pub errors: Counter,
    pub busy: Counter,
    /// Local API requests the guard refused (foreign Host or origin, no
    /// token).
    pub api_refused: Counter,
    pub call_latency: Histogram,
    /// Calls, errors, in flight and latency per function run here.
    pub per_function: FunctionStats,
    /// Connections, refusals and timeouts of the local API server.
    pub http: Arc<HttpStats>,
    /// All of the above but `http`, plus the path counters, for `/metrics`.
    registry: Registry,
}

impl ClientStats {
    /// Register the client's own counters and the node-to-node path
    /// counters (`paths` keeps those).
    pub fn new(paths: &super::paths::PathStats) -> Self {
        let mut r = Registry::default();
        let [calls, errors, busy, api_refused] = counters(
            &mut r,
            [
                ("orb_calls", "Calls run on this node."),
                ("orb_call_errors", "Calls that failed or hit a limit."),
                ("orb_calls_busy", "Calls refused at capacity."),
                (
                    "orb_api_refused",
                    "Local API requests refused: foreign Host or origin, or no token.",
                ),
            ],
        );
        let call_latency = histogram(
            &mut r,
            "orb_call_duration_seconds",
            "Time to run a call on this node.",
        );
        let per_function = FunctionStats::default();
        r.register_collector(Box::new(per_function.clone()));
        for (name, help, counter) in [
            (
                "orb_paths_direct",
                "Direct node-to-node connections made (LAN or punched).",
                &paths.direct,
            ),
            (
                "orb_paths_relayed",
                "Relayed node-to-node connections made.",
                &paths.relayed,
            ),
            (
                "orb_punch_attempts",
                "Hole punches tried.",
                &paths.punch_attempts,
            ),
            (
                "orb_punch_successes",
                "Hole punches that gave a direct path.",
                &paths.punch_successes,
            ),
            (
                "orb_path_upgrades",
                "Relayed paths later upgraded to direct.",
                &paths.upgrades,
            ),
        ] {
            register(&mut r, name, help, counter.clone());
        }
        register(
            &mut r,
            "orb_time_to_first_direct_byte_seconds",
            "From wanting a peer to a direct path being up.",
            paths.first_direct_byte.clone(),
        );
        ClientStats {
            calls,
            errors,
            busy,
            api_refused,
            call_latency,
            per_function,
            http: Arc::new(HttpStats::default()),
            registry: r,
        }
    }
}

/// `GET /metrics`.
pub(super) async fn api_metrics(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let mut e = Scrape::default();
    shared.stats.http.scrape(&mut e);
    e.gauge(
        "orb_calls_in_flight",
        "Calls running now.",
        shared.runtime.in_flight() as u64,
    );
    let connected = api::super_views(&shared)
        .iter()
        .filter(|s| s.connected)
        .count();
    e.gauges(
        "orb_connections",
        "Open connections by kind.",
        "kind",
        &[("super", connected as u64)],
    );
    e.connections_by_path(0, connected);
    if let Ok(dht) = shared.overlay.stats().await {
        e.dht(&dht);
    }
    e.gauge(
        "orb_hosted_replicas",
        "Replicas this node hosts.",
        hosted_list(&shared).len() as u64,
    );
    e.counter(
        "orb_runtime_compiles",
        "Modules compiled since the daemon started.",
        shared.runtime.compiles(),
    );
    e.counter(
        "orb_runtime_artifacts_loaded",
        "Compiled artifacts loaded from the store instead of compiling.",
        shared.runtime.artifacts_loaded(),
    );
    render(&shared.stats.registry, &e, &headers)
}
