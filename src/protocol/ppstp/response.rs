//! Response decoding, for the load generator and tests: a typed view of a PPSTP answer,
//! accepting the same leniencies as request decoding (single objects for arrays, integers as
//! strings) so RFC 7846's examples E4, E6 and E8 decode.

use super::decode::{self, peer_addr, Bad};
use super::raw::{self, Int, RawPeerAddr, Str};
use super::TransactionId;
use crate::engine::{
    AddrType, ErrorCode, PeerAddr, PeerId, PeerState, PeerStatus, StatAnswer, SwarmId, SwarmStats,
};

/// A decoded PPSTP response.
#[derive(Clone, Debug, PartialEq)]
pub struct DecodedResponse {
    /// 0 SUCCESSFUL, 1 FAILED (RFC 7846 §4.2).
    pub response_type: u8,
    pub error_code: ErrorCode,
    pub transaction_id: Option<TransactionId>,
    /// The top-level `peer_addr`: the address the tracker saw the request come from.
    pub reflexive: Option<PeerAddr>,
    pub swarm_results: Vec<DecodedSwarmResult>,
    /// Our `stat_result` member (STAT_QUERY answers).
    pub stat: Option<StatAnswer>,
}

/// One `swarm_result` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct DecodedSwarmResult {
    pub swarm_id: SwarmId,
    /// `Ok` for result 0; otherwise the entry's `error_code`, or the `result` value read as an
    /// error code when there is none (1 FAILED then reads as 01).
    pub result: ErrorCode,
    /// The `peer_group`, when present.
    pub peers: Option<Vec<DecodedPeer>>,
}

/// One `peer_info` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct DecodedPeer {
    pub peer_id: PeerId,
    pub addrs: Vec<PeerAddr>,
}

/// Why a response could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed PPSTP response: {0}")]
pub struct ResponseDecodeError(pub String);

fn bad(what: &str) -> ResponseDecodeError {
    ResponseDecodeError(what.to_owned())
}

/// RFC 7846 §6.2 error codes 00..06.
pub fn error_code_from_u64(code: u64) -> Option<ErrorCode> {
    Some(match code {
        0 => ErrorCode::Ok,
        1 => ErrorCode::BadRequest,
        2 => ErrorCode::UnsupportedVersion,
        3 => ErrorCode::Forbidden,
        4 => ErrorCode::InternalError,
        5 => ErrorCode::ServiceUnavailable,
        6 => ErrorCode::AuthenticationRequired,
        _ => return None,
    })
}

/// Decodes a PPSTP response body.
pub fn decode_response(body: &[u8]) -> Result<DecodedResponse, ResponseDecodeError> {
    let m = serde_json::from_slice::<raw::ResponseEnvelope>(body)
        .map_err(|e| ResponseDecodeError(e.to_string()))?
        .message;
    if m.version.0 != decode::VERSION {
        return Err(bad("unsupported version"));
    }
    let response_type = match m.response_type.0 {
        0 => 0,
        1 => 1,
        _ => return Err(bad("response_type")),
    };
    let error_code = error_code_from_u64(m.error_code.0).ok_or_else(|| bad("error_code"))?;
    let reflexive = m
        .peer_addr
        .as_ref()
        .map(|a| peer_addr(a, AddrType::Reflexive))
        .transpose()
        .map_err(|Bad| bad("peer_addr"))?;
    let mut swarm_results = Vec::new();
    for r in m.swarm_result.map(|r| r.0).unwrap_or_default() {
        let result = match (r.result.0, r.error_code) {
            (0, _) => Some(ErrorCode::Ok),
            (_, Some(code)) => error_code_from_u64(code.0),
            (n, None) => error_code_from_u64(n),
        }
        .ok_or_else(|| bad("swarm_result.result"))?;
        let peers = match r.peer_group {
            None => None,
            Some(group) => Some(
                group
                    .peer_info
                    .0
                    .iter()
                    .map(|p| {
                        Ok(DecodedPeer {
                            peer_id: PeerId(id(&p.peer_id)?),
                            addrs: addrs(p.peer_addr.as_ref().map(|a| a.0.as_slice()))?,
                        })
                    })
                    .collect::<Result<_, ResponseDecodeError>>()?,
            ),
        };
        swarm_results.push(DecodedSwarmResult {
            swarm_id: SwarmId(id(&r.swarm_id)?),
            result,
            peers,
        });
    }
    let stat = m.stat_result.map(stat_answer).transpose()?;
    Ok(DecodedResponse {
        response_type,
        error_code,
        transaction_id: m.transaction_id.map(|t| TransactionId(t.0.into_owned())),
        reflexive,
        swarm_results,
        stat,
    })
}

fn id(s: &Str<'_>) -> Result<crate::engine::IdBytes, ResponseDecodeError> {
    crate::engine::IdBytes::new(s.as_str().as_bytes()).map_err(|_| bad("identifier"))
}

fn addrs(raw: Option<&[RawPeerAddr<'_>]>) -> Result<Vec<PeerAddr>, ResponseDecodeError> {
    raw.unwrap_or_default()
        .iter()
        .map(|a| peer_addr(a, AddrType::Host).map_err(|Bad| bad("peer_addr")))
        .collect()
}

fn u32_of(v: Option<Int>, what: &str) -> Result<u32, ResponseDecodeError> {
    v.map_or(Ok(0), |v| v.to_u32().ok_or_else(|| bad(what)))
}

fn stat_answer(s: raw::RawStatResult<'_>) -> Result<StatAnswer, ResponseDecodeError> {
    if let Some(swarm) = &s.swarm_id {
        return Ok(StatAnswer::Swarm(
            SwarmId(id(swarm)?),
            SwarmStats {
                peers: u32_of(s.peers, "peers")?,
                seeders: u32_of(s.seeders, "seeders")?,
                leechers: u32_of(s.leechers, "leechers")?,
                completed: u32_of(s.completed, "completed")?,
                uploaded_bytes: s.uploaded_bytes.map_or(0, |v| v.0),
                downloaded_bytes: s.downloaded_bytes.map_or(0, |v| v.0),
            },
        ));
    }
    let peer = s.peer_id.as_ref().ok_or_else(|| bad("stat_result"))?;
    let state = match s.state.as_ref().map(|s| s.as_str()) {
        Some("PEER_REGISTERED") => PeerState::PeerRegistered,
        Some("TRACKING") => PeerState::Tracking,
        _ => return Err(bad("stat_result.state")),
    };
    let connection_tracker = s
        .connection_tracker
        .as_ref()
        .map(|hex| node_id(hex.as_str()).ok_or_else(|| bad("connection_tracker")))
        .transpose()?;
    Ok(StatAnswer::Peer(PeerStatus {
        peer_id: PeerId(id(peer)?),
        state,
        online_ms: s.online_time.map_or(0, |v| v.0.saturating_mul(1000)),
        addrs: addrs(s.peer_addr.as_ref().map(|a| a.0.as_slice()))?
            .into_iter()
            .collect(),
        swarms: s
            .swarms
            .unwrap_or_default()
            .iter()
            .map(|m| {
                Ok((
                    SwarmId(id(&m.swarm_id)?),
                    decode::peer_mode(&m.peer_mode).map_err(|Bad| bad("peer_mode"))?,
                ))
            })
            .collect::<Result<_, ResponseDecodeError>>()?,
        connection_tracker,
    }))
}

/// 32 hex digits into a 16-byte node id.
fn node_id(hex: &str) -> Option<[u8; 16]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 32 {
        return None;
    }
    let mut id = [0u8; 16];
    for (slot, pair) in id.iter_mut().zip(bytes.chunks_exact(2)) {
        let digit = |c: u8| (c as char).to_digit(16);
        *slot = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    Some(id)
}
