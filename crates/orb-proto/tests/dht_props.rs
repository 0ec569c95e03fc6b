//! Property tests for DHT records and messages: every message round-trips
//! through the codec (bare and inside `Request::Dht` / `Response::Dht`),
//! random bytes never panic the decoder, and any tampering with a signed
//! record makes it fail verification.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use orb_proto::codec::{decode, decode_frame, encode, encode_frame};
use orb_proto::dht::*;
use orb_proto::wire::{FunctionSettings, Request, Response};
use orb_proto::{ContentHash, Keypair, OrbId, PeerAddr};
use proptest::prelude::*;

const NOW: u64 = 1_700_000_000_000;

fn addr() -> impl Strategy<Value = SocketAddr> {
    (any::<u32>(), any::<u16>())
        .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port))
}
fn peer() -> impl Strategy<Value = PeerAddr> {
    (any::<[u8; 32]>(), addr()).prop_map(|(id, addr)| PeerAddr {
        id: OrbId(id),
        addr,
    })
}
fn key() -> impl Strategy<Value = Key> {
    any::<[u8; 32]>().prop_map(Key)
}

/// A validly signed record of a random kind.
fn record() -> impl Strategy<Value = Record> {
    (
        any::<[u8; 32]>(),
        0u8..3,
        "[a-z]{1,20}",
        prop::collection::vec(peer(), 0..4),
        prop::collection::vec(addr(), 0..4),
        any::<u64>(),
        1u64..MAX_RECORD_TTL_MS,
        any::<u32>(),
    )
        .prop_map(|(seed, which, name, supers, addrs, seq, ttl, cap)| {
            let k = Keypair::from_seed(seed);
            let kind = match which {
                0 => RecordKind::Node(NodeRecord {
                    id: k.id(),
                    home_supers: supers,
                    observed: addrs.clone(),
                    local: addrs,
                    nat: "cone".into(),
                    capacity: cap,
                }),
                1 => RecordKind::Name(NameRecord {
                    name,
                    owner: k.public(),
                    hash: ContentHash::of(&seed),
                    settings: FunctionSettings::default(),
                    version: 1,
                    removed: false,
                }),
                _ => RecordKind::Provider(ProviderRecord {
                    hash: ContentHash::of(&seed),
                    providers: vec![ProviderEntry {
                        node: k.id(),
                        home_supers: supers,
                    }],
                }),
            };
            Record::sign(kind, &k, seq, NOW + ttl).expect("sign")
        })
}

fn dht_request() -> impl Strategy<Value = DhtRequest> {
    prop_oneof![
        Just(DhtRequest::Ping),
        key().prop_map(|target| DhtRequest::FindNode { target }),
        key().prop_map(|key| DhtRequest::FindValue { key }),
        record().prop_map(|record| DhtRequest::Store {
            record: Box::new(record)
        }),
    ]
}

fn dht_message() -> impl Strategy<Value = DhtMessage> {
    (prop::option::of(peer()), dht_request())
        .prop_map(|(from_server, body)| DhtMessage { from_server, body })
}

fn dht_response() -> impl Strategy<Value = DhtResponse> {
    prop_oneof![
        Just(DhtResponse::Pong),
        prop::collection::vec(peer(), 0..5).prop_map(|closer| DhtResponse::Nodes { closer }),
        (
            prop::collection::vec(record(), 0..3),
            prop::collection::vec(peer(), 0..5)
        )
            .prop_map(|(records, closer)| DhtResponse::Value { records, closer }),
        Just(DhtResponse::Stored),
        ".{0,30}".prop_map(DhtResponse::Refused),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn messages_round_trip(msg in dht_message(), resp in dht_response()) {
        let bytes = encode(&msg).expect("encode");
        prop_assert_eq!(decode::<DhtMessage>(&bytes).expect("decode"), msg.clone());
        let req = Request::Dht(msg);
        let frame = encode_frame(&req).expect("frame");
        prop_assert_eq!(decode_frame::<Request>(&frame).expect("decode"), req);

        let bytes = encode(&resp).expect("encode");
        prop_assert_eq!(decode::<DhtResponse>(&bytes).expect("decode"), resp.clone());
        let resp = Response::Dht(resp);
        let frame = encode_frame(&resp).expect("frame");
        prop_assert_eq!(decode_frame::<Response>(&frame).expect("decode"), resp);
    }

    #[test]
    fn signed_records_verify_and_round_trip(r in record()) {
        prop_assert_eq!(r.verify(NOW), Ok(()));
        let back: Record = decode(&encode(&r).expect("encode")).expect("decode");
        prop_assert_eq!(back.verify(NOW), Ok(()));
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode::<DhtMessage>(&bytes);
        let _ = decode::<DhtResponse>(&bytes);
        if let Ok(r) = decode::<Record>(&bytes) {
            let _ = r.verify(NOW);
        }
    }

    /// Flipping any single bit of an encoded record either breaks decoding
    /// or yields a record that fails verification.
    #[test]
    fn tampered_records_fail(r in record(), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut bytes = encode(&r).expect("encode");
        let i = pos.index(bytes.len());
        bytes[i] ^= 1 << bit;
        if let Ok(t) = decode::<Record>(&bytes)
            && t != r
        {
            prop_assert!(t.verify(NOW).is_err(), "tampered record verified: {t:?}");
        }
    }

    #[test]
    fn tampered_fields_fail(r in record(), seq in any::<u64>(), other in any::<[u8; 32]>()) {
        let mut t = r.clone();
        t.seq = seq;
        if t.seq != r.seq {
            prop_assert!(t.verify(NOW).is_err());
        }
        let mut t = r.clone();
        t.expires_ms = r.expires_ms.saturating_sub(1).max(NOW + 1);
        if t.expires_ms != r.expires_ms {
            prop_assert!(t.verify(NOW).is_err());
        }
        // Re-signing under another key does not make it someone else's.
        let mut t = r.clone();
        t.publisher = Keypair::from_seed(other).public();
        prop_assume!(t.publisher != r.publisher);
        prop_assert!(t.verify(NOW).is_err());
    }
}
