//! Punch lab: the hard-NAT punching primitives of orb-transport and the
//! decisions of orb-nat, alone (no orb-node), in real kernel NAT built with
//! `patchbay` network namespaces.
//!
//! Topology. Every NAT sits behind an ISP router of its own without NAT,
//! as on the internet, so a packet crosses at least one router between two
//! NATs; that is where a low-TTL opener expires:
//!
//! ```text
//!  IX ── isp-stun ── stun (public; the "super": tells each side its address)
//!     ── isp-m ── nat-m (patchbay Moderate: EIM, APDF) ── m
//!     ── isp-s ── nat-s (patchbay Strict: EDM random ports, APDF) ── s
//!     ── isp-t ── nat-t (patchbay Strict) ── t
//!     ── isp-a ── nat-a (plain nftables masquerade + conntrack filter) ── a
//!     ── isp-b ── nat-b (plain nftables masquerade + conntrack filter) ── b
//! ```
//!
//! No link has a delay. Every attempt binds fresh sockets, learns each
//! side's public address and NAT profile from the STUN helper (two ports
//! to classify the mapping, a third that dials back to test filtering),
//! lets orb-nat choose the strategy on each side, starts both sides at the
//! same moment (as a super's `PunchNow` would) and counts it direct when
//! a QUIC connection between them carries a request.
//!
//! * Moderate x Strict, twice (patchbay's Moderate, and plain masquerade):
//!   a birthday punch, the winning socket carries QUIC. Goal: >= 9/10 (of
//!   twice the attempts, so a goal the design meets ~98% of the time does
//!   not fail by chance).
//! * Moderate x Moderate on plain masquerade: low-TTL openers then a
//!   simultaneous dial. Goal: >= 19/20. The naive dial (no openers) runs
//!   too, to show the race, and a TTL sweep shows which TTLs open the own
//!   NAT without reaching the other.
//! * Strict x Strict: the strategy says relay only.
//!
//! Needs root, `nft` and `tc`; otherwise it prints `SKIPPED: ...` (and
//! fails when `CI=true`). `cargo test --test punch_lab`. Set
//! `ORB_PUNCH_ATTEMPTS` to change the attempts per scenario (default 20).

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use orb_nat::{
    BirthdayLimits, BirthdayOpener, BirthdayProber, BirthdayRole, Filtering, NatProfile,
    ProbeBudget, Strategy, choose_strategy, classify, opener_lead, opener_ttl,
};
use orb_proto::wire::{Request, Response};
use orb_proto::{Keypair, OrbId, PeerAddr};
use orb_transport::{
    Connection, Endpoint, ProbeSockets, PunchPacket, TransportConfig, TransportError,
};
use patchbay::{Device, Lab, Nat, Router};
use tokio::net::UdpSocket;
use tokio::sync::{Barrier, mpsc};

/// STUN helper ports on the `stun` device: two to classify the mapping,
/// one that only dials back (filtering test).
const STUN_PORTS: [u16; 2] = [3478, 3479];
const DIAL_BACK_PORT: u16 = 3480;
/// How long a Moderate x Moderate attempt may take to become direct.
const DIAL_BUDGET: Duration = Duration::from_secs(2);
/// Attempts of the TTL sweep, per TTL.
const SWEEP_ATTEMPTS: usize = 6;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        println!("punch_lab: test");
        return ExitCode::SUCCESS;
    }
    if let Some(filter) = args.iter().find(|a| !a.starts_with('-'))
        && !"punch_lab".contains(filter.as_str())
    {
        println!("punch_lab: filtered out");
        return ExitCode::SUCCESS;
    }
    if let Some(reason) = missing_prerequisite() {
        common::skip_or_fail(&reason);
        return ExitCode::SUCCESS;
    }
    // Must run while this process has one thread: it unshares a user
    // namespace, so the lab never touches the host's network.
    if let Err(e) = patchbay::init_userns() {
        common::skip_or_fail(&format!("cannot enter a user namespace: {e:#}"));
        return ExitCode::SUCCESS;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("punch_lab: cannot start tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    let attempts = std::env::var("ORB_PUNCH_ATTEMPTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20usize)
        .max(1);
    let outcome = rt.block_on(run(attempts));
    rt.shutdown_timeout(Duration::from_secs(5));
    match outcome {
        Ok(()) => {
            println!("punch_lab: ok");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\npunch_lab FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Why the lab cannot run here, if it cannot.
fn missing_prerequisite() -> Option<String> {
    let euid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        });
    if euid.as_deref() != Some("0") {
        return Some("the punch lab needs root (network namespaces, nftables)".into());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for tool in ["nft", "tc"] {
        if !std::env::split_paths(&path).any(|d| d.join(tool).is_file()) {
            return Some(format!(
                "`{tool}` is not in PATH (apt install nftables iproute2)"
            ));
        }
    }
    None
}

fn say(start: Instant, msg: impl std::fmt::Display) {
    println!("[punch_lab +{:>5.1}s] {msg}", start.elapsed().as_secs_f64());
}

/// One side of the lab: a device behind its NAT, with a fixed identity.
#[derive(Clone)]
struct Side {
    dev: Device,
    key: Keypair,
}

struct Topology {
    _lab: Lab,
    stun: [SocketAddr; 2],
    m: Side,
    s: Side,
    t: Side,
    a: Side,
    b: Side,
}

async fn run(attempts: usize) -> Result<()> {
    let start = Instant::now();
    let topo = build(start).await?;
    let limits = BirthdayLimits::default();
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    let goal = |n: usize, num: usize, den: usize| (n * num).div_ceil(den);

    // ---- Strict x Strict: relay only --------------------------------
    let (s_prof, t_prof) =
        tokio::try_join!(profile(&topo.s, topo.stun), profile(&topo.t, topo.stun))?;
    say(start, format!("s: {s_prof:?}; t: {t_prof:?}"));
    for (me, peer) in [(s_prof, t_prof), (t_prof, s_prof)] {
        let st = choose_strategy(me, peer);
        if st != Strategy::RelayOnly {
            failures.push(format!("Strict x Strict chose {st:?}, not relay only"));
        }
    }
    rows.push(Row {
        scenario: "Strict x Strict".into(),
        strategy: choose_strategy(s_prof, t_prof).as_str().into(),
        direct: 0,
        attempts: 0,
        times: Vec::new(),
        note: "relay only: no punch is tried".into(),
    });

    // ---- Moderate x Strict: birthday ---------------------------------
    for (label, moderate) in [
        ("Moderate x Strict (patchbay Moderate)", &topo.m),
        ("Moderate x Strict (plain masquerade)", &topo.a),
    ] {
        // Twice the attempts: a birthday punch misses ~1.7% of the time by
        // design, and 40 attempts keep a 9/10 goal from failing by chance
        // (P(more than 4 misses) < 0.1%; with 20 attempts, P(more than 2)
        // would be ~0.4%).
        let n = 2 * attempts;
        let row = birthday_runs(start, label, moderate, &topo.s, topo.stun, &limits, n).await?;
        let need = goal(n, 9, 10);
        if row.direct < need {
            failures.push(format!(
                "{label}: {}/{} direct, goal {need}",
                row.direct, row.attempts
            ));
        }
        rows.push(row);
    }

    // ---- Moderate x Moderate on plain masquerade ---------------------
    let ttl = opener_ttl(0);
    let row = meet_runs(
        start,
        "Moderate x Moderate, openers",
        &topo,
        Some(ttl),
        attempts,
    )
    .await?;
    let need = goal(attempts, 19, 20);
    if row.direct < need {
        failures.push(format!(
            "Moderate x Moderate with openers: {}/{} direct, goal {need}",
            row.direct, row.attempts
        ));
    }
    rows.push(row);
    let naive = meet_runs(
        start,
        "Moderate x Moderate, naive dial",
        &topo,
        None,
        attempts,
    )
    .await?;
    if naive.direct == naive.attempts {
        failures.push(
            "the naive dial never lost the race: this lab no longer shows what the openers fix"
                .into(),
        );
    }
    rows.push(naive);
    for sweep_ttl in 1..=5u32 {
        let label = format!("Moderate x Moderate, openers TTL {sweep_ttl}");
        rows.push(meet_runs(start, &label, &topo, Some(sweep_ttl), SWEEP_ATTEMPTS).await?);
    }

    println!("\n{}", table(&rows));
    if failures.is_empty() {
        Ok(())
    } else {
        bail!("{}", failures.join("; "))
    }
}

// ---------------------------------------------------------------------------
// Topology

async fn build(start: Instant) -> Result<Topology> {
    let lab = Lab::builder()
        .label("orb-punch-lab")
        .outdir_from_env()
        .build()
        .await
        .context("building the lab")?;
    let router = |name: String, nat: Nat, up: Option<&Router>| {
        let lab = lab.clone();
        let up = up.map(Router::id);
        async move {
            let mut b = lab.add_router(&name).nat(nat);
            if let Some(up) = up {
                b = b.upstream(up);
            }
            b.build().await.with_context(|| format!("router {name}"))
        }
    };
    let key_seed = |i: u8| Keypair::from_seed([i; 32]);
    let mut sides = Vec::new();
    let isp_stun = router("isp-stun".into(), Nat::None, None).await?;
    let stun_dev = lab
        .add_device("stun")
        .uplink(isp_stun.id())
        .build()
        .await
        .context("device stun")?;
    for (i, (name, nat, plain)) in [
        ("m", Nat::Moderate, false),
        ("s", Nat::Strict, false),
        ("t", Nat::Strict, false),
        ("a", Nat::Moderate, true),
        ("b", Nat::Moderate, true),
    ]
    .into_iter()
    .enumerate()
    {
        let isp = router(format!("isp-{name}"), Nat::None, None).await?;
        let nat_router = router(format!("nat-{name}"), nat, Some(&isp)).await?;
        if plain {
            plain_masquerade(&nat_router).await?;
        }
        let dev = lab
            .add_device(name)
            .uplink(nat_router.id())
            .build()
            .await
            .with_context(|| format!("device {name}"))?;
        say(
            start,
            format!(
                "{name}: {} behind nat-{name} ({}, wan {}) behind isp-{name} (wan {})",
                ip(&dev)?,
                if plain {
                    "plain masquerade".to_string()
                } else {
                    format!("{nat:?}")
                },
                nat_router
                    .uplink_ip()
                    .map(|i| i.to_string())
                    .unwrap_or_default(),
                isp.uplink_ip().map(|i| i.to_string()).unwrap_or_default(),
            ),
        );
        sides.push(Side {
            dev,
            key: key_seed(10 + i as u8),
        });
    }
    let stun_ip = ip(&stun_dev)?;
    stun_dev
        .spawn(move |_| stun_helper(stun_ip))?
        .await
        .context("stun helper task")??;
    say(start, format!("stun helper on {stun_ip}"));
    let mut it = sides.into_iter();
    let mut next = || it.next().context("side missing");
    Ok(Topology {
        stun: STUN_PORTS.map(|p| SocketAddr::new(IpAddr::V4(stun_ip), p)),
        m: next()?,
        s: next()?,
        t: next()?,
        a: next()?,
        b: next()?,
        _lab: lab,
    })
}

fn ip(dev: &Device) -> Result<Ipv4Addr> {
    dev.ip()
        .with_context(|| format!("{} has no IPv4 address", dev.name()))
}

/// Replace patchbay's NAT rules on `router` with what a Linux home router
/// does: plain `masquerade` (conntrack keeps the source port when it can,
/// nothing else), and a forward filter that lets in only replies. Unlike
/// patchbay's Moderate (which keeps its own port map), this NAT moves a
/// mapping to another port when an inbound packet took the tuple first:
/// the race the openers fix.
async fn plain_masquerade(router: &Router) -> Result<()> {
    let wan = router
        .interfaces()
        .first()
        .map(|i| i.name().to_string())
        .context("router has no WAN interface")?;
    let rules = format!(
        r#"delete table ip nat
delete table ip filter
table ip nat {{
    chain prerouting {{
        type nat hook prerouting priority dstnat; policy accept;
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oif "{wan}" masquerade
    }}
}}
table ip filter {{
    chain forward {{
        type filter hook forward priority 0; policy accept;
        iif "{wan}" ct state established,related accept
        iif "{wan}" drop
    }}
}}
"#
    );
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("rules.nft");
    std::fs::write(&path, rules)?;
    let mut cmd = std::process::Command::new("nft");
    cmd.arg("-f").arg(&path);
    let out = router
        .spawn_command_sync(cmd)?
        .wait_with_output()
        .context("nft")?;
    if !out.status.success() {
        bail!(
            "nft on {}: {}",
            router.name(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// STUN helper and address discovery

/// Answer `ORB-STUN` on each STUN port with `OBSERVED <addr>` from that
/// port, and dial back from a third port (`DIALBACK`): only a NAT that lets
/// strangers in passes the dial-back. Returns once the sockets are bound.
async fn stun_helper(ip: Ipv4Addr) -> Result<()> {
    let back = Arc::new(UdpSocket::bind((ip, DIAL_BACK_PORT)).await?);
    for port in STUN_PORTS {
        let sock = UdpSocket::bind((ip, port)).await?;
        let back = back.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                if &buf[..n] == b"ORB-STUN" {
                    let _ = sock
                        .send_to(format!("OBSERVED {from}").as_bytes(), from)
                        .await;
                    let _ = back
                        .send_to(format!("DIALBACK {from}").as_bytes(), from)
                        .await;
                }
            }
        });
    }
    Ok(())
}

/// What discovery learned about one fresh socket.
#[derive(Debug, Clone, Copy)]
struct Found {
    public: SocketAddr,
    profile: NatProfile,
}

/// Bind a fresh socket in the device, learn its public address and NAT
/// profile from the STUN helper, and hand the socket back (std, to carry
/// QUIC afterwards).
async fn discover(dev_ip: Ipv4Addr, stun: [SocketAddr; 2]) -> Result<(std::net::UdpSocket, Found)> {
    let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await?;
    let local = SocketAddr::new(IpAddr::V4(dev_ip), sock.local_addr()?.port());
    let mut observed: [Option<SocketAddr>; 2] = [None, None];
    let mut dial_back = false;
    let mut buf = [0u8; 128];
    'asking: for _ in 0..5 {
        for (i, s) in stun.iter().enumerate() {
            if observed[i].is_none() {
                sock.send_to(b"ORB-STUN", s).await?;
            }
        }
        let until = tokio::time::Instant::now() + Duration::from_millis(300);
        while let Ok(r) = tokio::time::timeout_at(until, sock.recv_from(&mut buf)).await {
            let (n, from) = r?;
            let text = String::from_utf8_lossy(&buf[..n]);
            if let Some(addr) = text.strip_prefix("OBSERVED ") {
                if let Some(i) = stun.iter().position(|s| *s == from) {
                    observed[i] = Some(addr.parse()?);
                }
            } else if text.starts_with("DIALBACK ") {
                dial_back = true;
            }
            if observed.iter().all(Option::is_some) {
                break 'asking;
            }
        }
    }
    let [Some(o1), Some(o2)] = observed else {
        bail!("the STUN helper did not answer");
    };
    // The dial-back leaves right after the answers; give it a moment.
    if !dial_back {
        let until = tokio::time::Instant::now() + Duration::from_millis(100);
        while let Ok(r) = tokio::time::timeout_at(until, sock.recv_from(&mut buf)).await {
            let (n, _) = r?;
            dial_back |= buf[..n].starts_with(b"DIALBACK ");
        }
    }
    let mapping = classify(&[local], &[o1, o2]);
    let filtering = if dial_back {
        Filtering::Open
    } else {
        Filtering::Filtered
    };
    Ok((
        sock.into_std()?,
        Found {
            public: o1,
            profile: NatProfile::new(mapping, filtering),
        },
    ))
}

/// [`discover`] on a fresh socket in `side`'s device.
async fn discover_in(side: &Side, stun: [SocketAddr; 2]) -> Result<(std::net::UdpSocket, Found)> {
    let dev_ip = ip(&side.dev)?;
    side.dev.spawn(move |_| discover(dev_ip, stun))?.await?
}

async fn profile(side: &Side, stun: [SocketAddr; 2]) -> Result<NatProfile> {
    Ok(discover_in(side, stun).await?.1.profile)
}

// ---------------------------------------------------------------------------
// Serving and pinging

/// Answer Ping with Pong on `conn` until it closes.
fn serve(conn: Connection) {
    tokio::spawn(async move {
        while let Ok(req) = conn.accept_request().await {
            let (req, _, responder) = req.split();
            if let Request::Ping { nonce } = req {
                let _ = responder.respond(&Response::Pong { nonce }, &[]).await;
            }
        }
    });
}

async fn ping(conn: &Connection, nonce: u64) -> Result<()> {
    match tokio::time::timeout(
        Duration::from_secs(5),
        conn.request(&Request::Ping { nonce }, &[], 0),
    )
    .await??
    {
        (Response::Pong { nonce: n }, _) if n == nonce => Ok(()),
        (other, _) => bail!("unexpected answer {other:?}"),
    }
}

/// Accept connections on `ep`, serve each, and pass those from `peer` on.
fn accept_into(ep: Endpoint, peer: OrbId) -> mpsc::Receiver<Connection> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        while let Some(conn) = ep.accept().await {
            serve(conn.clone());
            if conn.peer_id() == peer && tx.send(conn).await.is_err() {
                return;
            }
        }
    });
    rx
}

// ---------------------------------------------------------------------------
// Moderate x Strict: birthday punch

async fn birthday_runs(
    start: Instant,
    label: &str,
    moderate: &Side,
    strict: &Side,
    stun: [SocketAddr; 2],
    limits: &BirthdayLimits,
    attempts: usize,
) -> Result<Row> {
    let mut times = Vec::new();
    let mut probes = Vec::new();
    let mut strategy = String::new();
    for n in 0..attempts {
        let nonce: u64 = rand::random();
        let (m_disc, s_disc) =
            tokio::try_join!(discover_in(moderate, stun), discover_in(strict, stun))?;
        let (m_sock, m_found) = m_disc;
        let (s_sock, s_found) = s_disc;
        // The Strict side's own socket only served discovery here; in a
        // node it is the one that talks to supers.
        drop(s_sock);
        let m_strategy = choose_strategy(m_found.profile, s_found.profile);
        let s_strategy = choose_strategy(s_found.profile, m_found.profile);
        if m_strategy != Strategy::Birthday(BirthdayRole::Prober)
            || s_strategy != Strategy::Birthday(BirthdayRole::Opener)
        {
            bail!(
                "{label}: expected a birthday punch, got {m_strategy:?} / {s_strategy:?} ({:?} / {:?})",
                m_found.profile,
                s_found.profile
            );
        }
        strategy = format!("{} / {}", m_strategy.as_str(), s_strategy.as_str());
        let go = Arc::new(Barrier::new(2));
        let (m_key, s_key) = (moderate.key.clone(), strict.key.clone());
        let (m_id, s_id) = (m_key.id(), s_key.id());
        let strict_ip = s_found.public.ip();
        let m_public = m_found.public;
        let (l1, l2) = (*limits, *limits);
        let (go1, go2) = (go.clone(), go.clone());
        let prober = moderate.dev.spawn(move |_| async move {
            prober_side(m_sock, m_key, s_id, strict_ip, nonce, l1, go1).await
        })?;
        let opener = strict.dev.spawn(move |_| async move {
            opener_side(s_key, m_id, m_public, nonce, l2, go2).await
        })?;
        let (sent, result) = (prober.await??, opener.await?);
        probes.push(sent);
        match result {
            Ok(t) => times.push(t),
            Err(e) => say(start, format!("{label} #{n}: not direct: {e:#}")),
        }
    }
    let direct = times.len();
    say(start, format!("{label}: {direct}/{attempts} direct"));
    probes.sort_unstable();
    Ok(Row {
        scenario: label.into(),
        strategy,
        direct,
        attempts,
        times,
        note: format!(
            "{} sockets x {} probes max; probes sent median {}",
            limits.sockets,
            limits.max_probes,
            probes.get(probes.len() / 2).copied().unwrap_or(0)
        ),
    })
}

/// The endpoint-independent side: probe random ports of the Strict side's
/// IP from the QUIC socket until the Strict side's connection arrives.
/// Returns the probes sent.
async fn prober_side(
    sock: std::net::UdpSocket,
    key: Keypair,
    strict: OrbId,
    strict_ip: IpAddr,
    nonce: u64,
    limits: BirthdayLimits,
    go: Arc<Barrier>,
) -> Result<usize> {
    let ep = Endpoint::from_socket(sock, &key, TransportConfig::default())?;
    let mut incoming = accept_into(ep.clone(), strict);
    go.wait().await;
    let t0 = Instant::now();
    let mut budget = ProbeBudget::new(t0, &limits);
    let mut prober = BirthdayProber::new(t0, strict_ip, rand::random(), &limits);
    let packet = PunchPacket::probe(nonce);
    let conn = loop {
        let now = Instant::now();
        while let Some(to) = prober.poll(now, &mut budget) {
            ep.send_datagram(to, &packet, None).await?;
        }
        let wake = prober
            .next_at(now, &mut budget)
            .unwrap_or_else(|| prober.deadline().max(now));
        tokio::select! {
            c = incoming.recv() => break c,
            _ = tokio::time::sleep_until(wake.into()) => {
                if prober.is_done(Instant::now()) && Instant::now() >= prober.deadline() {
                    break None;
                }
            }
        }
    };
    // Serve the Strict side's requests until it hangs up.
    if let Some(conn) = conn {
        let _ = tokio::time::timeout(Duration::from_secs(10), conn.closed()).await;
    }
    ep.close();
    Ok(prober.sent())
}

/// The Strict side: many sockets, low-TTL openers toward the other side's
/// public address, the first socket a probe reaches dials it over QUIC.
/// Returns the time from the start to the first answered request.
async fn opener_side(
    key: Keypair,
    moderate: OrbId,
    moderate_public: SocketAddr,
    nonce: u64,
    limits: BirthdayLimits,
    go: Arc<Barrier>,
) -> Result<Duration> {
    go.wait().await;
    let t0 = Instant::now();
    let mut set = ProbeSockets::bind(IpAddr::V4(Ipv4Addr::UNSPECIFIED), limits.sockets)?;
    let mut budget = ProbeBudget::new(t0, &limits);
    let mut opener = BirthdayOpener::new(t0, &limits);
    let deadline = opener.deadline();
    let win = loop {
        let now = Instant::now();
        if opener.poll(now, &mut budget) {
            set.send_openers(moderate_public, nonce, Some(opener_ttl(0)))
                .await;
        }
        let until = opener
            .next_at(now, &mut budget)
            .unwrap_or(deadline)
            .min(deadline);
        match set.wait(nonce, until.into()).await {
            Ok(win) => break win,
            Err(TransportError::Timeout) if Instant::now() < deadline => continue,
            Err(e) => bail!("no probe arrived: {e}"),
        }
    };
    drop(set);
    let ep = Endpoint::from_socket(win.socket, &key, TransportConfig::default())?;
    let conn = tokio::time::timeout(
        Duration::from_secs(5),
        ep.connect(PeerAddr {
            id: moderate,
            addr: win.from,
        }),
    )
    .await
    .context("QUIC handshake over the punched socket timed out")??;
    ping(&conn, nonce).await?;
    let took = t0.elapsed();
    conn.close("done");
    ep.close();
    Ok(took)
}

// ---------------------------------------------------------------------------
// Moderate x Moderate: openers then a simultaneous dial

async fn meet_runs(
    start: Instant,
    label: &str,
    topo: &Topology,
    ttl: Option<u32>,
    attempts: usize,
) -> Result<Row> {
    let mut times = Vec::new();
    let mut strategy = String::new();
    let stun = topo.stun;
    for n in 0..attempts {
        let nonce: u64 = rand::random();
        let (a_disc, b_disc) =
            tokio::try_join!(discover_in(&topo.a, stun), discover_in(&topo.b, stun))?;
        let (a_sock, a_found) = a_disc;
        let (b_sock, b_found) = b_disc;
        let st = choose_strategy(a_found.profile, b_found.profile);
        if st != Strategy::OpenersThenDial
            || choose_strategy(b_found.profile, a_found.profile) != st
        {
            bail!(
                "{label}: expected openers then a dial, got {st:?} ({:?} / {:?})",
                a_found.profile,
                b_found.profile
            );
        }
        strategy = match ttl {
            Some(t) => format!("{} (TTL {t})", st.as_str()),
            None => "dial (no openers)".into(),
        };
        let go = Arc::new(Barrier::new(2));
        let done = Arc::new(Barrier::new(2));
        let a_peer = PeerAddr {
            id: topo.b.key.id(),
            addr: b_found.public,
        };
        let b_peer = PeerAddr {
            id: topo.a.key.id(),
            addr: a_found.public,
        };
        let (a_key, b_key) = (topo.a.key.clone(), topo.b.key.clone());
        let (go1, go2, done1, done2) = (go.clone(), go, done.clone(), done);
        let a = topo.a.dev.spawn(move |_| async move {
            meet_side(a_sock, a_key, a_peer, nonce, ttl, go1, done1).await
        })?;
        let b = topo.b.dev.spawn(move |_| async move {
            meet_side(b_sock, b_key, b_peer, nonce, ttl, go2, done2).await
        })?;
        let (ra, rb) = (a.await?, b.await?);
        match (ra, rb) {
            (Ok(ta), Ok(tb)) => times.push(ta.max(tb)),
            (ra, rb) => say(
                start,
                format!(
                    "{label} #{n}: not direct: {} / {}",
                    err_text(&ra),
                    err_text(&rb)
                ),
            ),
        }
    }
    let direct = times.len();
    say(start, format!("{label}: {direct}/{attempts} direct"));
    Ok(Row {
        scenario: label.into(),
        strategy,
        direct,
        attempts,
        times,
        note: match ttl {
            Some(_) => format!("dial {:?} after the opener", opener_lead(Duration::ZERO)),
            None => "both dial at once".into(),
        },
    })
}

fn err_text<T>(r: &Result<T>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => format!("{e:#}"),
    }
}

/// One side of a Moderate x Moderate attempt: an opener with `ttl` (if
/// any), then dial the peer while accepting from it; direct once a request
/// is answered over whichever connection came up.
async fn meet_side(
    sock: std::net::UdpSocket,
    key: Keypair,
    peer: PeerAddr,
    nonce: u64,
    ttl: Option<u32>,
    go: Arc<Barrier>,
    done: Arc<Barrier>,
) -> Result<Duration> {
    let ep = Endpoint::from_socket(sock, &key, TransportConfig::default())?;
    let mut incoming = accept_into(ep.clone(), peer.id);
    go.wait().await;
    let t0 = Instant::now();
    let result = async {
        if let Some(ttl) = ttl {
            ep.send_datagram(peer.addr, &PunchPacket::opener(nonce), Some(ttl))
                .await?;
            tokio::time::sleep(opener_lead(Duration::ZERO)).await;
        }
        let deadline = tokio::time::Instant::from_std(t0 + DIAL_BUDGET);
        let dial = async {
            let c = ep.connect(peer).await?;
            serve(c.clone());
            Ok::<_, TransportError>(c)
        };
        tokio::pin!(dial);
        let mut dial_done = false;
        let conn = loop {
            tokio::select! {
                r = &mut dial, if !dial_done => match r {
                    Ok(c) => break c,
                    Err(_) => dial_done = true,
                },
                c = incoming.recv() => match c {
                    Some(c) => break c,
                    None => bail!("endpoint closed"),
                },
                _ = tokio::time::sleep_until(deadline) => bail!("no connection within {DIAL_BUDGET:?}"),
            }
        };
        ping(&conn, nonce).await?;
        Ok(t0.elapsed())
    }
    .await;
    // Keep serving until the other side is done with its own request.
    let _ = tokio::time::timeout(DIAL_BUDGET + Duration::from_secs(5), done.wait()).await;
    ep.close();
    result
}

// ---------------------------------------------------------------------------
// Report

struct Row {
    scenario: String,
    strategy: String,
    direct: usize,
    attempts: usize,
    times: Vec<Duration>,
    note: String,
}

fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| scenario | strategy | direct | time to direct (median / p90 / max) | notes |\n|---|---|---|---|---|\n",
    );
    for r in rows {
        let mut t = r.times.clone();
        t.sort_unstable();
        let pick = |q: f64| {
            t.get(((t.len() as f64 - 1.0) * q).round() as usize)
                .map(|d| format!("{} ms", d.as_millis()))
                .unwrap_or_else(|| "-".into())
        };
        let times = if t.is_empty() {
            "-".to_string()
        } else {
            format!("{} / {} / {}", pick(0.5), pick(0.9), pick(1.0))
        };
        let direct = if r.attempts == 0 {
            "-".to_string()
        } else {
            format!("{}/{}", r.direct, r.attempts)
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            r.scenario, r.strategy, direct, times, r.note
        ));
    }
    out
}
