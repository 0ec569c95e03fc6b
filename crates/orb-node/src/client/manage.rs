//! The owner's side of its functions: the names it owns (kept in the
//! store, re-signed before they expire), which super each was deployed
//! through, and `remove`, `rollback`, `versions` and the owned list
//! through the local API.
//!
//! A function's versions live on the super it was deployed through, so
//! every change of a name goes to that super while it is connected (the
//! `home` of [`OwnedName`]); only when it is not does a change go to the
//! best connected super, which then takes the name over.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Json, Response as HttpResponse};
use orb_proto::dht::NameRecord;
use orb_proto::wire::{ErrorKind, FunctionSettings, Request, Response, WireError};
use orb_proto::{ContentHash, OrbId};
use orb_transport::Connection;
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::{Shared, best_super, home_links, records};
use crate::common::http_util;
use crate::common::util::{blocking, check_name, unexpected};
use crate::dht::{self, NameState};
use crate::error::NodeError;

/// How long a remove or rollback may take at the super.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(300);

/// A name this node owns, as kept in the store (namespace
/// [`records::OWNED_NS`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct OwnedName {
    /// Module hash of the current (or, removed, the last) version.
    pub hash: ContentHash,
    /// Its settings.
    pub settings: FunctionSettings,
    /// The name's version.
    pub version: u64,
    /// Removed: the name record is a tombstone, kept so the name stays ours.
    pub removed: bool,
    /// The super it was deployed through, which keeps its versions.
    pub home: Option<OrbId>,
}

impl OwnedName {
    /// The name record it stands for.
    pub fn state(&self) -> NameState {
        NameState {
            hash: self.hash,
            settings: self.settings.clone(),
            version: self.version,
            removed: self.removed,
        }
    }

    /// Decode a stored entry; entries written before versions existed
    /// hold `(hash, settings)` and were version 1.
    fn decode(bytes: &[u8]) -> Option<OwnedName> {
        if let Ok(o) = orb_proto::codec::decode::<OwnedName>(bytes) {
            return Some(o);
        }
        let (hash, settings) =
            orb_proto::codec::decode::<(ContentHash, FunctionSettings)>(bytes).ok()?;
        Some(OwnedName {
            hash,
            settings,
            version: 1,
            removed: false,
            home: None,
        })
    }
}

/// Every name this node owns.
pub(super) async fn all_owned(shared: &Shared) -> Vec<(String, OwnedName)> {
    let store = shared.store.clone();
    let entries = blocking(move || store.blobs(records::OWNED_NS))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    entries
        .into_iter()
        .filter_map(|(k, v)| {
            let name = String::from_utf8(k).ok()?;
            match OwnedName::decode(&v) {
                Some(o) => Some((name, o)),
                None => {
                    warn!(function = %name, "corrupt owned-name entry");
                    None
                }
            }
        })
        .collect()
}

/// The entry of one owned name.
pub(super) async fn owned(shared: &Shared, name: &str) -> Option<OwnedName> {
    let store = shared.store.clone();
    let key = name.to_string();
    let bytes = blocking(move || store.blob(records::OWNED_NS, key.as_bytes()))
        .await
        .ok()?
        .ok()??;
    OwnedName::decode(&bytes)
}

/// Remember (or update) an owned name.
pub(super) async fn save_owned(shared: &Shared, name: &str, o: &OwnedName) {
    let Ok(value) = orb_proto::codec::encode(o) else {
        return;
    };
    let store = shared.store.clone();
    let key = name.to_string();
    if let Ok(Err(e)) =
        blocking(move || store.put_blob(records::OWNED_NS, key.as_bytes(), &value)).await
    {
        warn!(error = %e, "cannot remember the owned name");
    }
}

/// The super to send a change of `name` to: the one it was deployed
/// through when connected, else the best connected one.
pub(super) async fn name_super(shared: &Shared, name: &str) -> Result<Connection, WireError> {
    if let Some(home) = owned(shared, name).await.and_then(|o| o.home)
        && let Some(conn) = home_links(shared).into_iter().find(|c| c.peer_id() == home)
    {
        return Ok(conn);
    }
    best_super(shared).map_err(|e| e.to_wire())
}

/// The current name record of `name` if this node owns it: a clear refusal
/// otherwise, before anything is sent anywhere.
pub(super) async fn check_owner(
    shared: &Shared,
    name: &str,
    what: &str,
) -> Result<NameRecord, WireError> {
    check_name(name)?;
    match dht::name_record(&shared.overlay, name).await? {
        None => Err(WireError::new(
            ErrorKind::NotFound,
            format!("no function named {name:?}"),
        )),
        Some((_, n)) if n.owner.id() != shared.id => Err(WireError::new(
            ErrorKind::Forbidden,
            format!(
                "function {name:?} belongs to node {}; only its owner can {what} it",
                n.owner.id()
            ),
        )),
        Some((_, n)) => Ok(n),
    }
}

/// Sign and publish the name record for `o`, remember it, and report on
/// how many DHT servers stored it (or why none did).
pub(super) async fn publish(
    shared: &Arc<Shared>,
    name: &str,
    o: &OwnedName,
) -> Result<usize, WireError> {
    let published = records::publish_name(shared, name, &o.state()).await;
    save_owned(shared, name, o).await;
    published
}

/// Send a change request to the super for `name` and take its answer.
async fn ask_super(
    shared: &Shared,
    name: &str,
    req: &Request,
) -> Result<(Response, OrbId), WireError> {
    let conn = name_super(shared, name).await?;
    let answer = tokio::time::timeout(CHANGE_TIMEOUT, conn.request(req, &[], 1024 * 1024))
        .await
        .map_err(|_| WireError::new(ErrorKind::Unavailable, "the super did not answer in time"))?
        .map_err(|e| NodeError::from(e).to_wire())?;
    match answer {
        (Response::Error(e), _) => Err(e),
        (r, _) => Ok((r, conn.peer_id())),
    }
}

#[derive(Serialize)]
struct RemovedJson {
    name: String,
    version: u64,
    /// DHT servers that stored the tombstone.
    published_on: usize,
    /// Replicas the supers were asked to stop.
    replicas_stopped: u32,
    /// Why the super could not take part (the tombstone is out anyway; the
    /// replicas stop as the supers notice).
    #[serde(skip_serializing_if = "Option::is_none")]
    super_error: Option<String>,
}

/// `POST /api/remove/NAME`: publish a signed tombstone, then have the
/// super stop the replicas everywhere.
pub(super) async fn api_remove(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> HttpResponse {
    let result = async {
        let current = check_owner(&shared, &name, "remove").await?;
        if current.removed {
            return Err(WireError::new(
                ErrorKind::NotFound,
                format!("function {name:?} is already removed"),
            ));
        }
        let mine = owned(&shared, &name).await;
        let tomb = OwnedName {
            hash: current.hash,
            settings: current.settings.clone(),
            version: current.version.max(mine.as_ref().map_or(0, |o| o.version)) + 1,
            removed: true,
            home: mine.and_then(|o| o.home),
        };
        // The tombstone goes first: the other supers stop their replicas
        // only when the DHT says the name no longer runs them.
        let published_on = publish(&shared, &name, &tomb).await?;
        let (replicas_stopped, super_error) =
            match ask_super(&shared, &name, &Request::Remove { name: name.clone() }).await {
                Ok((Response::Removed { replicas, .. }, _)) => (replicas, None),
                Ok((other, _)) => (0, Some(unexpected(ErrorKind::Internal, &other).message)),
                Err(e) => (0, Some(e.message)),
            };
        Ok(RemovedJson {
            name: name.clone(),
            version: tomb.version,
            published_on,
            replicas_stopped,
            super_error,
        })
    }
    .await;
    match result {
        Ok(j) => Json(j).into_response(),
        Err(e) => http_util::error_response(&e),
    }
}

#[derive(Serialize)]
struct RolledBackJson {
    name: String,
    /// The new current version.
    version: u64,
    /// The version whose module and settings it took.
    hash: String,
    placed_on: Vec<String>,
    published_on: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    dht_error: Option<String>,
}

/// The one whole-number parameter `key` a query string may hold (`None`
/// when absent); anything else in it is an error.
pub(super) fn number_param(query: Option<&str>, key: &str) -> Result<Option<u64>, WireError> {
    let mut value = None;
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if k != key {
            return Err(WireError::new(
                ErrorKind::BadRequest,
                format!("unknown parameter {k:?} (only {key})"),
            ));
        }
        value = Some(v.parse::<u64>().map_err(|_| {
            WireError::new(
                ErrorKind::BadRequest,
                format!("{key} must be a whole number, not {v:?}"),
            )
        })?);
    }
    Ok(value)
}

/// `POST /api/rollback/NAME[?to=N]`.
pub(super) async fn api_rollback(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> HttpResponse {
    let result = async {
        let to = number_param(query.as_deref(), "to")?;
        let current = check_owner(&shared, &name, "roll back").await?;
        if current.removed {
            return Err(WireError::new(
                ErrorKind::NotFound,
                format!("function {name:?} was removed; deploy it again instead"),
            ));
        }
        let (answer, via) = ask_super(
            &shared,
            &name,
            &Request::Rollback {
                name: name.clone(),
                to,
            },
        )
        .await?;
        let Response::RolledBack { current, placed_on } = answer else {
            return Err(unexpected(ErrorKind::Internal, &answer));
        };
        let o = OwnedName {
            hash: current.hash,
            settings: current.settings.clone(),
            version: current.version,
            removed: false,
            home: Some(via),
        };
        let published = publish(&shared, &name, &o).await;
        Ok(RolledBackJson {
            name: name.clone(),
            version: current.version,
            hash: current.hash.to_string(),
            placed_on: placed_on.iter().map(|p| p.to_string()).collect(),
            published_on: published.as_ref().map_or(0, |n| *n),
            dht_error: published.err().map(|e| e.message),
        })
    }
    .await;
    match result {
        Ok(j) => Json(j).into_response(),
        Err(e) => http_util::error_response(&e),
    }
}

#[derive(Serialize)]
struct VersionJson {
    version: u64,
    hash: String,
    size: u64,
    created_ms: u64,
    current: bool,
    replicas: u32,
    max_replicas: u32,
}

#[derive(Serialize)]
struct VersionsJson {
    name: String,
    current: u64,
    versions: Vec<VersionJson>,
}

/// `GET /api/versions/NAME`: the versions the name's super keeps.
pub(super) async fn api_versions(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> HttpResponse {
    let result = async {
        check_owner(&shared, &name, "list the versions of").await?;
        let (answer, _) =
            ask_super(&shared, &name, &Request::Versions { name: name.clone() }).await?;
        let Response::Versions { current, versions } = answer else {
            return Err(unexpected(ErrorKind::Internal, &answer));
        };
        Ok(VersionsJson {
            name: name.clone(),
            current,
            versions: versions
                .into_iter()
                .map(|v| VersionJson {
                    current: v.version == current,
                    version: v.version,
                    hash: v.hash.to_string(),
                    size: v.size,
                    created_ms: v.created_ms,
                    replicas: v.settings.replicas,
                    max_replicas: v.settings.max_replicas,
                })
                .collect(),
        })
    }
    .await;
    match result {
        Ok(j) => Json(j).into_response(),
        Err(e) => http_util::error_response(&e),
    }
}

#[derive(Serialize)]
pub(super) struct OwnedJson {
    name: String,
    hash: String,
    version: u64,
    removed: bool,
    replicas: u32,
    /// The super it was deployed through.
    #[serde(skip_serializing_if = "Option::is_none")]
    home: Option<String>,
}

/// `GET /api/owned`: the names this node owns, removed ones included.
pub(super) async fn api_owned(State(shared): State<Arc<Shared>>) -> Json<Vec<OwnedJson>> {
    let mut list: Vec<OwnedJson> = all_owned(&shared)
        .await
        .into_iter()
        .map(|(name, o)| OwnedJson {
            name,
            hash: o.hash.to_string(),
            version: o.version,
            removed: o.removed,
            replicas: o.settings.replicas,
            home: o.home.map(|h| h.to_string()),
        })
        .collect();
    list.sort_by(|a, b| a.name.cmp(&b.name));
    Json(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_entries_from_before_versions_still_decode() {
        let hash = ContentHash::of(b"m");
        let old = orb_proto::codec::encode(&(hash, FunctionSettings::default())).expect("enc");
        let o = OwnedName::decode(&old).expect("legacy entry");
        assert_eq!((o.hash, o.version, o.removed), (hash, 1, false));
        let new = OwnedName {
            version: 7,
            removed: true,
            home: Some(orb_proto::Keypair::from_seed([1; 32]).id()),
            ..o
        };
        let bytes = orb_proto::codec::encode(&new).expect("enc");
        assert_eq!(OwnedName::decode(&bytes), Some(new));
        assert_eq!(OwnedName::decode(b"garbage"), None);
    }

    #[test]
    fn number_params() {
        assert_eq!(number_param(None, "to"), Ok(None));
        assert_eq!(number_param(Some("to=3"), "to"), Ok(Some(3)));
        assert!(number_param(Some("to=x"), "to").is_err());
        assert!(number_param(Some("to=-1"), "to").is_err());
        assert!(number_param(Some("version=3"), "to").is_err());
    }
}
