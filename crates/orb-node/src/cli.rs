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
