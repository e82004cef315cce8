//! Per-source rate limiting and overload shedding over real sockets: one abusive source
//! address (127.0.0.2) among well-behaved ones (127.0.0.3 and up) on every tracker front-end;
//! only the abuser is limited, with the protocol's answer, and counted.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use common::*;

/// Sustained rate and burst of the limit under test: small, so that a slow machine (which
/// stretches the abuser's run and so refills its bucket) cannot hide the limit.
const RATE: u32 = 5;
const BURST: u32 = 10;
/// Requests the abuser sends back to back.
const ABUSE: usize = 80;
/// Requests each well-behaved source sends (under the burst, so never limited).
const POLITE: usize = (BURST as usize) - 2;

const ABUSER: &str = "127.0.0.2";
const POLITE_SOURCES: [&str; 4] = ["127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6"];

fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let from: SocketAddr = format!("{source}:0").parse().unwrap();
    socket.bind(&from.into()).unwrap();
    socket
        .connect_timeout(&addr.into(), Duration::from_secs(10))
        .unwrap();
    let s: TcpStream = socket.into();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

fn metric(text: &str, line: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(line).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

/// Most requests the limit may admit over `elapsed`, with one interval of slack for the
/// requests of concurrent workers.
fn admissible(elapsed: Duration) -> usize {
    BURST as usize + (elapsed.as_secs_f64() * f64::from(RATE)).ceil() as usize + 1
}

fn start() -> TestServer {
    TestServer::start(&[
        "server.rate_limit.enabled=true",
        &format!("server.rate_limit.requests_per_second={RATE}"),
        &format!("server.rate_limit.burst={BURST}"),
        "bt_udp.enabled=true",
        "bt_http.enabled=true",
    ])
}

/// `n` STAT_QUERYs on one keep-alive connection from `source`: (answered 200, answered 503
/// with PPSTP error 05).
fn ppstp_run(addr: SocketAddr, source: &str, n: usize) -> (usize, usize) {
    let mut s = connect_from(source, addr);
    let mut reader = ResponseReader::new();
    let (mut ok, mut limited) = (0, 0);
    for i in 0..n {
        let req = ppstp_post(&body(
            "STAT_QUERY",
            &format!("t{i}"),
            &format!("peer-{source}"),
            Some(("stat_query", serde_json::json!({"swarm_id": "s1"}))),
        ));
        let r = exchange(&mut s, &mut reader, &req);
        match r.status {
            200 => ok += 1,
            503 => {
                assert_eq!(r.ppstp()["error_code"], 5, "PPSTP error 05: {r:?}");
                limited += 1;
            }
            other => panic!("unexpected status {other}: {r:?}"),
        }
    }
    (ok, limited)
}

#[test]
fn only_the_abusive_source_is_rate_limited_on_ppstp() {
    let server = start();
    let addr = server.ppstp;
    let polite: Vec<_> = POLITE_SOURCES
        .iter()
        .map(|src| std::thread::spawn(move || ppstp_run(addr, src, POLITE)))
        .collect();
    let started = Instant::now();
    let (ok, limited) = ppstp_run(addr, ABUSER, ABUSE);
    let elapsed = started.elapsed();
    for (src, t) in POLITE_SOURCES.iter().zip(polite) {
        let (ok, limited) = t.join().unwrap();
        assert_eq!((ok, limited), (POLITE, 0), "{src} was limited");
    }
    assert_eq!(ok + limited, ABUSE);
    assert!(
        ok <= admissible(elapsed),
        "abuser got {ok} answers in {elapsed:?}"
    );
    assert!(ok >= BURST as usize, "the burst is admitted: {ok}");
    let m = server.server.as_ref().unwrap().metrics_text();
    assert_eq!(
        metric(
            &m,
            r#"ppsp_shed_total{front_end="ppstp",reason="rate_limited"}"#
        ),
        limited as u64
    );
}

/// `n` scrapes over BitTorrent HTTP from `source`: (normal answers, rate-limit answers).
fn bt_http_run(addr: SocketAddr, source: &str, n: usize) -> (usize, usize) {
    let mut s = connect_from(source, addr);
    let mut reader = ResponseReader::new();
    let (mut ok, mut limited) = (0, 0);
    let hash = "%01".repeat(20);
    for _ in 0..n {
        let req = format!("GET /scrape?info_hash={hash} HTTP/1.1\r\nHost: t\r\n\r\n");
        let r = exchange(&mut s, &mut reader, req.as_bytes());
        assert_eq!(r.status, 200);
        if String::from_utf8_lossy(&r.body).contains("rate limited") {
            limited += 1;
        } else {
            ok += 1;
        }
    }
    (ok, limited)
}

#[test]
fn only_the_abusive_source_is_rate_limited_on_bittorrent_http_and_udp() {
    let server = start();
    let inner = server.server.as_ref().unwrap();
    let http = inner.bt_http_addr().unwrap();
    let polite: Vec<_> = POLITE_SOURCES
        .iter()
        .map(|src| std::thread::spawn(move || bt_http_run(http, src, POLITE)))
        .collect();
    let started = Instant::now();
    let (ok, limited) = bt_http_run(http, ABUSER, ABUSE);
    let elapsed = started.elapsed();
    for (src, t) in POLITE_SOURCES.iter().zip(polite) {
        assert_eq!(t.join().unwrap(), (POLITE, 0), "{src} was limited");
    }
    assert!(limited > 0 && ok <= admissible(elapsed), "{ok} {limited}");

    // BEP 15: an abuser's connects over the limit are dropped unanswered. The limit is per
    // source across front-ends: the HTTP abuser has nothing left; fresh sources are used.
    let udp = inner.bt_udp_addr().unwrap();
    let connect = |txid: u32| {
        let mut p = Vec::with_capacity(16);
        p.extend_from_slice(&0x41727101980u64.to_be_bytes());
        p.extend_from_slice(&0u32.to_be_bytes());
        p.extend_from_slice(&txid.to_be_bytes());
        p
    };
    let http_abuser = UdpSocket::bind(format!("{ABUSER}:0")).unwrap();
    http_abuser
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    http_abuser.send_to(&connect(7), udp).unwrap();
    let mut buf = [0u8; 64];
    assert!(
        http_abuser.recv_from(&mut buf).is_err(),
        "the limit is shared by the front-ends"
    );
    let abuser = UdpSocket::bind("127.0.0.8:0").unwrap();
    abuser
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let started = Instant::now();
    for i in 0..ABUSE as u32 {
        abuser.send_to(&connect(i), udp).unwrap();
    }
    let mut answered = 0;
    while abuser.recv_from(&mut buf).is_ok() {
        answered += 1;
    }
    let elapsed = started.elapsed();
    assert!(
        answered >= 1 && answered <= admissible(elapsed),
        "abuser got {answered} UDP answers in {elapsed:?}"
    );
    for src in ["127.0.0.10", "127.0.0.11", "127.0.0.12", "127.0.0.13"] {
        let s = UdpSocket::bind(format!("{src}:0")).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        for i in 0..POLITE as u32 {
            // Loopback does not lose datagrams; a retry covers a full socket buffer.
            let mut got = false;
            for _ in 0..3 {
                s.send_to(&connect(1000 + i), udp).unwrap();
                if let Ok((n, _)) = s.recv_from(&mut buf) {
                    assert_eq!(n, 16, "a connect answer");
                    got = true;
                    break;
                }
            }
            assert!(got, "{src} went unanswered");
        }
    }
    let m = inner.metrics_text();
    assert_eq!(
        metric(
            &m,
            r#"ppsp_shed_total{front_end="bt_udp",reason="rate_limited"}"#
        ),
        (ABUSE - answered + 1) as u64
    );
    assert_eq!(
        metric(
            &m,
            r#"ppsp_shed_total{front_end="bt_http",reason="rate_limited"}"#
        ),
        limited as u64
    );
    // The admin listener is never limited.
    for _ in 0..3 * BURST {
        let mut s = connect_from(ABUSER, server.admin);
        s.write_all(b"GET /status HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .unwrap();
        let r = ResponseReader::new().read(&mut s).unwrap();
        assert_eq!(r.status, 200);
    }
}

/// A request that misses its deadline (`request_timeout`) is answered 408 before the close, on
/// every HTTP listener, however steadily its bytes trickle in.
#[test]
fn a_request_past_its_deadline_gets_408_on_every_http_listener() {
    let server = TestServer::start(&[
        "server.request_timeout_ms=300",
        "admin.request_timeout_ms=300",
        "bt_http.enabled=true",
    ]);
    let bt_http = server.server.as_ref().unwrap().bt_http_addr().unwrap();
    for (name, addr) in [
        ("ppstp", server.ppstp),
        ("bt_http", bt_http),
        ("admin", server.admin),
    ] {
        let mut s = connect_from("127.0.0.2", addr);
        let started = Instant::now();
        // One header byte every 100 ms: never a whole head.
        s.write_all(b"GET /status HTTP/1.1\r\nHost: t\r\n").unwrap();
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(100));
            if s.write_all(b"X").is_err() {
                break;
            }
        }
        let mut got = Vec::new();
        let _ = std::io::Read::read_to_end(&mut s, &mut got);
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
            "{name}: {text:?}"
        );
        assert!(text.contains("Connection: close"), "{name}: {text:?}");
        assert!(started.elapsed() < Duration::from_secs(20), "{name}");
    }
    let m = server.server.as_ref().unwrap().metrics_text();
    assert!(
        m.contains(r#"reason="deadline""#),
        "deadline closes are counted"
    );
}
