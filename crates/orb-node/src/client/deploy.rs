//! `deploy` through the local API: validate here, send the module to the
//! name's super (see [`super::manage`]), then publish the signed name record
//! with the version the super made and remember the name for refreshing.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response as HttpResponse};
use orb_proto::ContentHash;
use orb_proto::wire::{ErrorKind, FunctionSettings, Request, Response, WireError};
use serde::Serialize;

use super::{Shared, manage, upload};
use crate::common::http_util;
use crate::common::util::{blocking, check_name, unexpected};
use crate::error::NodeError;

/// How long a deploy may take end to end (upload, validation, placement).
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Serialize)]
pub(super) struct DeployedJson {
    name: String,
    hash: String,
    /// The version this deploy made.
    version: u64,
    placed_on: Vec<String>,
    /// DHT servers that stored the name record.
    published_on: usize,
    /// Why the name record could not be published (the function still
    /// works through the super it was deployed to; the record is retried).
    #[serde(skip_serializing_if = "Option::is_none")]
    dht_error: Option<String>,
}

/// Deploy settings from the query string: `name`, `replicas`,
/// `max_replicas`, repeatable `arg` and `env` (`K=V`), and the per-call
/// limits `fuel`, `memory_bytes`, `timeout_ms` and `max_output` (each node
/// clamps them to its own maxima when it runs a call).
pub(crate) fn deploy_params(
    query: Option<&str>,
) -> Result<(String, FunctionSettings, bool), WireError> {
    let bad = |m: String| WireError::new(ErrorKind::BadRequest, m);
    let mut name = None;
    let mut here = false;
    let mut settings = FunctionSettings {
        replicas: 2,
        ..FunctionSettings::default()
    };
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "name" => name = Some(v.into_owned()),
            "here" => here = matches!(v.as_ref(), "1" | "true" | ""),
            "replicas" => {
                settings.replicas = v
                    .parse()
                    .map_err(|_| bad(format!("replicas must be a number, not {v:?}")))?
            }
            "max_replicas" => {
                settings.max_replicas = v
                    .parse()
                    .map_err(|_| bad(format!("max_replicas must be a number, not {v:?}")))?
            }
            "arg" => settings.args.push(v.into_owned()),
            "cgi" => settings.cgi = matches!(v.as_ref(), "1" | "true" | ""),
            "content_type" => settings.content_type = Some(v.into_owned()),
            "fuel" => settings.limits.fuel = Some(positive(&k, &v)?),
            "memory_bytes" => settings.limits.memory_bytes = Some(positive(&k, &v)?),
            "timeout_ms" => settings.limits.timeout_ms = Some(positive(&k, &v)?),
            "max_output" => settings.limits.max_output = Some(positive(&k, &v)?),
            "env" => {
                let (key, val) = v
                    .split_once('=')
                    .ok_or_else(|| bad(format!("env must be KEY=VALUE, not {v:?}")))?;
                settings.env.push((key.to_string(), val.to_string()));
            }
            other => return Err(bad(format!("unknown deploy parameter {other:?}"))),
        }
    }
    let name = name.ok_or_else(|| bad("missing name".into()))?;
    check_name(&name)?;
    if settings.replicas == 0 {
        return Err(bad("replicas must be at least 1".into()));
    }
    settings.max_replicas = settings.max_replicas.max(settings.replicas);
    crate::common::answer::check_settings(&settings)?;
    Ok((name, settings, here))
}

/// A limit from the deploy query: a whole number of at least 1.
pub(super) fn positive(key: &str, value: &str) -> Result<u64, WireError> {
    match value.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(WireError::new(
            ErrorKind::BadRequest,
            format!("{key} must be a whole number of at least 1, not {value:?}"),
        )),
    }
}

pub(super) async fn api_deploy(
    State(shared): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
    req: axum::extract::Request,
) -> HttpResponse {
    let result = async {
        let (name, mut settings, here) = deploy_params(query.as_deref())?;
        let (module, bundle) = upload::read(&shared, req).await?;
        if let Some(bytes) = &bundle {
            settings.files = Some(upload::bundle_ref(&shared, bytes.clone()).await?);
        }
        // Validate here first: a bad file gets a clear answer without a
        // round trip, and nothing is sent or stored.
        let rt = shared.runtime.clone();
        let m = module.clone();
        blocking(move || rt.validate(&m))
            .await
            .map_err(|e| e.to_wire())?
            .map_err(|e| WireError::new(ErrorKind::BadRequest, format!("module refused: {e}")))?;
        let hash = ContentHash::of(&module);
        // The super the name was deployed through keeps its versions.
        let conn = manage::name_super(&shared, &name).await?;
        let settings_kept = settings.clone();
        let req = Request::Deploy {
            name,
            hash,
            settings,
            here,
        };
        // The body is the module, then the bundle (its size is in the
        // settings): one copy here, none through the codec.
        let body = match &bundle {
            Some(b) => Bytes::from([&module[..], &b[..]].concat()),
            None => module,
        };
        let answer = tokio::time::timeout(DEPLOY_TIMEOUT, conn.request(&req, &body, 1024 * 1024))
            .await
            .map_err(|_| WireError::new(ErrorKind::Unavailable, "deploy timed out"))?
            .map_err(|e| NodeError::from(e).to_wire())?;
        match answer {
            (
                Response::Deployed {
                    name,
                    hash,
                    placed_on,
                    version,
                },
                _,
            ) => {
                // The super accepted it (and checked ownership against the
                // DHT); now publish the signed name record so that every
                // super can resolve it, and remember it for refreshing.
                let owned = manage::OwnedName {
                    hash,
                    settings: settings_kept,
                    version,
                    removed: false,
                    home: Some(conn.peer_id()),
                };
                let published = manage::publish(&shared, &name, &owned).await;
                Ok(DeployedJson {
                    name,
                    hash: hash.to_string(),
                    version,
                    placed_on: placed_on.iter().map(|p| p.to_string()).collect(),
                    published_on: published.as_ref().map_or(0, |n| *n),
                    dht_error: published.err().map(|e| e.message),
                })
            }
            (Response::Error(e), _) => Err(e),
            (other, _) => Err(unexpected(ErrorKind::Internal, &other)),
        }
    }
    .await;
    match result {
        Ok(d) => (StatusCode::OK, Json(d)).into_response(),
        Err(e) => http_util::error_response(&e),
    }
}
