//! Versions of a function: how they are numbered, how many are kept, which
//! one a rollback goes back to, and what a super does with its own record
//! of a function once the name record in the DHT has moved past it.

use orb_proto::ContentHash;
use orb_store::FunctionVersion;

/// Versions kept per function for rollback.
pub const MAX_VERSIONS: usize = 10;

/// The version a deploy or a rollback makes: one more than the newest one
/// known, here (`local`) or in the DHT (`published`: a tombstone, or a
/// version deployed through another super). Name records order by version,
/// so a number that went back would be refused as stale.
pub fn next_version(local: Option<u64>, published: Option<u64>) -> u64 {
    local
        .unwrap_or(0)
        .max(published.unwrap_or(0))
        .saturating_add(1)
}

/// Append `v` to `history` (oldest first) and keep the newest `max`;
/// returns the versions that fell out.
pub fn push(
    history: &mut Vec<FunctionVersion>,
    v: FunctionVersion,
    max: usize,
) -> Vec<FunctionVersion> {
    history.push(v);
    let over = history.len().saturating_sub(max.max(1));
    history.drain(..over).collect()
}

/// Why a rollback cannot happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RollbackError {
    /// Nothing earlier than the current version is kept.
    #[error("no earlier version is kept (only the current version {current})")]
    NoEarlier {
        /// The current version.
        current: u64,
    },
    /// The version asked for is not kept (never existed, or fell out).
    #[error("version {to} is not kept; kept versions: {}", list(.kept))]
    NotKept {
        /// The version asked for.
        to: u64,
        /// The versions kept.
        kept: Vec<u64>,
    },
    /// The version asked for is the current one.
    #[error("version {0} is already the current version")]
    AlreadyCurrent(u64),
}

fn list(v: &[u64]) -> String {
    v.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
}

/// The version a rollback makes current again: `to` if given, else the
/// newest kept version before `current` that differs from it (module or
/// settings), so a rollback always changes what runs.
pub fn rollback_target(
    history: &[FunctionVersion],
    current: u64,
    to: Option<u64>,
) -> Result<&FunctionVersion, RollbackError> {
    match to {
        Some(to) if to == current => Err(RollbackError::AlreadyCurrent(to)),
        Some(to) => {
            history
                .iter()
                .find(|v| v.version == to)
                .ok_or_else(|| RollbackError::NotKept {
                    to,
                    kept: history.iter().map(|v| v.version).collect(),
                })
        }
        None => {
            let now = history.iter().find(|v| v.version == current);
            history
                .iter()
                .rev()
                .filter(|v| v.version < current)
                .find(|v| now.is_none_or(|c| c.hash != v.hash || c.settings != v.settings))
                .ok_or(RollbackError::NoEarlier { current })
        }
    }
}

/// The newest name record in the DHT, as [`reconcile`] needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// Its version.
    pub version: u64,
    /// Its module hash.
    pub hash: ContentHash,
    /// Whether it is a tombstone.
    pub removed: bool,
    /// Whether its owner is the owner of the super's record.
    pub same_owner: bool,
}

/// What a super does with its own record of a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconcile {
    /// The record is current (or the DHT knows nothing newer): keep it.
    Keep,
    /// The owner removed the function, or deployed a newer version through
    /// another super: forget the record (the gateway then resolves the name
    /// through the DHT like any other), and stop this super's replicas of
    /// its module when the name no longer points at it.
    Forget {
        /// Whether this super's replicas of the record's module must go.
        unplace: bool,
    },
}

/// Compare a super's record (`local_version`, `local_hash`) with the newest
/// name record in the DHT. Only a newer version from the same owner moves
/// a record: while a deploy's name record is not published yet, the DHT
/// lags behind the super, and a record of another key is not the owner's
/// word.
pub fn reconcile(local_version: u64, local_hash: ContentHash, dht: Option<Published>) -> Reconcile {
    match dht {
        Some(p) if p.same_owner && p.version > local_version => Reconcile::Forget {
            unplace: p.removed || p.hash != local_hash,
        },
        _ => Reconcile::Keep,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orb_proto::wire::FunctionSettings;

    fn v(version: u64, m: &[u8]) -> FunctionVersion {
        FunctionVersion {
            version,
            hash: ContentHash::of(m),
            size: 1,
            settings: FunctionSettings::default(),
            created_ms: version,
        }
    }

    #[test]
    fn numbering_continues_from_the_newest_known() {
        assert_eq!(next_version(None, None), 1);
        assert_eq!(next_version(Some(3), None), 4);
        // A tombstone (v5) or a deploy through another super wins.
        assert_eq!(next_version(Some(3), Some(5)), 6);
        assert_eq!(next_version(None, Some(5)), 6);
        assert_eq!(next_version(Some(u64::MAX), None), u64::MAX);
    }

    #[test]
    fn history_keeps_the_newest() {
        let mut h = Vec::new();
        for i in 1..=12 {
            let gone = push(&mut h, v(i, &[i as u8]), MAX_VERSIONS);
            assert_eq!(gone.len(), usize::from(i > 10));
        }
        assert_eq!(h.len(), MAX_VERSIONS);
        assert_eq!(h[0].version, 3);
        assert_eq!(h[9].version, 12);
    }

    #[test]
    fn rollback_targets() {
        let h = vec![v(1, b"a"), v(2, b"b"), v(3, b"a")];
        // Default: the newest earlier version that differs from v3 (= a).
        assert_eq!(rollback_target(&h, 3, None).map(|x| x.version), Ok(2));
        assert_eq!(rollback_target(&h, 2, None).map(|x| x.version), Ok(1));
        assert_eq!(rollback_target(&h, 3, Some(1)).map(|x| x.version), Ok(1));
        assert_eq!(
            rollback_target(&h, 3, Some(3)),
            Err(RollbackError::AlreadyCurrent(3))
        );
        let err = rollback_target(&h, 3, Some(7)).expect_err("not kept");
        assert_eq!(
            err.to_string(),
            "version 7 is not kept; kept versions: 1, 2, 3"
        );
        assert_eq!(
            rollback_target(&h[..1], 1, None),
            Err(RollbackError::NoEarlier { current: 1 })
        );
        // Redeploying the same module twice leaves nothing to go back to.
        let same = vec![v(1, b"a"), v(2, b"a")];
        assert!(rollback_target(&same, 2, None).is_err());
    }

    #[test]
    fn reconcile_moves_only_for_newer_versions_of_the_owner() {
        let (a, b) = (ContentHash::of(b"a"), ContentHash::of(b"b"));
        let p = |version, hash, removed, same_owner| {
            Some(Published {
                version,
                hash,
                removed,
                same_owner,
            })
        };
        assert_eq!(reconcile(3, a, None), Reconcile::Keep);
        // The DHT lags behind a deploy that was just committed here.
        assert_eq!(reconcile(3, a, p(2, b, false, true)), Reconcile::Keep);
        assert_eq!(reconcile(3, a, p(3, a, false, true)), Reconcile::Keep);
        // Removed by the owner.
        assert_eq!(
            reconcile(3, a, p(4, a, true, true)),
            Reconcile::Forget { unplace: true }
        );
        // Redeployed elsewhere: a new module...
        assert_eq!(
            reconcile(3, a, p(4, b, false, true)),
            Reconcile::Forget { unplace: true }
        );
        // ...or the same one, whose replicas here still serve it.
        assert_eq!(
            reconcile(3, a, p(4, a, false, true)),
            Reconcile::Forget { unplace: false }
        );
        // Another key's record is not the owner's word.
        assert_eq!(reconcile(3, a, p(9, b, true, false)), Reconcile::Keep);
    }
}
