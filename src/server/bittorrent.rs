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

use crate::access_list::{AccessControl, AccessList};
use crate::config::Config;
use crate::engine::{
    BtPrefetch, BtUse, CompactPeers, Engine, ErrorCode, ListFamilies, PeerId, Request, RequestKind,
    Response, StatAnswer, SwarmId, SwarmStats, Time,
};
use crate::federation::{merge_peers, Federation, Lookup};
use crate::metrics::Metrics;
use crate::protocol::bencode;
use crate::protocol::bt_http::{self, HttpFrontEnd};
use crate::protocol::bt_udp::tracker::{write_compact, InfoHash, SwarmCounts};
use crate::protocol::bt_udp::{ConnectionIdSecret, Outcome, TrackerCore, UdpFrontEnd};
use crate::protocol::http::{HttpLimits, Methods, RequestHead};
use crate::runtime::{
    ConnCtx, DatagramCtx, DatagramService, DatagramSpec, DatagramWorker, ListenerSpec,
    StreamService, StreamWorker,
};

use super::http_serve::{Answer, HttpHandler, HttpWorker, LoadControl};
use super::{Clock, BT_HTTP_LISTENER, BT_UDP_LISTENER};
use crate::metrics::{Latency, Shed, ShedFrontEnd};
use crate::protocol::bt_udp::tracker::{Announce, AnnounceEvent};
use crate::protocol::bt_udp::wire::{
    peek_announce, peek_scrape_first, ErrorResponse, RequestHeader,
};

/// The engine as the BitTorrent codecs see it, with the access list in force for this request
/// (`None` when the list is off: no lock is taken at all).
struct Guarded<'a> {
    engine: &'a Engine,
    access: Option<&'a AccessList>,
    /// The tracker usage: accepted changes are recorded, announce peer lists merged with
    /// other nodes' registrations.
    federation: Option<&'a Federation>,
}

impl TrackerCore for Guarded<'_> {
    fn handle(&self, request: &Request, now: Time) -> Response {
        let response = self.engine.handle(request, now);
        if let Some(fed) = self.federation {
            fed.record(request, &response, now);
        }
        response
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
        let Some(fed) = self.federation else {
            // The hot path: the peer list is written from the table in wire form.
            return self.engine.announce_compact(request, now, families, peers);
        };
        peers.clear();
        // Distributed: the overlay's registrations of the swarm join the local peer list, so
        // the list is built as records first (not the hot path of a single node).
        let response = self.engine.handle(request, now);
        fed.record(request, &response, now);
        let mut answer = match response {
            Response::Ok(answer) => answer,
            Response::Err(code) => return Err(code),
        };
        let RequestKind::Announce {
            swarm_id,
            mode,
            addr,
            peer_num,
        } = &request.kind
        else {
            return Err(ErrorCode::BadRequest);
        };
        let limit = peer_num
            .and_then(|n| n.peer_count)
            .unwrap_or(self.engine.config().default_peer_count) as usize;
        let mut list = answer
            .swarm_results
            .iter_mut()
            .find_map(|r| r.peers.take())
            .unwrap_or_default();
        if let Lookup::Remote(remote) = fed.find_plan(swarm_id, &request.peer_id, now, true) {
            merge_peers(
                &mut list,
                &remote,
                &request.peer_id,
                Some(*mode),
                &[],
                limit,
                now.as_millis() ^ 0x5851_f42d,
            );
        }
        write_compact(&list, *mode, addr.addr, limit, families, peers);
        Ok(match answer.stat {
            Some(StatAnswer::Swarm(_, stats)) => stats,
            _ => SwarmStats::default(),
        })
    }

    fn counts(&self, src: SocketAddr, info_hash: &InfoHash, now: Time) -> SwarmCounts {
        TrackerCore::counts(self.engine, src, info_hash, now)
    }
}

/// A peer-list buffer with room for `peers` peers of either family.
fn compact_scratch(peers: usize) -> CompactPeers {
    CompactPeers {
        v4: Vec::with_capacity(peers * crate::engine::COMPACT_V4_LEN),
        v6: Vec::with_capacity(peers * crate::engine::COMPACT_V6_LEN),
    }
}

/// Most UDP announces one worker keeps waiting for the overlay; more are answered at once.
const MAX_DEFERRED: usize = 1024;

/// The BEP 15 error message of a shed request (and the `failure reason` over HTTP).
const OVERLOADED: &[u8] = b"tracker overloaded, retry later";

/// The `failure reason` of a request over the per-source rate limit.
const RATE_LIMITED: &[u8] = b"rate limited: too many requests from this address";

/// The swarm and peer of a BEP 15 announce, read ahead of the front-end to decide whether its
/// answer must wait for the overlay; `None` for anything else (and for `stopped`).
fn udp_announce_target(src: SocketAddr, packet: &[u8]) -> Option<(SwarmId, PeerId)> {
    // BEP 15 announce: connection_id 0..8, action 8..12 (1), transaction 12..16, info_hash
    // 16..36, ..., event 80..84, ..., port 96..98.
    if packet.len() < 98 || packet[8..12] != 1u32.to_be_bytes() {
        return None;
    }
    if packet[80..84] == 3u32.to_be_bytes() {
        return None;
    }
    let mut info_hash = [0u8; 20];
    info_hash.copy_from_slice(&packet[16..36]);
    let port = u16::from_be_bytes([packet[96], packet[97]]);
    let ip = crate::protocol::bt_udp::tracker::canonical_ip(src.ip());
    Some((
        crate::protocol::bt_udp::tracker::swarm_id(&info_hash),
        crate::protocol::bt_udp::tracker::bt_peer_id(ip, port),
    ))
}

/// The list in force now, or `None` when access control is off.
fn current_list(access: &AccessControl) -> Option<Arc<AccessList>> {
    (!access.is_off()).then(|| access.current())
}

/// Adds the enabled BitTorrent front-ends to the runtime's lists: one datagram socket group
/// per `bt_udp.listen` address and one TCP listener per `bt_http.listen` address.
#[allow(clippy::too_many_arguments)]
pub(crate) fn add_services(
    config: &Config,
    engine: &Arc<Engine>,
    metrics: &Arc<Metrics>,
    access: &Arc<AccessControl>,
    clock: Clock,
    federation: Option<&Arc<Federation>>,
    load: &LoadControl,
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
            federation: federation.cloned(),
            load: load.clone(),
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
        let tls = match h.tls.settings(None) {
            None => None,
            Some(settings) => {
                let acceptor = crate::runtime::tls::TlsAcceptor::new(settings)
                    .map_err(|e| anyhow::anyhow!("bt_http.tls: {e}"))?;
                Some(Arc::new(acceptor))
            }
        };
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
            tls,
            federation: federation.cloned(),
            load: load.clone(),
        });
        for addr in config.bt_http_addrs()? {
            listeners.push(ListenerSpec {
                name: BT_HTTP_LISTENER.to_owned(),
                addr,
                service: service.clone(),
                // Room for the largest request, so that every limit is answered.
                limits: config.server.conn_limits(
                    http_limits.max_request_bytes(),
                    h.max_pending_output_bytes,
                    h.max_connections,
                    h.idle_timeout_secs,
                ),
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
    pub federation: Option<Arc<Federation>>,
    /// Rate limit and overload shedding.
    pub load: LoadControl,
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
            federation: self.federation.clone(),
            deferred: Vec::new(),
            now: Time::default(),
            list: None,
            load: self.load.clone(),
            batch_at: std::time::Instant::now(),
            wait: None,
            prefetch: BtPrefetch::default(),
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
    federation: Option<Arc<Federation>>,
    /// Announces whose peer list waits for the overlay: (source, datagram).
    deferred: Vec<(SocketAddr, Vec<u8>)>,
    /// The clock and the access list, read once per received batch (and once per pass over
    /// the deferred announces).
    now: Time,
    list: Option<Arc<AccessList>>,
    load: LoadControl,
    /// The instant the current batch is served at, read once per batch (no clock read per
    /// datagram): a datagram's latency is recorded as the time from its arrival
    /// (`DatagramCtx::ready_at`) to its batch (its wait; the service of one datagram takes
    /// microseconds).
    batch_at: std::time::Instant,
    /// The wait from a `ready_at` to `batch_at`, and as a latency, computed once for the
    /// datagrams of a batch that share their `ready_at` (a turn's): `(ready_at, wait,
    /// latency)`. Cleared whenever `batch_at` is read again.
    wait: Option<(std::time::Instant, std::time::Duration, Latency)>,
    /// The staged prefetch of the swarms of the batch's next datagrams.
    prefetch: BtPrefetch,
}

impl BtUdpWorker {
    /// The wait of a datagram its turn learnt of at `ready_at`, until this batch, and the
    /// same as a latency (computed once per batch and `ready_at`).
    fn wait(&mut self, ready_at: std::time::Instant) -> (std::time::Duration, Latency) {
        match self.wait {
            Some((at, wait, latency)) if at == ready_at => (wait, latency),
            _ => {
                let wait = self.batch_at.saturating_duration_since(ready_at);
                let latency = Latency::new(wait);
                self.wait = Some((ready_at, wait, latency));
                (wait, latency)
            }
        }
    }

    /// Whether the answer to this datagram must wait for the overlay.
    fn must_wait(&self, src: SocketAddr, packet: &[u8]) -> bool {
        // The datagram is read only for a distributed tracker.
        let Some(fed) = self.federation.as_deref() else {
            return false;
        };
        let Some((swarm, peer)) = udp_announce_target(src, packet) else {
            return false;
        };
        fed.find_plan(&swarm, &peer, self.now, false) == Lookup::Wait
    }

    /// Answers one datagram the turn learnt of at `ready_at`.
    fn answer(
        &mut self,
        ready_at: std::time::Instant,
        src: SocketAddr,
        packet: &[u8],
        out: &mut Vec<u8>,
    ) -> bool {
        let core = Guarded {
            engine: &self.engine,
            access: self.list.as_deref(),
            federation: self.federation.as_deref(),
        };
        let outcome =
            self.front_end
                .handle_with(&core, src, packet, self.now, out, &mut self.scratch);
        self.finish(ready_at, outcome)
    }

    /// Counts `outcome` and its latency from `ready_at`; whether it is an answer to send.
    fn finish(&mut self, ready_at: std::time::Instant, outcome: Outcome) -> bool {
        let (_, latency) = self.wait(ready_at);
        let metrics = self.metrics.worker(self.index);
        metrics.bt_udp(outcome.index());
        metrics.latency_of(
            crate::metrics::latency_series_bt_udp(outcome.index()),
            latency,
        );
        matches!(outcome, Outcome::Reply(_))
    }

    /// The per-source rate limit, at the batch's instant: false (and counted) when `src` is
    /// over it. Such a datagram is dropped: an answer to a flood with forged sources would be
    /// reflected.
    fn admitted(&self, src: SocketAddr) -> bool {
        let Some(limiter) = &self.load.rate_limit else {
            return true;
        };
        let admitted = limiter.admit(src.ip(), self.batch_at);
        if !admitted {
            self.metrics
                .worker(self.index)
                .shed(ShedFrontEnd::BtUdp, Shed::RateLimited);
        }
        admitted
    }

    /// Reads the clock and the access list in force.
    fn refresh(&mut self) {
        self.now = self.clock.now();
        self.list = current_list(&self.access);
    }
}

impl DatagramWorker for BtUdpWorker {
    fn on_batch(&mut self) {
        // One clock reading per batch, for the engine's time and the load control.
        self.batch_at = std::time::Instant::now();
        self.wait = None;
        self.now = self.clock.at(self.batch_at);
        self.list = current_list(&self.access);
    }

    /// Starts the staged prefetch ([`BtPrefetch`]) of the swarm of an announce (with the
    /// requester's mode and the peers it will be listed), or of a scrape's first info-hash.
    fn prefetch(&self, packet: &[u8]) {
        if !self.engine.prefetch_bt_useful() {
            return;
        }
        // Only the fields that decide the prefetch, at their fixed offsets: the service
        // decodes the datagram when its turn comes.
        if let Some(fields) = peek_announce(packet) {
            let a = Announce::from(&fields);
            let what = if a.event == AnnounceEvent::Stopped {
                BtUse::Counts
            } else {
                BtUse::Announce {
                    mode: a.mode(),
                    want: self.front_end.limits().peer_count(a.num_want) as usize,
                }
            };
            self.prefetch.push(&self.engine, &a.info_hash, what);
        } else if let Some(info_hash) = peek_scrape_first(packet) {
            self.prefetch.push(&self.engine, &info_hash, BtUse::Counts);
        }
    }

    fn on_datagram(
        &mut self,
        ctx: &DatagramCtx,
        src: SocketAddr,
        packet: &[u8],
        out: &mut Vec<u8>,
    ) -> bool {
        // The staged prefetches of the next datagrams go on a step while this one is served.
        self.prefetch.advance(&self.engine);
        // Load control before the datagram is decoded, without a clock read per datagram:
        // the rate limit counts at the batch's instant; the runtime judged whether the
        // datagram waited long enough to be shed (`DatagramCtx::shed`, from its kernel
        // receive time).
        if !self.admitted(src) {
            return false;
        }
        if ctx.shed {
            self.metrics
                .worker(self.index)
                .shed(ShedFrontEnd::BtUdp, Shed::Overloaded);
            // BEP 15: an error answer carries the request's transaction id.
            let Some(header) = RequestHeader::peek(packet) else {
                return false;
            };
            ErrorResponse {
                transaction_id: header.transaction_id,
                message: OVERLOADED,
            }
            .encode(out);
            return true;
        }
        if self.deferred.len() < MAX_DEFERRED && self.must_wait(src, packet) {
            self.deferred.push((src, packet.to_vec()));
            self.metrics
                .worker(self.index)
                .queue_add(crate::metrics::QUEUE_BT_UDP_DEFERRED, 1);
            return false;
        }
        self.answer(ctx.ready_at, src, packet, out)
    }

    /// A datagram cut by the receive buffer: after the rate limit, the BEP 15 error its header
    /// calls for ([`UdpFrontEnd::handle_oversized`]), counted like any answer.
    fn on_oversized(
        &mut self,
        ctx: &DatagramCtx,
        src: SocketAddr,
        head: &[u8],
        out: &mut Vec<u8>,
    ) -> bool {
        if !self.admitted(src) {
            return false;
        }
        let outcome = self.front_end.handle_oversized(src, head, self.now, out);
        self.finish(ctx.ready_at, outcome)
    }

    fn take_deferred(&mut self, ctx: &DatagramCtx, out: &mut Vec<(SocketAddr, Vec<u8>)>) {
        if self.deferred.is_empty() {
            return;
        }
        self.refresh();
        self.batch_at = std::time::Instant::now();
        self.wait = None;
        let mut i = 0;
        while i < self.deferred.len() {
            let (src, packet) = &self.deferred[i];
            if self.must_wait(*src, packet) {
                i += 1;
                continue;
            }
            let (src, packet) = self.deferred.swap_remove(i);
            self.metrics
                .worker(self.index)
                .queue_add(crate::metrics::QUEUE_BT_UDP_DEFERRED, -1);
            let mut answer = Vec::new();
            if self.answer(ctx.ready_at, src, &packet, &mut answer) {
                out.push((src, answer));
            }
        }
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
    /// TLS of the listeners, when `[bt_http.tls]` is enabled.
    pub tls: Option<Arc<crate::runtime::tls::TlsAcceptor>>,
    pub federation: Option<Arc<Federation>>,
    /// Rate limit and overload shedding.
    pub load: LoadControl,
}

impl StreamService for BtHttpService {
    fn tls(&self) -> Option<Arc<crate::runtime::tls::TlsAcceptor>> {
        self.tls.clone()
    }

    fn worker(&self, worker: usize) -> Box<dyn StreamWorker> {
        Box::new(
            HttpWorker::new(
                BtHttpWorker {
                    engine: self.engine.clone(),
                    metrics: self.metrics.clone(),
                    access: self.access.clone(),
                    front_end: self.front_end.clone(),
                    clock: self.clock.clone(),
                    federation: self.federation.clone(),
                    now: self.clock.now(),
                    index: worker,
                    scratch: compact_scratch(self.front_end.limits().max_num_want as usize),
                },
                self.http_limits,
            )
            .with_load_control(self.load.clone()),
        )
    }
}

struct BtHttpWorker {
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    access: Arc<AccessControl>,
    front_end: HttpFrontEnd,
    clock: Clock,
    federation: Option<Arc<Federation>>,
    /// The time of the input being served.
    now: Time,
    index: usize,
    /// Peer lists of announces, reused.
    scratch: CompactPeers,
}

impl HttpHandler for BtHttpWorker {
    fn allowed_methods(&self, _path: &str) -> Option<Methods> {
        // Announces and scrapes are GETs (BEP 3, BEP 48).
        const GET_HEAD: Methods = Methods::new("GET, HEAD");
        Some(GET_HEAD)
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

    /// A shed request gets a `failure reason` with status 200, as every BitTorrent error.
    fn shed(&mut self, why: Shed, body: &mut Vec<u8>) -> Answer {
        self.metrics
            .worker(self.index)
            .shed(ShedFrontEnd::BtHttp, why);
        bencode::dict_begin(body);
        let reason = match why {
            Shed::RateLimited => RATE_LIMITED,
            Shed::Overloaded => OVERLOADED,
        };
        bencode::key_bytes(body, b"failure reason", reason);
        bencode::end(body);
        Answer {
            status: 200,
            content_type: bt_http::CONTENT_TYPE,
        }
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
            federation: self.federation.as_deref(),
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
        let metrics = self.metrics.worker(self.index);
        metrics.bt_http(outcome.index());
        metrics.latency(
            crate::metrics::latency_series_bt_http(outcome.index()),
            ctx.ready_at.elapsed(),
        );
        Answer {
            status: outcome.status,
            content_type: bt_http::CONTENT_TYPE,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::protocol::bt_udp::tracker::BtLimits;
    use crate::protocol::bt_udp::tracker::Family;
    use crate::protocol::bt_udp::wire::{decode_response, ConnectRequest, UdpResponse};

    fn worker(shed_after: Duration) -> (Box<dyn DatagramWorker>, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new(1));
        let service = BtUdpService {
            engine: Arc::new(Engine::new(&crate::engine::EngineConfig::default())),
            metrics: metrics.clone(),
            access: Arc::new(AccessControl::off()),
            front_end: UdpFrontEnd::new(
                ConnectionIdSecret::from_bytes([1; 16]),
                BtLimits::default(),
            ),
            clock: Clock::new(),
            federation: None,
            load: LoadControl {
                rate_limit: None,
                shed_after,
            },
        };
        (service.worker(0), metrics)
    }

    fn ctx(ready_at: Instant, shed: bool) -> DatagramCtx {
        DatagramCtx {
            worker: 0,
            socket: 0,
            local: "127.0.0.1:6969".parse().unwrap(),
            ready_at,
            shed,
        }
    }

    /// A datagram the runtime judged to be shed (`DatagramCtx::shed`: it waited past the
    /// delay in the kernel) gets BEP 15's error answer with its transaction id, counted; one
    /// not judged so is served, however long ago it arrived. The instants are set, not waited
    /// for.
    #[test]
    fn a_datagram_judged_to_be_shed_gets_the_overload_error() {
        let src: SocketAddr = "127.0.0.2:4000".parse().unwrap();
        let mut connect = Vec::new();
        ConnectRequest {
            transaction_id: 0x0a0b_0c0d,
        }
        .encode(&mut connect);
        let (mut w, metrics) = worker(Duration::from_millis(50));
        w.on_batch();
        let mut out = Vec::new();
        assert!(w.on_datagram(&ctx(Instant::now(), false), src, &connect, &mut out));
        assert!(matches!(
            decode_response(&out, Family::V4, 0),
            Ok(UdpResponse::Connect(c)) if c.transaction_id == 0x0a0b_0c0d
        ));
        let long_ago = Instant::now() - Duration::from_secs(1);
        out.clear();
        assert!(w.on_datagram(&ctx(long_ago, true), src, &connect, &mut out));
        match decode_response(&out, Family::V4, 0) {
            Ok(UdpResponse::Error(e)) => {
                assert_eq!(e.transaction_id, 0x0a0b_0c0d);
                assert_eq!(e.message, OVERLOADED);
            }
            other => panic!("expected the overload error, got {other:?}"),
        }
        assert_eq!(metrics.shed(ShedFrontEnd::BtUdp, Shed::Overloaded), 1);
        // Not judged to be shed: served, however old.
        out.clear();
        assert!(w.on_datagram(&ctx(long_ago, false), src, &connect, &mut out));
        assert!(matches!(
            decode_response(&out, Family::V4, 0),
            Ok(UdpResponse::Connect(_))
        ));
        assert_eq!(metrics.shed(ShedFrontEnd::BtUdp, Shed::Overloaded), 1);
    }
}
