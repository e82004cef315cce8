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

/// Limits small enough for generated and fuzzed bodies to run into them.
#[doc(hidden)]
pub const TIGHT_LIMITS: DecodeLimits = DecodeLimits {
    max_id_len: 8,
    max_addrs: 1,
    max_swarm_actions: 2,
    max_chunk_ranges: 1,
    max_stats: 1,
};

/// Checks that the hot-path decoder and this reference give the same outcome (request, error
/// code, transaction id) for `body`, under default and [`TIGHT_LIMITS`], both fresh and into a
/// reused [`Decoded`] that held a CONNECT (whose action vector `decode_request_into`
/// recycles). The differential tests and the `ppstp_decode` fuzz target share it.
///
/// # Errors
/// Both outcomes and the body, when they differ.
#[doc(hidden)]
pub fn agree(body: &[u8], source: SocketAddr) -> Result<(), String> {
    const CONNECT: &[u8] = br#"{"PPSPTrackerProtocol":{"version":1,"request_type":"CONNECT","transaction_id":"c","peer_id":"p","connect":{"swarm_action":[{"swarm_id":"s","action":"JOIN","peer_mode":"LEECH"}]}}}"#;
    for limits in [DecodeLimits::default(), TIGHT_LIMITS] {
        let fast = super::decode_request(body, source, &limits);
        let slow = decode_request(body, source, &limits);
        if fast != slow {
            return Err(format!(
                "scanner {fast:?}\nserde   {slow:?}\nbody {:?}",
                String::from_utf8_lossy(body)
            ));
        }
        let mut reused = super::decode_request(CONNECT, source, &limits)
            .map_err(|e| format!("the CONNECT seed does not decode: {e:?}"))?;
        let into = super::decode_request_into(body, source, &limits, &mut reused).map(|()| reused);
        if into != slow {
            return Err(format!(
                "scanner into {into:?}\nserde {slow:?}\nbody {:?}",
                String::from_utf8_lossy(body)
            ));
        }
    }
    Ok(())
}
