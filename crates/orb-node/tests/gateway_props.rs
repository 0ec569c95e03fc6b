//! Property tests for the gateway's request parsing (through the hidden
//! `orb_node::fuzzing` wrappers): deploy parameters from any query string,
//! call metadata from any method, query and headers, and the body cap,
//! never panic and always respect the bounds the handlers rely on. The fuzz
//! target `gateway_request` in `fuzz/` runs the same checks on far more
//! inputs.

use orb_node::fuzzing::{call_meta, deploy_params, header_map, read_body};
use orb_proto::limits::MAX_NAME_LEN;
use orb_proto::wire::ErrorKind;
use proptest::prelude::*;

/// Query strings built from the deploy parameter names (and a stray one),
/// with values that are sometimes numbers, sometimes not, percent-escapes
/// included.
fn deploy_query() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("name"),
        Just("here"),
        Just("replicas"),
        Just("max_replicas"),
        Just("arg"),
        Just("env"),
        Just("fuel"),
        Just("memory_bytes"),
        Just("timeout_ms"),
        Just("max_output"),
        Just("bogus"),
    ];
    let value = prop_oneof![
        "[a-z0-9._-]{0,70}",
        any::<u64>().prop_map(|n| n.to_string()),
        Just("0".to_string()),
        Just("18446744073709551616".to_string()),
        "[A-Za-z0-9=%&+ ]{0,12}",
        ".{0,12}",
    ];
    prop::collection::vec((key, value), 0..8).prop_map(|pairs| {
        pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    })
}

fn headers() -> impl Strategy<Value = Vec<(Vec<u8>, Vec<u8>)>> {
    let name = prop_oneof![
        Just(b"content-length".to_vec()),
        Just(b"Content-Type".to_vec()),
        "[a-zA-Z-]{1,12}".prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..12),
    ];
    let value = prop_oneof![
        any::<u64>().prop_map(|n| n.to_string().into_bytes()),
        "[ -~]{0,2000}".prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..40),
    ];
    prop::collection::vec((name, value), 0..80)
}

fn pairs(h: &[(Vec<u8>, Vec<u8>)]) -> Vec<(&[u8], &[u8])> {
    h.iter().map(|(k, v)| (&k[..], &v[..])).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn deploy_params_never_panic(
        query in prop_oneof![deploy_query(), ".{0,64}"],
        absent in any::<bool>(),
    ) {
        let query = (!absent).then_some(query.as_str());
        if let Ok((name, settings, _here)) = deploy_params(query) {
            prop_assert!(!name.is_empty() && name.len() <= MAX_NAME_LEN);
            prop_assert!(settings.replicas >= 1);
            prop_assert!(settings.max_replicas >= settings.replicas);
            let l = &settings.limits;
            for v in [l.fuel, l.memory_bytes, l.timeout_ms, l.max_output] {
                prop_assert_ne!(v, Some(0));
            }
        }
    }

    #[test]
    fn call_meta_is_bounded(
        method in ".{0,8}",
        query in prop::option::of(".{0,64}"),
        h in headers(),
    ) {
        let map = header_map(&pairs(&h));
        let meta = call_meta(&method, query.as_deref(), &map, "rid".into());
        prop_assert_eq!(&meta.method, &method);
        prop_assert_eq!(meta.query.as_str(), query.as_deref().unwrap_or(""));
        prop_assert!(meta.headers.len() <= 64);
        for (k, v) in &meta.headers {
            prop_assert!(k != "content-length" && k != "content-type");
            prop_assert!(v.chars().count() <= 1024);
        }
    }

    #[test]
    fn read_body_caps(
        body in prop::collection::vec(any::<u8>(), 0..300),
        limit in 0usize..300,
        h in headers(),
    ) {
        let map = header_map(&pairs(&h));
        match read_body(&map, body.clone(), limit) {
            Ok(read) => {
                prop_assert!(read.len() <= limit);
                prop_assert_eq!(read, body);
            }
            Err(e) => {
                prop_assert_eq!(e.kind, ErrorKind::TooLarge);
                let declared = map
                    .get("content-length")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                prop_assert!(body.len() > limit || declared.is_some_and(|n| n > limit as u64));
            }
        }
    }
}

#[test]
fn deploy_params_examples() {
    let (name, s, here) = deploy_params(Some(
        "name=hello&replicas=3&arg=a&arg=b&env=K%3DV&fuel=100&here",
    ))
    .expect("valid query");
    assert_eq!(
        (name.as_str(), s.replicas, s.max_replicas, here),
        ("hello", 3, 3, true)
    );
    assert_eq!(s.args, ["a", "b"]);
    assert_eq!(s.env, [("K".to_string(), "V".to_string())]);
    assert_eq!(s.limits.fuel, Some(100));
    for bad in [
        None,
        Some(""),
        Some("name=Hello"),
        Some("name=x&replicas=0"),
        Some("name=x&fuel=0"),
        Some("name=x&env=novalue"),
        Some("name=x&replicas=4294967296"),
        Some("name=x&bogus=1"),
    ] {
        let err = deploy_params(bad).expect_err("refused");
        assert_eq!(err.kind, ErrorKind::BadRequest, "{bad:?}");
    }
}

#[test]
fn declared_length_over_the_cap_is_refused_before_reading() {
    let map = header_map(&[(&b"content-length"[..], &b"1000"[..])]);
    let err = read_body(&map, b"tiny".to_vec(), 10).expect_err("over the cap");
    assert_eq!(err.kind, ErrorKind::TooLarge);
    // An unparseable length is ignored; the body itself is measured.
    let map = header_map(&[(&b"content-length"[..], &b"lots"[..])]);
    assert_eq!(
        read_body(&map, b"tiny".to_vec(), 10).expect("fits"),
        b"tiny"
    );
}
