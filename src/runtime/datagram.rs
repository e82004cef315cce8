//! Datagram (UDP) sockets of a worker: each worker has its own `SO_REUSEPORT` socket per
//! configured address and serves what the kernel hands it, one datagram in, at most one out,
//! received and answered in batches (`recvmmsg`/`sendmmsg`, see `mmsg.rs`).
//!
//! A socket is drained in turns of [`DATAGRAMS_PER_TURN`] so that a flood on it cannot starve
//! the worker's TCP connections; a socket that still had datagrams waiting is resumed after the
//! next poll (which then does not sleep). Answers that the socket cannot take at once are
//! dropped and counted: UDP clients retransmit, and queueing them would let a flood grow memory.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;

use crossbeam::utils::CachePadded;

/// Datagrams served from one socket before the worker looks at its other sockets.
pub(crate) const DATAGRAMS_PER_TURN: usize = 256;

/// Counters of one datagram socket on one worker.
#[derive(Debug, Default)]
pub struct DatagramStats {
    pub received: AtomicU64,
    pub sent: AtomicU64,
    /// Datagrams the service chose not to answer.
    pub unanswered: AtomicU64,
    /// Answers dropped because the socket's send buffer was full.
    pub send_dropped: AtomicU64,
    /// Answers the kernel refused (unreachable destination...).
    pub send_errors: AtomicU64,
    /// Datagrams on which the service panicked.
    pub panics: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Datagrams the kernel dropped because the socket's receive buffer was full (the
    /// socket's `SO_MEMINFO` drop count, sampled every worker tick).
    pub receive_dropped: AtomicU64,
    /// Bytes waiting in the socket's receive buffer at the last sample (the kernel's
    /// accounting: each datagram with its buffer overhead), a gauge.
    pub receive_queued_bytes: AtomicU64,
}

/// Sums of [`DatagramStats`] over workers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DatagramTotals {
    pub received: u64,
    pub sent: u64,
    pub unanswered: u64,
    pub send_dropped: u64,
    pub send_errors: u64,
    pub panics: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub receive_dropped: u64,
    pub receive_queued_bytes: u64,
}

/// One datagram address: its name, the bound address, and per-worker counters.
#[derive(Debug)]
pub struct DatagramListenerStats {
    pub name: String,
    pub addr: SocketAddr,
    pub per_worker: Box<[CachePadded<DatagramStats>]>,
}

impl DatagramListenerStats {
    pub(crate) fn new(name: String, addr: SocketAddr, workers: usize) -> Self {
        DatagramListenerStats {
            name,
            addr,
            per_worker: (0..workers)
                .map(|_| CachePadded::new(DatagramStats::default()))
                .collect(),
        }
    }

    pub fn totals(&self) -> DatagramTotals {
        let get = |c: &AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        let mut t = DatagramTotals::default();
        for w in self.per_worker.iter() {
            t.received += get(&w.received);
            t.sent += get(&w.sent);
            t.unanswered += get(&w.unanswered);
            t.send_dropped += get(&w.send_dropped);
            t.send_errors += get(&w.send_errors);
            t.panics += get(&w.panics);
            t.bytes_in += get(&w.bytes_in);
            t.bytes_out += get(&w.bytes_out);
            t.receive_dropped += get(&w.receive_dropped);
            t.receive_queued_bytes += get(&w.receive_queued_bytes);
        }
        t
    }
}

/// The receive side of a datagram socket as the kernel accounts it (`SO_MEMINFO`, Linux 4.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ReceiveQueue {
    /// Bytes queued for reading, each datagram counted with its buffer overhead (`truesize`).
    pub queued: u32,
    /// The receive buffer's size in the same accounting (twice `SO_RCVBUF`'s setting): the
    /// kernel drops arriving datagrams while `queued` is over it.
    pub buffer: u32,
    /// Datagrams dropped since the socket was created (receive buffer full).
    pub drops: u32,
}

impl ReceiveQueue {
    /// Reads the receive side of socket `fd` (one `getsockopt`); `None` when the kernel does
    /// not answer.
    pub(crate) fn of(fd: std::os::fd::RawFd) -> Option<ReceiveQueue> {
        let mut info = [0u32; libc::SK_MEMINFO_DROPS as usize + 1];
        let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
        // SAFETY: `info` is writable for `len` bytes; the kernel writes at most that many and
        // reports how many.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_MEMINFO,
                info.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let words = len as usize / std::mem::size_of::<u32>();
        if rc != 0 || words <= libc::SK_MEMINFO_DROPS as usize {
            return None;
        }
        Some(ReceiveQueue {
            queued: info[libc::SK_MEMINFO_RMEM_ALLOC as usize],
            buffer: info[libc::SK_MEMINFO_RCVBUF as usize],
            drops: info[libc::SK_MEMINFO_DROPS as usize],
        })
    }

    /// Stores this sample in the socket's counters of one worker.
    pub(crate) fn record(&self, stats: &DatagramStats) {
        use std::sync::atomic::Ordering::Relaxed;
        stats.receive_dropped.store(u64::from(self.drops), Relaxed);
        stats
            .receive_queued_bytes
            .store(u64::from(self.queued), Relaxed);
    }
}

/// Datagrams a turn must have served from a socket for the datagrams still queued behind them
/// to count as a backlog ([`left_waiting`]). A turn that served fewer caught up with its
/// socket a moment ago, whatever arrived since, and costs no `SO_MEMINFO` read: a server
/// below its capacity serves most turns shorter than this. An epoll turn whose batches were
/// all full served at least this many (a full turn, [`DATAGRAMS_PER_TURN`], at the default
/// batch of 64); a flooded io_uring socket's turns take 65 to 255 datagrams (measured with a
/// closed-loop flood 16k deep).
pub(crate) const BACKLOG_MIN_TURN: usize = 64;

/// Whether a turn that served `served` datagrams from socket `fd` left a backlog: it served at
/// least [`BACKLOG_MIN_TURN`] and the kernel still holds datagrams for the socket (one
/// `SO_MEMINFO` read, only after such turns). Both back-ends decide with it, whatever their
/// batch sizes: epoll after a turn whose `recvmmsg` batches were all full, io_uring after a
/// turn of multishot completions.
pub(crate) fn left_waiting(served: usize, fd: std::os::fd::RawFd) -> bool {
    served >= BACKLOG_MIN_TURN && ReceiveQueue::of(fd).is_some_and(|q| q.queued > 0)
}

/// The overload signal of one datagram socket: since when it has had datagrams waiting without
/// a break. A turn that ends with datagrams still waiting (its budget or the receive buffers
/// ran out before the socket was empty) carries its start over to the next turn, so
/// [`super::DatagramCtx::ready_at`] is the instant the current backlog began, not the instant
/// the latest turn started: a worker that stays behind sees the wait grow until it reaches the
/// shedding delay, and one that empties the socket starts afresh. Both back-ends use it.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Backlog {
    since: Option<std::time::Instant>,
}

impl Backlog {
    /// The `ready_at` of a turn that starts at `now`.
    pub(crate) fn start_turn(&mut self, now: std::time::Instant) -> std::time::Instant {
        *self.since.get_or_insert(now)
    }

    /// Records how a turn ended at `now`: `waiting` when
    /// datagrams were left in the socket ([`left_waiting`]). A backlog that had waited
    /// `shed_after` by then made its turn shed (its datagrams answered with the overload
    /// error), and the backlog starts afresh after that turn, so the next turns serve until it
    /// has waited the delay again. Carried over, a socket that never empties under a flood
    /// would be answered with errors only: shedding stays one turn of datagrams per delay on
    /// both back-ends (up to [`DATAGRAMS_PER_TURN`] on epoll, 65 to 255 in a flooded io_uring
    /// turn), and the kernel drops the rest of the excess at the socket buffer for nothing. A
    /// zero `shed_after` (no shedding) never restarts a backlog that is still waiting.
    pub(crate) fn end_turn(
        &mut self,
        waiting: bool,
        now: std::time::Instant,
        shed_after: std::time::Duration,
    ) {
        let shed = !shed_after.is_zero()
            && self
                .since
                .is_some_and(|since| now.saturating_duration_since(since) >= shed_after);
        if !waiting || shed {
            self.since = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn a_backlog_keeps_its_start_until_the_socket_is_emptied() {
        let t0 = Instant::now();
        let later = |ms| t0 + Duration::from_millis(ms);
        let off = Duration::ZERO;
        let mut b = Backlog::default();
        assert_eq!(b.start_turn(t0), t0);
        b.end_turn(true, later(10), off);
        // Still behind: the wait is measured from the first turn.
        assert_eq!(b.start_turn(later(30)), t0);
        b.end_turn(true, later(40), off);
        assert_eq!(b.start_turn(later(60)), t0);
        b.end_turn(false, later(70), off);
        // Emptied: the next turn starts afresh.
        assert_eq!(b.start_turn(later(90)), later(90));
        b.end_turn(false, later(92), off);
        assert_eq!(b.start_turn(later(95)), later(95));
        // Without shedding, a backlog of any age is kept while datagrams wait.
        b.end_turn(true, later(5_000), off);
        assert_eq!(b.start_turn(later(5_010)), later(95));
    }

    /// A socket nobody reads fills its receive buffer: the sample shows the queue grow and the
    /// kernel's drops once it is full.
    #[test]
    fn the_receive_queue_shows_a_backlog_and_the_drops_of_a_full_buffer() {
        use std::os::fd::AsRawFd;
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let empty = ReceiveQueue::of(socket.as_raw_fd()).expect("SO_MEMINFO");
        assert_eq!((empty.queued, empty.drops), (0, 0));
        assert!(empty.buffer > 0);
        sender.send_to(&[0u8; 100], addr).unwrap();
        let one = ReceiveQueue::of(socket.as_raw_fd()).unwrap();
        assert!(one.queued > 0 && one.queued < one.buffer, "{one:?}");
        // Far more than any receive buffer holds (bounded: at most 1M datagrams).
        let mut sent = 0;
        let full = loop {
            for _ in 0..1000 {
                let _ = sender.send_to(&[0u8; 100], addr);
            }
            sent += 1000;
            let q = ReceiveQueue::of(socket.as_raw_fd()).unwrap();
            if q.drops > 0 || sent >= 1_000_000 {
                break q;
            }
        };
        assert!(full.queued >= full.buffer / 2, "{full:?}");
        assert!(full.drops > 0, "{full:?}");
        let stats = DatagramStats::default();
        full.record(&stats);
        assert_eq!(
            stats
                .receive_dropped
                .load(std::sync::atomic::Ordering::Relaxed),
            u64::from(full.drops)
        );
    }

    #[test]
    fn a_backlog_that_reached_the_shedding_delay_starts_afresh_after_its_turn() {
        let t0 = Instant::now();
        let later = |ms| t0 + Duration::from_millis(ms);
        let delay = Duration::from_millis(50);
        let mut b = Backlog::default();
        assert_eq!(b.start_turn(t0), t0);
        // Under the delay: still waiting, the backlog goes on.
        b.end_turn(true, later(40), delay);
        assert_eq!(b.start_turn(later(45)), t0);
        // This turn ends past the delay (it shed a full turn): the next turn measures afresh
        // even though datagrams are still waiting, so it serves instead of shedding again.
        b.end_turn(true, later(55), delay);
        assert_eq!(b.start_turn(later(60)), later(60));
        b.end_turn(true, later(70), delay);
        assert_eq!(b.start_turn(later(80)), later(60));
    }

    /// A short shedding turn (an io_uring turn of a flooded socket) ends the episode as a full
    /// epoll turn does: the next turn serves, and a socket emptied meanwhile starts afresh too.
    #[test]
    fn one_shedding_turn_of_any_length_ends_the_episode() {
        let t0 = Instant::now();
        let later = |ms| t0 + Duration::from_millis(ms);
        let delay = Duration::from_millis(50);
        let mut b = Backlog::default();
        assert_eq!(b.start_turn(t0), t0);
        b.end_turn(true, later(10), delay);
        // Under the delay, short turns carry the backlog on.
        assert_eq!(b.start_turn(later(20)), t0);
        b.end_turn(true, later(21), delay);
        assert_eq!(b.start_turn(later(60)), t0);
        // This one ends past the delay: it shed, and the next turn measures afresh.
        b.end_turn(true, later(61), delay);
        assert_eq!(b.start_turn(later(62)), later(62));
        // A socket emptied before the delay ends the backlog as well.
        b.end_turn(true, later(70), delay);
        b.end_turn(false, later(71), delay);
        assert_eq!(b.start_turn(later(80)), later(80));
    }

    /// A turn counts as leaving a backlog only when it served a turn's minimum and the socket
    /// still holds datagrams.
    #[test]
    fn a_backlog_is_left_by_a_long_turn_with_datagrams_still_queued() {
        use std::os::fd::AsRawFd;
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let fd = socket.as_raw_fd();
        assert!(!left_waiting(BACKLOG_MIN_TURN, fd), "empty socket");
        sender
            .send_to(&[0u8; 16], socket.local_addr().unwrap())
            .unwrap();
        assert!(!left_waiting(BACKLOG_MIN_TURN - 1, fd), "short turn");
        assert!(left_waiting(BACKLOG_MIN_TURN, fd));
    }
}
