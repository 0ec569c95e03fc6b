//! NAT lab: the real `orb-super` and `orb-client` binaries in Linux network
//! namespaces behind real kernel NAT (nftables), built with `patchbay`.
//!
//! Topology (every router hangs off patchbay's IX bridge, the "internet"):
//!
//! ```text
//!  dc1 ── super1            nat-open     (Open: EIM+EIF)   ── open
//!  dc2 ── super2            nat-moderate (Moderate: EIM+APDF) ── moderate
//!  dc-public ── public      nat-strict1  (Strict: EDM+APDF) ── strict1
//!   (no NAT, --promote auto) nat-strict2 (Strict)           ── strict2
//!                           nat-home     (Moderate)         ── home-a, home-b
//!                           nat-fresh    (Moderate)         ── fresh (added last)
//! ```
//!
//! Checks: (1) the gateway of super1 reaches every client's function;
//! (2) every pair of clients pings and invokes each other over the expected
//! path (`direct-lan`, `direct` or `relayed`, see [`expected_path`]);
//! (3) each client's status reports its reachability and NAT mapping;
//! (4) the public client is promoted to a super and a fresh NATed client
//! that knows only the promoted super works through it; (5) a markdown
//! table of the pair results is printed.
//!
//! `ORB_LAB_ONLY_BASIC=1` runs only the topology and (1), with plain
//! `--replicas 1` deploys. Needs root, `nft` and `tc`; otherwise it prints
//! `SKIPPED: ...` (and fails when `CI=true`). Runs with its own `main`
//! (`harness = false`) because it must enter a user namespace before any
//! thread exists: `cargo test --test nat_lab`.

mod common;

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use patchbay::{Device, Lab, Nat};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};

/// Every super listens for QUIC on its device's address at this port.
const SUPER_QUIC_PORT: u16 = 7000;
/// Every super serves HTTP (gateway, API) on 0.0.0.0 at this port.
const SUPER_HTTP_PORT: u16 = 8080;
/// Every client's local API; each device has its own loopback, so the same
/// address serves a different daemon in every namespace.
const CLIENT_API: &str = "127.0.0.1:7200";
/// Client `i` listens for QUIC on `<its ip>:7100+i`. Distinct ports matter:
/// patchbay emulates endpoint-independent mapping with a map keyed by the
/// *internal* source port, so two hosts behind one NAT using the same port
/// would overwrite each other's mapping (a real EIM NAT would give the
/// second one another external port and keep it stable).
const CLIENT_QUIC_BASE: u16 = 7100;
/// How long to wait for something the network has to converge on.
const CONVERGE: Duration = Duration::from_secs(20);
/// How long a single `orb-client` command may take.
const CMD_TIMEOUT: Duration = Duration::from_secs(20);

/// The kind of network a client sits in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NetKind {
    /// A public address, no NAT.
    Public,
    /// Full cone: endpoint-independent mapping and filtering.
    Open,
    /// Port-restricted cone: endpoint-independent mapping,
    /// address-and-port-dependent filtering (the common home router).
    Moderate,
    /// Symmetric: a random external port per destination,
    /// address-and-port-dependent filtering.
    Strict,
}

/// One client of the lab.
#[derive(Clone, Copy, Debug)]
struct ClientSpec {
    /// Device name; its function is `fn-<name>`.
    name: &'static str,
    /// Router it sits behind: clients with the same router share one NAT.
    router: &'static str,
    net: NetKind,
}

const CLIENTS: [ClientSpec; 7] = [
    ClientSpec {
        name: "open",
        router: "nat-open",
        net: NetKind::Open,
    },
    ClientSpec {
        name: "moderate",
        router: "nat-moderate",
        net: NetKind::Moderate,
    },
    ClientSpec {
        name: "strict1",
        router: "nat-strict1",
        net: NetKind::Strict,
    },
    ClientSpec {
        name: "strict2",
        router: "nat-strict2",
        net: NetKind::Strict,
    },
    ClientSpec {
        name: "home-a",
        router: "nat-home",
        net: NetKind::Moderate,
    },
    ClientSpec {
        name: "home-b",
        router: "nat-home",
        net: NetKind::Moderate,
    },
    ClientSpec {
        name: "public",
        router: "dc-public",
        net: NetKind::Public,
    },
];

/// The path a node-to-node connection between `a` and `b` must take.
///
/// - Same NAT (same router): they reach each other's private address on the
///   shared LAN: `direct-lan`.
/// - Either side public or behind an Open (full-cone) NAT: the other side can
///   dial it, or it accepts the punch from anywhere: `direct`.
/// - Both behind (different) Moderate NATs: endpoint-independent mapping on
///   both sides, so each learns the other's external port from a super and a
///   simultaneous punch opens both filters: `direct`.
/// - Everything else pairs a Strict NAT with a Moderate or Strict one. Strict
///   picks a fresh random external port per destination, so the port seen by
///   a super is not the one the peer would have to answer to, and the
///   address-and-port-dependent filter on the other side only opens for the
///   exact port it sent to. Neither side can learn the port to open without
///   port prediction: `relayed` through a super.
fn expected_path(a: &ClientSpec, b: &ClientSpec) -> &'static str {
    use NetKind::*;
    if a.router == b.router {
        return "direct-lan";
    }
    match (a.net, b.net) {
        (Public | Open, _) | (_, Public | Open) => "direct",
        (Moderate, Moderate) => "direct",
        (Strict, _) | (_, Strict) => "relayed",
    }
}

/// What `orb-client status --json` must say: the accepted `reachability`
/// values and the `nat` mapping.
fn expected_status(net: NetKind) -> (&'static [&'static str], &'static str) {
    match net {
        NetKind::Public => (&["public"], "none"),
        // A full-cone NAT accepts the super's dial-back from anywhere, so a
        // reachability probe may well find it reachable.
        NetKind::Open => (&["public", "private"], "endpoint-independent"),
        NetKind::Moderate => (&["private"], "endpoint-independent"),
        NetKind::Strict => (&["private"], "endpoint-dependent"),
    }
}

fn main() -> ExitCode {
    // Behave enough like libtest for `cargo test -- --list` and name filters.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        println!("nat_lab: test");
        return ExitCode::SUCCESS;
    }
    if let Some(filter) = args.iter().find(|a| !a.starts_with('-'))
        && !"nat_lab".contains(filter.as_str())
    {
        println!("nat_lab: filtered out");
        return ExitCode::SUCCESS;
    }
    if let Some(reason) = missing_prerequisite() {
        common::skip_or_fail(&reason);
        return ExitCode::SUCCESS;
    }
    let basic = std::env::var("ORB_LAB_ONLY_BASIC").is_ok_and(|v| v == "1" || v == "true");

    // Build the binaries before entering the user namespace (cargo, the
    // target dir and its lock are the host's business).
    let bins = common::bin_dir().to_path_buf();
    let tmp = match tempfile::Builder::new().prefix("orb-nat-lab-").tempdir() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("nat_lab: cannot create a temporary directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    let wasm = common::hello_wasm(tmp.path());

    // Must run while this process has exactly one thread: it unshares a user
    // namespace (mapping our uid to 0 inside), so the lab's namespaces,
    // nftables rules and mounts never touch the host's.
    if let Err(e) = patchbay::init_userns() {
        common::skip_or_fail(&format!("cannot enter a user namespace: {e:#}"));
        return ExitCode::SUCCESS;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nat_lab: cannot start tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut ctx = Ctx {
        started: Instant::now(),
        dir: tmp.path().to_path_buf(),
        bins,
        wasm,
        lab: None,
        nodes: Vec::new(),
        results: Vec::new(),
    };
    let outcome = rt.block_on(async {
        let outcome = run(&mut ctx, basic).await;
        if !ctx.results.is_empty() {
            println!("\n{}", results_table(&ctx.results));
        }
        if outcome.is_err() {
            ctx.print_log_tails(25);
        }
        ctx.stop_all().await;
        outcome
    });
    drop(ctx);
    rt.shutdown_timeout(Duration::from_secs(5));
    match outcome {
        Ok(()) => {
            println!(
                "nat_lab: ok ({})",
                if basic {
                    "basic: topology + gateway"
                } else {
                    "all checks"
                }
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            let kept = tmp.keep();
            eprintln!("\nnat_lab FAILED: {e:#}");
            eprintln!("(node logs kept in {})", kept.display());
            ExitCode::FAILURE
        }
    }
}

/// Why the lab cannot run here, if it cannot.
fn missing_prerequisite() -> Option<String> {
    let euid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        });
    if euid.as_deref() != Some("0") {
        return Some("the NAT lab needs root (network namespaces, nftables)".into());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for tool in ["nft", "tc"] {
        if !std::env::split_paths(&path).any(|d| d.join(tool).is_file()) {
            return Some(format!(
                "`{tool}` is not in PATH (apt install nftables iproute2)"
            ));
        }
    }
    None
}

/// The state of one run: the lab, its processes and the results so far.
struct Ctx {
    started: Instant,
    dir: PathBuf,
    bins: PathBuf,
    wasm: PathBuf,
    lab: Option<Lab>,
    nodes: Vec<Node>,
    results: Vec<PairResult>,
}

impl Ctx {
    fn say(&self, msg: impl std::fmt::Display) {
        println!(
            "[nat_lab +{:>5.1}s] {msg}",
            self.started.elapsed().as_secs_f64()
        );
    }

    fn node(&self, name: &str) -> Result<&Node> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .with_context(|| format!("no node {name}"))
    }

    fn print_log_tails(&self, lines: usize) {
        for n in &self.nodes {
            let text = std::fs::read_to_string(&n.log).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            let tail = &all[all.len().saturating_sub(lines)..];
            eprintln!("----- {} stderr (last {} lines) -----", n.name, tail.len());
            for l in tail {
                eprintln!("  {l}");
            }
        }
    }

    /// Kill every process, then tear the lab down.
    async fn stop_all(&mut self) {
        for n in self.nodes.drain(..).rev() {
            n.stop().await;
        }
        self.lab = None;
    }
}

/// A long-running `orb-super` or `orb-client daemon` inside a device.
struct Node {
    name: String,
    dev: Device,
    ready: String,
    log: PathBuf,
    /// Dropping or sending stops the process (SIGKILL).
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<std::process::ExitStatus>>>,
}

impl Node {
    /// A `key=value` field of the ready line.
    fn field(&self, key: &str) -> String {
        field(&self.ready, key)
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

fn field(line: &str, key: &str) -> String {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_default()
        .to_string()
}

fn log_level() -> String {
    std::env::var("ORB_TEST_LOG").unwrap_or_else(|_| "info".into())
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Start `bin args` in `dev` and wait for its stdout line starting with
/// `ready_prefix`. Stdout keeps being drained afterwards; stderr goes to
/// `<dir>/<name>.log`.
async fn start_node(
    ctx: &Ctx,
    name: &str,
    dev: &Device,
    bin: &str,
    args: Vec<String>,
    ready_prefix: &'static str,
) -> Result<Node> {
    let log = ctx.dir.join(format!("{name}.log"));
    let stderr = std::fs::File::create(&log).with_context(|| format!("creating {log:?}"))?;
    let mut cmd = tokio::process::Command::new(ctx.bins.join(bin));
    cmd.args(&args)
        .env("RUST_LOG", log_level())
        // Plain log files (tracing-subscriber honours NO_COLOR).
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .kill_on_drop(true);
    let mut child = dev
        .spawn_command(cmd)
        .with_context(|| format!("spawning {bin} in {name}"))?;
    let stdout = child.stdout.take().context("child stdout")?;
    let (line_tx, mut line_rx) = mpsc::unbounded_channel::<String>();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    // The child belongs to the namespace's runtime (its reactor holds the
    // pipes and the exit notification), so it is driven from there.
    let task = dev.spawn(move |_| async move {
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = line_tx.send(line);
            }
        });
        tokio::select! {
            _ = stop_rx => {
                let _ = child.start_kill();
                child.wait().await
            }
            status = child.wait() => status,
        }
    })?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, line_rx.recv()).await {
            Ok(Some(line)) if line.starts_with(ready_prefix) => {
                return Ok(Node {
                    name: name.to_string(),
                    dev: dev.clone(),
                    ready: line,
                    log,
                    stop: Some(stop_tx),
                    task: Some(task),
                });
            }
            Ok(Some(line)) => seen.push(line),
            Ok(None) => {
                // Stdout closed: the process is gone.
                let status = match tokio::time::timeout(Duration::from_secs(5), task).await {
                    Ok(Ok(Ok(status))) => status.to_string(),
                    other => format!("{other:?}"),
                };
                bail!(
                    "{name}: {bin} exited before printing {ready_prefix:?} ({status}); stdout: {seen:?}; stderr:\n{}",
                    tail(&log, 30)
                );
            }
            Err(_) => {
                let _ = stop_tx.send(());
                bail!(
                    "{name}: {bin} did not print {ready_prefix:?} within 30 s; stdout: {seen:?}; stderr:\n{}",
                    tail(&log, 30)
                );
            }
        }
    }
}

/// A usage error (unknown subcommand or flag): retrying cannot help.
#[derive(Debug)]
struct Fatal(String);

impl std::fmt::Display for Fatal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Fatal {}

/// Run `orb-client --api 127.0.0.1:7200 args...` in `dev` to completion
/// (bounded by [`CMD_TIMEOUT`]), feeding `stdin`. Fails unless it exits 0;
/// the error names the node and carries stdout and stderr.
async fn client_cmd(
    ctx: &Ctx,
    dev: &Device,
    args: &[&str],
    stdin: Option<&[u8]>,
) -> Result<Output> {
    let mut cmd = tokio::process::Command::new(ctx.bins.join("orb-client"));
    cmd.arg("--api")
        .arg(CLIENT_API)
        .args(args)
        .env("RUST_LOG", "warn")
        // Every client's API has the same port in its own namespace, so
        // the per-port registry cannot tell them apart: name the data
        // directory (the daemon's token is there).
        .env("ORB_CLIENT_DATA_DIR", ctx.dir.join(dev.name()))
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let what = format!("{}: orb-client {}", dev.name(), args.join(" "));
    let mut child = dev
        .spawn_command(cmd)
        .with_context(|| format!("spawning {what}"))?;
    let input = stdin.map(<[u8]>::to_vec);
    let task = dev.spawn(move |_| async move {
        if let Some(input) = input {
            let mut si = child.stdin.take().context("child stdin")?;
            si.write_all(&input).await?;
            drop(si);
        }
        tokio::time::timeout(CMD_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| anyhow!("no answer within {CMD_TIMEOUT:?}"))?
            .context("waiting for the command")
    })?;
    let out = task
        .await
        .with_context(|| format!("{what}: task"))?
        .with_context(|| what.clone())?;
    if out.status.success() {
        return Ok(out);
    }
    let msg = format!(
        "{what}: {} ; stdout: {} ; stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    // clap exits 2 on usage errors.
    if out.status.code() == Some(2) {
        return Err(Fatal(msg).into());
    }
    bail!(msg)
}

/// `client_cmd` with `--json` output parsed.
async fn client_json(
    ctx: &Ctx,
    dev: &Device,
    args: &[&str],
    stdin: Option<&[u8]>,
) -> Result<Value> {
    let out = client_cmd(ctx, dev, args, stdin).await?;
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "{}: orb-client {}: stdout is not JSON: {}",
            dev.name(),
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Retry `f` every 250 ms until it succeeds or `timeout` passes. An error
/// is "not yet"; the last one is reported on timeout. A [`Fatal`] error
/// ends the wait at once.
async fn poll<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if e.downcast_ref::<Fatal>().is_some() => {
                return Err(e.context(format!("{what}: usage error, not retried")));
            }
            Err(e) if Instant::now() >= deadline => {
                return Err(e.context(format!("timed out after {timeout:?}: {what}")));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// POST `body` (or GET, without one) to `url` from inside `dev`:
/// (status, x-orb-node, body).
async fn http(dev: &Device, url: String, body: Option<String>) -> Result<(u16, String, String)> {
    let task = dev.spawn(move |_| async move {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()?;
        let r = match body {
            Some(body) => client.post(&url).body(body),
            None => client.get(&url),
        }
        .send()
        .await?;
        let status = r.status().as_u16();
        let node = common::node_header(&r);
        let text = r.text().await?;
        anyhow::Ok((status, node, text))
    })?;
    task.await.context("http task")?
}

/// The IPv4 address of a device.
fn ip(dev: &Device) -> Result<Ipv4Addr> {
    dev.ip()
        .with_context(|| format!("{} has no IPv4 address", dev.name()))
}

/// `orb-client daemon` arguments for a client listening on `listen`.
fn daemon_args(ctx: &Ctx, name: &str, listen: SocketAddr, supers: &[String]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--api".into(),
        CLIENT_API.into(),
        "daemon".into(),
        "--data-dir".into(),
        ctx.dir.join(name).display().to_string(),
        "--listen".into(),
        listen.to_string(),
        "--capacity".into(),
        "4".into(),
    ];
    for s in supers {
        args.push("--super".into());
        args.push(s.clone());
    }
    args
}

/// Wait until the client's status lists every super in `ids` as connected.
async fn wait_connected(ctx: &Ctx, node: &Node, ids: &[String]) -> Result<Value> {
    poll(
        &format!("{} connected to {} super(s)", node.name, ids.len()),
        CONVERGE,
        || async {
            let v = client_json(ctx, &node.dev, &["status", "--json"], None).await?;
            let connected: Vec<String> = v["supers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| s["connected"].as_bool() == Some(true))
                .filter_map(|s| s["id"].as_str().map(str::to_string))
                .collect();
            match ids.iter().find(|id| !connected.contains(id)) {
                None => Ok(v),
                Some(missing) => bail!("not connected to {missing}; status: {v}"),
            }
        },
    )
    .await
}

/// One pair's results, for the table.
struct PairResult {
    pair: String,
    expected: &'static str,
    path: String,
    first_path: String,
    tries: u32,
    rtt_ms: f64,
    first_byte_ms: f64,
    invoke_ab: String,
    invoke_ba: String,
}

fn results_table(results: &[PairResult]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "| pair | expected | path | rtt_ms | first_byte_ms | pings | invoke a→b | invoke b→a |"
    );
    let _ = writeln!(t, "|---|---|---|---:|---:|---:|---|---|");
    for r in results {
        let path = if r.first_path == r.path {
            r.path.clone()
        } else {
            format!("{} (first: {})", r.path, r.first_path)
        };
        let _ = writeln!(
            t,
            "| {} | {} | {} | {:.2} | {:.2} | {} | {} | {} |",
            r.pair, r.expected, path, r.rtt_ms, r.first_byte_ms, r.tries, r.invoke_ab, r.invoke_ba
        );
    }
    t
}

async fn run(ctx: &mut Ctx, basic: bool) -> Result<()> {
    ctx.say(format!(
        "mode: {}",
        if basic {
            "basic (ORB_LAB_ONLY_BASIC=1): topology + gateway"
        } else {
            "full"
        }
    ));

    // ---- Topology -------------------------------------------------------
    let lab = Lab::builder()
        .label("orb-nat-lab")
        .outdir_from_env()
        .build()
        .await
        .context("building the lab (root namespace and IX bridge)")?;
    ctx.lab = Some(lab.clone());
    let router = |name: &str, nat: Nat| {
        let lab = lab.clone();
        let name = name.to_string();
        async move {
            lab.add_router(&name)
                .nat(nat)
                .build()
                .await
                .with_context(|| format!("building router {name} ({nat:?})"))
        }
    };
    let dc1 = router("dc1", Nat::None).await?;
    let dc2 = router("dc2", Nat::None).await?;
    let mut routers = std::collections::HashMap::new();
    for (name, nat) in [
        ("dc-public", Nat::None),
        ("nat-open", Nat::Open),
        ("nat-moderate", Nat::Moderate),
        ("nat-strict1", Nat::Strict),
        ("nat-strict2", Nat::Strict),
        ("nat-home", Nat::Moderate),
    ] {
        routers.insert(name, router(name, nat).await?);
    }
    let device = |name: &str, up: patchbay::NodeId| {
        let lab = lab.clone();
        let name = name.to_string();
        async move {
            lab.add_device(&name)
                .uplink(up)
                .build()
                .await
                .with_context(|| format!("building device {name}"))
        }
    };
    let super1_dev = device("super1", dc1.id()).await?;
    let super2_dev = device("super2", dc2.id()).await?;
    let mut client_devs = Vec::new();
    for spec in &CLIENTS {
        let r = routers
            .get(spec.router)
            .with_context(|| format!("no router {}", spec.router))?;
        client_devs.push(device(spec.name, r.id()).await?);
    }
    let mut topo = format!(
        "topology: super1 {} (dc1), super2 {} (dc2)",
        ip(&super1_dev)?,
        ip(&super2_dev)?
    );
    for (spec, dev) in CLIENTS.iter().zip(&client_devs) {
        let r = &routers[spec.router];
        let _ = write!(
            topo,
            "; {} {} behind {} ({:?}, wan {})",
            spec.name,
            ip(dev)?,
            spec.router,
            spec.net,
            r.uplink_ip().map(|i| i.to_string()).unwrap_or_default()
        );
    }
    ctx.say(topo);

    // ---- Supers ---------------------------------------------------------
    let s1_ip = ip(&super1_dev)?;
    let s2_ip = ip(&super2_dev)?;
    let dir = ctx.dir.clone();
    let super_args = |name: &str, ip: Ipv4Addr, bootstrap: Option<&str>| {
        let mut a: Vec<String> = vec![
            "run".into(),
            "--data-dir".into(),
            dir.join(name).display().to_string(),
            "--listen".into(),
            SocketAddr::from((ip, SUPER_QUIC_PORT)).to_string(),
            "--http".into(),
            format!("0.0.0.0:{SUPER_HTTP_PORT}"),
        ];
        if let Some(b) = bootstrap {
            a.push("--bootstrap".into());
            a.push(b.into());
        }
        a
    };
    let args = super_args("super1", s1_ip, None);
    let s1 = start_node(
        ctx,
        "super1",
        &super1_dev,
        "orb-super",
        args,
        "orb-super ready ",
    )
    .await?;
    let super1 = format!("{}@{}", s1.field("id"), s1.field("quic"));
    ctx.say(format!("super1 ready: {}", s1.ready));
    ctx.nodes.push(s1);
    let args = super_args("super2", s2_ip, Some(&super1));
    let s2 = start_node(
        ctx,
        "super2",
        &super2_dev,
        "orb-super",
        args,
        "orb-super ready ",
    )
    .await?;
    let super2 = format!("{}@{}", s2.field("id"), s2.field("quic"));
    ctx.say(format!("super2 ready: {}", s2.ready));
    ctx.nodes.push(s2);
    for (name, peer, want) in [("super1", &super1, s1_ip), ("super2", &super2, s2_ip)] {
        let want = SocketAddr::from((want, SUPER_QUIC_PORT)).to_string();
        if !peer.ends_with(&format!("@{want}")) {
            bail!("{name} announces {peer}, expected its QUIC address {want}");
        }
    }
    let super_ids: Vec<String> = [&super1, &super2]
        .iter()
        .map(|p| p.split('@').next().unwrap_or_default().to_string())
        .collect();

    // ---- Clients --------------------------------------------------------
    let supers = [super1.clone(), super2.clone()];
    for (i, (spec, dev)) in CLIENTS.iter().zip(&client_devs).enumerate() {
        let listen = SocketAddr::from((ip(dev)?, CLIENT_QUIC_BASE + i as u16));
        let mut args = daemon_args(ctx, spec.name, listen, &supers);
        if spec.net == NetKind::Public && !basic {
            args.extend(["--promote".into(), "auto".into()]);
        }
        let node = start_node(ctx, spec.name, dev, "orb-client", args, "orb-client ready ").await?;
        ctx.say(format!("{} ready: {}", spec.name, node.ready));
        ctx.nodes.push(node);
    }
    for spec in &CLIENTS {
        wait_connected(ctx, ctx.node(spec.name)?, &super_ids).await?;
    }
    ctx.say("every client is connected to both supers through its NAT");

    // The lab really translates: super1 sees each NATed client from its
    // router's WAN address, and the public one from its own.
    let (status, _, body) = http(
        &super1_dev,
        format!("http://{s1_ip}:{SUPER_HTTP_PORT}/api/nodes"),
        None,
    )
    .await?;
    if status != 200 {
        bail!("super1 /api/nodes: {status} {body}");
    }
    let seen: Value = serde_json::from_str(&body).context("super1 /api/nodes")?;
    for (i, (spec, dev)) in CLIENTS.iter().zip(&client_devs).enumerate() {
        let id = ctx.node(spec.name)?.field("id");
        let addr = seen
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| n["id"] == id.as_str())
            .and_then(|n| n["addr"].as_str())
            .with_context(|| format!("super1 does not list {}: {seen}", spec.name))?;
        let addr: SocketAddr = addr
            .parse()
            .with_context(|| format!("super1 lists {} at {addr:?}", spec.name))?;
        let want = match spec.net {
            NetKind::Public => ip(dev)?,
            _ => routers[spec.router]
                .uplink_ip()
                .with_context(|| format!("{} has no WAN address", spec.router))?,
        };
        if addr.ip() != std::net::IpAddr::V4(want) {
            bail!(
                "super1 sees {} at {addr}, expected it from {want} (the NAT is not translating?)",
                spec.name
            );
        }
        let local_port = CLIENT_QUIC_BASE + i as u16;
        ctx.say(format!(
            "super1 sees {} (local {}:{local_port}) at {addr}{}",
            spec.name,
            ip(dev)?,
            if addr.port() == local_port {
                ""
            } else {
                " (port rewritten)"
            }
        ));
    }

    // ---- Deploy fn-<client> from each client ----------------------------
    for spec in &CLIENTS {
        let node = ctx.node(spec.name)?;
        let fname = format!("fn-{}", spec.name);
        let wasm = common::tagged_module(&ctx.wasm, &fname)?
            .display()
            .to_string();
        let mut args = vec![
            "deploy",
            wasm.as_str(),
            "--name",
            fname.as_str(),
            "--replicas",
            "1",
            "--json",
        ];
        if !basic {
            // Host the replica on the deploying client itself.
            args.push("--here");
        }
        let v = poll(&format!("{} deploys {fname}", spec.name), CONVERGE, || {
            client_json(ctx, &node.dev, &args, None)
        })
        .await?;
        let placed: Vec<&str> = v["placed_on"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let here = node.field("id");
        if !basic && placed != [here.as_str()] {
            bail!("{fname} deployed with --here is placed on {placed:?}, not on {here}: {v}");
        }
        let host = ctx
            .nodes
            .iter()
            .find(|n| placed.contains(&n.field("id").as_str()))
            .map_or("?", |n| n.name.as_str());
        ctx.say(format!("deployed {fname}, replica on {host}"));
    }

    // ---- (1) Gateway of super1 reaches every client's function ----------
    for spec in &CLIENTS {
        let node = ctx.node(spec.name)?;
        let url = format!("http://{s1_ip}:{SUPER_HTTP_PORT}/fn/fn-{}", spec.name);
        let (served_by, took) = {
            let t = Instant::now();
            let served_by = poll(&format!("POST {url} from super1"), CONVERGE, || async {
                let (status, served_by, body) =
                    http(&super1_dev, url.clone(), Some("lab".into())).await?;
                if status != 200 || body != "hello, lab" {
                    bail!("{status} {body:?}");
                }
                Ok(served_by)
            })
            .await?;
            (served_by, t.elapsed())
        };
        let host = ctx
            .nodes
            .iter()
            .find(|n| n.field("id") == served_by)
            .map_or(served_by.as_str(), |n| n.name.as_str());
        if !basic && served_by != node.field("id") {
            bail!(
                "fn-{} was served by {host}, not by its --here replica on {}",
                spec.name,
                spec.name
            );
        }
        ctx.say(format!(
            "(1) gateway super1 -> fn-{}: 200 \"hello, lab\", served by {host} ({} ms)",
            spec.name,
            took.as_millis()
        ));
    }
    if basic {
        return Ok(());
    }

    // ---- (3) Status: reachability and NAT mapping -----------------------
    for spec in &CLIENTS {
        let node = ctx.node(spec.name)?;
        let (reach, nat) = expected_status(spec.net);
        let v = poll(
            &format!("{} status: reachability {reach:?}, nat {nat:?}", spec.name),
            CONVERGE,
            || async {
                let v = client_json(ctx, &node.dev, &["status", "--json"], None).await?;
                let r = v["reachability"].as_str().unwrap_or_default();
                let n = v["nat"].as_str().unwrap_or_default();
                if !reach.contains(&r) || n != nat {
                    bail!("reachability {r:?}, nat {n:?}; status: {v}");
                }
                Ok(v)
            },
        )
        .await?;
        ctx.say(format!(
            "(3) {}: reachability {}, nat {}",
            spec.name, v["reachability"], v["nat"]
        ));
    }

    // ---- (2) Every pair: ping, then invoke both ways --------------------
    for (i, a) in CLIENTS.iter().enumerate() {
        for b in &CLIENTS[i + 1..] {
            let result = check_pair(ctx, a, b).await?;
            ctx.say(format!(
                "(2) {}: {} rtt {:.2} ms, first byte {:.2} ms",
                result.pair, result.path, result.rtt_ms, result.first_byte_ms
            ));
            ctx.results.push(result);
        }
    }

    // ---- (4) Promotion --------------------------------------------------
    let public = ctx.node("public")?;
    let public_ip = ip(&public.dev)?;
    let promoted = poll("public promoted to a super", CONVERGE, || async {
        let v = client_json(ctx, &public.dev, &["status", "--json"], None).await?;
        let p = &v["promoted"];
        match (p["id"].as_str(), p["addr"].as_str()) {
            (Some(id), Some(addr)) => Ok((id.to_string(), addr.to_string())),
            _ => bail!("\"promoted\" is {p}; status: {v}"),
        }
    })
    .await?;
    let (pid, paddr) = promoted;
    let addr: SocketAddr = paddr
        .parse()
        .with_context(|| format!("promoted addr {paddr:?} is not IP:PORT"))?;
    if addr.ip() != std::net::IpAddr::V4(public_ip) {
        bail!(
            "the promoted super advertises {addr}, but the public client's address is {public_ip}"
        );
    }
    ctx.say(format!("(4) public runs a super role: {pid}@{paddr}"));

    let nat_fresh = router("nat-fresh", Nat::Moderate).await?;
    let fresh_dev = device("fresh", nat_fresh.id()).await?;
    let listen = SocketAddr::from((ip(&fresh_dev)?, CLIENT_QUIC_BASE + CLIENTS.len() as u16));
    let args = daemon_args(ctx, "fresh", listen, &[format!("{pid}@{paddr}")]);
    let fresh = start_node(
        ctx,
        "fresh",
        &fresh_dev,
        "orb-client",
        args,
        "orb-client ready ",
    )
    .await?;
    ctx.nodes.push(fresh);
    let fresh = ctx.node("fresh")?;
    wait_connected(ctx, fresh, std::slice::from_ref(&pid)).await?;
    let v = poll("fresh invokes fn-open", CONVERGE, || async {
        let v = client_json(
            ctx,
            &fresh.dev,
            &["invoke", "fn-open", "--input", "-", "--json"],
            Some(b"from-fresh"),
        )
        .await?;
        if v["ok"] != true || v["output"] != "hello, from-fresh" {
            bail!("unexpected answer: {v}");
        }
        Ok(v)
    })
    .await?;
    ctx.say(format!(
        "(4) fresh (Moderate NAT, only --super {pid}@{paddr}) connected and invoked fn-open: path {}",
        v["path"]
    ));
    Ok(())
}

/// (2) for one pair: `a` pings `b` until the expected path shows up, then
/// each invokes the other's function over that path.
async fn check_pair(ctx: &Ctx, a: &ClientSpec, b: &ClientSpec) -> Result<PairResult> {
    let expected = expected_path(a, b);
    let na = ctx.node(a.name)?;
    let idb = ctx.node(b.name)?.field("id");
    let what = format!("{} pings {} over {expected}", a.name, b.name);
    let deadline = Instant::now() + CONVERGE;
    let mut tries = 0u32;
    let mut first_path = None;
    let (path, rtt_ms, first_byte_ms) = loop {
        tries += 1;
        let attempt = async {
            let v = client_json(ctx, &na.dev, &["ping", &idb, "--json"], None).await?;
            let path = v["path"].as_str().unwrap_or_default().to_string();
            first_path.get_or_insert_with(|| path.clone());
            if v["peer"] != idb.as_str() {
                bail!("the answer names another peer: {v}");
            }
            if path != expected {
                bail!("path {path:?}, expected {expected:?}: {v}");
            }
            let rtt = v["rtt_ms"]
                .as_f64()
                .with_context(|| format!("no rtt_ms: {v}"))?;
            let first_byte = v["first_byte_ms"]
                .as_f64()
                .with_context(|| format!("no first_byte_ms: {v}"))?;
            Ok((path, rtt, first_byte))
        };
        match attempt.await {
            Ok(r) => break r,
            Err(e) if e.downcast_ref::<Fatal>().is_some() => {
                return Err(e.context(format!("{what}: usage error, not retried")));
            }
            Err(e) if Instant::now() >= deadline => {
                return Err(e.context(format!("timed out after {CONVERGE:?}: {what}")));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    };
    let invoke_ab = check_invoke(ctx, a, b, expected).await?;
    let invoke_ba = check_invoke(ctx, b, a, expected).await?;
    Ok(PairResult {
        pair: format!("{}–{}", a.name, b.name),
        expected,
        first_path: first_path.unwrap_or_else(|| path.clone()),
        path,
        tries,
        rtt_ms,
        first_byte_ms,
        invoke_ab,
        invoke_ba,
    })
}

/// `from` invokes `fn-<to>` with input `from-<from>`: the answer must be
/// `hello, from-<from>` over the `expected` path. Returns the path.
async fn check_invoke(
    ctx: &Ctx,
    from: &ClientSpec,
    to: &ClientSpec,
    expected: &str,
) -> Result<String> {
    let node = ctx.node(from.name)?;
    let input = format!("from-{}", from.name);
    let want = format!("hello, {input}");
    let fname = format!("fn-{}", to.name);
    poll(
        &format!("{} invokes {fname} over {expected}", from.name),
        CONVERGE,
        || async {
            let v = client_json(
                ctx,
                &node.dev,
                &["invoke", &fname, "--input", "-", "--json"],
                Some(input.as_bytes()),
            )
            .await?;
            if v["ok"] != true || v["output"] != want.as_str() {
                bail!("unexpected answer: {v}");
            }
            if v["path"] != expected {
                bail!("path {}, expected {expected:?}: {v}", v["path"]);
            }
            Ok(v["path"].as_str().unwrap_or_default().to_string())
        },
    )
    .await
}
