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
//! two-peer swarms of a large tracker allocate nothing per peer; a larger one lives in a heap
//! block that grows by the allocator's size classes (about 1.2x a step, not 2x). IPv6 members
//! live in a side table of the shard, for the swarms that have any.
//!
//! A shard holds its swarms in a dense vector of 48-byte slots, in chunks so that growing
//! never copies it (a vanished swarm's slot is filled by the last one), and a hash index of
//! positions keyed by the info-hash whose lookup usually reads one cache line
//! (`line_index.rs`, the index the PPSTP tables use too): a swarm costs its slot plus 6 to 9
//! bytes of index.
//! Member blocks, the slot chunks and the index shrink when they become mostly empty, so
//! memory is given back when swarms shrink or vanish.
//!
//! Expiry reads the stamps: a stamp is the announce time in seconds modulo 2^16, and a member
//! whose stamp is more than the track timer old is dropped by the expiry walk, which visits
//! every swarm of a shard in bounded steps (so a stamp is never read after wrapping, as long
//! as a whole walk takes less than 18 hours minus the track timer).

use std::hash::BuildHasher;

use rand::rngs::SmallRng;
use rand::{Rng, RngCore};
use thin_vec::ThinVec;

use super::chunked::ChunkedVec;
use std::sync::Arc;

use super::line_index::{Geometry, LineIndex};
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
    /// Filler for unused inline places.
    const EMPTY: Entry<N> = Entry {
        wire: [0; N],
        stamp: [0; 2],
    };

    /// The announced port (the last two wire bytes). Port 0 members are counted, never listed.
    pub fn port(&self) -> u16 {
        u16::from_be_bytes([self.wire[N - 2], self.wire[N - 1]])
    }
}

/// The order of two wire forms: their bytes compared in order (address, then port). An IPv4
/// form is compared as one big-endian integer (a byte-wise compare is a loop).
#[inline(always)]
fn wire_cmp<const N: usize>(a: &[u8; N], b: &[u8; N]) -> std::cmp::Ordering {
    if N <= 8 {
        let key = |w: &[u8; N]| {
            let mut x = [0u8; 8];
            x.iter_mut().zip(w).for_each(|(x, b)| *x = *b);
            u64::from_be_bytes(x)
        };
        key(a).cmp(&key(b))
    } else {
        a.cmp(b)
    }
}

/// Below this many entries left to search, [`search`] stops prefetching ahead: they span at
/// most three cache lines, which its next probes load anyway.
const SEARCH_PREFETCH_MIN: usize = 16;

/// Parts of at least this many entries (4 KiB of IPv4 members, 64 cache lines) are searched
/// with prefetches ahead ([`search`]'s `AHEAD`) whatever the table's size: even in a table
/// that the shared cache holds, the network work between two datagrams evicts such a part
/// from the core's own caches, and its search would otherwise wait for one level's miss
/// after another.
const SEARCH_AHEAD_MIN: usize = 512;

/// The position of `wire` in `part` (sorted by wire form), `Err` with where it would go when
/// absent: `binary_search_by`'s answer, by the same branch-free halving. With `AHEAD`, the
/// probes two steps ahead are prefetched at each step (the four places the search can go
/// next but one), so that in a block far beyond the caches two more levels' misses are under
/// way while one probe waits: a search of `k` cold levels takes about `k / 3` memory
/// latencies, not `k`. Without it (a table that the caches hold) nothing is prefetched.
#[inline]
fn search<const N: usize, const AHEAD: bool>(
    part: &[Entry<N>],
    wire: &[u8; N],
) -> Result<usize, usize> {
    let mut size = part.len();
    if size == 0 {
        return Err(0);
    }
    let at = |i: usize| part.as_ptr().wrapping_add(i).cast::<u8>();
    let mut base = 0usize;
    if AHEAD && size >= SEARCH_PREFETCH_MIN {
        // The second step's two possible probes; the loop prefetches from the third on.
        let half = size / 2;
        let h1 = (size - half) / 2;
        super::announce::prefetch(at(h1));
        super::announce::prefetch(at(half + h1));
    }
    while size > 1 {
        let half = size / 2;
        let mid = base + half;
        if AHEAD && size >= SEARCH_PREFETCH_MIN {
            // The next step probes `b + h1` for `b` = `base` or `mid`; the one after, `b + h2`
            // or `b + h1 + h2`. Addresses only, never dereferenced here.
            let h1 = (size - half) / 2;
            let h2 = (size - half - h1) / 2;
            for b in [base, mid] {
                super::announce::prefetch(at(b + h2));
                super::announce::prefetch(at(b + h1 + h2));
            }
        }
        let probe = part.get(mid).map(|e| wire_cmp(&e.wire, wire));
        base = if probe == Some(std::cmp::Ordering::Greater) {
            base
        } else {
            mid
        };
        size -= half;
    }
    match part.get(base).map(|e| wire_cmp(&e.wire, wire)) {
        Some(std::cmp::Ordering::Equal) => Ok(base),
        Some(std::cmp::Ordering::Less) => Err(base + 1),
        _ => Err(base),
    }
}

/// The mode that is not `mode`.
pub(super) fn other_mode(mode: PeerMode) -> PeerMode {
    match mode {
        PeerMode::Seeder => PeerMode::Leech,
        PeerMode::Leech => PeerMode::Seeder,
    }
}

/// A heap block's place and shape, read from its set without touching the block
/// ([`Members::block`]): for prefetches only, whose addresses are never dereferenced.
#[derive(Clone, Copy, Debug)]
pub(super) struct Block {
    /// The first entry's address.
    entries: *const u8,
    /// Bytes per entry (8 for IPv4, 20 for IPv6).
    entry_size: usize,
    /// Members: seeders (`0..seeders`) then leechers (`seeders..len`).
    pub len: usize,
    pub seeders: usize,
}

impl Block {
    /// The first line of the block: its length (read by every access) and first entries.
    pub fn head(&self) -> *const u8 {
        self.entries.wrapping_sub(BLOCK_HEADER)
    }

    /// The address of entry `i` (not checked against the length: a prefetch address).
    pub fn entry(&self, i: usize) -> *const u8 {
        self.entries.wrapping_add(i * self.entry_size)
    }

    /// Bytes per entry.
    pub fn entry_size(&self) -> usize {
        self.entry_size
    }

    /// Bytes from the block's head to the end of its last entry.
    pub fn bytes(&self) -> usize {
        BLOCK_HEADER + self.len * self.entry_size
    }

    /// Where `mode`'s part starts, and its length.
    pub fn part(&self, mode: PeerMode) -> (usize, usize) {
        match mode {
            PeerMode::Seeder => (0, self.seeders),
            PeerMode::Leech => (self.seeders, self.len - self.seeders),
        }
    }
}

/// Members a swarm's family holds without a heap block.
const INLINE: usize = 2;

/// A count of inline members, `0..=INLINE`. An enum rather than a `u8` so that its unused
/// values let [`Store`] tell its two forms apart without a tag byte of its own: a member set
/// is then 24 bytes and a swarm slot 48.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Small {
    Zero,
    One,
    Two,
}

impl Small {
    fn get(self) -> usize {
        self as usize
    }

    /// `n` as a `Small`; `n` is at most [`INLINE`] wherever this is called.
    fn of(n: usize) -> Small {
        match n {
            0 => Small::Zero,
            1 => Small::One,
            _ => Small::Two,
        }
    }
}

/// Where the members are: inline (at most [`INLINE`]), or in a heap block with its length and
/// capacity in front ([`ThinVec`]: one pointer in the slot). A set is inline exactly when it
/// has at most [`INLINE`] members, so a swarm that shrinks gives its block back. A heap set
/// keeps a copy of the block's length beside the pointer (`len`), so that the staged
/// prefetch can aim at any part of the block from the slot alone, before the block's first
/// line (where [`ThinVec`] keeps its length) has arrived.
enum Store<const N: usize> {
    Inline {
        entries: [Entry<N>; INLINE],
        len: Small,
        seeders: Small,
        mark: bool,
    },
    Heap {
        entries: ThinVec<Entry<N>>,
        seeders: u32,
        /// `entries.len()`, kept equal by every change of the block.
        len: u32,
        mark: bool,
    },
}

/// Bytes in front of a heap block's entries (its length and capacity).
const BLOCK_HEADER: usize = 2 * std::mem::size_of::<usize>();

/// Capacity of a heap block of `Entry<N>` with room for at least `want` entries: its size in
/// bytes rounded up to the allocator's size classes (four per power of two above 64 bytes, as
/// mimalloc's), so that a block has no unusable tail. Growing to the block for `capacity + 1`
/// steps one class (about 1.2x), so the slack of a growing set is at most a fifth rather
/// than the half that doubling leaves, and the blocks a set leaves behind as it grows are
/// of the sizes the sets growing after it ask for.
fn block_capacity<const N: usize>(want: usize) -> usize {
    let size = std::mem::size_of::<Entry<N>>();
    let bytes = BLOCK_HEADER + want.max(1) * size;
    let class = if bytes <= 64 {
        bytes.next_multiple_of(16)
    } else {
        bytes.next_multiple_of((bytes - 1).next_power_of_two() / 8)
    };
    (class - BLOCK_HEADER) / size
}

/// Members of one family: seeders (`entries()[..seeders]`) then leechers, each part sorted by
/// `wire`. Holds up to [`INLINE`] members inline and more in a heap block that grows by
/// allocator size classes and shrinks when it is less than half full. Carries one bit for
/// its owner (see [`Members::mark`]).
pub(super) struct Members<const N: usize> {
    store: Store<N>,
}

impl<const N: usize> Default for Members<N> {
    fn default() -> Self {
        Members {
            store: Store::Inline {
                entries: [Entry::EMPTY; INLINE],
                len: Small::Zero,
                seeders: Small::Zero,
                mark: false,
            },
        }
    }
}

impl<const N: usize> std::fmt::Debug for Members<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Members")
            .field("members", &self.len())
            .field("seeders", &self.seeders())
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

impl<const N: usize> Members<N> {
    /// The members, seeders first. A heap set's slice is cut by the set's own copy of the
    /// length, so that finding a member or listing some does not wait for the block's header
    /// (its first line) before the lines it actually reads.
    #[inline]
    fn entries(&self) -> &[Entry<N>] {
        match &self.store {
            Store::Inline { entries, len, .. } => &entries[..len.get()],
            Store::Heap { entries, len, .. } => {
                debug_assert_eq!(*len as usize, entries.len());
                // SAFETY: `len` equals the block's length (every change of the block sets it,
                // see `Store::Heap`, and `check` verifies it), so the slice covers the
                // block's initialised entries; the pointer is computed from the block's
                // address without reading its header, and the slice borrows `self`, which
                // owns the block.
                unsafe { std::slice::from_raw_parts(entries.as_ptr(), *len as usize) }
            }
        }
    }

    /// As [`Members::entries`], to change.
    #[inline]
    fn entries_mut(&mut self) -> &mut [Entry<N>] {
        match &mut self.store {
            Store::Inline { entries, len, .. } => &mut entries[..len.get()],
            Store::Heap { entries, len, .. } => {
                debug_assert_eq!(*len as usize, entries.len());
                // SAFETY: as in `entries`; the slice borrows `self` mutably.
                unsafe { std::slice::from_raw_parts_mut(entries.as_mut_ptr(), *len as usize) }
            }
        }
    }

    fn seeders(&self) -> usize {
        match &self.store {
            Store::Inline { seeders, .. } => seeders.get(),
            Store::Heap { seeders, .. } => *seeders as usize,
        }
    }

    fn set_seeders(&mut self, n: usize) {
        match &mut self.store {
            Store::Inline { seeders, .. } => *seeders = Small::of(n),
            Store::Heap { seeders, .. } => *seeders = n as u32,
        }
    }

    /// The owner's bit (a swarm's: it has IPv6 members). Kept here because the set's layout
    /// has room for it.
    pub fn mark(&self) -> bool {
        match &self.store {
            Store::Inline { mark, .. } | Store::Heap { mark, .. } => *mark,
        }
    }

    pub fn set_mark(&mut self, on: bool) {
        match &mut self.store {
            Store::Inline { mark, .. } | Store::Heap { mark, .. } => *mark = on,
        }
    }

    /// Members of both modes; read from the set itself, not from its heap block.
    pub fn len(&self) -> usize {
        match &self.store {
            Store::Inline { len, .. } => len.get(),
            Store::Heap { len, .. } => *len as usize,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Members of `mode`; read from the set itself, not from its heap block (so the swarm
    /// counts of a scrape or an announce's answer never wait for the block).
    pub fn count(&self, mode: PeerMode) -> usize {
        let split = self.split();
        match mode {
            PeerMode::Seeder => split,
            PeerMode::Leech => self.len() - split,
        }
    }

    fn split(&self) -> usize {
        self.seeders().min(self.len())
    }

    /// The members of one mode, sorted by address.
    pub fn part(&self, mode: PeerMode) -> &[Entry<N>] {
        let (seeders, leechers) = self.entries().split_at(self.split());
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

    /// Where the heap block's entries are, with the counts that say where each part is,
    /// read from the set alone (not from the block): for prefetches, which must not wait for
    /// the block. `None` for an inline set.
    #[inline]
    pub fn block(&self) -> Option<Block> {
        match &self.store {
            Store::Inline { .. } => None,
            Store::Heap {
                entries,
                seeders,
                len,
                ..
            } => {
                let len = *len as usize;
                Some(Block {
                    entries: entries.as_ptr().cast::<u8>(),
                    entry_size: std::mem::size_of::<Entry<N>>(),
                    len,
                    seeders: (*seeders as usize).min(len),
                })
            }
        }
    }

    /// Finds `wire` in either part, in `likely`'s first (a re-announce keeps its mode, so the
    /// other part's search is usually saved).
    pub fn find(&self, wire: &[u8; N], likely: PeerMode) -> Option<Found> {
        self.find_with::<false>(wire, likely)
    }

    /// [`Members::find`] in a table beyond the caches: the search prefetches its probes two
    /// steps ahead ([`search`]).
    pub fn find_prefetching(&self, wire: &[u8; N], likely: PeerMode) -> Option<Found> {
        self.find_with::<true>(wire, likely)
    }

    /// With `AHEAD` every part is searched with prefetches ahead; without it, only parts of
    /// at least [`SEARCH_AHEAD_MIN`] entries.
    fn find_with<const AHEAD: bool>(&self, wire: &[u8; N], likely: PeerMode) -> Option<Found> {
        for mode in [likely, other_mode(likely)] {
            let part = self.part(mode);
            let found = if AHEAD || part.len() >= SEARCH_AHEAD_MIN {
                search::<N, true>(part, wire)
            } else {
                search::<N, false>(part, wire)
            };
            if let Ok(pos) = found {
                return Some(Found { mode, pos });
            }
        }
        None
    }

    /// Inserts `entry` at absolute position `at` (at most `len`).
    fn insert_at(&mut self, at: usize, entry: Entry<N>) {
        match &mut self.store {
            Store::Inline {
                entries, len: n, ..
            } if n.get() < INLINE => {
                let len = n.get();
                entries.copy_within(at..len, at + 1);
                entries[at] = entry;
                *n = Small::of(len + 1);
            }
            Store::Inline {
                entries,
                seeders,
                mark,
                ..
            } => {
                // Leaving the inline storage: the smallest block.
                let mut block = ThinVec::with_capacity(block_capacity::<N>(INLINE + 1));
                block.extend_from_slice(&entries[..at]);
                block.push(entry);
                block.extend_from_slice(&entries[at..]);
                self.store = Store::Heap {
                    len: block.len() as u32,
                    entries: block,
                    seeders: seeders.get() as u32,
                    mark: *mark,
                };
            }
            Store::Heap { entries, len, .. } => {
                if entries.len() == entries.capacity() {
                    let cap = block_capacity::<N>(entries.capacity() + 1);
                    entries.reserve_exact(cap - entries.len());
                }
                entries.insert(at, entry);
                *len = entries.len() as u32;
            }
        }
    }

    /// Removes the entry at absolute position `at` (below `len`).
    fn remove_at(&mut self, at: usize) -> Entry<N> {
        match &mut self.store {
            Store::Inline {
                entries, len: n, ..
            } => {
                let len = n.get();
                let entry = entries[at];
                entries.copy_within(at + 1..len, at);
                *n = Small::of(len - 1);
                entry
            }
            Store::Heap { entries, len, .. } => {
                let entry = entries.remove(at);
                *len = entries.len() as u32;
                self.fit();
                entry
            }
        }
    }

    /// After members left a heap block: back inline when they fit, into a smaller block when
    /// less than half of this one is used; memory is given back as swarms shrink.
    fn fit(&mut self) {
        let Store::Heap {
            entries,
            seeders,
            mark,
            ..
        } = &mut self.store
        else {
            return;
        };
        let len = entries.len();
        if len <= INLINE {
            let mut inline = [Entry::EMPTY; INLINE];
            inline[..len].copy_from_slice(entries);
            self.store = Store::Inline {
                entries: inline,
                len: Small::of(len),
                seeders: Small::of((*seeders as usize).min(len)),
                mark: *mark,
            };
        } else if len * 2 < entries.capacity() {
            let mut block = ThinVec::with_capacity(block_capacity::<N>(len));
            block.extend_from_slice(entries);
            *entries = block;
        }
    }

    /// Inserts a member that is in neither part; returns its position inside its part.
    pub fn insert(&mut self, wire: [u8; N], mode: PeerMode, stamp: [u8; 2]) -> usize {
        let pos = match search::<N, false>(self.part(mode), &wire) {
            Ok(p) | Err(p) => p,
        };
        let seeders = self.seeders();
        self.insert_at(self.base(mode) + pos, Entry { wire, stamp });
        if mode == PeerMode::Seeder {
            self.set_seeders(seeders + 1);
        }
        pos
    }

    /// Removes the member at `found`.
    pub fn remove(&mut self, found: Found) -> Option<Entry<N>> {
        if found.pos >= self.count(found.mode) {
            return None;
        }
        let abs = self.base(found.mode) + found.pos;
        let seeders = self.seeders();
        if found.mode == PeerMode::Seeder {
            // Before the removal: a block that goes back inline takes the count with it.
            self.set_seeders(seeders - 1);
        }
        Some(self.remove_at(abs))
    }

    /// Sets the stamp of the member at `found`.
    pub fn touch(&mut self, found: Found, stamp: [u8; 2]) {
        let abs = self.base(found.mode) + found.pos;
        if let Some(e) = self.entries_mut().get_mut(abs) {
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
        // Most walks find nothing due: a read-only pass then saves the rewrite of every entry.
        if !self
            .entries()
            .iter()
            .any(|e| stamp_age(e.stamp, now) > max_age)
        {
            return (0, 0);
        }
        let split = self.split();
        let mut kept_seeders = 0;
        let mut i = 0;
        let mut dropped = (0, 0);
        let mut keep = |e: &Entry<N>| {
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
        };
        match &mut self.store {
            Store::Inline {
                entries, len: n, ..
            } => {
                let mut kept = 0;
                for j in 0..n.get() {
                    let e = entries[j];
                    if keep(&e) {
                        entries[kept] = e;
                        kept += 1;
                    }
                }
                *n = Small::of(kept);
            }
            Store::Heap { entries, len, .. } => {
                entries.retain(|e| keep(e));
                *len = entries.len() as u32;
            }
        }
        // The seeder count first: `fit` carries it into the inline form.
        self.set_seeders(kept_seeders);
        if dropped != (0, 0) {
            self.fit();
        }
        dropped
    }

    /// Heap bytes held (0 while inline).
    pub fn heap_bytes(&self) -> usize {
        match &self.store {
            Store::Inline { .. } => 0,
            Store::Heap { entries, .. } => {
                BLOCK_HEADER + entries.capacity() * std::mem::size_of::<Entry<N>>()
            }
        }
    }

    /// Checks the invariants (split within bounds, each part strictly sorted, no address in
    /// both parts, inline exactly when it fits). For audits and model tests.
    pub fn check(&self) -> Result<(), String> {
        if self.seeders() > self.len() {
            return Err("seeder count beyond the member vector".into());
        }
        if matches!(self.store, Store::Heap { .. }) && self.len() <= INLINE {
            return Err("a heap block holds members that fit inline".into());
        }
        if let Store::Heap { entries, len, .. } = &self.store {
            if *len as usize != entries.len() {
                return Err("a heap set's copy of its length differs from the block's".into());
            }
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

/// IPv4 members, in the swarm's slot.
pub(super) type Members4 = Members<COMPACT_V4_LEN>;
/// IPv6 members, in the shard's side table (most swarms have none).
pub(super) type Members6 = Members<COMPACT_V6_LEN>;

/// One swarm: 48 bytes with up to two IPv4 members inline. Its IPv6 members, if any, are in
/// the shard's side table ([`BtShard::v6`]), which `v4`'s mark bit says.
#[derive(Debug)]
pub(super) struct BtSwarm {
    pub info_hash: InfoHash,
    /// Completed downloads (BEP 48 `downloaded`, BEP 15 `completed`): members that turned
    /// from leecher to seeder, saturating.
    pub completed: u32,
    pub v4: Members4,
}

impl BtSwarm {
    fn new(info_hash: InfoHash) -> Self {
        BtSwarm {
            info_hash,
            completed: 0,
            v4: Members4::default(),
        }
    }

    /// Whether the swarm has IPv6 members (in the shard's side table).
    pub fn has_v6(&self) -> bool {
        self.v4.mark()
    }

    /// Whether nothing worth keeping is left: no member. (The completed counter of a swarm
    /// without members goes with it, as in opentracker.)
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && !self.has_v6()
    }
}

/// A swarm with its IPv6 members, for reading.
#[derive(Clone, Copy)]
pub(super) struct SwarmRef<'a> {
    pub swarm: &'a BtSwarm,
    pub v6: Option<&'a Members6>,
}

impl<'a> SwarmRef<'a> {
    /// `swarm` with its IPv6 members from its shard's side table `side` (looked up only when
    /// the swarm's mark says it has any).
    pub fn of(swarm: &'a BtSwarm, side: &'a super::tables::FastMap<InfoHash, Members6>) -> Self {
        SwarmRef {
            swarm,
            v6: if swarm.has_v6() {
                side.get(&swarm.info_hash)
            } else {
                None
            },
        }
    }

    pub fn len(&self) -> usize {
        self.swarm.v4.len() + self.v6.map_or(0, Members6::len)
    }

    pub fn count(&self, mode: PeerMode) -> usize {
        self.swarm.v4.count(mode) + self.v6.map_or(0, |m| m.count(mode))
    }
}

/// Swarm slots per chunk of a shard's slot vector (3 KiB of slots): a shard's slack is at
/// most one chunk, and a table of a million swarms has about a thousand chunks per shard.
const SWARM_CHUNK: usize = 64;

/// One shard of the BitTorrent table. Written by whichever worker holds its lock; expired by
/// the worker that owns it (`Engine::expire_owned`).
pub(super) struct BtShard {
    /// Positions in `swarms`, keyed by the info-hash's hash (the engine's seeded foldhash:
    /// keys come from the network); a lookup usually reads one cache line, known from the
    /// hash, and the index publishes where its buckets are ([`Geometry`]) so that the staged
    /// prefetch reads its home bucket without the shard's lock.
    index: LineIndex,
    /// The swarm slots, dense, in chunks: growing never copies the slots, and the slack is
    /// at most one chunk.
    pub swarms: ChunkedVec<BtSwarm, SWARM_CHUNK>,
    /// IPv6 members of the swarms that have any, keyed by info-hash (from the network: the
    /// seeded foldhash hasher). An entry exists exactly while its swarm's mark bit is set.
    pub v6: super::tables::FastMap<InfoHash, Members6>,
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

/// Gives back the memory of a hash map that became mostly empty.
fn shrink_map<K: std::hash::Hash + Eq, V>(map: &mut super::tables::FastMap<K, V>) {
    if map.capacity() > 64 && map.len() * 4 < map.capacity() {
        map.shrink_to(map.len() * 2);
    }
}

impl BtShard {
    /// An empty shard whose index publishes where its buckets are into `geometry` (for
    /// [`Geometry::prefetch`]).
    pub fn new(rng: SmallRng, geometry: Arc<Geometry>) -> Self {
        BtShard {
            index: LineIndex::new(geometry),
            swarms: ChunkedVec::default(),
            v6: Default::default(),
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
        shrink_map(&mut self.retired);
    }

    /// Position of the swarm of `info_hash` (whose hash is `hash`).
    pub fn find(&self, hash: u64, info_hash: &InfoHash) -> Option<usize> {
        let swarms = &self.swarms;
        self.index
            .find(hash, |i| {
                swarms
                    .get(i as usize)
                    .is_some_and(|s| s.info_hash == *info_hash)
            })
            .map(|i| i as usize)
    }

    /// The swarm slot that `hash` most likely belongs to: the first entry of its home bucket
    /// whose 8-bit tag matches ([`LineIndex::first_tagged`]), without comparing info-hashes
    /// (so the slot itself is not read). For a prefetch only; `None` when no entry matches.
    pub fn probable_slot(&self, hash: u64) -> Option<&BtSwarm> {
        let i = self.index.first_tagged(hash)?;
        self.swarms.get(i as usize)
    }

    /// The swarm at `pos` with its IPv6 members.
    pub fn swarm_ref(&self, pos: usize) -> Option<SwarmRef<'_>> {
        self.swarms
            .get(pos)
            .map(|swarm| SwarmRef::of(swarm, &self.v6))
    }

    /// Every swarm of the shard with its IPv6 members.
    pub fn swarm_refs(&self) -> impl Iterator<Item = SwarmRef<'_>> {
        self.swarms
            .iter()
            .map(|swarm| SwarmRef::of(swarm, &self.v6))
    }

    /// Adds an empty swarm for `info_hash` (not in the shard yet); returns its position.
    pub fn insert(&mut self, hasher: &impl BuildHasher, hash: u64, info_hash: InfoHash) -> usize {
        let pos = self.swarms.len();
        self.swarms.push(BtSwarm::new(info_hash));
        let swarms = &self.swarms;
        self.index.insert(hash, pos as u32, |i| {
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
        if swarm.has_v6() {
            // Not reached for an empty swarm; kept so that the side table never outlives it.
            self.v6.remove(&swarm.info_hash);
            shrink_map(&mut self.v6);
        }
        self.index.remove(h, |i| i == pos as u32);
        let last = self.swarms.len() - 1;
        self.swarms.swap_remove(pos);
        if pos != last {
            if let Some(moved) = self.swarms.get(pos) {
                let hm = hasher.hash_one(moved.info_hash);
                if let Some(entry) = self.index.find_mut(hm, |i| i == last as u32) {
                    *entry = pos as u32;
                }
            }
        }
        // Memory follows the swarms: the index is rebuilt smaller once mostly empty.
        let swarms = &self.swarms;
        self.index.shrink(0, |i| {
            swarms
                .get(i as usize)
                .map_or(0, |s| hasher.hash_one(s.info_hash))
        });
    }

    /// After a change to the IPv6 members of `swarm` (whose entry in `v6` may have been
    /// created for it): drops an emptied entry and sets the swarm's mark to match.
    pub fn settle_v6(v6: &mut super::tables::FastMap<InfoHash, Members6>, swarm: &mut BtSwarm) {
        let has = match v6.get(&swarm.info_hash) {
            Some(m) if m.is_empty() => {
                v6.remove(&swarm.info_hash);
                shrink_map(v6);
                false
            }
            Some(_) => true,
            None => false,
        };
        swarm.v4.set_mark(has);
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
        self.index.heap_bytes()
            + self.swarms.heap_bytes()
            + self.swarms.iter().map(|s| s.v4.heap_bytes()).sum::<usize>()
            + self.v6.capacity() * 8 / 7 * (std::mem::size_of::<(InfoHash, Members6)>() + 1)
            + self.v6.values().map(Members6::heap_bytes).sum::<usize>()
            + self.retired.capacity() * 8 / 7
                * (std::mem::size_of::<(InfoHash, RetiredCompletions)>() + 1)
    }

    /// Checks index and swarms: every swarm is indexed at its position, none is empty, the
    /// IPv6 side table holds exactly the marked swarms' members.
    pub fn check(&self, hasher: &impl BuildHasher) -> Result<(usize, usize), String> {
        if self.index.len() != self.swarms.len() {
            return Err("swarm index and slots differ in size".into());
        }
        let (mut seeders, mut leechers) = (0, 0);
        let mut marked = 0;
        for (pos, s) in self.swarm_refs().enumerate() {
            let swarm = s.swarm;
            if self.find(hasher.hash_one(swarm.info_hash), &swarm.info_hash) != Some(pos) {
                return Err("a swarm is indexed wrongly".into());
            }
            if swarm.is_empty() {
                return Err("an empty swarm is kept".into());
            }
            swarm.v4.check()?;
            if swarm.has_v6() {
                marked += 1;
                let Some(v6) = s.v6 else {
                    return Err("a swarm marked as having IPv6 members has none".into());
                };
                if v6.is_empty() {
                    return Err("an empty IPv6 set is kept".into());
                }
                v6.check()?;
            }
            seeders += s.count(PeerMode::Seeder);
            leechers += s.count(PeerMode::Leech);
        }
        if marked != self.v6.len() {
            return Err("IPv6 members kept for a swarm not marked as having any".into());
        }
        if (seeders, leechers) != (self.seeders, self.leechers) {
            return Err("shard member counters differ from the recount".into());
        }
        Ok((seeders, leechers))
    }
}

/// Calls `emit` with up to `want` distinct positions of `0..n` other than `skip`, each
/// position chosen with the same probability (`want / (n - 1)` with a skip, `want / n`
/// without). No allocation, and two random numbers however many are wanted: when fewer than
/// all positions are wanted, the `m` positions (skip left out) are read as a ring, and the
/// positions taken are `start`, `start + stride`, `start + 2 stride`, ... (modulo `m`) for a
/// `start` drawn uniformly from `0..m` and a `stride` in `1..m` coprime to `m` (so that the
/// `want` positions are distinct). For any stride, a uniform start makes each position one of
/// exactly `want` of the `m` equally likely starts' picks, so every member has the same chance
/// `want / m` of being listed; the stride is drawn at random too, so that which members are
/// listed together changes from one list to the next (a window of neighbours is the stride-1
/// case). Each position then costs an addition and a comparison, no random bits. Inlined, so
/// that a caller's `emit` keeps its state in registers.
#[inline(always)]
pub(super) fn sample(
    n: usize,
    skip: Option<usize>,
    want: usize,
    rng: &mut SmallRng,
    mut emit: impl FnMut(usize),
) {
    let skip = skip.filter(|&s| s < n);
    if want >= n - usize::from(skip.is_some()) {
        // All of them, as `Sample` walks them (no random number drawn): the positions before
        // the skipped one, then those after it, as two plain runs.
        let cut = skip.unwrap_or(n);
        (0..cut).for_each(&mut emit);
        (cut + 1..n).for_each(&mut emit);
        return;
    }
    Sample::new(n, skip, want, rng).for_each(emit);
}

/// The positions [`sample`] emits, as an iterator (so that a caller's loop body is inlined
/// whatever its size). All `m` positions are the stride-1 walk from 0 (no random number drawn).
pub(super) struct Sample {
    /// Draws left.
    left: usize,
    /// The current ring position (skip left out).
    pos: usize,
    stride: usize,
    /// `pos + stride` leaves the ring exactly when `pos >= back`.
    back: usize,
    /// The skipped position (`usize::MAX` for none): ring positions from it on are one further.
    skip: usize,
}

impl Sample {
    #[inline(always)]
    pub(super) fn new(n: usize, skip: Option<usize>, want: usize, rng: &mut SmallRng) -> Self {
        let skip = skip.filter(|&s| s < n);
        let m = n - usize::from(skip.is_some());
        let want = want.min(m);
        let (start, stride) = if want == m || want == 0 {
            (0, 1)
        } else {
            // Here `1 <= want < m`, so `m >= 2`.
            (rng.gen_range(0..m), coprime_stride(m, rng.next_u64()))
        };
        Sample {
            left: want,
            pos: start,
            stride,
            back: m.saturating_sub(stride),
            skip: skip.unwrap_or(usize::MAX),
        }
    }
}

impl Iterator for Sample {
    type Item = usize;

    #[inline(always)]
    fn next(&mut self) -> Option<usize> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let pos = self.pos;
        self.pos = if pos >= self.back {
            pos - self.back
        } else {
            pos + self.stride
        };
        Some(pos + usize::from(pos >= self.skip))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

/// A stride in `1..m` coprime to `m` (`m >= 2`), derived from the random number `r`: the
/// first coprime value at or after `1 + r * (m - 1) / 2^64`, wrapping to 1 (always coprime).
/// Few values are tried: at most a handful for the sizes of a swarm.
fn coprime_stride(m: usize, r: u64) -> usize {
    let mut stride = 1 + ((u128::from(r) * (m as u128 - 1)) >> 64) as usize;
    while gcd(stride, m) != 1 {
        stride += 1;
        if stride == m {
            return 1;
        }
    }
    stride
}

/// The greatest common divisor of `a` and `b` (binary GCD: shifts and subtractions, no
/// division).
fn gcd(mut a: usize, mut b: usize) -> usize {
    if a == 0 || b == 0 {
        return a | b;
    }
    let shift = (a | b).trailing_zeros();
    a >>= a.trailing_zeros();
    loop {
        b >>= b.trailing_zeros();
        if a > b {
            std::mem::swap(&mut a, &mut b);
        }
        b -= a;
        if b == 0 {
            return a << shift;
        }
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

    /// Takes every member (all leechers) out of the swarm at `pos`, IPv4 ones found by their
    /// address, then deletes the swarm.
    fn empty_and_remove(shard: &mut BtShard, hasher: &impl BuildHasher, ih: &InfoHash, pos: usize) {
        let BtShard {
            swarms, v6: side, ..
        } = &mut *shard;
        let swarm = swarms.get_mut(pos).expect("the swarm's slot");
        let mut n = 0;
        while !swarm.v4.is_empty() {
            let w = swarm.v4.part(PeerMode::Leech)[0].wire;
            let f = swarm
                .v4
                .find(&w, PeerMode::Leech)
                .expect("a member is found by its address");
            assert!(swarm.v4.remove(f).is_some());
            n += 1;
        }
        if let Some(m) = side.get_mut(ih) {
            n += m.len();
            while !m.is_empty() {
                m.remove(Found {
                    mode: PeerMode::Leech,
                    pos: 0,
                });
            }
        }
        BtShard::settle_v6(side, swarm);
        shard.leechers -= n;
        shard.remove_at(hasher, pos);
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
                        match members.find(&w, m) {
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
                        let removed = members.find(&w, m).and_then(|f| members.remove(f)).is_some();
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
                        prop_assert_eq!(members.find(&w, m).map(|f| f.mode), model.get(&w).map(|x| x.0));
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
                if model.len() <= INLINE {
                    // Small sets are inline: no heap block.
                    prop_assert_eq!(members.heap_bytes(), 0);
                } else {
                    // A block at most about twice its members (it shrinks below half full).
                    prop_assert!(members.heap_bytes() <= BLOCK_HEADER + 2 * 8 * model.len() + 64);
                }
            }
        }

        /// The shard's dense swarm slots, index and IPv6 side table against a map model:
        /// swarms are created by a first member of either family and deleted with their last.
        #[test]
        fn shard_matches_a_model(ops in prop::collection::vec((0u8..3, 0u16..600, any::<bool>()), 1..600)) {
            let hasher = foldhash::fast::RandomState::default();
            let mut shard = BtShard::new(SmallRng::seed_from_u64(1), Arc::default());
            // Swarm key -> (IPv4 members, IPv6 members).
            let mut model: BTreeMap<u16, (usize, usize)> = BTreeMap::new();
            for (op, k, v6) in ops {
                let mut ih = [0u8; 20];
                ih[..2].copy_from_slice(&k.to_be_bytes());
                let h = hasher.hash_one(ih);
                match op {
                    0 | 1 => {
                        // A member joins (its address numbered by how many the family has).
                        let pos = match shard.find(h, &ih) {
                            Some(pos) => pos,
                            None => shard.insert(&hasher, h, ih),
                        };
                        let entry = model.entry(k).or_default();
                        let BtShard { swarms, v6: side, .. } = &mut shard;
                        let swarm = swarms.get_mut(pos).unwrap();
                        if v6 {
                            let mut w6 = [0u8; COMPACT_V6_LEN];
                            w6[..8].copy_from_slice(&(entry.1 as u64).to_be_bytes());
                            side.entry(ih).or_default().insert(w6, PeerMode::Leech, [0, 0]);
                            BtShard::settle_v6(side, swarm);
                            entry.1 += 1;
                        } else {
                            let n = entry.0 as u32;
                            let w4 = [n.to_be_bytes()[0], n.to_be_bytes()[1], n.to_be_bytes()[2], n.to_be_bytes()[3], 0, 1];
                            swarm.v4.insert(w4, PeerMode::Leech, [0, 0]);
                            entry.0 += 1;
                        }
                        shard.leechers += 1;
                    }
                    _ => {
                        // The whole swarm leaves.
                        if let Some(pos) = shard.find(h, &ih) {
                            empty_and_remove(&mut shard, &hasher, &ih, pos);
                        }
                        model.remove(&k);
                    }
                }
                if let Err(e) = shard.check(&hasher) {
                    prop_assert!(false, "{}", e);
                }
                let mut got: Vec<(u16, (usize, usize))> = shard
                    .swarm_refs()
                    .map(|s| {
                        let k = u16::from_be_bytes([s.swarm.info_hash[0], s.swarm.info_hash[1]]);
                        (k, (s.swarm.v4.len(), s.v6.map_or(0, Members6::len)))
                    })
                    .collect();
                got.sort_unstable();
                prop_assert_eq!(got, model.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>());
            }
            // Memory is given back: an emptied shard keeps no slots, IPv6 sets or member blocks.
            let keys: Vec<u16> = model.keys().copied().collect();
            for k in keys {
                let mut ih = [0u8; 20];
                ih[..2].copy_from_slice(&k.to_be_bytes());
                let pos = shard.find(hasher.hash_one(ih), &ih).unwrap();
                empty_and_remove(&mut shard, &hasher, &ih, pos);
            }
            prop_assert!(shard.check(&hasher).is_ok());
            prop_assert_eq!(shard.swarms.capacity(), 0);
            prop_assert_eq!(shard.v6.len(), 0);
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

    /// `sample` emits exactly what `Sample` yields for the same random numbers, its
    /// whole-part runs included, for every length, skip and count.
    #[test]
    fn sample_runs_match_the_iterator() {
        use rand::{RngCore, SeedableRng};
        for n in 0..12 {
            for skip in std::iter::once(None).chain((0..n + 2).map(Some)) {
                for want in 0..n + 3 {
                    let mut a = SmallRng::seed_from_u64((n * 100 + want) as u64);
                    let mut b = a.clone();
                    let mut emitted = Vec::new();
                    sample(n, skip, want, &mut a, |i| emitted.push(i));
                    let walked: Vec<usize> = Sample::new(n, skip, want, &mut b).collect();
                    assert_eq!(emitted, walked, "n {n} skip {skip:?} want {want}");
                    assert_eq!(a.next_u64(), b.next_u64(), "the same random numbers drawn");
                }
            }
        }
    }

    /// The stride of a sample is coprime to the ring's length for every length and random
    /// number (so that its positions are distinct), and the binary GCD agrees with Euclid's.
    #[test]
    fn strides_are_coprime() {
        fn euclid(a: usize, b: usize) -> usize {
            if b == 0 {
                a
            } else {
                euclid(b, a % b)
            }
        }
        for a in 0..200 {
            for b in 0..200 {
                assert_eq!(gcd(a, b), euclid(a, b), "gcd({a}, {b})");
            }
        }
        let mut rng = SmallRng::seed_from_u64(3);
        for m in (2..400).chain([30_030, 65_536, 1 << 20]) {
            let mut strides = std::collections::HashSet::new();
            for r in [0, u64::MAX]
                .into_iter()
                .chain((0..20).map(|_| rand::RngCore::next_u64(&mut rng)))
            {
                let s = coprime_stride(m, r);
                assert!(
                    (1..m).contains(&s) && euclid(s, m) == 1,
                    "m {m}: stride {s}"
                );
                strides.insert(s);
            }
            // The stride varies from one list to the next (beyond the smallest rings).
            assert!(m < 16 || strides.len() > 2, "m {m}: strides {strides:?}");
        }
    }

    /// The probable slot of a swarm's hash is its own slot (unless another swarm's index
    /// entry has the same 8-bit tag earlier in its home bucket, or its own entry overflowed
    /// past the home bucket: with a fixed seed, a deterministic few), and always a slot of the
    /// shard.
    #[test]
    fn the_probable_slot_is_the_swarms_own() {
        let hasher = foldhash::fast::FixedState::with_seed(9);
        let mut shard = BtShard::new(SmallRng::seed_from_u64(1), Arc::default());
        for k in 0..2_000u32 {
            let mut ih = [0u8; 20];
            ih[..4].copy_from_slice(&k.to_be_bytes());
            let pos = shard.insert(&hasher, hasher.hash_one(ih), ih);
            shard
                .swarms
                .get_mut(pos)
                .expect("the swarm just added")
                .v4
                .insert(wire(k as u8), PeerMode::Leech, [0, 0]);
        }
        let mut own = 0;
        for s in shard.swarms.iter() {
            let Some(slot) = shard.probable_slot(hasher.hash_one(s.info_hash)) else {
                continue;
            };
            assert!(shard.swarms.iter().any(|t| std::ptr::eq(t, slot)));
            own += usize::from(slot.info_hash == s.info_hash);
        }
        assert!(own >= 1_850, "{own} of 2,000 own slots");
        assert!(BtShard::new(SmallRng::seed_from_u64(1), Arc::default())
            .probable_slot(1)
            .is_none());
    }

    #[test]
    fn entries_are_wire_sized_and_a_slot_is_48_bytes() {
        assert_eq!(std::mem::size_of::<Entry<COMPACT_V4_LEN>>(), 8);
        assert_eq!(std::mem::size_of::<Entry<COMPACT_V6_LEN>>(), 20);
        assert_eq!(std::mem::size_of::<Members4>(), 24);
        assert_eq!(std::mem::size_of::<BtSwarm>(), 48);
    }

    /// Blocks fill whole allocator size classes, and growing steps one class (at most 1.25x
    /// and at least one more member).
    #[test]
    fn blocks_grow_by_size_classes() {
        let mut cap = block_capacity::<COMPACT_V4_LEN>(INLINE + 1);
        assert_eq!(cap, 4, "16 + 4 x 8 = 48 bytes");
        let mut steps = 0;
        while cap < 1_000_000 {
            let next = block_capacity::<COMPACT_V4_LEN>(cap + 1);
            assert!(next > cap);
            let (a, b) = (BLOCK_HEADER + cap * 8, BLOCK_HEADER + next * 8);
            assert!(b * 4 <= a * 5 || b <= 64, "{a} -> {b} bytes");
            // Once past 64 bytes, a class is a multiple of an eighth of the next power of two.
            assert!(b <= 64 || b % ((b - 1).next_power_of_two() / 8) == 0, "{b}");
            cap = next;
            steps += 1;
        }
        assert!(steps < 80, "{steps} steps to a million members");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// The prefetching search answers as `binary_search_by` does, for members and for
        /// addresses between, before and after them, in parts of every size up to thousands.
        #[test]
        fn search_matches_the_standard_binary_search(
            keys in prop::collection::btree_set(any::<u32>(), 0..3_000),
            probes in prop::collection::vec(any::<u32>(), 1..64),
        ) {
            let entry = |k: u32| {
                let b = k.to_be_bytes();
                Entry { wire: [b[0], b[1], b[2], b[3], 0x1a, 0xe1], stamp: [0, 0] }
            };
            let part: Vec<Entry<6>> = keys.iter().map(|&k| entry(k)).collect();
            let members = keys.iter().step_by(7).copied();
            for k in probes.into_iter().chain(members) {
                let w = entry(k).wire;
                let expected = part.binary_search_by(|e| wire_cmp(&e.wire, &w));
                prop_assert_eq!(search::<6, true>(&part, &w), expected);
                prop_assert_eq!(search::<6, false>(&part, &w), expected);
            }
        }
    }

    /// A heap set reads its members by the length it keeps beside the block: at every size
    /// on the way up past the inline form and back down, what it reads is exactly the block's
    /// own entries, and every member is found in its part.
    #[test]
    fn a_heap_set_reads_its_block_by_its_own_length() {
        let mut m = Members4::default();
        let mut wires: Vec<[u8; 6]> = Vec::new();
        let agree = |m: &Members4| {
            if let Store::Heap { entries, len, .. } = &m.store {
                assert_eq!(*len as usize, entries.len());
                assert_eq!(m.entries(), entries.as_slice());
            }
            assert!(m.check().is_ok());
        };
        for i in 0..900u32 {
            let b = (i.wrapping_mul(2_654_435_761)).to_be_bytes();
            let w = [b[0], b[1], b[2], b[3], 0, 1];
            m.insert(w, mode(i % 10 < 3), [0, 0]);
            wires.push(w);
            agree(&m);
        }
        for w in &wires {
            let f = m.find(w, PeerMode::Leech).expect("every member is found");
            m.touch(f, [1, 2]);
            agree(&m);
        }
        while let Some(w) = wires.pop() {
            let f = m.find(&w, PeerMode::Seeder).expect("every member is found");
            assert!(m.remove(f).is_some());
            agree(&m);
            assert_eq!(m.len(), wires.len());
        }
    }

    /// A large swarm's block follows its members down as they leave, and back inline.
    #[test]
    fn a_shrinking_set_gives_its_block_back() {
        let mut m = Members4::default();
        let wires: Vec<[u8; 6]> = (0..5000u32)
            .map(|i| {
                let b = i.to_be_bytes();
                [b[0], b[1], b[2], b[3], 0, 1]
            })
            .collect();
        for w in &wires {
            m.insert(*w, PeerMode::Leech, [0, 0]);
        }
        let full = m.heap_bytes();
        assert!((5000 * 8..=5000 * 8 * 5 / 4 + 64).contains(&full), "{full}");
        for w in &wires[..4900] {
            let f = m.find(w, PeerMode::Leech).unwrap();
            m.remove(f);
        }
        assert!(m.heap_bytes() <= 2 * 100 * 8 + 64, "{}", m.heap_bytes());
        for w in &wires[4900..4998] {
            let f = m.find(w, PeerMode::Leech).unwrap();
            m.remove(f);
        }
        assert_eq!(m.len(), 2);
        assert_eq!(m.heap_bytes(), 0);
        m.check().unwrap();
    }

    /// The integer compare of IPv4 forms is the byte order.
    #[test]
    fn wire_cmp_is_byte_order() {
        let forms = [
            [0u8; 6],
            [0, 0, 0, 0, 0, 1],
            [0, 0, 0, 0, 1, 0],
            [1, 0, 0, 0, 0, 0],
            [255; 6],
            [10, 0, 0, 1, 0x1a, 0xe1],
            [10, 0, 0, 1, 0xff, 0],
        ];
        for a in &forms {
            for b in &forms {
                assert_eq!(wire_cmp(a, b), a.cmp(b), "{a:?} {b:?}");
            }
        }
        let (a, b) = ([1u8; 18], [2u8; 18]);
        assert_eq!(wire_cmp(&a, &b), a.cmp(&b));
    }

    #[test]
    fn stamps_wrap() {
        let t = Time::from_secs(65_530);
        let s = stamp(t);
        assert_eq!(stamp_age(s, Time::from_secs(65_540)), 10);
        assert_eq!(stamp_age(s, t), 0);
    }
}
