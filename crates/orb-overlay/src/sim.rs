//! A deterministic network simulator for [`Core`]s.
//!
//! One seeded [`Rng`], one virtual clock, an event queue: messages take a
//! uniformly random latency and may be lost; dead nodes swallow what is sent
//! to them, so their callers see timeouts. The same seed always gives the
//! same run, so a failing scenario can be replayed exactly. Runs thousands
//! of nodes in seconds, because nothing sleeps and nothing is encrypted on
//! the wire (records are still really signed and verified).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};

use orb_proto::dht::{DhtMessage, DhtResponse, Key, Record};
use orb_proto::{Keypair, OrbId, PeerAddr};

use crate::core::{Config, Core, Event, LookupResult, QueryId, Role, RpcId};
use crate::lookup::LookupKind;
use crate::{Millis, Rng};

/// Where the virtual clock starts (Unix ms, November 2023), so records get
/// realistic expiries.
pub const EPOCH: Millis = 1_700_000_000_000;

/// Network model.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Shortest one-way latency.
    pub latency_min: Millis,
    /// Longest one-way latency.
    pub latency_max: Millis,
    /// Chance, in parts per million, that a message is lost.
    pub loss_ppm: u64,
    /// Configuration of every core.
    pub core: Config,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            latency_min: 5,
            latency_max: 50,
            loss_ppm: 10_000,
            core: Config {
                // Round trips are at most 100 ms here; raw datagram loss has
                // no QUIC retransmission under it, so allow more attempts.
                rpc_timeout: 300,
                rpc_attempts: 3,
                lookup_timeout: 60_000,
                ..Config::default()
            },
        }
    }
}

/// One simulated node.
#[derive(Debug)]
pub struct SimNode {
    /// Its DHT state.
    pub core: Core,
    /// Its key (for signing records).
    pub keypair: Keypair,
    /// Whether it is up. Dead nodes neither answer nor act.
    pub alive: bool,
    events: Vec<Event>,
    /// Earliest timer entry queued for this node.
    timer: Option<Millis>,
}

impl SimNode {
    /// The node's address.
    pub fn addr(&self) -> PeerAddr {
        self.core.local()
    }
}

#[derive(Debug)]
enum Msg {
    Request {
        from: usize,
        to: usize,
        rpc: RpcId,
        msg: DhtMessage,
    },
    Response {
        to: usize,
        rpc: RpcId,
        resp: DhtResponse,
    },
}

/// The simulator.
#[derive(Debug)]
pub struct Sim {
    /// The nodes, by index.
    pub nodes: Vec<SimNode>,
    by_id: HashMap<OrbId, usize>,
    rng: Rng,
    now: Millis,
    config: SimConfig,
    queue: BinaryHeap<Reverse<(Millis, u64)>>,
    in_flight: HashMap<u64, Msg>,
    timers: BinaryHeap<Reverse<(Millis, usize)>>,
    seq: u64,
    /// Messages delivered so far.
    pub delivered: u64,
    /// Messages lost so far.
    pub lost: u64,
}

impl Sim {
    /// An empty network.
    pub fn new(config: SimConfig, seed: u64) -> Self {
        Sim {
            nodes: Vec::new(),
            by_id: HashMap::new(),
            rng: Rng::new(seed),
            now: EPOCH,
            config,
            queue: BinaryHeap::new(),
            in_flight: HashMap::new(),
            timers: BinaryHeap::new(),
            seq: 0,
            delivered: 0,
            lost: 0,
        }
    }

    /// The virtual clock.
    pub fn now(&self) -> Millis {
        self.now
    }

    /// The simulator's random source (for picking targets in tests).
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// Add a node; it knows nobody yet.
    pub fn add_node(&mut self, role: Role) -> usize {
        let i = self.nodes.len();
        let keypair = Keypair::from_seed(self.rng.bytes32());
        let n = (i + 1) as u32;
        let addr = SocketAddr::from((Ipv4Addr::from(0x0a00_0000 | n), 7700));
        let local = PeerAddr {
            id: keypair.id(),
            addr,
        };
        let seed = self.rng.next_u64();
        let core = Core::new(local, role, self.config.core.clone(), seed, self.now);
        self.by_id.insert(local.id, i);
        self.nodes.push(SimNode {
            core,
            keypair,
            alive: true,
            events: Vec::new(),
            timer: None,
        });
        self.flush(i);
        i
    }

    /// Add `n` servers, each bootstrapping from a random earlier one and
    /// waiting for its bootstrap lookup to finish before the next joins.
    pub fn add_servers(&mut self, n: usize) {
        for _ in 0..n {
            let i = self.add_node(Role::Server);
            self.join(i);
        }
    }

    /// Bootstrap node `i` from a random live server and wait for it.
    pub fn join(&mut self, i: usize) {
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|&j| j != i && self.nodes[j].alive && self.nodes[j].core.role() == Role::Server)
            .collect();
        if live.is_empty() {
            return;
        }
        let seed = live[self.rng.below(live.len() as u64) as usize];
        let peer = self.nodes[seed].addr();
        let now = self.now;
        self.nodes[i].core.add_peer(peer, now);
        if let Ok(q) = self.nodes[i].core.bootstrap(now) {
            self.flush(i);
            self.wait(i, q);
        }
    }

    /// Take node `i` down for good.
    pub fn kill(&mut self, i: usize) {
        if let Some(n) = self.nodes.get_mut(i) {
            n.alive = false;
        }
    }

    /// Kill `fraction_ppm` parts per million of the live nodes, at random
    /// (never those in `keep`). Returns the killed indices.
    pub fn churn(&mut self, fraction_ppm: u64, keep: &[usize]) -> Vec<usize> {
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].alive && !keep.contains(&i))
            .collect();
        let want = (live.len() as u64 * fraction_ppm / 1_000_000) as usize;
        let mut pool = live;
        let mut killed = Vec::new();
        while killed.len() < want && !pool.is_empty() {
            let j = self.rng.below(pool.len() as u64) as usize;
            let i = pool.swap_remove(j);
            self.kill(i);
            killed.push(i);
        }
        killed
    }

    fn latency(&mut self) -> Millis {
        let span = self
            .config
            .latency_max
            .saturating_sub(self.config.latency_min)
            + 1;
        self.config.latency_min + self.rng.below(span)
    }

    fn lose(&mut self) -> bool {
        self.rng.below(1_000_000) < self.config.loss_ppm
    }

    fn enqueue(&mut self, msg: Msg) {
        if self.lose() {
            self.lost += 1;
            return;
        }
        let at = self.now + self.latency();
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq)));
        self.in_flight.insert(self.seq, msg);
    }

    /// Move node `i`'s transmits onto the wire, collect its events and
    /// schedule its next timeout.
    fn flush(&mut self, i: usize) {
        while let Some(t) = self.nodes[i].core.poll_transmit() {
            match self.by_id.get(&t.to.id) {
                Some(&to) if self.nodes[to].addr() == t.to => self.enqueue(Msg::Request {
                    from: i,
                    to,
                    rpc: t.rpc,
                    msg: t.msg,
                }),
                // Unknown address: like dialing nowhere, it times out.
                _ => {}
            }
        }
        while let Some(e) = self.nodes[i].core.poll_event() {
            self.nodes[i].events.push(e);
        }
        if let Some(at) = self.nodes[i].core.poll_timeout()
            && self.nodes[i].timer.is_none_or(|t| at < t || t < self.now)
        {
            self.nodes[i].timer = Some(at);
            self.timers.push(Reverse((at, i)));
        }
    }

    fn next_at(&self) -> Option<Millis> {
        let q = self.queue.peek().map(|Reverse((at, _))| *at);
        let t = self.timers.peek().map(|Reverse((at, _))| *at);
        q.into_iter().chain(t).min()
    }

    /// Process the next event, if any at or before `limit`. Returns whether
    /// one was processed.
    pub fn step(&mut self, limit: Millis) -> bool {
        let Some(at) = self.next_at() else {
            return false;
        };
        if at > limit {
            return false;
        }
        self.now = self.now.max(at);
        let msg_first = match (self.queue.peek(), self.timers.peek()) {
            (Some(Reverse((q, _))), Some(Reverse((t, _)))) => q <= t,
            (Some(_), None) => true,
            _ => false,
        };
        if msg_first {
            let Some(Reverse((_, seq))) = self.queue.pop() else {
                return false;
            };
            if let Some(msg) = self.in_flight.remove(&seq) {
                self.deliver(msg);
            }
        } else {
            let Some(Reverse((at, i))) = self.timers.pop() else {
                return false;
            };
            if self.nodes[i].timer == Some(at) {
                self.nodes[i].timer = None;
                if self.nodes[i].alive {
                    let now = self.now;
                    self.nodes[i].core.handle_timeout(now);
                    self.flush(i);
                }
            }
        }
        true
    }

    fn deliver(&mut self, msg: Msg) {
        let now = self.now;
        match msg {
            Msg::Request { from, to, rpc, msg } => {
                if !self.nodes[to].alive {
                    return;
                }
                self.delivered += 1;
                // The transport proves the sender's ID; mirror the driver's
                // rule of trusting `from_server` only when it matches.
                let sender = self.nodes[from].addr();
                let from_server = msg.from_server.filter(|p| p.id == sender.id);
                let resp = self.nodes[to]
                    .core
                    .handle_request(from_server, msg.body, now);
                self.flush(to);
                self.enqueue(Msg::Response {
                    to: from,
                    rpc,
                    resp,
                });
            }
            Msg::Response { to, rpc, resp } => {
                if !self.nodes[to].alive {
                    return;
                }
                self.delivered += 1;
                self.nodes[to].core.handle_response(rpc, resp, now);
                self.flush(to);
            }
        }
    }

    /// Run every event up to `until`, then set the clock to it.
    pub fn run_until(&mut self, until: Millis) {
        while self.step(until) {}
        self.now = self.now.max(until);
    }

    /// Run for `ms` of virtual time.
    pub fn run_for(&mut self, ms: Millis) {
        self.run_until(self.now + ms);
    }

    /// Run until node `i` reports the end of query `q` (at most one virtual
    /// hour), and return that event.
    pub fn wait(&mut self, i: usize, q: QueryId) -> Option<Event> {
        let limit = self.now + 3_600_000;
        loop {
            if let Some(pos) = self.nodes[i].events.iter().position(|e| match e {
                Event::LookupFinished(r) => r.id == q,
                Event::PutFinished { id, .. } => *id == q,
                Event::Expiring(_) => false,
            }) {
                return Some(self.nodes[i].events.remove(pos));
            }
            if !self.step(limit) {
                return None;
            }
        }
    }

    /// Run a lookup from node `i` to completion.
    pub fn lookup(&mut self, i: usize, target: Key, kind: LookupKind) -> Option<LookupResult> {
        let now = self.now;
        let q = self.nodes[i].core.start_lookup(target, kind, now).ok()?;
        self.flush(i);
        match self.wait(i, q)? {
            Event::LookupFinished(r) => Some(r),
            _ => None,
        }
    }

    /// Put `record` from node `i`; returns (stored on, refusals).
    pub fn put(&mut self, i: usize, record: Record) -> Option<(Vec<OrbId>, Vec<String>)> {
        let now = self.now;
        let q = self.nodes[i].core.put(record, now).ok()?;
        self.flush(i);
        match self.wait(i, q)? {
            Event::PutFinished {
                stored_on, refused, ..
            } => Some((stored_on, refused)),
            _ => None,
        }
    }

    /// Records under `key` found from node `i`.
    pub fn get(&mut self, i: usize, key: Key) -> Vec<Record> {
        self.lookup(i, key, LookupKind::FindValue)
            .map(|r| r.records)
            .unwrap_or_default()
    }

    /// Events node `i` reported that no wait consumed (e.g. expiry warnings).
    pub fn take_events(&mut self, i: usize) -> Vec<Event> {
        std::mem::take(&mut self.nodes[i].events)
    }

    /// Ground truth: the `k` live servers closest to `target`, except `skip`.
    pub fn true_closest(&self, target: &Key, k: usize, skip: usize) -> Vec<OrbId> {
        let mut live: Vec<(orb_proto::dht::Distance, OrbId)> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(i, n)| *i != skip && n.alive && n.core.role() == Role::Server)
            .map(|(_, n)| {
                let id = n.addr().id;
                (target.distance(&Key::for_node(&id)), id)
            })
            .collect();
        live.sort_unstable_by_key(|a| a.0);
        live.into_iter().take(k).map(|(_, id)| id).collect()
    }

    /// Live nodes holding a record under `key`.
    pub fn holders(&self, key: &Key) -> usize {
        self.nodes
            .iter()
            .filter(|n| n.alive && !n.core.store().get(key, self.now).is_empty())
            .count()
    }

    /// Indices of live nodes.
    pub fn live(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].alive)
            .collect()
    }
}
