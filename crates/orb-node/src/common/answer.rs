//! A function's HTTP answer, at both ends of a call: the node that ran it
//! reads the output once ([`shape`]: the CGI header block of a `--cgi`
//! function, the deployed content type of a raw one, no body for HEAD),
//! and the node answering over HTTP turns that into the response
//! ([`respond`]), filtering the headers again since it cannot trust the
//! executor.

use axum::body::{Body, Bytes};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use orb_proto::wire::{ErrorKind, FunctionSettings, HttpHead, WireError};

use super::cgi;

/// Executor side: the head and the body of a successful call's `stdout`.
/// The body is a slice of `stdout`, never a copy.
pub(crate) fn shape(
    settings: &FunctionSettings,
    method: &str,
    stdout: Vec<u8>,
) -> (Option<HttpHead>, Bytes) {
    let (head, body) = if settings.cgi {
        match cgi::parse(&stdout) {
            Ok(a) => (Some(a.head), Bytes::from(stdout).slice(a.body_start..)),
            Err(e) => {
                return (
                    Some(HttpHead {
                        status: 502,
                        headers: Vec::new(),
                        error: Some(format!("invalid CGI answer: {e}")),
                    }),
                    Bytes::new(),
                );
            }
        }
    } else {
        let head = settings.content_type.as_ref().map(|t| HttpHead {
            status: 200,
            headers: vec![("content-type".to_string(), t.clone())],
            error: None,
        });
        (head, Bytes::from(stdout))
    };
    if !method.eq_ignore_ascii_case("HEAD") {
        return (head, body);
    }
    // HEAD: the same head as GET with the length it would have, no body
    // on the wire.
    let mut head = head.unwrap_or_else(|| HttpHead {
        status: 200,
        headers: vec![(
            "content-type".to_string(),
            "application/octet-stream".to_string(),
        )],
        error: None,
    });
    head.headers
        .push(("content-length".to_string(), body.len().to_string()));
    (Some(head), Bytes::new())
}

/// Whether `t` is a usable `Content-Type` for `deploy --content-type`.
pub(crate) fn valid_content_type(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 256
        && HeaderValue::from_str(t).is_ok()
        && t.split(';')
            .next()
            .and_then(|m| m.trim().split_once('/'))
            .is_some_and(|(a, b)| {
                let tok = |s: &str| {
                    !s.is_empty()
                        && s.bytes()
                            .all(|c| c.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&c))
                };
                tok(a) && tok(b)
            })
}

/// `--content-type` must be a media type, and only for a raw answer: a CGI
/// function writes its own `Content-Type`.
pub(crate) fn check_settings(settings: &FunctionSettings) -> Result<(), WireError> {
    match &settings.content_type {
        Some(t) if !valid_content_type(t) => Err(WireError::new(
            ErrorKind::BadRequest,
            format!("content type {t:?} is not a media type like text/html"),
        )),
        Some(_) if settings.cgi => Err(WireError::new(
            ErrorKind::BadRequest,
            "--content-type is for raw answers; a CGI function writes its own Content-Type header",
        )),
        _ => Ok(()),
    }
}

/// Edge side: the HTTP response for a successful call's head and body.
pub(crate) fn respond(head: Option<&HttpHead>, body: Bytes, method: &str) -> Response {
    let Some(h) = head else {
        return (StatusCode::OK, body).into_response();
    };
    let status = StatusCode::from_u16(h.status)
        .ok()
        .filter(|s| (200..=599).contains(&s.as_u16()));
    let (status, problem) = match (&h.error, status) {
        (Some(e), _) => (StatusCode::BAD_GATEWAY, Some(e.clone())),
        (None, None) => (
            StatusCode::BAD_GATEWAY,
            Some(format!("invalid status {} from the function", h.status)),
        ),
        (None, Some(s)) => (s, None),
    };
    if let Some(text) = problem {
        let mut resp = (status, format!("{text}\n")).into_response();
        resp.headers_mut()
            .insert("x-orb-error", HeaderValue::from_static("FunctionFailed"));
        return resp;
    }
    let head_request = method.eq_ignore_ascii_case("HEAD");
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    let out = resp.headers_mut();
    for (k, v) in h.headers.iter().take(cgi::MAX_HEADERS + 1) {
        let keep = cgi::allowed_header(k) || (head_request && k == "content-length");
        if !keep {
            continue;
        }
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k.as_str()), HeaderValue::from_str(v)) {
            out.append(k, v);
        }
    }
    if head_request && !out.contains_key(header::CONTENT_LENGTH) {
        out.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(cgi: bool, content_type: Option<&str>) -> FunctionSettings {
        FunctionSettings {
            cgi,
            content_type: content_type.map(str::to_string),
            ..FunctionSettings::default()
        }
    }

    #[test]
    fn raw_output_stays_raw() {
        let (h, b) = shape(&settings(false, None), "POST", b"hi".to_vec());
        assert_eq!(h, None);
        assert_eq!(&b[..], b"hi");
        let (h, _) = shape(&settings(false, Some("text/html")), "GET", b"<p>".to_vec());
        assert_eq!(
            h.map(|h| h.headers),
            Some(vec![("content-type".into(), "text/html".into())])
        );
    }

    #[test]
    fn cgi_output_is_split_without_copying() {
        let (h, b) = shape(
            &settings(true, None),
            "GET",
            b"Status: 404\nContent-Type: text/plain\n\nnope".to_vec(),
        );
        let h = h.unwrap_or_default();
        assert_eq!(h.status, 404);
        assert_eq!(&b[..], b"nope");
        let (h, b) = shape(&settings(true, None), "GET", b"Status: 999\n\n".to_vec());
        let h = h.unwrap_or_default();
        assert_eq!(h.status, 502);
        assert!(h.error.unwrap_or_default().contains("999"));
        assert!(b.is_empty());
    }

    #[test]
    fn head_requests_get_no_body_but_the_length() {
        let (h, b) = shape(&settings(false, None), "HEAD", b"12345".to_vec());
        assert!(b.is_empty());
        let h = h.unwrap_or_default();
        assert!(h.headers.contains(&("content-length".into(), "5".into())));
        let resp = respond(Some(&h), b, "HEAD");
        assert_eq!(resp.headers()[header::CONTENT_LENGTH], "5");
    }

    #[test]
    fn edge_filters_what_an_executor_sends() {
        let h = HttpHead {
            status: 201,
            headers: vec![
                ("location".into(), "/x".into()),
                ("x-orb-node".into(), "forged".into()),
                ("connection".into(), "close".into()),
                ("content-length".into(), "99".into()),
                ("bad name".into(), "v".into()),
            ],
            error: None,
        };
        let resp = respond(Some(&h), Bytes::from_static(b"ok"), "POST");
        assert_eq!(resp.status(), StatusCode::CREATED);
        assert_eq!(resp.headers()["location"], "/x");
        assert!(resp.headers().get("x-orb-node").is_none());
        assert!(resp.headers().get("connection").is_none());
        assert!(resp.headers().get("content-length").is_none());
        let bad = HttpHead {
            status: 999,
            ..HttpHead::default()
        };
        assert_eq!(
            respond(Some(&bad), Bytes::new(), "GET").status(),
            StatusCode::BAD_GATEWAY
        );
    }

    #[test]
    fn content_types() {
        for ok in [
            "text/html",
            "text/html; charset=utf-8",
            "application/vnd.api+json",
        ] {
            assert!(valid_content_type(ok), "{ok}");
        }
        for bad in ["", "html", "text/", "/x", "text/html\n", "a b/c"] {
            assert!(!valid_content_type(bad), "{bad:?}");
        }
    }
}
