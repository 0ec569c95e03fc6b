//! The sans-IO DHT node: routing table, lookups, record store and the
//! maintenance timers, driven entirely by the caller.
//!
//! The caller feeds in requests ([`Core::handle_request`]), answers
//! ([`Core::handle_response`]), failures ([`Core::handle_failure`]) and the
//! clock ([`Core::handle_timeout`]), and drains what the core wants sent
//! ([`Core::poll_transmit`]) and what happened ([`Core::poll_event`]). Time
//! is a plain [`Millis`] (Unix milliseconds, since record expiries are
//! absolute) and the only randomness comes from the seed, so the same
//! inputs always give the same outputs: the simulator relies on that.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};

use orb_proto::dht::{DhtMessage, DhtRequest, DhtResponse, Key, MAX_CLOSER, Record};
use orb_proto::{OrbId, PeerAddr, PublicKey};
use serde::{Deserialize, Serialize};

use crate::lookup::{Lookup, LookupKind};
use crate::routing::{Observed, RoutingTable};
use crate::store::{RecordStore, StoreLimits};
use crate::{Millis, Rng};

/// Identifies a lookup or put started on a [`Core`].
pub type QueryId = u64;

/// Identifies one RPC sent by a [`Core`].
pub type RpcId = u64;

/// Whether this node serves the DHT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// A DHT server: answers queries, stores records, sits in routing tables.
    Server,
    /// A DHT client: queries only; never put in anyone's routing table.
    Client,
}

/// Tunables. The defaults suit a real network; the simulator shortens the
/// RPC timeout and adds attempts to make up for raw datagram loss (QUIC
/// retransmits by itself, so real RPCs rarely need a retry).
#[derive(Debug, Clone)]
pub struct Config {
    /// Bucket size and replication factor.
    pub k: usize,
    /// Parallel RPCs per lookup.
    pub alpha: usize,
    /// Peers returned per FIND_NODE / FIND_VALUE answer (at most
    /// [`MAX_CLOSER`]); above k for robustness to churn.
    pub closer: usize,
    /// Per-RPC timeout.
    pub rpc_timeout: Millis,
    /// Attempts per RPC before the peer counts as failed (at least 1).
    pub rpc_attempts: u32,
    /// Overall lookup deadline: past it, a lookup returns what it has.
    pub lookup_timeout: Millis,
    /// Concurrent lookups (and puts) at most.
    pub max_lookups: usize,
    /// RPCs outstanding at most; beyond it new RPCs fail at once.
    pub max_rpcs: usize,
    /// Undelivered events kept at most (the oldest are dropped).
    pub max_events: usize,
    /// Consecutive failures after which a routing entry is dropped.
    pub max_failures: u32,
    /// Buckets untouched this long are refreshed by a random lookup.
    pub refresh_interval: Millis,
    /// Stored records are re-sent to the k closest this often.
    pub replicate_interval: Millis,
    /// Records re-sent per maintenance step during replication.
    pub replicate_batch: usize,
    /// Published records are re-put this often.
    pub republish_interval: Millis,
    /// A published record this close to expiry yields [`Event::Expiring`],
    /// so its owner can sign a fresh one.
    pub expiry_warning: Millis,
    /// How often maintenance (purge, refresh, replication) runs.
    pub maintenance_interval: Millis,
    /// Published records tracked for republishing at most.
    pub max_published: usize,
    /// Record store bounds.
    pub store: StoreLimits,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            k: 20,
            alpha: 3,
            closer: MAX_CLOSER,
            rpc_timeout: 1_000,
            rpc_attempts: 2,
            lookup_timeout: 10_000,
            max_lookups: 256,
            max_rpcs: 8_192,
            max_events: 1_024,
            max_failures: 2,
            refresh_interval: 3_600_000,
            replicate_interval: 600_000,
            replicate_batch: 64,
            republish_interval: 3_600_000,
            expiry_warning: 2 * 3_600_000,
            maintenance_interval: 60_000,
            max_published: 4_096,
            store: StoreLimits::default(),
        }
    }
}

/// An RPC the caller must send: `msg` to `to`, then report the answer with
/// [`Core::handle_response`] or the failure with [`Core::handle_failure`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Destination (a DHT server).
    pub to: PeerAddr,
    /// The RPC's ID.
    pub rpc: RpcId,
    /// What to send.
    pub msg: DhtMessage,
}

/// The outcome of a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupResult {
    /// The lookup.
    pub id: QueryId,
    /// Its target.
    pub target: Key,
    /// The closest servers that answered (at most k), closest first.
    pub closest: Vec<PeerAddr>,
    /// Valid records found (FIND_VALUE), one per publisher.
    pub records: Vec<Record>,
    /// Referral depth needed to reach the result.
    pub rounds: u32,
    /// Peers queried.
    pub queried: u32,
    /// The overall deadline cut the lookup short.
    pub timed_out: bool,
    /// How long it took.
    pub duration: Millis,
}

/// Something that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A lookup started with [`Core::start_lookup`] or [`Core::bootstrap`]
    /// finished.
    LookupFinished(LookupResult),
    /// A put finished.
    PutFinished {
        /// The put.
        id: QueryId,
        /// Record key.
        key: Key,
        /// Servers that stored it (the local node included).
        stored_on: Vec<OrbId>,
        /// Refusals, as `peer: reason`.
        refused: Vec<String>,
    },
    /// A record this node published expires within
    /// [`Config::expiry_warning`]; sign a fresh one and put it.
    Expiring(Box<Record>),
}

/// Errors from starting an operation.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CoreError {
    /// Too many lookups are running.
    #[error("too many lookups in progress ({0})")]
    Busy(usize),
    /// The record is invalid.
    #[error("invalid record: {0}")]
    Invalid(#[from] orb_proto::dht::RecordError),
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Lookups finished (all kinds, maintenance included).
    pub lookups: u64,
    /// Lookups that finished with at least one answering peer (or a record).
    pub lookups_ok: u64,
    /// Lookups cut short by the deadline.
    pub lookups_timed_out: u64,
    /// Sum of rounds over finished lookups.
    pub rounds_total: u64,
    /// RPCs sent.
    pub rpcs_sent: u64,
    /// RPC attempts that failed or timed out.
    pub rpcs_failed: u64,
    /// Requests answered.
    pub requests_served: u64,
    /// Records stored (new or replaced) from STOREs.
    pub records_stored: u64,
    /// STOREs refused.
    pub stores_refused: u64,
    /// Events dropped because nobody drained them.
    pub events_dropped: u64,
}

/// What a node persists across restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Routing table peers.
    pub peers: Vec<PeerAddr>,
    /// Records held for others.
    pub records: Vec<Record>,
    /// Records this node published (republished until they expire).
    pub published: Vec<Record>,
}

#[derive(Debug, Clone)]
enum Purpose {
    Lookup(QueryId),
    Ping,
    Store(QueryId),
    Replicate,
}

#[derive(Debug, Clone)]
struct Rpc {
    to: PeerAddr,
    purpose: Purpose,
    body: DhtRequest,
    deadline: Millis,
    attempts_left: u32,
}

#[derive(Debug, Clone)]
enum Then {
    /// Report to the caller.
    Report,
    /// Bootstrap: report, then refresh buckets.
    Bootstrap,
    /// Maintenance: no report.
    Silent,
    /// Store the record on the closest servers found.
    Put(Box<Record>),
}

#[derive(Debug)]
struct Active {
    lookup: Lookup,
    then: Then,
    started: Millis,
    deadline: Millis,
}

#[derive(Debug)]
struct PendingPut {
    key: Key,
    outstanding: usize,
    stored_on: Vec<OrbId>,
    refused: Vec<String>,
}

#[derive(Debug)]
struct Published {
    record: Record,
    warned: bool,
}

/// The DHT node state machine. See the module docs.
#[derive(Debug)]
pub struct Core {
    local: PeerAddr,
    local_key: Key,
    role: Role,
    config: Config,
    rng: Rng,
    table: RoutingTable,
    store: RecordStore,
    lookups: HashMap<QueryId, Active>,
    puts: HashMap<QueryId, PendingPut>,
    rpcs: HashMap<RpcId, Rpc>,
    /// RPC deadlines, earliest first; stale entries are skipped lazily.
    deadlines: BinaryHeap<Reverse<(Millis, RpcId)>>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    published: HashMap<(Key, PublicKey), Published>,
    next_id: u64,
    next_maintenance: Millis,
    next_replicate: Millis,
    next_republish: Millis,
    /// `Some(cursor)` while a replication pass is under way.
    replicate_cursor: Option<Option<Key>>,
    stats: Stats,
}

impl Core {
    /// A node at `local` with an empty table and store. `seed` drives every
    /// random choice (refresh targets); `now` starts the timers.
    pub fn new(local: PeerAddr, role: Role, config: Config, seed: u64, now: Millis) -> Self {
        let local_key = Key::for_node(&local.id);
        Core {
            local,
            local_key,
            role,
            table: RoutingTable::new(local_key, config.k, config.max_failures),
            store: RecordStore::new(config.store),
            rng: Rng::new(seed),
            lookups: HashMap::new(),
            puts: HashMap::new(),
            rpcs: HashMap::new(),
            deadlines: BinaryHeap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            published: HashMap::new(),
            next_id: 1,
            next_maintenance: now + config.maintenance_interval,
            next_replicate: now + config.replicate_interval,
            next_republish: now + config.republish_interval,
            replicate_cursor: None,
            stats: Stats::default(),
            config,
        }
    }

    /// A node restored from `snapshot`: peers go back in the table (they are
    /// re-checked as lookups use them), records are re-verified at `now`.
    pub fn restore(
        local: PeerAddr,
        role: Role,
        config: Config,
        seed: u64,
        snapshot: Snapshot,
        now: Millis,
    ) -> Self {
        let mut core = Core::new(local, role, config, seed, now);
        for p in snapshot.peers {
            core.table.observe(p, now);
        }
        for r in snapshot.records {
            // Expired or invalid records are simply not restored.
            let _ = core.store.insert(r, now);
        }
        for r in snapshot.published {
            if r.verify(now).is_ok() {
                core.track_published(r);
            }
        }
        core
    }

    /// What to persist.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            peers: self.table.peers(),
            records: self.store.all(),
            published: self.published.values().map(|p| p.record.clone()).collect(),
        }
    }

    /// The local node.
    pub fn local(&self) -> PeerAddr {
        self.local
    }

    /// The local role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The routing table.
    pub fn table(&self) -> &RoutingTable {
        &self.table
    }

    /// The record store.
    pub fn store(&self) -> &RecordStore {
        &self.store
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Lookups in progress.
    pub fn active_lookups(&self) -> usize {
        self.lookups.len()
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Add a known server (from configuration or a peer list). It is treated
    /// as alive until an RPC to it fails.
    pub fn add_peer(&mut self, peer: PeerAddr, now: Millis) {
        self.observe(peer, now);
    }

    fn observe(&mut self, peer: PeerAddr, now: Millis) {
        if let Observed::PingOldest(oldest) = self.table.observe(peer, now) {
            self.send_rpc(oldest, Purpose::Ping, DhtRequest::Ping, now);
        }
    }

    /// Answer a request. `from` is the sender's server address when it is a
    /// DHT server whose ID the transport proved; `None` for clients.
    pub fn handle_request(
        &mut self,
        from: Option<PeerAddr>,
        req: DhtRequest,
        now: Millis,
    ) -> DhtResponse {
        if self.role == Role::Client {
            return DhtResponse::Refused("not a DHT server".into());
        }
        self.stats.requests_served += 1;
        let requester = from.map(|p| p.id);
        if let Some(peer) = from {
            self.observe(peer, now);
        }
        // Answers carry more than k peers: right after churn, tables still
        // hold dead entries, and the k closest *live* nodes may sit beyond
        // anyone's k closest entries. The surplus lets lookups still reach
        // them, for a few hundred bytes per answer.
        let count = self.config.closer.min(MAX_CLOSER);
        let closer = |table: &RoutingTable, target: &Key| {
            let mut v = table.closest(target, count + 1);
            v.retain(|p| Some(p.id) != requester);
            v.truncate(count);
            v
        };
        match req {
            DhtRequest::Ping => DhtResponse::Pong,
            DhtRequest::FindNode { target } => DhtResponse::Nodes {
                closer: closer(&self.table, &target),
            },
            DhtRequest::FindValue { key } => DhtResponse::Value {
                records: self.store.get(&key, now),
                closer: closer(&self.table, &key),
            },
            DhtRequest::Store { record } => match self.store.insert(*record, now) {
                Ok(changed) => {
                    if changed {
                        self.stats.records_stored += 1;
                    }
                    DhtResponse::Stored
                }
                Err(e) => {
                    self.stats.stores_refused += 1;
                    DhtResponse::Refused(e.to_string())
                }
            },
        }
    }

    /// Join the network: a lookup of the local ID (through peers added with
    /// [`Core::add_peer`]), followed by a refresh of the buckets farther
    /// than the closest neighbour.
    pub fn bootstrap(&mut self, now: Millis) -> Result<QueryId, CoreError> {
        self.start(self.local_key, LookupKind::FindNode, Then::Bootstrap, now)
    }

    /// Start a lookup; its result arrives as [`Event::LookupFinished`].
    pub fn start_lookup(
        &mut self,
        target: Key,
        kind: LookupKind,
        now: Millis,
    ) -> Result<QueryId, CoreError> {
        self.start(target, kind, Then::Report, now)
    }

    /// Publish `record`: find the k closest servers and store it on them
    /// (and locally, if this server is among them). The result arrives as
    /// [`Event::PutFinished`]. The record is then republished every
    /// [`Config::republish_interval`] until it expires.
    pub fn put(&mut self, record: Record, now: Millis) -> Result<QueryId, CoreError> {
        record.verify(now)?;
        let key = record.key;
        let id = self.start(
            key,
            LookupKind::FindNode,
            Then::Put(Box::new(record.clone())),
            now,
        )?;
        self.track_published(record);
        Ok(id)
    }

    fn track_published(&mut self, record: Record) {
        let slot = (record.key, record.publisher);
        if !self.published.contains_key(&slot) && self.published.len() >= self.config.max_published
        {
            // Bounded: the record is still put once, just not republished.
            return;
        }
        self.published.insert(
            slot,
            Published {
                record,
                warned: false,
            },
        );
    }

    /// Stop republishing the record `publisher` put under `key`.
    pub fn unpublish(&mut self, key: &Key, publisher: &PublicKey) {
        self.published.remove(&(*key, *publisher));
    }

    fn start(
        &mut self,
        target: Key,
        kind: LookupKind,
        then: Then,
        now: Millis,
    ) -> Result<QueryId, CoreError> {
        if self.lookups.len() >= self.config.max_lookups {
            return Err(CoreError::Busy(self.lookups.len()));
        }
        let id = self.next_id();
        self.table.touch(&target, now);
        let seeds = self.table.closest(&target, self.config.k);
        let lookup = Lookup::new(
            target,
            kind,
            self.local.id,
            self.config.k,
            self.config.alpha,
            seeds,
        );
        self.lookups.insert(
            id,
            Active {
                lookup,
                then,
                started: now,
                deadline: now + self.config.lookup_timeout,
            },
        );
        self.drive(id, now);
        Ok(id)
    }

    /// Send what the lookup wants sent, and finish it when it has converged.
    fn drive(&mut self, id: QueryId, now: Millis) {
        let mut sends = Vec::new();
        let done = {
            let Some(a) = self.lookups.get_mut(&id) else {
                return;
            };
            let body = match a.lookup.kind() {
                LookupKind::FindNode => DhtRequest::FindNode {
                    target: a.lookup.target(),
                },
                LookupKind::FindValue => DhtRequest::FindValue {
                    key: a.lookup.target(),
                },
            };
            while let Some(peer) = a.lookup.next_query() {
                sends.push((peer, body.clone()));
            }
            a.lookup.is_done()
        };
        for (peer, body) in sends {
            self.send_rpc(peer, Purpose::Lookup(id), body, now);
        }
        if done {
            self.finish_lookup(id, false, now);
        }
    }

    fn finish_lookup(&mut self, id: QueryId, timed_out: bool, now: Millis) {
        let Some(mut a) = self.lookups.remove(&id) else {
            return;
        };
        let closest = a.lookup.closest();
        let records = a.lookup.take_records();
        let rounds = a.lookup.rounds();
        self.stats.lookups += 1;
        self.stats.rounds_total += u64::from(rounds);
        if !closest.is_empty() || !records.is_empty() {
            self.stats.lookups_ok += 1;
        }
        if timed_out {
            self.stats.lookups_timed_out += 1;
        }
        let result = LookupResult {
            id,
            target: a.lookup.target(),
            closest,
            records,
            rounds,
            queried: a.lookup.queried(),
            timed_out,
            duration: now.saturating_sub(a.started),
        };
        match a.then {
            Then::Report => self.emit(Event::LookupFinished(result)),
            Then::Silent => {}
            Then::Bootstrap => {
                self.emit(Event::LookupFinished(result));
                self.refresh_after_bootstrap(now);
            }
            Then::Put(record) => self.store_on_closest(id, *record, result.closest, now),
        }
    }

    fn refresh_after_bootstrap(&mut self, now: Millis) {
        // Buckets up to (and including) the closest neighbour's are refreshed,
        // so that the table learns about every region of the key space, not
        // only the neighbourhood of the local ID.
        let deepest = self.table.deepest_bucket().unwrap_or(0);
        for i in 0..=deepest {
            let target = self.table.random_key_in_bucket(i, self.rng.bytes32());
            if self
                .start(target, LookupKind::FindNode, Then::Silent, now)
                .is_err()
            {
                break;
            }
        }
    }

    fn store_on_closest(
        &mut self,
        id: QueryId,
        record: Record,
        closest: Vec<PeerAddr>,
        now: Millis,
    ) {
        let key = record.key;
        let k = self.config.k;
        let mut targets = closest;
        let mut stored_on = Vec::new();
        let mut refused = Vec::new();
        if self.role == Role::Server {
            // Store locally if this node is among the k closest.
            let me = key.distance(&self.local_key);
            let farther = targets
                .iter()
                .filter(|p| key.distance(&Key::for_node(&p.id)) > me)
                .count();
            if targets.len() < k || farther > 0 {
                match self.store.insert(record.clone(), now) {
                    Ok(_) => stored_on.push(self.local.id),
                    Err(e) => refused.push(format!("{}: {e}", self.local.id.short())),
                }
                targets.truncate(k.saturating_sub(1));
            }
        }
        let outstanding = targets.len();
        for peer in targets {
            self.send_rpc(
                peer,
                Purpose::Store(id),
                DhtRequest::Store {
                    record: Box::new(record.clone()),
                },
                now,
            );
        }
        self.puts.insert(
            id,
            PendingPut {
                key,
                outstanding,
                stored_on,
                refused,
            },
        );
        self.check_put(id);
    }

    fn check_put(&mut self, id: QueryId) {
        if self.puts.get(&id).is_some_and(|p| p.outstanding == 0)
            && let Some(p) = self.puts.remove(&id)
        {
            self.emit(Event::PutFinished {
                id,
                key: p.key,
                stored_on: p.stored_on,
                refused: p.refused,
            });
        }
    }

    fn emit(&mut self, e: Event) {
        if self.events.len() >= self.config.max_events {
            self.events.pop_front();
            self.stats.events_dropped += 1;
        }
        self.events.push_back(e);
    }

    fn send_rpc(&mut self, to: PeerAddr, purpose: Purpose, body: DhtRequest, now: Millis) {
        let attempts = self.config.rpc_attempts.max(1);
        self.send_attempt(to, purpose, body, attempts - 1, now);
    }

    fn send_attempt(
        &mut self,
        to: PeerAddr,
        purpose: Purpose,
        body: DhtRequest,
        attempts_left: u32,
        now: Millis,
    ) {
        let rpc = self.next_id();
        let over = self.rpcs.len() >= self.config.max_rpcs;
        // Over the bound, the RPC is registered but not sent, with a deadline
        // of now: it fails at the next timeout, through the normal path.
        let (deadline, attempts_left) = if over {
            (now, 0)
        } else {
            (now + self.config.rpc_timeout, attempts_left)
        };
        if !over {
            self.stats.rpcs_sent += 1;
            self.transmits.push_back(Transmit {
                to,
                rpc,
                msg: DhtMessage {
                    from_server: (self.role == Role::Server).then_some(self.local),
                    body: body.clone(),
                },
            });
        }
        self.rpcs.insert(
            rpc,
            Rpc {
                to,
                purpose,
                body,
                deadline,
                attempts_left,
            },
        );
        self.deadlines.push(Reverse((deadline, rpc)));
    }

    /// The next RPC to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The answer to RPC `rpc` arrived.
    pub fn handle_response(&mut self, rpc: RpcId, resp: DhtResponse, now: Millis) {
        let Some(r) = self.rpcs.remove(&rpc) else {
            // Late answer to an RPC that already timed out or was retried.
            return;
        };
        if let (DhtResponse::Refused(_), Purpose::Lookup(_) | Purpose::Ping) = (&resp, &r.purpose) {
            // Only a DHT client refuses queries: it must not stay in the table.
            self.table.remove(&r.to);
            self.fail(r, now);
            return;
        }
        self.observe(r.to, now);
        match r.purpose {
            Purpose::Ping => self.table.ping_done(r.to, true, now),
            Purpose::Lookup(id) => {
                let (closer, records) = match resp {
                    DhtResponse::Nodes { closer } => (closer, Vec::new()),
                    DhtResponse::Value { records, closer } => (closer, records),
                    _ => (Vec::new(), Vec::new()),
                };
                // Only records that verify now count as found.
                let records = records
                    .into_iter()
                    .take(orb_proto::dht::MAX_PROVIDERS)
                    .filter(|rec| rec.verify(now).is_ok())
                    .collect();
                let closer = closer.into_iter().take(MAX_CLOSER).collect();
                if let Some(a) = self.lookups.get_mut(&id) {
                    a.lookup.on_answer(&r.to.id, closer, records);
                }
                self.drive(id, now);
            }
            Purpose::Store(id) => {
                if let Some(p) = self.puts.get_mut(&id) {
                    p.outstanding = p.outstanding.saturating_sub(1);
                    match resp {
                        DhtResponse::Stored => p.stored_on.push(r.to.id),
                        DhtResponse::Refused(why) => {
                            p.refused.push(format!("{}: {why}", r.to.id.short()))
                        }
                        other => p
                            .refused
                            .push(format!("{}: unexpected answer {other:?}", r.to.id.short())),
                    }
                }
                self.check_put(id);
            }
            Purpose::Replicate => {}
        }
    }

    /// RPC `rpc` failed (could not connect, stream error). Counts as an
    /// attempt, like a timeout.
    pub fn handle_failure(&mut self, rpc: RpcId, now: Millis) {
        if let Some(r) = self.rpcs.remove(&rpc) {
            self.attempt_failed(r, now);
        }
    }

    fn attempt_failed(&mut self, r: Rpc, now: Millis) {
        self.stats.rpcs_failed += 1;
        if r.attempts_left > 0 {
            self.send_attempt(r.to, r.purpose, r.body, r.attempts_left - 1, now);
        } else {
            self.fail(r, now);
        }
    }

    /// The peer is considered unreachable for this RPC.
    fn fail(&mut self, r: Rpc, now: Millis) {
        match r.purpose {
            Purpose::Ping => self.table.ping_done(r.to, false, now),
            Purpose::Lookup(id) => {
                self.table.failed(&r.to);
                if let Some(a) = self.lookups.get_mut(&id) {
                    a.lookup.on_failure(&r.to.id);
                }
                self.drive(id, now);
            }
            Purpose::Store(id) => {
                self.table.failed(&r.to);
                if let Some(p) = self.puts.get_mut(&id) {
                    p.outstanding = p.outstanding.saturating_sub(1);
                    p.refused.push(format!("{}: no answer", r.to.id.short()));
                }
                self.check_put(id);
            }
            Purpose::Replicate => self.table.failed(&r.to),
        }
    }

    /// When [`Core::handle_timeout`] should next be called.
    pub fn poll_timeout(&mut self) -> Option<Millis> {
        // Drop stale heap entries so the top is a live deadline.
        while let Some(Reverse((at, rpc))) = self.deadlines.peek().copied() {
            match self.rpcs.get(&rpc) {
                Some(r) if r.deadline == at => break,
                _ => {
                    self.deadlines.pop();
                }
            }
        }
        let rpc = self.deadlines.peek().map(|Reverse((at, _))| *at);
        let lookup = self.lookups.values().map(|a| a.deadline).min();
        [Some(self.next_maintenance), rpc, lookup]
            .into_iter()
            .flatten()
            .min()
    }

    /// Process everything due at `now`: RPC timeouts, lookup deadlines and
    /// maintenance.
    pub fn handle_timeout(&mut self, now: Millis) {
        while let Some(Reverse((at, rpc))) = self.deadlines.peek().copied() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            if let Some(r) = self.rpcs.get(&rpc)
                && r.deadline == at
                && let Some(r) = self.rpcs.remove(&rpc)
            {
                self.attempt_failed(r, now);
            }
        }
        let late: Vec<QueryId> = self
            .lookups
            .iter()
            .filter(|(_, a)| a.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            self.finish_lookup(id, true, now);
        }
        if now >= self.next_maintenance {
            self.maintain(now);
        }
    }

    fn maintain(&mut self, now: Millis) {
        self.next_maintenance = now + self.config.maintenance_interval;
        self.store.purge(now);

        // Refresh stale buckets (bounded by the lookup limit).
        for i in self.table.stale_buckets(now, self.config.refresh_interval) {
            if self.table.is_empty() {
                break;
            }
            let target = self.table.random_key_in_bucket(i, self.rng.bytes32());
            if self
                .start(target, LookupKind::FindNode, Then::Silent, now)
                .is_err()
            {
                break;
            }
        }

        // Re-replicate held records to the current k closest, in batches so
        // one pass never floods the transmit queue.
        if self.replicate_cursor.is_none() && now >= self.next_replicate {
            self.next_replicate = now + self.config.replicate_interval;
            self.replicate_cursor = Some(None);
        }
        if let Some(cursor) = self.replicate_cursor {
            self.replicate_step(cursor, now);
        }

        // Republish own records; warn about those close to expiry.
        if now >= self.next_republish {
            self.next_republish = now + self.config.republish_interval;
            self.published.retain(|_, p| p.record.expires_ms > now);
            let due: Vec<Record> = self.published.values().map(|p| p.record.clone()).collect();
            for r in due {
                if self.lookups.len() >= self.config.max_lookups {
                    break;
                }
                let key = r.key;
                let _ = self.start(key, LookupKind::FindNode, Then::Put(Box::new(r)), now);
            }
        }
        let warn = self.config.expiry_warning;
        let mut expiring = Vec::new();
        for p in self.published.values_mut() {
            if !p.warned && p.record.expires_ms.saturating_sub(now) <= warn {
                p.warned = true;
                expiring.push(p.record.clone());
            }
        }
        for r in expiring {
            self.emit(Event::Expiring(Box::new(r)));
        }
    }

    fn replicate_step(&mut self, cursor: Option<Key>, now: Millis) {
        let budget = self.config.max_rpcs.saturating_sub(self.rpcs.len()) / self.config.k.max(1);
        let batch = self.config.replicate_batch.min(budget);
        if batch == 0 {
            self.next_maintenance = now + self.config.rpc_timeout;
            return;
        }
        let (records, next) = self.store.batch_after(cursor, batch);
        for r in records {
            // Not worth moving a record that is about to expire.
            if r.expires_ms <= now + self.config.maintenance_interval {
                continue;
            }
            for peer in self.table.closest(&r.key, self.config.k) {
                self.send_rpc(
                    peer,
                    Purpose::Replicate,
                    DhtRequest::Store {
                        record: Box::new(r.clone()),
                    },
                    now,
                );
            }
        }
        self.replicate_cursor = next.map(Some);
        if self.replicate_cursor.is_some() {
            // Continue soon rather than at the next full interval.
            self.next_maintenance = now + self.config.rpc_timeout;
        }
    }
}
