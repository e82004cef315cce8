//! Abuse resistance over real sockets: each attack runs, scaled down with small configured
//! limits, from its own loopback source addresses (127.0.0.2 and up) while a well-behaved
//! client on 127.0.0.9 keeps asking. Each test asserts that every side request is answered,
//! that the side client's 99th-percentile latency stays under [`SIDE_P99_BOUND`] (generous:
//! the machine is shared), and that the process's resident memory stays under [`RSS_BOUND_MB`].
//! The figures are printed (`ABUSE attack=... side_p99_ms=... rss_mb=...`) for comparison.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// The side client's 99th-percentile latency bound.
const SIDE_P99_BOUND: Duration = Duration::from_secs(2);
/// Resident memory bound of the test process (server and clients), MiB.
const RSS_BOUND_MB: u64 = 400;
/// The well-behaved client's source address.
const SIDE: &str = "127.0.0.9";

/// A connection from a chosen loopback source address.
fn connect_from(source: &str, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    let from: SocketAddr = format!("{source}:0").parse().unwrap();
    socket.bind(&from.into())?;
    socket.connect_timeout(&addr.into(), Duration::from_secs(5))?;
    let s: TcpStream = socket.into();
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    s.set_nodelay(true)?;
    Ok(s)
}

fn rss_mb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

/// One side request on a fresh connection from [`SIDE`]: its latency, or `None` when it went
/// unanswered (refused, reset, closed).
fn side_request(addr: SocketAddr, request: &[u8]) -> Option<Duration> {
    let started = Instant::now();
    let mut s = connect_from(SIDE, addr).ok()?;
    s.write_all(request).ok()?;
    let mut buf = [0u8; 4096];
    let mut got = Vec::new();
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                return head.starts_with("http/1.1 ").then(|| started.elapsed());
            }
        }
    }
}

/// The side client: `n` requests, a short pause between them. Returns the latencies and the
/// number unanswered.
fn side_client(addr: SocketAddr, request: &[u8], n: usize) -> (Vec<Duration>, usize) {
    let mut lat = Vec::new();
    let mut lost = 0;
    for _ in 0..n {
        match side_request(addr, request) {
            Some(d) => lat.push(d),
            None => lost += 1,
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (lat, lost)
}

fn p99(lat: &mut [Duration]) -> Duration {
    lat.sort();
    lat.get((lat.len() * 99).div_ceil(100).saturating_sub(1))
        .copied()
        .unwrap_or(Duration::MAX)
}

/// Checks the side client's figures and the memory bound, and prints them.
fn judge(attack: &str, mut lat: Vec<Duration>, lost: usize) {
    let total = lat.len() + lost;
    let p = p99(&mut lat);
    let rss = rss_mb();
    eprintln!(
        "ABUSE attack={attack} side_answered={}/{total} side_p99_ms={} rss_mb={rss}",
        lat.len(),
        p.as_millis()
    );
    assert_eq!(
        lost, 0,
        "{attack}: {lost} of {total} side requests unanswered"
    );
    assert!(p < SIDE_P99_BOUND, "{attack}: side p99 {p:?}");
    assert!(rss < RSS_BOUND_MB, "{attack}: RSS {rss} MiB");
}

fn stat_query() -> Vec<u8> {
    ppstp_post(&body(
        "STAT_QUERY",
        "q",
        "side-observer",
        Some(("stat_query", serde_json::json!({"swarm_id": "s1"}))),
    ))
}

/// The value of one metric line (exact name and labels).
fn metric(text: &str, line: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(line).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

/// Runs `attack` on its own thread until `stop` is set; it must return soon after.
fn spawn_attack(
    stop: &Arc<AtomicBool>,
    attack: impl FnOnce(Arc<AtomicBool>) + Send + 'static,
) -> std::thread::JoinHandle<()> {
    let stop = stop.clone();
    std::thread::spawn(move || attack(stop))
}

/// Attack 1: many sources open connections and send one head byte now and then, so every
/// connection stays busy but no request ever completes.
#[test]
fn slow_heads_do_not_lock_out_other_clients() {
    let server = TestServer::start(&[
        "server.workers=1",
        "ppstp.max_connections=64",
        "bt_http.max_connections=64",
        "bt_http.listen=[\"127.0.0.1:0\"]",
        "server.max_connections_per_source=16",
        "server.request_timeout_ms=1000",
    ]);
    let bt = server.server.as_ref().unwrap().bt_http_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut attackers = Vec::new();
    for (i, target) in [server.ppstp, bt].into_iter().enumerate() {
        for source in 2..=6 {
            let source = format!("127.0.{i}.{source}");
            attackers.push(spawn_attack(&stop, move |stop| {
                let mut held: Vec<TcpStream> = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(20);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    // Top up to 30 connections (more than this source's share), then trickle.
                    while held.len() < 30 {
                        match connect_from(&source, target) {
                            Ok(s) => held.push(s),
                            Err(_) => break,
                        }
                    }
                    held.retain_mut(|s| s.write_all(b"G").is_ok());
                    std::thread::sleep(Duration::from_millis(100));
                }
            }));
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let (mut lat, mut lost) = side_client(server.ppstp, &stat_query(), 40);
    let (bt_lat, bt_lost) = side_client(bt, b"GET /scrape HTTP/1.1\r\nHost: t\r\n\r\n", 40);
    lat.extend(bt_lat);
    lost += bt_lost;
    stop.store(true, Ordering::Relaxed);
    for a in attackers {
        a.join().unwrap();
    }
    let text = server.server.as_ref().unwrap().metrics_text();
    let cut = |reason: &str| {
        metric(
            &text,
            &format!("ppsp_connections_closed_total{{listener=\"ppstp\",reason=\"{reason}\"}}"),
        )
    };
    assert!(
        cut("deadline") + cut("evicted") > 0,
        "slow heads are cut at their deadline or evicted for new clients"
    );
    assert!(
        metric(
            &text,
            "ppsp_connections_refused_per_source_total{listener=\"ppstp\"}"
        ) > 0
    );
    judge("1-slow-heads", lat, lost);
}

/// Attack 2: slow connections on the admin listener from several sources.
#[test]
fn the_admin_listener_stays_reachable_under_slow_connections() {
    let server = TestServer::start(&[
        "admin.max_connections=16",
        "admin.max_connections_per_source=6",
        "admin.request_timeout_ms=2000",
    ]);
    let admin = server.admin;
    let stop = Arc::new(AtomicBool::new(false));
    let mut attackers = Vec::new();
    for source in 2..=6 {
        let source = format!("127.0.0.{source}");
        attackers.push(spawn_attack(&stop, move |stop| {
            let mut held: Vec<TcpStream> = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(20);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                while held.len() < 10 {
                    match connect_from(&source, admin) {
                        Ok(s) => held.push(s),
                        Err(_) => break,
                    }
                }
                held.retain_mut(|s| s.write_all(b"G").is_ok());
                std::thread::sleep(Duration::from_millis(100));
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(500));
    let (lat, lost) = side_client(admin, b"GET /status HTTP/1.1\r\nHost: t\r\n\r\n", 60);
    stop.store(true, Ordering::Relaxed);
    for a in attackers {
        a.join().unwrap();
    }
    judge("2-admin-slow", lat, lost);
}

/// Attack 3: one connection keeps its socket full of pipelined requests (and reads the
/// answers), hoping to hold the worker.
#[test]
fn a_pipelining_connection_gets_only_its_share_of_the_worker() {
    let server = TestServer::start(&["server.workers=1", "server.max_requests_per_turn=8"]);
    let addr = server.ppstp;
    let stop = Arc::new(AtomicBool::new(false));
    let attacker = spawn_attack(&stop, move |stop| {
        let mut s = connect_from("127.0.0.2", addr).unwrap();
        let mut r = s.try_clone().unwrap();
        let reader = std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            while matches!(r.read(&mut buf), Ok(n) if n > 0) {}
        });
        let batch: Vec<u8> = stat_query().repeat(200);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            if s.write_all(&batch).is_err() {
                break;
            }
        }
        let _ = s.shutdown(std::net::Shutdown::Both);
        reader.join().unwrap();
    });
    std::thread::sleep(Duration::from_millis(300));
    let (lat, lost) = side_client(addr, &stat_query(), 60);
    stop.store(true, Ordering::Relaxed);
    attacker.join().unwrap();
    let text = server.server.as_ref().unwrap().metrics_text();
    assert!(metric(&text, "ppsp_connection_turns_cut_total{listener=\"ppstp\"}") > 0);
    judge("3-pipeline-hog", lat, lost);
}

/// Registers `n` peers in swarm `s1` from `source` over one keep-alive connection.
fn register_peers(addr: SocketAddr, source: &str, prefix: &str, n: usize) -> Vec<u64> {
    let mut s = connect_from(source, addr).unwrap();
    let mut rx = ResponseReader::new();
    (0..n)
        .map(|i| {
            let req = ppstp_post(&connect_body(
                &format!("{i}"),
                &format!("{prefix}{i}"),
                &[("s1", "SEEDER")],
            ));
            let a = exchange(&mut s, &mut rx, &req).ppstp();
            error_code(&a)
        })
        .collect()
}

/// Attack 4: many connections pipeline FINDs for a large swarm and never read the answers.
#[test]
fn clients_that_never_read_do_not_stall_the_worker_or_pin_memory() {
    // Small per-turn output: each connection gets about one 200-peer answer per turn.
    let server = TestServer::start(&["server.workers=1", "server.max_output_per_turn_bytes=16384"]);
    let addr = server.ppstp;
    assert!(register_peers(addr, "127.0.0.3", "seed-", 200)
        .iter()
        .all(|&c| c == 0));
    let stop = Arc::new(AtomicBool::new(false));
    // Attackers whose connections are all open and filled: the side client measures once
    // the attack is in place, whatever the machine's load makes the set-up take.
    let ready = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut attackers = Vec::new();
    for source in 2..=5 {
        let source = format!("127.0.0.{source}");
        let ready = ready.clone();
        attackers.push(spawn_attack(&stop, move |stop| {
            let me = format!("hog-{source}");
            let codes = register_peers(addr, &source, &me, 1);
            assert_eq!(codes, vec![0]);
            let find = ppstp_post(&find_body("f", &format!("{me}0"), "s1", 200));
            let batch = find.repeat(300);
            let mut held = Vec::new();
            for _ in 0..10 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(mut s) = connect_from(&source, addr) else {
                    break;
                };
                s.set_write_timeout(Some(Duration::from_millis(300)))
                    .unwrap();
                let _ = s.write_all(&batch);
                held.push(s);
            }
            ready.fetch_add(1, Ordering::Release);
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }));
    }
    let set_up = Instant::now();
    while ready.load(Ordering::Acquire) < 4 && set_up.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    // 100 samples, so that the 99th percentile is a percentile rather than the single worst
    // request of a shared machine's hiccup.
    let (lat, lost) = side_client(addr, &stat_query(), 100);
    stop.store(true, Ordering::Relaxed);
    for a in attackers {
        a.join().unwrap();
    }
    judge("4-never-read", lat, lost);
}

/// Attack 5: one peer in many swarms with many chunk ranges each, and chunk-filtered FINDs in
/// a large swarm: refused with 05 beyond their byte and cost budgets, and counted.
#[test]
fn chunk_ranges_and_chunk_finds_are_bounded_in_bytes_and_cost() {
    let server = TestServer::start(&[
        "engine.max_chunk_ranges_per_peer=64",
        "engine.max_find_chunk_work=2000",
    ]);
    let addr = server.ppstp;
    assert!(register_peers(addr, "127.0.0.3", "seed-", 100)
        .iter()
        .all(|&c| c == 0));
    let mut s = connect_from("127.0.0.2", addr).unwrap();
    let mut rx = ResponseReader::new();
    let swarms: Vec<(String, &str)> = (0..8).map(|i| (format!("sw{i}"), "SEEDER")).collect();
    let joins: Vec<(&str, &str)> = swarms.iter().map(|(s, m)| (s.as_str(), *m)).collect();
    let a = exchange(
        &mut s,
        &mut rx,
        &ppstp_post(&connect_body("c", "hog", &joins)),
    )
    .ppstp();
    assert_eq!(error_code(&a), 0);
    let ranges = |n: u64| -> Vec<[u64; 2]> { (0..n).map(|i| [i * 10, i * 10 + 1]).collect() };
    let mut refused = 0;
    for (i, (swarm, _)) in swarms.iter().enumerate() {
        let a = exchange(
            &mut s,
            &mut rx,
            &ppstp_post(&body(
                "JOIN_CHUNK",
                &format!("j{i}"),
                "hog",
                Some((
                    "join_chunk",
                    serde_json::json!({"swarm_id": swarm, "chunks": ranges(32)}),
                )),
            )),
        )
        .ppstp();
        match error_code(&a) {
            0 => {}
            5 => refused += 1,
            other => panic!("unexpected error code {other}"),
        }
    }
    assert_eq!(refused, 6, "64 ranges over all swarms: two sets of 32 fit");
    // A chunk-filtered FIND over the cost bound (64 ranges x 100 members) gets 05.
    let register = exchange(
        &mut s,
        &mut rx,
        &ppstp_post(&connect_body("c2", "finder", &[("s1", "LEECH")])),
    )
    .ppstp();
    assert_eq!(error_code(&register), 0);
    let find = ppstp_post(&body(
        "FIND",
        "f",
        "finder",
        Some((
            "find",
            serde_json::json!({"swarm_id": "s1", "chunks": ranges(64)}),
        )),
    ));
    let a = exchange(&mut s, &mut rx, &find).ppstp();
    assert_eq!(error_code(&a), 5);
    let text = server.server.as_ref().unwrap().metrics_text();
    assert!(metric(&text, "ppsp_errors_total{type=\"join_chunk\",code=\"05\"}") >= 6);
    assert!(metric(&text, "ppsp_errors_total{type=\"find\",code=\"05\"}") >= 1);
    // Meanwhile the expensive FIND costs the side client nothing.
    let stop = Arc::new(AtomicBool::new(false));
    let attacker = spawn_attack(&stop, move |stop| {
        let mut s = connect_from("127.0.0.2", addr).unwrap();
        let mut rx = ResponseReader::new();
        while !stop.load(Ordering::Relaxed) {
            let a = exchange(&mut s, &mut rx, &find).ppstp();
            assert_eq!(error_code(&a), 5);
        }
    });
    let (lat, lost) = side_client(addr, &stat_query(), 40);
    stop.store(true, Ordering::Relaxed);
    attacker.join().unwrap();
    judge("5-bytes-and-cost", lat, lost);
}

/// Attack 6: one source registers peers until the tables are full.
#[test]
fn one_source_cannot_fill_the_tables() {
    let server = TestServer::start(&["engine.max_peers_per_source=50", "engine.max_peers=120"]);
    let addr = server.ppstp;
    let codes = register_peers(addr, "127.0.0.2", "hog-", 150);
    assert_eq!(codes.iter().filter(|&&c| c == 0).count(), 50);
    assert!(codes[50..].iter().all(|&c| c == 5), "beyond the share: 05");
    // Another source still registers.
    let side = register_peers(addr, SIDE, "side-", 20);
    assert!(side.iter().all(|&c| c == 0), "{side:?}");
    let text = server.server.as_ref().unwrap().metrics_text();
    assert!(metric(&text, "ppsp_errors_total{type=\"connect\",code=\"05\"}") >= 100);
    let (lat, lost) = side_client(addr, &stat_query(), 20);
    judge("6-fill-tables", lat, lost);
}
