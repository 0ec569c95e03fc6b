//! Key-value state of the function.
//!
//! Keys and values are bytes. The state belongs to the function's owner and
//! is shared by every replica of the function wherever it runs, so
//! concurrent updates must use [`increment`] or [`compare_and_swap`] rather
//! than a [`get`] followed by a [`set`].
//!
//! ```no_run
//! use orb_guest::kv::{self, Cas};
//!
//! # fn main() -> Result<(), orb_guest::Error> {
//! kv::set("greeting", "hello")?;
//! assert_eq!(kv::get("greeting")?.as_deref(), Some(&b"hello"[..]));
//!
//! // Counters are atomic; a missing key counts as 0.
//! let hits = kv::increment("hits", 1)?;
//! assert_eq!(kv::counter("hits")?, hits);
//!
//! // Claim a key only if nobody has yet.
//! match kv::compare_and_swap("owner", None, Some(b"me"))? {
//!     Cas::Swapped => println!("claimed"),
//!     Cas::Conflict { current } => println!("taken: {current:?}"),
//! }
//! kv::delete("greeting")?;
//! # Ok(())
//! # }
//! ```

use crate::abi::{self, code};
use crate::{Error, sys};

/// Outcome of [`compare_and_swap`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cas {
    /// The key held the expected value (or was absent, as expected) and
    /// now holds the new one (or is deleted).
    Swapped,
    /// The key held something else; nothing was written.
    Conflict {
        /// What the key holds now (`None`: absent).
        current: Option<Vec<u8>>,
    },
}

/// The value of `key`, or `None` when it is not set.
pub fn get(key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, Error> {
    match sys::kv_get(key.as_ref())? {
        code::OK => Ok(Some(sys::take_result())),
        code::NOT_FOUND => Ok(None),
        rc => Err(Error::from_host(rc)),
    }
}

/// Set `key` to `value`.
pub fn set(key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<(), Error> {
    sys::check(sys::kv_set(key.as_ref(), value.as_ref())?)
}

/// Remove `key`; removing a key that is not set is not an error.
pub fn delete(key: impl AsRef<[u8]>) -> Result<(), Error> {
    sys::check(sys::kv_delete(key.as_ref())?)
}

/// Atomically add `delta` to the counter at `key` and return the new
/// value. A missing key counts as 0. Fails with [`Code::Invalid`] when the
/// key holds something that is not a counter (see [`abi::parse_counter`])
/// or the sum overflows `i64`.
///
/// [`Code::Invalid`]: crate::Code::Invalid
pub fn increment(key: impl AsRef<[u8]>, delta: i64) -> Result<i64, Error> {
    let (rc, value) = sys::kv_increment(key.as_ref(), delta)?;
    sys::check(rc)?;
    Ok(value)
}

/// The counter at `key` without changing it: 0 when unset,
/// [`Code::Invalid`] when the value is not a counter.
///
/// [`Code::Invalid`]: crate::Code::Invalid
pub fn counter(key: impl AsRef<[u8]>) -> Result<i64, Error> {
    match get(key)? {
        None => Ok(0),
        Some(v) => abi::parse_counter(&v)
            .ok_or_else(|| Error::local(code::INVALID, "the value is not a counter")),
    }
}

/// Atomically replace the value of `key` by `new` if it is `expected`.
/// `expected: None` means "the key is not set"; `new: None` deletes the
/// key.
pub fn compare_and_swap(
    key: impl AsRef<[u8]>,
    expected: Option<&[u8]>,
    new: Option<&[u8]>,
) -> Result<Cas, Error> {
    match sys::kv_compare_and_swap(key.as_ref(), expected, new)? {
        code::OK => Ok(Cas::Swapped),
        code::CONFLICT => {
            let current = abi::decode_current(&sys::take_result()).map_err(|e| {
                Error::local(
                    code::FAILED,
                    format!("host sent a bad conflict result: {e}"),
                )
            })?;
            Ok(Cas::Conflict { current })
        }
        rc => Err(Error::from_host(rc)),
    }
}
