//! Five real `ppsp-tracker serve` processes on loopback as one logical tracker: PPSTP peers
//! CONNECT through A and B into one swarm and a FIND through C returns both; a STAT_QUERY
//! through C for A's peer returns its live status from A; BitTorrent announces over UDP at A
//! and at C list each other; after the swarm tracker and one of its replicas are killed
//! (SIGKILL), a FIND through C still returns every live peer; a killed node restarted with its
//! bootstrap list rejoins and takes its range.

mod overlay_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use overlay_support::*;
use sha1::{Digest, Sha1};

const LIMIT: Duration = Duration::from_secs(60);

/// Tracker-usage settings that make the test quick: flush every 100 ms, every FIND that the
/// local copy cannot fill asks the overlay, fetched lists live 200 ms.
const USAGE: &[&str] = &[
    "overlay.flush_interval_ms=100",
    "overlay.local_find_min=10",
    "overlay.fetch_cache_ms=200",
    "overlay.fetch_timeout_ms=3000",
];

/// One PPSTP request on a fresh connection; the `PPSPTrackerProtocol` object of the answer.
fn ppstp(addr: SocketAddr, body: &serde_json::Value) -> serde_json::Value {
    let body = body.to_string();
    let mut s = TcpStream::connect(addr).expect("connect PPSTP");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST / HTTP/1.1\r\nHost: t\r\nContent-Type: application/ppsp-tracker+json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let i = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer");
    let v: serde_json::Value = serde_json::from_slice(&out[i + 4..]).expect("JSON body");
    v["PPSPTrackerProtocol"].clone()
}

fn request(
    kind: &str,
    txid: u32,
    peer: &str,
    member: &str,
    value: serde_json::Value,
) -> serde_json::Value {
    let mut inner = serde_json::json!({
        "version": 1,
        "request_type": kind,
        "transaction_id": txid.to_string(),
        "peer_id": peer,
    });
    inner[member] = value;
    serde_json::json!({ "PPSPTrackerProtocol": inner })
}

fn connect(addr: SocketAddr, peer: &str, swarm: &str, mode: &str) {
    let ans = ppstp(
        addr,
        &request(
            "CONNECT",
            1,
            peer,
            "connect",
            serde_json::json!({"swarm_action": [{"swarm_id": swarm, "action": "JOIN", "peer_mode": mode}]}),
        ),
    );
    assert_eq!(
        ans["error_code"]
            .as_u64()
            .or_else(|| ans["error_code"].as_str().and_then(|s| s.parse().ok())),
        Some(0),
        "{ans}"
    );
}

/// Peer ids a FIND through `addr` returns.
fn find(addr: SocketAddr, peer: &str, swarm: &str) -> Vec<String> {
    let ans = ppstp(
        addr,
        &request(
            "FIND",
            2,
            peer,
            "find",
            serde_json::json!({"swarm_id": swarm, "peer_num": {"peer_count": 50}}),
        ),
    );
    let text = ans.to_string();
    let mut ids = Vec::new();
    for p in ["peer-a", "peer-b", "peer-c"] {
        if text.contains(&format!("\"{p}\"")) {
            ids.push(p.to_owned());
        }
    }
    ids
}

fn node_id(node: &Node) -> u128 {
    let s = overlay_status(node)["node_id"].as_str().unwrap().to_owned();
    u128::from_str_radix(&s, 16).unwrap()
}

/// The ring position of a resource name (RFC 6940 §10.2).
fn resource(name: &str) -> u128 {
    let d = Sha1::digest(name.as_bytes());
    u128::from_be_bytes(d[..16].try_into().unwrap())
}

/// Index (into `ids`) of the node responsible for `r` and of its successor.
fn responsible_and_successor(ids: &[u128], r: u128) -> (usize, usize) {
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by_key(|i| ids[*i]);
    let pos = order.iter().position(|i| ids[*i] >= r).unwrap_or(0);
    (order[pos], order[(pos + 1) % order.len()])
}

/// One BEP 15 announce (connect, then announce) from `client` to `tracker`; the peer ports
/// listed.
fn bt_announce(
    client: &UdpSocket,
    tracker: SocketAddr,
    info_hash: [u8; 20],
    port: u16,
) -> Vec<u16> {
    let mut connect = Vec::new();
    connect.extend_from_slice(&0x41727101980u64.to_be_bytes());
    connect.extend_from_slice(&0u32.to_be_bytes());
    connect.extend_from_slice(&7u32.to_be_bytes());
    client.send_to(&connect, tracker).unwrap();
    let mut buf = [0u8; 1500];
    let (n, _) = client.recv_from(&mut buf).unwrap();
    assert_eq!(n, 16);
    let cid = buf[8..16].to_vec();
    let mut a = Vec::new();
    a.extend_from_slice(&cid);
    a.extend_from_slice(&1u32.to_be_bytes());
    a.extend_from_slice(&9u32.to_be_bytes());
    a.extend_from_slice(&info_hash);
    a.extend_from_slice(&[b'x'; 20]);
    a.extend_from_slice(&0u64.to_be_bytes());
    a.extend_from_slice(&100u64.to_be_bytes()); // left: a leech
    a.extend_from_slice(&0u64.to_be_bytes());
    a.extend_from_slice(&0u32.to_be_bytes());
    a.extend_from_slice(&0u32.to_be_bytes());
    a.extend_from_slice(&0u32.to_be_bytes());
    a.extend_from_slice(&50i32.to_be_bytes());
    a.extend_from_slice(&port.to_be_bytes());
    client.send_to(&a, tracker).unwrap();
    let (n, _) = client.recv_from(&mut buf).unwrap();
    assert!(n >= 20, "announce answer of {n} bytes");
    assert_eq!(&buf[0..4], &1u32.to_be_bytes());
    buf[20..n]
        .chunks_exact(6)
        .map(|c| u16::from_be_bytes([c[4], c[5]]))
        .collect()
}

/// Five node keys (`ppsp-tracker keygen`), made once per test process and ordered by Node-ID,
/// so that node `i` holds the i-th smallest Node-ID: the ring order is A B C D E, and D (3) and
/// E (4) are ring neighbours. With certificate security a Node-ID is derived from the key and
/// cannot be configured.
fn key_dirs() -> &'static [std::path::PathBuf] {
    static KEYS: std::sync::OnceLock<(tempfile::TempDir, Vec<std::path::PathBuf>)> =
        std::sync::OnceLock::new();
    &KEYS
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let mut keys: Vec<(String, std::path::PathBuf)> = (0..5)
                .map(|i| {
                    let out = dir.path().join(format!("node{i}"));
                    let run = std::process::Command::new(env!("CARGO_BIN_EXE_ppsp-tracker"))
                        .arg("keygen")
                        .arg("--out")
                        .arg(&out)
                        .output()
                        .unwrap();
                    assert!(run.status.success(), "keygen: {run:?}");
                    let text = String::from_utf8(run.stdout).unwrap();
                    let id = text
                        .lines()
                        .find_map(|l| l.strip_prefix("node_id = \""))
                        .and_then(|l| l.strip_suffix('"'))
                        .expect("keygen prints the Node-ID")
                        .to_owned();
                    (id, out)
                })
                .collect();
            keys.sort();
            (dir, keys.into_iter().map(|(_, p)| p).collect())
        })
        .1
}

/// Node `i`'s settings: the usage settings and the i-th key of [`key_dirs`].
fn settings(i: usize) -> Vec<String> {
    let mut s: Vec<String> = USAGE.iter().map(|x| (*x).to_owned()).collect();
    s.push(format!("overlay.key_dir={}", key_dirs()[i].display()));
    s
}

fn start(i: usize, addr: SocketAddr, bootstrap: &[SocketAddr]) -> Node {
    let s = settings(i);
    let refs: Vec<&str> = s.iter().map(String::as_str).collect();
    start_node_with(addr, bootstrap, &refs)
}

#[test]
fn five_nodes_are_one_tracker_for_ppstp_and_bittorrent_peers_and_survive_two_kills() {
    let addrs: Vec<_> = (0..5).map(|_| free_addr()).collect();
    let mut nodes: Vec<Option<Node>> = vec![Some(start(0, addrs[0], &[]))];
    for (i, a) in addrs.iter().enumerate().skip(1) {
        nodes.push(Some(start(i, *a, &addrs[..1])));
    }
    wait_until(LIMIT, "ring of 5 forms", || {
        let refs: Vec<&Node> = nodes.iter().flatten().collect();
        ring_is_correct(&refs)
    });
    let ids: Vec<u128> = nodes.iter().flatten().map(node_id).collect();
    // A swarm whose swarm tracker and first replica are neither A, B nor C (0, 1, 2), so that
    // killing them leaves every connection tracker of the test alive.
    // Only D's arc qualifies (E's successor is A), and with random keys it can be small: the
    // search runs long enough to land in an arc of a millionth of the ring.
    let swarm = (0..4_000_000)
        .map(|k| format!("swarm-{k}"))
        .find(|s| {
            let (r, succ) = responsible_and_successor(&ids, resource(s));
            r > 2 && succ > 2
        })
        .expect("some swarm is tracked by D or E");
    let (tracker, replica) = responsible_and_successor(&ids, resource(&swarm));
    let (a, b, c) = (
        nodes[0].as_ref().unwrap().ppstp,
        nodes[1].as_ref().unwrap().ppstp,
        nodes[2].as_ref().unwrap().ppstp,
    );

    connect(a, "peer-a", &swarm, "SEEDER");
    connect(b, "peer-b", &swarm, "LEECH");
    connect(c, "peer-c", &swarm, "LEECH");
    let took = wait_until(LIMIT, "FIND through C lists the peers of A and B", || {
        let found = find(c, "peer-c", &swarm);
        found.contains(&"peer-a".to_owned()) && found.contains(&"peer-b".to_owned())
    });
    eprintln!("registrations visible through C after {took:?}");
    assert!(
        !find(c, "peer-c", &swarm).contains(&"peer-c".to_owned()),
        "never the requester"
    );

    // STAT_QUERY through C for A's peer: the live status, from A.
    let q = ppstp(
        c,
        &request(
            "STAT_QUERY",
            3,
            "peer-c",
            "stat_query",
            serde_json::json!({"peer_id": "peer-a"}),
        ),
    );
    let text = q.to_string();
    assert!(text.contains(&swarm), "peer status lacks its swarm: {text}");

    // BitTorrent over UDP at A and at C.
    let info_hash = [0x5au8; 20];
    let ua = UdpSocket::bind("127.0.0.1:0").unwrap();
    let uc = UdpSocket::bind("127.0.0.1:0").unwrap();
    for u in [&ua, &uc] {
        u.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    }
    let (bt_a, bt_c) = (
        nodes[0].as_ref().unwrap().bt_udp,
        nodes[2].as_ref().unwrap().bt_udp,
    );
    bt_announce(&ua, bt_a, info_hash, 7001);
    bt_announce(&uc, bt_c, info_hash, 7003);
    wait_until(LIMIT, "BitTorrent peers at A and C list each other", || {
        bt_announce(&ua, bt_a, info_hash, 7001).contains(&7003)
            && bt_announce(&uc, bt_c, info_hash, 7003).contains(&7001)
    });

    // The swarm tracker and one of its replicas die.
    nodes[tracker] = None;
    nodes[replica] = None;
    // Past the fetch cache's lifetime: the next FINDs must fetch from the surviving replica.
    std::thread::sleep(Duration::from_millis(500));
    let took = wait_until(LIMIT, "FIND through C after two kills", || {
        let found = find(c, "peer-c", &swarm);
        found.contains(&"peer-a".to_owned()) && found.contains(&"peer-b".to_owned())
    });
    eprintln!("FIND complete again {took:?} after killing the swarm tracker and a replica");

    // The swarm tracker comes back with its bootstrap list and takes its range again.
    nodes[tracker] = Some(start(tracker, addrs[tracker], &addrs[..1]));
    wait_until(LIMIT, "restarted node rejoins", || {
        let refs: Vec<&Node> = nodes.iter().flatten().collect();
        ring_is_correct(&refs)
    });
    wait_until(LIMIT, "FIND through C after the restart", || {
        let found = find(c, "peer-c", &swarm);
        found.contains(&"peer-a".to_owned()) && found.contains(&"peer-b".to_owned())
    });
    let metrics = http(nodes[2].as_ref().unwrap().admin, "GET", "/metrics", b"").1;
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains("ppsp_federation_finds_total{answer=\"remote\"}"),
        "{metrics}"
    );
    let status = json(nodes[0].as_ref().unwrap().admin, "GET", "/status", b"").1;
    assert_eq!(status["federation"]["local_peers"], 2, "{status}");
}

/// A swarm whose registrations do not fit one overlay message (`max_message_size` 4,096
/// bytes, parts of 1,500 bytes, each value signed and its signer's certificate carried): the
/// Fetch through C is answered Error_Response_Too_Large, C reads the keys with a Stat and the
/// parts with Fetches by key groups, and its FIND lists A's peers from every part.
#[test]
fn a_swarm_larger_than_one_message_is_read_by_key_groups() {
    const PEERS: usize = 600;
    let extra = [
        "overlay.max_message_size=4096",
        "overlay.registration_part_bytes=1500",
        "overlay.local_find_min=100000",
    ];
    let with = |i: usize| -> Vec<String> {
        let mut v = settings(i);
        v.retain(|x| !x.starts_with("overlay.local_find_min"));
        v.extend(extra.iter().map(|x| (*x).to_owned()));
        v
    };
    let addrs: Vec<_> = (0..3).map(|_| free_addr()).collect();
    let start_with = |i: usize, boot: &[SocketAddr]| {
        let v = with(i);
        let refs: Vec<&str> = v.iter().map(String::as_str).collect();
        start_node_with(addrs[i], boot, &refs)
    };
    let nodes = [
        start_with(0, &[]),
        start_with(1, &addrs[..1]),
        start_with(2, &addrs[..1]),
    ];
    wait_until(LIMIT, "ring of 3 forms", || {
        ring_is_correct(&nodes.iter().collect::<Vec<_>>())
    });
    let swarm = "big-swarm";
    for p in 0..PEERS {
        connect(nodes[0].ppstp, &format!("big-{p}"), swarm, "SEEDER");
    }
    connect(nodes[2].ppstp, "reader-c", "reader-home", "LEECH");
    let count = |text: &str| text.matches("\"big-").count();
    let took = wait_until(
        LIMIT,
        "FIND through C lists A's peers from many parts",
        || {
            let ans = ppstp(
                nodes[2].ppstp,
                &request(
                    "FIND",
                    9,
                    "reader-c",
                    "find",
                    serde_json::json!({"swarm_id": swarm, "peer_num": {"peer_count": 200}}),
                ),
            );
            // One part holds about 120 peers: more than that came from several parts.
            count(&ans.to_string()) >= 190
        },
    );
    let metrics = http(nodes[2].admin, "GET", "/metrics", b"").1;
    let metrics = String::from_utf8_lossy(&metrics);
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    assert!(
        value("ppsp_federation_split_fetches_total") >= 1,
        "the whole dictionary should not have fit one answer: {metrics}"
    );
    eprintln!(
        "{PEERS} peers at A read through C by key groups after {took:?} ({} split lookups, {} fetches)",
        value("ppsp_federation_split_fetches_total"),
        value("ppsp_federation_fetches_total")
    );
}
