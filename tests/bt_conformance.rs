//! BitTorrent answers that other trackers and clients got wrong, over real sockets: `compact=0`
//! (answered compact, as BEP 23 permits, and read by an independent strict bencode parser),
//! `port=0` (accepted, counted, never listed), unknown events and huge `numwant` (a regular
//! announce, capped), the BEP 15 connection-id lifetime, and completion counts in every scrape.

mod bt_support;
use bt_support::bencoded_int;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use bt_support::{http_get, start_server, tool_available, url_bytes, UdpClient};
use ppsp_tracker::protocol::bt_udp::tracker::{AnnounceEvent, Family};
use ppsp_tracker::protocol::bt_udp::wire::{
    decode_response, AnnounceRequest, InfoHashes, PeerList, ScrapeRequest, UdpRequest, UdpResponse,
};

fn peer_count(peers: &PeerList) -> usize {
    match peers {
        PeerList::V4(v) => v.len(),
        PeerList::V6(v) => v.len(),
    }
}

fn announce(hash: &[u8; 20], port: u16, left: u64, extra: &str) -> String {
    format!(
        "/announce?info_hash={}&peer_id={}&port={port}&uploaded=0&downloaded=0&left={left}{extra}",
        url_bytes(hash),
        url_bytes(&[b'c'; 20])
    )
}

/// Whether Perl's `Bencode` module (Debian `libbencode-perl`) is there; fails under CI=true.
fn perl_bencode_available() -> bool {
    if !tool_available("perl", "perl") {
        return false;
    }
    let ok = Command::new("perl")
        .args(["-MBencode", "-e", "1"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("Perl's Bencode is not installed (Debian package `libbencode-perl`)");
        }
        eprintln!("SKIPPED: Perl's Bencode is missing (apt-get install -y libbencode-perl)");
    }
    ok
}

/// Decodes an announce answer with Perl's strict `Bencode::bdecode` (sorted keys, canonical
/// integers) and reads its peers as a client does, compact or BEP 3 dictionaries. Returns
/// `ip:port` per peer, one a line.
fn peers_by_perl(body: &[u8]) -> String {
    const SCRIPT: &str = r#"
        use strict; use Bencode qw(bdecode);
        local $/; my $raw = <STDIN>;
        my $d = bdecode($raw);
        die "failure: $d->{'failure reason'}\n" if exists $d->{'failure reason'};
        die "no interval\n" unless defined $d->{interval};
        my $p = $d->{peers};
        if (ref $p eq 'ARRAY') {
            for my $peer (@$p) {
                # BEP 3: each dictionary has "peer id", "ip" and "port".
                die "peer without peer id/ip/port\n"
                    unless defined $peer->{'peer id'} && defined $peer->{ip} && defined $peer->{port};
                print "$peer->{ip}:$peer->{port}\n";
            }
        } else {
            die "compact peers not a multiple of 6\n" if length($p) % 6;
            for (my $i = 0; $i < length($p); $i += 6) {
                my ($a, $b, $c, $e, $port) = unpack('C4n', substr($p, $i, 6));
                print "$a.$b.$c.$e:$port\n";
            }
        }
    "#;
    let mut child = Command::new("perl")
        .args(["-e", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run perl");
    child.stdin.take().unwrap().write_all(body).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "Perl's bdecode refused the answer: {} {:?}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(body)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// [`peers_by_perl`] where Perl's Bencode is installed.
fn peers_by_perl_if_available(body: &[u8]) {
    if perl_bencode_available() {
        peers_by_perl(body);
    }
}

#[test]
fn compact_zero_gets_a_well_formed_answer_a_strict_parser_reads() {
    if !perl_bencode_available() {
        return;
    }
    let server = start_server(&[]);
    let bt = server.bt_http_addr().unwrap();
    let hash = [0x21; 20];
    let (status, _) = http_get(bt, &announce(&hash, 7002, 0, ""));
    assert_eq!(status, 200);
    for extra in ["&compact=0", "&compact=0&no_peer_id=1", "&compact=1", ""] {
        let (status, body) = http_get(bt, &announce(&hash, 7003, 10, extra));
        assert_eq!(status, 200);
        assert_eq!(peers_by_perl(&body), "127.0.0.1:7002\n", "{extra}");
    }
    server.shutdown();
}

#[test]
fn port_zero_is_accepted_counted_and_never_listed() {
    let server = start_server(&[]);
    let bt = server.bt_http_addr().unwrap();
    let hash = [0x22; 20];
    // A seeder without a listening socket over HTTP, and a leecher without one over UDP.
    let (status, body) = http_get(bt, &announce(&hash, 0, 0, "&event=started"));
    assert_eq!(status, 200, "{:?}", String::from_utf8_lossy(&body));
    assert!(!body.starts_with(b"d14:failure"), "{body:?}");
    // From another address: one (IP, port 0) pair is one peer.
    let udp = UdpClient {
        socket: std::net::UdpSocket::bind("127.0.0.2:0").expect("bind 127.0.0.2"),
        tracker: server.bt_udp_addr().unwrap(),
    };
    let cid = udp.connect();
    match udp.announce(cid, hash, 0, 5, AnnounceEvent::Started) {
        UdpResponse::Announce(a) => {
            assert_eq!((a.seeders, a.leechers), (1, 1));
            assert_eq!(peer_count(&a.peers), 0, "the port-0 seeder is not listed");
        }
        other => panic!("port 0 over UDP: {other:?}"),
    }
    // Both count; neither is listed to a third peer.
    let (_, body) = http_get(bt, &announce(&hash, 7004, 5, ""));
    assert_eq!(bencoded_int(&body, "complete"), 1);
    assert_eq!(bencoded_int(&body, "incomplete"), 2);
    assert!(body.ends_with(b"5:peers0:e"), "{:?}", body);
    let (_, scrape) = http_get(bt, &format!("/scrape?info_hash={}", url_bytes(&hash)));
    assert_eq!(bencoded_int(&scrape, "complete"), 1);
    assert_eq!(bencoded_int(&scrape, "incomplete"), 2);
    assert_eq!(server.status()["peers"], 3);
    server.shutdown();
}

#[test]
fn unknown_events_are_regular_announces_and_huge_numwant_is_capped() {
    let server = start_server(&[]);
    let bt = server.bt_http_addr().unwrap();
    let hash = [0x23; 20];
    for port in 7010..7020 {
        assert_eq!(http_get(bt, &announce(&hash, port, 0, "")).0, 200);
    }
    for (leechers_before, (port, extra)) in [
        (7020, "&event=exploded"),
        (7021, "&event=paused"),
        (7022, "&numwant=99999999999999999999999999999999"),
        (7023, "&numwant=-99999999999999999999999999999999"),
        (7024, "&numwant=18446744073709551616&event=update"),
    ]
    .into_iter()
    .enumerate()
    {
        let (status, body) = http_get(bt, &announce(&hash, port, 5, extra));
        assert_eq!(status, 200);
        assert!(
            body.starts_with(b"d8:complete"),
            "{extra}: {:?}",
            String::from_utf8_lossy(&body)
        );
        // Every other peer is listed (ten seeders and the leechers before): the huge count is
        // capped at what there is, or the default for a negative one.
        let peers = format!("5:peers{}:", 6 * (10 + leechers_before));
        let peers = peers.as_bytes();
        assert!(
            body.windows(peers.len()).any(|w| w == peers),
            "{extra}: {:?}",
            String::from_utf8_lossy(&body)
        );
    }
    // BEP 15: an event code outside 0..=3 is a regular announce too.
    let udp = UdpClient::new(server.bt_udp_addr().unwrap());
    let cid = udp.connect();
    let mut pkt = Vec::new();
    UdpRequest::Announce(AnnounceRequest {
        connection_id: cid,
        transaction_id: 3,
        info_hash: hash,
        peer_id: [b'u'; 20],
        downloaded: 0,
        left: 1,
        uploaded: 0,
        event: AnnounceEvent::None,
        ip_address: 0,
        key: 0,
        num_want: i32::MAX,
        port: 7030,
    })
    .encode(&mut pkt);
    pkt[80..84].copy_from_slice(&77u32.to_be_bytes());
    let answer = udp.exchange(&pkt, Duration::from_secs(5)).expect("answer");
    match decode_response(&answer, Family::V4, 200) {
        Ok(UdpResponse::Announce(a)) => assert_eq!(peer_count(&a.peers), 15),
        other => panic!("unknown event over UDP: {other:?}"),
    }
    assert_eq!(server.status()["peers"], 16);
    server.shutdown();
}

#[test]
fn a_connection_id_is_accepted_for_two_minutes_whenever_it_was_issued() {
    let server = start_server(&[]);
    let udp = UdpClient::new(server.bt_udp_addr().unwrap());
    let hash = [0x24; 20];
    for _ in 0..3 {
        let cid = udp.connect();
        // BEP 15: a tracker should accept the id until two minutes after sending it.
        server.advance_clock(Duration::from_secs(120));
        match udp.announce(cid, hash, 7040, 5, AnnounceEvent::None) {
            UdpResponse::Announce(a) => assert_eq!(a.leechers, 1),
            other => panic!("an id 120 s old must be accepted: {other:?}"),
        }
        // An id is not accepted for ever: 180 s after it was issued it is refused.
        server.advance_clock(Duration::from_secs(60));
        match udp.announce(cid, hash, 7040, 5, AnnounceEvent::None) {
            UdpResponse::Error(e) => assert_eq!(e.message, b"connection id expired"),
            other => panic!("an id 180 s old must be refused: {other:?}"),
        }
        // Issued at another point of the slot next time round.
        server.advance_clock(Duration::from_millis(20_333));
    }
    server.shutdown();
}

/// One PPSTP request on a fresh connection; returns the `PPSPTrackerProtocol` object.
fn ppstp(addr: std::net::SocketAddr, inner: serde_json::Value) -> serde_json::Value {
    use std::io::Read;
    let body = serde_json::json!({ "PPSPTrackerProtocol": inner }).to_string();
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "POST / HTTP/1.1\r\nContent-Type: application/ppsp-tracker+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("answer");
    let at = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("head") + 4;
    let v: serde_json::Value = serde_json::from_slice(&raw[at..]).expect("JSON");
    v["PPSPTrackerProtocol"].clone()
}

#[test]
fn completions_are_counted_per_swarm_and_reported_by_every_scrape_and_stat_query() {
    let server = start_server(&[]);
    let bt = server.bt_http_addr().unwrap();
    let hash = [0x25; 20];
    let scrape = |hash: &[u8; 20]| {
        let (_, body) = http_get(bt, &format!("/scrape?info_hash={}", url_bytes(hash)));
        bencoded_int(&body, "downloaded")
    };
    // HTTP: a leecher that completes, a seeder that joins complete (not a completion), and a
    // repeated `completed` (counted once).
    http_get(bt, &announce(&hash, 7050, 100, "&event=started"));
    http_get(bt, &announce(&hash, 7051, 0, "&event=started"));
    assert_eq!(scrape(&hash), 0);
    http_get(bt, &announce(&hash, 7050, 0, "&event=completed"));
    http_get(bt, &announce(&hash, 7050, 0, "&event=completed"));
    assert_eq!(scrape(&hash), 1);
    // UDP: another leecher completes; the UDP scrape reports both.
    let udp = UdpClient::new(server.bt_udp_addr().unwrap());
    let cid = udp.connect();
    udp.announce(cid, hash, 7052, 10, AnnounceEvent::Started);
    match udp.announce(cid, hash, 7052, 0, AnnounceEvent::Completed) {
        UdpResponse::Announce(a) => assert_eq!((a.seeders, a.leechers), (3, 0)),
        other => panic!("{other:?}"),
    }
    let mut pkt = Vec::new();
    let two = [hash, [0x26; 20]].concat();
    UdpRequest::Scrape(ScrapeRequest {
        connection_id: cid,
        transaction_id: 4,
        info_hashes: InfoHashes::new(&two).unwrap(),
    })
    .encode(&mut pkt);
    let answer = udp.exchange(&pkt, Duration::from_secs(5)).expect("scrape");
    match decode_response(&answer, Family::V4, 2) {
        Ok(UdpResponse::Scrape(s)) => {
            assert_eq!((s.entries[0].seeders, s.entries[0].completed), (3, 2));
            assert_eq!(s.entries[1].completed, 0, "another swarm");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(scrape(&hash), 2);
    // Announce answers carry the count too.
    let (_, body) = http_get(bt, &announce(&hash, 7053, 5, ""));
    assert_eq!(bencoded_int(&body, "downloaded"), 2, "{body:?}");
    peers_by_perl_if_available(&body);

    // PPSTP: LEECH -> SEEDER is a completion, reported by STAT_QUERY.
    let addr = server.ppstp_addr().unwrap();
    let a = ppstp(
        addr,
        serde_json::json!({"version": 1, "request_type": "CONNECT", "transaction_id": "1",
            "peer_id": "ppstp-peer", "connect": {"swarm_action": [
                {"swarm_id": "movie", "action": "JOIN", "peer_mode": "LEECH"}]}}),
    );
    assert_eq!(a["error_code"], 0, "{a}");
    let a = ppstp(
        addr,
        serde_json::json!({"version": 1, "request_type": "JOIN", "transaction_id": "2",
            "peer_id": "ppstp-peer", "join": {"swarm_id": "movie", "peer_mode": "SEEDER"}}),
    );
    assert_eq!(a["error_code"], 0, "{a}");
    let q = ppstp(
        addr,
        serde_json::json!({"version": 1, "request_type": "STAT_QUERY", "transaction_id": "3",
            "peer_id": "ppstp-peer", "stat_query": {"swarm_id": "movie"}}),
    );
    assert_eq!(q["stat_result"]["completed"], 1, "{q}");
    assert_eq!(q["stat_result"]["seeders"], 1, "{q}");
    server.shutdown();
}

/// One BEP 15 exchange from an IPv6 socket; the answer decoded as an IPv6 tracker's.
fn udp6_exchange(socket: &std::net::UdpSocket, to: std::net::SocketAddr, pkt: &[u8]) -> Vec<u8> {
    socket.send_to(pkt, to).expect("send");
    let mut buf = [0u8; 2048];
    let (n, _) = socket.recv_from(&mut buf).expect("an answer");
    buf[..n].to_vec()
}

fn udp6_announce(
    socket: &std::net::UdpSocket,
    to: std::net::SocketAddr,
    cid: u64,
    hash: [u8; 20],
    port: u16,
    left: u64,
) -> UdpResponse<'static> {
    let mut pkt = Vec::new();
    UdpRequest::Announce(AnnounceRequest {
        connection_id: cid,
        transaction_id: 11,
        info_hash: hash,
        peer_id: [b'6'; 20],
        downloaded: 0,
        left,
        uploaded: 0,
        event: AnnounceEvent::None,
        ip_address: 0,
        key: 0,
        num_want: -1,
        port,
    })
    .encode(&mut pkt);
    let answer: &'static [u8] = Box::leak(udp6_exchange(socket, to, &pkt).into_boxed_slice());
    decode_response(answer, Family::V6, 200).expect("a BEP 15 answer")
}

#[test]
fn ipv6_sources_get_the_same_connection_id_lifetime_and_port_zero_rules() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback on this host: skipped");
        return;
    }
    let server = start_server(&[
        r#"bt_udp.listen=["[::1]:0"]"#,
        r#"bt_http.listen=["[::1]:0"]"#,
    ]);
    let udp_addr = server.bt_udp_addr().unwrap();
    let http_addr = server.bt_http_addr().unwrap();
    assert!(udp_addr.is_ipv6() && http_addr.is_ipv6());
    let socket = std::net::UdpSocket::bind("[::1]:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let connect = || {
        let mut pkt = Vec::new();
        ppsp_tracker::protocol::bt_udp::wire::ConnectRequest { transaction_id: 1 }.encode(&mut pkt);
        match decode_response(&udp6_exchange(&socket, udp_addr, &pkt), Family::V6, 0) {
            Ok(UdpResponse::Connect(c)) => c.connection_id,
            other => panic!("{other:?}"),
        }
    };
    // BEP 15 connection ids from an IPv6 source: accepted for 120 s, refused at 180 s,
    // wherever in its slot the id was issued.
    let hash = [0x27; 20];
    for _ in 0..3 {
        let cid = connect();
        server.advance_clock(Duration::from_secs(120));
        match udp6_announce(&socket, udp_addr, cid, hash, 7060, 5) {
            UdpResponse::Announce(_) => {}
            other => panic!("an id 120 s old must be accepted: {other:?}"),
        }
        server.advance_clock(Duration::from_secs(60));
        match udp6_announce(&socket, udp_addr, cid, hash, 7060, 5) {
            UdpResponse::Error(e) => assert_eq!(e.message, b"connection id expired"),
            other => panic!("an id 180 s old must be refused: {other:?}"),
        }
        server.advance_clock(Duration::from_millis(20_333));
    }
    // port=0 over IPv6 (one (address, port 0) pair is one peer, so each swarm gets one): a
    // seeder over HTTP, a leecher over UDP; counted, never listed.
    let (hash_a, hash_b) = ([0x28; 20], [0x29; 20]);
    let (status, body) = http_get(http_addr, &announce(&hash_a, 0, 0, "&event=started"));
    assert_eq!(status, 200);
    assert!(body.starts_with(b"d8:complete"), "{body:?}");
    let cid = connect();
    match udp6_announce(&socket, udp_addr, cid, hash_a, 7061, 5) {
        UdpResponse::Announce(a) => {
            assert_eq!((a.seeders, a.leechers), (1, 1));
            assert_eq!(peer_count(&a.peers), 0, "the port-0 seeder is not listed");
        }
        other => panic!("{other:?}"),
    }
    match udp6_announce(&socket, udp_addr, cid, hash_b, 0, 5) {
        UdpResponse::Announce(a) => assert_eq!((a.seeders, a.leechers), (0, 1)),
        other => panic!("port 0 over UDP from IPv6: {other:?}"),
    }
    let (_, body) = http_get(http_addr, &announce(&hash_b, 7062, 0, ""));
    assert_eq!(bencoded_int(&body, "complete"), 1);
    assert_eq!(bencoded_int(&body, "incomplete"), 1);
    assert!(
        body.ends_with(b"5:peers0:e") || body.ends_with(b"5:peers0:6:peers60:e"),
        "nobody listed: {:?}",
        body
    );
    for (hash, seeders, leechers) in [(hash_a, 1, 1), (hash_b, 1, 1)] {
        let (_, scrape) = http_get(
            http_addr,
            &format!("/scrape?info_hash={}", url_bytes(&hash)),
        );
        assert_eq!(bencoded_int(&scrape, "complete"), seeders);
        assert_eq!(bencoded_int(&scrape, "incomplete"), leechers);
    }
    server.shutdown();
}

#[test]
fn announce_urls_as_clients_build_them_are_read() {
    let server = start_server(&[]);
    let bt = server.bt_http_addr().unwrap();
    let hash = [0x2a; 20];
    let lower: String = hash.iter().map(|b| format!("%{b:02x}")).collect();
    let rest = format!(
        "peer_id={}&port=7070&uploaded=0&downloaded=0&left=5",
        url_bytes(&[b'q'; 20])
    );
    for target in [
        // A tracker URL ending in `?`, or carrying a query, gets the client's `?` appended.
        format!("/announce??info_hash={lower}&{rest}"),
        format!("/announce?key=1?info_hash={lower}&{rest}"),
        // Trailing and doubled separators, an empty event (as Transmission sends).
        format!("/announce?&info_hash={lower}&&{rest}&event=&"),
        format!("/announce?info_hash={lower}&{rest}?"),
        // An absolute-form target (a client talking through a proxy).
        format!("http://tracker.example:6969/announce?info_hash={lower}&{rest}"),
    ] {
        let (status, body) = http_get(bt, &target);
        assert_eq!(status, 200, "{target}");
        assert!(
            body.starts_with(b"d8:complete"),
            "{target}: {:?}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(bencoded_int(&body, "incomplete"), 1, "{target}: one peer");
    }
    let (_, scrape) = http_get(
        bt,
        &format!("/scrape??info_hash={lower}&info_hash={}&", url_bytes(&hash)),
    );
    assert_eq!(bencoded_int(&scrape, "incomplete"), 1);
    assert_eq!(
        scrape.windows(20).filter(|w| *w == hash).count(),
        1,
        "one entry per info-hash"
    );
    // A scrape naming no info-hash (a full scrape) gets a failure reason, with or without `?`.
    for target in ["/scrape", "/scrape?", "/scrape?&"] {
        let (status, body) = http_get(bt, target);
        assert_eq!(status, 200);
        assert!(
            body.starts_with(b"d14:failure reason"),
            "{target}: {:?}",
            String::from_utf8_lossy(&body)
        );
    }
    server.shutdown();
}

#[test]
fn udp_options_after_an_announce_and_client_chosen_addresses_are_ignored() {
    let server = start_server(&[]);
    let udp = UdpClient::new(server.bt_udp_addr().unwrap());
    let cid = udp.connect();
    let hash = [0x2b; 20];
    let packet = |port: u16, tail: &[u8]| {
        let mut pkt = Vec::new();
        UdpRequest::Announce(AnnounceRequest {
            connection_id: cid,
            transaction_id: 21,
            info_hash: hash,
            peer_id: [b'o'; 20],
            downloaded: 0,
            left: 5,
            uploaded: 0,
            event: AnnounceEvent::Started,
            // A client-chosen address (BEP 15 `ip`) is never taken: the source is.
            ip_address: u32::from_be_bytes([10, 9, 8, 7]),
            key: 0,
            num_want: -1,
            port,
        })
        .encode(&mut pkt);
        pkt.extend_from_slice(tail);
        pkt
    };
    // BEP 41: URL data, a no-op and end-of-options; then bytes no option reads.
    let tails: [&[u8]; 4] = [
        b"\x02\x0c/announce?x=1",
        b"\x01\x01\x00",
        b"\x00",
        &[0xee; 40],
    ];
    for (i, tail) in tails.into_iter().enumerate() {
        let answer = udp
            .exchange(&packet(7080 + i as u16, tail), Duration::from_secs(5))
            .expect("answered");
        match decode_response(&answer, Family::V4, 200) {
            Ok(UdpResponse::Announce(a)) => {
                assert_eq!(a.leechers as usize, i + 1);
                if let PeerList::V4(peers) = &a.peers {
                    assert!(peers
                        .iter()
                        .all(|p| p.ip() == &std::net::Ipv4Addr::LOCALHOST));
                }
            }
            other => panic!("options {tail:?}: {other:?}"),
        }
    }
    // A packet cut short of the 98-byte announce is an error answer, not silence.
    let answer = udp
        .exchange(&packet(7090, b"")[..97], Duration::from_secs(5))
        .expect("answered");
    assert!(matches!(
        decode_response(&answer, Family::V4, 0),
        Ok(UdpResponse::Error(_))
    ));
    // HTTP's `ip`, `key` and `trackerid` change nothing either.
    let bt = server.bt_http_addr().unwrap();
    let (_, body) = http_get(
        bt,
        &announce(
            &hash,
            7091,
            5,
            "&ip=10.9.8.7&key=abcd&trackerid=x&ipv6=%3A%3A2",
        ),
    );
    let peers = peers_listed(&body);
    assert_eq!(peers.len(), 4, "{body:?}");
    assert!(
        peers.iter().all(|p| p.starts_with("127.0.0.1:")),
        "{peers:?}"
    );
    server.shutdown();
}

/// `ip:port` of each compact IPv4 peer in an announce answer.
fn peers_listed(body: &[u8]) -> Vec<String> {
    let at = body
        .windows(7)
        .position(|w| w == b"5:peers")
        .expect("peers")
        + 7;
    let colon = at + body[at..].iter().position(|&b| b == b':').unwrap();
    let len: usize = std::str::from_utf8(&body[at..colon])
        .unwrap()
        .parse()
        .unwrap();
    body[colon + 1..colon + 1 + len]
        .chunks(6)
        .map(|c| {
            format!(
                "{}.{}.{}.{}:{}",
                c[0],
                c[1],
                c[2],
                c[3],
                u16::from_be_bytes([c[4], c[5]])
            )
        })
        .collect()
}

#[test]
fn a_swarm_without_members_keeps_reporting_its_completions_for_hours() {
    let server = start_server(&[]);
    let bt = server.bt_http_addr().unwrap();
    let hash = [0x2c; 20];
    let downloaded = || {
        let (_, body) = http_get(bt, &format!("/scrape?info_hash={}", url_bytes(&hash)));
        (
            bencoded_int(&body, "downloaded"),
            bencoded_int(&body, "complete"),
            bencoded_int(&body, "incomplete"),
        )
    };
    http_get(bt, &announce(&hash, 7100, 10, "&event=started"));
    http_get(bt, &announce(&hash, 7100, 0, "&event=completed"));
    http_get(bt, &announce(&hash, 7100, 0, "&event=stopped"));
    assert_eq!(
        downloaded(),
        (1, 0, 0),
        "the count outlives the last member"
    );
    // The UDP scrape says the same.
    let udp = UdpClient::new(server.bt_udp_addr().unwrap());
    let cid = udp.connect();
    let mut pkt = Vec::new();
    UdpRequest::Scrape(ScrapeRequest {
        connection_id: cid,
        transaction_id: 6,
        info_hashes: InfoHashes::new(&hash).unwrap(),
    })
    .encode(&mut pkt);
    let answer = udp.exchange(&pkt, Duration::from_secs(5)).expect("scrape");
    match decode_response(&answer, Family::V4, 1) {
        Ok(UdpResponse::Scrape(s)) => assert_eq!(s.entries[0].completed, 1),
        other => panic!("{other:?}"),
    }
    // A new member brings the swarm back with its count, and adds to it.
    http_get(bt, &announce(&hash, 7101, 10, "&event=started"));
    http_get(bt, &announce(&hash, 7101, 0, "&event=completed"));
    assert_eq!(downloaded(), (2, 1, 0));
    // Hours after the swarm emptied again, the count is gone (bounded memory).
    http_get(bt, &announce(&hash, 7101, 0, "&event=stopped"));
    assert_eq!(downloaded(), (2, 0, 0));
    server.advance_clock(Duration::from_secs(10 * 3600));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while downloaded().0 != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the count outlived its retention"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    server.shutdown();
}
