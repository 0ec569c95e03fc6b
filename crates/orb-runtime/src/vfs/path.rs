//! Path resolution, confined to the directory a lookup starts from.
//!
//! As in WASI's capability model (and cap-std, which wasmtime uses): paths
//! are relative to a directory descriptor and can never leave it. An
//! absolute path, a `..` above the starting directory (directly or through
//! a symlink) and a symlink to an absolute path all fail with
//! `ENOTCAPABLE`.

use std::collections::VecDeque;

use super::{Ino, Kind, Vfs, View};
use crate::wasi::errno::{EINVAL, ELOOP, ENAMETOOLONG, ENOENT, ENOTCAPABLE, ENOTDIR, Errno};

/// Most symlinks followed in one lookup (Linux's limit).
pub(crate) const MAX_SYMLINKS: u32 = 40;

/// Longest path accepted, in bytes.
pub(crate) const MAX_PATH: usize = 4096;

/// The last component of a resolved path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Last {
    /// A name in [`Resolved::dir`].
    Name(String),
    /// The path ended in `.` (or was `.`).
    Dot,
    /// The path ended in `..`.
    DotDot,
}

/// Where a path leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resolved {
    /// The directory holding the last component.
    pub(crate) dir: Ino,
    /// The last component.
    pub(crate) last: Last,
    /// What the path names; `None` when the last name does not exist (the
    /// directories before it do).
    pub(crate) ino: Option<Ino>,
    /// The path ended in `/` (so it must name a directory).
    pub(crate) trailing_slash: bool,
}

/// Check a path argument before resolving it.
fn check(path: &str) -> Result<(), Errno> {
    if path.is_empty() {
        return Err(ENOENT);
    }
    if path.len() > MAX_PATH {
        return Err(ENAMETOOLONG);
    }
    if path.contains('\0') {
        return Err(EINVAL);
    }
    if path.starts_with('/') {
        return Err(ENOTCAPABLE);
    }
    Ok(())
}

/// The components of `path` and whether it ends in `/`.
fn split(path: &str) -> (VecDeque<&str>, bool) {
    let components = path.split('/').filter(|c| !c.is_empty()).collect();
    (components, path.ends_with('/'))
}

impl Vfs {
    /// Resolve `path` relative to directory `start`.
    ///
    /// Symlinks are followed in the middle of the path always, and at its
    /// end when `follow` is set or the path ends in `/`. A missing last
    /// component is not an error (the caller may create it); a missing
    /// directory before it is `ENOENT`, and a file used as a directory is
    /// `ENOTDIR`.
    pub(crate) fn resolve(&self, start: Ino, path: &str, follow: bool) -> Result<Resolved, Errno> {
        check(path)?;
        if self.kind(start)? != Kind::Dir {
            return Err(ENOTDIR);
        }
        // Owned components: a symlink's target is spliced in front of the
        // rest of the path.
        let (parts, mut trailing) = split(path);
        let mut queue: VecDeque<String> = parts.into_iter().map(str::to_string).collect();
        let mut stack: Vec<Ino> = vec![start];
        let mut links = 0u32;
        let top = |stack: &Vec<Ino>| stack.last().copied().unwrap_or(start);
        loop {
            let Some(component) = queue.pop_front() else {
                // Only "." components (e.g. "./").
                let dir = top(&stack);
                return Ok(Resolved {
                    dir,
                    last: Last::Dot,
                    ino: Some(dir),
                    trailing_slash: trailing,
                });
            };
            let is_last = queue.is_empty();
            match component.as_str() {
                "." => {
                    if is_last {
                        let dir = top(&stack);
                        return Ok(Resolved {
                            dir,
                            last: Last::Dot,
                            ino: Some(dir),
                            trailing_slash: trailing,
                        });
                    }
                }
                ".." => {
                    if stack.len() <= 1 {
                        return Err(ENOTCAPABLE);
                    }
                    stack.pop();
                    if is_last {
                        let dir = top(&stack);
                        return Ok(Resolved {
                            dir,
                            last: Last::DotDot,
                            ino: Some(dir),
                            trailing_slash: trailing,
                        });
                    }
                }
                name => {
                    let dir = top(&stack);
                    let found = self.lookup(dir, name)?;
                    let Some(child) = found else {
                        if is_last {
                            return Ok(Resolved {
                                dir,
                                last: Last::Name(component),
                                ino: None,
                                trailing_slash: trailing,
                            });
                        }
                        return Err(ENOENT);
                    };
                    match self.view(child)? {
                        View::TreeDir(..) | View::Dir(..) => {
                            if is_last {
                                return Ok(Resolved {
                                    dir,
                                    last: Last::Name(component),
                                    ino: Some(child),
                                    trailing_slash: trailing,
                                });
                            }
                            stack.push(child);
                        }
                        View::TreeFile(_) | View::File(_) => {
                            if !is_last || trailing {
                                return Err(ENOTDIR);
                            }
                            return Ok(Resolved {
                                dir,
                                last: Last::Name(component),
                                ino: Some(child),
                                trailing_slash: false,
                            });
                        }
                        View::Symlink(target) => {
                            if is_last && !follow && !trailing {
                                return Ok(Resolved {
                                    dir,
                                    last: Last::Name(component),
                                    ino: Some(child),
                                    trailing_slash: false,
                                });
                            }
                            links += 1;
                            if links > MAX_SYMLINKS {
                                return Err(ELOOP);
                            }
                            if target.starts_with('/') {
                                return Err(ENOTCAPABLE);
                            }
                            if target.is_empty() {
                                return Err(ENOENT);
                            }
                            let (parts, target_trailing) = split(target);
                            if is_last {
                                trailing = trailing || target_trailing;
                            }
                            if parts.is_empty() {
                                // A target of only slashes: absolute.
                                return Err(ENOTCAPABLE);
                            }
                            for part in parts.into_iter().rev() {
                                queue.push_front(part.to_string());
                            }
                        }
                    }
                }
            }
        }
    }
}
