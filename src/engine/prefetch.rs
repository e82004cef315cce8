//! A staged prefetch of the next few PPSTP requests, so that the cache misses of several
//! requests overlap instead of following one another.
//!
//! In tables far beyond the caches (a million swarms) a JOIN or FIND waits for a chain of
//! dependent misses: the requester's index bucket and the swarm's (known from the ids'
//! hashes), then the record and the swarm slot those buckets name, then the swarm's member
//! vector the slot points to. A request looks them up itself in that order (overlapping the
//! two of each step, `Engine::with_registered_in`), but each step still waits for the one
//! before. A server that has the next requests of a connection in its input (pipelined HTTP)
//! notes them here a few requests ahead ([`PpstpPrefetch::push_request`] or, before decoding,
//! [`PpstpPrefetch::push_ids`]) and takes every noted one a step further as it serves each
//! request ([`PpstpPrefetch::advance`]): bucket lines, then record and slot, then the member
//! block, each step reading only what the step before loaded. By its turn a request finds its
//! lines in the cache. The BitTorrent path does the same with `BtPrefetch`.
//!
//! A prefetch changes nothing in the engine and never waits: the first step reads only the
//! bucket addresses each shard publishes (`line_index::Geometry`), the later ones only try the
//! shards' locks and skip the step when a lock is taken. Below `prefetch_min_entries` peers
//! or swarms (`EngineConfig`; the tables then stay mostly in cache) noting a request does
//! nothing.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::member::StoredId;
use super::types::{Request, RequestKind};
use super::Engine;

/// One noted request: where its registration and its swarm are (shard and id hash) and the
/// next step to take.
#[derive(Clone, Copy, Debug)]
struct Staged {
    peer: (u32, u64),
    /// `None`: a request about no single swarm (a peer lookup only).
    swarm: Option<(u32, u64)>,
    step: u8,
}

const FREE: Staged = Staged {
    peer: (0, 0),
    swarm: None,
    step: PpstpPrefetch::DONE,
};

/// The staged prefetch of one server worker (see the module comment). Holds at most
/// [`PpstpPrefetch::DEPTH`] requests; a newer one replaces the oldest.
#[derive(Debug)]
pub struct PpstpPrefetch {
    ring: [Staged; PpstpPrefetch::DEPTH],
    /// Requests noted whose steps are not all taken.
    under_way: u8,
    /// Where the next request noted goes (the oldest one's place).
    next: u8,
}

impl Default for PpstpPrefetch {
    fn default() -> Self {
        PpstpPrefetch {
            ring: [FREE; Self::DEPTH],
            under_way: 0,
            next: 0,
        }
    }
}

impl PpstpPrefetch {
    /// Requests under way at most: [`PpstpPrefetch::AHEAD`] in their steps and the one just
    /// noted.
    pub const DEPTH: usize = 4;
    /// How many requests ahead of the one being served a caller notes a request: one per step
    /// (bucket lines; record and slot; member block), so each step has the service of one
    /// request to complete before the next step reads what it loaded.
    pub const AHEAD: usize = 3;
    const DONE: u8 = 3;

    /// Notes `request` for the next steps: its registration and, for a JOIN, FIND, LEAVE or
    /// JOIN_CHUNK (or a CONNECT's first action), its swarm. Does nothing while the tables are
    /// small ([`Engine::prefetch_ppstp_useful`]).
    #[inline]
    pub fn push_request(&mut self, engine: &Engine, request: &Request) {
        let swarm = match &request.kind {
            RequestKind::Join { swarm_id, .. }
            | RequestKind::Find { swarm_id, .. }
            | RequestKind::Leave { swarm_id }
            | RequestKind::JoinChunk { swarm_id, .. } => Some(swarm_id.as_bytes()),
            RequestKind::Connect { actions, .. } => actions.first().map(|a| a.swarm_id.as_bytes()),
            _ => None,
        };
        self.push_ids(engine, request.peer_id.as_bytes(), swarm);
    }

    /// As [`PpstpPrefetch::push_request`], given a request's peer id and swarm id (if any) as
    /// the bytes the request will carry, for a server that has not decoded it yet. A peer id
    /// that is empty or longer than `max_id_len` notes nothing; such a swarm id is left out.
    #[inline]
    pub fn push_ids(&mut self, engine: &Engine, peer_id: &[u8], swarm_id: Option<&[u8]>) {
        if !engine.prefetch_ppstp_useful() || !engine.id_bytes_ok(peer_id) {
            return;
        }
        let peer = engine.peer_loc_of_bytes(peer_id);
        let swarm = swarm_id
            .filter(|s| engine.id_bytes_ok(s))
            .map(|s| engine.swarm_loc_of_bytes(s));
        // The oldest request noted gives its place: it is served first, so it is done or the
        // furthest along.
        let at = usize::from(self.next) % Self::DEPTH;
        self.next = ((at + 1) % Self::DEPTH) as u8;
        let Some(place) = self.ring.get_mut(at) else {
            return;
        };
        if place.step == Self::DONE {
            self.under_way += 1;
        }
        *place = Staged {
            peer,
            swarm,
            step: 0,
        };
    }

    /// Takes every noted request a step further; cheap when none is under way.
    #[inline]
    pub fn advance(&mut self, engine: &Engine) {
        if self.under_way == 0 {
            return;
        }
        for staged in self.ring.iter_mut() {
            match staged.step {
                0 => engine.prefetch_ppstp_buckets(staged.peer, staged.swarm),
                1 => engine.prefetch_ppstp_entries(staged.peer, staged.swarm),
                2 => {
                    if let Some(swarm) = staged.swarm {
                        engine.prefetch_ppstp_members(swarm);
                    }
                    self.under_way -= 1;
                }
                _ => continue,
            }
            staged.step += 1;
        }
    }
}

impl Engine {
    /// Whether prefetching PPSTP requests ahead is worth its work: the peer or the swarm
    /// count has reached `prefetch_min_entries` (below, the tables stay mostly in cache). One
    /// atomic load each; a server asks once per batch of input before looking for a request's
    /// ids.
    #[inline]
    pub fn prefetch_ppstp_useful(&self) -> bool {
        let min = self.config.prefetch_min_entries;
        let big = |n: &AtomicUsize| n.load(Ordering::Relaxed) >= min;
        big(&self.peers) || big(&self.swarms)
    }

    /// `id_ok` on bytes: not empty, at most `max_id_len`.
    fn id_bytes_ok(&self, id: &[u8]) -> bool {
        !id.is_empty() && id.len() <= self.config.max_id_len
    }

    /// [`Engine::peer_loc`] of a peer id given as bytes (shard number and hash only).
    fn peer_loc_of_bytes(&self, id: &[u8]) -> (u32, u64) {
        let stored = StoredId::pack(id);
        let h = self.peer_hasher.hash_one(stored.bytes());
        (((h >> 40) % self.peer_shards.len() as u64) as u32, h)
    }

    /// [`Engine::swarm_loc`] of a swarm id given as bytes.
    fn swarm_loc_of_bytes(&self, id: &[u8]) -> (u32, u64) {
        let h = self.swarm_hasher.hash_one(id);
        (((h >> 40) % self.swarm_shards.len() as u64) as u32, h)
    }

    /// The first step: the home index buckets of the peer's id and the swarm's, from the
    /// addresses their shards publish. No lock.
    fn prefetch_ppstp_buckets(&self, peer: (u32, u64), swarm: Option<(u32, u64)>) {
        if let Some(g) = self.peer_geometry.get(peer.0 as usize) {
            g.prefetch(peer.1);
        }
        if let Some((shard, h)) = swarm {
            if let Some(g) = self.swarm_geometry.get(shard as usize) {
                g.prefetch(h);
            }
        }
    }

    /// The second step: reads the two buckets (loaded by the first step) and starts loading
    /// the record and the swarm slot they most likely name. The locks are only tried.
    fn prefetch_ppstp_entries(&self, peer: (u32, u64), swarm: Option<(u32, u64)>) {
        if let Some(shard) = self
            .peer_shards
            .get(peer.0 as usize)
            .and_then(|s| s.try_lock())
        {
            shard.prefetch_probable(peer.1);
        }
        if let Some((s, h)) = swarm {
            if let Some(shard) = self.swarm_shards.get(s as usize).and_then(|s| s.try_lock()) {
                shard.swarms.prefetch_probable(h);
            }
        }
    }

    /// The third step: reads the swarm slot (loaded by the second step) and starts loading
    /// the first lines of its member vector. The lock is only tried.
    fn prefetch_ppstp_members(&self, swarm: (u32, u64)) {
        if let Some(shard) = self
            .swarm_shards
            .get(swarm.0 as usize)
            .and_then(|s| s.try_lock())
        {
            if let Some(swarm) = shard.swarms.probable(swarm.1) {
                swarm.prefetch_members();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::engine::{
        ActionKind, EngineConfig, ErrorCode, PeerId, PeerMode, PeerNum, SwarmAction, SwarmId, Time,
    };

    fn request(p: usize, kind: RequestKind) -> Request {
        Request {
            peer_id: PeerId::new(format!("peer-{p}").as_bytes()).unwrap(),
            source: SocketAddr::from(([10, (p >> 16) as u8, (p >> 8) as u8, p as u8], 7000)),
            kind,
        }
    }

    fn swarm(name: &str) -> SwarmId {
        SwarmId::new(name.as_bytes()).unwrap()
    }

    /// What a server notes: requests of every kind, for registered and unknown peers, known
    /// and unknown swarms, and ids a request may not carry.
    fn requests() -> Vec<Request> {
        let mut out = Vec::new();
        for p in (0..4_100).step_by(37) {
            let s = swarm(&format!("s-{p}-{}", p % 9));
            out.push(request(
                p,
                RequestKind::Join {
                    swarm_id: s,
                    mode: PeerMode::Leech,
                    peer_num: Some(PeerNum::default()),
                },
            ));
            out.push(request(
                p,
                RequestKind::Find {
                    swarm_id: swarm("hot"),
                    peer_num: None,
                    chunks: Vec::new(),
                },
            ));
            out.push(request(p, RequestKind::Leave { swarm_id: s }));
            out.push(request(p, RequestKind::Keepalive));
            out.push(request(
                p,
                RequestKind::Connect {
                    peer_num: None,
                    addrs: Vec::new(),
                    actions: vec![SwarmAction {
                        swarm_id: swarm("nowhere"),
                        action: ActionKind::Join,
                        mode: PeerMode::Seeder,
                    }],
                },
            ));
        }
        out
    }

    fn prefetch_all(e: &Engine, requests: &[Request]) -> PpstpPrefetch {
        let mut staged = PpstpPrefetch::default();
        for r in requests {
            staged.push_request(e, r);
            staged.advance(e);
        }
        staged.push_ids(e, b"", Some(b"hot"));
        staged.push_ids(e, &[b'x'; 65], None);
        staged.push_ids(e, b"peer-5", Some(&[b'y'; 200]));
        for _ in 0..PpstpPrefetch::DEPTH {
            staged.advance(e);
        }
        staged
    }

    /// A staged prefetch changes nothing, never waits for a shard's lock, notes nothing while
    /// the tables are small, and takes every request it noted through its steps.
    #[test]
    fn prefetch_changes_nothing_and_never_waits() {
        let e = Engine::new(&EngineConfig {
            prefetch_min_entries: 32_768,
            ..EngineConfig::default()
        });
        let requests = requests();
        let mut one = PpstpPrefetch::default();
        one.push_request(&e, &requests[0]);
        assert_eq!(one.under_way, 0, "small tables: nothing noted");
        let staged = prefetch_all(&e, &requests);
        assert_eq!(staged.under_way, 0);
        assert!(staged.ring.iter().all(|s| s.step == PpstpPrefetch::DONE));
        // 4,000 peers in 9 swarms of their own and one they all share: beyond the size where
        // the prefetch acts.
        for p in 0..4_000 {
            let mut actions: Vec<SwarmAction> = (0..9)
                .map(|k| SwarmAction {
                    swarm_id: swarm(&format!("s-{p}-{k}")),
                    action: ActionKind::Join,
                    mode: PeerMode::Seeder,
                })
                .collect();
            actions.push(SwarmAction {
                swarm_id: swarm("hot"),
                action: ActionKind::Join,
                mode: PeerMode::Seeder,
            });
            let r = e.handle(
                &request(
                    p,
                    RequestKind::Connect {
                        peer_num: Some(PeerNum {
                            peer_count: Some(0),
                            ..PeerNum::default()
                        }),
                        addrs: Vec::new(),
                        actions,
                    },
                ),
                Time::from_secs(1),
            );
            assert_eq!(r.error_code(), ErrorCode::Ok);
        }
        assert!(e.prefetch_ppstp_useful());
        one.push_request(&e, &requests[0]);
        assert_eq!(one.under_way, 1);
        let before = e.audit().unwrap();
        let staged = prefetch_all(&e, &requests);
        assert_eq!(staged.under_way, 0);
        assert!(staged.ring.iter().all(|s| s.step == PpstpPrefetch::DONE));
        {
            // Every shard locked elsewhere: the steps that need a lock give up at once.
            let _peers: Vec<_> = e.peer_shards.iter().map(|s| s.lock()).collect();
            let _swarms: Vec<_> = e.swarm_shards.iter().map(|s| s.lock()).collect();
            prefetch_all(&e, &requests);
        }
        assert_eq!(e.audit().unwrap(), before);
    }
}
