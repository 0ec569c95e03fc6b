//! How a receipt is checked and how it changes balances.
//!
//! Each completed call earns its executor credits and costs its caller the
//! same. A receipt counts only if the executor signed it, it names the call
//! that was actually routed (request ID, function, caller, executor), its
//! time is recent, and its ID was not counted before.

use std::collections::{HashMap, HashSet, VecDeque};

use orb_proto::receipt::{Receipt, SignedReceipt};
use orb_proto::{ContentHash, OrbId};
use serde::{Deserialize, Serialize};

/// Receipt IDs remembered to refuse replays.
pub const SEEN_MAX: usize = 100_000;
/// How far a receipt's time may be from the checker's clock.
pub const MAX_SKEW_MS: u64 = 60_000;
/// Credits for one call, before fuel.
pub const CREDITS_PER_CALL: u64 = 1_000;
/// Fuel per extra credit.
pub const FUEL_PER_CREDIT: u64 = 10_000;

/// One node's account.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    /// Credits earned by running calls.
    pub earned: u64,
    /// Credits spent on calls made.
    pub spent: u64,
    /// Calls this node ran.
    pub calls_served: u64,
    /// Calls this node asked for.
    pub calls_made: u64,
}

/// Why a receipt was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LedgerError {
    /// Signature or signer check failed.
    #[error("invalid receipt: {0}")]
    Invalid(#[from] orb_proto::receipt::ReceiptError),
    /// The receipt does not describe the call that was routed.
    #[error("receipt does not match the call: {0}")]
    Mismatch(&'static str),
    /// The receipt's time is too far from now.
    #[error("receipt time is {0} ms away from now")]
    Stale(u64),
    /// The receipt was already counted.
    #[error("receipt already counted")]
    Replay,
}

/// What the checker expects a receipt to say.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The routed call's request ID.
    pub request_id: &'a str,
    /// The module that was asked to run.
    pub function: ContentHash,
    /// Who asked for the call.
    pub caller: OrbId,
    /// The node the call went to.
    pub executor: OrbId,
}

/// What a call costs: a base price plus a fuel-based part.
pub fn price(fuel_used: u64) -> u64 {
    CREDITS_PER_CALL.saturating_add(fuel_used / FUEL_PER_CREDIT)
}

/// Check a receipt against the call it should describe, at `now_ms`.
/// Receipts from before `started_ms` (when the checker's replay window
/// began) cannot be checked for replays and are refused too.
pub fn check(
    r: &SignedReceipt,
    exp: &Expected<'_>,
    now_ms: u64,
    started_ms: u64,
) -> Result<(), LedgerError> {
    r.verify()?;
    let rc = &r.receipt;
    if rc.request_id != exp.request_id {
        return Err(LedgerError::Mismatch("request id"));
    }
    if rc.function != exp.function {
        return Err(LedgerError::Mismatch("function"));
    }
    if rc.caller != exp.caller {
        return Err(LedgerError::Mismatch("caller"));
    }
    if rc.executor != exp.executor {
        return Err(LedgerError::Mismatch("executor"));
    }
    let skew = now_ms.abs_diff(rc.time_ms);
    if skew > MAX_SKEW_MS || rc.time_ms.saturating_add(MAX_SKEW_MS) < started_ms {
        return Err(LedgerError::Stale(skew));
    }
    Ok(())
}

/// The receipt IDs counted lately, bounded to [`SEEN_MAX`] (oldest out).
#[derive(Debug, Default)]
pub struct ReplayWindow {
    set: HashSet<ContentHash>,
    order: VecDeque<ContentHash>,
}

impl ReplayWindow {
    /// Remember `id`; false when it was seen already.
    pub fn insert(&mut self, id: ContentHash) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > SEEN_MAX
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}

/// Charge the caller and credit the executor for one call; returns the
/// executor's balance afterwards.
pub fn apply(balances: &mut HashMap<OrbId, Balance>, rc: &Receipt) -> Balance {
    let credits = price(rc.fuel_used);
    let caller = balances.entry(rc.caller).or_default();
    caller.spent = caller.spent.saturating_add(credits);
    caller.calls_made += 1;
    let exec = balances.entry(rc.executor).or_default();
    exec.earned = exec.earned.saturating_add(credits);
    exec.calls_served += 1;
    *exec
}

#[cfg(test)]
mod tests {
    use super::*;
    use orb_proto::Keypair;

    fn receipt(exec: &Keypair, caller: OrbId, time_ms: u64, fuel: u64) -> SignedReceipt {
        Receipt {
            function: ContentHash::of(b"m"),
            caller,
            executor: exec.id(),
            fuel_used: fuel,
            duration_us: 10,
            time_ms,
            request_id: "r1".into(),
        }
        .sign(exec)
        .expect("sign")
    }

    fn expected(exec: &Keypair, caller: OrbId) -> Expected<'static> {
        Expected {
            request_id: "r1",
            function: ContentHash::of(b"m"),
            caller,
            executor: exec.id(),
        }
    }

    #[test]
    fn a_matching_receipt_passes_and_moves_credits() {
        let exec = Keypair::generate().expect("key");
        let caller = Keypair::generate().expect("key").id();
        let r = receipt(&exec, caller, 1_000_000, 25_000);
        assert_eq!(check(&r, &expected(&exec, caller), 1_000_500, 0), Ok(()));
        let mut b = HashMap::new();
        let after = apply(&mut b, &r.receipt);
        assert_eq!(after.earned, 1_002);
        assert_eq!(b[&caller].spent, 1_002);
        assert_eq!((b[&caller].calls_made, after.calls_served), (1, 1));
    }

    #[test]
    fn mismatches_and_stale_times_are_refused() {
        let exec = Keypair::generate().expect("key");
        let caller = Keypair::generate().expect("key").id();
        let r = receipt(&exec, caller, 1_000_000, 0);
        let mut e = expected(&exec, caller);
        e.request_id = "other";
        assert_eq!(
            check(&r, &e, 1_000_000, 0),
            Err(LedgerError::Mismatch("request id"))
        );
        let other = Keypair::generate().expect("key").id();
        assert_eq!(
            check(&r, &expected(&exec, other), 1_000_000, 0),
            Err(LedgerError::Mismatch("caller"))
        );
        assert!(matches!(
            check(&r, &expected(&exec, caller), 1_000_000 + MAX_SKEW_MS + 1, 0),
            Err(LedgerError::Stale(_))
        ));
        // From before the checker started: its replay window cannot know it.
        assert!(matches!(
            check(
                &r,
                &expected(&exec, caller),
                1_000_000,
                1_000_000 + MAX_SKEW_MS + 1
            ),
            Err(LedgerError::Stale(_))
        ));
    }

    #[test]
    fn tampered_receipts_fail_the_signature() {
        let exec = Keypair::generate().expect("key");
        let caller = Keypair::generate().expect("key").id();
        let mut r = receipt(&exec, caller, 1_000_000, 0);
        r.receipt.fuel_used = 1;
        assert!(matches!(
            check(&r, &expected(&exec, caller), 1_000_000, 0),
            Err(LedgerError::Invalid(_))
        ));
    }

    #[test]
    fn the_replay_window_is_bounded_and_refuses_repeats() {
        let mut w = ReplayWindow::default();
        let a = ContentHash::of(b"a");
        assert!(w.insert(a));
        assert!(!w.insert(a));
        for i in 0..SEEN_MAX as u64 {
            w.insert(ContentHash::of(&i.to_le_bytes()));
        }
        assert_eq!(w.order.len(), SEEN_MAX);
        // The oldest fell out of the window.
        assert!(w.insert(a));
    }

    #[test]
    fn prices_saturate() {
        assert_eq!(price(0), CREDITS_PER_CALL);
        assert_eq!(
            price(u64::MAX),
            CREDITS_PER_CALL + u64::MAX / FUEL_PER_CREDIT
        );
    }
}
