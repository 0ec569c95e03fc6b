//! The driver over real QUIC on loopback: a handful of overlays in one
//! process bootstrap, store a name record through one and find it through
//! another; a second owner is refused. A client hands the driver its tunnel
//! to its home server, and the home server sees one connection from it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use orb_overlay::{Overlay, OverlayConfig, OverlayError, Role, serve};
use orb_proto::dht::{Key, NameRecord, Record, RecordKind};
use orb_proto::wire::{ErrorKind, FunctionSettings, Request, Response, WireError};
use orb_proto::{ContentHash, Keypair, OrbId, PeerAddr};
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
        version: 1,
        removed: false,
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

/// Connections each peer opened to a server.
type Accepted = Arc<Mutex<HashMap<OrbId, usize>>>;

/// A server whose accept loop counts the connections each peer opens.
async fn start_counting(seed: u8) -> (Overlay, Endpoint, Accepted) {
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
    let (overlay, _task) =
        Overlay::spawn(ep.clone(), local, Role::Server, OverlayConfig::default());
    let accepted: Accepted = Arc::default();
    let (o, e, count) = (overlay.clone(), ep.clone(), accepted.clone());
    tokio::spawn(async move {
        while let Some(conn) = e.accept().await {
            *count
                .lock()
                .expect("lock")
                .entry(conn.peer_id())
                .or_default() += 1;
            let o = o.clone();
            tokio::spawn(async move {
                let from = PeerAddr {
                    id: conn.peer_id(),
                    addr: conn.remote_addr(),
                };
                while let Ok(incoming) = conn.accept_request().await {
                    let (req, _body, responder) = incoming.split();
                    let resp = match req {
                        Request::Dht(msg) => Response::Dht(o.handle_request(from, msg).await),
                        _ => Response::Error(WireError::new(ErrorKind::BadRequest, "DHT only")),
                    };
                    let _ = responder.respond(&resp, &[]).await;
                }
            });
        }
    });
    (overlay, ep, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_uses_its_tunnel_for_dht_requests_to_its_home() {
    let (home, _home_ep, home_accepted) = start_counting(41).await;
    let (other, _other_key, _other_ep) = start(42, Role::Server).await;
    let (third, _third_key, _third_ep) = start(43, Role::Server).await;
    other
        .bootstrap(vec![home.local()])
        .await
        .expect("bootstrap");
    third
        .bootstrap(vec![home.local()])
        .await
        .expect("bootstrap");

    // The client caches one dialed connection only, so its requests to the
    // two other servers keep evicting each other: the adopted tunnel must
    // survive all of that.
    let key = Keypair::from_seed([44; 32]);
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
    let config = OverlayConfig {
        max_connections: 1,
        max_adopted: 1,
        ..OverlayConfig::default()
    };
    let (client, _task) = Overlay::spawn(ep.clone(), local, Role::Client, config);
    let tunnel = ep.connect(home.local()).await.expect("tunnel");
    client.adopt_connection(tunnel.clone()).expect("adopt");
    assert_eq!(client.adopted_peers(), vec![home.local().id]);

    client
        .bootstrap(vec![home.local()])
        .await
        .expect("bootstrap through the tunnel");
    for i in 0..5u64 {
        let rec = name(&key, &format!("fn-{i}"), 1, b"m");
        let stored = client.put(rec.clone()).await.expect("put");
        assert_eq!(stored, 3, "home, other and third store it");
        let got = client
            .get(Key::for_name(&format!("fn-{i}")))
            .await
            .expect("get");
        assert_eq!(got, vec![rec]);
    }
    let accepted = home_accepted.lock().expect("lock").clone();
    assert_eq!(
        accepted.get(&key.id()),
        Some(&1),
        "the home server saw one connection from the client: {accepted:?}"
    );
    assert!(
        !tunnel.is_closed(),
        "the driver never closes an adopted connection"
    );

    // One adopted connection at most (as configured): another peer's is
    // refused while the tunnel lives...
    let to_other = ep.connect(other.local()).await.expect("dial other");
    assert_eq!(
        client.adopt_connection(to_other.clone()),
        Err(OverlayError::TooManyAdopted { limit: 1 })
    );
    // ...and taken once the tunnel is gone, after which requests to the
    // home server are dialed by the driver as usual.
    tunnel.close("tunnel replaced");
    tokio::time::timeout(std::time::Duration::from_secs(5), tunnel.closed())
        .await
        .expect("tunnel closes");
    client
        .adopt_connection(to_other)
        .expect("adopt after the tunnel closed");
    assert_eq!(client.adopted_peers(), vec![other.local().id]);
    let rec = name(&key, "after", 1, b"m");
    assert_eq!(client.put(rec).await.expect("put"), 3);
    // (With one cached connection it may have to dial more than once.)
    let dialed = home_accepted
        .lock()
        .expect("lock")
        .get(&key.id())
        .copied()
        .unwrap_or(0);
    assert!(
        dialed >= 2,
        "with the tunnel gone the driver dialed the home server itself ({dialed})"
    );
}
