//! The owner's commands for a deployed function: `remove`, `rollback`,
//! `versions` and `logs`.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

use crate::api::Api;
use crate::output::{parse_duration, s, short, table, utc};

/// `orb-client remove`.
#[derive(clap::Args)]
pub struct RemoveArgs {
    /// Function name.
    name: String,
    /// Print JSON: {"name", "version", "published_on", "replicas_stopped",
    /// "super_error"}.
    #[arg(long)]
    json: bool,
}

pub async fn remove(api: &Api, a: RemoveArgs) -> anyhow::Result<()> {
    let resp = api
        .send(api.post(&format!("/api/remove/{}", a.name)))
        .await?;
    let v = api.json(resp).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "removed {} version={} replicas_stopped={}",
        s(&v["name"]),
        v["version"],
        v["replicas_stopped"]
    );
    if let Some(e) = v["super_error"].as_str() {
        eprintln!(
            "warning: the super could not stop the replicas itself ({e}); they stop as the supers see the tombstone"
        );
    }
    Ok(())
}

/// `orb-client rollback`.
#[derive(clap::Args)]
pub struct RollbackArgs {
    /// Function name.
    name: String,
    /// The version to make current again (see `versions`) [default: the
    /// one before the current].
    #[arg(long)]
    to: Option<u64>,
    /// Print JSON: {"name", "version", "hash", "placed_on", "published_on"}.
    #[arg(long)]
    json: bool,
}

pub async fn rollback(api: &Api, a: RollbackArgs) -> anyhow::Result<()> {
    let mut req = api.post(&format!("/api/rollback/{}", a.name));
    if let Some(to) = a.to {
        req = req.query(&[("to", to)]);
    }
    let v = api.json(api.send(req).await?).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "rolled back {} version={} hash={} replicas={}",
        s(&v["name"]),
        v["version"],
        s(&v["hash"]),
        v["placed_on"].as_array().map_or(0, |a| a.len())
    );
    if let Some(e) = v["dht_error"].as_str() {
        eprintln!("warning: {e} (retried in the background)");
    }
    Ok(())
}

/// `orb-client versions`.
#[derive(clap::Args)]
pub struct VersionsArgs {
    /// Function name.
    name: String,
    /// Print JSON: {"name", "current", "versions": [{"version", "hash",
    /// "size", "created_ms", "current", "replicas", "max_replicas"}]}.
    #[arg(long)]
    json: bool,
}

pub async fn versions(api: &Api, a: VersionsArgs) -> anyhow::Result<()> {
    let v = api.get_json(&format!("/api/versions/{}", a.name)).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    table(
        &v["versions"],
        false,
        &[
            ("VERSION", -7),
            ("HASH", 14),
            ("SIZE", -9),
            ("REPLICAS", -8),
            ("DEPLOYED (UTC)", 23),
            ("", 0),
        ],
        |x| {
            vec![
                x["version"].to_string(),
                short(&x["hash"], 12),
                x["size"].to_string(),
                x["replicas"].to_string(),
                utc(x["created_ms"].as_u64().unwrap_or(0)),
                if x["current"].as_bool().unwrap_or(false) {
                    "current".into()
                } else {
                    String::new()
                },
            ]
        },
    )
}

/// `orb-client logs`.
#[derive(clap::Args)]
pub struct LogsArgs {
    /// Function name.
    name: String,
    /// Keep printing new entries as calls run, until Ctrl-C.
    #[arg(long, short)]
    follow: bool,
    /// Only entries of the last DURATION (like 90s, 15m, 2h, 1d)
    /// [default: all the replicas kept].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    since: Option<u64>,
    /// Print one JSON object per entry and line: {"time_ms", "node", "seq",
    /// "request_id", "kind": "stderr"|"call", "line" | "status",
    /// "duration_us", "fuel"}.
    #[arg(long)]
    json: bool,
}

/// Entries remembered for `--follow` to tell new ones from repeats, at most.
const MAX_SEEN: usize = 100_000;

pub async fn logs(api: &Api, a: LogsArgs) -> anyhow::Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut since = a.since.map_or(0, |d| now.saturating_sub(d));
    let mut seen: HashSet<(String, u64)> = HashSet::new();
    loop {
        let v = api
            .get_json(&format!("/api/logs/{}?since_ms={since}", a.name))
            .await?;
        for e in v.as_array().into_iter().flatten() {
            let key = (s(&e["node"]), e["seq"].as_u64().unwrap_or(0));
            if !seen.insert(key) {
                continue;
            }
            since = since.max(e["time_ms"].as_u64().unwrap_or(0));
            print_entry(e, a.json)?;
        }
        if !a.follow {
            return Ok(());
        }
        if seen.len() > MAX_SEEN {
            // Entries older than the newest one seen are not asked for
            // again, so forgetting them is safe.
            seen.clear();
            since += 1;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn print_entry(e: &Value, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(e).context("encoding an entry")?);
        return Ok(());
    }
    let head = format!(
        "{} {} {}",
        utc(e["time_ms"].as_u64().unwrap_or(0)),
        short(&e["node"], 10),
        short(&e["request_id"], 16)
    );
    if e["kind"] == "call" {
        println!(
            "{head} call status={} duration_ms={:.2} fuel={}",
            s(&e["status"]),
            e["duration_us"].as_u64().unwrap_or(0) as f64 / 1000.0,
            e["fuel"]
        );
    } else {
        println!("{head} stderr: {}", s(&e["line"]));
    }
    Ok(())
}
