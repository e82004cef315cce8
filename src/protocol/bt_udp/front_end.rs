//! The BEP 15 UDP front-end: one datagram in, at most one datagram out, no I/O.
//!
//! Decisions BEP 15 leaves open:
//!
//! - Packets shorter than 16 bytes are dropped: there is not even a transaction id to answer.
//! - A connect request (action 0) without the protocol id is dropped: it is not BEP 15.
//! - Every other action first needs a valid connection id (see `connection_id`); a forged or
//!   expired one gets the error "connection id expired", so that a client reconnects at once.
//! - Malformed requests (announce shorter than 98 bytes, unknown action, more than
//!   `max_scrape_hashes` info-hashes) get an error response. An unknown event is a regular
//!   announce, and port 0 (a client that does not listen) is registered and counted but never
//!   listed to others, as over HTTP.
//! - Amplification: an answer to a packet whose sender has not proved its address (a connect,
//!   or anything with a bad connection id) is never longer than the packet itself. A connect
//!   response is 16 bytes for a request of at least 16; an error response that would be longer
//!   than its request is not sent (the packet is dropped and counted instead).

use std::net::SocketAddr;

use super::connection_id::{ConnectionIdSecret, ConnectionIds, DEFAULT_SLOT_MILLIS};
use super::tracker::{
    announce, engine_error_message, refused, swarm_counts, Announce, BtLimits, Family, TrackerCore,
};
use super::wire::{
    action, decode_request, peek_announce, write_announce_header, write_response_header,
    AnnounceFields, ConnectResponse, DecodeError, ErrorResponse, RequestHeader, ScrapeEntry,
    UdpRequest, PROTOCOL_ID,
};
use crate::engine::{CompactPeers, ErrorCode, ListFamilies, Time};

/// Why the tracker answered a request with a BEP 15 error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UdpError {
    /// Forged, expired or foreign connection id.
    ConnectionId,
    /// Shorter than the action's fixed size.
    Malformed,
    UnknownAction,
    /// More info-hashes in one scrape than allowed.
    TooManyHashes,
    /// The engine refused the announce.
    Engine(ErrorCode),
    /// The access list refuses the swarm.
    AccessDenied,
}

impl UdpError {
    /// The error message sent to the client.
    pub fn message(self) -> &'static str {
        match self {
            UdpError::ConnectionId => "connection id expired",
            UdpError::Malformed => "malformed request",
            UdpError::UnknownAction => "unknown action",
            UdpError::TooManyHashes => "too many info_hashes",
            UdpError::Engine(code) => engine_error_message(code),
            UdpError::AccessDenied => "info_hash not allowed",
        }
    }

    /// Index of this error's counter in [`Outcome::LABELS`].
    pub const fn index(self) -> usize {
        match self {
            UdpError::ConnectionId => 3,
            UdpError::Malformed => 4,
            UdpError::UnknownAction => 5,
            UdpError::TooManyHashes => 6,
            UdpError::Engine(ErrorCode::ServiceUnavailable) => 7,
            UdpError::Engine(_) => 8,
            UdpError::AccessDenied => 9,
        }
    }

    /// Stable name for metrics labels.
    pub fn name(self) -> &'static str {
        Outcome::LABELS[self.index()]
    }
}

/// What was sent back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reply {
    Connect,
    Announce,
    Scrape,
    Error(UdpError),
}

/// Why nothing was sent back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dropped {
    /// Under 16 bytes.
    TooShort,
    /// Action 0 without the BEP 15 protocol id.
    BadProtocolId,
    /// The error answer would have been longer than the packet (amplification guard).
    ErrorLongerThanRequest(UdpError),
}

/// The result of handling one datagram; says which counter to bump.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// `out` holds a datagram to send back to the source address.
    Reply(Reply),
    /// `out` is empty; send nothing.
    Drop(Dropped),
}

impl Outcome {
    /// Metric label of each outcome, indexed by [`Outcome::index`].
    pub const LABELS: [&'static str; 13] = [
        "connect",
        "announce",
        "scrape",
        "connection_id",
        "malformed",
        "unknown_action",
        "too_many_hashes",
        "engine_overload",
        "engine_error",
        "access_denied",
        "drop_too_short",
        "drop_bad_protocol_id",
        "drop_error_too_long",
    ];

    /// Index of this outcome's counter and label in [`Outcome::LABELS`].
    pub const fn index(&self) -> usize {
        match self {
            Outcome::Reply(Reply::Connect) => 0,
            Outcome::Reply(Reply::Announce) => 1,
            Outcome::Reply(Reply::Scrape) => 2,
            Outcome::Reply(Reply::Error(e)) => e.index(),
            Outcome::Drop(Dropped::TooShort) => 10,
            Outcome::Drop(Dropped::BadProtocolId) => 11,
            Outcome::Drop(Dropped::ErrorLongerThanRequest(_)) => 12,
        }
    }

    /// Stable name for metrics labels.
    pub fn name(&self) -> &'static str {
        Self::LABELS[self.index()]
    }
}

/// The UDP tracker front-end: connection-id secret and limits. Shared by every worker (`Sync`).
#[derive(Clone, Debug)]
pub struct UdpFrontEnd {
    ids: ConnectionIds,
    limits: BtLimits,
}

impl UdpFrontEnd {
    pub fn new(secret: ConnectionIdSecret, limits: BtLimits) -> Self {
        UdpFrontEnd::with_slot(secret, limits, DEFAULT_SLOT_MILLIS)
    }

    /// As [`UdpFrontEnd::new`] with another connection-id slot length.
    pub fn with_slot(secret: ConnectionIdSecret, limits: BtLimits, slot_millis: u64) -> Self {
        UdpFrontEnd {
            ids: ConnectionIds::new(secret, slot_millis),
            limits,
        }
    }

    pub fn limits(&self) -> &BtLimits {
        &self.limits
    }

    /// Handles one datagram `packet` from `src` at `now`: clears `out` and writes the answer
    /// into it when the outcome is [`Outcome::Reply`]. Never panics.
    pub fn handle(
        &self,
        core: &impl TrackerCore,
        src: SocketAddr,
        packet: &[u8],
        now: Time,
        out: &mut Vec<u8>,
    ) -> Outcome {
        self.handle_with(core, src, packet, now, out, &mut CompactPeers::default())
    }

    /// Handles a datagram from `src` longer than the receive buffer, of which `head` is the
    /// start: clears `out` and writes the BEP 15 error answer into it when the outcome is
    /// [`Outcome::Reply`]. Nothing is decoded past the 16-byte header and no table is touched.
    ///
    /// A connection id is checked as for any request. A scrape that long lists more
    /// info-hashes than any limit allows ("too many info_hashes"); no connect or announce is
    /// that long ("malformed request"); a connect without the BEP 15 protocol id is dropped,
    /// as [`UdpFrontEnd::handle`] drops it.
    pub fn handle_oversized(
        &self,
        src: SocketAddr,
        head: &[u8],
        now: Time,
        out: &mut Vec<u8>,
    ) -> Outcome {
        out.clear();
        let Some(header) = RequestHeader::peek(head) else {
            return Outcome::Drop(Dropped::TooShort);
        };
        let tid = header.transaction_id;
        if header.action == action::CONNECT {
            if header.connection_id != PROTOCOL_ID {
                return Outcome::Drop(Dropped::BadProtocolId);
            }
            return error(out, head.len(), tid, UdpError::Malformed);
        }
        if !self.ids.is_valid(src, header.connection_id, now) {
            return error(out, head.len(), tid, UdpError::ConnectionId);
        }
        let kind = match header.action {
            action::SCRAPE => UdpError::TooManyHashes,
            action::ANNOUNCE => UdpError::Malformed,
            _ => UdpError::UnknownAction,
        };
        error(out, head.len(), tid, kind)
    }

    /// As [`UdpFrontEnd::handle`], with the peer list built in `scratch`. A worker that keeps
    /// `out` and `scratch` between datagrams allocates nothing per announce of a known peer
    /// (once both have grown to their working size).
    pub fn handle_with(
        &self,
        core: &impl TrackerCore,
        src: SocketAddr,
        packet: &[u8],
        now: Time,
        out: &mut Vec<u8>,
        scratch: &mut CompactPeers,
    ) -> Outcome {
        out.clear();
        let Some(header) = RequestHeader::peek(packet) else {
            return Outcome::Drop(Dropped::TooShort);
        };
        let tid = header.transaction_id;
        if header.action == action::CONNECT {
            if header.connection_id != PROTOCOL_ID {
                return Outcome::Drop(Dropped::BadProtocolId);
            }
            ConnectResponse {
                transaction_id: tid,
                connection_id: self.ids.issue(src, now),
            }
            .encode(out);
            return Outcome::Reply(Reply::Connect);
        }
        if !self.ids.is_valid(src, header.connection_id, now) {
            return error(out, packet.len(), tid, UdpError::ConnectionId);
        }
        if header.action == action::ANNOUNCE {
            // The hot path: only the fields the tracker uses, at their fixed offsets.
            let Some(req) = peek_announce(packet) else {
                return error(out, packet.len(), tid, UdpError::Malformed);
            };
            return self.answer_announce(core, src, &req, tid, packet.len(), now, out, scratch);
        }
        match decode_request(packet) {
            Ok(UdpRequest::Scrape(req)) => {
                if req.info_hashes.len() > self.limits.max_scrape_hashes {
                    return error(out, packet.len(), tid, UdpError::TooManyHashes);
                }
                write_response_header(out, action::SCRAPE, tid);
                for hash in req.info_hashes.iter() {
                    let c = swarm_counts(core, src, &hash, now);
                    ScrapeEntry {
                        seeders: c.seeders,
                        completed: c.downloaded,
                        leechers: c.leechers,
                    }
                    .encode(out);
                }
                Outcome::Reply(Reply::Scrape)
            }
            Ok(UdpRequest::Connect(_) | UdpRequest::Announce(_)) => {
                // Actions 0 and 1 were handled above; decode_request agrees, so this is
                // unreachable in practice, but answering it as malformed keeps the function
                // total.
                error(out, packet.len(), tid, UdpError::Malformed)
            }
            Err(DecodeError::UnknownAction(_)) => {
                error(out, packet.len(), tid, UdpError::UnknownAction)
            }
            Err(DecodeError::Truncated | DecodeError::TooShort | DecodeError::BadProtocolId) => {
                error(out, packet.len(), tid, UdpError::Malformed)
            }
        }
    }
}

impl UdpFrontEnd {
    /// Answers the announce `req` (transaction id `tid`, from a packet of `packet_len`
    /// bytes) into `out`, its peer list built in `scratch`.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn answer_announce(
        &self,
        core: &impl TrackerCore,
        src: SocketAddr,
        req: &AnnounceFields,
        tid: u32,
        packet_len: usize,
        now: Time,
        out: &mut Vec<u8>,
        scratch: &mut CompactPeers,
    ) -> Outcome {
        let a = Announce::from(req);
        if refused(core, &a) {
            return error(out, packet_len, tid, UdpError::AccessDenied);
        }
        // BEP 15: the peer format follows the family of the request's packet.
        let family = Family::of(src.ip());
        let families = ListFamilies {
            first: family,
            fallback: false,
        };
        match announce(core, &self.limits, src, &a, now, families, scratch) {
            Ok(answer) => {
                write_announce_header(
                    out,
                    tid,
                    self.limits.announce_interval_secs,
                    answer.counts.leechers,
                    answer.counts.seeders,
                );
                // The engine wrote the list in wire form.
                out.extend_from_slice(match family {
                    Family::V4 => &answer.peers.v4,
                    Family::V6 => &answer.peers.v6,
                });
                Outcome::Reply(Reply::Announce)
            }
            Err(code) => error(out, packet_len, tid, UdpError::Engine(code)),
        }
    }
}

/// Writes an error response unless it would be longer than the request.
fn error(out: &mut Vec<u8>, request_len: usize, tid: u32, kind: UdpError) -> Outcome {
    let message = kind.message().as_bytes();
    out.clear();
    if super::wire::RESPONSE_HEADER_LEN + message.len() > request_len {
        return Outcome::Drop(Dropped::ErrorLongerThanRequest(kind));
    }
    ErrorResponse {
        transaction_id: tid,
        message,
    }
    .encode(out);
    Outcome::Reply(Reply::Error(kind))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{PeerMode, RequestKind, StatTarget, SwarmStats};
    use crate::protocol::bt_udp::tracker::fake::{peer, FakeCore};
    use crate::protocol::bt_udp::tracker::{bt_peer_id, swarm_id, AnnounceEvent};
    use crate::protocol::bt_udp::wire::{
        decode_response, AnnounceRequest, ConnectRequest, InfoHashes, PeerList, ScrapeRequest,
        UdpResponse,
    };
    use proptest::prelude::*;

    const NOW: Time = Time::from_secs(10_000);

    fn front() -> UdpFrontEnd {
        UdpFrontEnd::new(ConnectionIdSecret::from_bytes([3; 16]), BtLimits::default())
    }

    fn v4() -> SocketAddr {
        "192.0.2.7:40000".parse().unwrap()
    }
    fn v6() -> SocketAddr {
        "[2001:db8::7]:40000".parse().unwrap()
    }

    /// A datagram cut by the receive buffer gets the BEP 15 error its header calls for, with
    /// its transaction id, and only with a valid connection id.
    #[test]
    fn an_oversized_datagram_gets_the_error_its_header_calls_for() {
        let fe = front();
        let core = FakeCore::default();
        let src = v4();
        let cid = connect(&fe, &core, src);
        let head = |cid: u64, action: u32| {
            let mut h = Vec::new();
            h.extend_from_slice(&cid.to_be_bytes());
            h.extend_from_slice(&action.to_be_bytes());
            h.extend_from_slice(&77u32.to_be_bytes());
            h.resize(2004, 0xab);
            h
        };
        let mut out = Vec::new();
        for (action, kind) in [
            (action::SCRAPE, UdpError::TooManyHashes),
            (action::ANNOUNCE, UdpError::Malformed),
            (9, UdpError::UnknownAction),
        ] {
            assert_eq!(
                fe.handle_oversized(src, &head(cid, action), NOW, &mut out),
                Outcome::Reply(Reply::Error(kind))
            );
            assert_eq!(&out[..4], &action::ERROR.to_be_bytes());
            assert_eq!(&out[4..8], &77u32.to_be_bytes());
            assert_eq!(&out[8..], kind.message().as_bytes());
        }
        assert_eq!(
            fe.handle_oversized(src, &head(cid ^ 1, action::SCRAPE), NOW, &mut out),
            Outcome::Reply(Reply::Error(UdpError::ConnectionId))
        );
        assert_eq!(
            fe.handle_oversized(src, &head(PROTOCOL_ID, action::CONNECT), NOW, &mut out),
            Outcome::Reply(Reply::Error(UdpError::Malformed))
        );
        assert_eq!(
            fe.handle_oversized(src, &head(1, action::CONNECT), NOW, &mut out),
            Outcome::Drop(Dropped::BadProtocolId)
        );
        assert!(out.is_empty());
        assert_eq!(
            fe.handle_oversized(src, &[0; 15], NOW, &mut out),
            Outcome::Drop(Dropped::TooShort)
        );
    }

    fn connect(fe: &UdpFrontEnd, core: &FakeCore, src: SocketAddr) -> u64 {
        let mut pkt = Vec::new();
        ConnectRequest { transaction_id: 1 }.encode(&mut pkt);
        let mut out = Vec::new();
        assert_eq!(
            fe.handle(core, src, &pkt, NOW, &mut out),
            Outcome::Reply(Reply::Connect)
        );
        assert_eq!(out.len(), 16);
        match decode_response(&out, Family::of(src.ip()), 0) {
            Ok(UdpResponse::Connect(c)) => {
                assert_eq!(c.transaction_id, 1);
                c.connection_id
            }
            other => panic!("expected connect response, got {other:?}"),
        }
    }

    fn announce_req(connection_id: u64, left: u64, event: AnnounceEvent) -> AnnounceRequest {
        AnnounceRequest {
            connection_id,
            transaction_id: 77,
            info_hash: [0x11; 20],
            peer_id: [b'p'; 20],
            downloaded: 0,
            left,
            uploaded: 0,
            event,
            ip_address: 0x0a00_0001, // ignored: the source address counts
            key: 5,
            num_want: -1,
            port: 6881,
        }
    }

    fn send(
        fe: &UdpFrontEnd,
        core: &FakeCore,
        src: SocketAddr,
        req: UdpRequest,
    ) -> (Outcome, Vec<u8>) {
        let mut pkt = Vec::new();
        req.encode(&mut pkt);
        let mut out = Vec::new();
        let o = fe.handle(core, src, &pkt, NOW, &mut out);
        (o, out)
    }

    fn swarm_core() -> FakeCore {
        FakeCore {
            peers: vec![
                peer(PeerMode::Leech, &["192.0.2.7:6881"]),
                peer(PeerMode::Seeder, &["198.51.100.1:1000"]),
                peer(PeerMode::Leech, &["[2001:db8::1]:2000"]),
                peer(PeerMode::Leech, &["[2001:db8::7]:6881"]),
            ],
            stats: SwarmStats {
                peers: 4,
                seeders: 1,
                leechers: 3,
                ..SwarmStats::default()
            },
            ..FakeCore::default()
        }
    }

    #[test]
    fn ipv4_announce_answers_ipv4_peers_and_counts() {
        let fe = front();
        let core = swarm_core();
        let cid = connect(&fe, &core, v4());
        let req = announce_req(cid, 100, AnnounceEvent::Started);
        let (o, out) = send(&fe, &core, v4(), UdpRequest::Announce(req));
        assert_eq!(o, Outcome::Reply(Reply::Announce));
        let mut want = Vec::new();
        write_announce_header(&mut want, 77, 90, 3, 1);
        want.extend_from_slice(&[198, 51, 100, 1, 0x03, 0xe8]);
        assert_eq!(out, want);

        let reqs = core.requests.borrow();
        let announce = reqs.last().unwrap();
        assert_eq!(
            announce.peer_id,
            bt_peer_id("192.0.2.7".parse().unwrap(), 6881)
        );
        match &announce.kind {
            RequestKind::Announce {
                swarm_id: swarm,
                mode,
                addr,
                peer_num,
            } => {
                assert_eq!(peer_num.unwrap().peer_count, Some(50));
                assert_eq!(addr.addr, "192.0.2.7:6881".parse().unwrap());
                assert_eq!(*swarm, swarm_id(&[0x11; 20]));
                assert_eq!(*mode, PeerMode::Leech);
            }
            other => panic!("expected an announce, got {other:?}"),
        }
    }

    #[test]
    fn ipv6_announce_answers_ipv6_peers_in_18_byte_stride() {
        let fe = front();
        let core = swarm_core();
        let cid = connect(&fe, &core, v6());
        let req = announce_req(cid, 0, AnnounceEvent::None);
        let (o, out) = send(&fe, &core, v6(), UdpRequest::Announce(req));
        assert_eq!(o, Outcome::Reply(Reply::Announce));
        assert_eq!(out.len(), 20 + 18);
        match decode_response(&out, Family::V6, 100) {
            Ok(UdpResponse::Announce(a)) => {
                assert_eq!(a.seeders, 1);
                assert_eq!(a.leechers, 3);
                assert_eq!(
                    a.peers,
                    PeerList::V6(vec!["[2001:db8::1]:2000".parse().unwrap()])
                );
            }
            other => panic!("expected announce response, got {other:?}"),
        }
        // left == 0: joined as seeder.
        let reqs = core.requests.borrow();
        match &reqs.last().unwrap().kind {
            RequestKind::Announce { mode, .. } => assert_eq!(*mode, PeerMode::Seeder),
            other => panic!("expected an announce, got {other:?}"),
        }
    }

    #[test]
    fn stopped_announce_is_a_leave_with_no_peers() {
        let fe = front();
        let core = swarm_core();
        let cid = connect(&fe, &core, v4());
        let req = announce_req(cid, 10, AnnounceEvent::Stopped);
        let (o, out) = send(&fe, &core, v4(), UdpRequest::Announce(req));
        assert_eq!(o, Outcome::Reply(Reply::Announce));
        assert_eq!(out.len(), 20);
        let reqs = core.requests.borrow();
        assert_eq!(
            reqs[reqs.len() - 2].kind,
            RequestKind::Leave {
                swarm_id: swarm_id(&[0x11; 20])
            }
        );
    }

    #[test]
    fn forged_expired_and_foreign_connection_ids_get_an_error() {
        let fe = front();
        let core = swarm_core();
        let cid = connect(&fe, &core, v4());
        let mut pkt = Vec::new();
        announce_req(cid ^ 1, 10, AnnounceEvent::None).encode(&mut pkt);
        let mut out = Vec::new();
        let o = fe.handle(&core, v4(), &pkt, NOW, &mut out);
        assert_eq!(o, Outcome::Reply(Reply::Error(UdpError::ConnectionId)));
        let mut want = Vec::new();
        ErrorResponse {
            transaction_id: 77,
            message: b"connection id expired",
        }
        .encode(&mut want);
        assert_eq!(out, want);

        // The genuine id from another address.
        pkt.clear();
        announce_req(cid, 10, AnnounceEvent::None).encode(&mut pkt);
        let other: SocketAddr = "192.0.2.8:40000".parse().unwrap();
        let o = fe.handle(&core, other, &pkt, NOW, &mut out);
        assert_eq!(o, Outcome::Reply(Reply::Error(UdpError::ConnectionId)));

        // The genuine id three slots later (past its lifetime of two to three slots).
        let later = NOW.saturating_add_millis(3 * DEFAULT_SLOT_MILLIS);
        let o = fe.handle(&core, v4(), &pkt, later, &mut out);
        assert_eq!(o, Outcome::Reply(Reply::Error(UdpError::ConnectionId)));

        // Nothing reached the engine from these.
        assert!(core.requests.borrow().is_empty());
    }

    #[test]
    fn short_and_non_bep15_packets_are_dropped() {
        let fe = front();
        let core = FakeCore::default();
        let mut out = vec![1, 2, 3];
        assert_eq!(
            fe.handle(&core, v4(), &[0; 15], NOW, &mut out),
            Outcome::Drop(Dropped::TooShort)
        );
        assert!(out.is_empty());
        // Action 0 without the magic.
        assert_eq!(
            fe.handle(&core, v4(), &[0; 16], NOW, &mut out),
            Outcome::Drop(Dropped::BadProtocolId)
        );
        // A 16-byte scrape with a bad connection id: the 29-byte error is not sent.
        let mut pkt = vec![0; 8];
        pkt.extend_from_slice(&2u32.to_be_bytes());
        pkt.extend_from_slice(&1u32.to_be_bytes());
        assert_eq!(
            fe.handle(&core, v4(), &pkt, NOW, &mut out),
            Outcome::Drop(Dropped::ErrorLongerThanRequest(UdpError::ConnectionId))
        );
        assert!(out.is_empty());
    }

    #[test]
    fn malformed_requests_with_a_valid_id_get_errors() {
        let fe = front();
        let core = swarm_core();
        let cid = connect(&fe, &core, v4());
        let mut out = Vec::new();

        let mut pkt = Vec::new();
        announce_req(cid, 10, AnnounceEvent::None).encode(&mut pkt);
        let o = fe.handle(&core, v4(), &pkt[..60], NOW, &mut out);
        assert_eq!(o, Outcome::Reply(Reply::Error(UdpError::Malformed)));
        assert_eq!(&out[..8], &[0, 0, 0, 3, 0, 0, 0, 77]);
        assert_eq!(&out[8..], b"malformed request");

        // An unknown event is a regular announce; port 0 is accepted.
        let mut odd = pkt.clone();
        odd[83] = 9;
        odd[96] = 0;
        odd[97] = 0;
        let o = fe.handle(&core, v4(), &odd, NOW, &mut out);
        assert_eq!(o, Outcome::Reply(Reply::Announce));
        core.requests.borrow_mut().clear();

        let mut unknown = pkt.clone();
        unknown[11] = 42;
        let o = fe.handle(&core, v4(), &unknown, NOW, &mut out);
        assert_eq!(o, Outcome::Reply(Reply::Error(UdpError::UnknownAction)));
        assert!(core
            .requests
            .borrow()
            .iter()
            .all(|r| !matches!(r.kind, RequestKind::Announce { .. })));
    }

    #[test]
    fn engine_refusal_becomes_an_error_response() {
        let fe = front();
        let core = FakeCore {
            announce_error: Some(ErrorCode::ServiceUnavailable),
            ..FakeCore::default()
        };
        let cid = connect(&fe, &core, v4());
        let (o, out) = send(
            &fe,
            &core,
            v4(),
            UdpRequest::Announce(announce_req(cid, 1, AnnounceEvent::None)),
        );
        assert_eq!(
            o,
            Outcome::Reply(Reply::Error(UdpError::Engine(
                ErrorCode::ServiceUnavailable
            )))
        );
        assert_eq!(&out[8..], b"tracker overloaded");
        assert_eq!(o.name(), "engine_overload");
    }

    #[test]
    fn scrape_answers_one_entry_per_hash_in_order() {
        let fe = front();
        let core = swarm_core();
        let cid = connect(&fe, &core, v4());
        let mut hashes = vec![0xaa; 20];
        hashes.extend_from_slice(&[0xbb; 20]);
        let req = ScrapeRequest {
            connection_id: cid,
            transaction_id: 5,
            info_hashes: InfoHashes::new(&hashes).unwrap(),
        };
        let (o, out) = send(&fe, &core, v4(), UdpRequest::Scrape(req));
        assert_eq!(o, Outcome::Reply(Reply::Scrape));
        let mut want = vec![0, 0, 0, 2, 0, 0, 0, 5];
        for _ in 0..2 {
            want.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 3]);
        }
        assert_eq!(out, want);
        let targets: Vec<RequestKind> = core
            .requests
            .borrow()
            .iter()
            .map(|r| r.kind.clone())
            .collect();
        assert_eq!(
            targets,
            vec![
                RequestKind::StatQuery {
                    target: StatTarget::Swarm(swarm_id(&[0xaa; 20]))
                },
                RequestKind::StatQuery {
                    target: StatTarget::Swarm(swarm_id(&[0xbb; 20]))
                },
            ]
        );
    }

    #[test]
    fn scrape_over_the_limit_is_an_error() {
        let fe = front();
        let core = swarm_core();
        let cid = connect(&fe, &core, v4());
        let hashes = vec![0x01; 20 * 75];
        let req = ScrapeRequest {
            connection_id: cid,
            transaction_id: 5,
            info_hashes: InfoHashes::new(&hashes).unwrap(),
        };
        let (o, out) = send(&fe, &core, v4(), UdpRequest::Scrape(req));
        assert_eq!(o, Outcome::Reply(Reply::Error(UdpError::TooManyHashes)));
        assert_eq!(&out[8..], b"too many info_hashes");
        assert!(core.requests.borrow().is_empty());
        // Exactly at the limit is fine.
        let req = ScrapeRequest {
            info_hashes: InfoHashes::new(&hashes[..20 * 74]).unwrap(),
            ..req
        };
        let (o, out) = send(&fe, &core, v4(), UdpRequest::Scrape(req));
        assert_eq!(o, Outcome::Reply(Reply::Scrape));
        assert_eq!(out.len(), 8 + 12 * 74);
    }

    proptest! {
        #[test]
        fn arbitrary_packets_never_panic_nor_amplify(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
            ip: [u8; 4],
            port: u16,
        ) {
            let fe = front();
            let core = swarm_core();
            let src = SocketAddr::from((ip, port));
            let mut out = Vec::new();
            let o = fe.handle(&core, src, &bytes, NOW, &mut out);
            // A random connection id is (almost surely) invalid, so nothing may be longer than
            // what was received.
            prop_assert!(out.len() <= bytes.len(), "{o:?}: {} > {}", out.len(), bytes.len());
            if let Outcome::Drop(_) = o {
                prop_assert!(out.is_empty());
            }
        }

        #[test]
        fn valid_announces_from_anywhere_are_answered(
            ip: [u8; 4], src_port in 1u16.., port in 1u16.., left: u64, num_want: i32, tid: u32,
        ) {
            let fe = front();
            let core = swarm_core();
            let src = SocketAddr::from((ip, src_port));
            let cid = connect(&fe, &core, src);
            let req = AnnounceRequest {
                transaction_id: tid,
                port,
                num_want,
                ..announce_req(cid, left, AnnounceEvent::None)
            };
            let (o, out) = send(&fe, &core, src, UdpRequest::Announce(req));
            prop_assert_eq!(o, Outcome::Reply(Reply::Announce));
            prop_assert_eq!(&out[4..8], &tid.to_be_bytes());
            prop_assert_eq!((out.len() - 20) % 6, 0);
        }
    }

    #[test]
    fn refused_swarms_get_an_error_but_can_be_left_and_scrape_as_empty() {
        let fe = front();
        let core = FakeCore {
            denied: vec![[0x11; 20]],
            ..swarm_core()
        };
        let cid = connect(&fe, &core, v4());
        let (o, out) = send(
            &fe,
            &core,
            v4(),
            UdpRequest::Announce(announce_req(cid, 10, AnnounceEvent::Started)),
        );
        assert_eq!(o, Outcome::Reply(Reply::Error(UdpError::AccessDenied)));
        match decode_response(&out, Family::V4, 0) {
            Ok(UdpResponse::Error(e)) => assert_eq!(e.message, b"info_hash not allowed"),
            other => panic!("expected an error, got {other:?}"),
        }
        assert!(
            core.requests.borrow().is_empty(),
            "the engine was not asked"
        );
        let (o, _) = send(
            &fe,
            &core,
            v4(),
            UdpRequest::Announce(announce_req(cid, 10, AnnounceEvent::Stopped)),
        );
        assert_eq!(o, Outcome::Reply(Reply::Announce));
        let hashes = [[0x11u8; 20], [0x22; 20]].concat();
        let (o, out) = send(
            &fe,
            &core,
            v4(),
            UdpRequest::Scrape(ScrapeRequest {
                connection_id: cid,
                transaction_id: 4,
                info_hashes: InfoHashes::new(&hashes).unwrap(),
            }),
        );
        assert_eq!(o, Outcome::Reply(Reply::Scrape));
        match decode_response(&out, Family::V4, 10) {
            Ok(UdpResponse::Scrape(s)) => {
                assert_eq!((s.entries[0].seeders, s.entries[0].leechers), (0, 0));
                assert_eq!(s.entries[1].seeders, core.stats.seeders);
            }
            other => panic!("expected a scrape, got {other:?}"),
        }
    }

    #[test]
    fn every_outcome_has_its_own_counter() {
        let errors = [
            UdpError::ConnectionId,
            UdpError::Malformed,
            UdpError::UnknownAction,
            UdpError::TooManyHashes,
            UdpError::Engine(ErrorCode::ServiceUnavailable),
            UdpError::Engine(ErrorCode::BadRequest),
            UdpError::AccessDenied,
        ];
        let mut outcomes: Vec<Outcome> = vec![
            Outcome::Reply(Reply::Connect),
            Outcome::Reply(Reply::Announce),
            Outcome::Reply(Reply::Scrape),
            Outcome::Drop(Dropped::TooShort),
            Outcome::Drop(Dropped::BadProtocolId),
            Outcome::Drop(Dropped::ErrorLongerThanRequest(UdpError::Malformed)),
        ];
        outcomes.extend(errors.iter().map(|e| Outcome::Reply(Reply::Error(*e))));
        let mut seen: Vec<usize> = outcomes.iter().map(Outcome::index).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen, (0..Outcome::LABELS.len()).collect::<Vec<_>>());
        assert_eq!(Outcome::Reply(Reply::Announce).name(), "announce");
        assert_eq!(
            UdpError::Engine(ErrorCode::ServiceUnavailable).name(),
            "engine_overload"
        );
    }
}
