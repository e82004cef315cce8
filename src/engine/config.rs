//! Engine limits and timers (`[engine]` in the configuration).

use serde::{Deserialize, Serialize};

/// Limits and timers of the engine. Every limit answers with the protocol's error instead of
/// growing memory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Number of table shards (swarms by hash of swarm id, peers by hash of peer id).
    pub shards: usize,
    /// Maximum number of swarms in the whole table; a JOIN that would create one more gets 05.
    pub max_swarms: usize,
    /// Maximum number of registered peers; a CONNECT that would register one more gets 05.
    pub max_peers: usize,
    /// Maximum peers in one swarm; a JOIN beyond it gets 05 for that swarm.
    pub max_peers_per_swarm: usize,
    /// Maximum swarms one peer may be in; a JOIN beyond it gets 01 for that swarm.
    pub max_swarms_per_peer: usize,
    /// Maximum chunk ranges a peer may hold per swarm (JOIN_CHUNK) or ask for (FIND).
    pub max_chunk_ranges: usize,
    /// Maximum peers registered from one source address (IPv6: one /64); a registration
    /// beyond it gets 05 (BitTorrent: an error). Bounds the share of the tables one client can
    /// take: its swarms, memberships and chunk ranges follow from the per-peer limits.
    pub max_peers_per_source: usize,
    /// Maximum chunk ranges one peer may hold over all its swarms (JOIN_CHUNK beyond it gets
    /// 05); `max_chunk_ranges` still caps each swarm. 16 bytes per range.
    pub max_chunk_ranges_per_peer: usize,
    /// Cost bound of a chunk-filtered FIND: ranges asked for times members of the swarm. A
    /// FIND over it gets 05 instead of scanning.
    pub max_find_chunk_work: usize,
    /// Maximum addresses a peer may announce.
    pub max_addrs_per_peer: usize,
    /// Maximum swarm or peer id length in bytes (at most 64).
    pub max_id_len: usize,
    /// Peer-list size when the request names none.
    pub default_peer_count: u32,
    /// Upper bound for any requested `peer_count`.
    pub max_peer_count: u32,
    /// RFC 7846 init timer: how long a peer may stay in PEER REGISTERED without a JOIN, seconds.
    pub init_timer_secs: u64,
    /// RFC 7846 track timer: how long a TRACKING peer stays without a request, seconds.
    pub track_timer_secs: u64,
    /// Peers examined at most per expiry step, so expiry never stalls requests.
    pub expiry_budget: usize,
    /// Registered peers or swarms (PPSTP and BitTorrent together) from which a server
    /// prefetches the PPSTP requests pipelined behind the one it serves (a staged cache
    /// prefetch three requests ahead, `PpstpPrefetch`). Below it the tables mostly stay in the
    /// caches and finding each request's ids ahead costs more than it saves. 0: always.
    pub prefetch_min_entries: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            shards: 16,
            max_swarms: 1_000_000,
            max_peers: 2_000_000,
            max_peers_per_swarm: 100_000,
            max_swarms_per_peer: 64,
            max_chunk_ranges: 256,
            max_peers_per_source: 4096,
            max_chunk_ranges_per_peer: 1024,
            max_find_chunk_work: 262_144,
            max_addrs_per_peer: 4,
            max_id_len: 64,
            default_peer_count: 30,
            max_peer_count: 200,
            init_timer_secs: 30,
            track_timer_secs: 120,
            expiry_budget: 4096,
            prefetch_min_entries: 262_144,
        }
    }
}
