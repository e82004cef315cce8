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
mod config;
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
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam::utils::CachePadded;
use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::SeedableRng;

pub use announce::{
    bt_peer_addr, bt_peer_id, canonical_ip, CompactPeers, Family, ListFamilies,
    BT_PEER_ID_PREFIX_V4, BT_PEER_ID_PREFIX_V6,
};
pub use audit::{MemoryEstimate, MEMBER_ENTRY_BYTES};
pub use bt_table::{InfoHash, COMPACT_V4_LEN, COMPACT_V6_LEN, INFO_HASH_LEN};
pub use config::EngineConfig;
pub use snapshot::{AddrEntry, ImportReport, Registration, SwarmCompletions};
pub use types::*;

use bt_table::BtShard;
use tables::{FastMap, Member, PeerCard, PeerRecord, PeerShard, Swarm, SwarmShard};

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
/// swarm id, and as many peer shards chosen by a foldhash of the peer id, each behind its own
/// `parking_lot::Mutex`. The lock order is always **peer shard, then swarm shard**, and a thread
/// **never holds two swarm-shard locks, nor two peer-shard locks, at once**: so no deadlock is
/// possible. Every change of membership happens while the peer's shard lock is held, and a peer
/// is taken out of its swarms before its record is deleted, so at any moment every member of a
/// swarm is a registered peer that lists that swarm (the audit checks this). FIND also reads the
/// swarm while holding the requester's peer-shard lock, so a peer never finds itself.
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
    /// PPSTP registrations plus BitTorrent memberships (what `max_peers` bounds).
    peers: CachePadded<AtomicUsize>,
    /// Swarms of both tables (what `max_swarms` bounds).
    swarms: CachePadded<AtomicUsize>,
    /// Swarms of the BitTorrent table.
    bt_swarms: CachePadded<AtomicUsize>,
    /// Source of the engine-wide member keys (one per registration, never reused).
    next_key: CachePadded<AtomicU64>,
    /// Which peer shard the next expiry step starts with.
    expiry_shard: CachePadded<AtomicUsize>,
    /// Registered PPSTP peers and BitTorrent members per source address
    /// (`max_peers_per_source`).
    sources: budget::SourceCounts,
}

impl Engine {
    pub fn new(config: &EngineConfig) -> Self {
        let mut config = config.clone();
        config.shards = config.shards.max(1);
        config.max_id_len = config.max_id_len.min(MAX_ID_BYTES);
        config.max_peers_per_swarm = config.max_peers_per_swarm.min(tables::MAX_SWARM_MEMBERS);
        config.max_peers = config.max_peers.min(u32::MAX as usize);
        config.default_peer_count = config.default_peer_count.min(config.max_peer_count);
        let swarm_shards = (0..config.shards)
            .map(|i| {
                CachePadded::new(Mutex::new(SwarmShard {
                    swarms: FastMap::default(),
                    rng: SmallRng::seed_from_u64(0x5157_4152_4d00 ^ i as u64),
                    seeders: 0,
                    leechers: 0,
                }))
            })
            .collect();
        let peer_shards = (0..config.shards)
            .map(|_| CachePadded::new(Mutex::new(PeerShard::default())))
            .collect();
        let bt_shards = (0..config.shards)
            .map(|i| {
                CachePadded::new(Mutex::new(BtShard::new(SmallRng::seed_from_u64(
                    0x4254_5357_4152_4d00 ^ i as u64,
                ))))
            })
            .collect();
        Engine {
            config,
            swarm_shards,
            peer_shards,
            bt_shards,
            swarm_hasher: Default::default(),
            peer_hasher: Default::default(),
            bt_hasher: Default::default(),
            peers: CachePadded::new(AtomicUsize::new(0)),
            swarms: CachePadded::new(AtomicUsize::new(0)),
            bt_swarms: CachePadded::new(AtomicUsize::new(0)),
            next_key: CachePadded::new(AtomicU64::new(0)),
            expiry_shard: CachePadded::new(AtomicUsize::new(0)),
            sources: budget::SourceCounts::new(),
        }
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
        if !self.id_ok(&request.peer_id.0) {
            return Response::Err(ErrorCode::BadRequest);
        }
        let result = match &request.kind {
            RequestKind::Connect {
                peer_num,
                addrs,
                actions,
            } => self.connect(request, peer_num.as_ref(), addrs, actions, now),
            RequestKind::Find {
                swarm_id,
                peer_num,
                chunks,
            } => self.find(request, swarm_id, peer_num.as_ref(), chunks, now),
            RequestKind::StatReport { stats } => self.stat_report(request, stats, now),
            RequestKind::Join {
                swarm_id,
                mode,
                peer_num,
            } => self.join(request, *swarm_id, *mode, peer_num.as_ref(), now),
            RequestKind::Leave { swarm_id } => match bt_peer_addr(&request.peer_id) {
                Some(addr) => self.bt_leave_request(request, addr, swarm_id, now),
                None => self.leave(request, *swarm_id, now),
            },
            RequestKind::Disconnect { scope } => self.disconnect(request, *scope, now),
            RequestKind::Keepalive => self.with_registered(request, now, |_| Ok(Answer::default())),
            RequestKind::JoinChunk { swarm_id, chunks } => {
                self.join_chunk(request, *swarm_id, chunks, now)
            }
            RequestKind::StatQuery { target } => self.stat_query(request, *target, now),
            RequestKind::Announce { .. } => self.announce_answer(request, now),
        };
        match result {
            Ok(answer) => Response::Ok(answer),
            Err(code) => Response::Err(code),
        }
    }

    /// Examines about `budget` registrations and BitTorrent members and deletes those whose
    /// timer ran out by `now` (PPSTP: deadline strictly before `now`; BitTorrent: last
    /// announce more than the track timer ago, in whole seconds), taking PPSTP peers out of
    /// their swarms first.
    ///
    /// Walks every shard, starting where the previous call stopped (a shared atomic picks the
    /// first shard, each shard keeps its own cursor), holding one shard's lock for at most
    /// [`EXPIRY_BATCH`] entries. Several threads may call it concurrently; there is never a
    /// whole-table pass. A server's workers use [`Engine::expire_owned`] instead.
    pub fn expire(&self, now: Time, budget: usize) -> ExpiryReport {
        let shards = self.peer_shards.len();
        let start = self.expiry_shard.fetch_add(1, Ordering::Relaxed);
        self.expire_shards(&mut (0..shards).map(|i| (start + i) % shards), now, budget)
    }

    /// One expiry step of worker `worker` of `workers`: only the shards it owns (shard `s` is
    /// owned by worker `s % workers`), so no two workers ever expire the same shard and the
    /// walk's position (`cursor`, kept by the worker) is written by one thread only. Examines
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

    /// Examines at most `max` (and [`EXPIRY_BATCH`]) records of PPSTP peer shard `s` from its
    /// cursor; returns (examined, expired).
    fn expire_peer_shard(&self, s: usize, now: Time, max: usize) -> (usize, usize) {
        let Some(lock) = self.peer_shards.get(s) else {
            return (0, 0);
        };
        let mut shard = lock.lock();
        let batch = max.min(EXPIRY_BATCH);
        let (mut looked, mut expired) = (0, 0);
        while looked < batch {
            let pos = shard.cursor;
            let Some(record) = shard.records.get_mut(pos) else {
                // End of this shard: the next step here starts from the beginning.
                shard.cursor = 0;
                break;
            };
            looked += 1;
            if record.deadline < now {
                self.leave_all(record);
                // The last record moves into `pos`; the cursor stays to look at it next.
                if let Some(gone) = shard.remove_at(pos) {
                    self.release_peer(gone.source_ip);
                }
                expired += 1;
            } else {
                shard.cursor = pos + 1;
            }
        }
        (looked, expired)
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
            for (id, swarm) in shard.swarms.iter() {
                let seeders = swarm.count(PeerMode::Seeder);
                let leechers = swarm.count(PeerMode::Leech);
                best.push(Reverse((
                    seeders + leechers,
                    Reverse(*id),
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
            for swarm in shard.swarms.iter() {
                let Ok(id) = SwarmId::new(&swarm.info_hash) else {
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

    fn swarm_shard(&self, id: &SwarmId) -> &Mutex<SwarmShard> {
        let h = self.swarm_hasher.hash_one(id.as_bytes());
        // `shards >= 1`, and the index is reduced modulo the length.
        &self.swarm_shards[(h % self.swarm_shards.len() as u64) as usize]
    }

    fn peer_shard(&self, id: &PeerId) -> &Mutex<PeerShard> {
        let h = self.peer_hasher.hash_one(id.as_bytes());
        &self.peer_shards[(h % self.peer_shards.len() as u64) as usize]
    }

    /// Peer-list size for a request: `peer_count` if given, else the default; capped.
    fn peer_count(&self, peer_num: Option<&PeerNum>) -> usize {
        peer_num
            .and_then(|p| p.peer_count)
            .unwrap_or(self.config.default_peer_count)
            .min(self.config.max_peer_count) as usize
    }

    /// Sets the state from the peer's swarms and restarts the matching timer: TRACKING (track
    /// timer) while it is in a swarm, PEER REGISTERED (init timer) otherwise.
    fn rearm(&self, record: &mut PeerRecord, now: Time) {
        let (state, secs) = if record.swarms.is_empty() {
            (PeerState::PeerRegistered, self.config.init_timer_secs)
        } else {
            (PeerState::Tracking, self.config.track_timer_secs)
        };
        record.state = state;
        record.deadline = now.saturating_add_millis(secs.saturating_mul(1000));
    }

    /// Runs `f` on the requester's registration and then re-arms its timer: any request that
    /// passes the registration and source-address check proves the peer alive. 03 when the peer
    /// id is not registered or was registered from another IP (nothing is changed then).
    fn with_registered<R>(
        &self,
        request: &Request,
        now: Time,
        f: impl FnOnce(&mut PeerRecord) -> Result<R, ErrorCode>,
    ) -> Result<R, ErrorCode> {
        let mut shard = self.peer_shard(&request.peer_id).lock();
        let pos = shard.find(&request.peer_id).ok_or(ErrorCode::Forbidden)?;
        let record = shard.records.get_mut(pos).ok_or(ErrorCode::InternalError)?;
        if record.source_ip != source_ip(request) {
            return Err(ErrorCode::Forbidden);
        }
        let out = f(record);
        self.rearm(record, now);
        out
    }

    /// Adds the peer to a swarm (or changes its mode there) and, with `list`, builds a peer
    /// list of that many peers. The caller holds the peer's shard lock.
    ///
    /// Per-swarm errors: 01 when the peer is already in `max_swarms_per_peer` swarms, 05 when
    /// the swarm is full (`max_peers_per_swarm`) or a new swarm would exceed `max_swarms`.
    /// Joining a swarm the peer is already in is a success that sets the new mode.
    fn join_swarm(
        &self,
        record: &mut PeerRecord,
        swarm_id: SwarmId,
        mode: PeerMode,
        list: Option<usize>,
    ) -> SwarmResult {
        let mut guard = self.swarm_shard(&swarm_id).lock();
        let shard = &mut *guard;
        let result = self.enter_swarm(record, shard, swarm_id, mode);
        if result != ErrorCode::Ok {
            return SwarmResult::failed(swarm_id, result);
        }
        let peers = list.map(|count| match shard.swarms.get(&swarm_id) {
            Some(swarm) => {
                select::peer_list(swarm, record.key, Some(mode), count, &[], &mut shard.rng)
            }
            None => Vec::new(),
        });
        SwarmResult {
            swarm_id,
            result: ErrorCode::Ok,
            peers,
        }
    }

    /// The membership part of [`Engine::join_swarm`], with the swarm's shard (`shard`) already
    /// locked by the caller (who also holds the peer's shard lock). Returns the swarm's error
    /// code; nothing changes on error.
    fn enter_swarm(
        &self,
        record: &mut PeerRecord,
        shard: &mut SwarmShard,
        swarm_id: SwarmId,
        mode: PeerMode,
    ) -> ErrorCode {
        let current = record.mode_in(&swarm_id);
        if current.is_none() && record.swarms.len() >= self.config.max_swarms_per_peer {
            return ErrorCode::BadRequest;
        }
        match current {
            Some(old) if old != mode => {
                if let Some(swarm) = shard.swarms.get_mut(&swarm_id) {
                    if swarm.change_mode(record.key, old, mode) {
                        if old == PeerMode::Leech {
                            swarm.record_completion();
                        }
                        shard.count(old, -1);
                        shard.count(mode, 1);
                    }
                }
                record.swarms.set_mode(&swarm_id, mode);
            }
            Some(_) => {}
            None => {
                let member = Member {
                    key: record.key,
                    card: Arc::clone(&record.card),
                };
                match shard.swarms.get_mut(&swarm_id) {
                    Some(swarm) => {
                        if swarm.len() >= self.config.max_peers_per_swarm {
                            return ErrorCode::ServiceUnavailable;
                        }
                        swarm.insert(member, mode);
                    }
                    None => {
                        if self.config.max_peers_per_swarm == 0
                            || !reserve(&self.swarms, self.config.max_swarms)
                        {
                            return ErrorCode::ServiceUnavailable;
                        }
                        let mut swarm = Swarm::default();
                        swarm.insert(member, mode);
                        shard.swarms.insert(swarm_id, swarm);
                    }
                }
                shard.count(mode, 1);
                record.swarms.push(&swarm_id, mode);
            }
        }
        ErrorCode::Ok
    }

    /// Takes the peer out of one swarm. 03 when it is not in it. The caller holds the peer's
    /// shard lock.
    fn leave_swarm(&self, record: &mut PeerRecord, swarm_id: &SwarmId) -> ErrorCode {
        let Some(mode) = record.swarms.remove(swarm_id) else {
            return ErrorCode::Forbidden;
        };
        self.remove_membership(record.key, swarm_id, mode);
        ErrorCode::Ok
    }

    /// Takes the peer out of every swarm. The caller holds the peer's shard lock.
    fn leave_all(&self, record: &mut PeerRecord) {
        for (swarm_id, mode) in std::mem::take(&mut record.swarms).to_vec() {
            self.remove_membership(record.key, &swarm_id, mode);
        }
    }

    /// Removes one membership from the swarm table; an emptied swarm is deleted at once.
    fn remove_membership(&self, key: u64, swarm_id: &SwarmId, mode: PeerMode) {
        let mut guard = self.swarm_shard(swarm_id).lock();
        let shard = &mut *guard;
        let Some(swarm) = shard.swarms.get_mut(swarm_id) else {
            return;
        };
        let removed = swarm.remove(key, mode).is_some();
        let emptied = swarm.is_empty();
        if removed {
            shard.count(mode, -1);
        }
        if emptied {
            shard.swarms.remove(swarm_id);
            self.swarms.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Replaces the peer's card (addresses) in the record and in every membership.
    fn replace_card(&self, record: &mut PeerRecord, card: PeerCard) {
        let card = Arc::new(card);
        for (swarm_id, mode) in record.swarms.to_vec() {
            let mut shard = self.swarm_shard(&swarm_id).lock();
            if let Some(swarm) = shard.swarms.get_mut(&swarm_id) {
                swarm.replace_card(record.key, mode, &card);
            }
        }
        record.card = card;
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
