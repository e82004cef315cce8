//! Fuzz target: the BitTorrent HTTP query parsers and the HTTP tracker front-end never panic,
//! keep scrapes within their limit, and always answer with one bencoded dictionary.
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use ppsp_tracker::engine::{Answer, ErrorCode, Request, RequestKind, Response, Time};
use ppsp_tracker::protocol::bt_http::{parse_announce, parse_scrape, HttpFrontEnd};
use ppsp_tracker::protocol::bt_udp::{BtLimits, TrackerCore};

/// Accepts every announce with an empty swarm, refuses everything else.
struct EmptySwarms;

impl TrackerCore for EmptySwarms {
    fn handle(&self, request: &Request, _now: Time) -> Response {
        match request.kind {
            RequestKind::Announce { .. } => Response::Ok(Answer::default()),
            _ => Response::Err(ErrorCode::Forbidden),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let query = String::from_utf8_lossy(data);
    let _ = parse_announce(&query);
    let mut hashes = Vec::new();
    let _ = parse_scrape(&query, 74, &mut hashes);
    assert!(hashes.len() <= 74);

    let front = HttpFrontEnd::new(BtLimits::default());
    let src: SocketAddr = "192.0.2.1:4000".parse().unwrap();
    let mut body = Vec::new();
    for path in ["/announce", "/scrape", "/other"] {
        let outcome = front.handle_get(&EmptySwarms, src, path, Some(&query), Time(0), &mut body);
        assert!(outcome.status == 200 || outcome.status == 404);
        assert_eq!(body.first(), Some(&b'd'));
        assert_eq!(body.last(), Some(&b'e'));
    }
});
