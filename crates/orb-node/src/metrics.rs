//! Prometheus text-format metrics, with no dependency: a handful of atomic
//! counters and fixed-bucket histograms rendered on `GET /metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
}
