//! The values of the tracker usage's two RELOAD kinds (protocols.md §3), encoded with RFC 6940's
//! presentation language (§6.3.1: big-endian integers, vectors prefixed by their length in
//! bytes, the prefix as wide as the vector's upper bound needs).
//!
//! CONTENT-REGISTRATION (kind 0xf0000101), resource name = swarm id, one dictionary entry per
//! connection tracker and part. A connection tracker's peer list of one swarm is cut into parts
//! of at most `overlay.registration_part_bytes` bytes, so that every Store fits the overlay's
//! `max_message_size`; the dictionary key is the storing node's Node-ID followed by the part
//! number, and every part of one registration carries the same `version` (the registration's
//! storage time), so a reader uses only the parts of the newest version and knows from `parts`
//! whether it has them all:
//!
//! ```text
//! opaque DictionaryKey[18];          /* NodeId (16 bytes) || uint16 part */
//!
//! enum { seeder(0), leech(1), (255) } PeerMode;
//! enum { host(0), reflexive(1), proxy(2), (255) } AddressType;
//!
//! struct {
//!     AddressType type;
//!     uint8       family;            /* 4 or 6 */
//!     select (family) {
//!         case 4: opaque ip[4];
//!         case 6: opaque ip[16];
//!     };
//!     uint16      port;
//!     uint32      priority;
//! } PeerAddress;                     /* 12 or 24 bytes */
//!
//! struct { uint64 start; uint64 end; } ChunkRange;   /* inclusive, start <= end */
//!
//! struct {
//!     opaque      peer_id<1..2^8-1>;  /* at most 64 bytes */
//!     PeerMode    mode;
//!     PeerAddress addresses<0..2^8-1>;  /* at most 16 addresses */
//!     ChunkRange  chunks<0..2^16-1>;    /* at most 1024 ranges */
//! } PeerListData;
//!
//! struct {
//!     uint64       version;          /* ms; equal in every part of one registration */
//!     uint16       part;             /* 0 .. parts-1 */
//!     uint16       parts;            /* 1 .. 4096 */
//!     opaque       content_name<1..2^8-1>;  /* the swarm id */
//!     PeerListData peer_list<0..2^32-1>;
//! } ContentRegistration;
//! ```
//!
//! PEER-STATUS (kind 0xf0000102), resource name = peer id, dictionary key = the connection
//! tracker's Node-ID (16 bytes):
//!
//! ```text
//! struct { NodeId connection_tracker_id; } PeerStatusIndex;   /* 16 bytes */
//! ```
//!
//! The live status a connection tracker answers to a routed exp_a request (body = the peer
//! id):
//!
//! ```text
//! struct { opaque swarm_id<1..2^8-1>; PeerMode mode; } SwarmMembership;
//! struct {
//!     uint8           found;          /* 0: nothing follows */
//!     uint8           state;          /* 0 PEER REGISTERED, 1 TRACKING */
//!     uint64          online_ms;
//!     PeerAddress     addresses<0..2^8-1>;
//!     SwarmMembership swarms<0..2^16-1>;
//! } LiveStatus;
//! ```
//!
//! Every decoder refuses a truncated value, bytes after the value, an out-of-range enum and a
//! list over its bound; the storing node applies the same decoders before it accepts a value.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use smallvec::SmallVec;

use crate::engine::{AddrType, ChunkRange, PeerAddr, PeerId, PeerMode, SwarmId, MAX_ID_BYTES};
use crate::overlay::wire::NodeId;

/// Most addresses of one peer in a value.
pub const MAX_ADDRESSES: usize = 16;
/// Most chunk ranges of one peer in a value.
pub const MAX_CHUNK_RANGES: usize = 1024;
/// Most peers the storing node accepts in one CONTENT-REGISTRATION value.
pub const MAX_PEERS_PER_VALUE: usize = 16_384;
/// Most parts of one registration.
pub const MAX_PARTS: u16 = 4096;
/// Length of a CONTENT-REGISTRATION dictionary key: Node-ID and part number.
pub const CONTENT_KEY_LEN: usize = 18;
/// Fixed bytes of a ContentRegistration before its content name and peer list.
const HEADER_BYTES: usize = 8 + 2 + 2 + 1 + 4;

/// Why a value was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("value ends early")]
    Truncated,
    #[error("bytes after the value")]
    TrailingBytes,
    #[error("field out of range")]
    OutOfRange,
    #[error("list over its limit")]
    TooLong,
}

/// One peer of a registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerListData {
    pub peer_id: PeerId,
    pub mode: PeerMode,
    pub addrs: SmallVec<[PeerAddr; 2]>,
    pub chunks: Vec<ChunkRange>,
}

/// One part of a connection tracker's registration of a swarm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContentRegistration {
    pub version: u64,
    pub part: u16,
    pub parts: u16,
    pub content_name: SwarmId,
    pub peers: Vec<PeerListData>,
}

/// A peer's live status as its connection tracker answers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveStatus {
    pub tracking: bool,
    pub online_ms: u64,
    pub addrs: SmallVec<[PeerAddr; 2]>,
    pub swarms: Vec<(SwarmId, PeerMode)>,
}

/// The dictionary key of part `part` stored by `node`.
pub fn content_key(node: NodeId, part: u16) -> Vec<u8> {
    let mut k = Vec::with_capacity(CONTENT_KEY_LEN);
    k.extend_from_slice(&node.0);
    k.extend_from_slice(&part.to_be_bytes());
    k
}

/// The node and part a CONTENT-REGISTRATION dictionary key names.
pub fn parse_content_key(key: &[u8]) -> Option<(NodeId, u16)> {
    if key.len() != CONTENT_KEY_LEN {
        return None;
    }
    let mut id = [0u8; 16];
    id.copy_from_slice(&key[..16]);
    Some((NodeId(id), u16::from_be_bytes([key[16], key[17]])))
}

// ----- writing -----

fn put_addr(out: &mut Vec<u8>, a: &PeerAddr) {
    out.push(match a.kind {
        AddrType::Host => 0,
        AddrType::Reflexive => 1,
        AddrType::Proxy => 2,
    });
    match a.addr.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&a.addr.port().to_be_bytes());
    out.extend_from_slice(&a.priority.to_be_bytes());
}

fn put_mode(out: &mut Vec<u8>, m: PeerMode) {
    out.push(match m {
        PeerMode::Seeder => 0,
        PeerMode::Leech => 1,
    });
}

/// Bytes [`encode_peer`] writes for `p`.
pub fn peer_len(p: &PeerListData) -> usize {
    let addrs: usize = p
        .addrs
        .iter()
        .take(MAX_ADDRESSES)
        .map(|a| if a.addr.is_ipv4() { 12 } else { 24 })
        .sum();
    1 + p.peer_id.as_bytes().len() + 1 + 1 + addrs + 2 + 16 * p.chunks.len().min(MAX_CHUNK_RANGES)
}

/// Appends one PeerListData (lists beyond their bound are cut).
pub fn encode_peer(out: &mut Vec<u8>, p: &PeerListData) {
    let id = p.peer_id.as_bytes();
    out.push(id.len() as u8);
    out.extend_from_slice(id);
    put_mode(out, p.mode);
    let addrs = &p.addrs[..p.addrs.len().min(MAX_ADDRESSES)];
    let len: usize = addrs
        .iter()
        .map(|a| if a.addr.is_ipv4() { 12 } else { 24 })
        .sum();
    out.push(len as u8);
    for a in addrs {
        put_addr(out, a);
    }
    let chunks = &p.chunks[..p.chunks.len().min(MAX_CHUNK_RANGES)];
    out.extend_from_slice(&((chunks.len() * 16) as u16).to_be_bytes());
    for c in chunks {
        out.extend_from_slice(&c.start.to_be_bytes());
        out.extend_from_slice(&c.end.to_be_bytes());
    }
}

/// Encodes one part whose peers are already encoded in `peer_bytes`.
fn encode_part(version: u64, part: u16, parts: u16, swarm: &SwarmId, peer_bytes: &[u8]) -> Vec<u8> {
    let name = swarm.as_bytes();
    let mut out = Vec::with_capacity(HEADER_BYTES + name.len() + peer_bytes.len());
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&part.to_be_bytes());
    out.extend_from_slice(&parts.to_be_bytes());
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend_from_slice(&(peer_bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(peer_bytes);
    out
}

/// Encodes one registration, cut into parts of at most `part_bytes` bytes each (a single peer
/// larger than that gets a part of its own). An empty peer list gives one empty part. At most
/// [`MAX_PARTS`] parts: peers beyond them are left out (a registration that large exceeds the
/// storing node's limits anyway).
pub fn encode_registration(
    version: u64,
    swarm: &SwarmId,
    peers: &[PeerListData],
    part_bytes: usize,
) -> Vec<Vec<u8>> {
    let budget = part_bytes
        .saturating_sub(HEADER_BYTES + swarm.as_bytes().len())
        .max(1);
    let mut chunks: Vec<Vec<u8>> = vec![Vec::new()];
    for p in peers {
        let len = peer_len(p);
        let current = chunks.last().map_or(0, Vec::len);
        if current > 0 && current + len > budget {
            if chunks.len() >= MAX_PARTS as usize {
                break;
            }
            chunks.push(Vec::new());
        }
        if let Some(last) = chunks.last_mut() {
            encode_peer(last, p);
        }
    }
    let parts = chunks.len() as u16;
    chunks
        .iter()
        .enumerate()
        .map(|(i, bytes)| encode_part(version, i as u16, parts, swarm, bytes))
        .collect()
}

/// Encodes a PeerStatusIndex.
pub fn encode_peer_status(connection_tracker: NodeId) -> Vec<u8> {
    connection_tracker.0.to_vec()
}

/// Encodes a LiveStatus; `None` encodes "not found".
pub fn encode_live_status(status: Option<&LiveStatus>) -> Vec<u8> {
    let Some(s) = status else {
        return vec![0];
    };
    let mut out = vec![1, u8::from(s.tracking)];
    out.extend_from_slice(&s.online_ms.to_be_bytes());
    let addrs = &s.addrs[..s.addrs.len().min(MAX_ADDRESSES)];
    let len: usize = addrs
        .iter()
        .map(|a| if a.addr.is_ipv4() { 12 } else { 24 })
        .sum();
    out.push(len as u8);
    for a in addrs {
        put_addr(&mut out, a);
    }
    let mut swarms = Vec::new();
    for (id, mode) in &s.swarms {
        let b = id.as_bytes();
        if swarms.len() + 2 + b.len() > usize::from(u16::MAX) {
            break;
        }
        swarms.push(b.len() as u8);
        swarms.extend_from_slice(b);
        put_mode(&mut swarms, *mode);
    }
    out.extend_from_slice(&(swarms.len() as u16).to_be_bytes());
    out.extend_from_slice(&swarms);
    out
}

// ----- reading -----

/// A cursor over a value that refuses to read past its end.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ValueError> {
        if self.bytes.len() < n {
            return Err(ValueError::Truncated);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, ValueError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, ValueError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, ValueError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, ValueError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn done(&self) -> Result<(), ValueError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(ValueError::TrailingBytes)
        }
    }
}

fn read_id<'a>(r: &mut Reader<'a>) -> Result<&'a [u8], ValueError> {
    let len = usize::from(r.u8()?);
    if len == 0 || len > MAX_ID_BYTES {
        return Err(ValueError::OutOfRange);
    }
    r.take(len)
}

fn read_mode(r: &mut Reader<'_>) -> Result<PeerMode, ValueError> {
    match r.u8()? {
        0 => Ok(PeerMode::Seeder),
        1 => Ok(PeerMode::Leech),
        _ => Err(ValueError::OutOfRange),
    }
}

fn read_addr(r: &mut Reader<'_>) -> Result<PeerAddr, ValueError> {
    let kind = match r.u8()? {
        0 => AddrType::Host,
        1 => AddrType::Reflexive,
        2 => AddrType::Proxy,
        _ => return Err(ValueError::OutOfRange),
    };
    let ip = match r.u8()? {
        4 => {
            let b = r.take(4)?;
            IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
        }
        6 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(r.take(16)?);
            IpAddr::V6(Ipv6Addr::from(a))
        }
        _ => return Err(ValueError::OutOfRange),
    };
    let port = r.u16()?;
    let priority = r.u32()?;
    Ok(PeerAddr {
        addr: SocketAddr::new(ip, port),
        priority,
        kind,
        connection: None,
        asn: None,
        ppsp_pp: false,
    })
}

fn read_addrs(r: &mut Reader<'_>) -> Result<SmallVec<[PeerAddr; 2]>, ValueError> {
    let len = usize::from(r.u8()?);
    let mut inner = Reader {
        bytes: r.take(len)?,
    };
    let mut addrs = SmallVec::new();
    while !inner.bytes.is_empty() {
        if addrs.len() >= MAX_ADDRESSES {
            return Err(ValueError::TooLong);
        }
        addrs.push(read_addr(&mut inner)?);
    }
    Ok(addrs)
}

fn read_peer(r: &mut Reader<'_>) -> Result<PeerListData, ValueError> {
    let peer_id = PeerId::new(read_id(r)?).map_err(|_| ValueError::OutOfRange)?;
    let mode = read_mode(r)?;
    let addrs = read_addrs(r)?;
    let len = usize::from(r.u16()?);
    if len % 16 != 0 {
        return Err(ValueError::OutOfRange);
    }
    if len / 16 > MAX_CHUNK_RANGES {
        return Err(ValueError::TooLong);
    }
    let mut inner = Reader {
        bytes: r.take(len)?,
    };
    let mut chunks = Vec::with_capacity(len / 16);
    while !inner.bytes.is_empty() {
        let start = inner.u64()?;
        let end = inner.u64()?;
        chunks.push(ChunkRange::new(start, end).ok_or(ValueError::OutOfRange)?);
    }
    Ok(PeerListData {
        peer_id,
        mode,
        addrs,
        chunks,
    })
}

/// Decodes one ContentRegistration part; `max_peers` bounds its peer list.
pub fn decode_registration(
    bytes: &[u8],
    max_peers: usize,
) -> Result<ContentRegistration, ValueError> {
    let mut r = Reader { bytes };
    let version = r.u64()?;
    let part = r.u16()?;
    let parts = r.u16()?;
    if parts == 0 || parts > MAX_PARTS || part >= parts {
        return Err(ValueError::OutOfRange);
    }
    let content_name = SwarmId::new(read_id(&mut r)?).map_err(|_| ValueError::OutOfRange)?;
    let len = r.u32()? as usize;
    let mut list = Reader {
        bytes: r.take(len)?,
    };
    r.done()?;
    let mut peers = Vec::new();
    while !list.bytes.is_empty() {
        if peers.len() >= max_peers {
            return Err(ValueError::TooLong);
        }
        peers.push(read_peer(&mut list)?);
    }
    Ok(ContentRegistration {
        version,
        part,
        parts,
        content_name,
        peers,
    })
}

/// Decodes a PeerStatusIndex.
pub fn decode_peer_status(bytes: &[u8]) -> Result<NodeId, ValueError> {
    let mut r = Reader { bytes };
    let mut id = [0u8; 16];
    id.copy_from_slice(r.take(16)?);
    r.done()?;
    Ok(NodeId(id))
}

/// Decodes a LiveStatus (`None`: the peer is not registered there).
pub fn decode_live_status(bytes: &[u8]) -> Result<Option<LiveStatus>, ValueError> {
    let mut r = Reader { bytes };
    match r.u8()? {
        0 => {
            r.done()?;
            return Ok(None);
        }
        1 => {}
        _ => return Err(ValueError::OutOfRange),
    }
    let tracking = match r.u8()? {
        0 => false,
        1 => true,
        _ => return Err(ValueError::OutOfRange),
    };
    let online_ms = r.u64()?;
    let addrs = read_addrs(&mut r)?;
    let len = usize::from(r.u16()?);
    let mut inner = Reader {
        bytes: r.take(len)?,
    };
    r.done()?;
    let mut swarms = Vec::new();
    while !inner.bytes.is_empty() {
        let id = SwarmId::new(read_id(&mut inner)?).map_err(|_| ValueError::OutOfRange)?;
        swarms.push((id, read_mode(&mut inner)?));
    }
    Ok(Some(LiveStatus {
        tracking,
        online_ms,
        addrs,
        swarms,
    }))
}

/// Whether a CONTENT-REGISTRATION value with dictionary key `key` is acceptable to store: the
/// key has the Node-ID + part layout, the value decodes completely within the limits and its
/// part number matches the key's.
pub fn valid_content_registration(key: &[u8], value: &[u8], max_peers: usize) -> bool {
    let Some((_, part)) = parse_content_key(key) else {
        return false;
    };
    decode_registration(value, max_peers).is_ok_and(|r| r.part == part)
}

/// Whether a PEER-STATUS value with dictionary key `key` is acceptable: the key is a Node-ID
/// and the value names that same node.
pub fn valid_peer_status(key: &[u8], value: &[u8]) -> bool {
    key.len() == 16 && decode_peer_status(value).is_ok_and(|n| n.0 == key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn peer(i: u32) -> PeerListData {
        PeerListData {
            peer_id: PeerId::new(format!("peer-{i:08}").as_bytes()).unwrap(),
            mode: if i % 3 == 0 {
                PeerMode::Seeder
            } else {
                PeerMode::Leech
            },
            addrs: smallvec::smallvec![PeerAddr {
                addr: SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)),
                    (i % 60000) as u16 + 1
                ),
                priority: 1,
                kind: AddrType::Host,
                connection: None,
                asn: None,
                ppsp_pp: false,
            }],
            chunks: if i % 2 == 0 {
                vec![ChunkRange::new(0, u64::from(i)).unwrap()]
            } else {
                Vec::new()
            },
        }
    }

    #[test]
    fn a_registration_round_trips_byte_exact() {
        let swarm = SwarmId::new(b"swarm-1").unwrap();
        let peers: Vec<_> = (0..5).map(peer).collect();
        let parts = encode_registration(77, &swarm, &peers, 4000);
        assert_eq!(parts.len(), 1);
        let r = decode_registration(&parts[0], 1000).unwrap();
        assert_eq!(r.version, 77);
        assert_eq!((r.part, r.parts), (0, 1));
        assert_eq!(r.content_name, swarm);
        assert_eq!(r.peers, peers);
        // The layout: version, part, parts, name<1..2^8-1>, list<0..2^32-1>.
        assert_eq!(&parts[0][..8], &77u64.to_be_bytes());
        assert_eq!(&parts[0][8..12], &[0, 0, 0, 1]);
        assert_eq!(parts[0][12], 7);
        assert_eq!(&parts[0][13..20], b"swarm-1");
        let list_len = u32::from_be_bytes(parts[0][20..24].try_into().unwrap()) as usize;
        assert_eq!(parts[0].len(), 24 + list_len);
        let first = &parts[0][24..];
        assert_eq!(first[0], 13);
        assert_eq!(&first[1..14], b"peer-00000000");
        assert_eq!(first[14], 0, "seeder");
        assert_eq!(first[15], 12, "one IPv4 address");
        assert_eq!(&first[16..18], &[0, 4], "host, IPv4");
    }

    #[test]
    fn twenty_thousand_peers_split_into_parts_that_each_fit_and_rejoin_completely() {
        let swarm = SwarmId::new(&[0xab; 20]).unwrap();
        let peers: Vec<_> = (0..20_000).map(peer).collect();
        let parts = encode_registration(5, &swarm, &peers, 4000);
        assert!(parts.len() > 100, "{} parts", parts.len());
        let mut back = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            assert!(p.len() <= 4000, "part {i} is {} bytes", p.len());
            let r = decode_registration(p, 4096).unwrap();
            assert_eq!(r.part as usize, i);
            assert_eq!(r.parts as usize, parts.len());
            back.extend(r.peers);
        }
        assert_eq!(back, peers);
    }

    #[test]
    fn truncated_overlong_and_out_of_range_values_are_refused() {
        let swarm = SwarmId::new(b"s").unwrap();
        let parts = encode_registration(1, &swarm, &[peer(1), peer(2)], 4000);
        let v = &parts[0];
        for cut in 0..v.len() {
            assert!(decode_registration(&v[..cut], 100).is_err(), "cut at {cut}");
        }
        let mut long = v.clone();
        long.push(0);
        assert_eq!(
            decode_registration(&long, 100),
            Err(ValueError::TrailingBytes)
        );
        assert_eq!(decode_registration(v, 1), Err(ValueError::TooLong));
        let mut bad_parts = v.clone();
        bad_parts[11] = 0; // parts = 0
        assert_eq!(
            decode_registration(&bad_parts, 100),
            Err(ValueError::OutOfRange)
        );
        assert!(valid_content_registration(
            &content_key(NodeId([1; 16]), 0),
            v,
            100
        ));
        assert!(!valid_content_registration(
            &content_key(NodeId([1; 16]), 1),
            v,
            100
        ));
        assert!(!valid_content_registration(&[1; 16], v, 100));
    }

    #[test]
    fn peer_status_and_live_status_round_trip() {
        let n = NodeId([7; 16]);
        assert_eq!(decode_peer_status(&encode_peer_status(n)), Ok(n));
        assert!(valid_peer_status(&[7; 16], &encode_peer_status(n)));
        assert!(!valid_peer_status(&[8; 16], &encode_peer_status(n)));
        assert!(decode_peer_status(&[7; 17]).is_err());
        let s = LiveStatus {
            tracking: true,
            online_ms: 1234,
            addrs: peer(3).addrs,
            swarms: vec![(SwarmId::new(b"a").unwrap(), PeerMode::Leech)],
        };
        let b = encode_live_status(Some(&s));
        assert_eq!(decode_live_status(&b), Ok(Some(s)));
        assert_eq!(decode_live_status(&encode_live_status(None)), Ok(None));
        for cut in 0..b.len() {
            assert!(decode_live_status(&b[..cut]).is_err());
        }
    }

    proptest! {
        #[test]
        fn any_bytes_decode_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_registration(&bytes, 100);
            let _ = decode_live_status(&bytes);
            let _ = decode_peer_status(&bytes);
        }

        #[test]
        fn registrations_round_trip(n in 0u32..50, part_bytes in 64usize..2000) {
            let swarm = SwarmId::new(b"prop").unwrap();
            let peers: Vec<_> = (0..n).map(peer).collect();
            let parts = encode_registration(9, &swarm, &peers, part_bytes);
            let mut back = Vec::new();
            for p in &parts {
                back.extend(decode_registration(p, 10_000).unwrap().peers);
            }
            prop_assert_eq!(back, peers);
        }
    }
}
