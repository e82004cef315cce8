//! How a BitTorrent announce or scrape maps onto the protocol-neutral engine. Shared by the UDP
//! (BEP 15) front-end in this module and the HTTP (BEP 3) front-end in `protocol::bt_http`.
//!
//! - The info-hash (20 bytes) is the [`SwarmId`].
//! - A BitTorrent peer is identified by its source IP and the port it announced, never by its
//!   self-chosen `peer_id`, so that nobody can overwrite another peer's registration. Its engine
//!   [`PeerId`] is the fixed byte string built by [`bt_peer_id`] (layout in the engine's
//!   `announce` module). IPv4-mapped IPv6 source addresses (from dual-stack sockets) count as
//!   IPv4.
//! - An announce is the engine's protocol-neutral [`RequestKind::Announce`] (not a CONNECT:
//!   RFC 7846 Table 6 forbids a lone JOIN in TRACKING, and a client re-announces every few
//!   minutes), with mode SEEDER when `left == 0` and LEECH otherwise, the peer's address (source
//!   IP + announced port, type HOST) and a `peer_num.peer_count` of the wanted peer count
//!   (capped). It registers a new peer, refreshes a known one, and answers the peer list and the
//!   swarm's seeder and leecher counts in one engine call. `event=stopped` is a LEAVE.
//! - Every scrape entry, and the counts after a `stopped`, come from a STAT_QUERY of the swarm,
//!   made with the same peer id (a scraping client need not be registered, so the engine
//!   answers STAT_QUERY of a swarm from any peer id).
//! - The peer list comes from the engine in wire form ([`CompactPeers`]): never the announcing
//!   address itself, no address with port 0, no seeders for a seeder, and only the requested
//!   address family where the protocol needs it (BEP 15 answers IPv4 peers to IPv4 packets,
//!   IPv6 to IPv6).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

pub use crate::engine::{
    bt_peer_id, canonical_ip, Family, InfoHash, BT_PEER_ID_PREFIX_V4, BT_PEER_ID_PREFIX_V6,
    INFO_HASH_LEN,
};
use crate::engine::{
    AddrType, CompactPeers, Engine, ErrorCode, ListFamilies, PeerAddr, PeerInfo, PeerMode, PeerNum,
    Request, RequestKind, Response, StatAnswer, StatTarget, SwarmId, SwarmStats, Time,
};

/// What the tracker answers with, and what it accepts. Shared by the UDP and HTTP front-ends.
/// Deserializable so that the configuration can carry it as a section of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BtLimits {
    /// Seconds a client should wait between regular announces (`interval`). Must stay below the
    /// engine's track timer, or peers expire between two announces.
    pub announce_interval_secs: u32,
    /// Seconds a client must wait before a forced re-announce (HTTP `min interval`).
    pub min_announce_interval_secs: u32,
    /// Peers returned when the client names no count (UDP `num_want = -1`, no HTTP `numwant`).
    pub default_num_want: u32,
    /// Upper bound of any requested peer count. 74 IPv6 peers (18 bytes each) still fit one
    /// UDP datagram on a 1500-byte path.
    pub max_num_want: u32,
    /// Most info-hashes in one scrape; more gets an error. BEP 15 says about 74 fit one packet.
    pub max_scrape_hashes: usize,
}

impl Default for BtLimits {
    fn default() -> Self {
        BtLimits::for_track_timer(120)
    }
}

impl BtLimits {
    /// Limits whose announce interval is three quarters of the engine's track timer, so that
    /// a client announcing on schedule is never expired.
    pub fn for_track_timer(track_timer_secs: u64) -> Self {
        let interval = (track_timer_secs.saturating_mul(3) / 4).clamp(1, u64::from(u32::MAX));
        let interval = interval as u32;
        BtLimits {
            announce_interval_secs: interval,
            min_announce_interval_secs: (interval / 2).max(1),
            default_num_want: 50,
            max_num_want: 74,
            max_scrape_hashes: 74,
        }
    }

    /// The peer count to ask the engine for.
    pub fn peer_count(&self, requested: Option<u32>) -> u32 {
        requested
            .unwrap_or(self.default_num_want)
            .min(self.max_num_want)
    }
}

/// The engine as the BitTorrent front-ends see it. Implemented by [`Engine`]; tests use fakes.
pub trait TrackerCore {
    /// Applies one request at time `now` (see [`Engine::handle`]).
    fn handle(&self, request: &Request, now: Time) -> Response;

    /// Whether the swarm of `info_hash` is served (the access list). A refused announce gets
    /// the protocol's error, a refused scrape entry reads as an empty swarm.
    fn allows(&self, _info_hash: &InfoHash) -> bool {
        true
    }

    /// Applies a [`RequestKind::Announce`] and writes its peer list, in wire form, into
    /// `peers` (see [`Engine::announce_compact`]); returns the swarm's statistics. The default
    /// goes through [`TrackerCore::handle`] and applies the same list rules to the answer's
    /// [`PeerInfo`]s; the engine writes from its table straight into `peers`, allocating
    /// nothing once `peers` has grown.
    fn announce(
        &self,
        request: &Request,
        now: Time,
        families: ListFamilies,
        peers: &mut CompactPeers,
    ) -> Result<SwarmStats, ErrorCode> {
        peers.clear();
        let RequestKind::Announce {
            mode,
            addr,
            peer_num,
            ..
        } = &request.kind
        else {
            return Err(ErrorCode::BadRequest);
        };
        let limit = peer_num.and_then(|p| p.peer_count).unwrap_or(u32::MAX) as usize;
        match self.handle(request, now) {
            Response::Err(code) => Err(code),
            Response::Ok(answer) => {
                let list = answer
                    .swarm_results
                    .into_iter()
                    .find_map(|r| r.peers)
                    .unwrap_or_default();
                write_compact(&list, *mode, addr.addr, limit, families, peers);
                Ok(match answer.stat {
                    Some(StatAnswer::Swarm(_, stats)) => stats,
                    _ => SwarmStats::default(),
                })
            }
        }
    }

    /// The counts of the swarm of `info_hash` for a scrape from `src` (see [`swarm_counts`]).
    /// The default asks [`TrackerCore::handle`] with a STAT_QUERY; the engine reads its table.
    fn counts(&self, src: SocketAddr, info_hash: &InfoHash, now: Time) -> SwarmCounts {
        let request = Request {
            peer_id: bt_peer_id(src.ip(), src.port()),
            source: src,
            kind: RequestKind::StatQuery {
                target: StatTarget::Swarm(swarm_id(info_hash)),
            },
        };
        counts_from(&self.handle(&request, now))
    }
}

impl TrackerCore for Engine {
    fn handle(&self, request: &Request, now: Time) -> Response {
        Engine::handle(self, request, now)
    }

    fn announce(
        &self,
        request: &Request,
        now: Time,
        families: ListFamilies,
        peers: &mut CompactPeers,
    ) -> Result<SwarmStats, ErrorCode> {
        self.announce_compact(request, now, families, peers)
    }

    fn counts(&self, _src: SocketAddr, info_hash: &InfoHash, _now: Time) -> SwarmCounts {
        SwarmCounts::from(self.swarm_stats(&swarm_id(info_hash)))
    }
}

/// Appends to `peers` (in wire form) up to `limit` peers of `list` as a BitTorrent peer list
/// for a requester in `mode` announced at `requester`: never the requester, no seeders for a
/// seeder, one address per peer (of `families.first`, or with `families.fallback` of the
/// other family for peers without one of the first).
pub fn write_compact(
    list: &[PeerInfo],
    mode: PeerMode,
    requester: SocketAddr,
    limit: usize,
    families: ListFamilies,
    peers: &mut CompactPeers,
) {
    let requester = canonical_addr(requester);
    let seeding = mode == PeerMode::Seeder;
    let usable = |p: &&PeerInfo| !(seeding && p.mode == PeerMode::Seeder);
    let mut listed = 0;
    for family in [families.first, other_family(families.first)] {
        if family != families.first && !families.fallback {
            break;
        }
        // One address per peer: the second family only for peers without the first.
        let second = family != families.first;
        for p in list.iter().filter(usable) {
            if listed >= limit {
                break;
            }
            if second && pick_addr(p, families.first).is_some_and(|a| a != requester) {
                continue;
            }
            if let Some(a) = pick_addr(p, family) {
                if a != requester {
                    peers.push(a);
                    listed += 1;
                }
            }
        }
    }
}

fn other_family(f: Family) -> Family {
    match f {
        Family::V4 => Family::V6,
        Family::V6 => Family::V4,
    }
}

/// BEP 15 announce events (the UDP codes; HTTP uses the names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AnnounceEvent {
    /// 0, or HTTP `event` absent or empty: a regular announce.
    None,
    /// 1, `completed`.
    Completed,
    /// 2, `started`.
    Started,
    /// 3, `stopped`.
    Stopped,
}

impl AnnounceEvent {
    /// The BEP 15 event code.
    pub const fn code(self) -> u32 {
        match self {
            AnnounceEvent::None => 0,
            AnnounceEvent::Completed => 1,
            AnnounceEvent::Started => 2,
            AnnounceEvent::Stopped => 3,
        }
    }

    /// The event with BEP 15 code `code`, if any.
    pub const fn from_code(code: u32) -> Option<Self> {
        match code {
            0 => Some(AnnounceEvent::None),
            1 => Some(AnnounceEvent::Completed),
            2 => Some(AnnounceEvent::Started),
            3 => Some(AnnounceEvent::Stopped),
            _ => None,
        }
    }
}

/// The parts of an announce the tracker acts on, whichever protocol carried it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Announce {
    pub info_hash: InfoHash,
    /// The port the peer listens on (announced, not the source port).
    pub port: u16,
    /// Bytes the peer still lacks; `None` when the client did not say (HTTP), which counts as
    /// a leech.
    pub left: Option<u64>,
    pub event: AnnounceEvent,
    /// Peers wanted; `None` for the default.
    pub num_want: Option<u32>,
}

impl From<&super::wire::AnnounceFields> for Announce {
    /// A BEP 15 announce's fields (`left` is always present there).
    fn from(req: &super::wire::AnnounceFields) -> Self {
        Announce {
            info_hash: req.info_hash,
            port: req.port,
            left: Some(req.left),
            event: req.event,
            num_want: req.num_want(),
        }
    }
}

impl Announce {
    /// SEEDER when nothing is left to download, LEECH otherwise.
    pub fn mode(&self) -> PeerMode {
        if self.left == Some(0) {
            PeerMode::Seeder
        } else {
            PeerMode::Leech
        }
    }
}

/// The swarm of an info-hash.
pub fn swarm_id(info_hash: &InfoHash) -> SwarmId {
    SwarmId::from_array(*info_hash)
}

/// A short human-readable reason for an engine error code, for BEP 15 error messages and BEP 3
/// `failure reason`s. Kept short: a UDP error answer is never longer than the request.
pub fn engine_error_message(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::BadRequest => "bad request",
        ErrorCode::UnsupportedVersion => "unsupported version",
        ErrorCode::Forbidden => "forbidden",
        ErrorCode::Ok | ErrorCode::InternalError => "internal error",
        ErrorCode::ServiceUnavailable => "tracker overloaded",
        ErrorCode::AuthenticationRequired => "authentication required",
    }
}

/// Swarm statistics in BitTorrent's terms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SwarmCounts {
    /// Peers holding the whole content (BEP 48 `complete`).
    pub seeders: u32,
    /// Peers still downloading (BEP 48 `incomplete`).
    pub leechers: u32,
    /// Completed downloads ever (BEP 48 `downloaded`), as the engine counts them.
    pub downloaded: u32,
}

/// The counts of the swarm of `info_hash`, from a STAT_QUERY made as the peer at `src`. An
/// engine error (including an unknown swarm) reads as an empty swarm: a scrape changes nothing
/// and has nothing to refuse.
pub fn swarm_counts(
    core: &impl TrackerCore,
    src: SocketAddr,
    info_hash: &InfoHash,
    now: Time,
) -> SwarmCounts {
    if !core.allows(info_hash) {
        return SwarmCounts::default();
    }
    core.counts(src, info_hash, now)
}

impl From<SwarmStats> for SwarmCounts {
    fn from(stats: SwarmStats) -> Self {
        SwarmCounts {
            seeders: stats.seeders,
            leechers: stats.leechers,
            downloaded: stats.completed,
        }
    }
}

fn counts_from(response: &Response) -> SwarmCounts {
    match response {
        Response::Ok(answer) => match &answer.stat {
            Some(StatAnswer::Swarm(_, stats)) => SwarmCounts::from(*stats),
            _ => SwarmCounts::default(),
        },
        Response::Err(_) => SwarmCounts::default(),
    }
}

/// True when the access list refuses this announce. Leaving is never refused, so that a peer
/// can always go away from a swarm that became refused.
pub fn refused(core: &impl TrackerCore, announce: &Announce) -> bool {
    announce.event != AnnounceEvent::Stopped && !core.allows(&announce.info_hash)
}

/// The engine's answer to one announce, ready to be written in either protocol.
#[derive(Clone, Debug, PartialEq)]
pub struct AnnounceAnswer<'a> {
    pub counts: SwarmCounts,
    /// The peer list in wire form (empty after `stopped`): the engine's rules applied.
    pub peers: &'a CompactPeers,
}

impl AnnounceAnswer<'_> {
    /// The listed addresses, IPv4 first.
    pub fn peer_addrs(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.peers.addrs()
    }
}

fn canonical_addr(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(canonical_ip(addr.ip()), addr.port())
}

/// The address of `peer` of family `family` with a usable port, if it has one.
fn pick_addr(peer: &PeerInfo, family: Family) -> Option<SocketAddr> {
    peer.addrs()
        .iter()
        .map(|a| canonical_addr(a.addr))
        .find(|a| a.port() != 0 && Family::of(a.ip()) == family)
}

/// Applies one announce from `src` to the engine at `now` and collects the answer, with the
/// peer list in `scratch` (reused between calls, so that a worker allocates nothing per
/// announce): peers of `families.first`, and with `families.fallback` of the other family
/// too. An engine error (for the request as a whole or for the swarm) is returned as its
/// code. A `stopped` announce always succeeds: leaving a swarm one is not in changes nothing.
pub fn announce<'a>(
    core: &impl TrackerCore,
    limits: &BtLimits,
    src: SocketAddr,
    announce: &Announce,
    now: Time,
    families: ListFamilies,
    scratch: &'a mut CompactPeers,
) -> Result<AnnounceAnswer<'a>, ErrorCode> {
    let ip = canonical_ip(src.ip());
    let requester = SocketAddr::new(ip, announce.port);
    let peer_id = bt_peer_id(ip, announce.port);
    let swarm = swarm_id(&announce.info_hash);
    let peer_count = limits.peer_count(announce.num_want);
    scratch.clear();

    let counts = if announce.event == AnnounceEvent::Stopped {
        let request = Request {
            peer_id,
            source: src,
            kind: RequestKind::Leave { swarm_id: swarm },
        };
        // The outcome does not change the answer (see above).
        let _ = core.handle(&request, now);
        swarm_counts(core, src, &announce.info_hash, now)
    } else {
        let request = Request {
            peer_id,
            source: src,
            kind: RequestKind::Announce {
                swarm_id: swarm,
                mode: announce.mode(),
                addr: PeerAddr {
                    addr: requester,
                    priority: 1,
                    kind: AddrType::Host,
                    connection: None,
                    asn: None,
                    ppsp_pp: false,
                },
                peer_num: Some(PeerNum {
                    peer_count: Some(peer_count),
                    ..PeerNum::default()
                }),
            },
        };
        // BEP 48 `downloaded`: the engine counts a peer turning from leecher to seeder.
        SwarmCounts::from(core.announce(&request, now, families, scratch)?)
    };
    Ok(AnnounceAnswer {
        counts,
        peers: scratch,
    })
}

/// A fake engine for the front-ends' tests: records every request and answers from a script.
#[cfg(test)]
pub(crate) mod fake {
    use std::cell::RefCell;

    use super::*;
    use crate::engine::{Answer, SwarmResult};

    /// Answers an announce with `peers` and `stats` (or `announce_error`), STAT_QUERY with
    /// `stats`, and records every request.
    #[derive(Default)]
    pub struct FakeCore {
        pub requests: RefCell<Vec<Request>>,
        pub peers: Vec<PeerInfo>,
        pub stats: SwarmStats,
        pub announce_error: Option<ErrorCode>,
        /// Info-hashes the access list refuses.
        pub denied: Vec<InfoHash>,
    }

    impl TrackerCore for FakeCore {
        fn allows(&self, info_hash: &InfoHash) -> bool {
            !self.denied.contains(info_hash)
        }

        fn handle(&self, request: &Request, _now: Time) -> Response {
            self.requests.borrow_mut().push(request.clone());
            match &request.kind {
                RequestKind::Announce { swarm_id, .. } => {
                    if let Some(code) = self.announce_error {
                        return Response::Err(code);
                    }
                    Response::Ok(Answer {
                        reflexive: None,
                        swarm_results: vec![SwarmResult {
                            swarm_id: *swarm_id,
                            result: ErrorCode::Ok,
                            peers: Some(self.peers.clone()),
                        }],
                        stat: Some(StatAnswer::Swarm(*swarm_id, self.stats)),
                    })
                }
                RequestKind::StatQuery {
                    target: StatTarget::Swarm(id),
                } => Response::Ok(Answer {
                    reflexive: None,
                    swarm_results: Vec::new(),
                    stat: Some(StatAnswer::Swarm(*id, self.stats)),
                }),
                RequestKind::Leave { .. } => Response::Err(ErrorCode::Forbidden),
                _ => Response::Err(ErrorCode::InternalError),
            }
        }
    }

    /// A listed peer with one HOST address per given socket address.
    pub fn peer(mode: PeerMode, addrs: &[&str]) -> PeerInfo {
        let addrs: smallvec::SmallVec<[PeerAddr; 2]> = addrs
            .iter()
            .map(|a| PeerAddr {
                addr: a.parse().expect("test address"),
                priority: 1,
                kind: AddrType::Host,
                connection: None,
                asn: None,
                ppsp_pp: false,
            })
            .collect();
        let first = addrs[0].addr;
        PeerInfo::new(bt_peer_id(first.ip(), first.port()), mode, &addrs)
    }
}

#[cfg(test)]
mod tests {
    use super::fake::{peer, FakeCore};
    use super::*;
    use crate::engine::SwarmStats;

    const V4: ListFamilies = ListFamilies {
        first: Family::V4,
        fallback: false,
    };

    fn src() -> SocketAddr {
        "192.0.2.7:40000".parse().unwrap()
    }

    fn announce_with(left: Option<u64>, event: AnnounceEvent) -> Announce {
        Announce {
            info_hash: [0xab; 20],
            port: 6881,
            left,
            event,
            num_want: None,
        }
    }

    #[test]
    fn peer_ids_encode_ip_and_announced_port_with_a_nul_prefix() {
        let id = bt_peer_id("192.0.2.7".parse().unwrap(), 0x1ae1);
        assert_eq!(id.as_bytes(), b"\x00bt4\xc0\x00\x02\x07\x1a\xe1");
        let id = bt_peer_id("2001:db8::1".parse().unwrap(), 6881);
        let mut want = b"\x00bt6".to_vec();
        want.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        want.extend_from_slice(&6881u16.to_be_bytes());
        assert_eq!(id.as_bytes(), want.as_slice());
        // A dual-stack socket's IPv4-mapped address is the same peer as the IPv4 address.
        let mapped = bt_peer_id("::ffff:192.0.2.7".parse().unwrap(), 0x1ae1);
        assert_eq!(mapped.as_bytes(), b"\x00bt4\xc0\x00\x02\x07\x1a\xe1");
        // Same IP, other port: another peer.
        assert_ne!(bt_peer_id("192.0.2.7".parse().unwrap(), 6882), mapped);
    }

    #[test]
    fn announce_is_one_engine_announce_with_the_host_address() {
        let mut sc = CompactPeers::default();
        let core = FakeCore::default();
        let a = Announce {
            num_want: Some(10),
            ..announce_with(Some(1000), AnnounceEvent::Started)
        };
        announce(&core, &BtLimits::default(), src(), &a, Time(5), V4, &mut sc).unwrap();
        let reqs = core.requests.borrow();
        assert_eq!(
            reqs.len(),
            1,
            "counts come with the announce: no STAT_QUERY"
        );
        let want_addr: SocketAddr = "192.0.2.7:6881".parse().unwrap();
        assert_eq!(reqs[0].peer_id, bt_peer_id(want_addr.ip(), 6881));
        assert_eq!(reqs[0].source, src());
        match &reqs[0].kind {
            RequestKind::Announce {
                swarm_id: swarm,
                mode,
                addr,
                peer_num,
            } => {
                assert_eq!(peer_num.unwrap().peer_count, Some(10));
                assert_eq!(addr.addr, want_addr);
                assert_eq!(addr.kind, AddrType::Host);
                assert_eq!(*swarm, swarm_id(&[0xab; 20]));
                assert_eq!(*mode, PeerMode::Leech);
            }
            other => panic!("expected an announce, got {other:?}"),
        }
    }

    #[test]
    fn left_zero_joins_as_seeder_and_unknown_left_as_leech() {
        for (left, want) in [
            (Some(0), PeerMode::Seeder),
            (Some(1), PeerMode::Leech),
            (None, PeerMode::Leech),
        ] {
            let mut sc = CompactPeers::default();
            let core = FakeCore::default();
            let a = announce_with(left, AnnounceEvent::None);
            announce(&core, &BtLimits::default(), src(), &a, Time(5), V4, &mut sc).unwrap();
            match &core.requests.borrow()[0].kind {
                RequestKind::Announce { mode, .. } => assert_eq!(*mode, want),
                other => panic!("expected an announce, got {other:?}"),
            };
        }
    }

    #[test]
    fn stopped_is_a_leave_and_succeeds_even_if_the_engine_refuses() {
        let mut sc = CompactPeers::default();
        let core = FakeCore::default();
        let a = announce_with(Some(5), AnnounceEvent::Stopped);
        let answer =
            announce(&core, &BtLimits::default(), src(), &a, Time(5), V4, &mut sc).unwrap();
        let reqs = core.requests.borrow();
        assert_eq!(
            reqs[0].kind,
            RequestKind::Leave {
                swarm_id: swarm_id(&[0xab; 20])
            }
        );
        assert_eq!(answer.peer_addrs().count(), 0);
    }

    #[test]
    fn num_want_is_capped_and_defaults() {
        let limits = BtLimits::default();
        assert_eq!(limits.peer_count(None), limits.default_num_want);
        assert_eq!(limits.peer_count(Some(u32::MAX)), limits.max_num_want);
        assert_eq!(limits.peer_count(Some(3)), 3);
        assert_eq!(limits.peer_count(Some(0)), 0);
    }

    #[test]
    fn limits_deserialize_with_defaults_and_refuse_unknown_keys() {
        let l: BtLimits = toml::from_str("max_scrape_hashes = 10").unwrap();
        assert_eq!(l.max_scrape_hashes, 10);
        assert_eq!(l.max_num_want, BtLimits::default().max_num_want);
        assert!(toml::from_str::<BtLimits>("max_scrape_hash = 10").is_err());
    }

    #[test]
    fn interval_stays_below_the_track_timer() {
        let l = BtLimits::for_track_timer(120);
        assert_eq!(l.announce_interval_secs, 90);
        assert_eq!(l.min_announce_interval_secs, 45);
        let l = BtLimits::for_track_timer(0);
        assert_eq!(l.announce_interval_secs, 1);
    }

    #[test]
    fn engine_errors_propagate() {
        let mut sc = CompactPeers::default();
        let core = FakeCore {
            announce_error: Some(ErrorCode::ServiceUnavailable),
            ..FakeCore::default()
        };
        let a = announce_with(Some(5), AnnounceEvent::None);
        let err =
            announce(&core, &BtLimits::default(), src(), &a, Time(5), V4, &mut sc).unwrap_err();
        assert_eq!(err, ErrorCode::ServiceUnavailable);
    }

    #[test]
    fn peer_list_excludes_requester_other_family_and_seeders_for_a_seeder() {
        let mut sc = CompactPeers::default();
        let core = FakeCore {
            peers: vec![
                peer(PeerMode::Leech, &["192.0.2.7:6881"]), // the requester itself
                peer(PeerMode::Leech, &["198.51.100.1:1000"]),
                peer(PeerMode::Seeder, &["198.51.100.2:2000"]),
                peer(PeerMode::Leech, &["[2001:db8::2]:3000"]),
                peer(
                    PeerMode::Leech,
                    &["[2001:db8::3]:3001", "198.51.100.3:3002"],
                ),
                peer(PeerMode::Leech, &["198.51.100.4:0"]), // no usable port
            ],
            stats: SwarmStats {
                peers: 6,
                seeders: 1,
                leechers: 5,
                ..SwarmStats::default()
            },
            ..FakeCore::default()
        };
        let a = announce_with(Some(5), AnnounceEvent::None);
        let list = |families: ListFamilies, sc: &mut CompactPeers| -> Vec<String> {
            let ans = announce(
                &core,
                &BtLimits::default(),
                src(),
                &a,
                Time(5),
                families,
                sc,
            )
            .unwrap();
            assert_eq!((ans.counts.seeders, ans.counts.leechers), (1, 5));
            ans.peer_addrs().map(|a| a.to_string()).collect()
        };
        assert_eq!(
            list(V4, &mut sc),
            [
                "198.51.100.1:1000",
                "198.51.100.2:2000",
                "198.51.100.3:3002"
            ]
        );
        let v6_only = ListFamilies {
            first: Family::V6,
            fallback: false,
        };
        assert_eq!(
            list(v6_only, &mut sc),
            ["[2001:db8::2]:3000", "[2001:db8::3]:3001"]
        );
        let any = ListFamilies {
            first: Family::V4,
            fallback: true,
        };
        assert_eq!(list(any, &mut sc).len(), 4);

        let seeding = announce_with(Some(0), AnnounceEvent::None);
        let ans = announce(
            &core,
            &BtLimits::default(),
            src(),
            &seeding,
            Time(5),
            V4,
            &mut sc,
        )
        .unwrap();
        let v4: Vec<String> = ans.peer_addrs().map(|a| a.to_string()).collect();
        assert_eq!(v4, ["198.51.100.1:1000", "198.51.100.3:3002"]);
    }

    #[test]
    fn peer_list_is_cut_at_the_wanted_count() {
        let mut sc = CompactPeers::default();
        let peers = (1..=20)
            .map(|i| peer(PeerMode::Leech, &[&format!("198.51.100.{i}:1000")]))
            .collect();
        let core = FakeCore {
            peers,
            ..FakeCore::default()
        };
        let a = Announce {
            num_want: Some(7),
            ..announce_with(Some(5), AnnounceEvent::None)
        };
        let ans = announce(&core, &BtLimits::default(), src(), &a, Time(5), V4, &mut sc).unwrap();
        assert_eq!(ans.peer_addrs().count(), 7);
    }

    #[test]
    fn swarm_counts_read_stat_query_and_zero_on_error() {
        let core = FakeCore {
            stats: SwarmStats {
                seeders: 3,
                leechers: 4,
                ..SwarmStats::default()
            },
            ..FakeCore::default()
        };
        let c = swarm_counts(&core, src(), &[1; 20], Time(0));
        assert_eq!((c.seeders, c.leechers, c.downloaded), (3, 4, 0));
        assert_eq!(
            counts_from(&Response::Err(ErrorCode::Forbidden)),
            SwarmCounts::default()
        );
    }

    #[test]
    fn a_leecher_turning_seeder_is_counted_by_the_engine_and_scraped() {
        let engine = Engine::new(&crate::engine::EngineConfig::default());
        let mut sc = CompactPeers::default();
        let limits = BtLimits::default();
        // Joining complete is not a download; leeching then completing is, once.
        let seeder = announce_with(Some(0), AnnounceEvent::Completed);
        let other = SocketAddr::from(([10, 9, 9, 9], 7000));
        let ans = announce(&engine, &limits, other, &seeder, Time(4), V4, &mut sc).unwrap();
        assert_eq!(ans.counts.downloaded, 0, "joined as a seeder");
        let leech = announce_with(Some(10), AnnounceEvent::Started);
        let ans = announce(&engine, &limits, src(), &leech, Time(5), V4, &mut sc).unwrap();
        assert_eq!((ans.counts.leechers, ans.counts.downloaded), (1, 0));
        let done = announce_with(Some(0), AnnounceEvent::Completed);
        let ans = announce(&engine, &limits, src(), &done, Time(6), V4, &mut sc).unwrap();
        assert_eq!((ans.counts.seeders, ans.counts.downloaded), (2, 1));
        let again = announce_with(Some(0), AnnounceEvent::Completed);
        let ans = announce(&engine, &limits, src(), &again, Time(7), V4, &mut sc).unwrap();
        assert_eq!(ans.counts.downloaded, 1, "a repeated completed event");
        let c = swarm_counts(&engine, src(), &[0xab; 20], Time(8));
        assert_eq!((c.seeders, c.leechers, c.downloaded), (2, 0, 1));
    }
}
