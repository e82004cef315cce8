//! Request decoding: the raw serde shapes of [`super::raw`] checked and turned into an engine
//! [`Request`]. Every fault becomes error code 01, except an unsupported `version` (02).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::raw::{self, Int, RawPeerAddr, RawPeerNum, RawRequest, Str};
use super::scan;
use super::{DecodeError, DecodeLimits, Decoded, TransactionId, MAX_TRANSACTION_ID_BYTES};
use crate::engine::{
    ActionKind, AddrType, ChunkRange, DisconnectScope, ErrorCode, IdBytes, LinkKind, NatAbility,
    PeerAddr, PeerId, PeerMode, PeerNum, Request, RequestKind, StatTarget, SwarmAction, SwarmId,
    SwarmStat, MAX_ID_BYTES,
};

/// The request was malformed (error code 01). Internal marker; the caller adds the
/// transaction id.
#[derive(Debug)]
pub(super) struct Bad;

type Checked<T> = Result<T, Bad>;

/// RFC 7846 §3.2.1: the only version this tracker speaks.
pub(super) const VERSION: u64 = 1;

pub(super) fn decode_request(
    body: &[u8],
    source: SocketAddr,
    limits: &DecodeLimits,
) -> Result<Decoded, DecodeError> {
    let mut out = Decoded::empty(source);
    decode_request_into(body, source, limits, &mut out).map(|()| out)
}

/// As [`decode_request`], into `out`: the transaction id's string and a CONNECT's action
/// vector are reused, so that a caller keeping one `Decoded` allocates nothing for ordinary
/// requests. On error `out` holds an unspecified request.
pub(super) fn decode_request_into(
    body: &[u8],
    source: SocketAddr,
    limits: &DecodeLimits,
    out: &mut Decoded,
) -> Result<(), DecodeError> {
    let mut message = RawRequest::default();
    match scan::request(body, &mut message) {
        Ok(()) => finish(&mut message, source, limits, out),
        Err(scan::Malformed) => Err(salvaged_error(body)),
    }
}

/// As [`decode_request_into`], parsing with serde_json into the [`raw`] shapes instead of the
/// scanner: the reference the scanner is checked against ([`super::reference`]).
pub(super) fn decode_request_into_serde(
    body: &[u8],
    source: SocketAddr,
    limits: &DecodeLimits,
    out: &mut Decoded,
) -> Result<(), DecodeError> {
    match serde_json::from_slice::<raw::RequestEnvelope>(body) {
        Ok(mut envelope) => finish(&mut envelope.message, source, limits, out),
        Err(_) => Err(salvaged_error(body)),
    }
}

/// Checks a parsed message and turns it into `out`'s request (the part both parsers share).
fn finish(
    message: &mut RawRequest<'_>,
    source: SocketAddr,
    limits: &DecodeLimits,
    out: &mut Decoded,
) -> Result<(), DecodeError> {
    // Ours is capped at 64 bytes; a longer one is not echoed.
    let transaction_id = message
        .transaction_id
        .take()
        .filter(|t| t.0.len() <= MAX_TRANSACTION_ID_BYTES);
    // RFC 7846 §4.3: an unsupported version is 02; a missing one makes the message malformed.
    let version_fault = match message.version {
        Some(Int(VERSION)) => None,
        Some(_) => Some(ErrorCode::UnsupportedVersion),
        None => Some(ErrorCode::BadRequest),
    };
    if let Some(code) = version_fault {
        return Err(DecodeError {
            code,
            transaction_id: transaction_id.map(|t| TransactionId(t.0.into_owned())),
        });
    }
    // RFC 7846 §4.1.1: transaction_id MUST be present.
    let Some(transaction_id) = transaction_id else {
        return Err(DecodeError {
            code: ErrorCode::BadRequest,
            transaction_id: None,
        });
    };
    match request_from_raw(message, source, limits, &mut out.request) {
        Ok(()) => {
            out.transaction_id.0.clear();
            out.transaction_id.0.push_str(&transaction_id.0);
            Ok(())
        }
        Err(Bad) => Err(DecodeError {
            code: ErrorCode::BadRequest,
            transaction_id: Some(TransactionId(transaction_id.0.into_owned())),
        }),
    }
}

/// The error answer for a body that did not even parse into the request shapes: 02 when a
/// version other than 1 could be read, else 01, with the transaction id when it was readable.
fn salvaged_error(body: &[u8]) -> DecodeError {
    let found = raw::salvage(body);
    let code = match found.version {
        Some(v) if v != VERSION => ErrorCode::UnsupportedVersion,
        _ => ErrorCode::BadRequest,
    };
    DecodeError {
        code,
        transaction_id: found
            .transaction_id
            .filter(|t| t.len() <= MAX_TRANSACTION_ID_BYTES)
            .map(TransactionId),
    }
}

/// Writes the request of a parsed message into `out` (the previous request, whose storage is
/// reused: a FIND's members are overwritten in place, a CONNECT's action vector keeps its
/// capacity). On error `out` holds an unspecified request.
fn request_from_raw(
    m: &RawRequest<'_>,
    source: SocketAddr,
    limits: &DecodeLimits,
    out: &mut Request,
) -> Checked<()> {
    out.peer_id = PeerId(id(m.peer_id.as_ref().ok_or(Bad)?, limits)?);
    out.source = source;
    let request_type = m.request_type.as_ref().ok_or(Bad)?;
    // RFC 7846 §7.2: method names are case sensitive.
    let kind = match request_type.as_str() {
        "CONNECT" => {
            // RFC 7846 §7.1 (Figure 6): a CONNECT without swarm actions only registers the
            // peer; the PPSP extension requests (JOIN, ...) then act on swarms.
            let (peer_num, addrs, actions) = match &m.connect {
                Some(c) => (
                    c.peer_num.as_ref(),
                    c.peer_addr.as_ref().map_or(&[][..], |a| &a.0[..]),
                    c.swarm_action.as_ref().map_or(&[][..], |a| &a.0[..]),
                ),
                None => (None, &[][..], &[][..]),
            };
            if addrs.len() > limits.max_addrs || actions.len() > limits.max_swarm_actions {
                return Err(Bad);
            }
            let mut spare = match &mut out.kind {
                RequestKind::Connect { actions, .. } => std::mem::take(actions),
                _ => Vec::new(),
            };
            RequestKind::Connect {
                peer_num: peer_num.map(peer_num_from_raw).transpose()?,
                addrs: addrs
                    .iter()
                    .map(|a| peer_addr(a, AddrType::Host))
                    .collect::<Checked<_>>()?,
                actions: {
                    spare.clear();
                    for a in actions.iter() {
                        let kind = action(&a.action)?;
                        spare.push(SwarmAction {
                            swarm_id: SwarmId(id(&a.swarm_id, limits)?),
                            action: kind,
                            // RFC 7846 §4.1.1: LEAVE applies "regardless of the peer mode".
                            mode: match (&a.peer_mode, kind) {
                                (Some(mode), _) => peer_mode(mode)?,
                                (None, ActionKind::Leave) => PeerMode::Leech,
                                (None, ActionKind::Join) => return Err(Bad),
                            },
                        });
                    }
                    spare
                },
            }
        }
        "FIND" => {
            // RFC 7846 example E5 puts `swarm_id` and `peer_num` at the top level.
            let (swarm_id, peer_num, chunks) = match &m.find {
                Some(f) => (
                    f.swarm_id.as_ref().or(m.swarm_id.as_ref()),
                    f.peer_num.as_ref().or(m.peer_num.as_ref()),
                    f.chunks.as_deref(),
                ),
                None => (m.swarm_id.as_ref(), m.peer_num.as_ref(), None),
            };
            let new_swarm = SwarmId(id(swarm_id.ok_or(Bad)?, limits)?);
            let new_peer_num = peer_num.map(peer_num_from_raw).transpose()?;
            let new_chunks = chunk_ranges(chunks.unwrap_or_default(), limits)?;
            // The FIND that came before is overwritten member by member (no move of the
            // whole request).
            if let RequestKind::Find {
                swarm_id,
                peer_num,
                chunks,
            } = &mut out.kind
            {
                *swarm_id = new_swarm;
                *peer_num = new_peer_num;
                *chunks = new_chunks;
                return Ok(());
            }
            RequestKind::Find {
                swarm_id: new_swarm,
                peer_num: new_peer_num,
                chunks: new_chunks,
            }
        }
        "STAT_REPORT" => {
            // RFC 7846 §4.1.3: without a statistics group the report is a keep-alive.
            // §3.2.5 defines only STREAM_STATS; groups of other property types (§7.1
            // extensions) are not understood here and are ignored.
            let stats = match &m.stat_report {
                Some(r)
                    if r.kind
                        .as_ref()
                        .map_or(true, |k| k.as_str() == "STREAM_STATS") =>
                {
                    r.stat.as_ref().map_or(&[][..], |s| &s.0[..])
                }
                _ => &[][..],
            };
            if stats.len() > limits.max_stats {
                return Err(Bad);
            }
            RequestKind::StatReport {
                stats: stats
                    .iter()
                    .map(|s| {
                        Ok(SwarmStat {
                            swarm_id: s
                                .swarm_id
                                .as_ref()
                                .map(|i| id(i, limits).map(SwarmId))
                                .transpose()?,
                            uploaded_bytes: s.uploaded_bytes.map_or(0, |v| v.0),
                            downloaded_bytes: s.downloaded_bytes.map_or(0, |v| v.0),
                            available_bandwidth: s.available_bandwidth.map_or(0, |v| v.0),
                            concurrent_links: opt_u32(s.concurrent_links)?.unwrap_or(0),
                        })
                    })
                    .collect::<Checked<_>>()?,
            }
        }
        "JOIN" => {
            let j = m.join.as_ref().ok_or(Bad)?;
            RequestKind::Join {
                swarm_id: SwarmId(id(&j.swarm_id, limits)?),
                mode: peer_mode(&j.peer_mode)?,
                peer_num: j.peer_num.as_ref().map(peer_num_from_raw).transpose()?,
            }
        }
        "LEAVE" => RequestKind::Leave {
            swarm_id: SwarmId(id(&m.leave.as_ref().ok_or(Bad)?.swarm_id, limits)?),
        },
        "DISCONNECT" => match m.disconnect.as_ref().and_then(|d| d.swarm_id.as_ref()) {
            None => RequestKind::Disconnect {
                scope: DisconnectScope::Deregister,
            },
            Some(s) if s.as_str() == "ALL" => RequestKind::Disconnect {
                scope: DisconnectScope::AllSwarms,
            },
            // RFC 7846 §7.1 (Figure 6): DISCONNECT(swarm_b) leaves that one swarm.
            Some(s) => RequestKind::Leave {
                swarm_id: SwarmId(id(s, limits)?),
            },
        },
        "KEEPALIVE" => RequestKind::Keepalive,
        "JOIN_CHUNK" => {
            let j = m.join_chunk.as_ref().ok_or(Bad)?;
            RequestKind::JoinChunk {
                swarm_id: SwarmId(id(&j.swarm_id, limits)?),
                chunks: chunk_ranges(&j.chunks, limits)?,
            }
        }
        "STAT_QUERY" => {
            let q = m.stat_query.as_ref().ok_or(Bad)?;
            let target = match (&q.swarm_id, &q.peer_id) {
                (Some(s), None) => StatTarget::Swarm(SwarmId(id(s, limits)?)),
                (None, Some(p)) => StatTarget::Peer(PeerId(id(p, limits)?)),
                _ => return Err(Bad),
            };
            RequestKind::StatQuery { target }
        }
        _ => return Err(Bad),
    };
    out.kind = kind;
    Ok(())
}

/// A swarm or peer id: 1..=`max_id_len` bytes (never more than [`MAX_ID_BYTES`]), with no
/// control character. Ids are printable strings; refusing control characters also keeps a
/// PPSTP peer from naming a BitTorrent peer's registration, whose engine ids start with NUL.
fn id(s: &Str<'_>, limits: &DecodeLimits) -> Checked<IdBytes> {
    let text = s.as_str();
    let bytes = text.as_bytes();
    if bytes.len() > limits.max_id_len.min(MAX_ID_BYTES) || has_control(bytes) {
        return Err(Bad);
    }
    IdBytes::new(bytes).map_err(|_| Bad)
}

/// Whether UTF-8 `text` holds a control character (Unicode category Cc, what
/// [`char::is_control`] tests: U+0000..=U+001F and U+007F..=U+009F), read byte by byte: a byte
/// below 0x20, 0x7F, or 0xC2 followed by 0x80..=0x9F (the encoding of U+0080..=U+009F).
pub(super) fn has_control(text: &[u8]) -> bool {
    // Eight bytes at a time: a byte below 0x20, 0x7F or from 0x80 marks the word (a few bytes
    // above a marked one may be marked too); only then is the text read byte by byte.
    let mut chunks = text.chunks_exact(8);
    let mut marked = 0u64;
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        let del = word ^ (scan::ONES * 0x7f);
        marked |= (word.wrapping_sub(scan::ONES * 0x20) & !word)
            | (del.wrapping_sub(scan::ONES) & !del)
            | word;
    }
    let tail = chunks.remainder().iter().any(|b| !(0x20..0x7f).contains(b));
    if marked & scan::HIGHS == 0 && !tail {
        return false;
    }
    text.iter().enumerate().any(|(i, &b)| {
        b < 0x20 || b == 0x7f || (b == 0xc2 && text.get(i + 1).is_some_and(|&n| n < 0xa0))
    })
}

fn opt_u32(v: Option<Int>) -> Checked<Option<u32>> {
    v.map(|v| v.to_u32().ok_or(Bad)).transpose()
}

fn peer_num_from_raw(p: &RawPeerNum<'_>) -> Checked<PeerNum> {
    Ok(PeerNum {
        peer_count: opt_u32(p.peer_count)?,
        ability_nat: p
            .ability_nat
            .as_ref()
            .map(|a| {
                let a = a.as_str();
                if a.eq_ignore_ascii_case("NO_NAT") {
                    Ok(NatAbility::NoNat)
                } else if a.eq_ignore_ascii_case("STUN") {
                    Ok(NatAbility::Stun)
                } else if a.eq_ignore_ascii_case("TURN") {
                    Ok(NatAbility::Turn)
                } else {
                    Err(Bad)
                }
            })
            .transpose()?,
        concurrent_links: opt_u32(p.concurrent_links)?,
        online_time: opt_u32(p.online_time)?,
        upload_bandwidth: opt_u32(p.upload_bandwidth)?,
    })
}

fn action(s: &Str<'_>) -> Checked<ActionKind> {
    let s = s.as_str();
    if s.eq_ignore_ascii_case("JOIN") {
        Ok(ActionKind::Join)
    } else if s.eq_ignore_ascii_case("LEAVE") {
        Ok(ActionKind::Leave)
    } else {
        Err(Bad)
    }
}

pub(super) fn peer_mode(s: &Str<'_>) -> Checked<PeerMode> {
    let s = s.as_str();
    if s.eq_ignore_ascii_case("SEEDER") {
        Ok(PeerMode::Seeder)
    } else if s.eq_ignore_ascii_case("LEECH") {
        Ok(PeerMode::Leech)
    } else {
        Err(Bad)
    }
}

/// RFC 7846 §3.2.4 `ppsp_tp_peer_addr_t`. `priority` defaults to 1 and `type` to
/// `default_kind` when absent (RFC 7846 example E4's reflexive address has no `type`).
pub(super) fn peer_addr(a: &RawPeerAddr<'_>, default_kind: AddrType) -> Checked<PeerAddr> {
    let address = a.ip_address.address.as_str();
    let family = a.ip_address.address_type.as_str();
    // RFC 7846 §3.2.4: the address format follows address_type (RFC 3986 IPv4address, RFC
    // 5952 IPv6); an address of the other family is a mismatch.
    let ip = if family.eq_ignore_ascii_case("ipv4") {
        IpAddr::V4(address.parse::<Ipv4Addr>().map_err(|_| Bad)?)
    } else if family.eq_ignore_ascii_case("ipv6") {
        IpAddr::V6(address.parse::<Ipv6Addr>().map_err(|_| Bad)?)
    } else {
        return Err(Bad);
    };
    let kind = match &a.kind {
        None => default_kind,
        Some(k) => {
            let k = k.as_str();
            if k.eq_ignore_ascii_case("HOST") {
                AddrType::Host
            } else if k.eq_ignore_ascii_case("REFLEXIVE") {
                AddrType::Reflexive
            } else if k.eq_ignore_ascii_case("PROXY") {
                AddrType::Proxy
            } else {
                return Err(Bad);
            }
        }
    };
    let connection = match &a.connection {
        None => None,
        Some(c) if c.as_str().eq_ignore_ascii_case("wired") => Some(LinkKind::Wired),
        Some(c) if c.as_str().eq_ignore_ascii_case("wireless") => Some(LinkKind::Wireless),
        Some(_) => return Err(Bad),
    };
    Ok(PeerAddr {
        addr: SocketAddr::new(ip, a.port.to_u16().ok_or(Bad)?),
        priority: opt_u32(a.priority)?.unwrap_or(1),
        kind,
        connection,
        asn: opt_u32(a.asn)?,
        // Other peer protocols are not described further by RFC 7846; only PPSPP is flagged.
        ppsp_pp: a
            .peer_protocol
            .as_ref()
            .is_some_and(|p| p.as_str().eq_ignore_ascii_case("PPSP-PP")),
    })
}

/// Inclusive `[start, end]` chunk-id ranges (RFC 7574 §4.3); `start > end` is malformed.
fn chunk_ranges(raw: &[raw::RawChunk], limits: &DecodeLimits) -> Checked<Vec<ChunkRange>> {
    if raw.is_empty() {
        // The usual FIND: no chunks, nothing to collect.
        return Ok(Vec::new());
    }
    if raw.len() > limits.max_chunk_ranges {
        return Err(Bad);
    }
    raw.iter()
        .map(|(start, end)| ChunkRange::new(start.0, end.0).ok_or(Bad))
        .collect()
}
