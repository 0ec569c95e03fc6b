//! NAT traversal logic, sans IO.
//!
//! This crate decides; `orb-node` does the sending. So far it holds:
//!
//! * [`classify`]: the NAT mapping behaviour from the addresses several
//!   supers observed for one socket (STUN-like discovery).
//! * [`PunchSchedule`]: when to send hole-punch probes, timed to the
//!   measured round trip.
//! * [`TokenBucket`]: rate and volume quotas for relays and punch requests,
//!   and [`PeerLimiter`], a bounded set of them keyed by peer.
//! * [`RelayBook`] and [`CircuitMeter`]: how many relay circuits a super
//!   carries (in all and per peer) and how fast and how much each may move.
//! * [`PathKind`] and [`plan_dial`]: which kind of path two nodes try first
//!   (LAN when they share a public IP, then punching, then a relay).
//!
//! Time is always passed in, so everything here is deterministic and
//! tested without sockets.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How a NAT maps a node's one UDP socket to public addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NatMapping {
    /// Not enough observations to tell.
    Unknown,
    /// No NAT: the observed address is one of the node's own.
    None,
    /// Every destination sees the same public address and port: hole
    /// punching works with anyone who can reach that address.
    EndpointIndependent,
    /// Each destination sees a different port (symmetric NAT): direct
    /// paths are only possible when the other side is easy.
    EndpointDependent,
}

impl NatMapping {
    /// A stable lower-case name for JSON and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            NatMapping::Unknown => "unknown",
            NatMapping::None => "none",
            NatMapping::EndpointIndependent => "endpoint-independent",
            NatMapping::EndpointDependent => "endpoint-dependent",
        }
    }
}

/// Classify from the addresses that different supers observed for the same
/// local socket, and the node's own local addresses.
pub fn classify(local: &[SocketAddr], observed: &[SocketAddr]) -> NatMapping {
    let Some(first) = observed.first() else {
        return NatMapping::Unknown;
    };
    if observed.iter().all(|o| local.contains(o)) {
        return NatMapping::None;
    }
    if observed.len() < 2 {
        return NatMapping::Unknown;
    }
    if observed.iter().all(|o| o == first) {
        NatMapping::EndpointIndependent
    } else {
        NatMapping::EndpointDependent
    }
}

/// When to send hole-punch probes: a burst at once, then retries spaced by
/// the measured round trip (bounded below so a tiny RTT does not flood, and
/// above so a huge one does not stall), until a deadline.
#[derive(Debug, Clone)]
pub struct PunchSchedule {
    next: Instant,
    interval: Duration,
    deadline: Instant,
    sent: u32,
    max_probes: u32,
}

impl PunchSchedule {
    /// Start punching at `now`, with round trip `rtt`, giving up after `budget`.
    pub fn new(now: Instant, rtt: Duration, budget: Duration) -> Self {
        let interval = (rtt / 2).clamp(Duration::from_millis(10), Duration::from_millis(500));
        PunchSchedule {
            next: now,
            interval,
            deadline: now + budget,
            sent: 0,
            max_probes: 32,
        }
    }

    /// Whether a probe is due at `now`; if so, it is counted as sent.
    pub fn poll(&mut self, now: Instant) -> bool {
        if self.is_done(now) || now < self.next {
            return false;
        }
        self.sent += 1;
        self.next = now + self.interval;
        true
    }

    /// When the next probe is due, if any.
    pub fn next_at(&self, now: Instant) -> Option<Instant> {
        (!self.is_done(now)).then_some(self.next)
    }

    /// Out of time or probes.
    pub fn is_done(&self, now: Instant) -> bool {
        now >= self.deadline || self.sent >= self.max_probes
    }

    /// Probes sent so far.
    pub fn sent(&self) -> u32 {
        self.sent
    }
}

/// A token bucket: `rate` tokens per second, at most `burst` saved up.
/// Used for relay bandwidth (tokens = bytes) and request floods (tokens =
/// requests).
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(now: Instant, rate: f64, burst: f64) -> Self {
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.last = now;
    }

    /// Take `n` tokens if there are enough.
    pub fn try_take(&mut self, now: Instant, n: f64) -> bool {
        self.refill(now);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    /// How long until `n` tokens are available (zero if they are now).
    pub fn wait_for(&mut self, now: Instant, n: f64) -> Duration {
        self.refill(now);
        if self.tokens >= n || self.rate <= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((n - self.tokens) / self.rate)
    }
}

/// A token bucket per peer, with a bound on how many peers are tracked.
///
/// When the table is full and a new peer shows up, the table starts over:
/// a flood from thousands of identities then meets full buckets again,
/// which is still bounded, and memory never grows past `max_peers`.
#[derive(Debug)]
pub struct PeerLimiter<K> {
    buckets: HashMap<K, TokenBucket>,
    rate: f64,
    burst: f64,
    max_peers: usize,
}

impl<K: Hash + Eq + Copy> PeerLimiter<K> {
    /// `rate` requests per second per peer, `burst` at once, `max_peers` tracked.
    pub fn new(rate: f64, burst: f64, max_peers: usize) -> Self {
        PeerLimiter {
            buckets: HashMap::new(),
            rate,
            burst,
            max_peers: max_peers.max(1),
        }
    }

    /// Whether `peer` may make one more request at `now` (and count it).
    pub fn allow(&mut self, peer: K, now: Instant) -> bool {
        if !self.buckets.contains_key(&peer) && self.buckets.len() >= self.max_peers {
            self.buckets.clear();
        }
        let (rate, burst) = (self.rate, self.burst);
        self.buckets
            .entry(peer)
            .or_insert_with(|| TokenBucket::new(now, rate, burst))
            .try_take(now, 1.0)
    }

    /// Peers tracked now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no peer is tracked.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

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
}

impl Default for RelayLimits {
    fn default() -> Self {
        RelayLimits {
            max_circuits: 1024,
            max_circuits_per_peer: 16,
            bytes_per_sec: 32.0 * 1024.0 * 1024.0,
            burst_bytes: 4.0 * 1024.0 * 1024.0,
            max_bytes_per_circuit: 4 * 1024 * 1024 * 1024,
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
}

/// Counts the circuits a relay carries, in all and per peer.
#[derive(Debug)]
pub struct RelayBook<K> {
    limits: RelayLimits,
    per_peer: HashMap<K, usize>,
    total: usize,
}

impl<K: Hash + Eq + Copy> RelayBook<K> {
    /// An empty book.
    pub fn new(limits: RelayLimits) -> Self {
        RelayBook {
            limits,
            per_peer: HashMap::new(),
            total: 0,
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

/// How two nodes reach each other, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PathKind {
    /// Directly, over their shared LAN.
    DirectLan,
    /// Directly, over the internet (public addresses or a punched hole).
    Direct,
    /// Through a super node's relay.
    Relayed,
}

impl PathKind {
    /// The name used in JSON, the CLI and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            PathKind::DirectLan => "direct-lan",
            PathKind::Direct => "direct",
            PathKind::Relayed => "relayed",
        }
    }
}

/// What one side knows about a node's addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeAddrs {
    /// Addresses supers observed (public side of its NAT).
    pub observed: Vec<SocketAddr>,
    /// Its own socket addresses (LAN side).
    pub local: Vec<SocketAddr>,
}

impl NodeAddrs {
    /// Every address, observed ones first, without duplicates.
    pub fn all(&self) -> Vec<SocketAddr> {
        dedup(self.observed.iter().chain(self.local.iter()).copied())
    }

    /// The public IPs it was seen from.
    pub fn public_ips(&self) -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> = self.observed.iter().map(SocketAddr::ip).collect();
        ips.sort();
        ips.dedup();
        ips
    }
}

/// The dialing plan from `me` to `peer`: first the LAN addresses when both
/// were seen from the same public IP (same home or office NAT), then every
/// address for a coordinated punch. Duplicates are removed; order is the
/// order to try.
pub fn plan_dial(me: &NodeAddrs, peer: &NodeAddrs) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
    let mine = me.public_ips();
    let same_nat = peer.public_ips().iter().any(|ip| mine.contains(ip));
    let lan: Vec<SocketAddr> = if same_nat {
        dedup(peer.local.iter().copied())
    } else {
        Vec::new()
    };
    let punch = dedup(peer.observed.iter().chain(peer.local.iter()).copied());
    (lan, punch)
}

fn dedup(addrs: impl Iterator<Item = SocketAddr>) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for a in addrs {
        if !a.ip().is_unspecified() && a.port() != 0 && !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    #[test]
    fn classification() {
        let local = [a("10.0.0.2:5000")];
        assert_eq!(classify(&local, &[]), NatMapping::Unknown);
        assert_eq!(
            classify(&local, &[a("10.0.0.2:5000"), a("10.0.0.2:5000")]),
            NatMapping::None
        );
        assert_eq!(classify(&local, &[a("1.2.3.4:6000")]), NatMapping::Unknown);
        assert_eq!(
            classify(&local, &[a("1.2.3.4:6000"), a("1.2.3.4:6000")]),
            NatMapping::EndpointIndependent
        );
        assert_eq!(
            classify(&local, &[a("1.2.3.4:6000"), a("1.2.3.4:6001")]),
            NatMapping::EndpointDependent
        );
    }

    #[test]
    fn punch_schedule_is_paced_and_bounded() {
        let t0 = Instant::now();
        let mut p = PunchSchedule::new(t0, Duration::from_millis(40), Duration::from_secs(2));
        assert!(p.poll(t0));
        assert!(!p.poll(t0 + Duration::from_millis(5)));
        assert!(p.poll(t0 + Duration::from_millis(20)));
        let mut t = t0;
        while !p.is_done(t) {
            p.poll(t);
            t += Duration::from_millis(1);
        }
        assert!(p.sent() <= 32);
        assert_eq!(p.next_at(t), None);
    }

    #[test]
    fn peer_limiter_is_per_peer_and_bounded() {
        let t0 = Instant::now();
        let mut l = PeerLimiter::new(1.0, 2.0, 3);
        assert!(l.allow(1u32, t0));
        assert!(l.allow(1u32, t0));
        assert!(!l.allow(1u32, t0), "third request in a burst of 2");
        assert!(l.allow(2u32, t0), "another peer has its own bucket");
        for p in 10..100u32 {
            l.allow(p, t0);
            assert!(l.len() <= 3);
        }
    }

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

    #[test]
    fn dial_plan_prefers_lan_behind_the_same_nat() {
        let me = NodeAddrs {
            observed: vec![a("1.2.3.4:6000")],
            local: vec![a("192.168.1.2:7100")],
        };
        let neighbour = NodeAddrs {
            observed: vec![a("1.2.3.4:6001")],
            local: vec![a("192.168.1.3:7100")],
        };
        let (lan, punch) = plan_dial(&me, &neighbour);
        assert_eq!(lan, vec![a("192.168.1.3:7100")]);
        assert_eq!(punch, vec![a("1.2.3.4:6001"), a("192.168.1.3:7100")]);
        let stranger = NodeAddrs {
            observed: vec![a("5.6.7.8:6000"), a("5.6.7.8:6000")],
            local: vec![a("10.0.0.9:7100"), a("0.0.0.0:7100")],
        };
        let (lan, punch) = plan_dial(&me, &stranger);
        assert!(lan.is_empty());
        assert_eq!(punch, vec![a("5.6.7.8:6000"), a("10.0.0.9:7100")]);
    }

    #[test]
    fn token_bucket_limits_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(t0, 10.0, 5.0);
        for _ in 0..5 {
            assert!(b.try_take(t0, 1.0));
        }
        assert!(!b.try_take(t0, 1.0));
        assert!(b.wait_for(t0, 1.0) > Duration::ZERO);
        assert!(b.try_take(t0 + Duration::from_millis(100), 1.0));
    }
}
