//! The engine's two sharded tables and their compact entries.
//!
//! - The swarm table maps a [`SwarmId`] to a [`Swarm`]: one vector of 16-byte [`Member`]s,
//!   seeders first and then leechers (so "seeders first" and the counts are O(1)), and a boxed
//!   extra block, allocated only when needed, with a position index (large swarms only), chunk
//!   sets (only members that announced some) and traffic statistics (opentracker style: most
//!   swarms are tiny, most peers hold no chunk set).
//! - The peer-status registry maps a [`PeerId`] to a [`PeerRecord`] (state, timers, the id at
//!   its real length, addresses, source address and the swarms the peer is in, packed by
//!   `swarm_list.rs`). Each peer is kept once: records live densely in a vector per shard (a
//!   slab without holes) with a hash table of positions, and a membership refers to its peer by
//!   an 8-byte handle ([`Member::key`]: shard, generation, slot).
//! - Expiry follows time buckets (opentracker's pools as the model): every record is linked
//!   into the list of the bucket of its deadline (a ring of `BUCKETS` lists per shard, each
//!   bucket at least a second wide), so an expiry step visits only the buckets that are due
//!   instead of every record's timestamp.
//!
//! What FIND returns about a peer (its id and addresses) is read from its record through the
//! handle, after the swarm's lock is released (`Engine::find`), so nothing about a peer is
//! copied into its memberships.

use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};

use rand::rngs::SmallRng;
use smallvec::SmallVec;

use super::swarm_list::SwarmList;
use super::types::{ChunkRange, PeerAddr, PeerId, PeerMode, PeerState, SwarmId, SwarmStats, Time};

/// Hash map with the fast, DoS-seeded foldhash hasher (never SipHash on the hot path).
pub(super) type FastMap<K, V> = hashbrown::HashMap<K, V, foldhash::fast::RandomState>;

/// A swarm grows its position index when it has more members than this; below, removal scans
/// the (short, contiguous) member vector instead.
const INDEX_ABOVE: usize = 32;
/// A swarm drops its index again when it shrinks to this size (hysteresis).
const INDEX_DROP_AT: usize = 16;
/// Largest swarm the `u32` positions support.
pub(super) const MAX_SWARM_MEMBERS: usize = u32::MAX as usize;

/// One membership in a swarm: the handle of the peer's record ([`PeerShard::key`]: peer shard,
/// generation, slot). 8 bytes; everything else about the peer is in its record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Member {
    pub key: u64,
}

/// One swarm: 40 bytes plus its member vector, so that a million mostly tiny swarms stay
/// small. Seeders occupy `members[..seeders]` and leechers `members[seeders..]`.
#[derive(Debug, Default)]
pub(super) struct Swarm {
    members: Vec<Member>,
    seeders: u32,
    /// Completions: members that turned from LEECH to SEEDER (saturating). Fits the padding
    /// after `seeders`.
    completed: u32,
    /// Everything most swarms never need, allocated on first use.
    extra: Option<Box<SwarmExtra>>,
}

#[derive(Debug, Default)]
struct SwarmExtra {
    /// key -> absolute position in `members`. Only for swarms above [`INDEX_ABOVE`] members.
    index: Option<FastMap<u64, u32>>,
    /// key -> sorted, merged chunk ranges (JOIN_CHUNK). Empty (no allocation) while no member
    /// holds any.
    chunks: FastMap<u64, Box<[ChunkRange]>>,
    /// Summed STAT_REPORT figures.
    uploaded_bytes: u64,
    downloaded_bytes: u64,
}

impl SwarmExtra {
    fn is_unused(&self) -> bool {
        self.index.is_none()
            && self.chunks.is_empty()
            && self.uploaded_bytes == 0
            && self.downloaded_bytes == 0
    }
}

impl Swarm {
    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    fn seeder_count(&self) -> usize {
        (self.seeders as usize).min(self.members.len())
    }

    pub fn count(&self, mode: PeerMode) -> usize {
        self.members(mode).len()
    }

    pub fn members(&self, mode: PeerMode) -> &[Member] {
        let (seeders, leechers) = self.members.split_at(self.seeder_count());
        match mode {
            PeerMode::Seeder => seeders,
            PeerMode::Leech => leechers,
        }
    }

    /// The swarm's statistics (STAT_QUERY, an announce's counts).
    pub fn stats(&self) -> SwarmStats {
        let (uploaded_bytes, downloaded_bytes) = self.traffic();
        let u32_of = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        SwarmStats {
            peers: u32_of(self.len()),
            seeders: u32_of(self.count(PeerMode::Seeder)),
            leechers: u32_of(self.count(PeerMode::Leech)),
            completed: self.completed,
            uploaded_bytes,
            downloaded_bytes,
        }
    }

    /// A member turned from LEECH to SEEDER: one more completed download.
    pub fn record_completion(&mut self) {
        self.completed = self.completed.saturating_add(1);
    }

    /// Completions so far.
    pub fn completed(&self) -> u32 {
        self.completed
    }

    /// Raises the completion count to `at_least` (a warm restart's count).
    pub fn restore_completed(&mut self, at_least: u32) {
        self.completed = self.completed.max(at_least);
    }

    /// Summed (uploaded, downloaded) bytes from STAT_REPORTs.
    pub fn traffic(&self) -> (u64, u64) {
        self.extra
            .as_ref()
            .map_or((0, 0), |x| (x.uploaded_bytes, x.downloaded_bytes))
    }

    pub fn add_traffic(&mut self, uploaded: u64, downloaded: u64) {
        if uploaded == 0 && downloaded == 0 {
            return;
        }
        let x = self.extra.get_or_insert_with(Default::default);
        x.uploaded_bytes = x.uploaded_bytes.saturating_add(uploaded);
        x.downloaded_bytes = x.downloaded_bytes.saturating_add(downloaded);
    }

    fn index(&self) -> Option<&FastMap<u64, u32>> {
        self.extra.as_ref().and_then(|x| x.index.as_ref())
    }

    fn index_mut(&mut self) -> Option<&mut FastMap<u64, u32>> {
        self.extra.as_mut().and_then(|x| x.index.as_mut())
    }

    /// Records that the member at absolute position `pos` is now there (after a move).
    fn reindex(&mut self, pos: usize) {
        let Some(key) = self.members.get(pos).map(|m| m.key) else {
            return;
        };
        if let Some(index) = self.index_mut() {
            index.insert(key, pos as u32);
        }
    }

    fn drop_extra_if_unused(&mut self) {
        if self.extra.as_ref().is_some_and(|x| x.is_unused()) {
            self.extra = None;
        }
    }

    /// Position of `key` within the `mode` slice ([`Swarm::members`]).
    pub fn position(&self, key: u64, mode: PeerMode) -> Option<usize> {
        let seeders = self.seeder_count();
        match self.index() {
            Some(index) => {
                let abs = *index.get(&key)? as usize;
                match mode {
                    PeerMode::Seeder => (abs < seeders).then_some(abs),
                    PeerMode::Leech => abs.checked_sub(seeders),
                }
            }
            None => self.members(mode).iter().position(|m| m.key == key),
        }
    }

    /// Adds a member that is not in the swarm yet.
    pub fn insert(&mut self, member: Member, mode: PeerMode) {
        if self.members.capacity() == 0 {
            // Most swarms have one or two members: start with room for exactly one rather
            // than the default four.
            self.members.reserve_exact(1);
        }
        self.members.push(member);
        let last = self.members.len() - 1;
        if mode == PeerMode::Seeder {
            // The new seeder takes the first leecher's place; that leecher moves to the end.
            let first_leecher = self.seeder_count();
            self.members.swap(first_leecher, last);
            self.seeders += 1;
            self.reindex(last);
            self.reindex(first_leecher);
        } else {
            self.reindex(last);
        }
        if self.index().is_none() && self.len() > INDEX_ABOVE {
            self.build_index();
        }
    }

    fn build_index(&mut self) {
        let mut index = FastMap::with_capacity_and_hasher(self.len(), Default::default());
        for (pos, m) in self.members.iter().enumerate() {
            index.insert(m.key, pos as u32);
        }
        self.extra.get_or_insert_with(Default::default).index = Some(index);
    }

    /// Takes a member out, keeping its chunk set. Moves at most two other members.
    fn take(&mut self, key: u64, mode: PeerMode) -> Option<Member> {
        let rel = self.position(key, mode)?;
        let seeders = self.seeder_count();
        let member = match mode {
            PeerMode::Leech => {
                let abs = seeders + rel;
                if abs >= self.members.len() {
                    return None;
                }
                let member = self.members.swap_remove(abs);
                self.reindex(abs);
                member
            }
            PeerMode::Seeder => {
                // Move the target to the last seeder slot, then fill that slot with the last
                // member (a leecher, if there are any).
                let last_seeder = seeders.checked_sub(1)?;
                self.members.swap(rel, last_seeder);
                self.reindex(rel);
                let member = self.members.swap_remove(last_seeder);
                self.seeders -= 1;
                self.reindex(last_seeder);
                member
            }
        };
        if let Some(index) = self.index_mut() {
            index.remove(&key);
        }
        Some(member)
    }

    /// Removes a member and its chunk set. `None` when it was not a `mode` member.
    pub fn remove(&mut self, key: u64, mode: PeerMode) -> Option<Member> {
        let member = self.take(key, mode)?;
        if let Some(x) = &mut self.extra {
            x.chunks.remove(&key);
            if x.chunks.is_empty() && x.chunks.capacity() > 0 {
                x.chunks = FastMap::default();
            }
            if self.members.len() <= INDEX_DROP_AT {
                x.index = None;
            }
        }
        self.drop_extra_if_unused();
        // Give back memory of a vector that became mostly empty.
        if self.members.capacity() > 8 && self.members.len() * 4 < self.members.capacity() {
            self.members.shrink_to(self.members.len() * 2);
        }
        Some(member)
    }

    /// Moves a member from one mode to the other, keeping its chunk set.
    pub fn change_mode(&mut self, key: u64, from: PeerMode, to: PeerMode) -> bool {
        if from == to {
            return self.position(key, from).is_some();
        }
        match self.take(key, from) {
            Some(member) => {
                self.insert(member, to);
                true
            }
            None => false,
        }
    }

    /// Gives a member a new handle (its record moved within its peer shard), keeping its place,
    /// mode and chunk set.
    pub fn rekey(&mut self, old: u64, new: u64, mode: PeerMode) {
        let Some(rel) = self.position(old, mode) else {
            return;
        };
        let abs = match mode {
            PeerMode::Seeder => rel,
            PeerMode::Leech => self.seeder_count() + rel,
        };
        if let Some(m) = self.members.get_mut(abs) {
            m.key = new;
        }
        if let Some(index) = self.index_mut() {
            index.remove(&old);
            index.insert(new, abs as u32);
        }
        if let Some(x) = &mut self.extra {
            if let Some(ranges) = x.chunks.remove(&old) {
                x.chunks.insert(new, ranges);
            }
        }
    }

    /// Sets (or, with an empty set, clears) the chunk set of a member.
    pub fn set_chunks(&mut self, key: u64, ranges: Box<[ChunkRange]>) {
        if ranges.is_empty() {
            if let Some(x) = &mut self.extra {
                x.chunks.remove(&key);
                if x.chunks.is_empty() {
                    x.chunks = FastMap::default();
                }
            }
            self.drop_extra_if_unused();
            return;
        }
        self.extra
            .get_or_insert_with(Default::default)
            .chunks
            .insert(key, ranges);
    }

    /// The chunk set of a member (empty when it announced none).
    pub fn chunks_of(&self, key: u64) -> &[ChunkRange] {
        self.extra
            .as_ref()
            .and_then(|x| x.chunks.get(&key))
            .map_or(&[], |r| &r[..])
    }

    /// Whether any member holds a chunk set at all (FIND with chunks is empty otherwise).
    pub fn has_chunk_sets(&self) -> bool {
        self.extra.as_ref().is_some_and(|x| !x.chunks.is_empty())
    }

    /// Heap bytes held by this swarm's own structures (capacity-based estimate).
    pub fn heap_bytes(&self) -> usize {
        let mut bytes = self.members.capacity() * std::mem::size_of::<Member>();
        if let Some(x) = &self.extra {
            bytes += std::mem::size_of::<SwarmExtra>();
            if let Some(index) = &x.index {
                // hashbrown: one (key, value) slot plus one control byte per bucket.
                bytes += index.capacity() * 8 / 7 * (std::mem::size_of::<(u64, u32)>() + 1);
            }
            bytes +=
                x.chunks.capacity() * 8 / 7 * (std::mem::size_of::<(u64, Box<[ChunkRange]>)>() + 1);
            bytes += x
                .chunks
                .values()
                .map(|r| r.len() * std::mem::size_of::<ChunkRange>())
                .sum::<usize>();
        }
        bytes
    }

    /// Checks the swarm's own invariants (seeder split, index matches the vector, keys unique).
    /// For audits.
    pub fn check(&self) -> Result<(), String> {
        if self.seeders as usize > self.members.len() {
            return Err("seeder count beyond the member vector".into());
        }
        let mut seen = hashbrown::HashSet::new();
        for mode in [PeerMode::Seeder, PeerMode::Leech] {
            for (pos, m) in self.members(mode).iter().enumerate() {
                if !seen.insert(m.key) {
                    return Err(format!("key {} twice in a swarm", m.key));
                }
                if self.position(m.key, mode) != Some(pos) {
                    return Err(format!("index of key {} is wrong", m.key));
                }
            }
        }
        if let Some(index) = self.index() {
            if index.len() != self.len() {
                return Err("index size differs from member count".into());
            }
        }
        if let Some(x) = &self.extra {
            if x.chunks.keys().any(|k| !seen.contains(k)) {
                return Err("chunk set of a non-member".into());
            }
            if x.is_unused() {
                return Err("an unused extra block is kept".into());
            }
        }
        Ok(())
    }
}

/// One shard of the swarm table.
pub(super) struct SwarmShard {
    pub swarms: FastMap<SwarmId, Swarm>,
    /// Randomness for peer-list sampling, per shard so that sampling needs no shared state.
    pub rng: SmallRng,
    /// Members of each mode over all swarms of this shard (summed by `Engine::counts`).
    pub seeders: usize,
    pub leechers: usize,
}

/// No record (end of a bucket list).
pub(super) const NIL: u32 = u32::MAX;
/// Time buckets per peer shard (a ring): live deadlines span at most half of it. At most
/// 2^16 (a record keeps its ring slot in 16 bits).
const BUCKETS: usize = 1024;

/// The registration of one peer (RFC 7846 per-peer-ID state machine). 112 bytes plus the id
/// and the swarm list on the heap (a 40-byte id and one 40-byte swarm id: 48 + 48).
#[derive(Debug)]
pub(super) struct PeerRecord {
    /// The handle memberships use ([`PeerShard::key`]).
    pub key: u64,
    /// The peer id at its real length.
    pub id: Box<[u8]>,
    /// The addresses the peer announced; `None`: the reflexive address `source_ip:port`.
    pub addrs: Option<Box<[PeerAddr]>>,
    /// The swarms the peer is in, with its mode in each.
    pub swarms: SwarmList,
    pub registered_at: Time,
    /// When the init timer (PEER REGISTERED) or track timer (TRACKING) runs out. Change it
    /// through [`PeerShard::set_deadline`], which keeps the bucket lists right.
    pub deadline: Time,
    /// The address the peer registered from; requests naming this peer id from any other
    /// address are refused.
    pub source_ip: IpAddr,
    /// Port of the source address (the reflexive address's port).
    pub port: u16,
    pub state: PeerState,
    /// The ring slot whose bucket list holds the record, and its neighbours there.
    ring: u16,
    prev: u32,
    next: u32,
}

impl PeerRecord {
    /// A new record (not linked into a bucket yet: [`PeerShard::insert`] does).
    pub fn new(
        peer_id: &PeerId,
        addrs: Option<Box<[PeerAddr]>>,
        source: SocketAddr,
        now: Time,
    ) -> Self {
        PeerRecord {
            key: 0,
            id: peer_id.as_bytes().into(),
            addrs,
            swarms: SwarmList::default(),
            registered_at: now,
            deadline: now,
            source_ip: source.ip().to_canonical(),
            port: source.port(),
            state: PeerState::PeerRegistered,
            ring: 0,
            prev: NIL,
            next: NIL,
        }
    }

    pub fn mode_in(&self, swarm_id: &SwarmId) -> Option<PeerMode> {
        self.swarms.mode_in(swarm_id)
    }

    pub fn peer_id(&self) -> PeerId {
        PeerId::from_stored(&self.id)
    }

    /// The reflexive address: the source address the peer registered from.
    pub fn reflexive(&self) -> SocketAddr {
        SocketAddr::new(self.source_ip, self.port)
    }

    /// The peer's addresses as FIND and STAT_QUERY list them.
    pub fn addr_list(&self) -> SmallVec<[PeerAddr; 2]> {
        match &self.addrs {
            Some(list) => list.iter().copied().collect(),
            None => smallvec::smallvec![PeerAddr::reflexive(self.reflexive())],
        }
    }
}

/// One shard of the peer-status registry: records densely in a vector (a record leaving is
/// replaced by the last one, whose memberships the engine then re-keys), a hash table of
/// positions keyed by peer id (4 bytes per slot: the id is stored once, in the record), and
/// the bucket lists of the expiry.
pub(super) struct PeerShard {
    /// This shard's number (the high 16 bits of its handles).
    number: u16,
    /// Generation of the next handle given out, so that a stale handle never names the next
    /// occupant of its slot.
    next_gen: u16,
    hasher: foldhash::fast::RandomState,
    index: hashbrown::HashTable<u32>,
    pub records: Vec<PeerRecord>,
    /// Width of a time bucket, milliseconds.
    bucket_ms: u64,
    /// First and last record of each bucket's list (`NIL`: empty).
    heads: Box<[u32]>,
    tails: Box<[u32]>,
    /// The first bucket (absolute number) not yet walked to its end; `u64::MAX` before the
    /// first expiry step.
    pub next_bucket: u64,
    /// The record the walk of `next_bucket` looks at next (`NIL`: its head).
    pub walk: u32,
}

impl PeerShard {
    /// An empty shard numbered `number`; `max_timer_secs` is the longest timer a deadline is
    /// set with (it sizes the buckets).
    pub fn new(number: u16, max_timer_secs: u64) -> Self {
        let span_ms = max_timer_secs.saturating_mul(1000).saturating_mul(2);
        let bucket_ms = span_ms.div_ceil(BUCKETS as u64).max(1000);
        PeerShard {
            number,
            next_gen: 0,
            hasher: Default::default(),
            index: hashbrown::HashTable::new(),
            records: Vec::new(),
            bucket_ms,
            heads: vec![NIL; BUCKETS].into_boxed_slice(),
            tails: vec![NIL; BUCKETS].into_boxed_slice(),
            next_bucket: u64::MAX,
            walk: NIL,
        }
    }

    /// The handle of slot `slot` with generation `gen` in shard `shard`.
    pub fn key(shard: u16, gen: u16, slot: u32) -> u64 {
        (u64::from(shard) << 48) | (u64::from(gen) << 32) | u64::from(slot)
    }

    /// (shard, slot) of a handle.
    pub fn split_key(key: u64) -> (usize, usize) {
        ((key >> 48) as usize, (key & 0xffff_ffff) as usize)
    }

    fn fresh_key(&mut self, slot: usize) -> u64 {
        self.next_gen = self.next_gen.wrapping_add(1);
        Self::key(self.number, self.next_gen, slot as u32)
    }

    fn hash(&self, peer_id: &[u8]) -> u64 {
        self.hasher.hash_one(peer_id)
    }

    pub fn find(&self, peer_id: &PeerId) -> Option<usize> {
        let records = &self.records;
        let id = peer_id.as_bytes();
        self.index
            .find(self.hash(id), |&i| {
                records.get(i as usize).is_some_and(|r| *r.id == *id)
            })
            .map(|&i| i as usize)
    }

    /// The record a handle names, if it still does.
    pub fn by_key(&self, key: u64) -> Option<&PeerRecord> {
        let (_, slot) = Self::split_key(key);
        self.records.get(slot).filter(|r| r.key == key)
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Index slots (for memory estimates and audits).
    pub fn index_len_and_capacity(&self) -> (usize, usize) {
        (self.index.len(), self.index.capacity())
    }

    /// Heap bytes of the bucket rings.
    pub fn bucket_bytes(&self) -> usize {
        (self.heads.len() + self.tails.len()) * std::mem::size_of::<u32>()
    }

    /// The absolute bucket of a deadline.
    pub fn bucket_of(&self, t: Time) -> u64 {
        t.as_millis() / self.bucket_ms
    }

    /// The ring slot a deadline is listed in: its bucket's, or the bucket being walked when
    /// the deadline is older (a clock that went back), so that every record stays reachable.
    /// A record keeps the slot it was listed in (`PeerRecord::ring`).
    fn ring_of(&self, t: Time) -> usize {
        let b = self.bucket_of(t);
        let b = if self.next_bucket != u64::MAX && b < self.next_bucket {
            self.next_bucket
        } else {
            b
        };
        (b % BUCKETS as u64) as usize
    }

    /// First record of ring slot `ring`.
    pub fn head(&self, ring: usize) -> u32 {
        self.heads.get(ring).copied().unwrap_or(NIL)
    }

    /// The record after `pos` in its bucket list.
    pub fn next_of(&self, pos: u32) -> u32 {
        self.records.get(pos as usize).map_or(NIL, |r| r.next)
    }

    pub fn ring_len(&self) -> u64 {
        BUCKETS as u64
    }

    fn link(&mut self, pos: u32) {
        let Some(deadline) = self.records.get(pos as usize).map(|r| r.deadline) else {
            return;
        };
        self.link_into(pos, self.ring_of(deadline));
    }

    /// Appends the record at `pos` to the list of ring slot `ring`.
    fn link_into(&mut self, pos: u32, ring: usize) {
        let ring = ring % BUCKETS;
        let tail = self.tails[ring];
        if let Some(r) = self.records.get_mut(pos as usize) {
            r.ring = ring as u16;
            r.prev = tail;
            r.next = NIL;
        }
        match self.records.get_mut(tail as usize) {
            Some(t) => t.next = pos,
            None => self.heads[ring] = pos,
        }
        self.tails[ring] = pos;
    }

    fn unlink(&mut self, pos: u32) {
        let Some((prev, next, ring)) = self
            .records
            .get(pos as usize)
            .map(|r| (r.prev, r.next, usize::from(r.ring)))
        else {
            return;
        };
        if self.walk == pos {
            self.walk = next;
        }
        match self.records.get_mut(prev as usize) {
            Some(p) => p.next = next,
            None => self.heads[ring] = next,
        }
        match self.records.get_mut(next as usize) {
            Some(n) => n.prev = prev,
            None => self.tails[ring] = prev,
        }
    }

    /// Sets the deadline of the record at `pos`, moving it to its new bucket's list.
    pub fn set_deadline(&mut self, pos: usize, deadline: Time) {
        let Some(ring) = self.records.get(pos).map(|r| usize::from(r.ring)) else {
            return;
        };
        if ring == self.ring_of(deadline) {
            if let Some(r) = self.records.get_mut(pos) {
                r.deadline = deadline;
            }
            return;
        }
        self.unlink(pos as u32);
        if let Some(r) = self.records.get_mut(pos) {
            r.deadline = deadline;
        }
        self.link(pos as u32);
    }

    /// Adds a record whose peer id is not in the shard yet; gives it its handle. Returns its
    /// position.
    pub fn insert(&mut self, mut record: PeerRecord) -> usize {
        let pos = self.records.len();
        record.key = self.fresh_key(pos);
        let h = self.hash(&record.id);
        self.records.push(record);
        let PeerShard {
            hasher,
            index,
            records,
            ..
        } = self;
        index.insert_unique(h, pos as u32, |&i| {
            records
                .get(i as usize)
                .map_or(0, |r| hasher.hash_one(&r.id[..]))
        });
        self.link(pos as u32);
        pos
    }

    /// Deletes the record at `pos`; the caller has already taken it out of its swarms. The
    /// last record moves into `pos` with a new handle: the second value is its (old, new)
    /// handle, and the caller re-keys its memberships.
    pub fn remove_at(&mut self, pos: usize) -> Option<(PeerRecord, Option<(u64, u64)>)> {
        let h = self.hash(&self.records.get(pos)?.id);
        self.unlink(pos as u32);
        if let Ok(entry) = self.index.find_entry(h, |&i| i as usize == pos) {
            entry.remove();
        }
        let last = self.records.len() - 1;
        if pos != last {
            // The last record leaves its list and rejoins it from `pos`: its neighbours and the
            // list ends point to it by position.
            let walk_was_last = self.walk == last as u32;
            let ring = self.records.get(last).map_or(0, |r| usize::from(r.ring));
            self.unlink(last as u32);
            let record = self.records.swap_remove(pos);
            let new_key = self.fresh_key(pos);
            let moved = self.records.get_mut(pos)?;
            let old_key = moved.key;
            moved.key = new_key;
            let hm = self.hasher.hash_one(&moved.id[..]);
            if let Some(slot) = self.index.find_mut(hm, |&i| i as usize == last) {
                *slot = pos as u32;
            }
            // Relinked at the tail of its list: a walk of that list still reaches it. A walk
            // that was about to look at it goes on with its old successor, or, when it was the
            // tail, with it at its new place.
            self.link_into(pos as u32, ring);
            if walk_was_last && self.walk == NIL {
                self.walk = pos as u32;
            }
            self.shrink();
            Some((record, Some((old_key, new_key))))
        } else {
            let record = self.records.pop()?;
            self.shrink();
            Some((record, None))
        }
    }

    /// Gives back memory of a record vector that became mostly empty.
    fn shrink(&mut self) {
        if self.records.capacity() > 64 && self.records.len() * 4 < self.records.capacity() {
            self.records.shrink_to(self.records.len() * 2);
        }
        if self.index.capacity() > 64 && self.index.len() * 4 < self.index.capacity() {
            let PeerShard {
                hasher,
                index,
                records,
                ..
            } = self;
            index.shrink_to(records.len() * 2, |&i| {
                records
                    .get(i as usize)
                    .map_or(0, |r| hasher.hash_one(&r.id[..]))
            });
        }
    }

    /// Checks that every record is in exactly one bucket list, the one of its deadline (or the
    /// walked bucket's), with consistent links. For audits.
    pub fn check_buckets(&self) -> Result<(), String> {
        let mut seen = 0usize;
        for ring in 0..BUCKETS {
            let mut prev = NIL;
            let mut cur = self.heads[ring];
            while cur != NIL {
                let r = self
                    .records
                    .get(cur as usize)
                    .ok_or("a bucket lists a position beyond the records")?;
                if r.prev != prev {
                    return Err("a bucket list's back link is wrong".into());
                }
                if usize::from(r.ring) != ring {
                    return Err(format!(
                        "a record of bucket list {} is in list {ring}",
                        r.ring
                    ));
                }
                seen += 1;
                if seen > self.records.len() {
                    return Err("a bucket list has a cycle".into());
                }
                prev = cur;
                cur = r.next;
            }
            if self.tails[ring] != prev {
                return Err("a bucket list's tail is wrong".into());
            }
        }
        if seen != self.records.len() {
            return Err(format!(
                "bucket lists hold {seen} records of {}",
                self.records.len()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn member(key: u64) -> Member {
        Member { key }
    }

    fn mode(seeder: bool) -> PeerMode {
        if seeder {
            PeerMode::Seeder
        } else {
            PeerMode::Leech
        }
    }

    fn record(n: u16, deadline_ms: u64) -> PeerRecord {
        let id = PeerId::new(format!("peer-{n}").as_bytes()).expect("short id");
        let mut r = PeerRecord::new(
            &id,
            None,
            SocketAddr::from(([10, 0, 0, 1], 7000)),
            Time::from_millis(deadline_ms),
        );
        r.deadline = Time::from_millis(deadline_ms);
        r
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// Records stay findable by id and by handle, and listed exactly once in the bucket
        /// lists, through inserts, deadline changes and removals (which move the last record).
        #[test]
        fn peer_shard_keeps_index_handles_and_buckets(
            ops in prop::collection::vec((0u8..3, 0u16..60, 0u64..400_000), 1..300)
        ) {
            let mut shard = PeerShard::new(3, 120);
            let mut live: BTreeMap<u16, ()> = BTreeMap::new();
            for (op, n, t) in ops {
                let id = PeerId::new(format!("peer-{n}").as_bytes()).expect("short id");
                match (op, shard.find(&id)) {
                    (0, None) => {
                        let pos = shard.insert(record(n, t));
                        prop_assert_eq!(shard.find(&id), Some(pos));
                        live.insert(n, ());
                    }
                    (1, Some(pos)) => shard.set_deadline(pos, Time::from_millis(t)),
                    (2, Some(pos)) => {
                        let last = shard.len() - 1;
                        let (gone, moved) = shard.remove_at(pos).expect("present");
                        prop_assert_eq!(&gone.id[..], id.as_bytes());
                        prop_assert_eq!(moved.is_some(), pos != last);
                        if let Some((old, new)) = moved {
                            prop_assert!(shard.by_key(old).is_none());
                            prop_assert_eq!(shard.by_key(new).map(|r| r.key), Some(new));
                        }
                        live.remove(&n);
                    }
                    _ => {}
                }
                if let Err(e) = shard.check_buckets() {
                    prop_assert!(false, "{}", e);
                }
                prop_assert_eq!(shard.len(), live.len());
                for (pos, r) in shard.records.iter().enumerate() {
                    prop_assert_eq!(shard.find(&r.peer_id()), Some(pos));
                    prop_assert_eq!(PeerShard::split_key(r.key), (3, pos));
                }
            }
        }

        /// The swarm (with and without its index) against a plain map model.
        #[test]
        fn swarm_matches_a_model(ops in prop::collection::vec((0u8..3, 0u64..80, any::<bool>()), 1..400)) {
            let mut swarm = Swarm::default();
            let mut model: BTreeMap<u64, PeerMode> = BTreeMap::new();
            for (op, key, seeder) in ops {
                let m = mode(seeder);
                match op {
                    0 => {
                        if let std::collections::btree_map::Entry::Vacant(e) = model.entry(key) {
                            swarm.insert(member(key), m);
                            e.insert(m);
                            if key % 3 == 0 {
                                swarm.set_chunks(key, vec![ChunkRange { start: 0, end: key }].into());
                            }
                        }
                    }
                    1 => {
                        let removed = swarm.remove(key, m).is_some();
                        prop_assert_eq!(removed, model.get(&key) == Some(&m));
                        if removed {
                            model.remove(&key);
                        }
                    }
                    _ => {
                        if let Some(old) = model.get(&key).copied() {
                            prop_assert!(swarm.change_mode(key, old, m));
                            model.insert(key, m);
                            if key % 3 == 0 {
                                prop_assert_eq!(swarm.chunks_of(key).len(), 1, "chunks kept");
                            }
                        }
                    }
                }
                if let Err(e) = swarm.check() {
                    prop_assert!(false, "{}", e);
                }
                for mo in [PeerMode::Seeder, PeerMode::Leech] {
                    let mut got: Vec<u64> = swarm.members(mo).iter().map(|m| m.key).collect();
                    got.sort_unstable();
                    let want: Vec<u64> =
                        model.iter().filter(|(_, v)| **v == mo).map(|(k, _)| *k).collect();
                    prop_assert_eq!(got, want);
                }
            }
        }
    }
}
