//! Hole-punching primitives over loopback: raw punch datagrams from an
//! endpoint's own socket, probe sockets, and an endpoint on the socket
//! that won.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use orb_proto::wire::{Request, Response};
use orb_proto::{Keypair, PeerAddr};
use orb_transport::{
    Connection, Endpoint, PUNCH_PACKET_LEN, ProbeSockets, PunchKind, PunchPacket, TransportConfig,
    TransportError,
};

const T: Duration = Duration::from_secs(10);

fn endpoint(seed: u8) -> Result<Endpoint> {
    let addr: SocketAddr = "127.0.0.1:0".parse()?;
    Ok(Endpoint::bind(
        addr,
        &Keypair::from_seed([seed; 32]),
        TransportConfig::default(),
    )?)
}

fn peer(ep: &Endpoint) -> Result<PeerAddr> {
    Ok(PeerAddr {
        id: ep.id(),
        addr: ep.local_addr()?,
    })
}

/// Accept connections forever and answer Ping with Pong.
fn serve(ep: Endpoint) {
    tokio::spawn(async move {
        while let Some(conn) = ep.accept().await {
            tokio::spawn(async move {
                while let Ok(req) = conn.accept_request().await {
                    let (req, _, responder) = req.split();
                    if let Request::Ping { nonce } = req {
                        let _ = responder.respond(&Response::Pong { nonce }, &[]).await;
                    }
                }
            });
        }
    });
}

async fn ping(conn: &Connection, nonce: u64) -> Result<()> {
    let (resp, _) =
        tokio::time::timeout(T, conn.request(&Request::Ping { nonce }, &[], 0)).await??;
    if resp != (Response::Pong { nonce }) {
        bail!("unexpected response {resp:?}");
    }
    Ok(())
}

/// A plain socket that receives punch packets.
fn listener() -> Result<UdpSocket> {
    let s = UdpSocket::bind("127.0.0.1:0")?;
    s.set_read_timeout(Some(Duration::from_millis(300)))?;
    Ok(s)
}

fn recv_packet(s: &UdpSocket) -> Result<(PunchPacket, SocketAddr)> {
    let mut buf = [0u8; 1500];
    let (n, from) = s.recv_from(&mut buf).context("no datagram")?;
    let p = PunchPacket::decode(&buf[..n]).context("not a punch packet")?;
    Ok((p, from))
}

#[tokio::test(flavor = "multi_thread")]
async fn punch_datagrams_leave_from_the_quic_socket_and_quic_goes_on() -> Result<()> {
    let a = endpoint(1)?;
    let b = endpoint(2)?;
    serve(b.clone());
    let conn = tokio::time::timeout(T, a.connect(peer(&b)?)).await??;
    ping(&conn, 1).await?;

    // To a plain socket: the packet arrives intact, from the address QUIC
    // uses, with and without a TTL.
    let l = listener()?;
    let to = l.local_addr()?;
    a.send_datagram(to, &PunchPacket::opener(77), Some(2))
        .await?;
    a.send_datagram(to, &PunchPacket::probe(78), None).await?;
    let (p1, from1) = recv_packet(&l)?;
    let (p2, from2) = recv_packet(&l)?;
    assert_eq!(p1, PunchPacket::opener(77));
    assert_eq!(p2.kind, PunchKind::Probe);
    assert_eq!(p2.nonce, 78);
    assert_eq!(from1, a.local_addr()?);
    assert_eq!(from2, a.local_addr()?);

    // To the peer's QUIC endpoint, interleaved with requests on the live
    // connection: quinn drops them silently and the connection works on.
    for i in 0..50u64 {
        let ttl = if i % 2 == 0 {
            Some(1 + (i % 5) as u32)
        } else {
            None
        };
        a.send_datagram(b.local_addr()?, &PunchPacket::probe(i), ttl)
            .await?;
        ping(&conn, 100 + i).await?;
    }
    assert!(!conn.is_closed());

    // A TTL outside the IP range is refused, and nothing is sent.
    match a.send_datagram(to, &PunchPacket::probe(1), Some(0)).await {
        Err(TransportError::Punch(why)) => assert!(why.contains("TTL"), "{why}"),
        other => bail!("TTL 0 accepted: {other:?}"),
    }
    assert!(recv_packet(&l).is_err(), "a refused datagram was sent");

    // A closed endpoint sends nothing.
    a.close();
    assert!(matches!(
        a.send_datagram(to, &PunchPacket::probe(2), None).await,
        Err(TransportError::Closed)
    ));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn quic_endpoints_answer_punch_packets_with_nothing() -> Result<()> {
    let b = endpoint(2)?;
    serve(b.clone());
    let raw = listener()?;
    for i in 0..20u64 {
        raw.send_to(&PunchPacket::probe(i).encode(), b.local_addr()?)?;
        raw.send_to(&PunchPacket::opener(i).encode(), b.local_addr()?)?;
    }
    let mut buf = [0u8; 1500];
    // No version negotiation, no stateless reset, nothing.
    assert!(
        raw.recv_from(&mut buf).is_err(),
        "the endpoint answered a punch packet"
    );
    // And it still accepts connections.
    let a = endpoint(1)?;
    let conn = tokio::time::timeout(T, a.connect(peer(&b)?)).await??;
    ping(&conn, 9).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn probe_sockets_hand_over_the_socket_that_heard_the_peer() -> Result<()> {
    let nonce = 0xfeed_beef;
    let mut set = ProbeSockets::bind("127.0.0.1".parse()?, 16)?;
    assert_eq!(set.len(), 16);
    let addrs = set.local_addrs();
    assert_eq!(addrs.len(), 16);

    // Openers from every socket reach their target, TTL restored after.
    let l = listener()?;
    assert_eq!(set.send_openers(l.local_addr()?, nonce, Some(3)).await, 16);
    let mut seen = Vec::new();
    for _ in 0..16 {
        let (p, from) = recv_packet(&l)?;
        assert_eq!(p, PunchPacket::opener(nonce));
        seen.push(from);
    }
    seen.sort();
    let mut want = addrs.clone();
    want.sort();
    assert_eq!(seen, want);

    // The prober: an endpoint that sends junk, wrong nonces, then the
    // right probe to one of the sockets.
    let prober_key = Keypair::from_seed([8; 32]);
    let prober = Endpoint::bind(
        "127.0.0.1:0".parse()?,
        &prober_key,
        TransportConfig::default(),
    )?;
    serve(prober.clone());
    let target = addrs[7];
    let junk = UdpSocket::bind("127.0.0.1:0")?;
    for a in &addrs {
        junk.send_to(b"hello", a)?;
        junk.send_to(&[0u8; PUNCH_PACKET_LEN], a)?;
        prober
            .send_datagram(*a, &PunchPacket::probe(nonce + 1), None)
            .await?;
    }
    prober
        .send_datagram(target, &PunchPacket::probe(nonce), None)
        .await?;
    let deadline = tokio::time::Instant::now() + T;
    let win = set.wait(nonce, deadline).await?;
    assert_eq!(win.local, target);
    assert_eq!(win.from, prober.local_addr()?);
    assert_eq!(win.packet, PunchPacket::probe(nonce));
    assert_eq!(set.len(), 15, "the winner left the set");
    drop(set);

    // The winning socket carries QUIC, with the usual identity pinning.
    let strict_key = Keypair::from_seed([9; 32]);
    let ep = Endpoint::from_socket(win.socket, &strict_key, TransportConfig::default())?;
    assert_eq!(ep.local_addr()?, target);
    let conn = tokio::time::timeout(
        T,
        ep.connect(PeerAddr {
            id: prober_key.id(),
            addr: win.from,
        }),
    )
    .await??;
    ping(&conn, 3).await?;
    // A dial that expects another identity on that address is refused.
    let wrong = ep
        .connect(PeerAddr {
            id: Keypair::from_seed([10; 32]).id(),
            addr: win.from,
        })
        .await;
    assert!(
        matches!(wrong, Err(TransportError::WrongPeer { .. })),
        "{wrong:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn probe_sockets_give_up_at_the_deadline() -> Result<()> {
    let mut set = ProbeSockets::bind("127.0.0.1".parse()?, 4)?;
    let junk = UdpSocket::bind("127.0.0.1:0")?;
    for a in set.local_addrs() {
        junk.send_to(&PunchPacket::probe(1).encode(), a)?;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_millis(200);
    match set.wait(2, deadline).await {
        Err(TransportError::Timeout) => {}
        other => bail!("expected a timeout, got {other:?}"),
    }
    assert_eq!(set.len(), 4);
    // Asking for more than the bound gets the bound.
    let big = ProbeSockets::bind("127.0.0.1".parse()?, 10_000)?;
    assert_eq!(big.len(), orb_transport::MAX_PROBE_SOCKETS);
    Ok(())
}
