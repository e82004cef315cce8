//! HTTP semantics on every HTTP listener the tracker has, over real sockets: PPSTP and the
//! BitTorrent HTTP tracker in plaintext and over TLS, the admin listener, each on IPv4 and
//! IPv6 loopback. For every one: an answer to HEAD never carries a body, whatever its status
//! (200, 404, 405, 411, 413, 431, including refusals decided before the head could be
//! parsed); a method the path does not allow is 405 with `Allow`; an HTTP/1.0 client's kept
//! connection is announced; `Expect: 100-continue` gets its interim answer; a request line
//! far over the head limit is answered 431, never reset.

mod bt_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use bt_support::{parse_answer, url_bytes, Answer};
use ppsp_tracker::config::Config;
use ppsp_tracker::server::Server;

/// A byte stream to a listener, plaintext or TLS.
trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

/// Reads everything the server sends until it closes (a FIN); a reset fails the test unless
/// the answers were already complete. Then splits the bytes into answers, reading no body for
/// those marked HEAD: bytes left over mean a HEAD answer carried a body.
fn answers(stream: &mut dyn Stream, heads: &[bool]) -> Vec<Answer> {
    let mut raw = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
            // A reset after the answers (the client still had unsent bytes) is what a TLS
            // close may look like; the answers are checked below either way.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => panic!("read: {e} after {:?}", String::from_utf8_lossy(&raw)),
        }
    }
    let mut out = Vec::new();
    let mut at = 0;
    for &head_only in heads {
        // Interim answers (1xx) come before the final one.
        loop {
            let Some((answer, len)) = parse_answer(&raw[at..], head_only) else {
                panic!(
                    "not a complete HTTP answer: {:?}",
                    String::from_utf8_lossy(&raw[at..])
                );
            };
            at += len;
            if !(100..200).contains(&answer.status) {
                out.push(answer);
                break;
            }
        }
    }
    assert_eq!(
        &raw[at..],
        b"",
        "bytes after the last answer (a body on a HEAD answer?)"
    );
    out
}

/// A listener under test and how to reach it.
struct Target {
    name: String,
    addr: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// A path answered 200 to GET and HEAD, or `None` (PPSTP takes POST only).
    get_path: Option<String>,
    /// `Allow` on a 405 for `get_path` (or `/` for PPSTP).
    allow: &'static str,
    /// Whether requests may carry a body (PPSTP, admin); BitTorrent HTTP takes none.
    takes_bodies: bool,
}

impl Target {
    fn connect(&self) -> Box<dyn Stream> {
        let sock = TcpStream::connect(self.addr).expect("connect");
        sock.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        match &self.tls {
            None => Box::new(sock),
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                let conn = rustls::ClientConnection::new(config.clone(), name).unwrap();
                Box::new(rustls::StreamOwned::new(conn, sock))
            }
        }
    }

    /// Sends `request` (whole, or as much as the server takes before it closes) and reads the
    /// answers until the server closes.
    fn exchange(&self, request: &[u8], heads: &[bool]) -> Vec<Answer> {
        let mut s = self.connect();
        // The server may answer and close before a large request is all sent.
        let _ = s.write_all(request).and_then(|_| s.flush());
        answers(&mut *s, heads)
    }
}

/// A self-signed certificate for localhost, its key (mode 0600) in `dir`, and a client
/// configuration that trusts it.
fn certificate(dir: &std::path::Path) -> (String, String, Arc<rustls::ClientConfig>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let cert = params.self_signed(&key).unwrap();
    let cert_path = dir.join("server.pem");
    let key_path = dir.join("server.key");
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    (
        cert_path.display().to_string(),
        key_path.display().to_string(),
        Arc::new(config),
    )
}

fn start(sets: Vec<String>) -> Server {
    let config = Config::load(None, &sets).expect("test configuration is valid");
    Server::start(&config).expect("server starts")
}

fn announce_path() -> String {
    format!(
        "/announce?info_hash={}&peer_id={}&port=7100&uploaded=0&downloaded=0&left=5",
        url_bytes(&[0x31; 20]),
        url_bytes(&[b'h'; 20])
    )
}

/// Every check of the module comment against one listener.
fn check(t: &Target) {
    let name = &t.name;
    let get_path = t.get_path.clone().unwrap_or_else(|| "/".to_owned());
    // HEAD then GET on one keep-alive connection, and a refused method between them.
    let req = format!(
        "HEAD {get_path} HTTP/1.1\r\nHost: t\r\n\r\nDELETE {get_path} HTTP/1.1\r\nHost: t\r\n\r\n\
         HEAD /no/such/path HTTP/1.1\r\nHost: t\r\n\r\nGET {get_path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    );
    let a = t.exchange(req.as_bytes(), &[true, false, true, false]);
    let (head, delete, missing, get) = (&a[0], &a[1], &a[2], &a[3]);
    if t.get_path.is_some() {
        assert_eq!(head.status, 200, "{name}: HEAD");
        assert_eq!(get.status, 200, "{name}: GET");
        assert_eq!(head.header("content-type"), get.header("content-type"));
    } else {
        assert_eq!((head.status, get.status), (405, 405), "{name}");
        assert_eq!(head.header("allow"), Some(t.allow), "{name}");
        assert_eq!(get.header("allow"), Some(t.allow), "{name}");
        assert_eq!(head.header("content-length"), get.header("content-length"));
    }
    assert_eq!(delete.status, 405, "{name}: DELETE");
    assert_eq!(delete.header("allow"), Some(t.allow), "{name}: DELETE");
    assert!(
        missing.status == 404 || missing.status == 405,
        "{name}: HEAD on an unknown path: {}",
        missing.status
    );

    // Refusals decided by the framing: to HEAD without a body, to GET with one.
    let mut long_head = b"HEAD /announce?x=".to_vec();
    long_head.resize(40_000, b'a');
    long_head.extend_from_slice(b" HTTP/1.1\r\n\r\n");
    let mut long_get = long_head.clone();
    long_get[..4].copy_from_slice(b"GET ");
    long_get.remove(3);
    let refusals: [(&[u8], u16); 4] = [
        (&long_head, 431),
        (b"HEAD / HTTP/1.1\r\nContent-Length: 100000000\r\n\r\n", 413),
        (
            b"HEAD / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            411,
        ),
        (b"\r\nHEAD / HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400),
    ];
    for (request, status) in refusals {
        let a = t.exchange(request, &[true]);
        assert_eq!(a[0].status, status, "{name}");
        assert_eq!(a[0].header("connection"), Some("close"), "{name}");
        assert!(a[0].header("content-length").is_some(), "{name}");
    }
    let a = t.exchange(&long_get, &[false]);
    assert_eq!(a[0].status, 431, "{name}: a long request line");
    assert!(!a[0].body.is_empty(), "{name}: GET refusals carry a body");

    // HTTP/1.0: a kept connection is announced, and the next request on it is served.
    let req = format!(
        "GET {get_path} HTTP/1.0\r\nConnection: keep-alive\r\n\r\nHEAD {get_path} HTTP/1.0\r\n\r\n"
    );
    let a = t.exchange(req.as_bytes(), &[false, true]);
    assert_eq!(a[0].header("connection"), Some("keep-alive"), "{name}");
    assert_eq!(a[1].header("connection"), Some("close"), "{name}");
    assert_eq!(a[0].status, a[1].status, "{name}");

    // Expect: 100-continue: the interim answer comes before the body is sent, or the final
    // 413 where the listener takes no request body (BitTorrent HTTP).
    let mut s = t.connect();
    s.write_all(b"POST / HTTP/1.1\r\nContent-Type: application/ppsp-tracker+json\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
        .unwrap();
    s.flush().unwrap();
    let mut interim = [0u8; 25];
    s.read_exact(&mut interim).expect("an interim answer");
    let expected: &[u8] = if t.takes_bodies {
        b"HTTP/1.1 100 Continue\r\n\r\n"
    } else {
        b"HTTP/1.1 413 "
    };
    assert!(
        interim.starts_with(expected),
        "{name}: {:?}",
        String::from_utf8_lossy(&interim)
    );
}

#[test]
fn every_http_listener_in_plaintext_tls_ipv4_and_ipv6_keeps_http_semantics() {
    let ipv6 = std::net::TcpListener::bind("[::1]:0").is_ok();
    let family = |v6: bool| if v6 { "[::1]:0" } else { "127.0.0.1:0" };
    let listen = |v6: bool| {
        if v6 {
            format!("[\"{}\", \"{}\"]", family(false), family(true))
        } else {
            format!("[\"{}\"]", family(false))
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, client) = certificate(dir.path());
    let common = |tls: bool| {
        let mut sets = vec![
            format!("ppstp.listen={}", listen(ipv6)),
            format!("admin.listen={}", listen(ipv6)),
            format!("bt_http.listen={}", listen(ipv6)),
            r#"bt_udp.listen=["127.0.0.1:0"]"#.to_owned(),
            "server.workers=2".to_owned(),
        ];
        if tls {
            for l in ["ppstp", "bt_http"] {
                sets.push(format!("{l}.tls.enabled=true"));
                sets.push(format!("{l}.tls.cert=\"{cert}\""));
                sets.push(format!("{l}.tls.key=\"{key}\""));
            }
        }
        sets
    };
    let plain = start(common(false));
    let tls = start(common(true));
    let mut targets = Vec::new();
    for (server, secure) in [(&plain, false), (&tls, true)] {
        let client = secure.then(|| client.clone());
        let kind = if secure { "TLS" } else { "plaintext" };
        for &addr in server.bt_http_addrs() {
            targets.push(Target {
                name: format!("BitTorrent HTTP {kind} {addr}"),
                addr,
                tls: client.clone(),
                get_path: Some(announce_path()),
                allow: "GET, HEAD",
                takes_bodies: false,
            });
        }
        for &addr in server.ppstp_addrs() {
            targets.push(Target {
                name: format!("PPSTP {kind} {addr}"),
                addr,
                tls: client.clone(),
                get_path: None,
                allow: "POST",
                takes_bodies: true,
            });
        }
    }
    for &addr in plain.admin_addrs() {
        targets.push(Target {
            name: format!("admin {addr}"),
            addr,
            tls: None,
            get_path: Some("/status".to_owned()),
            allow: "GET, HEAD",
            takes_bodies: true,
        });
    }
    assert_eq!(targets.len(), if ipv6 { 10 } else { 5 });
    for t in &targets {
        check(t);
    }
    plain.shutdown();
    tls.shutdown();
}
