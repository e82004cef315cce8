//! BitTorrent re-announces in a table of 10M swarms against the same in a table of 10k swarms,
//! one run: the engine's part of the scale target (replies/s at 10M swarms within 20% of
//! 10k swarms).
//!
//! Two tables are populated as `benches/compare.sh` populates a tracker: 20M peers over 10M
//! swarms "headtail" (the first 1% of swarms hold a quarter of the peers, skewed; every other
//! swarm one or two peers), and 100k peers over 10k swarms (skewed like Zipf 1), each peer
//! announced once. Then peers drawn uniformly re-announce, asking for 50 peers, either one
//! after another (`plain`) or in batches of 32 with the staged prefetch the BEP 15 worker
//! uses (`staged`: `BtPrefetch::push` three datagrams ahead, `BtPrefetch::advance` before
//! each). The 10M table takes about 1 GB and a minute to populate.
//!
//! `cargo bench --bench bt_scale -- --warm-up-time 1 --measurement-time 3`
//! (`BT_SCALE_SWARMS=1000000` for a smaller large table.) With `BT_SCALE_PROFILE=plain` or
//! `=staged` the bench populates the large table, runs [`PROFILE_OPS`] re-announces in
//! `profile_run` and exits, for `valgrind --tool=callgrind --cache-sim=yes
//! --collect-atstart=no --toggle-collect='*profile_run*'`.

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};

use criterion::{criterion_group, criterion_main, Criterion};
use ppsp_tracker::engine::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// The binaries run on mimalloc; measure with it too.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NOW: Time = Time::from_secs(1000);
/// Peers asked for per announce (the load generator's default numwant).
const WANT: u32 = 50;
/// Datagrams per batch in the staged runs (a receive turn's worth under load).
const BATCH: usize = 32;
/// How far ahead the staged runs note a datagram (the back-ends' `PREFETCH_AHEAD`).
const AHEAD: usize = 3;
/// Re-announces in the profiling mode.
const PROFILE_OPS: usize = 200_000;
/// Drawn requests, cycled through while measuring.
const SAMPLES: usize = 1 << 20;

/// A populated table and the swarm of each of its peers.
struct World {
    engine: Engine,
    peer_swarm: Vec<u32>,
    /// Peers drawn uniformly, the order requests come in.
    draws: Vec<u32>,
}

/// The 20-byte info-hash of swarm `s`.
fn info_hash(s: u32) -> [u8; 20] {
    let mut ih = [0x5a; 20];
    let x = (u64::from(s) ^ 0x9e37_79b9_7f4a_7c15).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    ih[..8].copy_from_slice(&x.to_be_bytes());
    ih[8..12].copy_from_slice(&s.to_be_bytes());
    ih
}

/// Peer `p`'s (address, port): 64,000 ports per address, as the load generator does.
fn peer_addr(p: u32) -> SocketAddr {
    let ip = Ipv4Addr::from(0x0a00_0000 | (p / 64_000));
    SocketAddr::new(ip.into(), 1024 + (p % 64_000) as u16)
}

/// Peer `p`'s mode: one in five seeds.
fn mode(p: u32) -> PeerMode {
    if p % 5 == 0 {
        PeerMode::Seeder
    } else {
        PeerMode::Leech
    }
}

fn announce(p: u32, swarm: u32) -> Request {
    let addr = peer_addr(p);
    Request {
        peer_id: bt_peer_id(addr.ip(), addr.port()),
        source: SocketAddr::new(addr.ip(), 40_000),
        kind: RequestKind::Announce {
            swarm_id: SwarmId::new(&info_hash(swarm)).expect("20-byte id"),
            mode: mode(p),
            addr: PeerAddr::reflexive(addr),
            peer_num: Some(PeerNum {
                peer_count: Some(WANT),
                ..PeerNum::default()
            }),
        },
    }
}

/// `swarms` swarms and `2 * swarms` peers, headtail (`head`: true) or `10 * swarms` peers
/// skewed over all swarms.
fn populate(swarms: u32, headtail: bool) -> World {
    let mut rng = SmallRng::seed_from_u64(1);
    let mut peer_swarm = Vec::new();
    // A rank skewed towards 0 (density about 1 / rank, like Zipf 1), in 0..n.
    let skewed = |rng: &mut SmallRng, n: u32| -> u32 {
        let u: f64 = rng.gen();
        (((n as f64 + 1.0).powf(u) - 1.0) as u32).min(n - 1)
    };
    if headtail {
        let peers = 2 * swarms as usize;
        let head = (swarms / 100).max(1);
        let mut s = head;
        while s < swarms && peer_swarm.len() < peers - peers / 4 {
            for _ in 0..(1 + rng.gen_range(0..2)) {
                peer_swarm.push(s);
            }
            s += 1;
        }
        while peer_swarm.len() < peers {
            peer_swarm.push(skewed(&mut rng, head));
        }
    } else {
        for _ in 0..10 * swarms {
            peer_swarm.push(skewed(&mut rng, swarms));
        }
    }
    let engine = Engine::new(&EngineConfig {
        max_peers: peer_swarm.len() + 1_000,
        max_swarms: swarms as usize + 1_000,
        max_peers_per_swarm: peer_swarm.len(),
        max_peers_per_source: peer_swarm.len(),
        track_timer_secs: 1_000_000,
        init_timer_secs: 1_000_000,
        ..EngineConfig::default()
    });
    let v4 = ListFamilies {
        first: Family::V4,
        fallback: false,
    };
    let mut peers = CompactPeers::default();
    for (p, &s) in peer_swarm.iter().enumerate() {
        let mut r = announce(p as u32, s);
        if let RequestKind::Announce { peer_num, .. } = &mut r.kind {
            *peer_num = Some(PeerNum {
                peer_count: Some(0),
                ..PeerNum::default()
            });
        }
        engine
            .announce_compact(&r, NOW, v4, &mut peers)
            .expect("populate");
    }
    let n = peer_swarm.len() as u32;
    let draws = (0..SAMPLES).map(|_| rng.gen_range(0..n)).collect();
    World {
        engine,
        peer_swarm,
        draws,
    }
}

const V4: ListFamilies = ListFamilies {
    first: Family::V4,
    fallback: false,
};

/// Re-announces of draws `from..from + n`, one after another.
fn plain(w: &World, from: usize, n: usize, peers: &mut CompactPeers) {
    for i in from..from + n {
        let p = w.draws[i % SAMPLES];
        let r = announce(p, w.peer_swarm[p as usize]);
        black_box(w.engine.announce_compact(&r, NOW, V4, peers).ok());
    }
}

/// The same in batches of [`BATCH`], each datagram noted [`AHEAD`] ahead and the prefetches
/// advanced before each is served, as the BEP 15 worker does.
fn staged(w: &World, from: usize, n: usize, peers: &mut CompactPeers, pf: &BtPrefetch) {
    let mut i = from;
    while i < from + n {
        let len = BATCH.min(from + n - i);
        // What the BEP 15 worker's prefetch hook reads from the datagram: the info-hash, the
        // requester's mode (`left`) and the peers wanted.
        let push = |j: usize| {
            let p = w.draws[(i + j) % SAMPLES];
            let what = BtUse::Announce {
                mode: mode(p),
                want: WANT as usize,
            };
            pf.push(&w.engine, &info_hash(w.peer_swarm[p as usize]), what);
        };
        for j in 0..len.min(AHEAD) {
            push(j);
        }
        for j in 0..len {
            if j + AHEAD < len {
                push(j + AHEAD);
            }
            pf.advance(&w.engine);
            let p = w.draws[(i + j) % SAMPLES];
            let r = announce(p, w.peer_swarm[p as usize]);
            black_box(w.engine.announce_compact(&r, NOW, V4, peers).ok());
        }
        i += len;
    }
}

/// The profiling mode's measured part (see the module documentation).
#[inline(never)]
fn profile_run(w: &World, staged_run: bool) {
    let mut peers = CompactPeers::default();
    if staged_run {
        staged(w, 0, PROFILE_OPS, &mut peers, &BtPrefetch::default());
    } else {
        plain(w, 0, PROFILE_OPS, &mut peers);
    }
}

fn benches(c: &mut Criterion) {
    let swarms: u32 = std::env::var("BT_SCALE_SWARMS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000_000);
    if let Ok(mode) = std::env::var("BT_SCALE_PROFILE") {
        let w = populate(swarms, true);
        profile_run(&w, mode == "staged");
        println!("profiled {PROFILE_OPS} re-announces ({mode}) at {swarms} swarms");
        return;
    }
    let small = populate(10_000, false);
    let large = populate(swarms, true);
    let label = |n: u32| match n {
        n if n % 1_000_000 == 0 => format!("{}m", n / 1_000_000),
        n => format!("{}k", n / 1_000),
    };
    let mut group = c.benchmark_group("bt_scale");
    for (w, n) in [(&small, 10_000), (&large, swarms)] {
        group.bench_function(format!("announce_{}_plain", label(n)), |b| {
            let mut peers = CompactPeers::default();
            let mut at = 0usize;
            b.iter_custom(|iters| {
                let start = std::time::Instant::now();
                plain(w, at, iters as usize, &mut peers);
                at += iters as usize;
                start.elapsed()
            })
        });
        group.bench_function(format!("announce_{}_staged", label(n)), |b| {
            let mut peers = CompactPeers::default();
            let pf = BtPrefetch::default();
            let mut at = 0usize;
            b.iter_custom(|iters| {
                let start = std::time::Instant::now();
                staged(w, at, iters as usize, &mut peers, &pf);
                at += iters as usize;
                start.elapsed()
            })
        });
    }
    group.finish();
}

criterion_group!(bt_scale_benches, benches);
criterion_main!(bt_scale_benches);
