//! The access list over real sockets: in `allow` mode only listed swarms are served by the
//! BitTorrent UDP and HTTP trackers and by PPSTP; a reload swaps the list, a bad file keeps the
//! old one; the binary reloads on SIGHUP without stopping.

mod bt_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bt_support::{free_port, http_get, start_server, url_bytes, UdpClient};
use ppsp_tracker::protocol::bt_udp::tracker::{AnnounceEvent, Family};
use ppsp_tracker::protocol::bt_udp::wire::{
    decode_response, AnnounceRequest, UdpRequest, UdpResponse,
};

const H1: [u8; 20] = [0x11; 20];
const H2: [u8; 20] = [0x22; 20];

fn hex(h: &[u8]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// The BEP 15 answer to an announce of `hash`: Ok(()) or the error message.
fn udp_announce(tracker: SocketAddr, hash: [u8; 20]) -> Result<(), String> {
    let client = UdpClient::new(tracker);
    let cid = client.connect();
    let mut pkt = Vec::new();
    UdpRequest::Announce(AnnounceRequest {
        connection_id: cid,
        transaction_id: 1,
        info_hash: hash,
        peer_id: [b'a'; 20],
        downloaded: 0,
        left: 5,
        uploaded: 0,
        event: AnnounceEvent::Started,
        ip_address: 0,
        key: 0,
        num_want: -1,
        port: 4000,
    })
    .encode(&mut pkt);
    let answer = client
        .exchange(&pkt, Duration::from_secs(5))
        .expect("answer");
    match decode_response(&answer, Family::V4, 10) {
        Ok(UdpResponse::Announce(_)) => Ok(()),
        Ok(UdpResponse::Error(e)) => Err(String::from_utf8_lossy(e.message).into_owned()),
        other => panic!("unexpected answer {other:?}"),
    }
}

fn http_announce(tracker: SocketAddr, hash: [u8; 20]) -> Vec<u8> {
    let (status, body) = http_get(
        tracker,
        &format!(
            "/announce?info_hash={}&peer_id={}&port=4001&left=3",
            url_bytes(&hash),
            url_bytes(&[b'b'; 20])
        ),
    );
    assert_eq!(status, 200);
    body
}

/// A PPSTP CONNECT joining swarm `swarm` as a leech; returns the HTTP status.
fn ppstp_join(addr: SocketAddr, peer: &str, swarm: &str) -> u16 {
    let body = format!(
        r#"{{"PPSPTrackerProtocol":{{"version":1,"request_type":"CONNECT","transaction_id":"1","peer_id":"{peer}","connect":{{"swarm_action":[{{"swarm_id":"{swarm}","action":"JOIN","peer_mode":"LEECH"}}]}}}}}}"#
    );
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        s,
        "POST / HTTP/1.1\r\nContent-Type: application/ppsp-tracker+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    raw.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {raw}"))
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write the list");
}

#[test]
fn allow_mode_serves_listed_swarms_on_every_front_end_and_reloads() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let list = dir.path().join("allow.txt");
    write(
        &list,
        &format!("# test swarms\n{}\n", hex(&H1).to_uppercase()),
    );
    let server = start_server(&[
        "access_list.mode=\"allow\"",
        &format!("access_list.path=\"{}\"", list.display()),
    ]);
    let udp = server.bt_udp_addrs()[0];
    let http = server.bt_http_addrs()[0];
    let ppstp = server.ppstp_addr().expect("ppstp");

    assert_eq!(udp_announce(udp, H1), Ok(()));
    assert_eq!(
        udp_announce(udp, H2),
        Err("info_hash not allowed".to_owned())
    );
    assert!(http_announce(http, H1).starts_with(b"d8:complete"));
    assert_eq!(
        http_announce(http, H2),
        b"d14:failure reason21:info_hash not allowede".to_vec()
    );
    assert_eq!(ppstp_join(ppstp, "p1", &hex(&H1)), 200);
    assert_eq!(ppstp_join(ppstp, "p2", &hex(&H2)), 403);
    let text = server.metrics_text();
    assert!(
        text.contains("ppsp_bt_udp_requests_total{outcome=\"access_denied\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("ppsp_bt_http_requests_total{outcome=\"access_denied\"} 1"),
        "{text}"
    );
    // H1 as raw info-hash bytes (BitTorrent) and as a hex string (PPSTP); nothing of H2.
    assert_eq!(server.status()["swarms"], 2);

    // Reload: now H2 only.
    write(&list, &format!("{}\n", hex(&H2)));
    assert_eq!(server.reload_access_list(), Ok(1));
    assert_eq!(udp_announce(udp, H2), Ok(()));
    assert!(udp_announce(udp, H1).is_err());
    // A bad file keeps the list in force.
    write(&list, "this is not hex\n");
    assert!(server.reload_access_list().is_err());
    assert_eq!(udp_announce(udp, H2), Ok(()));
    assert!(udp_announce(udp, H1).is_err());
    server.shutdown();
}

#[test]
fn a_bad_list_stops_the_start() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let list = dir.path().join("deny.txt");
    write(&list, "12345\n");
    let config = ppsp_tracker::config::Config::load(
        None,
        &[
            "access_list.mode=\"deny\"".to_owned(),
            format!("access_list.path=\"{}\"", list.display()),
            "ppstp.listen=127.0.0.1:0".to_owned(),
            "admin.enabled=false".to_owned(),
            "bt_udp.listen=127.0.0.1:0".to_owned(),
            "bt_http.listen=127.0.0.1:0".to_owned(),
        ],
    )
    .expect("the configuration itself is valid");
    let err = match ppsp_tracker::server::Server::start(&config) {
        Ok(_) => panic!("a bad list must stop the start"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("line 1"), "{err}");
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_binary_reloads_the_list_on_sighup() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let list = dir.path().join("deny.txt");
    write(&list, &format!("{}\n", hex(&H1)));
    let port = free_port();
    let udp: SocketAddr = ([127, 0, 0, 1], port).into();
    let child = Running(
        Command::new(env!("CARGO_BIN_EXE_ppsp-tracker"))
            .arg("serve")
            .args([
                "--set",
                "ppstp.enabled=false",
                "--set",
                "admin.enabled=false",
            ])
            .args(["--set", "bt_http.enabled=false"])
            .args(["--set", &format!("bt_udp.listen=[\"{udp}\"]")])
            .args(["--set", "access_list.mode=\"deny\""])
            .args(["--set", &format!("access_list.path=\"{}\"", list.display())])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ppsp-tracker"),
    );
    // Wait until it answers.
    let deadline = Instant::now() + Duration::from_secs(20);
    let probe = UdpClient::new(udp);
    loop {
        let mut pkt = Vec::new();
        ppsp_tracker::protocol::bt_udp::wire::ConnectRequest { transaction_id: 1 }.encode(&mut pkt);
        if probe.exchange(&pkt, Duration::from_millis(200)).is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "the binary did not start");
    }
    assert!(udp_announce(udp, H1).is_err());
    assert_eq!(udp_announce(udp, H2), Ok(()));

    write(&list, &format!("{}\n", hex(&H2)));
    let pid = child.0.id().to_string();
    let sent = Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill");
    assert!(sent.success());
    // The reload happens on the signal thread; poll for its effect.
    let deadline = Instant::now() + Duration::from_secs(10);
    while udp_announce(udp, H1).is_err() {
        assert!(Instant::now() < deadline, "SIGHUP did not reload the list");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(udp_announce(udp, H2).is_err());
    let mut child = child;
    assert!(
        child.0.try_wait().expect("status").is_none(),
        "still running"
    );
}
