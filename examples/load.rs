//! Sustained load on a gateway, with every node a real process:
//!
//! ```text
//! cargo run --release --example load -- [--secs 60] [--clients 3] [--replicas 3] [--concurrency 16] [--json]
//! ```
//!
//! Builds (or reuses) the release `orb-super` and `orb-client`, starts one
//! super and N client daemons as separate processes with temporary data
//! directories, deploys `examples/functions/hello.wat` with `--replicas R`,
//! waits until every replica has answered a call, then drives the super's
//! HTTP gateway with `concurrency` keep-alive callers for `secs` seconds.
//!
//! While the load runs it samples every process's `VmRSS` every 250 ms and
//! reads `VmHWM` (the kernel's peak) at the end. It reports calls, calls/s,
//! errors by kind, latency percentiles over every successful call, peak and
//! start/end RSS per process, and how calls spread over the replicas
//! (`x-orb-node`). It exits non-zero if any call failed (warm-up included)
//! or a node died. `--json` prints one JSON object on stdout (the table
//! then goes to stderr). Everything shares this machine's cores, the load
//! generator included, so the figures are for loopback on one machine.

#[path = "support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::Parser;
use serde_json::json;
use support::{Mem, Proc, RssSampler, mib};

/// Sustained gateway load against real orb-super / orb-client processes.
#[derive(Parser, Debug)]
#[command(name = "load")]
struct Args {
    /// Seconds of measured load (after the warm-up).
    #[arg(long, default_value_t = 60)]
    secs: u64,
    /// Client daemons (separate processes) to start.
    #[arg(long, default_value_t = 3)]
    clients: usize,
    /// Replicas of the function (at most --clients: one per client).
    #[arg(long, default_value_t = 3)]
    replicas: u32,
    /// Concurrent HTTP callers, each on its own keep-alive connection.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Calls each client daemon runs at once [default: --concurrency, so a
    /// single replica could take the whole load and 429 means a bug, not a
    /// sizing choice].
    #[arg(long)]
    capacity: Option<usize>,
    /// Request body size in bytes (hello.wat echoes it back).
    #[arg(long, default_value_t = 64)]
    input_bytes: usize,
    /// Longest warm-up before the measurement: calls until every replica
    /// has answered at least once (and for at least 2 s).
    #[arg(long, default_value_t = 30)]
    warmup_secs: u64,
    /// Deploy this module (.wasm or .wat) instead of hello.wat; its output
    /// is then not checked.
    #[arg(long)]
    wasm: Option<PathBuf>,
    /// Use the binaries already built; do not run `cargo build`.
    #[arg(long)]
    no_build: bool,
    /// Print one JSON object on stdout (the human table goes to stderr).
    #[arg(long)]
    json: bool,
}

/// How often RSS is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// Timeout of a single call; a call slower than this counts as an error.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// What one caller saw.
#[derive(Default)]
struct Tally {
    /// Latency of every successful call, in microseconds.
    lat_us: Vec<u32>,
    /// Failed calls by kind ("HTTP 429", "transport: timeout", ...).
    errors: BTreeMap<String, u64>,
    /// Successful calls per replica (`x-orb-node`).
    by_node: HashMap<String, u64>,
    /// Successful calls per whole second since the start.
    per_second: Vec<u64>,
}

impl Tally {
    fn merge(&mut self, o: Tally) {
        self.lat_us.extend(o.lat_us);
        for (k, v) in o.errors {
            *self.errors.entry(k).or_default() += v;
        }
        for (k, v) in o.by_node {
            *self.by_node.entry(k).or_default() += v;
        }
        if self.per_second.len() < o.per_second.len() {
            self.per_second.resize(o.per_second.len(), 0);
        }
        for (i, v) in o.per_second.into_iter().enumerate() {
            self.per_second[i] += v;
        }
    }

    fn failed(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Why a reqwest call failed, coarsely: the kinds an operator would tell
/// apart (connection refused vs timeout vs broken body).
fn transport_kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "transport: timeout"
    } else if e.is_connect() {
        "transport: connect"
    } else if e.is_body() || e.is_decode() {
        "transport: body"
    } else if e.is_request() {
        "transport: request"
    } else {
        "transport: other"
    }
}

/// One caller: calls back to back on its own keep-alive connection until
/// `stop` is set.
async fn caller(
    http: reqwest::Client,
    url: String,
    input: Bytes,
    expect: Option<Bytes>,
    started: Instant,
    stop: Arc<AtomicBool>,
) -> Tally {
    let mut t = Tally::default();
    while !stop.load(Ordering::Relaxed) {
        let t0 = Instant::now();
        let res = http.post(&url).body(input.clone()).send().await;
        let kind = match res {
            Err(e) => Some(transport_kind(&e).to_string()),
            Ok(resp) => {
                let status = resp.status();
                let node = resp
                    .headers()
                    .get("x-orb-node")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
                    .to_string();
                match resp.bytes().await {
                    Err(e) => Some(transport_kind(&e).to_string()),
                    Ok(_) if !status.is_success() => Some(format!("HTTP {}", status.as_u16())),
                    Ok(body) if expect.as_ref().is_some_and(|x| *x != body) => {
                        Some("wrong output".to_string())
                    }
                    Ok(_) => {
                        let us = t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                        t.lat_us.push(us);
                        *t.by_node.entry(node).or_default() += 1;
                        let sec = started.elapsed().as_secs() as usize;
                        if t.per_second.len() <= sec {
                            t.per_second.resize(sec + 1, 0);
                        }
                        t.per_second[sec] += 1;
                        None
                    }
                }
            }
        };
        if let Some(k) = kind {
            *t.errors.entry(k).or_default() += 1;
        }
    }
    t
}

/// Run `concurrency` callers until `until` says stop (checked every 100 ms).
async fn drive(
    args: &Args,
    url: &str,
    input: &Bytes,
    expect: &Option<Bytes>,
    mut until: impl FnMut(Duration) -> bool,
) -> Result<(Tally, Duration)> {
    // One pooled connection per caller: every caller keeps its own
    // keep-alive connection, like that many independent HTTP users.
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(args.concurrency)
        .timeout(CALL_TIMEOUT)
        .build()?;
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        tasks.spawn(caller(
            http.clone(),
            url.to_string(),
            input.clone(),
            expect.clone(),
            started,
            stop.clone(),
        ));
    }
    while !until(started.elapsed()) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = Tally::default();
    while let Some(t) = tasks.join_next().await {
        total.merge(t.context("caller task")?);
    }
    Ok((total, started.elapsed()))
}

/// RSS samples of one process.
struct Track {
    name: String,
    pid: u32,
    /// (ms since the load started, VmRSS KiB).
    samples: Vec<(u64, u64)>,
    /// VmHWM read after the load (the kernel's peak over the whole life).
    peak: Option<Mem>,
}

impl Track {
    fn at(&self, ms: u64) -> Option<u64> {
        self.samples
            .iter()
            .min_by_key(|(t, _)| t.abs_diff(ms))
            .map(|s| s.1)
    }
    fn first(&self) -> Option<u64> {
        self.samples.first().map(|s| s.1)
    }
    fn last(&self) -> Option<u64> {
        self.samples.last().map(|s| s.1)
    }
    fn max(&self) -> Option<u64> {
        self.samples.iter().map(|s| s.1).max()
    }
    /// RSS every `step_ms` (the sample nearest each mark), so growth that
    /// levels off can be told from growth that does not.
    fn series(&self, step_ms: u64, until_ms: u64) -> Vec<u64> {
        (0..=until_ms / step_ms)
            .filter_map(|i| self.at(i * step_ms))
            .collect()
    }
}

/// The step of the printed RSS series: about a dozen points per run, in
/// whole seconds.
fn series_step(took: Duration) -> u64 {
    (took.as_secs() / 12).max(1) * 1000
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    // Nearest rank: the smallest value with at least p% of calls at or below.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    f64::from(sorted[rank.min(sorted.len()) - 1]) / 1000.0
}

fn kb_json(v: Option<u64>) -> serde_json::Value {
    v.map_or(serde_json::Value::Null, |v| v.into())
}

fn opt_mib(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_string(), mib)
}

#[tokio::main]
async fn main() -> Result<ExitCode> {
    let args = Args::parse();
    if args.clients == 0 || args.replicas == 0 || args.concurrency == 0 || args.secs == 0 {
        bail!("--clients, --replicas, --concurrency and --secs must be at least 1");
    }
    if args.replicas as usize > args.clients {
        bail!(
            "--replicas {} needs at least as many --clients (one replica per client)",
            args.replicas
        );
    }
    orb_node::cli::init_logging("warn");
    let bins = support::bin_dir(!args.no_build)?;
    let dir = tempfile::Builder::new().prefix("orb-load-").tempdir()?;
    // Nodes live in `procs` and are killed when it drops, on every path out.
    let mut procs: Vec<Proc> = Vec::new();
    let outcome = run(&args, &bins, dir.path(), &mut procs).await;
    drop(procs);
    outcome
}

async fn run(
    args: &Args,
    bins: &std::path::Path,
    dir: &std::path::Path,
    procs: &mut Vec<Proc>,
) -> Result<ExitCode> {
    let http = support::http()?;
    let capacity = args.capacity.unwrap_or(args.concurrency).max(1);

    // --- the network: one super, N clients, all separate processes ---
    let sup = support::start_super(bins, dir, None)?;
    let super_peer = format!("{}@{}", sup.field("id"), sup.field("quic"));
    let gateway = format!("http://{}", sup.field("http"));
    eprintln!("super     pid={} gateway={gateway}", sup.pid());
    procs.push(sup);
    let mut labels: HashMap<String, String> = HashMap::new();
    for i in 0..args.clients {
        let c = Proc::start(
            &format!("client-{i}"),
            &bins.join("orb-client"),
            &[
                "--api".into(),
                support::free_tcp()?.to_string(),
                "daemon".into(),
                "--data-dir".into(),
                dir.join(format!("client-{i}")).display().to_string(),
                "--listen".into(),
                "127.0.0.1:0".into(),
                "--capacity".into(),
                capacity.to_string(),
                "--super".into(),
                super_peer.clone(),
            ],
            "orb-client ready ",
            None,
        )?;
        eprintln!("client-{i}  pid={} api=http://{}", c.pid(), c.field("api"));
        labels.insert(c.field("id"), format!("client-{i}"));
        procs.push(c);
    }
    let want = args.clients as u64;
    support::wait_clients(
        &http,
        &gateway,
        "every client to register",
        Duration::from_secs(30),
        |c| c == want,
    )
    .await?;

    // --- the function ---
    let (wasm, expect_prefix) = match &args.wasm {
        Some(p) if p.extension().is_some_and(|e| e == "wat") => (wat::parse_file(p)?, None),
        Some(p) => (
            std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
            None,
        ),
        None => {
            let p = support::root().join("examples/functions/hello.wat");
            (
                wat::parse_file(&p).with_context(|| format!("compiling {}", p.display()))?,
                Some("hello, "),
            )
        }
    };
    let api0 = format!("http://{}", procs[1].field("api"));
    // max_replicas = replicas: autoscaling must not change the replica set
    // while it is being measured.
    let api_port = procs[1]
        .field("api")
        .parse::<std::net::SocketAddr>()
        .context("the client's API address")?
        .port();
    let token = orb_node::local_api::find_token(api_port).map_err(anyhow::Error::msg)?;
    let r = http
        .post(format!(
            "{api0}/api/deploy?name=load&replicas={0}&max_replicas={0}",
            args.replicas
        ))
        .bearer_auth(token)
        .body(wasm)
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("deploy failed: {}", r.text().await?.trim());
    }
    let replicas = args.replicas as usize;
    support::wait_for(
        "every replica to be placed",
        Duration::from_secs(60),
        || {
            let http = http.clone();
            let url = format!("{gateway}/api/functions/load");
            async move {
                let v = support::get_json(&http, &url).await?;
                let n = v["replicas"].as_array().map_or(0, |a| a.len());
                Ok((n >= replicas).then_some(()))
            }
        },
    )
    .await?;

    let input = Bytes::from(
        (0..args.input_bytes)
            .map(|i| b'a' + (i % 26) as u8)
            .collect::<Vec<u8>>(),
    );
    let expect = expect_prefix.map(|p| {
        let mut v = p.as_bytes().to_vec();
        v.extend_from_slice(&input);
        Bytes::from(v)
    });
    let url = format!("{gateway}/fn/load");

    // --- warm-up: until every replica has answered (compiled artifacts
    // loaded, connections open), at least 2 s ---
    eprintln!("warming up until all {replicas} replicas answer…");
    let seen = Arc::new(std::sync::Mutex::new(HashSet::<String>::new()));
    let warm_deadline = Duration::from_secs(args.warmup_secs.max(2));
    let (warm, warm_took) = {
        let probe_http = http.clone();
        let fn_url = format!("{gateway}/api/functions/load");
        // Poll the super's per-replica served counters from a side task so
        // the stop condition stays a cheap closure.
        let seen2 = seen.clone();
        let poll = tokio::spawn(async move {
            loop {
                if let Ok(v) = support::get_json(&probe_http, &fn_url).await
                    && let Some(a) = v["replicas"].as_array()
                    && let Ok(mut s) = seen2.lock()
                {
                    for r in a {
                        if r["calls_served"].as_u64().unwrap_or(0) > 0 {
                            s.insert(r["node"].as_str().unwrap_or_default().to_string());
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        let res = drive(args, &url, &input, &expect, |el| {
            let all = seen.lock().map_or(0, |s| s.len()) >= replicas;
            el >= warm_deadline || (el >= Duration::from_secs(2) && all)
        })
        .await;
        poll.abort();
        res?
    };
    let warm_seen = seen.lock().map_or(0, |s| s.len());
    eprintln!(
        "warm-up: {} calls in {:.1} s, {} failed, {warm_seen}/{replicas} replicas answered",
        warm.lat_us.len() as u64 + warm.failed(),
        warm_took.as_secs_f64(),
        warm.failed()
    );

    // --- the measured load, with RSS sampling ---
    let mut tracks: Vec<Track> = procs
        .iter()
        .map(|p| Track {
            name: p.name.clone(),
            pid: p.pid(),
            samples: Vec::new(),
            peak: None,
        })
        .collect();
    tracks.push(Track {
        name: "load (this process)".into(),
        pid: std::process::id(),
        samples: Vec::new(),
        peak: None,
    });
    let pids: Vec<u32> = tracks.iter().map(|t| t.pid).collect();
    let sampler = RssSampler::start(pids, SAMPLE_EVERY);
    eprintln!(
        "driving {url} with {} callers for {} s…",
        args.concurrency, args.secs
    );
    let secs = Duration::from_secs(args.secs);
    let (tally, took) = drive(args, &url, &input, &expect, |el| el >= secs).await?;
    let samples = sampler.stop().await?;
    for (t, s) in tracks.iter_mut().zip(samples) {
        t.samples = s;
        t.peak = support::mem_of(t.pid);
    }
    let mut dead = Vec::new();
    for p in procs.iter_mut() {
        if !p.alive() {
            dead.push(p.name.clone());
        }
    }

    // The super's own view, as a cross-check of the client-side figures.
    let status = support::get_json(&http, &format!("{gateway}/api/status"))
        .await
        .unwrap_or_default();
    let metrics = support::get_text(&http, &format!("{gateway}/metrics"))
        .await
        .unwrap_or_default();
    let unresponsive = support::metric(&metrics, "orb_clients_unresponsive_total");

    // --- report ---
    let mut lat = tally.lat_us.clone();
    lat.sort_unstable();
    let ok = lat.len() as u64;
    let failed = tally.failed();
    let total = ok + failed;
    let rate = total as f64 / took.as_secs_f64();
    let mean = if lat.is_empty() {
        0.0
    } else {
        lat.iter().map(|&v| f64::from(v)).sum::<f64>() / lat.len() as f64 / 1000.0
    };
    // Whole seconds only: the last, partial second would read as a dip.
    let full = (took.as_secs() as usize).min(tally.per_second.len());
    let mut per_sec: Vec<u64> = tally.per_second[..full].to_vec();
    per_sec.sort_unstable();
    let (ps_min, ps_med, ps_max) = match per_sec.as_slice() {
        [] => (0, 0, 0),
        s => (s[0], s[s.len() / 2], s[s.len() - 1]),
    };
    let mut spread: Vec<(String, u64)> = tally
        .by_node
        .iter()
        .map(|(id, n)| (labels.get(id).cloned().unwrap_or_else(|| id.clone()), *n))
        .collect();
    spread.sort();
    let ten_s = 10_000.min(took.as_millis() as u64 / 2);

    let mut out = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "load: 1 super + {} clients (separate processes), {} replica(s), {} callers, {} s, {}-byte input, client capacity {}",
        args.clients, args.replicas, args.concurrency, args.secs, args.input_bytes, capacity
    );
    let _ = writeln!(
        out,
        "calls        {total} in {:.1} s = {rate:.0} calls/s (per whole second: min {ps_min}, median {ps_med}, max {ps_max})",
        took.as_secs_f64()
    );
    if failed == 0 {
        let _ = writeln!(out, "errors       0");
    } else {
        let kinds: Vec<String> = tally
            .errors
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        let _ = writeln!(out, "errors       {failed} ({})", kinds.join(", "));
    }
    let _ = writeln!(
        out,
        "latency      p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  max {:.3} ms  mean {mean:.3} ms  ({ok} successful calls)",
        pct(&lat, 50.0),
        pct(&lat, 90.0),
        pct(&lat, 99.0),
        lat.last().map_or(0.0, |&v| f64::from(v) / 1000.0),
    );
    let spread_txt: Vec<String> = spread
        .iter()
        .map(|(n, c)| format!("{n} {c} ({:.1} %)", 100.0 * *c as f64 / ok.max(1) as f64))
        .collect();
    let _ = writeln!(out, "replicas     {}", spread_txt.join(", "));
    let _ = writeln!(
        out,
        "super says   calls {} (warm-up included), call_errors {}, p50 {:.3} ms, p99 {:.3} ms, unresponsive clients {}",
        status["calls"],
        status["call_errors"],
        status["p50_ms"].as_f64().unwrap_or(0.0),
        status["p99_ms"].as_f64().unwrap_or(0.0),
        unresponsive.map_or("?".into(), |v| v.to_string()),
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<20} {:>8} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11}",
        "memory (VmRSS)",
        "pid",
        "start",
        format!("at {} s", ten_s / 1000),
        "end",
        "end-start",
        "max seen",
        "peak HWM"
    );
    for t in &tracks {
        let growth = match (t.first(), t.last()) {
            (Some(a), Some(b)) => format!("{:+.1} MiB", (b as f64 - a as f64) / 1024.0),
            _ => "-".into(),
        };
        let _ = writeln!(
            out,
            "{:<20} {:>8} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11}",
            t.name,
            t.pid,
            opt_mib(t.first()),
            opt_mib(t.at(ten_s)),
            opt_mib(t.last()),
            growth,
            opt_mib(t.max()),
            opt_mib(t.peak.map(|m| m.hwm_kb)),
        );
    }
    let step_ms = series_step(took);
    let _ = writeln!(out);
    let _ = writeln!(out, "RSS every {} s (MiB):", step_ms / 1000);
    for t in &tracks {
        let s: Vec<String> = t
            .series(step_ms, took.as_millis() as u64)
            .iter()
            .map(|kb| format!("{:.1}", *kb as f64 / 1024.0))
            .collect();
        let _ = writeln!(out, "  {:<20} {}", t.name, s.join(" "));
    }
    if !dead.is_empty() {
        let _ = writeln!(out, "DIED during the run: {}", dead.join(", "));
    }

    let report = json!({
        "config": {
            "secs": args.secs, "clients": args.clients, "replicas": args.replicas,
            "concurrency": args.concurrency, "capacity": capacity, "input_bytes": args.input_bytes,
        },
        "warmup": {
            "calls": warm.lat_us.len() as u64 + warm.failed(),
            "failed": warm.failed(),
            "errors": warm.errors,
            "secs": warm_took.as_secs_f64(),
            "replicas_answered": warm_seen,
        },
        "calls": total,
        "ok": ok,
        "failed": failed,
        "errors": tally.errors,
        "duration_s": took.as_secs_f64(),
        "calls_per_s": rate,
        "calls_per_whole_second": { "min": ps_min, "median": ps_med, "max": ps_max },
        "latency_ms": {
            "p50": pct(&lat, 50.0), "p90": pct(&lat, 90.0), "p99": pct(&lat, 99.0),
            "max": lat.last().map_or(0.0, |&v| f64::from(v) / 1000.0), "mean": mean,
        },
        "replicas": spread.iter().map(|(n, c)| (n.clone(), json!(c))).collect::<serde_json::Map<_, _>>(),
        "memory_kb": tracks.iter().map(|t| (t.name.clone(), json!({
            "pid": t.pid,
            "rss_start": kb_json(t.first()),
            "rss_10s": kb_json(t.at(ten_s)),
            "rss_end": kb_json(t.last()),
            "rss_max_sampled": kb_json(t.max()),
            "vm_hwm": kb_json(t.peak.map(|m| m.hwm_kb)),
            "samples": t.samples.len(),
            "series_step_ms": step_ms,
            "series": t.series(step_ms, took.as_millis() as u64),
        }))).collect::<serde_json::Map<_, _>>(),
        "super_status": status,
        "super_unresponsive_clients": unresponsive,
        "dead": dead,
    });
    support::print_report(args.json, &out, &report);

    if failed > 0 || warm.failed() > 0 || !dead.is_empty() || warm_seen < replicas {
        eprintln!(
            "FAILED: {failed} measured and {} warm-up call(s) failed, {warm_seen}/{replicas} replicas answered, {} node(s) died",
            warm.failed(),
            dead.len()
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
