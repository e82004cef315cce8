//! BEP 15 message layouts: typed requests and responses, decoded from and encoded to bytes.
//!
//! All integers are big-endian. Layouts (offset: field):
//!
//! ```text
//! connect request    0: protocol_id u64 = 0x41727101980, 8: action u32 = 0, 12: transaction_id u32   (16)
//! connect response   0: action u32 = 0, 4: transaction_id u32, 8: connection_id u64                     (16)
//! announce request   0: connection_id u64, 8: action u32 = 1, 12: transaction_id u32,
//!                    16: info_hash [20], 36: peer_id [20], 56: downloaded u64, 64: left u64,
//!                    72: uploaded u64, 80: event u32, 84: ip u32, 88: key u32, 92: num_want i32,
//!                    96: port u16                                                                     (98)
//! announce response  0: action u32 = 1, 4: transaction_id u32, 8: interval u32, 12: leechers u32,
//!                    16: seeders u32, 20: peers (IPv4: 4-byte address + port, 6 bytes each;
//!                    IPv6: 16-byte address + port, 18 bytes each)                                     (20 + n * stride)
//! scrape request     0: connection_id u64, 8: action u32 = 2, 12: transaction_id u32,
//!                    16: info_hash [20] * n                                                           (16 + 20n)
//! scrape response    0: action u32 = 2, 4: transaction_id u32, 8: (seeders u32, completed u32,
//!                    leechers u32) * n                                                                (8 + 12n)
//! error response     0: action u32 = 3, 4: transaction_id u32, 8: message bytes                      (8 + len)
//! ```
//!
//! BEP 15: "Do not expect packets to be exactly of a certain size": bytes past a request's
//! fixed part are ignored (for scrape, a trailing partial info-hash is ignored).
//! The announce response's peer stride follows the address family of the UDP packet.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use super::tracker::{AnnounceEvent, Family, InfoHash, INFO_HASH_LEN};

/// BEP 15 magic constant of a connect request.
pub const PROTOCOL_ID: u64 = 0x0417_2710_1980;

/// BEP 15 action codes.
pub mod action {
    pub const CONNECT: u32 = 0;
    pub const ANNOUNCE: u32 = 1;
    pub const SCRAPE: u32 = 2;
    pub const ERROR: u32 = 3;
}

/// Size of the common request header (connection id or protocol id, action, transaction id).
pub const REQUEST_HEADER_LEN: usize = 16;
/// Size of a connect request and of a connect response.
pub const CONNECT_LEN: usize = 16;
/// Size of an announce request's fixed part.
pub const ANNOUNCE_REQUEST_LEN: usize = 98;
/// Size of an announce response before the peers.
pub const ANNOUNCE_RESPONSE_HEADER_LEN: usize = 20;
/// Bytes per IPv4 peer in an announce response.
pub const PEER_V4_LEN: usize = 6;
/// Bytes per IPv6 peer in an announce response.
pub const PEER_V6_LEN: usize = 18;
/// Size of a scrape response before the entries, and of an error response before the message.
pub const RESPONSE_HEADER_LEN: usize = 8;
/// Bytes per scrape response entry.
pub const SCRAPE_ENTRY_LEN: usize = 12;

/// Bytes of a scrape request for `hashes` info-hashes: the 16-byte header and 20 bytes each.
pub const fn scrape_request_bytes(hashes: usize) -> usize {
    hashes.saturating_mul(20).saturating_add(REQUEST_HEADER_LEN)
}

/// Most payload bytes one UDP datagram carries (65,535 less the 8-byte UDP and 20-byte IPv4
/// headers).
pub const MAX_UDP_PAYLOAD: usize = 65_507;

/// Bytes of the largest announce response listing `peers` peers: the 20-byte header and 18
/// bytes per peer (IPv6, BEP 15's larger entry).
pub const fn announce_response_bytes(peers: usize) -> usize {
    peers
        .saturating_mul(PEER_V6_LEN)
        .saturating_add(ANNOUNCE_RESPONSE_HEADER_LEN)
}

/// Why bytes are not a valid message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("packet shorter than the message header")]
    TooShort,
    #[error("connect request without the BEP 15 protocol id")]
    BadProtocolId,
    #[error("unknown action {0}")]
    UnknownAction(u32),
    #[error("packet shorter than its action's fixed size")]
    Truncated,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}
fn hash_at(b: &[u8], at: usize) -> Option<InfoHash> {
    b.get(at..at + INFO_HASH_LEN)?.try_into().ok()
}

/// The first 16 bytes common to every request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHeader {
    /// The connection id; for a connect request, the protocol id.
    pub connection_id: u64,
    pub action: u32,
    pub transaction_id: u32,
}

impl RequestHeader {
    /// The header of `packet`, or `None` when it is shorter than 16 bytes.
    pub fn peek(packet: &[u8]) -> Option<Self> {
        Some(RequestHeader {
            connection_id: u64_at(packet, 0)?,
            action: u32_at(packet, 8)?,
            transaction_id: u32_at(packet, 12)?,
        })
    }
}

/// Connect request (action 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectRequest {
    pub transaction_id: u32,
}

impl ConnectRequest {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&PROTOCOL_ID.to_be_bytes());
        out.extend_from_slice(&action::CONNECT.to_be_bytes());
        out.extend_from_slice(&self.transaction_id.to_be_bytes());
    }
}

/// Connect response (action 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectResponse {
    pub transaction_id: u32,
    pub connection_id: u64,
}

impl ConnectResponse {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&action::CONNECT.to_be_bytes());
        out.extend_from_slice(&self.transaction_id.to_be_bytes());
        out.extend_from_slice(&self.connection_id.to_be_bytes());
    }
}

/// Announce request (action 1); IPv4 and IPv6 clients send the same layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnnounceRequest {
    pub connection_id: u64,
    pub transaction_id: u32,
    pub info_hash: InfoHash,
    pub peer_id: [u8; 20],
    pub downloaded: u64,
    pub left: u64,
    pub uploaded: u64,
    pub event: AnnounceEvent,
    /// The client's claimed IPv4 address; the tracker ignores it and uses the source address.
    pub ip_address: u32,
    pub key: u32,
    /// Peers wanted; -1 (or any negative value) means the tracker's default.
    pub num_want: i32,
    pub port: u16,
}

impl AnnounceRequest {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.connection_id.to_be_bytes());
        out.extend_from_slice(&action::ANNOUNCE.to_be_bytes());
        out.extend_from_slice(&self.transaction_id.to_be_bytes());
        out.extend_from_slice(&self.info_hash);
        out.extend_from_slice(&self.peer_id);
        out.extend_from_slice(&self.downloaded.to_be_bytes());
        out.extend_from_slice(&self.left.to_be_bytes());
        out.extend_from_slice(&self.uploaded.to_be_bytes());
        out.extend_from_slice(&self.event.code().to_be_bytes());
        out.extend_from_slice(&self.ip_address.to_be_bytes());
        out.extend_from_slice(&self.key.to_be_bytes());
        out.extend_from_slice(&self.num_want.to_be_bytes());
        out.extend_from_slice(&self.port.to_be_bytes());
    }

    fn decode(p: &[u8]) -> Result<Self, DecodeError> {
        let t = DecodeError::Truncated;
        if p.len() < ANNOUNCE_REQUEST_LEN {
            return Err(t);
        }
        let code = u32_at(p, 80).ok_or(t)?;
        Ok(AnnounceRequest {
            connection_id: u64_at(p, 0).ok_or(t)?,
            transaction_id: u32_at(p, 12).ok_or(t)?,
            info_hash: hash_at(p, 16).ok_or(t)?,
            peer_id: hash_at(p, 36).ok_or(t)?,
            downloaded: u64_at(p, 56).ok_or(t)?,
            left: u64_at(p, 64).ok_or(t)?,
            uploaded: u64_at(p, 72).ok_or(t)?,
            // An unknown event is a regular announce, as clients and other trackers treat it.
            event: AnnounceEvent::from_code(code).unwrap_or(AnnounceEvent::None),
            ip_address: u32_at(p, 84).ok_or(t)?,
            key: u32_at(p, 88).ok_or(t)?,
            num_want: u32_at(p, 92).ok_or(t)? as i32,
            port: u16_at(p, 96).ok_or(t)?,
        })
    }

    /// The wanted peer count, `None` for the tracker's default.
    pub fn num_want(&self) -> Option<u32> {
        u32::try_from(self.num_want).ok()
    }
}

/// The fields of an announce request that decide what the tracker does with it: what
/// [`AnnounceRequest`] holds besides the ids, counters and client-claimed address that the
/// tracker ignores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnnounceFields {
    pub info_hash: InfoHash,
    /// Bytes left to download; 0 for a seeder.
    pub left: u64,
    pub event: AnnounceEvent,
    /// Peers wanted; negative for the tracker's default.
    pub num_want: i32,
    pub port: u16,
}

impl AnnounceFields {
    /// The wanted peer count, `None` for the tracker's default (as
    /// [`AnnounceRequest::num_want`]).
    pub fn num_want(&self) -> Option<u32> {
        u32::try_from(self.num_want).ok()
    }
}

/// The [`AnnounceFields`] of `packet`, read at their fixed BEP 15 offsets, when it is an
/// announce (action 1) of at least the fixed 98 bytes: `Some` exactly when [`decode_request`]
/// decodes an announce, with the same values. Nothing else is read or checked (the connection
/// id is the caller's).
#[inline]
pub fn peek_announce(packet: &[u8]) -> Option<AnnounceFields> {
    let p: &[u8; ANNOUNCE_REQUEST_LEN] = packet.get(..ANNOUNCE_REQUEST_LEN)?.try_into().ok()?;
    let word = |at: usize| u32::from_be_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]]);
    if word(8) != action::ANNOUNCE {
        return None;
    }
    let mut info_hash = [0u8; INFO_HASH_LEN];
    info_hash.copy_from_slice(&p[16..16 + INFO_HASH_LEN]);
    let mut left = [0u8; 8];
    left.copy_from_slice(&p[64..72]);
    Some(AnnounceFields {
        info_hash,
        left: u64::from_be_bytes(left),
        // An unknown event is a regular announce, as `AnnounceRequest::decode` reads it.
        event: AnnounceEvent::from_code(word(80)).unwrap_or(AnnounceEvent::None),
        num_want: word(92) as i32,
        port: u16::from_be_bytes([p[96], p[97]]),
    })
}

/// The first info-hash of `packet` when it is a scrape (action 2) naming at least one: the
/// first of the info-hashes [`decode_request`] decodes.
#[inline]
pub fn peek_scrape_first(packet: &[u8]) -> Option<InfoHash> {
    let p: &[u8; REQUEST_HEADER_LEN + INFO_HASH_LEN] = packet
        .get(..REQUEST_HEADER_LEN + INFO_HASH_LEN)?
        .try_into()
        .ok()?;
    if u32::from_be_bytes([p[8], p[9], p[10], p[11]]) != action::SCRAPE {
        return None;
    }
    let mut info_hash = [0u8; INFO_HASH_LEN];
    info_hash.copy_from_slice(&p[REQUEST_HEADER_LEN..]);
    Some(info_hash)
}

/// The info-hashes of a scrape request: a borrowed byte slice whose length is a multiple of 20.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InfoHashes<'a>(&'a [u8]);

impl<'a> InfoHashes<'a> {
    /// `None` unless `bytes.len()` is a multiple of 20.
    pub fn new(bytes: &'a [u8]) -> Option<Self> {
        (bytes.len() % INFO_HASH_LEN == 0).then_some(InfoHashes(bytes))
    }
    pub fn len(&self) -> usize {
        self.0.len() / INFO_HASH_LEN
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn as_bytes(&self) -> &'a [u8] {
        self.0
    }
    pub fn iter(&self) -> impl Iterator<Item = InfoHash> + 'a {
        self.0
            .chunks_exact(INFO_HASH_LEN)
            .filter_map(|c| c.try_into().ok())
    }
}

/// Scrape request (action 2), borrowing its info-hashes from the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScrapeRequest<'a> {
    pub connection_id: u64,
    pub transaction_id: u32,
    pub info_hashes: InfoHashes<'a>,
}

impl ScrapeRequest<'_> {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.connection_id.to_be_bytes());
        out.extend_from_slice(&action::SCRAPE.to_be_bytes());
        out.extend_from_slice(&self.transaction_id.to_be_bytes());
        out.extend_from_slice(self.info_hashes.as_bytes());
    }
}

/// A decoded request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UdpRequest<'a> {
    Connect(ConnectRequest),
    Announce(AnnounceRequest),
    Scrape(ScrapeRequest<'a>),
}

impl UdpRequest<'_> {
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            UdpRequest::Connect(r) => r.encode(out),
            UdpRequest::Announce(r) => r.encode(out),
            UdpRequest::Scrape(r) => r.encode(out),
        }
    }
}

/// Decodes a request (what a tracker receives). Never panics.
pub fn decode_request(packet: &[u8]) -> Result<UdpRequest<'_>, DecodeError> {
    let header = RequestHeader::peek(packet).ok_or(DecodeError::TooShort)?;
    match header.action {
        action::CONNECT => {
            if header.connection_id != PROTOCOL_ID {
                return Err(DecodeError::BadProtocolId);
            }
            Ok(UdpRequest::Connect(ConnectRequest {
                transaction_id: header.transaction_id,
            }))
        }
        action::ANNOUNCE => AnnounceRequest::decode(packet).map(UdpRequest::Announce),
        action::SCRAPE => {
            let rest = packet.get(REQUEST_HEADER_LEN..).unwrap_or_default();
            let whole = rest.len() - rest.len() % INFO_HASH_LEN;
            let hashes = InfoHashes::new(rest.get(..whole).unwrap_or_default())
                .ok_or(DecodeError::Truncated)?;
            Ok(UdpRequest::Scrape(ScrapeRequest {
                connection_id: header.connection_id,
                transaction_id: header.transaction_id,
                info_hashes: hashes,
            }))
        }
        other => Err(DecodeError::UnknownAction(other)),
    }
}

/// The peers of an announce response, in the family of the request's packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerList {
    V4(Vec<SocketAddrV4>),
    V6(Vec<SocketAddrV6>),
}

/// Announce response (action 1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnounceResponse {
    pub transaction_id: u32,
    pub interval: u32,
    pub leechers: u32,
    pub seeders: u32,
    pub peers: PeerList,
}

/// Appends an announce response's fixed part; peers follow with [`write_peer`].
pub fn write_announce_header(
    out: &mut Vec<u8>,
    transaction_id: u32,
    interval: u32,
    leechers: u32,
    seeders: u32,
) {
    out.extend_from_slice(&be_words::<20>(&[
        action::ANNOUNCE,
        transaction_id,
        interval,
        leechers,
        seeders,
    ]));
}

/// `values` as big-endian 32-bit words in `B` bytes (`B` is 4 x `values.len()`), so that a
/// fixed part is appended in one write rather than one per field.
#[inline]
fn be_words<const B: usize>(values: &[u32]) -> [u8; B] {
    let mut bytes = [0u8; B];
    for (field, value) in bytes.chunks_exact_mut(4).zip(values) {
        field.copy_from_slice(&value.to_be_bytes());
    }
    bytes
}

/// Appends one peer in compact form: address (4 or 16 bytes) then port. The same layout is
/// BEP 23's compact `peers` and BEP 7's `peers6`.
pub fn write_peer(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(a) => out.extend_from_slice(&a.ip().octets()),
        SocketAddr::V6(a) => out.extend_from_slice(&a.ip().octets()),
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

impl AnnounceResponse {
    pub fn encode(&self, out: &mut Vec<u8>) {
        write_announce_header(
            out,
            self.transaction_id,
            self.interval,
            self.leechers,
            self.seeders,
        );
        match &self.peers {
            PeerList::V4(peers) => peers
                .iter()
                .for_each(|p| write_peer(out, SocketAddr::V4(*p))),
            PeerList::V6(peers) => peers
                .iter()
                .for_each(|p| write_peer(out, SocketAddr::V6(*p))),
        }
    }
}

/// One scrape response entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScrapeEntry {
    pub seeders: u32,
    pub completed: u32,
    pub leechers: u32,
}

impl ScrapeEntry {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&be_words::<12>(&[
            self.seeders,
            self.completed,
            self.leechers,
        ]));
    }
}

/// Appends a scrape response's or an error response's fixed part (action, transaction id).
pub fn write_response_header(out: &mut Vec<u8>, action: u32, transaction_id: u32) {
    out.extend_from_slice(&be_words::<8>(&[action, transaction_id]));
}

/// Scrape response (action 2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScrapeResponse {
    pub transaction_id: u32,
    pub entries: Vec<ScrapeEntry>,
}

impl ScrapeResponse {
    pub fn encode(&self, out: &mut Vec<u8>) {
        write_response_header(out, action::SCRAPE, self.transaction_id);
        self.entries.iter().for_each(|e| e.encode(out));
    }
}

/// Error response (action 3), borrowing its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorResponse<'a> {
    pub transaction_id: u32,
    pub message: &'a [u8],
}

impl ErrorResponse<'_> {
    pub fn encode(&self, out: &mut Vec<u8>) {
        write_response_header(out, action::ERROR, self.transaction_id);
        out.extend_from_slice(self.message);
    }
}

/// A decoded response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UdpResponse<'a> {
    Connect(ConnectResponse),
    Announce(AnnounceResponse),
    Scrape(ScrapeResponse),
    Error(ErrorResponse<'a>),
}

impl UdpResponse<'_> {
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            UdpResponse::Connect(r) => r.encode(out),
            UdpResponse::Announce(r) => r.encode(out),
            UdpResponse::Scrape(r) => r.encode(out),
            UdpResponse::Error(r) => r.encode(out),
        }
    }
}

/// Decodes a response (what a client receives; used by the load generator and tests). `family`
/// is the address family of the packet, which sets the announce response's peer stride. At most
/// `max_items` peers or scrape entries are decoded, so that input cannot grow memory unbounded
/// beyond the packet's own size. Never panics.
pub fn decode_response(
    packet: &[u8],
    family: Family,
    max_items: usize,
) -> Result<UdpResponse<'_>, DecodeError> {
    let t = DecodeError::Truncated;
    let act = u32_at(packet, 0).ok_or(DecodeError::TooShort)?;
    let transaction_id = u32_at(packet, 4).ok_or(DecodeError::TooShort)?;
    match act {
        action::CONNECT => Ok(UdpResponse::Connect(ConnectResponse {
            transaction_id,
            connection_id: u64_at(packet, 8).ok_or(t)?,
        })),
        action::ANNOUNCE => {
            let interval = u32_at(packet, 8).ok_or(t)?;
            let leechers = u32_at(packet, 12).ok_or(t)?;
            let seeders = u32_at(packet, 16).ok_or(t)?;
            let rest = packet
                .get(ANNOUNCE_RESPONSE_HEADER_LEN..)
                .unwrap_or_default();
            let peers = match family {
                Family::V4 => PeerList::V4(
                    rest.chunks_exact(PEER_V4_LEN)
                        .take(max_items)
                        .filter_map(|c| {
                            let ip: [u8; 4] = c.get(..4)?.try_into().ok()?;
                            Some(SocketAddrV4::new(Ipv4Addr::from(ip), u16_at(c, 4)?))
                        })
                        .collect(),
                ),
                Family::V6 => PeerList::V6(
                    rest.chunks_exact(PEER_V6_LEN)
                        .take(max_items)
                        .filter_map(|c| {
                            let ip: [u8; 16] = c.get(..16)?.try_into().ok()?;
                            Some(SocketAddrV6::new(Ipv6Addr::from(ip), u16_at(c, 16)?, 0, 0))
                        })
                        .collect(),
                ),
            };
            Ok(UdpResponse::Announce(AnnounceResponse {
                transaction_id,
                interval,
                leechers,
                seeders,
                peers,
            }))
        }
        action::SCRAPE => {
            let rest = packet.get(RESPONSE_HEADER_LEN..).unwrap_or_default();
            let entries = rest
                .chunks_exact(SCRAPE_ENTRY_LEN)
                .take(max_items)
                .filter_map(|c| {
                    Some(ScrapeEntry {
                        seeders: u32_at(c, 0)?,
                        completed: u32_at(c, 4)?,
                        leechers: u32_at(c, 8)?,
                    })
                })
                .collect();
            Ok(UdpResponse::Scrape(ScrapeResponse {
                transaction_id,
                entries,
            }))
        }
        action::ERROR => Ok(UdpResponse::Error(ErrorResponse {
            transaction_id,
            message: packet.get(RESPONSE_HEADER_LEN..).unwrap_or_default(),
        })),
        other => Err(DecodeError::UnknownAction(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Hex string (spaces ignored) to bytes, for golden vectors written as in BEP 15's tables.
    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn enc(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut out = Vec::new();
        f(&mut out);
        out
    }

    #[test]
    fn golden_connect_request() {
        let bytes = hex("0000041727101980 00000000 deadbeef");
        let req = ConnectRequest {
            transaction_id: 0xdeadbeef,
        };
        assert_eq!(enc(|o| req.encode(o)), bytes);
        assert_eq!(decode_request(&bytes), Ok(UdpRequest::Connect(req)));
        // Extra trailing bytes are allowed (future extensions).
        let mut longer = bytes.clone();
        longer.extend_from_slice(b"xyz");
        assert_eq!(decode_request(&longer), Ok(UdpRequest::Connect(req)));
        // Wrong magic.
        let mut bad = bytes.clone();
        bad[7] ^= 1;
        assert_eq!(decode_request(&bad), Err(DecodeError::BadProtocolId));
        assert_eq!(decode_request(&bytes[..15]), Err(DecodeError::TooShort));
    }

    #[test]
    fn golden_connect_response() {
        let bytes = hex("00000000 deadbeef 0123456789abcdef");
        let resp = ConnectResponse {
            transaction_id: 0xdeadbeef,
            connection_id: 0x0123_4567_89ab_cdef,
        };
        assert_eq!(enc(|o| resp.encode(o)), bytes);
        assert_eq!(
            decode_response(&bytes, Family::V4, 100),
            Ok(UdpResponse::Connect(resp))
        );
    }

    fn sample_announce() -> (Vec<u8>, AnnounceRequest) {
        let bytes = hex("0123456789abcdef 00000001 00000007
             1111111111111111111111111111111111111111
             2d5452333030302d6162636465666768696a6b6c
             0000000000000100 0000000000002000 0000000000000003
             00000002 c0000201 cafebabe ffffffff 1ae1");
        let req = AnnounceRequest {
            connection_id: 0x0123_4567_89ab_cdef,
            transaction_id: 7,
            info_hash: [0x11; 20],
            peer_id: *b"-TR3000-abcdefghijkl",
            downloaded: 0x100,
            left: 0x2000,
            uploaded: 3,
            event: AnnounceEvent::Started,
            ip_address: 0xc000_0201,
            key: 0xcafe_babe,
            num_want: -1,
            port: 6881,
        };
        (bytes, req)
    }

    #[test]
    fn golden_announce_request() {
        let (bytes, req) = sample_announce();
        assert_eq!(bytes.len(), ANNOUNCE_REQUEST_LEN);
        assert_eq!(enc(|o| req.encode(o)), bytes);
        assert_eq!(decode_request(&bytes), Ok(UdpRequest::Announce(req)));
        assert_eq!(req.num_want(), None);
        assert_eq!(decode_request(&bytes[..97]), Err(DecodeError::Truncated));
        let mut bad_event = bytes.clone();
        bad_event[83] = 4;
        match decode_request(&bad_event) {
            Ok(UdpRequest::Announce(a)) => assert_eq!(a.event, AnnounceEvent::None),
            other => panic!("an unknown event is a regular announce: {other:?}"),
        }
    }

    #[test]
    fn golden_announce_response_v4_and_v6() {
        let v4 = hex("00000001 00000007 0000005a 00000002 00000003
             c6336401 03e8 c6336402 07d0");
        let resp = AnnounceResponse {
            transaction_id: 7,
            interval: 90,
            leechers: 2,
            seeders: 3,
            peers: PeerList::V4(vec![
                "198.51.100.1:1000".parse().unwrap(),
                "198.51.100.2:2000".parse().unwrap(),
            ]),
        };
        assert_eq!(enc(|o| resp.encode(o)), v4);
        assert_eq!(
            decode_response(&v4, Family::V4, 100),
            Ok(UdpResponse::Announce(resp))
        );

        let v6 = hex("00000001 00000008 0000005a 00000000 00000001
             20010db8000000000000000000000001 1ae1");
        let resp = AnnounceResponse {
            transaction_id: 8,
            interval: 90,
            leechers: 0,
            seeders: 1,
            peers: PeerList::V6(vec!["[2001:db8::1]:6881".parse().unwrap()]),
        };
        assert_eq!(enc(|o| resp.encode(o)), v6);
        assert_eq!(
            decode_response(&v6, Family::V6, 100),
            Ok(UdpResponse::Announce(resp))
        );
    }

    #[test]
    fn golden_scrape_request() {
        let bytes = hex("0123456789abcdef 00000002 00000009
             1111111111111111111111111111111111111111
             2222222222222222222222222222222222222222");
        let mut hashes = vec![0x11; 20];
        hashes.extend_from_slice(&[0x22; 20]);
        let req = ScrapeRequest {
            connection_id: 0x0123_4567_89ab_cdef,
            transaction_id: 9,
            info_hashes: InfoHashes::new(&hashes).unwrap(),
        };
        assert_eq!(enc(|o| req.encode(o)), bytes);
        assert_eq!(decode_request(&bytes), Ok(UdpRequest::Scrape(req)));
        let got: Vec<InfoHash> = req.info_hashes.iter().collect();
        assert_eq!(got, vec![[0x11; 20], [0x22; 20]]);
        // A trailing partial hash is ignored.
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[0x33; 19]);
        assert_eq!(decode_request(&longer), Ok(UdpRequest::Scrape(req)));
        assert!(InfoHashes::new(&[0; 19]).is_none());
    }

    #[test]
    fn golden_scrape_response() {
        let bytes = hex("00000002 00000009 00000003 00000000 00000004 0000000a 00000000 00000000");
        let resp = ScrapeResponse {
            transaction_id: 9,
            entries: vec![
                ScrapeEntry {
                    seeders: 3,
                    completed: 0,
                    leechers: 4,
                },
                ScrapeEntry {
                    seeders: 10,
                    completed: 0,
                    leechers: 0,
                },
            ],
        };
        assert_eq!(enc(|o| resp.encode(o)), bytes);
        assert_eq!(
            decode_response(&bytes, Family::V4, 100),
            Ok(UdpResponse::Scrape(resp))
        );
    }

    #[test]
    fn golden_error_response() {
        let mut bytes = hex("00000003 00000009");
        bytes.extend_from_slice(b"connection id expired");
        let resp = ErrorResponse {
            transaction_id: 9,
            message: b"connection id expired",
        };
        assert_eq!(enc(|o| resp.encode(o)), bytes);
        assert_eq!(
            decode_response(&bytes, Family::V6, 100),
            Ok(UdpResponse::Error(resp))
        );
    }

    #[test]
    fn unknown_actions_and_short_packets() {
        let bytes = hex("0123456789abcdef 00000009 00000001");
        assert_eq!(decode_request(&bytes), Err(DecodeError::UnknownAction(9)));
        assert_eq!(
            decode_response(&hex("00000009 00000001"), Family::V4, 1),
            Err(DecodeError::UnknownAction(9))
        );
        assert_eq!(
            decode_response(&hex("00000000"), Family::V4, 1),
            Err(DecodeError::TooShort)
        );
        assert_eq!(
            decode_response(&hex("00000000 00000001 0000"), Family::V4, 1),
            Err(DecodeError::Truncated)
        );
    }

    fn arb_event() -> impl Strategy<Value = AnnounceEvent> {
        prop_oneof![
            Just(AnnounceEvent::None),
            Just(AnnounceEvent::Completed),
            Just(AnnounceEvent::Started),
            Just(AnnounceEvent::Stopped),
        ]
    }

    prop_compose! {
        fn arb_announce()(
            connection_id: u64, transaction_id: u32, info_hash: [u8; 20], peer_id: [u8; 20],
            downloaded: u64, left: u64, uploaded: u64, event in arb_event(), ip_address: u32,
            key: u32, num_want: i32, port: u16,
        ) -> AnnounceRequest {
            AnnounceRequest { connection_id, transaction_id, info_hash, peer_id, downloaded,
                left, uploaded, event, ip_address, key, num_want, port }
        }
    }

    fn arb_response() -> impl Strategy<Value = (Family, UdpResponse<'static>)> {
        let v4 = proptest::collection::vec(any::<(u32, u16)>(), 0..30).prop_map(|v| {
            PeerList::V4(
                v.into_iter()
                    .map(|(ip, port)| SocketAddrV4::new(Ipv4Addr::from(ip), port))
                    .collect(),
            )
        });
        let v6 = proptest::collection::vec(any::<(u128, u16)>(), 0..30).prop_map(|v| {
            PeerList::V6(
                v.into_iter()
                    .map(|(ip, port)| SocketAddrV6::new(Ipv6Addr::from(ip), port, 0, 0))
                    .collect(),
            )
        });
        prop_oneof![
            any::<(u32, u64)>().prop_map(|(t, c)| (
                Family::V4,
                UdpResponse::Connect(ConnectResponse {
                    transaction_id: t,
                    connection_id: c
                })
            )),
            (any::<(u32, u32, u32, u32)>(), prop_oneof![v4, v6]).prop_map(
                |((transaction_id, interval, leechers, seeders), peers)| {
                    let family = match peers {
                        PeerList::V4(_) => Family::V4,
                        PeerList::V6(_) => Family::V6,
                    };
                    (
                        family,
                        UdpResponse::Announce(AnnounceResponse {
                            transaction_id,
                            interval,
                            leechers,
                            seeders,
                            peers,
                        }),
                    )
                }
            ),
            (
                any::<u32>(),
                proptest::collection::vec(any::<(u32, u32, u32)>(), 0..80)
            )
                .prop_map(|(transaction_id, e)| (
                    Family::V4,
                    UdpResponse::Scrape(ScrapeResponse {
                        transaction_id,
                        entries: e
                            .into_iter()
                            .map(|(seeders, completed, leechers)| ScrapeEntry {
                                seeders,
                                completed,
                                leechers
                            })
                            .collect(),
                    })
                )),
        ]
    }

    proptest! {
        #[test]
        fn announce_request_round_trips(req in arb_announce()) {
            let bytes = enc(|o| req.encode(o));
            prop_assert_eq!(bytes.len(), ANNOUNCE_REQUEST_LEN);
            prop_assert_eq!(decode_request(&bytes), Ok(UdpRequest::Announce(req)));
        }

        #[test]
        fn connect_request_round_trips(transaction_id: u32) {
            let req = UdpRequest::Connect(ConnectRequest { transaction_id });
            let bytes = enc(|o| req.encode(o));
            prop_assert_eq!(decode_request(&bytes), Ok(req));
        }

        #[test]
        fn scrape_request_round_trips(
            connection_id: u64,
            transaction_id: u32,
            hashes in proptest::collection::vec(any::<[u8; 20]>(), 0..80),
        ) {
            let flat: Vec<u8> = hashes.iter().flatten().copied().collect();
            let req = UdpRequest::Scrape(ScrapeRequest {
                connection_id,
                transaction_id,
                info_hashes: InfoHashes::new(&flat).unwrap(),
            });
            let bytes = enc(|o| req.encode(o));
            prop_assert_eq!(decode_request(&bytes), Ok(req));
        }

        #[test]
        fn responses_round_trip((family, resp) in arb_response()) {
            let bytes = enc(|o| resp.encode(o));
            prop_assert_eq!(decode_response(&bytes, family, usize::MAX), Ok(resp));
        }

        #[test]
        fn error_response_round_trips(transaction_id: u32, message in proptest::collection::vec(any::<u8>(), 0..100)) {
            let resp = UdpResponse::Error(ErrorResponse { transaction_id, message: &message });
            let bytes = enc(|o| resp.encode(o));
            prop_assert_eq!(decode_response(&bytes, Family::V4, 0), Ok(resp));
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_request(&bytes);
            let _ = decode_response(&bytes, Family::V4, 10);
            let _ = decode_response(&bytes, Family::V6, 10);
        }

        /// The fixed-offset readers see what `decode_request` sees: on random bytes whose
        /// action is forced to announce, scrape or left as drawn, and on valid announces and
        /// scrapes cut at any length or followed by other bytes.
        #[test]
        fn fixed_offset_readers_agree_with_decode_request(
            mut bytes in proptest::collection::vec(any::<u8>(), 0..160),
            force in 0u8..3,
            req in arb_announce(),
            hashes in proptest::collection::vec(any::<[u8; 20]>(), 0..3),
            cut in 0usize..200,
            tail in proptest::collection::vec(any::<u8>(), 0..30),
        ) {
            if bytes.len() >= 12 && force < 2 {
                let act = [action::ANNOUNCE, action::SCRAPE][usize::from(force)];
                bytes[8..12].copy_from_slice(&act.to_be_bytes());
            }
            let announce = enc(|o| req.encode(o));
            let scrape = enc(|o| ScrapeRequest {
                connection_id: req.connection_id,
                transaction_id: req.transaction_id,
                info_hashes: InfoHashes::new(&hashes.concat()).unwrap(),
            }.encode(o));
            let mut packets = vec![bytes];
            for whole in [announce, scrape] {
                packets.push(whole[..cut.min(whole.len())].to_vec());
                packets.push([whole.as_slice(), &tail].concat());
            }
            for p in &packets {
                let (announced, first) = match decode_request(p) {
                    Ok(UdpRequest::Announce(a)) => (Some(AnnounceFields {
                        info_hash: a.info_hash,
                        left: a.left,
                        event: a.event,
                        num_want: a.num_want,
                        port: a.port,
                    }), None),
                    Ok(UdpRequest::Scrape(s)) => (None, s.info_hashes.iter().next()),
                    _ => (None, None),
                };
                prop_assert_eq!(peek_announce(p), announced);
                prop_assert_eq!(peek_announce(p).map(|a| a.num_want()), announced.map(|a| a.num_want()));
                prop_assert_eq!(peek_scrape_first(p), first);
            }
        }

        #[test]
        fn decoding_ignores_trailing_bytes(req in arb_announce(), tail in proptest::collection::vec(any::<u8>(), 0..40)) {
            let mut bytes = enc(|o| req.encode(o));
            bytes.extend_from_slice(&tail);
            prop_assert_eq!(decode_request(&bytes), Ok(UdpRequest::Announce(req)));
        }
    }
}
