//! Packing a directory on disk into a bundle.

use std::fs;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use orb_proto::bundle::{BundleBuilder, BundleError, BundleLimits};

/// Why a directory could not be packed.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// Reading the directory tree failed.
    #[error("cannot read {}: {source}", .path.display())]
    Io {
        /// The path being read.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The root is not a directory.
    #[error("{} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// A symlink points to an absolute path.
    #[error("symlink {} points to the absolute path {}; only relative links inside the directory can be bundled", .path.display(), .target.display())]
    AbsoluteSymlink {
        /// The symlink.
        path: PathBuf,
        /// Its target.
        target: PathBuf,
    },
    /// A symlink resolves to something outside the root.
    #[error("symlink {} points to {}, outside the bundled directory", .path.display(), .target.display())]
    EscapingSymlink {
        /// The symlink.
        path: PathBuf,
        /// Its target.
        target: PathBuf,
    },
    /// A symlink points to nothing.
    #[error("symlink {} points to {}, which does not exist", .path.display(), .target.display())]
    DanglingSymlink {
        /// The symlink.
        path: PathBuf,
        /// Its target.
        target: PathBuf,
    },
    /// Following a symlink would enter a directory that contains it.
    #[error("symlink {} points to {}, a directory that contains it (a loop)", .path.display(), .target.display())]
    SymlinkLoop {
        /// The symlink.
        path: PathBuf,
        /// Its target.
        target: PathBuf,
    },
    /// A file that is neither a regular file, a directory nor a symlink.
    #[error("{} is not a regular file or directory (sockets, pipes and devices cannot be bundled)", .0.display())]
    Unsupported(PathBuf),
    /// A name that is not UTF-8.
    #[error("{} has a name that is not UTF-8", .0.display())]
    NotUtf8(PathBuf),
    /// The tree breaks a bundle rule or limit.
    #[error("cannot bundle {}: {source}", .path.display())]
    Bundle {
        /// The entry being added when the rule was broken.
        path: PathBuf,
        /// The rule or limit.
        source: BundleError,
    },
}

/// The directories on the way from the root to an entry, as canonical
/// paths, to notice a symlink that leads back into one of them.
struct Chain {
    dir: PathBuf,
    up: Option<Rc<Chain>>,
}

impl Chain {
    fn contains(&self, dir: &Path) -> bool {
        let mut at = Some(self);
        while let Some(c) = at {
            if c.dir == dir {
                return true;
            }
            at = c.up.as_deref();
        }
        false
    }
}

/// A directory waiting to be read.
struct Pending {
    /// Where to read it on disk (a canonical path once a symlink was taken).
    disk: PathBuf,
    /// Its path in the bundle ("" for the root).
    bundle: String,
    chain: Rc<Chain>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PackError + '_ {
    move |source| PackError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Pack the directory `root` into a bundle within `limits`.
///
/// Regular files and directories are packed as they are. A symlink whose
/// target resolves inside `root` is followed: the file or directory it
/// points to is packed at the link's own path. A symlink to an absolute
/// path, one that leads outside `root`, one that points to nothing, and
/// one that leads back into a directory containing it are refused, naming
/// the link; so are sockets, pipes and devices. The walk stops at the first
/// entry over `limits`, before reading a file that would not fit.
pub fn pack_dir(root: &Path, limits: &BundleLimits) -> Result<Vec<u8>, PackError> {
    let canon_root = fs::canonicalize(root).map_err(io(root))?;
    if !fs::metadata(&canon_root).map_err(io(root))?.is_dir() {
        return Err(PackError::NotADirectory(root.to_path_buf()));
    }
    let mut builder = BundleBuilder::new(*limits);
    let mut stack = vec![Pending {
        disk: root.to_path_buf(),
        bundle: String::new(),
        chain: Rc::new(Chain {
            dir: canon_root.clone(),
            up: None,
        }),
    }];
    while let Some(dir) = stack.pop() {
        let mut names = Vec::new();
        for entry in fs::read_dir(&dir.disk).map_err(io(&dir.disk))? {
            let entry = entry.map_err(io(&dir.disk))?;
            names.push(entry.file_name());
        }
        // A fixed order, so errors and limits hit the same entry each run.
        names.sort();
        for name in names {
            let disk = dir.disk.join(&name);
            let Some(name) = name.to_str() else {
                return Err(PackError::NotUtf8(disk));
            };
            let bundle = if dir.bundle.is_empty() {
                name.to_string()
            } else {
                format!("{}/{name}", dir.bundle)
            };
            let meta = fs::symlink_metadata(&disk).map_err(io(&disk))?;
            let (real, meta) = if meta.file_type().is_symlink() {
                let real = follow(&disk, &canon_root)?;
                let meta = fs::metadata(&real).map_err(io(&disk))?;
                if meta.is_dir() && dir.chain.contains(&real) {
                    return Err(PackError::SymlinkLoop {
                        path: disk.clone(),
                        target: fs::read_link(&disk).map_err(io(&disk))?,
                    });
                }
                (real, meta)
            } else {
                (disk.clone(), meta)
            };
            let bundle_err = |source| PackError::Bundle {
                path: disk.clone(),
                source,
            };
            if meta.is_dir() {
                builder.add_dir(&bundle).map_err(bundle_err)?;
                let canon = fs::canonicalize(&real).map_err(io(&disk))?;
                stack.push(Pending {
                    disk: real,
                    bundle,
                    chain: Rc::new(Chain {
                        dir: canon,
                        up: Some(dir.chain.clone()),
                    }),
                });
            } else if meta.is_file() {
                builder
                    .check_file(&bundle, meta.len())
                    .map_err(bundle_err)?;
                let data = fs::read(&real).map_err(io(&disk))?;
                builder.add_file(&bundle, data).map_err(bundle_err)?;
            } else {
                return Err(PackError::Unsupported(disk));
            }
        }
    }
    Ok(builder.finish())
}

/// Whether `path`, with `.` and `..` applied as text, stays inside `root`.
fn lexically_inside(path: &Path, root: &Path) -> bool {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out.starts_with(root)
}

/// Resolve the symlink at `link`, which must stay inside `root`; returns
/// the canonical path it leads to.
fn follow(link: &Path, root: &Path) -> Result<PathBuf, PackError> {
    let target = fs::read_link(link).map_err(io(link))?;
    if target.is_absolute() {
        return Err(PackError::AbsoluteSymlink {
            path: link.to_path_buf(),
            target,
        });
    }
    // Where the link points, read as plain path text from its (canonical)
    // directory: a target outside the bundle is refused as such whether or
    // not it exists there.
    if let Some(dir) = link.parent().and_then(|d| fs::canonicalize(d).ok())
        && !lexically_inside(&dir.join(&target), root)
    {
        return Err(PackError::EscapingSymlink {
            path: link.to_path_buf(),
            target,
        });
    }
    let real = match fs::canonicalize(link) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(PackError::DanglingSymlink {
                path: link.to_path_buf(),
                target,
            });
        }
        Err(e) => {
            return Err(PackError::Io {
                path: link.to_path_buf(),
                source: e,
            });
        }
    };
    if !real.starts_with(root) {
        return Err(PackError::EscapingSymlink {
            path: link.to_path_buf(),
            target,
        });
    }
    Ok(real)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dangling_link_out_of_the_bundle_is_refused_as_escaping() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("site");
        fs::create_dir(&root).expect("mkdir");
        std::os::unix::fs::symlink("../../nowhere-at-all", root.join("up")).expect("symlink");
        std::os::unix::fs::symlink("missing.txt", root.join("inside")).expect("symlink");
        let limits = BundleLimits::default();
        let canon = fs::canonicalize(&root).expect("canonical");
        assert!(matches!(
            follow(&canon.join("up"), &canon),
            Err(PackError::EscapingSymlink { .. })
        ));
        assert!(matches!(
            follow(&canon.join("inside"), &canon),
            Err(PackError::DanglingSymlink { .. })
        ));
        assert!(pack_dir(&root, &limits).is_err());
    }

    #[test]
    fn dots_are_applied_as_text() {
        let root = Path::new("/b/site");
        assert!(lexically_inside(Path::new("/b/site/a/../c"), root));
        assert!(!lexically_inside(Path::new("/b/site/../x"), root));
        assert!(!lexically_inside(Path::new("/b/site/a/../../../x"), root));
    }
}
