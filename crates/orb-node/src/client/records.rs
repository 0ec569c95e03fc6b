//! This node's records in the DHT: a provider record per hosted replica
//! and the name records of the functions it owns (current versions and
//! tombstones), re-signed before they expire.

use std::sync::Arc;
use std::time::Duration;

use orb_proto::ContentHash;
use orb_proto::wire::{ErrorKind, WireError};
use tokio::sync::watch;
use tracing::{debug, warn};

use super::{Shared, home_supers, manage};
use crate::common::util::read_lock;
use crate::dht::{self, NameState};

/// Tell the DHT that this node holds a ready replica of `hash`.
pub(super) async fn publish_provider(shared: &Arc<Shared>, hash: ContentHash) -> bool {
    let record = match dht::sign_provider(&shared.keypair, hash, home_supers(shared)) {
        Ok(r) => r,
        Err(e) => {
            warn!(error = %e.message, "cannot sign provider record");
            return false;
        }
    };
    match shared.overlay.put(record).await {
        Ok(n) => {
            debug!(hash = %hash.short(), stored_on = n, "provider record published");
            true
        }
        Err(e) => {
            debug!(hash = %hash.short(), error = %e, "provider record not published yet");
            false
        }
    }
}

/// Tell the DHT that this node no longer holds `hash`: a provider record
/// without home supers replaces the last one (see [`dht::sign_provider`]),
/// so supers stop counting and forwarding to this replica at once instead
/// of when the old record expires.
pub(super) async fn withdraw_provider(shared: &Arc<Shared>, hash: ContentHash) {
    match dht::sign_provider(&shared.keypair, hash, Vec::new()) {
        Ok(record) => {
            if let Err(e) = shared.overlay.put(record).await {
                debug!(hash = %hash.short(), error = %e, "provider record not withdrawn");
            }
        }
        Err(e) => warn!(error = %e.message, "cannot sign provider withdrawal"),
    }
}

pub(super) const OWNED_NS: &str = "owned-names";

/// Publish (again) the name record of a function this node owns: its
/// current version, or its tombstone.
pub(super) async fn publish_name(
    shared: &Arc<Shared>,
    name: &str,
    state: &NameState,
) -> Result<usize, WireError> {
    let record = dht::sign_name(&shared.keypair, name, state)?;
    shared.overlay.put(record).await.map_err(|e| {
        let msg = e.to_string();
        let kind = if msg.contains("belongs to") {
            ErrorKind::Forbidden
        } else {
            ErrorKind::Unavailable
        };
        WireError::new(kind, format!("name record not published: {msg}"))
    })
}

/// Re-sign and re-publish this node's records before they expire: provider
/// records of hosted replicas and name records of functions it owns. Runs
/// every few seconds until the first round succeeds, then every
/// [`dht::REFRESH_EVERY`].
pub(super) async fn refresh_records(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut ok_once = false;
    loop {
        let wait = if ok_once {
            dht::REFRESH_EVERY
        } else {
            Duration::from_secs(3)
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        if home_supers(&shared).is_empty() {
            continue;
        }
        let hosted: Vec<ContentHash> = read_lock(&shared.hosted).values().map(|h| h.hash).collect();
        let mut all_ok = true;
        for hash in hosted {
            all_ok &= publish_provider(&shared, hash).await;
        }
        // Tombstones too: a removed name stays this node's.
        for (name, owned) in manage::all_owned(&shared).await {
            if let Err(e) = publish_name(&shared, &name, &owned.state()).await {
                debug!(function = %name, error = %e.message, "name record not refreshed");
                all_ok = false;
            }
        }
        ok_once |= all_ok;
    }
}
