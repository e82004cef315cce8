//! The request scanner: a hand-written, single-pass JSON reader that fills the raw request
//! shapes of [`super::raw`] straight from the body, borrowing every string without escapes and
//! allocating nothing for an ordinary request.
//!
//! It accepts exactly the bodies that `serde_json::from_slice::<raw::RequestEnvelope>` accepts
//! and produces the same [`RawRequest`] (the serde decoder is kept as the reference in
//! [`super::reference`]; tests and the `ppstp_decode` fuzz target compare the two). That means
//! following serde_json 1.x and serde's derived `Deserialize` to the letter:
//! - JSON (RFC 8259) strictly: whitespace is space, tab, CR and LF; no trailing commas; nothing
//!   but whitespace after the envelope; numbers `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
//! - Strings that are read (keys and string values) must be UTF-8, have no control character
//!   and no lone UTF-16 surrogate in `\u` escapes; strings inside ignored values only need
//!   valid escapes (`\uXXXX` with any four hex digits).
//! - Unknown members are skipped at any depth without a depth limit (serde_json skips ignored
//!   values iteratively); the members that are read nest at most seven levels, far below
//!   serde_json's recursion limit of 128.
//! - A member given twice in one object is an error, also when the first was `null`; a `null`
//!   optional member reads as absent.
//! - An object may also be written as an array of its members' values in declaration order
//!   (serde's sequence form of a struct): every member is needed except the trailing ones with
//!   a default (`peer_addr` and `swarm_action` of `connect`, `stat` of `stat_report`).
//! - Integers ([`Int`]) are non-negative JSON integers that fit 64 bits, or strings of 1 or
//!   more ASCII digits (after unescaping); a fraction, exponent, minus sign or overflow is an
//!   error. A numeric `transaction_id` is kept as serde_json's text of the number.
//!
//! Any fault yields [`Malformed`]; the caller then recovers `version` and `transaction_id` for
//! the error answer as the serde decoder did.

use std::borrow::Cow;

use smallvec::SmallVec;

use super::raw::{
    parse_digits, Int, OneOrMany, RawChunk, RawConnect, RawDisconnect, RawFind, RawIpAddress,
    RawJoin, RawJoinChunk, RawPeerAddr, RawPeerNum, RawRequest, RawStat, RawStatQuery,
    RawStatReport, RawSwarmAction, RawSwarmRef, Str, TxId,
};

/// The body is not a well-formed request envelope (error code 01, or 02 after salvage).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Malformed;

type R<T> = Result<T, Malformed>;

/// Reads a whole request body: the envelope `{"PPSPTrackerProtocol": {...}}` followed by
/// nothing but whitespace.
/// The message is read into `out`, which must have every member `None` on entry (its
/// `Default`): it is built in place rather than returned, as it holds every request type's
/// members. After an error `out` holds whatever was read.
pub(super) fn request<'a>(body: &'a [u8], out: &mut RawRequest<'a>) -> R<()> {
    let mut s = Scanner { b: body, i: 0 };
    s.envelope(out)?;
    match s.ws() {
        None => Ok(()),
        Some(_) => Err(Malformed),
    }
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

/// How a member reads when it is missing: `req` members must be present; `opt` members read
/// as `None` in an object but must be given in the sequence form; `dflt` members read as `None`
/// in both forms (serde's `#[serde(default)]`).
macro_rules! shape {
    ($name:ident -> $ty:ident { $( $field:ident : $parse:ident $kind:ident [$($key:literal)|+] ),* $(,)? }) => {
        fn $name(&mut self) -> R<$ty<'a>> {
            match self.ws() {
                Some(b'{') => {
                    self.i += 1;
                    $( let mut $field = None; )*
                    let mut first = true;
                    while let Some(key) = self.next_key(&mut first)? {
                        match &*key {
                            $(
                                $($key)|+ => {
                                    if $field.is_some() {
                                        return Err(Malformed);
                                    }
                                    $field = Some(shape!(@value self, $parse, $kind));
                                }
                            )*
                            _ => self.ignore_value()?,
                        }
                    }
                    Ok($ty { $( $field: shape!(@missing $field, $kind), )* })
                }
                Some(b'[') => {
                    self.i += 1;
                    let mut first = true;
                    $(
                        let $field = if self.next_element(&mut first)? {
                            shape!(@value self, $parse, $kind)
                        } else {
                            shape!(@short $kind)
                        };
                    )*
                    self.end_seq()?;
                    Ok($ty { $( $field, )* })
                }
                _ => Err(Malformed),
            }
        }
    };
    (@value $s:ident, $parse:ident, req) => { $s.$parse()? };
    (@value $s:ident, $parse:ident, opt) => { $s.nullable(Self::$parse)? };
    (@value $s:ident, $parse:ident, dflt) => { $s.nullable(Self::$parse)? };
    (@missing $field:ident, req) => { $field.ok_or(Malformed)? };
    (@missing $field:ident, opt) => { $field.flatten() };
    (@missing $field:ident, dflt) => { $field.flatten() };
    (@short req) => { return Err(Malformed) };
    (@short opt) => { return Err(Malformed) };
    (@short dflt) => { None };
}

/// As [`shape!`], for a shape whose members are all optional, read into `out` (every member
/// `None` on entry) instead of returned by value.
macro_rules! shape_into {
    ($name:ident -> $ty:ident { $( $field:ident : $parse:ident [$($key:literal)|+] ),* $(,)? }) => {
        fn $name(&mut self, out: &mut $ty<'a>) -> R<()> {
            match self.ws() {
                Some(b'{') => {
                    self.i += 1;
                    // Whether each member was given (a `null` one too: a second is an error).
                    $( let mut $field = false; )*
                    let mut first = true;
                    while let Some(key) = self.next_key(&mut first)? {
                        match &*key {
                            $(
                                $($key)|+ => {
                                    if $field {
                                        return Err(Malformed);
                                    }
                                    $field = true;
                                    out.$field = self.nullable(Self::$parse)?;
                                }
                            )*
                            _ => self.ignore_value()?,
                        }
                    }
                    Ok(())
                }
                Some(b'[') => {
                    self.i += 1;
                    let mut first = true;
                    $(
                        if !self.next_element(&mut first)? {
                            return Err(Malformed);
                        }
                        out.$field = self.nullable(Self::$parse)?;
                    )*
                    self.end_seq()
                }
                _ => Err(Malformed),
            }
        }
    };
}

impl<'a> Scanner<'a> {
    /// Skips whitespace; the next byte, if any.
    #[inline]
    fn ws(&mut self) -> Option<u8> {
        while let Some(&c) = self.b.get(self.i) {
            match c {
                b' ' | b'\n' | b'\r' | b'\t' => self.i += 1,
                _ => return Some(c),
            }
        }
        None
    }

    /// Consumes `c` after optional whitespace.
    #[inline]
    fn expect(&mut self, c: u8) -> R<()> {
        if self.ws() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(Malformed)
        }
    }

    /// Consumes the bytes of `word` exactly (the rest of a literal).
    fn literal(&mut self, word: &[u8]) -> R<()> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(Malformed)
        }
    }

    // -- objects and arrays (serde_json's MapAccess and SeqAccess) ----------------------------

    /// The next key of an object whose `{` was consumed, with its `:`; `None` at `}`.
    fn next_key(&mut self, first: &mut bool) -> R<Option<Cow<'a, str>>> {
        match self.ws() {
            Some(b'}') => {
                self.i += 1;
                return Ok(None);
            }
            Some(b',') if !*first => {
                self.i += 1;
                if self.ws() != Some(b'"') {
                    return Err(Malformed);
                }
            }
            Some(b'"') if *first => {}
            _ => return Err(Malformed),
        }
        *first = false;
        self.i += 1;
        let key = self.plain_string()?;
        self.expect(b':')?;
        Ok(Some(key))
    }

    /// Whether an array whose `[` was consumed has another element (its `,` consumed); at `]`
    /// nothing is consumed (see [`Self::end_seq`]).
    fn next_element(&mut self, first: &mut bool) -> R<bool> {
        match self.ws() {
            Some(b']') => Ok(false),
            Some(_) if *first => {
                *first = false;
                Ok(true)
            }
            Some(b',') => {
                self.i += 1;
                match self.ws() {
                    Some(b']') | None => Err(Malformed),
                    Some(_) => Ok(true),
                }
            }
            _ => Err(Malformed),
        }
    }

    /// The `]` that must close an array once its elements are read.
    fn end_seq(&mut self) -> R<()> {
        self.expect(b']')
    }

    /// `null` (absent), or the value `parse` reads.
    #[inline]
    fn nullable<T>(&mut self, parse: fn(&mut Self) -> R<T>) -> R<Option<T>> {
        if self.ws() == Some(b'n') {
            self.i += 1;
            self.literal(b"ull")?;
            Ok(None)
        } else {
            parse(self).map(Some)
        }
    }

    // -- strings ------------------------------------------------------------------------------

    /// A string whose opening `"` was consumed, unescaped and checked as UTF-8 (serde_json's
    /// `parse_str`): borrowed from the body unless it has escapes.
    fn string(&mut self) -> R<Cow<'a, str>> {
        let start = self.i;
        let b = self.b;
        let mut i = start;
        let mut ascii = true;
        loop {
            i = plain_run(b, i);
            let Some(&c) = b.get(i) else {
                return Err(Malformed);
            };
            match CLASS[usize::from(c)] {
                PLAIN => i += 1,
                HIGH => {
                    ascii = false;
                    i += 1;
                }
                QUOTE => {
                    self.i = i + 1;
                    let raw = &b[start..i];
                    let text = if ascii {
                        // SAFETY: every byte of `raw` was checked to be below 0x80 (class
                        // PLAIN), and ASCII is UTF-8.
                        unsafe { std::str::from_utf8_unchecked(raw) }
                    } else {
                        std::str::from_utf8(raw).map_err(|_| Malformed)?
                    };
                    return Ok(Cow::Borrowed(text));
                }
                BACKSLASH => break,
                _ => return Err(Malformed),
            }
        }
        // Escapes: unescape into an owned buffer (rare in requests).
        let mut out = b[start..i].to_vec();
        loop {
            match b.get(i) {
                Some(b'"') => {
                    self.i = i + 1;
                    return String::from_utf8(out)
                        .map(Cow::Owned)
                        .map_err(|_| Malformed);
                }
                Some(b'\\') => {
                    i = unescape(b, i + 1, &mut out)?;
                }
                Some(&c) if c < 0x20 => return Err(Malformed),
                Some(&c) => {
                    out.push(c);
                    i += 1;
                }
                None => return Err(Malformed),
            }
        }
    }

    /// As [`Self::string`], with the usual string (plain ASCII up to its closing quote) read
    /// inline; anything else goes to [`Self::string`].
    #[inline(always)]
    fn plain_string(&mut self) -> R<Cow<'a, str>> {
        let b = self.b;
        let start = self.i;
        let end = plain_run(b, start);
        if b.get(end) == Some(&b'"') {
            self.i = end + 1;
            // SAFETY: `plain_run` stopped at the first byte that is not plain ASCII (below
            // 0x80, no control character), so `b[start..end]` is ASCII, which is UTF-8.
            return Ok(Cow::Borrowed(unsafe {
                std::str::from_utf8_unchecked(&b[start..end])
            }));
        }
        self.string()
    }

    /// A string value (`Str`).
    fn str(&mut self) -> R<Str<'a>> {
        self.expect(b'"')?;
        self.plain_string().map(Str)
    }

    /// Skips a string whose opening `"` was consumed (serde_json's `ignore_str`: escapes must
    /// be well-formed, control characters are refused, UTF-8 is not checked).
    fn ignore_string(&mut self) -> R<()> {
        let b = self.b;
        let mut i = self.i;
        loop {
            // Plain bytes many at a time (a byte from 0x80 stops the run too).
            i = plain_run(b, i);
            let Some(&c) = b.get(i) else {
                return Err(Malformed);
            };
            match CLASS[usize::from(c)] {
                PLAIN | HIGH => i += 1,
                QUOTE => {
                    self.i = i + 1;
                    return Ok(());
                }
                BACKSLASH => {
                    i += 1;
                    match b.get(i) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 1,
                        Some(b'u') => {
                            hex4(b, i + 1).ok_or(Malformed)?;
                            i += 5;
                        }
                        _ => return Err(Malformed),
                    }
                }
                _ => return Err(Malformed),
            }
        }
    }

    // -- numbers ------------------------------------------------------------------------------

    /// A number starting at the current byte (`-` or a digit): its text, and its value when it
    /// is a non-negative integer that fits 64 bits (what serde_json reads as a `u64`).
    fn number(&mut self) -> R<(&'a [u8], Option<u64>)> {
        let b = self.b;
        let start = self.i;
        let mut i = start;
        let negative = b.get(i) == Some(&b'-');
        if negative {
            i += 1;
        }
        let mut value: Option<u64> = Some(0);
        match b.get(i) {
            Some(b'0') => {
                i += 1;
                if b.get(i).is_some_and(u8::is_ascii_digit) {
                    return Err(Malformed);
                }
            }
            Some(b'1'..=b'9') => {
                while let Some(&c) = b.get(i).filter(|c| c.is_ascii_digit()) {
                    value = value
                        .and_then(|v| v.checked_mul(10))
                        .and_then(|v| v.checked_add(u64::from(c - b'0')));
                    i += 1;
                }
            }
            _ => return Err(Malformed),
        }
        let mut integer = !negative;
        if b.get(i) == Some(&b'.') {
            integer = false;
            i += 1;
            i = digits(b, i)?;
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            integer = false;
            i += 1;
            if matches!(b.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            i = digits(b, i)?;
        }
        self.i = i;
        Ok((&b[start..i], value.filter(|_| integer)))
    }

    /// A non-negative integer, as a number or a string of digits ([`Int`]).
    fn int(&mut self) -> R<Int> {
        match self.ws() {
            Some(b'-' | b'0'..=b'9') => match self.number()? {
                (_, Some(v)) => Ok(Int(v)),
                (_, None) => Err(Malformed),
            },
            Some(b'"') => {
                self.i += 1;
                let text = self.string()?;
                parse_digits(&text).map(Int).ok_or(Malformed)
            }
            _ => Err(Malformed),
        }
    }

    /// A transaction id: a string, or a number kept as serde_json's text of it ([`TxId`]).
    fn txid(&mut self) -> R<TxId<'a>> {
        match self.ws() {
            Some(b'"') => {
                self.i += 1;
                self.plain_string().map(TxId)
            }
            Some(b'-' | b'0'..=b'9') => {
                let (text, value) = self.number()?;
                match value {
                    Some(v) => Ok(TxId(Cow::Owned(itoa::Buffer::new().format(v).to_owned()))),
                    // Negative, fractional or huge numbers (rare): serde_json's own reading of
                    // the number's text, so that the echoed text is the same to the digit.
                    None => serde_json::from_slice::<TxId<'_>>(text)
                        .map(|t| TxId(Cow::Owned(t.0.into_owned())))
                        .map_err(|_| Malformed),
                }
            }
            _ => Err(Malformed),
        }
    }

    // -- ignored values -----------------------------------------------------------------------

    /// Skips any JSON value (serde_json's `ignore_value`): fully checked, nested to any depth
    /// without recursion. Up to 256 levels are tracked inline; deeper nesting spills to the
    /// heap.
    fn ignore_value(&mut self) -> R<()> {
        // One bit per open container: 1 for an object, 0 for an array.
        let mut stack: SmallVec<[u64; 4]> = SmallVec::new();
        let mut depth = 0usize;
        loop {
            // A value.
            match self.ws() {
                Some(b'n') => {
                    self.i += 1;
                    self.literal(b"ull")?;
                }
                Some(b't') => {
                    self.i += 1;
                    self.literal(b"rue")?;
                }
                Some(b'f') => {
                    self.i += 1;
                    self.literal(b"alse")?;
                }
                Some(b'-' | b'0'..=b'9') => {
                    self.number()?;
                }
                Some(b'"') => {
                    self.i += 1;
                    self.ignore_string()?;
                }
                Some(c @ (b'[' | b'{')) => {
                    self.i += 1;
                    let word = depth / 64;
                    if word == stack.len() {
                        stack.push(0);
                    }
                    let bit = 1u64 << (depth % 64);
                    if c == b'{' {
                        stack[word] |= bit;
                    } else {
                        stack[word] &= !bit;
                    }
                    depth += 1;
                    // An empty container closes at once; otherwise read its first member.
                    let close = if c == b'{' { b'}' } else { b']' };
                    if self.ws() == Some(close) {
                        self.i += 1;
                        depth -= 1;
                    } else {
                        if c == b'{' {
                            self.member_key()?;
                        }
                        continue;
                    }
                }
                _ => return Err(Malformed),
            }
            // After a value: a comma and the next member, or closing brackets.
            loop {
                if depth == 0 {
                    return Ok(());
                }
                let object = stack[(depth - 1) / 64] & (1u64 << ((depth - 1) % 64)) != 0;
                match self.ws() {
                    Some(b',') => {
                        self.i += 1;
                        if object {
                            self.member_key()?;
                        }
                        break;
                    }
                    Some(b'}') if object => {
                        self.i += 1;
                        depth -= 1;
                    }
                    Some(b']') if !object => {
                        self.i += 1;
                        depth -= 1;
                    }
                    _ => return Err(Malformed),
                }
            }
        }
    }

    /// An ignored object's key and its `:`.
    fn member_key(&mut self) -> R<()> {
        self.expect(b'"')?;
        self.ignore_string()?;
        self.expect(b':')
    }

    // -- the request shapes (raw.rs), member for member ------------------------------------

    /// The envelope `{"PPSPTrackerProtocol": message}` (or its sequence form `[message]`),
    /// the message read into `out` ([`raw::RequestEnvelope`](super::raw::RequestEnvelope)).
    fn envelope(&mut self, out: &mut RawRequest<'a>) -> R<()> {
        match self.ws() {
            Some(b'{') => {
                self.i += 1;
                let mut message = false;
                let mut first = true;
                while let Some(key) = self.next_key(&mut first)? {
                    if &*key == "PPSPTrackerProtocol" {
                        if message {
                            return Err(Malformed);
                        }
                        message = true;
                        self.raw_request(out)?;
                    } else {
                        self.ignore_value()?;
                    }
                }
                if message {
                    Ok(())
                } else {
                    Err(Malformed)
                }
            }
            Some(b'[') => {
                self.i += 1;
                let mut first = true;
                if !self.next_element(&mut first)? {
                    return Err(Malformed);
                }
                self.raw_request(out)?;
                self.end_seq()
            }
            _ => Err(Malformed),
        }
    }

    shape_into!(raw_request -> RawRequest {
        version: int ["version"],
        request_type: str ["request_type"],
        transaction_id: txid ["transaction_id"],
        peer_id: str ["peer_id"],
        connect: connect ["connect"],
        find: find ["find"],
        swarm_id: str ["swarm_id"],
        peer_num: peer_num ["peer_num"],
        stat_report: stat_report ["stat_report"],
        join: join ["join"],
        leave: swarm_ref ["leave"],
        disconnect: disconnect ["disconnect"],
        join_chunk: join_chunk ["join_chunk"],
        stat_query: stat_query ["stat_query"],
    });

    shape!(peer_num -> RawPeerNum {
        peer_count: int opt ["peer_count"],
        ability_nat: str opt ["ability_nat"],
        concurrent_links: int opt ["concurrent_links"],
        online_time: int opt ["online_time"],
        upload_bandwidth: int opt ["upload_bandwidth"],
    });

    shape!(ip_address -> RawIpAddress {
        address_type: str req ["address_type"],
        address: str req ["address"],
    });

    shape!(peer_addr -> RawPeerAddr {
        ip_address: ip_address req ["ip_address"],
        port: int req ["port"],
        priority: int opt ["priority"],
        kind: str opt ["type"],
        connection: str opt ["connection"],
        asn: int opt ["asn"],
        peer_protocol: str opt ["peer_protocol"],
    });

    shape!(swarm_action -> RawSwarmAction {
        swarm_id: str req ["swarm_id"],
        action: str req ["action"],
        peer_mode: str opt ["peer_mode"],
    });

    shape!(connect -> RawConnect {
        peer_num: peer_num opt ["peer_num"],
        peer_addr: peer_addrs dflt ["peer_addr"],
        swarm_action: swarm_actions dflt ["swarm_action"],
    });

    shape!(find -> RawFind {
        swarm_id: str opt ["swarm_id"],
        peer_num: peer_num opt ["peer_num"],
        chunks: chunks opt ["chunks"],
    });

    shape!(stat -> RawStat {
        swarm_id: str opt ["swarm_id"],
        uploaded_bytes: int opt ["uploaded_bytes"],
        downloaded_bytes: int opt ["downloaded_bytes"],
        available_bandwidth: int opt ["available_bandwidth"],
        concurrent_links: int opt ["concurrent_links"],
    });

    shape!(stat_report -> RawStatReport {
        kind: str opt ["type"],
        stat: stats dflt ["stat" | "Stat"],
    });

    shape!(join -> RawJoin {
        swarm_id: str req ["swarm_id"],
        peer_mode: str req ["peer_mode"],
        peer_num: peer_num opt ["peer_num"],
    });

    shape!(swarm_ref -> RawSwarmRef {
        swarm_id: str req ["swarm_id"],
    });

    shape!(disconnect -> RawDisconnect {
        swarm_id: str opt ["swarm_id"],
    });

    shape!(join_chunk -> RawJoinChunk {
        swarm_id: str req ["swarm_id"],
        chunks: chunks req ["chunks"],
    });

    shape!(stat_query -> RawStatQuery {
        swarm_id: str opt ["swarm_id"],
        peer_id: str opt ["peer_id"],
    });

    /// An array of `parse`'s values, or one value written on its own (an object): [`OneOrMany`].
    fn one_or_many<T>(&mut self, parse: fn(&mut Self) -> R<T>) -> R<OneOrMany<T>> {
        match self.ws() {
            Some(b'[') => {
                self.i += 1;
                let mut items = SmallVec::new();
                let mut first = true;
                while self.next_element(&mut first)? {
                    items.push(parse(self)?);
                }
                self.end_seq()?;
                Ok(OneOrMany(items))
            }
            Some(b'{') => parse(self).map(|one| OneOrMany(smallvec::smallvec![one])),
            _ => Err(Malformed),
        }
    }

    fn peer_addrs(&mut self) -> R<OneOrMany<RawPeerAddr<'a>>> {
        self.one_or_many(Self::peer_addr)
    }

    fn swarm_actions(&mut self) -> R<OneOrMany<RawSwarmAction<'a>>> {
        self.one_or_many(Self::swarm_action)
    }

    fn stats(&mut self) -> R<OneOrMany<RawStat<'a>>> {
        self.one_or_many(Self::stat)
    }

    /// `[[start, end], ...]`: an array of two-integer arrays.
    fn chunks(&mut self) -> R<Vec<RawChunk>> {
        self.expect(b'[')?;
        let mut chunks = Vec::new();
        let mut first = true;
        while self.next_element(&mut first)? {
            self.expect(b'[')?;
            let mut inner = true;
            if !self.next_element(&mut inner)? {
                return Err(Malformed);
            }
            let start = self.int()?;
            if !self.next_element(&mut inner)? {
                return Err(Malformed);
            }
            let end = self.int()?;
            self.end_seq()?;
            chunks.push((start, end));
        }
        self.end_seq()?;
        Ok(chunks)
    }
}

/// Byte classes inside a JSON string.
const PLAIN: u8 = 0;
const QUOTE: u8 = 1;
const BACKSLASH: u8 = 2;
const CONTROL: u8 = 3;
const HIGH: u8 = 4;

/// The class of each byte inside a string: control characters (below 0x20) end it with an
/// error, `"` ends it, `\` starts an escape, bytes from 0x80 are part of multi-byte UTF-8.
static CLASS: [u8; 256] = {
    let mut t = [PLAIN; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = if c < 0x20 {
            CONTROL
        } else if c == b'"' as usize {
            QUOTE
        } else if c == b'\\' as usize {
            BACKSLASH
        } else if c >= 0x80 {
            HIGH
        } else {
            PLAIN
        };
        c += 1;
    }
    t
};

/// 0x01 in every byte of a word.
pub(super) const ONES: u64 = u64::MAX / 255;
/// 0x80 in every byte of a word.
pub(super) const HIGHS: u64 = ONES << 7;

/// The high bit of each byte of `word` (little-endian) that is not plain ASCII: a control
/// character, `"`, `\\` or a byte from 0x80. Bytes above the first such byte may be marked
/// wrongly (borrows), so only the lowest mark is meaningful.
#[inline]
fn special(word: u64) -> u64 {
    let control = word.wrapping_sub(ONES * 0x20) & !word;
    let quote = word ^ (ONES * u64::from(b'"'));
    let backslash = word ^ (ONES * u64::from(b'\\'));
    let quote = quote.wrapping_sub(ONES) & !quote;
    let backslash = backslash.wrapping_sub(ONES) & !backslash;
    (control | quote | backslash | word) & HIGHS
}

/// Skips plain ASCII string bytes from `i` (sixteen at a time on x86_64, then eight): the
/// index of the first byte that is a control character, `"`, `\\` or from 0x80, or of a byte
/// near the end of `b` from which the caller goes on byte by byte.
#[inline(always)]
fn plain_run(b: &[u8], mut i: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{
            __m128i, _mm_cmpeq_epi8, _mm_cmplt_epi8, _mm_loadu_si128, _mm_movemask_epi8,
            _mm_or_si128, _mm_set1_epi8,
        };
        while i + 16 <= b.len() {
            // SAFETY: SSE2 is part of x86_64; the load reads the 16 bytes `b[i..i + 16]`.
            let stop = unsafe {
                let v = _mm_loadu_si128(b.as_ptr().add(i).cast::<__m128i>());
                // A byte below 0x20 as a signed byte: control characters and every byte
                // from 0x80.
                let special = _mm_or_si128(
                    _mm_or_si128(
                        _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8)),
                        _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8)),
                    ),
                    _mm_cmplt_epi8(v, _mm_set1_epi8(0x20)),
                );
                _mm_movemask_epi8(special) as u32
            };
            if stop != 0 {
                return i + stop.trailing_zeros() as usize;
            }
            i += 16;
        }
    }
    while let Some(chunk) = b.get(i..i + 8) {
        let stop = special(u64::from_le_bytes(chunk.try_into().unwrap_or_default()));
        if stop != 0 {
            return i + (stop.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    i
}

/// Digits `[0-9]+` from `i`; the index after them.
fn digits(b: &[u8], mut i: usize) -> R<usize> {
    let start = i;
    while b.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    if i == start {
        Err(Malformed)
    } else {
        Ok(i)
    }
}

/// The value of four hex digits at `i`.
fn hex4(b: &[u8], i: usize) -> Option<u16> {
    let digits = b.get(i..i + 4)?;
    let mut v = 0u16;
    for &d in digits {
        v = v << 4 | u16::from((d as char).to_digit(16)? as u8);
    }
    Some(v)
}

/// Unescapes the escape after a backslash at `i - 1` into `out` (serde_json's `parse_escape`
/// with validation: a `\u` surrogate must be a leading one followed by `\u` and a trailing
/// one). The index after the escape.
fn unescape(b: &[u8], i: usize, out: &mut Vec<u8>) -> R<usize> {
    let simple = match b.get(i) {
        Some(b'"') => b'"',
        Some(b'\\') => b'\\',
        Some(b'/') => b'/',
        Some(b'b') => 0x08,
        Some(b'f') => 0x0c,
        Some(b'n') => b'\n',
        Some(b'r') => b'\r',
        Some(b't') => b'\t',
        Some(b'u') => {
            let n = hex4(b, i + 1).ok_or(Malformed)?;
            let mut next = i + 5;
            let code = match n {
                0xDC00..=0xDFFF => return Err(Malformed),
                0xD800..=0xDBFF => {
                    if b.get(next..next + 2) != Some(b"\\u") {
                        return Err(Malformed);
                    }
                    let n2 = hex4(b, next + 2).ok_or(Malformed)?;
                    if !(0xDC00..=0xDFFF).contains(&n2) {
                        return Err(Malformed);
                    }
                    next += 6;
                    (((u32::from(n) - 0xD800) << 10) | (u32::from(n2) - 0xDC00)) + 0x1_0000
                }
                _ => u32::from(n),
            };
            let c = char::from_u32(code).ok_or(Malformed)?;
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            return Ok(next);
        }
        _ => return Err(Malformed),
    };
    out.push(simple);
    Ok(i + 1)
}
