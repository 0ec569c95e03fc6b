//! Node-to-node paths of a client: LAN first, then a hole punch coordinated
//! by the peer's home super, then a relay through that super; a relayed
//! path keeps trying to become direct in the background.
//!
//! Every connection to a peer, dialed or accepted, lands in one bounded
//! table; whoever needs the peer takes the best live entry. Both sides of a
//! punch dial at once, so the connection that comes up may be the one the
//! *other* side dialed: `connect` waits on the table, not on its own dials.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use orb_nat::{NodeAddrs, PathKind, PunchSchedule, plan_dial};
use orb_proto::dht::NodeRecord;
use orb_proto::wire::{ErrorKind, Request, Response, WireError};
use orb_proto::{Keypair, OrbId, PeerAddr};
use orb_transport::{Connection, Endpoint, TransportConfig};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use tracing::{debug, info};

use crate::common::metrics::{Counter, Histogram};
use crate::common::util::{lock, now_ms};

/// Peers with a live path kept at most; the oldest goes first.
const MAX_PEERS: usize = 256;
/// How long LAN addresses get before punching starts.
const LAN_BUDGET: Duration = Duration::from_millis(1500);
/// How long a punch may take before the relay is used.
const PUNCH_BUDGET: Duration = Duration::from_secs(3);
/// Dial waves per punch (each dials every candidate address once; QUIC
/// retransmits inside a wave).
const PUNCH_WAVES: u32 = 3;
/// How long asking a super (punch, relay) may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a relayed path tries to become direct.
const UPGRADE_EVERY: Duration = Duration::from_secs(20);
/// PunchNow requests a client serves per second (from its home supers).
const PUNCH_NOW_RATE: f64 = 10.0;

/// A live path to a peer.
#[derive(Clone)]
pub(crate) struct PeerLink {
    pub conn: Connection,
    pub path: PathKind,
    pub since_ms: u64,
}

/// Counters behind the client's `/metrics`.
#[derive(Default)]
pub(crate) struct PathStats {
    pub direct: Counter,
    pub relayed: Counter,
    pub punch_attempts: Counter,
    pub punch_successes: Counter,
    pub upgrades: Counter,
    pub first_direct_byte: Histogram,
}

/// The client's peer table and path logic.
pub(crate) struct Paths {
    endpoint: Endpoint,
    keypair: Keypair,
    table: Mutex<HashMap<OrbId, PeerLink>>,
    changed: Notify,
    /// New connections go here to have their requests served.
    serve_tx: mpsc::Sender<Connection>,
    punch_now: Mutex<orb_nat::TokenBucket>,
    pub stats: PathStats,
}

/// What the caller knows when it connects: its own addresses and its links
/// to its home supers.
pub(crate) struct Ctx {
    pub me: NodeAddrs,
    pub homes: Vec<Connection>,
}

/// The kind of a direct path to `remote`: private addresses are only
/// reachable on one's own network.
pub(crate) fn direct_kind(remote: SocketAddr) -> PathKind {
    let private = match remote.ip() {
        IpAddr::V4(ip) => ip.is_private() || ip.is_loopback() || ip.is_link_local(),
        IpAddr::V6(ip) => ip.is_loopback() || ip.is_unique_local() || ip.is_unicast_link_local(),
    };
    if private {
        PathKind::DirectLan
    } else {
        PathKind::Direct
    }
}

impl Paths {
    pub fn new(endpoint: Endpoint, keypair: Keypair, serve_tx: mpsc::Sender<Connection>) -> Self {
        Paths {
            endpoint,
            keypair,
            table: Mutex::new(HashMap::new()),
            changed: Notify::new(),
            serve_tx,
            punch_now: Mutex::new(orb_nat::TokenBucket::new(
                Instant::now(),
                PUNCH_NOW_RATE,
                PUNCH_NOW_RATE * 2.0,
            )),
            stats: PathStats::default(),
        }
    }

    /// The live path to `id`, if there is one.
    pub fn get(&self, id: &OrbId) -> Option<PeerLink> {
        let mut table = lock(&self.table);
        match table.get(id) {
            Some(l) if !l.conn.is_closed() => Some(l.clone()),
            Some(_) => {
                table.remove(id);
                None
            }
            None => None,
        }
    }

    /// Every live path.
    pub fn list(&self) -> Vec<(OrbId, PeerLink)> {
        let mut table = lock(&self.table);
        table.retain(|_, l| !l.conn.is_closed());
        let mut v: Vec<(OrbId, PeerLink)> = table.iter().map(|(k, l)| (*k, l.clone())).collect();
        v.sort_by_key(|(k, _)| *k);
        v
    }

    /// Add a connection to a peer; it replaces a worse or dead one. Its
    /// requests are served like any other link's.
    pub fn register(&self, conn: Connection, path: PathKind) {
        let id = conn.peer_id();
        let added = {
            let mut table = lock(&self.table);
            let better = match table.get(&id) {
                Some(old) => old.conn.is_closed() || path < old.path,
                None => true,
            };
            if better {
                if !table.contains_key(&id) && table.len() >= MAX_PEERS {
                    table.retain(|_, l| !l.conn.is_closed());
                    if table.len() >= MAX_PEERS
                        && let Some(oldest) = table
                            .iter()
                            .min_by_key(|(_, l)| l.since_ms)
                            .map(|(k, _)| *k)
                    {
                        table.remove(&oldest);
                    }
                }
                table.insert(
                    id,
                    PeerLink {
                        conn: conn.clone(),
                        path,
                        since_ms: now_ms(),
                    },
                );
            }
            better
        };
        if added {
            match path {
                PathKind::Relayed => {
                    self.stats.relayed.inc();
                }
                _ => {
                    self.stats.direct.inc();
                }
            }
            info!(peer = %id.short(), path = path.as_str(), addr = %conn.remote_addr(), "peer path up");
            self.changed.notify_waiters();
        }
        // Serve its requests either way: the peer may use it.
        let _ = self.serve_tx.try_send(conn);
    }

    /// A direct connection arrived (the peer dialed us, e.g. punching).
    pub fn accepted(&self, conn: Connection) {
        let kind = direct_kind(conn.remote_addr());
        self.register(conn, kind);
    }

    /// Whether a PunchNow may be served now (flood guard).
    pub fn punch_now_allowed(&self) -> bool {
        lock(&self.punch_now).try_take(Instant::now(), 1.0)
    }

    /// A home super says `from` wants a direct path: dial it now at `addrs`,
    /// paced by `rtt`. Runs in the background.
    pub fn punch_back(self: &Arc<Self>, from: OrbId, addrs: Vec<SocketAddr>, rtt: Duration) {
        if self.get(&from).is_some_and(|l| l.path != PathKind::Relayed) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            this.stats.punch_attempts.inc();
            if this.punch(from, &addrs, rtt, PUNCH_BUDGET).await.is_some() {
                this.stats.punch_successes.inc();
            }
        });
    }

    /// Dial `addrs` in waves timed to `rtt` until a direct path to `target`
    /// is in the table (ours or the peer's dial), or `budget` runs out.
    async fn punch(
        &self,
        target: OrbId,
        addrs: &[SocketAddr],
        rtt: Duration,
        budget: Duration,
    ) -> Option<PeerLink> {
        let start = Instant::now();
        let deadline = start + budget;
        let mut schedule =
            PunchSchedule::new(start, rtt.max(Duration::from_millis(50)) * 2, budget);
        let mut dials: JoinSet<Option<Connection>> = JoinSet::new();
        let mut waves = 0u32;
        loop {
            if let Some(l) = self.get(&target).filter(|l| l.path != PathKind::Relayed) {
                return Some(l);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            if waves < PUNCH_WAVES && schedule.poll(now) {
                waves += 1;
                for &addr in addrs {
                    let ep = self.endpoint.clone();
                    let left = deadline.saturating_duration_since(now);
                    dials.spawn(async move {
                        tokio::time::timeout(left, ep.connect(PeerAddr { id: target, addr }))
                            .await
                            .ok()?
                            .ok()
                    });
                }
            }
            let next = schedule
                .next_at(now)
                .filter(|_| waves < PUNCH_WAVES)
                .unwrap_or(deadline)
                .min(deadline);
            let changed = self.changed.notified();
            tokio::select! {
                Some(done) = dials.join_next(), if !dials.is_empty() => {
                    if let Ok(Some(conn)) = done {
                        let kind = direct_kind(conn.remote_addr());
                        self.register(conn, kind);
                    }
                }
                _ = changed => {}
                _ = tokio::time::sleep_until(next.into()) => {}
            }
        }
    }

    /// The best path to `target` that can be had: an existing one, else
    /// LAN, punch, relay in that order. Returns the link and how long it
    /// took to get it.
    pub async fn connect(
        self: &Arc<Self>,
        target: OrbId,
        record: Option<NodeRecord>,
        ctx: Ctx,
    ) -> Result<PeerLink, WireError> {
        if let Some(l) = self.get(&target) {
            return Ok(l);
        }
        let started = Instant::now();
        let Some(record) = record else {
            return Err(WireError::new(
                ErrorKind::NotFound,
                format!("node {target} has published no node record (not online?)"),
            ));
        };
        let peer = NodeAddrs {
            observed: record.observed.clone(),
            local: record.local.clone(),
        };
        let (lan, punch_addrs) = plan_dial(&ctx.me, &peer);
        // 1. Same public IP: the LAN addresses.
        if !lan.is_empty()
            && let Some(l) = self
                .punch(target, &lan, Duration::from_millis(20), LAN_BUDGET)
                .await
        {
            self.stats.first_direct_byte.observe(started.elapsed());
            return Ok(l);
        }
        // A peer with no NAT can simply be dialed.
        if record.nat == orb_nat::NatMapping::None.as_str()
            && let Some(l) = self
                .punch(target, &punch_addrs, Duration::from_millis(20), LAN_BUDGET)
                .await
        {
            self.stats.first_direct_byte.observe(started.elapsed());
            return Ok(l);
        }
        // 2. Punch, coordinated by one of the peer's home supers.
        let (super_conn, _dialed) = self.super_for(&record, &ctx).await?;
        let mut mine = ctx.me.observed.clone();
        mine.extend(ctx.me.local.iter().copied());
        self.stats.punch_attempts.inc();
        let asked = tokio::time::timeout(
            ASK_TIMEOUT,
            super_conn.request(
                &Request::Punch {
                    target,
                    addrs: mine,
                },
                &[],
                0,
            ),
        )
        .await;
        match asked {
            Ok(Ok((Response::PunchAddrs { addrs, rtt_ms }, _))) => {
                let mut all = punch_addrs.clone();
                for a in addrs {
                    if !all.contains(&a) {
                        all.push(a);
                    }
                }
                let rtt = Duration::from_millis(u64::from(rtt_ms));
                if let Some(l) = self.punch(target, &all, rtt, PUNCH_BUDGET).await {
                    self.stats.punch_successes.inc();
                    self.stats.first_direct_byte.observe(started.elapsed());
                    return Ok(l);
                }
            }
            Ok(Ok((Response::Error(e), _))) => {
                debug!(peer = %target.short(), error = %e, "punch refused");
            }
            other => {
                debug!(peer = %target.short(), answer = ?other.map(|r| r.map(|(r, _)| r)), "punch failed")
            }
        }
        // 3. Relay through that super.
        let link = self.relay(target, &super_conn).await?;
        self.spawn_upgrade(target, record, super_conn);
        Ok(link)
    }

    /// A connection to one of `record`'s home supers: our own link when we
    /// share one, else a fresh dial (supers are public).
    async fn super_for(
        &self,
        record: &NodeRecord,
        ctx: &Ctx,
    ) -> Result<(Connection, bool), WireError> {
        for h in &record.home_supers {
            if let Some(c) = ctx
                .homes
                .iter()
                .find(|c| c.peer_id() == h.id && !c.is_closed())
            {
                return Ok((c.clone(), false));
            }
        }
        let mut last = String::from("it lists no home super");
        for h in &record.home_supers {
            match tokio::time::timeout(ASK_TIMEOUT, self.endpoint.connect(*h)).await {
                Ok(Ok(c)) => return Ok((c, true)),
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = format!("dialing {} timed out", h.id.short()),
            }
        }
        Err(WireError::new(
            ErrorKind::Unavailable,
            format!("cannot reach a home super of {}: {last}", record.id.short()),
        ))
    }

    /// Open a relay circuit to `target` through `super_conn` and run an
    /// end-to-end QUIC connection inside it.
    async fn relay(&self, target: OrbId, super_conn: &Connection) -> Result<PeerLink, WireError> {
        let opened = tokio::time::timeout(
            ASK_TIMEOUT,
            super_conn.open_tunnel(&Request::Relay { target }),
        )
        .await
        .map_err(|_| WireError::new(ErrorKind::Unavailable, "the relay did not answer in time"))?
        .map_err(|e| WireError::new(ErrorKind::Unavailable, format!("relay failed: {e}")))?;
        let tunnel = match opened {
            (_, Some(t)) => t,
            (Response::Error(e), None) => return Err(e),
            (other, None) => {
                return Err(WireError::new(
                    ErrorKind::Internal,
                    format!("relay answered {other:?}"),
                ));
            }
        };
        let ep = Endpoint::over_tunnel(tunnel, &self.keypair, TransportConfig::default())
            .map_err(|e| WireError::new(ErrorKind::Internal, e.to_string()))?;
        let conn = tokio::time::timeout(ASK_TIMEOUT, ep.connect(Endpoint::tunnel_peer(target)))
            .await
            .map_err(|_| WireError::new(ErrorKind::Unavailable, "relayed handshake timed out"))?
            .map_err(|e| {
                WireError::new(ErrorKind::Unavailable, format!("relayed handshake: {e}"))
            })?;
        self.register(conn, PathKind::Relayed);
        self.get(&target).ok_or_else(|| {
            WireError::new(ErrorKind::Unavailable, "relayed connection closed at once")
        })
    }

    /// Serve a relayed circuit another node opened to us.
    pub fn accept_relayed(self: &Arc<Self>, tunnel: orb_transport::Tunnel) {
        let this = self.clone();
        tokio::spawn(async move {
            let ep = match Endpoint::over_tunnel(tunnel, &this.keypair, TransportConfig::default())
            {
                Ok(ep) => ep,
                Err(e) => {
                    debug!(error = %e, "cannot serve a relayed circuit");
                    return;
                }
            };
            // One connection per circuit; the TLS handshake inside proves
            // who is on the other end, whatever the relay claimed.
            if let Ok(Some(conn)) = tokio::time::timeout(ASK_TIMEOUT, ep.accept()).await {
                this.register(conn, PathKind::Relayed);
            }
        });
    }

    /// While the path to `target` is relayed, retry the punch now and then.
    fn spawn_upgrade(self: &Arc<Self>, target: OrbId, record: NodeRecord, super_conn: Connection) {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(UPGRADE_EVERY).await;
                match this.get(&target) {
                    Some(l) if l.path == PathKind::Relayed => {}
                    _ => return,
                }
                if super_conn.is_closed() {
                    return;
                }
                let mut addrs = record.observed.clone();
                addrs.extend(record.local.iter().copied());
                let rtt = super_conn.rtt();
                if let Ok(Ok((Response::PunchAddrs { addrs: more, .. }, _))) = tokio::time::timeout(
                    ASK_TIMEOUT,
                    super_conn.request(
                        &Request::Punch {
                            target,
                            addrs: Vec::new(),
                        },
                        &[],
                        0,
                    ),
                )
                .await
                {
                    addrs.extend(more);
                }
                if this
                    .punch(target, &addrs, rtt, PUNCH_BUDGET)
                    .await
                    .is_some()
                {
                    this.stats.upgrades.inc();
                    info!(peer = %target.short(), "relayed path upgraded to direct");
                    return;
                }
            }
        });
    }
}
