//! The standard streams: stdin is the request body, stdout the response
//! (capped), stderr a log excerpt (capped, flooding ends the run).

use super::mem::Mem;
use super::{Fail, HostStop, WasiCtx};

/// Read stdin into the iovecs; returns the bytes read.
pub(crate) fn read(ctx: &mut WasiCtx, mem: &Mem<'_>, iovs: &[(u32, u32)]) -> Result<u32, Fail> {
    let mut total = 0u32;
    for &(ptr, len) in iovs {
        let rest = &ctx.input[ctx.input_pos..];
        let n = rest.len().min(len as usize);
        mem.write(ptr, &rest[..n])?;
        ctx.input_pos += n;
        total = total.saturating_add(n as u32);
        if n < len as usize {
            break;
        }
    }
    Ok(total)
}

/// Bytes of stdin not read yet.
pub(crate) fn unread(ctx: &WasiCtx) -> u64 {
    (ctx.input.len() - ctx.input_pos) as u64
}

/// Write the iovecs to stdout (`err` false) or stderr; returns the bytes
/// written.
pub(crate) fn write(
    ctx: &mut WasiCtx,
    mem: &Mem<'_>,
    iovs: &[(u32, u32)],
    err: bool,
) -> Result<u32, Fail> {
    let mut total = 0u32;
    for &(ptr, len) in iovs {
        if !err {
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
    Ok(total)
}
