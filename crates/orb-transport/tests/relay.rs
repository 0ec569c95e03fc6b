//! Relay tunnels over loopback: a QUIC connection between two nodes runs
//! inside streams spliced by a third, with the identity check end to end.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use orb_proto::wire::{Request, Response};
use orb_proto::{Keypair, OrbId, PeerAddr};
use orb_transport::{Endpoint, SpliceGate, TransportConfig, TransportError, Tunnel};

#[path = "support/relay_lab.rs"]
mod relay_lab;
use relay_lab::{serve_relay, serve_relayed};

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

/// Lets everything through up to `limit` bytes in all.
struct Volume {
    used: AtomicU64,
    limit: u64,
}

impl SpliceGate for Volume {
    fn admit(&self, bytes: usize) -> Result<Duration, String> {
        let used = self.used.fetch_add(bytes as u64, Ordering::Relaxed) + bytes as u64;
        if used > self.limit {
            Err(format!(
                "relay volume quota of {} bytes used up",
                self.limit
            ))
        } else {
            Ok(Duration::ZERO)
        }
    }
}

struct Setup {
    caller: Endpoint,
    caller_key: Keypair,
    relay: Endpoint,
    target: OrbId,
}

/// Caller (seed 1), relay (seed 2), target (seed 3) linked to the relay.
async fn setup(gate: Arc<dyn SpliceGate>) -> Result<Setup> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let caller = endpoint(1)?;
    let relay = endpoint(2)?;
    let target_key = Keypair::from_seed([3; 32]);
    let target = Endpoint::bind(
        "127.0.0.1:0".parse()?,
        &target_key,
        TransportConfig::default(),
    )?;
    // The target dials out to the relay (as a NATed client would) and the
    // relay accepts that link first, so it can reach the target later.
    let link = target.connect(peer(&relay)?).await?;
    let relay_side = tokio::time::timeout(T, relay.accept())
        .await?
        .context("relay accept")?;
    serve_relayed(link, target_key, true);
    serve_relay(relay.clone(), relay_side, gate);
    Ok(Setup {
        caller,
        caller_key: Keypair::from_seed([1; 32]),
        relay,
        target: target.id(),
    })
}

async fn open_circuit(s: &Setup) -> Result<Tunnel> {
    let to_relay = s.caller.connect(peer(&s.relay)?).await?;
    match to_relay
        .open_tunnel(&Request::Relay { target: s.target })
        .await?
    {
        (Response::RelayReady, Some(t)) => Ok(t),
        (other, _) => bail!("relay refused: {other:?}"),
    }
}

fn unlimited() -> Arc<dyn SpliceGate> {
    Arc::new(Volume {
        used: AtomicU64::new(0),
        limit: u64::MAX,
    })
}

#[tokio::test]
async fn relayed_connection_carries_requests_end_to_end() -> Result<()> {
    let s = setup(unlimited()).await?;
    let tunnel = open_circuit(&s).await?;
    let ep = Endpoint::over_tunnel(tunnel, &s.caller_key, TransportConfig::default())?;
    let conn = tokio::time::timeout(T, ep.connect(Endpoint::tunnel_peer(s.target))).await??;
    assert_eq!(conn.peer_id(), s.target);
    // Many requests, some with bodies bigger than one tunnel packet.
    for nonce in 0..50u64 {
        let body = vec![nonce as u8; (nonce as usize) * 4096];
        let (resp, echoed) =
            tokio::time::timeout(T, conn.request(&Request::Ping { nonce }, &body, 1 << 20))
                .await??;
        assert_eq!(resp, Response::Pong { nonce });
        assert_eq!(echoed.as_ref(), body.as_slice());
    }
    Ok(())
}

#[tokio::test]
async fn relay_cannot_pose_as_another_node() -> Result<()> {
    let s = setup(unlimited()).await?;
    let tunnel = open_circuit(&s).await?;
    let ep = Endpoint::over_tunnel(tunnel, &s.caller_key, TransportConfig::default())?;
    // The circuit ends at the target, but the caller asks for someone else:
    // the TLS check inside the tunnel refuses, naming both IDs.
    let impostor_wanted = Keypair::from_seed([9; 32]).id();
    let err = tokio::time::timeout(T, ep.connect(Endpoint::tunnel_peer(impostor_wanted)))
        .await?
        .expect_err("must refuse a different identity");
    match err {
        TransportError::WrongPeer { expected, found } => {
            assert_eq!(expected, impostor_wanted);
            assert_eq!(found, s.target);
        }
        other => bail!("expected WrongPeer, got {other}"),
    }
    Ok(())
}

#[tokio::test]
async fn volume_quota_ends_the_circuit() -> Result<()> {
    let s = setup(Arc::new(Volume {
        used: AtomicU64::new(0),
        limit: 256 * 1024,
    }))
    .await?;
    let tunnel = open_circuit(&s).await?;
    let ep = Endpoint::over_tunnel(tunnel, &s.caller_key, TransportConfig::default())?;
    let conn = tokio::time::timeout(T, ep.connect(Endpoint::tunnel_peer(s.target))).await??;
    // Small requests pass; pushing past the quota ends the circuit, and the
    // connection inside fails instead of hanging.
    conn.request(&Request::Ping { nonce: 1 }, b"small", 1024)
        .await?;
    let big = vec![0u8; 1 << 20];
    let mut failed = false;
    for nonce in 0..8u64 {
        match tokio::time::timeout(
            Duration::from_secs(15),
            conn.request(&Request::Ping { nonce }, &big, 2 << 20),
        )
        .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(failed, "requests kept passing beyond the volume quota");
    Ok(())
}
