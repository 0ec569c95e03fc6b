//! An Orb function calling another: `?f=NAME` names the function to call
//! with this call's own input; its output is printed unchanged.
//!
//! When the callee fails (a status other than 2xx), its output is still
//! printed and this function exits with code 1, naming the status on
//! stderr. When the call cannot be made (no such function, too deep, out
//! of time), the reason goes to stderr and the exit code is 1.
//!
//! Build: `cargo build --release --target wasm32-wasip1`

use std::io::{Read, Write};

/// The value of `f` in a query string, percent-decoded.
fn target(query: &str) -> Option<String> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("f="))
        .map(percent_decode)
        .filter(|name| !name.is_empty())
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |at: usize| bytes.get(at).and_then(|b| char::from(*b).to_digit(16));
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(high), Some(low)) => {
                // Two hex digits are at most 0xff.
                out.push((high * 16 + low) as u8);
                i += 3;
                continue;
            }
            (b'+', _, _) => out.push(b' '),
            (b, _, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn main() {
    let query = std::env::var("QUERY_STRING").unwrap_or_default();
    let Some(name) = target(&query) else {
        eprintln!("name the function to call in the query: ?f=NAME");
        std::process::exit(2);
    };
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        eprintln!("reading the input failed: {e}");
        std::process::exit(1);
    }
    match orb_guest::call(&name, &input) {
        Ok(resp) => {
            if std::io::stdout().write_all(&resp.body).is_err() {
                std::process::exit(1);
            }
            if !resp.is_success() {
                eprintln!("{name} answered with status {}", resp.status);
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("calling {name} failed: {e}");
            std::process::exit(1);
        }
    }
}
