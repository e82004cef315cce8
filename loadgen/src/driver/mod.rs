//! Workers: one per `--threads`, each owning its sockets and its [`Recorder`]. A worker issues
//! requests from an [`OpSource`](crate::workload::OpSource) either as fast as its in-flight
//! window allows (closed loop) or on a fixed schedule (open loop, `--rate`), and measures each
//! reply from the request's *intended* send time, so a stalled sender shows up as latency
//! instead of hiding it (coordinated omission).
//!
//! Every loop is bounded: issuing stops at the deadline, at the request cap, when the source is
//! exhausted or when the stop flag is set; draining stops one timeout later.

pub mod mmsg;
pub mod tcp;
pub mod udp;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one worker does in one phase.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    pub target: SocketAddr,
    /// Sockets (UDP) or connections (TCP) this worker owns.
    pub conns: usize,
    /// In-flight requests per socket or connection (pipeline depth for HTTP).
    pub inflight: usize,
    /// Open-loop rate of this worker, requests per second; `None` is closed loop.
    pub rate: Option<f64>,
    /// Phase start: the origin of the schedule and of the timeline.
    pub start: Instant,
    /// No request is issued after this instant.
    pub deadline: Instant,
    /// No more than this many requests are issued.
    pub max_requests: u64,
    /// A request unanswered after this long counts as a timeout.
    pub timeout: Duration,
    /// Source addresses to bind sockets to, round-robin (UDP); empty binds the wildcard.
    pub sources: Vec<IpAddr>,
    /// Number of workers in the phase (peer `p` belongs to worker `p % workers` when the source
    /// keeps peer states; its connection is `(p / workers) % conns`).
    pub workers: usize,
    /// Index of this worker's first socket among all workers' (spreads sources evenly).
    pub first_socket: usize,
    /// Peers asked for per announce (BEP 15 `num_want`).
    pub peers_wanted: u32,
    /// HTTP: keep connections open across requests (false: one request per connection).
    pub keep_alive: bool,
    /// HTTP: the longest `Retry-After` honoured (a longer one is cut to this); zero ignores
    /// `Retry-After` (a failed connection is then reopened after a short fixed back-off).
    pub max_retry_after: Duration,
    /// HTTP over TLS: the client configuration and the name the server's certificate must
    /// carry. Each connection does one handshake and then carries its requests like a
    /// plaintext one (keep-alive, pipelining).
    pub tls: Option<(
        Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )>,
    /// Replies answered so far, published for the progress bar.
    pub progress: Arc<AtomicU64>,
    /// Set by the run to stop issuing early (Ctrl-C).
    pub stop: Arc<AtomicBool>,
}

/// When the next request may be issued.
#[derive(Clone, Debug)]
pub struct Schedule {
    start: Instant,
    /// Requests per second in open loop.
    rate: Option<f64>,
    issued: u64,
}

impl Schedule {
    pub fn new(start: Instant, rate: Option<f64>) -> Self {
        Schedule {
            start,
            rate: rate.filter(|r| r.is_finite() && *r > 0.0),
            issued: 0,
        }
    }

    /// Intended send time of request number `n` at `rate`, rounded to the nanosecond from the
    /// start (not accumulated, so no rounding drift).
    fn nth(&self, rate: f64, n: u64) -> Instant {
        let ns = (n as f64 * 1e9 / rate).round();
        self.start + Duration::from_nanos(ns.min(u64::MAX as f64) as u64)
    }

    /// The intended send time of the next request if it is due at `now`: at once in closed
    /// loop, at `start + issued * interval` in open loop.
    pub fn due(&self, now: Instant) -> Option<Instant> {
        match self.rate {
            None => Some(now),
            Some(rate) => {
                let at = self.nth(rate, self.issued);
                (at <= now).then_some(at)
            }
        }
    }

    /// Whether requests are still to be issued before `deadline`: in closed loop while `now`
    /// is before it; in open loop while the next request's intended time is, so every request
    /// scheduled inside the window is sent even if the worker fell behind.
    pub fn active(&self, now: Instant, deadline: Instant) -> bool {
        match self.rate {
            None => now < deadline,
            Some(rate) => self.nth(rate, self.issued) < deadline,
        }
    }

    pub fn issued(&mut self) {
        self.issued += 1;
    }

    pub fn count(&self) -> u64 {
        self.issued
    }

    /// How long the worker may sleep before the next request is due (at most `cap`).
    pub fn wait(&self, now: Instant, cap: Duration) -> Duration {
        match self.rate {
            None => cap,
            Some(rate) => self
                .nth(rate, self.issued)
                .saturating_duration_since(now)
                .min(cap),
        }
    }
}

/// How often a worker scans its in-flight requests for timeouts.
pub const TIMEOUT_SCAN: Duration = Duration::from_millis(5);
/// Longest single poll wait, so stop conditions are checked often.
pub const MAX_POLL_WAIT: Duration = Duration::from_millis(5);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_loop_schedule_is_fixed_rate_from_the_start() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, Some(1000.0));
        assert_eq!(s.due(t0), Some(t0));
        s.issued();
        assert_eq!(s.due(t0), None, "the second request is due 1 ms later");
        let t1 = t0 + Duration::from_millis(5);
        assert_eq!(s.due(t1), Some(t0 + Duration::from_millis(1)));
        // Behind schedule, each request keeps its own intended time.
        s.issued();
        assert_eq!(s.due(t1), Some(t0 + Duration::from_millis(2)));
        assert_eq!(s.wait(t0, Duration::from_secs(1)), Duration::from_millis(2));
        // Requests intended before the deadline are still owed after it.
        let deadline = t0 + Duration::from_millis(3);
        assert!(s.active(t0 + Duration::from_secs(9), deadline));
        s.issued();
        assert!(
            !s.active(t0, deadline),
            "the 4th request is intended at the deadline"
        );
    }

    #[test]
    fn open_loop_schedule_does_not_drift() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, Some(3.0));
        let deadline = t0 + Duration::from_secs(1);
        let mut n = 0;
        while s.active(t0, deadline) {
            s.issued();
            n += 1;
        }
        assert_eq!(
            n, 3,
            "requests at 0, 1/3 and 2/3 s; the 4th would be at the deadline"
        );
    }

    #[test]
    fn closed_loop_is_always_due() {
        let t0 = Instant::now();
        let s = Schedule::new(t0, None);
        let later = t0 + Duration::from_secs(3);
        assert_eq!(s.due(later), Some(later));
        assert_eq!(s.wait(later, MAX_POLL_WAIT), MAX_POLL_WAIT);
        assert!(s.active(t0, later));
        assert!(!s.active(later, later));
    }
}
