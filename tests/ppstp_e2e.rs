//! End-to-end PPSTP over real TCP connections to an in-process server on loopback: RFC 7846's
//! example messages, every request type, pipelining and concurrency.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::thread;

use common::*;
use serde_json::{json, Value};

/// Key paths of a JSON value, with array positions folded away, each with its JSON kind.
fn shape(v: &Value) -> BTreeSet<(String, &'static str)> {
    fn walk(v: &Value, path: String, out: &mut BTreeSet<(String, &'static str)>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(x, p, out);
                }
            }
            Value::Array(a) => {
                for x in a {
                    walk(x, path.clone(), out);
                }
            }
            Value::String(_) => {
                out.insert((path, "string"));
            }
            Value::Number(_) => {
                out.insert((path, "number"));
            }
            Value::Bool(_) => {
                out.insert((path, "bool"));
            }
            Value::Null => {
                out.insert((path, "null"));
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(v, String::new(), &mut out);
    out
}

/// Asserts that `answer` has the shape of the RFC example response `name`: every member path
/// (and its JSON kind) in the answer occurs in the example, and the example's `required` paths
/// occur in the answer.
/// `peer_addr.type` is allowed everywhere a `peer_addr` appears: RFC 7846 §6.1 defines it as a
/// member of every `peer_addr`, though E4 omits it in the top-level one.
fn assert_shape_of(answer: &Value, name: &str, required: &[&str]) {
    let text = example(name);
    let json_start = text.find('{').unwrap();
    let example: Value = serde_json::from_str(&text[json_start..]).unwrap();
    let ours = shape(answer);
    let theirs = shape(&example["PPSPTrackerProtocol"]);
    for entry in &ours {
        let schema_member = entry.0 == "peer_addr.type" && entry.1 == "string";
        assert!(
            schema_member || theirs.contains(entry),
            "answer member {entry:?} does not occur in {name}; answer: {answer}"
        );
    }
    let our_paths: BTreeSet<&str> = ours.iter().map(|(p, _)| p.as_str()).collect();
    for path in required {
        assert!(
            our_paths.contains(path),
            "answer lacks {path} of {name}: {answer}"
        );
    }
}

/// Checks that the Content-Length the server sent matches the body it sent.
fn assert_exact_length(raw: &HttpResponse) {
    let declared: usize = raw
        .header("content-length")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(declared, raw.body.len());
    assert_eq!(raw.header("content-type"), Some(CONTENT_TYPE));
}

#[test]
fn rfc7846_examples_are_accepted_and_answered_in_the_examples_shapes() {
    let server = TestServer::start(&[]);
    let mut seeder = server.connect();
    let mut seeder_rx = ResponseReader::new();
    let mut leech = server.connect();
    let mut leech_rx = ResponseReader::new();

    // E1 as a full HTTP message (absolute-form target), with its Content-Length recomputed.
    let e1 = example("E1");
    let (head, body) = e1.split_once("\n\n").unwrap();
    let head: String = head
        .lines()
        .map(|l| {
            if l.starts_with("Content-Length:") {
                format!("Content-Length: {}", body.len())
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n");
    let request = format!("{head}\r\n\r\n{body}");
    let r1 = exchange(&mut seeder, &mut seeder_rx, request.as_bytes());
    assert_eq!(r1.status, 200, "{:?}", String::from_utf8_lossy(&r1.body));
    assert_exact_length(&r1);
    let a1 = r1.ppstp();
    assert_eq!(a1["response_type"], json!(0));
    assert_eq!(error_code(&a1), 0);
    assert_eq!(a1["transaction_id"], json!("12345"));
    let joined: BTreeSet<String> = swarm_results(&a1)
        .iter()
        .map(|r| r["swarm_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        joined,
        ["1111", "2222"].iter().map(|s| s.to_string()).collect()
    );

    // E2: a LEECH joins 1111 and gets the seeder of E1, with the address E1 announced.
    let r2 = exchange(&mut leech, &mut leech_rx, &ppstp_post(&example("E2")));
    assert_eq!(r2.status, 200, "{:?}", String::from_utf8_lossy(&r2.body));
    assert_exact_length(&r2);
    let a2 = r2.ppstp();
    assert_eq!(a2["transaction_id"], json!("12345.0"));
    let results = swarm_results(&a2);
    let r1111 = results
        .iter()
        .find(|r| r["swarm_id"] == json!("1111"))
        .unwrap();
    assert_eq!(peer_ids(r1111), vec!["656164657220".to_string()]);
    let info = &r1111["peer_group"]["peer_info"];
    let info = if info.is_array() { &info[0] } else { info };
    let addr = if info["peer_addr"].is_array() {
        &info["peer_addr"][0]
    } else {
        &info["peer_addr"]
    };
    assert_eq!(addr["ip_address"]["address"], json!("192.0.2.2"));
    assert_eq!(addr["port"], json!(80));

    // E5: FIND with swarm_id and peer_num at the top level; the answer has E6's shape and never
    // lists the requester.
    let r5 = exchange(&mut leech, &mut leech_rx, &ppstp_post(&example("E5")));
    assert_eq!(r5.status, 200, "{:?}", String::from_utf8_lossy(&r5.body));
    assert_exact_length(&r5);
    let a5 = r5.ppstp();
    assert_shape_of(
        &a5,
        "E6",
        &[
            "version",
            "response_type",
            "error_code",
            "transaction_id",
            "swarm_result.swarm_id",
            "swarm_result.result",
            "swarm_result.peer_group.peer_info.peer_id",
            "swarm_result.peer_group.peer_info.peer_addr.ip_address.address",
            "swarm_result.peer_group.peer_info.peer_addr.ip_address.address_type",
            "swarm_result.peer_group.peer_info.peer_addr.port",
        ],
    );
    let found = swarm_results(&a5);
    assert_eq!(found.len(), 1);
    assert_eq!(peer_ids(&found[0]), vec!["656164657220".to_string()]);

    // E7: STAT_REPORT with "Stat" as an object; the answer has E8's shape.
    let r7 = exchange(&mut leech, &mut leech_rx, &ppstp_post(&example("E7")));
    assert_eq!(r7.status, 200, "{:?}", String::from_utf8_lossy(&r7.body));
    assert_exact_length(&r7);
    let a7 = r7.ppstp();
    assert_shape_of(
        &a7,
        "E8",
        &[
            "version",
            "response_type",
            "error_code",
            "transaction_id",
            "swarm_result.swarm_id",
            "swarm_result.result",
        ],
    );
    assert_eq!(swarm_results(&a7)[0]["swarm_id"], json!("1111"));
    assert_eq!(swarm_results(&a7)[0]["result"], json!(0));

    // E3: LEAVE 1111 + JOIN 2222 in TRACKING; the answer has E4's shape, with the reflexive
    // address the tracker saw and the seeder of 2222.
    let r3 = exchange(&mut leech, &mut leech_rx, &ppstp_post(&example("E3")));
    assert_eq!(r3.status, 200, "{:?}", String::from_utf8_lossy(&r3.body));
    assert_exact_length(&r3);
    let a3 = r3.ppstp();
    assert_shape_of(
        &a3,
        "E4",
        &[
            "version",
            "response_type",
            "error_code",
            "transaction_id",
            "peer_addr.ip_address.address",
            "peer_addr.port",
            "swarm_result.swarm_id",
            "swarm_result.result",
            "swarm_result.peer_group.peer_info.peer_id",
            "swarm_result.peer_group.peer_info.peer_addr.ip_address.address",
        ],
    );
    assert_eq!(a3["peer_addr"]["ip_address"]["address"], json!("127.0.0.1"));
    let r2222 = swarm_results(&a3)
        .into_iter()
        .find(|r| r["swarm_id"] == json!("2222"))
        .unwrap();
    assert_eq!(peer_ids(&r2222), vec!["656164657220".to_string()]);

    // The leech left 1111: a FIND by the seeder now finds nobody there.
    let f = exchange(
        &mut seeder,
        &mut seeder_rx,
        &ppstp_post(&find_body("f1", "656164657220", "1111", 10)),
    );
    assert_eq!(f.status, 200);
    assert!(peer_ids(&swarm_results(&f.ppstp())[0]).is_empty());
}

fn ok(stream: &mut std::net::TcpStream, rx: &mut ResponseReader, body: &str) -> Value {
    let r = exchange(stream, rx, &ppstp_post(body));
    assert_eq!(
        r.status,
        200,
        "{body} -> {:?}",
        String::from_utf8_lossy(&r.body)
    );
    let a = r.ppstp();
    assert_eq!(error_code(&a), 0);
    assert_eq!(a["response_type"], json!(0));
    a
}

#[test]
fn every_request_type_works_over_tcp() {
    let server = TestServer::start(&[]);
    let mut s = server.connect();
    let mut rx = ResponseReader::new();

    // Two peers register; "a" seeds s1, "b" leeches s1.
    ok(
        &mut s,
        &mut rx,
        &connect_body("1", "peer-a", &[("s1", "SEEDER")]),
    );
    ok(&mut s, &mut rx, &connect_body("2", "peer-b", &[]));
    // JOIN (extension) puts b into s1 as a leech and lists a.
    let a = ok(
        &mut s,
        &mut rx,
        &body(
            "JOIN",
            "3",
            "peer-b",
            Some((
                "join",
                json!({"swarm_id": "s1", "peer_mode": "LEECH", "peer_num": {"peer_count": 5}}),
            )),
        ),
    );
    assert_eq!(peer_ids(&swarm_results(&a)[0]), vec!["peer-a".to_string()]);
    // JOIN_CHUNK: b holds chunks 0..=99 of s1.
    ok(
        &mut s,
        &mut rx,
        &body(
            "JOIN_CHUNK",
            "4",
            "peer-b",
            Some(("join_chunk", json!({"swarm_id": "s1", "chunks": [[0, 99]]}))),
        ),
    );
    // FIND with chunks: only b holds 10..=20; a holds nothing.
    let a = ok(
        &mut s,
        &mut rx,
        &body(
            "FIND",
            "5",
            "peer-a",
            Some(("find", json!({"swarm_id": "s1", "chunks": [[10, 20]]}))),
        ),
    );
    assert_eq!(peer_ids(&swarm_results(&a)[0]), vec!["peer-b".to_string()]);
    let a = ok(
        &mut s,
        &mut rx,
        &body(
            "FIND",
            "6",
            "peer-a",
            Some(("find", json!({"swarm_id": "s1", "chunks": [[50, 150]]}))),
        ),
    );
    assert!(peer_ids(&swarm_results(&a)[0]).is_empty());
    // KEEPALIVE.
    ok(&mut s, &mut rx, &body("KEEPALIVE", "7", "peer-b", None));
    // STAT_REPORT adds to the swarm's statistics, STAT_QUERY reads them.
    ok(
        &mut s,
        &mut rx,
        &body(
            "STAT_REPORT",
            "8",
            "peer-b",
            Some((
                "stat_report",
                json!({"type": "STREAM_STATS", "stat": [{"swarm_id": "s1", "uploaded_bytes": 512, "downloaded_bytes": 768, "available_bandwidth": 1000, "concurrent_links": 3}]}),
            )),
        ),
    );
    let q = ok(
        &mut s,
        &mut rx,
        &body(
            "STAT_QUERY",
            "9",
            "peer-a",
            Some(("stat_query", json!({"swarm_id": "s1"}))),
        ),
    );
    let text = q.to_string();
    assert!(
        text.contains("768") && text.contains("512"),
        "swarm statistics missing: {text}"
    );
    // STAT_QUERY of a peer.
    let q = ok(
        &mut s,
        &mut rx,
        &body(
            "STAT_QUERY",
            "10",
            "peer-a",
            Some(("stat_query", json!({"peer_id": "peer-b"}))),
        ),
    );
    assert!(
        q.to_string().contains("s1"),
        "peer status lacks its swarm: {q}"
    );
    // LEAVE: b leaves s1, a no longer finds it.
    ok(
        &mut s,
        &mut rx,
        &body(
            "LEAVE",
            "11",
            "peer-b",
            Some(("leave", json!({"swarm_id": "s1"}))),
        ),
    );
    let a = ok(&mut s, &mut rx, &find_body("12", "peer-a", "s1", 10));
    assert!(peer_ids(&swarm_results(&a)[0]).is_empty());
    // DISCONNECT "ALL": a leaves everything but stays registered (KEEPALIVE still accepted).
    ok(
        &mut s,
        &mut rx,
        &body(
            "DISCONNECT",
            "13",
            "peer-a",
            Some(("disconnect", json!({"swarm_id": "ALL"}))),
        ),
    );
    ok(&mut s, &mut rx, &body("KEEPALIVE", "14", "peer-a", None));
    // DISCONNECT without swarm id deletes the registration: FIND is now forbidden (03).
    ok(
        &mut s,
        &mut rx,
        &body(
            "DISCONNECT",
            "15",
            "peer-a",
            Some(("disconnect", json!({}))),
        ),
    );
    let r = exchange(
        &mut s,
        &mut rx,
        &ppstp_post(&find_body("16", "peer-a", "s1", 10)),
    );
    assert_eq!(r.status, 403);
    assert_eq!(error_code(&r.ppstp()), 3);
    assert_eq!(r.ppstp()["transaction_id"], json!("16"));
}

#[test]
fn ten_thousand_pipelined_requests_come_back_complete_and_in_order() {
    const N: usize = 10_000;
    let server = TestServer::start(&[]);
    let mut s = server.connect();
    let mut rx = ResponseReader::new();
    ok(
        &mut s,
        &mut rx,
        &connect_body("c", "pipeliner", &[("pipe", "LEECH")]),
    );
    let mut batch = Vec::new();
    for i in 0..N {
        batch.extend_from_slice(&ppstp_post(&find_body(
            &format!("t{i}"),
            "pipeliner",
            "pipe",
            5,
        )));
    }
    // A writer thread, so the server's backpressure cannot deadlock the test.
    let mut writer = s.try_clone().unwrap();
    let sender = thread::spawn(move || writer.write_all(&batch).unwrap());
    for i in 0..N {
        let r = rx.read(&mut s).expect("response");
        assert_eq!(r.status, 200);
        assert_eq!(r.ppstp()["transaction_id"], json!(format!("t{i}")));
    }
    sender.join().unwrap();
}

#[test]
fn two_hundred_concurrent_connections_are_served() {
    let server = TestServer::start(&[]);
    let addr = server.ppstp;
    let handles: Vec<_> = (0..200)
        .map(|i| {
            thread::spawn(move || {
                let mut s = connect(addr);
                let mut rx = ResponseReader::new();
                let peer = format!("conc-{i}");
                let a = ok(
                    &mut s,
                    &mut rx,
                    &connect_body("1", &peer, &[("crowd", "SEEDER")]),
                );
                assert_eq!(error_code(&a), 0);
                s
            })
        })
        .collect();
    // Keep every connection open until all are established, then ask on each.
    let mut streams: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for (i, s) in streams.iter_mut().enumerate() {
        let mut rx = ResponseReader::new();
        let a = ok(
            s,
            &mut rx,
            &find_body("2", &format!("conc-{i}"), "crowd", 10),
        );
        let peers = peer_ids(&swarm_results(&a)[0]);
        assert_eq!(peers.len(), 10);
        assert!(!peers.contains(&format!("conc-{i}")));
    }
}

#[test]
fn admin_listener_serves_metrics_and_status() {
    let server = TestServer::start(&[]);
    let mut s = server.connect();
    let mut rx = ResponseReader::new();
    ok(
        &mut s,
        &mut rx,
        &connect_body("1", "m1", &[("ms", "SEEDER")]),
    );
    let r = exchange(
        &mut s,
        &mut rx,
        &ppstp_post(&find_body("2", "nobody", "ms", 5)),
    );
    assert_eq!(r.status, 403);

    let status = http_get(server.admin, "/status");
    assert_eq!(status.status, 200);
    let st = status.json();
    assert_eq!(st["peers"], json!(1), "{st}");
    assert_eq!(st["swarms"], json!(1), "{st}");
    assert!(
        st["version"].is_string() && st["workers"].as_u64() == Some(2),
        "{st}"
    );

    let metrics = http_get(server.admin, "/metrics");
    assert_eq!(metrics.status, 200);
    let text = String::from_utf8(metrics.body).unwrap();
    assert!(text.contains("connect"), "no CONNECT counter:\n{text}");
    assert!(text.contains("find"), "no FIND counter:\n{text}");
    assert_eq!(http_get(server.admin, "/nope").status, 404);
}

/// A request and what it gets: HTTP status, PPSTP error code, transaction id echoed.
type Expected = (Vec<u8>, u16, Option<u64>, Option<&'static str>);

/// With tables large enough for the server's staged prefetch of pipelined requests (more than
/// `engine.prefetch_min_entries`, set to 32,768 swarms), a pipelined mix of good requests and bad ones in the middle (a body that
/// does not decode, an unregistered peer, the wrong media type, a method not allowed, an id
/// too long) is answered in order, each request as it would be alone.
#[test]
fn a_pipelined_mix_with_bad_requests_in_the_middle_is_answered_in_order_with_large_tables() {
    const PEERS: usize = 4_000;
    const SWARMS_EACH: usize = 9;
    let server = TestServer::start(&["engine.prefetch_min_entries=32768"]);
    let mut s = server.connect();
    let mut rx = ResponseReader::new();
    let mut writer = s.try_clone().unwrap();
    let sender = thread::spawn(move || {
        let mut batch = Vec::new();
        for p in 0..PEERS {
            let swarms: Vec<String> = (0..SWARMS_EACH).map(|k| format!("big-{p}-{k}")).collect();
            let joins: Vec<(&str, &str)> = swarms.iter().map(|s| (s.as_str(), "SEEDER")).collect();
            batch.extend_from_slice(&ppstp_post(&connect_body(
                &format!("c{p}"),
                &format!("peer-{p}"),
                &joins,
            )));
        }
        writer.write_all(&batch).unwrap();
    });
    for p in 0..PEERS {
        let r = rx.read(&mut s).expect("response");
        assert_eq!(r.status, 200);
        assert_eq!(r.ppstp()["transaction_id"], json!(format!("c{p}")));
    }
    sender.join().unwrap();
    let st = http_get(server.admin, "/status").json();
    assert!(
        st["swarms"].as_u64().unwrap() >= 32_768,
        "tables large enough for the prefetch: {st}"
    );

    let join = |txid: &str, peer: &str, swarm: &str| {
        body(
            "JOIN",
            txid,
            peer,
            Some(("join", json!({"swarm_id": swarm, "peer_mode": "LEECH"}))),
        )
    };
    let leave = |txid: &str, peer: &str, swarm: &str| {
        body(
            "LEAVE",
            txid,
            peer,
            Some(("leave", json!({"swarm_id": swarm}))),
        )
    };
    let long_id = "x".repeat(200);
    let mix: Vec<Expected> = vec![
        (
            ppstp_post(&join("m0", "peer-1", "mix")),
            200,
            Some(0),
            Some("m0"),
        ),
        (
            ppstp_post(&find_body("m1", "peer-2", "mix", 5)),
            200,
            Some(0),
            Some("m1"),
        ),
        (
            ppstp_post(r#"{"PPSPTrackerProtocol":{"#),
            400,
            Some(1),
            None,
        ),
        (
            ppstp_post(&find_body("m3", "ghost", "mix", 5)),
            403,
            Some(3),
            Some("m3"),
        ),
        (
            http_post("/", "text/plain", join("m4", "peer-3", "mix").as_bytes()),
            415,
            None,
            None,
        ),
        (
            ppstp_post(&join("m5", "peer-3", &long_id)),
            400,
            Some(1),
            Some("m5"),
        ),
        (
            b"GET / HTTP/1.1\r\nHost: tracker.test\r\n\r\n".to_vec(),
            405,
            None,
            None,
        ),
        (
            ppstp_post(&find_body("m7", "peer-4", "big-2-3", 5)),
            200,
            Some(0),
            Some("m7"),
        ),
        (
            ppstp_post(&leave("m8", "peer-1", "mix")),
            200,
            Some(0),
            Some("m8"),
        ),
        (
            ppstp_post(&leave("m9", "peer-1", "mix")),
            403,
            Some(3),
            Some("m9"),
        ),
        (
            ppstp_post(&join("m10", "peer-2", "mix")),
            200,
            Some(0),
            Some("m10"),
        ),
    ];
    // Twice, so that the second round finds the tables as the first left them.
    for round in 0..2 {
        let batch: Vec<u8> = mix.iter().flat_map(|m| m.0.clone()).collect();
        s.write_all(&batch).unwrap();
        for (i, (_, status, code, txid)) in mix.iter().enumerate() {
            let r = rx.read(&mut s).expect("response");
            assert_eq!(r.status, *status, "round {round}, request {i}");
            if let Some(code) = code {
                assert_eq!(error_code(&r.ppstp()), *code, "round {round}, request {i}");
            }
            if let Some(txid) = txid {
                assert_eq!(
                    r.ppstp()["transaction_id"],
                    json!(txid),
                    "round {round}, request {i}"
                );
            }
            if i == 1 {
                assert_eq!(peer_ids(&swarm_results(&r.ppstp())[0]), vec!["peer-1"]);
            }
            if i == 7 {
                assert_eq!(peer_ids(&swarm_results(&r.ppstp())[0]), vec!["peer-2"]);
            }
        }
        // Round 0 ends with peer-2 in "mix"; take it out again for round 1.
        ok(
            &mut s,
            &mut rx,
            &leave(&format!("l{round}"), "peer-2", "mix"),
        );
    }
}
