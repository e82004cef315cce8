//! The reference request decoder: the same checks as [`super::decode_request`], with the body
//! parsed by serde_json into serde's derived raw shapes instead of the hand-written scanner.
//! The server never calls it; the differential tests, the `ppstp_decode` fuzz target and the
//! codec bench compare the two decoders with it (same [`Decoded`], same error code, same
//! transaction id for every body).

use std::net::SocketAddr;

use super::{decode, DecodeError, DecodeLimits, Decoded};

/// [`super::decode_request`] through serde_json.
///
/// # Errors
/// As [`super::decode_request`]: code 01 for a malformed body, 02 for a `version` other than 1,
/// with the transaction id when it could be read.
#[doc(hidden)]
pub fn decode_request(
    body: &[u8],
    source: SocketAddr,
    limits: &DecodeLimits,
) -> Result<Decoded, DecodeError> {
    let mut out = Decoded::empty(source);
    decode::decode_request_into_serde(body, source, limits, &mut out).map(|()| out)
}

/// [`super::decode_request_into`] through serde_json.
///
/// # Errors
/// As [`decode_request`].
#[doc(hidden)]
pub fn decode_request_into(
    body: &[u8],
    source: SocketAddr,
    limits: &DecodeLimits,
    out: &mut Decoded,
) -> Result<(), DecodeError> {
    decode::decode_request_into_serde(body, source, limits, out)
}
