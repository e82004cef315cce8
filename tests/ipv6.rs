//! IPv6 throughout: every listener (PPSTP, BitTorrent UDP and HTTP, admin, overlay) listens on
//! `[::1]` by configuration, next to IPv4 on the same listener, and every front-end answers
//! IPv6 peers in its own IPv6 form (PPSTP `ipv6` addresses, BEP 7 `peers6`, BEP 15 answers of
//! 18-byte entries).

mod bt_support;
mod common;
mod overlay_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use ppsp_tracker::config::Config;
use ppsp_tracker::server::Server;

/// Whether this host has IPv6 loopback (some containers do not).
fn ipv6_loopback() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

fn dual_stack_server() -> Server {
    let config = Config::load(
        None,
        &[
            r#"ppstp.listen=["127.0.0.1:0", "[::1]:0"]"#.to_owned(),
            r#"admin.listen=["127.0.0.1:0", "[::1]:0"]"#.to_owned(),
            r#"bt_udp.listen=["127.0.0.1:0", "[::1]:0"]"#.to_owned(),
            r#"bt_http.listen=["127.0.0.1:0", "[::1]:0"]"#.to_owned(),
            "server.workers=2".to_owned(),
        ],
    )
    .unwrap();
    Server::start(&config).unwrap()
}

fn v6(addrs: &[SocketAddr]) -> SocketAddr {
    *addrs
        .iter()
        .find(|a| a.is_ipv6())
        .expect("an IPv6 listener")
}

#[test]
fn every_listener_of_one_server_answers_on_ipv4_and_on_ipv6_loopback() {
    if !ipv6_loopback() {
        eprintln!("no IPv6 loopback on this host: skipped");
        return;
    }
    let server = dual_stack_server();
    for list in [
        server.ppstp_addrs(),
        server.admin_addrs(),
        server.bt_udp_addrs(),
        server.bt_http_addrs(),
    ] {
        assert_eq!(list.len(), 2, "{list:?}");
        assert!(list[0].is_ipv4() && list[1].is_ipv6(), "{list:?}");
        assert_ne!(list[1].port(), 0);
    }

    // PPSTP over ::1: two peers; each FIND answer lists the other with its IPv6 address.
    let ppstp6 = v6(server.ppstp_addrs());
    for peer in ["six-a", "six-b"] {
        let r = common::roundtrip(
            ppstp6,
            &common::ppstp_post(&common::connect_body("1", peer, &[("v6swarm", "SEEDER")])),
        );
        assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    }
    let r = common::roundtrip(
        ppstp6,
        &common::ppstp_post(&common::find_body("2", "six-a", "v6swarm", 10)),
    );
    let answer = r.ppstp();
    assert_eq!(common::error_code(&answer), 0, "{answer}");
    let text = answer.to_string();
    assert!(text.contains("six-b"), "{text}");
    assert!(text.contains("\"ipv6\""), "{text}");
    assert!(text.contains("::1"), "{text}");
    // The IPv4 listener of the same service sees the same swarm.
    let r = common::roundtrip(
        server.ppstp_addr().unwrap(),
        &common::ppstp_post(&common::connect_body(
            "3",
            "four-a",
            &[("v6swarm", "LEECH")],
        )),
    );
    assert_eq!(common::error_code(&r.ppstp()), 0);
    assert!(r.ppstp().to_string().contains("six-"), "{}", r.ppstp());

    // Admin over ::1.
    let m = common::http_get(v6(server.admin_addrs()), "/metrics");
    assert_eq!(m.status, 200);
    assert!(String::from_utf8_lossy(&m.body).contains("ppsp_table_entries"));

    // BEP 15 over ::1: two clients in one swarm; the second gets the first as an 18-byte entry.
    let udp6 = v6(server.bt_udp_addrs());
    let hash = [0x66u8; 20];
    let mut answers = Vec::new();
    for port in [6001u16, 6002] {
        let socket = UdpSocket::bind("[::1]:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut connect = Vec::new();
        connect.extend_from_slice(&0x41727101980u64.to_be_bytes());
        connect.extend_from_slice(&0u32.to_be_bytes());
        connect.extend_from_slice(&5u32.to_be_bytes());
        socket.send_to(&connect, udp6).unwrap();
        let mut buf = [0u8; 2048];
        let (n, _) = socket.recv_from(&mut buf).unwrap();
        assert_eq!(n, 16);
        let mut announce = buf[8..16].to_vec();
        announce.extend_from_slice(&1u32.to_be_bytes());
        announce.extend_from_slice(&6u32.to_be_bytes());
        announce.extend_from_slice(&hash);
        announce.extend_from_slice(&[b'p'; 20]);
        announce.extend_from_slice(&0u64.to_be_bytes());
        announce.extend_from_slice(&10u64.to_be_bytes());
        announce.extend_from_slice(&0u64.to_be_bytes());
        announce.extend_from_slice(&2u32.to_be_bytes());
        announce.extend_from_slice(&0u32.to_be_bytes());
        announce.extend_from_slice(&0u32.to_be_bytes());
        announce.extend_from_slice(&(-1i32).to_be_bytes());
        announce.extend_from_slice(&port.to_be_bytes());
        socket.send_to(&announce, udp6).unwrap();
        let (n, _) = socket.recv_from(&mut buf).unwrap();
        answers.push(buf[..n].to_vec());
    }
    let second = &answers[1];
    assert_eq!(&second[0..4], &1u32.to_be_bytes(), "announce answer");
    assert_eq!(
        second.len(),
        20 + 18,
        "one IPv6 peer of 18 bytes: {second:?}"
    );
    let mut want = std::net::Ipv6Addr::LOCALHOST.octets().to_vec();
    want.extend_from_slice(&6001u16.to_be_bytes());
    assert_eq!(&second[20..], &want[..]);

    // BEP 3/7 over ::1: a compact announce gets the UDP peers in `peers6`.
    let http6 = v6(server.bt_http_addrs());
    let mut conn = TcpStream::connect(http6).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        conn,
        "GET /announce?info_hash={}&peer_id=hhhhhhhhhhhhhhhhhhhh&port=6003&uploaded=0&downloaded=0&left=1&compact=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        bt_support::url_bytes(&hash)
    )
    .unwrap();
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).unwrap();
    let at = raw
        .windows(8)
        .position(|w| w == b"6:peers6")
        .expect("a peers6 key");
    let rest = &raw[at + 8..];
    assert!(rest.starts_with(b"36:"), "two peers of 18 bytes: {rest:?}");
    server.shutdown();
}

#[test]
fn two_overlay_nodes_on_ipv6_loopback_form_a_ring_and_share_a_swarm() {
    if !ipv6_loopback() {
        eprintln!("no IPv6 loopback on this host: skipped");
        return;
    }
    let free6 = || {
        std::net::TcpListener::bind("[::1]:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let (o1, o2) = (free6(), free6());
    // Quick tracker usage: flush every 100 ms; every FIND the local copy cannot fill asks
    // the overlay.
    let usage = [
        "overlay.flush_interval_ms=100",
        "overlay.local_find_min=10",
        "overlay.fetch_cache_ms=200",
        "overlay.fetch_timeout_ms=3000",
    ];
    let a = overlay_support::start_node_with(o1, &[], &usage);
    let b = overlay_support::start_node_with(o2, &[o1], &usage);
    overlay_support::wait_until(Duration::from_secs(60), "ring over ::1", || {
        overlay_support::ring_is_correct(&[&a, &b])
    });
    // The overlay status names the IPv6 addresses the nodes reached each other on.
    let status = overlay_support::overlay_status(&b).to_string();
    assert!(status.contains("::1"), "{status}");
    // A peer registered at A is found through B (the registration crossed the IPv6 link).
    let r = common::roundtrip(
        a.ppstp,
        &common::ppstp_post(&common::connect_body("1", "via-a", &[("ring6", "SEEDER")])),
    );
    assert_eq!(common::error_code(&r.ppstp()), 0);
    let r = common::roundtrip(
        b.ppstp,
        &common::ppstp_post(&common::connect_body("2", "via-b", &[("ring6", "LEECH")])),
    );
    assert_eq!(common::error_code(&r.ppstp()), 0);
    overlay_support::wait_until(Duration::from_secs(60), "peer found via B", || {
        let r = common::roundtrip(
            b.ppstp,
            &common::ppstp_post(&common::find_body("3", "via-b", "ring6", 10)),
        );
        r.ppstp().to_string().contains("via-a")
    });
}

#[test]
fn an_overlay_node_listens_and_advertises_on_ipv4_and_ipv6_at_once() {
    if !ipv6_loopback() {
        eprintln!("no IPv6 loopback on this host: skipped");
        return;
    }
    let free6 = || {
        std::net::TcpListener::bind("[::1]:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    // A listens on both families; B only on IPv6 and joins through A's IPv6 address; C only
    // on IPv4 and joins through A's IPv4 address.
    let (a4, a6, b6, c4) = (
        overlay_support::free_addr(),
        free6(),
        free6(),
        overlay_support::free_addr(),
    );
    let a_listen = format!(r#"overlay.listen=["{a4}", "{a6}"]"#);
    let a = overlay_support::start_node_with(a4, &[], &[&a_listen]);
    let b = overlay_support::start_node_with(b6, &[a6], &[]);
    let c = overlay_support::start_node_with(c4, &[a4], &[]);
    overlay_support::wait_until(Duration::from_secs(90), "ring over both families", || {
        overlay_support::ring_is_correct(&[&a, &b, &c])
    });
    // A reports and advertises both listeners, IPv4 first as configured.
    let status = overlay_support::overlay_status(&a);
    let listed = |key: &str| -> Vec<String> {
        status[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key} in {status}"))
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(listed("listen"), vec![a4.to_string(), a6.to_string()]);
    assert_eq!(listed("advertised"), vec![a4.to_string(), a6.to_string()]);
    // A holds links over ::1 (to B) and over 127.0.0.1 (to C).
    let link_ips: Vec<std::net::IpAddr> = status["link_details"]
        .as_array()
        .unwrap_or_else(|| panic!("link_details in {status}"))
        .iter()
        .filter_map(|l| l["addr"].as_str()?.parse::<SocketAddr>().ok())
        .map(|a| a.ip())
        .collect();
    assert!(link_ips.iter().any(|ip| ip.is_ipv6()), "{status}");
    assert!(link_ips.iter().any(|ip| ip.is_ipv4()), "{status}");
}
