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
    out.reserve(2 * bytes.len());
    for &b in bytes {
        out.extend_from_slice(&pair(b));
    }
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
}
