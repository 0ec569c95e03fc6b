//! `orb-super`: run a public super node.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};
use orb_node::cli::{
    BundleFlags, Limits, SuperFile, default_data_dir, init_logging, load_config, parse_peer,
    parse_peers, shutdown_signal,
};
use orb_node::config::{DEFAULT_SUPER_HTTP, DEFAULT_SUPER_QUIC};
use orb_node::{SuperConfig, SuperNode};
use orb_proto::PeerAddr;

/// Orb super node: bootstraps the network, bridges public and private
/// nodes, stores deployed functions, and serves the HTTP gateway.
#[derive(Parser)]
#[command(name = "orb-super", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the super node until Ctrl-C or SIGTERM.
    // Boxed: the run flags dwarf the other variant.
    Run(Box<RunArgs>),
    /// Print this node's Orb ID (creating the identity if needed).
    Id {
        /// Data directory holding the node's store [default: $XDG_DATA_HOME/orb/super].
        #[arg(long, env = "ORB_SUPER_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Print JSON: {"id": ...}.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// TOML file with the settings below (keys as the flags: data-dir,
    /// listen, http, bootstrap = [..], public-addr, max-body,
    /// max-http-connections and the other limits). Flags win.
    #[arg(long, env = "ORB_SUPER_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory holding the node's store (identity, functions, modules)
    /// [default: $XDG_DATA_HOME/orb/super, else ~/.local/share/orb/super].
    #[arg(long, env = "ORB_SUPER_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// UDP address for QUIC: clients and other supers connect here.
    #[arg(long, default_value = DEFAULT_SUPER_QUIC)]
    listen: SocketAddr,
    /// TCP address of the HTTP gateway (`POST /fn/NAME`, `/api/...`, dashboard).
    #[arg(long, default_value = DEFAULT_SUPER_HTTP)]
    http: SocketAddr,
    /// A super node to join the network through, as ORBID@HOST:PORT. Repeatable.
    #[arg(long, value_parser = parse_peer)]
    bootstrap: Vec<PeerAddr>,
    /// The public address others should dial, when it differs from --listen
    /// (behind a port forward, say).
    #[arg(long)]
    public_addr: Option<SocketAddr>,
    /// Largest request body the gateway accepts, in bytes (413 beyond).
    #[arg(long, default_value_t = orb_proto::limits::DEFAULT_MAX_INPUT)]
    max_body: usize,
    #[command(flatten)]
    bundles: BundleFlags,
    /// Autoscaling target: calls in flight per replica. Load above it for
    /// --scale-up-secs adds a replica (up to the function's --max-replicas).
    #[arg(long, default_value_t = 2.0)]
    scale_target: f64,
    /// Seconds of load above the target before a replica is added.
    #[arg(long, default_value_t = 3)]
    scale_up_secs: u64,
    /// Seconds without calls before a replica added under load is removed.
    #[arg(long, default_value_t = 60)]
    scale_idle_secs: u64,
    #[command(flatten)]
    limits: Limits,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    init_logging("info");
    match cli.command {
        Command::Id { data_dir, json } => {
            let dir = data_dir.unwrap_or_else(|| default_data_dir("super"));
            orb_node::cli::print_id(&dir, json)
                .with_context(|| format!("reading the identity in {}", dir.display()))
        }
        Command::Run(args) => {
            let given = matches
                .subcommand_matches("run")
                .cloned()
                .unwrap_or_default();
            run(*args, &given).await
        }
    }
}

/// Whether `id` was set on the command line or through its environment
/// variable (those win over the config file).
fn given(m: &ArgMatches, id: &str) -> bool {
    matches!(
        m.value_source(id),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

async fn run(args: RunArgs, m: &ArgMatches) -> anyhow::Result<()> {
    let file: SuperFile = match &args.config {
        Some(path) => load_config(path).map_err(anyhow::Error::msg)?,
        None => SuperFile::default(),
    };
    let data_dir = args
        .data_dir
        .or(file.data_dir.clone())
        .unwrap_or_else(|| default_data_dir("super"));
    let mut config = SuperConfig::new(data_dir.clone());
    config.listen = file
        .listen
        .filter(|_| !given(m, "listen"))
        .unwrap_or(args.listen);
    config.http = file.http.filter(|_| !given(m, "http")).unwrap_or(args.http);
    config.bootstrap = if args.bootstrap.is_empty() {
        parse_peers(&file.bootstrap).map_err(anyhow::Error::msg)?
    } else {
        args.bootstrap
    };
    config.public_addr = args.public_addr.or(file.public_addr);
    config.max_body = file
        .max_body
        .filter(|_| !given(m, "max_body"))
        .unwrap_or(args.max_body);
    config.bundle_limits = args
        .bundles
        .merge(file.max_bundle_bytes, file.max_bundle_entries, |id| {
            given(m, id)
        })
        .map_err(anyhow::Error::msg)?;
    if !(args.scale_target > 0.0 && args.scale_target.is_finite()) {
        anyhow::bail!("--scale-target must be a positive number of calls in flight per replica");
    }
    config.scale_target = args.scale_target;
    config.scale_up_after = std::time::Duration::from_secs(args.scale_up_secs.max(1));
    config.scale_idle = std::time::Duration::from_secs(args.scale_idle_secs.max(1));
    let limits = args.limits.merge(file.limits(), |id| given(m, id));
    limits
        .apply(&mut config.http_limits, &mut config.transport)
        .map_err(anyhow::Error::msg)?;
    let node = SuperNode::start(config)
        .await
        .with_context(|| format!("starting the super node (data dir {})", data_dir.display()))?;
    println!(
        "orb-super ready id={} quic={} http={}",
        node.id, node.quic_addr, node.http_addr
    );
    shutdown_signal().await;
    tracing::info!("shutting down");
    node.shutdown().await;
    Ok(())
}
