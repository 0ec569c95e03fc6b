//! Crash consistency with real processes: `kill -9` a super or a client at
//! a random moment during a storm of deploys and calls, restart it on the
//! same data directory (and ports), and check that every acknowledged
//! deploy is still there, the store opens, and nothing is half-written
//! (no function record without its module, no wrong hash).
//!
//! The kill moments come from a seeded RNG; the seed is printed, and
//! `ORB_CRASH_SEED=N` replays the same choices (process timing still
//! varies, so a replay hits nearby points, not the very same instruction).

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use common::*;
use orb_proto::ContentHash;

/// Concurrent deploy commands during a storm.
const DEPLOYERS: usize = 3;
/// Names every deployer updates now and then (`shared-N`).
const SHARED_NAMES: u64 = 2;
/// How long after a restart the network may take to serve every function
/// again (clients notice the restart, reconnect, replicas are re-placed).
/// Generous: debug builds on two shared cores.
const RECOVERY: Duration = Duration::from_secs(90);

/// The workspace's seeded generator, so a failing run can be replayed
/// (`ORB_CRASH_SEED`).
struct Rng(rand::rngs::StdRng);

impl Rng {
    fn new(seed: u64) -> Rng {
        use rand::SeedableRng;
        Rng(rand::rngs::StdRng::seed_from_u64(seed))
    }
    fn next(&mut self) -> u64 {
        rand::RngCore::next_u64(&mut self.0)
    }
    fn below(&mut self, n: u64) -> u64 {
        rand::Rng::gen_range(&mut self.0, 0..n)
    }
    fn fork(&mut self) -> Rng {
        Rng::new(self.next())
    }
}

/// `ORB_CRASH_SEED` if set, else the clock; printed by the caller.
fn seed() -> u64 {
    match std::env::var("ORB_CRASH_SEED") {
        Ok(s) => s.trim().parse().expect("ORB_CRASH_SEED is a u64"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    }
}

/// One deploy command of a storm.
struct Attempt {
    name: String,
    hash: String,
    started: Instant,
    /// When the command returned (`None` while in flight).
    ended: Option<Instant>,
    acked: bool,
}

/// What a storm did, shared by its deployers, its callers and the checks.
#[derive(Default)]
struct Ledger {
    /// Every deploy command, in start order. Each has its own module (its
    /// own hash), so a stored hash names the one deploy that wrote it.
    attempts: Vec<Attempt>,
    deploys_failed: usize,
    /// The first few distinct reasons deploys failed, for the report.
    failures: Vec<String>,
    calls_ok: usize,
    calls_failed: usize,
}

impl Ledger {
    fn acked(&self) -> impl Iterator<Item = &Attempt> {
        self.attempts.iter().filter(|a| a.acked)
    }

    /// Names with at least one acknowledged deploy.
    fn acked_names(&self) -> std::collections::BTreeSet<&str> {
        self.acked().map(|a| a.name.as_str()).collect()
    }

    /// Whether `hash` may be what `name` holds: it was deployed under that
    /// name, and no acknowledged deploy of the name *started after* it had
    /// returned (that one is later in real time, durable, and must win).
    /// Deploys that overlapped in time may land in either order.
    fn may_hold(&self, name: &str, hash: &str) -> Result<(), String> {
        let Some(a) = self
            .attempts
            .iter()
            .find(|a| a.name == name && a.hash == hash)
        else {
            return Err(format!(
                "{name} holds {hash}, never deployed under that name"
            ));
        };
        let Some(ended) = a.ended else {
            return Ok(());
        };
        match self.acked().find(|b| b.name == name && b.started > ended) {
            Some(b) => Err(format!(
                "{name} holds {hash} (its deploy returned {:?} ago) but the later deploy {} \
                 (started {:?} ago, acknowledged) was lost",
                ended.elapsed(),
                b.hash,
                b.started.elapsed()
            )),
            None => Ok(()),
        }
    }

    fn acked_count(&self) -> usize {
        self.acked().count()
    }
}

type Shared = Arc<Mutex<Ledger>>;

fn ledger(l: &Shared) -> std::sync::MutexGuard<'_, Ledger> {
    l.lock().unwrap_or_else(|e| e.into_inner())
}

/// Deploy distinct modules until `stop`: `updates` percent of them as an
/// update of a name every deployer shares (so updates of one name run
/// concurrently), the others under fresh names. Each attempt is recorded
/// before it starts and its outcome after the CLI returned.
fn deployer(
    api: SocketAddr,
    hello: PathBuf,
    prefix: String,
    updates: u64,
    mut rng: Rng,
    book: Shared,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    let mut i = 0;
    while !stop.load(Ordering::SeqCst) {
        let tag = format!("{prefix}-{i}");
        i += 1;
        let name = if rng.below(100) < updates {
            format!("shared-{}", rng.below(SHARED_NAMES))
        } else {
            tag.clone()
        };
        let file = tagged_module(&hello, &tag)?;
        let hash = ContentHash::of(&std::fs::read(&file)?).to_string();
        let index = {
            let mut l = ledger(&book);
            l.attempts.push(Attempt {
                name: name.clone(),
                hash: hash.clone(),
                started: Instant::now(),
                ended: None,
                acked: false,
            });
            l.attempts.len() - 1
        };
        let replicas = (1 + rng.below(2)).to_string();
        let out = client_cmd(
            api,
            &[
                "deploy",
                file.to_str().context("utf-8 path")?,
                "--name",
                &name,
                "--replicas",
                &replicas,
                "--json",
            ],
            None,
        )?;
        let ended = Instant::now();
        let acked = out.status.success();
        if acked {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout)
                .with_context(|| format!("deploy {name}: JSON answer"))?;
            if v["hash"].as_str() != Some(hash.as_str()) {
                bail!("deploy {name} acknowledged hash {} not {hash}", v["hash"]);
            }
        }
        let mut l = ledger(&book);
        l.attempts[index].ended = Some(ended);
        l.attempts[index].acked = acked;
        if !acked {
            l.deploys_failed += 1;
            let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if l.failures.len() < 5 && !l.failures.contains(&why) {
                l.failures.push(why);
            }
        }
    }
    Ok(())
}

/// POST `name` through the gateway; `Ok(true)` when it answered 200 with
/// the hello module's output.
async fn call_ok(gw: SocketAddr, name: &str) -> Result<bool> {
    let r = http()
        .post(format!("http://{gw}/fn/{name}"))
        .timeout(Duration::from_secs(20))
        .body(name.to_string())
        .send()
        .await?;
    let status = r.status().as_u16();
    let body = r.text().await?;
    Ok(status == 200 && body == format!("hello, {name}"))
}

/// Call already-acknowledged functions back to back until `stop`.
async fn caller(gw: SocketAddr, mut rng: Rng, book: Shared, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        let pick = {
            let l = ledger(&book);
            let names = l.acked_names();
            let n = names.len() as u64;
            (n > 0).then(|| {
                names
                    .iter()
                    .nth(rng.below(n) as usize)
                    .map(|s| s.to_string())
                    .unwrap_or_default()
            })
        };
        let Some(name) = pick else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let ok = matches!(call_ok(gw, &name).await, Ok(true));
        // Calls during a kill are expected to fail; they are counted, not
        // asserted. What matters is what the network serves afterwards.
        let mut l = ledger(&book);
        if ok {
            l.calls_ok += 1;
        } else {
            l.calls_failed += 1;
        }
    }
}

/// A running storm: deploy threads and caller tasks.
struct Storm {
    stop: Arc<AtomicBool>,
    deployers: Vec<std::thread::JoinHandle<Result<()>>>,
    callers: Vec<tokio::task::JoinHandle<()>>,
}

impl Storm {
    fn start(
        api: SocketAddr,
        gw: SocketAddr,
        hello: &Path,
        round: usize,
        updates: u64,
        rng: &mut Rng,
        book: &Shared,
    ) -> Storm {
        let stop = Arc::new(AtomicBool::new(false));
        let deployers = (0..DEPLOYERS)
            .map(|w| {
                let (hello, book, stop) = (hello.to_path_buf(), book.clone(), stop.clone());
                let r = rng.fork();
                std::thread::spawn(move || {
                    deployer(api, hello, format!("r{round}-w{w}"), updates, r, book, stop)
                })
            })
            .collect();
        let callers = (0..2)
            .map(|_| tokio::spawn(caller(gw, rng.fork(), book.clone(), stop.clone())))
            .collect();
        Storm {
            stop,
            deployers,
            callers,
        }
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Wait for every deploy command in flight to return. Call after the
    /// killed node is back: a deploy caught by the kill ends when its
    /// connection is reset by the restarted node (or times out).
    async fn join(self) -> Result<()> {
        self.stop();
        for c in self.callers {
            c.await?;
        }
        for d in self.deployers {
            tokio::task::spawn_blocking(move || d.join())
                .await?
                .map_err(|_| anyhow::anyhow!("deployer thread panicked"))??;
        }
        Ok(())
    }
}

/// Copy a data directory so a store can be opened and checked without
/// running redb's recovery on the original: the restarted node must do
/// that itself.
fn snapshot_dir(dir: &Path, to: &Path) -> Result<()> {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_file() {
            std::fs::copy(e.path(), to.join(e.file_name()))?;
        }
    }
    Ok(())
}

/// Check a view of the functions (name -> hash) against the storm: every
/// name with an acknowledged deploy is there, and each name holds a hash
/// it may hold ([`Ledger::may_hold`]).
fn check_view(l: &Ledger, view: &BTreeMap<String, String>, what: &str) -> Result<()> {
    for name in l.acked_names() {
        if !view.contains_key(name) {
            bail!("{what}: acknowledged deploy {name} is missing");
        }
    }
    for (name, hash) in view {
        l.may_hold(name, hash)
            .map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
    }
    Ok(())
}

/// Open a copy of a super's store right after the kill: it opens, every
/// function record has its module and the module hashes to the record's
/// hash, and the records pass [`check_view`]. Returns name -> hash.
fn check_super_store(
    dir: &Path,
    scratch: &Path,
    book: &Shared,
) -> Result<BTreeMap<String, String>> {
    let view = check_super_store_plain(dir, scratch)?;
    check_view(&ledger(book), &view, "super store after kill -9")?;
    Ok(view)
}

/// The super's function list: name -> hash.
async fn listed(gw: SocketAddr) -> Result<BTreeMap<String, String>> {
    let v = get_json(&format!("http://{gw}/api/functions")).await?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            (
                f["name"].as_str().unwrap_or_default().to_string(),
                f["hash"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect())
}

/// After a restart: the listed functions pass [`check_view`], `clients`
/// clients are registered, and every listed function answers a call. Returns
/// (calls made, failed attempts before success).
async fn check_recovered(gw: SocketAddr, book: &Shared, clients: usize) -> Result<(usize, usize)> {
    let list = listed(gw).await?;
    check_view(&ledger(book), &list, "functions listed after the restart")?;
    wait_nodes(gw, clients, "clients registered again", RECOVERY).await?;
    let deadline = Instant::now() + RECOVERY;
    let (mut made, mut failed) = (0, 0);
    for name in list.keys() {
        loop {
            made += 1;
            if matches!(call_ok(gw, name).await, Ok(true)) {
                break;
            }
            failed += 1;
            if Instant::now() > deadline {
                bail!("{name} is listed but never answered a call after the restart");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok((made, failed))
}

fn super_peer(sup: &Proc, quic: SocketAddr) -> String {
    format!("{}@{quic}", sup.field("id"))
}

async fn wait_clients(gw: SocketAddr, n: usize) -> Result<()> {
    wait_nodes(gw, n, "clients registered", Duration::from_secs(60)).await
}

/// Wait (up to `timeout`) until the super at `gw` lists `n` nodes.
async fn wait_nodes(gw: SocketAddr, n: usize, what: &str, timeout: Duration) -> Result<()> {
    wait_for(what, timeout, || async {
        let v = get_json(&format!("http://{gw}/api/nodes")).await?;
        Ok((v.as_array().map_or(0, |a| a.len()) == n).then_some(()))
    })
    .await
}

/// A kill after a storm has settled. A storm heavy in concurrent updates
/// of shared names runs for a while through `api`, every deploy returns,
/// and then whatever the super lists (all placements done) must be exactly
/// what its store holds after kill -9 and what it lists after the restart.
/// This catches the in-memory table and the store drifting apart (an
/// older record saved over a newer one, say), which a kill in mid-storm
/// hides among in-flight deploys. Returns (calls made, failed attempts).
#[allow(clippy::too_many_arguments)]
async fn settled_super_kill(
    sup: &mut Proc,
    dir: &Path,
    (quic, gw): (SocketAddr, SocketAddr),
    api: SocketAddr,
    hello: &Path,
    round: usize,
    rng: &mut Rng,
    book: &Shared,
    clients: usize,
) -> Result<(usize, usize)> {
    let storm = Storm::start(api, gw, hello, round, 70, rng, book);
    tokio::time::sleep(kill_moment(rng)).await;
    storm.join().await?;
    let before = listed(gw).await?;
    check_view(
        &ledger(book),
        &before,
        "functions listed before a settled kill",
    )?;
    let id = sup.field("id");
    sup.kill9();
    let scratch = dir.with_file_name("check-settled");
    let stored = check_super_store(dir, &scratch, book)?;
    for (name, hash) in &before {
        if stored.get(name) != Some(hash) {
            bail!(
                "{name}: the settled super listed {hash}, its store holds {:?}",
                stored.get(name)
            );
        }
    }
    assert_eq!(
        stored.len(),
        before.len(),
        "the store holds what was listed"
    );
    *sup = start_super(dir, quic, gw, &[]).context("super restarts after kill -9")?;
    assert_eq!(sup.field("id"), id, "the super keeps its identity");
    let after = listed(gw).await?;
    assert_eq!(after, before, "the same functions before and after kill -9");
    let (made, failed) = check_recovered(gw, book, clients).await?;
    eprintln!(
        "settled kill: {} functions listed before and after; {made} calls after the restart \
         ({failed} failed attempts before success)",
        before.len()
    );
    Ok((made, failed))
}

/// Now, in Unix milliseconds (the nodes' `connected_ms` clock).
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The network of a storm test: a super in `TMP/super` and `n` clients
/// (capacity 2) in `TMP/cI` attached to it, all registered, and the hello
/// module. Destructure with `tmp` first: bindings drop in reverse, so the
/// nodes are killed before their directories go.
struct StormNet {
    tmp: tempfile::TempDir,
    super_dir: PathBuf,
    quic: SocketAddr,
    gw: SocketAddr,
    sup: Proc,
    /// The super as `ID@QUIC`, for `--super`.
    peer: String,
    /// Each client, its API address and its data directory.
    clients: Vec<(Proc, SocketAddr, PathBuf)>,
    hello: PathBuf,
}

impl StormNet {
    async fn start(n: usize) -> Result<StormNet> {
        let tmp = tempfile::tempdir()?;
        let (quic, gw) = (free_udp(), free_tcp());
        let super_dir = tmp.path().join("super");
        let sup = start_super(&super_dir, quic, gw, &[])?;
        let peer = super_peer(&sup, quic);
        let mut clients = Vec::new();
        for i in 0..n {
            let api = free_tcp();
            let dir = tmp.path().join(format!("c{i}"));
            let c = start_client(&dir, api, std::slice::from_ref(&peer), 2)?;
            clients.push((c, api, dir));
        }
        wait_clients(gw, n).await?;
        let hello = hello_wasm(tmp.path());
        Ok(StormNet {
            tmp,
            super_dir,
            quic,
            gw,
            sup,
            peer,
            clients,
            hello,
        })
    }
}

/// The closing line of a storm test, `head` first (what was killed), the
/// deploy failures seen, and the last check: some deploy was acknowledged.
/// `after`: calls after the restarts and failed attempts among them.
fn final_report(head: &str, book: &Shared, after: (usize, usize), started: Instant) {
    let (calls_after, failed_after) = after;
    let l = ledger(book);
    eprintln!(
        "{head}, {} deploys tried, {} acked, {} failed; \
         storm calls {} ok / {} failed; after restarts {calls_after} calls, {failed_after} \
         failed attempts; {:.1} s",
        l.attempts.len(),
        l.acked_count(),
        l.deploys_failed,
        l.calls_ok,
        l.calls_failed,
        started.elapsed().as_secs_f64()
    );
    for why in &l.failures {
        eprintln!("  a deploy failed with: {why}");
    }
    assert!(l.acked_count() > 0, "no deploy was acknowledged at all");
}

/// 500 ms to 3 s: early kills hit the first deploys, late ones a busy
/// super with many functions.
fn kill_moment(rng: &mut Rng) -> Duration {
    Duration::from_millis(500 + rng.below(2500))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn super_killed_during_deploy_storm_keeps_every_acknowledged_deploy() -> Result<()> {
    let seed = seed();
    eprintln!("super crash: seed {seed} (ORB_CRASH_SEED={seed} replays the kill moments)");
    // Timed from here: building the binaries is not part of the test.
    bin_dir();
    let started = Instant::now();
    let mut rng = Rng::new(seed);
    let StormNet {
        tmp,
        super_dir: dir,
        quic,
        gw,
        mut sup,
        clients,
        hello,
        ..
    } = StormNet::start(2).await?;
    let id = sup.field("id");
    let book: Shared = Arc::default();
    let (mut calls_after, mut failed_after) = (0, 0);
    const ROUNDS: usize = 3;
    for round in 0..ROUNDS {
        let storm = Storm::start(clients[0].1, gw, &hello, round, 30, &mut rng, &book);
        let at = kill_moment(&mut rng);
        tokio::time::sleep(at).await;
        sup.kill9();
        storm.stop();
        let acked_at_kill = ledger(&book).acked_count();
        let records = check_super_store(&dir, &tmp.path().join("check"), &book)?.len();

        // Same data directory, same QUIC and HTTP ports.
        sup = start_super(&dir, quic, gw, &[]).context("super restarts after kill -9")?;
        assert_eq!(sup.field("id"), id, "the super keeps its identity");
        storm.join().await?;
        let (made, failed) = check_recovered(gw, &book, 2).await?;
        calls_after += made;
        failed_after += failed;
        let l = ledger(&book);
        eprintln!(
            "round {round}: killed the super {} ms into the storm; {acked_at_kill} deploys acked \
             at the kill ({} in all), {records} records in its store; {made} calls after the \
             restart ({failed} failed attempts before success)",
            at.as_millis(),
            l.acked_count(),
        );
    }
    let (made, failed) = settled_super_kill(
        &mut sup,
        &dir,
        (quic, gw),
        clients[0].1,
        &hello,
        ROUNDS,
        &mut rng,
        &book,
        2,
    )
    .await?;
    calls_after += made;
    failed_after += failed;

    final_report(
        &format!("super crash: seed {seed}, {} kills", ROUNDS + 1),
        &book,
        (calls_after, failed_after),
        started,
    );
    Ok(())
}

/// Open a copy of a client's store right after the kill: it opens, keeps
/// its identity, and every hosted replica has its module, intact. Returns
/// the hosted replicas, name -> hash.
fn check_client_store(dir: &Path, scratch: &Path, id: &str) -> Result<BTreeMap<String, String>> {
    snapshot_dir(dir, scratch)?;
    let store = orb_store::Store::open(scratch).context("client store opens after kill -9")?;
    let stored_id = store.load_or_create_identity()?.id().to_string();
    if stored_id != id {
        bail!("the client's store holds identity {stored_id}, it ran as {id}");
    }
    let mut hosted = BTreeMap::new();
    for h in store.hosted()? {
        check_module(&store, &h.hash, &format!("hosted replica {}", h.name), "")?;
        hosted.insert(h.name, h.hash.to_string());
    }
    Ok(hosted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_killed_during_storm_comes_back_and_nothing_is_lost() -> Result<()> {
    let base = seed();
    eprintln!("client crash: seed {base} (ORB_CRASH_SEED={base} replays the kill moments)");
    // Not the super test's sequence when both run with one seed.
    let seed = base.wrapping_add(1);
    // Timed from here: building the binaries is not part of the test.
    bin_dir();
    let started = Instant::now();
    let mut rng = Rng::new(seed);
    const CLIENTS: usize = 3;
    let StormNet {
        tmp,
        super_dir,
        quic,
        gw,
        mut sup,
        peer,
        mut clients,
        hello,
    } = StormNet::start(CLIENTS).await?;
    let book: Shared = Arc::default();
    let (mut calls_after, mut failed_after) = (0, 0);
    const ROUNDS: usize = 2;
    for round in 0..ROUNDS {
        // Deploys go through client 0; the victim may be it (its deploys
        // in flight die with it) or a replica host.
        let storm = Storm::start(clients[0].1, gw, &hello, round, 50, &mut rng, &book);
        let victim = rng.below(CLIENTS as u64) as usize;
        let at = kill_moment(&mut rng);
        tokio::time::sleep(at).await;
        let id = clients[victim].0.field("id");
        let killed_ms = unix_ms();
        clients[victim].0.kill9();
        if victim == 0 {
            storm.stop();
        }
        let hosted = check_client_store(&clients[victim].2, &tmp.path().join("check"), &id)?;

        let (api, dir) = (clients[victim].1, clients[victim].2.clone());
        clients[victim].0 = start_client(&dir, api, std::slice::from_ref(&peer), 2)
            .context("client restarts after kill -9")?;
        assert_eq!(
            clients[victim].0.field("id"),
            id,
            "the client keeps its Orb ID"
        );
        // A little more storm with the client back, then stop it.
        tokio::time::sleep(Duration::from_millis(300)).await;
        storm.join().await?;

        // The super may not have noticed the death yet; the entry to wait
        // for is the new process's registration, made after the kill.
        wait_for("the restarted client re-registers", RECOVERY, || {
            let id = id.clone();
            async move {
                let v = get_json(&format!("http://{gw}/api/nodes")).await?;
                Ok(v.as_array()
                    .into_iter()
                    .flatten()
                    .any(|n| {
                        n["id"].as_str() == Some(id.as_str())
                            && n["connected_ms"].as_u64().is_some_and(|t| t >= killed_ms)
                    })
                    .then_some(()))
            }
        })
        .await?;
        // It re-registers, announcing the replicas its store remembers:
        // the super counts it as a replica of each that is still current
        // (a name updated since then has moved on to another module).
        wait_for("the restarted client hosts again", RECOVERY, || {
            let hosted = hosted.clone();
            let id = id.clone();
            async move {
                let v = get_json(&format!("http://{gw}/api/functions")).await?;
                let missing = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|f| {
                        let name = f["name"].as_str().unwrap_or_default();
                        hosted.get(name).map(String::as_str) == f["hash"].as_str()
                    })
                    .filter(|f| {
                        !f["replicas"]
                            .as_array()
                            .is_some_and(|r| r.iter().any(|r| r.as_str() == Some(id.as_str())))
                    })
                    .count();
                Ok((missing == 0).then_some(()))
            }
        })
        .await?;
        let (made, failed) = check_recovered(gw, &book, CLIENTS).await?;
        calls_after += made;
        failed_after += failed;
        let l = ledger(&book);
        eprintln!(
            "round {round}: killed client {victim} {} ms into the storm; it hosted {} replicas; \
             {} deploys acked so far; {made} calls after the restart ({failed} failed attempts \
             before success)",
            at.as_millis(),
            hosted.len(),
            l.acked_count(),
        );
    }
    // The victims' disconnects and reconnects re-placed replicas while
    // updates went on: the super's table and its store must still agree.
    let (made, failed) = settled_super_kill(
        &mut sup,
        &super_dir,
        (quic, gw),
        clients[0].1,
        &hello,
        ROUNDS,
        &mut rng,
        &book,
        CLIENTS,
    )
    .await?;
    calls_after += made;
    failed_after += failed;
    final_report(
        &format!("client crash: seed {base}, {ROUNDS} client kills and 1 super kill"),
        &book,
        (calls_after, failed_after),
        started,
    );
    Ok(())
}

/// Deploy `file` as `name` through `api`; the hash it was acknowledged with.
fn deploy_cmd(api: SocketAddr, file: &Path, name: &str, extra: &[&str]) -> Result<String> {
    let mut args = vec![
        "deploy",
        file.to_str().context("utf-8 path")?,
        "--name",
        name,
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = client_cmd(api, &args, None)?;
    if !out.status.success() {
        bail!(
            "deploy {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(v["hash"].as_str().unwrap_or_default().to_string())
}

/// Send `signal` (STOP, CONT) to a process.
fn signal(p: &Proc, signal: &str) -> Result<()> {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(p.child.id().to_string())
        .status()?;
    if !status.success() {
        bail!("kill -{signal} {} failed", p.child.id());
    }
    Ok(())
}

/// A deploy's placement can finish long after the deploy committed: here
/// it waits on a client that stopped answering (SIGSTOP) until the super's
/// health check gives up on it. A newer deploy of the same name commits
/// and is acknowledged meanwhile. Whatever the super lists once both have
/// returned must be what its store holds after kill -9: the late
/// placement must not write the older record back over the newer one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn late_placement_never_reverts_a_newer_deploy_after_kill_9() -> Result<()> {
    bin_dir();
    let started = Instant::now();
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("super");
    let (quic, gw) = (free_udp(), free_tcp());
    let mut sup = start_super(&dir, quic, gw, &[])?;
    let peer = super_peer(&sup, quic);
    let start = |name: &str, capacity| {
        let api = free_tcp();
        start_client(
            &tmp.path().join(name),
            api,
            std::slice::from_ref(&peer),
            capacity,
        )
        .map(|p| (p, api))
    };
    // The deployer hosts nothing (capacity 0), so placement goes to the
    // other two; `slow` is given more replicas first so that it ranks
    // after `fast` for the second deploy.
    let (_deployer, api) = start("deployer", 0)?;
    let (_fast, _) = start("fast", 2)?;
    let (slow, slow_api) = start("slow", 2)?;
    wait_clients(gw, 3).await?;
    let hello = hello_wasm(tmp.path());
    for i in 0..3 {
        let filler = tagged_module(&hello, &format!("filler-{i}"))?;
        deploy_cmd(
            slow_api,
            &filler,
            &format!("filler-{i}"),
            &["--here", "--replicas", "1"],
        )?;
    }
    let v1 = tagged_module(&hello, "v1")?;
    let v2 = tagged_module(&hello, "v2")?;
    let v1_hash = ContentHash::of(&std::fs::read(&v1)?).to_string();

    signal(&slow, "STOP")?;
    // v1 wants 2 replicas: one on `fast` at once, one on `slow`, which
    // hangs until the super declares `slow` dead.
    let first = std::thread::spawn(move || deploy_cmd(api, &v1, "f", &["--replicas", "2"]));
    wait_for("v1 committed", Duration::from_secs(30), || async {
        Ok((listed(gw).await?.get("f") == Some(&v1_hash)).then_some(()))
    })
    .await?;
    // v2 wants 1 replica: `fast` ranks first, so it is placed and
    // acknowledged while v1's placement still waits.
    let v2_hash = deploy_cmd(api, &v2, "f", &["--replicas", "1"])?;
    // Not asserted (no timing assertions), but reported: on a machine so
    // loaded that `slow` was declared dead before v1 got to place on it,
    // the two deploys did not interleave and this run proves less.
    let interleaved = !first.is_finished();
    let v1_result = tokio::task::spawn_blocking(move || first.join())
        .await?
        .map_err(|_| anyhow::anyhow!("deploy thread panicked"))?;
    eprintln!(
        "late placement: v2 acknowledged while v1's placement {}; v1's deploy returned {:?} \
         after {:.1} s",
        if interleaved {
            "still waited (the race was exercised)"
        } else {
            "had already ended (the race was NOT exercised this time)"
        },
        v1_result.as_ref().map(|_| "ok"),
        started.elapsed().as_secs_f64()
    );
    let before = listed(gw).await?;
    assert_eq!(
        before.get("f"),
        Some(&v2_hash),
        "the newer deploy is current once both returned"
    );

    sup.kill9();
    let stored = check_super_store_plain(&dir, &tmp.path().join("check"))?;
    assert_eq!(
        stored.get("f"),
        Some(&v2_hash),
        "after kill -9 the store must hold the deploy the super was serving (v2), \
         not the older v1 its late placement saved"
    );
    sup = start_super(&dir, quic, gw, &[])?;
    assert_eq!(
        listed(gw).await?,
        before,
        "same functions after the restart"
    );
    drop(sup);
    eprintln!(
        "late placement: ok in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A copy of a super's store, opened: name -> hash of every record, each
/// with its module present and intact.
fn check_super_store_plain(dir: &Path, scratch: &Path) -> Result<BTreeMap<String, String>> {
    snapshot_dir(dir, scratch)?;
    let store = orb_store::Store::open(scratch).context("super store opens after kill -9")?;
    let mut view = BTreeMap::new();
    for f in store.functions()? {
        let what = format!("function {}", f.name);
        check_module(&store, &f.hash, &what, " (half-written deploy)")?;
        view.insert(f.name, f.hash.to_string());
    }
    Ok(view)
}

/// The module `hash` is in `store` and its bytes hash to it. `what` names
/// the record in the error ("function NAME"); `missing` is added to the
/// error when the module is not there at all.
fn check_module(
    store: &orb_store::Store,
    hash: &ContentHash,
    what: &str,
    missing: &str,
) -> Result<()> {
    let module = store
        .module(hash)?
        .with_context(|| format!("{what} has no module{missing}"))?;
    if ContentHash::of(&module) != *hash {
        bail!("{what}: module bytes do not hash to {hash}");
    }
    Ok(())
}
