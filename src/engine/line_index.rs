//! A hash index of `u32` positions whose probe usually reads one cache line.
//!
//! The PPSTP peer-status registry and swarm table (`tables.rs`) and the BitTorrent swarm
//! table (`bt_table.rs`) find an entry by id through an index of positions (the ids live in
//! the entries); the BitTorrent table's staged prefetch (`BtPrefetch`) starts with the home
//! bucket ([`Geometry::prefetch`]) and then the entry [`LineIndex::first_tagged`] names. A hashbrown table keeps its control bytes and its
//! values apart, so a probe of a table far beyond the caches misses twice (the control group,
//! then the value) before the entry itself is read. Here a bucket is one 64-byte cache line
//! holding 12 positions and their 8-bit hash tags: a probe reads its home bucket, compares
//! tags, and goes on to the next bucket only when some entry homed at or before it was pushed
//! past it (an overflow count per bucket, as in folly's F14 tables). A bucket's address
//! depends on the hash alone, so a caller can prefetch it before it takes the table's lock
//! ([`Geometry`]).
//!
//! Buckets are not a power of two in number: the home bucket is the low 32 bits of the hash
//! scaled to the bucket count, so the table grows by about half when it is 7/8 full and stays
//! between about 58% and 88% full, 5.3 bytes per slot, 6 to 9 bytes per entry.

use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::Arc;

/// Entries per bucket (one cache line with their tags and the bucket's counts).
const SLOTS: usize = 12;

/// One cache line of the index.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Bucket {
    pos: [u32; SLOTS],
    /// The tags of `pos[..len]`, then `len` (at [`LEN`]) and the overflow count (at
    /// [`OVERFLOW`]: entries whose probe passed this bucket, homed here or before and stored
    /// after; it saturates at `u8::MAX` and is then never decremented, lookups just probe
    /// on). Sixteen bytes, so that one word operation compares all tags.
    meta: [u8; 16],
}

/// Where a bucket's entry count is in `meta`.
const LEN: usize = SLOTS;
/// Where a bucket's overflow count is in `meta`.
const OVERFLOW: usize = SLOTS + 1;

const EMPTY: Bucket = Bucket {
    pos: [0; SLOTS],
    meta: [0; 16],
};

impl Bucket {
    fn len(&self) -> usize {
        usize::from(self.meta[LEN])
    }

    fn overflow(&self) -> u8 {
        self.meta[OVERFLOW]
    }

    /// The entries whose tag is `t`: bit `8 * k + 7` set for entry `k` (a word comparison of
    /// all tags at once, exact: no carry crosses a byte).
    #[inline]
    fn matches(&self, t: u8) -> u128 {
        const LOW7: u128 = u128::from_le_bytes([0x7f; 16]);
        let x = u128::from_le_bytes(self.meta) ^ (u128::from(t) * u128::from_le_bytes([1; 16]));
        // High bit of each byte set exactly where the byte of `x` is zero.
        let zero = !(((x & LOW7) + LOW7) | x | LOW7);
        zero & LEN_MASK.get(self.len()).copied().unwrap_or(0)
    }
}

/// The bytes of the first `len` tags, by `len` (a table instead of a 128-bit shift by a
/// variable amount, which takes a dozen instructions).
const LEN_MASK: [u128; SLOTS + 1] = {
    let mut masks = [0u128; SLOTS + 1];
    let mut len = 1;
    while len <= SLOTS {
        masks[len] = (1u128 << (8 * len)) - 1;
        len += 1;
    }
    masks
};

/// Where an index's buckets are, published for prefetches that run without the table's lock:
/// the address and count of its buckets, updated whenever they are reallocated. A stale value
/// only makes a prefetch useless (a prefetch never faults).
#[derive(Debug, Default)]
pub(super) struct Geometry {
    base: AtomicPtr<u8>,
    buckets: AtomicUsize,
}

impl Geometry {
    /// Starts loading the bucket that hash `h` is homed at into the cache. Reads nothing the
    /// program sees; does nothing while the index is empty.
    #[inline]
    pub fn prefetch(&self, h: u64) {
        let n = self.buckets.load(Ordering::Relaxed);
        if n == 0 {
            return;
        }
        let base = self.base.load(Ordering::Relaxed);
        let at = home(h, n) * std::mem::size_of::<Bucket>();
        super::announce::prefetch(base.wrapping_add(at).cast_const());
    }
}

/// The home bucket of hash `h` among `n`.
#[inline]
fn home(h: u64, n: usize) -> usize {
    ((u64::from(h as u32) * n as u64) >> 32) as usize
}

/// The tag of hash `h` (bits 32..40: the low bits pick the bucket, the high ones the shard).
#[inline]
fn tag(h: u64) -> u8 {
    (h >> 32) as u8
}

/// The index: buckets, the number of entries, and the published [`Geometry`].
pub(super) struct LineIndex {
    buckets: Box<[Bucket]>,
    len: usize,
    geometry: Arc<Geometry>,
}

impl Default for LineIndex {
    fn default() -> Self {
        Self::new(Arc::default())
    }
}

impl LineIndex {
    /// An empty index (no allocation) that publishes its bucket address into `geometry`.
    pub fn new(geometry: Arc<Geometry>) -> Self {
        let index = LineIndex {
            buckets: Box::new([]),
            len: 0,
            geometry,
        };
        index.publish();
        index
    }

    fn publish(&self) {
        self.geometry
            .base
            .store(self.buckets.as_ptr().cast_mut().cast(), Ordering::Relaxed);
        self.geometry
            .buckets
            .store(self.buckets.len(), Ordering::Relaxed);
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Entries the index holds before it grows.
    pub fn capacity(&self) -> usize {
        self.buckets.len() * SLOTS * 7 / 8
    }

    /// Heap bytes of the buckets.
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(&self.buckets[..])
    }

    /// The first entry with hash `h` for which `eq` holds.
    #[inline]
    pub fn find(&self, h: u64, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        let (b, k) = self.locate(h, &mut eq)?;
        self.buckets.get(b).and_then(|b| b.pos.get(k)).copied()
    }

    /// As [`LineIndex::find`], the entry to change.
    pub fn find_mut(&mut self, h: u64, mut eq: impl FnMut(u32) -> bool) -> Option<&mut u32> {
        let (b, k) = self.locate(h, &mut eq)?;
        self.buckets.get_mut(b).and_then(|b| b.pos.get_mut(k))
    }

    /// The first entry of hash `h`'s home bucket whose tag matches, without comparing keys:
    /// the entry a lookup most likely finds. For a prefetch only.
    #[inline]
    pub fn first_tagged(&self, h: u64) -> Option<u32> {
        let n = self.buckets.len();
        if n == 0 {
            return None;
        }
        let bucket = self.buckets.get(home(h, n))?;
        let m = bucket.matches(tag(h));
        if m == 0 {
            return None;
        }
        bucket.pos.get(m.trailing_zeros() as usize / 8).copied()
    }

    /// Starts loading into the cache the item that hash `h` most likely names: the one `get`
    /// returns for the position of [`LineIndex::first_tagged`] (every cache line of it). Reads
    /// the index bucket only, never the item; `get` maps a position to the item it indexes
    /// (a table's slot or record vector).
    #[inline]
    pub fn prefetch_probable<'a, T: 'a>(&self, h: u64, get: impl FnOnce(usize) -> Option<&'a T>) {
        if let Some(item) = self.first_tagged(h).and_then(|i| get(i as usize)) {
            super::announce::prefetch_object(item);
        }
    }

    /// (bucket, slot) of the first entry with hash `h` for which `eq` holds.
    #[inline]
    fn locate(&self, h: u64, eq: &mut impl FnMut(u32) -> bool) -> Option<(usize, usize)> {
        let n = self.buckets.len();
        if n == 0 {
            return None;
        }
        let t = tag(h);
        let mut b = home(h, n);
        for _ in 0..n {
            let bucket = self.buckets.get(b)?;
            let mut m = bucket.matches(t);
            while m != 0 {
                let k = m.trailing_zeros() as usize / 8;
                if bucket.pos.get(k).is_some_and(|&pos| eq(pos)) {
                    return Some((b, k));
                }
                m &= m - 1;
            }
            if bucket.overflow() == 0 {
                return None;
            }
            b = if b + 1 == n { 0 } else { b + 1 };
        }
        None
    }

    /// Removes the first entry with hash `h` for which `eq` holds and returns it.
    pub fn remove(&mut self, h: u64, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        let (b, k) = self.locate(h, &mut eq)?;
        let n = self.buckets.len();
        let bucket = self.buckets.get_mut(b)?;
        let last = bucket.len() - 1;
        let pos = *bucket.pos.get(k)?;
        bucket.pos.swap(k, last);
        bucket.meta.swap(k, last);
        bucket.meta[LEN] -= 1;
        // The buckets the entry's probe passed no longer have it beyond them.
        let mut i = home(h, n);
        while i != b {
            if let Some(p) = self.buckets.get_mut(i) {
                if p.meta[OVERFLOW] != u8::MAX {
                    p.meta[OVERFLOW] -= 1;
                }
            }
            i = if i + 1 == n { 0 } else { i + 1 };
        }
        self.len -= 1;
        Some(pos)
    }

    /// Adds `pos` with hash `h` (the caller knows no equal entry is there). `hash` gives the
    /// hash of any entry when the index grows.
    pub fn insert(&mut self, h: u64, pos: u32, hash: impl Fn(u32) -> u64) {
        if self.len + 1 > self.capacity() {
            let want = (self.len + 1).max(SLOTS) * 3 / 2;
            self.rebuild(want, &hash);
        }
        self.place(h, pos);
        self.len += 1;
    }

    /// Puts an entry into the first bucket with room from its home on (one always has room).
    fn place(&mut self, h: u64, pos: u32) {
        let n = self.buckets.len();
        let mut b = home(h, n);
        for _ in 0..n {
            let Some(bucket) = self.buckets.get_mut(b) else {
                return;
            };
            let len = bucket.len();
            if len < SLOTS {
                if let (Some(p), Some(t)) = (bucket.pos.get_mut(len), bucket.meta.get_mut(len)) {
                    *p = pos;
                    *t = tag(h);
                }
                bucket.meta[LEN] += 1;
                return;
            }
            bucket.meta[OVERFLOW] = bucket.overflow().saturating_add(1);
            b = if b + 1 == n { 0 } else { b + 1 };
        }
    }

    /// Gives back memory when the index is at most a quarter full: it is rebuilt for twice
    /// its entries (at least `min` entries).
    pub fn shrink(&mut self, min: usize, hash: impl Fn(u32) -> u64) {
        if self.buckets.len() > 4 && self.len * 4 < self.capacity() {
            self.rebuild((self.len * 2).max(min), &hash);
        }
    }

    /// Moves every entry into a new array of buckets with room for `entries` (7/8 full).
    fn rebuild(&mut self, entries: usize, hash: &impl Fn(u32) -> u64) {
        let n = if entries == 0 {
            0
        } else {
            (entries * 8).div_ceil(SLOTS * 7).max(1)
        };
        let old = std::mem::replace(&mut self.buckets, vec![EMPTY; n].into_boxed_slice());
        for bucket in old.iter() {
            for &pos in bucket.pos.iter().take(bucket.len()) {
                self.place(hash(pos), pos);
            }
        }
        self.publish();
    }

    /// Every entry (in no particular order).
    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.buckets
            .iter()
            .flat_map(|b| b.pos.iter().take(b.len()).copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_bucket_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Bucket>(), 64);
        assert_eq!(std::mem::align_of::<Bucket>(), 64);
    }

    /// Hashes that collide in their home bucket (and tag) on purpose, so that buckets overflow
    /// and probes cross them.
    fn weak_hash(key: u32) -> u64 {
        u64::from(key % 7).wrapping_mul(0x0101_0101_0101_0101) ^ u64::from(key / 7 % 3) << 33
    }

    fn strong_hash(key: u32) -> u64 {
        let h = u64::from(key).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        h ^ (h >> 29)
    }

    fn check_model(
        index: &LineIndex,
        model: &BTreeMap<u32, ()>,
        hash: fn(u32) -> u64,
    ) -> Result<(), TestCaseError> {
        prop_assert_eq!(index.len(), model.len());
        let mut all: Vec<u32> = index.iter().collect();
        all.sort_unstable();
        prop_assert_eq!(all, model.keys().copied().collect::<Vec<_>>());
        for &k in model.keys() {
            prop_assert_eq!(index.find(hash(k), |p| p == k), Some(k));
        }
        prop_assert!(index.len() <= index.capacity() || index.len() == 0);
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Inserts, removals, re-positions and shrinks against a map, with hashes that crowd
        /// into a few buckets and with well-spread ones.
        #[test]
        fn the_index_matches_a_model(
            weak in any::<bool>(),
            ops in prop::collection::vec((0u8..4, 0u32..250), 1..1500),
        ) {
            let hash: fn(u32) -> u64 = if weak { weak_hash } else { strong_hash };
            let geometry = Arc::new(Geometry::default());
            let mut index = LineIndex::new(geometry.clone());
            let mut model = BTreeMap::new();
            for (op, key) in ops {
                match op {
                    0 | 1 => {
                        if model.insert(key, ()).is_none() {
                            index.insert(hash(key), key, hash);
                        }
                    }
                    2 => {
                        let got = index.remove(hash(key), |p| p == key);
                        prop_assert_eq!(got.is_some(), model.remove(&key).is_some());
                        prop_assert_eq!(index.find(hash(key), |p| p == key), None);
                    }
                    _ => index.shrink(0, hash),
                }
                prop_assert_eq!(
                    geometry.buckets.load(Ordering::Relaxed),
                    index.buckets.len()
                );
                geometry.prefetch(hash(key));
                // The probable entry is always one the index holds.
                if let Some(p) = index.first_tagged(hash(key)) {
                    prop_assert!(model.contains_key(&p));
                }
            }
            check_model(&index, &model, hash)?;
            // Every entry's position can be rewritten in place.
            for &k in model.keys() {
                if let Some(p) = index.find_mut(hash(k), |p| p == k) {
                    *p = k;
                }
            }
            check_model(&index, &model, hash)?;
            for k in model.keys().copied().collect::<Vec<_>>() {
                prop_assert_eq!(index.remove(hash(k), |p| p == k), Some(k));
                model.remove(&k);
            }
            check_model(&index, &model, hash)?;
            // Every overflow count went back to zero with the entries that set it.
            prop_assert!(index.buckets.iter().all(|b| b.overflow() == 0 && b.len() == 0));
        }
    }

    /// Hashes with few distinct values in their low half (so that keys share home buckets
    /// and probes cross buckets and wrap) and two bits of tag (so that tags often match and
    /// keys are compared).
    fn crowded_hash(key: u32) -> u64 {
        let mut x = u64::from(key).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        x ^= x >> 29;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        (x & !(0xfc << 32) & !0xffff_ffff) | (u64::from(key % 5) << 30)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Used as the swarm table uses it: positions in a dense vector whose removed entry is
        /// filled by the last one (re-pointed in place), the index shrunk after each removal.
        /// Every key is found at its position, no removed key is, the index stays at most 7/8
        /// full, and emptied it gives its memory back.
        #[test]
        fn the_index_follows_a_dense_table(
            ops in prop::collection::vec((any::<bool>(), 0u32..300), 1..800),
        ) {
            let geometry = Arc::new(Geometry::default());
            let mut index = LineIndex::new(geometry.clone());
            // Position -> key, as a dense table keeps them.
            let mut keys: Vec<u32> = Vec::new();
            for (add, key) in ops {
                let found = index.find(crowded_hash(key), |p| keys[p as usize] == key);
                let pos = keys.iter().position(|&k| k == key);
                prop_assert_eq!(found, pos.map(|p| p as u32));
                match (add, pos) {
                    (true, None) => {
                        keys.push(key);
                        let keys = &keys;
                        index.insert(crowded_hash(key), (keys.len() - 1) as u32, |p| {
                            crowded_hash(keys[p as usize])
                        });
                    }
                    (false, Some(p)) => {
                        let got = index.remove(crowded_hash(key), |q| q == p as u32);
                        prop_assert_eq!(got, Some(p as u32));
                        let last = keys.len() - 1;
                        keys.swap_remove(p);
                        if p != last {
                            let entry = index.find_mut(crowded_hash(keys[p]), |q| q == last as u32);
                            prop_assert!(entry.is_some());
                            if let Some(e) = entry {
                                *e = p as u32;
                            }
                        }
                        let keys = &keys;
                        index.shrink(0, |q| crowded_hash(keys[q as usize]));
                    }
                    _ => {}
                }
                prop_assert_eq!(index.len(), keys.len());
                prop_assert!(index.len() * 8 <= index.buckets.len() * SLOTS * 7);
                prop_assert_eq!(geometry.buckets.load(Ordering::Relaxed), index.buckets.len());
                prop_assert_eq!(geometry.base.load(Ordering::Relaxed) as usize % 64, 0);
                let mut all: Vec<u32> = index.iter().collect();
                all.sort_unstable();
                prop_assert_eq!(all, (0..keys.len() as u32).collect::<Vec<_>>());
                for (p, &k) in keys.iter().enumerate() {
                    let found = index.find(crowded_hash(k), |q| keys[q as usize] == k);
                    prop_assert_eq!(found, Some(p as u32));
                }
            }
            // Emptied: memory given back down to a few buckets.
            while let Some(&key) = keys.last() {
                let p = (keys.len() - 1) as u32;
                prop_assert_eq!(index.remove(crowded_hash(key), |q| q == p), Some(p));
                keys.pop();
                let keys = &keys;
                index.shrink(0, |q| crowded_hash(keys[q as usize]));
            }
            prop_assert!(index.buckets.len() <= 4, "{} buckets", index.buckets.len());
            prop_assert!(index.buckets.iter().all(|b| b.overflow() == 0 && b.len() == 0));
        }
    }

    /// The word comparison finds exactly the entries with the tag, never the counts after
    /// them or the entries beyond `len`.
    #[test]
    fn tag_matches_are_exact() {
        let mut b = EMPTY;
        b.meta = [7, 0, 255, 7, 128, 6, 8, 7, 1, 0x87, 7, 7, 9, 7, 0, 0];
        for t in 0..=255u8 {
            for len in 0..=SLOTS {
                b.meta[LEN] = len as u8;
                let mut want = 0u128;
                for k in (0..len).filter(|&k| b.meta[k] == t) {
                    want |= 0x80 << (8 * k);
                }
                assert_eq!(b.matches(t), want, "tag {t}, len {len}");
            }
        }
    }

    #[test]
    fn it_grows_by_about_half_and_shrinks_when_mostly_empty() {
        let mut index = LineIndex::default();
        for k in 0..100_000 {
            index.insert(strong_hash(k), k, strong_hash);
        }
        let bytes_per_entry = index.heap_bytes() as f64 / index.len() as f64;
        assert!(
            (5.5..=9.5).contains(&bytes_per_entry),
            "{bytes_per_entry} bytes per entry"
        );
        for k in 0..99_000 {
            assert_eq!(index.remove(strong_hash(k), |p| p == k), Some(k));
        }
        index.shrink(0, strong_hash);
        assert!(index.heap_bytes() < 64 * 1024, "{}", index.heap_bytes());
        for k in 99_000..100_000 {
            assert_eq!(index.find(strong_hash(k), |p| p == k), Some(k));
        }
    }
}
