//! File bundles: the directory a function ships with (`deploy --files DIR`).
//!
//! A bundle is one byte string, content-addressed like a module (its
//! [`ContentHash`](crate::ContentHash) is the BLAKE3 hash of these bytes),
//! and simple enough to build in a browser's JavaScript.
//!
//! # Format
//!
//! All integers are little-endian.
//!
//! ```text
//! magic        8 bytes   "ORBBNDL1"
//! count        u32       number of entries
//! entry * count, sorted by path:
//!   kind       u8        1 = directory, 2 = regular file
//!   path_len   u16       length of path in bytes
//!   path       path_len  UTF-8, relative, '/' between components
//!   (files only)
//!   data_len   u64       length of the file's contents
//!   data       data_len  the contents
//! ```
//!
//! Nothing follows the last entry. The root directory itself is implicit
//! (an empty bundle, `ORBBNDL1` and a zero count, is an empty directory).
//!
//! # Canonical form
//!
//! One tree has exactly one encoding, so one hash:
//!
//! * entries are sorted by the bytes of their UTF-8 path (strictly: no
//!   duplicates);
//! * every parent directory of an entry is itself an entry (of kind
//!   directory), so `a/b/c` needs `a` and `a/b`;
//! * a path is not empty, has no empty component (no leading, trailing or
//!   doubled `/`), no `.` or `..` component and no NUL byte; a component is
//!   at most 255 bytes and a path at most 4096 bytes;
//! * there are no symlinks, times, permissions or owners.
//!
//! [`decode`] checks all of this (and the [`BundleLimits`]) before
//! allocating anything sized by the input, and [`BundleBuilder`] produces
//! it.

use std::collections::{BTreeMap, HashSet};

/// The first eight bytes of every bundle.
pub const MAGIC: &[u8; 8] = b"ORBBNDL1";

/// Entry kind byte of a directory.
pub const KIND_DIR: u8 = 1;

/// Entry kind byte of a regular file.
pub const KIND_FILE: u8 = 2;

/// Longest path, in bytes.
pub const MAX_PATH: usize = 4096;

/// Longest path component, in bytes.
pub const MAX_COMPONENT: usize = 255;

/// Default largest bundle (encoded size): 64 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Default most entries (files and directories) in a bundle.
pub const DEFAULT_MAX_ENTRIES: u32 = 10_000;

/// Size of the header: magic and entry count.
const HEADER: u64 = 12;

/// Bounds on a bundle, enforced when building and when decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BundleLimits {
    /// Largest encoded bundle, in bytes.
    pub max_bytes: u64,
    /// Most entries (files plus directories, the root not counted).
    pub max_entries: u32,
}

impl Default for BundleLimits {
    fn default() -> Self {
        BundleLimits {
            max_bytes: DEFAULT_MAX_BYTES,
            max_entries: DEFAULT_MAX_ENTRIES,
        }
    }
}

/// One entry of a decoded bundle, borrowing from the bundle's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry<'a> {
    /// A directory at this path.
    Dir(&'a str),
    /// A regular file at this path, with its contents.
    File(&'a str, &'a [u8]),
}

impl<'a> Entry<'a> {
    /// The entry's path.
    pub fn path(&self) -> &'a str {
        match self {
            Entry::Dir(p) | Entry::File(p, _) => p,
        }
    }
}

/// Why a bundle was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// The bundle is over [`BundleLimits::max_bytes`].
    #[error("bundle is {} bytes; the limit is {}", group(*.size), group(*.limit))]
    TooLarge {
        /// Size of the bundle (or of what was being added), in bytes.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The bundle has more entries than [`BundleLimits::max_entries`].
    #[error("bundle has {} entries; the limit is {}", group(*.count), group(u64::from(*.limit)))]
    TooManyEntries {
        /// Entries in (or being added to) the bundle.
        count: u64,
        /// The limit.
        limit: u32,
    },
    /// The bytes do not start with [`MAGIC`].
    #[error("not an Orb file bundle (it does not start with ORBBNDL1)")]
    BadMagic,
    /// The bytes end in the middle of the header or an entry.
    #[error("bundle is truncated: entry {index} is incomplete")]
    Truncated {
        /// Index of the incomplete entry.
        index: u64,
    },
    /// Bytes follow the last entry.
    #[error("bundle has {0} bytes after its last entry")]
    TrailingBytes(u64),
    /// An entry kind other than directory or file.
    #[error("bundle entry {index} has unknown kind {kind} (1 is a directory, 2 a file)")]
    BadKind {
        /// Index of the entry.
        index: u64,
        /// The kind byte.
        kind: u8,
    },
    /// A path is not valid UTF-8.
    #[error("bundle entry {index} has a path that is not UTF-8")]
    NotUtf8 {
        /// Index of the entry.
        index: u64,
    },
    /// A path breaks the rules of the canonical form.
    #[error("invalid path {path:?} in bundle: {reason}")]
    InvalidPath {
        /// The path (lossily converted, shortened when long).
        path: String,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// Entries are not in strictly increasing order of path.
    #[error("bundle entries are not sorted or repeat a path: {path:?} comes after {previous:?}")]
    Unsorted {
        /// The path out of order.
        path: String,
        /// The path before it.
        previous: String,
    },
    /// An entry's parent directory is not an entry.
    #[error("bundle entry {path:?} has no parent directory entry")]
    MissingParent {
        /// The entry's path.
        path: String,
    },
    /// An entry's parent is a file.
    #[error("bundle entry {path:?} is inside a file")]
    ParentNotDir {
        /// The entry's path.
        path: String,
    },
    /// The builder was given the same path twice.
    #[error("path {path:?} is already in the bundle")]
    Duplicate {
        /// The path.
        path: String,
    },
}

/// `n` with a comma every three digits, as in "10,000".
fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A path for an error message: never more than a few hundred bytes.
fn shown(path: &str) -> String {
    const SHOW: usize = 200;
    if path.len() <= SHOW {
        return path.to_string();
    }
    let mut end = SHOW;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &path[..end])
}

/// Check `path` against the canonical form's path rules; the error is the
/// rule it breaks.
pub fn check_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("empty path");
    }
    if path.len() > MAX_PATH {
        return Err("longer than 4096 bytes");
    }
    if path.contains('\0') {
        return Err("contains a NUL byte");
    }
    for component in path.split('/') {
        match component {
            "" => return Err("empty component (leading, trailing or doubled '/')"),
            "." | ".." => return Err("'.' or '..' component"),
            c if c.len() > MAX_COMPONENT => return Err("component longer than 255 bytes"),
            _ => {}
        }
    }
    Ok(())
}

fn invalid(path: &str, reason: &'static str) -> BundleError {
    BundleError::InvalidPath {
        path: shown(path),
        reason,
    }
}

/// The parent directory of `path`, `None` for a top-level entry.
fn parent(path: &str) -> Option<&str> {
    path.rsplit_once('/').map(|(p, _)| p)
}

fn dir_size(path: &str) -> u64 {
    3 + path.len() as u64
}

fn file_size(path: &str, len: u64) -> u64 {
    (11 + path.len() as u64).saturating_add(len)
}

/// Decode and validate a bundle, returning its entries in order.
///
/// Checks the size limit first, then the header, then every entry; counts
/// and lengths are checked against the limits and the remaining bytes
/// before anything is allocated from them.
pub fn decode<'a>(bytes: &'a [u8], limits: &BundleLimits) -> Result<Vec<Entry<'a>>, BundleError> {
    let size = bytes.len() as u64;
    if size > limits.max_bytes {
        return Err(BundleError::TooLarge {
            size,
            limit: limits.max_bytes,
        });
    }
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(BundleError::BadMagic);
    }
    let mut r = Reader {
        bytes,
        pos: MAGIC.len(),
    };
    let count = u64::from(r.u32().ok_or(BundleError::Truncated { index: 0 })?);
    if count > u64::from(limits.max_entries) {
        return Err(BundleError::TooManyEntries {
            count,
            limit: limits.max_entries,
        });
    }
    // The smallest entry is 4 bytes, so the input bounds the allocation too.
    let room = (bytes.len() - r.pos) / 4;
    let mut entries = Vec::with_capacity((count as usize).min(room));
    let mut dirs: HashSet<&str> = HashSet::new();
    let mut previous: Option<&str> = None;
    for index in 0..count {
        let truncated = BundleError::Truncated { index };
        let kind = r.u8().ok_or(truncated.clone())?;
        if kind != KIND_DIR && kind != KIND_FILE {
            return Err(BundleError::BadKind { index, kind });
        }
        let path_len = r.u16().ok_or(truncated.clone())?;
        let raw = r.take(u64::from(path_len)).ok_or(truncated.clone())?;
        let path = std::str::from_utf8(raw).map_err(|_| BundleError::NotUtf8 { index })?;
        check_path(path).map_err(|reason| invalid(path, reason))?;
        if let Some(prev) = previous
            && prev.as_bytes() >= path.as_bytes()
        {
            return Err(BundleError::Unsorted {
                path: shown(path),
                previous: shown(prev),
            });
        }
        previous = Some(path);
        if let Some(p) = parent(path)
            && !dirs.contains(p)
        {
            // Sorted order puts a parent before its children, so a parent
            // not seen as a directory is either missing or a file.
            let is_file = entries
                .iter()
                .rev()
                .any(|e: &Entry<'_>| matches!(e, Entry::File(f, _) if *f == p));
            return Err(if is_file {
                BundleError::ParentNotDir { path: shown(path) }
            } else {
                BundleError::MissingParent { path: shown(path) }
            });
        }
        if kind == KIND_DIR {
            dirs.insert(path);
            entries.push(Entry::Dir(path));
        } else {
            let len = r.u64().ok_or(truncated.clone())?;
            let data = r.take(len).ok_or(truncated)?;
            entries.push(Entry::File(path, data));
        }
    }
    let rest = (bytes.len() - r.pos) as u64;
    if rest != 0 {
        return Err(BundleError::TrailingBytes(rest));
    }
    Ok(entries)
}

/// A cursor over the input; every read is bounds-checked.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: u64) -> Option<&'a [u8]> {
        let n = usize::try_from(n).ok()?;
        let end = self.pos.checked_add(n)?;
        let out = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(out)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Option<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Some(u64::from_le_bytes(a))
    }
}

/// Builds a canonical bundle from files and directories added in any order.
///
/// Missing parent directories are added on the way. Every addition checks
/// the limits first, so a caller walking a large tree stops at the first
/// entry over them.
#[derive(Debug, Clone)]
pub struct BundleBuilder {
    limits: BundleLimits,
    /// Path to contents; `None` is a directory.
    entries: BTreeMap<String, Option<Vec<u8>>>,
    size: u64,
}

impl BundleBuilder {
    /// An empty builder enforcing `limits`.
    pub fn new(limits: BundleLimits) -> Self {
        BundleBuilder {
            limits,
            entries: BTreeMap::new(),
            size: HEADER,
        }
    }

    /// Entries added so far (including implied parent directories).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing was added yet.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Encoded size of the bundle so far, in bytes.
    pub fn encoded_len(&self) -> u64 {
        self.size
    }

    /// Add the directory `path` (and its missing parents). Adding an
    /// existing directory again is a no-op.
    pub fn add_dir(&mut self, path: &str) -> Result<(), BundleError> {
        check_path(path).map_err(|reason| invalid(path, reason))?;
        match self.entries.get(path) {
            Some(None) => return Ok(()),
            Some(Some(_)) => return Err(BundleError::Duplicate { path: shown(path) }),
            None => {}
        }
        let (parents, size) = self.plan(path, dir_size(path))?;
        self.commit(parents, size);
        self.entries.insert(path.to_string(), None);
        Ok(())
    }

    /// Check that a file of `len` bytes at `path` would fit, without adding
    /// it: lets a caller refuse a large file before reading it.
    pub fn check_file(&self, path: &str, len: u64) -> Result<(), BundleError> {
        check_path(path).map_err(|reason| invalid(path, reason))?;
        if self.entries.contains_key(path) {
            return Err(BundleError::Duplicate { path: shown(path) });
        }
        self.plan(path, file_size(path, len)).map(|_| ())
    }

    /// Add the file `path` with `data` (and its missing parents).
    pub fn add_file(&mut self, path: &str, data: Vec<u8>) -> Result<(), BundleError> {
        check_path(path).map_err(|reason| invalid(path, reason))?;
        if self.entries.contains_key(path) {
            return Err(BundleError::Duplicate { path: shown(path) });
        }
        let (parents, size) = self.plan(path, file_size(path, data.len() as u64))?;
        self.commit(parents, size);
        self.entries.insert(path.to_string(), Some(data));
        Ok(())
    }

    /// The parents to add, the new entry count and size, if within limits.
    fn plan<'p>(&self, path: &'p str, own: u64) -> Result<(Vec<&'p str>, u64), BundleError> {
        let mut parents = Vec::new();
        let mut at = parent(path);
        while let Some(p) = at {
            match self.entries.get(p) {
                Some(None) => break,
                Some(Some(_)) => return Err(BundleError::ParentNotDir { path: shown(path) }),
                None => parents.push(p),
            }
            at = parent(p);
        }
        let count = self.entries.len() as u64 + parents.len() as u64 + 1;
        if count > u64::from(self.limits.max_entries) {
            return Err(BundleError::TooManyEntries {
                count,
                limit: self.limits.max_entries,
            });
        }
        let size = parents.iter().fold(self.size.saturating_add(own), |s, p| {
            s.saturating_add(dir_size(p))
        });
        if size > self.limits.max_bytes {
            return Err(BundleError::TooLarge {
                size,
                limit: self.limits.max_bytes,
            });
        }
        Ok((parents, size))
    }

    fn commit(&mut self, parents: Vec<&str>, size: u64) {
        for p in parents {
            self.entries.insert(p.to_string(), None);
        }
        self.size = size;
    }

    /// The encoded bundle.
    pub fn finish(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(usize::try_from(self.size).unwrap_or(0));
        out.extend_from_slice(MAGIC);
        // `plan` keeps the count within a u32 limit.
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        // BTreeMap<String> iterates in byte order of the keys, which is the
        // canonical order.
        for (path, data) in &self.entries {
            let kind = if data.is_some() { KIND_FILE } else { KIND_DIR };
            out.push(kind);
            // check_path keeps paths within 4096 bytes.
            out.extend_from_slice(&(path.len() as u16).to_le_bytes());
            out.extend_from_slice(path.as_bytes());
            if let Some(data) = data {
                out.extend_from_slice(&(data.len() as u64).to_le_bytes());
                out.extend_from_slice(data);
            }
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn limits(max_bytes: u64, max_entries: u32) -> BundleLimits {
        BundleLimits {
            max_bytes,
            max_entries,
        }
    }

    #[test]
    fn builds_the_documented_bytes() {
        let mut b = BundleBuilder::new(BundleLimits::default());
        b.add_file("a/x.txt", b"hi".to_vec()).unwrap();
        let bytes = b.finish();
        let mut want = b"ORBBNDL1".to_vec();
        want.extend_from_slice(&2u32.to_le_bytes());
        want.extend_from_slice(&[1, 1, 0, b'a']);
        want.extend_from_slice(&[2, 7, 0]);
        want.extend_from_slice(b"a/x.txt");
        want.extend_from_slice(&2u64.to_le_bytes());
        want.extend_from_slice(b"hi");
        assert_eq!(bytes, want);
        let entries = decode(&bytes, &BundleLimits::default()).unwrap();
        assert_eq!(
            entries,
            vec![Entry::Dir("a"), Entry::File("a/x.txt", b"hi")]
        );
    }

    #[test]
    fn empty_bundle_is_an_empty_directory() {
        let bytes = BundleBuilder::new(BundleLimits::default()).finish();
        assert_eq!(bytes.len(), 12);
        assert!(decode(&bytes, &BundleLimits::default()).unwrap().is_empty());
    }

    #[test]
    fn limit_errors_read_well() {
        let mut b = BundleBuilder::new(limits(u64::MAX, 10_000));
        for i in 0..10_000 {
            b.add_dir(&format!("d{i}")).unwrap();
        }
        let err = b.add_dir("one-more").unwrap_err();
        assert_eq!(
            err.to_string(),
            "bundle has 10,001 entries; the limit is 10,000"
        );
        let mut b = BundleBuilder::new(limits(1_000, 10));
        let err = b.add_file("big", vec![0; 2_000]).unwrap_err();
        assert_eq!(err.to_string(), "bundle is 2,026 bytes; the limit is 1,000");
        assert!(b.check_file("big", 2_000).is_err());
        assert!(b.check_file("small", 10).is_ok());
        // Nothing was added by the failures.
        assert!(b.is_empty());
    }

    #[test]
    fn decoder_enforces_limits_before_parsing() {
        let mut b = BundleBuilder::new(BundleLimits::default());
        b.add_file("f", vec![7; 100]).unwrap();
        b.add_dir("d").unwrap();
        let bytes = b.finish();
        assert!(matches!(
            decode(&bytes, &limits(50, 10)),
            Err(BundleError::TooLarge { .. })
        ));
        assert!(matches!(
            decode(&bytes, &limits(1_000, 1)),
            Err(BundleError::TooManyEntries { count: 2, limit: 1 })
        ));
        // A huge claimed count does not allocate.
        let mut hostile = MAGIC.to_vec();
        hostile.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode(&hostile, &limits(1_000, u32::MAX)),
            Err(BundleError::Truncated { index: 0 })
        ));
    }

    #[test]
    fn paths_must_be_canonical() {
        for (path, rule) in [
            ("", "empty path"),
            ("/abs", "empty component (leading, trailing or doubled '/')"),
            ("a//b", "empty component (leading, trailing or doubled '/')"),
            ("a/", "empty component (leading, trailing or doubled '/')"),
            ("a/../b", "'.' or '..' component"),
            ("./a", "'.' or '..' component"),
            ("a\0b", "contains a NUL byte"),
        ] {
            assert_eq!(check_path(path), Err(rule), "{path:?}");
        }
        assert!(check_path(&"x".repeat(256)).is_err());
        assert!(check_path(&"x".repeat(255)).is_ok());
        let long = vec!["x".repeat(200); 21].join("/");
        assert_eq!(check_path(&long), Err("longer than 4096 bytes"));
    }

    fn raw(entries: &[(u8, &str, Option<&[u8]>)]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        for (kind, path, data) in entries {
            out.push(*kind);
            out.extend_from_slice(&(path.len() as u16).to_le_bytes());
            out.extend_from_slice(path.as_bytes());
            if let Some(d) = data {
                out.extend_from_slice(&(d.len() as u64).to_le_bytes());
                out.extend_from_slice(d);
            }
        }
        out
    }

    #[test]
    fn decoder_refuses_non_canonical_bundles() {
        let l = BundleLimits::default();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (raw(&[(1, "b", None), (1, "a", None)]), "not sorted"),
            (raw(&[(1, "a", None), (1, "a", None)]), "not sorted"),
            (raw(&[(1, "a/b", None)]), "no parent directory"),
            (
                raw(&[(2, "a", Some(b"")), (1, "a/b", None)]),
                "inside a file",
            ),
            (raw(&[(3, "a", None)]), "unknown kind 3"),
            (raw(&[(1, "../x", None)]), "'.' or '..'"),
            (b"ORBBNDL2\0\0\0\0".to_vec(), "does not start with ORBBNDL1"),
        ];
        for (bytes, want) in cases {
            let err = decode(&bytes, &l).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should mention {want:?}");
        }
        let mut trailing = raw(&[(1, "a", None)]);
        trailing.push(0);
        assert_eq!(
            decode(&trailing, &l).unwrap_err(),
            BundleError::TrailingBytes(1)
        );
        let mut cut = raw(&[(2, "a", Some(b"hello"))]);
        cut.truncate(cut.len() - 1);
        assert_eq!(
            decode(&cut, &l).unwrap_err(),
            BundleError::Truncated { index: 0 }
        );
    }

    #[test]
    fn builder_refuses_conflicts() {
        let mut b = BundleBuilder::new(BundleLimits::default());
        b.add_file("a", vec![]).unwrap();
        assert!(matches!(
            b.add_file("a", vec![]),
            Err(BundleError::Duplicate { .. })
        ));
        assert!(matches!(
            b.add_dir("a/b"),
            Err(BundleError::ParentNotDir { .. })
        ));
        b.add_dir("d").unwrap();
        b.add_dir("d").unwrap();
        assert!(matches!(
            b.add_file("d", vec![]),
            Err(BundleError::Duplicate { .. })
        ));
    }

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1_000), "1,000");
        assert_eq!(group(67_108_864), "67,108,864");
    }
}
