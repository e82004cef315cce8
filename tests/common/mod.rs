//! Helpers shared by the integration tests: an in-process server on loopback port 0 and a small
//! blocking HTTP/1.1 client that reads exactly one response at a time (so pipelining can be
//! checked response by response).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use ppsp_tracker::config::Config;
use ppsp_tracker::server::Server;

pub const CONTENT_TYPE: &str = "application/ppsp-tracker+json";

/// A tracker running in this process on loopback ports chosen by the kernel; stopped on drop.
pub struct TestServer {
    pub server: Option<Server>,
    pub ppstp: SocketAddr,
    pub admin: SocketAddr,
}

impl TestServer {
    /// Starts a server on the embedded defaults, with `overrides` (`key=value`) applied and
    /// every listener moved to 127.0.0.1 port 0.
    pub fn start(overrides: &[&str]) -> TestServer {
        let mut sets: Vec<String> = vec![
            "ppstp.listen=127.0.0.1:0".into(),
            "admin.listen=127.0.0.1:0".into(),
            // A bound address is refused at start: the BitTorrent listeners on port 0 too.
            r#"bt_udp.listen=["127.0.0.1:0"]"#.into(),
            r#"bt_http.listen=["127.0.0.1:0"]"#.into(),
            "server.workers=2".into(),
            "server.pin_cores=false".into(),
        ];
        sets.extend(overrides.iter().map(|s| s.to_string()));
        let config = Config::load(None, &sets).expect("test configuration is valid");
        let server = Server::start(&config).expect("server starts");
        let ppstp = server.ppstp_addr().expect("PPSTP listener bound");
        let admin = server.admin_addr().expect("admin listener bound");
        TestServer {
            server: Some(server),
            ppstp,
            admin,
        }
    }

    pub fn connect(&self) -> TcpStream {
        connect(self.ppstp)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown();
        }
    }
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect to test server");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// One HTTP request with a computed Content-Length.
pub fn http_post(path: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: tracker.test\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

pub fn ppstp_post(body: &str) -> Vec<u8> {
    http_post("/", CONTENT_TYPE, body.as_bytes())
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    /// The `PPSPTrackerProtocol` object of a PPSTP answer.
    pub fn ppstp(&self) -> serde_json::Value {
        let v = self.json();
        v.get("PPSPTrackerProtocol")
            .cloned()
            .unwrap_or_else(|| panic!("no PPSPTrackerProtocol member in {v}"))
    }
}

/// Reads responses from a stream, keeping bytes that belong to the next one.
pub struct ResponseReader {
    buf: Vec<u8>,
}

impl Default for ResponseReader {
    fn default() -> Self {
        Self::new()
    }
}

impl ResponseReader {
    pub fn new() -> Self {
        ResponseReader { buf: Vec::new() }
    }

    /// Reads one whole response; `None` if the peer closed before any byte of it arrived.
    pub fn read(&mut self, stream: &mut impl Read) -> Option<HttpResponse> {
        loop {
            if let Some((resp, used)) = try_parse(&self.buf) {
                self.buf.drain(..used);
                return Some(resp);
            }
            let mut chunk = [0u8; 65536];
            let n = stream.read(&mut chunk).expect("read response");
            if n == 0 {
                assert!(
                    self.buf.is_empty(),
                    "connection closed inside a response: {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn try_parse(buf: &[u8]) -> Option<(HttpResponse, usize)> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf).expect("well-formed HTTP response") {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return None,
    };
    let headers: Vec<(String, String)> = resp
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.trim().parse().expect("numeric Content-Length"))
        .expect("every response has a Content-Length");
    if buf.len() < head_len + len {
        return None;
    }
    Some((
        HttpResponse {
            status: resp.code.unwrap(),
            headers,
            body: buf[head_len..head_len + len].to_vec(),
        },
        head_len + len,
    ))
}

/// Sends one request and reads its response on a fresh connection.
pub fn roundtrip(addr: SocketAddr, request: &[u8]) -> HttpResponse {
    let mut stream = connect(addr);
    stream.write_all(request).unwrap();
    ResponseReader::new()
        .read(&mut stream)
        .expect("server answered")
}

/// Sends one request on an existing connection and reads its response.
pub fn exchange(
    stream: &mut TcpStream,
    reader: &mut ResponseReader,
    request: &[u8],
) -> HttpResponse {
    stream.write_all(request).unwrap();
    reader.read(stream).expect("server answered")
}

/// `GET path` on a fresh connection.
pub fn http_get(addr: SocketAddr, path: &str) -> HttpResponse {
    roundtrip(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: tracker.test\r\n\r\n").as_bytes(),
    )
}

/// A PPSTP request body in the RFC's canonical form.
pub fn body(
    request_type: &str,
    txid: &str,
    peer_id: &str,
    member: Option<(&str, serde_json::Value)>,
) -> String {
    let mut inner = serde_json::json!({
        "version": 1,
        "request_type": request_type,
        "transaction_id": txid,
        "peer_id": peer_id,
    });
    if let Some((name, value)) = member {
        inner[name] = value;
    }
    serde_json::json!({ "PPSPTrackerProtocol": inner }).to_string()
}

pub fn connect_body(txid: &str, peer_id: &str, joins: &[(&str, &str)]) -> String {
    let actions: Vec<serde_json::Value> = joins
        .iter()
        .map(|(swarm, mode)| serde_json::json!({"swarm_id": swarm, "action": "JOIN", "peer_mode": mode}))
        .collect();
    body(
        "CONNECT",
        txid,
        peer_id,
        Some(("connect", serde_json::json!({ "swarm_action": actions }))),
    )
}

pub fn find_body(txid: &str, peer_id: &str, swarm: &str, count: u32) -> String {
    body(
        "FIND",
        txid,
        peer_id,
        Some((
            "find",
            serde_json::json!({"swarm_id": swarm, "peer_num": {"peer_count": count}}),
        )),
    )
}

/// `swarm_result` as a list whether the server wrote one object or an array.
pub fn swarm_results(ppstp: &serde_json::Value) -> Vec<serde_json::Value> {
    match ppstp.get("swarm_result") {
        Some(serde_json::Value::Array(a)) => a.clone(),
        Some(v @ serde_json::Value::Object(_)) => vec![v.clone()],
        _ => Vec::new(),
    }
}

/// Peer ids in a swarm result's peer group.
pub fn peer_ids(swarm_result: &serde_json::Value) -> Vec<String> {
    let infos = &swarm_result["peer_group"]["peer_info"];
    let list: Vec<serde_json::Value> = match infos {
        serde_json::Value::Array(a) => a.clone(),
        v @ serde_json::Value::Object(_) => vec![v.clone()],
        _ => Vec::new(),
    };
    list.iter()
        .map(|p| p["peer_id"].as_str().expect("peer_id string").to_string())
        .collect()
}

/// The error code of an answer as an integer.
pub fn error_code(ppstp: &serde_json::Value) -> u64 {
    let v = &ppstp["error_code"];
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("error_code missing or not a number in {ppstp}"))
}

/// An RFC 7846 example as the RFC prints it (the one copy is `protocol::ppstp::examples`).
pub fn example(name: &str) -> String {
    ppsp_tracker::protocol::ppstp::examples::by_name(name)
        .unwrap_or_else(|| panic!("no RFC 7846 example {name}"))
}
