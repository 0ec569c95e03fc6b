//! What a deploy uploads to the local API: the module alone as the raw
//! body (`orb-client deploy FILE`), or a `multipart/form-data` body with a
//! `module` part and either one `bundle` part (the CLI packs the directory
//! itself with `pack_dir`) or many `file` parts whose file names are their
//! paths in the bundle (a browser's folder picker), which this node packs
//! with the same builder and bounds. The body is read under one cap (the
//! largest module and bundle and room for part headers), then split
//! without copying (`parse_multipart`, pure); each part is checked against
//! its own bound.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::header;
use orb_proto::bundle::BundleBuilder;
use orb_proto::wire::{BundleRef, ErrorKind, WireError};

use super::Shared;
use crate::common::files::check_bundle;
use crate::common::http_util;
use crate::common::util::blocking;

/// Headers of one part, at most.
const MAX_PART_HEAD: usize = 8 * 1024;

/// The module and the packed bundle (if any) of a deploy upload.
pub(super) async fn read(
    shared: &Arc<Shared>,
    req: axum::extract::Request,
) -> Result<(Bytes, Option<Bytes>), WireError> {
    let (parts, body) = req.into_parts();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if !content_type.starts_with("multipart/form-data") {
        let module =
            http_util::read_body(&parts.headers, body, orb_proto::limits::MAX_MODULE).await?;
        return Ok((module, None));
    }
    let bad = |m: String| WireError::new(ErrorKind::BadRequest, m);
    let limits = shared.config.bundle_limits;
    let max_bundle = usize::try_from(limits.max_bytes).unwrap_or(usize::MAX);
    // The whole upload, capped: the module, the bundle (or its files) and
    // room for the part headers.
    let cap = orb_proto::limits::MAX_MODULE
        .saturating_add(max_bundle)
        .saturating_add(
            usize::try_from(limits.max_entries)
                .unwrap_or(usize::MAX)
                .saturating_mul(1024),
        )
        .saturating_add(64 * 1024);
    let body = http_util::read_body(&parts.headers, body, cap).await?;
    let form = parse_multipart(&content_type, &body, limits.max_entries as usize + 2)
        .map_err(|e| bad(format!("malformed upload: {e}")))?;
    let (mut module, mut bundle) = (None, None);
    let mut files = BundleBuilder::new(limits);
    for part in form {
        let data = body.slice_ref(part.data);
        match part.name {
            "module" => module = Some(capped(data, orb_proto::limits::MAX_MODULE, "module")?),
            "bundle" => bundle = Some(capped(data, max_bundle, "file bundle")?),
            "file" => {
                let path = part
                    .filename
                    .ok_or_else(|| bad("a file part needs a file name (its path)".into()))?
                    .trim_start_matches('/');
                files
                    .add_file(path, data.to_vec())
                    .map_err(|e| too_large_or_bad(&e))?;
            }
            other => return Err(bad(format!("unknown upload part {other:?}"))),
        }
    }
    let module = module.ok_or_else(|| bad("the upload has no module part".into()))?;
    if bundle.is_some() && !files.is_empty() {
        return Err(bad(
            "send either one bundle part or file parts, not both".into()
        ));
    }
    if bundle.is_none() && !files.is_empty() {
        bundle = Some(Bytes::from(
            blocking(move || files.finish())
                .await
                .map_err(|e| e.to_wire())?,
        ));
    }
    Ok((module, bundle))
}

/// `data`, unless it is over `limit`.
fn capped(data: Bytes, limit: usize, what: &str) -> Result<Bytes, WireError> {
    if data.len() > limit {
        return Err(WireError::new(
            ErrorKind::TooLarge,
            format!("the {what} is over the {limit}-byte limit"),
        ));
    }
    Ok(data)
}

/// One part of a `multipart/form-data` body.
#[derive(Debug, PartialEq, Eq)]
struct Part<'a> {
    /// The form field's name.
    name: &'a str,
    /// The file name, for a file.
    filename: Option<&'a str>,
    /// The contents, borrowed from the body.
    data: &'a [u8],
}

/// Split a `multipart/form-data` body (RFC 7578) into at most `max_parts`
/// parts. Pure; any input gives parts or an error, never a panic.
fn parse_multipart<'a>(
    content_type: &'a str,
    body: &'a [u8],
    max_parts: usize,
) -> Result<Vec<Part<'a>>, String> {
    let boundary = content_type
        .split(';')
        .skip(1)
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .map(|b| b.trim_matches('"'))
        .filter(|b| !b.is_empty() && b.len() <= 200)
        .ok_or("no boundary in the content type")?;
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    let mut at = find(body, delimiter, 0).ok_or("no part delimiter")? + delimiter.len();
    let mut parts = Vec::new();
    loop {
        let rest = &body[at..];
        if rest.starts_with(b"--") {
            return Ok(parts);
        }
        let line_end = if rest.starts_with(b"\r\n") {
            2
        } else {
            return Err("a delimiter is not followed by CRLF".into());
        };
        at += line_end;
        let head_end = find(body, b"\r\n\r\n", at)
            .filter(|e| e - at <= MAX_PART_HEAD)
            .ok_or("a part's headers do not end")?;
        let head = std::str::from_utf8(&body[at..head_end])
            .map_err(|_| "a part's headers are not UTF-8")?;
        let data_start = head_end + 4;
        let mut close = b"\r\n".to_vec();
        close.extend_from_slice(delimiter);
        let data_end = find(body, &close, data_start).ok_or("a part does not end")?;
        if parts.len() >= max_parts {
            return Err(format!("more than {max_parts} parts"));
        }
        let (name, filename) = disposition(head)?;
        parts.push(Part {
            name,
            filename,
            data: &body[data_start..data_end],
        });
        at = data_end + close.len();
    }
}

/// `name` and `filename` from a part's `Content-Disposition: form-data`.
fn disposition(head: &str) -> Result<(&str, Option<&str>), String> {
    let value = head
        .split("\r\n")
        .find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-disposition")
                .then_some(v.trim())
        })
        .ok_or("a part has no Content-Disposition")?;
    let mut params = value.split(';').map(str::trim);
    if params.next() != Some("form-data") {
        return Err("a part is not form-data".into());
    }
    let (mut name, mut filename) = (None, None);
    for p in params {
        if let Some(v) = p.strip_prefix("name=") {
            name = Some(v.trim_matches('"'));
        } else if let Some(v) = p.strip_prefix("filename=") {
            filename = Some(v.trim_matches('"'));
        }
    }
    Ok((name.ok_or("a part has no name")?, filename))
}

/// Where `needle` first occurs in `hay` at or after `from`.
fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let first = *needle.first()?;
    let mut i = from;
    while i + needle.len() <= hay.len() {
        let j = i + hay[i..].iter().position(|b| *b == first)?;
        if hay.get(j..j + needle.len()) == Some(needle) {
            return Some(j);
        }
        i = j + 1;
    }
    None
}

/// The reference of an uploaded bundle, checked as a super will check it.
pub(super) async fn bundle_ref(shared: &Arc<Shared>, bytes: Bytes) -> Result<BundleRef, WireError> {
    let limits = shared.config.bundle_limits;
    blocking(move || {
        let entries = orb_proto::bundle::decode(&bytes, &limits)
            .map_err(|e| too_large_or_bad(&e))?
            .len();
        let b = BundleRef {
            hash: orb_proto::ContentHash::of(&bytes),
            size: bytes.len() as u64,
            entries: u32::try_from(entries).unwrap_or(u32::MAX),
        };
        check_bundle(&b, &bytes, &limits)?;
        Ok(b)
    })
    .await
    .map_err(|e| e.to_wire())?
}

/// A bundle error as a wire error: over a bound is 413.
fn too_large_or_bad(e: &orb_proto::bundle::BundleError) -> WireError {
    use orb_proto::bundle::BundleError as E;
    let kind = match e {
        E::TooLarge { .. } | E::TooManyEntries { .. } => ErrorKind::TooLarge,
        _ => ErrorKind::BadRequest,
    };
    WireError::new(kind, format!("file bundle refused: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CT: &str = "multipart/form-data; boundary=XyZ";

    #[test]
    fn parts_as_a_browser_sends_them() {
        let body = b"preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"module\"; filename=\"m.wasm\"\r\nContent-Type: application/wasm\r\n\r\n\0asm\r\n--XyZ\r\ncontent-disposition: form-data; name=\"file\"; filename=\"css/a.css\"\r\n\r\np{}\r\n--X\r\n--XyZ--\r\n";
        let parts = match parse_multipart(CT, body, 10) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(
            parts,
            vec![
                Part {
                    name: "module",
                    filename: Some("m.wasm"),
                    data: b"\0asm"
                },
                Part {
                    name: "file",
                    filename: Some("css/a.css"),
                    data: b"p{}\r\n--X"
                },
            ]
        );
    }

    #[test]
    fn malformed_uploads_are_refused() {
        for (ct, body) in [
            ("multipart/form-data", &b"--XyZ--"[..]),
            (CT, b"no delimiter"),
            (
                CT,
                b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nnever closed",
            ),
            (CT, b"--XyZ\r\nX: y\r\n\r\nd\r\n--XyZ--"),
            (
                CT,
                b"--XyZ\r\nContent-Disposition: attachment\r\n\r\nd\r\n--XyZ--",
            ),
            (
                CT,
                b"--XyZ\r\nContent-Disposition: form-data\r\n\r\nd\r\n--XyZ--",
            ),
            (CT, b"--XyZjunk"),
        ] {
            assert!(
                parse_multipart(ct, body, 10).is_err(),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        let two = b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--XyZ\r\nContent-Disposition: form-data; name=\"b\"\r\n\r\n2\r\n--XyZ--";
        assert_eq!(parse_multipart(CT, two, 2).map(|p| p.len()), Ok(2));
        assert!(parse_multipart(CT, two, 1).is_err());
    }

    proptest! {
        #[test]
        fn random_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_multipart(CT, &body, 8);
            let mut framed = b"--XyZ\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n".to_vec();
            framed.extend_from_slice(&body);
            framed.extend_from_slice(b"\r\n--XyZ--");
            if let Ok(parts) = parse_multipart(CT, &framed, 8) {
                prop_assert!(!parts.is_empty());
            }
        }
    }
}
