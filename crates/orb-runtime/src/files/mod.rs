//! A function's files: packing a directory into a bundle ([`pack_dir`]) and
//! the parsed, immutable tree a call sees ([`FileTree`]).
//!
//! The bundle format itself is [`orb_proto::bundle`]. A node decodes a
//! bundle once into a [`FileTree`] (cheap to clone: an `Arc`), caches it by
//! the bundle's hash, and passes it with every call in
//! [`Invocation::files`](crate::Invocation::files). File contents are
//! slices of the bundle's bytes; nothing is copied per call. Each call
//! writes into its own scratch layer on top (see the WASI shim), so the
//! tree itself never changes.

mod pack;

use std::sync::Arc;

use bytes::Bytes;
use orb_proto::bundle::{self, BundleError, BundleLimits, Entry};

pub use pack::{PackError, pack_dir};

/// Index of a node in a [`FileTree`]; the root is 0.
pub(crate) type NodeIndex = u32;

/// One node of the immutable tree.
#[derive(Debug)]
pub(crate) enum TreeNode {
    /// A directory: its parent and its children sorted by name.
    Dir {
        /// The parent directory (the root is its own parent).
        parent: NodeIndex,
        /// Children by name, sorted by the bytes of the name.
        children: Vec<(Box<str>, NodeIndex)>,
    },
    /// A regular file: a slice of the bundle.
    File(Bytes),
}

struct Inner {
    nodes: Vec<TreeNode>,
    bundle_len: u64,
    data_len: u64,
}

/// The files of a bundle, decoded and validated once; cheap to clone.
#[derive(Clone)]
pub struct FileTree {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for FileTree {
    // A summary: the contents can be megabytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileTree")
            .field("entries", &self.entry_count())
            .field("data_len", &self.inner.data_len)
            .field("bundle_len", &self.inner.bundle_len)
            .finish()
    }
}

impl FileTree {
    /// Decode `bundle` (checked against `limits`) into a tree. File
    /// contents share `bundle`'s buffer.
    pub fn from_bundle(bundle: Bytes, limits: &BundleLimits) -> Result<FileTree, BundleError> {
        let entries = bundle::decode(&bundle, limits)?;
        let mut nodes = Vec::with_capacity(entries.len() + 1);
        nodes.push(TreeNode::Dir {
            parent: 0,
            children: Vec::new(),
        });
        // Entries come sorted with parents first, so a directory's index
        // is known before any of its children; a sorted Vec of (path,
        // index) finds it.
        let mut dirs: Vec<(&str, NodeIndex)> = Vec::new();
        let mut data_len = 0u64;
        for entry in &entries {
            let path = entry.path();
            let (parent, name) = match path.rsplit_once('/') {
                Some((p, n)) => {
                    let at = dirs
                        .binary_search_by(|(d, _)| d.as_bytes().cmp(p.as_bytes()))
                        .map_err(|_| BundleError::MissingParent {
                            path: path.to_string(),
                        })?;
                    (dirs[at].1, n)
                }
                None => (0, path),
            };
            // decode bounds the entry count by a u32 limit.
            let index = nodes.len() as NodeIndex;
            match entry {
                Entry::Dir(_) => {
                    let at = dirs
                        .binary_search_by(|(d, _)| d.as_bytes().cmp(path.as_bytes()))
                        .unwrap_or_else(|at| at);
                    dirs.insert(at, (path, index));
                    nodes.push(TreeNode::Dir {
                        parent,
                        children: Vec::new(),
                    });
                }
                Entry::File(_, data) => {
                    data_len += data.len() as u64;
                    nodes.push(TreeNode::File(bundle.slice_ref(data)));
                }
            }
            if let Some(TreeNode::Dir { children, .. }) = nodes.get_mut(parent as usize) {
                children.push((name.into(), index));
            }
        }
        for node in &mut nodes {
            if let TreeNode::Dir { children, .. } = node {
                // Already in order for canonical bundles; sorting keeps
                // lookups right regardless.
                children.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            }
        }
        Ok(FileTree {
            inner: Arc::new(Inner {
                nodes,
                bundle_len: bundle.len() as u64,
                data_len,
            }),
        })
    }

    /// Files and directories in the tree (the root not counted).
    pub fn entry_count(&self) -> usize {
        self.inner.nodes.len() - 1
    }

    /// Total size of the files' contents, in bytes.
    pub fn data_len(&self) -> u64 {
        self.inner.data_len
    }

    /// Size of the bundle the tree came from, in bytes.
    pub fn bundle_len(&self) -> u64 {
        self.inner.bundle_len
    }

    /// Number of nodes including the root.
    pub(crate) fn node_count(&self) -> usize {
        self.inner.nodes.len()
    }

    pub(crate) fn node(&self, index: NodeIndex) -> Option<&TreeNode> {
        self.inner.nodes.get(index as usize)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use orb_proto::bundle::BundleBuilder;

    #[test]
    fn tree_mirrors_the_bundle() {
        let mut b = BundleBuilder::new(BundleLimits::default());
        b.add_file("index.html", b"<h1>hi</h1>".to_vec()).unwrap();
        b.add_file("css/site.css", b"body{}".to_vec()).unwrap();
        b.add_dir("empty").unwrap();
        let bytes = Bytes::from(b.finish());
        let tree = FileTree::from_bundle(bytes.clone(), &BundleLimits::default()).unwrap();
        assert_eq!(tree.entry_count(), 4);
        assert_eq!(tree.data_len(), 17);
        assert_eq!(tree.bundle_len(), bytes.len() as u64);
        let Some(TreeNode::Dir { children, .. }) = tree.node(0) else {
            panic!("root is a directory")
        };
        let names: Vec<&str> = children.iter().map(|(n, _)| &**n).collect();
        assert_eq!(names, ["css", "empty", "index.html"]);
        let css = children[0].1;
        let Some(TreeNode::Dir { parent, children }) = tree.node(css) else {
            panic!("css is a directory")
        };
        assert_eq!(*parent, 0);
        let Some(TreeNode::File(data)) = tree.node(children[0].1) else {
            panic!("site.css is a file")
        };
        assert_eq!(&data[..], b"body{}");
        // Shares the bundle's buffer rather than copying.
        let start = data.as_ptr() as usize - bytes.as_ptr() as usize;
        assert!(start < bytes.len());
    }

    #[test]
    fn bad_bundles_are_refused() {
        let limits = BundleLimits {
            max_bytes: 100,
            max_entries: 10,
        };
        let err = FileTree::from_bundle(Bytes::from_static(b"nope"), &limits).unwrap_err();
        assert_eq!(err, BundleError::BadMagic);
        let mut b = BundleBuilder::new(BundleLimits::default());
        b.add_file("big", vec![0; 200]).unwrap();
        let err = FileTree::from_bundle(Bytes::from(b.finish()), &limits).unwrap_err();
        assert!(matches!(err, BundleError::TooLarge { .. }));
    }
}
