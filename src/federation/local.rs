//! The connection tracker's local copy of its own peers' registrations, as the federation sees
//! them: built from the requests the engine accepted and their outcomes (the boundary between
//! server and engine), never from the engine's tables, so the engine can change its layout
//! freely.
//!
//! It answers what the federation needs and the engine does not offer: a swarm's local
//! members with addresses, modes and chunks (the CONTENT-REGISTRATION value), a peer's live
//! status for a routed request from another node, and which swarms and peers changed since the
//! last flush. Peers expire here on the engine's track timer, refreshed by every accepted
//! request of the peer, so an expiry at the engine reaches the overlay too.
//!
//! Sans-IO: time is an argument ([`Time`], ms). Keys come from the network (peer and swarm
//! ids), so the maps use foldhash with a per-process random seed.

use std::collections::{BTreeSet, HashMap};

use crate::engine::{
    ActionKind, Answer, ChunkRange, DisconnectScope, PeerAddr, PeerId, PeerMode, Request,
    RequestKind, Response, SwarmId, Time,
};

use super::value::{LiveStatus, PeerListData};

type Hasher = foldhash::fast::RandomState;

/// One local member of a swarm.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Member {
    mode: PeerMode,
    chunks: Vec<ChunkRange>,
}

/// One locally registered peer.
#[derive(Clone, Debug)]
struct LocalPeer {
    addrs: smallvec::SmallVec<[PeerAddr; 2]>,
    swarms: Vec<SwarmId>,
    registered_at: Time,
    deadline: Time,
}

/// The local copy and what changed since the last flush.
#[derive(Debug)]
pub struct LocalCopy {
    track_ms: u64,
    swarms: HashMap<SwarmId, HashMap<PeerId, Member, Hasher>, Hasher>,
    peers: HashMap<PeerId, LocalPeer, Hasher>,
    /// Expiry order: (deadline, peer).
    deadlines: BTreeSet<(Time, PeerId)>,
    /// Ordered sets, so that a flush's Stores come out in the same order for the same changes
    /// (a simulation replays exactly).
    dirty_swarms: BTreeSet<SwarmId>,
    /// Peers whose PEER-STATUS entry must be written (true) or removed (false).
    dirty_status: std::collections::BTreeMap<PeerId, bool>,
}

impl LocalCopy {
    /// A local copy whose peers expire `track_ms` after their last accepted request.
    pub fn new(track_ms: u64) -> Self {
        LocalCopy {
            track_ms,
            swarms: HashMap::default(),
            peers: HashMap::default(),
            deadlines: BTreeSet::new(),
            dirty_swarms: BTreeSet::new(),
            dirty_status: std::collections::BTreeMap::new(),
        }
    }

    /// Applies what the engine accepted: `response` is the engine's answer to `request`.
    /// A refused request changed nothing at the engine and changes nothing here.
    pub fn record(&mut self, request: &Request, response: &Response, now: Time) {
        let Response::Ok(answer) = response else {
            return;
        };
        let peer = request.peer_id;
        match &request.kind {
            RequestKind::Connect { addrs, actions, .. } => {
                let addrs: smallvec::SmallVec<[PeerAddr; 2]> = if addrs.is_empty() {
                    smallvec::smallvec![answer
                        .reflexive
                        .unwrap_or_else(|| PeerAddr::reflexive(request.source))]
                } else {
                    addrs.iter().copied().collect()
                };
                self.register(peer, addrs, now);
                for a in actions {
                    if !swarm_ok(answer, &a.swarm_id) {
                        continue;
                    }
                    match a.action {
                        ActionKind::Join => self.join(peer, a.swarm_id, a.mode),
                        ActionKind::Leave => self.leave(peer, &a.swarm_id),
                    }
                }
            }
            RequestKind::Join { swarm_id, mode, .. } => {
                self.ensure(peer, request, now);
                self.join(peer, *swarm_id, *mode);
            }
            RequestKind::Announce {
                swarm_id,
                mode,
                addr,
                ..
            } => {
                if !self.peers.contains_key(&peer) {
                    self.register(peer, smallvec::smallvec![*addr], now);
                }
                self.join(peer, *swarm_id, *mode);
            }
            RequestKind::Leave { swarm_id } => self.leave(peer, swarm_id),
            RequestKind::JoinChunk { swarm_id, chunks } => {
                if let Some(m) = self.swarms.get_mut(swarm_id).and_then(|s| s.get_mut(&peer)) {
                    if m.chunks != *chunks {
                        m.chunks = chunks.clone();
                        self.dirty_swarms.insert(*swarm_id);
                    }
                }
            }
            RequestKind::Disconnect { scope } => {
                let swarms = self
                    .peers
                    .get(&peer)
                    .map(|p| p.swarms.clone())
                    .unwrap_or_default();
                for s in &swarms {
                    self.leave(peer, s);
                }
                if *scope == DisconnectScope::Deregister {
                    self.remove_peer(peer);
                    return;
                }
            }
            RequestKind::Find { .. }
            | RequestKind::StatReport { .. }
            | RequestKind::Keepalive
            | RequestKind::StatQuery { .. } => {}
        }
        self.refresh(peer, now);
    }

    /// Removes the peers whose track timer ran out by `now`; returns how many.
    pub fn expire(&mut self, now: Time) -> usize {
        let mut n = 0;
        while let Some(&(deadline, peer)) = self.deadlines.first() {
            if deadline >= now {
                break;
            }
            self.deadlines.pop_first();
            let swarms = self
                .peers
                .get(&peer)
                .map(|p| p.swarms.clone())
                .unwrap_or_default();
            for s in &swarms {
                self.leave(peer, s);
            }
            self.remove_peer(peer);
            n += 1;
        }
        n
    }

    fn ensure(&mut self, peer: PeerId, request: &Request, now: Time) {
        if !self.peers.contains_key(&peer) {
            self.register(
                peer,
                smallvec::smallvec![PeerAddr::reflexive(request.source)],
                now,
            );
        }
    }

    /// Registers `peer` (or updates its addresses). Only a peer new here changes its
    /// PEER-STATUS entry (the entry names this node, nothing else): a CONNECT of a peer already
    /// registered, as after a LEAVE of its last swarm, stores nothing.
    fn register(&mut self, peer: PeerId, addrs: smallvec::SmallVec<[PeerAddr; 2]>, now: Time) {
        let mut new = false;
        let p = self.peers.entry(peer).or_insert_with(|| {
            new = true;
            LocalPeer {
                addrs: addrs.clone(),
                swarms: Vec::new(),
                registered_at: now,
                deadline: now,
            }
        });
        if p.addrs != addrs {
            p.addrs = addrs;
            for s in &p.swarms {
                self.dirty_swarms.insert(*s);
            }
        }
        if new {
            self.dirty_status.insert(peer, true);
        }
    }

    fn refresh(&mut self, peer: PeerId, now: Time) {
        if let Some(p) = self.peers.get_mut(&peer) {
            self.deadlines.remove(&(p.deadline, peer));
            p.deadline = now.saturating_add_millis(self.track_ms);
            self.deadlines.insert((p.deadline, peer));
        }
    }

    fn join(&mut self, peer: PeerId, swarm: SwarmId, mode: PeerMode) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        if !p.swarms.contains(&swarm) {
            p.swarms.push(swarm);
        }
        let members = self.swarms.entry(swarm).or_default();
        match members.get_mut(&peer) {
            Some(m) if m.mode == mode => return,
            Some(m) => m.mode = mode,
            None => {
                members.insert(
                    peer,
                    Member {
                        mode,
                        chunks: Vec::new(),
                    },
                );
            }
        }
        self.dirty_swarms.insert(swarm);
    }

    fn leave(&mut self, peer: PeerId, swarm: &SwarmId) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.swarms.retain(|s| s != swarm);
        }
        if let Some(members) = self.swarms.get_mut(swarm) {
            if members.remove(&peer).is_some() {
                self.dirty_swarms.insert(*swarm);
            }
            if members.is_empty() {
                self.swarms.remove(swarm);
            }
        }
    }

    fn remove_peer(&mut self, peer: PeerId) {
        if let Some(p) = self.peers.remove(&peer) {
            self.deadlines.remove(&(p.deadline, peer));
            self.dirty_status.insert(peer, false);
        }
    }

    /// Local members of `swarm`.
    pub fn count(&self, swarm: &SwarmId) -> usize {
        self.swarms.get(swarm).map_or(0, HashMap::len)
    }

    /// Local members of `swarm` other than `peer`.
    pub fn count_others(&self, swarm: &SwarmId, peer: &PeerId) -> usize {
        self.swarms
            .get(swarm)
            .map_or(0, |m| m.len() - usize::from(m.contains_key(peer)))
    }

    /// Whether `peer` is registered here.
    pub fn has_peer(&self, peer: &PeerId) -> bool {
        self.peers.contains_key(peer)
    }

    /// The mode of `peer` in `swarm`, when it is a local member.
    pub fn mode_of(&self, peer: &PeerId, swarm: &SwarmId) -> Option<PeerMode> {
        self.swarms.get(swarm)?.get(peer).map(|m| m.mode)
    }

    /// Swarms with local members.
    pub fn swarm_count(&self) -> usize {
        self.swarms.len()
    }

    /// Locally registered peers.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Every swarm with local members.
    pub fn swarm_ids(&self) -> Vec<SwarmId> {
        let mut v: Vec<SwarmId> = self.swarms.keys().copied().collect();
        v.sort();
        v
    }

    /// Every locally registered peer.
    pub fn peer_ids(&self) -> Vec<PeerId> {
        let mut v: Vec<PeerId> = self.peers.keys().copied().collect();
        v.sort();
        v
    }

    /// This node's registration of `swarm` (its local members), in peer-id order so that a
    /// registration encodes the same way twice.
    pub fn registration(&self, swarm: &SwarmId) -> Vec<PeerListData> {
        let Some(members) = self.swarms.get(swarm) else {
            return Vec::new();
        };
        let mut out: Vec<PeerListData> = members
            .iter()
            .filter_map(|(id, m)| {
                let p = self.peers.get(id)?;
                Some(PeerListData {
                    peer_id: *id,
                    mode: m.mode,
                    addrs: p.addrs.clone(),
                    chunks: m.chunks.clone(),
                })
            })
            .collect();
        out.sort_by_key(|p| p.peer_id);
        out
    }

    /// The live status of a local peer.
    pub fn live_status(&self, peer: &PeerId, now: Time) -> Option<LiveStatus> {
        let p = self.peers.get(peer)?;
        let swarms = p
            .swarms
            .iter()
            .filter_map(|s| Some((*s, self.mode_of(peer, s)?)))
            .collect::<Vec<_>>();
        Some(LiveStatus {
            tracking: !swarms.is_empty(),
            online_ms: now.saturating_sub(p.registered_at),
            addrs: p.addrs.clone(),
            swarms,
        })
    }

    /// Takes up to `max` swarms changed since the last call.
    pub fn take_dirty_swarms(&mut self, max: usize) -> Vec<SwarmId> {
        let out: Vec<SwarmId> = self.dirty_swarms.iter().take(max).copied().collect();
        for s in &out {
            self.dirty_swarms.remove(s);
        }
        out
    }

    /// Takes up to `max` peers whose PEER-STATUS entry must be written (true) or removed.
    pub fn take_dirty_status(&mut self, max: usize) -> Vec<(PeerId, bool)> {
        let out: Vec<(PeerId, bool)> = self
            .dirty_status
            .iter()
            .take(max)
            .map(|(p, b)| (*p, *b))
            .collect();
        for (p, _) in &out {
            self.dirty_status.remove(p);
        }
        out
    }

    /// Marks a swarm for the next flush (a failed Store, a refresh before the value's lifetime
    /// runs out).
    pub fn mark_swarm(&mut self, swarm: SwarmId) {
        self.dirty_swarms.insert(swarm);
    }

    /// Marks a peer's PEER-STATUS entry for the next flush, unless a newer change is pending.
    pub fn mark_status(&mut self, peer: PeerId) {
        let present = self.peers.contains_key(&peer);
        self.dirty_status.entry(peer).or_insert(present);
    }

    /// Swarms and peers waiting for a flush.
    pub fn pending(&self) -> (usize, usize) {
        (self.dirty_swarms.len(), self.dirty_status.len())
    }
}

fn swarm_ok(answer: &Answer, swarm: &SwarmId) -> bool {
    answer
        .swarm_results
        .iter()
        .find(|r| r.swarm_id == *swarm)
        .map_or(true, |r| r.result == crate::engine::ErrorCode::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Engine, EngineConfig, SwarmAction};

    fn req(peer: &str, kind: RequestKind) -> Request {
        Request {
            peer_id: PeerId::new(peer.as_bytes()).unwrap(),
            source: "10.0.0.1:7000".parse().unwrap(),
            kind,
        }
    }

    fn swarm(s: &str) -> SwarmId {
        SwarmId::new(s.as_bytes()).unwrap()
    }

    /// The local copy, fed with the engine's outcomes, lists what the engine lists.
    #[test]
    fn follows_the_engine_through_connect_join_chunks_leave_disconnect_and_expiry() {
        let engine = Engine::new(&EngineConfig::default());
        let track = engine.config().track_timer_secs * 1000;
        let mut copy = LocalCopy::new(track);
        let apply = |copy: &mut LocalCopy, r: Request, t: u64| {
            let resp = engine.handle(&r, Time(t));
            copy.record(&r, &resp, Time(t));
            resp
        };
        let connect = req(
            "p1",
            RequestKind::Connect {
                peer_num: None,
                addrs: Vec::new(),
                actions: vec![SwarmAction {
                    swarm_id: swarm("s"),
                    action: ActionKind::Join,
                    mode: PeerMode::Seeder,
                }],
            },
        );
        assert!(matches!(
            apply(&mut copy, connect.clone(), 0),
            Response::Ok(_)
        ));
        assert_eq!(copy.count(&swarm("s")), 1);
        assert_eq!(copy.take_dirty_swarms(10), vec![swarm("s")]);
        assert_eq!(copy.take_dirty_status(10).len(), 1);
        // A LEAVE and a new CONNECT of the registered peer: its swarm changes twice (one
        // Store of the newest state), its PEER-STATUS entry not at all.
        let leave = req(
            "p1",
            RequestKind::Leave {
                swarm_id: swarm("s"),
            },
        );
        assert!(matches!(apply(&mut copy, leave, 0), Response::Ok(_)));
        assert!(matches!(apply(&mut copy, connect, 0), Response::Ok(_)));
        assert_eq!(copy.take_dirty_swarms(10), vec![swarm("s")]);
        assert!(copy.take_dirty_status(10).is_empty());
        // A refused request (p2 is not registered) changes nothing.
        let refused = req(
            "p2",
            RequestKind::Join {
                swarm_id: swarm("s"),
                mode: PeerMode::Leech,
                peer_num: None,
            },
        );
        assert!(matches!(apply(&mut copy, refused, 1), Response::Err(_)));
        assert_eq!(copy.count(&swarm("s")), 1);
        assert!(copy.take_dirty_swarms(10).is_empty());
        let chunks = req(
            "p1",
            RequestKind::JoinChunk {
                swarm_id: swarm("s"),
                chunks: vec![ChunkRange::new(0, 9).unwrap()],
            },
        );
        apply(&mut copy, chunks, 2);
        let reg = copy.registration(&swarm("s"));
        assert_eq!(reg[0].chunks, vec![ChunkRange::new(0, 9).unwrap()]);
        assert_eq!(reg[0].mode, PeerMode::Seeder);
        assert_eq!(copy.take_dirty_swarms(10), vec![swarm("s")]);
        let live = copy
            .live_status(&PeerId::new(b"p1").unwrap(), Time(5))
            .unwrap();
        assert!(live.tracking);
        assert_eq!(live.online_ms, 5);
        apply(
            &mut copy,
            req(
                "p1",
                RequestKind::Disconnect {
                    scope: DisconnectScope::Deregister,
                },
            ),
            3,
        );
        assert_eq!(copy.count(&swarm("s")), 0);
        assert_eq!(copy.peer_count(), 0);
        assert_eq!(copy.take_dirty_swarms(10), vec![swarm("s")]);
        assert_eq!(
            copy.take_dirty_status(10),
            vec![(PeerId::new(b"p1").unwrap(), false)]
        );

        // Expiry on the track timer, refreshed by every accepted request. (A BitTorrent
        // announce names its swarm by a 20-byte info-hash.)
        let t = SwarmId::new(&[b't'; 20]).unwrap();
        let announce = req(
            "bt",
            RequestKind::Announce {
                swarm_id: t,
                mode: PeerMode::Leech,
                addr: PeerAddr::reflexive("10.0.0.2:6881".parse().unwrap()),
                peer_num: None,
            },
        );
        apply(&mut copy, announce.clone(), 10);
        apply(&mut copy, announce, 20);
        assert_eq!(copy.expire(Time(10 + track + 1)), 0);
        assert_eq!(copy.count(&t), 1);
        copy.take_dirty_swarms(10);
        assert_eq!(copy.expire(Time(20 + track + 1)), 1);
        assert_eq!(copy.count(&t), 0);
        assert_eq!(copy.take_dirty_swarms(10), vec![t]);
    }
}
