//! An Orb function in plain Rust std: the request body, upper-cased.
//!
//! Build: `cargo build --release --target wasm32-wasip1`
//! Deploy: `orb-client deploy upper target/wasm32-wasip1/release/rust-upper.wasm`

use std::io::{Read, Write};

fn main() {
    let mut input = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("request body is not UTF-8 text: {e}");
        std::process::exit(2);
    }
    let out = input.to_uppercase();
    if std::io::stdout().write_all(out.as_bytes()).is_err() {
        std::process::exit(1);
    }
}
