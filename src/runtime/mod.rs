//! The thread-per-core runtime: worker threads that own sockets, buffers and timers, and drive
//! protocol services through a narrow byte-stream interface.
//!
//! Each worker (optionally pinned to a core) has its own `SO_REUSEPORT` listener per configured
//! address and its own event loop, so connections are spread over workers by the kernel and a
//! connection lives on one worker for its whole life: no lock, no hand-off. The runtime knows no
//! protocol: a [`StreamService`] creates one [`StreamWorker`] per worker thread, and the worker
//! consumes input bytes and appends answers ([`StreamWorker::on_input`]). Datagram protocols
//! (UDP) get the same shape with [`DatagramService`] / [`DatagramWorker`]: one datagram in, at
//! most one out. Work that belongs to no socket, such as the engine's expiry, is a [`Ticker`]
//! run on every worker at every tick.
//!
//! Back-ends: [`Backend::Epoll`] (mio), whose loop is in `epoll.rs`, and [`Backend::IoUring`]
//! (`uring/`), where each worker waits on its own io_uring: datagram sockets are served from the
//! ring (multishot receive into provided buffers, batched sends), and so are TCP listeners
//! (multishot accept) and connections (multishot receive into a stream buffer ring, one send per
//! connection per turn); the connection table and its rules are the epoll loop's, fed by ring
//! completions instead of readiness events, so streams behave identically on both.
//! [`Backend::Auto`] picks io_uring when
//! the kernel (and any seccomp profile) allows it, else epoll, and logs which and why. The
//! connection logic that does not depend on the back-end (buffers, limits, backpressure) is in
//! `conn.rs` and the datagram turn in `datagram.rs`, which the io_uring back-end reuses.
//!
//! What every back-end owes the load control: set [`ConnCtx::ready_at`] and
//! [`DatagramCtx::ready_at`] to the instant the current turn learnt of the work (for a
//! datagram whose kernel receive time is known, its arrival), judge each datagram with its
//! socket's `datagram::Sojourn` (which sets [`DatagramCtx::shed`]), write [`StreamWorker::deadline_answer`] before closing a
//! connection past its `request_timeout`, and count each accepted connection in its listener's
//! shared [`sources::SourceCounts`] (released on close) so that per-source caps hold across
//! workers. The per-source request rate limit lives in the services and needs nothing.

mod conn;
pub(crate) mod control_law;
mod datagram;
pub mod descriptors;
mod epoll;
mod listener;
pub(crate) use listener::bind_exclusive;
mod mmsg;
pub mod sources;
mod stats;
pub mod tls;
pub mod uring;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use conn::{source_key, ConnLimits};

/// Largest datagram a datagram service is given whole (the receive slot size); longer ones
/// are dropped by the runtime.
pub const MAX_DATAGRAM_BYTES: usize = mmsg::SLOT_BYTES;
pub use datagram::{DatagramListenerStats, DatagramStats, DatagramTotals};
pub use stats::{ConnStats, ConnTotals, ListenerStats, RuntimeStats, WorkerStats};

/// What the runtime tells a service about a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnCtx {
    /// Index of the worker thread (0-based).
    pub worker: usize,
    /// Index of the listener in the order given to [`Runtime::start`].
    pub listener: usize,
    /// The remote address.
    pub peer: SocketAddr,
    /// The local address the connection was accepted on.
    pub local: SocketAddr,
    /// Stop appending answers once `out.len()` reaches this (pending output at the call is
    /// included); the runtime calls again when the client has read some. It also carries the
    /// listener's per-turn output budget, so check it before computing each answer.
    pub output_limit: usize,
    /// The client certificate verified in the TLS handshake, on a TLS listener that requires
    /// one (see [`tls`]); `None` otherwise.
    pub client_cert: Option<tls::ClientCert>,
    /// Serve at most this many requests in this call (the per-turn fairness budget); the
    /// runtime calls again in a later turn for the rest.
    pub max_requests: usize,
    /// When the worker learnt that this connection had work (the readiness report of the
    /// current event-loop turn): `ready_at.elapsed()` is how long the work has waited in the
    /// worker, the measure of overload shedding. Every back-end sets it before each call.
    pub ready_at: Instant,
}

/// What a service did with the input it was given.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamStep {
    /// Bytes consumed from the front of the input. 0 means "need more bytes".
    pub consumed: usize,
    /// Close the connection once the output has been sent.
    pub close: bool,
}

/// A protocol served over byte streams: creates the per-worker half on each worker thread.
pub trait StreamService: Send + Sync {
    /// Called once on worker thread `worker` before it serves anything. The returned value
    /// stays on that thread (scratch buffers, per-worker counters).
    fn worker(&self, worker: usize) -> Box<dyn StreamWorker>;

    /// TLS for this service's listeners: the runtime then runs every connection through a
    /// [`tls::TlsConn`] and hands the service plaintext. `None` (the default) is plaintext.
    fn tls(&self) -> Option<Arc<tls::TlsAcceptor>> {
        None
    }
}

/// The per-worker half of a [`StreamService`].
pub trait StreamWorker {
    /// Consumes zero or more whole requests from the front of `input` and appends their
    /// answers, in order, to `out`. Must consume at least one request when `input` holds a
    /// complete one and `out.len() < ctx.output_limit`, should stop once `out.len()`
    /// reaches `ctx.output_limit`, and must stop after `ctx.max_requests` requests. `input` never exceeds the listener's `max_input_bytes`.
    ///
    /// A service may leave a complete request unconsumed while its answer waits for something
    /// outside the worker (the overlay): the runtime offers the input again at every wake-up
    /// ([`WakeHandle`]) and every tick, so the waiting answer keeps its place in the
    /// connection's answer order and other connections are served meanwhile.
    fn on_input(&mut self, ctx: &ConnCtx, input: &[u8], out: &mut Vec<u8>) -> StreamStep;

    /// Periodic timer, every `tick` of [`RuntimeConfig`].
    fn on_tick(&mut self, _now: Instant) {}

    /// The protocol's answer to a connection refused because the listener is at
    /// `max_connections` (an HTTP 503, say): written once, without waiting, before the
    /// connection is closed. Empty (the default) closes it without a word.
    fn refusal(&self) -> &'static [u8] {
        &[]
    }

    /// The protocol's answer to a connection whose request missed its deadline
    /// ([`ConnLimits::request_timeout`]), such as an HTTP 408: written once, after any answer
    /// still pending and without waiting, before the connection is closed. Empty (the
    /// default) closes it without a word.
    fn deadline_answer(&self) -> &'static [u8] {
        &[]
    }
}

/// What the runtime tells a datagram service about a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DatagramCtx {
    /// Index of the worker thread (0-based).
    pub worker: usize,
    /// Index of the datagram socket in the order given to [`Runtime::start_with`].
    pub socket: usize,
    /// The local address the datagram arrived on.
    pub local: SocketAddr,
    /// When the datagram arrived: while the socket's receive timestamps are on (a backlog is
    /// suspected, see `datagram::Sojourn`), the kernel's receive time of this datagram;
    /// otherwise when the worker learnt that the socket had datagrams (the readiness report
    /// of the current event-loop turn), as [`ConnCtx::ready_at`].
    pub ready_at: Instant,
    /// The runtime's load control asks for this datagram to be answered with the protocol's
    /// overload error instead of being served: it waited in the kernel at least the shedding
    /// delay ([`RuntimeConfig::shed_after`]) and the shedding pace picked it
    /// (`datagram::ShedPace`). Always false with shedding off.
    pub shed: bool,
}

/// A protocol served over datagrams (one in, at most one out): creates the per-worker half on
/// each worker thread.
pub trait DatagramService: Send + Sync {
    fn worker(&self, worker: usize) -> Box<dyn DatagramWorker>;
}

/// The per-worker half of a [`DatagramService`].
pub trait DatagramWorker {
    /// Called once before each received batch is handed to [`DatagramWorker::on_datagram`]:
    /// the place to read the clock (or other per-batch state) once rather than per datagram.
    fn on_batch(&mut self) {}

    /// A hint that `packet` is among the next datagrams of the batch to be handed to
    /// [`DatagramWorker::on_datagram`]: the back-ends call it [`PREFETCH_AHEAD`] datagrams
    /// ahead, so that the service can start loading the table entries the datagram will read
    /// (a cache prefetch) and the misses of a batch overlap. It must not change any state a
    /// client can observe; the default does nothing.
    fn prefetch(&self, _packet: &[u8]) {}

    /// Handles one datagram from `src`. `out` is empty on entry; return true to send it back to
    /// `src`.
    fn on_datagram(
        &mut self,
        ctx: &DatagramCtx,
        src: SocketAddr,
        packet: &[u8],
        out: &mut Vec<u8>,
    ) -> bool;

    /// Handles a datagram from `src` longer than a receive buffer (2,004 bytes): the kernel
    /// kept only `head`, its first bytes, and cut the rest. `out` is empty on entry; return
    /// true to send it back to `src` (the protocol's error answer). The default drops it.
    fn on_oversized(
        &mut self,
        _ctx: &DatagramCtx,
        _src: SocketAddr,
        _head: &[u8],
        _out: &mut Vec<u8>,
    ) -> bool {
        false
    }

    /// Periodic timer, every `tick` of [`RuntimeConfig`].
    fn on_tick(&mut self, _now: Instant) {}

    /// Answers that were left waiting by [`DatagramWorker::on_datagram`] (returning false) and
    /// are ready now: appended as (destination, datagram). Called at every wake-up and tick.
    fn take_deferred(&mut self, _ctx: &DatagramCtx, _out: &mut Vec<(SocketAddr, Vec<u8>)>) {}
}

/// How many datagrams ahead of the one being served the back-ends hand a received datagram
/// to [`DatagramWorker::prefetch`]. Serving a datagram takes about a microsecond of user
/// space, ten times a cache miss, so one datagram ahead is enough for one prefetch to
/// complete; three ahead lets a service start a chain of three dependent loads (a BitTorrent
/// announce: index line, swarm slot, member block) one step per datagram served.
pub const PREFETCH_AHEAD: usize = 3;

/// One datagram address to serve and the service behind it.
#[derive(Clone)]
pub struct DatagramSpec {
    /// Short name for logs, metrics and status (e.g. `bt_udp`).
    pub name: String,
    /// Address to bind; port 0 picks a free port, shared by every worker.
    pub addr: SocketAddr,
    pub service: Arc<dyn DatagramService>,
}

/// Periodic work that belongs to no listener (such as the engine's expiry), run on every
/// worker at every tick.
pub trait Ticker: Send + Sync {
    fn tick(&self, worker: usize, now: Instant);
}

/// The I/O back-end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// io_uring where it can be set up (see [`uring::probe`]), else epoll; the choice and its
    /// reason are logged at start.
    Auto,
    /// One io_uring per worker (Linux 6.0 or later, `SINGLE_ISSUER`); starting fails when it
    /// cannot be set up.
    IoUring,
    /// Readiness-based loop on epoll (through mio).
    Epoll,
}

/// Environment variable that overrides the configured back-end of every runtime the process
/// starts (`auto`, `io_uring` or `epoll`): an operator override, also how the test suite runs
/// once per back-end.
pub const BACKEND_ENV: &str = "PPSP_TRACKER_BACKEND";

impl Backend {
    /// Parses a configured back-end name.
    pub fn parse(name: &str) -> Result<Backend, String> {
        match name {
            "auto" => Ok(Backend::Auto),
            "io_uring" => Ok(Backend::IoUring),
            "epoll" => Ok(Backend::Epoll),
            other => Err(format!(
                "unknown back-end \"{other}\" (available: \"auto\", \"io_uring\", \"epoll\")"
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::IoUring => "io_uring",
            Backend::Epoll => "epoll",
        }
    }

    /// The back-end a runtime configured with `self` runs: [`BACKEND_ENV`] overrides `self`;
    /// `Auto` becomes `IoUring` or `Epoll` after probing. Logs the choice and why. Errors: the
    /// override is not a back-end name, or `IoUring` was asked for and cannot be set up.
    pub fn resolve(self) -> io::Result<Backend> {
        let (asked, from) = match std::env::var(BACKEND_ENV) {
            Ok(v) if !v.is_empty() => (
                Backend::parse(&v).map_err(|e| {
                    io::Error::new(io::ErrorKind::InvalidInput, format!("{BACKEND_ENV}: {e}"))
                })?,
                BACKEND_ENV,
            ),
            _ => (self, "server.backend"),
        };
        match asked {
            Backend::Epoll => {
                tracing::info!(
                    backend = "epoll",
                    "I/O back-end: epoll ({from} = \"epoll\")"
                );
                Ok(Backend::Epoll)
            }
            Backend::IoUring => match uring::probe() {
                Ok(mode) => {
                    tracing::info!(
                        backend = "io_uring",
                        taskrun = mode.name(),
                        "I/O back-end: io_uring ({from} = \"io_uring\")"
                    );
                    Ok(Backend::IoUring)
                }
                Err(e) => Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!(
                        "{from} = \"io_uring\" but io_uring cannot be set up here: {e} (\"auto\" \
                         falls back to epoll)"
                    ),
                )),
            },
            Backend::Auto => match uring::probe() {
                Ok(mode) => {
                    tracing::info!(
                        backend = "io_uring",
                        taskrun = mode.name(),
                        "I/O back-end: io_uring ({from} = \"auto\" and the kernel supports it)"
                    );
                    Ok(Backend::IoUring)
                }
                Err(e) => {
                    tracing::warn!(
                        backend = "epoll",
                        "I/O back-end: epoll ({from} = \"auto\" and io_uring is unavailable: {e})"
                    );
                    Ok(Backend::Epoll)
                }
            },
        }
    }
}

/// How many workers to run and how.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Worker threads (at least 1).
    pub workers: usize,
    /// Pin worker `i` to core `i % cores`.
    pub pin_cores: bool,
    pub backend: Backend,
    /// Timer tick period of every worker.
    pub tick: Duration,
    pub listen_backlog: u32,
    pub events_per_poll: usize,
    /// Receive and send buffer of each UDP socket; 0 keeps the kernel default.
    pub udp_buffer_bytes: usize,
    /// Datagrams taken per `recvmmsg` call and answered per `sendmmsg` call (1..=1024). On
    /// io_uring it sizes each socket's provided-buffer ring instead: four times as many
    /// receive buffers of 4,140 bytes (64..=4096 of them), and twice as many send slots.
    pub datagram_batch: usize,
    /// Prefix of the worker threads' names (`{name}-{i}`).
    pub name: String,
    /// Descriptors each worker holds in reserve (open on `/dev/null`) for when accepting
    /// fails with `EMFILE`/`ENFILE`: one is released to accept a queued connection.
    pub descriptor_reserve: usize,
    /// With descriptors exhausted, serve the connection accepted on a reserve descriptor (the
    /// admin listener: monitoring must see the exhaustion) instead of closing it at once (the
    /// client learns at once rather than after its connect timeout).
    pub serve_from_reserve: bool,
    /// Counters per row of each listener's per-source connection counts (shared by the
    /// workers; see [`sources::SourceCounts`]).
    pub source_table_slots: usize,
    /// An event-loop turn that takes at least this long counts as behind
    /// ([`stats::WorkerStats`]); zero counts nothing. The server sets it to its shedding
    /// delay (100 ms with shedding off).
    pub behind_after: Duration,
    /// Datagrams that waited in the kernel at least this long may be shed
    /// ([`DatagramCtx::shed`], at the pace of `datagram::ShedPace`); zero sheds nothing.
    pub shed_after: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            workers: 1,
            pin_cores: false,
            backend: Backend::Auto,
            tick: Duration::from_millis(100),
            listen_backlog: 1024,
            events_per_poll: 1024,
            udp_buffer_bytes: 0,
            datagram_batch: 64,
            name: "worker".to_owned(),
            descriptor_reserve: 1,
            serve_from_reserve: false,
            source_table_slots: 16_384,
            behind_after: Duration::from_millis(100),
            shed_after: Duration::ZERO,
        }
    }
}

/// One address to serve and the service behind it.
#[derive(Clone)]
pub struct ListenerSpec {
    /// Short name for logs, metrics and status (e.g. `ppstp`).
    pub name: String,
    /// Address to bind; port 0 picks a free port, shared by every worker.
    pub addr: SocketAddr,
    pub service: Arc<dyn StreamService>,
    pub limits: ConnLimits,
}

/// Wakes every worker of a runtime, from any thread: connections and datagrams whose service
/// left a request waiting (for the overlay) are served again.
#[derive(Clone)]
pub struct WakeHandle {
    wakers: Vec<Arc<mio::Waker>>,
}

impl WakeHandle {
    pub fn wake(&self) {
        for w in &self.wakers {
            let _ = w.wake();
        }
    }
}

/// Running workers. Dropping it stops and joins them.
pub struct Runtime {
    stop: Arc<AtomicBool>,
    wakers: Vec<Arc<mio::Waker>>,
    threads: Vec<JoinHandle<()>>,
    stats: Arc<RuntimeStats>,
    backend: Backend,
}

impl Runtime {
    /// Binds every listener on every worker, then starts the workers. Bind errors name the
    /// address; nothing is left running on error.
    pub fn start(config: &RuntimeConfig, listeners: Vec<ListenerSpec>) -> io::Result<Runtime> {
        Runtime::start_with(config, listeners, Vec::new(), Vec::new())
    }

    /// As [`Runtime::start`], with datagram sockets and tickers as well.
    pub fn start_with(
        config: &RuntimeConfig,
        listeners: Vec<ListenerSpec>,
        datagrams: Vec<DatagramSpec>,
        tickers: Vec<Arc<dyn Ticker>>,
    ) -> io::Result<Runtime> {
        let workers = config.workers.max(1);
        let backend = config.backend.resolve()?;
        let mut sockets: Vec<Vec<std::net::TcpListener>> =
            (0..workers).map(|_| Vec::new()).collect();
        let mut stats = Vec::with_capacity(listeners.len());
        if !listeners.is_empty() {
            if let Some(warning) =
                listener::backlog_shortfall(config.listen_backlog, listener::somaxconn())
            {
                tracing::warn!("{warning}");
            }
        }
        for spec in &listeners {
            let (bound, group) = listener::bind_group(spec.addr, workers, config.listen_backlog)?;
            for (w, socket) in group.into_iter().enumerate() {
                if spec.limits.send_buffer_bytes > 0 {
                    // Accepted connections inherit the listener's send buffer.
                    socket2::SockRef::from(&socket)
                        .set_send_buffer_size(spec.limits.send_buffer_bytes)
                        .map_err(|e| {
                            io::Error::new(e.kind(), format!("SO_SNDBUF on {bound}: {e}"))
                        })?;
                }
                sockets[w].push(socket);
            }
            stats.push(ListenerStats::new(spec.name.clone(), bound, workers));
        }
        let mut udp_sockets: Vec<Vec<std::net::UdpSocket>> =
            (0..workers).map(|_| Vec::new()).collect();
        let mut udp_stats = Vec::with_capacity(datagrams.len());
        for spec in &datagrams {
            let (bound, group) =
                listener::bind_udp_group(spec.addr, workers, config.udp_buffer_bytes)?;
            for (w, socket) in group.into_iter().enumerate() {
                udp_sockets[w].push(socket);
            }
            udp_stats.push(DatagramListenerStats::new(
                spec.name.clone(),
                bound,
                workers,
            ));
        }
        let stats = Arc::new(RuntimeStats {
            name: config.name.clone(),
            behind_after: config.behind_after,
            shed_after: config.shed_after,
            listeners: stats,
            datagrams: udp_stats,
            workers: (0..workers)
                .map(|_| crossbeam::utils::CachePadded::new(WorkerStats::default()))
                .collect(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let cores = if config.pin_cores {
            core_affinity::get_core_ids().unwrap_or_default()
        } else {
            Vec::new()
        };
        if config.pin_cores && cores.is_empty() {
            tracing::warn!("pin_cores is set but the core list is unavailable; not pinning");
        }

        let source_counts: Vec<Arc<sources::SourceCounts>> = listeners
            .iter()
            .map(|_| Arc::new(sources::SourceCounts::new(config.source_table_slots)))
            .collect();
        let mut runtime = Runtime {
            stop: stop.clone(),
            wakers: Vec::with_capacity(workers),
            threads: Vec::with_capacity(workers),
            stats: stats.clone(),
            backend,
        };
        for (index, (worker_sockets, worker_udp)) in
            sockets.into_iter().zip(udp_sockets).enumerate()
        {
            let setup = epoll::WorkerSetup {
                index,
                sockets: worker_sockets,
                listeners: listeners.clone(),
                udp_sockets: worker_udp,
                datagrams: datagrams.clone(),
                tickers: tickers.clone(),
                stats: stats.clone(),
                stop: stop.clone(),
                backend,
                tick: config.tick,
                events_per_poll: config.events_per_poll,
                datagram_batch: config.datagram_batch,
                descriptor_reserve: config.descriptor_reserve,
                serve_from_reserve: config.serve_from_reserve,
                source_counts: source_counts.clone(),
            };
            let (mut event_loop, waker) = epoll::EventLoop::new(setup)?;
            runtime.wakers.push(waker);
            let core = (!cores.is_empty()).then(|| cores[index % cores.len()]);
            // The worker reports whether its set-up on its own thread (its io_uring) worked.
            let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<io::Result<()>>(1);
            let spawned = std::thread::Builder::new()
                .name(format!("{}-{index}", config.name))
                .spawn(move || {
                    if let Some(core) = core {
                        if !core_affinity::set_for_current(core) {
                            tracing::warn!(worker = index, core = core.id, "could not pin worker");
                        }
                    }
                    let attached = event_loop.attach_ring();
                    let failed = attached.is_err();
                    let _ = ready_tx.send(attached);
                    if !failed {
                        event_loop.run();
                    }
                });
            match spawned {
                Ok(handle) => {
                    runtime.threads.push(handle);
                    match ready_rx.recv() {
                        Ok(Ok(())) => {}
                        // Dropping `runtime` stops the workers already started.
                        Ok(Err(e)) => return Err(e),
                        Err(_) => {
                            return Err(io::Error::other(format!(
                                "worker {index} stopped while starting"
                            )))
                        }
                    }
                }
                // Dropping `runtime` stops the workers already started.
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("spawn worker {index}: {e}"),
                    ))
                }
            }
        }
        tracing::info!(
            backend = backend.name(),
            workers,
            pinned = !cores.is_empty(),
            listeners = ?stats.listeners.iter().map(|l| (l.name.as_str(), l.addr)).collect::<Vec<_>>(),
            datagrams = ?stats.datagrams.iter().map(|l| (l.name.as_str(), l.addr)).collect::<Vec<_>>(),
            runtime = config.name.as_str(),
            "runtime started"
        );
        Ok(runtime)
    }

    /// The TCP addresses actually bound, in the order the listeners were given.
    pub fn local_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.stats
            .listeners
            .iter()
            .map(|l| (l.name.clone(), l.addr))
            .collect()
    }

    /// The UDP addresses actually bound, in the order the datagram specs were given.
    pub fn datagram_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.stats
            .datagrams
            .iter()
            .map(|l| (l.name.clone(), l.addr))
            .collect()
    }

    /// Connection counters, readable while the runtime runs.
    pub fn stats(&self) -> Arc<RuntimeStats> {
        self.stats.clone()
    }

    /// The back-end the workers run (never [`Backend::Auto`]).
    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn workers(&self) -> usize {
        self.wakers.len()
    }

    /// A handle that wakes every worker (see [`WakeHandle`]).
    pub fn wake_handle(&self) -> WakeHandle {
        WakeHandle {
            wakers: self.wakers.clone(),
        }
    }

    /// Stops every worker and waits for them. Open connections are closed. Idempotent.
    pub fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Release);
        for waker in &self.wakers {
            if let Err(e) = waker.wake() {
                tracing::warn!("cannot wake a worker: {e}");
            }
        }
        for handle in self.threads.drain(..) {
            if handle.join().is_err() {
                tracing::error!("a worker thread panicked");
            }
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests;
