//! Listening sockets: one per worker and listener, all bound to the same address with
//! `SO_REUSEPORT` so that the kernel spreads incoming connections over the workers.
//!
//! `SO_REUSEPORT` would also let any other process of the same user bind the same address
//! and take part of the traffic, silently. Before a group is bound, the address is therefore
//! probed with a socket that does not set `SO_REUSEPORT`: if anything holds the address (another
//! tracker, another program, or a second listener of this configuration), the bind fails and
//! start-up stops with an error naming the address.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Binds `addr` with `SO_REUSEPORT` and starts listening. Errors name the address.
pub(crate) fn bind_reuseport(addr: SocketAddr, backlog: u32) -> io::Result<std::net::TcpListener> {
    bind_tcp(addr, backlog, true)
}

/// Binds `addr` without `SO_REUSEPORT` (the port is this listener's alone: a second bind of
/// it fails with `AddrInUse`) and starts listening, non-blocking. Errors name the address.
pub(crate) fn bind_exclusive(addr: SocketAddr, backlog: u32) -> io::Result<std::net::TcpListener> {
    bind_tcp(addr, backlog, false)
}

/// A non-blocking listening socket at `addr`; IPv6 sockets serve IPv6 only.
fn bind_tcp(addr: SocketAddr, backlog: u32, reuse_port: bool) -> io::Result<std::net::TcpListener> {
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
    if reuse_port {
        socket
            .set_reuse_port(true)
            .map_err(|e| with_addr("SO_REUSEPORT on", e))?;
    }
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

/// The error of an address some other socket holds.
fn in_use(kind: &str, addr: SocketAddr, e: &io::Error) -> io::Error {
    io::Error::new(
        io::ErrorKind::AddrInUse,
        format!(
            "{kind} {addr} is already bound by another process or socket (port {}): {e}",
            addr.port()
        ),
    )
}

/// Fails when anything already holds `addr` (a socket without `SO_REUSEPORT` cannot bind it
/// then). Port 0 is always free: the kernel picks an unused port. `SO_REUSEADDR` keeps
/// connections of an earlier run in TIME_WAIT from counting as a holder.
fn probe_tcp(addr: SocketAddr) -> io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        probe.set_only_v6(true)?;
    }
    probe.set_reuse_address(true)?;
    match probe.bind(&addr.into()) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(in_use("tcp", addr, &e)),
        // Other bind errors (address not available, permission) are reported by the real bind.
        _ => Ok(()),
    }
}

/// As [`probe_tcp`] for a UDP address.
fn probe_udp(addr: SocketAddr) -> io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let probe = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        probe.set_only_v6(true)?;
    }
    match probe.bind(&addr.into()) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(in_use("udp", addr, &e)),
        _ => Ok(()),
    }
}

/// Binds `workers` sockets for `addr`, after checking that nothing else holds it. With port 0
/// the first socket picks the port and the others join it, so every worker serves the same
/// address.
pub(crate) fn bind_group(
    addr: SocketAddr,
    workers: usize,
    backlog: u32,
) -> io::Result<(SocketAddr, Vec<std::net::TcpListener>)> {
    probe_tcp(addr)?;
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

/// Binds `workers` UDP sockets for `addr`, all on the port the first one got, after checking
/// that nothing else holds it.
pub(crate) fn bind_udp_group(
    addr: SocketAddr,
    workers: usize,
    buffer_bytes: usize,
) -> io::Result<(SocketAddr, Vec<std::net::UdpSocket>)> {
    probe_udp(addr)?;
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

/// The warning to log when the kernel caps the accept queue of every TCP listener
/// (`listen(2)` silently truncates the backlog to `net.core.somaxconn`) below `backlog`
/// (`server.listen_backlog`), naming the fix; `somaxconn` is the value read from
/// `/proc/sys/net/core/somaxconn` (`None` when it cannot be read: nothing to say).
pub(crate) fn backlog_shortfall(backlog: u32, somaxconn: Option<u32>) -> Option<String> {
    let cap = somaxconn?;
    (backlog > cap).then(|| {
        format!(
            "server.listen_backlog = {backlog} is capped by the kernel at net.core.somaxconn = \
             {cap}: bursts of new connections beyond {cap} are refused; raise the cap with \
             `sysctl -w net.core.somaxconn={backlog}` (persist in /etc/sysctl.d/)"
        )
    })
}

/// `net.core.somaxconn` of this network namespace, when readable.
pub(crate) fn somaxconn() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()?
        .trim()
        .parse()
        .ok()
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
    fn a_backlog_above_somaxconn_is_reported_with_the_sysctl_that_lifts_it() {
        let warning = backlog_shortfall(65535, Some(4096)).expect("capped backlog");
        assert!(
            warning.contains("sysctl -w net.core.somaxconn=65535"),
            "{warning}"
        );
        assert_eq!(backlog_shortfall(4096, Some(4096)), None);
        assert_eq!(backlog_shortfall(65535, None), None);
        // This host's value is readable.
        assert!(somaxconn().is_some_and(|v| v > 0));
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
