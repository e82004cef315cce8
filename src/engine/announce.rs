//! The protocol-neutral announce ([`RequestKind::Announce`]): how BitTorrent clients, which
//! re-announce the same swarm every few minutes, map onto the engine.
//!
//! RFC 7846 Table 6 makes a CONNECT with one LEECH JOIN (or SEEDER JOINs) invalid in TRACKING,
//! so a re-announce cannot be a CONNECT. An announce is valid in every state: it registers the
//! peer if it is new, joins the swarm or refreshes its membership (mode change, track timer
//! re-armed), leaves the peer's other swarms alone, and answers a peer list and the swarm's
//! counts, all under one peer-shard lock and one swarm-shard lock.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::swarm_list::SwarmList;
use super::tables::{PeerCard, PeerRecord};
use super::types::*;
use super::{select, source_ip, Engine};

impl Engine {
    /// Applies an announce and writes its peer list into `peers` (cleared first; a reused
    /// vector makes a repeated announce allocation-free). Returns the swarm's statistics after
    /// the announce.
    ///
    /// Errors (nothing changed): 01 when `request` is not an announce, an id is too long, or
    /// the peer is already in `max_swarms_per_peer` other swarms; 03 when the peer id is
    /// registered from another source IP; 05 when a new registration would exceed `max_peers`,
    /// or the swarm is full / a new swarm would exceed `max_swarms`. A new peer whose join
    /// fails is not left registered.
    ///
    /// The peer list never holds the requester; a seeder gets leechers first (seeders only to
    /// fill up), anyone else seeders first.
    pub fn announce_into(
        &self,
        request: &Request,
        now: Time,
        peers: &mut Vec<PeerInfo>,
    ) -> Result<SwarmStats, ErrorCode> {
        peers.clear();
        let RequestKind::Announce {
            swarm_id,
            mode,
            addr,
            peer_num,
        } = &request.kind
        else {
            return Err(ErrorCode::BadRequest);
        };
        let (swarm_id, mode) = (*swarm_id, *mode);
        if !self.id_ok(&request.peer_id.0) || !self.id_ok(&swarm_id.0) {
            return Err(ErrorCode::BadRequest);
        }
        let count = self.peer_count(peer_num.as_ref());
        let ip = source_ip(request);

        let mut shard = self.peer_shard(&request.peer_id).lock();
        let (pos, new) = match shard.find(&request.peer_id) {
            Some(pos) => {
                let record = shard.records.get(pos).ok_or(ErrorCode::InternalError)?;
                if record.source_ip != ip {
                    return Err(ErrorCode::Forbidden);
                }
                (pos, false)
            }
            None => {
                if !self.admit_peer(ip) {
                    return Err(ErrorCode::ServiceUnavailable);
                }
                let key = self.next_key.fetch_add(1, Ordering::Relaxed);
                let pos = shard.insert(PeerRecord {
                    key,
                    card: Arc::new(PeerCard {
                        peer_id: request.peer_id,
                        addrs: smallvec::smallvec![*addr],
                    }),
                    state: PeerState::PeerRegistered,
                    registered_at: now,
                    deadline: now,
                    source_ip: ip,
                    swarms: SwarmList::default(),
                });
                (pos, true)
            }
        };
        let record = shard.records.get_mut(pos).ok_or(ErrorCode::InternalError)?;
        if !new && !record.card.addrs.contains(addr) {
            self.replace_card(
                record,
                PeerCard {
                    peer_id: request.peer_id,
                    addrs: smallvec::smallvec![*addr],
                },
            );
        }

        let outcome = {
            let mut guard = self.swarm_shard(&swarm_id).lock();
            let swarm_shard = &mut *guard;
            match self.enter_swarm(record, swarm_shard, swarm_id, mode) {
                ErrorCode::Ok => match swarm_shard.swarms.get(&swarm_id) {
                    Some(swarm) => {
                        select::peer_list_into(
                            swarm,
                            record.key,
                            Some(mode),
                            count,
                            &[],
                            &mut swarm_shard.rng,
                            peers,
                        );
                        Ok(swarm.stats())
                    }
                    // The peer was just put in the swarm under this lock.
                    None => Err(ErrorCode::InternalError),
                },
                code => Err(code),
            }
        };
        if outcome.is_err() && new {
            // A new peer in no swarm would only wait for its init timer: forget it now.
            if let Some(gone) = shard.remove_at(pos) {
                self.release_peer(gone.source_ip);
            }
        } else {
            self.rearm(record_at(&mut shard.records, pos)?, now);
        }
        outcome
    }

    /// [`Engine::announce_into`] as an [`Answer`]: one `SwarmResult` with the peer list, and
    /// the swarm's statistics in `stat`.
    pub(super) fn announce_answer(
        &self,
        request: &Request,
        now: Time,
    ) -> Result<Answer, ErrorCode> {
        let mut peers = Vec::new();
        let stats = self.announce_into(request, now, &mut peers)?;
        let RequestKind::Announce { swarm_id, .. } = &request.kind else {
            return Err(ErrorCode::BadRequest);
        };
        Ok(Answer {
            reflexive: None,
            swarm_results: vec![SwarmResult {
                swarm_id: *swarm_id,
                result: ErrorCode::Ok,
                peers: Some(peers),
            }],
            stat: Some(StatAnswer::Swarm(*swarm_id, stats)),
        })
    }
}

fn record_at(records: &mut [PeerRecord], pos: usize) -> Result<&mut PeerRecord, ErrorCode> {
    records.get_mut(pos).ok_or(ErrorCode::InternalError)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::super::{Engine, EngineConfig};
    use super::*;

    fn engine(config: EngineConfig) -> Engine {
        Engine::new(&EngineConfig {
            shards: 4,
            ..config
        })
    }

    fn addr(ip: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, ip], 6881))
    }

    fn swarm(s: &str) -> SwarmId {
        SwarmId::new(s.as_bytes()).expect("test id")
    }

    fn announce(peer: u8, swarm_name: &str, mode: PeerMode, count: Option<u32>) -> Request {
        Request {
            peer_id: PeerId::new(&[0, b'b', b't', peer]).expect("test id"),
            source: SocketAddr::from(([10, 0, 0, peer], 40000)),
            kind: RequestKind::Announce {
                swarm_id: swarm(swarm_name),
                mode,
                addr: PeerAddr {
                    kind: AddrType::Host,
                    ..PeerAddr::reflexive(addr(peer))
                },
                peer_num: count.map(|c| PeerNum {
                    peer_count: Some(c),
                    ..PeerNum::default()
                }),
            },
        }
    }

    fn run(e: &Engine, r: &Request, now: Time) -> Result<(SwarmStats, Vec<SocketAddr>), ErrorCode> {
        let mut peers = Vec::new();
        let stats = e.announce_into(r, now, &mut peers)?;
        let mut addrs: Vec<SocketAddr> = peers.iter().map(|p| p.addrs[0].addr).collect();
        addrs.sort();
        Ok((stats, addrs))
    }

    fn state_of(e: &Engine, peer: u8, now: Time) -> Option<(PeerState, Vec<(SwarmId, PeerMode)>)> {
        let q = Request {
            peer_id: PeerId::new(b"observer").expect("test id"),
            source: addr(200),
            kind: RequestKind::StatQuery {
                target: StatTarget::Peer(PeerId::new(&[0, b'b', b't', peer]).expect("test id")),
            },
        };
        match e.handle(&q, now) {
            Response::Ok(Answer {
                stat: Some(StatAnswer::Peer(p)),
                ..
            }) => Some((p.state, p.swarms)),
            _ => None,
        }
    }

    #[test]
    fn a_new_peer_is_registered_tracking_and_listed_to_others() {
        let e = engine(EngineConfig::default());
        let (stats, peers) = run(&e, &announce(1, "s", PeerMode::Leech, None), Time(0)).unwrap();
        assert_eq!((stats.seeders, stats.leechers, stats.peers), (0, 1, 1));
        assert!(peers.is_empty(), "the requester is never listed");
        let (state, swarms) = state_of(&e, 1, Time(0)).unwrap();
        assert_eq!(state, PeerState::Tracking);
        assert_eq!(swarms, vec![(swarm("s"), PeerMode::Leech)]);

        let (stats, peers) = run(&e, &announce(2, "s", PeerMode::Seeder, None), Time(1)).unwrap();
        assert_eq!((stats.seeders, stats.leechers), (1, 1));
        assert_eq!(peers, vec![addr(1)]);
        assert_eq!(e.audit().unwrap().peers, 2);
    }

    #[test]
    fn a_leecher_turning_seeder_is_one_completion() {
        let e = engine(EngineConfig::default());
        let done = |e: &Engine, peer, mode, t| {
            run(e, &announce(peer, "s", mode, None), Time(t))
                .unwrap()
                .0
                .completed
        };
        assert_eq!(done(&e, 1, PeerMode::Leech, 0), 0);
        assert_eq!(done(&e, 2, PeerMode::Seeder, 1), 0, "joining as a seeder");
        assert_eq!(done(&e, 1, PeerMode::Seeder, 2), 1, "leech -> seeder");
        assert_eq!(
            done(&e, 1, PeerMode::Seeder, 3),
            1,
            "a repeated seeder announce"
        );
        assert_eq!(done(&e, 2, PeerMode::Seeder, 4), 1);
        assert_eq!(done(&e, 3, PeerMode::Leech, 5), 1);
        assert_eq!(done(&e, 3, PeerMode::Seeder, 6), 2);
        // Other swarms keep their own count.
        let other = run(&e, &announce(1, "t", PeerMode::Seeder, None), Time(7)).unwrap();
        assert_eq!(other.0.completed, 0);
        e.audit().unwrap();
    }

    #[test]
    fn a_repeated_announce_refreshes_where_a_connect_would_be_refused() {
        let config = EngineConfig::default();
        let track_ms = config.track_timer_secs * 1000;
        let e = engine(config);
        let r = announce(1, "s", PeerMode::Leech, None);
        run(&e, &r, Time(0)).unwrap();
        // RFC 7846 Table 6 row 1 is invalid in TRACKING: the same join as a CONNECT is 03.
        let connect = Request {
            kind: RequestKind::Connect {
                peer_num: None,
                addrs: Vec::new(),
                actions: vec![SwarmAction {
                    swarm_id: swarm("s"),
                    action: ActionKind::Join,
                    mode: PeerMode::Leech,
                }],
            },
            ..r.clone()
        };
        assert_eq!(
            e.handle(&connect, Time(1)),
            Response::Err(ErrorCode::Forbidden)
        );
        // The announce is accepted again and re-arms the track timer.
        let later = Time(track_ms - 1);
        let (stats, _) = run(&e, &r, later).unwrap();
        assert_eq!(stats.peers, 1, "a refresh is not a second membership");
        let report = e.expire(Time(track_ms + 10), usize::MAX);
        assert_eq!(report.expired, 0, "the refresh moved the deadline");
        assert!(state_of(&e, 1, Time(track_ms + 10)).is_some());
        let report = e.expire(later.saturating_add_millis(track_ms + 1), usize::MAX);
        assert_eq!(report.expired, 1);
        assert_eq!(e.audit().unwrap().memberships, 0);
    }

    #[test]
    fn a_mode_change_moves_the_peer_and_a_seeder_gets_leechers_first() {
        let e = engine(EngineConfig::default());
        for p in 1..=3 {
            run(&e, &announce(p, "s", PeerMode::Leech, None), Time(0)).unwrap();
        }
        run(&e, &announce(4, "s", PeerMode::Seeder, None), Time(0)).unwrap();
        let (stats, _) = run(&e, &announce(1, "s", PeerMode::Seeder, None), Time(1)).unwrap();
        assert_eq!((stats.seeders, stats.leechers, stats.peers), (2, 2, 4));
        // Seeder 1 asks for two peers: the two leechers, not seeder 4.
        let (_, peers) = run(&e, &announce(1, "s", PeerMode::Seeder, Some(2)), Time(2)).unwrap();
        assert_eq!(peers, vec![addr(2), addr(3)]);
        // A leecher asking for one peer gets a seeder.
        let (_, peers) = run(&e, &announce(2, "s", PeerMode::Leech, Some(1)), Time(2)).unwrap();
        assert!(
            peers == vec![addr(1)] || peers == vec![addr(4)],
            "{peers:?}"
        );
        assert_eq!(e.audit().unwrap().seeders, 2);
    }

    #[test]
    fn other_swarms_of_the_peer_are_untouched() {
        let e = engine(EngineConfig::default());
        run(&e, &announce(1, "a", PeerMode::Seeder, None), Time(0)).unwrap();
        run(&e, &announce(1, "b", PeerMode::Leech, None), Time(0)).unwrap();
        run(&e, &announce(1, "b", PeerMode::Seeder, None), Time(1)).unwrap();
        let (_, mut swarms) = state_of(&e, 1, Time(1)).unwrap();
        swarms.sort_by_key(|x| x.0);
        assert_eq!(
            swarms,
            vec![
                (swarm("a"), PeerMode::Seeder),
                (swarm("b"), PeerMode::Seeder)
            ]
        );
    }

    #[test]
    fn limits_refuse_and_leave_no_registration_behind() {
        let e = engine(EngineConfig {
            max_peers: 1,
            ..EngineConfig::default()
        });
        run(&e, &announce(1, "s", PeerMode::Leech, None), Time(0)).unwrap();
        assert_eq!(
            run(&e, &announce(2, "s", PeerMode::Leech, None), Time(0)),
            Err(ErrorCode::ServiceUnavailable)
        );

        let e = engine(EngineConfig {
            max_peers_per_swarm: 1,
            ..EngineConfig::default()
        });
        run(&e, &announce(1, "s", PeerMode::Leech, None), Time(0)).unwrap();
        assert_eq!(
            run(&e, &announce(2, "s", PeerMode::Leech, None), Time(0)),
            Err(ErrorCode::ServiceUnavailable)
        );
        assert!(
            state_of(&e, 2, Time(0)).is_none(),
            "a failed new peer is forgotten"
        );
        assert_eq!(e.audit().unwrap().peers, 1);

        let e = engine(EngineConfig {
            max_swarms_per_peer: 1,
            ..EngineConfig::default()
        });
        run(&e, &announce(1, "a", PeerMode::Leech, None), Time(0)).unwrap();
        assert_eq!(
            run(&e, &announce(1, "b", PeerMode::Leech, None), Time(0)),
            Err(ErrorCode::BadRequest)
        );
        let (state, swarms) = state_of(&e, 1, Time(0)).unwrap();
        assert_eq!(state, PeerState::Tracking);
        assert_eq!(swarms, vec![(swarm("a"), PeerMode::Leech)]);
        assert_eq!(e.audit().unwrap().memberships, 1);
    }

    #[test]
    fn the_peer_count_is_capped_and_a_foreign_source_is_refused() {
        let e = engine(EngineConfig {
            max_peer_count: 3,
            default_peer_count: 2,
            ..EngineConfig::default()
        });
        for p in 1..=6 {
            run(&e, &announce(p, "s", PeerMode::Leech, None), Time(0)).unwrap();
        }
        let (_, peers) = run(&e, &announce(1, "s", PeerMode::Leech, None), Time(0)).unwrap();
        assert_eq!(peers.len(), 2);
        let (_, peers) = run(&e, &announce(1, "s", PeerMode::Leech, Some(100)), Time(0)).unwrap();
        assert_eq!(peers.len(), 3);
        let mut foreign = announce(1, "s", PeerMode::Seeder, None);
        foreign.source = addr(77);
        assert_eq!(run(&e, &foreign, Time(0)), Err(ErrorCode::Forbidden));
        assert_eq!(e.audit().unwrap().seeders, 0);
    }

    #[test]
    fn through_handle_the_answer_carries_the_list_and_the_counts() {
        let e = engine(EngineConfig::default());
        e.handle(&announce(1, "s", PeerMode::Seeder, None), Time(0));
        match e.handle(&announce(2, "s", PeerMode::Leech, None), Time(0)) {
            Response::Ok(a) => {
                assert_eq!(a.swarm_results.len(), 1);
                let peers = a.swarm_results[0].peers.as_ref().unwrap();
                assert_eq!(peers.len(), 1);
                assert_eq!(peers[0].mode, PeerMode::Seeder);
                match a.stat {
                    Some(StatAnswer::Swarm(id, s)) => {
                        assert_eq!(id, swarm("s"));
                        assert_eq!((s.seeders, s.leechers), (1, 1));
                    }
                    other => panic!("no counts: {other:?}"),
                }
            }
            other => panic!("announce failed: {other:?}"),
        }
        let not_announce = Request {
            kind: RequestKind::Keepalive,
            ..announce(1, "s", PeerMode::Seeder, None)
        };
        assert_eq!(
            e.announce_into(&not_announce, Time(0), &mut Vec::new()),
            Err(ErrorCode::BadRequest)
        );
    }
}
