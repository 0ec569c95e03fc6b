//! Test support: build the real binaries, run them as processes on
//! loopback, and wait for their ready lines.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result, bail};

pub mod cdp;
mod shared;
pub use shared::*;

/// `true` when running in CI, where nothing may be skipped.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Skip a test with a reason, or fail when CI=true.
pub fn skip_or_fail(reason: &str) {
    if in_ci() {
        panic!("cannot run in CI: {reason}");
    }
    eprintln!("SKIPPED: {reason}");
}

/// Build `orb-super` and `orb-client` once (same profile as the tests) and
/// return the directory holding them.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let (dir, profile) = profile_dir().expect("target dir");
        build_binaries(&profile).unwrap_or_else(|e| panic!("building the binaries failed: {e:#}"));
        dir
    })
}

/// Path of a built binary.
pub fn bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// A free TCP port on loopback, for a node to bind later.
pub fn free_tcp() -> SocketAddr {
    free_port(|a| TcpListener::bind(a).is_ok())
}

/// A free UDP port on loopback, for a node to bind later.
pub fn free_udp() -> SocketAddr {
    free_port(|a| UdpSocket::bind(a).is_ok())
}

/// A port below the kernel's ephemeral range that is free now and was not
/// handed out before in this process.
///
/// Why not port 0: the OS then picks from the ephemeral range, the same
/// range every outgoing connection takes its source port from. Between
/// picking a port and the node binding it (and while a killed node is down
/// before its restart on the same port), any HTTP or QUIC connection of
/// the test's twenty processes could take it: CI saw "Address already in
/// use". Ports below the range are never taken implicitly.
fn free_port(bindable: impl Fn(SocketAddr) -> bool) -> SocketAddr {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};
    static TAKEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768)
        .clamp(12_000, 65_535);
    let (base, span) = (low - 10_000, 10_000);
    // Start somewhere different in each test process (test binaries may run
    // at the same time as other tools), then walk the range.
    let seed = std::process::id().wrapping_mul(7919)
        ^ (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos()));
    let _ = NEXT.compare_exchange(0, seed % span + 1, Ordering::Relaxed, Ordering::Relaxed);
    for _ in 0..span {
        let port = (base + NEXT.fetch_add(1, Ordering::Relaxed) % span) as u16;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
        if !taken.contains(&port) && bindable(addr) {
            taken.push(port);
            return addr;
        }
    }
    panic!("no free port in {base}..{}", base + span);
}

impl Proc {
    /// Start `bin args...` and wait for a stdout line starting with
    /// `ready_prefix`; `ORB_TEST_LOG` sets the node's `RUST_LOG`.
    pub fn start(name: &str, bin: &Path, args: &[String], ready_prefix: &str) -> Result<Proc> {
        let mut cmd = Command::new(bin);
        cmd.args(args);
        Proc::spawn(name, cmd, bin, "ORB_TEST_LOG", ready_prefix)
    }
}

/// Start a super node.
pub fn start_super(
    data: &Path,
    quic: SocketAddr,
    http: SocketAddr,
    extra: &[&str],
) -> Result<Proc> {
    let mut args: Vec<String> = vec![
        "run".into(),
        "--data-dir".into(),
        data.display().to_string(),
        "--listen".into(),
        quic.to_string(),
        "--http".into(),
        http.to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    Proc::start("super", &bin("orb-super"), &args, "orb-super ready ")
}

/// Start a client daemon attached to `supers`.
pub fn start_client(
    data: &Path,
    api: SocketAddr,
    supers: &[String],
    capacity: usize,
) -> Result<Proc> {
    let mut args: Vec<String> = vec![
        "--api".into(),
        api.to_string(),
        "daemon".into(),
        "--data-dir".into(),
        data.display().to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--capacity".into(),
        capacity.to_string(),
    ];
    for s in supers {
        args.push("--super".into());
        args.push(s.clone());
    }
    Proc::start("client", &bin("orb-client"), &args, "orb-client ready ")
}

/// Run `orb-client --api API args...` to completion, feeding `stdin`.
pub fn client_cmd(
    api: SocketAddr,
    args: &[&str],
    stdin: Option<&[u8]>,
) -> Result<std::process::Output> {
    use std::io::Write;
    let mut child = Command::new(bin("orb-client"))
        .arg("--api")
        .arg(api.to_string())
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(input) = stdin {
        let mut si = child.stdin.take().context("stdin")?;
        si.write_all(input)?;
    }
    Ok(child.wait_with_output()?)
}

/// `orb-client --api API deploy FILE --name NAME EXTRA...`, which must
/// succeed; its standard output.
pub fn deploy(api: SocketAddr, file: &Path, name: &str, extra: &[&str]) -> Result<String> {
    let path = file.to_str().context("utf-8 path")?;
    let mut args = vec!["deploy", path, "--name", name];
    args.extend_from_slice(extra);
    let out = client_cmd(api, &args, None)?;
    if !out.status.success() {
        bail!(
            "deploy {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The local API token of the daemon whose API is at `api` (found as the
/// CLI finds it: the daemon recorded where its data directory is).
pub fn api_token(api: SocketAddr) -> String {
    orb_node::local_api::find_token(api.port())
        .unwrap_or_else(|e| panic!("no API token for {api}: {e}"))
}

/// The `x-orb-node` header of a gateway answer (empty when missing).
pub fn node_header(r: &reqwest::Response) -> String {
    r.headers()
        .get("x-orb-node")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// An HTTP client that ignores proxies.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client")
}

/// GET a JSON document.
pub async fn get_json(url: &str) -> Result<serde_json::Value> {
    let r = http().get(url).send().await?;
    let status = r.status();
    let text = r.text().await?;
    if !status.is_success() {
        bail!("GET {url}: {status}: {text}");
    }
    Ok(serde_json::from_str(&text)?)
}

/// The example WAT function compiled to a .wasm file in `dir`.
pub fn hello_wasm(dir: &Path) -> PathBuf {
    let wasm =
        wat::parse_file(root().join("examples/functions/hello.wat")).expect("hello.wat parses");
    let path = dir.join("hello.wasm");
    std::fs::write(&path, wasm).expect("write hello.wasm");
    path
}

/// Compile WAT text to a .wasm file in `dir`.
pub fn wat_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let wasm = wat::parse_str(text).expect("valid wat");
    let path = dir.join(name);
    std::fs::write(&path, wasm).expect("write wasm");
    path
}

/// Build a Rust example function for wasm32-wasip1; `None` (after printing
/// why) when the target is not installed and we are not in CI.
pub fn rust_function(name: &str) -> Option<PathBuf> {
    let manifest = root()
        .join("examples/functions")
        .join(name)
        .join("Cargo.toml");
    let target_dir = root().join("target/wasm-functions");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip1",
            "--manifest-path",
        ])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target_dir)
        .output()
        .expect("run cargo");
    if !out.status.success() {
        skip_or_fail(&format!(
            "cannot build {name} for wasm32-wasip1 (rustup target add wasm32-wasip1): {}",
            String::from_utf8_lossy(&out.stderr)
        ));
        return None;
    }
    let bin = name.replace('-', "_");
    let direct = target_dir
        .join("wasm32-wasip1/release")
        .join(format!("{name}.wasm"));
    let alt = target_dir
        .join("wasm32-wasip1/release")
        .join(format!("{bin}.wasm"));
    Some(if direct.exists() { direct } else { alt })
}

/// Build `examples/functions/NAME/*.c` with clang + wasi-libc into
/// `target/wasm-functions/NAME.wasm`. Skips (fails under CI) when the C
/// toolchain for WASI is missing.
#[allow(dead_code)]
pub fn c_function(name: &str) -> Option<PathBuf> {
    let dir = root().join("examples/functions").join(name);
    let out_dir = root().join("target/wasm-functions");
    std::fs::create_dir_all(&out_dir).expect("create target/wasm-functions");
    let out = out_dir.join(format!("{name}.wasm"));
    let sources: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("read example dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "c"))
        .collect();
    let res = Command::new("clang")
        .args(["--target=wasm32-wasi", "--sysroot=/usr", "-O2", "-o"])
        .arg(&out)
        .args(&sources)
        .output();
    match res {
        Ok(o) if o.status.success() => Some(out),
        Ok(o) => {
            skip_or_fail(&format!(
                "cannot build {name} with clang for wasm32-wasi (apt install clang lld wasi-libc libclang-rt-14-dev-wasm32): {}",
                String::from_utf8_lossy(&o.stderr)
            ));
            None
        }
        Err(e) => {
            skip_or_fail(&format!(
                "clang not found ({e}); apt install clang lld wasi-libc libclang-rt-14-dev-wasm32"
            ));
            None
        }
    }
}

/// A copy of the `hello` module with a custom section naming `tag`, in the
/// same directory. Replicas are per module hash, so deploys of the same
/// bytes share replicas; a custom section changes the hash
/// and nothing else.
pub fn tagged_module(wasm: &Path, tag: &str) -> Result<PathBuf> {
    fn leb128(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let mut bytes = std::fs::read(wasm).with_context(|| format!("reading {wasm:?}"))?;
    let name = b"orb-test-tag";
    let mut content = Vec::new();
    leb128(name.len(), &mut content);
    content.extend_from_slice(name);
    content.extend_from_slice(tag.as_bytes());
    bytes.push(0); // custom section
    leb128(content.len(), &mut bytes);
    bytes.extend_from_slice(&content);
    let path = wasm.with_file_name(format!("{tag}.wasm"));
    std::fs::write(&path, bytes).with_context(|| format!("writing {path:?}"))?;
    Ok(path)
}

/// One sample of a super's or client's `/metrics`, by its series as it is
/// written there (`name` or `name{label="value"}`); 0 when absent.
pub async fn metric(http_addr: SocketAddr, series: &str) -> Result<f64> {
    let url = format!("http://{http_addr}/metrics");
    let text = http().get(&url).send().await?.text().await?;
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series)
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .unwrap_or(0.0))
}

/// WAT text of a module that writes `out` to stdout and exits 0: a
/// function whose whole answer is fixed (e.g. a CGI header block).
pub fn print_wat(out: &[u8]) -> String {
    let data: String = out.iter().map(|b| format!("\\{b:02x}")).collect();
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") {pages})
  (data (i32.const 64) "{data}")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const {len}))
    (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#,
        pages = out.len() / 65536 + 1,
        len = out.len()
    )
}

/// A `multipart/form-data` body of `(part name, file name, bytes)` parts,
/// and its content type: what a browser sends when it uploads files.
pub fn multipart(parts: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "orb-test-boundary-7c1f2a";
    let mut body = Vec::new();
    for (name, file, data) in parts {
        let file = file
            .map(|f| format!("; filename=\"{f}\""))
            .unwrap_or_default();
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"{file}\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}
