//! An Orb function that serves a static web site from its file bundle: the
//! request's PATH_INFO names a file under `/` (the bundle), answered as CGI
//! with a Content-Type by extension; a directory answers with its
//! `index.html` (redirecting `/dir` to `/dir/` first, so relative links
//! work), a missing file with the site's own `404.html` and status 404.
//!
//! Build: `cargo build --release --target wasm32-wasip1`
//! Deploy: `orb-client deploy target/wasm32-wasip1/release/static-site.wasm
//!          --name site --cgi --files site/`
//! Open:   `http://SUPER:7780/fn/site/`

use std::io::Write;
use std::path::Path;

fn main() {
    let method = std::env::var("REQUEST_METHOD").unwrap_or_default();
    let path = std::env::var("PATH_INFO").unwrap_or_default();
    let script = std::env::var("SCRIPT_NAME").unwrap_or_default();
    let out = match method.as_str() {
        "GET" | "HEAD" => serve(&script, &path),
        _ => answer(
            "405 Method Not Allowed",
            &[("Allow", "GET, HEAD"), ("Content-Type", "text/plain")],
            b"only GET and HEAD\n",
        ),
    };
    if std::io::stdout().write_all(&out).is_err() {
        std::process::exit(1);
    }
}

/// The CGI answer for a GET of `path` (below the site's root).
fn serve(script: &str, path: &str) -> Vec<u8> {
    // PATH_INFO is decoded: it names the file, and the bundle's preopen
    // refuses anything that would leave `/` (`..` above it) anyway.
    if path.split('/').any(|c| c == "..") {
        return not_found();
    }
    let rel = path.trim_start_matches('/');
    let file = Path::new("/").join(rel);
    if file.is_dir() {
        if !path.is_empty() && !path.ends_with('/') {
            let to = format!("{script}{path}/");
            return answer("301 Moved Permanently", &[("Location", &to)], b"");
        }
        if path.is_empty() {
            // `/fn/site` -> `/fn/site/`, so the page's relative links
            // resolve inside the function.
            let to = format!("{script}/");
            return answer("301 Moved Permanently", &[("Location", &to)], b"");
        }
        return match std::fs::read(file.join("index.html")) {
            Ok(body) => answer("200 OK", &[("Content-Type", "text/html; charset=utf-8")], &body),
            Err(_) => not_found(),
        };
    }
    match std::fs::read(&file) {
        Ok(body) => answer(
            "200 OK",
            &[
                ("Content-Type", content_type(rel)),
                ("Cache-Control", "max-age=60"),
            ],
            &body,
        ),
        Err(_) => not_found(),
    }
}

/// The site's own 404 page (or a plain one when it ships none).
fn not_found() -> Vec<u8> {
    let body = std::fs::read("/404.html")
        .unwrap_or_else(|_| b"<!doctype html><title>Not found</title><h1>Not found</h1>\n".to_vec());
    answer(
        "404 Not Found",
        &[("Content-Type", "text/html; charset=utf-8")],
        &body,
    )
}

/// Content-Type by file extension.
fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map_or("", |(_, e)| e).to_ascii_lowercase();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        "ico" => "image/x-icon",
        "webp" => "image/webp",
        "txt" | "md" => "text/plain; charset=utf-8",
        "xml" => "application/xml",
        "wasm" => "application/wasm",
        "woff2" => "font/woff2",
        _ => "application/octet-stream",
    }
}

/// A CGI answer: Status, headers, an empty line, the body.
fn answer(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("Status: {status}\n").into_bytes();
    for (k, v) in headers {
        out.extend_from_slice(format!("{k}: {v}\n").as_bytes());
    }
    out.push(b'\n');
    out.extend_from_slice(body);
    out
}
