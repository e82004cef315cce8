//! Warm restarts: the registrations survive a restart through the snapshot file with their
//! remaining lifetime; a damaged, truncated or foreign snapshot is refused whole with a clear
//! message and the tracker starts empty. Each swarm's completion count survives too, and a
//! peer already counted is not counted again after the restart.

mod bt_support;
use bt_support::bencoded_int;
mod common;

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ppsp_tracker::config::Config;
use ppsp_tracker::engine::bt_peer_id;
use ppsp_tracker::engine::{PeerAddr, PeerId, PeerMode, Request, RequestKind, SwarmId};
use ppsp_tracker::server::Server;

const PPSTP_PEERS: usize = 50_000;
const BT_PEERS: usize = 50_000;

fn config(snapshot: &Path) -> Config {
    Config::load(
        None,
        &[
            "ppstp.listen=127.0.0.1:0".to_owned(),
            "admin.listen=127.0.0.1:0".to_owned(),
            "bt_udp.listen=127.0.0.1:0".to_owned(),
            "bt_http.listen=127.0.0.1:0".to_owned(),
            "server.workers=2".to_owned(),
            "engine.max_peers_per_source=1000000".to_owned(),
            format!("snapshot.path=\"{}\"", snapshot.display()),
        ],
    )
    .unwrap()
}

fn ppstp_peer(i: usize) -> PeerId {
    PeerId::new(format!("peer-{i}").as_bytes()).unwrap()
}

fn bt_addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 6881 + (i % 7) as u16))
}

/// 50,000 PPSTP peers (CONNECT joining one of 100 swarms) and 50,000 BitTorrent peers
/// (announces in one of 100 info-hashes), straight through the engine at `server`'s time.
fn register(server: &Server) {
    let engine = server.engine();
    let now = now_of(server);
    for i in 0..PPSTP_PEERS {
        let swarm = SwarmId::new(format!("swarm-{}", i % 100).as_bytes()).unwrap();
        let request = Request {
            peer_id: ppstp_peer(i),
            source: SocketAddr::from(([192, 0, 2, 1], 7000)),
            kind: RequestKind::Connect {
                peer_num: None,
                addrs: vec![PeerAddr::reflexive(SocketAddr::from((
                    [192, 0, 2, 1],
                    7000,
                )))],
                actions: vec![ppsp_tracker::engine::SwarmAction {
                    swarm_id: swarm,
                    action: ppsp_tracker::engine::ActionKind::Join,
                    mode: if i % 3 == 0 {
                        PeerMode::Seeder
                    } else {
                        PeerMode::Leech
                    },
                }],
            },
        };
        assert_eq!(
            engine.handle(&request, now).error_code().code(),
            0,
            "peer {i}"
        );
    }
    for i in 0..BT_PEERS {
        let addr = bt_addr(i);
        let request = Request {
            peer_id: bt_peer_id(addr.ip(), addr.port()),
            source: addr,
            kind: RequestKind::Announce {
                swarm_id: SwarmId::new(&[(i % 100) as u8; 20]).unwrap(),
                mode: if i % 2 == 0 {
                    PeerMode::Seeder
                } else {
                    PeerMode::Leech
                },
                addr: PeerAddr::reflexive(addr),
                peer_num: None,
            },
        };
        assert_eq!(
            engine.handle(&request, now).error_code().code(),
            0,
            "bt {i}"
        );
    }
}

/// The engine time of a running server (its clock is private; the engine answers with it).
fn now_of(server: &Server) -> ppsp_tracker::engine::Time {
    server.clock_now()
}

#[test]
fn a_hundred_thousand_registrations_survive_a_restart_with_their_remaining_lifetime() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registrations.snap");
    let config = config(&path);
    let first = Server::start(&config).unwrap();
    assert!(first.snapshot_loaded().is_none(), "no file yet");
    register(&first);
    let before = first.engine().counts();
    assert_eq!(before.peers, PPSTP_PEERS + BT_PEERS);
    // 50 s of the 120 s track timer pass before the shutdown (and the registering took some
    // real time too: every registration got its deadline at the same engine time).
    first.advance_clock(Duration::from_secs(50));
    let left_before = first
        .engine()
        .remaining_ms(&ppstp_peer(7), now_of(&first))
        .unwrap();
    assert!((10_000..=70_000).contains(&left_before), "{left_before}");
    let stopped = Instant::now();
    first.shutdown();
    assert!(path.exists(), "written at shutdown");

    let second = Server::start(&config).unwrap();
    let report = match second.snapshot_loaded() {
        Some(Ok(r)) => *r,
        other => panic!("snapshot not loaded: {other:?}"),
    };
    assert_eq!(report.imported, PPSTP_PEERS + BT_PEERS, "{report:?}");
    assert_eq!((report.expired, report.refused), (0, 0));
    let after = second.engine().counts();
    assert_eq!(after, before, "same peers, swarms and memberships");
    second.engine().audit().expect("consistent tables");
    // Each keeps what was left of its lifetime, less the time the tracker was down.
    let now = now_of(&second);
    let slack = stopped.elapsed().as_millis() as u64 + 1_000;
    for peer in [ppstp_peer(7), ppstp_peer(PPSTP_PEERS - 1)] {
        let left = second.engine().remaining_ms(&peer, now).unwrap();
        assert!(
            left <= left_before && left + slack >= left_before,
            "{left} vs {left_before}"
        );
    }
    // BitTorrent members keep theirs to the second (their stamps' resolution).
    let bt = bt_addr(BT_PEERS - 1);
    let left = second
        .engine()
        .bt_remaining_ms(&[((BT_PEERS - 1) % 100) as u8; 20], bt, now)
        .unwrap();
    assert!(
        left <= left_before + 2_000 && left + slack + 2_000 >= left_before,
        "{left} vs {left_before}"
    );
    // Registrations act as before: a re-CONNECT of a registered peer is refused as in
    // TRACKING, and the peers expire when their remaining lifetime runs out, not later.
    second.advance_clock(Duration::from_millis(left_before + 1_000));
    // Expiry walks the shards in bounded steps (a cursor per shard, a batch per step): as
    // many steps as it takes, bounded.
    let mut steps = 0;
    while second.engine().counts().peers > 0 && steps < 100_000 {
        second
            .engine()
            .expire(now_of(&second), PPSTP_PEERS + BT_PEERS);
        steps += 1;
    }
    assert_eq!(second.engine().counts().peers, 0);
    second.shutdown();
}

#[test]
fn truncated_bit_flipped_and_foreign_snapshots_are_refused_and_the_tracker_starts_empty() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.snap");
    {
        let server = Server::start(&config(&good)).unwrap();
        let now = now_of(&server);
        for i in 0..1000 {
            let addr = bt_addr(i);
            let r = Request {
                peer_id: bt_peer_id(addr.ip(), addr.port()),
                source: addr,
                kind: RequestKind::Announce {
                    swarm_id: SwarmId::new(&[1; 20]).unwrap(),
                    mode: PeerMode::Leech,
                    addr: PeerAddr::reflexive(addr),
                    peer_num: None,
                },
            };
            server.engine().handle(&r, now);
        }
        server.shutdown();
    }
    let bytes = std::fs::read(&good).unwrap();
    assert!(bytes.len() > 1000);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated",
            bytes[..bytes.len() / 2].to_vec(),
            "truncated snapshot",
        ),
        (
            "bit-flipped",
            {
                let mut b = bytes.clone();
                b[bytes.len() - 100] ^= 0x10;
                b
            },
            "checksum mismatch",
        ),
        (
            "foreign",
            b"[server]\nworkers = 2\n# a configuration file, not a snapshot\n".to_vec(),
            "not a ppsp-tracker snapshot",
        ),
        (
            "other version",
            {
                let mut b = bytes.clone();
                b[8] = 9;
                b
            },
            "format version 9",
        ),
    ];
    for (name, content, want) in cases {
        let path = dir.path().join(format!("{name}.snap"));
        std::fs::write(&path, &content).unwrap();
        let mut cfg = config(&path);
        cfg.snapshot.write_on_shutdown = false;
        let server = Server::start(&cfg).unwrap();
        let msg = match server.snapshot_loaded() {
            Some(Err(e)) => e.clone(),
            other => panic!("{name}: expected a refusal, got {other:?}"),
        };
        assert!(msg.contains(want), "{name}: {msg}");
        assert!(msg.contains(path.to_str().unwrap()), "{name}: {msg}");
        assert_eq!(server.engine().counts().peers, 0, "{name}: starts empty");
        server.shutdown();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            content,
            "{name}: left as found"
        );
    }
    // The good file still loads whole.
    let mut cfg = config(&good);
    cfg.snapshot.write_on_shutdown = false;
    let server = Server::start(&cfg).unwrap();
    assert!(matches!(server.snapshot_loaded(), Some(Ok(r)) if r.imported == 1000));
    assert_eq!(server.engine().counts().peers, 1000);
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn logged_addr(line: &str, key: &str) -> Option<SocketAddr> {
    let after = &line[line.find(&format!("{key}="))?..];
    after.split("Some(").nth(1)?.split(')').next()?.parse().ok()
}

/// Starts the binary on `snapshot`; returns it with its PPSTP, admin and first BEP 15
/// addresses and a thread collecting its log.
fn spawn(
    snapshot: &Path,
) -> (
    Running,
    SocketAddr,
    SocketAddr,
    std::thread::JoinHandle<Vec<String>>,
) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ppsp-tracker"))
        .args(["serve"])
        .args(["--set", "ppstp.listen=127.0.0.1:0"])
        .args(["--set", "admin.listen=127.0.0.1:0"])
        .args(["--set", "bt_udp.enabled=false"])
        .args(["--set", "bt_http.listen=127.0.0.1:0"])
        .args([
            "--set",
            &format!("snapshot.path=\"{}\"", snapshot.display()),
        ])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let (ppstp, admin) = loop {
        let line = lines.next().expect("server exited early").unwrap();
        seen.push(line.clone());
        if line.contains("ppsp-tracker serving") {
            break (
                logged_addr(&line, "ppstp").unwrap(),
                logged_addr(&line, "admin").unwrap(),
            );
        }
    };
    let log = std::thread::spawn(move || {
        seen.extend(lines.map_while(Result::ok));
        seen
    });
    (Running(child), ppstp, admin, log)
}

#[test]
fn the_binary_writes_on_sigterm_and_on_the_snapshot_command_and_loads_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tracker.snap");
    let (mut child, ppstp, admin, log) = spawn(&path);
    // 200 PPSTP peers over pipelined keep-alive requests.
    let mut stream = common::connect(ppstp);
    let mut reader = common::ResponseReader::new();
    let mut batch = Vec::new();
    for i in 0..200 {
        batch.extend(common::ppstp_post(&common::connect_body(
            "1",
            &format!("bin-{i}"),
            &[("binswarm", "SEEDER")],
        )));
    }
    stream.write_all(&batch).unwrap();
    for _ in 0..200 {
        let r = reader.read(&mut stream).expect("answer");
        assert_eq!(common::error_code(&r.ppstp()), 0);
    }
    // `ppsp-tracker snapshot` against the running server.
    let out = Command::new(env!("CARGO_BIN_EXE_ppsp-tracker"))
        .args(["snapshot", "--admin", &admin.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["registrations"], 200, "{answer}");
    let on_request = std::fs::read(&path).unwrap();
    assert_eq!(on_request.len() as u64, answer["bytes"].as_u64().unwrap());
    // Ten more peers, then SIGTERM: the file now holds 210.
    for i in 200..210 {
        let r = common::exchange(
            &mut stream,
            &mut reader,
            &common::ppstp_post(&common::connect_body(
                "1",
                &format!("bin-{i}"),
                &[("binswarm", "LEECH")],
            )),
        );
        assert_eq!(common::error_code(&r.ppstp()), 0);
    }
    drop(stream);
    // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    assert!(child.0.wait().unwrap().success());
    let text = log.join().unwrap().join("\n");
    assert!(
        text.contains("snapshot written at shutdown") && text.contains("registrations=210"),
        "{text}"
    );
    drop(child);

    let (child, ppstp, admin, log) = spawn(&path);
    let status = common::http_get(admin, "/status").json();
    assert_eq!(status["peers"], 210, "{status}");
    // A restored peer is registered from its address: a KEEPALIVE is accepted.
    let r = common::roundtrip(
        ppstp,
        &common::ppstp_post(&common::body("KEEPALIVE", "2", "bin-5", None)),
    );
    assert_eq!(common::error_code(&r.ppstp()), 0, "{:?}", r.ppstp());
    drop(child);
    let text = log.join().unwrap().join("\n");
    assert!(
        text.contains("snapshot loaded") && text.contains("imported=210"),
        "{text}"
    );
}

#[test]
fn completion_counts_survive_a_restart_and_are_not_counted_twice() {
    use bt_support::{http_get, url_bytes, UdpClient};
    use ppsp_tracker::protocol::bt_udp::tracker::{AnnounceEvent, Family};
    use ppsp_tracker::protocol::bt_udp::wire::{
        decode_response, InfoHashes, ScrapeRequest, UdpRequest, UdpResponse,
    };

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snapshot.bin");
    let hash = [0x5a; 20];
    let announce = |port: u16, left: u64, event: &str| {
        format!(
            "/announce?info_hash={}&peer_id={}&port={port}&uploaded=0&downloaded=0&left={left}&event={event}",
            url_bytes(&hash),
            url_bytes(&[b'w'; 20])
        )
    };
    let scrape_http = |server: &Server| {
        let (_, body) = http_get(
            server.bt_http_addr().unwrap(),
            &format!("/scrape?info_hash={}", url_bytes(&hash)),
        );
        bencoded_int(&body, "downloaded")
    };
    let scrape_udp = |server: &Server| {
        let udp = UdpClient::new(server.bt_udp_addr().unwrap());
        let cid = udp.connect();
        let mut pkt = Vec::new();
        UdpRequest::Scrape(ScrapeRequest {
            connection_id: cid,
            transaction_id: 5,
            info_hashes: InfoHashes::new(&hash).unwrap(),
        })
        .encode(&mut pkt);
        let answer = udp.exchange(&pkt, Duration::from_secs(5)).expect("scrape");
        match decode_response(&answer, Family::V4, 1) {
            Ok(UdpResponse::Scrape(s)) => s.entries[0].completed,
            other => panic!("{other:?}"),
        }
    };
    let stat_query = |server: &Server| {
        let body = r#"{"PPSPTrackerProtocol":{"version":1,"request_type":"STAT_QUERY","transaction_id":"q","peer_id":"keeper","stat_query":{"swarm_id":"film"}}}"#;
        let answer = common::roundtrip(server.ppstp_addr().unwrap(), &common::ppstp_post(body));
        answer.ppstp()["stat_result"]["completed"].as_u64().unwrap()
    };

    let first = Server::start(&config(&path)).unwrap();
    let bt = first.bt_http_addr().unwrap();
    // Two leechers complete over HTTP, one over UDP; a seeder joins complete (no completion).
    for port in [7001, 7002] {
        http_get(bt, &announce(port, 100, "started"));
        http_get(bt, &announce(port, 0, "completed"));
    }
    http_get(bt, &announce(7003, 0, "started"));
    let udp = UdpClient::new(first.bt_udp_addr().unwrap());
    let cid = udp.connect();
    udp.announce(cid, hash, 7004, 10, AnnounceEvent::Started);
    udp.announce(cid, hash, 7004, 0, AnnounceEvent::Completed);
    // PPSTP: one peer turns from LEECH to SEEDER in "film"; another stays a leecher so that
    // STAT_QUERY has a registered asker.
    let ppstp = |body: String| {
        let answer = common::roundtrip(first.ppstp_addr().unwrap(), &common::ppstp_post(&body));
        assert_eq!(answer.ppstp()["error_code"], 0, "{body}");
    };
    for peer in ["done", "keeper"] {
        ppstp(format!(
            r#"{{"PPSPTrackerProtocol":{{"version":1,"request_type":"CONNECT","transaction_id":"c","peer_id":"{peer}","connect":{{"swarm_action":[{{"swarm_id":"film","action":"JOIN","peer_mode":"LEECH"}}]}}}}}}"#
        ));
    }
    ppstp(r#"{"PPSPTrackerProtocol":{"version":1,"request_type":"JOIN","transaction_id":"j","peer_id":"done","join":{"swarm_id":"film","peer_mode":"SEEDER"}}}"#.to_owned());
    assert_eq!((scrape_http(&first), scrape_udp(&first)), (3, 3));
    assert_eq!(stat_query(&first), 1);
    // A swarm whose only member completed and left still reports its count.
    let gone = [0x5b; 20];
    let gone_announce = |left: u64, event: &str| {
        format!(
            "/announce?info_hash={}&peer_id={}&port=7009&uploaded=0&downloaded=0&left={left}&event={event}",
            url_bytes(&gone),
            url_bytes(&[b'g'; 20])
        )
    };
    http_get(bt, &gone_announce(10, "started"));
    http_get(bt, &gone_announce(0, "completed"));
    http_get(bt, &gone_announce(0, "stopped"));
    let scrape_gone = |server: &Server| {
        let (_, body) = http_get(
            server.bt_http_addr().unwrap(),
            &format!("/scrape?info_hash={}", url_bytes(&gone)),
        );
        (
            bencoded_int(&body, "downloaded"),
            bencoded_int(&body, "complete"),
        )
    };
    assert_eq!(scrape_gone(&first), (1, 0));
    first.shutdown();

    let second = Server::start(&config(&path)).unwrap();
    assert!(matches!(second.snapshot_loaded(), Some(Ok(_))));
    assert_eq!(scrape_http(&second), 3, "HTTP scrape after the restart");
    assert_eq!(scrape_udp(&second), 3, "UDP scrape after the restart");
    assert_eq!(stat_query(&second), 1, "STAT_QUERY after the restart");
    assert_eq!(scrape_gone(&second), (1, 0), "a count without members");
    // A seeder that says `completed` again, and one that re-joins, are not new completions.
    let bt = second.bt_http_addr().unwrap();
    let (_, body) = http_get(bt, &announce(7001, 0, "completed"));
    assert_eq!(bencoded_int(&body, "complete"), 4, "{body:?}");
    http_get(bt, &announce(7002, 0, "stopped"));
    http_get(bt, &announce(7002, 0, "started"));
    assert_eq!(scrape_http(&second), 3);
    second.shutdown();
}
