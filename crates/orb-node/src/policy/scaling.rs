//! When a function gets one more replica or one fewer.
//!
//! Once a second the owner super feeds each function's load into its
//! [`Autoscaler`]: load at or above the target (calls in flight per live
//! replica), or calls refused as busy, for `up_after` adds a replica up to
//! the function's maximum; no calls for `idle` removes one down to its
//! minimum. After a change it waits (`up_after` before the next scale-up,
//! `idle` before the next scale-down) so one burst is not counted twice.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use orb_proto::OrbId;
use serde::Serialize;

/// Scaling decisions kept per function.
pub const MAX_DECISIONS: usize = 32;

/// The operator's scaling settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScaleConfig {
    /// Calls in flight per replica that count as hot.
    pub target: f64,
    /// Hot for this long adds a replica.
    pub up_after: Duration,
    /// No calls for this long removes a replica added under load.
    pub idle: Duration,
}

/// One function's load at a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    /// Calls in flight now.
    pub in_flight: u32,
    /// Live replicas.
    pub holders: usize,
    /// Calls refused as busy since the start (a running total).
    pub busy_total: u64,
    /// Wall-clock time of the last call, in ms since the epoch.
    pub last_call_ms: u64,
}

/// What to do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Place replicas until there are `to`.
    ScaleUp {
        /// Replicas wanted now.
        to: u32,
    },
    /// Remove one replica, down to `to`.
    ScaleDown {
        /// Replicas wanted now.
        to: u32,
    },
}

/// One scaling decision, shown by `GET /api/functions/NAME`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    /// When, in ms since the epoch.
    pub time_ms: u64,
    /// `scale-up` or `scale-down`.
    pub action: &'static str,
    /// Replicas wanted after it.
    pub replicas: u32,
    /// Why, in words.
    pub reason: String,
}

/// The scaling state of one function.
#[derive(Debug, Clone)]
pub struct Autoscaler {
    /// Replicas wanted now.
    pub desired: u32,
    hot_ticks: u32,
    busy_seen: u64,
    last_change: Instant,
    decisions: VecDeque<Decision>,
}

impl Autoscaler {
    /// A function that wants `desired` replicas, as of `now`.
    pub fn new(desired: u32, now: Instant) -> Self {
        Autoscaler {
            desired,
            hot_ticks: 0,
            busy_seen: 0,
            last_change: now,
            decisions: VecDeque::new(),
        }
    }

    /// The decisions so far, newest first.
    pub fn decisions(&self) -> impl Iterator<Item = &Decision> {
        self.decisions.iter().rev()
    }

    /// One tick (a second) of the function's life: `min`/`max` are its
    /// replica bounds, `now`/`now_ms` the clock.
    pub fn tick(
        &mut self,
        now: Instant,
        now_ms: u64,
        (min, max): (u32, u32),
        load: Load,
        cfg: &ScaleConfig,
    ) -> Option<Action> {
        let up_ticks = u32::try_from(cfg.up_after.as_secs().max(1)).unwrap_or(u32::MAX);
        let max = max.max(min);
        if self.desired < min {
            self.desired = min;
        }
        let live = load.holders.max(1) as f64;
        let busy_new = load.busy_total.saturating_sub(self.busy_seen);
        self.busy_seen = load.busy_total;
        let per_replica = f64::from(load.in_flight) / live;
        let hot = per_replica >= cfg.target || busy_new > 0;
        self.hot_ticks = if hot { self.hot_ticks + 1 } else { 0 };
        let since_change = now.saturating_duration_since(self.last_change);
        let idle_ms = now_ms.saturating_sub(load.last_call_ms);
        if self.hot_ticks >= up_ticks
            && self.desired < max
            && since_change >= cfg.up_after
            && load.holders as u32 >= self.desired
        {
            let reason = if busy_new > 0 {
                format!(
                    "calls answered busy for {up_ticks} s with {} replicas",
                    load.holders
                )
            } else {
                format!(
                    "{per_replica:.1} calls in flight per replica for {up_ticks} s (target {})",
                    cfg.target
                )
            };
            let to = self.desired + 1;
            self.decide(now, now_ms, "scale-up", to, reason);
            return Some(Action::ScaleUp { to });
        }
        if self.desired > min
            && load.in_flight == 0
            && u128::from(idle_ms) >= cfg.idle.as_millis()
            && since_change >= cfg.idle
        {
            let to = self.desired - 1;
            let reason = format!("no calls for {} s", idle_ms / 1000);
            self.decide(now, now_ms, "scale-down", to, reason);
            return Some(Action::ScaleDown { to });
        }
        None
    }

    fn decide(&mut self, now: Instant, now_ms: u64, action: &'static str, to: u32, reason: String) {
        tracing::info!(action, replicas = to, reason = %reason, "scaling decision");
        if self.decisions.len() >= MAX_DECISIONS {
            self.decisions.pop_front();
        }
        self.decisions.push_back(Decision {
            time_ms: now_ms,
            action,
            replicas: to,
            reason,
        });
        self.desired = to;
        self.hot_ticks = 0;
        self.last_change = now;
    }
}

/// The replica to remove when scaling down: the one that served least.
pub fn scale_down_victim(holders: &[(OrbId, u64)]) -> Option<OrbId> {
    holders
        .iter()
        .min_by_key(|(id, served)| (*served, *id))
        .map(|(id, _)| *id)
}

/// Replicas a function should have now: what its scaler wants, within the
/// function's bounds.
pub fn wanted(desired: u32, min: u32, max: u32) -> u32 {
    desired.clamp(min, max.max(min))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: ScaleConfig = ScaleConfig {
        target: 2.0,
        up_after: Duration::from_secs(3),
        idle: Duration::from_secs(60),
    };

    fn load(in_flight: u32, holders: usize, busy_total: u64, last_call_ms: u64) -> Load {
        Load {
            in_flight,
            holders,
            busy_total,
            last_call_ms,
        }
    }

    /// Run ticks one second apart from `t0`, feeding `l(i)`; return the
    /// tick index and action of each decision.
    fn run(
        a: &mut Autoscaler,
        t0: Instant,
        ticks: u64,
        bounds: (u32, u32),
        l: impl Fn(u64) -> Load,
    ) -> Vec<(u64, Action)> {
        (1..=ticks)
            .filter_map(|i| {
                let now = t0 + Duration::from_secs(i);
                a.tick(now, 1_000_000 + i * 1000, bounds, l(i), &CFG)
                    .map(|x| (i, x))
            })
            .collect()
    }

    #[test]
    fn sustained_load_adds_one_replica_after_up_after() {
        let t0 = Instant::now();
        let mut a = Autoscaler::new(2, t0);
        // 4 calls in flight on 2 replicas = 2 per replica = the target.
        let got = run(&mut a, t0, 4, (2, 5), |i| {
            load(4, 2, 0, 1_000_000 + i * 1000)
        });
        assert_eq!(got, vec![(3, Action::ScaleUp { to: 3 })]);
        assert_eq!(a.desired, 3);
        let d: Vec<&Decision> = a.decisions().collect();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].action, "scale-up");
        assert!(
            d[0].reason.contains("2.0 calls in flight per replica"),
            "{}",
            d[0].reason
        );
    }

    #[test]
    fn load_below_target_never_scales() {
        let t0 = Instant::now();
        let mut a = Autoscaler::new(2, t0);
        let got = run(&mut a, t0, 30, (2, 5), |i| {
            load(3, 2, 0, 1_000_000 + i * 1000)
        });
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn busy_answers_count_as_hot() {
        let t0 = Instant::now();
        let mut a = Autoscaler::new(1, t0);
        // One new busy refusal every tick, nothing in flight.
        let got = run(&mut a, t0, 3, (1, 3), |i| {
            load(0, 1, i, 1_000_000 + i * 1000)
        });
        assert_eq!(got, vec![(3, Action::ScaleUp { to: 2 })]);
        assert!(
            a.decisions()
                .next()
                .is_some_and(|d| d.reason.contains("busy"))
        );
    }

    #[test]
    fn never_beyond_max_and_waits_for_the_new_replica() {
        let t0 = Instant::now();
        let mut a = Autoscaler::new(1, t0);
        // Hot forever, but the new replica never shows up (holders stay 1):
        // one scale-up, then nothing until the replica is live.
        let got = run(&mut a, t0, 20, (1, 3), |i| {
            load(9, 1, 0, 1_000_000 + i * 1000)
        });
        assert_eq!(got, vec![(3, Action::ScaleUp { to: 2 })]);
        // Once the replicas are live it climbs at once (the load has been
        // hot all along) to the max, and stops there.
        let t1 = t0 + Duration::from_secs(20);
        let got = run(&mut a, t1, 20, (1, 3), |i| {
            load(9, 3, 0, 2_000_000 + i * 1000)
        });
        assert_eq!(got, vec![(1, Action::ScaleUp { to: 3 })]);
        assert_eq!(a.desired, 3);
    }

    #[test]
    fn idle_scales_down_to_the_minimum_one_at_a_time() {
        let t0 = Instant::now();
        let mut a = Autoscaler::new(3, t0);
        // Last call long ago; nothing in flight.
        let got = run(&mut a, t0, 130, (1, 3), |_| load(0, 3, 0, 0));
        assert_eq!(
            got,
            vec![
                (60, Action::ScaleDown { to: 2 }),
                (120, Action::ScaleDown { to: 1 }),
            ]
        );
        // At the minimum: nothing more.
        let got = run(&mut a, t0 + Duration::from_secs(130), 100, (1, 3), |_| {
            load(0, 1, 0, 0)
        });
        assert!(got.is_empty());
    }

    #[test]
    fn a_raised_minimum_is_taken_at_once() {
        let t0 = Instant::now();
        let mut a = Autoscaler::new(0, t0);
        assert_eq!(a.tick(t0, 0, (2, 4), load(0, 0, 0, 0), &CFG), None);
        assert_eq!(a.desired, 2);
    }

    #[test]
    fn decisions_are_bounded() {
        let t0 = Instant::now();
        let mut a = Autoscaler::new(1, t0);
        for i in 0..(MAX_DECISIONS as u32 + 5) {
            a.decide(t0, 0, "scale-up", i, String::new());
        }
        assert_eq!(a.decisions().count(), MAX_DECISIONS);
    }

    #[test]
    fn the_least_used_replica_goes_first() {
        let a = OrbId([1; 32]);
        let b = OrbId([2; 32]);
        assert_eq!(scale_down_victim(&[(a, 5), (b, 2)]), Some(b));
        assert_eq!(scale_down_victim(&[]), None);
        assert_eq!(wanted(0, 2, 4), 2);
        assert_eq!(wanted(9, 2, 4), 4);
        assert_eq!(wanted(3, 2, 1), 2);
    }
}
