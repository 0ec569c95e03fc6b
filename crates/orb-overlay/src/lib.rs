//! orb-overlay: Orb's Kademlia DHT, embeddable by any Rust application.
//!
//! Layers, from the bottom:
//!
//! * [`routing`], [`lookup`], [`store`], [`core`]: the sans-IO node
//!   ([`Core`]): 256 k-buckets (k = 20) with ping-before-evict, iterative
//!   FIND_NODE / FIND_VALUE lookups (alpha = 3, per-RPC timeouts, an overall
//!   deadline, partial results instead of hangs), a verified and bounded
//!   record store, bucket refresh, re-replication and republishing. It does
//!   no IO, reads time only from its arguments ([`Millis`]) and randomness
//!   only from its seed.
//! * [`sim`]: a deterministic simulator running thousands of cores with
//!   latency, loss and churn.
//! * [`driver`]: [`Overlay`], an async actor that runs a core over
//!   orb-transport's QUIC endpoint.
//!
//! Records, keys and messages live in [`orb_proto::dht`].
//!
//! # Embedding
//!
//! ```no_run
//! # async fn demo(seed: orb_proto::PeerAddr) -> Result<(), Box<dyn std::error::Error>> {
//! use orb_overlay::{Overlay, OverlayConfig, Role, serve};
//! use orb_proto::dht::{Key, NameRecord, Record, RecordKind};
//! use orb_proto::{ContentHash, Keypair, PeerAddr};
//! use orb_transport::{Endpoint, TransportConfig};
//!
//! let key = Keypair::generate()?;
//! let endpoint = Endpoint::bind("0.0.0.0:7700".parse()?, &key, TransportConfig::default())?;
//! let local = PeerAddr { id: key.id(), addr: endpoint.local_addr()? };
//! let (overlay, _task) = Overlay::spawn(endpoint.clone(), local, Role::Server, OverlayConfig::default());
//! // Answer DHT requests. A node with its own accept loop instead passes
//! // `Request::Dht(msg)` to `overlay.handle_request(from, msg)`.
//! tokio::spawn(serve(endpoint, overlay.clone()));
//!
//! overlay.bootstrap(vec![seed]).await?;
//! let record = Record::sign(
//!     RecordKind::Name(NameRecord {
//!         name: "hello".into(),
//!         owner: key.public(),
//!         hash: ContentHash::of(b"module bytes"),
//!         settings: Default::default(),
//!         version: 1,
//!         removed: false,
//!     }),
//!     &key,
//!     1,                       // seq: bump it to update
//!     1_900_000_000_000,       // expiry, Unix ms (at most 48 h ahead)
//! )?;
//! let stored_on = overlay.put(record).await?;
//! let found = overlay.get(Key::for_name("hello")).await?;
//! # let _ = (stored_on, found);
//! # Ok(())
//! # }
//! ```

pub mod core;
pub mod driver;
pub mod lookup;
pub mod routing;
pub mod sim;
pub mod store;

pub use crate::core::{
    Config, Core, CoreError, Event, LookupResult, QueryId, Role, RpcId, Snapshot, Stats, Transmit,
};
pub use crate::driver::{Overlay, OverlayConfig, OverlayError, OverlayStats, PutOutcome, serve};
pub use crate::lookup::LookupKind;

/// Milliseconds. The core reads time only through arguments of this type;
/// the driver passes Unix milliseconds (record expiries are absolute), the
/// simulator a virtual clock.
pub type Millis = u64;

/// A small deterministic PRNG (xoshiro256**, seeded through splitmix64).
/// Self-contained so that a seed gives the same run on every platform and
/// dependency version.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        // Multiply-shift: unbiased enough for simulation and refresh targets.
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// 32 random bytes.
    pub fn bytes32(&mut self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for chunk in out.chunks_mut(8) {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        out
    }
}
