//! What the daemon knows: `status`, `functions`, `nodes`, `peers`,
//! `resolve`, and `ping` to measure a path.

use serde_json::Value;

use crate::api::Api;
use crate::output::{s, short, table};

pub async fn status(api: &Api, json: bool) -> anyhow::Result<()> {
    let v = api.get_json("/api/status").await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("id        {}", s(&v["id"]));
    println!("role      {}", s(&v["role"]));
    println!("quic      {}", s(&v["quic"]));
    println!("capacity  {} ({} in flight)", v["capacity"], v["in_flight"]);
    println!("supers:");
    for sup in v["supers"].as_array().into_iter().flatten() {
        let state = if sup["connected"].as_bool().unwrap_or(false) {
            "connected"
        } else {
            "disconnected"
        };
        println!("  {}@{}  {state}", s(&sup["id"]), s(&sup["addr"]));
    }
    println!("hosted replicas:");
    for h in v["hosted"].as_array().into_iter().flatten() {
        println!("  {:<24} {}", s(&h["name"]), short(&h["hash"], 12));
    }
    Ok(())
}

pub async fn functions(api: &Api, json: bool) -> anyhow::Result<()> {
    let v = api.get_json("/api/functions").await?;
    table(
        &v,
        json,
        &[("NAME", 24), ("HASH", 14), ("SIZE", -9), ("REPLICAS", 0)],
        |f| {
            vec![
                s(&f["name"]),
                short(&f["hash"], 12),
                f["size"].to_string(),
                f["replicas"].as_array().map_or(0, |a| a.len()).to_string(),
            ]
        },
    )
}

pub async fn ping(api: &Api, id: &str, json: bool) -> anyhow::Result<()> {
    let resp = api.send(api.post(&format!("/api/ping/{id}"))).await?;
    let v: Value = api.json(resp).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "path={} rtt_ms={:.2} first_byte_ms={:.1} peer={}",
            s(&v["path"]),
            v["rtt_ms"].as_f64().unwrap_or(0.0),
            v["first_byte_ms"].as_f64().unwrap_or(0.0),
            s(&v["peer"])
        );
    }
    Ok(())
}

pub async fn peers(api: &Api, json: bool) -> anyhow::Result<()> {
    let v = api.get_json("/api/peers").await?;
    table(
        &v,
        json,
        &[("ID", 54), ("PATH", 11), ("ADDRESS", 22), ("RTT_MS", 0)],
        |n| {
            vec![
                s(&n["id"]),
                s(&n["path"]),
                s(&n["addr"]),
                format!("{:.2}", n["rtt_ms"].as_f64().unwrap_or(0.0)),
            ]
        },
    )
}

pub async fn nodes(api: &Api, json: bool) -> anyhow::Result<()> {
    let v = api.get_json("/api/nodes").await?;
    table(
        &v,
        json,
        &[("ID", 54), ("ROLE", 8), ("ADDRESS", 22), ("CONNECTED", 0)],
        |n| {
            vec![
                s(&n["id"]),
                s(&n["role"]),
                s(&n["addr"]),
                n["connected"].to_string(),
            ]
        },
    )
}

pub async fn resolve(api: &Api, name: &str, json: bool) -> anyhow::Result<()> {
    let v = api.get_json(&format!("/api/resolve/{name}")).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("name      {}", s(&v["name"]));
    println!("owner     {}", s(&v["owner"]));
    println!("hash      {}", s(&v["hash"]));
    println!("version   {}", v["version"]);
    let providers = v["providers"].as_array().cloned().unwrap_or_default();
    if providers.is_empty() {
        println!("providers (none published yet)");
    }
    for p in providers {
        let supers: Vec<&str> = p["home_supers"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        println!(
            "provider  {} via {}",
            s(&p["node"]),
            if supers.is_empty() {
                "-".to_string()
            } else {
                supers.join(", ")
            }
        );
    }
    Ok(())
}
