//! `orb-client deploy`: read the module (and pack `--files DIR` into a
//! bundle), upload them to the daemon's local API, print the result.

use std::path::PathBuf;

use anyhow::{Context, bail};
use orb_proto::bundle::{BundleLimits, DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES};
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
    /// The function answers like a CGI script: header lines (Status:,
    /// Content-Type:, Location:, others), an empty line, then the body.
    /// The gateway turns them into the HTTP status and headers.
    #[arg(long)]
    cgi: bool,
    /// Content-Type of a raw (not --cgi) function's answers
    /// [default: application/octet-stream].
    #[arg(long, value_name = "TYPE", conflicts_with = "cgi")]
    content_type: Option<String>,
    /// A directory the function sees as `/` (read-only to it; writes go to
    /// a per-call scratch layer). Regular files and directories; symlinks
    /// only when they stay inside DIR.
    #[arg(long, value_name = "DIR")]
    files: Option<PathBuf>,
    /// Largest packed --files bundle, in bytes (nodes have their own
    /// bound, 64 MiB by default).
    #[arg(long, default_value_t = DEFAULT_MAX_BYTES, requires = "files")]
    max_bundle_bytes: u64,
    /// Most files and directories in --files.
    #[arg(long, default_value_t = DEFAULT_MAX_ENTRIES, requires = "files")]
    max_bundle_entries: u32,
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
    let bundle = match &a.files {
        Some(dir) => {
            let limits = BundleLimits {
                max_bytes: a.max_bundle_bytes,
                max_entries: a.max_bundle_entries,
            };
            Some(
                orb_runtime::files::pack_dir(dir, &limits)
                    .with_context(|| format!("packing --files {}", dir.display()))?,
            )
        }
        None => None,
    };
    let mut query: Vec<(&str, String)> =
        vec![("name", a.name), ("replicas", a.replicas.to_string())];
    if let Some(m) = a.max_replicas {
        query.push(("max_replicas", m.to_string()));
    }
    if a.here {
        query.push(("here", "1".to_string()));
    }
    if a.cgi {
        query.push(("cgi", "1".to_string()));
    }
    if let Some(t) = a.content_type {
        query.push(("content_type", t));
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
    let mut req = api.post("/api/deploy").query(&query);
    let upload = match bundle {
        Some(bundle) => {
            let (content_type, body) = multipart(&module, &bundle);
            req = req.header("content-type", content_type);
            body
        }
        None => module,
    };
    let (body, bar) = upload_body(upload);
    let resp = api.send(req.body(body)).await?;
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

/// A `multipart/form-data` body with the `module` and `bundle` parts, and
/// its content type.
fn multipart(module: &[u8], bundle: &[u8]) -> (String, Vec<u8>) {
    // A boundary that cannot occur in either part.
    let mut n = 0u64;
    let boundary = loop {
        let b = format!("orb-upload-{n:016x}");
        let found = |hay: &[u8]| hay.windows(b.len()).any(|w| w == b.as_bytes());
        if !found(module) && !found(bundle) {
            break b;
        }
        n += 1;
    };
    let mut body = Vec::with_capacity(module.len() + bundle.len() + 512);
    for (name, file, data) in [
        ("module", "module.wasm", module),
        ("bundle", "files.orbbundle", bundle),
    ] {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{file}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// The upload as a request body. On a terminal, a progress bar follows the
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
