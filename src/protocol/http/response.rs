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
pub fn write_response(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    body: &[u8],
    keep_alive: bool,
) {
    write_response_with(out, status, content_type, b"", body, keep_alive);
}

/// As [`write_response`], with `extra` header lines (each ending in CRLF, such as a
/// `WWW-Authenticate` challenge) after the standard ones.
pub fn write_response_with(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    extra: &[u8],
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
    out.extend_from_slice(extra);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}
