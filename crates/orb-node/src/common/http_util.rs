//! HTTP plumbing shared by the super's gateway and the client's local API.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use orb_proto::OrbId;
use orb_proto::wire::{CallMeta, ErrorKind, FunctionInfo, RunOutcome, RunStatus, WireError};
use serde::{Deserialize, Serialize};

/// Header naming the node that ran a call.
pub(crate) const X_ORB_NODE: &str = "x-orb-node";
/// Header carrying the request ID.
pub(crate) const X_ORB_REQUEST_ID: &str = "x-orb-request-id";
/// Header carrying the fuel a call used.
pub(crate) const X_ORB_FUEL: &str = "x-orb-fuel";

/// The HTTP status for a wire error, per DESIGN.md's contract.
pub(crate) fn status_for(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
        ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::Busy | ErrorKind::Quota => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::Unavailable => StatusCode::BAD_GATEWAY,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::FunctionFailed | ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The wire error kind for an HTTP status (the CLI maps answers back).
pub(crate) fn error_response(err: &WireError) -> Response {
    let mut resp = (status_for(err.kind), format!("{}\n", err.message)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("{:?}", err.kind)) {
        resp.headers_mut().insert("x-orb-error", v);
    }
    resp
}

/// Read a request body, refusing with 413 as soon as it passes `limit`
/// (the declared Content-Length is checked first, so a huge upload is
/// refused before a byte of it is read). A body that fails otherwise (the
/// client went away, or sent it too slowly: the server then answers 408
/// itself) is a 400, not a 413.
pub(crate) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, WireError> {
    let too_large = || {
        WireError::new(
            ErrorKind::TooLarge,
            format!("request body is over the {limit}-byte limit"),
        )
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let e = e.into_inner();
        if e.is::<http_body_util::LengthLimitError>() {
            too_large()
        } else {
            WireError::new(
                ErrorKind::BadRequest,
                format!("request body could not be read: {e}"),
            )
        }
    })
}

/// A call as it arrived over HTTP at `PREFIX NAME [/PATH] [?QUERY]` (any
/// method): the function's name, its metadata and its body, read under
/// `limit`.
pub(crate) async fn read_call(
    req: axum::extract::Request,
    prefix: &str,
    limit: usize,
    request_id: String,
) -> Result<(String, CallMeta, Bytes), WireError> {
    let (parts, body) = req.into_parts();
    let (name, path_info) = split_target(parts.uri.path(), prefix)?;
    let input = read_body(&parts.headers, body, limit).await?;
    let mut meta = call_meta(
        parts.method.as_str(),
        parts.uri.query(),
        &parts.headers,
        request_id,
    );
    meta.path_info = path_info;
    meta.remote_addr = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let (server_name, server_port) = host_and_port(&parts.headers);
    meta.server_name = server_name;
    meta.server_port = server_port;
    Ok((name, meta, input))
}

/// The function name and `PATH_INFO` of a request path under `prefix`
/// (`/fn/`): the first segment is the name, the rest (from its `/`) is
/// `PATH_INFO`, percent-decoded; empty when there is none.
pub(crate) fn split_target(path: &str, prefix: &str) -> Result<(String, String), WireError> {
    let rest = path.strip_prefix(prefix).ok_or_else(|| {
        WireError::new(
            ErrorKind::BadRequest,
            format!("a call's path starts with {prefix}"),
        )
    })?;
    let (name, info) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let info = percent_encoding::percent_decode_str(info)
        .decode_utf8_lossy()
        .into_owned();
    Ok((name.to_string(), info))
}

/// `SERVER_NAME` and `SERVER_PORT` from the `Host` header (port 80 when it
/// names none; empty and 0 without one).
fn host_and_port(headers: &HeaderMap) -> (String, u16) {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return (String::new(), 0);
    };
    // An IPv6 literal is bracketed: [::1]:8080.
    let split = match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => Some(i),
        _ => None,
    };
    match split {
        Some(i) => (host[..i].to_string(), host[i + 1..].parse().unwrap_or(0)),
        None => (host.to_string(), 80),
    }
}

/// Call metadata from an HTTP request.
pub(crate) fn call_meta(
    method: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    request_id: String,
) -> CallMeta {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let headers = headers
        .iter()
        .filter(|(k, _)| *k != header::CONTENT_LENGTH && *k != header::CONTENT_TYPE)
        .take(64)
        .filter_map(|(k, v)| {
            v.to_str()
                .ok()
                .map(|v| (k.as_str().to_string(), v.chars().take(1024).collect()))
        })
        .collect();
    CallMeta {
        request_id,
        method: method.to_string(),
        query: query.unwrap_or("").to_string(),
        content_type,
        headers,
        ..CallMeta::default()
    }
}

/// A human-readable account of a failed run.
pub(crate) fn failure_text(outcome: &RunOutcome) -> String {
    let head = match &outcome.status {
        RunStatus::Exited(code) => format!("function failed: exit code {code}"),
        RunStatus::Trapped(msg) => format!("function trapped: {msg}"),
        RunStatus::LimitExceeded { limit, detail } => {
            format!("function stopped: {limit} limit exceeded: {detail}")
        }
    };
    if outcome.stderr.is_empty() {
        head
    } else {
        format!("{head}\nstderr:\n{}", outcome.stderr)
    }
}

/// The HTTP answer for a completed call (`method` is the request's: HEAD
/// answers carry no body).
pub(crate) fn call_response(
    node: OrbId,
    outcome: &RunOutcome,
    output: Bytes,
    request_id: &str,
    method: &str,
) -> Response {
    let mut resp = if outcome.is_success() {
        super::answer::respond(outcome.http.as_ref(), output, method)
    } else {
        let err = WireError::new(ErrorKind::FunctionFailed, failure_text(outcome));
        error_response(&err)
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&node.to_string()) {
        h.insert(X_ORB_NODE, v);
    }
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert(X_ORB_REQUEST_ID, v);
    }
    h.insert(X_ORB_FUEL, HeaderValue::from(outcome.fuel_used));
    resp
}

/// JSON form of a function.
#[derive(Debug, Serialize, Deserialize)]
pub struct FunctionJson {
    pub name: String,
    pub hash: String,
    pub owner: String,
    pub size: u64,
    pub replicas_wanted: u32,
    pub max_replicas: u32,
    pub replicas: Vec<String>,
    /// Whether the function answers as CGI (`deploy --cgi`).
    #[serde(default)]
    pub cgi: bool,
    /// The content type of its raw answers (`deploy --content-type`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Size of its file bundle in bytes (`deploy --files`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_bytes: Option<u64>,
    /// Files and directories in its bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_entries: Option<u32>,
    /// Calls, errors, in flight and p50/p99 latency as the answering node
    /// counted them (supers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<crate::common::metrics::FunctionStatsJson>,
}

impl From<&FunctionInfo> for FunctionJson {
    fn from(f: &FunctionInfo) -> Self {
        FunctionJson {
            name: f.name.clone(),
            hash: f.hash.to_string(),
            owner: f.owner.to_string(),
            size: f.size,
            replicas_wanted: f.settings.replicas,
            max_replicas: f.settings.max_replicas,
            replicas: f.replicas.iter().map(|r| r.to_string()).collect(),
            cgi: f.settings.cgi,
            content_type: f.settings.content_type.clone(),
            files_bytes: f.settings.files.map(|b| b.size),
            files_entries: f.settings.files.map(|b| b.entries),
            stats: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_and_path_info() {
        let ok = |path: &str| match split_target(path, "/fn/") {
            Ok(v) => v,
            Err(e) => panic!("{path}: {e}"),
        };
        assert_eq!(ok("/fn/hello"), ("hello".into(), String::new()));
        assert_eq!(ok("/fn/hello/"), ("hello".into(), "/".into()));
        assert_eq!(ok("/fn/api/a%20b/c"), ("api".into(), "/a b/c".into()));
        assert_eq!(ok("/fn/api/x%2Fy"), ("api".into(), "/x/y".into()));
        assert_eq!(ok("/fn/api/%ff"), ("api".into(), "/\u{fffd}".into()));
        assert!(split_target("/other/x", "/fn/").is_err());
    }

    #[test]
    fn server_name_and_port_from_host() {
        let mut h = HeaderMap::new();
        assert_eq!(host_and_port(&h), (String::new(), 0));
        h.insert(header::HOST, HeaderValue::from_static("example.org"));
        assert_eq!(host_and_port(&h), ("example.org".into(), 80));
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:7780"));
        assert_eq!(host_and_port(&h), ("127.0.0.1".into(), 7780));
        h.insert(header::HOST, HeaderValue::from_static("[::1]:8080"));
        assert_eq!(host_and_port(&h), ("[::1]".into(), 8080));
        h.insert(header::HOST, HeaderValue::from_static("[::1]"));
        assert_eq!(host_and_port(&h), ("[::1]".into(), 80));
    }
}
