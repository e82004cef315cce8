//! Cheap access to a message for forwarding (RFC 6940 §6.1.2, §6.3.2): read the forwarding
//! header, change TTL, via and destination lists, and re-emit the message with its contents
//! and security block copied byte for byte, never parsed.
//!
//! Fragments are forwarded like whole messages; only the destination reassembles (§6.7).

use super::codec::Reader;
use super::error::{EncodeError, WireError};
use super::header::{Destination, ForwardingHeader, WireConfig, FIXED_HEADER_LEN};
use super::ids::NodeId;

/// Byte offset of the `ttl` field in an encoded message.
pub const TTL_OFFSET: usize = 11;

/// A message whose forwarding header is decoded and whose remainder (message contents and
/// security block, or a fragment's data) is left as bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeekedMessage<'a> {
    pub header: ForwardingHeader,
    rest: &'a [u8],
}

impl<'a> PeekedMessage<'a> {
    /// Decodes the forwarding header of `bytes`, which must hold exactly one message. Applies
    /// the receive checks of §6.3.2 (token, size, version, overlay, TTL above initial-ttl,
    /// fragment bit, declared length) and the list rules of §6.3.2.2; the rest is not read.
    pub fn peek(bytes: &'a [u8], cfg: &WireConfig) -> Result<Self, WireError> {
        let mut r = Reader::new(bytes);
        let header = ForwardingHeader::decode(&mut r, cfg)?;
        Ok(PeekedMessage {
            header,
            rest: r.rest(),
        })
    }

    /// The undecoded bytes after the forwarding header.
    pub fn rest(&self) -> &'a [u8] {
        self.rest
    }

    /// Appends the message with `self.header` (as modified) and the original remainder; the
    /// `length` field is recomputed.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.header.encode_into(out, self.rest.len())?;
        out.extend_from_slice(self.rest);
        Ok(())
    }

    /// The re-encoded message.
    pub fn to_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(FIXED_HEADER_LEN + self.rest.len() + 64);
        self.encode_into(&mut out)?;
        Ok(out)
    }
}

impl ForwardingHeader {
    /// The header changes a peer makes before passing a request on (§6.1.2, §6.3.2):
    /// refuse FORWARD_CRITICAL options (none are understood), refuse a TTL that is already 0
    /// (Error_TTL_Exceeded), decrement the TTL, and append the Node-ID the request came from
    /// to the via list when the peer keeps no per-transaction state (`previous_hop`).
    pub fn prepare_forward(&mut self, previous_hop: Option<NodeId>) -> Result<(), WireError> {
        self.check_forwardable()?;
        self.ttl = self.ttl.checked_sub(1).ok_or(WireError::TtlExceeded(0))?;
        if let Some(hop) = previous_hop {
            self.via_list.push(Destination::Node(hop));
        }
        Ok(())
    }
}

/// Reads the TTL of an encoded message without decoding anything else.
pub fn peek_ttl(bytes: &[u8]) -> Result<u8, WireError> {
    bytes
        .get(TTL_OFFSET)
        .copied()
        .ok_or(WireError::Truncated { field: "ttl" })
}

/// Decrements the TTL of an encoded message in place, for a hop that changes nothing else
/// (e.g. a peer keeping per-transaction state). A TTL of 0 is Error_TTL_Exceeded.
pub fn decrement_ttl_in_place(bytes: &mut [u8]) -> Result<u8, WireError> {
    let ttl = bytes
        .get_mut(TTL_OFFSET)
        .ok_or(WireError::Truncated { field: "ttl" })?;
    *ttl = ttl.checked_sub(1).ok_or(WireError::TtlExceeded(0))?;
    Ok(*ttl)
}
