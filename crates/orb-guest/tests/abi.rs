//! The ABI codec: round trips, hostile bytes, field checks, counters.
#![allow(clippy::unwrap_used)]

use orb_guest::abi::{
    self, CallRequest, HttpRequest, MAX_HEADERS, Malformed, Response, decode_current,
    encode_current, format_counter, parse_counter,
};
use proptest::prelude::*;

fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec((".{0,12}", ".{0,20}"), 0..6)
}

proptest! {
    #[test]
    fn http_requests_round_trip(method in ".{0,10}", url in ".{0,40}", headers in headers(),
                                body in prop::collection::vec(any::<u8>(), 0..64)) {
        let req = HttpRequest { method, url, headers, body };
        let blob = req.encode().unwrap();
        prop_assert_eq!(HttpRequest::decode(&blob).unwrap(), req);
    }

    #[test]
    fn call_requests_round_trip(function in ".{0,10}", method in ".{0,6}", path in ".{0,20}",
                                query in ".{0,20}", headers in headers(),
                                body in prop::collection::vec(any::<u8>(), 0..64)) {
        let req = CallRequest { function, method, path, query, headers, body };
        let blob = req.encode().unwrap();
        prop_assert_eq!(CallRequest::decode(&blob).unwrap(), req);
    }

    #[test]
    fn responses_round_trip(status in any::<u16>(), headers in headers(),
                            body in prop::collection::vec(any::<u8>(), 0..64)) {
        let resp = Response { status, headers, body };
        let blob = resp.encode().unwrap();
        prop_assert_eq!(blob.len(), resp.encoded_len());
        prop_assert_eq!(Response::decode(&blob).unwrap(), resp);
    }

    #[test]
    fn random_bytes_never_panic(blob in prop::collection::vec(any::<u8>(), 0..200)) {
        // Whatever decodes must re-encode to the same bytes: one encoding
        // per value.
        if let Ok(r) = HttpRequest::decode(&blob) { prop_assert_eq!(r.encode().unwrap(), blob.clone()); }
        if let Ok(r) = CallRequest::decode(&blob) { prop_assert_eq!(r.encode().unwrap(), blob.clone()); }
        if let Ok(r) = Response::decode(&blob) { prop_assert_eq!(r.encode().unwrap(), blob.clone()); }
        if let Ok(c) = decode_current(&blob) { prop_assert_eq!(encode_current(c.as_deref()), blob); }
    }

    #[test]
    fn counters_round_trip(n in any::<i64>()) {
        prop_assert_eq!(parse_counter(&format_counter(n)), Some(n));
    }

    #[test]
    fn only_canonical_counters_parse(s in "[-+ 0-9a]{0,21}") {
        if let Some(n) = parse_counter(s.as_bytes()) {
            prop_assert_eq!(format_counter(n), s.into_bytes());
        }
    }
}

#[test]
fn huge_lengths_are_refused_without_allocating() {
    // A length of 4 GiB in a 12-byte blob: refused by comparing with what
    // is left, not by trying to allocate.
    let mut blob = u32::MAX.to_le_bytes().to_vec();
    blob.extend_from_slice(&[0; 8]);
    let err = HttpRequest::decode(&blob).unwrap_err();
    assert!(err.0.contains("needs 4294967295 bytes"), "{err}");

    let mut many = Vec::new();
    many.extend_from_slice(&200u16.to_le_bytes());
    many.extend_from_slice(&u32::MAX.to_le_bytes());
    let err = Response::decode(&many).unwrap_err();
    assert_eq!(
        err,
        Malformed(format!("4294967295 headers; the limit is {MAX_HEADERS}"))
    );
}

#[test]
fn trailing_bytes_and_bad_utf8_are_malformed() {
    let mut blob = HttpRequest::new("GET", "http://a").encode().unwrap();
    blob.push(0);
    assert!(
        HttpRequest::decode(&blob)
            .unwrap_err()
            .0
            .contains("left over")
    );

    let mut bad = Vec::new();
    for field in [&b"GET"[..], &[0xff, 0xfe][..]] {
        bad.extend_from_slice(&(field.len() as u32).to_le_bytes());
        bad.extend_from_slice(field);
    }
    bad.extend_from_slice(&[0; 8]);
    assert_eq!(
        HttpRequest::decode(&bad).unwrap_err().0,
        "url is not valid UTF-8"
    );
}

#[test]
fn http_requests_are_checked() {
    let ok = HttpRequest::new("GET", "https://example.com/x?y=1");
    assert_eq!(ok.check(), Ok(()));
    let cases = [
        (HttpRequest::new("", "http://a"), "method"),
        (HttpRequest::new("G ET", "http://a"), "method"),
        (HttpRequest::new("GET", "ftp://a"), "http:// or https://"),
        (HttpRequest::new("GET", "http://"), "no host"),
        (HttpRequest::new("GET", "http:///x"), "no host"),
        (HttpRequest::new("GET", "http://a b"), "0x20"),
        (HttpRequest::new("GET", "http://a\n"), "0x0a"),
        (
            HttpRequest::new("GET", format!("http://{}", "a".repeat(abi::MAX_URL))),
            "the limit is",
        ),
        (
            HttpRequest {
                headers: vec![("bad name".into(), "v".into())],
                ..HttpRequest::new("GET", "http://a")
            },
            "header name",
        ),
        (
            HttpRequest {
                headers: vec![("x".into(), "a\r\nb: c".into())],
                ..HttpRequest::new("GET", "http://a")
            },
            "CR, LF or NUL",
        ),
        (
            HttpRequest {
                headers: vec![("x".into(), String::new()); MAX_HEADERS + 1],
                ..HttpRequest::new("GET", "http://a")
            },
            "headers; the limit",
        ),
    ];
    for (req, want) in cases {
        let err = req.check().unwrap_err();
        assert!(err.0.contains(want), "{req:?}: {err} lacks {want:?}");
    }
    // Multi-byte characters right at the scheme boundary do not panic.
    assert!(HttpRequest::new("GET", "httpé://x").check().is_err());
    assert!(HttpRequest::new("GET", "https://é").check().is_ok());
}

#[test]
fn call_requests_are_checked() {
    assert_eq!(CallRequest::new("upper", b"x".to_vec()).check(), Ok(()));
    let with = |f: fn(&mut CallRequest)| {
        let mut r = CallRequest::new("upper", Vec::new());
        f(&mut r);
        r.check().unwrap_err().0
    };
    assert!(with(|r| r.function.clear()).contains("1 to 64"));
    assert!(with(|r| r.function = "a".repeat(65)).contains("1 to 64"));
    assert!(with(|r| r.function = "a/b".into()).contains("'/'"));
    assert!(with(|r| r.method = "GET\n".into()).contains("method"));
    assert!(with(|r| r.path = "x".into()).contains("start with '/'"));
    assert!(with(|r| r.path = "/a?b".into()).contains("path contains"));
    assert!(with(|r| r.query = "a#b".into()).contains("query contains"));
}

#[test]
fn counters_are_canonical_decimal() {
    for (text, want) in [
        ("0", Some(0)),
        ("42", Some(42)),
        ("-7", Some(-7)),
        ("9223372036854775807", Some(i64::MAX)),
        ("-9223372036854775808", Some(i64::MIN)),
        ("9223372036854775808", None),
        ("", None),
        ("-", None),
        ("-0", None),
        ("007", None),
        ("+5", None),
        (" 5", None),
        ("5\n", None),
        ("1e3", None),
    ] {
        assert_eq!(parse_counter(text.as_bytes()), want, "{text:?}");
    }
    assert_eq!(parse_counter(&7i64.to_le_bytes()), None);
}

#[test]
fn conflict_results_encode_absence() {
    assert_eq!(encode_current(None), vec![0]);
    assert_eq!(encode_current(Some(b"")), vec![1]);
    assert_eq!(decode_current(&[1, b'a']).unwrap(), Some(b"a".to_vec()));
    assert_eq!(decode_current(&[0]).unwrap(), None);
    assert!(decode_current(&[]).is_err());
    assert!(decode_current(&[0, 1]).is_err());
    assert!(decode_current(&[2]).is_err());
}

#[test]
fn responses_find_headers_case_insensitively() {
    let r = Response {
        status: 204,
        headers: vec![("Content-Type".into(), "text/plain".into())],
        body: vec![],
    };
    assert!(r.is_success());
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.header("x"), None);
}
