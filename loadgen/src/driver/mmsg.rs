//! Batched datagram I/O on UDP sockets: `sendmmsg` for the requests a worker issues in one
//! round, `recvmmsg` for the replies waiting on a socket, so the generator spends a few system
//! calls per batch instead of two per request. A socket is either connected (every datagram
//! from its bound address to its peer) or bound to the wildcard address and unconnected, each
//! datagram then naming its destination and its own IPv4 source address (`IP_PKTINFO`,
//! ip(7)), so that one socket sends from many loopback addresses.

use std::io;
use std::mem;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::RawFd;

/// Most datagrams handed to the kernel in one call.
pub const BATCH: usize = 64;
/// Largest reply read (a BEP 15 announce reply with 200 IPv6 peers is 3620 bytes).
pub const RECV_BUF: usize = 4096;

/// Datagrams queued for one connected socket, sent in order by [`SendBatch::flush`].
#[derive(Default)]
pub struct SendBatch {
    data: Vec<u8>,
    /// End offset of each queued datagram in `data`.
    ends: Vec<usize>,
    /// Source address of each queued datagram, where it names one (see [`SendBatch::push_from`]).
    srcs: Vec<Option<Ipv4Addr>>,
    /// Destination of every datagram, for an unconnected socket.
    dest: Option<SocketAddrV4>,
    /// Datagrams before this index were sent.
    sent: usize,
    iov: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    /// One `IP_PKTINFO` control message per datagram of a call (scratch, like `iov`).
    cmsgs: Vec<(PktInfoCmsg, usize)>,
    name: Option<libc::sockaddr_in>,
}

/// Room for one control message carrying an `in_pktinfo`, aligned for `cmsghdr`.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct PktInfoCmsg([u8; 32]);

/// The `IP_PKTINFO` control message that makes `src` a datagram's source address (ip(7):
/// `ipi_spec_dst` is the source of an outgoing datagram; interface 0 lets routing choose).
fn pktinfo_cmsg(src: Ipv4Addr) -> (PktInfoCmsg, usize) {
    let info = libc::in_pktinfo {
        ipi_ifindex: 0,
        ipi_spec_dst: libc::in_addr {
            s_addr: u32::from(src).to_be(),
        },
        ipi_addr: libc::in_addr { s_addr: 0 },
    };
    // SAFETY: CMSG_SPACE and CMSG_LEN only compute sizes.
    let (space, len) = unsafe {
        (
            libc::CMSG_SPACE(mem::size_of::<libc::in_pktinfo>() as u32) as usize,
            libc::CMSG_LEN(mem::size_of::<libc::in_pktinfo>() as u32) as usize,
        )
    };
    let mut buf = PktInfoCmsg([0; 32]);
    debug_assert!(space <= buf.0.len());
    // SAFETY: an all-zero msghdr is valid; CMSG_FIRSTHDR of a header whose control buffer is
    // `buf` (aligned for cmsghdr, `space` bytes long) points at its start, and the header and
    // its data fit in `space` bytes, so the writes stay inside `buf`.
    unsafe {
        let mut m: libc::msghdr = mem::zeroed();
        m.msg_control = buf.0.as_mut_ptr().cast();
        m.msg_controllen = space as _;
        let c = libc::CMSG_FIRSTHDR(&m);
        (*c).cmsg_level = libc::IPPROTO_IP;
        (*c).cmsg_type = libc::IP_PKTINFO;
        (*c).cmsg_len = len as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<libc::in_pktinfo>(), info);
    }
    (buf, space)
}

// SAFETY: the raw pointers inside `iov`/`hdrs` are scratch, rebuilt before every use from
// `data`, which the batch owns; nothing is shared between threads.
unsafe impl Send for SendBatch {}

impl SendBatch {
    /// Appends one datagram written by `write`.
    pub fn push(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        self.push_from(None, write);
    }

    /// Appends one datagram written by `write`, sent from `src` when given (the socket must be
    /// bound to the wildcard address and unconnected, with [`SendBatch::set_destination`]).
    pub fn push_from(&mut self, src: Option<Ipv4Addr>, write: impl FnOnce(&mut Vec<u8>)) {
        write(&mut self.data);
        self.ends.push(self.data.len());
        self.srcs.push(src);
    }

    /// Names the destination of every datagram, for an unconnected socket.
    pub fn set_destination(&mut self, dest: SocketAddrV4) {
        self.dest = Some(dest);
    }

    /// Drops everything queued.
    pub fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
        self.srcs.clear();
        self.sent = 0;
    }

    /// Datagrams queued and not yet sent.
    pub fn pending(&self) -> usize {
        self.ends.len() - self.sent
    }

    /// Sends what is queued. Stops without error when the socket buffer is full (the rest
    /// stays queued for the next call); returns the number of datagrams sent by this call.
    pub fn flush(&mut self, fd: RawFd) -> io::Result<usize> {
        let mut total = 0;
        while self.sent < self.ends.len() {
            let n = (self.ends.len() - self.sent).min(BATCH);
            self.iov.clear();
            for i in self.sent..self.sent + n {
                let start = if i == 0 { 0 } else { self.ends[i - 1] };
                let end = self.ends[i];
                self.iov.push(libc::iovec {
                    // The kernel only reads through this pointer (sendmmsg).
                    iov_base: self.data[start..end].as_ptr() as *mut libc::c_void,
                    iov_len: end - start,
                });
            }
            self.name = self.dest.map(|d| libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: d.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*d.ip()).to_be(),
                },
                sin_zero: [0; 8],
            });
            self.cmsgs.clear();
            for src in &self.srcs[self.sent..self.sent + n] {
                self.cmsgs
                    .push(src.map_or((PktInfoCmsg([0; 32]), 0), pktinfo_cmsg));
            }
            self.hdrs.clear();
            for (k, iov) in self.iov.iter_mut().enumerate() {
                // SAFETY: an all-zero mmsghdr is a valid value (null name and control).
                let mut h: libc::mmsghdr = unsafe { mem::zeroed() };
                h.msg_hdr.msg_iov = iov;
                h.msg_hdr.msg_iovlen = 1;
                if let Some(name) = self.name.as_mut() {
                    h.msg_hdr.msg_name = (name as *mut libc::sockaddr_in).cast();
                    h.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
                }
                let (cmsg, len) = &mut self.cmsgs[k];
                if *len > 0 {
                    h.msg_hdr.msg_control = cmsg.0.as_mut_ptr().cast();
                    h.msg_hdr.msg_controllen = *len as _;
                }
                self.hdrs.push(h);
            }
            // SAFETY: `hdrs` holds `n` headers, each pointing at one iovec in `iov`, which points
            // into `data`, and at its control message in `cmsgs` and the destination in `name`
            // where it has them; all live, unmoved, for the duration of the call.
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    self.hdrs.as_mut_ptr(),
                    n as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => break,
                    _ => return Err(e),
                }
            }
            if r == 0 {
                break;
            }
            self.sent += r as usize;
            total += r as usize;
        }
        if self.sent == self.ends.len() {
            self.data.clear();
            self.ends.clear();
            self.srcs.clear();
            self.sent = 0;
        }
        Ok(total)
    }
}

/// Reusable buffers for [`recv_batch`].
pub struct RecvBatch {
    bufs: Vec<[u8; RECV_BUF]>,
    iov: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

// SAFETY: as for SendBatch: the pointers are rebuilt from owned buffers before each call.
unsafe impl Send for RecvBatch {}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch {
            bufs: vec![[0u8; RECV_BUF]; BATCH],
            iov: Vec::with_capacity(BATCH),
            hdrs: Vec::with_capacity(BATCH),
        }
    }
}

impl RecvBatch {
    /// Reads up to [`BATCH`] waiting datagrams without blocking and calls `each` with every
    /// one. Returns how many were read (0 when none was waiting).
    pub fn recv(&mut self, fd: RawFd, mut each: impl FnMut(&[u8])) -> io::Result<usize> {
        self.iov.clear();
        for b in self.bufs.iter_mut() {
            self.iov.push(libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: RECV_BUF,
            });
        }
        self.hdrs.clear();
        for iov in self.iov.iter_mut() {
            // SAFETY: an all-zero mmsghdr is a valid value (null name and control).
            let mut h: libc::mmsghdr = unsafe { mem::zeroed() };
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            self.hdrs.push(h);
        }
        // SAFETY: BATCH headers, each pointing at its own iovec and buffer, all owned by `self`
        // and unmoved during the call.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        let n = (r as usize).min(BATCH);
        for i in 0..n {
            let len = (self.hdrs[i].msg_len as usize).min(RECV_BUF);
            each(&self.bufs[i][..len]);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    #[test]
    fn batches_go_out_and_come_back_in_order() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.connect(server.local_addr().unwrap()).unwrap();
        server.connect(client.local_addr().unwrap()).unwrap();
        let mut batch = SendBatch::default();
        for i in 0..100u8 {
            batch.push(|out| out.extend_from_slice(&[i; 10]));
        }
        assert_eq!(batch.pending(), 100);
        assert_eq!(batch.flush(client.as_raw_fd()).unwrap(), 100);
        assert_eq!(batch.pending(), 0);
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        // Echo them back through the server socket one by one.
        let mut buf = [0u8; 64];
        for i in 0..100u8 {
            let n = server.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], &[i; 10]);
            server.send(&buf[..n]).unwrap();
        }
        let mut rb = RecvBatch::default();
        let mut got = Vec::new();
        for _ in 0..1000 {
            rb.recv(client.as_raw_fd(), |d| got.push(d[0])).unwrap();
            if got.len() == 100 {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(got, (0..100u8).collect::<Vec<_>>());
        assert_eq!(rb.recv(client.as_raw_fd(), |_| ()).unwrap(), 0);
    }

    /// An unconnected wildcard socket sends each datagram from the loopback address it names,
    /// and receives the answers sent to any of them.
    #[test]
    fn one_socket_sends_from_many_addresses() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = UdpSocket::bind("0.0.0.0:0").unwrap();
        let port = client.local_addr().unwrap().port();
        let std::net::SocketAddr::V4(dest) = server.local_addr().unwrap() else {
            panic!("IPv4 server");
        };
        let mut batch = SendBatch::default();
        batch.set_destination(dest);
        let srcs: Vec<Ipv4Addr> = (2..6u8).map(|i| Ipv4Addr::new(127, 0, 0, i)).collect();
        for (i, src) in srcs.iter().enumerate() {
            batch.push_from(Some(*src), |out| out.push(i as u8));
        }
        batch.push(|out| out.push(9));
        assert_eq!(batch.flush(client.as_raw_fd()).unwrap(), 5);
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 16];
        for (i, src) in srcs.iter().enumerate() {
            let (n, from) = server.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], &[i as u8]);
            assert_eq!(from, std::net::SocketAddr::from((*src, port)));
            server.send_to(&[100 + i as u8], from).unwrap();
        }
        // Without a source of its own the datagram leaves from the routing's choice.
        let (_, from) = server.recv_from(&mut buf).unwrap();
        assert_eq!(from, std::net::SocketAddr::from(([127, 0, 0, 1], port)));
        let mut rb = RecvBatch::default();
        let mut got = Vec::new();
        for _ in 0..1000 {
            rb.recv(client.as_raw_fd(), |d| got.push(d[0])).unwrap();
            if got.len() == srcs.len() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(got, vec![100, 101, 102, 103]);
    }
}
