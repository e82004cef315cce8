//! The epoll back-end: one mio event loop per worker thread.
//!
//! Sockets are registered edge-triggered for both directions once, so serving a connection
//! never costs a re-registration syscall: on every event the loop writes what is pending, lets
//! the service consume buffered input, and reads until the socket would block, unless pending
//! output is over the backpressure limit (then it waits for the socket to become writable).
//! A [`mio::Waker`] interrupts the poll for shutdown; the poll timeout drives the worker tick.
//!
//! On the io_uring back-end the same loop runs with the ring in place of readiness: the worker
//! waits on its ring (`uring/`), which serves the datagram sockets, accepts and receives for the
//! stream listeners and connections (see `epoll/ring.rs`), and watches this epoll set (then only
//! the waker); the set is read without sleeping only in turns where the ring reported it
//! readable. Every connection rule below holds on both back-ends.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use super::conn::{guarded_input, source_key, ConnLimits, ConnState};
use super::datagram::{ReceiveQueue, Sojourn};
use super::mmsg::{serve_turn_batched, MmsgBatch};
use super::sources::SourceCounts;
use super::stats::{bump, drop_by, ConnStats, RuntimeStats};
use super::tls::{TlsAcceptor, TlsConn};
use super::uring::{Op, RingStream, StreamEvent, UdpRing};
use super::{
    Backend, ConnCtx, DatagramCtx, DatagramSpec, DatagramWorker, ListenerSpec, StreamWorker, Ticker,
};

mod ring;

const WAKER: Token = Token(0);
/// Listener `i` has token `FIRST_LISTENER + i`; datagram sockets follow the listeners, and
/// connections follow the datagram sockets.
const FIRST_LISTENER: usize = 1;

/// Everything a worker needs, built on the starting thread.
pub(crate) struct WorkerSetup {
    pub index: usize,
    pub sockets: Vec<std::net::TcpListener>,
    pub listeners: Vec<ListenerSpec>,
    pub udp_sockets: Vec<std::net::UdpSocket>,
    pub datagrams: Vec<DatagramSpec>,
    pub tickers: Vec<Arc<dyn Ticker>>,
    pub stats: Arc<RuntimeStats>,
    pub stop: Arc<AtomicBool>,
    /// [`Backend::Epoll`] or [`Backend::IoUring`] (already resolved).
    pub backend: Backend,
    pub tick: Duration,
    pub events_per_poll: usize,
    pub datagram_batch: usize,
    pub descriptor_reserve: usize,
    pub serve_from_reserve: bool,
    /// Per listener: open connections per source, shared by every worker.
    pub source_counts: Vec<Arc<SourceCounts>>,
}

struct Listening {
    socket: TcpListener,
    local: SocketAddr,
    limits: ConnLimits,
    open: usize,
    /// Accepting stopped on a resource error (EMFILE, ENOBUFS...): retry at the next tick,
    /// since an edge-triggered listener is not reported again for connections already queued.
    retry_accept: bool,
    /// TLS of this listener's connections, when the service asks for it.
    tls: Option<Arc<TlsAcceptor>>,
    /// When the last accept of an ongoing back-off episode failed. An episode is logged once
    /// when it starts and once when accepting has worked for [`ACCEPT_EPISODE_QUIET`], not at
    /// every retry: near the descriptor limit accepts alternate between failing and working.
    backing_off: Option<Instant>,
    /// Open connections per source key ([`source_key`]) on this listener, shared by every
    /// worker (fixed size).
    per_source: Arc<SourceCounts>,
    /// The service's answer to a request past its deadline (see
    /// [`StreamWorker::deadline_answer`]).
    deadline_answer: &'static [u8],
}

/// Per-worker buffers that every connection of the worker borrows while it is served.
struct Scratch {
    /// Sized to the largest `max_input_bytes` of the worker's listeners.
    input: Vec<u8>,
    output: Vec<u8>,
}

struct Datagrams {
    socket: mio::net::UdpSocket,
    ctx: DatagramCtx,
    /// The last turn ended with datagrams possibly waiting.
    pending: bool,
    /// Each datagram's wait and whether it is shed (the load control of `ctx`).
    sojourn: Sojourn,
}

/// A connection's socket: registered in the epoll set, or served through the worker's ring.
enum Stream {
    Epoll(TcpStream),
    Ring(RingStream),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Epoll(s) => s.read(buf),
            Stream::Ring(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Epoll(s) => s.write(buf),
            Stream::Ring(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Stream {
    /// Bytes written that have not reached the kernel's socket yet (never on epoll).
    fn unsent(&self) -> bool {
        match self {
            Stream::Epoll(_) => false,
            Stream::Ring(s) => s.unsent(),
        }
    }

    /// Answer bytes the connection may write before it is over its share of the worker's
    /// send memory (on the ring, see [`RingStream::room`]); unlimited on epoll, where the
    /// kernel's send buffer and the pending-output limit hold answers back.
    fn room(&self) -> usize {
        match self {
            Stream::Epoll(_) => usize::MAX,
            Stream::Ring(s) => s.room(),
        }
    }

    fn shutdown_write(&self) {
        let _ = match self {
            Stream::Epoll(s) => s.shutdown(std::net::Shutdown::Write),
            Stream::Ring(s) => s.shutdown_write(),
        };
    }

    /// Reads and drops up to `budget` bytes of what has arrived.
    fn discard_input(&mut self, sink: &mut [u8], mut budget: usize) {
        match self {
            Stream::Epoll(s) => {
                while budget > 0 && !sink.is_empty() {
                    let len = sink.len().min(budget);
                    match s.read(&mut sink[..len]) {
                        Ok(n) if n > 0 => budget = budget.saturating_sub(n),
                        _ => break,
                    }
                }
            }
            Stream::Ring(s) => s.discard_input(sink, budget),
        }
    }

    /// Writes go to the socket at once from now on (the connection is about to be closed);
    /// false when bytes written earlier are still queued in front of them (on the ring).
    fn direct(&mut self) -> bool {
        match self {
            Stream::Epoll(_) => true,
            Stream::Ring(s) => {
                if s.unsent() {
                    false
                } else {
                    s.set_direct();
                    true
                }
            }
        }
    }
}

struct Conn {
    stream: Stream,
    /// The TLS layer between the socket and `state`, on a TLS listener.
    tls: Option<Box<TlsConn>>,
    state: ConnState,
    listener: usize,
    ctx: ConnCtx,
    /// [`source_key`] of the peer.
    source: u128,
    /// In the ready queue: its last turn ended at the budget with work left.
    queued: bool,
    /// The peer's FIN (or an error) was reported: read on to the end rather than trusting a
    /// short read.
    hangup: bool,
}

impl Conn {
    /// Reads plaintext: from the socket, or through the TLS layer.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.tls.as_deref_mut() {
            None => self.stream.read(buf),
            Some(tls) => {
                let n = tls.read_plain(&mut self.stream, buf)?;
                self.ctx.client_cert = tls.client_cert();
                Ok(n)
            }
        }
    }

    /// Writes plaintext: to the socket, or through the TLS layer.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.tls.as_deref_mut() {
            None => self.stream.write(buf),
            Some(tls) => tls.write_plain(&mut self.stream, buf),
        }
    }

    /// Writes TLS records still buffered; true when none is left (always true in plaintext).
    fn flush_tls(&mut self) -> io::Result<bool> {
        match self.tls.as_deref_mut() {
            None => Ok(true),
            Some(tls) => tls.flush(&mut self.stream),
        }
    }
}

/// One worker's event loop, moved onto its thread by [`super::Runtime::start`].
pub(crate) struct EventLoop {
    index: usize,
    poll: Poll,
    listening: Vec<Listening>,
    specs: Vec<ListenerSpec>,
    udp: Vec<Datagrams>,
    datagram_specs: Vec<DatagramSpec>,
    tickers: Vec<Arc<dyn Ticker>>,
    stats: Arc<RuntimeStats>,
    stop: Arc<AtomicBool>,
    tick: Duration,
    events_per_poll: usize,
    datagram_batch: usize,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    /// Connections whose turn ended at the budget with work left, served in order in the
    /// following turns.
    ready: VecDeque<usize>,
    /// Descriptors kept for `EMFILE` (see [`super::RuntimeConfig::descriptor_reserve`]).
    reserve: Vec<std::fs::File>,
    reserve_target: usize,
    serve_from_reserve: bool,
    /// The worker's io_uring (io_uring back-end): it serves the datagram sockets, and the
    /// worker waits on it rather than on the epoll set.
    ring: Option<UdpRing>,
    /// The io_uring back-end was chosen: the datagram sockets are not in the epoll set.
    on_ring: bool,
    datagram_batch_size: usize,
    /// Generation of the last connection admitted on the ring (tells a slot's successive
    /// connections apart in completions).
    ring_generation: u16,
    /// Ring connections with staged answers to submit at the end of the turn.
    to_flush: Vec<usize>,
}

/// How long accepting must work without a resource error before an accept back-off episode
/// counts as over (and a later failure is logged again).
const ACCEPT_EPISODE_QUIET: Duration = Duration::from_secs(10);

/// Opens descriptors on `/dev/null` until `reserve` holds `target`.
fn refill_reserve(reserve: &mut Vec<std::fs::File>, target: usize) {
    while reserve.len() < target {
        match std::fs::File::open("/dev/null") {
            Ok(f) => reserve.push(f),
            Err(_) => break,
        }
    }
}

/// The accept error means the process or the system is out of descriptors.
fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

impl EventLoop {
    pub fn new(setup: WorkerSetup) -> io::Result<(EventLoop, Arc<Waker>)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let mut listening = Vec::with_capacity(setup.sockets.len());
        let on_ring = setup.backend == Backend::IoUring;
        for (i, (socket, spec)) in setup.sockets.into_iter().zip(&setup.listeners).enumerate() {
            let local = socket.local_addr()?;
            let mut socket = TcpListener::from_std(socket);
            // On io_uring the listener is accepted from by the ring.
            if !on_ring {
                poll.registry().register(
                    &mut socket,
                    Token(FIRST_LISTENER + i),
                    Interest::READABLE,
                )?;
            }
            listening.push(Listening {
                socket,
                local,
                limits: spec.limits,
                open: 0,
                retry_accept: false,
                tls: spec.service.tls(),
                backing_off: None,
                per_source: setup.source_counts[i].clone(),
                deadline_answer: &[],
            });
        }
        let first_udp = FIRST_LISTENER + listening.len();
        let mut udp = Vec::with_capacity(setup.udp_sockets.len());
        for (i, socket) in setup.udp_sockets.into_iter().enumerate() {
            let local = socket.local_addr()?;
            let sojourn = Sojourn::new(socket.as_raw_fd(), setup.stats.shed_after);
            let mut socket = mio::net::UdpSocket::from_std(socket);
            if !on_ring {
                poll.registry()
                    .register(&mut socket, Token(first_udp + i), Interest::READABLE)?;
            }
            udp.push(Datagrams {
                socket,
                ctx: DatagramCtx {
                    worker: setup.index,
                    socket: i,
                    local,
                    ready_at: Instant::now(),
                    shed: false,
                },
                pending: false,
                sojourn,
            });
        }
        Ok((
            EventLoop {
                index: setup.index,
                poll,
                listening,
                specs: setup.listeners,
                udp,
                datagram_specs: setup.datagrams,
                tickers: setup.tickers,
                stats: setup.stats,
                stop: setup.stop,
                tick: setup.tick,
                events_per_poll: setup.events_per_poll.max(16),
                datagram_batch: setup.datagram_batch,
                conns: Vec::new(),
                free: Vec::new(),
                ready: VecDeque::new(),
                reserve: {
                    let mut r = Vec::new();
                    refill_reserve(&mut r, setup.descriptor_reserve);
                    r
                },
                reserve_target: setup.descriptor_reserve,
                serve_from_reserve: setup.serve_from_reserve,
                ring: None,
                on_ring,
                datagram_batch_size: setup.datagram_batch,
                ring_generation: 0,
                to_flush: Vec::new(),
            },
            waker,
        ))
    }

    /// On the io_uring back-end, creates this worker's ring; call on the worker thread before
    /// [`EventLoop::run`] (the thread becomes the ring's single issuer). Does nothing on epoll.
    pub fn attach_ring(&mut self) -> io::Result<()> {
        if !self.on_ring {
            return Ok(());
        }
        let sockets: Vec<_> = self
            .udp
            .iter()
            .map(|u| (u.socket.as_raw_fd(), u.ctx))
            .collect();
        let listeners: Vec<_> = self
            .listening
            .iter()
            .map(|l| l.socket.as_raw_fd())
            .collect();
        // A registered file per connection the listeners allow (up to 64Ki).
        let conn_files = self
            .listening
            .iter()
            .map(|l| l.limits.max_connections)
            .fold(0usize, usize::saturating_add)
            .min(65_536) as u32;
        let mut ring = UdpRing::new(
            &sockets,
            self.poll.as_raw_fd(),
            self.datagram_batch_size,
            self.stats.shed_after,
            &listeners,
            conn_files,
        )
        .map_err(|e| {
            io::Error::new(
                io::ErrorKind::Unsupported,
                format!("worker {}: io_uring: {e}", self.index),
            )
        })?;
        ring.arm();
        tracing::debug!(
            worker = self.index,
            taskrun = ring.mode().name(),
            "io_uring on"
        );
        self.ring = Some(ring);
        Ok(())
    }

    fn conn_stats(&self, listener: usize) -> &ConnStats {
        &self.stats.listeners[listener].per_worker[self.index]
    }

    pub fn run(mut self) {
        let mut workers: Vec<Box<dyn StreamWorker>> = self
            .specs
            .iter()
            .map(|spec| spec.service.worker(self.index))
            .collect();
        for (l, w) in self.listening.iter_mut().zip(&workers) {
            l.deadline_answer = w.deadline_answer();
        }
        let mut datagram_workers: Vec<Box<dyn DatagramWorker>> = self
            .datagram_specs
            .iter()
            .map(|spec| spec.service.worker(self.index))
            .collect();
        // recvmmsg/sendmmsg buffers, allocated once per worker that has datagram sockets.
        let mut datagram_batch = if self.udp.is_empty() {
            None
        } else {
            Some(Box::new(MmsgBatch::new(self.datagram_batch)))
        };
        let mut events = Events::with_capacity(self.events_per_poll);
        let mut scratch = Scratch {
            input: vec![
                0;
                self.listening
                    .iter()
                    .map(|l| l.limits.max_input_bytes)
                    .max()
                    .unwrap_or(0)
                    .max(1)
            ],
            output: Vec::with_capacity(16 * 1024),
        };
        let first_udp = FIRST_LISTENER + self.listening.len();
        let first_conn = first_udp + self.udp.len();
        let mut next_tick = Instant::now() + self.tick;
        let sweep_every = self
            .listening
            .iter()
            .map(|l| l.limits.idle_timeout.min(l.limits.request_timeout) / 4)
            .min()
            .unwrap_or(Duration::from_secs(1))
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        let mut next_sweep = Instant::now() + sweep_every;
        // io_uring: the epoll set may still hold events (the last read filled `events`), or
        // the ring completions (both: do not sleep).
        let mut epoll_more = false;
        let mut ring_more = false;

        while !self.stop.load(Ordering::Acquire) {
            let timeout = if self.udp.iter().any(|u| u.pending)
                || !self.ready.is_empty()
                || epoll_more
                || ring_more
            {
                Duration::ZERO
            } else {
                next_tick.saturating_duration_since(Instant::now())
            };
            // The turn starts when the wait returns (see `WorkerStats`); every path that
            // reaches the end of the turn sets it.
            let woke;
            // When the ring's datagrams were served (on the ring), else `woke`.
            let mut served = None;
            let polled = match self.ring.as_mut() {
                None => {
                    let polled = self.poll.poll(&mut events, Some(timeout));
                    woke = Instant::now();
                    polled
                }
                Some(ring) => match ring.wait(timeout) {
                    Err(e) => {
                        woke = Instant::now();
                        Err(e)
                    }
                    Ok(()) => {
                        woke = Instant::now();
                        let turn = ring.serve(&mut datagram_workers, &self.stats, self.index, woke);
                        served = Some(turn.end);
                        ring_more = turn.more;
                        if turn.epoll_ready || epoll_more {
                            let read = self.poll.poll(&mut events, Some(Duration::ZERO));
                            epoll_more = events.iter().count() >= self.events_per_poll;
                            read
                        } else {
                            events.clear();
                            Ok(())
                        }
                    }
                },
            };
            if let Err(e) = polled {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!(worker = self.index, "poll failed, worker stops: {e}");
                break;
            }
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            // The turn's instant: on the ring, after its datagrams were served; on epoll,
            // nothing has happened since the wait returned.
            let now = served.unwrap_or(woke);
            if self.ring.is_some() {
                self.serve_ring_streams(&mut workers, &mut scratch, now);
            }
            // Whether connections (or the ring's datagrams) may take time after `now`.
            let busy = self.ring.is_some() || !events.is_empty() || !self.ready.is_empty();
            let mut woken = false;
            for event in events.iter() {
                let token = event.token().0;
                if token == WAKER.0 {
                    woken = true;
                    continue;
                } else if token < first_udp {
                    let listener = token - FIRST_LISTENER;
                    let refusal = workers.get(listener).map_or(&[][..], |w| w.refusal());
                    self.accept_all(listener, first_conn, refusal, now);
                } else if token < first_conn {
                    if let Some(u) = self.udp.get_mut(token - first_udp) {
                        u.pending = true;
                    }
                } else {
                    let hangup = event.is_read_closed() || event.is_error();
                    self.drive(token - first_conn, &mut workers, &mut scratch, hangup, now);
                }
            }
            // Connections cut at their budget in earlier turns get one more turn each, after
            // the fresh events, so a connection with much to do waits behind the others.
            for _ in 0..self.ready.len() {
                let Some(slot) = self.ready.pop_front() else {
                    break;
                };
                if let Some(Some(conn)) = self.conns.get_mut(slot) {
                    conn.queued = false;
                    self.drive(slot, &mut workers, &mut scratch, false, now);
                }
            }
            // Datagram sockets take turns after the connections, so a flood on one cannot
            // starve the others. The clock read at the end of the last socket's turn is the
            // instant the rest of the loop turn goes on with.
            let mut after_udp = None;
            for (i, u) in self.udp.iter_mut().enumerate() {
                if !u.pending {
                    continue;
                }
                let (Some(worker), Some(stats)) = (
                    datagram_workers.get_mut(i),
                    self.stats
                        .datagrams
                        .get(i)
                        .and_then(|d| d.per_worker.get(self.index)),
                ) else {
                    u.pending = false;
                    continue;
                };
                let Some(batch) = datagram_batch.as_deref_mut() else {
                    u.pending = false;
                    continue;
                };
                // The turn's datagrams were learnt of now; those with a receive timestamp
                // carry their own arrival (`Sojourn::judge`).
                u.ctx.ready_at = now;
                u.ctx.shed = false;
                let turn = serve_turn_batched(
                    &u.socket,
                    &mut u.ctx,
                    &mut u.sojourn,
                    worker.as_mut(),
                    stats,
                    batch,
                );
                u.pending = turn.full;
                let end = Instant::now();
                u.sojourn.end_turn(turn.served, false, end);
                after_udp = Some(end);
            }
            // Without datagrams served, only connections ran since `now` was read.
            let now = match after_udp {
                Some(end) => end,
                None if busy => Instant::now(),
                None => now,
            };
            let ticking = now >= next_tick;
            if woken || ticking {
                // Answers left waiting for something outside the worker (the overlay).
                self.retry_waiting(&mut workers, &mut scratch, first_conn, now);
                self.send_deferred(&mut datagram_workers);
            }
            if ticking {
                for ticker in &self.tickers {
                    let tick = std::panic::AssertUnwindSafe(|| ticker.tick(self.index, now));
                    if std::panic::catch_unwind(tick).is_err() {
                        tracing::error!(worker = self.index, "ticker panicked");
                    }
                }
                // The kernel's view of each datagram socket (drops, queue) for the metrics.
                for (i, u) in self.udp.iter().enumerate() {
                    let stats = self
                        .stats
                        .datagrams
                        .get(i)
                        .and_then(|d| d.per_worker.get(self.index));
                    if let (Some(stats), Some(queue)) =
                        (stats, ReceiveQueue::of(u.socket.as_raw_fd()))
                    {
                        queue.record(stats);
                    }
                }
                for worker in &mut datagram_workers {
                    let tick = std::panic::AssertUnwindSafe(|| worker.on_tick(now));
                    if std::panic::catch_unwind(tick).is_err() {
                        tracing::error!(worker = self.index, "datagram service tick panicked");
                    }
                }
                for worker in &mut workers {
                    let tick = std::panic::AssertUnwindSafe(|| worker.on_tick(now));
                    if std::panic::catch_unwind(tick).is_err() {
                        tracing::error!(worker = self.index, "service tick panicked");
                    }
                }
                for listener in 0..self.listening.len() {
                    if std::mem::take(&mut self.listening[listener].retry_accept) {
                        let refusal = workers.get(listener).map_or(&[][..], |w| w.refusal());
                        self.accept_all(listener, first_conn, refusal, now);
                        // On the ring, the multishot accept takes over again unless this
                        // retry failed too.
                        if !self.listening[listener].retry_accept {
                            if let Some(ring) = self.ring.as_mut() {
                                ring.hold_accept(listener, false);
                            }
                        }
                    }
                }
                next_tick = now + self.tick;
            }
            let sweeping = now >= next_sweep;
            if sweeping {
                self.sweep_idle(now);
                next_sweep = now + sweep_every;
            }
            // Every answer of the turn goes to the kernel with the next wait's submit.
            self.flush_ring_sends();
            // Ticks, sweeps and answers from the overlay are the only work after `now`.
            let took = if ticking || sweeping || woken {
                woke.elapsed()
            } else {
                now.saturating_duration_since(woke)
            };
            if !self.stats.behind_after.is_zero() && took >= self.stats.behind_after {
                let w = &self.stats.workers[self.index];
                bump(&w.turns_behind, 1);
                bump(&w.behind_us, took.as_micros() as u64);
            }
        }
        let open: usize = self.listening.iter().map(|l| l.open).sum();
        tracing::debug!(worker = self.index, open, "worker stopping");
        for slot in 0..self.conns.len() {
            self.close(slot);
        }
        if let Some(ring) = self.ring.as_mut() {
            // Listeners and connections are closed when the worker returns.
            ring.quiesce();
        }
    }

    fn accept_all(&mut self, listener: usize, first_conn: usize, refusal: &[u8], now: Instant) {
        let _ = first_conn;
        if listener >= self.listening.len() {
            return;
        }
        loop {
            let mut from_reserve = false;
            let accepted = match self.listening[listener].socket.accept() {
                Ok(a) => a,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.end_backoff(listener);
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    // Out of descriptors: release one from the reserve to take the queued
                    // connection (served on the admin listener, closed at once elsewhere), so
                    // clients are not left waiting for their connect timeout.
                    let taken = if out_of_descriptors(&e) && self.reserve.pop().is_some() {
                        self.listening[listener].socket.accept().ok()
                    } else {
                        None
                    };
                    if let Some(a) = taken {
                        if self.serve_from_reserve {
                            from_reserve = true;
                            a
                        } else {
                            drop(a);
                            refill_reserve(&mut self.reserve, self.reserve_target);
                            bump(&self.conn_stats(listener).refused, 1);
                            self.start_backoff(listener, &e);
                            continue;
                        }
                    } else {
                        // EMFILE, ENFILE, ENOBUFS with no reserve left: retry at the next
                        // tick.
                        refill_reserve(&mut self.reserve, self.reserve_target);
                        self.start_backoff(listener, &e);
                        self.listening[listener].retry_accept = true;
                        return;
                    }
                }
            };
            let (stream, peer) = accepted;
            if !from_reserve {
                self.end_backoff(listener);
            }
            self.admit(listener, stream, peer, refusal, now);
        }
    }

    /// Admits a connection accepted on `listener` (per-source cap, connection limit with
    /// eviction, TLS), or refuses it.
    fn admit(
        &mut self,
        listener: usize,
        stream: TcpStream,
        peer: SocketAddr,
        refusal: &[u8],
        now: Instant,
    ) {
        let first_conn = FIRST_LISTENER + self.listening.len() + self.udp.len();
        let local = self.listening[listener].local;
        let limits = self.listening[listener].limits;
        let mut stream = stream;
        {
            let source = source_key(peer.ip());
            let from_source = self.listening[listener].per_source.open(source) as usize;
            if limits.max_connections_per_source > 0
                && from_source >= limits.max_connections_per_source
            {
                bump(&self.conn_stats(listener).refused_per_source, 1);
                drop(stream);
                return;
            }
            // The last `reserved_slots` go only to sources with nothing open.
            let room = if from_source > 0 {
                limits.max_connections.saturating_sub(limits.reserved_slots)
            } else {
                limits.max_connections
            };
            if self.listening[listener].open >= room && !self.evict_oldest(listener, now) {
                bump(&self.conn_stats(listener).refused, 1);
                refuse(stream, refusal);
                return;
            }
            let _ = stream.set_nodelay(true);
            let tls = match &self.listening[listener].tls {
                None => None,
                Some(acceptor) => match acceptor.accept(now) {
                    Ok(tls) => Some(Box::new(tls)),
                    Err(e) => {
                        tracing::warn!(worker = self.index, "{e}");
                        return;
                    }
                },
            };
            let slot = match self.free.pop() {
                Some(slot) => slot,
                None => {
                    self.conns.push(None);
                    self.conns.len() - 1
                }
            };
            let stream = match self.ring.as_mut() {
                None => {
                    if let Err(e) = self.poll.registry().register(
                        &mut stream,
                        Token(first_conn + slot),
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        tracing::warn!(worker = self.index, "cannot register a connection: {e}");
                        self.free.push(slot);
                        return;
                    }
                    Stream::Epoll(stream)
                }
                Some(ring) => {
                    use std::os::fd::{FromRawFd, IntoRawFd};
                    // SAFETY: the descriptor comes out of a socket that gives up ownership.
                    let socket = unsafe { std::net::TcpStream::from_raw_fd(stream.into_raw_fd()) };
                    let file = ring.register_conn(slot, socket.as_raw_fd());
                    self.ring_generation = self.ring_generation.wrapping_add(1);
                    let id = (usize::from(self.ring_generation) << 32) | slot;
                    let mut ring_stream = RingStream::new(socket, file, id, ring.pool.clone());
                    let entry = ring_stream.recv_entry(ring.stream_bgid());
                    ring.queue(&entry);
                    Stream::Ring(ring_stream)
                }
            };
            self.conns[slot] = Some(Conn {
                stream,
                tls,
                state: ConnState::new(now),
                listener,
                ctx: ConnCtx {
                    worker: self.index,
                    listener,
                    peer,
                    local,
                    output_limit: limits.max_pending_output_bytes,
                    client_cert: None,
                    max_requests: limits.max_requests_per_turn.max(1),
                    ready_at: now,
                },
                source,
                queued: false,
                hangup: false,
            });
            let l = &mut self.listening[listener];
            l.open += 1;
            l.per_source.acquire(source, 0);
            let stats = self.conn_stats(listener);
            bump(&stats.accepted, 1);
            bump(&stats.open, 1);
        }
    }

    fn start_backoff(&mut self, listener: usize, e: &io::Error) {
        let l = &mut self.listening[listener];
        let started = l.backing_off.is_none();
        l.backing_off = Some(Instant::now());
        if started {
            tracing::warn!(
                worker = self.index,
                addr = %l.local,
                "accept failed: {e}; new connections are refused until it recovers \
                 (logged once per episode)"
            );
        }
    }

    fn end_backoff(&mut self, listener: usize) {
        let l = &mut self.listening[listener];
        if l.backing_off
            .is_some_and(|last| last.elapsed() >= ACCEPT_EPISODE_QUIET)
        {
            l.backing_off = None;
            tracing::info!(worker = self.index, addr = %l.local, "accepting again");
        }
    }

    /// Closes the listener's connection that has made no progress for longest (idle between
    /// requests, stuck in an incomplete request, or not reading its answers), to make room for
    /// a new one. Connections waiting for their next turn are busy, not idle, and are kept;
    /// so are connections admitted less than [`UNREAD_GRACE`] ago that have not been read yet
    /// (a burst of newcomers would otherwise evict one another before any is served).
    /// Returns false when there is none. Linear in the worker's connections; runs only when
    /// the listener is full.
    fn evict_oldest(&mut self, listener: usize, now: Instant) -> bool {
        let victim = self
            .conns
            .iter()
            .enumerate()
            .filter_map(|(slot, c)| c.as_ref().map(|c| (slot, c)))
            .filter(|(_, c)| {
                c.listener == listener && !c.queued && !c.state.unread_within(UNREAD_GRACE, now)
            })
            .min_by_key(|(_, c)| c.state.stalled_since())
            .map(|(slot, _)| slot);
        match victim {
            Some(slot) => {
                bump(&self.conn_stats(listener).evicted, 1);
                self.close(slot);
                true
            }
            None => false,
        }
    }

    /// Serves one connection after a readiness event; closes it when it is done.
    fn drive(
        &mut self,
        slot: usize,
        workers: &mut [Box<dyn StreamWorker>],
        scratch: &mut Scratch,
        hangup: bool,
        now: Instant,
    ) {
        let Some(Some(conn)) = self.conns.get_mut(slot) else {
            return;
        };
        let listener = conn.listener;
        let limits = self.listening[listener].limits;
        let stats = &self.stats.listeners[listener].per_worker[self.index];
        let Some(worker) = workers.get_mut(listener) else {
            return;
        };
        conn.hangup |= hangup;
        conn.ctx.ready_at = now;
        let outcome = serve(conn, worker.as_mut(), &limits, stats, scratch, now);
        match outcome {
            Outcome::Keep => {}
            Outcome::Yield => {
                bump(&stats.turns_cut, 1);
                if !conn.queued {
                    conn.queued = true;
                    self.ready.push_back(slot);
                }
            }
            Outcome::Close => self.close(slot),
            Outcome::Overflow => {
                bump(&self.conn_stats(listener).closed_overflow, 1);
                self.close(slot);
            }
            Outcome::Error => {
                let handshaking = self.conns[slot]
                    .as_ref()
                    .and_then(|c| c.tls.as_deref())
                    .is_some_and(TlsConn::handshaking);
                let stats = self.conn_stats(listener);
                if handshaking {
                    bump(&stats.tls_handshake_failed, 1);
                } else {
                    bump(&stats.closed_error, 1);
                }
                self.close(slot);
            }
            Outcome::Panic => {
                tracing::error!(worker = self.index, "service panicked; connection closed");
                bump(&self.conn_stats(listener).closed_panic, 1);
                self.close(slot);
            }
        }
        if self.ring.is_some() {
            self.after_ring_turn(slot, &limits);
        }
    }

    /// Serves again every connection that holds unconsumed input: a service that left a
    /// request waiting finds it at the front, in its place.
    fn retry_waiting(
        &mut self,
        workers: &mut [Box<dyn StreamWorker>],
        scratch: &mut Scratch,
        first_conn: usize,
        now: Instant,
    ) {
        let _ = first_conn;
        for slot in 0..self.conns.len() {
            let waiting = match &mut self.conns[slot] {
                Some(conn) if !conn.state.stashed_input().is_empty() => {
                    conn.state.mark_dirty();
                    true
                }
                _ => false,
            };
            if waiting {
                self.drive(slot, workers, scratch, false, now);
            }
        }
    }

    /// Sends the datagram answers the services have ready after waiting.
    fn send_deferred(&mut self, workers: &mut [Box<dyn DatagramWorker>]) {
        let mut ready = Vec::new();
        for (i, u) in self.udp.iter().enumerate() {
            let Some(worker) = workers.get_mut(i) else {
                continue;
            };
            ready.clear();
            let take = std::panic::AssertUnwindSafe(|| worker.take_deferred(&u.ctx, &mut ready));
            if std::panic::catch_unwind(take).is_err() {
                tracing::error!(worker = self.index, "datagram service panicked");
                continue;
            }
            for (to, datagram) in &ready {
                // A full socket buffer drops the answer, as it would any datagram.
                let _ = u.socket.send_to(datagram, *to);
            }
        }
    }

    fn close(&mut self, slot: usize) {
        if let Some(conn) = self.conns.get_mut(slot).and_then(Option::take) {
            // Counters first, so that a client seeing the close also sees them.
            if let Some(l) = self.listening.get_mut(conn.listener) {
                l.open = l.open.saturating_sub(1);
                l.per_source.release(conn.source);
            }
            drop_by(&self.conn_stats(conn.listener).open, 1);
            let mut stream = conn.stream;
            if let Some(mut tls) = conn.tls {
                if !tls.handshaking() && stream.direct() {
                    tls.close(&mut stream);
                }
            }
            match stream {
                Stream::Epoll(mut stream) => {
                    let _ = self.poll.registry().deregister(&mut stream);
                    drop(stream);
                }
                Stream::Ring(mut stream) => {
                    if let Some(ring) = self.ring.as_mut() {
                        // The operations still running hold the socket (and the kernel the
                        // send's buffer) until their cancels complete.
                        if stream.recv_armed {
                            ring.cancel(Op::StreamRecv(stream.id()).encode());
                        }
                        // Its chunks go round (unsent answers are dropped with it); those of a
                        // send in flight once its cancel or completion arrives.
                        if let Some(ud) = stream.retire() {
                            ring.cancel(ud);
                        }
                        ring.submit_queued();
                        if let Some(file) = stream.file() {
                            ring.unregister_conn(file);
                        }
                    }
                    drop(stream);
                }
            }
            self.free.push(slot);
            if self.reserve.len() < self.reserve_target {
                refill_reserve(&mut self.reserve, self.reserve_target);
            }
        }
    }

    /// Closes connections idle for their `idle_timeout`, and those whose incomplete request
    /// has been arriving for longer than `request_timeout`.
    fn sweep_idle(&mut self, now: Instant) {
        for slot in 0..self.conns.len() {
            // A TLS handshake that stalls or trickles is bounded by its own, shorter deadline.
            let stalled = match &self.conns[slot] {
                Some(Conn {
                    tls: Some(tls),
                    listener,
                    ..
                }) if tls.handshaking() => {
                    self.listening[*listener].tls.as_ref().is_some_and(|a| {
                        now.saturating_duration_since(tls.opened()) >= a.handshake_timeout()
                    })
                }
                _ => false,
            };
            if stalled {
                if let Some(Some(conn)) = self.conns.get(slot) {
                    bump(&self.conn_stats(conn.listener).tls_handshake_timeout, 1);
                }
                self.close(slot);
                continue;
            }
            let Some(conn) = &self.conns[slot] else {
                continue;
            };
            let limits = &self.listening[conn.listener].limits;
            let listener = conn.listener;
            if conn.state.partial_for(now) >= limits.request_timeout {
                bump(&self.conn_stats(listener).closed_deadline, 1);
                let answer = self.listening[listener].deadline_answer;
                if let Some(Some(conn)) = self.conns.get_mut(slot) {
                    answer_deadline(conn, answer);
                }
                self.close(slot);
            } else if conn.state.idle_for(now) >= limits.idle_timeout {
                bump(&self.conn_stats(listener).closed_idle, 1);
                self.close(slot);
            }
        }
    }
}

/// How long a connection admitted to a full listener is kept from eviction until its first
/// bytes are read: a client sends its request right after the handshake, so this covers the
/// time until the worker's next turn reads it, with room for a long round trip. A client
/// that connects and sends nothing is evictable after it.
const UNREAD_GRACE: Duration = Duration::from_millis(250);

/// Answers a connection over the limit with the service's refusal and closes it. The refusal
/// fits an empty send buffer, so one non-blocking write sends it; what the client has already
/// sent is read and dropped first, so that the close is a FIN rather than a reset that could
/// destroy the answer.
fn refuse(mut stream: mio::net::TcpStream, refusal: &[u8]) {
    if refusal.is_empty() {
        return;
    }
    let _ = stream.write(refusal);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut sink = [0u8; 4096];
    for _ in 0..16 {
        match stream.read(&mut sink) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
}

/// Writes the deadline answer to a connection about to be closed, when nothing else is
/// pending (behind unsent answers it would only wait longer), and discards what the client
/// sent so that the close is a FIN rather than a reset that could destroy the answer.
fn answer_deadline(conn: &mut Conn, answer: &[u8]) {
    if answer.is_empty() || conn.state.has_output() || conn.state.closing() {
        return;
    }
    if conn.tls.as_ref().is_some_and(|t| t.handshaking()) {
        return;
    }
    // On the ring: only when nothing written earlier is still on its way.
    if !conn.stream.direct() {
        return;
    }
    let _ = conn.write(answer);
    let _ = conn.flush_tls();
    conn.stream.shutdown_write();
    let mut sink = [0u8; 4096];
    conn.stream.discard_input(&mut sink, 16 * 4096);
}

enum Outcome {
    Keep,
    /// The turn's budget is spent with work left: serve again in a later turn.
    Yield,
    Close,
    Overflow,
    Error,
    /// The service panicked on this connection's input.
    Panic,
}

/// Moves bytes until the socket would block, the service waits for more input, output is
/// over the backpressure limit, or the turn's budget is spent: one service call that served
/// something, of at most `max_requests_per_turn` requests and `max_output_per_turn` bytes.
fn serve(
    conn: &mut Conn,
    worker: &mut dyn StreamWorker,
    limits: &ConnLimits,
    stats: &ConnStats,
    scratch: &mut Scratch,
    now: Instant,
) -> Outcome {
    let hangup = conn.hangup;
    let mut served = false;
    // A short read drained the socket (epoll(7): for stream sockets a read that returns less
    // than asked means the input space is exhausted), so the edge-triggered registration
    // reports the next bytes and one `EAGAIN` read per request is saved. Not when this event
    // also reported the peer's FIN: that edge is already consumed, so read on to the EOF.
    let mut drained = false;
    loop {
        // 1. Send what is pending: TLS records first, then answers.
        let tls_flushed = match conn.flush_tls() {
            Ok(done) => done,
            Err(_) => return Outcome::Error,
        };
        while tls_flushed && conn.state.has_output() {
            let was_blocked = conn.state.output_blocked(limits);
            let pending = conn.state.pending_output();
            let written = match conn.tls.as_deref_mut() {
                None => conn.stream.write(pending),
                Some(tls) => tls.write_plain(&mut conn.stream, pending),
            };
            match written {
                Ok(0) => return Outcome::Error,
                Ok(n) => {
                    conn.state.on_written(n, now);
                    bump(&stats.bytes_out, n as u64);
                    if was_blocked && !conn.state.output_blocked(limits) {
                        conn.state.mark_dirty();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Outcome::Error,
            }
        }
        if conn.state.closing() {
            return if conn.state.has_output()
                || conn.tls.as_ref().is_some_and(|t| t.wants_write())
                || conn.stream.unsent()
            {
                Outcome::Keep
            } else {
                conn.stream.shutdown_write();
                // Closing with unread input makes the kernel send a reset, which can destroy
                // the answer just sent (a 413 while the client still sends its body); discard
                // what has already arrived first.
                conn.stream.discard_input(&mut scratch.input, 64 * 1024);
                Outcome::Close
            };
        }

        // On the ring, a connection over its share of the worker's send memory is neither
        // served nor read until its sends complete (a completion drives it again).
        let room = conn.stream.room();
        if room == 0 {
            return Outcome::Keep;
        }

        // 2. Let the service consume what is buffered.
        if conn.state.wants_service(limits) {
            if served {
                return Outcome::Yield;
            }
            let mut ctx = conn.ctx;
            // The output vector holds what is pending in front of the new answers.
            ctx.output_limit = ctx.output_limit.min(
                conn.state
                    .pending_output()
                    .len()
                    .saturating_add(limits.max_output_per_turn.max(1).min(room)),
            );
            let Ok(consumed) = conn.state.run_service(worker, &ctx) else {
                return Outcome::Panic;
            };
            served |= consumed > 0;
            // Flush what it wrote and serve the rest of the buffer before reading again. A
            // call that consumed nothing cleared the dirty flag, so this cannot spin.
            if consumed > 0 || conn.state.closing() || conn.state.has_output() {
                continue;
            }
        }
        if conn.state.output_blocked(limits) {
            // Backpressure: the writable event resumes this connection.
            return Outcome::Keep;
        }

        // 3. Read more.
        if conn.state.read_closed {
            // A request still waiting (for the overlay) when the client half-closes is dropped
            // with the connection, as an incomplete one is.
            return if conn.state.has_output()
                || conn.tls.as_ref().is_some_and(|t| t.wants_write())
                || conn.stream.unsent()
            {
                Outcome::Keep
            } else {
                Outcome::Close
            };
        }
        if drained {
            return Outcome::Keep;
        }
        if served {
            // The socket may hold more requests: read them in a later turn.
            return Outcome::Yield;
        }
        match read_through_scratch(conn, worker, limits, stats, scratch, now) {
            Ok((short, consumed)) => {
                drained = short && !hangup;
                served |= consumed;
            }
            Err(outcome) => return outcome,
        }
    }
}

/// Reads into the worker's scratch buffer (behind any partial request the connection had
/// stashed), serves from it, writes the answers straight from the scratch output when nothing
/// else is pending, and stashes only what is left over in the connection. Reads are therefore
/// as large as a request may be, and a connection holds buffers only between partial reads or
/// writes. `Ok((short, served))`: the read was short (the socket is drained), the service
/// consumed at least one request; `Err` carries how the caller must return.
fn read_through_scratch(
    conn: &mut Conn,
    worker: &mut dyn StreamWorker,
    limits: &ConnLimits,
    stats: &ConnStats,
    scratch: &mut Scratch,
    now: Instant,
) -> Result<(bool, bool), Outcome> {
    let cap = limits.max_input_bytes.clamp(1, scratch.input.len());
    let stashed = conn.state.stashed_input();
    if stashed.len() >= cap {
        // The service wants more bytes than a request may have.
        return Err(Outcome::Overflow);
    }
    let held = stashed.len();
    scratch.input[..held].copy_from_slice(stashed);
    let n = match conn.read(&mut scratch.input[held..cap]) {
        Ok(0) => {
            conn.state.read_closed = true;
            return Ok((false, false));
        }
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(Outcome::Keep),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok((false, false)),
        Err(_) => return Err(Outcome::Error),
    };
    bump(&stats.bytes_in, n as u64);
    // An incomplete request keeps the time of its first byte across reads.
    let started = if held > 0 {
        conn.state.partial_since().unwrap_or(now)
    } else {
        now
    };
    conn.state.clear_input(now);
    let len = held + n;
    let data = &scratch.input[..len];

    // Answers go after anything still pending, and count against the same limit.
    let pending = conn.state.pending_output().len();
    let mut ctx = conn.ctx;
    ctx.output_limit = ctx
        .output_limit
        .saturating_sub(pending)
        .min(limits.max_output_per_turn.max(1))
        .min(conn.stream.room().max(1));
    scratch.output.clear();
    let Ok(step) = guarded_input(worker, &ctx, data, &mut scratch.output) else {
        return Err(Outcome::Panic);
    };
    let consumed = step.consumed.min(len);
    if consumed < len {
        // Served nothing: an incomplete request waits for more bytes. Served some: the rest
        // may be whole requests held back by the output limit.
        let started = if consumed > 0 { now } else { started };
        conn.state
            .stash_input(&data[consumed..], consumed > 0, started, now);
    }
    if step.close {
        conn.state.set_closing();
    }
    let mut written = 0;
    if pending == 0 {
        while written < scratch.output.len() {
            match conn.write(&scratch.output[written..]) {
                Ok(0) => return Err(Outcome::Error),
                Ok(k) => written += k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Err(Outcome::Error),
            }
        }
        bump(&stats.bytes_out, written as u64);
    }
    if written < scratch.output.len() {
        conn.state.stash_output(&scratch.output[written..]);
    }
    // Do not let one huge answer pin memory in the worker for ever.
    if scratch.output.capacity() > 1024 * 1024 {
        scratch.output = Vec::with_capacity(16 * 1024);
    }
    Ok((n < cap - held && conn.tls.is_none(), consumed > 0))
}
