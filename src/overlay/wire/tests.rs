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
