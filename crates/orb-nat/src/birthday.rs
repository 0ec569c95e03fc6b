//! The birthday punch between a Strict (per-destination mapping) node and
//! an endpoint-independent one: plans, pacing and bounds.
//!
//! The Strict side ([`BirthdayOpener`]) opens `sockets` mappings toward the
//! other side's one known address; the other side ([`BirthdayProber`])
//! sends probes to random distinct ports of the Strict side's public IP.
//! With `n` mappings among `R` possible ports and `k` probes, all miss
//! with probability about `exp(-n k / R)`: for 256 x 1,024 over the 64,512
//! ports Linux picks from, about 1.7%.
//!
//! Everything a birthday punch sends is bounded: sockets and opener rounds
//! per attempt, probes per attempt, probes per second per attempt, packets
//! per second across all attempts of a node ([`ProbeBudget`]), and attempts
//! per peer over time ([`PunchBackoff`]).

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::TokenBucket;

/// Most sockets the Strict side opens per attempt.
pub const MAX_BIRTHDAY_SOCKETS: usize = 256;
/// Most probes the other side sends per attempt.
pub const MAX_BIRTHDAY_PROBES: u32 = 4096;
/// Ports below this are never probed: NATs allocate above it (Linux uses
/// 1024-65535 for sources at or above 1024), and low ports are services.
pub const LOWEST_PROBE_PORT: u16 = 1024;

/// The bounds of birthday punching. [`BirthdayLimits::clamped`] keeps
/// every value within the hard limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BirthdayLimits {
    /// Sockets (mappings) the Strict side opens per attempt.
    pub sockets: usize,
    /// Rounds of openers the Strict side sends (one packet per socket per
    /// round); later rounds only matter if an opener was lost.
    pub opener_rounds: u32,
    /// Time between opener rounds.
    pub opener_interval: Duration,
    /// Probes the other side sends per attempt.
    pub max_probes: u32,
    /// Probes per second of one attempt.
    pub probes_per_sec: f64,
    /// Probes one attempt may send at once before its rate applies.
    pub probe_burst: f64,
    /// How long the prober waits before its first probe, so the Strict
    /// side's mappings exist when probes arrive: a probe that reaches a
    /// port before its mapping exists is wasted, and it leaves a conntrack
    /// entry that keeps the Strict NAT from ever choosing that port.
    pub prober_delay: Duration,
    /// How long one attempt may take, either side.
    pub budget: Duration,
    /// Packets per second (openers and probes) across every attempt of a
    /// node; see [`ProbeBudget`].
    pub global_packets_per_sec: f64,
    /// The first wait after a failed attempt to a peer; doubled per
    /// further failure.
    pub backoff_base: Duration,
    /// The longest wait after failures.
    pub backoff_max: Duration,
    /// Peers whose failures are remembered at most.
    pub max_backoff_peers: usize,
}

impl Default for BirthdayLimits {
    fn default() -> Self {
        BirthdayLimits {
            sockets: MAX_BIRTHDAY_SOCKETS,
            opener_rounds: 2,
            opener_interval: Duration::from_secs(1),
            max_probes: 1024,
            // 1,024 probes in about a second; the first hit comes after
            // about 250 probes on average.
            probes_per_sec: 1000.0,
            probe_burst: 16.0,
            prober_delay: Duration::from_millis(50),
            budget: Duration::from_secs(4),
            global_packets_per_sec: 2000.0,
            backoff_base: Duration::from_secs(30),
            backoff_max: Duration::from_secs(30 * 60),
            max_backoff_peers: 1024,
        }
    }
}

impl BirthdayLimits {
    /// These limits with every value within the hard bounds: at most
    /// [`MAX_BIRTHDAY_SOCKETS`] sockets and [`MAX_BIRTHDAY_PROBES`] probes,
    /// positive rates, at least one socket, round, probe and tracked peer.
    pub fn clamped(self) -> Self {
        let rate = |r: f64, fallback: f64| {
            if r.is_finite() && r > 0.0 {
                r
            } else {
                fallback
            }
        };
        BirthdayLimits {
            sockets: self.sockets.clamp(1, MAX_BIRTHDAY_SOCKETS),
            opener_rounds: self.opener_rounds.clamp(1, 16),
            max_probes: self.max_probes.clamp(1, MAX_BIRTHDAY_PROBES),
            probes_per_sec: rate(self.probes_per_sec, 1.0),
            probe_burst: rate(self.probe_burst, 1.0).max(1.0),
            global_packets_per_sec: rate(self.global_packets_per_sec, 1.0),
            max_backoff_peers: self.max_backoff_peers.max(1),
            backoff_max: self.backoff_max.max(self.backoff_base),
            ..self
        }
    }

    /// Packets one attempt sends at most: `(opener side, prober side)`.
    pub fn packets_per_attempt(&self) -> (u64, u64) {
        let l = self.clamped();
        (
            l.sockets as u64 * u64::from(l.opener_rounds),
            u64::from(l.max_probes),
        )
    }
}

/// Random distinct ports at or above [`LOWEST_PROBE_PORT`]: no port twice,
/// at most `max` of them.
#[derive(Debug)]
pub struct PortSequence {
    rng: StdRng,
    used: HashSet<u16>,
    max: usize,
}

impl PortSequence {
    /// A sequence of at most `max` ports (capped at
    /// [`MAX_BIRTHDAY_PROBES`]), drawn from `seed`.
    pub fn new(seed: u64, max: u32) -> Self {
        let max = max.min(MAX_BIRTHDAY_PROBES) as usize;
        PortSequence {
            rng: StdRng::seed_from_u64(seed),
            used: HashSet::with_capacity(max),
            max,
        }
    }

    /// Ports handed out so far.
    pub fn len(&self) -> usize {
        self.used.len()
    }

    /// Whether no port was handed out yet.
    pub fn is_empty(&self) -> bool {
        self.used.is_empty()
    }
}

impl Iterator for PortSequence {
    type Item = u16;

    fn next(&mut self) -> Option<u16> {
        if self.used.len() >= self.max {
            return None;
        }
        // At most 4,096 of 64,512 ports are ever taken, so a draw is new
        // with probability above 93%: the loop ends after a try or two.
        loop {
            let port = self.rng.gen_range(LOWEST_PROBE_PORT..=u16::MAX);
            if self.used.insert(port) {
                return Some(port);
            }
        }
    }
}

/// Packets per second across every birthday attempt of a node, openers and
/// probes alike, so many punches at once cannot turn a node into a flood.
#[derive(Debug, Clone)]
pub struct ProbeBudget {
    bucket: TokenBucket,
}

impl ProbeBudget {
    /// A full budget of `limits.global_packets_per_sec`, with room for one
    /// opener round or a second of probes at once.
    pub fn new(now: Instant, limits: &BirthdayLimits) -> Self {
        let l = limits.clamped();
        let burst = l.global_packets_per_sec.max(l.sockets as f64);
        ProbeBudget {
            bucket: TokenBucket::new(now, l.global_packets_per_sec, burst),
        }
    }

    fn wait_for(&mut self, now: Instant, n: usize) -> Duration {
        self.bucket.wait_for(now, n as f64)
    }

    fn take(&mut self, now: Instant, n: usize) -> bool {
        self.bucket.try_take(now, n as f64)
    }
}

/// The Strict side of one attempt: when to send a round of openers (one
/// per socket, all toward the other side's address).
#[derive(Debug, Clone)]
pub struct BirthdayOpener {
    sockets: usize,
    next: Instant,
    interval: Duration,
    rounds_left: u32,
    deadline: Instant,
}

impl BirthdayOpener {
    /// An attempt starting at `now`.
    pub fn new(now: Instant, limits: &BirthdayLimits) -> Self {
        let l = limits.clamped();
        BirthdayOpener {
            sockets: l.sockets,
            next: now,
            interval: l.opener_interval,
            rounds_left: l.opener_rounds,
            deadline: now + l.budget,
        }
    }

    /// Sockets to open for this attempt.
    pub fn sockets(&self) -> usize {
        self.sockets
    }

    /// Whether a round of openers is due at `now`; if so it is counted
    /// against `budget` and as sent.
    pub fn poll(&mut self, now: Instant, budget: &mut ProbeBudget) -> bool {
        if self.rounds_left == 0 || now >= self.deadline || now < self.next {
            return false;
        }
        if !budget.take(now, self.sockets) {
            return false;
        }
        self.rounds_left -= 1;
        self.next = now + self.interval;
        true
    }

    /// When to poll next, or `None` once no round is left.
    pub fn next_at(&mut self, now: Instant, budget: &mut ProbeBudget) -> Option<Instant> {
        if self.rounds_left == 0 || now >= self.deadline {
            return None;
        }
        let wait = budget.wait_for(now, self.sockets);
        Some(self.next.max(now + wait))
    }

    /// When the attempt gives up waiting for a probe.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

/// The endpoint-independent side of one attempt: which address to probe
/// next and when.
#[derive(Debug)]
pub struct BirthdayProber {
    target: IpAddr,
    ports: PortSequence,
    pace: TokenBucket,
    start: Instant,
    deadline: Instant,
}

impl BirthdayProber {
    /// An attempt starting at `now` against the Strict side's public IP
    /// `target`, with ports drawn from `seed` (random in a node; fixed in
    /// tests).
    pub fn new(now: Instant, target: IpAddr, seed: u64, limits: &BirthdayLimits) -> Self {
        let l = limits.clamped();
        let start = now + l.prober_delay;
        BirthdayProber {
            target,
            ports: PortSequence::new(seed, l.max_probes),
            pace: TokenBucket::new(start, l.probes_per_sec, l.probe_burst),
            start,
            deadline: now + l.budget,
        }
    }

    /// The next address to probe, if one is due at `now` (counted against
    /// this attempt's pace and `budget`).
    pub fn poll(&mut self, now: Instant, budget: &mut ProbeBudget) -> Option<SocketAddr> {
        if self.is_done(now) || now < self.start {
            return None;
        }
        if self.pace.wait_for(now, 1.0) > Duration::ZERO || budget.wait_for(now, 1) > Duration::ZERO
        {
            return None;
        }
        let port = self.ports.next()?;
        self.pace.try_take(now, 1.0);
        budget.take(now, 1);
        Some(SocketAddr::new(self.target, port))
    }

    /// When to poll next, or `None` once the attempt is over.
    pub fn next_at(&mut self, now: Instant, budget: &mut ProbeBudget) -> Option<Instant> {
        if self.is_done(now) {
            return None;
        }
        if now < self.start {
            return Some(self.start);
        }
        let wait = self.pace.wait_for(now, 1.0).max(budget.wait_for(now, 1));
        Some(now + wait)
    }

    /// Out of time or out of probes.
    pub fn is_done(&self, now: Instant) -> bool {
        now >= self.deadline || self.ports.len() >= self.ports.max
    }

    /// Probes sent so far.
    pub fn sent(&self) -> usize {
        self.ports.len()
    }

    /// When the attempt gives up.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    until: Instant,
}

/// Per-peer backoff after failed punch attempts: exponential from a base,
/// capped, in a bounded table.
#[derive(Debug)]
pub struct PunchBackoff<K> {
    entries: HashMap<K, Failures>,
    base: Duration,
    max: Duration,
    max_peers: usize,
}

impl<K: Hash + Eq + Copy> PunchBackoff<K> {
    /// A table under `limits` (base, cap and size).
    pub fn new(limits: &BirthdayLimits) -> Self {
        let l = limits.clamped();
        PunchBackoff {
            entries: HashMap::new(),
            base: l.backoff_base,
            max: l.backoff_max,
            max_peers: l.max_backoff_peers,
        }
    }

    /// `Ok` if `peer` may be tried at `now`, else how long to wait.
    pub fn check(&self, peer: &K, now: Instant) -> Result<(), Duration> {
        match self.entries.get(peer) {
            Some(f) if f.until > now => Err(f.until - now),
            _ => Ok(()),
        }
    }

    /// An attempt to `peer` failed at `now`; returns the wait imposed.
    pub fn failed(&mut self, peer: K, now: Instant) -> Duration {
        if !self.entries.contains_key(&peer) && self.entries.len() >= self.max_peers {
            self.make_room(now);
        }
        let f = self.entries.entry(peer).or_insert(Failures {
            count: 0,
            until: now,
        });
        f.count = f.count.saturating_add(1);
        let doublings = (f.count - 1).min(31);
        let wait = self
            .base
            .checked_mul(1u32 << doublings)
            .unwrap_or(self.max)
            .min(self.max);
        f.until = now + wait;
        wait
    }

    /// An attempt to `peer` succeeded: forget its failures.
    pub fn succeeded(&mut self, peer: &K) {
        self.entries.remove(peer);
    }

    /// Failures remembered for `peer`.
    pub fn failures(&self, peer: &K) -> u32 {
        self.entries.get(peer).map_or(0, |f| f.count)
    }

    /// Peers remembered now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no peer is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Forget peers whose wait is over; if none is, the one whose wait
    /// ends first (under a flood of peers, a wait is cut short rather than
    /// the table growing).
    fn make_room(&mut self, now: Instant) {
        let before = self.entries.len();
        self.entries.retain(|_, f| f.until > now);
        if self.entries.len() < before {
            return;
        }
        if let Some(k) = self
            .entries
            .iter()
            .min_by_key(|(_, f)| f.until)
            .map(|(k, _)| *k)
        {
            self.entries.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn ip() -> IpAddr {
        IpAddr::from([203, 0, 113, 7])
    }

    #[test]
    fn ports_are_distinct_random_high_and_bounded() {
        let ports: Vec<u16> = PortSequence::new(1, 1024).collect();
        assert_eq!(ports.len(), 1024);
        assert!(ports.iter().all(|&p| p >= LOWEST_PROBE_PORT));
        let distinct: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "no port twice");
        // Spread over the range, not a run of neighbours.
        let (lo, hi) = (ports.iter().min(), ports.iter().max());
        assert!(lo < Some(&8000) && hi > Some(&58000), "{lo:?}..{hi:?}");
        // Another seed, another order; the same seed, the same order.
        let other: Vec<u16> = PortSequence::new(2, 1024).collect();
        assert_ne!(ports, other);
        assert_eq!(ports, PortSequence::new(1, 1024).collect::<Vec<_>>());
        // The hard cap holds whatever is asked for.
        assert_eq!(
            PortSequence::new(3, u32::MAX).count(),
            MAX_BIRTHDAY_PROBES as usize
        );
    }

    #[test]
    fn limits_are_clamped_to_the_hard_bounds() {
        let wild = BirthdayLimits {
            sockets: 100_000,
            max_probes: 1_000_000,
            probes_per_sec: f64::NAN,
            global_packets_per_sec: -5.0,
            opener_rounds: 0,
            max_backoff_peers: 0,
            ..BirthdayLimits::default()
        }
        .clamped();
        assert_eq!(wild.sockets, MAX_BIRTHDAY_SOCKETS);
        assert_eq!(wild.max_probes, MAX_BIRTHDAY_PROBES);
        assert!(wild.probes_per_sec > 0.0 && wild.global_packets_per_sec > 0.0);
        assert_eq!(wild.opener_rounds, 1);
        assert_eq!(wild.max_backoff_peers, 1);
        let d = BirthdayLimits::default();
        assert_eq!(d.packets_per_attempt(), (512, 1024));
    }

    /// Runs a prober on a 1 ms clock; returns the send times.
    fn run_prober(p: &mut BirthdayProber, budget: &mut ProbeBudget, t0: Instant) -> Vec<Instant> {
        let mut sent = Vec::new();
        let mut t = t0;
        while !p.is_done(t) {
            while let Some(addr) = p.poll(t, budget) {
                assert_eq!(addr.ip(), ip());
                sent.push(t);
            }
            match p.next_at(t, budget) {
                Some(next) => t = next.max(t + MS),
                None => break,
            }
        }
        sent
    }

    #[test]
    fn prober_waits_paces_and_stops_at_its_bound() {
        let t0 = Instant::now();
        let limits = BirthdayLimits {
            max_probes: 300,
            probes_per_sec: 1000.0,
            probe_burst: 10.0,
            prober_delay: 50 * MS,
            budget: Duration::from_secs(10),
            global_packets_per_sec: 1e6,
            ..BirthdayLimits::default()
        };
        let mut budget = ProbeBudget::new(t0, &limits);
        let mut p = BirthdayProber::new(t0, ip(), 7, &limits);
        assert_eq!(p.poll(t0, &mut budget), None, "waits for the openers");
        assert_eq!(p.next_at(t0, &mut budget), Some(t0 + 50 * MS));
        let sent = run_prober(&mut p, &mut budget, t0);
        assert_eq!(sent.len(), 300, "exactly max_probes");
        assert!(sent[0] >= t0 + 50 * MS);
        // Burst of 10, then 1 per ms: 300 probes take about 290 ms.
        let span = sent[sent.len() - 1] - sent[0];
        assert!(span >= 285 * MS && span <= 300 * MS, "{span:?}");
        // No window of 100 ms holds more than rate x 100 ms + burst.
        for (i, &s) in sent.iter().enumerate() {
            let in_window = sent[i..].iter().take_while(|&&x| x < s + 100 * MS).count();
            assert!(in_window <= 110, "{in_window} probes in 100 ms");
        }
        assert!(p.is_done(sent[sent.len() - 1]));
        assert_eq!(p.poll(t0 + Duration::from_secs(5), &mut budget), None);
    }

    #[test]
    fn prober_gives_up_at_the_deadline() {
        let t0 = Instant::now();
        let limits = BirthdayLimits {
            max_probes: 4096,
            probes_per_sec: 100.0,
            probe_burst: 1.0,
            prober_delay: Duration::ZERO,
            budget: Duration::from_secs(2),
            ..BirthdayLimits::default()
        };
        let mut budget = ProbeBudget::new(t0, &limits);
        let mut p = BirthdayProber::new(t0, ip(), 1, &limits);
        let sent = run_prober(&mut p, &mut budget, t0);
        assert!((195..=202).contains(&sent.len()), "{}", sent.len());
        assert!(sent.iter().all(|&s| s < t0 + Duration::from_secs(2)));
        assert_eq!(p.next_at(t0 + Duration::from_secs(2), &mut budget), None);
    }

    #[test]
    fn global_budget_is_shared_across_attempts() {
        let t0 = Instant::now();
        let limits = BirthdayLimits {
            sockets: 100,
            max_probes: 4096,
            probes_per_sec: 1000.0,
            probe_burst: 1.0,
            prober_delay: Duration::ZERO,
            budget: Duration::from_secs(1),
            global_packets_per_sec: 1000.0,
            ..BirthdayLimits::default()
        };
        let mut budget = ProbeBudget::new(t0, &limits);
        let mut probers: Vec<BirthdayProber> = (0..4)
            .map(|i| BirthdayProber::new(t0, ip(), i, &limits))
            .collect();
        let mut total = 0;
        let mut t = t0;
        while t < t0 + Duration::from_secs(1) {
            for p in &mut probers {
                while p.poll(t, &mut budget).is_some() {
                    total += 1;
                }
            }
            t += MS;
        }
        // Four attempts at 1000/s each would send ~4000; the node-wide
        // budget allows 1000/s plus its initial burst (1000).
        assert!(total <= 2001, "{total}");
        assert!(total >= 1900, "{total}");
        // An opener round needs `sockets` packets of the same budget.
        let mut o = BirthdayOpener::new(t, &limits);
        assert!(!o.poll(t, &mut budget), "budget spent");
        let next = o.next_at(t, &mut budget).unwrap_or(t);
        assert!(next >= t + 90 * MS, "{:?}", next - t);
        assert!(o.poll(next + MS, &mut budget));
    }

    #[test]
    fn opener_sends_bounded_rounds() {
        let t0 = Instant::now();
        let limits = BirthdayLimits {
            sockets: 256,
            opener_rounds: 2,
            opener_interval: Duration::from_secs(1),
            budget: Duration::from_secs(4),
            ..BirthdayLimits::default()
        };
        let mut budget = ProbeBudget::new(t0, &limits);
        let mut o = BirthdayOpener::new(t0, &limits);
        assert_eq!(o.sockets(), 256);
        assert!(o.poll(t0, &mut budget));
        assert!(!o.poll(t0 + 10 * MS, &mut budget));
        assert_eq!(
            o.next_at(t0 + 10 * MS, &mut budget),
            Some(t0 + Duration::from_secs(1))
        );
        assert!(o.poll(t0 + Duration::from_secs(1), &mut budget));
        assert!(
            !o.poll(t0 + Duration::from_secs(3), &mut budget),
            "two rounds only"
        );
        assert_eq!(o.next_at(t0 + Duration::from_secs(3), &mut budget), None);
        assert_eq!(o.deadline(), t0 + Duration::from_secs(4));
    }

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let t0 = Instant::now();
        let limits = BirthdayLimits {
            backoff_base: Duration::from_secs(10),
            backoff_max: Duration::from_secs(60),
            ..BirthdayLimits::default()
        };
        let mut b = PunchBackoff::new(&limits);
        assert_eq!(b.check(&1u32, t0), Ok(()));
        let waits: Vec<u64> = (0..6).map(|_| b.failed(1u32, t0).as_secs()).collect();
        assert_eq!(waits, vec![10, 20, 40, 60, 60, 60]);
        assert_eq!(b.check(&1, t0), Err(Duration::from_secs(60)));
        assert_eq!(b.check(&1, t0 + Duration::from_secs(60)), Ok(()));
        assert_eq!(b.check(&2, t0), Ok(()), "other peers are not held back");
        assert_eq!(b.failures(&1), 6);
        b.succeeded(&1);
        assert_eq!(b.failures(&1), 0);
        assert_eq!(b.check(&1, t0), Ok(()));
        // Many failures never overflow.
        for _ in 0..100 {
            b.failed(3, t0);
        }
        assert_eq!(b.check(&3, t0), Err(Duration::from_secs(60)));
    }

    #[test]
    fn backoff_table_is_bounded() {
        let t0 = Instant::now();
        let limits = BirthdayLimits {
            max_backoff_peers: 8,
            ..BirthdayLimits::default()
        };
        let mut b = PunchBackoff::new(&limits);
        for peer in 0..1000u32 {
            b.failed(peer, t0 + MS * peer);
            assert!(b.len() <= 8);
        }
        // The newest failures are the ones remembered.
        assert!(b.check(&999, t0 + Duration::from_secs(1)).is_err());
        assert_eq!(b.check(&0, t0 + Duration::from_secs(1)), Ok(()));
    }
}
