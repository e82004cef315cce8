//! Per-connection buffers and limits, independent of the I/O back-end.
//!
//! A [`ConnState`] holds what one TCP connection needs between readiness events: the input
//! bytes not yet consumed by the service (capped, so a request can never need more than the
//! configured head + body limits), the answers not yet sent (with a backpressure limit: above
//! it the back-end stops reading from the connection), and the time of the last traffic for the
//! idle timeout.
//!
//! A connection holds no buffer in the common case: the back-end (the epoll loop today) reads
//! into a per-worker scratch buffer behind whatever was stashed, the service answers into a
//! per-worker scratch output, and only what is left over (a partial request, requests held back
//! by the output limit, answers the socket did not take) is stashed here. Buffers are released
//! as soon as they are empty, so idle keep-alive connections cost no buffer memory.
//! [`ConnState::run_service`] serves stashed requests once the output has drained.

use std::time::{Duration, Instant};

use std::panic::AssertUnwindSafe;

use super::{ConnCtx, StreamStep, StreamWorker};

/// First allocation of the test helpers' input buffer.
#[cfg(test)]
const INITIAL_INPUT: usize = 4096;

/// A service call panicked. The runtime closes that connection and keeps the worker: a bug
/// in one service must not take down a worker and with it every connection the kernel routes
/// to the worker's listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ServicePanicked;

/// Calls [`StreamWorker::on_input`], containing a panic.
pub(crate) fn guarded_input(
    worker: &mut dyn StreamWorker,
    ctx: &ConnCtx,
    input: &[u8],
    out: &mut Vec<u8>,
) -> Result<StreamStep, ServicePanicked> {
    std::panic::catch_unwind(AssertUnwindSafe(|| worker.on_input(ctx, input, out)))
        .map_err(|_| ServicePanicked)
}

/// The key a source address is counted under for per-source limits: an IPv4 address (also
/// when IPv4-mapped), or the /64 prefix of an IPv6 address (one subscriber's usual
/// allocation, RFC 6177), as 128 bits.
pub fn source_key(ip: std::net::IpAddr) -> u128 {
    let v4 = |a: std::net::Ipv4Addr| u128::from(u32::from(a)) | (0xffff << 32);
    match ip {
        std::net::IpAddr::V4(a) => v4(a),
        std::net::IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(m) => v4(m),
            None => u128::from(a) & !(u128::from(u64::MAX)),
        },
    }
}

/// Limits of the connections of one listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnLimits {
    /// Most unconsumed input bytes held per connection. A service that consumes nothing from a
    /// full buffer gets its connection closed.
    pub max_input_bytes: usize,
    /// Unsent output above which the connection is not read from (backpressure).
    pub max_pending_output_bytes: usize,
    /// Open connections per worker; more are refused (closed at once, counted).
    pub max_connections: usize,
    /// A connection without traffic for this long is closed.
    pub idle_timeout: Duration,
    /// A request (head and body) must be complete within this long of its first byte, however
    /// steadily its bytes trickle in (RFC 9112 section 9.8 leaves this to the server; this is
    /// the slow-head / slow-body defence). Separate from `idle_timeout`, which runs between
    /// requests.
    pub request_timeout: Duration,
    /// Open connections per source address (IPv6: per /64) on the listener, counted across
    /// every worker (a shared fixed-size table, see [`super::sources::SourceCounts`]; workers
    /// accepting at the same instant may each let one more in); more from that source are
    /// refused. 0 means no per-source cap.
    pub max_connections_per_source: usize,
    /// The last `reserved_slots` of `max_connections` are kept for sources with no connection
    /// open, so that a probe from a new address gets in while another source holds the rest.
    pub reserved_slots: usize,
    /// Requests served per connection per event-loop turn; a connection with more waiting
    /// is served again in the next turn, after every other ready connection.
    pub max_requests_per_turn: usize,
    /// Answer bytes computed per connection per event-loop turn (checked before each answer is
    /// computed; one answer may exceed it).
    pub max_output_per_turn: usize,
    /// Kernel send buffer of each connection (`SO_SNDBUF`, set on the listener and inherited),
    /// bytes; 0 keeps the kernel's default and autotuning. Bounds what a client that does not
    /// read can pin in the kernel before the output limit applies.
    pub send_buffer_bytes: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_input_bytes: 64 * 1024,
            max_pending_output_bytes: 256 * 1024,
            max_connections: 10_000,
            idle_timeout: Duration::from_secs(300),
            request_timeout: Duration::from_secs(10),
            max_connections_per_source: 0,
            reserved_slots: 0,
            max_requests_per_turn: 16,
            max_output_per_turn: 64 * 1024,
            send_buffer_bytes: 0,
        }
    }
}

/// Buffers and flags of one connection.
#[derive(Debug)]
pub(crate) struct ConnState {
    /// Allocated input region; bytes `[..filled]` are unconsumed input.
    input: Vec<u8>,
    filled: usize,
    /// Output; bytes `[sent..]` are pending.
    output: Vec<u8>,
    sent: usize,
    /// New input arrived (or output drained) since the service last consumed nothing.
    input_dirty: bool,
    /// The peer finished sending (read returned 0).
    pub read_closed: bool,
    /// The service asked to close: flush the output, then close.
    closing: bool,
    last_activity: Instant,
    /// When the first byte of the incomplete request now buffered arrived; `None` when no
    /// incomplete request is buffered.
    partial_since: Option<Instant>,
    /// A read has delivered bytes from this connection at least once.
    read_any: bool,
}

impl ConnState {
    pub fn new(now: Instant) -> Self {
        ConnState {
            input: Vec::new(),
            filled: 0,
            output: Vec::new(),
            sent: 0,
            input_dirty: false,
            read_closed: false,
            closing: false,
            last_activity: now,
            partial_since: None,
            read_any: false,
        }
    }

    /// Where to read into, growing the buffer up to `max_input`; `None` when the buffer is at
    /// its cap (the service wants more bytes than a request may have).
    #[cfg(test)]
    pub fn read_buf(&mut self, max_input: usize) -> Option<&mut [u8]> {
        if self.filled >= max_input {
            return None;
        }
        if self.filled == self.input.len() {
            let grown = (self.input.len() * 2).max(INITIAL_INPUT).min(max_input);
            self.input.resize(grown, 0);
        }
        self.input.get_mut(self.filled..)
    }

    /// `n` bytes were read into the slice returned by [`ConnState::read_buf`].
    #[cfg(test)]
    pub fn on_read(&mut self, n: usize, now: Instant) {
        self.filled = (self.filled + n).min(self.input.len());
        self.input_dirty = true;
        self.last_activity = now;
        self.read_any = true;
    }

    pub fn pending_output(&self) -> &[u8] {
        self.output.get(self.sent..).unwrap_or(&[])
    }

    pub fn has_output(&self) -> bool {
        self.sent < self.output.len()
    }

    /// `n` bytes of [`ConnState::pending_output`] were written.
    pub fn on_written(&mut self, n: usize, now: Instant) {
        self.sent = (self.sent + n).min(self.output.len());
        self.last_activity = now;
        if self.sent == self.output.len() {
            self.output = Vec::new();
            self.sent = 0;
        }
    }

    /// True while pending output is at or over the limit: do not read, do not serve.
    pub fn output_blocked(&self, limits: &ConnLimits) -> bool {
        self.output.len() - self.sent >= limits.max_pending_output_bytes
    }

    pub fn closing(&self) -> bool {
        self.closing
    }

    /// The service has input it has not yet looked at, and room to answer.
    pub fn wants_service(&self, limits: &ConnLimits) -> bool {
        self.filled > 0 && self.input_dirty && !self.closing && !self.output_blocked(limits)
    }

    /// Unconsumed input bytes.
    #[cfg(test)]
    pub fn buffered_input(&self) -> usize {
        self.filled
    }

    /// Lets the service consume input and append answers. Returns the bytes consumed, or
    /// `Err` when the service panicked (the connection must then be closed).
    pub fn run_service(
        &mut self,
        worker: &mut dyn StreamWorker,
        ctx: &ConnCtx,
    ) -> Result<usize, ServicePanicked> {
        // Keep pending output at the front so the service sees one contiguous buffer whose
        // length is the pending amount (what it compares with `ctx.output_limit`).
        if self.sent > 0 {
            self.output.drain(..self.sent);
            self.sent = 0;
        }
        let input = self.input.get(..self.filled).unwrap_or(&[]);
        let step = guarded_input(worker, ctx, input, &mut self.output)?;
        let consumed = step.consumed.min(self.filled);
        if consumed > 0 {
            self.input.copy_within(consumed..self.filled, 0);
            self.filled -= consumed;
            if self.filled == 0 {
                self.input = Vec::new();
            }
            // What is left is re-examined in the next call; its deadline starts then.
            self.partial_since = None;
        } else {
            // Incomplete request: wait for more bytes.
            self.input_dirty = false;
            self.partial_since.get_or_insert(Instant::now());
        }
        if step.close {
            self.closing = true;
        }
        Ok(consumed)
    }

    /// Nothing buffered in either direction: the next bytes can go through the worker's
    /// scratch buffers.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.filled == 0 && !self.has_output() && !self.closing
    }

    /// Input bytes kept from earlier reads (a partial request, or requests held back by the
    /// output limit).
    pub fn stashed_input(&self) -> &[u8] {
        self.input.get(..self.filled).unwrap_or(&[])
    }

    /// When the incomplete request now buffered started, if any.
    pub fn partial_since(&self) -> Option<Instant> {
        self.partial_since
    }

    /// How long the incomplete request now buffered has been arriving (zero when none).
    pub fn partial_for(&self, now: Instant) -> Duration {
        self.partial_since
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t))
    }

    /// Since when this connection has made no progress: the start of its incomplete request,
    /// else its last traffic. The oldest is evicted first from a full listener.
    pub fn stalled_since(&self) -> Instant {
        self.partial_since
            .map_or(self.last_activity, |t| t.min(self.last_activity))
    }

    /// The stashed input was copied out and is being served, with new bytes just read: forget
    /// it.
    pub fn clear_input(&mut self, now: Instant) {
        self.input = Vec::new();
        self.filled = 0;
        self.input_dirty = false;
        self.partial_since = None;
        self.last_activity = now;
        self.read_any = true;
    }

    /// Whether this connection was admitted less than `grace` before `now` and nothing has
    /// been read from it yet: it has had no chance to send its first request, so a full
    /// listener does not evict it for a newcomer (which is refused instead).
    pub fn unread_within(&self, grace: Duration, now: Instant) -> bool {
        !self.read_any && now.saturating_duration_since(self.last_activity) < grace
    }

    /// Keeps input the service did not consume from a scratch read. `dirty` says whether the
    /// service may be able to consume more of it without new bytes (it stopped at the output
    /// limit rather than at an incomplete request).
    /// `started` is when the first byte of an incomplete leftover arrived (its deadline runs
    /// from then).
    pub fn stash_input(&mut self, leftover: &[u8], dirty: bool, started: Instant, now: Instant) {
        self.input.truncate(self.filled);
        self.input.extend_from_slice(leftover);
        self.filled = self.input.len();
        self.input_dirty = dirty && self.filled > 0;
        self.partial_since = (!dirty && self.filled > 0).then_some(started);
        self.last_activity = now;
    }

    /// Keeps answer bytes the socket did not take.
    pub fn stash_output(&mut self, rest: &[u8]) {
        self.output.extend_from_slice(rest);
    }

    /// The service asked to close after its answers.
    pub fn set_closing(&mut self) {
        self.closing = true;
    }

    /// Re-arms the service after the output drained below its limit, so requests already
    /// buffered are served without waiting for new bytes.
    pub fn mark_dirty(&mut self) {
        if self.filled > 0 {
            self.input_dirty = true;
        }
    }

    pub fn idle_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_activity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Consumes whole lines; each line `n` is answered with `n` bytes of `x` and a newline.
    struct Lines;

    impl StreamWorker for Lines {
        fn on_input(&mut self, ctx: &ConnCtx, input: &[u8], out: &mut Vec<u8>) -> StreamStep {
            let mut consumed = 0;
            while out.len() < ctx.output_limit {
                let rest = &input[consumed..];
                let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                    break;
                };
                let n: usize = std::str::from_utf8(&rest[..nl])
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(0);
                out.extend(std::iter::repeat(b'x').take(n));
                out.push(b'\n');
                consumed += nl + 1;
            }
            StreamStep {
                consumed,
                close: false,
            }
        }
    }

    fn ctx(limit: usize) -> ConnCtx {
        ConnCtx {
            worker: 0,
            listener: 0,
            peer: "127.0.0.1:1".parse().unwrap(),
            local: "127.0.0.1:2".parse().unwrap(),
            output_limit: limit,
            client_cert: None,
            max_requests: usize::MAX,
            ready_at: Instant::now(),
        }
    }

    fn feed(state: &mut ConnState, bytes: &[u8], max: usize) {
        let now = Instant::now();
        let mut rest = bytes;
        while !rest.is_empty() {
            let buf = state.read_buf(max).expect("room");
            let n = buf.len().min(rest.len());
            buf[..n].copy_from_slice(&rest[..n]);
            state.on_read(n, now);
            rest = &rest[n..];
        }
    }

    #[test]
    fn source_keys_group_ipv6_by_64_and_map_ipv4() {
        let k = |s: &str| source_key(s.parse().unwrap());
        assert_eq!(k("2001:db8:1:2::1"), k("2001:db8:1:2:ffff::9"));
        assert_ne!(k("2001:db8:1:2::1"), k("2001:db8:1:3::1"));
        assert_eq!(k("127.0.0.2"), k("::ffff:127.0.0.2"));
        assert_ne!(k("127.0.0.2"), k("127.0.0.3"));
    }

    #[test]
    fn a_connection_is_unread_until_its_first_bytes_or_the_grace_ends() {
        let t0 = Instant::now();
        let grace = Duration::from_millis(250);
        let mut s = ConnState::new(t0);
        assert!(s.unread_within(grace, t0));
        assert!(s.unread_within(grace, t0 + Duration::from_millis(249)));
        assert!(!s.unread_within(grace, t0 + grace));
        s.clear_input(t0 + Duration::from_millis(1));
        assert!(!s.unread_within(grace, t0 + Duration::from_millis(2)));
        let mut s = ConnState::new(t0);
        feed(&mut s, b"GET", 4096);
        assert!(!s.unread_within(grace, t0));
    }

    #[test]
    fn an_incomplete_request_keeps_its_first_byte_time() {
        let t0 = Instant::now();
        let mut s = ConnState::new(t0);
        s.stash_input(b"1", false, t0, t0);
        assert_eq!(s.partial_since(), Some(t0));
        let later = t0 + Duration::from_secs(5);
        // More bytes of the same request do not restart its deadline.
        assert_eq!(s.run_service(&mut Lines, &ctx(1000)).unwrap(), 0);
        assert_eq!(s.partial_since(), Some(t0));
        assert_eq!(s.partial_for(later), Duration::from_secs(5));
        assert!(s.stalled_since() <= t0);
        feed(&mut s, b"\n", 100);
        assert_eq!(s.run_service(&mut Lines, &ctx(1000)).unwrap(), 2);
        assert_eq!(s.partial_since(), None, "complete: no deadline");
        // Held-back whole requests are not a slow client.
        s.stash_input(b"2\n", true, t0, t0);
        assert_eq!(s.partial_since(), None);
    }

    #[test]
    fn input_grows_up_to_the_cap_and_no_further() {
        let mut s = ConnState::new(Instant::now());
        feed(&mut s, &[b'a'; 10_000], 10_000);
        assert_eq!(s.buffered_input(), 10_000);
        assert!(s.read_buf(10_000).is_none());
        assert!(s.input.len() <= 10_000);
    }

    #[test]
    fn partial_request_waits_for_more_bytes() {
        let limits = ConnLimits::default();
        let mut s = ConnState::new(Instant::now());
        feed(&mut s, b"12", 100);
        assert!(s.wants_service(&limits));
        assert_eq!(s.run_service(&mut Lines, &ctx(1000)).unwrap(), 0);
        assert!(!s.wants_service(&limits), "no new bytes: do not call again");
        feed(&mut s, b"\n3\n4", 100);
        assert!(s.wants_service(&limits));
        assert_eq!(s.run_service(&mut Lines, &ctx(1000)).unwrap(), 5);
        assert_eq!(s.pending_output(), b"xxxxxxxxxxxx\nxxx\n");
        assert_eq!(s.buffered_input(), 1, "the partial `4` stays");
    }

    #[test]
    fn service_stops_at_the_output_limit_and_resumes_after_draining() {
        let limits = ConnLimits {
            max_pending_output_bytes: 100,
            ..ConnLimits::default()
        };
        let mut s = ConnState::new(Instant::now());
        feed(&mut s, b"60\n60\n60\n", 100);
        let c = ctx(limits.max_pending_output_bytes);
        assert_eq!(
            s.run_service(&mut Lines, &c).unwrap(),
            6,
            "two answers reach the limit"
        );
        assert!(s.output_blocked(&limits));
        assert!(!s.wants_service(&limits));
        let pending = s.pending_output().len();
        s.on_written(pending - 10, Instant::now());
        assert!(!s.output_blocked(&limits));
        assert!(s.wants_service(&limits));
        assert_eq!(s.run_service(&mut Lines, &c).unwrap(), 3);
        assert_eq!(s.pending_output().len(), 10 + 61);
        assert_eq!(s.buffered_input(), 0);
    }

    #[test]
    fn written_output_is_released() {
        let mut s = ConnState::new(Instant::now());
        feed(&mut s, b"200000\n", 100);
        s.run_service(&mut Lines, &ctx(usize::MAX)).unwrap();
        assert!(s.has_output());
        let n = s.pending_output().len();
        s.on_written(n, Instant::now());
        assert!(!s.has_output());
        assert_eq!(s.output.capacity(), 0);
        assert!(s.is_empty());
    }

    #[test]
    fn stashed_leftovers_are_served_then_released() {
        let limits = ConnLimits::default();
        let mut s = ConnState::new(Instant::now());
        assert!(s.is_empty());
        // A scratch read left half a request behind.
        s.stash_input(b"1", false, Instant::now(), Instant::now());
        assert!(!s.is_empty());
        assert!(!s.wants_service(&limits), "incomplete: wait for bytes");
        feed(&mut s, b"0\n", 100);
        assert_eq!(s.run_service(&mut Lines, &ctx(1000)).unwrap(), 3);
        assert_eq!(s.pending_output(), b"xxxxxxxxxx\n");
        assert_eq!(s.input.capacity(), 0, "empty input buffer is released");
        let n = s.pending_output().len();
        s.on_written(n, Instant::now());
        assert!(s.is_empty());
        // Whole requests held back by the output limit are served without new bytes.
        s.stash_input(b"2\n", true, Instant::now(), Instant::now());
        assert!(s.wants_service(&limits));
    }
}
