//! Node identity: Ed25519 keys and the Orb IDs derived from them.
//!
//! An [`OrbId`] is the BLAKE3 hash of a node's Ed25519 public key. Hashing
//! spreads IDs uniformly over the 256-bit XOR space the DHT uses, and it means
//! nobody can claim an ID without holding the matching private key: the TLS
//! handshake proves possession of the key, and the ID is recomputed from it.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use ed25519_dalek::Signer;
use serde::{Deserialize, Serialize};

/// Errors from parsing or checking identities.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    /// The text is not a valid Orb ID.
    #[error("invalid Orb ID {0:?}: expected 52 characters of lowercase base32 (a-z, 2-7)")]
    BadId(String),
    /// The text is not a valid content hash.
    #[error("invalid content hash {0:?}: expected 64 hexadecimal characters")]
    BadHash(String),
    /// A peer address lacks the `@` separator.
    #[error("invalid peer {0:?}: expected ORBID@HOST:PORT")]
    BadPeer(String),
    /// The address part of a peer could not be parsed.
    #[error("invalid address {addr:?} in peer: {reason}")]
    BadAddr {
        /// The address text.
        addr: String,
        /// Why it was refused.
        reason: String,
    },
    /// Key bytes are not a valid Ed25519 public key.
    #[error("invalid Ed25519 public key")]
    BadKey,
    /// A signature did not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// The operating system's random source failed.
    #[error("random source failed: {0}")]
    Random(String),
}

const BASE32: data_encoding::Encoding = data_encoding::BASE32_NOPAD;

/// A node's identity on the network: the BLAKE3 hash of its Ed25519 public key.
///
/// Its text form is 52 characters of lowercase, unpadded base32.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OrbId(pub [u8; 32]);

impl OrbId {
    /// The ID that belongs to `key`.
    pub fn from_public_key(key: &PublicKey) -> Self {
        let mut h = blake3::Hasher::new();
        h.update(b"orb-id-v1");
        h.update(&key.0);
        OrbId(*h.finalize().as_bytes())
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first eight characters of the text form, for logs and tables.
    pub fn short(&self) -> String {
        let mut s = self.to_string();
        s.truncate(8);
        s
    }
}

impl fmt::Display for OrbId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&BASE32.encode(&self.0).to_ascii_lowercase())
    }
}

impl fmt::Debug for OrbId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OrbId({})", self.short())
    }
}

impl FromStr for OrbId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let bad = || IdError::BadId(s.to_string());
        if s.len() != 52
            || !s
                .bytes()
                .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
        {
            return Err(bad());
        }
        let bytes = BASE32
            .decode(s.to_ascii_uppercase().as_bytes())
            .map_err(|_| bad())?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| bad())?;
        // Reject non-canonical encodings (trailing bits set) so that every ID
        // has exactly one text form.
        let id = OrbId(arr);
        if id.to_string() != s {
            return Err(bad());
        }
        Ok(id)
    }
}

/// The BLAKE3 hash of a WebAssembly module: its identity everywhere.
/// Text form: 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ContentHash(pub [u8; 32]);

impl ContentHash {
    /// Hash `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        ContentHash(*blake3::hash(bytes).as_bytes())
    }

    /// The first twelve hex characters, for logs and tables.
    pub fn short(&self) -> String {
        let mut s = self.to_string();
        s.truncate(12);
        s
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&data_encoding::HEXLOWER.encode(&self.0))
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({})", self.short())
    }
}

impl FromStr for ContentHash {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let bytes = data_encoding::HEXLOWER_PERMISSIVE
            .decode(s.as_bytes())
            .map_err(|_| IdError::BadHash(s.to_string()))?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| IdError::BadHash(s.to_string()))?;
        Ok(ContentHash(arr))
    }
}

/// An Ed25519 public key (32 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// The Orb ID derived from this key.
    pub fn id(&self) -> OrbId {
        OrbId::from_public_key(self)
    }

    /// Verify `sig` over `msg`.
    pub fn verify(&self, msg: &[u8], sig: &Signature) -> Result<(), IdError> {
        let key = ed25519_dalek::VerifyingKey::from_bytes(&self.0).map_err(|_| IdError::BadKey)?;
        let sig = ed25519_dalek::Signature::from_bytes(&sig.0);
        key.verify_strict(msg, &sig)
            .map_err(|_| IdError::BadSignature)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PublicKey({})",
            data_encoding::HEXLOWER.encode(&self.0[..6])
        )
    }
}

/// An Ed25519 signature (64 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; 64]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Signature({}..)",
            data_encoding::HEXLOWER.encode(&self.0[..6])
        )
    }
}

// serde only derives arrays up to 32 elements; encode as bytes.
impl Serialize for Signature {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Signature;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("64 signature bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Signature, E> {
                let arr: [u8; 64] = v
                    .try_into()
                    .map_err(|_| E::invalid_length(v.len(), &self))?;
                Ok(Signature(arr))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Signature, E> {
                self.visit_bytes(&v)
            }
        }
        d.deserialize_bytes(V)
    }
}

/// A node's Ed25519 key pair. The secret never leaves the node's store.
#[derive(Clone)]
pub struct Keypair {
    signing: ed25519_dalek::SigningKey,
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keypair({})", self.id().short())
    }
}

impl Keypair {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<Self, IdError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| IdError::Random(e.to_string()))?;
        Ok(Self::from_seed(seed))
    }

    /// The key pair for a 32-byte secret seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Keypair {
            signing: ed25519_dalek::SigningKey::from_bytes(&seed),
        }
    }

    /// The secret seed, for storing the key.
    pub fn seed(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key().to_bytes())
    }

    /// This node's Orb ID.
    pub fn id(&self) -> OrbId {
        self.public().id()
    }

    /// Sign `msg`.
    pub fn sign(&self, msg: &[u8]) -> Signature {
        Signature(self.signing.sign(msg).to_bytes())
    }

    /// The private key as PKCS#8 DER, for building a TLS certificate.
    pub fn to_pkcs8_der(&self) -> Result<Vec<u8>, IdError> {
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        self.signing
            .to_pkcs8_der()
            .map(|d| d.as_bytes().to_vec())
            .map_err(|_| IdError::BadKey)
    }
}

/// A peer written `ORBID@HOST:PORT`, with HOST an IP address (IPv6 in
/// brackets). Host names are resolved by the binaries, not here: this crate
/// does no IO.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PeerAddr {
    /// The Orb ID the peer must prove.
    pub id: OrbId,
    /// Where to reach it.
    pub addr: SocketAddr,
}

impl PeerAddr {
    /// Split `ORBID@REST` into the ID and the unparsed address text.
    pub fn split(s: &str) -> Result<(OrbId, &str), IdError> {
        let (id, rest) = s
            .split_once('@')
            .ok_or_else(|| IdError::BadPeer(s.to_string()))?;
        Ok((id.parse()?, rest))
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id, self.addr)
    }
}

impl fmt::Debug for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id.short(), self.addr)
    }
}

impl FromStr for PeerAddr {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let (id, rest) = Self::split(s)?;
        let addr = rest.parse::<SocketAddr>().map_err(|e| IdError::BadAddr {
            addr: rest.to_string(),
            reason: format!("{e} (HOST must be an IP address and PORT a number)"),
        })?;
        Ok(PeerAddr { id, addr })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_text_round_trip() {
        let k = Keypair::from_seed([7; 32]);
        let id = k.id();
        let s = id.to_string();
        assert_eq!(s.len(), 52);
        assert_eq!(s.parse::<OrbId>(), Ok(id));
        assert!(
            s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        );
    }

    #[test]
    fn id_rejects_garbage() {
        for bad in ["", "abc", &"A".repeat(52), &"1".repeat(52), &"a".repeat(53)] {
            assert!(bad.parse::<OrbId>().is_err(), "{bad}");
        }
        // Last character carries unused bits: a non-canonical variant is refused.
        let id = Keypair::from_seed([1; 32]).id().to_string();
        let mut alt = id.clone();
        let last = alt.pop().unwrap_or('a');
        let other = if last == 'q' { 'r' } else { 'q' };
        alt.push(other);
        if alt != id {
            // Either decodes to a different ID or is refused; never equal.
            if let Ok(parsed) = alt.parse::<OrbId>() {
                assert_eq!(parsed.to_string(), alt);
            }
        }
    }

    #[test]
    fn peer_round_trip_and_errors() {
        let id = Keypair::from_seed([2; 32]).id();
        let p: PeerAddr = format!("{id}@127.0.0.1:7700").parse().expect("valid");
        assert_eq!(p.to_string(), format!("{id}@127.0.0.1:7700"));
        let v6: PeerAddr = format!("{id}@[::1]:9").parse().expect("valid v6");
        assert_eq!(v6.addr.port(), 9);
        assert!(matches!(
            "nope".parse::<PeerAddr>(),
            Err(IdError::BadPeer(_))
        ));
        assert!(matches!(
            format!("{id}@host").parse::<PeerAddr>(),
            Err(IdError::BadAddr { .. })
        ));
        assert!(matches!(
            "zz@1.2.3.4:5".parse::<PeerAddr>(),
            Err(IdError::BadId(_))
        ));
    }

    #[test]
    fn sign_verify() {
        let k = Keypair::from_seed([3; 32]);
        let sig = k.sign(b"hello");
        assert_eq!(k.public().verify(b"hello", &sig), Ok(()));
        assert_eq!(
            k.public().verify(b"hellp", &sig),
            Err(IdError::BadSignature)
        );
        assert!(k.to_pkcs8_der().is_ok());
    }

    #[test]
    fn hash_text_round_trip() {
        let h = ContentHash::of(b"module");
        assert_eq!(h.to_string().parse::<ContentHash>(), Ok(h));
        assert!("xyz".parse::<ContentHash>().is_err());
    }
}
