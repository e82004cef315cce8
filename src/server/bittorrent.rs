//! The BitTorrent services: the BEP 15 UDP tracker (one datagram in, at most one out) and the
//! HTTP tracker (`GET /announce`, `GET /scrape`), both driving the shared engine through the
//! sans-IO front-ends in `protocol::bt_udp` and `protocol::bt_http`.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::protocol::bencode;
use crate::protocol::bt_http::{self, HttpFrontEnd};
use crate::protocol::bt_udp::{Outcome, UdpFrontEnd};
use crate::protocol::http::{self, Framed, HttpLimits};
use crate::runtime::{
    ConnCtx, DatagramCtx, DatagramService, DatagramWorker, StreamService, StreamStep, StreamWorker,
};

use super::Clock;

/// The UDP tracker service.
pub(crate) struct BtUdpService {
    pub engine: Arc<Engine>,
    pub metrics: Arc<Metrics>,
    pub front_end: Arc<UdpFrontEnd>,
    pub clock: Clock,
}

impl DatagramService for BtUdpService {
    fn worker(&self, worker: usize) -> Box<dyn DatagramWorker> {
        Box::new(BtUdpWorker {
            engine: self.engine.clone(),
            metrics: self.metrics.clone(),
            front_end: self.front_end.clone(),
            clock: self.clock,
            index: worker,
        })
    }
}

struct BtUdpWorker {
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    front_end: Arc<UdpFrontEnd>,
    clock: Clock,
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
        let outcome = self
            .front_end
            .handle(&*self.engine, src, packet, self.clock.now(), out);
        self.metrics.worker(self.index).bt_udp(outcome.name());
        matches!(outcome, Outcome::Reply(_))
    }
}

/// The HTTP tracker service.
pub(crate) struct BtHttpService {
    pub engine: Arc<Engine>,
    pub metrics: Arc<Metrics>,
    pub front_end: Arc<HttpFrontEnd>,
    pub http_limits: HttpLimits,
    pub clock: Clock,
}

impl StreamService for BtHttpService {
    fn worker(&self, worker: usize) -> Box<dyn StreamWorker> {
        Box::new(BtHttpWorker {
            engine: self.engine.clone(),
            metrics: self.metrics.clone(),
            front_end: self.front_end.clone(),
            http_limits: self.http_limits,
            clock: self.clock,
            index: worker,
            body: Vec::with_capacity(1024),
        })
    }
}

struct BtHttpWorker {
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    front_end: Arc<HttpFrontEnd>,
    http_limits: HttpLimits,
    clock: Clock,
    index: usize,
    /// Reused for every bencoded body this worker writes.
    body: Vec<u8>,
}

impl BtHttpWorker {
    /// Answers an HTTP-level fault with a bencoded `failure reason`, as trackers do.
    fn fault(&mut self, out: &mut Vec<u8>, status: u16, reason: &[u8], keep_alive: bool) {
        self.metrics.worker(self.index).bt_http("http_fault");
        self.body.clear();
        bencode::dict_begin(&mut self.body);
        bencode::key_bytes(&mut self.body, b"failure reason", reason);
        bencode::end(&mut self.body);
        http::write_response(out, status, bt_http::CONTENT_TYPE, &self.body, keep_alive);
    }
}

impl StreamWorker for BtHttpWorker {
    fn on_input(&mut self, ctx: &ConnCtx, input: &[u8], out: &mut Vec<u8>) -> StreamStep {
        let now = self.clock.now();
        let mut consumed = 0;
        while out.len() < ctx.output_limit {
            let rest = match input.get(consumed..) {
                Some(rest) if !rest.is_empty() => rest,
                _ => break,
            };
            match http::frame_request(rest, &self.http_limits) {
                Framed::Incomplete => break,
                Framed::Error(e) => {
                    self.fault(out, e.status(), e.to_string().as_bytes(), false);
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
                        self.fault(out, 500, b"internal error", false);
                        return StreamStep {
                            consumed: input.len(),
                            close: true,
                        };
                    }
                    consumed += used;
                    if head.method != "GET" {
                        self.fault(out, 405, b"method not allowed", head.keep_alive);
                    } else {
                        let outcome = self.front_end.handle_get(
                            &*self.engine,
                            ctx.peer,
                            head.path,
                            head.query,
                            now,
                            &mut self.body,
                        );
                        self.metrics.worker(self.index).bt_http(outcome.name());
                        http::write_response(
                            out,
                            outcome.status,
                            bt_http::CONTENT_TYPE,
                            &self.body,
                            head.keep_alive,
                        );
                    }
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
}
