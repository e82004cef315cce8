//! A hash index of positions whose lookup reads one cache line, found from the hash alone, so
//! that a lookup can be prefetched before the key is compared.
//!
//! The BitTorrent swarm table keeps its swarms in a dense vector and finds them through this
//! index. Entries live in 64-byte lines of twelve: twelve positions (`pos + 1`, 0 marking an
//! empty entry) and twelve one-byte tags (bits 32..40 of the key's hash). A key's home is line
//! `hash mod lines`, and a lookup probes entries from its first on (linear probing, on into
//! the next lines, wrapping), comparing the caller's key only where the tag matches, so that
//! it nearly always ends within the home line: at most seven eighths of the entries are used.
//! A removal shifts the entries after it back (no tombstones), and the index doubles when
//! full and halves when less than a quarter is used, so that its memory follows the number of
//! keys: 5.3 bytes an entry, 6 to 12 bytes a key (a hashbrown table: 5 bytes a bucket).
//!
//! A hashbrown table, which the index replaces, keeps its control bytes and its entries in
//! two places, each a cache miss in a large table, and the entry's place is known only after
//! the control bytes are read.

/// Entries per line.
const LINE: usize = 12;

/// One cache line of entries: positions plus one (0: empty) and their tags.
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Line {
    pos: [u32; LINE],
    tags: [u8; LINE],
}

/// Positions (`u32`, below `u32::MAX`) keyed by a 64-bit hash; equal keys are told apart by
/// the caller's comparison of the stored position's key.
#[derive(Default)]
pub(super) struct PosIndex {
    lines: Vec<Line>,
    len: usize,
}

/// The tag of a hash: bits 32..40 (the engine picks shards by the top bits and lines by the
/// low bits, so these vary within a line).
#[inline(always)]
fn tag(hash: u64) -> u8 {
    (hash >> 32) as u8
}

impl PosIndex {
    /// Keys indexed.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Entries allocated (used or not).
    pub fn capacity(&self) -> usize {
        self.lines.len() * LINE
    }

    /// Bytes allocated.
    pub fn heap_bytes(&self) -> usize {
        self.lines.len() * std::mem::size_of::<Line>()
    }

    /// `hash`'s home line (there is at least one line).
    #[inline(always)]
    fn home(&self, hash: u64) -> usize {
        hash as usize & (self.lines.len() - 1)
    }

    /// Entry `i` of the whole index: (position plus one, tag).
    #[inline(always)]
    fn get(&self, i: usize) -> (u32, u8) {
        let line = &self.lines[i / LINE];
        (line.pos[i % LINE], line.tags[i % LINE])
    }

    #[inline(always)]
    fn set(&mut self, i: usize, (pos1, tag): (u32, u8)) {
        let line = &mut self.lines[i / LINE];
        line.pos[i % LINE] = pos1;
        line.tags[i % LINE] = tag;
    }

    /// The address of `hash`'s home line, for a prefetch (`None` while the index is empty).
    #[inline(always)]
    pub fn line_of(&self, hash: u64) -> Option<*const u8> {
        if self.lines.is_empty() {
            return None;
        }
        Some((&self.lines[self.home(hash)] as *const Line).cast())
    }

    /// The first position stored under `hash` (its tag) for which `eq` holds.
    #[inline]
    pub fn find(&self, hash: u64, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        if self.lines.is_empty() {
            return None;
        }
        let mask = self.lines.len() - 1;
        let want = tag(hash);
        let mut l = self.home(hash);
        loop {
            let line = &self.lines[l];
            for k in 0..LINE {
                let p = line.pos[k];
                if p == 0 {
                    return None;
                }
                if line.tags[k] == want && eq(p - 1) {
                    return Some(p - 1);
                }
            }
            l = (l + 1) & mask;
        }
    }

    /// Where position `pos` under `hash` is stored (entry index).
    fn slot_of(&self, hash: u64, pos: u32) -> Option<usize> {
        if self.lines.is_empty() {
            return None;
        }
        let n = self.capacity();
        let want = (pos + 1, tag(hash));
        let mut i = self.home(hash) * LINE;
        loop {
            match self.get(i) {
                (0, _) => return None,
                e if e == want => return Some(i),
                _ => i = (i + 1) % n,
            }
        }
    }

    /// Stores `pos` (below `u32::MAX`) under `hash`; `rehash` gives the hash of a stored
    /// position, for growing.
    pub fn insert(&mut self, hash: u64, pos: u32, rehash: impl Fn(u32) -> u64) {
        debug_assert!(pos < u32::MAX);
        if (self.len + 1) * 8 > self.capacity() * 7 {
            let lines = (self.lines.len() * 2).max(1);
            self.resize(lines, &rehash);
        }
        self.place(hash, pos + 1);
        self.len += 1;
    }

    /// Puts `(pos1, tag)` into the first empty entry from `hash`'s home on (there is one:
    /// the index is never full).
    fn place(&mut self, hash: u64, pos1: u32) {
        let n = self.capacity();
        let mut i = self.home(hash) * LINE;
        while self.get(i).0 != 0 {
            i = (i + 1) % n;
        }
        self.set(i, (pos1, tag(hash)));
    }

    /// Replaces the stored position `old` under `hash` by `new`; `false` when `old` is not
    /// stored under `hash`.
    pub fn replace(&mut self, hash: u64, old: u32, new: u32) -> bool {
        match self.slot_of(hash, old) {
            Some(i) => {
                self.set(i, (new + 1, tag(hash)));
                true
            }
            None => false,
        }
    }

    /// Removes position `pos` stored under `hash`; `rehash` gives the hash of a stored
    /// position (for the entries shifted back, and for shrinking). `false` when it was not
    /// stored.
    pub fn remove(&mut self, hash: u64, pos: u32, rehash: impl Fn(u32) -> u64) -> bool {
        let Some(mut hole) = self.slot_of(hash, pos) else {
            return false;
        };
        let n = self.capacity();
        let mut i = hole;
        loop {
            i = (i + 1) % n;
            let e = self.get(i);
            if e.0 == 0 {
                break;
            }
            // An entry may move back into the hole unless its home (first entry of its home
            // line) lies cyclically within (hole, i]: then the hole is before its home, where
            // a lookup never looks.
            let home = self.home(rehash(e.0 - 1)) * LINE;
            let within = if hole <= i {
                hole < home && home <= i
            } else {
                hole < home || home <= i
            };
            if !within {
                self.set(hole, e);
                hole = i;
            }
        }
        self.set(hole, (0, 0));
        self.len -= 1;
        if self.lines.len() > 8 && self.len * 4 < self.capacity() {
            let lines = self.lines.len() / 2;
            self.resize(lines, &rehash);
        }
        true
    }

    /// Rebuilds the index with `lines` lines (a power of two).
    fn resize(&mut self, lines: usize, rehash: &impl Fn(u32) -> u64) {
        let old = std::mem::replace(&mut self.lines, vec![Line::default(); lines]);
        for line in &old {
            for &p in line.pos.iter().filter(|&&p| p != 0) {
                self.place(rehash(p - 1), p);
            }
        }
    }

    /// Every stored position.
    #[cfg(test)]
    fn positions(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .lines
            .iter()
            .flat_map(|l| l.pos)
            .filter(|&p| p != 0)
            .map(|p| p - 1)
            .collect();
        v.sort_unstable();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Hashes with few distinct low bits, so that keys share home lines and probe sequences
    /// cross lines and wrap.
    fn h(key: u32) -> u64 {
        let mut x = u64::from(key).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        x ^= x >> 29;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        // Two bits of tag (bits 32..34), so that tags often match and keys are compared.
        (x & !(0xfc << 32) & !0xff) | (u64::from(key) % 3)
    }

    proptest! {
        /// Inserts and removals against a map model: every key is found at its position, no
        /// removed key is, and the index grows and shrinks with the keys.
        #[test]
        fn index_matches_a_model(ops in prop::collection::vec((any::<bool>(), 0u32..300), 1..800)) {
            let mut index = PosIndex::default();
            // key -> position, and position -> key, as a dense table keeps them.
            let mut keys: Vec<u32> = Vec::new();
            for (add, key) in ops {
                let found = index.find(h(key), |p| keys[p as usize] == key);
                let pos = keys.iter().position(|&k| k == key);
                prop_assert_eq!(found, pos.map(|p| p as u32));
                match (add, pos) {
                    (true, None) => {
                        keys.push(key);
                        let rehash = |p: u32| h(keys[p as usize]);
                        index.insert(h(key), (keys.len() - 1) as u32, rehash);
                    }
                    (false, Some(p)) => {
                        // Remove like the swarm table: the last key takes the hole.
                        let rehash = |q: u32| h(keys[q as usize]);
                        prop_assert!(index.remove(h(key), p as u32, rehash));
                        let last = keys.len() - 1;
                        keys.swap_remove(p);
                        if p != last {
                            prop_assert!(index.replace(h(keys[p]), last as u32, p as u32));
                        }
                    }
                    _ => {}
                }
                prop_assert_eq!(index.len(), keys.len());
                prop_assert!(index.len() * 8 <= index.capacity() * 7);
                prop_assert_eq!(index.positions(), (0..keys.len() as u32).collect::<Vec<_>>());
                for (p, &k) in keys.iter().enumerate() {
                    prop_assert_eq!(index.find(h(k), |q| keys[q as usize] == k), Some(p as u32));
                }
            }
            // Emptied: memory given back down to eight lines.
            while let Some(&key) = keys.last() {
                let p = (keys.len() - 1) as u32;
                let rehash = |q: u32| h(keys[q as usize]);
                prop_assert!(index.remove(h(key), p, rehash));
                keys.pop();
            }
            prop_assert!(index.capacity() <= 8 * LINE);
        }
    }

    #[test]
    fn a_line_is_a_cache_line_and_found_from_the_hash() {
        assert_eq!(std::mem::size_of::<Line>(), 64);
        assert_eq!(std::mem::align_of::<Line>(), 64);
        let mut index = PosIndex::default();
        assert!(index.line_of(7).is_none());
        assert_eq!(index.find(7, |_| true), None);
        index.insert(7, 0, |_| 7);
        let line = index.line_of(7).unwrap();
        assert_eq!(line as usize % 64, 0);
        assert_eq!(index.find(7, |p| p == 0), Some(0));
        assert_eq!(index.find(7, |_| false), None);
        assert!(!index.remove(7 | 1 << 33, 0, |_| 7), "another tag");
        assert!(index.remove(7, 0, |_| 7));
        assert_eq!(index.len(), 0);
    }
}
