//! Reopen tests and a kill -9 crash-consistency test for orb-store.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use orb_proto::wire::{FunctionSettings, Role};
use orb_proto::{ContentHash, Keypair};
use orb_store::{
    FunctionRecord, HostedRecord, PeerEntry, SCHEMA_VERSION, Store, StoreError, StoreLimits,
};

fn record(name: &str, module: &[u8], owner: &Keypair) -> FunctionRecord {
    FunctionRecord {
        name: name.to_string(),
        hash: ContentHash::of(module),
        owner: owner.id(),
        size: module.len() as u64,
        settings: FunctionSettings {
            replicas: 2,
            max_replicas: 4,
            args: vec!["-v".into()],
            env: vec![("K".into(), "V".into())],
            ..Default::default()
        },
        created_ms: 1,
        updated_ms: 2,
        placements: vec![owner.id()],
        version: 1,
        history: Vec::new(),
    }
}

#[test]
fn everything_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let owner = Keypair::generate().unwrap();
    let (id, module) = {
        let store = Store::open(dir.path()).unwrap();
        let key = store.load_or_create_identity().unwrap();
        let module = b"\0asm\x01\0\0\0 pretend module".to_vec();
        let f = record("hello", &module, &owner);
        store.put_deploy(&f, &module).unwrap();
        let addr: SocketAddr = "127.0.0.1:7700".parse().unwrap();
        store
            .put_peer(&PeerEntry {
                id: owner.id(),
                addr,
                role: Role::Super,
                last_seen_ms: 42,
            })
            .unwrap();
        store
            .put_hosted(&HostedRecord {
                name: "hello".into(),
                hash: f.hash,
                settings: f.settings.clone(),
            })
            .unwrap();
        store.put_artifact("k/1", b"compiled").unwrap();
        store.put_blob("ledger", b"node-a", b"10").unwrap();
        store.put_blob("ledger", b"node-b", b"20").unwrap();
        store.put_blob("other", b"x", b"y").unwrap();
        (key.id(), module)
    };
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(
        store.load_or_create_identity().unwrap().id(),
        id,
        "identity is stable across opens"
    );
    let f = store.function("hello").unwrap().unwrap();
    assert_eq!(f, record("hello", &module, &owner));
    assert_eq!(store.module(&f.hash).unwrap().unwrap(), module);
    assert!(store.has_module(&f.hash).unwrap());
    assert_eq!(store.module_hashes().unwrap(), vec![f.hash]);
    assert_eq!(store.functions().unwrap().len(), 1);
    let peers = store.peers().unwrap();
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].last_seen_ms, 42);
    assert_eq!(peers[0].role, Role::Super);
    assert_eq!(store.hosted().unwrap()[0].name, "hello");
    assert_eq!(store.artifact("k/1").unwrap().unwrap(), b"compiled");
    assert_eq!(
        store.blobs("ledger").unwrap(),
        vec![
            (b"node-a".to_vec(), b"10".to_vec()),
            (b"node-b".to_vec(), b"20".to_vec())
        ]
    );
    assert_eq!(store.blob("other", b"x").unwrap().unwrap(), b"y");
    assert!(store.remove_function("hello").unwrap());
    assert!(store.remove_hosted("hello").unwrap());
    assert!(store.remove_blob("ledger", b"node-a").unwrap());
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert!(store.function("hello").unwrap().is_none());
    assert!(store.hosted().unwrap().is_empty());
    assert_eq!(store.blobs("ledger").unwrap().len(), 1);
}

#[test]
fn tables_fed_by_the_network_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let limits = StoreLimits {
        max_peers: 8,
        max_artifacts: 3,
        max_blobs_per_namespace: 5,
    };
    let store = Store::open_with_limits(dir.path(), limits).unwrap();
    let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let first = Keypair::from_seed([0; 32]).id();
    store
        .put_peer(&PeerEntry {
            id: first,
            addr,
            role: Role::Client,
            last_seen_ms: 0,
        })
        .unwrap();
    for i in 1..20u8 {
        let id = Keypair::from_seed([i; 32]).id();
        store
            .put_peer(&PeerEntry {
                id,
                addr,
                role: Role::Client,
                last_seen_ms: u64::from(i),
            })
            .unwrap();
    }
    let peers = store.peers().unwrap();
    assert_eq!(peers.len(), 8);
    assert!(
        peers.iter().all(|p| p.id != first),
        "the least recently seen peer was evicted"
    );
    assert_eq!(peers[0].last_seen_ms, 19, "most recent first");
    for i in 0..10 {
        store.put_artifact(&format!("k{i}"), b"a").unwrap();
    }
    assert!(store.artifact("k9").unwrap().is_some());
    assert!(store.artifact("k0").unwrap().is_none());
    for i in 0..5u8 {
        store.put_blob("ns", &[i], b"v").unwrap();
    }
    store.put_blob("ns", &[0], b"overwrite is fine").unwrap();
    assert!(
        store.put_blob("ns", &[9], b"v").is_err(),
        "a full namespace refuses new keys"
    );
    store.put_blob("other", &[9], b"v").unwrap();
}

#[test]
fn a_newer_schema_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    {
        let db = redb::Database::create(dir.path().join(orb_store::FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn
                .open_table(redb::TableDefinition::<&str, &[u8]>::new("meta"))
                .unwrap();
            meta.insert("schema_version", 99u32.to_le_bytes().as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
    }
    match Store::open(dir.path()) {
        Err(StoreError::Schema {
            found: 99,
            expected,
            ..
        }) => assert_eq!(expected, SCHEMA_VERSION),
        other => panic!("expected a schema error, got {other:?}"),
    }
}

/// A file written by schema version 1 (records without the version 2
/// fields) opens, and its function and hosted records read back whole.
#[test]
fn a_version_1_file_is_migrated() {
    #[derive(serde::Serialize)]
    struct SettingsV1 {
        replicas: u32,
        max_replicas: u32,
        args: Vec<String>,
        env: Vec<(String, String)>,
        limits: orb_proto::wire::CallLimits,
    }
    #[derive(serde::Serialize)]
    struct FunctionV1 {
        name: String,
        hash: ContentHash,
        owner: orb_proto::OrbId,
        size: u64,
        settings: SettingsV1,
        created_ms: u64,
        updated_ms: u64,
        placements: Vec<orb_proto::OrbId>,
    }
    #[derive(serde::Serialize)]
    struct HostedV1 {
        name: String,
        hash: ContentHash,
        settings: SettingsV1,
    }
    let settings = || SettingsV1 {
        replicas: 2,
        max_replicas: 4,
        args: vec!["-v".into()],
        env: vec![],
        limits: Default::default(),
    };
    let owner = Keypair::from_seed([3; 32]).id();
    let dir = tempfile::tempdir().unwrap();
    {
        let db = redb::Database::create(dir.path().join(orb_store::FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn
                .open_table(redb::TableDefinition::<&str, &[u8]>::new("meta"))
                .unwrap();
            meta.insert("schema_version", 1u32.to_le_bytes().as_slice())
                .unwrap();
            let f = orb_proto::codec::encode(&FunctionV1 {
                name: "hello".into(),
                hash: ContentHash::of(b"m"),
                owner,
                size: 1,
                settings: settings(),
                created_ms: 10,
                updated_ms: 20,
                placements: vec![owner],
            })
            .unwrap();
            txn.open_table(redb::TableDefinition::<&str, &[u8]>::new("functions"))
                .unwrap()
                .insert("hello", f.as_slice())
                .unwrap();
            let h = orb_proto::codec::encode(&HostedV1 {
                name: "hello".into(),
                hash: ContentHash::of(b"m"),
                settings: settings(),
            })
            .unwrap();
            txn.open_table(redb::TableDefinition::<&str, &[u8]>::new("hosted"))
                .unwrap()
                .insert("hello", h.as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    let fs = store.functions().unwrap();
    assert_eq!(fs.len(), 1);
    let f = &fs[0];
    assert_eq!((f.name.as_str(), f.owner, f.version), ("hello", owner, 1));
    assert_eq!((f.settings.replicas, f.settings.max_replicas), (2, 4));
    assert_eq!(f.settings.args, vec!["-v".to_string()]);
    assert!(!f.settings.cgi && f.settings.files.is_none());
    assert_eq!(f.history.len(), 1);
    assert_eq!(f.history[0].hash, ContentHash::of(b"m"));
    let h = store.hosted().unwrap();
    assert_eq!(h[0].settings.replicas, 2);
    // Reopening finds version 2 and rewrites nothing.
    drop(store);
    assert_eq!(Store::open(dir.path()).unwrap().functions().unwrap(), fs);
}

#[test]
fn garbage_file_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(orb_store::FILE_NAME), vec![0x5a; 10_000]).unwrap();
    assert!(Store::open(dir.path()).is_err());
}

/// Child half of the crash test: deploy forever, printing each name once its
/// transaction committed.
#[test]
fn crash_child_writer() {
    let Ok(dir) = std::env::var("ORB_STORE_CRASH_DIR") else {
        return;
    };
    let store = Store::open(std::path::Path::new(&dir)).unwrap();
    let owner = store.load_or_create_identity().unwrap();
    let mut i = 0u64;
    loop {
        // Modules of varying size so some commits span several pages.
        let module: Vec<u8> = (0..(1000 + (i % 7) * 40_000))
            .map(|b| (b ^ i) as u8)
            .collect();
        let f = record(&format!("f{i}"), &module, &owner);
        store.put_deploy(&f, &module).unwrap();
        store
            .put_blob("ledger", &i.to_le_bytes(), &i.to_le_bytes())
            .unwrap();
        println!("ack {i}");
        i += 1;
    }
}

#[test]
fn kill_9_never_loses_an_acknowledged_deploy() {
    let exe = std::env::current_exe().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut acked: Option<u64> = None;
    for round in 0..4u64 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_child_writer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("ORB_STORE_CRASH_DIR", dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        // Kill at a different point each round.
        let want = 20 + round * 17;
        let mut seen = 0;
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(n) = line.strip_prefix("ack ") {
                acked = Some(n.trim().parse().unwrap());
                seen += 1;
                if seen >= want {
                    break;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(round * 3));
        child.kill().unwrap();
        child.wait().unwrap();
        // Anything printed after our last read was also acknowledged.
        for line in lines.map_while(Result::ok) {
            if let Some(n) = line.strip_prefix("ack ") {
                acked = Some(n.trim().parse().unwrap());
            }
        }
        let store = Store::open(dir.path()).expect("store opens after kill -9");
        let last = acked.unwrap();
        for i in 0..=last {
            let f = store
                .function(&format!("f{i}"))
                .unwrap()
                .unwrap_or_else(|| panic!("deploy f{i} lost (round {round})"));
            let module = store
                .module(&f.hash)
                .unwrap()
                .expect("module of an acknowledged deploy");
            assert_eq!(ContentHash::of(&module), f.hash, "module bytes intact");
            assert_eq!(
                store.blob("ledger", &i.to_le_bytes()).unwrap().unwrap(),
                i.to_le_bytes()
            );
        }
        // Whatever is there beyond the last ack must be whole too.
        for f in store.functions().unwrap() {
            let module = store
                .module(&f.hash)
                .unwrap()
                .expect("every function has its module");
            assert_eq!(ContentHash::of(&module), f.hash);
        }
    }
}

#[test]
fn a_deploy_with_files_commits_the_bundle_with_the_module() {
    let dir = tempfile::tempdir().unwrap();
    let owner = Keypair::generate().unwrap();
    let module = b"\0asm\x01\0\0\0 site".to_vec();
    let bundle = b"ORBBNDL1 pretend bundle".to_vec();
    let bundle_hash = ContentHash::of(&bundle);
    {
        let store = Store::open(dir.path()).unwrap();
        assert!(!store.has_bundle(&bundle_hash).unwrap());
        let f = record("site", &module, &owner);
        store
            .put_deploy_with_bundle(&f, &module, Some((&bundle_hash, &bundle)))
            .unwrap();
        // A bundle fetched for a placement, without a record.
        store
            .put_bundle(&ContentHash::of(b"other"), b"other")
            .unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.bundle(&bundle_hash).unwrap(), Some(bundle));
    assert!(store.has_bundle(&ContentHash::of(b"other")).unwrap());
    assert!(store.has_module(&ContentHash::of(&module)).unwrap());
    assert!(store.function("site").unwrap().is_some());
    assert_eq!(store.bundle(&ContentHash::of(b"none")).unwrap(), None);
}
