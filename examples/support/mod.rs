//! Helpers shared by the `load` and `many_clients` examples: find or build
//! the release binaries, run nodes as real processes, and read their memory
//! from `/proc`.
//!
//! Included with `#[path = "support/mod.rs"] mod support;` (cargo does not
//! treat `examples/support/` as an example of its own).

// Each example uses a different subset of these helpers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The directory holding `orb-super` and `orb-client` for the profile this
/// example was built with (`target/release/examples/load` ->
/// `target/release`). Unless `build` is false, runs `cargo build` for the
/// two binaries first (a no-op when they are fresh), so a measurement never
/// runs stale binaries against a freshly built example.
pub fn bin_dir(build: bool) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("path of this example")?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("target directory")?
        .to_path_buf();
    let profile = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug")
        .to_string();
    if profile != "release" {
        eprintln!(
            "warning: built with the {profile:?} profile; figures are only meaningful with --release"
        );
    }
    if build {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(root())
            .args(["build", "-p", "orb-super", "-p", "orb-client"]);
        if profile == "release" {
            cmd.arg("--release");
        }
        let status = cmd.status().context("running cargo build")?;
        if !status.success() {
            bail!("building orb-super and orb-client failed");
        }
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

/// A node process, killed (SIGKILL) and reaped when dropped, so an example
/// that fails half way never leaves nodes behind.
pub struct Proc {
    /// The child.
    pub child: Child,
    /// The ready line it printed.
    pub ready: String,
    /// A label for reports.
    pub name: String,
    _lines: mpsc::Receiver<String>,
}

impl Proc {
    /// Start `bin args...` and wait (up to 60 s) for a stdout line starting
    /// with `ready_prefix`. `nofile`: raise the child's open-file limit to
    /// this (or its hard limit, if lower) through `sh -c 'ulimit -n ..;
    /// exec ..'`, because the workspace forbids the `unsafe` a `pre_exec`
    /// setrlimit would need.
    pub fn start(
        name: &str,
        bin: &Path,
        args: &[String],
        ready_prefix: &str,
        nofile: Option<u64>,
    ) -> Result<Proc> {
        let mut cmd = match nofile {
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
        let mut child = cmd
            .env(
                "RUST_LOG",
                std::env::var("ORB_NODE_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.starts_with(ready_prefix) => {
                    return Ok(Proc {
                        child,
                        ready: line,
                        name: name.to_string(),
                        _lines: rx,
                    });
                }
                Ok(_) => continue,
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait().ok();
                    bail!("{name} did not print {ready_prefix:?} (exit status {status:?})");
                }
            }
        }
    }

    /// A `key=value` field of the ready line.
    pub fn field(&self, key: &str) -> String {
        self.ready
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
            .unwrap_or_default()
            .to_string()
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

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

/// Poll `f` every 100 ms until it returns `Ok(Some(v))` or `timeout` passes.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        match f().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what} (last error: {last})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
