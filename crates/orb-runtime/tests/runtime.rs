//! Behaviour of the runtime on small hand-written WASI modules.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use orb_proto::ContentHash;
use orb_proto::wire::{CallLimits, CallMeta, RunStatus};
use orb_runtime::{CallResult, Invocation, Runtime, RuntimeConfig, RuntimeError};

const PRELUDE: &str = r#"
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $environ_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sched_yield" (func $sched_yield (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock_time_get (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open" (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (memory (export "memory") 1)
  ;; write(fd, ptr, len): one iovec at 16, nwritten at 24
  (func $write (param $fd i32) (param $ptr i32) (param $len i32) (result i32)
    (i32.store (i32.const 16) (local.get $ptr))
    (i32.store (i32.const 20) (local.get $len))
    (call $fd_write (local.get $fd) (i32.const 16) (i32.const 1) (i32.const 24)))
"#;

/// A module made of [`PRELUDE`] plus `body`.
fn module(body: &str) -> Vec<u8> {
    wat::parse_str(format!("(module {PRELUDE} {body})")).expect("valid wat")
}

const ECHO: &str = r#"
  (data (i32.const 0) "echo: ")
  (func (export "_start")
    (local $n i32)
    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 6)))
    (block $done
      (loop $again
        (i32.store (i32.const 32) (i32.const 1024))
        (i32.store (i32.const 36) (i32.const 4096))
        (drop (call $fd_read (i32.const 0) (i32.const 32) (i32.const 1) (i32.const 40)))
        (local.set $n (i32.load (i32.const 40)))
        (br_if $done (i32.eqz (local.get $n)))
        (drop (call $write (i32.const 1) (i32.const 1024) (local.get $n)))
        (br $again))))
"#;

const LOOP: &str = r#"(func (export "_start") (loop $l (br $l)))"#;

fn config() -> RuntimeConfig {
    RuntimeConfig {
        default_fuel: 1_000_000_000,
        default_timeout_ms: 5_000,
        ..RuntimeConfig::default()
    }
}

fn runtime(cfg: RuntimeConfig) -> Runtime {
    Runtime::new(cfg).expect("runtime")
}

/// Prepare `wasm` and return its hash.
fn prepare(rt: &Runtime, wasm: &[u8]) -> ContentHash {
    let hash = ContentHash::of(wasm);
    rt.prepare(hash, wasm).expect("prepare");
    hash
}

fn inv(input: &[u8]) -> Invocation {
    Invocation {
        function: "echo".to_string(),
        input: Bytes::copy_from_slice(input),
        args: vec![],
        env: vec![],
        meta: CallMeta::default(),
        limits: CallLimits::default(),
        files: None,
        host: None,
    }
}

fn with_limits(mut i: Invocation, limits: CallLimits) -> Invocation {
    i.limits = limits;
    i
}

async fn call(rt: &Runtime, wasm: &[u8], i: Invocation) -> CallResult {
    let hash = prepare(rt, wasm);
    rt.call(hash, i).await.expect("call")
}

fn assert_limit(r: &CallResult, which: &str) {
    match &r.outcome.status {
        RunStatus::LimitExceeded { limit, .. } if limit == which => {}
        other => panic!(
            "expected {which} limit, got {other:?} (stderr {:?})",
            r.outcome.stderr
        ),
    }
}

#[tokio::test]
async fn echo_reads_stdin_and_writes_stdout() {
    let rt = runtime(config());
    let input = vec![b'x'; 10_000];
    let r = call(&rt, &module(ECHO), inv(&input)).await;
    assert_eq!(r.outcome.status, RunStatus::Exited(0));
    assert!(r.outcome.is_success());
    let mut want = b"echo: ".to_vec();
    want.extend_from_slice(&input);
    assert_eq!(r.stdout, want);
    assert!(r.outcome.fuel_used > 0);
    assert!(r.outcome.duration_us > 0);
    assert_eq!(rt.in_flight(), 0);
}

#[tokio::test]
async fn args_and_environment_are_visible() {
    let wasm = module(
        r#"
      (func (export "_start")
        (drop (call $args_sizes_get (i32.const 0) (i32.const 4)))
        (drop (call $args_get (i32.const 1024) (i32.const 4096)))
        (drop (call $write (i32.const 1) (i32.const 4096) (i32.load (i32.const 4))))
        (drop (call $environ_sizes_get (i32.const 0) (i32.const 4)))
        (drop (call $environ_get (i32.const 2048) (i32.const 8192)))
        (drop (call $write (i32.const 1) (i32.const 8192) (i32.load (i32.const 4))))
        ;; argv[0] must point at the start of the buffer
        (if (i32.ne (i32.load (i32.const 1024)) (i32.const 4096)) (then unreachable)))
    "#,
    );
    let rt = runtime(config());
    let mut i = inv(b"body");
    i.function = "greet".to_string();
    i.args = vec!["hello".to_string(), "world".to_string()];
    i.env = vec![
        ("GREETING".to_string(), "hi".to_string()),
        ("QUERY_STRING".to_string(), "spoofed".to_string()),
    ];
    i.meta = CallMeta {
        request_id: "req-1".to_string(),
        method: "POST".to_string(),
        query: "a=1&b=2".to_string(),
        content_type: "text/plain".to_string(),
        headers: vec![("x-foo".to_string(), "bar".to_string())],
        path_info: "/a b/c".to_string(),
        remote_addr: Some("192.0.2.7".to_string()),
        server_name: "example.org".to_string(),
        server_port: 8080,
        ..CallMeta::default()
    };
    let r = call(&rt, &wasm, i).await;
    assert_eq!(
        r.outcome.status,
        RunStatus::Exited(0),
        "{}",
        r.outcome.stderr
    );
    let strings: Vec<String> = r
        .stdout
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    assert_eq!(&strings[..3], ["greet", "hello", "world"]);
    for want in [
        "ORB_FUNCTION=greet",
        "ORB_REQUEST_ID=req-1",
        "REQUEST_METHOD=POST",
        "QUERY_STRING=a=1&b=2",
        "CONTENT_TYPE=text/plain",
        "CONTENT_LENGTH=4",
        "HTTP_X_FOO=bar",
        "GREETING=hi",
        "SCRIPT_NAME=/fn/greet",
        "PATH_INFO=/a b/c",
        "SERVER_NAME=example.org",
        "SERVER_PORT=8080",
        "REMOTE_ADDR=192.0.2.7",
        "GATEWAY_INTERFACE=CGI/1.1",
    ] {
        assert!(
            strings.iter().any(|s| s == want),
            "{want} missing from {strings:?}"
        );
    }
    assert!(!strings.iter().any(|s| s == "QUERY_STRING=spoofed"));
}

#[tokio::test]
async fn proc_exit_code_and_stderr() {
    let wasm = module(
        r#"
      (data (i32.const 100) "something went wrong\n")
      (func (export "_start")
        (drop (call $write (i32.const 2) (i32.const 100) (i32.const 21)))
        (call $proc_exit (i32.const 3))
        unreachable)
    "#,
    );
    let r = call(&runtime(config()), &wasm, inv(b"")).await;
    assert_eq!(r.outcome.status, RunStatus::Exited(3));
    assert_eq!(r.outcome.stderr, "something went wrong\n");
    assert!(!r.outcome.is_success());
}

#[tokio::test]
async fn proc_exit_zero_is_success_and_keeps_stdout() {
    let wasm = module(
        r#"
      (data (i32.const 100) "done")
      (func (export "_start")
        (drop (call $write (i32.const 1) (i32.const 100) (i32.const 4)))
        (call $proc_exit (i32.const 0)))
    "#,
    );
    let r = call(&runtime(config()), &wasm, inv(b"")).await;
    assert_eq!(r.outcome.status, RunStatus::Exited(0));
    assert_eq!(r.stdout, b"done");
}

#[tokio::test]
async fn trap_is_reported_with_output_so_far() {
    let wasm = module(
        r#"
      (data (i32.const 100) "partial")
      (func (export "_start")
        (drop (call $write (i32.const 1) (i32.const 100) (i32.const 7)))
        unreachable)
    "#,
    );
    let r = call(&runtime(config()), &wasm, inv(b"")).await;
    match &r.outcome.status {
        RunStatus::Trapped(msg) => assert!(msg.contains("unreachable"), "{msg}"),
        other => panic!("expected trap, got {other:?}"),
    }
    assert_eq!(r.stdout, b"partial");
}

#[tokio::test]
async fn infinite_loop_runs_out_of_fuel() {
    let rt = runtime(config());
    let started = Instant::now();
    let limits = CallLimits {
        fuel: Some(1_000_000),
        ..CallLimits::default()
    };
    let r = call(&rt, &module(LOOP), with_limits(inv(b""), limits)).await;
    assert_limit(&r, "fuel");
    assert_eq!(r.outcome.fuel_used, 1_000_000);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn fuel_used_grows_with_work() {
    // Loops 1000 times per input byte.
    let wasm = module(
        r#"
      (func (export "_start")
        (local $i i32)
        (i32.store (i32.const 32) (i32.const 1024))
        (i32.store (i32.const 36) (i32.const 4096))
        (drop (call $fd_read (i32.const 0) (i32.const 32) (i32.const 1) (i32.const 40)))
        (local.set $i (i32.mul (i32.load (i32.const 40)) (i32.const 1000)))
        (block $done
          (loop $l
            (br_if $done (i32.eqz (local.get $i)))
            (local.set $i (i32.sub (local.get $i) (i32.const 1)))
            (br $l))))
    "#,
    );
    let rt = runtime(config());
    let small = call(&rt, &wasm, inv(&[0; 1])).await;
    let big = call(&rt, &wasm, inv(&[0; 100])).await;
    assert_eq!(small.outcome.status, RunStatus::Exited(0));
    assert_eq!(big.outcome.status, RunStatus::Exited(0));
    assert!(small.outcome.fuel_used > 1000);
    assert!(
        big.outcome.fuel_used > 50 * small.outcome.fuel_used,
        "{} vs {}",
        big.outcome.fuel_used,
        small.outcome.fuel_used
    );
}

#[tokio::test]
async fn memory_grow_bomb_hits_memory_limit() {
    let wasm = module(
        r#"
      (func (export "_start")
        (loop $l
          (if (i32.eq (memory.grow (i32.const 16)) (i32.const -1)) (then unreachable))
          (br $l)))
    "#,
    );
    let limits = CallLimits {
        memory_bytes: Some(4 * 1024 * 1024),
        ..CallLimits::default()
    };
    let r = call(&runtime(config()), &wasm, with_limits(inv(b""), limits)).await;
    assert_limit(&r, "memory");
}

#[tokio::test]
async fn memory_over_limit_at_start_is_refused() {
    let wasm = wat::parse_str(r#"(module (memory 100) (func (export "_start")))"#).unwrap();
    let limits = CallLimits {
        memory_bytes: Some(1024 * 1024),
        ..CallLimits::default()
    };
    let r = call(&runtime(config()), &wasm, with_limits(inv(b""), limits)).await;
    assert_limit(&r, "memory");

    // Over the node's maximum: refused before it is ever run.
    let rt = runtime(RuntimeConfig {
        max_memory_bytes: 1024 * 1024,
        ..config()
    });
    assert!(matches!(
        rt.validate(&wasm),
        Err(RuntimeError::InvalidModule(_))
    ));
}

#[tokio::test]
async fn writing_forever_hits_output_limit() {
    let wasm = module(
        r#"
      (data (i32.const 100) "spam! ")
      (func (export "_start")
        (loop $l
          (drop (call $write (i32.const 1) (i32.const 100) (i32.const 6)))
          (br $l)))
    "#,
    );
    let limits = CallLimits {
        max_output: Some(1000),
        fuel: Some(10_000_000_000),
        ..CallLimits::default()
    };
    let started = Instant::now();
    let r = call(&runtime(config()), &wasm, with_limits(inv(b""), limits)).await;
    assert_limit(&r, "output");
    assert_eq!(r.stdout.len(), 1000);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn stderr_is_capped_and_floods_are_stopped() {
    let wasm = module(
        r#"
      (data (i32.const 100) "0123456789")
      (func (export "_start")
        (local $i i32)
        (local.set $i (i32.const 20))
        (loop $l
          (drop (call $write (i32.const 2) (i32.const 100) (i32.const 10)))
          (local.set $i (i32.sub (local.get $i) (i32.const 1)))
          (br_if $l (local.get $i))))
    "#,
    );
    // 200 bytes written, 64 kept.
    let rt = runtime(RuntimeConfig {
        max_stderr: 64,
        ..config()
    });
    let r = call(&rt, &wasm, inv(b"")).await;
    assert_eq!(r.outcome.status, RunStatus::Exited(0));
    assert_eq!(r.outcome.stderr.len(), 64);
    assert!(r.outcome.stderr.ends_with("0123456789"));

    // 200 bytes is more than 16 times a 10-byte excerpt.
    let rt = runtime(RuntimeConfig {
        max_stderr: 10,
        ..config()
    });
    let r = call(&rt, &wasm, inv(b"")).await;
    assert_limit(&r, "stderr");
}

#[tokio::test]
async fn deep_recursion_traps_cleanly() {
    let wasm = module(r#"(func $f (export "_start") (call $f))"#);
    let rt = runtime(config());
    let r = call(&rt, &wasm, inv(b"")).await;
    match &r.outcome.status {
        RunStatus::Trapped(msg) => assert!(msg.contains("stack"), "{msg}"),
        other => panic!("expected stack overflow, got {other:?}"),
    }
    // The runtime is still fine afterwards.
    let r = call(&rt, &module(ECHO), inv(b"ok")).await;
    assert_eq!(r.stdout, b"echo: ok");
}

#[tokio::test]
async fn pure_compute_loop_is_stopped_at_the_deadline() {
    let rt = runtime(config());
    let limits = CallLimits {
        fuel: Some(1_000_000_000_000),
        timeout_ms: Some(300),
        ..CallLimits::default()
    };
    let started = Instant::now();
    let r = call(&rt, &module(LOOP), with_limits(inv(b""), limits)).await;
    assert_limit(&r, "timeout");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
    assert_eq!(rt.in_flight(), 0);
}

#[tokio::test]
async fn limits_asked_above_the_node_maxima_are_clamped() {
    let rt = runtime(RuntimeConfig {
        max_fuel: 50_000,
        max_timeout_ms: 300,
        ..config()
    });
    // Fuel: asking for a trillion gets the node's 50 000.
    let limits = CallLimits {
        fuel: Some(1_000_000_000_000),
        ..CallLimits::default()
    };
    let r = call(&rt, &module(LOOP), with_limits(inv(b""), limits)).await;
    assert_limit(&r, "fuel");
    assert_eq!(r.outcome.fuel_used, 50_000);

    // Timeout: asking for an hour gets the node's 300 ms.
    let rt = runtime(RuntimeConfig {
        max_timeout_ms: 300,
        ..config()
    });
    let limits = CallLimits {
        fuel: Some(1_000_000_000_000),
        timeout_ms: Some(3_600_000),
        ..CallLimits::default()
    };
    let r = call(&rt, &module(LOOP), with_limits(inv(b""), limits)).await;
    match &r.outcome.status {
        RunStatus::LimitExceeded { limit, detail } if limit == "timeout" => {
            assert!(detail.contains("300 ms"), "{detail}")
        }
        other => panic!("expected timeout, got {other:?}"),
    }
}

#[tokio::test]
async fn host_call_loop_is_stopped_at_the_deadline() {
    let wasm = module(r#"(func (export "_start") (loop $l (drop (call $sched_yield)) (br $l)))"#);
    let limits = CallLimits {
        fuel: Some(1_000_000_000_000),
        timeout_ms: Some(200),
        ..CallLimits::default()
    };
    let started = Instant::now();
    let r = call(&runtime(config()), &wasm, with_limits(inv(b""), limits)).await;
    assert_limit(&r, "timeout");
    assert!(started.elapsed() < Duration::from_millis(1500));
}

#[test]
fn validation_errors_are_clear() {
    let rt = runtime(config());

    let err = rt.validate(b"hello world, not wasm").unwrap_err();
    assert!(matches!(err, RuntimeError::InvalidModule(_)));
    assert!(
        err.to_string().contains("not a WebAssembly module"),
        "{err}"
    );

    let no_start = wat::parse_str(r#"(module (func (export "main")))"#).unwrap();
    let err = rt.validate(&no_start).unwrap_err();
    assert!(matches!(err, RuntimeError::MissingStart));
    assert!(err.to_string().contains("wasm32-wasip1"));

    let unknown =
        wat::parse_str(r#"(module (import "env" "foo" (func)) (func (export "_start")))"#).unwrap();
    let err = rt.validate(&unknown).unwrap_err();
    match &err {
        RuntimeError::UnknownImport { module, name } => {
            assert_eq!((module.as_str(), name.as_str()), ("env", "foo"))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "module imports env.foo, which Orb does not provide"
    );
    // prepare refuses it too
    assert!(matches!(
        rt.prepare(ContentHash::of(&unknown), &unknown),
        Err(RuntimeError::UnknownImport { .. })
    ));

    let unknown_wasi = wat::parse_str(
        r#"(module (import "wasi_snapshot_preview1" "sock_open" (func (param i32) (result i32)))
                   (func (export "_start")))"#,
    )
    .unwrap();
    assert!(matches!(
        rt.validate(&unknown_wasi),
        Err(RuntimeError::UnknownImport { .. })
    ));

    let wrong_sig = wat::parse_str(
        r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32) (result i32)))
                   (func (export "_start")))"#,
    )
    .unwrap();
    let err = rt.validate(&wrong_sig).unwrap_err();
    assert!(err.to_string().contains("wrong signature"), "{err}");

    let imported_memory =
        wat::parse_str(r#"(module (import "env" "memory" (memory 1)) (func (export "_start")))"#)
            .unwrap();
    assert!(matches!(
        rt.validate(&imported_memory),
        Err(RuntimeError::InvalidModule(_))
    ));

    let start_section =
        wat::parse_str(r#"(module (func $s) (start $s) (func (export "_start")))"#).unwrap();
    assert!(matches!(
        rt.validate(&start_section),
        Err(RuntimeError::InvalidModule(_))
    ));

    let broken = b"\0asm\x01\0\0\0\x01\xff\xff".to_vec();
    assert!(matches!(
        rt.validate(&broken),
        Err(RuntimeError::InvalidModule(_))
    ));

    let start_with_params =
        wat::parse_str(r#"(module (func (export "_start") (param i32)))"#).unwrap();
    assert!(rt.validate(&start_with_params).is_err());
}

#[tokio::test]
async fn call_errors() {
    let rt = runtime(RuntimeConfig {
        max_input: 10,
        ..config()
    });
    let missing = ContentHash([7; 32]);
    assert!(matches!(
        rt.call(missing, inv(b"")).await,
        Err(RuntimeError::NotPrepared(h)) if h == missing
    ));
    let hash = prepare(&rt, &module(ECHO));
    assert!(matches!(
        rt.call(hash, inv(&[0; 11])).await,
        Err(RuntimeError::InputTooLarge { limit: 10 })
    ));
    assert_eq!(rt.in_flight(), 0);

    let none = runtime(RuntimeConfig {
        capacity: 0,
        ..config()
    });
    let hash = prepare(&none, &module(ECHO));
    assert!(matches!(
        none.call(hash, inv(b"")).await,
        Err(RuntimeError::Busy)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_when_capacity_is_exhausted() {
    let rt = runtime(RuntimeConfig {
        capacity: 1,
        ..config()
    });
    let hog = prepare(&rt, &module(LOOP));
    let echo = prepare(&rt, &module(ECHO));
    let limits = CallLimits {
        fuel: Some(1_000_000_000_000),
        timeout_ms: Some(500),
        ..CallLimits::default()
    };
    let rt2 = rt.clone();
    let long = tokio::spawn(async move { rt2.call(hog, with_limits(inv(b""), limits)).await });
    while rt.in_flight() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();
    assert!(matches!(
        rt.call(echo, inv(b"x")).await,
        Err(RuntimeError::Busy)
    ));
    assert!(started.elapsed() < Duration::from_millis(100));

    let r = long.await.unwrap().unwrap();
    assert_limit(&r, "timeout");
    assert_eq!(rt.in_flight(), 0);
    let r = rt.call(echo, inv(b"x")).await.unwrap();
    assert_eq!(r.stdout, b"echo: x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_calls_run_while_a_hostile_one_spins() {
    let rt = runtime(RuntimeConfig {
        capacity: 2,
        ..config()
    });
    let hog = prepare(&rt, &module(LOOP));
    let echo = prepare(&rt, &module(ECHO));
    let limits = CallLimits {
        fuel: Some(1_000_000_000_000),
        timeout_ms: Some(1_000),
        ..CallLimits::default()
    };
    let rt2 = rt.clone();
    let long = tokio::spawn(async move { rt2.call(hog, with_limits(inv(b""), limits)).await });
    while rt.in_flight() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for _ in 0..5 {
        let started = Instant::now();
        let r = rt.call(echo, inv(b"hi")).await.unwrap();
        assert_eq!(r.stdout, b"echo: hi");
        assert!(started.elapsed() < Duration::from_millis(500));
    }
    assert_eq!(rt.in_flight(), 1);
    let r = long.await.unwrap().unwrap();
    assert_limit(&r, "timeout");
}

#[tokio::test]
async fn artifact_round_trip() {
    let rt = runtime(config());
    let wasm = module(ECHO);
    let hash = prepare(&rt, &wasm);
    let artifact = rt.artifact(&hash).expect("artifact");
    assert!(rt.artifact(&ContentHash([9; 32])).is_none());

    let fresh = runtime(config());
    assert_eq!(fresh.cache_key(), rt.cache_key());
    assert!(!fresh.is_prepared(&hash));
    fresh
        .prepare_artifact(hash, &artifact)
        .expect("load artifact");
    assert!(fresh.is_prepared(&hash));
    assert_eq!((fresh.compiles(), fresh.artifacts_loaded()), (0, 1));
    assert_eq!((rt.compiles(), rt.artifacts_loaded()), (1, 0));
    let r = fresh.call(hash, inv(b"again")).await.unwrap();
    assert_eq!(r.outcome.status, RunStatus::Exited(0));
    assert_eq!(r.stdout, b"echo: again");
    assert!(r.outcome.fuel_used > 0);

    // Fuel still applies to loaded artifacts.
    let looping = module(LOOP);
    let lhash = prepare(&rt, &looping);
    let lart = rt.artifact(&lhash).unwrap();
    fresh.prepare_artifact(lhash, &lart).unwrap();
    let limits = CallLimits {
        fuel: Some(100_000),
        ..CallLimits::default()
    };
    let r = fresh
        .call(lhash, with_limits(inv(b""), limits))
        .await
        .unwrap();
    assert_limit(&r, "fuel");

    assert!(matches!(
        runtime(config()).prepare_artifact(hash, b"garbage"),
        Err(RuntimeError::Artifact(_))
    ));
}

#[tokio::test]
async fn bad_pointers_get_efault() {
    // fd_write with an iovec far outside memory: the errno becomes the
    // exit code.
    let wasm = module(
        r#"
      (func (export "_start")
        (call $proc_exit
          (call $write (i32.const 1) (i32.const 0x7fff0000) (i32.const 100))))
    "#,
    );
    let r = call(&runtime(config()), &wasm, inv(b"")).await;
    assert_eq!(r.outcome.status, RunStatus::Exited(21));

    let wasm = module(
        r#"
      (func (export "_start")
        (call $proc_exit (call $args_sizes_get (i32.const -4) (i32.const 0))))
    "#,
    );
    let r = call(&runtime(config()), &wasm, inv(b"")).await;
    assert_eq!(r.outcome.status, RunStatus::Exited(21));
}

#[tokio::test]
async fn clocks_random_and_missing_capabilities() {
    let wasm = module(
        r#"
      (func (export "_start")
        ;; 16 random bytes to stdout
        (if (call $random_get (i32.const 200) (i32.const 16)) (then unreachable))
        (drop (call $write (i32.const 1) (i32.const 200) (i32.const 16)))
        ;; realtime clock is after 2020
        (if (call $clock_time_get (i32.const 0) (i64.const 1) (i32.const 300)) (then unreachable))
        (if (i64.lt_u (i64.load (i32.const 300)) (i64.const 1577836800000000000)) (then unreachable))
        ;; no filesystem: path_open says ENOTCAPABLE (76)
        (call $proc_exit (call $path_open (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 0)
                                          (i32.const 0) (i64.const 0) (i64.const 0) (i32.const 0)
                                          (i32.const 400))))
    "#,
    );
    let r = call(&runtime(config()), &wasm, inv(b"")).await;
    assert_eq!(r.outcome.status, RunStatus::Exited(76));
    assert_eq!(r.stdout.len(), 16);
}
