//! A whole Orb network on this machine in one command:
//!
//! ```text
//! cargo run --release --example devnet
//! ```
//!
//! Starts two super nodes (the second joins the DHT through the first) and
//! three client daemons in this process, each with its own data directory,
//! QUIC socket and HTTP API. Clients 0 and 2 use super 0 as their home,
//! client 1 uses super 1. Then it deploys the example functions:
//!
//! * `hello` (examples/functions/hello.wat) through super 0, always;
//! * `upper` (examples/functions/rust-upper) through super 1, when it is
//!   already built or builds for wasm32-wasip1 within a couple of minutes;
//! * `hello-c` (examples/functions/c-hello) through super 0, when clang
//!   can build it for WASI;
//! * `site` (examples/functions/static-site, `--cgi --files site/`) through
//!   super 1, when it builds like `upper`: a web site to open in a browser.
//!
//! A function that cannot be built is skipped with a note: the devnet never
//! depends on the wasm32 target or a C toolchain. It prints `gateway=URL`
//! and `dashboard=URL` on lines of their own, a few `curl` lines, and runs
//! until Ctrl-C (or SIGTERM), then shuts every node down gracefully.
//!
//! Options: `--data-dir DIR` keeps the nodes' stores in DIR (default: a
//! temporary directory removed on exit); `--clients N` (default 3);
//! `--no-build` deploys only what needs no compiler (hello, plus example
//! modules already built).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use orb_node::cli::{init_logging, shutdown_signal};
use orb_node::{ClientConfig, ClientHandle, ClientNode, SuperConfig, SuperHandle, SuperNode};
use orb_proto::PeerAddr;

/// Super nodes started.
const SUPERS: usize = 2;
/// How long building an example function may take before it is skipped.
const BUILD_TIMEOUT: Duration = Duration::from_secs(180);

struct Args {
    data_dir: Option<PathBuf>,
    clients: usize,
    build: bool,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        data_dir: None,
        clients: 3,
        build: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--data-dir" => {
                args.data_dir = Some(it.next().context("--data-dir needs a value")?.into())
            }
            "--clients" => args.clients = it.next().context("--clients needs a value")?.parse()?,
            "--no-build" => args.build = false,
            "-h" | "--help" => {
                println!("usage: devnet [--data-dir DIR] [--clients N] [--no-build]");
                println!();
                println!("Starts 2 super nodes and N (default 3) clients on loopback, deploys");
                println!("the example functions, and runs until Ctrl-C.");
                println!("  --data-dir DIR  keep the nodes' stores in DIR (default: a temp dir)");
                println!("  --clients N     client daemons to start (default 3)");
                println!("  --no-build      do not compile the Rust/C example functions");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    if args.clients == 0 {
        bail!("--clients must be at least 1");
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

/// The running network, shut down in reverse order of starting.
struct Devnet {
    supers: Vec<SuperHandle>,
    clients: Vec<ClientHandle>,
}

impl Devnet {
    async fn shutdown(self) {
        // Every node at once: each stops accepting, closes its
        // connections and saves its state; nobody re-places replicas or
        // redials for a network that is going away.
        let mut set = tokio::task::JoinSet::new();
        for c in self.clients {
            set.spawn(c.shutdown());
        }
        for s in self.supers {
            set.spawn(s.shutdown());
        }
        while set.join_next().await.is_some() {}
    }
}

async fn start(args: &Args, base: &Path, net: &mut Devnet) -> Result<()> {
    for i in 0..SUPERS {
        let mut sc = SuperConfig::new(base.join(format!("super-{i}")));
        sc.listen = pick_udp(7700 + i as u16);
        sc.http = pick_tcp(7780 + i as u16);
        if let Some(first) = net.supers.first() {
            sc.bootstrap = vec![PeerAddr {
                id: first.id,
                addr: first.quic_addr,
            }];
        }
        let s = SuperNode::start(sc)
            .await
            .with_context(|| format!("starting super-{i}"))?;
        println!(
            "super-{i}  id={} quic={} gateway=http://{}",
            s.id, s.quic_addr, s.http_addr
        );
        net.supers.push(s);
    }
    for i in 0..args.clients {
        let home = &net.supers[if i == 1 { 1 } else { 0 }];
        let mut cc = ClientConfig::new(base.join(format!("client-{i}")));
        cc.supers = vec![PeerAddr {
            id: home.id,
            addr: home.quic_addr,
        }];
        cc.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        cc.api = pick_tcp(7790 + i as u16);
        cc.capacity = 4;
        let c = ClientNode::start(cc)
            .await
            .with_context(|| format!("starting client-{i}"))?;
        println!(
            "client-{i} id={} api=http://{} home=super-{}",
            c.id,
            c.api_addr,
            if i == 1 { 1 } else { 0 }
        );
        net.clients.push(c);
    }
    Ok(())
}

/// Wait until every super has its clients registered and the supers know
/// each other in the DHT, so deploys can place replicas and calls can be
/// forwarded.
async fn wait_ready(http: &reqwest::Client, net: &Devnet) -> Result<()> {
    for (i, s) in net.supers.iter().enumerate() {
        let want = (0..net.clients.len())
            .filter(|c| (if *c == 1 { 1 } else { 0 }) == i)
            .count();
        let base = format!("http://{}", s.http_addr);
        let mut ok = false;
        for _ in 0..150 {
            let nodes: serde_json::Value = http
                .get(format!("{base}/api/nodes"))
                .send()
                .await?
                .json()
                .await?;
            let dht: serde_json::Value = http
                .get(format!("{base}/api/dht"))
                .send()
                .await?
                .json()
                .await?;
            let peers = dht["routing_table"].as_array().map_or(0, |a| a.len());
            if nodes.as_array().map(|a| a.len()) == Some(want) && peers >= SUPERS - 1 {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !ok {
            eprintln!("note: super-{i} is not fully connected yet; continuing anyway");
        }
    }
    Ok(())
}

/// Run `cmd`, killing it after [`BUILD_TIMEOUT`]. `Err` says why it failed.
async fn run_build(mut cmd: Command) -> Result<(), String> {
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let child = tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(BUILD_TIMEOUT, child.wait_with_output()).await {
        Err(_) => Err(format!("took over {}s", BUILD_TIMEOUT.as_secs())),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(o)) if o.status.success() => Ok(()),
        Ok(Ok(o)) => {
            let err = String::from_utf8_lossy(&o.stderr);
            let last = err
                .lines()
                .rev()
                .find(|l| l.contains("error"))
                .unwrap_or("build failed");
            Err(last.trim().to_string())
        }
    }
}

/// A Rust example (`rust-upper`, `static-site`) for wasm32-wasip1: reused
/// when already built (by the tests or an earlier devnet), else built now.
async fn rust_example(root: &Path, name: &str, build: bool) -> Result<Vec<u8>, String> {
    let target_dir = root.join("target/wasm-functions");
    let wasm = target_dir.join(format!("wasm32-wasip1/release/{name}.wasm"));
    if !wasm.exists() {
        if !build {
            return Err("not built (--no-build)".into());
        }
        println!("building examples/functions/{name} for wasm32-wasip1…");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--release", "--target", "wasm32-wasip1"])
            .arg("--manifest-path")
            .arg(root.join(format!("examples/functions/{name}/Cargo.toml")))
            .arg("--target-dir")
            .arg(&target_dir);
        run_build(cmd).await.map_err(|e| {
            format!("{e} (the wasm32-wasip1 target is needed: rustup target add wasm32-wasip1)")
        })?;
    }
    std::fs::read(&wasm).map_err(|e| format!("reading {}: {e}", wasm.display()))
}

/// The C example `c-hello`, built with clang for WASI (wasi-libc).
async fn c_hello(root: &Path, build: bool) -> Result<Vec<u8>, String> {
    let out = root.join("target/wasm-functions/c-hello.wasm");
    let src = root.join("examples/functions/c-hello/hello.c");
    let fresh = match (out.metadata(), src.metadata()) {
        (Ok(o), Ok(s)) => match (o.modified(), s.modified()) {
            (Ok(o), Ok(s)) => o >= s,
            _ => true,
        },
        (Ok(_), Err(_)) => true,
        _ => false,
    };
    if !fresh {
        if !build {
            return Err("not built (--no-build)".into());
        }
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        }
        let mut cmd = Command::new("clang");
        cmd.args(["--target=wasm32-wasi", "--sysroot=/usr", "-O2", "-o"])
            .arg(&out)
            .arg(&src);
        run_build(cmd)
            .await
            .map_err(|e| format!("{e} (needs clang, lld, wasi-libc and compiler-rt for wasm32)"))?;
    }
    std::fs::read(&out).map_err(|e| format!("reading {}: {e}", out.display()))
}

async fn deploy(
    http: &reqwest::Client,
    client: &ClientHandle,
    name: &str,
    replicas: u32,
    wasm: Vec<u8>,
) -> Result<usize> {
    deploy_with(
        http,
        client,
        &format!("name={name}&replicas={replicas}"),
        wasm,
        None,
    )
    .await
}

/// Deploy with the query `query` (`name=..&cgi=1`...) and, for a function
/// with files, its packed bundle (a multipart upload, as `orb-client
/// deploy --files` sends it).
async fn deploy_with(
    http: &reqwest::Client,
    client: &ClientHandle,
    query: &str,
    wasm: Vec<u8>,
    bundle: Option<Vec<u8>>,
) -> Result<usize> {
    let mut req = http
        .post(format!("http://{}/api/deploy?{query}", client.api_addr))
        .bearer_auth(client.api_token()?);
    req = match bundle {
        None => req.body(wasm),
        Some(bundle) => {
            let boundary = "orb-devnet-7f3a9c0e51d2";
            let mut body = Vec::new();
            for (part, data) in [("module", &wasm), ("bundle", &bundle)] {
                body.extend_from_slice(
                    format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{part}\"; filename=\"{part}\"\r\n\r\n")
                        .as_bytes(),
                );
                body.extend_from_slice(data);
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
            req.header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body)
        }
    };
    let r = req.send().await?;
    let name = query.split('&').next().unwrap_or(query);
    if !r.status().is_success() {
        bail!("deploying {name} failed: {}", r.text().await?.trim());
    }
    let v: serde_json::Value = r.json().await?;
    Ok(v["placed_on"].as_array().map_or(0, |a| a.len()))
}

#[tokio::main]
async fn main() -> Result<()> {
    init_logging("warn");
    let args = parse_args()?;
    let tmp;
    let base = match &args.data_dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::Builder::new().prefix("orb-devnet-").tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));

    let mut net = Devnet {
        supers: Vec::new(),
        clients: Vec::new(),
    };
    // Whatever happens after the first node started, shut down what runs.
    let result = async {
        start(&args, &base, &mut net).await?;
        let http = reqwest::Client::builder().no_proxy().build()?;
        wait_ready(&http, &net).await?;

        let mut deployed: Vec<(&str, String)> = Vec::new();
        let wat_path = root.join("examples/functions/hello.wat");
        let hello = wat::parse_file(&wat_path)
            .with_context(|| format!("compiling {}", wat_path.display()))?;
        let n = deploy(&http, &net.clients[0], "hello", 2, hello).await?;
        println!("deployed hello (hello.wat) on {n} replica(s)");
        deployed.push(("hello", "world".into()));

        // The Rust example goes in through super 1 (client 1's home).
        let via = net.clients.get(1).unwrap_or(&net.clients[0]);
        match rust_example(&root, "rust-upper", args.build).await {
            Ok(wasm) => {
                let n = deploy(&http, via, "upper", 1, wasm).await?;
                println!("deployed upper (examples/functions/rust-upper) on {n} replica(s)");
                deployed.push(("upper", "make me loud".into()));
            }
            Err(e) => println!("skipped upper (examples/functions/rust-upper): {e}"),
        }
        match c_hello(&root, args.build).await {
            Ok(wasm) => {
                let n = deploy(&http, &net.clients[0], "hello-c", 2, wasm).await?;
                println!("deployed hello-c (examples/functions/c-hello) on {n} replica(s)");
                deployed.push(("hello-c", "world".into()));
            }
            Err(e) => println!("skipped hello-c (examples/functions/c-hello): {e}"),
        }
        let mut site = false;
        match rust_example(&root, "static-site", args.build).await {
            Ok(wasm) => {
                let dir = root.join("examples/functions/static-site/site");
                let bundle = orb_runtime::files::pack_dir(&dir, &Default::default())
                    .with_context(|| format!("packing {}", dir.display()))?;
                let n = deploy_with(&http, via, "name=site&replicas=2&cgi=1", wasm, Some(bundle))
                    .await?;
                println!("deployed site (examples/functions/static-site, --cgi --files) on {n} replica(s)");
                site = true;
            }
            Err(e) => println!("skipped site (examples/functions/static-site): {e}"),
        }

        let gateway = format!("http://{}", net.supers[0].http_addr);
        let other = format!("http://{}", net.supers[1].http_addr);
        println!();
        println!("gateway={gateway}");
        println!("dashboard={gateway}/");
        if site {
            println!("site={gateway}/fn/site/");
        }
        println!();
        println!("try:");
        for (name, input) in &deployed {
            println!("  curl -d '{input}' {gateway}/fn/{name}");
        }
        println!("  # any super serves any function (found through the DHT):");
        for (name, input) in &deployed {
            println!("  curl -d '{input}' {other}/fn/{name}");
        }
        if site {
            println!("  # a web site served by a function: open it in a browser");
            println!("  xdg-open {gateway}/fn/site/");
        }
        println!("  curl {gateway}/api/functions");
        println!("  curl {gateway}/metrics");
        println!(
            "  cargo run -p orb-client -- --api {} invoke hello --input - <<< 'from the CLI'",
            net.clients[0].api_addr
        );
        println!();
        println!(
            "dashboards: {gateway}/ and {other}/ (supers), http://{}/ (client-0)",
            net.clients[0].api_addr
        );
        println!("data: {}", base.display());
        println!("Ctrl-C stops the network.");
        anyhow::Ok(())
    }
    .await;

    if result.is_ok() {
        shutdown_signal().await;
        println!("shutting down…");
    }
    net.shutdown().await;
    if result.is_ok() {
        println!("stopped.");
    }
    result
}
