//! The BitTorrent services: the BEP 15 UDP tracker as a [`DatagramService`] (one datagram in,
//! at most one out) and the HTTP tracker (`GET /announce`, `GET /scrape`) as a
//! [`StreamService`], both driving the shared engine through the sans-IO front-ends in
//! `protocol::bt_udp` and `protocol::bt_http`.
//!
//! This file only connects the codecs to the runtime: the clock, a connection-id secret drawn
//! at start, per-worker scratch buffers (so that an announce of a known peer allocates
//! nothing), the shared HTTP serving loop (`http_serve`), and the outcome counters.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::access_list::{AccessControl, AccessList};
use crate::config::Config;
use crate::engine::{
    CompactPeers, Engine, ErrorCode, ListFamilies, Request, Response, SwarmStats, Time,
};
use crate::metrics::Metrics;
use crate::protocol::bencode;
use crate::protocol::bt_http::{self, HttpFrontEnd};
use crate::protocol::bt_udp::tracker::{InfoHash, SwarmCounts};
use crate::protocol::bt_udp::{ConnectionIdSecret, Outcome, TrackerCore, UdpFrontEnd};
use crate::protocol::http::{HttpLimits, RequestHead};
use crate::runtime::{
    ConnCtx, ConnLimits, DatagramCtx, DatagramService, DatagramSpec, DatagramWorker, ListenerSpec,
    StreamService, StreamWorker,
};

use super::http_serve::{Answer, HttpHandler, HttpWorker};
use super::{Clock, BT_HTTP_LISTENER, BT_UDP_LISTENER};

/// The engine as the BitTorrent codecs see it, with the access list in force for this request
/// (`None` when the list is off: no lock is taken at all).
struct Guarded<'a> {
    engine: &'a Engine,
    access: Option<&'a AccessList>,
}

impl TrackerCore for Guarded<'_> {
    fn handle(&self, request: &Request, now: Time) -> Response {
        self.engine.handle(request, now)
    }

    fn allows(&self, info_hash: &InfoHash) -> bool {
        self.access
            .map_or(true, |list| list.permits_info_hash(info_hash))
    }

    fn announce(
        &self,
        request: &Request,
        now: Time,
        families: ListFamilies,
        peers: &mut CompactPeers,
    ) -> Result<SwarmStats, ErrorCode> {
        self.engine.announce_compact(request, now, families, peers)
    }

    fn counts(&self, src: SocketAddr, info_hash: &InfoHash, now: Time) -> SwarmCounts {
        TrackerCore::counts(self.engine, src, info_hash, now)
    }

    fn completed(&self, info_hash: &InfoHash) -> bool {
        self.engine.bt_completed(info_hash)
    }
}

/// A peer-list buffer with room for `peers` peers of either family.
fn compact_scratch(peers: usize) -> CompactPeers {
    CompactPeers {
        v4: Vec::with_capacity(peers * crate::engine::COMPACT_V4_LEN),
        v6: Vec::with_capacity(peers * crate::engine::COMPACT_V6_LEN),
    }
}

/// The list in force now, or `None` when access control is off.
fn current_list(access: &AccessControl) -> Option<Arc<AccessList>> {
    (!access.is_off()).then(|| access.current())
}

/// Adds the enabled BitTorrent front-ends to the runtime's lists: one datagram socket group
/// per `bt_udp.listen` address and one TCP listener per `bt_http.listen` address.
pub(crate) fn add_services(
    config: &Config,
    engine: &Arc<Engine>,
    metrics: &Arc<Metrics>,
    access: &Arc<AccessControl>,
    clock: Clock,
    listeners: &mut Vec<ListenerSpec>,
    datagrams: &mut Vec<DatagramSpec>,
) -> anyhow::Result<()> {
    if config.bt_udp.enabled {
        let limits = config.effective_bt_limits(&config.bt_udp.limits);
        // BEP 15 connection ids are keyed by a secret that lives as long as the process; a
        // restart only makes clients connect again.
        let secret = ConnectionIdSecret::generate(&mut rand::rngs::OsRng);
        let service: Arc<dyn DatagramService> = Arc::new(BtUdpService {
            engine: engine.clone(),
            metrics: metrics.clone(),
            access: access.clone(),
            front_end: UdpFrontEnd::new(secret, limits),
            clock: clock.clone(),
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
            // Announces and scrapes are GETs: a body is refused (413) before it is read.
            max_body_bytes: 0,
        };
        let service: Arc<dyn StreamService> = Arc::new(BtHttpService {
            engine: engine.clone(),
            metrics: metrics.clone(),
            access: access.clone(),
            front_end: HttpFrontEnd::new(limits),
            http_limits,
            clock,
        });
        for addr in config.bt_http_addrs()? {
            listeners.push(ListenerSpec {
                name: BT_HTTP_LISTENER.to_owned(),
                addr,
                service: service.clone(),
                limits: ConnLimits {
                    // Room for the largest request, so that every limit is answered.
                    max_input_bytes: http_limits.max_request_bytes(),
                    max_pending_output_bytes: h.max_pending_output_bytes,
                    max_connections: h.max_connections,
                    idle_timeout: Duration::from_secs(h.idle_timeout_secs),
                },
            });
        }
    }
    Ok(())
}

/// The UDP tracker service.
pub(crate) struct BtUdpService {
    pub engine: Arc<Engine>,
    pub metrics: Arc<Metrics>,
    pub access: Arc<AccessControl>,
    pub front_end: UdpFrontEnd,
    pub clock: Clock,
}

impl DatagramService for BtUdpService {
    fn worker(&self, worker: usize) -> Box<dyn DatagramWorker> {
        Box::new(BtUdpWorker {
            engine: self.engine.clone(),
            metrics: self.metrics.clone(),
            access: self.access.clone(),
            front_end: self.front_end.clone(),
            clock: self.clock.clone(),
            scratch: compact_scratch(self.front_end.limits().max_num_want as usize),
            index: worker,
            now: Time::default(),
            list: None,
        })
    }
}

struct BtUdpWorker {
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    access: Arc<AccessControl>,
    front_end: UdpFrontEnd,
    clock: Clock,
    /// Peer lists of announces, reused.
    scratch: CompactPeers,
    index: usize,
    /// The clock and the access list, read once per received batch.
    now: Time,
    list: Option<Arc<AccessList>>,
}

impl DatagramWorker for BtUdpWorker {
    fn on_batch(&mut self) {
        self.now = self.clock.now();
        self.list = current_list(&self.access);
    }

    fn on_datagram(
        &mut self,
        _ctx: &DatagramCtx,
        src: SocketAddr,
        packet: &[u8],
        out: &mut Vec<u8>,
    ) -> bool {
        let core = Guarded {
            engine: &self.engine,
            access: self.list.as_deref(),
        };
        let outcome =
            self.front_end
                .handle_with(&core, src, packet, self.now, out, &mut self.scratch);
        self.metrics.worker(self.index).bt_udp(outcome.index());
        matches!(outcome, Outcome::Reply(_))
    }
}

/// The HTTP tracker service.
pub(crate) struct BtHttpService {
    pub engine: Arc<Engine>,
    pub metrics: Arc<Metrics>,
    pub access: Arc<AccessControl>,
    pub front_end: HttpFrontEnd,
    pub http_limits: HttpLimits,
    pub clock: Clock,
}

impl StreamService for BtHttpService {
    fn worker(&self, worker: usize) -> Box<dyn StreamWorker> {
        Box::new(HttpWorker::new(
            BtHttpWorker {
                engine: self.engine.clone(),
                metrics: self.metrics.clone(),
                access: self.access.clone(),
                front_end: self.front_end.clone(),
                clock: self.clock.clone(),
                now: self.clock.now(),
                index: worker,
                scratch: compact_scratch(self.front_end.limits().max_num_want as usize),
            },
            self.http_limits,
        ))
    }
}

struct BtHttpWorker {
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    access: Arc<AccessControl>,
    front_end: HttpFrontEnd,
    clock: Clock,
    /// The time of the input being served.
    now: Time,
    index: usize,
    /// Peer lists of announces, reused.
    scratch: CompactPeers,
}

impl HttpHandler for BtHttpWorker {
    fn allowed_methods(&self, _path: &str) -> Option<&'static str> {
        // Announces and scrapes are GETs (BEP 3, BEP 48).
        Some("GET, HEAD")
    }

    fn begin_input(&mut self) {
        self.now = self.clock.now();
    }

    /// An HTTP-level fault gets a bencoded `failure reason`, as trackers answer.
    fn fault(&mut self, _status: u16, reason: &str, body: &mut Vec<u8>) -> &'static str {
        self.metrics
            .worker(self.index)
            .bt_http(bt_http::HttpOutcome::HTTP_FAULT);
        bencode::dict_begin(body);
        bencode::key_bytes(body, b"failure reason", reason.as_bytes());
        bencode::end(body);
        bt_http::CONTENT_TYPE
    }

    fn serve(
        &mut self,
        ctx: &ConnCtx,
        head: &RequestHead<'_>,
        _request_body: &[u8],
        body: &mut Vec<u8>,
    ) -> Answer {
        let list = current_list(&self.access);
        let core = Guarded {
            engine: &self.engine,
            access: list.as_deref(),
        };
        let outcome = self.front_end.handle_get_with(
            &core,
            ctx.peer,
            head.path,
            head.query,
            self.now,
            body,
            &mut self.scratch,
        );
        self.metrics.worker(self.index).bt_http(outcome.index());
        Answer {
            status: outcome.status,
            content_type: bt_http::CONTENT_TYPE,
        }
    }
}
