//! HTTP/1.1 request framing shared by every HTTP front-end (PPSTP, and the BitTorrent HTTP
//! tracker): one request at a time out of a connection's input buffer, with limits, plus the
//! response writer. Sans-IO: the runtime owns the socket and the buffers.
//!
//! PLACEHOLDER: the real parser replaces these bodies; the signatures are the contract.

/// Limits applied while framing a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// Largest request head (request line + headers) in bytes.
    pub max_head_bytes: usize,
    /// Most header lines.
    pub max_headers: usize,
    /// Largest body; a larger Content-Length is refused before the body is read.
    pub max_body_bytes: usize,
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
    /// False when the client asked to close (`Connection: close`, or HTTP/1.0 without
    /// keep-alive).
    pub keep_alive: bool,
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
    /// The input can never become a valid request.
    Error(HttpError),
}

/// Frames the first request in `buf`.
pub fn frame_request<'a>(_buf: &'a [u8], _limits: &HttpLimits) -> Framed<'a> {
    Framed::Error(HttpError::Malformed)
}

/// Appends a complete HTTP/1.1 response with a Content-Length to `out`.
pub fn write_response(
    _out: &mut Vec<u8>,
    _status: u16,
    _content_type: &str,
    _body: &[u8],
    _keep_alive: bool,
) {
}
