//! Connection counters of the runtime, one cache-padded block per worker and listener.
//!
//! Only the owning worker writes its block (plain load + store, no read-modify-write, no lock);
//! readers (the metrics scrape) sum the blocks.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam::utils::CachePadded;

/// Counters of one listener on one worker.
#[derive(Debug, Default)]
pub struct ConnStats {
    /// Connections accepted and kept.
    pub accepted: AtomicU64,
    /// Connections refused because the worker had `max_connections` open.
    pub refused: AtomicU64,
    /// Connections open now.
    pub open: AtomicU64,
    /// Connections closed by the idle timeout.
    pub closed_idle: AtomicU64,
    /// Connections closed because their input reached the cap without the service consuming.
    pub closed_overflow: AtomicU64,
    /// Connections closed on a socket error.
    pub closed_error: AtomicU64,
    /// Connections closed because a request was not complete within `request_timeout` of its
    /// first byte (slow heads or bodies).
    pub closed_deadline: AtomicU64,
    /// Idle or stalled connections closed to make room for a new one on a full listener.
    pub evicted: AtomicU64,
    /// Connections refused because their source address (IPv6: its /64) had
    /// `max_connections_per_source` open on the worker.
    pub refused_per_source: AtomicU64,
    /// Times a connection's turn ended at its per-turn budget with work left (served later).
    pub turns_cut: AtomicU64,
    /// Connections closed because the service panicked on their input.
    pub closed_panic: AtomicU64,
    /// TLS connections closed because the handshake failed (garbage, refused certificate,
    /// no common version or cipher).
    pub tls_handshake_failed: AtomicU64,
    /// TLS connections closed because the handshake did not complete in time.
    pub tls_handshake_timeout: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
}

/// Adds `n` to a counter that only the calling thread writes.
#[inline]
pub(crate) fn bump(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

/// Subtracts `n` from a gauge that only the calling thread writes.
#[inline]
pub(crate) fn drop_by(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).saturating_sub(n),
        Ordering::Relaxed,
    );
}

/// Sums of [`ConnStats`] over workers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnTotals {
    pub accepted: u64,
    pub refused: u64,
    pub open: u64,
    pub closed_idle: u64,
    pub closed_overflow: u64,
    pub closed_error: u64,
    pub closed_deadline: u64,
    pub evicted: u64,
    pub refused_per_source: u64,
    pub turns_cut: u64,
    pub closed_panic: u64,
    pub tls_handshake_failed: u64,
    pub tls_handshake_timeout: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// One listener: its name, the address it is bound to, and per-worker counters.
#[derive(Debug)]
pub struct ListenerStats {
    pub name: String,
    pub addr: SocketAddr,
    pub per_worker: Box<[CachePadded<ConnStats>]>,
}

impl ListenerStats {
    pub(crate) fn new(name: String, addr: SocketAddr, workers: usize) -> Self {
        ListenerStats {
            name,
            addr,
            per_worker: (0..workers)
                .map(|_| CachePadded::new(ConnStats::default()))
                .collect(),
        }
    }

    /// Counters summed over workers.
    pub fn totals(&self) -> ConnTotals {
        let mut t = ConnTotals::default();
        for w in self.per_worker.iter() {
            let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
            t.accepted += get(&w.accepted);
            t.refused += get(&w.refused);
            t.open += get(&w.open);
            t.closed_idle += get(&w.closed_idle);
            t.closed_overflow += get(&w.closed_overflow);
            t.closed_error += get(&w.closed_error);
            t.closed_deadline += get(&w.closed_deadline);
            t.evicted += get(&w.evicted);
            t.refused_per_source += get(&w.refused_per_source);
            t.turns_cut += get(&w.turns_cut);
            t.closed_panic += get(&w.closed_panic);
            t.tls_handshake_failed += get(&w.tls_handshake_failed);
            t.tls_handshake_timeout += get(&w.tls_handshake_timeout);
            t.bytes_in += get(&w.bytes_in);
            t.bytes_out += get(&w.bytes_out);
        }
        t
    }
}

/// Counters of one worker's event loop, independent of any service: how often the worker fell
/// behind. A turn of the loop serves what one readiness report brought; when a turn takes at
/// least [`RuntimeStats::behind_after`], the work it served last waited that long in the
/// worker, which is the condition under which the services shed load. These counters show
/// the overload itself, whether or not anything was shed.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Event-loop turns that took at least `behind_after`.
    pub turns_behind: AtomicU64,
    /// Time spent in those turns, microseconds.
    pub behind_us: AtomicU64,
    /// io_uring: answer bytes the worker's connections hold in its send chunks (written, not
    /// yet taken by the kernel: neither by the direct send after the connection's service nor
    /// by a completed send of the ring) at the end of the last turn; 0 on epoll, where
    /// answers not taken by the kernel are pending output of their connection.
    pub send_held_bytes: AtomicU64,
    /// io_uring: the most answer bytes the worker's send chunks have held at once, at any
    /// moment (within a turn too, before the direct sends gave chunks back), as of the end of
    /// the last turn.
    pub send_held_peak_bytes: AtomicU64,
}

/// Counters of every listener and datagram socket of a runtime.
#[derive(Debug)]
pub struct RuntimeStats {
    /// The runtime's name ([`super::RuntimeConfig::name`]: `worker`, `admin`).
    pub name: String,
    /// A turn at least this long counts as behind ([`WorkerStats`]); zero: never counted.
    pub behind_after: std::time::Duration,
    /// The shedding delay of datagram sockets ([`super::RuntimeConfig::shed_after`]).
    pub shed_after: std::time::Duration,
    pub listeners: Vec<ListenerStats>,
    pub datagrams: Vec<super::DatagramListenerStats>,
    /// One block per worker, indexed by worker.
    pub workers: Box<[CachePadded<WorkerStats>]>,
}

impl RuntimeStats {
    /// Counters of the listener called `name`, if any.
    pub fn listener(&self, name: &str) -> Option<&ListenerStats> {
        self.listeners.iter().find(|l| l.name == name)
    }

    /// Answer bytes held in the workers' send chunks now, and the largest any worker held
    /// (io_uring; zero on epoll), summed over workers and the maximum over workers.
    pub fn send_held(&self) -> (u64, u64) {
        self.workers.iter().fold((0, 0), |(now, peak), w| {
            (
                now + w.send_held_bytes.load(Ordering::Relaxed),
                peak.max(w.send_held_peak_bytes.load(Ordering::Relaxed)),
            )
        })
    }

    /// Turns that fell behind and the time spent in them (microseconds), summed over workers.
    pub fn behind(&self) -> (u64, u64) {
        self.workers.iter().fold((0, 0), |(n, us), w| {
            (
                n + w.turns_behind.load(Ordering::Relaxed),
                us + w.behind_us.load(Ordering::Relaxed),
            )
        })
    }
}
