//! This node's records in the DHT: a provider record per hosted replica
//! and the name records of the functions it deployed, re-signed before
//! they expire.

use std::sync::Arc;
use std::time::Duration;

use orb_proto::ContentHash;
use orb_proto::wire::{ErrorKind, FunctionSettings, WireError};
use tokio::sync::watch;
use tracing::{debug, warn};

use super::{Shared, home_supers};
use crate::common::util::{blocking, read_lock};
use crate::dht;

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

pub(super) const OWNED_NS: &str = "owned-names";

/// Publish (again) the name record of a function this node deployed.
pub(super) async fn publish_name(
    shared: &Arc<Shared>,
    name: &str,
    hash: ContentHash,
    settings: &FunctionSettings,
) -> Result<usize, WireError> {
    let record = dht::sign_name(&shared.keypair, name, hash, settings)?;
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
        let store = shared.store.clone();
        let owned = blocking(move || store.blobs(OWNED_NS))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        for (name, value) in owned {
            let Ok(name) = String::from_utf8(name) else {
                continue;
            };
            match orb_proto::codec::decode::<(ContentHash, FunctionSettings)>(&value) {
                Ok((hash, settings)) => {
                    if let Err(e) = publish_name(&shared, &name, hash, &settings).await {
                        debug!(function = %name, error = %e.message, "name record not refreshed");
                        all_ok = false;
                    }
                }
                Err(e) => warn!(function = %name, error = %e, "corrupt owned-name entry"),
            }
        }
        ok_once |= all_ok;
    }
}
