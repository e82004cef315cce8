//! Admission budgets that bound what one client can pin, checked before the tables change.
//!
//! The global limits (`max_peers`, `max_swarms`, ...) bound the tables; these bound one
//! client's share of them, so a single source address cannot fill the tables and leave every
//! other client with 05. Peers are counted per source address (IPv4 address, or IPv6 /64, as
//! [`crate::runtime::source_key`] groups them); a peer's memberships and chunk ranges are
//! bounded through `max_swarms_per_peer` and `max_chunk_ranges_per_peer`, so the bytes one
//! source can pin are at most `max_peers_per_source` times a peer's worst case.

use std::hash::BuildHasher;
use std::net::IpAddr;

use crossbeam::utils::CachePadded;
use parking_lot::Mutex;

use super::tables::FastMap;

/// Shards of the per-source counts (by hash of the source key).
const SOURCE_SHARDS: usize = 16;

/// Peers per source key in one shard, the IPv4 and IPv6 keys apart so that the common entry
/// (an IPv4 source) takes 8 bytes of table: a large tracker has about one source per peer.
#[derive(Default)]
struct Counts {
    v4: FastMap<u32, u32>,
    /// Keyed by the /64 prefix.
    v6: FastMap<u64, u32>,
}

type CountShard = CachePadded<Mutex<Counts>>;

/// A source key split by family.
#[derive(Clone, Copy)]
enum Key {
    V4(u32),
    V6(u64),
}

impl Key {
    fn of(ip: IpAddr) -> Key {
        let key = crate::runtime::source_key(ip);
        if key >> 32 == 0xffff {
            Key::V4(key as u32)
        } else {
            Key::V6((key >> 64) as u64)
        }
    }
}

/// Registered peers per source address.
pub(super) struct SourceCounts {
    shards: Box<[CountShard]>,
    hasher: foldhash::fast::RandomState,
}

impl SourceCounts {
    pub fn new() -> Self {
        SourceCounts {
            shards: (0..SOURCE_SHARDS)
                .map(|_| CachePadded::new(Mutex::new(Counts::default())))
                .collect(),
            hasher: Default::default(),
        }
    }

    fn shard(&self, key: Key) -> &Mutex<Counts> {
        let h = match key {
            Key::V4(k) => self.hasher.hash_one(k),
            Key::V6(k) => self.hasher.hash_one(k),
        };
        &self.shards[(h % self.shards.len() as u64) as usize]
    }

    /// Counts one more peer from `ip` unless it already has `max`; false when refused.
    pub fn admit(&self, ip: IpAddr, max: usize) -> bool {
        let key = Key::of(ip);
        let mut shard = self.shard(key).lock();
        match key {
            Key::V4(k) => admit_in(&mut shard.v4, k, max),
            Key::V6(k) => admit_in(&mut shard.v6, k, max),
        }
    }

    /// A peer from `ip` is gone.
    pub fn release(&self, ip: IpAddr) {
        let key = Key::of(ip);
        let mut shard = self.shard(key).lock();
        match key {
            Key::V4(k) => release_in(&mut shard.v4, k),
            Key::V6(k) => release_in(&mut shard.v6, k),
        }
    }

    /// Peers registered from `ip` now.
    pub fn count(&self, ip: IpAddr) -> usize {
        let key = Key::of(ip);
        let shard = self.shard(key).lock();
        let n = match key {
            Key::V4(k) => shard.v4.get(&k).copied(),
            Key::V6(k) => shard.v6.get(&k).copied(),
        };
        n.unwrap_or(0) as usize
    }
}

fn admit_in<K: std::hash::Hash + Eq>(map: &mut FastMap<K, u32>, key: K, max: usize) -> bool {
    match map.get_mut(&key) {
        Some(n) if (*n as usize) < max => {
            *n = n.saturating_add(1);
            true
        }
        Some(_) => false,
        None if max > 0 => {
            map.insert(key, 1);
            true
        }
        None => false,
    }
}

fn release_in<K: std::hash::Hash + Eq>(map: &mut FastMap<K, u32>, key: K) {
    if let hashbrown::hash_map::Entry::Occupied(mut e) = map.entry(key) {
        *e.get_mut() = e.get().saturating_sub(1);
        if *e.get() == 0 {
            e.remove();
            // Memory is given back when the sources go: shrink a mostly empty table.
            if map.capacity() > 64 && map.len() * 4 < map.capacity() {
                map.shrink_to(map.len() * 2);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_capped_and_released() {
        let c = SourceCounts::new();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let b2: IpAddr = "2001:db8::2".parse().unwrap();
        assert!(c.admit(a, 2));
        assert!(c.admit(a, 2));
        assert!(!c.admit(a, 2));
        assert!(c.admit(b, 1));
        assert!(!c.admit(b2, 1), "same /64");
        c.release(a);
        assert_eq!(c.count(a), 1);
        assert!(c.admit(a, 2));
        c.release(b);
        assert_eq!(c.count(b2), 0);
        assert!(!c.admit(a, 0));
    }
}
