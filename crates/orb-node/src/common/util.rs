//! Small helpers shared by both roles.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use orb_transport::Endpoint;
use tokio::sync::watch;
use tokio::task::JoinSet;

use orb_proto::wire::{ErrorKind, Response, WireError};

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

/// Lock a mutex. A panic elsewhere while holding it leaves plain data
/// behind (tables, counters), still usable, so poisoning is ignored rather
/// than spreading the panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Read-lock, ignoring poisoning (see [`lock`]).
pub(crate) fn read_lock<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

/// Write-lock, ignoring poisoning (see [`lock`]).
pub(crate) fn write_lock<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

/// Graceful stop shared by both roles: signal the tasks, close the QUIC
/// endpoint, give the tasks 5 s to finish (then abort them), and wait until
/// peers were told the connections closed.
pub(crate) async fn stop_node(
    shutdown: &watch::Sender<bool>,
    tasks: &mut JoinSet<()>,
    endpoint: &Endpoint,
) {
    let _ = shutdown.send(true);
    endpoint.close();
    let deadline = tokio::time::sleep(Duration::from_secs(5));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            next = tasks.join_next() => if next.is_none() { break },
            _ = &mut deadline => { tasks.abort_all(); break }
        }
    }
    endpoint.wait_idle().await;
}

/// The error for an answer that is not one the request expects.
pub(crate) fn unexpected(kind: ErrorKind, answer: &Response) -> WireError {
    WireError::new(kind, format!("unexpected answer {answer:?}"))
}

/// Serve items from `items` (accepted connections, say) until it ends or
/// shutdown is signalled: `handle` either spawns a task for an item
/// (returns its future) or deals with it at once (returns `None`). The
/// tasks are reaped as they end, so the set stays as small as the work,
/// and aborted at the end.
pub(crate) async fn serve_each<T, S, H, HF>(
    items: S,
    mut handle: H,
    mut shutdown: watch::Receiver<bool>,
) where
    S: futures_util::Stream<Item = T>,
    H: FnMut(T) -> Option<HF>,
    HF: std::future::Future + Send + 'static,
    HF::Output: Send + 'static,
{
    use futures_util::StreamExt;
    let mut items = std::pin::pin!(items);
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            item = items.next() => match item {
                Some(item) => {
                    if let Some(task) = handle(item) {
                        tasks.spawn(task);
                    }
                }
                None => break,
            },
            _ = shutdown.changed() => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    tasks.abort_all();
}

/// The connections an endpoint accepts, as a stream.
pub(crate) fn accepted(
    endpoint: Endpoint,
) -> impl futures_util::Stream<Item = orb_transport::Connection> {
    futures_util::stream::unfold(endpoint, |ep| async move {
        let conn = ep.accept().await?;
        Some((conn, ep))
    })
}

/// Largest response body to accept for a call of a function with these
/// settings: its output cap plus room for the response frame.
pub(crate) fn max_call_output(settings: &orb_proto::wire::FunctionSettings) -> usize {
    /// Slack on top of the output cap for the response frame.
    const OUTPUT_SLACK: usize = 64 * 1024;
    settings
        .limits
        .max_output
        .map_or(orb_proto::limits::DEFAULT_MAX_OUTPUT, |v| {
            usize::try_from(v).unwrap_or(usize::MAX)
        })
        .saturating_add(OUTPUT_SLACK)
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
