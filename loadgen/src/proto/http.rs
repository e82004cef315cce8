//! Client-side HTTP/1.1 reply framing: finds one complete reply (status, body, length) at the
//! start of a connection's input buffer. Only `Content-Length` bodies are accepted: every
//! tracker front-end answers with one, and a reply without it is counted as malformed.

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
        },
        None => Reply::Incomplete,
    }
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
            }
        );
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
