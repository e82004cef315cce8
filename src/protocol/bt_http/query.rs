//! Parsing of BitTorrent HTTP tracker query strings (BEP 3 announce, BEP 48 scrape).
//!
//! Values are percent-decoded strictly: a `%` must be followed by two hex digits, and `+`
//! stands for a space (form encoding). Decoding is a single pass of our own (strict, and about
//! twice as fast as splitting and decoding with the `percent-encoding` crate, measured);
//! the crate encodes, for clients. `info_hash` and `peer_id` are binary and must decode to
//! exactly 20 bytes. Numbers are plain decimal digits; `numwant` saturates rather than fails
//! (it is capped anyway). `port=0` is accepted (a client that does not listen), and an unknown
//! `event` is a regular announce. Unknown keys are ignored, and so are `ip` (the source address
//! counts: BEP 7 warns that a claimed address lets an attacker aim peers at a victim), `key`,
//! `no_peer_id` (answers are compact, without peer ids) and `corrupt`.

use std::fmt;

use percent_encoding::{percent_encode, NON_ALPHANUMERIC};

use crate::protocol::bt_udp::tracker::{Announce, AnnounceEvent, InfoHash, INFO_HASH_LEN};

/// A query field the tracker reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    InfoHash,
    PeerId,
    Port,
    Uploaded,
    Downloaded,
    Left,
    Event,
    NumWant,
}

impl Field {
    /// The query key.
    pub fn key(self) -> &'static str {
        match self {
            Field::InfoHash => "info_hash",
            Field::PeerId => "peer_id",
            Field::Port => "port",
            Field::Uploaded => "uploaded",
            Field::Downloaded => "downloaded",
            Field::Left => "left",
            Field::Event => "event",
            Field::NumWant => "numwant",
        }
    }
}

/// Why a query string was refused; its `Display` is the BEP 3 `failure reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QueryError {
    /// A required field is absent.
    Missing(Field),
    /// A field's value is malformed, out of range or of the wrong length.
    Invalid(Field),
    /// A `%` not followed by two hex digits.
    BadPercentEncoding(Field),
    /// A field that must appear once appeared again.
    Repeated(Field),
    /// More `info_hash` values in a scrape than allowed.
    TooManyInfoHashes,
    /// A scrape without `info_hash` (a full scrape), which this tracker does not serve.
    FullScrape,
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueryError::Missing(field) => write!(f, "missing {}", field.key()),
            QueryError::Invalid(field) => write!(f, "invalid {}", field.key()),
            QueryError::BadPercentEncoding(field) => {
                write!(f, "invalid percent-encoding in {}", field.key())
            }
            QueryError::Repeated(field) => write!(f, "repeated {}", field.key()),
            QueryError::TooManyInfoHashes => f.write_str("too many info_hash values"),
            QueryError::FullScrape => f.write_str("full scrape is not supported"),
        }
    }
}

/// A parsed announce query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnnounceQuery {
    pub info_hash: InfoHash,
    /// The client's self-chosen id; read and checked, but peers are keyed by address.
    pub peer_id: [u8; 20],
    pub port: u16,
    /// Missing `uploaded`/`downloaded` read as 0.
    pub uploaded: u64,
    pub downloaded: u64,
    /// `None` when absent: such a peer counts as a leech.
    pub left: Option<u64>,
    pub event: AnnounceEvent,
    /// BEP 23: compact unless the client sent `compact=0`.
    pub compact: bool,
    /// `None` when absent or negative: the tracker's default.
    pub num_want: Option<u32>,
}

impl AnnounceQuery {
    /// The protocol-neutral announce.
    pub fn to_announce(&self) -> Announce {
        Announce {
            info_hash: self.info_hash,
            port: self.port,
            left: self.left,
            event: self.event,
            num_want: self.num_want,
        }
    }
}

/// Writes the announce query string (without `?`) a client would send for `q`; binary values are
/// percent-encoded. The load generator and tests use it; [`parse_announce`] reads it back.
pub fn encode_announce(q: &AnnounceQuery, out: &mut String) {
    use std::fmt::Write as _;
    let event = match q.event {
        AnnounceEvent::None => "",
        AnnounceEvent::Completed => "&event=completed",
        AnnounceEvent::Started => "&event=started",
        AnnounceEvent::Stopped => "&event=stopped",
    };
    // Writing into a String cannot fail.
    let _ = write!(
        out,
        "info_hash={}&peer_id={}&port={}&uploaded={}&downloaded={}",
        percent_encode(&q.info_hash, NON_ALPHANUMERIC),
        percent_encode(&q.peer_id, NON_ALPHANUMERIC),
        q.port,
        q.uploaded,
        q.downloaded,
    );
    if let Some(left) = q.left {
        let _ = write!(out, "&left={left}");
    }
    out.push_str(event);
    out.push_str(if q.compact {
        "&compact=1"
    } else {
        "&compact=0"
    });
    if let Some(n) = q.num_want {
        let _ = write!(out, "&numwant={n}");
    }
}

/// Bytes one fully percent-encoded `info_hash=...&` pair takes in a scrape query: the key and
/// `=` (10), 20 bytes as `%XX` (60) and the `&` (1).
pub const SCRAPE_PAIR_BYTES: usize = 10 + 3 * INFO_HASH_LEN + 1;

/// Room left in a request head for the request line's method, path and version and for the
/// header lines a client sends (`Host`, `User-Agent`, `Accept-Encoding`, ...).
pub const HEAD_ALLOWANCE_BYTES: usize = 1024;

/// The request head size a scrape of `hashes` fully percent-encoded info-hashes needs, with
/// [`HEAD_ALLOWANCE_BYTES`] for the rest: what `bt_http.max_head_bytes` must hold so that the
/// advertised `max_scrape_hashes` can be asked for (74 hashes: 5254 + 1024 bytes).
pub const fn scrape_head_bytes(hashes: usize) -> usize {
    hashes
        .saturating_mul(SCRAPE_PAIR_BYTES)
        .saturating_add(HEAD_ALLOWANCE_BYTES)
}

/// `key=value` pairs of a query string; empty pairs are skipped, a pair without `=` has an
/// empty value. A `?` separates pairs like `&`: an announce URL that already has a query
/// (`/announce?` or `/announce?key=v`) gets a second `?` from clients that append theirs
/// blindly, and a trailing `?` is as harmless as a trailing `&`. Clients percent-encode `?`
/// in binary values (it is not unreserved, RFC 3986 §2.3). Works on bytes: splitting `&str`
/// by `char` cost more than the rest of the parse.
fn pairs(query: &str) -> impl Iterator<Item = (&[u8], &[u8])> {
    query
        .as_bytes()
        .split(|&b| b == b'&' || b == b'?')
        .filter(|p| !p.is_empty())
        .map(|p| match p.iter().position(|&b| b == b'=') {
            Some(at) => {
                let (key, rest) = p.split_at(at);
                (key, rest.get(1..).unwrap_or_default())
            }
            None => (p, &[][..]),
        })
}

fn hex_digit(b: Option<&u8>) -> Option<u8> {
    match b? {
        d @ b'0'..=b'9' => Some(d - b'0'),
        d @ b'a'..=b'f' => Some(d - b'a' + 10),
        d @ b'A'..=b'F' => Some(d - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes `value` into exactly 20 bytes, in one pass: a `%` must be followed by two
/// hex digits (checked before any length error), `+` is a space.
fn decode_20(value: &[u8], field: Field) -> Result<[u8; 20], QueryError> {
    let mut buf = [0u8; INFO_HASH_LEN];
    let mut len = 0usize;
    let mut i = 0usize;
    while let Some(&b) = value.get(i) {
        let byte = match b {
            b'%' => {
                let high = hex_digit(value.get(i + 1));
                let low = hex_digit(value.get(i + 2));
                let (Some(high), Some(low)) = (high, low) else {
                    return Err(QueryError::BadPercentEncoding(field));
                };
                i += 3;
                high << 4 | low
            }
            b'+' => {
                i += 1;
                b' '
            }
            other => {
                i += 1;
                other
            }
        };
        *buf.get_mut(len).ok_or(QueryError::Invalid(field))? = byte;
        len += 1;
    }
    if len != INFO_HASH_LEN {
        return Err(QueryError::Invalid(field));
    }
    Ok(buf)
}

fn parse_u64(value: &[u8], field: Field) -> Result<u64, QueryError> {
    if value.is_empty() {
        return Err(QueryError::Invalid(field));
    }
    value.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return Err(QueryError::Invalid(field));
        }
        n.checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(b - b'0')))
            .ok_or(QueryError::Invalid(field))
    })
}

/// A port, 0 included: a client without a listening socket announces port 0 (it downloads and
/// counts, and is never listed to others).
fn parse_port(value: &[u8]) -> Result<u16, QueryError> {
    let port = parse_u64(value, Field::Port)?;
    u16::try_from(port).map_err(|_| QueryError::Invalid(Field::Port))
}

/// BEP 3's events; `empty`, BEP 21's `paused` and any value this tracker does not know are a
/// regular announce, as clients and other trackers treat them.
fn parse_event(value: &[u8]) -> AnnounceEvent {
    match value {
        b"started" => AnnounceEvent::Started,
        b"completed" => AnnounceEvent::Completed,
        b"stopped" => AnnounceEvent::Stopped,
        _ => AnnounceEvent::None,
    }
}

/// Decimal digits, saturating at `u64::MAX` instead of failing: a count larger than any table
/// is only "as many as you have".
fn parse_count(value: &[u8], field: Field) -> Result<u64, QueryError> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(QueryError::Invalid(field));
    }
    Ok(value.iter().fold(0u64, |n, &b| {
        n.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    }))
}

/// `numwant`: a count (capped later by `max_num_want`, however many digits it has), or a
/// negative number for the tracker's default.
fn parse_num_want(value: &[u8]) -> Result<Option<u32>, QueryError> {
    if let Some(negative) = value.strip_prefix(b"-") {
        parse_count(negative, Field::NumWant)?;
        return Ok(None);
    }
    let n = parse_count(value, Field::NumWant)?;
    Ok(Some(u32::try_from(n).unwrap_or(u32::MAX)))
}

/// Parses the query string of `GET /announce?...` (without the `?`).
pub fn parse_announce(query: &str) -> Result<AnnounceQuery, QueryError> {
    let mut info_hash = None;
    let mut peer_id = None;
    let mut port = None;
    let mut uploaded = 0;
    let mut downloaded = 0;
    let mut left = None;
    let mut event = AnnounceEvent::None;
    let mut compact = true;
    let mut num_want = None;
    for (key, value) in pairs(query) {
        match key {
            b"info_hash" => {
                if info_hash.is_some() {
                    return Err(QueryError::Repeated(Field::InfoHash));
                }
                info_hash = Some(decode_20(value, Field::InfoHash)?);
            }
            b"peer_id" => peer_id = Some(decode_20(value, Field::PeerId)?),
            b"port" => port = Some(parse_port(value)?),
            b"uploaded" => uploaded = parse_u64(value, Field::Uploaded)?,
            b"downloaded" => downloaded = parse_u64(value, Field::Downloaded)?,
            b"left" => left = Some(parse_u64(value, Field::Left)?),
            b"event" => event = parse_event(value),
            b"compact" => compact = value != b"0",
            b"numwant" | b"num_want" => num_want = parse_num_want(value)?,
            _ => {}
        }
    }
    Ok(AnnounceQuery {
        info_hash: info_hash.ok_or(QueryError::Missing(Field::InfoHash))?,
        peer_id: peer_id.ok_or(QueryError::Missing(Field::PeerId))?,
        port: port.ok_or(QueryError::Missing(Field::Port))?,
        uploaded,
        downloaded,
        left,
        event,
        compact,
        num_want,
    })
}

/// Parses the query string of `GET /scrape?...` into `hashes` (cleared first), in query order.
/// BEP 48: `info_hash` may repeat; at most `max` values are accepted.
pub fn parse_scrape(query: &str, max: usize, hashes: &mut Vec<InfoHash>) -> Result<(), QueryError> {
    hashes.clear();
    for (key, value) in pairs(query) {
        if key == b"info_hash" {
            if hashes.len() >= max {
                return Err(QueryError::TooManyInfoHashes);
            }
            hashes.push(decode_20(value, Field::InfoHash)?);
        }
    }
    if hashes.is_empty() {
        return Err(QueryError::FullScrape);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HASH: &str = "%124Vx%9A%BC%DE%F1%23Eg%89%AB%CD%EF%124Vx%9A";
    const HASH_BYTES: [u8; 20] = [
        0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf1, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef,
        0x12, 0x34, 0x56, 0x78, 0x9a,
    ];

    fn base(extra: &str) -> String {
        format!("info_hash={HASH}&peer_id=-TR3000-abcdefghijkl&port=6881{extra}")
    }

    #[test]
    fn port_zero_unknown_events_and_huge_counts_are_accepted() {
        let q = parse_announce(&base("&port=0")).unwrap();
        assert_eq!(q.port, 0);
        for event in ["exploded", "paused", "empty", "", "STARTED"] {
            let q = parse_announce(&base(&format!("&event={event}"))).unwrap();
            assert_eq!(q.event, AnnounceEvent::None, "{event}");
        }
        let q = parse_announce(&base("&numwant=123456789012345678901234567890")).unwrap();
        assert_eq!(q.num_want, Some(u32::MAX));
        let q = parse_announce(&base("&numwant=-123456789012345678901234567890")).unwrap();
        assert_eq!(q.num_want, None);
        assert_eq!(
            parse_announce(&base("&numwant=1e3")).unwrap_err(),
            QueryError::Invalid(Field::NumWant)
        );
    }

    #[test]
    fn a_question_mark_separates_pairs_like_an_ampersand() {
        let want = parse_announce(&base("")).unwrap();
        for query in [
            format!("?{}", base("")),
            format!("{}?", base("")),
            format!("key=ab?{}&", base("")),
            base("").replacen('&', "?", 3),
        ] {
            assert_eq!(parse_announce(&query), Ok(want), "{query}");
        }
        let mut hashes = Vec::new();
        parse_scrape(
            &format!("?info_hash={HASH}?info_hash={HASH}?"),
            5,
            &mut hashes,
        )
        .unwrap();
        assert_eq!(hashes, vec![HASH_BYTES, HASH_BYTES]);
    }

    #[test]
    fn typical_announce() {
        let q = parse_announce(&base(
            "&uploaded=10&downloaded=20&left=30&event=started&compact=1&numwant=80&ip=10.0.0.1&key=ab&no_peer_id=1",
        ))
        .unwrap();
        assert_eq!(
            q,
            AnnounceQuery {
                info_hash: HASH_BYTES,
                peer_id: *b"-TR3000-abcdefghijkl",
                port: 6881,
                uploaded: 10,
                downloaded: 20,
                left: Some(30),
                event: AnnounceEvent::Started,
                compact: true,
                num_want: Some(80),
            }
        );
    }

    #[test]
    fn defaults_when_optional_fields_are_absent() {
        let q = parse_announce(&base("")).unwrap();
        assert_eq!((q.uploaded, q.downloaded, q.left), (0, 0, None));
        assert_eq!(q.event, AnnounceEvent::None);
        assert!(q.compact);
        assert_eq!(q.num_want, None);
        let q = parse_announce(&base("&compact=0&numwant=-1&event=&&")).unwrap();
        assert!(!q.compact);
        assert_eq!(q.num_want, None);
        assert_eq!(q.event, AnnounceEvent::None);
        let q = parse_announce(&base("&event=stopped&left=0")).unwrap();
        assert_eq!(q.event, AnnounceEvent::Stopped);
        assert_eq!(q.left, Some(0));
    }

    #[test]
    fn plus_is_a_space_in_binary_values() {
        let q = parse_announce(
            "info_hash=aaaaaaaaa+aaaaaaaaaa&peer_id=%20%20%20%20%20%20%20%20%20%20+++++++++%2B&port=1",
        )
        .unwrap();
        assert_eq!(&q.info_hash, b"aaaaaaaaa aaaaaaaaaa");
        assert_eq!(&q.peer_id, b"                   +");
    }

    #[test]
    fn malformed_queries_are_refused_with_the_right_reason() {
        let cases: &[(String, QueryError)] = &[
            (
                "peer_id=-TR3000-abcdefghijkl&port=1".into(),
                QueryError::Missing(Field::InfoHash),
            ),
            (
                format!("info_hash={HASH}&port=1"),
                QueryError::Missing(Field::PeerId),
            ),
            (
                format!("info_hash={HASH}&peer_id=-TR3000-abcdefghijkl"),
                QueryError::Missing(Field::Port),
            ),
            (
                "info_hash=%zz&peer_id=-TR3000-abcdefghijkl&port=1".into(),
                QueryError::BadPercentEncoding(Field::InfoHash),
            ),
            (
                format!("info_hash={HASH}%4&peer_id=x&port=1"),
                QueryError::BadPercentEncoding(Field::InfoHash),
            ),
            (
                "info_hash=short&peer_id=-TR3000-abcdefghijkl&port=1".into(),
                QueryError::Invalid(Field::InfoHash),
            ),
            (
                format!("info_hash={HASH}%00&peer_id=-TR3000-abcdefghijkl&port=1"),
                QueryError::Invalid(Field::InfoHash),
            ),
            (
                format!("info_hash={HASH}&peer_id=tooshort&port=1"),
                QueryError::Invalid(Field::PeerId),
            ),
            (base("&port=65536"), QueryError::Invalid(Field::Port)),
            (base("&port=-1"), QueryError::Invalid(Field::Port)),
            (base("&uploaded=12a"), QueryError::Invalid(Field::Uploaded)),
            (base("&downloaded="), QueryError::Invalid(Field::Downloaded)),
            (
                base("&left=99999999999999999999"),
                QueryError::Invalid(Field::Left),
            ),
            (base("&left=+5"), QueryError::Invalid(Field::Left)),
            (base("&numwant=ten"), QueryError::Invalid(Field::NumWant)),
            (
                base(&format!("&info_hash={HASH}")),
                QueryError::Repeated(Field::InfoHash),
            ),
        ];
        for (query, want) in cases {
            assert_eq!(parse_announce(query), Err(*want), "{query}");
        }
    }

    #[test]
    fn failure_reasons_read_well() {
        assert_eq!(QueryError::Missing(Field::Port).to_string(), "missing port");
        assert_eq!(
            QueryError::Invalid(Field::InfoHash).to_string(),
            "invalid info_hash"
        );
        assert_eq!(
            QueryError::BadPercentEncoding(Field::PeerId).to_string(),
            "invalid percent-encoding in peer_id"
        );
    }

    #[test]
    fn scrape_collects_repeated_hashes_up_to_the_limit() {
        let mut hashes = Vec::new();
        let q = format!("info_hash={HASH}&info_hash=bbbbbbbbbbbbbbbbbbbb&other=1");
        parse_scrape(&q, 2, &mut hashes).unwrap();
        assert_eq!(hashes, vec![HASH_BYTES, *b"bbbbbbbbbbbbbbbbbbbb"]);
        assert_eq!(
            parse_scrape(&q, 1, &mut hashes),
            Err(QueryError::TooManyInfoHashes)
        );
        assert_eq!(
            parse_scrape("", 5, &mut hashes),
            Err(QueryError::FullScrape)
        );
        assert_eq!(
            parse_scrape("info_hash=abc", 5, &mut hashes),
            Err(QueryError::Invalid(Field::InfoHash))
        );
    }

    proptest! {
        #[test]
        fn binary_ids_round_trip_through_percent_encoding(
            info_hash: [u8; 20], peer_id: [u8; 20], port in 1u16..,
            left: u64, numwant: u32,
        ) {
            let q = format!(
                "info_hash={}&peer_id={}&port={port}&left={left}&numwant={numwant}",
                percent_encode(&info_hash, NON_ALPHANUMERIC),
                percent_encode(&peer_id, NON_ALPHANUMERIC),
            );
            let parsed = parse_announce(&q).unwrap();
            prop_assert_eq!(parsed.info_hash, info_hash);
            prop_assert_eq!(parsed.peer_id, peer_id);
            prop_assert_eq!(parsed.port, port);
            prop_assert_eq!(parsed.left, Some(left));
            prop_assert_eq!(parsed.num_want, Some(numwant));
        }

        #[test]
        fn encoded_queries_parse_back(
            info_hash: [u8; 20], peer_id: [u8; 20], port in 1u16.., uploaded: u64,
            downloaded: u64, left: Option<u64>, event in prop_oneof![
                Just(AnnounceEvent::None), Just(AnnounceEvent::Completed),
                Just(AnnounceEvent::Started), Just(AnnounceEvent::Stopped),
            ],
            compact: bool, num_want: Option<u32>,
        ) {
            let q = AnnounceQuery {
                info_hash, peer_id, port, uploaded, downloaded, left, event, compact, num_want,
            };
            let mut s = String::new();
            encode_announce(&q, &mut s);
            prop_assert_eq!(parse_announce(&s), Ok(q));
        }

        #[test]
        fn arbitrary_queries_never_panic(q in "[a-z_=&%0-9A-Fa-f+\\-]{0,200}", raw in ".{0,100}") {
            let _ = parse_announce(&q);
            let _ = parse_announce(&raw);
            let mut hashes = Vec::new();
            let _ = parse_scrape(&q, 3, &mut hashes);
            prop_assert!(hashes.len() <= 3);
            let _ = parse_scrape(&raw, 3, &mut hashes);
            prop_assert!(hashes.len() <= 3);
        }
    }
}
