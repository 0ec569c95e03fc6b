//! The extra latency of a failover, in one process on loopback: gateway
//! calls (`POST http://<super>/fn/NAME`) that the super has to move on from
//! its first-choice replica, against calls that it does not.
//!
//! - `failover/baseline`: a call to a function with two idle replicas.
//! - `failover/busy`: the first-choice replica answers Busy (its only call
//!   slot is taken) and the call moves on to the second replica.
//! - `failover/closed-connection`: the first-choice replica's client has
//!   just shut down gracefully (`ClientHandle::shutdown`) and the call is
//!   the first one after that.
//!
//! The super orders replicas by its own count of calls in flight on each
//! client (per unit of capacity), then by round trip time, and skips a
//! client that its count says is full without asking it. So for the Busy
//! path to be taken every time:
//! - replica A has capacity 1, and its slot is taken by a call that the
//!   super does not see: a node-to-node `Run` sent straight to A over QUIC
//!   (as a client's direct path would), which sleeps for the whole bench;
//! - replica B has capacity 2, one slot taken by a sleeping call that went
//!   through the gateway, so the super counts B as half loaded and A as
//!   idle: A is always tried first, answers Busy, and B runs the call.
//!
//! After the busy group, a paired check alternates, in that same state, a
//! call of a function whose only replica is B (no failover) with a call
//! that fails over from A to B: the difference is the cost of the Busy
//! round trip alone, with load from elsewhere on the machine hitting both.
//!
//! The closed-connection case uses its own network: replica Y (capacity 2,
//! one sleeping gateway call, so it sorts second) and, per iteration, a new
//! client X (capacity 1) that receives a replica, is shut down, and then the
//! call is timed. Whether the super still had X listed when the call came
//! (and failed over from its closed connection) or had already dropped it
//! (and went straight to Y) depends on whether it saw the close first; the
//! summary counts both. (A graceful shutdown closes the QUIC connection
//! first and returns only after its tasks end, so the super has normally
//! dropped X already.) The first call after a pause is slower than the
//! back-to-back calls of the baseline for reasons that have nothing to do
//! with failover (parked threads wake up, cold caches), so each iteration
//! also times a reference call: once X is gone, after an idle gap as long
//! as the shutdown took, a call to Y with nothing closed. Criterion warns
//! that it cannot complete this group's samples in 1 ms: expected, as it
//! does not count the (untimed) client start and shutdown.
//!
//! The sleeping calls use `poll_oneoff` (a thread sleep in the runtime, no
//! CPU), so they do not slow the calls being measured. After the criterion
//! groups, a summary prints the median of every single call timed (warm-up
//! included) and the extra latency of each case over its reference.
//!
//! `cargo bench --bench failover`

// criterion_group! expands to an undocumented public function.
#![allow(missing_docs)]

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use orb_node::{ClientConfig, ClientHandle, ClientNode, SuperConfig, SuperHandle, SuperNode};
use orb_proto::wire::{CallLimits, CallMeta, FunctionSettings, Request, Response};
use orb_proto::{ContentHash, Keypair, OrbId, PeerAddr};
use orb_transport::{Endpoint, TransportConfig};

/// Echoes "hello, " and its input like hello.wat, except that an input of
/// `S` followed by a little-endian u64 sleeps that many nanoseconds (one
/// monotonic-clock `poll_oneoff`) and writes nothing.
const SLEEPY_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  ;; iovec at 0, byte count at 8, prefix at 16, subscription at 64,
  ;; event at 128, event count at 160, input at 1024.
  (data (i32.const 16) "hello, ")
  (func (export "_start")
    (local $n i32)
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (i32.const 4096))
    (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
    (local.set $n (i32.load (i32.const 8)))
    (if (i32.and (i32.ge_u (local.get $n) (i32.const 9))
                 (i32.eq (i32.load8_u (i32.const 1024)) (i32.const 83)))
      (then
        ;; Subscription: userdata 0, tag 0 (clock), clock 1 (monotonic),
        ;; relative timeout, precision 0, flags 0.
        (i32.store (i32.const 80) (i32.const 1))
        (i64.store (i32.const 88) (i64.load (i32.const 1025)))
        (drop (call $poll_oneoff (i32.const 64) (i32.const 128) (i32.const 1) (i32.const 160)))
        (return)))
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 7))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (local.get $n))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
)"#;

/// The function every case calls.
const NAME: &str = "sleepy";
/// Longest a call may run (the nodes' maximum), and so the longest a
/// sleeping call can hold a slot.
const TIMEOUT_MS: u64 = 60_000;
/// How long the sleeping calls that hold slots last: more than any group.
const HOLD: Duration = Duration::from_secs(50);
/// Longest any set-up step may take before the bench gives up.
const T: Duration = Duration::from_secs(30);
/// Iterations of the closed-connection case (criterion samples of one call).
const CLOSED_SAMPLES: usize = 30;
/// Rounds of the busy case's paired check (one call of each kind a round).
const PAIRED_ROUNDS: usize = 500;
/// hello.wat, with its only replica on B: in the busy state, a call that
/// goes straight to B, for the paired check.
const DIRECT: &str = "direct";

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn sleep_input(d: Duration) -> Vec<u8> {
    let mut v = b"S".to_vec();
    v.extend_from_slice(
        &u64::try_from(d.as_nanos())
            .unwrap_or(u64::MAX)
            .to_le_bytes(),
    );
    v
}

/// One super with its own tokio runtime and data directory.
struct Net {
    rt: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
    sup: SuperHandle,
    http: reqwest::Client,
}

impl Net {
    fn start() -> Net {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let sup = rt.block_on(async {
            let mut sc = SuperConfig::new(dir.path().join("super"));
            sc.listen = loopback(0);
            sc.http = loopback(0);
            SuperNode::start(sc).await.expect("super")
        });
        let http = reqwest::Client::builder().no_proxy().build().expect("http");
        Net { rt, dir, sup, http }
    }

    /// Start a client in `dir`/`name` and wait until the super lists it.
    async fn client(&self, name: &str, capacity: usize) -> ClientHandle {
        let mut cc = ClientConfig::new(self.dir.path().join(name));
        cc.supers = vec![PeerAddr {
            id: self.sup.id,
            addr: self.sup.quic_addr,
        }];
        cc.listen = loopback(0);
        cc.api = loopback(0);
        cc.capacity = capacity;
        let c = ClientNode::start(cc).await.expect("client");
        let id = c.id;
        self.wait(&format!("{name} registered"), async || {
            self.node(id).await.is_some()
        })
        .await;
        c
    }

    /// Poll `ok` until it holds.
    async fn wait(&self, what: &str, ok: impl AsyncFn() -> bool) {
        let until = Instant::now() + T;
        while !ok().await {
            assert!(Instant::now() < until, "timed out waiting for: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// GET `path` from the super's HTTP API, as JSON.
    async fn get_json(&self, path: &str) -> serde_json::Value {
        let r = self
            .http
            .get(format!("http://{}{path}", self.sup.http_addr));
        let r = r.send().await.expect(path);
        r.json().await.expect(path)
    }

    /// The super's view of client `id` (`/api/nodes`), if connected.
    async fn node(&self, id: OrbId) -> Option<serde_json::Value> {
        let nodes = self.get_json("/api/nodes").await;
        let id = id.to_string();
        nodes
            .as_array()?
            .iter()
            .find(|n| n["id"] == id.as_str())
            .cloned()
    }

    /// Calls the super counts in flight on client `id`.
    async fn in_flight(&self, id: OrbId) -> u64 {
        self.node(id)
            .await
            .and_then(|n| n["in_flight"].as_u64())
            .unwrap_or(0)
    }

    /// Whether the super lists client `id` as holding a replica of NAME.
    async fn holds(&self, id: OrbId) -> bool {
        let f = self.get_json(&format!("/api/functions/{NAME}")).await;
        let id = id.to_string();
        f["replicas"]
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x["node"] == id.as_str()))
    }

    /// Deploy SLEEPY_WAT as NAME through `via`'s local API, placed on `via`
    /// first; returns the module's hash and the nodes it was placed on.
    async fn deploy(&self, via: &ClientHandle, replicas: u32) -> (ContentHash, Vec<String>) {
        let wasm = wat::parse_str(SLEEPY_WAT).expect("sleepy.wat");
        self.deploy_as(via, NAME, wasm, replicas).await
    }

    /// Deploy `wasm` as `name` through `via`'s local API, placed on `via`
    /// first; returns the module's hash and the nodes it was placed on.
    async fn deploy_as(
        &self,
        via: &ClientHandle,
        name: &str,
        wasm: Vec<u8>,
        replicas: u32,
    ) -> (ContentHash, Vec<String>) {
        let url = format!(
            "http://{}/api/deploy?name={name}&replicas={replicas}&here=1&timeout_ms={TIMEOUT_MS}",
            via.api_addr
        );
        let token = via.api_token().expect("API token");
        let r = self
            .http
            .post(url)
            .bearer_auth(token)
            .body(wasm.clone())
            .send()
            .await;
        let r = r.expect("deploy");
        let ok = r.status().is_success();
        let text = r.text().await.expect("deploy answer");
        assert!(ok, "deploy failed: {text}");
        let v: serde_json::Value = serde_json::from_str(&text).expect("deploy json");
        let placed = v["placed_on"]
            .as_array()
            .expect("placed_on")
            .iter()
            .filter_map(|p| p.as_str().map(str::to_string))
            .collect();
        (ContentHash::of(&wasm), placed)
    }

    /// One gateway call of `name`; returns its status and body.
    async fn call(&self, name: &str, body: Vec<u8>) -> (u16, bytes::Bytes) {
        let r = self
            .http
            .post(format!("http://{}/fn/{name}", self.sup.http_addr))
            .body(body)
            .send()
            .await
            .expect("call");
        let status = r.status().as_u16();
        (status, r.bytes().await.expect("call body"))
    }

    /// A gateway call of NAME that must succeed, timed.
    async fn timed_call(&self) -> Duration {
        self.timed_call_of(NAME).await
    }

    /// A gateway call of `name` that must succeed, timed.
    async fn timed_call_of(&self, name: &str) -> Duration {
        let started = Instant::now();
        let (status, out) = self.call(name, b"bench".to_vec()).await;
        let took = started.elapsed();
        assert_eq!(
            status,
            200,
            "call failed: {}",
            String::from_utf8_lossy(&out)
        );
        assert_eq!(out.as_ref(), b"hello, bench");
        took
    }

    /// `iters` timed calls of NAME, back to back; each call's time goes to
    /// `times`, and the total is returned (for criterion's `iter_custom`).
    fn time_calls(&self, iters: u64, times: &Times) -> Duration {
        self.rt.block_on(async {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let d = self.timed_call().await;
                times.push(d);
                total += d;
            }
            total
        })
    }

    /// A gateway call that sleeps for HOLD, in the background.
    fn hold_via_gateway(&self) -> tokio::task::JoinHandle<()> {
        let call = self
            .http
            .post(format!("http://{}/fn/{NAME}", self.sup.http_addr))
            .body(sleep_input(HOLD));
        self.rt.spawn(async move {
            let r = call.send().await.expect("sleeping call");
            let status = r.status();
            let out = r.text().await.unwrap_or_default();
            assert_eq!(status, 200, "sleeping call failed: {out}");
        })
    }

    /// The super's `orb_calls_failed_over_total`.
    async fn failed_over(&self) -> u64 {
        metric(
            &self.http,
            self.sup.http_addr,
            "orb_calls_failed_over_total",
        )
        .await as u64
    }
}

/// Metric `name` (a line `name value`) from `http://{addr}/metrics`.
async fn metric(http: &reqwest::Client, addr: SocketAddr, name: &str) -> f64 {
    let text = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Take one call slot on `node` with a sleeping `Run` sent straight to it
/// over QUIC from an outside node, so the super does not count it.
async fn hold_directly(node: &ClientHandle, hash: ContentHash) -> tokio::task::JoinHandle<()> {
    let key = Keypair::from_seed([77; 32]);
    let ep = Endpoint::bind(loopback(0), &key, TransportConfig::default()).expect("bind");
    let conn = ep
        .connect(PeerAddr {
            id: node.id,
            addr: node.quic_addr,
        })
        .await
        .expect("connect to the replica");
    let req = Request::Run {
        name: NAME.to_string(),
        hash,
        settings: Box::new(FunctionSettings {
            replicas: 1,
            max_replicas: 1,
            limits: CallLimits {
                timeout_ms: Some(TIMEOUT_MS),
                ..CallLimits::default()
            },
            ..FunctionSettings::default()
        }),
        meta: Box::new(CallMeta {
            request_id: "failover-bench-hold".into(),
            method: "POST".into(),
            ..CallMeta::default()
        }),
        caller: ep.id(),
    };
    tokio::spawn(async move {
        let _ep = ep;
        match conn.request(&req, &sleep_input(HOLD), 1 << 20).await {
            Ok((Response::Ran { .. }, _)) => {}
            other => panic!("direct sleeping call failed: {other:?}"),
        }
    })
}

/// The median, or None with no samples (a filtered-out case).
fn median(d: &[Duration]) -> Option<Duration> {
    let mut d = d.to_vec();
    d.sort_unstable();
    d.get(d.len() / 2).copied()
}

/// Every single call timed by a case (criterion's warm-up included).
#[derive(Default)]
struct Times(Mutex<Vec<Duration>>);

impl Times {
    fn push(&self, d: Duration) {
        self.0.lock().expect("times").push(d);
    }
    fn take(&self) -> Vec<Duration> {
        std::mem::take(&mut *self.0.lock().expect("times"))
    }
}

/// What the baseline and busy cases found.
struct Busy {
    baseline: Vec<Duration>,
    busy: Vec<Duration>,
    /// Failovers the super counted during the busy case.
    busy_failovers: u64,
    /// Alternating after the busy case, in the same state: a call of DIRECT
    /// (straight to B) ...
    paired_direct: Vec<Duration>,
    /// ... and a call of NAME (A answers Busy, then B runs it).
    paired_failover: Vec<Duration>,
}

/// Baseline and Busy: replicas on A (capacity 1) and B (capacity 2).
fn busy_cases(c: &mut Criterion) -> Busy {
    let net = Net::start();
    let (a, b, hash) = net.rt.block_on(async {
        let a = net.client("a", 1).await;
        let b = net.client("b", 2).await;
        let (hash, mut placed) = net.deploy(&a, 2).await;
        placed.sort();
        let mut want = [a.id.to_string(), b.id.to_string()];
        want.sort();
        assert_eq!(placed, want, "placement");
        let hello = wat::parse_file(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/functions/hello.wat"
        ))
        .expect("hello.wat");
        let (_, placed) = net.deploy_as(&b, DIRECT, hello, 1).await;
        assert_eq!(placed, [b.id.to_string()], "placement of {DIRECT}");
        // Warm the connections up before timing anything.
        for _ in 0..4 {
            net.timed_call().await;
            net.timed_call_of(DIRECT).await;
        }
        (a, b, hash)
    });

    let times = Times::default();
    let mut g = c.benchmark_group("failover");
    g.sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    g.bench_function("baseline", |bench| {
        bench.iter_custom(|iters| net.time_calls(iters, &times))
    });
    let baseline = times.take();

    // A's only slot: a sleeping call the super does not see. Then B's first
    // slot: a sleeping call through the gateway (it may try A first, get
    // Busy, and land on B; either way it ends on B), counted by the super.
    let (hold_a, hold_b) = net.rt.block_on(async {
        let hold_a = hold_directly(&a, hash).await;
        net.wait("the direct sleeping call runs on A", async || {
            metric(&net.http, a.api_addr, "orb_calls_in_flight").await == 1.0
        })
        .await;
        let hold_b = net.hold_via_gateway();
        net.wait("the gateway's sleeping call runs on B", async || {
            net.in_flight(b.id).await == 1
        })
        .await;
        assert_eq!(
            net.in_flight(a.id).await,
            0,
            "the super must not count A's call"
        );
        (hold_a, hold_b)
    });
    let before = net.rt.block_on(net.failed_over());
    let started = Instant::now();
    g.bench_function("busy", |bench| {
        bench.iter_custom(|iters| net.time_calls(iters, &times))
    });
    g.finish();
    let busy = times.take();
    let busy_failovers = net.rt.block_on(net.failed_over()) - before;
    assert_eq!(
        busy_failovers,
        busy.len() as u64,
        "every busy-case call must have failed over from A to B"
    );

    // The paired check: the same state, the same B, alternating, so that
    // load from elsewhere on the machine hits both kinds alike.
    let (paired_direct, paired_failover) = net.rt.block_on(async {
        let before = net.failed_over().await;
        let mut direct = Vec::with_capacity(PAIRED_ROUNDS);
        let mut failover = Vec::with_capacity(PAIRED_ROUNDS);
        for _ in 0..PAIRED_ROUNDS {
            direct.push(net.timed_call_of(DIRECT).await);
            failover.push(net.timed_call().await);
        }
        assert_eq!(
            net.failed_over().await - before,
            PAIRED_ROUNDS as u64,
            "only the calls of {NAME} fail over"
        );
        (direct, failover)
    });
    assert!(
        started.elapsed() < HOLD && !hold_a.is_finished() && !hold_b.is_finished(),
        "the sleeping calls ended before the busy case did"
    );
    hold_a.abort();
    hold_b.abort();
    let Net { rt, sup, .. } = net;
    rt.block_on(async {
        a.shutdown().await;
        b.shutdown().await;
        sup.shutdown().await;
    });
    // The sleeping calls still hold runtime threads: do not wait for them.
    rt.shutdown_background();
    Busy {
        baseline,
        busy,
        busy_failovers,
        paired_direct,
        paired_failover,
    }
}

/// What the closed-connection case found.
struct Closed {
    /// The first call after each shutdown.
    first: Vec<Duration>,
    /// Per iteration, a call to Y after X was gone and the system had been
    /// as long without a call as the shutdown took: the same path and the
    /// same idle gap, with no closed replica.
    reference: Vec<Duration>,
    /// How long each `ClientHandle::shutdown` took.
    shutdown: Vec<Duration>,
    /// How many first calls tried X's closed connection and failed over.
    failovers: u64,
}

/// Closed connection: replica Y (capacity 2, one slot held through the
/// gateway) and, per iteration, a new client X that gets a replica and is
/// shut down just before the timed call.
fn closed_case(c: &mut Criterion) -> Closed {
    let net = Net::start();
    let (y, hold_y) = net.rt.block_on(async {
        let y = net.client("y", 2).await;
        let (_, placed) = net.deploy(&y, 2).await;
        assert_eq!(placed, [y.id.to_string()], "placement");
        net.timed_call().await;
        // Only Y holds the function now, so the sleeping call runs there.
        let hold_y = net.hold_via_gateway();
        net.wait("the gateway's sleeping call runs on Y", async || {
            net.in_flight(y.id).await == 1
        })
        .await;
        (y, hold_y)
    });

    let mut out = Closed {
        first: Vec::new(),
        reference: Vec::new(),
        shutdown: Vec::new(),
        failovers: 0,
    };
    let mut round = 0usize;
    let started = Instant::now();
    let mut g = c.benchmark_group("failover");
    // One call per sample: criterion's own plan would recreate far more
    // clients than the time budget allows, as the set-up is not timed.
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(CLOSED_SAMPLES)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_millis(1));
    g.bench_function("closed-connection", |bench| {
        bench.iter_custom(|iters| {
            net.rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    round += 1;
                    // The super places the missing replica on X as it joins.
                    let x = net.client(&format!("x{round}"), 1).await;
                    let id = x.id;
                    net.wait("a replica on X", async || net.holds(id).await)
                        .await;
                    let before = net.failed_over().await;
                    let t = Instant::now();
                    x.shutdown().await;
                    let gap = t.elapsed();
                    let d = net.timed_call().await;
                    out.failovers += net.failed_over().await - before;
                    out.first.push(d);
                    out.shutdown.push(gap);
                    total += d;
                    net.wait("X gone from the super", async || {
                        net.node(id).await.is_none()
                    })
                    .await;
                    tokio::time::sleep(gap).await;
                    out.reference.push(net.timed_call().await);
                }
                total
            })
        })
    });
    g.finish();
    assert!(
        started.elapsed() < HOLD && !hold_y.is_finished(),
        "the sleeping call on Y ended before the closed-connection case did"
    );
    hold_y.abort();
    let Net { rt, sup, .. } = net;
    rt.block_on(async {
        y.shutdown().await;
        sup.shutdown().await;
    });
    rt.shutdown_background();
    out
}

fn bench(c: &mut Criterion) {
    let Busy {
        baseline,
        busy,
        busy_failovers,
        paired_direct,
        paired_failover,
    } = busy_cases(c);
    let closed = closed_case(c);
    // Medians of every single call timed (criterion's figures above are
    // per-sample means); a case filtered out on the command line has none.
    let show = |d: Option<Duration>| d.map_or("n/a".to_string(), |d| format!("{d:?}"));
    let extra = |d: Option<Duration>, over: Option<Duration>| match (d, over) {
        (Some(d), Some(o)) => format!("{:+.0} µs", (d.as_secs_f64() - o.as_secs_f64()) * 1e6),
        _ => "n/a".into(),
    };
    let base = median(&baseline);
    println!(
        "failover/baseline median over {} calls: {}",
        baseline.len(),
        show(base)
    );
    let b = median(&busy);
    println!(
        "failover/busy median over {} calls: {} (extra over baseline {}); {busy_failovers} of {} calls failed over from a Busy replica",
        busy.len(),
        show(b),
        extra(b, base),
        busy.len()
    );
    let (pd, pf) = (median(&paired_direct), median(&paired_failover));
    println!(
        "failover/busy paired check, alternating over {PAIRED_ROUNDS} rounds in the busy state: straight to B {}, via A's Busy to B {} (extra {})",
        show(pd),
        show(pf),
        extra(pf, pd)
    );
    let first = median(&closed.first);
    let reference = median(&closed.reference);
    println!(
        "failover/closed-connection median over {} calls: {} (extra over baseline {}); {} of {} tried the closed replica first, the others found it already dropped; shutdown took {} (median)",
        closed.first.len(),
        show(first),
        extra(first, base),
        closed.failovers,
        closed.first.len(),
        show(median(&closed.shutdown)),
    );
    println!(
        "failover/closed-connection reference (a call to the survivor after the same idle gap, nothing closed) median over {} calls: {} (closed-connection extra over it {})",
        closed.reference.len(),
        show(reference),
        extra(first, reference)
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
