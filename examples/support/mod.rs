//! Helpers shared by the `load` and `many_clients` examples: find or build
//! the release binaries, run nodes as real processes, and read their memory
//! from `/proc`.
//!
//! Included with `#[path = "support/mod.rs"] mod support;` (cargo does not
//! treat `examples/support/` as an example of its own).

// Each example uses a different subset of these helpers.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

#[path = "../../tests/common/shared.rs"]
mod shared;
pub use shared::*;

/// The directory holding `orb-super` and `orb-client` for the profile this
/// example was built with (`target/release/examples/load` ->
/// `target/release`). Unless `build` is false, runs `cargo build` for the
/// two binaries first (a no-op when they are fresh), so a measurement never
/// runs stale binaries against a freshly built example.
pub fn bin_dir(build: bool) -> Result<PathBuf> {
    let (dir, profile) = profile_dir()?;
    if profile != "release" {
        eprintln!(
            "warning: built with the {profile:?} profile; figures are only meaningful with --release"
        );
    }
    if build {
        build_binaries(&profile)?;
    }
    for name in ["orb-super", "orb-client"] {
        if !dir.join(name).exists() {
            bail!(
                "{} not found (run without --no-build, or `cargo build --release -p {name}`)",
                dir.join(name).display()
            );
        }
    }
    Ok(dir)
}

/// A free TCP port on loopback (the OS picks; a tiny race is accepted).
pub fn free_tcp() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// A free UDP port on loopback.
pub fn free_udp() -> Result<SocketAddr> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?)
}

impl Proc {
    /// Start `bin args...` and wait (up to 60 s) for a stdout line starting
    /// with `ready_prefix`; `ORB_NODE_LOG` sets the node's `RUST_LOG`.
    /// `nofile`: raise the child's open-file limit to this (or its hard
    /// limit, if lower) through `sh -c 'ulimit -n ..; exec ..'`, because
    /// the workspace forbids the `unsafe` a `pre_exec` setrlimit would need.
    pub fn start(
        name: &str,
        bin: &Path,
        args: &[String],
        ready_prefix: &str,
        nofile: Option<u64>,
    ) -> Result<Proc> {
        let cmd = match nofile {
            Some(n) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!(
                        "ulimit -n {n} 2>/dev/null || ulimit -n \"$(ulimit -Hn)\"; exec \"$0\" \"$@\""
                    ))
                    .arg(bin)
                    .args(args);
                c
            }
            None => {
                let mut c = Command::new(bin);
                c.args(args);
                c
            }
        };
        Proc::spawn(name, cmd, bin, "ORB_NODE_LOG", ready_prefix)
    }

    /// The process ID (after `exec`, the `sh` wrapper's ID is the node's).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// Start `orb-super run` from `bins`, its data in `dir/super`, QUIC and
/// HTTP on free loopback ports; `nofile` as for [`Proc::start`].
pub fn start_super(bins: &Path, dir: &Path, nofile: Option<u64>) -> Result<Proc> {
    Proc::start(
        "super",
        &bins.join("orb-super"),
        &[
            "run".into(),
            "--data-dir".into(),
            dir.join("super").display().to_string(),
            "--listen".into(),
            free_udp()?.to_string(),
            "--http".into(),
            free_tcp()?.to_string(),
        ],
        "orb-super ready ",
        nofile,
    )
}

/// Resident memory of a process, from `/proc/PID/status`, in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mem {
    /// `VmRSS`: resident now.
    pub rss_kb: u64,
    /// `VmHWM`: the most that was ever resident (the kernel's peak).
    pub hwm_kb: u64,
}

/// Read `VmRSS` and `VmHWM` of `pid`; `None` once it has exited.
pub fn mem_of(pid: u32) -> Option<Mem> {
    parse_status(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// The same for this process.
pub fn own_mem() -> Option<Mem> {
    parse_status(&std::fs::read_to_string("/proc/self/status").ok()?)
}

fn parse_status(text: &str) -> Option<Mem> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
    };
    Some(Mem {
        rss_kb: field("VmRSS:")?,
        hwm_kb: field("VmHWM:")?,
    })
}

/// Samples the `VmRSS` of some processes on a task of its own, every
/// `every`, until [`RssSampler::stop`].
pub struct RssSampler {
    running: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<Vec<(u64, u64)>>>,
}

impl RssSampler {
    /// Start sampling `pids` (a process that has exited is skipped).
    pub fn start(pids: Vec<u32>, every: Duration) -> RssSampler {
        let running = Arc::new(AtomicBool::new(true));
        let sampling = running.clone();
        let task = tokio::spawn(async move {
            let t0 = Instant::now();
            let mut out: Vec<Vec<(u64, u64)>> = vec![Vec::new(); pids.len()];
            let mut tick = tokio::time::interval(every);
            while sampling.load(Ordering::Relaxed) {
                tick.tick().await;
                let ms = t0.elapsed().as_millis() as u64;
                for (i, pid) in pids.iter().enumerate() {
                    if let Some(m) = mem_of(*pid) {
                        out[i].push((ms, m.rss_kb));
                    }
                }
            }
            out
        });
        RssSampler { running, task }
    }

    /// Stop, and return the samples of each process in the order of `pids`:
    /// (ms since the start, `VmRSS` KiB).
    pub async fn stop(self) -> Result<Vec<Vec<(u64, u64)>>> {
        self.running.store(false, Ordering::Relaxed);
        self.task.await.context("sampler task")
    }
}

/// KiB as MiB with one decimal, for tables.
pub fn mib(kb: u64) -> String {
    format!("{:.1} MiB", kb as f64 / 1024.0)
}

/// The soft open-file limit of this process (`/proc/self/limits`).
pub fn nofile_limits() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let mut nums = line.split_whitespace().filter_map(|w| {
        w.parse::<u64>()
            .ok()
            .or((w == "unlimited").then_some(u64::MAX))
    });
    Some((nums.next()?, nums.next()?))
}

/// An HTTP client for the nodes' APIs (loopback, so no proxies). Idle
/// pooled connections are dropped after a second: the gateway closes
/// keep-alive connections that send nothing for a while, and a request on a
/// connection it just closed would fail for no reason of the node's.
pub fn http() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .pool_idle_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(60))
        .build()?)
}

/// GET a JSON document.
pub async fn get_json(http: &reqwest::Client, url: &str) -> Result<serde_json::Value> {
    let r = http.get(url).send().await?;
    let status = r.status();
    let text = r.text().await?;
    if !status.is_success() {
        bail!("GET {url}: {status}: {text}");
    }
    Ok(serde_json::from_str(&text)?)
}

/// GET a text document (Prometheus `/metrics`).
pub async fn get_text(http: &reqwest::Client, url: &str) -> Result<String> {
    let r = http.get(url).send().await?.error_for_status()?;
    Ok(r.text().await?)
}

/// The value of an unlabelled Prometheus sample `name` in `text`.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == name).then(|| v.trim().parse().ok())?
    })
}

/// Wait (up to `timeout`) until the super at `gateway` counts a number of
/// clients in `/api/status` that `ok` accepts.
pub async fn wait_clients(
    http: &reqwest::Client,
    gateway: &str,
    what: &str,
    timeout: Duration,
    ok: impl Fn(u64) -> bool,
) -> Result<()> {
    let url = format!("{gateway}/api/status");
    wait_for(what, timeout, || {
        let (http, url, ok) = (http.clone(), url.clone(), &ok);
        async move {
            let v = get_json(&http, &url).await?;
            Ok(v["clients"].as_u64().is_some_and(ok).then_some(()))
        }
    })
    .await
}

/// Print a report: the human `table` on stdout, or with `json` the
/// `report` on stdout and the table on stderr.
pub fn print_report(json: bool, table: &str, report: &serde_json::Value) {
    if json {
        eprint!("{table}");
        println!("{report}");
    } else {
        print!("{table}");
    }
}
