//! Bounds-checked access to guest memory.

use wasmer::MemoryView;

use super::Fail;
use super::errno::{EFAULT, EILSEQ, EINVAL, ENAMETOOLONG};

/// Most iovecs one read or write may pass (Linux's IOV_MAX). Bounds host
/// work per call, since host code cannot be interrupted by the watchdog.
pub(crate) const IOV_MAX: u32 = 1024;

/// Longest path argument read from the guest (PATH_MAX).
const MAX_PATH_ARG: u32 = 4096;

/// Bounds-checked access to guest memory.
pub(crate) struct Mem<'a>(pub(crate) MemoryView<'a>);

impl Mem<'_> {
    pub(crate) fn check(&self, ptr: u32, len: u64) -> Result<(), Fail> {
        if u64::from(ptr) + len > self.0.data_size() {
            return Err(Fail::Errno(EFAULT));
        }
        Ok(())
    }

    pub(crate) fn read(&self, ptr: u32, len: u32) -> Result<Vec<u8>, Fail> {
        self.check(ptr, u64::from(len))?;
        let mut buf = vec![0u8; len as usize];
        self.0
            .read(u64::from(ptr), &mut buf)
            .map_err(|_| Fail::Errno(EFAULT))?;
        Ok(buf)
    }

    /// Append `len` bytes at `ptr` to `out`, checking bounds before
    /// allocating so a bogus length cannot make the host allocate.
    pub(crate) fn read_into(&self, ptr: u32, len: u32, out: &mut Vec<u8>) -> Result<(), Fail> {
        self.check(ptr, u64::from(len))?;
        let start = out.len();
        out.resize(start + len as usize, 0);
        if self.0.read(u64::from(ptr), &mut out[start..]).is_err() {
            out.truncate(start);
            return Err(Fail::Errno(EFAULT));
        }
        Ok(())
    }

    pub(crate) fn write(&self, ptr: u32, data: &[u8]) -> Result<(), Fail> {
        self.check(ptr, data.len() as u64)?;
        self.0
            .write(u64::from(ptr), data)
            .map_err(|_| Fail::Errno(EFAULT))
    }

    pub(crate) fn u32_at(&self, ptr: u32) -> Result<u32, Fail> {
        let b = self.read(ptr, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64_at(&self, ptr: u32) -> Result<u64, Fail> {
        let b = self.read(ptr, 8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(&b);
        Ok(u64::from_le_bytes(a))
    }

    pub(crate) fn set_u32(&self, ptr: u32, v: u32) -> Result<(), Fail> {
        self.write(ptr, &v.to_le_bytes())
    }

    pub(crate) fn set_u64(&self, ptr: u32, v: u64) -> Result<(), Fail> {
        self.write(ptr, &v.to_le_bytes())
    }

    /// The iovecs (pointer, length) of an `iovs`/`iovs_len` pair.
    pub(crate) fn iovecs(&self, iovs: i32, iovs_len: i32) -> Result<Vec<(u32, u32)>, Fail> {
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

    /// The path argument `ptr`/`len`: at most 4096 bytes of UTF-8.
    pub(crate) fn path(&self, ptr: i32, len: i32) -> Result<String, Fail> {
        let len = len as u32;
        if len > MAX_PATH_ARG {
            return Err(Fail::Errno(ENAMETOOLONG));
        }
        let bytes = self.read(ptr as u32, len)?;
        String::from_utf8(bytes).map_err(|_| Fail::Errno(EILSEQ))
    }
}
