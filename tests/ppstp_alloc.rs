//! Heap allocations of the PPSTP hot path: a FIND and a CONNECT of registered peers, decoded
//! into the previous request's place, served by the real engine into the previous answer's
//! place and encoded into a reused output buffer (the path a worker runs, HTTP framing aside),
//! counted by a global allocator wrapper per thread.

use std::net::SocketAddr;

use ppsp_tracker::engine::{Engine, EngineConfig, ErrorCode, Response, Time};
use ppsp_tracker::protocol::ppstp::{decode_request_into, encode_response, DecodeLimits, Decoded};

mod alloc_support;
use alloc_support::allocations;

/// A CONNECT moving the peer from `from` to `to` (RFC 7846 Table 6 row 5), or joining `to`.
fn connect(peer: u32, to: &str, from: Option<&str>) -> String {
    let leave = from.map_or(String::new(), |f| {
        format!(r#",{{"swarm_id":"{f}","action":"LEAVE","peer_mode":"LEECH"}}"#)
    });
    format!(
        r#"{{"PPSPTrackerProtocol":{{"version":1,"request_type":"CONNECT","transaction_id":"t{peer}","peer_id":"peer-{peer:04}","connect":{{"swarm_action":[{{"swarm_id":"{to}","action":"JOIN","peer_mode":"LEECH"}}{leave}]}}}}}}"#
    )
}

fn find(peer: u32) -> String {
    format!(
        r#"{{"PPSPTrackerProtocol":{{"version":1,"request_type":"FIND","transaction_id":"f{peer}","peer_id":"peer-{peer:04}","find":{{"swarm_id":"movie","peer_num":{{"peer_count":30}}}}}}}}"#
    )
}

/// Allocations per request over rounds 2.. of `rounds` (rounds 0 and 1 warm up): each round
/// serves its list of (source, body).
fn per_request(engine: &Engine, rounds: &[Vec<(SocketAddr, String)>]) -> f64 {
    let limits = DecodeLimits::default();
    let mut out = Vec::with_capacity(1 << 16);
    let mut decoded = Decoded::empty(rounds[0][0].0);
    let mut response = Response::Err(ErrorCode::Ok);
    let mut serve = |t: usize| {
        let mut listed = 0;
        for (src, body) in &rounds[t] {
            out.clear();
            decode_request_into(body.as_bytes(), *src, &limits, &mut decoded).expect("decodes");
            engine.handle_into(
                &decoded.request,
                Time::from_secs(100 + t as u64),
                &mut response,
            );
            assert!(matches!(response, Response::Ok(_)), "{response:?}");
            encode_response(&response, Some(&decoded.transaction_id), &mut out);
            listed += out.windows(9).filter(|w| *w == b"\"peer_id\"").count();
        }
        assert!(t == 0 || listed > 0, "the answers list peers");
    };
    // Warm-up: the first rounds size the reused buffers (a peer's swarm list grows to two
    // entries the first time it switches).
    let warm = rounds.len().min(2);
    for t in 0..warm {
        serve(t);
    }
    let before = allocations();
    let mut served = 0;
    for (round, bodies) in rounds.iter().enumerate().skip(warm) {
        serve(round);
        served += bodies.len();
    }
    (allocations() - before) as f64 / served as f64
}

#[test]
fn find_and_connect_allocate_nothing_in_steady_state() {
    let engine = Engine::new(&EngineConfig::default());
    let peers: Vec<(SocketAddr, u32)> = (0..40u32)
        .map(|i| (SocketAddr::from(([10, 0, 0, 1 + i as u8], 7000)), i))
        .collect();
    // Half the peers join "movie", half "news"; then each round moves every peer to the other
    // of the two (a channel switch, RFC 7846 Table 6 row 5), so both swarms live on with about
    // 20 members; the FINDs ask "movie", where all 40 end up. (A swarm whose last member
    // leaves is deleted and its memory given back: creating it again allocates its member
    // vector, so a workload where whole swarms vanish and reappear allocates for that.)
    let swarms = ["movie", "news"];
    let connects: Vec<Vec<(SocketAddr, String)>> = (0..=20usize)
        .map(|r| {
            peers
                .iter()
                .map(|&(a, i)| {
                    let side = (r + i as usize) % 2;
                    let from = (r > 0).then(|| swarms[1 - side]);
                    (a, connect(i, swarms[side], from))
                })
                .collect()
        })
        .collect();
    // Everyone ends in "movie" for the FINDs.
    let last: Vec<(SocketAddr, String)> = peers
        .iter()
        .filter(|&&(_, i)| (20 + i as usize) % 2 == 1)
        .map(|&(a, i)| (a, connect(i, "movie", Some("news"))))
        .collect();
    let connect = per_request(&engine, &connects);
    per_request(&engine, &[last.clone(), last.clone(), last]);
    let finds: Vec<Vec<(SocketAddr, String)>> = (0..=20)
        .map(|_| peers.iter().map(|&(a, i)| (a, find(i))).collect())
        .collect();
    let find = per_request(&engine, &finds);
    eprintln!("allocations per request: FIND {find:.2}, CONNECT {connect:.2}");
    assert_eq!(engine.counts().peers, 40);
    // None: the transaction id is borrowed from the body and copied into the reused string,
    // the action list is decoded into the previous request's vector, the swarm results and
    // peer lists reuse the previous answer's, and peer lists are chosen on the stack.
    assert_eq!(find, 0.0, "FIND: {find:.2} allocations per request");
    assert_eq!(
        connect, 0.0,
        "CONNECT: {connect:.2} allocations per request"
    );
}
