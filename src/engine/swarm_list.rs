//! The list of swarms one peer is in, packed into one byte vector.
//!
//! Each entry is one length byte, one mode byte and the swarm id's bytes, so a 20-byte id costs
//! 22 bytes instead of the 66 of a `(SwarmId, PeerMode)` pair, and a peer in no swarm allocates
//! nothing. Lists are short (at most `max_swarms_per_peer`), so lookups scan.

use super::types::{PeerMode, SwarmId};

#[derive(Clone, Debug, Default)]
pub(super) struct SwarmList {
    bytes: Vec<u8>,
    count: u32,
}

const HEADER: usize = 2;

fn mode_byte(mode: PeerMode) -> u8 {
    match mode {
        PeerMode::Seeder => 0,
        PeerMode::Leech => 1,
    }
}

fn byte_mode(b: u8) -> PeerMode {
    if b == 0 {
        PeerMode::Seeder
    } else {
        PeerMode::Leech
    }
}

/// Iterator over `(offset, id bytes, mode)` of each entry.
struct Entries<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Iterator for Entries<'a> {
    type Item = (usize, &'a [u8], PeerMode);

    fn next(&mut self) -> Option<Self::Item> {
        let at = self.offset;
        let len = *self.bytes.get(at)? as usize;
        let mode = byte_mode(*self.bytes.get(at + 1)?);
        let id = self.bytes.get(at + HEADER..at + HEADER + len)?;
        self.offset = at + HEADER + len;
        Some((at, id, mode))
    }
}

impl SwarmList {
    fn entries(&self) -> Entries<'_> {
        Entries {
            bytes: &self.bytes,
            offset: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Heap bytes held (for memory estimates).
    pub fn heap_bytes(&self) -> usize {
        self.bytes.capacity()
    }

    fn find(&self, swarm_id: &SwarmId) -> Option<(usize, PeerMode)> {
        let wanted = swarm_id.as_bytes();
        self.entries()
            .find(|(_, id, _)| *id == wanted)
            .map(|(at, _, mode)| (at, mode))
    }

    /// The peer's mode in `swarm_id`, if it is in it.
    pub fn mode_in(&self, swarm_id: &SwarmId) -> Option<PeerMode> {
        self.find(swarm_id).map(|(_, mode)| mode)
    }

    /// Adds a swarm the list does not hold yet.
    pub fn push(&mut self, swarm_id: &SwarmId, mode: PeerMode) {
        let id = swarm_id.as_bytes();
        // Ids are at most 64 bytes (`MAX_ID_BYTES`), so the length fits its byte.
        self.bytes.reserve_exact(HEADER + id.len());
        self.bytes.push(id.len() as u8);
        self.bytes.push(mode_byte(mode));
        self.bytes.extend_from_slice(id);
        self.count += 1;
    }

    /// Changes the mode of a swarm in the list; `false` if it is not there.
    pub fn set_mode(&mut self, swarm_id: &SwarmId, mode: PeerMode) -> bool {
        match self.find(swarm_id) {
            Some((at, _)) => match self.bytes.get_mut(at + 1) {
                Some(b) => {
                    *b = mode_byte(mode);
                    true
                }
                None => false,
            },
            None => false,
        }
    }

    /// Removes a swarm and returns the mode the peer had there.
    pub fn remove(&mut self, swarm_id: &SwarmId) -> Option<PeerMode> {
        let (at, mode) = self.find(swarm_id)?;
        let end = at + HEADER + swarm_id.as_bytes().len();
        if end > self.bytes.len() {
            return None;
        }
        self.bytes.drain(at..end);
        self.count -= 1;
        if self.bytes.is_empty() {
            self.bytes = Vec::new();
        } else if self.bytes.capacity() > 2 * self.bytes.len() + 64 {
            self.bytes.shrink_to_fit();
        }
        Some(mode)
    }

    /// Every `(swarm, mode)` in the list, without allocating.
    pub fn iter(&self) -> impl Iterator<Item = (SwarmId, PeerMode)> + '_ {
        self.entries()
            .map(|(_, id, mode)| (SwarmId::from_stored(id), mode))
    }

    /// Every `(swarm, mode)` in the list.
    pub fn to_vec(&self) -> Vec<(SwarmId, PeerMode)> {
        self.entries()
            .filter_map(|(_, id, mode)| SwarmId::new(id).ok().map(|s| (s, mode)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sid(s: &str) -> SwarmId {
        SwarmId::new(s.as_bytes()).expect("test id")
    }

    #[test]
    fn push_find_set_remove() {
        let mut list = SwarmList::default();
        assert!(list.is_empty());
        assert_eq!(list.heap_bytes(), 0, "an empty list allocates nothing");
        let long = "x".repeat(64);
        list.push(&sid("a"), PeerMode::Seeder);
        list.push(&sid(&long), PeerMode::Leech);
        list.push(&sid("abc"), PeerMode::Leech);
        assert_eq!(list.len(), 3);
        assert_eq!(list.mode_in(&sid("a")), Some(PeerMode::Seeder));
        assert_eq!(list.mode_in(&sid("ab")), None);
        assert_eq!(list.mode_in(&sid(&long)), Some(PeerMode::Leech));
        assert!(list.set_mode(&sid("abc"), PeerMode::Seeder));
        assert!(!list.set_mode(&sid("zz"), PeerMode::Seeder));
        assert_eq!(list.remove(&sid(&long)), Some(PeerMode::Leech));
        assert_eq!(list.remove(&sid(&long)), None);
        assert_eq!(
            list.to_vec(),
            vec![(sid("a"), PeerMode::Seeder), (sid("abc"), PeerMode::Seeder)]
        );
        assert_eq!(list.remove(&sid("a")), Some(PeerMode::Seeder));
        assert_eq!(list.remove(&sid("abc")), Some(PeerMode::Seeder));
        assert!(list.is_empty());
        assert_eq!(list.heap_bytes(), 0);
    }
}
