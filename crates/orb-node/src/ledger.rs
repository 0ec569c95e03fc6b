//! Credit balances kept by a super from verified call receipts.
//!
//! Each completed call earns its executor credits and costs its caller the
//! same. A receipt is accepted only if the executor signed it, it names the
//! call the super actually routed (request ID, function, caller, executor),
//! its time is recent, and its ID has not been seen before. Balances live
//! in memory and are flushed to the store in the background, so a call
//! never waits on a disk write.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use orb_proto::receipt::SignedReceipt;
use orb_proto::{ContentHash, OrbId};
use orb_store::Store;
use serde::{Deserialize, Serialize};

use crate::util::{lock, now_ms};

/// Store namespace of the balances.
const NAMESPACE: &str = "ledger";
/// Receipt IDs remembered to refuse replays.
const SEEN_MAX: usize = 100_000;
/// How far a receipt's time may be from the super's clock.
const MAX_SKEW_MS: u64 = 60_000;
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

/// What the super expects a receipt to say.
pub(crate) struct Expected<'a> {
    pub request_id: &'a str,
    pub function: ContentHash,
    pub caller: OrbId,
    pub executor: OrbId,
}

/// Balances and the replay window.
pub(crate) struct Ledger {
    balances: Mutex<HashMap<OrbId, Balance>>,
    seen: Mutex<(HashSet<ContentHash>, VecDeque<ContentHash>)>,
    dirty: AtomicBool,
    started_ms: u64,
}

impl Ledger {
    /// Load the balances from the store (blocking).
    pub fn load(store: &Store) -> Result<Ledger, orb_store::StoreError> {
        let mut balances = HashMap::new();
        for (k, v) in store.blobs(NAMESPACE)? {
            let (Ok(id), Ok(b)) = (
                <[u8; 32]>::try_from(k.as_slice()),
                orb_proto::codec::decode::<Balance>(&v),
            ) else {
                tracing::warn!("skipping an unreadable ledger entry");
                continue;
            };
            balances.insert(OrbId(id), b);
        }
        Ok(Ledger {
            balances: Mutex::new(balances),
            seen: Mutex::new((HashSet::new(), VecDeque::new())),
            dirty: AtomicBool::new(false),
            started_ms: now_ms(),
        })
    }

    /// Verify `r` against the routed call and credit it.
    pub fn record(&self, r: &SignedReceipt, exp: &Expected<'_>) -> Result<Balance, LedgerError> {
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
        let now = now_ms();
        let skew = now.abs_diff(rc.time_ms);
        // Receipts from before this process started cannot be checked
        // against the in-memory replay window, so they are refused too.
        if skew > MAX_SKEW_MS || rc.time_ms + MAX_SKEW_MS < self.started_ms {
            return Err(LedgerError::Stale(skew));
        }
        let id = rc.id()?;
        {
            let mut seen = lock(&self.seen);
            if !seen.0.insert(id) {
                return Err(LedgerError::Replay);
            }
            seen.1.push_back(id);
            if seen.1.len() > SEEN_MAX
                && let Some(old) = seen.1.pop_front()
            {
                seen.0.remove(&old);
            }
        }
        let credits = CREDITS_PER_CALL + rc.fuel_used / FUEL_PER_CREDIT;
        let mut balances = lock(&self.balances);
        let caller = balances.entry(rc.caller).or_default();
        caller.spent += credits;
        caller.calls_made += 1;
        let exec = balances.entry(rc.executor).or_default();
        exec.earned += credits;
        exec.calls_served += 1;
        let out = *exec;
        self.dirty.store(true, Ordering::Release);
        Ok(out)
    }

    /// All balances.
    pub fn balances(&self) -> Vec<(OrbId, Balance)> {
        let mut v: Vec<_> = lock(&self.balances).iter().map(|(k, v)| (*k, *v)).collect();
        v.sort_by_key(|(k, _)| *k);
        v
    }

    /// One node's balance.
    pub fn balance(&self, id: &OrbId) -> Balance {
        lock(&self.balances).get(id).copied().unwrap_or_default()
    }

    /// Write the balances to the store if they changed (blocking).
    pub fn flush(&self, store: &Store) -> Result<(), orb_store::StoreError> {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let mut encoded = Vec::new();
        for (id, b) in self.balances() {
            match orb_proto::codec::encode(&b) {
                Ok(bytes) => encoded.push((id, bytes)),
                Err(e) => tracing::warn!(error = %e, "cannot encode a balance"),
            }
        }
        // One transaction: a crash never leaves some balances updated and
        // others not.
        let items: Vec<(&[u8], &[u8])> = encoded
            .iter()
            .map(|(id, b)| (id.as_bytes().as_slice(), b.as_slice()))
            .collect();
        store.put_blobs(NAMESPACE, &items)
    }
}
