//! PPSTP (RFC 7846) requests as the load generator sends them: `POST` with a JSON body
//! `{"PPSPTrackerProtocol": {...}}` in the shapes protocols.md §1 gives, and reply
//! classification by HTTP status and `error_code`.
//!
//! Swarm ids are the hex of the population's 20-byte swarm ids and peer ids the hex of its
//! peer ids, so every run names the same swarms for the same seed whatever the protocol.

use std::io::Write;

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
    transaction: u64,
}

impl PpstpEncoder {
    pub fn new(opts: EncodeOptions) -> Self {
        PpstpEncoder {
            opts,
            body: Vec::with_capacity(512),
            transaction: 0,
        }
    }

    /// Writes the JSON body of `op` into `self.body`.
    pub fn encode_body(&mut self, op: &Op, pop: &Population) {
        self.transaction += 1;
        let b = &mut self.body;
        b.clear();
        b.extend_from_slice(b"{\"PPSPTrackerProtocol\":{\"version\":1,\"request_type\":\"");
        b.extend_from_slice(request_type(op.kind).as_bytes());
        // Writes into a Vec cannot fail.
        let _ = write!(
            b,
            "\",\"transaction_id\":\"{}\",\"peer_id\":\"",
            self.transaction
        );
        push_hex(b, &pop.peer_id(op.peer));
        b.push(b'"');
        let mut swarm = Vec::with_capacity(40);
        push_hex(&mut swarm, &pop.swarm_id(op.swarm));
        let mode = if pop.is_seeder(op.peer) {
            "SEEDER"
        } else {
            "LEECH"
        };
        let wanted = self.opts.peers_wanted;
        match op.kind {
            OpKind::Connect => {
                b.extend_from_slice(b",\"connect\":{");
                let _ = write!(b, "\"peer_num\":{{\"peer_count\":{wanted}}},");
                if self.opts.ipv6 {
                    // Documentation prefix (RFC 3849): registrations only, never a destination.
                    let _ = write!(
                        b,
                        "\"peer_addr\":[{{\"ip_address\":{{\"address_type\":\"ipv6\",\"address\":\"2001:db8::{:x}:{:x}\"}},\"port\":{},\"priority\":1,\"type\":\"HOST\"}}],",
                        op.peer >> 16,
                        op.peer & 0xffff,
                        pop.peer_port(op.peer)
                    );
                }
                b.extend_from_slice(b"\"swarm_action\":[{\"swarm_id\":\"");
                b.extend_from_slice(&swarm);
                let _ = write!(b, "\",\"action\":\"JOIN\",\"peer_mode\":\"{mode}\"}}]}}");
            }
            OpKind::Join => {
                b.extend_from_slice(b",\"join\":{\"swarm_id\":\"");
                b.extend_from_slice(&swarm);
                let _ = write!(
                    b,
                    "\",\"peer_mode\":\"{mode}\",\"peer_num\":{{\"peer_count\":{wanted}}}}}"
                );
            }
            OpKind::Find => {
                b.extend_from_slice(b",\"find\":{\"swarm_id\":\"");
                b.extend_from_slice(&swarm);
                let _ = write!(b, "\",\"peer_num\":{{\"peer_count\":{wanted}}}}}");
            }
            OpKind::Leave => {
                b.extend_from_slice(b",\"leave\":{\"swarm_id\":\"");
                b.extend_from_slice(&swarm);
                b.extend_from_slice(b"\"}");
            }
            OpKind::StatReport => {
                b.extend_from_slice(
                    b",\"stat_report\":{\"type\":\"STREAM_STATS\",\"stat\":[{\"swarm_id\":\"",
                );
                b.extend_from_slice(&swarm);
                let t = self.transaction;
                let _ = write!(
                    b,
                    "\",\"uploaded_bytes\":{},\"downloaded_bytes\":{},\"available_bandwidth\":1000000,\"concurrent_links\":5}}]}}",
                    t * 1024,
                    t * 2048
                );
            }
            OpKind::JoinChunk => {
                b.extend_from_slice(b",\"join_chunk\":{\"swarm_id\":\"");
                b.extend_from_slice(&swarm);
                let end = self.transaction % 4096 + 16;
                let _ = write!(b, "\",\"chunks\":[[0,{end}]]}}");
            }
            OpKind::StatQuery => {
                b.extend_from_slice(b",\"stat_query\":{\"swarm_id\":\"");
                b.extend_from_slice(&swarm);
                b.extend_from_slice(b"\"}");
            }
            _ => {}
        }
        b.extend_from_slice(b"}}");
    }
}

impl HttpEncoder for PpstpEncoder {
    fn encode(&mut self, op: &Op, pop: &Population, out: &mut Vec<u8>) {
        self.encode_body(op, pop);
        let _ = write!(
            out,
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\n\r\n",
            self.opts.path,
            self.opts.host,
            self.body.len()
        );
        out.extend_from_slice(&self.body);
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

/// Reads `error_code` out of a PPSTP reply body without a full JSON parse (number or string).
pub fn error_code(body: &[u8]) -> Option<u8> {
    const KEY: &[u8] = b"\"error_code\"";
    let at = body.windows(KEY.len()).position(|w| w == KEY)?;
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
