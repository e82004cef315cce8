//! PPSTP (RFC 7846): the JSON envelope `{"PPSPTrackerProtocol": {...}}` decoded into engine
//! requests, and engine responses encoded back, with the leniencies protocols.md lists.
//! Sans-IO; HTTP framing is in [`crate::protocol::http`].
//!
//! # Requests
//!
//! [`decode_request`] reads the nine request types of protocols.md §1: RFC 7846's CONNECT, FIND
//! and STAT_REPORT, and the PPSP extension types JOIN, LEAVE, DISCONNECT, KEEPALIVE,
//! JOIN_CHUNK and STAT_QUERY (RFC 7846 §7.1 protocol-level extensions). Bodies are read in
//! one pass by a hand-written scanner into raw shapes that borrow from the body (no allocation
//! for an ordinary request); a body that fails that pass is read a second time only to recover
//! `version` and `transaction_id` for the error answer. The scanner accepts exactly what
//! serde_json with serde's derived shapes accepts; that serde decoder is kept in [`reference`]
//! and tests and fuzzing check that both agree on every body.
//!
//! Accepted beyond the schema (protocols.md "Leniency", all needed by RFC 7846's own
//! examples): an object where an array is specified (`peer_addr`, `swarm_action`, `stat`,
//! and `swarm_result`/`peer_info` in responses); integers written as strings; `"Stat"` for
//! `stat`; FIND's `swarm_id` and `peer_num` at the top level; a numeric `transaction_id`
//! (echoed as its decimal text). `connection`, `action`, `peer_mode`, `type`, `address_type`
//! and `ability_nat` values are case-insensitive; `request_type` is not (RFC 7846 §7.2).
//! Absent `priority` reads as 1 and absent `type` as HOST.
//!
//! Decisions where the RFC leaves room:
//! - CONNECT without `connect` or without `swarm_action` registers the peer only (the
//!   "enhanced CONNECT" of RFC 7846 §7.1 Figure 6, followed by JOIN requests).
//! - A `swarm_action` LEAVE without `peer_mode` reads as LEECH (§4.1.1: LEAVE applies
//!   "regardless of the peer mode"); a JOIN without it is 01.
//! - DISCONNECT: `"swarm_id": "ALL"` leaves every swarm and stays registered; no `disconnect`
//!   member, or no/null `swarm_id`, deregisters; any other swarm id leaves that swarm (decoded
//!   as LEAVE, as in §7.1 Figure 6's `DISCONNECT(swarm_b)`).
//! - STAT_REPORT groups whose `type` is not STREAM_STATS (future §7.1 property types) are
//!   ignored, so the request acts as a keep-alive.
//! - Chunks (FIND, JOIN_CHUNK): an array of inclusive `[start, end]` pairs of 64-bit ids.
//! - The transaction id may be at most [`MAX_TRANSACTION_ID_BYTES`] long; a longer one is 01
//!   and is not echoed.
//!
//! Every other fault is 01 (RFC 7846 §4.3), as is exceeding a [`DecodeLimits`] bound; a
//! `version` other than 1 is 02, also when the rest of the body is malformed.
//!
//! # Responses
//!
//! [`encode_response`] writes `version`, `response_type` (0 SUCCESSFUL, 1 FAILED),
//! `error_code`, `transaction_id` (left out when the request's could not be read), then for
//! successes the reflexive `peer_addr` (CONNECT), `swarm_result` and `stat_result`. Errors
//! carry nothing else (RFC 7846 §4.3).
//!
//! `swarm_result`: RFC 7846 §3.3.4 declares `swarm_result<1..*>`, which is an array in the
//! presentation language of §3.1, but all three response examples (E4, E6, E8, §4.1) write a
//! single result as a bare object. We write one result as an object, exactly as the examples
//! do (that is what implementations built from the RFC were tested against), and several as an
//! array, which the schema requires. The same rule applies to a peer's `peer_addr` inside
//! `peer_info` (the schema has one address there; several are written as an array). Each
//! result has `swarm_id` and `result` (0, or 1 with an `error_code` member giving the reason,
//! a §7.1 request-response extension); a successful result that asked for peers has
//! `peer_group: {peer_info: [{peer_id, peer_addr}]}`, with an empty `peer_info` array when no
//! peer qualifies (§4.1.2: a FIND answer MUST include a peer group). `asn` is written as a
//! string (§3.2.4). Identifiers that are not UTF-8 (BitTorrent peers sharing a swarm) are
//! written as lower-case hex.
//!
//! `stat_result` (STAT_QUERY answers, our extension) is one object:
//! - swarm: `{"swarm_id", "peers", "seeders", "leechers", "uploaded_bytes",
//!   "downloaded_bytes"}` (integers; the byte counts are sums of the members' STAT_REPORTs);
//! - peer: `{"peer_id", "state": "PEER_REGISTERED" | "TRACKING", "online_time": seconds,
//!   "peer_addr": [peer_addr...], "swarms": [{"swarm_id", "peer_mode"}],
//!   ["connection_tracker": 32 hex digits of the node id]}`.
//!
//! [`encode_request`] and [`decode_response`] are the client side, for the load generator and
//! tests; requests are written in the schema's canonical form.

mod answer;
mod decode;
mod encode;
#[doc(hidden)]
pub mod encode_reference;
pub mod examples;
mod raw;
pub mod reference;
mod response;
mod scan;

pub use response::{
    decode_response, error_code_from_u64, DecodedPeer, DecodedResponse, DecodedSwarmResult,
    ResponseDecodeError,
};

use std::net::SocketAddr;

use crate::engine::{ErrorCode, Request, Response};

/// The media type of PPSTP requests and responses (RFC 7846 §7.1).
pub const CONTENT_TYPE: &str = "application/ppsp-tracker+json";

/// Whether a request's `Content-Type` may carry a PPSTP body (RFC 7846 §4: the
/// `application/ppsp-tracker+json` media type). Media types compare case-insensitively and
/// parameters (`; charset=utf-8`) are ignored (RFC 9110 §8.3.1). Plain `application/json` is
/// accepted as well; a missing or other type is refused (HTTP 415, protocols.md §1).
pub fn accepts_content_type(content_type: Option<&[u8]>) -> bool {
    let Some(value) = content_type else {
        return false;
    };
    let media_type = value.split(|&b| b == b';').next().unwrap_or_default();
    let media_type = media_type.trim_ascii();
    media_type.eq_ignore_ascii_case(CONTENT_TYPE.as_bytes())
        || media_type.eq_ignore_ascii_case(b"application/json")
}

/// Limits applied while decoding, taken from the engine configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    pub max_id_len: usize,
    pub max_addrs: usize,
    pub max_swarm_actions: usize,
    pub max_chunk_ranges: usize,
    pub max_stats: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_id_len: 64,
            max_addrs: 4,
            max_swarm_actions: 64,
            max_chunk_ranges: 256,
            max_stats: 64,
        }
    }
}

/// Longest `transaction_id` accepted and echoed, in bytes.
pub const MAX_TRANSACTION_ID_BYTES: usize = 64;

/// The request's `transaction_id`, echoed in the answer. At most 64 bytes are kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransactionId(pub String);

/// A decoded request and its transaction id.
#[derive(Clone, Debug, PartialEq)]
pub struct Decoded {
    pub request: Request,
    pub transaction_id: TransactionId,
}

impl Decoded {
    /// A placeholder (a KEEPALIVE of peer `-` from `source`, empty transaction id) to decode
    /// into with [`decode_request_into`]; allocates nothing.
    pub fn empty(source: SocketAddr) -> Self {
        Decoded {
            request: Request {
                peer_id: crate::engine::PeerId::from_stored(b"-"),
                source,
                kind: crate::engine::RequestKind::Keepalive,
            },
            transaction_id: TransactionId(String::new()),
        }
    }
}

/// A request that cannot be served: the error code to answer, and the transaction id when it
/// could be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    pub code: ErrorCode,
    pub transaction_id: Option<TransactionId>,
}

/// Decodes one request body. `source` is the transport's source address.
pub fn decode_request(
    body: &[u8],
    source: SocketAddr,
    limits: &DecodeLimits,
) -> Result<Decoded, DecodeError> {
    decode::decode_request(body, source, limits)
}

/// As [`decode_request`], into `out`, reusing its transaction id's string and a CONNECT's
/// action vector (no allocation for ordinary requests). On error `out` holds an unspecified
/// request; the error carries the transaction id when it could be read.
pub fn decode_request_into(
    body: &[u8],
    source: SocketAddr,
    limits: &DecodeLimits,
    out: &mut Decoded,
) -> Result<(), DecodeError> {
    decode::decode_request_into(body, source, limits, out)
}

/// Appends the JSON body answering `response` to `out`.
pub fn encode_response(
    response: &Response,
    transaction_id: Option<&TransactionId>,
    out: &mut Vec<u8>,
) {
    answer::encode_response(response, transaction_id, out)
}

/// About how many bytes [`encode_response`] writes for `response` (usual addresses, no
/// escapes): a hint for sizing, never a bound.
pub fn typical_response_len(response: &Response, transaction_id: Option<&TransactionId>) -> usize {
    answer::typical_len(response, transaction_id)
}

/// Appends the JSON body of `request` in RFC 7846's schema form to `out` (`request.source` is
/// not part of the message).
pub fn encode_request(request: &Request, transaction_id: &TransactionId, out: &mut Vec<u8>) {
    encode::encode_request(request, transaction_id, out)
}

/// The ids a request body most likely names, found without decoding it: the string values of
/// the first `"peer_id"` key and of the first `"swarm_id"` key (a JOIN's, FIND's or LEAVE's
/// swarm, a CONNECT's first action's), without escapes; `None` where not found so. A
/// hint for a cache prefetch ([`crate::engine::PpstpPrefetch::push_ids`]) only: on an unusual
/// body (a key inside a string, an escaped id, a body that is not well formed) an id may be
/// wrong or missing, which costs a useless prefetch and nothing else. Two substring searches
/// (SIMD, `memchr::memmem`), no allocation.
pub fn likely_ids(body: &[u8]) -> (Option<&[u8]>, Option<&[u8]>) {
    use std::sync::LazyLock;
    static PEER_ID: LazyLock<memchr::memmem::Finder<'static>> =
        LazyLock::new(|| memchr::memmem::Finder::new(b"\"peer_id\""));
    static SWARM_ID: LazyLock<memchr::memmem::Finder<'static>> =
        LazyLock::new(|| memchr::memmem::Finder::new(b"\"swarm_id\""));
    let peer = PEER_ID
        .find(body)
        .and_then(|at| value_after_key(body.get(at + 9..)?));
    let swarm = SWARM_ID
        .find(body)
        .and_then(|at| value_after_key(body.get(at + 10..)?));
    (peer, swarm)
}

/// The string value (without escapes) after a key: blanks, `:`, blanks, then a JSON string.
fn value_after_key(rest: &[u8]) -> Option<&[u8]> {
    let blank = |b: &u8| matches!(*b, b' ' | b'\t' | b'\r' | b'\n');
    let rest = rest.get(rest.iter().position(|b| !blank(b))?..)?;
    let rest = rest.strip_prefix(b":")?;
    let rest = rest.get(rest.iter().position(|b| !blank(b))?..)?;
    let value = rest.strip_prefix(b"\"")?;
    let end = value.iter().position(|&b| b == b'"' || b == b'\\')?;
    (value.get(end) == Some(&b'"')).then(|| &value[..end])
}

/// The HTTP status for an error code (protocols.md §1).
pub fn http_status(code: ErrorCode) -> u16 {
    match code {
        ErrorCode::Ok => 200,
        ErrorCode::BadRequest | ErrorCode::UnsupportedVersion => 400,
        ErrorCode::Forbidden => 403,
        ErrorCode::InternalError => 500,
        ErrorCode::ServiceUnavailable => 503,
        ErrorCode::AuthenticationRequired => 401,
    }
}

#[cfg(test)]
mod tests;
