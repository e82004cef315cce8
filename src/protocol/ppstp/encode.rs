//! Encoding requests (for the load generator and tests) as PPSTP JSON straight into the
//! output buffer, with no intermediate tree, and the JSON helpers they share with the reference
//! answer encoder (`encode_reference.rs`). Answers on the server's hot path are written by
//! `answer.rs`.

use std::io::Write as _;
use std::net::SocketAddr;

use super::TransactionId;
use crate::engine::{
    ActionKind, AddrType, ChunkRange, DisconnectScope, LinkKind, NatAbility, PeerAddr, PeerMode,
    PeerNum, Request, RequestKind, StatTarget,
};

/// Writes a JSON string literal. RFC 8259 §7: `"`, `\` and control characters are escaped;
/// everything else (including non-ASCII UTF-8) is written as it is.
pub(super) fn put_str(out: &mut Vec<u8>, s: &str) {
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
            out.extend_from_slice(b"\\u00");
            out.extend_from_slice(&crate::hex::pair(b));
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
pub(super) const fn needs_escape(w: u64) -> bool {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    (escape_flags(w) & !w) & HIGH != 0
}

/// A word whose high bits (`& 0x8080_8080_8080_8080`) are not all clear exactly when a byte
/// of `w` is below 0x20, `"`, `\\` or not ASCII (0x80 and above). ORing the flags of several
/// words and testing once answers for all of them.
#[inline(always)]
pub(super) const fn escape_flags(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let q = w ^ (ONES * 0x22);
    let b = w ^ (ONES * 0x5c);
    (w.wrapping_sub(ONES * 0x20) & !w)
        | (q.wrapping_sub(ONES) & !q)
        | (b.wrapping_sub(ONES) & !b)
        | w
}

/// Writes identifier bytes as a JSON string: as text when they are UTF-8 (every PPSTP id is),
/// else as lower-case hex (a BitTorrent info-hash or peer id sharing the swarm).
pub(super) fn put_id(out: &mut Vec<u8>, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(s) => put_str(out, s),
        Err(_) => put_hex(out, bytes),
    }
}

pub(super) fn put_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    crate::hex::push(out, bytes);
    out.push(b'"');
}

pub(super) fn put_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Writes `"name":`.
pub(super) fn key(out: &mut Vec<u8>, name: &str) {
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

pub(super) fn put_mode(out: &mut Vec<u8>, mode: PeerMode) {
    out.extend_from_slice(match mode {
        PeerMode::Seeder => b"\"SEEDER\"",
        PeerMode::Leech => b"\"LEECH\"",
    });
}

/// RFC 7846 §3.2.4 `ppsp_tp_peer_addr_t`, with `asn` as a string as the schema says.
pub(super) fn put_peer_addr(out: &mut Vec<u8>, a: &PeerAddr) {
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

pub(super) fn put_peer_addr_list(out: &mut Vec<u8>, addrs: &[PeerAddr]) {
    out.push(b'[');
    for (i, a) in addrs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        put_peer_addr(out, a);
    }
    out.push(b']');
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
