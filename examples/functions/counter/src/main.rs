//! An Orb function with state: a counter shared by every replica.
//!
//! `POST` increments the key `count` atomically and prints the new value;
//! `GET` prints the current value (0 when unset). The output is just the
//! number.
//!
//! Build: `cargo build --release --target wasm32-wasip1`
//! Deploy: `orb-client deploy counter target/wasm32-wasip1/release/counter.wasm`

use orb_guest::kv;

const KEY: &str = "count";

fn main() {
    let method = std::env::var("REQUEST_METHOD").unwrap_or_default();
    let value = match method.as_str() {
        "POST" => kv::increment(KEY, 1),
        "GET" | "HEAD" => kv::counter(KEY),
        other => {
            eprintln!(
                "method {other:?} is not supported: GET reads the counter, POST increments it"
            );
            std::process::exit(2);
        }
    };
    match value {
        Ok(n) => print!("{n}"),
        Err(e) => {
            eprintln!("counter unavailable: {e}");
            std::process::exit(1);
        }
    }
}
