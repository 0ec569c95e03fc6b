//! Embedding orb-overlay in an application.
//!
//! Starts three DHT servers and one application node (a DHT client) on
//! loopback QUIC, all in this process. The application publishes a signed
//! node record about itself and a name record, then looks both up again.
//!
//! Run: `cargo run --example overlay_embed`

use std::time::{SystemTime, UNIX_EPOCH};

use orb_overlay::{Overlay, OverlayConfig, Role, serve};
use orb_proto::dht::{Key, NameRecord, NodeRecord, Record, RecordKind};
use orb_proto::wire::FunctionSettings;
use orb_proto::{ContentHash, Keypair, PeerAddr};
use orb_transport::{Endpoint, TransportConfig};

/// Bind a loopback endpoint and run an overlay on it, answering DHT
/// requests with the stock accept loop.
async fn node(role: Role) -> anyhow::Result<(Overlay, Keypair)> {
    let key = Keypair::generate()?;
    let endpoint = Endpoint::bind("127.0.0.1:0".parse()?, &key, TransportConfig::default())?;
    let local = PeerAddr {
        id: key.id(),
        addr: endpoint.local_addr()?,
    };
    let (overlay, _task) = Overlay::spawn(endpoint.clone(), local, role, OverlayConfig::default());
    tokio::spawn(serve(endpoint, overlay.clone()));
    Ok((overlay, key))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
    let hour = 3_600_000;

    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(node(Role::Server).await?.0);
    }
    let seed = servers[0].local();
    for s in &servers[1..] {
        s.bootstrap(vec![seed]).await?;
    }
    println!("3 servers up; first is {seed}");

    let (app, key) = node(Role::Client).await?;
    let peers = app.bootstrap(vec![seed]).await?;
    println!(
        "app {} joined as a DHT client; knows {peers} servers",
        key.id()
    );

    // A node record: where the app can be reached.
    let me = NodeRecord {
        id: key.id(),
        home_supers: vec![seed],
        observed: vec![],
        local: vec![app.local().addr],
        nat: "none".into(),
        capacity: 1,
    };
    let rec = Record::sign(RecordKind::Node(me), &key, 1, now + hour)?;
    let stored = app.put(rec.clone()).await?;
    println!("node record stored on {stored} servers");

    // A name record: the app owns the name "hello-embed".
    let name = NameRecord {
        name: "hello-embed".into(),
        owner: key.public(),
        hash: ContentHash::of(b"pretend this is a wasm module"),
        settings: FunctionSettings::default(),
        version: 1,
        removed: false,
    };
    let stored = app
        .put(Record::sign(RecordKind::Name(name), &key, 1, now + hour)?)
        .await?;
    println!("name record stored on {stored} servers");

    let found = servers[2].get(Key::for_node(&key.id())).await?;
    anyhow::ensure!(found == vec![rec], "node record not found");
    println!("found own node record via another server");
    let found = app.get(Key::for_name("hello-embed")).await?;
    match found.first().map(|r| &r.kind) {
        Some(RecordKind::Name(n)) => println!("resolved {:?} -> module {}", n.name, n.hash.short()),
        _ => anyhow::bail!("name record not found"),
    }
    let stats = app.stats().await?;
    println!(
        "app stats: {} lookups, {} ok, mean rounds {:.1}",
        stats.lookups, stats.lookups_ok, stats.mean_rounds
    );
    for s in servers.iter().chain([&app]) {
        s.shutdown().await;
    }
    Ok(())
}
