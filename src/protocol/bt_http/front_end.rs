//! The BitTorrent HTTP tracker front-end: a framed `GET` (path and query) in, a bencoded body
//! and a status out. The shared HTTP layer (`protocol::http`) frames requests and writes the
//! status line and headers; it sends the body with [`CONTENT_TYPE`].
//!
//! Answers (keys in sorted order, as bencoding requires):
//!
//! - announce: `complete`, `downloaded` (the swarm's completions, as in a scrape),
//!   `incomplete`, `interval`, `min interval`, `peers`, and `peers6` when there are IPv6 peers. BEP 23: `peers` is compact (6 bytes per IPv4 peer) whatever
//!   `compact` says (the key is advisory, and every client must read the compact form); BEP 7:
//!   `peers6` holds 18 bytes per IPv6 peer. Peers are keyed by address, so there is no
//!   `peer id` for BEP 3's dictionary form, and `no_peer_id` changes nothing.
//! - scrape (BEP 48): `files`, a dictionary keyed by the raw 20-byte info-hashes (sorted, each
//!   once) of `{complete, downloaded, incomplete}`.
//! - every error: `{failure reason}` with status 200, as trackers do; an unknown path gets 404
//!   with a failure reason too.

use std::net::SocketAddr;

use super::query::{parse_announce, parse_scrape, QueryError};
use crate::engine::{CompactPeers, ErrorCode, ListFamilies, Time};
use crate::protocol::bencode;
use crate::protocol::bt_udp::tracker::{
    announce, engine_error_message, refused, swarm_counts, BtLimits, Family, InfoHash, TrackerCore,
};

/// Content type of every tracker answer body.
pub const CONTENT_TYPE: &str = "text/plain";

/// Path of the announce endpoint.
pub const ANNOUNCE_PATH: &str = "/announce";
/// Path of the scrape endpoint (BEP 48: the announce path with `announce` replaced).
pub const SCRAPE_PATH: &str = "/scrape";

/// Why a request got a `failure reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HttpFailure {
    Query(QueryError),
    /// The engine refused the announce.
    Engine(ErrorCode),
    /// Neither `/announce` nor `/scrape` (status 404).
    UnknownPath,
    /// The access list refuses the swarm.
    AccessDenied,
}

impl HttpFailure {
    /// Index of this failure's counter in [`HttpOutcome::LABELS`].
    pub const fn index(&self) -> usize {
        match self {
            HttpFailure::Query(QueryError::TooManyInfoHashes) => 2,
            HttpFailure::Query(QueryError::FullScrape) => 3,
            HttpFailure::Query(_) => 4,
            HttpFailure::Engine(ErrorCode::ServiceUnavailable) => 5,
            HttpFailure::Engine(_) => 6,
            HttpFailure::AccessDenied => 7,
            HttpFailure::UnknownPath => 8,
        }
    }

    /// Stable name for metrics labels.
    pub fn name(&self) -> &'static str {
        HttpOutcome::LABELS[self.index()]
    }
}

/// What the body holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HttpAnswer {
    Announce,
    Scrape,
    Failure(HttpFailure),
}

/// Status and kind of the answer written into the body; says which counter to bump.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HttpOutcome {
    pub status: u16,
    pub answer: HttpAnswer,
}

impl HttpOutcome {
    /// Metric label of each outcome, indexed by [`HttpOutcome::index`]; the last one counts
    /// HTTP-level faults answered before this front-end ([`HttpOutcome::HTTP_FAULT`]).
    pub const LABELS: [&'static str; 10] = [
        "announce",
        "scrape",
        "too_many_hashes",
        "full_scrape",
        "bad_query",
        "engine_overload",
        "engine_error",
        "access_denied",
        "unknown_path",
        "http_fault",
    ];

    /// Index in [`HttpOutcome::LABELS`] of a fault answered by the HTTP layer.
    pub const HTTP_FAULT: usize = 9;

    /// Index of this outcome's counter and label in [`HttpOutcome::LABELS`].
    pub const fn index(&self) -> usize {
        match self.answer {
            HttpAnswer::Announce => 0,
            HttpAnswer::Scrape => 1,
            HttpAnswer::Failure(f) => f.index(),
        }
    }

    /// Stable name for metrics labels.
    pub fn name(&self) -> &'static str {
        Self::LABELS[self.index()]
    }
}

/// The HTTP tracker front-end. Shared by every worker (`Sync`).
#[derive(Clone, Debug)]
pub struct HttpFrontEnd {
    limits: BtLimits,
}

impl HttpFrontEnd {
    pub fn new(limits: BtLimits) -> Self {
        HttpFrontEnd { limits }
    }

    pub fn limits(&self) -> &BtLimits {
        &self.limits
    }

    /// Answers `GET path?query` from `src` at `now`: clears `body` and writes the bencoded
    /// answer. `query` is the query string without `?`. Never panics.
    pub fn handle_get(
        &self,
        core: &impl TrackerCore,
        src: SocketAddr,
        path: &str,
        query: Option<&str>,
        now: Time,
        body: &mut Vec<u8>,
    ) -> HttpOutcome {
        self.handle_get_with(
            core,
            src,
            path,
            query,
            now,
            body,
            &mut CompactPeers::default(),
        )
    }

    /// As [`HttpFrontEnd::handle_get`], with the peer list built in `scratch` (kept by the
    /// caller between requests so that an announce allocates nothing).
    #[allow(clippy::too_many_arguments)]
    pub fn handle_get_with(
        &self,
        core: &impl TrackerCore,
        src: SocketAddr,
        path: &str,
        query: Option<&str>,
        now: Time,
        body: &mut Vec<u8>,
        scratch: &mut CompactPeers,
    ) -> HttpOutcome {
        body.clear();
        let query = query.unwrap_or("");
        let answer = match path {
            ANNOUNCE_PATH => self.announce(core, src, query, now, body, scratch),
            SCRAPE_PATH => self.scrape(core, src, query, now, body),
            _ => Err(HttpFailure::UnknownPath),
        };
        match answer {
            Ok(answer) => HttpOutcome {
                status: 200,
                answer,
            },
            Err(failure) => {
                body.clear();
                write_failure(body, failure);
                HttpOutcome {
                    status: if failure == HttpFailure::UnknownPath {
                        404
                    } else {
                        200
                    },
                    answer: HttpAnswer::Failure(failure),
                }
            }
        }
    }

    fn announce(
        &self,
        core: &impl TrackerCore,
        src: SocketAddr,
        query: &str,
        now: Time,
        out: &mut Vec<u8>,
        scratch: &mut CompactPeers,
    ) -> Result<HttpAnswer, HttpFailure> {
        let q = parse_announce(query).map_err(HttpFailure::Query)?;
        let a = q.to_announce();
        if refused(core, &a) {
            return Err(HttpFailure::AccessDenied);
        }
        // One address per peer, the requester's family first; the list holds both families.
        let families = ListFamilies {
            first: Family::of(src.ip()),
            fallback: true,
        };
        let answer = announce(core, &self.limits, src, &a, now, families, scratch)
            .map_err(HttpFailure::Engine)?;

        bencode::dict_begin(out);
        bencode::key_int(out, b"complete", answer.counts.seeders.into());
        bencode::key_int(out, b"downloaded", answer.counts.downloaded.into());
        bencode::key_int(out, b"incomplete", answer.counts.leechers.into());
        bencode::key_int(out, b"interval", self.limits.announce_interval_secs.into());
        bencode::key_int(
            out,
            b"min interval",
            self.limits.min_announce_interval_secs.into(),
        );
        // BEP 23: `compact` is advisory and a tracker may answer compact only; every client
        // must read it. Peers are keyed by address, so no `peer id` exists to list in BEP 3's
        // dictionary form.
        bencode::bytes(out, b"peers");
        // BEP 23 / BEP 7: the engine's wire-form lists, copied as they are.
        bencode::bytes(out, &answer.peers.v4);
        if !answer.peers.v6.is_empty() {
            bencode::bytes(out, b"peers6");
            bencode::bytes(out, &answer.peers.v6);
        }
        bencode::end(out);
        Ok(HttpAnswer::Announce)
    }

    fn scrape(
        &self,
        core: &impl TrackerCore,
        src: SocketAddr,
        query: &str,
        now: Time,
        out: &mut Vec<u8>,
    ) -> Result<HttpAnswer, HttpFailure> {
        let mut hashes: Vec<InfoHash> = Vec::new();
        parse_scrape(query, self.limits.max_scrape_hashes, &mut hashes)
            .map_err(HttpFailure::Query)?;
        // Dictionary keys must be sorted and unique.
        hashes.sort_unstable();
        hashes.dedup();
        bencode::dict_begin(out);
        bencode::bytes(out, b"files");
        bencode::dict_begin(out);
        for hash in &hashes {
            let c = swarm_counts(core, src, hash, now);
            bencode::bytes(out, hash);
            bencode::dict_begin(out);
            bencode::key_int(out, b"complete", c.seeders.into());
            bencode::key_int(out, b"downloaded", c.downloaded.into());
            bencode::key_int(out, b"incomplete", c.leechers.into());
            bencode::end(out);
        }
        bencode::end(out);
        bencode::end(out);
        Ok(HttpAnswer::Scrape)
    }
}

/// Bytes of an announce answer, HTTP status line and headers included, beside its peers: the
/// counts, intervals and keys take well under this.
pub const ANNOUNCE_ALLOWANCE_BYTES: usize = 512;

/// The most bytes an announce answer listing `max_num_want` peers takes: 18 bytes a peer (an
/// IPv6 entry, BEP 7, the larger form) and [`ANNOUNCE_ALLOWANCE_BYTES`].
pub const fn announce_answer_bytes(max_num_want: u32) -> usize {
    (max_num_want as usize)
        .saturating_mul(18)
        .saturating_add(ANNOUNCE_ALLOWANCE_BYTES)
}

/// Writes `{failure reason: ...}`.
fn write_failure(out: &mut Vec<u8>, failure: HttpFailure) {
    bencode::dict_begin(out);
    bencode::bytes(out, b"failure reason");
    match failure {
        HttpFailure::Query(e) => bencode::bytes(out, e.to_string().as_bytes()),
        HttpFailure::Engine(code) => bencode::bytes(out, engine_error_message(code).as_bytes()),
        HttpFailure::UnknownPath => bencode::bytes(out, b"unknown path"),
        HttpFailure::AccessDenied => bencode::bytes(out, b"info_hash not allowed"),
    }
    bencode::end(out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{PeerMode, RequestKind, StatTarget, SwarmStats};
    use crate::protocol::bt_http::query::Field;
    use crate::protocol::bt_udp::tracker::fake::{peer, FakeCore};
    use crate::protocol::bt_udp::tracker::{bt_peer_id, swarm_id};
    use proptest::prelude::*;

    const NOW: Time = Time::from_secs(100);
    const Q: &str = "info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=-TR3000-abcdefghijkl&port=6881";

    fn front() -> HttpFrontEnd {
        HttpFrontEnd::new(BtLimits::default())
    }

    fn v4() -> SocketAddr {
        "192.0.2.7:40000".parse().unwrap()
    }

    fn swarm_core() -> FakeCore {
        FakeCore {
            peers: vec![
                peer(PeerMode::Leech, &["192.0.2.7:6881"]), // the requester
                peer(PeerMode::Seeder, &["198.51.100.1:1000"]),
                peer(PeerMode::Leech, &["[2001:db8::1]:2000"]),
            ],
            stats: SwarmStats {
                peers: 3,
                seeders: 1,
                leechers: 2,
                ..SwarmStats::default()
            },
            ..FakeCore::default()
        }
    }

    fn get(core: &FakeCore, path: &str, query: Option<&str>) -> (HttpOutcome, Vec<u8>) {
        let mut body = b"stale".to_vec();
        let o = front().handle_get(core, v4(), path, query, NOW, &mut body);
        (o, body)
    }

    fn failure(reason: &str) -> Vec<u8> {
        format!("d14:failure reason{}:{}e", reason.len(), reason).into_bytes()
    }

    #[test]
    fn compact_announce_answer_exact_bytes() {
        let core = swarm_core();
        let (o, body) = get(&core, "/announce", Some(&format!("{Q}&left=10&compact=1")));
        assert_eq!(
            o,
            HttpOutcome {
                status: 200,
                answer: HttpAnswer::Announce
            }
        );
        let mut want =
            b"d8:completei1e10:downloadedi0e10:incompletei2e8:intervali90e12:min intervali45e5:peers6:".to_vec();
        want.extend_from_slice(&[198, 51, 100, 1, 0x03, 0xe8]);
        want.extend_from_slice(b"6:peers618:");
        want.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        want.extend_from_slice(&[0x07, 0xd0]);
        want.push(b'e');
        assert_eq!(body, want);
    }

    #[test]
    fn compact_zero_is_answered_compact() {
        let core = swarm_core();
        let (_, compact) = get(&core, "/announce", Some(&format!("{Q}&left=10&compact=1")));
        for extra in ["&compact=0", "&compact=0&no_peer_id=1", "&compact=x"] {
            let core = swarm_core();
            let (o, body) = get(&core, "/announce", Some(&format!("{Q}&left=10{extra}")));
            assert_eq!(o.answer, HttpAnswer::Announce);
            assert_eq!(body, compact, "{extra}");
        }
    }

    #[test]
    fn empty_swarm_has_an_empty_compact_peers_string_and_no_peers6() {
        let core = FakeCore::default();
        let (_, body) = get(&core, "/announce", Some(Q));
        assert_eq!(
            body,
            b"d8:completei0e10:downloadedi0e10:incompletei0e8:intervali90e12:min intervali45e5:peers0:e".to_vec()
        );
    }

    #[test]
    fn announce_maps_to_the_engine_by_source_ip_and_announced_port() {
        let core = swarm_core();
        get(
            &core,
            "/announce",
            Some(&format!("{Q}&left=0&ip=203.0.113.9&numwant=5")),
        );
        let reqs = core.requests.borrow();
        assert_eq!(reqs.len(), 1);
        assert_eq!(
            reqs[0].peer_id,
            bt_peer_id("192.0.2.7".parse().unwrap(), 6881)
        );
        match &reqs[0].kind {
            RequestKind::Announce {
                swarm_id: swarm,
                mode,
                addr,
                peer_num,
            } => {
                assert_eq!(peer_num.unwrap().peer_count, Some(5));
                // The `ip` parameter is ignored.
                assert_eq!(addr.addr, "192.0.2.7:6881".parse().unwrap());
                assert_eq!(*swarm, swarm_id(b"aaaaaaaaaaaaaaaaaaaa"));
                assert_eq!(*mode, PeerMode::Seeder);
            }
            other => panic!("expected an announce, got {other:?}"),
        }
    }

    #[test]
    fn stopped_is_a_leave() {
        let core = swarm_core();
        let (o, body) = get(&core, "/announce", Some(&format!("{Q}&event=stopped")));
        assert_eq!(o.answer, HttpAnswer::Announce);
        assert_eq!(
            core.requests.borrow()[0].kind,
            RequestKind::Leave {
                swarm_id: swarm_id(b"aaaaaaaaaaaaaaaaaaaa")
            }
        );
        assert!(body.ends_with(b"5:peers0:e"));
    }

    #[test]
    fn scrape_answer_exact_bytes_sorted_and_deduplicated() {
        let core = FakeCore {
            stats: SwarmStats {
                seeders: 11,
                leechers: 19,
                ..SwarmStats::default()
            },
            ..FakeCore::default()
        };
        let (o, body) = get(
            &core,
            "/scrape",
            Some("info_hash=yyyyyyyyyyyyyyyyyyyy&info_hash=xxxxxxxxxxxxxxxxxxxx&info_hash=yyyyyyyyyyyyyyyyyyyy"),
        );
        assert_eq!(
            o,
            HttpOutcome {
                status: 200,
                answer: HttpAnswer::Scrape
            }
        );
        assert_eq!(
            body,
            b"d5:filesd\
20:xxxxxxxxxxxxxxxxxxxxd8:completei11e10:downloadedi0e10:incompletei19ee\
20:yyyyyyyyyyyyyyyyyyyyd8:completei11e10:downloadedi0e10:incompletei19eeee"
                .to_vec()
        );
        let kinds: Vec<RequestKind> = core
            .requests
            .borrow()
            .iter()
            .map(|r| r.kind.clone())
            .collect();
        assert_eq!(
            kinds,
            vec![
                RequestKind::StatQuery {
                    target: StatTarget::Swarm(swarm_id(b"xxxxxxxxxxxxxxxxxxxx"))
                },
                RequestKind::StatQuery {
                    target: StatTarget::Swarm(swarm_id(b"yyyyyyyyyyyyyyyyyyyy"))
                },
            ]
        );
    }

    #[test]
    fn scrape_over_the_limit_is_a_failure() {
        let core = FakeCore::default();
        let q: Vec<String> = (0..75)
            .map(|i| format!("info_hash=aaaaaaaaaaaaaaaaaa{i:02}"))
            .collect();
        let (o, body) = get(&core, "/scrape", Some(&q.join("&")));
        assert_eq!(
            o.answer,
            HttpAnswer::Failure(HttpFailure::Query(QueryError::TooManyInfoHashes))
        );
        assert_eq!(o.status, 200);
        assert_eq!(body, failure("too many info_hash values"));
        assert!(core.requests.borrow().is_empty());
        let (o, _) = get(&core, "/scrape", Some(&q[..74].join("&")));
        assert_eq!(o.answer, HttpAnswer::Scrape);
    }

    #[test]
    fn malformed_queries_get_failure_reasons_and_change_nothing() {
        let core = swarm_core();
        let cases = [
            (
                "info_hash=%ZZaaaaaaaaaaaaaaaaaa&peer_id=-TR3000-abcdefghijkl&port=1".to_string(),
                "invalid percent-encoding in info_hash",
            ),
            (
                "info_hash=aaa&peer_id=-TR3000-abcdefghijkl&port=1".to_string(),
                "invalid info_hash",
            ),
            (
                "info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=-TR3000-abcdefghijkl".to_string(),
                "missing port",
            ),
            (format!("{Q}&left=lots"), "invalid left"),
            (format!("{Q}&uploaded=-1"), "invalid uploaded"),
            ("port=1".to_string(), "missing info_hash"),
        ];
        for (query, reason) in cases {
            let (o, body) = get(&core, "/announce", Some(&query));
            assert_eq!(o.status, 200, "{query}");
            assert!(matches!(
                o.answer,
                HttpAnswer::Failure(HttpFailure::Query(_))
            ));
            assert_eq!(body, failure(reason), "{query}");
        }
        let (o, body) = get(&core, "/announce", None);
        assert_eq!(
            o.answer,
            HttpAnswer::Failure(HttpFailure::Query(QueryError::Missing(Field::InfoHash)))
        );
        assert_eq!(body, failure("missing info_hash"));
        let (_, body) = get(&core, "/scrape", None);
        assert_eq!(body, failure("full scrape is not supported"));
        assert!(core.requests.borrow().is_empty());
    }

    #[test]
    fn unknown_path_is_404_with_a_failure_reason() {
        let core = swarm_core();
        let (o, body) = get(&core, "/announce.php", Some(Q));
        assert_eq!(
            o,
            HttpOutcome {
                status: 404,
                answer: HttpAnswer::Failure(HttpFailure::UnknownPath)
            }
        );
        assert_eq!(body, failure("unknown path"));
        assert_eq!(o.name(), "unknown_path");
    }

    #[test]
    fn engine_errors_become_failure_reasons() {
        let core = FakeCore {
            announce_error: Some(ErrorCode::ServiceUnavailable),
            ..FakeCore::default()
        };
        let (o, body) = get(&core, "/announce", Some(Q));
        assert_eq!(
            o,
            HttpOutcome {
                status: 200,
                answer: HttpAnswer::Failure(HttpFailure::Engine(ErrorCode::ServiceUnavailable))
            }
        );
        assert_eq!(body, failure("tracker overloaded"));
    }

    #[test]
    fn ipv6_requester_gets_peers6_first_and_ipv4_in_peers() {
        let core = swarm_core();
        let src: SocketAddr = "[2001:db8::9]:5000".parse().unwrap();
        let mut body = Vec::new();
        let o = front().handle_get(&core, src, "/announce", Some(Q), NOW, &mut body);
        assert_eq!(o.answer, HttpAnswer::Announce);
        // The IPv4 requester entry 192.0.2.7:6881 is someone else now, so it is listed.
        let mut want =
            b"d8:completei1e10:downloadedi0e10:incompletei2e8:intervali90e12:min intervali45e5:peers12:".to_vec();
        want.extend_from_slice(&[192, 0, 2, 7, 0x1a, 0xe1, 198, 51, 100, 1, 0x03, 0xe8]);
        want.extend_from_slice(b"6:peers618:");
        want.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        want.extend_from_slice(&[0x07, 0xd0, b'e']);
        assert_eq!(body, want);
    }

    proptest! {
        #[test]
        fn arbitrary_requests_never_panic_and_always_answer_a_dictionary(
            path in prop_oneof![Just("/announce".to_string()), Just("/scrape".to_string()), ".{0,10}"],
            query in "[a-z_=&%0-9A-Fa-f+\\-]{0,200}",
        ) {
            let core = swarm_core();
            let mut body = Vec::new();
            let o = front().handle_get(&core, v4(), &path, Some(&query), NOW, &mut body);
            prop_assert!(o.status == 200 || o.status == 404);
            prop_assert_eq!(body.first(), Some(&b'd'));
            prop_assert_eq!(body.last(), Some(&b'e'));
        }
    }

    #[test]
    fn refused_swarms_get_a_failure_reason() {
        let core = FakeCore {
            denied: vec![*b"aaaaaaaaaaaaaaaaaaaa"],
            ..swarm_core()
        };
        let (o, body) = get(&core, "/announce", Some(Q));
        assert_eq!(o.answer, HttpAnswer::Failure(HttpFailure::AccessDenied));
        assert_eq!(
            body,
            b"d14:failure reason21:info_hash not allowede".to_vec()
        );
        assert!(core.requests.borrow().is_empty());
        let (o, _) = get(&core, "/announce", Some(&format!("{Q}&event=stopped")));
        assert_eq!(o.answer, HttpAnswer::Announce);
    }
}
