//! The super's metrics: what it counts as it goes (registered once) and
//! what `/metrics` reads off its state at scrape time.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;

use super::Shared;
use crate::common::http_server::HttpStats;
use crate::common::metrics::{
    Counter, FunctionStats, Histogram, Registry, Scrape, counters, histogram, register, render,
};
use crate::common::util::{lock, read_lock};

/// Counters behind `GET /metrics` and `/api/status`.
pub(super) struct Stats {
    pub calls: Counter,
    pub call_errors: Counter,
    pub calls_busy: Counter,
    pub calls_failed_over: Counter,
    pub call_latency: Histogram,
    pub deploys: Counter,
    pub deploys_refused: Counter,
    pub receipts_refused: Counter,
    pub calls_forwarded: Counter,
    pub dht_stores_throttled: Counter,
    /// Client tunnels closed because the client stopped answering pings.
    pub health_closed: Counter,
    /// Calls, errors, in flight and latency per function name.
    pub per_function: FunctionStats,
    /// The gateway's connections, refusals and timeouts.
    pub http: Arc<HttpStats>,
    /// All of the above but `http`, for `/metrics`.
    registry: Registry,
}

impl Stats {
    /// Register the super's counters and the bridge's (`bridge` keeps
    /// those).
    pub fn new(bridge: &super::bridge::BridgeStats) -> Self {
        let mut r = Registry::default();
        let [
            calls,
            call_errors,
            calls_busy,
            calls_failed_over,
            deploys,
            deploys_refused,
            receipts_refused,
            calls_forwarded,
            dht_stores_throttled,
            health_closed,
        ] = counters(
            &mut r,
            [
                ("orb_calls", "Calls routed by this super."),
                ("orb_call_errors", "Calls that did not succeed."),
                (
                    "orb_calls_busy",
                    "Calls refused because every replica was busy.",
                ),
                (
                    "orb_calls_failed_over",
                    "Attempts moved to another replica.",
                ),
                ("orb_deploys", "Deploys accepted."),
                (
                    "orb_deploys_refused",
                    "Deploys refused (bad module, wrong owner, bad name).",
                ),
                (
                    "orb_receipts_refused",
                    "Receipts refused (forged, mismatched, replayed).",
                ),
                (
                    "orb_calls_forwarded",
                    "Calls forwarded to another super (provider behind it).",
                ),
                (
                    "orb_dht_stores_throttled",
                    "DHT STOREs refused because one peer sent too many.",
                ),
                (
                    "orb_clients_unresponsive",
                    "Client tunnels closed after missed health pings.",
                ),
            ],
        );
        for (name, help, counter) in [
            (
                "orb_punches_coordinated",
                "Hole punches this super coordinated.",
                &bridge.punches_coordinated,
            ),
            (
                "orb_relay_circuits",
                "Relay circuits opened.",
                &bridge.relay_circuits,
            ),
            (
                "orb_relay_refused",
                "Relay circuits refused (quota, unknown target, flood).",
                &bridge.relay_refused,
            ),
            (
                "orb_relay_bytes",
                "Bytes relayed (both directions).",
                &bridge.relay_bytes,
            ),
            (
                "orb_punch_relay_throttled",
                "Punch or relay requests refused by the per-node rate limit.",
                &bridge.coord_throttled,
            ),
            (
                "orb_dial_backs",
                "Reachability dial-backs made.",
                &bridge.dial_backs,
            ),
        ] {
            register(&mut r, name, help, counter.clone());
        }
        let call_latency = histogram(
            &mut r,
            "orb_call_duration_seconds",
            "Gateway-side latency of routed calls.",
        );
        let per_function = FunctionStats::default();
        r.register_collector(Box::new(per_function.clone()));
        Stats {
            calls,
            call_errors,
            calls_busy,
            calls_failed_over,
            call_latency,
            deploys,
            deploys_refused,
            receipts_refused,
            calls_forwarded,
            dht_stores_throttled,
            health_closed,
            per_function,
            http: Arc::new(HttpStats::default()),
            registry: r,
        }
    }
}

/// `GET /metrics`.
pub(super) async fn http_metrics(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Response {
    let mut e = Scrape::default();
    e.gauge(
        "orb_relay_circuits_open",
        "Relay circuits open now.",
        shared.bridge.circuits() as u64,
    );
    let (clients, in_flight) = {
        let c = lock(&shared.clients);
        (
            c.len(),
            c.values()
                .map(|e| u64::from(e.in_flight.load(Ordering::Relaxed)))
                .sum::<u64>(),
        )
    };
    e.gauges(
        "orb_connections",
        "Open connections by kind.",
        "kind",
        &[("client", clients as u64)],
    );
    e.gauge(
        "orb_calls_in_flight",
        "Calls in flight on connected replicas.",
        in_flight,
    );
    e.gauge(
        "orb_functions",
        "Functions known to this super.",
        read_lock(&shared.functions).len() as u64,
    );
    let supers = lock(&shared.peer_conns)
        .values()
        .filter(|c| !c.is_closed())
        .count();
    e.connections_by_path(clients, supers);
    shared.stats.http.scrape(&mut e);
    if let Ok(dht) = shared.overlay.stats().await {
        e.dht(&dht);
    }
    render(&shared.stats.registry, &e, &headers)
}
