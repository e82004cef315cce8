//! One handler per request type: validation of the request's own sizes, the RFC 7846 state
//! checks, and the table operations (which live in `mod.rs` and `tables.rs`).

use smallvec::SmallVec;

use super::select;
use super::tables::PeerRecord;
use super::types::*;
use super::{source_ip, Engine, Lists, Picks};

/// Which CONNECT action sets RFC 7846 §4.1.1 Table 6 allows, given whether the peer is in
/// TRACKING (`tracking`) or in START / PEER REGISTERED (not in any swarm).
///
/// Table 6, row by row ("1" = exactly one action of that kind, "N" = one or more):
///
/// | # | swarms | peer_mode | action       | initial  | validity |
/// |---|--------|-----------|--------------|----------|----------|
/// | 1 | 1      | LEECH     | JOIN         | START    | valid    |
/// | 2 | 1      | LEECH     | LEAVE        | START    | invalid  |
/// | 3 | 1      | LEECH     | LEAVE        | TRACKING | valid    |
/// | 4 | 1      | LEECH     | JOIN + LEAVE | START    | invalid  |
/// | 5 | 1      | LEECH     | JOIN + LEAVE | TRACKING | valid    |
/// | 6 | N      | SEEDER    | JOIN         | START    | valid    |
/// | 7 | N      | SEEDER    | JOIN         | TRACKING | invalid  |
/// | 8 | N      | SEEDER    | LEAVE        | TRACKING | valid    |
///
/// The table's "valid sets" are the only valid ones: any other mix (for instance LEECH and
/// SEEDER joins together, or a lone LEECH JOIN while TRACKING) is invalid. Two readings the
/// table leaves open: PEER REGISTERED (registered, in no swarm) is treated as START, since the
/// RFC makes that state transient and only START and TRACKING appear in the table; and a LEAVE
/// counts whatever its `peer_mode` (§4.1.1: "set action type to LEAVE, regardless of the peer
/// mode"), so rows 3 and 8 together allow any non-empty set of LEAVEs while TRACKING. A CONNECT
/// with no swarm action at all only registers the peer or refreshes its addresses, and is valid
/// in every state (the PPSTP codec requires at least one action; other front-ends may not).
pub(super) fn table6_allows(actions: &[SwarmAction], tracking: bool) -> bool {
    let (mut leech_join, mut leech_leave, mut seed_join, mut seed_leave) = (0usize, 0, 0, 0);
    for a in actions {
        match (a.action, a.mode) {
            (ActionKind::Join, PeerMode::Leech) => leech_join += 1,
            (ActionKind::Leave, PeerMode::Leech) => leech_leave += 1,
            (ActionKind::Join, PeerMode::Seeder) => seed_join += 1,
            (ActionKind::Leave, PeerMode::Seeder) => seed_leave += 1,
        }
    }
    let leaves = leech_leave + seed_leave;
    if actions.is_empty() {
        return true;
    }
    if tracking {
        // Rows 3 and 8: only LEAVEs. Row 5: exactly one LEECH JOIN and one LEECH LEAVE.
        // Row 7 (SEEDER JOIN) and everything else: invalid.
        (leaves >= 1 && leech_join + seed_join == 0)
            || (leech_join == 1 && leech_leave == 1 && seed_join + seed_leave == 0)
    } else {
        // Row 1: exactly one LEECH JOIN. Row 6: SEEDER JOINs only. Rows 2 and 4 (any LEAVE)
        // and everything else: invalid.
        (leech_join == 1 && leaves + seed_join == 0) || (seed_join >= 1 && leech_join + leaves == 0)
    }
}

impl Engine {
    /// Most swarm actions one CONNECT may carry (more is 01): a peer can be in at most
    /// `max_swarms_per_peer` swarms, and row 5 of Table 6 needs two actions.
    fn max_actions(&self) -> usize {
        self.config.max_swarms_per_peer.max(2)
    }

    /// RFC 7846 §4.1.1 CONNECT: registers the peer (START -> PEER REGISTERED), sets its
    /// addresses and applies the swarm actions in order.
    ///
    /// - An action set that Table 6 forbids in the peer's state gets 03. RFC 7846 §2.3.2: from
    ///   PEER REGISTERED (case A) the registration is deleted; from TRACKING (case C) it is kept
    ///   (and its timer re-armed); a new peer id is not registered at all.
    /// - Each action has its own `SwarmResult`: JOIN failures are 01 (`max_swarms_per_peer`)
    ///   or 05 (swarm full, `max_swarms`), LEAVE of a swarm the peer is not in is 03. The
    ///   request itself still succeeds; a peer whose joins all failed stays PEER REGISTERED.
    /// - A successful LEECH JOIN, or any JOIN when the request has `peer_num`, carries a peer
    ///   list. `Answer.reflexive` is the request's source address.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn connect(
        &self,
        request: &Request,
        peer_num: Option<&PeerNum>,
        addrs: &[PeerAddr],
        actions: &[SwarmAction],
        now: Time,
        answer: &mut Answer,
        lists: &mut Lists,
    ) -> Result<(), ErrorCode> {
        if addrs.len() > self.config.max_addrs_per_peer
            || actions.len() > self.max_actions()
            || actions.iter().any(|a| !self.id_ok(&a.swarm_id.0))
        {
            return Err(ErrorCode::BadRequest);
        }
        let ip = source_ip(request);
        let port = request.source.port();
        let announced = || (!addrs.is_empty()).then(|| Box::<[PeerAddr]>::from(addrs));

        let (shard_no, stored, h) = self.peer_loc(&request.peer_id);
        let mut guard = self.peer_shards[shard_no].lock();
        let shard = &mut *guard;
        let existing = shard.find_stored(&stored, h);
        let tracking = match existing {
            Some(pos) => {
                let record = shard.records.get(pos).ok_or(ErrorCode::InternalError)?;
                if record.source_ip() != ip {
                    return Err(ErrorCode::Forbidden);
                }
                record.state == PeerState::Tracking
            }
            None => false,
        };
        if !table6_allows(actions, tracking) {
            if let Some(pos) = existing {
                if tracking {
                    self.rearm(shard, pos, now);
                } else {
                    // PEER REGISTERED: in no swarm, so there is nothing to leave.
                    self.remove_record(shard, pos);
                }
            }
            return Err(ErrorCode::Forbidden);
        }

        let pos = match existing {
            Some(pos) => pos,
            None => {
                if !self.admit_peer(ip) {
                    return Err(ErrorCode::ServiceUnavailable);
                }
                shard.insert(
                    &request.peer_id,
                    PeerRecord::new(announced(), request.source, now),
                )
            }
        };
        let record = shard.records.get_mut(pos).ok_or(ErrorCode::InternalError)?;
        let same = if addrs.is_empty() {
            record.announced().is_none() && record.port == port
        } else {
            record.announced() == Some(addrs)
        };
        if !same {
            record.set_announced(announced());
            record.port = port;
        }
        // The membership with the copy of the peer's (new) peer-list entry: rewritten in the
        // swarms the peer is already in, given to the ones it joins.
        let member = shard.member_at(pos);
        let record = shard.records.get_mut(pos).ok_or(ErrorCode::InternalError)?;
        if !same {
            self.refresh_memberships(&record.swarms, member);
        }
        let key = member.key;
        let asked = peer_num.map(|p| self.peer_count(Some(p)));
        let mut picks = Picks::new();
        let mut listed: SmallVec<[(usize, std::ops::Range<usize>); 4]> = SmallVec::new();
        for action in actions {
            let result = match action.action {
                ActionKind::Join => {
                    let list = asked.or_else(|| {
                        (action.mode == PeerMode::Leech).then(|| self.peer_count(None))
                    });
                    let (code, range) = self.join_swarm(
                        record,
                        member,
                        action.swarm_id,
                        action.mode,
                        list,
                        &mut picks,
                    );
                    let peers = range.map(|r| {
                        listed.push((answer.swarm_results.len(), r));
                        lists.take()
                    });
                    SwarmResult {
                        swarm_id: action.swarm_id,
                        result: code,
                        peers,
                    }
                }
                ActionKind::Leave => SwarmResult {
                    swarm_id: action.swarm_id,
                    result: self.leave_swarm(record, key, &action.swarm_id),
                    peers: None,
                },
            };
            answer.swarm_results.push(result);
        }
        self.rearm(shard, pos, now);
        drop(guard);
        for (i, range) in listed {
            if let Some(Some(list)) = answer.swarm_results.get_mut(i).map(|r| r.peers.as_mut()) {
                let _ = self.resolve(picks.get(range).unwrap_or(&[]), list);
            }
        }
        answer.reflexive = Some(PeerAddr::reflexive(request.source));
        Ok(())
    }

    /// RFC 7846 §4.1.2 FIND: a peer list of the swarm, optionally only peers holding every
    /// given chunk range. The requester must be registered (any state; FIND from PEER
    /// REGISTERED re-arms the init timer and does not change the state, since the state follows
    /// swarm membership). An unknown swarm is a success with an empty peer list: the swarm may
    /// simply have no peers right now.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn find(
        &self,
        request: &Request,
        swarm_id: &SwarmId,
        peer_num: Option<&PeerNum>,
        chunks: &[ChunkRange],
        now: Time,
        answer: &mut Answer,
        lists: &mut Lists,
    ) -> Result<(), ErrorCode> {
        if !self.id_ok(&swarm_id.0)
            || chunks.len() > self.config.max_chunk_ranges
            || chunks.iter().any(|r| r.start > r.end)
        {
            return Err(ErrorCode::BadRequest);
        }
        let work_bound = self.config.max_find_chunk_work;
        let count = self.peer_count(peer_num);
        let (shard_no, h) = self.swarm_loc(swarm_id);
        let mut list = lists.take();
        list.reserve(count);
        let mut late = select::Late::new();
        // The list is chosen under the requester's peer lock (then the swarm's, the engine's
        // lock order), so its memberships cannot change meanwhile: its mode in the swarm is
        // the one its record gives, found without probing the swarm.
        self.with_registered_in(
            request,
            Some((shard_no, h)),
            false,
            now,
            |record, member, shard| {
                let shard = shard.ok_or(ErrorCode::InternalError)?;
                let Some(slot) = shard.swarms.slot_of_hashed(h, swarm_id) else {
                    return Ok(());
                };
                let Some(swarm) = shard.swarms.at(slot) else {
                    return Ok(());
                };
                // A chunk-filtered FIND checks every member's chunk set against every range asked
                // for: refuse one that would cost more than the bound.
                if !chunks.is_empty() && chunks.len().saturating_mul(swarm.len()) > work_bound {
                    return Err(ErrorCode::ServiceUnavailable);
                }
                let mode = record.swarms.mode_at(shard_no as u16, slot);
                select::peer_list_into(
                    swarm,
                    member.key,
                    mode,
                    count,
                    chunks,
                    &mut shard.rng,
                    &mut select::ListSink {
                        list: &mut list,
                        late: &mut late,
                    },
                );
                Ok(())
            },
        )?;
        let read_records = !late.is_empty();
        if read_records {
            select::fill_late(&self.peer_shards, &late, &mut list);
        }
        // The requester is left out by its key under its peer lock; an entry whose copy is
        // incomplete in the swarm is read from its record after that lock is released, and a concurrent
        // DISCONNECT and CONNECT of the same peer id can register it again under a new key in
        // between: that registration is the requester too, never listed to itself. A list
        // written from complete copies alone holds what the swarm held under the lock, where
        // every other member is another peer id, so it is not searched.
        let me = request.peer_id.as_bytes();
        if read_records && list.iter().any(|p| p.has_id(me)) {
            list.retain(|p| !p.has_id(me));
        }
        answer.swarm_results.push(SwarmResult {
            swarm_id: *swarm_id,
            result: ErrorCode::Ok,
            peers: Some(list),
        });
        Ok(())
    }

    /// RFC 7846 §4.1.3 STAT_REPORT: adds each stat's uploaded and downloaded bytes to its
    /// swarm's totals (saturating). One `SwarmResult` per stat that names a swarm: 03 for a
    /// swarm the peer is not in. Stats without a swarm id are ignored; an empty report is a
    /// keep-alive. More stats than `max_swarms_per_peer` is 01.
    pub(super) fn stat_report(
        &self,
        request: &Request,
        stats: &[SwarmStat],
        now: Time,
    ) -> Result<Answer, ErrorCode> {
        if stats.len() > self.config.max_swarms_per_peer.max(1)
            || stats
                .iter()
                .any(|s| s.swarm_id.is_some_and(|id| !self.id_ok(&id.0)))
        {
            return Err(ErrorCode::BadRequest);
        }
        self.with_registered(request, now, |record, _| {
            let mut swarm_results = Vec::with_capacity(stats.len());
            for stat in stats {
                let Some(swarm_id) = stat.swarm_id else {
                    continue;
                };
                let shard_no = self.swarm_shard_no(&swarm_id);
                let mut shard = self.swarm_shards[shard_no].lock();
                let member = shard
                    .swarms
                    .slot_of(&swarm_id)
                    .filter(|&slot| record.swarms.mode_at(shard_no as u16, slot).is_some());
                let result = match member.and_then(|slot| shard.swarms.at_mut(slot)) {
                    Some(swarm) => {
                        swarm.add_traffic(stat.uploaded_bytes, stat.downloaded_bytes);
                        ErrorCode::Ok
                    }
                    None => ErrorCode::Forbidden,
                };
                swarm_results.push(SwarmResult::failed(swarm_id, result));
            }
            Ok(Answer {
                swarm_results,
                ..Answer::default()
            })
        })
    }

    /// PPSP JOIN: one JOIN swarm action for a registered peer, allowed in PEER REGISTERED and
    /// TRACKING (unlike CONNECT's Table 6, this is how a tracking peer adds one more swarm).
    /// A failure is the request's error (01 or 05 as in CONNECT).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn join(
        &self,
        request: &Request,
        swarm_id: SwarmId,
        mode: PeerMode,
        peer_num: Option<&PeerNum>,
        now: Time,
        answer: &mut Answer,
        lists: &mut Lists,
    ) -> Result<(), ErrorCode> {
        if !self.id_ok(&swarm_id.0) {
            return Err(ErrorCode::BadRequest);
        }
        let list = match (peer_num, mode) {
            (Some(p), _) => Some(self.peer_count(Some(p))),
            (None, PeerMode::Leech) => Some(self.peer_count(None)),
            (None, PeerMode::Seeder) => None,
        };
        let mut picks = Picks::new();
        let loc = self.swarm_loc(&swarm_id);
        let range =
            self.with_registered_in(request, Some(loc), true, now, |record, member, shard| {
                let shard = shard.ok_or(ErrorCode::InternalError)?;
                let joined = self.join_swarm_locked(
                    record, member, loc, shard, swarm_id, mode, list, &mut picks,
                );
                match joined {
                    (ErrorCode::Ok, range) => Ok(range),
                    (code, _) => Err(code),
                }
            })?;
        let peers = range.map(|r| {
            let mut l = lists.take();
            // An empty list (`peer_count` 0, or a swarm of one) has nothing to resolve.
            if !r.is_empty() {
                let _ = self.resolve(picks.get(r).unwrap_or(&[]), &mut l);
            }
            l
        });
        answer.swarm_results.push(SwarmResult {
            swarm_id,
            result: ErrorCode::Ok,
            peers,
        });
        Ok(())
    }

    /// PPSP LEAVE: one LEAVE swarm action. Leaving a swarm the peer is not in is 03. After the
    /// last swarm the peer is back in PEER REGISTERED with its init timer.
    pub(super) fn leave(
        &self,
        request: &Request,
        swarm_id: SwarmId,
        now: Time,
    ) -> Result<Answer, ErrorCode> {
        if !self.id_ok(&swarm_id.0) {
            return Err(ErrorCode::BadRequest);
        }
        let loc = self.swarm_loc(&swarm_id);
        self.with_registered_in(request, Some(loc), false, now, |record, member, shard| {
            let shard = shard.ok_or(ErrorCode::InternalError)?;
            let slot = shard
                .swarms
                .slot_of_hashed(loc.1, &swarm_id)
                .ok_or(ErrorCode::Forbidden)?;
            let mode = record
                .swarms
                .remove(loc.0 as u16, slot)
                .ok_or(ErrorCode::Forbidden)?;
            self.remove_membership(shard, member.key, slot, mode);
            Ok(Answer {
                swarm_results: vec![SwarmResult::failed(swarm_id, ErrorCode::Ok)],
                ..Answer::default()
            })
        })
    }

    /// PPSP DISCONNECT: `AllSwarms` leaves every swarm and keeps the registration (PEER
    /// REGISTERED, init timer); `Deregister` leaves every swarm and deletes the registration
    /// (RFC 7846 TERMINATE).
    pub(super) fn disconnect(
        &self,
        request: &Request,
        scope: DisconnectScope,
        now: Time,
    ) -> Result<Answer, ErrorCode> {
        match scope {
            DisconnectScope::AllSwarms => self.with_registered(request, now, |record, member| {
                self.leave_all(record, member.key);
                Ok(Answer::default())
            }),
            DisconnectScope::Deregister => {
                let mut guard = self.peer_shard(&request.peer_id).lock();
                let shard = &mut *guard;
                let pos = shard.find(&request.peer_id).ok_or(ErrorCode::Forbidden)?;
                let key = shard.key_at(pos);
                let record = shard.records.get_mut(pos).ok_or(ErrorCode::InternalError)?;
                if record.source_ip() != source_ip(request) {
                    return Err(ErrorCode::Forbidden);
                }
                // Out of every swarm first, then the record: members are always registered.
                self.leave_all(record, key);
                self.remove_record(shard, pos);
                Ok(Answer::default())
            }
        }
    }

    /// PPSP JOIN_CHUNK: replaces the chunk set the peer holds in a swarm it is in (03 if it is
    /// not). The set is stored sorted and merged; more than `max_chunk_ranges` ranges, or a
    /// range with start > end, is 01. An empty list clears the set.
    pub(super) fn join_chunk(
        &self,
        request: &Request,
        swarm_id: SwarmId,
        chunks: &[ChunkRange],
        now: Time,
    ) -> Result<Answer, ErrorCode> {
        if !self.id_ok(&swarm_id.0) || chunks.len() > self.config.max_chunk_ranges {
            return Err(ErrorCode::BadRequest);
        }
        let set = select::normalize(chunks).ok_or(ErrorCode::BadRequest)?;
        self.with_registered(request, now, |record, member| {
            let key = member.key;
            let shard_no = self.swarm_shard_no(&swarm_id);
            let slot = self.swarm_shards[shard_no]
                .lock()
                .swarms
                .slot_of(&swarm_id)
                .filter(|&slot| record.swarms.mode_at(shard_no as u16, slot).is_some())
                .ok_or(ErrorCode::Forbidden)?;
            // The slot stays this swarm's while the peer (whose shard lock is held) is in it.
            // The peer's ranges over all its swarms stay within `max_chunk_ranges_per_peer`
            // (one short lock per other swarm; a peer is in at most `max_swarms_per_peer`).
            let mut elsewhere = 0usize;
            for (other_shard, other_slot, _) in record.swarms.iter() {
                if (usize::from(other_shard), other_slot) != (shard_no, slot) {
                    if let Some(lock) = self.swarm_shards.get(usize::from(other_shard)) {
                        if let Some(swarm) = lock.lock().swarms.at(other_slot) {
                            elsewhere += swarm.chunks_of(key).len();
                        }
                    }
                }
            }
            if elsewhere.saturating_add(set.len()) > self.config.max_chunk_ranges_per_peer {
                return Err(ErrorCode::ServiceUnavailable);
            }
            let mut shard = self.swarm_shards[shard_no].lock();
            if let Some(swarm) = shard.swarms.at_mut(slot) {
                swarm.set_chunks(key, set);
            }
            Ok(Answer {
                swarm_results: vec![SwarmResult::failed(swarm_id, ErrorCode::Ok)],
                ..Answer::default()
            })
        })
    }

    /// PPSP STAT_QUERY: a swarm's statistics (an unknown swarm has all-zero statistics) or a
    /// peer's status (03 for a peer id that is not registered). Unregistered requesters may
    /// ask (monitoring); a requester whose id is registered must come from its registered
    /// address (03 otherwise), and the query re-arms its timer.
    pub(super) fn stat_query(
        &self,
        request: &Request,
        target: StatTarget,
        now: Time,
    ) -> Result<Answer, ErrorCode> {
        let target_ok = match &target {
            StatTarget::Swarm(id) => self.id_ok(&id.0),
            StatTarget::Peer(id) => self.id_ok(&id.0),
        };
        if !target_ok {
            return Err(ErrorCode::BadRequest);
        }
        {
            let mut guard = self.peer_shard(&request.peer_id).lock();
            let shard = &mut *guard;
            if let Some(pos) = shard.find(&request.peer_id) {
                let record = shard.records.get(pos).ok_or(ErrorCode::InternalError)?;
                if record.source_ip() != source_ip(request) {
                    return Err(ErrorCode::Forbidden);
                }
                self.rearm(shard, pos, now);
            }
        }
        let stat = match target {
            StatTarget::Swarm(swarm_id) => {
                StatAnswer::Swarm(swarm_id, self.swarm_stats_with_bt(&swarm_id, None))
            }
            StatTarget::Peer(peer_id) => {
                let shard = self.peer_shard(&peer_id).lock();
                let record = shard
                    .find(&peer_id)
                    .and_then(|pos| shard.records.get(pos))
                    .ok_or(ErrorCode::Forbidden)?;
                let (state, online_ms, addrs) = (
                    record.state,
                    now.saturating_sub(record.registered_at()),
                    record.addr_list(),
                );
                // The swarm ids are read while the peer's lock holds its slots, into a buffer
                // on the stack (a peer is in few swarms); the answer's vector is allocated
                // once the lock is released.
                let swarms: SmallVec<[(SwarmId, PeerMode); 4]> =
                    self.swarm_ids_of(&record.swarms).collect();
                drop(shard);
                StatAnswer::Peer(PeerStatus {
                    peer_id,
                    state,
                    online_ms,
                    addrs,
                    swarms: swarms.into_vec(),
                    connection_tracker: None,
                })
            }
        };
        Ok(Answer {
            stat: Some(stat),
            ..Answer::default()
        })
    }
}
