//! Gateway call latency and throughput over the public-to-private tunnel,
//! in one process on loopback: one super, three clients, hello.wat
//! deployed with 1 and with 3 replicas. Throughput is measured as batches
//! of concurrent calls (criterion reports elements per second).
//!
//! `cargo bench --bench calls`

// criterion_group! expands to an undocumented public function.
#![allow(missing_docs)]

use std::net::SocketAddr;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use orb_node::{ClientConfig, ClientHandle, ClientNode, SuperConfig, SuperHandle, SuperNode};
use orb_proto::PeerAddr;

/// Calls each client runs at once; a throughput batch fills every replica.
const CAPACITY: usize = 8;

struct Net {
    rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
    sup: SuperHandle,
    clients: Vec<ClientHandle>,
    http: reqwest::Client,
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn start() -> Net {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let (sup, clients) = rt.block_on(async {
        let mut sc = SuperConfig::new(dir.path().join("super"));
        sc.listen = loopback(0);
        sc.http = loopback(0);
        let sup = SuperNode::start(sc).await.expect("super");
        let mut clients = Vec::new();
        for i in 0..3 {
            let mut cc = ClientConfig::new(dir.path().join(format!("c{i}")));
            cc.supers = vec![PeerAddr {
                id: sup.id,
                addr: sup.quic_addr,
            }];
            cc.listen = loopback(0);
            cc.api = loopback(0);
            cc.capacity = CAPACITY;
            clients.push(ClientNode::start(cc).await.expect("client"));
        }
        (sup, clients)
    });
    let http = reqwest::Client::builder().no_proxy().build().expect("http");
    let net = Net {
        rt,
        _dir: dir,
        sup,
        clients,
        http,
    };
    // Wait for the clients to register.
    net.rt.block_on(async {
        for _ in 0..200 {
            let v: serde_json::Value = net
                .http
                .get(format!("http://{}/api/nodes", net.sup.http_addr))
                .send()
                .await
                .expect("nodes")
                .json()
                .await
                .expect("json");
            if v.as_array().map_or(0, |a| a.len()) == 3 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("clients did not register");
    });
    net
}

fn deploy(net: &Net, name: &str, replicas: u32) {
    let wasm = wat::parse_file(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/functions/hello.wat"
    ))
    .expect("hello.wat");
    net.rt.block_on(async {
        let r = net
            .http
            .post(format!(
                "http://{}/api/deploy?name={name}&replicas={replicas}",
                net.clients[0].api_addr
            ))
            .bearer_auth(net.clients[0].api_token().expect("API token"))
            .body(wasm)
            .send()
            .await
            .expect("deploy");
        assert!(
            r.status().is_success(),
            "deploy failed: {}",
            r.text().await.unwrap_or_default()
        );
    });
}

async fn call(net: &Net, name: &str) {
    let r = net
        .http
        .post(format!("http://{}/fn/{name}", net.sup.http_addr))
        .body("bench")
        .send()
        .await
        .expect("call");
    assert_eq!(r.status(), 200);
    let _ = r.bytes().await;
}

fn bench(c: &mut Criterion) {
    let net = start();
    deploy(&net, "one", 1);
    deploy(&net, "three", 3);

    let mut g = c.benchmark_group("gateway");
    g.measurement_time(Duration::from_secs(8));
    g.bench_function("latency/1-replica", |b| {
        b.iter(|| net.rt.block_on(call(&net, "one")))
    });
    for (name, replicas) in [("one", 1), ("three", 3)] {
        // As many concurrent calls as the replicas can run at once: more
        // would be answered 429 by design.
        let batch = CAPACITY * replicas;
        g.throughput(Throughput::Elements(batch as u64));
        let label = if replicas == 1 {
            "throughput/1-replica"
        } else {
            "throughput/3-replicas"
        };
        g.bench_function(label, |b| {
            b.iter(|| {
                net.rt.block_on(async {
                    let calls = (0..batch).map(|_| call(&net, name));
                    futures_join(calls).await;
                })
            })
        });
    }
    g.finish();
    let Net {
        rt, sup, clients, ..
    } = net;
    rt.block_on(async {
        for c in clients {
            c.shutdown().await;
        }
        sup.shutdown().await;
    });
}

async fn futures_join<F: std::future::Future<Output = ()>>(futs: impl Iterator<Item = F>) {
    // A tiny join_all: poll every future to completion concurrently.
    let mut set: Vec<std::pin::Pin<Box<F>>> = futs.map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        set.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if set.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
}

criterion_group!(benches, bench);
criterion_main!(benches);
