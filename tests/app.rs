//! The client application end to end, on one network of two supers (B
//! joined through A) and two clients (the owner behind A, another node
//! behind B), all real processes:
//!
//! * versions: deploy v1, deploy v2, both gateways serve v2; `versions`
//!   lists both; `rollback` makes v1 current on both gateways and no
//!   replica of v2 is left;
//! * logs: the owner's `logs` shows the stderr lines and call summaries of
//!   the replicas under both supers, with an oversized line cut;
//! * bad input: another node's `remove`, `rollback` and `logs`, a version
//!   that does not exist, a name that does not exist: clear errors, nothing
//!   changed, the function keeps serving;
//! * the local API: a cross-origin deploy, a foreign `Host` (DNS rebinding)
//!   and a deploy without the token are refused and deploy nothing;
//! * remove: both gateways answer 404, and the owner deploys the name again.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A function that answers `tag` and writes a log line and a 5,001-byte
/// line to stderr.
fn tagged_wat(dir: &Path, tag: &str) -> std::path::PathBuf {
    let long = "x".repeat(5000);
    let line = format!("log-line-{tag}\\n");
    let text = format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "{tag}")
  (data (i32.const 200) "{line}")
  (data (i32.const 1000) "{long}\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 100))
    (i32.store (i32.const 4) (i32.const {tag_len}))
    (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    (i32.store (i32.const 0) (i32.const 200))
    (i32.store (i32.const 4) (i32.const {line_len}))
    (drop (call $w (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
    (i32.store (i32.const 0) (i32.const 1000))
    (i32.store (i32.const 4) (i32.const 5001))
    (drop (call $w (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))))"#,
        tag_len = tag.len(),
        line_len = tag.len() + 10,
    );
    wat_file(dir, &format!("{tag}.wasm"), &text)
}

/// Status and body of a gateway call.
async fn call(gw: SocketAddr, name: &str) -> Result<(u16, String)> {
    let r = http()
        .post(format!("http://{gw}/fn/{name}"))
        .body("x")
        .send()
        .await?;
    Ok((r.status().as_u16(), r.text().await?))
}

/// Wait until every gateway answers `name` with `want` (200 and that body),
/// or with 404 when `want` is `None`.
async fn wait_served(gws: &[SocketAddr], name: &str, want: Option<&str>) -> Result<()> {
    for &gw in gws {
        wait_for(
            &format!("{gw} to answer {name} with {want:?}"),
            Duration::from_secs(30),
            || async move {
                let (status, body) = call(gw, name).await?;
                let ok = match want {
                    Some(w) => status == 200 && body == w,
                    None => status == 404,
                };
                Ok(ok.then_some(()))
            },
        )
        .await?;
    }
    Ok(())
}

/// `orb-client ARGS` against `api`: its stdout, or its stderr as the error.
fn cli(api: SocketAddr, args: &[&str]) -> Result<String> {
    let out = client_cmd(api, args, None)?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `orb-client ARGS` against `api` that must fail; its stderr.
fn cli_fails(api: SocketAddr, args: &[&str]) -> Result<String> {
    let out = client_cmd(api, args, None)?;
    ensure!(
        !out.status.success(),
        "orb-client {args:?} should fail, printed {}",
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The module hash a client hosts for `name`, per its status.
async fn hosted_hash(api: SocketAddr, name: &str) -> Result<Option<String>> {
    let st = get_json(&format!("http://{api}/api/status")).await?;
    Ok(st["hosted"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|h| h["name"] == name)
        .and_then(|h| h["hash"].as_str().map(str::to_string)))
}

/// One raw HTTP/1.1 request; the status code of the answer.
async fn raw_status(addr: SocketAddr, request: String) -> Result<u16> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(request.as_bytes()).await?;
    let mut buf = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await??;
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no status in {head:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_rollback_logs_and_remove_across_two_supers() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (quic_a, gw_a) = (free_udp(), free_tcp());
    let (quic_b, gw_b) = (free_udp(), free_tcp());
    let sup_a = start_super(&tmp.path().join("sa"), quic_a, gw_a, &[])?;
    let peer_a = format!("{}@{quic_a}", sup_a.field("id"));
    let sup_b = start_super(
        &tmp.path().join("sb"),
        quic_b,
        gw_b,
        &["--bootstrap", &peer_a],
    )?;
    let peer_b = format!("{}@{quic_b}", sup_b.field("id"));
    let (owner, other) = (free_tcp(), free_tcp());
    let c1 = start_client(
        &tmp.path().join("owner"),
        owner,
        std::slice::from_ref(&peer_a),
        2,
    )?;
    let c2 = start_client(
        &tmp.path().join("other"),
        other,
        std::slice::from_ref(&peer_b),
        2,
    )?;
    let (id1, id2) = (c1.field("id"), c2.field("id"));
    wait_for(
        "A and B know each other",
        Duration::from_secs(30),
        || async {
            let t = get_json(&format!("http://{gw_b}/api/dht")).await?;
            Ok(t["routing_table"]
                .to_string()
                .contains(&peer_a)
                .then_some(()))
        },
    )
    .await?;
    for (gw, id) in [(gw_a, &id1), (gw_b, &id2)] {
        wait_for(
            "client registered",
            Duration::from_secs(30),
            || async move {
                let v = get_json(&format!("http://{gw}/api/nodes")).await?;
                Ok(v.to_string().contains(id.as_str()).then_some(()))
            },
        )
        .await?;
    }
    let gws = [gw_a, gw_b];
    let (v1, v2) = (tagged_wat(tmp.path(), "v1"), tagged_wat(tmp.path(), "v2"));

    // Two versions, one replica behind each super; both gateways serve v2.
    let d1: Value = serde_json::from_str(&deploy(owner, &v1, "app", &["--json"])?)?;
    assert_eq!(d1["version"], 1, "{d1}");
    wait_served(&gws, "app", Some("v1")).await?;
    let d2: Value = serde_json::from_str(&deploy(owner, &v2, "app", &["--json"])?)?;
    assert_eq!(d2["version"], 2, "{d2}");
    assert_eq!(d2["placed_on"].as_array().map(Vec::len), Some(2), "{d2}");
    wait_served(&gws, "app", Some("v2")).await?;
    // Once the v2 name record is out, each super retires v1's replicas: a
    // client then holds one module for the name in its super's eyes too.
    for gw in gws {
        wait_for("v1 retired", Duration::from_secs(30), || async move {
            let nodes = get_json(&format!("http://{gw}/api/nodes")).await?;
            Ok((nodes[0]["hosted"] == 1).then_some(()))
        })
        .await?;
    }

    let versions: Value = serde_json::from_str(&cli(owner, &["versions", "app", "--json"])?)?;
    assert_eq!(versions["current"], 2, "{versions}");
    let listed: Vec<u64> = versions["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["version"].as_u64())
        .collect();
    assert_eq!(listed, vec![1, 2], "{versions}");
    let text = cli(owner, &["versions", "app"])?;
    assert!(text.contains("current"), "{text}");

    // Rollback: v1 again, as version 3, on both gateways; no v2 replica left.
    let rb: Value = serde_json::from_str(&cli(owner, &["rollback", "app", "--json"])?)?;
    assert_eq!(
        (rb["version"].as_u64(), &rb["hash"]),
        (Some(3), &d1["hash"]),
        "{rb}"
    );
    wait_served(&gws, "app", Some("v1")).await?;
    for api in [owner, other] {
        let want = d1["hash"].as_str().map(str::to_string);
        wait_for("only v1 hosted", Duration::from_secs(30), || {
            let want = want.clone();
            async move { Ok((hosted_hash(api, "app").await? == want).then_some(())) }
        })
        .await?;
    }
    for _ in 0..5 {
        for gw in gws {
            assert_eq!(call(gw, "app").await?, (200, "v1".to_string()));
        }
    }

    // Logs: lines and call summaries from the replicas under both supers.
    let out = cli(owner, &["logs", "app", "--json", "--since", "10m"])?;
    let entries: Vec<Value> = out
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let lines: Vec<&str> = entries.iter().filter_map(|e| e["line"].as_str()).collect();
    assert!(lines.contains(&"log-line-v1"), "{out}");
    let cut = lines
        .iter()
        .find(|l| l.starts_with("xxxx"))
        .context("the long line")?;
    assert!(
        cut.len() <= 1024 && cut.ends_with("[cut: 5000 bytes]"),
        "{cut}"
    );
    assert!(
        entries
            .iter()
            .any(|e| e["kind"] == "call" && e["status"] == "ok"),
        "no call summary: {out}"
    );
    let mut nodes: Vec<&str> = entries.iter().filter_map(|e| e["node"].as_str()).collect();
    nodes.sort();
    nodes.dedup();
    assert_eq!(nodes.len(), 2, "entries from both replicas: {nodes:?}");
    let text = cli(owner, &["logs", "app"])?;
    assert!(text.contains("stderr: log-line-v1"), "{text}");

    // Bad input: clear errors, nothing changed.
    for args in [
        &["remove", "app"][..],
        &["rollback", "app"],
        &["logs", "app"],
        &["versions", "app"],
    ] {
        let err = cli_fails(other, args)?;
        assert!(
            err.contains("belongs to node") && err.contains(&id1),
            "{args:?}: {err}"
        );
    }
    let err = cli_fails(owner, &["rollback", "app", "--to", "99"])?;
    assert!(err.contains("version 99 is not kept"), "{err}");
    let err = cli_fails(owner, &["remove", "nosuch"])?;
    assert!(err.contains("no function named"), "{err}");
    wait_served(&gws, "app", Some("v1")).await?;
    let versions: Value = serde_json::from_str(&cli(owner, &["versions", "app", "--json"])?)?;
    assert_eq!(versions["current"], 3, "{versions}");

    // The local API: only its owner drives it.
    let wasm = std::fs::read(&v2)?;
    let r = http()
        .post(format!("http://{owner}/api/deploy?name=evil"))
        .header("origin", "https://evil.example")
        .header("sec-fetch-site", "cross-site")
        .header("content-type", "text/plain")
        .bearer_auth(api_token(owner))
        .body(wasm.clone())
        .send()
        .await?;
    assert_eq!(r.status(), 403, "cross-origin deploy: {}", r.text().await?);
    let r = http()
        .post(format!("http://{owner}/api/deploy?name=evil"))
        .header("content-type", "text/plain")
        .body(wasm.clone())
        .send()
        .await?;
    assert_eq!(r.status(), 401, "deploy without the token");
    let token = api_token(owner);
    for req in [
        format!(
            "GET /api/status HTTP/1.1\r\nHost: evil.example:{}\r\n\r\n",
            owner.port()
        ),
        format!(
            "GET / HTTP/1.1\r\nHost: evil.example:{}\r\n\r\n",
            owner.port()
        ),
        format!(
            "POST /api/deploy?name=evil HTTP/1.1\r\nHost: evil.example:{}\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\n\r\n",
            owner.port()
        ),
    ] {
        assert_eq!(raw_status(owner, req.clone()).await?, 403, "{req}");
    }
    let r = http()
        .get(format!("http://{owner}/api/resolve/evil"))
        .send()
        .await?;
    assert_eq!(r.status(), 404, "nothing was deployed");
    // The dashboard page carries the token to its own scripts only.
    let page = http().get(format!("http://{owner}/")).send().await?;
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    assert!(page.text().await?.contains(&token));

    // Remove: both gateways answer 404; the name stays the owner's.
    let removed: Value = serde_json::from_str(&cli(owner, &["remove", "app", "--json"])?)?;
    assert_eq!(removed["version"], 4, "{removed}");
    wait_served(&gws, "app", None).await?;
    for api in [owner, other] {
        wait_for("replicas gone", Duration::from_secs(30), || async move {
            Ok(hosted_hash(api, "app").await?.is_none().then_some(()))
        })
        .await?;
    }
    let err = cli_fails(other, &["resolve", "app"])?;
    assert!(err.contains("removed"), "{err}");
    let err = deploy(other, &v2, "app", &[]).expect_err("another node cannot take it");
    assert!(err.to_string().contains("belongs to"), "{err}");
    let again: Value = serde_json::from_str(&deploy(owner, &v2, "app", &["--json"])?)?;
    assert_eq!(again["version"], 5, "{again}");
    wait_served(&gws, "app", Some("v2")).await?;
    Ok(())
}
