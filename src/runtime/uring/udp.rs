//! The datagram path of the io_uring back-end.
//!
//! Each datagram socket of the worker has one multishot `RecvMsg` (Linux 6.0) that takes a
//! buffer from the socket's provided-buffer ring for every datagram: the buffer holds the
//! `io_uring_recvmsg_out` header, the source address, the control data (the receive timestamp
//! while the socket's load control wants it, `datagram::Sojourn`) and the payload, and goes
//! back into the ring as soon as the service has answered. The ring starts with a few buffers and doubles
//! them when a burst finds it empty, so its memory follows the bursts the socket sees.
//! Answers are written straight into preallocated send slots (buffer, address, `iovec`,
//! `msghdr` each), queued as `Send` entries with a destination address (`SendMsg` on kernels
//! without one) and submitted by the worker's next wait, so a turn of any number of datagrams costs one
//! `io_uring_enter`. When every slot is in flight an answer is dropped and counted
//! (`send_dropped`), as the epoll path drops answers a full socket buffer refuses; answers are
//! sent with `MSG_DONTWAIT` for the same reason. Nothing is allocated per datagram.
//!
//! The ring also carries the worker's stream operations (`tcp.rs`): its listeners are
//! registered files after the datagram sockets and the epoll set, its connections follow in a
//! sparse part of the table, and their buffer ring is the group after the datagram sockets'.
//! The worker's epoll set (now only the wake-up `eventfd`) is watched by a multishot poll.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use io_uring::types::{BufRingEntry, Fixed, RecvMsgOut};
use io_uring::{cqueue, opcode, squeue, types, IoUring};

use super::super::datagram::{Sojourn, CONTROL_BYTES, DATAGRAMS_PER_TURN};
use super::super::mmsg::SLOT_BYTES;
use super::super::stats::{bump, RuntimeStats};
use super::super::{DatagramCtx, DatagramWorker, PREFETCH_AHEAD};
use super::tcp::{SendPool, SharedPool, STREAM_BUFS, STREAM_BUFS_INITIAL, STREAM_BUF_BYTES};
use super::{build_ring, submit_and_wait, Op, TaskRun, Unavailable, RING_ENTRIES};

/// Stream completions (accepts, arrivals, sends) handled per turn at most; the rest wait for
/// the next turn.
const STREAM_EVENTS_PER_TURN: usize = 4096;

/// Completions taken from the queue at once (see [`UdpRing::serve`]).
const CQE_CHUNK: usize = 32;

/// The soft limit on open descriptors (`RLIMIT_NOFILE`).
fn rlimit_nofile() -> u32 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid `rlimit` to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    lim.rlim_cur.min(u64::from(u32::MAX)) as u32
}

/// Room for the source address in a receive buffer: a `sockaddr_in6` (an IPv4 socket's
/// `sockaddr_in` is shorter).
const NAME_BYTES: usize = std::mem::size_of::<libc::sockaddr_in6>();
/// The `io_uring_recvmsg_out` header in front of every received datagram.
const HEADER_BYTES: usize = 16;
/// One provided buffer: header, address, control data (a receive timestamp while the
/// socket's are on, [`CONTROL_BYTES`]) and a payload of [`SLOT_BYTES`] (longer datagrams are
/// truncated by the kernel and go to `DatagramWorker::on_oversized`, as on the epoll path).
/// 2,080 bytes: about two buffers to a page.
const BUF_BYTES: usize = HEADER_BYTES + NAME_BYTES + CONTROL_BYTES + SLOT_BYTES;
const _: () = assert!(BUF_BYTES % 8 == 0, "buffers aligned as the header");
/// Receive buffers a datagram socket's ring starts with (it grows on demand).
const INITIAL_BUFS: u16 = 32;

/// A provided-buffer ring (Linux 5.19): the ring of buffer descriptors the kernel takes from,
/// and the buffers it describes, in one page-aligned anonymous mapping. Pages are touched only
/// when used, and only `live` buffers circulate: a region that starts small grows (up to
/// `entries`) when the kernel runs out of buffers ([`BufRegion::grow`]), so its memory follows
/// the largest burst seen rather than the largest possible one.
pub(crate) struct BufRegion {
    ring: *mut BufRingEntry,
    map_bytes: usize,
    entries: u16,
    /// Buffers in circulation (`bid < live`).
    live: u16,
    buf_len: usize,
    /// The buffers, after the descriptor ring in the mapping.
    bufs: *mut u8,
    /// Our copy of the ring's tail (the kernel only reads it).
    tail: u16,
}

impl BufRegion {
    /// Room for `entries` buffers (a power of two, at most 32768) of `buf_len` bytes each, of
    /// which the first `live` (at least one, at most `entries`) are in the ring.
    pub(crate) fn new(entries: u16, live: u16, buf_len: usize) -> io::Result<BufRegion> {
        debug_assert!(entries.is_power_of_two());
        let ring_bytes = usize::from(entries) * std::mem::size_of::<BufRingEntry>();
        let map_bytes = ring_bytes + usize::from(entries) * buf_len;
        // SAFETY: an anonymous private mapping; the result is checked.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut region = BufRegion {
            ring: map.cast(),
            map_bytes,
            entries,
            live: live.clamp(1, entries),
            buf_len,
            // SAFETY: `ring_bytes` is inside the mapping.
            bufs: unsafe { map.cast::<u8>().add(ring_bytes) },
            tail: 0,
        };
        for bid in 0..region.live {
            region.recycle(bid);
        }
        region.publish();
        Ok(region)
    }

    /// Puts more buffers into circulation (twice as many, at most `entries`), visible at the
    /// next [`BufRegion::publish`]; false when all are already in.
    fn grow(&mut self) -> bool {
        if self.live >= self.entries {
            return false;
        }
        let more = self.live.saturating_mul(2).min(self.entries);
        for bid in self.live..more {
            self.recycle(bid);
        }
        self.live = more;
        true
    }

    /// Registers the ring as buffer group `bgid` of `ring`.
    pub(crate) fn register(&mut self, ring: &IoUring, bgid: u16) -> io::Result<()> {
        // SAFETY: the descriptor ring is page-aligned, holds `entries` entries and lives (with
        // the buffers) as long as `self`, which the owner drops after the ring.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(self.ring as u64, self.entries, bgid, 0)
        }
    }

    /// Buffer `bid`, `len` bytes of it (empty for a buffer id out of range).
    fn buffer(&self, bid: u16, len: usize) -> &[u8] {
        if bid >= self.live {
            return &[];
        }
        let start = usize::from(bid) * self.buf_len;
        // SAFETY: buffer `bid` is inside the mapping (`bid < live <= entries`), and the kernel
        // wrote it before posting the completion that named it.
        unsafe { std::slice::from_raw_parts(self.bufs.add(start), len.min(self.buf_len)) }
    }

    /// Gives buffer `bid` back to the kernel (visible at the next [`BufRegion::publish`]).
    fn recycle(&mut self, bid: u16) {
        if bid >= self.entries {
            return;
        }
        let addr = self.bufs as u64 + (usize::from(bid) * self.buf_len) as u64;
        let index = usize::from(self.tail & (self.entries - 1));
        // SAFETY: `index` is below `entries`, inside the mapping; the kernel does not read an
        // entry past the published tail, so writing it races with nothing.
        let entry = unsafe { &mut *self.ring.add(index) };
        entry.set_addr(addr);
        entry.set_len(self.buf_len as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes the recycled buffers visible to the kernel.
    fn publish(&self) {
        // SAFETY: the tail field overlays the first entry's reserved field, inside the mapping
        // and suitably aligned; the kernel reads it with acquire ordering.
        unsafe {
            let tail = BufRingEntry::tail(self.ring) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }
}

impl Drop for BufRegion {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe {
            libc::munmap(self.ring.cast(), self.map_bytes);
        }
    }
}

/// One answer on its way: its bytes, destination and the kernel's view of both.
struct SendSlot {
    buf: Vec<u8>,
    name: libc::sockaddr_in6,
    iov: libc::iovec,
    hdr: libc::msghdr,
    socket: usize,
}

/// One datagram socket on the ring.
struct SockRing {
    ctx: DatagramCtx,
    /// What the multishot receive reads its name and control sizes from.
    hdr: Box<libc::msghdr>,
    region: BufRegion,
    /// The multishot receive is active (it stops when the buffers ran out, or on an error).
    armed: bool,
    /// Buffers were recycled since the last publish.
    recycled: bool,
    /// Datagrams left in the current batch: [`DatagramWorker::on_batch`] is called before
    /// every `batch` datagrams of a turn, as the epoll path calls it per `recvmmsg` batch.
    batch_left: usize,
    /// The receive ran out of buffers in this turn: datagrams are still waiting.
    starved: bool,
    /// Datagrams received in this turn.
    served: usize,
    /// Each datagram's wait and whether it is shed (the load control of `ctx`).
    sojourn: Sojourn,
}

/// What one turn over the completions found.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Turn {
    /// The epoll set has events: read it this turn.
    pub epoll_ready: bool,
    /// Completions are left for the next turn (do not sleep).
    pub more: bool,
    /// When the turn ended (the clock read after the datagrams were served).
    pub end: std::time::Instant,
}

/// One worker's ring and its datagram sockets.
pub(crate) struct UdpRing {
    // Dropped first: the kernel stops using the buffers below before they are freed.
    ring: IoUring,
    mode: TaskRun,
    sockets: Vec<SockRing>,
    slots: Box<[SendSlot]>,
    free: Vec<usize>,
    /// Datagrams per [`DatagramWorker::on_batch`] (the configured batch size).
    batch: usize,
    /// Answers go as IORING_OP_SEND with a destination address; false after the kernel
    /// refused one (an older kernel), then as IORING_OP_SENDMSG.
    send_to: bool,
    /// Fixed-file index of the epoll descriptor.
    epoll_index: u32,
    epoll_armed: bool,
    /// Where an answer goes when every send slot is in flight (it is then dropped).
    spare: Vec<u8>,
    /// Fixed-file index of the first stream listener (the others follow).
    listener_base: u32,
    /// Per stream listener: its multishot accept is active.
    accept_armed: Vec<bool>,
    /// Per stream listener: accepting is suspended (descriptors exhausted) until the worker's
    /// next tick retries.
    accept_held: Vec<bool>,
    /// The stream buffer ring (buffer group `stream_bgid`), when the worker has listeners.
    stream_region: Option<BufRegion>,
    stream_bgid: u16,
    stream_recycled: bool,
    /// The stream buffer ring grew in this turn (see [`UdpRing::grow_stream`]).
    stream_grown: bool,
    /// Fixed-file index of connection slot 0; slots below `conn_files` have a file there.
    conn_base: u32,
    conn_files: u32,
    /// Stream completions of the last [`UdpRing::serve`], for the connection table.
    events: Vec<StreamEvent>,
    /// The send chunks of the worker's connections (and of sends still in flight on
    /// connections already closed).
    pub(crate) pool: SharedPool,
}

/// A completion of a stream operation, handed to the worker's connection table.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StreamEvent {
    pub op: Op,
    pub res: i32,
    pub flags: u32,
}

/// The `errno`s of accept that mean the process or the system is out of a resource: accepting
/// is suspended until the next tick rather than retried at once.
fn accept_exhausted(res: i32) -> bool {
    matches!(
        -res,
        libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM
    )
}

// SAFETY: the raw pointers (the buffer ring mapping, the `msghdr`s pointing into the send
// slots) point into memory this value owns, which moves with it; nothing else aliases it.
unsafe impl Send for UdpRing {}

impl UdpRing {
    /// A ring for the calling thread, with `sockets` (descriptor and context each) and the epoll set
    /// `epoll_fd` as registered files, and a provided-buffer ring per socket sized for
    /// `batch` datagrams per turn.
    ///
    /// The stream `listeners` are registered files too, each with a multishot accept, and
    /// the table has room for `conn_files` connections (fewer, or none, when the descriptor
    /// limit does not allow a table that large).
    pub(crate) fn new(
        sockets: &[(RawFd, DatagramCtx)],
        epoll_fd: RawFd,
        batch: usize,
        shed_after: Duration,
        listeners: &[RawFd],
        conn_files: u32,
    ) -> Result<UdpRing, Unavailable> {
        let (ring, mode) = build_ring(RING_ENTRIES)?;
        let mut fds: Vec<RawFd> = sockets.iter().map(|(fd, _)| *fd).collect();
        fds.push(epoll_fd);
        let listener_base = fds.len() as u32;
        fds.extend_from_slice(listeners);
        let conn_base = fds.len() as u32;
        // A sparse table with room for the connections; the kernel refuses tables larger than
        // the descriptor limit, so a smaller one (or none) is tried next.
        let nofile = rlimit_nofile();
        let mut conn_files = conn_files.min(nofile.saturating_sub(conn_base + 64));
        loop {
            let sparse = conn_files > 0
                && ring
                    .submitter()
                    .register_files_sparse(conn_base + conn_files)
                    .is_ok();
            if sparse {
                ring.submitter()
                    .register_files_update(0, &fds)
                    .map_err(|e| {
                        Unavailable(format!("IORING_REGISTER_FILES_UPDATE failed: {e}"))
                    })?;
                break;
            }
            if conn_files > 0 {
                conn_files /= 4;
                continue;
            }
            ring.submitter()
                .register_files(&fds)
                .map_err(|e| Unavailable(format!("IORING_REGISTER_FILES failed: {e}")))?;
            break;
        }
        // Room for four batches of buffers, of which 32 circulate at first: every buffer in
        // circulation is touched as the ring turns (a page each), so the ring grows only when
        // a burst finds it empty (ENOBUFS: the rest waits in the socket, and the next turn
        // re-arms the receive with twice the buffers).
        let entries = (batch.saturating_mul(4))
            .next_power_of_two()
            .clamp(64, 4096) as u16;
        let mut socks = Vec::with_capacity(sockets.len());
        for (i, &(fd, ctx)) in sockets.iter().enumerate() {
            let mut region = BufRegion::new(entries, INITIAL_BUFS, BUF_BYTES)
                .map_err(|e| Unavailable(format!("cannot map a provided-buffer ring: {e}")))?;
            region
                .register(&ring, i as u16)
                .map_err(|e| Unavailable(format!("IORING_REGISTER_PBUF_RING failed: {e}")))?;
            // SAFETY: zero is a valid `msghdr`.
            let mut hdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
            hdr.msg_namelen = NAME_BYTES as u32;
            hdr.msg_controllen = CONTROL_BYTES as _;
            socks.push(SockRing {
                ctx,
                hdr,
                region,
                armed: false,
                recycled: false,
                batch_left: 0,
                starved: false,
                served: 0,
                sojourn: Sojourn::new(fd, shed_after),
            });
        }
        // Twice the receive buffers: a slot is held until its send completes, so a turn that
        // serves every buffer still finds slots while the previous turn's sends are in flight.
        let slot_count = 2 * usize::from(entries) * sockets.len();
        let mut slots: Box<[SendSlot]> = (0..slot_count)
            .map(|_| SendSlot {
                // Grown at its first answer and reused from then on.
                buf: Vec::new(),
                // SAFETY: zero is a valid `sockaddr_in6`, `iovec` and `msghdr`.
                name: unsafe { std::mem::zeroed() },
                iov: unsafe { std::mem::zeroed() },
                hdr: unsafe { std::mem::zeroed() },
                socket: 0,
            })
            .collect();
        for slot in slots.iter_mut() {
            slot.hdr.msg_name = (&mut slot.name as *mut libc::sockaddr_in6).cast();
            slot.hdr.msg_iov = &mut slot.iov;
            slot.hdr.msg_iovlen = 1;
        }
        let stream_bgid = sockets.len() as u16;
        let stream_region = if listeners.is_empty() {
            None
        } else {
            let mut region = BufRegion::new(STREAM_BUFS, STREAM_BUFS_INITIAL, STREAM_BUF_BYTES)
                .map_err(|e| Unavailable(format!("cannot map a provided-buffer ring: {e}")))?;
            region
                .register(&ring, stream_bgid)
                .map_err(|e| Unavailable(format!("IORING_REGISTER_PBUF_RING failed: {e}")))?;
            Some(region)
        };
        Ok(UdpRing {
            ring,
            mode,
            batch: batch.max(1),
            send_to: true,
            epoll_index: sockets.len() as u32,
            sockets: socks,
            free: (0..slot_count).rev().collect(),
            slots,
            epoll_armed: false,
            spare: Vec::with_capacity(1500),
            listener_base,
            accept_armed: vec![false; listeners.len()],
            accept_held: vec![false; listeners.len()],
            stream_region,
            stream_bgid,
            stream_recycled: false,
            stream_grown: false,
            conn_base,
            conn_files,
            events: Vec::with_capacity(STREAM_EVENTS_PER_TURN),
            pool: SendPool::shared(),
        })
    }

    /// Registers connection `slot`'s socket `fd` as a fixed file; its index, or `None` when
    /// the slot is beyond the table (the operations then name the descriptor).
    pub(crate) fn register_conn(&mut self, slot: usize, fd: RawFd) -> Option<u32> {
        let slot = u32::try_from(slot).ok().filter(|&s| s < self.conn_files)?;
        let index = self.conn_base + slot;
        self.ring
            .submitter()
            .register_files_update(index, &[fd])
            .ok()
            .map(|_| index)
    }

    /// Submits what is queued now. Called before a connection's descriptor or fixed file is
    /// released: an entry still queued for it must reach the kernel while the descriptor (or
    /// table slot) still names that connection, not a successor that reuses the number.
    pub(crate) fn submit_queued(&mut self) {
        if !self.ring.submission().is_empty() {
            if let Err(e) = self.ring.submit() {
                tracing::error!("io_uring submit failed: {e}");
            }
        }
    }

    /// Empties fixed file `index` (its connection is closing).
    pub(crate) fn unregister_conn(&mut self, index: u32) {
        let _ = self.ring.submitter().register_files_update(index, &[-1]);
    }

    /// The buffer group connections receive from.
    pub(crate) fn stream_bgid(&self) -> u16 {
        self.stream_bgid
    }

    /// Where the stream buffer `bid` is, and `len` bytes of it (clamped to the buffer).
    pub(crate) fn stream_buffer(&self, bid: u16, len: usize) -> (*const u8, usize) {
        match &self.stream_region {
            Some(region) => {
                let data = region.buffer(bid, len);
                (data.as_ptr(), data.len())
            }
            None => (std::ptr::null(), 0),
        }
    }

    /// Gives stream buffer `bid` back to the kernel (published by the next [`UdpRing::arm`]).
    pub(crate) fn recycle_stream(&mut self, bid: u16) {
        if let Some(region) = &mut self.stream_region {
            region.recycle(bid);
            self.stream_recycled = true;
        }
    }

    /// A connection's receive found the stream buffer ring empty (`ENOBUFS`): more buffers
    /// go into circulation (twice as many, up to [`STREAM_BUFS`]), published by the next
    /// [`UdpRing::arm`].
    /// Grows at most once per turn: every connection with bytes waiting ends its receive
    /// with `ENOBUFS` when the ring runs dry, and one doubling serves them all next turn.
    pub(crate) fn grow_stream(&mut self) {
        if self.stream_grown {
            return;
        }
        if let Some(region) = &mut self.stream_region {
            if region.grow() {
                self.stream_recycled = true;
                self.stream_grown = true;
                tracing::debug!(buffers = region.live, "stream buffer ring grown");
            }
        }
    }

    /// Buffers of the stream buffer ring in circulation (0 without stream listeners).
    #[cfg(test)]
    pub(crate) fn stream_buffers(&self) -> u16 {
        self.stream_region.as_ref().map_or(0, |r| r.live)
    }

    /// Suspends (`true`) or resumes the multishot accept of listener `i`.
    pub(crate) fn hold_accept(&mut self, i: usize, held: bool) {
        if let Some(h) = self.accept_held.get_mut(i) {
            *h = held;
        }
    }

    /// Whether listener `i`'s accept is suspended.
    pub(crate) fn accept_held(&self, i: usize) -> bool {
        self.accept_held.get(i).copied().unwrap_or(false)
    }

    /// Queues an entry for the next submit.
    pub(crate) fn queue(&mut self, entry: &squeue::Entry) {
        self.push(entry);
    }

    /// Queues the cancel of the operation whose `user_data` is `ud`.
    pub(crate) fn cancel(&mut self, ud: u64) {
        let entry = opcode::AsyncCancel::new(ud)
            .build()
            .user_data(Op::Cancel.encode());
        self.push(&entry);
    }

    /// Ends every operation on the ring and gives back its registered files, waiting (up to
    /// about a second) for the kernel to confirm: the sockets are closed when the worker
    /// returns, rather than whenever the kernel gets to tearing the ring down.
    pub(crate) fn quiesce(&mut self) {
        const FINAL: u64 = 8 << 56;
        let entry = opcode::AsyncCancel2::new(types::CancelBuilder::any())
            .build()
            .user_data(FINAL);
        self.push(&entry);
        let mut confirmed = false;
        for _ in 0..100 {
            if submit_and_wait(&mut self.ring, Duration::from_millis(10)).is_err() {
                break;
            }
            let mut seen = 0;
            for cqe in self.ring.completion() {
                seen += 1;
                if cqe.user_data() == FINAL {
                    confirmed = true;
                }
            }
            if confirmed && seen == 0 {
                break;
            }
        }
        let _ = self.ring.submitter().unregister_files();
    }

    /// The send `ud` of a closed connection completed: its chunks can go.
    pub(crate) fn release_orphan(&mut self, ud: u64) {
        self.pool.borrow_mut().release_orphan(ud);
    }

    /// The stream completions of the last turn (handed back with [`UdpRing::restore_events`]
    /// so that their storage is reused).
    pub(crate) fn take_events(&mut self) -> Vec<StreamEvent> {
        std::mem::take(&mut self.events)
    }

    pub(crate) fn restore_events(&mut self, mut events: Vec<StreamEvent>) {
        events.clear();
        self.events = events;
    }

    pub(crate) fn mode(&self) -> TaskRun {
        self.mode
    }

    /// Queues the multishot operations that are not running (all of them at first).
    pub(crate) fn arm(&mut self) {
        let mut entries: Vec<squeue::Entry> = Vec::new();
        for (i, s) in self.sockets.iter_mut().enumerate() {
            if s.recycled {
                s.region.publish();
                s.recycled = false;
            }
            if !s.armed {
                s.armed = true;
                entries.push(
                    opcode::RecvMsgMulti::new(Fixed(i as u32), &*s.hdr, i as u16)
                        .build()
                        .user_data(Op::Recv(i).encode()),
                );
            }
        }
        if self.stream_recycled {
            if let Some(region) = &self.stream_region {
                region.publish();
            }
            self.stream_recycled = false;
            self.stream_grown = false;
        }
        for i in 0..self.accept_armed.len() {
            if !self.accept_armed[i] && !self.accept_held[i] {
                self.accept_armed[i] = true;
                entries.push(
                    opcode::AcceptMulti::new(Fixed(self.listener_base + i as u32))
                        .flags(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
                        .build()
                        .user_data(Op::Accept(i).encode()),
                );
            }
        }
        if !self.epoll_armed {
            self.epoll_armed = true;
            entries.push(
                opcode::PollAdd::new(Fixed(self.epoll_index), libc::POLLIN as u32)
                    .multi(true)
                    .build()
                    .user_data(Op::Epoll.encode()),
            );
        }
        for entry in &entries {
            self.push(entry);
        }
    }

    /// Queues an entry, submitting what is queued first when the queue is full.
    fn push(&mut self, entry: &squeue::Entry) {
        loop {
            // SAFETY: every entry points at memory owned by `self` that stays put until its
            // completion (receive headers, buffer rings, send slots).
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return;
            }
            if let Err(e) = self.ring.submit() {
                tracing::error!("io_uring submit failed: {e}");
                return;
            }
        }
    }

    /// Submits what is queued and waits up to `timeout` for a completion.
    pub(crate) fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        submit_and_wait(&mut self.ring, timeout)
    }

    /// Handles the completions that are ready: datagrams are served by `workers` (by socket),
    /// sends are counted, and the epoll poll is reported.
    /// `now` is the instant the worker's wait returned.
    pub(crate) fn serve(
        &mut self,
        workers: &mut [Box<dyn DatagramWorker>],
        stats: &RuntimeStats,
        worker_index: usize,
        now: std::time::Instant,
    ) -> Turn {
        let mut turn = Turn {
            epoll_ready: false,
            more: false,
            end: now,
        };
        // The datagrams of one turn were learnt of now; those with a receive timestamp carry
        // their own arrival (`Sojourn::judge`).
        for s in &mut self.sockets {
            s.batch_left = 0;
            s.starved = false;
            s.served = 0;
            s.ctx.ready_at = now;
            s.ctx.shed = false;
        }
        let limit = DATAGRAMS_PER_TURN * self.sockets.len().max(1)
            + self.slots.len()
            + STREAM_EVENTS_PER_TURN
            + 1;
        let mut handled = 0;
        // Completions are taken in chunks, so that a received datagram can be handed to its
        // service's prefetch a few completions before it is served.
        let mut chunk = [const { std::mem::MaybeUninit::<cqueue::Entry>::uninit() }; CQE_CHUNK];
        while handled < limit {
            let take = (limit - handled).min(CQE_CHUNK);
            let cqes = self.ring.completion().fill(&mut chunk[..take]);
            if cqes.is_empty() {
                break;
            }
            handled += cqes.len();
            for cqe in cqes.iter().take(PREFETCH_AHEAD) {
                self.prefetch(cqe, workers);
            }
            for j in 0..cqes.len() {
                if let Some(ahead) = cqes.get(j + PREFETCH_AHEAD) {
                    self.prefetch(ahead, workers);
                }
                self.complete(&cqes[j], &mut turn, workers, stats, worker_index);
            }
        }
        self.arm();
        turn.more = !self.ring.completion().is_empty();
        turn.end = std::time::Instant::now();
        // A long turn, or a receive that ran out of buffers, suspects a backlog: the socket's
        // receive timestamps go on (`Sojourn::end_turn`).
        for s in &mut self.sockets {
            s.sojourn.end_turn(s.served, s.starved, turn.end);
        }
        turn
    }

    /// Handles one completion.
    fn complete(
        &mut self,
        cqe: &cqueue::Entry,
        turn: &mut Turn,
        workers: &mut [Box<dyn DatagramWorker>],
        stats: &RuntimeStats,
        worker_index: usize,
    ) {
        let (res, flags) = (cqe.result(), cqe.flags());
        match Op::decode(cqe.user_data()) {
            Some(Op::Recv(i)) => self.on_receive(i, res, flags, workers, stats, worker_index),
            Some(Op::Send(i)) => self.on_sent(i, res, stats, worker_index),
            Some(Op::Epoll) => {
                if res >= 0 {
                    turn.epoll_ready = true;
                } else if res != -libc::ECANCELED {
                    tracing::debug!(worker = worker_index, "epoll poll: {res}");
                    turn.epoll_ready = true;
                }
                if !cqueue::more(flags) {
                    self.epoll_armed = false;
                }
            }
            Some(Op::Accept(i)) => {
                if !cqueue::more(flags) {
                    if let Some(armed) = self.accept_armed.get_mut(i) {
                        *armed = false;
                    }
                    if res < 0 && accept_exhausted(res) {
                        self.hold_accept(i, true);
                    }
                }
                self.events.push(StreamEvent {
                    op: Op::Accept(i),
                    res,
                    flags,
                });
            }
            Some(op @ (Op::StreamRecv(_) | Op::StreamSend(_))) => {
                self.events.push(StreamEvent { op, res, flags });
            }
            Some(Op::Cancel) | None => {}
        }
    }

    /// Hands the datagram of a receive completion (if it is one) to its service's
    /// [`DatagramWorker::prefetch`]; reads the buffer, changes nothing.
    fn prefetch(&self, cqe: &cqueue::Entry, workers: &[Box<dyn DatagramWorker>]) {
        let (res, flags) = (cqe.result(), cqe.flags());
        let Some(Op::Recv(i)) = Op::decode(cqe.user_data()) else {
            return;
        };
        let (Some(sock), Some(worker), Some(bid)) = (
            self.sockets.get(i),
            workers.get(i),
            cqueue::buffer_select(flags),
        ) else {
            return;
        };
        if res <= 0 {
            return;
        }
        let data = sock.region.buffer(bid, res as usize);
        if let Ok(msg) = RecvMsgOut::parse(data, &sock.hdr) {
            worker.prefetch(msg.payload_data());
        }
    }

    fn on_receive(
        &mut self,
        i: usize,
        res: i32,
        flags: u32,
        workers: &mut [Box<dyn DatagramWorker>],
        stats: &RuntimeStats,
        worker_index: usize,
    ) {
        let Some(sock) = self.sockets.get_mut(i) else {
            return;
        };
        if !cqueue::more(flags) {
            // Out of buffers (ENOBUFS) or stopped: re-armed at the end of the turn, once the
            // buffers served in this turn are back in the ring.
            sock.armed = false;
        }
        if res < 0 {
            if res == -libc::ENOBUFS {
                sock.starved = true;
                if sock.region.grow() {
                    sock.recycled = true;
                }
            }
            if res != -libc::ENOBUFS && res != -libc::ECANCELED {
                tracing::debug!(worker = worker_index, "multishot recvmsg: {res}");
            }
            return;
        }
        let Some(bid) = cqueue::buffer_select(flags) else {
            return;
        };
        let Some(st) = stats
            .datagrams
            .get(i)
            .and_then(|d| d.per_worker.get(worker_index))
        else {
            sock.region.recycle(bid);
            sock.recycled = true;
            return;
        };
        let data = sock.region.buffer(bid, res as usize);
        let Ok(msg) = RecvMsgOut::parse(data, &sock.hdr) else {
            sock.region.recycle(bid);
            sock.recycled = true;
            return;
        };
        let payload = msg.payload_data();
        sock.served += 1;
        bump(&st.received, 1);
        bump(&st.bytes_in, payload.len() as u64);
        let name = msg.name_data();
        let name_len = (msg.incoming_name_len() as usize).min(name.len());
        let truncated = msg.is_payload_truncated();
        let src = match socket_addr(&name[..name_len]) {
            Some(src) => src,
            None => {
                bump(&st.unanswered, 1);
                sock.region.recycle(bid);
                sock.recycled = true;
                return;
            }
        };
        let slot = self.free.pop();
        let out = match slot {
            Some(s) => &mut self.slots[s].buf,
            None => &mut self.spare,
        };
        out.clear();
        if sock.batch_left == 0 {
            sock.sojourn.start_batch();
        }
        sock.sojourn.judge(msg.control_data(), &mut sock.ctx);
        let batch_left = &mut sock.batch_left;
        let batch = self.batch;
        let answer = match workers.get_mut(i) {
            Some(worker) => std::panic::catch_unwind(AssertUnwindSafe(|| {
                if *batch_left == 0 {
                    *batch_left = batch;
                    worker.on_batch();
                }
                *batch_left -= 1;
                if truncated {
                    worker.on_oversized(&sock.ctx, src, payload, out)
                } else {
                    worker.on_datagram(&sock.ctx, src, payload, out)
                }
            })),
            None => Ok(false),
        };
        let answered = match answer {
            Ok(true) if !out.is_empty() => true,
            Ok(_) => {
                bump(&st.unanswered, 1);
                false
            }
            Err(_) => {
                tracing::error!(worker = worker_index, "datagram service panicked");
                bump(&st.panics, 1);
                false
            }
        };
        if answered && slot.is_none() {
            bump(&st.send_dropped, 1);
        }
        let send = match (answered, slot) {
            (true, Some(s)) => {
                let slot = &mut self.slots[s];
                // The source address goes back as the destination, bytes unchanged.
                // SAFETY: `name_len` is at most the size of `sockaddr_in6`; the copy writes
                // inside `slot.name` from the received buffer.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        name.as_ptr(),
                        (&mut slot.name as *mut libc::sockaddr_in6).cast::<u8>(),
                        name_len,
                    );
                }
                slot.hdr.msg_namelen = name_len as u32;
                slot.socket = i;
                let entry = if self.send_to {
                    // A send with a destination address (recent kernels; see `on_sent` for
                    // older ones): no message header or iovec for the kernel to copy in and
                    // import.
                    opcode::Send::new(Fixed(i as u32), slot.buf.as_ptr(), slot.buf.len() as u32)
                        .dest_addr((&slot.name as *const libc::sockaddr_in6).cast())
                        .dest_addr_len(name_len as libc::socklen_t)
                        .flags(libc::MSG_DONTWAIT)
                        .build()
                } else {
                    slot.iov.iov_base = slot.buf.as_mut_ptr().cast();
                    slot.iov.iov_len = slot.buf.len();
                    opcode::SendMsg::new(Fixed(i as u32), &slot.hdr)
                        .flags(libc::MSG_DONTWAIT as u32)
                        .build()
                };
                Some(entry.user_data(Op::Send(s).encode()))
            }
            (_, Some(s)) => {
                self.free.push(s);
                None
            }
            (_, None) => None,
        };
        sock.region.recycle(bid);
        sock.recycled = true;
        if let Some(entry) = send {
            self.push(&entry);
        }
    }

    fn on_sent(&mut self, s: usize, res: i32, stats: &RuntimeStats, worker_index: usize) {
        let Some(socket) = self.slots.get(s).map(|slot| slot.socket) else {
            return;
        };
        if let Some(st) = stats
            .datagrams
            .get(socket)
            .and_then(|d| d.per_worker.get(worker_index))
        {
            if res >= 0 {
                bump(&st.sent, 1);
                bump(&st.bytes_out, res as u64);
            } else if res == -libc::EAGAIN || res == -libc::ENOBUFS {
                bump(&st.send_dropped, 1);
            } else if (res == -libc::EINVAL || res == -libc::EDESTADDRREQ) && self.send_to {
                // A kernel without destination addresses on IORING_OP_SEND (it refuses the
                // address field, or ignores it): this answer is lost (the client retries) and
                // every later one goes as a SENDMSG.
                tracing::info!(
                    worker = worker_index,
                    "io_uring send with a destination is not supported here: using sendmsg"
                );
                self.send_to = false;
                bump(&st.send_errors, 1);
            } else {
                tracing::debug!(worker = worker_index, "sendmsg: {res}");
                bump(&st.send_errors, 1);
            }
        }
        // Do not let one huge answer pin memory in the slot for ever.
        if let Some(slot) = self.slots.get_mut(s) {
            if slot.buf.capacity() > 64 * 1024 {
                slot.buf = Vec::new();
            }
        }
        self.free.push(s);
    }
}

/// The socket address in a received `sockaddr_in` or `sockaddr_in6`.
fn socket_addr(name: &[u8]) -> Option<SocketAddr> {
    let family = i32::from(u16::from_ne_bytes([*name.first()?, *name.get(1)?]));
    let port = u16::from_be_bytes([*name.get(2)?, *name.get(3)?]);
    match family {
        libc::AF_INET => {
            let ip: [u8; 4] = name.get(4..8)?.try_into().ok()?;
            Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port)))
        }
        libc::AF_INET6 => {
            let flow = u32::from_ne_bytes(name.get(4..8)?.try_into().ok()?);
            let ip: [u8; 16] = name.get(8..24)?.try_into().ok()?;
            let scope = u32::from_ne_bytes(name.get(24..28)?.try_into().ok()?);
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(ip),
                port,
                u32::from_be(flow),
                scope,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::net::UdpSocket;
    use std::sync::Arc;

    use crate::runtime::{DatagramService, DatagramSpec, Runtime, RuntimeConfig};

    /// Answers each datagram with itself.
    struct Echo;

    impl DatagramService for Echo {
        fn worker(&self, _worker: usize) -> Box<dyn DatagramWorker> {
            Box::new(Echo)
        }
    }

    impl DatagramWorker for Echo {
        fn on_datagram(
            &mut self,
            _ctx: &DatagramCtx,
            _src: SocketAddr,
            packet: &[u8],
            out: &mut Vec<u8>,
        ) -> bool {
            out.extend_from_slice(packet);
            true
        }
    }

    #[test]
    fn bursts_larger_than_the_buffer_ring_are_all_answered() {
        let spec = DatagramSpec {
            name: "echo".to_owned(),
            addr: "127.0.0.1:0".parse().unwrap(),
            service: Arc::new(Echo),
        };
        let config = RuntimeConfig {
            workers: 1,
            backend: crate::runtime::Backend::IoUring,
            // The smallest ring: 64 receive buffers and 128 send slots.
            datagram_batch: 1,
            ..RuntimeConfig::default()
        };
        let mut rt = Runtime::start_with(&config, Vec::new(), vec![spec], Vec::new()).unwrap();
        let addr = rt.datagram_addrs()[0].1;
        let clients: Vec<UdpSocket> = (0..6)
            .map(|_| {
                let c = UdpSocket::bind("127.0.0.1:0").unwrap();
                c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                c
            })
            .collect();
        // Each round queues 120 datagrams before any answer is read: more than the ring has
        // buffers (the multishot receive stops and is re-armed) and slots.
        for round in 0..4u8 {
            for (k, c) in clients.iter().enumerate() {
                for i in 0..20u8 {
                    c.send_to(&[round, k as u8, i], addr).unwrap();
                }
            }
            for (k, c) in clients.iter().enumerate() {
                let mut seen = Vec::new();
                let mut buf = [0u8; 16];
                for _ in 0..20 {
                    let (n, _) = c.recv_from(&mut buf).unwrap();
                    assert_eq!(&buf[..2], &[round, k as u8], "an answer for another source");
                    assert_eq!(n, 3);
                    seen.push(buf[2]);
                }
                seen.sort_unstable();
                assert_eq!(seen, (0..20).collect::<Vec<u8>>());
            }
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while rt.stats().datagrams[0].totals().sent < 480 {
            assert!(std::time::Instant::now() < deadline, "sends not counted");
            std::thread::sleep(Duration::from_millis(5));
        }
        let t = rt.stats().datagrams[0].totals();
        assert_eq!((t.received, t.sent, t.send_dropped), (480, 480, 0));
        rt.shutdown();
    }

    #[test]
    fn buffer_regions_start_small_and_double_up_to_their_room() {
        let mut r = BufRegion::new(128, 32, 256).unwrap();
        assert_eq!((r.live, r.tail), (32, 32));
        assert!(r.buffer(31, 16).len() == 16 && r.buffer(32, 16).is_empty());
        assert!(r.grow());
        assert_eq!((r.live, r.tail), (64, 64));
        assert!(r.grow());
        assert!(!r.grow(), "all 128 are in circulation");
        assert_eq!((r.live, r.tail), (128, 128));
        assert_eq!(
            r.buffer(127, 1000).len(),
            256,
            "a buffer is never read past its end"
        );
    }

    /// Every connection with bytes waiting ends its receive with `ENOBUFS` when the stream
    /// buffer ring runs dry: the ring doubles once for all of them, not once per connection.
    #[test]
    fn the_stream_buffer_ring_starts_small_and_doubles_once_per_turn() {
        // On a thread of its own, as worker rings are (see `super::super` module docs).
        std::thread::spawn(|| {
            use std::os::fd::AsRawFd;
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            // SAFETY: no pointer arguments; the descriptor is closed below.
            let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
            assert!(epoll >= 0);
            let mut ring =
                UdpRing::new(&[], epoll, 32, Duration::ZERO, &[listener.as_raw_fd()], 16)
                    .unwrap_or_else(|e| panic!("io_uring: {e}"));
            assert_eq!(ring.stream_buffers(), STREAM_BUFS_INITIAL);
            ring.grow_stream();
            ring.grow_stream();
            assert_eq!(ring.stream_buffers(), 2 * STREAM_BUFS_INITIAL);
            ring.arm();
            ring.grow_stream();
            assert_eq!(ring.stream_buffers(), 4 * STREAM_BUFS_INITIAL);
            for _ in 0..16 {
                ring.arm();
                ring.grow_stream();
            }
            assert_eq!(ring.stream_buffers(), STREAM_BUFS, "up to its room");
            ring.quiesce();
            drop(ring);
            // SAFETY: the descriptor made above, closed once.
            unsafe { libc::close(epoll) };
        })
        .join()
        .unwrap();
    }

    #[test]
    fn socket_addresses_decode_from_kernel_names() {
        let v4: SocketAddr = "127.0.0.2:6969".parse().unwrap();
        let s = socket2::SockAddr::from(v4);
        // SAFETY: `as_ptr` points at `len` initialised bytes.
        let bytes =
            unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<u8>(), s.len() as usize) };
        assert_eq!(socket_addr(bytes), Some(v4));
        let v6: SocketAddr = "[2001:db8::7]:443".parse().unwrap();
        let s = socket2::SockAddr::from(v6);
        // SAFETY: as above.
        let bytes =
            unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<u8>(), s.len() as usize) };
        assert_eq!(socket_addr(bytes), Some(v6));
        assert_eq!(socket_addr(&[0u8; 3]), None);
        assert_eq!(socket_addr(&[0u8; 28]), None);
    }
}
