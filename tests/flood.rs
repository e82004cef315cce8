//! Overload shedding over real sockets: a bounded flood of pipelined PPSTP requests on many
//! connections to one worker with a 1 ms shedding delay. Every request is either answered or
//! shed with the protocol's own answer (HTTP 503, PPSTP error 05, `Retry-After`, the
//! connection closed with the requests pipelined behind it), each shed is counted, the
//! server answers a fresh request as soon as the flood stops, and the memory the flood takes
//! stays within the bound stated below. Whether anything is shed depends on the machine's
//! speed (the shedding itself is paced by the unit tests of `ShedControl`); what this test
//! asserts holds either way.

mod common;

use std::io::Write;
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use common::*;

/// Connections of the flood, each from its own thread pair.
const CONNECTIONS: usize = 48;
/// Requests pipelined on each connection (written at once, answers read concurrently): about
/// 25 KB, which the server's socket takes whole, so that a shed connection's unread requests
/// are all read and dropped before the close (a FIN, not a reset that could destroy the
/// overload answer).
const PIPELINE: usize = 100;
/// What one connection may hold in the server at most: its unread input (`max_input_bytes`,
/// 64 KiB by default), its pending output (`ppstp.max_pending_output_bytes`, 256 KiB by
/// default) and, on io_uring, its two 64 KiB send buffers: 448 KiB, rounded up to 512 KiB.
/// Measured on both back-ends: the whole flood (48 connections, the test's own client
/// threads included) raised RSS by 3.4 to 6.8 MB, far below.
const PER_CONNECTION: u64 = 512 << 10;
/// The engine, the per-worker buffers (the io_uring stream buffer ring at most 2 MiB), the
/// client threads' stacks and the allocator's slack.
const BASE: u64 = 16 << 20;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

fn metric(text: &str, line: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(line).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

fn stat_query(i: usize, peer: &str) -> Vec<u8> {
    ppstp_post(&body(
        "STAT_QUERY",
        &format!("t{i}"),
        peer,
        Some(("stat_query", serde_json::json!({"swarm_id": "s1"}))),
    ))
}

/// Reads from a connection, taking a reset for the end of the stream (and noting it).
struct Lenient {
    stream: std::net::TcpStream,
    reset: bool,
}

impl std::io::Read for Lenient {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.stream.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                self.reset = true;
                Ok(0)
            }
            other => other,
        }
    }
}

/// What one flooding connection saw.
#[derive(Default)]
struct Seen {
    /// Answered 200.
    ok: usize,
    /// Shed: one 503 with error 05, then the close.
    shed: usize,
    /// Reset by the server before all answers arrived, without an overload answer seen.
    reset: usize,
}

/// One flooding connection: writes `PIPELINE` requests from a second thread while reading the
/// answers; panics on any outcome but those of [`Seen`].
fn flood_one(addr: SocketAddr, n: usize) -> Seen {
    let stream = connect(addr);
    let mut writer = stream.try_clone().unwrap();
    let peer = format!("flood-{n}");
    let requests: Vec<u8> = (0..PIPELINE).flat_map(|i| stat_query(i, &peer)).collect();
    let sender = std::thread::spawn(move || {
        // A shed closes the connection: the rest of the pipeline may then fail to go out.
        let _ = writer.write_all(&requests);
    });
    let mut stream = Lenient {
        stream,
        reset: false,
    };
    let mut reader = ResponseReader::new();
    let mut seen = Seen::default();
    while seen.ok < PIPELINE {
        let Some(r) = reader.read(&mut stream) else {
            assert!(
                stream.reset,
                "connection {n} closed after {} answers without an overload answer",
                seen.ok
            );
            seen.reset += 1;
            break;
        };
        match r.status {
            200 => seen.ok += 1,
            503 => {
                assert_eq!(error_code(&r.ppstp()), 5, "PPSTP error 05: {r:?}");
                assert_eq!(r.header("retry-after"), Some("1"), "{r:?}");
                assert_eq!(r.header("connection"), Some("close"), "{r:?}");
                seen.shed += 1;
                // The requests pipelined behind it are dropped and the connection closed.
                assert!(reader.read(&mut stream).is_none(), "nothing after the shed");
                break;
            }
            other => panic!("unexpected status {other}: {r:?}"),
        }
    }
    let _ = stream.stream.shutdown(Shutdown::Both);
    let _ = sender.join();
    seen
}

#[test]
fn a_flood_is_answered_or_shed_with_error_05_and_the_server_recovers_at_once() {
    let server = TestServer::start(&["server.workers=1", "server.shed_after_ms=1"]);
    let addr = server.ppstp;
    // Warm up (first answers allocate the worker's buffers), then take the baseline.
    let warm = roundtrip(addr, &stat_query(0, "warm"));
    assert_eq!(warm.status, 200, "{warm:?}");
    let before = rss_bytes();

    let started = Instant::now();
    let floods: Vec<_> = (0..CONNECTIONS)
        .map(|n| std::thread::spawn(move || flood_one(addr, n)))
        .collect();
    let (mut ok, mut shed, mut reset) = (0, 0, 0);
    let mut peak = 0;
    let mut pending = floods;
    while !pending.is_empty() {
        peak = peak.max(rss_bytes());
        let (done, rest): (Vec<_>, Vec<_>) = pending.into_iter().partition(|h| h.is_finished());
        for h in done {
            let seen = h.join().expect("flooding connection");
            ok += seen.ok;
            shed += seen.shed;
            reset += seen.reset;
        }
        pending = rest;
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the flood was not answered within 5 minutes"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "flood: {ok} answered, {shed} connections shed, {reset} reset, {:.1} s, RSS {} -> peak {} kB",
        started.elapsed().as_secs_f64(),
        before / 1024,
        peak / 1024
    );
    assert!(ok > 0, "nothing answered");
    let bound = BASE + CONNECTIONS as u64 * PER_CONNECTION;
    assert!(
        peak.saturating_sub(before) <= bound,
        "RSS grew by {} kB under the flood, over the stated bound of {} kB",
        peak.saturating_sub(before) / 1024,
        bound / 1024
    );

    // Recovered at once: a fresh request is answered (generous bound for a loaded machine).
    let fresh = Instant::now();
    let after = roundtrip(addr, &stat_query(1, "after"));
    assert_eq!(after.status, 200, "{after:?}");
    assert!(fresh.elapsed() < Duration::from_secs(10));

    // Every shed answer seen is counted, and at most the resets' besides (a reset may have
    // destroyed an overload answer on its way).
    let metrics = String::from_utf8(http_get(server.admin, "/metrics").body).unwrap();
    let counted = metric(
        &metrics,
        r#"ppsp_shed_total{front_end="ppstp",reason="overloaded"}"#,
    );
    assert!(
        (shed as u64..=(shed + reset) as u64).contains(&counted),
        "{shed} shed answers seen and {reset} resets, {counted} counted"
    );
}
