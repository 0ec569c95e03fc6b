//! kill -9 at random moments while a child process writes every kind of
//! record, then reopen and compare with what the child acknowledged.
//!
//! The child is this test binary re-executed with `ORB_STORE_CRASH_CHILD`
//! set. It performs a deterministic sequence of store calls (derived from a
//! seed) and prints `ack N` after call N returned, i.e. after its commit.
//! The parent regenerates the same sequence, so it knows exactly what every
//! acknowledged call wrote. After each kill it reopens the store and
//! requires the contents to be *exactly* the acknowledged calls applied in
//! order, optionally plus the one call that may have been in flight: a
//! commit is all or nothing, and nothing acknowledged is ever lost.
//!
//! `ORB_CRASH_SEED=N` reproduces a run; the seed is printed either way.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use orb_proto::ContentHash;
use orb_proto::wire::FunctionSettings;
use orb_store::{FunctionRecord, HostedRecord, Store};

/// Kill/reopen cycles on one data directory.
const ITERATIONS: u64 = 20;
/// Blob namespace the child writes (the ledger's shape: many small values).
const NS: &str = "crash-ledger";

/// The workspace's seeded generator, so a failing run can be replayed
/// (`ORB_CRASH_SEED`).
struct Rng(rand::rngs::StdRng);

impl Rng {
    fn new(seed: u64) -> Rng {
        use rand::SeedableRng;
        Rng(rand::rngs::StdRng::seed_from_u64(seed))
    }
    fn below(&mut self, n: u64) -> u64 {
        rand::Rng::gen_range(&mut self.0, 0..n)
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = vec![0; len];
        rand::RngCore::fill_bytes(&mut self.0, &mut out);
        out
    }
}

fn seed() -> u64 {
    match std::env::var("ORB_CRASH_SEED") {
        Ok(s) => s.trim().parse().expect("ORB_CRASH_SEED is a u64"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    }
}

/// One store call of the child. Two-step writes (module, then the record
/// that names it) follow the order the nodes use, so "a record never points
/// at a missing module" must hold at every kill point.
#[derive(Debug, Clone)]
enum Call {
    /// `put_deploy`: module + function record in one transaction.
    Deploy { name: String, module: Vec<u8> },
    /// `put_module` alone (a super storing a module fetched for a peer, a
    /// client storing a replica's module).
    Module { module: Vec<u8> },
    /// `put_function` for a module already stored (placements saved after
    /// a deploy).
    Function {
        name: String,
        hash: ContentHash,
        size: u64,
        placements: u8,
    },
    /// `put_hosted` for a module already stored.
    Hosted { name: String, hash: ContentHash },
    /// `remove_hosted`.
    Unhost { name: String },
    /// `put_blobs`: several values in one transaction.
    Blobs { items: Vec<(Vec<u8>, Vec<u8>)> },
}

impl Call {
    fn describe(&self) -> String {
        match self {
            Call::Deploy { name, module } => {
                format!("deploy {name} {}", ContentHash::of(module).short())
            }
            Call::Module { module } => format!("module {}", ContentHash::of(module).short()),
            Call::Function { name, hash, .. } => format!("function {name} {}", hash.short()),
            Call::Hosted { name, hash } => format!("hosted {name} {}", hash.short()),
            Call::Unhost { name } => format!("unhost {name}"),
            Call::Blobs { items } => format!("blobs {}", items.len()),
        }
    }
}

/// The deterministic call sequence of run `run`: the child executes it, the
/// parent regenerates it to know what each acknowledged call wrote.
struct Calls {
    rng: Rng,
    run: u64,
    n: u64,
    queue: VecDeque<Call>,
}

impl Calls {
    fn new(seed: u64, run: u64) -> Calls {
        Calls {
            rng: Rng::new(seed ^ run.wrapping_mul(0x2545_f491_4f6c_dd1d)),
            run,
            n: 0,
            queue: VecDeque::new(),
        }
    }

    fn module(&mut self) -> Vec<u8> {
        // Mostly small modules, some large ones so a commit spans many
        // pages and a kill can land in the middle of writing them.
        let len = if self.rng.below(8) == 0 {
            32 * 1024 + self.rng.below(128 * 1024)
        } else {
            100 + self.rng.below(4000)
        };
        self.rng.bytes(len as usize)
    }
}

impl Iterator for Calls {
    type Item = Call;
    fn next(&mut self) -> Option<Call> {
        while self.queue.is_empty() {
            self.n += 1;
            let (run, n) = (self.run, self.n);
            match self.rng.below(100) {
                0..30 => {
                    let module = self.module();
                    self.queue.push_back(Call::Deploy {
                        name: format!("r{run}-d{n}"),
                        module,
                    });
                }
                30..45 => {
                    // Redeploy of a name shared by every run: the stored
                    // hash must be the latest acknowledged one.
                    let name = format!("pool-{}", self.rng.below(6));
                    let module = self.module();
                    self.queue.push_back(Call::Deploy { name, module });
                }
                45..65 => {
                    let module = self.module();
                    let hash = ContentHash::of(&module);
                    let size = module.len() as u64;
                    let name = format!("r{run}-p{n}");
                    self.queue.push_back(Call::Module { module });
                    for placements in [0, 1 + self.rng.below(3) as u8] {
                        self.queue.push_back(Call::Function {
                            name: name.clone(),
                            hash,
                            size,
                            placements,
                        });
                    }
                }
                65..80 => {
                    let module = self.module();
                    let hash = ContentHash::of(&module);
                    let name = format!("h{}", self.rng.below(8));
                    self.queue.push_back(Call::Module { module });
                    self.queue.push_back(Call::Hosted { name, hash });
                }
                80..85 => {
                    let name = format!("h{}", self.rng.below(8));
                    self.queue.push_back(Call::Unhost { name });
                }
                _ => {
                    let count = 1 + self.rng.below(60);
                    let items = (0..count)
                        .map(|i| {
                            let key = format!("k{}", self.rng.below(300)).into_bytes();
                            // The value names its writer, so an update is
                            // always a visible change.
                            let mut value = format!("{run}/{n}/{i}/").into_bytes();
                            let pad = self.rng.below(64) as usize;
                            value.extend(self.rng.bytes(pad));
                            (key, value)
                        })
                        .collect();
                    self.queue.push_back(Call::Blobs { items });
                }
            }
        }
        self.queue.pop_front()
    }
}

fn owner_settings() -> FunctionSettings {
    FunctionSettings {
        replicas: 2,
        max_replicas: 3,
        ..Default::default()
    }
}

/// `n` made-up node IDs (the store does not care which).
fn placements(n: u8) -> Vec<orb_proto::OrbId> {
    (0..n).map(|i| orb_proto::OrbId([i + 1; 32])).collect()
}

fn execute(store: &Store, owner: orb_proto::OrbId, call: &Call) {
    let record = |name: &str, hash: ContentHash, size: u64, p: u8| FunctionRecord {
        name: name.to_string(),
        hash,
        owner,
        size,
        settings: owner_settings(),
        created_ms: 1,
        updated_ms: 2,
        placements: placements(p),
        version: 1,
        history: Vec::new(),
    };
    match call {
        Call::Deploy { name, module } => {
            let f = record(name, ContentHash::of(module), module.len() as u64, 0);
            store.put_deploy(&f, module).unwrap();
        }
        Call::Module { module } => store.put_module(&ContentHash::of(module), module).unwrap(),
        Call::Function {
            name,
            hash,
            size,
            placements,
        } => store
            .put_function(&record(name, *hash, *size, *placements))
            .unwrap(),
        Call::Hosted { name, hash } => store
            .put_hosted(&HostedRecord {
                name: name.clone(),
                hash: *hash,
                settings: FunctionSettings::default(),
            })
            .unwrap(),
        Call::Unhost { name } => {
            store.remove_hosted(name).unwrap();
        }
        Call::Blobs { items } => {
            let refs: Vec<(&[u8], &[u8])> = items
                .iter()
                .map(|(k, v)| (k.as_slice(), v.as_slice()))
                .collect();
            store.put_blobs(NS, &refs).unwrap();
        }
    }
}

/// What the store should hold: (hash, size, placement count) per function,
/// module hashes, hosted name -> hash, blob key -> value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Model {
    functions: BTreeMap<String, (ContentHash, u64, usize)>,
    modules: BTreeSet<ContentHash>,
    hosted: BTreeMap<String, ContentHash>,
    blobs: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Model {
    fn apply(&mut self, call: &Call) {
        match call {
            Call::Deploy { name, module } => {
                let hash = ContentHash::of(module);
                self.modules.insert(hash);
                self.functions
                    .insert(name.clone(), (hash, module.len() as u64, 0));
            }
            Call::Module { module } => {
                self.modules.insert(ContentHash::of(module));
            }
            Call::Function {
                name,
                hash,
                size,
                placements,
            } => {
                self.functions
                    .insert(name.clone(), (*hash, *size, *placements as usize));
            }
            Call::Hosted { name, hash } => {
                self.hosted.insert(name.clone(), *hash);
            }
            Call::Unhost { name } => {
                self.hosted.remove(name);
            }
            Call::Blobs { items } => {
                for (k, v) in items {
                    self.blobs.insert(k.clone(), v.clone());
                }
            }
        }
    }

    /// Read the whole store, checking on the way that every value is intact
    /// and every record's module is present.
    fn read(store: &Store) -> Model {
        let mut m = Model::default();
        for hash in store.module_hashes().unwrap() {
            let bytes = store.module(&hash).unwrap().expect("listed module reads");
            assert_eq!(ContentHash::of(&bytes), hash, "module bytes intact");
            m.modules.insert(hash);
        }
        for f in store.functions().unwrap() {
            assert!(
                m.modules.contains(&f.hash),
                "function {} points at missing module {}",
                f.name,
                f.hash.short()
            );
            m.functions
                .insert(f.name.clone(), (f.hash, f.size, f.placements.len()));
        }
        for h in store.hosted().unwrap() {
            assert!(
                m.modules.contains(&h.hash),
                "hosted {} points at missing module {}",
                h.name,
                h.hash.short()
            );
            m.hosted.insert(h.name, h.hash);
        }
        m.blobs = store.blobs(NS).unwrap().into_iter().collect();
        m
    }

    /// A short account of how `self` differs from `other`.
    fn diff(&self, other: &Model) -> String {
        fn keys<K: Ord + std::fmt::Debug + Clone, V: PartialEq>(
            a: &BTreeMap<K, V>,
            b: &BTreeMap<K, V>,
        ) -> Vec<K> {
            a.keys()
                .chain(b.keys())
                .filter(|k| a.get(*k) != b.get(*k))
                .take(5)
                .cloned()
                .collect()
        }
        format!(
            "functions {:?}, hosted {:?}, blobs {:?}, modules {} vs {}",
            keys(&self.functions, &other.functions),
            keys(&self.hosted, &other.hosted),
            keys(&self.blobs, &other.blobs)
                .iter()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect::<Vec<_>>(),
            self.modules.len(),
            other.modules.len()
        )
    }
}

/// Child half: run the call sequence of `ORB_STORE_CRASH_RUN` until killed
/// (or until it runs out, which the parent's kill comes well before).
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var("ORB_STORE_CRASH_CHILD") else {
        return;
    };
    let seed: u64 = std::env::var("ORB_CRASH_SEED").unwrap().parse().unwrap();
    let run: u64 = std::env::var("ORB_STORE_CRASH_RUN")
        .unwrap()
        .parse()
        .unwrap();
    let store = Store::open(Path::new(&dir)).unwrap();
    let owner = store.load_or_create_identity().unwrap().id();
    // libtest may have printed "test crash_child ... " on this line
    // already: the parent looks for the marker anywhere in a line.
    println!("child-id {owner}");
    for (i, call) in Calls::new(seed, run).take(100_000).enumerate() {
        execute(&store, owner, &call);
        // Printed only after the call returned: the parent counts on it.
        println!("ack {i} {}", call.describe());
    }
}

#[test]
fn random_kill_9_keeps_every_acknowledged_write_and_nothing_half_written() {
    // The child run of this same binary must not recurse.
    if std::env::var("ORB_STORE_CRASH_CHILD").is_ok() {
        return;
    }
    let seed = seed();
    eprintln!("store crash test: seed {seed} (ORB_CRASH_SEED={seed} reproduces the kill moments)");
    let started = Instant::now();
    let exe = std::env::current_exe().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(seed);
    let mut model = Model::default();
    let mut identity: Option<String> = None;
    let (mut total_acked, mut in_flight_landed, mut before_open) = (0usize, 0usize, 0usize);
    for run in 0..ITERATIONS {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env("ORB_STORE_CRASH_CHILD", dir.path())
            .env("ORB_CRASH_SEED", seed.to_string())
            .env("ORB_STORE_CRASH_RUN", run.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Read on a thread so the kill moment does not depend on reading.
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<String>>()
        });
        // Anywhere from during the open (and redb's repair of the previous
        // unclean shutdown) to well into the write loop.
        let delay = Duration::from_millis(if rng.below(5) == 0 {
            rng.below(40)
        } else {
            40 + rng.below(500)
        });
        std::thread::sleep(delay);
        child.kill().unwrap();
        child.wait().unwrap();
        let lines = reader.join().unwrap();

        let mut acked: Option<usize> = None;
        for line in &lines {
            if let Some(id) = line.split_once("child-id ").map(|(_, id)| id) {
                match &identity {
                    Some(first) => assert_eq!(first, id, "identity changed across a crash"),
                    None => identity = Some(id.to_string()),
                }
            } else if let Some(rest) = line.strip_prefix("ack ") {
                let i: usize = rest.split_whitespace().next().unwrap().parse().unwrap();
                assert_eq!(i, acked.map_or(0, |a| a + 1), "acks in order");
                acked = Some(i);
            }
        }
        let count = acked.map_or(0, |a| a + 1);
        total_acked += count;
        // Killed before its open (and redb's repair of the previous
        // unclean shutdown) had finished.
        if !lines.iter().any(|l| l.contains("child-id ")) {
            before_open += 1;
        }
        // Everything acknowledged, then the one call that may have been
        // committed just before the kill (before its ack was printed).
        let mut calls = Calls::new(seed, run);
        for call in calls.by_ref().take(count) {
            model.apply(&call);
        }
        let pending = calls.next().unwrap();
        let mut with_pending = model.clone();
        with_pending.apply(&pending);

        let store = Store::open(dir.path()).unwrap_or_else(|e| {
            panic!("run {run} (seed {seed}): store does not open after kill -9: {e}")
        });
        assert_eq!(store.schema_version().unwrap(), orb_store::SCHEMA_VERSION);
        let actual = Model::read(&store);
        if actual == with_pending && actual != model {
            in_flight_landed += 1;
            model = with_pending;
        } else {
            assert!(
                actual == model,
                "run {run} (seed {seed}): after {count} acknowledged calls and a kill during \
                 [{}], the store holds neither the acknowledged state nor that plus the \
                 in-flight call; differs from acknowledged in: {}",
                pending.describe(),
                actual.diff(&model)
            );
        }
        if let Some(id) = &identity {
            let key = store.load_or_create_identity().unwrap();
            assert_eq!(&key.id().to_string(), id, "identity survives");
        }
        eprintln!(
            "run {run:2}: killed after {:3} ms, {count:4} calls acknowledged, next (maybe in flight): {}",
            delay.as_millis(),
            pending.describe()
        );
        drop(store);
    }
    eprintln!(
        "store crash test: seed {seed}, {ITERATIONS} kills, {total_acked} acknowledged calls, \
         {in_flight_landed} in-flight calls found committed, {before_open} kills before the \
         open had finished, {} functions, {} modules, {:.1} s",
        model.functions.len(),
        model.modules.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(total_acked > 0, "the child never acknowledged a write");
    assert!(identity.is_some(), "the child never reported its identity");
}

/// The placements of an older deploy, saved after a newer deploy of the
/// same name committed, leave the newer record alone (and a kill -9 right
/// after cannot bring the older module back).
#[test]
fn late_placements_never_revert_a_newer_deploy() {
    if std::env::var("ORB_STORE_CRASH_CHILD").is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let owner = store.load_or_create_identity().unwrap().id();
    let deploy = |module: &[u8]| FunctionRecord {
        name: "f".into(),
        hash: ContentHash::of(module),
        owner,
        size: module.len() as u64,
        settings: owner_settings(),
        created_ms: 1,
        updated_ms: 2,
        placements: Vec::new(),
        version: 1,
        history: Vec::new(),
    };
    let (old, new) = (deploy(b"old module"), deploy(b"new module"));
    store.put_deploy(&old, b"old module").unwrap();
    store.put_deploy(&new, b"new module").unwrap();
    assert!(
        !store
            .update_placements("f", &old.hash, &placements(2))
            .unwrap(),
        "superseded: nothing written"
    );
    assert!(
        store
            .update_placements("f", &new.hash, &placements(1))
            .unwrap()
    );
    assert!(
        !store
            .update_placements("gone", &new.hash, &placements(1))
            .unwrap()
    );
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    let f = store.function("f").unwrap().unwrap();
    assert_eq!((f.hash, f.placements), (new.hash, placements(1)));
    assert_eq!(store.functions().unwrap().len(), 1);
}
