//! The `orb` host interface: the example functions built with orb-guest,
//! and hand-written modules that hit every import with bad pointers, huge
//! lengths, malformed requests and exhausted budgets, against a mock of
//! the node's services.
#![allow(clippy::unwrap_used)]

mod host_support;

use std::sync::Arc;
use std::time::Duration;

use host_support::{Mock, call, example, inv, runtime};
use orb_guest::abi::code;
use orb_proto::ContentHash;
use orb_proto::wire::{CallLimits, RunStatus};
use orb_runtime::{CallRequest, CallResult, HostLimits, HostServices, RuntimeConfig, RuntimeError};

/// Imports of every `orb` function plus fd_write, memory, and helpers:
/// `$rec` appends a code to a list at 60000 that `$flush` writes to
/// stdout; `$detail` writes the result buffer and a newline to stderr.
const PRELUDE: &str = r#"
  (import "orb" "abi_version" (func $abi_version (result i32)))
  (import "orb" "result_len" (func $result_len (result i32)))
  (import "orb" "result_read" (func $result_read (param i32 i32) (result i32)))
  (import "orb" "kv_get" (func $kv_get (param i32 i32) (result i32)))
  (import "orb" "kv_set" (func $kv_set (param i32 i32 i32 i32) (result i32)))
  (import "orb" "kv_delete" (func $kv_delete (param i32 i32) (result i32)))
  (import "orb" "kv_increment" (func $kv_increment (param i32 i32 i64 i32) (result i32)))
  (import "orb" "kv_compare_and_swap" (func $kv_cas (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "orb" "http_fetch" (func $http_fetch (param i32 i32) (result i32)))
  (import "orb" "call" (func $call (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $n (mut i32) (i32.const 0))
  (data (i32.const 90) "\n")
  (func $rec (param $c i32)
    (i32.store8 (i32.add (i32.const 60000) (global.get $n)) (local.get $c))
    (global.set $n (i32.add (global.get $n) (i32.const 1))))
  (func $write (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 16) (local.get $ptr))
    (i32.store (i32.const 20) (local.get $len))
    (drop (call $fd_write (local.get $fd) (i32.const 16) (i32.const 1) (i32.const 24))))
  (func $flush (call $write (i32.const 1) (i32.const 60000) (global.get $n)))
  (func $detail (local $len i32)
    (local.set $len (call $result_len))
    (drop (call $result_read (i32.const 40000) (local.get $len)))
    (call $write (i32.const 2) (i32.const 40000) (local.get $len))
    (call $write (i32.const 2) (i32.const 90) (i32.const 1)))
"#;

/// A module of [`PRELUDE`], `data` segments and a `_start` running `body`
/// then `$flush`.
fn module(data: &[(u32, &[u8])], body: &str) -> Vec<u8> {
    let segments: String = data
        .iter()
        .map(|(at, bytes)| {
            let escaped: String = bytes.iter().map(|b| format!("\\{b:02x}")).collect();
            format!("(data (i32.const {at}) \"{escaped}\")\n")
        })
        .collect();
    let text =
        format!("(module {PRELUDE} {segments} (func (export \"_start\") {body} (call $flush)))");
    wat::parse_str(text).expect("valid wat")
}

fn host(mock: &Arc<Mock>) -> Option<Arc<dyn HostServices>> {
    Some(mock.clone())
}

fn http_blob(url: &[u8]) -> Vec<u8> {
    // Built by hand so that the URL can be any bytes, UTF-8 or not.
    let mut blob = Vec::new();
    for field in [&b"GET"[..], url] {
        blob.extend_from_slice(&(field.len() as u32).to_le_bytes());
        blob.extend_from_slice(field);
    }
    blob.extend_from_slice(&[0; 8]); // no headers, empty body
    blob
}

fn call_blob(name: &str, body: &[u8]) -> Vec<u8> {
    CallRequest::new(name, body.to_vec()).encode().unwrap()
}

fn assert_exit0(r: &CallResult) {
    assert_eq!(
        r.outcome.status,
        RunStatus::Exited(0),
        "stderr: {}",
        r.outcome.stderr
    );
}

fn assert_limit(r: &CallResult, which: &str) {
    match &r.outcome.status {
        RunStatus::LimitExceeded { limit, .. } if limit == which => {}
        other => panic!("expected {which} limit, got {other:?}"),
    }
}

// ---------------------------------------------------------------------
// The example functions, built for wasm32-wasip1 with orb-guest.

#[tokio::test]
async fn counter_counts_through_the_guest_crate() {
    let Some(wasm) = example("counter") else {
        return;
    };
    let rt = runtime(RuntimeConfig::default());
    let mock = Arc::new(Mock::default());
    let mut outputs = Vec::new();
    for method in ["GET", "POST", "POST", "GET", "POST"] {
        let r = call(&rt, &wasm, inv(method, "", b"", host(&mock))).await;
        assert_exit0(&r);
        outputs.push(String::from_utf8(r.stdout).unwrap());
    }
    assert_eq!(outputs, ["0", "1", "2", "2", "3"]);
    assert_eq!(mock.value(b"count"), Some(b"3".to_vec()));

    // A value that is not a counter: the guest gets INVALID with the
    // service's reason and exits non-zero.
    mock.put(b"count", b"seven");
    let r = call(&rt, &wasm, inv("POST", "", b"", host(&mock))).await;
    assert_eq!(r.outcome.status, RunStatus::Exited(1));
    assert!(
        r.outcome.stderr.contains("INVALID: value is not a counter"),
        "{}",
        r.outcome.stderr
    );
    let r = call(&rt, &wasm, inv("DELETE", "", b"", host(&mock))).await;
    assert_eq!(r.outcome.status, RunStatus::Exited(2));
}

#[tokio::test]
async fn counter_without_host_services_says_unavailable() {
    let Some(wasm) = example("counter") else {
        return;
    };
    let rt = runtime(RuntimeConfig::default());
    let r = call(&rt, &wasm, inv("POST", "", b"", None)).await;
    assert_eq!(r.outcome.status, RunStatus::Exited(1));
    assert!(
        r.outcome
            .stderr
            .contains("UNAVAILABLE: this node offers no host services"),
        "{}",
        r.outcome.stderr
    );
}

#[tokio::test]
async fn fetch_prints_status_and_size_or_fails_with_the_reason() {
    let Some(wasm) = example("fetch") else {
        return;
    };
    let rt = runtime(RuntimeConfig::default());
    let mock = Arc::new(Mock::default());

    let r = call(
        &rt,
        &wasm,
        inv("POST", "", b"http://example.test/nine\n", host(&mock)),
    )
    .await;
    assert_exit0(&r);
    assert_eq!(r.stdout, b"200 9");
    assert_eq!(mock.log(), ["GET http://example.test/nine"]);

    let r = call(
        &rt,
        &wasm,
        inv("POST", "", b"https://denied.test/", host(&mock)),
    )
    .await;
    assert_eq!(r.outcome.status, RunStatus::Exited(1));
    assert!(r.stdout.is_empty());
    assert!(
        r.outcome
            .stderr
            .contains("DENIED: denied.test is not on this function's allow-list"),
        "{}",
        r.outcome.stderr
    );

    // Refused by the guest crate's own check, before reaching the host.
    let r = call(&rt, &wasm, inv("POST", "", b"not a url", host(&mock))).await;
    assert_eq!(r.outcome.status, RunStatus::Exited(1));
    assert!(r.outcome.stderr.contains("INVALID: url must start with"));

    let r = call(&rt, &wasm, inv("POST", "", b"http://x.test/", None)).await;
    assert_eq!(r.outcome.status, RunStatus::Exited(1));
    assert!(r.outcome.stderr.contains("UNAVAILABLE"));
}

#[tokio::test]
async fn compose_passes_its_input_to_the_named_function() {
    let Some(wasm) = example("compose") else {
        return;
    };
    let rt = runtime(RuntimeConfig::default());
    let mock = Arc::new(Mock::default());

    let r = call(&rt, &wasm, inv("POST", "f=upper", b"hello", host(&mock))).await;
    assert_exit0(&r);
    assert_eq!(r.stdout, b"HELLO");
    assert_eq!(mock.log(), ["call upper POST 5 bytes"]);

    // Percent-decoded name, other parameters ignored.
    let r = call(
        &rt,
        &wasm,
        inv("POST", "x=1&f=%75pper", b"abc", host(&mock)),
    )
    .await;
    assert_exit0(&r);
    assert_eq!(r.stdout, b"ABC");

    // The callee failed: its output, then a non-zero exit.
    let r = call(&rt, &wasm, inv("POST", "f=fail", b"", host(&mock))).await;
    assert_eq!(r.outcome.status, RunStatus::Exited(1));
    assert_eq!(r.stdout, b"boom");
    assert!(r.outcome.stderr.contains("status 500"));

    for (query, want) in [
        ("f=deep", "DEPTH: call depth limit of 4 reached"),
        ("f=nope", "NOT_FOUND: no function named nope"),
    ] {
        let r = call(&rt, &wasm, inv("POST", query, b"", host(&mock))).await;
        assert_eq!(r.outcome.status, RunStatus::Exited(1));
        assert!(r.outcome.stderr.contains(want), "{}", r.outcome.stderr);
    }

    let r = call(&rt, &wasm, inv("POST", "", b"", host(&mock))).await;
    assert_eq!(r.outcome.status, RunStatus::Exited(2));
    assert!(r.outcome.stderr.contains("?f=NAME"));
}

// ---------------------------------------------------------------------
// Hand-written modules.

#[tokio::test]
async fn kv_operations_reach_the_service_with_their_codes() {
    let rt = runtime(RuntimeConfig::default());
    let mock = Arc::new(Mock::default());
    let wasm = module(
        &[(100, b"abc"), (110, b"7"), (120, b"12"), (130, b"x")],
        r#"
        (call $rec (call $abi_version))
        (call $rec (call $kv_get (i32.const 100) (i32.const 3)))          ;; NOT_FOUND
        (call $rec (call $kv_set (i32.const 100) (i32.const 3) (i32.const 110) (i32.const 1)))
        (call $rec (call $kv_increment (i32.const 100) (i32.const 3) (i64.const 5) (i32.const 200)))
        (call $rec (i32.load8_u (i32.const 200)))                          ;; 12
        (call $rec (call $kv_get (i32.const 100) (i32.const 3)))          ;; OK "12"
        (call $rec (call $result_len))                                     ;; 2
        ;; "12" -> "x"
        (call $rec (call $kv_cas (i32.const 100) (i32.const 3) (i32.const 120) (i32.const 2)
                                 (i32.const 130) (i32.const 1)))
        ;; absent -> "x": conflict, the result holds 1 "x"
        (call $rec (call $kv_cas (i32.const 100) (i32.const 3) (i32.const 0) (i32.const -1)
                                 (i32.const 130) (i32.const 1)))
        (call $detail)
        (call $rec (call $kv_increment (i32.const 100) (i32.const 3) (i64.const 1) (i32.const 200)))
        (call $detail)
        ;; "x" -> delete
        (call $rec (call $kv_cas (i32.const 100) (i32.const 3) (i32.const 130) (i32.const 1)
                                 (i32.const 0) (i32.const -1)))
        (call $rec (call $kv_get (i32.const 100) (i32.const 3)))          ;; NOT_FOUND
        (call $rec (call $kv_set (i32.const 100) (i32.const 3) (i32.const 110) (i32.const 1)))
        (call $rec (call $kv_delete (i32.const 100) (i32.const 3)))
        (call $rec (call $kv_delete (i32.const 100) (i32.const 3)))       ;; still OK
        (call $rec (call $kv_get (i32.const 100) (i32.const 0)))          ;; empty key
        (call $detail)
        "#,
    );
    let r = call(&rt, &wasm, inv("POST", "", b"", host(&mock))).await;
    assert_exit0(&r);
    use code::*;
    assert_eq!(
        r.stdout,
        [
            1, NOT_FOUND, OK, OK, 12, OK, 2, OK, CONFLICT, INVALID, OK, NOT_FOUND, OK, OK, OK,
            INVALID
        ]
        .map(|c| c as u8)
    );
    assert_eq!(
        r.outcome.stderr,
        "\u{1}x\nvalue is not a counter\nempty key\n"
    );
    assert_eq!(mock.value(b"abc"), None);
}

#[tokio::test]
async fn out_of_bounds_pointers_get_invalid_never_a_panic() {
    let rt = runtime(RuntimeConfig::default());
    let mock = Arc::new(Mock::default());
    let wasm = module(
        &[(100, b"abc"), (110, b"hello")],
        r#"
        (call $rec (call $kv_get (i32.const 70000) (i32.const 3)))
        (call $rec (call $kv_get (i32.const 65535) (i32.const 3)))
        (call $rec (call $kv_get (i32.const -1) (i32.const 3)))
        (call $rec (call $kv_set (i32.const 100) (i32.const 3) (i32.const 70000) (i32.const 5)))
        (call $rec (call $kv_set (i32.const 65534) (i32.const 3) (i32.const 110) (i32.const 5)))
        (call $rec (call $kv_delete (i32.const 70000) (i32.const 1)))
        ;; a bad out pointer: refused before the increment happens
        (call $rec (call $kv_increment (i32.const 100) (i32.const 3) (i64.const 1) (i32.const 70000)))
        (call $rec (call $kv_increment (i32.const 100) (i32.const 3) (i64.const 1) (i32.const 65532)))
        (call $rec (call $kv_cas (i32.const 100) (i32.const 3) (i32.const 70000) (i32.const 2)
                                 (i32.const 0) (i32.const -1)))
        (call $rec (call $kv_cas (i32.const 100) (i32.const 3) (i32.const 0) (i32.const -1)
                                 (i32.const 65535) (i32.const 2)))
        (call $rec (call $http_fetch (i32.const 70000) (i32.const 10)))
        (call $rec (call $call (i32.const 65530) (i32.const 100)))
        ;; result_read: out of bounds, past the end, longer than the buffer
        (call $rec (call $kv_set (i32.const 100) (i32.const 3) (i32.const 110) (i32.const 5)))
        (call $rec (call $kv_get (i32.const 100) (i32.const 3)))
        (call $rec (call $result_read (i32.const 70000) (i32.const 5)))
        (call $rec (call $result_read (i32.const 65534) (i32.const 5)))
        (call $rec (call $result_read (i32.const 200) (i32.const 6)))
        (call $rec (call $result_read (i32.const 200) (i32.const -1)))
        (call $rec (call $result_read (i32.const 200) (i32.const 5)))
        (call $rec (i32.load8_u (i32.const 204)))                          ;; 'o'
        (call $rec (call $result_read (i32.const 300) (i32.const 2)))     ;; a prefix
        (call $rec (i32.load8_u (i32.const 301)))                          ;; 'e'
        (call $rec (call $kv_delete (i32.const 100) (i32.const 3)))
        (call $rec (call $kv_increment (i32.const 100) (i32.const 3) (i64.const 1) (i32.const 0)))
        (call $rec (i32.load8_u (i32.const 0)))                            ;; 1: not incremented before
        "#,
    );
    let r = call(&rt, &wasm, inv("POST", "", b"", host(&mock))).await;
    assert_exit0(&r);
    let i = code::INVALID as u8;
    let mut want = vec![i; 12];
    want.extend([0, 0, i, i, i, i, 0, b'o', 0, b'e', 0, 0, 1]);
    assert_eq!(r.stdout, want);
    // The detail names the problem.
    let wasm = module(
        &[],
        r#"(call $rec (call $kv_get (i32.const 65535) (i32.const 3))) (call $detail)"#,
    );
    let r = call(&rt, &wasm, inv("POST", "", b"", host(&mock))).await;
    assert_eq!(
        r.outcome.stderr,
        "key: 3 bytes at 65535 run past the end of memory (65536 bytes)\n"
    );
}

#[tokio::test]
async fn huge_lengths_are_too_large_before_anything_is_allocated() {
    let rt = runtime(RuntimeConfig::default());
    let mock = Arc::new(Mock::default());
    let wasm = module(
        &[(100, b"abc")],
        r#"
        (call $rec (call $kv_get (i32.const 100) (i32.const 0x7fffffff)))
        (call $rec (call $kv_get (i32.const 100) (i32.const -2)))
        (call $rec (call $kv_set (i32.const 100) (i32.const 3) (i32.const 0) (i32.const 0x40000000)))
        (call $rec (call $kv_cas (i32.const 100) (i32.const 3) (i32.const 0) (i32.const -2)
                                 (i32.const 0) (i32.const -1)))
        (call $rec (call $http_fetch (i32.const 0) (i32.const -2)))
        (call $rec (call $call (i32.const 0) (i32.const 0x7fffffff)))
        (call $detail)
        "#,
    );
    let r = call(&rt, &wasm, inv("POST", "", b"", host(&mock))).await;
    assert_exit0(&r);
    assert_eq!(r.stdout, [code::TOO_LARGE as u8; 6]);
    let framed = HostLimits::default().max_request_bytes;
    assert_eq!(
        r.outcome.stderr,
        format!("request of 2147483647 bytes; the limit is {framed}\n")
    );
    assert!(mock.log().is_empty());
}

#[tokio::test]
async fn malformed_requests_and_invalid_utf8_are_invalid() {
    let rt = runtime(RuntimeConfig::default());
    let mock = Arc::new(Mock::default());
    let good = http_blob(b"http://example.test/nine");
    let mut trailing = good.clone();
    trailing.push(0);
    let blobs: [Vec<u8>; 6] = [
        http_blob(b"http://\xff\xfe.test/"),
        http_blob(b"ftp://example.test/"),
        trailing,
        vec![7; 40],
        call_blob("bad name", b""),
        call_blob("a/b", b""),
    ];
    let mut data = Vec::new();
    let mut body = String::new();
    for (i, blob) in blobs.iter().enumerate() {
        let at = 1000 + 1000 * i as u32;
        data.push((at, blob.as_slice()));
        let import = if i < 4 { "$http_fetch" } else { "$call" };
        body.push_str(&format!(
            "(call $rec (call {import} (i32.const {at}) (i32.const {}))) (call $detail)\n",
            blob.len()
        ));
    }
    data.push((9000, good.as_slice()));
    body.push_str(&format!(
        "(call $rec (call $http_fetch (i32.const 9000) (i32.const {})))",
        good.len()
    ));
    let r = call(
        &rt,
        &module(&data, &body),
        inv("POST", "", b"", host(&mock)),
    )
    .await;
    assert_exit0(&r);
    let i = code::INVALID as u8;
    assert_eq!(r.stdout, [i, i, i, i, i, i, 0]);
    let details: Vec<&str> = r.outcome.stderr.lines().collect();
    assert_eq!(details[0], "url is not valid UTF-8");
    assert_eq!(details[1], "url must start with http:// or https://");
    assert_eq!(details[2], "1 bytes left over after the last field");
    assert!(details[3].starts_with("method: needs"), "{}", details[3]);
    assert!(details[4].contains("function name contains a space"));
    assert!(details[5].contains("'/'"));
    // Only the well-formed request reached the service.
    assert_eq!(mock.log(), ["GET http://example.test/nine"]);
}

#[tokio::test]
async fn budgets_of_operations_and_bytes_are_enforced() {
    let rt = runtime(RuntimeConfig {
        host: HostLimits {
            max_ops: 6,
            max_http_requests: 1,
            max_calls: 1,
            ..HostLimits::default()
        },
        ..RuntimeConfig::default()
    });
    let mock = Arc::new(Mock::default());
    let fetch = http_blob(b"http://example.test/nine");
    let upper = call_blob("upper", b"hi");
    let body = format!(
        r#"
        (call $rec (call $http_fetch (i32.const 1000) (i32.const {f})))
        (call $rec (call $http_fetch (i32.const 1000) (i32.const {f})))
        (call $detail)
        (call $rec (call $call (i32.const 2000) (i32.const {c})))
        (call $rec (call $call (i32.const 2000) (i32.const {c})))
        (call $detail)
        (call $rec (call $kv_set (i32.const 100) (i32.const 3) (i32.const 100) (i32.const 3)))
        (call $rec (call $kv_get (i32.const 100) (i32.const 3)))
        (call $rec (call $kv_get (i32.const 100) (i32.const 3)))
        (call $detail)
        "#,
        f = fetch.len(),
        c = upper.len()
    );
    let wasm = module(&[(100, b"abc"), (1000, &fetch), (2000, &upper)], &body);
    let r = call(&rt, &wasm, inv("POST", "", b"", host(&mock))).await;
    assert_exit0(&r);
    let l = code::LIMIT as u8;
    assert_eq!(r.stdout, [0, l, 0, l, 0, 0, l]);
    assert_eq!(
        r.outcome.stderr,
        "more than 1 HTTP requests in one call\nmore than 1 nested calls in one call\n\
         more than 6 host operations in one call\n"
    );
    // Budgets are per call: the next call starts afresh.
    let r = call(&rt, &wasm, inv("POST", "", b"", host(&mock))).await;
    assert_eq!(r.stdout, [0, l, 0, l, 0, 0, l]);

    // Sizes: keys, values, results, and bytes moved over the whole call.
    let rt = runtime(RuntimeConfig {
        host: HostLimits {
            max_key_bytes: 4,
            max_value_bytes: 8,
            max_response_bytes: 64,
            max_total_bytes: 50,
            ..HostLimits::default()
        },
        ..RuntimeConfig::default()
    });
    let big = http_blob(b"http://big.test/");
    let body = format!(
        r#"
        (call $rec (call $kv_set (i32.const 100) (i32.const 5) (i32.const 200) (i32.const 1)))
        (call $rec (call $kv_set (i32.const 100) (i32.const 3) (i32.const 200) (i32.const 9)))
        (call $rec (call $http_fetch (i32.const 1000) (i32.const {b})))
        (call $detail)
        (call $rec (call $kv_set (i32.const 100) (i32.const 3) (i32.const 200) (i32.const 8)))
        (call $rec (call $kv_set (i32.const 100) (i32.const 3) (i32.const 200) (i32.const 8)))
        (call $detail)
        "#,
        b = big.len()
    );
    let wasm = module(&[(100, b"abcde"), (1000, &big)], &body);
    let r = call(&rt, &wasm, inv("POST", "", b"", host(&mock))).await;
    assert_exit0(&r);
    let t = code::TOO_LARGE as u8;
    assert_eq!(r.stdout, [t, t, t, 0, l]);
    assert_eq!(
        r.outcome.stderr,
        "result of 74 bytes; the limit is 64\n\
         more than 50 bytes moved through host calls in one call\n"
    );
}

#[tokio::test]
async fn host_operations_cost_fuel() {
    let ops = r#"
        (call $rec (call $kv_get (i32.const 100) (i32.const 3)))
        (call $rec (call $kv_get (i32.const 100) (i32.const 3)))
        (call $rec (call $kv_get (i32.const 100) (i32.const 3)))"#;
    let with_ops = module(&[(100, b"abc")], ops);
    let without = module(&[(100, b"abc")], "");
    let mock = Arc::new(Mock::default());
    let rt = runtime(RuntimeConfig {
        host: HostLimits {
            fuel_per_op: 1_000_000,
            ..HostLimits::default()
        },
        ..RuntimeConfig::default()
    });
    let a = call(&rt, &with_ops, inv("POST", "", b"", host(&mock))).await;
    let b = call(&rt, &without, inv("POST", "", b"", host(&mock))).await;
    assert_exit0(&a);
    assert!(
        a.outcome.fuel_used >= b.outcome.fuel_used + 3_000_000,
        "{} vs {}",
        a.outcome.fuel_used,
        b.outcome.fuel_used
    );

    // An operation that costs more than is left ends the run on fuel.
    let mut i = inv("POST", "", b"", host(&mock));
    i.limits = CallLimits {
        fuel: Some(2_500_000),
        ..CallLimits::default()
    };
    let r = call(&rt, &with_ops, i).await;
    assert_limit(&r, "fuel");
    assert_eq!(r.outcome.fuel_used, 2_500_000);
    assert_eq!(mock.log().len(), 2 + 3, "the third get never ran");
}

#[tokio::test]
async fn without_host_services_every_service_is_unavailable() {
    let rt = runtime(RuntimeConfig::default());
    let fetch = http_blob(b"http://example.test/nine");
    let upper = call_blob("upper", b"hi");
    let body = format!(
        r#"
        (call $rec (call $abi_version))
        (call $rec (call $kv_get (i32.const 100) (i32.const 3)))
        (call $detail)
        (call $rec (call $kv_set (i32.const 100) (i32.const 3) (i32.const 100) (i32.const 3)))
        (call $rec (call $kv_delete (i32.const 100) (i32.const 3)))
        (call $rec (call $kv_increment (i32.const 100) (i32.const 3) (i64.const 1) (i32.const 0)))
        (call $rec (call $kv_cas (i32.const 100) (i32.const 3) (i32.const 0) (i32.const -1)
                                 (i32.const 0) (i32.const -1)))
        (call $rec (call $http_fetch (i32.const 1000) (i32.const {f})))
        (call $rec (call $call (i32.const 2000) (i32.const {c})))
        "#,
        f = fetch.len(),
        c = upper.len()
    );
    let wasm = module(&[(100, b"abc"), (1000, &fetch), (2000, &upper)], &body);
    let r = call(&rt, &wasm, inv("POST", "", b"", None)).await;
    assert_exit0(&r);
    let u = code::UNAVAILABLE as u8;
    assert_eq!(r.stdout, [1, u, u, u, u, u, u, u]);
    assert_eq!(r.outcome.stderr, "this node offers no host services\n");
}

#[tokio::test]
async fn service_errors_and_panics_become_codes() {
    let rt = runtime(RuntimeConfig::default());
    let mock = Arc::new(Mock::default());
    let blobs = [
        http_blob(b"http://panic.test/"),
        http_blob(b"http://slow.test/"),
        call_blob("deep", b""),
        call_blob("nope", b""),
    ];
    let mut data = Vec::new();
    let mut body = String::new();
    for (i, blob) in blobs.iter().enumerate() {
        let at = 1000 + 1000 * i as u32;
        data.push((at, blob.as_slice()));
        let import = if i < 2 { "$http_fetch" } else { "$call" };
        body.push_str(&format!(
            "(call $rec (call {import} (i32.const {at}) (i32.const {}))) (call $detail)\n",
            blob.len()
        ));
    }
    let r = call(
        &rt,
        &module(&data, &body),
        inv("POST", "", b"", host(&mock)),
    )
    .await;
    assert_exit0(&r);
    assert_eq!(
        r.stdout,
        [code::FAILED, code::TIMEOUT, code::DEPTH, code::NOT_FOUND].map(|c| c as u8)
    );
    assert_eq!(
        r.outcome.stderr,
        "host service failed internally\nslow.test did not answer in time\n\
         call depth limit of 4 reached\nno function named nope\n"
    );
}

#[tokio::test]
async fn details_and_conflict_values_are_bounded() {
    let rt = runtime(RuntimeConfig {
        host: HostLimits {
            max_response_bytes: 64,
            ..HostLimits::default()
        },
        ..RuntimeConfig::default()
    });
    let mock = Arc::new(Mock::default());
    mock.put(b"abc", &[b'v'; 100]);
    let verbose = http_blob(b"http://verbose.test/");
    let body = format!(
        r#"
        (call $rec (call $kv_cas (i32.const 100) (i32.const 3) (i32.const 0) (i32.const -1)
                                 (i32.const 0) (i32.const -1)))
        (call $rec (call $http_fetch (i32.const 1000) (i32.const {v})))
        (call $detail)
        "#,
        v = verbose.len()
    );
    let wasm = module(&[(100, b"abc"), (1000, &verbose)], &body);
    let r = call(&rt, &wasm, inv("POST", "", b"", host(&mock))).await;
    assert_exit0(&r);
    assert_eq!(r.stdout, [code::TOO_LARGE, code::FAILED].map(|c| c as u8));
    // Cut to 4 KiB at a character boundary: 'x' then 2,047 two-byte 'é'.
    let detail = r.outcome.stderr.strip_suffix('\n').unwrap();
    assert_eq!(detail.len(), 4095);
    assert!(detail.starts_with("xé"));
}

#[tokio::test]
async fn services_get_the_call_deadline_and_http_gets_its_own_cap() {
    let rt = runtime(RuntimeConfig {
        host: HostLimits {
            http_timeout: Duration::from_secs(1),
            ..HostLimits::default()
        },
        ..RuntimeConfig::default()
    });
    let mock = Arc::new(Mock::default());
    let fetch = http_blob(b"http://example.test/nine");
    let upper = call_blob("upper", b"hi");
    let body = format!(
        r#"
        (call $rec (call $call (i32.const 2000) (i32.const {c})))
        (call $rec (call $http_fetch (i32.const 1000) (i32.const {f})))
        (call $rec (call $call (i32.const 2000) (i32.const {c})))
        "#,
        f = fetch.len(),
        c = upper.len()
    );
    let wasm = module(&[(1000, &fetch), (2000, &upper)], &body);
    let mut i = inv("POST", "", b"", host(&mock));
    i.limits.timeout_ms = Some(60_000);
    let r = call(&rt, &wasm, i).await;
    assert_exit0(&r);
    let seen = mock.deadlines();
    assert_eq!(seen.len(), 3);
    // Nested calls inherit the call's own deadline, unchanged.
    assert_eq!(seen[0].0, seen[2].0);
    // A fetch gets at most the HTTP timeout, even with more time left.
    assert!(seen[1].1 <= Duration::from_secs(1));
    assert!(seen[1].0 <= seen[0].0);
    assert!(
        seen.iter()
            .all(|(_, _, max)| *max == HostLimits::default().max_response_bytes as usize)
    );
}

#[tokio::test]
async fn a_service_answering_after_the_deadline_ends_the_call() {
    let rt = runtime(RuntimeConfig::default());
    let mock = Arc::new(Mock::default());
    let hang = http_blob(b"http://hang.test/");
    let wasm = module(
        &[(1000, &hang)],
        &format!(
            "(call $rec (call $http_fetch (i32.const 1000) (i32.const {})))",
            hang.len()
        ),
    );
    let mut i = inv("POST", "", b"", host(&mock));
    i.limits.timeout_ms = Some(300);
    let r = call(&rt, &wasm, i).await;
    assert_limit(&r, "timeout");
    assert!(r.stdout.is_empty());
    assert_eq!(rt.in_flight(), 0);
}

#[test]
fn unknown_orb_imports_are_refused_at_validate_naming_them() {
    let rt = runtime(RuntimeConfig::default());
    for (import, name) in [
        (
            r#"(import "orb" "kv_scan" (func (param i32 i32) (result i32)))"#,
            "kv_scan",
        ),
        // The right name with another signature: built against another ABI.
        (
            r#"(import "orb" "kv_get" (func (param i32) (result i32)))"#,
            "kv_get",
        ),
        (r#"(import "orb" "call" (func (param i32 i32)))"#, "call"),
    ] {
        let wasm = wat::parse_str(format!(
            r#"(module {import} (memory (export "memory") 1) (func (export "_start")))"#
        ))
        .unwrap();
        let err = rt.validate(&wasm).unwrap_err();
        match &err {
            RuntimeError::UnknownImport { module, name: n } => {
                assert_eq!((module.as_str(), n.as_str()), ("orb", name))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            err.to_string(),
            format!("module imports orb.{name}, which Orb does not provide")
        );
        assert!(matches!(
            rt.prepare(ContentHash::of(&wasm), &wasm),
            Err(RuntimeError::UnknownImport { .. })
        ));
    }
    // Every import of the prelude is known.
    rt.validate(&module(&[], "")).unwrap();
}

#[tokio::test]
async fn modules_without_orb_imports_run_exactly_as_before() {
    let rt = runtime(RuntimeConfig::default());
    let wasm = wat::parse_str(
        r#"(module
          (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
          (memory (export "memory") 1)
          (data (i32.const 0) "plain")
          (func (export "_start")
            (i32.store (i32.const 16) (i32.const 0))
            (i32.store (i32.const 20) (i32.const 5))
            (drop (call $w (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24)))))"#,
    )
    .unwrap();
    let mock = Arc::new(Mock::default());
    let with = call(&rt, &wasm, inv("POST", "", b"", host(&mock))).await;
    let without = call(&rt, &wasm, inv("POST", "", b"", None)).await;
    for r in [&with, &without] {
        assert_exit0(r);
        assert_eq!(r.stdout, b"plain");
    }
    assert_eq!(with.outcome.fuel_used, without.outcome.fuel_used);
    assert!(mock.log().is_empty());
}
