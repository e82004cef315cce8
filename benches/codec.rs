//! Codec benches: PPSTP request decoding (RFC 7846 examples E2, E5, E7; the scanner against
//! the serde reference decoder on E5 and the load generator's FIND), encoding a FIND
//! answer with 30 peers, HTTP framing of a pipelined buffer, and BEP 15 (UDP tracker) request
//! decoding and announce-answer encoding. `ppstp_encode/*_reference` is the answer encoder the
//! server used before the current one (the same bytes), for before/after ratios from one run.
//! Criterion reports time per iteration; one iteration is one request except where the name
//! says otherwise.
//!
//! `cargo bench --bench codec -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ppsp_tracker::engine::{
    AddrType, Answer, ErrorCode, LinkKind, PeerAddr, PeerId, PeerInfo, PeerMode, PeerNum, Request,
    RequestKind, Response, SwarmId, SwarmResult,
};
use ppsp_tracker::protocol::http::{frame_request, Framed, HttpLimits};
use ppsp_tracker::protocol::ppstp::{
    decode_request, decode_request_into, encode_reference, encode_request, encode_response,
    examples, reference, DecodeLimits, Decoded, TransactionId,
};

fn decode(c: &mut Criterion) {
    let source: SocketAddr = "198.51.100.1:6881".parse().expect("literal address");
    let limits = DecodeLimits::default();
    let mut group = c.benchmark_group("ppstp_decode");
    for (name, body) in [
        ("e2_connect_two_addrs", examples::E2),
        ("e5_find", examples::E5),
        ("e7_stat_report", examples::E7),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| decode_request(black_box(body.as_bytes()), source, &limits))
        });
    }
    // Reference point: parsing E2 into a generic JSON tree, which the typed decoder avoids.
    group.bench_function("baseline_e2_into_serde_json_value", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(examples::E2.as_bytes())))
    });
    // The error path: a wrong type makes the decoder read the body a second time for the
    // transaction id.
    let bad = r#"{"PPSPTrackerProtocol": {"version": 1, "peer_id": 5, "request_type": "FIND", "transaction_id": "t"}}"#;
    group.bench_function("malformed_salvage", |b| {
        b.iter(|| decode_request(black_box(bad.as_bytes()), source, &limits))
    });
    group.finish();
}

/// The FIND body `ppsp-loadgen` sends: 40-hex-digit peer and swarm ids, `peer_count` 30, a
/// decimal transaction id, written by the tracker's own request encoder.
fn loadgen_find() -> Vec<u8> {
    let request = Request {
        peer_id: PeerId::new(b"6c6f616467656e2d706565722d30303030303432").expect("40-byte id"),
        source: "198.51.100.1:6881".parse().expect("literal address"),
        kind: RequestKind::Find {
            swarm_id: SwarmId::new(b"7377726d2d3030303030303030303030303137").expect("40-byte id"),
            peer_num: Some(PeerNum {
                peer_count: Some(30),
                ..PeerNum::default()
            }),
            chunks: Vec::new(),
        },
    };
    let mut body = Vec::new();
    encode_request(&request, &TransactionId("1234567".into()), &mut body);
    body
}

/// The hot path's decoding (`decode_request_into` into a reused `Decoded`) with the scanner,
/// against the serde reference decoder it replaced, in one run: RFC 7846 example E5 and the
/// load generator's FIND.
fn scanner_vs_serde(c: &mut Criterion) {
    let source: SocketAddr = "198.51.100.1:6881".parse().expect("literal address");
    let limits = DecodeLimits::default();
    let find = loadgen_find();
    let mut group = c.benchmark_group("ppstp_decode_into");
    for (name, body) in [
        ("e5_find", examples::E5.as_bytes()),
        ("loadgen_find", &find[..]),
    ] {
        let mut out = Decoded::empty(source);
        group.bench_function(format!("{name}/scanner"), |b| {
            b.iter(|| decode_request_into(black_box(body), source, &limits, &mut out))
        });
        group.bench_function(format!("{name}/serde_reference"), |b| {
            b.iter(|| reference::decode_request_into(black_box(body), source, &limits, &mut out))
        });
    }
    group.finish();
}

fn find_answer(peers: usize) -> Response {
    let peers = (0..peers)
        .map(|i| {
            let addr = PeerAddr {
                addr: SocketAddr::from(([198, 51, 100, i as u8], 7000 + i as u16)),
                priority: 1,
                kind: AddrType::Reflexive,
                connection: Some(LinkKind::Wired),
                asn: Some(64496),
                ppsp_pp: true,
            };
            PeerInfo::new(
                PeerId::new(format!("{:040x}", i * 7919).as_bytes()).expect("short id"),
                PeerMode::Seeder,
                &[addr],
            )
        })
        .collect();
    Response::Ok(Answer {
        reflexive: None,
        swarm_results: vec![SwarmResult {
            swarm_id: SwarmId::new(b"6e0d1ac5b3c8a9f0e6c0b4f1a2d3e4f5a6b7c8d9").expect("short id"),
            result: ErrorCode::Ok,
            peers: Some(peers),
        }],
        stat: None,
    })
}

fn encode(c: &mut Criterion) {
    let answer = find_answer(30);
    let txid = TransactionId("12345".to_string());
    let mut out = Vec::with_capacity(8192);
    let mut group = c.benchmark_group("ppstp_encode");
    group.bench_function("find_answer_30_peers", |b| {
        b.iter(|| {
            out.clear();
            encode_response(black_box(&answer), Some(&txid), &mut out);
            out.len()
        })
    });
    // The encoder the server used before the hot-path one (same bytes), for a before/after
    // ratio from one run.
    group.bench_function("find_answer_30_peers_reference", |b| {
        b.iter(|| {
            out.clear();
            encode_reference::encode_response(black_box(&answer), Some(&txid), &mut out);
            out.len()
        })
    });
    group.finish();
}

fn framing(c: &mut Criterion) {
    const PIPELINED: usize = 32;
    let mut buf = Vec::new();
    for _ in 0..PIPELINED {
        buf.extend_from_slice(
            format!(
                "POST /ppsp HTTP/1.1\r\nHost: tracker.example.com\r\nContent-Type: application/ppsp-tracker+json\r\nContent-Length: {}\r\n\r\n{}",
                examples::E5.len(),
                examples::E5
            )
            .as_bytes(),
        );
    }
    let limits = HttpLimits::default();
    let mut group = c.benchmark_group("http_framing");
    group.throughput(Throughput::Elements(PIPELINED as u64));
    group.bench_function("pipelined_32_requests", |b| {
        b.iter(|| {
            let mut at = 0;
            let mut bodies = 0;
            while let Some(rest) = buf.get(at..) {
                match frame_request(black_box(rest), &limits) {
                    Framed::Request { body, consumed, .. } => {
                        bodies += body.len();
                        at += consumed;
                    }
                    Framed::Incomplete | Framed::Continue | Framed::Error(_) => break,
                }
            }
            bodies
        })
    });
    group.finish();
}

fn bep15(c: &mut Criterion) {
    use ppsp_tracker::protocol::bt_udp::tracker::AnnounceEvent;
    use ppsp_tracker::protocol::bt_udp::wire::{
        decode_request, write_announce_header, write_peer, AnnounceRequest, InfoHashes,
        ScrapeRequest,
    };
    let mut announce = Vec::new();
    AnnounceRequest {
        connection_id: 0x0123_4567_89ab_cdef,
        transaction_id: 7,
        info_hash: [0xab; 20],
        peer_id: *b"-AR1360-000000000001",
        downloaded: 0,
        left: 1 << 20,
        uploaded: 0,
        event: AnnounceEvent::None,
        ip_address: 0,
        key: 42,
        num_want: 50,
        port: 6881,
    }
    .encode(&mut announce);
    let hashes = [0xcd; 200];
    let mut scrape = Vec::new();
    ScrapeRequest {
        connection_id: 0x0123_4567_89ab_cdef,
        transaction_id: 8,
        info_hashes: InfoHashes::new(&hashes).expect("ten whole hashes"),
    }
    .encode(&mut scrape);
    let peers: Vec<SocketAddr> = (0..50u16)
        .map(|i| SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 6881 + i)))
        .collect();

    let mut group = c.benchmark_group("bep15");
    group.bench_function("decode_announce", |b| {
        b.iter(|| decode_request(black_box(&announce)).is_ok())
    });
    group.bench_function("decode_scrape_10_hashes", |b| {
        b.iter(|| decode_request(black_box(&scrape)).is_ok())
    });
    let mut out = Vec::with_capacity(1024);
    group.bench_function("encode_announce_answer_50_peers", |b| {
        b.iter(|| {
            out.clear();
            write_announce_header(&mut out, 7, 1800, 40, 10);
            for peer in black_box(&peers) {
                write_peer(&mut out, *peer);
            }
            out.len()
        })
    });
    group.finish();
}

criterion_group!(benches, decode, scanner_vs_serde, encode, framing, bep15);
criterion_main!(benches);
