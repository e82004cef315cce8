//! Helpers of the BitTorrent integration tests: an in-process server with every listener on a
//! kernel-chosen loopback port, a BEP 15 client, a BitTorrent HTTP GET, a metainfo (.torrent)
//! writer, and the rule for external tools (fail under `CI=true`, skip otherwise).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::time::Duration;

use ppsp_tracker::config::Config;
use ppsp_tracker::protocol::bencode;
use ppsp_tracker::protocol::bt_udp::tracker::AnnounceEvent;
use ppsp_tracker::protocol::bt_udp::tracker::Family;
use ppsp_tracker::protocol::bt_udp::wire::{
    decode_response, AnnounceRequest, ConnectRequest, UdpRequest, UdpResponse,
};
use ppsp_tracker::server::Server;

/// A server on loopback port 0 for every listener (BitTorrent UDP and HTTP included).
pub fn start_server(overrides: &[&str]) -> Server {
    let mut sets: Vec<String> = vec![
        "ppstp.listen=127.0.0.1:0".into(),
        "admin.listen=127.0.0.1:0".into(),
        r#"bt_udp.listen=["127.0.0.1:0"]"#.into(),
        r#"bt_http.listen=["127.0.0.1:0"]"#.into(),
        "server.workers=2".into(),
    ];
    sets.extend(overrides.iter().map(|s| s.to_string()));
    let config = Config::load(None, &sets).expect("test configuration is valid");
    Server::start(&config).expect("server starts")
}

/// Whether an external tool is on the PATH. Under `CI=true` a missing tool fails the test
/// (CI installs it); elsewhere the test is skipped with a printed reason.
pub fn tool_available(tool: &str, package: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false);
    if found {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{tool} is not installed (Debian package `{package}`); CI must install it");
    }
    eprintln!("SKIPPED: {tool} is not installed (apt-get install -y {package})");
    false
}

// Also included by the other support module; a test that uses both compiles it twice.
#[allow(clippy::duplicate_mod)]
#[path = "../port_support/mod.rs"]
mod port_support;
#[allow(unused_imports)]
pub use port_support::free_port;

/// A single-file metainfo (BEP 3) for `content`, announcing to `announce`. Returns the file
/// bytes and the info-hash.
pub fn make_torrent(
    name: &str,
    content: &[u8],
    piece_len: usize,
    announce: &str,
) -> (Vec<u8>, [u8; 20]) {
    use sha1::{Digest, Sha1};
    let mut info = Vec::new();
    // Keys in sorted order: length, name, piece length, pieces.
    bencode::dict_begin(&mut info);
    bencode::key_int(&mut info, b"length", content.len() as i64);
    bencode::key_bytes(&mut info, b"name", name.as_bytes());
    bencode::key_int(&mut info, b"piece length", piece_len as i64);
    let mut pieces = Vec::new();
    for chunk in content.chunks(piece_len) {
        pieces.extend_from_slice(&Sha1::digest(chunk));
    }
    bencode::key_bytes(&mut info, b"pieces", &pieces);
    bencode::end(&mut info);
    let hash: [u8; 20] = Sha1::digest(&info).into();
    let mut torrent = Vec::new();
    bencode::dict_begin(&mut torrent);
    bencode::key_bytes(&mut torrent, b"announce", announce.as_bytes());
    bencode::bytes(&mut torrent, b"info");
    torrent.extend_from_slice(&info);
    bencode::end(&mut torrent);
    (torrent, hash)
}

/// Deterministic pseudo-random bytes (xorshift), so a failing run can be reproduced.
pub fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn write_file(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// A BEP 15 client bound to its own loopback socket.
pub struct UdpClient {
    pub socket: UdpSocket,
    pub tracker: SocketAddr,
}

impl UdpClient {
    pub fn new(tracker: SocketAddr) -> UdpClient {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        UdpClient { socket, tracker }
    }

    /// Sends `packet` and returns the answer, or `None` when nothing comes back in `wait`.
    pub fn exchange(&self, packet: &[u8], wait: Duration) -> Option<Vec<u8>> {
        self.socket.set_read_timeout(Some(wait)).expect("timeout");
        self.socket.send_to(packet, self.tracker).expect("send");
        let mut buf = [0u8; 2048];
        match self.socket.recv_from(&mut buf) {
            Ok((n, _)) => Some(buf[..n].to_vec()),
            Err(_) => None,
        }
    }

    pub fn connect(&self) -> u64 {
        let mut pkt = Vec::new();
        ConnectRequest { transaction_id: 7 }.encode(&mut pkt);
        let answer = self
            .exchange(&pkt, Duration::from_secs(5))
            .expect("connect answered");
        match decode_response(&answer, Family::V4, 0) {
            Ok(UdpResponse::Connect(c)) => c.connection_id,
            other => panic!("expected a connect response, got {other:?}"),
        }
    }

    /// Announces and returns the decoded answer.
    pub fn announce(
        &self,
        connection_id: u64,
        info_hash: [u8; 20],
        port: u16,
        left: u64,
        event: AnnounceEvent,
    ) -> UdpResponse<'static> {
        let req = AnnounceRequest {
            connection_id,
            transaction_id: 9,
            info_hash,
            peer_id: [b'-'; 20],
            downloaded: 0,
            left,
            uploaded: 0,
            event,
            ip_address: 0,
            key: 1,
            num_want: -1,
            port,
        };
        let mut pkt = Vec::new();
        UdpRequest::Announce(req).encode(&mut pkt);
        let answer = self
            .exchange(&pkt, Duration::from_secs(5))
            .expect("announce answered");
        let leaked: &'static [u8] = Box::leak(answer.into_boxed_slice());
        decode_response(leaked, Family::V4, 200).expect("a valid BEP 15 answer")
    }
}

/// One HTTP/1.1 GET on a fresh connection; returns status and body.
pub fn http_get(addr: SocketAddr, target: &str) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: tracker\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    (status, raw[head_end + 4..].to_vec())
}

/// Percent-encodes every byte (valid for any query value).
pub fn url_bytes(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

/// The integer value of `key` in a bencoded body (`10:downloadedi3e` -> 3); panics, naming the
/// key and showing the body, when the key is absent.
pub fn bencoded_int(body: &[u8], key: &str) -> i64 {
    let pat = format!("{}:{key}i", key.len());
    let at = body
        .windows(pat.len())
        .position(|w| w == pat.as_bytes())
        .unwrap_or_else(|| panic!("no {key} in {:?}", String::from_utf8_lossy(body)))
        + pat.len();
    let end = at + body[at..].iter().position(|&b| b == b'e').expect("end");
    std::str::from_utf8(&body[at..end])
        .unwrap()
        .parse()
        .unwrap()
}

/// One HTTP answer read off a connection: status, header fields (names lower-cased) and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    /// The first value of the header field `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Parses the answer at the start of `buf` and returns it with the bytes it took, or `None`
/// when `buf` does not hold all of it yet. A `head_only` answer (to HEAD) is read without a
/// body whatever its `Content-Length` says (RFC 9110 §9.3.2). Panics on bytes that are not an
/// HTTP answer and on a final answer without `Content-Length`.
pub fn parse_answer(buf: &[u8], head_only: bool) -> Option<(Answer, usize)> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let parsed = resp.parse(buf).unwrap_or_else(|e| {
        panic!(
            "not an HTTP answer ({e}): {:?}",
            String::from_utf8_lossy(buf)
        )
    });
    let httparse::Status::Complete(head_len) = parsed else {
        return None;
    };
    let status = resp.code.unwrap();
    let headers: Vec<(String, String)> = resp
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    // An interim answer (1xx) has no body.
    let body_len = if head_only || (100..200).contains(&status) {
        0
    } else {
        headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map(|(_, v)| v.parse().unwrap())
            .expect("every final answer has a Content-Length")
    };
    if buf.len() < head_len + body_len {
        return None;
    }
    let body = buf[head_len..head_len + body_len].to_vec();
    Some((
        Answer {
            status,
            headers,
            body,
        },
        head_len + body_len,
    ))
}
