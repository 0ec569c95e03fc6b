//! Function start-up costs in `orb-runtime`, in process:
//!
//! * `warm`: one call of a prepared module (capacity slot, fresh store and
//!   instance, WASI context, `_start`, watchdog, blocking-pool hop).
//! * `from_artifact`: load the serialized compiled module (what a restarted
//!   node does) and make one call.
//! * `cold`: validate and compile with Cranelift + metering, then one call.
//!
//! For `examples/functions/hello.wat`, and for the Rust `rust-upper` example
//! when it has been built for wasm32-wasip1 (`cargo test --test e2e` builds
//! it into target/wasm-functions).

// criterion_group! expands to an undocumented public function.
#![allow(missing_docs)]

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use orb_proto::ContentHash;
use orb_proto::wire::{CallLimits, CallMeta, RunStatus};
use orb_runtime::{Invocation, Runtime, RuntimeConfig};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A function to bench: (name, module, input, expected output).
type Function = (&'static str, Vec<u8>, &'static [u8], &'static [u8]);

fn functions() -> Vec<Function> {
    let hello =
        wat::parse_file(root().join("examples/functions/hello.wat")).expect("hello.wat parses");
    let mut v = vec![("hello.wat", hello, &b"bench"[..], &b"hello, bench"[..])];
    let upper = root().join("target/wasm-functions/wasm32-wasip1/release/rust-upper.wasm");
    match std::fs::read(&upper) {
        Ok(wasm) => v.push(("rust-upper", wasm, &b"bench"[..], &b"BENCH"[..])),
        Err(_) => eprintln!(
            "rust-upper not built ({}); run `cargo test --test e2e` first to bench it",
            upper.display()
        ),
    }
    v
}

fn invocation(input: &'static [u8]) -> Invocation {
    Invocation {
        function: "bench".to_string(),
        input: Bytes::from_static(input),
        args: vec![],
        env: vec![],
        meta: CallMeta {
            request_id: "bench".to_string(),
            method: "POST".to_string(),
            ..CallMeta::default()
        },
        limits: CallLimits::default(),
        files: None,
        host: None,
    }
}

fn bench(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let rt = Runtime::new(RuntimeConfig::default()).expect("orb runtime");
    let call = |hash: ContentHash, input: &'static [u8], expect: &[u8]| {
        let r = tokio
            .block_on(rt.call(hash, invocation(input)))
            .expect("call");
        assert_eq!(r.outcome.status, RunStatus::Exited(0));
        assert_eq!(r.stdout, expect);
    };

    let mut g = c.benchmark_group("runtime");
    g.measurement_time(Duration::from_secs(5));
    for (name, wasm, input, expect) in functions() {
        let hash = ContentHash::of(&wasm);
        rt.prepare(hash, &wasm).expect("prepare");
        let artifact = rt.artifact(&hash).expect("artifact");

        g.bench_function(format!("warm/{name}"), |b| {
            rt.prepare(hash, &wasm).expect("prepare");
            b.iter(|| call(hash, input, expect))
        });
        g.bench_function(format!("from_artifact/{name}"), |b| {
            b.iter(|| {
                rt.forget(&hash);
                rt.prepare_artifact(hash, &artifact).expect("load");
                call(hash, input, expect)
            })
        });
        g.bench_function(format!("cold/{name}"), |b| {
            b.iter(|| {
                rt.forget(&hash);
                rt.prepare(hash, &wasm).expect("compile");
                call(hash, input, expect)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
