//! Engine tests: every request type, every engine error code, RFC 7846 Table 6 in each state,
//! timers with a fake clock, limits, peer selection, a property test of the table invariants
//! and a two-thread consistency test.

use std::net::SocketAddr;

use super::requests::table6_allows;
use super::*;

const A: u8 = 1;
const B: u8 = 2;

fn cfg() -> EngineConfig {
    EngineConfig {
        shards: 4,
        ..EngineConfig::default()
    }
}

fn pid(s: &str) -> PeerId {
    PeerId::new(s.as_bytes()).expect("test id")
}

fn sid(s: &str) -> SwarmId {
    SwarmId::new(s.as_bytes()).expect("test id")
}

fn src(ip: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, ip], 4000 + u16::from(ip)))
}

fn t(secs: u64) -> Time {
    Time::from_secs(secs)
}

fn req(peer: &str, ip: u8, kind: RequestKind) -> Request {
    Request {
        peer_id: pid(peer),
        source: src(ip),
        kind,
    }
}

fn act(swarm: &str, action: ActionKind, mode: PeerMode) -> SwarmAction {
    SwarmAction {
        swarm_id: sid(swarm),
        action,
        mode,
    }
}

use ActionKind::{Join as J, Leave as L};
use PeerMode::{Leech as LE, Seeder as SE};

fn connect(actions: Vec<SwarmAction>) -> RequestKind {
    RequestKind::Connect {
        peer_num: None,
        addrs: Vec::new(),
        actions,
    }
}

fn find(swarm: &str, count: Option<u32>) -> RequestKind {
    RequestKind::Find {
        swarm_id: sid(swarm),
        peer_num: count.map(|c| PeerNum {
            peer_count: Some(c),
            ..PeerNum::default()
        }),
        chunks: Vec::new(),
    }
}

fn join(swarm: &str, mode: PeerMode) -> RequestKind {
    RequestKind::Join {
        swarm_id: sid(swarm),
        mode,
        peer_num: None,
    }
}

fn ok(r: Response) -> Answer {
    match r {
        Response::Ok(a) => a,
        Response::Err(e) => panic!("expected success, got {e:?}"),
    }
}

fn code(r: Response) -> ErrorCode {
    r.error_code()
}

fn peer_status(e: &Engine, peer: &str, now: Time) -> Option<PeerStatus> {
    match e.handle(
        &req(
            "observer",
            99,
            RequestKind::StatQuery {
                target: StatTarget::Peer(pid(peer)),
            },
        ),
        now,
    ) {
        Response::Ok(Answer {
            stat: Some(StatAnswer::Peer(p)),
            ..
        }) => Some(p),
        _ => None,
    }
}

fn swarm_stats(e: &Engine, swarm: &str) -> SwarmStats {
    match e.handle(
        &req(
            "observer",
            99,
            RequestKind::StatQuery {
                target: StatTarget::Swarm(sid(swarm)),
            },
        ),
        t(0),
    ) {
        Response::Ok(Answer {
            stat: Some(StatAnswer::Swarm(_, s)),
            ..
        }) => s,
        other => panic!("stat query failed: {other:?}"),
    }
}

fn found(e: &Engine, peer: &str, ip: u8, swarm: &str, count: Option<u32>) -> Vec<PeerInfo> {
    let a = ok(e.handle(&req(peer, ip, find(swarm, count)), t(1)));
    a.swarm_results[0]
        .peers
        .clone()
        .expect("FIND has a peer list")
}

fn assert_consistent(e: &Engine) -> TableCounts {
    match e.audit() {
        Ok(c) => c,
        Err(msg) => panic!("engine inconsistent: {msg}"),
    }
}

// ---- CONNECT and RFC 7846 Table 6 ----

#[test]
fn table6_as_a_table() {
    let lj = act("a", J, LE);
    let ll = act("b", L, LE);
    let sj = act("c", J, SE);
    let sj2 = act("d", J, SE);
    let sl = act("e", L, SE);
    // (actions, valid from START / PEER REGISTERED, valid from TRACKING)
    let rows: Vec<(Vec<SwarmAction>, bool, bool)> = vec![
        (vec![lj], true, false),          // row 1 (and a lone LEECH JOIN in TRACKING)
        (vec![ll], false, true),          // rows 2 and 3
        (vec![lj, ll], false, true),      // rows 4 and 5
        (vec![ll, lj], false, true),      // rows 4 and 5, other order
        (vec![sj, sj2], true, false),     // rows 6 and 7
        (vec![sj], true, false),          // rows 6 and 7 with N = 1
        (vec![sl, sl], false, true),      // row 8
        (vec![sl, ll], false, true),      // LEAVE regardless of mode (§4.1.1)
        (vec![lj, sj], false, false),     // not in the table
        (vec![lj, lj], false, false),     // two LEECH JOINs
        (vec![lj, ll, ll], false, false), // row 5 needs exactly one LEAVE
        (vec![sj, sl], false, false),     // seeder join and leave
        (vec![], true, true),             // registration only
    ];
    for (actions, from_start, from_tracking) in rows {
        assert_eq!(
            table6_allows(&actions, false),
            from_start,
            "{actions:?} from START"
        );
        assert_eq!(
            table6_allows(&actions, true),
            from_tracking,
            "{actions:?} in TRACKING"
        );
    }
}

#[test]
fn row1_leech_join_from_start_registers_and_tracks() {
    let e = Engine::new(&cfg());
    let a = ok(e.handle(&req("p1", A, connect(vec![act("s", J, LE)])), t(0)));
    assert_eq!(a.reflexive, Some(PeerAddr::reflexive(src(A))));
    assert_eq!(a.swarm_results.len(), 1);
    assert_eq!(a.swarm_results[0].result, ErrorCode::Ok);
    assert_eq!(
        a.swarm_results[0].peers,
        Some(Vec::new()),
        "LEECH join gets a list"
    );
    let st = peer_status(&e, "p1", t(5)).expect("registered");
    assert_eq!(st.state, PeerState::Tracking);
    assert_eq!(st.online_ms, 5000);
    assert_eq!(st.addrs.as_slice(), &[PeerAddr::reflexive(src(A))]);
    assert_eq!(st.swarms, vec![(sid("s"), LE)]);
    assert_eq!(st.connection_tracker, None);
    let c = assert_consistent(&e);
    assert_eq!((c.peers, c.swarms, c.leechers, c.seeders), (1, 1, 1, 0));
}

#[test]
fn rows_2_and_4_invalid_from_start_register_nothing() {
    let e = Engine::new(&cfg());
    let r = e.handle(&req("p1", A, connect(vec![act("s", L, LE)])), t(0));
    assert_eq!(code(r), ErrorCode::Forbidden);
    let r = e.handle(
        &req("p1", A, connect(vec![act("s", J, LE), act("s", L, LE)])),
        t(0),
    );
    assert_eq!(code(r), ErrorCode::Forbidden);
    let r = e.handle(
        &req("p1", A, connect(vec![act("s", J, LE), act("x", J, SE)])),
        t(0),
    );
    assert_eq!(code(r), ErrorCode::Forbidden);
    assert_eq!(assert_consistent(&e), TableCounts::default());
    assert!(peer_status(&e, "p1", t(0)).is_none());
}

#[test]
fn row6_seeder_joins_many_swarms_from_start() {
    let e = Engine::new(&cfg());
    let a = ok(e.handle(
        &req(
            "p1",
            A,
            connect(vec![act("s1", J, SE), act("s2", J, SE), act("s3", J, SE)]),
        ),
        t(0),
    ));
    assert_eq!(a.swarm_results.len(), 3);
    for r in &a.swarm_results {
        assert_eq!(r.result, ErrorCode::Ok);
        assert_eq!(r.peers, None, "a SEEDER without peer_num gets no list");
    }
    let c = assert_consistent(&e);
    assert_eq!((c.swarms, c.seeders), (3, 3));
}

#[test]
fn seeder_with_peer_num_gets_a_list() {
    let e = Engine::new(&cfg());
    ok(e.handle(&req("p1", A, connect(vec![act("s", J, SE)])), t(0)));
    let a = ok(e.handle(
        &req(
            "p2",
            B,
            RequestKind::Connect {
                peer_num: Some(PeerNum {
                    peer_count: Some(5),
                    ..PeerNum::default()
                }),
                addrs: Vec::new(),
                actions: vec![act("s", J, SE)],
            },
        ),
        t(0),
    ));
    let peers = a.swarm_results[0].peers.clone().expect("list");
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].peer_id(), pid("p1"));
    assert_eq!(peers[0].mode, SE);
}

#[test]
fn rows_3_5_7_8_in_tracking() {
    let e = Engine::new(&cfg());
    ok(e.handle(&req("p1", A, connect(vec![act("s1", J, LE)])), t(0)));
    // Row 5: switch swarms.
    let a = ok(e.handle(
        &req("p1", A, connect(vec![act("s2", J, LE), act("s1", L, LE)])),
        t(1),
    ));
    assert!(a.swarm_results.iter().all(|r| r.result == ErrorCode::Ok));
    let st = peer_status(&e, "p1", t(1)).expect("registered");
    assert_eq!(
        (st.state, st.swarms),
        (PeerState::Tracking, vec![(sid("s2"), LE)])
    );
    // Row 7: SEEDER JOIN in TRACKING is invalid; the registration is kept (§2.3.2 C).
    let r = e.handle(&req("p1", A, connect(vec![act("s3", J, SE)])), t(2));
    assert_eq!(code(r), ErrorCode::Forbidden);
    let st = peer_status(&e, "p1", t(2)).expect("kept");
    assert_eq!(st.swarms, vec![(sid("s2"), LE)]);
    // Row 3: LEECH LEAVE of the last swarm: back to PEER REGISTERED.
    ok(e.handle(&req("p1", A, connect(vec![act("s2", L, LE)])), t(3)));
    let st = peer_status(&e, "p1", t(3)).expect("still registered");
    assert_eq!((st.state, st.swarms.len()), (PeerState::PeerRegistered, 0));
    // Row 8: N SEEDER LEAVEs, from a peer that seeds several swarms.
    ok(e.handle(
        &req("p2", B, connect(vec![act("x", J, SE), act("y", J, SE)])),
        t(3),
    ));
    let a = ok(e.handle(
        &req("p2", B, connect(vec![act("x", L, SE), act("y", L, SE)])),
        t(4),
    ));
    assert_eq!(a.swarm_results.len(), 2);
    assert!(a.swarm_results.iter().all(|r| r.result == ErrorCode::Ok));
    assert_eq!(assert_consistent(&e).swarms, 0, "empty swarms are deleted");
}

#[test]
fn invalid_set_from_peer_registered_deletes_the_registration() {
    let e = Engine::new(&cfg());
    ok(e.handle(&req("p1", A, connect(vec![])), t(0)));
    assert_eq!(
        peer_status(&e, "p1", t(0)).map(|s| s.state),
        Some(PeerState::PeerRegistered)
    );
    // RFC 7846 §2.3.2 A.
    let r = e.handle(&req("p1", A, connect(vec![act("s", L, LE)])), t(1));
    assert_eq!(code(r), ErrorCode::Forbidden);
    assert!(peer_status(&e, "p1", t(1)).is_none());
    assert_eq!(assert_consistent(&e).peers, 0);
    // From PEER REGISTERED, a valid set works like START.
    ok(e.handle(&req("p1", A, connect(vec![])), t(2)));
    ok(e.handle(&req("p1", A, connect(vec![act("s", J, SE)])), t(3)));
    assert_eq!(
        peer_status(&e, "p1", t(3)).map(|s| s.state),
        Some(PeerState::Tracking)
    );
}

#[test]
fn connect_leave_of_a_swarm_not_joined_is_03_for_that_swarm() {
    let e = Engine::new(&cfg());
    ok(e.handle(&req("p1", A, connect(vec![act("s1", J, LE)])), t(0)));
    let a = ok(e.handle(
        &req("p1", A, connect(vec![act("s1", L, SE), act("nope", L, SE)])),
        t(1),
    ));
    assert_eq!(a.swarm_results[0].result, ErrorCode::Ok);
    assert_eq!(a.swarm_results[1].result, ErrorCode::Forbidden);
    assert_consistent(&e);
}

#[test]
fn connect_with_addresses_and_later_address_change_reaches_members() {
    let e = Engine::new(&cfg());
    let addr = |port| PeerAddr {
        addr: SocketAddr::from(([192, 0, 2, 7], port)),
        priority: 10,
        kind: AddrType::Host,
        connection: Some(LinkKind::Wired),
        asn: Some(64500),
        ppsp_pp: true,
    };
    let with = |port, actions| RequestKind::Connect {
        peer_num: None,
        addrs: vec![addr(port)],
        actions,
    };
    ok(e.handle(&req("p1", A, with(1000, vec![act("s", J, SE)])), t(0)));
    ok(e.handle(&req("p2", B, connect(vec![act("s", J, LE)])), t(0)));
    assert_eq!(
        found(&e, "p2", B, "s", None)[0].addrs().as_slice(),
        &[addr(1000)]
    );
    ok(e.handle(&req("p1", A, with(2000, vec![])), t(1)));
    assert_eq!(
        found(&e, "p2", B, "s", None)[0].addrs().as_slice(),
        &[addr(2000)]
    );
    assert_consistent(&e);
}

/// A FIND lists a peer from its membership's copy when the copy is complete (one IPv4
/// address, an id that fits), and from its record otherwise; after every address change both
/// give the record's current addresses and the audit finds every copy equal to its record.
#[test]
fn membership_copies_follow_address_changes() {
    let e = Engine::new(&cfg());
    let hex = "00112233445566778899aabbccddeeff00112233";
    let v4 = |port, kind| PeerAddr {
        addr: SocketAddr::from(([192, 0, 2, 8], port)),
        priority: 1,
        kind,
        connection: Some(LinkKind::Wireless),
        asn: None,
        ppsp_pp: true,
    };
    let v6 = PeerAddr {
        addr: "[2001:db8::8]:7100".parse().expect("address"),
        ..v4(0, AddrType::Host)
    };
    let with = |addrs: Vec<PeerAddr>, actions| RequestKind::Connect {
        peer_num: None,
        addrs,
        actions,
    };
    // Three swarms, so that a change is rewritten in each.
    let joins = vec![act("s1", J, SE), act("s2", J, SE), act("s3", J, SE)];
    ok(e.handle(&req(hex, A, with(vec![], joins)), t(0)));
    ok(e.handle(&req("asker", B, connect(vec![])), t(0)));
    let listed = |e: &Engine| -> Vec<Vec<PeerAddr>> {
        ["s1", "s2", "s3"]
            .iter()
            .map(|s| {
                let list = found(e, "asker", B, s, None);
                assert_eq!(list.len(), 1);
                assert_eq!(list[0].peer_id(), pid(hex));
                assert_eq!(list[0].mode, SE);
                list[0].addrs().to_vec()
            })
            .collect()
    };
    assert_eq!(listed(&e), vec![vec![PeerAddr::reflexive(src(A))]; 3]);
    assert_consistent(&e);
    let steps = [
        vec![v4(7000, AddrType::Host)],
        vec![v4(7001, AddrType::Proxy)],
        vec![v6],
        vec![v4(7002, AddrType::Reflexive), v6],
        vec![v4(7003, AddrType::Host)],
    ];
    for (i, addrs) in steps.into_iter().enumerate() {
        ok(e.handle(&req(hex, A, with(addrs.clone(), vec![])), t(1 + i as u64)));
        assert_eq!(listed(&e), vec![addrs; 3], "step {i}");
        assert_consistent(&e);
    }
    // Back to the reflexive address, from another source port.
    let mut r = req(hex, A, with(vec![], vec![]));
    r.source.set_port(9999);
    ok(e.handle(&r, t(9)));
    let reflexive = PeerAddr::reflexive(SocketAddr::from(([10, 0, 0, A], 9999)));
    assert_eq!(listed(&e), vec![vec![reflexive]; 3]);
    assert_consistent(&e);
    // A warm restart gives the same lists.
    let f = Engine::new(&cfg());
    f.import_registrations(&e.export_registrations(t(9)), t(9));
    assert_eq!(listed(&f), vec![vec![reflexive]; 3]);
    assert_consistent(&f);
}

// ---- unregistered peers, hijacking, bad requests ----

fn every_peer_request(swarm: &str) -> Vec<RequestKind> {
    vec![
        find(swarm, None),
        RequestKind::StatReport { stats: vec![] },
        RequestKind::JoinChunk {
            swarm_id: sid(swarm),
            chunks: vec![ChunkRange { start: 0, end: 1 }],
        },
        join(swarm, LE),
        RequestKind::Leave {
            swarm_id: sid(swarm),
        },
        RequestKind::Keepalive,
        RequestKind::Disconnect {
            scope: DisconnectScope::AllSwarms,
        },
        RequestKind::Disconnect {
            scope: DisconnectScope::Deregister,
        },
    ]
}

#[test]
fn requests_from_unregistered_peers_are_forbidden() {
    let e = Engine::new(&cfg());
    for kind in every_peer_request("s") {
        let name = kind.name();
        assert_eq!(
            code(e.handle(&req("ghost", A, kind), t(0))),
            ErrorCode::Forbidden,
            "{name}"
        );
    }
    assert_eq!(assert_consistent(&e), TableCounts::default());
}

#[test]
fn another_source_ip_cannot_touch_a_registration() {
    let e = Engine::new(&cfg());
    ok(e.handle(&req("p1", A, connect(vec![act("s", J, LE)])), t(0)));
    ok(e.handle(
        &req(
            "p1",
            A,
            RequestKind::JoinChunk {
                swarm_id: sid("s"),
                chunks: vec![ChunkRange { start: 0, end: 9 }],
            },
        ),
        t(0),
    ));
    let before = peer_status(&e, "p1", t(10)).expect("registered");
    let counts = assert_consistent(&e);
    let mut attacks = every_peer_request("s");
    attacks.push(connect(vec![act("s", L, LE)]));
    attacks.push(connect(vec![]));
    attacks.push(RequestKind::StatQuery {
        target: StatTarget::Swarm(sid("s")),
    });
    for kind in attacks {
        let name = kind.name();
        let r = e.handle(&req("p1", B, kind), t(10));
        assert_eq!(code(r), ErrorCode::Forbidden, "{name} from another IP");
    }
    assert_eq!(peer_status(&e, "p1", t(10)), Some(before));
    assert_eq!(assert_consistent(&e), counts);
    // The attacks did not re-arm the track timer either.
    let report = e.expire(t(121), usize::MAX);
    assert_eq!(report.expired, 1);
}

#[test]
fn ids_over_max_id_len_are_bad_requests() {
    let e = Engine::new(&EngineConfig {
        max_id_len: 8,
        ..cfg()
    });
    let long = "123456789";
    assert_eq!(
        code(e.handle(&req(long, A, connect(vec![])), t(0))),
        ErrorCode::BadRequest
    );
    assert_eq!(
        code(e.handle(&req("p1", A, connect(vec![act(long, J, LE)])), t(0))),
        ErrorCode::BadRequest
    );
    assert_eq!(
        assert_consistent(&e).peers,
        0,
        "nothing registered by a bad request"
    );
    ok(e.handle(&req("p1", A, connect(vec![act("s", J, LE)])), t(0)));
    for kind in [
        find(long, None),
        join(long, SE),
        RequestKind::Leave {
            swarm_id: sid(long),
        },
        RequestKind::JoinChunk {
            swarm_id: sid(long),
            chunks: vec![],
        },
        RequestKind::StatReport {
            stats: vec![SwarmStat {
                swarm_id: Some(sid(long)),
                ..SwarmStat::default()
            }],
        },
        RequestKind::StatQuery {
            target: StatTarget::Peer(pid(long)),
        },
    ] {
        let name = kind.name();
        assert_eq!(
            code(e.handle(&req("p1", A, kind), t(0))),
            ErrorCode::BadRequest,
            "{name}"
        );
    }
}

#[test]
fn lists_over_their_limits_are_bad_requests() {
    let e = Engine::new(&EngineConfig {
        max_addrs_per_peer: 2,
        max_chunk_ranges: 3,
        ..cfg()
    });
    let many_addrs = RequestKind::Connect {
        peer_num: None,
        addrs: vec![PeerAddr::reflexive(src(A)); 3],
        actions: vec![act("s", J, LE)],
    };
    assert_eq!(
        code(e.handle(&req("p1", A, many_addrs), t(0))),
        ErrorCode::BadRequest
    );
    ok(e.handle(&req("p1", A, connect(vec![act("s", J, LE)])), t(0)));
    let ranges = |n: u64| {
        (0..n)
            .map(|i| ChunkRange {
                start: i * 10,
                end: i * 10 + 1,
            })
            .collect()
    };
    let jc = |chunks| RequestKind::JoinChunk {
        swarm_id: sid("s"),
        chunks,
    };
    assert_eq!(
        code(e.handle(&req("p1", A, jc(ranges(4))), t(0))),
        ErrorCode::BadRequest
    );
    ok(e.handle(&req("p1", A, jc(ranges(3))), t(0)));
    let reversed = vec![ChunkRange { start: 5, end: 1 }];
    assert_eq!(
        code(e.handle(&req("p1", A, jc(reversed.clone())), t(0))),
        ErrorCode::BadRequest
    );
    let f = |chunks| RequestKind::Find {
        swarm_id: sid("s"),
        peer_num: None,
        chunks,
    };
    assert_eq!(
        code(e.handle(&req("p1", A, f(ranges(4))), t(0))),
        ErrorCode::BadRequest
    );
    assert_eq!(
        code(e.handle(&req("p1", A, f(reversed)), t(0))),
        ErrorCode::BadRequest
    );
    let stats = RequestKind::StatReport {
        stats: vec![SwarmStat::default(); 65],
    };
    assert_eq!(
        code(e.handle(&req("p1", A, stats), t(0))),
        ErrorCode::BadRequest
    );
    let actions = RequestKind::Connect {
        peer_num: None,
        addrs: vec![],
        actions: (0..65).map(|i| act(&format!("x{i}"), L, SE)).collect(),
    };
    assert_eq!(
        code(e.handle(&req("p1", A, actions), t(0))),
        ErrorCode::BadRequest
    );
    assert_consistent(&e);
}

// ---- timers ----

#[test]
fn init_timer_expires_a_peer_that_never_joins() {
    let e = Engine::new(&cfg());
    ok(e.handle(&req("p1", A, connect(vec![])), t(0)));
    assert_eq!(
        e.expire(t(30), usize::MAX).expired,
        0,
        "deadline not passed yet"
    );
    let r = e.expire(Time::from_millis(30_001), usize::MAX);
    assert_eq!((r.examined, r.expired), (1, 1));
    assert_eq!(assert_consistent(&e), TableCounts::default());
}

#[test]
fn track_timer_expires_a_silent_peer_and_cleans_its_swarms() {
    let e = Engine::new(&cfg());
    ok(e.handle(&req("p1", A, connect(vec![act("s", J, LE)])), t(0)));
    ok(e.handle(&req("p2", B, connect(vec![act("s", J, SE)])), t(100)));
    assert_eq!(
        e.expire(t(119), usize::MAX).expired,
        0,
        "init timer is not used in TRACKING"
    );
    assert_eq!(e.expire(t(121), usize::MAX).expired, 1);
    let c = assert_consistent(&e);
    assert_eq!((c.peers, c.swarms, c.seeders, c.leechers), (1, 1, 1, 0));
    assert_eq!(e.expire(t(221), usize::MAX).expired, 1);
    assert_eq!(assert_consistent(&e), TableCounts::default());
}

#[test]
fn every_valid_request_rearms_the_track_timer() {
    let kinds = vec![
        find("s", None),
        RequestKind::StatReport { stats: vec![] },
        RequestKind::Keepalive,
        RequestKind::JoinChunk {
            swarm_id: sid("s"),
            chunks: vec![],
        },
        join("s", SE),
        join("other", LE),
        connect(vec![act("s", L, LE), act("s", J, LE)]),
        RequestKind::StatQuery {
            target: StatTarget::Swarm(sid("s")),
        },
    ];
    for kind in kinds {
        let name = kind.name();
        let e = Engine::new(&cfg());
        ok(e.handle(&req("p1", A, connect(vec![act("s", J, LE)])), t(0)));
        ok(e.handle(&req("p1", A, kind), t(100)));
        assert_eq!(e.expire(t(200), usize::MAX).expired, 0, "{name} re-armed");
        assert_eq!(
            e.expire(t(221), usize::MAX).expired,
            1,
            "{name}: expires later"
        );
        assert_eq!(assert_consistent(&e), TableCounts::default());
    }
}

#[test]
fn leaving_the_last_swarm_restarts_the_init_timer() {
    let e = Engine::new(&cfg());
    ok(e.handle(&req("p1", A, connect(vec![act("s", J, LE)])), t(0)));
    ok(e.handle(
        &req("p1", A, RequestKind::Leave { swarm_id: sid("s") }),
        t(10),
    ));
    assert_eq!(
        peer_status(&e, "p1", t(10)).map(|s| s.state),
        Some(PeerState::PeerRegistered)
    );
    assert_eq!(e.expire(t(40), usize::MAX).expired, 0);
    assert_eq!(e.expire(t(41), usize::MAX).expired, 1);
}

#[test]
fn expiry_respects_its_budget_and_eventually_covers_everything() {
    let e = Engine::new(&cfg());
    for i in 0..1000 {
        ok(e.handle(
            &req(
                &format!("p{i}"),
                A,
                connect(vec![act(&format!("s{}", i % 7), J, SE)]),
            ),
            t(0),
        ));
    }
    let mut expired = 0;
    let mut steps = 0;
    while expired < 1000 {
        let r = e.expire(t(500), 100);
        assert!(r.examined <= 100);
        assert!(r.expired <= r.examined);
        expired += r.expired;
        steps += 1;
        assert!(steps < 100, "expiry makes progress");
    }
    assert_eq!(assert_consistent(&e), TableCounts::default());
}

// ---- DISCONNECT, JOIN, LEAVE, KEEPALIVE ----

#[test]
fn disconnect_all_keeps_the_registration_deregister_deletes_it() {
    let e = Engine::new(&cfg());
    ok(e.handle(
        &req("p1", A, connect(vec![act("s1", J, SE), act("s2", J, SE)])),
        t(0),
    ));
    ok(e.handle(
        &req(
            "p1",
            A,
            RequestKind::Disconnect {
                scope: DisconnectScope::AllSwarms,
            },
        ),
        t(1),
    ));
    let st = peer_status(&e, "p1", t(1)).expect("still registered");
    assert_eq!((st.state, st.swarms.len()), (PeerState::PeerRegistered, 0));
    assert_eq!(assert_consistent(&e).swarms, 0);
    ok(e.handle(&req("p1", A, join("s1", LE)), t(2)));
    ok(e.handle(
        &req(
            "p1",
            A,
            RequestKind::Disconnect {
                scope: DisconnectScope::Deregister,
            },
        ),
        t(3),
    ));
    assert!(peer_status(&e, "p1", t(3)).is_none());
    assert_eq!(assert_consistent(&e), TableCounts::default());
    assert_eq!(
        code(e.handle(&req("p1", A, RequestKind::Keepalive), t(4))),
        ErrorCode::Forbidden
    );
}

#[test]
fn join_changes_mode_and_leave_of_unknown_swarm_is_forbidden() {
    let e = Engine::new(&cfg());
    ok(e.handle(&req("p1", A, connect(vec![act("s", J, LE)])), t(0)));
    let a = ok(e.handle(&req("p1", A, join("s", SE)), t(1)));
    assert_eq!(a.swarm_results[0].peers, None);
    let c = assert_consistent(&e);
    assert_eq!((c.seeders, c.leechers, c.memberships), (1, 0, 1));
    let st = swarm_stats(&e, "s");
    assert_eq!((st.peers, st.seeders, st.leechers), (1, 1, 0));
    assert_eq!(
        code(e.handle(
            &req("p1", A, RequestKind::Leave { swarm_id: sid("x") }),
            t(1)
        )),
        ErrorCode::Forbidden
    );
    let a = ok(e.handle(&req("p1", A, join("t", LE)), t(1)));
    assert_eq!(
        a.swarm_results[0].peers,
        Some(vec![]),
        "LEECH JOIN gets a list"
    );
    assert_eq!(assert_consistent(&e).swarms, 2);
}

// ---- limits ----

#[test]
fn a_peer_joining_100k_swarms_is_capped_at_max_swarms_per_peer() {
    let e = Engine::new(&cfg());
    ok(e.handle(&req("p1", A, connect(vec![])), t(0)));
    let mut joined = 0;
    for i in 0..100_000 {
        match code(e.handle(&req("p1", A, join(&format!("{i:x}"), SE)), t(1))) {
            ErrorCode::Ok => joined += 1,
            c => assert_eq!(c, ErrorCode::BadRequest),
        }
    }
    assert_eq!(joined, 64);
    let c = e.counts();
    assert_eq!((c.peers, c.swarms, c.memberships), (1, 64, 64));
    assert_consistent(&e);
}

#[test]
fn max_swarms_answers_05() {
    let e = Engine::new(&EngineConfig {
        max_swarms: 2,
        ..cfg()
    });
    let a = ok(e.handle(
        &req(
            "p1",
            A,
            connect(vec![act("s1", J, SE), act("s2", J, SE), act("s3", J, SE)]),
        ),
        t(0),
    ));
    let results: Vec<_> = a.swarm_results.iter().map(|r| r.result).collect();
    assert_eq!(
        results,
        [ErrorCode::Ok, ErrorCode::Ok, ErrorCode::ServiceUnavailable]
    );
    assert_eq!(
        code(e.handle(&req("p1", A, join("s4", SE)), t(0))),
        ErrorCode::ServiceUnavailable
    );
    // Existing swarms can still be joined.
    ok(e.handle(&req("p2", B, connect(vec![act("s1", J, LE)])), t(0)));
    assert_eq!(assert_consistent(&e).swarms, 2);
}

#[test]
fn max_peers_answers_05() {
    let e = Engine::new(&EngineConfig {
        max_peers: 2,
        ..cfg()
    });
    ok(e.handle(&req("p1", A, connect(vec![])), t(0)));
    ok(e.handle(&req("p2", B, connect(vec![])), t(0)));
    assert_eq!(
        code(e.handle(&req("p3", 3, connect(vec![])), t(0))),
        ErrorCode::ServiceUnavailable
    );
    // A registered peer can still connect again.
    ok(e.handle(&req("p1", A, connect(vec![act("s", J, LE)])), t(0)));
    assert_eq!(assert_consistent(&e).peers, 2);
}

#[test]
fn max_peers_per_swarm_answers_05_for_that_swarm() {
    let e = Engine::new(&EngineConfig {
        max_peers_per_swarm: 2,
        ..cfg()
    });
    ok(e.handle(&req("p1", 1, connect(vec![act("s", J, SE)])), t(0)));
    ok(e.handle(&req("p2", 2, connect(vec![act("s", J, SE)])), t(0)));
    let a = ok(e.handle(
        &req("p3", 3, connect(vec![act("s", J, SE), act("t", J, SE)])),
        t(0),
    ));
    assert_eq!(a.swarm_results[0].result, ErrorCode::ServiceUnavailable);
    assert_eq!(a.swarm_results[1].result, ErrorCode::Ok);
    assert_eq!(swarm_stats(&e, "s").peers, 2);
    assert_consistent(&e);
}

// ---- FIND ----

fn populated(seeders: usize, leechers: usize) -> Engine {
    populated_with(cfg(), seeders, leechers)
}

fn populated_with(config: EngineConfig, seeders: usize, leechers: usize) -> Engine {
    let e = Engine::new(&config);
    for i in 0..seeders {
        ok(e.handle(
            &req(&format!("s{i}"), A, connect(vec![act("sw", J, SE)])),
            t(0),
        ));
    }
    for i in 0..leechers {
        ok(e.handle(
            &req(&format!("l{i}"), A, connect(vec![act("sw", J, LE)])),
            t(0),
        ));
    }
    e
}

#[test]
fn find_never_returns_the_requester_and_respects_counts() {
    let e = populated_with(
        EngineConfig {
            max_peer_count: 500,
            ..cfg()
        },
        0,
        300,
    );
    assert_consistent(&e);
    for _ in 0..50 {
        let list = found(&e, "l7", A, "sw", Some(299));
        assert_eq!(list.len(), 299);
        assert!(list.iter().all(|p| p.peer_id() != pid("l7")));
        let mut ids: Vec<_> = list.iter().map(|p| p.peer_id()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 299, "no duplicates");
    }
    // Cap: max_peer_count; default: default_peer_count (30).
    assert_eq!(found(&e, "l7", A, "sw", Some(10_000)).len(), 299);
    let capped = populated(0, 300);
    assert_eq!(found(&capped, "l7", A, "sw", Some(10_000)).len(), 200);
    assert_eq!(found(&e, "l7", A, "sw", None).len(), 30);
    assert_eq!(found(&e, "l7", A, "sw", Some(0)).len(), 0);
    for count in [1, 5, 100, 149, 150, 151, 200] {
        let list = found(&e, "l7", A, "sw", Some(count));
        assert_eq!(list.len(), count as usize);
        assert!(list.iter().all(|p| p.peer_id() != pid("l7")));
        let mut ids: Vec<_> = list.iter().map(|p| p.peer_id()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), count as usize);
    }
}

#[test]
fn find_samples_every_member_over_time() {
    let e = populated(0, 100);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..200 {
        for p in found(&e, "l0", A, "sw", Some(5)) {
            seen.insert(p.peer_id());
        }
    }
    assert_eq!(
        seen.len(),
        99,
        "a random sample reaches everyone but the requester"
    );
}

/// Every member other than the requester is listed about equally often (probability
/// wanted / others), in lists without duplicates, whatever the requester's position in its
/// mode's list, for a leech requester in the leechers, a seeder requester (leechers first,
/// then seeders), and a count that takes all seeders and part of the leechers.
#[test]
fn find_lists_every_member_equally_often() {
    let e = populated(40, 101);
    for (requester, count, rounds) in [
        ("l0", 30, 3_000),
        ("l57", 7, 6_000),
        ("s3", 120, 1_000),
        ("l100", 60, 2_000),
    ] {
        let mut hits: std::collections::HashMap<PeerId, u32> = std::collections::HashMap::new();
        let me = pid(requester);
        for _ in 0..rounds {
            let list = found(&e, requester, A, "sw", Some(count));
            assert_eq!(list.len(), count as usize);
            let mut ids: Vec<_> = list.iter().map(|p| p.peer_id()).collect();
            ids.sort();
            ids.dedup();
            assert_eq!(ids.len(), list.len(), "{requester}: no duplicates");
            assert!(!ids.contains(&me), "{requester} is never listed to itself");
            for p in &list {
                *hits.entry(p.peer_id()).or_default() += 1;
            }
        }
        let seeding = requester.starts_with('s');
        // The first mode (leechers for a seeder, else seeders) is listed whole or sampled
        // first; the rest of the count is sampled from the other mode.
        let (first, second) = if seeding { (101, 39) } else { (40, 100) };
        let in_first = (count as usize).min(first);
        let in_second = count as usize - in_first;
        for (id, &h) in &hits {
            let is_seeder = id.as_bytes().starts_with(b"s");
            let (listed, of) = if is_seeder == seeding {
                (in_second, second)
            } else {
                (in_first, first)
            };
            let expected = f64::from(rounds) * listed as f64 / of as f64;
            let ratio = f64::from(h) / expected;
            assert!(
                (0.85..1.15).contains(&ratio),
                "{requester}: {id:?} listed {h} times, expected {expected:.0}"
            );
        }
        let reached = hits.len();
        let others = if in_second > 0 { first + second } else { first };
        assert_eq!(
            reached, others,
            "{requester}: everyone else is listed sometimes"
        );
    }
    // A list long enough that its chosen members are prefetched ahead of their copy.
    let e = populated(0, 300);
    let mut hits: std::collections::HashMap<PeerId, u32> = std::collections::HashMap::new();
    let rounds = 10_000u32;
    for _ in 0..rounds {
        let list = found(&e, "l123", A, "sw", Some(30));
        assert_eq!(list.len(), 30);
        for p in &list {
            *hits.entry(p.peer_id()).or_default() += 1;
        }
    }
    assert_eq!(hits.len(), 299);
    assert!(!hits.contains_key(&pid("l123")));
    let expected = f64::from(rounds) * 30.0 / 299.0;
    for (id, &h) in &hits {
        let ratio = f64::from(h) / expected;
        assert!(
            (0.85..1.15).contains(&ratio),
            "{id:?} listed {h} times, expected {expected:.0}"
        );
    }
}

/// A list mixing entries written from the swarm's copies and entries read from records (peers
/// with several addresses or an IPv6 one) gives every peer's own addresses, once each, seeders
/// first, and leaves no placeholder behind.
#[test]
fn find_mixes_copied_and_record_entries() {
    let e = Engine::new(&cfg());
    let addrs_of = |i: u8| -> Vec<PeerAddr> {
        let v4 = PeerAddr::reflexive(SocketAddr::from(([192, 0, 2, i], 7000)));
        let v6 = PeerAddr::reflexive(SocketAddr::new(
            std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(i)).into(),
            7000,
        ));
        match i % 3 {
            0 => vec![v4],
            1 => vec![v6],
            _ => vec![v4, v6],
        }
    };
    for i in 0..40u8 {
        let mode = if i < 10 { SE } else { LE };
        ok(e.handle(
            &req(
                &format!("m{i}"),
                A,
                RequestKind::Connect {
                    peer_num: None,
                    addrs: addrs_of(i),
                    actions: vec![act("sw", J, mode)],
                },
            ),
            t(0),
        ));
    }
    for count in [5, 25, 39, 60] {
        let list = found(&e, "m20", A, "sw", Some(count));
        assert_eq!(list.len(), (count as usize).min(39));
        let seeders = list.iter().take_while(|p| p.mode == SE).count();
        assert_eq!(seeders, list.len().min(10), "seeders first");
        let mut ids: Vec<_> = list.iter().map(|p| p.peer_id()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), list.len(), "no duplicates");
        for p in &list {
            let id = p.peer_id();
            let name = std::str::from_utf8(id.as_bytes()).expect("utf-8");
            let i: u8 = name[1..].parse().expect("number");
            assert_ne!(i, 20, "never the requester");
            assert_eq!(p.addrs().to_vec(), addrs_of(i), "{name}");
            assert_eq!(p.mode, if i < 10 { SE } else { LE });
        }
    }
    assert_consistent(&e);
}

#[test]
fn find_puts_seeders_first_for_leechers_and_outsiders() {
    let e = populated(10, 50);
    let list = found(&e, "l0", A, "sw", Some(15));
    assert_eq!(list.len(), 15);
    assert!(list[..10].iter().all(|p| p.mode == SE));
    assert!(list[10..].iter().all(|p| p.mode == LE));
    ok(e.handle(&req("outsider", B, connect(vec![])), t(0)));
    let list = found(&e, "outsider", B, "sw", Some(12));
    assert_eq!(list.iter().filter(|p| p.mode == SE).count(), 10);
    // A seeder is better served by leechers.
    let list = found(&e, "s0", A, "sw", Some(20));
    assert!(list.iter().all(|p| p.mode == LE));
}

#[test]
fn find_unknown_swarm_is_an_empty_success() {
    let e = populated(1, 0);
    assert_eq!(found(&e, "s0", A, "nothing-here", None), Vec::new());
}

#[test]
fn find_with_chunks_returns_only_holders() {
    let e = populated(0, 40);
    let r = |start, end| ChunkRange { start, end };
    for i in 0..40 {
        let chunks = if i % 2 == 0 {
            vec![r(0, 99), r(100, 199)] // merges into [0, 199]
        } else {
            vec![r(0, 49)]
        };
        ok(e.handle(
            &req(
                &format!("l{i}"),
                A,
                RequestKind::JoinChunk {
                    swarm_id: sid("sw"),
                    chunks,
                },
            ),
            t(0),
        ));
    }
    let f = |chunks: Vec<ChunkRange>, count| {
        let a = ok(e.handle(
            &req(
                "l0",
                A,
                RequestKind::Find {
                    swarm_id: sid("sw"),
                    peer_num: Some(PeerNum {
                        peer_count: Some(count),
                        ..PeerNum::default()
                    }),
                    chunks,
                },
            ),
            t(0),
        ));
        a.swarm_results[0].peers.clone().expect("list")
    };
    let holders = f(vec![r(150, 160), r(0, 5)], 100);
    assert_eq!(holders.len(), 19, "even peers but the requester");
    for p in &holders {
        let n: usize = p.peer_id().as_bytes()[1..]
            .iter()
            .fold(0, |n, d| n * 10 + usize::from(d - b'0'));
        assert_eq!(n % 2, 0);
        assert_ne!(p.peer_id(), pid("l0"));
    }
    assert_eq!(f(vec![r(10, 20)], 100).len(), 39);
    assert_eq!(f(vec![r(10, 20)], 7).len(), 7);
    assert_eq!(f(vec![r(199, 200)], 100).len(), 0);
    // Clearing a chunk set.
    ok(e.handle(
        &req(
            "l2",
            A,
            RequestKind::JoinChunk {
                swarm_id: sid("sw"),
                chunks: vec![],
            },
        ),
        t(0),
    ));
    assert_eq!(f(vec![r(150, 160)], 100).len(), 18);
    // JOIN_CHUNK for a swarm the peer is not in.
    assert_eq!(
        code(e.handle(
            &req(
                "l2",
                A,
                RequestKind::JoinChunk {
                    swarm_id: sid("other"),
                    chunks: vec![r(1, 2)],
                },
            ),
            t(0),
        )),
        ErrorCode::Forbidden
    );
    assert_consistent(&e);
}

// ---- statistics ----

#[test]
fn stat_report_sums_into_swarms_the_peer_is_in() {
    let e = Engine::new(&cfg());
    ok(e.handle(&req("p1", A, connect(vec![act("s", J, SE)])), t(0)));
    ok(e.handle(&req("p2", B, connect(vec![act("s", J, LE)])), t(0)));
    let stat = |swarm: &str, up, down| SwarmStat {
        swarm_id: Some(sid(swarm)),
        uploaded_bytes: up,
        downloaded_bytes: down,
        ..SwarmStat::default()
    };
    let a = ok(e.handle(
        &req(
            "p1",
            A,
            RequestKind::StatReport {
                stats: vec![
                    stat("s", 100, 5),
                    stat("elsewhere", 1, 1),
                    SwarmStat::default(),
                ],
            },
        ),
        t(1),
    ));
    let results: Vec<_> = a
        .swarm_results
        .iter()
        .map(|r| (r.swarm_id, r.result))
        .collect();
    assert_eq!(
        results,
        [
            (sid("s"), ErrorCode::Ok),
            (sid("elsewhere"), ErrorCode::Forbidden)
        ]
    );
    ok(e.handle(
        &req(
            "p2",
            B,
            RequestKind::StatReport {
                stats: vec![stat("s", 1, u64::MAX)],
            },
        ),
        t(1),
    ));
    assert_eq!(
        swarm_stats(&e, "s"),
        SwarmStats {
            peers: 2,
            seeders: 1,
            leechers: 1,
            completed: 0,
            uploaded_bytes: 101,
            downloaded_bytes: u64::MAX,
        }
    );
    assert_eq!(swarm_stats(&e, "unknown"), SwarmStats::default());
}

#[test]
fn stat_query_of_an_unknown_peer_is_forbidden() {
    let e = Engine::new(&cfg());
    assert!(peer_status(&e, "nobody", t(0)).is_none());
    assert_eq!(
        code(e.handle(
            &req(
                "x",
                A,
                RequestKind::StatQuery {
                    target: StatTarget::Peer(pid("nobody"))
                }
            ),
            t(0)
        )),
        ErrorCode::Forbidden
    );
}

#[test]
fn large_swarms_use_an_index_and_stay_consistent() {
    let e = populated(40, 40);
    assert_consistent(&e);
    for i in (0..40).step_by(3) {
        ok(e.handle(&req(&format!("s{i}"), A, join("sw", LE)), t(1)));
        ok(e.handle(
            &req(
                &format!("l{i}"),
                A,
                RequestKind::Leave {
                    swarm_id: sid("sw"),
                },
            ),
            t(1),
        ));
        assert_consistent(&e);
    }
    for i in 0..40 {
        e.handle(
            &req(
                &format!("s{i}"),
                A,
                RequestKind::Leave {
                    swarm_id: sid("sw"),
                },
            ),
            t(2),
        );
        e.handle(
            &req(
                &format!("l{i}"),
                A,
                RequestKind::Leave {
                    swarm_id: sid("sw"),
                },
            ),
            t(2),
        );
        assert_consistent(&e);
    }
    assert_eq!(e.counts().swarms, 0);
}

// ---- concurrency ----

#[test]
fn engine_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Engine>();
}

#[test]
fn two_threads_hammering_leave_the_engine_consistent() {
    let e = Engine::new(&EngineConfig {
        shards: 4,
        max_swarms_per_peer: 8,
        ..EngineConfig::default()
    });
    std::thread::scope(|scope| {
        for thread in 0..2u8 {
            let e = &e;
            scope.spawn(move || {
                let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ u64::from(thread);
                for op in 0..20_000u64 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Both threads share peer ids (same source IP) and swarms on purpose.
                    let peer = format!("p{}", x % 64);
                    let swarm = format!("s{}", (x >> 8) % 16);
                    let now = Time::from_millis(op * 10);
                    let kind = match (x >> 16) % 8 {
                        0 => connect(vec![act(&swarm, J, LE)]),
                        1 => join(&swarm, if x & 1 == 0 { SE } else { LE }),
                        2 => RequestKind::Leave {
                            swarm_id: sid(&swarm),
                        },
                        3 | 4 => find(&swarm, Some(10)),
                        5 => RequestKind::Disconnect {
                            scope: if x & 1 == 0 {
                                DisconnectScope::AllSwarms
                            } else {
                                DisconnectScope::Deregister
                            },
                        },
                        6 => RequestKind::JoinChunk {
                            swarm_id: sid(&swarm),
                            chunks: vec![ChunkRange {
                                start: 0,
                                end: x % 100,
                            }],
                        },
                        _ => {
                            e.expire(now, 64);
                            continue;
                        }
                    };
                    let r = e.handle(&req(&peer, A, kind), now);
                    if let Response::Ok(a) = r {
                        for sr in a.swarm_results {
                            for p in sr.peers.unwrap_or_default() {
                                assert_ne!(p.peer_id(), pid(&peer));
                            }
                        }
                    }
                }
            });
        }
    });
    assert_consistent(&e);
}

// ---- property test ----

mod properties {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Connect(u8, bool, Vec<(u8, bool, bool)>, u8),
        Join(u8, bool, u8, bool),
        Leave(u8, bool, u8),
        Find(u8, bool, u8, u32, bool),
        Chunks(u8, bool, u8, Vec<(u8, u8)>),
        Report(u8, bool, u8),
        Keepalive(u8, bool),
        Disconnect(u8, bool, bool),
        Query(u8, u8),
        Advance(u16),
        Expire(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        let peer = 0u8..6;
        let right_ip = prop::bool::weighted(0.9);
        prop_oneof![
            (
                peer.clone(),
                right_ip,
                prop::collection::vec((0u8..5, any::<bool>(), any::<bool>()), 0..4),
                0u8..8
            )
                .prop_map(|(p, ip, a, addrs)| Op::Connect(p, ip, a, addrs)),
            (peer.clone(), right_ip, 0u8..5, any::<bool>())
                .prop_map(|(p, ip, s, m)| Op::Join(p, ip, s, m)),
            (peer.clone(), right_ip, 0u8..5).prop_map(|(p, ip, s)| Op::Leave(p, ip, s)),
            (peer.clone(), right_ip, 0u8..5, 0u32..8, any::<bool>())
                .prop_map(|(p, ip, s, c, ch)| Op::Find(p, ip, s, c, ch)),
            (
                peer.clone(),
                right_ip,
                0u8..5,
                prop::collection::vec((0u8..20, 0u8..20), 0..4)
            )
                .prop_map(|(p, ip, s, r)| Op::Chunks(p, ip, s, r)),
            (peer.clone(), right_ip, 0u8..5).prop_map(|(p, ip, s)| Op::Report(p, ip, s)),
            (peer.clone(), right_ip).prop_map(|(p, ip)| Op::Keepalive(p, ip)),
            (peer.clone(), right_ip, any::<bool>()).prop_map(|(p, ip, d)| Op::Disconnect(p, ip, d)),
            (peer, 0u8..5).prop_map(|(p, s)| Op::Query(p, s)),
            (0u16..15_000).prop_map(Op::Advance),
            (0u8..8).prop_map(Op::Expire),
        ]
    }

    fn request(p: u8, right_ip: bool, kind: RequestKind) -> Request {
        Request {
            peer_id: pid(&format!("peer{p}")),
            source: src(if right_ip { p + 1 } else { p + 100 }),
            kind,
        }
    }

    fn swarm(s: u8) -> SwarmId {
        sid(&format!("swarm{s}"))
    }

    /// Announced addresses of several shapes: none (the reflexive address), one IPv4 address
    /// (copied into memberships), and IPv6 or two addresses (read from the record).
    fn changing_addrs(n: u8) -> Vec<PeerAddr> {
        let v4 = |port| PeerAddr {
            addr: SocketAddr::from(([192, 0, 2, 9], port)),
            priority: 1,
            kind: AddrType::Host,
            connection: None,
            asn: None,
            ppsp_pp: false,
        };
        match n % 4 {
            0 | 1 => Vec::new(),
            2 => vec![v4(6000 + u16::from(n))],
            _ => vec![
                v4(6100),
                PeerAddr {
                    addr: "[2001:db8::9]:6200".parse().expect("address"),
                    ..v4(0)
                },
            ],
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn invariants_hold_after_every_step(ops in prop::collection::vec(op(), 1..120)) {
            let e = Engine::new(&EngineConfig {
                shards: 2,
                max_swarms: 4,
                max_peers: 5,
                max_peers_per_swarm: 4,
                max_swarms_per_peer: 3,
                max_chunk_ranges: 3,
                init_timer_secs: 5,
                track_timer_secs: 10,
                ..EngineConfig::default()
            });
            let mut now = Time::from_millis(0);
            for op in ops {
                let mut asker = None;
                let response = match op {
                    Op::Connect(p, ip, actions, addrs) => {
                        let actions = actions.into_iter().map(|(s, join, seed)| SwarmAction {
                            swarm_id: swarm(s),
                            action: if join { ActionKind::Join } else { ActionKind::Leave },
                            mode: if seed { PeerMode::Seeder } else { PeerMode::Leech },
                        }).collect();
                        asker = Some(p);
                        // Addresses and source ports change between CONNECTs, so that the
                        // memberships' copies are rewritten (the audit compares them).
                        let mut r = request(p, ip, RequestKind::Connect {
                            peer_num: None,
                            addrs: changing_addrs(addrs),
                            actions,
                        });
                        r.source.set_port(7000 + u16::from(addrs % 3));
                        Some(e.handle(&r, now))
                    }
                    Op::Join(p, ip, s, seed) => {
                        asker = Some(p);
                        let kind = RequestKind::Join {
                            swarm_id: swarm(s),
                            mode: if seed { PeerMode::Seeder } else { PeerMode::Leech },
                            peer_num: None,
                        };
                        Some(e.handle(&request(p, ip, kind), now))
                    }
                    Op::Leave(p, ip, s) => Some(e.handle(
                        &request(p, ip, RequestKind::Leave { swarm_id: swarm(s) }), now)),
                    Op::Find(p, ip, s, count, with_chunks) => {
                        asker = Some(p);
                        let kind = RequestKind::Find {
                            swarm_id: swarm(s),
                            peer_num: Some(PeerNum { peer_count: Some(count), ..PeerNum::default() }),
                            chunks: if with_chunks { vec![ChunkRange { start: 3, end: 4 }] } else { vec![] },
                        };
                        let r = e.handle(&request(p, ip, kind), now);
                        if let Response::Ok(a) = &r {
                            let list = a.swarm_results[0].peers.as_ref().map_or(0, Vec::len);
                            prop_assert!(list <= count as usize);
                        }
                        Some(r)
                    }
                    Op::Chunks(p, ip, s, ranges) => {
                        let chunks = ranges.into_iter().map(|(a, b)| ChunkRange {
                            start: u64::from(a), end: u64::from(b) }).collect();
                        Some(e.handle(&request(p, ip, RequestKind::JoinChunk {
                            swarm_id: swarm(s), chunks }), now))
                    }
                    Op::Report(p, ip, s) => Some(e.handle(&request(p, ip, RequestKind::StatReport {
                        stats: vec![SwarmStat { swarm_id: Some(swarm(s)), uploaded_bytes: 7,
                            ..SwarmStat::default() }] }), now)),
                    Op::Keepalive(p, ip) => Some(e.handle(&request(p, ip, RequestKind::Keepalive), now)),
                    Op::Disconnect(p, ip, dereg) => Some(e.handle(&request(p, ip, RequestKind::Disconnect {
                        scope: if dereg { DisconnectScope::Deregister } else { DisconnectScope::AllSwarms },
                    }), now)),
                    Op::Query(p, s) => {
                        let target = if s % 2 == 0 {
                            StatTarget::Swarm(swarm(s))
                        } else {
                            StatTarget::Peer(pid(&format!("peer{p}")))
                        };
                        Some(e.handle(&request(p, true, RequestKind::StatQuery { target }), now))
                    }
                    Op::Advance(ms) => {
                        now = now.saturating_add_millis(u64::from(ms));
                        None
                    }
                    Op::Expire(budget) => {
                        let r = e.expire(now, usize::from(budget));
                        prop_assert!(r.examined <= usize::from(budget));
                        None
                    }
                };
                if let (Some(Response::Ok(a)), Some(p)) = (response, asker) {
                    for sr in &a.swarm_results {
                        for info in sr.peers.iter().flatten() {
                            prop_assert_ne!(info.peer_id(), pid(&format!("peer{p}")));
                        }
                    }
                }
                if let Err(msg) = e.audit() {
                    prop_assert!(false, "{}", msg);
                }
                let c = e.counts();
                prop_assert!(c.peers <= 5 && c.swarms <= 4);
            }
        }
    }
}

#[test]
fn top_swarms_lists_the_largest_first_and_at_most_n() {
    let e = Engine::new(&cfg());
    // Swarm "big" gets 5 members (2 seeders), "mid" 3, "small" 1, "tie-a"/"tie-b" 2 each.
    let plan: &[(&str, usize, usize)] = &[
        ("big", 2, 3),
        ("mid", 0, 3),
        ("small", 1, 0),
        ("tie-b", 1, 1),
        ("tie-a", 0, 2),
    ];
    let mut peer = 0;
    for (swarm, seeders, leechers) in plan {
        for i in 0..seeders + leechers {
            peer += 1;
            let mode = if i < *seeders { SE } else { LE };
            ok(e.handle(
                &req(&format!("p{peer}"), A, connect(vec![act(swarm, J, mode)])),
                t(0),
            ));
        }
    }
    let top = e.top_swarms(4);
    let got: Vec<(SwarmId, usize, usize)> = top
        .iter()
        .map(|s| (s.swarm_id, s.seeders, s.leechers))
        .collect();
    assert_eq!(
        got,
        vec![
            (sid("big"), 2, 3),
            (sid("mid"), 0, 3),
            (sid("tie-a"), 0, 2),
            (sid("tie-b"), 1, 1),
        ]
    );
    assert_eq!(e.top_swarms(0), Vec::new());
    assert_eq!(e.top_swarms(100).len(), plan.len());
}

#[test]
fn one_source_registers_at_most_its_share_of_peers_and_gets_05_beyond() {
    let e = Engine::new(&EngineConfig {
        max_peers_per_source: 3,
        ..cfg()
    });
    for i in 0..3 {
        ok(e.handle(
            &req(&format!("a{i}"), A, connect(vec![act("s", J, LE)])),
            t(0),
        ));
    }
    assert_eq!(
        code(e.handle(&req("a3", A, connect(vec![act("s", J, LE)])), t(0))),
        ErrorCode::ServiceUnavailable
    );
    // Another source is unaffected.
    ok(e.handle(&req("b0", B, connect(vec![act("s", J, LE)])), t(0)));
    assert_eq!(e.peers_from(src(A).ip()), 3);
    // A peer leaving for good gives the place back; so does expiry.
    ok(e.handle(
        &req(
            "a0",
            A,
            RequestKind::Disconnect {
                scope: DisconnectScope::Deregister,
            },
        ),
        t(1),
    ));
    ok(e.handle(&req("a3", A, connect(vec![act("s", J, LE)])), t(1)));
    e.expire(t(100_000), usize::MAX);
    assert_eq!(e.peers_from(src(A).ip()), 0);
    assert_eq!(e.counts().peers, 0);
}

#[test]
fn chunk_ranges_are_bounded_over_all_of_a_peers_swarms() {
    let e = Engine::new(&EngineConfig {
        max_chunk_ranges: 4,
        max_chunk_ranges_per_peer: 6,
        ..cfg()
    });
    let ranges = |n: u64| -> Vec<ChunkRange> {
        (0..n)
            .map(|i| ChunkRange {
                start: i * 10,
                end: i * 10 + 1,
            })
            .collect()
    };
    let jc = |swarm: &str, chunks| RequestKind::JoinChunk {
        swarm_id: sid(swarm),
        chunks,
    };
    ok(e.handle(
        &req("p", A, connect(vec![act("s1", J, SE), act("s2", J, SE)])),
        t(0),
    ));
    ok(e.handle(&req("p", A, jc("s1", ranges(4))), t(0)));
    assert_eq!(
        code(e.handle(&req("p", A, jc("s2", ranges(3))), t(0))),
        ErrorCode::ServiceUnavailable,
        "4 + 3 ranges exceed the per-peer budget of 6"
    );
    ok(e.handle(&req("p", A, jc("s2", ranges(2))), t(0)));
    // Replacing a swarm's set counts the new set only.
    ok(e.handle(&req("p", A, jc("s1", ranges(4))), t(0)));
    ok(e.handle(&req("p", A, jc("s1", ranges(1))), t(0)));
    ok(e.handle(&req("p", A, jc("s2", ranges(4))), t(0)));
}

#[test]
fn a_chunk_filtered_find_over_its_cost_bound_gets_05() {
    let e = Engine::new(&EngineConfig {
        max_find_chunk_work: 100,
        ..cfg()
    });
    for i in 0..30 {
        ok(e.handle(
            &req(&format!("p{i}"), A, connect(vec![act("s", J, LE)])),
            t(0),
        ));
    }
    let f = |n: u64| RequestKind::Find {
        swarm_id: sid("s"),
        peer_num: None,
        chunks: (0..n)
            .map(|i| ChunkRange {
                start: i * 10,
                end: i * 10 + 1,
            })
            .collect(),
    };
    ok(e.handle(&req("p0", A, f(3)), t(0)));
    assert_eq!(
        code(e.handle(&req("p0", A, f(4)), t(0))),
        ErrorCode::ServiceUnavailable,
        "4 ranges x 30 members = 120 > 100"
    );
    // A plain FIND has no chunk filter and is not bounded by it.
    ok(e.handle(&req("p0", A, find("s", None)), t(0)));
}

/// Above the table size where requests prefetch their index buckets
/// ([`PREFETCH_MIN_SWARMS`]), JOIN, FIND and LEAVE answer as they do in a small table, through
/// index growth and shrinkage, and the audit holds throughout.
#[test]
fn large_tables_with_bucket_prefetch_answer_as_small_ones() {
    let n = PREFETCH_MIN_SWARMS + 100;
    let mut config = cfg();
    config.max_peers_per_source = n;
    let e = Engine::new(&config);
    let peer = |k: usize| format!("peer{k:06}");
    let swarm = |k: usize| format!("swarm{k:06}");
    let source = |k: usize| SocketAddr::from(([10, 1, (k >> 8) as u8, k as u8], 7000));
    let r = |k: usize, kind| Request {
        peer_id: pid(&peer(k)),
        source: source(k),
        kind,
    };
    let peers = |response: Response| -> Vec<PeerId> {
        ok(response)
            .swarm_results
            .into_iter()
            .flat_map(|s| s.peers.unwrap_or_default())
            .map(|p| p.peer_id())
            .collect()
    };
    for k in 0..n {
        ok(e.handle(&r(k, connect(vec![act(&swarm(k), J, SE)])), t(0)));
    }
    let counts = e.audit().unwrap();
    assert_eq!((counts.peers, counts.swarms), (n, n));
    // Each peer joins its neighbour's swarm, finds its one other member, and leaves again.
    for k in (0..n).step_by(7) {
        let next = (k + 1) % n;
        ok(e.handle(&r(k, join(&swarm(next), LE)), t(1)));
        let listed = peers(e.handle(&r(k, find(&swarm(next), Some(30))), t(1)));
        assert_eq!(listed, vec![pid(&peer(next))], "swarm {next}");
        ok(e.handle(
            &r(
                k,
                RequestKind::Leave {
                    swarm_id: sid(&swarm(next)),
                },
            ),
            t(1),
        ));
    }
    assert_eq!(e.audit().unwrap(), counts);
    // Unknown peers and swarms miss in the large indexes as in small ones.
    assert_eq!(
        code(e.handle(&r(n + 5, join(&swarm(1), LE)), t(1))),
        ErrorCode::Forbidden
    );
    assert!(peers(e.handle(&r(3, find(&swarm(n + 5), Some(30))), t(1))).is_empty());
    // Most peers leave for good: the indexes shrink and still find the rest.
    for k in 0..n - 50 {
        let gone = e.handle(
            &r(
                k,
                RequestKind::Disconnect {
                    scope: DisconnectScope::Deregister,
                },
            ),
            t(2),
        );
        ok(gone);
    }
    let left = e.audit().unwrap();
    assert_eq!((left.peers, left.swarms), (50, 50));
    for k in n - 50..n {
        assert_eq!(peers(e.handle(&r(k, find(&swarm(k), Some(30))), t(2))), []);
    }
}
