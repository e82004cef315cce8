//! The list of swarms one peer is in, by swarm handle.
//!
//! Each entry is one `u64`: the swarm's shard (16 bits), the peer's mode there (1 bit) and the
//! swarm's slot in its shard's slab (32 bits, see `tables::SwarmTable`). A slot stays the
//! swarm's while the swarm has members, so a member's entry never goes stale. The first entry
//! lives in the list itself (most peers are in one swarm: 16 bytes and no allocation); further
//! entries spill to the heap. Lists are short (at most `max_swarms_per_peer`), so lookups
//! scan, and entries keep their insertion order.

use super::types::PeerMode;

/// No entry (an empty list's `first`).
const NONE: u64 = u64::MAX;
const MODE_BIT: u64 = 1 << 32;

/// What the owner of a list keeps in the list's box beside the spilled entries (the peer
/// record's rarely used fields), so that the owner holds one pointer for both.
pub(super) trait Payload: Default {
    /// Whether the payload holds nothing (the box can go when no entry needs it either).
    fn is_unused(&self) -> bool;
}

impl Payload for () {
    fn is_unused(&self) -> bool {
        true
    }
}

/// The boxed part of a list: entries after the first, and the owner's payload.
#[derive(Debug, Default)]
struct Spill<X> {
    more: Vec<u64>,
    extra: X,
}

/// One peer's swarms: `(swarm shard, slot, mode)` entries, and a payload `X` of the owner's
/// that shares the box of the spilled entries. 16 bytes.
#[derive(Debug)]
pub(super) struct SwarmList<X: Payload = ()> {
    first: u64,
    /// Entries after the first and the payload, boxed: most peers never spill.
    rest: Option<Box<Spill<X>>>,
}

impl<X: Payload> Default for SwarmList<X> {
    fn default() -> Self {
        SwarmList {
            first: NONE,
            rest: None,
        }
    }
}

fn pack(shard: u16, slot: u32, mode: PeerMode) -> u64 {
    let m = match mode {
        PeerMode::Seeder => 0,
        PeerMode::Leech => MODE_BIT,
    };
    (u64::from(shard) << 33) | m | u64::from(slot)
}

fn unpack(e: u64) -> (u16, u32, PeerMode) {
    let mode = if e & MODE_BIT == 0 {
        PeerMode::Seeder
    } else {
        PeerMode::Leech
    };
    ((e >> 33) as u16, e as u32, mode)
}

/// The entry without its mode bit (what identifies the swarm).
fn place(e: u64) -> u64 {
    e & !MODE_BIT
}

impl<X: Payload> SwarmList<X> {
    pub fn len(&self) -> usize {
        if self.first == NONE {
            0
        } else {
            1 + self.rest.as_ref().map_or(0, |r| r.more.len())
        }
    }

    /// The payload, if the box exists.
    pub fn extra(&self) -> Option<&X> {
        self.rest.as_ref().map(|r| &r.extra)
    }

    /// The payload, allocating the box if needed.
    pub fn extra_mut(&mut self) -> &mut X {
        &mut self.rest.get_or_insert_with(Default::default).extra
    }

    /// The payload, if the box exists, for changing it; call [`SwarmList::trim`] after.
    pub fn extra_if_any(&mut self) -> Option<&mut X> {
        self.rest.as_mut().map(|r| &mut r.extra)
    }

    /// Gives back the box when neither the entries nor the payload need it.
    pub fn trim(&mut self) {
        if self
            .rest
            .as_ref()
            .is_some_and(|r| r.more.is_empty() && r.extra.is_unused())
        {
            self.rest = None;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.first == NONE
    }

    /// Heap bytes held (for memory estimates).
    pub fn heap_bytes(&self) -> usize {
        self.rest.as_ref().map_or(0, |r| {
            std::mem::size_of::<Spill<X>>() + r.more.capacity() * std::mem::size_of::<u64>()
        })
    }

    fn raw(&self) -> impl Iterator<Item = u64> + '_ {
        std::iter::once(self.first)
            .filter(|&e| e != NONE)
            .chain(self.rest.iter().flat_map(|r| r.more.iter().copied()))
    }

    /// Every `(swarm shard, slot, mode)`, in the order the swarms were joined.
    pub fn iter(&self) -> impl Iterator<Item = (u16, u32, PeerMode)> + '_ {
        self.raw().map(unpack)
    }

    /// The peer's mode in the swarm at `slot` of swarm shard `shard`, if it is in it.
    pub fn mode_at(&self, shard: u16, slot: u32) -> Option<PeerMode> {
        let want = pack(shard, slot, PeerMode::Seeder);
        self.raw().find(|&e| place(e) == want).map(|e| unpack(e).2)
    }

    /// Adds a swarm the list does not hold yet.
    pub fn push(&mut self, shard: u16, slot: u32, mode: PeerMode) {
        let e = pack(shard, slot, mode);
        if self.first == NONE {
            self.first = e;
        } else {
            let more = &mut self.rest.get_or_insert_with(Default::default).more;
            more.reserve_exact(1);
            more.push(e);
        }
    }

    /// Changes the mode of a swarm in the list; `false` if it is not there.
    pub fn set_mode(&mut self, shard: u16, slot: u32, mode: PeerMode) -> bool {
        let want = pack(shard, slot, PeerMode::Seeder);
        let new = pack(shard, slot, mode);
        if self.first != NONE && place(self.first) == want {
            self.first = new;
            return true;
        }
        if let Some(e) = self
            .rest
            .as_mut()
            .and_then(|r| r.more.iter_mut().find(|e| place(**e) == want))
        {
            *e = new;
            return true;
        }
        false
    }

    /// Removes a swarm and returns the mode the peer had there.
    pub fn remove(&mut self, shard: u16, slot: u32) -> Option<PeerMode> {
        let want = pack(shard, slot, PeerMode::Seeder);
        if self.first == NONE {
            return None;
        }
        let gone = if place(self.first) == want {
            let gone = self.first;
            // The next entry moves up, keeping the order.
            self.first = match self.rest.as_mut() {
                Some(r) if !r.more.is_empty() => r.more.remove(0),
                _ => NONE,
            };
            gone
        } else {
            let more = &mut self.rest.as_mut()?.more;
            let i = more.iter().position(|e| place(*e) == want)?;
            more.remove(i)
        };
        // A spilled vector that became empty is kept (a peer moving between two swarms with
        // JOIN then LEAVE would allocate it again at once); the whole list is dropped when the
        // peer leaves every swarm (the payload stays).
        if let Some(r) = &mut self.rest {
            if self.first == NONE {
                r.more = Vec::new();
                self.trim();
            } else if r.more.capacity() > 2 * r.more.len() + 8 {
                r.more.shrink_to_fit();
            }
        }
        Some(unpack(gone).2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default)]
    struct Tag(Option<u8>);

    impl Payload for Tag {
        fn is_unused(&self) -> bool {
            self.0.is_none()
        }
    }

    #[test]
    fn the_payload_shares_the_box() {
        let mut list = SwarmList::<Tag>::default();
        list.push(1, 1, PeerMode::Seeder);
        assert_eq!(list.heap_bytes(), 0);
        list.extra_mut().0 = Some(7);
        list.push(2, 2, PeerMode::Leech);
        assert!(list.heap_bytes() > 0);
        assert_eq!(list.remove(1, 1), Some(PeerMode::Seeder));
        assert_eq!(list.remove(2, 2), Some(PeerMode::Leech));
        assert!(list.is_empty());
        assert_eq!(
            list.extra().and_then(|t| t.0),
            Some(7),
            "the payload outlives entries"
        );
        if let Some(t) = list.extra_if_any() {
            t.0 = None;
        }
        list.trim();
        assert_eq!(list.heap_bytes(), 0, "an unused box is given back");
        list.push(3, 3, PeerMode::Leech);
        list.push(4, 4, PeerMode::Leech);
        list.extra_mut().0 = Some(1);
        if let Some(t) = list.extra_if_any() {
            t.0 = None;
        }
        list.trim();
        assert_eq!(list.len(), 2, "entries that need the box keep it");
        assert!(list.heap_bytes() > 0);
    }

    #[test]
    fn push_find_set_remove_keep_order() {
        let mut list = SwarmList::<()>::default();
        assert!(list.is_empty());
        assert_eq!(list.heap_bytes(), 0, "an empty list allocates nothing");
        list.push(3, 7, PeerMode::Seeder);
        assert_eq!(list.heap_bytes(), 0, "one swarm allocates nothing");
        list.push(u16::MAX, u32::MAX - 1, PeerMode::Leech);
        list.push(0, 0, PeerMode::Leech);
        assert_eq!(list.len(), 3);
        assert_eq!(list.mode_at(3, 7), Some(PeerMode::Seeder));
        assert_eq!(list.mode_at(3, 8), None);
        assert_eq!(list.mode_at(4, 7), None);
        assert_eq!(list.mode_at(u16::MAX, u32::MAX - 1), Some(PeerMode::Leech));
        assert!(list.set_mode(0, 0, PeerMode::Seeder));
        assert!(!list.set_mode(9, 9, PeerMode::Seeder));
        assert_eq!(list.remove(3, 7), Some(PeerMode::Seeder));
        assert_eq!(list.remove(3, 7), None);
        assert_eq!(
            list.iter().collect::<Vec<_>>(),
            vec![
                (u16::MAX, u32::MAX - 1, PeerMode::Leech),
                (0, 0, PeerMode::Seeder)
            ]
        );
        assert_eq!(list.remove(0, 0), Some(PeerMode::Seeder));
        assert!(
            list.heap_bytes() > 0,
            "the spilled vector is kept while in a swarm"
        );
        list.push(5, 5, PeerMode::Leech);
        assert_eq!(list.mode_at(5, 5), Some(PeerMode::Leech));
        assert_eq!(list.remove(5, 5), Some(PeerMode::Leech));
        assert_eq!(list.remove(u16::MAX, u32::MAX - 1), Some(PeerMode::Leech));
        assert!(list.is_empty());
        assert_eq!(
            list.heap_bytes(),
            0,
            "an emptied list gives its memory back"
        );
        assert_eq!(list.len(), 0);
    }
}
