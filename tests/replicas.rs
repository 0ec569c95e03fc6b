//! Replicated functions with real processes: spreading concurrent calls,
//! failover when a replica is killed, 429 when every replica is busy,
//! autoscaling up under load and down when idle, and a ledger that matches
//! the calls served.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use common::*;

/// Burns CPU for a while (a counted loop of `iterations`), then writes
/// "done". At about 2e9 metering points/s, 150M iterations take ~0.3 s of a
/// free core.
fn slow_wat(iterations: u32) -> String {
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "done")
  (func (export "_start") (local $i i32)
    (loop $l
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const {iterations}))))
    (i32.store (i32.const 0) (i32.const 16)) (i32.store (i32.const 4) (i32.const 4))
    (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#
    )
}

/// Short calls, for load: many of them pile up in flight.
fn slow_short() -> String {
    slow_wat(150_000_000)
}

/// Calls that must overlap with others whatever the machine is doing: ~3 s
/// of a free core. A 0.3 s call could start and finish between two polls of
/// a busy test machine, which made the overlap these tests need a race.
fn slow_long() -> String {
    slow_wat(1_500_000_000)
}

/// Deploy flags for `slow_long`: room for it on a loaded machine.
const LONG_LIMITS: [&str; 4] = ["--timeout-ms", "60000", "--fuel", "100000000000"];

struct Net {
    _tmp: tempfile::TempDir,
    _sup: Proc,
    gw: SocketAddr,
    clients: Vec<(Proc, SocketAddr)>,
}

async fn network(n: usize, capacity: usize, super_args: &[&str]) -> Result<Net> {
    let tmp = tempfile::tempdir()?;
    let (quic, gw) = (free_udp(), free_tcp());
    let sup = start_super(&tmp.path().join("super"), quic, gw, super_args)?;
    let peer = format!("{}@{quic}", sup.field("id"));
    let mut clients = Vec::new();
    for i in 0..n {
        let api = free_tcp();
        clients.push((
            start_client(
                &tmp.path().join(format!("c{i}")),
                api,
                std::slice::from_ref(&peer),
                capacity,
            )?,
            api,
        ));
    }
    wait_for("clients registered", Duration::from_secs(30), || async {
        let v = get_json(&format!("http://{gw}/api/nodes")).await?;
        Ok((v.as_array().map_or(0, |a| a.len()) == n).then_some(()))
    })
    .await?;
    Ok(Net {
        _tmp: tmp,
        _sup: sup,
        gw,
        clients,
    })
}

fn deploy(
    net: &Net,
    file: &std::path::Path,
    name: &str,
    extra: &[&str],
) -> Result<serde_json::Value> {
    let mut args = vec!["--json"];
    args.extend_from_slice(extra);
    let out = common::deploy(net.clients[0].1, file, name, &args)?;
    Ok(serde_json::from_str(&out)?)
}

/// POST to the gateway: (status, x-orb-node, body).
async fn call(gw: SocketAddr, name: &str, body: &str) -> Result<(u16, String, String)> {
    let r = http()
        .post(format!("http://{gw}/fn/{name}"))
        .body(body.to_string())
        .send()
        .await?;
    let status = r.status().as_u16();
    let node = node_header(&r);
    Ok((status, node, r.text().await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_calls_spread_over_capacity_one_replicas() -> Result<()> {
    let net = network(3, 1, &[]).await?;
    let slow = wat_file(net._tmp.path(), "slow.wasm", &slow_long());
    let d = deploy(
        &net,
        &slow,
        "slow",
        &[&["--replicas", "3"][..], &LONG_LIMITS].concat(),
    )?;
    assert_eq!(d["placed_on"].as_array().map_or(0, |a| a.len()), 3, "{d}");
    let calls = (0..3).map(|_| call(net.gw, "slow", ""));
    let results = futures_join(calls).await;
    let mut nodes = HashSet::new();
    for r in results {
        let (status, node, body) = r?;
        assert_eq!((status, body.as_str()), (200, "done"));
        nodes.insert(node);
    }
    assert_eq!(
        nodes.len(),
        3,
        "three concurrent calls on three capacity-1 replicas: {nodes:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn all_replicas_busy_is_429_then_calls_succeed_again() -> Result<()> {
    let net = network(1, 1, &[]).await?;
    let slow = wat_file(net._tmp.path(), "slow.wasm", &slow_long());
    deploy(
        &net,
        &slow,
        "slow",
        &[&["--replicas", "1"][..], &LONG_LIMITS].concat(),
    )?;
    let gw = net.gw;
    let long = tokio::spawn(async move { call(gw, "slow", "").await });
    // Wait until the long call holds the only slot.
    // Generous: with the other replica tests spinning wasm on the same two
    // cores, the call can take a while to reach the client.
    let long_done = || long.is_finished();
    wait_for(
        "the long call in flight",
        Duration::from_secs(60),
        || async {
            if long_done() {
                bail!("the long call ended before it was seen in flight");
            }
            let v = get_json(&format!("http://{gw}/api/functions/slow")).await?;
            Ok((v["replicas"][0]["in_flight"].as_u64() == Some(1)).then_some(()))
        },
    )
    .await?;
    let (status, _, body) = call(gw, "slow", "").await?;
    assert_eq!(status, 429, "every replica busy: {body}");
    let (status, _, _) = long.await??;
    assert_eq!(status, 200);
    let (status, _, body) = call(gw, "slow", "").await?;
    assert_eq!(
        (status, body.as_str()),
        (200, "done"),
        "calls succeed once a replica is free"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_a_replica_mid_stream_fails_no_call() -> Result<()> {
    let mut net = network(3, 4, &[]).await?;
    let wasm = hello_wasm(net._tmp.path());
    deploy(&net, &wasm, "hello", &["--replicas", "3"])?;
    let gw = net.gw;
    let stop = Instant::now() + Duration::from_secs(8);
    let workers: Vec<_> = (0..4)
        .map(|w| {
            tokio::spawn(async move {
                let mut done = Vec::new();
                let mut failed = Vec::new();
                while Instant::now() < stop {
                    let t = Instant::now();
                    match call(gw, "hello", &format!("w{w}")).await {
                        Ok((200, _, body)) if body == format!("hello, w{w}") => {
                            done.push(t.elapsed())
                        }
                        other => failed.push(format!("{other:?}")),
                    }
                }
                (done, failed)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The victim is a replica that is not the deploying client.
    net.clients[1].0.kill9();
    let mut latencies = Vec::new();
    for w in workers {
        let (done, failed) = w.await?;
        assert!(
            failed.is_empty(),
            "failed calls after kill -9 of a replica: {failed:?}"
        );
        latencies.extend(done);
    }
    assert!(!latencies.is_empty());
    latencies.sort();
    let p50 = latencies[latencies.len() / 2];
    let max = latencies[latencies.len() - 1];
    // Calls that were on the killed replica wait for its connection to be
    // declared lost, then fail over: the maximum is the failover latency.
    eprintln!(
        "{} calls, none failed, while a replica was killed; median {p50:?}, slowest (failed over) {max:?}",
        latencies.len()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sustained_load_adds_a_replica_and_idleness_removes_it() -> Result<()> {
    let net = network(
        2,
        1,
        &[
            "--scale-target",
            "1",
            "--scale-up-secs",
            "2",
            "--scale-idle-secs",
            "4",
        ],
    )
    .await?;
    let slow = wat_file(net._tmp.path(), "slow.wasm", &slow_short());
    deploy(
        &net,
        &slow,
        "slow",
        &["--replicas", "1", "--max-replicas", "2"],
    )?;
    let gw = net.gw;
    let started = Instant::now();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..3)
        .map(|_| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut served_by = HashMap::<String, Instant>::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok((200, node, _)) = call(gw, "slow", "").await {
                        served_by.entry(node).or_insert_with(Instant::now);
                    }
                }
                served_by
            })
        })
        .collect();
    let v = wait_for(
        "a second replica placed under load",
        Duration::from_secs(60),
        || async {
            let v = get_json(&format!("http://{gw}/api/functions/slow")).await?;
            Ok((v["replicas"].as_array().map_or(0, |a| a.len()) == 2).then_some(v))
        },
    )
    .await?;
    let decisions = v["scaling"].to_string();
    assert!(decisions.contains("scale-up"), "{decisions}");
    // Let both replicas serve a little, then stop the load.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut first_served: HashMap<String, Instant> = HashMap::new();
    for l in load {
        for (node, t) in l.await? {
            let e = first_served.entry(node).or_insert(t);
            *e = (*e).min(t);
        }
    }
    assert_eq!(
        first_served.len(),
        2,
        "both replicas served calls: {first_served:?}"
    );
    let second = first_served.values().max().copied().unwrap_or(started);
    eprintln!(
        "autoscaler reaction: sustained overload to a new replica serving in {:?}",
        second - started
    );
    let v = wait_for(
        "the added replica removed when idle",
        Duration::from_secs(60),
        || async {
            let v = get_json(&format!("http://{gw}/api/functions/slow")).await?;
            Ok((v["replicas"].as_array().map_or(0, |a| a.len()) == 1).then_some(v))
        },
    )
    .await?;
    assert!(
        v["scaling"].to_string().contains("scale-down"),
        "{}",
        v["scaling"]
    );
    let (status, _, _) = call(gw, "slow", "").await?;
    assert_eq!(status, 200, "still served after scaling down");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ledger_totals_match_the_calls_served() -> Result<()> {
    let net = network(2, 2, &[]).await?;
    let wasm = hello_wasm(net._tmp.path());
    deploy(&net, &wasm, "hello", &["--replicas", "2"])?;
    let mut served: HashMap<String, u64> = HashMap::new();
    for i in 0..20 {
        let (status, node, _) = call(net.gw, "hello", &format!("{i}")).await?;
        assert_eq!(status, 200);
        *served.entry(node).or_default() += 1;
    }
    let ledger = wait_for("ledger holds 20 calls", Duration::from_secs(10), || async {
        let v = get_json(&format!("http://{}/api/ledger", net.gw)).await?;
        let total: u64 = v
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["calls_served"].as_u64())
            .sum();
        Ok((total == 20).then_some(v))
    })
    .await?;
    for (node, n) in &served {
        let entry = ledger
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["node"] == node.as_str());
        let got = entry.and_then(|e| e["calls_served"].as_u64());
        assert_eq!(got, Some(*n), "node {node}: ledger {ledger}");
        assert!(entry.and_then(|e| e["earned"].as_u64()).unwrap_or(0) > 0);
    }
    // The gateway made the calls: spent and calls_made sit with the super.
    let made: u64 = ledger
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["calls_made"].as_u64())
        .sum();
    assert_eq!(made, 20);
    // A replica sees its own credits through its daemon.
    let busiest = served
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(id, _)| id.clone())
        .unwrap_or_default();
    let api = net
        .clients
        .iter()
        .find(|(p, _)| p.field("id") == busiest)
        .map(|(_, a)| *a);
    if let Some(api) = api {
        let out = client_cmd(api, &["status", "--json"], None)?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        assert_eq!(
            v["credits"]["calls_served"].as_u64(),
            served.get(&busiest).copied(),
            "{v}"
        );
    }
    Ok(())
}

/// Await several futures concurrently (no extra dependency for join_all).
async fn futures_join<F, T>(futs: impl Iterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}
