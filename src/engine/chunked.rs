//! A vector stored in fixed-size chunks, for the peer-status registry's records and the
//! members of a swarm.
//!
//! Growing never moves what is stored beyond the first chunk (which, for small vectors, may
//! grow like a vector by quarter-steps up to `CHUNK` elements, so that a small vector holds
//! little unused room: at most a quarter, on average an eighth); a new chunk of `CHUNK`
//! elements is allocated when the last one is full, and the last chunk is freed when it
//! empties. A plain `Vec` doubles and copies
//! instead, and the allocator keeps the old copies resident for a while (with a server
//! allocator such as mimalloc, whose freed large blocks stay committed): with a shard's records
//! growing from nothing to a few megabytes, that was most of the difference between the
//! tables' own size and the server's resident memory. Slack is at most one chunk.

use smallvec::SmallVec;

/// A vector of `T` in chunks of `CHUNK` elements (a power of two). Every chunk but the last
/// is full. With `SMALL_FIRST`, the first chunk grows by quarter-steps (for the many small
/// vectors of swarm members); without, every chunk is allocated whole (for a shard's records,
/// which soon fill one). 32 bytes: the list of chunks holds its first entry inline, so that a
/// vector of one chunk (most swarms' members) is one allocation and one pointer to follow.
#[derive(Debug)]
pub(super) struct ChunkedVec<T, const CHUNK: usize, const SMALL_FIRST: bool = false> {
    chunks: SmallVec<[Vec<T>; 1]>,
}

impl<T, const CHUNK: usize, const SMALL_FIRST: bool> Default for ChunkedVec<T, CHUNK, SMALL_FIRST> {
    fn default() -> Self {
        ChunkedVec {
            chunks: SmallVec::new(),
        }
    }
}

impl<T, const CHUNK: usize, const SMALL_FIRST: bool> ChunkedVec<T, CHUNK, SMALL_FIRST> {
    const _POWER_OF_TWO: () = assert!(CHUNK.is_power_of_two());

    pub fn len(&self) -> usize {
        self.chunks
            .last()
            .map_or(0, |last| (self.chunks.len() - 1) * CHUNK + last.len())
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Elements the allocated chunks hold room for.
    pub fn capacity(&self) -> usize {
        self.chunks.iter().map(Vec::capacity).sum()
    }

    /// Bytes allocated (chunks and the chunk list).
    pub fn heap_bytes(&self) -> usize {
        self.capacity() * std::mem::size_of::<T>()
            + if self.chunks.spilled() {
                self.chunks.capacity() * std::mem::size_of::<Vec<T>>()
            } else {
                0
            }
    }

    /// Where the first chunk's elements start (null while the vector is empty): an address
    /// for a cache prefetch only.
    pub fn first_chunk_ptr(&self) -> *const T {
        self.chunks.first().map_or(std::ptr::null(), |c| c.as_ptr())
    }

    pub fn get(&self, i: usize) -> Option<&T> {
        self.chunks.get(i / CHUNK)?.get(i % CHUNK)
    }

    pub fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        self.chunks.get_mut(i / CHUNK)?.get_mut(i % CHUNK)
    }

    pub fn push(&mut self, value: T) {
        let () = Self::_POWER_OF_TWO;
        let first = self.chunks.is_empty();
        match self.chunks.last_mut() {
            Some(last) if last.len() < CHUNK => {
                if last.len() == last.capacity() {
                    // Only the first chunk grows: by quarter-steps, up to `CHUNK`. Copying
                    // costs a few more reallocations while a swarm grows; half-steps left a
                    // quarter of the members' memory unused on average.
                    let cap = last.capacity();
                    last.reserve_exact((cap / 4).max(1).min(CHUNK - cap));
                }
                last.push(value);
            }
            _ => {
                let mut chunk = Vec::with_capacity(if first && SMALL_FIRST { 1 } else { CHUNK });
                chunk.push(value);
                // The chunk list holds one entry inline, then grows one entry at a time (not
                // by doubling).
                self.chunks.reserve_exact(1);
                self.chunks.push(chunk);
            }
        }
    }

    pub fn pop(&mut self) -> Option<T> {
        let only = self.chunks.len() == 1;
        let last = self.chunks.last_mut()?;
        let value = last.pop()?;
        if last.is_empty() {
            self.chunks.pop();
            if self.chunks.capacity() > 8 && self.chunks.len() * 4 < self.chunks.capacity() {
                self.chunks.shrink_to_fit();
            }
        } else if SMALL_FIRST && only && last.capacity() > 8 && last.len() * 4 < last.capacity() {
            // The first chunk gives back memory it no longer needs.
            last.shrink_to(last.len() * 2);
        }
        Some(value)
    }

    /// Removes element `i`, moving the last one into its place.
    pub fn swap_remove(&mut self, i: usize) -> Option<T> {
        let len = self.len();
        if i >= len {
            return None;
        }
        let last = self.pop()?;
        if i == len - 1 {
            return Some(last);
        }
        self.get_mut(i).map(|slot| std::mem::replace(slot, last))
    }

    /// Exchanges elements `a` and `b` (nothing when either is out of range).
    pub fn swap(&mut self, a: usize, b: usize) {
        if a == b || a >= self.len() || b >= self.len() {
            return;
        }
        let (lo, hi) = (a.min(b), a.max(b));
        let (ca, cb) = (lo / CHUNK, hi / CHUNK);
        if ca == cb {
            if let Some(c) = self.chunks.get_mut(ca) {
                c.swap(lo % CHUNK, hi % CHUNK);
            }
        } else {
            let (head, tail) = self.chunks.split_at_mut(cb);
            if let (Some(x), Some(y)) = (
                head.get_mut(ca).and_then(|c| c.get_mut(lo % CHUNK)),
                tail.first_mut().and_then(|c| c.get_mut(hi % CHUNK)),
            ) {
                std::mem::swap(x, y);
            }
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flatten()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.chunks.iter_mut().flatten()
    }

    /// Elements `start..start + len` (clamped to the vector).
    pub fn span(&self, start: usize, len: usize) -> Span<'_, T, CHUNK, SMALL_FIRST> {
        let start = start.min(self.len());
        Span {
            chunks: &self.chunks,
            start,
            len: len.min(self.len() - start),
        }
    }
}

/// A run of consecutive elements of a [`ChunkedVec`] (what a slice is for a `Vec`). It holds
/// the vector's chunks as a plain slice, so that reading an element does not ask the chunk
/// list again whether it is inline.
#[derive(Debug)]
pub(super) struct Span<'a, T, const CHUNK: usize, const SMALL_FIRST: bool> {
    chunks: &'a [Vec<T>],
    start: usize,
    len: usize,
}

impl<T, const CHUNK: usize, const S: bool> Clone for Span<'_, T, CHUNK, S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T, const CHUNK: usize, const S: bool> Copy for Span<'_, T, CHUNK, S> {}

impl<'a, T, const CHUNK: usize, const S: bool> Span<'a, T, CHUNK, S> {
    pub fn len(&self) -> usize {
        self.len
    }

    /// Element `i` of the run.
    pub fn get(&self, i: usize) -> Option<&'a T> {
        if i < self.len {
            let at = self.start + i;
            self.chunks.get(at / CHUNK)?.get(at % CHUNK)
        } else {
            None
        }
    }

    /// The run as one slice, when it lies within one chunk (always in a vector of one chunk,
    /// which most swarms' member vectors are): indexing it costs a bounds check only, where
    /// [`Span::get`] also finds the chunk.
    #[inline]
    pub fn as_slice(&self) -> Option<&'a [T]> {
        if self.len == 0 {
            return Some(&[]);
        }
        let last = self.start + self.len - 1;
        let chunk = self.start / CHUNK;
        if last / CHUNK != chunk {
            return None;
        }
        let at = self.start % CHUNK;
        self.chunks.get(chunk)?.get(at..at + self.len)
    }

    /// The run's elements in order, a chunk's part at a time (nothing walked before the run).
    pub fn iter(&self) -> impl Iterator<Item = &'a T> + 'a {
        let (start, end) = (self.start, self.start + self.len);
        self.chunks
            .iter()
            .enumerate()
            .skip(start / CHUNK)
            .take_while(move |(c, _)| c * CHUNK < end)
            .flat_map(move |(c, chunk)| {
                let base = c * CHUNK;
                let lo = start.saturating_sub(base).min(chunk.len());
                let hi = (end - base).min(chunk.len());
                chunk.get(lo..hi).unwrap_or(&[]).iter()
            })
    }
}

impl<'a, T, const CHUNK: usize, const S: bool> IntoIterator for &'a ChunkedVec<T, CHUNK, S> {
    type Item = &'a T;
    type IntoIter = std::iter::Flatten<std::slice::Iter<'a, Vec<T>>>;

    fn into_iter(self) -> Self::IntoIter {
        self.chunks.iter().flatten()
    }
}

/// Byte strings of at most 255 bytes, back to back in chunks of `CHUNK` bytes (a string never
/// crosses a chunk); a string is named by its place ([`ByteArena::push`]) and its length.
#[derive(Debug, Default)]
pub(super) struct ByteArena<const CHUNK: usize> {
    chunks: Vec<Vec<u8>>,
}

impl<const CHUNK: usize> ByteArena<CHUNK> {
    /// Appends `bytes` (at most 255, and `CHUNK` at least 256); returns its place.
    pub fn push(&mut self, bytes: &[u8]) -> u32 {
        let fits = self
            .chunks
            .last()
            .is_some_and(|c| c.len() + bytes.len() <= CHUNK);
        if !fits {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        let chunk = self.chunks.len() - 1;
        match self.chunks.last_mut() {
            Some(c) => {
                let at = c.len();
                c.extend_from_slice(bytes);
                (chunk * CHUNK + at) as u32
            }
            None => 0,
        }
    }

    /// The `len` bytes at `place` (empty when out of range, which never happens).
    pub fn get(&self, place: u32, len: usize) -> &[u8] {
        let (chunk, at) = (place as usize / CHUNK, place as usize % CHUNK);
        self.chunks
            .get(chunk)
            .and_then(|c| c.get(at..at + len))
            .unwrap_or(&[])
    }

    /// Bytes stored (live and garbage).
    pub fn len(&self) -> usize {
        self.chunks.iter().map(Vec::len).sum()
    }

    /// Bytes allocated.
    pub fn heap_bytes(&self) -> usize {
        self.chunks.len() * CHUNK + self.chunks.capacity() * std::mem::size_of::<Vec<u8>>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_vec_matches_a_vec() {
        let mut v: ChunkedVec<u32, 4, true> = ChunkedVec::default();
        let mut model = Vec::new();
        for i in 0..37u32 {
            v.push(i);
            model.push(i);
            if i % 5 == 0 {
                let at = (i as usize * 7) % model.len();
                assert_eq!(v.swap_remove(at), Some(model.swap_remove(at)));
            }
            if i % 11 == 0 {
                assert_eq!(v.pop(), model.pop());
            }
            assert_eq!(v.len(), model.len());
            assert_eq!(v.iter().copied().collect::<Vec<_>>(), model);
            assert!(v.capacity() >= v.len() && v.capacity() < v.len() + 4 + 1);
            let (a, b) = (
                i as usize % model.len().max(1),
                (i as usize * 3) % model.len().max(1),
            );
            v.swap(a, b);
            if a < model.len() && b < model.len() {
                model.swap(a, b);
            }
            assert_eq!(v.iter().copied().collect::<Vec<_>>(), model);
            let span = v.span(1, 5);
            let want: Vec<u32> = model.iter().copied().skip(1).take(5).collect();
            assert_eq!(span.iter().copied().collect::<Vec<_>>(), want);
            assert_eq!(span.len(), want.len());
            assert_eq!(span.get(0).copied(), want.first().copied());
            assert_eq!(span.get(span.len()), None);
        }
        assert_eq!(v.swap_remove(v.len()), None);
        while v.pop().is_some() {}
        assert_eq!((v.len(), v.capacity()), (0, 0));
    }

    proptest::proptest! {
        /// Every run of a vector of several chunks reads as the same run of a plain vector:
        /// element by element, by its iterator, and as one slice exactly when it lies within
        /// one chunk.
        #[test]
        fn spans_read_as_the_runs_of_a_vec(
            len in 0usize..40,
            start in 0usize..45,
            run in 0usize..45,
        ) {
            let mut v: ChunkedVec<u32, 8, true> = ChunkedVec::default();
            let model: Vec<u32> = (0..len as u32).map(|i| i * 3 + 1).collect();
            for &x in &model {
                v.push(x);
            }
            let span = v.span(start, run);
            let lo = start.min(len);
            let want = &model[lo..(lo + run).min(len)];
            proptest::prop_assert_eq!(span.len(), want.len());
            proptest::prop_assert_eq!(span.iter().copied().collect::<Vec<_>>(), want.to_vec());
            for (i, x) in want.iter().enumerate() {
                proptest::prop_assert_eq!(span.get(i), Some(x));
            }
            proptest::prop_assert_eq!(span.get(want.len()), None);
            let one_chunk = want.is_empty() || lo / 8 == (lo + want.len() - 1) / 8;
            match span.as_slice() {
                Some(slice) => {
                    proptest::prop_assert!(one_chunk);
                    proptest::prop_assert_eq!(slice, want);
                }
                None => proptest::prop_assert!(!one_chunk),
            }
        }
    }

    #[test]
    fn arena_keeps_strings_within_a_chunk() {
        let mut a: ByteArena<256> = ByteArena::default();
        let places: Vec<(u32, Vec<u8>)> = (0..40u8)
            .map(|i| {
                let s = vec![i; usize::from(i % 64) + 1];
                (a.push(&s), s)
            })
            .collect();
        for (place, s) in &places {
            assert_eq!(a.get(*place, s.len()), &s[..]);
        }
        assert!(a.heap_bytes() >= a.len());
    }
}
