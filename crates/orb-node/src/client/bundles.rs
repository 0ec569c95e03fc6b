//! The file bundles of the functions this node runs: fetched by hash from
//! the super that placed the replica (or, for a bundle a call names that
//! is not here yet, from a home super), verified and checked before they
//! are stored, and decoded once per bundle hash into a [`FileTree`] that
//! every call of the function shares. The decoded trees are a bounded
//! cache; the store keeps the bundles across restarts.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use orb_proto::ContentHash;
use orb_proto::wire::{BundleRef, ErrorKind, Request, Response, WireError};
use orb_runtime::files::FileTree;
use orb_transport::Connection;

use super::{Shared, home_links};
use crate::common::files::check_bundle;
use crate::common::util::{blocking, lock, unexpected};

/// How long fetching a bundle may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(120);

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
    let store = shared.store.clone();
    let have = blocking(move || store.has_bundle(&b.hash))
        .await
        .map_err(|e| e.to_wire())?
        .unwrap_or(false);
    if !have {
        fetch(shared, from, b).await?;
    }
    Ok(())
}

/// Fetch bundle `b` from `from`, check it and store it; its bytes.
async fn fetch(shared: &Arc<Shared>, from: &Connection, b: BundleRef) -> Result<Bytes, WireError> {
    let limits = shared.config.bundle_limits;
    if b.size > limits.max_bytes {
        return Err(WireError::new(
            ErrorKind::TooLarge,
            format!(
                "file bundle of {} bytes is over this node's {}-byte limit",
                b.size, limits.max_bytes
            ),
        ));
    }
    let max = usize::try_from(b.size).unwrap_or(usize::MAX);
    let answer = tokio::time::timeout(
        FETCH_TIMEOUT,
        from.request(&Request::FetchBundle { hash: b.hash }, &[], max),
    )
    .await
    .map_err(|_| WireError::new(ErrorKind::Unavailable, "file bundle fetch timed out"))?
    .map_err(|e| WireError::new(ErrorKind::Unavailable, format!("fetching file bundle: {e}")))?;
    let bytes = match answer {
        (Response::Bundle { .. }, bytes) => bytes,
        (Response::Error(e), _) => return Err(e),
        (other, _) => return Err(unexpected(ErrorKind::Internal, &other)),
    };
    let store = shared.store.clone();
    let kept = bytes.clone();
    blocking(move || {
        // Never trust the sender: the hash is the bundle's identity.
        check_bundle(&b, &bytes, &limits)?;
        store
            .put_bundle(&b.hash, &bytes)
            .map_err(|e| WireError::new(ErrorKind::Internal, e.to_string()))
    })
    .await
    .map_err(|e| e.to_wire())??;
    Ok(kept)
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
