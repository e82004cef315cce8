//! The tracker usage on a simulated ring (one process, fake clock, deterministic by seed):
//! every node runs an engine, the federation's local copy and its sans-IO driver beside its
//! Chord node. Nodes start as the binary does, from a bootstrap list of addresses (RFC 6940
//! §11.4): they dial it, join through the node that answers, find the addresses of the
//! others by Attaches routed through the ring (§6.5.1.2) and dial them; every message is
//! relayed hop by hop by the nodes' sans-IO code. Only the sockets are simulated. Peers join swarms through random nodes; after a flush a lookup through any node
//! returns every peer; after 30% of the nodes crash (never three ring neighbours) every
//! registration of a live connection tracker is still found and those of crashed connection
//! trackers vanish within their lifetime.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;

use ppsp_tracker::engine::{
    ActionKind, Engine, EngineConfig, PeerId, PeerMode, Request, RequestKind, SwarmAction, SwarmId,
    Time,
};
use ppsp_tracker::federation::driver::Driver;
use ppsp_tracker::federation::{Federation, FederationConfig, Lookup};
use ppsp_tracker::overlay::chord::{ChordConfig, LocalOutcome, LocalRequest, NodeId, OpId};
use ppsp_tracker::overlay::sim::{Sim, SimConfig};
use rand::Rng;

const FLUSH_MS: u64 = 1_000;
const LIFETIME_SECS: u32 = 40;
/// The simulated overlay's `max_message_size`: registrations are stored in 4,000-byte parts,
/// so a swarm of more than about 3,000 peers at one node no longer fits one Fetch answer.
const MAX_MESSAGE_BYTES: usize = 16_384;

struct Node {
    engine: Engine,
    fed: Federation,
    driver: Driver,
}

struct Cluster {
    sim: Sim,
    nodes: Vec<Node>,
    /// Overlay operations in flight: op -> (node, driver token).
    ops: HashMap<OpId, (usize, u64)>,
    /// Hops of completed overlay operations (sum, count).
    hops: (u64, u64),
}

fn chord_config() -> ChordConfig {
    ChordConfig {
        request_timeout_ms: 1_000,
        update_interval_ms: 10_000,
        finger_interval_ms: 120_000,
        replica_holddown_ms: 2_000,
        failed_memory_ms: 600_000,
        max_answer_bytes: MAX_MESSAGE_BYTES,
        attach_timeout_ms: 2_000,
        ..ChordConfig::default()
    }
}

fn fed_config() -> FederationConfig {
    FederationConfig {
        // Every lookup goes to the overlay, so the test sees the stored registrations.
        local_find_min: usize::MAX,
        flush_interval_ms: FLUSH_MS,
        flush_max_swarms: 1024,
        flush_max_peers: 4096,
        fetch_cache_ms: 100,
        fetch_timeout_ms: 20_000,
        lifetime_secs: LIFETIME_SECS,
        part_bytes: 4000,
        track_ms: 3_600_000,
        max_message_bytes: MAX_MESSAGE_BYTES,
    }
}

fn build(seed: u64, n: usize) -> Cluster {
    build_with(seed, n, false)
}

/// Bootstrap list of node `i`: the first node and two random earlier ones (the first node's
/// own list names the next two nodes, not started yet when it starts).
fn bootstrap_list(sim: &mut Sim, i: usize) -> Vec<SocketAddr> {
    let mut list = if i == 0 {
        vec![Sim::addr(1), Sim::addr(2)]
    } else {
        vec![Sim::addr(0)]
    };
    for _ in 0..2 {
        if i > 1 {
            let b = Sim::addr(sim.rng().gen_range(1..i));
            if !list.contains(&b) {
                list.push(b);
            }
        }
    }
    list
}

/// `n` nodes started one after another with [`LocalRequest::Bootstrap`]; with
/// `isolate_first`, node 0 is cut off from the others from its start (it founds an overlay of
/// its own, the others another one).
fn build_with(seed: u64, n: usize, isolate_first: bool) -> Cluster {
    let mut sim = Sim::new(SimConfig {
        seed,
        min_latency_ms: 5,
        max_latency_ms: 40,
        loss: 0.0,
        link_ack_timeout_ms: 3_000,
        wire_sample: 4,
        chord: chord_config(),
    });
    for i in 0..n {
        let mut config = chord_config();
        config.bootstrap_addrs = bootstrap_list(&mut sim, i);
        let id = NodeId::from_u128(sim.rng().gen());
        let i = sim.add_node_with_config(id, config);
        let op = sim.local(i, LocalRequest::Bootstrap);
        if i == 0 && isolate_first {
            sim.partition(|i| u32::from(i == 0));
        }
        assert!(sim.run_until_complete(&[op], 15_000), "bootstrap of {i}");
        assert_eq!(sim.outcome(op), Some(&LocalOutcome::Joined));
        sim.run_for(500);
    }
    sim.run_for(20_000);
    if !isolate_first {
        assert!(sim.ring_errors(3).is_empty(), "ring not settled");
    }
    let nodes = (0..n)
        .map(|i| Node {
            engine: Engine::new(&EngineConfig {
                // Every simulated peer comes from one source address.
                max_peers_per_source: 100_000,
                ..EngineConfig::default()
            }),
            fed: Federation::new(sim.node(i).id(), fed_config()),
            driver: Driver::new(),
        })
        .collect();
    Cluster {
        sim,
        nodes,
        ops: HashMap::new(),
        hops: (0, 0),
    }
}

impl Cluster {
    /// Runs the simulation for `ms`, driving every live node's federation every 50 ms.
    fn pump(&mut self, ms: u64) {
        let end = self.sim.now() + ms;
        while self.sim.now() < end {
            self.sim.run_for(50);
            let now = self.sim.now();
            for d in self.sim.take_deliveries() {
                let answer = self.nodes[d.node]
                    .fed
                    .answer_live_status(&d.body, Time(now));
                self.sim.app_answer(d.node, d.token, answer);
            }
            let mut done: Vec<(OpId, usize, u64, LocalOutcome)> = self
                .ops
                .iter()
                .filter_map(|(op, (i, t))| Some((*op, *i, *t, self.sim.outcome(*op)?.clone())))
                .collect();
            done.sort_by_key(|d| d.0);
            for (op, i, token, outcome) in done {
                self.ops.remove(&op);
                if let Some(h) = self.sim.hops(op) {
                    self.hops.0 += u64::from(h);
                    self.hops.1 += 1;
                }
                if !self.sim.is_alive(i) {
                    continue;
                }
                let node = &mut self.nodes[i];
                let more = node.driver.on_outcome(&node.fed, token, outcome, Time(now));
                for o in more {
                    let op = self.sim.local(i, o.request);
                    self.ops.insert(op, (i, o.token));
                }
            }
            for i in 0..self.nodes.len() {
                if !self.sim.is_alive(i) {
                    continue;
                }
                let node = &mut self.nodes[i];
                let out = node.driver.poll(&node.fed, Time(now), now);
                for o in out {
                    let op = self.sim.local(i, o.request);
                    self.ops.insert(op, (i, o.token));
                }
            }
        }
    }

    fn join(&mut self, node: usize, peer: &str, swarm: &str) {
        let request = Request {
            peer_id: PeerId::new(peer.as_bytes()).unwrap(),
            source: "10.0.0.1:7000".parse().unwrap(),
            kind: RequestKind::Connect {
                peer_num: None,
                addrs: Vec::new(),
                actions: vec![SwarmAction {
                    swarm_id: SwarmId::new(swarm.as_bytes()).unwrap(),
                    action: ActionKind::Join,
                    mode: PeerMode::Leech,
                }],
            },
        };
        let now = Time(self.sim.now());
        let n = &self.nodes[node];
        let response = n.engine.handle(&request, now);
        n.fed.record(&request, &response, now);
    }

    /// Peer ids of `swarm` found through node `via`: its local copy and a Fetch.
    fn lookup(&mut self, via: usize, swarm: &str) -> BTreeSet<String> {
        let s = SwarmId::new(swarm.as_bytes()).unwrap();
        let probe = PeerId::new(b"probe").unwrap();
        let mut found: BTreeSet<String> = self.nodes[via]
            .fed
            .local()
            .registration(&s)
            .iter()
            .map(|p| String::from_utf8_lossy(p.peer_id.as_bytes()).into_owned())
            .collect();
        for _ in 0..400 {
            let now = Time(self.sim.now());
            match self.nodes[via].fed.find_plan(&s, &probe, now, false) {
                Lookup::Remote(list) => {
                    found.extend(
                        list.iter()
                            .map(|p| String::from_utf8_lossy(p.peer_id.as_bytes()).into_owned()),
                    );
                    return found;
                }
                Lookup::Local => return found,
                Lookup::Wait => self.pump(50),
            }
        }
        panic!("lookup through {via} never completed");
    }
}

/// Joins `peers` peers into `swarms` swarms through random nodes; (peer, swarm, node) each.
fn populate(c: &mut Cluster, peers: usize, swarms: usize) -> Vec<(String, String, usize)> {
    let n = c.nodes.len();
    let mut placed = Vec::new();
    for p in 0..peers {
        let node = c.sim.rng().gen_range(0..n);
        let swarm = format!("swarm-{}", p % swarms);
        let peer = format!("peer-{p}");
        c.join(node, &peer, &swarm);
        placed.push((peer, swarm, node));
    }
    placed
}

/// Registrations of live connection trackers not found through a random live node.
fn lost(c: &mut Cluster, placed: &[(String, String, usize)], swarms: usize) -> (usize, usize) {
    let live: Vec<usize> = (0..c.nodes.len()).filter(|i| c.sim.is_alive(*i)).collect();
    let mut missing = 0;
    let mut stale = 0;
    for s in 0..swarms {
        let swarm = format!("swarm-{s}");
        let via = live[c.sim.rng().gen_range(0..live.len())];
        let found = c.lookup(via, &swarm);
        for (peer, sw, node) in placed.iter().filter(|(_, sw, _)| *sw == swarm) {
            let _ = sw;
            let present = found.contains(peer);
            if c.sim.is_alive(*node) && !present {
                missing += 1;
            }
            if !c.sim.is_alive(*node) && present {
                stale += 1;
            }
        }
    }
    (missing, stale)
}

/// Crashes about `share` of the nodes at random, never three ring neighbours at once.
fn crash_some(c: &mut Cluster, share: f64) -> usize {
    let n = c.nodes.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|i| c.sim.node(*i).id());
    let ring_pos: HashMap<usize, usize> = order.iter().enumerate().map(|(p, i)| (*i, p)).collect();
    let target = (n as f64 * share) as usize;
    let mut crashed = 0;
    let mut tries = 0;
    while crashed < target && tries < 10 * n {
        tries += 1;
        let i = c.sim.rng().gen_range(0..n);
        if !c.sim.is_alive(i) {
            continue;
        }
        let p = ring_pos[&i];
        let dead = |k: isize| {
            !c.sim
                .is_alive(order[(p as isize + k).rem_euclid(n as isize) as usize])
        };
        // Crashing i must not complete a run of three dead neighbours.
        if (dead(-1) && dead(-2)) || (dead(-1) && dead(1)) || (dead(1) && dead(2)) {
            continue;
        }
        c.sim.crash(i);
        crashed += 1;
    }
    crashed
}

fn scenario(seed: u64, n: usize, peers: usize, swarms: usize) -> (u64, String) {
    let mut c = build(seed, n);
    let placed = populate(&mut c, peers, swarms);
    c.pump(2 * FLUSH_MS + 500);
    let (missing, stale) = lost(&mut c, &placed, swarms);
    assert_eq!(
        (missing, stale),
        (0, 0),
        "after one flush every peer is found"
    );

    let crashed = crash_some(&mut c, 0.3);
    let crash_time = c.sim.now();
    // Repair: poll until every registration of a live connection tracker is found again.
    let mut repair_ms = None;
    for _ in 0..60 {
        c.pump(1_000);
        if lost(&mut c, &placed, swarms).0 == 0 {
            repair_ms = Some(c.sim.now() - crash_time);
            break;
        }
    }
    let repair_ms = repair_ms.expect("registrations of live connection trackers found again");
    // Past one lifetime, registrations of crashed connection trackers are gone, and nothing
    // of the live ones is lost.
    let wait =
        (u64::from(LIFETIME_SECS) * 1000 + 2 * FLUSH_MS).saturating_sub(c.sim.now() - crash_time);
    c.pump(wait);
    let (missing, stale) = lost(&mut c, &placed, swarms);
    assert_eq!(missing, 0, "lost registrations of live connection trackers");
    assert_eq!(
        stale, 0,
        "registrations of crashed connection trackers still served"
    );
    let stats = c.sim.stats();
    // The nodes linked by dialling addresses learnt from routed Attaches, relayed hop by hop.
    assert!(
        stats.attaches > 0 && stats.attaches_relayed > 0,
        "{stats:?}"
    );
    let report = format!(
        "{n} nodes, {peers} peers in {swarms} swarms, {crashed} crashed: lost registrations {missing}, repair {repair_ms} ms, stale after lifetime {stale}, mean hops of the usage's requests {:.2}, messages {}, dials {}, routed Attaches {} (relayed {} times)",
        c.hops.0 as f64 / c.hops.1.max(1) as f64,
        stats.messages_sent,
        stats.dials,
        stats.attaches,
        stats.attaches_relayed
    );
    (c.sim.trace_hash(), report)
}

#[test]
fn sixty_four_nodes_find_every_peer_and_survive_thirty_percent_crashing() {
    let (_, report) = scenario(81, 64, 400, 40);
    println!("{report}");
}

#[test]
fn two_hundred_fifty_six_nodes_lose_no_registration() {
    let (_, report) = scenario(82, 256, 1000, 100);
    println!("{report}");
}

#[test]
fn the_same_seed_gives_the_same_trace() {
    let (a, _) = scenario(5, 12, 60, 6);
    let (b, _) = scenario(5, 12, 60, 6);
    assert_eq!(a, b);
}

/// Swarms of `placed` whose live registrations are not all found through node `via`.
fn missing_through(
    c: &mut Cluster,
    via: usize,
    placed: &[(String, String, usize)],
    swarms: usize,
) -> usize {
    let mut missing = 0;
    for s in 0..swarms {
        let swarm = format!("swarm-{s}");
        let found = c.lookup(via, &swarm);
        missing += placed
            .iter()
            .filter(|(peer, sw, node)| {
                *sw == swarm && c.sim.is_alive(*node) && !found.contains(peer)
            })
            .count();
    }
    missing
}

/// Bound on the merge after a partition heals (simulated): the partition check runs once per
/// update round (10 s, jittered up to 12.5 s), a merged neighbour table pushes replicas after
/// the 2 s hold-down, and every connection tracker rewrites its registrations at half their
/// lifetime (20 s); 90 s covers a few of each.
const HEAL_BOUND_MS: u64 = 90_000;

#[test]
fn a_partitioned_ring_heals_into_one_and_loses_no_registration() {
    let n = 32;
    let swarms = 16;
    let mut c = build(91, n);
    // Registrations before the split.
    let mut placed = populate(&mut c, 160, swarms);
    c.pump(2 * FLUSH_MS + 500);
    assert_eq!(lost(&mut c, &placed, swarms), (0, 0));

    // Split into two interleaved halves (indices are random positions on the ring); node 0,
    // every node's bootstrap peer, is on side 0 only.
    c.sim.partition(|i| (i % 2) as u32);
    // Long enough for each side to find the cut (Update timeouts) and close its own ring.
    c.pump(60_000);
    // Registrations on both sides during the partition: each side sees its own.
    for p in 0..80 {
        let node = c.sim.rng().gen_range(0..n);
        let swarm = format!("swarm-{}", p % swarms);
        let peer = format!("split-peer-{p}");
        c.join(node, &peer, &swarm);
        placed.push((peer, swarm, node));
    }
    c.pump(2 * FLUSH_MS + 500);
    let split_rings = (0..n)
        .filter(|i| c.sim.node(*i).table().successors.is_empty())
        .count();
    assert_eq!(split_rings, 0, "every node found successors on its side");

    c.sim.heal();
    let healed_at = c.sim.now();
    let mut merged_ms = None;
    let mut found_ms = None;
    while c.sim.now() - healed_at < HEAL_BOUND_MS {
        c.pump(1_000);
        if merged_ms.is_none() && c.sim.ring_errors(3).is_empty() {
            merged_ms = Some(c.sim.now() - healed_at);
        }
        if merged_ms.is_some() && lost(&mut c, &placed, swarms).0 == 0 {
            found_ms = Some(c.sim.now() - healed_at);
            break;
        }
    }
    let merged_ms = merged_ms.expect("one ring again within the bound");
    let found_ms = found_ms.expect("every registration found again within the bound");
    // Every registration, through every node.
    for via in 0..n {
        assert_eq!(
            missing_through(&mut c, via, &placed, swarms),
            0,
            "registrations missing through node {via}"
        );
    }
    println!(
        "{n} nodes split in two halves for 60 s, {} registrations: one ring {merged_ms} ms after the heal, every registration found through a random node after {found_ms} ms (bound {HEAL_BOUND_MS} ms), then through each of the {n} nodes (that check ends at {} ms)",
        placed.len(),
        c.sim.now() - healed_at
    );
}

/// Issue fault (a) with the tracker usage: the first node is cut off from the others from its
/// start and founds an overlay of its own; the others form theirs; peers register at both.
/// After the heal the lone node, still dialling its bootstrap list with back-off, merges the
/// two rings and every registration is found through every node. Bound: the longest back-off
/// between dials (60 s) plus [`HEAL_BOUND_MS`].
#[test]
fn a_lone_first_node_merges_after_the_heal_and_its_registrations_are_found() {
    let n = 16;
    let swarms = 8;
    let mut c = build_with(95, n, true);
    assert!(
        c.sim.node(0).table().successors.is_empty(),
        "the first node is alone on its own ring"
    );
    assert!(
        (1..n).all(|i| !c.sim.node(i).table().successors.is_empty()),
        "the others formed a ring"
    );
    let mut placed = populate(&mut c, 80, swarms);
    for p in 0..10 {
        let swarm = format!("swarm-{}", p % swarms);
        let peer = format!("lone-peer-{p}");
        c.join(0, &peer, &swarm);
        placed.push((peer, swarm, 0));
    }
    c.pump(2 * FLUSH_MS + 500);
    c.sim.heal();
    let healed_at = c.sim.now();
    let bound = ppsp_tracker::overlay::chord::node::BOOTSTRAP_RETRY_MAX_MS + HEAL_BOUND_MS;
    let mut merged_ms = None;
    while c.sim.now() - healed_at < bound {
        c.pump(1_000);
        if merged_ms.is_none() && c.sim.ring_errors(3).is_empty() {
            merged_ms = Some(c.sim.now() - healed_at);
        }
        if merged_ms.is_some() && lost(&mut c, &placed, swarms).0 == 0 {
            break;
        }
    }
    let merged_ms = merged_ms.expect("one ring again within the bound");
    for via in 0..n {
        assert_eq!(
            missing_through(&mut c, via, &placed, swarms),
            0,
            "registrations missing through node {via}"
        );
    }
    println!(
        "a lone first node and a ring of {} nodes: one ring {merged_ms} ms after the heal, {} registrations found through each node at {} ms (bound {bound} ms)",
        n - 1,
        placed.len(),
        c.sim.now() - healed_at
    );
}

/// RFC 6940 §6.3.3.1 Error_Response_Too_Large, then a Stat and Fetches by key groups: a swarm
/// of 20,000 peers registered at one node (about 80 parts of 4,000 bytes, 20 times
/// `max_message_size`) is found whole through another node.
#[test]
fn a_twenty_thousand_peer_swarm_is_found_whole_through_another_node() {
    const PEERS: usize = 20_000;
    let mut c = build(93, 8);
    for p in 0..PEERS {
        c.join(0, &format!("big-{p}"), "big-swarm");
    }
    c.pump(3 * FLUSH_MS);
    assert_eq!(
        c.nodes[0]
            .fed
            .local()
            .count(&SwarmId::new(b"big-swarm").unwrap()),
        PEERS
    );
    let via = (1..8).find(|i| c.sim.is_alive(*i)).unwrap();
    let found = c.lookup(via, "big-swarm");
    let split = c.nodes[via]
        .fed
        .stats
        .split_fetches
        .load(std::sync::atomic::Ordering::Relaxed);
    let fetches = c.nodes[via]
        .fed
        .stats
        .fetches
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(split >= 1, "the whole dictionary should not fit one answer");
    assert_eq!(found.len(), PEERS, "peers found through node {via}");
    assert!((0..PEERS).all(|p| found.contains(&format!("big-{p}"))));
    assert_eq!(
        c.sim.stats().wire_mismatches,
        0,
        "a message exceeded max_message_size"
    );
    println!("{PEERS}-peer swarm found whole through another node: {split} split lookup, {fetches} Fetches and Stats");
}
