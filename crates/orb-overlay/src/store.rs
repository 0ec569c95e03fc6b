//! Record store: the records this server holds for others.
//!
//! Rules, applied after [`Record::verify`]:
//!
//! * one record per (key, publisher); a newer record replaces an older one
//!   ([`Record::supersedes`]: `seq`, and for names `(version, seq)`), the
//!   same record is accepted again (re-replication is idempotent), an older
//!   one is refused as stale;
//! * a name belongs to the owner of its live record: a record for the same
//!   name from a different owner is refused until that record expires. A
//!   tombstone (`removed`) is a live record like any other, so a removed
//!   name stays with its owner, who may deploy it again with a higher
//!   version;
//! * node and name keys hold one record; provider keys hold one record per
//!   provider, at most [`MAX_PROVIDERS`];
//! * totals are bounded (records overall, records per publisher) so no
//!   publisher can fill a node's memory.

use std::collections::{BTreeMap, HashMap};

use orb_proto::PublicKey;
use orb_proto::dht::{Key, MAX_PROVIDERS, Record, RecordKind};

use crate::Millis;

/// Why a record was not stored.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// The record failed verification.
    #[error("invalid record: {0}")]
    Invalid(#[from] orb_proto::dht::RecordError),
    /// The name belongs to someone else.
    #[error("name {name:?} belongs to {owner}")]
    NameTaken {
        /// The name.
        name: String,
        /// ID of the current owner's key.
        owner: orb_proto::OrbId,
    },
    /// A newer version is already stored (for a name: a higher version,
    /// or the same version with a higher seq).
    #[error("stale record: a newer one is stored (seq {offered} offered, {stored} stored)")]
    Stale {
        /// Offered seq.
        offered: u64,
        /// Stored seq.
        stored: u64,
    },
    /// Same seq, different content: refuse rather than flip-flop.
    #[error("conflicting record with the same seq {0}")]
    Conflict(u64),
    /// A bound was reached.
    #[error("store full: {0}")]
    Full(String),
}

/// Store bounds.
#[derive(Debug, Clone, Copy)]
pub struct StoreLimits {
    /// Records in total.
    pub max_records: usize,
    /// Records from one publisher.
    pub max_per_publisher: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            max_records: 100_000,
            max_per_publisher: 1024,
        }
    }
}

/// The store.
#[derive(Debug, Clone, Default)]
pub struct RecordStore {
    limits: StoreLimits,
    /// Ordered so that re-replication can walk it with a cursor.
    records: BTreeMap<Key, Vec<Record>>,
    per_publisher: HashMap<PublicKey, usize>,
    total: usize,
}

impl RecordStore {
    /// An empty store.
    pub fn new(limits: StoreLimits) -> Self {
        RecordStore {
            limits,
            ..Default::default()
        }
    }

    /// Verify and store `record`. Returns `true` when something changed.
    pub fn insert(&mut self, record: Record, now: Millis) -> Result<bool, StoreError> {
        record.verify(now)?;
        let slot = self.records.get(&record.key);
        // Live records already under the key (expired ones do not count).
        let live = slot
            .map(|v| v.iter().filter(|r| r.expires_ms > now).collect::<Vec<_>>())
            .unwrap_or_default();
        if let RecordKind::Name(n) = &record.kind
            && let Some(holder) = live.iter().find(|r| r.publisher != record.publisher)
        {
            return Err(StoreError::NameTaken {
                name: n.name.clone(),
                owner: holder.publisher.id(),
            });
        }
        if let Some(old) = live.iter().find(|r| r.publisher == record.publisher) {
            if **old == record {
                return Ok(false);
            }
            if record.order() == old.order() {
                return Err(StoreError::Conflict(record.seq));
            }
            if !record.supersedes(old) {
                return Err(StoreError::Stale {
                    offered: record.seq,
                    stored: old.seq,
                });
            }
        }
        let same_publisher =
            slot.is_some_and(|v| v.iter().any(|r| r.publisher == record.publisher));
        if !same_publisher {
            if self.total >= self.limits.max_records {
                return Err(StoreError::Full(format!(
                    "{} records held",
                    self.limits.max_records
                )));
            }
            if self
                .per_publisher
                .get(&record.publisher)
                .is_some_and(|&n| n >= self.limits.max_per_publisher)
            {
                return Err(StoreError::Full(format!(
                    "{} records held for this publisher",
                    self.limits.max_per_publisher
                )));
            }
            if let RecordKind::Provider(_) = record.kind
                && live.len() >= MAX_PROVIDERS
            {
                return Err(StoreError::Full(format!(
                    "{MAX_PROVIDERS} providers held for this module"
                )));
            }
        }
        let slot = self.records.entry(record.key).or_default();
        if let Some(pos) = slot.iter().position(|r| r.publisher == record.publisher) {
            slot[pos] = record;
        } else {
            // Expired records under this key (say, a lapsed name owner) go
            // now, so they cannot be counted twice against the bounds.
            let before = slot.len();
            let mut gone = Vec::new();
            slot.retain(|r| {
                let keep = r.expires_ms > now;
                if !keep {
                    gone.push(r.publisher);
                }
                keep
            });
            self.total -= before - slot.len();
            *self.per_publisher.entry(record.publisher).or_default() += 1;
            slot.push(record);
            self.total += 1;
            for p in gone {
                self.dec_publisher(&p);
            }
        }
        Ok(true)
    }

    fn dec_publisher(&mut self, p: &PublicKey) {
        if let Some(n) = self.per_publisher.get_mut(p) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_publisher.remove(p);
            }
        }
    }

    /// Live records under `key` (at most [`MAX_PROVIDERS`]).
    pub fn get(&self, key: &Key, now: Millis) -> Vec<Record> {
        self.records
            .get(key)
            .map(|v| {
                v.iter()
                    .filter(|r| r.expires_ms > now)
                    .take(MAX_PROVIDERS)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Drop expired records. Returns how many went.
    pub fn purge(&mut self, now: Millis) -> usize {
        let mut gone = Vec::new();
        self.records.retain(|_, v| {
            v.retain(|r| {
                let keep = r.expires_ms > now;
                if !keep {
                    gone.push(r.publisher);
                }
                keep
            });
            !v.is_empty()
        });
        self.total -= gone.len();
        for p in &gone {
            self.dec_publisher(p);
        }
        gone.len()
    }

    /// Number of records held.
    pub fn len(&self) -> usize {
        self.total
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Every record held (expired ones included until the next purge).
    pub fn all(&self) -> Vec<Record> {
        self.records.values().flatten().cloned().collect()
    }

    /// Up to `max` records with keys strictly after `after` (from the start
    /// when `None`), in key order, and the key to continue from.
    pub fn batch_after(&self, after: Option<Key>, max: usize) -> (Vec<Record>, Option<Key>) {
        use std::ops::Bound;
        let range = match after {
            Some(k) => self.records.range((Bound::Excluded(k), Bound::Unbounded)),
            None => self.records.range(..),
        };
        let mut out = Vec::new();
        let mut last = None;
        for (k, v) in range {
            if out.len() >= max {
                return (out, last);
            }
            out.extend(v.iter().cloned());
            last = Some(*k);
        }
        (out, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orb_proto::dht::NameRecord;
    use orb_proto::wire::FunctionSettings;
    use orb_proto::{ContentHash, Keypair};

    const NOW: u64 = 1_700_000_000_000;

    fn name(k: &Keypair, n: &str, seq: u64, ttl: u64, m: &[u8]) -> Record {
        versioned(k, n, (1, seq), false, NOW + ttl, m)
    }

    fn versioned(
        k: &Keypair,
        n: &str,
        (version, seq): (u64, u64),
        removed: bool,
        expires: u64,
        m: &[u8],
    ) -> Record {
        let kind = RecordKind::Name(NameRecord {
            name: n.into(),
            owner: k.public(),
            hash: ContentHash::of(m),
            settings: FunctionSettings::default(),
            version,
            removed,
        });
        Record::sign(kind, k, seq, expires).expect("sign")
    }

    #[test]
    fn versions_tombstones_and_redeploys() {
        let owner = Keypair::from_seed([1; 32]);
        let other = Keypair::from_seed([2; 32]);
        let exp = NOW + 10_000;
        let key = Key::for_name("f");
        let mut s = RecordStore::new(StoreLimits::default());
        assert_eq!(
            s.insert(versioned(&owner, "f", (1, 100), false, exp, b"1"), NOW),
            Ok(true)
        );
        // v2 replaces v1 even when signed with a lower seq (clock went back).
        assert_eq!(
            s.insert(versioned(&owner, "f", (2, 90), false, exp, b"2"), NOW),
            Ok(true)
        );
        // A replay of v1 with a higher seq is stale: versions never go back.
        assert!(matches!(
            s.insert(versioned(&owner, "f", (1, 500), false, exp, b"1"), NOW),
            Err(StoreError::Stale { .. })
        ));
        // The owner's tombstone (v3) replaces v2 and keeps the name owned.
        let tomb = versioned(&owner, "f", (3, 91), true, exp, b"2");
        assert_eq!(s.insert(tomb.clone(), NOW), Ok(true));
        assert_eq!(s.get(&key, NOW), vec![tomb]);
        // Someone else can neither take the removed name nor bury it again.
        for removed in [false, true] {
            assert!(matches!(
                s.insert(versioned(&other, "f", (9, 999), removed, exp, b"x"), NOW),
                Err(StoreError::NameTaken { .. })
            ));
        }
        // A forged tombstone (content changed after signing) is invalid.
        let mut forged = versioned(&owner, "f", (4, 92), false, exp, b"2");
        if let RecordKind::Name(n) = &mut forged.kind {
            n.removed = true;
        }
        assert!(matches!(s.insert(forged, NOW), Err(StoreError::Invalid(_))));
        // The owner deploys the name again with a higher version.
        let again = versioned(&owner, "f", (4, 93), false, exp, b"3");
        assert_eq!(s.insert(again.clone(), NOW), Ok(true));
        assert_eq!(s.get(&key, NOW), vec![again]);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn name_rules() {
        let a = Keypair::from_seed([1; 32]);
        let b = Keypair::from_seed([2; 32]);
        let mut s = RecordStore::new(StoreLimits::default());
        assert_eq!(s.insert(name(&a, "f", 1, 1000, b"1"), NOW), Ok(true));
        assert_eq!(s.insert(name(&a, "f", 1, 1000, b"1"), NOW), Ok(false));
        assert!(matches!(
            s.insert(name(&b, "f", 9, 1000, b"x"), NOW),
            Err(StoreError::NameTaken { .. })
        ));
        assert!(matches!(
            s.insert(name(&a, "f", 1, 1000, b"2"), NOW),
            Err(StoreError::Conflict(1))
        ));
        assert_eq!(s.insert(name(&a, "f", 2, 1000, b"2"), NOW), Ok(true));
        assert!(matches!(
            s.insert(name(&a, "f", 1, 1000, b"1"), NOW),
            Err(StoreError::Stale { .. })
        ));
        assert_eq!(s.len(), 1);
        // After expiry the name is free again, and the lapsed record goes.
        assert_eq!(s.insert(name(&b, "f", 1, 5000, b"b"), NOW + 2000), Ok(true));
        assert_eq!(s.get(&Key::for_name("f"), NOW + 2000).len(), 1);
        assert_eq!(s.len(), 1);
        assert_eq!(s.purge(NOW + 6000), 1);
        assert!(s.is_empty());
    }

    #[test]
    fn publisher_bound() {
        let a = Keypair::from_seed([1; 32]);
        let mut s = RecordStore::new(StoreLimits {
            max_records: 10,
            max_per_publisher: 2,
        });
        assert!(s.insert(name(&a, "a", 1, 1000, b""), NOW).is_ok());
        assert!(s.insert(name(&a, "b", 1, 1000, b""), NOW).is_ok());
        assert!(matches!(
            s.insert(name(&a, "c", 1, 1000, b""), NOW),
            Err(StoreError::Full(_))
        ));
    }
}
