//! Endpoint setup: the QUIC and TLS configuration derived from a node's
//! key, and the accept loop that runs handshakes.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use orb_proto::{Keypair, OrbId};
use quinn::VarInt;
use quinn::crypto::rustls::{HandshakeData, QuicServerConfig};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::tls::{self, Identity};
use crate::{TransportConfig, TransportError};

/// The QUIC and TLS configuration of one endpoint.
pub(crate) struct Parts {
    pub(crate) endpoint_config: quinn::EndpointConfig,
    pub(crate) server: quinn::ServerConfig,
    pub(crate) identity: Identity,
    pub(crate) transport: Arc<quinn::TransportConfig>,
}

impl Parts {
    /// `mtu`: a fixed packet size for paths that cannot lose or fragment
    /// packets (relay tunnels); `None` for UDP with path MTU discovery.
    pub(crate) fn new(
        keypair: &Keypair,
        cfg: &TransportConfig,
        mtu: Option<u16>,
    ) -> Result<Parts, TransportError> {
        let bad = |reason: String| TransportError::Bind {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            source: io::Error::new(io::ErrorKind::InvalidInput, reason),
        };
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_idle_timeout(Some(
                quinn::IdleTimeout::try_from(cfg.idle_timeout)
                    .map_err(|e| bad(format!("idle timeout: {e}")))?,
            ))
            .keep_alive_interval(Some(cfg.keep_alive))
            .max_concurrent_bidi_streams(VarInt::from_u32(cfg.max_concurrent_streams))
            // Orb uses request/response streams only.
            .max_concurrent_uni_streams(VarInt::from_u32(0));
        if let Some(mtu) = mtu {
            // A tunnel is a reliable byte stream: big packets cost nothing
            // extra and halve the per-packet work of both ends and the relay.
            // The congestion controller's initial window must hold a few
            // packets or nothing is ever sent (quinn's default, 14720 bytes,
            // is under one 16 KiB packet: the handshake times out).
            let mut cubic = quinn::congestion::CubicConfig::default();
            cubic.initial_window(4 * u64::from(mtu));
            transport
                .initial_mtu(mtu)
                .min_mtu(mtu)
                .mtu_discovery_config(None)
                .congestion_controller_factory(Arc::new(cubic));
        }
        let transport = Arc::new(transport);

        let identity = Identity::new(keypair)?;
        let server_tls = QuicServerConfig::try_from(identity.server_config()?)
            .map_err(|e| TransportError::Tls(e.to_string()))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_tls));
        server.transport_config(transport.clone());

        // The stateless-reset key is derived from the node's secret key, so
        // a node restarted on the same address answers packets of the
        // connections its previous life had with a reset its peers accept:
        // they learn at once that the connection is gone instead of waiting
        // for the idle timeout.
        let reset_secret = blake3::derive_key("orb-transport stateless reset v1", &keypair.seed());
        let reset_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &reset_secret);
        let mut endpoint_config = quinn::EndpointConfig::new(Arc::new(reset_key));
        if let Some(mtu) = mtu {
            endpoint_config
                .max_udp_payload_size(mtu)
                .map_err(|e| bad(format!("tunnel packet size: {e}")))?;
        }
        // Connection IDs carry a keyed hash that the endpoint checks before
        // answering a packet at all; with a random key a restarted node
        // would drop its old peers' packets silently instead of resetting.
        let cid_secret = blake3::derive_key("orb-transport connection ids v1", &keypair.seed());
        let mut cid_key = [0u8; 8];
        cid_key.copy_from_slice(&cid_secret[..8]);
        let cid_key = u64::from_le_bytes(cid_key);
        endpoint_config.cid_generator(move || {
            Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
        });
        Ok(Parts {
            endpoint_config,
            server,
            identity,
            transport,
        })
    }
}

/// Accepts incoming connections and runs each handshake in its own task, so a
/// slow handshake never delays others.
pub(crate) async fn accept_loop(
    ep: quinn::Endpoint,
    tx: mpsc::Sender<(quinn::Connection, OrbId)>,
    max_connections: usize,
    handshake_timeout: Duration,
) {
    while let Some(incoming) = ep.accept().await {
        // open_connections counts handshaking ones too, so this also caps
        // concurrent handshake tasks.
        if ep.open_connections() >= max_connections {
            debug!(remote = %incoming.remote_address(), "connection limit reached; refusing");
            incoming.refuse();
            continue;
        }
        let tx = tx.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let conn =
                match tokio::time::timeout(handshake_timeout, async { incoming.accept()?.await })
                    .await
                {
                    Ok(Ok(conn)) => conn,
                    Ok(Err(e)) => {
                        debug!(%remote, "incoming handshake failed: {e}");
                        return;
                    }
                    Err(_) => {
                        debug!(%remote, "incoming handshake timed out");
                        return;
                    }
                };
            let peer = match accepted_peer(&conn) {
                Ok(peer) => peer,
                Err(reason) => {
                    warn!(%remote, "refusing connection: {reason}");
                    conn.close(VarInt::from_u32(0), reason.as_bytes());
                    return;
                }
            };
            // Give up if the connection dies while waiting for a slot, so a
            // closed endpoint never leaves this task parked.
            tokio::select! {
                _ = tx.send((conn.clone(), peer)) => {}
                _ = conn.closed() => {}
            }
        });
    }
}

/// The dialer's ID from its certificate, after checking the ALPN.
fn accepted_peer(conn: &quinn::Connection) -> Result<OrbId, String> {
    let alpn = conn
        .handshake_data()
        .and_then(|d| d.downcast::<HandshakeData>().ok())
        .and_then(|d| d.protocol);
    if alpn.as_deref() != Some(orb_proto::ALPN) {
        return Err("wrong ALPN".into());
    }
    let certs = conn
        .peer_identity()
        .and_then(|i| {
            i.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .ok_or("no client certificate")?;
    let cert = certs.first().ok_or("empty client certificate chain")?;
    tls::id_from_cert(cert).map_err(|e| format!("bad client certificate: {e}"))
}
