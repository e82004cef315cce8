//! The BitTorrent swarm table: members stored in the form the wire needs.
//!
//! A BitTorrent peer is identified by its IP address and announced port inside its swarm; the
//! tracker keeps nothing else about it (its self-chosen `peer_id` is never trusted). So a
//! member is its BEP 23 compact address (6 bytes for IPv4, 18 for IPv6: address then port,
//! big-endian) plus a 2-byte stamp of its last announce: 8 bytes per IPv4 peer, 20 per IPv6
//! peer, the layout opentracker uses. A peer list is a copy of chosen entries' first 6 (or 18)
//! bytes into the output buffer.
//!
//! Each swarm keeps its members of one family in one vector, seeders first and then leechers,
//! each part sorted by address so that an announce finds its peer by binary search (no index,
//! no per-peer allocation). The IPv4 vector holds two members inline, so the many one- and
//! two-peer swarms of a large tracker allocate nothing per peer; IPv6 members live in a block
//! allocated for the swarms that have any.
//!
//! A shard holds its swarms in a dense vector (a vanished swarm's slot is filled by the last
//! one) and a hash table of 4-byte positions keyed by the info-hash, so a swarm costs its
//! 64-byte slot plus about 10 bytes of index. Vectors and the index shrink when they become
//! mostly empty, so memory is given back when swarms shrink or vanish.
//!
//! Expiry reads the stamps: a stamp is the announce time in seconds modulo 2^16, and a member
//! whose stamp is more than the track timer old is dropped by the expiry walk, which visits
//! every swarm of a shard in bounded steps (so a stamp is never read after wrapping, as long
//! as a whole walk takes less than 18 hours minus the track timer).

use std::hash::BuildHasher;

use rand::rngs::SmallRng;
use rand::{Rng, RngCore};
use smallvec::SmallVec;

use super::types::{PeerMode, Time};

/// Length of a BitTorrent info-hash, in bytes.
pub const INFO_HASH_LEN: usize = 20;
/// A BitTorrent info-hash (SHA-1 of the metainfo's info dictionary).
pub type InfoHash = [u8; INFO_HASH_LEN];
/// Bytes of a compact IPv4 peer (BEP 23): 4 address bytes and the port, big-endian.
pub const COMPACT_V4_LEN: usize = 6;
/// Bytes of a compact IPv6 peer (BEP 7): 16 address bytes and the port, big-endian.
pub const COMPACT_V6_LEN: usize = 18;

/// Largest track timer the 16-bit stamps can express, in seconds (half their range).
pub(super) const MAX_STAMP_AGE_SECS: u64 = (u16::MAX / 2) as u64;

/// The stamp of time `now`: seconds modulo 2^16, big-endian.
pub(super) fn stamp(now: Time) -> [u8; 2] {
    ((now.as_millis() / 1000) as u16).to_be_bytes()
}

/// Seconds from `stamp` to `now` (modulo 2^16).
pub(super) fn stamp_age(stamp: [u8; 2], now: Time) -> u64 {
    let now16 = (now.as_millis() / 1000) as u16;
    u64::from(now16.wrapping_sub(u16::from_be_bytes(stamp)))
}

/// One member: its compact address as on the wire and the stamp of its last announce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub(super) struct Entry<const N: usize> {
    pub wire: [u8; N],
    pub stamp: [u8; 2],
}

impl<const N: usize> Entry<N> {
    /// The announced port (the last two wire bytes). Port 0 members are counted, never listed.
    pub fn port(&self) -> u16 {
        u16::from_be_bytes([self.wire[N - 2], self.wire[N - 1]])
    }
}

/// Members of one family: seeders (`entries[..seeders]`) then leechers, each part sorted by
/// `wire`.
pub(super) struct Segmented<A: smallvec::Array> {
    entries: SmallVec<A>,
    seeders: u32,
}

impl<A: smallvec::Array> Default for Segmented<A> {
    fn default() -> Self {
        Segmented {
            entries: SmallVec::new(),
            seeders: 0,
        }
    }
}

impl<A: smallvec::Array> std::fmt::Debug for Segmented<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segmented")
            .field("members", &self.entries.len())
            .field("seeders", &self.seeders)
            .finish()
    }
}

/// Where a member was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Found {
    pub mode: PeerMode,
    /// Position inside its mode's part.
    pub pos: usize,
}

impl<const N: usize, A: smallvec::Array<Item = Entry<N>>> Segmented<A> {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn count(&self, mode: PeerMode) -> usize {
        self.part(mode).len()
    }

    fn split(&self) -> usize {
        (self.seeders as usize).min(self.entries.len())
    }

    /// The members of one mode, sorted by address.
    pub fn part(&self, mode: PeerMode) -> &[Entry<N>] {
        let (seeders, leechers) = self.entries.split_at(self.split());
        match mode {
            PeerMode::Seeder => seeders,
            PeerMode::Leech => leechers,
        }
    }

    fn base(&self, mode: PeerMode) -> usize {
        match mode {
            PeerMode::Seeder => 0,
            PeerMode::Leech => self.split(),
        }
    }

    /// Finds `wire` in either part.
    pub fn find(&self, wire: &[u8; N]) -> Option<Found> {
        for mode in [PeerMode::Leech, PeerMode::Seeder] {
            if let Ok(pos) = self.part(mode).binary_search_by(|e| e.wire.cmp(wire)) {
                return Some(Found { mode, pos });
            }
        }
        None
    }

    /// Inserts a member that is in neither part; returns its position inside its part.
    pub fn insert(&mut self, wire: [u8; N], mode: PeerMode, stamp: [u8; 2]) -> usize {
        let pos = match self.part(mode).binary_search_by(|e| e.wire.cmp(&wire)) {
            Ok(p) | Err(p) => p,
        };
        if self.entries.spilled() || self.entries.len() < self.entries.inline_size() {
            // Room inline, or a heap vector that grows by doubling.
        } else {
            // Leaving the inline storage: start small, most swarms stay small.
            self.entries.reserve_exact(self.entries.len() + 2);
        }
        self.entries
            .insert(self.base(mode) + pos, Entry { wire, stamp });
        if mode == PeerMode::Seeder {
            self.seeders += 1;
        }
        pos
    }

    /// Removes the member at `found`.
    pub fn remove(&mut self, found: Found) -> Option<Entry<N>> {
        let abs = self.base(found.mode) + found.pos;
        if found.pos >= self.count(found.mode) {
            return None;
        }
        let entry = self.entries.remove(abs);
        if found.mode == PeerMode::Seeder {
            self.seeders -= 1;
        }
        self.shrink();
        Some(entry)
    }

    /// Sets the stamp of the member at `found`.
    pub fn touch(&mut self, found: Found, stamp: [u8; 2]) {
        let abs = self.base(found.mode) + found.pos;
        if let Some(e) = self.entries.get_mut(abs) {
            e.stamp = stamp;
        }
    }

    /// Drops every member whose stamp is more than `max_age` seconds old at `now`, handing
    /// each to `gone`; returns how many (seeders, leechers) were dropped.
    pub fn expire(
        &mut self,
        now: Time,
        max_age: u64,
        gone: &mut dyn FnMut(&Entry<N>),
    ) -> (usize, usize) {
        let split = self.split();
        let mut kept_seeders = 0;
        let mut i = 0;
        let mut dropped = (0, 0);
        self.entries.retain(|e| {
            let seeder = i < split;
            i += 1;
            let keep = stamp_age(e.stamp, now) <= max_age;
            if !keep {
                gone(e);
            }
            match (keep, seeder) {
                (true, true) => kept_seeders += 1,
                (false, true) => dropped.0 += 1,
                (false, false) => dropped.1 += 1,
                (true, false) => {}
            }
            keep
        });
        self.seeders = kept_seeders;
        if dropped != (0, 0) {
            self.shrink();
        }
        dropped
    }

    /// Gives back memory of a vector that became mostly empty.
    fn shrink(&mut self) {
        let cap = self.entries.capacity();
        if self.entries.spilled() && self.entries.len() * 4 <= cap {
            if self.entries.len() <= self.entries.inline_size() {
                self.entries.shrink_to_fit();
            } else {
                let keep = self.entries.len() * 2;
                let mut fresh = SmallVec::<A>::with_capacity(keep);
                fresh.extend_from_slice(&self.entries);
                self.entries = fresh;
            }
        }
    }

    /// Heap bytes held (0 while inline).
    pub fn heap_bytes(&self) -> usize {
        if self.entries.spilled() {
            self.entries.capacity() * std::mem::size_of::<Entry<N>>()
        } else {
            0
        }
    }

    /// Checks the invariants (split within bounds, each part strictly sorted, no address in
    /// both parts). For audits and model tests.
    pub fn check(&self) -> Result<(), String> {
        if self.seeders as usize > self.entries.len() {
            return Err("seeder count beyond the member vector".into());
        }
        for mode in [PeerMode::Seeder, PeerMode::Leech] {
            if self.part(mode).windows(2).any(|w| w[0].wire >= w[1].wire) {
                return Err("a part is not strictly sorted".into());
            }
        }
        let leechers = self.part(PeerMode::Leech);
        if self
            .part(PeerMode::Seeder)
            .iter()
            .any(|s| leechers.binary_search_by(|e| e.wire.cmp(&s.wire)).is_ok())
        {
            return Err("an address is both seeder and leecher".into());
        }
        Ok(())
    }
}

/// IPv4 members: two inline.
pub(super) type Members4 = Segmented<[Entry<COMPACT_V4_LEN>; 2]>;
/// IPv6 members (in a block of their own).
pub(super) type Members6 = Segmented<[Entry<COMPACT_V6_LEN>; 1]>;

/// One swarm: 64 bytes with up to two IPv4 members inline.
#[derive(Debug)]
pub(super) struct BtSwarm {
    pub info_hash: InfoHash,
    /// Completed downloads (BEP 48 `downloaded`, BEP 15 `completed`): members that turned
    /// from leecher to seeder, saturating.
    pub completed: u32,
    pub v4: Members4,
    pub v6: Option<Box<Members6>>,
}

impl BtSwarm {
    fn new(info_hash: InfoHash) -> Self {
        BtSwarm {
            info_hash,
            completed: 0,
            v4: Members4::default(),
            v6: None,
        }
    }

    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.as_ref().map_or(0, |m| m.len())
    }

    pub fn count(&self, mode: PeerMode) -> usize {
        self.v4.count(mode) + self.v6.as_ref().map_or(0, |m| m.count(mode))
    }

    /// Whether nothing worth keeping is left: no member. (The completed counter of a swarm
    /// without members goes with it, as in opentracker.)
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn v6_mut(&mut self) -> &mut Members6 {
        self.v6.get_or_insert_with(Default::default)
    }

    /// Frees the IPv6 block once it is empty.
    pub fn drop_empty_v6(&mut self) {
        if self.v6.as_ref().is_some_and(|m| m.is_empty()) {
            self.v6 = None;
        }
    }

    pub fn heap_bytes(&self) -> usize {
        self.v4.heap_bytes()
            + self
                .v6
                .as_ref()
                .map_or(0, |m| std::mem::size_of::<Members6>() + m.heap_bytes())
    }
}

/// One shard of the BitTorrent table. Written by whichever worker holds its lock; expired by
/// the worker that owns it (`Engine::expire_owned`).
pub(super) struct BtShard {
    /// Positions in `swarms`, keyed by the info-hash's hash (the engine's seeded foldhash:
    /// keys come from the network).
    index: hashbrown::HashTable<u32>,
    pub swarms: Vec<BtSwarm>,
    /// Randomness for peer-list sampling, per shard so that sampling needs no shared state.
    pub rng: SmallRng,
    /// Members of each mode over all swarms of this shard.
    pub seeders: usize,
    pub leechers: usize,
    /// Next swarm the expiry walk looks at.
    pub cursor: usize,
    /// Completion counts of swarms that lost their last member (BEP 48 `downloaded` outlives
    /// the members), kept for [`RETIRED_COMPLETIONS_SECS`] and given back to the swarm if it
    /// fills again. Keys come from the network: the seeded foldhash hasher. Bounded by the
    /// engine (see `Engine::retire_completions`).
    pub retired: super::tables::FastMap<InfoHash, RetiredCompletions>,
}

/// How long the completion count of a swarm without members is kept: about nine hours, the
/// oldest age a two-byte stamp tells apart.
pub(super) const RETIRED_COMPLETIONS_SECS: u64 = MAX_STAMP_AGE_SECS;

/// A swarm's completion count, kept after its last member left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct RetiredCompletions {
    pub completed: u32,
    /// When the swarm emptied ([`stamp`]).
    pub stamp: [u8; 2],
}

impl BtShard {
    pub fn new(rng: SmallRng) -> Self {
        BtShard {
            index: hashbrown::HashTable::new(),
            swarms: Vec::new(),
            rng,
            seeders: 0,
            leechers: 0,
            cursor: 0,
            retired: Default::default(),
        }
    }

    /// Drops retired completion counts older than [`RETIRED_COMPLETIONS_SECS`].
    pub fn prune_retired(&mut self, now: Time) {
        self.retired
            .retain(|_, r| stamp_age(r.stamp, now) <= RETIRED_COMPLETIONS_SECS);
        if self.retired.capacity() > 64 && self.retired.len() * 4 < self.retired.capacity() {
            self.retired.shrink_to(self.retired.len() * 2);
        }
    }

    /// Position of the swarm of `info_hash` (whose hash is `hash`).
    pub fn find(&self, hash: u64, info_hash: &InfoHash) -> Option<usize> {
        let swarms = &self.swarms;
        self.index
            .find(hash, |&i| {
                swarms
                    .get(i as usize)
                    .is_some_and(|s| s.info_hash == *info_hash)
            })
            .map(|&i| i as usize)
    }

    /// The swarm slot that `hash` most likely belongs to: the first index entry whose 7-bit
    /// tag matches, without comparing info-hashes (so the slot itself is not read). For a
    /// prefetch only; `None` when no entry matches.
    pub fn probable_slot(&self, hash: u64) -> Option<&BtSwarm> {
        let &i = self.index.find(hash, |_| true)?;
        self.swarms.get(i as usize)
    }

    /// Adds an empty swarm for `info_hash` (not in the shard yet); returns its position.
    pub fn insert(&mut self, hasher: &impl BuildHasher, hash: u64, info_hash: InfoHash) -> usize {
        let pos = self.swarms.len();
        self.swarms.push(BtSwarm::new(info_hash));
        let swarms = &self.swarms;
        self.index.insert_unique(hash, pos as u32, |&i| {
            swarms
                .get(i as usize)
                .map_or(0, |s| hasher.hash_one(s.info_hash))
        });
        pos
    }

    /// Deletes the (empty) swarm at `pos`: the last swarm takes its place.
    pub fn remove_at(&mut self, hasher: &impl BuildHasher, pos: usize) {
        let Some(swarm) = self.swarms.get(pos) else {
            return;
        };
        let h = hasher.hash_one(swarm.info_hash);
        if let Ok(entry) = self.index.find_entry(h, |&i| i as usize == pos) {
            entry.remove();
        }
        let last = self.swarms.len() - 1;
        self.swarms.swap_remove(pos);
        if pos != last {
            if let Some(moved) = self.swarms.get(pos) {
                let hm = hasher.hash_one(moved.info_hash);
                if let Some(slot) = self.index.find_mut(hm, |&i| i as usize == last) {
                    *slot = pos as u32;
                }
            }
        }
        if self.swarms.capacity() > 64 && self.swarms.len() * 4 < self.swarms.capacity() {
            self.swarms.shrink_to(self.swarms.len() * 2);
        }
        if self.index.capacity() > 64 && self.index.len() * 4 < self.index.capacity() {
            let swarms = &self.swarms;
            self.index.shrink_to(self.index.len() * 2, |&i| {
                swarms
                    .get(i as usize)
                    .map_or(0, |s| hasher.hash_one(s.info_hash))
            });
        }
    }

    pub fn count(&mut self, mode: PeerMode, delta: isize) {
        let c = match mode {
            PeerMode::Seeder => &mut self.seeders,
            PeerMode::Leech => &mut self.leechers,
        };
        *c = c.wrapping_add_signed(delta);
    }

    /// Heap bytes of the index, the swarm slots and the members.
    pub fn heap_bytes(&self) -> usize {
        self.index.capacity() * 8 / 7 * (std::mem::size_of::<u32>() + 1)
            + self.swarms.capacity() * std::mem::size_of::<BtSwarm>()
            + self.swarms.iter().map(BtSwarm::heap_bytes).sum::<usize>()
            + self.retired.capacity() * 8 / 7
                * (std::mem::size_of::<(InfoHash, RetiredCompletions)>() + 1)
    }

    /// Checks index and swarms: every swarm is indexed at its position, none is empty.
    pub fn check(&self, hasher: &impl BuildHasher) -> Result<(usize, usize), String> {
        if self.index.len() != self.swarms.len() {
            return Err("swarm index and slots differ in size".into());
        }
        let (mut seeders, mut leechers) = (0, 0);
        for (pos, s) in self.swarms.iter().enumerate() {
            if self.find(hasher.hash_one(s.info_hash), &s.info_hash) != Some(pos) {
                return Err("a swarm is indexed wrongly".into());
            }
            if s.is_empty() {
                return Err("an empty swarm is kept".into());
            }
            s.v4.check()?;
            if let Some(v6) = &s.v6 {
                if v6.is_empty() {
                    return Err("an empty IPv6 block is kept".into());
                }
                v6.check()?;
            }
            seeders += s.count(PeerMode::Seeder);
            leechers += s.count(PeerMode::Leech);
        }
        if (seeders, leechers) != (self.seeders, self.leechers) {
            return Err("shard member counters differ from the recount".into());
        }
        Ok((seeders, leechers))
    }
}

/// Calls `emit` with up to `want` distinct positions of `0..n` other than `skip`, each
/// position chosen with the same probability (`want / (n - 1)` with a skip, `want / n`
/// without). No allocation, and few random numbers: when fewer than all positions are wanted,
/// the `n` positions (skip left out) are read as a ring cut into `want` consecutive strides of
/// `step = m / want` positions from a random start, and one position is taken from each stride
/// at a random offset (two offsets per 64-bit random number; none when the strides are one
/// position long). This is opentracker's way of listing a large swarm: one random number per
/// two listed peers instead of one or more per peer.
pub(super) fn sample(
    n: usize,
    skip: Option<usize>,
    want: usize,
    rng: &mut SmallRng,
    mut emit: impl FnMut(usize),
) {
    let skip = skip.filter(|&s| s < n);
    let m = n - usize::from(skip.is_some());
    let want = want.min(m);
    let at = |i: usize| match skip {
        Some(s) if i >= s => i + 1,
        _ => i,
    };
    if want == m {
        (0..m).for_each(|i| emit(at(i)));
        return;
    }
    if want == 0 {
        return;
    }
    let step = m / want;
    let start = rng.gen_range(0..m);
    // Position `k * step + offset` of the ring that starts at `start`.
    let ring = |i: usize| {
        let i = start + i;
        if i >= m {
            i - m
        } else {
            i
        }
    };
    if step == 1 {
        (0..want).for_each(|k| emit(at(ring(k))));
        return;
    }
    let mut bits = 0u64;
    for k in 0..want {
        let lane = if k % 2 == 0 {
            bits = rng.next_u64();
            bits as u32
        } else {
            (bits >> 32) as u32
        };
        // A uniform offset in 0..step (multiply-shift; step < 2^32 for any real swarm).
        let offset = ((u64::from(lane) * step as u64) >> 32) as usize;
        emit(at(ring(k * step + offset)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use std::collections::BTreeMap;

    fn mode(seeder: bool) -> PeerMode {
        if seeder {
            PeerMode::Seeder
        } else {
            PeerMode::Leech
        }
    }

    fn wire(k: u8) -> [u8; 6] {
        [10, 0, k / 16, k, 0x1a, k]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// The segmented member vector (inline and spilled) against a plain map model:
        /// insert, remove, mode change, refresh and expiry.
        #[test]
        fn members_match_a_model(ops in prop::collection::vec((0u8..4, 0u8..40, any::<bool>(), 0u64..200), 1..300)) {
            let mut members = Members4::default();
            let mut model: BTreeMap<[u8; 6], (PeerMode, u64)> = BTreeMap::new();
            let mut now = 1_000u64;
            for (op, k, seeder, dt) in ops {
                now += dt;
                let t = Time::from_secs(now);
                let m = mode(seeder);
                let w = wire(k);
                match op {
                    0 => {
                        // An announce: insert, refresh or move.
                        match members.find(&w) {
                            Some(f) if f.mode == m => members.touch(f, stamp(t)),
                            Some(f) => {
                                members.remove(f);
                                members.insert(w, m, stamp(t));
                            }
                            None => {
                                members.insert(w, m, stamp(t));
                            }
                        }
                        model.insert(w, (m, now));
                    }
                    1 => {
                        let removed = members.find(&w).and_then(|f| members.remove(f)).is_some();
                        prop_assert_eq!(removed, model.remove(&w).is_some());
                    }
                    2 => {
                        let max_age = 120;
                        let (s, l) = members.expire(t, max_age, &mut |_| {});
                        let before = model.len();
                        model.retain(|_, (_, at)| now - *at <= max_age);
                        prop_assert_eq!(s + l, before - model.len());
                    }
                    _ => {
                        prop_assert_eq!(members.find(&w).map(|f| f.mode), model.get(&w).map(|x| x.0));
                    }
                }
                if let Err(e) = members.check() {
                    prop_assert!(false, "{}", e);
                }
                for mo in [PeerMode::Seeder, PeerMode::Leech] {
                    let got: Vec<[u8; 6]> = members.part(mo).iter().map(|e| e.wire).collect();
                    let want: Vec<[u8; 6]> =
                        model.iter().filter(|(_, v)| v.0 == mo).map(|(k, _)| *k).collect();
                    prop_assert_eq!(got, want);
                }
                if model.len() <= 2 {
                    // Small sets go back inline once the heap vector is mostly empty.
                    prop_assert!(members.heap_bytes() <= 8 * 8);
                }
            }
        }

        /// The shard's dense swarm vector and index against a map model.
        #[test]
        fn shard_matches_a_model(ops in prop::collection::vec((any::<bool>(), 0u8..50), 1..400)) {
            let hasher = foldhash::fast::RandomState::default();
            let mut shard = BtShard::new(SmallRng::seed_from_u64(1));
            let mut model = std::collections::BTreeSet::new();
            for (add, k) in ops {
                let ih = [k; 20];
                let h = hasher.hash_one(ih);
                if add {
                    if shard.find(h, &ih).is_none() {
                        let pos = shard.insert(&hasher, h, ih);
                        shard.swarms[pos].v4.insert(wire(k), PeerMode::Leech, [0, 0]);
                        shard.leechers += 1;
                    }
                    model.insert(k);
                } else {
                    if let Some(pos) = shard.find(h, &ih) {
                        shard.leechers -= shard.swarms[pos].len();
                        shard.remove_at(&hasher, pos);
                    }
                    model.remove(&k);
                }
                if let Err(e) = shard.check(&hasher) {
                    prop_assert!(false, "{}", e);
                }
                let mut got: Vec<u8> = shard.swarms.iter().map(|s| s.info_hash[0]).collect();
                got.sort_unstable();
                prop_assert_eq!(got, model.iter().copied().collect::<Vec<_>>());
            }
        }

        /// Samples are distinct, in range, never the skipped position, and as many as asked.
        #[test]
        fn samples_are_distinct_and_skip(n in 0usize..300, want in 0usize..300, skip in proptest::option::of(0usize..300), seed in any::<u64>()) {
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut got = Vec::new();
            sample(n, skip, want, &mut rng, |i| got.push(i));
            let skip_in = skip.filter(|&s| s < n);
            let avail = n - usize::from(skip_in.is_some());
            prop_assert_eq!(got.len(), want.min(avail));
            let mut sorted = got.clone();
            sorted.sort_unstable();
            sorted.dedup();
            prop_assert_eq!(sorted.len(), got.len());
            prop_assert!(got.iter().all(|&i| i < n && Some(i) != skip_in));
        }
    }

    /// Every position is listed about equally often (a fixed seed: the counts are
    /// deterministic), with and without a skipped position, for short and long strides.
    #[test]
    fn samples_are_uniform() {
        for (n, skip, want) in [
            (100, None, 30),
            (101, Some(40), 30),
            (60, Some(0), 50),
            (1000, None, 7),
        ] {
            let mut rng = SmallRng::seed_from_u64(7);
            let mut hits = vec![0u32; n];
            let m = n - usize::from(skip.is_some());
            // About 2,000 expected hits per position: 15% is several standard deviations.
            let rounds = 2_000 * m / want;
            for _ in 0..rounds {
                sample(n, skip, want, &mut rng, |i| hits[i] += 1);
            }
            let expected = rounds as f64 * want as f64 / m as f64;
            for (i, &h) in hits.iter().enumerate() {
                if Some(i) == skip {
                    assert_eq!(h, 0);
                    continue;
                }
                let ratio = f64::from(h) / expected;
                assert!(
                    (0.85..1.15).contains(&ratio),
                    "n {n} want {want}: position {i} listed {h} times, expected {expected}"
                );
            }
        }
    }

    /// The probable slot of a swarm's hash is its own slot (unless another swarm's index
    /// entry has the same 7-bit tag earlier in the probe sequence: with a fixed seed, a
    /// deterministic few), and always a slot of the shard.
    #[test]
    fn the_probable_slot_is_the_swarms_own() {
        let hasher = foldhash::fast::FixedState::with_seed(9);
        let mut shard = BtShard::new(SmallRng::seed_from_u64(1));
        for k in 0..2_000u32 {
            let mut ih = [0u8; 20];
            ih[..4].copy_from_slice(&k.to_be_bytes());
            let pos = shard.insert(&hasher, hasher.hash_one(ih), ih);
            shard.swarms[pos]
                .v4
                .insert(wire(k as u8), PeerMode::Leech, [0, 0]);
        }
        let mut own = 0;
        for s in &shard.swarms {
            let slot = shard
                .probable_slot(hasher.hash_one(s.info_hash))
                .expect("an indexed swarm has a slot");
            assert!(shard.swarms.iter().any(|t| std::ptr::eq(t, slot)));
            own += usize::from(slot.info_hash == s.info_hash);
        }
        assert!(own >= 1_950, "{own} of 2,000 own slots");
        assert!(BtShard::new(SmallRng::seed_from_u64(1))
            .probable_slot(1)
            .is_none());
    }

    #[test]
    fn entries_are_wire_sized() {
        assert_eq!(std::mem::size_of::<Entry<COMPACT_V4_LEN>>(), 8);
        assert_eq!(std::mem::size_of::<Entry<COMPACT_V6_LEN>>(), 20);
        assert!(
            std::mem::size_of::<BtSwarm>() <= 64,
            "{}",
            std::mem::size_of::<BtSwarm>()
        );
    }

    #[test]
    fn stamps_wrap() {
        let t = Time::from_secs(65_530);
        let s = stamp(t);
        assert_eq!(stamp_age(s, Time::from_secs(65_540)), 10);
        assert_eq!(stamp_age(s, t), 0);
    }
}
