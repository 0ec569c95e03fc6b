//! Metrics of both roles through the `prometheus-client` crate.
//!
//! Each role keeps a [`Registry`] of the metrics it owns (counters, the
//! latency histograms, the per-function families) and, at scrape time,
//! adds the values it only knows then (gauges of current state, the
//! overlay's counters) to a second, short-lived registry ([`Scrape`]).
//! [`render`] encodes both in the Prometheus text format (0.0.4), or in
//! OpenMetrics text when the scraper asks for it.
//!
//! Two pieces are our own on top of the crate, both for the call path:
//! [`Histogram`] is lock-free (the crate's histogram takes a mutex on every
//! observation, and every call observes two) and answers the p50/p99 the
//! JSON APIs show; [`FunctionStats`] keeps per-function counters in one
//! map looked up once per call, and encodes them as labelled families
//! through a [`Collector`] when scraped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
pub use prometheus_client::registry::Registry;

use crate::common::util::{read_lock, write_lock};

/// A monotonically increasing counter (`prometheus-client`'s, lock-free).
/// Registered under its name without `_total`: the encoder appends it.
pub type Counter = prometheus_client::metrics::counter::Counter<u64>;

/// Latency bucket bounds in seconds: 100 µs to 30 s.
const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0,
];

/// A latency histogram with fixed buckets, lock-free, that can tell
/// approximate quantiles. Clones share their counts.
#[derive(Clone, Debug)]
pub struct Histogram(Arc<HistogramInner>);

#[derive(Debug)]
struct HistogramInner {
    counts: [AtomicU64; BUCKETS.len()],
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram(Arc::new(HistogramInner {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }))
    }
}

impl Histogram {
    /// Record one observation.
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| s <= *b) {
            self.0.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.0.sum_us.fetch_add(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.0.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.0.count.load(Ordering::Relaxed)
    }

    /// Approximate quantile `q` (0..1) from the buckets, in seconds: the
    /// upper bound of the bucket holding it.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.0.counts.iter().enumerate() {
            seen += c.load(Ordering::Relaxed);
            if seen >= rank {
                return Some(BUCKETS[i]);
            }
        }
        BUCKETS.last().copied()
    }

    /// Buckets as `(upper bound, count in this bucket)`, the last one
    /// `+Inf` for the observations above every bound.
    fn buckets(&self) -> Vec<(f64, u64)> {
        let mut out: Vec<(f64, u64)> = BUCKETS
            .iter()
            .zip(&self.0.counts)
            .map(|(b, c)| (*b, c.load(Ordering::Relaxed)))
            .collect();
        let in_buckets: u64 = out.iter().map(|(_, c)| c).sum();
        out.push((f64::INFINITY, self.count().saturating_sub(in_buckets)));
        out
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let sum = self.0.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        encoder.encode_histogram::<NoLabelSet>(sum, self.count(), &self.buckets(), None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Calls, errors, calls in flight and latency of one function, as seen by
/// the node that routes or runs its calls.
#[derive(Default)]
pub struct FunctionCounters {
    /// Calls started.
    pub calls: AtomicU64,
    /// Calls that did not succeed.
    pub errors: AtomicU64,
    /// Calls running now.
    pub in_flight: AtomicU64,
    /// End-to-end latency.
    pub latency: Histogram,
}

/// A snapshot of one function's counters, for JSON APIs.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct FunctionStatsJson {
    /// Calls started.
    pub calls: u64,
    /// Calls that did not succeed.
    pub errors: u64,
    /// Calls running now.
    pub in_flight: u64,
    /// Median latency in milliseconds (bucket upper bound), if any call finished.
    pub p50_ms: Option<f64>,
    /// 99th percentile latency in milliseconds (bucket upper bound).
    pub p99_ms: Option<f64>,
}

/// Per-function counters keyed by function name, bounded: past
/// [`MAX_TRACKED_FUNCTIONS`] names, new names are folded into `"_other"`,
/// so a flood of made-up names cannot grow the map or the label
/// cardinality of `/metrics`.
#[derive(Default, Clone)]
pub struct FunctionStats {
    map: Arc<RwLock<HashMap<String, Arc<FunctionCounters>>>>,
}

impl std::fmt::Debug for FunctionStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionStats")
            .field("functions", &read_lock(&self.map).len())
            .finish()
    }
}

/// Most function names tracked one by one.
pub const MAX_TRACKED_FUNCTIONS: usize = 4096;

/// Marks one call of a function in flight; [`CallGuard::finish`] records
/// its outcome. Dropped without `finish` (a cancelled request), it counts
/// as an error.
pub struct CallGuard {
    counters: Arc<FunctionCounters>,
    started: Instant,
    done: bool,
}

impl CallGuard {
    /// Record the call's end.
    pub fn finish(mut self, ok: bool) {
        self.end(ok);
    }

    fn end(&mut self, ok: bool) {
        if self.done {
            return;
        }
        self.done = true;
        self.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.counters.latency.observe(self.started.elapsed());
        if !ok {
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.end(false);
    }
}

impl FunctionStats {
    fn counters(&self, name: &str) -> Arc<FunctionCounters> {
        if let Some(c) = read_lock(&self.map).get(name) {
            return c.clone();
        }
        let mut map = write_lock(&self.map);
        let key = if map.len() >= MAX_TRACKED_FUNCTIONS && !map.contains_key(name) {
            "_other"
        } else {
            name
        };
        map.entry(key.to_string()).or_default().clone()
    }

    /// Count a call of `name` as started.
    pub fn start(&self, name: &str) -> CallGuard {
        let counters = self.counters(name);
        counters.calls.fetch_add(1, Ordering::Relaxed);
        counters.in_flight.fetch_add(1, Ordering::Relaxed);
        CallGuard {
            counters,
            started: Instant::now(),
            done: false,
        }
    }

    /// A snapshot of one function's counters (zeros if it was never called).
    pub fn get(&self, name: &str) -> FunctionStatsJson {
        read_lock(&self.map)
            .get(name)
            .map(|c| snapshot(c))
            .unwrap_or_default()
    }

    /// Every tracked function, sorted by name.
    pub fn all(&self) -> Vec<(String, FunctionStatsJson)> {
        let map = read_lock(&self.map);
        let mut v: Vec<_> = map.iter().map(|(k, c)| (k.clone(), snapshot(c))).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

/// Encodes `orb_function_calls_total`, `orb_function_errors_total`,
/// `orb_function_calls_in_flight` and `orb_function_call_duration_seconds`,
/// labelled by function.
impl Collector for FunctionStats {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let map = read_lock(&self.map);
        let mut names: Vec<&String> = map.keys().collect();
        names.sort();
        let families: [(&str, &str, MetricType); 4] = [
            (
                "orb_function_calls",
                "Calls per function.",
                MetricType::Counter,
            ),
            (
                "orb_function_errors",
                "Failed calls per function.",
                MetricType::Counter,
            ),
            (
                "orb_function_calls_in_flight",
                "Calls in flight per function.",
                MetricType::Gauge,
            ),
            (
                "orb_function_call_duration_seconds",
                "Latency per function.",
                MetricType::Histogram,
            ),
        ];
        for (i, (name, help, kind)) in families.into_iter().enumerate() {
            let mut family = encoder.encode_descriptor(name, help, None, kind)?;
            for n in &names {
                let c = &map[*n];
                let labels = [("function", n.as_str())];
                let metric = family.encode_family(&labels)?;
                match i {
                    0 => ConstCounter::new(c.calls.load(Ordering::Relaxed)).encode(metric)?,
                    1 => ConstCounter::new(c.errors.load(Ordering::Relaxed)).encode(metric)?,
                    2 => gauge(c.in_flight.load(Ordering::Relaxed)).encode(metric)?,
                    _ => c.latency.encode(metric)?,
                }
            }
        }
        Ok(())
    }
}

fn snapshot(c: &FunctionCounters) -> FunctionStatsJson {
    FunctionStatsJson {
        calls: c.calls.load(Ordering::Relaxed),
        errors: c.errors.load(Ordering::Relaxed),
        in_flight: c.in_flight.load(Ordering::Relaxed),
        p50_ms: c.latency.quantile(0.5).map(|s| s * 1000.0),
        p99_ms: c.latency.quantile(0.99).map(|s| s * 1000.0),
    }
}

fn gauge(v: u64) -> ConstGauge<i64> {
    ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX))
}

/// A labelled family of values known only at scrape time.
#[derive(Debug)]
struct ConstFamily {
    name: &'static str,
    help: String,
    kind: MetricType,
    label: &'static str,
    values: Vec<(String, u64)>,
}

impl Collector for ConstFamily {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(self.name, &self.help, None, self.kind)?;
        for (value, v) in &self.values {
            let labels = [(self.label, value.as_str())];
            let metric = family.encode_family(&labels)?;
            match self.kind {
                MetricType::Counter => ConstCounter::new(*v).encode(metric)?,
                _ => gauge(*v).encode(metric)?,
            }
        }
        Ok(())
    }
}

/// The values a scrape adds to a role's own registry: current state and
/// counters kept elsewhere (the overlay's, the runtime's).
#[derive(Default, Debug)]
pub struct Scrape {
    registry: Registry,
}

/// Help texts are written as sentences here; the registry adds the full
/// stop itself.
fn help(h: &str) -> String {
    h.trim_end_matches('.').to_string()
}

impl Scrape {
    /// A counter whose value is kept elsewhere. `name` without `_total`.
    pub fn counter(&mut self, name: &str, help_text: &str, v: u64) {
        self.registry
            .register(name, help(help_text), ConstCounter::new(v));
    }

    /// A gauge.
    pub fn gauge(&mut self, name: &str, help_text: &str, v: u64) {
        self.registry.register(name, help(help_text), gauge(v));
    }

    /// A gauge family with one label.
    pub fn gauges(
        &mut self,
        name: &'static str,
        help_text: &str,
        label: &'static str,
        values: &[(&str, u64)],
    ) {
        self.family(name, help_text, MetricType::Gauge, label, values);
    }

    /// A counter family with one label; `name` without `_total`.
    pub fn counters(
        &mut self,
        name: &'static str,
        help_text: &str,
        label: &'static str,
        values: &[(&str, u64)],
    ) {
        self.family(name, help_text, MetricType::Counter, label, values);
    }

    fn family(
        &mut self,
        name: &'static str,
        help_text: &str,
        kind: MetricType,
        label: &'static str,
        values: &[(&str, u64)],
    ) {
        self.registry.register_collector(Box::new(ConstFamily {
            name,
            // Collectors write their help as given: add the stop that the
            // registry adds for registered metrics.
            help: format!("{}.", help(help_text)),
            kind,
            label,
            values: values.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }));
    }

    /// `orb_connections_by_path`: connections by how traffic reaches the
    /// peer. `tunnel` counts clients reached down their own outbound
    /// connection; `direct` counts connections this node dialed or
    /// accepted from a publicly reachable peer (supers).
    pub fn connections_by_path(&mut self, tunnel: usize, direct: usize) {
        self.gauges(
            "orb_connections_by_path",
            "Open connections by path (tunnel, direct).",
            "path",
            &[("tunnel", tunnel as u64), ("direct", direct as u64)],
        );
    }

    /// The DHT families: `orb_dht_lookups_total`, `orb_dht_lookups_ok_total`,
    /// `orb_dht_routing_table_peers`, `orb_dht_records` and the refusal and
    /// failure counters.
    pub fn dht(&mut self, st: &orb_overlay::OverlayStats) {
        self.counter(
            "orb_dht_lookups",
            "DHT lookups started by this node.",
            st.lookups,
        );
        self.counter(
            "orb_dht_lookups_ok",
            "DHT lookups that found what they looked for.",
            st.lookups_ok,
        );
        self.gauge(
            "orb_dht_routing_table_peers",
            "Peers in the DHT routing table.",
            st.peers as u64,
        );
        self.gauge(
            "orb_dht_records",
            "DHT records stored on this node.",
            st.records as u64,
        );
        self.counter(
            "orb_dht_stores_refused",
            "DHT STOREs refused (bad signature, expired, too large, name owned by another key, store full).",
            st.core.stores_refused,
        );
        self.counter(
            "orb_dht_rpcs_failed",
            "DHT RPCs that timed out or failed (dead or made-up peers).",
            st.core.rpcs_failed,
        );
        self.counter(
            "orb_dht_lookups_timed_out",
            "DHT lookups that hit their overall deadline and returned partial results.",
            st.core.lookups_timed_out,
        );
    }
}

/// Register a metric with a help sentence (see [`Scrape`] on the stop).
pub fn register(
    registry: &mut Registry,
    name: &str,
    help_text: &str,
    metric: impl prometheus_client::registry::Metric,
) {
    registry.register(name, help(help_text), metric);
}

/// Register one counter per `(name, help)` (names without `_total`) and
/// return them in the same order.
pub fn counters<const N: usize>(registry: &mut Registry, specs: [(&str, &str); N]) -> [Counter; N] {
    specs.map(|(name, help_text)| {
        let c = Counter::default();
        register(registry, name, help_text, c.clone());
        c
    })
}

/// Register a latency histogram and return it.
pub fn histogram(registry: &mut Registry, name: &str, help_text: &str) -> Histogram {
    let h = Histogram::default();
    register(registry, name, help_text, h.clone());
    h
}

/// The OpenMetrics media type; a scraper that lists it in `Accept` gets
/// OpenMetrics text, anyone else the Prometheus text format.
const OPENMETRICS: &str = "application/openmetrics-text";

/// Encode a role's registry and its scrape-time values as the answer to
/// `GET /metrics`.
pub fn render(own: &Registry, scrape: &Scrape, request: &HeaderMap) -> Response {
    let openmetrics = request
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains(OPENMETRICS));
    let mut text = String::new();
    let (content_type, result) = if openmetrics {
        (
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            prometheus_client::encoding::text::encode_registry(&mut text, own)
                .and_then(|()| {
                    prometheus_client::encoding::text::encode_registry(&mut text, &scrape.registry)
                })
                .and_then(|()| prometheus_client::encoding::text::encode_eof(&mut text)),
        )
    } else {
        (
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            prometheus_client::encoding::prometheus_text::encode(&mut text, own).and_then(|()| {
                prometheus_client::encoding::prometheus_text::encode(&mut text, &scrape.registry)
            }),
        )
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "cannot encode metrics");
        return (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "metrics could not be encoded\n",
        )
            .into_response();
    }
    let mut resp = text.into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(own: &Registry, scrape: &Scrape, accept: Option<&str>) -> String {
        let mut h = HeaderMap::new();
        if let Some(a) = accept {
            h.insert(header::ACCEPT, HeaderValue::from_str(a).expect("header"));
        }
        let resp = render(own, scrape, &h);
        let body = resp.into_body();
        let fut = axum::body::to_bytes(body, usize::MAX);
        let bytes = futures_now(fut).expect("body");
        String::from_utf8(bytes.to_vec()).expect("utf-8")
    }

    /// A body held in memory is ready at the first poll.
    fn futures_now<F: std::future::Future>(f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        match f
            .as_mut()
            .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
        {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("not ready"),
        }
    }

    #[test]
    fn histogram_quantiles_and_text() {
        let h = Histogram::default();
        for ms in [1u64, 1, 1, 2, 40] {
            h.observe(Duration::from_millis(ms));
        }
        assert_eq!(h.quantile(0.5), Some(0.001));
        assert_eq!(h.quantile(0.99), Some(0.05));
        let mut own = Registry::default();
        register(&mut own, "orb_x_seconds", "x.", h.clone());
        let mut scrape = Scrape::default();
        scrape.gauges("orb_y", "y.", "path", &[("a\"b", 1)]);
        let t = text(&own, &scrape, None);
        assert!(t.contains("# TYPE orb_x_seconds histogram"), "{t}");
        assert!(t.contains("orb_x_seconds_count 5"), "{t}");
        assert!(t.contains("orb_x_seconds_bucket{le=\"+Inf\"} 5"), "{t}");
        assert!(t.contains("orb_x_seconds_bucket{le=\"0.001\"} 3"), "{t}");
        assert!(t.contains("orb_y{path=\"a\\\"b\"} 1"), "{t}");
        assert!(t.contains("# HELP orb_y y."), "{t}");
    }

    #[test]
    fn counters_keep_their_total_names() {
        let own = Registry::default();
        let mut scrape = Scrape::default();
        scrape.counter("orb_calls", "Calls.", 3);
        scrape.counters("orb_http_refused", "Refused.", "reason", &[("per_ip", 2)]);
        let t = text(&own, &scrape, None);
        assert!(t.contains("# TYPE orb_calls_total counter"), "{t}");
        assert!(t.contains("orb_calls_total 3"), "{t}");
        assert!(t.contains("# HELP orb_calls_total Calls."), "{t}");
        assert!(
            t.contains("orb_http_refused_total{reason=\"per_ip\"} 2"),
            "{t}"
        );
        // OpenMetrics on request: family names without _total, and # EOF.
        let om = text(&own, &scrape, Some("application/openmetrics-text"));
        assert!(om.contains("# TYPE orb_calls counter"), "{om}");
        assert!(om.contains("orb_calls_total 3"), "{om}");
        assert!(om.ends_with("# EOF\n"), "{om}");
    }

    #[test]
    fn per_function_stats() {
        let f = FunctionStats::default();
        let g = f.start("hello");
        assert_eq!(f.get("hello").in_flight, 1);
        g.finish(true);
        drop(f.start("hello")); // cancelled: an error
        let s = f.get("hello");
        assert_eq!((s.calls, s.errors, s.in_flight), (2, 1, 0));
        assert!(s.p50_ms.is_some());
        let mut own = Registry::default();
        own.register_collector(Box::new(f.clone()));
        let t = text(&own, &Scrape::default(), None);
        assert!(
            t.contains("orb_function_calls_total{function=\"hello\"} 2"),
            "{t}"
        );
        assert!(
            t.contains("orb_function_errors_total{function=\"hello\"} 1"),
            "{t}"
        );
        assert!(
            t.contains("orb_function_calls_in_flight{function=\"hello\"} 0"),
            "{t}"
        );
        assert!(
            t.contains("orb_function_call_duration_seconds_count{function=\"hello\"} 2"),
            "{t}"
        );
    }

    #[test]
    fn per_function_names_are_bounded() {
        let f = FunctionStats::default();
        for i in 0..MAX_TRACKED_FUNCTIONS + 10 {
            f.start(&format!("f{i}")).finish(true);
        }
        assert_eq!(read_lock(&f.map).len(), MAX_TRACKED_FUNCTIONS + 1);
        assert_eq!(f.get("_other").calls, 10);
    }
}
