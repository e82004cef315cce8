//! PPSTP over TLS and peer authentication (RFC 7846 §4) with real clients: curl for each mode
//! of the README (server certificate only, client certificate, Digest), and a rustls client
//! for pipelining, identity binding and certificate reloads. Certificates are made with rcgen
//! in a temporary directory.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{body, connect_body, find_body, ppstp_post, ResponseReader, TestServer, CONTENT_TYPE};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::json;
use sha2::Digest;

/// A test CA and the files the tracker and the clients need.
struct Pki {
    dir: tempfile::TempDir,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

/// A certificate and its key, as PEM files and DER.
struct Leaf {
    cert: PathBuf,
    key: PathBuf,
    der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl Pki {
    fn new() -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "ppsp test CA");
        let ca = params.self_signed(&ca_key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        Pki { dir, ca, ca_key }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn ca_pem(&self) -> PathBuf {
        self.path("ca.pem")
    }

    /// A certificate for `cn`, signed by the CA (or self-signed), written as `name.pem` and
    /// `name.key` (mode 0600).
    fn leaf(&self, name: &str, cn: &str, client: bool, self_signed: bool) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let sans = if client {
            Vec::new()
        } else {
            vec!["localhost".to_owned(), "127.0.0.1".to_owned()]
        };
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let cert = if self_signed {
            params.self_signed(&key).unwrap()
        } else {
            params.signed_by(&key, &self.ca, &self.ca_key).unwrap()
        };
        let cert_path = self.path(&format!("{name}.pem"));
        let key_path = self.path(&format!("{name}.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        write_secret(&key_path, &key.serialize_pem());
        Leaf {
            cert: cert_path,
            key: key_path,
            der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }
}

fn write_secret(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn fingerprint(der: &[u8]) -> String {
    sha2::Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn tls_server(pki: &Pki, server: &Leaf, extra: &[String]) -> TestServer {
    let mut sets = vec![
        "ppstp.tls.enabled=true".to_owned(),
        format!("ppstp.tls.cert=\"{}\"", server.cert.display()),
        format!("ppstp.tls.key=\"{}\"", server.key.display()),
    ];
    sets.extend(extra.iter().cloned());
    let _ = pki;
    let refs: Vec<&str> = sets.iter().map(String::as_str).collect();
    TestServer::start(&refs)
}

/// What curl got: the final HTTP status, every header block, the final body, and its exit code.
struct CurlResult {
    exit: i32,
    status: u16,
    headers: String,
    body: String,
}

fn curl(dir: &Path, url: &str, body: &str, args: &[&str]) -> CurlResult {
    let body_path = dir.join("curl-body");
    let head_path = dir.join("curl-head");
    let _ = std::fs::remove_file(&body_path);
    let _ = std::fs::remove_file(&head_path);
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "60", "-o"])
        .arg(&body_path)
        .arg("-D")
        .arg(&head_path)
        .args(["-w", "%{http_code}", "-H"])
        .arg(format!("Content-Type: {CONTENT_TYPE}"))
        .args(["--data-binary", body])
        .args(args)
        .arg(url)
        .output()
        .expect("curl runs");
    CurlResult {
        exit: out.status.code().unwrap_or(-1),
        status: String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0),
        headers: std::fs::read_to_string(&head_path).unwrap_or_default(),
        body: std::fs::read_to_string(&body_path).unwrap_or_default(),
    }
}

fn ppstp_json(text: &str) -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"));
    v["PPSPTrackerProtocol"].clone()
}

fn error_code(ppstp: &serde_json::Value) -> u64 {
    ppstp["error_code"].as_u64().unwrap_or(0)
}

fn https(addr: SocketAddr) -> String {
    format!("https://127.0.0.1:{}/", addr.port())
}

/// A blocking rustls client trusting the test CA, with an optional client certificate.
fn tls_connect(
    addr: SocketAddr,
    pki: &Pki,
    client: Option<&Leaf>,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.der().clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some(leaf) => builder
            .with_client_auth_cert(
                vec![leaf.der.clone()],
                PrivateKeyDer::try_from(leaf.key_der.clone()).unwrap(),
            )
            .unwrap(),
    };
    let conn = rustls::ClientConnection::new(
        Arc::new(config),
        ServerName::try_from("127.0.0.1").unwrap().to_owned(),
    )
    .unwrap();
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    sock.set_nodelay(true).unwrap();
    rustls::StreamOwned::new(conn, sock)
}

fn exchange_tls(
    s: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    rx: &mut ResponseReader,
    body: &str,
) -> common::HttpResponse {
    s.write_all(&ppstp_post(body)).unwrap();
    rx.read(s).expect("an answer")
}

#[test]
fn curl_connects_and_finds_over_tls_with_the_server_certificate_only() {
    let pki = Pki::new();
    let server_cert = pki.leaf("server", "localhost", false, false);
    let server = tls_server(&pki, &server_cert, &[]);
    let url = https(server.ppstp);
    let ca = pki.ca_pem();
    let ca = ca.to_str().unwrap();

    let r = curl(
        pki.dir.path(),
        &url,
        &connect_body("1", "peer-a", &[("s1", "SEEDER")]),
        &["--cacert", ca],
    );
    assert_eq!((r.exit, r.status), (0, 200), "{}", r.body);
    assert_eq!(error_code(&ppstp_json(&r.body)), 0);
    let r = curl(
        pki.dir.path(),
        &url,
        &connect_body("2", "peer-b", &[]),
        &["--cacert", ca],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = curl(
        pki.dir.path(),
        &url,
        &find_body("3", "peer-b", "s1", 5),
        &["--cacert", ca],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let found = ppstp_json(&r.body);
    assert!(found.to_string().contains("peer-a"), "{found}");
    // A client that does not trust the CA refuses the server.
    let r = curl(
        pki.dir.path(),
        &url,
        &find_body("4", "peer-b", "s1", 5),
        &[],
    );
    assert_ne!(r.exit, 0, "curl must refuse an unknown CA");
    // Plaintext HTTP to the TLS port is no request: nothing registered, connection closed.
    let r = curl(
        pki.dir.path(),
        &format!("http://127.0.0.1:{}/", server.ppstp.port()),
        &connect_body("5", "peer-x", &[]),
        &[],
    );
    assert_ne!(r.status, 200);
    assert!(!server
        .server
        .as_ref()
        .unwrap()
        .metrics_text()
        .contains("peer-x"));
}

#[test]
fn client_certificates_bind_the_peer_id() {
    let pki = Pki::new();
    let server_cert = pki.leaf("server", "localhost", false, false);
    // peer-a: self-signed, listed by fingerprint. peer-c: issued by the CA, bound by its CN.
    let a = pki.leaf("peer-a", "anything", true, true);
    let c = pki.leaf("peer-c", "peer-c", true, false);
    let stranger = pki.leaf("stranger", "peer-b", true, true);
    let fps = pki.path("fingerprints");
    std::fs::write(&fps, format!("# test\n{} peer-a\n", fingerprint(&a.der))).unwrap();
    let server = tls_server(
        &pki,
        &server_cert,
        &[
            "ppstp.auth.mode=\"client_cert\"".to_owned(),
            format!("ppstp.auth.client_fingerprints=\"{}\"", fps.display()),
            format!("ppstp.auth.client_ca=\"{}\"", pki.ca_pem().display()),
        ],
    );
    let url = https(server.ppstp);
    let ca = pki.ca_pem();
    let ca = ca.to_str().unwrap();
    let cert_args = |leaf: &Leaf| -> Vec<String> {
        vec![
            "--cacert".into(),
            ca.into(),
            "--cert".into(),
            leaf.cert.display().to_string(),
            "--key".into(),
            leaf.key.display().to_string(),
        ]
    };

    // The listed certificate works as its peer id.
    let args = cert_args(&a);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = curl(
        pki.dir.path(),
        &url,
        &connect_body("1", "peer-a", &[("s1", "SEEDER")]),
        &args,
    );
    assert_eq!((r.exit, r.status), (0, 200), "{}", r.body);
    // The CA-issued certificate works as its common name.
    let args = cert_args(&c);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = curl(
        pki.dir.path(),
        &url,
        &connect_body("2", "peer-c", &[]),
        &args,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = curl(
        pki.dir.path(),
        &url,
        &find_body("3", "peer-c", "s1", 5),
        &args,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("peer-a"), "{}", r.body);
    // An unlisted certificate from no trusted CA is refused in the handshake.
    let args = cert_args(&stranger);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = curl(
        pki.dir.path(),
        &url,
        &connect_body("4", "peer-b", &[("s1", "SEEDER")]),
        &args,
    );
    assert_ne!(r.exit, 0, "unlisted certificate accepted: {}", r.body);
    // No certificate at all: refused too.
    let r = curl(
        pki.dir.path(),
        &url,
        &connect_body("5", "peer-b", &[]),
        &["--cacert", ca],
    );
    assert_ne!(r.exit, 0, "no certificate accepted: {}", r.body);

    // peer-a's certificate cannot act as peer-c: CONNECT, JOIN, LEAVE and DISCONNECT get 03
    // and change nothing.
    let mut s = tls_connect(server.ppstp, &pki, Some(&a));
    let mut rx = ResponseReader::new();
    let attempts = [
        connect_body("10", "peer-c", &[("s9", "SEEDER")]),
        body(
            "JOIN",
            "11",
            "peer-c",
            Some(("join", json!({"swarm_id": "s1", "peer_mode": "SEEDER"}))),
        ),
        body(
            "LEAVE",
            "12",
            "peer-c",
            Some(("leave", json!({"swarm_id": "s1"}))),
        ),
        body("DISCONNECT", "13", "peer-c", None),
    ];
    for attempt in &attempts {
        let r = exchange_tls(&mut s, &mut rx, attempt);
        assert_eq!(r.status, 403, "{attempt}");
        assert_eq!(error_code(&r.ppstp()), 3, "{attempt}");
    }
    // peer-c is still registered and not in s9; peer-a still seeds s1.
    let r = exchange_tls(&mut s, &mut rx, &find_body("14", "peer-a", "s1", 5));
    assert_eq!(r.status, 200);
    let mut sc = tls_connect(server.ppstp, &pki, Some(&c));
    let mut rxc = ResponseReader::new();
    let r = exchange_tls(&mut sc, &mut rxc, &find_body("15", "peer-c", "s1", 5));
    assert_eq!(r.status, 200, "peer-c must still be registered");
    assert!(r.ppstp().to_string().contains("peer-a"));
    let r = exchange_tls(&mut sc, &mut rxc, &find_body("16", "peer-c", "s9", 5));
    assert!(
        !r.ppstp().to_string().contains("peer-c\""),
        "s9 must not have been joined: {}",
        r.ppstp()
    );
    // And the binding holds the other way: peer-c cannot act as peer-a.
    let r = exchange_tls(&mut sc, &mut rxc, &body("DISCONNECT", "17", "peer-a", None));
    assert_eq!(error_code(&r.ppstp()), 3);
    let r = exchange_tls(&mut s, &mut rx, &find_body("18", "peer-a", "s1", 5));
    assert_eq!(r.status, 200, "peer-a is still registered");
}

/// RFC 7616 §3.4.1, SHA-256, qop=auth.
fn digest_response(
    user: &str,
    realm: &str,
    secret: &str,
    nonce: &str,
    nc: &str,
    uri: &str,
) -> String {
    let h = |s: String| -> String {
        sha2::Sha256::digest(s.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let ha1 = h(format!("{user}:{realm}:{secret}"));
    let ha2 = h(format!("POST:{uri}"));
    h(format!("{ha1}:{nonce}:{nc}:0a4f113b:auth:{ha2}"))
}

fn challenge_nonce(header: &str) -> String {
    let start = header.find("nonce=\"").expect("a nonce") + 7;
    let end = header[start..].find('"').unwrap() + start;
    header[start..end].to_owned()
}

fn digest_post(body: &str, auth: Option<String>) -> Vec<u8> {
    let mut req = format!(
        "POST / HTTP/1.1\r\nHost: t\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(auth) = auth {
        req.push_str(&format!("Authorization: {auth}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    req.into_bytes()
}

#[test]
fn digest_authenticates_peers_and_refuses_wrong_secrets_and_replays() {
    let pki = Pki::new();
    let server_cert = pki.leaf("server", "localhost", false, false);
    let creds = pki.path("credentials");
    write_secret(&creds, "# peers\npeer-a:secret-a\npeer-b:secret-b\n");
    let server = tls_server(
        &pki,
        &server_cert,
        &[
            "ppstp.auth.mode=\"digest\"".to_owned(),
            format!("ppstp.auth.credentials=\"{}\"", creds.display()),
        ],
    );
    let url = https(server.ppstp);
    let ca = pki.ca_pem();
    let ca = ca.to_str().unwrap();

    // curl answers the challenge and gets through.
    let r = curl(
        pki.dir.path(),
        &url,
        &connect_body("1", "peer-a", &[("s1", "SEEDER")]),
        &["--cacert", ca, "--digest", "-u", "peer-a:secret-a"],
    );
    assert_eq!((r.exit, r.status), (0, 200), "{}\n{}", r.headers, r.body);
    assert!(r.headers.contains("algorithm=SHA-256"), "{}", r.headers);
    // A wrong secret: 401, error 06, a fresh challenge, and nothing registered.
    let r = curl(
        pki.dir.path(),
        &url,
        &connect_body("2", "peer-b", &[("s1", "LEECH")]),
        &["--cacert", ca, "--digest", "-u", "peer-b:wrong"],
    );
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(error_code(&ppstp_json(&r.body)), 6);
    assert!(r
        .headers
        .contains("WWW-Authenticate: Digest realm=\"ppsp-tracker\""));
    // Authenticated as peer-b, acting as peer-a: 03.
    let r = curl(
        pki.dir.path(),
        &url,
        &body("DISCONNECT", "3", "peer-a", None),
        &["--cacert", ca, "--digest", "-u", "peer-b:secret-b"],
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(error_code(&ppstp_json(&r.body)), 3);
    let r = curl(
        pki.dir.path(),
        &url,
        &find_body("4", "peer-a", "s1", 5),
        &["--cacert", ca, "--digest", "-u", "peer-a:secret-a"],
    );
    assert_eq!(r.status, 200, "peer-a is still registered: {}", r.body);

    // Replays, spelled out over one TLS connection.
    let mut s = tls_connect(server.ppstp, &pki, None);
    let mut rx = ResponseReader::new();
    let find = find_body("5", "peer-a", "s1", 5);
    s.write_all(&digest_post(&find, None)).unwrap();
    let challenge = rx.read(&mut s).unwrap();
    assert_eq!(challenge.status, 401);
    assert_eq!(error_code(&challenge.ppstp()), 6);
    let header = challenge.header("WWW-Authenticate").unwrap().to_owned();
    assert!(header.contains("qop=\"auth\""), "{header}");
    let nonce = challenge_nonce(&header);
    let auth_with = |nonce: &str, nc: &str| {
        format!(
            "Digest username=\"peer-a\", realm=\"ppsp-tracker\", nonce=\"{nonce}\", uri=\"/\", algorithm=SHA-256, qop=auth, nc={nc}, cnonce=\"0a4f113b\", response=\"{}\"",
            digest_response("peer-a", "ppsp-tracker", "secret-a", nonce, nc, "/")
        )
    };
    let auth = |nc: &str| auth_with(&nonce, nc);
    s.write_all(&digest_post(&find, Some(auth("00000001"))))
        .unwrap();
    assert_eq!(rx.read(&mut s).unwrap().status, 200);
    // The same request again (same nonce, same count): refused.
    s.write_all(&digest_post(&find, Some(auth("00000001"))))
        .unwrap();
    let replay = rx.read(&mut s).unwrap();
    assert_eq!(replay.status, 401, "a replayed nonce count must be refused");
    assert_eq!(error_code(&replay.ppstp()), 6);
    // The next count on the same nonce is fine.
    s.write_all(&digest_post(&find, Some(auth("00000002"))))
        .unwrap();
    assert_eq!(rx.read(&mut s).unwrap().status, 200);
    // A nonce the tracker never issued: stale.
    let forged = auth_with(&"0".repeat(32), "00000001");
    s.write_all(&digest_post(&find, Some(forged))).unwrap();
    let r = rx.read(&mut s).unwrap();
    assert_eq!(r.status, 401);
    let header = r.header("WWW-Authenticate").unwrap();
    assert!(header.contains("stale=true"), "{header}");
}

#[test]
fn ten_thousand_pipelined_requests_over_one_tls_connection_come_back_in_order() {
    let pki = Pki::new();
    let server_cert = pki.leaf("server", "localhost", false, false);
    let server = tls_server(&pki, &server_cert, &[]);
    let mut s = tls_connect(server.ppstp, &pki, None);
    let mut rx = ResponseReader::new();
    let r = exchange_tls(
        &mut s,
        &mut rx,
        &connect_body("c", "peer-a", &[("s1", "SEEDER")]),
    );
    assert_eq!(r.status, 200);
    const TOTAL: usize = 10_000;
    const BATCH: usize = 100;
    const IN_FLIGHT: usize = 1_000;
    let deadline = Instant::now() + Duration::from_secs(300);
    let (mut sent, mut received) = (0, 0);
    while received < TOTAL {
        assert!(Instant::now() < deadline, "pipelining took too long");
        if sent < TOTAL && sent - received < IN_FLIGHT {
            let mut batch = Vec::new();
            for i in sent..(sent + BATCH).min(TOTAL) {
                batch.extend_from_slice(&ppstp_post(&find_body(
                    &format!("t{i}"),
                    "peer-a",
                    "s1",
                    1,
                )));
            }
            s.write_all(&batch).unwrap();
            sent = (sent + BATCH).min(TOTAL);
            continue;
        }
        let r = rx.read(&mut s).expect("an answer for every request");
        assert_eq!(r.status, 200);
        assert_eq!(
            r.ppstp()["transaction_id"],
            json!(format!("t{received}")),
            "answers come back in request order"
        );
        received += 1;
    }
}

#[test]
fn stalled_or_garbage_handshakes_time_out_are_counted_and_hold_no_worker() {
    let pki = Pki::new();
    let server_cert = pki.leaf("server", "localhost", false, false);
    let server = tls_server(
        &pki,
        &server_cert,
        &[
            "ppstp.tls.handshake_timeout_ms=300".to_owned(),
            "server.workers=1".to_owned(),
        ],
    );
    // One connection says nothing, one sends plaintext HTTP, one sends random bytes.
    let mut stalled = TcpStream::connect(server.ppstp).unwrap();
    stalled
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut plain = TcpStream::connect(server.ppstp).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    plain
        .write_all(&ppstp_post(&connect_body("1", "p", &[])))
        .unwrap();
    let mut garbage = TcpStream::connect(server.ppstp).unwrap();
    garbage
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    garbage
        .write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3])
        .unwrap();
    garbage.write_all(&[0xaa; 600]).unwrap();

    // The only worker still serves a real client meanwhile.
    let mut s = tls_connect(server.ppstp, &pki, None);
    let mut rx = ResponseReader::new();
    let r = exchange_tls(&mut s, &mut rx, &connect_body("2", "peer-a", &[]));
    assert_eq!(r.status, 200);

    // Every bad connection is closed: EOF or reset, but never an HTTP answer.
    for (name, conn) in [
        ("stalled", &mut stalled),
        ("plain", &mut plain),
        ("garbage", &mut garbage),
    ] {
        let mut buf = Vec::new();
        let _ = conn.read_to_end(&mut buf);
        assert!(
            !String::from_utf8_lossy(&buf).contains("HTTP/1.1"),
            "{name} got an HTTP answer"
        );
    }
    let text = server.server.as_ref().unwrap().metrics_text();
    let count = |reason: &str| -> u64 {
        let key =
            format!("ppsp_connections_closed_total{{listener=\"ppstp\",reason=\"{reason}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&key))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {key} in\n{text}"))
    };
    assert!(count("tls_handshake_timeout") >= 1, "{text}");
    assert!(count("tls_handshake_failed") >= 2, "{text}");
    // The good connection was not counted as failed, and still works.
    let r = exchange_tls(&mut s, &mut rx, &find_body("3", "peer-a", "s1", 1));
    assert_eq!(r.status, 200);
}

#[test]
fn certificates_reload_without_dropping_connections() {
    let pki = Pki::new();
    let first = pki.leaf("server", "localhost", false, false);
    let server = tls_server(&pki, &first, &[]);
    let mut old = tls_connect(server.ppstp, &pki, None);
    let mut rx = ResponseReader::new();
    assert_eq!(
        exchange_tls(&mut old, &mut rx, &connect_body("1", "peer-a", &[])).status,
        200
    );
    // New files at the same paths, then what SIGHUP does.
    let second = pki.leaf("server", "localhost", false, false);
    assert_ne!(first.der, second.der);
    server.server.as_ref().unwrap().reload_tls().unwrap();
    // The open connection goes on.
    assert_eq!(
        exchange_tls(&mut old, &mut rx, &find_body("2", "peer-a", "s1", 1)).status,
        200
    );
    assert_eq!(
        old.conn.peer_certificates().unwrap()[0],
        first.der,
        "the open connection keeps its certificate"
    );
    // A new connection gets the new certificate.
    let mut new = tls_connect(server.ppstp, &pki, None);
    let mut rx2 = ResponseReader::new();
    assert_eq!(
        exchange_tls(&mut new, &mut rx2, &find_body("3", "peer-a", "s1", 1)).status,
        200
    );
    assert_eq!(new.conn.peer_certificates().unwrap()[0], second.der);
    // A broken key keeps the configuration in force, and the error names the file.
    write_secret(&second.key, "not a key");
    let e = server.server.as_ref().unwrap().reload_tls().unwrap_err();
    assert!(e.contains("server.key"), "{e}");
    let mut third = tls_connect(server.ppstp, &pki, None);
    let mut rx3 = ResponseReader::new();
    assert_eq!(
        exchange_tls(&mut third, &mut rx3, &find_body("4", "peer-a", "s1", 1)).status,
        200
    );
}

fn start_error(sets: &[String]) -> String {
    let mut all = vec![
        "ppstp.listen=127.0.0.1:0".to_owned(),
        "admin.enabled=false".to_owned(),
    ];
    all.extend(sets.iter().cloned());
    match ppsp_tracker::config::Config::load(None, &all) {
        Err(e) => e.to_string(),
        Ok(config) => match ppsp_tracker::server::Server::start(&config) {
            Ok(_) => panic!("must not start with {sets:?}"),
            Err(e) => format!("{e:#}"),
        },
    }
}

#[test]
fn weak_or_broken_tls_configurations_are_refused_at_start_naming_the_cause() {
    let pki = Pki::new();
    let server = pki.leaf("server", "localhost", false, false);
    let base = |key: &Path| {
        vec![
            "ppstp.tls.enabled=true".to_owned(),
            format!("ppstp.tls.cert=\"{}\"", server.cert.display()),
            format!("ppstp.tls.key=\"{}\"", key.display()),
        ]
    };
    let missing = pki.path("missing.key");
    let e = start_error(&base(&missing));
    assert!(e.contains("missing.key"), "{e}");
    std::fs::set_permissions(&server.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = start_error(&base(&server.key));
    assert!(e.contains("server.key") && e.contains("644"), "{e}");
    std::fs::set_permissions(&server.key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut old = base(&server.key);
    old.push("ppstp.tls.min_version=\"1.1\"".to_owned());
    let e = start_error(&old);
    assert!(
        e.contains("ppstp.tls.min_version") && e.contains("RFC 8996"),
        "{e}"
    );
    let e = start_error(&["ppstp.auth.mode=\"client_cert\"".to_owned()]);
    assert!(e.contains("ppstp.tls.enabled"), "{e}");
}

#[test]
fn bittorrent_announces_work_over_tls() {
    let pki = Pki::new();
    let cert = pki.leaf("server", "localhost", false, false);
    let server = TestServer::start(&[
        "bt_http.enabled=true",
        "bt_http.listen=127.0.0.1:0",
        "bt_http.tls.enabled=true",
        &format!("bt_http.tls.cert=\"{}\"", cert.cert.display()),
        &format!("bt_http.tls.key=\"{}\"", cert.key.display()),
    ]);
    let addr = server.server.as_ref().unwrap().bt_http_addr().unwrap();
    let url = format!(
        "https://127.0.0.1:{}/announce?info_hash=%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB&peer_id=aaaaaaaaaaaaaaaaaaaa&port=6881&uploaded=0&downloaded=0&left=0&compact=1",
        addr.port()
    );
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "60", "--cacert"])
        .arg(pki.ca_pem())
        .arg(&url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("8:completei1e"), "{text}");
}
