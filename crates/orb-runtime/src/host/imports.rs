//! The `orb` import functions: guest memory access, budgets, fuel, and the
//! result buffer around calls into [`HostServices`].
//!
//! Every pointer/length pair is checked against the size limit first (so a
//! huge length is refused before anything is allocated) and then against
//! linear memory; out-parameters are checked before the service runs, so a
//! bad pointer never loses the effect of an operation that happened.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Instant;

use orb_guest::abi::{self, NONE_LEN, code};
use wasmer::{
    AsStoreMut, Function, FunctionEnv, FunctionEnvMut, Global, Instance, Memory, MemoryView, Value,
};

use super::{CallRequest, CasOutcome, HostCall, HostError, HostLimits, HostServices, HttpRequest};
use crate::wasi::{HostStop, timeout_stop};
use crate::{FUEL_EXHAUSTED, FUEL_REMAINING};

/// Longest error detail put in the result buffer; a service's message is
/// cut (at a character boundary) to fit.
const MAX_DETAIL: usize = 4096;

/// Fuel of the bookkeeping imports (`abi_version`, `result_len`,
/// `result_read`), on top of the per-byte charge.
const FUEL_PER_SMALL_CALL: u64 = 100;

/// Per-call state of the `orb` imports.
pub(crate) struct HostCtx {
    memory: Option<Memory>,
    /// The metering globals (remaining, exhausted).
    fuel: Option<(Global, Global)>,
    /// The call's fuel budget, for the message when it runs out.
    fuel_total: u64,
    services: Option<Arc<dyn HostServices>>,
    limits: HostLimits,
    deadline: Instant,
    /// Data of the last operation, or its error detail.
    result: Vec<u8>,
    ops: u32,
    http: u32,
    calls: u32,
    moved: u64,
}

/// Failure of an operation: a code and its detail message for the result
/// buffer, or the end of the run.
enum Fail {
    Code(i32, Vec<u8>),
    Stop(HostStop),
}

impl From<HostStop> for Fail {
    fn from(s: HostStop) -> Self {
        Fail::Stop(s)
    }
}

impl From<HostError> for Fail {
    fn from(e: HostError) -> Self {
        Fail::Code(e.code(), e.to_string().into_bytes())
    }
}

fn fail(code: i32, msg: impl Into<String>) -> Fail {
    Fail::Code(code, msg.into().into_bytes())
}

/// Which per-kind budget an operation counts against.
#[derive(Clone, Copy)]
enum Kind {
    Kv,
    Http,
    Call,
}

impl HostCtx {
    pub(crate) fn new(
        services: Option<Arc<dyn HostServices>>,
        limits: HostLimits,
        deadline: Instant,
        fuel_total: u64,
    ) -> Self {
        HostCtx {
            memory: None,
            fuel: None,
            fuel_total,
            services,
            limits,
            deadline,
            result: Vec::new(),
            ops: 0,
            http: 0,
            calls: 0,
            moved: 0,
        }
    }

    /// Take the instance's memory and metering globals, right after
    /// instantiation.
    pub(crate) fn attach(&mut self, instance: &Instance) {
        self.memory = instance.exports.get_memory("memory").ok().cloned();
        let global = |name| instance.exports.get_global(name).ok().cloned();
        self.fuel = global(FUEL_REMAINING).zip(global(FUEL_EXHAUSTED));
    }

    /// Count an operation against the call's budgets.
    fn count(&mut self, kind: Kind) -> Result<(), Fail> {
        let l = &self.limits;
        self.ops = self.ops.saturating_add(1);
        if self.ops > l.max_ops {
            return Err(fail(
                code::LIMIT,
                format!("more than {} host operations in one call", l.max_ops),
            ));
        }
        let (n, max, what) = match kind {
            Kind::Kv => return Ok(()),
            Kind::Http => (&mut self.http, l.max_http_requests, "HTTP requests"),
            Kind::Call => (&mut self.calls, l.max_calls, "nested calls"),
        };
        *n = n.saturating_add(1);
        if *n > max {
            return Err(fail(
                code::LIMIT,
                format!("more than {max} {what} in one call"),
            ));
        }
        Ok(())
    }

    /// Count `n` bytes moved between guest and host.
    fn count_bytes(&mut self, n: usize) -> Result<(), Fail> {
        let total = self.moved.saturating_add(n as u64);
        if total > self.limits.max_total_bytes {
            return Err(fail(
                code::LIMIT,
                format!(
                    "more than {} bytes moved through host calls in one call",
                    self.limits.max_total_bytes
                ),
            ));
        }
        self.moved = total;
        Ok(())
    }
}

/// Take `points` of fuel, or end the run when there is not enough.
fn charge(
    fuel: &Option<(Global, Global)>,
    total: u64,
    store: &mut impl AsStoreMut,
    points: u64,
) -> Result<(), HostStop> {
    let Some((remaining, exhausted)) = fuel else {
        return Ok(());
    };
    // The middleware keeps the points in an i64 it compares unsigned.
    let left = match remaining.get(store) {
        Value::I64(v) => v as u64,
        _ => 0,
    };
    let stop = || HostStop::Limit {
        limit: "fuel",
        detail: format!("used all {total} fuel (host calls cost fuel too)"),
    };
    if left < points {
        // Mark the budget spent the way the middleware would, so the run
        // reports all of it as used.
        remaining.set(store, Value::I64(0)).map_err(|_| stop())?;
        exhausted.set(store, Value::I32(1)).map_err(|_| stop())?;
        return Err(stop());
    }
    remaining
        .set(store, Value::I64((left - points) as i64))
        .map_err(|_| stop())
}

/// Bounds-checked guest memory.
struct Mem<'a>(MemoryView<'a>);

impl Mem<'_> {
    fn check(&self, ptr: i32, len: u64, what: &str) -> Result<u64, Fail> {
        let start = u64::from(ptr as u32);
        let size = self.0.data_size();
        if start.saturating_add(len) > size {
            return Err(fail(
                code::INVALID,
                format!("{what}: {len} bytes at {start} run past the end of memory ({size} bytes)"),
            ));
        }
        Ok(start)
    }

    /// `len` bytes at `ptr`, at most `max` of them: a longer `len` is
    /// refused before anything is allocated.
    fn read(&self, ptr: i32, len: i32, max: u32, what: &str) -> Result<Vec<u8>, Fail> {
        // Lengths are unsigned; a negative one reads as over 2 GiB.
        let len = len as u32;
        if len > max {
            return Err(fail(
                code::TOO_LARGE,
                format!("{what} of {len} bytes; the limit is {max}"),
            ));
        }
        let start = self.check(ptr, u64::from(len), what)?;
        let mut buf = vec![0u8; len as usize];
        self.0
            .read(start, &mut buf)
            .map_err(|e| fail(code::INVALID, format!("{what}: {e}")))?;
        Ok(buf)
    }

    fn write(&self, ptr: i32, data: &[u8], what: &str) -> Result<(), Fail> {
        let start = self.check(ptr, data.len() as u64, what)?;
        self.0
            .write(start, data)
            .map_err(|e| fail(code::INVALID, format!("{what}: {e}")))
    }
}

/// What an operation gives back: its code (OK, or CONFLICT with the
/// current value), data for the result buffer, and bytes to write at an
/// out-pointer once everything succeeded.
struct Done {
    code: i32,
    result: Vec<u8>,
    out: Option<(i32, [u8; 8])>,
}

impl Done {
    fn data(result: Vec<u8>) -> Self {
        Done {
            code: code::OK,
            result,
            out: None,
        }
    }
}

/// `msg` cut to [`MAX_DETAIL`] bytes without splitting a character.
fn detail(mut msg: Vec<u8>) -> Vec<u8> {
    if msg.len() > MAX_DETAIL {
        let mut end = MAX_DETAIL;
        // UTF-8 continuation bytes are 0b10xx_xxxx.
        while end > 0 && msg[end] & 0xc0 == 0x80 {
            end -= 1;
        }
        msg.truncate(end);
    }
    msg
}

/// The common frame of every service import: deadline, fuel, budgets,
/// services present, memory present, then `op`, then size and deadline
/// checks on what it produced. The code goes to the guest, the data or
/// detail into the result buffer.
fn service(
    env: &mut FunctionEnvMut<'_, HostCtx>,
    kind: Kind,
    op: impl FnOnce(&mut HostCtx, &Mem<'_>, &dyn HostServices) -> Result<Done, Fail>,
) -> Result<i32, HostStop> {
    let (ctx, mut store) = env.data_and_store_mut();
    if Instant::now() >= ctx.deadline {
        return Err(timeout_stop());
    }
    charge(
        &ctx.fuel,
        ctx.fuel_total,
        &mut store,
        ctx.limits.fuel_per_op,
    )?;
    ctx.result.clear();
    let moved_before = ctx.moved;

    let outcome = (|| {
        let Some(services) = ctx.services.clone() else {
            return Err(fail(code::UNAVAILABLE, "this node offers no host services"));
        };
        ctx.count(kind)?;
        let Some(memory) = ctx.memory.clone() else {
            return Err(fail(code::INVALID, "the module exports no memory"));
        };
        let mem = Mem(memory.view(&store));
        let done = catch_unwind(AssertUnwindSafe(|| op(ctx, &mem, services.as_ref())))
            .unwrap_or_else(|_| Err(fail(code::FAILED, "host service failed internally")))?;
        if Instant::now() >= ctx.deadline {
            return Err(Fail::Stop(timeout_stop()));
        }
        // result_len answers an i32, so never more than that.
        let max = ctx.limits.max_response_bytes.min(i32::MAX as u32);
        if done.result.len() > max as usize {
            return Err(fail(
                code::TOO_LARGE,
                format!("result of {} bytes; the limit is {max}", done.result.len()),
            ));
        }
        ctx.count_bytes(done.result.len())?;
        if let Some((ptr, bytes)) = done.out {
            mem.write(ptr, &bytes, "out pointer")?;
        }
        Ok((done.code, done.result))
    })();

    let (rc, result) = match outcome {
        Ok(done) => done,
        Err(Fail::Code(rc, msg)) => (rc, detail(msg)),
        Err(Fail::Stop(stop)) => return Err(stop),
    };
    // Every byte moved costs fuel: the request read and the result.
    let moved = ctx.moved.saturating_sub(moved_before);
    let points = ctx.limits.fuel_per_byte.saturating_mul(moved);
    charge(&ctx.fuel, ctx.fuel_total, &mut store, points)?;
    ctx.result = result;
    Ok(rc)
}

/// Read a request argument, counting its bytes against the budget before
/// reading them.
fn arg(
    ctx: &mut HostCtx,
    mem: &Mem<'_>,
    ptr: i32,
    len: i32,
    max: u32,
    what: &str,
) -> Result<Vec<u8>, Fail> {
    // Lengths over `max` are refused by `read`, without counting.
    if len as u32 <= max {
        ctx.count_bytes(len as u32 as usize)?;
    }
    mem.read(ptr, len, max, what)
}

fn key(ctx: &mut HostCtx, mem: &Mem<'_>, ptr: i32, len: i32) -> Result<Vec<u8>, Fail> {
    let max = ctx.limits.max_key_bytes;
    let key = arg(ctx, mem, ptr, len, max, "key")?;
    if key.is_empty() {
        return Err(fail(code::INVALID, "empty key"));
    }
    Ok(key)
}

fn value(
    ctx: &mut HostCtx,
    mem: &Mem<'_>,
    ptr: i32,
    len: i32,
    what: &str,
) -> Result<Vec<u8>, Fail> {
    let max = ctx.limits.max_value_bytes;
    arg(ctx, mem, ptr, len, max, what)
}

/// An optional value: [`NONE_LEN`] means none.
fn opt_value(
    ctx: &mut HostCtx,
    mem: &Mem<'_>,
    ptr: i32,
    len: i32,
    what: &str,
) -> Result<Option<Vec<u8>>, Fail> {
    if len == NONE_LEN {
        return Ok(None);
    }
    value(ctx, mem, ptr, len, what).map(Some)
}

fn cx(ctx: &HostCtx) -> HostCall {
    HostCall::new(ctx.deadline, ctx.limits.max_response_bytes as usize)
}

fn encode(resp: super::Response) -> Result<Done, Fail> {
    resp.encode()
        .map(Done::data)
        .map_err(|e| fail(code::FAILED, format!("host response unusable: {e}")))
}

fn kv_get(mut env: FunctionEnvMut<'_, HostCtx>, k_ptr: i32, k_len: i32) -> Result<i32, HostStop> {
    service(&mut env, Kind::Kv, |ctx, mem, svc| {
        let key = key(ctx, mem, k_ptr, k_len)?;
        match svc.kv_get(&cx(ctx), &key)? {
            Some(v) => Ok(Done::data(v)),
            None => Err(fail(code::NOT_FOUND, "no such key")),
        }
    })
}

fn kv_set(
    mut env: FunctionEnvMut<'_, HostCtx>,
    k_ptr: i32,
    k_len: i32,
    v_ptr: i32,
    v_len: i32,
) -> Result<i32, HostStop> {
    service(&mut env, Kind::Kv, |ctx, mem, svc| {
        let key = key(ctx, mem, k_ptr, k_len)?;
        let value = value(ctx, mem, v_ptr, v_len, "value")?;
        svc.kv_set(&cx(ctx), &key, &value)?;
        Ok(Done::data(Vec::new()))
    })
}

fn kv_delete(
    mut env: FunctionEnvMut<'_, HostCtx>,
    k_ptr: i32,
    k_len: i32,
) -> Result<i32, HostStop> {
    service(&mut env, Kind::Kv, |ctx, mem, svc| {
        let key = key(ctx, mem, k_ptr, k_len)?;
        svc.kv_delete(&cx(ctx), &key)?;
        Ok(Done::data(Vec::new()))
    })
}

fn kv_increment(
    mut env: FunctionEnvMut<'_, HostCtx>,
    k_ptr: i32,
    k_len: i32,
    delta: i64,
    out: i32,
) -> Result<i32, HostStop> {
    service(&mut env, Kind::Kv, |ctx, mem, svc| {
        let key = key(ctx, mem, k_ptr, k_len)?;
        // Checked now: once the service has incremented, the guest must be
        // able to learn the new value.
        mem.check(out, 8, "out pointer")?;
        let n = svc.kv_increment(&cx(ctx), &key, delta)?;
        Ok(Done {
            out: Some((out, n.to_le_bytes())),
            ..Done::data(Vec::new())
        })
    })
}

fn kv_compare_and_swap(
    mut env: FunctionEnvMut<'_, HostCtx>,
    k_ptr: i32,
    k_len: i32,
    e_ptr: i32,
    e_len: i32,
    n_ptr: i32,
    n_len: i32,
) -> Result<i32, HostStop> {
    service(&mut env, Kind::Kv, |ctx, mem, svc| {
        let key = key(ctx, mem, k_ptr, k_len)?;
        let expected = opt_value(ctx, mem, e_ptr, e_len, "expected value")?;
        let new = opt_value(ctx, mem, n_ptr, n_len, "new value")?;
        match svc.kv_compare_and_swap(&cx(ctx), &key, expected.as_deref(), new.as_deref())? {
            CasOutcome::Swapped => Ok(Done::data(Vec::new())),
            CasOutcome::Conflict { current } => Ok(Done {
                code: code::CONFLICT,
                result: abi::encode_current(current.as_deref()),
                out: None,
            }),
        }
    })
}

fn http_fetch(mut env: FunctionEnvMut<'_, HostCtx>, ptr: i32, len: i32) -> Result<i32, HostStop> {
    service(&mut env, Kind::Http, |ctx, mem, svc| {
        let max = ctx.limits.max_request_bytes;
        let blob = arg(ctx, mem, ptr, len, max, "request")?;
        let req = HttpRequest::decode(&blob)
            .and_then(|r| r.check().map(|()| r))
            .map_err(|e| fail(code::INVALID, e.0))?;
        let mut call = cx(ctx);
        call.deadline = call.deadline.min(Instant::now() + ctx.limits.http_timeout);
        encode(svc.http_fetch(&call, req)?)
    })
}

fn call(mut env: FunctionEnvMut<'_, HostCtx>, ptr: i32, len: i32) -> Result<i32, HostStop> {
    service(&mut env, Kind::Call, |ctx, mem, svc| {
        let max = ctx.limits.max_request_bytes;
        let blob = arg(ctx, mem, ptr, len, max, "request")?;
        let req = CallRequest::decode(&blob)
            .and_then(|r| r.check().map(|()| r))
            .map_err(|e| fail(code::INVALID, e.0))?;
        encode(svc.call(&cx(ctx), req)?)
    })
}

/// Deadline and fuel for the bookkeeping imports.
fn small(env: &mut FunctionEnvMut<'_, HostCtx>, bytes: usize) -> Result<(), HostStop> {
    let (ctx, mut store) = env.data_and_store_mut();
    if Instant::now() >= ctx.deadline {
        return Err(timeout_stop());
    }
    let points = ctx
        .limits
        .fuel_per_byte
        .saturating_mul(bytes as u64)
        .saturating_add(FUEL_PER_SMALL_CALL);
    charge(&ctx.fuel, ctx.fuel_total, &mut store, points)
}

fn abi_version(mut env: FunctionEnvMut<'_, HostCtx>) -> Result<i32, HostStop> {
    small(&mut env, 0)?;
    Ok(abi::ABI_VERSION)
}

fn result_len(mut env: FunctionEnvMut<'_, HostCtx>) -> Result<i32, HostStop> {
    small(&mut env, 0)?;
    // Results are capped at max_response_bytes, itself a u32; saturate
    // rather than wrap should a configuration allow more than 2 GiB.
    Ok(i32::try_from(env.data().result.len()).unwrap_or(i32::MAX))
}

/// Copy the first `len` bytes of the result buffer to `ptr`. The buffer
/// stays as it is until the next service operation.
fn result_read(mut env: FunctionEnvMut<'_, HostCtx>, ptr: i32, len: i32) -> Result<i32, HostStop> {
    let want = len as u32 as usize;
    let have = env.data().result.len();
    small(&mut env, want.min(have))?;
    if want > have {
        return Ok(code::INVALID);
    }
    let (ctx, store) = env.data_and_store_mut();
    let Some(memory) = ctx.memory.clone() else {
        return Ok(code::INVALID);
    };
    let mem = Mem(memory.view(&store));
    match mem.write(ptr, &ctx.result[..want], "result buffer") {
        Ok(()) => Ok(code::OK),
        Err(Fail::Code(rc, _)) => Ok(rc),
        Err(Fail::Stop(s)) => Err(s),
    }
}

/// The host function for `orb` function `name`, if it exists.
pub(crate) fn make(
    store: &mut impl AsStoreMut,
    env: &FunctionEnv<HostCtx>,
    name: &str,
) -> Option<Function> {
    let f = match name {
        "abi_version" => Function::new_typed_with_env(store, env, abi_version),
        "result_len" => Function::new_typed_with_env(store, env, result_len),
        "result_read" => Function::new_typed_with_env(store, env, result_read),
        "kv_get" => Function::new_typed_with_env(store, env, kv_get),
        "kv_set" => Function::new_typed_with_env(store, env, kv_set),
        "kv_delete" => Function::new_typed_with_env(store, env, kv_delete),
        "kv_increment" => Function::new_typed_with_env(store, env, kv_increment),
        "kv_compare_and_swap" => Function::new_typed_with_env(store, env, kv_compare_and_swap),
        "http_fetch" => Function::new_typed_with_env(store, env, http_fetch),
        "call" => Function::new_typed_with_env(store, env, call),
        _ => return None,
    };
    Some(f)
}
