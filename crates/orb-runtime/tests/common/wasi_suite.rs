//! The official WASI test suite's preview 1 tests (vendored in
//! `tests/wasi-testsuite/`): finding them, reading their specifications and
//! judging a run, following the suite's `doc/specification.md` (legacy
//! format: `args`, `env`, `root`, `exit_code`, `stdout`).
//!
//! Shared by `crates/orb-runtime/tests/wasi_testsuite.rs` (through the
//! runtime) and end-to-end runners (through deployed functions): include it
//! with `#[path = ".../crates/orb-runtime/tests/common/wasi_suite.rs"] mod
//! wasi_suite;`. Needs `serde_json` as a dev-dependency.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The three preview 1 suites, in the order they are run.
pub const SUITES: &[&str] = &["rust", "c", "assemblyscript"];

/// What a test expects, from its JSON file (or the defaults without one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spec {
    /// Arguments after argv[0].
    pub args: Vec<String>,
    /// The environment, exactly (sorted by name).
    pub env: Vec<(String, String)>,
    /// A directory to preopen as `/`.
    pub root: Option<PathBuf>,
    /// The exit code expected (default 0).
    pub exit_code: i32,
    /// What stdout must start with, when given (the reference runner reads
    /// exactly that many bytes).
    pub stdout: Option<String>,
}

/// One test: `suite/name`.
#[derive(Debug, Clone)]
pub struct Case {
    /// "rust", "c" or "assemblyscript".
    pub suite: String,
    /// File stem of the test.
    pub name: String,
    /// The module.
    pub wasm: PathBuf,
    /// Its expectations.
    pub spec: Spec,
}

impl Case {
    /// `suite/name`, as the known-failure lists spell it.
    pub fn id(&self) -> String {
        format!("{}/{}", self.suite, self.name)
    }
}

/// The vendored suite: `tests/wasi-testsuite` in the first ancestor of
/// `start` (pass `env!("CARGO_MANIFEST_DIR")`) that has one.
pub fn find_suite(start: &Path) -> PathBuf {
    let mut at = Some(start);
    while let Some(dir) = at {
        let candidate = dir.join("tests").join("wasi-testsuite");
        if candidate.is_dir() {
            return candidate;
        }
        at = dir.parent();
    }
    panic!("tests/wasi-testsuite not found above {}", start.display());
}

/// Parse a test's JSON specification; `json_dir` is where the file lives
/// (`root` is relative to it).
pub fn parse_spec(json: &str, json_dir: &Path) -> Result<Spec, String> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let obj = v.as_object().ok_or("specification is not a JSON object")?;
    let mut spec = Spec::default();
    if let Some(args) = obj.get("args") {
        spec.args = args
            .as_array()
            .ok_or("args is not a list")?
            .iter()
            .map(|a| {
                a.as_str()
                    .map(str::to_string)
                    .ok_or("an argument is not a string")
            })
            .collect::<Result<_, _>>()?;
    }
    if let Some(env) = obj.get("env") {
        let map = env.as_object().ok_or("env is not an object")?;
        for (k, v) in map {
            let v = v.as_str().ok_or("an environment value is not a string")?;
            spec.env.push((k.clone(), v.to_string()));
        }
        spec.env.sort();
    }
    if let Some(root) = obj.get("root").and_then(|r| r.as_str()) {
        spec.root = Some(json_dir.join(root));
    }
    if let Some(code) = obj.get("exit_code") {
        let code = code.as_i64().ok_or("exit_code is not a number")?;
        spec.exit_code = i32::try_from(code).map_err(|_| "exit_code out of range")?;
    }
    if let Some(out) = obj.get("stdout") {
        spec.stdout = Some(out.as_str().ok_or("stdout is not a string")?.to_string());
    }
    for key in obj.keys() {
        if !["args", "env", "root", "exit_code", "stdout", "stderr"].contains(&key.as_str()) {
            return Err(format!("unsupported specification key {key:?}"));
        }
    }
    Ok(spec)
}

/// Every test of the suites under `suite_dir`, sorted by suite then name.
pub fn cases(suite_dir: &Path) -> Vec<Case> {
    let mut out = Vec::new();
    for suite in SUITES {
        let dir = suite_dir.join(suite);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".wasm").map(str::to_string)
            })
            .collect();
        names.sort();
        for name in names {
            let json = dir.join(format!("{name}.json"));
            let spec = match std::fs::read_to_string(&json) {
                Ok(text) => {
                    parse_spec(&text, &dir).unwrap_or_else(|e| panic!("{}: {e}", json.display()))
                }
                Err(_) => Spec::default(),
            };
            out.push(Case {
                suite: suite.to_string(),
                wasm: dir.join(format!("{name}.wasm")),
                name,
                spec,
            });
        }
    }
    out
}

/// Judge a run: `exit_code` is `None` when the module did not exit (a
/// trap, a limit); `detail` says what happened then.
pub fn judge(
    spec: &Spec,
    exit_code: Option<i32>,
    stdout: &[u8],
    detail: &str,
) -> Result<(), String> {
    match exit_code {
        Some(code) if code == spec.exit_code => {}
        Some(code) => {
            return Err(format!(
                "exit code {code}, expected {}: {detail}",
                spec.exit_code
            ));
        }
        None => return Err(format!("did not exit ({detail})")),
    }
    if let Some(want) = &spec.stdout
        && !stdout.starts_with(want.as_bytes())
    {
        return Err(format!(
            "stdout {:?} does not start with {want:?}",
            String::from_utf8_lossy(stdout)
        ));
    }
    Ok(())
}

#[test]
fn specs_parse_like_the_reference_runner() {
    let dir = Path::new("/suite/rust");
    let spec = parse_spec(
        r#"{"root": "fs-tests.dir", "args": ["a"], "env": {"b": "2", "a": "1"}, "exit_code": 3, "stdout": "hi"}"#,
        dir,
    )
    .expect("valid spec");
    assert_eq!(spec.root, Some(dir.join("fs-tests.dir")));
    assert_eq!(spec.args, ["a"]);
    assert_eq!(
        spec.env,
        [("a".into(), "1".into()), ("b".into(), "2".into())]
    );
    assert_eq!(judge(&spec, Some(3), b"hi there", ""), Ok(()));
    assert!(judge(&spec, Some(0), b"hi", "").is_err());
    assert!(judge(&spec, Some(3), b"h", "").is_err());
    assert!(judge(&spec, None, b"hi", "trapped").is_err());
    assert!(parse_spec(r#"{"operations": []}"#, dir).is_err());
    assert_eq!(parse_spec("{}", dir), Ok(Spec::default()));
}
