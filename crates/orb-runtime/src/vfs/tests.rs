//! The filesystem on its own: lookups, changes, errors and limits.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use orb_proto::bundle::{BundleBuilder, BundleLimits};

use super::*;
use crate::wasi::errno::*;

fn tree(files: &[(&str, &str)], dirs: &[&str]) -> FileTree {
    let mut b = BundleBuilder::new(BundleLimits::default());
    for d in dirs {
        b.add_dir(d).unwrap();
    }
    for (path, body) in files {
        b.add_file(path, body.as_bytes().to_vec()).unwrap();
    }
    FileTree::from_bundle(Bytes::from(b.finish()), &BundleLimits::default()).unwrap()
}

fn limits() -> ScratchLimits {
    ScratchLimits {
        max_bytes: 1024 * 1024,
        max_entries: 100,
    }
}

fn site() -> Vfs {
    let mut v = Vfs::new(
        tree(
            &[
                ("index.html", "<h1>home</h1>"),
                ("css/site.css", "body{}"),
                ("docs/a/b.txt", "deep"),
            ],
            &["empty"],
        ),
        limits(),
    );
    v.set_now(1_000);
    v
}

fn read(v: &Vfs, path: &str) -> Result<String, Errno> {
    let ino = v.resolve(ROOT, path, true)?.ino.ok_or(ENOENT)?;
    Ok(String::from_utf8(v.data(ino)?.to_vec()).unwrap())
}

fn names(v: &Vfs, path: &str) -> Vec<String> {
    let ino = v.resolve(ROOT, path, true).unwrap().ino.unwrap();
    v.entries(ino, 0)
        .unwrap()
        .map(|(n, _)| n.to_string())
        .collect()
}

fn create(v: &mut Vfs, path: &str, body: &str) -> Ino {
    let flags = OpenFlags {
        create: true,
        ..OpenFlags::default()
    };
    let ino = v.open(ROOT, path, false, flags, true).unwrap();
    v.write_at(ino, 0, body.as_bytes()).unwrap();
    ino
}

#[test]
fn reads_the_tree_without_copying_it() {
    let v = site();
    assert_eq!(read(&v, "index.html").unwrap(), "<h1>home</h1>");
    assert_eq!(read(&v, "docs/a/b.txt").unwrap(), "deep");
    assert_eq!(read(&v, "docs/./a/../a/b.txt").unwrap(), "deep");
    assert_eq!(names(&v, "."), ["css", "docs", "empty", "index.html"]);
    assert_eq!(v.used(), 0, "reading costs no scratch space");
    let st = v
        .stat(v.resolve(ROOT, "css/site.css", false).unwrap().ino.unwrap())
        .unwrap();
    assert_eq!((st.kind, st.size, st.nlink), (Kind::File, 6, 1));
    let docs = v.resolve(ROOT, "docs", false).unwrap().ino.unwrap();
    let a = v.resolve(ROOT, "docs/a", false).unwrap().ino.unwrap();
    assert_eq!(v.parent(a).unwrap(), docs);
    assert_eq!(v.parent(ROOT).unwrap(), ROOT);
}

#[test]
fn lookups_fail_with_the_posix_errors() {
    let v = site();
    assert_eq!(v.resolve(ROOT, "nope/x", false), Err(ENOENT));
    assert_eq!(v.resolve(ROOT, "index.html/x", false), Err(ENOTDIR));
    assert_eq!(v.resolve(ROOT, "index.html/", false), Err(ENOTDIR));
    assert_eq!(v.resolve(ROOT, "", false), Err(ENOENT));
    assert_eq!(v.resolve(ROOT, "a\0b", false), Err(EINVAL));
    assert_eq!(
        v.resolve(ROOT, &"x/".repeat(3000), false),
        Err(ENAMETOOLONG)
    );
    let missing = v.resolve(ROOT, "css/new.css", false).unwrap();
    assert_eq!(missing.ino, None);
    assert_eq!(missing.last, Last::Name("new.css".to_string()));
}

#[test]
fn paths_never_leave_the_starting_directory() {
    let v = site();
    assert_eq!(v.resolve(ROOT, "/index.html", false), Err(ENOTCAPABLE));
    assert_eq!(v.resolve(ROOT, "..", false), Err(ENOTCAPABLE));
    assert_eq!(v.resolve(ROOT, "css/../../x", false), Err(ENOTCAPABLE));
    // Relative to a subdirectory, its parent is out of reach too.
    let docs = v.resolve(ROOT, "docs", false).unwrap().ino.unwrap();
    assert_eq!(v.resolve(docs, "../index.html", false), Err(ENOTCAPABLE));
    assert_eq!(
        v.resolve(docs, "a/../a/b.txt", false).unwrap().ino,
        v.resolve(ROOT, "docs/a/b.txt", false).unwrap().ino
    );
}

#[test]
fn writes_are_copy_on_write_and_private() {
    let t = tree(&[("f.txt", "original")], &[]);
    let mut a = Vfs::new(t.clone(), limits());
    let b = Vfs::new(t.clone(), limits());
    let ino = a.resolve(ROOT, "f.txt", false).unwrap().ino.unwrap();
    a.write_at(ino, 0, b"CHANGED!").unwrap();
    a.unlink(ROOT, "f.txt").ok();
    create(&mut a, "new.txt", "mine");
    assert_eq!(read(&b, "f.txt").unwrap(), "original");
    assert_eq!(read(&b, "new.txt"), Err(ENOENT));
    // A third layer over the same tree starts clean as well.
    let c = Vfs::new(t, limits());
    assert_eq!(read(&c, "f.txt").unwrap(), "original");
}

#[test]
fn create_open_truncate_and_exclusive() {
    let mut v = site();
    let ino = create(&mut v, "css/new.css", "p{}");
    assert_eq!(read(&v, "css/new.css").unwrap(), "p{}");
    let excl = OpenFlags {
        create: true,
        exclusive: true,
        ..OpenFlags::default()
    };
    assert_eq!(v.open(ROOT, "css/new.css", false, excl, false), Err(EEXIST));
    let trunc = OpenFlags {
        truncate: true,
        ..OpenFlags::default()
    };
    assert_eq!(v.open(ROOT, "css/new.css", false, trunc, true), Ok(ino));
    assert_eq!(read(&v, "css/new.css").unwrap(), "");
    let dir = OpenFlags {
        directory: true,
        ..OpenFlags::default()
    };
    assert_eq!(v.open(ROOT, "index.html", false, dir, false), Err(ENOTDIR));
    assert_eq!(
        v.open(ROOT, "css", false, OpenFlags::default(), true),
        Err(EISDIR)
    );
    assert!(v.open(ROOT, "css", false, dir, false).is_ok());
    assert_eq!(
        v.open(ROOT, "missing", false, OpenFlags::default(), false),
        Err(ENOENT)
    );
    let both = OpenFlags {
        create: true,
        directory: true,
        ..OpenFlags::default()
    };
    assert_eq!(v.open(ROOT, "x", false, both, false), Err(EINVAL));
    // Writing past the end fills the gap with zeros.
    v.write_at(ino, 4, b"z").unwrap();
    assert_eq!(v.data(ino).unwrap(), b"\0\0\0\0z");
}

#[test]
fn mkdir_rmdir_unlink() {
    let mut v = site();
    v.create_dir(ROOT, "new").unwrap();
    v.create_dir(ROOT, "new/inner/").unwrap();
    assert_eq!(v.create_dir(ROOT, "new"), Err(EEXIST));
    assert_eq!(v.create_dir(ROOT, "."), Err(EEXIST));
    assert_eq!(v.remove_dir(ROOT, "new"), Err(ENOTEMPTY));
    assert_eq!(v.remove_dir(ROOT, "index.html"), Err(ENOTDIR));
    assert_eq!(v.unlink(ROOT, "new"), Err(EISDIR));
    assert_eq!(v.unlink(ROOT, "index.html/"), Err(ENOTDIR));
    v.remove_dir(ROOT, "new/inner").unwrap();
    v.remove_dir(ROOT, "new/").unwrap();
    v.remove_dir(ROOT, "empty").unwrap();
    v.unlink(ROOT, "index.html").unwrap();
    assert_eq!(names(&v, "."), ["css", "docs"]);
    assert_eq!(v.unlink(ROOT, "index.html"), Err(ENOENT));
    assert_eq!(v.remove_dir(ROOT, "."), Err(EINVAL));
}

#[test]
fn rename_follows_posix() {
    let mut v = site();
    // A file over a missing name, then over an existing file.
    v.rename(ROOT, "index.html", ROOT, "home.html").unwrap();
    assert_eq!(read(&v, "home.html").unwrap(), "<h1>home</h1>");
    create(&mut v, "other.html", "other");
    v.rename(ROOT, "other.html", ROOT, "home.html").unwrap();
    assert_eq!(read(&v, "home.html").unwrap(), "other");
    assert_eq!(read(&v, "other.html"), Err(ENOENT));
    // Files and directories do not replace each other.
    assert_eq!(v.rename(ROOT, "home.html", ROOT, "css"), Err(EISDIR));
    assert_eq!(v.rename(ROOT, "css", ROOT, "home.html"), Err(ENOTDIR));
    // A directory over an empty one, not over a full one.
    assert_eq!(v.rename(ROOT, "css", ROOT, "docs"), Err(ENOTEMPTY));
    v.rename(ROOT, "css", ROOT, "empty").unwrap();
    assert_eq!(read(&v, "empty/site.css").unwrap(), "body{}");
    // Not into itself.
    assert_eq!(v.rename(ROOT, "docs", ROOT, "docs/a/inside"), Err(EINVAL));
    // Moving a directory updates its "..".
    v.rename(ROOT, "docs/a", ROOT, "empty/a/").unwrap();
    let a = v.resolve(ROOT, "empty/a", false).unwrap().ino.unwrap();
    let empty = v.resolve(ROOT, "empty", false).unwrap().ino.unwrap();
    assert_eq!(v.parent(a).unwrap(), empty);
    assert_eq!(read(&v, "empty/a/b.txt").unwrap(), "deep");
    // A file with a trailing slash on either side.
    assert_eq!(v.rename(ROOT, "home.html/", ROOT, "x"), Err(ENOTDIR));
    assert_eq!(v.rename(ROOT, "home.html", ROOT, "x/"), Err(ENOTDIR));
    // Renaming onto itself is a no-op.
    v.rename(ROOT, "home.html", ROOT, "home.html").unwrap();
    assert_eq!(read(&v, "home.html").unwrap(), "other");
}

#[test]
fn hard_links_share_an_inode() {
    let mut v = site();
    v.link(ROOT, "index.html", false, ROOT, "copy.html")
        .unwrap();
    let a = v.resolve(ROOT, "index.html", false).unwrap().ino.unwrap();
    let b = v.resolve(ROOT, "copy.html", false).unwrap().ino.unwrap();
    assert_eq!(a, b);
    assert_eq!(v.stat(a).unwrap().nlink, 2);
    v.write_at(a, 0, b"<h2>").unwrap();
    assert_eq!(read(&v, "copy.html").unwrap(), "<h2>home</h1>");
    v.unlink(ROOT, "index.html").unwrap();
    assert_eq!(v.stat(b).unwrap().nlink, 1);
    assert_eq!(v.link(ROOT, "css", false, ROOT, "d"), Err(EPERM));
    assert_eq!(v.link(ROOT, "copy.html", false, ROOT, "docs"), Err(EEXIST));
    assert_eq!(v.link(ROOT, "copy.html", false, ROOT, "new/"), Err(ENOENT));
}

#[test]
fn symlinks_resolve_loop_and_stay_inside() {
    let mut v = site();
    v.symlink("css/site.css", ROOT, "style").unwrap();
    v.symlink("docs", ROOT, "d").unwrap();
    assert_eq!(read(&v, "style").unwrap(), "body{}");
    assert_eq!(read(&v, "d/a/b.txt").unwrap(), "deep");
    assert_eq!(v.readlink(ROOT, "style").unwrap(), "css/site.css");
    assert_eq!(v.readlink(ROOT, "index.html"), Err(EINVAL));
    // Not followed at the end unless asked (or with a trailing slash).
    let link = v.resolve(ROOT, "d", false).unwrap().ino.unwrap();
    assert_eq!(v.kind(link).unwrap(), Kind::Symlink);
    assert_eq!(
        v.resolve(ROOT, "d/", false).unwrap().ino,
        v.resolve(ROOT, "docs", false).unwrap().ino
    );
    // Opening a symlink without following it is ELOOP.
    assert_eq!(
        v.open(ROOT, "style", false, OpenFlags::default(), false),
        Err(ELOOP)
    );
    // Loops.
    v.symlink("loop", ROOT, "loop").unwrap();
    v.symlink("ping", ROOT, "pong").unwrap();
    v.symlink("pong", ROOT, "ping").unwrap();
    assert_eq!(v.resolve(ROOT, "loop", true), Err(ELOOP));
    assert_eq!(v.resolve(ROOT, "ping/x", false), Err(ELOOP));
    // Escapes.
    assert_eq!(v.symlink("/etc/passwd", ROOT, "abs"), Err(ENOTCAPABLE));
    v.symlink("../outside", ROOT, "up").unwrap();
    assert_eq!(v.resolve(ROOT, "up", true), Err(ENOTCAPABLE));
    let docs = v.resolve(ROOT, "docs", false).unwrap().ino.unwrap();
    v.symlink("../index.html", docs, "home").unwrap();
    assert_eq!(read(&v, "docs/home").unwrap(), "<h1>home</h1>");
    assert_eq!(v.resolve(docs, "home", true), Err(ENOTCAPABLE));
    // A dangling link: creating through it makes the target.
    v.symlink("made.txt", ROOT, "dangling").unwrap();
    let flags = OpenFlags {
        create: true,
        ..OpenFlags::default()
    };
    v.open(ROOT, "dangling", true, flags, true).unwrap();
    assert_eq!(read(&v, "made.txt").unwrap(), "");
    // Existing names and trailing slashes.
    assert_eq!(v.symlink("x", ROOT, "css"), Err(EEXIST));
    assert_eq!(v.symlink("x", ROOT, "new/"), Err(ENOENT));
    assert_eq!(v.symlink("x", ROOT, "index.html/"), Err(ENOTDIR));
}

#[test]
fn unlinked_open_files_live_until_closed() {
    let mut v = site();
    let ino = create(&mut v, "tmp", "scratch data");
    v.retain(ino);
    let before = v.used();
    v.unlink(ROOT, "tmp").unwrap();
    assert_eq!(read(&v, "tmp"), Err(ENOENT));
    assert_eq!(v.data(ino).unwrap(), b"scratch data");
    assert_eq!(v.stat(ino).unwrap().nlink, 0);
    v.release(ino);
    assert!(v.used() < before);
    assert_eq!(v.data(ino), Err(ENOENT));
}

#[test]
fn scratch_space_is_bounded_and_given_back() {
    let mut v = Vfs::new(
        tree(&[("big", &"x".repeat(10_000))], &[]),
        ScratchLimits {
            max_bytes: 8 * 1024,
            max_entries: 3,
        },
    );
    // Changing a large tree file copies it into the layer: over the limit.
    let big = v.resolve(ROOT, "big", false).unwrap().ino.unwrap();
    assert_eq!(v.write_at(big, 0, b"y"), Err(ENOSPC));
    assert!(v.take_full());
    assert!(!v.take_full());
    assert_eq!(
        v.data(big).unwrap()[0],
        b'x',
        "a refused write changes nothing"
    );
    // Shrinking a shared file costs nothing; it stays shared.
    let before = v.used();
    v.set_len(big, 10).unwrap();
    assert_eq!(v.data(big).unwrap().len(), 10);
    assert_eq!(v.used(), before);
    // The first change to the root copies it into the layer; measure from
    // there.
    v.create_dir(ROOT, "warm").unwrap();
    v.remove_dir(ROOT, "warm").unwrap();
    let baseline = v.used();
    let f = create(&mut v, "f", "");
    assert_eq!(v.write_at(f, 0, &[1; 9_000]), Err(ENOSPC));
    v.write_at(f, 0, &[1; 4_000]).unwrap();
    assert_eq!(v.set_len(f, 1 << 40), Err(ENOSPC));
    assert_eq!(v.write_at(f, u64::MAX, b"x"), Err(EFBIG));
    // Entries are bounded too.
    v.create_dir(ROOT, "d1").unwrap();
    v.create_dir(ROOT, "d2").unwrap();
    assert_eq!(v.create_dir(ROOT, "d3"), Err(ENOSPC));
    // Removing gives the space and the entries back.
    v.unlink(ROOT, "f").unwrap();
    v.remove_dir(ROOT, "d1").unwrap();
    v.remove_dir(ROOT, "d2").unwrap();
    assert_eq!(v.used(), baseline);
    v.create_dir(ROOT, "d3").unwrap();
}

#[test]
fn names_are_bounded() {
    let mut v = site();
    let long = "n".repeat(256);
    assert_eq!(v.create_dir(ROOT, &long), Err(ENAMETOOLONG));
    v.create_dir(ROOT, &"n".repeat(255)).unwrap();
    assert_eq!(v.symlink(&"t".repeat(5000), ROOT, "l"), Err(ENAMETOOLONG));
}

#[test]
fn removed_directories_take_no_new_names() {
    let mut v = site();
    let empty = v.resolve(ROOT, "empty", false).unwrap().ino.unwrap();
    v.retain(empty);
    v.remove_dir(ROOT, "empty").unwrap();
    assert_eq!(v.create_dir(empty, "x"), Err(ENOENT));
    v.release(empty);
}

#[test]
fn times_change_with_writes_and_on_request() {
    let mut v = site();
    let ino = create(&mut v, "t", "a");
    assert_eq!(v.stat(ino).unwrap().mtim, 1_000);
    v.set_now(2_000);
    v.write_at(ino, 1, b"b").unwrap();
    let st = v.stat(ino).unwrap();
    assert_eq!((st.mtim, st.ctim), (2_000, 2_000));
    v.set_times(
        ino,
        Times {
            atim: None,
            mtim: Some(5),
        },
    )
    .unwrap();
    let st = v.stat(ino).unwrap();
    assert_eq!((st.atim, st.mtim), (1_000, 5));
    // Tree nodes have no times until changed.
    let idx = v.resolve(ROOT, "index.html", false).unwrap().ino.unwrap();
    assert_eq!(v.stat(idx).unwrap().mtim, 0);
}
