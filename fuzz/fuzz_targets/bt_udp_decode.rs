//! Fuzz target: the BEP 15 UDP decoders and the UDP tracker front-end never panic, and never
//! answer a sender that has not proved its address with more bytes than it sent.
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use ppsp_tracker::engine::{
    AddrType, Answer, ErrorCode, PeerAddr, PeerInfo, PeerMode, Request, RequestKind, Response,
    StatAnswer, StatTarget, SwarmResult, SwarmStats, Time,
};
use ppsp_tracker::protocol::bt_udp::connection_id::DEFAULT_SLOT_MILLIS;
use ppsp_tracker::protocol::bt_udp::tracker::{bt_peer_id, Family};
use ppsp_tracker::protocol::bt_udp::wire::{decode_request, decode_response};
use ppsp_tracker::protocol::bt_udp::{
    BtLimits, ConnectionIdSecret, ConnectionIds, TrackerCore, UdpFrontEnd,
};

/// Answers like an engine with a small swarm of two peers.
struct SmallSwarm;

impl TrackerCore for SmallSwarm {
    fn handle(&self, request: &Request, _now: Time) -> Response {
        let peer = |addr: &str, mode| {
            let addr: SocketAddr = addr.parse().unwrap();
            PeerInfo::new(
                bt_peer_id(addr.ip(), addr.port()),
                mode,
                &[PeerAddr {
                    addr,
                    priority: 1,
                    kind: AddrType::Host,
                    connection: None,
                    asn: None,
                    ppsp_pp: false,
                }],
            )
        };
        match &request.kind {
            RequestKind::Announce { swarm_id, .. } => Response::Ok(Answer {
                reflexive: None,
                swarm_results: vec![SwarmResult {
                    swarm_id: *swarm_id,
                    result: ErrorCode::Ok,
                    peers: Some(vec![
                        peer("198.51.100.1:1000", PeerMode::Seeder),
                        peer("[2001:db8::1]:2000", PeerMode::Leech),
                    ]),
                }],
                stat: Some(StatAnswer::Swarm(
                    *swarm_id,
                    SwarmStats {
                        peers: 2,
                        seeders: 1,
                        leechers: 1,
                        ..SwarmStats::default()
                    },
                )),
            }),
            RequestKind::StatQuery {
                target: StatTarget::Swarm(id),
            } => Response::Ok(Answer {
                stat: Some(StatAnswer::Swarm(
                    *id,
                    SwarmStats {
                        peers: 2,
                        seeders: 1,
                        leechers: 1,
                        ..SwarmStats::default()
                    },
                )),
                ..Answer::default()
            }),
            _ => Response::Err(ErrorCode::Forbidden),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = decode_request(data);
    let _ = decode_response(data, Family::V4, 1024);
    let _ = decode_response(data, Family::V6, 1024);

    let secret = ConnectionIdSecret::from_bytes([0x5a; 16]);
    let front = UdpFrontEnd::new(secret, BtLimits::default());
    let now = Time::from_secs(86_400);
    let mut out = Vec::new();
    for src in ["192.0.2.1:4000", "[2001:db8::9]:4000"] {
        let src: SocketAddr = src.parse().unwrap();
        // As received: the connection id is (almost surely) not valid.
        front.handle(&SmallSwarm, src, data, now, &mut out);
        assert!(out.len() <= data.len().max(16));

        // With a valid connection id, to reach the announce and scrape paths.
        if data.len() >= 8 {
            let mut packet = data.to_vec();
            let id = ConnectionIds::new(secret, DEFAULT_SLOT_MILLIS).issue(src, now);
            packet[..8].copy_from_slice(&id.to_be_bytes());
            front.handle(&SmallSwarm, src, &packet, now, &mut out);
        }
    }
});
