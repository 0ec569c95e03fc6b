//! Functions as HTTP backends, end to end on one network of two supers (A,
//! B bootstrapped from A) and two clients (c1 on A, c2 on B): every
//! method, sub-paths with percent-encoding, statuses and headers from a
//! CGI function, HEAD, raw functions with and without `--content-type`,
//! calls forwarded between the supers, file bundles placed across supers,
//! the local API's `invoke` with methods, paths and headers, uploads of
//! files as a browser sends them, and the bad inputs (bundles over the
//! bounds, paths escaping the bundle, writing past the scratch space,
//! broken CGI header blocks): clear errors, the nodes keep serving, and
//! nothing is stored for a refused deploy. Then the official WASI test
//! suite's preopened-directory tests, each deployed as a function with its
//! directory as `--files` and called through a gateway.

mod common;

#[path = "../crates/orb-runtime/tests/common/wasi_suite.rs"]
mod wasi_suite;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use common::*;

/// Generous bound for anything to settle on a loaded machine.
const SETTLE: Duration = Duration::from_secs(60);

/// Opens `/big` in the bundle and writes 64 KiB at a time until a write
/// fails; exits with that errno (ENOSPC is 51).
const SCRATCH_BOMB_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 2)
  (data (i32.const 16) "big")
  (func (export "_start") (local $e i32)
    (local.set $e (call $open (i32.const 3) (i32.const 0) (i32.const 16) (i32.const 3)
      (i32.const 1) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 8)))
    (if (local.get $e) (then (call $exit (i32.add (i32.const 100) (local.get $e)))))
    (i32.store (i32.const 32) (i32.const 65536))
    (i32.store (i32.const 36) (i32.const 65536))
    (loop $l
      (local.set $e (call $write (i32.load (i32.const 8)) (i32.const 32) (i32.const 1) (i32.const 40)))
      (if (local.get $e) (then (call $exit (local.get $e))))
      (br $l))))"#;

struct Net {
    _tmp: tempfile::TempDir,
    _procs: Vec<Proc>,
    gw_a: SocketAddr,
    gw_b: SocketAddr,
    api1: SocketAddr,
    api2: SocketAddr,
    dir: std::path::PathBuf,
}

async fn network() -> Result<Net> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().to_path_buf();
    let (quic_a, gw_a) = (free_udp(), free_tcp());
    let (quic_b, gw_b) = (free_udp(), free_tcp());
    // A takes bundles of 1 MiB at most, so a larger one is refused there.
    let sup_a = start_super(
        &dir.join("sa"),
        quic_a,
        gw_a,
        &["--max-bundle-bytes", "1048576"],
    )?;
    let peer_a = format!("{}@{quic_a}", sup_a.field("id"));
    let sup_b = start_super(&dir.join("sb"), quic_b, gw_b, &["--bootstrap", &peer_a])?;
    let peer_b = format!("{}@{quic_b}", sup_b.field("id"));
    let (api1, api2) = (free_tcp(), free_tcp());
    let c1 = start_client(&dir.join("c1"), api1, &[peer_a], 4)?;
    let c2 = start_client(&dir.join("c2"), api2, &[peer_b], 4)?;
    for gw in [gw_a, gw_b] {
        wait_for("a client on each super", SETTLE, || async {
            let v = get_json(&format!("http://{gw}/api/nodes")).await?;
            Ok((v.as_array().map_or(0, |a| a.len()) == 1).then_some(()))
        })
        .await?;
    }
    wait_for("the supers know each other", SETTLE, || async {
        let v = get_json(&format!("http://{gw_a}/api/dht")).await?;
        Ok((v["routing_table"].as_array().map_or(0, |a| a.len()) >= 1).then_some(()))
    })
    .await?;
    Ok(Net {
        _tmp: tmp,
        _procs: vec![sup_a, sup_b, c1, c2],
        gw_a,
        gw_b,
        api1,
        api2,
        dir,
    })
}

/// An answer: status, headers, body.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client")
}

/// The API token when `url` is a client daemon's local API (supers'
/// gateways need none).
fn daemon_token(url: &str) -> Option<String> {
    let url = reqwest::Url::parse(url).ok()?;
    if !url.path().starts_with("/api/") {
        return None;
    }
    orb_node::local_api::find_token(url.port()?).ok()
}

async fn send(method: &str, url: &str, body: &str) -> Result<Answer> {
    let m = reqwest::Method::from_bytes(method.as_bytes())?;
    let mut req = no_redirects()
        .request(m, url)
        .header("x-note", "from the test");
    if let Some(token) = daemon_token(url) {
        req = req.bearer_auth(token);
    }
    let r = req
        .body(body.to_string())
        .send()
        .await
        .with_context(|| format!("{method} {url}"))?;
    Ok(Answer {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.text().await?,
    })
}

/// `method url` until it answers `status` (a replica may still be on its
/// way), then that answer.
async fn expect(method: &str, url: &str, body: &str, status: u16) -> Result<Answer> {
    wait_for(&format!("{method} {url} -> {status}"), SETTLE, || async {
        let a = send(method, url, body).await?;
        if a.status == status {
            return Ok(Some(a));
        }
        if a.status == 502 || (a.status == 404 && a.header("x-orb-error") == "NotFound") {
            // Not placed or resolvable yet.
            bail!("{}: {}", a.status, a.body);
        }
        bail!("answered {} {:?}: {}", a.status, a.headers, a.body)
    })
    .await
}

fn deploy_fails(api: SocketAddr, args: &[&str]) -> Result<String> {
    let out = client_cmd(api, args, None)?;
    if out.status.success() {
        bail!(
            "deploy {args:?} succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(String::from_utf8_lossy(&out.stderr).into_owned())
}

async fn function_names(gw: SocketAddr) -> Result<Vec<String>> {
    let v = get_json(&format!("http://{gw}/api/functions")).await?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["name"].as_str().map(str::to_string))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_are_http_backends() -> Result<()> {
    let Some(notes) = rust_function("notes") else {
        return Ok(());
    };
    let Some(site) = rust_function("static-site") else {
        return Ok(());
    };
    let net = network().await?;
    let (gw_a, gw_b) = (net.gw_a, net.gw_b);
    let site_dir = root().join("examples/functions/static-site/site");

    // notes: CGI, one replica on c1 (behind A). static-site: CGI with
    // files, deployed through B with two replicas, one of them placed
    // through A (which fetches module and bundle from B).
    deploy(
        net.api1,
        &notes,
        "notes",
        &["--cgi", "--replicas", "1", "--here"],
    )?;
    let site_dir_s = site_dir.to_str().context("utf-8 path")?;
    let out = deploy(
        net.api2,
        &site,
        "site",
        &["--cgi", "--files", site_dir_s, "--replicas", "2", "--json"],
    )?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    assert_eq!(
        v["placed_on"].as_array().map_or(0, |a| a.len()),
        2,
        "site on both clients: {v}"
    );

    // Every method, at A's gateway (replica local) and B's (forwarded).
    for gw in [gw_a, gw_b] {
        let base = format!("http://{gw}/fn/notes");
        let a = expect("GET", &format!("{base}/"), "", 200).await?;
        assert_eq!(a.header("content-type"), "application/json");
        assert!(a.body.contains("buy milk"), "{}", a.body);
        assert!(!a.header("x-orb-node").is_empty(), "x-orb-node still set");
        let a = expect("GET", &format!("{base}/?q=plants"), "", 200).await?;
        assert!(
            a.body.contains("water") && !a.body.contains("milk"),
            "{}",
            a.body
        );
        let a = expect("GET", &format!("{base}/2"), "", 200).await?;
        assert!(a.body.contains("water the plants"), "{}", a.body);
        let a = expect("GET", &format!("{base}/x"), "", 404).await?;
        assert_eq!(a.body, r#"{"error":"no note x"}"#);
        assert_eq!(a.header("content-type"), "application/json");
        let a = expect("POST", &format!("{base}/"), "new note", 201).await?;
        assert_eq!(a.header("location"), "/fn/notes/4");
        assert!(a.body.contains("new note"), "{}", a.body);
        expect("POST", &format!("{base}/"), "", 400).await?;
        let a = expect("PUT", &format!("{base}/1"), "oat milk", 200).await?;
        assert!(a.body.contains("oat milk"), "{}", a.body);
        expect("PATCH", &format!("{base}/3"), "plumber", 200).await?;
        expect("PATCH", &format!("{base}/9"), "x", 404).await?;
        let a = expect("DELETE", &format!("{base}/1"), "", 204).await?;
        assert!(a.body.is_empty());
        expect("DELETE", &format!("{base}/9"), "", 404).await?;
        let a = expect("OPTIONS", &format!("{base}/1"), "", 204).await?;
        assert_eq!(
            a.header("allow"),
            "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
        );
        let a = expect("TRACE", &format!("{base}/1"), "", 405).await?;
        assert!(a.body.contains("TRACE"), "{}", a.body);
        // HEAD: GET's status and headers, its length, no body.
        let get = expect("GET", &format!("{base}/2"), "", 200).await?;
        let head = expect("HEAD", &format!("{base}/2"), "", 200).await?;
        assert!(head.body.is_empty());
        assert_eq!(head.header("content-type"), "application/json");
        assert_eq!(head.header("content-length"), get.body.len().to_string());

        // RFC 3875 variables: PATH_INFO percent-decoded, the query kept.
        let a = expect("GET", &format!("{base}/_env/a%20b/c?x=1&y=%41"), "", 200).await?;
        let env: serde_json::Value = serde_json::from_str(&a.body)?;
        assert_eq!(env["REQUEST_METHOD"], "GET");
        assert_eq!(env["PATH_INFO"], "/_env/a b/c");
        assert_eq!(env["QUERY_STRING"], "x=1&y=%41");
        assert_eq!(env["SCRIPT_NAME"], "/fn/notes");
        assert_eq!(env["SERVER_NAME"], "127.0.0.1");
        assert_eq!(env["SERVER_PORT"], gw.port().to_string());
        assert_eq!(env["REMOTE_ADDR"], "127.0.0.1");
        assert_eq!(env["HTTP_X_NOTE"], "from the test");
        assert_eq!(env["ORB_FUNCTION"], "notes");
        assert_eq!(env["ORB_REQUEST_ID"], a.header("x-orb-request-id"));

        // The static site, from its bundle, through either super.
        let base = format!("http://{gw}/fn/site");
        let a = expect("GET", &base, "", 301).await?;
        assert_eq!(a.header("location"), "/fn/site/");
        let a = expect("GET", &format!("{base}/"), "", 200).await?;
        assert_eq!(a.header("content-type"), "text/html; charset=utf-8");
        assert!(a.body.contains("Hello from a function"), "{}", a.body);
        for (path, ctype, needle) in [
            ("style.css", "text/css; charset=utf-8", "background-color"),
            (
                "app.js",
                "text/javascript; charset=utf-8",
                "getComputedStyle",
            ),
            ("logo.svg", "image/svg+xml", "<svg"),
            ("docs/data.json", "application/json", "served_by"),
            ("docs/notes.txt", "text/plain; charset=utf-8", "Plain text"),
            ("docs/", "text/html; charset=utf-8", "sub-directory"),
        ] {
            let a = expect("GET", &format!("{base}/{path}"), "", 200).await?;
            assert_eq!(a.header("content-type"), ctype, "{path}");
            assert!(a.body.contains(needle), "{path}: {}", a.body);
        }
        let a = expect("GET", &format!("{base}/dot.png"), "", 200).await?;
        assert_eq!(a.header("content-type"), "image/png");
        let a = expect("GET", &format!("{base}/docs"), "", 301).await?;
        assert_eq!(a.header("location"), "/fn/site/docs/");
        let a = expect("GET", &format!("{base}/nothing/here.html"), "", 404).await?;
        assert!(
            a.body.contains("not in the bundle"),
            "its own 404: {}",
            a.body
        );
        expect("POST", &format!("{base}/"), "", 405).await?;
    }

    // The local API's invoke: methods, paths, headers, statuses.
    let out = client_cmd(
        net.api2,
        &["invoke", "notes", "--method", "GET", "--path", "/2"],
        None,
    )?;
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("water the plants"));
    let out = client_cmd(
        net.api2,
        &["invoke", "notes", "--method", "get", "--path", "/9"],
        None,
    )?;
    assert!(!out.status.success(), "a 404 is a failure for the CLI");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no note 9"),
        "{out:?}"
    );
    let out = client_cmd(
        net.api1,
        &[
            "invoke",
            "notes",
            "--method",
            "GET",
            "--path",
            "_env/x%2Fy?k=v",
            "--header",
            "X-Note: via the CLI",
            "--json",
        ],
        None,
    )?;
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(v["status"], 200);
    assert_eq!(v["headers"]["content-type"], "application/json");
    let env: serde_json::Value = serde_json::from_str(v["output"].as_str().context("output")?)?;
    assert_eq!(env["PATH_INFO"], "/_env/x/y");
    assert_eq!(env["QUERY_STRING"], "k=v");
    assert_eq!(env["HTTP_X_NOTE"], "via the CLI");
    let out = client_cmd(
        net.api1,
        &[
            "invoke", "notes", "--method", "POST", "--input", "-", "--json",
        ],
        Some(b"from stdin"),
    )?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(v["status"], 201, "{v}");
    assert_eq!(v["headers"]["location"], "/fn/notes/4");
    // Any method on the local API directly, with a sub-path.
    let a = expect(
        "DELETE",
        &format!("http://{}/api/invoke/notes/2", net.api2),
        "",
        204,
    )
    .await?;
    assert!(!a.header("x-orb-node").is_empty());

    // Raw functions: octet-stream by default, --content-type when given;
    // any method reaches them.
    let hello = hello_wasm(&net.dir);
    deploy(net.api1, &hello, "raw", &["--replicas", "1"])?;
    let typed = tagged_module(&hello, "typed")?;
    deploy(
        net.api1,
        &typed,
        "typed",
        &[
            "--replicas",
            "1",
            "--content-type",
            "text/plain; charset=utf-8",
        ],
    )?;
    for gw in [gw_a, gw_b] {
        let a = expect("POST", &format!("http://{gw}/fn/raw"), "world", 200).await?;
        assert_eq!(a.body, "hello, world");
        assert_eq!(a.header("content-type"), "application/octet-stream");
        let a = expect("PUT", &format!("http://{gw}/fn/typed/any/path"), "you", 200).await?;
        assert_eq!(a.body, "hello, you");
        assert_eq!(a.header("content-type"), "text/plain; charset=utf-8");
        let a = expect("HEAD", &format!("http://{gw}/fn/typed"), "", 200).await?;
        assert!(a.body.is_empty());
        assert_eq!(a.header("content-length"), "7");
    }
    let err = deploy_fails(
        net.api1,
        &[
            "deploy",
            path(&hello)?,
            "--name",
            "badtype",
            "--content-type",
            "not a type",
        ],
    )?;
    assert!(err.contains("not a media type"), "{err}");

    // Broken CGI answers: 502 naming the problem; the nodes keep serving.
    for (name, out, problem) in [
        (
            "cgi-999",
            &b"Status: 999\nContent-Type: text/plain\n\nx"[..],
            "999",
        ),
        ("cgi-abc", &b"Status: abc\n\nx"[..], "abc"),
        (
            "cgi-endless",
            &b"Content-Type: text/plain\nX-A: b\nno blank line"[..],
            "never ends",
        ),
        (
            "cgi-html",
            &b"<html>no header block</html>\n\n"[..],
            "Name: value",
        ),
    ] {
        let wasm = wat_file(&net.dir, &format!("{name}.wasm"), &print_wat(out));
        deploy(net.api1, &wasm, name, &["--cgi", "--replicas", "1"])?;
        let a = expect("GET", &format!("http://{gw_b}/fn/{name}"), "", 502).await?;
        assert!(a.body.contains("invalid CGI answer"), "{name}: {}", a.body);
        assert!(a.body.contains(problem), "{name}: {}", a.body);
    }
    let mut big = b"Content-Type: text/plain\n".to_vec();
    while big.len() < 20_000 {
        big.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n");
    }
    let wasm = wat_file(&net.dir, "cgi-big.wasm", &print_wat(&big));
    deploy(net.api1, &wasm, "cgi-big", &["--cgi", "--replicas", "1"])?;
    let a = expect("GET", &format!("http://{gw_a}/fn/cgi-big"), "", 502).await?;
    assert!(
        a.body.contains("more than 64 header lines") || a.body.contains("over 16384 bytes"),
        "{}",
        a.body
    );
    // A function's hop-by-hop and x-orb-* headers never reach the caller.
    let wasm = wat_file(
        &net.dir,
        "cgi-hop.wasm",
        &print_wat(b"Status: 418 Teapot\nContent-Type: text/plain\nConnection: close\nX-Orb-Node: forged\nX-Kept: yes\n\nshort and stout"),
    );
    deploy(net.api1, &wasm, "cgi-hop", &["--cgi", "--replicas", "1"])?;
    let a = expect("GET", &format!("http://{gw_b}/fn/cgi-hop"), "", 418).await?;
    assert_eq!(a.body, "short and stout");
    assert_eq!(a.header("x-kept"), "yes");
    assert_ne!(a.header("x-orb-node"), "forged");
    assert!(!a.header("x-orb-node").is_empty());

    // Writing past the scratch space: ENOSPC (51) to the function, which
    // exits with it; the stderr excerpt says why.
    let small = net.dir.join("small");
    std::fs::create_dir_all(&small)?;
    std::fs::write(small.join("seed.txt"), "seed")?;
    let wasm = wat_file(&net.dir, "scratch.wasm", SCRATCH_BOMB_WAT);
    deploy(
        net.api1,
        &wasm,
        "scratch",
        &["--files", path(&small)?, "--replicas", "1"],
    )?;
    let a = expect("POST", &format!("http://{gw_a}/fn/scratch"), "", 500).await?;
    assert!(a.body.contains("exit code 51"), "{}", a.body);
    assert!(a.body.contains("scratch"), "{}", a.body);

    // Bad bundles: nothing is stored, the nodes keep serving.
    let escaping = net.dir.join("escaping");
    std::fs::create_dir_all(&escaping)?;
    std::os::unix::fs::symlink("/etc/passwd", escaping.join("passwd"))?;
    let err = deploy_fails(
        net.api1,
        &[
            "deploy",
            path(&hello)?,
            "--name",
            "esc1",
            "--files",
            path(&escaping)?,
        ],
    )?;
    assert!(err.contains("absolute path"), "{err}");
    std::fs::remove_file(escaping.join("passwd"))?;
    std::os::unix::fs::symlink("../../secret", escaping.join("up"))?;
    let err = deploy_fails(
        net.api1,
        &[
            "deploy",
            path(&hello)?,
            "--name",
            "esc2",
            "--files",
            path(&escaping)?,
        ],
    )?;
    assert!(err.contains("outside the bundled directory"), "{err}");
    let err = deploy_fails(
        net.api1,
        &[
            "deploy",
            path(&hello)?,
            "--name",
            "big1",
            "--files",
            site_dir_s,
            "--max-bundle-bytes",
            "1000",
        ],
    )?;
    assert!(err.contains("the limit is 1,000"), "{err}");
    // Over A's own bound (1 MiB), though within the CLI's and c1's.
    let large = net.dir.join("large");
    std::fs::create_dir_all(&large)?;
    std::fs::write(large.join("blob.bin"), vec![7u8; 2 * 1024 * 1024])?;
    let err = deploy_fails(
        net.api1,
        &[
            "deploy",
            path(&hello)?,
            "--name",
            "big2",
            "--files",
            path(&large)?,
        ],
    )?;
    assert!(err.contains("over this node's 1048576-byte limit"), "{err}");
    assert!(err.contains("413"), "{err}");
    // A browser's upload: the module and the files one by one, paths as
    // file names. One escaping path refuses the whole upload.
    let module = std::fs::read(&notes)?;
    let upload = |parts: &[(&str, Option<&str>, &[u8])], name: &str| {
        let (ctype, body) = multipart(parts);
        let url = format!(
            "http://{}/api/deploy?name={name}&replicas=1&cgi=1",
            net.api1
        );
        async move {
            let r = http()
                .post(url)
                .bearer_auth(api_token(net.api1))
                .header("content-type", ctype)
                .body(body)
                .send()
                .await?;
            Ok::<_, anyhow::Error>((r.status().as_u16(), r.text().await?))
        }
    };
    let (status, text) = upload(
        &[
            ("module", Some("notes.wasm"), &module[..]),
            ("file", Some("../evil.txt"), &b"x"[..]),
        ],
        "evil",
    )
    .await?;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("evil.txt"), "{text}");
    let (status, text) = upload(
        &[
            ("module", Some("notes.wasm"), &module[..]),
            (
                "file",
                Some("index.html"),
                &b"<p>picked in a browser</p>"[..],
            ),
            ("file", Some("css/a.css"), &b"p{}"[..]),
        ],
        "browser",
    )
    .await?;
    assert_eq!(status, 200, "{text}");
    for gw in [gw_a, gw_b] {
        let names = function_names(gw).await?;
        for refused in ["esc1", "esc2", "big1", "big2", "evil", "badtype"] {
            assert!(
                !names.iter().any(|n| n == refused),
                "{refused} stored at {gw}"
            );
        }
    }
    let f = get_json(&format!("http://{gw_a}/api/functions/browser")).await?;
    assert_eq!(f["cgi"], true, "{f}");
    assert_eq!(f["files_entries"], 3, "index.html, css/, css/a.css: {f}");
    let f = get_json(&format!("http://{gw_b}/api/functions/site")).await?;
    assert_eq!(f["cgi"], true, "{f}");
    assert!(f["files_bytes"].as_u64().unwrap_or(0) > 1000, "{f}");

    // Everything still serves after all that.
    expect("GET", &format!("http://{gw_a}/fn/notes/1"), "", 200).await?;
    expect("GET", &format!("http://{gw_b}/fn/site/"), "", 200).await?;

    wasi_suite_through_orb(&net).await
}

fn path(p: &Path) -> Result<&str> {
    p.to_str().context("utf-8 path")
}

/// The suite's tests that preopen a directory, each deployed as a raw
/// function with `--files` of its directory and its arguments and
/// environment, called through B's gateway (the replicas sit on either
/// client). Exit codes other than 0 come back as 500 "exit code N".
async fn wasi_suite_through_orb(net: &Net) -> Result<()> {
    let suite = wasi_suite::find_suite(&root());
    let cases: Vec<wasi_suite::Case> = wasi_suite::cases(&suite)
        .into_iter()
        .filter(|c| c.spec.root.is_some())
        .collect();
    assert!(
        cases.len() >= 40,
        "only {} preopen tests found",
        cases.len()
    );
    let api = [net.api1, net.api2];
    let names: Vec<String> = cases
        .iter()
        .map(|c| {
            let n: String = format!("w-{}-{}", c.suite, c.name)
                .to_ascii_lowercase()
                .chars()
                .map(|ch| {
                    if ch.is_ascii_alphanumeric() || ch == '-' {
                        ch
                    } else {
                        '-'
                    }
                })
                .collect();
            n.chars().take(64).collect()
        })
        .collect();
    // Deploy in parallel, two at a time per client.
    let cases = Arc::new(cases);
    let mut jobs = tokio::task::JoinSet::new();
    let sem = Arc::new(tokio::sync::Semaphore::new(4));
    for (i, name) in names.iter().enumerate() {
        let (cases, name, sem) = (cases.clone(), name.clone(), sem.clone());
        let api = api[i % 2];
        jobs.spawn(async move {
            let _permit = sem.acquire_owned().await?;
            let c = &cases[i];
            let root_dir = c.spec.root.clone().context("root")?;
            let mut args: Vec<String> = vec![
                "--files".into(),
                root_dir.to_str().context("utf-8")?.into(),
                "--replicas".into(),
                "1".into(),
            ];
            for a in &c.spec.args {
                args.push(format!("--arg={a}"));
            }
            for (k, v) in &c.spec.env {
                args.push(format!("--env={k}={v}"));
            }
            let wasm = c.wasm.clone();
            tokio::task::spawn_blocking(move || {
                let refs: Vec<&str> = args.iter().map(String::as_str).collect();
                deploy(api, &wasm, &name, &refs).map(|_| ())
            })
            .await?
        });
    }
    let mut deploy_errors = Vec::new();
    while let Some(r) = jobs.join_next().await {
        if let Err(e) = r? {
            deploy_errors.push(format!("{e:#}"));
        }
    }
    let mut passed = 0usize;
    let mut failed = Vec::new();
    for (c, name) in cases.iter().zip(&names) {
        let url = format!("http://{}/fn/{name}", net.gw_b);
        let a = wait_for(&format!("{name} callable"), SETTLE, || async {
            let a = send("POST", &url, "").await?;
            Ok((a.status == 200 || a.status == 500).then_some(a))
        })
        .await;
        let verdict = match a {
            Err(e) => Err(format!("{e:#}")),
            Ok(a) if a.status == 200 => {
                wasi_suite::judge(&c.spec, Some(0), a.body.as_bytes(), "exited 0")
            }
            Ok(a) => {
                let code = a
                    .body
                    .strip_prefix("function failed: exit code ")
                    .and_then(|r| r.split_whitespace().next())
                    .and_then(|n| n.parse::<i32>().ok());
                wasi_suite::judge(&c.spec, code, b"", &a.body)
            }
        };
        match verdict {
            Ok(()) => passed += 1,
            Err(e) => failed.push(format!("{}: {e}", c.id())),
        }
    }
    let total = cases.len();
    println!("WASI test suite through Orb (preopened directory): {passed} of {total} pass");
    for f in &failed {
        println!("  failed: {f}");
    }
    assert!(
        deploy_errors.is_empty(),
        "deploys failed: {deploy_errors:#?}"
    );
    assert!(
        passed * 10 >= total * 9,
        "{passed} of {total} pass through Orb: {failed:#?}"
    );
    Ok(())
}
