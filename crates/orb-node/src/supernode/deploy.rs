//! Deploys and the module store: checking and storing a module with its
//! function record, serving modules by hash, and fetching one from another
//! super (verified by hash and validated before any client sees it).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use orb_proto::wire::{
    BundleRef, ErrorKind, FunctionInfo, FunctionSettings, Request, Response, WireError,
};
use orb_proto::{ContentHash, OrbId, PeerAddr};
use orb_store::{FunctionRecord, FunctionVersion};
use tracing::info;

use super::{Shared, forwarding, placement, versions};
use crate::common::util::{blocking, check_name, lock, now_ms, read_lock, write_lock};
use crate::dht;
use crate::error::NodeError;
use crate::policy::versions::{self as version_policy, MAX_VERSIONS};
/// How long fetching a module from another super may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(120);

/// Accept a deploy from `owner`: check the name, the bytes and ownership
/// (here and in the DHT), validate the module and the file bundle (the end
/// of `body` when the settings name one), commit them with the record in
/// one transaction, then place it.
pub(super) async fn deploy(
    shared: &Arc<Shared>,
    owner: OrbId,
    name: String,
    hash: ContentHash,
    mut settings: FunctionSettings,
    body: Bytes,
    here: bool,
) -> Result<Response, WireError> {
    check_name(&name)?;
    crate::common::answer::check_settings(&settings)?;
    let (module, bundle) = split_body(body, settings.files.as_ref())?;
    if here {
        let capacity = lock(&shared.clients).get(&owner).map(|c| c.capacity);
        match capacity {
            Some(c) if c > 0 => {}
            Some(_) => {
                return Err(WireError::new(
                    ErrorKind::BadRequest,
                    "--here: this node runs with capacity 0 and cannot host a replica",
                ));
            }
            None => {
                return Err(WireError::new(
                    ErrorKind::BadRequest,
                    "--here: only a client connected to this super can host its own replica",
                ));
            }
        }
    }
    if module.len() > orb_proto::limits::MAX_MODULE {
        return Err(WireError::new(
            ErrorKind::TooLarge,
            format!(
                "module of {} bytes is over the {}-byte limit",
                module.len(),
                orb_proto::limits::MAX_MODULE
            ),
        ));
    }
    let actual = ContentHash::of(&module);
    if actual != hash {
        return Err(WireError::new(
            ErrorKind::BadRequest,
            format!("module bytes hash to {actual}, not the declared {hash}"),
        ));
    }
    if let Some(prev) = read_lock(&shared.functions).get(&name)
        && prev.owner != owner
    {
        return Err(not_owner(&name, prev.owner));
    }
    // The DHT is the network-wide registry: a name owned by another key
    // anywhere is refused here too, not only names this super knows. A
    // tombstone still names the owner, who may deploy the name again.
    let mut published = None;
    if let Ok(Some((_, n))) = dht::name_record(&shared.overlay, &name).await {
        if n.owner.id() != owner {
            return Err(not_owner(&name, n.owner.id()));
        }
        published = Some(n.version);
    }
    validate(shared, module.clone()).await?;
    if let (Some(b), Some(bytes)) = (settings.files, bundle.clone()) {
        let limits = shared.config.bundle_limits;
        blocking(move || crate::common::files::check_bundle(&b, &bytes, &limits))
            .await
            .map_err(|e| e.to_wire())??;
    }

    if settings.replicas == 0 {
        settings.replicas = 1;
    }
    settings.max_replicas = settings.max_replicas.max(settings.replicas);
    let change = shared.changes.lock().await;
    let previous = read_lock(&shared.functions).get(&name).cloned();
    if let Some(prev) = &previous
        && prev.owner != owner
    {
        return Err(not_owner(&name, prev.owner));
    }
    let now = now_ms();
    let version = version_policy::next_version(previous.as_ref().map(|p| p.version), published);
    let mut history = previous
        .as_ref()
        .map(|p| p.history.clone())
        .unwrap_or_default();
    let dropped = version_policy::push(
        &mut history,
        FunctionVersion {
            version,
            hash,
            size: module.len() as u64,
            settings: settings.clone(),
            created_ms: now,
        },
        MAX_VERSIONS,
    );
    let record = FunctionRecord {
        name: name.clone(),
        hash,
        owner,
        size: module.len() as u64,
        settings,
        created_ms: previous.as_ref().map_or(now, |p| p.created_ms),
        updated_ms: now,
        placements: Vec::new(),
        version,
        history,
    };
    let store = shared.store.clone();
    let rec = record.clone();
    let files = rec.settings.files.map(|b| b.hash);
    blocking(move || {
        let bundle = files.as_ref().zip(bundle.as_deref());
        store.put_deploy_with_bundle(&rec, &module, bundle)
    })
    .await
    .map_err(|e| e.to_wire())?
    .map_err(|e| NodeError::from(e).to_wire())?;
    write_lock(&shared.functions).insert(name.clone(), record.clone());
    drop(change);
    shared.stats.deploys.inc();
    info!(function = %name, hash = %hash.short(), owner = %owner.short(), version, "function deployed");
    versions::drop_unused(shared, dropped.iter().map(|v| v.hash).collect()).await;

    let placed = placement::place(shared, &record, here.then_some(owner)).await;
    // The previous version's replicas stop once the owner's new name
    // record is out (until then other gateways still resolve the old one).
    if let Some(prev) = previous.filter(|p| p.hash != hash) {
        tokio::spawn(versions::retire(
            shared.clone(),
            name.clone(),
            prev.hash,
            version,
        ));
    }
    Ok(Response::Deployed {
        name,
        hash,
        placed_on: placed,
        version,
    })
}

/// A deploy's body: the module, then the bundle's declared size of bytes
/// when it has files.
fn split_body(body: Bytes, files: Option<&BundleRef>) -> Result<(Bytes, Option<Bytes>), WireError> {
    let Some(b) = files else {
        return Ok((body, None));
    };
    let at = usize::try_from(b.size)
        .ok()
        .and_then(|size| body.len().checked_sub(size))
        .ok_or_else(|| {
            WireError::new(
                ErrorKind::BadRequest,
                format!(
                    "the deploy declares a {}-byte file bundle but carries {} bytes in all",
                    b.size,
                    body.len()
                ),
            )
        })?;
    Ok((body.slice(..at), Some(body.slice(at..))))
}

/// The refusal of a deploy of a name that another key owns.
fn not_owner(name: &str, owner: OrbId) -> WireError {
    WireError::new(
        ErrorKind::Forbidden,
        format!("function {name:?} belongs to node {owner}; only its owner can update it"),
    )
}

/// Validate a module off the async executor.
async fn validate(shared: &Shared, module: Bytes) -> Result<(), WireError> {
    let rt = shared.runtime.clone();
    blocking(move || rt.validate(&module))
        .await
        .map_err(|e| e.to_wire())?
        .map_err(|e| WireError::new(ErrorKind::BadRequest, format!("module refused: {e}")))
}

/// The answer to `FetchModule`: the module's bytes as the body.
pub(super) async fn module_answer(shared: &Shared, hash: ContentHash) -> (Response, Bytes) {
    let store = shared.store.clone();
    match blocking(move || store.module(&hash)).await {
        Ok(Ok(Some(bytes))) => (Response::Module { hash }, Bytes::from(bytes)),
        Ok(Ok(None)) => (
            Response::Error(WireError::new(
                ErrorKind::NotFound,
                format!("no module {hash}"),
            )),
            Bytes::new(),
        ),
        Ok(Err(e)) => (Response::Error(NodeError::from(e).to_wire()), Bytes::new()),
        Err(e) => (Response::Error(e.to_wire()), Bytes::new()),
    }
}

/// Make sure the module `hash` is in this super's store, fetching it from
/// super `from` if not. Content addressing: the bytes must be the module
/// asked for, and this super validates them itself before any client sees
/// them.
pub(super) async fn ensure_module_from(
    shared: &Arc<Shared>,
    from: PeerAddr,
    hash: ContentHash,
) -> Result<(), WireError> {
    let store = shared.store.clone();
    let have = blocking(move || store.has_module(&hash))
        .await
        .map_err(|e| e.to_wire())?
        .unwrap_or(false);
    if have {
        return Ok(());
    }
    let conn = forwarding::peer_conn(shared, from)
        .await
        .map_err(|e| e.to_wire())?;
    let answer = tokio::time::timeout(
        FETCH_TIMEOUT,
        conn.request(
            &Request::FetchModule { hash },
            &[],
            orb_proto::limits::MAX_MODULE,
        ),
    )
    .await
    .map_err(|_| WireError::new(ErrorKind::Unavailable, "module fetch timed out"))?
    .map_err(|e| NodeError::from(e).to_wire())?;
    let bytes = match answer {
        (Response::Module { .. }, bytes) => bytes,
        (Response::Error(e), _) => return Err(e),
        (other, _) => {
            return Err(WireError::new(
                ErrorKind::Internal,
                format!("unexpected answer to FetchModule: {other:?}"),
            ));
        }
    };
    if ContentHash::of(&bytes) != hash {
        return Err(WireError::new(
            ErrorKind::BadRequest,
            format!(
                "module bytes from {} do not hash to {hash}",
                from.id.short()
            ),
        ));
    }
    validate(shared, bytes.clone()).await?;
    let store = shared.store.clone();
    blocking(move || store.put_module(&hash, &bytes))
        .await
        .map_err(|e| e.to_wire())?
        .map_err(|e| NodeError::from(e).to_wire())
}

/// The functions deployed through this super, with their live replicas.
pub(super) fn function_infos(shared: &Shared) -> Vec<FunctionInfo> {
    let clients = lock(&shared.clients);
    let mut list: Vec<FunctionInfo> = read_lock(&shared.functions)
        .values()
        .map(|f| {
            let mut replicas: Vec<OrbId> = clients
                .iter()
                .filter(|(_, c)| c.hosted.contains(&f.hash))
                .map(|(id, _)| *id)
                .collect();
            replicas.sort();
            FunctionInfo {
                name: f.name.clone(),
                hash: f.hash,
                owner: f.owner,
                size: f.size,
                settings: f.settings.clone(),
                replicas,
            }
        })
        .collect();
    list.sort_by(|a, b| a.name.cmp(&b.name));
    list
}
