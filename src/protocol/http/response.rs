//! The HTTP/1.1 response writer: status line, `Content-Type`, an exact `Content-Length`, and
//! `Connection: close` when the connection ends after this answer.

/// The reason phrase for a status code (RFC 9110 §15). Unknown codes get an empty phrase, which
/// RFC 9112 §4 allows.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// Appends a complete HTTP/1.1 response with a Content-Length to `out`.
///
/// An empty `content_type` leaves the `Content-Type` header out. The body is copied after the
/// head; `Content-Length` is always its exact length.
/// Width of the space-padded Content-Length value written by [`write_response_with`]: enough
/// for any body a `Vec` can hold on 64-bit targets (at most 20 digits).
const CONTENT_LENGTH_WIDTH: usize = 20;

/// As [`write_response`], with the body written straight into `out` by `body` (so it is
/// written once, never copied): the head is written first with a blank Content-Length of
/// [`CONTENT_LENGTH_WIDTH`] characters, filled in right-aligned once the body's length is
/// known. The blanks before the digits are the optional whitespace RFC 9112 §5.1 allows
/// before a field value.
pub fn write_response_with(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    keep_alive: bool,
    body: impl FnOnce(&mut Vec<u8>),
) {
    let mut num = itoa::Buffer::new();
    out.extend_from_slice(b"HTTP/1.1 ");
    let status = status.clamp(100, 999);
    out.extend_from_slice(num.format(status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    if !content_type.is_empty() {
        out.extend_from_slice(b"Content-Type: ");
        out.extend_from_slice(content_type.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Content-Length:");
    let field = out.len();
    out.extend_from_slice(&[b' '; CONTENT_LENGTH_WIDTH]);
    out.extend_from_slice(b"\r\n");
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    let start = out.len();
    body(out);
    let digits = num.format(out.len() - start).as_bytes();
    let end = field + CONTENT_LENGTH_WIDTH;
    if let Some(slot) = out.get_mut(end - digits.len()..end) {
        slot.copy_from_slice(digits);
    }
}

pub fn write_response(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    body: &[u8],
    keep_alive: bool,
) {
    let mut num = itoa::Buffer::new();
    out.reserve(96 + content_type.len() + body.len());
    out.extend_from_slice(b"HTTP/1.1 ");
    // Three digits always: a status outside 100..=999 would make an invalid status line.
    let status = status.clamp(100, 999);
    out.extend_from_slice(num.format(status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    if !content_type.is_empty() {
        out.extend_from_slice(b"Content-Type: ");
        out.extend_from_slice(content_type.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Content-Length: ");
    out.extend_from_slice(num.format(body.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}
