//! Lower-case hexadecimal text, the one table every writer of it shares: peer ids stored as
//! bytes and listed as text, PPSTP ids and `\u00XX` escapes, certificate fingerprints.

/// The sixteen lower-case hex digits.
pub const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// The two lower-case hex digits of every byte value, high nibble first.
pub static PAIRS: [[u8; 2]; 256] = {
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [DIGITS[i >> 4], DIGITS[i & 0xf]];
        i += 1;
    }
    t
};

/// The two lower-case hex digits of `b`.
#[inline(always)]
pub fn pair(b: u8) -> [u8; 2] {
    PAIRS[usize::from(b)]
}

/// Appends the lower-case hex of `bytes` (two digits per byte) to `out`.
pub fn push(out: &mut Vec<u8>, bytes: &[u8]) {
    let start = out.len();
    out.resize(start + 2 * bytes.len(), 0);
    expand_into(bytes, &mut out[start..]);
}

/// Writes the lower-case hex of `src` (two digits per byte) into `dst`, which must be exactly
/// `2 * src.len()` bytes long (otherwise it panics). A peer list expands every listed
/// peer's packed id with it, so on x86_64 an id of 16 bytes or more is expanded 16 bytes at a
/// time with SSE2 (part of the architecture), the last 16 overlapping the ones before.
#[inline]
pub fn expand_into(src: &[u8], dst: &mut [u8]) {
    assert_eq!(dst.len(), 2 * src.len(), "hex output is twice its input");
    #[cfg(target_arch = "x86_64")]
    if src.len() >= 16 {
        // SAFETY: SSE2 is part of x86_64; each load reads the 16 bytes of `src` at an offset
        // of at most `len - 16`, each store the 32 bytes of `dst` at twice that offset, all in
        // bounds (`dst` is twice `src`, checked above).
        unsafe {
            let last = src.len() - 16;
            let mut at = 0;
            while at < last {
                expand16(src.as_ptr().add(at), dst.as_mut_ptr().add(2 * at));
                at += 16;
            }
            expand16(src.as_ptr().add(last), dst.as_mut_ptr().add(2 * last));
        }
        return;
    }
    for (pair_out, &b) in dst.chunks_exact_mut(2).zip(src) {
        pair_out.copy_from_slice(&pair(b));
    }
}

/// The 32 hex digits of the 16 bytes at `src`, stored at `dst`.
///
/// # Safety
/// `src` must be readable for 16 bytes and `dst` writable for 32.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn expand16(src: *const u8, dst: *mut u8) {
    use std::arch::x86_64::{
        __m128i, _mm_add_epi8, _mm_and_si128, _mm_cmpgt_epi8, _mm_loadu_si128, _mm_set1_epi8,
        _mm_srli_epi16, _mm_storeu_si128, _mm_unpackhi_epi8, _mm_unpacklo_epi8,
    };
    let v = _mm_loadu_si128(src as *const __m128i);
    let nibble = _mm_set1_epi8(0x0f);
    let high = _mm_and_si128(_mm_srli_epi16(v, 4), nibble);
    let low = _mm_and_si128(v, nibble);
    // A nibble n becomes b'0' + n, plus 39 (b'a' - b'0' - 10) from 10 on.
    let digits = |n: __m128i| {
        let letter = _mm_and_si128(_mm_cmpgt_epi8(n, _mm_set1_epi8(9)), _mm_set1_epi8(39));
        _mm_add_epi8(_mm_add_epi8(n, _mm_set1_epi8(b'0' as i8)), letter)
    };
    // High nibble first: interleaving (high, low) puts each byte's pair in order.
    _mm_storeu_si128(dst as *mut __m128i, digits(_mm_unpacklo_epi8(high, low)));
    _mm_storeu_si128(
        dst.add(16) as *mut __m128i,
        digits(_mm_unpackhi_epi8(high, low)),
    );
}

/// The lower-case hex of `bytes` as a string.
pub fn string(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(2 * bytes.len());
    push(&mut out, bytes);
    // Invariant: hex digits are ASCII.
    String::from_utf8(out).expect("hex digits are ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_matches_the_formatter() {
        for b in 0..=255u8 {
            assert_eq!(pair(b), format!("{b:02x}").as_bytes());
        }
        assert_eq!(string(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        let mut out = b"x".to_vec();
        push(&mut out, &[0xde, 0xad]);
        assert_eq!(out, b"xdead");
        assert_eq!(string(&[]), "");
    }

    #[test]
    fn expansion_matches_the_table_at_every_length_and_byte() {
        let src: Vec<u8> = (0..=255u8).rev().chain(0..=255u8).collect();
        for len in 0..=64 {
            for start in [0, 1, 7, 100, 250, 400] {
                let bytes = &src[start..start + len];
                let mut dst = vec![0u8; 2 * len];
                expand_into(bytes, &mut dst);
                assert_eq!(dst, string(bytes).as_bytes(), "len {len} start {start}");
            }
        }
    }
}
