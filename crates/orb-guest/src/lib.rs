//! Host services for Orb functions written in Rust.
//!
//! An Orb function is a WASI command built for `wasm32-wasip1`: the request
//! body is stdin, the response is stdout. This crate adds what the node
//! running it offers through the `orb` import module:
//!
//! * [`kv`]: key-value state of the function, shared by all its replicas,
//!   with an atomic [`kv::increment`] and [`kv::compare_and_swap`];
//! * [`http`]: outbound HTTP to hosts on the function's allow-list;
//! * [`call()`](call::call): calling another function by name.
//!
//! Every operation returns `Result<_, `[`Error`]`>`; the error carries the
//! host's [`Code`] and its detail message, so a function can report why
//! (for instance `DENIED: outbound HTTP is disabled on this node`).
//!
//! ```no_run
//! use std::io::Read;
//!
//! fn main() -> Result<(), orb_guest::Error> {
//!     let mut name = String::new();
//!     std::io::stdin().read_to_string(&mut name).ok();
//!     let visits = orb_guest::kv::increment(format!("visits/{name}"), 1)?;
//!     println!("hello {name}, visit number {visits}");
//!     Ok(())
//! }
//! ```
//!
//! The crate builds for every target. Outside wasm32 there is no Orb host,
//! and every operation fails with [`Code::Unavailable`], so unit tests and
//! doc tests of code that uses it still compile and run on the developer's
//! machine:
//!
//! ```
//! let err = orb_guest::kv::get("greeting").unwrap_err();
//! # #[cfg(not(target_arch = "wasm32"))]
//! assert_eq!(err.code(), orb_guest::Code::Unavailable);
//! ```
//!
//! A module that imports an `orb` function the node does not provide is
//! refused at deploy, naming the function; see `docs/abi.md` for the ABI
//! itself and its versioning rules.

pub mod abi;
pub mod call;
pub mod http;
pub mod kv;
mod sys;

use std::fmt;

pub use abi::ABI_VERSION;
pub use call::call;

/// The ABI version of the host running this function: [`ABI_VERSION`] or
/// later on an Orb node, 0 outside one.
pub fn host_abi_version() -> i32 {
    sys::abi_version()
}

/// What went wrong, as the host's result code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// No such key or function.
    NotFound,
    /// A bad argument: malformed request, invalid UTF-8, out-of-range
    /// value, or a stored value that is not a counter.
    Invalid,
    /// A request or result over its size limit.
    TooLarge,
    /// Not allowed on this node or for this function.
    Denied,
    /// A per-call budget of host operations or bytes is used up.
    Limit,
    /// Out of time.
    Timeout,
    /// The service is down, or there is no Orb host at all.
    Unavailable,
    /// A compare-and-swap found another value.
    Conflict,
    /// A nested call would exceed the call-depth limit.
    Depth,
    /// A remote failure.
    Failed,
    /// A code this version of the crate does not know.
    Other(i32),
}

impl Code {
    /// The code for a raw result; `None` for OK.
    pub fn from_raw(rc: i32) -> Option<Code> {
        use abi::code::*;
        Some(match rc {
            OK => return None,
            NOT_FOUND => Code::NotFound,
            INVALID => Code::Invalid,
            TOO_LARGE => Code::TooLarge,
            DENIED => Code::Denied,
            LIMIT => Code::Limit,
            TIMEOUT => Code::Timeout,
            UNAVAILABLE => Code::Unavailable,
            CONFLICT => Code::Conflict,
            DEPTH => Code::Depth,
            FAILED => Code::Failed,
            other => Code::Other(other),
        })
    }

    /// The raw value of the code.
    pub fn raw(self) -> i32 {
        use abi::code::*;
        match self {
            Code::NotFound => NOT_FOUND,
            Code::Invalid => INVALID,
            Code::TooLarge => TOO_LARGE,
            Code::Denied => DENIED,
            Code::Limit => LIMIT,
            Code::Timeout => TIMEOUT,
            Code::Unavailable => UNAVAILABLE,
            Code::Conflict => CONFLICT,
            Code::Depth => DEPTH,
            Code::Failed => FAILED,
            Code::Other(n) => n,
        }
    }

    /// The name used in `docs/abi.md`, e.g. `NOT_FOUND`.
    pub fn name(self) -> &'static str {
        match self {
            Code::NotFound => "NOT_FOUND",
            Code::Invalid => "INVALID",
            Code::TooLarge => "TOO_LARGE",
            Code::Denied => "DENIED",
            Code::Limit => "LIMIT",
            Code::Timeout => "TIMEOUT",
            Code::Unavailable => "UNAVAILABLE",
            Code::Conflict => "CONFLICT",
            Code::Depth => "DEPTH",
            Code::Failed => "FAILED",
            Code::Other(_) => "UNKNOWN",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Code::Other(n) => write!(f, "code {n}"),
            c => f.write_str(c.name()),
        }
    }
}

/// A failed host operation: the code and the host's detail message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    code: Code,
    message: String,
}

impl Error {
    /// The result code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The host's explanation (may be empty).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The error for a raw code, with the detail from the result buffer.
    pub(crate) fn from_host(rc: i32) -> Error {
        let detail = sys::take_result();
        Error {
            code: Code::from_raw(rc).unwrap_or(Code::Other(rc)),
            message: String::from_utf8_lossy(&detail).into_owned(),
        }
    }

    /// An error raised in the guest, without asking the host.
    pub(crate) fn local(rc: i32, message: impl Into<String>) -> Error {
        Error {
            code: Code::from_raw(rc).unwrap_or(Code::Other(rc)),
            message: message.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            write!(f, "{}", self.code)
        } else {
            write!(f, "{}: {}", self.code, self.message)
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for rc in 1..=10 {
            let code = Code::from_raw(rc);
            assert!(code.is_some_and(|c| c.raw() == rc && c.name() != "UNKNOWN"));
        }
        assert_eq!(Code::from_raw(0), None);
        assert_eq!(Code::from_raw(99), Some(Code::Other(99)));
        assert_eq!(Code::Other(99).to_string(), "code 99");
    }

    #[test]
    fn native_builds_have_no_host() {
        assert_eq!(host_abi_version(), 0);
        let e = kv::set("k", "v").err();
        assert_eq!(e.as_ref().map(Error::code), Some(Code::Unavailable));
        let text = e.map(|e| e.to_string()).unwrap_or_default();
        assert!(text.starts_with("UNAVAILABLE: not running on an Orb host"));
    }
}
