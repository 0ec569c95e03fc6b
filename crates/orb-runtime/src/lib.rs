//! Orb's function runtime: runs WebAssembly (WASI preview 1 command)
//! modules under hard limits.
//!
//! * Modules are validated and compiled once per content hash ([`Runtime::prepare`])
//!   with Cranelift and a metering middleware, and kept in a bounded
//!   in-memory cache. Compiled artifacts can be serialized
//!   ([`Runtime::artifact`]) and loaded back ([`Runtime::prepare_artifact`]) so a
//!   restarted node does not recompile.
//! * Each call ([`Runtime::call`]) gets a fresh store and instance, so calls
//!   share nothing. The request body is stdin, the response is stdout,
//!   request metadata is CGI-style environment variables.
//! * Limits: fuel (metering points, the CPU bound), linear memory (clamped
//!   by custom tunables), wall-clock time (a watchdog interrupts running
//!   wasm, and host calls check the deadline), stdout and stderr size, input
//!   size, and concurrent calls (`capacity`; over it a call fails with
//!   [`RuntimeError::Busy`] at once rather than queueing).
//! * Files: a function deployed with files gets them as a preopened
//!   directory `/` ([`Invocation::files`], a [`FileTree`] built once per
//!   bundle); its writes go to a scratch layer in memory, bounded
//!   ([`RuntimeConfig::max_scratch_bytes`]) and private to the call.
//!
//! * Host services: a module may import functions of the `orb` module
//!   ([`host`]): key-value state, outbound HTTP and calls of other
//!   functions, provided per call by the node through [`HostServices`].
//!
//! A function that traps, exits non-zero or hits a limit is not an error
//! of this API: the call returns a [`CallResult`] whose status says so.

mod cache;
pub mod files;
pub mod host;
mod metering;
mod tunables;
mod validate;
mod vfs;
mod wasi;

pub use files::FileTree;
pub use host::{
    CallRequest, CasOutcome, HostCall, HostError, HostLimits, HostServices, HttpRequest, Response,
};

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use orb_proto::ContentHash;
use orb_proto::wire::{CallLimits, CallMeta, RunOutcome, RunStatus};
use wasmer::sys::{CompilerConfig, Cranelift, NativeEngineExt};
use wasmer::{
    Engine, FunctionEnv, Imports, Instance, InstantiationError, LinkError, Module, Store,
    TypedFunction,
};
use wasmer_middlewares::Metering;

use crate::cache::Cache;
use crate::host::HostCtx;
use crate::metering::{COST_VERSION, FUEL_EXHAUSTED, FUEL_REMAINING, cost, fuel_state, set_fuel};
use crate::tunables::CapTunables;
use crate::validate::{check_compiled, check_structure};
use crate::wasi::{CtxParams, HostStop, WasiCtx};

/// How long after the deadline [`Runtime::call`] waits for an interrupted
/// run to wind down before answering on its own.
const TIMEOUT_GRACE: Duration = Duration::from_secs(2);

/// How often the watchdog re-sends an interrupt that did not land.
const INTERRUPT_RETRY: Duration = Duration::from_millis(10);

/// Runtime settings: concurrency, defaults and maxima of per-call limits.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Calls run at once at most; more fail with [`RuntimeError::Busy`].
    pub capacity: usize,
    /// Fuel when a call asks for none.
    pub default_fuel: u64,
    /// Most fuel a call may have.
    pub max_fuel: u64,
    /// Linear memory when a call asks for none, in bytes.
    pub default_memory_bytes: u64,
    /// Most linear memory a call may have, in bytes.
    pub max_memory_bytes: u64,
    /// Wall-clock limit when a call asks for none, in milliseconds.
    pub default_timeout_ms: u64,
    /// Longest wall-clock limit, in milliseconds.
    pub max_timeout_ms: u64,
    /// Stdout cap when a call asks for none, in bytes.
    pub default_max_output: u64,
    /// Largest stdout cap, in bytes.
    pub max_output: u64,
    /// Size of the stderr excerpt returned with a result, in bytes.
    pub max_stderr: usize,
    /// Largest input (stdin), in bytes.
    pub max_input: usize,
    /// Compiled modules kept in memory at most.
    pub max_cached_modules: usize,
    /// Scratch space of one call's writes to its files, in bytes: file
    /// data written plus a small overhead per file, directory and name.
    /// Over it the function gets `ENOSPC`.
    pub max_scratch_bytes: u64,
    /// Files, directories and symlinks one call may create; over it the
    /// function gets `ENOSPC`.
    pub max_scratch_entries: u32,
    /// Files and directories one call may have open at once; over it the
    /// function gets `EMFILE`.
    pub max_open_files: u32,
    /// Per-call budgets of the `orb` host interface.
    pub host: HostLimits,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            capacity: 4,
            // Measured on an x86-64 core: metered Cranelift code burns about
            // 2e9 points/s in a tight branchy loop and up to 2e10 points/s
            // in straight-line arithmetic (one check per basic block), so
            // this is 1 to 10 s of CPU. The wall clock ends runaways anyway.
            default_fuel: 20_000_000_000,
            max_fuel: 100_000_000_000,
            default_memory_bytes: 256 * 1024 * 1024,
            max_memory_bytes: 1024 * 1024 * 1024,
            default_timeout_ms: 10_000,
            max_timeout_ms: 60_000,
            default_max_output: orb_proto::limits::DEFAULT_MAX_OUTPUT as u64,
            max_output: orb_proto::limits::DEFAULT_MAX_OUTPUT as u64,
            max_stderr: orb_proto::limits::MAX_STDERR_EXCERPT,
            max_input: orb_proto::limits::DEFAULT_MAX_INPUT,
            max_cached_modules: 256,
            max_scratch_bytes: 16 * 1024 * 1024,
            max_scratch_entries: 10_000,
            max_open_files: 128,
            host: HostLimits::default(),
        }
    }
}

/// One call of a function.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// Function name (argv\[0\] and `ORB_FUNCTION`).
    pub function: String,
    /// Input, read from stdin.
    pub input: Bytes,
    /// Arguments after argv\[0\].
    pub args: Vec<String>,
    /// Extra environment variables (the request's own variables win).
    pub env: Vec<(String, String)>,
    /// Request metadata, passed as CGI-style environment variables.
    pub meta: CallMeta,
    /// Limits asked for; clamped to the runtime's maxima.
    pub limits: CallLimits,
    /// The function's files, seen by the call as the preopened directory
    /// `/` (fd 3). Writes go to a scratch layer private to this call.
    /// `None`: no filesystem at all.
    pub files: Option<FileTree>,
    /// The node's services behind the `orb` imports, for this call; `None`:
    /// every service answers `UNAVAILABLE`.
    pub host: Option<Arc<dyn HostServices>>,
}

/// What a call produced.
#[derive(Debug, Clone)]
pub struct CallResult {
    /// How the run ended, fuel, duration and stderr excerpt.
    pub outcome: RunOutcome,
    /// What the function wrote to stdout (capped, also on failure).
    pub stdout: Vec<u8>,
}

/// Errors of the runtime API. A function failing is not one of them; see
/// [`RunStatus`].
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Every call slot is taken.
    #[error("runtime at capacity: no free call slot")]
    Busy,
    /// The module is not prepared (or was evicted from the cache).
    #[error("module {} is not prepared on this node", .0.short())]
    NotPrepared(ContentHash),
    /// The bytes are not an acceptable WebAssembly module.
    #[error("invalid module: {0}")]
    InvalidModule(String),
    /// The module has no `_start` function.
    #[error("module has no exported _start function: build a WASI command (wasm32-wasip1 binary)")]
    MissingStart,
    /// The module imports something the runtime does not provide.
    #[error("module imports {module}.{name}, which Orb does not provide")]
    UnknownImport {
        /// Import module name.
        module: String,
        /// Import field name.
        name: String,
    },
    /// The input is over the runtime's limit.
    #[error("input larger than {limit} bytes")]
    InputTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// Compilation failed.
    #[error("compiling module failed: {0}")]
    Compile(String),
    /// A serialized artifact could not be produced or loaded.
    #[error("compiled artifact unusable: {0}")]
    Artifact(String),
    /// Something inside the runtime failed.
    #[error("runtime internal error: {0}")]
    Internal(String),
}

/// A compiled module with the engine that compiled it.
///
/// Each module gets its own engine: the metering middleware keeps
/// per-module state and must not be shared between compilations, and the
/// engine owns the module's machine code, so dropping both frees it.
struct Prepared {
    engine: Engine,
    module: Module,
}

struct Inner {
    cfg: RuntimeConfig,
    /// Engine without middleware, for validation.
    plain: Engine,
    cache: Mutex<Cache>,
    in_flight: AtomicUsize,
    /// Modules compiled since start.
    compiles: AtomicU64,
    /// Compiled artifacts loaded since start.
    artifacts_loaded: AtomicU64,
}

/// The function runtime. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("capacity", &self.inner.cfg.capacity)
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

/// A call slot; freed on drop, wherever the run ends up finishing.
struct Permit(Arc<Inner>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// State shared between a run and its watchdog.
#[derive(Default)]
struct Watch {
    interrupter: Mutex<Option<wasmer::Interrupter>>,
    timed_out: AtomicBool,
    done: AtomicBool,
}

/// Limits of one call after defaults and clamping.
#[derive(Debug, Clone, Copy)]
struct Limits {
    fuel: u64,
    memory_bytes: u64,
    timeout: Duration,
    max_output: usize,
    scratch: vfs::ScratchLimits,
    max_open_files: u32,
    host: HostLimits,
}

impl Runtime {
    /// A runtime with `cfg`.
    pub fn new(cfg: RuntimeConfig) -> Result<Runtime, RuntimeError> {
        let plain = Engine::from(Cranelift::default());
        Ok(Runtime {
            inner: Arc::new(Inner {
                cfg,
                plain,
                cache: Mutex::new(Cache::default()),
                in_flight: AtomicUsize::new(0),
                compiles: AtomicU64::new(0),
                artifacts_loaded: AtomicU64::new(0),
            }),
        })
    }

    /// Check that `wasm` is a module this runtime can run: a WASI command
    /// importing only what we provide. Blocking (CPU-bound); call it from
    /// a blocking thread.
    pub fn validate(&self, wasm: &[u8]) -> Result<(), RuntimeError> {
        if wasm.len() < 8 || &wasm[..4] != b"\0asm" {
            return Err(RuntimeError::InvalidModule(
                "not a WebAssembly module".to_string(),
            ));
        }
        Module::validate(&self.inner.plain, wasm)
            .map_err(|e| RuntimeError::InvalidModule(e.to_string()))?;
        check_structure(wasm, self.inner.cfg.max_memory_bytes)
    }

    /// Validate and compile `wasm` (whose hash is `hash`) unless it is
    /// already prepared. Blocking (compiles); call it from a blocking thread.
    pub fn prepare(&self, hash: ContentHash, wasm: &[u8]) -> Result<(), RuntimeError> {
        if self.is_prepared(&hash) {
            return Ok(());
        }
        self.validate(wasm)?;
        let mut compiler = Cranelift::default();
        // A fresh middleware per compilation: it holds per-module state.
        // Initial points are zero; every call sets its own budget before
        // running anything (start sections are refused by validation).
        compiler.push_middleware(Arc::new(Metering::new(0, cost)));
        let engine = Engine::from(compiler);
        let module =
            Module::new(&engine, wasm).map_err(|e| RuntimeError::Compile(e.to_string()))?;
        check_compiled(&module).map_err(|e| RuntimeError::Internal(e.to_string()))?;
        self.insert(hash, Prepared { engine, module });
        self.inner.compiles.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(hash = %hash.short(), "module compiled");
        Ok(())
    }

    /// Load a compiled artifact that [`Runtime::artifact`] produced on this
    /// node (under the same [`Runtime::cache_key`]). Blocking.
    pub fn prepare_artifact(&self, hash: ContentHash, artifact: &[u8]) -> Result<(), RuntimeError> {
        if self.is_prepared(&hash) {
            return Ok(());
        }
        // Its own engine, as for compiled modules, so that evicting the
        // module frees its machine code. Loading needs no compiler.
        let engine = <Engine as NativeEngineExt>::headless();
        let module = deserialize(&engine, artifact)?;
        // Cheap sanity checks: the artifact still looks like a metered WASI
        // command that imports only what we provide.
        check_compiled(&module).map_err(|e| RuntimeError::Artifact(e.to_string()))?;
        self.insert(hash, Prepared { engine, module });
        self.inner.artifacts_loaded.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The serialized compiled module for `hash`, if prepared.
    pub fn artifact(&self, hash: &ContentHash) -> Option<Vec<u8>> {
        let prepared = self.get(hash)?;
        match prepared.module.serialize() {
            Ok(bytes) => Some(bytes.to_vec()),
            Err(e) => {
                tracing::warn!(hash = %hash.short(), error = %e, "serializing module failed");
                None
            }
        }
    }

    /// Identifies how artifacts are compiled; artifacts stored under
    /// another key must not be loaded.
    pub fn cache_key(&self) -> String {
        format!("wasmer-7.4.2/cranelift/metering-v1/{COST_VERSION}")
    }

    /// Whether `hash` is compiled and cached.
    pub fn is_prepared(&self, hash: &ContentHash) -> bool {
        self.lock_cache()
            .map(|c| c.entries.contains_key(hash))
            .unwrap_or(false)
    }

    /// Drop the compiled module for `hash` (running calls keep their copy).
    pub fn forget(&self, hash: &ContentHash) {
        if let Ok(mut c) = self.lock_cache() {
            c.entries.remove(hash);
        }
    }

    /// Modules compiled by [`Runtime::prepare`] since this runtime started.
    pub fn compiles(&self) -> u64 {
        self.inner.compiles.load(Ordering::Relaxed)
    }

    /// Artifacts loaded by [`Runtime::prepare_artifact`] since this runtime
    /// started.
    pub fn artifacts_loaded(&self) -> u64 {
        self.inner.artifacts_loaded.load(Ordering::Relaxed)
    }

    /// Calls run at once at most.
    pub fn capacity(&self) -> usize {
        self.inner.cfg.capacity
    }

    /// Calls running now (including runs past their deadline that have not
    /// wound down yet).
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::Acquire)
    }

    /// Run the prepared module `hash` once.
    ///
    /// Fails at once with [`RuntimeError::Busy`] when every slot is taken.
    /// The run itself happens on a blocking thread.
    pub async fn call(
        &self,
        hash: ContentHash,
        inv: Invocation,
    ) -> Result<CallResult, RuntimeError> {
        let permit = self.try_acquire()?;
        let prepared = self.get(&hash).ok_or(RuntimeError::NotPrepared(hash))?;
        if inv.input.len() > self.inner.cfg.max_input {
            return Err(RuntimeError::InputTooLarge {
                limit: self.inner.cfg.max_input,
            });
        }
        let limits = self.limits(&inv.limits);
        let max_stderr = self.inner.cfg.max_stderr;
        let watch = Arc::new(Watch::default());

        let run_watch = watch.clone();
        let mut run = tokio::task::spawn_blocking(move || {
            // The slot stays taken until the run really ends, even if the
            // caller stopped waiting, so capacity reflects actual threads.
            let _permit = permit;
            let result = run(&prepared, inv, limits, max_stderr, &run_watch);
            run_watch.done.store(true, Ordering::Release);
            result
        });

        // The watchdog is its own task so it keeps going if the caller's
        // future is dropped.
        let dog_watch = watch.clone();
        let watchdog = tokio::spawn(async move {
            tokio::time::sleep(limits.timeout).await;
            dog_watch.timed_out.store(true, Ordering::Release);
            while !dog_watch.done.load(Ordering::Acquire) {
                let interrupter = dog_watch.interrupter.lock().ok().and_then(|g| g.clone());
                if let Some(i) = interrupter {
                    // Best effort (a signal may land outside wasm code), so
                    // repeat until the run reports it has ended.
                    i.interrupt();
                }
                tokio::time::sleep(INTERRUPT_RETRY).await;
            }
        });

        let joined = tokio::time::timeout(limits.timeout + TIMEOUT_GRACE, &mut run).await;
        watchdog.abort();
        match joined {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(e)) => Err(RuntimeError::Internal(format!("run task failed: {e}"))),
            Err(_) => {
                // The run ignored its interrupts (stuck in a long host-side
                // operation); answer now. Its slot is freed when it ends.
                tracing::warn!(hash = %hash.short(), "run did not stop at its deadline");
                let watch2 = watch.clone();
                tokio::spawn(async move {
                    while !watch2.done.load(Ordering::Acquire) {
                        if let Some(i) = watch2.interrupter.lock().ok().and_then(|g| g.clone()) {
                            i.interrupt();
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                });
                Ok(CallResult {
                    outcome: RunOutcome {
                        status: RunStatus::LimitExceeded {
                            limit: "timeout".to_string(),
                            detail: format!("ran longer than {} ms", limits.timeout.as_millis()),
                        },
                        fuel_used: 0,
                        duration_us: duration_us(limits.timeout + TIMEOUT_GRACE),
                        stderr: String::new(),
                        http: None,
                    },
                    stdout: Vec::new(),
                })
            }
        }
    }

    fn try_acquire(&self) -> Result<Permit, RuntimeError> {
        let cap = self.inner.cfg.capacity;
        self.inner
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            })
            .map_err(|_| RuntimeError::Busy)?;
        Ok(Permit(self.inner.clone()))
    }

    /// The limits of a call: what the function asked for (at deploy), else
    /// the node's defaults, never above the node's maxima. A request over a
    /// maximum is clamped silently (logged at debug level), not refused:
    /// nodes differ, and the function still runs within what this one
    /// allows.
    fn limits(&self, asked: &CallLimits) -> Limits {
        let c = &self.inner.cfg;
        let over = |v: Option<u64>, max: u64| v.is_some_and(|v| v > max);
        if over(asked.fuel, c.max_fuel)
            || over(asked.memory_bytes, c.max_memory_bytes)
            || over(asked.timeout_ms, c.max_timeout_ms)
            || over(asked.max_output, c.max_output)
        {
            tracing::debug!(?asked, "call limits clamped to this node's maxima");
        }
        let max_output = asked
            .max_output
            .unwrap_or(c.default_max_output)
            .min(c.max_output);
        Limits {
            fuel: asked.fuel.unwrap_or(c.default_fuel).min(c.max_fuel),
            memory_bytes: asked
                .memory_bytes
                .unwrap_or(c.default_memory_bytes)
                .min(c.max_memory_bytes),
            timeout: Duration::from_millis(
                asked
                    .timeout_ms
                    .unwrap_or(c.default_timeout_ms)
                    .min(c.max_timeout_ms),
            ),
            max_output: usize::try_from(max_output).unwrap_or(usize::MAX),
            scratch: vfs::ScratchLimits {
                max_bytes: c.max_scratch_bytes,
                max_entries: c.max_scratch_entries,
            },
            max_open_files: c.max_open_files,
            host: c.host,
        }
    }

    fn lock_cache(&self) -> Result<std::sync::MutexGuard<'_, Cache>, RuntimeError> {
        self.inner
            .cache
            .lock()
            .map_err(|_| RuntimeError::Internal("module cache lock poisoned".to_string()))
    }

    fn get(&self, hash: &ContentHash) -> Option<Arc<Prepared>> {
        self.lock_cache().ok()?.get(hash)
    }

    fn insert(&self, hash: ContentHash, prepared: Prepared) {
        let max = self.inner.cfg.max_cached_modules;
        if let Ok(mut c) = self.lock_cache() {
            c.insert(hash, Arc::new(prepared), max);
        }
    }
}

/// Load a serialized module.
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, artifact: &[u8]) -> Result<Module, RuntimeError> {
    // SAFETY: wasmer trusts serialized artifacts to contain valid machine
    // code. The only artifacts passed here are ones this node produced with
    // `Runtime::artifact` and wrote to its own store, keyed by `cache_key()`
    // so that artifacts from another wasmer version or cost function are
    // never loaded. They never come from the network.
    unsafe { Module::deserialize(engine, artifact.to_vec()) }
        .map_err(|e| RuntimeError::Artifact(e.to_string()))
}

fn duration_us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The CGI-style environment of a call (RFC 3875 section 4.1, plus
/// Orb's own `ORB_*`); the request's own variables take precedence over
/// the function's configured ones. The one place a call's environment is
/// built.
fn environment(inv: &Invocation) -> Vec<(String, String)> {
    let m = &inv.meta;
    let mut env = vec![
        ("ORB_FUNCTION".to_string(), inv.function.clone()),
        ("ORB_REQUEST_ID".to_string(), m.request_id.clone()),
        ("GATEWAY_INTERFACE".to_string(), "CGI/1.1".to_string()),
        ("SERVER_PROTOCOL".to_string(), "HTTP/1.1".to_string()),
        ("SERVER_SOFTWARE".to_string(), "orb".to_string()),
        ("REQUEST_METHOD".to_string(), m.method.clone()),
        ("SCRIPT_NAME".to_string(), format!("/fn/{}", inv.function)),
        ("PATH_INFO".to_string(), m.path_info.clone()),
        ("QUERY_STRING".to_string(), m.query.clone()),
        ("CONTENT_TYPE".to_string(), m.content_type.clone()),
        ("CONTENT_LENGTH".to_string(), inv.input.len().to_string()),
        ("SERVER_NAME".to_string(), m.server_name.clone()),
        ("SERVER_PORT".to_string(), m.server_port.to_string()),
    ];
    if let Some(addr) = &m.remote_addr {
        env.push(("REMOTE_ADDR".to_string(), addr.clone()));
    }
    for (name, value) in &m.headers {
        let key = format!("HTTP_{}", name.to_ascii_uppercase().replace('-', "_"));
        if !env.iter().any(|(k, _)| *k == key) {
            env.push((key, value.clone()));
        }
    }
    for (k, v) in &inv.env {
        if !env.iter().any(|(e, _)| e == k) {
            env.push((k.clone(), v.clone()));
        }
    }
    env
}

fn limit(limit: &str, detail: impl Into<String>) -> RunStatus {
    RunStatus::LimitExceeded {
        limit: limit.to_string(),
        detail: detail.into(),
    }
}

/// One run, on a blocking thread. Never fails: problems become statuses.
fn run(
    prepared: &Prepared,
    inv: Invocation,
    limits: Limits,
    max_stderr: usize,
    watch: &Watch,
) -> CallResult {
    let started = Instant::now();
    let grow_refused = Arc::new(AtomicBool::new(false));
    let mut engine = prepared.engine.clone();
    engine.set_tunables(CapTunables::new(limits.memory_bytes, grow_refused.clone()));
    let mut store = Store::new(engine);
    if let Ok(mut slot) = watch.interrupter.lock() {
        *slot = Some(store.interrupter());
    }

    let host_env = FunctionEnv::new(
        &mut store,
        HostCtx::new(
            inv.host.clone(),
            limits.host,
            started + limits.timeout,
            limits.fuel,
        ),
    );

    let mut args = vec![inv.function.clone()];
    args.extend(inv.args.iter().cloned());
    let env_vars = environment(&inv);
    let ctx = WasiCtx::new(CtxParams {
        args,
        env: env_vars,
        input: inv.input,
        max_output: limits.max_output,
        max_stderr,
        started,
        deadline: started + limits.timeout,
        files: inv.files,
        scratch: limits.scratch,
        max_open_files: limits.max_open_files,
    });
    let env = FunctionEnv::new(&mut store, ctx);

    let mut imports = Imports::new();
    for import in prepared.module.imports() {
        let f = if import.module() == host::NAMESPACE {
            host::make(&mut store, &host_env, import.name())
        } else {
            wasi::make(&mut store, &env, import.name())
        };
        if let Some(f) = f {
            imports.define(import.module(), import.name(), f);
        }
    }

    let finish = |store: &mut Store, status: RunStatus, fuel_used: u64| {
        let ctx = env.as_mut(store);
        CallResult {
            outcome: RunOutcome {
                status,
                fuel_used,
                duration_us: duration_us(started.elapsed()),
                stderr: ctx.stderr_excerpt(),
                http: None,
            },
            stdout: std::mem::take(&mut ctx.stdout),
        }
    };

    let instance = match Instance::new(&mut store, &prepared.module, &imports) {
        Ok(i) => i,
        Err(InstantiationError::Link(LinkError::Resource(msg))) => {
            let status = limit("memory", format!("instantiation refused: {msg}"));
            return finish(&mut store, status, 0);
        }
        Err(e) => {
            return finish(
                &mut store,
                RunStatus::Trapped(format!("instantiation failed: {e}")),
                0,
            );
        }
    };
    let memory = instance.exports.get_memory("memory").ok().cloned();
    env.as_mut(&mut store).memory = memory;
    host_env.as_mut(&mut store).attach(&instance);

    if let Err(e) = set_fuel(&mut store, &instance, limits.fuel) {
        return finish(
            &mut store,
            RunStatus::Trapped(format!("metering unavailable: {e}")),
            0,
        );
    }
    let start: TypedFunction<(), ()> = match instance.exports.get_typed_function(&store, "_start") {
        Ok(f) => f,
        Err(e) => {
            return finish(
                &mut store,
                RunStatus::Trapped(format!("no usable _start: {e}")),
                0,
            );
        }
    };

    let result = start.call(&mut store);

    let (remaining, exhausted) = fuel_state(&mut store, &instance).unwrap_or((0, false));
    let fuel_used = if exhausted {
        limits.fuel
    } else {
        limits.fuel.saturating_sub(remaining)
    };
    let timed_out = watch.timed_out.load(Ordering::Acquire);
    let refused = grow_refused.load(Ordering::Relaxed);
    let memory_detail = || {
        format!(
            "memory.grow refused at the limit of {} bytes",
            limits.memory_bytes
        )
    };

    let status = match result {
        Ok(()) => RunStatus::Exited(0),
        Err(e) => match e.downcast::<HostStop>() {
            Ok(HostStop::Exit(0)) => RunStatus::Exited(0),
            Ok(HostStop::Exit(code)) if refused => limit(
                "memory",
                format!("{}; then exited with code {code}", memory_detail()),
            ),
            Ok(HostStop::Exit(code)) => RunStatus::Exited(code),
            Ok(HostStop::Limit { limit: l, detail }) => limit(l, detail),
            Err(e) => {
                if exhausted {
                    limit("fuel", format!("used all {} fuel", limits.fuel))
                } else if timed_out
                    || e.clone().to_trap() == Some(wasmer::sys::vm::TrapCode::HostInterrupt)
                {
                    limit(
                        "timeout",
                        format!("ran longer than {} ms", limits.timeout.as_millis()),
                    )
                } else if refused {
                    limit(
                        "memory",
                        format!("{}; then trapped: {}", memory_detail(), e.message()),
                    )
                } else {
                    RunStatus::Trapped(e.message())
                }
            }
        },
    };
    finish(&mut store, status, fuel_used)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_wasi_function_is_provided_with_its_signature() {
        let mut store = Store::default();
        let ctx = WasiCtx::new(CtxParams {
            args: vec![],
            env: vec![],
            input: Bytes::new(),
            max_output: 0,
            max_stderr: 0,
            started: Instant::now(),
            deadline: Instant::now(),
            files: None,
            scratch: vfs::ScratchLimits {
                max_bytes: 0,
                max_entries: 0,
            },
            max_open_files: 0,
        });
        let env = FunctionEnv::new(&mut store, ctx);
        assert_eq!(wasi::FUNCTIONS.len(), 46);
        for (name, p, r) in wasi::FUNCTIONS {
            let f = wasi::make(&mut store, &env, name).unwrap_or_else(|| panic!("{name} missing"));
            assert_eq!(f.ty(&store), wasi::function_type(p, r), "{name}");
        }
        assert!(wasi::make(&mut store, &env, "sock_open").is_none());
    }

    #[test]
    fn cache_evicts_least_recently_used() {
        let rt = Runtime::new(RuntimeConfig {
            max_cached_modules: 2,
            ..RuntimeConfig::default()
        })
        .unwrap();
        let wasm = wat::parse_str(r#"(module (func (export "_start")))"#).unwrap();
        let (a, b, c) = (
            ContentHash([1; 32]),
            ContentHash([2; 32]),
            ContentHash([3; 32]),
        );
        rt.prepare(a, &wasm).unwrap();
        rt.prepare(b, &wasm).unwrap();
        assert!(rt.get(&a).is_some()); // a is now more recent than b
        rt.prepare(c, &wasm).unwrap();
        assert!(rt.is_prepared(&a));
        assert!(!rt.is_prepared(&b));
        assert!(rt.is_prepared(&c));
        rt.forget(&a);
        assert!(!rt.is_prepared(&a));
    }
}
