//! Three super nodes joined through the DHT (each bootstrapped from the
//! previous one) and two clients on different supers: a function deployed
//! through one super is resolved and called at the others, a name cannot be
//! taken over through another super, and a super restarted without
//! `--bootstrap` rejoins from its store alone.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::*;

const OTHER_WAT: &str = r#"(module (memory (export "memory") 1) (func (export "_start")))"#;

async fn routing_table(gw: std::net::SocketAddr) -> Result<String> {
    Ok(get_json(&format!("http://{gw}/api/dht")).await?["routing_table"].to_string())
}

async fn call(url: &str, body: &str) -> Result<Option<(String, String)>> {
    let r = http().post(url).body(body.to_string()).send().await?;
    if r.status() != 200 {
        return Ok(None);
    }
    let node = node_header(&r);
    Ok(Some((r.text().await?, node)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_deployed_at_one_super_is_callable_at_the_others() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (quic_a, gw_a) = (free_udp(), free_tcp());
    let (quic_b, gw_b) = (free_udp(), free_tcp());
    let (quic_c, gw_c) = (free_udp(), free_tcp());
    let sup_a = start_super(&tmp.path().join("sa"), quic_a, gw_a, &[])?;
    let peer_a = format!("{}@{quic_a}", sup_a.field("id"));
    let dir_b = tmp.path().join("sb");
    let mut sup_b = start_super(&dir_b, quic_b, gw_b, &["--bootstrap", &peer_a])?;
    let id_b = sup_b.field("id");
    let peer_b = format!("{id_b}@{quic_b}");
    let sup_c = start_super(
        &tmp.path().join("sc"),
        quic_c,
        gw_c,
        &["--bootstrap", &peer_b],
    )?;
    let peer_c = format!("{}@{quic_c}", sup_c.field("id"));

    let (api_a, api_b) = (free_tcp(), free_tcp());
    let a = start_client(
        &tmp.path().join("a"),
        api_a,
        std::slice::from_ref(&peer_a),
        2,
    )?;
    let b = start_client(
        &tmp.path().join("b"),
        api_b,
        std::slice::from_ref(&peer_c),
        2,
    )?;
    let id_a = a.field("id");
    wait_for("C knows A and B", Duration::from_secs(30), || async {
        let t = routing_table(gw_c).await?;
        Ok((t.contains(&peer_a) && t.contains(&peer_b)).then_some(()))
    })
    .await?;
    wait_for(
        "client a attached to A",
        Duration::from_secs(30),
        || async {
            let v = get_json(&format!("http://{gw_a}/api/nodes")).await?;
            Ok((v.as_array().map_or(0, |a| a.len()) == 1).then_some(()))
        },
    )
    .await?;

    let wasm = hello_wasm(tmp.path());
    let out = deploy(
        api_a,
        &wasm,
        "hello",
        &["--replicas", "1", "--here", "--json"],
    )?;
    let deployed: serde_json::Value = serde_json::from_str(&out)?;
    assert_eq!(
        deployed["placed_on"][0],
        id_a.as_str(),
        "--here: the deploying client hosts it"
    );
    assert!(
        deployed["published_on"].as_u64().unwrap_or(0) >= 1,
        "name record published: {deployed}"
    );

    // Two replicas with a client behind A and one behind C: one each, the
    // second through another super (which fetches the module from A).
    let wasm2 = tagged_module(&wasm, "hello2")?;
    let out = deploy(api_a, &wasm2, "hello2", &["--replicas", "2", "--json"])?;
    let deployed2: serde_json::Value = serde_json::from_str(&out)?;
    let mut placed: Vec<String> = deployed2["placed_on"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    placed.sort();
    let mut both = vec![id_a.clone(), b.field("id")];
    both.sort();
    assert_eq!(placed, both, "two replicas on the two clients: {deployed2}");

    // C's gateway resolves name -> hash -> provider -> home super A.
    let url_b = format!("http://{gw_b}/fn/hello");
    let url_c = format!("http://{gw_c}/fn/hello");
    let (body, node) = wait_for(
        "hello callable at C's gateway",
        Duration::from_secs(30),
        || async { call(&url_c, "from c").await },
    )
    .await?;
    assert_eq!(body, "hello, from c");
    assert_eq!(node, id_a, "served by the replica behind A");
    let (body, _) = wait_for(
        "hello callable at B's gateway",
        Duration::from_secs(30),
        || async { call(&url_b, "from b").await },
    )
    .await?;
    assert_eq!(body, "hello, from b");

    // The client on C resolves the chain.
    let out = client_cmd(api_b, &["resolve", "hello"], None)?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(deployed["hash"].as_str().unwrap_or("?")),
        "{text}"
    );
    assert!(
        text.contains(&id_a) && text.contains(&peer_a),
        "provider and its home super: {text}"
    );
    let out = client_cmd(api_b, &["resolve", "nope", "--json"], None)?;
    assert!(!out.status.success(), "resolving an unknown name fails");

    // ... and invokes it.
    let out = client_cmd(api_b, &["invoke", "hello", "--input", "-"], Some(b"via b"))?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello, via b");

    // Taking the name over through another super is refused.
    let other = wat_file(tmp.path(), "other.wasm", OTHER_WAT);
    let out = client_cmd(
        api_b,
        &[
            "deploy",
            other.to_str().unwrap_or_default(),
            "--name",
            "hello",
            "--replicas",
            "1",
        ],
        None,
    )?;
    assert!(
        !out.status.success(),
        "a name hijack through another super must fail"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("belongs to"), "unclear refusal: {err}");

    // Restart B with no --bootstrap: it rejoins from its store and serves again.
    sup_b.kill9();
    let sup_b2 = start_super(&dir_b, quic_b, gw_b, &[])?;
    assert_eq!(sup_b2.field("id"), id_b);
    wait_for(
        "B rejoined from its store",
        Duration::from_secs(30),
        || async {
            let t = routing_table(gw_b).await?;
            Ok((t.contains(&peer_a) || t.contains(&peer_c)).then_some(()))
        },
    )
    .await?;
    let (body, _) = wait_for(
        "hello callable at B after its restart",
        Duration::from_secs(30),
        || async { call(&url_b, "again").await },
    )
    .await?;
    assert_eq!(body, "hello, again");

    // Client a was given only A: it adopts a second home super from the
    // DHT, and when A dies it still has one and keeps working.
    let connected = |api: std::net::SocketAddr| -> Result<Vec<String>> {
        let out = client_cmd(api, &["status", "--json"], None)?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        Ok(v["supers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["connected"] == true)
            .filter_map(|s| s["id"].as_str().map(str::to_string))
            .collect())
    };
    wait_for(
        "client a adopted a second home super",
        Duration::from_secs(30),
        || async { Ok((connected(api_a)?.len() >= 2).then_some(())) },
    )
    .await?;
    let id_sup_a = sup_a.field("id");
    let mut sup_a = sup_a;
    sup_a.kill9();
    wait_for(
        "client a served by another home super after A died",
        Duration::from_secs(30),
        || async {
            let live = connected(api_a)?;
            let ok = !live.is_empty() && !live.contains(&id_sup_a);
            Ok(ok.then_some(()))
        },
    )
    .await?;
    let out = client_cmd(
        api_a,
        &["invoke", "hello", "--input", "-"],
        Some(b"after A"),
    )?;
    assert!(
        out.status.success(),
        "invoke after A died: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello, after A");
    drop((a, b, sup_a, sup_b2, sup_c));
    Ok(())
}
