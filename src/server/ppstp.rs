//! The PPSTP (RFC 7846) service: HTTP framing, method and media-type checks, decoding, the
//! engine call and the answer, for each request pipelined on a connection.

use std::sync::Arc;

use crate::access_list::AccessControl;
use crate::engine::{Engine, ErrorCode, Response, Time};
use crate::metrics::{request_index, Metrics, UNDECODED};
use crate::protocol::http::{self, Framed, HttpLimits, RequestHead};
use crate::protocol::ppstp::{self, DecodeLimits, TransactionId, CONTENT_TYPE};
use crate::runtime::{ConnCtx, StreamService, StreamStep, StreamWorker};

use super::Clock;

/// Shared, read-only state of the PPSTP service.
pub(crate) struct PpstpService {
    pub engine: Arc<Engine>,
    pub access: Arc<AccessControl>,
    pub metrics: Arc<Metrics>,
    pub http_limits: HttpLimits,
    pub decode_limits: DecodeLimits,
    pub clock: Clock,
}

/// The [`StreamService`] handed to the runtime.
pub(crate) struct PpstpStreams(pub Arc<PpstpService>);

impl StreamService for PpstpStreams {
    fn worker(&self, worker: usize) -> Box<dyn StreamWorker> {
        Box::new(PpstpWorker {
            service: self.0.clone(),
            index: worker,
            body: Vec::with_capacity(4096),
        })
    }
}

struct PpstpWorker {
    service: Arc<PpstpService>,
    index: usize,
    /// Reused for every JSON body this worker encodes.
    body: Vec<u8>,
}

/// True for `application/ppsp-tracker+json`, ignoring case, surrounding blanks and parameters
/// such as `; charset=utf-8`.
pub(crate) fn is_ppstp_media_type(value: &[u8]) -> bool {
    let media = value.split(|b| *b == b';').next().unwrap_or(&[]);
    media
        .trim_ascii()
        .eq_ignore_ascii_case(CONTENT_TYPE.as_bytes())
}

impl PpstpWorker {
    /// Answers an HTTP-level fault with the PPSTP JSON error body (error code 01).
    fn fault(&mut self, out: &mut Vec<u8>, status: u16, keep_alive: bool) {
        self.service.metrics.worker(self.index).http_fault(status);
        self.body.clear();
        ppstp::encode_response(&Response::Err(ErrorCode::BadRequest), None, &mut self.body);
        http::write_response(out, status, CONTENT_TYPE, &self.body, keep_alive);
    }

    /// Writes the answer straight into `out`: the HTTP head, then the JSON body encoded in
    /// place, its Content-Length filled in afterwards.
    fn answer(
        out: &mut Vec<u8>,
        response: &Response,
        transaction_id: Option<&TransactionId>,
        keep_alive: bool,
    ) {
        let status = ppstp::http_status(response.error_code());
        http::write_response_with(out, status, CONTENT_TYPE, keep_alive, |body| {
            ppstp::encode_response(response, transaction_id, body)
        });
    }

    fn serve(
        &mut self,
        ctx: &ConnCtx,
        head: &RequestHead<'_>,
        body: &[u8],
        now: Time,
        out: &mut Vec<u8>,
    ) {
        // RFC 7846 §7.1: requests are HTTP POSTs carrying the PPSTP media type.
        if head.method != "POST" {
            return self.fault(out, 405, head.keep_alive);
        }
        if !head.content_type.is_some_and(is_ppstp_media_type) {
            return self.fault(out, 415, head.keep_alive);
        }
        let service = &*self.service;
        let metrics = service.metrics.worker(self.index);
        match ppstp::decode_request(body, ctx.peer, &service.decode_limits) {
            Err(e) => {
                metrics.request(UNDECODED);
                metrics.error(UNDECODED, e.code);
                Self::answer(
                    out,
                    &Response::Err(e.code),
                    e.transaction_id.as_ref(),
                    head.keep_alive,
                );
            }
            Ok(decoded) => {
                let kind = request_index(&decoded.request.kind);
                metrics.request(kind);
                // The access list refuses swarms with 03 (forbidden action).
                let refused = !service.access.is_off()
                    && !service
                        .access
                        .current()
                        .permits_request(&decoded.request.kind);
                let response = if refused {
                    Response::Err(ErrorCode::Forbidden)
                } else {
                    service.engine.handle(&decoded.request, now)
                };
                metrics.error(kind, response.error_code());
                Self::answer(
                    out,
                    &response,
                    Some(&decoded.transaction_id),
                    head.keep_alive,
                );
            }
        }
    }
}

impl StreamWorker for PpstpWorker {
    fn on_input(&mut self, ctx: &ConnCtx, input: &[u8], out: &mut Vec<u8>) -> StreamStep {
        let now = self.service.clock.now();
        let limits = self.service.http_limits;
        let mut consumed = 0;
        while out.len() < ctx.output_limit {
            let rest = match input.get(consumed..) {
                Some(rest) if !rest.is_empty() => rest,
                _ => break,
            };
            match http::frame_request(rest, &limits) {
                Framed::Incomplete => break,
                Framed::Error(e) => {
                    // The stream cannot be re-synchronised: answer and close.
                    self.fault(out, e.status(), false);
                    return StreamStep {
                        consumed: input.len(),
                        close: true,
                    };
                }
                Framed::Request {
                    head,
                    body,
                    consumed: used,
                } => {
                    if used == 0 || used > rest.len() {
                        // A framing result that makes no progress would loop forever.
                        self.fault(out, 500, false);
                        return StreamStep {
                            consumed: input.len(),
                            close: true,
                        };
                    }
                    consumed += used;
                    self.serve(ctx, &head, body, now, out);
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
