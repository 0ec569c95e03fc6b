//! Property tests of the bundle format: random trees round-trip, random
//! bytes never panic the decoder, and anything the decoder accepts
//! re-encodes to the very same bytes (one tree, one encoding, one hash).

use std::collections::BTreeMap;

use orb_proto::ContentHash;
use orb_proto::bundle::{BundleBuilder, BundleLimits, Entry, MAGIC, decode};
use proptest::prelude::*;

/// A random tree: paths of 1 to 3 components from a small alphabet (so that
/// prefixes, siblings and shared parents are common), each a file with
/// contents or a directory.
fn tree() -> impl Strategy<Value = BTreeMap<String, Option<Vec<u8>>>> {
    let component = prop::sample::select(vec![
        "a", "b", "a-b", "a.b", "z", "é", "日本", "x y", "A", "a0",
    ]);
    let path = prop::collection::vec(component, 1..=3).prop_map(|c| c.join("/"));
    let body = prop::option::of(prop::collection::vec(any::<u8>(), 0..40));
    prop::collection::btree_map(path, body, 0..24)
}

/// Add `tree` to a builder, skipping entries that conflict with earlier
/// ones (a file where a directory is needed); returns what was kept.
fn build(tree: &BTreeMap<String, Option<Vec<u8>>>) -> (Vec<u8>, BTreeMap<String, Option<Vec<u8>>>) {
    let mut b = BundleBuilder::new(BundleLimits::default());
    let mut kept = BTreeMap::new();
    // Directories first, so that files never block their own parents.
    let dirs = tree.iter().filter(|(_, d)| d.is_none());
    let files = tree.iter().filter(|(_, d)| d.is_some());
    for (path, data) in dirs.chain(files) {
        let ok = match data {
            None => b.add_dir(path).is_ok(),
            Some(d) => b.add_file(path, d.clone()).is_ok(),
        };
        if ok {
            kept.insert(path.clone(), data.clone());
        }
    }
    (b.finish(), kept)
}

fn re_encode(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut b = BundleBuilder::new(BundleLimits::default());
    for e in entries {
        match e {
            Entry::Dir(p) => b.add_dir(p).expect("decoded dir re-adds"),
            Entry::File(p, d) => b.add_file(p, d.to_vec()).expect("decoded file re-adds"),
        }
    }
    b.finish()
}

proptest! {
    #[test]
    fn random_trees_round_trip(t in tree()) {
        let (bytes, kept) = build(&t);
        let entries = decode(&bytes, &BundleLimits::default()).expect("built bundle decodes");
        // Every kept path is there with its contents; implied parents are
        // directories.
        for (path, data) in &kept {
            let found = entries.iter().find(|e| e.path() == path).expect("path present");
            match (found, data) {
                (Entry::Dir(_), None) => {}
                (Entry::File(_, got), Some(want)) => prop_assert_eq!(*got, want.as_slice()),
                other => prop_assert!(false, "kind mismatch {:?}", other),
            }
        }
        for e in &entries {
            if !kept.contains_key(e.path()) {
                prop_assert!(matches!(e, Entry::Dir(_)), "only parents are implied");
            }
        }
        prop_assert_eq!(re_encode(&entries), bytes.clone());
    }

    #[test]
    fn insertion_order_does_not_change_the_hash(t in tree()) {
        let (bytes, kept) = build(&t);
        let mut b = BundleBuilder::new(BundleLimits::default());
        for (path, data) in kept.iter().rev() {
            match data {
                None => b.add_dir(path).expect("dir"),
                Some(d) => b.add_file(path, d.clone()).expect("file"),
            }
        }
        prop_assert_eq!(ContentHash::of(&b.finish()), ContentHash::of(&bytes));
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode(&bytes, &BundleLimits::default());
        let mut with_magic = MAGIC.to_vec();
        with_magic.extend_from_slice(&bytes);
        if let Ok(entries) = decode(&with_magic, &BundleLimits::default()) {
            prop_assert_eq!(re_encode(&entries), with_magic);
        }
    }

    #[test]
    fn mutated_bundles_never_panic_and_stay_canonical(
        t in tree(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let (mut bytes, _) = build(&t);
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if let Ok(entries) = decode(&bytes, &BundleLimits::default()) {
            prop_assert_eq!(re_encode(&entries), bytes);
        }
    }
}
