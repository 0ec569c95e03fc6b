//! `orb-client`: the desktop daemon and the commands that talk to it.
//!
//! One module per group of commands: `daemon`, `deploy` (deploy and
//! invoke), `manage` (remove, rollback, versions, logs), `info` (status,
//! functions, nodes, peers, resolve, ping); `api` is the HTTP client of the
//! daemon's local API (with the daemon's token), `output` the printing.

mod api;
mod daemon;
mod deploy;
mod info;
mod invoke;
mod manage;
mod output;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};
use orb_node::cli::default_data_dir;
use orb_node::config::DEFAULT_CLIENT_API;

/// Orb client: run the daemon that lends this machine's spare capacity to
/// the network, and deploy, call, roll back, remove and watch functions
/// through it. Its dashboard is at http://127.0.0.1:7790/.
#[derive(Parser)]
#[command(name = "orb-client", version, about, long_about = None)]
struct Cli {
    /// Address of the daemon's local API. Commands send the daemon's
    /// token, found through $ORB_API_TOKEN, the data directory in
    /// $ORB_CLIENT_DATA_DIR, or the one the daemon on this port recorded.
    #[arg(long, global = true, env = "ORB_API", default_value = DEFAULT_CLIENT_API)]
    api: SocketAddr,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon until Ctrl-C or SIGTERM.
    Daemon(daemon::DaemonArgs),
    /// Deploy a WebAssembly module (a WASI command) under a name; a name
    /// deployed again gets a new version.
    Deploy(deploy::DeployArgs),
    /// Call a function; its output goes to stdout. Exits non-zero on failure.
    Invoke(invoke::InvokeArgs),
    /// Remove a function you own: its replicas stop under every super and
    /// every gateway answers 404. The name stays yours to deploy again.
    Remove(manage::RemoveArgs),
    /// Make an earlier version of a function you own current again (as a
    /// new version), on every gateway.
    Rollback(manage::RollbackArgs),
    /// List the versions kept of a function you own (the last 10).
    Versions(manage::VersionsArgs),
    /// Show what a function you own wrote to stderr, and one line per call
    /// (time, node, request, status, duration, fuel), from every replica.
    Logs(manage::LogsArgs),
    /// Show the daemon's state: identity, home supers, hosted replicas.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the functions deployed in the network.
    Functions {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Connect to another node over the best path there is (same LAN,
    /// then a hole punch through the NATs, then a relay through a super)
    /// and measure the round trip. Prints `path=... rtt_ms=...`.
    Ping {
        /// The other node's Orb ID.
        id: String,
        /// Print JSON: {"peer", "path", "rtt_ms", "first_byte_ms"}.
        #[arg(long)]
        json: bool,
    },
    /// List this daemon's node-to-node connections and their paths.
    Peers {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the nodes this daemon is connected to.
    Nodes {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Resolve a function name through the DHT: owner, module hash,
    /// version, the nodes holding a replica and their home supers.
    Resolve {
        /// Function name.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print this node's Orb ID (creating the identity if needed).
    Id {
        /// Data directory holding the node's store [default: $XDG_DATA_HOME/orb/client].
        #[arg(long, env = "ORB_CLIENT_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Print JSON: {"id": ...}.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli, &matches)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, matches: &ArgMatches) -> anyhow::Result<()> {
    let api_addr = cli.api;
    let api = || api::Api::new(api_addr);
    match cli.command {
        Command::Daemon(args) => {
            let sub = matches
                .subcommand_matches("daemon")
                .cloned()
                .unwrap_or_default();
            daemon::daemon(args, api_addr, daemon::given(matches, "api"), &sub).await
        }
        Command::Id { data_dir, json } => {
            let dir = data_dir.unwrap_or_else(|| default_data_dir("client"));
            orb_node::cli::print_id(&dir, json)
                .with_context(|| format!("reading the identity in {}", dir.display()))
        }
        Command::Deploy(a) => deploy::deploy(&api()?, a).await,
        Command::Invoke(a) => invoke::invoke(&api()?, a).await,
        Command::Remove(a) => manage::remove(&api()?, a).await,
        Command::Rollback(a) => manage::rollback(&api()?, a).await,
        Command::Versions(a) => manage::versions(&api()?, a).await,
        Command::Logs(a) => manage::logs(&api()?, a).await,
        Command::Status { json } => info::status(&api()?, json).await,
        Command::Functions { json } => info::functions(&api()?, json).await,
        Command::Ping { id, json } => info::ping(&api()?, &id, json).await,
        Command::Peers { json } => info::peers(&api()?, json).await,
        Command::Nodes { json } => info::nodes(&api()?, json).await,
        Command::Resolve { name, json } => info::resolve(&api()?, &name, json).await,
    }
}
