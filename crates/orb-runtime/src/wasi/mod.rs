//! A small WASI preview 1 (`wasi_snapshot_preview1`) implementation.
//!
//! Functions get what a CGI-style request needs: arguments, environment,
//! stdin (the request body), stdout (the response body), stderr (a capped
//! log excerpt), clocks and randomness; and, when the function was deployed
//! with files, a filesystem: the bundle as a preopened directory `/` (fd 3)
//! under a per-call scratch layer (see [`crate::vfs`]). There is no network:
//! every preview 1 function exists with its exact signature, so that
//! ordinary Rust and C binaries link, and socket calls answer `EBADF` or
//! `ENOTSOCK` as the specification says. Without files, every path call
//! answers `ENOTCAPABLE` and there are no preopens.
//!
//! Modules, one concern each: [`mem`] (bounds-checked guest memory), [`fd`]
//! (the descriptor table and rights), [`proc`] (args, environment, clocks,
//! randomness, exit), [`stdio`], [`fdops`] (descriptor calls), [`pathops`]
//! (path calls), [`poll`] and [`sock`].
//!
//! Every guest pointer is bounds-checked through [`wasmer::MemoryView`]: a
//! bad pointer yields `EFAULT`, never a host panic.

pub(crate) mod errno;
mod fd;
mod fdops;
mod mem;
mod pathops;
mod poll;
mod proc;
mod sock;
mod stdio;

use std::time::Instant;

use bytes::Bytes;
use wasmer::{AsStoreMut, Function, FunctionEnv, FunctionEnvMut, FunctionType, Memory, Type};

use crate::files::FileTree;
use crate::vfs::{ScratchLimits, Vfs};
use errno::{EFAULT, Errno, SUCCESS};
use fd::FdTable;
use mem::Mem;

/// The import namespace of WASI preview 1.
pub(crate) const NAMESPACE: &str = "wasi_snapshot_preview1";

/// A value type in an import signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Val {
    /// i32 (pointers, sizes, fds, errnos).
    I32,
    /// i64 (timestamps, file sizes, offsets, rights).
    I64,
}

use Val::{I32, I64};

/// Every preview 1 function: name, parameters, results. Signatures follow
/// the witx exactly; a mismatch makes instantiation of real binaries fail.
pub(crate) const FUNCTIONS: &[(&str, &[Val], &[Val])] = &[
    ("args_get", &[I32, I32], &[I32]),
    ("args_sizes_get", &[I32, I32], &[I32]),
    ("environ_get", &[I32, I32], &[I32]),
    ("environ_sizes_get", &[I32, I32], &[I32]),
    ("clock_res_get", &[I32, I32], &[I32]),
    ("clock_time_get", &[I32, I64, I32], &[I32]),
    ("fd_advise", &[I32, I64, I64, I32], &[I32]),
    ("fd_allocate", &[I32, I64, I64], &[I32]),
    ("fd_close", &[I32], &[I32]),
    ("fd_datasync", &[I32], &[I32]),
    ("fd_fdstat_get", &[I32, I32], &[I32]),
    ("fd_fdstat_set_flags", &[I32, I32], &[I32]),
    ("fd_fdstat_set_rights", &[I32, I64, I64], &[I32]),
    ("fd_filestat_get", &[I32, I32], &[I32]),
    ("fd_filestat_set_size", &[I32, I64], &[I32]),
    ("fd_filestat_set_times", &[I32, I64, I64, I32], &[I32]),
    ("fd_pread", &[I32, I32, I32, I64, I32], &[I32]),
    ("fd_prestat_get", &[I32, I32], &[I32]),
    ("fd_prestat_dir_name", &[I32, I32, I32], &[I32]),
    ("fd_pwrite", &[I32, I32, I32, I64, I32], &[I32]),
    ("fd_read", &[I32, I32, I32, I32], &[I32]),
    ("fd_readdir", &[I32, I32, I32, I64, I32], &[I32]),
    ("fd_renumber", &[I32, I32], &[I32]),
    ("fd_seek", &[I32, I64, I32, I32], &[I32]),
    ("fd_sync", &[I32], &[I32]),
    ("fd_tell", &[I32, I32], &[I32]),
    ("fd_write", &[I32, I32, I32, I32], &[I32]),
    ("path_create_directory", &[I32, I32, I32], &[I32]),
    ("path_filestat_get", &[I32, I32, I32, I32, I32], &[I32]),
    (
        "path_filestat_set_times",
        &[I32, I32, I32, I32, I64, I64, I32],
        &[I32],
    ),
    ("path_link", &[I32, I32, I32, I32, I32, I32, I32], &[I32]),
    (
        "path_open",
        &[I32, I32, I32, I32, I32, I64, I64, I32, I32],
        &[I32],
    ),
    ("path_readlink", &[I32, I32, I32, I32, I32, I32], &[I32]),
    ("path_remove_directory", &[I32, I32, I32], &[I32]),
    ("path_rename", &[I32, I32, I32, I32, I32, I32], &[I32]),
    ("path_symlink", &[I32, I32, I32, I32, I32], &[I32]),
    ("path_unlink_file", &[I32, I32, I32], &[I32]),
    ("poll_oneoff", &[I32, I32, I32, I32], &[I32]),
    ("proc_exit", &[I32], &[]),
    ("proc_raise", &[I32], &[I32]),
    ("sched_yield", &[], &[I32]),
    ("random_get", &[I32, I32], &[I32]),
    ("sock_accept", &[I32, I32, I32], &[I32]),
    ("sock_recv", &[I32, I32, I32, I32, I32, I32], &[I32]),
    ("sock_send", &[I32, I32, I32, I32, I32], &[I32]),
    ("sock_shutdown", &[I32, I32], &[I32]),
];

/// The signature of preview 1 function `name`, if we provide it.
pub(crate) fn signature(name: &str) -> Option<(&'static [Val], &'static [Val])> {
    FUNCTIONS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, p, r)| (*p, *r))
}

/// `sig` as a wasmer function type.
pub(crate) fn function_type(params: &[Val], results: &[Val]) -> FunctionType {
    let conv = |v: &Val| match v {
        I32 => Type::I32,
        I64 => Type::I64,
    };
    FunctionType::new(
        params.iter().map(conv).collect::<Vec<_>>(),
        results.iter().map(conv).collect::<Vec<_>>(),
    )
}

/// Why a host function ends the run early. Raised as a wasmer user error
/// and recovered by downcasting the resulting `RuntimeError`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HostStop {
    /// `proc_exit` was called.
    #[error("exit with code {0}")]
    Exit(i32),
    /// A limit was hit inside a host call.
    #[error("{limit} limit exceeded: {detail}")]
    Limit {
        /// Name of the limit.
        limit: &'static str,
        /// Human-readable detail.
        detail: String,
    },
}

/// Per-call state shared by the host functions.
pub(crate) struct WasiCtx {
    /// The instance's exported `memory`, set right after instantiation.
    pub(crate) memory: Option<Memory>,
    args: Vec<Vec<u8>>,
    env: Vec<Vec<u8>>,
    input: Bytes,
    input_pos: usize,
    /// What the function wrote to stdout (at most `max_output` bytes).
    pub(crate) stdout: Vec<u8>,
    max_output: usize,
    /// The most recent stderr bytes (trimmed to `max_stderr` at the end).
    pub(crate) stderr: Vec<u8>,
    max_stderr: usize,
    stderr_total: u64,
    stderr_limit: u64,
    started: Instant,
    deadline: Instant,
    /// Open descriptors: stdio, the preopen and what the guest opened.
    fds: FdTable,
    /// The call's filesystem, when the function has files.
    vfs: Option<Vfs>,
    /// Whether the log already says the scratch layer is full.
    noted_full: bool,
}

/// What a [`WasiCtx`] is built from.
pub(crate) struct CtxParams {
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) input: Bytes,
    pub(crate) max_output: usize,
    pub(crate) max_stderr: usize,
    pub(crate) started: Instant,
    pub(crate) deadline: Instant,
    /// The function's files, preopened as `/`.
    pub(crate) files: Option<FileTree>,
    /// Bounds of the scratch layer over the files.
    pub(crate) scratch: ScratchLimits,
    /// Most files and directories open at once.
    pub(crate) max_open_files: u32,
}

/// C strings cannot hold NUL; drop any rather than truncate silently at the
/// wrong place in the guest.
fn c_bytes(s: &str) -> Vec<u8> {
    s.bytes().filter(|b| *b != 0).collect()
}

impl WasiCtx {
    pub(crate) fn new(p: CtxParams) -> Self {
        let mut vfs = p.files.map(|tree| Vfs::new(tree, p.scratch));
        let fds = FdTable::new(p.max_open_files, vfs.as_ref().map(|_| crate::vfs::ROOT));
        if let Some(v) = vfs.as_mut() {
            // The preopen holds the root like any open descriptor.
            v.retain(crate::vfs::ROOT);
        }
        WasiCtx {
            memory: None,
            args: p.args.iter().map(|a| c_bytes(a)).collect(),
            env: p
                .env
                .iter()
                .map(|(k, v)| c_bytes(&format!("{k}={v}")))
                .collect(),
            input: p.input,
            input_pos: 0,
            stdout: Vec::new(),
            max_output: p.max_output,
            stderr: Vec::new(),
            max_stderr: p.max_stderr,
            stderr_total: 0,
            // A function may log freely, but one that writes stderr forever
            // must end quickly rather than burn its whole fuel budget.
            stderr_limit: (p.max_stderr as u64).saturating_mul(16),
            started: p.started,
            deadline: p.deadline,
            fds,
            vfs,
            noted_full: false,
        }
    }

    fn check_deadline(&self) -> Result<(), HostStop> {
        if Instant::now() >= self.deadline {
            return Err(timeout_stop());
        }
        Ok(())
    }

    /// The stderr excerpt: its last `max_stderr` bytes, as text.
    pub(crate) fn stderr_excerpt(&self) -> String {
        let start = self.stderr.len().saturating_sub(self.max_stderr);
        String::from_utf8_lossy(&self.stderr[start..]).into_owned()
    }

    /// A line from Orb itself in the stderr excerpt (not counted against
    /// the function's stderr limit).
    fn note(&mut self, line: &str) {
        self.stderr.extend_from_slice(line.as_bytes());
        self.stderr.push(b'\n');
    }

    /// Tell the function's log the first time the scratch layer refuses a
    /// change for lack of space, so ENOSPC has a visible cause (once: a
    /// function retrying in a loop must not grow the log).
    fn note_if_full(&mut self) {
        if let Some(vfs) = self.vfs.as_mut()
            && vfs.take_full()
            && !self.noted_full
        {
            self.noted_full = true;
            let (used, limits) = (vfs.used(), vfs.limits());
            self.note(&format!(
                "orb: the call's scratch space is full ({used} of {} bytes used, at most {} new files and directories); the change failed with ENOSPC",
                limits.max_bytes, limits.max_entries
            ));
        }
    }

    fn push_stderr(&mut self, mem: &Mem<'_>, ptr: u32, len: u32) -> Result<(), Fail> {
        self.stderr_total = self.stderr_total.saturating_add(u64::from(len));
        if self.stderr_total > self.stderr_limit {
            return Err(Fail::Stop(HostStop::Limit {
                limit: "stderr",
                detail: format!(
                    "function wrote more than {} bytes to stderr",
                    self.stderr_limit
                ),
            }));
        }
        mem.read_into(ptr, len, &mut self.stderr)?;
        // Keep only a tail; trim in batches so each write stays cheap.
        if self.stderr.len() > self.max_stderr.saturating_mul(2) {
            let cut = self.stderr.len() - self.max_stderr;
            self.stderr.drain(..cut);
        }
        Ok(())
    }
}

pub(crate) fn timeout_stop() -> HostStop {
    HostStop::Limit {
        limit: "timeout",
        detail: "wall-clock deadline reached".to_string(),
    }
}

/// Failure of a host call: an errno for the guest, or a stop of the run.
enum Fail {
    Errno(Errno),
    Stop(HostStop),
}

impl From<HostStop> for Fail {
    fn from(s: HostStop) -> Self {
        Fail::Stop(s)
    }
}

impl From<Errno> for Fail {
    fn from(e: Errno) -> Self {
        Fail::Errno(e)
    }
}

/// Map the inner result to what the guest (or the run) sees.
fn finish(r: Result<(), Fail>) -> Result<i32, HostStop> {
    match r {
        Ok(()) => Ok(SUCCESS),
        Err(Fail::Errno(e)) => Ok(e),
        Err(Fail::Stop(s)) => Err(s),
    }
}

/// Run `f` with the context and guest memory; the common prologue of every
/// real host function (deadline check, memory lookup).
fn with_mem(
    env: &mut FunctionEnvMut<'_, WasiCtx>,
    f: impl FnOnce(&mut WasiCtx, &Mem<'_>) -> Result<(), Fail>,
) -> Result<Errno, HostStop> {
    let (ctx, store) = env.data_and_store_mut();
    ctx.check_deadline()?;
    let Some(memory) = ctx.memory.clone() else {
        // Pointer-taking calls from a module without exported memory.
        return Ok(EFAULT);
    };
    let view = memory.view(&store);
    let mem = Mem(view);
    let result = f(ctx, &mem);
    ctx.note_if_full();
    finish(result)
}

macro_rules! host {
    ($store:expr, $env:expr, $f:path) => {
        Function::new_typed_with_env($store, $env, $f)
    };
}

/// The host function for preview 1 function `name`, if we provide it.
pub(crate) fn make(
    store: &mut impl AsStoreMut,
    env: &FunctionEnv<WasiCtx>,
    name: &str,
) -> Option<Function> {
    let f = match name {
        "args_get" => host!(store, env, proc::args_get),
        "args_sizes_get" => host!(store, env, proc::args_sizes_get),
        "environ_get" => host!(store, env, proc::environ_get),
        "environ_sizes_get" => host!(store, env, proc::environ_sizes_get),
        "clock_res_get" => host!(store, env, proc::clock_res_get),
        "clock_time_get" => host!(store, env, proc::clock_time_get),
        "random_get" => host!(store, env, proc::random_get),
        "proc_exit" => host!(store, env, proc::proc_exit),
        "proc_raise" => host!(store, env, proc::proc_raise),
        "sched_yield" => host!(store, env, proc::sched_yield),
        "poll_oneoff" => host!(store, env, poll::poll_oneoff),
        "fd_advise" => host!(store, env, fdops::fd_advise),
        "fd_allocate" => host!(store, env, fdops::fd_allocate),
        "fd_close" => host!(store, env, fdops::fd_close),
        "fd_datasync" => host!(store, env, fdops::fd_datasync),
        "fd_fdstat_get" => host!(store, env, fdops::fd_fdstat_get),
        "fd_fdstat_set_flags" => host!(store, env, fdops::fd_fdstat_set_flags),
        "fd_fdstat_set_rights" => host!(store, env, fdops::fd_fdstat_set_rights),
        "fd_filestat_get" => host!(store, env, fdops::fd_filestat_get),
        "fd_filestat_set_size" => host!(store, env, fdops::fd_filestat_set_size),
        "fd_filestat_set_times" => host!(store, env, fdops::fd_filestat_set_times),
        "fd_pread" => host!(store, env, fdops::fd_pread),
        "fd_prestat_get" => host!(store, env, fdops::fd_prestat_get),
        "fd_prestat_dir_name" => host!(store, env, fdops::fd_prestat_dir_name),
        "fd_pwrite" => host!(store, env, fdops::fd_pwrite),
        "fd_read" => host!(store, env, fdops::fd_read),
        "fd_readdir" => host!(store, env, fdops::fd_readdir),
        "fd_renumber" => host!(store, env, fdops::fd_renumber),
        "fd_seek" => host!(store, env, fdops::fd_seek),
        "fd_sync" => host!(store, env, fdops::fd_sync),
        "fd_tell" => host!(store, env, fdops::fd_tell),
        "fd_write" => host!(store, env, fdops::fd_write),
        "path_create_directory" => host!(store, env, pathops::path_create_directory),
        "path_filestat_get" => host!(store, env, pathops::path_filestat_get),
        "path_filestat_set_times" => host!(store, env, pathops::path_filestat_set_times),
        "path_link" => host!(store, env, pathops::path_link),
        "path_open" => host!(store, env, pathops::path_open),
        "path_readlink" => host!(store, env, pathops::path_readlink),
        "path_remove_directory" => host!(store, env, pathops::path_remove_directory),
        "path_rename" => host!(store, env, pathops::path_rename),
        "path_symlink" => host!(store, env, pathops::path_symlink),
        "path_unlink_file" => host!(store, env, pathops::path_unlink_file),
        "sock_accept" => host!(store, env, sock::sock_accept),
        "sock_recv" => host!(store, env, sock::sock_recv),
        "sock_send" => host!(store, env, sock::sock_send),
        "sock_shutdown" => host!(store, env, sock::sock_shutdown),
        _ => return None,
    };
    Some(f)
}
