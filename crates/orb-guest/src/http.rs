//! Outbound HTTP.
//!
//! A function may only reach hosts on its allow-list (`orb-client deploy
//! --allow-host HOST[:PORT]`), and only on nodes whose owner allows outbound
//! traffic; otherwise the fetch fails with [`Code::Denied`] and a message
//! saying which rule refused it. Requests are bounded in number, time and
//! response size per call ([`Code::Limit`], [`Code::Timeout`],
//! [`Code::TooLarge`]).
//!
//! ```no_run
//! use orb_guest::http;
//!
//! # fn main() -> Result<(), orb_guest::Error> {
//! let page = http::get("https://example.com/")?;
//! println!("{} {}", page.status, page.body.len());
//!
//! let posted = http::fetch(
//!     "POST",
//!     "https://api.example.com/items",
//!     &[("content-type", "application/json")],
//!     br#"{"name":"orb"}"#,
//! )?;
//! assert!(posted.is_success());
//! # Ok(())
//! # }
//! ```
//!
//! [`Code::Denied`]: crate::Code::Denied
//! [`Code::Limit`]: crate::Code::Limit
//! [`Code::Timeout`]: crate::Code::Timeout
//! [`Code::TooLarge`]: crate::Code::TooLarge

use crate::abi::{self, code};
use crate::{Error, sys};

/// An outbound request; build one with [`Request::new`] and send it with
/// [`send`].
pub use crate::abi::HttpRequest as Request;
/// The status, headers and body of an answer.
pub use crate::abi::Response;

/// Send `method url` with `headers` and `body` and return the answer,
/// whatever its status.
pub fn fetch(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Response, Error> {
    send(&Request {
        method: method.to_string(),
        url: url.to_string(),
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        body: body.to_vec(),
    })
}

/// `GET url`.
pub fn get(url: &str) -> Result<Response, Error> {
    fetch("GET", url, &[], &[])
}

/// Send a prepared request.
pub fn send(request: &Request) -> Result<Response, Error> {
    request
        .check()
        .map_err(|e| Error::local(code::INVALID, e.to_string()))?;
    let blob = request
        .encode()
        .map_err(|e| Error::local(code::INVALID, e.to_string()))?;
    sys::check(sys::http_fetch(&blob)?)?;
    response()
}

/// Decode the response left in the result buffer by a fetch or a call.
pub(crate) fn response() -> Result<Response, Error> {
    abi::Response::decode(&sys::take_result())
        .map_err(|e| Error::local(code::FAILED, format!("host sent a malformed response: {e}")))
}
