//! A small JSON API as an Orb function, to show methods, sub-paths and
//! statuses (deployed with `--cgi`):
//!
//! | request                      | answer |
//! |------------------------------|--------|
//! | `GET /fn/notes/` (`?q=word`) | 200, the notes (those containing `word`) |
//! | `GET /fn/notes/ID`           | 200 the note, or 404 `{"error": ...}` |
//! | `POST /fn/notes/` (body)     | 201 + `Location: /fn/notes/ID` |
//! | `PUT`/`PATCH /fn/notes/ID`   | 200 the note as it would be |
//! | `DELETE /fn/notes/ID`        | 204, or 404 |
//! | `OPTIONS /fn/notes/...`      | 204 + `Allow` |
//! | `GET /fn/notes/_env[/...]`   | 200, the CGI variables the call saw |
//!
//! Calls keep no state (a function is stateless between calls), so the
//! notes are the seed below and a created note is echoed, not stored.
//!
//! Build: `cargo build --release --target wasm32-wasip1`
//! Deploy: `orb-client deploy target/wasm32-wasip1/release/notes.wasm --name notes --cgi`

use std::io::{Read, Write};

const NOTES: &[(&str, &str)] = &[
    ("1", "buy milk"),
    ("2", "water the plants"),
    ("3", "call the plumber about the milk stain"),
];
const ALLOW: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";
const ENV: &[&str] = &[
    "REQUEST_METHOD",
    "SCRIPT_NAME",
    "PATH_INFO",
    "QUERY_STRING",
    "CONTENT_TYPE",
    "CONTENT_LENGTH",
    "SERVER_NAME",
    "SERVER_PORT",
    "REMOTE_ADDR",
    "HTTP_X_NOTE",
    "ORB_FUNCTION",
    "ORB_REQUEST_ID",
];

fn main() {
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let (method, path, query, script) = (
        var("REQUEST_METHOD"),
        var("PATH_INFO"),
        var("QUERY_STRING"),
        var("SCRIPT_NAME"),
    );
    let mut body = String::new();
    let _ = std::io::stdin().read_to_string(&mut body);
    let id = path.trim_matches('/');
    let out = match (method.as_str(), id) {
        ("OPTIONS", _) => answer("204 No Content", &[("Allow", ALLOW)], ""),
        ("GET" | "HEAD", id) if id.split('/').next() == Some("_env") => {
            let fields: Vec<String> = ENV
                .iter()
                .map(|k| format!("{}:{}", json(k), json(&var(k))))
                .collect();
            ok(&format!("{{{}}}", fields.join(",")))
        }
        ("GET" | "HEAD", "") => {
            let word = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("q="))
                .unwrap_or("");
            let list: Vec<String> = NOTES
                .iter()
                .filter(|(_, text)| text.contains(word))
                .map(|(id, text)| note(id, text))
                .collect();
            ok(&format!("[{}]", list.join(",")))
        }
        ("GET" | "HEAD", id) => match find(id) {
            Some(text) => ok(&note(id, text)),
            None => missing(id),
        },
        ("POST", "") => {
            let text = body.trim();
            if text.is_empty() {
                answer(
                    "400 Bad Request",
                    &[("Content-Type", "application/json")],
                    r#"{"error":"a note needs some text"}"#,
                )
            } else {
                let new_id = (NOTES.len() + 1).to_string();
                let location = format!("{script}/{new_id}");
                answer(
                    "201 Created",
                    &[
                        ("Content-Type", "application/json"),
                        ("Location", &location),
                    ],
                    &note(&new_id, text),
                )
            }
        }
        ("PUT" | "PATCH", id) if !id.is_empty() => match find(id) {
            Some(_) => ok(&note(id, body.trim())),
            None => missing(id),
        },
        ("DELETE", id) if !id.is_empty() => match find(id) {
            Some(_) => answer("204 No Content", &[], ""),
            None => missing(id),
        },
        _ => answer(
            "405 Method Not Allowed",
            &[("Allow", ALLOW), ("Content-Type", "application/json")],
            &format!(r#"{{"error":{}}}"#, json(&format!("{method} {path} is not supported"))),
        ),
    };
    if std::io::stdout().write_all(out.as_bytes()).is_err() {
        std::process::exit(1);
    }
}

fn find(id: &str) -> Option<&'static str> {
    NOTES.iter().find(|(i, _)| *i == id).map(|(_, t)| *t)
}

fn note(id: &str, text: &str) -> String {
    format!(r#"{{"id":{},"text":{}}}"#, json(id), json(text))
}

fn ok(body: &str) -> String {
    answer("200 OK", &[("Content-Type", "application/json")], body)
}

fn missing(id: &str) -> String {
    answer(
        "404 Not Found",
        &[("Content-Type", "application/json")],
        &format!(r#"{{"error":{}}}"#, json(&format!("no note {id}"))),
    )
}

/// A CGI answer: Status, headers, an empty line, the body.
fn answer(status: &str, headers: &[(&str, &str)], body: &str) -> String {
    let mut out = format!("Status: {status}\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(body);
    out
}

/// A JSON string literal.
fn json(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
