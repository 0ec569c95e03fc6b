//! Property tests: every message round-trips, and arbitrary bytes fed to the
//! decoder produce errors, never panics.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use orb_proto::codec::{decode, decode_frame, encode, encode_frame};
use orb_proto::wire::*;
use orb_proto::{ContentHash, OrbId};
use proptest::prelude::*;

fn id() -> impl Strategy<Value = OrbId> {
    any::<[u8; 32]>().prop_map(OrbId)
}
fn hash() -> impl Strategy<Value = ContentHash> {
    any::<[u8; 32]>().prop_map(ContentHash)
}
fn addr() -> impl Strategy<Value = SocketAddr> {
    (any::<u32>(), any::<u16>())
        .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port))
}
fn text() -> impl Strategy<Value = String> {
    ".{0,24}"
}
fn limits() -> impl Strategy<Value = CallLimits> {
    (
        any::<Option<u64>>(),
        any::<Option<u64>>(),
        any::<Option<u64>>(),
        any::<Option<u64>>(),
    )
        .prop_map(|(fuel, memory_bytes, timeout_ms, max_output)| CallLimits {
            fuel,
            memory_bytes,
            timeout_ms,
            max_output,
        })
}
fn settings() -> impl Strategy<Value = FunctionSettings> {
    let base = (
        any::<u32>(),
        any::<u32>(),
        prop::collection::vec(text(), 0..3),
        prop::collection::vec((text(), text()), 0..3),
        limits(),
    );
    let bundle = prop::option::of((any::<[u8; 32]>(), any::<u64>(), any::<u32>()).prop_map(
        |(h, size, entries)| BundleRef {
            hash: ContentHash(h),
            size,
            entries,
        },
    ));
    let http = (
        any::<bool>(),
        prop::option::of(text()),
        bundle,
        prop::collection::vec(text(), 0..3),
    );
    (base, http).prop_map(
        |((replicas, max_replicas, args, env, limits), (cgi, content_type, files, allow_hosts))| {
            FunctionSettings {
                replicas,
                max_replicas,
                args,
                env,
                limits,
                cgi,
                content_type,
                files,
                allow_hosts,
            }
        },
    )
}
fn meta() -> impl Strategy<Value = CallMeta> {
    let base = (
        text(),
        text(),
        text(),
        text(),
        prop::collection::vec((text(), text()), 0..3),
    );
    let cgi = (
        text(),
        prop::option::of(text()),
        text(),
        any::<u16>(),
        any::<u8>(),
        prop::option::of(any::<u64>()),
    );
    (base, cgi).prop_map(
        |(
            (request_id, method, query, content_type, headers),
            (path_info, remote_addr, server_name, server_port, depth, deadline_ms),
        )| CallMeta {
            request_id,
            method,
            query,
            content_type,
            headers,
            path_info,
            remote_addr,
            server_name,
            server_port,
            depth,
            deadline_ms,
        },
    )
}
fn outcome() -> impl Strategy<Value = RunOutcome> {
    let status = prop_oneof![
        any::<i32>().prop_map(RunStatus::Exited),
        text().prop_map(RunStatus::Trapped),
        (text(), text()).prop_map(|(limit, detail)| RunStatus::LimitExceeded { limit, detail }),
    ];
    let http = proptest::option::of(
        (
            any::<u16>(),
            proptest::collection::vec((text(), text()), 0..4),
            proptest::option::of(text()),
        )
            .prop_map(|(status, headers, error)| HttpHead {
                status,
                headers,
                error,
            }),
    );
    (status, any::<u64>(), any::<u64>(), text(), http).prop_map(
        |(status, fuel_used, duration_us, stderr, http)| RunOutcome {
            status,
            fuel_used,
            duration_us,
            stderr,
            http,
        },
    )
}
fn error_kind() -> impl Strategy<Value = ErrorKind> {
    prop_oneof![
        Just(ErrorKind::NotFound),
        Just(ErrorKind::BadRequest),
        Just(ErrorKind::TooLarge),
        Just(ErrorKind::Busy),
        Just(ErrorKind::Unavailable),
        Just(ErrorKind::Forbidden),
        Just(ErrorKind::FunctionFailed),
        Just(ErrorKind::Internal),
        Just(ErrorKind::Quota),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    let hello = (
        prop_oneof![Just(Role::Super), Just(Role::Client)],
        any::<u32>(),
        any::<u32>(),
        prop::collection::vec(addr(), 0..3),
        prop::collection::vec(
            (text(), hash()).prop_map(|(name, hash)| HostedReplica { name, hash }),
            0..3,
        ),
        text(),
    )
        .prop_map(|(role, version, capacity, listen_addrs, hosted, agent)| {
            Request::Hello(Hello {
                role,
                version,
                capacity,
                listen_addrs,
                hosted,
                agent,
            })
        });
    prop_oneof![
        hello,
        any::<u64>().prop_map(|nonce| Request::Ping { nonce }),
        (text(), hash(), settings(), any::<bool>()).prop_map(|(name, hash, settings, here)| {
            Request::Deploy {
                name,
                hash,
                settings,
                here,
            }
        }),
        (text(), meta()).prop_map(|(name, meta)| Request::Invoke { name, meta }),
        (text(), hash(), settings(), meta(), id()).prop_map(
            |(name, hash, settings, meta, caller)| {
                Request::Run {
                    name,
                    hash,
                    settings: Box::new(settings),
                    meta: Box::new(meta),
                    caller,
                }
            }
        ),
        (
            text(),
            hash(),
            proptest::option::of((hash(), any::<u64>(), any::<u32>()))
        )
            .prop_map(|(name, hash, files)| Request::Place {
                name,
                hash,
                files: files.map(|(hash, size, entries)| BundleRef {
                    hash,
                    size,
                    entries
                }),
            }),
        hash().prop_map(|hash| Request::FetchModule { hash }),
        Just(Request::ListFunctions),
        (text(), hash()).prop_map(|(name, hash)| Request::Unplace { name, hash }),
        Just(Request::Balance),
        (id(), prop::collection::vec(addr(), 0..3))
            .prop_map(|(target, addrs)| Request::Punch { target, addrs }),
        (id(), prop::collection::vec(addr(), 0..3), any::<u32>()).prop_map(
            |(from, addrs, rtt_ms)| Request::PunchNow {
                from,
                addrs,
                rtt_ms
            }
        ),
        id().prop_map(|target| Request::Relay { target }),
        id().prop_map(|from| Request::RelayIncoming { from }),
        Just(Request::DialBack),
    ]
}

fn response() -> impl Strategy<Value = Response> {
    let info = (
        text(),
        hash(),
        id(),
        any::<u64>(),
        settings(),
        prop::collection::vec(id(), 0..3),
    )
        .prop_map(
            |(name, hash, owner, size, settings, replicas)| FunctionInfo {
                name,
                hash,
                owner,
                size,
                settings,
                replicas,
            },
        );
    prop_oneof![
        (id(), addr()).prop_map(|(node, observed_addr)| Response::Welcome(Welcome {
            node,
            observed_addr
        })),
        any::<u64>().prop_map(|nonce| Response::Pong { nonce }),
        (
            text(),
            hash(),
            prop::collection::vec(id(), 0..3),
            any::<u64>()
        )
            .prop_map(|(name, hash, placed_on, version)| {
                Response::Deployed {
                    name,
                    hash,
                    placed_on,
                    version,
                }
            }),
        (id(), outcome(), any::<bool>(), any::<u64>()).prop_map(
            |(node, outcome, with_receipt, fuel)| {
                let receipt = with_receipt.then(|| {
                    let k = orb_proto::Keypair::from_seed([5; 32]);
                    orb_proto::receipt::Receipt {
                        function: ContentHash([1; 32]),
                        caller: node,
                        executor: k.id(),
                        fuel_used: fuel,
                        duration_us: 1,
                        time_ms: 2,
                        request_id: "r".into(),
                    }
                    .sign(&k)
                    .map(Box::new)
                    .expect("sign")
                });
                Response::Ran {
                    node,
                    outcome,
                    receipt,
                }
            }
        ),
        Just(Response::Placed),
        Just(Response::RelayReady),
        Just(Response::ReceiptRecorded),
        (prop::collection::vec(addr(), 0..3), any::<u32>())
            .prop_map(|(addrs, rtt_ms)| Response::PunchAddrs { addrs, rtt_ms }),
        (addr(), any::<bool>())
            .prop_map(|(dialed, reachable)| Response::DialBack { dialed, reachable }),
        hash().prop_map(|hash| Response::Module { hash }),
        prop::collection::vec(info, 0..3).prop_map(Response::Functions),
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
            |(earned, spent, calls_served, calls_made)| {
                Response::Balance(orb_proto::wire::Credits {
                    earned,
                    spent,
                    calls_served,
                    calls_made,
                })
            }
        ),
        (error_kind(), text())
            .prop_map(|(kind, message)| Response::Error(WireError { kind, message })),
    ]
}

/// The function-management messages: remove, rollback, versions, logs.
fn app_message() -> impl Strategy<Value = (Request, Response)> {
    use orb_proto::logs::{LogEntry, LogKind, LogsQuery};
    use orb_proto::wire::VersionInfo;
    let version = (any::<u64>(), hash(), any::<u64>(), settings(), any::<u64>()).prop_map(
        |(version, hash, size, settings, created_ms)| VersionInfo {
            version,
            hash,
            size,
            settings,
            created_ms,
        },
    );
    let entry = (
        any::<u64>(),
        id(),
        any::<u64>(),
        text(),
        any::<bool>(),
        text(),
    )
        .prop_map(|(time_ms, node, seq, request_id, is_line, line)| LogEntry {
            time_ms,
            node,
            seq,
            request_id,
            kind: if is_line {
                LogKind::Stderr(line)
            } else {
                LogKind::Call {
                    status: line,
                    duration_us: seq,
                    fuel: time_ms,
                }
            },
        });
    (
        text(),
        prop::option::of(any::<u64>()),
        any::<u64>(),
        any::<bool>(),
        prop::collection::vec(version, 0..3),
        prop::collection::vec(entry, 0..3),
        prop::collection::vec(id(), 0..3),
    )
        .prop_flat_map(
            move |(name, to, since_ms, fan_out, versions, entries, placed_on)| {
                let k = orb_proto::Keypair::from_seed([6; 32]);
                let query = LogsQuery {
                    name: name.clone(),
                    since_ms,
                    issued_ms: since_ms,
                }
                .sign(&k)
                .expect("sign");
                let current = versions.first().cloned();
                let pairs = vec![
                    (
                        Request::Remove { name: name.clone() },
                        Response::Removed {
                            name: name.clone(),
                            replicas: 2,
                        },
                    ),
                    (
                        Request::Rollback {
                            name: name.clone(),
                            to,
                        },
                        match current {
                            Some(c) => Response::RolledBack {
                                current: Box::new(c),
                                placed_on: placed_on.clone(),
                            },
                            None => Response::Placed,
                        },
                    ),
                    (
                        Request::Versions { name: name.clone() },
                        Response::Versions {
                            current: since_ms,
                            versions: versions.clone(),
                        },
                    ),
                    (
                        Request::Logs {
                            query: Box::new(query),
                            fan_out,
                        },
                        Response::Logs(entries.clone()),
                    ),
                ];
                prop::sample::select(pairs)
            },
        )
}

proptest! {
    #[test]
    fn app_messages_round_trip((req, resp) in app_message()) {
        let frame = encode_frame(&req).expect("frame");
        prop_assert_eq!(decode_frame::<Request>(&frame).expect("decode"), req);
        let frame = encode_frame(&resp).expect("frame");
        prop_assert_eq!(decode_frame::<Response>(&frame).expect("decode"), resp);
    }

    #[test]
    fn requests_round_trip(req in request()) {
        let bytes = encode(&req).expect("encode");
        prop_assert_eq!(decode::<Request>(&bytes).expect("decode"), req.clone());
        let frame = encode_frame(&req).expect("frame");
        prop_assert_eq!(decode_frame::<Request>(&frame).expect("decode frame"), req);
    }

    #[test]
    fn responses_round_trip(resp in response()) {
        let frame = encode_frame(&resp).expect("frame");
        prop_assert_eq!(decode_frame::<Response>(&frame).expect("decode frame"), resp);
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode::<Request>(&bytes);
        let _ = decode::<Response>(&bytes);
        let _ = decode_frame::<Request>(&bytes);
        let _ = decode_frame::<Response>(&bytes);
    }

    #[test]
    fn truncated_frames_are_errors(req in request(), cut in 0usize..64) {
        let frame = encode_frame(&req).expect("frame");
        let cut = cut.min(frame.len().saturating_sub(1));
        prop_assert!(decode_frame::<Request>(&frame[..cut]).is_err());
    }
}

#[test]
fn huge_declared_length_is_refused_before_allocating() {
    let mut frame = (u32::MAX).to_be_bytes().to_vec();
    frame.extend_from_slice(&[0; 8]);
    assert!(matches!(
        decode_frame::<Request>(&frame),
        Err(orb_proto::CodecError::TooLarge { .. })
    ));
}

#[test]
fn huge_vec_length_inside_message_is_refused() {
    // A Functions response claiming 2^60 entries: bincode's limit stops it.
    let mut bytes = encode(&Response::Functions(vec![])).expect("encode");
    bytes.pop();
    bytes.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0x10]);
    assert!(decode::<Response>(&bytes).is_err());
}
