//! HTTP/1.1 request framing shared by every HTTP front-end (PPSTP, and the BitTorrent HTTP
//! tracker): one request at a time out of a connection's input buffer, with limits, plus the
//! response writer. Sans-IO: the runtime owns the socket and the buffers.
//!
//! The runtime appends received bytes to a connection buffer and calls [`frame_request`] in a
//! loop: each [`Framed::Request`] borrows its head and body from the buffer and says how many
//! bytes it used, so pipelined requests are taken one after another by advancing the buffer by
//! `consumed`. [`Framed::Incomplete`] asks for more bytes; [`Framed::Error`] means the
//! connection is answered with [`HttpError::status`] and closed.
//!
//! Framing rules (RFC 9112, the current text of HTTP/1.1):
//! - The head is parsed with `httparse` into a header array on the stack: nothing is allocated
//!   per request. At most [`MAX_HEADER_SLOTS`] headers are ever looked at.
//! - A body is delimited by `Content-Length` only. `Transfer-Encoding` (chunked bodies) is not
//!   taken: 411, asking the client to send a length instead (RFC 9112 §6.3 lets a server refuse
//!   it). A duplicate, list-valued or non-numeric `Content-Length` is 400 (RFC 9112 §6.3 item
//!   5). POST, PUT and PATCH without a length are 411 (RFC 9110 §15.5.12); any other method
//!   without a length has an empty body (RFC 9112 §6.3 item 7).
//! - A length over [`HttpLimits::max_body_bytes`] is 413 as soon as the head is complete, before
//!   any of the body has to arrive. A head that is not complete within
//!   [`HttpLimits::max_head_bytes`], or with more than [`HttpLimits::max_headers`] lines, is 431.
//! - Keep-alive: HTTP/1.1 keeps the connection unless `Connection: close`; HTTP/1.0 closes it
//!   unless `Connection: keep-alive` (RFC 9112 §9.3).
//! - `Expect: 100-continue` (RFC 9110 §10.1.1): once such a head is complete and none of its
//!   body has arrived, [`Framed::Continue`] asks the caller to send `100 Continue`, so a
//!   client that waits for it sends the body at once. A body over the limit is refused first.
//! - Request targets in absolute form (`POST https://host/path?q HTTP/1.1`, which RFC 7846's
//!   own example E1 uses) are reduced to their path and query (RFC 9112 §3.2.2).

mod methods;
mod response;

pub use methods::Methods;
pub use response::{
    begin_answer, finish_answer, reason_phrase, write_answer, write_response, AnswerInPlace,
    ResponseHead,
};

/// Most header lines the parser looks at, whatever [`HttpLimits::max_headers`] says: the size of
/// the header array on the stack.
pub const MAX_HEADER_SLOTS: usize = 64;

/// Limits applied while framing a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// Largest request head (request line + headers) in bytes.
    pub max_head_bytes: usize,
    /// Most header lines (capped at [`MAX_HEADER_SLOTS`]).
    pub max_headers: usize,
    /// Largest body; a larger Content-Length is refused before the body is read.
    pub max_body_bytes: usize,
}

impl HttpLimits {
    /// The most bytes one request can take: its head and body limits. A connection's input
    /// buffer of this size always lets [`frame_request`] decide (a request or an error, never
    /// [`Framed::Incomplete`]), so every limit is answered with its status, never with a reset.
    pub const fn max_request_bytes(&self) -> usize {
        self.max_head_bytes.saturating_add(self.max_body_bytes)
    }
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_head_bytes: 8192,
            max_headers: 32,
            max_body_bytes: 16384,
        }
    }
}

/// A framed request. Borrowed from the input buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHead<'a> {
    pub method: &'a str,
    /// Path part of the target; an absolute-form target (`http://host/path?q`) is reduced to
    /// its path.
    pub path: &'a str,
    /// Query string without the `?`, if any.
    pub query: Option<&'a str>,
    pub content_type: Option<&'a [u8]>,
    /// The request target as sent (path and query), for checks that cover it (RFC 7616
    /// §3.4: the Digest `uri`).
    pub target: &'a str,
    /// The `Authorization` header value, if any (RFC 9110 §11.6.2).
    pub authorization: Option<&'a [u8]>,
    /// False when the client asked to close (`Connection: close`, or HTTP/1.0 without
    /// keep-alive).
    pub keep_alive: bool,
    /// An HTTP/1.0 request (its kept connection is announced in the answer).
    pub http10: bool,
}

/// Why a request could not be framed. After any of these the connection is answered and closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("malformed HTTP request")]
    Malformed,
    #[error("Content-Length required")]
    LengthRequired,
    #[error("body too large")]
    PayloadTooLarge,
    #[error("request head too large")]
    HeadTooLarge,
}

impl HttpError {
    /// The HTTP status answered for this fault.
    pub fn status(self) -> u16 {
        match self {
            HttpError::Malformed => 400,
            HttpError::LengthRequired => 411,
            HttpError::PayloadTooLarge => 413,
            HttpError::HeadTooLarge => 431,
        }
    }
}

/// Result of trying to frame one request at the start of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framed<'a> {
    /// A whole request: its head, its body, and how many bytes of the buffer it used.
    Request {
        head: RequestHead<'a>,
        body: &'a [u8],
        consumed: usize,
    },
    /// More bytes are needed.
    Incomplete,
    /// More bytes are needed, and the client waits for `HTTP/1.1 100 Continue` before it
    /// sends the body (RFC 9110 §10.1.1): the head is complete, asks for it, and no byte of
    /// the body has arrived. Sending the interim answer more than once is harmless (§15.2).
    Continue,
    /// The input can never become a valid request.
    Error(HttpError),
}

/// What the header lines said, as far as framing cares.
struct HeaderFacts<'a> {
    content_length: Option<usize>,
    content_type: Option<&'a [u8]>,
    authorization: Option<&'a [u8]>,
    /// `Connection: close` seen.
    close: bool,
    /// `Connection: keep-alive` seen.
    keep_alive: bool,
    /// `Expect: 100-continue` seen.
    expects_continue: bool,
}

/// Frames the first request in `buf`.
pub fn frame_request<'a>(buf: &'a [u8], limits: &HttpLimits) -> Framed<'a> {
    // Left uninitialised: httparse initialises the slots it fills (2 KiB not written per
    // request).
    let mut slots =
        [const { std::mem::MaybeUninit::<httparse::Header<'a>>::uninit() }; MAX_HEADER_SLOTS];
    let slot_count = limits.max_headers.min(MAX_HEADER_SLOTS);
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(buf, &mut slots[..slot_count]) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            // `max_head_bytes` buffered without the end of the head: the head is longer.
            return if buf.len() >= limits.max_head_bytes {
                Framed::Error(HttpError::HeadTooLarge)
            } else {
                Framed::Incomplete
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Framed::Error(HttpError::HeadTooLarge),
        Err(_) => return Framed::Error(HttpError::Malformed),
    };
    if head_len > limits.max_head_bytes {
        // Checked on the complete head too, so the answer never depends on how the bytes were
        // split into reads.
        return Framed::Error(HttpError::HeadTooLarge);
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Framed::Error(HttpError::Malformed);
    };

    let facts = match read_headers(req.headers) {
        Ok(facts) => facts,
        Err(e) => return Framed::Error(e),
    };

    let body_len = match facts.content_length {
        Some(n) => n,
        // RFC 9110 §15.5.12: 411 when the method carries content and the length is missing.
        None if method_needs_length(method) => return Framed::Error(HttpError::LengthRequired),
        None => 0,
    };
    if body_len > limits.max_body_bytes {
        return Framed::Error(HttpError::PayloadTooLarge);
    }
    let Some(consumed) = head_len.checked_add(body_len) else {
        return Framed::Error(HttpError::PayloadTooLarge);
    };
    let Some(body) = buf.get(head_len..consumed) else {
        // RFC 9110 §10.1.1: HTTP/1.0 clients never wait for a 100.
        return if facts.expects_continue && version >= 1 && buf.len() == head_len {
            Framed::Continue
        } else {
            Framed::Incomplete
        };
    };

    let Some((path, query)) = split_target(target) else {
        return Framed::Error(HttpError::Malformed);
    };
    // RFC 9112 §9.3: HTTP/1.1 persists unless "close"; HTTP/1.0 only with "keep-alive".
    let keep_alive = if version >= 1 {
        !facts.close
    } else {
        facts.keep_alive && !facts.close
    };
    Framed::Request {
        head: RequestHead {
            method,
            path,
            query,
            content_type: facts.content_type,
            target,
            authorization: facts.authorization,
            keep_alive,
            http10: version == 0,
        },
        body,
        consumed,
    }
}

/// Whether `buf` starts a HEAD request (after the empty lines a request may be preceded by,
/// RFC 9112 §2.2), judged from its first bytes: the answer to a request refused before its
/// head could be parsed (431, 400) is then written without a body (RFC 9110 §9.3.2).
pub fn starts_with_head(buf: &[u8]) -> bool {
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    buf[start..].starts_with(b"HEAD ")
}

fn method_needs_length(method: &str) -> bool {
    matches!(method, "POST" | "PUT" | "PATCH")
}

fn read_headers<'a>(headers: &[httparse::Header<'a>]) -> Result<HeaderFacts<'a>, HttpError> {
    let mut facts = HeaderFacts {
        content_length: None,
        content_type: None,
        authorization: None,
        close: false,
        keep_alive: false,
        expects_continue: false,
    };
    for h in headers {
        let name = h.name.as_bytes();
        if name_is(name, b"content-length") {
            if facts.content_length.is_some() {
                return Err(HttpError::Malformed);
            }
            facts.content_length = Some(parse_content_length(h.value)?);
        } else if name_is(name, b"transfer-encoding") {
            return Err(HttpError::LengthRequired);
        } else if name_is(name, b"content-type") {
            facts.content_type = Some(trim_ows(h.value));
        } else if name_is(name, b"authorization") {
            facts.authorization = Some(trim_ows(h.value));
        } else if name_is(name, b"expect") {
            facts.expects_continue = trim_ows(h.value).eq_ignore_ascii_case(b"100-continue");
        } else if name_is(name, b"connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = trim_ows(token);
                if token.eq_ignore_ascii_case(b"close") {
                    facts.close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    facts.keep_alive = true;
                }
            }
        }
    }
    Ok(facts)
}

/// Whether the header field name `name` is `lower` (lower-case letters and `-`), ignoring
/// case (RFC 9110 §5.1), eight bytes at a time. Exact for names httparse accepted: a token
/// character ORed with 0x20 is a lower-case letter or `-` only when it is that letter in
/// either case, or `-`.
#[inline]
fn name_is(name: &[u8], lower: &[u8]) -> bool {
    const CASE: u64 = 0x2020_2020_2020_2020;
    if name.len() != lower.len() {
        return false;
    }
    let mut names = name.chunks_exact(8);
    let mut lowers = lower.chunks_exact(8);
    for (n, l) in (&mut names).zip(&mut lowers) {
        let word = |b: &[u8]| {
            let mut w = [0u8; 8];
            w.copy_from_slice(b);
            u64::from_le_bytes(w)
        };
        if word(n) | CASE != word(l) {
            return false;
        }
    }
    names
        .remainder()
        .iter()
        .zip(lowers.remainder())
        .all(|(&n, &l)| n | 0x20 == l)
}

/// RFC 9110 §8.6: `Content-Length = 1*DIGIT`. Anything else (signs, lists, overflow) is 400.
fn parse_content_length(value: &[u8]) -> Result<usize, HttpError> {
    let digits = trim_ows(value);
    if digits.is_empty() {
        return Err(HttpError::Malformed);
    }
    let mut n: usize = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return Err(HttpError::Malformed);
        }
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(usize::from(b - b'0')))
            .ok_or(HttpError::Malformed)?;
    }
    Ok(n)
}

/// Strips optional whitespace (space and tab, RFC 9110 §5.6.3) from both ends.
fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// Splits a request target into path and query. Absolute form (`scheme://authority/path?q`)
/// is reduced to `/path` (RFC 9112 §3.2.2); an absolute target without a path means `/`.
/// Origin form, asterisk form and authority form are kept as they are.
fn split_target(target: &str) -> Option<(&str, Option<&str>)> {
    let rest = if target.starts_with('/') || target == "*" {
        target
    } else if let Some(scheme_end) = target.find("://") {
        let scheme = target.get(..scheme_end)?;
        if scheme.is_empty()
            || !scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        {
            return None;
        }
        let after = target.get(scheme_end + 3..)?;
        match after.find(['/', '?']) {
            Some(i) if after.as_bytes().get(i) == Some(&b'/') => after.get(i..)?,
            // `http://host?q`: empty path, which means "/".
            Some(i) => return Some(("/", after.get(i + 1..))),
            None => "/",
        }
    } else {
        // Authority form (`host:port`, for CONNECT) or something this framing does not route:
        // the caller decides by path.
        target
    };
    // A byte search: targets are short, and `str::split_once` sets up a general searcher.
    Some(match rest.bytes().position(|b| b == b'?') {
        Some(i) => (rest.get(..i)?, rest.get(i + 1..)),
        None => (rest, None),
    })
}

#[cfg(test)]
mod tests;
