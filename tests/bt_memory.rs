//! Resident memory per BitTorrent peer of the compact table: this process's RSS grows by at
//! most 48 bytes per peer while 400k peers announce into 200k swarms (two per swarm, the shape
//! of a large tracker's tail), each from its own address, so the per-source budget's entry
//! (about 12 B per peer here) is counted too. The only test in its binary, so nothing else
//! allocates meanwhile. `BT_MEMORY_SWARMS=1000000` measures at 2M peers / 1M swarms (the
//! figure is printed).

use std::net::{Ipv4Addr, SocketAddr};

use ppsp_tracker::engine::{
    bt_peer_id, CompactPeers, Engine, EngineConfig, Family, ListFamilies, PeerAddr, PeerMode,
    PeerNum, Request, RequestKind, SwarmId, Time,
};

/// Resident set size of this process in bytes (Linux `/proc/self/statm`), if readable.
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn announce(n: u32, swarm: u32) -> Request {
    let ip = Ipv4Addr::from(0x0a00_0000 | n);
    let addr = SocketAddr::new(ip.into(), 6881);
    let mut info_hash = [0x42u8; 20];
    info_hash[..4].copy_from_slice(&swarm.to_be_bytes());
    Request {
        peer_id: bt_peer_id(addr.ip(), addr.port()),
        source: SocketAddr::new(ip.into(), 40_000),
        kind: RequestKind::Announce {
            swarm_id: SwarmId::new(&info_hash).expect("20 bytes"),
            mode: if n % 3 == 0 {
                PeerMode::Seeder
            } else {
                PeerMode::Leech
            },
            addr: PeerAddr::reflexive(addr),
            peer_num: Some(PeerNum {
                peer_count: Some(0),
                ..PeerNum::default()
            }),
        },
    }
}

#[test]
fn a_two_peer_swarm_costs_at_most_48_bytes_per_peer() {
    let swarms: u32 = std::env::var("BT_MEMORY_SWARMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000)
        .min(4_000_000);
    let engine = Engine::new(&EngineConfig {
        max_peers: 10_000_000,
        max_swarms: 5_000_000,
        ..EngineConfig::default()
    });
    let families = ListFamilies {
        first: Family::V4,
        fallback: false,
    };
    let mut peers = CompactPeers::default();
    let Some(before) = rss_bytes() else {
        eprintln!("no /proc/self/statm: nothing to measure");
        return;
    };
    for s in 0..swarms {
        for k in 0..2 {
            let r = announce(s * 2 + k, s);
            engine
                .announce_compact(&r, Time::from_secs(10), families, &mut peers)
                .expect("announce");
        }
    }
    let after = rss_bytes().expect("statm was readable");
    let counts = engine.counts();
    assert_eq!(counts.peers, swarms as usize * 2);
    assert_eq!(counts.swarms, swarms as usize);
    let per_peer = after.saturating_sub(before) as f64 / counts.peers as f64;
    eprintln!(
        "{} peers in {} swarms: RSS grew {} bytes, {per_peer:.1} B per peer",
        counts.peers,
        counts.swarms,
        after.saturating_sub(before)
    );
    assert!(per_peer <= 48.0, "{per_peer:.1} B per peer");
}
