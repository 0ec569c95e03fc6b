//! Helpers the two binaries share: peer parsing with host names, platform
//! data directories, logging setup, config files and the limit flags.

use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::time::Duration;

use orb_proto::PeerAddr;
use orb_transport::TransportConfig;

use crate::common::http_server::HttpLimits;

/// Parse `ORBID@HOST:PORT`, resolving HOST if it is a name. For clap's
/// `value_parser`.
pub fn parse_peer(s: &str) -> Result<PeerAddr, String> {
    if let Ok(p) = s.parse::<PeerAddr>() {
        return Ok(p);
    }
    let (id, rest) = PeerAddr::split(s).map_err(|e| e.to_string())?;
    let addr = rest
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {rest:?} in peer {s:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{rest:?} in peer {s:?} resolves to no address"))?;
    Ok(PeerAddr { id, addr })
}

/// The default data directory for a role (`super` or `client`), following
/// the XDG base directory convention: `$XDG_DATA_HOME/orb/ROLE`, else
/// `~/.local/share/orb/ROLE`; on macOS `~/Library/Application Support/orb/ROLE`.
pub fn default_data_dir(role: &str) -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("orb").join(role);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    if cfg!(target_os = "macos") {
        home.join("Library/Application Support/orb").join(role)
    } else {
        home.join(".local/share/orb").join(role)
    }
}

/// Log to stderr through tracing; `RUST_LOG` overrides the default level.
pub fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Resolve when the process is asked to stop (Ctrl-C or SIGTERM).
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Declares a config-file struct: its own keys, then the six limit keys
/// (one list for [`LimitKeys`] and both files); for a file, also `limits()`
/// to collect them. serde's `flatten` would embed a [`LimitKeys`] without a
/// macro, but serde does not support it together with `deny_unknown_fields`.
macro_rules! with_limit_keys {
    (@struct $(#[$meta:meta])* pub struct $name:ident { $($body:tt)* }) => {
        $(#[$meta])*
        pub struct $name {
            $($body)*
            /// `--max-http-connections`.
            pub max_http_connections: Option<usize>,
            /// `--max-http-connections-per-ip`.
            pub max_http_connections_per_ip: Option<usize>,
            /// `--http-header-timeout`, in seconds.
            pub http_header_timeout: Option<u64>,
            /// `--http-request-timeout`, in seconds.
            pub http_request_timeout: Option<u64>,
            /// `--max-quic-connections`.
            pub max_quic_connections: Option<usize>,
            /// `--max-streams-per-connection`.
            pub max_streams_per_connection: Option<u32>,
        }
    };
    ($(#[$meta:meta])* pub struct $name:ident { $($body:tt)* }) => {
        with_limit_keys!(@struct $(#[$meta])* pub struct $name { $($body)* });

        impl $name {
            /// The limit keys, for [`Limits::merge`].
            pub fn limits(&self) -> LimitKeys {
                LimitKeys {
                    max_http_connections: self.max_http_connections,
                    max_http_connections_per_ip: self.max_http_connections_per_ip,
                    http_header_timeout: self.http_header_timeout,
                    http_request_timeout: self.http_request_timeout,
                    max_quic_connections: self.max_quic_connections,
                    max_streams_per_connection: self.max_streams_per_connection,
                }
            }
        }
    };
}

with_limit_keys! {
    /// Settings of `orb-super run` read from a TOML file (`--config FILE`).
    /// Keys mirror the flags; a flag given on the command line (or through its
    /// environment variable) wins over the file, and the file over the
    /// built-in default.
    ///
    /// ```toml
    /// data-dir = "/var/lib/orb-super"
    /// listen = "0.0.0.0:7700"
    /// http = "0.0.0.0:7780"
    /// public-addr = "203.0.113.7:7700"
    /// bootstrap = ["ORBID@seed.example.org:7700"]
    /// max-body = 8388608
    /// max-bundle-bytes = 67108864
    /// max-bundle-entries = 10000
    /// max-http-connections = 1024
    /// max-http-connections-per-ip = 256
    /// http-header-timeout = 10
    /// http-request-timeout = 60
    /// max-quic-connections = 4096
    /// max-streams-per-connection = 64
    /// ```
    #[derive(Debug, Default, Clone, serde::Deserialize)]
    #[serde(rename_all = "kebab-case", deny_unknown_fields)]
    pub struct SuperFile {
        /// `--data-dir`.
        #[serde(alias = "data_dir")]
        pub data_dir: Option<PathBuf>,
        /// `--listen`.
        pub listen: Option<std::net::SocketAddr>,
        /// `--http`.
        pub http: Option<std::net::SocketAddr>,
        /// `--bootstrap` (repeatable): peers as `ORBID@HOST:PORT`.
        #[serde(default)]
        pub bootstrap: Vec<String>,
        /// `--public-addr`.
        #[serde(alias = "public_addr")]
        pub public_addr: Option<std::net::SocketAddr>,
        /// `--max-body`.
        #[serde(alias = "max_body")]
        pub max_body: Option<usize>,
        /// `--max-bundle-bytes`.
        pub max_bundle_bytes: Option<u64>,
        /// `--max-bundle-entries`.
        pub max_bundle_entries: Option<u32>,
    }
}

with_limit_keys! {
    /// Settings of `orb-client daemon` read from a TOML file (`--config
    /// FILE`); keys mirror the flags, flags win.
    ///
    /// ```toml
    /// data-dir = "/home/me/.local/share/orb/client"
    /// super = ["ORBID@super.example.org:7700"]
    /// listen = "0.0.0.0:0"
    /// api = "127.0.0.1:7790"
    /// capacity = 4
    /// max-http-connections = 1024
    /// http-header-timeout = 10
    /// ```
    #[derive(Debug, Default, Clone, serde::Deserialize)]
    #[serde(rename_all = "kebab-case", deny_unknown_fields)]
    pub struct ClientFile {
        /// `--data-dir`.
        #[serde(alias = "data_dir")]
        pub data_dir: Option<PathBuf>,
        /// `--super` (repeatable): home supers as `ORBID@HOST:PORT`.
        #[serde(default, rename = "super", alias = "supers")]
        pub supers: Vec<String>,
        /// `--listen`.
        pub listen: Option<std::net::SocketAddr>,
        /// `--api`.
        pub api: Option<std::net::SocketAddr>,
        /// `--capacity`.
        pub capacity: Option<usize>,
        /// `--max-bundle-bytes`.
        pub max_bundle_bytes: Option<u64>,
        /// `--max-bundle-entries`.
        pub max_bundle_entries: Option<u32>,
    }
}

/// The bounds on a function's file bundle, flags of both binaries (put in
/// with `#[command(flatten)]`): a super refuses deploys over them, a
/// client fetches no larger bundle and packs no larger upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
pub struct BundleFlags {
    /// Largest file bundle of a function (`deploy --files`), in bytes;
    /// larger deploys are refused with 413.
    #[arg(long, value_name = "BYTES", default_value_t = orb_proto::bundle::DEFAULT_MAX_BYTES)]
    pub max_bundle_bytes: u64,
    /// Most files and directories in a function's file bundle.
    #[arg(long, value_name = "N", default_value_t = orb_proto::bundle::DEFAULT_MAX_ENTRIES)]
    pub max_bundle_entries: u32,
}

impl BundleFlags {
    /// The bounds from the flags, or from the config file's keys
    /// (`max-bundle-bytes`, `max-bundle-entries`) for a flag not given.
    pub fn merge(
        self,
        file_bytes: Option<u64>,
        file_entries: Option<u32>,
        given: impl Fn(&str) -> bool,
    ) -> Result<orb_proto::bundle::BundleLimits, String> {
        let limits = orb_proto::bundle::BundleLimits {
            max_bytes: file_bytes
                .filter(|_| !given("max_bundle_bytes"))
                .unwrap_or(self.max_bundle_bytes),
            max_entries: file_entries
                .filter(|_| !given("max_bundle_entries"))
                .unwrap_or(self.max_bundle_entries),
        };
        if limits.max_bytes < 64 || limits.max_entries == 0 {
            return Err(
                "--max-bundle-bytes must be at least 64 and --max-bundle-entries at least 1".into(),
            );
        }
        Ok(limits)
    }
}

/// The connection and request limits: the flags of both binaries (put in
/// with `#[command(flatten)]`; the field names are clap's ids), or config
/// keys after [`Limits::merge`]; [`Limits::apply`] checks them and sets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
pub struct Limits {
    /// HTTP connections open at once; one more gets `503 Retry-After: 1`
    /// and is closed. Bounds file descriptors and memory under a flood.
    #[arg(long, default_value_t = Limits::default().max_http_connections)]
    pub max_http_connections: usize,
    /// HTTP connections open at once from one IP address (IPv6: one /64),
    /// so a single host cannot take every slot.
    #[arg(long, default_value_t = Limits::default().max_http_connections_per_ip)]
    pub max_http_connections_per_ip: usize,
    /// Seconds a client has to send a whole request head; a connection
    /// that sends nothing (before a request or between two) is closed after
    /// it too. The defence against slowloris.
    #[arg(long, value_name = "SECS", default_value_t = Limits::default().http_header_timeout)]
    pub http_header_timeout: u64,
    /// Seconds a client has to send a request body once its head arrived
    /// (408 beyond), and that a response may wait for the client to read.
    /// The defence against slow bodies; 60 s lets 8 MiB through at ~1.1 Mbit/s.
    #[arg(long, value_name = "SECS", default_value_t = Limits::default().http_request_timeout)]
    pub http_request_timeout: u64,
    /// QUIC connections (in and out) open at once; incoming ones beyond
    /// it are refused.
    #[arg(long, default_value_t = Limits::default().max_quic_connections)]
    pub max_quic_connections: usize,
    /// Requests (QUIC streams) one peer may have open at once on one
    /// connection.
    #[arg(long, default_value_t = Limits::default().max_streams_per_connection)]
    pub max_streams_per_connection: u32,
}

impl Default for Limits {
    /// The defaults of [`HttpLimits`] and [`TransportConfig`], which the
    /// flags show in `--help`.
    fn default() -> Self {
        let http = HttpLimits::default();
        let quic = TransportConfig::default();
        Limits {
            max_http_connections: http.max_connections,
            max_http_connections_per_ip: http.max_connections_per_ip,
            http_header_timeout: http.header_timeout.as_secs(),
            http_request_timeout: http.request_timeout.as_secs(),
            max_quic_connections: quic.max_connections,
            max_streams_per_connection: quic.max_concurrent_streams,
        }
    }
}

with_limit_keys! {
    @struct
    /// The limit keys of a config file; `None` where the file has none.
    #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
    pub struct LimitKeys {}
}

impl Limits {
    /// Each value from the config file unless its flag was given
    /// (`given(id)` with clap's id, the field name), else the flag's value
    /// (its default when not given).
    pub fn merge(self, file: LimitKeys, given: impl Fn(&str) -> bool) -> Limits {
        fn pick<T>(flag: T, file: Option<T>, flag_given: bool) -> T {
            file.filter(|_| !flag_given).unwrap_or(flag)
        }
        Limits {
            max_http_connections: pick(
                self.max_http_connections,
                file.max_http_connections,
                given("max_http_connections"),
            ),
            max_http_connections_per_ip: pick(
                self.max_http_connections_per_ip,
                file.max_http_connections_per_ip,
                given("max_http_connections_per_ip"),
            ),
            http_header_timeout: pick(
                self.http_header_timeout,
                file.http_header_timeout,
                given("http_header_timeout"),
            ),
            http_request_timeout: pick(
                self.http_request_timeout,
                file.http_request_timeout,
                given("http_request_timeout"),
            ),
            max_quic_connections: pick(
                self.max_quic_connections,
                file.max_quic_connections,
                given("max_quic_connections"),
            ),
            max_streams_per_connection: pick(
                self.max_streams_per_connection,
                file.max_streams_per_connection,
                given("max_streams_per_connection"),
            ),
        }
    }

    /// Check every value (zero makes no sense for any of them) and set
    /// them on a node's HTTP limits and QUIC settings. The error names the
    /// flag and its config key.
    pub fn apply(self, http: &mut HttpLimits, quic: &mut TransportConfig) -> Result<(), String> {
        let checks = [
            (
                "--max-http-connections",
                self.max_http_connections as u64,
                "",
            ),
            (
                "--max-http-connections-per-ip",
                self.max_http_connections_per_ip as u64,
                "",
            ),
            ("--http-header-timeout", self.http_header_timeout, " second"),
            (
                "--http-request-timeout",
                self.http_request_timeout,
                " second",
            ),
            (
                "--max-quic-connections",
                self.max_quic_connections as u64,
                "",
            ),
            (
                "--max-streams-per-connection",
                u64::from(self.max_streams_per_connection),
                "",
            ),
        ];
        if let Some((flag, _, unit)) = checks.iter().find(|(_, v, _)| *v == 0) {
            let key = flag.trim_start_matches('-');
            return Err(format!(
                "{flag} (config key {key}) must be at least 1{unit}; 0 would refuse everything"
            ));
        }
        http.max_connections = self.max_http_connections;
        http.max_connections_per_ip = self.max_http_connections_per_ip;
        http.header_timeout = Duration::from_secs(self.http_header_timeout);
        http.request_timeout = Duration::from_secs(self.http_request_timeout);
        quic.max_connections = self.max_quic_connections;
        quic.max_concurrent_streams = self.max_streams_per_connection;
        http.validate().map_err(|e| e.to_string())
    }
}

/// Read and parse a TOML config file; the error names the file and, for
/// a syntax or key error, the line.
pub fn load_config<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<T, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("config file {}: {e}", path.display()))
}

/// `orb-super id` and `orb-client id`: print the node's Orb ID from its
/// store in `dir` (creating the identity on first use), as text or JSON.
pub fn print_id(dir: &std::path::Path, json: bool) -> Result<(), crate::NodeError> {
    let store = orb_store::Store::open(dir)?;
    let id = store.load_or_create_identity()?.id();
    if json {
        println!("{}", serde_json::json!({ "id": id.to_string() }));
    } else {
        println!("{id}");
    }
    Ok(())
}

/// Parse the peers of a config file.
pub fn parse_peers(list: &[String]) -> Result<Vec<PeerAddr>, String> {
    list.iter().map(|s| parse_peer(s)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_files_parse_with_flag_names() {
        let s: SuperFile = toml::from_str(
            "data-dir = \"/tmp/x\"\nlisten = \"127.0.0.1:7700\"\nbootstrap = []\nmax-body = 10\n",
        )
        .expect("super config");
        assert_eq!(s.max_body, Some(10));
        assert_eq!(s.data_dir, Some(PathBuf::from("/tmp/x")));
        let c: ClientFile =
            toml::from_str("super = []\ncapacity = 2\napi = \"127.0.0.1:1\"\n").expect("client");
        assert_eq!(c.capacity, Some(2));
        assert!(toml::from_str::<ClientFile>("capacty = 2\n").is_err());
    }

    #[test]
    fn limits_merge_and_check() {
        let s: SuperFile = toml::from_str(
            "max-http-connections = 32\nhttp-header-timeout = 2\nmax-streams-per-connection = 8\n",
        )
        .expect("super config");
        // The file wins over a default; a given flag wins over the file.
        let flags = Limits {
            http_header_timeout: 5,
            ..Limits::default()
        };
        let merged = flags.merge(s.limits(), |id| id == "http_header_timeout");
        assert_eq!(merged.max_http_connections, 32);
        assert_eq!(merged.http_header_timeout, 5);
        assert_eq!(merged.max_streams_per_connection, 8);
        let (mut http, mut quic) = (HttpLimits::default(), TransportConfig::default());
        merged.apply(&mut http, &mut quic).expect("apply");
        assert_eq!(http.max_connections, 32);
        assert_eq!(http.header_timeout, Duration::from_secs(5));
        assert_eq!(quic.max_concurrent_streams, 8);
        let zero = Limits {
            max_http_connections_per_ip: 0,
            ..Limits::default()
        };
        let err = zero.apply(&mut http, &mut quic).expect_err("zero");
        assert!(err.contains("--max-http-connections-per-ip"), "{err}");
    }
}
