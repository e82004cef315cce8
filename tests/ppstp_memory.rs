//! Resident memory per PPSTP peer of the peer-status registry and the swarm table: this
//! process's RSS grows by at most 200 bytes per peer while 100k peers (40-character ids, as
//! the load generator sends) register with CONNECT and join 10k swarms (ten per swarm, the
//! FIND-heavy benchmark's shape). The bound is this build's figure (about 168 B in a debug
//! build with the system allocator) with some room; benches/README.md breaks it down. The only test in its binary, so nothing else allocates
//! meanwhile. `PPSTP_MEMORY_PEERS=N` measures N peers (ten per swarm; the figure is printed).

use std::net::{Ipv4Addr, SocketAddr};

use ppsp_tracker::engine::{
    ActionKind, Engine, EngineConfig, ErrorCode, PeerId, PeerMode, PeerNum, Request, RequestKind,
    Response, SwarmAction, SwarmId, Time,
};

/// Resident set size of this process in bytes (Linux `/proc/self/statm`), if readable.
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// A 40-character lower-case hex id derived from `tag` and `n`.
fn hex_id(tag: u8, n: u32) -> [u8; 40] {
    let mut raw = [tag; 20];
    raw[..4].copy_from_slice(&n.to_be_bytes());
    raw[4..8].copy_from_slice(&n.wrapping_mul(0x9E37_79B9).to_be_bytes());
    let mut out = [0u8; 40];
    for (i, b) in raw.iter().enumerate() {
        out[2 * i] = b"0123456789abcdef"[usize::from(b >> 4)];
        out[2 * i + 1] = b"0123456789abcdef"[usize::from(b & 0xf)];
    }
    out
}

fn connect(n: u32, swarm: u32) -> Request {
    let ip = Ipv4Addr::from(0x0a00_0000 | n);
    Request {
        peer_id: PeerId::new(&hex_id(b'p', n)).expect("40 bytes"),
        source: SocketAddr::new(ip.into(), 7000),
        kind: RequestKind::Connect {
            peer_num: Some(PeerNum {
                peer_count: Some(0),
                ..PeerNum::default()
            }),
            addrs: Vec::new(),
            actions: vec![SwarmAction {
                swarm_id: SwarmId::new(&hex_id(b's', swarm)).expect("40 bytes"),
                action: ActionKind::Join,
                mode: if n % 5 == 0 {
                    PeerMode::Seeder
                } else {
                    PeerMode::Leech
                },
            }],
        },
    }
}

#[test]
fn a_ppstp_peer_costs_at_most_200_bytes() {
    let peers: u32 = std::env::var("PPSTP_MEMORY_PEERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
        .clamp(10, 4_000_000);
    let swarms = peers / 10;
    let engine = Engine::new(&EngineConfig {
        max_peers: 10_000_000,
        max_swarms: 5_000_000,
        ..EngineConfig::default()
    });
    // Requests are built before the first measurement, so that only the tables grow.
    let requests: Vec<Request> = (0..peers).map(|n| connect(n, n % swarms)).collect();
    let mut response = Response::Err(ErrorCode::Ok);
    let Some(before) = rss_bytes() else {
        eprintln!("no /proc/self/statm: nothing to measure");
        return;
    };
    for r in &requests {
        engine.handle_into(r, Time::from_secs(10), &mut response);
        assert_eq!(response.error_code(), ErrorCode::Ok);
    }
    let after = rss_bytes().expect("statm was readable");
    let counts = engine.counts();
    assert_eq!(counts.peers, peers as usize);
    assert_eq!(counts.swarms, swarms as usize);
    assert_eq!(counts.memberships, peers as usize);
    let per_peer = after.saturating_sub(before) as f64 / counts.peers as f64;
    let est = engine.memory_estimate();
    eprintln!(
        "{} PPSTP peers in {} swarms: RSS grew {} bytes, {per_peer:.1} B per peer \
         (capacity estimate {:.1} B per peer)",
        counts.peers,
        counts.swarms,
        after.saturating_sub(before),
        est.total() as f64 / counts.peers as f64,
    );
    assert!(per_peer <= 200.0, "{per_peer:.1} B per peer");
    drop(requests);
}
