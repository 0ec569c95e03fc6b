//! The `orb` host interface: what a function may ask of the node running
//! it (key-value state, outbound HTTP, calling other functions).
//!
//! The runtime owns the guest side of every call: it bounds-checks guest
//! pointers, decodes and checks requests ([`orb_guest::abi`] is the single
//! definition of the layouts), enforces the per-call budgets of
//! [`HostLimits`], charges fuel, and turns every failure into a result code
//! the guest can read. The node supplies the services themselves through
//! [`HostServices`], one object per call (so it knows the function, its
//! owner, its allow-list and the call depth), passed in
//! [`Invocation::host`](crate::Invocation::host). Without one, every
//! service answers `UNAVAILABLE`. `docs/abi.md` documents the ABI.

mod imports;

use std::fmt;
use std::time::{Duration, Instant};

pub use orb_guest::abi::{
    ABI_VERSION, CallRequest, HttpRequest, Response, format_counter, parse_counter,
};

pub(crate) use imports::{HostCtx, make};

use crate::wasi::Val::{self, I32, I64};

/// The import module of the host interface.
pub(crate) const NAMESPACE: &str = orb_guest::abi::MODULE;

/// Every `orb` function: name, parameters, results (ABI version 1).
pub(crate) const FUNCTIONS: &[(&str, &[Val], &[Val])] = &[
    ("abi_version", &[], &[I32]),
    ("result_len", &[], &[I32]),
    ("result_read", &[I32, I32], &[I32]),
    ("kv_get", &[I32, I32], &[I32]),
    ("kv_set", &[I32, I32, I32, I32], &[I32]),
    ("kv_delete", &[I32, I32], &[I32]),
    ("kv_increment", &[I32, I32, I64, I32], &[I32]),
    (
        "kv_compare_and_swap",
        &[I32, I32, I32, I32, I32, I32],
        &[I32],
    ),
    ("http_fetch", &[I32, I32], &[I32]),
    ("call", &[I32, I32], &[I32]),
];

/// The signature of `orb` function `name`, if it exists.
pub(crate) fn signature(name: &str) -> Option<(&'static [Val], &'static [Val])> {
    FUNCTIONS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, p, r)| (*p, *r))
}

/// What a service may spend on one request: it must answer by `deadline`
/// and keep its result within `max_response_bytes` (the encoded size, see
/// [`Response::encoded_len`]; larger results reach the guest as
/// `TOO_LARGE`).
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct HostCall {
    /// When the answer is due: the call's own deadline, or sooner for an
    /// HTTP fetch ([`HostLimits::http_timeout`]). A nested call inherits
    /// what is left until it as its time budget.
    pub deadline: Instant,
    /// Largest result the guest will accept, in bytes.
    pub max_response_bytes: usize,
}

impl HostCall {
    /// A request context (the runtime builds these; tests of a
    /// [`HostServices`] implementation may too).
    pub fn new(deadline: Instant, max_response_bytes: usize) -> Self {
        HostCall {
            deadline,
            max_response_bytes,
        }
    }

    /// Time left until the deadline (zero once it has passed).
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

/// Outcome of a compare-and-swap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CasOutcome {
    /// The expected value was there; the new one is written (or the key
    /// deleted).
    Swapped,
    /// Another value was there; nothing was written.
    Conflict {
        /// The value found (`None`: the key is absent).
        current: Option<Vec<u8>>,
    },
}

/// Why a service refused or failed; each variant is one ABI result code,
/// and its text reaches the guest as the detail message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// No such function (`NOT_FOUND`).
    #[error("{0}")]
    NotFound(String),
    /// A bad argument, or a stored value that is not a counter (`INVALID`).
    #[error("{0}")]
    Invalid(String),
    /// Something over a size limit (`TOO_LARGE`).
    #[error("{0}")]
    TooLarge(String),
    /// Not allowed: off the allow-list, outbound HTTP disabled, a private
    /// address, not allowed on this node (`DENIED`).
    #[error("{0}")]
    Denied(String),
    /// A budget of the service is used up (`LIMIT`).
    #[error("{0}")]
    Limit(String),
    /// The deadline passed (`TIMEOUT`).
    #[error("{0}")]
    Timeout(String),
    /// The service cannot be reached now (`UNAVAILABLE`).
    #[error("{0}")]
    Unavailable(String),
    /// A nested call would be too deep (`DEPTH`).
    #[error("{0}")]
    Depth(String),
    /// A remote failure (`FAILED`).
    #[error("{0}")]
    Failed(String),
}

impl HostError {
    /// The ABI result code.
    pub fn code(&self) -> i32 {
        use orb_guest::abi::code;
        match self {
            HostError::NotFound(_) => code::NOT_FOUND,
            HostError::Invalid(_) => code::INVALID,
            HostError::TooLarge(_) => code::TOO_LARGE,
            HostError::Denied(_) => code::DENIED,
            HostError::Limit(_) => code::LIMIT,
            HostError::Timeout(_) => code::TIMEOUT,
            HostError::Unavailable(_) => code::UNAVAILABLE,
            HostError::Depth(_) => code::DEPTH,
            HostError::Failed(_) => code::FAILED,
        }
    }
}

/// The node's side of the host interface, for one call.
///
/// Methods are synchronous and run on the blocking thread that runs the
/// wasm; an implementation on tokio uses `Handle::block_on` and must return
/// by [`HostCall::deadline`], because the wall-clock watchdog cannot
/// interrupt host code. Arguments arrive already checked: keys are 1 to
/// [`HostLimits::max_key_bytes`] bytes, values within
/// [`HostLimits::max_value_bytes`], requests decoded and passed
/// [`HttpRequest::check`] / [`CallRequest::check`]. A panic is caught and
/// reported to the guest as `FAILED`.
pub trait HostServices: Send + Sync {
    /// The value of `key`, `None` when unset.
    fn kv_get(&self, cx: &HostCall, key: &[u8]) -> Result<Option<Vec<u8>>, HostError>;

    /// Set `key` to `value`.
    fn kv_set(&self, cx: &HostCall, key: &[u8], value: &[u8]) -> Result<(), HostError>;

    /// Remove `key` (not an error when unset).
    fn kv_delete(&self, cx: &HostCall, key: &[u8]) -> Result<(), HostError>;

    /// Atomically add `delta` to the counter at `key` (unset counts as 0)
    /// and return the new value. The value is stored as
    /// [`format_counter`]; one that [`parse_counter`] refuses, or an
    /// overflow, is [`HostError::Invalid`].
    fn kv_increment(&self, cx: &HostCall, key: &[u8], delta: i64) -> Result<i64, HostError>;

    /// Atomically replace `expected` (`None`: unset) by `new` (`None`:
    /// delete).
    fn kv_compare_and_swap(
        &self,
        cx: &HostCall,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<CasOutcome, HostError>;

    /// Perform an outbound HTTP request (allow-list, private addresses and
    /// the node's opt-in are the implementation's to check).
    fn http_fetch(&self, cx: &HostCall, request: HttpRequest) -> Result<Response, HostError>;

    /// Call another function; `Ok` whenever the callee ran, with the
    /// status a gateway would have answered. The implementation carries
    /// the call depth and refuses with [`HostError::Depth`] past its limit.
    fn call(&self, cx: &HostCall, request: CallRequest) -> Result<Response, HostError>;
}

impl fmt::Debug for dyn HostServices {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HostServices")
    }
}

/// Per-call budgets of the host interface, enforced by the runtime
/// whatever the services do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostLimits {
    /// Service operations (kv, http, call) one call may make; then `LIMIT`.
    pub max_ops: u32,
    /// HTTP fetches one call may make; then `LIMIT`.
    pub max_http_requests: u32,
    /// Nested calls one call may make; then `LIMIT`.
    pub max_calls: u32,
    /// Longest key, in bytes; longer is `TOO_LARGE`.
    pub max_key_bytes: u32,
    /// Largest value, in bytes; larger is `TOO_LARGE`.
    pub max_value_bytes: u32,
    /// Largest encoded HTTP or call request, in bytes.
    pub max_request_bytes: u32,
    /// Largest result of one operation, in bytes.
    pub max_response_bytes: u32,
    /// Bytes moved between guest and host over the whole call (requests
    /// read plus results produced); then `LIMIT`.
    pub max_total_bytes: u64,
    /// Longest a single HTTP fetch may take (the call's deadline still
    /// applies).
    pub http_timeout: Duration,
    /// Fuel charged for each service operation.
    pub fuel_per_op: u64,
    /// Fuel charged per byte moved between guest and host.
    pub fuel_per_byte: u64,
}

impl Default for HostLimits {
    fn default() -> Self {
        // Requests and results must fit a whole call input / output plus
        // the encoding's framing, so that `call` can pass them along.
        let framed = (orb_proto::limits::DEFAULT_MAX_OUTPUT + 64 * 1024) as u32;
        HostLimits {
            max_ops: 1_000,
            max_http_requests: 16,
            max_calls: 16,
            max_key_bytes: 1024,
            max_value_bytes: 1024 * 1024,
            max_request_bytes: framed,
            max_response_bytes: framed,
            max_total_bytes: 64 * 1024 * 1024,
            http_timeout: Duration::from_secs(10),
            // About 50 µs of metered wasm: a host operation is never free,
            // so a loop of them ends on fuel like any other loop.
            fuel_per_op: 100_000,
            fuel_per_byte: 1,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use wasmer::{FunctionEnv, Store};

    use super::*;
    use crate::wasi;

    #[test]
    fn every_orb_function_is_provided_with_its_signature() {
        let mut store = Store::default();
        let ctx = HostCtx::new(None, HostLimits::default(), Instant::now(), 0);
        let env = FunctionEnv::new(&mut store, ctx);
        for (name, p, r) in FUNCTIONS {
            let f = make(&mut store, &env, name).unwrap_or_else(|| panic!("{name} missing"));
            assert_eq!(f.ty(&store), wasi::function_type(p, r), "{name}");
        }
        assert!(make(&mut store, &env, "fd_write").is_none());
    }

    #[test]
    fn host_errors_map_to_distinct_codes() {
        let all = [
            HostError::NotFound(String::new()),
            HostError::Invalid(String::new()),
            HostError::TooLarge(String::new()),
            HostError::Denied(String::new()),
            HostError::Limit(String::new()),
            HostError::Timeout(String::new()),
            HostError::Unavailable(String::new()),
            HostError::Depth(String::new()),
            HostError::Failed(String::new()),
        ];
        let mut codes: Vec<i32> = all.iter().map(HostError::code).collect();
        assert!(codes.iter().all(|c| *c != orb_guest::abi::code::OK));
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
    }
}
