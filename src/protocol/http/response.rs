//! The HTTP/1.1 response writer: status line, `Content-Type`, an exact `Content-Length`, and
//! `Connection: close` when the connection ends after this answer.

/// The reason phrases of the status codes answered (RFC 9110 §15), and their whole status
/// lines, precomputed.
macro_rules! status_table {
    ($($code:literal $reason:literal,)*) => {
        /// The reason phrase for a status code (RFC 9110 §15). Unknown codes get an empty
        /// phrase, which RFC 9112 §4 allows.
        pub fn reason_phrase(status: u16) -> &'static str {
            match status {
                $($code => $reason,)*
                _ => "",
            }
        }

        /// `HTTP/1.1 <code> <reason>\r\n` for a status of the table.
        fn known_status_line(status: u16) -> Option<&'static [u8]> {
            match status {
                $($code => Some(concat!("HTTP/1.1 ", $code, " ", $reason, "\r\n").as_bytes()),)*
                _ => None,
            }
        }
    };
}

status_table! {
    100 "Continue",
    200 "OK",
    201 "Created",
    202 "Accepted",
    204 "No Content",
    301 "Moved Permanently",
    302 "Found",
    304 "Not Modified",
    400 "Bad Request",
    401 "Unauthorized",
    403 "Forbidden",
    404 "Not Found",
    405 "Method Not Allowed",
    408 "Request Timeout",
    411 "Length Required",
    413 "Content Too Large",
    414 "URI Too Long",
    415 "Unsupported Media Type",
    429 "Too Many Requests",
    431 "Request Header Fields Too Large",
    500 "Internal Server Error",
    501 "Not Implemented",
    503 "Service Unavailable",
    505 "HTTP Version Not Supported",
}

/// The status line, `Content-Type` and `Allow` of an answer: the part [`write_answer`] and
/// [`begin_answer`] share.
fn write_head_start(out: &mut Vec<u8>, head: &ResponseHead<'_>) {
    // Three digits always: a status outside 100..=999 would make an invalid status line.
    let status = head.status.clamp(100, 999);
    match known_status_line(status) {
        Some(line) => out.extend_from_slice(line),
        None => {
            out.extend_from_slice(b"HTTP/1.1 ");
            out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
            out.extend_from_slice(b" \r\n");
        }
    }
    if !head.content_type.is_empty() {
        out.extend_from_slice(b"Content-Type: ");
        out.extend_from_slice(head.content_type.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(allow) = head.allow {
        out.extend_from_slice(b"Allow: ");
        out.extend_from_slice(allow.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// `Connection: close` when the connection ends after this answer, `Connection: keep-alive`
/// when an HTTP/1.0 client's connection stays open.
fn write_connection(out: &mut Vec<u8>, head: &ResponseHead<'_>) {
    if !head.keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if head.http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
}

/// Appends a complete HTTP/1.1 response with a Content-Length to `out`.
///
/// An empty `content_type` leaves the `Content-Type` header out. The body is copied after the
/// head; `Content-Length` is always its exact length.
pub fn write_response(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    body: &[u8],
    keep_alive: bool,
) {
    write_answer(
        out,
        &ResponseHead {
            status,
            content_type,
            allow: None,
            keep_alive,
            http10: false,
            head_only: false,
            extra: b"",
        },
        body,
    );
}

/// The head of an answer, as [`write_answer`] writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseHead<'a> {
    /// Status code; clamped to three digits.
    pub status: u16,
    /// `Content-Type`, left out when empty.
    pub content_type: &'a str,
    /// `Allow` (RFC 9110 §10.2.1), which a 405 answer must carry (§15.5.6).
    pub allow: Option<&'a str>,
    /// False adds `Connection: close`.
    pub keep_alive: bool,
    /// The request was HTTP/1.0: a connection kept open is announced with `Connection:
    /// keep-alive`, without which an HTTP/1.0 client takes the answer as the last one (RFC
    /// 9112 §9.3 and Appendix C.2.2).
    pub http10: bool,
    /// The answer to a HEAD request (RFC 9110 §9.3.2): the same header fields, including the
    /// `Content-Length` the body would have, and no body.
    pub head_only: bool,
    /// Further header lines, each ending in CRLF (a `WWW-Authenticate` challenge, RFC 9110
    /// §11.6.1); written as they are.
    pub extra: &'a [u8],
}

/// Appends a complete HTTP/1.1 response to `out`: status line, `Content-Type`, `Allow`, an
/// exact `Content-Length`, `Connection: close` when the connection ends, and the body unless
/// `head.head_only`.
pub fn write_answer(out: &mut Vec<u8>, head: &ResponseHead<'_>, body: &[u8]) {
    out.reserve(128 + head.content_type.len() + body.len());
    write_head_start(out, head);
    out.extend_from_slice(b"Content-Length: ");
    out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    write_connection(out, head);
    out.extend_from_slice(head.extra);
    out.extend_from_slice(b"\r\n");
    if !head.head_only {
        out.extend_from_slice(body);
    }
}

/// An answer being written in place by [`begin_answer`]: its head is in the output already,
/// with room for `digits` digits of the `Content-Length`, and its body follows at `body_at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnswerInPlace {
    /// Where the `Content-Length` digits go.
    len_at: usize,
    /// Digits reserved there.
    digits: usize,
    /// Where the body starts.
    body_at: usize,
    head_only: bool,
}

/// Appends the head of an answer to `out` with room for a `digits_hint`-digit
/// `Content-Length` (1..=20, clamped), so that the caller writes the body straight after it
/// and [`finish_answer`] fills the length in: the body is written once, never copied. The
/// bytes are those [`write_answer`] writes for the same head and body.
pub fn begin_answer(
    out: &mut Vec<u8>,
    head: &ResponseHead<'_>,
    digits_hint: usize,
) -> AnswerInPlace {
    let digits = digits_hint.clamp(1, 20);
    out.reserve(128 + head.content_type.len() + head.extra.len());
    write_head_start(out, head);
    out.extend_from_slice(b"Content-Length: ");
    let len_at = out.len();
    out.extend_from_slice(&b"00000000000000000000"[..digits]);
    out.extend_from_slice(b"\r\n");
    write_connection(out, head);
    out.extend_from_slice(head.extra);
    out.extend_from_slice(b"\r\n");
    AnswerInPlace {
        len_at,
        digits,
        body_at: out.len(),
        head_only: head.head_only,
    }
}

/// Completes an answer begun by [`begin_answer`]: the body is everything written to `out`
/// after the head. Fills in its exact `Content-Length` (moving the body only when the length
/// has another number of digits than reserved) and drops the body of a HEAD answer. Returns
/// the number of digits used, the hint for the next answer.
pub fn finish_answer(out: &mut Vec<u8>, answer: AnswerInPlace) -> usize {
    let body_len = out.len().saturating_sub(answer.body_at);
    let mut num = itoa::Buffer::new();
    let digits = num.format(body_len).as_bytes();
    let (at, reserved) = (answer.len_at, answer.digits);
    if digits.len() > reserved {
        let extra = digits.len() - reserved;
        out.splice(at..at, std::iter::repeat(b'0').take(extra));
    } else if digits.len() < reserved {
        out.drain(at..at + reserved - digits.len());
    }
    out[at..at + digits.len()].copy_from_slice(digits);
    if answer.head_only {
        let body_at = answer.body_at + digits.len() - reserved;
        out.truncate(body_at);
    }
    digits.len()
}
