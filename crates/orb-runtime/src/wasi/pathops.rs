//! Calls on paths, relative to a directory descriptor: opening, creating,
//! linking, renaming, removing and the attributes of what a path names.
//!
//! Without files there is no directory to start from, and every one of
//! these answers `ENOTCAPABLE`.

use wasmer::FunctionEnvMut;

use super::errno::{EBADF, EINVAL, ENOENT, ENOTCAPABLE, ENOTDIR, Errno};
use super::fd::{Desc, FdEntry, FdTable, fdflags, rights};
use super::fdops::{filestat, times};
use super::mem::Mem;
use super::proc::realtime_now;
use super::{Fail, HostStop, WasiCtx, with_mem};
use crate::vfs::{Ino, Kind, OpenFlags, Vfs};

/// The directory behind descriptor `fd`, which must hold `right`.
fn dir_of(fds: &FdTable, fd: i32, right: u64) -> Result<(Ino, FdEntry), Errno> {
    let entry = *fds.get(fd)?;
    match entry.desc {
        Desc::Dir { ino, .. } => {
            entry.require(right)?;
            Ok((ino, entry))
        }
        Desc::File { .. } => Err(ENOTDIR),
        _ => Err(EBADF),
    }
}

/// Run a path call with the descriptor table, the filesystem (its clock
/// set) and guest memory.
fn with_fs(
    env: &mut FunctionEnvMut<'_, WasiCtx>,
    f: impl FnOnce(&mut FdTable, &mut Vfs, &Mem<'_>) -> Result<(), Fail>,
) -> Result<Errno, HostStop> {
    if env.data().vfs.is_none() {
        env.data().check_deadline()?;
        return Ok(ENOTCAPABLE);
    }
    with_mem(env, |ctx, mem| {
        let vfs = ctx.vfs.as_mut().ok_or(Fail::Errno(ENOTCAPABLE))?;
        vfs.set_now(realtime_now());
        f(&mut ctx.fds, vfs, mem)
    })
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn path_open(
    mut env: FunctionEnvMut<'_, WasiCtx>,
    fd: i32,
    dirflags: i32,
    path: i32,
    path_len: i32,
    oflags: i32,
    base: i64,
    inheriting: i64,
    flags: i32,
    fd_out: i32,
) -> Result<Errno, HostStop> {
    with_fs(&mut env, |fds, vfs, mem| {
        let path = mem.path(path, path_len)?;
        if oflags & !0xf != 0 {
            return Err(EINVAL.into());
        }
        let flags = u16::try_from(flags).map_err(|_| Fail::Errno(EINVAL))?;
        if flags & !fdflags::ALL != 0 {
            return Err(EINVAL.into());
        }
        let open = OpenFlags {
            create: oflags & 1 != 0,
            directory: oflags & 2 != 0,
            exclusive: oflags & 4 != 0,
            truncate: oflags & 8 != 0,
        };
        let mut need = rights::PATH_OPEN;
        if open.create {
            need |= rights::PATH_CREATE_FILE;
        }
        if open.truncate {
            need |= rights::PATH_FILESTAT_SET_SIZE;
        }
        let (dir, parent) = dir_of(fds, fd, need)?;
        fds.check_room()?;
        // Check the result pointer before opening, so an opened file is
        // never lost to a bad pointer.
        mem.check(fd_out as u32, 4)?;
        let (base, inheriting) = (base as u64, inheriting as u64);
        let write = base & rights::FD_WRITE != 0;
        let follow = dirflags & 1 != 0;
        let ino = vfs.open(dir, &path, follow, open, write)?;
        let (desc, applicable) = match vfs.kind(ino)? {
            Kind::Dir => (
                Desc::Dir {
                    ino,
                    preopen: false,
                },
                rights::DIR,
            ),
            _ => (Desc::File { ino, pos: 0, flags }, rights::FILE),
        };
        let entry = FdEntry {
            desc,
            base: base & parent.inheriting & applicable,
            inheriting: inheriting & parent.inheriting,
        };
        let new = fds.insert(entry)?;
        vfs.retain(ino);
        mem.set_u32(fd_out as u32, new)
    })
}

pub(crate) fn path_create_directory(
    mut env: FunctionEnvMut<'_, WasiCtx>,
    fd: i32,
    path: i32,
    path_len: i32,
) -> Result<Errno, HostStop> {
    with_fs(&mut env, |fds, vfs, mem| {
        let path = mem.path(path, path_len)?;
        let (dir, _) = dir_of(fds, fd, rights::PATH_CREATE_DIRECTORY)?;
        Ok(vfs.create_dir(dir, &path)?)
    })
}

pub(crate) fn path_filestat_get(
    mut env: FunctionEnvMut<'_, WasiCtx>,
    fd: i32,
    flags: i32,
    path: i32,
    path_len: i32,
    out: i32,
) -> Result<Errno, HostStop> {
    with_fs(&mut env, |fds, vfs, mem| {
        let path = mem.path(path, path_len)?;
        let (dir, _) = dir_of(fds, fd, rights::PATH_FILESTAT_GET)?;
        let ino = vfs.resolve(dir, &path, flags & 1 != 0)?.ino.ok_or(ENOENT)?;
        let st = vfs.stat(ino)?;
        mem.write(out as u32, &filestat(Some(&st)))
    })
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn path_filestat_set_times(
    mut env: FunctionEnvMut<'_, WasiCtx>,
    fd: i32,
    flags: i32,
    path: i32,
    path_len: i32,
    atim: i64,
    mtim: i64,
    fst: i32,
) -> Result<Errno, HostStop> {
    with_fs(&mut env, |fds, vfs, mem| {
        let path = mem.path(path, path_len)?;
        let t = times(atim, mtim, fst)?;
        let (dir, _) = dir_of(fds, fd, rights::PATH_FILESTAT_SET_TIMES)?;
        let ino = vfs.resolve(dir, &path, flags & 1 != 0)?.ino.ok_or(ENOENT)?;
        Ok(vfs.set_times(ino, t)?)
    })
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn path_link(
    mut env: FunctionEnvMut<'_, WasiCtx>,
    old_fd: i32,
    old_flags: i32,
    old_path: i32,
    old_len: i32,
    new_fd: i32,
    new_path: i32,
    new_len: i32,
) -> Result<Errno, HostStop> {
    with_fs(&mut env, |fds, vfs, mem| {
        let old_path = mem.path(old_path, old_len)?;
        let new_path = mem.path(new_path, new_len)?;
        let (src, _) = dir_of(fds, old_fd, rights::PATH_LINK_SOURCE)?;
        let (dst, _) = dir_of(fds, new_fd, rights::PATH_LINK_TARGET)?;
        Ok(vfs.link(src, &old_path, old_flags & 1 != 0, dst, &new_path)?)
    })
}

pub(crate) fn path_readlink(
    mut env: FunctionEnvMut<'_, WasiCtx>,
    fd: i32,
    path: i32,
    path_len: i32,
    buf: i32,
    buf_len: i32,
    used: i32,
) -> Result<Errno, HostStop> {
    with_fs(&mut env, |fds, vfs, mem| {
        let path = mem.path(path, path_len)?;
        let (dir, _) = dir_of(fds, fd, rights::PATH_READLINK)?;
        let target = vfs.readlink(dir, &path)?.as_bytes();
        // Like readlink(2): as much as fits, no NUL.
        let n = target.len().min(buf_len as u32 as usize);
        mem.write(buf as u32, &target[..n])?;
        mem.set_u32(used as u32, n as u32)
    })
}

pub(crate) fn path_remove_directory(
    mut env: FunctionEnvMut<'_, WasiCtx>,
    fd: i32,
    path: i32,
    path_len: i32,
) -> Result<Errno, HostStop> {
    with_fs(&mut env, |fds, vfs, mem| {
        let path = mem.path(path, path_len)?;
        let (dir, _) = dir_of(fds, fd, rights::PATH_REMOVE_DIRECTORY)?;
        Ok(vfs.remove_dir(dir, &path)?)
    })
}

pub(crate) fn path_rename(
    mut env: FunctionEnvMut<'_, WasiCtx>,
    fd: i32,
    old_path: i32,
    old_len: i32,
    new_fd: i32,
    new_path: i32,
    new_len: i32,
) -> Result<Errno, HostStop> {
    with_fs(&mut env, |fds, vfs, mem| {
        let old_path = mem.path(old_path, old_len)?;
        let new_path = mem.path(new_path, new_len)?;
        let (src, _) = dir_of(fds, fd, rights::PATH_RENAME_SOURCE)?;
        let (dst, _) = dir_of(fds, new_fd, rights::PATH_RENAME_TARGET)?;
        Ok(vfs.rename(src, &old_path, dst, &new_path)?)
    })
}

pub(crate) fn path_symlink(
    mut env: FunctionEnvMut<'_, WasiCtx>,
    old_path: i32,
    old_len: i32,
    fd: i32,
    new_path: i32,
    new_len: i32,
) -> Result<Errno, HostStop> {
    with_fs(&mut env, |fds, vfs, mem| {
        let target = mem.path(old_path, old_len)?;
        let new_path = mem.path(new_path, new_len)?;
        let (dir, _) = dir_of(fds, fd, rights::PATH_SYMLINK)?;
        Ok(vfs.symlink(&target, dir, &new_path)?)
    })
}

pub(crate) fn path_unlink_file(
    mut env: FunctionEnvMut<'_, WasiCtx>,
    fd: i32,
    path: i32,
    path_len: i32,
) -> Result<Errno, HostStop> {
    with_fs(&mut env, |fds, vfs, mem| {
        let path = mem.path(path, path_len)?;
        let (dir, _) = dir_of(fds, fd, rights::PATH_UNLINK_FILE)?;
        Ok(vfs.unlink(dir, &path)?)
    })
}
