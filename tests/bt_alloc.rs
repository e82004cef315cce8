//! The BEP 15 hot path allocates nothing: once a worker's answer and peer-list buffers have
//! grown, re-announces of known peers and scrapes through `UdpFrontEnd::handle_with` over the
//! real engine make no heap allocation (counted by a global allocator wrapper, per thread).

use std::net::SocketAddr;

use ppsp_tracker::engine::{Engine, EngineConfig, Time};
use ppsp_tracker::protocol::bt_udp::tracker::{AnnounceEvent, Family};
use ppsp_tracker::protocol::bt_udp::wire::{
    decode_response, AnnounceRequest, ConnectRequest, InfoHashes, ScrapeRequest, UdpRequest,
    UdpResponse,
};
use ppsp_tracker::protocol::bt_udp::{BtLimits, ConnectionIdSecret, Outcome, UdpFrontEnd};

mod alloc_support;
use alloc_support::allocations;

#[test]
fn re_announces_and_scrapes_allocate_nothing() {
    let engine = Engine::new(&EngineConfig::default());
    let front = UdpFrontEnd::new(ConnectionIdSecret::from_bytes([9; 16]), BtLimits::default());
    let now = Time::from_secs(1000);
    let mut out = Vec::with_capacity(2048);
    let mut scratch = ppsp_tracker::engine::CompactPeers::default();
    let hash = [0x5a; 20];

    // Ten peers from ten addresses join the swarm.
    let mut packets = Vec::new();
    for i in 1..=10u8 {
        let src: SocketAddr = ([10, 0, 0, i], 40_000).into();
        let mut pkt = Vec::new();
        ConnectRequest { transaction_id: 1 }.encode(&mut pkt);
        assert_eq!(
            front.handle_with(&engine, src, &pkt, now, &mut out, &mut scratch),
            Outcome::Reply(ppsp_tracker::protocol::bt_udp::Reply::Connect)
        );
        let cid = match decode_response(&out, Family::V4, 0) {
            Ok(UdpResponse::Connect(c)) => c.connection_id,
            other => panic!("{other:?}"),
        };
        let mut pkt = Vec::new();
        UdpRequest::Announce(AnnounceRequest {
            connection_id: cid,
            transaction_id: 2,
            info_hash: hash,
            peer_id: [b'p'; 20],
            downloaded: 0,
            left: u64::from(i % 2),
            uploaded: 0,
            event: AnnounceEvent::None,
            ip_address: 0,
            key: 0,
            num_want: -1,
            port: 6881,
        })
        .encode(&mut pkt);
        let mut scrape = Vec::new();
        UdpRequest::Scrape(ScrapeRequest {
            connection_id: cid,
            transaction_id: 3,
            info_hashes: InfoHashes::new(&hash).expect("one hash"),
        })
        .encode(&mut scrape);
        packets.push((src, pkt, scrape));
    }
    for (src, pkt, scrape) in &packets {
        front.handle_with(&engine, *src, pkt, now, &mut out, &mut scratch);
        front.handle_with(&engine, *src, scrape, now, &mut out, &mut scratch);
    }
    assert_eq!(engine.counts().peers, 10);

    let before = allocations();
    for round in 0..50u64 {
        for (src, pkt, scrape) in &packets {
            let t = now.saturating_add_millis(round);
            let o = front.handle_with(&engine, *src, pkt, t, &mut out, &mut scratch);
            assert!(matches!(o, Outcome::Reply(_)), "{o:?}");
            let o = front.handle_with(&engine, *src, scrape, t, &mut out, &mut scratch);
            assert!(matches!(o, Outcome::Reply(_)), "{o:?}");
        }
    }
    let made = allocations() - before;
    assert_eq!(
        made, 0,
        "{made} allocations in 1000 re-announces and scrapes"
    );
    match decode_response(&out, Family::V4, 100) {
        Ok(UdpResponse::Scrape(s)) => assert_eq!(s.entries[0].seeders + s.entries[0].leechers, 10),
        other => panic!("{other:?}"),
    }
}
