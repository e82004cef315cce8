//! Free loopback ports for tests whose servers must know an address before they start (an
//! overlay node's bootstrap list, a client's configuration file).
//!
//! A port learnt by binding port 0 and closing the socket is from the kernel's ephemeral range,
//! so any socket bound to port 0 meanwhile (another test's server, a client, another process)
//! can be handed the same port before the test binds it. Ports here come from below that range
//! instead, where the kernel never assigns on its own, starting at an offset drawn from the
//! process id so that concurrent test binaries walk different sequences.

#![allow(dead_code)]

use std::net::{TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};

/// Lowest port handed out.
const FIRST: u32 = 10_000;

/// A loopback port free for TCP and UDP at the time of the call, below the kernel's ephemeral
/// port range (`net.ipv4.ip_local_port_range`). Falls back to a port-0 port only when that
/// range starts too low to leave room.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    if low > FIRST + 1_000 {
        let span = low - FIRST;
        let start = std::process::id().wrapping_mul(7_919) % span;
        for _ in 0..span {
            let i = NEXT.fetch_add(1, Ordering::Relaxed);
            let port = (FIRST + (start + i.wrapping_mul(13)) % span) as u16;
            if TcpListener::bind(("127.0.0.1", port)).is_ok()
                && UdpSocket::bind(("127.0.0.1", port)).is_ok()
            {
                return port;
            }
        }
    }
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = tcp.local_addr().expect("addr").port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}
