//! libtorrent (Debian `python3-libtorrent`, the library inside qBittorrent and Deluge) against
//! our tracker: two sessions in one process, a seeder and a leecher, meet only through the
//! tracker, over HTTP and UDP together (one torrent listing both), on IPv4 and on IPv6. Every
//! announce must get a reply libtorrent accepts, the download must finish, and the swarm must
//! then count one completion per member that completed.
//!
//! libtorrent keeps one BEP 15 connection id per tracker for the whole process and sends it
//! from whichever session's socket announces: the id must be tied to the client's address,
//! not to its port. Without `python3-libtorrent` the test fails under `CI=true` and is skipped
//! (with a message) elsewhere.

mod bt_support;
use bt_support::bencoded_int;

use std::process::{Command, Stdio};

use bt_support::{http_get, start_server, url_bytes};

/// The Python interpreter that has Debian's `libtorrent` module (the system one, not a
/// virtual environment's), if any.
fn python_with_libtorrent() -> Option<&'static str> {
    let found = ["/usr/bin/python3", "python3"].into_iter().find(|py| {
        Command::new(py)
            .args(["-c", "import libtorrent"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if found.is_none() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("python3-libtorrent is not installed; CI must install it");
        }
        eprintln!("SKIPPED: python3-libtorrent is missing (apt-get install -y python3-libtorrent)");
    }
    found
}

/// Seeds 1 MiB from one libtorrent session to another through the trackers given as
/// arguments (`LT_LISTEN` is the listen address). Prints one JSON line: whether the leecher
/// finished, the info-hash, each session's tracker replies and errors.
const SWARM: &str = r#"
import libtorrent as lt, sys, os, time, tempfile, json
trackers = sys.argv[1:]
listen = os.environ['LT_LISTEN']
base = tempfile.mkdtemp()
seed_dir, leech_dir = os.path.join(base, 'seed'), os.path.join(base, 'leech')
os.makedirs(seed_dir); os.makedirs(leech_dir)
with open(os.path.join(seed_dir, 'content.bin'), 'wb') as f:
    f.write(os.urandom(1 << 20))
fs = lt.file_storage(); lt.add_files(fs, os.path.join(seed_dir, 'content.bin'))
ct = lt.create_torrent(fs, 1 << 16)
for i, t in enumerate(trackers):
    ct.add_tracker(t, i)
lt.set_piece_hashes(ct, seed_dir)
ti = lt.torrent_info(lt.bencode(ct.generate()))
def session():
    return lt.session({'listen_interfaces': listen, 'enable_dht': False, 'enable_lsd': False,
        'enable_upnp': False, 'enable_natpmp': False, 'announce_to_all_trackers': True,
        'announce_to_all_tiers': True, 'allow_multiple_connections_per_ip': True,
        'alert_mask': lt.alert.category_t.status_notification
            | lt.alert.category_t.error_notification | lt.alert.category_t.tracker_notification})
seeder, leecher = session(), session()
hs = seeder.add_torrent({'ti': ti, 'save_path': seed_dir, 'flags': lt.torrent_flags.seed_mode})
hl = leecher.add_torrent({'ti': lt.torrent_info(ti), 'save_path': leech_dir})
replies, errors = {}, {}
deadline = time.time() + 120
finished_at = None
last_kick = time.time()
while time.time() < deadline:
    for name, s in (('seeder', seeder), ('leecher', leecher)):
        for a in s.pop_alerts():
            if isinstance(a, lt.tracker_reply_alert):
                replies.setdefault(name, {})[a.tracker_url()] = a.num_peers
            elif isinstance(a, lt.tracker_error_alert):
                errors.setdefault(name, {})[a.tracker_url()] = a.message()
    if hl.status().is_seeding and finished_at is None:
        finished_at = time.time()
    # Once finished, the `completed` announces need a moment to reach every tracker.
    if finished_at is not None and time.time() - finished_at > 3:
        break
    if finished_at is None and time.time() - last_kick > 5:
        hs.force_reannounce(); hl.force_reannounce(); last_kick = time.time()
    time.sleep(0.1)
print(json.dumps({'finished': hl.status().is_seeding, 'info_hash': str(ti.info_hashes().v1),
                  'replies': replies, 'errors': errors}))
"#;

fn swarm(python: &str, listen: &str, trackers: &[String]) -> serde_json::Value {
    let out = Command::new(python)
        .args(["-c", SWARM])
        .args(trackers)
        .env("LT_LISTEN", listen)
        .stdin(Stdio::null())
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "libtorrent run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn hex_bytes(hex: &str) -> [u8; 20] {
    let mut out = [0u8; 20];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

#[test]
fn libtorrent_sessions_meet_through_http_and_udp_on_ipv4_and_ipv6() {
    let Some(python) = python_with_libtorrent() else {
        return;
    };
    let ipv6 = std::net::TcpListener::bind("[::1]:0").is_ok();
    let both = if ipv6 {
        r#"["127.0.0.1:0", "[::1]:0"]"#
    } else {
        r#"["127.0.0.1:0"]"#
    };
    let server = start_server(&[
        &format!("bt_udp.listen={both}"),
        &format!("bt_http.listen={both}"),
        // libtorrent re-announces on its own schedule; a short interval keeps the run short.
        "bt_http.limits.announce_interval_secs=5",
        "bt_http.limits.min_announce_interval_secs=1",
        "bt_udp.limits.announce_interval_secs=5",
        "bt_udp.limits.min_announce_interval_secs=1",
    ]);
    let mut runs = vec![("127.0.0.1:0", false)];
    if ipv6 {
        runs.push(("[::1]:0", true));
    }
    for (listen, v6) in runs {
        let pick = |addrs: &[std::net::SocketAddr]| {
            *addrs
                .iter()
                .find(|a| a.is_ipv6() == v6)
                .expect("a listener")
        };
        let http = pick(server.bt_http_addrs());
        let udp = pick(server.bt_udp_addrs());
        let trackers = vec![
            format!("http://{http}/announce"),
            format!("udp://{udp}/announce"),
        ];
        let result = swarm(python, listen, &trackers);
        assert_eq!(result["finished"], true, "{listen}: {result}");
        for session in ["seeder", "leecher"] {
            for url in &trackers {
                assert!(
                    result["replies"][session].get(url).is_some(),
                    "{listen}: {session} got no reply from {url}: {result}"
                );
            }
        }
        assert!(
            result["errors"]
                .as_object()
                .is_none_or(|e| e
                    .values()
                    .all(|per_session| per_session.as_object().is_none_or(|m| m
                        .values()
                        .all(|msg| msg.as_str().is_some_and(|s| s.contains("skipping")))))),
            "{listen}: tracker errors: {result}"
        );
        // The leecher completed once over both protocols (one member: same address and
        // port). Both sessions said `stopped` when they closed: nobody is left, and the
        // swarm still reports its download.
        let hash = hex_bytes(result["info_hash"].as_str().unwrap());
        let (_, scrape) = http_get(http, &format!("/scrape?info_hash={}", url_bytes(&hash)));
        assert_eq!(bencoded_int(&scrape, "downloaded"), 1, "{listen}");
        assert_eq!(bencoded_int(&scrape, "complete"), 0, "{listen}");
        assert_eq!(bencoded_int(&scrape, "incomplete"), 0, "{listen}");
    }
    server.shutdown();
}
