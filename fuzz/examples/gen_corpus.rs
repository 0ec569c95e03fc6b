//! Writes the seed corpora under `fuzz/corpus/<target>/`: a few valid
//! encoded messages, records and receipts, and a few gateway requests.
//! Deterministic (fixed keys; Ed25519 signatures are deterministic), so a
//! re-run after a wire change shows up as a diff.
//!
//! ```text
//! cd fuzz && cargo run --example gen_corpus
//! ```

use std::net::SocketAddr;
use std::path::Path;

use orb_proto::codec::{encode, encode_frame};
use orb_proto::dht::{
    DhtMessage, DhtRequest, DhtResponse, Key, NameRecord, NodeRecord, ProviderEntry,
    ProviderRecord, Record, RecordKind,
};
use orb_proto::receipt::{Receipt, SignedReceipt};
use orb_proto::wire::{
    CallLimits, CallMeta, ErrorKind, FunctionSettings, Hello, HostedReplica, Request, Response,
    Role, RunOutcome, RunStatus, Welcome, WireError,
};
use orb_proto::{ContentHash, Keypair, PeerAddr};

/// The clock the records are signed against; the record_verify target
/// verifies at the same instant.
const NOW: u64 = 1_700_000_000_000;

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).expect("write seed");
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

fn settings() -> FunctionSettings {
    FunctionSettings {
        replicas: 2,
        max_replicas: 4,
        args: vec!["--upper".into()],
        env: vec![("LANG".into(), "C".into())],
        limits: CallLimits {
            fuel: Some(1_000_000),
            memory_bytes: None,
            timeout_ms: Some(500),
            max_output: None,
        },
        cgi: true,
        content_type: Some("text/html".into()),
        files: None,
        allow_hosts: vec!["example.com:443".into()],
    }
}

fn meta() -> CallMeta {
    CallMeta {
        request_id: "0123456789abcdef".into(),
        method: "POST".into(),
        query: "x=1".into(),
        content_type: "text/plain".into(),
        headers: vec![("accept".into(), "*/*".into())],
        path_info: "/users/42".into(),
        remote_addr: Some("192.0.2.1".into()),
        server_name: "gw.example".into(),
        server_port: 7780,
        depth: 0,
        deadline_ms: None,
    }
}

fn receipt(executor: &Keypair, caller: &Keypair) -> SignedReceipt {
    Receipt {
        function: ContentHash::of(b"module"),
        caller: caller.id(),
        executor: executor.id(),
        fuel_used: 12_345,
        duration_us: 678,
        time_ms: NOW,
        request_id: "0123456789abcdef".into(),
    }
    .sign(executor)
    .expect("sign receipt")
}

fn records(k: &Keypair, sup: &PeerAddr) -> Vec<(&'static str, Record)> {
    let node = RecordKind::Node(NodeRecord {
        id: k.id(),
        home_supers: vec![*sup],
        observed: vec![addr("203.0.113.7:40000")],
        local: vec![addr("192.168.1.20:7701")],
        nat: "cone".into(),
        capacity: 4,
    });
    let name = RecordKind::Name(NameRecord {
        name: "hello".into(),
        owner: k.public(),
        hash: ContentHash::of(b"module"),
        settings: settings(),
        version: 1,
        removed: false,
    });
    let provider = RecordKind::Provider(ProviderRecord {
        hash: ContentHash::of(b"module"),
        providers: vec![ProviderEntry {
            node: k.id(),
            home_supers: vec![*sup],
        }],
    });
    let sign = |kind| Record::sign(kind, k, 7, NOW + 3_600_000).expect("sign record");
    vec![
        ("node", sign(node)),
        ("name", sign(name)),
        ("provider", sign(provider)),
    ]
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let exec = Keypair::from_seed([1; 32]);
    let caller = Keypair::from_seed([2; 32]);
    let sup_key = Keypair::from_seed([3; 32]);
    let sup = PeerAddr {
        id: sup_key.id(),
        addr: addr("198.51.100.1:7700"),
    };
    let signed = receipt(&exec, &caller);
    let records = records(&exec, &sup);

    // frame_decoder: framed requests and responses.
    let dir = root.join("frame_decoder");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let requests = [
        (
            "hello",
            Request::Hello(Hello {
                role: Role::Client,
                version: 1,
                capacity: 4,
                listen_addrs: vec![addr("0.0.0.0:7701"), addr("[::1]:7701")],
                hosted: vec![HostedReplica {
                    name: "hello".into(),
                    hash: ContentHash::of(b"module"),
                }],
                agent: "orb/0.1.0".into(),
            }),
        ),
        ("ping", Request::Ping { nonce: 42 }),
        (
            "deploy",
            Request::Deploy {
                name: "hello".into(),
                hash: ContentHash::of(b"module"),
                settings: settings(),
                here: true,
            },
        ),
        (
            "run",
            Request::Run {
                name: "hello".into(),
                hash: ContentHash::of(b"module"),
                settings: Box::new(settings()),
                meta: Box::new(meta()),
                caller: caller.id(),
            },
        ),
        (
            "invoke",
            Request::Invoke {
                name: "hello".into(),
                meta: meta(),
            },
        ),
        (
            "punch_now",
            Request::PunchNow {
                from: caller.id(),
                addrs: vec![addr("203.0.113.9:5000")],
                rtt_ms: 30,
            },
        ),
        ("receipt", Request::Receipt(Box::new(signed.clone()))),
        (
            "dht_store",
            Request::Dht(DhtMessage {
                from_server: Some(sup),
                body: DhtRequest::Store {
                    record: Box::new(records[1].1.clone()),
                },
            }),
        ),
    ];
    for (name, req) in &requests {
        write(
            &dir,
            &format!("req_{name}"),
            &encode_frame(req).expect("frame"),
        );
    }
    let responses = [
        (
            "welcome",
            Response::Welcome(Welcome {
                node: sup.id,
                observed_addr: addr("203.0.113.7:40000"),
            }),
        ),
        (
            "ran",
            Response::Ran {
                node: exec.id(),
                outcome: RunOutcome {
                    status: RunStatus::LimitExceeded {
                        limit: "fuel".into(),
                        detail: "1000000".into(),
                    },
                    fuel_used: 1_000_000,
                    duration_us: 900,
                    stderr: "out of fuel\n".into(),
                    http: None,
                },
                receipt: Some(Box::new(signed.clone())),
            },
        ),
        (
            "error",
            Response::Error(WireError::new(ErrorKind::Busy, "every replica is busy")),
        ),
        (
            "dht_value",
            Response::Dht(DhtResponse::Value {
                records: records.iter().map(|(_, r)| r.clone()).collect(),
                closer: vec![sup],
            }),
        ),
    ];
    for (name, resp) in &responses {
        write(
            &dir,
            &format!("resp_{name}"),
            &encode_frame(resp).expect("frame"),
        );
    }

    // record_verify: bare records (valid at NOW) and DHT messages.
    let dir = root.join("record_verify");
    std::fs::create_dir_all(&dir).expect("mkdir");
    for (name, r) in &records {
        assert_eq!(r.verify(NOW), Ok(()));
        write(&dir, &format!("record_{name}"), &encode(r).expect("encode"));
    }
    let msgs = [
        (
            "find_node",
            DhtRequest::FindNode {
                target: Key([9; 32]),
            },
        ),
        (
            "store",
            DhtRequest::Store {
                record: Box::new(records[0].1.clone()),
            },
        ),
    ];
    for (name, body) in msgs {
        let m = DhtMessage {
            from_server: Some(sup),
            body,
        };
        write(&dir, &format!("msg_{name}"), &encode(&m).expect("encode"));
    }
    let value = DhtResponse::Value {
        records: records.iter().map(|(_, r)| r.clone()).collect(),
        closer: vec![sup],
    };
    write(&dir, "resp_value", &encode(&value).expect("encode"));

    // receipt_verify: bare receipts and the messages that carry them.
    let dir = root.join("receipt_verify");
    std::fs::create_dir_all(&dir).expect("mkdir");
    assert_eq!(signed.verify(), Ok(()));
    write(&dir, "receipt", &encode(&signed).expect("encode"));
    let other = receipt(&caller, &exec);
    write(&dir, "receipt_other", &encode(&other).expect("encode"));
    let req = Request::Receipt(Box::new(signed.clone()));
    write(&dir, "req_receipt", &encode(&req).expect("encode"));
    let (_, ran) = &responses[1];
    write(&dir, "resp_ran", &encode(ran).expect("encode"));

    // gateway_request: see the format in fuzz_targets/gateway_request.rs.
    let dir = root.join("gateway_request");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let requests: [(&str, &str); 6] = [
        (
            "invoke",
            "POST /fn/hello?lang=en&x=%20y 64\ncontent-type: text/plain\ncontent-length: 5\nx-trace: abc\n\nhello",
        ),
        (
            "invoke_too_large",
            "POST /fn/hello 4\ncontent-length: 5\n\nhello",
        ),
        (
            "invoke_lying_length",
            "POST /fn/hello 8\nContent-Length: 1\r\nAccept: */*\r\n\nmore than eight bytes",
        ),
        (
            "deploy",
            "POST /api/deploy?name=hello&replicas=2&max_replicas=3&arg=--upper&env=LANG%3DC&fuel=1000000&memory_bytes=65536&timeout_ms=500&max_output=1024&here=1 1024\ncontent-type: application/wasm\n\n\0asm\x01\0\0\0",
        ),
        (
            "deploy_bad",
            "POST /api/deploy?name=Hello&replicas=0&fuel=0&env=noequals&bogus 16\n\n",
        ),
        ("get_empty", "GET /fn/x?"),
    ];
    for (name, text) in requests {
        write(&dir, name, text.as_bytes());
    }
    println!("seeds written under {}", root.display());
}
