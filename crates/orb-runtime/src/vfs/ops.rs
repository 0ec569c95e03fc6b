//! Changes to the filesystem: creating, linking, renaming and removing
//! names, and reading and writing file contents. Each checks everything
//! (and its scratch cost) before changing anything, so a refused operation
//! leaves the tree as it was.

use super::{Body, Data, Ino, Kind, Last, MAX_NAME, Resolved, Vfs, View, entry_cost};
use crate::wasi::errno::{
    EEXIST, EINVAL, EISDIR, ELOOP, ENAMETOOLONG, ENOENT, ENOTDIR, ENOTEMPTY, EPERM, Errno,
};

/// How [`Vfs::open`] opens a path (the `oflags` of `path_open`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct OpenFlags {
    pub(crate) create: bool,
    pub(crate) directory: bool,
    pub(crate) exclusive: bool,
    pub(crate) truncate: bool,
}

/// Which timestamps [`Vfs::set_times`] changes, and to what.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Times {
    pub(crate) atim: Option<u64>,
    pub(crate) mtim: Option<u64>,
}

/// The name a create-like operation adds: the last component must be a
/// plain name that does not exist yet.
fn new_name(r: &Resolved) -> Result<&str, Errno> {
    if r.ino.is_some() {
        return Err(EEXIST);
    }
    match &r.last {
        Last::Name(n) if n.len() > MAX_NAME => Err(ENAMETOOLONG),
        Last::Name(n) => Ok(n),
        // "." and ".." always exist.
        Last::Dot | Last::DotDot => Err(EEXIST),
    }
}

impl Vfs {
    /// Open `path` under `dir`: the inode to give a descriptor, created or
    /// truncated as `flags` say. `write` is whether write access was asked
    /// for (a directory refuses it).
    pub(crate) fn open(
        &mut self,
        dir: Ino,
        path: &str,
        follow: bool,
        flags: OpenFlags,
        write: bool,
    ) -> Result<Ino, Errno> {
        if flags.create && flags.directory {
            return Err(EINVAL);
        }
        // O_CREAT|O_EXCL never follows a final symlink: it must not exist.
        let follow = follow && !(flags.create && flags.exclusive);
        let r = self.resolve(dir, path, follow)?;
        let Some(ino) = r.ino else {
            if !flags.create {
                return Err(ENOENT);
            }
            if r.trailing_slash {
                return Err(EISDIR);
            }
            let name = new_name(&r)?.to_string();
            return self.link_new(r.dir, &name, Body::File(Data::Owned(Vec::new())));
        };
        if flags.create && flags.exclusive {
            return Err(EEXIST);
        }
        match self.kind(ino)? {
            Kind::Symlink => Err(ELOOP),
            Kind::Dir if write || flags.truncate => Err(EISDIR),
            Kind::Dir => Ok(ino),
            Kind::File if flags.directory => Err(ENOTDIR),
            Kind::File => {
                if flags.truncate {
                    self.set_len(ino, 0)?;
                }
                Ok(ino)
            }
        }
    }

    /// `mkdir`.
    pub(crate) fn create_dir(&mut self, dir: Ino, path: &str) -> Result<(), Errno> {
        let r = self.resolve(dir, path, false)?;
        let name = new_name(&r)?.to_string();
        let parent = r.dir;
        self.link_new(
            parent,
            &name,
            Body::Dir {
                entries: Default::default(),
                parent,
            },
        )
        .map(|_| ())
    }

    /// `symlink`: a link at `path` under `dir` pointing to `target`.
    pub(crate) fn symlink(&mut self, target: &str, dir: Ino, path: &str) -> Result<(), Errno> {
        if target.is_empty() {
            return Err(ENOENT);
        }
        if target.len() > super::path::MAX_PATH {
            return Err(ENAMETOOLONG);
        }
        if target.contains('\0') {
            return Err(EINVAL);
        }
        if target.starts_with('/') {
            // It could never be followed inside the preopen.
            return Err(crate::wasi::errno::ENOTCAPABLE);
        }
        let r = self.resolve(dir, path, false)?;
        let name = new_name(&r)?.to_string();
        if r.trailing_slash {
            return Err(ENOENT);
        }
        self.link_new(r.dir, &name, Body::Symlink(target.to_string()))
            .map(|_| ())
    }

    /// `readlink`.
    pub(crate) fn readlink(&self, dir: Ino, path: &str) -> Result<&str, Errno> {
        let r = self.resolve(dir, path, false)?;
        let ino = r.ino.ok_or(ENOENT)?;
        match self.view(ino)? {
            View::Symlink(t) => Ok(t),
            _ => Err(EINVAL),
        }
    }

    /// `unlink` of a file or symlink.
    pub(crate) fn unlink(&mut self, dir: Ino, path: &str) -> Result<(), Errno> {
        let r = self.resolve(dir, path, false)?;
        let ino = r.ino.ok_or(ENOENT)?;
        let Last::Name(name) = &r.last else {
            return Err(EISDIR);
        };
        if self.kind(ino)? == Kind::Dir {
            return Err(EISDIR);
        }
        self.unlink_name(r.dir, name, ino)
    }

    /// `rmdir` of an empty directory.
    pub(crate) fn remove_dir(&mut self, dir: Ino, path: &str) -> Result<(), Errno> {
        let r = self.resolve(dir, path, false)?;
        let ino = r.ino.ok_or(ENOENT)?;
        let name = match &r.last {
            Last::Name(n) => n,
            Last::Dot => return Err(EINVAL),
            Last::DotDot => return Err(ENOTEMPTY),
        };
        if self.kind(ino)? != Kind::Dir {
            return Err(ENOTDIR);
        }
        if self.entries(ino, 0)?.next().is_some() {
            return Err(ENOTEMPTY);
        }
        self.unlink_name(r.dir, name, ino)
    }

    /// `link`: a new name for the file (or symlink) at `src`.
    pub(crate) fn link(
        &mut self,
        src_dir: Ino,
        src_path: &str,
        follow: bool,
        dst_dir: Ino,
        dst_path: &str,
    ) -> Result<(), Errno> {
        let s = self.resolve(src_dir, src_path, follow)?;
        let ino = s.ino.ok_or(ENOENT)?;
        if self.kind(ino)? == Kind::Dir {
            return Err(EPERM);
        }
        let d = self.resolve(dst_dir, dst_path, false)?;
        let name = new_name(&d)?.to_string();
        if d.trailing_slash {
            return Err(ENOENT);
        }
        self.node_mut(ino)?;
        self.add_entry(d.dir, &name, ino)?;
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.nlink += 1;
            n.ctim = self.now;
        }
        Ok(())
    }

    /// `rename`, replacing what is at the destination as POSIX allows.
    pub(crate) fn rename(
        &mut self,
        src_dir: Ino,
        src_path: &str,
        dst_dir: Ino,
        dst_path: &str,
    ) -> Result<(), Errno> {
        let s = self.resolve(src_dir, src_path, false)?;
        let ino = s.ino.ok_or(ENOENT)?;
        let Last::Name(src_name) = s.last.clone() else {
            return Err(EINVAL);
        };
        let d = self.resolve(dst_dir, dst_path, false)?;
        let Last::Name(dst_name) = d.last.clone() else {
            return Err(EINVAL);
        };
        if dst_name.len() > MAX_NAME {
            return Err(ENAMETOOLONG);
        }
        let kind = self.kind(ino)?;
        if let Some(target) = d.ino {
            if target == ino {
                // Two names of one inode (or the same name): nothing to do.
                return Ok(());
            }
            match (kind, self.kind(target)?) {
                (Kind::Dir, Kind::Dir) if self.entries(target, 0)?.next().is_some() => {
                    return Err(ENOTEMPTY);
                }
                (Kind::Dir, Kind::Dir) => {}
                (Kind::Dir, _) => return Err(ENOTDIR),
                (_, Kind::Dir) => return Err(EISDIR),
                _ => {}
            }
        } else if d.trailing_slash && kind != Kind::Dir {
            return Err(ENOTDIR);
        }
        if kind == Kind::Dir && self.is_within(d.dir, ino)? {
            // A directory cannot move into itself.
            return Err(EINVAL);
        }
        self.ensure_alive(d.dir)?;
        // Materialize everything and charge the new name before changing
        // anything, so a refusal leaves both names as they were.
        self.node_mut(s.dir)?;
        self.node_mut(d.dir)?;
        self.node_mut(ino)?;
        let replaced = d.ino;
        match replaced {
            Some(old) => {
                // The name stays, so does its cost; it now names `ino`.
                self.node_mut(old)?;
            }
            None => self.charge(entry_cost(&dst_name))?,
        }
        if let Some(old) = replaced
            && let Some(n) = self.nodes.get_mut(&old)
        {
            n.nlink = if matches!(n.body, Body::Dir { .. }) {
                0
            } else {
                n.nlink.saturating_sub(1)
            };
            n.ctim = self.now;
        }
        let now = self.now;
        if let Some(super::Node {
            body: Body::Dir { entries, .. },
            mtim,
            ctim,
            ..
        }) = self.nodes.get_mut(&s.dir)
        {
            entries.remove(&src_name);
            *mtim = now;
            *ctim = now;
        }
        self.uncharge(entry_cost(&src_name));
        if let Some(super::Node {
            body: Body::Dir { entries, .. },
            mtim,
            ctim,
            ..
        }) = self.nodes.get_mut(&d.dir)
        {
            entries.insert(dst_name, ino);
            *mtim = now;
            *ctim = now;
        }
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.ctim = now;
            if let Body::Dir { parent, .. } = &mut n.body {
                *parent = d.dir;
            }
        }
        if let Some(old) = replaced {
            self.free_if_unused(old);
        }
        Ok(())
    }

    /// Set the times of `ino` (and its change time to now).
    pub(crate) fn set_times(&mut self, ino: Ino, times: Times) -> Result<(), Errno> {
        let now = self.now;
        let n = self.node_mut(ino)?;
        if let Some(a) = times.atim {
            n.atim = a;
        }
        if let Some(m) = times.mtim {
            n.mtim = m;
        }
        n.ctim = now;
        Ok(())
    }

    /// Write `data` into file `ino` at `offset`, growing it (with zeros
    /// before `offset`) as needed.
    pub(crate) fn write_at(&mut self, ino: Ino, offset: u64, data: &[u8]) -> Result<(), Errno> {
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or(crate::wasi::errno::EFBIG)?;
        let len = self.data(ino)?.len() as u64;
        if data.is_empty() {
            return Ok(());
        }
        let v = self.reserve(ino, end.max(len))?;
        let (start, end) = (offset as usize, end as usize);
        if v.len() < end {
            v.resize(end, 0);
        }
        v[start..end].copy_from_slice(data);
        self.touch(ino);
        Ok(())
    }

    /// Truncate or extend file `ino` to `len` bytes.
    pub(crate) fn set_len(&mut self, ino: Ino, len: u64) -> Result<(), Errno> {
        let old = self.data(ino)?.len() as u64;
        if len < old {
            let n = self.node_mut(ino)?;
            let freed = match &mut n.body {
                Body::File(Data::Owned(v)) => {
                    v.truncate(len as usize);
                    old - len
                }
                // Still shared: a shorter slice of the same bytes.
                Body::File(Data::Shared(b)) => {
                    b.truncate(len as usize);
                    0
                }
                _ => 0,
            };
            self.uncharge(freed);
        } else if len > old {
            self.reserve(ino, len)?.resize(len as usize, 0);
        }
        self.touch(ino);
        Ok(())
    }

    /// Make file `ino`'s contents owned, charging for them at `len` bytes
    /// (at least their current length, which the caller then grows them
    /// to). Nothing changes if the charge is refused.
    fn reserve(&mut self, ino: Ino, len: u64) -> Result<&mut Vec<u8>, Errno> {
        let charged = match &self.node_mut(ino)?.body {
            Body::File(d) => d.cost(),
            _ => return Err(EISDIR),
        };
        self.charge(len.saturating_sub(charged))?;
        let n = self.node_mut(ino)?;
        let Body::File(d) = &mut n.body else {
            return Err(EISDIR);
        };
        if let Data::Shared(b) = d {
            *d = Data::Owned(b.to_vec());
        }
        match d {
            Data::Owned(v) => Ok(v),
            Data::Shared(_) => Err(EISDIR),
        }
    }

    /// The contents of `ino` changed now.
    fn touch(&mut self, ino: Ino) {
        let now = self.now;
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.mtim = now;
            n.ctim = now;
        }
    }

    /// Whether directory `dir` is `ancestor` or inside it.
    fn is_within(&self, dir: Ino, ancestor: Ino) -> Result<bool, Errno> {
        let mut at = dir;
        // Depth is bounded by the number of directories.
        for _ in 0..=self.nodes.len() + self.tree_nodes as usize {
            if at == ancestor {
                return Ok(true);
            }
            let up = self.parent(at)?;
            if up == at {
                return Ok(false);
            }
            at = up;
        }
        Ok(false)
    }

    /// A directory that was removed accepts no new names.
    fn ensure_alive(&self, dir: Ino) -> Result<(), Errno> {
        match self.nodes.get(&dir) {
            Some(n) if n.nlink == 0 => Err(ENOENT),
            _ => Ok(()),
        }
    }

    /// Create a node with `body` and link it as `name` in `dir`.
    fn link_new(&mut self, dir: Ino, name: &str, body: Body) -> Result<Ino, Errno> {
        self.ensure_alive(dir)?;
        self.node_mut(dir)?;
        let ino = self.new_node(body)?;
        if let Err(e) = self.add_entry(dir, name, ino) {
            self.free_if_unused(ino);
            return Err(e);
        }
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.nlink = 1;
        }
        Ok(ino)
    }

    /// Add `name -> ino` to directory `dir` (which has no such name).
    fn add_entry(&mut self, dir: Ino, name: &str, ino: Ino) -> Result<(), Errno> {
        self.ensure_alive(dir)?;
        self.node_mut(dir)?;
        self.charge(entry_cost(name))?;
        let now = self.now;
        if let Some(super::Node {
            body: Body::Dir { entries, .. },
            mtim,
            ctim,
            ..
        }) = self.nodes.get_mut(&dir)
        {
            entries.insert(name.to_string(), ino);
            *mtim = now;
            *ctim = now;
        }
        Ok(())
    }

    /// Remove `name` (naming `ino`) from `dir`; frees `ino` if that was its
    /// last name and no descriptor has it open.
    fn unlink_name(&mut self, dir: Ino, name: &str, ino: Ino) -> Result<(), Errno> {
        self.node_mut(dir)?;
        self.node_mut(ino)?;
        let now = self.now;
        if let Some(super::Node {
            body: Body::Dir { entries, .. },
            mtim,
            ctim,
            ..
        }) = self.nodes.get_mut(&dir)
        {
            entries.remove(name);
            *mtim = now;
            *ctim = now;
        }
        self.uncharge(entry_cost(name));
        if let Some(n) = self.nodes.get_mut(&ino) {
            // A directory has one name; a file loses one of its links.
            n.nlink = if matches!(n.body, Body::Dir { .. }) {
                0
            } else {
                n.nlink.saturating_sub(1)
            };
            n.ctim = now;
        }
        self.free_if_unused(ino);
        Ok(())
    }
}
