//! The engine's two sharded tables and their compact entries.
//!
//! - The swarm table maps a [`SwarmId`] to a [`Swarm`]: two vectors of 16-byte [`Member`]s
//!   (seeders and leechers, so "seeders first" and the counts are O(1)), a position index that
//!   only large swarms carry, and a side map of chunk sets that only exists when some member
//!   announced chunks (opentracker style: most swarms are tiny, most peers hold no chunk set).
//! - The peer table maps a [`PeerId`] to a [`PeerRecord`] (state, timers, source address and the
//!   swarms the peer is in). Records live in a vector with an id -> position map, so the expiry
//!   cursor can walk a shard in bounded batches.
//!
//! What FIND must return about a peer (its id and addresses) lives once per peer in an
//! immutable, shared [`PeerCard`]; every membership holds a pointer to it. When a peer announces
//! new addresses the card is replaced in each of its memberships.

use std::net::IpAddr;
use std::sync::Arc;

use rand::rngs::SmallRng;
use smallvec::SmallVec;

use super::types::{ChunkRange, PeerAddr, PeerId, PeerMode, PeerState, SwarmId, Time};

/// Hash map with the fast, DoS-seeded foldhash hasher (never SipHash on the hot path).
pub(super) type FastMap<K, V> = hashbrown::HashMap<K, V, foldhash::fast::RandomState>;

/// A swarm grows its position index when it has more members than this; below, removal scans
/// the (short, contiguous) member vector instead.
const INDEX_ABOVE: usize = 32;
/// A swarm drops its index again when it shrinks to this size (hysteresis).
const INDEX_DROP_AT: usize = 16;
/// Bit 31 of an index entry marks a leecher position; positions stay below it (the engine caps
/// `max_peers_per_swarm` accordingly).
const LEECH_BIT: u32 = 1 << 31;
/// Largest swarm the position encoding supports.
pub(super) const MAX_SWARM_MEMBERS: usize = (LEECH_BIT - 1) as usize;

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

/// One swarm.
#[derive(Debug, Default)]
pub(super) struct Swarm {
    pub seeders: Vec<Member>,
    pub leechers: Vec<Member>,
    /// key -> position in `seeders`, or `LEECH_BIT | position` in `leechers`. Only for swarms
    /// above [`INDEX_ABOVE`] members.
    index: Option<Box<FastMap<u64, u32>>>,
    /// key -> sorted, merged chunk ranges (JOIN_CHUNK). `None` while no member holds any.
    chunks: Option<Box<FastMap<u64, Box<[ChunkRange]>>>>,
    /// Summed STAT_REPORT figures.
    pub uploaded_bytes: u64,
    pub downloaded_bytes: u64,
}

impl Swarm {
    pub fn len(&self) -> usize {
        self.seeders.len() + self.leechers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seeders.is_empty() && self.leechers.is_empty()
    }

    pub fn members(&self, mode: PeerMode) -> &[Member] {
        match mode {
            PeerMode::Seeder => &self.seeders,
            PeerMode::Leech => &self.leechers,
        }
    }

    fn members_mut(&mut self, mode: PeerMode) -> &mut Vec<Member> {
        match mode {
            PeerMode::Seeder => &mut self.seeders,
            PeerMode::Leech => &mut self.leechers,
        }
    }

    /// Position of `key` in the `mode` vector.
    pub fn position(&self, key: u64, mode: PeerMode) -> Option<usize> {
        match &self.index {
            Some(index) => {
                let entry = *index.get(&key)?;
                let is_leech = entry & LEECH_BIT != 0;
                (is_leech == (mode == PeerMode::Leech)).then_some((entry & !LEECH_BIT) as usize)
            }
            None => self.members(mode).iter().position(|m| m.key == key),
        }
    }

    fn encode(mode: PeerMode, pos: usize) -> u32 {
        // Positions are below MAX_SWARM_MEMBERS (the engine's limit), so this never truncates.
        let pos = pos as u32;
        match mode {
            PeerMode::Seeder => pos,
            PeerMode::Leech => pos | LEECH_BIT,
        }
    }

    /// Adds a member that is not in the swarm yet.
    pub fn insert(&mut self, member: Member, mode: PeerMode) {
        let key = member.key;
        let list = self.members_mut(mode);
        list.push(member);
        let pos = list.len() - 1;
        if let Some(index) = &mut self.index {
            index.insert(key, Self::encode(mode, pos));
        } else if self.len() > INDEX_ABOVE {
            self.build_index();
        }
    }

    fn build_index(&mut self) {
        let mut index = FastMap::with_capacity_and_hasher(self.len(), Default::default());
        for (pos, m) in self.seeders.iter().enumerate() {
            index.insert(m.key, Self::encode(PeerMode::Seeder, pos));
        }
        for (pos, m) in self.leechers.iter().enumerate() {
            index.insert(m.key, Self::encode(PeerMode::Leech, pos));
        }
        self.index = Some(Box::new(index));
    }

    /// Takes a member out of the `mode` vector (swap_remove), keeping its chunk set.
    fn take(&mut self, key: u64, mode: PeerMode) -> Option<Member> {
        let pos = self.position(key, mode)?;
        let list = self.members_mut(mode);
        let member = list.swap_remove(pos);
        let moved = list.get(pos).map(|m| m.key);
        if let Some(index) = &mut self.index {
            index.remove(&key);
            if let Some(moved) = moved {
                index.insert(moved, Self::encode(mode, pos));
            }
        }
        Some(member)
    }

    /// Removes a member and its chunk set. `None` when it was not a `mode` member.
    pub fn remove(&mut self, key: u64, mode: PeerMode) -> Option<Member> {
        let member = self.take(key, mode)?;
        if let Some(chunks) = &mut self.chunks {
            chunks.remove(&key);
            if chunks.is_empty() {
                self.chunks = None;
            }
        }
        if self.len() <= INDEX_DROP_AT {
            self.index = None;
        }
        self.shrink_if_sparse();
        Some(member)
    }

    /// Gives back memory of vectors that became mostly empty (keeps long-lived big swarms that
    /// shrank from holding their peak capacity).
    fn shrink_if_sparse(&mut self) {
        for list in [&mut self.seeders, &mut self.leechers] {
            if list.capacity() > 8 && list.len() * 4 < list.capacity() {
                list.shrink_to(list.len() * 2);
            }
        }
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
        if let Some(pos) = self.position(key, mode) {
            if let Some(m) = self.members_mut(mode).get_mut(pos) {
                m.card = Arc::clone(card);
            }
        }
    }

    /// Sets (or, with an empty set, clears) the chunk set of a member.
    pub fn set_chunks(&mut self, key: u64, ranges: Box<[ChunkRange]>) {
        if ranges.is_empty() {
            if let Some(chunks) = &mut self.chunks {
                chunks.remove(&key);
                if chunks.is_empty() {
                    self.chunks = None;
                }
            }
            return;
        }
        self.chunks
            .get_or_insert_with(Default::default)
            .insert(key, ranges);
    }

    /// The chunk set of a member (empty when it announced none).
    pub fn chunks_of(&self, key: u64) -> &[ChunkRange] {
        self.chunks
            .as_ref()
            .and_then(|c| c.get(&key))
            .map_or(&[], |r| &r[..])
    }

    /// Whether any member holds a chunk set at all (FIND with chunks is empty otherwise).
    pub fn has_chunk_sets(&self) -> bool {
        self.chunks.is_some()
    }

    /// Heap bytes held by this swarm's own structures (capacity-based estimate; the shared
    /// cards are counted by the peer table).
    pub fn heap_bytes(&self) -> usize {
        let member = std::mem::size_of::<Member>();
        let mut bytes = (self.seeders.capacity() + self.leechers.capacity()) * member;
        if let Some(index) = &self.index {
            // hashbrown: one (key, value) slot plus one control byte per bucket.
            bytes += index.capacity() * 8 / 7 * (std::mem::size_of::<(u64, u32)>() + 1);
        }
        if let Some(chunks) = &self.chunks {
            bytes +=
                chunks.capacity() * 8 / 7 * (std::mem::size_of::<(u64, Box<[ChunkRange]>)>() + 1);
            bytes += chunks
                .values()
                .map(|r| r.len() * std::mem::size_of::<ChunkRange>())
                .sum::<usize>();
        }
        bytes
    }

    /// Checks the swarm's own invariants (index matches vectors, keys unique). For audits.
    pub fn check(&self) -> Result<(), String> {
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
        if let Some(index) = &self.index {
            if index.len() != self.len() {
                return Err("index size differs from member count".into());
            }
        }
        if let Some(chunks) = &self.chunks {
            if chunks.keys().any(|k| !seen.contains(k)) {
                return Err("chunk set of a non-member".into());
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
    pub swarms: SmallVec<[(SwarmId, PeerMode); 1]>,
}

impl PeerRecord {
    pub fn mode_in(&self, swarm_id: &SwarmId) -> Option<PeerMode> {
        self.swarms
            .iter()
            .find(|(s, _)| s == swarm_id)
            .map(|(_, m)| *m)
    }
}

/// One shard of the peer table: records in a vector (so the expiry cursor can walk it) and an
/// id -> position map.
#[derive(Default)]
pub(super) struct PeerShard {
    pub index: FastMap<PeerId, u32>,
    pub records: Vec<PeerRecord>,
    /// Next record the expiry walk looks at.
    pub cursor: usize,
}

impl PeerShard {
    pub fn find(&self, peer_id: &PeerId) -> Option<usize> {
        self.index.get(peer_id).map(|&i| i as usize)
    }

    pub fn insert(&mut self, record: PeerRecord) -> usize {
        let pos = self.records.len();
        self.index.insert(record.card.peer_id, pos as u32);
        self.records.push(record);
        pos
    }

    /// Deletes the record at `pos` (swap_remove); the caller has already taken it out of its
    /// swarms.
    pub fn remove_at(&mut self, pos: usize) -> Option<PeerRecord> {
        if pos >= self.records.len() {
            return None;
        }
        let record = self.records.swap_remove(pos);
        self.index.remove(&record.card.peer_id);
        if let Some(moved) = self.records.get(pos) {
            self.index.insert(moved.card.peer_id, pos as u32);
        }
        if self.records.capacity() > 64 && self.records.len() * 4 < self.records.capacity() {
            self.records.shrink_to(self.records.len() * 2);
        }
        Some(record)
    }
}
