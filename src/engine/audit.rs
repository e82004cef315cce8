//! Slow, whole-table checks and measurements: the consistency audit used by tests (and usable
//! by an admin endpoint on a quiet engine) and a capacity-based memory estimate.

use std::hash::BuildHasher;
use std::mem::size_of;

use hashbrown::HashMap;

use super::tables::{Member, PeerShard};
use super::types::{PeerId, PeerMode, SwarmId};
use super::{Engine, TableCounts};

/// What the audit's first pass keeps of a registered peer: its id, its swarms and the copy
/// each of its memberships must hold.
type Listed = (PeerId, Vec<(SwarmId, PeerMode)>, Member);

/// Approximate heap bytes held by the tables, from capacities (not allocator statistics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// Swarm maps (id + swarm header per slot).
    pub swarm_table: usize,
    /// Member vectors, position indexes and chunk sets inside swarms.
    pub swarm_members: usize,
    /// Peer maps, record vectors, spilled swarm lists and peer cards.
    pub peer_table: usize,
    /// Of `swarm_members`: the PPSTP swarms' member vectors (members and chunk lists).
    pub member_vectors: usize,
    /// Of `swarm_members`: the PPSTP swarms' position indexes (large swarms only).
    pub position_indexes: usize,
    /// Of `peer_table`: the record vectors and id arenas.
    pub records: usize,
    /// Of `peer_table`: the peer-id indexes.
    pub peer_index: usize,
}

impl MemoryEstimate {
    pub fn total(&self) -> usize {
        self.swarm_table + self.swarm_members + self.peer_table
    }
}

impl Engine {
    /// Recounts everything and checks the invariants the engine guarantees:
    /// every member of a swarm is a registered peer that lists that swarm with the same mode,
    /// and its membership's copy of the peer-list entry equals what the record gives;
    /// every swarm a peer lists contains it; no swarm is empty; a peer is TRACKING exactly when
    /// it is in a swarm; swarm indexes and peer-shard positions are exact; and the counters
    /// behind [`Engine::counts`] match the recount, which is returned.
    ///
    /// Locks one shard at a time, so it is only meaningful while no request is running.
    pub fn audit(&self) -> Result<TableCounts, String> {
        // Pass 1: the peer table.
        let mut registered: HashMap<u64, Listed> = HashMap::new();
        let mut peers = 0;
        for (s, lock) in self.peer_shards.iter().enumerate() {
            let shard = lock.lock();
            if shard.index_len_and_bytes().0 != shard.len() {
                return Err("peer index and records differ in size".into());
            }
            shard.check_buckets()?;
            for (pos, record) in shard.records.iter().enumerate() {
                let peer_id = shard.peer_id_of(record);
                let key = shard.key_at(pos);
                if shard.find(&peer_id) != Some(pos) {
                    return Err(format!("peer {peer_id:?} indexed wrongly"));
                }
                if !std::ptr::eq(&**lock, self.peer_shard(&peer_id)) {
                    return Err(format!("peer {peer_id:?} in the wrong shard"));
                }
                if shard.by_key(key).is_none() || PeerShard::split_key(key) != (s, pos) {
                    return Err(format!("peer {peer_id:?} has a wrong handle"));
                }
                let tracking = record.state == super::PeerState::Tracking;
                if tracking == record.swarms.is_empty() {
                    return Err(format!(
                        "peer {:?} state does not match its swarms",
                        peer_id
                    ));
                }
                let mut swarms: Vec<_> = self.swarm_ids_of(&record.swarms).collect();
                if swarms.len() != record.swarms.len() {
                    return Err(format!("peer {peer_id:?} lists a swarm slot that is empty"));
                }
                swarms.sort_by_key(|s| s.0);
                if swarms.windows(2).any(|w| w[0].0 == w[1].0) {
                    return Err(format!("peer {:?} lists a swarm twice", peer_id));
                }
                if swarms.len() > self.config.max_swarms_per_peer {
                    return Err("peer over max_swarms_per_peer".into());
                }
                if registered
                    .insert(key, (peer_id, swarms, shard.member_at(pos)))
                    .is_some()
                {
                    return Err("a member key is used twice".into());
                }
                peers += 1;
            }
        }
        // Pass 2: the swarm table.
        let mut counts = TableCounts {
            peers,
            ..TableCounts::default()
        };
        let mut listed = 0usize;
        for (s, lock) in self.swarm_shards.iter().enumerate() {
            let shard = lock.lock();
            let (mut seeders, mut leechers) = (0, 0);
            shard.swarms.check()?;
            for (_, swarm_id, swarm) in shard.swarms.iter() {
                if self.swarm_shard_no(&swarm_id) != s {
                    return Err(format!("{swarm_id:?} in the wrong swarm shard"));
                }
                if swarm.is_empty() {
                    return Err(format!("{swarm_id:?} is empty but kept"));
                }
                if swarm.len() > self.config.max_peers_per_swarm {
                    return Err(format!("{swarm_id:?} over max_peers_per_swarm"));
                }
                swarm.check().map_err(|e| format!("{swarm_id:?}: {e}"))?;
                for mode in [PeerMode::Seeder, PeerMode::Leech] {
                    for m in swarm.members(mode).iter() {
                        let Some((peer_id, swarms, copy)) = registered.get(&{ m.key }) else {
                            return Err(format!("{swarm_id:?} has an unregistered member"));
                        };
                        if m != copy {
                            return Err(format!(
                                "{swarm_id:?} holds a copy of {peer_id:?} that differs from its record"
                            ));
                        }
                        if !swarms.iter().any(|(s, md)| *s == swarm_id && *md == mode) {
                            return Err(format!(
                                "{swarm_id:?} has {peer_id:?} as {mode:?}, the peer does not list it so"
                            ));
                        }
                    }
                }
                seeders += swarm.count(PeerMode::Seeder);
                leechers += swarm.count(PeerMode::Leech);
                counts.swarms += 1;
            }
            if shard.swarms.len() != shard.swarms.iter().count() {
                return Err("swarm count differs from the occupied slots".into());
            }
            if (seeders, leechers) != (shard.seeders, shard.leechers) {
                return Err("shard member counters differ from a recount".into());
            }
            counts.seeders += seeders;
            counts.leechers += leechers;
        }
        for (_, swarms, _) in registered.values() {
            listed += swarms.len();
        }
        // Pass 3: the BitTorrent table (its members are its own registrations).
        let mut bt_members = 0;
        for (s, lock) in self.bt_shards.iter().enumerate() {
            let shard = lock.lock();
            let (seeders, leechers) = shard.check(&self.bt_hasher)?;
            for swarm in shard.swarm_refs() {
                let hash = self.bt_hasher.hash_one(swarm.swarm.info_hash);
                if !std::ptr::eq(&**lock, self.bt_shard(hash)) {
                    return Err(format!("BitTorrent swarm in the wrong shard {s}"));
                }
                if swarm.len() > self.config.max_peers_per_swarm {
                    return Err("a BitTorrent swarm over max_peers_per_swarm".into());
                }
            }
            counts.seeders += seeders;
            counts.leechers += leechers;
            counts.swarms += shard.swarms.len();
            bt_members += seeders + leechers;
        }
        counts.peers += bt_members;
        listed += bt_members;
        counts.memberships = counts.seeders + counts.leechers;
        if listed != counts.memberships {
            return Err(format!(
                "peers list {listed} memberships, swarms hold {}",
                counts.memberships
            ));
        }
        let fast = self.counts();
        if fast != counts {
            return Err(format!("counts() {fast:?} differs from recount {counts:?}"));
        }
        Ok(counts)
    }

    /// Capacity-based estimate of the tables' heap use. Locks one shard at a time.
    pub fn memory_estimate(&self) -> MemoryEstimate {
        let mut est = MemoryEstimate::default();
        for lock in self.swarm_shards.iter() {
            let shard = lock.lock();
            est.swarm_table += shard.swarms.table_bytes();
            for swarm in shard.swarms.values() {
                est.swarm_members += swarm.heap_bytes();
                est.member_vectors += swarm.member_bytes();
                est.position_indexes += swarm.index_bytes();
            }
        }
        for lock in self.bt_shards.iter() {
            est.swarm_members += lock.lock().heap_bytes();
        }
        for lock in self.peer_shards.iter() {
            let shard = lock.lock();
            let index = shard.index_len_and_bytes().1;
            est.peer_index += index;
            est.records += shard.record_bytes();
            est.peer_table += index + shard.record_bytes() + shard.bucket_bytes();
            for record in &shard.records {
                est.peer_table += record.extra_bytes();
            }
        }
        est
    }
}

/// Size of one member entry in a swarm vector (reported by the bench).
pub const MEMBER_ENTRY_BYTES: usize = size_of::<Member>();
