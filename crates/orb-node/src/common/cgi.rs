//! Reading a CGI answer (RFC 3875 section 6): the header block a function
//! deployed with `--cgi` writes before its body. Pure: bytes in, a status,
//! headers and where the body starts out, or an error naming the problem
//! (the gateway answers it with 502).

use orb_proto::wire::HttpHead;

/// Most header lines a function may write.
pub(crate) const MAX_HEADERS: usize = 64;
/// Most bytes the header block may take, the empty line included.
pub(crate) const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Why a function's output is not a CGI answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CgiError {
    /// Nothing at all was written.
    #[error(
        "the function wrote nothing; a CGI answer starts with header lines (Content-Type, Status or Location) and an empty line"
    )]
    Empty,
    /// No empty line ends the header block.
    #[error("the CGI header block never ends: no empty line after the headers")]
    Unterminated,
    /// The header block is over [`MAX_HEAD_BYTES`].
    #[error("the CGI header block is over {MAX_HEAD_BYTES} bytes (or never ends)")]
    TooLarge,
    /// More than [`MAX_HEADERS`] header lines.
    #[error("the CGI header block has more than {MAX_HEADERS} header lines")]
    TooManyHeaders,
    /// A line that is not `Name: value`.
    #[error("CGI header line {line} is not \"Name: value\": {excerpt:?}")]
    BadLine {
        /// 1-based line number.
        line: usize,
        /// The start of the line.
        excerpt: String,
    },
    /// A header value that is not printable text.
    #[error("CGI header {name:?} has a value with control characters or invalid UTF-8")]
    BadValue {
        /// The header's name.
        name: String,
    },
    /// A `Status:` that is not three digits from 200 to 599.
    #[error(
        "invalid CGI Status {value:?}: it must be a code from 200 to 599 and an optional reason"
    )]
    BadStatus {
        /// The value as written.
        value: String,
    },
    /// A second `Status:` line.
    #[error("the CGI header block has more than one Status line")]
    DuplicateStatus,
    /// None of the fields a CGI answer needs.
    #[error("the CGI header block has no Content-Type, Status or Location header")]
    NoCgiField,
}

/// A parsed CGI answer: status and headers, and the offset of the body in
/// the output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CgiAnswer {
    /// Status and headers (no error).
    pub head: HttpHead,
    /// Where the body starts in the output.
    pub body_start: usize,
}

/// Whether a header a function (or a node that ran it) sets may reach the
/// HTTP caller: hop-by-hop headers belong to one connection (RFC 9110
/// section 7.6.1), `x-orb-*` are the node's own, and the body's length is
/// the server's to state.
pub(crate) fn allowed_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    !(matches!(
        n.as_str(),
        "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "content-length"
            | "status"
    ) || n.starts_with("proxy-")
        || n.starts_with("x-orb-"))
}

/// Read the header block at the start of `output`.
///
/// Lines end with LF or CRLF; an empty line ends the block. `Status: NNN
/// reason` sets the status (200-599: a 1xx code cannot end an HTTP
/// exchange, so it is refused like 999); a `Location` without a `Status`
/// answers 302 (RFC 3875 6.2.3 for an absolute URL; Orb has no
/// server-side redirect, so a local path is handed to the browser the same
/// way); otherwise 200. Header names are lower-cased; dropped headers (see
/// [`allowed_header`]) do not count against the bounds' errors but do
/// against the byte bound.
pub(crate) fn parse(output: &[u8]) -> Result<CgiAnswer, CgiError> {
    if output.is_empty() {
        return Err(CgiError::Empty);
    }
    let mut status: Option<u16> = None;
    let mut location = false;
    let mut content_type = false;
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut lines = 0usize;
    let mut at = 0usize;
    loop {
        let window = &output[at..output.len().min(MAX_HEAD_BYTES)];
        let Some(nl) = window.iter().position(|b| *b == b'\n') else {
            return Err(if output.len() >= MAX_HEAD_BYTES {
                CgiError::TooLarge
            } else {
                CgiError::Unterminated
            });
        };
        let mut line = &window[..nl];
        if let [rest @ .., b'\r'] = line {
            line = rest;
        }
        at += nl + 1;
        if line.is_empty() {
            break;
        }
        lines += 1;
        if lines > MAX_HEADERS {
            return Err(CgiError::TooManyHeaders);
        }
        let bad_line = || CgiError::BadLine {
            line: lines,
            excerpt: String::from_utf8_lossy(&line[..line.len().min(60)]).into_owned(),
        };
        let colon = line.iter().position(|b| *b == b':').ok_or_else(bad_line)?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.is_empty() || !name.iter().all(|b| is_token(*b)) {
            return Err(bad_line());
        }
        // is_token admits only ASCII.
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        let value = std::str::from_utf8(value)
            .ok()
            .filter(|v| !v.chars().any(|c| c.is_control() && c != '\t'))
            .ok_or_else(|| CgiError::BadValue { name: name.clone() })?
            .trim_matches([' ', '\t']);
        match name.as_str() {
            "status" => {
                if status.is_some() {
                    return Err(CgiError::DuplicateStatus);
                }
                status = Some(parse_status(value)?);
                continue;
            }
            "location" => location = true,
            "content-type" => content_type = true,
            _ => {}
        }
        if allowed_header(&name) {
            headers.push((name, value.to_string()));
        }
    }
    if status.is_none() && !location && !content_type {
        return Err(CgiError::NoCgiField);
    }
    let status = status.unwrap_or(if location { 302 } else { 200 });
    Ok(CgiAnswer {
        head: HttpHead {
            status,
            headers,
            error: None,
        },
        body_start: at,
    })
}

/// `NNN` or `NNN reason`, with NNN from 200 to 599.
fn parse_status(value: &str) -> Result<u16, CgiError> {
    let bad = || CgiError::BadStatus {
        value: value.chars().take(60).collect(),
    };
    let (code, rest) = value.split_at_checked(3).ok_or_else(bad)?;
    if !code.bytes().all(|b| b.is_ascii_digit()) || !(rest.is_empty() || rest.starts_with(' ')) {
        return Err(bad());
    }
    match code.parse::<u16>() {
        Ok(n) if (200..=599).contains(&n) => Ok(n),
        _ => Err(bad()),
    }
}

/// RFC 9110 `tchar`.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(out: &[u8]) -> CgiAnswer {
        match parse(out) {
            Ok(a) => a,
            Err(e) => panic!("{:?} refused: {e}", String::from_utf8_lossy(out)),
        }
    }

    #[test]
    fn status_headers_and_body_with_lf() {
        let out = b"Status: 201 Created\nContent-Type: application/json\nLocation: /fn/notes/1\nX-Extra:  v \n\n{\"id\":1}";
        let a = ok(out);
        assert_eq!(a.head.status, 201);
        assert_eq!(
            a.head.headers,
            vec![
                ("content-type".into(), "application/json".into()),
                ("location".into(), "/fn/notes/1".into()),
                ("x-extra".into(), "v".into()),
            ]
        );
        assert_eq!(&out[a.body_start..], b"{\"id\":1}");
    }

    #[test]
    fn crlf_and_empty_body() {
        let out = b"Content-Type: text/plain\r\nStatus: 204\r\n\r\n";
        let a = ok(out);
        assert_eq!(a.head.status, 204);
        assert_eq!(a.body_start, out.len());
    }

    #[test]
    fn location_without_status_redirects() {
        assert_eq!(ok(b"Location: https://example.org/\n\n").head.status, 302);
        assert_eq!(ok(b"Location: /elsewhere\n\n").head.status, 302);
        assert_eq!(
            ok(b"Status: 301\nLocation: /x\n\n").head.status,
            301,
            "an explicit status wins"
        );
        assert_eq!(ok(b"Content-Type: text/html\n\n<p>").head.status, 200);
    }

    #[test]
    fn hop_by_hop_and_orb_headers_are_dropped() {
        let out = b"Content-Type: text/plain\nConnection: close\nTransfer-Encoding: chunked\nKeep-Alive: 5\nTE: x\nTrailer: y\nUpgrade: h2c\nProxy-Authenticate: z\nX-Orb-Node: fake\nContent-Length: 9999\nSet-Cookie: a=b\n\nbody";
        let a = ok(out);
        assert_eq!(
            a.head.headers,
            vec![
                ("content-type".into(), "text/plain".into()),
                ("set-cookie".into(), "a=b".into()),
            ]
        );
    }

    #[test]
    fn bad_statuses_are_named() {
        for s in [
            "999",
            "abc",
            "20",
            "2000",
            "099",
            "100 Continue",
            "101",
            "600",
            "",
            "20x",
        ] {
            let out = format!("Status: {s}\nContent-Type: text/plain\n\n");
            match parse(out.as_bytes()) {
                Err(CgiError::BadStatus { value }) => assert_eq!(value, s),
                other => panic!("Status {s:?}: {other:?}"),
            }
        }
        assert_eq!(ok(b"Status: 404 Not Found\n\n").head.status, 404);
        assert_eq!(ok(b"Status:500\n\n").head.status, 500);
        assert_eq!(
            parse(b"Status: 200\nStatus: 404\n\n"),
            Err(CgiError::DuplicateStatus)
        );
    }

    #[test]
    fn malformed_blocks_are_refused() {
        assert_eq!(parse(b""), Err(CgiError::Empty));
        assert_eq!(
            parse(b"Content-Type: text/plain\nno end"),
            Err(CgiError::Unterminated)
        );
        assert!(matches!(
            parse(b"hello world\n\n"),
            Err(CgiError::BadLine { line: 1, .. })
        ));
        assert!(matches!(
            parse(b"Content-Type: text/plain\nBad Name: x\n\n"),
            Err(CgiError::BadLine { line: 2, .. })
        ));
        assert!(matches!(parse(b": x\n\n"), Err(CgiError::BadLine { .. })));
        assert_eq!(parse(b"X-Only: 1\n\nbody"), Err(CgiError::NoCgiField));
        assert_eq!(parse(b"\nbody"), Err(CgiError::NoCgiField));
        assert!(matches!(
            parse(b"Content-Type: a\x01b\n\n"),
            Err(CgiError::BadValue { .. })
        ));
        assert!(matches!(
            parse(b"Content-Type: \xff\n\n"),
            Err(CgiError::BadValue { .. })
        ));
    }

    #[test]
    fn bounds() {
        let mut many = String::from("Content-Type: text/plain\n");
        for i in 0..MAX_HEADERS {
            many.push_str(&format!("X-H{i}: v\n"));
        }
        many.push('\n');
        assert_eq!(parse(many.as_bytes()), Err(CgiError::TooManyHeaders));
        let mut exact = String::from("Content-Type: text/plain\n");
        for i in 1..MAX_HEADERS {
            exact.push_str(&format!("X-H{i}: v\n"));
        }
        exact.push('\n');
        assert_eq!(ok(exact.as_bytes()).head.headers.len(), MAX_HEADERS);
        let long = format!(
            "Content-Type: text/plain\nX-Big: {}\n\n",
            "a".repeat(MAX_HEAD_BYTES)
        );
        assert_eq!(parse(long.as_bytes()), Err(CgiError::TooLarge));
        // A header block that never ends, followed by megabytes of body,
        // is refused after the first 16 KiB.
        let endless = "X-A: b\n".repeat(3 * MAX_HEAD_BYTES);
        assert!(matches!(
            parse(endless.as_bytes()),
            Err(CgiError::TooLarge | CgiError::TooManyHeaders)
        ));
        let no_newline = vec![b'a'; MAX_HEAD_BYTES * 2];
        assert_eq!(parse(&no_newline), Err(CgiError::TooLarge));
    }

    #[test]
    fn allowed_headers() {
        for h in [
            "Connection",
            "proxy-authorization",
            "X-ORB-FUEL",
            "te",
            "Status",
        ] {
            assert!(!allowed_header(h), "{h}");
        }
        for h in [
            "content-type",
            "location",
            "cache-control",
            "x-powered-by",
            "allow",
        ] {
            assert!(allowed_header(h), "{h}");
        }
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(out in proptest::collection::vec(any::<u8>(), 0..2048)) {
            if let Ok(a) = parse(&out) {
                prop_assert!(a.body_start <= out.len());
                prop_assert!((200..=599).contains(&a.head.status));
                prop_assert!(a.head.headers.len() <= MAX_HEADERS);
                prop_assert!(a.head.headers.iter().all(|(k, _)| allowed_header(k)));
            }
        }

        #[test]
        fn header_like_lines_never_panic(
            lines in proptest::collection::vec("[A-Za-z:\\- \\r\\t0-9]{0,30}", 0..80),
            body in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut out = lines.join("\n").into_bytes();
            out.extend_from_slice(b"\n\n");
            out.extend_from_slice(&body);
            if let Ok(a) = parse(&out) {
                prop_assert!(a.body_start <= out.len());
                prop_assert!((200..=599).contains(&a.head.status));
            }
        }
    }
}
