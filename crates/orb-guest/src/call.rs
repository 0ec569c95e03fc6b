//! Calling other functions.
//!
//! A call goes through the network like a gateway call (same routing,
//! limits and billing) and answers with the callee's status, headers and
//! output. It inherits what is left of the caller's time, and the node
//! limits how deep calls may nest ([`Code::Depth`]).
//!
//! ```no_run
//! use orb_guest::call;
//!
//! # fn main() -> Result<(), orb_guest::Error> {
//! let upper = orb_guest::call("upper", b"hello")?;
//! assert_eq!(upper.body, b"HELLO");
//!
//! let mut req = call::Request::new("search", Vec::new());
//! req.method = "GET".to_string();
//! req.path = "/v1".to_string();
//! req.query = "q=orb".to_string();
//! let found = call::send(&req)?;
//! println!("{} {}", found.status, String::from_utf8_lossy(&found.body));
//! # Ok(())
//! # }
//! ```
//!
//! A call that reached the callee answers `Ok` whatever the callee did:
//! check [`Response::is_success`]. Errors are for calls that could not be
//! made: [`Code::NotFound`] (no such function), [`Code::Depth`],
//! [`Code::Timeout`], [`Code::Unavailable`], [`Code::Failed`].
//!
//! [`Code::Depth`]: crate::Code::Depth
//! [`Code::NotFound`]: crate::Code::NotFound
//! [`Code::Timeout`]: crate::Code::Timeout
//! [`Code::Unavailable`]: crate::Code::Unavailable
//! [`Code::Failed`]: crate::Code::Failed

use crate::abi::code;
use crate::{Error, sys};

/// A call with method, path, query and headers; see [`Request::new`].
pub use crate::abi::CallRequest as Request;
/// The callee's status, headers and output.
pub use crate::abi::Response;

/// Call `function` with `input` (as a `POST` with no path, query or
/// headers) and return its answer.
pub fn call(function: &str, input: &[u8]) -> Result<Response, Error> {
    send(&Request::new(function, input))
}

/// Make a prepared call.
pub fn send(request: &Request) -> Result<Response, Error> {
    request
        .check()
        .map_err(|e| Error::local(code::INVALID, e.to_string()))?;
    let blob = request
        .encode()
        .map_err(|e| Error::local(code::INVALID, e.to_string()))?;
    sys::check(sys::call(&blob)?)?;
    crate::http::response()
}
