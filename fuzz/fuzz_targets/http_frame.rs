//! Fuzzes HTTP/1.1 request framing the way the runtime drives it: frame, advance by
//! `consumed`, repeat. Nothing may panic, every framed request must lie inside the buffer and
//! use at least one byte, and framing the consumed prefix alone must give the same request
//! (the answer never depends on what follows in the buffer).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ppsp_tracker::protocol::http::{frame_request, write_response, Framed, HttpLimits};

fuzz_target!(|data: &[u8]| {
    // The first byte picks tight or default limits, so the limit paths are reached too.
    let (limits, data) = match data.split_first() {
        Some((&b, rest)) if b & 1 == 1 => (
            HttpLimits {
                max_head_bytes: 64 + usize::from(b),
                max_headers: usize::from(b >> 4),
                max_body_bytes: usize::from(b) * 4,
            },
            rest,
        ),
        Some((_, rest)) => (HttpLimits::default(), rest),
        None => (HttpLimits::default(), data),
    };
    let mut at = 0;
    let mut out = Vec::new();
    while let Some(rest) = data.get(at..) {
        match frame_request(rest, &limits) {
            Framed::Request {
                head,
                body,
                consumed,
            } => {
                assert!(consumed > 0 && consumed <= rest.len());
                assert!(body.len() <= limits.max_body_bytes && body.len() <= consumed);
                let alone = frame_request(&rest[..consumed], &limits);
                assert_eq!(
                    alone,
                    Framed::Request {
                        head,
                        body,
                        consumed
                    }
                );
                out.clear();
                write_response(&mut out, 200, "application/ppsp-tracker+json", body, head.keep_alive);
                assert!(out.ends_with(body));
                at += consumed;
            }
            Framed::Incomplete | Framed::Continue | Framed::Error(_) => break,
        }
    }
});
