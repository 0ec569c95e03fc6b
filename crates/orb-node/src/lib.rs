//! The Orb roles composed from the lower crates.
//!
//! * [`super_node`]: a public super node: accepts client connections (the
//!   public-to-private tunnels), stores deployed modules, places replicas,
//!   routes calls, and serves the HTTP gateway.
//! * [`client_node`]: the desktop daemon: keeps connections to its home
//!   supers, hosts replicas and runs calls on them, and serves a local API
//!   that the `orb-client` CLI talks to.
//!
//! Both are started from a config struct and return a handle with the
//! addresses they bound and a graceful `shutdown`.

mod bridge;
pub mod cli;
pub mod client_node;
pub mod config;
pub mod dht;
pub mod error;
mod http_util;
pub mod ledger;
pub mod metrics;
mod paths;
pub mod super_node;
mod util;

pub use client_node::{ClientHandle, ClientNode};
pub use config::{ClientConfig, SuperConfig};
pub use error::NodeError;
pub use super_node::{SuperHandle, SuperNode};

/// Software name and version sent in `Hello` and shown in status.
pub const AGENT: &str = concat!("orb/", env!("CARGO_PKG_VERSION"));
