//! A small WASI preview 1 (`wasi_snapshot_preview1`) implementation.
//!
//! Functions get exactly what a CGI-style request needs: arguments,
//! environment, stdin (the request body), stdout (the response body),
//! stderr (a capped log excerpt), clocks and randomness. There is no
//! filesystem and no network: every other preview 1 function exists with its
//! exact signature, so that ordinary Rust and C binaries link, and answers
//! `ENOTCAPABLE`.
//!
//! Every guest pointer is bounds-checked through [`MemoryView`]: a bad
//! pointer yields `EFAULT`, never a host panic.

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use wasmer::{
    AsStoreMut, Function, FunctionEnv, FunctionEnvMut, FunctionType, Memory, MemoryView, Type,
};

/// The import namespace of WASI preview 1.
pub(crate) const NAMESPACE: &str = "wasi_snapshot_preview1";

// Errno values from the preview 1 witx.
const SUCCESS: i32 = 0;
const EBADF: i32 = 8;
const EFAULT: i32 = 21;
const EINVAL: i32 = 28;
const EIO: i32 = 29;
const ENOTSUP: i32 = 58;
const ESPIPE: i32 = 70;
const ENOTCAPABLE: i32 = 76;

/// Most iovecs one read or write may pass (Linux's IOV_MAX). Bounds host
/// work per call, since host code cannot be interrupted by the watchdog.
const IOV_MAX: u32 = 1024;

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
}

/// C strings cannot hold NUL; drop any rather than truncate silently at the
/// wrong place in the guest.
fn c_bytes(s: &str) -> Vec<u8> {
    s.bytes().filter(|b| *b != 0).collect()
}

impl WasiCtx {
    pub(crate) fn new(p: CtxParams) -> Self {
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
    Errno(i32),
    Stop(HostStop),
}

impl From<HostStop> for Fail {
    fn from(s: HostStop) -> Self {
        Fail::Stop(s)
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

/// Bounds-checked access to guest memory.
struct Mem<'a>(MemoryView<'a>);

impl Mem<'_> {
    fn check(&self, ptr: u32, len: u64) -> Result<(), Fail> {
        if u64::from(ptr) + len > self.0.data_size() {
            return Err(Fail::Errno(EFAULT));
        }
        Ok(())
    }

    fn read(&self, ptr: u32, len: u32) -> Result<Vec<u8>, Fail> {
        self.check(ptr, u64::from(len))?;
        let mut buf = vec![0u8; len as usize];
        self.0
            .read(u64::from(ptr), &mut buf)
            .map_err(|_| Fail::Errno(EFAULT))?;
        Ok(buf)
    }

    /// Append `len` bytes at `ptr` to `out`, checking bounds before
    /// allocating so a bogus length cannot make the host allocate.
    fn read_into(&self, ptr: u32, len: u32, out: &mut Vec<u8>) -> Result<(), Fail> {
        self.check(ptr, u64::from(len))?;
        let start = out.len();
        out.resize(start + len as usize, 0);
        if self.0.read(u64::from(ptr), &mut out[start..]).is_err() {
            out.truncate(start);
            return Err(Fail::Errno(EFAULT));
        }
        Ok(())
    }

    fn write(&self, ptr: u32, data: &[u8]) -> Result<(), Fail> {
        self.check(ptr, data.len() as u64)?;
        self.0
            .write(u64::from(ptr), data)
            .map_err(|_| Fail::Errno(EFAULT))
    }

    fn u32_at(&self, ptr: u32) -> Result<u32, Fail> {
        let b = self.read(ptr, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64_at(&self, ptr: u32) -> Result<u64, Fail> {
        let b = self.read(ptr, 8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(&b);
        Ok(u64::from_le_bytes(a))
    }

    fn set_u32(&self, ptr: u32, v: u32) -> Result<(), Fail> {
        self.write(ptr, &v.to_le_bytes())
    }

    fn set_u64(&self, ptr: u32, v: u64) -> Result<(), Fail> {
        self.write(ptr, &v.to_le_bytes())
    }

    /// The iovecs (pointer, length) of an `iovs`/`iovs_len` pair.
    fn iovecs(&self, iovs: i32, iovs_len: i32) -> Result<Vec<(u32, u32)>, Fail> {
        let count = iovs_len as u32;
        if count > IOV_MAX {
            return Err(Fail::Errno(EINVAL));
        }
        let base = iovs as u32;
        self.check(base, u64::from(count) * 8)?;
        (0..count)
            .map(|i| {
                let at = base + i * 8;
                Ok((self.u32_at(at)?, self.u32_at(at + 4)?))
            })
            .collect()
    }
}

/// Run `f` with the context and guest memory; the common prologue of every
/// real host function (deadline check, memory lookup).
fn with_mem(
    env: &mut FunctionEnvMut<'_, WasiCtx>,
    f: impl FnOnce(&mut WasiCtx, &Mem<'_>) -> Result<(), Fail>,
) -> Result<i32, HostStop> {
    let (ctx, store) = env.data_and_store_mut();
    ctx.check_deadline()?;
    let Some(memory) = ctx.memory.clone() else {
        // Pointer-taking calls from a module without exported memory.
        return Ok(EFAULT);
    };
    let view = memory.view(&store);
    let mem = Mem(view);
    finish(f(ctx, &mem))
}

/// Write a list of C strings the way `args_get`/`environ_get` do.
fn write_strings(mem: &Mem<'_>, list: &[Vec<u8>], ptrs: i32, buf: i32) -> Result<(), Fail> {
    let mut ptr_at = ptrs as u32;
    let mut buf_at = buf as u32;
    for s in list {
        mem.set_u32(ptr_at, buf_at)?;
        mem.write(buf_at, s)?;
        mem.write(buf_at.wrapping_add(s.len() as u32), &[0])?;
        ptr_at = ptr_at.wrapping_add(4);
        buf_at = buf_at.wrapping_add(s.len() as u32 + 1);
    }
    Ok(())
}

fn write_sizes(mem: &Mem<'_>, list: &[Vec<u8>], count: i32, size: i32) -> Result<(), Fail> {
    let total: usize = list.iter().map(|s| s.len() + 1).sum();
    mem.set_u32(count as u32, list.len() as u32)?;
    mem.set_u32(
        size as u32,
        u32::try_from(total).map_err(|_| Fail::Errno(EINVAL))?,
    )
}

fn args_get(mut env: FunctionEnvMut<'_, WasiCtx>, argv: i32, buf: i32) -> Result<i32, HostStop> {
    with_mem(&mut env, |ctx, mem| {
        write_strings(mem, &ctx.args, argv, buf)
    })
}

fn args_sizes_get(
    mut env: FunctionEnvMut<'_, WasiCtx>,
    count: i32,
    size: i32,
) -> Result<i32, HostStop> {
    with_mem(&mut env, |ctx, mem| {
        write_sizes(mem, &ctx.args, count, size)
    })
}

fn environ_get(mut env: FunctionEnvMut<'_, WasiCtx>, ptrs: i32, buf: i32) -> Result<i32, HostStop> {
    with_mem(&mut env, |ctx, mem| write_strings(mem, &ctx.env, ptrs, buf))
}

fn environ_sizes_get(
    mut env: FunctionEnvMut<'_, WasiCtx>,
    count: i32,
    size: i32,
) -> Result<i32, HostStop> {
    with_mem(&mut env, |ctx, mem| write_sizes(mem, &ctx.env, count, size))
}

/// Base of the monotonic clock: the first time any function asked.
fn monotonic_now() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let base = *BASE.get_or_init(Instant::now);
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

fn clock_now(ctx: &WasiCtx, id: i32) -> Result<u64, Fail> {
    match id {
        // realtime
        0 => Ok(SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0)),
        // monotonic
        1 => Ok(monotonic_now()),
        // process / thread CPU time: the call's elapsed time is a fair bound.
        2 | 3 => Ok(u64::try_from(ctx.started.elapsed().as_nanos()).unwrap_or(u64::MAX)),
        _ => Err(Fail::Errno(EINVAL)),
    }
}

fn clock_res_get(mut env: FunctionEnvMut<'_, WasiCtx>, id: i32, out: i32) -> Result<i32, HostStop> {
    with_mem(&mut env, |_, mem| {
        if !(0..=3).contains(&id) {
            return Err(Fail::Errno(EINVAL));
        }
        mem.set_u64(out as u32, 1_000)
    })
}

fn clock_time_get(
    mut env: FunctionEnvMut<'_, WasiCtx>,
    id: i32,
    _precision: i64,
    out: i32,
) -> Result<i32, HostStop> {
    with_mem(&mut env, |ctx, mem| {
        let now = clock_now(ctx, id)?;
        mem.set_u64(out as u32, now)
    })
}

fn random_get(mut env: FunctionEnvMut<'_, WasiCtx>, buf: i32, len: i32) -> Result<i32, HostStop> {
    with_mem(&mut env, |_, mem| {
        let (buf, len) = (buf as u32, len as u32);
        mem.check(buf, u64::from(len))?;
        let mut chunk = [0u8; 4096];
        let mut done = 0u32;
        while done < len {
            let n = (len - done).min(chunk.len() as u32);
            let part = &mut chunk[..n as usize];
            getrandom::fill(part).map_err(|_| Fail::Errno(EIO))?;
            mem.write(buf + done, part)?;
            done += n;
        }
        Ok(())
    })
}

fn proc_exit(_env: FunctionEnvMut<'_, WasiCtx>, code: i32) -> Result<(), HostStop> {
    Err(HostStop::Exit(code))
}

fn sched_yield(env: FunctionEnvMut<'_, WasiCtx>) -> Result<i32, HostStop> {
    env.data().check_deadline()?;
    Ok(SUCCESS)
}

fn fd_read(
    mut env: FunctionEnvMut<'_, WasiCtx>,
    fd: i32,
    iovs: i32,
    iovs_len: i32,
    nread: i32,
) -> Result<i32, HostStop> {
    with_mem(&mut env, |ctx, mem| {
        if fd != 0 {
            return Err(Fail::Errno(EBADF));
        }
        let mut total = 0u32;
        for (ptr, len) in mem.iovecs(iovs, iovs_len)? {
            let rest = &ctx.input[ctx.input_pos..];
            let n = rest.len().min(len as usize);
            mem.write(ptr, &rest[..n])?;
            ctx.input_pos += n;
            total = total.saturating_add(n as u32);
            if n < len as usize {
                break;
            }
        }
        mem.set_u32(nread as u32, total)
    })
}

fn fd_write(
    mut env: FunctionEnvMut<'_, WasiCtx>,
    fd: i32,
    iovs: i32,
    iovs_len: i32,
    nwritten: i32,
) -> Result<i32, HostStop> {
    with_mem(&mut env, |ctx, mem| {
        if fd != 1 && fd != 2 {
            return Err(Fail::Errno(EBADF));
        }
        let mut total = 0u32;
        for (ptr, len) in mem.iovecs(iovs, iovs_len)? {
            if fd == 1 {
                let room = ctx.max_output.saturating_sub(ctx.stdout.len());
                let take = (len as usize).min(room) as u32;
                mem.read_into(ptr, take, &mut ctx.stdout)?;
                if take < len {
                    // A module writing forever must end now, not when its
                    // fuel runs out.
                    return Err(Fail::Stop(HostStop::Limit {
                        limit: "output",
                        detail: format!(
                            "function wrote more than {} bytes to stdout",
                            ctx.max_output
                        ),
                    }));
                }
            } else {
                ctx.push_stderr(mem, ptr, len)?;
            }
            total = total.saturating_add(len);
        }
        mem.set_u32(nwritten as u32, total)
    })
}

fn fd_fdstat_get(mut env: FunctionEnvMut<'_, WasiCtx>, fd: i32, out: i32) -> Result<i32, HostStop> {
    with_mem(&mut env, |_, mem| {
        const RIGHT_FD_READ: u64 = 1 << 1;
        const RIGHT_FD_WRITE: u64 = 1 << 6;
        const RIGHT_POLL_FD_READWRITE: u64 = 1 << 27;
        let rights = match fd {
            0 => RIGHT_FD_READ | RIGHT_POLL_FD_READWRITE,
            1 | 2 => RIGHT_FD_WRITE | RIGHT_POLL_FD_READWRITE,
            _ => return Err(Fail::Errno(EBADF)),
        };
        // fdstat: filetype u8 @0, flags u16 @2, rights_base u64 @8,
        // rights_inheriting u64 @16; 24 bytes.
        let mut st = [0u8; 24];
        st[0] = 2; // character device
        st[8..16].copy_from_slice(&rights.to_le_bytes());
        mem.write(out as u32, &st)
    })
}

fn fd_prestat_get(env: FunctionEnvMut<'_, WasiCtx>, _fd: i32, _out: i32) -> Result<i32, HostStop> {
    // No preopened directories: libc stops scanning at the first EBADF.
    env.data().check_deadline()?;
    Ok(EBADF)
}

fn fd_close(env: FunctionEnvMut<'_, WasiCtx>, fd: i32) -> Result<i32, HostStop> {
    env.data().check_deadline()?;
    Ok(if (0..=2).contains(&fd) {
        SUCCESS
    } else {
        EBADF
    })
}

fn fd_seek(
    env: FunctionEnvMut<'_, WasiCtx>,
    fd: i32,
    _offset: i64,
    _whence: i32,
    _out: i32,
) -> Result<i32, HostStop> {
    env.data().check_deadline()?;
    Ok(if (0..=2).contains(&fd) { ESPIPE } else { EBADF })
}

fn fd_tell(env: FunctionEnvMut<'_, WasiCtx>, fd: i32, _out: i32) -> Result<i32, HostStop> {
    env.data().check_deadline()?;
    Ok(if (0..=2).contains(&fd) { ESPIPE } else { EBADF })
}

/// `poll_oneoff`, for clock subscriptions (what `sleep` uses) and for the
/// standard streams, which are always ready.
fn poll_oneoff(
    mut env: FunctionEnvMut<'_, WasiCtx>,
    subs: i32,
    events: i32,
    nsubs: i32,
    nevents: i32,
) -> Result<i32, HostStop> {
    with_mem(&mut env, |ctx, mem| {
        const SUB_SIZE: u32 = 48;
        const EVENT_SIZE: u32 = 32;
        let n = nsubs as u32;
        if n == 0 || n > IOV_MAX {
            return Err(Fail::Errno(EINVAL));
        }
        let base = subs as u32;
        mem.check(base, u64::from(n) * u64::from(SUB_SIZE))?;
        mem.check(events as u32, u64::from(n) * u64::from(EVENT_SIZE))?;

        // (userdata, error, type, nbytes) of events ready now.
        let mut ready: Vec<(u64, u16, u8, u64)> = Vec::new();
        // (userdata, absolute monotonic deadline in ns) of clocks.
        let mut clocks: Vec<(u64, u64)> = Vec::new();
        for i in 0..n {
            let at = base + i * SUB_SIZE;
            let userdata = mem.u64_at(at)?;
            let tag = mem.read(at + 8, 1)?[0];
            match tag {
                0 => {
                    let id = mem.u32_at(at + 16)? as i32;
                    let timeout = mem.u64_at(at + 24)?;
                    let flags = mem.read(at + 40, 2)?;
                    let abstime = flags[0] & 1 == 1;
                    let now = match clock_now(ctx, id) {
                        Ok(t) => t,
                        Err(_) => {
                            ready.push((userdata, EINVAL as u16, 0, 0));
                            continue;
                        }
                    };
                    let wait = if abstime {
                        timeout.saturating_sub(now)
                    } else {
                        timeout
                    };
                    clocks.push((userdata, monotonic_now().saturating_add(wait)));
                }
                1 | 2 => {
                    let fd = mem.u32_at(at + 16)?;
                    let ok = (tag == 1 && fd == 0) || (tag == 2 && (fd == 1 || fd == 2));
                    let nbytes = if tag == 1 {
                        (ctx.input.len() - ctx.input_pos) as u64
                    } else {
                        0
                    };
                    let err = if ok { 0 } else { EBADF as u16 };
                    ready.push((userdata, err, tag, nbytes));
                }
                _ => ready.push((userdata, ENOTSUP as u16, tag, 0)),
            }
        }
        if ready.is_empty() {
            // Sleep until the earliest clock, but never past the deadline.
            let wake = clocks.iter().map(|c| c.1).min().unwrap_or(0);
            let now = monotonic_now();
            let left = ctx.deadline.saturating_duration_since(Instant::now());
            let want = Duration::from_nanos(wake.saturating_sub(now));
            if want >= left {
                std::thread::sleep(left);
                return Err(Fail::Stop(timeout_stop()));
            }
            std::thread::sleep(want);
            let now = monotonic_now();
            for (userdata, at) in &clocks {
                if *at <= now {
                    ready.push((*userdata, 0, 0, 0));
                }
            }
        }
        for (i, (userdata, err, ty, nbytes)) in ready.iter().enumerate() {
            let mut ev = [0u8; EVENT_SIZE as usize];
            ev[0..8].copy_from_slice(&userdata.to_le_bytes());
            ev[8..10].copy_from_slice(&err.to_le_bytes());
            ev[10] = *ty;
            ev[16..24].copy_from_slice(&nbytes.to_le_bytes());
            mem.write(events as u32 + i as u32 * EVENT_SIZE, &ev)?;
        }
        mem.set_u32(nevents as u32, ready.len() as u32)
    })
}

/// The host function for preview 1 function `name`, if we provide it.
pub(crate) fn make(
    store: &mut impl AsStoreMut,
    env: &FunctionEnv<WasiCtx>,
    name: &str,
) -> Option<Function> {
    // Every capability-bearing call we do not offer (files, sockets,
    // signals) answers ENOTCAPABLE, which libc maps to a clean error.
    const NC: i32 = ENOTCAPABLE;
    let f = match name {
        "args_get" => Function::new_typed_with_env(store, env, args_get),
        "args_sizes_get" => Function::new_typed_with_env(store, env, args_sizes_get),
        "environ_get" => Function::new_typed_with_env(store, env, environ_get),
        "environ_sizes_get" => Function::new_typed_with_env(store, env, environ_sizes_get),
        "clock_res_get" => Function::new_typed_with_env(store, env, clock_res_get),
        "clock_time_get" => Function::new_typed_with_env(store, env, clock_time_get),
        "random_get" => Function::new_typed_with_env(store, env, random_get),
        "proc_exit" => Function::new_typed_with_env(store, env, proc_exit),
        "sched_yield" => Function::new_typed_with_env(store, env, sched_yield),
        "fd_read" => Function::new_typed_with_env(store, env, fd_read),
        "fd_write" => Function::new_typed_with_env(store, env, fd_write),
        "fd_fdstat_get" => Function::new_typed_with_env(store, env, fd_fdstat_get),
        "fd_prestat_get" => Function::new_typed_with_env(store, env, fd_prestat_get),
        "fd_close" => Function::new_typed_with_env(store, env, fd_close),
        "fd_seek" => Function::new_typed_with_env(store, env, fd_seek),
        "fd_tell" => Function::new_typed_with_env(store, env, fd_tell),
        "poll_oneoff" => Function::new_typed_with_env(store, env, poll_oneoff),
        "fd_prestat_dir_name" => {
            Function::new_typed(store, |_: i32, _: i32, _: i32| -> i32 { EBADF })
        }
        "fd_advise" => Function::new_typed(store, |_: i32, _: i64, _: i64, _: i32| -> i32 { NC }),
        "fd_allocate" => Function::new_typed(store, |_: i32, _: i64, _: i64| -> i32 { NC }),
        "fd_datasync" | "fd_sync" | "proc_raise" => {
            Function::new_typed(store, |_: i32| -> i32 { NC })
        }
        "fd_fdstat_set_flags" | "fd_renumber" | "fd_filestat_get" | "sock_shutdown" => {
            Function::new_typed(store, |_: i32, _: i32| -> i32 { NC })
        }
        "fd_fdstat_set_rights" => {
            Function::new_typed(store, |_: i32, _: i64, _: i64| -> i32 { NC })
        }
        "fd_filestat_set_size" => Function::new_typed(store, |_: i32, _: i64| -> i32 { NC }),
        "fd_filestat_set_times" => {
            Function::new_typed(store, |_: i32, _: i64, _: i64, _: i32| -> i32 { NC })
        }
        "fd_pread" | "fd_pwrite" | "fd_readdir" => {
            Function::new_typed(store, |_: i32, _: i32, _: i32, _: i64, _: i32| -> i32 {
                NC
            })
        }
        "path_create_directory" | "path_remove_directory" | "path_unlink_file" | "sock_accept" => {
            Function::new_typed(store, |_: i32, _: i32, _: i32| -> i32 { NC })
        }
        "path_filestat_get" | "path_symlink" | "sock_send" => {
            Function::new_typed(store, |_: i32, _: i32, _: i32, _: i32, _: i32| -> i32 {
                NC
            })
        }
        "path_filestat_set_times" => Function::new_typed(
            store,
            |_: i32, _: i32, _: i32, _: i32, _: i64, _: i64, _: i32| -> i32 { NC },
        ),
        "path_link" => Function::new_typed(
            store,
            |_: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32| -> i32 { NC },
        ),
        "path_open" => Function::new_typed(
            store,
            |_: i32, _: i32, _: i32, _: i32, _: i32, _: i64, _: i64, _: i32, _: i32| -> i32 { NC },
        ),
        "path_readlink" | "path_rename" | "sock_recv" => Function::new_typed(
            store,
            |_: i32, _: i32, _: i32, _: i32, _: i32, _: i32| -> i32 { NC },
        ),
        _ => return None,
    };
    Some(f)
}
