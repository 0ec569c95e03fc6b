//! Node configuration with the defaults of DESIGN.md's contract.

use std::net::SocketAddr;
use std::path::PathBuf;

use orb_proto::PeerAddr;
use orb_proto::bundle::BundleLimits;
use orb_transport::TransportConfig;

use crate::common::http_server::HttpLimits;

/// Default QUIC port of a super node.
pub const DEFAULT_SUPER_QUIC: &str = "0.0.0.0:7700";
/// Default HTTP gateway address of a super node.
pub const DEFAULT_SUPER_HTTP: &str = "0.0.0.0:7780";
/// Default QUIC address of a client (any port).
pub const DEFAULT_CLIENT_QUIC: &str = "0.0.0.0:0";
/// Default local API address of a client.
pub const DEFAULT_CLIENT_API: &str = "127.0.0.1:7790";

/// Settings of a super node.
#[derive(Debug, Clone)]
pub struct SuperConfig {
    /// Data directory (the redb file lives here).
    pub data_dir: PathBuf,
    /// QUIC listen address.
    pub listen: SocketAddr,
    /// HTTP gateway listen address.
    pub http: SocketAddr,
    /// Supers to join through (used by the overlay).
    pub bootstrap: Vec<PeerAddr>,
    /// The address others should use to reach this node, if it differs from `listen`.
    pub public_addr: Option<SocketAddr>,
    /// Largest request body the gateway accepts (413 beyond).
    pub max_body: usize,
    /// Limits of the HTTP gateway: connections in all and per address,
    /// header and body timeouts.
    pub http_limits: HttpLimits,
    /// QUIC settings: connections, streams per connection, timeouts.
    pub transport: TransportConfig,
    /// Autoscaling target: calls in flight per replica.
    pub scale_target: f64,
    /// Load above the target for this long adds a replica.
    pub scale_up_after: std::time::Duration,
    /// No calls for this long removes a replica added under load.
    pub scale_idle: std::time::Duration,
    /// Bounds on a function's file bundle (size and entries): larger
    /// deploys are refused, larger bundles are never fetched.
    pub bundle_limits: BundleLimits,
}

impl SuperConfig {
    /// Defaults for a data directory.
    pub fn new(data_dir: PathBuf) -> Self {
        SuperConfig {
            data_dir,
            listen: parse_default(DEFAULT_SUPER_QUIC),
            http: parse_default(DEFAULT_SUPER_HTTP),
            bootstrap: Vec::new(),
            public_addr: None,
            max_body: orb_proto::limits::DEFAULT_MAX_INPUT,
            http_limits: HttpLimits::default(),
            transport: TransportConfig::default(),
            scale_target: 2.0,
            scale_up_after: std::time::Duration::from_secs(3),
            scale_idle: std::time::Duration::from_secs(60),
            bundle_limits: BundleLimits::default(),
        }
    }
}

/// Settings of a client daemon.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Data directory.
    pub data_dir: PathBuf,
    /// Home supers from the command line (the store remembers them too).
    pub supers: Vec<PeerAddr>,
    /// QUIC listen address.
    pub listen: SocketAddr,
    /// Local API address.
    pub api: SocketAddr,
    /// Calls run at once at most.
    pub capacity: usize,
    /// Largest request body the local API accepts for `invoke`.
    pub max_body: usize,
    /// Start the super role when this node turns out to be publicly
    /// reachable with no NAT (`--promote auto`).
    pub promote: bool,
    /// Limits of the local API's HTTP server.
    pub http_limits: HttpLimits,
    /// QUIC settings: connections, streams per connection, timeouts.
    pub transport: TransportConfig,
    /// Bounds on a function's file bundle: for packing files uploaded to
    /// the local API, and for fetching a placed function's bundle.
    pub bundle_limits: BundleLimits,
    /// File trees of function bundles kept decoded in memory, at most
    /// (one per bundle hash; the least recently used goes first).
    pub max_cached_trees: usize,
}

impl ClientConfig {
    /// Defaults for a data directory.
    pub fn new(data_dir: PathBuf) -> Self {
        ClientConfig {
            data_dir,
            supers: Vec::new(),
            listen: parse_default(DEFAULT_CLIENT_QUIC),
            api: parse_default(DEFAULT_CLIENT_API),
            capacity: 4,
            max_body: orb_proto::limits::DEFAULT_MAX_INPUT,
            promote: false,
            http_limits: HttpLimits::default(),
            transport: TransportConfig::default(),
            bundle_limits: BundleLimits::default(),
            max_cached_trees: 16,
        }
    }
}

fn parse_default(s: &str) -> SocketAddr {
    // The constants above are valid literals; the fallback is unreachable but
    // keeps library code free of panics.
    s.parse()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}
