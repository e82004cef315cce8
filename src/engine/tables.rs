//! The engine's two sharded tables and their compact entries.
//!
//! - The swarm table holds, per shard, a slab of [`Swarm`]s indexed by [`SwarmId`]
//!   ([`SwarmTable`]): one vector of 36-byte [`Member`]s per swarm, seeders first and then
//!   leechers (so "seeders first" and the counts are O(1)), and a boxed extra block, allocated
//!   only when needed, with a position index (large swarms only), chunk sets (only members
//!   that announced some) and traffic statistics (opentracker style: most swarms are tiny,
//!   most peers hold no chunk set). A swarm keeps its slot while it has members.
//! - The peer-status registry maps a [`PeerId`] to a [`PeerRecord`] (state, timers,
//!   addresses, source address and the swarms the peer is in, by swarm handle: shard and
//!   slot, packed by `swarm_list.rs`); the ids are stored back to back in a byte arena per
//!   shard (hex ids packed to half their length, `member.rs`). Each peer's state is kept
//!   once: records live densely in a vector per shard (a slab without holes) with a hash
//!   table of positions, and a membership refers to its peer by an 8-byte handle
//!   ([`Member::key`]: shard, generation, slot) next to a copy of its peer-list entry.
//! - Expiry follows time buckets (opentracker's pools as the model): every record is linked
//!   into the list of the bucket of its deadline (a ring of `BUCKETS` lists per shard, each
//!   bucket at least a second wide), so an expiry step visits only the buckets that are due
//!   instead of every record's timestamp.
//!
//! What FIND returns about a peer (its id and addresses) is written from the membership's copy
//! (`member.rs`), so listing a peer reads the swarm's member vector only; a peer whose copy is
//! incomplete (IPv6, several addresses, a long id) is read from its record through the
//! handle, after the swarm's lock is released (`Engine::resolve`). The copy is rewritten in
//! every swarm of the peer when its addresses change, and the audit compares each copy with
//! its record.

use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use rand::rngs::SmallRng;
use smallvec::SmallVec;

use super::chunked::{ByteArena, ChunkedVec};
use super::line_index::{Geometry, LineIndex};
use super::swarm_list::SwarmList;
use super::types::{
    ChunkRange, PeerAddr, PeerId, PeerInfo, PeerMode, PeerState, SwarmId, SwarmStats, Time,
};
use std::sync::Arc;

/// Hash map with the fast, DoS-seeded foldhash hasher (never SipHash on the hot path).
pub(super) type FastMap<K, V> = hashbrown::HashMap<K, V, foldhash::fast::RandomState>;

/// A swarm grows its position index when it has more members than this; below, removal scans
/// the (short, contiguous) member vector instead.
const INDEX_ABOVE: usize = 32;
/// A swarm drops its index again when it shrinks to this size (hysteresis).
const INDEX_DROP_AT: usize = 16;
/// Largest swarm the `u32` positions support.
pub(super) const MAX_SWARM_MEMBERS: usize = u32::MAX as usize;

pub(super) use super::member::Member;

/// Members per chunk of a swarm's member vector (9 KiB of 36-byte members): a swarm up to this
/// size holds one vector, a larger one whole chunks.
const MEMBER_CHUNK: usize = 256;
/// A swarm's member vector.
type MemberVec = ChunkedVec<Member, MEMBER_CHUNK, true>;
/// The members of one mode (a run of the member vector).
pub(super) type Members<'a> = super::chunked::Span<'a, Member, MEMBER_CHUNK, true>;
use super::member::{CompactId, StoredId, HEX};

/// One swarm: 48 bytes plus its member vector, so that a million mostly tiny swarms stay
/// small. Seeders occupy `members[..seeders]` and leechers `members[seeders..]`.
#[derive(Debug, Default)]
pub(super) struct Swarm {
    members: MemberVec,
    seeders: u32,
    /// Completions: members that turned from LEECH to SEEDER (saturating). Fits the padding
    /// after `seeders`.
    completed: u32,
    /// Everything most swarms never need, allocated on first use.
    extra: Option<Box<SwarmExtra>>,
}

#[derive(Debug, Default)]
struct SwarmExtra {
    /// Absolute positions in `members`, hashed by the member's key ([`key_hash`]): 4 bytes
    /// per slot, the key being read from the member. Only for swarms above [`INDEX_ABOVE`]
    /// members.
    index: Option<hashbrown::HashTable<u32>>,
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

    pub fn members(&self, mode: PeerMode) -> Members<'_> {
        let seeders = self.seeder_count();
        match mode {
            PeerMode::Seeder => self.members.span(0, seeders),
            PeerMode::Leech => self.members.span(seeders, self.members.len() - seeders),
        }
    }

    /// Starts loading the first two cache lines of the member vector (what a JOIN appends to
    /// in a small swarm and a FIND starts reading); nothing for an empty swarm.
    pub fn prefetch_members(&self) {
        let p = self.members.first_chunk_ptr().cast::<u8>();
        if !p.is_null() {
            super::announce::prefetch(p);
            super::announce::prefetch(p.wrapping_add(64));
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

    fn index(&self) -> Option<&hashbrown::HashTable<u32>> {
        self.extra.as_ref().and_then(|x| x.index.as_ref())
    }

    /// The member vector and the position index (if any), borrowed apart.
    fn members_and_index(&mut self) -> (&MemberVec, Option<&mut hashbrown::HashTable<u32>>) {
        let Swarm { members, extra, .. } = self;
        (members, extra.as_mut().and_then(|x| x.index.as_mut()))
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
                let members = &self.members;
                let abs = *index.find(key_hash(key), |&v| {
                    members.get(v as usize).is_some_and(|m| m.key == key)
                })? as usize;
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
        // Room for exactly one member at first (most swarms have one or two), then quarter-steps
        // up to a chunk, then whole chunks that are never copied (`chunked.rs`).
        self.members.push(member);
        let last = self.members.len() - 1;
        let at = if mode == PeerMode::Seeder {
            // The new seeder takes the first leecher's place; that leecher moves to the end.
            let first_leecher = self.seeder_count();
            self.members.swap(first_leecher, last);
            self.seeders += 1;
            if first_leecher != last {
                if let (members, Some(index)) = self.members_and_index() {
                    idx_move(index, members, first_leecher, last);
                }
            }
            first_leecher
        } else {
            last
        };
        if let (members, Some(index)) = self.members_and_index() {
            idx_insert(index, members, member.key, at);
        }
        if self.index().is_none() && self.len() > INDEX_ABOVE {
            self.build_index();
        }
    }

    fn build_index(&mut self) {
        let mut index = hashbrown::HashTable::with_capacity(self.len());
        for (pos, m) in self.members.iter().enumerate() {
            idx_insert(&mut index, &self.members, m.key, pos);
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
                let old_last = self.members.len() - 1;
                let member = self.members.swap_remove(abs)?;
                if let (members, Some(index)) = self.members_and_index() {
                    idx_remove(index, key, abs);
                    if abs != old_last {
                        idx_move(index, members, old_last, abs);
                    }
                }
                member
            }
            PeerMode::Seeder => {
                // Move the target to the last seeder slot, then fill that slot with the last
                // member (a leecher, if there are any).
                let last_seeder = seeders.checked_sub(1)?;
                let old_last = self.members.len() - 1;
                self.members.swap(rel, last_seeder);
                let member = self.members.swap_remove(last_seeder)?;
                self.seeders -= 1;
                if let (members, Some(index)) = self.members_and_index() {
                    idx_remove(index, key, rel);
                    if rel != last_seeder {
                        idx_move(index, members, last_seeder, rel);
                    }
                    if last_seeder != old_last {
                        idx_move(index, members, old_last, last_seeder);
                    }
                }
                member
            }
        };
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
        if let (members, Some(index)) = self.members_and_index() {
            idx_remove(index, old, abs);
            idx_insert(index, members, new, abs);
        }
        if let Some(x) = &mut self.extra {
            if let Some(ranges) = x.chunks.remove(&old) {
                x.chunks.insert(new, ranges);
            }
        }
    }

    /// Overwrites the copy of a `mode` member with `member` (same handle): the peer's
    /// addresses changed. `false` when it is not a `mode` member.
    pub fn refresh(&mut self, member: Member, mode: PeerMode) -> bool {
        let Some(rel) = self.position(member.key, mode) else {
            return false;
        };
        let abs = match mode {
            PeerMode::Seeder => rel,
            PeerMode::Leech => self.seeder_count() + rel,
        };
        match self.members.get_mut(abs) {
            Some(m) => {
                *m = member;
                true
            }
            None => false,
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

    /// Heap bytes of the member vector (members and its list of chunks).
    pub fn member_bytes(&self) -> usize {
        self.members.heap_bytes()
    }

    /// Heap bytes of the position index (none below [`INDEX_ABOVE`] members).
    pub fn index_bytes(&self) -> usize {
        // hashbrown: one value slot plus one control byte per bucket.
        self.index().map_or(0, |index| {
            index.capacity() * 8 / 7 * (std::mem::size_of::<u32>() + 1)
        })
    }

    /// Heap bytes held by this swarm's own structures (capacity-based estimate).
    pub fn heap_bytes(&self) -> usize {
        let mut bytes = self.member_bytes() + self.index_bytes();
        if let Some(x) = &self.extra {
            bytes += std::mem::size_of::<SwarmExtra>();
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
                    return Err(format!("key {} twice in a swarm", { m.key }));
                }
                if self.position(m.key, mode) != Some(pos) {
                    return Err(format!("index of key {} is wrong", { m.key }));
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

/// The hash of a member key in a swarm's position index (keys are the engine's own handles).
fn key_hash(key: u64) -> u64 {
    let h = (key ^ (key >> 31)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^ (h >> 29)
}

/// Adds position `pos` (where `key` now is) to a swarm's position index; every other entry
/// names a member's current position.
fn idx_insert(index: &mut hashbrown::HashTable<u32>, members: &MemberVec, key: u64, pos: usize) {
    index.insert_unique(key_hash(key), pos as u32, |&v| {
        members.get(v as usize).map_or(0, |m| key_hash(m.key))
    });
}

/// Removes the entry of `key` at position `pos`.
fn idx_remove(index: &mut hashbrown::HashTable<u32>, key: u64, pos: usize) {
    if let Ok(entry) = index.find_entry(key_hash(key), |&v| v as usize == pos) {
        entry.remove();
    }
}

/// The member now at `to` moved there from `from`: its entry says so.
fn idx_move(index: &mut hashbrown::HashTable<u32>, members: &MemberVec, from: usize, to: usize) {
    let Some(key) = members.get(to).map(|m| m.key) else {
        return;
    };
    if let Some(v) = index.find_mut(key_hash(key), |&v| v as usize == from) {
        *v = to as u32;
    }
}

/// One shard of the swarm table: a slab of swarms (a swarm keeps its slot while it has members,
/// so the peers' swarm lists name it by `(shard, slot)` instead of repeating its id) and a hash
/// table of slots keyed by swarm id (4 bytes per entry: the id is stored once, in the slot).
pub(super) struct SwarmShard {
    pub swarms: SwarmTable,
    /// Randomness for peer-list sampling, per shard so that sampling needs no shared state.
    pub rng: SmallRng,
    /// Members of each mode over all swarms of this shard (summed by `Engine::counts`).
    pub seeders: usize,
    pub leechers: usize,
}

/// Fewest slots a swarm slab grows by.
const SLOT_STEP_MIN: usize = 8;

/// One occupied slot of a [`SwarmTable`]: 72 bytes, the id in stored form (hex ids packed to
/// half, `member.rs`) instead of a 65-byte [`SwarmId`].
#[derive(Debug)]
pub(super) struct SwarmSlot {
    id: CompactId,
    pub swarm: Swarm,
}

impl SwarmSlot {
    /// The swarm's id.
    pub fn id(&self) -> SwarmId {
        SwarmId(self.id.unpack().0)
    }

    /// The hash of the swarm's id (as received) with `hasher`.
    fn hash(&self, hasher: &foldhash::fast::RandomState) -> u64 {
        hasher.hash_one(self.id().as_bytes())
    }
}

/// The swarms of one shard: a slab with a free list and an index by id. Lookups take the id's
/// hash from the engine's swarm hasher (which also chose the shard, from other bits), so an
/// id is hashed once per request.
pub(super) struct SwarmTable {
    hasher: foldhash::fast::RandomState,
    index: LineIndex,
    slots: Vec<Option<SwarmSlot>>,
    /// Free slots below `slots.len()` (entries that are no longer free or beyond the end are
    /// skipped when taken).
    free: Vec<u32>,
    len: usize,
}

impl SwarmTable {
    /// An empty table; `hasher` is the engine's swarm hasher, and the index publishes where
    /// its buckets are into `geometry` (for [`Geometry::prefetch`]).
    pub fn new(hasher: foldhash::fast::RandomState, geometry: Arc<Geometry>) -> Self {
        SwarmTable {
            hasher,
            index: LineIndex::new(geometry),
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }

    fn hash(&self, id: &[u8]) -> u64 {
        self.hasher.hash_one(id)
    }

    /// The slot of swarm `id`, if it exists.
    pub fn slot_of(&self, id: &SwarmId) -> Option<u32> {
        self.slot_of_hashed(self.hash(id.as_bytes()), id)
    }

    /// As [`SwarmTable::slot_of`], given the id's hash `h` (the engine's swarm hasher).
    pub fn slot_of_hashed(&self, h: u64, id: &SwarmId) -> Option<u32> {
        let slots = &self.slots;
        let want = id.as_bytes();
        self.index.find(h, |i| {
            slots
                .get(i as usize)
                .and_then(|s| s.as_ref())
                .is_some_and(|s| s.id.matches(want))
        })
    }

    pub fn get(&self, id: &SwarmId) -> Option<&Swarm> {
        self.at(self.slot_of(id)?)
    }

    pub fn get_mut(&mut self, id: &SwarmId) -> Option<&mut Swarm> {
        let slot = self.slot_of(id)?;
        self.at_mut(slot)
    }

    /// The swarm in `slot`.
    pub fn at(&self, slot: u32) -> Option<&Swarm> {
        self.slots
            .get(slot as usize)
            .and_then(|s| s.as_ref())
            .map(|s| &s.swarm)
    }

    pub fn at_mut(&mut self, slot: u32) -> Option<&mut Swarm> {
        self.slots
            .get_mut(slot as usize)
            .and_then(|s| s.as_mut())
            .map(|s| &mut s.swarm)
    }

    /// The id of the swarm in `slot`.
    pub fn id_at(&self, slot: u32) -> Option<SwarmId> {
        self.slots
            .get(slot as usize)
            .and_then(|s| s.as_ref())
            .map(SwarmSlot::id)
    }

    /// Starts loading the slot that hash `h` most likely names ([`LineIndex::first_tagged`])
    /// into the cache. Reads the index bucket only.
    pub fn prefetch_probable(&self, h: u64) {
        self.index.prefetch_probable(h, |i| self.slots.get(i));
    }

    /// The swarm that hash `h` most likely names ([`LineIndex::first_tagged`]), without
    /// comparing ids: for a prefetch only.
    pub fn probable(&self, h: u64) -> Option<&Swarm> {
        let i = self.index.first_tagged(h)?;
        self.slots
            .get(i as usize)
            .and_then(|s| s.as_ref())
            .map(|s| &s.swarm)
    }

    /// Adds swarm `id` (not in the table yet), whose hash is `h`; returns its slot.
    pub fn insert(&mut self, h: u64, id: SwarmId, swarm: Swarm) -> u32 {
        let mut slot = None;
        while let Some(f) = self.free.pop() {
            if self.slots.get(f as usize).is_some_and(|s| s.is_none()) {
                slot = Some(f);
                break;
            }
        }
        let entry = Some(SwarmSlot {
            id: CompactId::new(id.as_bytes()),
            swarm,
        });
        let slot = match slot {
            Some(f) => {
                if let Some(s) = self.slots.get_mut(f as usize) {
                    *s = entry;
                }
                f
            }
            None => {
                // The slab grows by eighths, not by doubling: a 72-byte slot per swarm and
                // most shards' slabs grown once to their size, doubling left on average a
                // quarter of them unused (and a freed earlier copy for the allocator to keep).
                if self.slots.len() == self.slots.capacity() {
                    self.slots
                        .reserve_exact((self.slots.len() / 8).max(SLOT_STEP_MIN));
                }
                self.slots.push(entry);
                (self.slots.len() - 1) as u32
            }
        };
        let SwarmTable {
            hasher,
            index,
            slots,
            ..
        } = self;
        index.insert(h, slot, |i| {
            slots
                .get(i as usize)
                .and_then(|s| s.as_ref())
                .map_or(0, |s| s.hash(hasher))
        });
        self.len += 1;
        slot
    }

    /// Deletes the swarm in `slot`.
    pub fn remove_at(&mut self, slot: u32) -> Option<SwarmSlot> {
        let gone = self.slots.get_mut(slot as usize)?.take()?;
        let h = gone.hash(&self.hasher);
        self.index.remove(h, |i| i == slot);
        self.len -= 1;
        // Trailing free slots are given back; the others are reused first.
        while self.slots.last().is_some_and(|s| s.is_none()) {
            self.slots.pop();
        }
        if (slot as usize) < self.slots.len() {
            self.free.push(slot);
        }
        if self.slots.capacity() > 64 && self.slots.len() * 4 < self.slots.capacity() {
            self.slots.shrink_to(self.slots.len() * 2);
            self.free.retain(|&f| (f as usize) < self.slots.len());
            self.free.shrink_to(self.free.len() * 2);
        }
        let SwarmTable {
            hasher,
            index,
            slots,
            ..
        } = self;
        index.shrink(0, |i| {
            slots
                .get(i as usize)
                .and_then(|s| s.as_ref())
                .map_or(0, |s| s.hash(hasher))
        });
        Some(gone)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Every `(slot, id, swarm)`.
    pub fn iter(&self) -> impl Iterator<Item = (u32, SwarmId, &Swarm)> {
        self.slots
            .iter()
            .zip(0u32..)
            .filter_map(|(s, i)| s.as_ref().map(|s| (i, s.id(), &s.swarm)))
    }

    pub fn values(&self) -> impl Iterator<Item = &Swarm> {
        self.slots
            .iter()
            .filter_map(|s| s.as_ref().map(|s| &s.swarm))
    }

    /// Heap bytes of the slab, the free list and the index (capacity-based).
    pub fn table_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Option<SwarmSlot>>()
            + self.free.capacity() * 4
            + self.index.heap_bytes()
    }

    /// Checks that the index names every occupied slot once, by its id. For audits.
    pub fn check(&self) -> Result<(), String> {
        if self.index.len() != self.len || self.iter().count() != self.len {
            return Err("swarm index, slots and count differ".into());
        }
        for (slot, id, _) in self.iter() {
            if self.slot_of(&id) != Some(slot) {
                return Err(format!("{id:?} indexed wrongly"));
            }
        }
        Ok(())
    }
}

/// The id arena of a peer shard is compacted once this many of its bytes (and half of it) are
/// garbage (small in tests, so that the property tests compact it).
const ID_GARBAGE_MIN: usize = if cfg!(test) { 64 } else { 4096 };

/// No record (end of a bucket list).
pub(super) const NIL: u32 = u32::MAX;
/// Time buckets per peer shard (a ring): live deadlines span at most half of it. At most
/// 2^16 (a record keeps its ring slot in 16 bits).
const BUCKETS: usize = 1024;

/// Stored ids of at most this many bytes live in the record itself (a 40-character hex id
/// packs to 20, and so does a 20-byte binary id); longer ones in the shard's byte arena.
const INLINE_ID: usize = 20;

/// What few peers need of a record, in the box of its swarm list's spilled entries: the
/// addresses a peer announced, and the source address of a peer that registered over IPv6.
#[derive(Debug, Default)]
pub(super) struct RecordExtra {
    announced: Option<Box<[PeerAddr]>>,
    source_v6: Option<Ipv6Addr>,
}

impl super::swarm_list::Payload for RecordExtra {
    fn is_unused(&self) -> bool {
        self.announced.is_none() && self.source_v6.is_none()
    }
}

/// The registration of one peer (RFC 7846 per-peer-ID state machine). 72 bytes; its id is in
/// the record when it fits [`INLINE_ID`] (so that finding a peer by id reads its record and
/// nothing else), else in its shard's byte arena; its swarm list is inline while it is in at
/// most one swarm, and its handle ([`PeerShard::key`]) is derived from its shard, slot and
/// generation.
#[derive(Debug)]
pub(super) struct PeerRecord {
    /// The swarms the peer is in, with its mode in each; its box also holds the addresses
    /// the peer announced (none: the reflexive address `source_ip:port`) and an IPv6 source
    /// address ([`RecordExtra`]): most peers have none of the three.
    pub swarms: SwarmList<RecordExtra>,
    /// When the init timer (PEER REGISTERED) or track timer (TRACKING) runs out. Change it
    /// through [`PeerShard::set_deadline`], which keeps the bucket lists right.
    pub deadline: Time,
    /// The stored id when it fits ([`INLINE_ID`]); else its first four bytes are where the id
    /// starts in the shard's arena (little-endian, [`PeerShard::id_of`]).
    id: [u8; INLINE_ID],
    /// The ring slot whose bucket list holds the record, and its neighbours there.
    prev: u32,
    next: u32,
    /// The address the peer registered from when it is IPv4 (else in `extra`,
    /// [`PeerRecord::source_ip`]); requests naming this peer id from any other address are
    /// refused.
    source_v4: [u8; 4],
    /// When the peer registered: whole seconds of [`Time`] (saturating at `u32::MAX`, in
    /// the year 2106 for a Unix clock), so that the record holds no 8-byte time but its
    /// deadline. STAT_QUERY's online time is exact to the second.
    registered_s: u32,
    /// Length of the stored id, with `member::HEX` when it is packed hex.
    id_len: u8,
    pub state: PeerState,
    /// Generation of the record's handle ([`PeerShard::key`]).
    gen: u16,
    ring: u16,
    /// Port of the source address (the reflexive address's port).
    pub port: u16,
}

impl PeerRecord {
    /// A new record (not linked into a bucket yet, without its id: [`PeerShard::insert`]
    /// stores both).
    pub fn new(addrs: Option<Box<[PeerAddr]>>, source: SocketAddr, now: Time) -> Self {
        let mut record = PeerRecord {
            swarms: SwarmList::default(),
            deadline: now,
            id: [0; INLINE_ID],
            prev: NIL,
            next: NIL,
            source_v4: [0; 4],
            registered_s: u32::try_from(now.as_millis() / 1000).unwrap_or(u32::MAX),
            id_len: 0,
            state: PeerState::PeerRegistered,
            gen: 0,
            ring: 0,
            port: source.port(),
        };
        match source.ip().to_canonical() {
            IpAddr::V4(v4) => record.source_v4 = v4.octets(),
            IpAddr::V6(v6) => record.extra_mut().source_v6 = Some(v6),
        }
        record.set_announced(addrs);
        record
    }

    fn extra_mut(&mut self) -> &mut RecordExtra {
        self.swarms.extra_mut()
    }

    fn extra(&self) -> Option<&RecordExtra> {
        self.swarms.extra()
    }

    /// Sets the addresses the peer announced (`None`: its reflexive address).
    pub fn set_announced(&mut self, addrs: Option<Box<[PeerAddr]>>) {
        match addrs {
            Some(a) => self.extra_mut().announced = Some(a),
            None => {
                if let Some(x) = self.swarms.extra_if_any() {
                    x.announced = None;
                }
                self.swarms.trim();
            }
        }
    }

    /// Heap bytes of the boxed part: spilled swarm entries, announced addresses, IPv6 source.
    pub fn extra_bytes(&self) -> usize {
        self.swarms.heap_bytes()
            + self
                .extra()
                .and_then(|x| x.announced.as_ref())
                .map_or(0, |a| std::mem::size_of_val(&a[..]))
    }

    /// The address the peer registered from (canonical: IPv4 as IPv4).
    pub fn source_ip(&self) -> IpAddr {
        match self.extra().and_then(|x| x.source_v6) {
            Some(v6) => IpAddr::V6(v6),
            None => IpAddr::from(self.source_v4),
        }
    }

    /// When the peer registered, to the second ([`PeerRecord::registered_s`]).
    pub fn registered_at(&self) -> Time {
        Time::from_secs(u64::from(self.registered_s))
    }

    /// The addresses the peer announced (`None`: its reflexive address).
    pub fn announced(&self) -> Option<&[PeerAddr]> {
        self.extra().and_then(|x| x.announced.as_deref())
    }

    /// The reflexive address: the source address the peer registered from.
    pub fn reflexive(&self) -> SocketAddr {
        SocketAddr::new(self.source_ip(), self.port)
    }

    /// The peer's addresses as FIND and STAT_QUERY list them.
    pub fn addr_list(&self) -> SmallVec<[PeerAddr; 2]> {
        match self.announced() {
            Some(list) => list.iter().copied().collect(),
            None => smallvec::smallvec![PeerAddr::reflexive(self.reflexive())],
        }
    }
}

/// One shard of the peer-status registry: records densely in a vector (a record leaving is
/// replaced by the last one, whose memberships the engine then re-keys), their ids in one byte
/// arena (compacted when half of it is garbage), a hash table of positions keyed by peer id
/// (4 bytes per slot), and the bucket lists of the expiry.
pub(super) struct PeerShard {
    /// This shard's number (the high 16 bits of its handles).
    number: u16,
    /// Generation of the next handle given out, so that a stale handle never names the next
    /// occupant of its slot.
    next_gen: u16,
    hasher: foldhash::fast::RandomState,
    index: LineIndex,
    pub records: ChunkedVec<PeerRecord, RECORD_CHUNK>,
    /// The records' ids, back to back.
    ids: ByteArena<ID_CHUNK>,
    /// Bytes of `ids` no record uses any more.
    ids_garbage: usize,
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

/// Records per chunk of a peer shard's record vector (36 KiB of 72-byte records).
const RECORD_CHUNK: usize = 512;
/// Bytes per chunk of a peer shard's id arena.
const ID_CHUNK: usize = 16 * 1024;

/// The id bytes of `record` in `ids` (empty if out of range, which never happens).
fn id_in<'a>(ids: &'a ByteArena<ID_CHUNK>, record: &'a PeerRecord) -> &'a [u8] {
    let len = usize::from(record.id_len & !HEX);
    match arena_place(record) {
        Some(place) => ids.get(place, len),
        None => record.id.get(..len).unwrap_or(&[]),
    }
}

/// Where the record's id is in the arena; `None` when it is in the record.
fn arena_place(record: &PeerRecord) -> Option<u32> {
    let len = usize::from(record.id_len & !HEX);
    (len > INLINE_ID).then(|| {
        let [a, b, c, d, ..] = record.id;
        u32::from_le_bytes([a, b, c, d])
    })
}

/// Records the arena place of a record's id (which does not fit the record).
fn set_arena_place(record: &mut PeerRecord, place: u32) {
    if let Some(head) = record.id.get_mut(..4) {
        head.copy_from_slice(&place.to_le_bytes());
    }
}

impl PeerShard {
    /// An empty shard numbered `number`; `max_timer_secs` is the longest timer a deadline is
    /// set with (it sizes the buckets). `hasher` hashes stored ids for the shard's index; the
    /// engine gives every shard its own peer hasher, whose hash of a stored id also chose the
    /// shard (see [`PeerShard::find_stored`]), so that a lookup hashes the id once. The index
    /// publishes where its buckets are into `geometry` (for [`Geometry::prefetch`]).
    pub fn new(
        number: u16,
        max_timer_secs: u64,
        hasher: foldhash::fast::RandomState,
        geometry: Arc<Geometry>,
    ) -> Self {
        let span_ms = max_timer_secs.saturating_mul(1000).saturating_mul(2);
        let bucket_ms = span_ms.div_ceil(BUCKETS as u64).max(1000);
        PeerShard {
            number,
            next_gen: 0,
            hasher,
            index: LineIndex::new(geometry),
            records: ChunkedVec::default(),
            ids: ByteArena::default(),
            ids_garbage: 0,
            bucket_ms,
            heads: vec![NIL; BUCKETS].into_boxed_slice(),
            tails: vec![NIL; BUCKETS].into_boxed_slice(),
            next_bucket: u64::MAX,
            walk: NIL,
        }
    }

    /// The stored id bytes of a record of this shard (packed when it is hex, see
    /// `member.rs`).
    pub fn id_of<'a>(&'a self, record: &'a PeerRecord) -> &'a [u8] {
        id_in(&self.ids, record)
    }

    /// The peer id of a record of this shard.
    pub fn peer_id_of(&self, record: &PeerRecord) -> PeerId {
        super::member::unpack(self.id_of(record), record.id_len)
    }

    /// The peer list entry of a record of this shard, the peer in mode `mode`.
    pub fn peer_info_of(&self, record: &PeerRecord, mode: PeerMode) -> PeerInfo {
        let reflexive = [PeerAddr::reflexive(record.reflexive())];
        PeerInfo::from_stored(
            self.id_of(record),
            record.id_len,
            mode,
            record.announced().unwrap_or(&reflexive),
        )
    }

    /// The membership of the record at `pos`: its handle and the copy of its peer-list entry.
    pub fn member_at(&self, pos: usize) -> Member {
        let Some(r) = self.records.get(pos) else {
            return Member::keyed(self.key_at(pos));
        };
        let key = Self::key(self.number, r.gen, pos as u32);
        if r.extra().is_none() {
            // No announced address and an IPv4 source (the box holds either otherwise).
            return Member::reflexive_v4(key, self.id_of(r), r.id_len, r.source_v4, r.port);
        }
        Member::new(key, self.id_of(r), r.id_len, r.announced(), r.reflexive())
    }

    /// The handle of the record at `pos`.
    pub fn key_at(&self, pos: usize) -> u64 {
        let gen = self.records.get(pos).map_or(0, |r| r.gen);
        Self::key(self.number, gen, pos as u32)
    }

    /// Heap bytes of the records and the id arena.
    pub fn record_bytes(&self) -> usize {
        self.records.heap_bytes() + self.ids.heap_bytes()
    }

    /// The handle of slot `slot` with generation `gen` in shard `shard`.
    pub fn key(shard: u16, gen: u16, slot: u32) -> u64 {
        (u64::from(shard) << 48) | (u64::from(gen) << 32) | u64::from(slot)
    }

    /// (shard, slot) of a handle.
    pub fn split_key(key: u64) -> (usize, usize) {
        ((key >> 48) as usize, (key & 0xffff_ffff) as usize)
    }

    fn fresh_gen(&mut self) -> u16 {
        self.next_gen = self.next_gen.wrapping_add(1);
        self.next_gen
    }

    fn hash(&self, peer_id: &[u8]) -> u64 {
        self.hasher.hash_one(peer_id)
    }

    pub fn find(&self, peer_id: &PeerId) -> Option<usize> {
        let stored = StoredId::pack(peer_id.as_bytes());
        self.find_stored(&stored, self.hash(stored.bytes()))
    }

    /// As [`PeerShard::find`], given the id's stored form and its hash `h` by the shard's
    /// hasher (the engine's peer hasher, which chose the shard from the same hash).
    pub fn find_stored(&self, stored: &StoredId, h: u64) -> Option<usize> {
        let records = &self.records;
        let ids = &self.ids;
        let (id, len) = (stored.bytes(), stored.len_flag());
        if let Some(inline) = stored
            .padded::<INLINE_ID>()
            .filter(|_| id.len() <= INLINE_ID)
        {
            // An id kept in its record is zero after its end there as in `stored`: one
            // fixed-size comparison instead of a call to compare slices.
            return self
                .index
                .find(h, |i| {
                    records
                        .get(i as usize)
                        .is_some_and(|r| r.id_len == len && r.id == *inline)
                })
                .map(|i| i as usize);
        }
        self.index
            .find(h, |i| {
                records
                    .get(i as usize)
                    .is_some_and(|r| r.id_len == len && id_in(ids, r) == id)
            })
            .map(|i| i as usize)
    }

    /// Starts loading the record that hash `h` most likely names ([`LineIndex::first_tagged`])
    /// into the cache. Reads the index bucket only.
    pub fn prefetch_probable(&self, h: u64) {
        self.index.prefetch_probable(h, |i| self.records.get(i));
    }

    /// The record a handle names, if it still does.
    pub fn by_key(&self, key: u64) -> Option<&PeerRecord> {
        let (_, slot) = Self::split_key(key);
        let gen = (key >> 32) as u16;
        self.records.get(slot).filter(|r| r.gen == gen)
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Entries and heap bytes of the id index (for memory estimates and audits).
    pub fn index_len_and_bytes(&self) -> (usize, usize) {
        (self.index.len(), self.index.heap_bytes())
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
        let Some((ring, old)) = self
            .records
            .get(pos)
            .map(|r| (usize::from(r.ring), r.deadline))
        else {
            return;
        };
        // A later deadline leaves the record where it is listed (no earlier than its old
        // deadline's bucket, so no later than the new one's): the expiry walk files it again
        // when it gets there ([`PeerShard::refile`]). Refreshing a peer, which every request
        // does, then touches no other record. An earlier deadline moves it at once.
        if deadline >= old || ring == self.ring_of(deadline) {
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

    /// Lists the record at `pos`, not due yet, in the bucket of its deadline if it is listed
    /// in an earlier one (its deadline was pushed back, see [`PeerShard::set_deadline`]).
    pub fn refile(&mut self, pos: usize) {
        let Some((ring, deadline)) = self
            .records
            .get(pos)
            .map(|r| (usize::from(r.ring), r.deadline))
        else {
            return;
        };
        let want = self.ring_of(deadline);
        if want != ring {
            self.unlink(pos as u32);
            self.link_into(pos as u32, want);
        }
    }

    /// Adds a record for `peer_id`, which is not in the shard yet; gives it its handle and
    /// stores its id. Returns its position.
    pub fn insert(&mut self, peer_id: &PeerId, mut record: PeerRecord) -> usize {
        let pos = self.records.len();
        let stored = StoredId::pack(peer_id.as_bytes());
        let id = stored.bytes();
        record.gen = self.fresh_gen();
        record.id_len = stored.len_flag();
        if id.len() <= INLINE_ID {
            record.id[..id.len()].copy_from_slice(id);
        } else {
            set_arena_place(&mut record, self.ids.push(id));
        }
        let h = self.hash(id);
        self.records.push(record);
        let PeerShard {
            hasher,
            index,
            records,
            ids,
            ..
        } = self;
        index.insert(h, pos as u32, |i| {
            records
                .get(i as usize)
                .map_or(0, |r| hasher.hash_one(id_in(ids, r)))
        });
        self.link(pos as u32);
        pos
    }

    /// Deletes the record at `pos`; the caller has already taken it out of its swarms. The
    /// last record moves into `pos` with a new handle: the second value is its (old, new)
    /// handle, and the caller re-keys its memberships. The removed record's id is no longer
    /// readable.
    pub fn remove_at(&mut self, pos: usize) -> Option<(PeerRecord, Option<(u64, u64)>)> {
        let h = self.hash(self.id_of(self.records.get(pos)?));
        self.unlink(pos as u32);
        self.index.remove(h, |i| i as usize == pos);
        let last = self.records.len() - 1;
        let result = if pos != last {
            // The last record leaves its list and rejoins it from `pos`: its neighbours and the
            // list ends point to it by position.
            let walk_was_last = self.walk == last as u32;
            let ring = self.records.get(last).map_or(0, |r| usize::from(r.ring));
            self.unlink(last as u32);
            let old_key = self.key_at(last);
            let record = self.records.swap_remove(pos)?;
            let gen = self.fresh_gen();
            let moved = self.records.get_mut(pos)?;
            moved.gen = gen;
            let new_key = Self::key(self.number, gen, pos as u32);
            let hm = self.hash(self.id_of(self.records.get(pos)?));
            if let Some(slot) = self.index.find_mut(hm, |i| i as usize == last) {
                *slot = pos as u32;
            }
            // Relinked at the tail of its list: a walk of that list still reaches it. A walk
            // that was about to look at it goes on with its old successor, or, when it was the
            // tail, with it at its new place.
            self.link_into(pos as u32, ring);
            if walk_was_last && self.walk == NIL {
                self.walk = pos as u32;
            }
            (record, Some((old_key, new_key)))
        } else {
            (self.records.pop()?, None)
        };
        if arena_place(&result.0).is_some() {
            self.ids_garbage += usize::from(result.0.id_len & !HEX);
        }
        self.shrink();
        Some(result)
    }

    /// Compacts the id arena when at least half of it is garbage and gives back memory of an
    /// id index that became mostly empty (the record vector frees its chunks itself).
    fn shrink(&mut self) {
        if self.records.is_empty() {
            self.ids = ByteArena::default();
            self.ids_garbage = 0;
        } else if self.ids_garbage >= ID_GARBAGE_MIN && self.ids_garbage * 2 >= self.ids.len() {
            let mut ids = ByteArena::default();
            for r in self.records.iter_mut() {
                if arena_place(r).is_some() {
                    let place = ids.push(id_in(&self.ids, r));
                    set_arena_place(r, place);
                }
            }
            self.ids = ids;
            self.ids_garbage = 0;
        }
        let PeerShard {
            hasher,
            index,
            records,
            ids,
            ..
        } = self;
        index.shrink(0, |i| {
            records
                .get(i as usize)
                .map_or(0, |r| hasher.hash_one(id_in(ids, r)))
        });
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
        Member::keyed(key)
    }

    fn mode(seeder: bool) -> PeerMode {
        if seeder {
            PeerMode::Seeder
        } else {
            PeerMode::Leech
        }
    }

    fn record(deadline_ms: u64) -> PeerRecord {
        let mut r = PeerRecord::new(
            None,
            SocketAddr::from(([10, 0, 0, 1], 7000)),
            Time::from_millis(deadline_ms),
        );
        r.deadline = Time::from_millis(deadline_ms);
        r
    }

    #[test]
    fn a_record_is_72_bytes() {
        assert!(std::mem::size_of::<PeerRecord>() <= 72);
        assert!(std::mem::size_of::<Option<SwarmSlot>>() <= 72);
        assert_eq!(std::mem::size_of::<SwarmList<RecordExtra>>(), 16);
    }

    #[test]
    fn a_record_keeps_its_source_and_announced_addresses() {
        let v4: SocketAddr = "10.1.2.3:7000".parse().expect("addr");
        let v6: SocketAddr = "[2001:db8::1]:7001".parse().expect("addr");
        let mapped: SocketAddr = "[::ffff:10.1.2.3]:7000".parse().expect("addr");
        let announced: Box<[PeerAddr]> = vec![PeerAddr::reflexive(v6)].into();
        for (source, ip) in [(v4, v4.ip()), (v6, v6.ip()), (mapped, v4.ip())] {
            let mut r = PeerRecord::new(None, source, Time::from_millis(12_345));
            assert_eq!(r.source_ip(), ip);
            assert_eq!(r.reflexive(), SocketAddr::new(ip, source.port()));
            assert_eq!(r.announced(), None);
            assert_eq!(r.registered_at(), Time::from_secs(12));
            r.set_announced(Some(announced.clone()));
            assert_eq!(r.announced(), Some(&announced[..]));
            assert_eq!(r.source_ip(), ip);
            r.set_announced(None);
            assert_eq!(r.announced(), None);
            assert_eq!(r.source_ip(), ip);
            assert_eq!(
                r.extra().is_some(),
                ip.is_ipv6(),
                "the box only when needed"
            );
        }
    }

    /// A swarm larger than several member chunks (seeders and leechers moving across chunk
    /// boundaries, with its index) against a plain map model.
    #[test]
    fn a_swarm_of_several_chunks_matches_a_model() {
        use rand::{Rng, SeedableRng};
        let mut rng = SmallRng::seed_from_u64(11);
        let mut swarm = Swarm::default();
        let mut model: BTreeMap<u64, PeerMode> = BTreeMap::new();
        let keys = 3 * MEMBER_CHUNK as u64;
        for step in 0..20_000 {
            let key = rng.gen_range(0..keys);
            // Grow for the first half, then mostly shrink, so that chunks fill and empty.
            let grow = if step < 10_000 { 3 } else { 1 };
            let m = mode(rng.gen_bool(0.3));
            match (model.get(&key).copied(), rng.gen_range(0..4)) {
                (None, op) if op < grow => {
                    swarm.insert(member(key), m);
                    model.insert(key, m);
                }
                (Some(old), 0) => {
                    assert!(swarm.change_mode(key, old, m));
                    model.insert(key, m);
                }
                (Some(old), _) if step >= 10_000 || rng.gen_bool(0.2) => {
                    assert!(swarm.remove(key, old).is_some());
                    model.remove(&key);
                }
                _ => {}
            }
            if step % 97 == 0 {
                if let Err(e) = swarm.check() {
                    panic!("step {step}: {e}");
                }
                for mo in [PeerMode::Seeder, PeerMode::Leech] {
                    let mut got: Vec<u64> = swarm.members(mo).iter().map(|m| m.key).collect();
                    got.sort_unstable();
                    let want: Vec<u64> = model
                        .iter()
                        .filter(|(_, v)| **v == mo)
                        .map(|(k, _)| *k)
                        .collect();
                    assert_eq!(got, want, "step {step}");
                }
            }
        }
        assert!(swarm.check().is_ok());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// Records stay findable by id and by handle, and listed exactly once in the bucket
        /// lists, through inserts, deadline changes and removals (which move the last record).
        #[test]
        fn peer_shard_keeps_index_handles_and_buckets(
            ops in prop::collection::vec((0u8..3, 0u16..60, 0u64..400_000), 1..300)
        ) {
            let mut shard = PeerShard::new(3, 120, Default::default(), Default::default());
            let mut live: BTreeMap<u16, ()> = BTreeMap::new();
            for (op, n, t) in ops {
                // Every third id is too long for the record and lives in the arena.
                let id = if n % 3 == 0 {
                    format!("peer-{n}-with-an-id-longer-than-twenty-bytes")
                } else {
                    format!("peer-{n}")
                };
                let id = PeerId::new(id.as_bytes()).expect("id of at most 64 bytes");
                match (op, shard.find(&id)) {
                    (0, None) => {
                        let pos = shard.insert(&id, record(t));
                        prop_assert_eq!(shard.find(&id), Some(pos));
                        live.insert(n, ());
                    }
                    (1, Some(pos)) => shard.set_deadline(pos, Time::from_millis(t)),
                    (2, Some(pos)) => {
                        let last = shard.len() - 1;
                        let moving = (pos != last).then(|| shard.records.get(last).map(|r| shard.peer_id_of(r))).flatten();
                        let (_, moved) = shard.remove_at(pos).expect("present");
                        prop_assert_eq!(shard.find(&id), None);
                        prop_assert_eq!(moved.is_some(), pos != last);
                        if let Some((old, new)) = moved {
                            prop_assert!(shard.by_key(old).is_none());
                            prop_assert!(shard.by_key(new).is_some());
                            prop_assert_eq!(PeerShard::split_key(new), (3, pos));
                            prop_assert_eq!(moving.and_then(|m| shard.find(&m)), Some(pos));
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
                    prop_assert_eq!(shard.find(&shard.peer_id_of(r)), Some(pos));
                    let key = shard.key_at(pos);
                    prop_assert_eq!(PeerShard::split_key(key), (3, pos));
                    prop_assert!(shard.by_key(key).is_some());
                }
                prop_assert!(shard.ids_garbage <= shard.ids.len());
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
