//! The wire codec on arbitrary bytes: `decode_frame` and `decode` of
//! `Request` and `Response` must return an error or a message, never panic
//! or allocate past the frame limit, and whatever decodes must encode back
//! to something that decodes to the same message.

#![no_main]

use libfuzzer_sys::fuzz_target;
use orb_proto::codec::{decode, decode_frame, encode, encode_frame};
use orb_proto::limits::MAX_FRAME;
use orb_proto::wire::{Request, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

fn check<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(msg) = decode::<T>(data) {
        assert!(data.len() <= MAX_FRAME);
        let bytes = encode(&msg).expect("a decoded message encodes");
        assert!(bytes.len() <= data.len(), "re-encoding grew the message");
        assert_eq!(
            decode::<T>(&bytes).expect("re-encoded message decodes"),
            msg
        );
        let frame = encode_frame(&msg).expect("a decoded message frames");
        assert_eq!(decode_frame::<T>(&frame).expect("frame decodes"), msg);
    }
    if let Ok(msg) = decode_frame::<T>(data) {
        // A frame is its 4-byte length and exactly that many bytes.
        let body = &data[4..];
        assert_eq!(
            u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize,
            body.len()
        );
        assert_eq!(decode::<T>(body).expect("frame body decodes alone"), msg);
    }
}

fuzz_target!(|data: &[u8]| {
    check::<Request>(data);
    check::<Response>(data);
});
