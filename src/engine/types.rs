//! Protocol-neutral request and response types of the engine.
//!
//! Every front-end (PPSTP, and later the BitTorrent protocols) maps its messages onto these.
//! Identifiers are stored inline (no allocation) up to [`MAX_ID_BYTES`]; the configured limit
//! (`engine.max_id_len`) may be lower.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// Hard upper bound for swarm and peer identifier lengths, in bytes. The configurable limit
/// (`engine.max_id_len`, default 64) can only be lower.
pub const MAX_ID_BYTES: usize = 64;

/// Monotonic time in milliseconds since an arbitrary origin chosen by the caller. The runtime
/// passes a real clock; tests and simulations pass a fake one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(pub u64);

impl Time {
    pub const fn from_millis(ms: u64) -> Self {
        Time(ms)
    }
    pub const fn from_secs(s: u64) -> Self {
        Time(s * 1000)
    }
    pub const fn as_millis(self) -> u64 {
        self.0
    }
    pub const fn saturating_add_millis(self, ms: u64) -> Self {
        Time(self.0.saturating_add(ms))
    }
    pub const fn saturating_sub(self, earlier: Time) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// Identifier bytes (1..=[`MAX_ID_BYTES`]), stored inline.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdBytes {
    len: u8,
    bytes: [u8; MAX_ID_BYTES],
}

/// Why an identifier was refused at the edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("identifier is empty")]
    Empty,
    #[error("identifier is longer than {MAX_ID_BYTES} bytes")]
    TooLong,
}

impl IdBytes {
    pub fn new(bytes: &[u8]) -> Result<Self, IdError> {
        if bytes.is_empty() {
            return Err(IdError::Empty);
        }
        if bytes.len() > MAX_ID_BYTES {
            return Err(IdError::TooLong);
        }
        let mut buf = [0u8; MAX_ID_BYTES];
        buf[..bytes.len()].copy_from_slice(bytes);
        Ok(IdBytes {
            len: bytes.len() as u8,
            bytes: buf,
        })
    }
    /// The id of exactly the `L` bytes of `bytes` (`L` in 1..=[`MAX_ID_BYTES`], checked when
    /// compiled): a fixed-size copy without a length check or a call, for ids of a known size
    /// (a BitTorrent info-hash, the engine peer id of a BitTorrent peer).
    #[inline]
    pub fn from_array<const L: usize>(bytes: [u8; L]) -> Self {
        const { assert!(L >= 1 && L <= MAX_ID_BYTES) };
        let mut buf = [0u8; MAX_ID_BYTES];
        buf[..L].copy_from_slice(&bytes);
        IdBytes {
            len: L as u8,
            bytes: buf,
        }
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
    pub fn len(&self) -> usize {
        self.len as usize
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl fmt::Debug for IdBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(self.as_bytes()) {
            Ok(s) => write!(f, "{s:?}"),
            Err(_) => {
                for b in self.as_bytes() {
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
        }
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub IdBytes);

        impl $name {
            pub fn new(bytes: &[u8]) -> Result<Self, IdError> {
                IdBytes::new(bytes).map($name)
            }
            /// The id of exactly the `L` bytes of `bytes` ([`IdBytes::from_array`]).
            #[inline]
            pub fn from_array<const L: usize>(bytes: [u8; L]) -> Self {
                $name(IdBytes::from_array(bytes))
            }
            pub fn as_bytes(&self) -> &[u8] {
                self.0.as_bytes()
            }
            /// An id from bytes the engine stored after checking them (1..=64 bytes); longer
            /// input is cut at [`MAX_ID_BYTES`]. Never fails.
            #[allow(dead_code)] // not every id type is read back from the tables
            pub(crate) fn from_stored(bytes: &[u8]) -> Self {
                let len = bytes.len().min(MAX_ID_BYTES);
                let mut buf = [0u8; MAX_ID_BYTES];
                buf[..len].copy_from_slice(&bytes[..len]);
                $name(IdBytes {
                    len: len as u8,
                    bytes: buf,
                })
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:?})"), self.0)
            }
        }
    };
}

id_type!(
    /// A swarm (channel, file) identifier: RFC 7574 swarm id bytes, or a BitTorrent info-hash.
    SwarmId
);
id_type!(
    /// A peer identifier as the peer announced it (RFC 7846 `peer_id`).
    PeerId
);

/// RFC 7846 error codes (§6.2), shared by every front-end's error mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ErrorCode {
    /// 00: no error.
    Ok = 0,
    /// 01: malformed request, invalid field, or a limit exceeded by the request itself.
    BadRequest = 1,
    /// 02: unsupported protocol version.
    UnsupportedVersion = 2,
    /// 03: the action is not allowed in the peer's current state (RFC 7846 Table 6).
    Forbidden = 3,
    /// 04: internal error.
    InternalError = 4,
    /// 05: overload: a table limit is reached.
    ServiceUnavailable = 5,
    /// 06: authentication required.
    AuthenticationRequired = 6,
}

impl ErrorCode {
    pub const fn code(self) -> u8 {
        self as u8
    }
}

/// Whether a peer holds the whole content or is still fetching it (RFC 7846 `peer_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PeerMode {
    Seeder,
    Leech,
}

/// A swarm action inside CONNECT (RFC 7846 `swarm_action.action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActionKind {
    Join,
    Leave,
}

/// RFC 7846 `peer_addr.type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddrType {
    Host,
    Reflexive,
    Proxy,
}

/// RFC 7846 `peer_addr.connection`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinkKind {
    Wired,
    Wireless,
}

/// One address of a peer (RFC 7846 `peer_addr`). Optional descriptive members are kept so that
/// FIND answers can return them; they are small and fixed-size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerAddr {
    pub addr: SocketAddr,
    pub priority: u32,
    pub kind: AddrType,
    pub connection: Option<LinkKind>,
    pub asn: Option<u32>,
    /// True when the peer said `"peer_protocol": "PPSP-PP"`.
    pub ppsp_pp: bool,
}

impl PeerAddr {
    /// The reflexive address the tracker saw a request come from.
    pub fn reflexive(addr: SocketAddr) -> Self {
        PeerAddr {
            addr,
            priority: 1,
            kind: AddrType::Reflexive,
            connection: None,
            asn: None,
            ppsp_pp: false,
        }
    }
    pub fn ip(&self) -> IpAddr {
        self.addr.ip()
    }
}

/// RFC 7846 `peer_num`: how many peers the requester wants, and what it says about itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerNum {
    pub peer_count: Option<u32>,
    pub ability_nat: Option<NatAbility>,
    pub concurrent_links: Option<u32>,
    pub online_time: Option<u32>,
    pub upload_bandwidth: Option<u32>,
}

/// RFC 7846 `ability_nat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatAbility {
    NoNat,
    Stun,
    Turn,
}

/// One CONNECT swarm action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwarmAction {
    pub swarm_id: SwarmId,
    pub action: ActionKind,
    pub mode: PeerMode,
}

/// An inclusive range of 64-bit chunk ids (RFC 7574 §4.3 chunk ranges).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkRange {
    pub start: u64,
    pub end: u64,
}

impl ChunkRange {
    /// `None` when `start > end`.
    pub fn new(start: u64, end: u64) -> Option<Self> {
        (start <= end).then_some(ChunkRange { start, end })
    }
    pub fn contains(&self, other: &ChunkRange) -> bool {
        self.start <= other.start && other.end <= self.end
    }
}

/// One STREAM_STATS entry of STAT_REPORT (RFC 7846 §5.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SwarmStat {
    pub swarm_id: Option<SwarmId>,
    pub uploaded_bytes: u64,
    pub downloaded_bytes: u64,
    pub available_bandwidth: u64,
    pub concurrent_links: u32,
}

/// Scope of DISCONNECT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DisconnectScope {
    /// `"swarm_id": "ALL"`: leave every swarm, keep the registration (back to PEER REGISTERED).
    AllSwarms,
    /// No swarm id: leave every swarm and delete the registration (TERMINATE).
    Deregister,
}

/// What STAT_QUERY asks about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatTarget {
    Swarm(SwarmId),
    Peer(PeerId),
}

/// The request-specific part of a [`Request`].
#[derive(Clone, Debug, PartialEq)]
pub enum RequestKind {
    /// RFC 7846 CONNECT: register, set addresses, apply swarm actions in order.
    Connect {
        peer_num: Option<PeerNum>,
        /// Addresses the peer announced; empty means "use the source address as REFLEXIVE".
        addrs: Vec<PeerAddr>,
        actions: Vec<SwarmAction>,
    },
    /// RFC 7846 FIND, optionally restricted to peers holding all of `chunks`.
    Find {
        swarm_id: SwarmId,
        peer_num: Option<PeerNum>,
        chunks: Vec<ChunkRange>,
    },
    /// RFC 7846 STAT_REPORT; an empty list is a keep-alive.
    StatReport { stats: Vec<SwarmStat> },
    /// PPSP JOIN: one swarm action JOIN.
    Join {
        swarm_id: SwarmId,
        mode: PeerMode,
        peer_num: Option<PeerNum>,
    },
    /// PPSP LEAVE: one swarm action LEAVE.
    Leave { swarm_id: SwarmId },
    /// PPSP DISCONNECT.
    Disconnect { scope: DisconnectScope },
    /// PPSP KEEPALIVE: re-arms the track (or init) timer.
    Keepalive,
    /// PPSP JOIN_CHUNK: replaces the chunk set the peer holds in the swarm.
    JoinChunk {
        swarm_id: SwarmId,
        chunks: Vec<ChunkRange>,
    },
    /// PPSP STAT_QUERY.
    StatQuery { target: StatTarget },
    /// A protocol-neutral announce (BitTorrent): registers the peer if it is new, joins the
    /// swarm or refreshes its membership there (mode, track timer), and answers one
    /// `SwarmResult` with a peer list plus the swarm's statistics in `Answer::stat`. Unlike
    /// CONNECT it is valid in every state, so a tracking peer can re-announce; the peer's other
    /// swarms are not touched. `addr` becomes the peer's only address when it does not have it.
    Announce {
        swarm_id: SwarmId,
        mode: PeerMode,
        addr: PeerAddr,
        peer_num: Option<PeerNum>,
    },
}

impl RequestKind {
    /// Stable lower-case name, used for metrics labels.
    pub fn name(&self) -> &'static str {
        match self {
            RequestKind::Connect { .. } => "connect",
            RequestKind::Find { .. } => "find",
            RequestKind::StatReport { .. } => "stat_report",
            RequestKind::Join { .. } => "join",
            RequestKind::Leave { .. } => "leave",
            RequestKind::Disconnect { .. } => "disconnect",
            RequestKind::Keepalive => "keepalive",
            RequestKind::JoinChunk { .. } => "join_chunk",
            RequestKind::StatQuery { .. } => "stat_query",
            RequestKind::Announce { .. } => "announce",
        }
    }
}

/// A decoded, validated request from one peer.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub peer_id: PeerId,
    /// Where the request came from (the transport's source address).
    pub source: SocketAddr,
    pub kind: RequestKind,
}

/// One entry of a peer list (RFC 7846 §5.2 `peer_info`): a peer's id, its mode in the swarm
/// and its addresses. 48 bytes with nothing on the heap for the usual peer, one with a single
/// address (IPv4 or IPv6, priority 1, no ASN) and an id of at most 20 bytes in the engine's
/// stored form (any id of up to 20 bytes, or a lower-case hex id of up to 40 digits): the id
/// stays packed and the address in its network bytes until an encoder reads them. Any other
/// entry keeps its id and addresses on the heap. Two entries are equal when their ids, modes
/// and addresses are.
#[derive(Clone)]
pub struct PeerInfo {
    pub mode: PeerMode,
    entry: Entry,
}

#[derive(Clone)]
enum Entry {
    Compact(super::member::ListEntry),
    Full(Box<(PeerId, smallvec::SmallVec<[PeerAddr; 2]>)>),
}

impl PeerInfo {
    /// The entry of peer `peer_id` in mode `mode` with addresses `addrs` (in the order a
    /// peer list gives them).
    pub fn new(peer_id: PeerId, mode: PeerMode, addrs: &[PeerAddr]) -> Self {
        let stored = super::member::StoredId::pack(peer_id.as_bytes());
        match super::member::ListEntry::of(stored.bytes(), stored.len_flag(), addrs) {
            Some(e) => PeerInfo::compact(mode, e),
            None => PeerInfo {
                mode,
                entry: Entry::Full(Box::new((peer_id, addrs.iter().copied().collect()))),
            },
        }
    }

    /// The entry of the peer whose id is stored as `stored` with length byte `len_flag`
    /// (`member.rs`), without unpacking the id when the entry is compact.
    pub(super) fn from_stored(
        stored: &[u8],
        len_flag: u8,
        mode: PeerMode,
        addrs: &[PeerAddr],
    ) -> Self {
        match super::member::ListEntry::of(stored, len_flag, addrs) {
            Some(e) => PeerInfo::compact(mode, e),
            None => PeerInfo {
                mode,
                entry: Entry::Full(Box::new((
                    super::member::unpack(stored, len_flag),
                    addrs.iter().copied().collect(),
                ))),
            },
        }
    }

    #[inline(always)]
    pub(super) fn compact(mode: PeerMode, e: super::member::ListEntry) -> Self {
        PeerInfo {
            mode,
            entry: Entry::Compact(e),
        }
    }

    /// A placeholder in a peer list being built, filled or removed before the list is
    /// answered (`select::ListSink`): no peer has an empty id.
    pub(super) fn vacant(mode: PeerMode) -> Self {
        PeerInfo::compact(mode, super::member::ListEntry::VACANT)
    }

    /// Whether this is a placeholder ([`PeerInfo::vacant`]).
    pub(super) fn is_vacant(&self) -> bool {
        matches!(&self.entry, Entry::Compact(e) if e.is_vacant())
    }

    /// The peer's id as it announced it.
    pub fn peer_id(&self) -> PeerId {
        match &self.entry {
            Entry::Compact(e) => e.peer_id(),
            Entry::Full(f) => f.0,
        }
    }

    /// The peer's id as it announced it (1..=[`MAX_ID_BYTES`] bytes), without building a
    /// [`PeerId`]: a compact entry's packed id is expanded into `buf`, which an encoder keeps
    /// on its stack.
    pub fn id_bytes<'a>(&'a self, buf: &'a mut [u8; MAX_ID_BYTES]) -> &'a [u8] {
        match &self.entry {
            Entry::Compact(e) => e.id_bytes(buf),
            Entry::Full(f) => f.0.as_bytes(),
        }
    }

    /// Length of the peer's id in bytes (1..=[`MAX_ID_BYTES`]).
    pub fn id_len(&self) -> usize {
        match &self.entry {
            Entry::Compact(e) => e.id_len(),
            Entry::Full(f) => f.0.as_bytes().len(),
        }
    }

    /// Whether the peer's id is `id`, compared without unpacking it.
    pub fn has_id(&self, id: &[u8]) -> bool {
        match &self.entry {
            Entry::Compact(e) => e.has_id(id),
            Entry::Full(f) => f.0.as_bytes() == id,
        }
    }

    /// The peer's addresses, in the order the peer list gives them.
    pub fn addrs(&self) -> PeerAddrs<'_> {
        match &self.entry {
            Entry::Compact(e) => PeerAddrs::One(e.addr()),
            Entry::Full(f) => PeerAddrs::Many(&f.1),
        }
    }
}

impl PartialEq for PeerInfo {
    fn eq(&self, other: &Self) -> bool {
        self.mode == other.mode
            && self.peer_id() == other.peer_id()
            && self.addrs().as_slice() == other.addrs().as_slice()
    }
}

impl fmt::Debug for PeerInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerInfo")
            .field("peer_id", &self.peer_id())
            .field("mode", &self.mode)
            .field("addrs", &self.addrs().as_slice())
            .finish()
    }
}

/// The addresses of a [`PeerInfo`]: a compact entry's one address (decoded from its network
/// bytes), or a borrowed list. Dereferences to a slice.
#[derive(Clone, Copy, Debug)]
pub enum PeerAddrs<'a> {
    One(PeerAddr),
    Many(&'a [PeerAddr]),
}

impl PeerAddrs<'_> {
    /// The addresses as a slice.
    pub fn as_slice(&self) -> &[PeerAddr] {
        match self {
            PeerAddrs::One(a) => std::slice::from_ref(a),
            PeerAddrs::Many(list) => list,
        }
    }
}

impl std::ops::Deref for PeerAddrs<'_> {
    type Target = [PeerAddr];
    fn deref(&self) -> &[PeerAddr] {
        self.as_slice()
    }
}

/// Per-swarm outcome (RFC 7846 `swarm_result`).
#[derive(Clone, Debug, PartialEq)]
pub struct SwarmResult {
    pub swarm_id: SwarmId,
    pub result: ErrorCode,
    /// `Some` when a peer list was asked for (LEECH join, `peer_num`, FIND).
    pub peers: Option<Vec<PeerInfo>>,
}

/// Statistics of one swarm (STAT_QUERY on a swarm).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SwarmStats {
    pub peers: u32,
    pub seeders: u32,
    pub leechers: u32,
    /// Completed downloads: peers that turned from LEECH to SEEDER in this swarm while it
    /// existed (a BitTorrent `event=completed` announce with `left=0` after leeching; a PPSTP
    /// peer's JOIN or announce as SEEDER after LEECH). A peer joining as a seeder is not a
    /// completion.
    pub completed: u32,
    pub uploaded_bytes: u64,
    pub downloaded_bytes: u64,
}

/// RFC 7846 peer states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerState {
    PeerRegistered,
    Tracking,
}

/// Status of one peer (STAT_QUERY on a peer).
#[derive(Clone, Debug, PartialEq)]
pub struct PeerStatus {
    pub peer_id: PeerId,
    pub state: PeerState,
    /// Milliseconds since the peer registered.
    pub online_ms: u64,
    pub addrs: smallvec::SmallVec<[PeerAddr; 2]>,
    pub swarms: Vec<(SwarmId, PeerMode)>,
    /// Node that holds this peer's registration (the local node on a single-node tracker).
    pub connection_tracker: Option<[u8; 16]>,
}

/// Answer body of a STAT_QUERY.
#[derive(Clone, Debug, PartialEq)]
pub enum StatAnswer {
    Swarm(SwarmId, SwarmStats),
    Peer(PeerStatus),
}

/// A successful answer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Answer {
    /// The address the tracker saw the request come from (RFC 7846 top-level `peer_addr`),
    /// set for CONNECT.
    pub reflexive: Option<PeerAddr>,
    pub swarm_results: Vec<SwarmResult>,
    pub stat: Option<StatAnswer>,
}

/// What the engine answers to a request.
// The answer is built once and moved into the encoder; boxing it would cost an allocation per
// request to save a few hundred bytes of stack.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Response {
    Ok(Answer),
    Err(ErrorCode),
}

impl Response {
    pub fn error_code(&self) -> ErrorCode {
        match self {
            Response::Ok(_) => ErrorCode::Ok,
            Response::Err(e) => *e,
        }
    }
}
