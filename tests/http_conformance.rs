//! HTTP method semantics and limits on every HTTP listener (PPSTP, BitTorrent HTTP, admin),
//! over real sockets: HEAD answers carry the GET headers and no body, so a keep-alive
//! connection stays in step; 405 carries `Allow`; every limit is answered with its status
//! (431, 413) rather than a reset; and the advertised scrape maximum fits the head limit.

mod bt_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bt_support::{parse_answer, start_server, url_bytes, Answer};

/// A client connection that reads answers one by one; `head_only` answers (to HEAD) are read
/// without a body, as RFC 9110 §9.3.2 requires, whatever their `Content-Length` says.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    fn read(&mut self, head_only: bool) -> Answer {
        loop {
            if let Some((answer, len)) = parse_answer(&self.buf, head_only) {
                self.buf.drain(..len);
                return answer;
            }
            let mut chunk = [0u8; 16384];
            let n = self.stream.read(&mut chunk).expect("read (not a reset)");
            assert!(
                n > 0,
                "closed inside an answer: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads to the end of the stream; a reset fails the test.
    fn rest(&mut self) -> Vec<u8> {
        let mut rest = std::mem::take(&mut self.buf);
        self.stream
            .read_to_end(&mut rest)
            .expect("the connection ends with a FIN, not a reset");
        rest
    }
}

fn announce_target(hash: &[u8; 20], port: u16) -> String {
    format!(
        "/announce?info_hash={}&peer_id={}&port={port}&uploaded=0&downloaded=0&left=5",
        url_bytes(hash),
        url_bytes(&[b'p'; 20])
    )
}

#[test]
fn head_on_a_keep_alive_connection_has_no_body_and_the_next_answer_follows() {
    let server = start_server(&[]);
    let bt = server.bt_http_addr().unwrap();
    let target = announce_target(&[0x11; 20], 7001);

    // BitTorrent HTTP: HEAD is answered as GET without the body, then a GET on the same
    // connection gets a well-formed answer of the same length.
    let mut c = Client::connect(bt);
    c.send(
        format!(
            "HEAD {target} HTTP/1.1\r\nHost: t\r\n\r\nGET {target} HTTP/1.1\r\nHost: t\r\n\r\n"
        )
        .as_bytes(),
    );
    let head = c.read(true);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("Content-Type"), Some("text/plain"));
    let get = c.read(false);
    assert_eq!(get.status, 200, "{:?}", String::from_utf8_lossy(&get.body));
    assert!(get.body.starts_with(b"d8:complete"), "{:?}", get.body);
    assert_eq!(
        head.header("Content-Length"),
        get.header("Content-Length"),
        "HEAD announces the length GET sends"
    );
    // Other methods: 405 with Allow, and the connection stays in step.
    c.send(format!("POST {target} HTTP/1.1\r\nContent-Length: 0\r\n\r\nHEAD /nowhere HTTP/1.1\r\n\r\nGET {target} HTTP/1.1\r\n\r\n").as_bytes());
    let refused = c.read(false);
    assert_eq!(refused.status, 405);
    assert_eq!(refused.header("Allow"), Some("GET, HEAD"));
    assert!(refused.body.starts_with(b"d14:failure reason"));
    let not_found = c.read(true);
    assert_eq!(not_found.status, 404);
    assert_eq!(c.read(false).status, 200);

    // Admin: HEAD on both endpoints, then GET; PUT is 405 with Allow.
    let mut a = Client::connect(server.admin_addr().unwrap());
    a.send(b"HEAD /metrics HTTP/1.1\r\n\r\nHEAD /status HTTP/1.1\r\n\r\nPUT /status HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}GET /status HTTP/1.1\r\n\r\n");
    let metrics = a.read(true);
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("Content-Length")
            .unwrap()
            .parse::<usize>()
            .unwrap()
            > 0
    );
    assert_eq!(a.read(true).status, 200);
    let put = a.read(false);
    assert_eq!(put.status, 405);
    assert_eq!(put.header("Allow"), Some("GET, HEAD"));
    let status = a.read(false);
    assert_eq!(status.status, 200);
    let json: serde_json::Value = serde_json::from_slice(&status.body).expect("JSON status");
    assert!(json["uptime_seconds"].is_u64());

    // PPSTP: POST only. HEAD is 405 with Allow and no body; the next request is served.
    let mut p = Client::connect(server.ppstp_addr().unwrap());
    let keepalive = br#"{"PPSPTrackerProtocol":{"version":1,"request_type":"STAT_REPORT","transaction_id":"t1","peer_id":"nobody"}}"#;
    let mut post = format!(
        "POST / HTTP/1.1\r\nContent-Type: application/ppsp-tracker+json\r\nContent-Length: {}\r\n\r\n",
        keepalive.len()
    )
    .into_bytes();
    post.extend_from_slice(keepalive);
    let mut both = b"HEAD / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n".to_vec();
    both.extend_from_slice(&post);
    p.send(&both);
    let head = p.read(true);
    assert_eq!(head.status, 405);
    assert_eq!(head.header("Allow"), Some("POST"));
    let get = p.read(false);
    assert_eq!(get.status, 405);
    assert_eq!(get.header("Allow"), Some("POST"));
    assert!(get.body.starts_with(b"{\"PPSPTrackerProtocol\""));
    let answer = p.read(false);
    assert!(
        answer.body.starts_with(b"{\"PPSPTrackerProtocol\""),
        "{:?}",
        String::from_utf8_lossy(&answer.body)
    );
    server.shutdown();
}

#[test]
fn a_scrape_of_the_advertised_maximum_fully_percent_encoded_is_answered() {
    let server = start_server(&[]);
    let bt = server.bt_http_addr().unwrap();
    let hashes: Vec<[u8; 20]> = (0..74u8).map(|i| [i; 20]).collect();
    let query: Vec<String> = hashes
        .iter()
        .map(|h| format!("info_hash={}", url_bytes(h)))
        .collect();
    let request = format!(
        "GET /scrape?{} HTTP/1.1\r\nHost: tracker.example\r\nUser-Agent: test/1.0\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n",
        query.join("&")
    );
    assert!(request.len() > 5300, "{} bytes", request.len());
    let mut c = Client::connect(bt);
    c.send(request.as_bytes());
    let answer = c.read(false);
    assert_eq!(answer.status, 200);
    assert!(answer.body.starts_with(b"d5:filesd"), "{:?}", answer.body);
    let entries = answer
        .body
        .windows(b"8:completei".len())
        .filter(|w| w == b"8:completei")
        .count();
    assert_eq!(entries, 74);
    // One more is refused by the tracker's own rule, with a failure reason.
    let one_more = format!("{}&info_hash={}", query.join("&"), url_bytes(&[0xff; 20]));
    let mut c = Client::connect(bt);
    c.send(format!("GET /scrape?{one_more} HTTP/1.1\r\nConnection: close\r\n\r\n").as_bytes());
    let answer = c.read(false);
    assert_eq!(answer.status, 200);
    assert!(
        answer.body.starts_with(b"d14:failure reason"),
        "{:?}",
        String::from_utf8_lossy(&answer.body)
    );
    server.shutdown();
}

#[test]
fn every_limit_on_every_http_listener_is_answered_with_its_status_not_a_reset() {
    let server = start_server(&[]);
    let listeners = [
        ("bt_http", server.bt_http_addr().unwrap(), 8192usize),
        ("ppstp", server.ppstp_addr().unwrap(), 8192),
        ("admin", server.admin_addr().unwrap(), 8192),
    ];
    for (name, addr, head_limit) in listeners {
        // A head exactly at the limit without its end, and one well over it: 431.
        for size in [head_limit, head_limit + 1, head_limit * 3] {
            let mut request = b"GET /announce?".to_vec();
            request.resize(size, b'a');
            let mut c = Client::connect(addr);
            c.send(&request);
            let answer = c.read(false);
            assert_eq!(answer.status, 431, "{name}: head of {size} bytes");
            assert_eq!(answer.header("Connection"), Some("close"), "{name}");
            c.rest();
        }
        // Too many header lines: 431.
        let mut request = b"GET /status HTTP/1.1\r\n".to_vec();
        for i in 0..100 {
            request.extend_from_slice(format!("X-{i}: 1\r\n").as_bytes());
        }
        request.extend_from_slice(b"\r\n");
        let mut c = Client::connect(addr);
        c.send(&request);
        assert_eq!(c.read(false).status, 431, "{name}: header count");
        c.rest();
        // A body over the limit: 413 before the body is sent.
        let mut c = Client::connect(addr);
        c.send(b"POST / HTTP/1.1\r\nContent-Length: 10000000\r\n\r\n");
        assert_eq!(c.read(false).status, 413, "{name}: body");
        c.rest();
    }
    server.shutdown();
}

#[test]
fn a_connection_over_the_limit_gets_an_http_answer_not_silence() {
    let server = start_server(&[
        "server.workers=1",
        "bt_http.max_connections=1",
        "ppstp.max_connections=1",
    ]);
    for addr in [server.bt_http_addr().unwrap(), server.ppstp_addr().unwrap()] {
        let mut first = Client::connect(addr);
        first.send(b"GET /scrape HTTP/1.1\r\n\r\n");
        assert_ne!(first.read(false).status, 503);
        // Over the limit the newcomer is answered: served after the oldest idle connection is
        // evicted, or refused with 503 when none can be.
        let mut second = Client::connect(addr);
        second.send(b"GET /scrape HTTP/1.1\r\nConnection: close\r\n\r\n");
        let answer = second.read(false);
        assert!(
            answer.status == 503 || answer.status < 500,
            "{addr}: {}",
            answer.status
        );
        if answer.status == 503 {
            assert_eq!(answer.header("Connection"), Some("close"));
        }
    }
    server.shutdown();
}
