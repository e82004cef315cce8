//! PPSTP (RFC 7846) requests as the load generator sends them: `POST` with a JSON body
//! `{"PPSPTrackerProtocol": {...}}` built by the tracker's own codec
//! ([`ppsp_tracker::protocol::ppstp::encode_request`]), and reply classification by HTTP status
//! and `error_code`.
//!
//! Swarm ids are the hex of the population's 20-byte swarm ids and peer ids the hex of its
//! peer ids, so every run names the same swarms for the same seed whatever the protocol.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ppsp_tracker::engine::{
    ActionKind, AddrType, ChunkRange, PeerAddr, PeerId, PeerMode, PeerNum, Request, RequestKind,
    StatTarget, SwarmAction, SwarmId, SwarmStat,
};
use ppsp_tracker::protocol::ppstp::{self, TransactionId};

use super::{EncodeOptions, HttpEncoder};
use crate::stats::{ErrorKind, Outcome};
use crate::workload::{push_hex, Op, OpKind, Population};

/// RFC 7846 §7.1 media type.
pub const CONTENT_TYPE: &str = "application/ppsp-tracker+json";

/// The RFC 7846 `request_type` of a PPSTP kind.
pub fn request_type(kind: OpKind) -> &'static str {
    match kind {
        OpKind::Connect => "CONNECT",
        OpKind::Join => "JOIN",
        OpKind::Find => "FIND",
        OpKind::Leave => "LEAVE",
        OpKind::StatReport => "STAT_REPORT",
        OpKind::Keepalive => "KEEPALIVE",
        OpKind::JoinChunk => "JOIN_CHUNK",
        OpKind::StatQuery => "STAT_QUERY",
        // Not PPSTP kinds; the run refuses mixes naming them for this protocol.
        _ => "KEEPALIVE",
    }
}

/// Encodes PPSTP requests; owns scratch space so encoding allocates nothing once warm.
pub struct PpstpEncoder {
    opts: EncodeOptions,
    body: Vec<u8>,
    headers: String,
    tid: String,
    transaction: u64,
    /// HTTP Digest (RFC 7616) state of each peer that was challenged: the last challenge,
    /// whose nonce the peer reuses with a growing nonce count, as a real client does.
    digest: std::collections::HashMap<u32, digest_auth::WwwAuthenticateHeader>,
}

impl PpstpEncoder {
    pub fn new(opts: EncodeOptions) -> Self {
        PpstpEncoder {
            headers: opts.common_headers(),
            opts,
            body: Vec::with_capacity(512),
            tid: String::with_capacity(20),
            transaction: 0,
            digest: std::collections::HashMap::new(),
        }
    }

    /// The `Authorization: Digest ...` line for `op`'s peer, when it holds a nonce: username
    /// = the peer id (hex), password = `--digest-secret`, qop=auth, the next nonce count and
    /// a fresh cnonce.
    fn authorization(&mut self, op: &Op, pop: &Population) -> Option<String> {
        let secret = self.opts.digest_secret.as_deref()?;
        let challenge = self.digest.get_mut(&op.peer)?;
        let mut user = Vec::with_capacity(40);
        push_hex(&mut user, &pop.peer_id(op.peer));
        let user = String::from_utf8(user).ok()?;
        let ctx = digest_auth::AuthContext::new_with_method(
            user.as_str(),
            secret,
            self.opts.path.as_str(),
            None::<&[u8]>,
            digest_auth::HttpMethod::POST,
        );
        let answer = challenge.respond(&ctx).ok()?;
        Some(format!("Authorization: {answer}\r\n"))
    }

    /// The engine request `op` stands for. Identifiers are the hex of the population's ids;
    /// `source` is not part of the message.
    pub fn request(&self, op: &Op, pop: &Population) -> Request {
        let mut hex = Vec::with_capacity(40);
        push_hex(&mut hex, &pop.peer_id(op.peer));
        // Invariant: 40 hex bytes are inside the 1..=MAX_ID_BYTES range ids accept.
        let peer_id = PeerId::new(&hex).expect("a 40-byte id is valid");
        hex.clear();
        push_hex(&mut hex, &pop.swarm_id(op.swarm));
        let swarm_id = SwarmId::new(&hex).expect("a 40-byte id is valid");
        let mode = if pop.is_seeder(op.peer) {
            PeerMode::Seeder
        } else {
            PeerMode::Leech
        };
        let peer_num = Some(PeerNum {
            peer_count: Some(self.opts.peers_wanted),
            ..PeerNum::default()
        });
        let t = self.transaction;
        let kind = match op.kind {
            OpKind::Connect => {
                let addrs = if self.opts.ipv6 {
                    // Documentation prefix (RFC 3849): a registration only, never a destination.
                    let ip = Ipv6Addr::new(
                        0x2001,
                        0xdb8,
                        0,
                        0,
                        0,
                        0,
                        (op.peer >> 16) as u16,
                        op.peer as u16,
                    );
                    vec![PeerAddr {
                        addr: SocketAddr::new(IpAddr::V6(ip), pop.peer_port(op.peer)),
                        priority: 1,
                        kind: AddrType::Host,
                        connection: None,
                        asn: None,
                        ppsp_pp: false,
                    }]
                } else {
                    Vec::new()
                };
                RequestKind::Connect {
                    peer_num,
                    addrs,
                    actions: vec![SwarmAction {
                        swarm_id,
                        action: ActionKind::Join,
                        mode,
                    }],
                }
            }
            OpKind::Join => RequestKind::Join {
                swarm_id,
                mode,
                peer_num,
            },
            OpKind::Find => RequestKind::Find {
                swarm_id,
                peer_num,
                chunks: Vec::new(),
            },
            OpKind::Leave => RequestKind::Leave { swarm_id },
            OpKind::StatReport => RequestKind::StatReport {
                stats: vec![SwarmStat {
                    swarm_id: Some(swarm_id),
                    uploaded_bytes: t * 1024,
                    downloaded_bytes: t * 2048,
                    available_bandwidth: 1_000_000,
                    concurrent_links: 5,
                }],
            },
            OpKind::JoinChunk => RequestKind::JoinChunk {
                swarm_id,
                chunks: vec![ChunkRange {
                    start: 0,
                    end: t % 4096 + 16,
                }],
            },
            OpKind::StatQuery => RequestKind::StatQuery {
                target: StatTarget::Swarm(swarm_id),
            },
            // The run refuses mixes naming other kinds for PPSTP.
            _ => RequestKind::Keepalive,
        };
        Request {
            peer_id,
            source: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            kind,
        }
    }

    /// Writes the JSON body of `op` into `self.body` with the tracker's own PPSTP encoder.
    pub fn encode_body(&mut self, op: &Op, pop: &Population) {
        self.transaction += 1;
        let request = self.request(op, pop);
        self.tid.clear();
        let _ = write!(self.tid, "{}", self.transaction);
        self.body.clear();
        ppstp::encode_request(&request, &TransactionId(self.tid.clone()), &mut self.body);
    }
}

impl HttpEncoder for PpstpEncoder {
    fn encode(&mut self, op: &Op, pop: &Population, out: &mut Vec<u8>) {
        self.encode_body(op, pop);
        let auth = self.authorization(op, pop).unwrap_or_default();
        let _ = write!(
            out,
            "POST {} HTTP/1.1\r\n{}{auth}Content-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\n\r\n",
            self.opts.path,
            self.headers,
            self.body.len()
        );
        out.extend_from_slice(&self.body);
    }

    fn on_challenge(&mut self, op: &Op, challenge: &[u8]) -> bool {
        if self.opts.digest_secret.is_none() {
            return false;
        }
        let Some(header) = std::str::from_utf8(challenge)
            .ok()
            .and_then(|c| digest_auth::WwwAuthenticateHeader::parse(c).ok())
        else {
            return false;
        };
        self.digest.insert(op.peer, header);
        true
    }

    fn peers_listed(&self, kind: OpKind, body: &[u8]) -> Option<usize> {
        matches!(kind, OpKind::Find | OpKind::Connect | OpKind::Join).then(|| count_peers(body))
    }

    fn classify(&self, _kind: OpKind, status: u16, body: &[u8]) -> Outcome {
        if status == 200 {
            return Outcome::Ok;
        }
        match error_code(body) {
            Some(c) if c != 0 => Outcome::Err(ErrorKind::PpstpCode(c)),
            _ => Outcome::Err(ErrorKind::HttpStatus(status)),
        }
    }
}

/// Counts the `peer_info` entries of a reply (each names one `peer_id`) without a full parse.
pub fn count_peers(body: &[u8]) -> usize {
    // Built once: the searcher's set-up costs more than a short body's scan.
    static KEY: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"peer_id\""));
    KEY.find_iter(body).count()
}

/// Reads `error_code` out of a PPSTP reply body without a full JSON parse (number or string).
pub fn error_code(body: &[u8]) -> Option<u8> {
    const KEY: &[u8] = b"\"error_code\"";
    let at = memchr::memmem::find(body, KEY)?;
    let rest = body.get(at + KEY.len()..)?;
    let digits: Vec<u8> = rest
        .iter()
        .copied()
        .skip_while(|c| matches!(c, b' ' | b':' | b'"' | b'\t' | b'\n' | b'\r'))
        .take_while(u8::is_ascii_digit)
        .take(3)
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{Popularity, PopulationSpec};

    fn pop() -> Population {
        Population::new(PopulationSpec {
            swarms: 4,
            peers: 8,
            popularity: Popularity::Uniform,
            seeder_share: 0.5,
            seed: 1,
        })
        .unwrap()
    }

    fn opts(ipv6: bool) -> EncodeOptions {
        EncodeOptions {
            peers_wanted: 25,
            host: "127.0.0.1:7846".into(),
            path: "/ppsp".into(),
            ipv6,
            keep_alive: true,
            digest_secret: None,
        }
    }

    #[test]
    fn every_kind_encodes_a_well_formed_json_envelope() {
        let pop = pop();
        let mut enc = PpstpEncoder::new(opts(true));
        for kind in crate::workload::ALL_OPS
            .into_iter()
            .filter(|k| k.is_ppstp())
        {
            let op = Op {
                kind,
                peer: 3,
                swarm: pop.swarm_of(3),
            };
            let mut out = Vec::new();
            enc.encode(&op, &pop, &mut out);
            let text = String::from_utf8(out).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(head.starts_with("POST /ppsp HTTP/1.1\r\n"));
            assert!(head.contains(&format!("Content-Length: {}", body.len())));
            let v: serde_json::Value = serde_json::from_str(body).unwrap();
            let p = &v["PPSPTrackerProtocol"];
            assert_eq!(p["version"], 1);
            assert_eq!(p["request_type"], request_type(kind));
            assert_eq!(p["peer_id"].as_str().unwrap().len(), 40);
            let mut swarm = Vec::new();
            push_hex(&mut swarm, &pop.swarm_id(op.swarm));
            let swarm = String::from_utf8(swarm).unwrap();
            match kind {
                OpKind::Connect => {
                    let a = &p["connect"]["swarm_action"][0];
                    assert_eq!(a["swarm_id"], swarm.as_str());
                    assert_eq!(a["action"], "JOIN");
                    assert_eq!(p["connect"]["peer_num"]["peer_count"], 25);
                    assert_eq!(
                        p["connect"]["peer_addr"][0]["ip_address"]["address_type"],
                        "ipv6"
                    );
                }
                OpKind::Find => assert_eq!(p["find"]["swarm_id"], swarm.as_str()),
                OpKind::JoinChunk => assert!(p["join_chunk"]["chunks"][0][1].is_u64()),
                OpKind::StatReport => {
                    assert_eq!(p["stat_report"]["stat"][0]["swarm_id"], swarm.as_str())
                }
                _ => {}
            }
        }
    }

    /// What the generator sends is exactly what the tracker's decoder reads back.
    #[test]
    fn the_tracker_decodes_every_kind_back_to_the_same_request() {
        let pop = pop();
        let src: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        for ipv6 in [false, true] {
            let mut enc = PpstpEncoder::new(opts(ipv6));
            for kind in crate::workload::ALL_OPS
                .into_iter()
                .filter(|k| k.is_ppstp())
            {
                let op = Op {
                    kind,
                    peer: 5,
                    swarm: pop.swarm_of(5),
                };
                enc.encode_body(&op, &pop);
                let decoded =
                    ppstp::decode_request(&enc.body, src, &ppstp::DecodeLimits::default())
                        .unwrap_or_else(|e| panic!("{kind}: {e:?}"));
                let mut want = enc.request(&op, &pop);
                want.source = src;
                assert_eq!(decoded.request, want, "{kind}");
                assert_eq!(decoded.transaction_id.0, enc.transaction.to_string());
            }
        }
    }

    #[test]
    fn transaction_ids_differ_between_requests() {
        let pop = pop();
        let mut enc = PpstpEncoder::new(opts(false));
        let op = Op {
            kind: OpKind::Keepalive,
            peer: 0,
            swarm: 0,
        };
        enc.encode_body(&op, &pop);
        let a = enc.body.clone();
        enc.encode_body(&op, &pop);
        assert_ne!(a, enc.body);
    }

    #[test]
    fn counts_listed_peers() {
        let body = br#"{"PPSPTrackerProtocol":{"swarm_result":[{"peer_group":{"peer_info":[{"peer_id":"a"},{"peer_id":"b"}]}}]}}"#;
        assert_eq!(count_peers(body), 2);
        assert_eq!(count_peers(b"{}"), 0);
        let enc = PpstpEncoder::new(opts(false));
        assert_eq!(enc.peers_listed(OpKind::Find, body), Some(2));
        assert_eq!(enc.peers_listed(OpKind::Keepalive, body), None);
    }

    #[test]
    fn classifies_by_status_and_error_code() {
        let enc = PpstpEncoder::new(opts(false));
        assert_eq!(enc.classify(OpKind::Find, 200, b"{}"), Outcome::Ok);
        let body = br#"{"PPSPTrackerProtocol":{"version":1,"response_type":1,"error_code":"03"}}"#;
        assert_eq!(
            enc.classify(OpKind::Find, 403, body),
            Outcome::Err(ErrorKind::PpstpCode(3))
        );
        assert_eq!(
            enc.classify(OpKind::Find, 503, br#"{"error_code": 5}"#),
            Outcome::Err(ErrorKind::PpstpCode(5))
        );
        assert_eq!(
            enc.classify(OpKind::Find, 413, b""),
            Outcome::Err(ErrorKind::HttpStatus(413))
        );
    }
}
