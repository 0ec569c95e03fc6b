//! Helpers the two binaries share: peer parsing with host names, platform
//! data directories, logging setup.

use std::net::ToSocketAddrs;
use std::path::PathBuf;

use orb_proto::PeerAddr;

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
}

/// Settings of `orb-client daemon` read from a TOML file (`--config
/// FILE`); keys mirror the flags, flags win.
///
/// ```toml
/// data-dir = "/home/me/.local/share/orb/client"
/// super = ["ORBID@super.example.org:7700"]
/// listen = "0.0.0.0:0"
/// api = "127.0.0.1:7790"
/// capacity = 4
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
}

/// Read and parse a TOML config file; the error names the file and, for
/// a syntax or key error, the line.
pub fn load_config<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<T, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("config file {}: {e}", path.display()))
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
}
