//! BitTorrent HTTP tracker requests (BEP 3 announce with BEP 23 `compact=1`, BEP 48 scrape) and
//! reply classification: HTTP 200 without a bencoded `failure reason` is a success.

use std::io::Write;

use super::{EncodeOptions, HttpEncoder};
use crate::stats::{ErrorKind, Outcome};
use crate::workload::{Op, OpKind, Population};

/// Appends `bytes` percent-encoded (every byte outside RFC 3986 unreserved).
pub fn push_urlencoded(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        }
    }
}

/// BEP 48: the scrape path is the announce path with its last `announce` replaced by `scrape`.
pub fn scrape_path(announce: &str) -> String {
    match announce.rfind("announce") {
        Some(i) => format!(
            "{}scrape{}",
            &announce[..i],
            &announce[i + "announce".len()..]
        ),
        None => "/scrape".to_string(),
    }
}

/// Peers in a BEP 23 compact `peers` string (6 bytes each) plus a BEP 7 `peers6` string (18
/// bytes each) of a bencoded announce reply; `None` when neither is there.
pub fn compact_peers(body: &[u8]) -> Option<usize> {
    fn string_len(body: &[u8], key: &[u8]) -> Option<usize> {
        let at = memchr::memmem::find(body, key)? + key.len();
        let rest = body.get(at..)?;
        let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
        if rest.get(digits) != Some(&b':') {
            return None;
        }
        std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
    }
    let v4 = string_len(body, b"5:peers");
    let v6 = string_len(body, b"6:peers6");
    match (v4, v6) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0) / 6 + b.unwrap_or(0) / 18),
    }
}

pub struct BtHttpEncoder {
    opts: EncodeOptions,
    headers: String,
    scrape_path: String,
}

impl BtHttpEncoder {
    pub fn new(opts: EncodeOptions) -> Self {
        let scrape_path = scrape_path(&opts.path);
        BtHttpEncoder {
            headers: opts.common_headers(),
            opts,
            scrape_path,
        }
    }
}

impl HttpEncoder for BtHttpEncoder {
    fn encode(&mut self, op: &Op, pop: &Population, out: &mut Vec<u8>) {
        if op.kind == OpKind::Scrape {
            out.extend_from_slice(b"GET ");
            out.extend_from_slice(self.scrape_path.as_bytes());
            out.extend_from_slice(b"?info_hash=");
            push_urlencoded(out, &pop.swarm_id(op.swarm));
        } else {
            out.extend_from_slice(b"GET ");
            out.extend_from_slice(self.opts.path.as_bytes());
            out.extend_from_slice(b"?info_hash=");
            push_urlencoded(out, &pop.swarm_id(op.swarm));
            out.extend_from_slice(b"&peer_id=");
            push_urlencoded(out, &pop.peer_id(op.peer));
            let left = if pop.is_seeder(op.peer) { 0 } else { 1 << 20 };
            let _ = write!(
                out,
                "&port={}&uploaded=0&downloaded=0&left={left}&compact=1&numwant={}",
                pop.peer_port(op.peer),
                self.opts.peers_wanted
            );
            match op.kind {
                OpKind::Started => out.extend_from_slice(b"&event=started"),
                OpKind::Stopped => out.extend_from_slice(b"&event=stopped"),
                _ => {}
            }
        }
        out.extend_from_slice(b" HTTP/1.1\r\n");
        out.extend_from_slice(self.headers.as_bytes());
        out.extend_from_slice(b"\r\n");
    }

    fn peers_listed(&self, kind: OpKind, body: &[u8]) -> Option<usize> {
        if kind == OpKind::Scrape {
            return None;
        }
        compact_peers(body)
    }

    fn classify(&self, _kind: OpKind, status: u16, body: &[u8]) -> Outcome {
        const FAILURE: &[u8] = b"14:failure reason";
        if status != 200 {
            return Outcome::Err(ErrorKind::HttpStatus(status));
        }
        if body.first() != Some(&b'd') {
            return Outcome::Err(ErrorKind::Malformed);
        }
        if memchr::memmem::find(body, FAILURE).is_some() {
            return Outcome::Err(ErrorKind::BtFailure);
        }
        Outcome::Ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{Popularity, PopulationSpec};

    #[test]
    fn announce_and_scrape_requests_carry_the_population_ids() {
        let pop = Population::new(PopulationSpec {
            swarms: 3,
            peers: 3,
            popularity: Popularity::Uniform,
            seeder_share: 0.0,
            seed: 4,
        })
        .unwrap();
        let mut enc = BtHttpEncoder::new(EncodeOptions {
            peers_wanted: 50,
            host: "127.0.0.1:6969".into(),
            path: "/announce".into(),
            ipv6: false,
            keep_alive: true,
            digest_secret: None,
        });
        let op = Op {
            kind: OpKind::Started,
            peer: 1,
            swarm: pop.swarm_of(1),
        };
        let mut out = Vec::new();
        enc.encode(&op, &pop, &mut out);
        let text = String::from_utf8(out).unwrap();
        let mut hash = Vec::new();
        push_urlencoded(&mut hash, &pop.swarm_id(op.swarm));
        let hash = String::from_utf8(hash).unwrap();
        assert!(text.starts_with(&format!("GET /announce?info_hash={hash}&peer_id=-LG0001-")));
        assert!(text.contains("&left=1048576&compact=1&numwant=50&event=started HTTP/1.1\r\n"));
        assert!(text.ends_with("Host: 127.0.0.1:6969\r\n\r\n"));
        let mut out = Vec::new();
        enc.encode(
            &Op {
                kind: OpKind::Scrape,
                ..op
            },
            &pop,
            &mut out,
        );
        assert!(String::from_utf8(out)
            .unwrap()
            .starts_with(&format!("GET /scrape?info_hash={hash} HTTP/1.1")));
    }

    /// The tracker's own query parsers read back what the generator sends.
    #[test]
    fn the_tracker_parses_the_queries() {
        use ppsp_tracker::protocol::bt_http::query;
        use ppsp_tracker::protocol::bt_udp::tracker::AnnounceEvent;
        let pop = Population::new(PopulationSpec {
            swarms: 5,
            peers: 5,
            popularity: Popularity::Uniform,
            seeder_share: 1.0,
            seed: 11,
        })
        .unwrap();
        let mut enc = BtHttpEncoder::new(EncodeOptions {
            peers_wanted: 40,
            host: "h".into(),
            path: "/announce".into(),
            ipv6: false,
            keep_alive: true,
            digest_secret: None,
        });
        let op = Op {
            kind: OpKind::Stopped,
            peer: 4,
            swarm: pop.swarm_of(4),
        };
        let mut out = Vec::new();
        enc.encode(&op, &pop, &mut out);
        let text = String::from_utf8(out).unwrap();
        let target = text.split(' ').nth(1).unwrap();
        let (_, q) = target.split_once('?').unwrap();
        let a = query::parse_announce(q).unwrap();
        assert_eq!(a.info_hash, pop.swarm_id(op.swarm));
        assert_eq!(a.peer_id, pop.peer_id(4));
        assert_eq!(a.port, pop.peer_port(4));
        assert_eq!(a.left, Some(0));
        assert_eq!(a.event, AnnounceEvent::Stopped);
        assert_eq!(a.num_want, Some(40));
        let mut out = Vec::new();
        enc.encode(
            &Op {
                kind: OpKind::Scrape,
                ..op
            },
            &pop,
            &mut out,
        );
        let text = String::from_utf8(out).unwrap();
        let (_, q) = text.split(' ').nth(1).unwrap().split_once('?').unwrap();
        let mut hashes = Vec::new();
        query::parse_scrape(q, 10, &mut hashes).unwrap();
        assert_eq!(hashes, vec![pop.swarm_id(op.swarm)]);
    }

    #[test]
    fn classifies_failure_reason_and_status() {
        let enc = BtHttpEncoder::new(EncodeOptions {
            peers_wanted: 1,
            host: "h".into(),
            path: "/announce".into(),
            ipv6: false,
            keep_alive: true,
            digest_secret: None,
        });
        assert_eq!(
            enc.classify(OpKind::Announce, 200, b"d8:intervali1800e5:peers0:e"),
            Outcome::Ok
        );
        assert_eq!(
            enc.classify(OpKind::Announce, 200, b"d14:failure reason3:nahe"),
            Outcome::Err(ErrorKind::BtFailure)
        );
        assert_eq!(
            enc.classify(OpKind::Announce, 500, b""),
            Outcome::Err(ErrorKind::HttpStatus(500))
        );
        assert_eq!(
            enc.classify(OpKind::Announce, 200, b"<html>"),
            Outcome::Err(ErrorKind::Malformed)
        );
    }

    #[test]
    fn counts_compact_peers() {
        assert_eq!(
            compact_peers(b"d8:intervali1800e5:peers12:abcdefghijkle"),
            Some(2)
        );
        assert_eq!(
            compact_peers(b"d8:intervali1800e5:peers0:6:peers618:abcdefghijklmnopqre"),
            Some(1)
        );
        assert_eq!(compact_peers(b"d8:intervali1800ee"), None);
        assert_eq!(compact_peers(b"d5:peersxe"), None);
    }

    #[test]
    fn urlencoding_and_scrape_path() {
        let mut out = Vec::new();
        push_urlencoded(&mut out, &[0x00, b'a', 0xff, b'~', b' ']);
        assert_eq!(out, b"%00a%FF~%20");
        assert_eq!(scrape_path("/announce"), "/scrape");
        assert_eq!(scrape_path("/x/announce.php"), "/x/scrape.php");
        assert_eq!(scrape_path("/other"), "/scrape");
    }
}
