//! Socket calls. Orb gives functions no sockets, so every descriptor is
//! either not open (`EBADF`) or not a socket (`ENOTSOCK`), as the
//! specification says for each case.

use wasmer::FunctionEnvMut;

use super::errno::{ENOTSOCK, Errno};
use super::{HostStop, WasiCtx};

fn not_a_socket(env: &FunctionEnvMut<'_, WasiCtx>, fd: i32) -> Result<Errno, HostStop> {
    let ctx = env.data();
    ctx.check_deadline()?;
    Ok(match ctx.fds.get(fd) {
        Ok(_) => ENOTSOCK,
        Err(e) => e,
    })
}

pub(crate) fn sock_accept(
    env: FunctionEnvMut<'_, WasiCtx>,
    fd: i32,
    _flags: i32,
    _fd_out: i32,
) -> Result<Errno, HostStop> {
    not_a_socket(&env, fd)
}

pub(crate) fn sock_recv(
    env: FunctionEnvMut<'_, WasiCtx>,
    fd: i32,
    _iovs: i32,
    _iovs_len: i32,
    _flags: i32,
    _len_out: i32,
    _flags_out: i32,
) -> Result<Errno, HostStop> {
    not_a_socket(&env, fd)
}

pub(crate) fn sock_send(
    env: FunctionEnvMut<'_, WasiCtx>,
    fd: i32,
    _iovs: i32,
    _iovs_len: i32,
    _flags: i32,
    _len_out: i32,
) -> Result<Errno, HostStop> {
    not_a_socket(&env, fd)
}

pub(crate) fn sock_shutdown(
    env: FunctionEnvMut<'_, WasiCtx>,
    fd: i32,
    _how: i32,
) -> Result<Errno, HostStop> {
    not_a_socket(&env, fd)
}
