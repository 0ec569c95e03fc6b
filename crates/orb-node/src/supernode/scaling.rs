//! The autoscaler loop: once a second, gather each owned function's load,
//! ask its [`Autoscaler`] (in [`crate::policy::scaling`]) and carry out
//! what it decides: place a replica, or remove the least used one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use orb_proto::OrbId;
use orb_store::FunctionRecord;
use tokio::sync::watch;

use super::{Shared, placement};
use crate::common::util::{lock, now_ms, read_lock};
use crate::policy::scaling::{self as policy, Action, Autoscaler, Load, ScaleConfig};

/// Functions with autoscaling state, at most.
const MAX_SCALED_FUNCTIONS: usize = 10_000;

/// Load counters of one function, shared with the calls that update them.
#[derive(Default)]
pub(super) struct ScaleCounters {
    pub in_flight: Arc<AtomicU32>,
    pub calls: AtomicU64,
    pub busy: AtomicU64,
    pub last_call_ms: AtomicU64,
}

/// A function's counters and its scaler.
pub(super) struct ScaleState {
    pub counters: Arc<ScaleCounters>,
    pub scaler: Autoscaler,
}

impl ScaleState {
    fn new(desired: u32) -> Self {
        ScaleState {
            counters: Arc::new(ScaleCounters::default()),
            scaler: Autoscaler::new(desired, Instant::now()),
        }
    }
}

/// The load counters of `name`, created on its first call.
pub(super) fn counters(shared: &Shared, name: &str) -> Arc<ScaleCounters> {
    let mut scale = lock(&shared.scale);
    if !scale.contains_key(name) && scale.len() >= MAX_SCALED_FUNCTIONS {
        // Bounded: forget the state of a function this super does not own.
        let owned = read_lock(&shared.functions);
        if let Some(k) = scale.keys().find(|k| !owned.contains_key(*k)).cloned() {
            scale.remove(&k);
        }
    }
    scale
        .entry(name.to_string())
        .or_insert_with(|| ScaleState::new(0))
        .counters
        .clone()
}

/// Replicas `f` should have now.
pub(super) fn wanted(shared: &Shared, f: &FunctionRecord) -> u32 {
    let desired = lock(&shared.scale)
        .get(&f.name)
        .map_or(0, |s| s.scaler.desired);
    policy::wanted(desired, f.settings.replicas, f.settings.max_replicas)
}

/// Watch every function this super owns once a second and scale it.
pub(super) async fn autoscale(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let cfg = ScaleConfig {
        target: shared.config.scale_target,
        up_after: shared.config.scale_up_after,
        idle: shared.config.scale_idle,
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.changed() => return,
        }
        let functions: Vec<FunctionRecord> =
            read_lock(&shared.functions).values().cloned().collect();
        for f in functions {
            let holders: Vec<(OrbId, u64)> = {
                let clients = lock(&shared.clients);
                clients
                    .iter()
                    .filter(|(_, c)| c.hosted.contains(&f.hash))
                    .map(|(id, c)| (*id, c.served.load(Ordering::Relaxed)))
                    .collect()
            };
            let action = {
                let mut scale = lock(&shared.scale);
                let st = scale
                    .entry(f.name.clone())
                    .or_insert_with(|| ScaleState::new(f.settings.replicas));
                let load = Load {
                    in_flight: st.counters.in_flight.load(Ordering::Relaxed),
                    holders: holders.len(),
                    busy_total: st.counters.busy.load(Ordering::Relaxed),
                    last_call_ms: st.counters.last_call_ms.load(Ordering::Relaxed),
                };
                st.scaler.tick(
                    Instant::now(),
                    now_ms(),
                    (f.settings.replicas, f.settings.max_replicas),
                    load,
                    &cfg,
                )
            };
            match action {
                Some(Action::ScaleUp { .. }) => {
                    placement::place(&shared, &f, None).await;
                }
                Some(Action::ScaleDown { to }) if holders.len() as u32 > to => {
                    if let Some(victim) = policy::scale_down_victim(&holders) {
                        placement::unplace(&shared, &f, victim).await;
                    }
                }
                _ => {}
            }
        }
    }
}
