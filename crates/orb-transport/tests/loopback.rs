//! End-to-end tests over loopback UDP.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use orb_proto::wire::{ErrorKind, Request, Response};
use orb_proto::{Keypair, PeerAddr};
use orb_transport::{Connection, Endpoint, TransportConfig, TransportError};

const T: Duration = Duration::from_secs(10);

fn endpoint(seed: u8) -> Result<Endpoint> {
    endpoint_with(seed, TransportConfig::default())
}

fn endpoint_with(seed: u8, cfg: TransportConfig) -> Result<Endpoint> {
    let addr: SocketAddr = "127.0.0.1:0".parse()?;
    Ok(Endpoint::bind(addr, &Keypair::from_seed([seed; 32]), cfg)?)
}

fn peer(ep: &Endpoint) -> Result<PeerAddr> {
    Ok(PeerAddr {
        id: ep.id(),
        addr: ep.local_addr()?,
    })
}

/// Accept connections forever; answer Ping with Pong and echo the body, and
/// answer ListFunctions with `big` bytes of body.
fn serve(ep: Endpoint, big: usize) {
    tokio::spawn(async move {
        while let Some(conn) = ep.accept().await {
            tokio::spawn(serve_conn(conn, big));
        }
    });
}

async fn serve_conn(conn: Connection, big: usize) {
    while let Ok(req) = conn.accept_request().await {
        tokio::spawn(async move {
            let (req, body, responder) = req.split();
            let _ = match req {
                Request::Ping { nonce } => {
                    responder.respond(&Response::Pong { nonce }, &body).await
                }
                Request::ListFunctions => {
                    responder
                        .respond(&Response::Functions(vec![]), &vec![7u8; big])
                        .await
                }
                _ => {
                    drop(responder);
                    Ok(())
                }
            };
        });
    }
}

async fn connect(from: &Endpoint, to: &Endpoint) -> Result<Connection> {
    Ok(tokio::time::timeout(T, from.connect(peer(to)?)).await??)
}

async fn ping(conn: &Connection, nonce: u64, body: &[u8]) -> Result<()> {
    let (resp, got) =
        tokio::time::timeout(T, conn.request(&Request::Ping { nonce }, body, body.len())).await??;
    if resp != (Response::Pong { nonce }) {
        bail!("unexpected response {resp:?}");
    }
    if got.as_ref() != body {
        bail!("body mismatch ({} vs {} bytes)", got.len(), body.len());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn round_trip_big_body_and_ids_both_ways() -> Result<()> {
    let a = endpoint(1)?;
    let b = endpoint(2)?;
    let conn = connect(&a, &b).await?;
    assert_eq!(conn.peer_id(), b.id());
    assert_eq!(conn.remote_addr(), b.local_addr()?);

    let incoming = tokio::time::timeout(T, b.accept())
        .await?
        .context("no incoming")?;
    assert_eq!(incoming.peer_id(), a.id());
    tokio::spawn(serve_conn(incoming, 0));

    let body: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    ping(&conn, 42, &body).await?;
    assert!(conn.rtt() < Duration::from_secs(1));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_peer_is_named() -> Result<()> {
    let a = endpoint(1)?;
    let b = endpoint(2)?;
    serve(b.clone(), 0);
    let wrong = Keypair::from_seed([9; 32]).id();
    let target = PeerAddr {
        id: wrong,
        addr: b.local_addr()?,
    };
    let err = tokio::time::timeout(T, a.connect(target))
        .await?
        .err()
        .context("connect to the wrong peer succeeded")?;
    match &err {
        TransportError::WrongPeer { expected, found } => {
            assert_eq!(*expected, wrong);
            assert_eq!(*found, b.id());
        }
        other => bail!("expected WrongPeer, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains(&wrong.to_string()), "{msg}");
    assert!(msg.contains(&b.id().to_string()), "{msg}");
    assert!(err.request_not_sent());
    // The right ID still works afterwards.
    ping(&connect(&a, &b).await?, 1, b"x").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn three_nodes_dial_and_accept_on_one_socket() -> Result<()> {
    let a = endpoint(1)?;
    let b = endpoint(2)?;
    let c = endpoint(3)?;
    for ep in [&a, &b, &c] {
        serve(ep.clone(), 0);
    }
    let ab = connect(&a, &b).await?;
    let ac = connect(&a, &c).await?;
    let bc = connect(&b, &c).await?;
    let ca = connect(&c, &a).await?;
    ping(&ab, 1, b"a->b").await?;
    ping(&ac, 2, b"a->c").await?;
    ping(&bc, 3, b"b->c").await?;
    ping(&ca, 4, b"c->a").await?;
    // Each dials from the same address it listens on.
    assert_eq!(ca.remote_addr(), a.local_addr()?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn many_concurrent_requests_on_one_connection() -> Result<()> {
    let a = endpoint(1)?;
    let b = endpoint(2)?;
    serve(b.clone(), 0);
    let conn = connect(&a, &b).await?;
    let mut tasks = Vec::new();
    for i in 0..50u64 {
        let conn = conn.clone();
        tasks.push(tokio::spawn(async move {
            let body = vec![i as u8; 10_000 + i as usize];
            ping(&conn, i, &body).await
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn response_body_over_limit() -> Result<()> {
    let a = endpoint(1)?;
    let b = endpoint(2)?;
    serve(b.clone(), 100_000);
    let conn = connect(&a, &b).await?;
    let err = tokio::time::timeout(T, conn.request(&Request::ListFunctions, &[], 1000))
        .await?
        .err()
        .context("oversized body accepted")?;
    assert!(
        matches!(err, TransportError::BodyTooLarge { limit: 1000 }),
        "{err:?}"
    );
    assert!(!err.request_not_sent());
    // Exactly at the limit is fine.
    let (resp, body) =
        tokio::time::timeout(T, conn.request(&Request::ListFunctions, &[], 100_000)).await??;
    assert_eq!(resp, Response::Functions(vec![]));
    assert_eq!(body.len(), 100_000);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn request_body_over_limit_gets_an_answer() -> Result<()> {
    let a = endpoint(1)?;
    let b = endpoint_with(
        2,
        TransportConfig {
            max_request_body: 1000,
            ..TransportConfig::default()
        },
    )?;
    serve(b.clone(), 0);
    let conn = connect(&a, &b).await?;
    for size in [1001, 2_000_000] {
        let (resp, _) = tokio::time::timeout(
            T,
            conn.request(&Request::Ping { nonce: 1 }, &vec![0; size], 10),
        )
        .await??;
        match resp {
            Response::Error(e) => assert_eq!(e.kind, ErrorKind::TooLarge),
            other => bail!("expected TooLarge, got {other:?}"),
        }
    }
    ping(&conn, 2, &[1; 1000]).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_frames_are_refused_and_connection_keeps_serving() -> Result<()> {
    let a = endpoint(1)?;
    let b = endpoint(2)?;
    serve(b.clone(), 0);
    let conn = connect(&a, &b).await?;

    // Declared length over MAX_FRAME: refused before any allocation.
    let too_big = ((orb_proto::limits::MAX_FRAME + 1) as u32).to_be_bytes();
    let err = tokio::time::timeout(T, conn.send_raw(&too_big))
        .await?
        .err()
        .context("oversized frame answered")?;
    assert!(matches!(err, TransportError::Stream(_)), "{err:?}");

    // Garbage that is not a Request.
    let mut garbage = 5u32.to_be_bytes().to_vec();
    garbage.extend_from_slice(&[0xff; 5]);
    let err = tokio::time::timeout(T, conn.send_raw(&garbage))
        .await?
        .err()
        .context("garbage answered")?;
    assert!(matches!(err, TransportError::Stream(_)), "{err:?}");

    // Truncated frame.
    let err = tokio::time::timeout(T, conn.send_raw(&[0, 0]))
        .await?
        .err()
        .context("truncated frame answered")?;
    assert!(matches!(err, TransportError::Stream(_)), "{err:?}");

    // A request the server drops unanswered is reported, not hung on.
    let err = tokio::time::timeout(
        T,
        conn.request(
            &Request::Place {
                name: "f".into(),
                hash: orb_proto::ContentHash::of(b"m"),
                files: None,
            },
            &[],
            10,
        ),
    )
    .await?
    .err()
    .context("dropped request answered")?;
    assert!(matches!(err, TransportError::Stream(_)), "{err:?}");

    ping(&conn, 7, b"still alive").await?;
    assert!(!conn.is_closed());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn accept_after_close_is_none() -> Result<()> {
    let a = endpoint(1)?;
    a.close();
    assert!(tokio::time::timeout(T, a.accept()).await?.is_none());

    // An accept already waiting also ends.
    let b = endpoint(2)?;
    let waiting = tokio::spawn({
        let b = b.clone();
        async move { b.accept().await.is_none() }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    b.close();
    assert!(tokio::time::timeout(T, waiting).await??);
    tokio::time::timeout(T, b.wait_idle()).await?;

    let c = endpoint(3)?;
    let err = tokio::time::timeout(T, a.connect(peer(&c)?))
        .await?
        .err()
        .context("closed endpoint dialed")?;
    assert!(err.request_not_sent(), "{err:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn peer_close_is_detected() -> Result<()> {
    let a = endpoint(1)?;
    let b = endpoint(2)?;
    serve(b.clone(), 0);
    let conn = connect(&a, &b).await?;
    ping(&conn, 1, b"hi").await?;
    assert!(!conn.is_closed());

    b.close();
    let reason = tokio::time::timeout(T, conn.closed()).await?;
    assert!(
        matches!(reason, TransportError::ConnectionLost(_)),
        "{reason:?}"
    );
    assert!(conn.is_closed());
    let err = conn
        .request(&Request::Ping { nonce: 2 }, &[], 10)
        .await
        .err()
        .context("request on closed connection")?;
    assert!(err.request_not_sent(), "{err:?}");
    assert!(conn.accept_request().await.is_err());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_timeout_closes_silent_connection() -> Result<()> {
    // Keep-alive longer than the idle timeout: the connection must die.
    let cfg = TransportConfig {
        idle_timeout: Duration::from_millis(300),
        keep_alive: Duration::from_secs(10),
        ..TransportConfig::default()
    };
    let a = endpoint_with(1, cfg.clone())?;
    let b = endpoint_with(2, cfg)?;
    serve(b.clone(), 0);
    let conn = connect(&a, &b).await?;
    let reason = tokio::time::timeout(T, conn.closed()).await?;
    assert!(conn.is_closed(), "{reason:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn keep_alive_holds_connection_open() -> Result<()> {
    let cfg = TransportConfig {
        idle_timeout: Duration::from_millis(600),
        keep_alive: Duration::from_millis(100),
        ..TransportConfig::default()
    };
    let a = endpoint_with(1, cfg.clone())?;
    let b = endpoint_with(2, cfg)?;
    serve(b.clone(), 0);
    let conn = connect(&a, &b).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!conn.is_closed());
    ping(&conn, 1, b"x").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_limit_refuses_extra() -> Result<()> {
    let b = endpoint_with(
        2,
        TransportConfig {
            max_connections: 1,
            handshake_timeout: Duration::from_secs(2),
            ..TransportConfig::default()
        },
    )?;
    serve(b.clone(), 0);
    let a = endpoint(1)?;
    let c = endpoint(3)?;
    let first = connect(&a, &b).await?;
    ping(&first, 1, b"x").await?;
    let err = tokio::time::timeout(T, c.connect(peer(&b)?))
        .await?
        .err()
        .context("second connection accepted over the limit")?;
    assert!(err.request_not_sent(), "{err:?}");
    Ok(())
}
