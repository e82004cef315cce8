//! Real BitTorrent clients end to end: one aria2c seeds a generated file, a second aria2c
//! downloads it, and the only way they can meet is our tracker, once over
//! `http://127.0.0.1:PORT/announce` and once over `udp://127.0.0.1:PORT/announce`.
//!
//! aria2c facts (TESTING.md): it announces to udp:// trackers only through its DHT socket, so
//! the UDP run turns DHT on with no entry point and a fresh DHT file; LPD and peer exchange
//! are off in both runs; every process has its own free ports and `--bt-tracker-interval=2`.
//! Without aria2c the tests fail under `CI=true` and are skipped (with a message) elsewhere.

mod bt_support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bt_support::{content, free_port, make_torrent, start_server, tool_available, write_file};

/// A child process killed (and reaped) when dropped, so no aria2c outlives its test.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// aria2c arguments common to the seeder and the leecher.
fn aria2c(dir: &Path, torrent: &Path, udp: bool, tag: &str, log: &Path) -> Command {
    let mut cmd = Command::new("aria2c");
    cmd.arg(format!("--dir={}", dir.display()))
        .arg(format!("--listen-port={}", free_port()))
        .arg("--bt-enable-lpd=false")
        .arg("--enable-peer-exchange=false")
        .arg("--bt-tracker-interval=2")
        .arg("--bt-tracker-connect-timeout=5")
        .arg("--bt-tracker-timeout=5")
        .arg("--file-allocation=none")
        .arg("--summary-interval=0")
        .arg("--console-log-level=warn")
        .arg("--log-level=info")
        .arg(format!("--log={}", log.display()))
        .arg("--no-conf=true")
        .arg("--check-certificate=false")
        .arg("--max-connection-per-server=1");
    if udp {
        // aria2c sends udp:// announces through its DHT socket only.
        cmd.arg("--enable-dht=true")
            .arg("--enable-dht6=false")
            .arg(format!("--dht-listen-port={}", free_port()))
            .arg(format!(
                "--dht-file-path={}",
                dir.join(format!("dht-{tag}.dat")).display()
            ));
    } else {
        cmd.arg("--enable-dht=false").arg("--enable-dht6=false");
    }
    cmd.arg(torrent.display().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(25)..].join("\n")
}

/// Seeds with one aria2c, downloads with another, and checks the bytes.
fn swarm_through_tracker(udp: bool) {
    if !tool_available("aria2c", "aria2") {
        return;
    }
    let server = start_server(&[]);
    let announce = if udp {
        format!("udp://{}/announce", server.bt_udp_addrs()[0])
    } else {
        format!("http://{}/announce", server.bt_http_addrs()[0])
    };
    let tmp = tempfile::tempdir().expect("temporary folder");
    let seed_dir = tmp.path().join("seed");
    let leech_dir = tmp.path().join("leech");
    std::fs::create_dir_all(&seed_dir).expect("mkdir");
    std::fs::create_dir_all(&leech_dir).expect("mkdir");
    let name = "payload.bin";
    let data = content(3 * 1024 * 1024 + 12_345, if udp { 17 } else { 29 });
    let (torrent, _hash) = make_torrent(name, &data, 256 * 1024, &announce);
    let torrent_path = tmp.path().join("payload.torrent");
    write_file(&torrent_path, &torrent);
    write_file(&seed_dir.join(name), &data);

    let seed_log = tmp.path().join("seed.log");
    let leech_log = tmp.path().join("leech.log");
    let _seeder = Killed(
        aria2c(&seed_dir, &torrent_path, udp, "seed", &seed_log)
            .arg("--check-integrity=true")
            .arg("--seed-ratio=0.0")
            .spawn()
            .expect("start the aria2c seeder"),
    );
    let mut leecher = Killed(
        aria2c(&leech_dir, &torrent_path, udp, "leech", &leech_log)
            .arg("--seed-time=0")
            .spawn()
            .expect("start the aria2c leecher"),
    );

    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = leecher.0.try_wait().expect("wait for the leecher") {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let diagnostics = || {
        format!(
            "server status: {}\n--- seeder log ---\n{}\n--- leecher log ---\n{}",
            server.status(),
            tail(&seed_log),
            tail(&leech_log)
        )
    };
    match status {
        Some(s) if s.success() => {}
        Some(s) => panic!("the leecher failed ({s})\n{}", diagnostics()),
        None => panic!("the download did not finish in 90 s\n{}", diagnostics()),
    }
    let got = std::fs::read(leech_dir.join(name)).expect("downloaded file");
    assert_eq!(got.len(), data.len(), "{}", diagnostics());
    assert!(
        got == data,
        "the downloaded bytes differ\n{}",
        diagnostics()
    );
    // Both clients announced through our tracker.
    let metrics = server.metrics_text();
    let protocol = if udp { "bt_udp" } else { "bt_http" };
    let announces = metrics
        .lines()
        .find(|l| {
            l.starts_with(&format!(
                "ppsp_{protocol}_requests_total{{outcome=\"announce\"}}"
            ))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(announces >= 2, "announces counted: {announces}\n{metrics}");
    server.shutdown();
}

#[test]
fn aria2c_downloads_from_aria2c_through_the_http_tracker() {
    swarm_through_tracker(false);
}

#[test]
fn aria2c_downloads_from_aria2c_through_the_udp_tracker() {
    swarm_through_tracker(true);
}
