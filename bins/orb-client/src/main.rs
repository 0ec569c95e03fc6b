//! `orb-client`: the desktop daemon and the commands that talk to it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};

mod deploy;
mod invoke;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};
use orb_node::cli::{
    BundleFlags, ClientFile, Limits, default_data_dir, init_logging, load_config, parse_peer,
    parse_peers, shutdown_signal,
};
use orb_node::config::{DEFAULT_CLIENT_API, DEFAULT_CLIENT_QUIC};
use orb_node::{ClientConfig, ClientNode};
use orb_proto::PeerAddr;
use serde_json::Value;

/// Orb client: run the daemon that lends this machine's spare capacity to
/// the network, and deploy and call functions through it.
#[derive(Parser)]
#[command(name = "orb-client", version, about, long_about = None)]
struct Cli {
    /// Address of the daemon's local API.
    #[arg(long, global = true, env = "ORB_API", default_value = DEFAULT_CLIENT_API)]
    api: SocketAddr,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon until Ctrl-C or SIGTERM.
    Daemon(DaemonArgs),
    /// Deploy a WebAssembly module (a WASI command) under a name.
    Deploy(deploy::DeployArgs),
    /// Call a function; its output goes to stdout. Exits non-zero on failure.
    Invoke(invoke::InvokeArgs),
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
    /// Resolve a function name through the DHT: owner, module hash, the
    /// nodes holding a replica and their home supers.
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

#[derive(clap::Args)]
// The limit flags are the super's, but `--max-http-connections` bounds the
// local API here.
#[command(mut_arg("max_http_connections", |a| a.help(
    "Local API connections open at once; one more gets `503 Retry-After: 1` \
     and is closed. Bounds file descriptors and memory under a flood"
)))]
struct DaemonArgs {
    /// TOML file with the daemon's settings (keys as the flags: data-dir,
    /// super = [..], listen, api, capacity, max-http-connections and the
    /// other limits). Flags win.
    #[arg(long, env = "ORB_CLIENT_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory holding the node's store (identity, known supers,
    /// hosted replicas) [default: $XDG_DATA_HOME/orb/client, else ~/.local/share/orb/client].
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
    let api = format!("http://{}", cli.api);
    match cli.command {
        Command::Daemon(args) => {
            let sub = matches
                .subcommand_matches("daemon")
                .cloned()
                .unwrap_or_default();
            daemon(args, cli.api, given(matches, "api"), &sub).await
        }
        Command::Id { data_dir, json } => {
            let dir = data_dir.unwrap_or_else(|| default_data_dir("client"));
            orb_node::cli::print_id(&dir, json)
                .with_context(|| format!("reading the identity in {}", dir.display()))
        }
        Command::Resolve { name, json } => {
            let resp = client()?
                .get(format!("{api}/api/resolve/{name}"))
                .send()
                .await
                .map_err(unreachable)?;
            let v: Value = json_or_error(resp).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            println!("name      {}", v["name"].as_str().unwrap_or(""));
            println!("owner     {}", v["owner"].as_str().unwrap_or(""));
            println!("hash      {}", v["hash"].as_str().unwrap_or(""));
            let providers = v["providers"].as_array().cloned().unwrap_or_default();
            if providers.is_empty() {
                println!("providers (none published yet)");
            }
            for p in providers {
                let supers: Vec<&str> = p["home_supers"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                println!(
                    "provider  {} via {}",
                    p["node"].as_str().unwrap_or(""),
                    if supers.is_empty() {
                        "-".to_string()
                    } else {
                        supers.join(", ")
                    }
                );
            }
            Ok(())
        }
        Command::Deploy(args) => deploy::run(&api, args).await,
        Command::Invoke(args) => invoke::run(&api, args).await,
        Command::Status { json } => {
            let v = get_json(&format!("{api}/api/status")).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            println!("id        {}", s(&v["id"]));
            println!("role      {}", s(&v["role"]));
            println!("quic      {}", s(&v["quic"]));
            println!("capacity  {} ({} in flight)", v["capacity"], v["in_flight"]);
            println!("supers:");
            for sup in v["supers"].as_array().into_iter().flatten() {
                let state = if sup["connected"].as_bool().unwrap_or(false) {
                    "connected"
                } else {
                    "disconnected"
                };
                println!("  {}@{}  {state}", s(&sup["id"]), s(&sup["addr"]));
            }
            println!("hosted replicas:");
            for h in v["hosted"].as_array().into_iter().flatten() {
                println!(
                    "  {:<24} {}",
                    s(&h["name"]),
                    &s(&h["hash"])[..12.min(s(&h["hash"]).len())]
                );
            }
            Ok(())
        }
        Command::Functions { json } => {
            let v = get_json(&format!("{api}/api/functions")).await?;
            table(
                &v,
                json,
                &[("NAME", 24), ("HASH", 14), ("SIZE", -9), ("REPLICAS", 0)],
                |f| {
                    let hash = s(&f["hash"]);
                    vec![
                        s(&f["name"]),
                        hash[..12.min(hash.len())].to_string(),
                        f["size"].to_string(),
                        f["replicas"].as_array().map_or(0, |a| a.len()).to_string(),
                    ]
                },
            )
        }
        Command::Ping { id, json } => {
            let resp = client()?
                .post(format!("{api}/api/ping/{id}"))
                .send()
                .await
                .map_err(unreachable)?;
            let v: Value = json_or_error(resp).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "path={} rtt_ms={:.2} first_byte_ms={:.1} peer={}",
                    s(&v["path"]),
                    v["rtt_ms"].as_f64().unwrap_or(0.0),
                    v["first_byte_ms"].as_f64().unwrap_or(0.0),
                    s(&v["peer"])
                );
            }
            Ok(())
        }
        Command::Peers { json } => {
            let v = get_json(&format!("{api}/api/peers")).await?;
            table(
                &v,
                json,
                &[("ID", 54), ("PATH", 11), ("ADDRESS", 22), ("RTT_MS", 0)],
                |n| {
                    vec![
                        s(&n["id"]),
                        s(&n["path"]),
                        s(&n["addr"]),
                        format!("{:.2}", n["rtt_ms"].as_f64().unwrap_or(0.0)),
                    ]
                },
            )
        }
        Command::Nodes { json } => {
            let v = get_json(&format!("{api}/api/nodes")).await?;
            table(
                &v,
                json,
                &[("ID", 54), ("ROLE", 8), ("ADDRESS", 22), ("CONNECTED", 0)],
                |n| {
                    vec![
                        s(&n["id"]),
                        s(&n["role"]),
                        s(&n["addr"]),
                        n["connected"].to_string(),
                    ]
                },
            )
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

async fn daemon(
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

/// Print a JSON list as pretty JSON, or as a table: `columns` are the
/// headers with their widths (negative: right-aligned; 0: the last,
/// unpadded), `row` the cells of one element.
fn table(
    v: &Value,
    json: bool,
    columns: &[(&str, isize)],
    row: impl Fn(&Value) -> Vec<String>,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(v)?);
        return Ok(());
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for ((_, width), cell) in columns.iter().zip(cells) {
            let w = width.unsigned_abs();
            match width.signum() {
                0 => out.push_str(&cell),
                1 => out.push_str(&format!("{cell:<w$} ")),
                _ => out.push_str(&format!("{cell:>w$} ")),
            }
        }
        out.trim_end().to_string()
    };
    println!(
        "{}",
        line(columns.iter().map(|(h, _)| h.to_string()).collect())
    );
    for item in v.as_array().into_iter().flatten() {
        println!("{}", line(row(item)));
    }
    Ok(())
}

fn s(v: &Value) -> String {
    v.as_str()
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string())
}

pub(crate) fn client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .context("building the HTTP client")
}

pub(crate) fn unreachable(e: reqwest::Error) -> anyhow::Error {
    anyhow::anyhow!(
        "cannot reach the orb-client daemon's API ({e}); is `orb-client daemon` running, and is --api right?"
    )
}

async fn get_json(url: &str) -> anyhow::Result<Value> {
    let resp = client()?.get(url).send().await.map_err(unreachable)?;
    json_or_error(resp).await
}

pub(crate) async fn json_or_error(resp: reqwest::Response) -> anyhow::Result<Value> {
    let status = resp.status();
    let bytes = resp.bytes().await.context("reading the answer")?;
    if !status.is_success() {
        bail!(
            "{} ({})",
            String::from_utf8_lossy(&bytes).trim_end(),
            status
        );
    }
    serde_json::from_slice(&bytes).context("the daemon answered with invalid JSON")
}
