//! Function file bundles as both roles see them: the checks a bundle
//! passes before a node stores it, wherever it came from, and fetching one
//! by hash from another node.

use std::time::Duration;

use axum::body::Bytes;
use orb_proto::ContentHash;
use orb_proto::bundle::BundleLimits;
use orb_proto::wire::{BundleRef, ErrorKind, Request, Response, WireError};
use orb_store::Store;
use orb_transport::Connection;

use super::util::{blocking, unexpected};

/// How long fetching a bundle from another node may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(120);

/// Whether bundle `hash` is in `store`.
pub(crate) async fn stored(store: &Store, hash: ContentHash) -> Result<bool, WireError> {
    let store = store.clone();
    Ok(blocking(move || store.has_bundle(&hash))
        .await
        .map_err(|e| e.to_wire())?
        .unwrap_or(false))
}

/// Fetch bundle `b` from `from` (never more than its declared size, and
/// not at all when that is over `limits`), check it like a deployed one
/// and store it; its bytes.
pub(crate) async fn fetch_and_store(
    store: &Store,
    from: &Connection,
    b: BundleRef,
    limits: BundleLimits,
) -> Result<Bytes, WireError> {
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
    let store = store.clone();
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

/// Check a bundle against what the deploy declared and this super's
/// bounds: size, hash, and that it decodes (a canonical, well-formed
/// tree). Blocking (hashing and decoding up to the bound): run it on a
/// blocking thread.
pub(crate) fn check_bundle(
    declared: &BundleRef,
    bytes: &[u8],
    limits: &BundleLimits,
) -> Result<(), WireError> {
    let bad = |kind, m: String| WireError::new(kind, format!("file bundle refused: {m}"));
    if bytes.len() as u64 > limits.max_bytes {
        return Err(bad(
            ErrorKind::TooLarge,
            format!(
                "{} bytes is over this node's {}-byte limit",
                bytes.len(),
                limits.max_bytes
            ),
        ));
    }
    if bytes.len() as u64 != declared.size {
        return Err(bad(
            ErrorKind::BadRequest,
            format!(
                "{} bytes arrived, {} were declared",
                bytes.len(),
                declared.size
            ),
        ));
    }
    let actual = ContentHash::of(bytes);
    if actual != declared.hash {
        return Err(bad(
            ErrorKind::BadRequest,
            format!("bytes hash to {actual}, not the declared {}", declared.hash),
        ));
    }
    let entries = orb_proto::bundle::decode(bytes, limits).map_err(|e| {
        let kind = match e {
            orb_proto::bundle::BundleError::TooLarge { .. }
            | orb_proto::bundle::BundleError::TooManyEntries { .. } => ErrorKind::TooLarge,
            _ => ErrorKind::BadRequest,
        };
        bad(kind, e.to_string())
    })?;
    if entries.len() as u64 != u64::from(declared.entries) {
        return Err(bad(
            ErrorKind::BadRequest,
            format!(
                "it holds {} entries, {} were declared",
                entries.len(),
                declared.entries
            ),
        ));
    }
    Ok(())
}
