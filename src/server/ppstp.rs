//! The PPSTP (RFC 7846) service: the media-type check, decoding, the engine call and the
//! answer of each request; framing and method rules are the shared loop's (`http_serve`).

use std::sync::Arc;

use crate::access_list::AccessControl;
use crate::engine::{Engine, ErrorCode, Response, Time};
use crate::metrics::{request_index, Metrics, UNDECODED};
use crate::protocol::http::{HttpLimits, RequestHead};
use crate::protocol::ppstp::{self, DecodeLimits, TransactionId, CONTENT_TYPE};
use crate::runtime::{ConnCtx, StreamService, StreamWorker};

use super::http_serve::{Answer, HttpHandler, HttpWorker};
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
        let limits = self.0.http_limits;
        Box::new(HttpWorker::new(
            PpstpWorker {
                service: self.0.clone(),
                index: worker,
                now: self.0.clock.now(),
            },
            limits,
        ))
    }
}

struct PpstpWorker {
    service: Arc<PpstpService>,
    index: usize,
    /// The time of the input being served.
    now: Time,
}

/// True for `application/ppsp-tracker+json`, ignoring case, surrounding blanks and parameters
/// such as `; charset=utf-8`.
pub(crate) fn is_ppstp_media_type(value: &[u8]) -> bool {
    let media = value.split(|b| *b == b';').next().unwrap_or(&[]);
    media
        .trim_ascii()
        .eq_ignore_ascii_case(CONTENT_TYPE.as_bytes())
}

/// The PPSTP answer: its JSON body is in the loop's body buffer.
fn answer(
    response: &Response,
    transaction_id: Option<&TransactionId>,
    body: &mut Vec<u8>,
) -> Answer {
    ppstp::encode_response(response, transaction_id, body);
    Answer {
        status: ppstp::http_status(response.error_code()),
        content_type: CONTENT_TYPE,
    }
}

impl HttpHandler for PpstpWorker {
    fn allowed_methods(&self, _path: &str) -> Option<&'static str> {
        // RFC 7846 §7.1: requests are HTTP POSTs.
        Some("POST")
    }

    fn begin_input(&mut self) {
        self.now = self.service.clock.now();
    }

    fn fault(&mut self, status: u16, _reason: &str, body: &mut Vec<u8>) -> &'static str {
        // An HTTP-level fault gets the PPSTP JSON error body (error code 01).
        self.service.metrics.worker(self.index).http_fault(status);
        ppstp::encode_response(&Response::Err(ErrorCode::BadRequest), None, body);
        CONTENT_TYPE
    }

    fn serve(
        &mut self,
        ctx: &ConnCtx,
        head: &RequestHead<'_>,
        request_body: &[u8],
        body: &mut Vec<u8>,
    ) -> Answer {
        // RFC 7846 §7.1: requests carry the PPSTP media type.
        if !head.content_type.is_some_and(is_ppstp_media_type) {
            let content_type = self.fault(415, "unsupported media type", body);
            return Answer {
                status: 415,
                content_type,
            };
        }
        let service = &*self.service;
        let metrics = service.metrics.worker(self.index);
        match ppstp::decode_request(request_body, ctx.peer, &service.decode_limits) {
            Err(e) => {
                metrics.request(UNDECODED);
                metrics.error(UNDECODED, e.code);
                answer(&Response::Err(e.code), e.transaction_id.as_ref(), body)
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
                    service.engine.handle(&decoded.request, self.now)
                };
                metrics.error(kind, response.error_code());
                answer(&response, Some(&decoded.transaction_id), body)
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
