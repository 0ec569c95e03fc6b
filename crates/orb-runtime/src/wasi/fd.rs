//! The descriptor table and WASI rights.
//!
//! Descriptors 0-2 are the standard streams; with files, 3 is the preopened
//! directory `/`. New descriptors take the lowest free number. Rights work
//! as preview 1 specifies: a descriptor opened through a directory gets the
//! rights it asked for, limited to the directory's inheriting rights and to
//! what makes sense for its type; rights can be dropped
//! (`fd_fdstat_set_rights`), never regained; an operation without its right
//! fails with `ENOTCAPABLE`.

use std::collections::BTreeMap;

use super::errno::{EBADF, EMFILE, ENOTCAPABLE, Errno};
use crate::vfs::Ino;

/// Rights bits from the preview 1 witx.
#[allow(dead_code)]
pub(crate) mod rights {
    pub(crate) const FD_DATASYNC: u64 = 1 << 0;
    pub(crate) const FD_READ: u64 = 1 << 1;
    pub(crate) const FD_SEEK: u64 = 1 << 2;
    pub(crate) const FD_FDSTAT_SET_FLAGS: u64 = 1 << 3;
    pub(crate) const FD_SYNC: u64 = 1 << 4;
    pub(crate) const FD_TELL: u64 = 1 << 5;
    pub(crate) const FD_WRITE: u64 = 1 << 6;
    pub(crate) const FD_ADVISE: u64 = 1 << 7;
    pub(crate) const FD_ALLOCATE: u64 = 1 << 8;
    pub(crate) const PATH_CREATE_DIRECTORY: u64 = 1 << 9;
    pub(crate) const PATH_CREATE_FILE: u64 = 1 << 10;
    pub(crate) const PATH_LINK_SOURCE: u64 = 1 << 11;
    pub(crate) const PATH_LINK_TARGET: u64 = 1 << 12;
    pub(crate) const PATH_OPEN: u64 = 1 << 13;
    pub(crate) const FD_READDIR: u64 = 1 << 14;
    pub(crate) const PATH_READLINK: u64 = 1 << 15;
    pub(crate) const PATH_RENAME_SOURCE: u64 = 1 << 16;
    pub(crate) const PATH_RENAME_TARGET: u64 = 1 << 17;
    pub(crate) const PATH_FILESTAT_GET: u64 = 1 << 18;
    pub(crate) const PATH_FILESTAT_SET_SIZE: u64 = 1 << 19;
    pub(crate) const PATH_FILESTAT_SET_TIMES: u64 = 1 << 20;
    pub(crate) const FD_FILESTAT_GET: u64 = 1 << 21;
    pub(crate) const FD_FILESTAT_SET_SIZE: u64 = 1 << 22;
    pub(crate) const FD_FILESTAT_SET_TIMES: u64 = 1 << 23;
    pub(crate) const PATH_SYMLINK: u64 = 1 << 24;
    pub(crate) const PATH_REMOVE_DIRECTORY: u64 = 1 << 25;
    pub(crate) const PATH_UNLINK_FILE: u64 = 1 << 26;
    pub(crate) const POLL_FD_READWRITE: u64 = 1 << 27;

    /// Rights that apply to a regular file.
    pub(crate) const FILE: u64 = FD_DATASYNC
        | FD_READ
        | FD_SEEK
        | FD_FDSTAT_SET_FLAGS
        | FD_SYNC
        | FD_TELL
        | FD_WRITE
        | FD_ADVISE
        | FD_ALLOCATE
        | FD_FILESTAT_GET
        | FD_FILESTAT_SET_SIZE
        | FD_FILESTAT_SET_TIMES
        | POLL_FD_READWRITE;

    /// Rights that apply to a directory.
    pub(crate) const DIR: u64 = FD_DATASYNC
        | FD_FDSTAT_SET_FLAGS
        | FD_SYNC
        | PATH_CREATE_DIRECTORY
        | PATH_CREATE_FILE
        | PATH_LINK_SOURCE
        | PATH_LINK_TARGET
        | PATH_OPEN
        | FD_READDIR
        | PATH_READLINK
        | PATH_RENAME_SOURCE
        | PATH_RENAME_TARGET
        | PATH_FILESTAT_GET
        | PATH_FILESTAT_SET_SIZE
        | PATH_FILESTAT_SET_TIMES
        | FD_FILESTAT_GET
        | FD_FILESTAT_SET_TIMES
        | PATH_SYMLINK
        | PATH_REMOVE_DIRECTORY
        | PATH_UNLINK_FILE;

    /// Rights of standard input.
    pub(crate) const STDIN: u64 = FD_READ | POLL_FD_READWRITE;

    /// Rights of standard output and error.
    pub(crate) const STDOUT: u64 = FD_WRITE | POLL_FD_READWRITE;
}

/// `fdflags` bits.
pub(crate) mod fdflags {
    pub(crate) const APPEND: u16 = 1 << 0;
    pub(crate) const DSYNC: u16 = 1 << 1;
    pub(crate) const NONBLOCK: u16 = 1 << 2;
    pub(crate) const RSYNC: u16 = 1 << 3;
    pub(crate) const SYNC: u16 = 1 << 4;
    /// Every defined flag.
    pub(crate) const ALL: u16 = APPEND | DSYNC | NONBLOCK | RSYNC | SYNC;
}

/// What a descriptor refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Desc {
    Stdin,
    Stdout,
    Stderr,
    /// A directory; `preopen` for the one the call starts with.
    Dir {
        ino: Ino,
        preopen: bool,
    },
    /// A regular file (or, opened without following, nothing else: symlinks
    /// cannot be opened).
    File {
        ino: Ino,
        pos: u64,
        flags: u16,
    },
}

/// An open descriptor with its rights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FdEntry {
    pub(crate) desc: Desc,
    pub(crate) base: u64,
    pub(crate) inheriting: u64,
}

impl FdEntry {
    /// The inode behind the descriptor, if it is a file or directory.
    pub(crate) fn ino(&self) -> Option<Ino> {
        match self.desc {
            Desc::Dir { ino, .. } | Desc::File { ino, .. } => Some(ino),
            _ => None,
        }
    }

    /// Fail with `ENOTCAPABLE` unless the descriptor has all of `wanted`.
    pub(crate) fn require(&self, wanted: u64) -> Result<(), Errno> {
        if self.base & wanted == wanted {
            Ok(())
        } else {
            Err(ENOTCAPABLE)
        }
    }
}

/// The open descriptors of one call.
#[derive(Debug)]
pub(crate) struct FdTable {
    map: BTreeMap<u32, FdEntry>,
    /// Descriptors holding a file or directory.
    files: u32,
    max_files: u32,
}

impl FdTable {
    /// Standard streams, and the preopened root directory when given.
    pub(crate) fn new(max_files: u32, root: Option<Ino>) -> FdTable {
        let mut map = BTreeMap::new();
        let stdio = |desc, base| FdEntry {
            desc,
            base,
            inheriting: 0,
        };
        map.insert(0, stdio(Desc::Stdin, rights::STDIN));
        map.insert(1, stdio(Desc::Stdout, rights::STDOUT));
        map.insert(2, stdio(Desc::Stderr, rights::STDOUT));
        let mut files = 0;
        if let Some(ino) = root {
            map.insert(
                3,
                FdEntry {
                    desc: Desc::Dir { ino, preopen: true },
                    base: rights::DIR,
                    inheriting: rights::DIR | rights::FILE,
                },
            );
            files = 1;
        }
        FdTable {
            map,
            files,
            max_files,
        }
    }

    /// The entry for guest descriptor `fd`, or `EBADF`.
    pub(crate) fn get(&self, fd: i32) -> Result<&FdEntry, Errno> {
        self.map.get(&(fd as u32)).ok_or(EBADF)
    }

    pub(crate) fn get_mut(&mut self, fd: i32) -> Result<&mut FdEntry, Errno> {
        self.map.get_mut(&(fd as u32)).ok_or(EBADF)
    }

    /// Fail with `EMFILE` when no more files can be opened.
    pub(crate) fn check_room(&self) -> Result<(), Errno> {
        if self.files >= self.max_files {
            Err(EMFILE)
        } else {
            Ok(())
        }
    }

    /// Add `entry` at the lowest free number.
    pub(crate) fn insert(&mut self, entry: FdEntry) -> Result<u32, Errno> {
        if entry.ino().is_some() {
            self.check_room()?;
        }
        let mut fd = 0u32;
        for used in self.map.keys() {
            if *used != fd {
                break;
            }
            fd += 1;
        }
        if entry.ino().is_some() {
            self.files += 1;
        }
        self.map.insert(fd, entry);
        Ok(fd)
    }

    /// Close `fd`, returning what it was.
    pub(crate) fn remove(&mut self, fd: i32) -> Result<FdEntry, Errno> {
        let entry = self.map.remove(&(fd as u32)).ok_or(EBADF)?;
        if entry.ino().is_some() {
            self.files -= 1;
        }
        Ok(entry)
    }

    /// Move `from` to `to`, which must both be open; returns the entry that
    /// `to` held (now closed).
    pub(crate) fn renumber(&mut self, from: i32, to: i32) -> Result<Option<FdEntry>, Errno> {
        self.get(from)?;
        self.get(to)?;
        if from == to {
            return Ok(None);
        }
        let closed = self.remove(to)?;
        let moved = self.remove(from)?;
        if moved.ino().is_some() {
            self.files += 1;
        }
        self.map.insert(to as u32, moved);
        Ok(Some(closed))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn file(ino: Ino) -> FdEntry {
        FdEntry {
            desc: Desc::File {
                ino,
                pos: 0,
                flags: 0,
            },
            base: rights::FILE,
            inheriting: 0,
        }
    }

    #[test]
    fn lowest_free_number_and_bounds() {
        let mut t = FdTable::new(3, Some(1));
        assert_eq!(t.insert(file(5)).unwrap(), 4);
        assert_eq!(t.insert(file(6)).unwrap(), 5);
        assert_eq!(t.insert(file(7)), Err(EMFILE));
        t.remove(4).unwrap();
        assert_eq!(t.insert(file(7)).unwrap(), 4);
        assert_eq!(t.remove(9), Err(EBADF));
        assert_eq!(t.get(-1).unwrap_err(), EBADF);
    }

    #[test]
    fn renumber_needs_two_open_descriptors() {
        let mut t = FdTable::new(8, Some(1));
        let a = t.insert(file(5)).unwrap() as i32;
        let b = t.insert(file(6)).unwrap() as i32;
        let closed = t.renumber(a, b).unwrap().unwrap();
        assert_eq!(closed.ino(), Some(6));
        assert_eq!(t.get(b).unwrap().ino(), Some(5));
        assert_eq!(t.get(a).unwrap_err(), EBADF);
        assert_eq!(t.renumber(b, a), Err(EBADF));
        assert_eq!(t.renumber(b, b), Ok(None));
        // Standard streams move too.
        assert!(t.renumber(0, b).is_ok());
        assert_eq!(t.get(b).unwrap().desc, Desc::Stdin);
    }
}
