//! The Orb roles composed from the lower crates.
//!
//! * [`super_node`]: a public super node: accepts client connections (the
//!   public-to-private tunnels), stores deployed modules, places replicas,
//!   routes calls, and serves the HTTP gateway.
//! * [`client_node`]: the desktop daemon: keeps connections to its home
//!   supers, hosts replicas and runs calls on them, and serves a local API
//!   that the `orb-client` CLI talks to.
//! * [`http_server`]: the guarded HTTP/1.1 server both serve their HTTP
//!   with (connection caps, timeouts against slow clients).
//!
//! Both are started from a config struct and return a handle with the
//! addresses they bound and a graceful `shutdown`.

mod bridge;
pub mod cli;
pub mod client_node;
pub mod config;
pub mod dht;
pub mod error;
pub mod http_server;
mod http_util;
pub mod ledger;
pub mod metrics;
mod paths;
pub mod super_node;
mod util;

pub use client_node::{ClientHandle, ClientNode};
pub use config::{ClientConfig, SuperConfig};
pub use error::NodeError;
pub use http_server::HttpLimits;
pub use super_node::{SuperHandle, SuperNode};

/// Software name and version sent in `Hello` and shown in status.
pub const AGENT: &str = concat!("orb/", env!("CARGO_PKG_VERSION"));

/// The gateway's request parsing as plain functions, for the fuzz targets in
/// `fuzz/` and the property tests. Thin wrappers, not an API: nothing here
/// is stable.
#[doc(hidden)]
pub mod fuzzing {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use axum::body::Body;
    use axum::http::{HeaderMap, HeaderName, HeaderValue};
    use orb_proto::wire::{CallMeta, ErrorKind, FunctionSettings, WireError};

    /// A header map from raw pairs, skipping pairs that are not a valid
    /// header name and value (hyper refuses those before a handler runs).
    pub fn header_map(pairs: &[(&[u8], &[u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k), HeaderValue::from_bytes(v)) {
                map.append(k, v);
            }
        }
        map
    }

    /// Deploy settings from the local API's deploy query string.
    pub fn deploy_params(
        query: Option<&str>,
    ) -> Result<(String, FunctionSettings, bool), WireError> {
        crate::client_node::deploy_params(query)
    }

    /// Call metadata from a method, a query string and headers.
    pub fn call_meta(
        method: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        request_id: String,
    ) -> CallMeta {
        crate::http_util::call_meta(method, query, headers, request_id)
    }

    /// Read `body` under `limit` as the gateway does, given the request's
    /// headers (Content-Length is checked first). A body held in memory is
    /// ready at the first poll, so no executor is needed.
    pub fn read_body(
        headers: &HeaderMap,
        body: Vec<u8>,
        limit: usize,
    ) -> Result<Vec<u8>, WireError> {
        let fut = pin!(crate::http_util::read_body(
            headers,
            Body::from(body),
            limit
        ));
        match fut.poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(r) => r.map(|b| b.to_vec()),
            Poll::Pending => Err(WireError::new(
                ErrorKind::Internal,
                "an in-memory body was not ready at the first poll",
            )),
        }
    }
}
