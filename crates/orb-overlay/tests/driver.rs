//! The driver over real QUIC on loopback: a handful of overlays in one
//! process bootstrap, store a name record through one and find it through
//! another; a second owner is refused.

use orb_overlay::{Overlay, OverlayConfig, OverlayError, Role, serve};
use orb_proto::dht::{Key, NameRecord, Record, RecordKind};
use orb_proto::wire::FunctionSettings;
use orb_proto::{ContentHash, Keypair, PeerAddr};
use orb_transport::{Endpoint, TransportConfig};

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

async fn start(seed: u8, role: Role) -> (Overlay, Keypair, Endpoint) {
    let key = Keypair::from_seed([seed; 32]);
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
    let (overlay, _task) = Overlay::spawn(ep.clone(), local, role, OverlayConfig::default());
    tokio::spawn(serve(ep.clone(), overlay.clone()));
    (overlay, key, ep)
}

fn name(key: &Keypair, name: &str, seq: u64, module: &[u8]) -> Record {
    let kind = RecordKind::Name(NameRecord {
        name: name.into(),
        owner: key.public(),
        hash: ContentHash::of(module),
        settings: FunctionSettings::default(),
    });
    Record::sign(kind, key, seq, now_ms() + 3_600_000).expect("sign")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlays_on_loopback_store_and_find_names() {
    let mut nodes = Vec::new();
    for i in 0..8u8 {
        nodes.push(start(i + 1, Role::Server).await);
    }
    let seed = nodes[0].0.local();
    for (o, _, _) in &nodes[1..] {
        let n = o.bootstrap(vec![seed]).await.expect("bootstrap");
        assert!(n >= 1);
    }
    // A client: queries, stores through servers, never enters tables.
    let (client, client_key, _cep) = start(100, Role::Client).await;
    client
        .bootstrap(vec![seed])
        .await
        .expect("client bootstrap");

    // Every server now knows all the others (8 nodes, k = 20).
    for (o, _, _) in &nodes {
        let table = o.routing_table().await.expect("table");
        assert!(
            table.len() >= 6,
            "table of {:?}: {}",
            o.local(),
            table.len()
        );
        assert!(!table.iter().any(|p| p.id == client.local().id));
    }

    let found = nodes[3].0.lookup(Key([7; 32])).await.expect("lookup");
    assert_eq!(found.len(), 7, "every other server");

    // Put through one server, get through another.
    let rec = name(&nodes[1].1, "greet", 1, b"v1");
    let stored = nodes[1].0.put(rec.clone()).await.expect("put");
    assert_eq!(stored, 8, "stored on all 8 servers");
    let got = nodes[6].0.get(Key::for_name("greet")).await.expect("get");
    assert_eq!(got, vec![rec.clone()]);
    let got = client.get(Key::for_name("greet")).await.expect("get");
    assert_eq!(got, vec![rec.clone()]);

    // Hijack refused everywhere.
    let fake = name(&client_key, "greet", 5, b"evil");
    match client.put(fake).await {
        Err(OverlayError::NotStored(why)) => assert!(why.contains("belongs to"), "{why}"),
        other => panic!("hijack not refused: {other:?}"),
    }
    assert_eq!(
        nodes[2].0.get(Key::for_name("greet")).await.expect("get"),
        vec![rec]
    );

    // The owner updates it.
    let v2 = name(&nodes[1].1, "greet", 2, b"v2");
    nodes[1].0.put(v2.clone()).await.expect("update");
    assert_eq!(
        nodes[4].0.get(Key::for_name("greet")).await.expect("get"),
        vec![v2]
    );

    let stats = nodes[1].0.stats().await.expect("stats");
    assert!(stats.lookups >= 3 && stats.lookups_ok >= 3, "{stats:?}");
    let snap = nodes[1].0.snapshot().await.expect("snapshot");
    assert!(!snap.peers.is_empty() && !snap.records.is_empty());

    for (o, _, ep) in &nodes {
        o.shutdown().await;
        ep.close();
    }
    assert_eq!(
        nodes[0].0.lookup(Key([1; 32])).await,
        Err(OverlayError::Closed)
    );
}
