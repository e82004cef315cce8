//! Bad input over real TCP: every malformed, oversized or unauthorised request gets its
//! specified error, changes nothing, and the server keeps serving others.

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;

use common::*;
use serde_json::{json, Value};

/// The JSON error body every refusal carries.
fn assert_error(r: &HttpResponse, status: u16, code: u64) -> Value {
    assert_eq!(r.status, status, "{:?}", String::from_utf8_lossy(&r.body));
    let a = r.ppstp();
    assert_eq!(a["response_type"], json!(1), "{a}");
    assert_eq!(error_code(&a), code, "{a}");
    a
}

/// The server still answers a fresh, valid request.
fn still_serving(server: &TestServer) {
    let r = roundtrip(
        server.ppstp,
        &ppstp_post(&connect_body("alive", "bystander", &[("ok", "SEEDER")])),
    );
    assert_eq!(r.status, 200);
}

fn status(server: &TestServer) -> Value {
    http_get(server.admin, "/status").json()
}

#[test]
fn http_level_faults_get_http_answers_with_the_json_error_body() {
    let server = TestServer::start(&["ppstp.max_body_bytes=4096"]);
    let valid = connect_body("1", "p", &[("s", "SEEDER")]);

    // No Content-Length: 411.
    let req = format!("POST / HTTP/1.1\r\nContent-Type: {CONTENT_TYPE}\r\n\r\n{valid}");
    assert_error(&roundtrip(server.ppstp, req.as_bytes()), 411, 1);

    // Chunked transfer coding is refused the same way.
    let req = format!("POST / HTTP/1.1\r\nContent-Type: {CONTENT_TYPE}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    assert_error(&roundtrip(server.ppstp, req.as_bytes()), 411, 1);

    // Non-numeric Content-Length: 400.
    let req =
        format!("POST / HTTP/1.1\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: ten\r\n\r\n");
    assert_error(&roundtrip(server.ppstp, req.as_bytes()), 400, 1);

    // A Content-Length shorter than the JSON: the body is cut, so it is not valid JSON (400),
    // and the rest of the bytes are not a request (400, then close).
    let req = format!(
        "POST / HTTP/1.1\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\n\r\n{valid}",
        valid.len() - 5
    );
    assert_error(&roundtrip(server.ppstp, req.as_bytes()), 400, 1);

    // An oversized body is refused from its head alone, before the body is sent.
    let mut s = server.connect();
    s.write_all(
        format!(
            "POST / HTTP/1.1\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: 1000000\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    assert_error(&ResponseReader::new().read(&mut s).unwrap(), 413, 1);

    // Wrong content type: 415.
    assert_error(
        &roundtrip(
            server.ppstp,
            &http_post("/", "text/plain", valid.as_bytes()),
        ),
        415,
        1,
    );

    // Garbage instead of HTTP: 400.
    assert_error(
        &roundtrip(server.ppstp, b"\x00\x01\x02 not http\r\n\r\n"),
        400,
        1,
    );

    // Truncated HTTP: the head never completes and the client closes its side. The server
    // answers 400 (or just closes) and registers nothing.
    let mut s = server.connect();
    s.write_all(
        format!("POST / HTTP/1.1\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Len").as_bytes(),
    )
    .unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    if !rest.is_empty() {
        assert!(
            rest.starts_with(b"HTTP/1.1 400"),
            "{:?}",
            String::from_utf8_lossy(&rest)
        );
    }
    // A truncated body (Content-Length larger than what arrives before EOF) registers nothing.
    let mut s = server.connect();
    s.write_all(
        format!(
            "POST / HTTP/1.1\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\n\r\n{}",
            valid.len(),
            &valid[..20]
        )
        .as_bytes(),
    )
    .unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    if !rest.is_empty() {
        assert!(
            rest.starts_with(b"HTTP/1.1 400"),
            "{:?}",
            String::from_utf8_lossy(&rest)
        );
    }

    assert_eq!(
        status(&server)["peers"],
        json!(0),
        "a refused request registered a peer"
    );
    still_serving(&server);
}

#[test]
fn json_level_faults_get_the_protocol_error_and_change_nothing() {
    let server = TestServer::start(&[]);
    let cases: Vec<(String, u16, u64)> = vec![
        // Invalid JSON.
        ("{\"PPSPTrackerProtocol\": {\"version\": 1,".into(), 400, 1),
        ("[]".into(), 400, 1),
        // Wrong types.
        (json!({"PPSPTrackerProtocol": {"version": 1, "request_type": "CONNECT", "transaction_id": "x", "peer_id": 12, "connect": {"swarm_action": []}}}).to_string(), 400, 1),
        (json!({"PPSPTrackerProtocol": {"version": 1, "request_type": "CONNECT", "transaction_id": "x", "peer_id": "p", "connect": {"swarm_action": [{"swarm_id": "s", "action": "DANCE", "peer_mode": "LEECH"}]}}}).to_string(), 400, 1),
        (json!({"PPSPTrackerProtocol": {"version": 1, "request_type": "FIND", "transaction_id": "x", "peer_id": "p", "find": {"swarm_id": "s", "chunks": [[9, 1]]}}}).to_string(), 400, 1),
        // Unknown request type.
        (body("TELEPORT", "x", "p", None), 400, 1),
        // Unsupported version.
        (json!({"PPSPTrackerProtocol": {"version": 7, "request_type": "KEEPALIVE", "transaction_id": "x", "peer_id": "p"}}).to_string(), 400, 2),
        // Ids over the length limit (64 bytes).
        (connect_body("x", &"p".repeat(65), &[("s", "SEEDER")]), 400, 1),
        (connect_body("x", "p", &[(&"s".repeat(65), "SEEDER")]), 400, 1),
        // Requests from an unregistered peer are forbidden.
        (find_body("x", "stranger", "s", 5), 403, 3),
        (body("KEEPALIVE", "x", "stranger", None), 403, 3),
    ];
    let mut s = server.connect();
    let mut rx = ResponseReader::new();
    for (body, status_code, code) in &cases {
        let r = exchange(&mut s, &mut rx, &ppstp_post(body));
        let a = assert_error(&r, *status_code, *code);
        // The transaction id comes back whenever it could be read.
        if body.contains("\"transaction_id\":\"x\"") && *code != 1 {
            assert_eq!(a["transaction_id"], json!("x"));
        }
    }
    let st = status(&server);
    assert_eq!(st["peers"], json!(0), "{st}");
    assert_eq!(st["swarms"], json!(0), "{st}");
    still_serving(&server);
}

#[test]
fn a_peer_cannot_grow_the_tables_beyond_the_limits() {
    // One peer joins 100,000 distinct swarms, pipelined on one connection. Only
    // max_swarms_per_peer of them succeed; every other gets 01 for its swarm; memory (swarm
    // count) stays bounded and others are still served.
    const N: usize = 100_000;
    let server = TestServer::start(&["engine.max_swarms_per_peer=50"]);
    let mut s = server.connect();
    let mut rx = ResponseReader::new();
    let a = exchange(
        &mut s,
        &mut rx,
        &ppstp_post(&connect_body("c", "greedy", &[("g-0", "SEEDER")])),
    );
    assert_eq!(a.status, 200);
    let mut writer = s.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let mut batch = Vec::with_capacity(1 << 20);
        for i in 1..N {
            let join = body(
                "JOIN",
                &i.to_string(),
                "greedy",
                Some((
                    "join",
                    json!({"swarm_id": format!("g-{i}"), "peer_mode": "SEEDER"}),
                )),
            );
            batch.extend_from_slice(&ppstp_post(&join));
            if batch.len() > (1 << 20) {
                writer.write_all(&batch).unwrap();
                batch.clear();
            }
        }
        writer.write_all(&batch).unwrap();
    });
    let mut accepted = 1;
    let mut refused = 0;
    for i in 1..N {
        let r = rx.read(&mut s).expect("response");
        let a = r.ppstp();
        assert_eq!(a["transaction_id"], json!(i.to_string()));
        let results = swarm_results(&a);
        let ok = r.status == 200
            && error_code(&a) == 0
            && results.iter().all(|x| x["result"] == json!(0));
        if ok {
            accepted += 1;
        } else {
            refused += 1;
            let code = if results.is_empty() {
                error_code(&a)
            } else {
                results[0]["result"].as_u64().unwrap()
            };
            assert_eq!(code, 1, "{a}");
        }
    }
    sender.join().unwrap();
    assert_eq!(accepted, 50);
    assert_eq!(refused, N - 50);
    let st = status(&server);
    assert_eq!(st["swarms"], json!(50), "{st}");
    assert_eq!(st["peers"], json!(1), "{st}");
    still_serving(&server);
}

#[test]
fn a_full_table_answers_service_unavailable() {
    let server = TestServer::start(&["engine.max_peers=3"]);
    for i in 0..3 {
        let r = roundtrip(
            server.ppstp,
            &ppstp_post(&connect_body("1", &format!("p{i}"), &[("s", "SEEDER")])),
        );
        assert_eq!(r.status, 200);
    }
    let r = roundtrip(
        server.ppstp,
        &ppstp_post(&connect_body("1", "p3", &[("s", "SEEDER")])),
    );
    assert_error(&r, 503, 5);
    assert_eq!(status(&server)["peers"], json!(3));
}
