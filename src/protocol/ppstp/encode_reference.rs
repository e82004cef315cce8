//! The reference answer encoder: the straightforward writer of PPSTP answers (one `Vec` push
//! per fragment, `core::fmt` for IPv6 text) that the hot-path encoder in `answer.rs` replaced.
//! Kept as the oracle the tests compare the fast encoder's bytes with, and as the "before" of
//! the codec bench (`benches/codec.rs`); not used by the server.

use super::encode::{
    key, put_hex, put_id, put_mode, put_peer_addr, put_peer_addr_list, put_str, put_u64,
};
use super::TransactionId;
use crate::engine::{
    Answer, ErrorCode, PeerAddr, PeerInfo, PeerState, PeerStatus, Response, StatAnswer,
    SwarmResult, SwarmStats,
};

/// A peer's addresses in `peer_info`: one object for one address, as RFC 7846 §3.2.4's
/// `ppsp_tp_peer_info_t` and examples E4/E6 have it, and an array when there are several.
fn put_peer_addrs(out: &mut Vec<u8>, addrs: &[PeerAddr]) {
    match addrs {
        [one] => put_peer_addr(out, one),
        many => put_peer_addr_list(out, many),
    }
}

fn put_peer_info(out: &mut Vec<u8>, p: &PeerInfo) {
    out.extend_from_slice(b"{\"peer_id\":");
    put_id(out, p.peer_id().as_bytes());
    let addrs = p.addrs();
    if !addrs.is_empty() {
        out.extend_from_slice(b",\"peer_addr\":");
        put_peer_addrs(out, &addrs);
    }
    out.push(b'}');
}

/// RFC 7846 §3.3.4 `ppsp_tp_swarm_action_result_t`. `result` is a response type (0
/// SUCCESSFUL, 1 FAILED); a failed result also carries the reason as `error_code` (an RFC 7846
/// §7.1 request-response extension) and, per §3.3.4, no peer group.
fn put_swarm_result(out: &mut Vec<u8>, r: &SwarmResult) {
    out.extend_from_slice(b"{\"swarm_id\":");
    put_id(out, r.swarm_id.as_bytes());
    if r.result == ErrorCode::Ok {
        out.extend_from_slice(b",\"result\":0");
        if let Some(peers) = &r.peers {
            out.extend_from_slice(b",\"peer_group\":{\"peer_info\":[");
            for (i, p) in peers.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                put_peer_info(out, p);
            }
            out.extend_from_slice(b"]}");
        }
    } else {
        out.extend_from_slice(b",\"result\":1,\"error_code\":");
        put_u64(out, u64::from(r.result.code()));
    }
    out.push(b'}');
}

fn put_swarm_stats(out: &mut Vec<u8>, swarm: &[u8], s: &SwarmStats) {
    out.extend_from_slice(b"{\"swarm_id\":");
    put_id(out, swarm);
    for (name, value) in [
        ("peers", u64::from(s.peers)),
        ("seeders", u64::from(s.seeders)),
        ("leechers", u64::from(s.leechers)),
        ("completed", u64::from(s.completed)),
        ("uploaded_bytes", s.uploaded_bytes),
        ("downloaded_bytes", s.downloaded_bytes),
    ] {
        out.push(b',');
        key(out, name);
        put_u64(out, value);
    }
    out.push(b'}');
}

fn put_peer_status(out: &mut Vec<u8>, p: &PeerStatus) {
    out.extend_from_slice(b"{\"peer_id\":");
    put_id(out, p.peer_id.as_bytes());
    out.extend_from_slice(b",\"state\":");
    out.extend_from_slice(match p.state {
        PeerState::PeerRegistered => b"\"PEER_REGISTERED\"",
        PeerState::Tracking => b"\"TRACKING\"",
    });
    out.extend_from_slice(b",\"online_time\":");
    put_u64(out, p.online_ms / 1000);
    out.extend_from_slice(b",\"peer_addr\":");
    put_peer_addr_list(out, &p.addrs);
    out.extend_from_slice(b",\"swarms\":[");
    for (i, (swarm, mode)) in p.swarms.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"swarm_id\":");
        put_id(out, swarm.as_bytes());
        out.extend_from_slice(b",\"peer_mode\":");
        put_mode(out, *mode);
        out.push(b'}');
    }
    out.push(b']');
    if let Some(node) = &p.connection_tracker {
        out.extend_from_slice(b",\"connection_tracker\":");
        put_hex(out, node);
    }
    out.push(b'}');
}

fn put_answer(out: &mut Vec<u8>, a: &Answer) {
    if let Some(reflexive) = &a.reflexive {
        out.extend_from_slice(b",\"peer_addr\":");
        put_peer_addr(out, reflexive);
    }
    // RFC 7846 §3.3.4 specifies `swarm_result<1..*>` (an array, §3.1), while every example
    // (E4, E6, E8) writes a single result as a bare object. One result is written as the
    // examples do, several as an array; decoders (ours included) accept both.
    match a.swarm_results.as_slice() {
        [] => {}
        [one] => {
            out.extend_from_slice(b",\"swarm_result\":");
            put_swarm_result(out, one);
        }
        many => {
            out.extend_from_slice(b",\"swarm_result\":[");
            for (i, r) in many.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                put_swarm_result(out, r);
            }
            out.push(b']');
        }
    }
    match &a.stat {
        None => {}
        Some(StatAnswer::Swarm(swarm, stats)) => {
            out.extend_from_slice(b",\"stat_result\":");
            put_swarm_stats(out, swarm.as_bytes(), stats);
        }
        Some(StatAnswer::Peer(status)) => {
            out.extend_from_slice(b",\"stat_result\":");
            put_peer_status(out, status);
        }
    }
}

/// Appends the JSON answer to `response` to `out`, as the server wrote it before `answer.rs`.
pub fn encode_response(
    response: &Response,
    transaction_id: Option<&TransactionId>,
    out: &mut Vec<u8>,
) {
    let code = response.error_code();
    out.extend_from_slice(b"{\"PPSPTrackerProtocol\":{\"version\":1,\"response_type\":");
    out.push(if code == ErrorCode::Ok { b'0' } else { b'1' });
    out.extend_from_slice(b",\"error_code\":");
    put_u64(out, u64::from(code.code()));
    if let Some(t) = transaction_id {
        out.extend_from_slice(b",\"transaction_id\":");
        put_str(out, &t.0);
    }
    // RFC 7846 §4.3: errors carry no peer_addr and no swarm_result.
    if let Response::Ok(answer) = response {
        put_answer(out, answer);
    }
    out.extend_from_slice(b"}}");
}
