//! WASI preview 1 errno values (from the witx), as the `i32` host functions
//! return.

/// An errno value.
pub(crate) type Errno = i32;

pub(crate) const SUCCESS: Errno = 0;
pub(crate) const EBADF: Errno = 8;
pub(crate) const EEXIST: Errno = 20;
pub(crate) const EFAULT: Errno = 21;
pub(crate) const EFBIG: Errno = 22;
pub(crate) const EILSEQ: Errno = 25;
pub(crate) const EINVAL: Errno = 28;
pub(crate) const EIO: Errno = 29;
pub(crate) const EISDIR: Errno = 31;
pub(crate) const ELOOP: Errno = 32;
pub(crate) const EMFILE: Errno = 33;
pub(crate) const ENAMETOOLONG: Errno = 37;
pub(crate) const ENOENT: Errno = 44;
pub(crate) const ENOSPC: Errno = 51;
pub(crate) const ENOTDIR: Errno = 54;
pub(crate) const ENOTEMPTY: Errno = 55;
pub(crate) const ENOTSOCK: Errno = 57;
pub(crate) const ENOTSUP: Errno = 58;
pub(crate) const EPERM: Errno = 63;
pub(crate) const ESPIPE: Errno = 70;
pub(crate) const ENOTCAPABLE: Errno = 76;
