//! Function file bundles as both roles see them: the checks a bundle
//! passes before a node stores it, wherever it came from.

use orb_proto::ContentHash;
use orb_proto::bundle::BundleLimits;
use orb_proto::wire::{BundleRef, ErrorKind, WireError};

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

