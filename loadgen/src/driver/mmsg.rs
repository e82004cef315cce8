//! Batched datagram I/O on connected UDP sockets: `sendmmsg` for the requests a worker issues
//! in one round, `recvmmsg` for the replies waiting on a socket, so the generator spends a few
//! system calls per batch instead of two per request.

use std::io;
use std::mem;
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
    /// Datagrams before this index were sent.
    sent: usize,
    iov: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers inside `iov`/`hdrs` are scratch, rebuilt before every use from
// `data`, which the batch owns; nothing is shared between threads.
unsafe impl Send for SendBatch {}

impl SendBatch {
    /// Appends one datagram written by `write`.
    pub fn push(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        write(&mut self.data);
        self.ends.push(self.data.len());
    }

    /// Drops everything queued.
    pub fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
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
            self.hdrs.clear();
            for iov in self.iov.iter_mut() {
                // SAFETY: an all-zero mmsghdr is a valid value (null name and control).
                let mut h: libc::mmsghdr = unsafe { mem::zeroed() };
                h.msg_hdr.msg_iov = iov;
                h.msg_hdr.msg_iovlen = 1;
                self.hdrs.push(h);
            }
            // SAFETY: `hdrs` holds `n` headers, each pointing at one iovec in `iov`, which points
            // into `data`; all three live, unmoved, for the duration of the call. The socket is
            // connected, so no destination address is needed.
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
}
