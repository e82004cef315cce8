//! Resident memory per PPSTP peer of the peer-status registry and the swarm table: this
//! process's RSS grows by at most 160 bytes per peer while 100k peers (40-character ids, as
//! the load generator sends, each from its own IPv4 address) register with CONNECT and join
//! 10k swarms (ten per swarm). The process allocates as the server does (mimalloc,
//! transparent huge pages off), so the figure is the server's cost of its tables (about
//! 144 B, of which about 12 B the per-source peer counts); benches/README.md breaks it down.
//! The only test in its binary, so nothing else allocates meanwhile. `PPSTP_MEMORY_PEERS=N`
//! measures N peers (ten per swarm on average); `PPSTP_MEMORY_ZIPF=1` draws each peer's
//! swarm with Zipf 1 popularity, the FIND-heavy benchmark's shape. The figure and the
//! capacity estimate per structure are printed (`-- --nocapture`).

use std::net::{Ipv4Addr, SocketAddr};

/// The server's allocator (`src/main.rs`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

/// A deterministic draw of swarm ranks with Zipf 1 popularity over `swarms` swarms, by peer
/// number (a SplitMix64 hash of it into the cumulative distribution).
fn zipf_picker(swarms: u32) -> impl Fn(u32) -> u32 {
    let mut cdf = Vec::with_capacity(swarms as usize);
    let mut sum = 0.0;
    for k in 1..=swarms {
        sum += 1.0 / f64::from(k);
        cdf.push(sum);
    }
    move |n| {
        let mut z = u64::from(n).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let u = (z >> 11) as f64 / (1u64 << 53) as f64 * sum;
        (cdf.partition_point(|&c| c < u) as u32).min(swarms - 1)
    }
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
fn a_ppstp_peer_costs_at_most_160_bytes() {
    let peers: u32 = std::env::var("PPSTP_MEMORY_PEERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
        .clamp(10, 4_000_000);
    let swarms = peers / 10;
    // `PPSTP_MEMORY_ZIPF=1`: each peer's swarm drawn with Zipf 1 popularity (as the load
    // generator's FIND-heavy run does), so that large swarms have position indexes.
    let zipf = std::env::var_os("PPSTP_MEMORY_ZIPF").is_some();
    // As the server does by default (`server.transparent_huge_pages = false`): mimalloc
    // advises huge pages, and a 2 MiB page holding a few live blocks would be resident whole.
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and changes no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1 as libc::c_ulong, 0, 0, 0);
    }
    let engine = Engine::new(&EngineConfig {
        max_peers: 10_000_000,
        max_swarms: 5_000_000,
        ..EngineConfig::default()
    });
    // Requests are built before the first measurement, so that only the tables grow.
    let pick = zipf_picker(swarms);
    let requests: Vec<Request> = (0..peers)
        .map(|n| connect(n, if zipf { pick(n) } else { n % swarms }))
        .collect();
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
    if !zipf {
        assert_eq!(counts.swarms, swarms as usize);
    }
    assert_eq!(counts.memberships, peers as usize);
    let per_peer = after.saturating_sub(before) as f64 / counts.peers as f64;
    let est = engine.memory_estimate();
    let b = |bytes: usize| bytes as f64 / counts.peers as f64;
    eprintln!(
        "{} PPSTP peers in {} swarms: RSS grew {} bytes, {per_peer:.1} B per peer \
         (capacity estimate {:.1} B per peer: records {:.1}, peer index {:.1}, other peer \
         table {:.1}, swarm slabs and index {:.1}, member vectors {:.1}, position indexes \
         {:.1}, other swarm {:.1})",
        counts.peers,
        counts.swarms,
        after.saturating_sub(before),
        b(est.total()),
        b(est.records),
        b(est.peer_index),
        b(est.peer_table - est.records - est.peer_index),
        b(est.swarm_table),
        b(est.member_vectors),
        b(est.position_indexes),
        b(est.swarm_members - est.member_vectors - est.position_indexes),
    );
    assert!(per_peer <= 160.0, "{per_peer:.1} B per peer");
    drop(requests);
}
