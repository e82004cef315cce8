//! The tracker usage hooked in at the boundary between server and engine: a request goes to
//! the engine as in single-node mode, its accepted outcome is recorded for the overlay, and a
//! FIND or a STAT_QUERY that the local copy cannot serve is answered from the overlay's
//! (cached) answer, or left waiting ([`Handled::Wait`]) while the overlay is asked.

use crate::engine::{
    Answer, Engine, PeerState, PeerStatus, Request, RequestKind, Response, StatAnswer, StatTarget,
    Time,
};
use crate::federation::{merge_peers, Federation, Lookup};

/// What to do with one request.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Handled {
    Answer(Response),
    /// Leave the request in place and try again when woken.
    Wait,
}

/// Applies `request` with the federation's rules (see the module comment); without a
/// federation it is exactly [`Engine::handle`].
pub(crate) fn handle(
    engine: &Engine,
    fed: Option<&Federation>,
    request: &Request,
    now: Time,
) -> Handled {
    let Some(fed) = fed else {
        return Handled::Answer(engine.handle(request, now));
    };
    match &request.kind {
        RequestKind::Find {
            swarm_id,
            peer_num,
            chunks,
        } if fed.local().has_peer(&request.peer_id) => {
            let plan = fed.find_plan(swarm_id, &request.peer_id, now, true);
            if plan == Lookup::Wait {
                return Handled::Wait;
            }
            let mut response = engine.handle(request, now);
            fed.record(request, &response, now);
            if let (Lookup::Remote(remote), Response::Ok(answer)) = (&plan, &mut response) {
                let cfg = engine.config();
                let limit = peer_num
                    .and_then(|n| n.peer_count)
                    .unwrap_or(cfg.default_peer_count)
                    .min(cfg.max_peer_count) as usize;
                let mode = fed.local().mode_of(&request.peer_id, swarm_id);
                for r in &mut answer.swarm_results {
                    if let Some(list) = r.peers.as_mut() {
                        merge_peers(
                            list,
                            remote,
                            &request.peer_id,
                            mode,
                            chunks,
                            limit,
                            now.as_millis() ^ 0x9e37_79b9,
                        );
                    }
                }
            }
            Handled::Answer(response)
        }
        RequestKind::StatQuery {
            target: StatTarget::Peer(peer),
        } if !fed.local().has_peer(peer) => {
            let response = engine.handle(request, now);
            if matches!(response, Response::Ok(_)) {
                // Registered here after all (the local copy lags the engine by nothing, but
                // a peer may be known to the engine alone, e.g. registered before the overlay).
                fed.record(request, &response, now);
                return Handled::Answer(response);
            }
            match fed.status_plan(peer, now) {
                Lookup::Wait => Handled::Wait,
                Lookup::Remote(status) => match status.as_ref() {
                    Some((node, live)) => Handled::Answer(Response::Ok(Answer {
                        stat: Some(StatAnswer::Peer(PeerStatus {
                            peer_id: *peer,
                            state: if live.tracking {
                                PeerState::Tracking
                            } else {
                                PeerState::PeerRegistered
                            },
                            online_ms: live.online_ms,
                            addrs: live.addrs.clone(),
                            swarms: live.swarms.clone(),
                            connection_tracker: Some(node.0),
                        })),
                        ..Answer::default()
                    })),
                    None => Handled::Answer(response),
                },
                Lookup::Local => Handled::Answer(response),
            }
        }
        _ => {
            let response = engine.handle(request, now);
            fed.record(request, &response, now);
            Handled::Answer(response)
        }
    }
}
