//! Bad input to the BitTorrent trackers over real sockets: every malformed, forged or
//! oversized request gets the protocol's own error (BEP 15 error action, bencoded
//! `failure reason`) or is dropped, is counted in `/metrics`, and changes nothing.

mod bt_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bt_support::{http_get, start_server, UdpClient};
use ppsp_tracker::protocol::bt_udp::tracker::{AnnounceEvent, Family};
use ppsp_tracker::protocol::bt_udp::wire::{
    decode_response, AnnounceRequest, InfoHashes, ScrapeRequest, UdpRequest, UdpResponse,
    PROTOCOL_ID,
};
use ppsp_tracker::server::Server;

fn metric(server: &Server, line_prefix: &str) -> u64 {
    let text = server.metrics_text();
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no metric {line_prefix}\n{text}"))
}

fn udp_outcome(server: &Server, outcome: &str) -> u64 {
    metric(
        server,
        &format!("ppsp_bt_udp_requests_total{{outcome=\"{outcome}\"}}"),
    )
}

fn http_outcome(server: &Server, outcome: &str) -> u64 {
    metric(
        server,
        &format!("ppsp_bt_http_requests_total{{outcome=\"{outcome}\"}}"),
    )
}

fn error_message(answer: &[u8]) -> String {
    match decode_response(answer, Family::V4, 0) {
        Ok(UdpResponse::Error(e)) => String::from_utf8_lossy(e.message).into_owned(),
        other => panic!("expected a BEP 15 error, got {other:?}"),
    }
}

fn announce_packet(connection_id: u64) -> Vec<u8> {
    let mut pkt = Vec::new();
    UdpRequest::Announce(AnnounceRequest {
        connection_id,
        transaction_id: 5,
        info_hash: [0x33; 20],
        peer_id: [b'x'; 20],
        downloaded: 0,
        left: 10,
        uploaded: 0,
        event: AnnounceEvent::Started,
        ip_address: 0,
        key: 0,
        num_want: -1,
        port: 7000,
    })
    .encode(&mut pkt);
    pkt
}

#[test]
fn udp_bad_packets_are_dropped_or_refused_counted_and_change_nothing() {
    let server = start_server(&[]);
    let client = UdpClient::new(server.bt_udp_addrs()[0]);
    let quiet = Duration::from_millis(300);
    let wait = Duration::from_secs(5);

    // Shorter than a header: nothing to answer.
    assert_eq!(client.exchange(&[1, 2, 3, 4, 5], quiet), None);
    // A connect without the BEP 15 protocol id is not BEP 15.
    let mut wrong_protocol = Vec::new();
    wrong_protocol.extend_from_slice(&(PROTOCOL_ID + 1).to_be_bytes());
    wrong_protocol.extend_from_slice(&0u32.to_be_bytes());
    wrong_protocol.extend_from_slice(&1u32.to_be_bytes());
    assert_eq!(client.exchange(&wrong_protocol, quiet), None);
    // A forged connection id.
    let answer = client
        .exchange(&announce_packet(0x0123_4567_89ab_cdef), wait)
        .expect("error answer");
    assert_eq!(error_message(&answer), "connection id expired");
    // An announce cut short, with a valid id.
    let cid = client.connect();
    let mut short = announce_packet(cid);
    short.truncate(60);
    let answer = client.exchange(&short, wait).expect("error answer");
    assert_eq!(error_message(&answer), "malformed request");
    // An unknown action.
    let mut unknown = Vec::new();
    unknown.extend_from_slice(&cid.to_be_bytes());
    unknown.extend_from_slice(&9u32.to_be_bytes());
    unknown.extend_from_slice(&1u32.to_be_bytes());
    unknown.extend_from_slice(&[0u8; 24]);
    let answer = client.exchange(&unknown, wait).expect("error answer");
    assert_eq!(error_message(&answer), "unknown action");
    // A scrape of more info-hashes than allowed (74 by default).
    let hashes = vec![0x44u8; 20 * 75];
    let mut scrape = Vec::new();
    UdpRequest::Scrape(ScrapeRequest {
        connection_id: cid,
        transaction_id: 6,
        info_hashes: InfoHashes::new(&hashes).expect("whole hashes"),
    })
    .encode(&mut scrape);
    let answer = client.exchange(&scrape, wait).expect("error answer");
    assert_eq!(error_message(&answer), "too many info_hashes");
    // Scrapes longer than a receive buffer (2,004 bytes), which the kernel cuts: the error
    // still comes back, on either back-end; one more with a forged connection id.
    for (count, connection_id, message) in [
        (150, cid, "too many info_hashes"),
        (3_000, cid, "too many info_hashes"),
        (150, cid ^ 0x5a5a, "connection id expired"),
    ] {
        let hashes = vec![0x45u8; 20 * count];
        let mut big = Vec::new();
        UdpRequest::Scrape(ScrapeRequest {
            connection_id,
            transaction_id: 7,
            info_hashes: InfoHashes::new(&hashes).expect("whole hashes"),
        })
        .encode(&mut big);
        let answer = client
            .exchange(&big, wait)
            .expect("error answer to an oversized scrape");
        assert_eq!(error_message(&answer), message, "{count} hashes");
        assert_eq!(&answer[4..8], &7u32.to_be_bytes(), "its transaction id");
    }

    assert_eq!(udp_outcome(&server, "drop_too_short"), 1);
    assert_eq!(udp_outcome(&server, "drop_bad_protocol_id"), 1);
    assert_eq!(udp_outcome(&server, "connection_id"), 2);
    assert_eq!(udp_outcome(&server, "malformed"), 1);
    assert_eq!(udp_outcome(&server, "unknown_action"), 1);
    assert_eq!(udp_outcome(&server, "too_many_hashes"), 3);
    assert_eq!(udp_outcome(&server, "announce"), 0);
    // Nothing was registered by any of it.
    let status = server.status();
    assert_eq!(status["peers"], 0, "{status}");
    assert_eq!(status["swarms"], 0, "{status}");
    // And the tracker still works.
    let ok = client
        .exchange(&announce_packet(cid), wait)
        .expect("answer");
    assert!(matches!(
        decode_response(&ok, Family::V4, 10),
        Ok(UdpResponse::Announce(_))
    ));
    assert_eq!(server.status()["peers"], 1);
    server.shutdown();
}

#[test]
fn http_bad_requests_get_failure_reasons_are_counted_and_change_nothing() {
    let server = start_server(&[]);
    let addr = server.bt_http_addrs()[0];
    let failure = |body: &[u8]| {
        assert!(
            body.starts_with(b"d14:failure reason"),
            "{}",
            String::from_utf8_lossy(body)
        );
    };

    // Malformed query strings.
    for target in [
        "/announce?info_hash=short&peer_id=aaaaaaaaaaaaaaaaaaaa&port=1&left=0",
        "/announce?peer_id=aaaaaaaaaaaaaaaaaaaa&port=1",
        "/announce?info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=aaaaaaaaaaaaaaaaaaaa&port=notaport",
        "/announce?info_hash=%zz",
    ] {
        let (status, body) = http_get(addr, target);
        assert_eq!(status, 200, "{target}");
        failure(&body);
    }
    // Too many hashes in one scrape.
    // 75 distinct printable 20-byte hashes (the head stays under its 4 KiB limit).
    let many: String = (0..75)
        .map(|i| format!("info_hash={i:02}{}&", "h".repeat(18)))
        .collect();
    let (status, body) = http_get(addr, &format!("/scrape?{many}"));
    assert_eq!(status, 200);
    failure(&body);
    // Unknown path.
    let (status, body) = http_get(addr, "/nothing-here");
    assert_eq!(status, 404);
    failure(&body);
    // Not HTTP at all: 400 and the connection is closed.
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(b"\x00\x01\x02 garbage\r\n\r\n").expect("send");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    assert!(
        raw.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    // A POST is not a tracker request.
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(b"POST /announce HTTP/1.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    assert!(
        raw.starts_with(b"HTTP/1.1 405"),
        "{}",
        String::from_utf8_lossy(&raw)
    );

    assert_eq!(http_outcome(&server, "bad_query"), 4);
    assert_eq!(http_outcome(&server, "too_many_hashes"), 1);
    assert_eq!(http_outcome(&server, "unknown_path"), 1);
    assert_eq!(http_outcome(&server, "http_fault"), 2);
    assert_eq!(http_outcome(&server, "announce"), 0);
    let status = server.status();
    assert_eq!(status["peers"], 0, "{status}");
    assert_eq!(status["swarms"], 0, "{status}");
    server.shutdown();
}
