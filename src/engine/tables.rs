//! The engine's two sharded tables and their compact entries.
//!
//! - The swarm table maps a [`SwarmId`] to a [`Swarm`]: one vector of 16-byte [`Member`]s,
//!   seeders first and then leechers (so "seeders first" and the counts are O(1)), and a boxed
//!   extra block, allocated only when needed, with a position index (large swarms only), chunk
//!   sets (only members that announced some) and traffic statistics (opentracker style: most
//!   swarms are tiny, most peers hold no chunk set).
//! - The peer table maps a [`PeerId`] to a [`PeerRecord`] (state, timers, source address and the
//!   swarms the peer is in, packed by `swarm_list.rs`). Records live in a vector with a hash
//!   table of positions, so the expiry cursor can walk a shard in bounded batches.
//!
//! What FIND must return about a peer (its id and addresses) lives once per peer in an
//! immutable, shared [`PeerCard`]; every membership holds a pointer to it. When a peer announces
//! new addresses the card is replaced in each of its memberships.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Arc;

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

/// What a peer list says about one peer. Immutable; shared by all memberships of the peer.
#[derive(Debug, PartialEq)]
pub(super) struct PeerCard {
    pub peer_id: PeerId,
    pub addrs: SmallVec<[PeerAddr; 2]>,
}

/// One membership in a swarm: the peer's engine-wide key (unique for the engine's life) and its
/// card. 16 bytes.
#[derive(Clone, Debug)]
pub(super) struct Member {
    pub key: u64,
    pub card: Arc<PeerCard>,
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

    /// Replaces a member's card (new addresses).
    pub fn replace_card(&mut self, key: u64, mode: PeerMode, card: &Arc<PeerCard>) {
        let Some(rel) = self.position(key, mode) else {
            return;
        };
        let abs = match mode {
            PeerMode::Seeder => rel,
            PeerMode::Leech => self.seeder_count() + rel,
        };
        if let Some(m) = self.members.get_mut(abs) {
            m.card = Arc::clone(card);
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

    /// Heap bytes held by this swarm's own structures (capacity-based estimate; the shared
    /// cards are counted by the peer table).
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

/// The registration of one peer (RFC 7846 per-peer-ID state machine).
#[derive(Debug)]
pub(super) struct PeerRecord {
    pub key: u64,
    pub card: Arc<PeerCard>,
    pub state: PeerState,
    pub registered_at: Time,
    /// When the init timer (PEER REGISTERED) or track timer (TRACKING) runs out.
    pub deadline: Time,
    /// The address the peer registered from; requests naming this peer id from any other
    /// address are refused.
    pub source_ip: IpAddr,
    /// The swarms the peer is in, with its mode in each.
    pub swarms: SwarmList,
}

impl PeerRecord {
    pub fn mode_in(&self, swarm_id: &SwarmId) -> Option<PeerMode> {
        self.swarms.mode_in(swarm_id)
    }
}

/// One shard of the peer table: records in a vector (so the expiry cursor can walk it) and a
/// hash table of positions keyed by the record's peer id (4 bytes per slot: the id itself is
/// stored once, in the record's card).
#[derive(Default)]
pub(super) struct PeerShard {
    hasher: foldhash::fast::RandomState,
    index: hashbrown::HashTable<u32>,
    pub records: Vec<PeerRecord>,
    /// Next record the expiry walk looks at.
    pub cursor: usize,
}

impl PeerShard {
    fn hash(&self, peer_id: &PeerId) -> u64 {
        self.hasher.hash_one(peer_id.as_bytes())
    }

    pub fn find(&self, peer_id: &PeerId) -> Option<usize> {
        let records = &self.records;
        self.index
            .find(self.hash(peer_id), |&i| {
                records
                    .get(i as usize)
                    .is_some_and(|r| r.card.peer_id == *peer_id)
            })
            .map(|&i| i as usize)
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Index slots (for memory estimates and audits).
    pub fn index_len_and_capacity(&self) -> (usize, usize) {
        (self.index.len(), self.index.capacity())
    }

    /// Adds a record whose peer id is not in the shard yet.
    pub fn insert(&mut self, record: PeerRecord) -> usize {
        let pos = self.records.len();
        let h = self.hash(&record.card.peer_id);
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
                .map_or(0, |r| hasher.hash_one(r.card.peer_id.as_bytes()))
        });
        pos
    }

    /// Deletes the record at `pos` (swap_remove); the caller has already taken it out of its
    /// swarms.
    pub fn remove_at(&mut self, pos: usize) -> Option<PeerRecord> {
        let h = self.hash(&self.records.get(pos)?.card.peer_id);
        if let Ok(entry) = self.index.find_entry(h, |&i| i as usize == pos) {
            entry.remove();
        }
        let last = self.records.len() - 1;
        let record = self.records.swap_remove(pos);
        if pos != last {
            if let Some(moved) = self.records.get(pos) {
                let hm = self.hasher.hash_one(moved.card.peer_id.as_bytes());
                if let Some(slot) = self.index.find_mut(hm, |&i| i as usize == last) {
                    *slot = pos as u32;
                }
            }
        }
        if self.records.capacity() > 64 && self.records.len() * 4 < self.records.capacity() {
            self.records.shrink_to(self.records.len() * 2);
        }
        Some(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn member(key: u64) -> Member {
        let peer_id = PeerId::new(format!("k{key}").as_bytes()).expect("short id");
        Member {
            key,
            card: Arc::new(PeerCard {
                peer_id,
                addrs: SmallVec::new(),
            }),
        }
    }

    fn mode(seeder: bool) -> PeerMode {
        if seeder {
            PeerMode::Seeder
        } else {
            PeerMode::Leech
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

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
