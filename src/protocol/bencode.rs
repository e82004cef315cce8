//! A small bencode writer (BEP 3 "bencoding") for the BitTorrent HTTP tracker answers.
//!
//! Only writing is needed on the tracker side: answers are built straight into the caller's
//! output buffer, with no intermediate tree. BEP 3 requires dictionary keys to be byte strings
//! in sorted order; the writer does not sort, so every caller writes its keys in order (the
//! tests of each caller check the exact bytes).

/// Appends an integer: `i<decimal>e`.
pub fn int(out: &mut Vec<u8>, value: i64) {
    out.push(b'i');
    let mut buf = itoa::Buffer::new();
    out.extend_from_slice(buf.format(value).as_bytes());
    out.push(b'e');
}

/// Appends the length prefix of a byte string (`<len>:`); the caller appends exactly `len`
/// bytes next. Used to stream compact peer lists without building them first.
pub fn bytes_header(out: &mut Vec<u8>, len: usize) {
    let mut buf = itoa::Buffer::new();
    out.extend_from_slice(buf.format(len).as_bytes());
    out.push(b':');
}

/// Appends a byte string: `<len>:<bytes>`.
pub fn bytes(out: &mut Vec<u8>, value: &[u8]) {
    bytes_header(out, value.len());
    out.extend_from_slice(value);
}

/// Appends a dictionary key followed by an integer value.
pub fn key_int(out: &mut Vec<u8>, key: &[u8], value: i64) {
    bytes(out, key);
    int(out, value);
}

/// Appends a dictionary key followed by a byte-string value.
pub fn key_bytes(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    bytes(out, key);
    bytes(out, value);
}

/// Opens a dictionary (`d`); close it with [`end`].
pub fn dict_begin(out: &mut Vec<u8>) {
    out.push(b'd');
}

/// Opens a list (`l`); close it with [`end`].
pub fn list_begin(out: &mut Vec<u8>) {
    out.push(b'l');
}

/// Closes the innermost dictionary or list (`e`).
pub fn end(out: &mut Vec<u8>) {
    out.push(b'e');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_strings_and_containers_match_bep3_examples() {
        let mut out = Vec::new();
        int(&mut out, 3);
        int(&mut out, -3);
        int(&mut out, 0);
        bytes(&mut out, b"spam");
        bytes(&mut out, b"");
        assert_eq!(out, b"i3ei-3ei0e4:spam0:");

        // BEP 3: d3:cow3:moo4:spam4:eggse represents {'cow': 'moo', 'spam': 'eggs'}
        let mut out = Vec::new();
        dict_begin(&mut out);
        key_bytes(&mut out, b"cow", b"moo");
        key_bytes(&mut out, b"spam", b"eggs");
        end(&mut out);
        assert_eq!(out, b"d3:cow3:moo4:spam4:eggse");

        // BEP 3: l4:spam4:eggse represents ['spam', 'eggs']
        let mut out = Vec::new();
        list_begin(&mut out);
        bytes(&mut out, b"spam");
        bytes(&mut out, b"eggs");
        end(&mut out);
        assert_eq!(out, b"l4:spam4:eggse");
    }

    #[test]
    fn extreme_integers_and_binary_strings() {
        let mut out = Vec::new();
        int(&mut out, i64::MIN);
        key_int(&mut out, b"\x00\xff", i64::MAX);
        assert_eq!(
            out,
            b"i-9223372036854775808e2:\x00\xffi9223372036854775807e".as_slice()
        );
    }
}
