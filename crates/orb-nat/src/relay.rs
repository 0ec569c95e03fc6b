//! Relay quotas: circuits in all and per node, bytes per circuit, and
//! bytes per node across all of its circuits.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use crate::TokenBucket;

/// What a relaying super allows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RelayLimits {
    /// Circuits carried at once, in all.
    pub max_circuits: usize,
    /// Circuits one peer may have open at once (as either end).
    pub max_circuits_per_peer: usize,
    /// Bytes per second each circuit may move (both directions together).
    pub bytes_per_sec: f64,
    /// Bytes a circuit may move at once before the rate applies.
    pub burst_bytes: f64,
    /// Bytes a circuit may move in all before it is closed.
    pub max_bytes_per_circuit: u64,
    /// Bytes per second all circuits of one node may move together (both
    /// directions), so opening more circuits buys a node no more bandwidth.
    pub node_bytes_per_sec: f64,
    /// Bytes one node's circuits may move at once before its rate applies.
    pub node_burst_bytes: f64,
    /// Bytes one node's circuits may move in all within [`node_window`];
    /// past it, every circuit of that node is closed.
    ///
    /// [`node_window`]: RelayLimits::node_window
    pub max_bytes_per_node: u64,
    /// The period over which [`max_bytes_per_node`] counts; a node's count
    /// starts over once it has passed.
    ///
    /// [`max_bytes_per_node`]: RelayLimits::max_bytes_per_node
    pub node_window: Duration,
    /// Nodes whose byte counts are remembered at most. Nodes with an open
    /// circuit are always remembered (there are at most twice
    /// `max_circuits` of them); idle ones are forgotten first when full.
    pub max_tracked_nodes: usize,
}

impl Default for RelayLimits {
    fn default() -> Self {
        RelayLimits {
            max_circuits: 1024,
            max_circuits_per_peer: 16,
            bytes_per_sec: 32.0 * 1024.0 * 1024.0,
            burst_bytes: 4.0 * 1024.0 * 1024.0,
            max_bytes_per_circuit: 4 * 1024 * 1024 * 1024,
            node_bytes_per_sec: 64.0 * 1024.0 * 1024.0,
            node_burst_bytes: 8.0 * 1024.0 * 1024.0,
            max_bytes_per_node: 16 * 1024 * 1024 * 1024,
            node_window: Duration::from_secs(3600),
            max_tracked_nodes: 4096,
        }
    }
}

/// Why a relay refused or ended a circuit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayRefusal {
    /// The relay carries as many circuits as it allows.
    #[error("relay is full: {limit} circuits open")]
    Full {
        /// The limit.
        limit: usize,
    },
    /// The peer has as many circuits open as it may.
    #[error("relay quota: at most {limit} circuits per node")]
    PeerCircuits {
        /// The limit.
        limit: usize,
    },
    /// The circuit moved as many bytes as it may.
    #[error("relay quota: {limit} bytes per circuit used up")]
    Volume {
        /// The limit.
        limit: u64,
    },
    /// One end's circuits together moved as many bytes as a node may in
    /// the current window.
    #[error("relay quota: {limit} bytes per node used up")]
    NodeVolume {
        /// The limit.
        limit: u64,
    },
}

/// What one node's circuits moved together.
#[derive(Debug)]
struct NodeUsage {
    bucket: TokenBucket,
    used: u64,
    window_start: Instant,
}

/// Counts the circuits a relay carries, in all and per peer, and the bytes
/// each node's circuits move together.
#[derive(Debug)]
pub struct RelayBook<K> {
    limits: RelayLimits,
    per_peer: HashMap<K, usize>,
    total: usize,
    usage: HashMap<K, NodeUsage>,
}

impl<K: Hash + Eq + Copy> RelayBook<K> {
    /// An empty book.
    pub fn new(limits: RelayLimits) -> Self {
        RelayBook {
            limits,
            per_peer: HashMap::new(),
            total: 0,
            usage: HashMap::new(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> RelayLimits {
        self.limits
    }

    /// Open a circuit between `a` and `b`, or say why not. Each end counts
    /// against its own per-peer quota.
    pub fn open(&mut self, a: K, b: K) -> Result<(), RelayRefusal> {
        if self.total >= self.limits.max_circuits {
            return Err(RelayRefusal::Full {
                limit: self.limits.max_circuits,
            });
        }
        for k in [a, b] {
            if self.per_peer.get(&k).copied().unwrap_or(0) >= self.limits.max_circuits_per_peer {
                return Err(RelayRefusal::PeerCircuits {
                    limit: self.limits.max_circuits_per_peer,
                });
            }
        }
        for k in [a, b] {
            *self.per_peer.entry(k).or_insert(0) += 1;
        }
        self.total += 1;
        Ok(())
    }

    /// A circuit between `a` and `b` ended.
    pub fn close(&mut self, a: K, b: K) {
        for k in [a, b] {
            if let Some(n) = self.per_peer.get_mut(&k) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.per_peer.remove(&k);
                }
            }
        }
        self.total = self.total.saturating_sub(1);
    }

    /// Circuits open now.
    pub fn circuits(&self) -> usize {
        self.total
    }

    /// `bytes` of the circuit between `a` and `b`, metered by `meter`, want
    /// to pass at `now`: how long to hold them first, or why the circuit
    /// must end. The bytes count against the circuit and against each end's
    /// node budget, so one node's circuits share one rate and one volume.
    /// Call it for circuits [`RelayBook::open`] admitted.
    pub fn admit(
        &mut self,
        now: Instant,
        a: K,
        b: K,
        meter: &mut CircuitMeter,
        bytes: usize,
    ) -> Result<Duration, RelayRefusal> {
        let limit = self.limits.max_bytes_per_node;
        for k in [a, b] {
            if let Some(u) = self.usage.get_mut(&k) {
                if now.saturating_duration_since(u.window_start) >= self.limits.node_window {
                    u.used = 0;
                    u.window_start = now;
                }
                if u.used.saturating_add(bytes as u64) > limit {
                    return Err(RelayRefusal::NodeVolume { limit });
                }
            } else if bytes as u64 > limit {
                return Err(RelayRefusal::NodeVolume { limit });
            }
        }
        let mut wait = meter.admit(now, bytes)?;
        for k in [a, b] {
            let u = self.usage_of(k, now);
            u.used = u.used.saturating_add(bytes as u64);
            let n = bytes as f64;
            wait = wait.max(u.bucket.wait_for(now, n));
            // As in CircuitMeter: going negative is fine, the wait covers it.
            u.bucket.tokens -= n;
        }
        Ok(wait)
    }

    /// Bytes the circuits of `node` moved in its current window.
    pub fn node_used(&self, node: &K) -> u64 {
        self.usage.get(node).map_or(0, |u| u.used)
    }

    /// Nodes whose byte counts are remembered now.
    pub fn tracked_nodes(&self) -> usize {
        self.usage.len()
    }

    fn usage_of(&mut self, k: K, now: Instant) -> &mut NodeUsage {
        if !self.usage.contains_key(&k) {
            let cap = self
                .limits
                .max_tracked_nodes
                .max(2 * self.limits.max_circuits)
                .max(2);
            if self.usage.len() >= cap {
                self.forget_idle(now);
            }
        }
        let limits = self.limits;
        self.usage.entry(k).or_insert_with(|| NodeUsage {
            bucket: TokenBucket::new(now, limits.node_bytes_per_sec, limits.node_burst_bytes),
            used: 0,
            window_start: now,
        })
    }

    /// Make room: forget nodes without open circuits, those whose window has
    /// passed first, else the one whose window started longest ago.
    fn forget_idle(&mut self, now: Instant) {
        let window = self.limits.node_window;
        let per_peer = &self.per_peer;
        let before = self.usage.len();
        self.usage.retain(|k, u| {
            per_peer.contains_key(k) || now.saturating_duration_since(u.window_start) < window
        });
        if self.usage.len() < before {
            return;
        }
        // Only a caller that admits bytes without opening the circuit first
        // can fill the table with busy nodes; the bound holds even then.
        let oldest = |idle_only: bool| {
            self.usage
                .iter()
                .filter(|(k, _)| !idle_only || !per_peer.contains_key(k))
                .min_by_key(|(_, u)| u.window_start)
                .map(|(k, _)| *k)
        };
        if let Some(k) = oldest(true).or_else(|| oldest(false)) {
            self.usage.remove(&k);
        }
    }
}

/// Rate and volume accounting of one circuit.
#[derive(Debug)]
pub struct CircuitMeter {
    bucket: TokenBucket,
    used: u64,
    max: u64,
}

impl CircuitMeter {
    /// A fresh meter under `limits`.
    pub fn new(now: Instant, limits: &RelayLimits) -> Self {
        CircuitMeter {
            bucket: TokenBucket::new(now, limits.bytes_per_sec, limits.burst_bytes),
            used: 0,
            max: limits.max_bytes_per_circuit,
        }
    }

    /// `bytes` want to pass at `now`: how long to hold them first, or why
    /// the circuit must end.
    pub fn admit(&mut self, now: Instant, bytes: usize) -> Result<Duration, RelayRefusal> {
        self.used = self.used.saturating_add(bytes as u64);
        if self.used > self.max {
            return Err(RelayRefusal::Volume { limit: self.max });
        }
        let n = bytes as f64;
        let wait = self.bucket.wait_for(now, n);
        // Take the tokens now (going negative is fine: the wait covers it).
        self.bucket.tokens -= n;
        Ok(wait)
    }

    /// Bytes moved so far.
    pub fn used(&self) -> u64 {
        self.used
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_book_enforces_circuit_quotas() {
        let mut b = RelayBook::new(RelayLimits {
            max_circuits: 3,
            max_circuits_per_peer: 2,
            ..RelayLimits::default()
        });
        assert!(b.open(1u32, 2).is_ok());
        assert!(b.open(1, 3).is_ok());
        assert_eq!(b.open(1, 4), Err(RelayRefusal::PeerCircuits { limit: 2 }));
        assert!(b.open(5, 6).is_ok());
        assert_eq!(b.open(7, 8), Err(RelayRefusal::Full { limit: 3 }));
        b.close(1, 2);
        assert!(b.open(1, 4).is_ok());
        assert_eq!(b.circuits(), 3);
    }

    #[test]
    fn circuit_meter_paces_and_caps_volume() {
        let t0 = Instant::now();
        let limits = RelayLimits {
            bytes_per_sec: 1000.0,
            burst_bytes: 1000.0,
            max_bytes_per_circuit: 3000,
            ..RelayLimits::default()
        };
        let mut m = CircuitMeter::new(t0, &limits);
        assert_eq!(m.admit(t0, 1000), Ok(Duration::ZERO));
        let wait = m.admit(t0, 500).unwrap_or_default();
        assert!(wait >= Duration::from_millis(400), "{wait:?}");
        assert_eq!(
            m.admit(t0 + Duration::from_secs(10), 2000),
            Err(RelayRefusal::Volume { limit: 3000 })
        );
    }

    fn node_limits() -> RelayLimits {
        RelayLimits {
            bytes_per_sec: 1e9,
            burst_bytes: 1e9,
            node_bytes_per_sec: 1000.0,
            node_burst_bytes: 1000.0,
            max_bytes_per_node: 5000,
            node_window: Duration::from_secs(60),
            ..RelayLimits::default()
        }
    }

    #[test]
    fn a_nodes_circuits_share_one_rate() {
        let t0 = Instant::now();
        let limits = node_limits();
        let mut book = RelayBook::new(limits);
        assert!(book.open(1u32, 2).is_ok());
        assert!(book.open(1, 3).is_ok());
        let mut c12 = CircuitMeter::new(t0, &limits);
        let mut c13 = CircuitMeter::new(t0, &limits);
        // Node 1's burst is spent on its first circuit...
        assert_eq!(book.admit(t0, 1, 2, &mut c12, 1000), Ok(Duration::ZERO));
        // ...so its second circuit waits, although that circuit's own
        // budget (and node 3's) is untouched.
        let wait = book.admit(t0, 1, 3, &mut c13, 500).unwrap_or_default();
        assert!(wait >= Duration::from_millis(400), "{wait:?}");
        // A circuit between two other nodes does not wait.
        assert!(book.open(4, 5).is_ok());
        let mut c45 = CircuitMeter::new(t0, &limits);
        assert_eq!(book.admit(t0, 4, 5, &mut c45, 1000), Ok(Duration::ZERO));
        assert_eq!(book.node_used(&1), 1500);
        assert_eq!(book.node_used(&3), 500);
    }

    #[test]
    fn a_nodes_circuits_share_one_volume_per_window() {
        let t0 = Instant::now();
        let limits = node_limits();
        let mut book = RelayBook::new(limits);
        let mut meters: Vec<CircuitMeter> =
            (0..3).map(|_| CircuitMeter::new(t0, &limits)).collect();
        let mut t = t0;
        // 3 circuits of node 1, 2000 bytes each (well under 3000/circuit):
        // the third goes over node 1's 5000 bytes.
        for (i, m) in meters.iter_mut().enumerate() {
            let other = 10 + i as u32;
            assert!(book.open(1u32, other).is_ok());
            t += Duration::from_secs(5);
            let r = book.admit(t, 1, other, m, 2000);
            if i < 2 {
                assert!(r.is_ok(), "circuit {i}: {r:?}");
            } else {
                assert_eq!(r, Err(RelayRefusal::NodeVolume { limit: 5000 }));
            }
        }
        assert_eq!(book.node_used(&1), 4000, "refused bytes are not counted");
        // Closing and reopening circuits does not reset the count...
        book.close(1, 10);
        assert!(book.open(1, 20).is_ok());
        let mut fresh = CircuitMeter::new(t, &limits);
        assert_eq!(
            book.admit(t, 1, 20, &mut fresh, 1500),
            Err(RelayRefusal::NodeVolume { limit: 5000 })
        );
        // ...the window passing does (it started with node 1's first bytes).
        let later = t0 + Duration::from_secs(5 + 60);
        assert!(book.admit(later, 1, 20, &mut fresh, 1500).is_ok());
        assert_eq!(book.node_used(&1), 1500);
    }

    #[test]
    fn node_usage_table_is_bounded_and_keeps_busy_nodes() {
        let t0 = Instant::now();
        let limits = RelayLimits {
            max_circuits: 2,
            max_tracked_nodes: 4,
            ..node_limits()
        };
        let mut book = RelayBook::new(limits);
        assert!(book.open(1u32, 2).is_ok());
        let mut busy = CircuitMeter::new(t0, &limits);
        assert!(book.admit(t0, 1, 2, &mut busy, 4000).is_ok());
        // Many short circuits between other nodes come and go.
        for n in 0..50u32 {
            let (a, b) = (100 + 2 * n, 101 + 2 * n);
            assert!(book.open(a, b).is_ok());
            let mut m = CircuitMeter::new(t0, &limits);
            assert!(book.admit(t0, a, b, &mut m, 10).is_ok());
            book.close(a, b);
            assert!(book.tracked_nodes() <= 4, "{}", book.tracked_nodes());
        }
        // The nodes with an open circuit kept their counts.
        assert_eq!(book.node_used(&1), 4000);
        assert_eq!(
            book.admit(t0, 1, 2, &mut busy, 1500),
            Err(RelayRefusal::NodeVolume { limit: 5000 })
        );
    }
}
