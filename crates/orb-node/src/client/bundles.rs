//! The file bundles of the functions this node runs: fetched by hash from
//! the super that placed the replica (or, for a bundle a call names that
//! is not here yet, from a home super), verified and checked before they
//! are stored, and decoded once per bundle hash into a [`FileTree`] that
//! every call of the function shares. The decoded trees are a bounded
//! cache; the store keeps the bundles across restarts.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use orb_proto::ContentHash;
use orb_proto::wire::{BundleRef, ErrorKind, WireError};
use orb_runtime::files::FileTree;
use orb_transport::Connection;

use super::{Shared, home_links};
use crate::common::files;
use crate::common::util::{blocking, lock};

/// Decoded trees by bundle hash, least recently used first.
pub(super) struct TreeCache {
    max: usize,
    trees: Mutex<VecDeque<(ContentHash, FileTree)>>,
}

impl TreeCache {
    /// A cache of `max` trees at most (at least one).
    pub(super) fn new(max: usize) -> Self {
        TreeCache {
            max: max.max(1),
            trees: Mutex::new(VecDeque::new()),
        }
    }

    fn get(&self, hash: &ContentHash) -> Option<FileTree> {
        let mut trees = lock(&self.trees);
        let i = trees.iter().position(|(h, _)| h == hash)?;
        let hit = trees.remove(i)?;
        let tree = hit.1.clone();
        trees.push_back(hit);
        Some(tree)
    }

    fn insert(&self, hash: ContentHash, tree: FileTree) {
        let mut trees = lock(&self.trees);
        trees.retain(|(h, _)| *h != hash);
        while trees.len() >= self.max {
            trees.pop_front();
        }
        trees.push_back((hash, tree));
    }
}

/// Make sure bundle `b` is in the store, fetching it from `from` if not.
pub(super) async fn ensure_stored(
    shared: &Arc<Shared>,
    from: &Connection,
    b: BundleRef,
) -> Result<(), WireError> {
    if !files::stored(&shared.store, b.hash).await? {
        fetch(shared, from, b).await?;
    }
    Ok(())
}

/// Fetch bundle `b` from `from`, check it and store it; its bytes.
async fn fetch(shared: &Arc<Shared>, from: &Connection, b: BundleRef) -> Result<Bytes, WireError> {
    files::fetch_and_store(&shared.store, from, b, shared.config.bundle_limits).await
}

/// The decoded tree of bundle `b` for a call: from the cache, else from
/// the store, else fetched from `sender` (the node that sent the call) or
/// a home super.
pub(super) async fn tree(
    shared: &Arc<Shared>,
    b: BundleRef,
    sender: Option<&Connection>,
) -> Result<FileTree, WireError> {
    if let Some(t) = shared.trees.get(&b.hash) {
        return Ok(t);
    }
    let store = shared.store.clone();
    let stored = blocking(move || store.bundle(&b.hash))
        .await
        .map_err(|e| e.to_wire())?
        .map_err(|e| WireError::new(ErrorKind::Internal, e.to_string()))?;
    let bytes = match stored {
        Some(v) => Bytes::from(v),
        None => fetch_anywhere(shared, b, sender).await?,
    };
    let limits = shared.config.bundle_limits;
    let tree = blocking(move || FileTree::from_bundle(bytes, &limits))
        .await
        .map_err(|e| e.to_wire())?
        .map_err(|e| {
            WireError::new(
                ErrorKind::Internal,
                format!("stored file bundle {} unusable: {e}", b.hash),
            )
        })?;
    shared.trees.insert(b.hash, tree.clone());
    Ok(tree)
}

/// A bundle a call needs that was never placed here (the function was
/// redeployed with new files on the same module): from the call's sender,
/// then the home supers.
async fn fetch_anywhere(
    shared: &Arc<Shared>,
    b: BundleRef,
    sender: Option<&Connection>,
) -> Result<Bytes, WireError> {
    let mut last = WireError::new(
        ErrorKind::NotFound,
        format!("this node holds no file bundle {}", b.hash),
    );
    let mut sources: Vec<Connection> = sender.into_iter().cloned().collect();
    sources.extend(home_links(shared));
    for conn in sources.iter().take(4) {
        match fetch(shared, conn, b).await {
            Ok(bytes) => return Ok(bytes),
            Err(e) if e.kind == ErrorKind::TooLarge => return Err(e),
            Err(e) => last = e,
        }
    }
    // NotFound: routing forgets this replica for the call and tries another.
    Err(WireError::new(ErrorKind::NotFound, last.message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use orb_proto::bundle::{BundleBuilder, BundleLimits};

    fn tree(name: &str) -> FileTree {
        let mut b = BundleBuilder::new(BundleLimits::default());
        if b.add_file(name, b"x".to_vec()).is_err() {
            panic!("cannot build a bundle");
        }
        match FileTree::from_bundle(Bytes::from(b.finish()), &BundleLimits::default()) {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn cache_is_bounded_and_keeps_the_recently_used() {
        let cache = TreeCache::new(2);
        let (a, b, c) = (
            ContentHash::of(b"a"),
            ContentHash::of(b"b"),
            ContentHash::of(b"c"),
        );
        cache.insert(a, tree("a"));
        cache.insert(b, tree("b"));
        assert!(cache.get(&a).is_some(), "a is now the most recent");
        cache.insert(c, tree("c"));
        assert!(cache.get(&b).is_none(), "b was the least recently used");
        assert!(cache.get(&a).is_some());
        assert!(cache.get(&c).is_some());
        assert_eq!(lock(&cache.trees).len(), 2);
    }
}
