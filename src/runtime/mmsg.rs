//! Batched datagram I/O on Linux: `recvmmsg(2)` takes up to a configured batch of datagrams in one
//! system call and `sendmmsg(2)` sends all their answers in one more, so a busy UDP socket
//! costs two syscalls per batch instead of two per datagram, on the epoll back-end as well.
//!
//! Every buffer is allocated once per worker and socket turn state ([`MmsgBatch`]) and reused:
//! receive slots of [`SLOT_BYTES`], source-address and control-data storage (a receive
//! timestamp while the socket's load control wants it), one answer vector per slot (grown
//! once to its working size), and the `mmsghdr`/`iovec` arrays the kernel reads and writes.
//! A datagram longer than a slot is flagged `MSG_TRUNC` by the kernel; its first bytes go to
//! [`DatagramWorker::on_oversized`], which answers with the protocol's error or drops it.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::panic::AssertUnwindSafe;

use socket2::SockAddr;

use super::datagram::{ControlBuf, DatagramStats, Sojourn, CONTROL_BYTES, DATAGRAMS_PER_TURN};
use super::stats::bump;
use super::{DatagramCtx, DatagramWorker, PREFETCH_AHEAD};

/// Most datagrams one `recvmmsg` call may take (the configured batch is clamped to it).
pub(crate) const MAX_BATCH: usize = 1024;

/// Receive slot size: a BEP 15 scrape of 99 info-hashes (the default limit is 74, what fits
/// a 1500-byte packet); a larger datagram is cut to it and handed to
/// [`DatagramWorker::on_oversized`]. With the io_uring back-end's header and
/// address in front, a receive buffer is 2 KiB, two to a page: every buffer in circulation
/// is touched as the ring turns, so 4 KiB slots made the ring's resident memory twice as
/// large for datagrams that are a few hundred bytes.
pub(crate) const SLOT_BYTES: usize = 2004;

/// The reusable buffers of one worker's batched datagram I/O.
///
/// The receive headers point at their slot and address storage once and for all (heap
/// memory that never moves); after a call only the address lengths of the headers the kernel
/// filled are reset. Answers go out through headers of their own, so a batch costs work for
/// the datagrams it holds, not for the batch size.
pub(crate) struct MmsgBatch {
    /// Datagrams per call (1..=[`MAX_BATCH`]).
    batch: usize,
    slots: Vec<u8>,
    names: Vec<libc::sockaddr_storage>,
    /// Control data of each slot (a receive timestamp while the socket's are on).
    controls: Vec<ControlBuf>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
    send_iovecs: Vec<libc::iovec>,
    send_headers: Vec<libc::mmsghdr>,
    answers: Vec<Vec<u8>>,
    /// Length of the source address (in `names`) of each slot with an answer to send: the
    /// answer goes back to the address as the kernel wrote it, never re-encoded.
    dests: Vec<Option<libc::socklen_t>>,
}

impl MmsgBatch {
    /// Buffers for `batch` datagrams per call (clamped to 1..=[`MAX_BATCH`]).
    pub(crate) fn new(batch: usize) -> Self {
        let batch = batch.clamp(1, MAX_BATCH);
        let mut b = MmsgBatch {
            batch,
            slots: vec![0u8; batch * SLOT_BYTES],
            // SAFETY: `sockaddr_storage` is plain old data; all-zero bytes are a valid value.
            names: vec![unsafe { std::mem::zeroed() }; batch],
            controls: vec![ControlBuf([0; CONTROL_BYTES]); batch],
            iovecs: Vec::with_capacity(batch),
            // SAFETY: `mmsghdr` is plain old data (pointers and integers); zero is valid.
            headers: vec![unsafe { std::mem::zeroed() }; batch],
            send_iovecs: Vec::with_capacity(batch),
            // SAFETY: as above.
            send_headers: vec![unsafe { std::mem::zeroed() }; batch],
            answers: (0..batch).map(|_| Vec::new()).collect(),
            dests: (0..batch).map(|_| None).collect(),
        };
        for chunk in b.slots.chunks_exact_mut(SLOT_BYTES) {
            b.iovecs.push(libc::iovec {
                iov_base: chunk.as_mut_ptr().cast(),
                iov_len: SLOT_BYTES,
            });
        }
        for (((header, iov), name), control) in b
            .headers
            .iter_mut()
            .zip(b.iovecs.iter_mut())
            .zip(b.names.iter_mut())
            .zip(b.controls.iter_mut())
        {
            header.msg_hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
            header.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
            header.msg_hdr.msg_iov = iov;
            header.msg_hdr.msg_iovlen = 1;
            header.msg_hdr.msg_control = control.0.as_mut_ptr().cast();
            header.msg_hdr.msg_controllen = CONTROL_BYTES as _;
        }
        b
    }

    /// The payload received in slot `i` (of the last call), as far as the slot holds it.
    fn received(&self, i: usize) -> &[u8] {
        let len = self.headers.get(i).map_or(0, |h| h.msg_len as usize);
        slot_payload(&self.slots, i, len)
    }

    /// The control data received with slot `i` (of the last call): empty unless the socket's
    /// receive timestamps are on.
    fn control(&self, i: usize) -> &[u8] {
        let len = self.headers.get(i).map_or(0, |h| h.msg_hdr.msg_controllen);
        self.controls
            .get(i)
            .map_or(&[], |c| &c.0[..len.min(CONTROL_BYTES)])
    }

    /// Makes the first `used` receive headers ready for the next call: the kernel wrote the
    /// source address and control lengths (and the output fields) of those.
    fn rearm(&mut self, used: usize) {
        for header in self.headers.iter_mut().take(used) {
            header.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
            header.msg_hdr.msg_controllen = CONTROL_BYTES as _;
            header.msg_hdr.msg_flags = 0;
            header.msg_len = 0;
        }
    }
}

/// What a turn of [`serve_turn_batched`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TurnServed {
    /// Datagrams received.
    pub served: usize,
    /// Every batch was full: datagrams may still be waiting (the caller must resume without
    /// waiting for an event).
    pub full: bool,
}

/// Serves up to [`DATAGRAMS_PER_TURN`] datagrams from `socket` in batches, each datagram
/// judged by `sojourn` (which sets `ctx.ready_at` and `ctx.shed` of the datagrams with a
/// receive timestamp).
pub(crate) fn serve_turn_batched(
    socket: &mio::net::UdpSocket,
    ctx: &mut DatagramCtx,
    sojourn: &mut Sojourn,
    worker: &mut dyn DatagramWorker,
    stats: &DatagramStats,
    batch: &mut MmsgBatch,
) -> TurnServed {
    let batches = (DATAGRAMS_PER_TURN / batch.batch).max(1);
    let mut served = 0;
    for _ in 0..batches {
        let (got, full) = serve_batch(socket, ctx, sojourn, worker, stats, batch);
        served += got;
        if !full {
            return TurnServed {
                served,
                full: false,
            };
        }
    }
    TurnServed { served, full: true }
}

/// The first `len` bytes (at most a slot) received in slot `i` of `slots`.
fn slot_payload(slots: &[u8], i: usize, len: usize) -> &[u8] {
    let start = i * SLOT_BYTES;
    slots.get(start..start + len.min(SLOT_BYTES)).unwrap_or(&[])
}

/// Serves one batch from `socket`: receives up to `batch.batch` datagrams, hands each to the
/// service (judged by `sojourn` first), and sends the answers with `sendmmsg`. Returns the
/// datagrams received and whether the batch was full (datagrams may still be waiting: the
/// caller resumes without waiting for an event).
pub(crate) fn serve_batch(
    socket: &mio::net::UdpSocket,
    ctx: &mut DatagramCtx,
    sojourn: &mut Sojourn,
    worker: &mut dyn DatagramWorker,
    stats: &DatagramStats,
    batch: &mut MmsgBatch,
) -> (usize, bool) {
    let fd = socket.as_raw_fd();
    // SAFETY: `headers` holds `batch.batch` entries, each pointing at a live iovec of a slot of
    // SLOT_BYTES bytes and at a sockaddr_storage, all owned by `batch` and not moved or
    // otherwise borrowed during the call; the kernel writes at most those sizes.
    let got = unsafe {
        libc::recvmmsg(
            fd,
            batch.headers.as_mut_ptr(),
            batch.batch as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if got < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::WouldBlock && e.kind() != io::ErrorKind::Interrupted {
            // Errors queued on the socket (ICMP reports) are returned once each.
            tracing::debug!(worker = ctx.worker, "recvmmsg: {e}");
            return (0, true);
        }
        return (0, e.kind() == io::ErrorKind::Interrupted);
    }
    let got = got as usize;
    let mut to_send = 0;
    let got = got.min(batch.batch);
    if got > 0 {
        worker.on_batch();
        sojourn.start_batch();
    }
    for i in 0..got.min(PREFETCH_AHEAD) {
        worker.prefetch(batch.received(i));
    }
    for i in 0..got {
        if i + PREFETCH_AHEAD < got {
            worker.prefetch(batch.received(i + PREFETCH_AHEAD));
        }
        batch.dests[i] = None;
        let (len, flags, namelen) = {
            let h = &batch.headers[i];
            (
                h.msg_len as usize,
                h.msg_hdr.msg_flags,
                h.msg_hdr.msg_namelen,
            )
        };
        bump(&stats.received, 1);
        bump(&stats.bytes_in, len as u64);
        // SAFETY: the kernel wrote a socket address of `namelen` bytes into this storage.
        let name = unsafe { SockAddr::new(batch.names[i], namelen) };
        let src: Option<SocketAddr> = name.as_socket();
        let Some(src) = src else {
            bump(&stats.unanswered, 1);
            continue;
        };
        let truncated = flags & libc::MSG_TRUNC != 0;
        sojourn.judge(batch.control(i), ctx);
        let ctx = &*ctx;
        let packet = slot_payload(&batch.slots, i, len);
        let out = &mut batch.answers[i];
        out.clear();
        let answer = std::panic::catch_unwind(AssertUnwindSafe(|| {
            if truncated {
                worker.on_oversized(ctx, src, packet, out)
            } else {
                worker.on_datagram(ctx, src, packet, out)
            }
        }));
        match answer {
            Ok(true) if !out.is_empty() => {
                batch.dests[i] = Some(namelen);
                to_send += 1;
            }
            Ok(_) => bump(&stats.unanswered, 1),
            Err(_) => {
                tracing::error!(worker = ctx.worker, "datagram service panicked");
                bump(&stats.panics, 1);
            }
        }
    }
    if to_send > 0 {
        send_answers(fd, ctx, stats, batch, got);
    }
    batch.rearm(got);
    (got, got == batch.batch)
}

/// Sends every answer of the first `received` slots that has a destination, in as few
/// `sendmmsg` calls as the socket allows; answers the socket cannot take now are dropped and
/// counted (UDP clients retransmit; queueing would let a flood grow memory).
fn send_answers(
    fd: std::os::fd::RawFd,
    ctx: &DatagramCtx,
    stats: &DatagramStats,
    batch: &mut MmsgBatch,
    received: usize,
) {
    batch.send_iovecs.clear();
    let mut n = 0;
    for i in 0..received {
        let Some(namelen) = batch.dests[i] else {
            continue;
        };
        let out = &mut batch.answers[i];
        batch.send_iovecs.push(libc::iovec {
            iov_base: out.as_mut_ptr().cast(),
            iov_len: out.len(),
        });
        let h = &mut batch.send_headers[n];
        h.msg_hdr.msg_name = (&mut batch.names[i] as *mut libc::sockaddr_storage).cast();
        h.msg_hdr.msg_namelen = namelen;
        h.msg_hdr.msg_iovlen = 1;
        n += 1;
    }
    // The iovec vector is filled (never grows past its capacity): point at its entries now.
    for (h, iov) in batch
        .send_headers
        .iter_mut()
        .zip(batch.send_iovecs.iter_mut())
    {
        h.msg_hdr.msg_iov = iov;
    }
    let mut done = 0;
    while done < n {
        // SAFETY: headers[done..n] point at iovecs over the answer vectors and at the source
        // addresses in `names` (as recvmmsg wrote them), all owned by `batch` and unchanged during the call; the kernel
        // only reads them (and writes `msg_len`).
        let sent = unsafe {
            libc::sendmmsg(
                fd,
                batch.send_headers.as_mut_ptr().add(done),
                (n - done) as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if sent < 0 {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => bump(&stats.send_dropped, (n - done) as u64),
                _ => {
                    tracing::debug!(worker = ctx.worker, "sendmmsg: {e}");
                    // The first answer failed (bad destination...): skip it, send the rest.
                    bump(&stats.send_errors, 1);
                    done += 1;
                    continue;
                }
            }
            break;
        }
        let sent = sent as usize;
        for h in batch.send_headers.iter().skip(done).take(sent) {
            bump(&stats.sent, 1);
            bump(&stats.bytes_out, u64::from(h.msg_len));
        }
        if sent == 0 {
            break;
        }
        done += sent;
    }
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::runtime::{DatagramService, DatagramSpec, Runtime, RuntimeConfig};

    /// Answers each datagram with the worker index and the packet.
    struct Echo;

    impl DatagramService for Echo {
        fn worker(&self, _worker: usize) -> Box<dyn DatagramWorker> {
            Box::new(Echo)
        }
    }

    impl DatagramWorker for Echo {
        fn on_datagram(
            &mut self,
            ctx: &DatagramCtx,
            _src: SocketAddr,
            packet: &[u8],
            out: &mut Vec<u8>,
        ) -> bool {
            out.push(ctx.socket as u8);
            out.extend_from_slice(packet);
            true
        }
    }

    fn free_udp_port() -> u16 {
        loop {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            let port = s.local_addr().unwrap().port();
            drop(s);
            if UdpSocket::bind(("::1", port)).is_ok() {
                return port;
            }
        }
    }

    #[test]
    fn bursts_from_many_sources_are_answered_to_each_source_and_oversize_is_dropped() {
        let port = free_udp_port();
        let specs = vec![
            DatagramSpec {
                name: "v4".to_owned(),
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                service: Arc::new(Echo),
            },
            // IPv6-only, so it can share the port number with the IPv4 socket.
            DatagramSpec {
                name: "v6".to_owned(),
                addr: format!("[::1]:{port}").parse().unwrap(),
                service: Arc::new(Echo),
            },
        ];
        let config = RuntimeConfig {
            workers: 1,
            // Smaller than a burst, so that one turn takes several batches.
            datagram_batch: 8,
            ..RuntimeConfig::default()
        };
        let mut rt = Runtime::start_with(&config, Vec::new(), specs, Vec::new()).unwrap();
        let addrs = rt.datagram_addrs();
        assert_eq!(addrs[0].1.port(), port);
        assert_eq!(addrs[1].1.port(), port);

        // Eight sources each send a burst before reading anything, so that the worker finds
        // many datagrams per recvmmsg call (128 in all: well within a default receive buffer,
        // where each small datagram takes about a kilobyte).
        let clients: Vec<UdpSocket> = (0..8)
            .map(|_| {
                let c = UdpSocket::bind("127.0.0.1:0").unwrap();
                c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                c
            })
            .collect();
        for (c_index, c) in clients.iter().enumerate() {
            for i in 0..16u8 {
                c.send_to(&[c_index as u8, i], addrs[0].1).unwrap();
            }
        }
        for (c_index, c) in clients.iter().enumerate() {
            let mut seen = Vec::new();
            let mut buf = [0u8; 64];
            for _ in 0..16 {
                let (n, from) = c.recv_from(&mut buf).unwrap();
                assert_eq!(from, addrs[0].1);
                assert_eq!(n, 3);
                assert_eq!(buf[0], 0, "answered by the IPv4 socket");
                assert_eq!(buf[1], c_index as u8, "an answer for another source");
                seen.push(buf[2]);
            }
            seen.sort_unstable();
            assert_eq!(seen, (0..16).collect::<Vec<u8>>());
        }

        // The IPv6 socket answers IPv6 clients; a datagram over a slot is dropped.
        let c6 = UdpSocket::bind("[::1]:0").unwrap();
        c6.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c6.send_to(&vec![7u8; SLOT_BYTES + 1], addrs[1].1).unwrap();
        c6.send_to(b"v6", addrs[1].1).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = c6.recv_from(&mut buf).unwrap();
        assert_eq!(from, addrs[1].1);
        assert_eq!(&buf[..n], b"\x01v6");

        let stats = rt.stats();
        let deadline = Instant::now() + Duration::from_secs(10);
        while stats.datagrams[0].totals().sent < 128 || stats.datagrams[1].totals().sent < 1 {
            assert!(Instant::now() < deadline, "answers not counted");
            std::thread::sleep(Duration::from_millis(10));
        }
        let v4 = stats.datagrams[0].totals();
        assert_eq!((v4.received, v4.sent, v4.bytes_out), (128, 128, 384));
        let v6 = stats.datagrams[1].totals();
        assert_eq!((v6.received, v6.sent, v6.unanswered), (2, 1, 1));
        rt.shutdown();
    }
}
