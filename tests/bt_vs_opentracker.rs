//! Our tracker and opentracker side by side: the same scripted announces and scrapes are sent
//! to both, over UDP (BEP 15) and over HTTP (BEP 3/23/48), and the answers must agree where
//! the protocols fix them: seeder and leecher counts of announces and scrapes, the peer set a
//! leecher gets in a swarm smaller than its `num_want`, and that an announcer never finds
//! itself in our answers (opentracker's own list may hold the announcer; it is left out before
//! the sets are compared).
//!
//! opentracker (Debian `opentracker`) is built in whitelist mode, so it gets a whitelist of the
//! test's info-hashes in a config file (`access.whitelist`); as root it needs `-u nobody -d DIR`
//! and then reads the whitelist relative to DIR. Without opentracker the test fails under
//! `CI=true` and is skipped elsewhere.

mod bt_support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bt_support::{free_port, http_get, start_server, tool_available, url_bytes, UdpClient};
use ppsp_tracker::protocol::bt_udp::tracker::AnnounceEvent;
use ppsp_tracker::protocol::bt_udp::wire::{
    decode_response, PeerList, ScrapeRequest, UdpRequest, UdpResponse,
};

const H1: [u8; 20] = [0x11; 20];
const H2: [u8; 20] = [0x22; 20];

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts opentracker on 127.0.0.1:`port` (UDP and TCP) with H1 and H2 whitelisted.
fn start_opentracker(dir: &std::path::Path, port: u16) -> Killed {
    let hex = |h: &[u8; 20]| h.iter().map(|b| format!("{b:02x}")).collect::<String>();
    std::fs::write(
        dir.join("whitelist"),
        format!("{}\n{}\n", hex(&H1), hex(&H2)),
    )
    .expect("whitelist");
    // After `-d DIR` opentracker is chrooted there: the whitelist path is relative to DIR.
    std::fs::write(
        dir.join("opentracker.conf"),
        "access.whitelist /whitelist\n",
    )
    .expect("conf");
    let mut cmd = Command::new("opentracker");
    cmd.arg("-f")
        .arg(dir.join("opentracker.conf"))
        .args(["-i", "127.0.0.1"])
        .args(["-p", &port.to_string()])
        .args(["-P", &port.to_string()]);
    if is_root() {
        cmd.args(["-u", "nobody", "-d"]).arg(dir);
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start opentracker");
    Killed(child)
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Waits until a BEP 15 connect is answered (and the whitelist is loaded: an announce of H1
/// gets an announce answer, not an error).
fn wait_ready(tracker: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(15);
    let probe = UdpClient::new(tracker);
    loop {
        let mut pkt = Vec::new();
        ppsp_tracker::protocol::bt_udp::wire::ConnectRequest { transaction_id: 1 }.encode(&mut pkt);
        if let Some(answer) = probe.exchange(&pkt, Duration::from_millis(300)) {
            if let Ok(UdpResponse::Connect(c)) = decode_response(
                &answer,
                ppsp_tracker::protocol::bt_udp::tracker::Family::V4,
                0,
            ) {
                // Port 1 announce then stopped: leaves nothing behind.
                if let UdpResponse::Announce(_) =
                    probe.announce(c.connection_id, H1, 1, 1, AnnounceEvent::Stopped)
                {
                    return;
                }
            }
        }
        assert!(Instant::now() < deadline, "opentracker did not start");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One announce answer, normalised: counts and the listed ports (all peers are 127.0.0.1).
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    seeders: u32,
    leechers: u32,
    ports: BTreeSet<u16>,
}

fn udp_announce(
    tracker: SocketAddr,
    port: u16,
    hash: [u8; 20],
    left: u64,
    event: AnnounceEvent,
) -> Seen {
    let client = UdpClient::new(tracker);
    let cid = client.connect();
    match client.announce(cid, hash, port, left, event) {
        UdpResponse::Announce(a) => {
            let ports = match a.peers {
                PeerList::V4(p) => p.iter().map(|a| a.port()).collect(),
                PeerList::V6(p) => p.iter().map(|a| a.port()).collect(),
            };
            Seen {
                seeders: a.seeders,
                leechers: a.leechers,
                ports,
            }
        }
        other => panic!("{tracker}: expected an announce answer, got {other:?}"),
    }
}

fn udp_scrape(tracker: SocketAddr, hashes: &[[u8; 20]]) -> Vec<(u32, u32)> {
    let client = UdpClient::new(tracker);
    let cid = client.connect();
    let mut flat = Vec::new();
    for h in hashes {
        flat.extend_from_slice(h);
    }
    let mut pkt = Vec::new();
    UdpRequest::Scrape(ScrapeRequest {
        connection_id: cid,
        transaction_id: 3,
        info_hashes: ppsp_tracker::protocol::bt_udp::wire::InfoHashes::new(&flat)
            .expect("whole hashes"),
    })
    .encode(&mut pkt);
    let answer = client
        .exchange(&pkt, Duration::from_secs(5))
        .expect("scrape answered");
    match decode_response(
        &answer,
        ppsp_tracker::protocol::bt_udp::tracker::Family::V4,
        100,
    ) {
        Ok(UdpResponse::Scrape(s)) => s.entries.iter().map(|e| (e.seeders, e.leechers)).collect(),
        other => panic!("{tracker}: expected a scrape answer, got {other:?}"),
    }
}

/// Reads `key` as an integer from a flat bencoded dictionary.
fn bint(body: &[u8], key: &str) -> Option<u32> {
    let pat = format!("{}:{}i", key.len(), key);
    let at = body.windows(pat.len()).position(|w| w == pat.as_bytes())? + pat.len();
    let end = body[at..].iter().position(|b| *b == b'e')? + at;
    std::str::from_utf8(&body[at..end]).ok()?.parse().ok()
}

fn http_announce(tracker: SocketAddr, port: u16, hash: [u8; 20], left: u64, event: &str) -> Seen {
    let target = format!(
        "/announce?info_hash={}&peer_id={}&port={port}&uploaded=0&downloaded=0&left={left}&compact=1&numwant=50{}",
        url_bytes(&hash),
        url_bytes(&[b'p'; 20]),
        if event.is_empty() { String::new() } else { format!("&event={event}") },
    );
    let (status, body) = http_get(tracker, &target);
    assert_eq!(status, 200, "{tracker}: {}", String::from_utf8_lossy(&body));
    let pat = b"5:peers";
    let at = body
        .windows(pat.len())
        .position(|w| w == pat)
        .unwrap_or_else(|| panic!("{tracker}: no peers in {}", String::from_utf8_lossy(&body)))
        + pat.len();
    let colon = body[at..].iter().position(|b| *b == b':').expect("string") + at;
    let len: usize = std::str::from_utf8(&body[at..colon])
        .unwrap()
        .parse()
        .unwrap();
    let peers = &body[colon + 1..colon + 1 + len];
    Seen {
        seeders: bint(&body, "complete").expect("complete"),
        leechers: bint(&body, "incomplete").expect("incomplete"),
        ports: peers
            .chunks_exact(6)
            .map(|c| u16::from_be_bytes([c[4], c[5]]))
            .collect(),
    }
}

fn http_scrape(tracker: SocketAddr, hash: [u8; 20]) -> (u32, u32) {
    let (status, body) = http_get(tracker, &format!("/scrape?info_hash={}", url_bytes(&hash)));
    assert_eq!(status, 200);
    (
        bint(&body, "complete").expect("complete"),
        bint(&body, "incomplete").expect("incomplete"),
    )
}

/// One step of the script: (port, hash, left, event).
type Step = (u16, [u8; 20], u64, AnnounceEvent);

fn script(base: u16) -> Vec<Step> {
    use AnnounceEvent::*;
    vec![
        (base + 1, H1, 100, Started),
        (base + 2, H1, 100, Started),
        (base + 3, H1, 0, Started),
        (base + 4, H2, 0, Started),
        (base + 5, H1, 50, Started),
        // Re-announces: a leecher finishes, another re-announces, one leaves.
        (base + 1, H1, 0, Completed),
        (base + 2, H1, 80, None),
        (base + 5, H1, 50, Stopped),
        (base + 6, H2, 10, Started),
    ]
}

fn event_name(e: AnnounceEvent) -> &'static str {
    match e {
        AnnounceEvent::None => "",
        AnnounceEvent::Completed => "completed",
        AnnounceEvent::Started => "started",
        AnnounceEvent::Stopped => "stopped",
    }
}

/// Compares one answer pair: counts always; peer sets for leechers (both trackers list every
/// other peer of a small swarm to a leecher); never the announcer.
fn compare(step: &Step, ours: &Seen, theirs: &Seen) {
    let (port, _, left, event) = *step;
    let what = format!("announce port {port} left {left} {event:?}");
    assert_eq!(
        (ours.seeders, ours.leechers),
        (theirs.seeders, theirs.leechers),
        "{what}: counts differ (ours {ours:?}, opentracker {theirs:?})"
    );
    assert!(
        !ours.ports.contains(&port),
        "{what}: we listed the announcer: {ours:?}"
    );
    // opentracker may list the announcer itself (its peer list is a plain sample of the
    // swarm); leave it out before comparing sets.
    let mut theirs_ports = theirs.ports.clone();
    theirs_ports.remove(&port);
    if left > 0 && event != AnnounceEvent::Stopped {
        assert_eq!(
            ours.ports, theirs_ports,
            "{what}: peer sets differ (opentracker: {theirs:?})"
        );
    } else {
        // A seeder: we send only leechers; whatever we list, opentracker knows too.
        assert!(
            ours.ports.is_subset(&theirs_ports),
            "{what}: ours {ours:?} vs opentracker {theirs:?}"
        );
    }
}

#[test]
fn udp_and_http_answers_agree_with_opentracker() {
    if !tool_available("opentracker", "opentracker") {
        return;
    }
    let dir = tempfile::tempdir().expect("temporary folder");
    // opentracker drops privileges to nobody: it must be able to read the folder.
    let _ = Command::new("chmod").arg("755").arg(dir.path()).status();
    let ot_port = free_port();
    let _ot = start_opentracker(dir.path(), ot_port);
    let ot: SocketAddr = ([127, 0, 0, 1], ot_port).into();
    wait_ready(ot);
    let server = start_server(&[]);
    let ours_udp = server.bt_udp_addrs()[0];
    let ours_http = server.bt_http_addrs()[0];

    // UDP: peers on ports 20001.., HTTP: 30001.. (separate peers, same two swarms).
    for step in script(20_000) {
        let (port, hash, left, event) = step;
        let ours = udp_announce(ours_udp, port, hash, left, event);
        let theirs = udp_announce(ot, port, hash, left, event);
        compare(&step, &ours, &theirs);
    }
    assert_eq!(udp_scrape(ours_udp, &[H1, H2]), udp_scrape(ot, &[H1, H2]));
    assert_eq!(
        udp_scrape(ours_udp, &[H1]),
        vec![(2, 1)],
        "H1: 20001, 20003 seed; 20002 leeches"
    );

    for step in script(30_000) {
        let (port, hash, left, event) = step;
        let ours = http_announce(ours_http, port, hash, left, event_name(event));
        let theirs = http_announce(ot, port, hash, left, event_name(event));
        compare(&step, &ours, &theirs);
    }
    for hash in [H1, H2] {
        assert_eq!(http_scrape(ours_http, hash), http_scrape(ot, hash));
    }
    assert_eq!(http_scrape(ours_http, H1), (4, 2));
    server.shutdown();
}
