//! Smoke tests: an in-process server on loopback answers a CONNECT and a FIND over TCP and
//! reports them on its admin listener; the binary prints and checks configurations.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use ppsp_tracker::config::Config;
use ppsp_tracker::server::Server;

fn loopback_config() -> Config {
    Config::load(
        None,
        &[
            "ppstp.listen=127.0.0.1:0".to_owned(),
            "admin.listen=127.0.0.1:0".to_owned(),
            "bt_udp.listen=127.0.0.1:0".to_owned(),
            "bt_http.listen=127.0.0.1:0".to_owned(),
            "server.workers=2".to_owned(),
        ],
    )
    .unwrap()
}

fn ppstp_request(body: &str) -> String {
    format!(
        "POST /tracker HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/ppsp-tracker+json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

struct HttpResponse {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

/// Reads one HTTP/1.1 response with a Content-Length from `conn`, keeping extra bytes.
fn read_response(conn: &mut TcpStream, buf: &mut Vec<u8>) -> HttpResponse {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8(buf[..end].to_vec()).unwrap();
            let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().unwrap())
                })
                .expect("Content-Length");
            if buf.len() >= end + 4 + len {
                let body = buf[end + 4..end + 4 + len].to_vec();
                buf.drain(..end + 4 + len);
                return HttpResponse {
                    status,
                    headers: head,
                    body,
                };
            }
        }
        let mut chunk = [0u8; 4096];
        let n = conn.read(&mut chunk).unwrap();
        assert!(n > 0, "connection closed before a whole response");
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("invalid JSON ({e}): {}", String::from_utf8_lossy(body)))
}

fn connect(addr: SocketAddr) -> TcpStream {
    let conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    conn
}

fn get(addr: SocketAddr, path: &str) -> HttpResponse {
    let mut conn = connect(addr);
    write!(conn, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    read_response(&mut conn, &mut Vec::new())
}

#[test]
fn connect_then_find_over_tcp() {
    let server = Server::start(&loopback_config()).unwrap();
    let addr = server.ppstp_addr().unwrap();
    let mut conn = connect(addr);

    let connect_seeder = r#"{"PPSPTrackerProtocol": {"version": 1, "request_type": "CONNECT",
        "transaction_id": "t1", "peer_id": "seeder01",
        "connect": {"swarm_action": [{"swarm_id": "abcd", "action": "JOIN", "peer_mode": "SEEDER"}]}}}"#;
    let connect_leech = r#"{"PPSPTrackerProtocol": {"version": 1, "request_type": "CONNECT",
        "transaction_id": "t2", "peer_id": "leech01",
        "connect": {"swarm_action": [{"swarm_id": "abcd", "action": "JOIN", "peer_mode": "LEECH"}]}}}"#;
    let find = r#"{"PPSPTrackerProtocol": {"version": 1, "request_type": "FIND",
        "transaction_id": "t3", "peer_id": "leech01",
        "find": {"swarm_id": "abcd", "peer_num": {"peer_count": 5}}}}"#;
    // Pipelined on one connection: answers come back in order.
    let pipelined = [connect_seeder, connect_leech, find]
        .map(ppstp_request)
        .concat();
    conn.write_all(pipelined.as_bytes()).unwrap();

    let mut buf = Vec::new();
    let mut answers = Vec::new();
    for _ in 0..3 {
        let r = read_response(&mut conn, &mut buf);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert!(
            r.headers
                .to_ascii_lowercase()
                .contains("content-type: application/ppsp-tracker+json"),
            "{}",
            r.headers
        );
        answers.push(json(&r.body));
    }
    for (answer, tid) in answers.iter().zip(["t1", "t2", "t3"]) {
        let p = &answer["PPSPTrackerProtocol"];
        assert_eq!(p["transaction_id"], tid, "{answer}");
        assert_eq!(p["response_type"], 0, "{answer}");
    }
    let find_answer = answers[2].to_string();
    assert!(
        find_answer.contains("seeder01"),
        "FIND lists the seeder: {find_answer}"
    );

    // A wrong media type is answered 415 with the JSON error body; the connection stays usable.
    let wrong = ppstp_request(find).replace("application/ppsp-tracker+json", "text/plain");
    conn.write_all(wrong.as_bytes()).unwrap();
    let r = read_response(&mut conn, &mut buf);
    assert_eq!(r.status, 415);
    assert_eq!(json(&r.body)["PPSPTrackerProtocol"]["response_type"], 1);

    // The admin listener counts them.
    let admin = server.admin_addr().unwrap();
    let metrics = get(admin, "/metrics");
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.headers.contains("text/plain; version=0.0.4"),
        "{}",
        metrics.headers
    );
    let text = String::from_utf8(metrics.body).unwrap();
    assert!(
        text.contains("ppsp_requests_total{type=\"connect\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("ppsp_requests_total{type=\"find\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("ppsp_http_faults_total{status=\"415\"} 1"),
        "{text}"
    );
    assert!(text.contains("ppsp_peers 2"), "{text}");

    let status = get(admin, "/status");
    assert_eq!(status.status, 200);
    let status = json(&status.body);
    assert_eq!(status["peers"], 2);
    assert_eq!(status["swarms"], 1);
    assert_eq!(status["listeners"][0]["addr"], addr.to_string());
    assert_eq!(get(admin, "/nothing").status, 404);

    server.shutdown();
}

#[test]
fn http_faults_get_their_status_and_the_json_error_body() {
    let server = Server::start(&loopback_config()).unwrap();
    let addr = server.ppstp_addr().unwrap();

    // Not a POST: 405, connection kept.
    let mut conn = connect(addr);
    conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let r = read_response(&mut conn, &mut buf);
    assert_eq!(r.status, 405);
    assert_eq!(
        json(&r.body)["PPSPTrackerProtocol"]["error_code"].as_u64(),
        Some(1)
    );

    // Garbage: 400 and the connection is closed.
    let mut conn = connect(addr);
    conn.write_all(b"\x00\x01 not http\r\n\r\n").unwrap();
    let r = read_response(&mut conn, &mut Vec::new());
    assert_eq!(r.status, 400);
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());

    // A body over the limit: 413 before it is read.
    let mut conn = connect(addr);
    conn.write_all(
        b"POST / HTTP/1.1\r\nContent-Type: application/ppsp-tracker+json\r\nContent-Length: 99999999\r\n\r\n",
    )
    .unwrap();
    let r = read_response(&mut conn, &mut Vec::new());
    assert_eq!(r.status, 413);
    server.shutdown();
}

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ppsp-tracker"))
}

#[test]
fn print_config_prints_the_effective_configuration() {
    let out = binary().arg("print-config").output().unwrap();
    assert!(out.status.success());
    let printed: Config = toml::from_str(std::str::from_utf8(&out.stdout).unwrap()).unwrap();
    assert_eq!(printed, Config::default());

    let out = binary()
        .args([
            "print-config",
            "--profile",
            "dedicated",
            "--set",
            "server.workers=3",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let printed: Config = toml::from_str(std::str::from_utf8(&out.stdout).unwrap()).unwrap();
    assert_eq!(printed.server.workers, 3);
    assert!(printed.server.pin_cores);
}

#[test]
fn bad_configuration_fails_naming_the_key_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[ppstp]\nlisten = \"127.0.0.1:1\"\nmax_bodybytes = 5\n",
    )
    .unwrap();
    let out = binary().arg("check-config").arg(&path).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ppstp.max_bodybytes"), "{err}");
    assert!(err.contains(path.to_str().unwrap()), "{err}");

    let good = concat!(env!("CARGO_MANIFEST_DIR"), "/tuning/dedicated.toml");
    let out = binary().args(["check-config", good]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = binary()
        .args(["serve", "--set", "server.backend=io_uring2"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server.backend"), "{err}");
}

#[test]
fn the_binary_serves_and_stops_on_sigterm() {
    use std::io::BufRead;
    let mut child = binary()
        .args([
            "serve",
            "--set",
            "ppstp.listen=127.0.0.1:0",
            "--set",
            "admin.enabled=false",
            // A bound default port is refused at start: every listener on port 0.
            "--set",
            "bt_udp.listen=127.0.0.1:0",
            "--set",
            "bt_http.listen=127.0.0.1:0",
            "--set",
            "log.level=info",
        ])
        .env_remove("RUST_LOG")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufReader::new(stderr).lines();
    // The start-up line names the bound address: `ppstp=Some(127.0.0.1:PORT)`.
    let mut seen = Vec::new();
    let addr: SocketAddr = loop {
        let line = match lines.next() {
            Some(line) => line.unwrap(),
            None => panic!("server exited early: {seen:#?}"),
        };
        seen.push(line.clone());
        if line.contains("runtime started") {
            assert!(
                line.contains("backend=\"epoll\""),
                "the back-end is logged: {line}"
            );
        }
        if let Some(rest) = line.split("ppstp=Some(").nth(1) {
            break rest.split(')').next().unwrap().parse().unwrap();
        }
    };
    let mut conn = connect(addr);
    let body = r#"{"PPSPTrackerProtocol": {"version": 1, "request_type": "CONNECT",
        "transaction_id": "x", "peer_id": "p1",
        "connect": {"swarm_action": [{"swarm_id": "s1", "action": "JOIN", "peer_mode": "SEEDER"}]}}}"#;
    conn.write_all(ppstp_request(body).as_bytes()).unwrap();
    assert_eq!(read_response(&mut conn, &mut Vec::new()).status, 200);

    // SAFETY: sending a signal to our own child process, whose id is valid until it is waited.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        rest.iter().any(|l| l.contains("tracker stopped")),
        "{rest:?}"
    );
}
