//! The Orb roles composed from the lower crates.
//!
//! * [`SuperNode`] (module `supernode`): a public super node: accepts
//!   client connections (the public-to-private tunnels), stores deployed
//!   modules, places replicas, routes calls, bridges NATed nodes, and
//!   serves the HTTP gateway.
//! * [`ClientNode`] (module `client`): the desktop daemon: keeps
//!   connections to its home supers, hosts replicas and runs calls on them,
//!   finds node-to-node paths, and serves a local API that the
//!   `orb-client` CLI talks to.
//! * [`policy`]: the decisions both make (placement, scaling, routing,
//!   accounting, health) as pure functions with their own unit tests.
//! * [`common`]: what both share: the guarded HTTP server, metrics, HTTP
//!   plumbing of calls.
//!
//! Both roles are started from a config struct and return a handle with the
//! addresses they bound and a graceful `shutdown`. Neither role imports the
//! other: a client promoted to a super starts one through [`SuperNode`],
//! like a binary would.

pub mod cli;
mod client;
pub mod common;
pub mod config;
pub mod dht;
pub mod error;
pub mod local_api;
pub mod policy;
mod supernode;

pub use client::{ClientHandle, ClientNode};
pub use common::http_server::{self, HttpLimits};
pub use config::{ClientConfig, SuperConfig};
pub use error::NodeError;
pub use supernode::{SuperHandle, SuperNode};

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
        crate::client::deploy_params(query)
    }

    /// Call metadata from a method, a query string and headers.
    pub fn call_meta(
        method: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        request_id: String,
    ) -> CallMeta {
        crate::common::http_util::call_meta(method, query, headers, request_id)
    }

    /// Read `body` under `limit` as the gateway does, given the request's
    /// headers (Content-Length is checked first). A body held in memory is
    /// ready at the first poll, so no executor is needed.
    pub fn read_body(
        headers: &HeaderMap,
        body: Vec<u8>,
        limit: usize,
    ) -> Result<Vec<u8>, WireError> {
        let fut = pin!(crate::common::http_util::read_body(
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
