//! The gateway's request handling on arbitrary input: deploy parameters
//! from the query string, call metadata from method, query and headers,
//! and the body cap. Nothing may panic, and what comes out must respect
//! the bounds the handlers rely on.
//!
//! Input format (so seeds are readable HTTP-ish text):
//!
//! ```text
//! METHOD TARGET [LIMIT]\n
//! name: value\n        (headers, until an empty line; "\r" before "\n" is dropped)
//! \n
//! body...
//! ```
//!
//! TARGET is split at the first `?` into path and query. LIMIT is the body
//! cap in bytes (default 64).

#![no_main]

use libfuzzer_sys::fuzz_target;
use orb_node::fuzzing;
use orb_proto::limits::MAX_NAME_LEN;
use orb_proto::wire::ErrorKind;

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fuzz_target!(|data: &[u8]| {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &[][..]),
    };
    let mut lines = head.split(|&b| b == b'\n').map(trim_cr);
    let request_line = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
    let mut words = request_line.split(' ');
    let method = words.next().unwrap_or_default();
    let target = words.next().unwrap_or_default();
    let limit = words
        .next()
        .and_then(|w| w.parse::<usize>().ok())
        .unwrap_or(64);
    let query = target.split_once('?').map(|(_, q)| q);
    let pairs: Vec<(&[u8], &[u8])> = lines
        .map(|l| match l.iter().position(|&b| b == b':') {
            Some(i) => (&l[..i], l[i + 1..].trim_ascii_start()),
            None => (l, &[][..]),
        })
        .collect();
    let headers = fuzzing::header_map(&pairs);

    // Deploy parameters (the client's local API).
    if let Ok((name, settings, _here)) = fuzzing::deploy_params(query) {
        assert!(!name.is_empty() && name.len() <= MAX_NAME_LEN);
        assert!(settings.replicas >= 1);
        assert!(settings.max_replicas >= settings.replicas);
        for limit in [
            settings.limits.fuel,
            settings.limits.memory_bytes,
            settings.limits.timeout_ms,
            settings.limits.max_output,
        ] {
            assert_ne!(limit, Some(0));
        }
    }

    // Call metadata (gateway and local API).
    let meta = fuzzing::call_meta(method, query, &headers, "rid".into());
    assert_eq!(meta.query, query.unwrap_or(""));
    assert_eq!(meta.method, method);
    assert!(meta.headers.len() <= 64);
    for (k, v) in &meta.headers {
        assert!(k != "content-length" && k != "content-type");
        assert!(v.chars().count() <= 1024);
    }

    // The body cap.
    match fuzzing::read_body(&headers, body.to_vec(), limit) {
        Ok(read) => {
            assert!(read.len() <= limit);
            assert_eq!(read, body);
        }
        Err(e) => {
            assert_eq!(e.kind, ErrorKind::TooLarge, "{e}");
            let declared = headers
                .get("content-length")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            assert!(body.len() > limit || declared.is_some_and(|n| n > limit as u64));
        }
    }
});
