//! Function file bundles on a super: serving them by hash, and fetching
//! one from another super for a cross-super placement (verified by hash
//! and checked, `common::files`, before any client sees it), like modules.

use std::sync::Arc;

use axum::body::Bytes;
use orb_proto::wire::{BundleRef, ErrorKind, Response, WireError};
use orb_proto::{ContentHash, PeerAddr};

use super::{Shared, forwarding};
use crate::common::files;
use crate::common::util::blocking;
use crate::error::NodeError;

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
    if files::stored(&shared.store, b.hash).await? {
        return Ok(());
    }
    let conn = forwarding::peer_conn(shared, from)
        .await
        .map_err(|e| e.to_wire())?;
    files::fetch_and_store(&shared.store, &conn, b, shared.config.bundle_limits)
        .await
        .map(|_| ())
}
