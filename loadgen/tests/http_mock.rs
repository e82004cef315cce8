//! Drives the HTTP worker (PPSTP and BitTorrent HTTP) against a small pipelining-capable mock
//! server on loopback: checks keep-alive, pipelined replies in order, and error classification.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ppsp_loadgen::proto::Protocol;
use ppsp_loadgen::run::{self, RunArgs};

struct Mock {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    connections: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

/// Answers each framed request: PPSTP LEAVE with 403/03, other PPSTP with 200, BitTorrent GETs
/// with a bencoded announce reply.
fn answer(req: &[u8], out: &mut Vec<u8>) {
    let text = String::from_utf8_lossy(req);
    let (status, body) = if text.starts_with("GET ") {
        ("200 OK", "d8:intervali1800e5:peers0:e".to_string())
    } else if text.contains("\"request_type\":\"LEAVE\"") {
        (
            "403 Forbidden",
            r#"{"PPSPTrackerProtocol":{"version":1,"response_type":1,"error_code":"03"}}"#
                .to_string(),
        )
    } else {
        (
            "200 OK",
            r#"{"PPSPTrackerProtocol":{"version":1,"response_type":0,"error_code":0}}"#.to_string(),
        )
    };
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
}

fn serve(mut s: TcpStream, stop: Arc<AtomicBool>) {
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let mut out = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match s.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => continue,
        }
        while let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .map(|v| v.trim().parse::<usize>().unwrap())
                .unwrap_or(0);
            let total = head_end + 4 + len;
            if buf.len() < total {
                break;
            }
            answer(&buf[..total], &mut out);
            buf.drain(..total);
        }
        if !out.is_empty() {
            if s.write_all(&out).is_err() {
                return;
            }
            out.clear();
        }
    }
}

/// Sheds every connection as an overloaded tracker does: its first request is answered 503 with
/// `Retry-After: 1` and `Connection: close`, and the connection is closed.
fn shed(mut s: TcpStream, stop: Arc<AtomicBool>) {
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    while !stop.load(Ordering::Relaxed) {
        match s.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => continue,
        }
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let _ = s.write_all(
                b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            return;
        }
    }
}

fn start_mock() -> Mock {
    start_mock_with(serve)
}

fn start_mock_with(serve: fn(TcpStream, Arc<AtomicBool>)) -> Mock {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let connections = Arc::new(AtomicU64::new(0));
    let (st, conns) = (stop.clone(), connections.clone());
    let thread = std::thread::spawn(move || {
        let mut workers = Vec::new();
        while !st.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    conns.fetch_add(1, Ordering::Relaxed);
                    let st2 = st.clone();
                    workers.push(std::thread::spawn(move || serve(s, st2)));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        for w in workers {
            let _ = w.join();
        }
    });
    Mock {
        addr,
        stop,
        connections,
        thread,
    }
}

impl Mock {
    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
        self.connections.load(Ordering::Relaxed)
    }
}

#[test]
fn ppstp_pipelined_keepalive_with_error_classification() {
    let mock = start_mock();
    let mut args = RunArgs::defaults(Protocol::Ppstp);
    args.target = vec![mock.addr];
    args.swarms = 50;
    args.peers = 300;
    args.populate = true;
    args.mix = Some("find=5,leave=1,join_chunk=1,stat_report=1".into());
    args.duration = 1.0;
    args.max_requests = 20_000;
    args.connections = 2;
    args.pipeline = Some(8);
    args.no_progress = true;
    // Generous: a loaded machine must not turn a slow reply into an error.
    args.timeout_ms = 10_000;
    let out = run::run(&args).unwrap();
    let conns = mock.stop();
    let m = &out.report.measure;
    assert_eq!(
        conns, 4,
        "two keep-alive connections per phase, never reopened"
    );
    assert_eq!(
        out.report.populate.as_ref().unwrap().per_type["connect"].ok,
        300
    );
    let leave = &m.per_type["leave"];
    assert!(leave.sent > 0);
    assert_eq!(
        leave.failed, leave.sent,
        "every LEAVE is refused by the mock"
    );
    assert_eq!(m.errors.get("ppstp_error_03").copied(), Some(leave.failed));
    assert_eq!(m.errors.len(), 1, "errors: {:?}", m.errors);
    assert_eq!(m.per_type["find"].failed, 0);
    assert!(m.per_type["find"].ok > 0);
    assert_eq!(m.unfinished, 0);
}

#[test]
fn bt_http_announces_succeed() {
    let mock = start_mock();
    let mut args = RunArgs::defaults(Protocol::BtHttp);
    args.target = vec![mock.addr];
    args.swarms = 20;
    args.peers = 100;
    args.duration = 0.5;
    args.max_requests = 5_000;
    args.connections = 1;
    args.pipeline = Some(4);
    args.no_progress = true;
    // Generous: a loaded machine must not turn a slow reply into an error.
    args.timeout_ms = 10_000;
    let out = run::run(&args).unwrap();
    mock.stop();
    let m = &out.report.measure;
    assert!(m.errors.is_empty(), "errors: {:?}", m.errors);
    assert!(m.per_type["announce"].ok > 0);
}

/// Runs a PPSTP load (open loop at `rate`, closed loop without) for 1.5 s against a server that
/// sheds every connection with `Retry-After: 1`; returns the generator's report and the
/// connections the server accepted.
fn against_shedding_server(
    max_retry_after_ms: u64,
    rate: Option<f64>,
) -> (ppsp_loadgen::report::PhaseReport, u64) {
    let mock = start_mock_with(shed);
    let mut args = RunArgs::defaults(Protocol::Ppstp);
    args.target = vec![mock.addr];
    args.swarms = 10;
    args.peers = 100;
    args.assume_registered = true;
    args.mix = Some("find=1".into());
    args.rate = rate;
    args.duration = 1.5;
    args.max_requests = 20_000;
    args.connections = 2;
    args.pipeline = Some(4);
    args.no_progress = true;
    args.timeout_ms = 10_000;
    args.max_retry_after_ms = max_retry_after_ms;
    let out = run::run(&args).unwrap();
    (out.report.measure, mock.stop())
}

#[test]
fn a_shed_connection_waits_out_retry_after_before_reconnecting() {
    let (m, honoured) = against_shedding_server(10_000, Some(2000.0));
    // Each connection is shed at its first request, waits 1 s, is shed again at about 1 s and
    // then waits past the end: about 4 connections in 1.5 s (slack for a slow machine).
    assert!(honoured >= 2, "{honoured} connections");
    assert!(
        honoured <= 8,
        "{honoured} connections: Retry-After not honoured"
    );
    assert!(m.held_back > 0, "nothing held back: {m:?}");
    assert!(m.sent < 100, "{} requests sent while told to wait", m.sent);
    assert!(
        m.errors
            .keys()
            .all(|k| k == "http_503" || k == "ppstp_error_05" || k == "connection_closed"),
        "errors: {:?}",
        m.errors
    );
    // Without it, the generator reconnects after its short back-off, many more times.
    let (m, ignored) = against_shedding_server(0, Some(2000.0));
    assert_eq!(m.held_back, 0);
    assert!(
        ignored > honoured,
        "{ignored} connections ignoring Retry-After, {honoured} honouring it"
    );
    // Closed loop too: the connections wait, and the run does not spin on held requests.
    let (m, closed) = against_shedding_server(10_000, None);
    assert!(
        (2..=8).contains(&closed),
        "{closed} connections in closed loop"
    );
    assert!(m.held_back > 0 && m.sent < 100, "{m:?}");
}
