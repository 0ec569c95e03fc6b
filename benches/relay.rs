//! Relay vs direct on loopback, in one process: a caller, a relay and a
//! target (which dials the relay, as a NATed node would). The same Ping
//! request runs over a direct QUIC connection caller -> target and over an
//! end-to-end QUIC connection inside a circuit spliced by the relay, with
//! no rate limit at the relay (this measures the mechanism; the operator's
//! rate limit is policy).
//!
//! - `relay/rtt/{direct,relayed}`: one round trip with a tiny body.
//! - `relay/throughput/{direct,relayed}`: a 4 MiB request body, answered
//!   with an empty Pong.
//!
//! After the criterion groups, a separate quick loop prints medians and the
//! relay/direct throughput ratio (the goal: at least 0.5).
//!
//! All three nodes share this machine's cores, and a relayed byte crosses
//! three QUIC connections (caller-relay, relay-target, and the end-to-end
//! one inside the tunnel) where a direct byte crosses one. When the CPU is
//! the limit, the ratio here is therefore lower than it would be between
//! three machines, and it moves with other load on the machine.
//!
//! `cargo bench --bench relay`

// criterion_group! expands to an undocumented public function.
#![allow(missing_docs)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use orb_proto::wire::{Request, Response};
use orb_proto::{Keypair, PeerAddr};
use orb_transport::{Connection, Endpoint, SpliceGate, TransportConfig};

#[path = "../crates/orb-transport/tests/support/relay_lab.rs"]
mod relay_lab;
use relay_lab::{serve_pings, serve_relay, serve_relayed};

/// Request body of the throughput benches.
const BODY: usize = 4 << 20;
/// Longest any single request may take before the bench gives up.
const T: Duration = Duration::from_secs(30);
/// Runs per case of the summary loop.
const SUMMARY_RUNS: usize = 20;

/// No rate limit, no quota.
struct Open;

impl SpliceGate for Open {
    fn admit(&self, _bytes: usize) -> Result<Duration, String> {
        Ok(Duration::ZERO)
    }
}

struct Net {
    rt: tokio::runtime::Runtime,
    direct: Connection,
    relayed: Connection,
    // Kept alive for the whole bench.
    _endpoints: Vec<Endpoint>,
}

fn bind(key: &Keypair) -> Endpoint {
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    Endpoint::bind(addr, key, TransportConfig::default()).expect("bind")
}

fn peer(ep: &Endpoint) -> PeerAddr {
    PeerAddr {
        id: ep.id(),
        addr: ep.local_addr().expect("addr"),
    }
}

fn start() -> Net {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (direct, relayed, endpoints) = rt.block_on(async {
        let caller_key = Keypair::from_seed([1; 32]);
        let relay_key = Keypair::from_seed([2; 32]);
        let target_key = Keypair::from_seed([3; 32]);
        let caller = bind(&caller_key);
        let relay = bind(&relay_key);
        let target = bind(&target_key);

        // The target dials the relay, and the relay takes that link first
        // so it can reach the target later.
        let link = target.connect(peer(&relay)).await.expect("link to relay");
        let relay_side = tokio::time::timeout(T, relay.accept())
            .await
            .expect("relay accept in time")
            .expect("relay accept");
        serve_relayed(link, target_key, false);
        serve_relay(relay.clone(), relay_side, Arc::new(Open));
        // Direct connections to the target answer Ping too.
        serve_pings(target.clone(), false);

        let direct = caller.connect(peer(&target)).await.expect("direct");

        let to_relay = caller.connect(peer(&relay)).await.expect("to relay");
        let tunnel = match tokio::time::timeout(
            T,
            to_relay.open_tunnel(&Request::Relay {
                target: target.id(),
            }),
        )
        .await
        .expect("relay answer in time")
        .expect("relay answer")
        {
            (Response::RelayReady, Some(t)) => t,
            (other, _) => panic!("relay refused: {other:?}"),
        };
        let inner = Endpoint::over_tunnel(tunnel, &caller_key, TransportConfig::default())
            .expect("endpoint over tunnel");
        let relayed = tokio::time::timeout(T, inner.connect(Endpoint::tunnel_peer(target.id())))
            .await
            .expect("relayed connect in time")
            .expect("relayed connect");
        assert_eq!(relayed.peer_id(), target.id());
        (direct, relayed, vec![caller, relay, target, inner])
    });
    Net {
        rt,
        direct,
        relayed,
        _endpoints: endpoints,
    }
}

/// One Ping with `body`, answered by an empty Pong.
async fn ping(conn: &Connection, nonce: u64, body: &[u8]) {
    let (resp, echoed) = tokio::time::timeout(T, conn.request(&Request::Ping { nonce }, body, 0))
        .await
        .expect("request in time")
        .expect("request");
    assert_eq!(resp, Response::Pong { nonce });
    assert!(echoed.is_empty());
}

fn median(mut d: Vec<Duration>) -> Duration {
    d.sort_unstable();
    d[d.len() / 2]
}

/// Median times of `SUMMARY_RUNS` Pings with `body`, direct and relayed.
/// The two alternate, so load from elsewhere on the machine hits both alike.
fn measure(net: &Net, body: &[u8]) -> (Duration, Duration) {
    net.rt.block_on(async {
        let mut direct = Vec::with_capacity(SUMMARY_RUNS);
        let mut relayed = Vec::with_capacity(SUMMARY_RUNS);
        for nonce in 0..SUMMARY_RUNS as u64 {
            for (conn, times) in [(&net.direct, &mut direct), (&net.relayed, &mut relayed)] {
                let t = Instant::now();
                ping(conn, nonce, body).await;
                times.push(t.elapsed());
            }
        }
        (median(direct), median(relayed))
    })
}

fn mb_per_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

fn bench(c: &mut Criterion) {
    let net = start();
    let big = vec![0x5au8; BODY];
    let paths = [("direct", &net.direct), ("relayed", &net.relayed)];

    // Warm both paths up (congestion windows, flow-control windows).
    net.rt.block_on(async {
        for (_, conn) in paths {
            for nonce in 0..4 {
                ping(conn, nonce, &big).await;
            }
        }
    });

    let mut g = c.benchmark_group("relay/rtt");
    g.sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for (name, conn) in paths {
        g.bench_function(name, |b| b.iter(|| net.rt.block_on(ping(conn, 7, b"ping"))));
    }
    g.finish();

    let mut g = c.benchmark_group("relay/throughput");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Bytes(BODY as u64));
    for (name, conn) in paths {
        g.bench_function(name, |b| b.iter(|| net.rt.block_on(ping(conn, 7, &big))));
    }
    g.finish();

    // The summary the goal is stated in, from a quick separate loop.
    let (rtt_direct, rtt_relayed) = measure(&net, b"ping");
    let (bulk_direct, bulk_relayed) = measure(&net, &big);
    let (tp_direct, tp_relayed) = (mb_per_s(BODY, bulk_direct), mb_per_s(BODY, bulk_relayed));
    println!(
        "relay/rtt median over {SUMMARY_RUNS}: direct = {rtt_direct:?}, relayed = {rtt_relayed:?} ({:.2}x)",
        rtt_relayed.as_secs_f64() / rtt_direct.as_secs_f64()
    );
    println!(
        "relay/throughput median over {SUMMARY_RUNS} x {} MiB: direct = {tp_direct:.1} MB/s ({bulk_direct:?}), relayed = {tp_relayed:.1} MB/s ({bulk_relayed:?})",
        BODY >> 20
    );
    println!(
        "relay/direct throughput ratio = {:.2} (relay MB/s / direct MB/s; goal >= 0.50)",
        tp_relayed / tp_direct
    );

    let Net {
        rt,
        direct,
        relayed,
        _endpoints: endpoints,
    } = net;
    direct.close("bench done");
    relayed.close("bench done");
    for ep in &endpoints {
        ep.close();
    }
    rt.shutdown_timeout(Duration::from_secs(1));
}

criterion_group!(benches, bench);
criterion_main!(benches);
