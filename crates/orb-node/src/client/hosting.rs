//! Hosting replicas: fetch a placed module by hash, verify and compile it
//! (reusing the compiled artifact saved earlier), remember it, and run
//! calls on it with a signed receipt.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use orb_proto::receipt::Receipt;
use orb_proto::wire::{BundleRef, ErrorKind, FunctionSettings, Request, Response, WireError};
use orb_proto::{ContentHash, OrbId};
use orb_runtime::{Invocation, Runtime, RuntimeError};
use orb_store::{HostedRecord, Store};
use orb_transport::Connection;
use tracing::{debug, info, warn};

use super::{Shared, bundles, home_links, links, logs, records};
use crate::common::answer;
use crate::common::util::{blocking, check_name, lock, now_ms, read_lock, unexpected, write_lock};
use crate::dht;

/// Make sure `hash` is compiled and ready, loading it from the store if the
/// daemon restarted since it was placed.
pub(super) async fn ensure_prepared(
    shared: &Arc<Shared>,
    hash: ContentHash,
) -> Result<(), WireError> {
    if shared.runtime.is_prepared(&hash) {
        return Ok(());
    }
    let store = shared.store.clone();
    let rt = shared.runtime.clone();
    blocking(move || -> Result<(), WireError> {
        let module = store
            .module(&hash)
            .map_err(|e| WireError::new(ErrorKind::Internal, e.to_string()))?
            .ok_or_else(|| {
                WireError::new(
                    ErrorKind::NotFound,
                    format!("this node holds no module {hash}"),
                )
            })?;
        prepare_cached(&store, &rt, hash, &module)
    })
    .await
    .map_err(|e| e.to_wire())?
}

/// Compile `module` (already verified against `hash`), reusing the compiled
/// artifact this node saved earlier when there is one. Artifacts are keyed
/// by the runtime's cache key, so another wasmer version or metering setup
/// recompiles. Blocking: run it on a blocking thread.
pub(super) fn prepare_cached(
    store: &Store,
    rt: &Runtime,
    hash: ContentHash,
    module: &[u8],
) -> Result<(), WireError> {
    let key = format!("{}/{hash}", rt.cache_key());
    match store.artifact(&key) {
        Ok(Some(artifact)) => match rt.prepare_artifact(hash, &artifact) {
            Ok(()) => {
                debug!(hash = %hash.short(), "compiled artifact loaded from the store");
                return Ok(());
            }
            Err(e) => {
                warn!(hash = %hash.short(), error = %e, "stored artifact unusable, recompiling");
                let _ = store.remove_artifact(&key);
            }
        },
        Ok(None) => {}
        Err(e) => warn!(error = %e, "cannot read the artifact cache"),
    }
    rt.prepare(hash, module).map_err(|e| {
        WireError::new(ErrorKind::BadRequest, format!("cannot prepare module: {e}"))
    })?;
    if let Some(artifact) = rt.artifact(&hash)
        && let Err(e) = store.put_artifact(&key, &artifact)
    {
        warn!(error = %e, "cannot save the compiled artifact");
    }
    Ok(())
}

/// Replicas unplaced lately, remembered so they stop answering at once.
pub(super) const MAX_RETIRED: usize = 1024;

/// One call to run on a replica here, as a `Run` request asked for it.
pub(super) struct RunArgs {
    pub name: String,
    pub hash: ContentHash,
    pub settings: FunctionSettings,
    pub meta: orb_proto::wire::CallMeta,
    /// Who the receipt names as the payer.
    pub caller: OrbId,
    /// The connection the call came on: where a missing file bundle is
    /// fetched from first.
    pub sender: Option<Connection>,
}

/// Run a call and count it.
pub(super) async fn run_call(
    shared: &Arc<Shared>,
    args: RunArgs,
    input: Bytes,
) -> (Response, Bytes) {
    let started = Instant::now();
    let per_function = shared.stats.per_function.start(&args.name);
    let answer = run_call_inner(shared, args, input).await;
    shared.stats.calls.inc();
    shared.stats.call_latency.observe(started.elapsed());
    per_function.finish(matches!(&answer.0, Response::Ran { outcome, .. } if outcome.is_success()));
    match &answer.0 {
        Response::Ran { outcome, .. } if outcome.is_success() => {}
        Response::Error(e) if e.kind == ErrorKind::Busy => {
            shared.stats.busy.inc();
        }
        _ => {
            shared.stats.errors.inc();
        }
    }
    answer
}

async fn run_call_inner(shared: &Arc<Shared>, args: RunArgs, input: Bytes) -> (Response, Bytes) {
    let RunArgs {
        name,
        hash,
        settings,
        meta,
        caller,
        sender,
    } = args;
    // A replica that was unplaced (an old version, a removed function) must
    // not keep answering. The version a new placement just replaced under
    // the same name still may, until the super retires it: gateways still
    // resolving the old name record call it meanwhile. Supers count
    // replicas by module, so a module hosted under another name (two
    // functions, one module, different settings) serves this name too.
    let hosted = read_lock(&shared.hosted)
        .iter()
        .any(|(n, h)| *n == name || h.hash == hash);
    let retired = lock(&shared.retired).contains(&(name.clone(), hash));
    if !hosted || retired {
        return (
            Response::Error(WireError::new(
                ErrorKind::NotFound,
                format!("this node does not host {name:?} at {}", hash.short()),
            )),
            Bytes::new(),
        );
    }
    if let Err(e) = ensure_prepared(shared, hash).await {
        return (Response::Error(e), Bytes::new());
    }
    let files = match settings.files {
        Some(b) => match bundles::tree(shared, b, sender.as_ref()).await {
            Ok(t) => Some(t),
            Err(e) => return (Response::Error(e), Bytes::new()),
        },
        None => None,
    };
    let request_id = meta.request_id.clone();
    let method = meta.method.clone();
    let answer_settings = FunctionSettings {
        cgi: settings.cgi,
        content_type: settings.content_type.clone(),
        ..FunctionSettings::default()
    };
    let inv = Invocation {
        function: name.clone(),
        input,
        args: settings.args,
        env: settings.env,
        meta,
        limits: settings.limits,
        files,
        host: None,
    };
    match shared.runtime.call(hash, inv).await {
        Ok(result) => {
            debug!(function = %name, request = %request_id, status = ?result.outcome.status, fuel = result.outcome.fuel_used, "call ran");
            logs::record(shared, &name, &request_id, &result.outcome);
            let receipt = Receipt {
                function: hash,
                caller,
                executor: shared.id,
                fuel_used: result.outcome.fuel_used,
                duration_us: result.outcome.duration_us,
                time_ms: now_ms(),
                request_id,
            }
            .sign(&shared.keypair)
            .map(Box::new)
            .map_err(|e| warn!(error = %e, "cannot sign receipt"))
            .ok();
            let mut outcome = result.outcome;
            let body = if outcome.is_success() {
                let (http, body) = answer::shape(&answer_settings, &method, result.stdout);
                outcome.http = http;
                body
            } else {
                Bytes::from(result.stdout)
            };
            (
                Response::Ran {
                    node: shared.id,
                    outcome,
                    receipt,
                },
                body,
            )
        }
        Err(RuntimeError::Busy) => (
            Response::Error(WireError::new(ErrorKind::Busy, "node at capacity")),
            Bytes::new(),
        ),
        Err(RuntimeError::NotPrepared(h)) => (
            Response::Error(WireError::new(
                ErrorKind::NotFound,
                format!("module {h} is not ready here"),
            )),
            Bytes::new(),
        ),
        Err(e) => (
            Response::Error(WireError::new(ErrorKind::Internal, e.to_string())),
            Bytes::new(),
        ),
    }
}

/// Fetch (from the super that asked), verify, compile and remember a replica.
pub(super) async fn place(
    shared: &Arc<Shared>,
    conn: &Connection,
    name: String,
    hash: ContentHash,
    files: Option<BundleRef>,
) -> Result<(), WireError> {
    check_name(&name)?;
    // Files first: a replica is announced only once a call can run on it.
    if let Some(b) = files {
        bundles::ensure_stored(shared, conn, b).await?;
    }
    let store = shared.store.clone();
    let have = blocking(move || store.has_module(&hash))
        .await
        .map_err(|e| e.to_wire())?
        .unwrap_or(false);
    let module = if have {
        None
    } else {
        let (resp, bytes) = conn
            .request(
                &Request::FetchModule { hash },
                &[],
                orb_proto::limits::MAX_MODULE,
            )
            .await
            .map_err(|e| WireError::new(ErrorKind::Unavailable, format!("fetching module: {e}")))?;
        match resp {
            Response::Module { .. } => {}
            Response::Error(e) => return Err(e),
            other => {
                return Err(unexpected(ErrorKind::Internal, &other));
            }
        }
        // Never trust the sender: the hash is the module's identity.
        let actual = ContentHash::of(&bytes);
        if actual != hash {
            return Err(WireError::new(
                ErrorKind::BadRequest,
                format!("fetched module hashes to {actual}, not {hash}"),
            ));
        }
        Some(bytes)
    };
    let store = shared.store.clone();
    let rt = shared.runtime.clone();
    let record = HostedRecord {
        name: name.clone(),
        hash,
        settings: FunctionSettings::default(),
    };
    let rec = record.clone();
    blocking(move || -> Result<(), WireError> {
        match module {
            Some(b) => {
                // Compile before storing: a module this node cannot run is
                // never kept.
                prepare_cached(&store, &rt, hash, &b)?;
                store
                    .put_module(&hash, &b)
                    .map_err(|e| WireError::new(ErrorKind::Internal, e.to_string()))?;
            }
            None => {
                let b = store
                    .module(&hash)
                    .map_err(|e| WireError::new(ErrorKind::Internal, e.to_string()))?
                    .ok_or_else(|| {
                        WireError::new(ErrorKind::Internal, "module vanished from the store")
                    })?;
                prepare_cached(&store, &rt, hash, &b)?;
            }
        }
        store
            .put_hosted(&rec)
            .map_err(|e| WireError::new(ErrorKind::Internal, e.to_string()))
    })
    .await
    .map_err(|e| e.to_wire())??;
    lock(&shared.retired).retain(|(n, h)| !(*n == name && *h == hash));
    write_lock(&shared.hosted).insert(name.clone(), record);
    info!(function = %name, hash = %hash.short(), "hosting replica");
    let s = shared.clone();
    tokio::spawn(async move { records::publish_provider(&s, hash).await });
    announce_hosted(shared, conn.peer_id());
    Ok(())
}

/// Tell the home supers other than `placer` (which knows) the replicas this
/// node now holds, with a Hello on their links, in the background. Each of
/// them routes calls only to replicas it knows of; without this, a replica
/// placed by one home super would be unreachable through the others while
/// that one is down.
pub(super) fn announce_hosted(shared: &Arc<Shared>, placer: OrbId) {
    let hello = links::hello(shared);
    for conn in home_links(shared)
        .into_iter()
        .filter(|c| c.peer_id() != placer)
    {
        let hello = hello.clone();
        // A super that misses it learns the list from the Hello of the
        // next link anyway.
        tokio::spawn(async move {
            match tokio::time::timeout(Duration::from_secs(5), conn.request(&hello, &[], 1024))
                .await
            {
                Ok(Ok((Response::Welcome(_), _))) => {}
                other => {
                    debug!(super_node = %conn.peer_id().short(), answer = ?other.map(|r| r.map(|(r, _)| r)), "replica list not announced")
                }
            }
        });
    }
}

/// Stop hosting a replica: the super scaled it down, or the function moved
/// to another version or was removed. For a scale-down the module stays in
/// the store, so a later placement needs no fetch; when the name record no
/// longer points at the module and no other replica here runs it, the
/// module, its compiled artifact and the replica's logs go.
pub(super) async fn unplace(shared: &Arc<Shared>, name: &str, hash: ContentHash) {
    {
        let mut retired = lock(&shared.retired);
        if !retired.contains(&(name.to_string(), hash)) {
            if retired.len() >= MAX_RETIRED {
                retired.pop_front();
            }
            retired.push_back((name.to_string(), hash));
        }
    }
    let removed = {
        let mut hosted = write_lock(&shared.hosted);
        match hosted.get(name) {
            Some(h) if h.hash == hash => hosted.remove(name).is_some(),
            _ => false,
        }
    };
    if removed {
        lock(&shared.logs).forget(name);
        let store = shared.store.clone();
        let key = name.to_string();
        if let Ok(Err(e)) = blocking(move || store.remove_hosted(&key)).await {
            warn!(error = %e, "cannot forget the replica in the store");
        }
    }
    let current = match dht::name_record(&shared.overlay, name).await {
        Ok(Some((_, n))) => !n.removed && n.hash == hash,
        // Unknown: keep the bytes, as for a scale-down.
        _ => true,
    };
    let still_used = read_lock(&shared.hosted).values().any(|h| h.hash == hash);
    if !still_used {
        records::withdraw_provider(shared, hash).await;
    }
    if current || still_used {
        info!(function = %name, hash = %hash.short(), "replica removed (scaled down)");
        return;
    }
    shared.runtime.forget(&hash);
    let store = shared.store.clone();
    let artifact = format!("{}/{hash}", shared.runtime.cache_key());
    let dropped = blocking(move || {
        store.remove_module(&hash)?;
        store.remove_artifact(&artifact)
    })
    .await;
    if let Ok(Err(e)) = dropped {
        warn!(error = %e, "cannot drop the module of a retired replica");
    }
    info!(function = %name, hash = %hash.short(), "replica removed (old version or removed function); module dropped");
}
