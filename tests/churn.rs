//! Churn (issue 8, item 3): ten supers and ten clients, each client with two
//! home supers; five replicated functions under continuous calls while three
//! supers at a time are killed with SIGKILL and restarted on the same data
//! directory and ports. At least 99% of the calls must succeed, and at the
//! end every function must be callable through every super's gateway and
//! resolvable from every super's DHT view.
//!
//! What the success ratio counts, exactly:
//! * every call the load generators make: through super gateways
//!   (`POST /fn/NAME`) and through clients' local API
//!   (`POST /api/invoke/NAME`, which goes node to node or through a super);
//! * a call succeeds when it answers 200 with the function's exact output;
//!   anything else (any status, a transport error, a wrong body) is a
//!   failure, 429 (busy) included;
//! * gateway calls go round robin over every super in the rotation. A
//!   gateway about to be killed is first taken out of it and drained (no
//!   call of ours in flight through it), the way a load balancer takes a
//!   host out before maintenance; it is put back once it serves every
//!   function again. A call that still reached a dead gateway would be
//!   labelled "gateway down", and it counts as a failure in the ratio.
//!   Probes that measure when a restarted super serves again are not load
//!   and are not counted;
//! * the load is closed loop (each caller waits for its answer before the
//!   next call), so a window in which calls are slow holds fewer calls: the
//!   ratio is per call made, and the latency figures show the slow ones.
//!
//! The victims hold state the network needs while they are down: each is a
//! home super of two clients that host replicas, some own functions
//! (deployed through them), and all hold DHT records. So the calls that
//! matter are the ones through the surviving gateways to replicas whose
//! other home super is dead.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use common::*;

const SUPERS: usize = 10;
const CLIENTS: usize = 10;
/// Functions deployed, each a distinct module (its own replicas).
const FUNCTIONS: usize = 5;
/// Supers killed together, and for how long, round after round. Client `i`
/// has homes `i` and `i + 5`, so no round takes both homes of any client.
/// The first round restarts the victims before QUIC's idle timeout (10 s):
/// their peers learn of the restart from stateless resets. The later ones
/// keep them down past it, so peers must notice the death on their own.
/// Nine of the ten supers die once; a seed too.
const ROUNDS: [([usize; 3], Duration); 3] = [
    ([3, 4, 5], Duration::from_secs(4)),
    ([6, 7, 8], Duration::from_secs(12)),
    ([1, 2, 9], Duration::from_secs(12)),
];
/// Concurrent callers through gateways, and through clients' `invoke`.
const GATEWAY_CALLERS: usize = 3;
const INVOKE_CALLERS: usize = 1;

fn homes_of(client: usize) -> [usize; 2] {
    [client % SUPERS, (client + SUPERS / 2) % SUPERS]
}

/// One super: fixed data dir and ports, so a restart is the same node.
#[derive(Clone)]
struct SuperSlot {
    dir: PathBuf,
    quic: SocketAddr,
    gw: SocketAddr,
    args: Vec<String>,
    id: String,
}

impl SuperSlot {
    fn peer(&self) -> String {
        format!("{}@{}", self.id, self.quic)
    }

    fn start(&self) -> Result<Proc> {
        let extra: Vec<&str> = self.args.iter().map(String::as_str).collect();
        start_super(&self.dir, self.quic, self.gw, &extra)
    }
}

/// The outcome of one call made by the load.
struct Call {
    via: &'static str,
    /// `None`: success; otherwise the failure kind.
    failure: Option<String>,
    detail: String,
    /// When the call started, since the test began.
    at: Duration,
    latency: Duration,
}

/// Gateways in the rotation, calls in flight through each, and which
/// processes are dead right now.
struct Rotation {
    live: Vec<AtomicBool>,
    in_flight: Vec<AtomicU32>,
    dead: Vec<AtomicBool>,
}

impl Rotation {
    /// Take a slot on gateway `i` if it is live. The slot is taken before
    /// `live` is read, so `drain` (which clears `live` and then waits for
    /// zero) never misses a call.
    fn enter(&self, i: usize) -> bool {
        self.in_flight[i].fetch_add(1, Ordering::SeqCst);
        if self.live[i].load(Ordering::SeqCst) {
            true
        } else {
            self.in_flight[i].fetch_sub(1, Ordering::SeqCst);
            false
        }
    }

    fn leave(&self, i: usize) {
        self.in_flight[i].fetch_sub(1, Ordering::SeqCst);
    }

    async fn drain(&self, i: usize) {
        self.live[i].store(false, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.in_flight[i].load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// An HTTP client without connection reuse: a pooled keep-alive connection
/// to a gateway that was killed and restarted would fail its next request
/// for a reason that is the test's, not the network's.
fn fresh_http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client")
}

/// POST `input` to `url`; `Ok(())` when the answer is 200 with the hello
/// function's exact output, else the failure kind and detail.
async fn post(
    client: &reqwest::Client,
    url: &str,
    input: &str,
    token: Option<&str>,
) -> std::result::Result<(), (String, String)> {
    let mut req = client.post(url).body(input.to_string());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.map_err(|e| {
        let kind = if e.is_timeout() {
            "timeout"
        } else if e.is_connect() {
            "connect"
        } else {
            "transport"
        };
        (kind.to_string(), format!("{e:#}"))
    })?;
    let status = r.status().as_u16();
    let body = r
        .text()
        .await
        .map_err(|e| ("transport".to_string(), format!("{e:#}")))?;
    if status != 200 {
        return Err((format!("http {status}"), body));
    }
    if body != format!("hello, {input}") {
        return Err(("wrong body".to_string(), body));
    }
    Ok(())
}

fn fn_name(f: usize) -> String {
    format!("churn{f}")
}

/// Start several processes at once (each waits for its ready line).
fn start_all<F>(n: usize, f: F) -> Result<Vec<Proc>>
where
    F: Fn(usize) -> Result<Proc> + Sync,
{
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = (0..n).map(|i| s.spawn(move || f(i))).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("start thread panicked"))?
            })
            .collect()
    })
}

/// The providers of `name` as `gw`'s DHT view has them: (node, home supers).
async fn providers(gw: SocketAddr, name: &str) -> Result<Vec<(String, Vec<String>)>> {
    let v = get_json(&format!("http://{gw}/api/resolve/{name}")).await?;
    Ok(v["providers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let homes = p["home_supers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|h| h.as_str().map(str::to_string))
                .collect();
            (p["node"].as_str().unwrap_or_default().to_string(), homes)
        })
        .collect())
}

async fn routing_table_len(gw: SocketAddr) -> Result<usize> {
    let v = get_json(&format!("http://{gw}/api/dht")).await?;
    Ok(v["routing_table"].as_array().map_or(0, |a| a.len()))
}

async fn client_count(gw: SocketAddr) -> Result<usize> {
    let v = get_json(&format!("http://{gw}/api/nodes")).await?;
    Ok(v.as_array().map_or(0, |a| a.len()))
}

/// Connected home supers of a client, from its local API.
async fn connected_supers(api: SocketAddr) -> Result<usize> {
    let v = get_json(&format!("http://{api}/api/status")).await?;
    Ok(v["supers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["connected"] == true)
        .count())
}

/// Wait until every function answers through gateway `gw`.
async fn wait_serving(gw: SocketAddr, timeout: Duration) -> Result<()> {
    let http = fresh_http();
    for f in 0..FUNCTIONS {
        let url = format!("http://{gw}/fn/{}", fn_name(f));
        wait_for(
            &format!("{} served at {gw}", fn_name(f)),
            timeout,
            || async {
                match post(&http, &url, "probe", None).await {
                    Ok(()) => Ok(Some(())),
                    Err((kind, detail)) => bail!("{kind}: {detail}"),
                }
            },
        )
        .await?;
    }
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_keeps_serving_while_supers_die_and_return() -> Result<()> {
    // Build once, before the clock starts and before processes are started
    // from several threads.
    let _ = bin("orb-super");
    let t0 = Instant::now();
    let tmp = tempfile::tempdir()?;

    // ---- ten supers: the seeds first, the rest bootstrap from both seeds.
    let mut supers: Vec<SuperSlot> = (0..SUPERS)
        .map(|i| SuperSlot {
            dir: tmp.path().join(format!("s{i}")),
            quic: free_udp(),
            gw: free_tcp(),
            args: Vec::new(),
            id: String::new(),
        })
        .collect();
    // The running processes, apart from the slots so that the slots can be
    // shared with the threads that start processes.
    let mut procs: Vec<Option<Proc>> = (0..SUPERS).map(|_| None).collect();
    // Super 0 starts the network, super 1 joins through it, and the others
    // join through both. A restart uses the same command line.
    let mut seeds: Vec<String> = Vec::new();
    for seed in 0..2 {
        supers[seed].args = seeds
            .iter()
            .flat_map(|p| ["--bootstrap".to_string(), p.clone()])
            .collect();
        let p = supers[seed].start()?;
        supers[seed].id = p.field("id");
        procs[seed] = Some(p);
        seeds.push(supers[seed].peer());
    }
    for slot in supers.iter_mut().skip(2) {
        slot.args = seeds
            .iter()
            .flat_map(|p| ["--bootstrap".to_string(), p.clone()])
            .collect();
    }
    let started = start_all(SUPERS - 2, |k| supers[k + 2].start())?;
    for (k, p) in started.into_iter().enumerate() {
        supers[k + 2].id = p.field("id");
        procs[k + 2] = Some(p);
    }
    let gws: Vec<SocketAddr> = supers.iter().map(|s| s.gw).collect();
    let peers: Vec<String> = supers.iter().map(SuperSlot::peer).collect();

    // ---- ten clients, two home supers each.
    let apis: Vec<SocketAddr> = (0..CLIENTS).map(|_| free_tcp()).collect();
    let clients = start_all(CLIENTS, |i| {
        let homes: Vec<String> = homes_of(i).iter().map(|&s| peers[s].clone()).collect();
        start_client(&tmp.path().join(format!("c{i}")), apis[i], &homes, 2)
    })?;
    for (i, &gw) in gws.iter().enumerate() {
        wait_for(
            &format!("super {i} knows every other super"),
            Duration::from_secs(60),
            || async { Ok((routing_table_len(gw).await? >= SUPERS - 1).then_some(())) },
        )
        .await?;
        wait_for(
            &format!("super {i} has its two clients"),
            Duration::from_secs(60),
            || async { Ok((client_count(gw).await? >= 2).then_some(())) },
        )
        .await?;
    }
    let t_up = t0.elapsed();

    // ---- five functions, deployed through five different clients (so
    // through different supers, some of which will be killed).
    let wasm = hello_wasm(tmp.path());
    let mut deployed = Vec::new();
    for (f, &api) in apis.iter().enumerate().take(FUNCTIONS) {
        let module = tagged_module(&wasm, &format!("churn-tag-{f}"))?;
        let replicas = if f % 2 == 0 { "3" } else { "2" };
        let name = fn_name(f);
        let out = client_cmd(
            api,
            &[
                "deploy",
                module.to_str().unwrap_or_default(),
                "--name",
                &name,
                "--replicas",
                replicas,
                "--json",
            ],
            None,
        )?;
        if !out.status.success() {
            bail!(
                "deploy {name}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        // Distinct nodes: a node listed twice is one replica.
        let placed = v["placed_on"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        assert_eq!(
            placed.to_string(),
            replicas,
            "{name}: every replica placed on a distinct node: {v}"
        );
        let hash = v["hash"].as_str().context("deploy hash")?.to_string();
        deployed.push((name, hash, placed));
    }
    for &gw in &gws {
        wait_serving(gw, Duration::from_secs(60)).await?;
    }
    let t_ready = t0.elapsed();
    // Who is who, in the short form the nodes' logs use, and where each
    // function's replicas live: what a failure below refers to.
    let short = |id: &str| id.chars().take(8).collect::<String>();
    let super_of = |peer: &str| {
        supers
            .iter()
            .position(|s| peer.starts_with(&s.id))
            .map_or_else(|| format!("?{}", short(peer)), |i| format!("s{i}"))
    };
    let client_ids: Vec<String> = clients.iter().map(|c| c.field("id")).collect();
    eprintln!(
        "churn: supers {:?}",
        supers.iter().map(|s| short(&s.id)).collect::<Vec<_>>()
    );
    eprintln!(
        "churn: clients {:?}",
        client_ids.iter().map(|id| short(id)).collect::<Vec<_>>()
    );
    let mut hosted_by = [0usize; CLIENTS];
    for (name, _, replicas) in &deployed {
        let found = wait_for(
            &format!("{name}'s providers in the DHT"),
            Duration::from_secs(30),
            || async {
                let p = providers(gws[0], name).await?;
                Ok((p.len() >= *replicas).then_some(p))
            },
        )
        .await?;
        let placement: Vec<String> = found
            .iter()
            .map(|(node, homes)| {
                let c = client_ids.iter().position(|id| id == node);
                if let Some(c) = c {
                    hosted_by[c] += 1;
                }
                let homes: Vec<String> = homes.iter().map(|h| super_of(h)).collect();
                format!(
                    "{} (homes {})",
                    c.map_or_else(|| format!("?{}", short(node)), |c| format!("c{c}")),
                    homes.join(",")
                )
            })
            .collect();
        eprintln!("churn: {name} replicas: {}", placement.join("; "));
    }
    // Every home super of a client knows all the replicas it holds, not only
    // the ones it placed there: it routes calls to them while the super that
    // placed them is down.
    for (c, &n) in hosted_by.iter().enumerate() {
        for h in homes_of(c) {
            let gw = gws[h];
            let id = client_ids[c].clone();
            wait_for(
                &format!("super {h} knows the {n} replicas of its client {c}"),
                Duration::from_secs(10),
                || async {
                    let v = get_json(&format!("http://{gw}/api/nodes")).await?;
                    let hosted = v
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|e| e["id"] == id.as_str())
                        .and_then(|e| e["hosted"].as_u64());
                    Ok((hosted == Some(n as u64)).then_some(()))
                },
            )
            .await?;
        }
    }
    eprintln!(
        "churn: {SUPERS} supers and {CLIENTS} clients up in {:.1?}, {FUNCTIONS} functions placed and callable everywhere at {:.1?}",
        t_up, t_ready
    );

    // ---- continuous load.
    let rotation = Arc::new(Rotation {
        live: (0..SUPERS).map(|_| AtomicBool::new(true)).collect(),
        in_flight: (0..SUPERS).map(|_| AtomicU32::new(0)).collect(),
        dead: (0..SUPERS).map(|_| AtomicBool::new(false)).collect(),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for w in 0..GATEWAY_CALLERS {
        let (rotation, stop, next, gws) =
            (rotation.clone(), stop.clone(), next.clone(), gws.clone());
        load.push(tokio::spawn(async move {
            let http = fresh_http();
            let mut calls = Vec::new();
            let mut n = 0usize;
            while !stop.load(Ordering::SeqCst) {
                // Next live gateway in a shared round robin.
                let Some(g) = (0..SUPERS)
                    .map(|_| next.fetch_add(1, Ordering::SeqCst) % SUPERS)
                    .find(|&g| rotation.enter(g))
                else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let f = (n + w) % FUNCTIONS;
                n += 1;
                let input = format!("g{w}-{n}");
                let t = Instant::now();
                let res = post(
                    &http,
                    &format!("http://{}/fn/{}", gws[g], fn_name(f)),
                    &input,
                    None,
                )
                .await;
                let latency = t.elapsed();
                // Only when the drain timed out can a call be in flight
                // through a gateway when it is killed.
                let gateway_down = rotation.dead[g].load(Ordering::SeqCst);
                rotation.leave(g);
                let (failure, detail) = match res {
                    Ok(()) => (None, String::new()),
                    Err((kind, detail)) if gateway_down && kind != "wrong body" => (
                        Some("gateway down".to_string()),
                        format!("{kind}: {detail}"),
                    ),
                    Err((kind, detail)) => (Some(kind), detail),
                };
                calls.push(Call {
                    via: "gateway",
                    failure,
                    detail: format!("super {g} {}: {detail}", fn_name(f)),
                    at: t - t0,
                    latency,
                });
            }
            calls
        }));
    }
    let tokens: Vec<String> = apis.iter().map(|a| api_token(*a)).collect();
    for w in 0..INVOKE_CALLERS {
        let (stop, apis, tokens) = (stop.clone(), apis.clone(), tokens.clone());
        load.push(tokio::spawn(async move {
            let http = fresh_http();
            let mut calls = Vec::new();
            let mut n = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let c = (n + w) % CLIENTS;
                // Skip a beat so the client and function rotations do not
                // stay in phase (10 clients, 5 functions).
                let f = (n / CLIENTS + n) % FUNCTIONS;
                n += 1;
                let input = format!("i{w}-{n}");
                let t = Instant::now();
                let res = post(
                    &http,
                    &format!("http://{}/api/invoke/{}", apis[c], fn_name(f)),
                    &input,
                    Some(&tokens[c]),
                )
                .await;
                let (failure, detail) = match res {
                    Ok(()) => (None, String::new()),
                    Err((kind, detail)) => (Some(kind), detail),
                };
                calls.push(Call {
                    via: "invoke",
                    failure,
                    detail: format!("client {c} {}: {detail}", fn_name(f)),
                    at: t - t0,
                    latency: t.elapsed(),
                });
            }
            calls
        }));
    }

    // ---- churn.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut back_after: Vec<(usize, Duration)> = Vec::new();
    let mut clients_back_after: Vec<(usize, Duration)> = Vec::new();
    for (round, (victims, down_for)) in ROUNDS.iter().enumerate() {
        for &v in victims {
            rotation.drain(v).await;
        }
        for &v in victims {
            rotation.dead[v].store(true, Ordering::SeqCst);
            if let Some(mut p) = procs[v].take() {
                tokio::task::spawn_blocking(move || p.kill9()).await?;
            }
        }
        eprintln!(
            "churn: round {round}: killed supers {victims:?} at {:.1?}",
            t0.elapsed()
        );
        tokio::time::sleep(*down_for).await;
        // On a blocking thread: the callers share the runtime's two workers.
        let slots: Vec<SuperSlot> = victims.iter().map(|&v| supers[v].clone()).collect();
        let restarted =
            tokio::task::spawn_blocking(move || start_all(slots.len(), |k| slots[k].start()))
                .await??;
        let t_restart = Instant::now();
        eprintln!(
            "churn: round {round}: restarted supers {victims:?} at {:.1?}",
            t0.elapsed()
        );
        for (&v, p) in victims.iter().zip(restarted) {
            assert_eq!(p.field("id"), supers[v].id, "same identity after restart");
            procs[v] = Some(p);
            rotation.dead[v].store(false, Ordering::SeqCst);
        }
        // Serving again: every function answers through its gateway.
        let waits: Vec<_> = victims
            .iter()
            .map(|&v| {
                let gw = gws[v];
                tokio::spawn(async move {
                    wait_serving(gw, Duration::from_secs(60)).await?;
                    Ok::<_, anyhow::Error>((v, t_restart.elapsed()))
                })
            })
            .collect();
        for w in waits {
            let (v, took) = w.await??;
            eprintln!(
                "churn: round {round}: super {v} serving every function {took:.1?} after its restart"
            );
            back_after.push((v, took));
            rotation.live[v].store(true, Ordering::SeqCst);
        }
        // Its own clients come back with their redial backoff.
        for &v in victims {
            let gw = gws[v];
            wait_for(
                &format!("super {v}'s two clients back"),
                Duration::from_secs(60),
                || async { Ok((client_count(gw).await? >= 2).then_some(())) },
            )
            .await?;
            clients_back_after.push((v, t_restart.elapsed()));
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    let mut calls: Vec<Call> = Vec::new();
    for l in load {
        calls.extend(l.await?);
    }
    let t_load_end = t0.elapsed();

    // ---- figures.
    let total = calls.len();
    let ok = calls.iter().filter(|c| c.failure.is_none()).count();
    let mut by_kind: BTreeMap<(String, &str), usize> = BTreeMap::new();
    for c in &calls {
        if let Some(k) = &c.failure {
            *by_kind.entry((k.clone(), c.via)).or_default() += 1;
        }
    }
    let per_via = |via: &str| {
        let n = calls.iter().filter(|c| c.via == via).count();
        let ok = calls
            .iter()
            .filter(|c| c.via == via && c.failure.is_none())
            .count();
        (n, ok)
    };
    let mut lat: Vec<Duration> = calls
        .iter()
        .filter(|c| c.failure.is_none())
        .map(|c| c.latency)
        .collect();
    lat.sort();
    let ratio = if total == 0 {
        0.0
    } else {
        ok as f64 / total as f64
    };
    eprintln!(
        "churn: {total} calls, {ok} ok, {} failed: success ratio {:.4}",
        total - ok,
        ratio
    );
    let (gn, gok) = per_via("gateway");
    let (inv, iok) = per_via("invoke");
    eprintln!("churn:   through gateways {gok}/{gn} ok, through clients' invoke {iok}/{inv} ok");
    for ((kind, via), n) in &by_kind {
        eprintln!("churn:   failed ({via}, {kind}): {n}");
    }
    for c in calls.iter().filter(|c| c.failure.is_some()).take(20) {
        eprintln!(
            "churn:   failure {} via {} at {:.1?} after {:.1?}: {}",
            c.failure.as_deref().unwrap_or_default(),
            c.via,
            c.at,
            c.latency,
            c.detail.chars().take(300).collect::<String>()
        );
    }
    eprintln!(
        "churn: latency of successful calls p50 {:.1?}, p99 {:.1?}, max {:.1?}",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or_default()
    );
    eprintln!(
        "churn:   calls slower than 1 s: {}, slower than 5 s: {}",
        calls
            .iter()
            .filter(|c| c.latency > Duration::from_secs(1))
            .count(),
        calls
            .iter()
            .filter(|c| c.latency > Duration::from_secs(5))
            .count()
    );
    let mut slow: Vec<&Call> = calls.iter().collect();
    slow.sort_by_key(|c| std::cmp::Reverse(c.latency));
    for c in slow.iter().take(8) {
        eprintln!(
            "churn:   slow call via {} at {:.1?} took {:.1?} ({}): {}",
            c.via,
            c.at,
            c.latency,
            c.failure.as_deref().unwrap_or("ok"),
            c.detail.chars().take(200).collect::<String>()
        );
    }
    for ((v, took), (_, clients)) in back_after.iter().zip(&clients_back_after) {
        eprintln!(
            "churn: super {v} serving again {took:.1?} after its restart, its clients back after {clients:.1?}"
        );
    }

    // ---- every function reachable through every gateway, resolvable from
    // every super, every super in every routing table, and every client
    // back on two home supers.
    for (i, &gw) in gws.iter().enumerate() {
        wait_serving(gw, Duration::from_secs(60))
            .await
            .with_context(|| format!("super {i} after the churn"))?;
        // The restarted supers rejoined the DHT, and the others took them
        // back into their routing tables.
        wait_for(
            &format!("super {i} knows every other super after the churn"),
            Duration::from_secs(30),
            || async { Ok((routing_table_len(gw).await? >= SUPERS - 1).then_some(())) },
        )
        .await?;
        for (name, hash, replicas) in &deployed {
            let v = wait_for(
                &format!("{name} resolves at super {i} with its providers"),
                Duration::from_secs(30),
                || async {
                    let v = get_json(&format!("http://{gw}/api/resolve/{name}")).await?;
                    let providers = v["providers"].as_array().map_or(0, |a| a.len());
                    Ok((providers >= *replicas).then_some(v))
                },
            )
            .await?;
            assert_eq!(
                v["hash"].as_str(),
                Some(hash.as_str()),
                "{name} at super {i}: {v}"
            );
        }
    }
    // No client left, so no replica had to move: a super that restarts must
    // count the replicas behind other supers (provider records) and not
    // place more. No autoscaling either: no --max-replicas was given.
    let mut counts = Vec::new();
    let mut over = Vec::new();
    for (name, _, replicas) in &deployed {
        let n = providers(gws[0], name).await?.len();
        counts.push(format!("{name} {n} (asked {replicas})"));
        if n != *replicas {
            over.push(name.clone());
        }
    }
    eprintln!("churn: replicas after the churn: {}", counts.join(", "));
    assert!(
        over.is_empty(),
        "replica counts changed by the churn: {}",
        counts.join(", ")
    );
    for (i, &api) in apis.iter().enumerate() {
        wait_for(
            &format!("client {i} linked to two home supers again"),
            Duration::from_secs(60),
            || async { Ok((connected_supers(api).await? >= 2).then_some(())) },
        )
        .await?;
    }
    eprintln!(
        "churn: load ran until {t_load_end:.1?}; whole test {:.1?}",
        t0.elapsed()
    );

    assert!(total > 0, "the load made no calls");
    assert!(
        ratio >= 0.99,
        "success ratio {ratio:.4} below 0.99 ({ok}/{total}); failures: {by_kind:?}"
    );
    drop(clients);
    drop(procs);
    Ok(())
}
