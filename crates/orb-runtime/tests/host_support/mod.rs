//! Helpers of the host-interface tests: a mock of the node's services,
//! building the example functions, running calls.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use orb_proto::ContentHash;
use orb_proto::wire::{CallLimits, CallMeta};
use orb_runtime::{
    CallRequest, CallResult, CasOutcome, HostCall, HostError, HostServices, HttpRequest,
    Invocation, Response, Runtime, RuntimeConfig,
};

/// What the node would do, in memory: a key-value map, canned HTTP
/// answers by host, and a few callable functions. Every request is logged.
#[derive(Default)]
pub struct Mock {
    kv: Mutex<HashMap<Vec<u8>, Vec<u8>>>,
    log: Mutex<Vec<String>>,
    /// (deadline, time left, max response bytes) of each fetch and call.
    deadlines: Mutex<Vec<(Instant, Duration, usize)>>,
}

impl Mock {
    pub fn value(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.kv.lock().unwrap().get(key).cloned()
    }

    pub fn put(&self, key: &[u8], value: &[u8]) {
        self.kv.lock().unwrap().insert(key.to_vec(), value.to_vec());
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    pub fn deadlines(&self) -> Vec<(Instant, Duration, usize)> {
        self.deadlines.lock().unwrap().clone()
    }

    fn note(&self, entry: String, cx: Option<&HostCall>) {
        self.log.lock().unwrap().push(entry);
        if let Some(cx) = cx {
            self.deadlines.lock().unwrap().push((
                cx.deadline,
                cx.remaining(),
                cx.max_response_bytes,
            ));
        }
    }
}

fn ok(status: u16, body: impl Into<Vec<u8>>) -> Response {
    Response {
        status,
        headers: vec![("content-type".to_string(), "text/plain".to_string())],
        body: body.into(),
    }
}

impl HostServices for Mock {
    fn kv_get(&self, _: &HostCall, key: &[u8]) -> Result<Option<Vec<u8>>, HostError> {
        self.note(format!("kv_get {}", String::from_utf8_lossy(key)), None);
        Ok(self.value(key))
    }

    fn kv_set(&self, _: &HostCall, key: &[u8], value: &[u8]) -> Result<(), HostError> {
        self.note(format!("kv_set {}", String::from_utf8_lossy(key)), None);
        self.put(key, value);
        Ok(())
    }

    fn kv_delete(&self, _: &HostCall, key: &[u8]) -> Result<(), HostError> {
        self.note(format!("kv_delete {}", String::from_utf8_lossy(key)), None);
        self.kv.lock().unwrap().remove(key);
        Ok(())
    }

    fn kv_increment(&self, _: &HostCall, key: &[u8], delta: i64) -> Result<i64, HostError> {
        self.note(
            format!("kv_increment {}", String::from_utf8_lossy(key)),
            None,
        );
        let mut kv = self.kv.lock().unwrap();
        let now = match kv.get(key) {
            None => 0,
            Some(v) => orb_runtime::host::parse_counter(v)
                .ok_or_else(|| HostError::Invalid("value is not a counter".to_string()))?,
        };
        let new = now
            .checked_add(delta)
            .ok_or_else(|| HostError::Invalid("counter would overflow".to_string()))?;
        kv.insert(key.to_vec(), orb_runtime::host::format_counter(new));
        Ok(new)
    }

    fn kv_compare_and_swap(
        &self,
        _: &HostCall,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<CasOutcome, HostError> {
        self.note(format!("kv_cas {}", String::from_utf8_lossy(key)), None);
        let mut kv = self.kv.lock().unwrap();
        let current = kv.get(key).cloned();
        if current.as_deref() != expected {
            return Ok(CasOutcome::Conflict { current });
        }
        match new {
            Some(v) => kv.insert(key.to_vec(), v.to_vec()),
            None => kv.remove(key),
        };
        Ok(CasOutcome::Swapped)
    }

    fn http_fetch(&self, cx: &HostCall, request: HttpRequest) -> Result<Response, HostError> {
        self.note(format!("{} {}", request.method, request.url), Some(cx));
        let host = request
            .url
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_default()
            .to_string();
        match host.as_str() {
            "example.test" => Ok(ok(200, "123456789")),
            "denied.test" => Err(HostError::Denied(format!(
                "{host} is not on this function's allow-list"
            ))),
            "big.test" => Ok(Response {
                status: 200,
                headers: vec![],
                body: vec![b'x'; cx.max_response_bytes],
            }),
            "slow.test" => Err(HostError::Timeout(format!("{host} did not answer in time"))),
            "hang.test" => {
                // A service that ignores its deadline (bounded, for the test).
                std::thread::sleep(cx.remaining() + Duration::from_millis(50));
                Ok(ok(200, ""))
            }
            "panic.test" => panic!("mock service panics on purpose"),
            // A chatty failure: the guest sees a bounded detail.
            "verbose.test" => Err(HostError::Failed(format!("x{}", "é".repeat(5000)))),
            _ => Err(HostError::Failed(format!("cannot connect to {host}"))),
        }
    }

    fn call(&self, cx: &HostCall, request: CallRequest) -> Result<Response, HostError> {
        self.note(
            format!(
                "call {} {} {} bytes",
                request.function,
                request.method,
                request.body.len()
            ),
            Some(cx),
        );
        match request.function.as_str() {
            "upper" => Ok(ok(200, request.body.to_ascii_uppercase())),
            "fail" => Ok(ok(500, "boom")),
            "deep" => Err(HostError::Depth(
                "call depth limit of 4 reached".to_string(),
            )),
            name => Err(HostError::NotFound(format!("no function named {name}"))),
        }
    }
}

pub fn runtime(cfg: RuntimeConfig) -> Runtime {
    Runtime::new(RuntimeConfig {
        default_fuel: 1_000_000_000,
        ..cfg
    })
    .expect("runtime")
}

/// A call with CGI metadata and maybe host services.
pub fn inv(
    method: &str,
    query: &str,
    input: &[u8],
    host: Option<Arc<dyn HostServices>>,
) -> Invocation {
    Invocation {
        function: "test".to_string(),
        input: Bytes::copy_from_slice(input),
        args: vec![],
        env: vec![],
        meta: CallMeta {
            request_id: "req".to_string(),
            method: method.to_string(),
            query: query.to_string(),
            ..CallMeta::default()
        },
        limits: CallLimits::default(),
        host,
        files: None,
    }
}

/// Prepare `wasm` and run it once.
pub async fn call(rt: &Runtime, wasm: &[u8], inv: Invocation) -> CallResult {
    let hash = ContentHash::of(wasm);
    rt.prepare(hash, wasm).expect("prepare");
    rt.call(hash, inv).await.expect("call")
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Build `examples/functions/NAME` for wasm32-wasip1 and return the module.
/// `None` (after saying why) when the target is not installed, unless CI
/// is set: then that is a failure. Any other build failure always fails.
pub fn example(name: &str) -> Option<Vec<u8>> {
    // One build at a time: the tests run in parallel and would only queue
    // on cargo's lock anyway.
    static BUILD: Mutex<()> = Mutex::new(());
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());

    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("wasm-functions");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let out = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip1",
            "--manifest-path",
        ])
        .arg(
            root.join("examples/functions")
                .join(name)
                .join("Cargo.toml"),
        )
        .arg("--target-dir")
        .arg(&target_dir)
        .output()
        .expect("run cargo");
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let missing = stderr.contains("target may not be installed")
            || stderr.contains("can't find crate for `std`");
        if missing && !in_ci() {
            eprintln!(
                "SKIPPED: the wasm32-wasip1 target is not installed (rustup target add wasm32-wasip1)"
            );
            return None;
        }
        panic!("building example {name} for wasm32-wasip1 failed:\n{stderr}");
    }
    let wasm = target_dir
        .join("wasm32-wasip1/release")
        .join(format!("{name}.wasm"));
    Some(std::fs::read(&wasm).unwrap_or_else(|e| panic!("reading {}: {e}", wasm.display())))
}
