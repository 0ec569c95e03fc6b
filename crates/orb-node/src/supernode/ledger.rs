//! Credit balances kept by a super from verified call receipts.
//!
//! The checks and the arithmetic are [`crate::policy::accounting`]; this is
//! the state around them. Balances live in memory and are flushed to the
//! store in the background, so a call never waits on a disk write.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use orb_proto::OrbId;
use orb_proto::receipt::SignedReceipt;
use orb_store::Store;
use tokio::sync::watch;
use tracing::warn;

use super::Shared;
use crate::common::util::{blocking, lock, now_ms};
use crate::policy::accounting::{self, Balance, Expected, LedgerError, ReplayWindow};

/// Store namespace of the balances.
const NAMESPACE: &str = "ledger";

/// Balances and the replay window.
pub(crate) struct Ledger {
    balances: Mutex<HashMap<OrbId, Balance>>,
    seen: Mutex<ReplayWindow>,
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
                warn!("skipping an unreadable ledger entry");
                continue;
            };
            balances.insert(OrbId(id), b);
        }
        Ok(Ledger {
            balances: Mutex::new(balances),
            seen: Mutex::new(ReplayWindow::default()),
            dirty: AtomicBool::new(false),
            started_ms: now_ms(),
        })
    }

    /// Verify `r` against the routed call and credit it.
    pub fn record(&self, r: &SignedReceipt, exp: &Expected<'_>) -> Result<Balance, LedgerError> {
        accounting::check(r, exp, now_ms(), self.started_ms)?;
        let id = r.receipt.id()?;
        if !lock(&self.seen).insert(id) {
            return Err(LedgerError::Replay);
        }
        let out = accounting::apply(&mut lock(&self.balances), &r.receipt);
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
                Err(e) => warn!(error = %e, "cannot encode a balance"),
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

/// Flush ledger balances to the store once a second, and once more at shutdown.
pub(super) async fn flush_loop(
    shared: std::sync::Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let stop = tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => false,
            _ = shutdown.changed() => true,
        };
        let s = shared.clone();
        if let Ok(Err(e)) = blocking(move || s.ledger.flush(&s.store)).await {
            warn!(error = %e, "could not save the ledger");
        }
        if stop {
            return;
        }
    }
}
