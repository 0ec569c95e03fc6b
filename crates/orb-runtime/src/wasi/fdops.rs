//! Calls on descriptors: reading, writing, seeking, attributes, directory
//! listings, preopens, closing and renumbering.
//!
//! Checks come in the order preview 1 implementations use: the descriptor
//! exists (`EBADF`), it is the right kind of thing (`EISDIR`, `ENOTDIR`,
//! `ESPIPE`), then its rights (`ENOTCAPABLE`).

use wasmer::FunctionEnvMut;

use super::errno::{
    EBADF, EFBIG, EINVAL, EISDIR, ENAMETOOLONG, ENOTCAPABLE, ENOTDIR, ESPIPE, Errno,
};
use super::fd::{Desc, FdEntry, fdflags, rights};
use super::mem::Mem;
use super::proc::realtime_now;
use super::{Fail, HostStop, WasiCtx, stdio, with_mem};
use crate::vfs::{Ino, Kind, Stat, Times, Vfs};

/// Bytes copied from guest memory at a time when writing a file, so a huge
/// iovec never becomes a huge host allocation.
const WRITE_CHUNK: u32 = 64 * 1024;

/// Filetype codes.
const CHARACTER_DEVICE: u8 = 2;
const DIRECTORY: u8 = 3;
const REGULAR_FILE: u8 = 4;
const SYMBOLIC_LINK: u8 = 7;

pub(crate) fn filetype(kind: Kind) -> u8 {
    match kind {
        Kind::Dir => DIRECTORY,
        Kind::File => REGULAR_FILE,
        Kind::Symlink => SYMBOLIC_LINK,
    }
}

/// A `filestat` (64 bytes: dev, ino, filetype, nlink, size, atim, mtim,
/// ctim).
pub(crate) fn filestat(st: Option<&Stat>) -> [u8; 64] {
    let mut b = [0u8; 64];
    let Some(st) = st else {
        // A standard stream: a character device with no attributes.
        b[16] = CHARACTER_DEVICE;
        return b;
    };
    b[0..8].copy_from_slice(&1u64.to_le_bytes());
    b[8..16].copy_from_slice(&st.ino.to_le_bytes());
    b[16] = filetype(st.kind);
    b[24..32].copy_from_slice(&st.nlink.to_le_bytes());
    b[32..40].copy_from_slice(&st.size.to_le_bytes());
    b[40..48].copy_from_slice(&st.atim.to_le_bytes());
    b[48..56].copy_from_slice(&st.mtim.to_le_bytes());
    b[56..64].copy_from_slice(&st.ctim.to_le_bytes());
    b
}

/// The `fstflags` of a set-times call as [`Times`].
pub(crate) fn times(atim: i64, mtim: i64, fst: i32) -> Result<Times, Errno> {
    const ATIM: i32 = 1;
    const ATIM_NOW: i32 = 2;
    const MTIM: i32 = 4;
    const MTIM_NOW: i32 = 8;
    if fst & !(ATIM | ATIM_NOW | MTIM | MTIM_NOW) != 0
        || (fst & ATIM != 0 && fst & ATIM_NOW != 0)
        || (fst & MTIM != 0 && fst & MTIM_NOW != 0)
    {
        return Err(EINVAL);
    }
    let now = realtime_now();
    let pick = |set: i32, at_now: i32, value: i64| {
        if fst & set != 0 {
            Some(value as u64)
        } else if fst & at_now != 0 {
            Some(now)
        } else {
            None
        }
    };
    Ok(Times {
        atim: pick(ATIM, ATIM_NOW, atim),
        mtim: pick(MTIM, MTIM_NOW, mtim),
    })
}

/// The call's filesystem with its clock set; a descriptor naming a file or
/// directory implies there is one.
pub(crate) fn fs(vfs: &mut Option<Vfs>) -> Result<&mut Vfs, Errno> {
    let v = vfs.as_mut().ok_or(EBADF)?;
    v.set_now(realtime_now());
    Ok(v)
}

fn set_pos(ctx: &mut WasiCtx, fd: i32, to: u64) {
    if let Ok(FdEntry {
        desc: Desc::File { pos, .. },
        ..
    }) = ctx.fds.get_mut(fd)
    {
        *pos = to;
    }
}

/// Copy file `ino` from `offset` into the iovecs; returns the bytes read.
fn read_file(
    vfs: &Vfs,
    mem: &Mem<'_>,
    ino: Ino,
    offset: u64,
    iovs: &[(u32, u32)],
) -> Result<u32, Fail> {
    let data = vfs.data(ino)?;
    let mut at = usize::try_from(offset).unwrap_or(usize::MAX);
    let mut total = 0u32;
    for &(ptr, len) in iovs {
        let rest = data.get(at..).unwrap_or(&[]);
        let n = rest.len().min(len as usize);
        mem.write(ptr, &rest[..n])?;
        at += n;
        total = total.saturating_add(n as u32);
        if n < len as usize {
            break;
        }
    }
    Ok(total)
}

/// Copy the iovecs into file `ino` at `offset` (at its end when `append`);
/// returns the bytes written and the offset after them. A refusal after
/// some bytes were written is a short write, as in POSIX.
fn write_file(
    vfs: &mut Vfs,
    mem: &Mem<'_>,
    ino: Ino,
    offset: u64,
    append: bool,
    iovs: &[(u32, u32)],
) -> Result<(u32, u64), Fail> {
    let mut at = if append {
        vfs.data(ino)?.len() as u64
    } else {
        offset
    };
    let mut total = 0u32;
    for &(ptr, len) in iovs {
        let mut done = 0u32;
        while done < len {
            let n = (len - done).min(WRITE_CHUNK);
            let chunk = mem.read(ptr.wrapping_add(done), n)?;
            if let Err(e) = vfs.write_at(ino, at, &chunk) {
                if total > 0 {
                    return Ok((total, at));
                }
                return Err(e.into());
            }
            at += u64::from(n);
            done += n;
            total = total.saturating_add(n);
        }
    }
    Ok((total, at))
}

pub(crate) fn fd_read(
    mut env: FunctionEnvMut<'_, WasiCtx>,
    fd: i32,
    iovs: i32,
    iovs_len: i32,
    nread: i32,
) -> Result<Errno, HostStop> {
    with_mem(&mut env, |ctx, mem| {
        let entry = *ctx.fds.get(fd)?;
        let n = match entry.desc {
            Desc::Stdin => stdio::read(ctx, mem, &mem.iovecs(iovs, iovs_len)?)?,
            Desc::Stdout | Desc::Stderr => return Err(EBADF.into()),
            Desc::Dir { .. } => return Err(EISDIR.into()),
            Desc::File { ino, pos, .. } => {
                entry.require(rights::FD_READ)?;
                let iovs = mem.iovecs(iovs, iovs_len)?;
                let n = read_file(fs(&mut ctx.vfs)?, mem, ino, pos, &iovs)?;
                set_pos(ctx, fd, pos + u64::from(n));
                n
            }
        };
        mem.set_u32(nread as u32, n)
    })
}

pub(crate) fn fd_pread(
    mut env: FunctionEnvMut<'_, WasiCtx>,
    fd: i32,
    iovs: i32,
    iovs_len: i32,
    offset: i64,
    nread: i32,
) -> Result<Errno, HostStop> {
    with_mem(&mut env, |ctx, mem| {
        let entry = *ctx.fds.get(fd)?;
        let Desc::File { ino, .. } = entry.desc else {
            return Err(match entry.desc {
                Desc::Dir { .. } => EISDIR,
                _ => ESPIPE,
            }
            .into());
        };
        entry.require(rights::FD_READ | rights::FD_SEEK)?;
        let iovs = mem.iovecs(iovs, iovs_len)?;
        let n = read_file(fs(&mut ctx.vfs)?, mem, ino, offset as u64, &iovs)?;
        mem.set_u32(nread as u32, n)
    })
}

pub(crate) fn fd_write(
    mut env: FunctionEnvMut<'_, WasiCtx>,
    fd: i32,
    iovs: i32,
    iovs_len: i32,
    nwritten: i32,
) -> Result<Errno, HostStop> {
    with_mem(&mut env, |ctx, mem| {
        let entry = *ctx.fds.get(fd)?;
        let n = match entry.desc {
            Desc::Stdout | Desc::Stderr => {
                let err = entry.desc == Desc::Stderr;
                stdio::write(ctx, mem, &mem.iovecs(iovs, iovs_len)?, err)?
            }
            Desc::Stdin => return Err(EBADF.into()),
            Desc::Dir { .. } => return Err(EISDIR.into()),
            Desc::File { ino, pos, flags } => {
                entry.require(rights::FD_WRITE)?;
                let iovs = mem.iovecs(iovs, iovs_len)?;
                let append = flags & fdflags::APPEND != 0;
                let (n, end) = write_file(fs(&mut ctx.vfs)?, mem, ino, pos, append, &iovs)?;
                set_pos(ctx, fd, end);
                n
            }
        };
        mem.set_u32(nwritten as u32, n)
    })
}

pub(crate) fn fd_pwrite(
    mut env: FunctionEnvMut<'_, WasiCtx>,
    fd: i32,
    iovs: i32,
    iovs_len: i32,
    offset: i64,
    nwritten: i32,
) -> Result<Errno, HostStop> {
    with_mem(&mut env, |ctx, mem| {
        let entry = *ctx.fds.get(fd)?;
        let Desc::File { ino, flags, .. } = entry.desc else {
            return Err(match entry.desc {
                Desc::Dir { .. } => EISDIR,
                _ => ESPIPE,
            }
            .into());
        };
        entry.require(rights::FD_WRITE | rights::FD_SEEK)?;
        let iovs = mem.iovecs(iovs, iovs_len)?;
        // As on Linux, an append-mode descriptor writes at the end.
        let append = flags & fdflags::APPEND != 0;
        let vfs = fs(&mut ctx.vfs)?;
        let (n, _) = write_file(vfs, mem, ino, offset as u64, append, &iovs)?;
        mem.set_u32(nwritten as u32, n)
    })
}

pub(crate) fn fd_seek(
    mut env: FunctionEnvMut<'_, WasiCtx>,
    fd: i32,
    offset: i64,
    whence: i32,
    out: i32,
) -> Result<Errno, HostStop> {
    with_mem(&mut env, |ctx, mem| {
        let entry = *ctx.fds.get(fd)?;
        let Desc::File { ino, pos, .. } = entry.desc else {
            return Err(match entry.desc {
                Desc::Dir { .. } => EISDIR,
                _ => ESPIPE,
            }
            .into());
        };
        if whence == 1 && offset == 0 {
            // Asking where we are is telling.
            if entry.base & (rights::FD_TELL | rights::FD_SEEK) == 0 {
                return Err(ENOTCAPABLE.into());
            }
        } else {
            entry.require(rights::FD_SEEK)?;
        }
        let base = match whence {
            0 => 0,
            1 => pos,
            2 => fs(&mut ctx.vfs)?.data(ino)?.len() as u64,
            _ => return Err(EINVAL.into()),
        };
        let to = i128::from(base) + i128::from(offset);
        let to = u64::try_from(to).map_err(|_| Fail::Errno(EINVAL))?;
        mem.set_u64(out as u32, to)?;
        set_pos(ctx, fd, to);
        Ok(())
    })
}

pub(crate) fn fd_tell(
    mut env: FunctionEnvMut<'_, WasiCtx>,
    fd: i32,
    out: i32,
) -> Result<Errno, HostStop> {
    with_mem(&mut env, |ctx, mem| {
        let entry = *ctx.fds.get(fd)?;
        match entry.desc {
            Desc::File { pos, .. } => {
                entry.require(rights::FD_TELL)?;
                mem.set_u64(out as u32, pos)
            }
            Desc::Dir { .. } => Err(EISDIR.into()),
            _ => Err(ESPIPE.into()),
        }
    })
}

pub(crate) fn fd_close(mut env: FunctionEnvMut<'_, WasiCtx>, fd: i32) -> Result<Errno, HostStop> {
    let ctx = env.data_mut();
    ctx.check_deadline()?;
    Ok(match ctx.fds.remove(fd) {
        Ok(entry) => {
            if let (Some(ino), Some(vfs)) = (entry.ino(), ctx.vfs.as_mut()) {
                vfs.release(ino);
            }
            super::errno::SUCCESS
        }
        Err(e) => e,
    })
}

pub(crate) fn fd_renumber(
    mut env: FunctionEnvMut<'_, WasiCtx>,
    from: i32,
    to: i32,
) -> Result<Errno, HostStop> {
    let ctx = env.data_mut();
    ctx.check_deadline()?;
    Ok(match ctx.fds.renumber(from, to) {
        Ok(closed) => {
            if let (Some(ino), Some(vfs)) = (closed.and_then(|c| c.ino()), ctx.vfs.as_mut()) {
                vfs.release(ino);
            }
            super::errno::SUCCESS
        }
        Err(e) => e,
    })
}

pub(crate) fn fd_fdstat_get(
    mut env: FunctionEnvMut<'_, WasiCtx>,
    fd: i32,
    out: i32,
) -> Result<Errno, HostStop> {
    with_mem(&mut env, |ctx, mem| {
        let entry = ctx.fds.get(fd)?;
        let (filetype, flags) = match entry.desc {
            Desc::Stdin | Desc::Stdout | Desc::Stderr => (CHARACTER_DEVICE, 0),
            Desc::Dir { .. } => (DIRECTORY, 0),
            Desc::File { flags, .. } => (REGULAR_FILE, flags),
        };
        // fdstat: filetype u8 @0, flags u16 @2, rights_base u64 @8,
        // rights_inheriting u64 @16; 24 bytes.
        let mut st = [0u8; 24];
        st[0] = filetype;
        st[2..4].copy_from_slice(&flags.to_le_bytes());
        st[8..16].copy_from_slice(&entry.base.to_le_bytes());
        st[16..24].copy_from_slice(&entry.inheriting.to_le_bytes());
        mem.write(out as u32, &st)
    })
}

pub(crate) fn fd_fdstat_set_flags(
    mut env: FunctionEnvMut<'_, WasiCtx>,
    fd: i32,
    flags: i32,
) -> Result<Errno, HostStop> {
    let ctx = env.data_mut();
    ctx.check_deadline()?;
    let result = (|| {
        let entry = ctx.fds.get_mut(fd)?;
        let new = u16::try_from(flags).map_err(|_| EINVAL)?;
        if new & !fdflags::ALL != 0 {
            return Err(EINVAL);
        }
        match &mut entry.desc {
            Desc::File { flags, .. } => {
                if entry.base & rights::FD_FDSTAT_SET_FLAGS == 0 {
                    return Err(ENOTCAPABLE);
                }
                *flags = new;
                Ok(())
            }
            // Nothing here ever blocks or buffers, so the flags of streams
            // and directories have no effect; accept them.
            _ => Ok(()),
        }
    })();
    Ok(result.err().unwrap_or(super::errno::SUCCESS))
}

pub(crate) fn fd_fdstat_set_rights(
    mut env: FunctionEnvMut<'_, WasiCtx>,
    fd: i32,
    base: i64,
    inheriting: i64,
) -> Result<Errno, HostStop> {
    let ctx = env.data_mut();
    ctx.check_deadline()?;
    let (base, inheriting) = (base as u64, inheriting as u64);
    Ok(match ctx.fds.get_mut(fd) {
        Err(e) => e,
        // Rights can only be dropped.
        Ok(e) if base & !e.base != 0 || inheriting & !e.inheriting != 0 => ENOTCAPABLE,
        Ok(e) => {
            e.base = base;
            e.inheriting = inheriting;
            super::errno::SUCCESS
        }
    })
}

pub(crate) fn fd_filestat_get(
    mut env: FunctionEnvMut<'_, WasiCtx>,
    fd: i32,
    out: i32,
) -> Result<Errno, HostStop> {
    with_mem(&mut env, |ctx, mem| {
        let entry = *ctx.fds.get(fd)?;
        let Some(ino) = entry.ino() else {
            return mem.write(out as u32, &filestat(None));
        };
        entry.require(rights::FD_FILESTAT_GET)?;
        let st = fs(&mut ctx.vfs)?.stat(ino)?;
        mem.write(out as u32, &filestat(Some(&st)))
    })
}

/// The inode of file descriptor `fd` holding `right`: directories fail
/// with `EISDIR`, streams with `stream_errno`.
fn file_with(ctx: &WasiCtx, fd: i32, right: u64, stream_errno: Errno) -> Result<Ino, Errno> {
    let entry = ctx.fds.get(fd)?;
    match entry.desc {
        Desc::File { ino, .. } => {
            entry.require(right)?;
            Ok(ino)
        }
        Desc::Dir { .. } => Err(EISDIR),
        _ => Err(stream_errno),
    }
}

/// Run a descriptor call that needs no guest memory.
fn plain(
    mut env: FunctionEnvMut<'_, WasiCtx>,
    f: impl FnOnce(&mut WasiCtx) -> Result<(), Errno>,
) -> Result<Errno, HostStop> {
    let ctx = env.data_mut();
    ctx.check_deadline()?;
    let result = f(ctx);
    ctx.note_if_full();
    Ok(result.err().unwrap_or(super::errno::SUCCESS))
}

pub(crate) fn fd_filestat_set_size(
    env: FunctionEnvMut<'_, WasiCtx>,
    fd: i32,
    size: i64,
) -> Result<Errno, HostStop> {
    plain(env, |ctx| {
        let ino = file_with(ctx, fd, rights::FD_FILESTAT_SET_SIZE, EINVAL)?;
        fs(&mut ctx.vfs)?.set_len(ino, size as u64)
    })
}

pub(crate) fn fd_filestat_set_times(
    env: FunctionEnvMut<'_, WasiCtx>,
    fd: i32,
    atim: i64,
    mtim: i64,
    fst: i32,
) -> Result<Errno, HostStop> {
    plain(env, |ctx| {
        let t = times(atim, mtim, fst)?;
        let entry = ctx.fds.get(fd)?;
        let ino = entry.ino().ok_or(EBADF)?;
        entry.require(rights::FD_FILESTAT_SET_TIMES)?;
        fs(&mut ctx.vfs)?.set_times(ino, t)
    })
}

pub(crate) fn fd_advise(
    env: FunctionEnvMut<'_, WasiCtx>,
    fd: i32,
    _offset: i64,
    _len: i64,
    advice: i32,
) -> Result<Errno, HostStop> {
    plain(env, |ctx| {
        let entry = ctx.fds.get(fd)?;
        match entry.desc {
            Desc::File { .. } => entry.require(rights::FD_ADVISE)?,
            Desc::Dir { .. } => return Err(EBADF),
            _ => return Err(ESPIPE),
        }
        // Everything is in memory already; advice only has to be valid.
        if !(0..=5).contains(&advice) {
            return Err(EINVAL);
        }
        Ok(())
    })
}

pub(crate) fn fd_allocate(
    env: FunctionEnvMut<'_, WasiCtx>,
    fd: i32,
    offset: i64,
    len: i64,
) -> Result<Errno, HostStop> {
    plain(env, |ctx| {
        let ino = file_with(ctx, fd, rights::FD_ALLOCATE, EBADF)?;
        let end = (offset as u64).checked_add(len as u64).ok_or(EFBIG)?;
        let vfs = fs(&mut ctx.vfs)?;
        if end > vfs.data(ino)?.len() as u64 {
            vfs.set_len(ino, end)?;
        }
        Ok(())
    })
}

fn sync(env: FunctionEnvMut<'_, WasiCtx>, fd: i32, right: u64) -> Result<Errno, HostStop> {
    plain(env, |ctx| {
        let entry = ctx.fds.get(fd)?;
        if entry.ino().is_none() {
            return Err(EINVAL);
        }
        // Nothing to flush: the scratch layer lives in memory.
        entry.require(right)
    })
}

pub(crate) fn fd_sync(env: FunctionEnvMut<'_, WasiCtx>, fd: i32) -> Result<Errno, HostStop> {
    sync(env, fd, rights::FD_SYNC)
}

pub(crate) fn fd_datasync(env: FunctionEnvMut<'_, WasiCtx>, fd: i32) -> Result<Errno, HostStop> {
    sync(env, fd, rights::FD_DATASYNC)
}

/// A `dirent`: d_next u64, d_ino u64, d_namlen u32, d_type u8, three
/// bytes of padding (24 bytes), then the name.
fn dirent(out: &mut Vec<u8>, next: u64, ino: Ino, kind: Kind, name: &str) {
    out.extend_from_slice(&next.to_le_bytes());
    out.extend_from_slice(&ino.to_le_bytes());
    out.extend_from_slice(&(name.len() as u32).to_le_bytes());
    out.extend_from_slice(&[filetype(kind), 0, 0, 0]);
    out.extend_from_slice(name.as_bytes());
}

pub(crate) fn fd_readdir(
    mut env: FunctionEnvMut<'_, WasiCtx>,
    fd: i32,
    buf: i32,
    buf_len: i32,
    cookie: i64,
    used: i32,
) -> Result<Errno, HostStop> {
    with_mem(&mut env, |ctx, mem| {
        let entry = *ctx.fds.get(fd)?;
        let Desc::Dir { ino, .. } = entry.desc else {
            return Err(ENOTDIR.into());
        };
        entry.require(rights::FD_READDIR)?;
        let (buf, cap) = (buf as u32, buf_len as u32 as usize);
        mem.check(buf, cap as u64)?;
        let vfs = fs(&mut ctx.vfs)?;
        let cookie = cookie as u64;
        // Cookies: 0 starts at ".", 1 at "..", n + 2 at the nth entry.
        let mut out = Vec::new();
        if cookie == 0 {
            dirent(&mut out, 1, ino, Kind::Dir, ".");
        }
        if cookie <= 1 && out.len() < cap {
            dirent(&mut out, 2, vfs.parent(ino)?, Kind::Dir, "..");
        }
        let skip = usize::try_from(cookie.saturating_sub(2)).unwrap_or(usize::MAX);
        let mut next = cookie.max(2);
        for (name, child) in vfs.entries(ino, skip)? {
            if out.len() >= cap {
                break;
            }
            next += 1;
            dirent(&mut out, next, child, vfs.kind(child)?, name);
        }
        // A full buffer tells the caller to come back for more.
        out.truncate(cap);
        mem.write(buf, &out)?;
        mem.set_u32(used as u32, out.len() as u32)
    })
}

pub(crate) fn fd_prestat_get(
    mut env: FunctionEnvMut<'_, WasiCtx>,
    fd: i32,
    out: i32,
) -> Result<Errno, HostStop> {
    with_mem(&mut env, |ctx, mem| match ctx.fds.get(fd)?.desc {
        Desc::Dir { preopen: true, .. } => {
            // prestat: tag u8 (0 = directory) @0, name length u32 @4.
            let mut p = [0u8; 8];
            p[4..8].copy_from_slice(&1u32.to_le_bytes());
            mem.write(out as u32, &p)
        }
        _ => Err(EBADF.into()),
    })
}

pub(crate) fn fd_prestat_dir_name(
    mut env: FunctionEnvMut<'_, WasiCtx>,
    fd: i32,
    path: i32,
    len: i32,
) -> Result<Errno, HostStop> {
    with_mem(&mut env, |ctx, mem| match ctx.fds.get(fd)?.desc {
        Desc::Dir { preopen: true, .. } => {
            if (len as u32) < 1 {
                return Err(ENAMETOOLONG.into());
            }
            mem.write(path as u32, b"/")
        }
        _ => Err(ENOTDIR.into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_times_flags_are_validated() {
        assert_eq!(times(0, 0, 1 | 2), Err(EINVAL));
        assert_eq!(times(0, 0, 4 | 8), Err(EINVAL));
        assert_eq!(times(0, 0, 16), Err(EINVAL));
        let t = times(5, 7, 1 | 4).unwrap_or_default();
        assert_eq!((t.atim, t.mtim), (Some(5), Some(7)));
        let t = times(5, 7, 0).unwrap_or_default();
        assert_eq!((t.atim, t.mtim), (None, None));
        let t = times(5, 7, 8).unwrap_or_default();
        assert!(t.atim.is_none() && t.mtim.is_some_and(|m| m > 7));
    }

    #[test]
    fn filestat_layout() {
        let st = Stat {
            ino: 9,
            kind: Kind::File,
            nlink: 2,
            size: 300,
            atim: 1,
            mtim: 2,
            ctim: 3,
        };
        let b = filestat(Some(&st));
        assert_eq!(b[8], 9);
        assert_eq!(b[16], REGULAR_FILE);
        assert_eq!(b[24], 2);
        assert_eq!(
            u64::from_le_bytes(b[32..40].try_into().unwrap_or_default()),
            300
        );
        assert_eq!(filestat(None)[16], CHARACTER_DEVICE);
    }
}
