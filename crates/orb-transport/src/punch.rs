//! Hole-punching primitives below QUIC: raw datagrams from an endpoint's
//! own socket (optionally with a small TTL), and a bounded set of probe
//! sockets for the Strict side of a birthday punch.
//!
//! # Punch packets
//!
//! ```text
//! 0x80 'O' 'R' 'B' 'p' | kind (1 = opener, 2 = probe) | nonce (u64 BE)
//! ```
//!
//! 14 bytes. To a QUIC endpoint this is a long-header packet of version
//! `0x4f524270`, which no QUIC version uses; a packet of an unsupported
//! version shorter than 1,200 bytes gets no version negotiation (RFC 9000
//! §5.2.2, and quinn follows it), so quinn drops it silently, whether or
//! not it accepts greased fixed bits (quinn does by default, so a clear
//! fixed bit alone would not be enough). The fixed bit is clear as well,
//! so a QUIC stack that checks it drops the packet even earlier. The nonce
//! comes from whoever coordinates the punch and lets the receiver tell the
//! peer's packets from anything else that arrives.

use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::ReadBuf;
use tokio::net::UdpSocket;

use crate::{Endpoint, TransportError};

/// Length of every [`PunchPacket`] on the wire.
pub const PUNCH_PACKET_LEN: usize = 14;

/// Most sockets a [`ProbeSockets`] set holds.
pub const MAX_PROBE_SOCKETS: usize = 256;

/// Long header form, fixed bit clear, then a version no QUIC uses.
const MAGIC: [u8; 5] = [0x80, b'O', b'R', b'B', b'p'];

/// Datagrams a probe socket reads per wake-up before the others get a turn.
const DRAIN_PER_POLL: usize = 16;

/// How often, and how long apart, a send that would block is retried: the
/// socket buffer is full only for moments.
const SEND_RETRIES: u32 = 20;
const SEND_RETRY_PAUSE: Duration = Duration::from_millis(1);

/// What a punch packet is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PunchKind {
    /// Opens the sender's own NAT; usually sent with a small TTL so it never
    /// arrives.
    Opener,
    /// Looks for a way through the other side's NAT.
    Probe,
}

/// A hole-punching datagram: its kind and the punch's nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PunchPacket {
    /// What it is for.
    pub kind: PunchKind,
    /// The nonce of the punch it belongs to.
    pub nonce: u64,
}

impl PunchPacket {
    /// An opener of punch `nonce`.
    pub fn opener(nonce: u64) -> Self {
        PunchPacket {
            kind: PunchKind::Opener,
            nonce,
        }
    }

    /// A probe of punch `nonce`.
    pub fn probe(nonce: u64) -> Self {
        PunchPacket {
            kind: PunchKind::Probe,
            nonce,
        }
    }

    /// The wire form.
    pub fn encode(&self) -> [u8; PUNCH_PACKET_LEN] {
        let mut out = [0u8; PUNCH_PACKET_LEN];
        out[..5].copy_from_slice(&MAGIC);
        out[5] = match self.kind {
            PunchKind::Opener => 1,
            PunchKind::Probe => 2,
        };
        out[6..].copy_from_slice(&self.nonce.to_be_bytes());
        out
    }

    /// Parse a datagram; `None` for anything that is not exactly a punch
    /// packet.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != PUNCH_PACKET_LEN || bytes[..5] != MAGIC {
            return None;
        }
        let kind = match bytes[5] {
            1 => PunchKind::Opener,
            2 => PunchKind::Probe,
            _ => return None,
        };
        let mut nonce = [0u8; 8];
        nonce.copy_from_slice(&bytes[6..]);
        Some(PunchPacket {
            kind,
            nonce: u64::from_be_bytes(nonce),
        })
    }
}

fn check_ttl(ttl: u32) -> Result<(), TransportError> {
    if (1..=255).contains(&ttl) {
        Ok(())
    } else {
        Err(TransportError::Punch(format!(
            "TTL {ttl} is outside 1..=255"
        )))
    }
}

/// Whether packets to `to` leave `sock` over IPv6 (a hop limit) rather
/// than IPv4 (a TTL); a dual-stack socket sends to mapped addresses over
/// IPv4.
fn over_v6(sock: &socket2::SockRef<'_>, to: SocketAddr) -> io::Result<bool> {
    let mapped = matches!(to.ip(), IpAddr::V6(ip) if ip.to_ipv4_mapped().is_some());
    Ok(sock.local_addr()?.is_ipv6() && to.is_ipv6() && !mapped)
}

/// Sets a socket's TTL for the packets sent while it lives, and puts the
/// old value back when dropped.
struct TtlGuard<'a> {
    sock: socket2::SockRef<'a>,
    v6: bool,
    old: u32,
}

impl<'a> TtlGuard<'a> {
    /// `None` when no TTL is asked for.
    fn set(
        sock: socket2::SockRef<'a>,
        to: SocketAddr,
        ttl: Option<u32>,
    ) -> Result<Option<Self>, TransportError> {
        let Some(ttl) = ttl else {
            return Ok(None);
        };
        check_ttl(ttl)?;
        let err = |e: io::Error| TransportError::Punch(format!("setting the TTL: {e}"));
        let v6 = over_v6(&sock, to).map_err(err)?;
        let old = if v6 {
            sock.unicast_hops_v6()
        } else {
            sock.ttl_v4()
        }
        .map_err(err)?;
        if v6 {
            sock.set_unicast_hops_v6(ttl)
        } else {
            sock.set_ttl_v4(ttl)
        }
        .map_err(err)?;
        Ok(Some(TtlGuard { sock, v6, old }))
    }
}

impl Drop for TtlGuard<'_> {
    fn drop(&mut self) {
        let restored = if self.v6 {
            self.sock.set_unicast_hops_v6(self.old)
        } else {
            self.sock.set_ttl_v4(self.old)
        };
        if let Err(e) = restored {
            tracing::warn!("cannot restore a socket's TTL to {}: {e}", self.old);
        }
    }
}

/// Send `bytes` to `to` from a non-blocking socket, with `ttl` for this
/// datagram only, retrying briefly while the socket buffer is full.
async fn send_with_ttl(
    sock: &std::net::UdpSocket,
    to: SocketAddr,
    bytes: &[u8],
    ttl: Option<u32>,
) -> Result<(), TransportError> {
    // QUIC packets sent while the guard lives go out with the small TTL
    // and are lost; QUIC retransmits them.
    let _ttl = TtlGuard::set(socket2::SockRef::from(sock), to, ttl)?;
    for attempt in 0..=SEND_RETRIES {
        match sock.send_to(bytes, to) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && attempt < SEND_RETRIES => {
                tokio::time::sleep(SEND_RETRY_PAUSE).await;
            }
            Err(e) => return Err(TransportError::Punch(format!("sending to {to}: {e}"))),
        }
    }
    Err(TransportError::Punch(format!(
        "sending to {to}: socket busy"
    )))
}

/// The raw-datagram handle of an endpoint: a second descriptor of its UDP
/// socket, so punch packets leave from the address QUIC uses.
pub(crate) struct RawSender {
    sock: std::net::UdpSocket,
    /// Held across a send with a TTL, so two such sends cannot restore each
    /// other's TTL in the wrong order.
    lock: tokio::sync::Mutex<()>,
}

impl RawSender {
    pub(crate) fn new(sock: std::net::UdpSocket) -> Self {
        RawSender {
            sock,
            lock: tokio::sync::Mutex::new(()),
        }
    }
}

impl Endpoint {
    /// Send `packet` as a raw UDP datagram to `to` from this endpoint's own
    /// socket, next to its QUIC traffic. With `ttl`, the datagram leaves
    /// with that TTL (hop limit for IPv6): a small one opens this side's
    /// NAT without reaching the other side's. The socket's TTL is set back
    /// right after; a QUIC packet sent in that moment is lost and
    /// retransmitted. Receivers' QUIC stacks drop punch packets silently
    /// (see the module docs).
    pub async fn send_datagram(
        &self,
        to: SocketAddr,
        packet: &PunchPacket,
        ttl: Option<u32>,
    ) -> Result<(), TransportError> {
        let Some(raw) = &self.inner.raw else {
            return Err(TransportError::Punch(
                "an endpoint over a relay tunnel has no UDP socket".into(),
            ));
        };
        if self.inner.closed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(TransportError::Closed);
        }
        let _guard = raw.lock.lock().await;
        send_with_ttl(&raw.sock, to, &packet.encode(), ttl).await
    }
}

/// The socket that heard the peer first, taken out of a [`ProbeSockets`].
#[derive(Debug)]
pub struct ProbeWin {
    /// The socket; hand it to [`Endpoint::from_socket`].
    pub socket: std::net::UdpSocket,
    /// Its local address.
    pub local: SocketAddr,
    /// Where the matching packet came from: the peer's public address as
    /// this side's NAT mapping sees it, the address to dial.
    pub from: SocketAddr,
    /// The packet that arrived.
    pub packet: PunchPacket,
}

/// The Strict side of a birthday punch: up to [`MAX_PROBE_SOCKETS`] UDP
/// sockets, each of which opens its own NAT mapping toward the peer and
/// listens for the peer's probes. Dropping the set closes every socket
/// still in it.
#[derive(Debug)]
pub struct ProbeSockets {
    sockets: Vec<UdpSocket>,
}

impl ProbeSockets {
    /// Bind `n` sockets (at most [`MAX_PROBE_SOCKETS`], at least one) on
    /// `ip` with ports chosen by the system. Must be called inside a tokio
    /// runtime.
    pub fn bind(ip: IpAddr, n: usize) -> Result<ProbeSockets, TransportError> {
        let addr = SocketAddr::new(ip, 0);
        let bind_err = |source: io::Error| TransportError::Bind { addr, source };
        let n = n.clamp(1, MAX_PROBE_SOCKETS);
        let mut sockets = Vec::with_capacity(n);
        for _ in 0..n {
            let s = std::net::UdpSocket::bind(addr).map_err(bind_err)?;
            s.set_nonblocking(true).map_err(bind_err)?;
            sockets.push(UdpSocket::from_std(s).map_err(bind_err)?);
        }
        Ok(ProbeSockets { sockets })
    }

    /// Sockets in the set.
    pub fn len(&self) -> usize {
        self.sockets.len()
    }

    /// Whether the set is empty (after its only socket won).
    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// The sockets' local addresses.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.sockets
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .collect()
    }

    /// Send one opener of punch `nonce` from every socket to `to`, with
    /// `ttl` if given (each socket's TTL is restored afterwards, so a
    /// winning socket carries QUIC at the normal TTL). Returns how many
    /// went out; a socket that fails is skipped.
    pub async fn send_openers(&self, to: SocketAddr, nonce: u64, ttl: Option<u32>) -> usize {
        let bytes = PunchPacket::opener(nonce).encode();
        let mut sent = 0;
        for s in &self.sockets {
            let sent_one = async {
                let _ttl = TtlGuard::set(socket2::SockRef::from(s), to, ttl)?;
                s.send_to(&bytes, to)
                    .await
                    .map_err(|e| TransportError::Punch(e.to_string()))
            }
            .await;
            match sent_one {
                Ok(_) => sent += 1,
                Err(e) => tracing::debug!(%to, "opener not sent: {e}"),
            }
        }
        sent
    }

    /// Wait until a punch packet with `nonce` arrives on any socket, or
    /// `deadline` passes ([`TransportError::Timeout`]). The winning socket
    /// leaves the set; the others stay (call again after sending another
    /// round of openers, or drop the set to close them). Other datagrams
    /// are read and ignored.
    pub async fn wait(
        &mut self,
        nonce: u64,
        deadline: tokio::time::Instant,
    ) -> Result<ProbeWin, TransportError> {
        if self.sockets.is_empty() {
            return Err(TransportError::Punch("no probe socket left".into()));
        }
        let found = tokio::time::timeout_at(deadline, poll_fn(|cx| self.poll_match(cx, nonce)))
            .await
            .map_err(|_| TransportError::Timeout)?;
        let (i, from, packet) = found;
        let sock = self.sockets.swap_remove(i);
        let local = sock
            .local_addr()
            .map_err(|e| TransportError::Punch(e.to_string()))?;
        let socket = sock
            .into_std()
            .map_err(|e| TransportError::Punch(e.to_string()))?;
        Ok(ProbeWin {
            socket,
            local,
            from,
            packet,
        })
    }

    fn poll_match(
        &self,
        cx: &mut Context<'_>,
        nonce: u64,
    ) -> Poll<(usize, SocketAddr, PunchPacket)> {
        let mut buf = [0u8; 64];
        let mut more = false;
        for (i, s) in self.sockets.iter().enumerate() {
            let mut drained = true;
            for _ in 0..DRAIN_PER_POLL {
                let mut rb = ReadBuf::new(&mut buf);
                match s.poll_recv_from(cx, &mut rb) {
                    Poll::Ready(Ok(from)) => {
                        if let Some(p) = PunchPacket::decode(rb.filled())
                            && p.nonce == nonce
                        {
                            return Poll::Ready((i, from, p));
                        }
                    }
                    // An ICMP error queued on the socket; the next read
                    // goes on with the datagrams.
                    Poll::Ready(Err(_)) => {}
                    Poll::Pending => {
                        drained = false;
                        break;
                    }
                }
            }
            // A socket still holding datagrams registered no wake-up.
            more |= drained;
        }
        if more {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn punch_packets_round_trip_and_reject_anything_else() {
        for p in [
            PunchPacket::opener(0),
            PunchPacket::probe(u64::MAX),
            PunchPacket::probe(42),
        ] {
            let wire = p.encode();
            assert_eq!(wire.len(), PUNCH_PACKET_LEN);
            // Long header form, fixed bit clear.
            assert_eq!(wire[0] & 0xc0, 0x80);
            assert_eq!(PunchPacket::decode(&wire), Some(p));
        }
        let good = PunchPacket::probe(7).encode();
        assert_eq!(PunchPacket::decode(&good[..13]), None);
        let mut longer = good.to_vec();
        longer.push(0);
        assert_eq!(PunchPacket::decode(&longer), None);
        let mut bad_kind = good;
        bad_kind[5] = 9;
        assert_eq!(PunchPacket::decode(&bad_kind), None);
        let mut bad_magic = good;
        bad_magic[1] = b'X';
        assert_eq!(PunchPacket::decode(&bad_magic), None);
        assert_eq!(PunchPacket::decode(&[]), None);
    }

    #[tokio::test]
    async fn a_ttl_applies_to_one_datagram_only() -> Result<(), TransportError> {
        let err = |e: io::Error| TransportError::Punch(e.to_string());
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").map_err(err)?;
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").map_err(err)?;
        tx.set_nonblocking(true).map_err(err)?;
        let before = tx.ttl().map_err(err)?;
        let to = rx.local_addr().map_err(err)?;
        send_with_ttl(&tx, to, b"x", Some(2)).await?;
        assert_eq!(tx.ttl().map_err(err)?, before);
        // A refused TTL leaves the socket as it was, too.
        assert!(send_with_ttl(&tx, to, b"x", Some(300)).await.is_err());
        assert_eq!(tx.ttl().map_err(err)?, before);
        let mut buf = [0u8; 4];
        rx.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(err)?;
        assert_eq!(rx.recv(&mut buf).map_err(err)?, 1);
        Ok(())
    }

    #[test]
    fn ttl_outside_the_ip_range_is_refused() {
        assert!(check_ttl(0).is_err());
        assert!(check_ttl(256).is_err());
        assert!(check_ttl(1).is_ok() && check_ttl(255).is_ok());
    }
}
