//! Small helpers shared by both roles.

use std::time::{SystemTime, UNIX_EPOCH};

use orb_proto::wire::{ErrorKind, WireError};

use crate::error::NodeError;

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Run blocking work (redb transactions, wasm compilation) off the async
/// executor, so a slow disk or a big module never stalls the network loops.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, NodeError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| NodeError::Internal(format!("blocking task failed: {e}")))
}

/// A fresh request ID: 16 random bytes in hex.
pub(crate) fn request_id() -> String {
    let mut b = [0u8; 8];
    // A failed random source only makes IDs less unique; fall back to time.
    if getrandom::fill(&mut b).is_err() {
        b = now_ms().to_be_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Function names: 1..=64 of `[a-z0-9-_.]`, starting with a letter or digit.
/// They appear in URLs and DHT keys, so they are kept boring.
pub(crate) fn check_name(name: &str) -> Result<(), WireError> {
    let ok = !name.is_empty()
        && name.len() <= orb_proto::limits::MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(WireError::new(
            ErrorKind::BadRequest,
            format!(
                "invalid function name {name:?}: use 1 to {} characters of a-z, 0-9, '-', '_' or '.', starting with a letter or digit",
                orb_proto::limits::MAX_NAME_LEN
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("hello").is_ok());
        assert!(check_name("a.b-c_9").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("Hello").is_err());
        assert!(check_name("-x").is_err());
        assert!(check_name("a/b").is_err());
        assert!(check_name(&"a".repeat(65)).is_err());
    }
}
