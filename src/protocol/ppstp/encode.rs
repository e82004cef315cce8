//! Encoding: engine responses (and, for the load generator and tests, requests) written as
//! PPSTP JSON straight into the output buffer, with no intermediate tree.

use std::io::Write as _;
use std::net::SocketAddr;

use super::TransactionId;
use crate::engine::{
    ActionKind, AddrType, Answer, ChunkRange, DisconnectScope, ErrorCode, LinkKind, NatAbility,
    PeerAddr, PeerInfo, PeerMode, PeerNum, PeerState, PeerStatus, Request, RequestKind, Response,
    StatAnswer, StatTarget, SwarmResult, SwarmStats,
};

/// Writes a JSON string literal. RFC 8259 §7: `"`, `\` and control characters are escaped;
/// everything else (including non-ASCII UTF-8) is written as it is.
fn put_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut plain_from = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Skip eight plain bytes at a time: ids and addresses rarely need escaping.
        while let Some(word) = bytes.get(i..i + 8) {
            let mut w = [0u8; 8];
            w.copy_from_slice(word);
            if needs_escape(u64::from_le_bytes(w)) {
                break;
            }
            i += 8;
        }
        let Some(&b) = bytes.get(i) else {
            break;
        };
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => b"",
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&bytes[plain_from..i]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
        i += 1;
        plain_from = i;
    }
    out.extend_from_slice(&bytes[plain_from..]);
    out.push(b'"');
}

/// Whether any of the eight bytes of `w` is below 0x20, `"` or `\\` (a JSON string must
/// escape those). Exact as a yes/no answer (the "has a byte less than n" word trick).
const fn needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let control = w.wrapping_sub(ONES * 0x20) & !w;
    let q = w ^ (ONES * 0x22);
    let quote = q.wrapping_sub(ONES) & !q;
    let b = w ^ (ONES * 0x5c);
    let backslash = b.wrapping_sub(ONES) & !b;
    (control | quote | backslash) & HIGH != 0
}

/// Writes identifier bytes as a JSON string: as text when they are UTF-8 (every PPSTP id is),
/// else as lower-case hex (a BitTorrent info-hash or peer id sharing the swarm).
fn put_id(out: &mut Vec<u8>, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(s) => put_str(out, s),
        Err(_) => put_hex(out, bytes),
    }
}

fn put_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for &b in bytes {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 0xf)]);
    }
    out.push(b'"');
}

fn put_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Writes `"name":`.
fn key(out: &mut Vec<u8>, name: &str) {
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

fn put_mode(out: &mut Vec<u8>, mode: PeerMode) {
    out.extend_from_slice(match mode {
        PeerMode::Seeder => b"\"SEEDER\"",
        PeerMode::Leech => b"\"LEECH\"",
    });
}

/// RFC 7846 §3.2.4 `ppsp_tp_peer_addr_t`, with `asn` as a string as the schema says.
fn put_peer_addr(out: &mut Vec<u8>, a: &PeerAddr) {
    out.extend_from_slice(b"{\"ip_address\":{\"address_type\":");
    out.extend_from_slice(match a.addr {
        SocketAddr::V4(_) => b"\"ipv4\"",
        SocketAddr::V6(_) => b"\"ipv6\"",
    });
    out.extend_from_slice(b",\"address\":\"");
    match a.addr {
        SocketAddr::V4(v4) => {
            // RFC 3986 IPv4address: dotted decimal, written without the formatting machinery.
            let mut num = itoa::Buffer::new();
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                out.extend_from_slice(num.format(octet).as_bytes());
            }
        }
        SocketAddr::V6(v6) => {
            // Display of Ipv6Addr is the RFC 5952 text form; writing into a Vec cannot fail.
            let _ = write!(out, "{}", v6.ip());
        }
    }
    out.extend_from_slice(b"\"},\"port\":");
    put_u64(out, u64::from(a.addr.port()));
    out.extend_from_slice(b",\"priority\":");
    put_u64(out, u64::from(a.priority));
    out.extend_from_slice(b",\"type\":");
    out.extend_from_slice(match a.kind {
        AddrType::Host => b"\"HOST\"",
        AddrType::Reflexive => b"\"REFLEXIVE\"",
        AddrType::Proxy => b"\"PROXY\"",
    });
    if let Some(c) = a.connection {
        out.extend_from_slice(b",\"connection\":");
        out.extend_from_slice(match c {
            LinkKind::Wired => b"\"wired\"",
            LinkKind::Wireless => b"\"wireless\"",
        });
    }
    if let Some(asn) = a.asn {
        out.extend_from_slice(b",\"asn\":\"");
        put_u64(out, u64::from(asn));
        out.push(b'"');
    }
    if a.ppsp_pp {
        out.extend_from_slice(b",\"peer_protocol\":\"PPSP-PP\"");
    }
    out.push(b'}');
}

fn put_peer_addr_list(out: &mut Vec<u8>, addrs: &[PeerAddr]) {
    out.push(b'[');
    for (i, a) in addrs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        put_peer_addr(out, a);
    }
    out.push(b']');
}

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
    put_id(out, p.peer_id.as_bytes());
    if !p.addrs.is_empty() {
        out.extend_from_slice(b",\"peer_addr\":");
        put_peer_addrs(out, &p.addrs);
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

pub(super) fn encode_response(
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

fn put_peer_num(out: &mut Vec<u8>, p: &PeerNum) {
    out.push(b'{');
    let mut first = true;
    let mut member = |out: &mut Vec<u8>, name: &str| {
        if !first {
            out.push(b',');
        }
        first = false;
        key(out, name);
    };
    if let Some(n) = p.peer_count {
        member(out, "peer_count");
        put_u64(out, u64::from(n));
    }
    if let Some(nat) = p.ability_nat {
        member(out, "ability_nat");
        out.extend_from_slice(match nat {
            NatAbility::NoNat => b"\"NO_NAT\"",
            NatAbility::Stun => b"\"STUN\"",
            NatAbility::Turn => b"\"TURN\"",
        });
    }
    for (name, value) in [
        ("concurrent_links", p.concurrent_links),
        ("online_time", p.online_time),
        ("upload_bandwidth", p.upload_bandwidth),
    ] {
        if let Some(v) = value {
            member(out, name);
            put_u64(out, u64::from(v));
        }
    }
    out.push(b'}');
}

fn put_chunks(out: &mut Vec<u8>, chunks: &[ChunkRange]) {
    out.push(b'[');
    for (i, c) in chunks.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'[');
        put_u64(out, c.start);
        out.push(b',');
        put_u64(out, c.end);
        out.push(b']');
    }
    out.push(b']');
}

/// The request in RFC 7846's schema form (arrays where arrays are specified, FIND members
/// inside `find`), with the extension types of protocols.md §1.
pub(super) fn encode_request(request: &Request, transaction_id: &TransactionId, out: &mut Vec<u8>) {
    let request_type = match &request.kind {
        RequestKind::Connect { .. } => "CONNECT",
        RequestKind::Find { .. } => "FIND",
        RequestKind::StatReport { .. } => "STAT_REPORT",
        // PPSTP has no announce: a client sends the nearest request, a JOIN.
        RequestKind::Join { .. } | RequestKind::Announce { .. } => "JOIN",
        RequestKind::Leave { .. } => "LEAVE",
        RequestKind::Disconnect { .. } => "DISCONNECT",
        RequestKind::Keepalive => "KEEPALIVE",
        RequestKind::JoinChunk { .. } => "JOIN_CHUNK",
        RequestKind::StatQuery { .. } => "STAT_QUERY",
    };
    out.extend_from_slice(b"{\"PPSPTrackerProtocol\":{\"version\":1,\"request_type\":\"");
    out.extend_from_slice(request_type.as_bytes());
    out.extend_from_slice(b"\",\"transaction_id\":");
    put_str(out, &transaction_id.0);
    out.extend_from_slice(b",\"peer_id\":");
    put_id(out, request.peer_id.as_bytes());
    match &request.kind {
        RequestKind::Connect {
            peer_num,
            addrs,
            actions,
        } => {
            out.extend_from_slice(b",\"connect\":{");
            if let Some(p) = peer_num {
                key(out, "peer_num");
                put_peer_num(out, p);
                out.push(b',');
            }
            if !addrs.is_empty() {
                key(out, "peer_addr");
                put_peer_addr_list(out, addrs);
                out.push(b',');
            }
            key(out, "swarm_action");
            out.push(b'[');
            for (i, a) in actions.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(b"{\"swarm_id\":");
                put_id(out, a.swarm_id.as_bytes());
                out.extend_from_slice(match a.action {
                    ActionKind::Join => b",\"action\":\"JOIN\",\"peer_mode\":",
                    ActionKind::Leave => b",\"action\":\"LEAVE\",\"peer_mode\":",
                });
                put_mode(out, a.mode);
                out.push(b'}');
            }
            out.extend_from_slice(b"]}");
        }
        RequestKind::Find {
            swarm_id,
            peer_num,
            chunks,
        } => {
            out.extend_from_slice(b",\"find\":{\"swarm_id\":");
            put_id(out, swarm_id.as_bytes());
            if let Some(p) = peer_num {
                out.extend_from_slice(b",\"peer_num\":");
                put_peer_num(out, p);
            }
            if !chunks.is_empty() {
                out.extend_from_slice(b",\"chunks\":");
                put_chunks(out, chunks);
            }
            out.push(b'}');
        }
        RequestKind::StatReport { stats } => {
            // RFC 7846 §4.1.3: no statistics group makes the report a keep-alive.
            if !stats.is_empty() {
                out.extend_from_slice(b",\"stat_report\":{\"type\":\"STREAM_STATS\",\"stat\":[");
                for (i, s) in stats.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.push(b'{');
                    if let Some(swarm) = &s.swarm_id {
                        key(out, "swarm_id");
                        put_id(out, swarm.as_bytes());
                        out.push(b',');
                    }
                    key(out, "uploaded_bytes");
                    put_u64(out, s.uploaded_bytes);
                    out.extend_from_slice(b",\"downloaded_bytes\":");
                    put_u64(out, s.downloaded_bytes);
                    out.extend_from_slice(b",\"available_bandwidth\":");
                    put_u64(out, s.available_bandwidth);
                    out.extend_from_slice(b",\"concurrent_links\":");
                    put_u64(out, u64::from(s.concurrent_links));
                    out.push(b'}');
                }
                out.extend_from_slice(b"]}");
            }
        }
        RequestKind::Join {
            swarm_id,
            mode,
            peer_num,
        }
        | RequestKind::Announce {
            swarm_id,
            mode,
            peer_num,
            ..
        } => {
            out.extend_from_slice(b",\"join\":{\"swarm_id\":");
            put_id(out, swarm_id.as_bytes());
            out.extend_from_slice(b",\"peer_mode\":");
            put_mode(out, *mode);
            if let Some(p) = peer_num {
                out.extend_from_slice(b",\"peer_num\":");
                put_peer_num(out, p);
            }
            out.push(b'}');
        }
        RequestKind::Leave { swarm_id } => {
            out.extend_from_slice(b",\"leave\":{\"swarm_id\":");
            put_id(out, swarm_id.as_bytes());
            out.push(b'}');
        }
        RequestKind::Disconnect { scope } => match scope {
            DisconnectScope::AllSwarms => {
                out.extend_from_slice(b",\"disconnect\":{\"swarm_id\":\"ALL\"}");
            }
            DisconnectScope::Deregister => {}
        },
        RequestKind::Keepalive => {}
        RequestKind::JoinChunk { swarm_id, chunks } => {
            out.extend_from_slice(b",\"join_chunk\":{\"swarm_id\":");
            put_id(out, swarm_id.as_bytes());
            out.extend_from_slice(b",\"chunks\":");
            put_chunks(out, chunks);
            out.push(b'}');
        }
        RequestKind::StatQuery { target } => {
            out.extend_from_slice(b",\"stat_query\":{");
            match target {
                StatTarget::Swarm(s) => {
                    key(out, "swarm_id");
                    put_id(out, s.as_bytes());
                }
                StatTarget::Peer(p) => {
                    key(out, "peer_id");
                    put_id(out, p.as_bytes());
                }
            }
            out.push(b'}');
        }
    }
    out.extend_from_slice(b"}}");
}

#[cfg(test)]
mod string_tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The word-at-a-time escaper writes what serde_json writes, for any string.
        #[test]
        fn put_str_matches_serde_json(s in any::<String>(), pad in 0usize..9) {
            let s = format!("{}{s}", "a".repeat(pad));
            let mut out = Vec::new();
            put_str(&mut out, &s);
            let back: String = serde_json::from_slice(&out).expect("valid JSON string");
            prop_assert_eq!(back, s);
        }

        /// The word test agrees with a byte-by-byte check.
        #[test]
        fn needs_escape_is_exact(bytes in any::<[u8; 8]>()) {
            let want = bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
            prop_assert_eq!(needs_escape(u64::from_le_bytes(bytes)), want);
        }
    }
}
