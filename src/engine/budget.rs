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

/// Peers per source key in one shard.
type CountShard = CachePadded<Mutex<FastMap<u128, u32>>>;

/// Registered peers per source address.
pub(super) struct SourceCounts {
    shards: Box<[CountShard]>,
    hasher: foldhash::fast::RandomState,
}

impl SourceCounts {
    pub fn new() -> Self {
        SourceCounts {
            shards: (0..SOURCE_SHARDS)
                .map(|_| CachePadded::new(Mutex::new(FastMap::default())))
                .collect(),
            hasher: Default::default(),
        }
    }

    fn shard(&self, key: u128) -> &Mutex<FastMap<u128, u32>> {
        let h = self.hasher.hash_one(key);
        &self.shards[(h % self.shards.len() as u64) as usize]
    }

    /// Counts one more peer from `ip` unless it already has `max`; false when refused.
    pub fn admit(&self, ip: IpAddr, max: usize) -> bool {
        let key = crate::runtime::source_key(ip);
        let mut shard = self.shard(key).lock();
        let n = shard.entry(key).or_insert(0);
        if (*n as usize) >= max {
            if *n == 0 {
                shard.remove(&key);
            }
            return false;
        }
        *n += 1;
        true
    }

    /// A peer from `ip` is gone.
    pub fn release(&self, ip: IpAddr) {
        let key = crate::runtime::source_key(ip);
        let mut shard = self.shard(key).lock();
        if let hashbrown::hash_map::Entry::Occupied(mut e) = shard.entry(key) {
            *e.get_mut() = e.get().saturating_sub(1);
            if *e.get() == 0 {
                e.remove();
            }
        }
    }

    /// Peers registered from `ip` now.
    pub fn count(&self, ip: IpAddr) -> usize {
        let key = crate::runtime::source_key(ip);
        self.shard(key).lock().get(&key).copied().unwrap_or(0) as usize
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
