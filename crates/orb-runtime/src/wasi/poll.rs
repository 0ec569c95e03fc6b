//! `poll_oneoff`: clocks (what `sleep` uses) and descriptors. Standard
//! streams and files are always ready; nothing here ever blocks on IO.

use std::time::{Duration, Instant};

use wasmer::FunctionEnvMut;

use super::errno::{EBADF, EINVAL, ENOTSUP, Errno};
use super::fd::Desc;
use super::mem::IOV_MAX;
use super::proc::{clock_now, monotonic_now};
use super::{Fail, HostStop, WasiCtx, stdio, timeout_stop, with_mem};

/// `poll_oneoff`.
pub(crate) fn poll_oneoff(
    mut env: FunctionEnvMut<'_, WasiCtx>,
    subs: i32,
    events: i32,
    nsubs: i32,
    nevents: i32,
) -> Result<Errno, HostStop> {
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
                    let fd = mem.u32_at(at + 16)? as i32;
                    let read = tag == 1;
                    let state = match ctx.fds.get(fd).map(|e| e.desc) {
                        Ok(Desc::Stdin) if read => Ok(stdio::unread(ctx)),
                        Ok(Desc::Stdout | Desc::Stderr) if !read => Ok(0),
                        Ok(Desc::File { ino, pos, .. }) => match (read, ctx.vfs.as_ref()) {
                            (true, Some(vfs)) => vfs
                                .data(ino)
                                .map(|d| (d.len() as u64).saturating_sub(pos))
                                .map_err(|_| EBADF),
                            (false, Some(_)) => Ok(0),
                            (_, None) => Err(EBADF),
                        },
                        _ => Err(EBADF),
                    };
                    match state {
                        Ok(nbytes) => ready.push((userdata, 0, tag, nbytes)),
                        Err(e) => ready.push((userdata, e as u16, tag, 0)),
                    }
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
