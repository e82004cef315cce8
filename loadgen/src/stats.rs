//! Per-worker measurement: latency histograms (overall and per request type), outcome
//! counters, errors by kind and a throughput timeline. Each worker owns one [`Recorder`]; the
//! run merges them when the workers finish, so recording takes no lock.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::workload::{OpKind, ALL_OPS, N_OPS};

/// Why a request did not succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    /// PPSTP answer with a non-zero `error_code` (RFC 7846 §6.2).
    PpstpCode(u8),
    /// HTTP status other than 200 without a readable protocol error.
    HttpStatus(u16),
    /// BitTorrent HTTP reply with `failure reason`.
    BtFailure,
    /// BEP 15 error reply (action 3).
    BtUdpError,
    /// A reply the generator could not parse.
    Malformed,
    /// A BEP 15 reply shorter than its fixed header (matched to its request).
    ShortReply,
    /// No reply within `--timeout`.
    Timeout,
    /// The server closed a connection with requests outstanding.
    ConnectionClosed,
    /// A TCP connect failed.
    ConnectFailed,
    /// Another socket error.
    Io,
}

impl ErrorKind {
    /// Stable label used in reports.
    pub fn label(&self) -> String {
        match self {
            ErrorKind::PpstpCode(c) => format!("ppstp_error_{c:02}"),
            ErrorKind::HttpStatus(s) => format!("http_{s}"),
            ErrorKind::BtFailure => "bt_failure_reason".into(),
            ErrorKind::BtUdpError => "bt_udp_error".into(),
            ErrorKind::Malformed => "malformed_reply".into(),
            ErrorKind::ShortReply => "short_reply".into(),
            ErrorKind::Timeout => "timeout".into(),
            ErrorKind::ConnectionClosed => "connection_closed".into(),
            ErrorKind::ConnectFailed => "connect_failed".into(),
            ErrorKind::Io => "io".into(),
        }
    }
}

/// The classification of one reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Err(ErrorKind),
}

/// Latencies are recorded in nanoseconds, 3 significant digits, up to this bound.
const MAX_LATENCY_NS: u64 = 120_000_000_000;

fn new_histogram() -> Histogram<u64> {
    // Bounds are constants that hdrhistogram accepts (low 1, high >= 2, 3 digits).
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("constant histogram bounds are valid")
}

/// One worker's measurements for one phase.
pub struct Recorder {
    pub start: Instant,
    pub bucket: Duration,
    pub all: Histogram<u64>,
    pub per_op: Vec<Histogram<u64>>,
    pub ok: [u64; N_OPS],
    pub failed: [u64; N_OPS],
    pub sent: [u64; N_OPS],
    pub errors: BTreeMap<ErrorKind, u64>,
    /// Requests still unanswered when the phase ended (neither answered nor timed out).
    pub unfinished: u64,
    /// Requests due on the schedule but not sent because their connection was waiting out
    /// the server's `Retry-After` (HTTP), as a client told to retry later does.
    pub held_back: u64,
    /// Replies per timeline bucket (answered, ok or not).
    pub timeline: Vec<u64>,
    /// Highest number of timeline buckets kept (bounds memory whatever the duration).
    pub max_buckets: usize,
    /// Replies that carried a peer list, and the peers they listed in total.
    pub peer_lists: u64,
    pub peers_listed: u64,
}

impl Recorder {
    pub fn new(start: Instant, bucket: Duration, max_buckets: usize) -> Self {
        Recorder {
            start,
            bucket,
            all: new_histogram(),
            per_op: (0..N_OPS).map(|_| new_histogram()).collect(),
            ok: [0; N_OPS],
            failed: [0; N_OPS],
            sent: [0; N_OPS],
            errors: BTreeMap::new(),
            unfinished: 0,
            held_back: 0,
            timeline: Vec::new(),
            max_buckets,
            peer_lists: 0,
            peers_listed: 0,
        }
    }

    pub fn on_sent(&mut self, kind: OpKind) {
        self.sent[kind.index()] += 1;
    }

    /// Records an answered request. `intended` is when it should have been sent (open loop) or
    /// was sent (closed loop), so a stalled sender shows up as latency.
    pub fn on_reply(&mut self, kind: OpKind, intended: Instant, now: Instant, outcome: Outcome) {
        let ns = now.saturating_duration_since(intended).as_nanos();
        let ns = (ns.min(MAX_LATENCY_NS as u128) as u64).max(1);
        self.all.saturating_record(ns);
        if let Some(h) = self.per_op.get_mut(kind.index()) {
            h.saturating_record(ns);
        }
        match outcome {
            Outcome::Ok => self.ok[kind.index()] += 1,
            Outcome::Err(e) => {
                self.failed[kind.index()] += 1;
                *self.errors.entry(e).or_insert(0) += 1;
            }
        }
        let b = (now.saturating_duration_since(self.start).as_nanos()
            / self.bucket.as_nanos().max(1)) as usize;
        if b < self.max_buckets {
            if self.timeline.len() <= b {
                self.timeline.resize(b + 1, 0);
            }
            self.timeline[b] += 1;
        }
    }

    /// Records a request that got no answer (timeout or lost connection).
    pub fn on_failure(&mut self, kind: OpKind, e: ErrorKind) {
        self.failed[kind.index()] += 1;
        *self.errors.entry(e).or_insert(0) += 1;
    }

    /// Records a successful reply's peer list of `n` peers.
    pub fn on_peer_list(&mut self, n: usize) {
        self.peer_lists += 1;
        self.peers_listed += n as u64;
    }

    /// Records an error that belongs to no request (a failed connect, a stray reply).
    pub fn on_error(&mut self, e: ErrorKind) {
        *self.errors.entry(e).or_insert(0) += 1;
    }

    pub fn replies(&self) -> u64 {
        self.all.len()
    }

    pub fn total_ok(&self) -> u64 {
        self.ok.iter().sum()
    }

    pub fn total_sent(&self) -> u64 {
        self.sent.iter().sum()
    }

    /// Adds another worker's measurements of the same phase.
    pub fn merge(&mut self, other: &Recorder) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.all.add(&other.all);
        for (a, b) in self.per_op.iter_mut().zip(&other.per_op) {
            let _ = a.add(b);
        }
        for i in 0..N_OPS {
            self.ok[i] += other.ok[i];
            self.failed[i] += other.failed[i];
            self.sent[i] += other.sent[i];
        }
        for (k, v) in &other.errors {
            *self.errors.entry(*k).or_insert(0) += v;
        }
        self.unfinished += other.unfinished;
        self.held_back += other.held_back;
        self.peer_lists += other.peer_lists;
        self.peers_listed += other.peers_listed;
        if self.timeline.len() < other.timeline.len() {
            self.timeline.resize(other.timeline.len(), 0);
        }
        for (a, b) in self.timeline.iter_mut().zip(&other.timeline) {
            *a += b;
        }
    }
}

/// Latency summary in microseconds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub min_us: f64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        let us = |ns: u64| ns as f64 / 1000.0;
        if h.is_empty() {
            return Percentiles {
                count: 0,
                min_us: 0.0,
                mean_us: 0.0,
                p50_us: 0.0,
                p90_us: 0.0,
                p99_us: 0.0,
                p999_us: 0.0,
                max_us: 0.0,
            };
        }
        Percentiles {
            count: h.len(),
            min_us: us(h.min()),
            mean_us: h.mean() / 1000.0,
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        }
    }
}

/// Per-type counters for the report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OpSummary {
    pub sent: u64,
    pub ok: u64,
    pub failed: u64,
    pub latency: Percentiles,
}

/// Per-type summaries for every kind that was sent.
pub fn op_summaries(r: &Recorder) -> BTreeMap<String, OpSummary> {
    let mut out = BTreeMap::new();
    for k in ALL_OPS {
        let i = k.index();
        if r.sent[i] == 0 && r.ok[i] == 0 && r.failed[i] == 0 {
            continue;
        }
        out.insert(
            k.name().to_string(),
            OpSummary {
                sent: r.sent[i],
                ok: r.ok[i],
                failed: r.failed[i],
                latency: Percentiles::of(&r.per_op[i]),
            },
        );
    }
    out
}

/// Writes `h` in the HdrHistogram percentile-distribution text format (`.hgrm`), values in
/// milliseconds, so the usual plotters of that format read it.
pub fn write_hgrm<W: std::io::Write>(h: &Histogram<u64>, mut w: W) -> std::io::Result<()> {
    const SCALE: f64 = 1_000_000.0; // ns -> ms
    writeln!(
        w,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    )?;
    if !h.is_empty() {
        for v in h.iter_quantiles(5) {
            let q = v.quantile_iterated_to();
            let value = v.value_iterated_to() as f64 / SCALE;
            if q < 1.0 {
                writeln!(
                    w,
                    "{:12.3} {:2.12} {:10} {:14.2}",
                    value,
                    q,
                    v.count_since_last_iteration(),
                    1.0 / (1.0 - q)
                )?;
            } else {
                writeln!(
                    w,
                    "{:12.3} {:2.12} {:10}",
                    value,
                    q,
                    v.count_since_last_iteration()
                )?;
            }
        }
    }
    let (mean, sd, max) = if h.is_empty() {
        (0.0, 0.0, 0.0)
    } else {
        (h.mean() / SCALE, h.stdev() / SCALE, h.max() as f64 / SCALE)
    };
    writeln!(w, "#[Mean    = {mean:12.3}, StdDeviation   = {sd:12.3}]")?;
    writeln!(
        w,
        "#[Max     = {max:12.3}, Total count    = {:12}]",
        h.len()
    )?;
    writeln!(
        w,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        h.distinct_values()
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_track_recorded_latencies() {
        let t0 = Instant::now();
        let mut r = Recorder::new(t0, Duration::from_millis(100), 100);
        // 1..=1000 microseconds, one each.
        for i in 1..=1000u64 {
            r.on_sent(OpKind::Find);
            r.on_reply(OpKind::Find, t0, t0 + Duration::from_micros(i), Outcome::Ok);
        }
        let p = Percentiles::of(&r.all);
        assert_eq!(p.count, 1000);
        assert!((p.p50_us - 500.0).abs() <= 1.0, "p50 {}", p.p50_us);
        assert!((p.p90_us - 900.0).abs() <= 1.0, "p90 {}", p.p90_us);
        assert!((p.p99_us - 990.0).abs() <= 1.0, "p99 {}", p.p99_us);
        assert!((p.max_us - 1000.0).abs() <= 1.0, "max {}", p.max_us);
        assert!((p.mean_us - 500.5).abs() <= 1.0, "mean {}", p.mean_us);
        let ops = op_summaries(&r);
        assert_eq!(ops.len(), 1);
        assert_eq!(ops["find"].ok, 1000);
        // All replies landed within the first 1 ms, so in bucket 0.
        assert_eq!(r.timeline, vec![1000]);
    }

    #[test]
    fn merge_adds_counts_errors_and_timelines() {
        let t0 = Instant::now();
        let mut a = Recorder::new(t0, Duration::from_millis(10), 100);
        let mut b = Recorder::new(t0, Duration::from_millis(10), 100);
        a.on_reply(
            OpKind::Announce,
            t0,
            t0 + Duration::from_millis(1),
            Outcome::Ok,
        );
        b.on_reply(
            OpKind::Announce,
            t0,
            t0 + Duration::from_millis(25),
            Outcome::Err(ErrorKind::BtUdpError),
        );
        b.on_failure(OpKind::Scrape, ErrorKind::Timeout);
        a.merge(&b);
        assert_eq!(a.replies(), 2);
        assert_eq!(a.total_ok(), 1);
        assert_eq!(a.failed[OpKind::Announce.index()], 1);
        assert_eq!(a.failed[OpKind::Scrape.index()], 1);
        assert_eq!(a.errors[&ErrorKind::Timeout], 1);
        assert_eq!(a.errors[&ErrorKind::BtUdpError], 1);
        assert_eq!(a.timeline, vec![1, 0, 1]);
        // Three significant digits: within 0.1% of 25 ms.
        let max = Percentiles::of(&a.all).max_us;
        assert!((max - 25_000.0).abs() <= 25.0, "max {max}");
    }

    #[test]
    fn timeline_is_bounded() {
        let t0 = Instant::now();
        let mut r = Recorder::new(t0, Duration::from_millis(1), 5);
        r.on_reply(
            OpKind::Find,
            t0,
            t0 + Duration::from_secs(3600),
            Outcome::Ok,
        );
        assert!(
            r.timeline.is_empty(),
            "a reply past the last bucket is not kept"
        );
        assert_eq!(r.replies(), 1);
    }

    #[test]
    fn hgrm_lists_percentiles_and_footer() {
        let mut h = new_histogram();
        for i in 1..=100u64 {
            h.record(i * 1_000_000).unwrap(); // 1..100 ms
        }
        let mut out = Vec::new();
        write_hgrm(&h, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("       Value"));
        assert!(text.contains("#[Max     =      100."));
        assert!(text.contains("Total count    =          100]"));
        let last_row = text
            .lines()
            .rfind(|l| !l.starts_with('#') && !l.trim().is_empty())
            .unwrap();
        assert!(last_row.contains("1.000000000000"), "{last_row}");
        assert!(ErrorKind::PpstpCode(3).label() == "ppstp_error_03");
    }
}
