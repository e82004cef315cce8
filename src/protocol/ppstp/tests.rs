use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use proptest::prelude::*;
use serde_json::{json, Value};
use smallvec::smallvec;

use super::examples::*;
use super::*;
use crate::engine::*;
use crate::protocol::http::{frame_request, Framed, HttpLimits};

fn source() -> SocketAddr {
    "203.0.113.9:40000".parse().unwrap()
}

fn decode(body: &str) -> Result<Decoded, DecodeError> {
    decode_request(body.as_bytes(), source(), &DecodeLimits::default())
}

fn ok(body: &str) -> Decoded {
    match decode(body) {
        Ok(d) => d,
        Err(e) => panic!("decode failed: {e:?}\n{body}"),
    }
}

fn sid(s: &str) -> SwarmId {
    SwarmId::new(s.as_bytes()).unwrap()
}

fn pid(s: &str) -> PeerId {
    PeerId::new(s.as_bytes()).unwrap()
}

fn txid(s: &str) -> TransactionId {
    TransactionId(s.to_string())
}

fn addr(s: &str, priority: u32, kind: AddrType) -> PeerAddr {
    PeerAddr {
        addr: s.parse().unwrap(),
        priority,
        kind,
        connection: None,
        asn: None,
        ppsp_pp: false,
    }
}

/// Wraps request members into a version-1 envelope.
fn envelope(members: Value) -> String {
    let mut m = json!({"version": 1, "transaction_id": "t-1", "peer_id": "peer-a"});
    if let (Some(m), Some(extra)) = (m.as_object_mut(), members.as_object()) {
        for (k, v) in extra {
            m.insert(k.clone(), v.clone());
        }
    }
    json!({ "PPSPTrackerProtocol": m }).to_string()
}

fn bad_request(body: &str) -> DecodeError {
    match decode(body) {
        Err(e) => {
            assert_eq!(e.code, ErrorCode::BadRequest, "{body}");
            e
        }
        Ok(d) => panic!("expected 01, decoded {d:?}\n{body}"),
    }
}

const SEEDER_PEER_NUM: PeerNum = PeerNum {
    peer_count: Some(5),
    ability_nat: Some(NatAbility::Stun),
    concurrent_links: Some(5),
    online_time: Some(200),
    upload_bandwidth: Some(600),
};

// ---- RFC 7846 examples ----------------------------------------------------------------------

#[test]
fn e1_frames_and_decodes_as_seeder_connect() {
    // E1's Content-Length (494) does not match its body; compute it as a client would.
    let head = E1_HEAD.replace(
        "Content-Length: 494",
        &format!("Content-Length: {}", E1_BODY.len()),
    );
    let message = format!("{head}{E1_BODY}");
    let Framed::Request {
        head,
        body,
        consumed,
    } = frame_request(message.as_bytes(), &HttpLimits::default())
    else {
        panic!("E1 did not frame");
    };
    assert_eq!(consumed, message.len());
    assert_eq!((head.method, head.path), ("POST", "/video_1"));
    assert_eq!(head.content_type, Some(CONTENT_TYPE.as_bytes()));

    let d = decode_request(body, source(), &DecodeLimits::default()).unwrap();
    assert_eq!(d.transaction_id, txid("12345"));
    assert_eq!(d.request.peer_id, pid("656164657220"));
    assert_eq!(d.request.source, source());
    let mut host = addr("192.0.2.2:80", 1, AddrType::Host);
    host.connection = Some(LinkKind::Wired);
    host.asn = Some(45645);
    assert_eq!(
        d.request.kind,
        RequestKind::Connect {
            peer_num: None,
            addrs: vec![host],
            actions: vec![
                SwarmAction {
                    swarm_id: sid("1111"),
                    action: ActionKind::Join,
                    mode: PeerMode::Seeder
                },
                SwarmAction {
                    swarm_id: sid("2222"),
                    action: ActionKind::Join,
                    mode: PeerMode::Seeder
                },
            ],
        }
    );
}

#[test]
fn e1_with_its_own_wrong_content_length_is_refused() {
    // E1 says 494 bytes but its body is longer: the first 494 bytes are a truncated body (01,
    // with the transaction id read before the cut), and the rest is not a request (HTTP 400).
    let message = format!("{E1_HEAD}{E1_BODY}");
    let limits = HttpLimits::default();
    let Framed::Request { body, consumed, .. } = frame_request(message.as_bytes(), &limits) else {
        panic!("E1 head did not frame");
    };
    assert_eq!(body.len(), 494);
    let e = decode_request(body, source(), &DecodeLimits::default()).unwrap_err();
    assert_eq!(e.code, ErrorCode::BadRequest);
    assert_eq!(e.transaction_id, Some(txid("12345")));
    assert!(matches!(
        frame_request(&message.as_bytes()[consumed..], &limits),
        Framed::Error(crate::protocol::http::HttpError::Malformed)
    ));
}

#[test]
fn e2_decodes_as_leech_connect_with_two_interfaces() {
    let d = ok(E2);
    assert_eq!(d.transaction_id, txid("12345.0"));
    assert_eq!(d.request.peer_id, pid("656164657221"));
    let mut v4 = addr("192.0.2.2:80", 1, AddrType::Host);
    v4.connection = Some(LinkKind::Wired);
    v4.asn = Some(3256546);
    let mut v6 = addr("[2001:db8::2]:80", 2, AddrType::Host);
    v6.connection = Some(LinkKind::Wireless);
    v6.asn = Some(34563456);
    v6.ppsp_pp = true;
    assert_eq!(
        d.request.kind,
        RequestKind::Connect {
            peer_num: Some(SEEDER_PEER_NUM),
            addrs: vec![v4, v6],
            actions: vec![SwarmAction {
                swarm_id: sid("1111"),
                action: ActionKind::Join,
                mode: PeerMode::Leech
            }],
        }
    );
}

#[test]
fn e3_decodes_as_leave_then_join() {
    let d = ok(E3);
    assert_eq!(d.transaction_id, txid("12345"));
    assert_eq!(
        d.request.kind,
        RequestKind::Connect {
            peer_num: Some(SEEDER_PEER_NUM),
            addrs: vec![],
            actions: vec![
                SwarmAction {
                    swarm_id: sid("1111"),
                    action: ActionKind::Leave,
                    mode: PeerMode::Leech
                },
                SwarmAction {
                    swarm_id: sid("2222"),
                    action: ActionKind::Join,
                    mode: PeerMode::Leech
                },
            ],
        }
    );
}

#[test]
fn e5_decodes_as_find_with_top_level_members() {
    let d = ok(E5);
    assert_eq!(d.request.peer_id, pid("656164657221"));
    assert_eq!(
        d.request.kind,
        RequestKind::Find {
            swarm_id: sid("1111"),
            peer_num: Some(SEEDER_PEER_NUM),
            chunks: vec![],
        }
    );
}

#[test]
fn e7_decodes_as_stat_report() {
    let d = ok(E7);
    assert_eq!(
        d.request.kind,
        RequestKind::StatReport {
            stats: vec![SwarmStat {
                swarm_id: Some(sid("1111")),
                uploaded_bytes: 512,
                downloaded_bytes: 768,
                available_bandwidth: 1024000,
                concurrent_links: 5,
            }]
        }
    );
}

fn e4_peer(id: &str, ip: &str) -> DecodedPeer {
    let mut a = addr(&format!("{ip}:80"), 2, AddrType::Reflexive);
    a.connection = Some(LinkKind::Wired);
    a.asn = Some(64496);
    a.ppsp_pp = true;
    DecodedPeer {
        peer_id: pid(id),
        addrs: vec![a],
    }
}

fn e6_peer(id: &str, ip: &str) -> DecodedPeer {
    let mut a = addr(&format!("{ip}:80"), 1, AddrType::Reflexive);
    a.connection = Some(LinkKind::Wireless);
    a.asn = Some(64496);
    DecodedPeer {
        peer_id: pid(id),
        addrs: vec![a],
    }
}

#[test]
fn e4_decodes_as_response() {
    let r = decode_response(E4_BODY.as_bytes()).unwrap();
    let mut reflexive = addr("198.51.100.1:80", 1, AddrType::Reflexive);
    reflexive.asn = Some(64496);
    assert_eq!(
        r,
        DecodedResponse {
            response_type: 0,
            error_code: ErrorCode::Ok,
            transaction_id: Some(txid("12345")),
            reflexive: Some(reflexive),
            swarm_results: vec![DecodedSwarmResult {
                swarm_id: sid("2222"),
                result: ErrorCode::Ok,
                peers: Some(vec![
                    e4_peer("956264622298", "198.51.100.22"),
                    e4_peer("3332001256741", "198.51.100.201"),
                ]),
            }],
            stat: None,
        }
    );
}

#[test]
fn e6_decodes_as_response() {
    let r = decode_response(E6.as_bytes()).unwrap();
    assert_eq!(r.response_type, 0);
    assert_eq!(r.transaction_id, Some(txid("12345")));
    assert_eq!(r.reflexive, None);
    assert_eq!(
        r.swarm_results,
        vec![DecodedSwarmResult {
            swarm_id: sid("1111"),
            result: ErrorCode::Ok,
            peers: Some(vec![
                e6_peer("656164657221", "198.51.100.1"),
                e6_peer("956264622298", "198.51.100.22"),
                e6_peer("3332001256741", "198.51.100.201"),
            ]),
        }]
    );
}

#[test]
fn e8_decodes_as_response() {
    let r = decode_response(E8.as_bytes()).unwrap();
    assert_eq!(
        r,
        DecodedResponse {
            response_type: 0,
            error_code: ErrorCode::Ok,
            transaction_id: Some(txid("12345")),
            reflexive: None,
            swarm_results: vec![DecodedSwarmResult {
                swarm_id: sid("1111"),
                result: ErrorCode::Ok,
                peers: None
            }],
            stat: None,
        }
    );
}

fn encoded(response: &Response, t: Option<&TransactionId>) -> Value {
    let mut out = Vec::new();
    encode_response(response, t, &mut out);
    serde_json::from_slice(&out)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out)))
}

fn peer_info(d: DecodedPeer) -> PeerInfo {
    PeerInfo {
        peer_id: d.peer_id,
        mode: PeerMode::Seeder,
        addrs: d.addrs.into_iter().collect(),
    }
}

#[test]
fn encoded_answer_has_the_shape_of_e4() {
    let mut reflexive = addr("198.51.100.1:80", 1, AddrType::Reflexive);
    reflexive.asn = Some(64496);
    let response = Response::Ok(Answer {
        reflexive: Some(reflexive),
        swarm_results: vec![SwarmResult {
            swarm_id: sid("2222"),
            result: ErrorCode::Ok,
            peers: Some(vec![
                peer_info(e4_peer("956264622298", "198.51.100.22")),
                peer_info(e4_peer("3332001256741", "198.51.100.201")),
            ]),
        }],
        stat: None,
    });
    let mut expected: Value = serde_json::from_str(E4_BODY).unwrap();
    // The one deliberate difference: our reflexive address names its type, which E4 leaves out
    // although the schema (RFC 7846 §3.2.4) requires it.
    expected["PPSPTrackerProtocol"]["peer_addr"]["type"] = json!("REFLEXIVE");
    assert_eq!(encoded(&response, Some(&txid("12345"))), expected);
}

#[test]
fn encoded_answer_has_the_shape_of_e6() {
    let response = Response::Ok(Answer {
        reflexive: None,
        swarm_results: vec![SwarmResult {
            swarm_id: sid("1111"),
            result: ErrorCode::Ok,
            peers: Some(vec![
                peer_info(e6_peer("656164657221", "198.51.100.1")),
                peer_info(e6_peer("956264622298", "198.51.100.22")),
                peer_info(e6_peer("3332001256741", "198.51.100.201")),
            ]),
        }],
        stat: None,
    });
    let expected: Value = serde_json::from_str(E6).unwrap();
    assert_eq!(encoded(&response, Some(&txid("12345"))), expected);
}

#[test]
fn encoded_answer_has_the_shape_of_e8() {
    let response = Response::Ok(Answer {
        reflexive: None,
        swarm_results: vec![SwarmResult {
            swarm_id: sid("1111"),
            result: ErrorCode::Ok,
            peers: None,
        }],
        stat: None,
    });
    let expected: Value = serde_json::from_str(E8).unwrap();
    assert_eq!(encoded(&response, Some(&txid("12345"))), expected);
}

// ---- Extension request types ----------------------------------------------------------------

#[test]
fn extension_request_types_decode() {
    let cases: Vec<(Value, RequestKind)> = vec![
        (
            json!({"request_type": "JOIN", "join": {"swarm_id": "s1", "peer_mode": "LEECH",
                   "peer_num": {"peer_count": "7"}}}),
            RequestKind::Join {
                swarm_id: sid("s1"),
                mode: PeerMode::Leech,
                peer_num: Some(PeerNum {
                    peer_count: Some(7),
                    ..PeerNum::default()
                }),
            },
        ),
        (
            json!({"request_type": "LEAVE", "leave": {"swarm_id": "s1"}}),
            RequestKind::Leave {
                swarm_id: sid("s1"),
            },
        ),
        (
            json!({"request_type": "DISCONNECT", "disconnect": {"swarm_id": "ALL"}}),
            RequestKind::Disconnect {
                scope: DisconnectScope::AllSwarms,
            },
        ),
        (
            json!({"request_type": "DISCONNECT"}),
            RequestKind::Disconnect {
                scope: DisconnectScope::Deregister,
            },
        ),
        (
            json!({"request_type": "DISCONNECT", "disconnect": {"swarm_id": null}}),
            RequestKind::Disconnect {
                scope: DisconnectScope::Deregister,
            },
        ),
        (
            json!({"request_type": "DISCONNECT", "disconnect": {"swarm_id": "s2"}}),
            RequestKind::Leave {
                swarm_id: sid("s2"),
            },
        ),
        (json!({"request_type": "KEEPALIVE"}), RequestKind::Keepalive),
        (
            json!({"request_type": "JOIN_CHUNK", "join_chunk": {"swarm_id": "s1",
                   "chunks": [[0, 9], ["10", "10"], [18446744073709551615u64, 18446744073709551615u64]]}}),
            RequestKind::JoinChunk {
                swarm_id: sid("s1"),
                chunks: vec![
                    ChunkRange { start: 0, end: 9 },
                    ChunkRange { start: 10, end: 10 },
                    ChunkRange {
                        start: u64::MAX,
                        end: u64::MAX,
                    },
                ],
            },
        ),
        (
            json!({"request_type": "STAT_QUERY", "stat_query": {"swarm_id": "s1"}}),
            RequestKind::StatQuery {
                target: StatTarget::Swarm(sid("s1")),
            },
        ),
        (
            json!({"request_type": "STAT_QUERY", "stat_query": {"peer_id": "p9"}}),
            RequestKind::StatQuery {
                target: StatTarget::Peer(pid("p9")),
            },
        ),
        (
            json!({"request_type": "FIND", "find": {"swarm_id": "s1", "chunks": [[3, 4]]}}),
            RequestKind::Find {
                swarm_id: sid("s1"),
                peer_num: None,
                chunks: vec![ChunkRange { start: 3, end: 4 }],
            },
        ),
        (
            json!({"request_type": "STAT_REPORT"}),
            RequestKind::StatReport { stats: vec![] },
        ),
        (
            json!({"request_type": "STAT_REPORT", "stat_report": {"type": "PEER_KARMA",
                   "stat": [{"karma": 3}]}}),
            RequestKind::StatReport { stats: vec![] },
        ),
        (
            json!({"request_type": "CONNECT"}),
            RequestKind::Connect {
                peer_num: None,
                addrs: vec![],
                actions: vec![],
            },
        ),
    ];
    for (members, want) in cases {
        let body = envelope(members);
        let d = ok(&body);
        assert_eq!(d.request.kind, want, "{body}");
        assert_eq!(d.request.peer_id, pid("peer-a"));
        assert_eq!(d.transaction_id, txid("t-1"));
    }
}

#[test]
fn leniencies_are_accepted() {
    // Unknown members anywhere, upper-case connection, numeric asn, array stat, object
    // swarm_action, numeric transaction id, escaped ids.
    let body = r#"{"PPSPTrackerProtocol": {"version": "1", "request_type": "CONNECT",
        "transaction_id": 777, "peer_id": "p\u0031", "x-extension": [1, {"a": null}],
        "connect": {"future": true,
          "peer_addr": {"ip_address": {"address_type": "IPv6", "address": "::ffff:192.0.2.1"},
                        "port": "6881", "connection": "WIRED", "asn": 64496, "peer_protocol": "other"},
          "swarm_action": {"swarm_id": "s\"1", "action": "join", "peer_mode": "seeder", "z": 1}}}}"#;
    let d = ok(body);
    assert_eq!(d.transaction_id, txid("777"));
    assert_eq!(d.request.peer_id, pid("p1"));
    let mut a = addr("[::ffff:192.0.2.1]:6881", 1, AddrType::Host);
    a.connection = Some(LinkKind::Wired);
    a.asn = Some(64496);
    assert_eq!(
        d.request.kind,
        RequestKind::Connect {
            peer_num: None,
            addrs: vec![a],
            actions: vec![SwarmAction {
                swarm_id: sid("s\"1"),
                action: ActionKind::Join,
                mode: PeerMode::Seeder
            }],
        }
    );
}

// ---- Error paths ----------------------------------------------------------------------------

#[test]
fn unsupported_version_is_02_with_the_transaction_id() {
    for version in [json!(2), json!("2"), json!(0)] {
        let body = json!({"PPSPTrackerProtocol": {"version": version, "request_type": "KEEPALIVE",
                          "transaction_id": "v", "peer_id": "p"}})
        .to_string();
        let e = decode(&body).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnsupportedVersion, "{body}");
        assert_eq!(e.transaction_id, Some(txid("v")));
    }
    // Version 2 with a body that is malformed for version 1: still 02.
    let body =
        r#"{"PPSPTrackerProtocol": {"request_type": 5, "version": 2, "transaction_id": "w"}}"#;
    let e = decode(body).unwrap_err();
    assert_eq!(e.code, ErrorCode::UnsupportedVersion);
    assert_eq!(e.transaction_id, Some(txid("w")));
    assert_eq!(http_status(e.code), 400);
}

#[test]
fn missing_version_is_01() {
    let body = r#"{"PPSPTrackerProtocol": {"request_type": "KEEPALIVE", "transaction_id": "v", "peer_id": "p"}}"#;
    assert_eq!(bad_request(body).transaction_id, Some(txid("v")));
    let body = r#"{"PPSPTrackerProtocol": {"version": 1.0, "request_type": "KEEPALIVE", "transaction_id": "v", "peer_id": "p"}}"#;
    assert_eq!(bad_request(body).transaction_id, Some(txid("v")));
}

#[test]
fn invalid_json_is_01_keeping_a_readable_transaction_id() {
    assert_eq!(bad_request("").transaction_id, None);
    assert_eq!(bad_request("not json").transaction_id, None);
    assert_eq!(bad_request("[]").transaction_id, None);
    assert_eq!(bad_request(r#"{"other": 1}"#).transaction_id, None);
    // Truncated after the transaction id.
    let e = bad_request(
        r#"{"PPSPTrackerProtocol": {"version": 1, "transaction_id": "tx9", "peer_id": "#,
    );
    assert_eq!(e.transaction_id, Some(txid("tx9")));
    // Trailing garbage after a complete message.
    let body = format!("{}x", envelope(json!({"request_type": "KEEPALIVE"})));
    assert_eq!(bad_request(&body).transaction_id, Some(txid("t-1")));
}

#[test]
fn wrong_types_are_01_keeping_the_transaction_id_that_comes_later() {
    let cases = [
        r#"{"PPSPTrackerProtocol": {"version": 1, "peer_id": 5, "request_type": "KEEPALIVE", "transaction_id": "late"}}"#,
        r#"{"PPSPTrackerProtocol": {"version": 1, "peer_id": "p", "request_type": ["KEEPALIVE"], "transaction_id": "late"}}"#,
        r#"{"PPSPTrackerProtocol": {"version": 1, "peer_id": "p", "request_type": "FIND", "find": {"swarm_id": {"a": 1}}, "transaction_id": "late"}}"#,
        r#"{"PPSPTrackerProtocol": {"version": 1, "peer_id": "p", "request_type": "CONNECT", "connect": {"swarm_action": "JOIN"}, "transaction_id": "late"}}"#,
        r#"{"PPSPTrackerProtocol": {"version": 1, "peer_id": "p", "request_type": "CONNECT", "connect": {"peer_num": {"peer_count": -1}}, "transaction_id": "late"}}"#,
        r#"{"PPSPTrackerProtocol": {"version": 1, "peer_id": "p", "request_type": "CONNECT", "connect": {"peer_num": {"peer_count": "+5"}}, "transaction_id": "late"}}"#,
        r#"{"PPSPTrackerProtocol": {"version": 1, "peer_id": "p", "request_type": "CONNECT", "connect": {"peer_num": {"peer_count": 5.5}}, "transaction_id": "late"}}"#,
        r#"{"PPSPTrackerProtocol": {"version": 1, "peer_id": "p", "request_type": "STAT_REPORT", "stat_report": {"stat": [{"uploaded_bytes": true}]}, "transaction_id": "late"}}"#,
        r#"{"PPSPTrackerProtocol": {"version": 1, "peer_id": "p", "peer_id": "q", "request_type": "KEEPALIVE", "transaction_id": "late"}}"#,
        r#"{"PPSPTrackerProtocol": {"version": 1, "peer_id": "p", "request_type": "KEEPALIVE", "transaction_id": "late"}, "PPSPTrackerProtocol": 1}"#,
    ];
    for body in cases {
        assert_eq!(
            bad_request(body).transaction_id,
            Some(txid("late")),
            "{body}"
        );
    }
}

#[test]
fn deep_nesting_is_01_without_overflowing_the_stack() {
    let deep = format!(
        r#"{{"PPSPTrackerProtocol": {{"transaction_id": "d", "x": {}{}}}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert_eq!(bad_request(&deep).transaction_id, Some(txid("d")));
    assert!(decode_response(deep.as_bytes()).is_err());
}

#[test]
fn unknown_request_type_is_01() {
    for t in ["GET_PEERS", "connect", "", "CONNECT "] {
        let e = bad_request(&envelope(json!({ "request_type": t })));
        assert_eq!(e.transaction_id, Some(txid("t-1")));
    }
    bad_request(&envelope(json!({})));
}

#[test]
fn transaction_id_is_capped_at_64_bytes() {
    let t64 = "x".repeat(64);
    let body = envelope(json!({"request_type": "KEEPALIVE", "transaction_id": t64}));
    assert_eq!(ok(&body).transaction_id, TransactionId(t64));
    let body = envelope(json!({"request_type": "KEEPALIVE", "transaction_id": "x".repeat(65)}));
    assert_eq!(bad_request(&body).transaction_id, None);
    // Also on the salvage path.
    let body = format!(
        r#"{{"PPSPTrackerProtocol": {{"version": 1, "transaction_id": "{}", "peer_id": 1}}}}"#,
        "y".repeat(65)
    );
    assert_eq!(bad_request(&body).transaction_id, None);
    let body =
        r#"{"PPSPTrackerProtocol": {"version": 1, "request_type": "KEEPALIVE", "peer_id": "p"}}"#;
    assert_eq!(bad_request(body).transaction_id, None);
}

#[test]
fn bad_identifiers_are_01() {
    bad_request(&envelope(
        json!({"request_type": "KEEPALIVE", "peer_id": ""}),
    ));
    bad_request(&envelope(
        json!({"request_type": "KEEPALIVE", "peer_id": "p".repeat(65)}),
    ));
    bad_request(&envelope(
        json!({"request_type": "KEEPALIVE", "peer_id": null}),
    ));
    bad_request(&envelope(
        json!({"request_type": "LEAVE", "leave": {"swarm_id": ""}}),
    ));
    bad_request(&envelope(
        json!({"request_type": "LEAVE", "leave": {"swarm_id": "s".repeat(65)}}),
    ));
    ok(&envelope(
        json!({"request_type": "KEEPALIVE", "peer_id": "p".repeat(64)}),
    ));
    // The configured limit applies below the hard one.
    let short = DecodeLimits {
        max_id_len: 8,
        ..DecodeLimits::default()
    };
    let body = envelope(json!({"request_type": "KEEPALIVE", "peer_id": "123456789"}));
    let e = decode_request(body.as_bytes(), source(), &short).unwrap_err();
    assert_eq!(e.code, ErrorCode::BadRequest);
    let body = envelope(json!({"request_type": "FIND", "find": {"swarm_id": "123456789"}}));
    let e = decode_request(body.as_bytes(), source(), &short).unwrap_err();
    assert_eq!(e.code, ErrorCode::BadRequest);
}

#[test]
fn ids_with_control_characters_are_01() {
    // A NUL-prefixed peer id would name a BitTorrent peer's registration ("\0bt4" + address).
    bad_request(&envelope(
        json!({"request_type": "KEEPALIVE", "peer_id": "\u{0}bt4\u{7f}\u{0}\u{0}\u{1}\u{1a}\u{e1}"}),
    ));
    for id in ["a\nb", "tab\there", "del\u{7f}", "c1\u{85}"] {
        bad_request(&envelope(
            json!({"request_type": "KEEPALIVE", "peer_id": id}),
        ));
        bad_request(&envelope(
            json!({"request_type": "LEAVE", "leave": {"swarm_id": id}}),
        ));
    }
    // Printable ids, spaces and non-ASCII letters included, are fine.
    ok(&envelope(
        json!({"request_type": "KEEPALIVE", "peer_id": "peer one é"}),
    ));
}

fn action(i: usize) -> Value {
    json!({"swarm_id": format!("s{i}"), "action": "JOIN", "peer_mode": "SEEDER"})
}

fn host_addr(i: usize) -> Value {
    json!({"ip_address": {"address_type": "ipv4", "address": format!("192.0.2.{i}")},
           "port": 80, "priority": 1, "type": "HOST"})
}

#[test]
fn limits_are_01() {
    let limits = DecodeLimits::default();
    let actions: Vec<Value> = (0..limits.max_swarm_actions).map(action).collect();
    ok(&envelope(
        json!({"request_type": "CONNECT", "connect": {"swarm_action": actions}}),
    ));
    let actions: Vec<Value> = (0..=limits.max_swarm_actions).map(action).collect();
    bad_request(&envelope(
        json!({"request_type": "CONNECT", "connect": {"swarm_action": actions}}),
    ));

    let addrs: Vec<Value> = (0..limits.max_addrs).map(host_addr).collect();
    ok(&envelope(
        json!({"request_type": "CONNECT", "connect": {"peer_addr": addrs}}),
    ));
    let addrs: Vec<Value> = (0..=limits.max_addrs).map(host_addr).collect();
    bad_request(&envelope(
        json!({"request_type": "CONNECT", "connect": {"peer_addr": addrs}}),
    ));

    let chunks: Vec<Value> = (0..=limits.max_chunk_ranges as u64)
        .map(|i| json!([i, i]))
        .collect();
    bad_request(&envelope(
        json!({"request_type": "JOIN_CHUNK", "join_chunk": {"swarm_id": "s", "chunks": chunks}}),
    ));
    bad_request(&envelope(
        json!({"request_type": "FIND", "find": {"swarm_id": "s", "chunks": chunks}}),
    ));

    let stats: Vec<Value> = (0..=limits.max_stats)
        .map(|_| json!({"uploaded_bytes": 1}))
        .collect();
    bad_request(&envelope(
        json!({"request_type": "STAT_REPORT", "stat_report": {"stat": stats}}),
    ));
}

#[test]
fn bad_chunk_ranges_are_01() {
    for chunks in [
        json!([[5, 4]]),
        json!([[1]]),
        json!([[1, 2, 3]]),
        json!([1, 2]),
        json!([[-1, 2]]),
        json!({"start": 1, "end": 2}),
        json!([["a", "b"]]),
    ] {
        bad_request(&envelope(
            json!({"request_type": "JOIN_CHUNK", "join_chunk": {"swarm_id": "s", "chunks": chunks}}),
        ));
    }
    bad_request(&envelope(
        json!({"request_type": "JOIN_CHUNK", "join_chunk": {"swarm_id": "s"}}),
    ));
}

#[test]
fn bad_peer_addresses_are_01() {
    let base = host_addr(1);
    let mutations: Vec<(&str, Value)> = vec![
        ("/ip_address/address", json!("2001:db8::1")),
        ("/ip_address/address", json!("192.0.2.256")),
        ("/ip_address/address_type", json!("ipv5")),
        ("/port", json!(70000)),
        ("/port", json!("eighty")),
        ("/type", json!("RELAY")),
        ("/priority", json!(-1)),
    ];
    for (pointer, value) in mutations {
        let mut a = base.clone();
        *a.pointer_mut(pointer).unwrap() = value;
        bad_request(&envelope(
            json!({"request_type": "CONNECT", "connect": {"peer_addr": a}}),
        ));
    }
    let mut a = base.clone();
    a["connection"] = json!("fiber");
    bad_request(&envelope(
        json!({"request_type": "CONNECT", "connect": {"peer_addr": a}}),
    ));
    let mut a = base.clone();
    a["asn"] = json!("AS1");
    bad_request(&envelope(
        json!({"request_type": "CONNECT", "connect": {"peer_addr": a}}),
    ));
    let mut a = base;
    a["ip_address"]["address_type"] = json!("ipv6");
    bad_request(&envelope(
        json!({"request_type": "CONNECT", "connect": {"peer_addr": a}}),
    ));
}

#[test]
fn bad_request_members_are_01() {
    let cases = [
        json!({"request_type": "CONNECT", "connect": {"swarm_action": {"swarm_id": "s", "action": "JOIN"}}}),
        json!({"request_type": "CONNECT", "connect": {"swarm_action": {"swarm_id": "s", "action": "PART", "peer_mode": "LEECH"}}}),
        json!({"request_type": "CONNECT", "connect": {"swarm_action": {"swarm_id": "s", "action": "JOIN", "peer_mode": "LURKER"}}}),
        json!({"request_type": "CONNECT", "connect": {"peer_num": {"ability_nat": "UPNP"}}}),
        json!({"request_type": "CONNECT", "connect": {"peer_num": {"peer_count": 4294967296u64}}}),
        json!({"request_type": "FIND"}),
        json!({"request_type": "FIND", "find": {"peer_num": {"peer_count": 1}}}),
        json!({"request_type": "JOIN", "join": {"swarm_id": "s"}}),
        json!({"request_type": "JOIN"}),
        json!({"request_type": "LEAVE"}),
        json!({"request_type": "JOIN_CHUNK"}),
        json!({"request_type": "STAT_QUERY"}),
        json!({"request_type": "STAT_QUERY", "stat_query": {}}),
        json!({"request_type": "STAT_QUERY", "stat_query": {"swarm_id": "s", "peer_id": "p"}}),
        json!({"request_type": "STAT_REPORT", "stat_report": {"stat": [{"concurrent_links": 4294967296u64}]}}),
        json!({"request_type": "STAT_REPORT", "stat_report": {"stat": [], "Stat": []}}),
    ];
    for members in cases {
        let e = bad_request(&envelope(members));
        assert_eq!(e.transaction_id, Some(txid("t-1")));
    }
}

#[test]
fn content_types() {
    assert!(accepts_content_type(Some(b"application/ppsp-tracker+json")));
    assert!(accepts_content_type(Some(
        b"Application/PPSP-Tracker+JSON ; charset=utf-8"
    )));
    assert!(accepts_content_type(Some(b"application/json")));
    assert!(!accepts_content_type(Some(b"text/plain")));
    assert!(!accepts_content_type(Some(
        b"application/ppsp-tracker+jsonx"
    )));
    assert!(!accepts_content_type(Some(b"")));
    assert!(!accepts_content_type(None));
}

#[test]
fn http_status_follows_protocols_md() {
    assert_eq!(http_status(ErrorCode::Ok), 200);
    assert_eq!(http_status(ErrorCode::BadRequest), 400);
    assert_eq!(http_status(ErrorCode::UnsupportedVersion), 400);
    assert_eq!(http_status(ErrorCode::Forbidden), 403);
    assert_eq!(http_status(ErrorCode::InternalError), 500);
    assert_eq!(http_status(ErrorCode::ServiceUnavailable), 503);
    assert_eq!(http_status(ErrorCode::AuthenticationRequired), 401);
}

// ---- Response encoding ----------------------------------------------------------------------

#[test]
fn error_responses_carry_only_the_envelope() {
    assert_eq!(
        encoded(&Response::Err(ErrorCode::Forbidden), Some(&txid("a\"b"))),
        json!({"PPSPTrackerProtocol": {"version": 1, "response_type": 1, "error_code": 3,
               "transaction_id": "a\"b"}})
    );
    assert_eq!(
        encoded(&Response::Err(ErrorCode::BadRequest), None),
        json!({"PPSPTrackerProtocol": {"version": 1, "response_type": 1, "error_code": 1}})
    );
}

#[test]
fn several_results_and_addresses_are_arrays_and_failures_carry_their_code() {
    let mut two = smallvec![addr("192.0.2.1:1", 3, AddrType::Host)];
    two.push(addr("[2001:db8::1]:2", 1, AddrType::Proxy));
    let response = Response::Ok(Answer {
        reflexive: None,
        swarm_results: vec![
            SwarmResult {
                swarm_id: sid("a"),
                result: ErrorCode::Ok,
                peers: Some(vec![PeerInfo {
                    peer_id: pid("p"),
                    mode: PeerMode::Leech,
                    addrs: two,
                }]),
            },
            SwarmResult {
                swarm_id: sid("b"),
                result: ErrorCode::Forbidden,
                peers: Some(vec![]),
            },
            SwarmResult {
                swarm_id: sid("c"),
                result: ErrorCode::Ok,
                peers: Some(vec![]),
            },
        ],
        stat: None,
    });
    let v = encoded(&response, Some(&txid("t")));
    assert_eq!(
        v["PPSPTrackerProtocol"]["swarm_result"],
        json!([
            {"swarm_id": "a", "result": 0, "peer_group": {"peer_info": [{"peer_id": "p", "peer_addr": [
                {"ip_address": {"address_type": "ipv4", "address": "192.0.2.1"}, "port": 1,
                 "priority": 3, "type": "HOST"},
                {"ip_address": {"address_type": "ipv6", "address": "2001:db8::1"}, "port": 2,
                 "priority": 1, "type": "PROXY"}]}]}},
            {"swarm_id": "b", "result": 1, "error_code": 3},
            {"swarm_id": "c", "result": 0, "peer_group": {"peer_info": []}},
        ])
    );
}

#[test]
fn identifiers_are_escaped_or_hex() {
    let weird = "q\"\\\n\u{1}\u{7f}é";
    let response = Response::Ok(Answer {
        reflexive: None,
        swarm_results: vec![
            SwarmResult {
                swarm_id: sid(weird),
                result: ErrorCode::Ok,
                peers: None,
            },
            SwarmResult {
                swarm_id: SwarmId::new(&[0xff, 0x00, 0x10]).unwrap(),
                result: ErrorCode::Ok,
                peers: None,
            },
        ],
        stat: None,
    });
    let v = encoded(&response, Some(&txid(weird)));
    assert_eq!(v["PPSPTrackerProtocol"]["transaction_id"], json!(weird));
    assert_eq!(
        v["PPSPTrackerProtocol"]["swarm_result"][0]["swarm_id"],
        json!(weird)
    );
    assert_eq!(
        v["PPSPTrackerProtocol"]["swarm_result"][1]["swarm_id"],
        json!("ff0010")
    );
}

#[test]
fn stat_results_have_the_documented_shape() {
    let stats = SwarmStats {
        peers: 3,
        seeders: 1,
        leechers: 2,
        completed: 4,
        uploaded_bytes: 10,
        downloaded_bytes: 20,
    };
    let v = encoded(
        &Response::Ok(Answer {
            stat: Some(StatAnswer::Swarm(sid("s"), stats)),
            ..Answer::default()
        }),
        Some(&txid("t")),
    );
    assert_eq!(
        v["PPSPTrackerProtocol"]["stat_result"],
        json!({"swarm_id": "s", "peers": 3, "seeders": 1, "leechers": 2, "completed": 4,
               "uploaded_bytes": 10, "downloaded_bytes": 20})
    );
    let status = PeerStatus {
        peer_id: pid("p"),
        state: PeerState::Tracking,
        online_ms: 61_999,
        addrs: smallvec![addr("192.0.2.7:9", 1, AddrType::Reflexive)],
        swarms: vec![(sid("s"), PeerMode::Seeder), (sid("t"), PeerMode::Leech)],
        connection_tracker: Some([0xab; 16]),
    };
    let v = encoded(
        &Response::Ok(Answer {
            stat: Some(StatAnswer::Peer(status)),
            ..Answer::default()
        }),
        Some(&txid("t")),
    );
    assert_eq!(
        v["PPSPTrackerProtocol"]["stat_result"],
        json!({"peer_id": "p", "state": "TRACKING", "online_time": 61,
               "peer_addr": [{"ip_address": {"address_type": "ipv4", "address": "192.0.2.7"},
                              "port": 9, "priority": 1, "type": "REFLEXIVE"}],
               "swarms": [{"swarm_id": "s", "peer_mode": "SEEDER"}, {"swarm_id": "t", "peer_mode": "LEECH"}],
               "connection_tracker": "abababababababababababababababab"})
    );
}

#[test]
fn decode_response_rejects_malformed_answers() {
    for body in [
        "",
        "{}",
        r#"{"PPSPTrackerProtocol": {"version": 2, "response_type": 0, "error_code": 0}}"#,
        r#"{"PPSPTrackerProtocol": {"version": 1, "response_type": 2, "error_code": 0}}"#,
        r#"{"PPSPTrackerProtocol": {"version": 1, "response_type": 1, "error_code": 9}}"#,
        r#"{"PPSPTrackerProtocol": {"version": 1, "response_type": 0, "error_code": 0, "swarm_result": {"swarm_id": "", "result": 0}}}"#,
        r#"{"PPSPTrackerProtocol": {"version": 1, "response_type": 0, "error_code": 0, "stat_result": {"peer_id": "p", "state": "GONE"}}}"#,
    ] {
        assert!(decode_response(body.as_bytes()).is_err(), "{body}");
    }
}

// ---- Round trips ----------------------------------------------------------------------------

fn arb_text_id() -> impl Strategy<Value = IdBytes> {
    // Any Unicode scalar values but controls (which ids may not hold; quotes and backslashes
    // included), at most 64 bytes.
    prop::collection::vec(
        any::<char>().prop_filter("ids hold no control characters", |c| !c.is_control()),
        1..16,
    )
    .prop_map(|cs| cs.into_iter().collect::<String>())
    .prop_filter_map("id too long", |s| IdBytes::new(s.as_bytes()).ok())
}

fn arb_swarm() -> impl Strategy<Value = SwarmId> {
    arb_text_id().prop_map(SwarmId)
}

fn arb_peer() -> impl Strategy<Value = PeerId> {
    arb_text_id().prop_map(PeerId)
}

fn arb_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|b| IpAddr::V4(Ipv4Addr::from(b))),
        any::<[u8; 16]>().prop_map(|b| IpAddr::V6(Ipv6Addr::from(b))),
    ]
}

fn arb_addr() -> impl Strategy<Value = PeerAddr> {
    (
        arb_ip(),
        any::<u16>(),
        any::<u32>(),
        prop_oneof![
            Just(AddrType::Host),
            Just(AddrType::Reflexive),
            Just(AddrType::Proxy)
        ],
        prop::option::of(prop_oneof![Just(LinkKind::Wired), Just(LinkKind::Wireless)]),
        prop::option::of(any::<u32>()),
        any::<bool>(),
    )
        .prop_map(
            |(ip, port, priority, kind, connection, asn, ppsp_pp)| PeerAddr {
                addr: SocketAddr::new(ip, port),
                priority,
                kind,
                connection,
                asn,
                ppsp_pp,
            },
        )
}

fn arb_mode() -> impl Strategy<Value = PeerMode> {
    prop_oneof![Just(PeerMode::Seeder), Just(PeerMode::Leech)]
}

fn arb_peer_num() -> impl Strategy<Value = PeerNum> {
    (
        prop::option::of(any::<u32>()),
        prop::option::of(prop_oneof![
            Just(NatAbility::NoNat),
            Just(NatAbility::Stun),
            Just(NatAbility::Turn)
        ]),
        prop::option::of(any::<u32>()),
        prop::option::of(any::<u32>()),
        prop::option::of(any::<u32>()),
    )
        .prop_map(
            |(peer_count, ability_nat, concurrent_links, online_time, upload_bandwidth)| PeerNum {
                peer_count,
                ability_nat,
                concurrent_links,
                online_time,
                upload_bandwidth,
            },
        )
}

fn arb_chunks() -> impl Strategy<Value = Vec<ChunkRange>> {
    prop::collection::vec(
        (any::<u64>(), any::<u64>()).prop_map(|(a, b)| ChunkRange {
            start: a.min(b),
            end: a.max(b),
        }),
        0..6,
    )
}

fn arb_kind() -> impl Strategy<Value = RequestKind> {
    prop_oneof![
        (
            prop::option::of(arb_peer_num()),
            prop::collection::vec(arb_addr(), 0..=4),
            prop::collection::vec(
                (
                    arb_swarm(),
                    prop_oneof![Just(ActionKind::Join), Just(ActionKind::Leave)],
                    arb_mode()
                )
                    .prop_map(|(swarm_id, action, mode)| SwarmAction {
                        swarm_id,
                        action,
                        mode
                    }),
                0..6
            ),
        )
            .prop_map(|(peer_num, addrs, actions)| RequestKind::Connect {
                peer_num,
                addrs,
                actions
            }),
        (arb_swarm(), prop::option::of(arb_peer_num()), arb_chunks()).prop_map(
            |(swarm_id, peer_num, chunks)| RequestKind::Find {
                swarm_id,
                peer_num,
                chunks
            }
        ),
        prop::collection::vec(
            (
                prop::option::of(arb_swarm()),
                any::<u64>(),
                any::<u64>(),
                any::<u64>(),
                any::<u32>()
            )
                .prop_map(|(swarm_id, up, down, bw, links)| SwarmStat {
                    swarm_id,
                    uploaded_bytes: up,
                    downloaded_bytes: down,
                    available_bandwidth: bw,
                    concurrent_links: links,
                }),
            0..4
        )
        .prop_map(|stats| RequestKind::StatReport { stats }),
        (arb_swarm(), arb_mode(), prop::option::of(arb_peer_num())).prop_map(
            |(swarm_id, mode, peer_num)| RequestKind::Join {
                swarm_id,
                mode,
                peer_num
            }
        ),
        arb_swarm().prop_map(|swarm_id| RequestKind::Leave { swarm_id }),
        prop_oneof![
            Just(DisconnectScope::AllSwarms),
            Just(DisconnectScope::Deregister)
        ]
        .prop_map(|scope| RequestKind::Disconnect { scope }),
        Just(RequestKind::Keepalive),
        (arb_swarm(), arb_chunks())
            .prop_map(|(swarm_id, chunks)| RequestKind::JoinChunk { swarm_id, chunks }),
        prop_oneof![
            arb_swarm().prop_map(StatTarget::Swarm),
            arb_peer().prop_map(StatTarget::Peer)
        ]
        .prop_map(|target| RequestKind::StatQuery { target }),
    ]
}

fn arb_txid() -> impl Strategy<Value = TransactionId> {
    "[ -~]{0,40}".prop_map(TransactionId)
}

fn arb_peer_info() -> impl Strategy<Value = PeerInfo> {
    (
        arb_peer(),
        arb_mode(),
        prop::collection::vec(arb_addr(), 0..3),
    )
        .prop_map(|(peer_id, mode, addrs)| PeerInfo {
            peer_id,
            mode,
            addrs: addrs.into_iter().collect(),
        })
}

fn arb_code() -> impl Strategy<Value = ErrorCode> {
    prop_oneof![
        Just(ErrorCode::Ok),
        Just(ErrorCode::BadRequest),
        Just(ErrorCode::UnsupportedVersion),
        Just(ErrorCode::Forbidden),
        Just(ErrorCode::InternalError),
        Just(ErrorCode::ServiceUnavailable),
        Just(ErrorCode::AuthenticationRequired),
    ]
}

fn arb_stat() -> impl Strategy<Value = StatAnswer> {
    prop_oneof![
        (arb_swarm(), any::<(u32, u32, u32, u32, u64, u64)>()).prop_map(
            |(s, (p, se, le, done, up, down))| {
                StatAnswer::Swarm(
                    s,
                    SwarmStats {
                        peers: p,
                        seeders: se,
                        leechers: le,
                        completed: done,
                        uploaded_bytes: up,
                        downloaded_bytes: down,
                    },
                )
            }
        ),
        (
            arb_peer(),
            any::<bool>(),
            0u64..(u64::MAX / 1000),
            prop::collection::vec(arb_addr(), 0..3),
            prop::collection::vec((arb_swarm(), arb_mode()), 0..3),
            prop::option::of(any::<[u8; 16]>()),
        )
            .prop_map(
                |(peer_id, tracking, secs, addrs, swarms, connection_tracker)| {
                    StatAnswer::Peer(PeerStatus {
                        peer_id,
                        state: if tracking {
                            PeerState::Tracking
                        } else {
                            PeerState::PeerRegistered
                        },
                        online_ms: secs * 1000,
                        addrs: addrs.into_iter().collect(),
                        swarms,
                        connection_tracker,
                    })
                }
            ),
    ]
}

fn arb_response() -> impl Strategy<Value = Response> {
    prop_oneof![
        arb_code()
            .prop_filter("errors only", |c| *c != ErrorCode::Ok)
            .prop_map(Response::Err),
        (
            prop::option::of(arb_addr()),
            prop::collection::vec(
                (
                    arb_swarm(),
                    arb_code(),
                    prop::option::of(prop::collection::vec(arb_peer_info(), 0..4))
                )
                    .prop_map(|(swarm_id, result, peers)| SwarmResult {
                        swarm_id,
                        result,
                        peers
                    }),
                0..4
            ),
            prop::option::of(arb_stat()),
        )
            .prop_map(|(reflexive, swarm_results, stat)| Response::Ok(Answer {
                reflexive,
                swarm_results,
                stat
            })),
    ]
}

/// What decode_response should make of an encoded `response`.
fn expected_view(response: &Response, t: Option<&TransactionId>) -> DecodedResponse {
    let code = response.error_code();
    let (reflexive, swarm_results, stat) = match response {
        Response::Err(_) => (None, vec![], None),
        Response::Ok(a) => (
            a.reflexive,
            a.swarm_results
                .iter()
                .map(|r| DecodedSwarmResult {
                    swarm_id: r.swarm_id,
                    result: r.result,
                    peers: if r.result == ErrorCode::Ok {
                        r.peers.as_ref().map(|ps| {
                            ps.iter()
                                .map(|p| DecodedPeer {
                                    peer_id: p.peer_id,
                                    addrs: p.addrs.to_vec(),
                                })
                                .collect()
                        })
                    } else {
                        None
                    },
                })
                .collect(),
            a.stat.clone(),
        ),
    };
    DecodedResponse {
        response_type: u8::from(code != ErrorCode::Ok),
        error_code: code,
        transaction_id: t.cloned(),
        reflexive,
        swarm_results,
        stat,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn requests_round_trip(peer_id in arb_peer(), kind in arb_kind(), t in arb_txid()) {
        let request = Request { peer_id, source: source(), kind };
        let mut body = Vec::new();
        encode_request(&request, &t, &mut body);
        let decoded = decode_request(&body, source(), &DecodeLimits::default());
        prop_assert_eq!(
            decoded,
            Ok(Decoded { request, transaction_id: t }),
            "{}", String::from_utf8_lossy(&body)
        );
    }

    #[test]
    fn responses_round_trip(response in arb_response(), t in prop::option::of(arb_txid())) {
        let mut body = Vec::new();
        encode_response(&response, t.as_ref(), &mut body);
        let decoded = decode_response(&body);
        prop_assert_eq!(
            decoded,
            Ok(expected_view(&response, t.as_ref())),
            "{}", String::from_utf8_lossy(&body)
        );
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(body in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_request(&body, source(), &DecodeLimits::default());
        let _ = decode_response(&body);
    }

    #[test]
    fn decoding_mutated_examples_never_panics(
        which in 0usize..8, at in any::<prop::sample::Index>(), byte in any::<u8>()
    ) {
        let examples = [E1_BODY, E2, E3, E4_BODY, E5, E6, E7, E8];
        let mut body = examples[which].as_bytes().to_vec();
        let i = at.index(body.len());
        body[i] = byte;
        let _ = decode_request(&body, source(), &DecodeLimits::default());
        let _ = decode_response(&body);
    }
}

mod differential;

// ---- The hot-path answer encoder against the reference encoder ------------------------------

/// Identifiers as they may reach the encoder: any bytes (non-UTF-8 ones are written as hex),
/// text with quotes, backslashes and control characters to escape, and plain ASCII of every
/// length around the eight-byte words the fast path checks.
fn arb_wire_id() -> impl Strategy<Value = IdBytes> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 1..=64),
        any::<String>().prop_map(String::into_bytes),
        "[ -~]{1,64}".prop_map(String::into_bytes),
        "[a-f0-9]{1,64}".prop_map(String::into_bytes),
    ]
    .prop_filter_map("id of 1..=64 bytes", |b| IdBytes::new(&b).ok())
}

/// IPv6 addresses with runs of zero groups (where RFC 5952 compresses), IPv4-mapped and
/// IPv4-compatible ones, the unspecified and loopback addresses, and any other.
fn arb_wire_ipv6() -> impl Strategy<Value = Ipv6Addr> {
    prop_oneof![
        any::<[u8; 16]>().prop_map(Ipv6Addr::from),
        prop::array::uniform8(prop_oneof![
            3 => Just(0u16),
            1 => Just(1u16),
            1 => Just(0xffff),
            2 => any::<u16>(),
        ])
        .prop_map(Ipv6Addr::from),
        any::<[u8; 4]>().prop_map(|b| Ipv4Addr::from(b).to_ipv6_mapped()),
        any::<[u8; 4]>().prop_map(|b| Ipv4Addr::from(b).to_ipv6_compatible()),
        Just(Ipv6Addr::UNSPECIFIED),
        Just(Ipv6Addr::LOCALHOST),
    ]
}

fn arb_wire_addr() -> BoxedStrategy<PeerAddr> {
    (
        arb_addr(),
        prop_oneof![
            any::<[u8; 4]>().prop_map(|b| IpAddr::V4(Ipv4Addr::from(b))),
            arb_wire_ipv6().prop_map(IpAddr::V6),
        ],
        prop_oneof![Just(1u32), any::<u32>()],
    )
        .prop_map(|(mut a, ip, priority)| {
            a.addr.set_ip(ip);
            a.priority = priority;
            a
        })
        .boxed()
}

fn arb_wire_peer() -> BoxedStrategy<PeerInfo> {
    (
        arb_wire_id(),
        arb_mode(),
        prop::collection::vec(arb_wire_addr(), 0..4),
    )
        .prop_map(|(id, mode, addrs)| PeerInfo {
            peer_id: PeerId(id),
            mode,
            addrs: addrs.into_iter().collect(),
        })
        .boxed()
}

/// FIND and CONNECT-like answers with wire-like ids and addresses, STAT_QUERY answers about a
/// peer, and errors.
fn arb_wire_response() -> BoxedStrategy<Response> {
    let result = (
        arb_wire_id(),
        arb_code(),
        prop::option::of(prop::collection::vec(arb_wire_peer(), 0..32)),
    )
        .prop_map(|(id, result, peers)| SwarmResult {
            swarm_id: SwarmId(id),
            result,
            peers,
        });
    let peer_stat = (
        arb_wire_id(),
        prop::collection::vec(arb_wire_addr(), 0..3),
        prop::collection::vec((arb_wire_id().prop_map(SwarmId), arb_mode()), 0..4),
        prop::option::of(any::<[u8; 16]>()),
        any::<u64>(),
    )
        .prop_map(|(id, addrs, swarms, connection_tracker, online_ms)| {
            StatAnswer::Peer(PeerStatus {
                peer_id: PeerId(id),
                state: PeerState::Tracking,
                online_ms,
                addrs: addrs.into_iter().collect(),
                swarms,
                connection_tracker,
            })
        });
    prop_oneof![
        arb_code().prop_map(Response::Err),
        (
            prop::option::of(arb_wire_addr()),
            prop::collection::vec(result, 0..3),
            prop::option::of(prop_oneof![arb_stat(), peer_stat]),
        )
            .prop_map(|(reflexive, swarm_results, stat)| Response::Ok(Answer {
                reflexive,
                swarm_results,
                stat
            })),
    ]
    .boxed()
}

/// Both encoders' bytes for one answer, appended after `prefix` (the server writes the answer
/// after its HTTP head).
fn both_encodings(
    response: &Response,
    t: Option<&TransactionId>,
    prefix: &[u8],
) -> (Vec<u8>, Vec<u8>) {
    let mut fast = prefix.to_vec();
    encode_response(response, t, &mut fast);
    let mut reference = prefix.to_vec();
    encode_reference::encode_response(response, t, &mut reference);
    (fast, reference)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The hot-path encoder writes exactly the reference encoder's bytes.
    #[test]
    fn answers_are_the_reference_encoders_bytes(
        response in prop_oneof![arb_wire_response(), arb_response().boxed()],
        t in prop::option::of(prop_oneof![
            arb_txid(),
            any::<String>().prop_map(TransactionId),
        ]),
        prefix in prop::collection::vec(any::<u8>(), 0..40),
    ) {
        let (fast, reference) = both_encodings(&response, t.as_ref(), &prefix);
        prop_assert_eq!(
            &fast, &reference,
            "\nfast: {}\nreference: {}",
            String::from_utf8_lossy(&fast), String::from_utf8_lossy(&reference)
        );
        // And the answer is JSON.
        let body = &fast[prefix.len()..];
        prop_assert!(serde_json::from_slice::<Value>(body).is_ok());
    }

    /// IPv6 text is `Display`'s (RFC 5952) for every address shape.
    #[test]
    fn ipv6_text_is_displays(ip in arb_wire_ipv6(), port in any::<u16>()) {
        let addr = PeerAddr::reflexive(SocketAddr::new(IpAddr::V6(ip), port));
        let response = Response::Ok(Answer { reflexive: Some(addr), ..Answer::default() });
        let (fast, reference) = both_encodings(&response, None, b"");
        prop_assert_eq!(&fast, &reference);
        let text = String::from_utf8(fast).expect("ASCII");
        let want = format!("\"address\":\"{ip}\"");
        prop_assert!(text.contains(&want), "{text}");
    }
}

/// Golden bytes: a FIND answer with 30 peers and two error answers (one escaping its
/// transaction id), as the fast encoder writes them, equal to the reference's and to the fixed
/// text. (The RFC 7846 examples are compared as JSON values above.)
#[test]
fn golden_answers() {
    let peer = |i: u8| PeerInfo {
        peer_id: pid(&format!("peer-{i:02}")),
        mode: PeerMode::Seeder,
        addrs: smallvec![PeerAddr {
            addr: SocketAddr::from(([198, 51, 100, i], 7000 + u16::from(i))),
            priority: 1,
            kind: AddrType::Host,
            connection: None,
            asn: None,
            ppsp_pp: false,
        }],
    };
    let response = Response::Ok(Answer {
        reflexive: None,
        swarm_results: vec![SwarmResult {
            swarm_id: sid("swarm"),
            result: ErrorCode::Ok,
            peers: Some((0..30).map(peer).collect()),
        }],
        stat: None,
    });
    let mut out = Vec::new();
    encode_response(&response, Some(&txid("7")), &mut out);
    let mut want = String::from(
        "{\"PPSPTrackerProtocol\":{\"version\":1,\"response_type\":0,\"error_code\":0,\
         \"transaction_id\":\"7\",\"swarm_result\":{\"swarm_id\":\"swarm\",\"result\":0,\
         \"peer_group\":{\"peer_info\":[",
    );
    for i in 0..30u16 {
        if i > 0 {
            want.push(',');
        }
        want.push_str(&format!(
            "{{\"peer_id\":\"peer-{i:02}\",\"peer_addr\":{{\"ip_address\":{{\"address_type\":\
             \"ipv4\",\"address\":\"198.51.100.{i}\"}},\"port\":{},\"priority\":1,\
             \"type\":\"HOST\"}}}}",
            7000 + i
        ));
    }
    want.push_str("]}}}}");
    assert_eq!(String::from_utf8(out).unwrap(), want);
    let errors = [
        (ErrorCode::BadRequest, None, "{\"PPSPTrackerProtocol\":{\"version\":1,\"response_type\":1,\"error_code\":1}}"),
        (ErrorCode::ServiceUnavailable, Some(txid("a\"b\\c\u{1}")), "{\"PPSPTrackerProtocol\":{\"version\":1,\"response_type\":1,\"error_code\":5,\"transaction_id\":\"a\\\"b\\\\c\\u0001\"}}"),
    ];
    for (code, t, want) in errors {
        let (fast, reference) = both_encodings(&Response::Err(code), t.as_ref(), b"");
        assert_eq!(fast, reference);
        assert_eq!(String::from_utf8(fast).unwrap(), want);
    }
}

/// The prefetch's id scan finds the ids of ordinary bodies (every RFC 7846 example naming a
/// peer), and nothing (rather than something wrong) for an escaped id or a missing key.
#[test]
fn likely_ids_are_the_decoded_ids_of_ordinary_bodies() {
    use crate::engine::RequestKind;
    let source: std::net::SocketAddr = "10.0.0.1:7000".parse().unwrap();
    let mut checked = 0;
    for (name, _, body) in ALL {
        let Ok(decoded) = decode_request(body.as_bytes(), source, &DecodeLimits::default()) else {
            continue;
        };
        let (peer, swarm) = likely_ids(body.as_bytes());
        assert_eq!(peer, Some(decoded.request.peer_id.as_bytes()), "{name}");
        let first_swarm = match &decoded.request.kind {
            RequestKind::Connect { actions, .. } => actions.first().map(|a| a.swarm_id),
            RequestKind::Find { swarm_id, .. }
            | RequestKind::Join { swarm_id, .. }
            | RequestKind::Leave { swarm_id } => Some(*swarm_id),
            _ => None,
        };
        if let Some(id) = first_swarm {
            assert_eq!(swarm, Some(id.as_bytes()), "{name}");
        }
        checked += 1;
    }
    assert!(checked >= 3, "only {checked} examples checked");
    // What the hot-path encoder writes (the load generator's requests).
    let request = crate::engine::Request {
        peer_id: crate::engine::PeerId::new(b"0123abcd").unwrap(),
        source,
        kind: RequestKind::Join {
            swarm_id: crate::engine::SwarmId::new(b"feed").unwrap(),
            mode: crate::engine::PeerMode::Leech,
            peer_num: None,
        },
    };
    let mut body = Vec::new();
    encode_request(&request, &TransactionId("7".into()), &mut body);
    assert_eq!(
        likely_ids(&body),
        (Some(&b"0123abcd"[..]), Some(&b"feed"[..]))
    );
    let body = br#"{"PPSPTrackerProtocol":{"peer_id" : "ab\u0063","swarm_id":"s1"}}"#;
    assert_eq!(likely_ids(body), (None, Some(&b"s1"[..])));
    assert_eq!(likely_ids(br#"{"peer_id": 5}"#), (None, None));
    assert_eq!(likely_ids(b"\"peer_id\""), (None, None));
    assert_eq!(likely_ids(b""), (None, None));
}
