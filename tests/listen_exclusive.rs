//! A listen address already bound by another process or socket stops start-up with an error
//! naming it, for every listener (PPSTP, admin, BitTorrent UDP and HTTP, overlay). With
//! `SO_REUSEPORT` alone a second tracker would silently share the port and take part of the
//! traffic.

mod bt_support;

use bt_support::start_server;
use ppsp_tracker::config::Config;
use ppsp_tracker::server::Server;

fn start_err(sets: &[String]) -> String {
    let mut all: Vec<String> = vec![
        "ppstp.listen=127.0.0.1:0".into(),
        "admin.listen=127.0.0.1:0".into(),
        r#"bt_udp.listen=["127.0.0.1:0"]"#.into(),
        r#"bt_http.listen=["127.0.0.1:0"]"#.into(),
        "server.workers=2".into(),
    ];
    all.extend(sets.iter().cloned());
    let config = Config::load(None, &all).expect("valid configuration");
    match Server::start(&config) {
        Ok(_) => panic!("a second server started on a bound address: {sets:?}"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn a_second_tracker_on_any_bound_address_refuses_to_start_naming_the_port() {
    let first = start_server(&[]);
    let ppstp = first.ppstp_addr().unwrap();
    let admin = first.admin_addr().unwrap();
    let bt_udp = first.bt_udp_addr().unwrap();
    let bt_http = first.bt_http_addr().unwrap();
    for (set, addr) in [
        (format!("ppstp.listen={ppstp}"), ppstp),
        (format!("admin.listen={admin}"), admin),
        (format!(r#"bt_udp.listen=["{bt_udp}"]"#), bt_udp),
        (format!(r#"bt_http.listen=["{bt_http}"]"#), bt_http),
    ] {
        let err = start_err(std::slice::from_ref(&set));
        assert!(
            err.contains(&addr.to_string()) && err.contains(&format!("port {}", addr.port())),
            "{set}: {err}"
        );
    }
    // The first one still serves every address alone.
    let (status, _) = bt_support::http_get(bt_http, "/scrape?info_hash=aaaaaaaaaaaaaaaaaaaa");
    assert_eq!(status, 200);
    first.shutdown();
}

#[test]
fn an_address_held_by_another_program_is_refused_and_a_wildcard_one_too() {
    // A plain socket of another program (no SO_REUSEPORT), on the exact address.
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = tcp.local_addr().unwrap().port();
    let err = start_err(&[format!(r#"bt_http.listen=["127.0.0.1:{port}"]"#)]);
    assert!(err.contains(&format!("port {port}")), "{err}");
    // A UDP socket on the wildcard address holds the port on every local address.
    let udp = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    let port = udp.local_addr().unwrap().port();
    let err = start_err(&[format!(r#"bt_udp.listen=["127.0.0.1:{port}"]"#)]);
    assert!(err.contains(&format!("port {port}")), "{err}");
    // The overlay listener too.
    let overlay = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = overlay.local_addr().unwrap();
    let err = start_err(&[
        "overlay.enabled=true".into(),
        format!("overlay.listen=\"{addr}\""),
    ]);
    assert!(
        err.contains(&addr.to_string()) && err.contains("in use"),
        "{err}"
    );
}

#[test]
fn ipv6_addresses_and_the_overlay_of_a_running_tracker_are_refused_naming_the_port() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback on this host: skipped");
        return;
    }
    let both = r#"["127.0.0.1:0", "[::1]:0"]"#;
    let first = start_server(&[
        &format!("ppstp.listen={both}"),
        &format!("admin.listen={both}"),
        &format!("bt_udp.listen={both}"),
        &format!("bt_http.listen={both}"),
        "overlay.enabled=true",
        r#"overlay.listen="[::1]:0""#,
    ]);
    let v6 = |addrs: &[std::net::SocketAddr]| *addrs.iter().find(|a| a.is_ipv6()).unwrap();
    let overlay = first.overlay().expect("overlay on").listen_addr();
    assert!(overlay.is_ipv6() && overlay.port() != 0, "{overlay}");
    for (set, addr) in [
        (
            format!(r#"ppstp.listen=["{}"]"#, v6(first.ppstp_addrs())),
            v6(first.ppstp_addrs()),
        ),
        (
            format!(r#"admin.listen=["{}"]"#, v6(first.admin_addrs())),
            v6(first.admin_addrs()),
        ),
        (
            format!(r#"bt_udp.listen=["{}"]"#, v6(first.bt_udp_addrs())),
            v6(first.bt_udp_addrs()),
        ),
        (
            format!(r#"bt_http.listen=["{}"]"#, v6(first.bt_http_addrs())),
            v6(first.bt_http_addrs()),
        ),
        // The wildcard address overlaps the one the first tracker holds.
        (
            format!(
                r#"bt_udp.listen=["[::]:{}"]"#,
                v6(first.bt_udp_addrs()).port()
            ),
            v6(first.bt_udp_addrs()),
        ),
    ] {
        let err = start_err(std::slice::from_ref(&set));
        assert!(
            err.contains(&format!("port {}", addr.port())),
            "{set}: {err}"
        );
    }
    let err = start_err(&[
        "overlay.enabled=true".into(),
        format!("overlay.listen=\"{overlay}\""),
    ]);
    assert!(
        err.contains(&format!("port {}", overlay.port())),
        "overlay: {err}"
    );
    first.shutdown();
}
