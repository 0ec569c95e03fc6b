//! DHT keys, signed records and the DHT's wire messages. No IO.
//!
//! # Keys
//!
//! Every record lives at a 256-bit [`Key`] in the same XOR space as node IDs.
//! Keys are derived from the record's content ([`Key::for_node`],
//! [`Key::for_name`], [`Key::for_provider`]), so a storing node can check
//! that a record sits where it claims to, and nobody can park a record under
//! an arbitrary key.
//!
//! # Records
//!
//! A [`Record`] is signed by its publisher over a domain-separated encoding
//! of everything else in it, and carries a sequence number (a higher one from
//! the same publisher replaces a lower one) and an absolute expiry in Unix
//! milliseconds, at most [`MAX_RECORD_TTL_MS`] ahead. [`Record::verify`]
//! checks all of that plus the per-kind ownership rules:
//!
//! * node record: key = the publisher's ID, and the record's `id` is the
//!   publisher's ID (a node only speaks for itself);
//! * name record: key = [`Key::for_name`]`(name)`, and `owner` is the
//!   publisher (whoever signs a name record owns the name; storing nodes
//!   refuse a record for a name that another owner holds), and `version`
//!   is at least 1. A name record orders by `(version, seq)` rather than
//!   `seq` alone (see [`Record::supersedes`]): a deploy, a rollback and a
//!   removal each make a new version, and a re-signed copy of the same
//!   version (a refresh) only moves `seq`. A removal is a name record with
//!   `removed` set (a tombstone): it is checked, stored and refreshed like
//!   any other, so the name stays with its owner's key;
//! * provider record: key = [`Key::for_provider`]`(hash)`, and the record
//!   lists exactly one provider, the publisher itself.
//!
//! Provider records use one record per (content hash, provider): a provider
//! can only vouch for itself, so no node can add or remove someone else from
//! a provider list. Storing nodes keep a small set of provider records per
//! key, one per publisher, at most [`MAX_PROVIDERS`]; a FIND_VALUE answer
//! carries the whole set, and [`merge_providers`] folds it into one list.
//!
//! # Messages
//!
//! A DHT request travels as [`crate::wire::Request::Dht`] holding a
//! [`DhtMessage`]: the query itself ([`DhtRequest`]) plus `from_server`, the
//! address the sender listens on when it is a DHT server. Receivers put only
//! such senders into their routing tables (after checking the ID against the
//! one the TLS handshake proved), so NATed clients, which cannot be dialled
//! back, never poison routing tables.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::id::{ContentHash, IdError, Keypair, OrbId, PeerAddr, PublicKey, Signature};
use crate::limits::MAX_NAME_LEN;
use crate::wire::FunctionSettings;

/// Longest a record may live: its expiry is at most this far ahead of the
/// verifier's clock (48 hours). Bounds how long a stale record can linger.
pub const MAX_RECORD_TTL_MS: u64 = 48 * 60 * 60 * 1000;

/// Most addresses in one address list of a record.
pub const MAX_RECORD_ADDRS: usize = 16;

/// Most provider records kept (and returned) per content hash.
pub const MAX_PROVIDERS: usize = 64;

/// Largest encoded record. With [`MAX_PROVIDERS`] records per answer this
/// keeps a FIND_VALUE response well inside [`crate::limits::MAX_FRAME`].
pub const MAX_RECORD_BYTES: usize = 8 * 1024;

/// Longest NAT description in a node record.
pub const MAX_NAT_LEN: usize = 32;

/// Most peers a FIND_NODE / FIND_VALUE answer carries; receivers ignore the
/// rest.
pub const MAX_CLOSER: usize = 32;

const SIGN_DOMAIN: &[u8] = b"orb-dht-record-v1";

/// A position in the 256-bit XOR space: a node ID or a record key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Key(pub [u8; 32]);

/// The XOR distance between two keys, ordered as a big-endian number.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Distance(pub [u8; 32]);

impl Distance {
    /// Number of leading zero bits (256 for distance zero): the length of
    /// the prefix the two keys share.
    pub fn leading_zeros(&self) -> u32 {
        let mut n = 0;
        for b in self.0 {
            if b == 0 {
                n += 8;
            } else {
                return n + b.leading_zeros();
            }
        }
        n
    }
}

impl Key {
    /// XOR distance to `other`.
    pub fn distance(&self, other: &Key) -> Distance {
        let mut d = [0u8; 32];
        for (i, out) in d.iter_mut().enumerate() {
            *out = self.0[i] ^ other.0[i];
        }
        Distance(d)
    }

    /// The key of a node: its ID bytes.
    pub fn for_node(id: &OrbId) -> Key {
        Key(id.0)
    }

    /// The key of a function name.
    pub fn for_name(name: &str) -> Key {
        let mut h = blake3::Hasher::new();
        h.update(b"orb-name-v1");
        h.update(name.as_bytes());
        Key(*h.finalize().as_bytes())
    }

    /// The key under which providers of a module are stored.
    pub fn for_provider(hash: &ContentHash) -> Key {
        let mut h = blake3::Hasher::new();
        h.update(b"orb-prov-v1");
        h.update(&hash.0);
        Key(*h.finalize().as_bytes())
    }

    /// The node ID with the same bytes (for comparing with routing entries).
    pub fn as_id(&self) -> OrbId {
        OrbId(self.0)
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({})", self.as_id().short())
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.as_id())
    }
}

/// Where a node can be reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The node; must be the publisher.
    pub id: OrbId,
    /// Super nodes the node keeps a connection to (relay / rendezvous).
    pub home_supers: Vec<PeerAddr>,
    /// Public addresses others observed for it.
    pub observed: Vec<SocketAddr>,
    /// Addresses it listens on locally (for LAN-direct paths).
    pub local: Vec<SocketAddr>,
    /// NAT classification, free-form (at most [`MAX_NAT_LEN`] bytes).
    pub nat: String,
    /// Calls it runs at once at most.
    pub capacity: u32,
}

/// A function name and what it points to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameRecord {
    /// Function name (1 to [`MAX_NAME_LEN`] bytes).
    pub name: String,
    /// Owner's key; must be the publisher.
    pub owner: PublicKey,
    /// Current module hash.
    pub hash: ContentHash,
    /// Settings.
    pub settings: FunctionSettings,
    /// Version of the name: one more at every deploy (and rollback), so
    /// every node can tell which record is current.
    pub version: u64,
    /// A tombstone: the owner removed the function. The name stays owned by
    /// the same key, which may deploy it again with a higher version.
    pub removed: bool,
}

/// One node that holds a ready replica of a module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderEntry {
    /// The provider.
    pub node: OrbId,
    /// Its home super nodes, so callers can reach it behind NAT.
    pub home_supers: Vec<PeerAddr>,
}

/// Nodes that provide a module. A signed record holds exactly one entry,
/// the publisher's own (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderRecord {
    /// Module hash.
    pub hash: ContentHash,
    /// Providers.
    pub providers: Vec<ProviderEntry>,
}

/// What a record says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordKind {
    /// Node ID -> addresses.
    Node(NodeRecord),
    /// Function name -> owner, module, settings.
    Name(NameRecord),
    /// Module hash -> a provider.
    Provider(ProviderRecord),
}

impl RecordKind {
    /// The key this content must be stored under, given its publisher.
    pub fn key(&self, publisher: &PublicKey) -> Key {
        match self {
            // A node record can only describe its publisher.
            RecordKind::Node(_) => Key::for_node(&publisher.id()),
            RecordKind::Name(n) => Key::for_name(&n.name),
            RecordKind::Provider(p) => Key::for_provider(&p.hash),
        }
    }

    /// Short label for logs and errors.
    pub fn label(&self) -> &'static str {
        match self {
            RecordKind::Node(_) => "node",
            RecordKind::Name(_) => "name",
            RecordKind::Provider(_) => "provider",
        }
    }
}

/// A signed DHT record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Where it is stored; derived from `kind` (see [`RecordKind::key`]).
    pub key: Key,
    /// Content.
    pub kind: RecordKind,
    /// Signer.
    pub publisher: PublicKey,
    /// Version; a higher one from the same publisher replaces a lower one.
    pub seq: u64,
    /// Expiry, Unix milliseconds.
    pub expires_ms: u64,
    /// Publisher's signature over the domain-separated encoding of the rest.
    pub signature: Signature,
}

/// Why a record was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    /// The signature does not verify under the publisher's key.
    #[error("record signature does not verify")]
    BadSignature,
    /// The key is not the one derived from the content.
    #[error("{kind} record stored under the wrong key")]
    WrongKey {
        /// Record kind.
        kind: &'static str,
    },
    /// The record speaks for someone other than its publisher.
    #[error("{0}")]
    WrongPublisher(String),
    /// The record has expired.
    #[error("record expired at {expires_ms} (now {now_ms})")]
    Expired {
        /// Record expiry.
        expires_ms: u64,
        /// Verifier's clock.
        now_ms: u64,
    },
    /// The expiry is further ahead than [`MAX_RECORD_TTL_MS`].
    #[error("record expiry {expires_ms} is more than 48 h after now ({now_ms})")]
    TooFarAhead {
        /// Record expiry.
        expires_ms: u64,
        /// Verifier's clock.
        now_ms: u64,
    },
    /// A field is over its bound, or empty where it must not be.
    #[error("record out of bounds: {0}")]
    OutOfBounds(String),
    /// The record cannot be encoded.
    #[error("record cannot be encoded: {0}")]
    Encoding(String),
}

fn signing_bytes(
    key: &Key,
    kind: &RecordKind,
    publisher: &PublicKey,
    seq: u64,
    expires_ms: u64,
) -> Result<Vec<u8>, RecordError> {
    let mut msg = SIGN_DOMAIN.to_vec();
    let body = codec::encode(&(key, kind, publisher, seq, expires_ms))
        .map_err(|e| RecordError::Encoding(e.to_string()))?;
    msg.extend(body);
    Ok(msg)
}

impl Record {
    /// Sign `kind` as `keypair`, deriving the key from the content.
    pub fn sign(
        kind: RecordKind,
        keypair: &Keypair,
        seq: u64,
        expires_ms: u64,
    ) -> Result<Record, RecordError> {
        let publisher = keypair.public();
        let key = kind.key(&publisher);
        let signature = keypair.sign(&signing_bytes(&key, &kind, &publisher, seq, expires_ms)?);
        Ok(Record {
            key,
            kind,
            publisher,
            seq,
            expires_ms,
            signature,
        })
    }

    /// Check signature, key derivation, ownership, expiry (against `now_ms`,
    /// Unix milliseconds) and size bounds.
    pub fn verify(&self, now_ms: u64) -> Result<(), RecordError> {
        if self.expires_ms <= now_ms {
            return Err(RecordError::Expired {
                expires_ms: self.expires_ms,
                now_ms,
            });
        }
        if self.expires_ms - now_ms > MAX_RECORD_TTL_MS {
            return Err(RecordError::TooFarAhead {
                expires_ms: self.expires_ms,
                now_ms,
            });
        }
        self.check_content()?;
        let msg = signing_bytes(
            &self.key,
            &self.kind,
            &self.publisher,
            self.seq,
            self.expires_ms,
        )?;
        if msg.len() > MAX_RECORD_BYTES {
            return Err(RecordError::OutOfBounds(format!(
                "{} bytes encoded, limit {MAX_RECORD_BYTES}",
                msg.len()
            )));
        }
        self.publisher
            .verify(&msg, &self.signature)
            .map_err(|e: IdError| match e {
                IdError::BadSignature | IdError::BadKey => RecordError::BadSignature,
                other => RecordError::Encoding(other.to_string()),
            })
    }

    /// Whether this record replaces `old`, a record of the same publisher
    /// under the same key: a name record by `(version, seq)` (a higher
    /// version wins even if its publisher's clock went back; a lower one
    /// never does, whatever its `seq`), every other kind by `seq`.
    pub fn supersedes(&self, old: &Record) -> bool {
        self.order() > old.order()
    }

    /// The order of [`Record::supersedes`]: `(version, seq)` for a name
    /// record, `(0, seq)` for the others.
    pub fn order(&self) -> (u64, u64) {
        match &self.kind {
            RecordKind::Name(n) => (n.version, self.seq),
            _ => (0, self.seq),
        }
    }

    /// Content rules that need no signature check (cheap, done first).
    fn check_content(&self) -> Result<(), RecordError> {
        let kind = self.kind.label();
        if self.key != self.kind.key(&self.publisher) {
            return Err(RecordError::WrongKey { kind });
        }
        let addrs = |what: &str, n: usize| {
            if n > MAX_RECORD_ADDRS {
                Err(RecordError::OutOfBounds(format!(
                    "{n} {what}, limit {MAX_RECORD_ADDRS}"
                )))
            } else {
                Ok(())
            }
        };
        match &self.kind {
            RecordKind::Node(n) => {
                if n.id != self.publisher.id() {
                    return Err(RecordError::WrongPublisher(format!(
                        "node record for {} signed by {}",
                        n.id,
                        self.publisher.id()
                    )));
                }
                addrs("home supers", n.home_supers.len())?;
                addrs("observed addresses", n.observed.len())?;
                addrs("local addresses", n.local.len())?;
                if n.nat.len() > MAX_NAT_LEN {
                    return Err(RecordError::OutOfBounds(format!(
                        "NAT description of {} bytes, limit {MAX_NAT_LEN}",
                        n.nat.len()
                    )));
                }
            }
            RecordKind::Name(n) => {
                if n.name.is_empty() || n.name.len() > MAX_NAME_LEN {
                    return Err(RecordError::OutOfBounds(format!(
                        "name of {} bytes, must be 1 to {MAX_NAME_LEN}",
                        n.name.len()
                    )));
                }
                if n.version == 0 {
                    return Err(RecordError::OutOfBounds(format!(
                        "name record for {:?} has version 0; versions start at 1",
                        n.name
                    )));
                }
                if n.owner != self.publisher {
                    return Err(RecordError::WrongPublisher(format!(
                        "name record for {:?} names owner {} but is signed by {}",
                        n.name,
                        n.owner.id(),
                        self.publisher.id()
                    )));
                }
            }
            RecordKind::Provider(p) => {
                let [entry] = p.providers.as_slice() else {
                    return Err(RecordError::OutOfBounds(format!(
                        "provider record lists {} providers; it must list exactly its publisher",
                        p.providers.len()
                    )));
                };
                if entry.node != self.publisher.id() {
                    return Err(RecordError::WrongPublisher(format!(
                        "provider record lists {} but is signed by {}",
                        entry.node,
                        self.publisher.id()
                    )));
                }
                addrs("home supers", entry.home_supers.len())?;
            }
        }
        Ok(())
    }
}

/// Fold provider records for one hash into a single list (at most
/// [`MAX_PROVIDERS`] entries, one per provider, first occurrence wins).
/// Records of other kinds or for other hashes are ignored.
pub fn merge_providers(hash: &ContentHash, records: &[Record]) -> ProviderRecord {
    let mut providers: Vec<ProviderEntry> = Vec::new();
    for r in records {
        if let RecordKind::Provider(p) = &r.kind {
            if p.hash != *hash {
                continue;
            }
            for e in &p.providers {
                if providers.len() < MAX_PROVIDERS && !providers.iter().any(|x| x.node == e.node) {
                    providers.push(e.clone());
                }
            }
        }
    }
    ProviderRecord {
        hash: *hash,
        providers,
    }
}

/// A DHT query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DhtRequest {
    /// Liveness check. Answered with [`DhtResponse::Pong`].
    Ping,
    /// The receiver's closest known servers to `target`.
    FindNode {
        /// Target key.
        target: Key,
    },
    /// Records stored under `key`, and closer servers.
    FindValue {
        /// Record key.
        key: Key,
    },
    /// Store a record. Answered with [`DhtResponse::Stored`] or
    /// [`DhtResponse::Refused`].
    Store {
        /// The record (boxed: it dwarfs the other variants).
        record: Box<Record>,
    },
}

/// A DHT query with the sender's server address, the body of
/// [`crate::wire::Request::Dht`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhtMessage {
    /// `Some(address the sender listens on)` when the sender is a DHT
    /// server; receivers add it to their routing table only if its ID is the
    /// one the connection proved. `None` for DHT clients, which are never
    /// added.
    pub from_server: Option<PeerAddr>,
    /// The query.
    pub body: DhtRequest,
}

/// A DHT answer, the body of [`crate::wire::Response::Dht`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DhtResponse {
    /// Answer to [`DhtRequest::Ping`].
    Pong,
    /// Closest servers the receiver knows (at most [`MAX_CLOSER`]).
    Nodes {
        /// Servers, closest first.
        closer: Vec<PeerAddr>,
    },
    /// Records under the key (possibly none) and closer servers.
    Value {
        /// Records (at most [`MAX_PROVIDERS`]).
        records: Vec<Record>,
        /// Servers, closest first.
        closer: Vec<PeerAddr>,
    },
    /// The record was stored.
    Stored,
    /// The request was refused, and why.
    Refused(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000_000;

    fn name_kind(owner: &Keypair, name: &str) -> RecordKind {
        RecordKind::Name(NameRecord {
            name: name.into(),
            owner: owner.public(),
            hash: ContentHash::of(b"m"),
            settings: FunctionSettings::default(),
            version: 1,
            removed: false,
        })
    }

    #[test]
    fn distance_and_keys() {
        let a = Key([0; 32]);
        let mut b = [0; 32];
        b[0] = 0x10;
        assert_eq!(a.distance(&Key(b)).leading_zeros(), 3);
        assert_eq!(a.distance(&a).leading_zeros(), 256);
        assert_ne!(Key::for_name("x"), Key::for_name("y"));
        let h = ContentHash::of(b"z");
        assert_ne!(Key::for_provider(&h).0, h.0);
    }

    #[test]
    fn sign_and_verify_each_kind() {
        let k = Keypair::from_seed([1; 32]);
        let node = RecordKind::Node(NodeRecord {
            id: k.id(),
            home_supers: vec![],
            observed: vec!["1.2.3.4:5".parse().expect("addr")],
            local: vec![],
            nat: "cone".into(),
            capacity: 4,
        });
        let prov = RecordKind::Provider(ProviderRecord {
            hash: ContentHash::of(b"m"),
            providers: vec![ProviderEntry {
                node: k.id(),
                home_supers: vec![],
            }],
        });
        for kind in [node, name_kind(&k, "hello"), prov] {
            let r = Record::sign(kind, &k, 1, NOW + 1000).expect("sign");
            assert_eq!(r.verify(NOW), Ok(()));
            assert!(matches!(
                r.verify(NOW + 1000),
                Err(RecordError::Expired { .. })
            ));
        }
    }

    #[test]
    fn ownership_rules() {
        let k = Keypair::from_seed([1; 32]);
        let other = Keypair::from_seed([2; 32]);
        // Name record naming another owner.
        let r = Record::sign(name_kind(&other, "n"), &k, 1, NOW + 1000).expect("sign");
        assert!(matches!(r.verify(NOW), Err(RecordError::WrongPublisher(_))));
        // Provider record listing someone else.
        let prov = RecordKind::Provider(ProviderRecord {
            hash: ContentHash::of(b"m"),
            providers: vec![ProviderEntry {
                node: other.id(),
                home_supers: vec![],
            }],
        });
        let r = Record::sign(prov, &k, 1, NOW + 1000).expect("sign");
        assert!(matches!(r.verify(NOW), Err(RecordError::WrongPublisher(_))));
        // Moved to another key.
        let mut r = Record::sign(name_kind(&k, "n"), &k, 1, NOW + 1000).expect("sign");
        r.key = Key::for_name("m");
        assert!(matches!(r.verify(NOW), Err(RecordError::WrongKey { .. })));
        // Too long-lived, too long a name.
        let r = Record::sign(name_kind(&k, "n"), &k, 1, NOW + MAX_RECORD_TTL_MS + 1).expect("s");
        assert!(matches!(
            r.verify(NOW),
            Err(RecordError::TooFarAhead { .. })
        ));
        let long = "a".repeat(MAX_NAME_LEN + 1);
        let r = Record::sign(name_kind(&k, &long), &k, 1, NOW + 1).expect("s");
        assert!(matches!(r.verify(NOW), Err(RecordError::OutOfBounds(_))));
    }

    fn name_with(owner: &Keypair, version: u64, removed: bool) -> RecordKind {
        RecordKind::Name(NameRecord {
            name: "f".into(),
            owner: owner.public(),
            hash: ContentHash::of(b"m"),
            settings: FunctionSettings::default(),
            version,
            removed,
        })
    }

    #[test]
    fn name_versions_order_before_seq() {
        let k = Keypair::from_seed([1; 32]);
        let v1 = Record::sign(name_with(&k, 1, false), &k, 50, NOW + 1000).expect("sign");
        let v1_later = Record::sign(name_with(&k, 1, false), &k, 60, NOW + 1000).expect("sign");
        // Version 2 signed by a clock that went back still wins.
        let v2 = Record::sign(name_with(&k, 2, false), &k, 10, NOW + 1000).expect("sign");
        let tomb = Record::sign(name_with(&k, 3, true), &k, 11, NOW + 1000).expect("sign");
        assert!(v1_later.supersedes(&v1));
        assert!(v2.supersedes(&v1_later));
        assert!(!v1_later.supersedes(&v2));
        assert!(tomb.supersedes(&v2));
        assert_eq!(tomb.verify(NOW), Ok(()));
        // Version 0 does not exist.
        let v0 = Record::sign(name_with(&k, 0, false), &k, 1, NOW + 1000).expect("sign");
        assert!(matches!(v0.verify(NOW), Err(RecordError::OutOfBounds(_))));
    }

    #[test]
    fn forged_tombstones_do_not_verify() {
        let owner = Keypair::from_seed([1; 32]);
        let thief = Keypair::from_seed([2; 32]);
        // A tombstone naming the owner but signed by another key.
        let r = Record::sign(name_with(&owner, 9, true), &thief, 1, NOW + 1000).expect("sign");
        assert!(matches!(r.verify(NOW), Err(RecordError::WrongPublisher(_))));
        // The owner's tombstone with its content changed afterwards.
        let mut r = Record::sign(name_with(&owner, 2, false), &owner, 1, NOW + 1000).expect("s");
        if let RecordKind::Name(n) = &mut r.kind {
            n.removed = true;
        }
        assert_eq!(r.verify(NOW), Err(RecordError::BadSignature));
    }

    #[test]
    fn merge_providers_dedups() {
        let h = ContentHash::of(b"m");
        let recs: Vec<Record> = (0..3u8)
            .map(|i| {
                let k = Keypair::from_seed([i; 32]);
                let kind = RecordKind::Provider(ProviderRecord {
                    hash: h,
                    providers: vec![ProviderEntry {
                        node: k.id(),
                        home_supers: vec![],
                    }],
                });
                Record::sign(kind, &k, 1, NOW + 1).expect("sign")
            })
            .collect();
        let mut twice = recs.clone();
        twice.extend(recs);
        assert_eq!(merge_providers(&h, &twice).providers.len(), 3);
    }
}
