//! Token buckets: rate and volume quotas, alone or one per peer.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// A token bucket: `rate` tokens per second, at most `burst` saved up.
/// Used for relay bandwidth (tokens = bytes) and request floods (tokens =
/// requests).
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    pub(crate) tokens: f64,
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

#[cfg(test)]
mod tests {
    use super::*;

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
