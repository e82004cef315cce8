//! The PPSTP (RFC 7846) service: the media-type check, decoding, the engine call and the
//! answer of each request; framing and method rules are the shared loop's (`http_serve`).

use std::sync::Arc;

use crate::access_list::AccessControl;
use crate::engine::{Engine, ErrorCode, PpstpPrefetch, Response, Time};
use crate::metrics::{request_index, Metrics, REQUEST_TYPES, UNDECODED};
use crate::protocol::http::{HttpLimits, Methods, RequestHead};
use crate::protocol::ppstp::{self, DecodeLimits, Decoded, CONTENT_TYPE};
use crate::runtime::tls::TlsAcceptor;
use crate::runtime::{ConnCtx, StreamService, StreamWorker};

use super::auth::{Identity, PeerAuth, Refusal};
use super::http_serve::{Answer, HttpHandler, HttpWorker, InPlace, LoadControl};
use super::Clock;
use crate::metrics::{Shed, ShedFrontEnd};

/// Shared, read-only state of the PPSTP service.
pub(crate) struct PpstpService {
    pub engine: Arc<Engine>,
    pub access: Arc<AccessControl>,
    pub metrics: Arc<Metrics>,
    pub http_limits: HttpLimits,
    pub decode_limits: DecodeLimits,
    pub clock: Clock,
    /// Peer authentication (RFC 7846 §4), consulted before the engine.
    pub auth: Arc<PeerAuth>,
    /// TLS of the listener, when `[ppstp.tls]` is enabled.
    pub tls: Option<Arc<TlsAcceptor>>,
    /// The tracker usage of the overlay, when `overlay.enabled`.
    pub federation: Option<Arc<crate::federation::Federation>>,
    /// Rate limit and overload shedding.
    pub load: LoadControl,
}

/// The [`StreamService`] handed to the runtime.
pub(crate) struct PpstpStreams(pub Arc<PpstpService>);

impl StreamService for PpstpStreams {
    fn worker(&self, worker: usize) -> Box<dyn StreamWorker> {
        let limits = self.0.http_limits;
        Box::new(
            HttpWorker::new(
                PpstpWorker {
                    service: self.0.clone(),
                    index: worker,
                    now: self.0.clock.now(),
                    challenge: String::new(),
                    waiting: false,
                    decoded: Decoded::empty(std::net::SocketAddr::from(([0, 0, 0, 0], 0))),
                    response: Response::Err(ErrorCode::Ok),
                    batch: Batch::default(),
                    prefetch: PpstpPrefetch::default(),
                },
                limits,
            )
            .with_load_control(self.0.load.clone()),
        )
    }

    fn tls(&self) -> Option<Arc<TlsAcceptor>> {
        self.0.tls.clone()
    }
}

struct PpstpWorker {
    service: Arc<PpstpService>,
    index: usize,
    /// The time of the input being served.
    now: Time,
    /// The `WWW-Authenticate` line of the answer being written (empty: none).
    challenge: String,
    /// The last request served waits for the overlay.
    waiting: bool,
    /// The request being served, decoded into the previous one's place (its transaction id's
    /// string and action vector reused).
    decoded: Decoded,
    /// The answer being written, computed into the previous one's place (its swarm results
    /// and peer lists reused): CONNECT, FIND and JOIN allocate nothing in steady state.
    response: Response,
    /// The requests answered in the batch being served, timed together when it ends.
    batch: Batch,
    /// The staged prefetch of the requests pipelined behind the one being served (large
    /// tables only, [`Engine::prefetch_ppstp_useful`]).
    prefetch: PpstpPrefetch,
}

/// The requests answered in one batch of input, by latency series (the request types of
/// [`crate::metrics::REQUEST_TYPES`]), and when the turn that read them began: their latency
/// is recorded with one clock reading when the batch ends.
#[derive(Default)]
struct Batch {
    answered: [u32; REQUEST_TYPES.len()],
    ready_at: Option<std::time::Instant>,
}

impl Batch {
    /// A request of latency series `series` was answered on the connection of `ctx`.
    fn answered(&mut self, series: usize, ctx: &ConnCtx) {
        if let Some(n) = self.answered.get_mut(series) {
            *n += 1;
            // One connection per batch: its turn began at `ctx.ready_at`.
            self.ready_at.get_or_insert(ctx.ready_at);
        }
    }
}

/// True for `application/ppsp-tracker+json`, ignoring case, surrounding blanks and parameters
/// such as `; charset=utf-8`.
pub(crate) fn is_ppstp_media_type(value: &[u8]) -> bool {
    // What clients send: one comparison instead of a scan for parameters and a
    // case-insensitive comparison per request.
    if value == CONTENT_TYPE.as_bytes() {
        return true;
    }
    let media = value.split(|b| *b == b';').next().unwrap_or(&[]);
    media
        .trim_ascii()
        .eq_ignore_ascii_case(CONTENT_TYPE.as_bytes())
}

/// What a request gets, before it is written.
enum Reply {
    /// The answer waits for the overlay.
    Wait,
    /// A PPSTP answer (HTTP status from its error code): the worker's `response`, with the
    /// transaction id of its `decoded` when the flag is set.
    Ppstp(bool),
    /// 415: the request does not carry the PPSTP media type.
    UnsupportedMediaType,
}

/// The PPSTP answer: its JSON body is in the loop's body buffer.
fn answer(
    response: &Response,
    transaction_id: Option<&ppstp::TransactionId>,
    body: &mut Vec<u8>,
) -> Answer {
    ppstp::encode_response(response, transaction_id, body);
    Answer {
        status: ppstp::http_status(response.error_code()),
        content_type: CONTENT_TYPE,
    }
}

impl PpstpWorker {
    /// Answers a request that is not authenticated (401, error 06, with the challenge) or
    /// whose certificate is bound to no peer (403, error 03). Nothing reaches the engine.
    fn refuse(&mut self, refusal: Refusal) -> Reply {
        let code = match refusal {
            Refusal::Challenge(header) => {
                self.challenge = header;
                ErrorCode::AuthenticationRequired
            }
            Refusal::Unbound => ErrorCode::Forbidden,
        };
        let metrics = self.service.metrics.worker(self.index);
        metrics.request(UNDECODED);
        metrics.error(UNDECODED, code);
        self.response = Response::Err(code);
        Reply::Ppstp(false)
    }

    /// Authenticates, decodes and serves one request.
    fn reply(&mut self, ctx: &ConnCtx, head: &RequestHead<'_>, request_body: &[u8]) -> Reply {
        // The prefetches of the requests behind this one go on a step while it is served.
        self.prefetch.advance(&self.service.engine);
        // RFC 7846 §4: with authentication on, nothing is looked at before the credentials.
        self.challenge.clear();
        let identity = if self.service.auth.is_off() {
            Identity::Anyone
        } else {
            match self
                .service
                .auth
                .authenticate(ctx, head, std::time::Instant::now())
            {
                Ok(identity) => identity,
                Err(refusal) => return self.refuse(refusal),
            }
        };
        // RFC 7846 §7.1: requests carry the PPSTP media type.
        if !head.content_type.is_some_and(is_ppstp_media_type) {
            self.service.metrics.worker(self.index).http_fault(415);
            return Reply::UnsupportedMediaType;
        }
        let service = &*self.service;
        let metrics = service.metrics.worker(self.index);
        match ppstp::decode_request_into(
            request_body,
            ctx.peer,
            &service.decode_limits,
            &mut self.decoded,
        ) {
            Err(e) => {
                metrics.request(UNDECODED);
                metrics.error(UNDECODED, e.code);
                self.batch.answered(UNDECODED, ctx);
                self.response = Response::Err(e.code);
                let with_id = e.transaction_id.is_some();
                if let Some(t) = e.transaction_id {
                    self.decoded.transaction_id = t;
                }
                Reply::Ppstp(with_id)
            }
            Ok(()) => {
                let request = &self.decoded.request;
                let kind = request_index(&request.kind);
                // The access list refuses swarms with 03 (forbidden action).
                let refused = !service.access.is_off()
                    && !service.access.current().permits_request(&request.kind);
                // An authenticated peer acts only under its own id (03, forbidden action).
                let impersonating = !identity.permits(request.peer_id.as_bytes());
                if refused || impersonating {
                    self.response = Response::Err(ErrorCode::Forbidden);
                } else if service.federation.is_none() {
                    service
                        .engine
                        .handle_into(request, self.now, &mut self.response);
                } else {
                    match super::federated::handle(
                        &service.engine,
                        service.federation.as_deref(),
                        request,
                        self.now,
                    ) {
                        super::federated::Handled::Answer(r) => self.response = r,
                        super::federated::Handled::Wait => {
                            self.waiting = true;
                            return Reply::Wait;
                        }
                    }
                }
                metrics.request(kind);
                metrics.error(kind, self.response.error_code());
                // PPSTP latency series are indexed like the request types; the time runs
                // from the turn that learnt of the request to the end of the batch that
                // answered it.
                self.batch.answered(kind, ctx);
                Reply::Ppstp(true)
            }
        }
    }
}

impl HttpHandler for PpstpWorker {
    fn allowed_methods(&self, _path: &str) -> Option<Methods> {
        // RFC 7846 §7.1: requests are HTTP POSTs.
        const POST: Methods = Methods::new("POST");
        Some(POST)
    }

    fn begin_input(&mut self) {
        self.now = self.service.clock.now();
    }

    fn end_input(&mut self) {
        let Some(ready_at) = self.batch.ready_at.take() else {
            return;
        };
        let elapsed = ready_at.elapsed();
        let metrics = self.service.metrics.worker(self.index);
        for (series, n) in self.batch.answered.iter_mut().enumerate() {
            if *n > 0 {
                metrics.latency_n(series, elapsed, u64::from(std::mem::take(n)));
            }
        }
    }

    /// Requests ahead are prefetched only while the tables are far beyond the caches: below
    /// that, finding a request's ids and probing ahead cost more than the misses they hide
    /// (100k peers / 10k swarms, FIND-heavy: 3.38-3.42 us of server CPU per reply without a
    /// prefetch, 3.59-3.61 us with one).
    fn prefetch_ahead(&self) -> usize {
        if self.service.engine.prefetch_ppstp_useful() {
            PpstpPrefetch::AHEAD
        } else {
            0
        }
    }

    /// Notes a pipelined request's registration and swarm for the staged prefetch, its ids
    /// found by a scan of the body ([`ppstp::likely_ids`]), not a decoding: it is decoded,
    /// authenticated and checked as usual when its turn comes.
    fn prefetch(&mut self, _head: &RequestHead<'_>, request_body: &[u8]) {
        if let (Some(peer_id), swarm_id) = ppstp::likely_ids(request_body) {
            self.prefetch
                .push_ids(&self.service.engine, peer_id, swarm_id);
        }
    }

    fn take_wait(&mut self) -> bool {
        std::mem::take(&mut self.waiting)
    }

    fn fault(&mut self, status: u16, _reason: &str, body: &mut Vec<u8>) -> &'static str {
        // An HTTP-level fault gets the PPSTP JSON error body (error code 01).
        self.service.metrics.worker(self.index).http_fault(status);
        ppstp::encode_response(&Response::Err(ErrorCode::BadRequest), None, body);
        CONTENT_TYPE
    }

    fn extra_headers(&self) -> &[u8] {
        self.challenge.as_bytes()
    }

    /// RFC 7846 §6.2: error 05 (service unavailable) with HTTP 503; the request is not
    /// decoded, so the answer carries no transaction id.
    fn shed(&mut self, why: Shed, body: &mut Vec<u8>) -> Answer {
        self.challenge.clear();
        self.service
            .metrics
            .worker(self.index)
            .shed(ShedFrontEnd::Ppstp, why);
        answer(&Response::Err(ErrorCode::ServiceUnavailable), None, body)
    }

    fn serve(
        &mut self,
        ctx: &ConnCtx,
        head: &RequestHead<'_>,
        request_body: &[u8],
        body: &mut Vec<u8>,
    ) -> Answer {
        match self.reply(ctx, head, request_body) {
            Reply::Wait => Answer {
                status: 0,
                content_type: CONTENT_TYPE,
            },
            Reply::Ppstp(with_id) => answer(
                &self.response,
                with_id.then_some(&self.decoded.transaction_id),
                body,
            ),
            Reply::UnsupportedMediaType => {
                ppstp::encode_response(&Response::Err(ErrorCode::BadRequest), None, body);
                Answer {
                    status: 415,
                    content_type: CONTENT_TYPE,
                }
            }
        }
    }

    fn in_place(&self) -> bool {
        true
    }

    /// The answer's JSON is encoded straight into the connection's output after the head (the
    /// transaction id borrowed from the decoded request), its Content-Length filled in after.
    fn serve_in_place(
        &mut self,
        ctx: &ConnCtx,
        head: &RequestHead<'_>,
        request_body: &[u8],
        out: &mut InPlace<'_>,
    ) {
        match self.reply(ctx, head, request_body) {
            Reply::Wait => {}
            Reply::Ppstp(with_id) => {
                let status = ppstp::http_status(self.response.error_code());
                let transaction_id = with_id.then_some(&self.decoded.transaction_id);
                out.expect_body(ppstp::typical_response_len(&self.response, transaction_id));
                let body = out.start(status, CONTENT_TYPE, self.challenge.as_bytes());
                ppstp::encode_response(&self.response, transaction_id, body);
            }
            Reply::UnsupportedMediaType => {
                let body = out.start(415, CONTENT_TYPE, self.challenge.as_bytes());
                ppstp::encode_response(&Response::Err(ErrorCode::BadRequest), None, body);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_type_tolerates_case_blanks_and_parameters() {
        assert!(is_ppstp_media_type(b"application/ppsp-tracker+json"));
        assert!(is_ppstp_media_type(b"Application/PPSP-Tracker+JSON"));
        assert!(is_ppstp_media_type(
            b" application/ppsp-tracker+json ; charset=utf-8"
        ));
        assert!(!is_ppstp_media_type(b"application/json"));
        assert!(!is_ppstp_media_type(b"application/ppsp-tracker+jsonx"));
        assert!(!is_ppstp_media_type(b""));
        assert!(!is_ppstp_media_type(b";application/ppsp-tracker+json"));
    }
}
