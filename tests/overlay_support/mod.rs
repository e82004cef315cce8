//! Starting real `ppsp-tracker serve` processes with the overlay on loopback, and talking to
//! their admin listeners. Shared by the overlay cluster and capture tests.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

// Also included by the other support module; a test that uses both compiles it twice.
#[allow(clippy::duplicate_mod)]
#[path = "../port_support/mod.rs"]
mod port_support;

/// A free loopback address (see [`port_support::free_port`]).
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port_support::free_port()))
}

/// One tracker process; killed (SIGKILL) when dropped.
pub struct Node {
    pub child: Child,
    pub admin: SocketAddr,
    pub overlay: SocketAddr,
    pub ppstp: SocketAddr,
    pub bt_udp: SocketAddr,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Overlay settings with short timers so that a ring forms and repairs in seconds.
pub fn fast_timers() -> Vec<String> {
    [
        "overlay.chord_update_interval_secs=1",
        "overlay.chord_ping_interval_secs=2",
        "overlay.overlay_reliability_timer_ms=400",
        "overlay.max_retransmissions=3",
        "overlay.replica_holddown_ms=500",
        "overlay.attach_timeout_ms=1500",
        "overlay.link_ack_timeout_ms=3000",
        "overlay.admin_timeout_ms=8000",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// Starts a node whose overlay listens on `overlay` and bootstraps from `bootstrap`, with
/// the default (certificate) security.
pub fn start_node(overlay: SocketAddr, bootstrap: &[SocketAddr]) -> Node {
    start_node_with(overlay, bootstrap, &[])
}

/// A free UDP port on loopback.
pub fn free_udp_addr() -> SocketAddr {
    free_addr()
}

/// [`start_node`] with more `--set` overrides; the BEP 15 UDP tracker listens too.
pub fn start_node_with(overlay: SocketAddr, bootstrap: &[SocketAddr], extra: &[&str]) -> Node {
    let admin = free_addr();
    let ppstp = free_addr();
    let bt_udp = free_udp_addr();
    let list: Vec<String> = bootstrap.iter().map(|a| format!("\"{a}\"")).collect();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ppsp-tracker"));
    cmd.arg("serve");
    let mut sets = vec![
        format!("ppstp.listen={ppstp}"),
        format!("admin.listen={admin}"),
        // A bound address is refused at start, so the nodes' BitTorrent listeners use port 0.
        "bt_udp.listen=127.0.0.1:0".to_owned(),
        "bt_http.listen=127.0.0.1:0".to_owned(),
        "overlay.enabled=true".to_owned(),
        format!("overlay.listen={overlay}"),
        format!("overlay.bootstrap=[{}]", list.join(",")),
        "log.level=warn".to_owned(),
        "bt_udp.enabled=true".to_owned(),
        format!("bt_udp.listen=[\"{bt_udp}\"]"),
        "bt_http.enabled=false".to_owned(),
    ];
    sets.extend(fast_timers());
    sets.extend(extra.iter().map(|s| (*s).to_owned()));
    for s in sets {
        cmd.arg("--set").arg(s);
    }
    cmd.stdout(Stdio::null()).stderr(Stdio::inherit());
    let child = cmd.spawn().expect("start ppsp-tracker");
    let node = Node {
        child,
        admin,
        overlay,
        ppstp,
        bt_udp,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(admin).is_err() {
        assert!(Instant::now() < deadline, "admin {admin} never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    node
}

/// One HTTP/1.1 request with `Connection: close`; (status, body).
pub fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("connect admin");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = match out.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => out[i + 4..].to_vec(),
        None => Vec::new(),
    };
    (status, body)
}

pub fn json(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, serde_json::Value) {
    let (status, body) = http(addr, method, path, body);
    (
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}

/// The `overlay` member of a node's `/status`.
pub fn overlay_status(node: &Node) -> serde_json::Value {
    json(node.admin, "GET", "/status", b"").1["overlay"].clone()
}

/// True when every node is joined and its first successor and predecessor are its ring
/// neighbours in sorted id order.
pub fn ring_is_correct(nodes: &[&Node]) -> bool {
    let statuses: Vec<serde_json::Value> = nodes.iter().map(|n| overlay_status(n)).collect();
    let mut ids: Vec<String> = Vec::new();
    for s in &statuses {
        if s["joined"] != true {
            return false;
        }
        match s["node_id"].as_str() {
            Some(id) => ids.push(id.to_owned()),
            None => return false,
        }
    }
    let mut sorted = ids.clone();
    sorted.sort();
    let n = sorted.len();
    for (s, id) in statuses.iter().zip(&ids) {
        let i = sorted.iter().position(|x| x == id).unwrap();
        let succ = &sorted[(i + 1) % n];
        let pred = &sorted[(i + n - 1) % n];
        if s["successors"][0].as_str() != Some(succ.as_str())
            || s["predecessors"][0].as_str() != Some(pred.as_str())
        {
            return false;
        }
    }
    true
}

/// Polls `check` until it holds or `limit` passes; the time it took.
pub fn wait_until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if check() {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
