//! Function file bundles on a super: serving them by hash, and fetching
//! one from another super for a cross-super placement (verified by hash
//! and checked, `common::files`, before any client sees it), like modules.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use orb_proto::wire::{BundleRef, ErrorKind, Request, Response, WireError};
use orb_proto::{ContentHash, PeerAddr};

use super::{Shared, forwarding};
use crate::common::files::check_bundle;
use crate::common::util::{blocking, unexpected};
use crate::error::NodeError;

/// How long fetching a bundle from another super may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(120);

/// The answer to `FetchBundle`: the bundle's bytes as the body.
pub(super) async fn answer(shared: &Shared, hash: ContentHash) -> (Response, Bytes) {
    let store = shared.store.clone();
    match blocking(move || store.bundle(&hash)).await {
        Ok(Ok(Some(bytes))) => (Response::Bundle { hash }, Bytes::from(bytes)),
        Ok(Ok(None)) => (
            Response::Error(WireError::new(
                ErrorKind::NotFound,
                format!("no file bundle {hash}"),
            )),
            Bytes::new(),
        ),
        Ok(Err(e)) => (Response::Error(NodeError::from(e).to_wire()), Bytes::new()),
        Err(e) => (Response::Error(e.to_wire()), Bytes::new()),
    }
}

/// Make sure bundle `b` is in this super's store, fetching it from super
/// `from` if not, and checking it like a deployed one.
pub(super) async fn ensure_from(
    shared: &Arc<Shared>,
    from: PeerAddr,
    b: BundleRef,
) -> Result<(), WireError> {
    let store = shared.store.clone();
    let have = blocking(move || store.has_bundle(&b.hash))
        .await
        .map_err(|e| e.to_wire())?
        .unwrap_or(false);
    if have {
        return Ok(());
    }
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
    let conn = forwarding::peer_conn(shared, from)
        .await
        .map_err(|e| e.to_wire())?;
    let max = usize::try_from(b.size).unwrap_or(usize::MAX);
    let answer = tokio::time::timeout(
        FETCH_TIMEOUT,
        conn.request(&Request::FetchBundle { hash: b.hash }, &[], max),
    )
    .await
    .map_err(|_| WireError::new(ErrorKind::Unavailable, "file bundle fetch timed out"))?
    .map_err(|e| NodeError::from(e).to_wire())?;
    let bytes = match answer {
        (Response::Bundle { .. }, bytes) => bytes,
        (Response::Error(e), _) => return Err(e),
        (other, _) => return Err(unexpected(ErrorKind::Internal, &other)),
    };
    let store = shared.store.clone();
    blocking(move || {
        check_bundle(&b, &bytes, &limits)?;
        store
            .put_bundle(&b.hash, &bytes)
            .map_err(|e| NodeError::from(e).to_wire())
    })
    .await
    .map_err(|e| e.to_wire())?
}
