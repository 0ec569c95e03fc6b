//! An Orb function that reaches out: the request body is a URL; it is
//! fetched with `GET` and the function prints `STATUS BYTES` (e.g.
//! `200 9`). A refused or failed fetch exits with code 1 and the reason on
//! stderr.
//!
//! The function's allow-list must name the host (`orb-client deploy fetch
//! fetch.wasm --allow-host example.com`), and it only runs on nodes that
//! allow outbound traffic.
//!
//! Build: `cargo build --release --target wasm32-wasip1`

use std::io::Read;

fn main() {
    let mut body = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut body) {
        eprintln!("the request body must be a URL in UTF-8: {e}");
        std::process::exit(2);
    }
    let url = body.trim();
    match orb_guest::http::get(url) {
        Ok(resp) => print!("{} {}", resp.status, resp.body.len()),
        Err(e) => {
            eprintln!("fetching {url} failed: {e}");
            std::process::exit(1);
        }
    }
}
