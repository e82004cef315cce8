//! Client-side HTTP/1.1 reply framing: finds one complete reply (status, body, length) at the
//! start of a connection's input buffer. Only `Content-Length` bodies are accepted: every
//! tracker front-end answers with one, and a reply without it is counted as malformed.

use std::time::Duration;

/// Largest reply body accepted; a longer Content-Length is treated as malformed.
pub const MAX_BODY: usize = 4 << 20;

/// Result of framing the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply<'a> {
    Complete {
        status: u16,
        body: &'a [u8],
        consumed: usize,
        /// The server said `Connection: close`.
        close: bool,
        /// The `WWW-Authenticate` value, if any (a 401's challenge).
        www_authenticate: Option<&'a [u8]>,
        /// The `Retry-After` delay (RFC 9110 section 10.2.3) when given in seconds; an
        /// HTTP-date or an unreadable value is ignored (`None`).
        retry_after: Option<Duration>,
    },
    Incomplete,
    Malformed,
}

/// Frames the first reply in `buf`.
pub fn frame_reply(buf: &[u8]) -> Reply<'_> {
    let mut headers = [httparse::EMPTY_HEADER; 24];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Reply::Incomplete,
        Err(_) => return Reply::Malformed,
    };
    let status = match resp.code {
        Some(c) => c,
        None => return Reply::Malformed,
    };
    let mut len = None;
    let mut close = false;
    let mut www_authenticate = None;
    let mut retry_after = None;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let parsed = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok());
            match parsed {
                Some(n) if n <= MAX_BODY => len = Some(n),
                _ => return Reply::Malformed,
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            close = h.value.eq_ignore_ascii_case(b"close");
        } else if h.name.eq_ignore_ascii_case("www-authenticate") {
            www_authenticate = Some(h.value);
        } else if h.name.eq_ignore_ascii_case("retry-after") {
            retry_after = delay_seconds(h.value).map(Duration::from_secs);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Reply::Malformed;
        }
    }
    let len = match len {
        Some(n) => n,
        None => return Reply::Malformed,
    };
    let end = head_len + len;
    match buf.get(head_len..end) {
        Some(body) => Reply::Complete {
            status,
            body,
            consumed: end,
            close,
            www_authenticate,
            retry_after,
        },
        None => Reply::Incomplete,
    }
}

/// A `Retry-After` delay-seconds value (1*DIGIT, surrounding spaces allowed); `None` for an
/// HTTP-date or anything else.
fn delay_seconds(value: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(value).ok()?.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Longer than any sensible delay: saturate (the caller bounds it anyway).
    Some(text.parse::<u64>().unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_pipelined_replies_one_at_a_time() {
        let two = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 403 Forbidden\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbad";
        let Reply::Complete {
            status,
            body,
            consumed,
            close,
            ..
        } = frame_reply(two)
        else {
            panic!("first reply not framed")
        };
        assert_eq!((status, body, close), (200, &b"ok"[..], false));
        let rest = &two[consumed..];
        assert_eq!(
            frame_reply(rest),
            Reply::Complete {
                status: 403,
                body: b"bad",
                consumed: rest.len(),
                close: true,
                www_authenticate: None,
                retry_after: None,
            }
        );
    }

    #[test]
    fn reads_retry_after_in_seconds_only() {
        let shed = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        let Reply::Complete {
            status,
            retry_after,
            close,
            ..
        } = frame_reply(shed)
        else {
            panic!("503 not framed")
        };
        assert_eq!(
            (status, retry_after, close),
            (503, Some(Duration::from_secs(1)), true)
        );
        let date = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: Fri, 31 Dec 1999 23:59:59 GMT\r\nContent-Length: 0\r\n\r\n";
        let Reply::Complete { retry_after, .. } = frame_reply(date) else {
            panic!("503 not framed")
        };
        assert_eq!(retry_after, None, "an HTTP-date is ignored");
        assert_eq!(delay_seconds(b" 120 "), Some(120));
        assert_eq!(delay_seconds(b"-1"), None);
        assert_eq!(delay_seconds(b""), None);
        assert_eq!(delay_seconds(b"99999999999999999999999"), Some(u64::MAX));
    }

    #[test]
    fn waits_for_the_whole_body_and_refuses_bad_lengths() {
        assert_eq!(
            frame_reply(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab"),
            Reply::Incomplete
        );
        assert_eq!(
            frame_reply(b"HTTP/1.1 200 OK\r\nContent-"),
            Reply::Incomplete
        );
        assert_eq!(
            frame_reply(b"HTTP/1.1 200 OK\r\n\r\n"),
            Reply::Malformed,
            "no Content-Length"
        );
        assert_eq!(
            frame_reply(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"),
            Reply::Malformed
        );
        assert_eq!(frame_reply(b"garbage\r\n\r\n"), Reply::Malformed);
    }
}
