//! The super node's bridging services for NATed nodes: hole-punch
//! coordination, relay circuits with quotas, and dial-back reachability
//! checks. The decisions (quotas, pacing) live in `orb-nat`; this is the IO.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use orb_nat::{CircuitMeter, PeerLimiter, RelayBook, RelayLimits};
use orb_proto::wire::{ErrorKind, Request, Response, WireError};
use orb_proto::{OrbId, PeerAddr};
use orb_transport::{Connection, Endpoint, IncomingRequest, SpliceGate};
use tracing::{debug, info, warn};

use crate::common::metrics::Counter;
use crate::common::util::lock;

/// Punch and relay requests one peer may make per second, and at once.
const COORD_RATE: f64 = 10.0;
const COORD_BURST: f64 = 20.0;
/// Peers whose request rate is tracked at most.
const MAX_LIMITED_PEERS: usize = 4096;
/// How long the target of a punch or relay may take to answer.
const TARGET_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a dial-back may take.
const DIAL_BACK_TIMEOUT: Duration = Duration::from_secs(3);

/// Counters of the bridging services, for `/metrics`.
#[derive(Default)]
pub(super) struct BridgeStats {
    pub punches_coordinated: Counter,
    pub relay_circuits: Counter,
    pub relay_refused: Counter,
    pub relay_bytes: Counter,
    pub coord_throttled: Counter,
    pub dial_backs: Counter,
}

/// State of the bridging services of one super.
pub(crate) struct Bridge {
    book: Mutex<RelayBook<OrbId>>,
    limiter: Mutex<PeerLimiter<OrbId>>,
    /// A second socket, so dial-backs come from an address the client never
    /// sent to: only a NAT that lets anyone in passes them.
    dial_back: Option<Endpoint>,
    pub stats: BridgeStats,
}

/// Rate and volume gate of one circuit.
struct Gate(Mutex<CircuitMeter>);

impl SpliceGate for Gate {
    fn admit(&self, bytes: usize) -> Result<Duration, String> {
        lock(&self.0)
            .admit(Instant::now(), bytes)
            .map_err(|e| e.to_string())
    }
}

impl Bridge {
    pub fn new(limits: RelayLimits, dial_back: Option<Endpoint>) -> Self {
        Bridge {
            book: Mutex::new(RelayBook::new(limits)),
            limiter: Mutex::new(PeerLimiter::new(COORD_RATE, COORD_BURST, MAX_LIMITED_PEERS)),
            dial_back,
            stats: BridgeStats::default(),
        }
    }

    /// Circuits open now.
    pub fn circuits(&self) -> usize {
        lock(&self.book).circuits()
    }

    /// Whether `peer` may make one more punch or relay request now.
    fn allowed(&self, peer: OrbId) -> Result<(), WireError> {
        if lock(&self.limiter).allow(peer, Instant::now()) {
            Ok(())
        } else {
            self.stats.coord_throttled.inc();
            debug!(peer = %peer.short(), "punch/relay request flood: refused");
            Err(WireError::new(
                ErrorKind::Quota,
                "too many punch or relay requests from this node; slow down",
            ))
        }
    }

    /// `from` (seen at `from.addr`) asks to punch through to `target`,
    /// whose tunnel is `target_conn`. Tell the target to dial now and
    /// answer with where the target can be reached.
    pub async fn punch(
        &self,
        from: PeerAddr,
        from_conn_rtt: Duration,
        mut addrs: Vec<SocketAddr>,
        target_conn: Option<Connection>,
    ) -> Response {
        if let Err(e) = self.allowed(from.id) {
            return Response::Error(e);
        }
        let Some(target) = target_conn else {
            return Response::Error(WireError::new(
                ErrorKind::NotFound,
                "that node is not connected to this super",
            ));
        };
        // Where this super sees the asker is the address most likely to
        // work for the target too (endpoint-independent NATs).
        if !addrs.contains(&from.addr) {
            addrs.insert(0, from.addr);
        }
        addrs.truncate(8);
        let rtt = from_conn_rtt + target.rtt();
        let rtt_ms = u32::try_from(rtt.as_millis()).unwrap_or(u32::MAX);
        let req = Request::PunchNow {
            from: from.id,
            addrs,
            rtt_ms,
        };
        self.stats.punches_coordinated.inc();
        match tokio::time::timeout(TARGET_TIMEOUT, target.request(&req, &[], 0)).await {
            Ok(Ok((Response::PunchAddrs { mut addrs, .. }, _))) => {
                let seen = target.remote_addr();
                if !addrs.contains(&seen) {
                    addrs.insert(0, seen);
                }
                addrs.truncate(8);
                Response::PunchAddrs { addrs, rtt_ms }
            }
            Ok(Ok((Response::Error(e), _))) => Response::Error(e),
            Ok(Ok((other, _))) => Response::Error(WireError::new(
                ErrorKind::Internal,
                format!("target answered PunchNow with {other:?}"),
            )),
            Ok(Err(e)) => Response::Error(WireError::new(
                ErrorKind::Unavailable,
                format!("cannot reach the target: {e}"),
            )),
            Err(_) => Response::Error(WireError::new(
                ErrorKind::Unavailable,
                "the target did not answer in time",
            )),
        }
    }

    /// `from` opened a relay circuit to `target`: check the quotas, open the
    /// other half on the target's tunnel, and splice until either side ends
    /// or a quota is used up. Refusals are answered on the stream.
    pub async fn relay(
        self: Arc<Self>,
        from: OrbId,
        target: OrbId,
        target_conn: Option<Connection>,
        incoming: IncomingRequest,
    ) {
        let refuse = |incoming: IncomingRequest, e: WireError| async move {
            let (_, _, responder) = incoming.split();
            let _ = responder.respond(&Response::Error(e), &[]).await;
        };
        if let Err(e) = self.allowed(from) {
            self.stats.relay_refused.inc();
            return refuse(incoming, e).await;
        }
        let Some(target_conn) = target_conn else {
            self.stats.relay_refused.inc();
            return refuse(
                incoming,
                WireError::new(
                    ErrorKind::NotFound,
                    format!("node {} is not connected to this super", target.short()),
                ),
            )
            .await;
        };
        let opened = {
            let mut book = lock(&self.book);
            book.open(from, target).map(|()| book.limits())
        };
        let limits = match opened {
            Ok(limits) => limits,
            Err(e) => {
                self.stats.relay_refused.inc();
                warn!(from = %from.short(), to = %target.short(), reason = %e, "relay circuit refused");
                return refuse(incoming, WireError::new(ErrorKind::Quota, e.to_string())).await;
            }
        };
        let _release = Release {
            bridge: self.clone(),
            a: from,
            b: target,
        };
        let to_target = match tokio::time::timeout(
            TARGET_TIMEOUT,
            target_conn.open_tunnel(&Request::RelayIncoming { from }),
        )
        .await
        {
            Ok(Ok((_, Some(t)))) => t,
            Ok(Ok((Response::Error(e), None))) => return refuse(incoming, e).await,
            Ok(Ok((other, None))) => {
                return refuse(
                    incoming,
                    WireError::new(
                        ErrorKind::Internal,
                        format!("target answered RelayIncoming with {other:?}"),
                    ),
                )
                .await;
            }
            Ok(Err(e)) => {
                return refuse(
                    incoming,
                    WireError::new(
                        ErrorKind::Unavailable,
                        format!("cannot reach the target: {e}"),
                    ),
                )
                .await;
            }
            Err(_) => {
                return refuse(
                    incoming,
                    WireError::new(ErrorKind::Unavailable, "the target did not answer in time"),
                )
                .await;
            }
        };
        let to_caller = match incoming.accept_tunnel().await {
            Ok(t) => t,
            Err(e) => {
                debug!(error = %e, "caller left before the circuit opened");
                return;
            }
        };
        self.stats.relay_circuits.inc();
        info!(from = %from.short(), to = %target.short(), "relay circuit open");
        let gate = Arc::new(Gate(Mutex::new(CircuitMeter::new(Instant::now(), &limits))));
        let report = orb_transport::splice(to_caller, to_target, gate).await;
        self.stats.relay_bytes.inc_by(report.a_to_b + report.b_to_a);
        match &report.ended_by {
            Some(reason) if reason.contains("quota") => {
                warn!(from = %from.short(), to = %target.short(), %reason, "relay circuit closed by quota")
            }
            _ => {
                debug!(from = %from.short(), to = %target.short(), up = report.a_to_b, down = report.b_to_a, "relay circuit closed")
            }
        }
    }

    /// Dial `peer` at the address this super sees it from, from the second
    /// socket, and ping it.
    pub async fn dial_back(&self, peer: PeerAddr) -> Response {
        self.stats.dial_backs.inc();
        let Some(ep) = &self.dial_back else {
            return Response::Error(WireError::new(
                ErrorKind::Unavailable,
                "this super has no dial-back socket",
            ));
        };
        let reachable = tokio::time::timeout(DIAL_BACK_TIMEOUT, async {
            let conn = ep.connect(peer).await.ok()?;
            let ok = matches!(
                conn.request(&Request::Ping { nonce: 7 }, &[], 0).await,
                Ok((Response::Pong { nonce: 7 }, _))
            );
            conn.close("dial-back done");
            Some(ok)
        })
        .await
        .ok()
        .flatten()
        .unwrap_or(false);
        Response::DialBack {
            dialed: peer.addr,
            reachable,
        }
    }
}

/// Gives a circuit's quota slots back however the relay ends.
struct Release {
    bridge: Arc<Bridge>,
    a: OrbId,
    b: OrbId,
}

impl Drop for Release {
    fn drop(&mut self) {
        lock(&self.bridge.book).close(self.a, self.b);
    }
}
