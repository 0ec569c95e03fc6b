//! `orb-client invoke`: call a function through the daemon's local API
//! with any method, sub-path and headers; its body goes to stdout.

use std::io::{Read, Write};

use anyhow::{Context, bail};

use crate::api::Api;

/// `invoke`'s arguments.
#[derive(clap::Args)]
pub struct InvokeArgs {
    /// Function name.
    name: String,
    /// Input file, or - for stdin [default: no input].
    #[arg(long)]
    input: Option<String>,
    /// HTTP method: GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS.
    #[arg(long, default_value = "POST", value_parser = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"], ignore_case = true)]
    method: String,
    /// Path after the function's name, with an optional query: the
    /// function's PATH_INFO and QUERY_STRING (e.g. /users/42?full=1).
    #[arg(long, value_name = "/PATH")]
    path: Option<String>,
    /// A request header NAME:VALUE (the function sees HTTP_NAME).
    /// Repeatable.
    #[arg(long = "header", value_name = "NAME:VALUE")]
    headers: Vec<String>,
    /// Print JSON instead of the raw output: {"ok", "status", "node",
    /// "path", "request_id", "fuel", "headers", "output"} (output as UTF-8
    /// text, lossy; path is direct-lan, direct, relayed or super).
    #[arg(long)]
    json: bool,
}

/// Run `invoke`.
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
    let sub = match a.path.as_deref() {
        None | Some("") => String::new(),
        Some(p) if p.starts_with('/') || p.starts_with('?') => p.to_string(),
        Some(p) => format!("/{p}"),
    };
    let method = reqwest::Method::from_bytes(a.method.to_ascii_uppercase().as_bytes())
        .with_context(|| format!("--method {}", a.method))?;
    let mut req = api
        .request(method, &format!("/api/invoke/{}{sub}", a.name))
        .body(body);
    for h in &a.headers {
        let Some((k, v)) = h.split_once(':') else {
            bail!("--header {h:?}: expected NAME:VALUE");
        };
        req = req.header(k.trim(), v.trim());
    }
    let resp = api.send(req).await?;
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
    let headers: serde_json::Map<String, serde_json::Value> = resp
        .headers()
        .iter()
        .filter(|(k, _)| !k.as_str().starts_with("x-orb-"))
        .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.into())))
        .collect();
    let bytes = resp.bytes().await.context("reading the answer")?;
    if a.json {
        let v = serde_json::json!({
            "ok": status.is_success(),
            "status": status.as_u16(),
            "node": node,
            "path": path,
            "request_id": request_id,
            "fuel": fuel.and_then(|f| f.parse::<u64>().ok()),
            "headers": headers,
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
