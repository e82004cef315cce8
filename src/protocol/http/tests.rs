use super::*;

fn limits() -> HttpLimits {
    HttpLimits::default()
}

/// Frames `buf` and insists on a whole request.
fn request(buf: &[u8]) -> (RequestHead<'_>, &[u8], usize) {
    match frame_request(buf, &limits()) {
        Framed::Request {
            head,
            body,
            consumed,
        } => (head, body, consumed),
        other => panic!("expected a request, got {other:?}"),
    }
}

fn error(buf: &[u8]) -> HttpError {
    match frame_request(buf, &limits()) {
        Framed::Error(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

const POST: &[u8] = b"POST /ppsp?x=1 HTTP/1.1\r\nHost: t\r\nContent-Type: application/ppsp-tracker+json\r\nContent-Length: 5\r\n\r\nhello";

#[test]
fn post_with_body_is_framed() {
    let (head, body, consumed) = request(POST);
    assert_eq!(head.method, "POST");
    assert_eq!(head.path, "/ppsp");
    assert_eq!(head.query, Some("x=1"));
    assert_eq!(
        head.content_type,
        Some(&b"application/ppsp-tracker+json"[..])
    );
    assert!(head.keep_alive);
    assert_eq!(body, b"hello");
    assert_eq!(consumed, POST.len());
}

#[test]
fn request_split_at_every_byte_boundary_is_incomplete_until_whole() {
    for cut in 0..POST.len() {
        assert_eq!(
            frame_request(&POST[..cut], &limits()),
            Framed::Incomplete,
            "cut at {cut}"
        );
    }
    assert!(matches!(
        frame_request(POST, &limits()),
        Framed::Request { consumed, .. } if consumed == POST.len()
    ));
}

#[test]
fn pipelined_requests_are_framed_one_after_another() {
    let mut buf = Vec::new();
    buf.extend_from_slice(POST);
    buf.extend_from_slice(b"GET /stats HTTP/1.1\r\nHost: t\r\n\r\n");
    buf.extend_from_slice(b"POST /b HTTP/1.1\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
    buf.extend_from_slice(b"POST /c HTTP/1.1\r\nContent-Len"); // a partial fourth
    let mut at = 0;
    let mut seen = Vec::new();
    loop {
        match frame_request(&buf[at..], &limits()) {
            Framed::Request {
                head,
                body,
                consumed,
            } => {
                seen.push((head.path.to_string(), body.to_vec(), head.keep_alive));
                at += consumed;
            }
            Framed::Incomplete | Framed::Continue => break,
            Framed::Error(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(
        seen,
        vec![
            ("/ppsp".to_string(), b"hello".to_vec(), true),
            ("/stats".to_string(), Vec::new(), true),
            ("/b".to_string(), b"ok".to_vec(), false),
        ]
    );
    assert_eq!(&buf[at..], b"POST /c HTTP/1.1\r\nContent-Len");
}

#[test]
fn absolute_form_target_is_reduced_to_its_path() {
    let (head, body, _) = request(
        b"POST https://tracker.example.com/video_1 HTTP/1.1\r\nHost: tracker.example.com\r\nContent-Length: 2\r\n\r\n{}",
    );
    assert_eq!(head.path, "/video_1");
    assert_eq!(head.query, None);
    assert_eq!(body, b"{}");

    let (head, _, _) = request(b"GET http://h:80/a/b?c=d&e HTTP/1.1\r\n\r\n");
    assert_eq!((head.path, head.query), ("/a/b", Some("c=d&e")));
    let (head, _, _) = request(b"GET http://h HTTP/1.1\r\n\r\n");
    assert_eq!((head.path, head.query), ("/", None));
    let (head, _, _) = request(b"GET http://h?q=1 HTTP/1.1\r\n\r\n");
    assert_eq!((head.path, head.query), ("/", Some("q=1")));
}

#[test]
fn query_is_split_and_empty_query_kept() {
    let (head, _, _) = request(b"GET /announce? HTTP/1.1\r\n\r\n");
    assert_eq!((head.path, head.query), ("/announce", Some("")));
    let (head, _, _) = request(b"GET /announce HTTP/1.1\r\n\r\n");
    assert_eq!((head.path, head.query), ("/announce", None));
}

#[test]
fn keep_alive_rules() {
    let cases: &[(&[u8], bool)] = &[
        (b"GET / HTTP/1.1\r\n\r\n", true),
        (b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", false),
        (
            b"GET / HTTP/1.1\r\nConnection: Upgrade, CLOSE\r\n\r\n",
            false,
        ),
        (b"GET / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n", true),
        (b"GET / HTTP/1.0\r\n\r\n", false),
        (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true),
        (
            b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
            false,
        ),
    ];
    for (buf, want) in cases {
        let (head, _, _) = request(buf);
        assert_eq!(head.keep_alive, *want, "{}", String::from_utf8_lossy(buf));
    }
}

#[test]
fn post_without_content_length_is_411() {
    assert_eq!(
        error(b"POST / HTTP/1.1\r\nHost: t\r\n\r\n"),
        HttpError::LengthRequired
    );
    assert_eq!(HttpError::LengthRequired.status(), 411);
}

#[test]
fn transfer_encoding_is_411() {
    assert_eq!(
        error(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        HttpError::LengthRequired
    );
    // Even alongside a Content-Length (a request-smuggling shape).
    assert_eq!(
        error(b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc"),
        HttpError::LengthRequired
    );
}

#[test]
fn bad_content_lengths_are_400() {
    let cases: &[&[u8]] = &[
        b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nContent-Length: five\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: \r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999999\r\n\r\n",
    ];
    for buf in cases {
        assert_eq!(
            error(buf),
            HttpError::Malformed,
            "{}",
            String::from_utf8_lossy(buf)
        );
    }
    assert_eq!(HttpError::Malformed.status(), 400);
}

#[test]
fn content_length_with_whitespace_is_accepted() {
    let (_, body, _) = request(b"POST / HTTP/1.1\r\nContent-Length:   3  \r\n\r\nabc");
    assert_eq!(body, b"abc");
}

#[test]
fn body_over_limit_is_413_before_the_body_arrives() {
    let buf = b"POST / HTTP/1.1\r\nContent-Length: 16385\r\n\r\n";
    assert_eq!(error(buf), HttpError::PayloadTooLarge);
    assert_eq!(HttpError::PayloadTooLarge.status(), 413);
    // Exactly at the limit is fine and waits for the body.
    assert_eq!(
        frame_request(
            b"POST / HTTP/1.1\r\nContent-Length: 16384\r\n\r\n",
            &limits()
        ),
        Framed::Incomplete
    );
}

#[test]
fn head_over_limit_is_431_whether_complete_or_not() {
    let small = HttpLimits {
        max_head_bytes: 64,
        ..HttpLimits::default()
    };
    let mut buf = b"GET / HTTP/1.1\r\nX-Long: ".to_vec();
    buf.extend_from_slice(&[b'a'; 100]);
    assert_eq!(
        frame_request(&buf, &small),
        Framed::Error(HttpError::HeadTooLarge)
    );
    assert_eq!(frame_request(&buf[..63], &small), Framed::Incomplete);
    // 64 bytes without the end of the head: the head has more than 64, so 431 without waiting
    // for bytes an input buffer of the limit's size could never hold.
    assert_eq!(
        frame_request(&buf[..64], &small),
        Framed::Error(HttpError::HeadTooLarge)
    );
    buf.extend_from_slice(b"\r\n\r\n");
    assert_eq!(
        frame_request(&buf, &small),
        Framed::Error(HttpError::HeadTooLarge)
    );
    assert_eq!(HttpError::HeadTooLarge.status(), 431);
}

#[test]
fn too_many_headers_is_431() {
    let few = HttpLimits {
        max_headers: 3,
        ..HttpLimits::default()
    };
    let buf = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n";
    assert_eq!(
        frame_request(buf, &few),
        Framed::Error(HttpError::HeadTooLarge)
    );
    let ok = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    assert!(matches!(frame_request(ok, &few), Framed::Request { .. }));
}

#[test]
fn get_and_head_without_length_have_empty_bodies() {
    let buf = b"GET /a HTTP/1.1\r\n\r\nHEAD /b HTTP/1.1\r\n\r\n";
    let (head, body, consumed) = request(buf);
    assert_eq!((head.method, head.path, body), ("GET", "/a", &b""[..]));
    let (head, body, _) = request(&buf[consumed..]);
    assert_eq!((head.method, head.path, body), ("HEAD", "/b", &b""[..]));
}

#[test]
fn malformed_request_lines_are_400() {
    let cases: &[&[u8]] = &[
        b"POST\r\n\r\n",
        b"POST / HTTP/2.0\r\n\r\n",
        b"PO ST / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
        b"\x00\x01\x02\x03",
    ];
    for buf in cases {
        assert_eq!(
            frame_request(buf, &limits()),
            Framed::Error(HttpError::Malformed),
            "{}",
            String::from_utf8_lossy(buf)
        );
    }
}

#[test]
fn write_response_has_exact_length_and_reason() {
    let mut out = Vec::new();
    write_response(&mut out, 200, "application/ppsp-tracker+json", b"{}", true);
    assert_eq!(
        out,
        b"HTTP/1.1 200 OK\r\nContent-Type: application/ppsp-tracker+json\r\nContent-Length: 2\r\n\r\n{}"
    );
    out.clear();
    write_response(&mut out, 413, "text/plain", b"too large", false);
    assert_eq!(
        out,
        b"HTTP/1.1 413 Content Too Large\r\nContent-Type: text/plain\r\nContent-Length: 9\r\nConnection: close\r\n\r\ntoo large"
    );
}

#[test]
fn write_response_appends_and_parses_back() {
    let mut out = b"previous".to_vec();
    for status in [200u16, 400, 401, 403, 411, 415, 431, 500, 503] {
        let start = out.len();
        write_response(
            &mut out,
            status,
            "application/json",
            b"{\"a\":1}",
            status == 200,
        );
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut resp = httparse::Response::new(&mut headers);
        let n = match resp.parse(&out[start..]) {
            Ok(httparse::Status::Complete(n)) => n,
            other => panic!("{other:?}"),
        };
        assert_eq!(resp.code, Some(status));
        assert_eq!(resp.reason, Some(reason_phrase(status)));
        assert!(!reason_phrase(status).is_empty());
        assert_eq!(&out[start + n..], b"{\"a\":1}");
    }
    assert!(out.starts_with(b"previous"));
}

#[test]
fn a_buffer_of_max_request_bytes_is_always_decided() {
    // Whatever the bytes, a full input buffer (head + body limits) frames to a request or an
    // error: the connection can always be answered before its input cap is reached.
    let limits = HttpLimits {
        max_head_bytes: 128,
        max_headers: 8,
        max_body_bytes: 64,
    };
    let cap = limits.max_request_bytes();
    let mut cases: Vec<Vec<u8>> = Vec::new();
    let mut long_head = b"GET /".to_vec();
    long_head.resize(cap, b'a');
    cases.push(long_head);
    let mut exact = b"POST / HTTP/1.1\r\nContent-Length: 64\r\n".to_vec();
    exact.resize(128 - 2, b'x');
    exact.extend_from_slice(b"\r\n");
    cases.push(exact.clone());
    for split in 0..exact.len() {
        let mut c = exact.clone();
        c[split] = b'\n';
        cases.push(c);
    }
    for mut c in cases {
        c.resize(cap, b'b');
        assert_ne!(
            frame_request(&c, &limits),
            Framed::Incomplete,
            "{}",
            String::from_utf8_lossy(&c)
        );
    }
}

#[test]
fn head_answers_keep_the_headers_and_drop_the_body() {
    let mut out = Vec::new();
    write_answer(
        &mut out,
        &ResponseHead {
            status: 405,
            content_type: "text/plain",
            allow: Some("GET, HEAD"),
            keep_alive: true,
            http10: false,
            head_only: true,
            extra: b"",
        },
        b"method not allowed",
    );
    assert_eq!(
        out,
        b"HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain\r\nAllow: GET, HEAD\r\nContent-Length: 18\r\n\r\n"
    );
}

proptest::proptest! {
    /// An answer written in place is byte for byte the answer `write_answer` writes, whatever
    /// the reserved digits, the body length, the head fields and what precedes it in `out`.
    #[test]
    fn answers_written_in_place_match_write_answer(
        body_len in 0usize..120_000,
        hint in 0usize..25,
        status in 0u16..1000,
        keep_alive in proptest::bool::ANY,
        http10 in proptest::bool::ANY,
        head_only in proptest::bool::ANY,
        with_allow in proptest::bool::ANY,
        prefix in 0usize..40,
    ) {
        let body: Vec<u8> = (0..body_len).map(|i| (i % 251) as u8).collect();
        let head = ResponseHead {
            status,
            content_type: "application/x",
            allow: with_allow.then_some("GET, HEAD"),
            keep_alive,
            http10,
            head_only,
            extra: b"X-Extra: 1\r\n",
        };
        let mut want = vec![b'p'; prefix];
        write_answer(&mut want, &head, &body);
        let mut got = vec![b'p'; prefix];
        let at = begin_answer(&mut got, &head, hint);
        got.extend_from_slice(&body);
        let digits = finish_answer(&mut got, at);
        proptest::prop_assert_eq!(digits, body_len.to_string().len());
        proptest::prop_assert_eq!(got, want);
    }
}

/// The precomputed status lines are the ones written field by field: `HTTP/1.1`, the three
/// digits, a space, the reason phrase (empty for a code without one).
#[test]
fn status_lines_are_version_code_and_reason() {
    for status in [
        0u16,
        99,
        100,
        200,
        204,
        405,
        418,
        431,
        503,
        599,
        999,
        1000,
        u16::MAX,
    ] {
        let mut out = Vec::new();
        write_response(&mut out, status, "", b"", true);
        let code = status.clamp(100, 999);
        let want = format!("HTTP/1.1 {code} {}\r\n", reason_phrase(code));
        assert!(
            out.starts_with(want.as_bytes()),
            "{status}: {}",
            String::from_utf8_lossy(&out)
        );
    }
}

proptest::proptest! {
    /// The word-wise header name match agrees with `eq_ignore_ascii_case` on every token
    /// (RFC 9110 §5.6.2 `tchar`), including case variants of the names it is asked about.
    #[test]
    fn header_names_match_as_eq_ignore_ascii_case(
        which in 0usize..6,
        other in "[!#$%&'*+.^_`|~0-9A-Za-z-]{0,20}",
        flips in proptest::collection::vec(proptest::prelude::any::<bool>(), 20),
        use_other in proptest::prelude::any::<bool>(),
    ) {
        let lower = ["content-length", "transfer-encoding", "content-type", "authorization",
            "expect", "connection"][which];
        let name: String = if use_other {
            other
        } else {
            lower.chars().zip(flips.iter().cycle())
                .map(|(c, &up)| if up { c.to_ascii_uppercase() } else { c })
                .collect()
        };
        proptest::prop_assert_eq!(
            super::name_is(name.as_bytes(), lower.as_bytes()),
            name.eq_ignore_ascii_case(lower)
        );
    }
}
