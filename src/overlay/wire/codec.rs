//! Presentation-language primitives (RFC 6940 §6.3.1): big-endian integers and vectors whose
//! length prefix is as wide as the smallest integer that holds the range's maximum
//! (`<0..2^8-1>` is one byte, `<0..2^16-1>` two, `<0..2^24-1>` three, `<0..2^32-1>` four).
//!
//! [`Reader`] never panics and never allocates: every read checks the bytes that remain first,
//! and a length-prefixed field is returned as a borrowed slice or a sub-reader confined to it,
//! so a declared length larger than the input fails before anything is copied.

use super::error::{EncodeError, WireError};

/// Width of a vector's length prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Prefix {
    /// `<0..2^8-1>`
    U8,
    /// `<0..2^16-1>`
    U16,
    /// `<0..2^24-1>`
    U24,
    /// `<0..2^32-1>`
    U32,
}

impl Prefix {
    pub(crate) const fn max(self) -> usize {
        match self {
            Prefix::U8 => 0xff,
            Prefix::U16 => 0xffff,
            Prefix::U24 => 0xff_ffff,
            Prefix::U32 => 0xffff_ffff,
        }
    }

    pub(crate) const fn width(self) -> usize {
        match self {
            Prefix::U8 => 1,
            Prefix::U16 => 2,
            Prefix::U24 => 3,
            Prefix::U32 => 4,
        }
    }
}

/// A bounds-checked cursor over input bytes.
#[derive(Clone, Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The unread bytes.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or(&[])
    }

    pub(crate) fn bytes(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], WireError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(WireError::Truncated { field })?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or(WireError::Truncated { field })?;
        self.pos = end;
        Ok(s)
    }

    pub(crate) fn array<const N: usize>(
        &mut self,
        field: &'static str,
    ) -> Result<[u8; N], WireError> {
        let s = self.bytes(N, field)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, WireError> {
        Ok(self.array::<1>(field)?[0])
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn u24(&mut self, field: &'static str) -> Result<u32, WireError> {
        let [a, b, c] = self.array::<3>(field)?;
        Ok(u32::from_be_bytes([0, a, b, c]))
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    /// `enum { false(0), true(1), (255) } Boolean` (§6.3.1.1); any other byte is invalid.
    pub(crate) fn boolean(&mut self, field: &'static str) -> Result<bool, WireError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(WireError::InvalidValue { field }),
        }
    }

    pub(crate) fn length(
        &mut self,
        prefix: Prefix,
        field: &'static str,
    ) -> Result<usize, WireError> {
        let n = match prefix {
            Prefix::U8 => u32::from(self.u8(field)?),
            Prefix::U16 => u32::from(self.u16(field)?),
            Prefix::U24 => self.u24(field)?,
            Prefix::U32 => self.u32(field)?,
        };
        usize::try_from(n).map_err(|_| WireError::Truncated { field })
    }

    /// An `opaque x<..>` vector: length prefix, then that many bytes.
    pub(crate) fn opaque(
        &mut self,
        prefix: Prefix,
        field: &'static str,
    ) -> Result<&'a [u8], WireError> {
        let n = self.length(prefix, field)?;
        self.bytes(n, field)
    }

    /// A reader confined to the next `n` bytes.
    pub(crate) fn sub(&mut self, n: usize, field: &'static str) -> Result<Reader<'a>, WireError> {
        Ok(Reader::new(self.bytes(n, field)?))
    }

    /// A reader confined to a length-prefixed vector of structures.
    pub(crate) fn sub_prefixed(
        &mut self,
        prefix: Prefix,
        field: &'static str,
    ) -> Result<Reader<'a>, WireError> {
        Ok(Reader::new(self.opaque(prefix, field)?))
    }

    /// Decodes items until this (sub-)reader is exhausted. Each item consumes at least one
    /// byte or the loop stops with an error, so the vector never outgrows the input.
    pub(crate) fn list<T>(
        mut self,
        field: &'static str,
        mut item: impl FnMut(&mut Reader<'a>) -> Result<T, WireError>,
    ) -> Result<Vec<T>, WireError> {
        let mut out = Vec::new();
        while !self.is_empty() {
            let before = self.pos;
            out.push(item(&mut self)?);
            if self.pos == before {
                return Err(WireError::InvalidValue { field });
            }
        }
        Ok(out)
    }

    /// Requires that every byte was consumed.
    pub(crate) fn finish(&self, field: &'static str) -> Result<(), WireError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(WireError::LengthMismatch { field })
        }
    }
}

pub(crate) fn put_u8(out: &mut Vec<u8>, v: u8) {
    out.push(v);
}

pub(crate) fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub(crate) fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub(crate) fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub(crate) fn put_bool(out: &mut Vec<u8>, v: bool) {
    out.push(u8::from(v));
}

/// Checks that `len` fits `prefix` and returns it as the prefix's integer.
pub(crate) fn check_len(
    len: usize,
    prefix: Prefix,
    field: &'static str,
) -> Result<u32, EncodeError> {
    if len > prefix.max() {
        return Err(EncodeError {
            field,
            len,
            max: prefix.max(),
        });
    }
    // `prefix.max()` is at most u32::MAX, so this conversion cannot fail after the check.
    u32::try_from(len).map_err(|_| EncodeError {
        field,
        len,
        max: prefix.max(),
    })
}

fn write_len_at(out: &mut [u8], at: usize, len: u32, prefix: Prefix) {
    let be = len.to_be_bytes();
    let w = prefix.width();
    if let Some(dst) = out.get_mut(at..at + w) {
        dst.copy_from_slice(&be[4 - w..]);
    }
}

/// Writes an `opaque x<..>` vector.
pub(crate) fn put_opaque(
    out: &mut Vec<u8>,
    prefix: Prefix,
    field: &'static str,
    v: &[u8],
) -> Result<(), EncodeError> {
    let n = check_len(v.len(), prefix, field)?;
    let at = out.len();
    out.resize(at + prefix.width(), 0);
    write_len_at(out, at, n, prefix);
    out.extend_from_slice(v);
    Ok(())
}

/// Writes a length prefix, then whatever `body` writes, then back-fills the prefix.
pub(crate) fn put_prefixed(
    out: &mut Vec<u8>,
    prefix: Prefix,
    field: &'static str,
    body: impl FnOnce(&mut Vec<u8>) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    let at = out.len();
    out.resize(at + prefix.width(), 0);
    body(out)?;
    let n = check_len(out.len() - at - prefix.width(), prefix, field)?;
    write_len_at(out, at, n, prefix);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_rejects_declared_length_beyond_input() {
        // A 4-byte prefix declaring ~4 GiB over a 6-byte input fails without allocating.
        let input = [0xff, 0xff, 0xff, 0xff, 1, 2];
        let mut r = Reader::new(&input);
        assert_eq!(
            r.opaque(Prefix::U32, "x"),
            Err(WireError::Truncated { field: "x" })
        );
    }

    #[test]
    fn prefixed_writer_backfills_each_width() {
        for (prefix, expect) in [
            (Prefix::U8, vec![3, 1, 2, 3]),
            (Prefix::U16, vec![0, 3, 1, 2, 3]),
            (Prefix::U24, vec![0, 0, 3, 1, 2, 3]),
            (Prefix::U32, vec![0, 0, 0, 3, 1, 2, 3]),
        ] {
            let mut out = Vec::new();
            put_prefixed(&mut out, prefix, "x", |o| {
                o.extend_from_slice(&[1, 2, 3]);
                Ok(())
            })
            .unwrap();
            assert_eq!(out, expect);
            let mut r = Reader::new(&out);
            assert_eq!(r.opaque(prefix, "x").unwrap(), &[1, 2, 3]);
            assert!(r.is_empty());
        }
    }

    #[test]
    fn opaque_longer_than_prefix_is_an_encode_error() {
        let mut out = Vec::new();
        let err = put_opaque(&mut out, Prefix::U8, "resource", &[0u8; 256]).unwrap_err();
        assert_eq!(err.max, 255);
        assert_eq!(err.len, 256);
    }

    #[test]
    fn boolean_rejects_values_other_than_zero_and_one() {
        assert_eq!(
            Reader::new(&[2]).boolean("b"),
            Err(WireError::InvalidValue { field: "b" })
        );
        assert_eq!(Reader::new(&[1]).boolean("b"), Ok(true));
    }
}
