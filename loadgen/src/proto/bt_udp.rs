//! BEP 15 (UDP tracker protocol) packets as a client builds and reads them. Requests are written
//! by the tracker's own codec ([`ppsp_tracker::protocol::bt_udp::wire`]); replies are read here,
//! only as far as the generator needs (action, transaction id, connection id, peer count), since
//! the codec decodes requests and encodes replies, the server's side.

use ppsp_tracker::protocol::bt_udp::tracker::AnnounceEvent;
use ppsp_tracker::protocol::bt_udp::wire;

use crate::workload::{Op, OpKind, Population};

pub use wire::action::{
    ANNOUNCE as ACTION_ANNOUNCE, CONNECT as ACTION_CONNECT, ERROR as ACTION_ERROR,
    SCRAPE as ACTION_SCRAPE,
};
pub use wire::PROTOCOL_ID;

/// Connect request: protocol_id u64, action u32, transaction_id u32 (16 bytes), written by the
/// tracker's own BEP 15 codec.
pub fn encode_connect(tid: u32, out: &mut Vec<u8>) {
    wire::ConnectRequest {
        transaction_id: tid,
    }
    .encode(out);
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
    let event = match op.kind {
        OpKind::Started => AnnounceEvent::Started,
        OpKind::Stopped => AnnounceEvent::Stopped,
        _ => AnnounceEvent::None,
    };
    wire::AnnounceRequest {
        connection_id,
        transaction_id: tid,
        info_hash: pop.swarm_id(op.swarm),
        peer_id: pop.peer_id(op.peer),
        downloaded: 0,
        left: if pop.is_seeder(op.peer) { 0 } else { 1 << 20 },
        uploaded: 0,
        event,
        ip_address: 0,
        key: op.peer,
        num_want: num_want.min(i32::MAX as u32) as i32,
        port: pop.peer_port(op.peer),
    }
    .encode(out);
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
    /// An announce or scrape reply shorter than BEP 15's 20-byte header, or a connect reply
    /// without its connection id: answered, but malformed.
    Short,
}

fn be32(buf: &[u8], at: usize) -> Option<u32> {
    let b: [u8; 4] = buf.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_be_bytes(b))
}

/// Reads a reply: its transaction id and what it is. `None` when it is shorter than the
/// 8-byte action + transaction id header or of an unknown action. `ipv6` selects 18-byte peer
/// entries (BEP 15 over IPv6) instead of 6.
pub fn decode_reply(buf: &[u8], ipv6: bool) -> Option<(u32, UdpReply)> {
    let action = be32(buf, 0)?;
    let tid = be32(buf, 4)?;
    let reply = match action {
        ACTION_CONNECT => match buf.get(8..16).and_then(|b| b.try_into().ok()) {
            Some(b) => UdpReply::Connect {
                connection_id: u64::from_be_bytes(b),
            },
            None => UdpReply::Short,
        },
        ACTION_ANNOUNCE if buf.len() < 20 => UdpReply::Short,
        ACTION_ANNOUNCE => {
            let entry = if ipv6 { 18 } else { 6 };
            UdpReply::Announce {
                peers: (buf.len() - 20) / entry,
            }
        }
        ACTION_SCRAPE if buf.len() < 20 => UdpReply::Short,
        ACTION_SCRAPE => UdpReply::Scrape,
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
        assert_eq!(be32(&a, 80), Some(AnnounceEvent::Started.code()));
        assert_eq!(be32(&a, 92), Some(50));
        assert_eq!(&a[96..98], &pop.peer_port(1).to_be_bytes());
        let mut s = Vec::new();
        encode_scrape(7, 10, 1, &pop, &mut s);
        assert_eq!(s.len(), 36);
        assert_eq!(be32(&s, 8), Some(2));
    }

    /// The tracker's request decoder reads back what the generator sends, and the generator
    /// reads the tracker's replies.
    #[test]
    fn agrees_with_the_tracker_codec() {
        let pop = Population::new(PopulationSpec {
            swarms: 3,
            peers: 3,
            popularity: Popularity::Uniform,
            seeder_share: 0.0,
            seed: 2,
        })
        .unwrap();
        let op = Op {
            kind: OpKind::Stopped,
            peer: 2,
            swarm: pop.swarm_of(2),
        };
        let mut a = Vec::new();
        encode_announce(99, 5, &op, &pop, 30, &mut a);
        match wire::decode_request(&a).unwrap() {
            wire::UdpRequest::Announce(r) => {
                assert_eq!(r.connection_id, 99);
                assert_eq!(r.info_hash, pop.swarm_id(op.swarm));
                assert_eq!(r.peer_id, pop.peer_id(2));
                assert_eq!(r.event, AnnounceEvent::Stopped);
                assert_eq!(r.left, 1 << 20);
                assert_eq!(r.num_want(), Some(30));
            }
            other => panic!("not an announce: {other:?}"),
        }
        let mut s = Vec::new();
        encode_scrape(99, 6, 1, &pop, &mut s);
        assert!(matches!(
            wire::decode_request(&s).unwrap(),
            wire::UdpRequest::Scrape(r) if r.info_hashes.len() == 1 && r.transaction_id == 6
        ));
        let mut reply = Vec::new();
        wire::ConnectResponse {
            transaction_id: 8,
            connection_id: 0x1234,
        }
        .encode(&mut reply);
        assert_eq!(
            decode_reply(&reply, false),
            Some((
                8,
                UdpReply::Connect {
                    connection_id: 0x1234
                }
            ))
        );
    }

    #[test]
    fn replies_decode_and_short_ones_are_refused() {
        let mut r = vec![0, 0, 0, 0, 0, 0, 0, 5];
        r.extend_from_slice(&42u64.to_be_bytes());
        assert_eq!(
            decode_reply(&r, false),
            Some((5, UdpReply::Connect { connection_id: 42 }))
        );
        assert_eq!(decode_reply(&r[..12], false), Some((5, UdpReply::Short)));
        assert_eq!(
            decode_reply(&[0, 0, 0, 1, 0, 0, 0, 2], false),
            Some((2, UdpReply::Short)),
            "an announce reply without interval and counts"
        );
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
