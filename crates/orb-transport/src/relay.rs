//! Relay tunnels: a QUIC stream used as a byte pipe, and a virtual UDP
//! socket on top of it so a whole end-to-end QUIC connection can run through
//! a relaying super node.
//!
//! ```text
//! node A                      super (relay)                     node B
//! quinn endpoint A'  ==packets as [u16 len][bytes] frames==>  quinn endpoint B'
//!   over TunnelSocket   <-- stream A->S spliced to S->B -->    over TunnelSocket
//! ```
//!
//! The inner connection does its own TLS handshake with the same pinned
//! identities as a direct one, so the relay only ever sees ciphertext and a
//! node cannot pose as another through it.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::sync::mpsc;
use tracing::debug;

use crate::{TransportError, read_err, read_exact_err, write_err};

/// Address the tunnel socket claims as its own (TEST-NET-1; never routed).
pub(crate) const LOCAL: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1)),
    1,
);
/// Address under which the other end of the tunnel is dialed.
pub(crate) const REMOTE: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2)),
    2,
);
/// Packet size inside a tunnel. Nothing fragments or drops inside a stream,
/// so larger packets only save per-packet work (crypto, framing, syscalls).
/// At most 16383 minus a header: quinn asserts that a long-header packet's
/// length fits a 2-byte varint (packet.rs: `len < 2^14`) and panics above.
pub(crate) const TUNNEL_MTU: u16 = 16 * 1024;
/// Packets queued each way between quinn and the pump tasks. When full,
/// packets are dropped, as a UDP socket would, and QUIC's congestion
/// control slows down.
const QUEUE: usize = 512;
/// Most bytes the writer batches into one stream write.
const BATCH: usize = 64 * 1024;
/// Most chunks a splice takes from one stream per write to the other. A
/// chunk is what one received packet carried (~1.4 KB on a UDP path).
const SPLICE_CHUNKS: usize = 64;

/// A relay circuit: one QUIC stream used as a byte pipe in both directions.
pub struct Tunnel {
    pub(crate) send: quinn::SendStream,
    pub(crate) recv: quinn::RecvStream,
    /// The connection the stream belongs to: dropping the last handle of a
    /// connection closes it, so a tunnel keeps its own.
    pub(crate) conn: Option<crate::Connection>,
}

impl fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Tunnel")
    }
}

impl Tunnel {
    /// The two directions, to drive them from separate tasks.
    pub fn split(self) -> (TunnelWriter, TunnelReader) {
        (
            TunnelWriter {
                send: self.send,
                _conn: self.conn.clone(),
            },
            TunnelReader {
                recv: self.recv,
                _conn: self.conn,
            },
        )
    }
}

/// The sending half of a [`Tunnel`].
pub struct TunnelWriter {
    send: quinn::SendStream,
    _conn: Option<crate::Connection>,
}

impl fmt::Debug for TunnelWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TunnelWriter")
    }
}

impl TunnelWriter {
    /// Write all of `bytes`; waits for flow control.
    pub async fn write_all(&mut self, bytes: &[u8]) -> Result<(), TransportError> {
        self.send.write_all(bytes).await.map_err(write_err)
    }

    /// Write all of `bufs` without copying; waits for flow control.
    async fn write_all_chunks(&mut self, bufs: &mut [Bytes]) -> Result<(), TransportError> {
        self.send.write_all_chunks(bufs).await.map_err(write_err)
    }

    /// End this direction cleanly.
    pub fn finish(&mut self) {
        let _ = self.send.finish();
    }

    /// Abort this direction.
    pub fn reset(&mut self) {
        let _ = self.send.reset(crate::code::ABORTED);
    }
}

/// The receiving half of a [`Tunnel`].
pub struct TunnelReader {
    recv: quinn::RecvStream,
    _conn: Option<crate::Connection>,
}

impl fmt::Debug for TunnelReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TunnelReader")
    }
}

impl TunnelReader {
    /// The next chunk of at most `max` bytes, or `None` at the end.
    pub async fn read_chunk(&mut self, max: usize) -> Result<Option<Bytes>, TransportError> {
        match self.recv.read_chunk(max, true).await {
            Ok(Some(chunk)) => Ok(Some(chunk.bytes)),
            Ok(None) => Ok(None),
            Err(e) => Err(read_err(e)),
        }
    }

    /// Fill `bufs` with the next chunks, without copying; `None` at the end.
    async fn read_chunks(&mut self, bufs: &mut [Bytes]) -> Result<Option<usize>, TransportError> {
        self.recv.read_chunks(bufs).await.map_err(read_err)
    }

    /// Tell the other end to stop sending.
    pub fn stop(&mut self) {
        let _ = self.recv.stop(crate::code::ABORTED);
    }

    async fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), TransportError> {
        self.recv.read_exact(buf).await.map_err(read_exact_err)
    }
}

/// A UDP socket as quinn sees it, whose packets travel through a tunnel.
pub(crate) struct TunnelSocket {
    out: mpsc::Sender<Bytes>,
    inbound: Mutex<mpsc::Receiver<Bytes>>,
}

impl fmt::Debug for TunnelSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TunnelSocket")
    }
}

impl TunnelSocket {
    /// Start the pump tasks for `tunnel` and return the socket.
    pub(crate) fn spawn(tunnel: Tunnel) -> Arc<dyn AsyncUdpSocket> {
        let (writer, reader) = tunnel.split();
        let (out_tx, out_rx) = mpsc::channel(QUEUE);
        let (in_tx, in_rx) = mpsc::channel(QUEUE);
        tokio::spawn(write_pump(writer, out_rx));
        tokio::spawn(read_pump(reader, in_tx));
        Arc::new(TunnelSocket {
            out: out_tx,
            inbound: Mutex::new(in_rx),
        })
    }
}

/// Packets from quinn to the stream, batched so a burst costs one write.
/// Ends (finishing the stream) when quinn drops the socket.
async fn write_pump(mut writer: TunnelWriter, mut rx: mpsc::Receiver<Bytes>) {
    let mut buf = BytesMut::with_capacity(BATCH + usize::from(TUNNEL_MTU) + 2);
    while let Some(first) = rx.recv().await {
        buf.clear();
        push_frame(&mut buf, &first);
        while buf.len() < BATCH {
            match rx.try_recv() {
                Ok(p) => push_frame(&mut buf, &p),
                Err(_) => break,
            }
        }
        if let Err(e) = writer.write_all(&buf).await {
            debug!("tunnel write ended: {e}");
            return;
        }
    }
    writer.finish();
}

fn push_frame(buf: &mut BytesMut, packet: &[u8]) {
    // try_send refuses packets over the MTU, so the length always fits.
    let len = u16::try_from(packet.len()).unwrap_or(u16::MAX);
    buf.put_u16(len);
    buf.put_slice(&packet[..usize::from(len)]);
}

/// Frames from the stream to quinn. Ends at the end of the stream, on a
/// stream error, or when quinn drops the socket.
async fn read_pump(mut reader: TunnelReader, tx: mpsc::Sender<Bytes>) {
    let mut head = [0u8; 2];
    loop {
        if let Err(e) = reader.read_exact(&mut head).await {
            debug!("tunnel read ended: {e}");
            return;
        }
        let len = usize::from(u16::from_be_bytes(head));
        if len > usize::from(TUNNEL_MTU) {
            // Not a packet any quinn endpoint of ours sends: the other end
            // is broken or hostile. Give up on the tunnel.
            debug!(len, "oversized packet in tunnel; closing it");
            reader.stop();
            return;
        }
        let mut packet = vec![0u8; len];
        if let Err(e) = reader.read_exact(&mut packet).await {
            debug!("tunnel read ended inside a packet: {e}");
            return;
        }
        match tx.try_send(Bytes::from(packet)) {
            Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => {
                reader.stop();
                return;
            }
        }
    }
}

impl AsyncUdpSocket for TunnelSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(AlwaysWritable)
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        if transmit.contents.len() > usize::from(TUNNEL_MTU) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "packet larger than the tunnel MTU",
            ));
        }
        match self.out.try_send(Bytes::copy_from_slice(transmit.contents)) {
            // A full queue drops the packet, as a full socket buffer would.
            Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "relay tunnel closed",
            )),
        }
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let (Some(buf), Some(m)) = (bufs.first_mut(), meta.first_mut()) else {
            return Poll::Ready(Ok(0));
        };
        let mut rx = match self.inbound.lock() {
            Ok(rx) => rx,
            Err(poisoned) => poisoned.into_inner(),
        };
        match rx.poll_recv(cx) {
            Poll::Ready(Some(packet)) => {
                let n = packet.len().min(buf.len());
                buf[..n].copy_from_slice(&packet[..n]);
                *m = RecvMeta {
                    addr: REMOTE,
                    len: n,
                    stride: n,
                    ecn: None,
                    dst_ip: None,
                };
                Poll::Ready(Ok(1))
            }
            // The tunnel ended: fail the endpoint so its connections end
            // now instead of idling out.
            Poll::Ready(None) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "relay tunnel closed",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(LOCAL)
    }

    fn may_fragment(&self) -> bool {
        false
    }
}

/// Sends never block (a full queue drops), so the socket is always writable.
#[derive(Debug)]
struct AlwaysWritable;

impl UdpPoller for AlwaysWritable {
    fn poll_writable(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Decides, per chunk, whether a relay may forward it: `Ok(delay)` forwards
/// after waiting `delay` (rate limiting), `Err(reason)` ends the circuit
/// (a volume quota used up, say).
pub trait SpliceGate: Send + Sync + 'static {
    /// `bytes` are about to be forwarded.
    fn admit(&self, bytes: usize) -> Result<std::time::Duration, String>;
}

/// What a finished [`splice`] moved and why it ended.
#[derive(Debug, Clone, Default)]
pub struct SpliceReport {
    /// Bytes forwarded from the first tunnel to the second.
    pub a_to_b: u64,
    /// Bytes forwarded from the second tunnel to the first.
    pub b_to_a: u64,
    /// Why it ended, when a gate or an error ended it.
    pub ended_by: Option<String>,
}

/// Forward bytes both ways between two tunnels until both directions end,
/// an error happens, or `gate` refuses. Chunks are forwarded as they
/// arrive; flow control of the QUIC streams bounds what is buffered.
pub async fn splice(a: Tunnel, b: Tunnel, gate: Arc<dyn SpliceGate>) -> SpliceReport {
    let (a_w, a_r) = a.split();
    let (b_w, b_r) = b.split();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let one = pump(a_r, b_w, gate.clone(), stop_tx.clone(), stop_rx.clone());
    let two = pump(b_r, a_w, gate, stop_tx, stop_rx);
    let ((a_to_b, e1), (b_to_a, e2)) = tokio::join!(one, two);
    SpliceReport {
        a_to_b,
        b_to_a,
        ended_by: e1.or(e2),
    }
}

async fn pump(
    mut from: TunnelReader,
    mut to: TunnelWriter,
    gate: Arc<dyn SpliceGate>,
    stop_tx: tokio::sync::watch::Sender<bool>,
    mut stop_rx: tokio::sync::watch::Receiver<bool>,
) -> (u64, Option<String>) {
    let mut moved = 0u64;
    let mut bufs = vec![Bytes::new(); SPLICE_CHUNKS];
    loop {
        let read = tokio::select! {
            r = from.read_chunks(&mut bufs) => r,
            _ = stop_rx.wait_for(|s| *s) => {
                from.stop();
                to.reset();
                return (moved, None);
            }
        };
        match read {
            Ok(Some(n)) => {
                let bytes: usize = bufs[..n].iter().map(Bytes::len).sum();
                match gate.admit(bytes) {
                    Ok(delay) if delay.is_zero() => {}
                    Ok(delay) => tokio::time::sleep(delay).await,
                    Err(reason) => {
                        from.stop();
                        to.reset();
                        let _ = stop_tx.send(true);
                        return (moved, Some(reason));
                    }
                }
                if let Err(e) = to.write_all_chunks(&mut bufs[..n]).await {
                    from.stop();
                    let _ = stop_tx.send(true);
                    return (moved, Some(e.to_string()));
                }
                moved += bytes as u64;
            }
            Ok(None) => {
                to.finish();
                return (moved, None);
            }
            Err(e) => {
                to.reset();
                let _ = stop_tx.send(true);
                return (moved, Some(e.to_string()));
            }
        }
    }
}
