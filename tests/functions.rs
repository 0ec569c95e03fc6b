//! Functions end to end with real processes: the example functions (Rust
//! std + serde_json, C with wasi-libc, WAT), hostile modules hitting each
//! limit while the node keeps serving, Busy at capacity, the `x-orb-fuel`
//! header, and compiled artifacts reused after a client restart.
//!
//! Ports come from the OS (`free_tcp`/`free_udp`), so these tests run in
//! parallel with each other and with `tests/e2e.rs`. Waits are generous and
//! no assertion depends on how long anything took.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use common::*;

/// Generous bound for anything to settle on a loaded machine.
const SETTLE: Duration = Duration::from_secs(60);

/// A loop that never ends: only fuel or the wall clock stops it.
const SPIN_WAT: &str = r#"(module (memory (export "memory") 1)
  (func (export "_start") (loop $l (br $l))))"#;

/// Grows memory 1 MiB at a time until refused, then traps.
const MEMORY_BOMB_WAT: &str = r#"(module (memory (export "memory") 1)
  (func (export "_start")
    (loop $l
      (if (i32.eq (memory.grow (i32.const 16)) (i32.const -1)) (then unreachable))
      (br $l))))"#;

/// Writes to stdout forever.
const WRITE_FOREVER_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "all work and no play ")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 100))
    (i32.store (i32.const 4) (i32.const 21))
    (loop $l
      (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
      (br $l))))"#;

/// Recurses until the stack runs out.
const RECURSE_WAT: &str = r#"(module (memory (export "memory") 1)
  (func $f (export "_start") (call $f)))"#;

/// Traps on its first instruction.
const TRAP_WAT: &str =
    r#"(module (memory (export "memory") 1) (func (export "_start") unreachable))"#;

/// Imports a host function no node provides.
const UNKNOWN_IMPORT_WAT: &str = r#"(module
  (import "env" "launch_missiles" (func $launch (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (call $launch (i32.const 1))))"#;

/// One super and one client daemon with `capacity`, the client registered.
struct Net {
    _super: Proc,
    client: Proc,
    gw: SocketAddr,
    api: SocketAddr,
    peer: String,
}

async fn registered_clients(gw: SocketAddr) -> Result<usize> {
    let v = get_json(&format!("http://{gw}/api/nodes")).await?;
    Ok(v.as_array().map(|a| a.len()).unwrap_or(0))
}

async fn network(dir: &Path, capacity: usize) -> Result<Net> {
    let (quic, gw) = (free_udp(), free_tcp());
    let sup = start_super(&dir.join("super"), quic, gw, &[])?;
    let peer = format!("{}@{quic}", sup.field("id"));
    let api = free_tcp();
    let client = start_client(
        &dir.join("client"),
        api,
        std::slice::from_ref(&peer),
        capacity,
    )?;
    wait_for("the client registered", SETTLE, || async {
        Ok((registered_clients(gw).await? == 1).then_some(()))
    })
    .await?;
    Ok(Net {
        _super: sup,
        client,
        gw,
        api,
        peer,
    })
}

/// `orb-client deploy FILE --name NAME --replicas 1 EXTRA...`, which must succeed.
fn deploy(api: SocketAddr, file: &Path, name: &str, extra: &[&str]) -> Result<()> {
    let mut args = vec!["--replicas", "1"];
    args.extend_from_slice(extra);
    common::deploy(api, file, name, &args).map(drop)
}

/// POST to the gateway: (status, x-orb-fuel, body).
async fn call(
    gw: SocketAddr,
    name: &str,
    body: &'static str,
) -> Result<(u16, Option<u64>, String)> {
    let r = http()
        .post(format!("http://{gw}/fn/{name}"))
        .body(body)
        .send()
        .await?;
    let status = r.status().as_u16();
    let fuel = fuel_header(&r);
    Ok((status, fuel, r.text().await?))
}

fn fuel_header(r: &reqwest::Response) -> Option<u64> {
    r.headers()
        .get("x-orb-fuel")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// A sample of a Prometheus text exposition.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

async fn client_metric(api: SocketAddr, name: &str) -> Result<f64> {
    let text = http()
        .get(format!("http://{api}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    metric(&text, name).with_context(|| format!("no {name} in the client's metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_functions_run_through_the_gateway() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let net = network(tmp.path(), 4).await?;

    // WAT: the smallest function, through the gateway and the local API.
    deploy(net.api, &hello_wasm(tmp.path()), "hello", &[])?;
    let (status, fuel, text) = call(net.gw, "hello", "wat").await?;
    assert_eq!((status, text.as_str()), (200, "hello, wat"));
    assert!(fuel.is_some_and(|f| f > 0), "x-orb-fuel {fuel:?}");
    let r = http()
        .post(format!("http://{}/api/invoke/hello", net.api))
        .bearer_auth(api_token(net.api))
        .body("api")
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let fuel = fuel_header(&r);
    assert!(fuel.is_some_and(|f| f > 0), "x-orb-fuel {fuel:?}");
    assert!(r.headers().contains_key("x-orb-node"));
    assert_eq!(r.text().await?, "hello, api");

    // Rust with std and serde_json, fixed arguments and environment.
    if let Some(wasm) = rust_function("rust-json") {
        deploy(
            net.api,
            &wasm,
            "json",
            &[
                "--arg",
                "first",
                "--arg",
                "second arg",
                "--env",
                "GREETING=hi",
            ],
        )?;
        let r = http()
            .post(format!("http://{}/fn/json?lang=en&n=2", net.gw))
            .header("x-client", "functions-test")
            .header("content-type", "application/json")
            .body(r#"{"name": "ada", "values": [1, 2, 3, 6]}"#)
            .send()
            .await?;
        assert_eq!(r.status(), 200);
        let fuel = fuel_header(&r);
        assert!(fuel.is_some_and(|f| f > 0), "x-orb-fuel {fuel:?}");
        let rid = r
            .headers()
            .get("x-orb-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let v: serde_json::Value = serde_json::from_str(&r.text().await?)?;
        assert_eq!(v["greeting"], "hi, ada", "{v}");
        assert_eq!(v["count"], 4, "{v}");
        assert_eq!(v["sum"], 12.0, "{v}");
        assert_eq!(v["mean"], 3.0, "{v}");
        assert_eq!(v["function"], "json", "{v}");
        assert_eq!(v["method"], "POST", "{v}");
        assert_eq!(v["query"], "lang=en&n=2", "{v}");
        assert_eq!(v["args"], serde_json::json!(["first", "second arg"]), "{v}");
        assert_eq!(v["headers"]["HTTP_X_CLIENT"], "functions-test", "{v}");
        let seen = v["request_id"].as_str().unwrap_or_default();
        assert!(!seen.is_empty(), "no request id: {v}");
        assert_eq!(seen, rid, "the function saw another request id");

        // Bad input: the function exits 2 and says why; a 500 with stderr.
        let (status, _, text) = call(net.gw, "json", "not json").await?;
        assert_eq!(status, 500);
        assert!(
            text.contains("exit code 2") && text.contains("expected JSON"),
            "{text}"
        );
    }

    // C built by clang against wasi-libc.
    if let Some(wasm) = c_function("c-hello") {
        deploy(net.api, &wasm, "c-hello", &[])?;
        let r = http()
            .post(format!("http://{}/fn/c-hello?from=c", net.gw))
            .body("world")
            .send()
            .await?;
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await?, "hello from C, world (query: from=c)\n");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_modules_fail_alone_while_the_node_keeps_serving() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let net = network(dir, 16).await?;
    deploy(net.api, &hello_wasm(dir), "hello", &[])?;

    // Each hostile module with the limit it should hit and a word the
    // gateway's 500 must contain.
    let spin = wat_file(dir, "spin.wasm", SPIN_WAT);
    deploy(net.api, &spin, "spin-fuel", &["--fuel", "1000000"])?;
    deploy(
        net.api,
        &spin,
        "spin-clock",
        &["--fuel", "100000000000", "--timeout-ms", "1500"],
    )?;
    deploy(
        net.api,
        &wat_file(dir, "bomb.wasm", MEMORY_BOMB_WAT),
        "bomb",
        &["--memory-mb", "16"],
    )?;
    deploy(
        net.api,
        &wat_file(dir, "spam.wasm", WRITE_FOREVER_WAT),
        "spam",
        &["--max-output-bytes", "65536"],
    )?;
    deploy(
        net.api,
        &wat_file(dir, "recurse.wasm", RECURSE_WAT),
        "recurse",
        &[],
    )?;
    deploy(net.api, &wat_file(dir, "trap.wasm", TRAP_WAT), "trap", &[])?;

    // An import nobody provides is refused at deploy, and nothing is stored.
    let unknown = wat_file(dir, "unknown.wasm", UNKNOWN_IMPORT_WAT);
    let out = client_cmd(
        net.api,
        &[
            "deploy",
            unknown.to_str().context("utf-8 path")?,
            "--name",
            "missiles",
        ],
        None,
    )?;
    assert!(
        !out.status.success(),
        "a module with an unknown import was accepted"
    );
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        err.contains("env.launch_missiles") && err.contains("does not provide"),
        "unclear refusal: {err}"
    );
    let fns = get_json(&format!("http://{}/api/functions", net.gw)).await?;
    assert!(
        !fns.to_string().contains("missiles"),
        "a refused deploy stored something: {fns}"
    );

    // Fire them all at once; hello keeps answering while they run.
    let cases: [(&str, &[&str]); 6] = [
        ("spin-fuel", &["fuel limit exceeded"]),
        ("spin-clock", &["timeout limit exceeded"]),
        ("bomb", &["memory limit exceeded"]),
        ("spam", &["output limit exceeded"]),
        ("recurse", &["trapped", "stack"]),
        ("trap", &["trapped", "unreachable"]),
    ];
    let gw = net.gw;
    let hostile: Vec<_> = cases
        .iter()
        .map(|(name, _)| tokio::spawn(call(gw, name, "")))
        .collect();
    let mut hello_calls = 0;
    while hello_calls < 3 || hostile.iter().any(|h| !h.is_finished()) {
        let (status, _, text) = call(gw, "hello", "still here").await?;
        assert_eq!(
            (status, text.as_str()),
            (200, "hello, still here"),
            "hello failed while hostile calls ran"
        );
        hello_calls += 1;
    }
    eprintln!("{hello_calls} hello calls succeeded while the hostile ones ran");
    for (handle, (name, words)) in hostile.into_iter().zip(cases) {
        let (status, fuel, text) = handle.await??;
        assert_eq!(status, 500, "{name}: {text}");
        for w in words {
            assert!(text.contains(w), "{name}: expected {w:?} in {text:?}");
        }
        assert!(fuel.is_some(), "{name}: no x-orb-fuel header");
        if name == "spin-fuel" {
            assert_eq!(fuel, Some(1_000_000), "spin-fuel used all its fuel");
        }
    }

    // And afterwards, too.
    let (status, _, text) = call(gw, "hello", "after").await?;
    assert_eq!((status, text.as_str()), (200, "hello, after"));
    let status = get_json(&format!("http://{}/api/status", net.api)).await?;
    assert_eq!(status["in_flight"], 0, "{status}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_at_capacity_answers_busy_at_once() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let net = network(dir, 1).await?;
    deploy(net.api, &hello_wasm(dir), "hello", &[])?;
    // Long enough for the test to see it in flight even on a loaded machine.
    deploy(
        net.api,
        &wat_file(dir, "spin.wasm", SPIN_WAT),
        "spin",
        &["--fuel", "100000000000", "--timeout-ms", "4000"],
    )?;

    let gw = net.gw;
    let long = tokio::spawn(call(gw, "spin", ""));
    wait_for("the long call in flight", SETTLE, || async {
        let s = get_json(&format!("http://{}/api/status", net.api)).await?;
        Ok((s["in_flight"] == 1).then_some(()))
    })
    .await?;
    let (status, _, text) = call(gw, "hello", "x").await?;
    assert_eq!(
        status, 429,
        "expected Busy with the only slot taken: {text}"
    );
    assert!(text.contains("busy"), "{text}");
    assert!(
        !long.is_finished(),
        "the long call ended before the busy check; the 429 above proves nothing"
    );

    let (status, _, text) = long.await??;
    assert_eq!(status, 500);
    assert!(text.contains("timeout limit exceeded"), "{text}");
    let text = wait_for("hello callable again", SETTLE, || async {
        let (status, _, text) = call(gw, "hello", "again").await?;
        Ok((status == 200).then_some(text))
    })
    .await?;
    assert_eq!(text, "hello, again");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_client_loads_its_compiled_artifact() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let mut net = network(dir, 2).await?;
    deploy(net.api, &hello_wasm(dir), "hello", &[])?;
    let (status, _, text) = call(net.gw, "hello", "first").await?;
    assert_eq!((status, text.as_str()), (200, "hello, first"));
    assert_eq!(
        client_metric(net.api, "orb_runtime_compiles_total").await?,
        1.0
    );
    assert_eq!(
        client_metric(net.api, "orb_runtime_artifacts_loaded_total").await?,
        0.0
    );

    // kill -9 and start again on the same data directory.
    net.client.kill9();
    let api = free_tcp();
    net.client = start_client(&dir.join("client"), api, std::slice::from_ref(&net.peer), 2)?;
    let text = wait_for("hello callable after the restart", SETTLE, || async {
        let (status, _, text) = call(net.gw, "hello", "again").await?;
        Ok((status == 200).then_some(text))
    })
    .await?;
    assert_eq!(text, "hello, again");
    // At least one load (a placement racing the first call may load twice).
    let loaded = client_metric(api, "orb_runtime_artifacts_loaded_total").await?;
    assert!(
        loaded >= 1.0,
        "the restarted client did not load the stored artifact"
    );
    assert_eq!(
        client_metric(api, "orb_runtime_compiles_total").await?,
        0.0,
        "the restarted client recompiled"
    );
    Ok(())
}
