//! The stream path of the io_uring back-end: what a TCP connection looks like to the
//! connection logic when its bytes come and go through the worker's ring.
//!
//! Every listener has one multishot `Accept` (Linux 5.19) on the ring. Every connection has one
//! multishot `Recv` (Linux 6.0) that takes a buffer of the worker's stream buffer ring (one
//! provided-buffer ring shared by the worker's connections) for each arrival; the worker serves
//! the bytes straight from that buffer and gives it back in the same turn, keeping only what the
//! service left unconsumed (a partial request, or requests held back by the per-turn budget).
//! Answers are appended to the connection's chunks of the worker's [`SendPool`]; once the
//! connection is served they go to the socket at once with a non-blocking `sendmsg`
//! ([`RingStream::send_now`]), so the chunks serve the next connection of the turn, and only
//! what the kernel does not take is queued as one `SendMsg` per connection, submitted with the
//! turn's single `io_uring_enter`. A connection has at most one send in flight (no direct send
//! overtakes it), and what its share of the pool cannot take stays in the connection's pending
//! output, as on epoll when the kernel's send buffer is full. A connection whose pending output reaches
//! its limit, or whose unserved input reaches its `max_input_bytes`, has its receive cancelled
//! until it drains: the kernel then holds the client's bytes and TCP flow control pushes
//! back, as on epoll.
//!
//! [`RingStream`] implements `Read` and `Write` over these buffers, so the connection logic of
//! `epoll.rs` (limits, deadlines, TLS through rustls, fairness) serves ring connections
//! unchanged. Writes that must reach the wire before the connection is closed (a deadline
//! answer, a TLS `close_notify`) go straight to the socket ([`RingStream::set_direct`]), and
//! only when nothing is queued in front of them.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;

use io_uring::types::{Fd, Fixed};
use io_uring::{opcode, squeue};

use super::Op;

/// Size of one send chunk: 8 KiB. A connection's answers on their way to the kernel are held
/// in chunks of the worker's [`SendPool`], taken as answers are written and given back as
/// soon as a send completion covers them, so memory follows the bytes in flight rather than
/// a buffer per connection.
pub(crate) const CHUNK_BYTES: usize = 8 * 1024;

/// Answer bytes the connections of one worker hold on the ring (written, not yet acknowledged
/// by a send completion) before the worker's fair share applies: 512 KiB (a turn's answers on
/// 16 connections pipelining 16 FINDs of 30 peers fit). A turn's answers are submitted
/// together at its end and most sends complete at once (the kernel copies them into the
/// socket), so this bounds the answers one turn produces, not a rate; a smaller budget cut
/// such turns into more, smaller service calls and cost CPU per request.
pub(crate) const WORKER_BUDGET_BYTES: usize = 512 * 1024;

/// What one connection may hold on the ring while the worker's budget has room: 128 KiB (two
/// turns of `max_output_per_turn` by default: a turn's answers while the previous turn's send
/// is still in flight). A connection that holds more is not served (nor read beyond its input
/// cap) until its sends complete.
pub(crate) const CONN_SHARE_BYTES: usize = 128 * 1024;

/// What a connection may always hold, however much the others hold: 16 KiB (about half a
/// turn's worth of pipelined tracker answers, so that a connection served past the budget
/// still answers several requests per service call rather than one or two). A client that
/// never reads pins at most its share, and every other connection still gets this much per
/// turn, so it cannot stall them.
pub(crate) const MIN_SHARE_BYTES: usize = 16 * 1024;

/// Most bytes a connection's writes accept before they report `WouldBlock` (the role of the
/// kernel's send buffer on epoll): twice [`CONN_SHARE_BYTES`]. The service is held to the
/// connection's room ([`RingStream::room`]) before each answer; this bounds the last answer's
/// overshoot and TLS records.
pub(crate) const CONN_HARD_BYTES: usize = 2 * CONN_SHARE_BYTES;

/// Chunks one send covers at most (the rest goes with the next send): 32 (256 KiB, more than
/// a connection's share).
const MAX_IOV: usize = 32;

/// Spare chunks a worker keeps: as many as its budget holds (512 KiB). More are freed.
const KEEP_CHUNKS: usize = WORKER_BUDGET_BYTES / CHUNK_BYTES;

/// The chunks and message header of a send still in flight on a closed connection, kept until
/// its completion arrives.
struct Orphan {
    ud: u64,
    chunks: VecDeque<Vec<u8>>,
    msg: Box<SendMsgParts>,
}

/// The worker's send chunks and the bytes its ring connections hold in them (one per worker,
/// shared by its connections: a connection's [`RingStream::room`] depends on what the others
/// hold).
#[derive(Default)]
pub(crate) struct SendPool {
    free: Vec<Vec<u8>>,
    /// Boxed: a connection keeps its header in place while its send is in flight.
    #[allow(clippy::vec_box)]
    msgs: Vec<Box<SendMsgParts>>,
    /// Answer bytes written by the worker's connections and not yet acknowledged.
    held: usize,
    /// The most `held` has been, at any moment.
    peak: usize,
    orphans: Vec<Orphan>,
}

/// A worker's [`SendPool`], shared by the worker's connections (all on the worker thread).
pub(crate) type SharedPool = Rc<RefCell<SendPool>>;

impl SendPool {
    pub(crate) fn shared() -> SharedPool {
        Rc::new(RefCell::new(SendPool::default()))
    }

    fn take(&mut self) -> Vec<u8> {
        self.free
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(CHUNK_BYTES))
    }

    fn take_msg(&mut self) -> Box<SendMsgParts> {
        self.msgs.pop().unwrap_or_else(SendMsgParts::new)
    }

    fn give_msg(&mut self, msg: Box<SendMsgParts>) {
        if self.msgs.len() < KEEP_CHUNKS {
            self.msgs.push(msg);
        }
    }

    fn give(&mut self, mut chunk: Vec<u8>) {
        if self.free.len() < KEEP_CHUNKS {
            chunk.clear();
            self.free.push(chunk);
        }
    }

    /// The send `ud` of a closed connection completed: its chunks can go.
    pub(crate) fn release_orphan(&mut self, ud: u64) {
        if let Some(i) = self.orphans.iter().position(|o| o.ud == ud) {
            let orphan = self.orphans.swap_remove(i);
            for chunk in orphan.chunks {
                self.give(chunk);
            }
            self.give_msg(orphan.msg);
        }
    }

    /// Answer bytes the worker's connections hold.
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    /// The most answer bytes the worker's connections have held at once, also within a turn.
    pub(crate) fn peak(&self) -> usize {
        self.peak
    }

    #[cfg(test)]
    pub(crate) fn spare(&self) -> usize {
        self.free.len()
    }
}

/// What a `SendMsg` points at: kept in place (boxed) while the send is in flight.
struct SendMsgParts {
    iov: [libc::iovec; MAX_IOV],
    hdr: libc::msghdr,
}

impl SendMsgParts {
    fn new() -> Box<SendMsgParts> {
        // SAFETY: zero is a valid `iovec` and `msghdr`.
        Box::new(unsafe { std::mem::zeroed() })
    }
}

/// Size of one buffer of the worker's stream buffer ring: 4 KiB (a pipelined batch of tracker
/// requests fits; a TLS record spans a few).
pub(crate) const STREAM_BUF_BYTES: usize = 4 * 1024;

/// Room in the worker's stream buffer ring: 512 buffers (2 MiB per worker at most). It bounds
/// what a connection can receive between the arrival that takes it over its input cap and the
/// cancel of its receive, which is submitted with the next wait.
pub(crate) const STREAM_BUFS: u16 = 512;

/// Buffers the stream buffer ring starts with: 16 (64 KiB). The kernel takes buffers in ring
/// order, so every buffer in circulation is touched as the ring turns; the ring therefore
/// starts small and doubles (up to [`STREAM_BUFS`]) when an arrival finds it empty (the
/// receive then ends with `ENOBUFS`, its bytes wait in the socket, and the connection's
/// receive is started again in the same turn, after the buffers were given back). Its memory
/// follows the most arrivals a worker has seen between two of its turns, about one buffer
/// per busy connection, rather than the most it could hold.
pub(crate) const STREAM_BUFS_INITIAL: u16 = 16;

/// A connection served through the worker's ring.
pub(crate) struct RingStream {
    socket: std::net::TcpStream,
    /// Index of the socket in the ring's registered files, when it has one.
    file: Option<u32>,
    /// `(generation << 32) | slot`: what the connection's operations carry in `user_data`.
    id: usize,
    /// Received bytes left over from earlier arrivals; `[backlog_pos..]` is unread.
    backlog: Vec<u8>,
    backlog_pos: usize,
    /// The provided buffer being served in this call (valid only while the worker serves the
    /// arrival, see [`RingStream::offer`]).
    inbox: *const u8,
    inbox_len: usize,
    /// The peer finished sending (a receive returned 0).
    eof: bool,
    /// An operation failed with this `errno`: the connection is broken.
    error: Option<i32>,
    /// The worker's send chunks.
    pool: SharedPool,
    /// Answers written and not yet acknowledged, in chunks of the pool: `out[0][head..]`
    /// first. The send in flight covers the first `inflight` of them; writes append behind.
    out: VecDeque<Vec<u8>>,
    head: usize,
    /// Bytes in `out` from `head` on (also counted in the pool's `held`).
    held: usize,
    inflight: usize,
    /// The message header of the send in flight (taken from the pool while bytes are held).
    msg: Option<Box<SendMsgParts>>,
    sending: bool,
    /// The multishot receive is active (until its last completion).
    pub(crate) recv_armed: bool,
    /// A cancel of the receive was queued (backpressure); cleared when it ends.
    recv_cancelling: bool,
    /// Queued to submit its held answers at the end of the turn.
    pub(crate) flush_queued: bool,
    /// Writes bypass the ring (see the module documentation).
    direct: bool,
}

// SAFETY: `inbox` is only set and read on the worker thread during one call, and the pool is
// shared only by the connections of one worker; the value moves to the worker thread before
// any connection exists.
unsafe impl Send for RingStream {}

impl RingStream {
    pub(crate) fn new(
        socket: std::net::TcpStream,
        file: Option<u32>,
        id: usize,
        pool: SharedPool,
    ) -> RingStream {
        RingStream {
            socket,
            file,
            id,
            backlog: Vec::new(),
            backlog_pos: 0,
            inbox: std::ptr::null(),
            inbox_len: 0,
            eof: false,
            error: None,
            pool,
            out: VecDeque::new(),
            head: 0,
            held: 0,
            inflight: 0,
            msg: None,
            sending: false,
            recv_armed: false,
            recv_cancelling: false,
            flush_queued: false,
            direct: false,
        }
    }

    pub(crate) fn id(&self) -> usize {
        self.id
    }

    pub(crate) fn file(&self) -> Option<u32> {
        self.file
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// The arrival of `len` bytes at `data`, served from there by the next reads. Call
    /// [`RingStream::keep_inbox`] before the buffer goes back to the kernel.
    ///
    /// # Safety
    /// `data` must be valid for `len` bytes until [`RingStream::keep_inbox`] is called.
    pub(crate) unsafe fn offer(&mut self, data: *const u8, len: usize) {
        self.inbox = data;
        self.inbox_len = len;
    }

    /// Copies what the service did not read of the arrival into the backlog: the provided
    /// buffer can go back to the kernel.
    pub(crate) fn keep_inbox(&mut self) {
        if self.inbox_len > 0 {
            // SAFETY: `offer`'s contract: the buffer is still valid.
            let rest = unsafe { std::slice::from_raw_parts(self.inbox, self.inbox_len) };
            if self.backlog_pos == self.backlog.len() {
                self.backlog.clear();
                self.backlog_pos = 0;
            }
            self.backlog.extend_from_slice(rest);
        }
        self.inbox = std::ptr::null();
        self.inbox_len = 0;
    }

    /// Received bytes not yet read by the connection logic.
    pub(crate) fn unread(&self) -> usize {
        self.backlog.len() - self.backlog_pos + self.inbox_len
    }

    pub(crate) fn on_eof(&mut self) {
        self.eof = true;
    }

    pub(crate) fn on_error(&mut self, errno: i32) {
        self.error.get_or_insert(errno);
    }

    pub(crate) fn broken(&self) -> bool {
        self.error.is_some()
    }

    pub(crate) fn eof(&self) -> bool {
        self.eof
    }

    /// Bytes written through this stream that have not reached the kernel's socket yet.
    pub(crate) fn unsent(&self) -> bool {
        self.sending || self.held > 0
    }

    /// A send should be queued: none is in flight and bytes wait.
    pub(crate) fn needs_send(&self) -> bool {
        !self.sending && self.error.is_none() && self.held > 0
    }

    /// Answer bytes this connection may still write before it is over its share: the share
    /// is [`CONN_SHARE_BYTES`] while the worker's connections together hold less than
    /// [`WORKER_BUDGET_BYTES`], what is left of the budget past that, and never less than
    /// [`MIN_SHARE_BYTES`]. Zero means: serve nothing until a send completes (one is in
    /// flight or queued, since a connection holding nothing always has room).
    pub(crate) fn room(&self) -> usize {
        if self.direct || self.error.is_some() {
            // A broken connection is not held back: its next read reports the error.
            return usize::MAX;
        }
        let others = self.pool.borrow().held.saturating_sub(self.held);
        let share = WORKER_BUDGET_BYTES
            .saturating_sub(others)
            .clamp(MIN_SHARE_BYTES, CONN_SHARE_BYTES);
        share.saturating_sub(self.held)
    }

    /// Writes go straight to the socket from now on (the connection is about to be closed).
    pub(crate) fn set_direct(&mut self) {
        self.direct = true;
    }

    /// The receive's end was reported (its last completion arrived).
    pub(crate) fn on_recv_ended(&mut self) {
        self.recv_armed = false;
        self.recv_cancelling = false;
    }

    /// Whether the receive should be cancelled now (it runs and no cancel is under way);
    /// marks the cancel as queued.
    pub(crate) fn begin_cancel_recv(&mut self) -> bool {
        if self.recv_armed && !self.recv_cancelling {
            self.recv_cancelling = true;
            true
        } else {
            false
        }
    }

    /// The multishot receive of this connection from buffer group `bgid`.
    pub(crate) fn recv_entry(&mut self, bgid: u16) -> squeue::Entry {
        self.recv_armed = true;
        let ud = Op::StreamRecv(self.id).encode();
        match self.file {
            Some(i) => opcode::RecvMulti::new(Fixed(i), bgid).build().user_data(ud),
            None => opcode::RecvMulti::new(Fd(self.raw_fd()), bgid)
                .build()
                .user_data(ud),
        }
    }

    /// The send of the held answers (up to [`MAX_IOV`] chunks), when none is in flight and
    /// there is something to send.
    pub(crate) fn send_entry(&mut self) -> Option<squeue::Entry> {
        self.flush_queued = false;
        if self.sending || self.error.is_some() || self.held == 0 {
            return None;
        }
        let mut msg = self
            .msg
            .take()
            .unwrap_or_else(|| self.pool.borrow_mut().take_msg());
        let (n, bytes) = self.gather(&mut msg.iov);
        let msg = self.msg.insert(msg);
        if n == 0 {
            return None;
        }
        msg.hdr = {
            // SAFETY: zero is a valid `msghdr`.
            let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
            hdr.msg_iov = msg.iov.as_mut_ptr();
            hdr.msg_iovlen = n as _;
            hdr
        };
        self.inflight = bytes;
        self.sending = true;
        let hdr: *const libc::msghdr = &msg.hdr;
        let ud = Op::StreamSend(self.id).encode();
        Some(match self.file {
            Some(i) => opcode::SendMsg::new(Fixed(i), hdr)
                .flags(libc::MSG_NOSIGNAL as u32)
                .build()
                .user_data(ud),
            None => opcode::SendMsg::new(Fd(self.raw_fd()), hdr)
                .flags(libc::MSG_NOSIGNAL as u32)
                .build()
                .user_data(ud),
        })
    }

    /// The send in flight completed with `res`; the caller queues the next one
    /// ([`RingStream::send_entry`]). The chunks it covered go back to the worker's pool, and
    /// the message header too once nothing is held.
    pub(crate) fn on_sent(&mut self, res: i32) {
        self.sending = false;
        self.inflight = 0;
        if res < 0 {
            // The answers will never be sent: their chunks go back now.
            self.on_error(-res);
            self.retire();
            return;
        }
        self.settle(res as usize);
    }

    /// Hands the held answers to the kernel at once with a non-blocking `sendmsg`
    /// (`MSG_DONTWAIT`), when no send is in flight: what the socket's send buffer takes is
    /// acknowledged here and its chunks go back to the worker's pool in the same turn, so
    /// that the connections served after this one reuse them and a turn's answers are not all
    /// held in user space until the turn's submit. What the kernel does not take (`EAGAIN`, a
    /// short send, any error) stays held for the queued send of the ring
    /// ([`RingStream::send_entry`]), which reports errors as before. Returns the bytes the
    /// kernel took.
    pub(crate) fn send_now(&mut self) -> usize {
        if self.sending || self.error.is_some() || self.held == 0 || self.direct {
            return 0;
        }
        // SAFETY: zero is a valid `iovec`.
        let mut iov: [libc::iovec; MAX_IOV] = unsafe { std::mem::zeroed() };
        let n = self.gather(&mut iov).0;
        if n == 0 {
            return 0;
        }
        // SAFETY: zero is a valid `msghdr`.
        let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
        hdr.msg_iov = iov.as_mut_ptr();
        hdr.msg_iovlen = n as _;
        // SAFETY: the iovecs point into this stream's chunks, which outlive the call.
        let sent =
            unsafe { libc::sendmsg(self.raw_fd(), &hdr, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
        if sent <= 0 {
            return 0;
        }
        self.settle(sent as usize);
        sent as usize
    }

    /// Fills `iov` with the held bytes, from the first unsent one, up to [`MAX_IOV`] chunks:
    /// the number of iovecs and of bytes they name.
    fn gather(&self, iov: &mut [libc::iovec; MAX_IOV]) -> (usize, usize) {
        let mut n = 0;
        let mut bytes = 0;
        for (i, chunk) in self.out.iter().take(MAX_IOV).enumerate() {
            let from = if i == 0 { self.head } else { 0 };
            let rest = &chunk[from..];
            if rest.is_empty() {
                continue;
            }
            iov[n] = libc::iovec {
                iov_base: rest.as_ptr() as *mut libc::c_void,
                iov_len: rest.len(),
            };
            n += 1;
            bytes += rest.len();
        }
        (n, bytes)
    }

    /// `sent` bytes from the front of the held ones reached the kernel: the chunks they
    /// filled go back to the worker's pool, and the message header too once nothing is held.
    fn settle(&mut self, sent: usize) {
        let mut done = sent.min(self.held);
        let mut pool = self.pool.borrow_mut();
        pool.held -= done;
        self.held -= done;
        while done > 0 {
            let Some(front) = self.out.front() else {
                break;
            };
            let left = front.len() - self.head;
            if done < left {
                self.head += done;
                break;
            }
            done -= left;
            self.head = 0;
            if let Some(chunk) = self.out.pop_front() {
                pool.give(chunk);
            }
        }
        if self.held == 0 {
            self.head = 0;
            for chunk in self.out.drain(..) {
                pool.give(chunk);
            }
            if let Some(msg) = self.msg.take() {
                pool.give_msg(msg);
            }
        }
    }

    /// Gives the connection's chunks back (it is being closed; unsent answers are dropped).
    /// Returns the `user_data` of a send still in flight, whose chunks are kept until its
    /// completion ([`SendPool::release_orphan`]): cancel it.
    pub(crate) fn retire(&mut self) -> Option<u64> {
        let mut pool = self.pool.borrow_mut();
        pool.held -= self.held;
        self.held = 0;
        self.head = 0;
        if self.sending {
            self.sending = false;
            let ud = Op::StreamSend(self.id).encode();
            let chunks = std::mem::take(&mut self.out);
            let msg = self.msg.take().unwrap_or_else(SendMsgParts::new);
            pool.orphans.push(Orphan { ud, chunks, msg });
            return Some(ud);
        }
        for chunk in self.out.drain(..) {
            pool.give(chunk);
        }
        if let Some(msg) = self.msg.take() {
            pool.give_msg(msg);
        }
        None
    }

    /// Shuts the socket's sending half (the FIN after the last answer).
    pub(crate) fn shutdown_write(&self) -> io::Result<()> {
        self.socket.shutdown(std::net::Shutdown::Write)
    }

    /// Reads and drops what has arrived, up to `budget` bytes, so that closing does not reset
    /// the connection (see `epoll.rs`).
    pub(crate) fn discard_input(&mut self, sink: &mut [u8], mut budget: usize) {
        self.backlog.clear();
        self.backlog_pos = 0;
        self.inbox_len = 0;
        while budget > 0 && !sink.is_empty() {
            let len = sink.len().min(budget);
            match (&self.socket).read(&mut sink[..len]) {
                Ok(n) if n > 0 => budget = budget.saturating_sub(n),
                _ => break,
            }
        }
    }
}

impl Drop for RingStream {
    /// The chunks go back to the worker's pool (those of a send in flight once it completes).
    fn drop(&mut self) {
        self.retire();
    }
}

impl Read for RingStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(errno) = self.error {
            return Err(io::Error::from_raw_os_error(errno));
        }
        // One read takes from both, so that a read shorter than asked means nothing is left
        // (what the connection logic concludes from it, as from a socket).
        let mut n = 0;
        if self.backlog_pos < self.backlog.len() {
            let rest = &self.backlog[self.backlog_pos..];
            n = rest.len().min(buf.len());
            buf[..n].copy_from_slice(&rest[..n]);
            self.backlog_pos += n;
            if self.backlog_pos == self.backlog.len() {
                // Given back once read: a connection holds input only while it waits to be
                // served, not the most it ever waited with.
                self.backlog = Vec::new();
                self.backlog_pos = 0;
            }
        }
        if self.inbox_len > 0 && n < buf.len() {
            let k = self.inbox_len.min(buf.len() - n);
            // SAFETY: `offer`'s contract: `inbox` is valid for `inbox_len` bytes.
            let rest = unsafe { std::slice::from_raw_parts(self.inbox, k) };
            buf[n..n + k].copy_from_slice(rest);
            // SAFETY: `k <= inbox_len`, still inside the buffer.
            self.inbox = unsafe { self.inbox.add(k) };
            self.inbox_len -= k;
            n += k;
        }
        if n > 0 || buf.is_empty() {
            return Ok(n);
        }
        if self.eof {
            return Ok(0);
        }
        Err(io::ErrorKind::WouldBlock.into())
    }
}

impl Write for RingStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(errno) = self.error {
            return Err(io::Error::from_raw_os_error(errno));
        }
        if self.direct {
            return (&self.socket).write(buf);
        }
        let take = CONN_HARD_BYTES.saturating_sub(self.held).min(buf.len());
        if take == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut pool = self.pool.borrow_mut();
        let mut rest = &buf[..take];
        while !rest.is_empty() {
            // The last chunk takes more bytes behind those a send in flight covers: the chunk
            // never reallocates, and the kernel reads only the bytes the send named.
            let spare = self
                .out
                .back()
                .map_or(0, |c| CHUNK_BYTES.saturating_sub(c.len()));
            if spare == 0 {
                self.out.push_back(pool.take());
                continue;
            }
            let n = spare.min(rest.len());
            if let Some(chunk) = self.out.back_mut() {
                chunk.extend_from_slice(&rest[..n]);
            }
            rest = &rest[n..];
        }
        self.held += take;
        pool.held += take;
        pool.peak = pool.peak.max(pool.held);
        Ok(take)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(pool: &SharedPool) -> (RingStream, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        (RingStream::new(server, None, 7, pool.clone()), client)
    }

    #[test]
    fn reads_serve_the_backlog_then_the_arrival_and_keep_the_rest() {
        let (mut s, _client) = pair(&SendPool::shared());
        let mut buf = [0u8; 4];
        assert_eq!(
            s.read(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        let first = b"abcdef".to_vec();
        unsafe { s.offer(first.as_ptr(), first.len()) };
        assert_eq!(s.read(&mut buf).unwrap(), 4);
        assert_eq!(&buf, b"abcd");
        s.keep_inbox();
        assert_eq!(s.unread(), 2);
        let second = b"gh".to_vec();
        unsafe { s.offer(second.as_ptr(), second.len()) };
        let mut big = [0u8; 16];
        assert_eq!(s.read(&mut big).unwrap(), 4, "one read takes both");
        assert_eq!(&big[..4], b"efgh", "older bytes first");
        s.keep_inbox();
        assert_eq!(s.unread(), 0);
        s.on_eof();
        assert_eq!(s.read(&mut big).unwrap(), 0);
        s.on_error(libc::ECONNRESET);
        assert!(s.read(&mut big).is_err());
    }

    /// Bytes a send entry names, as the kernel would read them.
    fn sent_bytes(s: &RingStream) -> Vec<u8> {
        let msg = s.msg.as_ref().unwrap();
        let mut v = Vec::new();
        for iov in &msg.iov[..msg.hdr.msg_iovlen] {
            // SAFETY: the iovecs point into the stream's chunks, alive while it holds them.
            v.extend_from_slice(unsafe {
                std::slice::from_raw_parts(iov.iov_base as *const u8, iov.iov_len)
            });
        }
        v
    }

    #[test]
    fn sent_chunks_go_back_to_the_pool_and_are_reused() {
        let pool = SendPool::shared();
        let (mut s, _client) = pair(&pool);
        assert_eq!(s.write(b"answer").unwrap(), 6);
        assert_eq!(pool.borrow().held(), 6);
        let chunk = s.out[0].as_ptr();
        assert!(s.send_entry().is_some());
        assert_eq!(sent_bytes(&s), b"answer");
        s.on_sent(6);
        assert!(!s.unsent());
        assert!(s.out.is_empty(), "a quiet connection holds no chunk");
        assert_eq!(pool.borrow().held(), 0);
        assert_eq!(pool.borrow().spare(), 1);
        assert_eq!(s.write(b"again").unwrap(), 5);
        assert_eq!(s.out[0].as_ptr(), chunk, "reused, not reallocated");
        assert_eq!(pool.borrow().spare(), 0);
    }

    /// Answers written while a send is in flight go behind it, in the same chunk when it has
    /// room, and a partial send is continued before them.
    #[test]
    fn writes_go_behind_the_send_in_flight_and_partial_sends_continue() {
        let pool = SendPool::shared();
        let (mut s, _client) = pair(&pool);
        let first: Vec<u8> = (0..CHUNK_BYTES + 100).map(|i| i as u8).collect();
        assert_eq!(s.write(&first).unwrap(), first.len());
        assert_eq!(s.out.len(), 2);
        assert!(s.send_entry().is_some());
        assert_eq!(sent_bytes(&s), first);
        assert!(s.send_entry().is_none(), "one send in flight");
        assert_eq!(s.write(b"more").unwrap(), 4);
        assert_eq!(s.out.len(), 2, "appended to the last chunk");
        s.on_sent(1000);
        assert!(s.unsent());
        assert!(
            s.send_entry().is_some(),
            "the rest, then what was written since"
        );
        let mut rest = first[1000..].to_vec();
        rest.extend_from_slice(b"more");
        assert_eq!(sent_bytes(&s), rest);
        s.on_sent(rest.len() as i32);
        assert!(!s.unsent());
        assert_eq!(pool.borrow().held(), 0);
        assert_eq!(pool.borrow().spare(), 2);
        s.on_sent(-libc::EPIPE);
        assert!(s.broken());
        assert!(s.write(b"x").is_err());
    }

    /// A direct send hands what the socket takes to the kernel at once and gives its chunks
    /// back to the pool; what the socket cannot take stays held, in order, for the ring's
    /// send.
    #[test]
    fn a_direct_send_frees_what_the_kernel_takes_and_leaves_the_rest_for_the_ring() {
        let pool = SendPool::shared();
        let (mut s, mut client) = pair(&pool);
        s.write_all(b"first answer").unwrap();
        s.send_now();
        assert!(!s.unsent(), "a socket with room takes it all");
        assert!(s.out.is_empty());
        assert_eq!(pool.borrow().held(), 0);
        assert_eq!(pool.borrow().peak(), 12);
        assert_eq!(pool.borrow().spare(), 1, "the chunk is back in the pool");
        let mut got = [0u8; 12];
        client.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"first answer");

        // More than the socket's buffers hold, never read: the kernel takes part of it
        // (bounded: at most 64 MiB are offered).
        socket2::SockRef::from(&s.socket)
            .set_send_buffer_size(4096)
            .unwrap();
        socket2::SockRef::from(&client)
            .set_recv_buffer_size(4096)
            .unwrap();
        let byte = |i: usize| (i % 251) as u8;
        let mut taken = 0;
        for _ in 0..1024 {
            let next: Vec<u8> = (taken..taken + 64 * 1024).map(byte).collect();
            s.write_all(&next).unwrap();
            let before = s.held;
            s.send_now();
            taken += before - s.held;
            if s.held > 0 {
                break;
            }
        }
        assert!(s.unsent(), "the socket's buffers are full");
        assert!(taken > 0);
        assert_eq!(pool.borrow().held(), s.held);
        // A send in flight comes first: no direct send overtakes it.
        assert!(s.send_entry().is_some());
        let named = sent_bytes(&s);
        let expected: Vec<u8> = (taken..taken + named.len()).map(byte).collect();
        assert_eq!(named, expected, "the rest, in order");
        let held = s.held;
        s.send_now();
        assert_eq!(s.held, held, "nothing sent around the ring's send");
    }

    #[test]
    fn writes_stop_at_the_hard_cap() {
        let pool = SendPool::shared();
        let (mut s, _client) = pair(&pool);
        let big = vec![1u8; CONN_HARD_BYTES + 10];
        assert_eq!(s.write(&big).unwrap(), CONN_HARD_BYTES);
        assert_eq!(s.write(b"x").unwrap_err().kind(), io::ErrorKind::WouldBlock);
        assert_eq!(s.room(), 0);
        assert!(s.send_entry().is_some());
        assert_eq!(
            sent_bytes(&s).len(),
            (MAX_IOV * CHUNK_BYTES).min(CONN_HARD_BYTES)
        );
    }

    /// A connection's room is its share of the worker's budget: the full share while the
    /// others hold little, what is left of the budget past that, and never less than the
    /// minimum for a connection that holds nothing, so connections that do not read (and
    /// hold their share for ever) cannot stall the others.
    #[test]
    fn room_is_a_fair_share_of_the_worker_budget() {
        let pool = SendPool::shared();
        let (mut a, _ca) = pair(&pool);
        assert_eq!(a.room(), CONN_SHARE_BYTES);
        let first = MIN_SHARE_BYTES + 1000;
        a.write_all(&vec![0u8; first]).unwrap();
        assert_eq!(a.room(), CONN_SHARE_BYTES - first);
        // Connections that never read, each holding its whole share.
        let stuck: Vec<_> = (0..WORKER_BUDGET_BYTES / CONN_SHARE_BYTES)
            .map(|_| {
                let (mut s, c) = pair(&pool);
                s.write_all(&vec![0u8; CONN_SHARE_BYTES]).unwrap();
                assert!(s.send_entry().is_some());
                assert_eq!(s.room(), 0, "over its share: not served");
                (s, c)
            })
            .collect();
        assert_eq!(
            a.room(),
            0,
            "the budget is spent and it holds more than the minimum"
        );
        let (fresh, _cf) = pair(&pool);
        assert_eq!(
            fresh.room(),
            MIN_SHARE_BYTES,
            "a connection holding nothing"
        );
        // Its answers sent, `a` gets the minimum again.
        assert!(a.send_entry().is_some());
        a.on_sent(first as i32);
        assert_eq!(a.room(), MIN_SHARE_BYTES);
        drop(stuck);
        assert_eq!(a.room(), CONN_SHARE_BYTES);
    }

    /// A closed connection's send in flight keeps its chunks until its completion; the
    /// worker's held bytes drop at once.
    #[test]
    fn a_closed_connections_send_keeps_its_chunks_until_it_completes() {
        let pool = SendPool::shared();
        let (mut s, _client) = pair(&pool);
        s.write_all(&[7u8; 100]).unwrap();
        assert!(s.send_entry().is_some());
        let ud = s.retire().expect("a send in flight");
        assert_eq!(ud, Op::StreamSend(7).encode());
        drop(s);
        assert_eq!(pool.borrow().held(), 0);
        assert_eq!(pool.borrow().spare(), 0, "kept for the kernel");
        pool.borrow_mut().release_orphan(ud);
        assert_eq!(pool.borrow().spare(), 1);
        // Without a send in flight, the chunks go back at once.
        let (mut t, _c2) = pair(&pool);
        t.write_all(&[1u8; 10]).unwrap();
        drop(t);
        assert_eq!(pool.borrow().spare(), 1);
        assert_eq!(pool.borrow().held(), 0);
    }
}
