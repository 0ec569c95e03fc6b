//! The wire level of the `orb` host interface: result codes, the binary
//! layouts of requests and responses, and the counter encoding.
//!
//! This module is the single definition of the ABI: the guest wrappers in
//! this crate and the host side in `orb-runtime` both use it, so the two
//! cannot drift apart. `docs/abi.md` in the repository describes the same
//! ABI for authors in other languages.
//!
//! # Layouts
//!
//! All integers are little-endian. A *string* or *bytes* field is a `u32`
//! length followed by that many bytes (strings are UTF-8). A *headers*
//! field is a `u32` count (at most [`MAX_HEADERS`]) followed by that many
//! pairs of strings (name, value). A blob must be consumed exactly: bytes
//! left over make it malformed.
//!
//! | blob | fields, in order |
//! |---|---|
//! | [`HttpRequest`] | method: string, url: string, headers, body: bytes |
//! | [`CallRequest`] | function: string, method: string, path: string, query: string, headers, body: bytes |
//! | [`Response`] | status: `u16`, headers, body: bytes |
//! | compare-and-swap conflict | `0` (absent), or `1` followed by the current value to the end |
//!
//! Decoding checks every length against what is left before slicing, so a
//! hostile length can never make either side allocate more than the blob.

use std::fmt;

/// Import module name of the host interface.
pub const MODULE: &str = "orb";

/// Version of the ABI this crate speaks; `orb.abi_version()` answers the
/// host's. See `docs/abi.md` for the versioning rules.
pub const ABI_VERSION: i32 = 1;

/// Result codes returned by every `orb` import.
pub mod code {
    /// Success.
    pub const OK: i32 = 0;
    /// No such key (`kv_get`) or no such function (`call`).
    pub const NOT_FOUND: i32 = 1;
    /// A bad pointer, invalid UTF-8, a malformed request or an argument
    /// out of range; or a stored value that is not a counter.
    pub const INVALID: i32 = 2;
    /// A request or result over its size limit.
    pub const TOO_LARGE: i32 = 3;
    /// Not allowed here: host off the allow-list, outbound HTTP disabled on
    /// this node, and the like.
    pub const DENIED: i32 = 4;
    /// A per-call budget (number of operations, bytes moved) is used up.
    pub const LIMIT: i32 = 5;
    /// The operation ran out of time.
    pub const TIMEOUT: i32 = 6;
    /// The service is down, or this node offers no host services.
    pub const UNAVAILABLE: i32 = 7;
    /// A compare-and-swap found another value than expected.
    pub const CONFLICT: i32 = 8;
    /// A nested call would exceed the call-depth limit.
    pub const DEPTH: i32 = 9;
    /// A remote failure; the result buffer holds the detail.
    pub const FAILED: i32 = 10;
}

/// Length that stands for "no value" in `kv_compare_and_swap`: an absent
/// expected value, or deleting the key instead of writing a new value.
pub const NONE_LEN: i32 = -1;

/// Most headers in a request or response.
pub const MAX_HEADERS: usize = 64;
/// Longest header name, in bytes.
pub const MAX_HEADER_NAME: usize = 256;
/// Longest header value, in bytes.
pub const MAX_HEADER_VALUE: usize = 8 * 1024;
/// Longest HTTP method, in bytes.
pub const MAX_METHOD: usize = 16;
/// Longest URL, path or query string, in bytes.
pub const MAX_URL: usize = 8 * 1024;
/// Longest function name, in bytes (as in orb-proto).
pub const MAX_FUNCTION_NAME: usize = 64;

/// Header name/value pairs, in order.
pub type Headers = Vec<(String, String)>;

/// Why a blob could not be decoded or a request is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub String);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Malformed {}

fn malformed(msg: impl Into<String>) -> Malformed {
    Malformed(msg.into())
}

/// An outbound HTTP request (`orb.http_fetch`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpRequest {
    /// HTTP method, e.g. `GET`.
    pub method: String,
    /// Absolute `http://` or `https://` URL.
    pub url: String,
    /// Request headers.
    pub headers: Headers,
    /// Request body.
    pub body: Vec<u8>,
}

/// A call of another function (`orb.call`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CallRequest {
    /// Name of the function to call.
    pub function: String,
    /// HTTP method the callee sees (`REQUEST_METHOD`).
    pub method: String,
    /// Path after the function name: empty or starting with `/`.
    pub path: String,
    /// Query string without the `?` (`QUERY_STRING`).
    pub query: String,
    /// Request headers.
    pub headers: Headers,
    /// Input (the callee's stdin).
    pub body: Vec<u8>,
}

/// The answer to an HTTP fetch or a call.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Response headers.
    pub headers: Headers,
    /// Response body (for a call: the callee's output).
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// A request with no headers and no body.
    pub fn new(method: impl Into<String>, url: impl Into<String>) -> Self {
        HttpRequest {
            method: method.into(),
            url: url.into(),
            ..HttpRequest::default()
        }
    }

    /// The blob passed to `orb.http_fetch`.
    pub fn encode(&self) -> Result<Vec<u8>, Malformed> {
        let mut w = Writer::default();
        w.bytes(self.method.as_bytes())?;
        w.bytes(self.url.as_bytes())?;
        w.headers(&self.headers)?;
        w.bytes(&self.body)?;
        Ok(w.0)
    }

    /// Parse a blob made by [`HttpRequest::encode`].
    pub fn decode(blob: &[u8]) -> Result<Self, Malformed> {
        let mut r = Reader(blob);
        let req = HttpRequest {
            method: r.string("method")?,
            url: r.string("url")?,
            headers: r.headers()?,
            body: r.bytes("body")?.to_vec(),
        };
        r.finish()?;
        Ok(req)
    }

    /// Check the fields: a method token, an absolute http(s) URL, sane
    /// headers. The host refuses a request that fails this with INVALID.
    pub fn check(&self) -> Result<(), Malformed> {
        check_method(&self.method)?;
        check_url(&self.url)?;
        check_headers(&self.headers)
    }
}

impl CallRequest {
    /// A `POST` of `body` to `function`, with no path, query or headers.
    pub fn new(function: impl Into<String>, body: impl Into<Vec<u8>>) -> Self {
        CallRequest {
            function: function.into(),
            method: "POST".to_string(),
            body: body.into(),
            ..CallRequest::default()
        }
    }

    /// The blob passed to `orb.call`.
    pub fn encode(&self) -> Result<Vec<u8>, Malformed> {
        let mut w = Writer::default();
        w.bytes(self.function.as_bytes())?;
        w.bytes(self.method.as_bytes())?;
        w.bytes(self.path.as_bytes())?;
        w.bytes(self.query.as_bytes())?;
        w.headers(&self.headers)?;
        w.bytes(&self.body)?;
        Ok(w.0)
    }

    /// Parse a blob made by [`CallRequest::encode`].
    pub fn decode(blob: &[u8]) -> Result<Self, Malformed> {
        let mut r = Reader(blob);
        let req = CallRequest {
            function: r.string("function")?,
            method: r.string("method")?,
            path: r.string("path")?,
            query: r.string("query")?,
            headers: r.headers()?,
            body: r.bytes("body")?.to_vec(),
        };
        r.finish()?;
        Ok(req)
    }

    /// Check the fields: a plausible function name, a method token, a path
    /// and query without spaces or control characters, sane headers.
    pub fn check(&self) -> Result<(), Malformed> {
        let name = &self.function;
        if name.is_empty() || name.len() > MAX_FUNCTION_NAME {
            return Err(malformed(format!(
                "function name of {} bytes; it must be 1 to {MAX_FUNCTION_NAME}",
                name.len()
            )));
        }
        if name.bytes().any(|b| b <= b' ' || b == 0x7f || b == b'/') {
            return Err(malformed(
                "function name contains a space, a control character or '/'",
            ));
        }
        check_method(&self.method)?;
        if !(self.path.is_empty() || self.path.starts_with('/')) {
            return Err(malformed("path must be empty or start with '/'"));
        }
        check_uri_part("path", &self.path, b"?#")?;
        check_uri_part("query", &self.query, b"#")?;
        check_headers(&self.headers)
    }
}

impl Response {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The first header called `name` (compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The result blob of a fetch or call.
    pub fn encode(&self) -> Result<Vec<u8>, Malformed> {
        let mut w = Writer::default();
        w.0.extend_from_slice(&self.status.to_le_bytes());
        w.headers(&self.headers)?;
        w.bytes(&self.body)?;
        Ok(w.0)
    }

    /// Parse a blob made by [`Response::encode`].
    pub fn decode(blob: &[u8]) -> Result<Self, Malformed> {
        let mut r = Reader(blob);
        let status = u16::from_le_bytes(r.array("status")?);
        let resp = Response {
            status,
            headers: r.headers()?,
            body: r.bytes("body")?.to_vec(),
        };
        r.finish()?;
        Ok(resp)
    }

    /// The encoded size, without encoding: lets the host refuse an
    /// oversized result before copying it.
    pub fn encoded_len(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| 8usize.saturating_add(n.len()).saturating_add(v.len()))
            .fold(0, usize::saturating_add);
        (2 + 4 + 4usize)
            .saturating_add(headers)
            .saturating_add(self.body.len())
    }
}

/// The result blob of a compare-and-swap that found another value.
pub fn encode_current(current: Option<&[u8]>) -> Vec<u8> {
    match current {
        None => vec![0],
        Some(v) => {
            let mut out = Vec::with_capacity(v.len() + 1);
            out.push(1);
            out.extend_from_slice(v);
            out
        }
    }
}

/// Parse a blob made by [`encode_current`].
pub fn decode_current(blob: &[u8]) -> Result<Option<Vec<u8>>, Malformed> {
    match blob.split_first() {
        Some((0, [])) => Ok(None),
        Some((1, rest)) => Ok(Some(rest.to_vec())),
        _ => Err(malformed("compare-and-swap result is not 0 or 1 + value")),
    }
}

/// Parse a counter as stored by `kv_increment`: ASCII decimal, an
/// optional `-`, no leading zeros (except `0` itself), no `+`, no spaces,
/// within `i64`. Anything else is not a counter.
pub fn parse_counter(value: &[u8]) -> Option<i64> {
    let digits = value.strip_prefix(b"-").unwrap_or(value);
    let canonical = !digits.is_empty()
        && digits.len() <= 19
        && digits.iter().all(u8::is_ascii_digit)
        && (digits == b"0" || digits[0] != b'0')
        && value != b"-0";
    if !canonical {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// The stored form of a counter (see [`parse_counter`]).
pub fn format_counter(n: i64) -> Vec<u8> {
    n.to_string().into_bytes()
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn check_method(method: &str) -> Result<(), Malformed> {
    if method.len() > MAX_METHOD || !is_token(method) {
        return Err(malformed(format!(
            "method {method:?} is not an HTTP token of 1 to {MAX_METHOD} bytes"
        )));
    }
    Ok(())
}

fn check_url(url: &str) -> Result<(), Malformed> {
    if url.len() > MAX_URL {
        return Err(malformed(format!(
            "url of {} bytes; the limit is {MAX_URL}",
            url.len()
        )));
    }
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    let rest = if lower.starts_with("https://") {
        &url[8..]
    } else if lower.starts_with("http://") {
        &url[7..]
    } else {
        return Err(malformed("url must start with http:// or https://"));
    };
    if rest.is_empty() || rest.starts_with('/') {
        return Err(malformed("url has no host"));
    }
    check_uri_part("url", url, b"")
}

fn check_uri_part(what: &str, s: &str, banned: &[u8]) -> Result<(), Malformed> {
    if s.len() > MAX_URL {
        return Err(malformed(format!(
            "{what} of {} bytes; the limit is {MAX_URL}",
            s.len()
        )));
    }
    if let Some(b) = s
        .bytes()
        .find(|b| *b <= b' ' || *b == 0x7f || banned.contains(b))
    {
        return Err(malformed(format!(
            "{what} contains the byte {b:#04x}, which is not allowed there"
        )));
    }
    Ok(())
}

fn check_headers(headers: &Headers) -> Result<(), Malformed> {
    if headers.len() > MAX_HEADERS {
        return Err(malformed(format!(
            "{} headers; the limit is {MAX_HEADERS}",
            headers.len()
        )));
    }
    for (name, value) in headers {
        if name.len() > MAX_HEADER_NAME || !is_token(name) {
            return Err(malformed(format!(
                "header name {name:?} is not an HTTP token of 1 to {MAX_HEADER_NAME} bytes"
            )));
        }
        if value.len() > MAX_HEADER_VALUE {
            return Err(malformed(format!(
                "header {name} has a value of {} bytes; the limit is {MAX_HEADER_VALUE}",
                value.len()
            )));
        }
        if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(malformed(format!(
                "header {name} has CR, LF or NUL in its value"
            )));
        }
    }
    Ok(())
}

#[derive(Default)]
struct Writer(Vec<u8>);

impl Writer {
    fn bytes(&mut self, b: &[u8]) -> Result<(), Malformed> {
        let len = u32::try_from(b.len())
            .map_err(|_| malformed(format!("field of {} bytes is over 4 GiB", b.len())))?;
        self.0.extend_from_slice(&len.to_le_bytes());
        self.0.extend_from_slice(b);
        Ok(())
    }

    fn headers(&mut self, headers: &Headers) -> Result<(), Malformed> {
        let count =
            u32::try_from(headers.len()).map_err(|_| malformed("too many headers to encode"))?;
        self.0.extend_from_slice(&count.to_le_bytes());
        for (name, value) in headers {
            self.bytes(name.as_bytes())?;
            self.bytes(value.as_bytes())?;
        }
        Ok(())
    }
}

/// Reads fields off the front of a blob, checking each length against what
/// is left before slicing.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], Malformed> {
        if n > self.0.len() {
            return Err(malformed(format!(
                "{what}: needs {n} bytes, only {} left",
                self.0.len()
            )));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], Malformed> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn len(&mut self, what: &str) -> Result<usize, Malformed> {
        let n = u32::from_le_bytes(self.array(what)?);
        usize::try_from(n).map_err(|_| malformed(format!("{what}: length {n} too large")))
    }

    fn bytes(&mut self, what: &str) -> Result<&'a [u8], Malformed> {
        let n = self.len(what)?;
        self.take(n, what)
    }

    fn string(&mut self, what: &str) -> Result<String, Malformed> {
        let b = self.bytes(what)?;
        std::str::from_utf8(b)
            .map(str::to_string)
            .map_err(|_| malformed(format!("{what} is not valid UTF-8")))
    }

    fn headers(&mut self) -> Result<Headers, Malformed> {
        let count = self.len("header count")?;
        if count > MAX_HEADERS {
            return Err(malformed(format!(
                "{count} headers; the limit is {MAX_HEADERS}"
            )));
        }
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            let name = self.string("header name")?;
            let value = self.string("header value")?;
            out.push((name, value));
        }
        Ok(out)
    }

    fn finish(self) -> Result<(), Malformed> {
        if !self.0.is_empty() {
            return Err(malformed(format!(
                "{} bytes left over after the last field",
                self.0.len()
            )));
        }
        Ok(())
    }
}
