//! Arguments, environment, clocks, randomness and process exit.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use wasmer::FunctionEnvMut;

use super::errno::{EINVAL, EIO, ENOTCAPABLE, Errno, SUCCESS};
use super::mem::Mem;
use super::{Fail, HostStop, WasiCtx, with_mem};

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

pub(crate) fn args_get(
    mut env: FunctionEnvMut<'_, WasiCtx>,
    argv: i32,
    buf: i32,
) -> Result<Errno, HostStop> {
    with_mem(&mut env, |ctx, mem| {
        write_strings(mem, &ctx.args, argv, buf)
    })
}

pub(crate) fn args_sizes_get(
    mut env: FunctionEnvMut<'_, WasiCtx>,
    count: i32,
    size: i32,
) -> Result<Errno, HostStop> {
    with_mem(&mut env, |ctx, mem| {
        write_sizes(mem, &ctx.args, count, size)
    })
}

pub(crate) fn environ_get(
    mut env: FunctionEnvMut<'_, WasiCtx>,
    ptrs: i32,
    buf: i32,
) -> Result<Errno, HostStop> {
    with_mem(&mut env, |ctx, mem| write_strings(mem, &ctx.env, ptrs, buf))
}

pub(crate) fn environ_sizes_get(
    mut env: FunctionEnvMut<'_, WasiCtx>,
    count: i32,
    size: i32,
) -> Result<Errno, HostStop> {
    with_mem(&mut env, |ctx, mem| write_sizes(mem, &ctx.env, count, size))
}

/// Base of the monotonic clock: the first time any function asked.
pub(crate) fn monotonic_now() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let base = *BASE.get_or_init(Instant::now);
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

pub(crate) fn clock_now(ctx: &WasiCtx, id: i32) -> Result<u64, Fail> {
    match id {
        // realtime
        0 => Ok(realtime_now()),
        // monotonic
        1 => Ok(monotonic_now()),
        // process / thread CPU time: the call's elapsed time is a fair bound.
        2 | 3 => Ok(u64::try_from(ctx.started.elapsed().as_nanos()).unwrap_or(u64::MAX)),
        _ => Err(Fail::Errno(EINVAL)),
    }
}

pub(crate) fn clock_res_get(
    mut env: FunctionEnvMut<'_, WasiCtx>,
    id: i32,
    out: i32,
) -> Result<Errno, HostStop> {
    with_mem(&mut env, |_, mem| {
        if !(0..=3).contains(&id) {
            return Err(Fail::Errno(EINVAL));
        }
        mem.set_u64(out as u32, 1_000)
    })
}

pub(crate) fn clock_time_get(
    mut env: FunctionEnvMut<'_, WasiCtx>,
    id: i32,
    _precision: i64,
    out: i32,
) -> Result<Errno, HostStop> {
    with_mem(&mut env, |ctx, mem| {
        let now = clock_now(ctx, id)?;
        mem.set_u64(out as u32, now)
    })
}

pub(crate) fn random_get(
    mut env: FunctionEnvMut<'_, WasiCtx>,
    buf: i32,
    len: i32,
) -> Result<Errno, HostStop> {
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

pub(crate) fn proc_exit(_env: FunctionEnvMut<'_, WasiCtx>, code: i32) -> Result<(), HostStop> {
    Err(HostStop::Exit(code))
}

pub(crate) fn sched_yield(env: FunctionEnvMut<'_, WasiCtx>) -> Result<Errno, HostStop> {
    env.data().check_deadline()?;
    Ok(SUCCESS)
}

/// Signals are a capability Orb does not offer.
pub(crate) fn proc_raise(env: FunctionEnvMut<'_, WasiCtx>, _sig: i32) -> Result<Errno, HostStop> {
    env.data().check_deadline()?;
    Ok(ENOTCAPABLE)
}

/// The realtime clock in nanoseconds since the epoch.
pub(crate) fn realtime_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
