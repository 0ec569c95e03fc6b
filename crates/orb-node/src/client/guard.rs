//! The local API's guard: every request passes [`check`], which asks
//! [`crate::policy::api_access`] whether the API serves it (its `Host`,
//! what the browser says about where it came from, and the daemon's
//! token), and the daemon's token file.
//!
//! The token is 32 random bytes in hex in `<data-dir>/api-token`, readable
//! by the daemon's user only. The CLI reads it from there; the dashboard
//! gets it inside its own page (loopback API only), which no page of
//! another origin can read: the API sends no CORS headers, refuses foreign
//! `Host` headers (DNS rebinding) and may not be framed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::Shared;
use crate::error::NodeError;
use crate::policy::api_access::{self, Access, ApiAddr, Endpoint, Facts};

/// What the guard checks requests against.
pub(super) struct Guard {
    token: String,
    api: ApiAddr,
}

impl Guard {
    /// A guard for the API bound at `addr` with `token`.
    pub fn new(token: String, addr: std::net::SocketAddr) -> Self {
        Guard {
            token,
            api: ApiAddr {
                ip: addr.ip(),
                port: addr.port(),
            },
        }
    }
}

/// Whether the dashboard page may carry the token (set by [`check`]).
#[derive(Clone, Copy, Debug)]
pub(super) struct HandToken(pub bool);

/// The token file of a data directory.
pub(crate) fn token_path(data_dir: &Path) -> PathBuf {
    crate::local_api::token_file(data_dir)
}

/// Read the daemon's token, creating it (owner-only permissions) on first
/// start. Blocking.
pub(super) fn load_or_create_token(data_dir: &Path) -> Result<String, NodeError> {
    let path = token_path(data_dir);
    let io = |what: &str, e: std::io::Error| {
        NodeError::Internal(format!(
            "cannot {what} the API token {}: {e}",
            path.display()
        ))
    };
    if let Ok(text) = std::fs::read_to_string(&path) {
        let t = text.trim();
        if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            restrict(&path).map_err(|e| io("protect", e))?;
            return Ok(t.to_string());
        }
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| NodeError::Internal(format!("no randomness for the API token: {e}")))?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::create_dir_all(data_dir).map_err(|e| io("create the directory of", e))?;
    // Written to a fresh file and renamed, so nobody ever reads half a
    // token, and created owner-only before the secret goes in.
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    {
        use std::io::Write;
        let mut f = opts.open(&tmp).map_err(|e| io("create", e))?;
        f.write_all(format!("{token}\n").as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| io("write", e))?;
    }
    std::fs::rename(&tmp, &path).map_err(|e| io("save", e))?;
    Ok(token)
}

/// Owner-only permissions on the token file.
fn restrict(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path)?;
        if meta.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// What kind of endpoint a request is for.
fn endpoint(method: &Method, path: &str) -> Endpoint {
    let read = *method == Method::GET || *method == Method::HEAD;
    if !read {
        Endpoint::Mutating
    } else if path == "/" {
        Endpoint::Page
    } else if path.starts_with("/api/logs/") || path.starts_with("/api/versions/") {
        Endpoint::Owner
    } else {
        Endpoint::Read
    }
}

/// The token a request presents: `Authorization: Bearer TOKEN`, or
/// `x-orb-token: TOKEN`.
fn presented(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        return Some(v.strip_prefix("Bearer ").unwrap_or(v).trim());
    }
    headers.get("x-orb-token").and_then(|v| v.to_str().ok())
}

/// Compare without leaking, through timing, how much of a guess was right.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// The guard as axum middleware, in front of every route of the local API.
pub(super) async fn check(
    State(shared): State<Arc<Shared>>,
    mut req: Request,
    next: Next,
) -> Response {
    let guard = &shared.guard;
    let kind = endpoint(req.method(), req.uri().path());
    let h = req.headers();
    let text = |name: &str| h.get(name).and_then(|v| v.to_str().ok());
    let facts = Facts {
        host: text("host"),
        origin: text("origin"),
        fetch_site: text("sec-fetch-site"),
        fetch_mode: text("sec-fetch-mode"),
        fetch_dest: text("sec-fetch-dest"),
        token: presented(h).map(|t| same(t, &guard.token)),
    };
    match api_access::decide(guard.api, kind, facts) {
        Access::Refuse { status, reason } => {
            shared.stats.api_refused.inc();
            tracing::debug!(status, %reason, path = %req.uri().path(), "local API request refused");
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
            let mut resp = (status, format!("{reason}\n")).into_response();
            resp.headers_mut()
                .insert("x-orb-error", HeaderValue::from_static("Forbidden"));
            resp
        }
        Access::Allow { hand_token } => {
            req.extensions_mut().insert(HandToken(hand_token));
            let mut resp = next.run(req).await;
            let headers = resp.headers_mut();
            headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
            headers.insert(
                "content-security-policy",
                HeaderValue::from_static("frame-ancestors 'none'"),
            );
            headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
            if kind == Endpoint::Page {
                headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            }
            resp
        }
    }
}

/// The dashboard page, with the token in it when the guard allows.
pub(super) fn page(shared: &Shared, hand: Option<HandToken>) -> String {
    let token = match hand {
        Some(HandToken(true)) => shared.guard.token.as_str(),
        _ => "",
    };
    crate::common::DASHBOARD.replacen(
        r#"<meta name="orb-api-token" content="">"#,
        &format!(r#"<meta name="orb-api-token" content="{token}">"#),
        1,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_by_method_and_path() {
        assert_eq!(endpoint(&Method::GET, "/"), Endpoint::Page);
        assert_eq!(endpoint(&Method::GET, "/api/status"), Endpoint::Read);
        assert_eq!(endpoint(&Method::GET, "/api/logs/f"), Endpoint::Owner);
        assert_eq!(endpoint(&Method::GET, "/api/versions/f"), Endpoint::Owner);
        for p in [
            "/api/deploy",
            "/api/invoke/f",
            "/api/remove/f",
            "/api/status",
        ] {
            assert_eq!(endpoint(&Method::POST, p), Endpoint::Mutating);
        }
        assert_eq!(
            endpoint(&Method::OPTIONS, "/api/deploy"),
            Endpoint::Mutating
        );
    }

    #[test]
    fn tokens_from_either_header() {
        let mut h = HeaderMap::new();
        assert_eq!(presented(&h), None);
        h.insert("x-orb-token", HeaderValue::from_static("abc"));
        assert_eq!(presented(&h), Some("abc"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer def"),
        );
        assert_eq!(presented(&h), Some("def"));
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "abcd"));
    }

    #[test]
    fn the_token_file_is_made_once_and_kept_private() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = load_or_create_token(dir.path()).expect("create");
        assert_eq!(a.len(), 64);
        assert_eq!(load_or_create_token(dir.path()).expect("read"), a);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(token_path(dir.path()))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // A damaged file is replaced by a fresh token.
        std::fs::write(token_path(dir.path()), "short").expect("write");
        let b = load_or_create_token(dir.path()).expect("recreate");
        assert_ne!(a, b);
    }
}
