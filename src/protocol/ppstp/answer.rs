//! Encoding PPSTP answers (engine [`Response`]s) as JSON, the per-request hot path of the PPSTP
//! front end.
//!
//! The answer is written piece by piece (its head, each swarm result, each listed peer, the
//! statistics): for each piece the most bytes it can take are reckoned from its members (a
//! fixed allowance per member and six bytes per identifier byte, the most an escape takes),
//! the output grows once by that bound, and the piece is written into the reserved room by a
//! [`Raw`] writer that checks nothing per write. Constant fragments are precomputed byte
//! strings, IPv4 and IPv6 text and integers are written without `core::fmt`, and identifiers
//! that need no escaping (every PPSTP id in practice) are checked eight bytes at a time and
//! copied whole. The bytes are exactly those of the reference encoder in
//! `encode_reference.rs` (tests compare the two over generated responses, the longest
//! members included).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use super::encode::escape_flags;
use super::TransactionId;
use crate::engine::{
    AddrType, Answer, ErrorCode, LinkKind, PeerAddr, PeerInfo, PeerMode, PeerState, PeerStatus,
    Response, StatAnswer, SwarmResult, SwarmStats, MAX_ID_BYTES,
};
use crate::hex::{self, DIGITS as HEX};

/// Most bytes one `ppsp_tp_peer_addr_t` object takes: 220 with the longest members (an IPv6
/// address of 45 characters, `REFLEXIVE`, `wireless`, a 10-digit priority and ASN,
/// `PPSP-PP`), rounded up.
const ADDR_BOUND: usize = 256;
/// Most bytes of a decimal integer (u64).
const NUM_BOUND: usize = 20;

/// Most bytes a JSON string of `len` bytes takes, quotes included: every byte escaped as
/// `\u00XX` (six bytes) at worst; the hex form of a non-UTF-8 id takes two per byte.
const fn str_bound(len: usize) -> usize {
    2 + 6 * len
}

/// Most bytes of a list of `n` addresses, brackets and commas included.
const fn addrs_bound(n: usize) -> usize {
    2 + n * (ADDR_BOUND + 1)
}

/// Reserves `bound` bytes at the end of `out`, lets `write` fill them through a [`Raw`]
/// writer, and keeps what it wrote.
///
/// # Safety
///
/// `write` writes at most `bound` bytes (each piece's bound is reckoned from the same members
/// it writes; debug builds check every write).
#[inline(always)]
unsafe fn write_bounded(out: &mut Vec<u8>, bound: usize, write: impl FnOnce(&mut Raw)) {
    out.reserve(bound);
    let len = out.len();
    // SAFETY: `reserve` made room for `bound` bytes after the first `len`.
    let start = unsafe { out.as_mut_ptr().add(len) };
    let mut w = Raw {
        at: start,
        #[cfg(debug_assertions)]
        end: unsafe { start.add(bound) },
    };
    write(&mut w);
    // SAFETY: `w` advanced from `start` over the bytes it wrote, at most `bound` of them (the
    // caller's promise), all initialised.
    unsafe {
        let written = w.at.offset_from(start) as usize;
        out.set_len(len + written);
    }
}

/// A writer over room reserved by [`write_bounded`]: writes are not checked against the room
/// in release builds (the piece's bound covers them), only in debug builds.
struct Raw {
    at: *mut u8,
    #[cfg(debug_assertions)]
    end: *mut u8,
}

impl Raw {
    /// Claims the next `n` bytes; where they start.
    #[inline(always)]
    fn claim(&mut self, n: usize) -> *mut u8 {
        #[cfg(debug_assertions)]
        assert!(
            (self.end as usize).wrapping_sub(self.at as usize) >= n,
            "answer piece over its bound"
        );
        let at = self.at;
        // SAFETY: the piece's bound covers these bytes (see `write_bounded`), so `at + n`
        // stays inside the reserved room.
        self.at = unsafe { at.add(n) };
        at
    }

    #[inline(always)]
    fn put(&mut self, bytes: &[u8]) {
        let at = self.claim(bytes.len());
        // SAFETY: `claim` gave `bytes.len()` bytes of reserved room, which cannot overlap
        // `bytes` (a shared borrow of other memory).
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), at, bytes.len()) };
    }

    #[inline(always)]
    fn byte(&mut self, b: u8) {
        let at = self.claim(1);
        // SAFETY: `claim` gave one byte of reserved room.
        unsafe { at.write(b) };
    }

    /// Writes all `N` bytes of `bytes` but keeps only the first `len` (`len <= N`): a
    /// fixed-size copy instead of a variable-length one. Needs `N - len` bytes of slack,
    /// which the bounds leave.
    #[inline(always)]
    fn put_prefix<const N: usize>(&mut self, bytes: &[u8; N], len: usize) {
        debug_assert!(len <= N);
        let at = self.claim(N);
        // SAFETY: `claim` gave `N` bytes of reserved room; only `len` of them are kept.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), at, N);
            self.at = at.add(len);
        }
    }

    /// A decimal integer.
    #[inline(always)]
    fn num(&mut self, n: u64) {
        if n < 10 {
            self.byte(b'0' + n as u8);
        } else {
            self.put(itoa::Buffer::new().format(n).as_bytes());
        }
    }

    /// A port number in decimal: two digits at a time from a table, assembled in a word and
    /// written as one fixed eight-byte copy (the bounds leave the slack).
    #[inline(always)]
    fn port(&mut self, port: u16) {
        let n = usize::from(port);
        let len = 1
            + usize::from(n >= 10)
            + usize::from(n >= 100)
            + usize::from(n >= 1000)
            + usize::from(n >= 10000);
        // Five digits, leading zeros included, first digit in the lowest byte; shifted so the
        // first significant digit comes first.
        let (high, low) = (n / 100, n % 100);
        let text = u64::from(b'0' + (high / 100) as u8)
            | u64::from(u16::from_le_bytes(DIGITS2[high % 100])) << 8
            | u64::from(u16::from_le_bytes(DIGITS2[low])) << 24;
        self.put_prefix(&(text >> (8 * (5 - len))).to_le_bytes(), len);
    }

    /// Copies `bytes` if they are all ASCII with nothing JSON must escape (the usual id or
    /// transaction id), checking and copying in one pass; otherwise writes nothing and
    /// returns false. Needs room for `bytes.len()` bytes.
    #[inline(always)]
    fn put_plain(&mut self, bytes: &[u8]) -> bool {
        let len = bytes.len();
        #[cfg(debug_assertions)]
        assert!(
            (self.end as usize).wrapping_sub(self.at as usize) >= len,
            "answer piece over its bound"
        );
        let (src, dst) = (bytes.as_ptr(), self.at);
        #[cfg(target_arch = "x86_64")]
        if len >= 16 {
            use std::arch::x86_64::{
                __m128i, _mm_cmpeq_epi8, _mm_cmplt_epi8, _mm_loadu_si128, _mm_movemask_epi8,
                _mm_or_si128, _mm_set1_epi8, _mm_setzero_si128, _mm_storeu_si128,
            };
            // SAFETY: SSE2 is part of x86_64. Every load reads 16 bytes inside `bytes` (the
            // last one ends at `len`), every store writes 16 bytes inside the `len` bytes of
            // room at `dst` (the caller's bound), and a store never overlaps `bytes`.
            unsafe {
                let quote = _mm_set1_epi8(b'"' as i8);
                let backslash = _mm_set1_epi8(b'\\' as i8);
                let space = _mm_set1_epi8(0x20);
                // Flags a byte that is a quote, a backslash, or below 0x20 as a signed byte:
                // control characters and every byte from 0x80.
                let flags = |v: __m128i| {
                    _mm_or_si128(
                        _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
                        _mm_cmplt_epi8(v, space),
                    )
                };
                let mut bad = _mm_setzero_si128();
                let mut i = 0;
                while i + 16 <= len {
                    let v = _mm_loadu_si128(src.add(i).cast::<__m128i>());
                    bad = _mm_or_si128(bad, flags(v));
                    _mm_storeu_si128(dst.add(i).cast::<__m128i>(), v);
                    i += 16;
                }
                if i < len {
                    // The last 16 bytes, overlapping the ones before.
                    let v = _mm_loadu_si128(src.add(len - 16).cast::<__m128i>());
                    bad = _mm_or_si128(bad, flags(v));
                    _mm_storeu_si128(dst.add(len - 16).cast::<__m128i>(), v);
                }
                if _mm_movemask_epi8(bad) != 0 {
                    return false;
                }
                self.at = dst.add(len);
            }
            return true;
        }
        if !plain_ascii(bytes) {
            return false;
        }
        // SAFETY: room for `len` bytes at `dst` (the caller's bound), not overlapping `bytes`.
        unsafe {
            std::ptr::copy_nonoverlapping(src, dst, len);
            self.at = dst.add(len);
        }
        true
    }

    /// Identifier bytes as a JSON string: as text when they are UTF-8, else lower-case hex
    /// (the reference's `put_id`). Plain ASCII with nothing to escape is copied whole.
    #[inline(always)]
    fn id(&mut self, bytes: &[u8]) {
        self.byte(b'"');
        if self.put_plain(bytes) {
            self.byte(b'"');
        } else {
            // SAFETY: gives back the quote just written (the slow path writes its own).
            self.at = unsafe { self.at.sub(1) };
            self.id_slow(bytes);
        }
    }

    #[cold]
    fn id_slow(&mut self, bytes: &[u8]) {
        match std::str::from_utf8(bytes) {
            Ok(s) => self.string(s),
            Err(_) => self.hex(bytes),
        }
    }

    /// A JSON string literal. RFC 8259 §7: `"`, `\` and control characters are escaped;
    /// everything else (including non-ASCII UTF-8) is written as it is.
    fn string(&mut self, s: &str) {
        let bytes = s.as_bytes();
        self.byte(b'"');
        if self.put_plain(bytes) {
            self.byte(b'"');
            return;
        }
        let mut plain_from = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let escape: &[u8] = match b {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0x00..=0x1f => b"",
                _ => continue,
            };
            self.put(&bytes[plain_from..i]);
            if escape.is_empty() {
                self.put(b"\\u00");
                self.put(&hex::pair(b));
            } else {
                self.put(escape);
            }
            plain_from = i + 1;
        }
        self.put(&bytes[plain_from..]);
        self.byte(b'"');
    }

    fn hex(&mut self, bytes: &[u8]) {
        self.byte(b'"');
        for &b in bytes {
            self.put(&hex::pair(b));
        }
        self.byte(b'"');
    }

    /// Dotted decimal (RFC 3986 IPv4address), as `Display` writes it.
    #[inline(always)]
    fn ipv4(&mut self, ip: Ipv4Addr) {
        let [a, b, c, d] = ip.octets();
        // Each octet with its dot as one four-byte copy; the last one's dot is overwritten.
        for n in [a, b, c] {
            let text = &OCTETS[usize::from(n)];
            self.put_prefix(&[text[0], text[1], text[2], text[3]], usize::from(text[4]));
        }
        let text = &OCTETS[usize::from(d)];
        self.put_prefix(&[text[0], text[1], text[2]], usize::from(text[4]) - 1);
    }

    /// The RFC 5952 text form, exactly as `Display for Ipv6Addr` writes it: an IPv4-mapped
    /// address as `::ffff:a.b.c.d`, otherwise lower-case hex groups with the first longest run
    /// of two or more zero groups written as `::`.
    fn ipv6(&mut self, ip: Ipv6Addr) {
        if let Some(v4) = ip.to_ipv4_mapped() {
            self.put(b"::ffff:");
            self.ipv4(v4);
            return;
        }
        let groups = ip.segments();
        let (mut best_at, mut best_len, mut run_at, mut run_len) = (0, 0, 0, 0);
        for (i, &g) in groups.iter().enumerate() {
            if g == 0 {
                if run_len == 0 {
                    run_at = i;
                }
                run_len += 1;
                if run_len > best_len {
                    (best_at, best_len) = (run_at, run_len);
                }
            } else {
                run_len = 0;
            }
        }
        if best_len > 1 {
            self.hex_groups(&groups[..best_at]);
            self.put(b"::");
            self.hex_groups(&groups[best_at + best_len..]);
        } else {
            self.hex_groups(&groups);
        }
    }

    fn hex_groups(&mut self, groups: &[u16]) {
        for (i, &g) in groups.iter().enumerate() {
            if i > 0 {
                self.byte(b':');
            }
            // Lower-case hex without leading zeros.
            let digits = (4 - (g.leading_zeros() / 4) as usize).max(1);
            let text = [
                HEX[usize::from(g >> 12)],
                HEX[usize::from((g >> 8) & 0xf)],
                HEX[usize::from((g >> 4) & 0xf)],
                HEX[usize::from(g & 0xf)],
            ];
            let mut shifted = [0u8; 4];
            shifted[..digits].copy_from_slice(&text[4 - digits..]);
            self.put_prefix(&shifted, digits);
        }
    }
}

/// The two decimal digits of every number below 100.
static DIGITS2: [[u8; 2]; 100] = {
    let mut table = [[0u8; 2]; 100];
    let mut n = 0;
    while n < 100 {
        table[n] = [b'0' + (n / 10) as u8, b'0' + (n % 10) as u8];
        n += 1;
    }
    table
};

/// The decimal text of every octet followed by a dot (up to four bytes), then its length.
static OCTETS: [[u8; 5]; 256] = {
    let mut table = [[0u8; 5]; 256];
    let mut n = 0;
    while n < 256 {
        let (h, t, u) = ((n / 100) as u8, (n / 10 % 10) as u8, (n % 10) as u8);
        table[n] = if n >= 100 {
            [b'0' + h, b'0' + t, b'0' + u, b'.', 4]
        } else if n >= 10 {
            [b'0' + t, b'0' + u, b'.', 0, 3]
        } else {
            [b'0' + u, b'.', 0, 0, 2]
        };
        n += 1;
    }
    table
};

/// Whether `bytes` are all ASCII with nothing JSON must escape, checked eight at a time: the
/// flags of every word are ORed and tested once; the last word of an id that is not a whole
/// number of words overlaps the one before it.
#[inline(always)]
fn plain_ascii(bytes: &[u8]) -> bool {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    #[inline(always)]
    fn word(b: &[u8]) -> u64 {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[..8]);
        u64::from_le_bytes(w)
    }
    let len = bytes.len();
    if len < 8 {
        return bytes
            .iter()
            .all(|&b| b >= 0x20 && b != b'"' && b != b'\\' && b < 0x80);
    }
    let mut flags = 0;
    let mut at = 0;
    while at + 8 <= len {
        flags |= escape_flags(word(&bytes[at..]));
        at += 8;
    }
    if at < len {
        flags |= escape_flags(word(&bytes[len - 8..]));
    }
    flags & HIGH == 0
}

/// The opening of an address object up to its address text, by family (equal lengths, so
/// the copy has a constant length whichever is chosen).
const ADDR_OPEN_V4: &[u8; 48] = b"{\"ip_address\":{\"address_type\":\"ipv4\",\"address\":\"";
const ADDR_OPEN_V6: &[u8; 48] = b"{\"ip_address\":{\"address_type\":\"ipv6\",\"address\":\"";
/// The same after a plain peer id's closing quote and the `peer_addr` member name.
const PEER_ADDR_OPEN_V4: &[u8; 62] =
    b"\",\"peer_addr\":{\"ip_address\":{\"address_type\":\"ipv4\",\"address\":\"";
const PEER_ADDR_OPEN_V6: &[u8; 62] =
    b"\",\"peer_addr\":{\"ip_address\":{\"address_type\":\"ipv6\",\"address\":\"";

/// RFC 7846 §3.2.4 `ppsp_tp_peer_addr_t`, with `asn` as a string as the schema says; at most
/// [`ADDR_BOUND`] bytes.
#[inline(always)]
fn peer_addr(w: &mut Raw, a: &PeerAddr) {
    w.put(if a.addr.is_ipv4() {
        ADDR_OPEN_V4
    } else {
        ADDR_OPEN_V6
    });
    peer_addr_rest(w, a);
}

/// An address object after its opening ([`ADDR_OPEN_V4`]): the address text, the port and
/// the other members, and the closing brace.
#[inline(always)]
fn peer_addr_rest(w: &mut Raw, a: &PeerAddr) {
    match a.addr {
        SocketAddr::V4(v4) => w.ipv4(*v4.ip()),
        SocketAddr::V6(v6) => w.ipv6(*v6.ip()),
    }
    w.put(b"\"},\"port\":");
    w.port(a.addr.port());
    // One constant-length copy per arm (a length chosen by a match would be a memcpy call).
    // The usual address (priority 1, nothing optional) ends with one fragment.
    if a.priority == 1 && a.connection.is_none() && a.asn.is_none() && !a.ppsp_pp {
        match a.kind {
            AddrType::Host => w.put(b",\"priority\":1,\"type\":\"HOST\"}"),
            AddrType::Reflexive => w.put(b",\"priority\":1,\"type\":\"REFLEXIVE\"}"),
            AddrType::Proxy => w.put(b",\"priority\":1,\"type\":\"PROXY\"}"),
        }
        return;
    }
    w.put(b",\"priority\":");
    w.num(u64::from(a.priority));
    match a.kind {
        AddrType::Host => w.put(b",\"type\":\"HOST\""),
        AddrType::Reflexive => w.put(b",\"type\":\"REFLEXIVE\""),
        AddrType::Proxy => w.put(b",\"type\":\"PROXY\""),
    }
    match a.connection {
        None => {}
        Some(LinkKind::Wired) => w.put(b",\"connection\":\"wired\""),
        Some(LinkKind::Wireless) => w.put(b",\"connection\":\"wireless\""),
    }
    if let Some(asn) = a.asn {
        w.put(b",\"asn\":\"");
        w.num(u64::from(asn));
        w.byte(b'"');
    }
    if a.ppsp_pp {
        w.put(b",\"peer_protocol\":\"PPSP-PP\"");
    }
    w.byte(b'}');
}

/// At most [`addrs_bound`] bytes.
fn peer_addr_list(w: &mut Raw, addrs: &[PeerAddr]) {
    w.byte(b'[');
    for (i, a) in addrs.iter().enumerate() {
        if i > 0 {
            w.byte(b',');
        }
        peer_addr(w, a);
    }
    w.byte(b']');
}

/// Most bytes of one `peer_info` entry, its leading comma included.
#[inline(always)]
fn peer_info_bound(p: &PeerInfo) -> usize {
    48 + str_bound(p.id_len()) + addrs_bound(p.addrs().len())
}

/// One `peer_info` entry, after a comma unless it is the `first`; a single address as an
/// object, several as an array (RFC 7846 §3.2.4 and examples E4/E6). At most
/// [`peer_info_bound`] bytes.
#[inline(always)]
fn peer_info(w: &mut Raw, p: &PeerInfo, first: bool) {
    let mut id_buf = [0u8; MAX_ID_BYTES];
    let id = p.id_bytes(&mut id_buf);
    let addrs = p.addrs();
    let addrs = addrs.as_slice();
    // The id's quotes go with the fragments around it.
    w.put(if first {
        b"{\"peer_id\":\"\""
    } else {
        b",{\"peer_id\":\""
    });
    if first {
        // SAFETY: the first entry has no comma: one byte less (the fragments have one
        // length so that the copy's is constant).
        w.at = unsafe { w.at.sub(1) };
    }
    if w.put_plain(id) {
        match addrs {
            [] => w.put(b"\"}"),
            // The usual entry: the id's closing quote, the member name and the address
            // object's opening in one fragment.
            [one] => {
                w.put(if one.addr.is_ipv4() {
                    PEER_ADDR_OPEN_V4
                } else {
                    PEER_ADDR_OPEN_V6
                });
                peer_addr_rest(w, one);
                w.byte(b'}');
            }
            many => {
                w.put(b"\",\"peer_addr\":");
                peer_addr_list(w, many);
                w.byte(b'}');
            }
        }
        return;
    }
    // SAFETY: gives back the id's opening quote (the slow path writes its own).
    w.at = unsafe { w.at.sub(1) };
    w.id_slow(id);
    match addrs {
        [] => w.byte(b'}'),
        [one] => {
            w.put(b",\"peer_addr\":");
            peer_addr(w, one);
            w.byte(b'}');
        }
        many => {
            w.put(b",\"peer_addr\":");
            peer_addr_list(w, many);
            w.byte(b'}');
        }
    }
}

/// RFC 7846 §3.3.4 `ppsp_tp_swarm_action_result_t` (see the reference encoder), after a comma
/// unless it is the `first`: the result's opening, each listed peer, and its close, each
/// written into its own reserved room.
fn swarm_result(out: &mut Vec<u8>, r: &SwarmResult, first: bool) {
    let id = r.swarm_id.as_bytes();
    // SAFETY: 96 bytes cover the comma, the fixed members and an error code of at most
    // NUM_BOUND digits, besides the id's own bound.
    unsafe {
        write_bounded(out, 96 + str_bound(id.len()), |w| {
            if !first {
                w.byte(b',');
            }
            w.put(b"{\"swarm_id\":");
            w.id(id);
            if r.result == ErrorCode::Ok {
                w.put(b",\"result\":0");
                if r.peers.is_some() {
                    w.put(b",\"peer_group\":{\"peer_info\":[");
                }
            } else {
                w.put(b",\"result\":1,\"error_code\":");
                w.num(u64::from(r.result.code()));
            }
        })
    };
    if r.result == ErrorCode::Ok {
        if let Some(peers) = &r.peers {
            for (i, p) in peers.iter().enumerate() {
                // SAFETY: `peer_info` writes at most `peer_info_bound` bytes.
                unsafe { write_bounded(out, peer_info_bound(p), |w| peer_info(w, p, i == 0)) };
            }
            out.extend_from_slice(b"]}");
        }
    }
    out.push(b'}');
}

/// At most `160 + str_bound(swarm.len()) + 6 * NUM_BOUND` bytes.
fn swarm_stats(w: &mut Raw, swarm: &[u8], s: &SwarmStats) {
    w.put(b"{\"swarm_id\":");
    w.id(swarm);
    w.put(b",\"peers\":");
    w.num(u64::from(s.peers));
    w.put(b",\"seeders\":");
    w.num(u64::from(s.seeders));
    w.put(b",\"leechers\":");
    w.num(u64::from(s.leechers));
    w.put(b",\"completed\":");
    w.num(u64::from(s.completed));
    w.put(b",\"uploaded_bytes\":");
    w.num(s.uploaded_bytes);
    w.put(b",\"downloaded_bytes\":");
    w.num(s.downloaded_bytes);
    w.byte(b'}');
}

/// Most bytes of [`peer_status`]'s object.
fn peer_status_bound(p: &PeerStatus) -> usize {
    let swarms: usize = p
        .swarms
        .iter()
        .map(|(s, _)| 40 + str_bound(s.as_bytes().len()))
        .sum();
    160 + str_bound(p.peer_id.as_bytes().len())
        + NUM_BOUND
        + addrs_bound(p.addrs.len())
        + swarms
        + str_bound(16)
}

fn peer_status(w: &mut Raw, p: &PeerStatus) {
    w.put(b"{\"peer_id\":");
    w.id(p.peer_id.as_bytes());
    w.put(match p.state {
        PeerState::PeerRegistered => b",\"state\":\"PEER_REGISTERED\",\"online_time\":",
        PeerState::Tracking => b",\"state\":\"TRACKING\",\"online_time\":",
    });
    w.num(p.online_ms / 1000);
    w.put(b",\"peer_addr\":");
    peer_addr_list(w, &p.addrs);
    w.put(b",\"swarms\":[");
    for (i, (swarm, mode)) in p.swarms.iter().enumerate() {
        if i > 0 {
            w.byte(b',');
        }
        w.put(b"{\"swarm_id\":");
        w.id(swarm.as_bytes());
        w.put(match mode {
            PeerMode::Seeder => b",\"peer_mode\":\"SEEDER\"}",
            PeerMode::Leech => b",\"peer_mode\":\"LEECH\"}",
        });
    }
    w.byte(b']');
    if let Some(node) = &p.connection_tracker {
        w.put(b",\"connection_tracker\":");
        w.hex(node);
    }
    w.byte(b'}');
}

fn answer(out: &mut Vec<u8>, a: &Answer) {
    if let Some(reflexive) = &a.reflexive {
        // SAFETY: the member name and one address.
        unsafe {
            write_bounded(out, 16 + ADDR_BOUND, |w| {
                w.put(b",\"peer_addr\":");
                peer_addr(w, reflexive);
            })
        };
    }
    // One result as a bare object (RFC 7846 examples E4, E6, E8), several as an array.
    match a.swarm_results.as_slice() {
        [] => {}
        [one] => {
            out.extend_from_slice(b",\"swarm_result\":");
            swarm_result(out, one, true);
        }
        many => {
            out.extend_from_slice(b",\"swarm_result\":[");
            for (i, r) in many.iter().enumerate() {
                swarm_result(out, r, i == 0);
            }
            out.push(b']');
        }
    }
    match &a.stat {
        None => {}
        Some(StatAnswer::Swarm(swarm, stats)) => {
            let swarm = swarm.as_bytes();
            // SAFETY: the member name (16 bytes) and `swarm_stats`'s bound.
            unsafe {
                write_bounded(out, 176 + str_bound(swarm.len()) + 6 * NUM_BOUND, |w| {
                    w.put(b",\"stat_result\":");
                    swarm_stats(w, swarm, stats);
                })
            };
        }
        Some(StatAnswer::Peer(status)) => {
            // SAFETY: the member name (16 bytes) and `peer_status`'s bound.
            unsafe {
                write_bounded(out, 16 + peer_status_bound(status), |w| {
                    w.put(b",\"stat_result\":");
                    peer_status(w, status);
                })
            };
        }
    }
}

/// About how many bytes the answer to `response` takes (peers with a 40-byte id and one IPv4
/// address, no escapes), reckoned without reading the peers: a hint for the HTTP head's
/// `Content-Length` room, not a bound.
pub(super) fn typical_len(response: &Response, transaction_id: Option<&TransactionId>) -> usize {
    let mut len = 80 + transaction_id.map_or(0, |t| 20 + t.0.len());
    if let Response::Ok(a) = response {
        len += a.reflexive.as_ref().map_or(0, |_| 120);
        for r in &a.swarm_results {
            len += 64 + r.swarm_id.as_bytes().len() + r.peers.as_ref().map_or(0, |p| 175 * p.len());
        }
        len += a.stat.as_ref().map_or(0, |_| 200);
    }
    len
}

/// Appends the JSON answer to `response` to `out` (see the module comment).
pub(super) fn encode_response(
    response: &Response,
    transaction_id: Option<&TransactionId>,
    out: &mut Vec<u8>,
) {
    let code = response.error_code();
    let head_bound = 128 + transaction_id.map_or(0, |t| str_bound(t.0.len()));
    // SAFETY: 128 bytes cover the fixed members and the error code's digits, besides the
    // transaction id's own bound.
    unsafe {
        write_bounded(out, head_bound, |w| {
            w.put(if code == ErrorCode::Ok {
                b"{\"PPSPTrackerProtocol\":{\"version\":1,\"response_type\":0,\"error_code\":"
            } else {
                b"{\"PPSPTrackerProtocol\":{\"version\":1,\"response_type\":1,\"error_code\":"
            });
            w.num(u64::from(code.code()));
            if let Some(t) = transaction_id {
                w.put(b",\"transaction_id\":");
                w.string(&t.0);
            }
        })
    };
    // RFC 7846 §4.3: errors carry no peer_addr and no swarm_result.
    if let Response::Ok(a) = response {
        answer(out, a);
    }
    out.extend_from_slice(b"}}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The longest address and peer entry fit their bounds (debug builds check every write
    /// against the room) and are the reference encoder's bytes.
    #[test]
    fn longest_members_fit_their_bounds() {
        use crate::engine::{PeerId, SwarmId};
        let longest = PeerAddr {
            addr: "[1234:5678:9abc:def0:1234:5678:9abc:def0]:65535"
                .parse()
                .unwrap(),
            priority: u32::MAX,
            kind: AddrType::Reflexive,
            connection: Some(LinkKind::Wireless),
            asn: Some(u32::MAX),
            ppsp_pp: true,
        };
        let mut w_bytes = Vec::new();
        // SAFETY: the bound under test; debug builds check it.
        unsafe { write_bounded(&mut w_bytes, ADDR_BOUND, |w| peer_addr(w, &longest)) };
        assert!(w_bytes.len() <= ADDR_BOUND, "{}", w_bytes.len());
        let id = PeerId::from_stored(&[0x01; 64]);
        let peer = PeerInfo::new(id, PeerMode::Leech, &[longest; 4]);
        let response = Response::Ok(Answer {
            reflexive: Some(longest),
            swarm_results: vec![SwarmResult {
                swarm_id: SwarmId::from_stored(&[b'"'; 64]),
                result: ErrorCode::Ok,
                peers: Some(vec![peer.clone(), peer]),
            }],
            stat: None,
        });
        let txid = TransactionId("\u{1}".repeat(64));
        let mut fast = Vec::new();
        encode_response(&response, Some(&txid), &mut fast);
        let mut reference = Vec::new();
        super::super::encode_reference::encode_response(&response, Some(&txid), &mut reference);
        assert_eq!(fast, reference);
    }

    proptest! {
        /// The word-wise test agrees with a byte-by-byte one at every length and position.
        #[test]
        fn plain_ascii_is_exact(
            mut bytes in prop::collection::vec(0x20u8..0x7f, 0..80),
            odd in any::<u8>(),
            at in any::<prop::sample::Index>(),
            put_odd in any::<bool>(),
        ) {
            if put_odd && !bytes.is_empty() {
                let i = at.index(bytes.len());
                bytes[i] = odd;
            }
            let want = bytes.iter().all(|&b| b >= 0x20 && b != b'"' && b != b'\\' && b < 0x80);
            prop_assert_eq!(plain_ascii(&bytes), want);
            // The one-pass check and copy agrees, and copies exactly the bytes when plain.
            let mut out = b"head".to_vec();
            let mut copied = None;
            // SAFETY: `put_plain` writes at most `bytes.len()` bytes.
            unsafe {
                write_bounded(&mut out, bytes.len(), |w| copied = Some(w.put_plain(&bytes)));
            }
            prop_assert_eq!(copied, Some(want));
            let mut expected = b"head".to_vec();
            if want {
                expected.extend_from_slice(&bytes);
            }
            prop_assert_eq!(out, expected);
        }
    }
}
