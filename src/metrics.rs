//! Counters of the tracker and their Prometheus text exposition (format 0.0.4).
//!
//! The hot path takes no lock and shares no cache line: every worker owns one cache-padded
//! [`WorkerMetrics`] block of fixed arrays of atomics (indexed by request type, error code and
//! HTTP status), writes it with plain relaxed load + store (it is the only writer), and the
//! admin scrape sums the blocks. The exposition is a small writer in this file rather than
//! `prometheus-client`: that crate's label families look metrics up behind a lock, and its
//! registry has no notion of per-worker blocks summed at scrape time.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crossbeam::utils::CachePadded;

use crate::engine::{ErrorCode, ExpiryReport, RequestKind, TableCounts};
use crate::runtime::RuntimeStats;

/// Metric label of each request type, indexed by [`request_index`]; the last entry counts
/// requests that could not be decoded (their type is unknown).
pub const REQUEST_TYPES: [&str; 10] = [
    "connect",
    "find",
    "stat_report",
    "join",
    "leave",
    "disconnect",
    "keepalive",
    "join_chunk",
    "stat_query",
    "undecoded",
];

/// Index in [`REQUEST_TYPES`] of requests that failed to decode.
pub const UNDECODED: usize = REQUEST_TYPES.len() - 1;

/// HTTP statuses answered for faults below the PPSTP layer (framing, method, media type).
pub const HTTP_FAULT_STATUSES: [u16; 8] = [400, 404, 405, 411, 413, 415, 431, 500];

/// Outcome labels of the BitTorrent UDP front-end, indexed by `bt_udp::Outcome::index`.
pub const BT_UDP_OUTCOMES: [&str; 13] = crate::protocol::bt_udp::Outcome::LABELS;

/// Outcome labels of the BitTorrent HTTP front-end, indexed by `bt_http::HttpOutcome::index`
/// (its last entry counts the HTTP-level faults answered before it).
pub const BT_HTTP_OUTCOMES: [&str; 10] = crate::protocol::bt_http::HttpOutcome::LABELS;

/// Front-ends whose requests can be shed, indexed by [`ShedFrontEnd`].
pub const SHED_FRONT_ENDS: [&str; 3] = ["ppstp", "bt_http", "bt_udp"];

/// A front-end that sheds requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShedFrontEnd {
    Ppstp,
    BtHttp,
    BtUdp,
}

impl ShedFrontEnd {
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// Why a request was answered with the overload error (or, rate-limited BitTorrent UDP,
/// dropped) instead of being served, indexed by [`Shed`].
pub const SHED_REASONS: [&str; 2] = ["rate_limited", "overloaded"];

/// Why a request was shed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shed {
    /// Its source is over `server.rate_limit`.
    RateLimited,
    /// It waited in its worker longer than `server.shed_after_ms`.
    Overloaded,
}

impl Shed {
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// Upper bounds of the latency histogram buckets, in microseconds (Prometheus `le` labels
/// are written in seconds); a last, implicit `+Inf` bucket catches the rest.
pub const LATENCY_BUCKETS_US: [u64; 16] = [
    1, 2, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 1_000_000,
];

/// The latency series: (protocol, request type). PPSTP series are indexed like
/// [`REQUEST_TYPES`]; then the BitTorrent UDP and HTTP series ([`latency_series_bt_udp`],
/// [`latency_series_bt_http`]).
pub const LATENCY_SERIES: [(&str, &str); 17] = [
    ("ppstp", "connect"),
    ("ppstp", "find"),
    ("ppstp", "stat_report"),
    ("ppstp", "join"),
    ("ppstp", "leave"),
    ("ppstp", "disconnect"),
    ("ppstp", "keepalive"),
    ("ppstp", "join_chunk"),
    ("ppstp", "stat_query"),
    ("ppstp", "undecoded"),
    ("bt_udp", "connect"),
    ("bt_udp", "announce"),
    ("bt_udp", "scrape"),
    ("bt_udp", "error"),
    ("bt_http", "announce"),
    ("bt_http", "scrape"),
    ("bt_http", "error"),
];

/// `a == b`, usable in constants.
const fn same(a: &str, b: &str) -> bool {
    crate::const_bytes_eq(a.as_bytes(), b.as_bytes())
}

/// Latency series of each BitTorrent UDP outcome label, computed once at compile time so that
/// a datagram finds its series by index, not by comparing names.
const BT_UDP_LATENCY: [usize; BT_UDP_OUTCOMES.len()] = {
    let mut table = [13; BT_UDP_OUTCOMES.len()];
    let mut i = 0;
    while i < table.len() {
        let label = BT_UDP_OUTCOMES[i];
        table[i] = if same(label, "connect") {
            10
        } else if same(label, "announce") {
            11
        } else if same(label, "scrape") {
            12
        } else {
            13
        };
        i += 1;
    }
    table
};

/// Latency series of each BitTorrent HTTP outcome label, as [`BT_UDP_LATENCY`].
const BT_HTTP_LATENCY: [usize; BT_HTTP_OUTCOMES.len()] = {
    let mut table = [16; BT_HTTP_OUTCOMES.len()];
    let mut i = 0;
    while i < table.len() {
        let label = BT_HTTP_OUTCOMES[i];
        table[i] = if same(label, "announce") {
            14
        } else if same(label, "scrape") || same(label, "full_scrape") {
            15
        } else {
            16
        };
        i += 1;
    }
    table
};

/// Latency series of a BitTorrent UDP outcome (`bt_udp::Outcome::index`).
#[inline]
pub fn latency_series_bt_udp(outcome: usize) -> usize {
    BT_UDP_LATENCY.get(outcome).copied().unwrap_or(13)
}

/// Latency series of a BitTorrent HTTP outcome (`bt_http::HttpOutcome::index`).
#[inline]
pub fn latency_series_bt_http(outcome: usize) -> usize {
    BT_HTTP_LATENCY.get(outcome).copied().unwrap_or(16)
}

/// One worker's latency histogram of one series: counts per bucket (not cumulative; the
/// scrape accumulates) and the sum in nanoseconds.
#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    sum_ns: AtomicU64,
}

impl Histogram {
    #[inline]
    fn record(&self, latency: Latency, n: u64) {
        if let Some(b) = self.buckets.get(latency.bucket) {
            add(b, n);
        }
        add(&self.sum_ns, latency.ns.saturating_mul(n));
    }
}

/// A latency in nanoseconds with its histogram bucket ([`LATENCY_BUCKETS_US`]) found once, so
/// that requests that waited the same time (the datagrams of one batch) record it at the cost
/// of two counter additions each ([`WorkerMetrics::latency_of`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Latency {
    bucket: usize,
    ns: u64,
}

impl Latency {
    /// The latency `elapsed` (saturating at `u64::MAX` nanoseconds).
    #[inline]
    pub fn new(elapsed: Duration) -> Self {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        // Sixteen bounds: a short linear scan beats a binary search here.
        let bucket = LATENCY_BUCKETS_US
            .iter()
            .position(|&b| ns <= b * 1000)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        Latency { bucket, ns }
    }
}

/// Queue depth gauges each worker sets ([`WorkerMetrics::queue_depth`]).
pub const WORKER_QUEUES: [&str; 1] = ["bt_udp_deferred"];

/// Index in [`WORKER_QUEUES`] of the BitTorrent UDP datagrams deferred until an overlay
/// answer.
pub const QUEUE_BT_UDP_DEFERRED: usize = 0;

/// Error codes 0..=6 (RFC 7846 §6.2); 0 is never counted as an error.
const ERROR_CODES: usize = 7;

/// Index of a request type in [`REQUEST_TYPES`].
pub fn request_index(kind: &RequestKind) -> usize {
    match kind {
        RequestKind::Connect { .. } => 0,
        RequestKind::Find { .. } => 1,
        RequestKind::StatReport { .. } => 2,
        // An announce (BitTorrent front-ends, counted under their own labels) is a join.
        RequestKind::Join { .. } | RequestKind::Announce { .. } => 3,
        RequestKind::Leave { .. } => 4,
        RequestKind::Disconnect { .. } => 5,
        RequestKind::Keepalive => 6,
        RequestKind::JoinChunk { .. } => 7,
        RequestKind::StatQuery { .. } => 8,
    }
}

/// Adds to a counter that only the calling worker writes: no read-modify-write needed.
#[inline]
fn add(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// The counters one worker writes.
#[derive(Debug, Default)]
pub struct WorkerMetrics {
    requests: [AtomicU64; REQUEST_TYPES.len()],
    errors: [[AtomicU64; ERROR_CODES]; REQUEST_TYPES.len()],
    http_faults: [AtomicU64; HTTP_FAULT_STATUSES.len()],
    expiry_runs: AtomicU64,
    expiry_examined: AtomicU64,
    expired_peers: AtomicU64,
    bt_udp: [AtomicU64; BT_UDP_OUTCOMES.len()],
    bt_http: [AtomicU64; BT_HTTP_OUTCOMES.len()],
    shed: [[AtomicU64; SHED_REASONS.len()]; SHED_FRONT_ENDS.len()],
    latency: [Histogram; LATENCY_SERIES.len()],
    queues: [AtomicU64; WORKER_QUEUES.len()],
}

impl WorkerMetrics {
    /// A request of type `index` (see [`request_index`], or [`UNDECODED`]) was received.
    #[inline]
    pub fn request(&self, index: usize) {
        if let Some(c) = self.requests.get(index) {
            add(c, 1);
        }
    }

    /// A request of type `index` was answered with error `code`.
    #[inline]
    pub fn error(&self, index: usize, code: ErrorCode) {
        if code == ErrorCode::Ok {
            return;
        }
        if let Some(c) = self
            .errors
            .get(index)
            .and_then(|row| row.get(code.code() as usize))
        {
            add(c, 1);
        }
    }

    /// An HTTP-level fault was answered with `status`.
    #[inline]
    pub fn http_fault(&self, status: u16) {
        if let Some(i) = HTTP_FAULT_STATUSES.iter().position(|s| *s == status) {
            add(&self.http_faults[i], 1);
        }
    }

    /// One expiry step ran.
    pub fn expiry(&self, report: ExpiryReport) {
        add(&self.expiry_runs, 1);
        add(&self.expiry_examined, report.examined as u64);
        add(&self.expired_peers, report.expired as u64);
    }

    /// A BitTorrent UDP datagram was handled with the outcome of index `index`
    /// (`bt_udp::Outcome::index`, a label of [`BT_UDP_OUTCOMES`]).
    #[inline]
    pub fn bt_udp(&self, index: usize) {
        if let Some(c) = self.bt_udp.get(index) {
            add(c, 1);
        }
    }

    /// A BitTorrent HTTP request was answered with the outcome of index `index`
    /// (`bt_http::HttpOutcome::index`, a label of [`BT_HTTP_OUTCOMES`]).
    #[inline]
    pub fn bt_http(&self, index: usize) {
        if let Some(c) = self.bt_http.get(index) {
            add(c, 1);
        }
    }

    /// A request of `front_end` was shed for `why`.
    #[inline]
    pub fn shed(&self, front_end: ShedFrontEnd, why: Shed) {
        add(&self.shed[front_end.index()][why.index()], 1);
    }

    /// One request of latency series `series` ([`LATENCY_SERIES`]) took `elapsed` from the
    /// event-loop turn that learnt of its bytes ([`crate::runtime::ConnCtx::ready_at`],
    /// [`crate::runtime::DatagramCtx::ready_at`]) to its answer: its wait behind the turn's
    /// earlier requests and its service time, one clock read per request.
    #[inline]
    pub fn latency(&self, series: usize, elapsed: Duration) {
        self.latency_of(series, Latency::new(elapsed));
    }

    /// [`WorkerMetrics::latency`] of a latency already sorted into its bucket.
    #[inline]
    pub fn latency_of(&self, series: usize, latency: Latency) {
        if let Some(h) = self.latency.get(series) {
            h.record(latency, 1);
        }
    }

    /// `n` requests of latency series `series` each took `elapsed` (requests answered in one
    /// batch, timed with one clock reading).
    #[inline]
    pub fn latency_n(&self, series: usize, elapsed: Duration, n: u64) {
        if let Some(h) = self.latency.get(series) {
            h.record(Latency::new(elapsed), n);
        }
    }

    /// Adds `delta` (negative: removes) to this worker's depth of queue `index`
    /// ([`WORKER_QUEUES`]); several queues of one worker (one per socket) add up.
    #[inline]
    pub fn queue_add(&self, index: usize, delta: i64) {
        if let Some(q) = self.queues.get(index) {
            add(q, delta as u64);
        }
    }

    fn requests_total(&self) -> u64 {
        self.requests.iter().map(get).sum()
    }
}

/// Requests handled since start, per front-end ([`Metrics::totals`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProtocolTotals {
    pub ppstp: u64,
    pub bt_udp: u64,
    pub bt_http: u64,
}

impl ProtocolTotals {
    /// All front-ends together.
    pub fn all(&self) -> u64 {
        self.ppstp + self.bt_udp + self.bt_http
    }
}

/// Every worker's counters.
#[derive(Debug)]
pub struct Metrics {
    workers: Box<[CachePadded<WorkerMetrics>]>,
}

/// Values that are not counters of the workers, read at scrape time.
#[derive(Clone, Copy, Debug, Default)]
pub struct ScrapeContext<'a> {
    pub counts: TableCounts,
    pub uptime: Duration,
    /// Connection counters of the runtimes (the tracker's and the admin listener's).
    pub runtimes: &'a [&'a RuntimeStats],
    /// Heap bytes of each table (estimated from capacities), when measured.
    pub memory: Option<crate::engine::MemoryEstimate>,
    /// Depths of queues outside the workers: (name, entries).
    pub queues: &'a [(&'a str, u64)],
}

impl Metrics {
    pub fn new(workers: usize) -> Self {
        Metrics {
            workers: (0..workers.max(1))
                .map(|_| CachePadded::new(WorkerMetrics::default()))
                .collect(),
        }
    }

    /// The block of worker `index` (the last block for an out-of-range index, so a caller
    /// bug cannot panic a worker).
    #[inline]
    pub fn worker(&self, index: usize) -> &WorkerMetrics {
        let i = index.min(self.workers.len() - 1);
        &self.workers[i]
    }

    /// Requests of type `index` summed over workers.
    pub fn requests(&self, index: usize) -> u64 {
        self.workers
            .iter()
            .map(|w| w.requests.get(index).map_or(0, get))
            .sum()
    }

    /// Errors of type `index` with `code`, summed over workers.
    pub fn errors(&self, index: usize, code: ErrorCode) -> u64 {
        self.workers
            .iter()
            .map(|w| {
                w.errors
                    .get(index)
                    .and_then(|row| row.get(code.code() as usize))
                    .map_or(0, get)
            })
            .sum()
    }

    /// HTTP faults answered with `status`, summed over workers.
    pub fn http_faults(&self, status: u16) -> u64 {
        let Some(i) = HTTP_FAULT_STATUSES.iter().position(|s| *s == status) else {
            return 0;
        };
        self.workers.iter().map(|w| get(&w.http_faults[i])).sum()
    }

    /// Requests of `front_end` shed for `why`, summed over workers.
    pub fn shed(&self, front_end: ShedFrontEnd, why: Shed) -> u64 {
        self.workers
            .iter()
            .map(|w| get(&w.shed[front_end.index()][why.index()]))
            .sum()
    }

    /// Requests handled since start by each front-end, summed over workers: PPSTP requests
    /// received, BitTorrent UDP datagrams and BitTorrent HTTP requests handled (any outcome).
    pub fn totals(&self) -> ProtocolTotals {
        let mut t = ProtocolTotals::default();
        for w in self.workers.iter() {
            t.ppstp += w.requests_total();
            t.bt_udp += w.bt_udp.iter().map(get).sum::<u64>();
            t.bt_http += w.bt_http.iter().map(get).sum::<u64>();
        }
        t
    }

    /// Prometheus text exposition (format 0.0.4) of every metric.
    pub fn render(&self, ctx: &ScrapeContext<'_>) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let w = &mut out;

        header(w, "ppsp_build_info", "gauge", "Version of the tracker.");
        sample(
            w,
            "ppsp_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))],
            1,
        );
        header(
            w,
            "ppsp_uptime_seconds",
            "gauge",
            "Seconds since the server started.",
        );
        sample(w, "ppsp_uptime_seconds", &[], ctx.uptime.as_secs());

        header(
            w,
            "ppsp_requests_total",
            "counter",
            "PPSTP requests received, by request type.",
        );
        for (i, name) in REQUEST_TYPES.iter().enumerate() {
            sample(
                w,
                "ppsp_requests_total",
                &[("type", name)],
                self.requests(i),
            );
        }

        header(
            w,
            "ppsp_errors_total",
            "counter",
            "PPSTP requests answered with an error, by request type and RFC 7846 error code.",
        );
        for (i, name) in REQUEST_TYPES.iter().enumerate() {
            for code in 1..ERROR_CODES {
                let n: u64 = self
                    .workers
                    .iter()
                    .map(|wm| wm.errors.get(i).and_then(|r| r.get(code)).map_or(0, get))
                    .sum();
                if n > 0 {
                    let code = format!("{code:02}");
                    sample(
                        w,
                        "ppsp_errors_total",
                        &[("type", name), ("code", &code)],
                        n,
                    );
                }
            }
        }

        header(
            w,
            "ppsp_http_faults_total",
            "counter",
            "Requests answered at the HTTP level (framing, method, media type), by status.",
        );
        for status in HTTP_FAULT_STATUSES {
            let s = status.to_string();
            sample(
                w,
                "ppsp_http_faults_total",
                &[("status", &s)],
                self.http_faults(status),
            );
        }

        header(
            w,
            "ppsp_worker_requests_total",
            "counter",
            "PPSTP requests received, by worker thread.",
        );
        for (i, wm) in self.workers.iter().enumerate() {
            let worker = i.to_string();
            sample(
                w,
                "ppsp_worker_requests_total",
                &[("worker", &worker)],
                wm.requests_total(),
            );
        }

        header(w, "ppsp_expiry_runs_total", "counter", "Expiry steps run.");
        let sum = |f: fn(&WorkerMetrics) -> &AtomicU64| -> u64 {
            self.workers.iter().map(|wm| get(f(wm))).sum()
        };
        sample(w, "ppsp_expiry_runs_total", &[], sum(|m| &m.expiry_runs));
        header(
            w,
            "ppsp_expiry_examined_total",
            "counter",
            "Registrations examined by expiry steps.",
        );
        sample(
            w,
            "ppsp_expiry_examined_total",
            &[],
            sum(|m| &m.expiry_examined),
        );
        header(
            w,
            "ppsp_expired_peers_total",
            "counter",
            "Registrations deleted because their init or track timer ran out.",
        );
        sample(
            w,
            "ppsp_expired_peers_total",
            &[],
            sum(|m| &m.expired_peers),
        );

        for (family, help, labels, pick) in [
            (
                "ppsp_bt_udp_requests_total",
                "BitTorrent UDP datagrams, by outcome.",
                &BT_UDP_OUTCOMES[..],
                (|m: &WorkerMetrics, i: usize| get(&m.bt_udp[i]))
                    as fn(&WorkerMetrics, usize) -> u64,
            ),
            (
                "ppsp_bt_http_requests_total",
                "BitTorrent HTTP requests, by outcome.",
                &BT_HTTP_OUTCOMES[..],
                |m: &WorkerMetrics, i: usize| get(&m.bt_http[i]),
            ),
        ] {
            header(w, family, "counter", help);
            for (i, label) in labels.iter().enumerate() {
                let n: u64 = self.workers.iter().map(|m| pick(m, i)).sum();
                sample(w, family, &[("outcome", label)], n);
            }
        }

        let c = ctx.counts;
        for (name, help, value) in [
            ("ppsp_peers", "Registered peers.", c.peers),
            ("ppsp_swarms", "Swarms with at least one member.", c.swarms),
            (
                "ppsp_memberships",
                "Swarm memberships (sum of swarm sizes).",
                c.memberships,
            ),
            ("ppsp_seeders", "Memberships in SEEDER mode.", c.seeders),
            ("ppsp_leechers", "Memberships in LEECH mode.", c.leechers),
        ] {
            header(w, name, "gauge", help);
            sample(w, name, &[], value as u64);
        }

        header(
            w,
            "ppsp_shed_total",
            "counter",
            "Requests answered with the overload error (rate-limited BitTorrent UDP: dropped) instead of being served, by front-end and reason.",
        );
        for (f, front_end) in SHED_FRONT_ENDS.iter().enumerate() {
            for (r, reason) in SHED_REASONS.iter().enumerate() {
                let n: u64 = self.workers.iter().map(|w| get(&w.shed[f][r])).sum();
                sample(
                    w,
                    "ppsp_shed_total",
                    &[("front_end", front_end), ("reason", reason)],
                    n,
                );
            }
        }

        if let Some(m) = ctx.memory {
            header(
                w,
                "ppsp_table_bytes",
                "gauge",
                "Heap bytes held by each engine table, estimated from capacities.",
            );
            for (table, bytes) in [
                ("swarms", m.swarm_table),
                ("swarm_members", m.swarm_members),
                ("peers", m.peer_table),
            ] {
                sample(w, "ppsp_table_bytes", &[("table", table)], bytes as u64);
            }
        }
        header(
            w,
            "ppsp_table_entries",
            "gauge",
            "Entries of each engine table.",
        );
        for (table, n) in [
            ("swarms", c.swarms),
            ("swarm_members", c.memberships),
            ("peers", c.peers),
        ] {
            sample(w, "ppsp_table_entries", &[("table", table)], n as u64);
        }

        header(
            w,
            "ppsp_queue_depth",
            "gauge",
            "Entries waiting in each queue: BitTorrent UDP datagrams deferred until an overlay answer (summed over workers) and the federation's swarms and peer statuses waiting to be stored.",
        );
        for (i, name) in WORKER_QUEUES.iter().enumerate() {
            let n: u64 = self.workers.iter().map(|m| get(&m.queues[i])).sum();
            sample(w, "ppsp_queue_depth", &[("queue", name)], n);
        }
        for (name, n) in ctx.queues {
            sample(w, "ppsp_queue_depth", &[("queue", name)], *n);
        }

        self.render_latency(w);
        self.render_connections(w, ctx.runtimes);
        out
    }

    /// `ppsp_request_duration_seconds`: one Prometheus histogram per (protocol, type), the
    /// workers' buckets summed and accumulated at scrape time.
    fn render_latency(&self, w: &mut String) {
        const NAME: &str = "ppsp_request_duration_seconds";
        header(
            w,
            NAME,
            "histogram",
            "Time of a request in its worker (from the event-loop turn that received it to its answer), by protocol and request type.",
        );
        let les: Vec<String> = LATENCY_BUCKETS_US
            .iter()
            .map(|us| format!("{}", *us as f64 / 1e6))
            .chain(std::iter::once("+Inf".to_owned()))
            .collect();
        for (s, (protocol, kind)) in LATENCY_SERIES.iter().enumerate() {
            let mut cumulative = 0u64;
            let mut sum_ns = 0u64;
            for wm in self.workers.iter() {
                sum_ns = sum_ns.wrapping_add(get(&wm.latency[s].sum_ns));
            }
            for (b, le) in les.iter().enumerate() {
                cumulative += self
                    .workers
                    .iter()
                    .map(|wm| get(&wm.latency[s].buckets[b]))
                    .sum::<u64>();
                sample(
                    w,
                    &format!("{NAME}_bucket"),
                    &[("protocol", protocol), ("type", kind), ("le", le)],
                    cumulative,
                );
            }
            let _ = writeln!(
                w,
                "{NAME}_sum{{protocol=\"{protocol}\",type=\"{kind}\"}} {}",
                sum_ns as f64 / 1e9
            );
            sample(
                w,
                &format!("{NAME}_count"),
                &[("protocol", protocol), ("type", kind)],
                cumulative,
            );
        }
    }

    fn render_connections(&self, w: &mut String, runtimes: &[&RuntimeStats]) {
        let listeners: Vec<_> = runtimes
            .iter()
            .flat_map(|r| r.listeners.iter())
            .map(|l| (l.name.as_str(), l.totals()))
            .collect();
        type Pick = fn(&crate::runtime::ConnTotals) -> u64;
        let families: [(&str, &str, &str, Pick); 7] = [
            (
                "ppsp_connections_accepted_total",
                "counter",
                "TCP connections accepted.",
                |t| t.accepted,
            ),
            (
                "ppsp_connections_refused_total",
                "counter",
                "TCP connections refused because a worker had its maximum open.",
                |t| t.refused,
            ),
            (
                "ppsp_connections_refused_per_source_total",
                "counter",
                "TCP connections refused because their source address (IPv6: its /64) had its maximum open.",
                |t| t.refused_per_source,
            ),
            (
                "ppsp_connection_turns_cut_total",
                "counter",
                "Event-loop turns that ended at a connection's per-turn request or output budget with work left.",
                |t| t.turns_cut,
            ),
            (
                "ppsp_connections_open",
                "gauge",
                "TCP connections open.",
                |t| t.open,
            ),
            (
                "ppsp_received_bytes_total",
                "counter",
                "Bytes received on TCP connections.",
                |t| t.bytes_in,
            ),
            (
                "ppsp_sent_bytes_total",
                "counter",
                "Bytes sent on TCP connections.",
                |t| t.bytes_out,
            ),
        ];
        for (name, kind, help, pick) in families {
            header(w, name, kind, help);
            for (listener, totals) in &listeners {
                sample(w, name, &[("listener", listener)], pick(totals));
            }
        }
        type PickR = fn(&RuntimeStats) -> u64;
        let per_runtime: [(&str, &str, &str, PickR); 3] = [
            (
                "ppsp_worker_turns_behind_total",
                "counter",
                "Event-loop turns that took at least the shedding delay (server.shed_after_ms, 100 ms when off): the work served last in them waited that long. Counted whether or not anything was shed.",
                |r| r.behind().0,
            ),
            (
                "ppsp_worker_send_held_bytes",
                "gauge",
                "io_uring: answer bytes the workers' TCP connections hold in their send chunks, written and not yet taken by the kernel (0 on epoll).",
                |r| r.send_held().0,
            ),
            (
                "ppsp_worker_send_held_peak_bytes",
                "gauge",
                "io_uring: the most answer bytes one worker's TCP connections have held in its send chunks at once.",
                |r| r.send_held().1,
            ),
        ];
        for (name, kind, help, pick) in per_runtime {
            header(w, name, kind, help);
            for r in runtimes {
                sample(w, name, &[("runtime", &r.name)], pick(r));
            }
        }
        header(
            w,
            "ppsp_worker_behind_seconds_total",
            "counter",
            "Time the workers spent in event-loop turns that fell behind, seconds.",
        );
        for r in runtimes {
            let _ = writeln!(
                w,
                "ppsp_worker_behind_seconds_total{{runtime=\"{}\"}} {}",
                r.name,
                r.behind().1 as f64 / 1e6
            );
        }
        let sockets: Vec<_> = runtimes
            .iter()
            .flat_map(|r| r.datagrams.iter())
            .map(|d| (d.name.as_str(), d.totals()))
            .collect();
        if !sockets.is_empty() {
            type PickD = fn(&crate::runtime::DatagramTotals) -> u64;
            let families: [(&str, &str, PickD); 9] = [
                (
                    "ppsp_datagrams_received_total",
                    "UDP datagrams received.",
                    |t| t.received,
                ),
                ("ppsp_datagrams_sent_total", "UDP answers sent.", |t| t.sent),
                (
                    "ppsp_datagrams_unanswered_total",
                    "UDP datagrams the service did not answer (dropped on purpose).",
                    |t| t.unanswered,
                ),
                (
                    "ppsp_datagrams_send_dropped_total",
                    "UDP answers dropped because the socket send buffer was full.",
                    |t| t.send_dropped,
                ),
                (
                    "ppsp_datagrams_send_errors_total",
                    "UDP answers the kernel refused.",
                    |t| t.send_errors,
                ),
                (
                    "ppsp_datagrams_panics_total",
                    "UDP datagrams on which the service panicked.",
                    |t| t.panics,
                ),
                (
                    "ppsp_datagram_received_bytes_total",
                    "UDP bytes received.",
                    |t| t.bytes_in,
                ),
                ("ppsp_datagram_sent_bytes_total", "UDP bytes sent.", |t| {
                    t.bytes_out
                }),
                (
                    "ppsp_datagrams_receive_dropped_total",
                    "UDP datagrams the kernel dropped because the socket's receive buffer was full (SO_MEMINFO, sampled every worker tick).",
                    |t| t.receive_dropped,
                ),
            ];
            for (name, help, pick) in families {
                header(w, name, "counter", help);
                for (socket, totals) in &sockets {
                    sample(w, name, &[("listener", socket)], pick(totals));
                }
            }
            let name = "ppsp_datagram_receive_queued_bytes";
            header(
                w,
                name,
                "gauge",
                "Bytes waiting in the UDP sockets' receive buffers at the last worker tick (kernel accounting, with per-datagram overhead).",
            );
            for (socket, totals) in &sockets {
                sample(
                    w,
                    name,
                    &[("listener", socket)],
                    totals.receive_queued_bytes,
                );
            }
        }
        header(
            w,
            "ppsp_connections_closed_total",
            "counter",
            "TCP connections closed by the server, by reason (idle timeout, input over its cap, socket error, service panic, TLS handshake failure or timeout, request deadline, evicted from a full listener).",
        );
        for (listener, t) in &listeners {
            for (reason, n) in [
                ("idle", t.closed_idle),
                ("overflow", t.closed_overflow),
                ("error", t.closed_error),
                ("panic", t.closed_panic),
                ("tls_handshake_failed", t.tls_handshake_failed),
                ("tls_handshake_timeout", t.tls_handshake_timeout),
                ("deadline", t.closed_deadline),
                ("evicted", t.evicted),
            ] {
                sample(
                    w,
                    "ppsp_connections_closed_total",
                    &[("listener", listener), ("reason", reason)],
                    n,
                );
            }
        }
    }
}

fn header(w: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(w, "# HELP {name} {help}");
    let _ = writeln!(w, "# TYPE {name} {kind}");
}

fn sample(w: &mut String, name: &str, labels: &[(&str, &str)], value: u64) {
    w.push_str(name);
    if !labels.is_empty() {
        w.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                w.push(',');
            }
            let _ = write!(w, "{k}=\"");
            escape_label(w, v);
            w.push('"');
        }
        w.push('}');
    }
    let _ = writeln!(w, " {value}");
}

/// Label values escape backslash, double quote and newline (text format 0.0.4).
fn escape_label(w: &mut String, v: &str) {
    for ch in v.chars() {
        match ch {
            '\\' => w.push_str("\\\\"),
            '"' => w.push_str("\\\""),
            '\n' => w.push_str("\\n"),
            c => w.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A latency lands in the first bucket whose bound it does not exceed (bounds inclusive),
    /// past the last bound in the overflow bucket; recorded sorted or not, it counts the same.
    #[test]
    fn latencies_sort_into_inclusive_buckets() {
        let us = Duration::from_micros;
        assert_eq!(Latency::new(Duration::ZERO).bucket, 0);
        assert_eq!(Latency::new(us(1)).bucket, 0);
        assert_eq!(Latency::new(us(1) + Duration::from_nanos(1)).bucket, 1);
        assert_eq!(Latency::new(us(250)).bucket, 7);
        assert_eq!(Latency::new(us(1_000_000)).bucket, 15);
        assert_eq!(Latency::new(Duration::from_secs(5)).bucket, 16);
        assert_eq!(Latency::new(Duration::MAX).ns, u64::MAX);
        let m = Metrics::new(1);
        let w = m.worker(0);
        w.latency(2, us(30));
        w.latency_of(2, Latency::new(us(30)));
        let h = &w.latency[2];
        assert_eq!(get(&h.buckets[5]), 2);
        assert_eq!(get(&h.sum_ns), 60_000);
    }

    #[test]
    fn outcome_labels_map_to_their_latency_series() {
        for (i, label) in BT_UDP_OUTCOMES.iter().enumerate() {
            let (protocol, kind) = LATENCY_SERIES[latency_series_bt_udp(i)];
            assert_eq!(protocol, "bt_udp");
            let want = if matches!(*label, "connect" | "announce" | "scrape") {
                *label
            } else {
                "error"
            };
            assert_eq!(kind, want, "{label}");
        }
        for (i, label) in BT_HTTP_OUTCOMES.iter().enumerate() {
            let (protocol, kind) = LATENCY_SERIES[latency_series_bt_http(i)];
            assert_eq!(protocol, "bt_http");
            let want = match *label {
                "announce" => "announce",
                "scrape" | "full_scrape" => "scrape",
                _ => "error",
            };
            assert_eq!(kind, want, "{label}");
        }
        assert_eq!(latency_series_bt_udp(usize::MAX), 13);
        assert_eq!(latency_series_bt_http(usize::MAX), 16);
    }

    fn line_value(text: &str, prefix: &str) -> Option<u64> {
        text.lines()
            .find(|l| l.starts_with(prefix) && l[prefix.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn worker_counters_are_summed_at_scrape() {
        let m = Metrics::new(3);
        m.worker(0).request(1);
        m.worker(1).request(1);
        m.worker(2).request(0);
        m.worker(2).error(UNDECODED, ErrorCode::BadRequest);
        m.worker(1).error(1, ErrorCode::Forbidden);
        m.worker(1).error(1, ErrorCode::Ok);
        m.worker(0).http_fault(413);
        m.worker(0).http_fault(299);
        m.worker(1).expiry(ExpiryReport {
            examined: 10,
            expired: 4,
        });
        m.worker(0).expiry(ExpiryReport {
            examined: 5,
            expired: 1,
        });
        assert_eq!(m.requests(1), 2);
        assert_eq!(m.errors(1, ErrorCode::Forbidden), 1);
        assert_eq!(m.errors(1, ErrorCode::Ok), 0);
        assert_eq!(m.http_faults(413), 1);

        let text = m.render(&ScrapeContext {
            counts: TableCounts {
                peers: 7,
                swarms: 2,
                ..TableCounts::default()
            },
            uptime: Duration::from_secs(42),
            runtimes: &[],
            memory: None,
            queues: &[],
        });
        assert_eq!(
            line_value(&text, "ppsp_requests_total{type=\"find\"}"),
            Some(2)
        );
        assert_eq!(
            line_value(&text, "ppsp_requests_total{type=\"connect\"}"),
            Some(1)
        );
        assert_eq!(
            line_value(&text, "ppsp_errors_total{type=\"undecoded\",code=\"01\"}"),
            Some(1)
        );
        assert_eq!(
            line_value(&text, "ppsp_errors_total{type=\"find\",code=\"03\"}"),
            Some(1)
        );
        assert_eq!(
            line_value(&text, "ppsp_http_faults_total{status=\"413\"}"),
            Some(1)
        );
        assert_eq!(
            line_value(&text, "ppsp_worker_requests_total{worker=\"1\"}"),
            Some(1)
        );
        assert_eq!(line_value(&text, "ppsp_expiry_runs_total"), Some(2));
        assert_eq!(line_value(&text, "ppsp_expired_peers_total"), Some(5));
        assert_eq!(line_value(&text, "ppsp_peers"), Some(7));
        assert_eq!(line_value(&text, "ppsp_swarms"), Some(2));
        assert_eq!(line_value(&text, "ppsp_uptime_seconds"), Some(42));
    }

    #[test]
    fn every_family_has_help_and_type_once() {
        let m = Metrics::new(1);
        let text = m.render(&ScrapeContext::default());
        let mut seen = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap();
                assert!(seen.insert(name.to_owned()), "{name} declared twice");
            } else if !line.starts_with("# HELP ") {
                let name = line.split(['{', ' ']).next().unwrap();
                let name = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s).filter(|n| seen.contains(*n)))
                    .unwrap_or(name);
                assert!(seen.contains(name), "{name} sampled before its TYPE line");
            }
        }
        assert!(seen.contains("ppsp_requests_total"));
    }

    #[test]
    fn labels_are_escaped() {
        let mut s = String::new();
        sample(&mut s, "m", &[("l", "a\"b\\c\nd")], 1);
        assert_eq!(s, "m{l=\"a\\\"b\\\\c\\nd\"} 1\n");
    }

    #[test]
    fn out_of_range_indices_do_not_panic() {
        let m = Metrics::new(1);
        m.worker(99).request(99);
        m.worker(0).error(99, ErrorCode::BadRequest);
        assert_eq!(m.requests(99), 0);
    }

    #[test]
    fn bittorrent_outcomes_are_counted_by_index() {
        use crate::protocol::bt_http::{HttpAnswer, HttpFailure, HttpOutcome};
        use crate::protocol::bt_udp::{Outcome, Reply};
        let m = Metrics::new(2);
        m.worker(0).bt_udp(Outcome::Reply(Reply::Announce).index());
        m.worker(1).bt_udp(Outcome::Reply(Reply::Announce).index());
        m.worker(1).bt_udp(999); // out of range: ignored, no panic
        let unknown = HttpOutcome {
            status: 404,
            answer: HttpAnswer::Failure(HttpFailure::UnknownPath),
        };
        m.worker(0).bt_http(unknown.index());
        m.worker(0).bt_http(HttpOutcome::HTTP_FAULT);
        let text = m.render(&ScrapeContext::default());
        assert_eq!(
            line_value(&text, "ppsp_bt_udp_requests_total{outcome=\"announce\"}"),
            Some(2)
        );
        assert_eq!(
            line_value(
                &text,
                "ppsp_bt_http_requests_total{outcome=\"unknown_path\"}"
            ),
            Some(1)
        );
        assert_eq!(
            line_value(&text, "ppsp_bt_http_requests_total{outcome=\"http_fault\"}"),
            Some(1)
        );
    }
}
