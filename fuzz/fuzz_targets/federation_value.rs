//! Fuzz target: the decoders of the tracker usage's RELOAD values (CONTENT-REGISTRATION parts,
//! PEER-STATUS indexes, the live status answer and the dictionary key). Nothing may panic, the
//! peer bound holds, and whatever decodes re-encodes to a value that decodes to the same thing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ppsp_tracker::federation::value::{
    decode_live_status, decode_peer_status, decode_registration, encode_live_status,
    encode_peer_status, encode_registration, parse_content_key, valid_content_registration,
    valid_peer_status, MAX_PEERS_PER_VALUE,
};

fuzz_target!(|data: &[u8]| {
    // The first byte bounds the peer list, so the limit path is reached too.
    let (max_peers, data) = match data.split_first() {
        Some((&b, rest)) => (usize::from(b % 8), rest),
        None => (0, data),
    };
    if let Ok(reg) = decode_registration(data, max_peers) {
        assert!(reg.peers.len() <= max_peers);
        assert!(reg.part < reg.parts);
        let parts = encode_registration(reg.version, &reg.content_name, &reg.peers, usize::MAX);
        assert_eq!(parts.len(), 1);
        let again = decode_registration(&parts[0], MAX_PEERS_PER_VALUE).expect("re-encoded part");
        assert_eq!(again.peers, reg.peers);
        assert_eq!(again.content_name, reg.content_name);
        assert_eq!(again.version, reg.version);
    }
    if let Ok(node) = decode_peer_status(data) {
        assert_eq!(encode_peer_status(node), data);
    }
    if let Ok(status) = decode_live_status(data) {
        let bytes = encode_live_status(status.as_ref());
        assert_eq!(decode_live_status(&bytes), Ok(status));
    }
    if let Some((node, part)) = parse_content_key(data) {
        assert_eq!(
            ppsp_tracker::federation::value::content_key(node, part),
            data
        );
    }
    let split = data.len().min(18);
    let _ = valid_content_registration(&data[..split], &data[split..], max_peers);
    let split = data.len().min(16);
    let _ = valid_peer_status(&data[..split], &data[split..]);
});
