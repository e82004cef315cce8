//! Engine benchmarks on a realistic table: 1M swarms with Zipf-skewed popularity, 250k peers,
//! about 2M memberships, populated before measuring.
//!
//! Measures JOIN (an existing peer joining a swarm; also with the server's staged prefetch of
//! the requests pipelined behind it, `join_prefetched`), FIND with 30 and 200 peers wanted, LEAVE,
//! expiry steps, and mixed JOIN/FIND throughput with 1 and 2 threads on the one shared, sharded
//! engine (the measurement behind choosing shared sharded state over a channel hand-off per
//! request). Prints the approximate memory per membership once.
//!
//! `cargo bench --bench engine -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use ppsp_tracker::engine::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const SWARMS: usize = 1_000_000;
const PEERS: usize = 250_000;
/// Leecher memberships added with Zipf-skewed swarm choice on top of one seeder per swarm.
const ZIPF_MEMBERSHIPS: usize = 1_000_000;
/// Peers used only by the JOIN/LEAVE benches (registered, in no swarm between batches).
const BENCH_PEERS: usize = 20_000;
/// Precomputed Zipf samples, cycled through while measuring.
const SAMPLES: usize = 1 << 20;

/// Zipf(s) over ranks 0..n by inverse CDF over precomputed cumulative weights.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for rank in 1..=n {
            total += 1.0 / (rank as f64).powf(s);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        Zipf { cdf }
    }

    fn sample(&self, rng: &mut SmallRng) -> usize {
        let u: f64 = rng.gen();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

/// 20-byte ids (the size of a BitTorrent info-hash or a typical PPSP id).
fn id20(tag: u8, n: usize) -> [u8; 20] {
    let mut b = [tag; 20];
    b[..8].copy_from_slice(&(n as u64).to_be_bytes());
    b
}

fn swarm(n: usize) -> SwarmId {
    SwarmId::new(&id20(b's', n)).expect("20-byte id")
}

fn peer(n: usize) -> PeerId {
    PeerId::new(&id20(b'p', n)).expect("20-byte id")
}

fn source(n: usize) -> SocketAddr {
    let n = n as u32 + 1;
    SocketAddr::from(([10, (n >> 16) as u8, (n >> 8) as u8, n as u8], 6881))
}

fn request(p: usize, kind: RequestKind) -> Request {
    Request {
        peer_id: peer(p),
        source: source(p),
        kind,
    }
}

fn join_req(p: usize, s: usize, mode: PeerMode) -> Request {
    request(
        p,
        RequestKind::Join {
            swarm_id: swarm(s),
            mode,
            // An explicit zero: joins in these benches do not build a peer list.
            peer_num: Some(PeerNum {
                peer_count: Some(0),
                ..PeerNum::default()
            }),
        },
    )
}

fn leave_req(p: usize, s: usize) -> Request {
    request(p, RequestKind::Leave { swarm_id: swarm(s) })
}

fn find_req(p: usize, s: usize, count: u32) -> Request {
    request(
        p,
        RequestKind::Find {
            swarm_id: swarm(s),
            peer_num: Some(PeerNum {
                peer_count: Some(count),
                ..PeerNum::default()
            }),
            chunks: Vec::new(),
        },
    )
}

fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |pages| pages * 4096)
}

const NOW: Time = Time::from_secs(1000);

/// The binaries run on mimalloc; measure with it too.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// CPU time this thread has run, in nanoseconds (Linux schedstat). The bench machine is shared,
/// so CPU time per operation is reported beside criterion's wall-clock figures.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Runs `op(i)` for i in 0..n and prints CPU nanoseconds per call.
fn cpu_per_op(name: &str, n: usize, mut op: impl FnMut(usize)) {
    let start = thread_cpu_ns();
    for i in 0..n {
        op(i);
    }
    let ns = thread_cpu_ns().saturating_sub(start);
    println!(
        "cpu {name:<22} {:>9.0} ns/op ({n} ops)",
        ns as f64 / n as f64
    );
}

/// CPU-time figures for each operation, and the 1 vs 2 thread comparison.
fn cpu_report(e: &Engine, zs: &[u32], ps: &[u32], work: &[Work; 2]) {
    let z = |i: usize| zs[i % SAMPLES] as usize;
    let p = |i: usize| ps[i % SAMPLES] as usize;
    for round in 0..5 {
        let base = round * BENCH_PEERS;
        cpu_per_op("join", BENCH_PEERS, |i| {
            black_box(e.handle(&join_req(PEERS + i, z(base + i), PeerMode::Leech), NOW));
        });
        cpu_per_op("leave", BENCH_PEERS, |i| {
            black_box(e.handle(&leave_req(PEERS + i, z(base + i)), NOW));
        });
    }
    for count in [30u32, 200] {
        cpu_per_op(&format!("find_zipf_{count}"), 20_000, |i| {
            black_box(e.handle(&find_req(p(i), z(i), count), NOW));
        });
        cpu_per_op(&format!("find_hot_{count}"), 20_000, |i| {
            black_box(e.handle(&find_req(p(i), 0, count), NOW));
        });
    }
    cpu_per_op("expire_scan_4096", 500, |_| {
        black_box(e.expire(NOW, 4096));
    });
    // Mixed JOIN/FIND/FIND/LEAVE, the same total work split over 1 or 2 threads; three rounds
    // of each, interleaved, because the host is shared.
    const OPS: usize = 400_000;
    let mut ratios = Vec::new();
    for round in 0..3 {
        let mut walls = [Duration::ZERO; 2];
        for (slot, threads) in [1usize, 2].into_iter().enumerate() {
            let start = Instant::now();
            let cpu: u64 = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..threads)
                    .map(|t| {
                        scope.spawn(move || {
                            pin(t);
                            let cpu0 = thread_cpu_ns();
                            mixed_ops(e, &work[t], t, round + 1, OPS / threads);
                            thread_cpu_ns().saturating_sub(cpu0)
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
            });
            let wall = start.elapsed();
            walls[slot] = wall;
            println!(
                "mixed round {round}, {threads} thread(s): {:.0} kops/s wall, {:.0} ns CPU per op",
                OPS as f64 / wall.as_secs_f64() / 1000.0,
                cpu as f64 / OPS as f64
            );
        }
        ratios.push(walls[0].as_secs_f64() / walls[1].as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "mixed throughput ratio 2 threads / 1 thread: median {:.2} of {:?} (load average: {})",
        ratios[1],
        ratios
            .iter()
            .map(|r| (r * 100.0).round() / 100.0)
            .collect::<Vec<_>>(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
}

/// What one thread of the mixed workload uses: its swarms (Zipf-distributed), the peers that
/// FIND in them, and its bench peers that join and leave them.
struct Work {
    swarms: Vec<u32>,
    finders: Vec<u32>,
    joiners: Vec<u32>,
}

/// Thread `t` of two on disjoint swarms and peers: the swarms and finders whose number has
/// parity `t` (the Zipf rank or uniform peer with its lowest bit replaced), and its half of the
/// bench peers. Their shards (and the shards' locks) are shared with the other thread.
fn disjoint_work(zs: &[u32], ps: &[u32], t: usize) -> Work {
    let parity = |n: &u32| (*n & !1) | (t as u32 & 1);
    let half = BENCH_PEERS / 2;
    Work {
        swarms: zs.iter().map(parity).collect(),
        finders: ps.iter().map(parity).collect(),
        joiners: (PEERS + t * half..PEERS + (t + 1) * half)
            .map(|p| p as u32)
            .collect(),
    }
}

/// Thread `t` of two on disjoint shards: only the swarms, finders and bench peers whose swarm
/// or peer shard is `t` modulo 2, so the two threads share no lock and no table (as workers
/// that each own half of the shards would).
fn owned_work(e: &Engine, zs: &[u32], ps: &[u32], t: usize) -> Work {
    let swarm_ok = |s: &&u32| e.swarm_shard_of(&swarm(**s as usize)) % 2 == t;
    let peer_ok = |p: &u32| e.peer_shard_of(&peer(*p as usize)) % 2 == t;
    Work {
        swarms: zs.iter().filter(swarm_ok).copied().collect(),
        finders: ps.iter().copied().filter(peer_ok).collect(),
        joiners: (PEERS as u32..(PEERS + BENCH_PEERS) as u32)
            .filter(peer_ok)
            .collect(),
    }
}

/// `ops` operations of the mixed workload on `w`: join a swarm, FIND in it from another peer
/// and from the joiner, leave it again. Answers into one reused `Response`, as a server
/// worker does.
fn mixed_ops(e: &Engine, w: &Work, t: usize, round: usize, ops: usize) {
    let mut k = round * 7919 + t * 104_729;
    let mut i = 0;
    let mut response = Response::Err(ErrorCode::Ok);
    let at = |v: &[u32], k: usize| v.get(k % v.len().max(1)).map_or(0, |&x| x as usize);
    while i < ops {
        k = k.wrapping_add(1);
        let p = at(&w.joiners, k);
        let s = at(&w.swarms, k);
        e.handle_into(&join_req(p, s, PeerMode::Leech), NOW, &mut response);
        black_box(&response);
        e.handle_into(&find_req(at(&w.finders, k), s, 30), NOW, &mut response);
        black_box(&response);
        e.handle_into(&find_req(p, s, 30), NOW, &mut response);
        black_box(&response);
        black_box(e.handle(&leave_req(p, s), NOW));
        i += 4;
    }
}

/// Pins the calling thread to CPU `t` (modulo the CPUs there are), so that the threads of a
/// multi-thread measurement do not share a core; nothing when pinning is not possible.
fn pin(t: usize) {
    if let Some(cores) = core_affinity::get_core_ids() {
        if let Some(&core) = cores.get(t % cores.len().max(1)) {
            core_affinity::set_for_current(core);
        }
    }
}

struct World {
    engine: Engine,
    /// Zipf-distributed swarm indexes.
    swarm_samples: Vec<u32>,
    /// Uniform peer indexes among the populated peers.
    peer_samples: Vec<u32>,
}

fn populate() -> World {
    let config = EngineConfig {
        shards: 16,
        max_swarms: 2 * SWARMS,
        max_peers: 2 * (PEERS + BENCH_PEERS),
        init_timer_secs: 1_000_000,
        track_timer_secs: 1_000_000,
        ..EngineConfig::default()
    };
    let started = Instant::now();
    let zipf = Zipf::new(SWARMS, 1.0);
    let mut rng = SmallRng::seed_from_u64(7);
    let swarm_samples: Vec<u32> = (0..SAMPLES).map(|_| zipf.sample(&mut rng) as u32).collect();
    let peer_samples: Vec<u32> = (0..SAMPLES)
        .map(|_| rng.gen_range(0..PEERS) as u32)
        .collect();
    let rss_before = rss_bytes();
    let engine = Engine::new(&config);
    let t0 = Time::from_secs(0);
    for p in 0..PEERS + BENCH_PEERS {
        let r = engine.handle(
            &request(
                p,
                RequestKind::Connect {
                    peer_num: None,
                    addrs: Vec::new(),
                    actions: Vec::new(),
                },
            ),
            t0,
        );
        assert_eq!(r.error_code(), ErrorCode::Ok);
    }
    // One seeder per swarm, so that all 1M swarms exist.
    for s in 0..SWARMS {
        let r = engine.handle(&join_req(s % PEERS, s, PeerMode::Seeder), t0);
        assert_eq!(r.error_code(), ErrorCode::Ok);
    }
    // Zipf-skewed leechers.
    for _ in 0..ZIPF_MEMBERSHIPS {
        let s = zipf.sample(&mut rng);
        let p = rng.gen_range(0..PEERS);
        black_box(engine.handle(&join_req(p, s, PeerMode::Leech), t0));
    }
    let rss_after = rss_bytes();
    let counts = engine.counts();
    let est = engine.memory_estimate();
    let rss = rss_after.saturating_sub(rss_before);
    println!(
        "populated in {:.1} s: {} peers, {} swarms, {} memberships ({} seeders, {} leechers); \
         largest swarm {} members",
        started.elapsed().as_secs_f64(),
        counts.peers,
        counts.swarms,
        counts.memberships,
        counts.seeders,
        counts.leechers,
        largest(&engine),
    );
    println!(
        "memory: RSS +{:.1} MiB = {:.0} bytes per membership all-in (swarm and peer tables \
         included); capacity estimate {:.1} MiB (swarm table {:.1}, members {:.1}, peers {:.1}); \
         member entry {} bytes",
        rss as f64 / 1048576.0,
        rss as f64 / counts.memberships as f64,
        est.total() as f64 / 1048576.0,
        est.swarm_table as f64 / 1048576.0,
        est.swarm_members as f64 / 1048576.0,
        est.peer_table as f64 / 1048576.0,
        MEMBER_ENTRY_BYTES,
    );
    println!(
        "  per membership (estimate): {:.0} bytes; per swarm {:.0} bytes of table",
        est.total() as f64 / counts.memberships as f64,
        est.swarm_table as f64 / counts.swarms as f64,
    );
    World {
        engine,
        swarm_samples,
        peer_samples,
    }
}

fn largest(engine: &Engine) -> u32 {
    let q = engine.handle(
        &request(
            0,
            RequestKind::StatQuery {
                target: StatTarget::Swarm(swarm(0)),
            },
        ),
        Time::from_secs(0),
    );
    match q {
        Response::Ok(Answer {
            stat: Some(StatAnswer::Swarm(_, s)),
            ..
        }) => s.peers,
        _ => 0,
    }
}

/// Operations run by the profiling mode ([`profile`]).
const PROFILE_OPS: usize = 20_000;

/// `PROFILE_OPS` JOINs of bench peers into Zipf swarms (the profiling mode's measured part;
/// not inlined, so that `valgrind --tool=callgrind --toggle-collect='*profile_join'` counts
/// exactly these).
#[inline(never)]
fn profile_join(e: &Engine, zs: &[u32], response: &mut Response) {
    for i in 0..PROFILE_OPS {
        e.handle_into(
            &join_req(PEERS + i, zs[i % SAMPLES] as usize, PeerMode::Leech),
            NOW,
            response,
        );
        black_box(&*response);
    }
}

/// As [`profile_join`], served as the server serves a connection's pipelined requests
/// ([`join_staged`]): each JOIN noted to the staged prefetch [`PpstpPrefetch::AHEAD`]
/// requests before it is handled.
#[inline(never)]
fn profile_join_prefetched(e: &Engine, zs: &[u32], response: &mut Response) {
    let mut staged = PpstpPrefetch::default();
    join_staged(e, zs, 0, PROFILE_OPS, &mut staged, response);
}

/// Times `iters` JOINs of the bench peers, in batches of at most `BENCH_PEERS`: `join(cursor,
/// n)` serves one batch (timed), then the LEAVEs that restore the table run untimed.
/// `cursor` is where the next batch starts in the swarm samples.
fn timed_joins(
    e: &Engine,
    zs: &[u32],
    iters: u64,
    cursor: &mut usize,
    mut join: impl FnMut(usize, usize),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters as usize;
    while left > 0 {
        let n = left.min(BENCH_PEERS);
        let start = Instant::now();
        join(*cursor, n);
        total += start.elapsed();
        for i in 0..n {
            let s = zs[(*cursor + i) % SAMPLES] as usize;
            e.handle(&leave_req(PEERS + i, s), NOW);
        }
        *cursor += n;
        left -= n;
    }
    total
}

/// JOINs of bench peers `PEERS + i` for i in 0..n into the Zipf swarms `zs[cursor + i]`, the
/// way the server serves a connection's pipelined requests: request `i + AHEAD` is built and
/// noted to `staged` ([`PpstpPrefetch`]) before request `i` is handled, and every handled
/// request advances the noted ones a step.
fn join_staged(
    e: &Engine,
    zs: &[u32],
    cursor: usize,
    n: usize,
    staged: &mut PpstpPrefetch,
    response: &mut Response,
) {
    const AHEAD: usize = PpstpPrefetch::AHEAD;
    let req = |i: usize| {
        join_req(
            PEERS + i,
            zs[(cursor + i) % SAMPLES] as usize,
            PeerMode::Leech,
        )
    };
    let mut ring: [Request; AHEAD + 1] = std::array::from_fn(req);
    for r in ring.iter().take(AHEAD.min(n)) {
        staged.push_request(e, r);
    }
    for i in 0..n {
        if i + AHEAD < n {
            let r = &mut ring[(i + AHEAD) % (AHEAD + 1)];
            *r = req(i + AHEAD);
            staged.push_request(e, r);
        }
        staged.advance(e);
        e.handle_into(&ring[i % (AHEAD + 1)], NOW, response);
        black_box(&*response);
    }
}

/// `PROFILE_OPS` FINDs of 30 peers in Zipf swarms from random peers (see [`profile_join`]).
#[inline(never)]
fn profile_find(e: &Engine, zs: &[u32], ps: &[u32], response: &mut Response) {
    for i in 0..PROFILE_OPS {
        let r = find_req(ps[i % SAMPLES] as usize, zs[i % SAMPLES] as usize, 30);
        e.handle_into(&r, NOW, response);
        black_box(&*response);
    }
}

/// The profiling mode, for instruction and cache-miss counts that do not depend on the load
/// of the host: with `ENGINE_BENCH_PROFILE=1` the bench populates the table, runs
/// [`profile_join`] and [`profile_join_prefetched`] (each followed by the LEAVEs that undo
/// it) and [`profile_find`] once, and exits without running criterion. Run it under
/// `valgrind --tool=callgrind --cache-sim=yes --toggle-collect='*profile_find*'` (or
/// `*profile_join`, `*profile_join_prefetched`) and divide the counts by [`PROFILE_OPS`].
fn profile(e: &Engine, zs: &[u32], ps: &[u32]) {
    let mut response = Response::Err(ErrorCode::Ok);
    profile_join(e, zs, &mut response);
    for i in 0..PROFILE_OPS {
        e.handle(&leave_req(PEERS + i, zs[i % SAMPLES] as usize), NOW);
    }
    profile_join_prefetched(e, zs, &mut response);
    for i in 0..PROFILE_OPS {
        e.handle(&leave_req(PEERS + i, zs[i % SAMPLES] as usize), NOW);
    }
    profile_find(e, zs, ps, &mut response);
    println!("profiled {PROFILE_OPS} JOINs, {PROFILE_OPS} prefetched JOINs and {PROFILE_OPS} FINDs of 30");
}

fn benches(c: &mut Criterion) {
    let world = populate();
    let e = &world.engine;
    let zs = &world.swarm_samples;
    let ps = &world.peer_samples;
    if std::env::var_os("ENGINE_BENCH_PROFILE").is_some() {
        profile(e, zs, ps);
        return;
    }
    let disjoint = [disjoint_work(zs, ps, 0), disjoint_work(zs, ps, 1)];
    let owned = [owned_work(e, zs, ps, 0), owned_work(e, zs, ps, 1)];
    cpu_report(e, zs, ps, &disjoint);

    let mut group = c.benchmark_group("engine");

    // JOIN: bench peers (each in no swarm) join Zipf-chosen swarms; the LEAVEs that restore
    // the table run untimed.
    // The server keeps one `Response` per worker and answers into it (`handle_into`), reusing
    // its vectors: the benches do the same.
    group.bench_function("join", |b| {
        let mut response = Response::Err(ErrorCode::Ok);
        let mut cursor = 0usize;
        b.iter_custom(|iters| {
            timed_joins(e, zs, iters, &mut cursor, |cursor, n| {
                for i in 0..n {
                    let s = zs[(cursor + i) % SAMPLES] as usize;
                    e.handle_into(&join_req(PEERS + i, s, PeerMode::Leech), NOW, &mut response);
                    black_box(&response);
                }
            })
        })
    });

    // The same JOINs served as the server serves a connection's pipelined requests: each
    // noted to the staged prefetch `PpstpPrefetch::AHEAD` requests before it is handled
    // (`join_staged`), so that the misses of consecutive JOINs overlap.
    group.bench_function("join_prefetched", |b| {
        let mut response = Response::Err(ErrorCode::Ok);
        let mut staged = PpstpPrefetch::default();
        let mut cursor = 0usize;
        b.iter_custom(|iters| {
            timed_joins(e, zs, iters, &mut cursor, |cursor, n| {
                join_staged(e, zs, cursor, n, &mut staged, &mut response)
            })
        })
    });

    // LEAVE: the mirror image, JOINs untimed.
    group.bench_function("leave", |b| {
        let mut cursor = 0usize;
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters as usize;
            while left > 0 {
                let n = left.min(BENCH_PEERS);
                for i in 0..n {
                    let s = zs[(cursor + i) % SAMPLES] as usize;
                    e.handle(&join_req(PEERS + i, s, PeerMode::Leech), NOW);
                }
                let start = Instant::now();
                for i in 0..n {
                    let s = zs[(cursor + i) % SAMPLES] as usize;
                    black_box(e.handle(&leave_req(PEERS + i, s), NOW));
                }
                total += start.elapsed();
                cursor += n;
                left -= n;
            }
            total
        })
    });

    for count in [30u32, 200] {
        group.bench_function(format!("find_zipf_{count}"), |b| {
            let mut i = 0usize;
            let mut response = Response::Err(ErrorCode::Ok);
            b.iter(|| {
                i = i.wrapping_add(1);
                let r = find_req(ps[i % SAMPLES] as usize, zs[i % SAMPLES] as usize, count);
                e.handle_into(&r, NOW, &mut response);
                black_box(&response);
            })
        });
        // The most popular swarm: a full-size sample every time.
        group.bench_function(format!("find_hot_{count}"), |b| {
            let mut i = 0usize;
            let mut response = Response::Err(ErrorCode::Ok);
            b.iter(|| {
                i = i.wrapping_add(1);
                e.handle_into(
                    &find_req(ps[i % SAMPLES] as usize, 0, count),
                    NOW,
                    &mut response,
                );
                black_box(&response);
            })
        });
    }

    // An expiry step over the full table when nothing is due: pure walking cost.
    group.bench_function("expire_scan_4096", |b| {
        b.iter(|| black_box(e.expire(NOW, 4096)))
    });
    group.finish();

    mixed_threads(c, e, &disjoint, &owned);
    expire_deleting(c);
    bt_announce(c);
}

/// A BitTorrent announce from `ip` (IPv4 10.x.y.z from `n`) to swarm `swarm` wanting `count`
/// peers.
fn bt_req(n: usize, swarm: usize, count: u32) -> Request {
    let ip = std::net::Ipv4Addr::from(0x0a00_0000u32 | (n as u32 & 0x00ff_ffff));
    let addr = SocketAddr::new(ip.into(), 6881);
    Request {
        peer_id: bt_peer_id(addr.ip(), addr.port()),
        source: SocketAddr::new(ip.into(), 40_000),
        kind: RequestKind::Announce {
            swarm_id: SwarmId::new(&id20(b'b', swarm)).expect("20-byte id"),
            mode: if n % 4 == 0 {
                PeerMode::Seeder
            } else {
                PeerMode::Leech
            },
            addr: PeerAddr::reflexive(addr),
            peer_num: Some(PeerNum {
                peer_count: Some(count),
                ..PeerNum::default()
            }),
        },
    }
}

/// BitTorrent re-announces on the compact table: 1M swarms of one or two peers plus a hot
/// swarm of 1,000, each announce answering (up to) 50 peers in wire form.
fn bt_announce(c: &mut Criterion) {
    let e = Engine::new(&EngineConfig {
        shards: 64,
        max_peers: 4_000_000,
        max_swarms: 2_000_000,
        ..EngineConfig::default()
    });
    let v4 = ListFamilies {
        first: Family::V4,
        fallback: false,
    };
    let mut peers = CompactPeers::default();
    for swarm in 1..=SWARMS {
        for k in 0..(1 + swarm % 2) {
            let r = bt_req(swarm * 2 + k, swarm, 0);
            e.announce_compact(&r, NOW, v4, &mut peers)
                .expect("populate");
        }
    }
    for n in 0..1_000 {
        e.announce_compact(&bt_req(n + 10_000_000, 0, 0), NOW, v4, &mut peers)
            .expect("populate");
    }
    let mut group = c.benchmark_group("bt");
    group.bench_function("announce_hot_50", |b| {
        let mut i = 0usize;
        b.iter(|| {
            i = (i + 1) % 1_000;
            let r = bt_req(i + 10_000_000, 0, 50);
            black_box(e.announce_compact(&r, NOW, v4, &mut peers).ok());
            black_box(peers.v4.len())
        })
    });
    group.bench_function("announce_tail", |b| {
        let mut i = 0usize;
        b.iter(|| {
            i = i % SWARMS + 1;
            let r = bt_req(i * 2, i, 50);
            black_box(e.announce_compact(&r, NOW, v4, &mut peers).ok())
        })
    });
    group.finish();
}

/// Mixed JOIN/LEAVE/FIND from 1 and 2 threads on the one engine, each thread pinned to its own
/// CPU ([`mixed_ops`]: join a swarm, find in it, leave it again, so the table stays the same
/// size). `threads_N`: disjoint swarms and peers on shared shards ([`disjoint_work`]);
/// `owned_threads_N`: disjoint shards ([`owned_work`]). One thread runs thread 0's work.
fn mixed_threads(c: &mut Criterion, e: &Engine, disjoint: &[Work; 2], owned: &[Work; 2]) {
    let mut group = c.benchmark_group("mixed_join_find");
    for (label, work) in [("threads", disjoint), ("owned_threads", owned)] {
        for threads in [1usize, 2] {
            group.bench_function(format!("{label}_{threads}"), |b| {
                let mut round = 0usize;
                b.iter_custom(|iters| {
                    round += 1;
                    let per_thread = (iters as usize).div_ceil(threads);
                    let start = Instant::now();
                    std::thread::scope(|scope| {
                        for (t, w) in work.iter().enumerate().take(threads) {
                            scope.spawn(move || {
                                pin(t);
                                mixed_ops(e, w, t, round, per_thread)
                            });
                        }
                    });
                    // Time per operation = wall time / operations done by all threads.
                    let done = per_thread.div_ceil(4) * 4 * threads;
                    start.elapsed().mul_f64(iters as f64 / done as f64)
                })
            });
        }
    }
    group.finish();
}

/// Expiry steps that delete: a separate engine whose 100k peers (two swarms each) are all due.
fn expire_deleting(c: &mut Criterion) {
    const N: usize = 100_000;
    let config = EngineConfig {
        shards: 16,
        ..EngineConfig::default()
    };
    let mut group = c.benchmark_group("expire");
    group.bench_function("delete_per_peer", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters as usize;
            while left > 0 {
                let n = left.min(N);
                let e = Engine::new(&config);
                for p in 0..n {
                    e.handle(
                        &request(
                            p,
                            RequestKind::Connect {
                                peer_num: None,
                                addrs: Vec::new(),
                                actions: vec![
                                    SwarmAction {
                                        swarm_id: swarm(p % 5000),
                                        action: ActionKind::Join,
                                        mode: PeerMode::Seeder,
                                    },
                                    SwarmAction {
                                        swarm_id: swarm(p % 7001),
                                        action: ActionKind::Join,
                                        mode: PeerMode::Seeder,
                                    },
                                ],
                            },
                        ),
                        Time::from_secs(0),
                    );
                }
                let late = Time::from_secs(10_000);
                let start = Instant::now();
                let mut expired = 0;
                while expired < n {
                    let r = e.expire(late, 4096);
                    if r.expired == 0 {
                        break;
                    }
                    expired += r.expired;
                }
                total += start.elapsed();
                left -= n;
            }
            total
        })
    });
    group.finish();
}

criterion_group!(engine_benches, benches);
criterion_main!(engine_benches);
