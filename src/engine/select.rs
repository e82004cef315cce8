//! Peer-list selection and chunk-set arithmetic.
//!
//! A peer list is a uniform random sample without replacement of a swarm's members, never the
//! requester, seeders first for leechers (RFC 7846 §4.1.1 IMPLEMENTATION NOTE: "the tracker may
//! return a random sample from the peer population"). Sampling allocates nothing beyond the
//! answer vector for counts up to [`STACK_SAMPLE_MAX`].

use rand::rngs::SmallRng;
use rand::{Rng, RngCore};
use smallvec::SmallVec;

use super::tables::{Member, Members, Swarm};
use super::types::{ChunkRange, PeerMode};

/// One chosen member (its handle and the copy of its peer-list entry) and its mode in the
/// swarm. The engine turns picks into peer list entries once the swarm's lock is released.
pub(super) type Pick = (Member, PeerMode);

/// Peer counts up to this use an on-stack set for Floyd's algorithm; larger configured counts
/// allocate a set per request.
pub(super) const STACK_SAMPLE_MAX: usize = 256;
/// Peer counts up to this sample with scratch arrays that are cleared whole (cheaper than
/// writing a longer one element by element).
const SMALL_SAMPLE: usize = 64;
/// Lists longer than this (members of one mode; 4.5 KiB of 36-byte members) have the chosen
/// members prefetched before they are copied; shorter ones take few cache lines anyway.
const PREFETCH_PICKS_ABOVE: usize = 128;
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

impl PickSink for Vec<Pick> {
    fn picked(&self) -> usize {
        self.len()
    }
    fn put(&mut self, pick: Pick) {
        self.push(pick);
    }
}

/// Appends `want` members of `list` (or all of them if fewer), uniformly chosen without
/// replacement, leaving out position `skip`.
fn sample_into(
    list: Members<'_>,
    skip: Option<usize>,
    want: usize,
    mode: PeerMode,
    rng: &mut SmallRng,
    out: &mut impl PickSink,
) {
    let skip = skip.filter(|&s| s < list.len());
    let n = list.len() - usize::from(skip.is_some());
    let want = want.min(n);
    // Chosen indices of the list without the requester (index i is list position i, or i + 1
    // from the requester's position on).
    // Scratch on the stack: a small array for ordinary counts (cleared whole: 256 bytes), a
    // larger one written only as far as used up to `STACK_SAMPLE_MAX` (a whole 1 KiB array
    // would be cleared at every call, most of whose lists are short).
    let mut small_picks = [0u32; SMALL_SAMPLE];
    let mut large_picks: SmallVec<[u32; STACK_SAMPLE_MAX]> = SmallVec::new();
    let picks: &mut [u32] = match small_picks.get_mut(..want) {
        Some(p) => p,
        None => {
            large_picks.resize(want, 0);
            &mut large_picks
        }
    };
    if want == n {
        for (slot, i) in picks.iter_mut().zip(0u32..) {
            *slot = i;
        }
    } else if want * 2 >= n {
        // Selection sampling (Knuth's algorithm S): one pass, O(n) = O(want) here.
        let mut chosen = 0;
        for i in 0..n {
            if chosen == want {
                break;
            }
            if below(rng, n - i) < want - chosen {
                if let Some(slot) = picks.get_mut(chosen) {
                    *slot = i as u32;
                }
                chosen += 1;
            }
        }
    } else {
        // Floyd's algorithm: `want` distinct indices of 0..n in O(want), with a small
        // open-addressing set that lives on the stack for ordinary counts.
        let slots = (want * 2).next_power_of_two();
        let mut small_table = [u32::MAX; SMALL_SAMPLE * 2];
        let mut large_table: SmallVec<[u32; STACK_SAMPLE_MAX * 2]> = SmallVec::new();
        let table: &mut [u32] = match small_table.get_mut(..slots) {
            Some(t) => t,
            None => {
                large_table.resize(slots, u32::MAX);
                &mut large_table
            }
        };
        for (slot, j) in picks.iter_mut().zip((n - want)..n) {
            let t = below(rng, j + 1);
            *slot = if set_insert(table, t as u32) {
                t as u32
            } else {
                set_insert(table, j as u32);
                j as u32
            };
        }
    }
    let at = |i: u32| -> Option<&Member> {
        let i = i as usize;
        let pos = match skip {
            Some(s) if i >= s => i + 1,
            _ => i,
        };
        list.get(pos)
    };
    if n > PREFETCH_PICKS_ABOVE {
        // The chosen members are scattered over a large vector: ask for all their lines first,
        // so that their cache misses overlap instead of following one another as each is
        // copied.
        for &i in picks.iter() {
            if let Some(m) = at(i) {
                let p = (m as *const Member).cast::<u8>();
                super::announce::prefetch(p);
                super::announce::prefetch(p.wrapping_add(std::mem::size_of::<Member>() - 1));
            }
        }
    }
    for &i in picks.iter() {
        if let Some(m) = at(i) {
            out.put((*m, mode));
        }
    }
}

/// A uniform integer in `0..n` (`n >= 1`; 0 for `n == 0`), by Lemire's multiply-and-shift
/// with rejection ("Fast Random Integer Generation in an Interval", 2019): one 64-bit draw and
/// one widening multiply; the remainder that decides a rejection is computed only in the
/// rare case that the low half of the product falls below `n`. Unbiased, and inlined into the
/// sampling loops (a sample of 30 draws about 30 to 60 times).
#[inline(always)]
fn below(rng: &mut SmallRng, n: usize) -> usize {
    let n = n as u64;
    let mut m = u128::from(rng.next_u64()) * u128::from(n);
    if (m as u64) < n {
        let threshold = n.wrapping_neg() % n.max(1);
        while (m as u64) < threshold {
            m = u128::from(rng.next_u64()) * u128::from(n);
        }
    }
    (m >> 64) as usize
}

/// Inserts `v` into an open-addressing set (power-of-two size, `u32::MAX` = empty, at most half
/// full); `false` if it was already there.
pub(super) fn set_insert(table: &mut [u32], v: u32) -> bool {
    let mask = table.len() - 1;
    let mut i = (v.wrapping_mul(0x9E37_79B9) as usize) & mask;
    loop {
        match table.get(i).copied() {
            Some(x) if x == v => return false,
            Some(u32::MAX) => {
                if let Some(slot) = table.get_mut(i) {
                    *slot = v;
                }
                return true;
            }
            Some(_) => i = (i + 1) & mask,
            None => return false,
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
    use rand::SeedableRng;

    #[test]
    fn below_is_in_range_and_covers_it() {
        let mut rng = SmallRng::seed_from_u64(7);
        assert_eq!(below(&mut rng, 0), 0);
        assert_eq!(below(&mut rng, 1), 0);
        for n in [2usize, 3, 7, 30, 1000] {
            let mut seen = vec![0u32; n];
            for _ in 0..200 * n {
                let v = below(&mut rng, n);
                assert!(v < n, "{v} from 0..{n}");
                seen[v] += 1;
            }
            // Each value about 200 times: far from 0 or from all of them.
            assert!(
                seen.iter().all(|&c| (100..=320).contains(&c)),
                "{n}: {seen:?}"
            );
        }
    }

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

    #[test]
    fn set_insert_detects_duplicates() {
        let mut t = [u32::MAX; 8];
        assert!(set_insert(&mut t, 3));
        assert!(set_insert(&mut t, 11));
        assert!(!set_insert(&mut t, 3));
        assert!(!set_insert(&mut t, 11));
    }
}
