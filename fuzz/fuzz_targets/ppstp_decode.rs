//! Fuzzes PPSTP request and response decoding. Nothing may panic; the request scanner must give
//! the same outcome as the serde reference decoder (request, error code, transaction id), with
//! default limits and with tight ones; a request that decodes must survive encode_request ->
//! decode_request unchanged, and its answer must decode again.
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use ppsp_tracker::engine::Response;
use ppsp_tracker::protocol::ppstp::{
    decode_request, decode_response, encode_request, encode_response, reference, DecodeLimits,
};

fuzz_target!(|data: &[u8]| {
    let source = SocketAddr::from(([192, 0, 2, 1], 6881));
    let limits = DecodeLimits::default();
    let _ = decode_response(data);
    if let Err(e) = reference::agree(data, source) {
        panic!("{e}");
    }
    let mut out = Vec::new();
    match decode_request(data, source, &limits) {
        Ok(decoded) => {
            encode_request(&decoded.request, &decoded.transaction_id, &mut out);
            let again = decode_request(&out, source, &limits);
            assert_eq!(again.as_ref(), Ok(&decoded));
        }
        Err(e) => {
            encode_response(&Response::Err(e.code), e.transaction_id.as_ref(), &mut out);
            let answer = decode_response(&out).expect("our own error answer decodes");
            assert_eq!(answer.error_code, e.code);
            assert_eq!(answer.transaction_id, e.transaction_id);
        }
    }
});
