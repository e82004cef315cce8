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
        }
        t
    }
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

    /// Records how the turn ended at `now`: `waiting` when datagrams were left in the socket.
    /// A backlog that had waited `shed_after` by then made its turn shed (up to a turn's
    /// datagrams answered with the overload error), and starts afresh too, so the next turns
    /// serve until it has waited the delay again. Carried over, a socket that never empties
    /// under a flood would be answered with errors only: shedding stays a turn per delay, and
    /// the kernel drops the rest of the excess at the socket buffer for nothing. A zero
    /// `shed_after` (no shedding) never restarts a backlog that is still waiting.
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
        // This turn ends past the delay (it shed): the next turn measures afresh even though
        // datagrams are still waiting, so it serves instead of shedding again.
        b.end_turn(true, later(55), delay);
        assert_eq!(b.start_turn(later(60)), later(60));
        b.end_turn(true, later(70), delay);
        assert_eq!(b.start_turn(later(80)), later(60));
    }
}
