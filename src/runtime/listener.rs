//! Listening sockets: one per worker and listener, all bound to the same address with
//! `SO_REUSEPORT` so that the kernel spreads incoming connections over the workers.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Binds `addr` with `SO_REUSEPORT` and starts listening. Errors name the address.
pub(crate) fn bind_reuseport(addr: SocketAddr, backlog: u32) -> io::Result<std::net::TcpListener> {
    let with_addr =
        |what: &str, e: io::Error| io::Error::new(e.kind(), format!("{what} {addr}: {e}"));
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(|e| with_addr("socket for", e))?;
    if addr.is_ipv6() {
        // IPv6 sockets serve IPv6 only, so that `0.0.0.0:P` and `[::]:P` can both be listed.
        socket
            .set_only_v6(true)
            .map_err(|e| with_addr("IPV6_V6ONLY on", e))?;
    }
    socket
        .set_reuse_address(true)
        .map_err(|e| with_addr("SO_REUSEADDR on", e))?;
    socket
        .set_reuse_port(true)
        .map_err(|e| with_addr("SO_REUSEPORT on", e))?;
    socket
        .set_nonblocking(true)
        .map_err(|e| with_addr("O_NONBLOCK on", e))?;
    socket
        .bind(&addr.into())
        .map_err(|e| with_addr("bind", e))?;
    let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
    socket
        .listen(backlog)
        .map_err(|e| with_addr("listen on", e))?;
    Ok(socket.into())
}

/// Binds `workers` sockets for `addr`. With port 0 the first socket picks the port and the
/// others join it, so every worker serves the same address.
pub(crate) fn bind_group(
    addr: SocketAddr,
    workers: usize,
    backlog: u32,
) -> io::Result<(SocketAddr, Vec<std::net::TcpListener>)> {
    let first = bind_reuseport(addr, backlog)?;
    let bound = first.local_addr()?;
    let mut all = Vec::with_capacity(workers);
    all.push(first);
    for _ in 1..workers {
        all.push(bind_reuseport(bound, backlog)?);
    }
    Ok((bound, all))
}

/// Binds a UDP socket to `addr` with `SO_REUSEPORT`. Errors name the address.
/// `buffer_bytes` > 0 sets the socket's receive and send buffers (the kernel caps them at
/// `net.core.rmem_max` / `wmem_max`).
pub(crate) fn bind_udp_reuseport(
    addr: SocketAddr,
    buffer_bytes: usize,
) -> io::Result<std::net::UdpSocket> {
    let with_addr =
        |what: &str, e: io::Error| io::Error::new(e.kind(), format!("{what} udp {addr}: {e}"));
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| with_addr("socket for", e))?;
    if addr.is_ipv6() {
        // As for TCP: IPv6-only, so an IPv4 socket on the same port can be listed too.
        socket
            .set_only_v6(true)
            .map_err(|e| with_addr("IPV6_V6ONLY on", e))?;
    }
    socket
        .set_reuse_port(true)
        .map_err(|e| with_addr("SO_REUSEPORT on", e))?;
    socket
        .set_nonblocking(true)
        .map_err(|e| with_addr("O_NONBLOCK on", e))?;
    if buffer_bytes > 0 {
        socket
            .set_recv_buffer_size(buffer_bytes)
            .map_err(|e| with_addr("SO_RCVBUF on", e))?;
        socket
            .set_send_buffer_size(buffer_bytes)
            .map_err(|e| with_addr("SO_SNDBUF on", e))?;
    }
    socket
        .bind(&addr.into())
        .map_err(|e| with_addr("bind", e))?;
    Ok(socket.into())
}

/// Binds `workers` UDP sockets for `addr`, all on the port the first one got.
pub(crate) fn bind_udp_group(
    addr: SocketAddr,
    workers: usize,
    buffer_bytes: usize,
) -> io::Result<(SocketAddr, Vec<std::net::UdpSocket>)> {
    let first = bind_udp_reuseport(addr, buffer_bytes)?;
    let bound = first.local_addr()?;
    if let Some(short) = buffer_shortfall(&first, buffer_bytes) {
        tracing::warn!(
            listener = %bound,
            requested = short.requested,
            receive = short.receive,
            send = short.send,
            "server.udp_buffer_bytes is capped by the kernel; raise the caps with \
             `sysctl -w net.core.rmem_max={0} net.core.wmem_max={0}` (persist in /etc/sysctl.d/)",
            short.requested
        );
    }
    let mut all = Vec::with_capacity(workers);
    all.push(first);
    for _ in 1..workers {
        all.push(bind_udp_reuseport(bound, buffer_bytes)?);
    }
    Ok((bound, all))
}

/// A UDP socket whose kernel buffers came out smaller than `server.udp_buffer_bytes` asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BufferShortfall {
    /// Bytes asked for each buffer.
    pub requested: usize,
    /// Usable receive buffer the kernel granted, bytes.
    pub receive: usize,
    /// Usable send buffer the kernel granted, bytes.
    pub send: usize,
}

/// Reads back the buffers of `socket` and reports when either is below `requested` (the
/// kernel silently caps `SO_RCVBUF`/`SO_SNDBUF` at `net.core.rmem_max`/`wmem_max`; it reports
/// twice the usable size, socket(7)). `requested == 0` (kernel default) never falls short.
pub(crate) fn buffer_shortfall(
    socket: &std::net::UdpSocket,
    requested: usize,
) -> Option<BufferShortfall> {
    if requested == 0 {
        return None;
    }
    let socket = socket2::SockRef::from(socket);
    let receive = socket.recv_buffer_size().ok()? / 2;
    let send = socket.send_buffer_size().ok()? / 2;
    (receive < requested || send < requested).then_some(BufferShortfall {
        requested,
        receive,
        send,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sysctl(name: &str) -> usize {
        std::fs::read_to_string(format!("/proc/sys/net/core/{name}"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    #[test]
    fn a_buffer_above_the_kernel_cap_is_reported_and_one_below_is_not() {
        let cap = sysctl("rmem_max").min(sysctl("wmem_max"));
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let over = cap * 4;
        let socket = bind_udp_reuseport(addr, over).unwrap();
        let short = buffer_shortfall(&socket, over).expect("capped buffers are reported");
        assert_eq!(short.requested, over);
        assert!(short.receive < over && short.send < over, "{short:?}");

        let under = 4096.min(cap);
        let socket = bind_udp_reuseport(addr, under).unwrap();
        assert_eq!(buffer_shortfall(&socket, under), None);
        assert_eq!(buffer_shortfall(&socket, 0), None);
    }
}
