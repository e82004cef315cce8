//! The one pipelined HTTP/1.1 serving loop of every HTTP listener (PPSTP, the BitTorrent HTTP
//! tracker, admin). It frames requests one after another out of a connection's input with
//! `protocol::http`, applies the method rules, and lets an [`HttpHandler`] answer each request;
//! what the handler answers is written with one response writer. HTTP semantics therefore live
//! here once:
//!
//! - RFC 9110 §9.3.2: the answer to HEAD has the header fields the GET answer would have,
//!   `Content-Length` included, and no body, so the next answer on a keep-alive connection
//!   starts right after it. HEAD is served as GET wherever GET is allowed.
//! - RFC 9110 §15.5.6: a method the target does not allow gets 405 with `Allow`.
//! - A request that cannot be framed (400, 411, 413, 431) is answered and the connection
//!   closed: the stream cannot be re-synchronised. Its answer has no body when the request
//!   is a HEAD, judged from its first bytes when the head itself was refused.
//! - An HTTP/1.0 client's kept connection is announced (`Connection: keep-alive`), and a
//!   client waiting on `Expect: 100-continue` gets `100 Continue` once its head is framed. The listener's input cap is at least
//!   [`HttpLimits::max_request_bytes`], so every limit is answered with its status before the
//!   runtime would have to drop the connection.
//! - A connection over the listener's `max_connections` is answered 503 and closed, and a
//!   request that misses its deadline (`request_timeout`) 408.
//! - Load control, checked per framed request before the handler decodes it: a source over
//!   the rate limit ([`crate::runtime::sources::SourceRateLimiter`]) gets the handler's
//!   overload answer ([`HttpHandler::shed`]) for that request, and the connection stays open.
//!   While the worker's turns take longer than the shedding delay ([`ConnCtx::ready_at`]),
//!   connections are shed whole, at the pace [`ShedControl`] sets: the connection's first
//!   waiting request gets the overload answer with `Retry-After` and `Connection: close`, the
//!   requests pipelined behind it are dropped unanswered (RFC 9112 §9.6: the client retries
//!   them on a new connection), and the connection is closed. One answer then sheds a whole
//!   pipeline, so an overloaded worker spends its time serving rather than answering the
//!   excess one request at a time, and shed connections give their descriptors and buffers
//!   back at once.
//! - Answers stop at the runtime's output limit; the rest of the input waits for the client to
//!   read.
//! - A handler that answers in place ([`HttpHandler::in_place`]) writes its body straight after
//!   the head in the connection's output, and the exact `Content-Length` is filled in after:
//!   the body is written once, never copied (the same bytes as an answer through a buffer).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::metrics::Shed;
use crate::protocol::http::{
    self, AnswerInPlace, Framed, HttpLimits, Methods, RequestHead, ResponseHead,
};
use crate::runtime::control_law::ControlLaw;
use crate::runtime::sources::SourceRateLimiter;
use crate::runtime::{ConnCtx, StreamStep, StreamWorker};

/// What a handler answered: the status and content type of the body it wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Answer {
    pub status: u16,
    pub content_type: &'static str,
}

/// The per-request half of an HTTP listener.
pub(crate) trait HttpHandler {
    /// The methods `path` accepts (`Methods::new("GET, HEAD")`, a constant): a method not in
    /// the set gets 405 with the set as `Allow`. `None` lets every method through to
    /// [`HttpHandler::serve`] (which then answers 404, say).
    fn allowed_methods(&self, path: &str) -> Option<Methods>;

    /// Called once per batch of input, before its requests are served (to read the clock once).
    fn begin_input(&mut self) {}

    /// Called once per batch of input, after its requests are served and before their answers
    /// are sent (to time them with one clock reading).
    fn end_input(&mut self) {}

    /// The worker's periodic timer (every `server.tick_ms`), for handlers that sample or expire.
    fn on_tick(&mut self, _now: std::time::Instant) {}

    /// Answers one request: writes the body into `body` (empty on entry) and returns its status
    /// and content type. A HEAD request arrives as GET; the loop drops the body.
    fn serve(
        &mut self,
        ctx: &ConnCtx,
        head: &RequestHead<'_>,
        request_body: &[u8],
        body: &mut Vec<u8>,
    ) -> Answer;

    /// Whether requests are answered by [`HttpHandler::serve_in_place`] rather than
    /// [`HttpHandler::serve`].
    fn in_place(&self) -> bool {
        false
    }

    /// Answers one request in place: calls [`InPlace::start`] once with the status, and writes
    /// the body into the buffer it returns (the connection's output, right after the head). A
    /// HEAD request arrives as GET; the loop drops the body. Not calling `start` is right only
    /// for a request that waits ([`HttpHandler::take_wait`]); otherwise the loop answers 500.
    fn serve_in_place(
        &mut self,
        _ctx: &ConnCtx,
        _head: &RequestHead<'_>,
        _request_body: &[u8],
        _answer: &mut InPlace<'_>,
    ) {
    }

    /// How many pipelined requests ahead of the one being served the loop offers to
    /// [`HttpHandler::prefetch`] (at most [`MAX_AHEAD`]; 0, the default: none). Asked once
    /// per batch of input.
    fn prefetch_ahead(&self) -> usize {
        0
    }

    /// A request framed behind the one about to be served, in the same input (offered once,
    /// in order, [`HttpHandler::prefetch_ahead`] requests ahead): the handler may start
    /// loading what answering it will read (a cache prefetch), so that the misses of
    /// consecutive requests overlap. Must change nothing a client can observe: the request is
    /// served later as usual (or never, if the connection is closed or shed first).
    fn prefetch(&mut self, _head: &RequestHead<'_>, _request_body: &[u8]) {}

    /// True when the request just given to [`HttpHandler::serve`] must wait (for the overlay):
    /// what `serve` returned is dropped, the request is left unconsumed in its place, and the
    /// runtime offers it again when woken. Asked once after each `serve`.
    fn take_wait(&mut self) -> bool {
        false
    }

    /// Writes the body of the answer to a fault: a request that could not be framed (400,
    /// 411, 413, 431), a method not allowed (405) or an internal error (500). `reason` is a
    /// short English text. Returns the content type.
    fn fault(&mut self, status: u16, reason: &str, body: &mut Vec<u8>) -> &'static str;

    /// Header lines (each ending in CRLF) to add to the answer [`HttpHandler::serve`] just
    /// gave, such as a `WWW-Authenticate` challenge.
    fn extra_headers(&self) -> &[u8] {
        &[]
    }

    /// Writes the answer to a request shed for `why` (the protocol's overload error) and
    /// counts it. The default: 503 with the fault body.
    fn shed(&mut self, _why: Shed, body: &mut Vec<u8>) -> Answer {
        let content_type = self.fault(503, "service unavailable", body);
        Answer {
            status: 503,
            content_type,
        }
    }
}

/// The load control of an HTTP listener (see the module comment); the default does nothing.
#[derive(Clone, Default)]
pub(crate) struct LoadControl {
    /// Per-source request rate limit, shared by every worker.
    pub rate_limit: Option<Arc<SourceRateLimiter>>,
    /// Shed a connection's requests once it has waited this long in the worker; zero: never.
    pub shed_after: Duration,
}

/// Which connections an overloaded worker sheds, and when (one per HTTP listener per worker).
///
/// Shedding a connection (one overload answer with `Retry-After`, the pipeline behind it
/// dropped, the connection closed) takes away all of that client's load for the time it waits,
/// which is far more than one request: shedding every connection that waited past the delay at
/// once removes many times the excess, and the worker then idles while they wait. So, as
/// CoDel does for packets (RFC 8289 §5), sheds are spaced by a control law:
///
/// - The signal is the length of the worker's event-loop turns, read from
///   [`ConnCtx::ready_at`] (the current turn's start): a turn whose age reaches
///   `target` (the shedding delay) is behind; a turn seen to end short of it ends the
///   overload.
/// - While turns stay behind, connections are shed at the pace of CoDel's control law
///   ([`ControlLaw`], shared with the datagram sockets): the first once turns have been
///   behind without a break for twice `target`, then at a pace that grows with the
///   overload's length until the worker catches up; a new episode soon after the last
///   resumes near its pace.
///
/// At a steady overload with clients that honour `Retry-After`, the rate settles near what
/// keeps the offered load at the worker's capacity; clients that ignore it are shed no faster
/// than the control law allows, their requests meanwhile waiting in their own connections
/// (each bounded by the listener's input cap).
#[derive(Clone, Debug)]
pub(crate) struct ShedControl {
    target: Duration,
    /// The start of the latest turn seen, and the latest instant seen in it.
    turn: Option<(Instant, Instant)>,
    law: ControlLaw,
}

impl ShedControl {
    /// A controller shedding once turns have been behind `target` for `2 x target`.
    pub fn new(target: Duration) -> Self {
        ShedControl {
            target,
            turn: None,
            law: ControlLaw::new(target),
        }
    }

    /// Whether the connection served now, in the turn that started at `ready_at`, is shed.
    pub fn shed(&mut self, ready_at: Instant, now: Instant) -> bool {
        match self.turn {
            Some((start, last)) if start == ready_at => self.turn = Some((start, last.max(now))),
            previous => {
                // A new turn: the previous one, as far as it was seen, ended short of the
                // target: the worker caught up.
                if previous.is_some_and(|(start, last)| {
                    last.saturating_duration_since(start) < self.target
                }) {
                    self.law.fresh(now);
                }
                self.turn = Some((ready_at, now));
            }
        }
        if now.saturating_duration_since(ready_at) < self.target || !self.law.due(now) {
            return false;
        }
        self.law.shed(now);
        true
    }
}

/// An answer being written into the connection's output by
/// [`HttpHandler::serve_in_place`].
pub(crate) struct InPlace<'a> {
    out: &'a mut Vec<u8>,
    /// Where this answer starts in `out`.
    from: usize,
    keep_alive: bool,
    http10: bool,
    head_only: bool,
    /// The path's allowed methods, written as `Allow` on a 405.
    allowed: Option<Methods>,
    digits_hint: usize,
    started: Option<AnswerInPlace>,
}

impl InPlace<'_> {
    /// The body about to be written will be about `bytes` long: room is reserved for that
    /// many digits of its `Content-Length` (instead of the previous answer's), so that the body
    /// rarely has to move when the exact length is filled in. Call before [`InPlace::start`].
    pub fn expect_body(&mut self, bytes: usize) {
        self.digits_hint = bytes.checked_ilog10().map_or(1, |d| d as usize + 1);
    }

    /// Writes the head (`status`, `content_type`, the header lines `extra`, each ending in
    /// CRLF) and returns the buffer the body goes into. A second call starts over.
    pub fn start(&mut self, status: u16, content_type: &str, extra: &[u8]) -> &mut Vec<u8> {
        self.out.truncate(self.from);
        let head = ResponseHead {
            status,
            content_type,
            allow: self.allowed.filter(|_| status == 405).map(Methods::allow),
            keep_alive: self.keep_alive,
            http10: self.http10,
            head_only: self.head_only,
            extra,
        };
        self.started = Some(http::begin_answer(self.out, &head, self.digits_hint));
        self.out
    }
}

/// The loop: a [`StreamWorker`] serving pipelined requests with `H`.
pub(crate) struct HttpWorker<H> {
    handler: H,
    limits: HttpLimits,
    load: LoadControl,
    /// Which connections are shed while the worker is behind (`load.shed_after` set).
    shedding: Option<ShedControl>,
    /// Reused for every answer body.
    body: Vec<u8>,
    /// Digits of the last in-place answer's `Content-Length`: the room reserved for the next.
    digits_hint: usize,
}

impl<H: HttpHandler> HttpWorker<H> {
    pub fn new(handler: H, limits: HttpLimits) -> Self {
        HttpWorker {
            handler,
            limits,
            load: LoadControl::default(),
            shedding: None,
            body: Vec::with_capacity(4096),
            digits_hint: 4,
        }
    }

    /// Applies `load` to every request of this worker.
    pub fn with_load_control(mut self, load: LoadControl) -> Self {
        self.shedding = (!load.shed_after.is_zero()).then(|| ShedControl::new(load.shed_after));
        self.load = load;
        self
    }

    /// Whether the request about to be served must be shed for its source's rate limit.
    fn shed_reason(&self, ctx: &ConnCtx, now: Option<Instant>) -> Option<Shed> {
        match (&self.load.rate_limit, now) {
            (Some(limiter), Some(now)) if !limiter.admit(ctx.peer.ip(), now) => {
                Some(Shed::RateLimited)
            }
            _ => None,
        }
    }

    /// Writes the overload answer to one framed request; `close` ends the connection after it
    /// (the answer then says `Connection: close` and asks the client to retry after 1 s,
    /// RFC 9110 §10.2.3).
    fn shed(&mut self, why: Shed, head: &RequestHead<'_>, out: &mut Vec<u8>, close: bool) {
        self.body.clear();
        let answer = self.handler.shed(why, &mut self.body);
        http::write_answer(
            out,
            &ResponseHead {
                status: answer.status,
                content_type: answer.content_type,
                allow: None,
                keep_alive: head.keep_alive && !close,
                http10: head.http10,
                head_only: head.method == "HEAD",
                extra: if close { b"Retry-After: 1\r\n" } else { b"" },
            },
            &self.body,
        );
    }

    fn fault(
        &mut self,
        out: &mut Vec<u8>,
        status: u16,
        reason: &str,
        allow: Option<&str>,
        head: Option<&RequestHead<'_>>,
        head_only: bool,
    ) {
        self.body.clear();
        let content_type = self.handler.fault(status, reason, &mut self.body);
        http::write_answer(
            out,
            &ResponseHead {
                status,
                content_type,
                allow,
                keep_alive: head.is_some_and(|h| h.keep_alive),
                http10: head.is_some_and(|h| h.http10),
                head_only,
                extra: b"",
            },
            &self.body,
        );
    }

    /// Serves one framed request; false when its answer waits (nothing was written).
    fn request(
        &mut self,
        ctx: &ConnCtx,
        head: &RequestHead<'_>,
        request_body: &[u8],
        out: &mut Vec<u8>,
    ) -> bool {
        let head_only = head.method == "HEAD";
        let allowed = self.handler.allowed_methods(head.path);
        let mut as_served = *head;
        if let Some(allowed) = allowed {
            if !allowed.permits(head.method) {
                self.fault(
                    out,
                    405,
                    "method not allowed",
                    Some(allowed.allow()),
                    Some(head),
                    head_only,
                );
                return true;
            }
            if head_only && allowed.permits("GET") {
                as_served.method = "GET";
            }
        }
        if self.handler.in_place() {
            let from = out.len();
            let mut answer = InPlace {
                out,
                from,
                keep_alive: head.keep_alive,
                http10: head.http10,
                head_only,
                allowed,
                digits_hint: self.digits_hint,
                started: None,
            };
            self.handler
                .serve_in_place(ctx, &as_served, request_body, &mut answer);
            let started = answer.started;
            if self.handler.take_wait() {
                out.truncate(from);
                return false;
            }
            match started {
                Some(begun) => self.digits_hint = http::finish_answer(out, begun),
                None => {
                    out.truncate(from);
                    self.fault(out, 500, "internal error", None, Some(head), head_only);
                }
            }
            return true;
        }
        self.body.clear();
        let answer = self
            .handler
            .serve(ctx, &as_served, request_body, &mut self.body);
        if self.handler.take_wait() {
            return false;
        }
        http::write_answer(
            out,
            &ResponseHead {
                status: answer.status,
                content_type: answer.content_type,
                allow: allowed.filter(|_| answer.status == 405).map(Methods::allow),
                keep_alive: head.keep_alive,
                http10: head.http10,
                head_only,
                extra: self.handler.extra_headers(),
            },
            &self.body,
        );
        true
    }
}

/// Most requests the loop frames ahead of the one it serves ([`HttpHandler::prefetch_ahead`]).
pub(crate) const MAX_AHEAD: usize = 4;

/// The requests framed ahead of the one being served, in input order, each used as it is when
/// its turn comes (framing is a pure function of the bytes, so this changes no answer). The
/// queue is a fixed array of [`MAX_AHEAD`] places on the stack: framing ahead never allocates.
struct Ahead<'a> {
    framed: heapless::Deque<Framed<'a>, MAX_AHEAD>,
    /// Where the input after the last one starts.
    end: usize,
    /// The input at `end` is not a whole request, or follows one that closes the connection:
    /// nothing more is framed ahead in this batch (the input does not change within it).
    stopped: bool,
}

impl<'a> Ahead<'a> {
    fn new() -> Self {
        Ahead {
            framed: heapless::Deque::new(),
            end: 0,
            stopped: false,
        }
    }
}

/// The answer to a connection over the listener's `max_connections`: 503 (RFC 9110 §15.6.4),
/// then close.
pub(crate) const REFUSAL: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// The interim answer to a request head with `Expect: 100-continue` (RFC 9110 §15.2.1).
pub(crate) const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The answer to a request that missed its deadline (`request_timeout`): 408 (RFC 9110
/// §15.5.9), then close.
pub(crate) const DEADLINE_ANSWER: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

impl<H: HttpHandler> StreamWorker for HttpWorker<H> {
    fn refusal(&self) -> &'static [u8] {
        REFUSAL
    }

    fn deadline_answer(&self) -> &'static [u8] {
        DEADLINE_ANSWER
    }

    fn on_tick(&mut self, now: std::time::Instant) {
        self.handler.on_tick(now);
    }

    fn on_input(&mut self, ctx: &ConnCtx, input: &[u8], out: &mut Vec<u8>) -> StreamStep {
        self.handler.begin_input();
        let step = self.serve_batch(ctx, input, out);
        self.handler.end_input();
        step
    }
}

impl<H: HttpHandler> HttpWorker<H> {
    /// Serves the requests framed in `input` (see [`StreamWorker::on_input`]).
    fn serve_batch(&mut self, ctx: &ConnCtx, input: &[u8], out: &mut Vec<u8>) -> StreamStep {
        let limits = self.limits;
        let mut consumed = 0;
        let closed = StreamStep {
            consumed: input.len(),
            close: true,
        };
        let mut served = 0;
        // One clock read per batch, and none when load control is off.
        let now =
            (self.load.rate_limit.is_some() || !self.load.shed_after.is_zero()).then(Instant::now);
        // Asked at the first request framed (a batch without one sheds nothing).
        let mut overloaded = None;
        let prefetch_ahead = self.handler.prefetch_ahead().min(MAX_AHEAD);
        let mut ahead = Ahead::new();
        while out.len() < ctx.output_limit && served < ctx.max_requests {
            let rest = match input.get(consumed..) {
                Some(rest) if !rest.is_empty() => rest,
                _ => break,
            };
            let framed = match ahead.framed.pop_front() {
                Some(framed) => framed,
                None => http::frame_request(rest, &limits),
            };
            match framed {
                Framed::Incomplete => break,
                Framed::Continue => {
                    // RFC 9110 §10.1.1: the client sends the body once told to.
                    out.extend_from_slice(CONTINUE);
                    break;
                }
                Framed::Error(e) => {
                    // The stream cannot be re-synchronised: answer and close.
                    let head_only = http::starts_with_head(rest);
                    self.fault(out, e.status(), &e.to_string(), None, None, head_only);
                    return closed;
                }
                Framed::Request {
                    head,
                    body,
                    consumed: used,
                } => {
                    if used == 0 || used > rest.len() {
                        // A framing result that makes no progress would loop forever.
                        self.fault(out, 500, "internal error", None, None, false);
                        return closed;
                    }
                    let shed =
                        *overloaded.get_or_insert_with(|| match (self.shedding.as_mut(), now) {
                            (Some(control), Some(now)) => control.shed(ctx.ready_at, now),
                            _ => false,
                        });
                    if shed {
                        // Shed the connection whole (see the module comment).
                        self.shed(Shed::Overloaded, &head, out, true);
                        return closed;
                    }
                    if prefetch_ahead > 0 && head.keep_alive {
                        self.frame_ahead(input, consumed + used, prefetch_ahead, &mut ahead);
                    }
                    if let Some(why) = self.shed_reason(ctx, now) {
                        self.shed(why, &head, out, false);
                    } else if !self.request(ctx, &head, body, out) {
                        // The answer waits: it keeps its place, and the requests behind it
                        // wait with it.
                        break;
                    }
                    consumed += used;
                    served += 1;
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

impl<H: HttpHandler> HttpWorker<H> {
    /// Frames the requests behind the one about to be served (which ends at `next` in
    /// `input`) until `want` are framed ahead, and offers each new one to the handler's
    /// prefetch. Stops at the first input that is not a whole request (it is framed again,
    /// with the same result, when its turn comes) and after a request that closes the
    /// connection.
    fn frame_ahead<'a>(
        &mut self,
        input: &'a [u8],
        next: usize,
        want: usize,
        ahead: &mut Ahead<'a>,
    ) {
        let mut at = ahead.end.max(next);
        while ahead.framed.len() < want && !ahead.stopped {
            let Some(rest) = input.get(at..).filter(|r| !r.is_empty()) else {
                ahead.stopped = true;
                break;
            };
            let framed = http::frame_request(rest, &self.limits);
            let Framed::Request {
                head,
                body,
                consumed: used,
            } = framed
            else {
                ahead.stopped = true;
                break;
            };
            if used == 0 || used > rest.len() {
                ahead.stopped = true;
                break;
            }
            self.handler.prefetch(&head, body);
            if ahead.framed.push_back(framed).is_err() {
                // `want` is at most `MAX_AHEAD`, so the queue has room; were it full, this
                // request is framed again when its turn comes.
                ahead.stopped = true;
                break;
            }
            at += used;
            ahead.stopped = !head.keep_alive;
        }
        ahead.end = at;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/get` allows GET and HEAD and answers its path; everything else is 404.
    struct Echo;

    impl HttpHandler for Echo {
        fn allowed_methods(&self, path: &str) -> Option<Methods> {
            (path == "/get").then_some(Methods::new("GET, HEAD"))
        }

        fn serve(
            &mut self,
            _ctx: &ConnCtx,
            head: &RequestHead<'_>,
            _request_body: &[u8],
            body: &mut Vec<u8>,
        ) -> Answer {
            assert_ne!(head.method, "HEAD", "HEAD is served as GET");
            body.extend_from_slice(head.path.as_bytes());
            Answer {
                status: if head.path == "/get" { 200 } else { 404 },
                content_type: "text/plain",
            }
        }

        fn fault(&mut self, _status: u16, reason: &str, body: &mut Vec<u8>) -> &'static str {
            body.extend_from_slice(reason.as_bytes());
            "text/plain"
        }
    }

    fn ctx() -> ConnCtx {
        ConnCtx {
            worker: 0,
            listener: 0,
            peer: "127.0.0.1:1".parse().unwrap(),
            local: "127.0.0.1:2".parse().unwrap(),
            output_limit: 1 << 20,
            client_cert: None,
            max_requests: usize::MAX,
            ready_at: std::time::Instant::now(),
        }
    }

    fn run(input: &[u8]) -> (StreamStep, String) {
        let mut w = HttpWorker::new(Echo, HttpLimits::default());
        let mut out = Vec::new();
        let step = w.on_input(&ctx(), input, &mut out);
        (step, String::from_utf8(out).unwrap())
    }

    /// Echo that asks for prefetches `ahead` requests ahead, logging `prefetch PATH` and
    /// `serve PATH`.
    struct Logged {
        ahead: usize,
        log: Vec<String>,
    }

    impl HttpHandler for Logged {
        fn allowed_methods(&self, path: &str) -> Option<Methods> {
            Echo.allowed_methods(path)
        }

        fn serve(
            &mut self,
            ctx: &ConnCtx,
            head: &RequestHead<'_>,
            request_body: &[u8],
            body: &mut Vec<u8>,
        ) -> Answer {
            self.log.push(format!("serve {}", head.path));
            Echo.serve(ctx, head, request_body, body)
        }

        fn prefetch_ahead(&self) -> usize {
            self.ahead
        }

        fn prefetch(&mut self, head: &RequestHead<'_>, _request_body: &[u8]) {
            self.log.push(format!("prefetch {}", head.path));
        }

        fn fault(&mut self, status: u16, reason: &str, body: &mut Vec<u8>) -> &'static str {
            Echo.fault(status, reason, body)
        }
    }

    /// Pipelined requests framed ahead for the handler's prefetch are answered exactly as
    /// without it, in order: each request is offered once, `ahead` requests before it is
    /// served (a 405 is offered too: the handler sees only its path); a request behind a bad
    /// one, an incomplete one or one that closes the connection is never offered, and a 405
    /// or 404 in the middle changes nothing for the requests around it.
    #[test]
    fn pipelined_requests_prefetched_ahead_are_answered_as_without() {
        let get = |p: &str| format!("GET {p} HTTP/1.1\r\n\r\n");
        let mixed = [
            get("/get"),
            get("/a"),
            "DELETE /get HTTP/1.1\r\n\r\n".to_string(),
            get("/get"),
            get("/b"),
            get("/get"),
            "GET /c HTTP/1.1\r\n".to_string(),
        ]
        .concat();
        let bad_middle = [get("/get"), get("/a"), "BAD\r\n\r\n".into(), get("/b")].concat();
        let closing = [
            get("/get"),
            "GET /a HTTP/1.1\r\nConnection: close\r\n\r\n".into(),
            get("/b"),
        ]
        .concat();
        let cases: [(&str, usize, &[&str]); 5] = [
            (
                &mixed,
                3,
                &[
                    "prefetch /a",
                    "prefetch /get",
                    "prefetch /get",
                    "serve /get",
                    "prefetch /b",
                    "serve /a",
                    "prefetch /get",
                    "serve /get",
                    "serve /b",
                    "serve /get",
                ],
            ),
            (
                &mixed,
                1,
                &[
                    "prefetch /a",
                    "serve /get",
                    "prefetch /get",
                    "serve /a",
                    "prefetch /get",
                    "prefetch /b",
                    "serve /get",
                    "prefetch /get",
                    "serve /b",
                    "serve /get",
                ],
            ),
            (&bad_middle, 3, &["prefetch /a", "serve /get", "serve /a"]),
            (&closing, 3, &["prefetch /a", "serve /get", "serve /a"]),
            (
                &mixed,
                0,
                &[
                    "serve /get",
                    "serve /a",
                    "serve /get",
                    "serve /b",
                    "serve /get",
                ],
            ),
        ];
        for (input, ahead, expected) in cases {
            let mut w = HttpWorker::new(
                Logged {
                    ahead,
                    log: Vec::new(),
                },
                HttpLimits::default(),
            );
            let mut out = Vec::new();
            let step = w.on_input(&ctx(), input.as_bytes(), &mut out);
            assert_eq!(
                (step, String::from_utf8(out).unwrap()),
                run(input.as_bytes()),
                "{input:?} {ahead}"
            );
            assert_eq!(w.handler.log, expected, "{input:?} {ahead}");
        }
    }

    #[test]
    fn an_overloaded_connection_is_shed_whole_with_one_answer_and_closed() {
        let mut w = HttpWorker::new(Echo, HttpLimits::default()).with_load_control(LoadControl {
            rate_limit: None,
            shed_after: Duration::from_millis(5),
        });
        let input = b"GET /get HTTP/1.1\r\n\r\nGET /get HTTP/1.1\r\n\r\nGET /get HTTP/1.1\r\n\r\n";
        // A turn behind for longer than the interval (twice the delay): the first connection
        // served in it past that is shed with one 503 asking for a retry, the pipeline
        // dropped, closed.
        let mut late = ctx();
        late.ready_at = Instant::now() - Duration::from_millis(50);
        let mut out = Vec::new();
        // The turn is seen behind from the first call on; the shed comes once it has been
        // behind for the interval.
        w.shedding.as_mut().unwrap().law.late_since = Some(late.ready_at);
        let step = w.on_input(&late, input, &mut out);
        assert_eq!(
            step,
            StreamStep {
                consumed: input.len(),
                close: true
            }
        );
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{text}");
        assert!(text.starts_with("HTTP/1.1 503 "), "{text}");
        assert!(text.contains("Retry-After: 1\r\n"), "{text}");
        assert!(text.contains("Connection: close\r\n"), "{text}");
        // Served at once: every request answered, the connection kept.
        let mut out = Vec::new();
        let step = w.on_input(&ctx(), input, &mut out);
        assert!(!step.close);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 3, "{text}");
    }

    /// Simulates turns of `turn` each, with a connection served every millisecond, for
    /// `total`; returns the instants (from the start) at which connections were shed.
    fn shed_times(
        control: &mut ShedControl,
        start: Instant,
        turn: Duration,
        total: Duration,
    ) -> Vec<Duration> {
        let mut sheds = Vec::new();
        let mut t = Duration::ZERO;
        while t < total {
            let turn_start =
                start + t - Duration::from_nanos((t.as_nanos() % turn.as_nanos()) as u64);
            if control.shed(turn_start, start + t) {
                sheds.push(t);
            }
            t += Duration::from_millis(1);
        }
        sheds
    }

    #[test]
    fn short_turns_shed_nothing() {
        let mut control = ShedControl::new(Duration::from_millis(50));
        let sheds = shed_times(
            &mut control,
            Instant::now(),
            Duration::from_millis(40),
            Duration::from_secs(2),
        );
        assert!(sheds.is_empty(), "{sheds:?}");
    }

    /// Turns of 200 ms with a shedding delay of 50 ms: the first shed only once turns have
    /// been behind for the interval (100 ms), then spaced by interval / sqrt(count): a few
    /// connections a second at first, more while the overload lasts, never every connection
    /// that waited past the delay (three quarters of the 2,000 served here).
    #[test]
    fn long_turns_shed_at_a_growing_pace_not_everything_late() {
        let start = Instant::now();
        let mut control = ShedControl::new(Duration::from_millis(50));
        let sheds = shed_times(
            &mut control,
            start,
            Duration::from_millis(200),
            Duration::from_secs(2),
        );
        // Behind from 50 ms into the first turn; the first shed 100 ms later.
        assert_eq!(
            sheds.first(),
            Some(&Duration::from_millis(150)),
            "{sheds:?}"
        );
        // Gaps shrink as the episode goes on: 100 ms, 71, 58, 50... (1 ms granularity).
        let gaps: Vec<_> = sheds.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.len() >= 10, "{sheds:?}");
        assert!(
            gaps[0] >= Duration::from_millis(99) && gaps[0] <= Duration::from_millis(101),
            "{gaps:?}"
        );
        assert!(gaps.last() < gaps.first(), "{gaps:?}");
        // CoDel's law over 1.85 s of shedding: about 2 * sqrt(n) * interval = 1.85 s, n ~ 85.
        assert!(
            (50..=120).contains(&sheds.len()),
            "{} sheds: {sheds:?}",
            sheds.len()
        );
    }

    /// A turn seen to end short of the delay ends the episode; the next one starts after
    /// another interval behind, from near the last rate (count - 2).
    #[test]
    fn catching_up_stops_shedding_and_a_new_episode_resumes_near_the_last_rate() {
        let start = Instant::now();
        let ms = Duration::from_millis;
        let mut control = ShedControl::new(ms(50));
        let first = shed_times(&mut control, start, ms(200), Duration::from_secs(1));
        assert!(first.len() > 5, "{first:?}");
        let count = control.law.count;
        // A short turn: caught up, nothing shed in it nor in the next short ones.
        let later = start + Duration::from_secs(1);
        for k in 0..20 {
            let turn = later + ms(10) * k;
            assert!(!control.shed(turn, turn + ms(5)));
        }
        assert!(control.law.next.is_none() && control.law.late_since.is_none());
        // Behind again: the first shed after the interval, then spaced as at count - 2.
        let again = later + ms(300);
        let mut shed_at = None;
        for k in 0..200 {
            if control.shed(again, again + ms(50 + k)) {
                shed_at = Some(k);
                break;
            }
        }
        assert_eq!(shed_at, Some(100));
        assert_eq!(control.law.count, count - 2);
    }

    /// The expected body size sets the `Content-Length` room; the length written is exact
    /// whether the guess was right, short or long.
    #[test]
    fn in_place_answers_have_the_exact_length_whatever_the_expected_size() {
        for (expected, body_len) in [(0, 0), (9, 5), (10, 10), (3_500, 3_456), (50, 12_345)] {
            let mut out = b"earlier answer".to_vec();
            let mut answer = InPlace {
                out: &mut out,
                from: 14,
                keep_alive: true,
                http10: false,
                head_only: false,
                allowed: None,
                digits_hint: 4,
                started: None,
            };
            answer.expect_body(expected);
            assert_eq!(answer.digits_hint, expected.to_string().len());
            let body = answer.start(200, "text/plain", b"");
            body.extend(std::iter::repeat(b'x').take(body_len));
            let begun = answer.started.expect("started");
            http::finish_answer(&mut out, begun);
            let text = String::from_utf8(out).unwrap();
            let want = format!(
                "earlier answerHTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\
                 Content-Length: {body_len}\r\n\r\n{}",
                "x".repeat(body_len)
            );
            assert_eq!(text, want);
        }
    }

    #[test]
    fn head_has_the_get_headers_and_no_body_and_the_next_answer_follows() {
        let (step, out) = run(b"HEAD /get HTTP/1.1\r\n\r\nGET /get HTTP/1.1\r\n\r\n");
        assert!(!step.close);
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\n\
             HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\n/get"
        );
    }

    #[test]
    fn other_methods_get_405_with_allow_and_the_connection_stays_usable() {
        let (step, out) =
            run(b"POST /get HTTP/1.1\r\nContent-Length: 1\r\n\r\nxGET /get HTTP/1.1\r\n\r\n");
        assert!(!step.close);
        assert!(
            out.starts_with(
                "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain\r\n\
                 Allow: GET, HEAD\r\nContent-Length: 18\r\n\r\nmethod not allowed\
                 HTTP/1.1 200 OK"
            ),
            "{out}"
        );
    }

    #[test]
    fn unknown_paths_reach_the_handler_with_any_method() {
        let (_, out) = run(b"DELETE /x HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(out.starts_with("HTTP/1.1 404"), "{out}");
        assert!(out.ends_with("/x"), "{out}");
        assert!(!out.contains("Allow"), "{out}");
    }

    #[test]
    fn framing_errors_are_answered_and_close() {
        let (step, out) = run(b"GET /get HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(step.close);
        assert!(out.starts_with("HTTP/1.1 411"), "{out}");
        assert!(out.contains("Connection: close"), "{out}");
    }

    #[test]
    fn answers_to_a_head_refused_by_framing_have_no_body() {
        let mut long = b"HEAD /get?".to_vec();
        long.resize(HttpLimits::default().max_head_bytes + 10, b'a');
        let too_large = b"\r\nHEAD /get HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n".to_vec();
        let chunked = b"HEAD /get HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for (input, status) in [(long, "431"), (too_large, "413"), (chunked, "411")] {
            let (step, out) = run(&input);
            assert!(step.close);
            assert!(out.starts_with(&format!("HTTP/1.1 {status} ")), "{out}");
            assert!(
                out.ends_with("Connection: close\r\n\r\n"),
                "a body after: {out}"
            );
        }
        // The same refusals to GET carry their body.
        let (_, out) = run(b"GET /get HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n");
        assert!(out.ends_with("body too large"), "{out}");
    }

    #[test]
    fn an_http10_connection_kept_open_is_announced() {
        let (step, out) = run(b"GET /get HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert!(!step.close);
        assert!(out.contains("\r\nConnection: keep-alive\r\n"), "{out}");
        let (step, out) = run(b"GET /get HTTP/1.0\r\n\r\n");
        assert!(step.close);
        assert!(out.contains("\r\nConnection: close\r\n"), "{out}");
        let (_, out) = run(b"GET /get HTTP/1.1\r\n\r\n");
        assert!(!out.contains("Connection:"), "{out}");
    }

    #[test]
    fn expect_100_continue_is_answered_before_the_body_arrives() {
        let head = b"POST /get HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n";
        let (step, out) = run(head);
        assert_eq!((step.consumed, step.close), (0, false));
        assert_eq!(out, "HTTP/1.1 100 Continue\r\n\r\n");
        // Part of the body there: wait quietly; all of it: the final answer.
        let mut partial = head.to_vec();
        partial.extend_from_slice(b"ab");
        let (step, out) = run(&partial);
        assert_eq!((step.consumed, out.as_str()), (0, ""));
        partial.extend_from_slice(b"cd");
        let (step, out) = run(&partial);
        assert_eq!(step.consumed, partial.len());
        assert!(out.starts_with("HTTP/1.1 405"), "{out}");
        // HTTP/1.0 clients never wait for it.
        let (_, out) =
            run(b"POST /get HTTP/1.0\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n");
        assert_eq!(out, "");
    }
}
