//! Golden-vector, round-trip and rejection tests for the RELOAD codec.

use super::*;

/// The Ping request of /work/shared/reload-vectors.md, 96 bytes.
const GOLDEN_PING: &str = concat!(
    "d2454c4f9aa32b8d00010a64c0000000000000600102030405060708000000000012001300",
    "00",
    "011000112233445566778899aabbccddeeff",
    "021110a94a8fe5ccb19ba61c4c0873d391e987",
    "0017000000020000",
    "00000000",
    "0000000003000000",
    "00",
);

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn golden_cfg() -> WireConfig {
    WireConfig::new(OverlayHash::of_name("overlay.example.org"))
}

fn golden_message() -> Message {
    let header = ForwardingHeader {
        overlay: OverlayHash::of_name("overlay.example.org"),
        configuration_sequence: 1,
        ttl: 100,
        fragment: Fragment::UNFRAGMENTED,
        transaction_id: TransactionId(0x0102_0304_0506_0708),
        max_response_length: 0,
        via_list: vec![Destination::Node(NodeId([
            0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
            0xee, 0xff,
        ]))],
        destination_list: vec![Destination::Resource(ResourceId::hash_of(b"test"))],
        options: vec![],
    };
    Message::new(header, &Body::PingReq(PingReq::default())).unwrap()
}

#[test]
fn golden_ping_encodes_to_the_vector() {
    let bytes = golden_message().to_bytes().unwrap();
    assert_eq!(bytes.len(), 96);
    assert_eq!(bytes, hex(GOLDEN_PING));
}

#[test]
fn golden_ping_decodes_to_the_value() {
    let m = Message::decode(&hex(GOLDEN_PING), &golden_cfg()).unwrap();
    assert_eq!(m, golden_message());
    assert_eq!(
        m.contents.decode_body(&NoKinds).unwrap(),
        Body::PingReq(PingReq::default())
    );
}

#[test]
fn golden_ping_in_link_framing() {
    let message = hex(GOLDEN_PING);
    let frame = Frame::Data(FramedData {
        seq: 0,
        payload: message.clone(),
    });
    let bytes = frame.to_bytes().unwrap();
    assert_eq!(&bytes[..8], &[0x80, 0, 0, 0, 0, 0x00, 0x00, 0x60]);
    assert_eq!(&bytes[8..], &message[..]);
    match decode_frame(&bytes, DEFAULT_MAX_MESSAGE_SIZE).unwrap() {
        Decoded::Frame { frame: f, consumed } => {
            assert_eq!(consumed, 104);
            assert_eq!(f.to_owned_frame(), frame);
            let FrameRef::Data { seq, payload } = f else {
                panic!("expected a data frame")
            };
            assert_eq!(seq, 0);
            assert_eq!(
                Message::decode(payload, &golden_cfg()).unwrap(),
                golden_message()
            );
        }
        other => panic!("expected a frame, got {other:?}"),
    }
}

#[test]
fn golden_overlay_hash_is_the_last_four_sha1_bytes() {
    assert_eq!(
        OverlayHash::of_name("overlay.example.org"),
        OverlayHash(0x9aa3_2b8d)
    );
}

// --- rejections ------------------------------------------------------------------------------

fn decode_err(bytes: &[u8]) -> WireError {
    Message::decode(bytes, &golden_cfg()).unwrap_err()
}

fn golden_with(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut b = hex(GOLDEN_PING);
    f(&mut b);
    b
}

/// Encodes `m` (any header) and decodes it with the golden configuration.
fn reencode_err(m: &Message) -> WireError {
    decode_err(&m.to_bytes().unwrap())
}

#[test]
fn bad_relo_token_is_dropped_as_invalid() {
    let e = decode_err(&golden_with(|b| b[0] = 0x52));
    assert_eq!(e, WireError::BadReloToken(0x5245_4c4f));
    assert_eq!(e.reload_error_code(), ErrorCode::InvalidMessage);
    assert!(e.is_silent_drop());
}

#[test]
fn wrong_overlay_is_incompatible() {
    let e = decode_err(&golden_with(|b| b[7] ^= 1));
    assert!(matches!(e, WireError::WrongOverlay { .. }));
    assert_eq!(e.reload_error_code(), ErrorCode::IncompatibleWithOverlay);
    assert_eq!(e.reload_error_code().to_u16(), 0x06);
}

#[test]
fn other_version_is_incompatible() {
    let e = decode_err(&golden_with(|b| b[10] = 0x01));
    assert_eq!(e, WireError::UnsupportedVersion(1));
    assert_eq!(e.reload_error_code(), ErrorCode::IncompatibleWithOverlay);
}

#[test]
fn ttl_above_initial_ttl_is_ttl_exceeded() {
    let e = decode_err(&golden_with(|b| b[11] = 101));
    assert_eq!(e, WireError::TtlExceeded(101));
    assert_eq!(e.reload_error_code(), ErrorCode::TtlExceeded);
    assert_eq!(e.reload_error_code().to_u16(), 0x0a);
    // A stricter overlay configuration applies its own initial-ttl.
    let cfg = WireConfig {
        initial_ttl: 30,
        ..golden_cfg()
    };
    assert_eq!(
        Message::decode(&hex(GOLDEN_PING), &cfg),
        Err(WireError::TtlExceeded(100))
    );
}

#[test]
fn forwarding_a_ttl_zero_message_is_ttl_exceeded() {
    let mut m = golden_message();
    m.header.ttl = 0;
    let bytes = m.to_bytes().unwrap();
    // The destination accepts TTL 0 (§6.3.2: only a message not for this node is refused)...
    assert!(Message::decode(&bytes, &golden_cfg()).is_ok());
    // ...but a forwarding peer refuses it.
    let mut peeked = PeekedMessage::peek(&bytes, &golden_cfg()).unwrap();
    let e = peeked.header.prepare_forward(None).unwrap_err();
    assert_eq!(e.reload_error_code(), ErrorCode::TtlExceeded);
    let mut raw = bytes.clone();
    assert_eq!(
        forward::decrement_ttl_in_place(&mut raw),
        Err(WireError::TtlExceeded(0))
    );
}

#[test]
fn critical_forwarding_options_are_unsupported() {
    let mut m = golden_message();
    m.header.options.push(ForwardingOption {
        option_type: 1,
        flags: OptionFlags(OptionFlags::FORWARD_CRITICAL),
        value: vec![],
    });
    let bytes = m.to_bytes().unwrap();
    let mut peeked = PeekedMessage::peek(&bytes, &golden_cfg()).unwrap();
    let e = peeked.header.prepare_forward(None).unwrap_err();
    assert_eq!(e, WireError::UnsupportedForwardingOption(1));
    assert_eq!(
        e.reload_error_code(),
        ErrorCode::UnsupportedForwardingOption
    );
    // Forward-critical alone does not stop the destination.
    assert!(Message::decode(&bytes, &golden_cfg()).is_ok());

    m.header.options[0].flags = OptionFlags(OptionFlags::DESTINATION_CRITICAL);
    let e = reencode_err(&m);
    assert_eq!(e, WireError::UnsupportedForwardingOption(1));
    assert_eq!(e.reload_error_code().to_u16(), 0x07);
    // ...and destination-critical does not stop a forwarding peer.
    let bytes = m.to_bytes().unwrap();
    let mut peeked = PeekedMessage::peek(&bytes, &golden_cfg()).unwrap();
    assert!(peeked.header.prepare_forward(None).is_ok());
}

#[test]
fn critical_extension_is_unknown_extension() {
    let mut m = golden_message();
    m.contents.extensions.push(MessageExtension {
        extension_type: 1,
        critical: false,
        contents: vec![1, 2],
    });
    assert_eq!(
        Message::decode(&m.to_bytes().unwrap(), &golden_cfg()).unwrap(),
        m
    );
    m.contents.extensions[0].critical = true;
    let e = reencode_err(&m);
    assert_eq!(e, WireError::UnknownExtension(1));
    assert_eq!(e.reload_error_code(), ErrorCode::UnknownExtension);
    assert_eq!(e.reload_error_code().to_u16(), 0x0d);
}

#[test]
fn oversize_message_is_message_too_large() {
    let cfg = WireConfig {
        max_message_size: 95,
        ..golden_cfg()
    };
    let e = Message::decode(&hex(GOLDEN_PING), &cfg).unwrap_err();
    assert_eq!(e, WireError::MessageTooLarge { len: 96, max: 95 });
    assert_eq!(e.reload_error_code(), ErrorCode::MessageTooLarge);
    assert_eq!(e.reload_error_code().to_u16(), 0x0b);
    // A header declaring a huge length is refused from its first 20 bytes.
    let mut b = hex(GOLDEN_PING);
    b[16..20].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        decode_err(&b[..20]),
        WireError::MessageTooLarge { .. }
    ));
}

#[test]
fn length_field_must_match_the_input() {
    // Declared shorter than the bytes present.
    let e = decode_err(&golden_with(|b| b[19] = 0x5f));
    assert_eq!(e, WireError::LengthMismatch { field: "length" });
    assert_eq!(e.reload_error_code(), ErrorCode::InvalidMessage);
    // Declared longer than the bytes present.
    let e = decode_err(&golden_with(|b| b[19] = 0x61));
    assert_eq!(e, WireError::Truncated { field: "length" });
    // Via list length pointing into the destination list.
    let e = decode_err(&golden_with(|b| b[33] = 0x13));
    assert_eq!(e.reload_error_code(), ErrorCode::InvalidMessage);
    // Trailing byte after the security block, with a consistent length field.
    let e = decode_err(&golden_with(|b| {
        b.push(0);
        b[19] = 0x61;
    }));
    assert_eq!(e, WireError::LengthMismatch { field: "length" });
    // Body length that swallows the extensions length.
    let e = decode_err(&golden_with(|b| b[80] = 0x06));
    assert_eq!(e.reload_error_code(), ErrorCode::InvalidMessage);
}

#[test]
fn every_truncation_of_the_golden_vector_is_rejected() {
    let full = hex(GOLDEN_PING);
    for n in 0..full.len() {
        let e = Message::decode(&full[..n], &golden_cfg()).unwrap_err();
        assert_eq!(
            e.reload_error_code(),
            ErrorCode::InvalidMessage,
            "prefix {n}: {e:?}"
        );
        // A truncated message is also rejected by the forwarding peek.
        assert!(
            PeekedMessage::peek(&full[..n], &golden_cfg()).is_err(),
            "{n}"
        );
        // And the stream decoder waits for the rest instead of failing.
        let mut framed = Vec::new();
        framing::encode_data_frame(&mut framed, 0, &full).unwrap();
        assert!(matches!(
            decode_frame(&framed[..n], 5000),
            Ok(Decoded::Incomplete { .. })
        ));
    }
}

#[test]
fn declared_lengths_beyond_the_input_fail_before_allocating() {
    // StoreReq: resource "", replica 0, kind_data declaring 4 GiB over 2 bytes.
    let body = [0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 1, 2];
    assert_eq!(
        Body::decode(MessageCode::StoreReq, &body, &NoKinds),
        Err(WireError::Truncated {
            field: "StoreReq.kind_data"
        })
    );
    // message_body declaring 4 GiB inside a 96-byte message.
    let e = decode_err(&golden_with(|b| b[77..81].copy_from_slice(&[0xff; 4])));
    assert_eq!(
        e,
        WireError::Truncated {
            field: "message_body"
        }
    );
    // A data frame declaring 16 MiB is refused from its prefix alone.
    let frame = [0x80, 0, 0, 0, 1, 0xff, 0xff, 0xff];
    assert_eq!(
        decode_frame(&frame, 5000),
        Err(WireError::MessageTooLarge {
            len: 0xff_ffff,
            max: 5000
        })
    );
}

#[test]
fn unknown_message_code_and_fragments_are_invalid() {
    let e = decode_err(&golden_with(|b| b[76] = 0x05));
    assert_eq!(e, WireError::UnknownMessageCode(5));
    assert_eq!(e.reload_error_code(), ErrorCode::InvalidMessage);

    let e = decode_err(&golden_with(|b| b[12] = 0x80));
    assert_eq!(
        e,
        WireError::Fragmented {
            offset: 0,
            last: false
        }
    );
    // Fragments are still forwardable.
    let frag = golden_with(|b| b[12] = 0x80);
    assert!(PeekedMessage::peek(&frag, &golden_cfg()).is_ok());

    let e = decode_err(&golden_with(|b| b[12] = 0x40));
    assert_eq!(e, WireError::BadFragmentField(0x4000_0000));
    assert!(e.is_silent_drop());
}

#[test]
fn destination_list_rules_of_6_3_2_2() {
    // A resource in the via list.
    let mut m = golden_message();
    m.header.via_list = vec![Destination::Resource(ResourceId(vec![1]))];
    assert_eq!(
        reencode_err(&m),
        WireError::InvalidValue { field: "via_list" }
    );
    // A resource before the last destination entry.
    let mut m = golden_message();
    m.header
        .destination_list
        .push(Destination::Node(NodeId::WILDCARD));
    assert_eq!(
        reencode_err(&m),
        WireError::InvalidValue {
            field: "destination_list"
        }
    );
    // Destination type 0 / 4, and a node entry of the wrong length.
    for patch in [[0x00u8, 0x10], [0x04, 0x10], [0x01, 0x0f]] {
        let e = decode_err(&golden_with(|b| b[38..40].copy_from_slice(&patch)));
        assert_eq!(
            e.reload_error_code(),
            ErrorCode::InvalidMessage,
            "{patch:?}"
        );
    }
}

#[test]
fn unknown_kinds_are_listed_for_error_unknown_kind() {
    let req = StoreReq {
        resource: ResourceId::hash_of(b"swarm"),
        replica_number: 0,
        kind_data: vec![
            StoreKindData {
                kind: KindId(7),
                generation_counter: 0,
                values: vec![StoredData {
                    storage_time: 1,
                    lifetime: 60,
                    value: StoredDataValue::Single(DataValue {
                        exists: true,
                        value: vec![1],
                    }),
                    signature: Signature::placeholder(),
                }],
            },
            StoreKindData {
                kind: KindId(1),
                generation_counter: 3,
                values: vec![],
            },
            StoreKindData {
                kind: KindId(9),
                generation_counter: 0,
                values: vec![],
            },
        ],
    };
    let bytes = Body::StoreReq(req.clone()).to_bytes().unwrap();
    let e = Body::decode(MessageCode::StoreReq, &bytes, strategies::test_kinds()).unwrap_err();
    assert_eq!(e, WireError::UnknownKinds(vec![KindId(7), KindId(9)]));
    assert_eq!(e.reload_error_code(), ErrorCode::UnknownKind);
    let answer = ErrorResponse::from_wire_error(&e);
    assert_eq!(answer.error_code.to_u16(), 0x0c);
    assert_eq!(
        body::decode_unknown_kinds(&answer.error_info).unwrap(),
        vec![KindId(7), KindId(9)]
    );
    // With every kind known it decodes.
    let all = |k: KindId| (k.0 < 10).then_some(DataModel::SingleValue);
    assert_eq!(
        Body::decode(MessageCode::StoreReq, &bytes, &all).unwrap(),
        Body::StoreReq(req)
    );
}

#[test]
fn bodies_must_be_consumed_exactly() {
    let mut b = Body::PingAns(PingAns {
        response_id: 1,
        time: 2,
    })
    .to_bytes()
    .unwrap();
    b.push(0);
    assert_eq!(
        Body::decode(MessageCode::PingAns, &b, &NoKinds),
        Err(WireError::LengthMismatch {
            field: "message_body"
        })
    );
    assert!(Body::decode(MessageCode::LeaveAns, &[0], &NoKinds).is_err());
    // A Boolean other than 0/1.
    let mut rq = Body::RouteQueryReq(RouteQueryReq {
        send_update: true,
        destination: Destination::Node(NodeId::default()),
        overlay_specific_data: vec![],
    })
    .to_bytes()
    .unwrap();
    rq[0] = 2;
    assert_eq!(
        Body::decode(MessageCode::RouteQueryReq, &rq, &NoKinds),
        Err(WireError::InvalidValue {
            field: "RouteQueryReq.send_update"
        })
    );
    // A NodeId list whose length is not a multiple of 16.
    let mut upd = vec![0, 0, 0, 1, 2, 0, 15];
    upd.extend_from_slice(&[0; 15]);
    assert_eq!(
        Body::decode(MessageCode::UpdateReq, &upd, &NoKinds),
        Err(WireError::LengthMismatch {
            field: "ChordUpdate.predecessors"
        })
    );
    // Reserved candidate type 3.
    let mut att = AttachReqAns {
        ufrag: vec![],
        password: vec![],
        role: b"passive".to_vec(),
        candidates: vec![IceCandidate {
            addr_port: IpAddressPort::Ip("192.0.2.1:6084".parse().unwrap()),
            overlay_link: OverlayLinkType::TLS_TCP_FH_NO_ICE,
            foundation: vec![],
            priority: 1,
            candidate_type: CandidateType::Host,
            extensions: vec![],
        }],
        send_update: false,
    };
    let mut bytes = Body::AttachReq(att.clone()).to_bytes().unwrap();
    // ufrag(1) password(1) role(8) candidates-len(2) addr(8) link(1) foundation(1) prio(4)
    let type_at = 1 + 1 + 8 + 2 + 8 + 1 + 1 + 4;
    assert_eq!(bytes[type_at], 1);
    bytes[type_at] = 3;
    assert_eq!(
        Body::decode(MessageCode::AttachReq, &bytes, &NoKinds),
        Err(WireError::InvalidValue { field: "CandType" })
    );
    att.send_update = true;
    assert_eq!(
        Body::decode(
            MessageCode::AttachAns,
            &Body::AttachAns(att.clone()).to_bytes().unwrap(),
            &NoKinds
        ),
        Ok(Body::AttachAns(att))
    );
}

#[test]
fn rfc_ip_address_port_example_encodes_exactly() {
    // §6.3.1.1: 192.0.2.1 port 6084 is 01 06 c0 00 02 01 17 c4.
    let a = IpAddressPort::Ip("192.0.2.1:6084".parse().unwrap());
    let cand = IceCandidate {
        addr_port: a,
        overlay_link: OverlayLinkType::TLS_TCP_FH_NO_ICE,
        foundation: vec![],
        priority: 0,
        candidate_type: CandidateType::Host,
        extensions: vec![],
    };
    let att = Body::AttachReq(AttachReqAns {
        ufrag: vec![],
        password: vec![],
        role: vec![],
        candidates: vec![cand],
        send_update: false,
    });
    let bytes = att.to_bytes().unwrap();
    assert_eq!(
        &bytes[5..13],
        &[0x01, 0x06, 0xc0, 0x00, 0x02, 0x01, 0x17, 0xc4]
    );
}

#[test]
fn error_codes_match_the_iana_table() {
    let table = [
        (ErrorCode::Forbidden, 0x02),
        (ErrorCode::NotFound, 0x03),
        (ErrorCode::RequestTimeout, 0x04),
        (ErrorCode::GenerationCounterTooLow, 0x05),
        (ErrorCode::IncompatibleWithOverlay, 0x06),
        (ErrorCode::UnsupportedForwardingOption, 0x07),
        (ErrorCode::DataTooLarge, 0x08),
        (ErrorCode::DataTooOld, 0x09),
        (ErrorCode::TtlExceeded, 0x0a),
        (ErrorCode::MessageTooLarge, 0x0b),
        (ErrorCode::UnknownKind, 0x0c),
        (ErrorCode::UnknownExtension, 0x0d),
        (ErrorCode::ResponseTooLarge, 0x0e),
        (ErrorCode::ConfigTooOld, 0x0f),
        (ErrorCode::ConfigTooNew, 0x10),
        (ErrorCode::InProgress, 0x11),
        (ErrorCode::ExpA, 0x12),
        (ErrorCode::ExpB, 0x13),
        (ErrorCode::InvalidMessage, 0x14),
    ];
    for (code, v) in table {
        assert_eq!(code.to_u16(), v);
        assert_eq!(ErrorCode::from_u16(v), code);
        assert!(code.name().starts_with("Error_"));
    }
    assert_eq!(ErrorCode::from_u16(1), ErrorCode::Other(1));
    assert_eq!(ErrorCode::from_u16(0x8000), ErrorCode::Other(0x8000));
}

// --- forwarding ------------------------------------------------------------------------------

#[test]
fn forwarding_rewrites_header_and_copies_the_rest() {
    let bytes = hex(GOLDEN_PING);
    let mut peeked = PeekedMessage::peek(&bytes, &golden_cfg()).unwrap();
    assert_eq!(peeked.rest(), &bytes[75..]);
    let prev = NodeId::from_u128(42);
    peeked.header.prepare_forward(Some(prev)).unwrap();
    let out = peeked.to_bytes().unwrap();
    assert_eq!(out.len(), 96 + 18);
    let m = Message::decode(&out, &golden_cfg()).unwrap();
    assert_eq!(m.header.ttl, 99);
    assert_eq!(m.header.via_list.last(), Some(&Destination::Node(prev)));
    assert_eq!(m.contents, golden_message().contents);
    assert_eq!(m.security, golden_message().security);
    let resp = m.header.response_header(100);
    assert_eq!(
        resp.destination_list,
        vec![
            Destination::Node(prev),
            golden_message().header.via_list[0].clone()
        ]
    );
    assert_eq!(resp.transaction_id, m.header.transaction_id);
    assert!(resp.via_list.is_empty());

    let mut raw = bytes.clone();
    assert_eq!(forward::peek_ttl(&raw), Ok(100));
    assert_eq!(forward::decrement_ttl_in_place(&mut raw), Ok(99));
    assert_eq!(Message::decode(&raw, &golden_cfg()).unwrap().header.ttl, 99);
}

// --- framing ---------------------------------------------------------------------------------

#[test]
fn frames_stream_byte_by_byte() {
    let mut stream = Vec::new();
    framing::encode_data_frame(&mut stream, 7, b"hello").unwrap();
    Ack {
        ack_seq: 7,
        received_bitmap: 0x8000_0002,
    }
    .encode_into(&mut stream);
    framing::encode_data_frame(&mut stream, 8, b"").unwrap();

    let mut frames = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    for &b in &stream {
        buf.push(b);
        loop {
            match decode_frame(&buf, 100).unwrap() {
                Decoded::Incomplete { needed } => {
                    assert!(needed > buf.len());
                    break;
                }
                Decoded::Frame { frame, consumed } => {
                    frames.push(frame.to_owned_frame());
                    buf.drain(..consumed);
                }
            }
        }
    }
    assert!(buf.is_empty());
    assert_eq!(
        frames,
        vec![
            Frame::Data(FramedData {
                seq: 7,
                payload: b"hello".to_vec()
            }),
            Frame::Ack(Ack {
                ack_seq: 7,
                received_bitmap: 0x8000_0002
            }),
            Frame::Data(FramedData {
                seq: 8,
                payload: vec![]
            }),
        ]
    );
}

#[test]
fn ack_frame_layout_is_nine_bytes() {
    let mut out = Vec::new();
    Ack {
        ack_seq: 0x0102_0304,
        received_bitmap: 0xa0b0_c0d0,
    }
    .encode_into(&mut out);
    assert_eq!(out, [0x81, 1, 2, 3, 4, 0xa0, 0xb0, 0xc0, 0xd0]);
}

#[test]
fn unknown_frame_type_breaks_the_link() {
    let e = decode_frame(&[0x7f, 0, 0], 100).unwrap_err();
    assert_eq!(e, WireError::UnknownFrameType(0x7f));
    assert!(e.is_silent_drop());
    assert_eq!(
        decode_frame(&[], 100),
        Ok(Decoded::Incomplete { needed: 1 })
    );
}

#[test]
fn ack_tracker_marks_recent_sequence_numbers() {
    let mut t = AckTracker::new();
    assert_eq!(t.on_data(10).received_bitmap, 0);
    assert_eq!(t.on_data(11).received_bitmap, 1 << 1);
    // 13: 11 and 10 were received (N-M = 2 and 3); 12 was lost.
    assert_eq!(t.on_data(13).received_bitmap, (1 << 2) | (1 << 3));
    let a = AckTracker::new().on_data(0);
    assert!(a.acknowledges(0));
    let mut t2 = AckTracker::new();
    t2.on_data(10);
    t2.on_data(11);
    let a = t2.on_data(13);
    assert!(a.acknowledges(13) && a.acknowledges(11) && a.acknowledges(10));
    assert!(!a.acknowledges(12) && !a.acknowledges(14) && !a.acknowledges(9));
    // Far ahead: nothing within 31.
    assert_eq!(t.on_data(100).received_bitmap, 0);
    // Only the 32 most recent are remembered.
    let mut t = AckTracker::new();
    for s in 0..40 {
        t.on_data(s);
    }
    let a = t.on_data(40);
    assert_eq!(a.ack_seq, 40);
    // 9..=39 are within N-31..N-1 and remembered (8..=39 are the last 32 received).
    assert_eq!(a.received_bitmap, !1u32);
}

// --- property tests --------------------------------------------------------------------------

mod props {
    use super::super::strategies::{self, test_kinds};
    use super::super::*;
    use proptest::prelude::*;

    fn cfg_for(m: &Message) -> WireConfig {
        WireConfig {
            overlay: m.header.overlay,
            max_message_size: u32::MAX,
            initial_ttl: 100,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn every_body_round_trips(body in strategies::body()) {
            let bytes = body.to_bytes().unwrap();
            prop_assert_eq!(Body::decode(body.code(), &bytes, test_kinds()), Ok(body));
        }

        #[test]
        fn every_message_round_trips(m in strategies::message()) {
            let bytes = m.to_bytes().unwrap();
            let d = Message::decode(&bytes, &cfg_for(&m)).unwrap();
            prop_assert_eq!(&d, &m);
            let body = d.contents.decode_body(test_kinds()).unwrap();
            prop_assert_eq!(&body.to_bytes().unwrap(), &m.contents.body);
            // The forwarding peek sees the same header and re-emits identical bytes.
            let p = PeekedMessage::peek(&bytes, &cfg_for(&m)).unwrap();
            prop_assert_eq!(&p.header, &m.header);
            prop_assert_eq!(p.to_bytes().unwrap(), bytes);
        }

        #[test]
        fn truncated_messages_are_rejected(m in strategies::message(), cut in any::<prop::sample::Index>()) {
            let bytes = m.to_bytes().unwrap();
            let n = cut.index(bytes.len());
            prop_assert!(Message::decode(&bytes[..n], &cfg_for(&m)).is_err());
        }

        #[test]
        fn truncated_bodies_are_rejected_or_differ(body in strategies::body(), cut in any::<prop::sample::Index>()) {
            let bytes = body.to_bytes().unwrap();
            if !bytes.is_empty() {
                let n = cut.index(bytes.len());
                // Exp bodies are opaque, so any prefix is a (different) valid body.
                if let Ok(d) = Body::decode(body.code(), &bytes[..n], test_kinds()) {
                    prop_assert_ne!(d, body);
                }
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300), code in 0usize..MessageCode::ALL.len()) {
            let code = MessageCode::ALL[code];
            if let Ok(b) = Body::decode(code, &data, test_kinds()) {
                let again = b.to_bytes().unwrap();
                // One canonical encoding per value.
                prop_assert_eq!(&again, &data);
                prop_assert_eq!(Body::decode(code, &again, test_kinds()), Ok(b));
            }
            let cfg = WireConfig::new(OverlayHash(0x9aa3_2b8d));
            if let Ok(m) = Message::decode(&data, &cfg) {
                prop_assert_eq!(&m.to_bytes().unwrap(), &data);
                prop_assert_eq!(Message::decode(&data, &cfg), Ok(m));
            }
            let _ = decode_frame(&data, 5000);
        }

        #[test]
        fn mutated_golden_vectors_never_panic(flips in proptest::collection::vec((0usize..96, any::<u8>()), 1..4)) {
            let mut b = super::hex(super::GOLDEN_PING);
            for (at, v) in flips {
                b[at] = v;
            }
            let cfg = super::golden_cfg();
            if let Ok(m) = Message::decode(&b, &cfg) {
                prop_assert_eq!(&m.to_bytes().unwrap(), &b);
                if let Ok(body) = m.contents.decode_body(test_kinds()) {
                    prop_assert_eq!(&body.to_bytes().unwrap(), &m.contents.body);
                }
            }
            if let Ok(p) = PeekedMessage::peek(&b, &cfg) {
                prop_assert_eq!(&p.to_bytes().unwrap(), &b);
            }
        }

        #[test]
        fn mutated_messages_are_canonical_or_rejected(
            m in strategies::message(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            let mut b = m.to_bytes().unwrap();
            for (at, v) in flips {
                let i = at.index(b.len());
                b[i] = v;
            }
            let cfg = cfg_for(&m);
            if let Ok(d) = Message::decode(&b, &cfg) {
                prop_assert_eq!(&d.to_bytes().unwrap(), &b);
                if let Ok(body) = d.contents.decode_body(test_kinds()) {
                    prop_assert_eq!(&body.to_bytes().unwrap(), &d.contents.body);
                }
            }
            if let Ok(p) = PeekedMessage::peek(&b, &cfg) {
                prop_assert_eq!(&p.to_bytes().unwrap(), &b);
            }
        }

        #[test]
        fn frames_round_trip(seq in any::<u32>(), payload in proptest::collection::vec(any::<u8>(), 0..200), ack in any::<(u32, u32)>()) {
            let data = Frame::Data(FramedData { seq, payload });
            let ack = Frame::Ack(Ack { ack_seq: ack.0, received_bitmap: ack.1 });
            for f in [data, ack] {
                let bytes = f.to_bytes().unwrap();
                match decode_frame(&bytes, 200).unwrap() {
                    Decoded::Frame { frame, consumed } => {
                        prop_assert_eq!(consumed, bytes.len());
                        prop_assert_eq!(frame.to_owned_frame(), f);
                    }
                    Decoded::Incomplete { .. } => prop_assert!(false, "incomplete"),
                }
            }
        }
    }
}

#[test]
fn response_header_copies_only_response_copy_options_with_flags_cleared() {
    let mut req = ForwardingHeader::new_request(
        OverlayHash(1),
        7,
        100,
        TransactionId(9),
        vec![Destination::Node(NodeId::from_u128(5))],
    );
    req.max_response_length = 4000;
    req.via_list = vec![
        Destination::Node(NodeId::from_u128(1)),
        Destination::Compressed(0x8001),
    ];
    req.options = vec![
        ForwardingOption {
            option_type: 1,
            flags: OptionFlags(OptionFlags::RESPONSE_COPY | OptionFlags::FORWARD_CRITICAL),
            value: vec![1],
        },
        ForwardingOption {
            option_type: 2,
            flags: OptionFlags(0),
            value: vec![2],
        },
    ];
    let resp = req.response_header(100);
    assert_eq!(resp.configuration_sequence, 7);
    assert_eq!(resp.max_response_length, 0);
    assert_eq!(
        resp.destination_list,
        vec![
            Destination::Compressed(0x8001),
            Destination::Node(NodeId::from_u128(1))
        ]
    );
    assert_eq!(
        resp.options,
        vec![ForwardingOption {
            option_type: 1,
            flags: OptionFlags(0),
            value: vec![1],
        }]
    );
    assert_eq!(ResourceId::from_u128(77).to_u128(), Some(77));
    assert_eq!(ResourceId(vec![1, 2]).to_u128(), None);
}

#[test]
fn message_signature_input_follows_6_3_4() {
    let input = golden_message().signature_input().unwrap();
    let golden = hex(GOLDEN_PING);
    let mut expect = Vec::new();
    expect.extend_from_slice(&golden[4..8]); // overlay
    expect.extend_from_slice(&golden[20..28]); // transaction_id
    expect.extend_from_slice(&golden[75..87]); // MessageContents
    expect.extend_from_slice(&[0x03, 0x00, 0x00]); // SignerIdentity none
    assert_eq!(input, expect);
}

#[test]
fn unknown_kind_list_is_capped_at_what_error_info_can_carry() {
    // A Fetch naming 100 distinct unknown kinds.
    let fetch = FetchReq {
        resource: ResourceId(vec![1]),
        specifiers: (0..100)
            .map(|k| StoredDataSpecifier {
                kind: KindId(1000 + k),
                generation: 0,
                model: ModelSpecifier::SingleValue,
            })
            .collect(),
    };
    let bytes = Body::FetchReq(fetch).to_bytes().unwrap();
    let e = Body::decode(MessageCode::FetchReq, &bytes, &NoKinds).unwrap_err();
    let WireError::UnknownKinds(listed) = &e else {
        panic!("expected UnknownKinds, got {e:?}")
    };
    assert_eq!(listed.len(), 63);
    assert_eq!(listed[0], KindId(1000));
    let info = ErrorResponse::from_wire_error(&e).error_info;
    assert_eq!(info.len(), 1 + 63 * 4);
    assert_eq!(body::decode_unknown_kinds(&info).unwrap().len(), 63);
}

#[test]
fn a_rejected_request_is_answered_from_its_peeked_header() {
    let mut m = golden_message();
    m.contents.extensions.push(MessageExtension {
        extension_type: 9,
        critical: true,
        contents: vec![],
    });
    let bytes = m.to_bytes().unwrap();
    let e = Message::decode(&bytes, &golden_cfg()).unwrap_err();
    let header = PeekedMessage::peek(&bytes, &golden_cfg()).unwrap().header;
    let answer = Message::response(
        &header,
        DEFAULT_INITIAL_TTL,
        &Body::Error(ErrorResponse::from_wire_error(&e)),
    )
    .unwrap();
    let back = Message::decode(&answer.to_bytes().unwrap(), &golden_cfg()).unwrap();
    assert_eq!(back.contents.code, MessageCode::Error);
    assert_eq!(
        back.header.transaction_id,
        TransactionId(0x0102_0304_0506_0708)
    );
    assert_eq!(
        back.header.destination_list,
        golden_message().header.via_list
    );
    let Body::Error(err) = back.contents.decode_body(&NoKinds).unwrap() else {
        panic!("expected an error body")
    };
    assert_eq!(err.error_code, ErrorCode::UnknownExtension);
    assert_eq!(err.error_info, b"unknown critical extension 9".to_vec());
}
