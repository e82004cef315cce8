//! The BitTorrent listeners as configured: listen lists with an IPv4 and an IPv6 address, the
//! bound addresses on `Server` and in `/status`, BEP 15 answering IPv6 peers to IPv6 packets,
//! and keep-alive on the HTTP tracker.

mod bt_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use bt_support::{start_server, url_bytes, UdpClient};
use ppsp_tracker::protocol::bt_udp::tracker::{AnnounceEvent, Family};
use ppsp_tracker::protocol::bt_udp::wire::{
    decode_response, AnnounceRequest, ConnectRequest, PeerList, UdpRequest, UdpResponse,
};

fn ipv6_loopback() -> bool {
    UdpSocket::bind("[::1]:0").is_ok()
}

/// A BEP 15 client on `[::1]`.
fn v6_announce(tracker: SocketAddr, port: u16) -> UdpResponse<'static> {
    let socket = UdpSocket::bind("[::1]:0").expect("bind ::1");
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut pkt = Vec::new();
    ConnectRequest { transaction_id: 1 }.encode(&mut pkt);
    socket.send_to(&pkt, tracker).expect("send");
    let mut buf = [0u8; 1500];
    let (n, _) = socket.recv_from(&mut buf).expect("connect answer");
    let cid = match decode_response(&buf[..n], Family::V6, 0) {
        Ok(UdpResponse::Connect(c)) => c.connection_id,
        other => panic!("expected connect, got {other:?}"),
    };
    let mut pkt = Vec::new();
    UdpRequest::Announce(AnnounceRequest {
        connection_id: cid,
        transaction_id: 2,
        info_hash: [0x66; 20],
        peer_id: [b'6'; 20],
        downloaded: 0,
        left: 1,
        uploaded: 0,
        event: AnnounceEvent::Started,
        ip_address: 0,
        key: 0,
        num_want: -1,
        port,
    })
    .encode(&mut pkt);
    socket.send_to(&pkt, tracker).expect("send");
    let (n, _) = socket.recv_from(&mut buf).expect("announce answer");
    let leaked: &'static [u8] = Box::leak(buf[..n].to_vec().into_boxed_slice());
    decode_response(leaked, Family::V6, 100).expect("valid answer")
}

#[test]
fn ipv4_and_ipv6_listeners_are_bound_listed_and_answer_their_family() {
    if !ipv6_loopback() {
        eprintln!("SKIPPED: no IPv6 loopback on this machine");
        return;
    }
    let server = start_server(&[
        r#"bt_udp.listen=["127.0.0.1:0", "[::1]:0"]"#,
        r#"bt_http.listen=["127.0.0.1:0", "[::1]:0"]"#,
    ]);
    let udp = server.bt_udp_addrs().to_vec();
    let http = server.bt_http_addrs().to_vec();
    assert_eq!(udp.len(), 2);
    assert_eq!(http.len(), 2);
    assert!(udp[0].is_ipv4() && udp[1].is_ipv6(), "{udp:?}");
    assert!(http[0].is_ipv4() && http[1].is_ipv6(), "{http:?}");
    assert!(udp.iter().chain(&http).all(|a| a.port() != 0));

    let status = server.status();
    let listed: Vec<(String, String)> = status["listeners"]
        .as_array()
        .expect("listeners")
        .iter()
        .map(|l| {
            (
                l["name"].as_str().unwrap_or("").to_owned(),
                l["addr"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    for a in &udp {
        assert!(
            listed.contains(&("bt_udp".to_owned(), a.to_string())),
            "{listed:?}"
        );
    }
    for a in &http {
        assert!(
            listed.contains(&("bt_http".to_owned(), a.to_string())),
            "{listed:?}"
        );
    }

    // Two IPv6 peers and one IPv4 peer in one swarm: an IPv6 announce lists the other IPv6
    // peer in 18-byte entries, never the IPv4 one (BEP 15: the family of the packet).
    let v4 = UdpClient::new(udp[0]);
    let cid = v4.connect();
    match v4.announce(cid, [0x66; 20], 4444, 1, AnnounceEvent::Started) {
        UdpResponse::Announce(a) => assert_eq!(a.peers, PeerList::V4(Vec::new())),
        other => panic!("expected announce, got {other:?}"),
    }
    v6_announce(udp[1], 6001);
    match v6_announce(udp[1], 6002) {
        UdpResponse::Announce(a) => {
            assert_eq!(a.leechers, 3);
            assert_eq!(
                a.peers,
                PeerList::V6(vec!["[::1]:6001".parse().expect("addr")])
            );
        }
        other => panic!("expected announce, got {other:?}"),
    }
    assert_eq!(server.status()["peers"], 3);
    server.shutdown();
}

#[test]
fn the_http_tracker_keeps_connections_alive() {
    let server = start_server(&[]);
    let addr = server.bt_http_addrs()[0];
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let announce = |port: u16| {
        format!(
            "GET /announce?info_hash={}&peer_id={}&port={port}&left=9 HTTP/1.1\r\nHost: t\r\n\r\n",
            url_bytes(&[0x77; 20]),
            url_bytes(&[b'k'; 20])
        )
    };
    // Two pipelined requests, then a third after reading: one connection serves them all.
    s.write_all(format!("{}{}", announce(5001), announce(5002)).as_bytes())
        .expect("send");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.windows(8).filter(|w| w == b"HTTP/1.1").count() < 2 || !got.ends_with(b"e") {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    assert_eq!(text.matches("HTTP/1.1 200").count(), 2, "{text}");
    assert!(text.contains("Content-Type: text/plain"), "{text}");
    assert!(text.contains("10:incompletei2e"), "{text}");
    s.write_all(
        b"GET /scrape?info_hash=wwwwwwwwwwwwwwwwwwww HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    .expect("send");
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.starts_with("HTTP/1.1 200"), "{rest}");
    assert!(rest.contains("d5:filesd20:"), "{rest}");
    server.shutdown();
}
