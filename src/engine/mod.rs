//! The tracker engine: swarm and peer-status tables, the RFC 7846 peer state machine, peer
//! selection, expiry and limits.
//!
//! The engine is sans-IO. Front-ends decode bytes into a [`Request`], call [`Engine::handle`]
//! with the current [`Time`], and encode the returned [`Response`]. The runtime calls
//! [`Engine::expire`] periodically with a work budget so that expiry never stalls requests.
//! Nothing here knows about sockets, JSON or HTTP.

mod announce;
mod audit;
mod bt_table;
mod budget;
mod chunked;
mod config;
mod line_index;
mod member;
mod prefetch;
mod requests;
mod select;
mod snapshot;
mod swarm_list;
mod tables;
#[cfg(test)]
mod tests;
mod types;

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam::utils::CachePadded;
use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::SeedableRng;

pub use announce::{
    bt_peer_addr, bt_peer_id, canonical_ip, BtPrefetch, BtUse, CompactPeers, Family, ListFamilies,
    BT_PEER_ID_PREFIX_V4, BT_PEER_ID_PREFIX_V6, PREFETCH_MIN_SWARMS,
};
pub use audit::{MemoryEstimate, MEMBER_ENTRY_BYTES};
pub use bt_table::{InfoHash, COMPACT_V4_LEN, COMPACT_V6_LEN, INFO_HASH_LEN};
pub use config::EngineConfig;
pub use prefetch::PpstpPrefetch;
pub use snapshot::{AddrEntry, ImportReport, Registration, SwarmCompletions};
pub use types::*;

use bt_table::BtShard;
use member::StoredId;
use select::Pick;
use smallvec::SmallVec;
use tables::{Member, PeerRecord, PeerShard, Swarm, SwarmShard, SwarmTable, NIL};

/// Picks of one request (handles and modes), on the stack for ordinary peer counts.
type Picks = SmallVec<[Pick; 256]>;

/// Peer-list vectors taken from a previous answer, handed out again (cleared) to the lists of
/// the next one.
struct Lists(SmallVec<[Vec<PeerInfo>; 4]>);

impl Lists {
    /// Turns `response` into an empty answer to fill, in place (its swarm-result vector kept,
    /// cleared; a `Response` is a few hundred bytes, so it is not moved out and back), and
    /// returns the peer lists it held.
    /// `None` never happens (the response is made an answer first).
    fn reuse(response: &mut Response) -> Option<(&mut Answer, Lists)> {
        if !matches!(response, Response::Ok(_)) {
            *response = Response::Ok(Answer::default());
        }
        let Response::Ok(answer) = response else {
            return None;
        };
        answer.reflexive = None;
        answer.stat = None;
        let mut lists = Lists(SmallVec::new());
        for r in &mut answer.swarm_results {
            if let Some(list) = r.peers.take() {
                lists.0.push(list);
            }
        }
        answer.swarm_results.clear();
        Some((answer, lists))
    }

    /// An empty vector, with the capacity of a previous answer's list when there is one.
    fn take(&mut self) -> Vec<PeerInfo> {
        let mut list = self.0.pop().unwrap_or_default();
        list.clear();
        list
    }
}

/// Sizes of the tables, for metrics and status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableCounts {
    pub peers: usize,
    pub swarms: usize,
    /// Sum over swarms of their member counts.
    pub memberships: usize,
    pub seeders: usize,
    pub leechers: usize,
}

/// One swarm's size, as listed by [`Engine::top_swarms`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwarmSummary {
    pub swarm_id: SwarmId,
    pub seeders: usize,
    pub leechers: usize,
}

impl SwarmSummary {
    /// Seeders plus leechers.
    pub fn peers(&self) -> usize {
        self.seeders + self.leechers
    }
}

/// What one expiry step did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExpiryReport {
    /// Peers looked at in this step.
    pub examined: usize,
    /// Registrations deleted because their init or track timer ran out.
    pub expired: usize,
}

/// Records examined under one peer-shard lock in an expiry step.
const EXPIRY_BATCH: usize = 256;

/// The engine: shared by every worker thread (`Send + Sync`).
///
/// # Tables and locking
///
/// Two sharded tables (see `tables.rs`): `config.shards` swarm shards chosen by a foldhash of the
/// swarm id, and as many peer shards (the peer-status registry) chosen by a foldhash of the peer
/// id, each behind its own `parking_lot::Mutex`. The lock order is always **peer shard, then
/// swarm shard**, and a thread **never holds two swarm-shard locks, nor two peer-shard locks, at
/// once**: so no deadlock is possible. Every change of membership happens while the peer's shard
/// lock is held, and a peer is taken out of its swarms before its record is deleted, so at any
/// moment every member of a swarm is a registered peer that lists that swarm (the audit checks
/// this). A peer list is chosen under the swarm's lock as memberships (never the requester's),
/// each a handle and a copy of the peer's entry (`member.rs`); after every lock is released the
/// entries are written from the copies, and the few peers whose copy is incomplete are read
/// from their records, one peer-shard lock at a time (a handle whose record left meanwhile is
/// dropped from the list).
///
/// The global peer and swarm counts behind `max_peers` and `max_swarms` are atomics, touched
/// only when a peer registers or leaves for good or a swarm is created or deleted; the member
/// counts live in the swarm shards and are summed by [`Engine::counts`].
pub struct Engine {
    /// The effective configuration (limits clamped to what the tables can represent).
    config: EngineConfig,
    swarm_shards: Box<[CachePadded<Mutex<SwarmShard>>]>,
    peer_shards: Box<[CachePadded<Mutex<PeerShard>>]>,
    /// The BitTorrent table (`bt_table.rs`): its own shards, chosen by the high half of a
    /// seeded foldhash of the info-hash (keys come from the network).
    bt_shards: Box<[CachePadded<Mutex<BtShard>>]>,
    swarm_hasher: foldhash::fast::RandomState,
    peer_hasher: foldhash::fast::RandomState,
    bt_hasher: foldhash::fast::RandomState,
    /// Where each swarm shard's and peer shard's id index keeps its buckets, for
    /// [`Engine::prefetch_buckets`] (read without the shard's lock).
    swarm_geometry: Box<[Arc<line_index::Geometry>]>,
    peer_geometry: Box<[Arc<line_index::Geometry>]>,
    /// Where each BitTorrent shard's swarm index keeps its buckets, for the first step of a
    /// staged prefetch (`Engine::prefetch_bt_index_line`, read without the shard's lock).
    bt_geometry: Box<[Arc<line_index::Geometry>]>,
    /// PPSTP registrations plus BitTorrent memberships (what `max_peers` bounds).
    peers: CachePadded<AtomicUsize>,
    /// Swarms of both tables (what `max_swarms` bounds).
    swarms: CachePadded<AtomicUsize>,
    /// Swarms of the BitTorrent table.
    bt_swarms: CachePadded<AtomicUsize>,
    /// Which peer shard the next expiry step starts with.
    expiry_shard: CachePadded<AtomicUsize>,
    /// Registered PPSTP peers and BitTorrent members per source address
    /// (`max_peers_per_source`).
    sources: budget::SourceCounts,
}

impl Engine {
    pub fn new(config: &EngineConfig) -> Self {
        let mut config = config.clone();
        config.shards = config.shards.clamp(1, usize::from(u16::MAX));
        config.max_id_len = config.max_id_len.min(MAX_ID_BYTES);
        config.max_peers_per_swarm = config.max_peers_per_swarm.min(tables::MAX_SWARM_MEMBERS);
        config.max_peers = config.max_peers.min(u32::MAX as usize);
        // Picks are numbered with 16 bits while a peer list is resolved.
        config.max_peer_count = config.max_peer_count.min(u32::from(u16::MAX));
        config.default_peer_count = config.default_peer_count.min(config.max_peer_count);
        let swarm_hasher = foldhash::fast::RandomState::default();
        let swarm_geometry: Box<[Arc<line_index::Geometry>]> =
            (0..config.shards).map(|_| Arc::default()).collect();
        let peer_geometry: Box<[Arc<line_index::Geometry>]> =
            (0..config.shards).map(|_| Arc::default()).collect();
        let swarm_shards = swarm_geometry
            .iter()
            .enumerate()
            .map(|(i, geometry)| {
                CachePadded::new(Mutex::new(SwarmShard {
                    swarms: SwarmTable::new(swarm_hasher, geometry.clone()),
                    rng: SmallRng::seed_from_u64(0x5157_4152_4d00 ^ i as u64),
                    seeders: 0,
                    leechers: 0,
                }))
            })
            .collect();
        let max_timer = config.init_timer_secs.max(config.track_timer_secs);
        let peer_hasher = foldhash::fast::RandomState::default();
        let peer_shards = peer_geometry
            .iter()
            .enumerate()
            .map(|(i, geometry)| {
                CachePadded::new(Mutex::new(PeerShard::new(
                    i as u16,
                    max_timer,
                    peer_hasher,
                    geometry.clone(),
                )))
            })
            .collect();
        let bt_geometry: Box<[Arc<line_index::Geometry>]> =
            (0..config.shards).map(|_| Arc::default()).collect();
        let bt_shards = bt_geometry
            .iter()
            .enumerate()
            .map(|(i, geometry)| {
                CachePadded::new(Mutex::new(BtShard::new(
                    SmallRng::seed_from_u64(0x4254_5357_4152_4d00 ^ i as u64),
                    geometry.clone(),
                )))
            })
            .collect();
        Engine {
            config,
            swarm_shards,
            peer_shards,
            bt_shards,
            swarm_hasher,
            peer_hasher,
            bt_hasher: Default::default(),
            swarm_geometry,
            peer_geometry,
            bt_geometry,
            peers: CachePadded::new(AtomicUsize::new(0)),
            swarms: CachePadded::new(AtomicUsize::new(0)),
            bt_swarms: CachePadded::new(AtomicUsize::new(0)),
            expiry_shard: CachePadded::new(AtomicUsize::new(0)),
            sources: budget::SourceCounts::new(),
        }
    }

    /// Starts loading the index buckets that a PPSTP request's lookups read first: the one of
    /// the requester's id in its peer shard and, with `swarm`, the one of the swarm's id (its
    /// hash, [`Engine::swarm_loc`]) in its swarm shard. Called before the peer's lock is taken,
    /// so that the two buckets' cache misses overlap each other (and the lock) instead of
    /// following one another. Reads only the published bucket addresses
    /// ([`line_index::Geometry`]), takes no lock, and changes nothing; nothing while the
    /// tables are small enough to stay in cache ([`PREFETCH_MIN_SWARMS`] entries).
    /// Returns whether it did (the tables are large).
    #[inline]
    fn prefetch_buckets(&self, peer: (usize, u64), swarm: Option<(usize, u64)>) -> bool {
        let big = |n: &AtomicUsize| n.load(Ordering::Relaxed) >= PREFETCH_MIN_SWARMS;
        if !big(&self.peers) && !big(&self.swarms) {
            return false;
        }
        if let Some(g) = self.peer_geometry.get(peer.0) {
            g.prefetch(peer.1);
        }
        if let Some((shard, h)) = swarm {
            if let Some(g) = self.swarm_geometry.get(shard) {
                g.prefetch(h);
            }
        }
        true
    }

    /// The number of the PPSTP swarm shard (`0..config().shards`) that holds swarm `id`, for
    /// callers that give each thread its own shards (benchmarks of threads that share no
    /// lock). Stable for the engine's lifetime; differs between engines (the hash is seeded).
    pub fn swarm_shard_of(&self, id: &SwarmId) -> usize {
        self.swarm_shard_no(id)
    }

    /// The number of the peer shard (`0..config().shards`) that holds the registration of
    /// peer `id` (see [`Engine::swarm_shard_of`]).
    pub fn peer_shard_of(&self, id: &PeerId) -> usize {
        self.peer_loc(id).0
    }

    /// The effective configuration: the one given to [`Engine::new`] with limits clamped to
    /// what the tables can represent.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Applies one request at time `now` and returns the answer. Never panics on any input.
    ///
    /// Request-level errors (the whole request refused, nothing changed): 01 for an id longer
    /// than `max_id_len` or a list over its limit, 03 for a peer id that is not registered (or
    /// is registered from another source IP, or a CONNECT action set that RFC 7846 Table 6
    /// forbids in the peer's state), 05 when a new registration would exceed `max_peers`.
    /// Per-swarm outcomes of CONNECT and STAT_REPORT are in each `SwarmResult`; the one-swarm
    /// requests JOIN, LEAVE and JOIN_CHUNK answer their swarm's error as the request's error.
    pub fn handle(&self, request: &Request, now: Time) -> Response {
        let mut response = Response::Err(ErrorCode::Ok);
        self.handle_into(request, now, &mut response);
        response
    }

    /// As [`Engine::handle`], writing the answer into `response` and reusing the vectors of the
    /// answer it held (its swarm results and peer lists), so that a caller keeping one
    /// `Response` per worker serves CONNECT, FIND and JOIN without allocating in steady state.
    pub fn handle_into(&self, request: &Request, now: Time, response: &mut Response) {
        if !self.id_ok(&request.peer_id.0) {
            *response = Response::Err(ErrorCode::BadRequest);
            return;
        }
        let reusing = matches!(
            request.kind,
            RequestKind::Connect { .. } | RequestKind::Find { .. } | RequestKind::Join { .. }
        );
        if reusing {
            let Some((answer, mut lists)) = Lists::reuse(response) else {
                *response = Response::Err(ErrorCode::InternalError);
                return;
            };
            let result = match &request.kind {
                RequestKind::Connect {
                    peer_num,
                    addrs,
                    actions,
                } => self.connect(
                    request,
                    peer_num.as_ref(),
                    addrs,
                    actions,
                    now,
                    answer,
                    &mut lists,
                ),
                RequestKind::Find {
                    swarm_id,
                    peer_num,
                    chunks,
                } => self.find(
                    request,
                    swarm_id,
                    peer_num.as_ref(),
                    chunks,
                    now,
                    answer,
                    &mut lists,
                ),
                RequestKind::Join {
                    swarm_id,
                    mode,
                    peer_num,
                } => self.join(
                    request,
                    *swarm_id,
                    *mode,
                    peer_num.as_ref(),
                    now,
                    answer,
                    &mut lists,
                ),
                _ => Err(ErrorCode::InternalError),
            };
            // On success the answer is already in `response`.
            if let Err(code) = result {
                *response = Response::Err(code);
            }
            return;
        }
        let result = match &request.kind {
            RequestKind::StatReport { stats } => self.stat_report(request, stats, now),
            RequestKind::Leave { swarm_id } => match bt_peer_addr(&request.peer_id) {
                Some(addr) => self.bt_leave_request(request, addr, swarm_id, now),
                None => self.leave(request, *swarm_id, now),
            },
            RequestKind::Disconnect { scope } => self.disconnect(request, *scope, now),
            RequestKind::Keepalive => {
                self.with_registered(request, now, |_, _| Ok(Answer::default()))
            }
            RequestKind::JoinChunk { swarm_id, chunks } => {
                self.join_chunk(request, *swarm_id, chunks, now)
            }
            RequestKind::StatQuery { target } => self.stat_query(request, *target, now),
            RequestKind::Announce { .. } => self.announce_answer(request, now),
            RequestKind::Connect { .. } | RequestKind::Find { .. } | RequestKind::Join { .. } => {
                Err(ErrorCode::InternalError)
            }
        };
        *response = match result {
            Ok(answer) => Response::Ok(answer),
            Err(code) => Response::Err(code),
        };
    }

    /// Examines about `budget` registrations and BitTorrent members and deletes those whose
    /// timer ran out by `now` (PPSTP: deadline strictly before `now`; BitTorrent: last
    /// announce more than the track timer ago, in whole seconds), taking PPSTP peers out of
    /// their swarms first.
    ///
    /// Walks every shard, starting where the previous call stopped (a shared atomic picks the
    /// first shard), holding one shard's lock for at most [`EXPIRY_BATCH`] entries. In a PPSTP
    /// shard only the time buckets that are due are walked (each record is listed in the
    /// bucket of its deadline; a bucket is walked to its end once, the bucket of `now` again
    /// at each step), so a step costs what is due, not the table's size. Several threads may
    /// call it concurrently; there is never a whole-table pass. A server's workers use
    /// [`Engine::expire_owned`] instead.
    pub fn expire(&self, now: Time, budget: usize) -> ExpiryReport {
        let shards = self.peer_shards.len();
        let start = self.expiry_shard.fetch_add(1, Ordering::Relaxed);
        self.expire_shards(&mut (0..shards).map(|i| (start + i) % shards), now, budget)
    }

    /// One expiry step of worker `worker` of `workers`: only the shards it owns (shard `s` is
    /// owned by worker `s % workers`), so no two workers ever expire the same shard and a
    /// shard's bucket walk is advanced by one thread only (`cursor`, kept by the worker, picks
    /// the first owned shard of the step). Examines
    /// about `budget` entries, as [`Engine::expire`].
    pub fn expire_owned(
        &self,
        worker: usize,
        workers: usize,
        cursor: &mut usize,
        now: Time,
        budget: usize,
    ) -> ExpiryReport {
        let workers = workers.max(1);
        let shards = self.peer_shards.len();
        let owned = (shards + workers - 1 - worker % workers) / workers;
        if owned == 0 {
            return ExpiryReport::default();
        }
        let first = *cursor % owned;
        *cursor = first + 1;
        let mut order = (0..owned).map(|i| ((first + i) % owned) * workers + worker % workers);
        self.expire_shards(&mut order, now, budget)
    }

    /// Expires the PPSTP and BitTorrent shards numbered by `order`, about `budget` entries.
    fn expire_shards(
        &self,
        order: &mut dyn Iterator<Item = usize>,
        now: Time,
        budget: usize,
    ) -> ExpiryReport {
        let mut report = ExpiryReport::default();
        for s in order {
            let remaining = budget.saturating_sub(report.examined);
            if remaining == 0 {
                break;
            }
            let (examined, expired) = self.expire_peer_shard(s, now, remaining.div_ceil(2));
            report.examined += examined;
            report.expired += expired;
            let remaining = budget.saturating_sub(report.examined);
            let bt = self.expire_bt(&mut std::iter::once(s), now, remaining.max(1));
            report.examined += bt.examined;
            report.expired += bt.expired;
        }
        report
    }

    /// Examines at most `max` (and [`EXPIRY_BATCH`]) records of PPSTP peer shard `s`: the
    /// lists of the time buckets that are due (every bucket before the one of `now` walked to
    /// its end once, the bucket of `now` from its head); returns (examined, expired).
    fn expire_peer_shard(&self, s: usize, now: Time, max: usize) -> (usize, usize) {
        let Some(lock) = self.peer_shards.get(s) else {
            return (0, 0);
        };
        let mut guard = lock.lock();
        let shard = &mut *guard;
        let batch = max.min(EXPIRY_BATCH);
        let (mut looked, mut expired) = (0, 0);
        let now_bucket = shard.bucket_of(now);
        let ring = shard.ring_len();
        if shard.next_bucket == u64::MAX || shard.next_bucket.saturating_add(ring) <= now_bucket {
            // First step, or far behind: every list is one of the last `ring` buckets.
            shard.next_bucket = (now_bucket + 1).saturating_sub(ring);
            shard.walk = NIL;
        }
        while looked < batch && shard.next_bucket <= now_bucket {
            let bucket = shard.next_bucket;
            let mut cur = if shard.walk == NIL {
                shard.head((bucket % ring) as usize)
            } else {
                shard.walk
            };
            while cur != NIL && looked < batch {
                looked += 1;
                let next = shard.next_of(cur);
                shard.walk = next;
                let pos = cur as usize;
                let due = shard.records.get(pos).is_some_and(|r| r.deadline < now);
                if due {
                    let key = shard.key_at(pos);
                    if let Some(record) = shard.records.get_mut(pos) {
                        self.leave_all(record, key);
                    }
                    // The last record may move into `pos`; the walk follows it (remove_at).
                    self.remove_record(shard, pos);
                    expired += 1;
                } else {
                    shard.refile(pos);
                }
                cur = shard.walk;
            }
            if cur != NIL {
                break;
            }
            shard.walk = NIL;
            if bucket == now_bucket {
                // The bucket of `now` is walked again from its head by the next step.
                break;
            }
            shard.next_bucket = bucket + 1;
        }
        (looked, expired)
    }

    /// Deletes the record at `pos` of `shard` (already out of every swarm), re-keys the
    /// memberships of the record that moves into its place, and releases its budget.
    fn remove_record(&self, shard: &mut PeerShard, pos: usize) -> Option<PeerRecord> {
        let (gone, moved) = shard.remove_at(pos)?;
        if let Some((old, new)) = moved {
            if let Some(record) = shard.records.get(pos) {
                for (shard_no, slot, mode) in record.swarms.iter() {
                    let Some(lock) = self.swarm_shards.get(usize::from(shard_no)) else {
                        continue;
                    };
                    if let Some(swarm) = lock.lock().swarms.at_mut(slot) {
                        swarm.rekey(old, new, mode);
                    }
                }
            }
        }
        self.release_peer(gone.source_ip());
        Some(gone)
    }

    /// Current table sizes. Peers and swarms are read from atomics; member counts are summed
    /// over the swarm shards (one short lock each).
    pub fn counts(&self) -> TableCounts {
        let mut counts = TableCounts {
            peers: self.peers.load(Ordering::Relaxed),
            swarms: self.swarms.load(Ordering::Relaxed),
            ..TableCounts::default()
        };
        for shard in self.swarm_shards.iter() {
            let shard = shard.lock();
            counts.seeders += shard.seeders;
            counts.leechers += shard.leechers;
        }
        for shard in self.bt_shards.iter() {
            let shard = shard.lock();
            counts.seeders += shard.seeders;
            counts.leechers += shard.leechers;
        }
        counts.memberships = counts.seeders + counts.leechers;
        counts
    }

    /// The `n` swarms with the most members, largest first (ties by swarm id), for the stats
    /// page; the PPSTP and BitTorrent parts of a swarm id are listed apart. Walks every swarm
    /// shard of both tables once, holding one shard's lock at a time; keeps at most
    /// `n` entries, so memory is O(n) whatever the table size. Meant for operators' requests,
    /// not the hot path: O(swarms * log n).
    pub fn top_swarms(&self, n: usize) -> Vec<SwarmSummary> {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        if n == 0 {
            return Vec::new();
        }
        // A min-heap of the best `n` so far, keyed by (members, reversed id) so that the
        // smallest (and, among equals, the largest id) is evicted first.
        type Entry = (usize, Reverse<SwarmId>, usize, usize);
        let mut best: BinaryHeap<Reverse<Entry>> = BinaryHeap::with_capacity(n + 1);
        for shard in self.swarm_shards.iter() {
            let shard = shard.lock();
            for (_, id, swarm) in shard.swarms.iter() {
                let seeders = swarm.count(PeerMode::Seeder);
                let leechers = swarm.count(PeerMode::Leech);
                best.push(Reverse((
                    seeders + leechers,
                    Reverse(id),
                    seeders,
                    leechers,
                )));
                if best.len() > n {
                    best.pop();
                }
            }
        }
        for shard in self.bt_shards.iter() {
            let shard = shard.lock();
            for swarm in shard.swarm_refs() {
                let Ok(id) = SwarmId::new(&swarm.swarm.info_hash) else {
                    continue;
                };
                let seeders = swarm.count(PeerMode::Seeder);
                let leechers = swarm.count(PeerMode::Leech);
                best.push(Reverse((
                    seeders + leechers,
                    Reverse(id),
                    seeders,
                    leechers,
                )));
                if best.len() > n {
                    best.pop();
                }
            }
        }
        let mut out: Vec<SwarmSummary> = best
            .into_iter()
            .map(
                |Reverse((_, Reverse(swarm_id), seeders, leechers))| SwarmSummary {
                    swarm_id,
                    seeders,
                    leechers,
                },
            )
            .collect();
        out.sort_by(|a, b| b.peers().cmp(&a.peers()).then(a.swarm_id.cmp(&b.swarm_id)));
        out
    }

    // ---- helpers shared by the request handlers ----

    /// LEAVE of a BitTorrent peer (named by its [`bt_peer_id`]): 03 when the id names another
    /// source IP or the peer is not in the swarm, 01 for a swarm id that is not an info-hash.
    fn bt_leave_request(
        &self,
        request: &Request,
        addr: std::net::SocketAddr,
        swarm_id: &SwarmId,
        now: Time,
    ) -> Result<Answer, ErrorCode> {
        let info_hash: InfoHash = swarm_id
            .as_bytes()
            .try_into()
            .map_err(|_| ErrorCode::BadRequest)?;
        if addr.ip() != source_ip(request) {
            return Err(ErrorCode::Forbidden);
        }
        if !self.bt_leave(&info_hash, addr, now) {
            return Err(ErrorCode::Forbidden);
        }
        Ok(Answer {
            swarm_results: vec![SwarmResult::failed(*swarm_id, ErrorCode::Ok)],
            ..Answer::default()
        })
    }

    /// The ids and modes of the swarms in `list`, in order, as an iterator that allocates
    /// nothing (one short swarm-shard lock per item, released before it is yielded; the caller
    /// holds the peer's shard lock while iterating, so the slots are the swarms'). Not the hot
    /// path.
    fn swarm_ids_of<'a>(
        &'a self,
        list: &'a swarm_list::SwarmList<tables::RecordExtra>,
    ) -> impl Iterator<Item = (SwarmId, PeerMode)> + 'a {
        list.iter().filter_map(|(shard_no, slot, mode)| {
            let lock = self.swarm_shards.get(usize::from(shard_no))?;
            let id = lock.lock().swarms.id_at(slot)?;
            Some((id, mode))
        })
    }

    /// Rewrites the peer's membership copies in every swarm of `list` (its addresses changed).
    /// The caller holds the peer's shard lock.
    fn refresh_memberships(
        &self,
        list: &swarm_list::SwarmList<tables::RecordExtra>,
        member: Member,
    ) {
        for (shard_no, slot, mode) in list.iter() {
            if let Some(lock) = self.swarm_shards.get(usize::from(shard_no)) {
                if let Some(swarm) = lock.lock().swarms.at_mut(slot) {
                    swarm.refresh(member, mode);
                }
            }
        }
    }

    /// Statistics of the PPSTP part of a swarm (all zero for an unknown swarm).
    fn ppstp_swarm_stats(&self, swarm_id: &SwarmId) -> SwarmStats {
        let shard = self.swarm_shard(swarm_id).lock();
        shard
            .swarms
            .get(swarm_id)
            .map(|s| s.stats())
            .unwrap_or_default()
    }

    fn id_ok(&self, id: &IdBytes) -> bool {
        !id.is_empty() && id.len() <= self.config.max_id_len
    }

    /// The number of the swarm shard of `id`.
    fn swarm_shard_no(&self, id: &SwarmId) -> usize {
        self.swarm_loc(id).0
    }

    /// The number of the swarm shard of `id` and the id's hash, which the shard's table takes
    /// too. The shard comes from bits 40 and up, the table's buckets from the low bits.
    fn swarm_loc(&self, id: &SwarmId) -> (usize, u64) {
        let h = self.swarm_hasher.hash_one(id.as_bytes());
        // `shards >= 1`, and the index is reduced modulo the length.
        (((h >> 40) % self.swarm_shards.len() as u64) as usize, h)
    }

    fn swarm_shard(&self, id: &SwarmId) -> &Mutex<SwarmShard> {
        &self.swarm_shards[self.swarm_shard_no(id)]
    }

    fn peer_shard(&self, id: &PeerId) -> &Mutex<PeerShard> {
        &self.peer_shards[self.peer_loc(id).0]
    }

    /// Where peer `id` is registered: the number of its peer shard, its stored form
    /// (`member.rs`) and that form's hash, which the shard's index takes too
    /// ([`PeerShard::find_stored`]): a lookup packs and hashes the id once. The shard comes
    /// from bits 40 and up, the index's buckets from the low bits.
    fn peer_loc(&self, id: &PeerId) -> (usize, StoredId, u64) {
        let stored = StoredId::pack(id.as_bytes());
        let h = self.peer_hasher.hash_one(stored.bytes());
        // `shards >= 1`, and the index is reduced modulo the length.
        let shard = ((h >> 40) % self.peer_shards.len() as u64) as usize;
        (shard, stored, h)
    }

    /// Peer-list size for a request: `peer_count` if given, else the default; capped.
    fn peer_count(&self, peer_num: Option<&PeerNum>) -> usize {
        peer_num
            .and_then(|p| p.peer_count)
            .unwrap_or(self.config.default_peer_count)
            .min(self.config.max_peer_count) as usize
    }

    /// Sets the state from the peer's swarms and restarts the matching timer: TRACKING (track
    /// timer) while it is in a swarm, PEER REGISTERED (init timer) otherwise. Moves the record
    /// to the time bucket of its new deadline.
    fn rearm(&self, shard: &mut PeerShard, pos: usize, now: Time) {
        let Some(record) = shard.records.get_mut(pos) else {
            return;
        };
        let (state, secs) = if record.swarms.is_empty() {
            (PeerState::PeerRegistered, self.config.init_timer_secs)
        } else {
            (PeerState::Tracking, self.config.track_timer_secs)
        };
        record.state = state;
        shard.set_deadline(pos, now.saturating_add_millis(secs.saturating_mul(1000)));
    }

    /// Runs `f` on the requester's registration and then re-arms its timer: any request that
    /// passes the registration and source-address check proves the peer alive. 03 when the peer
    /// id is not registered or was registered from another IP (nothing is changed then).
    /// Returns `f`'s result and the picks it made, which the caller resolves once the lock is
    /// released.
    fn with_registered<R>(
        &self,
        request: &Request,
        now: Time,
        f: impl FnOnce(&mut PeerRecord, Member) -> Result<R, ErrorCode>,
    ) -> Result<R, ErrorCode> {
        self.with_registered_in(request, None, false, now, |record, member, _| {
            f(record, member)
        })
    }

    /// As [`Engine::with_registered`] for a request about one swarm, whose shard and id hash
    /// ([`Engine::swarm_loc`]) are `swarm`: `f` also gets that swarm shard, locked after the
    /// peer's (the engine's lock order). The lookups overlap their cache misses in stages
    /// (when the tables are large, [`Engine::prefetch_buckets`]): both index buckets are
    /// prefetched before any lock is taken; once the locks are held, the record and the swarm
    /// slot the buckets most likely name are prefetched together; only then are they looked
    /// up for real. A JOIN then waits for about three misses in a row (buckets, record and
    /// slot, member vector) instead of seven.
    ///
    /// With `copy`, the membership `f` gets carries the copy of the peer's peer-list entry
    /// ([`PeerShard::member_at`], for a request that may add the peer to a swarm); without,
    /// only its handle ([`Member::keyed`]: what a request that lists, leaves or reports
    /// reads), which spares building the copy.
    fn with_registered_in<R>(
        &self,
        request: &Request,
        swarm: Option<(usize, u64)>,
        copy: bool,
        now: Time,
        f: impl FnOnce(&mut PeerRecord, Member, Option<&mut SwarmShard>) -> Result<R, ErrorCode>,
    ) -> Result<R, ErrorCode> {
        let (shard_no, stored, h) = self.peer_loc(&request.peer_id);
        let staged = self.prefetch_buckets((shard_no, h), swarm);
        let mut guard = self.peer_shards[shard_no].lock();
        let shard = &mut *guard;
        if staged {
            shard.prefetch_probable(h);
        }
        let mut swarm_guard = swarm.and_then(|(s, hs)| {
            let g = self.swarm_shards.get(s)?.lock();
            if staged {
                g.swarms.prefetch_probable(hs);
            }
            Some(g)
        });
        let pos = shard.find_stored(&stored, h).ok_or(ErrorCode::Forbidden)?;
        let member = if copy {
            shard.member_at(pos)
        } else {
            Member::keyed(shard.key_at(pos))
        };
        let record = shard.records.get_mut(pos).ok_or(ErrorCode::InternalError)?;
        if record.source_ip() != source_ip(request) {
            return Err(ErrorCode::Forbidden);
        }
        let out = f(record, member, swarm_guard.as_deref_mut());
        drop(swarm_guard);
        self.rearm(shard, pos, now);
        out
    }

    /// Turns picks into peer list entries appended to `out`: from the membership's copy when
    /// it is complete (`member.rs`), else from the chosen peer's record (no other lock held).
    /// Picks come in runs of one mode (seeders first for a leecher); within a run, the
    /// complete copies are written first, then the picks of one peer shard are read under one
    /// lock, shard after shard in the order they first appear, so the runs keep their order
    /// and each entry is written once. A pick read from a record that left meanwhile is
    /// dropped; a copy is what the swarm held when the list was chosen.
    ///
    /// Returns whether any entry was read from a record (none was when every copy was
    /// complete).
    fn resolve(&self, picks: &[Pick], out: &mut Vec<PeerInfo>) -> bool {
        out.reserve(picks.len());
        // The usual case: every copy is complete, so the entries are written in pick order
        // with no record to read (what the general path below does then too), each built in
        // its place in `out` (a mapped slice iterator has an exact length).
        if picks.iter().all(|(m, _)| m.is_complete()) {
            out.extend(picks.iter().map(|&(m, mode)| m.entry(mode)));
            return false;
        }
        let mut done: SmallVec<[bool; 256]> = smallvec::smallvec![false; picks.len()];
        let mut run = 0;
        while let Some(&(_, mode)) = picks.get(run) {
            let end = run
                + picks
                    .get(run..)
                    .map_or(0, |p| p.iter().take_while(|p| p.1 == mode).count());
            for (pick, d) in picks
                .get(run..end)
                .unwrap_or(&[])
                .iter()
                .zip(done.get_mut(run..end).unwrap_or(&mut []))
            {
                if let Some(info) = pick.0.peer_info(mode) {
                    out.push(info);
                    *d = true;
                }
            }
            for i in run..end {
                if done.get(i).copied().unwrap_or(true) {
                    continue;
                }
                let Some(&(Member { key, .. }, _)) = picks.get(i) else {
                    break;
                };
                let shard_no = PeerShard::split_key(key).0;
                let Some(lock) = self.peer_shards.get(shard_no) else {
                    continue;
                };
                // The group: the run's picks in this shard not read yet, found by one scan.
                let mut group: SmallVec<[u64; 256]> = SmallVec::new();
                for j in i..end {
                    let (Some(&(Member { key, .. }, _)), Some(d)) = (picks.get(j), done.get_mut(j))
                    else {
                        break;
                    };
                    if !*d && PeerShard::split_key(key).0 == shard_no {
                        *d = true;
                        group.push(key);
                    }
                }
                let shard = lock.lock();
                // The group's records, then their ids, are first read in passes whose loads do
                // not depend on each other, so that their cache misses overlap (a large table
                // is far beyond the caches) instead of following one another.
                let mut warm = 0u32;
                for &key in &group {
                    warm ^= shard.by_key(key).map_or(0, |r| u32::from(r.port));
                }
                for &key in &group {
                    if let Some(r) = shard.by_key(key) {
                        warm ^= u32::from(shard.id_of(r).first().copied().unwrap_or(0));
                    }
                }
                std::hint::black_box(warm);
                for &key in &group {
                    if let Some(record) = shard.by_key(key) {
                        out.push(shard.peer_info_of(record, mode));
                    }
                }
            }
            run = end;
        }
        true
    }

    /// Adds the peer to a swarm (or changes its mode there) and, with `list`, chooses that many
    /// peers of it into `picks` (the caller resolves them once its locks are released). The
    /// caller holds the peer's shard lock. Returns the swarm's result code and, with `list` and
    /// success, the range of `picks` chosen.
    ///
    /// Per-swarm errors: 01 when the peer is already in `max_swarms_per_peer` swarms, 05 when
    /// the swarm is full (`max_peers_per_swarm`) or a new swarm would exceed `max_swarms`.
    /// Joining a swarm the peer is already in is a success that sets the new mode.
    fn join_swarm(
        &self,
        record: &mut PeerRecord,
        member: Member,
        swarm_id: SwarmId,
        mode: PeerMode,
        list: Option<usize>,
        picks: &mut Picks,
    ) -> (ErrorCode, Option<std::ops::Range<usize>>) {
        let loc = self.swarm_loc(&swarm_id);
        let mut guard = self.swarm_shards[loc.0].lock();
        self.join_swarm_locked(record, member, loc, &mut guard, swarm_id, mode, list, picks)
    }

    /// As [`Engine::join_swarm`], with the swarm's shard (`shard`; its number and the id's
    /// hash in `loc`, see [`Engine::swarm_loc`]) already locked by the caller.
    #[allow(clippy::too_many_arguments)]
    fn join_swarm_locked(
        &self,
        record: &mut PeerRecord,
        member: Member,
        loc: (usize, u64),
        shard: &mut SwarmShard,
        swarm_id: SwarmId,
        mode: PeerMode,
        list: Option<usize>,
        picks: &mut Picks,
    ) -> (ErrorCode, Option<std::ops::Range<usize>>) {
        let (result, slot) = self.enter_swarm(record, member, loc, shard, swarm_id, mode);
        if result != ErrorCode::Ok {
            return (result, None);
        }
        let range = list.map(|count| {
            let start = picks.len();
            if let Some(swarm) = slot.and_then(|slot| shard.swarms.at(slot)) {
                select::peer_list_into(
                    swarm,
                    member.key,
                    Some(mode),
                    count,
                    &[],
                    &mut shard.rng,
                    picks,
                );
            }
            start..picks.len()
        });
        (ErrorCode::Ok, range)
    }

    /// The membership part of [`Engine::join_swarm`], with the swarm's shard (`shard`; its
    /// number and the id's hash in `loc`, see [`Engine::swarm_loc`]) already locked by the
    /// caller (who also holds the peer's shard lock; `member` is the peer's membership,
    /// [`PeerShard::member_at`]). Returns the swarm's error code and, on success, the swarm's
    /// slot; nothing changes on error.
    fn enter_swarm(
        &self,
        record: &mut PeerRecord,
        member: Member,
        loc: (usize, u64),
        shard: &mut SwarmShard,
        swarm_id: SwarmId,
        mode: PeerMode,
    ) -> (ErrorCode, Option<u32>) {
        let (shard_no, h) = (loc.0 as u16, loc.1);
        let key = member.key;
        let slot = shard.swarms.slot_of_hashed(h, &swarm_id);
        let current = slot.and_then(|slot| record.swarms.mode_at(shard_no, slot));
        if current.is_none() && record.swarms.len() >= self.config.max_swarms_per_peer {
            return (ErrorCode::BadRequest, None);
        }
        match (current, slot) {
            (Some(old), Some(slot)) if old != mode => {
                if let Some(swarm) = shard.swarms.at_mut(slot) {
                    if swarm.change_mode(key, old, mode) {
                        if old == PeerMode::Leech {
                            swarm.record_completion();
                        }
                        shard.count(old, -1);
                        shard.count(mode, 1);
                    }
                }
                record.swarms.set_mode(shard_no, slot, mode);
                (ErrorCode::Ok, Some(slot))
            }
            (Some(_), slot) => (ErrorCode::Ok, slot),
            (None, _) => {
                let slot = match slot.and_then(|slot| Some((slot, shard.swarms.at_mut(slot)?))) {
                    Some((slot, swarm)) => {
                        if swarm.len() >= self.config.max_peers_per_swarm {
                            return (ErrorCode::ServiceUnavailable, None);
                        }
                        swarm.insert(member, mode);
                        slot
                    }
                    None => {
                        if self.config.max_peers_per_swarm == 0
                            || !reserve(&self.swarms, self.config.max_swarms)
                        {
                            return (ErrorCode::ServiceUnavailable, None);
                        }
                        let mut swarm = Swarm::default();
                        swarm.insert(member, mode);
                        shard.swarms.insert(h, swarm_id, swarm)
                    }
                };
                shard.count(mode, 1);
                record.swarms.push(shard_no, slot, mode);
                (ErrorCode::Ok, Some(slot))
            }
        }
    }

    /// Takes the peer (handle `key`) out of one swarm. 03 when it is not in it. The caller
    /// holds the peer's shard lock.
    fn leave_swarm(&self, record: &mut PeerRecord, key: u64, swarm_id: &SwarmId) -> ErrorCode {
        let (shard_no, h) = self.swarm_loc(swarm_id);
        let mut guard = self.swarm_shards[shard_no].lock();
        let Some(slot) = guard.swarms.slot_of_hashed(h, swarm_id) else {
            return ErrorCode::Forbidden;
        };
        let Some(mode) = record.swarms.remove(shard_no as u16, slot) else {
            return ErrorCode::Forbidden;
        };
        self.remove_membership(&mut guard, key, slot, mode);
        ErrorCode::Ok
    }

    /// Takes the peer (handle `key`) out of every swarm. The caller holds the peer's shard
    /// lock.
    fn leave_all(&self, record: &mut PeerRecord, key: u64) {
        let list = std::mem::take(&mut record.swarms);
        for (shard_no, slot, mode) in list.iter() {
            if let Some(lock) = self.swarm_shards.get(usize::from(shard_no)) {
                self.remove_membership(&mut lock.lock(), key, slot, mode);
            }
        }
    }

    /// Removes one membership from the swarm in `slot` of the locked swarm shard `shard`; an
    /// emptied swarm is deleted at once.
    fn remove_membership(&self, shard: &mut SwarmShard, key: u64, slot: u32, mode: PeerMode) {
        let Some(swarm) = shard.swarms.at_mut(slot) else {
            return;
        };
        let removed = swarm.remove(key, mode).is_some();
        let emptied = swarm.is_empty();
        if removed {
            shard.count(mode, -1);
        }
        if emptied {
            shard.swarms.remove_at(slot);
            self.swarms.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Engine {
    /// Admits one more registered peer (PPSTP) or BitTorrent member from `ip`: within
    /// `max_peers_per_source` and `max_peers`. False (nothing counted) when either is
    /// reached: the caller answers 05.
    fn admit_peer(&self, ip: IpAddr) -> bool {
        if !self.sources.admit(ip, self.config.max_peers_per_source) {
            return false;
        }
        if !reserve(&self.peers, self.config.max_peers) {
            self.sources.release(ip);
            return false;
        }
        true
    }

    /// A registered peer (or BitTorrent member) from `ip` is gone.
    fn release_peer(&self, ip: IpAddr) {
        self.peers.fetch_sub(1, Ordering::Relaxed);
        self.sources.release(ip);
    }

    /// Peers registered from `ip` (its /64 for IPv6) now.
    pub fn peers_from(&self, ip: IpAddr) -> usize {
        self.sources.count(ip.to_canonical())
    }
}

/// Increments `counter` unless it already reached `max`.
fn reserve(counter: &AtomicUsize, max: usize) -> bool {
    counter
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
            (c < max).then_some(c + 1)
        })
        .is_ok()
}

/// The source IP a registration is bound to (IPv4-mapped IPv6 counts as IPv4).
fn source_ip(request: &Request) -> IpAddr {
    request.source.ip().to_canonical()
}

impl SwarmResult {
    fn failed(swarm_id: SwarmId, result: ErrorCode) -> Self {
        SwarmResult {
            swarm_id,
            result,
            peers: None,
        }
    }
}

impl SwarmShard {
    fn count(&mut self, mode: PeerMode, delta: isize) {
        let c = match mode {
            PeerMode::Seeder => &mut self.seeders,
            PeerMode::Leech => &mut self.leechers,
        };
        *c = c.wrapping_add_signed(delta);
    }
}
