//! Orb's shared vocabulary: identities, content hashes, wire messages and
//! their codec.
//!
//! This crate does no IO. Everything that crosses a socket or is written to
//! disk is defined here, so that every other crate agrees on one encoding and
//! one set of limits.
//!
//! * [`id`]: Ed25519 keys, [`OrbId`]s derived from them, and `ORBID@HOST:PORT`
//!   peer addresses.
//! * [`wire`]: the typed request and response enums exchanged over QUIC.
//! * [`codec`]: bincode 2 encoding with a hard size limit; decoding never
//!   panics on hostile input.
//! * [`dht`]: DHT keys, signed records and DHT messages.
//! * [`limits`]: the default bounds every node enforces.
//! * [`logs`]: function logs and the owner's signed query for them.
//! * [`bundle`]: the file bundle format (`deploy --files`), documented byte
//!   by byte in that module.

pub mod bundle;
pub mod codec;
pub mod dht;
pub mod id;
pub mod limits;
pub mod logs;
pub mod receipt;
pub mod wire;

pub use codec::{CodecError, decode, encode, encode_frame};
pub use id::{ContentHash, IdError, Keypair, OrbId, PeerAddr, PublicKey, Signature};

/// ALPN protocol name. The trailing number is the wire version: peers that
/// speak another version fail the TLS handshake instead of misparsing frames.
pub const ALPN: &[u8] = b"orb/2";
