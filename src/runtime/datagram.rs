//! Datagram (UDP) sockets of a worker: each worker has its own `SO_REUSEPORT` socket per
//! configured address and serves what the kernel hands it, one datagram in, at most one out,
//! received and answered in batches (`recvmmsg`/`sendmmsg`, see `mmsg.rs`).
//!
//! A socket is drained in turns of [`DATAGRAMS_PER_TURN`] so that a flood on it cannot starve
//! the worker's TCP connections; a socket that still had datagrams waiting is resumed after the
//! next poll (which then does not sleep). Answers that the socket cannot take at once are
//! dropped and counted: UDP clients retransmit, and queueing them would let a flood grow memory.
//!
//! Overload shedding is judged here for both back-ends, per datagram, from how long it waited
//! in the kernel ([`Sojourn`], [`ShedPace`]).

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

/// Datagrams a turn must have served from one socket for the worker to suspect a backlog and
/// turn the socket's receive timestamps on ([`Sojourn::end_turn`]). A server below its capacity
/// serves most turns shorter than this (it caught up with its socket a moment ago, whatever
/// arrived since); an epoll turn whose batches were all full served at least this many (a full
/// turn, [`DATAGRAMS_PER_TURN`], at the default batch of 64), and a flooded io_uring socket's
/// turns take 65 to 255 datagrams (measured with a closed-loop flood 16k deep). The signal
/// costs nothing: the back-ends count the datagrams they serve anyway.
pub(crate) const BACKLOG_MIN_TURN: usize = 64;

/// Room for the control data of one received datagram: one `SCM_TIMESTAMPNS` message (a
/// `cmsghdr` and a `timespec`: 32 bytes on 64-bit Linux). The io_uring back-end reserves it in
/// every receive buffer, the epoll back-end gives each `recvmmsg` slot one; the kernel writes
/// nothing there while timestamps are off.
pub(crate) const CONTROL_BYTES: usize =
    // SAFETY: CMSG_SPACE only computes a size.
    unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::timespec>() as libc::c_uint) } as usize;

/// Control data storage aligned for `cmsghdr` (the `CMSG_*` macros read it in place).
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub(crate) struct ControlBuf(pub [u8; CONTROL_BYTES]);

/// The kernel's receive time of a datagram from its control data: the `SCM_TIMESTAMPNS`
/// message that a socket with `SO_TIMESTAMPNS` set gets with each datagram (Linux
/// `socket(7)`, `CLOCK_REALTIME`), as the time since the Unix epoch. `None` when `control`
/// holds no such message (timestamps off, or cut short). Any alignment of `control` is fine
/// (the io_uring buffers put it after a 28-byte address): it is copied into aligned storage
/// first and walked with libc's `CMSG_FIRSTHDR`/`CMSG_NXTHDR`.
pub(crate) fn receive_time(control: &[u8]) -> Option<std::time::Duration> {
    let len = control.len().min(CONTROL_BYTES);
    if len == 0 {
        return None;
    }
    let mut buf = ControlBuf([0; CONTROL_BYTES]);
    buf.0[..len].copy_from_slice(&control[..len]);
    // SAFETY: zero is a valid `msghdr`; only its control fields are read, by the macros.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_control = buf.0.as_mut_ptr().cast();
    hdr.msg_controllen = len as _;
    let base = buf.0.as_ptr() as usize;
    // SAFETY: CMSG_LEN only computes a size.
    let need = unsafe { libc::CMSG_LEN(std::mem::size_of::<libc::timespec>() as libc::c_uint) };
    // SAFETY: `hdr` describes `len` initialised bytes of `buf`, aligned for `cmsghdr`;
    // CMSG_FIRSTHDR and CMSG_NXTHDR return null or a header wholly inside them.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&hdr) };
    while !cmsg.is_null() {
        // SAFETY: a header inside `buf` (above).
        let c = unsafe { &*cmsg };
        let offset = cmsg as usize - base;
        if c.cmsg_level == libc::SOL_SOCKET
            && c.cmsg_type == libc::SCM_TIMESTAMPNS
            && c.cmsg_len as usize >= need as usize
            && offset + need as usize <= len
        {
            // SAFETY: the message's data holds a `timespec`, inside `buf` (checked above).
            let ts: libc::timespec =
                unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast()) };
            let (Ok(secs), Ok(nanos)) = (u64::try_from(ts.tv_sec), u32::try_from(ts.tv_nsec))
            else {
                return None;
            };
            return (nanos < 1_000_000_000).then(|| std::time::Duration::new(secs, nanos));
        }
        // SAFETY: as for CMSG_FIRSTHDR.
        cmsg = unsafe { libc::CMSG_NXTHDR(&hdr, cmsg) };
    }
    None
}

/// Sets `SO_TIMESTAMPNS` on socket `fd` (`on`) or clears it.
fn set_timestamps(fd: std::os::fd::RawFd, on: bool) -> std::io::Result<()> {
    let value: libc::c_int = on.into();
    // SAFETY: `value` is a readable `c_int` of the size given.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Runs `f` on the socket `fd` through `socket2` (its option calls).
fn with_sock<T>(fd: std::os::fd::RawFd, f: impl FnOnce(socket2::SockRef<'_>) -> T) -> T {
    // SAFETY: `fd` is an open socket for the duration of the call (the `Sojourn` it comes
    // from is dropped before its owner closes it), and it is not closed through the borrow.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    f(socket2::SockRef::from(&borrowed))
}

/// The receive buffer of a socket whose datagrams stay stale: 256 KiB in the kernel's
/// accounting (what `SO_RCVBUF` reads back; the kernel doubles the value set).
pub(crate) const FLOOD_RCVBUF_BYTES: usize = 256 * 1024;

/// Sheds in one datagram over the delay at most: whatever the control law asks, the worker
/// serves at least `SHED_ONE_IN - 1` of every `SHED_ONE_IN` late datagrams ([`ShedPace`]).
pub(crate) const SHED_ONE_IN: u32 = 16;

/// Which datagrams of an overloaded socket are shed (answered with the protocol's overload
/// error instead of being served), from each datagram's sojourn: how long it waited in the
/// kernel's receive queue before the worker read it.
///
/// Only a datagram that waited at least `target` (the shedding delay) is ever shed, so a
/// standing queue that is younger than the delay, such as a worker at its peak rate that never
/// quite empties its socket, sheds nothing. Not every late datagram is shed, for two reasons:
///
/// - Shedding one costs the worker much of what serving it does: the kernel's receive and
///   send of the datagram are the same. When the receive buffer holds more than a delay's
///   worth of datagrams (the buffer's drain time at the worker's rate is over the delay),
///   the head of the queue stays older than the delay however fast the worker goes, and
///   shedding every late datagram would answer nothing but errors (congestion collapse).
/// - A queue that was late once (a burst, the worker preempted for a while) drains by itself;
///   only one that stays late is overload.
///
/// So late datagrams are shed at the pace of CoDel's control law
/// ([`super::control_law::ControlLaw`], shared with the HTTP listeners): the first once
/// datagrams have been late without a break for twice `target`, then at a pace that grows
/// with the overload's length; a datagram that waited less than `target` ends the episode.
/// On top of the law, never more than one late datagram in [`SHED_ONE_IN`] is shed, so the
/// answered rate stays near the worker's capacity however long the overload lasts.
///
/// Times are the batch's instant (one clock reading per batch), so the datagrams of one batch
/// share it.
#[derive(Clone, Debug)]
pub(crate) struct ShedPace {
    target: std::time::Duration,
    law: super::control_law::ControlLaw,
    /// Late datagrams since the last shed.
    since_shed: u32,
}

impl ShedPace {
    /// A pace for shedding delay `target` (not zero).
    pub(crate) fn new(target: std::time::Duration) -> Self {
        ShedPace {
            target,
            law: super::control_law::ControlLaw::new(target),
            since_shed: 0,
        }
    }

    /// Whether the datagram read at `now` after waiting `sojourn` is shed.
    pub(crate) fn shed(&mut self, sojourn: std::time::Duration, now: std::time::Instant) -> bool {
        if sojourn < self.target {
            self.law.fresh(now);
            return false;
        }
        self.since_shed = self.since_shed.saturating_add(1);
        if !self.law.due(now) || self.since_shed < SHED_ONE_IN {
            return false;
        }
        self.law.shed(now);
        self.since_shed = 0;
        true
    }
}

/// How long a socket's timestamps stay on after the last datagram that was not fresh (that
/// waited at least half the shedding delay).
pub(crate) const STAMP_HOLD: std::time::Duration = std::time::Duration::from_secs(1);

/// The load control of one datagram socket on one worker: the sojourn of each datagram and
/// whether it is shed ([`ShedPace`]), on both back-ends.
///
/// The sojourn is read from the kernel's receive timestamp of the datagram (`SO_TIMESTAMPNS`,
/// [`receive_time`]) against one `CLOCK_REALTIME` reading per batch. The kernel takes a
/// timestamp per packet while any socket wants them, and writes a control message per
/// datagram, so they are on only while a backlog is suspected: a turn that served at least
/// [`BACKLOG_MIN_TURN`] datagrams turns them on (one `setsockopt`), and they go off again
/// (another) once no datagram has waited half the shedding delay for [`STAMP_HOLD`]. Below
/// capacity a socket's turns stay short and the steady state costs nothing: no timestamps, no
/// system call, no clock reading beyond the service's own. Datagrams queued before the
/// timestamps went on are stamped by the kernel when they are read (sojourn zero), so an
/// overload is seen from the datagrams that arrive after the first long turn.
///
/// A socket whose datagrams keep waiting half the delay or more for twice the delay gets a
/// small receive buffer ([`FLOOD_RCVBUF_BYTES`]) until they are fresh again (when the
/// timestamps go off): a full buffer sized for bursts holds datagrams so long that the worker
/// reads them from memory rather than from the cache, and answers about a tenth less under a
/// sustained flood (`benches/README.md`, overload); with the small one the kernel drops the
/// excess on arrival instead.
///
/// A datagram without a timestamp is judged fresh: it keeps the turn's `ready_at` and is
/// served. A `CLOCK_REALTIME` step between a datagram's arrival and its batch moves its
/// sojourn by the step (a backward step reads as zero); only the datagrams queued across the
/// step are affected.
pub(crate) struct Sojourn {
    fd: std::os::fd::RawFd,
    /// `None`: shedding is off, and so are the timestamps.
    pace: Option<ShedPace>,
    stamping: bool,
    /// The kernel refused `SO_TIMESTAMPNS`: never asked again.
    refused: bool,
    /// The last datagram that waited at least half the delay (or when timestamps went on).
    stale_at: std::time::Instant,
    /// The clocks of the current batch while stamping: the monotonic instant and
    /// `CLOCK_REALTIME` since the Unix epoch.
    clock: Option<(std::time::Instant, std::time::Duration)>,
    /// Since when every datagram judged waited at least half the delay (`None`: the last one
    /// judged was fresher).
    stale_since: Option<std::time::Instant>,
    /// The socket's own receive buffer (`SO_RCVBUF` as read back) while it is shrunk to
    /// [`FLOOD_RCVBUF_BYTES`].
    shrunk_from: Option<usize>,
}

impl Sojourn {
    /// The control of socket `fd`, shedding datagrams that waited `shed_after` (zero: off).
    pub(crate) fn new(fd: std::os::fd::RawFd, shed_after: std::time::Duration) -> Self {
        Sojourn {
            fd,
            pace: (!shed_after.is_zero()).then(|| ShedPace::new(shed_after)),
            stamping: false,
            refused: false,
            stale_at: std::time::Instant::now(),
            clock: None,
            stale_since: None,
            shrunk_from: None,
        }
    }

    /// Whether the socket's datagrams carry receive timestamps now.
    #[cfg(test)]
    pub(crate) fn stamping(&self) -> bool {
        self.stamping
    }

    /// Starts a batch of datagrams: reads the clocks once, while timestamps are on.
    #[inline]
    pub(crate) fn start_batch(&mut self) {
        if self.stamping {
            let real = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            self.clock = Some((std::time::Instant::now(), real));
        }
    }

    /// Judges one datagram of the batch from its control data: sets `ctx.ready_at` to its
    /// arrival and `ctx.shed` to whether it is shed. Does nothing while timestamps are off
    /// (the turn's values stand: the start of the turn, not shed).
    #[inline]
    pub(crate) fn judge(&mut self, control: &[u8], ctx: &mut super::DatagramCtx) {
        if !self.stamping {
            return;
        }
        if self.clock.is_none() {
            self.start_batch();
        }
        let Some((now, real)) = self.clock else {
            return;
        };
        let sojourn =
            receive_time(control).map_or(std::time::Duration::ZERO, |at| real.saturating_sub(at));
        self.judge_sojourn(sojourn, now, ctx);
    }

    /// [`Sojourn::judge`] of a datagram that waited `sojourn` until the batch's instant `now`.
    pub(crate) fn judge_sojourn(
        &mut self,
        sojourn: std::time::Duration,
        now: std::time::Instant,
        ctx: &mut super::DatagramCtx,
    ) {
        ctx.ready_at = now.checked_sub(sojourn).unwrap_or(now);
        ctx.shed = match &mut self.pace {
            Some(pace) => {
                if sojourn >= pace.target / 2 {
                    self.stale_at = now;
                    self.stale_since.get_or_insert(now);
                } else {
                    self.stale_since = None;
                }
                pace.shed(sojourn, now)
            }
            None => false,
        };
    }

    /// Ends a turn at `now` that served `served` datagrams (`starved`: the receive ran out of
    /// buffers, so datagrams are waiting too): turns the timestamps on after a long turn, off
    /// after [`STAMP_HOLD`] of fresh datagrams.
    pub(crate) fn end_turn(&mut self, served: usize, starved: bool, now: std::time::Instant) {
        if self.pace.is_none() || self.refused {
            return;
        }
        let long = starved || served >= BACKLOG_MIN_TURN;
        if !self.stamping && long {
            self.switch(true, now);
        } else if self.stamping && now.saturating_duration_since(self.stale_at) >= STAMP_HOLD {
            self.switch(false, now);
            self.restore_buffer();
        } else if let (Some(since), Some(pace), None) =
            (self.stale_since, &self.pace, self.shrunk_from)
        {
            if now.saturating_duration_since(since) >= 2 * pace.target {
                self.shrink_buffer();
            }
        }
    }

    /// Datagrams have waited half the delay or more for twice the delay without a break:
    /// the receive buffer holds more than the worker reads while they are still in the
    /// cache, so it is shrunk to [`FLOOD_RCVBUF_BYTES`] and the kernel drops the excess on
    /// arrival (datagrams already queued stay). A buffer that is already that small, or a
    /// socket whose size cannot be read or set, is left as it is.
    fn shrink_buffer(&mut self) {
        let Ok(own) = with_sock(self.fd, |s| s.recv_buffer_size()) else {
            return;
        };
        if own <= FLOOD_RCVBUF_BYTES {
            return;
        }
        // The kernel doubles the size set (`socket(7)`, `SO_RCVBUF`).
        if with_sock(self.fd, |s| s.set_recv_buffer_size(FLOOD_RCVBUF_BYTES / 2)).is_ok() {
            self.shrunk_from = Some(own);
            tracing::debug!(
                fd = self.fd,
                from = own,
                to = FLOOD_RCVBUF_BYTES,
                "datagrams stay stale: receive buffer shrunk"
            );
        }
    }

    /// Gives the socket its own receive buffer back once its datagrams are fresh again.
    fn restore_buffer(&mut self) {
        if let Some(own) = self.shrunk_from.take() {
            // `own` was read back doubled.
            if let Err(e) = with_sock(self.fd, |s| s.set_recv_buffer_size(own / 2)) {
                tracing::warn!("SO_RCVBUF could not be restored to {own} bytes: {e}");
            }
        }
    }

    fn switch(&mut self, on: bool, now: std::time::Instant) {
        match set_timestamps(self.fd, on) {
            Ok(()) => {
                self.stamping = on;
                self.stale_at = now;
                self.clock = None;
                self.stale_since = None;
            }
            Err(e) => {
                tracing::warn!(
                    "SO_TIMESTAMPNS refused ({e}): datagrams are not shed by their wait"
                );
                self.refused = true;
                self.stamping = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    const MS: Duration = Duration::from_millis(1);

    /// Sheds of `n` datagrams that each waited `sojourn`, read in batches of 64 one
    /// millisecond apart from `*at` on (which moves on).
    fn run(pace: &mut ShedPace, at: &mut Instant, n: usize, sojourn: Duration) -> usize {
        let mut shed = 0;
        for i in 0..n {
            if i % 64 == 0 {
                *at += MS;
            }
            shed += usize::from(pace.shed(sojourn, *at));
        }
        shed
    }

    /// A standing queue younger than the delay (a worker at its peak rate that never empties
    /// its socket) sheds nothing, however long it stands.
    #[test]
    fn a_standing_queue_younger_than_the_delay_sheds_nothing() {
        let mut pace = ShedPace::new(50 * MS);
        let mut at = Instant::now();
        assert_eq!(run(&mut pace, &mut at, 1_000_000, 49 * MS), 0);
    }

    /// A queue late for less than the interval (twice the delay) is a burst: nothing is shed.
    /// Late for longer, datagrams are shed at CoDel's growing pace, only late ones, and never
    /// more than one in `SHED_ONE_IN`.
    #[test]
    fn a_queue_that_stays_late_is_shed_at_a_growing_pace_capped_at_one_in_sixteen() {
        let mut pace = ShedPace::new(50 * MS);
        let mut at = Instant::now();
        // 99 batches, 99 ms: under the 100 ms interval.
        assert_eq!(run(&mut pace, &mut at, 99 * 64, 60 * MS), 0);
        // The next second: sheds begin, spaced 100 ms / sqrt(n): about 2 x sqrt(n) x 100 ms
        // after the first, so some 30 to 40 in the first second.
        let first = run(&mut pace, &mut at, 1_000 * 64, 60 * MS);
        assert!(
            (20..=60).contains(&first),
            "{first} shed in the first second"
        );
        // The pace grows: the following second sheds more.
        let second = run(&mut pace, &mut at, 1_000 * 64, 60 * MS);
        assert!(second > first, "{first} then {second}");
        // Much later the cap holds: one in 16 at most.
        let mut at_late = at;
        run(&mut pace, &mut at_late, 60_000 * 64, 60 * MS);
        let late = run(&mut pace, &mut at_late, 1_000 * 64, 60 * MS);
        assert!(late <= 64_000 / SHED_ONE_IN as usize, "{late}");
        assert!(late >= 64_000 / SHED_ONE_IN as usize / 2, "{late}");
    }

    /// One fresh datagram ends the episode; a new one within 16 intervals resumes near the last
    /// pace, a later one starts over from the interval.
    #[test]
    fn a_fresh_datagram_ends_the_episode() {
        let mut pace = ShedPace::new(10 * MS);
        let mut at = Instant::now();
        let before = run(&mut pace, &mut at, 2_000 * 64, 20 * MS);
        assert!(before > 0);
        assert!(!pace.shed(MS, at));
        // Late again at once: nothing is shed before the interval (20 ms) has passed...
        assert_eq!(run(&mut pace, &mut at, 19 * 64, 20 * MS), 0);
        // ...then the pace resumes near where it was (count - 2), not from one.
        let count_before = pace.law.count;
        let resumed = run(&mut pace, &mut at, 100 * 64, 20 * MS);
        assert!(resumed > 0);
        assert!(
            pace.law.count >= count_before - 2,
            "{} {count_before}",
            pace.law.count
        );
        // After a long fresh spell, an episode starts over.
        assert!(!pace.shed(MS, at));
        at += Duration::from_secs(10);
        assert_eq!(run(&mut pace, &mut at, 19 * 64, 20 * MS), 0);
        assert!(run(&mut pace, &mut at, 100 * 64, 20 * MS) > 0);
        assert!(pace.law.count < 20, "{}", pace.law.count);
    }

    /// A datagram judged with its sojourn gets its arrival as `ready_at` and the pace's
    /// verdict; the shed ones all waited the delay.
    #[test]
    fn judged_datagrams_carry_their_arrival_and_only_late_ones_are_shed() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&socket);
        let mut sojourn = Sojourn::new(fd, 50 * MS);
        let t0 = Instant::now();
        let mut ctx = ctx_of(&socket, t0);
        let mut shed = 0;
        for i in 0..200_000u32 {
            let now = t0 + Duration::from_micros(u64::from(i) * 10);
            // Every 100th datagram is fresh until 1 s, then all are late.
            let wait = if i % 100 == 0 && i < 100_000 {
                10 * MS
            } else {
                80 * MS
            };
            sojourn.judge_sojourn(wait, now, &mut ctx);
            assert_eq!(now.duration_since(ctx.ready_at), wait);
            if ctx.shed {
                assert_eq!(wait, 80 * MS);
                assert!(
                    i >= 100_000,
                    "shed at {i} while fresh datagrams kept coming"
                );
                shed += 1;
            }
        }
        assert!(shed > 0);
    }

    /// Datagrams stale for twice the delay shrink the receive buffer; fresh ones for a hold
    /// give it back; a fresh datagram in between starts the count again.
    #[test]
    fn a_receive_buffer_is_shrunk_while_datagrams_stay_stale_and_restored_after() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&socket);
        with_sock(fd, |s| s.set_recv_buffer_size(512 * 1024)).unwrap();
        let own = with_sock(fd, |s| s.recv_buffer_size()).unwrap();
        assert!(own > FLOOD_RCVBUF_BYTES, "{own}");
        let mut s = Sojourn::new(fd, 50 * MS);
        let t0 = Instant::now();
        s.end_turn(BACKLOG_MIN_TURN, false, t0);
        assert!(s.stamping());
        let mut ctx = ctx_of(&socket, t0);
        // Stale for 90 ms, then one fresh datagram: not yet.
        s.judge_sojourn(30 * MS, t0, &mut ctx);
        s.judge_sojourn(30 * MS, t0 + 90 * MS, &mut ctx);
        s.judge_sojourn(MS, t0 + 90 * MS, &mut ctx);
        s.judge_sojourn(30 * MS, t0 + 100 * MS, &mut ctx);
        s.end_turn(BACKLOG_MIN_TURN, false, t0 + 150 * MS);
        assert_eq!(with_sock(fd, |s| s.recv_buffer_size()).unwrap(), own);
        // Stale for twice the delay without a break: shrunk.
        s.judge_sojourn(30 * MS, t0 + 200 * MS, &mut ctx);
        s.end_turn(BACKLOG_MIN_TURN, false, t0 + 200 * MS);
        let small = with_sock(fd, |s| s.recv_buffer_size()).unwrap();
        assert!(small <= FLOOD_RCVBUF_BYTES, "{small}");
        // Fresh for a hold: the timestamps go off and the buffer is the socket's own again.
        s.judge_sojourn(MS, t0 + 300 * MS, &mut ctx);
        s.end_turn(1, false, t0 + 200 * MS + STAMP_HOLD);
        assert!(!s.stamping());
        assert_eq!(with_sock(fd, |s| s.recv_buffer_size()).unwrap(), own);
    }

    /// Timestamps go on after a long turn (or a starved one), stay on while datagrams wait,
    /// and go off after `STAMP_HOLD` of fresh ones; a short turn turns nothing on; with
    /// shedding off they never go on.
    #[test]
    fn timestamps_are_on_only_while_a_backlog_is_suspected() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&socket);
        let mut off = Sojourn::new(fd, Duration::ZERO);
        off.end_turn(10_000, true, Instant::now());
        assert!(!off.stamping());

        let mut s = Sojourn::new(fd, 50 * MS);
        let t0 = Instant::now();
        s.end_turn(BACKLOG_MIN_TURN - 1, false, t0);
        assert!(!s.stamping(), "a short turn");
        s.end_turn(BACKLOG_MIN_TURN, false, t0);
        assert!(s.stamping());
        assert_eq!(socket_timestamps(fd), 1);
        let mut ctx = ctx_of(&socket, t0);
        // A datagram that waited half the delay keeps them on for another hold.
        s.judge_sojourn(25 * MS, t0 + STAMP_HOLD / 2, &mut ctx);
        s.end_turn(1, false, t0 + STAMP_HOLD);
        assert!(s.stamping());
        // Fresh ones only: off one hold after the last stale one.
        s.judge_sojourn(MS, t0 + STAMP_HOLD, &mut ctx);
        s.end_turn(1, false, t0 + STAMP_HOLD + STAMP_HOLD / 2);
        assert!(!s.stamping());
        assert_eq!(socket_timestamps(fd), 0);
        s.end_turn(1, true, t0 + 2 * STAMP_HOLD);
        assert!(s.stamping(), "a starved turn");
    }

    /// `SO_TIMESTAMPNS` of socket `fd`.
    /// A datagram context on `socket` whose turn started at `t0`.
    fn ctx_of(socket: &std::net::UdpSocket, t0: Instant) -> super::super::DatagramCtx {
        super::super::DatagramCtx {
            worker: 0,
            socket: 0,
            local: socket.local_addr().unwrap(),
            ready_at: t0,
            shed: false,
        }
    }

    fn socket_timestamps(fd: std::os::fd::RawFd) -> libc::c_int {
        let mut value: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `value` is a writable `c_int` of the size given.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_TIMESTAMPNS,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0);
        value
    }

    /// Control data holding the given messages (level, type, data), built with the CMSG
    /// macros, at byte `offset` of the returned vector.
    fn control(offset: usize, messages: &[(libc::c_int, libc::c_int, &[u8])]) -> Vec<u8> {
        let mut buf = [0u64; 16];
        // SAFETY: zero is a valid `msghdr`.
        let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
        hdr.msg_control = buf.as_mut_ptr().cast();
        hdr.msg_controllen = std::mem::size_of_val(&buf) as _;
        let mut used = 0;
        // SAFETY: the macros stay inside `buf` (128 bytes, enough for the tests' messages).
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&hdr);
            for (level, kind, data) in messages {
                (*cmsg).cmsg_level = *level;
                (*cmsg).cmsg_type = *kind;
                (*cmsg).cmsg_len = libc::CMSG_LEN(data.len() as u32) as _;
                std::ptr::copy_nonoverlapping(data.as_ptr(), libc::CMSG_DATA(cmsg), data.len());
                used += libc::CMSG_SPACE(data.len() as u32) as usize;
                cmsg = libc::CMSG_NXTHDR(&hdr, cmsg);
                if cmsg.is_null() {
                    break;
                }
            }
        }
        let bytes: Vec<u8> = buf.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let mut out = vec![0xee; offset];
        out.extend_from_slice(&bytes[..used]);
        out
    }

    fn timespec_bytes(secs: i64, nanos: i64) -> Vec<u8> {
        let ts = libc::timespec {
            tv_sec: secs,
            tv_nsec: nanos,
        };
        // SAFETY: a `timespec` is plain old data.
        unsafe {
            std::slice::from_raw_parts(
                (&ts as *const libc::timespec).cast::<u8>(),
                std::mem::size_of::<libc::timespec>(),
            )
        }
        .to_vec()
    }

    #[test]
    fn the_receive_time_is_read_from_its_control_message_at_any_alignment() {
        let ts = timespec_bytes(1_764_547_200, 123_456_789);
        let want = Duration::new(1_764_547_200, 123_456_789);
        for offset in [0, 1, 4, 44] {
            let c = control(offset, &[(libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS, &ts)]);
            assert_eq!(receive_time(&c[offset..]), Some(want), "offset {offset}");
        }
        assert_eq!(CONTROL_BYTES, 32);
        assert_eq!(receive_time(&[]), None);
        // Another message (of another level or type) is no timestamp.
        let other = control(0, &[(libc::IPPROTO_IP, libc::SCM_TIMESTAMPNS, &ts)]);
        assert_eq!(receive_time(&other), None);
        let other = control(0, &[(libc::SOL_SOCKET, libc::SCM_RIGHTS, &ts)]);
        assert_eq!(receive_time(&other), None);
        // Cut short: no timestamp, no read past the bytes given.
        let whole = control(0, &[(libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS, &ts)]);
        for len in 0..whole.len() {
            assert_eq!(receive_time(&whole[..len]), None, "{len} bytes");
        }
        // A message too short for a timespec, and an impossible time.
        let short = control(0, &[(libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS, &ts[..8])]);
        assert_eq!(receive_time(&short), None);
        let bad = timespec_bytes(1, 1_000_000_000);
        let bad = control(0, &[(libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS, &bad)]);
        assert_eq!(receive_time(&bad), None);
        let negative = timespec_bytes(-1, 0);
        let negative = control(0, &[(libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS, &negative)]);
        assert_eq!(receive_time(&negative), None);
        // Arbitrary bytes never panic.
        for seed in 0..2_000u32 {
            let bytes: Vec<u8> = (0..(seed % 40))
                .map(|i| (seed.wrapping_mul(2_654_435_761).rotate_left(i) >> 3) as u8)
                .collect();
            let _ = receive_time(&bytes);
        }
    }

    /// The kernel's own control message, read with `recvmsg`: the receive time of a datagram
    /// on a socket with timestamps on is this host's `CLOCK_REALTIME` when it arrived; with
    /// them off there is none.
    #[test]
    fn the_kernel_stamps_a_datagram_only_while_timestamps_are_on() {
        use std::os::fd::AsRawFd;
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let recv = |fd| {
            let mut payload = [0u8; 64];
            let mut ctl = ControlBuf([0; CONTROL_BYTES]);
            let mut iov = libc::iovec {
                iov_base: payload.as_mut_ptr().cast(),
                iov_len: payload.len(),
            };
            // SAFETY: zero is a valid `msghdr`; it points at live buffers of the sizes given.
            let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
            hdr.msg_iov = &mut iov;
            hdr.msg_iovlen = 1;
            hdr.msg_control = ctl.0.as_mut_ptr().cast();
            hdr.msg_controllen = CONTROL_BYTES as _;
            // SAFETY: as above; blocking, a datagram was sent before.
            let n = unsafe { libc::recvmsg(fd, &mut hdr, 0) };
            assert_eq!(n, 2);
            receive_time(&ctl.0[..hdr.msg_controllen as usize])
        };
        let fd = socket.as_raw_fd();
        sender.send_to(b"ab", addr).unwrap();
        assert_eq!(recv(fd), None);
        set_timestamps(fd, true).unwrap();
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        sender.send_to(b"cd", addr).unwrap();
        let at = recv(fd).expect("a receive timestamp");
        let after = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        // Generous: the kernel may stamp at reception or, just after timestamps went on, when
        // the datagram is read; both lie between the two readings (a clock step aside).
        assert!(at + Duration::from_secs(60) >= before && at <= after + Duration::from_secs(60));
        set_timestamps(fd, false).unwrap();
        sender.send_to(b"ef", addr).unwrap();
        assert_eq!(recv(fd), None);
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
}
