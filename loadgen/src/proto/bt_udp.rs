//! BEP 15 (UDP tracker protocol) packets as a client builds and reads them: connect, announce
//! and scrape requests, and the first fields of every reply. The layouts are fixed big-endian
//! structs; offsets below follow the tables of BEP 15.

use crate::workload::{Op, OpKind, Population};

/// BEP 15: the magic constant of a connect request.
pub const PROTOCOL_ID: u64 = 0x0417_2710_1980;
pub const ACTION_CONNECT: u32 = 0;
pub const ACTION_ANNOUNCE: u32 = 1;
pub const ACTION_SCRAPE: u32 = 2;
pub const ACTION_ERROR: u32 = 3;
/// BEP 15 announce events.
pub const EVENT_NONE: u32 = 0;
pub const EVENT_STARTED: u32 = 2;
pub const EVENT_STOPPED: u32 = 3;

/// Connect request: protocol_id u64, action u32, transaction_id u32 (16 bytes).
pub fn encode_connect(tid: u32, out: &mut Vec<u8>) {
    out.extend_from_slice(&PROTOCOL_ID.to_be_bytes());
    out.extend_from_slice(&ACTION_CONNECT.to_be_bytes());
    out.extend_from_slice(&tid.to_be_bytes());
}

/// Announce request (98 bytes): connection_id, action 1, transaction_id, info_hash, peer_id,
/// downloaded, left, uploaded, event, IP (0: use the source), key, num_want, port.
pub fn encode_announce(
    connection_id: u64,
    tid: u32,
    op: &Op,
    pop: &Population,
    num_want: u32,
    out: &mut Vec<u8>,
) {
    let (peer, swarm) = (op.peer, op.swarm);
    let event = match op.kind {
        OpKind::Started => EVENT_STARTED,
        OpKind::Stopped => EVENT_STOPPED,
        _ => EVENT_NONE,
    };
    let left: u64 = if pop.is_seeder(peer) { 0 } else { 1 << 20 };
    out.extend_from_slice(&connection_id.to_be_bytes());
    out.extend_from_slice(&ACTION_ANNOUNCE.to_be_bytes());
    out.extend_from_slice(&tid.to_be_bytes());
    out.extend_from_slice(&pop.swarm_id(swarm));
    out.extend_from_slice(&pop.peer_id(peer));
    out.extend_from_slice(&0u64.to_be_bytes()); // downloaded
    out.extend_from_slice(&left.to_be_bytes());
    out.extend_from_slice(&0u64.to_be_bytes()); // uploaded
    out.extend_from_slice(&event.to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes()); // IP address: default
    out.extend_from_slice(&peer.to_be_bytes()); // key
    out.extend_from_slice(&(num_want.min(i32::MAX as u32)).to_be_bytes());
    out.extend_from_slice(&pop.peer_port(peer).to_be_bytes());
}

/// Scrape request for one info-hash: connection_id, action 2, transaction_id, info_hash.
pub fn encode_scrape(
    connection_id: u64,
    tid: u32,
    swarm: u32,
    pop: &Population,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(&connection_id.to_be_bytes());
    out.extend_from_slice(&ACTION_SCRAPE.to_be_bytes());
    out.extend_from_slice(&tid.to_be_bytes());
    out.extend_from_slice(&pop.swarm_id(swarm));
}

/// The parts of a reply the generator needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UdpReply {
    Connect {
        connection_id: u64,
    },
    /// Announce reply; `peers` is how many peer entries followed the 20-byte header.
    Announce {
        peers: usize,
    },
    Scrape,
    Error,
}

fn be32(buf: &[u8], at: usize) -> Option<u32> {
    let b: [u8; 4] = buf.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_be_bytes(b))
}

/// Reads a reply: its transaction id and what it is. `None` when it is too short or of an
/// unknown action. `ipv6` selects 18-byte peer entries (BEP 15 over IPv6) instead of 6.
pub fn decode_reply(buf: &[u8], ipv6: bool) -> Option<(u32, UdpReply)> {
    let action = be32(buf, 0)?;
    let tid = be32(buf, 4)?;
    let reply = match action {
        ACTION_CONNECT => {
            let b: [u8; 8] = buf.get(8..16)?.try_into().ok()?;
            UdpReply::Connect {
                connection_id: u64::from_be_bytes(b),
            }
        }
        ACTION_ANNOUNCE => {
            if buf.len() < 20 {
                return None;
            }
            let entry = if ipv6 { 18 } else { 6 };
            UdpReply::Announce {
                peers: (buf.len() - 20) / entry,
            }
        }
        ACTION_SCRAPE => {
            if buf.len() < 20 {
                return None;
            }
            UdpReply::Scrape
        }
        ACTION_ERROR => UdpReply::Error,
        _ => return None,
    };
    Some((tid, reply))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{Popularity, PopulationSpec};

    #[test]
    fn request_layouts_match_bep15() {
        let pop = Population::new(PopulationSpec {
            swarms: 2,
            peers: 2,
            popularity: Popularity::Uniform,
            seeder_share: 1.0,
            seed: 8,
        })
        .unwrap();
        let mut c = Vec::new();
        encode_connect(0xdead_beef, &mut c);
        assert_eq!(
            c,
            [0, 0, 0x04, 0x17, 0x27, 0x10, 0x19, 0x80, 0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef]
        );
        let mut a = Vec::new();
        encode_announce(
            7,
            9,
            &Op {
                kind: OpKind::Started,
                peer: 1,
                swarm: 0,
            },
            &pop,
            50,
            &mut a,
        );
        assert_eq!(a.len(), 98);
        assert_eq!(&a[..8], &7u64.to_be_bytes());
        assert_eq!(be32(&a, 8), Some(1));
        assert_eq!(be32(&a, 12), Some(9));
        assert_eq!(&a[16..36], &pop.swarm_id(0));
        assert_eq!(&a[36..56], &pop.peer_id(1));
        assert_eq!(&a[64..72], &0u64.to_be_bytes(), "seeder: left = 0");
        assert_eq!(be32(&a, 80), Some(EVENT_STARTED));
        assert_eq!(be32(&a, 92), Some(50));
        assert_eq!(&a[96..98], &pop.peer_port(1).to_be_bytes());
        let mut s = Vec::new();
        encode_scrape(7, 10, 1, &pop, &mut s);
        assert_eq!(s.len(), 36);
        assert_eq!(be32(&s, 8), Some(2));
    }

    #[test]
    fn replies_decode_and_short_ones_are_refused() {
        let mut r = vec![0, 0, 0, 0, 0, 0, 0, 5];
        r.extend_from_slice(&42u64.to_be_bytes());
        assert_eq!(
            decode_reply(&r, false),
            Some((5, UdpReply::Connect { connection_id: 42 }))
        );
        assert_eq!(decode_reply(&r[..12], false), None);
        let mut a = vec![0, 0, 0, 1, 0, 0, 0, 6];
        a.extend_from_slice(&[0; 12]);
        a.extend_from_slice(&[127, 0, 0, 1, 0x1a, 0xe1, 127, 0, 0, 2, 0x1a, 0xe1]);
        assert_eq!(
            decode_reply(&a, false),
            Some((6, UdpReply::Announce { peers: 2 }))
        );
        assert_eq!(
            decode_reply(&[0, 0, 0, 3, 0, 0, 0, 1, b'x'], false),
            Some((1, UdpReply::Error))
        );
        assert_eq!(decode_reply(&[0, 0, 0, 9, 0, 0, 0, 1], false), None);
        assert_eq!(decode_reply(&[0, 0, 0], false), None);
    }
}
