//! `orb-client daemon`: flags and config file -> `ClientNode`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::ArgMatches;
use clap::parser::ValueSource;
use orb_node::cli::{
    BundleFlags, ClientFile, Limits, default_data_dir, init_logging, load_config, parse_peer,
    parse_peers, shutdown_signal,
};
use orb_node::config::DEFAULT_CLIENT_QUIC;
use orb_node::{ClientConfig, ClientNode};
use orb_proto::PeerAddr;

#[derive(clap::Args)]
// The limit flags are the super's, but `--max-http-connections` bounds the
// local API here.
#[command(mut_arg("max_http_connections", |a| a.help(
    "Local API connections open at once; one more gets `503 Retry-After: 1` \
     and is closed. Bounds file descriptors and memory under a flood"
)))]
pub struct DaemonArgs {
    /// TOML file with the daemon's settings (keys as the flags: data-dir,
    /// super = [..], listen, api, capacity, max-http-connections and the
    /// other limits). Flags win.
    #[arg(long, env = "ORB_CLIENT_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory holding the node's store (identity, known supers,
    /// hosted replicas) and the local API's token (api-token) [default:
    /// $XDG_DATA_HOME/orb/client, else ~/.local/share/orb/client].
    #[arg(long, env = "ORB_CLIENT_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// A home super node as ORBID@HOST:PORT. Repeatable; remembered in the
    /// store, so later starts need none.
    #[arg(long = "super", value_parser = parse_peer)]
    supers: Vec<PeerAddr>,
    /// UDP address for QUIC.
    #[arg(long, default_value = DEFAULT_CLIENT_QUIC)]
    listen: SocketAddr,
    /// Calls this machine runs at once at most (0: host nothing).
    #[arg(long, default_value_t = 4)]
    capacity: usize,
    /// `auto`: when this machine turns out to be publicly reachable with no
    /// NAT, also run the super role (DHT server, relay, gateway) so others
    /// can bootstrap from it. `off`: never.
    #[arg(long, value_parser = ["auto", "off"], default_value = "off")]
    promote: String,
    #[command(flatten)]
    limits: Limits,
    #[command(flatten)]
    bundles: BundleFlags,
}

/// Whether `id` was set on the command line or through its environment
/// variable (those win over the config file).
pub fn given(m: &ArgMatches, id: &str) -> bool {
    matches!(
        m.value_source(id),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

pub async fn daemon(
    args: DaemonArgs,
    api: SocketAddr,
    api_given: bool,
    m: &ArgMatches,
) -> anyhow::Result<()> {
    init_logging("info");
    let file: ClientFile = match &args.config {
        Some(path) => load_config(path).map_err(anyhow::Error::msg)?,
        None => ClientFile::default(),
    };
    let data_dir = args
        .data_dir
        .or(file.data_dir.clone())
        .unwrap_or_else(|| default_data_dir("client"));
    let mut config = ClientConfig::new(data_dir.clone());
    config.supers = if args.supers.is_empty() {
        parse_peers(&file.supers).map_err(anyhow::Error::msg)?
    } else {
        args.supers
    };
    config.listen = file
        .listen
        .filter(|_| !given(m, "listen"))
        .unwrap_or(args.listen);
    config.api = file.api.filter(|_| !api_given).unwrap_or(api);
    config.capacity = file
        .capacity
        .filter(|_| !given(m, "capacity"))
        .unwrap_or(args.capacity);
    config.promote = args.promote == "auto";
    config.bundle_limits = args
        .bundles
        .merge(file.max_bundle_bytes, file.max_bundle_entries, |id| {
            given(m, id)
        })
        .map_err(anyhow::Error::msg)?;
    let limits = args.limits.merge(file.limits(), |id| given(m, id));
    limits
        .apply(&mut config.http_limits, &mut config.transport)
        .map_err(anyhow::Error::msg)?;
    let node = ClientNode::start(config).await.with_context(|| {
        format!(
            "starting the client daemon (data dir {})",
            data_dir.display()
        )
    })?;
    println!("orb-client ready id={} api={}", node.id, node.api_addr);
    shutdown_signal().await;
    tracing::info!("shutting down");
    node.shutdown().await;
    Ok(())
}
