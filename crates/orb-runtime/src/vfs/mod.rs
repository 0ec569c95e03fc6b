//! The filesystem one call sees: a [`FileTree`] (shared, immutable) under a
//! copy-on-write scratch layer of its own (in memory, bounded, dropped with
//! the call).
//!
//! Nodes are inodes: a directory maps names to inode numbers, so hard links,
//! renames of open files and unlinked-but-open files behave as POSIX says.
//! The tree's node `i` is inode `i + 1` (the root is 1); it is read straight
//! from the tree until the call changes it, at which point it is copied into
//! the layer ("materialized"). File contents stay shared with the bundle
//! until the first write to that file.
//!
//! Everything here is pure: errors are WASI errno values, the clock is set
//! by the caller ([`Vfs::set_now`]), and nothing touches the host's disk.
//!
//! Scratch accounting: every node in the layer costs [`NODE_COST`] bytes,
//! every name in a layer directory [`ENTRY_COST`] plus its length, every
//! symlink its target, and every file whose contents were written its
//! length. Going over [`ScratchLimits::max_bytes`], or creating more than
//! [`ScratchLimits::max_entries`] files, directories and symlinks, fails
//! with `ENOSPC`.

mod ops;
mod path;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use crate::files::{FileTree, NodeIndex, TreeNode};
use crate::wasi::errno::{ENOENT, ENOSPC, Errno};

pub(crate) use ops::{OpenFlags, Times};
pub(crate) use path::{Last, Resolved};

/// An inode number.
pub(crate) type Ino = u64;

/// The root directory's inode.
pub(crate) const ROOT: Ino = 1;

/// Scratch bytes charged for each node held in the layer.
pub(crate) const NODE_COST: u64 = 128;

/// Scratch bytes charged for each name in a layer directory, plus the
/// name's length.
pub(crate) const ENTRY_COST: u64 = 64;

/// Longest name of a file or directory.
pub(crate) const MAX_NAME: usize = 255;

/// Bounds of one call's scratch layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScratchLimits {
    /// Most scratch bytes (see the module docs for what counts).
    pub(crate) max_bytes: u64,
    /// Most files, directories and symlinks created by the call and alive
    /// at once.
    pub(crate) max_entries: u32,
}

/// What kind of node an inode is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link.
    Symlink,
}

/// The attributes of a node, as `filestat` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    pub(crate) ino: Ino,
    pub(crate) kind: Kind,
    pub(crate) nlink: u64,
    pub(crate) size: u64,
    pub(crate) atim: u64,
    pub(crate) mtim: u64,
    pub(crate) ctim: u64,
}

/// File contents: shared with the bundle until first written.
#[derive(Debug, Clone)]
pub(crate) enum Data {
    Shared(Bytes),
    Owned(Vec<u8>),
}

impl Data {
    fn as_slice(&self) -> &[u8] {
        match self {
            Data::Shared(b) => b,
            Data::Owned(v) => v,
        }
    }

    /// Bytes this data costs in the scratch layer.
    fn cost(&self) -> u64 {
        match self {
            Data::Shared(_) => 0,
            Data::Owned(v) => v.len() as u64,
        }
    }
}

#[derive(Debug)]
enum Body {
    Dir {
        entries: BTreeMap<String, Ino>,
        parent: Ino,
    },
    File(Data),
    Symlink(String),
}

/// A node held in the scratch layer.
#[derive(Debug)]
struct Node {
    body: Body,
    nlink: u64,
    atim: u64,
    mtim: u64,
    ctim: u64,
}

impl Node {
    /// Scratch bytes this node costs, entries and data included.
    fn cost(&self) -> u64 {
        NODE_COST
            + match &self.body {
                Body::Dir { entries, .. } => entries.keys().map(|n| entry_cost(n)).sum(),
                Body::File(d) => d.cost(),
                Body::Symlink(t) => t.len() as u64,
            }
    }
}

fn entry_cost(name: &str) -> u64 {
    ENTRY_COST + name.len() as u64
}

/// A read-only view of a node, wherever it lives.
pub(crate) enum View<'a> {
    TreeDir(&'a [(Box<str>, NodeIndex)], Ino),
    TreeFile(&'a Bytes),
    Dir(&'a BTreeMap<String, Ino>, Ino),
    File(&'a Data),
    Symlink(&'a str),
}

/// One call's filesystem.
#[derive(Debug)]
pub(crate) struct Vfs {
    tree: FileTree,
    /// Inodes of the tree are `1..=tree_nodes`.
    tree_nodes: u64,
    /// The scratch layer: materialized tree nodes and created ones.
    nodes: HashMap<Ino, Node>,
    next_ino: Ino,
    /// Open descriptors per inode, so unlinked files live while open.
    open: HashMap<Ino, u32>,
    limits: ScratchLimits,
    used: u64,
    created: u32,
    now: u64,
    /// Set when a change was refused for lack of scratch space.
    full: bool,
}

impl Vfs {
    /// A fresh layer over `tree`.
    pub(crate) fn new(tree: FileTree, limits: ScratchLimits) -> Vfs {
        let tree_nodes = tree.node_count() as u64;
        Vfs {
            tree,
            tree_nodes,
            nodes: HashMap::new(),
            next_ino: tree_nodes + 1,
            open: HashMap::new(),
            limits,
            used: 0,
            created: 0,
            now: 0,
            full: false,
        }
    }

    /// Set the time used for the times of changed nodes (ns since the epoch).
    pub(crate) fn set_now(&mut self, now: u64) {
        self.now = now;
    }

    /// Scratch bytes in use.
    pub(crate) fn used(&self) -> u64 {
        self.used
    }

    /// The scratch limits.
    pub(crate) fn limits(&self) -> ScratchLimits {
        self.limits
    }

    /// Whether a change was refused for lack of scratch space since the
    /// last call; clears the flag.
    pub(crate) fn take_full(&mut self) -> bool {
        std::mem::take(&mut self.full)
    }

    fn tree_index(&self, ino: Ino) -> Option<NodeIndex> {
        if ino >= 1 && ino <= self.tree_nodes {
            NodeIndex::try_from(ino - 1).ok()
        } else {
            None
        }
    }

    pub(crate) fn view(&self, ino: Ino) -> Result<View<'_>, Errno> {
        if let Some(n) = self.nodes.get(&ino) {
            return Ok(match &n.body {
                Body::Dir { entries, parent } => View::Dir(entries, *parent),
                Body::File(d) => View::File(d),
                Body::Symlink(t) => View::Symlink(t),
            });
        }
        let index = self.tree_index(ino).ok_or(ENOENT)?;
        match self.tree.node(index) {
            Some(TreeNode::Dir { children, parent }) => {
                Ok(View::TreeDir(children, Ino::from(*parent) + 1))
            }
            Some(TreeNode::File(b)) => Ok(View::TreeFile(b)),
            None => Err(ENOENT),
        }
    }

    pub(crate) fn kind(&self, ino: Ino) -> Result<Kind, Errno> {
        Ok(match self.view(ino)? {
            View::TreeDir(..) | View::Dir(..) => Kind::Dir,
            View::TreeFile(_) | View::File(_) => Kind::File,
            View::Symlink(_) => Kind::Symlink,
        })
    }

    /// The child `name` of directory `dir`.
    pub(crate) fn lookup(&self, dir: Ino, name: &str) -> Result<Option<Ino>, Errno> {
        Ok(match self.view(dir)? {
            View::TreeDir(children, _) => children
                .binary_search_by(|(n, _)| n.as_bytes().cmp(name.as_bytes()))
                .ok()
                .map(|i| Ino::from(children[i].1) + 1),
            View::Dir(entries, _) => entries.get(name).copied(),
            _ => None,
        })
    }

    /// The parent of directory `dir` (the root is its own parent).
    pub(crate) fn parent(&self, dir: Ino) -> Result<Ino, Errno> {
        match self.view(dir)? {
            View::TreeDir(_, p) | View::Dir(_, p) => Ok(p),
            _ => Err(crate::wasi::errno::ENOTDIR),
        }
    }

    pub(crate) fn stat(&self, ino: Ino) -> Result<Stat, Errno> {
        let (nlink, times) = match self.nodes.get(&ino) {
            Some(n) => (n.nlink, (n.atim, n.mtim, n.ctim)),
            // The tree has no times; 0 (the epoch) says "unknown".
            None => (1, (0, 0, 0)),
        };
        let (kind, size) = match self.view(ino)? {
            View::TreeDir(..) | View::Dir(..) => (Kind::Dir, 0),
            View::TreeFile(b) => (Kind::File, b.len() as u64),
            View::File(d) => (Kind::File, d.as_slice().len() as u64),
            View::Symlink(t) => (Kind::Symlink, t.len() as u64),
        };
        Ok(Stat {
            ino,
            kind,
            nlink,
            size,
            atim: times.0,
            mtim: times.1,
            ctim: times.2,
        })
    }

    /// The names and inodes of directory `dir`, in name order, from the
    /// `skip`th on.
    pub(crate) fn entries(
        &self,
        dir: Ino,
        skip: usize,
    ) -> Result<Box<dyn Iterator<Item = (&str, Ino)> + '_>, Errno> {
        match self.view(dir)? {
            View::TreeDir(children, _) => Ok(Box::new(
                children
                    .iter()
                    .skip(skip)
                    .map(|(n, i)| (&**n, Ino::from(*i) + 1)),
            )),
            View::Dir(entries, _) => Ok(Box::new(
                entries.iter().skip(skip).map(|(n, i)| (n.as_str(), *i)),
            )),
            _ => Err(crate::wasi::errno::ENOTDIR),
        }
    }

    /// The contents of file `ino`.
    pub(crate) fn data(&self, ino: Ino) -> Result<&[u8], Errno> {
        match self.view(ino)? {
            View::TreeFile(b) => Ok(b),
            View::File(d) => Ok(d.as_slice()),
            View::TreeDir(..) | View::Dir(..) => Err(crate::wasi::errno::EISDIR),
            View::Symlink(_) => Err(crate::wasi::errno::EINVAL),
        }
    }

    /// Count one more open descriptor on `ino`.
    pub(crate) fn retain(&mut self, ino: Ino) {
        *self.open.entry(ino).or_insert(0) += 1;
    }

    /// Count one fewer open descriptor on `ino`; frees it when it was
    /// unlinked and this was the last one.
    pub(crate) fn release(&mut self, ino: Ino) {
        let last = match self.open.get_mut(&ino) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                self.open.remove(&ino);
                true
            }
            None => false,
        };
        if last {
            self.free_if_unused(ino);
        }
    }

    /// Take `bytes` of scratch space, or fail with `ENOSPC`.
    fn charge(&mut self, bytes: u64) -> Result<(), Errno> {
        match self.used.checked_add(bytes) {
            Some(total) if total <= self.limits.max_bytes => {
                self.used = total;
                Ok(())
            }
            _ => {
                self.full = true;
                Err(ENOSPC)
            }
        }
    }

    fn uncharge(&mut self, bytes: u64) {
        self.used = self.used.saturating_sub(bytes);
    }

    /// Copy tree node `ino` into the layer (if it is not there yet) and
    /// return it for changing.
    fn node_mut(&mut self, ino: Ino) -> Result<&mut Node, Errno> {
        if !self.nodes.contains_key(&ino) {
            let index = self.tree_index(ino).ok_or(ENOENT)?;
            let body = match self.tree.node(index) {
                Some(TreeNode::Dir { children, parent }) => Body::Dir {
                    entries: children
                        .iter()
                        .map(|(n, i)| (n.to_string(), Ino::from(*i) + 1))
                        .collect(),
                    parent: Ino::from(*parent) + 1,
                },
                Some(TreeNode::File(b)) => Body::File(Data::Shared(b.clone())),
                None => return Err(ENOENT),
            };
            let node = Node {
                body,
                nlink: 1,
                atim: 0,
                mtim: 0,
                ctim: 0,
            };
            self.charge(node.cost())?;
            self.nodes.insert(ino, node);
        }
        self.nodes.get_mut(&ino).ok_or(ENOENT)
    }

    /// A new node in the layer (not yet linked anywhere).
    fn new_node(&mut self, body: Body) -> Result<Ino, Errno> {
        if self.created >= self.limits.max_entries {
            self.full = true;
            return Err(ENOSPC);
        }
        let node = Node {
            body,
            nlink: 0,
            atim: self.now,
            mtim: self.now,
            ctim: self.now,
        };
        self.charge(node.cost())?;
        let ino = self.next_ino;
        self.next_ino += 1;
        self.created += 1;
        self.nodes.insert(ino, node);
        Ok(ino)
    }

    /// Drop `ino` from the layer if no name and no descriptor refers to it.
    fn free_if_unused(&mut self, ino: Ino) {
        let unused =
            self.nodes.get(&ino).is_some_and(|n| n.nlink == 0) && !self.open.contains_key(&ino);
        if !unused {
            return;
        }
        if let Some(node) = self.nodes.remove(&ino) {
            self.uncharge(node.cost());
            if ino > self.tree_nodes {
                self.created = self.created.saturating_sub(1);
            }
        }
    }
}
