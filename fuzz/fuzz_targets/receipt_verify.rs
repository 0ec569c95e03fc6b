//! Call receipts on arbitrary bytes: decoding a `SignedReceipt` (bare, in
//! `Request::Receipt` or in `Response::Ran`) and verifying it never panics;
//! a receipt that verifies names its signer as the executor and keeps
//! verifying after a round trip.

#![no_main]

use libfuzzer_sys::fuzz_target;
use orb_proto::codec::{decode, encode};
use orb_proto::receipt::SignedReceipt;
use orb_proto::wire::{Request, Response};

fn check(r: &SignedReceipt) {
    let id = r.receipt.id();
    if r.verify().is_ok() {
        assert_eq!(r.key.id(), r.receipt.executor);
        assert!(id.is_ok(), "a verified receipt has an ID");
        let back: SignedReceipt = decode(&encode(r).expect("encode")).expect("decode");
        assert_eq!(back.verify(), Ok(()));
        assert_eq!(back.receipt.id(), id);
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = decode::<SignedReceipt>(data) {
        check(&r);
    }
    if let Ok(Request::Receipt(r)) = decode::<Request>(data) {
        check(&r);
    }
    if let Ok(Response::Ran {
        receipt: Some(r), ..
    }) = decode::<Response>(data)
    {
        check(&r);
    }
});
