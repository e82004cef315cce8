//! The BitTorrent services: the BEP 15 UDP tracker as a [`DatagramService`] and the HTTP
//! tracker (`GET /announce`, `GET /scrape`) as a [`StreamService`], both over the shared engine,
//! with per-protocol counters for `/metrics`.
//!
//! The codecs are `protocol::bt_udp` and `protocol::bt_http`; this file only connects them to
//! the runtime: the clock, a connection-id secret drawn at start, per-worker scratch buffers
//! (so that an announce of a known peer allocates nothing), HTTP framing with the shared
//! `protocol::http` layer, and the counters.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::utils::CachePadded;

use crate::config::Config;
use crate::engine::{Engine, PeerInfo};
use crate::protocol::bt_http::{self, HttpFrontEnd};
use crate::protocol::bt_udp::{ConnectionIdSecret, Outcome, UdpFrontEnd};
use crate::protocol::http::{self, Framed, HttpLimits};
use crate::runtime::{
    ConnCtx, ConnLimits, DatagramCtx, DatagramService, DatagramSpec, DatagramWorker, ListenerSpec,
    StreamService, StreamStep, StreamWorker,
};

use super::Clock;

/// Name of the BEP 15 sockets in logs, metrics and status.
pub const BT_UDP_LISTENER: &str = "bt_udp";
/// Name of the BitTorrent HTTP listeners.
pub const BT_HTTP_LISTENER: &str = "bt_http";

/// Outcome labels of the UDP tracker, as [`Outcome::name`] spells them; the last counts
/// anything unforeseen.
const UDP_OUTCOMES: [&str; 15] = [
    "connect",
    "announce",
    "scrape",
    "connection_id",
    "malformed",
    "unknown_action",
    "bad_port",
    "too_many_hashes",
    "engine_overload",
    "engine_error",
    "access_denied",
    "drop_too_short",
    "drop_bad_protocol_id",
    "drop_error_too_long",
    "other",
];
/// Outcomes of the UDP tracker that are not errors.
const UDP_SUCCESSES: [&str; 3] = ["connect", "announce", "scrape"];

/// Outcome labels of the HTTP tracker, as `HttpOutcome::name` spells them, plus the HTTP-level
/// faults answered before the tracker codec.
const HTTP_OUTCOMES: [&str; 12] = [
    "announce",
    "scrape",
    "too_many_hashes",
    "full_scrape",
    "bad_query",
    "engine_overload",
    "engine_error",
    "access_denied",
    "unknown_path",
    "bad_method",
    "http_fault",
    "other",
];
const HTTP_SUCCESSES: [&str; 2] = ["announce", "scrape"];

/// Counters of one worker for one protocol. Only that worker writes them.
#[derive(Debug, Default)]
struct WorkerCounters {
    outcomes: [AtomicU64; 16],
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

/// Adds to a counter that only the calling worker writes.
fn add(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

/// Request, error and byte counters of one protocol, one block per worker, summed at scrape.
#[derive(Debug)]
pub struct ProtocolMetrics {
    protocol: &'static str,
    labels: &'static [&'static str],
    successes: &'static [&'static str],
    workers: Box<[CachePadded<WorkerCounters>]>,
}

/// Sums of a protocol's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProtocolTotals {
    /// Requests by outcome label (every label present, zeros included).
    pub outcomes: Vec<(&'static str, u64)>,
    pub requests: u64,
    pub errors: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl ProtocolMetrics {
    fn new(
        protocol: &'static str,
        labels: &'static [&'static str],
        successes: &'static [&'static str],
        workers: usize,
    ) -> Self {
        ProtocolMetrics {
            protocol,
            labels,
            successes,
            workers: (0..workers.max(1))
                .map(|_| CachePadded::new(WorkerCounters::default()))
                .collect(),
        }
    }

    fn record(&self, worker: usize, outcome: &str, bytes_in: usize, bytes_out: usize) {
        let Some(w) = self.workers.get(worker) else {
            return;
        };
        let last = self.labels.len().saturating_sub(1);
        let i = self
            .labels
            .iter()
            .position(|l| *l == outcome)
            .unwrap_or(last);
        if let Some(c) = w.outcomes.get(i) {
            add(c, 1);
        }
        add(&w.bytes_in, bytes_in as u64);
        add(&w.bytes_out, bytes_out as u64);
    }

    pub fn totals(&self) -> ProtocolTotals {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut t = ProtocolTotals::default();
        for (i, label) in self.labels.iter().enumerate() {
            let n: u64 = self
                .workers
                .iter()
                .map(|w| w.outcomes.get(i).map_or(0, get))
                .sum();
            t.requests += n;
            if !self.successes.contains(label) {
                t.errors += n;
            }
            t.outcomes.push((label, n));
        }
        t.bytes_in = self.workers.iter().map(|w| get(&w.bytes_in)).sum();
        t.bytes_out = self.workers.iter().map(|w| get(&w.bytes_out)).sum();
        t
    }
}

/// The BitTorrent counters of a server, rendered after the core metrics.
#[derive(Debug)]
pub struct BtMetrics {
    pub udp: ProtocolMetrics,
    pub http: ProtocolMetrics,
}

impl BtMetrics {
    pub fn new(workers: usize) -> Self {
        BtMetrics {
            udp: ProtocolMetrics::new(BT_UDP_LISTENER, &UDP_OUTCOMES, &UDP_SUCCESSES, workers),
            http: ProtocolMetrics::new(BT_HTTP_LISTENER, &HTTP_OUTCOMES, &HTTP_SUCCESSES, workers),
        }
    }

    /// Appends the Prometheus text of these counters.
    pub fn render_into(&self, out: &mut String) {
        let protocols = [&self.udp, &self.http];
        let totals: Vec<(&str, ProtocolTotals)> =
            protocols.iter().map(|p| (p.protocol, p.totals())).collect();
        let _ = writeln!(
            out,
            "# HELP ppsp_protocol_requests_total Requests (datagrams, HTTP requests) by protocol and outcome; drops included.\n# TYPE ppsp_protocol_requests_total counter"
        );
        for (protocol, t) in &totals {
            for (outcome, n) in &t.outcomes {
                let _ = writeln!(
                    out,
                    "ppsp_protocol_requests_total{{protocol=\"{protocol}\",outcome=\"{outcome}\"}} {n}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP ppsp_protocol_errors_total Requests answered with an error or dropped, by protocol.\n# TYPE ppsp_protocol_errors_total counter"
        );
        for (protocol, t) in &totals {
            let _ = writeln!(
                out,
                "ppsp_protocol_errors_total{{protocol=\"{protocol}\"}} {}",
                t.errors
            );
        }
        let _ = writeln!(
            out,
            "# HELP ppsp_protocol_bytes_total Request and answer bytes by protocol.\n# TYPE ppsp_protocol_bytes_total counter"
        );
        for (protocol, t) in &totals {
            let _ = writeln!(
                out,
                "ppsp_protocol_bytes_total{{protocol=\"{protocol}\",direction=\"in\"}} {}",
                t.bytes_in
            );
            let _ = writeln!(
                out,
                "ppsp_protocol_bytes_total{{protocol=\"{protocol}\",direction=\"out\"}} {}",
                t.bytes_out
            );
        }
    }
}

/// What both BitTorrent services share.
pub(crate) struct BtShared {
    pub engine: Arc<Engine>,
    pub metrics: Arc<BtMetrics>,
    pub clock: Clock,
    /// Run the engine's expiry on this service's ticks (when no PPSTP listener does).
    pub expire_on_tick: bool,
    pub expiry_budget: usize,
}

impl BtShared {
    fn tick(&self) {
        if self.expire_on_tick {
            self.engine
                .expire(self.clock.now(), self.expiry_budget.max(1));
        }
    }
}

/// The BEP 15 tracker as a [`DatagramService`].
pub(crate) struct BtUdpService {
    pub shared: Arc<BtShared>,
    pub front: UdpFrontEnd,
}

impl DatagramService for BtUdpService {
    fn worker(&self, worker: usize) -> Box<dyn DatagramWorker> {
        Box::new(BtUdpWorker {
            shared: self.shared.clone(),
            front: self.front.clone(),
            scratch: Vec::with_capacity(self.front.limits().max_num_want as usize),
            index: worker,
        })
    }
}

struct BtUdpWorker {
    shared: Arc<BtShared>,
    front: UdpFrontEnd,
    /// Peer lists of announces, reused.
    scratch: Vec<PeerInfo>,
    index: usize,
}

impl DatagramWorker for BtUdpWorker {
    fn on_datagram(
        &mut self,
        _ctx: &DatagramCtx,
        src: SocketAddr,
        packet: &[u8],
        out: &mut Vec<u8>,
    ) -> bool {
        let now = self.shared.clock.now();
        let outcome = self.front.handle_with(
            &*self.shared.engine,
            src,
            packet,
            now,
            out,
            &mut self.scratch,
        );
        let answered = matches!(outcome, Outcome::Reply(_));
        let sent = if answered { out.len() } else { 0 };
        self.shared
            .metrics
            .udp
            .record(self.index, outcome.name(), packet.len(), sent);
        answered
    }

    fn on_tick(&mut self, _now: Instant) {
        self.shared.tick();
    }
}

/// The HTTP tracker as a [`StreamService`].
pub(crate) struct BtHttpService {
    pub shared: Arc<BtShared>,
    pub front: HttpFrontEnd,
    pub limits: HttpLimits,
}

impl StreamService for BtHttpService {
    fn worker(&self, worker: usize) -> Box<dyn StreamWorker> {
        Box::new(BtHttpWorker {
            shared: self.shared.clone(),
            front: self.front.clone(),
            limits: self.limits,
            body: Vec::with_capacity(1024),
            scratch: Vec::with_capacity(self.front.limits().max_num_want as usize),
            index: worker,
        })
    }
}

struct BtHttpWorker {
    shared: Arc<BtShared>,
    front: HttpFrontEnd,
    limits: HttpLimits,
    body: Vec<u8>,
    scratch: Vec<PeerInfo>,
    index: usize,
}

impl BtHttpWorker {
    /// An HTTP-level fault, answered with a bencoded `failure reason` like tracker errors.
    fn fault(&mut self, out: &mut Vec<u8>, status: u16, reason: &str, label: &str, used: usize) {
        self.body.clear();
        write_failure(&mut self.body, reason);
        let before = out.len();
        http::write_response(out, status, bt_http::CONTENT_TYPE, &self.body, false);
        self.shared
            .metrics
            .http
            .record(self.index, label, used, out.len() - before);
    }
}

/// `d14:failure reason<len>:<reason>e`.
fn write_failure(body: &mut Vec<u8>, reason: &str) {
    use crate::protocol::bencode;
    bencode::dict_begin(body);
    bencode::key_bytes(body, b"failure reason", reason.as_bytes());
    bencode::end(body);
}

impl StreamWorker for BtHttpWorker {
    fn on_input(&mut self, ctx: &ConnCtx, input: &[u8], out: &mut Vec<u8>) -> StreamStep {
        let now = self.shared.clock.now();
        let mut consumed = 0;
        while out.len() < ctx.output_limit {
            let rest = match input.get(consumed..) {
                Some(rest) if !rest.is_empty() => rest,
                _ => break,
            };
            match http::frame_request(rest, &self.limits) {
                Framed::Incomplete => break,
                Framed::Error(e) => {
                    // The stream cannot be re-synchronised: answer and close.
                    self.fault(
                        out,
                        e.status(),
                        "malformed HTTP request",
                        "http_fault",
                        rest.len(),
                    );
                    return StreamStep {
                        consumed: input.len(),
                        close: true,
                    };
                }
                Framed::Request {
                    head,
                    consumed: used,
                    ..
                } => {
                    if used == 0 || used > rest.len() {
                        self.fault(out, 500, "internal error", "other", rest.len());
                        return StreamStep {
                            consumed: input.len(),
                            close: true,
                        };
                    }
                    consumed += used;
                    if head.method != "GET" {
                        self.fault(out, 405, "only GET is supported", "bad_method", used);
                        return StreamStep {
                            consumed: input.len(),
                            close: true,
                        };
                    }
                    let outcome = self.front.handle_get_with(
                        &*self.shared.engine,
                        ctx.peer,
                        head.path,
                        head.query,
                        now,
                        &mut self.body,
                        &mut self.scratch,
                    );
                    let before = out.len();
                    http::write_response(
                        out,
                        outcome.status,
                        bt_http::CONTENT_TYPE,
                        &self.body,
                        head.keep_alive,
                    );
                    self.shared.metrics.http.record(
                        self.index,
                        outcome.name(),
                        used,
                        out.len() - before,
                    );
                    if !head.keep_alive {
                        return StreamStep {
                            consumed,
                            close: true,
                        };
                    }
                }
            }
        }
        StreamStep {
            consumed,
            close: false,
        }
    }

    fn on_tick(&mut self, _now: Instant) {
        self.shared.tick();
    }
}

/// Adds the enabled BitTorrent listeners to the runtime's lists: one TCP listener per
/// `bt_http.listen` address, one datagram socket group per `bt_udp.listen` address.
pub(crate) fn add_services(
    config: &Config,
    shared: &Arc<BtShared>,
    listeners: &mut Vec<ListenerSpec>,
    datagrams: &mut Vec<DatagramSpec>,
) -> anyhow::Result<()> {
    if config.bt_udp.enabled {
        let limits = config.effective_bt_limits(&config.bt_udp.limits);
        // A fresh secret per start: connection ids are short-lived, and a restart only makes
        // clients reconnect once.
        let secret = ConnectionIdSecret::generate(&mut rand::rngs::OsRng);
        let service: Arc<dyn DatagramService> = Arc::new(BtUdpService {
            shared: shared.clone(),
            front: UdpFrontEnd::new(secret, limits),
        });
        for addr in config.bt_udp_addrs()? {
            datagrams.push(DatagramSpec {
                name: BT_UDP_LISTENER.to_owned(),
                addr,
                service: service.clone(),
            });
        }
    }
    if config.bt_http.enabled {
        let h = &config.bt_http;
        let limits = config.effective_bt_limits(&h.limits);
        let http_limits = HttpLimits {
            max_head_bytes: h.max_head_bytes,
            max_headers: h.max_headers,
            // Tracker requests are GETs; a body is refused (413) before it is read.
            max_body_bytes: 0,
        };
        let service: Arc<dyn StreamService> = Arc::new(BtHttpService {
            shared: shared.clone(),
            front: HttpFrontEnd::new(limits),
            limits: http_limits,
        });
        for addr in config.bt_http_addrs()? {
            listeners.push(ListenerSpec {
                name: BT_HTTP_LISTENER.to_owned(),
                addr,
                service: service.clone(),
                limits: ConnLimits {
                    max_input_bytes: h.max_head_bytes,
                    max_pending_output_bytes: h.max_pending_output_bytes,
                    max_connections: h.max_connections,
                    idle_timeout: Duration::from_secs(h.idle_timeout_secs),
                },
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_labels_cover_the_codecs_names_and_errors_are_the_rest() {
        let m = BtMetrics::new(2);
        m.udp.record(0, "announce", 98, 26);
        m.udp.record(1, "drop_too_short", 3, 0);
        m.udp.record(1, "something new", 3, 0);
        m.http.record(0, "bad_query", 100, 80);
        let t = m.udp.totals();
        assert_eq!((t.requests, t.errors), (3, 2));
        assert_eq!((t.bytes_in, t.bytes_out), (104, 26));
        assert!(t.outcomes.contains(&("other", 1)));
        let mut text = String::new();
        m.render_into(&mut text);
        assert!(text
            .contains("ppsp_protocol_requests_total{protocol=\"bt_udp\",outcome=\"announce\"} 1"));
        assert!(text.contains("ppsp_protocol_errors_total{protocol=\"bt_http\"} 1"));
        assert!(
            text.contains("ppsp_protocol_bytes_total{protocol=\"bt_udp\",direction=\"in\"} 104")
        );
    }
}
