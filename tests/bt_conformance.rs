//! BitTorrent answers that other trackers and clients got wrong, over real sockets: `compact=0`
//! (answered compact, as BEP 23 permits, and read by an independent strict bencode parser),
//! `port=0` (accepted, counted, never listed), unknown events and huge `numwant` (a regular
//! announce, capped), the BEP 15 connection-id lifetime, and completion counts in every scrape.

mod bt_support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use bt_support::{http_get, start_server, tool_available, url_bytes, UdpClient};
use ppsp_tracker::protocol::bt_udp::tracker::{AnnounceEvent, Family};
use ppsp_tracker::protocol::bt_udp::wire::{
    decode_response, AnnounceRequest, PeerList, UdpRequest, UdpResponse,
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

/// The value after `key` in a bencoded body when it is an integer (`3:keyi42e` -> 42).
fn int_after(body: &[u8], key: &str) -> i64 {
    let pat = format!("{}:{key}i", key.len());
    let at = body
        .windows(pat.len())
        .position(|w| w == pat.as_bytes())
        .unwrap_or_else(|| panic!("no {key} in {:?}", String::from_utf8_lossy(body)))
        + pat.len();
    let end = at + body[at..].iter().position(|&b| b == b'e').expect("end");
    std::str::from_utf8(&body[at..end])
        .unwrap()
        .parse()
        .unwrap()
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
    assert_eq!(int_after(&body, "complete"), 1);
    assert_eq!(int_after(&body, "incomplete"), 2);
    assert!(body.ends_with(b"5:peers0:e"), "{:?}", body);
    let (_, scrape) = http_get(bt, &format!("/scrape?info_hash={}", url_bytes(&hash)));
    assert_eq!(int_after(&scrape, "complete"), 1);
    assert_eq!(int_after(&scrape, "incomplete"), 2);
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
