//! Fuzzes the parser of `Authorization: Digest ...` header values (RFC 7616 §3.4) that every
//! request to a Digest-authenticated PPSTP listener goes through before any secret is checked.
//! Nothing may panic, and no parsed parameter may be longer than the header value it came from
//! (unquoting only removes bytes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ppsp_tracker::server::digest_credentials_lengths;

fuzz_target!(|data: &[u8]| {
    if let Some(lengths) = digest_credentials_lengths(data) {
        for len in lengths {
            assert!(len <= data.len());
        }
        // Only a value that names the Digest scheme can parse.
        assert!(data.len() >= 6 && data[..6].eq_ignore_ascii_case(b"Digest"));
    }
});
