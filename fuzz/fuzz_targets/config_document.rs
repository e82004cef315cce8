//! Fuzzes the reader of signed overlay configuration documents (RFC 6940 §11.1), which a node
//! receives from its neighbours in ConfigUpdate requests (§6.5.4): size and UTF-8 checks,
//! locating the configuration element and its signature, the XML fields, the base64 signature
//! block, the certificates it carries. Nothing may panic; a document that is accepted must
//! carry a signature that verified, so random input is expected to be refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ppsp_tracker::overlay::security::configuration::parse_signed;
use ppsp_tracker::overlay::security::{CertCache, NodeIdDigest};

fuzz_target!(|data: &[u8]| {
    let mut certs = CertCache::new(NodeIdDigest::Sha256, 4);
    if let Ok(signed) = parse_signed(data, &mut certs) {
        // An accepted document keeps exactly the bytes it was read from.
        assert_eq!(signed.bytes, data);
    }
});
