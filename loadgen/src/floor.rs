//! The floor responder: a stateless BEP 15 answerer that replies to connect, announce and scrape
//! with fixed minimal packets, batched with `recvmmsg`/`sendmmsg`. It does no work a tracker
//! could skip, so its CPU per response and its rate on loopback are the yardstick for the
//! kernel's UDP path: a tracker can approach it, not beat it.

use std::io;
use std::mem;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::{Domain, Protocol as SockProtocol, Socket, Type};

use crate::proto::bt_udp::{
    ACTION_ANNOUNCE, ACTION_CONNECT, ACTION_ERROR, ACTION_SCRAPE, PROTOCOL_ID,
};

/// Datagrams handled per `recvmmsg`/`sendmmsg` call.
const BATCH: usize = 64;
/// Largest datagram read; BEP 15 requests are far smaller.
const RECV_BUF: usize = 2048;
/// Scrape replies carry at most this many entries (BEP 15 allows about 74 per packet).
const MAX_SCRAPE: usize = 74;
const REPLY_BUF: usize = 8 + 12 * MAX_SCRAPE;
/// The connection id the floor hands out; it never checks it.
const FLOOR_CONNECTION_ID: u64 = 0x464c_4f4f_5230_3031;
/// Announce interval the floor answers, seconds.
const INTERVAL: u32 = 1800;

/// Writes the reply to `req` into `out` and returns its length; 0 means no reply (too short to
/// carry a transaction id).
pub fn reply_to(req: &[u8], out: &mut [u8; REPLY_BUF]) -> usize {
    let word = |at: usize| -> Option<u32> {
        req.get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
    };
    let (Some(action), Some(tid)) = (word(8), word(12)) else {
        return 0;
    };
    let is_connect = req.get(..8).map(|b| b == PROTOCOL_ID.to_be_bytes()) == Some(true);
    out[4..8].copy_from_slice(&tid.to_be_bytes());
    if action == ACTION_CONNECT && is_connect {
        out[..4].copy_from_slice(&ACTION_CONNECT.to_be_bytes());
        out[8..16].copy_from_slice(&FLOOR_CONNECTION_ID.to_be_bytes());
        16
    } else if action == ACTION_ANNOUNCE && req.len() >= 98 {
        out[..4].copy_from_slice(&ACTION_ANNOUNCE.to_be_bytes());
        out[8..12].copy_from_slice(&INTERVAL.to_be_bytes());
        out[12..20].fill(0); // leechers, seeders
        20
    } else if action == ACTION_SCRAPE && req.len() >= 36 {
        let n = ((req.len() - 16) / 20).min(MAX_SCRAPE);
        out[..4].copy_from_slice(&ACTION_SCRAPE.to_be_bytes());
        out[8..8 + 12 * n].fill(0);
        8 + 12 * n
    } else {
        const MSG: &[u8] = b"bad request";
        out[..4].copy_from_slice(&ACTION_ERROR.to_be_bytes());
        out[8..8 + MSG.len()].copy_from_slice(MSG);
        8 + MSG.len()
    }
}

/// A running floor responder.
pub struct Floor {
    pub local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
    workers: Vec<JoinHandle<io::Result<()>>>,
}

fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let s = Socket::new(domain, Type::DGRAM, Some(SockProtocol::UDP))?;
    s.set_reuse_port(true)?;
    let _ = s.set_recv_buffer_size(8 << 20);
    let _ = s.set_send_buffer_size(8 << 20);
    // The read timeout bounds how long a worker takes to notice the stop flag.
    s.set_read_timeout(Some(Duration::from_millis(100)))?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

impl Floor {
    /// Binds `threads` `SO_REUSEPORT` sockets on `listen` (port 0 picks one port for all) and
    /// starts one worker thread per socket.
    pub fn start(listen: SocketAddr, threads: usize) -> io::Result<Floor> {
        let first = bind(listen)?;
        let local_addr = first.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));
        let mut sockets = vec![first];
        for _ in 1..threads.max(1) {
            sockets.push(bind(local_addr)?);
        }
        let workers = sockets
            .into_iter()
            .enumerate()
            .map(|(i, sock)| {
                let stop = stop.clone();
                let answered = answered.clone();
                std::thread::Builder::new()
                    .name(format!("floor-{i}"))
                    .spawn(move || serve(sock, &stop, &answered))
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Floor {
            local_addr,
            stop,
            answered,
            workers,
        })
    }

    /// Replies sent so far.
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    /// Stops the workers (within their read timeout) and returns the number of replies sent.
    pub fn stop(self) -> io::Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            match w.join() {
                Ok(r) => r?,
                Err(_) => return Err(io::Error::other("floor worker panicked")),
            }
        }
        Ok(self.answered.load(Ordering::Relaxed))
    }
}

fn serve(sock: UdpSocket, stop: &AtomicBool, answered: &AtomicU64) -> io::Result<()> {
    let fd = sock.as_raw_fd();
    let mut rbufs = vec![[0u8; RECV_BUF]; BATCH];
    let mut wbufs = vec![[0u8; REPLY_BUF]; BATCH];
    // SAFETY: sockaddr_storage, iovec and mmsghdr are plain C structs for which all-zero bytes
    // are a valid value.
    let mut addrs: Vec<libc::sockaddr_storage> = vec![unsafe { mem::zeroed() }; BATCH];
    let mut riov: Vec<libc::iovec> = vec![unsafe { mem::zeroed() }; BATCH];
    let mut wiov: Vec<libc::iovec> = vec![unsafe { mem::zeroed() }; BATCH];
    let mut rmsgs: Vec<libc::mmsghdr> = vec![unsafe { mem::zeroed() }; BATCH];
    let mut wmsgs: Vec<libc::mmsghdr> = vec![unsafe { mem::zeroed() }; BATCH];

    while !stop.load(Ordering::Relaxed) {
        for i in 0..BATCH {
            riov[i] = libc::iovec {
                iov_base: rbufs[i].as_mut_ptr().cast(),
                iov_len: RECV_BUF,
            };
            let h = &mut rmsgs[i].msg_hdr;
            h.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut riov[i];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
            rmsgs[i].msg_len = 0;
        }
        // SAFETY: every header points at buffers owned by this frame (rbufs, riov, addrs) that
        // outlive the call and are not otherwise borrowed; BATCH matches the vector lengths.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                rmsgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock
                | io::ErrorKind::TimedOut
                | io::ErrorKind::Interrupted => continue,
                _ => return Err(e),
            }
        }
        let n = (n as usize).min(BATCH);
        let mut out = 0;
        for i in 0..n {
            let len = (rmsgs[i].msg_len as usize).min(RECV_BUF);
            let wlen = reply_to(&rbufs[i][..len], &mut wbufs[out]);
            if wlen == 0 {
                continue;
            }

            wiov[out] = libc::iovec {
                iov_base: wbufs[out].as_mut_ptr().cast(),
                iov_len: wlen,
            };
            let h = &mut wmsgs[out].msg_hdr;
            h.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = rmsgs[i].msg_hdr.msg_namelen;
            h.msg_iov = &mut wiov[out];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
            out += 1;
        }
        let mut sent = 0;
        while sent < out {
            // SAFETY: headers sent..out point at wbufs/wiov/addrs entries filled above, all
            // owned by this frame and alive for the call.
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    wmsgs.as_mut_ptr().add(sent),
                    (out - sent) as libc::c_uint,
                    0,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // A full send buffer or an unreachable client drops this batch's rest, as a
                // UDP server would.
                break;
            }
            if r == 0 {
                break;
            }
            sent += r as usize;
        }
        answered.fetch_add(sent as u64, Ordering::Relaxed);
    }
    Ok(())
}

/// Runs a floor responder in the foreground until `duration` passes (or forever).
pub fn run_foreground(
    listen: SocketAddr,
    threads: usize,
    duration: Option<Duration>,
) -> anyhow::Result<()> {
    let floor = Floor::start(listen, threads)?;
    eprintln!(
        "ppsp-loadgen floor: answering BEP 15 on {} with {} thread(s)",
        floor.local_addr,
        threads.max(1)
    );
    let until = duration.map(|d| std::time::Instant::now() + d);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        if until.is_some_and(|u| std::time::Instant::now() >= u) {
            break;
        }
    }
    let n = floor.stop()?;
    eprintln!("ppsp-loadgen floor: {n} replies sent");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_have_bep15_layouts() {
        let mut out = [0u8; REPLY_BUF];
        let mut c = Vec::new();
        crate::proto::bt_udp::encode_connect(77, &mut c);
        assert_eq!(reply_to(&c, &mut out), 16);
        assert_eq!(&out[..8], &[0, 0, 0, 0, 0, 0, 0, 77]);
        let mut a = vec![0u8; 98];
        a[8..12].copy_from_slice(&1u32.to_be_bytes());
        a[12..16].copy_from_slice(&5u32.to_be_bytes());
        assert_eq!(reply_to(&a, &mut out), 20);
        assert_eq!(&out[..12], &[0, 0, 0, 1, 0, 0, 0, 5, 0, 0, 0x07, 0x08]);
        let mut s = vec![0u8; 16 + 40];
        s[8..12].copy_from_slice(&2u32.to_be_bytes());
        assert_eq!(reply_to(&s, &mut out), 8 + 24);
        let mut bad = vec![0u8; 16];
        bad[8..12].copy_from_slice(&9u32.to_be_bytes());
        assert_eq!(reply_to(&bad, &mut out), 19);
        assert_eq!(&out[..4], &[0, 0, 0, 3]);
        assert_eq!(reply_to(&[0u8; 10], &mut out), 0);
        // A scrape with more hashes than fit is capped.
        let mut big = vec![0u8; 16 + 20 * 100];
        big[8..12].copy_from_slice(&2u32.to_be_bytes());
        assert_eq!(reply_to(&big, &mut out), REPLY_BUF);
    }

    #[test]
    fn answers_over_loopback_and_stops() {
        let floor = Floor::start("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut c = Vec::new();
        crate::proto::bt_udp::encode_connect(1234, &mut c);
        client.send_to(&c, floor.local_addr).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = client.recv_from(&mut buf).unwrap();
        assert_eq!(from, floor.local_addr);
        assert_eq!(n, 16);
        assert_eq!(&buf[4..8], &1234u32.to_be_bytes());
        assert_eq!(floor.stop().unwrap(), 1);
    }
}
