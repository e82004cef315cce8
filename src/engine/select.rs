//! Peer-list selection and chunk-set arithmetic.
//!
//! A peer list is a random sample without replacement of a swarm's members, never the
//! requester, seeders first for leechers (RFC 7846 §4.1.1 IMPLEMENTATION NOTE: "the tracker may
//! return a random sample from the peer population"). Within each mode every member other than
//! the requester has the same probability of being listed (the wanted count over the mode's
//! other members): the same sampler as the BitTorrent tables' (`bt_table::sample`, a random
//! start and a random stride coprime to the list's length), two random numbers per mode
//! whatever the count, and nothing allocated.

use rand::rngs::SmallRng;
use rand::Rng;

use crossbeam::utils::CachePadded;
use parking_lot::Mutex;
use smallvec::SmallVec;

use super::tables::{Member, Members, PeerShard, Swarm};
use super::types::{ChunkRange, PeerInfo, PeerMode};

/// One chosen member (its handle and the copy of its peer-list entry) and its mode in the
/// swarm. The engine turns picks into peer list entries once the swarm's lock is released.
pub(super) type Pick = (Member, PeerMode);

/// Lists longer than this (members of one mode; 4.5 KiB of 36-byte members) have the chosen
/// members prefetched before they are copied; shorter ones take few cache lines anyway.
const PREFETCH_PICKS_ABOVE: usize = 128;
/// How many draws after its prefetch a member of a large list is copied (a power of two).
const PREFETCH_AHEAD: usize = 8;
/// FIND with chunk ranges examines at most this many members per mode (or
/// `CHUNK_SCAN_PER_PEER` times the peer count, if larger), starting at a random position, so
/// a filtered FIND in a huge swarm costs a bounded amount of work; its answer may then be
/// shorter than the number of matching members.
pub(super) const CHUNK_SCAN_MIN: usize = 1024;
pub(super) const CHUNK_SCAN_PER_PEER: usize = 8;

/// Chooses up to `count` members of `swarm`, never the member with key `requester`, and appends
/// them to `out`. `requester_mode` is the requester's mode in this swarm (if a member): a seeder
/// gets leechers first, anyone else seeders first. With `chunks`, only members holding every
/// range are chosen (bounded scan, see [`CHUNK_SCAN_MIN`]).
pub(super) fn peer_list_into(
    swarm: &Swarm,
    requester: u64,
    requester_mode: Option<PeerMode>,
    count: usize,
    chunks: &[ChunkRange],
    rng: &mut SmallRng,
    out: &mut impl PickSink,
) {
    let start = out.picked();
    let order = match requester_mode {
        Some(PeerMode::Seeder) => [PeerMode::Leech, PeerMode::Seeder],
        _ => [PeerMode::Seeder, PeerMode::Leech],
    };
    if count == 0 {
        return;
    }
    for mode in order {
        let want = count - (out.picked() - start);
        if want == 0 {
            break;
        }
        let list = swarm.members(mode);
        if chunks.is_empty() {
            let skip = if requester_mode == Some(mode) {
                swarm.position(requester, mode)
            } else {
                None
            };
            sample_into(list, skip, want, mode, rng, out);
        } else if swarm.has_chunk_sets() {
            filter_into(swarm, list, requester, want, mode, chunks, rng, out);
        }
    }
}

/// Where picks go: a vector or a small on-stack vector.
pub(super) trait PickSink {
    fn picked(&self) -> usize;
    fn put(&mut self, pick: Pick);
}

impl<A: smallvec::Array<Item = Pick>> PickSink for smallvec::SmallVec<A> {
    fn picked(&self) -> usize {
        self.len()
    }
    fn put(&mut self, pick: Pick) {
        self.push(pick);
    }
}

/// Where a FIND's picks go: each entry is built in its place in the answer's peer list from
/// the membership's copy (nothing is written twice). A pick whose copy is incomplete takes a
/// vacant entry ([`PeerInfo::vacant`]) and is noted in `late` with that entry's position;
/// [`fill_late`] fills it from the peer's record once the swarm's lock is released.
pub(super) struct ListSink<'a> {
    pub list: &'a mut Vec<PeerInfo>,
    pub late: &'a mut Late,
}

/// Picks whose entries are read from records: (position in the list, member handle).
pub(super) type Late = SmallVec<[(u32, u64); 16]>;

impl PickSink for ListSink<'_> {
    #[inline(always)]
    fn picked(&self) -> usize {
        self.list.len()
    }
    #[inline(always)]
    fn put(&mut self, (m, mode): Pick) {
        if m.is_complete() {
            self.list.push(m.entry(mode));
        } else {
            self.late.push((self.list.len() as u32, m.key));
            self.list.push(PeerInfo::vacant(mode));
        }
    }
}

/// Fills the vacant entries `late` names in `list` from the peers' records (the picks of one
/// peer shard read under one lock, shard after shard; no other lock held), then drops the
/// entries whose record left meanwhile. The list keeps its order.
pub(super) fn fill_late(
    peer_shards: &[CachePadded<Mutex<PeerShard>>],
    late: &Late,
    list: &mut Vec<PeerInfo>,
) {
    let mut done: SmallVec<[bool; 16]> = smallvec::smallvec![false; late.len()];
    for i in 0..late.len() {
        let Some(&(_, key)) = late.get(i) else {
            break;
        };
        if done.get(i).copied().unwrap_or(true) {
            continue;
        }
        let shard_no = PeerShard::split_key(key).0;
        let Some(lock) = peer_shards.get(shard_no) else {
            continue;
        };
        let shard = lock.lock();
        for (&(at, key), d) in late.iter().zip(done.iter_mut()).skip(i) {
            if *d || PeerShard::split_key(key).0 != shard_no {
                continue;
            }
            *d = true;
            if let (Some(record), Some(entry)) = (shard.by_key(key), list.get_mut(at as usize)) {
                *entry = shard.peer_info_of(record, entry.mode);
            }
        }
    }
    list.retain(|p| !p.is_vacant());
}

impl PickSink for Vec<Pick> {
    fn picked(&self) -> usize {
        self.len()
    }
    fn put(&mut self, pick: Pick) {
        self.push(pick);
    }
}

/// Appends `want` members of `list` (or all of them if fewer), distinct, leaving out
/// position `skip`, each member with the same probability `want / m` of being listed (`m` the
/// list's length without `skip`): the BitTorrent tables' sampler ([`super::bt_table::sample`]:
/// a uniform random start and a random stride coprime to `m`, two random numbers per list
/// however long it is). A list within one chunk of the member vector (every swarm of up to
/// a chunk, and most runs of larger ones) is read as a slice.
#[inline(always)]
fn sample_into(
    list: Members<'_>,
    skip: Option<usize>,
    want: usize,
    mode: PeerMode,
    rng: &mut SmallRng,
    out: &mut impl PickSink,
) {
    let sample = super::bt_table::Sample::new(list.len(), skip, want, rng);
    match list.as_slice() {
        Some(slice) => copy_drawn(sample, |i| slice.get(i), list.len(), mode, out),
        None => copy_drawn(sample, |i| list.get(i), list.len(), mode, out),
    }
}

/// Copies the members that `sample` draws from a list of `n` members (`at` reads one) into
/// `out`, in draw order.
#[inline(always)]
fn copy_drawn<'a>(
    sample: super::bt_table::Sample,
    at: impl Fn(usize) -> Option<&'a Member>,
    n: usize,
    mode: PeerMode,
    out: &mut impl PickSink,
) {
    // In a large list each chosen member is prefetched when it is drawn and copied
    // `PREFETCH_AHEAD` draws later (a ring of the members drawn but not copied yet), so that
    // that many cache misses overlap instead of following one another; a short list takes
    // few cache lines, and each member is copied at once.
    if n <= PREFETCH_PICKS_ABOVE {
        for i in sample {
            if let Some(m) = at(i) {
                out.put((*m, mode));
            }
        }
        return;
    }
    let mut ring: [Option<&Member>; PREFETCH_AHEAD] = [None; PREFETCH_AHEAD];
    let mut drawn = 0usize;
    for i in sample {
        let Some(m) = at(i) else {
            continue;
        };
        let p = (m as *const Member).cast::<u8>();
        super::announce::prefetch(p);
        super::announce::prefetch(p.wrapping_add(std::mem::size_of::<Member>() - 1));
        if let Some(slot) = ring.get_mut(drawn % PREFETCH_AHEAD) {
            if let Some(earlier) = slot.replace(m) {
                out.put((*earlier, mode));
            }
        }
        drawn += 1;
    }
    // The last draws, oldest first (the slot of the next draw holds the oldest).
    for j in 0..PREFETCH_AHEAD {
        if let Some(Some(m)) = ring.get((drawn + j) % PREFETCH_AHEAD) {
            out.put((**m, mode));
        }
    }
}

/// Appends up to `want` members of `list` whose chunk sets cover all of `chunks`, scanning a
/// bounded window that starts at a random position.
#[allow(clippy::too_many_arguments)]
fn filter_into(
    swarm: &Swarm,
    list: Members<'_>,
    requester: u64,
    want: usize,
    mode: PeerMode,
    chunks: &[ChunkRange],
    rng: &mut SmallRng,
    out: &mut impl PickSink,
) {
    let n = list.len();
    if n == 0 {
        return;
    }
    let bound = n.min(CHUNK_SCAN_MIN.max(want.saturating_mul(CHUNK_SCAN_PER_PEER)));
    let start = rng.gen_range(0..n);
    let mut found = 0;
    for step in 0..bound {
        if found == want {
            break;
        }
        let Some(m) = list.get((start + step) % n) else {
            break;
        };
        if m.key != requester && covers_all(swarm.chunks_of(m.key), chunks) {
            out.put((*m, mode));
            found += 1;
        }
    }
}

/// Whether the sorted, merged set `held` contains every range of `wanted`.
pub(super) fn covers_all(held: &[ChunkRange], wanted: &[ChunkRange]) -> bool {
    !held.is_empty() && wanted.iter().all(|w| covers(held, w))
}

fn covers(held: &[ChunkRange], wanted: &ChunkRange) -> bool {
    // The candidate is the last held range starting at or before `wanted.start`; ranges are
    // merged, so no other range can contain `wanted`.
    let i = held.partition_point(|r| r.start <= wanted.start);
    i > 0 && held.get(i - 1).is_some_and(|r| r.contains(wanted))
}

/// Sorts and merges ranges (overlapping or adjacent ones become one). `None` if a range has
/// `start > end`.
pub(super) fn normalize(ranges: &[ChunkRange]) -> Option<Box<[ChunkRange]>> {
    if ranges.iter().any(|r| r.start > r.end) {
        return None;
    }
    let mut sorted = ranges.to_vec();
    sorted.sort_unstable();
    let mut merged: Vec<ChunkRange> = Vec::with_capacity(sorted.len());
    for r in sorted {
        match merged.last_mut() {
            Some(last) if r.start <= last.end.saturating_add(1) => {
                last.end = last.end.max(r.end);
            }
            _ => merged.push(r),
        }
    }
    Some(merged.into_boxed_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, end: u64) -> ChunkRange {
        ChunkRange { start, end }
    }

    #[test]
    fn normalize_sorts_and_merges_adjacent_and_overlapping() {
        let got = normalize(&[r(10, 20), r(0, 4), r(5, 7), r(15, 30), r(40, 40)]);
        assert_eq!(got.as_deref(), Some(&[r(0, 7), r(10, 30), r(40, 40)][..]));
        assert_eq!(normalize(&[r(3, 2)]), None);
        let full = normalize(&[r(u64::MAX, u64::MAX), r(0, u64::MAX)]);
        assert_eq!(full.as_deref(), Some(&[r(0, u64::MAX)][..]));
    }

    #[test]
    fn covers_needs_every_range_inside_one_held_range() {
        let held = [r(0, 7), r(10, 30)];
        assert!(covers_all(&held, &[r(0, 7), r(12, 20)]));
        assert!(!covers_all(&held, &[r(6, 11)]));
        assert!(!covers_all(&held, &[r(31, 31)]));
        assert!(!covers_all(&[], &[r(0, 0)]));
    }
}
