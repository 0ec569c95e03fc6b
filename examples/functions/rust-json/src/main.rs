//! An Orb function that transforms JSON with serde_json.
//!
//! Input: `{"name": "ada", "values": [1, 2, 3]}`.
//! Output: a greeting, the count, sum and mean of `values`, and what the
//! CGI-style environment told the function about the request.
//!
//! The greeting word comes from the `GREETING` environment variable
//! (`orb-client deploy --env GREETING=hi`), "hello" without it.

use std::collections::BTreeMap;
use std::io::Read;

use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Input {
    name: String,
    #[serde(default)]
    values: Vec<f64>,
}

#[derive(Serialize)]
struct Output {
    greeting: String,
    count: usize,
    sum: f64,
    mean: Option<f64>,
    function: String,
    method: String,
    query: String,
    request_id: String,
    args: Vec<String>,
    /// Request headers, as the `HTTP_*` variables that carry them.
    headers: BTreeMap<String, String>,
}

fn main() {
    let mut body = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut body) {
        eprintln!("cannot read the request body: {e}");
        std::process::exit(2);
    }
    let input: Input = match serde_json::from_str(&body) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("expected JSON like {{\"name\": \"ada\", \"values\": [1, 2]}}: {e}");
            std::process::exit(2);
        }
    };
    let sum: f64 = input.values.iter().sum();
    let count = input.values.len();
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    let word = std::env::var("GREETING").unwrap_or_else(|_| "hello".to_string());
    let out = Output {
        greeting: format!("{word}, {}", input.name),
        count,
        sum,
        mean: (count > 0).then(|| sum / count as f64),
        function: env("ORB_FUNCTION"),
        method: env("REQUEST_METHOD"),
        query: env("QUERY_STRING"),
        request_id: env("ORB_REQUEST_ID"),
        args: std::env::args().skip(1).collect(),
        headers: std::env::vars()
            .filter(|(k, _)| k.starts_with("HTTP_"))
            .collect(),
    };
    match serde_json::to_string(&out) {
        Ok(s) => println!("{s}"),
        Err(e) => {
            eprintln!("cannot encode the answer: {e}");
            std::process::exit(1);
        }
    }
}
