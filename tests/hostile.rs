//! Hostile HTTP clients against a real `orb-super` gateway: slowloris
//! heads, connections that send nothing, connection floods (in all and
//! from one address), slow bodies and oversized heads. Each case checks
//! that the attacker is cut off or refused, that honest requests are still
//! served, and that the refusal shows on `/metrics`.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;

const STATUS_REQUEST: &[u8] = b"GET /api/status HTTP/1.1\r\nHost: orb\r\n\r\n";

/// Start a super with `extra` flags; returns it and its gateway address.
fn gateway(dir: &std::path::Path, extra: &[&str]) -> Result<(Proc, SocketAddr)> {
    let gw = free_tcp();
    let p = start_super(dir, free_udp(), gw, extra)?;
    Ok((p, gw))
}

/// Read until the server closes (EOF or reset) and return what it sent;
/// fail if it is still open after `limit`.
async fn read_until_closed(s: &mut TcpStream, limit: Duration) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => bail!("connection still open after {limit:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(out),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Read one whole response (head and Content-Length body) from a
/// keep-alive connection and return its head.
async fn read_response(s: &mut TcpStream) -> Result<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .context("no response within 10 s")??;
        ensure!(n > 0, "closed before a whole response");
        got.extend_from_slice(&buf[..n]);
        let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&got[..end]).to_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if got.len() >= end + 4 + len {
            return Ok(head);
        }
    }
}

/// A connection that has been served one request and stays open: the
/// server has admitted it, so it holds a slot.
async fn held_connection(s: TcpStream) -> Result<TcpStream> {
    let mut s = s;
    s.write_all(STATUS_REQUEST).await?;
    let head = read_response(&mut s).await?;
    ensure!(
        head.starts_with("http/1.1 200"),
        "unexpected answer: {head}"
    );
    Ok(s)
}

/// `GET /api/status` on a fresh connection answers 200 within 5 s.
async fn status_ok(gw: SocketAddr) -> Result<()> {
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        http().get(format!("http://{gw}/api/status")).send(),
    )
    .await
    .context("GET /api/status took over 5 s")??;
    ensure!(r.status().is_success(), "GET /api/status: {}", r.status());
    Ok(())
}

/// Wait until `series` on `/metrics` reaches `at_least`; return its value.
async fn metric_at_least(gw: SocketAddr, series: &str, at_least: f64) -> Result<f64> {
    wait_for(
        &format!("{series} >= {at_least}"),
        Duration::from_secs(10),
        || async move {
            let v = metric(gw, series).await?;
            if v >= at_least {
                Ok(Some(v))
            } else {
                bail!("{series} = {v}")
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_heads_are_cut_off_while_others_are_served() -> Result<()> {
    const SLOW: usize = 50;
    let timeout = Duration::from_secs(2);
    let dir = tempfile::tempdir()?;
    let (_sup, gw) = gateway(dir.path(), &["--http-header-timeout", "2"])?;
    let series = r#"orb_http_timeouts_total{reason="header"}"#;
    let before = metric(gw, series).await?;

    // Honest clients keep asking while the slow ones trickle.
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let honest = {
        let (stop, served) = (stop.clone(), served.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                status_ok(gw).await?;
                served.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            anyhow::Ok(())
        })
    };

    // Each slow client sends a head that never ends, one byte every
    // 500 ms, and notes when the server closed it.
    let mut slow = JoinSet::new();
    for _ in 0..SLOW {
        slow.spawn(async move {
            let mut s = TcpStream::connect(gw).await?;
            let opened = Instant::now();
            s.write_all(b"GET /api/status HTTP/1.1\r\nHost: orb\r\nX-Slow: ")
                .await?;
            let mut buf = [0u8; 512];
            loop {
                tokio::select! {
                    r = s.read(&mut buf) => match r {
                        Ok(0) | Err(_) => return anyhow::Ok(opened.elapsed()),
                        Ok(_) => {} // an error answer before the close is fine
                    },
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {
                        if opened.elapsed() > Duration::from_secs(15) {
                            bail!("a slow head was still open after 15 s");
                        }
                        if s.write_all(b"x").await.is_err() {
                            return Ok(opened.elapsed());
                        }
                    }
                }
            }
        });
    }
    let mut slowest = Duration::ZERO;
    while let Some(r) = slow.join_next().await {
        slowest = slowest.max(r??);
    }
    stop.store(true, Ordering::Relaxed);
    honest.await??;

    ensure!(
        slowest <= timeout * 4,
        "the last slow head was closed after {slowest:?} (timeout {timeout:?})"
    );
    ensure!(
        served.load(Ordering::Relaxed) >= 3,
        "only {} honest requests were served during the attack",
        served.load(Ordering::Relaxed)
    );
    metric_at_least(gw, series, before + SLOW as f64).await?;
    status_ok(gw).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_send_nothing_are_closed() -> Result<()> {
    const IDLE: usize = 20;
    let timeout = Duration::from_secs(2);
    let dir = tempfile::tempdir()?;
    let (_sup, gw) = gateway(dir.path(), &["--http-header-timeout", "2"])?;
    let series = r#"orb_http_timeouts_total{reason="idle"}"#;
    let before = metric(gw, series).await?;

    let mut conns = JoinSet::new();
    for i in 0..=IDLE {
        conns.spawn(async move {
            let mut s = TcpStream::connect(gw).await?;
            if i == IDLE {
                // A keep-alive client served once, then silent: the wait
                // for its next request is bounded the same way.
                s = held_connection(s).await?;
            }
            let opened = Instant::now();
            let rest = read_until_closed(&mut s, timeout * 4).await?;
            ensure!(rest.is_empty(), "the server sent {} bytes", rest.len());
            anyhow::Ok(opened.elapsed())
        });
    }
    while let Some(r) = conns.join_next().await {
        let after = r??;
        ensure!(
            after >= timeout / 2,
            "closed after only {after:?}: too early for a {timeout:?} timeout"
        );
    }
    metric_at_least(gw, series, before + (IDLE + 1) as f64).await?;
    status_ok(gw).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_flood_is_refused_and_the_gateway_recovers() -> Result<()> {
    const CAP: usize = 32;
    const EXTRA: usize = 20;
    let dir = tempfile::tempdir()?;
    let (_sup, gw) = gateway(
        dir.path(),
        &[
            "--max-http-connections",
            "32",
            "--max-http-connections-per-ip",
            "32",
            "--http-header-timeout",
            "30",
        ],
    )?;
    let series = r#"orb_http_refused_total{reason="connections"}"#;
    let before = metric(gw, series).await?;
    // Let the metrics connection go before filling every slot.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut held = Vec::new();
    for _ in 0..CAP {
        held.push(held_connection(TcpStream::connect(gw).await?).await?);
    }
    for i in 0..EXTRA {
        let mut s = TcpStream::connect(gw).await?;
        let _ = s.write_all(STATUS_REQUEST).await;
        let answer = read_until_closed(&mut s, Duration::from_secs(5))
            .await
            .with_context(|| format!("extra connection {i} was not closed"))?;
        let text = String::from_utf8_lossy(&answer).to_lowercase();
        ensure!(
            text.starts_with("http/1.1 503") && text.contains("retry-after: 1"),
            "extra connection {i} got {text:?}, not a 503 with Retry-After"
        );
    }
    drop(held);
    wait_for(
        "the gateway to serve again",
        Duration::from_secs(10),
        || async move { status_ok(gw).await.map(Some) },
    )
    .await?;
    metric_at_least(gw, series, before + EXTRA as f64).await?;
    let open = metric(gw, "orb_http_connections_open").await?;
    ensure!(open <= 2.0, "{open} connections still counted open");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_slot() -> Result<()> {
    const PER_IP: usize = 8;
    const EXTRA: usize = 5;
    let attacker: SocketAddr = "127.0.0.2:0".parse()?;
    let probe = TcpSocket::new_v4()?;
    if probe.bind(attacker).is_err() {
        skip_or_fail("cannot bind 127.0.0.2 (not Linux loopback?)");
        return Ok(());
    }
    drop(probe);
    let dir = tempfile::tempdir()?;
    let (_sup, gw) = gateway(
        dir.path(),
        &[
            "--max-http-connections",
            "64",
            "--max-http-connections-per-ip",
            "8",
            "--http-header-timeout",
            "30",
        ],
    )?;
    let series = r#"orb_http_refused_total{reason="per_ip"}"#;
    let before = metric(gw, series).await?;
    let from_attacker = || async move {
        let s = TcpSocket::new_v4()?;
        s.bind(attacker)?;
        anyhow::Ok(s.connect(gw).await?)
    };

    let mut held = Vec::new();
    for _ in 0..PER_IP {
        held.push(held_connection(from_attacker().await?).await?);
    }
    for i in 0..EXTRA {
        let mut s = from_attacker().await?;
        let _ = s.write_all(STATUS_REQUEST).await;
        let answer = read_until_closed(&mut s, Duration::from_secs(5)).await?;
        let text = String::from_utf8_lossy(&answer).to_lowercase();
        ensure!(
            text.starts_with("http/1.1 503"),
            "extra connection {i} from 127.0.0.2 got {text:?}"
        );
    }
    // 127.0.0.1 is still served while 127.0.0.2 holds its whole share.
    for _ in 0..3 {
        status_ok(gw).await?;
    }
    metric_at_least(gw, series, before + EXTRA as f64).await?;
    drop(held);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_body_gets_408() -> Result<()> {
    let timeout = Duration::from_secs(2);
    let dir = tempfile::tempdir()?;
    let (_sup, gw) = gateway(dir.path(), &["--http-request-timeout", "2"])?;
    let series = r#"orb_http_timeouts_total{reason="body"}"#;
    let before = metric(gw, series).await?;

    let mut s = TcpStream::connect(gw).await?;
    let opened = Instant::now();
    s.write_all(b"POST /fn/x HTTP/1.1\r\nHost: orb\r\nContent-Length: 1000\r\n\r\n0123456789")
        .await?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        tokio::select! {
            r = s.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            },
            // Stop sending once answered, so the close carries no reset.
            _ = tokio::time::sleep(Duration::from_millis(300)), if answer.is_empty() => {
                if s.write_all(b"x").await.is_err() {
                    break;
                }
            }
        }
        ensure!(
            opened.elapsed() <= timeout * 4,
            "the slow body was still open after {:?}",
            opened.elapsed()
        );
    }
    let text = String::from_utf8_lossy(&answer);
    ensure!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "a slow body got {text:?}"
    );
    metric_at_least(gw, series, before + 1.0).await?;
    status_ok(gw).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_are_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (_sup, gw) = gateway(dir.path(), &[])?;
    let series = r#"orb_http_refused_total{reason="headers"}"#;
    let before = metric(gw, series).await?;

    // One header over the 64 KiB head limit, then 150 headers (over 100).
    let big = format!(
        "GET /api/status HTTP/1.1\r\nHost: orb\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let many = format!(
        "GET /api/status HTTP/1.1\r\nHost: orb\r\n{}\r\n",
        (0..150)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>()
    );
    for head in [big, many] {
        let mut s = TcpStream::connect(gw).await?;
        let _ = s.write_all(head.as_bytes()).await;
        let answer = read_until_closed(&mut s, Duration::from_secs(10)).await?;
        let text = String::from_utf8_lossy(&answer);
        ensure!(
            text.is_empty() || text.starts_with("HTTP/1.1 431"),
            "an oversized head got {text:?}"
        );
    }
    metric_at_least(gw, series, before + 2.0).await?;
    status_ok(gw).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_promptly_despite_hostile_connections() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (mut sup, gw) = gateway(dir.path(), &[])?;
    // Connections that would otherwise stay for the 10 s header timeout.
    let mut hostile = Vec::new();
    for i in 0..5 {
        let mut s = TcpStream::connect(gw).await?;
        if i % 2 == 0 {
            s.write_all(b"GET /api/status HTTP/1.1\r\nHo").await?;
        }
        hostile.push(s);
    }
    held_connection(TcpStream::connect(gw).await?).await?;
    let pid = sup.child.id().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()?;
    ensure!(status.success(), "kill -TERM failed");
    let stopped = Instant::now();
    loop {
        if let Some(code) = sup.child.try_wait()? {
            ensure!(code.success(), "orb-super exited with {code}");
            break;
        }
        ensure!(
            stopped.elapsed() < Duration::from_secs(8),
            "orb-super still running 8 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for mut s in hostile {
        read_until_closed(&mut s, Duration::from_secs(2)).await?;
    }
    Ok(())
}
