//! Glue between the roles and the DHT: which records a node signs, how a
//! name resolves to providers, and how the overlay's state is persisted.
//!
//! Who signs what:
//! * name records are signed by the **deploying client** (the owner), so a
//!   name stays with its owner whichever super it deploys through;
//! * provider records are signed by each **replica** for itself and list its
//!   home supers, so a gateway anywhere can route to it;
//! * supers sign nothing about functions: they store, verify and route.

use orb_overlay::{Overlay, Snapshot};
use orb_proto::dht::{Key, NameRecord, ProviderEntry, ProviderRecord, Record, RecordKind};
use orb_proto::wire::{ErrorKind, FunctionSettings, WireError};
use orb_proto::{ContentHash, Keypair, PeerAddr};
use orb_store::Store;
use serde::Serialize;

use crate::common::util::now_ms;

/// Lifetime of a name record. Owners re-sign well before it ends.
pub(crate) const NAME_TTL_MS: u64 = 24 * 3600 * 1000;
/// Lifetime of a provider record: short, so a replica that vanished for
/// good drops out of the DHT without anyone deleting anything.
pub(crate) const PROVIDER_TTL_MS: u64 = 30 * 60 * 1000;
/// How often a client re-signs and re-publishes its records.
pub(crate) const REFRESH_EVERY: std::time::Duration = std::time::Duration::from_secs(10 * 60);

const STORE_NS: &str = "overlay";
const STORE_KEY: &[u8] = b"snapshot";

/// What a name record says, before it is signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NameState {
    /// Module hash (of the last version, for a tombstone).
    pub hash: ContentHash,
    /// Settings of that version.
    pub settings: FunctionSettings,
    /// Version of the name (one more at each deploy, rollback, removal).
    pub version: u64,
    /// A tombstone: the owner removed the function.
    pub removed: bool,
}

/// Sign a name record for `name`. Records order by version first; the
/// sequence number is the signing time, so a re-signed copy of the same
/// version (a refresh) replaces the one before.
pub(crate) fn sign_name(kp: &Keypair, name: &str, state: &NameState) -> Result<Record, WireError> {
    let now = now_ms();
    let kind = RecordKind::Name(NameRecord {
        name: name.to_string(),
        owner: kp.public(),
        hash: state.hash,
        settings: state.settings.clone(),
        version: state.version.max(1),
        removed: state.removed,
    });
    Record::sign(kind, kp, now, now + NAME_TTL_MS).map_err(|e| {
        WireError::new(
            ErrorKind::BadRequest,
            format!("cannot sign name record: {e}"),
        )
    })
}

/// How long a withdrawal (see [`sign_provider`]) stays in the DHT: long
/// enough to replace the provider record everywhere despite clock skew.
pub(crate) const WITHDRAWN_TTL_MS: u64 = 2 * 60 * 1000;

/// Sign this node's provider record for `hash`. With no home supers it is
/// a withdrawal: the node no longer holds the module, and the record
/// replaces the one before and expires soon; [`providers`] skips it.
pub(crate) fn sign_provider(
    kp: &Keypair,
    hash: ContentHash,
    home_supers: Vec<PeerAddr>,
) -> Result<Record, WireError> {
    let now = now_ms();
    let ttl = if home_supers.is_empty() {
        WITHDRAWN_TTL_MS
    } else {
        PROVIDER_TTL_MS
    };
    let kind = RecordKind::Provider(ProviderRecord {
        hash,
        providers: vec![ProviderEntry {
            node: kp.id(),
            home_supers,
        }],
    });
    Record::sign(kind, kp, now, now + ttl).map_err(|e| {
        WireError::new(
            ErrorKind::Internal,
            format!("cannot sign provider record: {e}"),
        )
    })
}

/// A name resolved through the DHT.
#[derive(Debug, Clone, Serialize)]
pub struct Resolution {
    /// The name.
    pub name: String,
    /// Owner's Orb ID.
    pub owner: String,
    /// Module hash the name points at.
    pub hash: String,
    /// Sequence number of the name record.
    pub seq: u64,
    /// Version of the name.
    pub version: u64,
    /// Settings published with the name.
    #[serde(skip)]
    pub settings: FunctionSettings,
    /// Nodes holding a ready replica, with their home supers.
    pub providers: Vec<ProviderJson>,
}

/// One provider in a [`Resolution`].
#[derive(Debug, Clone, Serialize)]
pub struct ProviderJson {
    /// The replica's node.
    pub node: String,
    /// Supers it keeps a link to.
    pub home_supers: Vec<String>,
    #[serde(skip)]
    pub(crate) supers: Vec<PeerAddr>,
}

/// The newest valid name record for `name` (highest version, then seq)
/// and its sequence number, if any. A tombstone (`removed`) is returned
/// too: it still says who owns the name; callers that run the function
/// treat it as no function.
pub(crate) async fn name_record(
    overlay: &Overlay,
    name: &str,
) -> Result<Option<(u64, NameRecord)>, WireError> {
    let now = now_ms();
    let records = overlay
        .get(Key::for_name(name))
        .await
        .map_err(|e| WireError::new(ErrorKind::Unavailable, format!("DHT lookup failed: {e}")))?;
    let best = records
        .into_iter()
        .filter(|r| r.verify(now).is_ok())
        .filter(|r| matches!(&r.kind, RecordKind::Name(n) if n.name == name))
        .max_by_key(Record::order)
        .and_then(|r| match r.kind {
            RecordKind::Name(n) => Some((r.seq, n)),
            _ => None,
        });
    Ok(best)
}

/// The function a name points at now: its newest name record unless that
/// is a tombstone.
pub(crate) async fn live_name(
    overlay: &Overlay,
    name: &str,
) -> Result<Option<(u64, NameRecord)>, WireError> {
    Ok(name_record(overlay, name)
        .await?
        .filter(|(_, n)| !n.removed))
}

/// Resolve `name` -> owner, hash -> providers -> their home supers.
pub(crate) async fn resolve(overlay: &Overlay, name: &str) -> Result<Resolution, WireError> {
    let Some((seq, n)) = name_record(overlay, name).await? else {
        return Err(WireError::new(
            ErrorKind::NotFound,
            format!("no function named {name:?} in the network"),
        ));
    };
    if n.removed {
        return Err(WireError::new(
            ErrorKind::NotFound,
            format!("function {name:?} was removed by its owner"),
        ));
    }
    let providers = providers(overlay, &n.hash).await?;
    Ok(Resolution {
        name: n.name,
        owner: n.owner.id().to_string(),
        hash: n.hash.to_string(),
        seq,
        version: n.version,
        settings: n.settings,
        providers,
    })
}

/// Nodes that published a provider record for `hash` and did not
/// withdraw it since (a withdrawal lists no home supers).
pub(crate) async fn providers(
    overlay: &Overlay,
    hash: &ContentHash,
) -> Result<Vec<ProviderJson>, WireError> {
    let now = now_ms();
    let records: Vec<Record> = overlay
        .get(Key::for_provider(hash))
        .await
        .map_err(|e| WireError::new(ErrorKind::Unavailable, format!("DHT lookup failed: {e}")))?
        .into_iter()
        .filter(|r| r.verify(now).is_ok())
        .collect();
    let merged = orb_proto::dht::merge_providers(hash, &records);
    Ok(merged
        .providers
        .into_iter()
        .filter(|p| !p.home_supers.is_empty())
        .map(|p| ProviderJson {
            node: p.node.to_string(),
            home_supers: p.home_supers.iter().map(|s| s.to_string()).collect(),
            supers: p.home_supers,
        })
        .collect())
}

/// Load the overlay state saved by [`save_snapshot`] (blocking).
pub(crate) fn load_snapshot(store: &Store) -> Option<Snapshot> {
    match store.blob(STORE_NS, STORE_KEY) {
        Ok(Some(bytes)) => match orb_proto::codec::decode::<Snapshot>(&bytes) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "saved DHT state does not decode; starting empty");
                None
            }
        },
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read saved DHT state");
            None
        }
    }
}

/// Persist the overlay's routing table and records (blocking).
pub(crate) fn save_snapshot(store: &Store, snapshot: &Snapshot) -> Result<(), String> {
    // The codec bounds one value to 1 MiB; a very large record set is cut
    // (the newest are kept by the overlay's own republishing anyway).
    let mut s = snapshot.clone();
    loop {
        match orb_proto::codec::encode(&s) {
            Ok(bytes) => {
                return store
                    .put_blob(STORE_NS, STORE_KEY, &bytes)
                    .map_err(|e| e.to_string());
            }
            Err(_) if !s.records.is_empty() => {
                let keep = s.records.len() / 2;
                s.records.truncate(keep);
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Lifetime of a node record (addresses change; owners re-sign often).
pub(crate) const NODE_TTL_MS: u64 = 30 * 60 * 1000;

/// Sign this node's record: home supers, observed and local addresses, NAT
/// mapping, capacity.
pub(crate) fn sign_node(
    kp: &Keypair,
    node: orb_proto::dht::NodeRecord,
) -> Result<Record, WireError> {
    let now = now_ms();
    Record::sign(RecordKind::Node(node), kp, now, now + NODE_TTL_MS)
        .map_err(|e| WireError::new(ErrorKind::Internal, format!("cannot sign node record: {e}")))
}

/// The newest valid node record of `id`, if any.
pub(crate) async fn node_record(
    overlay: &Overlay,
    id: &orb_proto::OrbId,
) -> Result<Option<orb_proto::dht::NodeRecord>, WireError> {
    let now = now_ms();
    let records = overlay
        .get(Key::for_node(id))
        .await
        .map_err(|e| WireError::new(ErrorKind::Unavailable, format!("DHT lookup failed: {e}")))?;
    Ok(records
        .into_iter()
        .filter(|r| r.verify(now).is_ok() && r.publisher.id() == *id)
        .filter_map(|r| match r.kind {
            RecordKind::Node(n) if n.id == *id => Some((r.seq, n)),
            _ => None,
        })
        .max_by_key(|(seq, _)| *seq)
        .map(|(_, n)| n))
}
