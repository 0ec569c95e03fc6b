//! `deploy` and `invoke`.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::api::Api;

/// `orb-client deploy`.
#[derive(clap::Args)]
pub struct DeployArgs {
    /// The module: a .wasm file built for wasm32-wasip1.
    file: PathBuf,
    /// Function name: 1 to 64 of a-z, 0-9, '-', '_', '.'.
    #[arg(long)]
    name: String,
    /// Replicas to keep.
    #[arg(long, default_value_t = 2)]
    replicas: u32,
    /// Host the first replica on this machine (the daemon must have
    /// capacity); the others go wherever placement puts them.
    #[arg(long)]
    here: bool,
    /// Replicas allowed under load [default: --replicas].
    #[arg(long)]
    max_replicas: Option<u32>,
    /// A fixed argument passed to the function. Repeatable.
    #[arg(long = "arg")]
    args: Vec<String>,
    /// A fixed environment variable KEY=VALUE. Repeatable.
    #[arg(long = "env")]
    envs: Vec<String>,
    /// Fuel (metering points, the CPU budget) per call [default: the
    /// node's, 2e10]. Nodes clamp it to their maximum (1e11 by default).
    #[arg(long)]
    fuel: Option<u64>,
    /// Linear memory per call, in MiB [default: the node's, 256].
    /// Nodes clamp it to their maximum (1024 by default).
    #[arg(long)]
    memory_mb: Option<u64>,
    /// Wall-clock limit per call, in milliseconds [default: the
    /// node's, 10000]. Nodes clamp it to their maximum (60000 by default).
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Most bytes a call may write to stdout [default: the node's,
    /// 8 MiB]. Nodes clamp it to their maximum (8 MiB by default).
    #[arg(long)]
    max_output_bytes: Option<u64>,
    /// Print the result as JSON: {"name", "hash", "version", "placed_on",
    /// "published_on", "dht_error"}.
    #[arg(long)]
    json: bool,
}

pub async fn deploy(api: &Api, a: DeployArgs) -> anyhow::Result<()> {
    let module = std::fs::read(&a.file).with_context(|| format!("reading {}", a.file.display()))?;
    if !module.starts_with(b"\0asm") {
        bail!(
            "{} is not a WebAssembly module (it does not start with \\0asm)",
            a.file.display()
        );
    }
    let mut query: Vec<(&str, String)> =
        vec![("name", a.name), ("replicas", a.replicas.to_string())];
    if let Some(m) = a.max_replicas {
        query.push(("max_replicas", m.to_string()));
    }
    if a.here {
        query.push(("here", "1".to_string()));
    }
    query.extend(a.args.into_iter().map(|x| ("arg", x)));
    query.extend(a.envs.into_iter().map(|e| ("env", e)));
    if let Some(mb) = a.memory_mb {
        let bytes = mb
            .checked_mul(1024 * 1024)
            .with_context(|| format!("--memory-mb {mb} is too large"))?;
        query.push(("memory_bytes", bytes.to_string()));
    }
    for (key, value) in [
        ("fuel", a.fuel),
        ("timeout_ms", a.timeout_ms),
        ("max_output", a.max_output_bytes),
    ] {
        if let Some(v) = value {
            query.push((key, v.to_string()));
        }
    }
    let (body, bar) = upload_body(module);
    let resp = api
        .send(api.post("/api/deploy").query(&query).body(body))
        .await?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let v: Value = api.json(resp).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let placed = v["placed_on"].as_array().map(|a| a.len()).unwrap_or(0);
    println!(
        "deployed {} version={} hash={} replicas={}",
        v["name"].as_str().unwrap_or(""),
        v["version"],
        v["hash"].as_str().unwrap_or(""),
        placed
    );
    if placed == 0 {
        eprintln!(
            "warning: no node with spare capacity is connected yet; the function will be placed when one joins"
        );
    }
    if let Some(e) = v["dht_error"].as_str() {
        eprintln!("warning: {e} (retried in the background)");
    }
    Ok(())
}

/// `orb-client invoke`.
#[derive(clap::Args)]
pub struct InvokeArgs {
    /// Function name.
    name: String,
    /// Input file, or - for stdin [default: no input].
    #[arg(long)]
    input: Option<String>,
    /// Print JSON instead of the raw output: {"ok", "status", "node",
    /// "path", "request_id", "fuel", "output"} (output as UTF-8 text,
    /// lossy; path is direct-lan, direct, relayed or super).
    #[arg(long)]
    json: bool,
}

pub async fn invoke(api: &Api, a: InvokeArgs) -> anyhow::Result<()> {
    let body = match a.input.as_deref() {
        None => Vec::new(),
        Some("-") => {
            let mut b = Vec::new();
            std::io::stdin()
                .read_to_end(&mut b)
                .context("reading stdin")?;
            b
        }
        Some(path) => std::fs::read(path).with_context(|| format!("reading {path}"))?,
    };
    let resp = api
        .send(api.post(&format!("/api/invoke/{}", a.name)).body(body))
        .await?;
    let status = resp.status();
    let header = |h: &str| {
        resp.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (node, request_id, fuel) = (
        header("x-orb-node"),
        header("x-orb-request-id"),
        header("x-orb-fuel"),
    );
    let path = header("x-orb-path");
    let bytes = resp.bytes().await.context("reading the answer")?;
    if a.json {
        let v = serde_json::json!({
            "ok": status.is_success(),
            "status": status.as_u16(),
            "node": node,
            "path": path,
            "request_id": request_id,
            "fuel": fuel.and_then(|f| f.parse::<u64>().ok()),
            "output": String::from_utf8_lossy(&bytes),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        if !status.is_success() {
            std::process::exit(1);
        }
        return Ok(());
    }
    if !status.is_success() {
        bail!("{}", api.error_text(status, &bytes));
    }
    std::io::stdout().write_all(&bytes)?;
    std::io::stdout().flush()?;
    if let Some(node) = node {
        tracing::debug!(node, "served by");
    }
    Ok(())
}

/// The module as a request body. On a terminal, a progress bar follows the
/// upload (and then spins while the network validates and places it);
/// otherwise the bytes go in one piece and nothing is drawn.
fn upload_body(module: Vec<u8>) -> (reqwest::Body, Option<indicatif::ProgressBar>) {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return (reqwest::Body::from(module), None);
    }
    let bar = indicatif::ProgressBar::new(module.len() as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec})",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message("uploading");
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        module.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    let b = bar.clone();
    let stream = futures_util::stream::iter(chunks.into_iter().inspect(move |c| {
        if let Ok(chunk) = c {
            b.inc(chunk.len() as u64);
            if b.position() >= b.length().unwrap_or(0) {
                b.set_message("validating and placing");
            }
        }
    }));
    (reqwest::Body::wrap_stream(stream), Some(bar))
}
