//! What the tests and the examples both need: building the node binaries,
//! running a node as a real process until it prints its ready line, and
//! polling until something holds.
//! Included by `tests/common/mod.rs` (`mod shared;`) and
//! `examples/support/mod.rs` (`#[path = "../../tests/common/shared.rs"]`);
//! each adds its own `Proc::start` on top of [`Proc::spawn`].

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The directory of the profile this test or example was built with
/// (`target/<profile>/deps/e2e-xxxx` or `target/<profile>/examples/load`
/// -> `target/<profile>`), where `orb-super` and `orb-client` are built
/// too, and the profile's name.
pub fn profile_dir() -> Result<(PathBuf, String)> {
    let exe = std::env::current_exe().context("path of this executable")?;
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
    Ok((dir, profile))
}

/// `cargo build -p orb-super -p orb-client` with `profile` (a no-op when
/// they are fresh).
pub fn build_binaries(profile: &str) -> Result<()> {
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
    Ok(())
}

/// A node process, killed (SIGKILL) and reaped when dropped, so a test or
/// an example that fails half way never leaves nodes behind.
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
    /// Spawn `cmd`, which runs the node binary `bin` (named in the error
    /// when it cannot start), with `RUST_LOG` taken from the environment
    /// variable `log_var` (`warn` without it), stdout piped and stderr
    /// inherited; then wait (up to 60 s) for a stdout line starting with
    /// `ready_prefix`.
    pub fn spawn(
        name: &str,
        mut cmd: Command,
        bin: &Path,
        log_var: &str,
        ready_prefix: &str,
    ) -> Result<Proc> {
        let mut child = cmd
            .env(
                "RUST_LOG",
                std::env::var(log_var).unwrap_or_else(|_| "warn".into()),
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

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
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
