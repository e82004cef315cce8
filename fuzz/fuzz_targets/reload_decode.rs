//! Fuzz target for the RELOAD wire codec (RFC 6940): the TCP link framing stream decoder, the
//! whole-message decoder, the forwarding peek and every body decoder.
//!
//! Whatever decodes must re-encode to the exact input bytes and decode again to the same value
//! (the codec has one canonical encoding per value), and nothing may panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ppsp_tracker::overlay::wire::{
    decode_frame, Body, DataModel, Decoded, FrameRef, KindId, Message, MessageCode, OverlayHash,
    PeekedMessage, WireConfig,
};

/// Kinds whose data model the storage decoders can resolve: the tracker's two dictionary kinds
/// (protocols.md §3) and one kind of each model.
const KINDS: [(KindId, DataModel); 5] = [
    (KindId(0xf000_0101), DataModel::Dictionary),
    (KindId(0xf000_0102), DataModel::Dictionary),
    (KindId(1), DataModel::SingleValue),
    (KindId(2), DataModel::Array),
    (KindId(3), DataModel::Dictionary),
];

/// Accepts the overlay named in the input itself, so the fuzzer gets past the overlay check.
fn config_for(bytes: &[u8]) -> WireConfig {
    let overlay = bytes
        .get(4..8)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(0);
    WireConfig {
        overlay: OverlayHash(overlay),
        max_message_size: 1 << 20,
        initial_ttl: 255,
    }
}

fn check_body(code: MessageCode, bytes: &[u8]) {
    if let Ok(body) = Body::decode(code, bytes, &KINDS) {
        assert_eq!(body.code(), code);
        let again = body.to_bytes().expect("a decoded body re-encodes");
        assert_eq!(again, bytes, "body encoding is canonical");
        assert_eq!(Body::decode(code, &again, &KINDS).as_ref(), Ok(&body));
    }
}

fn check_message(bytes: &[u8]) {
    let cfg = config_for(bytes);
    if let Ok(peeked) = PeekedMessage::peek(bytes, &cfg) {
        let again = peeked.to_bytes().expect("a peeked message re-encodes");
        assert_eq!(again, bytes, "header encoding is canonical");
        let repeek = PeekedMessage::peek(&again, &cfg).expect("re-encoded header peeks");
        assert_eq!(repeek.header, peeked.header);
    }
    if let Ok(m) = Message::decode(bytes, &cfg) {
        let again = m.to_bytes().expect("a decoded message re-encodes");
        assert_eq!(again, bytes, "message encoding is canonical");
        assert_eq!(Message::decode(&again, &cfg).as_ref(), Ok(&m));
        check_body(m.contents.code, &m.contents.body);
    }
}

fuzz_target!(|data: &[u8]| {
    // A stream of link frames (RFC 6940 §6.6.2), each data frame carrying a message.
    let mut rest = data;
    while let Ok(Decoded::Frame { frame, consumed }) = decode_frame(rest, 1 << 20) {
        let owned = frame.to_owned_frame();
        let bytes = owned.to_bytes().expect("a decoded frame re-encodes");
        assert_eq!(bytes.as_slice(), &rest[..consumed]);
        if let FrameRef::Data { payload, .. } = frame {
            check_message(payload);
        }
        rest = &rest[consumed..];
    }

    // The input as one message.
    check_message(data);

    // The input as a body: the first byte picks the message code.
    if let Some((&pick, body)) = data.split_first() {
        let code = MessageCode::ALL[usize::from(pick) % MessageCode::ALL.len()];
        check_body(code, body);
    }
});
