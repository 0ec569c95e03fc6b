//! The raw `orb` imports behind safe functions, and stand-ins for targets
//! that have no Orb host (native builds, so that `cargo test` and doc tests
//! of code using this crate work): those answer `UNAVAILABLE`.
//!
//! Every function here takes Rust slices and passes their pointer and
//! length, so the host only ever sees memory the guest owns.

use crate::Error;
use crate::abi::{NONE_LEN, code};

/// Length of `s` as the ABI's `i32`, or INVALID when it does not fit
/// (impossible on wasm32, where a slice is at most `i32::MAX` bytes).
fn len(s: &[u8]) -> Result<i32, Error> {
    i32::try_from(s.len()).map_err(|_| Error::local(code::INVALID, "argument over 2 GiB"))
}

/// Pointer and length of an optional value; `None` is [`NONE_LEN`].
fn opt(v: Option<&[u8]>) -> Result<(*const u8, i32), Error> {
    match v {
        Some(v) => Ok((v.as_ptr(), len(v)?)),
        None => Ok((std::ptr::null(), NONE_LEN)),
    }
}

#[cfg(target_arch = "wasm32")]
mod imports {
    // Bodies are provided by the host through the `orb` import module.
    #[link(wasm_import_module = "orb")]
    #[allow(unsafe_code)]
    unsafe extern "C" {
        pub(super) fn abi_version() -> i32;
        pub(super) fn result_len() -> i32;
        pub(super) fn result_read(ptr: *mut u8, len: i32) -> i32;
        pub(super) fn kv_get(key: *const u8, key_len: i32) -> i32;
        pub(super) fn kv_set(key: *const u8, key_len: i32, value: *const u8, value_len: i32)
        -> i32;
        pub(super) fn kv_delete(key: *const u8, key_len: i32) -> i32;
        pub(super) fn kv_increment(key: *const u8, key_len: i32, delta: i64, out: *mut u8) -> i32;
        pub(super) fn kv_compare_and_swap(
            key: *const u8,
            key_len: i32,
            expected: *const u8,
            expected_len: i32,
            new: *const u8,
            new_len: i32,
        ) -> i32;
        pub(super) fn http_fetch(request: *const u8, request_len: i32) -> i32;
        pub(super) fn call(request: *const u8, request_len: i32) -> i32;
    }
}

/// Stand-ins with the same signatures for targets without an Orb host.
#[cfg(not(target_arch = "wasm32"))]
mod imports {
    use crate::abi::code::UNAVAILABLE;

    pub(super) fn abi_version() -> i32 {
        0
    }
    pub(super) fn result_len() -> i32 {
        0
    }
    pub(super) fn result_read(_: *mut u8, _: i32) -> i32 {
        UNAVAILABLE
    }
    pub(super) fn kv_get(_: *const u8, _: i32) -> i32 {
        UNAVAILABLE
    }
    pub(super) fn kv_set(_: *const u8, _: i32, _: *const u8, _: i32) -> i32 {
        UNAVAILABLE
    }
    pub(super) fn kv_delete(_: *const u8, _: i32) -> i32 {
        UNAVAILABLE
    }
    pub(super) fn kv_increment(_: *const u8, _: i32, _: i64, _: *mut u8) -> i32 {
        UNAVAILABLE
    }
    pub(super) fn kv_compare_and_swap(
        _: *const u8,
        _: i32,
        _: *const u8,
        _: i32,
        _: *const u8,
        _: i32,
    ) -> i32 {
        UNAVAILABLE
    }
    pub(super) fn http_fetch(_: *const u8, _: i32) -> i32 {
        UNAVAILABLE
    }
    pub(super) fn call(_: *const u8, _: i32) -> i32 {
        UNAVAILABLE
    }
}

/// Run an import. On wasm32 the imports are foreign functions.
#[cfg(target_arch = "wasm32")]
macro_rules! host {
    ($e:expr) => {{
        #[allow(unsafe_code)]
        // SAFETY: the `orb` imports only read and write guest memory
        // through the pointer/length pairs they are given, every pair
        // comes from a live slice (or is NONE_LEN with a null pointer,
        // which the host does not dereference), and the host
        // bounds-checks each one against linear memory.
        let r = unsafe { $e };
        r
    }};
}

/// Run an import. Natively the stand-ins are ordinary functions.
#[cfg(not(target_arch = "wasm32"))]
macro_rules! host {
    ($e:expr) => {
        $e
    };
}

/// The host's ABI version; 0 when there is no Orb host.
pub(crate) fn abi_version() -> i32 {
    host!(imports::abi_version())
}

/// The result buffer of the last call: its data on success, the host's
/// detail message on failure.
pub(crate) fn take_result() -> Vec<u8> {
    if cfg!(not(target_arch = "wasm32")) {
        return b"not running on an Orb host (this is a native build; Orb functions are built for wasm32-wasip1)".to_vec();
    }
    let n = host!(imports::result_len());
    let Ok(n) = usize::try_from(n) else {
        return Vec::new();
    };
    let mut buf = vec![0u8; n];
    let Ok(len) = i32::try_from(buf.len()) else {
        return Vec::new();
    };
    if host!(imports::result_read(buf.as_mut_ptr(), len)) != code::OK {
        buf.clear();
    }
    buf
}

/// `Ok(())` on OK, else the error with the host's detail.
pub(crate) fn check(rc: i32) -> Result<(), Error> {
    if rc == code::OK {
        Ok(())
    } else {
        Err(Error::from_host(rc))
    }
}

pub(crate) fn kv_get(key: &[u8]) -> Result<i32, Error> {
    Ok(host!(imports::kv_get(key.as_ptr(), len(key)?)))
}

pub(crate) fn kv_set(key: &[u8], value: &[u8]) -> Result<i32, Error> {
    Ok(host!(imports::kv_set(
        key.as_ptr(),
        len(key)?,
        value.as_ptr(),
        len(value)?
    )))
}

pub(crate) fn kv_delete(key: &[u8]) -> Result<i32, Error> {
    Ok(host!(imports::kv_delete(key.as_ptr(), len(key)?)))
}

pub(crate) fn kv_increment(key: &[u8], delta: i64) -> Result<(i32, i64), Error> {
    let mut out = [0u8; 8];
    let rc = host!(imports::kv_increment(
        key.as_ptr(),
        len(key)?,
        delta,
        out.as_mut_ptr()
    ));
    Ok((rc, i64::from_le_bytes(out)))
}

pub(crate) fn kv_compare_and_swap(
    key: &[u8],
    expected: Option<&[u8]>,
    new: Option<&[u8]>,
) -> Result<i32, Error> {
    let (e_ptr, e_len) = opt(expected)?;
    let (n_ptr, n_len) = opt(new)?;
    Ok(host!(imports::kv_compare_and_swap(
        key.as_ptr(),
        len(key)?,
        e_ptr,
        e_len,
        n_ptr,
        n_len
    )))
}

pub(crate) fn http_fetch(request: &[u8]) -> Result<i32, Error> {
    Ok(host!(imports::http_fetch(request.as_ptr(), len(request)?)))
}

pub(crate) fn call(request: &[u8]) -> Result<i32, Error> {
    Ok(host!(imports::call(request.as_ptr(), len(request)?)))
}
