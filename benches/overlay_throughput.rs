//! Overlay messages per second per node, security off (`overlay.security = "insecure-test"`:
//! plain TCP, unsigned) against on (`"certificate"`: TLS 1.3 links, every message signed with
//! ECDSA P-256 and verified, RFC 6940 §6.3.4), in one run so the ratio is meaningful on a
//! noisy machine. Two in-process nodes on 127.0.0.1; node A keeps `INFLIGHT` application
//! requests (exp_a, answered at once by B) outstanding to node B for `SECONDS` seconds; each is
//! one request and one answer. Messages per second = what node A sent and received (its
//! `ppsp_overlay_messages_*_total` counters) over the elapsed time.
//!
//! `cargo bench --bench overlay_throughput` (SECONDS and INFLIGHT from the environment).

use std::time::{Duration, Instant};

use ppsp_tracker::overlay::chord::{Destination, LocalOutcome, LocalRequest};
use ppsp_tracker::overlay::config::OverlayConfig;
use ppsp_tracker::overlay::transport::OverlayHandle;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn messages(h: &OverlayHandle) -> u64 {
    h.metrics_text()
        .lines()
        .filter(|l| {
            l.starts_with("ppsp_overlay_messages_sent_total")
                || l.starts_with("ppsp_overlay_messages_received_total")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn wait_joined(h: &OverlayHandle) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while h.status_json()["joined"] != true {
        assert!(Instant::now() < deadline, "node did not join");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// (requests per second, overlay messages per second at node A).
fn run(security: &str, seconds: u64, inflight: usize) -> (f64, f64) {
    let base = OverlayConfig {
        enabled: true,
        listen: vec!["127.0.0.1:0".to_owned()],
        security: security.to_owned(),
        ..OverlayConfig::default()
    };
    let a = OverlayHandle::start(&base).unwrap();
    wait_joined(&a);
    let b = OverlayHandle::start(&OverlayConfig {
        bootstrap: vec![a.listen_addr().to_string()],
        ..base.clone()
    })
    .unwrap();
    wait_joined(&b);
    let to = Destination::Node(b.node_id());
    let request = || LocalRequest::App {
        destination: to,
        body: b"ping".to_vec(),
    };
    // Warm-up: the link and its TLS session exist before the clock starts.
    for _ in 0..10 {
        let _ = a.request(request(), Duration::from_secs(10));
    }
    let before = messages(&a);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut pending = std::collections::VecDeque::new();
    let mut done = 0u64;
    let mut failed = 0u64;
    while Instant::now() < deadline && done < 10_000_000 {
        while pending.len() < inflight {
            pending.push_back(a.submit(request()).unwrap());
        }
        let rx: crossbeam::channel::Receiver<LocalOutcome> = pending.pop_front().unwrap();
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(LocalOutcome::App(_)) => done += 1,
            _ => failed += 1,
        }
    }
    for rx in pending {
        let _ = rx.recv_timeout(Duration::from_secs(10));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let msgs = messages(&a) - before;
    assert!(failed * 100 <= done, "{failed} failed of {done}");
    b.shutdown();
    a.shutdown();
    (done as f64 / elapsed, msgs as f64 / elapsed)
}

fn main() {
    // `cargo test --benches` runs bench targets with `--bench` absent: keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let seconds = if quick { 1 } else { env("SECONDS", 5) };
    let inflight = env("INFLIGHT", 64) as usize;
    let (req_off, msg_off) = run("insecure-test", seconds, inflight);
    let (req_on, msg_on) = run("certificate", seconds, inflight);
    println!("overlay throughput, node A, {seconds} s each, {inflight} requests in flight:");
    println!(
        "  security off (insecure-test): {req_off:>9.0} requests/s  {msg_off:>9.0} messages/s"
    );
    println!("  security on  (certificate):   {req_on:>9.0} requests/s  {msg_on:>9.0} messages/s");
    println!("  on/off: {:.2}", msg_on / msg_off.max(1.0));
}
