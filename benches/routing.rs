//! Routing latency over real QUIC on loopback: N super nodes (default 50,
//! `ORB_BENCH_SUPERS`) in one process, bootstrapped into one DHT. Benches a
//! lookup of a random key and a name resolution (FIND_VALUE of a name
//! record), and prints p50/p99 over a fixed number of runs, since the goal
//! is stated in percentiles (p50 <= 2 ms, p99 <= 10 ms).

// criterion_group! expands to an undocumented public function.
#![allow(missing_docs)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use criterion::{Criterion, criterion_group, criterion_main};
use orb_overlay::{Overlay, OverlayConfig, Rng, Role, serve};
use orb_proto::dht::{Key, NameRecord, Record, RecordKind};
use orb_proto::wire::FunctionSettings;
use orb_proto::{ContentHash, Keypair, PeerAddr};
use orb_transport::{Endpoint, TransportConfig};

struct Net {
    rt: tokio::runtime::Runtime,
    nodes: Vec<Overlay>,
}

fn setup() -> Net {
    let n: usize = std::env::var("ORB_BENCH_SUPERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
        .max(2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let nodes = rt.block_on(async {
        let mut nodes = Vec::new();
        for i in 0..n {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
            let key = Keypair::from_seed(seed);
            let ep = Endpoint::bind(
                "127.0.0.1:0".parse().expect("addr"),
                &key,
                TransportConfig::default(),
            )
            .expect("bind");
            let local = PeerAddr {
                id: key.id(),
                addr: ep.local_addr().expect("addr"),
            };
            let (o, _task) =
                Overlay::spawn(ep.clone(), local, Role::Server, OverlayConfig::default());
            tokio::spawn(serve(ep, o.clone()));
            nodes.push(o);
        }
        let seed = nodes[0].local();
        for o in &nodes[1..] {
            o.bootstrap(vec![seed]).await.expect("bootstrap");
        }
        // Let the bucket refreshes started by bootstrap finish.
        tokio::time::sleep(Duration::from_millis(500)).await;
        nodes
    });
    println!("routing bench: {} supers", nodes.len());
    Net { rt, nodes }
}

fn percentiles(label: &str, mut d: Vec<Duration>) {
    d.sort_unstable();
    let p = |q: usize| d[((d.len() - 1) * q) / 100];
    println!(
        "{label}: n={} p50={:?} p90={:?} p99={:?} max={:?}",
        d.len(),
        p(50),
        p(90),
        p(99),
        d[d.len() - 1]
    );
}

fn bench(c: &mut Criterion) {
    let net = setup();
    let mut rng = Rng::new(42);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let owner = Keypair::from_seed([0xee; 32]);
    let kind = RecordKind::Name(NameRecord {
        name: "bench-fn".into(),
        owner: owner.public(),
        hash: ContentHash::of(b"module"),
        settings: FunctionSettings::default(),
        version: 1,
        removed: false,
    });
    let rec = Record::sign(kind, &owner, 1, now + 3_600_000).expect("sign");
    net.rt
        .block_on(net.nodes[1].put(rec))
        .expect("put name record");
    let name = Key::for_name("bench-fn");

    // Percentiles over 1000 runs from random nodes (after a warm-up so
    // connections exist, as they would on a running super).
    let n = net.nodes.len() as u64;
    let (lookups, gets) = net.rt.block_on(async {
        for _ in 0..200 {
            let o = &net.nodes[rng.below(n) as usize];
            let _ = o.lookup(Key(rng.bytes32())).await;
        }
        let mut lookups = Vec::new();
        let mut gets = Vec::new();
        for _ in 0..1000 {
            let o = &net.nodes[rng.below(n) as usize];
            let t = Instant::now();
            let _ = o.lookup(Key(rng.bytes32())).await;
            lookups.push(t.elapsed());
            let o = &net.nodes[rng.below(n) as usize];
            let t = Instant::now();
            let found = o.get(name).await.expect("get");
            gets.push(t.elapsed());
            assert_eq!(found.len(), 1);
        }
        (lookups, gets)
    });
    percentiles("lookup(random key)", lookups);
    percentiles("get(name record)", gets);

    let mut g = c.benchmark_group("routing");
    g.sample_size(50).measurement_time(Duration::from_secs(10));
    g.bench_function("lookup_random_key", |b| {
        b.iter(|| {
            let o = &net.nodes[rng.below(n) as usize];
            net.rt
                .block_on(o.lookup(Key(rng.bytes32())))
                .expect("lookup")
        })
    });
    g.bench_function("resolve_name", |b| {
        b.iter(|| {
            let o = &net.nodes[rng.below(n) as usize];
            net.rt.block_on(o.get(name)).expect("get")
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
