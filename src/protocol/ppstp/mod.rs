//! PPSTP (RFC 7846): the JSON envelope `{"PPSPTrackerProtocol": {...}}` decoded into engine
//! requests, and engine responses encoded back, with the leniencies protocols.md lists.
//! Sans-IO; HTTP framing is in [`crate::protocol::http`].
//!
//! PLACEHOLDER: the real codec replaces these bodies; the signatures are the contract.

use std::net::SocketAddr;

use crate::engine::{ErrorCode, Request, Response};

/// The media type of PPSTP requests and responses (RFC 7846 §7.1).
pub const CONTENT_TYPE: &str = "application/ppsp-tracker+json";

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

/// The request's `transaction_id`, echoed in the answer. At most 64 bytes are kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransactionId(pub String);

/// A decoded request and its transaction id.
#[derive(Clone, Debug, PartialEq)]
pub struct Decoded {
    pub request: Request,
    pub transaction_id: TransactionId,
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
    _body: &[u8],
    _source: SocketAddr,
    _limits: &DecodeLimits,
) -> Result<Decoded, DecodeError> {
    Err(DecodeError {
        code: ErrorCode::InternalError,
        transaction_id: None,
    })
}

/// Appends the JSON body answering `response` to `out`.
pub fn encode_response(
    _response: &Response,
    _transaction_id: Option<&TransactionId>,
    _out: &mut Vec<u8>,
) {
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
