//! Property tests for call receipts: signed receipts verify and round-trip,
//! random bytes never panic the decoder or `verify`, and any tampering with
//! a signed receipt (a flipped bit of its encoding, a changed field, another
//! key) makes it fail verification. The fuzz target `receipt_verify` in
//! `fuzz/` runs the same checks on far more inputs.

use orb_proto::codec::{decode, encode};
use orb_proto::receipt::{Receipt, ReceiptError, SignedReceipt};
use orb_proto::wire::{Request, Response};
use orb_proto::{ContentHash, Keypair, OrbId};
use proptest::prelude::*;

/// A receipt validly signed by its executor.
fn signed() -> impl Strategy<Value = SignedReceipt> {
    (
        any::<[u8; 32]>(),
        any::<[u8; 32]>(),
        any::<[u8; 32]>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        ".{0,24}",
    )
        .prop_map(
            |(seed, function, caller, fuel_used, duration_us, time_ms, request_id)| {
                let k = Keypair::from_seed(seed);
                Receipt {
                    function: ContentHash(function),
                    caller: OrbId(caller),
                    executor: k.id(),
                    fuel_used,
                    duration_us,
                    time_ms,
                    request_id,
                }
                .sign(&k)
                .expect("sign")
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn signed_receipts_verify_and_round_trip(r in signed()) {
        prop_assert_eq!(r.verify(), Ok(()));
        let back: SignedReceipt = decode(&encode(&r).expect("encode")).expect("decode");
        prop_assert_eq!(back.verify(), Ok(()));
        prop_assert_eq!(back.receipt.id().expect("id"), r.receipt.id().expect("id"));
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(r) = decode::<SignedReceipt>(&bytes) {
            let _ = r.verify();
            let _ = r.receipt.id();
        }
        if let Ok(Request::Receipt(r)) = decode::<Request>(&bytes) {
            let _ = r.verify();
        }
        if let Ok(Response::Ran { receipt: Some(r), .. }) = decode::<Response>(&bytes) {
            let _ = r.verify();
        }
    }

    /// Flipping any single bit of an encoded receipt either breaks decoding
    /// or yields a receipt that fails verification.
    #[test]
    fn tampered_receipts_fail(r in signed(), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut bytes = encode(&r).expect("encode");
        let i = pos.index(bytes.len());
        bytes[i] ^= 1 << bit;
        if let Ok(t) = decode::<SignedReceipt>(&bytes)
            && t != r
        {
            prop_assert!(t.verify().is_err(), "tampered receipt verified: {t:?}");
        }
    }

    /// Changing what the receipt claims, or presenting it under another
    /// key (even one that signed it), never verifies.
    #[test]
    fn tampered_fields_fail(
        r in signed(),
        fuel in any::<u64>(),
        request_id in ".{0,24}",
        other in any::<[u8; 32]>(),
    ) {
        let mut t = r.clone();
        t.receipt.fuel_used = fuel;
        if t != r {
            prop_assert_eq!(t.verify(), Err(ReceiptError::BadSignature));
        }
        let mut t = r.clone();
        t.receipt.request_id = request_id;
        if t != r {
            prop_assert_eq!(t.verify(), Err(ReceiptError::BadSignature));
        }
        let mallory = Keypair::from_seed(other);
        prop_assume!(mallory.id() != r.receipt.executor);
        // Mallory's key on the executor's receipt: the key is not the executor's.
        let mut t = r.clone();
        t.key = mallory.public();
        let res = t.verify();
        prop_assert!(matches!(res, Err(ReceiptError::WrongSigner { .. })), "{res:?}");
        // Mallory naming herself the executor of someone else's signature.
        let mut t = r.clone();
        t.receipt.executor = mallory.id();
        t.key = mallory.public();
        prop_assert_eq!(t.verify(), Err(ReceiptError::BadSignature));
        // Mallory re-signing the receipt as is: it still names the executor.
        let t = r.receipt.clone().sign(&mallory).expect("sign");
        let res = t.verify();
        prop_assert!(matches!(res, Err(ReceiptError::WrongSigner { .. })), "{res:?}");
    }
}
