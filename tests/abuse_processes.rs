//! Abuse resistance of whole tracker processes: the overlay port (attack 7) and descriptor
//! exhaustion (attack 8), each from its own loopback source addresses.

mod overlay_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use overlay_support::*;

/// Resident memory bound of a tracker process under attack, MiB.
const RSS_BOUND_MB: u64 = 200;

fn connect_from(source: &str, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    let from: SocketAddr = format!("{source}:0").parse().unwrap();
    socket.bind(&from.into())?;
    socket.connect_timeout(&addr.into(), Duration::from_secs(2))?;
    let s: TcpStream = socket.into();
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    Ok(s)
}

fn rss_mb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

/// Attack 7: silent TCP connections to the overlay port, re-opened all the time from several
/// sources, must not keep a new tracker node from joining.
#[test]
fn silent_overlay_connections_do_not_keep_a_node_from_joining() {
    let a_addr = free_addr();
    let a = start_node_with(
        a_addr,
        &[],
        &["overlay.max_links=16", "overlay.max_links_per_source=4"],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let mut attackers = Vec::new();
    for source in 2..=7 {
        let stop = stop.clone();
        attackers.push(std::thread::spawn(move || {
            let source = format!("127.0.0.{source}");
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let held: Vec<TcpStream> = (0..10)
                    .filter_map(|_| connect_from(&source, a_addr).ok())
                    .collect();
                std::thread::sleep(Duration::from_millis(300));
                drop(held);
            }
        }));
    }
    std::thread::sleep(Duration::from_secs(1));
    let b = start_node(free_addr(), &[a_addr]);
    let took = wait_until(Duration::from_secs(45), "node b joins node a", || {
        ring_is_correct(&[&a, &b])
    });
    let rss = rss_mb(a.child.id());
    stop.store(true, Ordering::Relaxed);
    for t in attackers {
        t.join().unwrap();
    }
    eprintln!(
        "ABUSE attack=7-overlay-silent join_ms={} rss_mb={rss}",
        took.as_millis()
    );
    assert!(rss < RSS_BOUND_MB, "RSS {rss} MiB");
}

/// Attack 8: connections until the process runs out of descriptors. The admin listener must
/// keep answering, the start-up check must name the fix, and accept failures are logged once
/// per episode, not per tick.
#[test]
fn descriptor_exhaustion_never_stops_the_admin_listener() {
    let admin = free_addr();
    let ppstp = free_addr();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ppsp-tracker"));
    cmd.arg("serve");
    for s in [
        format!("ppstp.listen={ppstp}"),
        format!("admin.listen={admin}"),
        "bt_http.enabled=false".to_owned(),
        "bt_udp.enabled=false".to_owned(),
        "server.workers=1".to_owned(),
        "ppstp.max_connections=1000".to_owned(),
        "log.level=info".to_owned(),
    ] {
        cmd.arg("--set").arg(s);
    }
    // SAFETY: setrlimit is async-signal-safe; it only lowers this child's own limit.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 96,
                rlim_max: 96,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start ppsp-tracker");
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let stderr = child.stderr.take().unwrap();
    let reader = {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log.lock().unwrap().push(line);
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(admin).is_err() {
        assert!(Instant::now() < deadline, "admin never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Use up the descriptors: 4 sources x 40 connections, all kept open.
    let mut held = Vec::new();
    for source in 2..=5 {
        for _ in 0..40 {
            if let Ok(mut s) = connect_from(&format!("127.0.0.{source}"), ppstp) {
                let _ = s.write_all(b"G");
                held.push(s);
            }
        }
    }
    std::thread::sleep(Duration::from_millis(1500));
    // Monitoring still gets answers.
    let mut answered = 0;
    let mut lat = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        if let Ok(mut s) = connect_from("127.0.0.9", admin) {
            let _ = s.write_all(b"GET /status HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out);
            if out.starts_with(b"HTTP/1.1 200") {
                answered += 1;
                lat.push(started.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let rss = rss_mb(child.id());
    drop(held);
    let _ = child.kill();
    let _ = child.wait();
    reader.join().unwrap();
    let log = log.lock().unwrap().clone();
    lat.sort();
    eprintln!(
        "ABUSE attack=8-descriptors admin_answered={answered}/20 admin_p99_ms={} rss_mb={rss}",
        lat.last().map_or(0, |d| d.as_millis())
    );
    assert_eq!(answered, 20, "the admin listener answered {answered} of 20");
    assert!(
        log.iter().any(|l| l.contains("LimitNOFILE=")),
        "the start-up check names the fix: {log:#?}"
    );
    let accept_failures = log.iter().filter(|l| l.contains("accept failed")).count();
    assert!(
        (1..=2).contains(&accept_failures),
        "one log line per episode, got {accept_failures}: {log:#?}"
    );
    assert!(rss < RSS_BOUND_MB, "RSS {rss} MiB");
}
