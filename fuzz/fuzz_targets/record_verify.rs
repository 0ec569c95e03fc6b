//! DHT records and messages on arbitrary bytes: decoding never panics, and
//! `Record::verify` never panics, whatever the clock. A record that verifies
//! keeps verifying after a round trip and obeys the ownership rules.

#![no_main]

use libfuzzer_sys::fuzz_target;
use orb_proto::codec::{decode, encode};
use orb_proto::dht::{
    DhtMessage, DhtRequest, DhtResponse, Key, Record, RecordKind, merge_providers,
};
use orb_proto::wire::{Request, Response};

/// The clock the seed records were signed against (see gen_corpus).
const NOW: u64 = 1_700_000_000_000;

fn check(r: &Record) {
    // At the seeds' clock, at the edges of the record's lifetime, and at
    // the extremes: only the outcome may differ, never a panic.
    let clocks = [
        NOW,
        0,
        u64::MAX,
        r.expires_ms,
        r.expires_ms.saturating_sub(1),
        r.expires_ms
            .saturating_sub(orb_proto::dht::MAX_RECORD_TTL_MS),
    ];
    for now in clocks {
        if r.verify(now).is_ok() {
            assert!(now < r.expires_ms);
            assert_eq!(r.key, r.kind.key(&r.publisher));
            match &r.kind {
                RecordKind::Node(n) => assert_eq!(n.id, r.publisher.id()),
                RecordKind::Name(n) => {
                    assert_eq!(n.owner, r.publisher);
                    assert_eq!(r.key, Key::for_name(&n.name));
                }
                RecordKind::Provider(p) => {
                    assert_eq!(p.providers.len(), 1);
                    assert_eq!(p.providers[0].node, r.publisher.id());
                }
            }
            let back: Record = decode(&encode(r).expect("encode")).expect("decode");
            assert_eq!(back.verify(now), Ok(()));
        }
    }
    if let RecordKind::Provider(p) = &r.kind {
        let merged = merge_providers(&p.hash, std::slice::from_ref(r));
        assert!(merged.providers.len() <= p.providers.len());
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = decode::<Record>(data) {
        check(&r);
    }
    if let Ok(DhtMessage {
        body: DhtRequest::Store { record },
        ..
    }) = decode::<DhtMessage>(data)
    {
        check(&record);
    }
    if let Ok(DhtResponse::Value { records, .. }) = decode::<DhtResponse>(data) {
        for r in &records {
            check(r);
        }
    }
    // The same messages as they travel, inside Request::Dht / Response::Dht.
    if let Ok(Request::Dht(DhtMessage {
        body: DhtRequest::Store { record },
        ..
    })) = decode::<Request>(data)
    {
        check(&record);
    }
    if let Ok(Response::Dht(DhtResponse::Value { records, .. })) = decode::<Response>(data) {
        for r in &records {
            check(r);
        }
    }
});
