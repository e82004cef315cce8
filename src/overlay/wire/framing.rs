//! The per-hop link framing of RFC 6940 §6.6.2, used on TLS/TCP links (§6.6.5):
//!
//! ```text
//! enum { data(128), ack(129), (255) } FramedMessageType;
//! struct {
//!   FramedMessageType  type;
//!   select (type) {
//!     case data: uint32  sequence;
//!                opaque  message<0..2^24-1>;     // 3-byte length
//!     case ack:  uint32  ack_sequence;
//!                uint32  received;
//!   };
//! } FramedMessage;
//! ```
//!
//! A data frame has an 8-byte prefix (`80`, sequence, 24-bit length); an ack is 9 bytes.
//! [`decode_frame`] works on whatever bytes a stream has delivered so far: it answers
//! [`Decoded::Incomplete`] until a whole frame is there, and rejects an oversize frame as soon
//! as its length is visible, before any of it is buffered.

use super::codec::{check_len, put_u32, put_u8, Prefix, Reader};
use super::error::{EncodeError, WireError};

/// `data(128)`.
pub const FRAME_TYPE_DATA: u8 = 128;
/// `ack(129)`.
pub const FRAME_TYPE_ACK: u8 = 129;
/// Bytes before a data frame's message: type, sequence, 24-bit length.
pub const DATA_FRAME_PREFIX_LEN: usize = 8;
/// Size of an ack frame.
pub const ACK_FRAME_LEN: usize = 9;

/// A data frame: one RELOAD message with this hop's sequence number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FramedData {
    pub seq: u32,
    pub payload: Vec<u8>,
}

/// An ack frame: the sequence number acknowledged, and the bitmask of the 32 sequence
/// numbers before it that were among the 32 most recently received.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ack {
    pub ack_seq: u32,
    pub received_bitmap: u32,
}

/// An owned frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Data(FramedData),
    Ack(Ack),
}

/// A frame decoded in place: a data frame's payload borrows the input buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameRef<'a> {
    Data { seq: u32, payload: &'a [u8] },
    Ack(Ack),
}

/// The outcome of [`decode_frame`] on a buffer that did not fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// More bytes are needed; `needed` is how many the buffer must hold at least (the whole
    /// frame once its length is known, otherwise the prefix).
    Incomplete { needed: usize },
    /// A whole frame, which occupied the first `consumed` bytes of the buffer.
    Frame {
        frame: FrameRef<'a>,
        consumed: usize,
    },
}

impl FrameRef<'_> {
    /// Copies the frame out of the buffer.
    pub fn to_owned_frame(&self) -> Frame {
        match *self {
            FrameRef::Data { seq, payload } => Frame::Data(FramedData {
                seq,
                payload: payload.to_vec(),
            }),
            FrameRef::Ack(a) => Frame::Ack(a),
        }
    }
}

/// Decodes the first frame of `buf`. A data frame whose message is longer than `max_payload`
/// (the overlay's max-message-size) is Error_Message_Too_Large; an unknown type byte is a
/// broken link and should close the connection.
pub fn decode_frame(buf: &[u8], max_payload: u32) -> Result<Decoded<'_>, WireError> {
    let Some(&ty) = buf.first() else {
        return Ok(Decoded::Incomplete { needed: 1 });
    };
    match ty {
        FRAME_TYPE_DATA => {
            if buf.len() < DATA_FRAME_PREFIX_LEN {
                return Ok(Decoded::Incomplete {
                    needed: DATA_FRAME_PREFIX_LEN,
                });
            }
            let mut r = Reader::new(buf);
            r.u8("FramedMessage.type")?;
            let seq = r.u32("FramedMessage.sequence")?;
            let len = r.u24("FramedMessage.message")?;
            if len > max_payload {
                return Err(WireError::MessageTooLarge {
                    len: u64::from(len),
                    max: max_payload,
                });
            }
            let total = DATA_FRAME_PREFIX_LEN + len as usize;
            if buf.len() < total {
                return Ok(Decoded::Incomplete { needed: total });
            }
            let payload = r.bytes(len as usize, "FramedMessage.message")?;
            Ok(Decoded::Frame {
                frame: FrameRef::Data { seq, payload },
                consumed: total,
            })
        }
        FRAME_TYPE_ACK => {
            if buf.len() < ACK_FRAME_LEN {
                return Ok(Decoded::Incomplete {
                    needed: ACK_FRAME_LEN,
                });
            }
            let mut r = Reader::new(buf);
            r.u8("FramedMessage.type")?;
            let ack = Ack {
                ack_seq: r.u32("FramedMessage.ack_sequence")?,
                received_bitmap: r.u32("FramedMessage.received")?,
            };
            Ok(Decoded::Frame {
                frame: FrameRef::Ack(ack),
                consumed: ACK_FRAME_LEN,
            })
        }
        other => Err(WireError::UnknownFrameType(other)),
    }
}

/// Appends a data frame carrying `message` without copying it into a [`FramedData`] first.
pub fn encode_data_frame(out: &mut Vec<u8>, seq: u32, message: &[u8]) -> Result<(), EncodeError> {
    let len = check_len(message.len(), Prefix::U24, "FramedMessage.message")?;
    put_u8(out, FRAME_TYPE_DATA);
    put_u32(out, seq);
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.extend_from_slice(message);
    Ok(())
}

impl FramedData {
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        encode_data_frame(out, self.seq, &self.payload)
    }
}

impl Ack {
    /// True when this ack confirms data frame `seq`: it is the acknowledged sequence itself or
    /// one whose bit [`AckTracker`] sets (`ack_seq - seq` in 1..=31).
    pub fn acknowledges(&self, seq: u32) -> bool {
        let k = self.ack_seq.wrapping_sub(seq);
        k == 0 || ((1..32).contains(&k) && self.received_bitmap & (1 << k) != 0)
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        put_u8(out, FRAME_TYPE_ACK);
        put_u32(out, self.ack_seq);
        put_u32(out, self.received_bitmap);
    }
}

impl Frame {
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            Frame::Data(d) => d.encode_into(out),
            Frame::Ack(a) => {
                a.encode_into(out);
                Ok(())
            }
        }
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        self.encode_into(&mut out)?;
        Ok(out)
    }
}

/// The receiver side of §6.6.2: remembers the sequence numbers of the 32 most recently
/// received data frames and builds the ack for each new one.
///
/// Read literally, the RFC sets "the N-M bit" for every remembered M with N-32 < M < N, where
/// N is the sequence being acknowledged: bit `N - M` counted from the least significant bit
/// (bit 0), so `N - M` is 1..=31 and bit 0 is never set.
#[derive(Clone, Debug, Default)]
pub struct AckTracker {
    recent: [u32; 32],
    len: usize,
    next: usize,
}

impl AckTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records data frame `seq` and returns the ack to send for it.
    pub fn on_data(&mut self, seq: u32) -> Ack {
        let mut bitmap = 0u32;
        for &m in self.recent.iter().take(self.len) {
            let k = seq.wrapping_sub(m);
            if (1..32).contains(&k) {
                bitmap |= 1 << k;
            }
        }
        if let Some(slot) = self.recent.get_mut(self.next) {
            *slot = seq;
        }
        self.next = (self.next + 1) % 32;
        self.len = (self.len + 1).min(32);
        Ack {
            ack_seq: seq,
            received_bitmap: bitmap,
        }
    }
}
