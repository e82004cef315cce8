//! A vector stored in fixed-size chunks, for the peer-status registry's records.
//!
//! Growing never moves what is stored: a new chunk is allocated when the last one is full,
//! and the last chunk is freed when it empties. A plain `Vec` doubles and copies instead, and
//! the allocator keeps the old copies resident for a while (with a server allocator such as
//! mimalloc, whose freed large blocks stay committed): with a shard's records growing from
//! nothing to a few megabytes, that was most of the difference between the tables' own size
//! and the server's resident memory. Slack is at most one chunk.

/// A vector of `T` in chunks of `CHUNK` elements (a power of two).
#[derive(Debug)]
pub(super) struct ChunkedVec<T, const CHUNK: usize> {
    chunks: Vec<Vec<T>>,
    len: usize,
}

impl<T, const CHUNK: usize> Default for ChunkedVec<T, CHUNK> {
    fn default() -> Self {
        ChunkedVec {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<T, const CHUNK: usize> ChunkedVec<T, CHUNK> {
    const _POWER_OF_TWO: () = assert!(CHUNK.is_power_of_two());

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Elements the allocated chunks hold room for.
    pub fn capacity(&self) -> usize {
        self.chunks.len() * CHUNK
    }

    /// Bytes allocated (chunks and the chunk list).
    pub fn heap_bytes(&self) -> usize {
        self.capacity() * std::mem::size_of::<T>()
            + self.chunks.capacity() * std::mem::size_of::<Vec<T>>()
    }

    pub fn get(&self, i: usize) -> Option<&T> {
        self.chunks.get(i / CHUNK)?.get(i % CHUNK)
    }

    pub fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        self.chunks.get_mut(i / CHUNK)?.get_mut(i % CHUNK)
    }

    pub fn push(&mut self, value: T) {
        let () = Self::_POWER_OF_TWO;
        if self.len % CHUNK == 0 {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        if let Some(last) = self.chunks.last_mut() {
            last.push(value);
            self.len += 1;
        }
    }

    pub fn pop(&mut self) -> Option<T> {
        let last = self.chunks.last_mut()?;
        let value = last.pop()?;
        if last.is_empty() {
            self.chunks.pop();
            if self.chunks.capacity() > 8 && self.chunks.len() * 4 < self.chunks.capacity() {
                self.chunks.shrink_to(self.chunks.len() * 2);
            }
        }
        self.len -= 1;
        Some(value)
    }

    /// Removes element `i`, moving the last one into its place.
    pub fn swap_remove(&mut self, i: usize) -> Option<T> {
        if i >= self.len {
            return None;
        }
        let last = self.pop()?;
        if i == self.len {
            return Some(last);
        }
        self.get_mut(i).map(|slot| std::mem::replace(slot, last))
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flatten()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.chunks.iter_mut().flatten()
    }
}

impl<'a, T, const CHUNK: usize> IntoIterator for &'a ChunkedVec<T, CHUNK> {
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
        let mut v: ChunkedVec<u32, 4> = ChunkedVec::default();
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
        }
        assert_eq!(v.swap_remove(v.len()), None);
        while v.pop().is_some() {}
        assert_eq!((v.len(), v.capacity()), (0, 0));
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
