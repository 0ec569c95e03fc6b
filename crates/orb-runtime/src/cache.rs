//! Compiled modules by hash, bounded, evicting the least recently used.

use std::collections::HashMap;
use std::sync::Arc;

use orb_proto::ContentHash;

use crate::Prepared;

pub(crate) struct CacheEntry {
    prepared: Arc<Prepared>,
    last_used: u64,
}

/// Compiled modules by hash, bounded, evicting the least recently used.
#[derive(Default)]
pub(crate) struct Cache {
    pub(crate) entries: HashMap<ContentHash, CacheEntry>,
    tick: u64,
}

impl Cache {
    pub(crate) fn get(&mut self, hash: &ContentHash) -> Option<Arc<Prepared>> {
        self.tick += 1;
        let tick = self.tick;
        self.entries.get_mut(hash).map(|e| {
            e.last_used = tick;
            e.prepared.clone()
        })
    }

    pub(crate) fn insert(&mut self, hash: ContentHash, prepared: Arc<Prepared>, max: usize) {
        self.tick += 1;
        if !self.entries.contains_key(&hash) {
            // A linear scan is fine at the few hundred entries we keep.
            while self.entries.len() >= max.max(1) {
                let Some(oldest) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.last_used)
                    .map(|(h, _)| *h)
                else {
                    break;
                };
                self.entries.remove(&oldest);
                tracing::debug!(hash = %oldest.short(), "evicted compiled module");
            }
        }
        self.entries.insert(
            hash,
            CacheEntry {
                prepared,
                last_used: self.tick,
            },
        );
    }
}
