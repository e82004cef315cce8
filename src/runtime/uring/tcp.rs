//! The stream path of the io_uring back-end: what a TCP connection looks like to the
//! connection logic when its bytes come and go through the worker's ring.
//!
//! Every listener has one multishot `Accept` (Linux 5.19) on the ring. Every connection has one
//! multishot `Recv` (Linux 6.0) that takes a buffer of the worker's stream buffer ring (one
//! provided-buffer ring shared by the worker's connections) for each arrival; the worker serves
//! the bytes straight from that buffer and gives it back in the same turn, keeping only what the
//! service left unconsumed (a partial request, or requests held back by the per-turn budget).
//! Answers are appended to the connection's staging buffer (at most [`STAGING_BYTES`]) and
//! queued as one `Send` per connection at the end of the turn, so that every answer of the
//! turn is submitted by the worker's single `io_uring_enter`; a connection has at most one send
//! in flight, and what the staging buffer cannot take stays in the connection's pending output,
//! as on epoll when the kernel's send buffer is full. A connection whose pending output reaches
//! its limit, or whose unserved input reaches its `max_input_bytes`, has its receive cancelled
//! until it drains: the kernel then holds the client's bytes and TCP flow control pushes
//! back, as on epoll.
//!
//! [`RingStream`] implements `Read` and `Write` over these buffers, so the connection logic of
//! `epoll.rs` (limits, deadlines, TLS through rustls, fairness) serves ring connections
//! unchanged. Writes that must reach the wire before the connection is closed (a deadline
//! answer, a TLS `close_notify`) go straight to the socket ([`RingStream::set_direct`]), and
//! only when nothing is queued in front of them.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};

use io_uring::types::{Fd, Fixed};
use io_uring::{opcode, squeue};

use super::Op;

/// Answer bytes a connection queues on the ring before its writes report `WouldBlock` (the
/// role of the kernel's send buffer on epoll): 64 KiB, the size of every staging buffer.
pub(crate) const STAGING_BYTES: usize = 64 * 1024;

/// A backlog buffer that grew past this is given back once empty, so a connection that once
/// held much unread input does not pin the memory: 16 KiB.
const KEEP_BYTES: usize = 16 * 1024;

/// Spare staging buffers ([`STAGING_BYTES`] each) a worker keeps for its connections: 64
/// (4 MiB). A connection takes one to write its answers into and gives it back once they have
/// been sent (see [`RingStream::release_buffers`]), so a worker with up to 64 connections
/// sending at once allocates none in steady state, an idle one holds few, and a flood on many
/// connections holds one buffer per connection with answers on their way (the bytes the
/// kernel's send buffers hold on epoll).
pub(crate) const POOL_BUFFERS: usize = 64;

/// The worker's spare staging buffers.
#[derive(Default)]
pub(crate) struct BufPool(Vec<Vec<u8>>);

impl BufPool {
    fn take(&mut self) -> Vec<u8> {
        self.0
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(STAGING_BYTES))
    }

    /// Keeps `buf` (cleared) for reuse when it is a staging buffer and the pool has room;
    /// drops it otherwise.
    pub(crate) fn give(&mut self, mut buf: Vec<u8>) {
        if buf.capacity() >= STAGING_BYTES && self.0.len() < POOL_BUFFERS {
            buf.clear();
            self.0.push(buf);
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.len()
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
    /// Answers written and not yet handed to the kernel.
    staging: Vec<u8>,
    /// The bytes of the send in flight; `[sent..]` are not yet acknowledged.
    inflight: Vec<u8>,
    sent: usize,
    sending: bool,
    /// The multishot receive is active (until its last completion).
    pub(crate) recv_armed: bool,
    /// A cancel of the receive was queued (backpressure); cleared when it ends.
    recv_cancelling: bool,
    /// Queued to submit its staging buffer at the end of the turn.
    pub(crate) flush_queued: bool,
    /// Writes bypass the ring (see the module documentation).
    direct: bool,
}

// SAFETY: `inbox` is only set and read on the worker thread during one call; the value moves
// to the worker thread before any connection exists.
unsafe impl Send for RingStream {}

impl RingStream {
    pub(crate) fn new(socket: std::net::TcpStream, file: Option<u32>, id: usize) -> RingStream {
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
            staging: Vec::new(),
            inflight: Vec::new(),
            sent: 0,
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
        self.sending || self.sent < self.inflight.len() || !self.staging.is_empty()
    }

    /// A send should be queued: none is in flight and bytes wait.
    pub(crate) fn needs_send(&self) -> bool {
        !self.sending
            && self.error.is_none()
            && (self.sent < self.inflight.len() || !self.staging.is_empty())
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

    /// The send of the staging buffer, when none is in flight and there is something to send.
    pub(crate) fn send_entry(&mut self) -> Option<squeue::Entry> {
        self.flush_queued = false;
        if self.sending || self.error.is_some() {
            return None;
        }
        if self.sent >= self.inflight.len() {
            if self.staging.is_empty() {
                return None;
            }
            std::mem::swap(&mut self.staging, &mut self.inflight);
            self.staging.clear();
            self.sent = 0;
        }
        self.sending = true;
        let rest = &self.inflight[self.sent..];
        let (ptr, len) = (rest.as_ptr(), rest.len().min(u32::MAX as usize) as u32);
        let ud = Op::StreamSend(self.id).encode();
        Some(match self.file {
            Some(i) => opcode::Send::new(Fixed(i), ptr, len)
                .flags(libc::MSG_NOSIGNAL)
                .build()
                .user_data(ud),
            None => opcode::Send::new(Fd(self.raw_fd()), ptr, len)
                .flags(libc::MSG_NOSIGNAL)
                .build()
                .user_data(ud),
        })
    }

    /// The send in flight completed with `res`; the caller queues the next one
    /// ([`RingStream::send_entry`]).
    pub(crate) fn on_sent(&mut self, res: i32) {
        self.sending = false;
        if res < 0 {
            self.on_error(-res);
            return;
        }
        self.sent = (self.sent + res as usize).min(self.inflight.len());
        if self.sent >= self.inflight.len() {
            self.inflight.clear();
            self.sent = 0;
        }
    }

    /// Gives the connection a staging buffer from `pool` before it is served, so that its
    /// answers are not written into a freshly allocated one.
    pub(crate) fn provision(&mut self, pool: &mut BufPool) {
        if self.staging.capacity() == 0 && !self.direct {
            self.staging = pool.take();
        }
    }

    /// Returns the connection's buffers that hold nothing to `pool`: the staging buffer when
    /// it is empty, the send buffer once its send completed. A busy connection then holds a
    /// buffer only for the answers on their way (one while its send is in flight, not an
    /// empty second one besides), and the buffers go round the worker's connections.
    pub(crate) fn release_buffers(&mut self, pool: &mut BufPool) {
        if self.staging.is_empty() {
            pool.give(std::mem::take(&mut self.staging));
        }
        if !self.sending && self.sent >= self.inflight.len() {
            pool.give(std::mem::take(&mut self.inflight));
            self.sent = 0;
        }
    }

    /// Takes the staging buffer of a connection being closed (its bytes will not be sent).
    pub(crate) fn take_staging(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.staging)
    }

    /// Takes the buffer of the send in flight, which must outlive this connection until the
    /// send's completion arrives.
    pub(crate) fn take_inflight(&mut self) -> Option<Vec<u8>> {
        self.sending.then(|| std::mem::take(&mut self.inflight))
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

    /// The socket, for the close.
    pub(crate) fn into_socket(self) -> std::net::TcpStream {
        self.socket
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
                self.backlog.clear();
                self.backlog_pos = 0;
                if self.backlog.capacity() > KEEP_BYTES {
                    self.backlog = Vec::new();
                }
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
        let room = STAGING_BYTES.saturating_sub(self.staging.len());
        if room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = room.min(buf.len());
        self.staging.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (RingStream, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        (RingStream::new(server, None, 7), client)
    }

    #[test]
    fn reads_serve_the_backlog_then_the_arrival_and_keep_the_rest() {
        let (mut s, _client) = pair();
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

    #[test]
    fn quiet_connections_return_their_buffers_to_the_pool() {
        let (mut s, _client) = pair();
        let mut pool = BufPool::default();
        s.provision(&mut pool);
        assert_eq!(s.write(b"answer").unwrap(), 6);
        let staging = s.staging.as_ptr();
        s.release_buffers(&mut pool);
        assert_eq!(pool.len(), 0, "nothing is given back while bytes wait");
        assert!(s.send_entry().is_some());
        s.on_sent(6);
        s.release_buffers(&mut pool);
        assert_eq!(pool.len(), 1, "the buffer that carried the answer");
        s.provision(&mut pool);
        assert_eq!(
            s.staging.as_ptr(),
            staging,
            "and it is reused, not reallocated"
        );
        assert_eq!(pool.len(), 0);
    }

    /// While its answers are in flight a busy connection holds their buffer only: the empty
    /// staging buffer goes back, and the send's buffer once the send completed.
    #[test]
    fn a_busy_connection_holds_only_the_buffer_in_flight() {
        let (mut s, _client) = pair();
        let mut pool = BufPool::default();
        s.provision(&mut pool);
        assert_eq!(s.write(b"first answers").unwrap(), 13);
        assert!(s.send_entry().is_some());
        s.release_buffers(&mut pool);
        assert_eq!(pool.len(), 0);
        assert!(
            s.inflight.capacity() >= STAGING_BYTES,
            "the send's buffer is kept"
        );
        // More answers while the send runs: a second buffer, kept while it holds them.
        s.provision(&mut pool);
        assert_eq!(s.write(b"more").unwrap(), 4);
        s.release_buffers(&mut pool);
        assert_eq!(pool.len(), 0, "both hold bytes");
        s.on_sent(13);
        s.release_buffers(&mut pool);
        assert_eq!(pool.len(), 1, "the completed send's buffer");
        assert!(s.unsent(), "the staged answers wait for their send");
        assert!(s.send_entry().is_some());
        // The buffer swapped in for staging is empty (the first one went to the pool).
        assert_eq!(s.staging.capacity(), 0);
        s.on_sent(4);
        s.release_buffers(&mut pool);
        assert_eq!(pool.len(), 2);
        assert!(!s.unsent());
        // Serving again takes one from the pool rather than allocating.
        s.provision(&mut pool);
        assert_eq!(pool.len(), 1);
    }

    #[test]
    fn writes_stage_up_to_the_cap_and_one_send_runs_at_a_time() {
        let (mut s, _client) = pair();
        assert!(s.send_entry().is_none(), "nothing to send");
        let big = vec![1u8; STAGING_BYTES + 10];
        assert_eq!(s.write(&big).unwrap(), STAGING_BYTES);
        assert_eq!(s.write(b"x").unwrap_err().kind(), io::ErrorKind::WouldBlock);
        assert!(s.unsent());
        assert!(s.send_entry().is_some());
        assert!(s.send_entry().is_none(), "one send in flight");
        assert_eq!(s.write(b"more").unwrap(), 4, "staging is free again");
        s.on_sent(1000);
        assert!(s.send_entry().is_some(), "the rest of the partial send");
        s.on_sent((STAGING_BYTES - 1000) as i32);
        assert!(s.send_entry().is_some(), "then the staged bytes");
        s.on_sent(4);
        assert!(!s.unsent());
        s.on_sent(-libc::EPIPE);
        assert!(s.broken());
        assert!(s.write(b"x").is_err());
    }
}
