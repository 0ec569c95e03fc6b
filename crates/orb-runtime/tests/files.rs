//! Files: packing directories into bundles (and refusing what cannot be
//! bundled), and calls that use them: the preopen, per-call scratch layers
//! that never leak between calls, and the bounds on scratch space and open
//! files.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use bytes::Bytes;
use orb_proto::ContentHash;
use orb_proto::bundle::{BundleLimits, Entry, decode};
use orb_proto::wire::{CallLimits, CallMeta, RunStatus};
use orb_runtime::files::{PackError, pack_dir};
use orb_runtime::{CallResult, FileTree, Invocation, Runtime, RuntimeConfig};

fn write(dir: &Path, path: &str, body: &str) {
    let p = dir.join(path);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, body).unwrap();
}

fn paths(bundle: &[u8]) -> Vec<String> {
    decode(bundle, &BundleLimits::default())
        .unwrap()
        .iter()
        .map(|e| match e {
            Entry::Dir(p) => format!("{p}/"),
            Entry::File(p, d) => format!("{p}={}", String::from_utf8_lossy(d)),
        })
        .collect()
}

#[test]
fn packs_files_directories_and_inside_symlinks() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write(root, "index.html", "<h1>hi</h1>");
    write(root, "css/site.css", "body{}");
    fs::create_dir(root.join("empty")).unwrap();
    symlink("css/site.css", root.join("style.css")).unwrap();
    symlink("css", root.join("styles")).unwrap();
    symlink("../index.html", root.join("css/home.html")).unwrap();
    let bundle = pack_dir(root, &BundleLimits::default()).unwrap();
    assert_eq!(
        paths(&bundle),
        [
            "css/",
            "css/home.html=<h1>hi</h1>",
            "css/site.css=body{}",
            "empty/",
            "index.html=<h1>hi</h1>",
            "style.css=body{}",
            "styles/",
            "styles/home.html=<h1>hi</h1>",
            "styles/site.css=body{}",
        ]
    );
    // The same tree packs to the same bytes, so the same hash.
    let again = pack_dir(root, &BundleLimits::default()).unwrap();
    assert_eq!(ContentHash::of(&bundle), ContentHash::of(&again));
    let tree = FileTree::from_bundle(Bytes::from(bundle), &BundleLimits::default()).unwrap();
    assert_eq!(tree.entry_count(), 9);
}

#[test]
fn refuses_links_that_leave_the_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("secret");
    fs::write(&outside, "s3cret").unwrap();
    let root = tmp.path().join("site");
    fs::create_dir(&root).unwrap();
    write(&root, "ok.txt", "ok");

    symlink("../secret", root.join("up")).unwrap();
    let err = pack_dir(&root, &BundleLimits::default()).unwrap_err();
    assert!(matches!(err, PackError::EscapingSymlink { .. }), "{err}");
    assert!(err.to_string().contains("up"), "{err}");
    fs::remove_file(root.join("up")).unwrap();

    symlink(&outside, root.join("abs")).unwrap();
    let err = pack_dir(&root, &BundleLimits::default()).unwrap_err();
    assert!(matches!(err, PackError::AbsoluteSymlink { .. }), "{err}");
    assert!(err.to_string().contains("absolute"), "{err}");
    fs::remove_file(root.join("abs")).unwrap();

    symlink("missing.txt", root.join("dangling")).unwrap();
    let err = pack_dir(&root, &BundleLimits::default()).unwrap_err();
    assert!(matches!(err, PackError::DanglingSymlink { .. }), "{err}");
    fs::remove_file(root.join("dangling")).unwrap();

    fs::create_dir(root.join("sub")).unwrap();
    symlink("..", root.join("sub/loop")).unwrap();
    let err = pack_dir(&root, &BundleLimits::default()).unwrap_err();
    assert!(matches!(err, PackError::SymlinkLoop { .. }), "{err}");
    fs::remove_file(root.join("sub/loop")).unwrap();

    let _socket = std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap();
    let err = pack_dir(&root, &BundleLimits::default()).unwrap_err();
    assert!(matches!(err, PackError::Unsupported(_)), "{err}");
    fs::remove_file(root.join("sock")).unwrap();

    assert!(pack_dir(&root, &BundleLimits::default()).is_ok());
    let err = pack_dir(&root.join("ok.txt"), &BundleLimits::default()).unwrap_err();
    assert!(matches!(err, PackError::NotADirectory(_)), "{err}");
}

#[test]
fn refuses_trees_over_the_bounds() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    for i in 0..5 {
        write(root, &format!("f{i}"), "x");
    }
    let few = BundleLimits {
        max_bytes: 1 << 20,
        max_entries: 4,
    };
    let err = pack_dir(root, &few).unwrap_err();
    assert!(
        err.to_string()
            .contains("bundle has 5 entries; the limit is 4"),
        "{err}"
    );
    write(root, "big", &"x".repeat(5_000));
    let small = BundleLimits {
        max_bytes: 4_096,
        max_entries: 100,
    };
    let err = pack_dir(root, &small).unwrap_err();
    assert!(err.to_string().contains("the limit is 4,096"), "{err}");
    assert!(err.to_string().contains("big"), "{err}");
}

// --- calls with files --------------------------------------------------

const PRELUDE: &str = r#"
  (import "wasi_snapshot_preview1" "path_open" (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_get" (func $fd_prestat_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_dir_name" (func $fd_prestat_dir_name (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_shutdown" (func $sock_shutdown (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 2)
  ;; open(path, len, oflags, rights) -> fd, exiting with 1000 + errno on failure
  (func $open (param $p i32) (param $n i32) (param $o i32) (param $r i64) (result i32)
    (local $e i32)
    (local.set $e (call $path_open (i32.const 3) (i32.const 0) (local.get $p) (local.get $n)
                    (local.get $o) (local.get $r) (i64.const 0) (i32.const 0) (i32.const 200)))
    (if (local.get $e) (then (call $proc_exit (i32.add (i32.const 1000) (local.get $e)))))
    (i32.load (i32.const 200)))
  ;; write(fd, ptr, len) -> errno; iovec at 16, nwritten at 24
  (func $write (param $fd i32) (param $ptr i32) (param $len i32) (result i32)
    (i32.store (i32.const 16) (local.get $ptr))
    (i32.store (i32.const 20) (local.get $len))
    (call $fd_write (local.get $fd) (i32.const 16) (i32.const 1) (i32.const 24)))
"#;

fn module(body: &str) -> Vec<u8> {
    wat::parse_str(format!("(module {PRELUDE} {body})")).unwrap()
}

fn tree(files: &[(&str, &str)]) -> FileTree {
    let tmp = tempfile::tempdir().unwrap();
    for (path, body) in files {
        write(tmp.path(), path, body);
    }
    let bundle = pack_dir(tmp.path(), &BundleLimits::default()).unwrap();
    FileTree::from_bundle(Bytes::from(bundle), &BundleLimits::default()).unwrap()
}

fn inv(files: Option<FileTree>) -> Invocation {
    Invocation {
        function: "files".to_string(),
        input: Bytes::new(),
        args: vec![],
        env: vec![],
        meta: CallMeta::default(),
        limits: CallLimits::default(),
        files,
        host: None,
    }
}

fn runtime(cfg: RuntimeConfig) -> Runtime {
    Runtime::new(RuntimeConfig {
        default_fuel: 1_000_000_000,
        default_timeout_ms: 5_000,
        ..cfg
    })
    .unwrap()
}

async fn call(rt: &Runtime, wasm: &[u8], files: Option<FileTree>) -> CallResult {
    let hash = ContentHash::of(wasm);
    rt.prepare(hash, wasm).unwrap();
    rt.call(hash, inv(files)).await.unwrap()
}

/// Creates "mine" exclusively (so a second call would fail if it saw the
/// first one's file), prints "data.txt", then overwrites "data.txt".
const ISOLATION: &str = r#"
  (data (i32.const 100) "data.txt")
  (data (i32.const 120) "mine")
  (data (i32.const 140) "changed")
  (func (export "_start")
    (local $fd i32)
    ;; O_CREAT|O_EXCL, FD_WRITE
    (drop (call $open (i32.const 120) (i32.const 4) (i32.const 5) (i64.const 64)))
    ;; read data.txt (FD_READ) into 1024, copy to stdout
    (local.set $fd (call $open (i32.const 100) (i32.const 8) (i32.const 0) (i64.const 2)))
    (i32.store (i32.const 300) (i32.const 1024))
    (i32.store (i32.const 304) (i32.const 512))
    (if (call $fd_read (local.get $fd) (i32.const 300) (i32.const 1) (i32.const 308))
      (then (call $proc_exit (i32.const 2))))
    (drop (call $write (i32.const 1) (i32.const 1024) (i32.load (i32.const 308))))
    ;; O_TRUNC, FD_WRITE: overwrite the bundle's file in this call's layer
    (local.set $fd (call $open (i32.const 100) (i32.const 8) (i32.const 8) (i64.const 64)))
    (if (call $write (local.get $fd) (i32.const 140) (i32.const 7))
      (then (call $proc_exit (i32.const 3)))))
"#;

#[tokio::test]
async fn calls_never_see_each_others_writes() {
    let rt = runtime(RuntimeConfig {
        capacity: 2,
        ..RuntimeConfig::default()
    });
    let wasm = module(ISOLATION);
    let files = tree(&[("data.txt", "original")]);
    for _ in 0..2 {
        let r = call(&rt, &wasm, Some(files.clone())).await;
        assert_eq!(
            r.outcome.status,
            RunStatus::Exited(0),
            "{}",
            r.outcome.stderr
        );
        assert_eq!(r.stdout, b"original");
    }
    // At the same time, too.
    let hash = ContentHash::of(&wasm);
    let (a, b) = tokio::join!(
        rt.call(hash, inv(Some(files.clone()))),
        rt.call(hash, inv(Some(files.clone())))
    );
    for r in [a.unwrap(), b.unwrap()] {
        assert_eq!(r.outcome.status, RunStatus::Exited(0));
        assert_eq!(r.stdout, b"original");
    }
}

/// Writes 64 blocks of 4 KiB to a new file; exits with the first errno.
const FILL: &str = r#"
  (data (i32.const 100) "big")
  (func (export "_start")
    (local $fd i32) (local $i i32) (local $e i32)
    (local.set $fd (call $open (i32.const 100) (i32.const 3) (i32.const 1) (i64.const 64)))
    (block $done (loop $again
      (local.set $e (call $write (local.get $fd) (i32.const 4096) (i32.const 4096)))
      (br_if $done (local.get $e))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $again (i32.lt_u (local.get $i) (i32.const 64)))))
    (call $proc_exit (local.get $e)))
"#;

/// Like FILL, but keeps writing 1,000 times whatever happens.
const FILL_REGARDLESS: &str = r#"
  (data (i32.const 100) "big")
  (func (export "_start")
    (local $fd i32) (local $i i32) (local $e i32)
    (local.set $fd (call $open (i32.const 100) (i32.const 3) (i32.const 1) (i64.const 64)))
    (loop $again
      (local.set $e (call $write (local.get $fd) (i32.const 4096) (i32.const 4096)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $again (i32.lt_u (local.get $i) (i32.const 1000))))
    (call $proc_exit (local.get $e)))
"#;

#[tokio::test]
async fn writing_past_the_scratch_limit_gets_enospc_and_the_runtime_keeps_serving() {
    let rt = runtime(RuntimeConfig {
        max_scratch_bytes: 64 * 1024,
        ..RuntimeConfig::default()
    });
    let files = tree(&[("data.txt", "original")]);
    let r = call(&rt, &module(FILL), Some(files.clone())).await;
    assert_eq!(r.outcome.status, RunStatus::Exited(51), "ENOSPC");
    assert!(
        r.outcome.stderr.contains("scratch space is full"),
        "{}",
        r.outcome.stderr
    );
    // A function that keeps trying gets ENOSPC each time, and one line in
    // its log.
    let r = call(&rt, &module(FILL_REGARDLESS), Some(files.clone())).await;
    assert_eq!(r.outcome.status, RunStatus::Exited(51));
    assert_eq!(r.outcome.stderr.matches("scratch space is full").count(), 1);
    // The next call gets a fresh layer and works.
    let r = call(&rt, &module(ISOLATION), Some(files.clone())).await;
    assert_eq!(r.outcome.status, RunStatus::Exited(0));
    assert_eq!(r.stdout, b"original");
    // With room enough, the same function succeeds.
    let roomy = runtime(RuntimeConfig::default());
    let r = call(&roomy, &module(FILL), Some(files)).await;
    assert_eq!(r.outcome.status, RunStatus::Exited(0));
    assert_eq!(rt.in_flight(), 0);
}

#[tokio::test]
async fn open_files_are_bounded() {
    let rt = runtime(RuntimeConfig {
        max_open_files: 4,
        ..RuntimeConfig::default()
    });
    // Opens "." until it fails; the preopen is one of the four.
    let wasm = module(
        r#"
      (data (i32.const 100) ".")
      (func (export "_start")
        (loop $again
          (drop (call $open (i32.const 100) (i32.const 1) (i32.const 0) (i64.const 0)))
          (br $again)))
    "#,
    );
    let r = call(&rt, &wasm, Some(tree(&[]))).await;
    assert_eq!(r.outcome.status, RunStatus::Exited(1033), "EMFILE");
}

/// Exits with prestat(3) * 1_000_000 + sock_shutdown(99) * 10_000 +
/// sock_shutdown(1) * 100 + sock_shutdown(3), and prints fd 3's name.
const PREOPEN_AND_SOCKETS: &str = r#"
  (func (export "_start")
    (local $pre i32)
    (local.set $pre (call $fd_prestat_get (i32.const 3) (i32.const 400)))
    (if (i32.eqz (local.get $pre))
      (then
        (drop (call $fd_prestat_dir_name (i32.const 3) (i32.const 500) (i32.load (i32.const 404))))
        (drop (call $write (i32.const 1) (i32.const 500) (i32.load (i32.const 404))))))
    (call $proc_exit
      (i32.add
        (i32.add
          (i32.mul (local.get $pre) (i32.const 1000000))
          (i32.mul (call $sock_shutdown (i32.const 99) (i32.const 0)) (i32.const 10000)))
        (i32.add
          (i32.mul (call $sock_shutdown (i32.const 1) (i32.const 0)) (i32.const 100))
          (call $sock_shutdown (i32.const 3) (i32.const 0))))))
"#;

#[tokio::test]
async fn preopen_only_with_files_and_socket_errnos_follow_the_spec() {
    let rt = runtime(RuntimeConfig::default());
    let wasm = module(PREOPEN_AND_SOCKETS);
    // With files: fd 3 is the preopen "/", and it is not a socket.
    let r = call(&rt, &wasm, Some(tree(&[("a", "b")]))).await;
    assert_eq!(
        r.outcome.status,
        RunStatus::Exited(8 * 10_000 + 57 * 100 + 57)
    );
    assert_eq!(r.stdout, b"/");
    // Without: no preopen, and fd 3 is not open at all.
    let r = call(&rt, &wasm, None).await;
    assert_eq!(
        r.outcome.status,
        RunStatus::Exited(8 * 1_000_000 + 8 * 10_000 + 57 * 100 + 8)
    );
    assert!(r.stdout.is_empty());
}
