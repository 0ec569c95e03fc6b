//! NAT traversal logic, sans IO.
//!
//! This crate decides; `orb-node` does the sending. So far it holds:
//!
//! * [`classify`]: the NAT mapping behaviour from the addresses several
//!   supers observed for one socket (STUN-like discovery).
//! * [`PunchSchedule`]: when to send hole-punch probes, timed to the
//!   measured round trip.
//! * [`TokenBucket`]: rate and volume quotas for relays and punch requests.
//!
//! Time is always passed in, so everything here is deterministic and
//! tested without sockets.

use std::net::SocketAddr;
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
