//! Kademlia routing table: 256 k-buckets of DHT servers, LRU-ordered.
//!
//! Bucket `i` holds peers whose ID shares exactly `i` leading bits with the
//! local ID. A full bucket does not evict on sight: the newcomer waits as the
//! bucket's single pending replacement while the least-recently-seen entry is
//! pinged, and only an entry that fails to answer is evicted. Long-lived
//! peers are the most likely to stay up, so this keeps the table stable and
//! resists flooding with fresh IDs.

use std::collections::VecDeque;

use orb_proto::PeerAddr;
use orb_proto::dht::{Distance, Key};

use crate::Millis;

/// Number of buckets: one per possible shared-prefix length.
pub const BUCKETS: usize = 256;

/// One routing table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The peer.
    pub peer: PeerAddr,
    /// When it last answered or contacted us.
    pub last_seen: Millis,
    /// Consecutive RPC failures since it was last seen.
    pub failures: u32,
}

#[derive(Debug, Clone, Default)]
struct Bucket {
    /// Oldest (least recently seen) at the front.
    entries: VecDeque<Entry>,
    /// A newcomer waiting for a slot while the oldest entry is pinged.
    pending: Option<Entry>,
    /// A liveness ping of the oldest entry is under way.
    pinging: bool,
    /// Last time a lookup or contact touched this bucket (for refresh).
    touched: Millis,
}

/// What [`RoutingTable::observe`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// Added or refreshed; nothing more to do.
    Done,
    /// The bucket is full: ping this (its oldest entry); if it fails, the
    /// newcomer takes its place.
    PingOldest(PeerAddr),
    /// Ignored (the local node itself).
    Ignored,
}

/// The routing table.
#[derive(Debug, Clone)]
pub struct RoutingTable {
    local: Key,
    k: usize,
    /// Failures after which an entry is dropped even without a replacement.
    max_failures: u32,
    buckets: Vec<Bucket>,
}

impl RoutingTable {
    /// An empty table for the node at `local`, `k` entries per bucket.
    pub fn new(local: Key, k: usize, max_failures: u32) -> Self {
        RoutingTable {
            local,
            k: k.max(1),
            max_failures: max_failures.max(1),
            buckets: vec![Bucket::default(); BUCKETS],
        }
    }

    /// The local key.
    pub fn local(&self) -> Key {
        self.local
    }

    /// Bucket index for `key`, `None` for the local key itself.
    pub fn bucket_index(&self, key: &Key) -> Option<usize> {
        let lz = self.local.distance(key).leading_zeros() as usize;
        (lz < BUCKETS).then_some(lz)
    }

    /// Record that `peer` (a DHT server) is alive now.
    pub fn observe(&mut self, peer: PeerAddr, now: Millis) -> Observed {
        let key = Key::for_node(&peer.id);
        let Some(i) = self.bucket_index(&key) else {
            return Observed::Ignored;
        };
        let k = self.k;
        let b = &mut self.buckets[i];
        b.touched = now;
        let fresh = Entry {
            peer,
            last_seen: now,
            failures: 0,
        };
        if let Some(pos) = b.entries.iter().position(|e| e.peer.id == peer.id) {
            // Move to the most-recent end; take the newest address, since the
            // ID (proved by TLS) is what identifies the peer.
            b.entries.remove(pos);
            b.entries.push_back(fresh);
            return Observed::Done;
        }
        if b.entries.len() < k {
            b.entries.push_back(fresh);
            return Observed::Done;
        }
        // Keep the most recent newcomer: it is the likeliest to be alive.
        b.pending = Some(fresh);
        if b.pinging {
            // One ping per bucket at a time bounds the traffic newcomers cause.
            return Observed::Done;
        }
        match b.entries.front() {
            Some(oldest) => {
                b.pinging = true;
                Observed::PingOldest(oldest.peer)
            }
            None => Observed::Done,
        }
    }

    /// The liveness ping of `peer` (sent after [`Observed::PingOldest`])
    /// ended: an answer keeps it (as most recently seen), a failure evicts it
    /// in favour of the pending newcomer.
    pub fn ping_done(&mut self, peer: PeerAddr, alive: bool, now: Millis) {
        if let Some(i) = self.bucket_index(&Key::for_node(&peer.id)) {
            self.buckets[i].pinging = false;
        }
        if alive {
            self.observe(peer, now);
        } else {
            self.failed(&peer);
        }
    }

    /// Record that an RPC to `peer` failed. The entry is dropped, and the
    /// pending newcomer promoted, when a replacement is waiting or after
    /// `max_failures` consecutive failures.
    pub fn failed(&mut self, peer: &PeerAddr) {
        let key = Key::for_node(&peer.id);
        let Some(i) = self.bucket_index(&key) else {
            return;
        };
        let max_failures = self.max_failures;
        let b = &mut self.buckets[i];
        if b.pending.is_some_and(|p| p.peer.id == peer.id) {
            b.pending = None;
            return;
        }
        let Some(pos) = b.entries.iter().position(|e| e.peer.id == peer.id) else {
            return;
        };
        b.entries[pos].failures += 1;
        if b.pending.is_some() || b.entries[pos].failures >= max_failures {
            b.entries.remove(pos);
            if let Some(p) = b.pending.take() {
                b.entries.push_back(p);
            }
        }
    }

    /// Remove `peer` outright.
    pub fn remove(&mut self, peer: &PeerAddr) {
        if let Some(i) = self.bucket_index(&Key::for_node(&peer.id)) {
            self.buckets[i].entries.retain(|e| e.peer.id != peer.id);
        }
    }

    /// Whether `peer`'s ID is in the table.
    pub fn contains(&self, peer: &PeerAddr) -> bool {
        self.bucket_index(&Key::for_node(&peer.id))
            .is_some_and(|i| self.buckets[i].entries.iter().any(|e| e.peer.id == peer.id))
    }

    /// Mark the bucket covering `key` as recently used (a lookup for it ran).
    pub fn touch(&mut self, key: &Key, now: Millis) {
        if let Some(i) = self.bucket_index(key) {
            self.buckets[i].touched = now;
        }
    }

    /// Up to `n` known peers closest to `target`, closest first.
    pub fn closest(&self, target: &Key, n: usize) -> Vec<PeerAddr> {
        // Tables hold roughly k * log2(N) entries, so a full sort is cheap
        // and simpler than walking buckets outwards.
        let mut all: Vec<(Distance, PeerAddr)> = self
            .buckets
            .iter()
            .flat_map(|b| b.entries.iter())
            .map(|e| (target.distance(&Key::for_node(&e.peer.id)), e.peer))
            .collect();
        if n == 0 {
            return Vec::new();
        }
        if all.len() > n {
            all.select_nth_unstable_by_key(n - 1, |a| a.0);
            all.truncate(n);
        }
        all.sort_unstable_by_key(|a| a.0);
        all.into_iter().map(|(_, p)| p).collect()
    }

    /// Every peer in the table.
    pub fn peers(&self) -> Vec<PeerAddr> {
        self.buckets
            .iter()
            .flat_map(|b| b.entries.iter().map(|e| e.peer))
            .collect()
    }

    /// Number of peers in the table.
    pub fn len(&self) -> usize {
        self.buckets.iter().map(|b| b.entries.len()).sum()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Buckets worth refreshing at `now`: untouched for `interval`, and no
    /// deeper than one past the deepest non-empty bucket (deeper ones are
    /// almost surely empty in any real network, and refreshing them would
    /// only cost lookups).
    pub fn stale_buckets(&self, now: Millis, interval: Millis) -> Vec<usize> {
        let deepest = self
            .buckets
            .iter()
            .rposition(|b| !b.entries.is_empty())
            .unwrap_or(0);
        let limit = (deepest + 1).min(BUCKETS - 1);
        (0..=limit)
            .filter(|&i| now.saturating_sub(self.buckets[i].touched) >= interval)
            .collect()
    }

    /// Index of the deepest non-empty bucket, if any.
    pub fn deepest_bucket(&self) -> Option<usize> {
        self.buckets.iter().rposition(|b| !b.entries.is_empty())
    }

    /// A key that falls in bucket `i`: the local key with bit `i` flipped and
    /// the following bits taken from `random`.
    pub fn random_key_in_bucket(&self, i: usize, random: [u8; 32]) -> Key {
        let i = i.min(BUCKETS - 1);
        let mut out = random;
        for bit in 0..=i {
            let byte = bit / 8;
            let mask = 0x80u8 >> (bit % 8);
            let local = self.local.0[byte] & mask;
            let want = if bit == i { local ^ mask } else { local };
            out[byte] = (out[byte] & !mask) | want;
        }
        Key(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orb_proto::OrbId;

    fn peer(b: u8, first: u8) -> PeerAddr {
        let mut id = [b; 32];
        id[0] = first;
        PeerAddr {
            id: OrbId(id),
            addr: ([10, 0, 0, b], 7000).into(),
        }
    }

    #[test]
    fn full_bucket_pings_oldest_and_replaces_on_failure() {
        let mut t = RoutingTable::new(Key([0; 32]), 2, 3);
        // All in bucket 0 (first bit set).
        assert_eq!(t.observe(peer(1, 0x80), 1), Observed::Done);
        assert_eq!(t.observe(peer(2, 0x81), 2), Observed::Done);
        assert_eq!(
            t.observe(peer(3, 0x82), 3),
            Observed::PingOldest(peer(1, 0x80))
        );
        // A second newcomer replaces the pending one without a new ping.
        assert_eq!(t.observe(peer(4, 0x83), 4), Observed::Done);
        t.ping_done(peer(1, 0x80), false, 5);
        assert!(!t.contains(&peer(1, 0x80)));
        assert!(t.contains(&peer(4, 0x83)));
        assert!(!t.contains(&peer(3, 0x82)));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn closest_orders_by_xor() {
        let mut t = RoutingTable::new(Key([0; 32]), 20, 3);
        for i in 1..50u8 {
            t.observe(peer(i, i), i as u64);
        }
        let c = t.closest(&Key([0; 32]), 3);
        assert_eq!(c, vec![peer(1, 1), peer(2, 2), peer(3, 3)]);
    }

    #[test]
    fn random_key_lands_in_bucket() {
        let t = RoutingTable::new(Key([0x5a; 32]), 20, 3);
        for i in [0, 1, 7, 8, 100, 255] {
            let k = t.random_key_in_bucket(i, [0xc3; 32]);
            assert_eq!(t.bucket_index(&k), Some(i));
        }
    }
}
