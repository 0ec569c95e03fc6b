//! Pacing of plain hole-punch dial waves.

use std::time::{Duration, Instant};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
