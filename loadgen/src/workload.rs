//! The request model: a population of simulated peers spread over swarms by a popularity
//! distribution, and a weighted mix of request types drawn over that population.
//!
//! Everything here is deterministic for a given seed: the same `--seed` gives the same swarm
//! ids, the same peer-to-swarm assignment and the same request sequence per thread, so runs
//! repeat.

use std::fmt;
use std::str::FromStr;

use anyhow::{anyhow, bail, Context};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// Every request type the generator can send, across all protocols. The discriminant indexes
/// per-type counters and histograms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// PPSTP CONNECT with one JOIN swarm action.
    Connect,
    /// PPSTP JOIN.
    Join,
    /// PPSTP FIND.
    Find,
    /// PPSTP LEAVE.
    Leave,
    /// PPSTP STAT_REPORT with one STREAM_STATS entry.
    StatReport,
    /// PPSTP KEEPALIVE.
    Keepalive,
    /// PPSTP JOIN_CHUNK.
    JoinChunk,
    /// PPSTP STAT_QUERY on the peer's swarm.
    StatQuery,
    /// BitTorrent announce (UDP or HTTP) with no event.
    Announce,
    /// BitTorrent announce with `event=started` (used to populate).
    Started,
    /// BitTorrent announce with `event=stopped`.
    Stopped,
    /// BitTorrent scrape of the peer's swarm.
    Scrape,
    /// BEP 15 connect handshake (one per socket and connection-id lifetime).
    UdpConnect,
}

/// Number of [`OpKind`] variants.
pub const N_OPS: usize = 13;

/// All kinds, in discriminant order.
pub const ALL_OPS: [OpKind; N_OPS] = [
    OpKind::Connect,
    OpKind::Join,
    OpKind::Find,
    OpKind::Leave,
    OpKind::StatReport,
    OpKind::Keepalive,
    OpKind::JoinChunk,
    OpKind::StatQuery,
    OpKind::Announce,
    OpKind::Started,
    OpKind::Stopped,
    OpKind::Scrape,
    OpKind::UdpConnect,
];

impl OpKind {
    /// Stable lower-case name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Connect => "connect",
            OpKind::Join => "join",
            OpKind::Find => "find",
            OpKind::Leave => "leave",
            OpKind::StatReport => "stat_report",
            OpKind::Keepalive => "keepalive",
            OpKind::JoinChunk => "join_chunk",
            OpKind::StatQuery => "stat_query",
            OpKind::Announce => "announce",
            OpKind::Started => "started",
            OpKind::Stopped => "stopped",
            OpKind::Scrape => "scrape",
            OpKind::UdpConnect => "udp_connect",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether the kind belongs to PPSTP (as opposed to the BitTorrent protocols).
    pub fn is_ppstp(self) -> bool {
        matches!(
            self,
            OpKind::Connect
                | OpKind::Join
                | OpKind::Find
                | OpKind::Leave
                | OpKind::StatReport
                | OpKind::Keepalive
                | OpKind::JoinChunk
                | OpKind::StatQuery
        )
    }
}

impl FromStr for OpKind {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ALL_OPS
            .iter()
            .copied()
            .find(|k| k.name() == s)
            .ok_or_else(|| anyhow!("unknown request type {s:?}"))
    }
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How peers are spread over swarms.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Popularity {
    /// Every swarm equally likely.
    Uniform,
    /// Swarm of rank k (1-based) has weight 1/k^s.
    Zipf { s: f64 },
    /// A steep head (the first 1% of swarms, Zipf with s = 1 among them) holding most peers,
    /// plus a long tail where every other swarm has one or two peers.
    Headtail,
}

impl FromStr for Popularity {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "uniform" => Ok(Popularity::Uniform),
            "headtail" => Ok(Popularity::Headtail),
            _ => {
                let exp = s
                    .strip_prefix("zipf:")
                    .ok_or_else(|| anyhow!("popularity is uniform, zipf:S or headtail"))?;
                let s: f64 = exp.parse().context("zipf exponent")?;
                if !(s.is_finite() && s > 0.0 && s <= 10.0) {
                    bail!("zipf exponent must be in (0, 10]");
                }
                Ok(Popularity::Zipf { s })
            }
        }
    }
}

impl fmt::Display for Popularity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Popularity::Uniform => f.write_str("uniform"),
            Popularity::Zipf { s } => write!(f, "zipf:{s}"),
            Popularity::Headtail => f.write_str("headtail"),
        }
    }
}

/// Samples ranks 0..n with probability proportional to 1/(rank+1)^s, from a cumulative table
/// (exact, O(log n) per sample).
#[derive(Clone, Debug)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: u32, s: f64) -> Self {
        let mut cdf = Vec::with_capacity(n as usize);
        let mut sum = 0.0;
        for k in 1..=n {
            sum += (k as f64).powf(-s);
            cdf.push(sum);
        }
        for c in &mut cdf {
            *c /= sum;
        }
        Zipf { cdf }
    }

    pub fn sample<R: Rng>(&self, rng: &mut R) -> u32 {
        let u: f64 = rng.gen();
        let i = self.cdf.partition_point(|&c| c < u);
        i.min(self.cdf.len().saturating_sub(1)) as u32
    }
}

/// Parameters of the simulated population.
#[derive(Clone, Debug, Serialize)]
pub struct PopulationSpec {
    pub swarms: u32,
    pub peers: u32,
    pub popularity: Popularity,
    /// Fraction of peers that are seeders (BitTorrent `left = 0`, PPSTP `SEEDER`).
    pub seeder_share: f64,
    pub seed: u64,
}

/// The simulated peers: which swarm each is in and whether it seeds. Identifiers are derived
/// from the seed and the index, so they are never stored.
#[derive(Clone, Debug)]
pub struct Population {
    pub spec: PopulationSpec,
    /// Swarm index of each peer.
    pub peer_swarm: Vec<u32>,
    /// Seeder flag of each peer, one bit each (bit `p % 64` of word `p / 64`): 2.5 MB for 20M
    /// peers, so that drawing a request costs one cache miss (its swarm), not two.
    seeder: Vec<u64>,
    /// Source addresses the peers are spread over (1 unless `--source-addrs` for bt-udp).
    pub addr_slots: u32,
}

/// Ports a peer may announce (1024..65024).
const PORTS: u32 = 64000;

/// SplitMix64 step: a fast, well-mixed 64-bit hash used to derive identifiers.
pub fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn derive20(seed: u64, tag: u64, index: u32) -> [u8; 20] {
    let mut out = [0u8; 20];
    let base = splitmix64(seed ^ tag.rotate_left(17)) ^ u64::from(index);
    let a = splitmix64(base);
    let b = splitmix64(a);
    let c = splitmix64(b);
    out[..8].copy_from_slice(&a.to_be_bytes());
    out[8..16].copy_from_slice(&b.to_be_bytes());
    out[16..].copy_from_slice(&c.to_be_bytes()[..4]);
    out
}

const SWARM_TAG: u64 = 0x5357_4152_4d00_0000;
const PEER_TAG: u64 = 0x5045_4552_0000_0000;
const ASSIGN_TAG: u64 = 0x4153_5349_474e_0000;

/// Writes `bytes` as lower-case hex into `out`.
pub fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    ppsp_tracker::hex::push(out, bytes);
}

impl Population {
    pub fn new(spec: PopulationSpec) -> anyhow::Result<Self> {
        if spec.swarms == 0 || spec.peers == 0 {
            bail!("--swarms and --peers must be at least 1");
        }
        if !(0.0..=1.0).contains(&spec.seeder_share) {
            bail!("--seeder-share must be between 0 and 1");
        }
        let mut rng = SmallRng::seed_from_u64(splitmix64(spec.seed ^ ASSIGN_TAG));
        let n = spec.peers as usize;
        let mut peer_swarm = Vec::with_capacity(n);
        match spec.popularity {
            Popularity::Uniform => {
                for _ in 0..n {
                    peer_swarm.push(rng.gen_range(0..spec.swarms));
                }
            }
            Popularity::Zipf { s } => {
                let z = Zipf::new(spec.swarms, s);
                for _ in 0..n {
                    peer_swarm.push(z.sample(&mut rng));
                }
            }
            Popularity::Headtail => {
                let head = (spec.swarms / 100).max(1);
                // Tail first: swarms head..swarms get one or two peers each while peers last,
                // keeping at least a quarter of the peers for the head.
                let tail_budget = n - n / 4;
                let mut tail_swarm = head;
                while tail_swarm < spec.swarms && peer_swarm.len() < tail_budget {
                    let k = if rng.gen_bool(0.5) { 1 } else { 2 };
                    for _ in 0..k {
                        if peer_swarm.len() < tail_budget {
                            peer_swarm.push(tail_swarm);
                        }
                    }
                    tail_swarm += 1;
                }
                let z = Zipf::new(head, 1.0);
                while peer_swarm.len() < n {
                    peer_swarm.push(z.sample(&mut rng));
                }
                // Requests pick peers uniformly; shuffle so a thread's index range is not all
                // tail or all head.
                for i in (1..n).rev() {
                    let j = rng.gen_range(0..=i);
                    peer_swarm.swap(i, j);
                }
            }
        }
        let mut seeder = vec![0u64; n.div_ceil(64)];
        for p in 0..n {
            if rng.gen_bool(spec.seeder_share) {
                seeder[p / 64] |= 1 << (p % 64);
            }
        }
        Ok(Population {
            spec,
            peer_swarm,
            seeder,
            addr_slots: 1,
        })
    }

    pub fn peers(&self) -> u32 {
        self.spec.peers
    }

    /// The 20-byte identifier of swarm `s` (a BitTorrent info-hash; PPSTP uses its hex).
    pub fn swarm_id(&self, s: u32) -> [u8; 20] {
        derive20(self.spec.seed, SWARM_TAG, s)
    }

    /// The 20-byte peer id of peer `p`, with an Azureus-style client prefix.
    pub fn peer_id(&self, p: u32) -> [u8; 20] {
        let mut id = derive20(self.spec.seed, PEER_TAG, p);
        id[..8].copy_from_slice(b"-LG0001-");
        id
    }

    /// The swarm peer `p` is in.
    pub fn swarm_of(&self, p: u32) -> u32 {
        self.peer_swarm.get(p as usize).copied().unwrap_or(0)
    }

    pub fn is_seeder(&self, p: u32) -> bool {
        let p = p as usize;
        self.seeder
            .get(p / 64)
            .is_some_and(|w| w >> (p % 64) & 1 == 1)
    }

    /// Number of seeders.
    pub fn seeders(&self) -> u32 {
        self.seeder.iter().map(|w| w.count_ones()).sum()
    }

    /// The port peer `p` announces. A BitTorrent tracker knows a peer by (source address,
    /// announced port): peer `p` sends from source address number `p % addr_slots` (see
    /// [`Population::addr_slot`]) and announces port `1024 + (p / addr_slots) % 64000`, so up to
    /// 64000 peers per source address have distinct identities.
    pub fn peer_port(&self, p: u32) -> u16 {
        1024 + ((p / self.addr_slots.max(1)) % PORTS) as u16
    }

    /// The source address slot peer `p` sends from.
    pub fn addr_slot(&self, p: u32) -> u32 {
        p % self.addr_slots.max(1)
    }

    /// Peers with distinct (source address, port) identities at most.
    pub fn distinct_identities(&self) -> u64 {
        u64::from(self.addr_slots.max(1)) * u64::from(PORTS)
    }

    /// Number of peers in each swarm.
    pub fn swarm_sizes(&self) -> Vec<u32> {
        let mut sizes = vec![0u32; self.spec.swarms as usize];
        for &s in &self.peer_swarm {
            if let Some(c) = sizes.get_mut(s as usize) {
                *c += 1;
            }
        }
        sizes
    }

    /// `peer_id:secret` lines for every peer (hex peer ids, as PPSTP requests name them): the
    /// credentials file of a tracker in HTTP Digest mode.
    pub fn write_digest_credentials<W: std::io::Write>(
        &self,
        mut w: W,
        secret: &str,
    ) -> std::io::Result<()> {
        let mut line = Vec::with_capacity(41 + secret.len());
        for p in 0..self.spec.peers {
            line.clear();
            push_hex(&mut line, &self.peer_id(p));
            line.push(b':');
            line.extend_from_slice(secret.as_bytes());
            line.push(b'\n');
            w.write_all(&line)?;
        }
        w.flush()
    }

    /// Hex swarm ids, one per line, for every swarm that has at least one peer (the whitelist
    /// a tracker in whitelist mode needs).
    pub fn write_swarm_ids<W: std::io::Write>(&self, mut w: W) -> std::io::Result<()> {
        let mut line = Vec::with_capacity(41);
        for s in 0..self.spec.swarms {
            line.clear();
            push_hex(&mut line, &self.swarm_id(s));
            line.push(b'\n');
            w.write_all(&line)?;
        }
        Ok(())
    }
}

/// One request to send: what, by which peer, about which swarm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Op {
    pub kind: OpKind,
    pub peer: u32,
    pub swarm: u32,
}

/// Weighted request mix, parsed from `kind=weight,kind=weight`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Mix {
    pub weights: Vec<(OpKind, u32)>,
    #[serde(skip)]
    total: u32,
}

impl Mix {
    pub fn new(weights: Vec<(OpKind, u32)>) -> anyhow::Result<Self> {
        let total: u32 = weights.iter().map(|w| w.1).sum();
        if total == 0 {
            bail!("the request mix has no positive weight");
        }
        Ok(Mix { weights, total })
    }

    pub fn sample<R: Rng>(&self, rng: &mut R) -> OpKind {
        let mut x = rng.gen_range(0..self.total);
        for &(k, w) in &self.weights {
            if x < w {
                return k;
            }
            x -= w;
        }
        // Unreachable by construction (x < total); the last kind is a safe answer.
        self.weights.last().map(|w| w.0).unwrap_or(OpKind::Find)
    }
}

impl FromStr for Mix {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut weights = Vec::new();
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let (k, w) = part
                .split_once('=')
                .ok_or_else(|| anyhow!("mix entry {part:?} is not kind=weight"))?;
            let kind: OpKind = k.trim().parse()?;
            let w: u32 = w.trim().parse().context("mix weight")?;
            if w > 1_000_000 {
                bail!("mix weight {w} is too large");
            }
            if weights.iter().any(|(k2, _)| *k2 == kind) {
                bail!("mix names {kind} twice");
            }
            if w > 0 {
                weights.push((kind, w));
            }
        }
        Mix::new(weights)
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, w)) in self.weights.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{k}={w}")?;
        }
        Ok(())
    }
}

/// PPSTP peer states as the generator believes them, for one worker's share of the population
/// (peers `p` with `p % workers == worker`), so that every request it draws is valid in the
/// peer's state (RFC 7846 Table 6: a TRACKING peer may not CONNECT with a JOIN).
#[derive(Clone, Debug)]
pub struct PeerStates {
    workers: u32,
    worker: u32,
    /// Per local peer: [`UNREGISTERED`], [`TRACKING`] or [`LEFT`].
    state: Vec<u8>,
    /// Local indices of peers not tracking (unregistered or left), in no particular order.
    idle: Vec<u32>,
}

const UNREGISTERED: u8 = 0;
const TRACKING: u8 = 1;
const LEFT: u8 = 2;
/// Tries to find a peer in the wanted state before taking whatever was drawn.
const PICK_TRIES: usize = 8;

impl PeerStates {
    /// `populated`: the populate phase registered every peer in its swarm.
    pub fn new(peers: u32, workers: u32, worker: u32, populated: bool) -> Self {
        let workers = workers.max(1);
        let n = peers / workers + u32::from(worker < peers % workers);
        let (state, idle) = if populated {
            (vec![TRACKING; n as usize], Vec::new())
        } else {
            (vec![UNREGISTERED; n as usize], (0..n).collect())
        };
        PeerStates {
            workers,
            worker,
            state,
            idle,
        }
    }

    fn peer(&self, local: u32) -> u32 {
        local * self.workers + self.worker
    }

    fn random_local<R: Rng>(&self, rng: &mut R, want: u8) -> Option<u32> {
        let n = self.state.len() as u32;
        if n == 0 {
            return None;
        }
        let mut local = rng.gen_range(0..n);
        for _ in 0..PICK_TRIES {
            if self.state[local as usize] == want {
                break;
            }
            local = rng.gen_range(0..n);
        }
        Some(local)
    }

    /// Marks a non-tracking peer as tracking and says how it gets there: JOIN when it is
    /// registered and `join` was asked for, CONNECT otherwise.
    fn activate(&mut self, local: u32, join: bool) -> OpKind {
        if let Some(i) = self.idle.iter().position(|&l| l == local) {
            self.idle.swap_remove(i);
        }
        let kind = match self.state.get(local as usize) {
            Some(&LEFT) if join => OpKind::Join,
            _ => OpKind::Connect,
        };
        if let Some(s) = self.state.get_mut(local as usize) {
            *s = TRACKING;
        }
        kind
    }

    /// A tracking peer leaves its swarm; if none was found, the drawn peer joins instead.
    fn leave<R: Rng>(&mut self, rng: &mut R) -> Option<(OpKind, u32)> {
        let local = self.random_local(rng, TRACKING)?;
        if self.state[local as usize] == TRACKING {
            self.state[local as usize] = LEFT;
            self.idle.push(local);
            Some((OpKind::Leave, local))
        } else {
            Some((self.activate(local, false), local))
        }
    }

    /// Adapts a drawn kind to the peers' states and picks the peer:
    /// - `connect`/`join`: a peer not in its swarm joins it (CONNECT when unregistered, JOIN
    ///   when registered and `join` was drawn); when every peer is in its swarm, one leaves
    ///   instead (churn);
    /// - `leave`: a tracking peer leaves its swarm;
    /// - anything else: a tracking peer; if none was found, the drawn peer joins first.
    pub fn pick<R: Rng>(&mut self, kind: OpKind, rng: &mut R) -> Option<(OpKind, u32)> {
        let (kind, local) = match kind {
            OpKind::Connect | OpKind::Join => {
                if self.idle.is_empty() {
                    self.leave(rng)?
                } else {
                    let i = rng.gen_range(0..self.idle.len());
                    let local = self.idle[i];
                    (self.activate(local, kind == OpKind::Join), local)
                }
            }
            OpKind::Leave => self.leave(rng)?,
            other => {
                let local = self.random_local(rng, TRACKING)?;
                if self.state[local as usize] == TRACKING {
                    (other, local)
                } else {
                    (self.activate(local, false), local)
                }
            }
        };
        Some((kind, self.peer(local)))
    }

    /// Peers this worker believes are in their swarm.
    pub fn tracking(&self) -> usize {
        self.state.iter().filter(|&&s| s == TRACKING).count()
    }
}

/// Where a worker's requests come from.
pub enum OpSource {
    /// Register peers `next, next + step, ...` below `end` in order, one op each (the
    /// populate phase).
    Sequence {
        kind: OpKind,
        next: u32,
        end: u32,
        step: u32,
    },
    /// Kinds drawn from the mix and peers drawn uniformly (so swarms follow the popularity),
    /// without end (the caller bounds time and count). With `states` (PPSTP), peers come from
    /// the worker's share and each request is valid in its peer's state.
    Random {
        rng: SmallRng,
        mix: Mix,
        states: Option<PeerStates>,
    },
}

impl OpSource {
    /// Random source for worker `thread` of a run seeded with `seed`.
    pub fn random(seed: u64, thread: usize, mix: Mix, states: Option<PeerStates>) -> Self {
        OpSource::Random {
            rng: SmallRng::seed_from_u64(splitmix64(seed ^ (thread as u64 + 1).rotate_left(40))),
            mix,
            states,
        }
    }

    pub fn next(&mut self, pop: &Population) -> Option<Op> {
        match self {
            OpSource::Sequence {
                kind,
                next,
                end,
                step,
            } => {
                if *next >= *end {
                    return None;
                }
                let peer = *next;
                *next = next.saturating_add((*step).max(1));
                Some(Op {
                    kind: *kind,
                    peer,
                    swarm: pop.swarm_of(peer),
                })
            }
            OpSource::Random { rng, mix, states } => {
                let kind = mix.sample(rng);
                let (kind, peer) = match states {
                    Some(st) => st.pick(kind, rng)?,
                    None => (kind, rng.gen_range(0..pop.peers())),
                };
                Some(Op {
                    kind,
                    peer,
                    swarm: pop.swarm_of(peer),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(popularity: Popularity, swarms: u32, peers: u32, seed: u64) -> PopulationSpec {
        PopulationSpec {
            swarms,
            peers,
            popularity,
            seeder_share: 0.3,
            seed,
        }
    }

    #[test]
    fn zipf_rank_frequencies_follow_the_power_law() {
        let z = Zipf::new(1000, 1.0);
        let mut rng = SmallRng::seed_from_u64(7);
        let mut counts = vec![0u32; 1000];
        for _ in 0..200_000 {
            counts[z.sample(&mut rng) as usize] += 1;
        }
        // With s = 1, rank 1 is twice as frequent as rank 2 and ten times rank 10.
        let r12 = counts[0] as f64 / counts[1] as f64;
        let r110 = counts[0] as f64 / counts[9] as f64;
        assert!((1.8..2.2).contains(&r12), "rank1/rank2 = {r12}");
        assert!((8.5..11.5).contains(&r110), "rank1/rank10 = {r110}");
        // Harmonic number H_1000 ~ 7.485: rank 1 holds ~13.4% of the mass.
        let share = counts[0] as f64 / 200_000.0;
        assert!((0.125..0.143).contains(&share), "rank-1 share {share}");
    }

    #[test]
    fn zipf_steeper_exponent_concentrates_more() {
        let mut rng = SmallRng::seed_from_u64(1);
        let top = |s: f64, rng: &mut SmallRng| {
            let z = Zipf::new(500, s);
            (0..50_000).filter(|_| z.sample(rng) == 0).count()
        };
        let a = top(0.8, &mut rng);
        let b = top(1.5, &mut rng);
        assert!(b > 2 * a, "s=1.5 top {b} vs s=0.8 top {a}");
    }

    #[test]
    fn uniform_spreads_evenly() {
        let pop = Population::new(spec(Popularity::Uniform, 10, 100_000, 3)).unwrap();
        for c in pop.swarm_sizes() {
            assert!((9_000..11_000).contains(&c), "swarm size {c}");
        }
    }

    #[test]
    fn headtail_has_a_steep_head_and_a_tail_of_tiny_swarms() {
        let pop = Population::new(spec(Popularity::Headtail, 10_000, 40_000, 5)).unwrap();
        let sizes = pop.swarm_sizes();
        let head = &sizes[..100];
        let tail = &sizes[100..];
        assert!(
            tail.iter().all(|&c| c <= 2),
            "tail swarms hold at most 2 peers"
        );
        let tail_nonempty = tail.iter().filter(|&&c| c > 0).count();
        assert!(
            tail_nonempty > 9_000,
            "most tail swarms are populated: {tail_nonempty}"
        );
        let head_peers: u32 = head.iter().sum();
        assert!(
            head_peers >= 10_000,
            "the head holds at least a quarter: {head_peers}"
        );
        assert!(
            head[0] > 5 * head[20],
            "head is steep: {} vs {}",
            head[0],
            head[20]
        );
        assert_eq!(sizes.iter().sum::<u32>(), 40_000);
    }

    #[test]
    fn headtail_with_fewer_peers_than_swarms_stays_bounded() {
        let pop = Population::new(spec(Popularity::Headtail, 10_000, 1_000, 8)).unwrap();
        let sizes = pop.swarm_sizes();
        assert_eq!(sizes.iter().sum::<u32>(), 1_000);
        assert!(sizes[100..].iter().all(|&c| c <= 2));
        assert!(sizes[..100].iter().sum::<u32>() >= 250);
        // One swarm, one peer: the degenerate population still works.
        let tiny = Population::new(spec(Popularity::Headtail, 1, 1, 8)).unwrap();
        assert_eq!(tiny.swarm_sizes(), vec![1]);
        assert!(Population::new(spec(Popularity::Uniform, 0, 1, 8)).is_err());
    }

    #[test]
    fn same_seed_same_population_and_requests() {
        let mix: Mix = "find=8,connect=1,keepalive=1".parse().unwrap();
        let a = Population::new(spec(Popularity::Zipf { s: 1.1 }, 1000, 5000, 42)).unwrap();
        let b = Population::new(spec(Popularity::Zipf { s: 1.1 }, 1000, 5000, 42)).unwrap();
        let c = Population::new(spec(Popularity::Zipf { s: 1.1 }, 1000, 5000, 43)).unwrap();
        assert_eq!(a.peer_swarm, b.peer_swarm);
        assert_eq!(a.seeder, b.seeder);
        assert_eq!(a.swarm_id(17), b.swarm_id(17));
        assert_ne!(a.swarm_id(17), c.swarm_id(17));
        assert_ne!(a.peer_swarm, c.peer_swarm);
        let mut sa = OpSource::random(42, 0, mix.clone(), None);
        let mut sb = OpSource::random(42, 0, mix.clone(), None);
        let mut s1 = OpSource::random(42, 1, mix, None);
        let va: Vec<Op> = (0..100).filter_map(|_| sa.next(&a)).collect();
        let vb: Vec<Op> = (0..100).filter_map(|_| sb.next(&b)).collect();
        let v1: Vec<Op> = (0..100).filter_map(|_| s1.next(&a)).collect();
        assert_eq!(va, vb);
        assert_ne!(va, v1, "threads draw different sequences");
    }

    #[test]
    fn ids_are_distinct_and_prefixed() {
        let pop = Population::new(spec(Popularity::Uniform, 1000, 1000, 9)).unwrap();
        let mut ids: Vec<[u8; 20]> = (0..1000).map(|s| pop.swarm_id(s)).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 1000);
        assert_eq!(&pop.peer_id(5)[..8], b"-LG0001-");
        assert_ne!(pop.peer_id(5), pop.peer_id(6));
        let mut out = Vec::new();
        pop.write_swarm_ids(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1000);
        assert!(lines
            .iter()
            .all(|l| l.len() == 40 && l.bytes().all(|b| b.is_ascii_hexdigit())));
    }

    #[test]
    fn bittorrent_identities_are_distinct_per_address_slot() {
        let mut pop = Population::new(spec(Popularity::Uniform, 10, 200_000, 1)).unwrap();
        pop.addr_slots = 4;
        let mut ids: Vec<(u32, u16)> = (0..200_000)
            .map(|p| (pop.addr_slot(p), pop.peer_port(p)))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 200_000);
        assert_eq!(pop.distinct_identities(), 256_000);
        assert!((0..200_000).all(|p| pop.peer_port(p) >= 1024));
    }

    #[test]
    fn mix_parses_and_samples_by_weight() {
        let mix: Mix = "find=9,announce=1".parse().unwrap();
        let mut rng = SmallRng::seed_from_u64(2);
        let finds = (0..10_000)
            .filter(|_| mix.sample(&mut rng) == OpKind::Find)
            .count();
        assert!((8_700..9_300).contains(&finds), "finds {finds}");
        assert!("find=0".parse::<Mix>().is_err());
        assert!("bogus=1".parse::<Mix>().is_err());
        assert!("find".parse::<Mix>().is_err());
        assert!("find=1,find=2".parse::<Mix>().is_err());
        assert_eq!(mix.to_string(), "find=9,announce=1");
    }

    #[test]
    fn sequence_source_visits_each_peer_once() {
        let pop = Population::new(spec(Popularity::Uniform, 10, 50, 1)).unwrap();
        let mut src = OpSource::Sequence {
            kind: OpKind::Connect,
            next: 10,
            end: 20,
            step: 1,
        };
        let ops: Vec<Op> = std::iter::from_fn(|| src.next(&pop)).collect();
        assert_eq!(ops.len(), 10);
        assert_eq!(ops[0].peer, 10);
        assert_eq!(ops[9].swarm, pop.swarm_of(19));
    }

    #[test]
    fn peer_states_keep_every_request_valid() {
        let mut rng = SmallRng::seed_from_u64(3);
        // Populated: everyone tracks, so a connect first makes a peer leave (churn), and the
        // next connect brings a left peer back with JOIN semantics via CONNECT.
        let mut st = PeerStates::new(10, 2, 1, true);
        assert_eq!(st.tracking(), 5);
        let (k, p) = st.pick(OpKind::Connect, &mut rng).unwrap();
        assert_eq!(k, OpKind::Leave);
        assert_eq!(p % 2, 1, "worker 1 owns odd peers");
        assert_eq!(st.tracking(), 4);
        let (k2, p2) = st.pick(OpKind::Connect, &mut rng).unwrap();
        assert_eq!((k2, p2), (OpKind::Connect, p));
        assert_eq!(st.tracking(), 5);
        // Leave then join: JOIN for a registered peer.
        let (_, p3) = st.pick(OpKind::Leave, &mut rng).unwrap();
        assert_eq!(st.pick(OpKind::Join, &mut rng).unwrap(), (OpKind::Join, p3));
        // Not populated: every peer starts unregistered, so joins are CONNECTs.
        let mut st = PeerStates::new(4, 1, 0, false);
        for _ in 0..4 {
            assert_eq!(st.pick(OpKind::Join, &mut rng).unwrap().0, OpKind::Connect);
        }
        assert_eq!(st.tracking(), 4);
        // Finds go to tracking peers.
        let mut st = PeerStates::new(1000, 1, 0, true);
        for _ in 0..10 {
            st.pick(OpKind::Leave, &mut rng).unwrap();
        }
        for _ in 0..200 {
            let (k, p) = st.pick(OpKind::Find, &mut rng).unwrap();
            assert_eq!(k, OpKind::Find);
            assert_eq!(st.state[p as usize], TRACKING);
        }
    }

    #[test]
    fn popularity_parses() {
        assert_eq!(
            "uniform".parse::<Popularity>().unwrap(),
            Popularity::Uniform
        );
        assert_eq!(
            "zipf:1.2".parse::<Popularity>().unwrap(),
            Popularity::Zipf { s: 1.2 }
        );
        assert!("zipf:-1".parse::<Popularity>().is_err());
        assert!("pareto".parse::<Popularity>().is_err());
    }
}
