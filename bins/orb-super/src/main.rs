//! `orb-super`: run a public super node.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use orb_node::cli::{default_data_dir, init_logging, parse_peer, shutdown_signal};
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
    Run(RunArgs),
    /// Print this node's Orb ID (creating the identity if needed).
    Id {
        /// Data directory holding the node's store [default: $XDG_DATA_HOME/orb/super].
        #[arg(long, env = "ORB_SUPER_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct RunArgs {
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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging("info");
    match cli.command {
        Command::Id { data_dir } => {
            let dir = data_dir.unwrap_or_else(|| default_data_dir("super"));
            let store = orb_store::Store::open(&dir)
                .with_context(|| format!("opening {}", dir.display()))?;
            println!("{}", store.load_or_create_identity()?.id());
            Ok(())
        }
        Command::Run(args) => run(args).await,
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let data_dir = args.data_dir.unwrap_or_else(|| default_data_dir("super"));
    let mut config = SuperConfig::new(data_dir.clone());
    config.listen = args.listen;
    config.http = args.http;
    config.bootstrap = args.bootstrap;
    config.public_addr = args.public_addr;
    config.max_body = args.max_body;
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
