//! A whole Orb network on this machine in one command:
//!
//! ```text
//! cargo run --release --example devnet
//! ```
//!
//! Starts a super node and three client daemons in this process (each with
//! its own data directory, QUIC socket and API), deploys the example
//! function `hello`, prints the gateway and dashboard URLs and a few `curl`
//! lines, and runs until Ctrl-C, then shuts every node down cleanly.
//!
//! Options: `--data-dir DIR` keeps the nodes' stores in DIR (default: a
//! temporary directory removed on exit); `--clients N` (default 3).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use orb_node::cli::{init_logging, shutdown_signal};
use orb_node::{ClientConfig, ClientNode, SuperConfig, SuperNode};
use orb_proto::PeerAddr;

struct Args {
    data_dir: Option<PathBuf>,
    clients: usize,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        data_dir: None,
        clients: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--data-dir" => {
                args.data_dir = Some(it.next().context("--data-dir needs a value")?.into())
            }
            "--clients" => args.clients = it.next().context("--clients needs a value")?.parse()?,
            "-h" | "--help" => {
                println!("usage: devnet [--data-dir DIR] [--clients N]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    Ok(args)
}

/// `preferred` if it is free, else any free port on loopback: the devnet
/// uses the documented default ports when it can, and still starts when
/// something else holds them.
fn pick_tcp(preferred: u16) -> SocketAddr {
    let want = SocketAddr::from(([127, 0, 0, 1], preferred));
    if std::net::TcpListener::bind(want).is_ok() {
        want
    } else {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }
}

fn pick_udp(preferred: u16) -> SocketAddr {
    let want = SocketAddr::from(([127, 0, 0, 1], preferred));
    if std::net::UdpSocket::bind(want).is_ok() {
        want
    } else {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    init_logging("warn");
    let args = parse_args()?;
    let tmp;
    let base = match &args.data_dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };

    let mut sc = SuperConfig::new(base.join("super-0"));
    sc.listen = pick_udp(7700);
    sc.http = pick_tcp(7780);
    let sup = SuperNode::start(sc).await?;
    let peer = PeerAddr {
        id: sup.id,
        addr: sup.quic_addr,
    };
    println!(
        "super  id={} quic={} http={}",
        sup.id, sup.quic_addr, sup.http_addr
    );

    let mut clients = Vec::new();
    for i in 0..args.clients {
        let mut cc = ClientConfig::new(base.join(format!("client-{i}")));
        cc.supers = vec![peer];
        cc.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        cc.api = pick_tcp(7790 + i as u16);
        cc.capacity = 4;
        let c = ClientNode::start(cc).await?;
        println!("client id={} api=http://{}", c.id, c.api_addr);
        clients.push(c);
    }

    let http = reqwest::Client::builder().no_proxy().build()?;
    let gateway = format!("http://{}", sup.http_addr);
    // Wait until every client has registered, so the deploy can place replicas.
    for _ in 0..100 {
        let n: serde_json::Value = http
            .get(format!("{gateway}/api/nodes"))
            .send()
            .await?
            .json()
            .await?;
        if n.as_array().map(|a| a.len()) == Some(args.clients) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let wat_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/functions/hello.wat");
    let wasm =
        wat::parse_file(&wat_path).with_context(|| format!("compiling {}", wat_path.display()))?;
    if let Some(first) = clients.first() {
        let r = http
            .post(format!(
                "http://{}/api/deploy?name=hello&replicas=2",
                first.api_addr
            ))
            .body(wasm)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("deploying hello failed: {}", r.text().await?);
        }
    }

    println!();
    println!("gateway={gateway}");
    println!("dashboard={gateway}/");
    println!();
    println!("try:");
    println!("  curl -d world {gateway}/fn/hello");
    println!("  curl {gateway}/api/functions");
    if let Some(first) = clients.first() {
        println!(
            "  cargo run -p orb-client -- --api {} invoke hello --input - <<< 'from the CLI'",
            first.api_addr
        );
    }
    println!();
    println!("Ctrl-C stops the network.");

    shutdown_signal().await;
    println!("shutting down…");
    for c in clients {
        c.shutdown().await;
    }
    sup.shutdown().await;
    Ok(())
}
