//! Prometheus text-format metrics, with no dependency: a handful of atomic
//! counters and fixed-bucket histograms rendered on `GET /metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::util::{read_lock, write_lock};

/// A monotonically increasing counter.
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Add one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Add `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Latency bucket bounds in seconds: 100 µs to 30 s.
const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0,
];

/// A latency histogram with fixed buckets.
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// Record one observation.
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| s <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
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
        for (i, c) in self.counts.iter().enumerate() {
            seen += c.load(Ordering::Relaxed);
            if seen >= rank {
                return Some(BUCKETS[i]);
            }
        }
        BUCKETS.last().copied()
    }
}

/// Calls, errors, calls in flight and latency of one function, as seen by
/// the node that routes or runs its calls.
#[derive(Default)]
pub struct FunctionCounters {
    /// Calls started.
    pub calls: Counter,
    /// Calls that did not succeed.
    pub errors: Counter,
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
/// [`MAX_TRACKED_FUNCTIONS`] names, new names are folded into `"_other"`.
#[derive(Default)]
pub struct FunctionStats {
    map: std::sync::RwLock<std::collections::HashMap<String, std::sync::Arc<FunctionCounters>>>,
}

/// Most function names tracked one by one.
pub const MAX_TRACKED_FUNCTIONS: usize = 4096;

/// Marks one call of a function in flight; [`CallGuard::finish`] records
/// its outcome. Dropped without `finish` (a cancelled request), it counts
/// as an error.
pub struct CallGuard {
    counters: std::sync::Arc<FunctionCounters>,
    started: std::time::Instant,
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
            self.counters.errors.inc();
        }
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.end(false);
    }
}

impl FunctionStats {
    fn counters(&self, name: &str) -> std::sync::Arc<FunctionCounters> {
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
        counters.calls.inc();
        counters.in_flight.fetch_add(1, Ordering::Relaxed);
        CallGuard {
            counters,
            started: std::time::Instant::now(),
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

    /// Render `orb_function_calls_total`, `orb_function_errors_total`,
    /// `orb_function_calls_in_flight` and `orb_function_call_duration_seconds`
    /// labelled by function.
    pub fn render(&self, e: &mut Exposition) {
        let map = read_lock(&self.map);
        let mut names: Vec<&String> = map.keys().collect();
        names.sort();
        let calls: Vec<(&str, &str, f64)> = names
            .iter()
            .map(|n| ("function", n.as_str(), map[*n].calls.get() as f64))
            .collect();
        e.labelled(
            "orb_function_calls_total",
            "counter",
            "Calls per function.",
            &calls,
        );
        let errors: Vec<(&str, &str, f64)> = names
            .iter()
            .map(|n| ("function", n.as_str(), map[*n].errors.get() as f64))
            .collect();
        e.labelled(
            "orb_function_errors_total",
            "counter",
            "Failed calls per function.",
            &errors,
        );
        let in_flight: Vec<(&str, &str, f64)> = names
            .iter()
            .map(|n| {
                (
                    "function",
                    n.as_str(),
                    map[*n].in_flight.load(Ordering::Relaxed) as f64,
                )
            })
            .collect();
        e.labelled(
            "orb_function_calls_in_flight",
            "gauge",
            "Calls in flight per function.",
            &in_flight,
        );
        let hists: Vec<(&str, &Histogram)> = names
            .iter()
            .map(|n| (n.as_str(), &map[*n].latency))
            .collect();
        e.histograms(
            "orb_function_call_duration_seconds",
            "Latency per function.",
            "function",
            &hists,
        );
    }
}

/// `orb_connections_by_path`: connections by how traffic reaches the
/// peer. `tunnel` counts clients reached down their own outbound
/// connection; `direct` counts connections this node dialed or accepted
/// from a publicly reachable peer (supers). No relay exists yet, so there
/// is no `relayed` series.
pub fn connections_by_path(e: &mut Exposition, tunnel: usize, direct: usize) {
    e.labelled(
        "orb_connections_by_path",
        "gauge",
        "Open connections by path (tunnel, direct).",
        &[
            ("path", "tunnel", tunnel as f64),
            ("path", "direct", direct as f64),
        ],
    );
}

/// The DHT families: `orb_dht_lookups_total`, `orb_dht_lookups_ok_total`,
/// `orb_dht_routing_table_peers`, `orb_dht_records` and the refusal and
/// failure counters.
pub fn dht(e: &mut Exposition, st: &orb_overlay::OverlayStats) {
    e.sample(
        "orb_dht_lookups_total",
        "counter",
        "DHT lookups started by this node.",
        st.lookups as f64,
    );
    e.sample(
        "orb_dht_lookups_ok_total",
        "counter",
        "DHT lookups that found what they looked for.",
        st.lookups_ok as f64,
    );
    e.sample(
        "orb_dht_routing_table_peers",
        "gauge",
        "Peers in the DHT routing table.",
        st.peers as f64,
    );
    e.sample(
        "orb_dht_records",
        "gauge",
        "DHT records stored on this node.",
        st.records as f64,
    );
    e.sample(
        "orb_dht_stores_refused_total",
        "counter",
        "DHT STOREs refused (bad signature, expired, too large, name owned by another key, store full).",
        st.core.stores_refused as f64,
    );
    e.sample(
        "orb_dht_rpcs_failed_total",
        "counter",
        "DHT RPCs that timed out or failed (dead or made-up peers).",
        st.core.rpcs_failed as f64,
    );
    e.sample(
        "orb_dht_lookups_timed_out_total",
        "counter",
        "DHT lookups that hit their overall deadline and returned partial results.",
        st.core.lookups_timed_out as f64,
    );
}

fn snapshot(c: &FunctionCounters) -> FunctionStatsJson {
    FunctionStatsJson {
        calls: c.calls.get(),
        errors: c.errors.get(),
        in_flight: c.in_flight.load(Ordering::Relaxed),
        p50_ms: c.latency.quantile(0.5).map(|s| s * 1000.0),
        p99_ms: c.latency.quantile(0.99).map(|s| s * 1000.0),
    }
}

/// Builds one Prometheus text document.
#[derive(Default)]
pub struct Exposition(String);

impl Exposition {
    /// A counter or gauge with one sample.
    pub fn sample(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        let _ = writeln!(
            self.0,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }

    /// A metric family with labelled samples.
    pub fn labelled(&mut self, name: &str, kind: &str, help: &str, samples: &[(&str, &str, f64)]) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (label, value, v) in samples {
            let _ = writeln!(self.0, "{name}{{{label}=\"{}\"}} {v}", escape(value));
        }
    }

    /// A histogram.
    pub fn histogram(&mut self, name: &str, help: &str, h: &Histogram) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cumulative += h.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(self.0, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let _ = writeln!(self.0, "{name}_bucket{{le=\"+Inf\"}} {}", h.count());
        let _ = writeln!(
            self.0,
            "{name}_sum {}",
            h.sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(self.0, "{name}_count {}", h.count());
    }

    /// One histogram family with a label per series.
    pub fn histograms(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        series: &[(&str, &Histogram)],
    ) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (value, h) in series {
            let v = escape(value);
            let mut cumulative = 0;
            for (i, b) in BUCKETS.iter().enumerate() {
                cumulative += h.counts[i].load(Ordering::Relaxed);
                let _ = writeln!(
                    self.0,
                    "{name}_bucket{{{label}=\"{v}\",le=\"{b}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                self.0,
                "{name}_bucket{{{label}=\"{v}\",le=\"+Inf\"}} {}",
                h.count()
            );
            let _ = writeln!(
                self.0,
                "{name}_sum{{{label}=\"{v}\"}} {}",
                h.sum_us.load(Ordering::Relaxed) as f64 / 1e6
            );
            let _ = writeln!(self.0, "{name}_count{{{label}=\"{v}\"}} {}", h.count());
        }
    }

    /// A metric family with samples carrying two labels.
    pub fn labelled2(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        labels: (&str, &str),
        samples: &[(&str, &str, f64)],
    ) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (a, b, v) in samples {
            let _ = writeln!(
                self.0,
                "{name}{{{}=\"{}\",{}=\"{}\"}} {v}",
                labels.0,
                escape(a),
                labels.1,
                escape(b)
            );
        }
    }

    /// The document.
    pub fn finish(self) -> String {
        self.0
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_and_text() {
        let h = Histogram::default();
        for ms in [1u64, 1, 1, 2, 40] {
            h.observe(Duration::from_millis(ms));
        }
        assert_eq!(h.quantile(0.5), Some(0.001));
        assert_eq!(h.quantile(0.99), Some(0.05));
        let mut e = Exposition::default();
        e.histogram("orb_x_seconds", "x", &h);
        e.labelled("orb_y", "gauge", "y", &[("path", "a\"b", 1.0)]);
        let text = e.finish();
        assert!(text.contains("orb_x_seconds_count 5"));
        assert!(text.contains("orb_x_seconds_bucket{le=\"+Inf\"} 5"));
        assert!(text.contains("orb_y{path=\"a\\\"b\"} 1"));
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
        let mut e = Exposition::default();
        f.render(&mut e);
        let text = e.finish();
        assert!(text.contains("orb_function_calls_total{function=\"hello\"} 2"));
        assert!(text.contains("orb_function_call_duration_seconds_count{function=\"hello\"} 2"));
    }
}
