//! Overlay faults with real `ppsp-tracker serve` processes on loopback:
//!
//! - (a) The first node, killed and restarted with no bootstrap list, founds an overlay of its
//!   own; the other nodes, which keep their bootstrap list, dial its address again (with
//!   back-off) and their partition check (RFC 6940 §10.7.4.4) merges the two rings.
//! - (b) A node stopped with SIGSTOP keeps its TCP connections open and answers nothing: its
//!   neighbours find it through unacknowledged frames (link ack timeout) and unanswered
//!   Updates, repair the ring and restore three copies of every value; resumed with SIGCONT,
//!   it is a ring member again.

mod overlay_support;

use std::process::Command;
use std::time::{Duration, Instant};

use overlay_support::*;

/// Generous bound for every wait (the machine is shared; the expected times are printed).
const LIMIT: Duration = Duration::from_secs(90);

fn signal(node: &Node, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(node.child.id().to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{sig}");
}

fn ring_of(nodes: &[Option<Node>]) -> bool {
    let refs: Vec<&Node> = nodes.iter().flatten().collect();
    ring_is_correct(&refs)
}

#[test]
fn the_first_node_restarted_without_bootstrap_merges_back_into_the_ring() {
    let addrs: Vec<_> = (0..4).map(|_| free_addr()).collect();
    let mut nodes: Vec<Option<Node>> = vec![Some(start_node(addrs[0], &[]))];
    for a in &addrs[1..] {
        nodes.push(Some(start_node(*a, &addrs[..1])));
    }
    wait_until(LIMIT, "ring of 4 forms", || ring_of(&nodes));

    nodes[0] = None; // SIGKILL
    wait_until(LIMIT, "ring of 3 repairs", || ring_of(&nodes));
    // Restarted as the README starts the first node: no bootstrap list (and, with no key
    // directory, a new certificate and Node-ID at the same address).
    let restarted = Instant::now();
    nodes[0] = Some(start_node(addrs[0], &[]));
    let took = wait_until(
        LIMIT,
        "the restarted first node is in the ring of 4",
        || ring_of(&nodes),
    );
    eprintln!("first node restarted without bootstrap: one ring of 4 again after {took:?}");
    assert!(restarted.elapsed() < LIMIT);
    let status = overlay_status(nodes[0].as_ref().unwrap());
    assert_eq!(
        status["successors"].as_array().map(Vec::len),
        Some(3),
        "{status}"
    );
}

#[test]
fn a_stopped_node_is_found_and_three_copies_are_restored() {
    const NODES: usize = 5;
    const VALUES: usize = 20;
    let addrs: Vec<_> = (0..NODES).map(|_| free_addr()).collect();
    let mut nodes: Vec<Option<Node>> = vec![Some(start_node(addrs[0], &[]))];
    for a in &addrs[1..] {
        nodes.push(Some(start_node(*a, &addrs[..1])));
    }
    wait_until(LIMIT, "ring of 5 forms", || ring_of(&nodes));
    for k in 0..VALUES {
        let (status, ans) = json(
            nodes[0].as_ref().unwrap().admin,
            "PUT",
            &format!("/overlay/value/v-{k}"),
            format!("value-{k}").as_bytes(),
        );
        assert_eq!(status, 200, "{ans}");
    }
    let copies = |nodes: &[Option<Node>]| -> u64 {
        nodes
            .iter()
            .flatten()
            .map(|n| overlay_status(n)["stored_resources"].as_u64().unwrap_or(0))
            .sum()
    };
    wait_until(LIMIT, "three copies of every value", || {
        copies(&nodes) >= 3 * VALUES as u64
    });

    // Stop node 2: its process no longer reads, answers or closes anything.
    let stopped = nodes[2].take().unwrap();
    signal(&stopped, "STOP");
    let at = Instant::now();
    let found = wait_until(LIMIT, "ring of 4 without the stopped node", || {
        ring_of(&nodes)
    });
    let restored = wait_until(
        LIMIT,
        "three copies again among the 4 running nodes",
        || copies(&nodes) >= 3 * VALUES as u64,
    );
    eprintln!(
        "stopped node: ring repaired after {found:?}, three copies after {:?} (bound: link ack \
         timeout 3 s + request retransmissions 6 s + update round 1 s + replica hold-down 0.5 s)",
        at.elapsed()
    );
    let _ = restored;
    for k in 0..VALUES {
        let (status, ans) = json(
            nodes[1].as_ref().unwrap().admin,
            "GET",
            &format!("/overlay/value/v-{k}"),
            b"",
        );
        assert_eq!(status, 200, "v-{k} after the stop: {ans}");
    }

    // Resumed: it rejoins (its old links were dropped by its neighbours).
    signal(&stopped, "CONT");
    nodes[2] = Some(stopped);
    let back = wait_until(LIMIT, "the resumed node is in the ring of 5", || {
        ring_of(&nodes)
    });
    eprintln!("resumed node back in the ring after {back:?}");
}

/// Resource-ID of a name: the first 16 bytes of its SHA-1 (RFC 6940 §10.2).
fn resource(name: &str) -> u128 {
    use sha1::{Digest, Sha1};
    let d = Sha1::digest(name.as_bytes());
    u128::from_be_bytes(d[..16].try_into().unwrap())
}

/// `/status` and `/metrics` never wait for the overlay: while a `GET /overlay/value/...` waits
/// for a stopped node, the admin listener answers them on other connections.
#[test]
fn admin_endpoints_answer_while_an_overlay_request_waits() {
    let addrs: Vec<_> = (0..2).map(|_| free_addr()).collect();
    // A's overlay request must still be waiting when /status and /metrics are asked, however
    // slow a loaded machine makes them: A gives up on the stopped node only after 4 x 3 s of
    // retransmissions (the request ends at once when B is continued).
    let a = start_node_with(
        addrs[0],
        &[],
        &[
            "overlay.overlay_reliability_timer_ms=3000",
            "overlay.link_ack_timeout_ms=30000",
            "overlay.admin_timeout_ms=60000",
        ],
    );
    let b = start_node(addrs[1], &addrs[..1]);
    wait_until(LIMIT, "ring of 2 forms", || ring_is_correct(&[&a, &b]));
    let id = |n: &Node| {
        u128::from_str_radix(overlay_status(n)["node_id"].as_str().unwrap(), 16).unwrap()
    };
    let (ia, ib) = (id(&a), id(&b));
    // A name B is responsible for: in (A, B] on the ring.
    let name = (0..10_000)
        .map(|k| format!("held-by-b-{k}"))
        .find(|n| {
            let r = resource(n);
            if ia < ib {
                r > ia && r <= ib
            } else {
                r > ia || r <= ib
            }
        })
        .unwrap();
    signal(&b, "STOP");
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let admin = a.admin;
    let waiter = {
        let done = done.clone();
        let name = name.clone();
        std::thread::spawn(move || {
            let (status, _) = http(admin, "GET", &format!("/overlay/value/{name}"), b"");
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            status
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let (s1, _) = http(admin, "GET", "/status", b"");
    let (s2, _) = http(admin, "GET", "/metrics", b"");
    let answered_first = !done.load(std::sync::atomic::Ordering::SeqCst);
    signal(&b, "CONT");
    let status = waiter.join().unwrap();
    assert_eq!((s1, s2), (200, 200));
    assert!(
        answered_first,
        "/status and /metrics waited for the overlay request"
    );
    // The waiting request got an answer of its own (the value, or an overlay error/timeout).
    assert!([200, 404, 502, 504].contains(&status), "{status}");
}
