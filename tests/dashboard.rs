//! The dashboards and metrics, end to end: a super and a client as real
//! processes, `hello` deployed and called once, then headless Chromium
//! renders the super's dashboard and the client's, and the DOM must show
//! the client's node ID and the function name; `/metrics` of both must
//! carry the documented `orb_` families. The client's dashboard is also the
//! client application: Chromium deploys a module through its form and
//! calls it there.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use common::*;

/// Render `url` in headless Chromium and return the DOM after the page's
/// scripts ran (virtual time lets the polling run without waiting).
async fn dump_dom(chromium: &str, profile: &Path, url: &str) -> Result<String> {
    let child = tokio::process::Command::new(chromium)
        .args(cdp::HEADLESS)
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--virtual-time-budget=5000", "--dump-dom", url])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {chromium}"))?;
    let out = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
        .await
        .context("chromium did not finish within 90 s")??;
    if !out.status.success() {
        bail!(
            "chromium failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A super and one client with `hello` deployed and called once.
struct Net {
    _tmp: tempfile::TempDir,
    _sup: Proc,
    _client: Proc,
    gateway: std::net::SocketAddr,
    api: std::net::SocketAddr,
    client_id: String,
    super_id: String,
}

async fn network() -> Result<Net> {
    let tmp = tempfile::tempdir()?;
    let (quic, gateway) = (free_udp(), free_tcp());
    let sup = start_super(&tmp.path().join("super"), quic, gateway, &[])?;
    let super_id = sup.field("id");
    let peer = format!("{super_id}@{quic}");
    let api = free_tcp();
    let client = start_client(&tmp.path().join("client"), api, &[peer], 2)?;
    let client_id = client.field("id");
    wait_for("client registered", Duration::from_secs(30), || async {
        let v = get_json(&format!("http://{gateway}/api/nodes")).await?;
        Ok((v.as_array().map_or(0, |a| a.len()) == 1).then_some(()))
    })
    .await?;
    let wasm = hello_wasm(tmp.path());
    deploy(api, &wasm, "hello", &["--replicas", "1"])?;
    let r = http()
        .post(format!("http://{gateway}/fn/hello"))
        .body("dashboard")
        .send()
        .await?;
    assert_eq!(r.status(), 200, "calling hello: {}", r.text().await?);
    Ok(Net {
        _tmp: tmp,
        _sup: sup,
        _client: client,
        gateway,
        api,
        client_id,
        super_id,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboards_render_nodes_and_functions_in_chromium() -> Result<()> {
    let Some(chromium) = cdp::chromium() else {
        skip_or_fail("chromium is not installed (apt install chromium)");
        return Ok(());
    };
    let net = network().await?;
    let profile = tempfile::tempdir()?;

    let dom = dump_dom(
        &chromium,
        profile.path(),
        &format!("http://{}/", net.gateway),
    )
    .await?;
    assert!(
        dom.contains(&net.client_id),
        "the super's dashboard does not show client {}:\n{dom}",
        net.client_id
    );
    assert!(
        dom.contains(&net.super_id),
        "the super's dashboard does not show its own ID"
    );
    assert!(
        dom.contains("<b>hello</b>"),
        "the super's dashboard does not list the function hello:\n{dom}"
    );

    let dom = dump_dom(&chromium, profile.path(), &format!("http://{}/", net.api)).await?;
    assert!(
        dom.contains(&net.client_id),
        "the client's dashboard does not show its own ID {}:\n{dom}",
        net.client_id
    );
    assert!(
        dom.contains(&net.super_id),
        "the client's dashboard does not show its home super"
    );
    assert!(
        dom.contains("<b>hello</b>"),
        "the client's dashboard does not list the function hello:\n{dom}"
    );
    Ok(())
}

/// A page served by a function (the static-site example, `--cgi --files`)
/// renders in a real browser with its style sheet, script and picture,
/// all from the function's bundle: the script records the computed
/// background colour that only style.css sets, and the image's width.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_site_function_renders_with_its_css_in_chromium() -> Result<()> {
    let Some(chromium) = cdp::chromium() else {
        skip_or_fail("chromium is not installed (apt install chromium)");
        return Ok(());
    };
    let Some(site) = rust_function("static-site") else {
        return Ok(());
    };
    let net = network().await?;
    let dir = root().join("examples/functions/static-site/site");
    let dir = dir.to_str().context("utf-8 path")?;
    deploy(
        net.api,
        &site,
        "site",
        &["--cgi", "--files", dir, "--replicas", "1"],
    )?;
    let profile = tempfile::tempdir()?;
    // `/fn/site` redirects to `/fn/site/`, so relative links resolve.
    let dom = dump_dom(
        &chromium,
        profile.path(),
        &format!("http://{}/fn/site", net.gateway),
    )
    .await?;
    assert!(
        dom.contains("Hello from a function"),
        "the page did not render:\n{dom}"
    );
    assert!(
        dom.contains(r#"data-loaded="yes""#),
        "app.js from the bundle did not run:\n{dom}"
    );
    assert!(
        dom.contains(r#"data-bg="rgb(18, 52, 86)""#),
        "style.css from the bundle was not applied:\n{dom}"
    );
    assert!(
        dom.contains(r#"data-img="8""#),
        "dot.png from the bundle did not load:\n{dom}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_deploys_and_calls_a_function_in_chromium() -> Result<()> {
    let Some(chromium) = cdp::chromium() else {
        skip_or_fail("chromium is not installed (apt install chromium)");
        return Ok(());
    };
    let net = network().await?;
    let profile = tempfile::tempdir()?;
    let wasm = tagged_module(&hello_wasm(profile.path()), "from-the-form")?;
    let mut browser = cdp::Browser::start(&chromium, profile.path()).await?;
    let page = browser.page();
    page.call(
        "Page.navigate",
        serde_json::json!({"url": format!("http://{}/", net.api)}),
    )
    .await?;
    page.wait_text(
        "String(document.getElementById('app-deploy')?.hidden === false)",
        Duration::from_secs(30),
        |t| t == "true",
    )
    .await?;
    // Choose the file, name it, one replica, press Deploy.
    page.set_file("#deploy-file", &wasm).await?;
    page.eval(
        "document.getElementById('deploy-name').value = 'dash';
         document.getElementById('deploy-replicas').value = '1';
         document.getElementById('deploy-submit').click(); 'ok'",
    )
    .await?;
    let result = page
        .wait_text(
            "document.getElementById('deploy-result').textContent",
            Duration::from_secs(60),
            |t| !t.is_empty() && t != "deploying…",
        )
        .await?;
    assert!(result.starts_with("deployed dash version 1"), "{result}");
    // The call panel opens on the new function: send a body, read the answer.
    page.wait_text(
        "String(!!document.getElementById('invoke-send'))",
        Duration::from_secs(10),
        |t| t == "true",
    )
    .await?;
    page.eval(
        "document.getElementById('invoke-body').value = 'chromium';
         document.getElementById('invoke-send').click(); 'ok'",
    )
    .await?;
    let out = page
        .wait_text(
            "document.getElementById('invoke-output').textContent",
            Duration::from_secs(30),
            |t| !t.is_empty(),
        )
        .await?;
    assert_eq!(out, "hello, chromium");
    let status = page
        .eval("document.getElementById('invoke-status').textContent")
        .await?;
    assert!(
        status.as_str().unwrap_or("").starts_with("200 OK"),
        "{status}"
    );
    // The function is in the network, not only on this page.
    let r = http()
        .post(format!("http://{}/fn/dash", net.gateway))
        .body("gateway")
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await?, "hello, gateway");
    // And it is listed among the node's own functions.
    let owned = page
        .wait_text(
            "document.querySelector('#owned tbody').textContent",
            Duration::from_secs(10),
            |t| t.contains("dash"),
        )
        .await?;
    assert!(owned.contains("live"), "{owned}");
    Ok(())
}

/// The families a super's `/metrics` must have.
const SUPER_FAMILIES: &[&str] = &[
    "orb_calls_total",
    "orb_call_errors_total",
    "orb_call_duration_seconds",
    "orb_connections_by_path",
    "orb_function_calls_total",
    "orb_function_errors_total",
    "orb_function_call_duration_seconds",
    "orb_dht_lookups_total",
    "orb_dht_routing_table_peers",
    "orb_dht_records",
];

/// The families a client's `/metrics` must have.
const CLIENT_FAMILIES: &[&str] = &[
    "orb_calls_total",
    "orb_call_errors_total",
    "orb_call_duration_seconds",
    "orb_connections_by_path",
    "orb_function_calls_total",
    "orb_function_call_duration_seconds",
    "orb_dht_lookups_total",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_expose_the_orb_families() -> Result<()> {
    let net = network().await?;
    for (what, addr, families) in [
        ("super", net.gateway, SUPER_FAMILIES),
        ("client", net.api, CLIENT_FAMILIES),
    ] {
        let r = http().get(format!("http://{addr}/metrics")).send().await?;
        assert_eq!(r.status(), 200);
        let text = r.text().await?;
        for f in families {
            assert!(
                text.contains(&format!("# TYPE {f} ")),
                "{what} /metrics lacks {f}:\n{text}"
            );
        }
        // The one call was counted, per function and with a latency.
        assert!(
            text.contains("orb_function_calls_total{function=\"hello\"} 1"),
            "{what} did not count the call of hello:\n{text}"
        );
        assert!(
            text.contains("orb_function_call_duration_seconds_count{function=\"hello\"} 1"),
            "{what} has no latency for hello:\n{text}"
        );
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            assert!(
                line.starts_with("orb_"),
                "{what}: metric without orb_ prefix: {line}"
            );
        }
    }
    // The super's function JSON carries the same counters for the dashboard.
    let f = get_json(&format!("http://{}/api/functions/hello", net.gateway)).await?;
    assert_eq!(f["stats"]["calls"], 1, "{f}");
    assert!(f["stats"]["p50_ms"].is_number(), "{f}");
    let st = get_json(&format!("http://{}/api/status", net.gateway)).await?;
    assert!(st["p99_ms"].is_number(), "{st}");
    Ok(())
}
