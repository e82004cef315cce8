//! The forwarding header (RFC 6940 §6.3.2): what every hop reads to route a message, with its
//! destination and via lists (§6.3.2.2) and forwarding options (§6.3.2.3).
//!
//! ```text
//! struct {
//!   uint32             relo_token;              // 0xd2454c4f
//!   uint32             overlay;
//!   uint16             configuration_sequence;
//!   uint8              version;                 // 0x0a
//!   uint8              ttl;
//!   uint32             fragment;
//!   uint32             length;                  // whole message, header included
//!   uint64             transaction_id;
//!   uint32             max_response_length;
//!   uint16             via_list_length;         // bytes, not entries
//!   uint16             destination_list_length;
//!   uint16             options_length;
//!   Destination        via_list[via_list_length];
//!   Destination        destination_list[destination_list_length];
//!   ForwardingOption   options[options_length];
//! } ForwardingHeader;
//! ```
//!
//! The relo token and version are constants and `length` is derived when encoding, so
//! [`ForwardingHeader`] does not store them; decoding checks all three.

use super::codec::{check_len, put_opaque, put_u16, put_u32, put_u64, put_u8, Prefix, Reader};
use super::error::{EncodeError, WireError};
use super::ids::{NodeId, OverlayHash, ResourceId, TransactionId, NODE_ID_LEN};

/// `relo_token`: "RELO" with the high bit of the first byte set (§6.3.2).
pub const RELO_TOKEN: u32 = 0xd245_4c4f;
/// `version`: RELOAD 1.0 times ten (§6.3.2).
pub const RELOAD_VERSION: u8 = 0x0a;
/// Default `initial-ttl` of the overlay configuration (§11.1).
pub const DEFAULT_INITIAL_TTL: u8 = 100;
/// Default `max-message-size` of the overlay configuration (§11.1).
pub const DEFAULT_MAX_MESSAGE_SIZE: u32 = 5000;
/// Byte offset of the `length` field in an encoded message.
pub const LENGTH_OFFSET: usize = 16;
/// Size of the fixed part of the forwarding header, before the via list.
pub const FIXED_HEADER_LEN: usize = 38;

/// What a receiver checks a message against: its overlay and the limits of the overlay
/// configuration (§11.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WireConfig {
    /// This node's overlay; messages for another overlay are rejected.
    pub overlay: OverlayHash,
    /// `max-message-size`: longer messages (and frames) are rejected before buffering.
    pub max_message_size: u32,
    /// `initial-ttl`: a received TTL above it is rejected with Error_TTL_Exceeded.
    pub initial_ttl: u8,
}

impl WireConfig {
    /// The RFC's defaults (max-message-size 5000, initial-ttl 100) for `overlay`.
    pub const fn new(overlay: OverlayHash) -> Self {
        WireConfig {
            overlay,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            initial_ttl: DEFAULT_INITIAL_TTL,
        }
    }
}

/// One entry of a destination or via list (§6.3.2.2).
///
/// ```text
/// enum { invalidDestinationType(0), node(1), resource(2), opaque_id_type(3), (255) }
///     DestinationType;
/// select (destination_type) {
///   case node:           NodeId      node_id;
///   case resource:       ResourceId  resource_id;
///   case opaque_id_type: opaque      opaque_id<0..2^8-1>;
/// } DestinationData;
/// struct {
///   DestinationType  type;
///   uint8            length;          // of destination_data
///   DestinationData  destination_data;
/// } Destination;
/// struct {
///   uint16           opaque_id;       // top bit MUST be 1
/// } Destination;
/// ```
///
/// The first bit tells the two forms apart: 0 for the TLV form, 1 for the 16-bit compressed id.
/// Because the TLV length byte covers the inner length byte too, a resource or opaque id is at
/// most 254 bytes here.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Destination {
    /// `node(1)`: a Node-ID.
    Node(NodeId),
    /// `resource(2)`: a Resource-ID; only as the last entry of a destination list, never in a
    /// via list.
    Resource(ResourceId),
    /// `opaque_id_type(3)` in TLV form: an id only the peer that made it can interpret.
    Opaque(Vec<u8>),
    /// The 16-bit compressed form of an opaque id (e.g. a connection-table index). Encoding
    /// always sets the top bit.
    Compressed(u16),
}

/// Flags of a [`ForwardingOption`] (§6.3.2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct OptionFlags(pub u8);

impl OptionFlags {
    /// A forwarding peer that does not understand the option rejects the request.
    pub const FORWARD_CRITICAL: u8 = 0x01;
    /// The node answering the request rejects it if it does not understand the option.
    pub const DESTINATION_CRITICAL: u8 = 0x02;
    /// The answering node copies the option into the response, with the three flags cleared.
    pub const RESPONSE_COPY: u8 = 0x04;

    pub const fn forward_critical(self) -> bool {
        self.0 & Self::FORWARD_CRITICAL != 0
    }
    pub const fn destination_critical(self) -> bool {
        self.0 & Self::DESTINATION_CRITICAL != 0
    }
    pub const fn response_copy(self) -> bool {
        self.0 & Self::RESPONSE_COPY != 0
    }
}

/// A forwarding header option (§6.3.2.3). No option types are understood by this node; the
/// only registered one is exp-forward (1, §14.12).
///
/// ```text
/// struct {
///   ForwardingOptionType  type;     // uint8, 0 invalid
///   uint8                 flags;
///   uint16                length;   // of the rest of the structure
///   opaque                value[length];
/// } ForwardingOption;
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ForwardingOption {
    pub option_type: u8,
    pub flags: OptionFlags,
    pub value: Vec<u8>,
}

/// The forwarding header's `fragment` field (§6.3.2, §6.7): bit 31 always set, bit 30 "last
/// fragment", bits 24..29 reserved, bits 0..23 the byte offset of this fragment's data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fragment(pub u32);

impl Fragment {
    /// An unfragmented message: last fragment at offset 0 (0xC0000000, §6.7).
    pub const UNFRAGMENTED: Fragment = Fragment(0xc000_0000);
    const HIGH: u32 = 0x8000_0000;
    const LAST: u32 = 0x4000_0000;
    const OFFSET: u32 = 0x00ff_ffff;

    /// A fragment at `offset` (24 bits; higher bits are dropped).
    pub const fn new(last: bool, offset: u32) -> Self {
        Fragment(Self::HIGH | if last { Self::LAST } else { 0 } | (offset & Self::OFFSET))
    }
    pub const fn is_last(self) -> bool {
        self.0 & Self::LAST != 0
    }
    pub const fn offset(self) -> u32 {
        self.0 & Self::OFFSET
    }
    /// True for a whole message: the last fragment at offset 0.
    pub const fn is_whole(self) -> bool {
        self.is_last() && self.offset() == 0
    }
}

/// The forwarding header without its constant fields (relo token, version) and its derived
/// `length`; see the module documentation for the wire layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardingHeader {
    pub overlay: OverlayHash,
    pub configuration_sequence: u16,
    pub ttl: u8,
    pub fragment: Fragment,
    pub transaction_id: TransactionId,
    pub max_response_length: u32,
    pub via_list: Vec<Destination>,
    pub destination_list: Vec<Destination>,
    pub options: Vec<ForwardingOption>,
}

impl Destination {
    const TYPE_NODE: u8 = 1;
    const TYPE_RESOURCE: u8 = 2;
    const TYPE_OPAQUE: u8 = 3;

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let first = *r.rest().first().ok_or(WireError::Truncated {
            field: "Destination",
        })?;
        if first & 0x80 != 0 {
            return Ok(Destination::Compressed(r.u16("Destination.opaque_id")?));
        }
        let ty = r.u8("Destination.type")?;
        let len = usize::from(r.u8("Destination.length")?);
        let mut data = r.sub(len, "Destination.destination_data")?;
        let d = match ty {
            Self::TYPE_NODE => {
                let id = data.array::<NODE_ID_LEN>("Destination.node_id")?;
                Destination::Node(NodeId(id))
            }
            Self::TYPE_RESOURCE => Destination::Resource(ResourceId(
                data.opaque(Prefix::U8, "Destination.resource_id")?.to_vec(),
            )),
            Self::TYPE_OPAQUE => {
                Destination::Opaque(data.opaque(Prefix::U8, "Destination.opaque_id")?.to_vec())
            }
            _ => {
                return Err(WireError::InvalidValue {
                    field: "DestinationType",
                })
            }
        };
        data.finish("Destination.length")?;
        Ok(d)
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            Destination::Node(id) => {
                put_u8(out, Self::TYPE_NODE);
                put_u8(out, NODE_ID_LEN as u8);
                out.extend_from_slice(&id.0);
            }
            Destination::Resource(rid) => {
                Self::put_inner_opaque(out, Self::TYPE_RESOURCE, "Destination.resource_id", &rid.0)?
            }
            Destination::Opaque(v) => {
                Self::put_inner_opaque(out, Self::TYPE_OPAQUE, "Destination.opaque_id", v)?
            }
            Destination::Compressed(v) => put_u16(out, v | 0x8000),
        }
        Ok(())
    }

    fn put_inner_opaque(
        out: &mut Vec<u8>,
        ty: u8,
        field: &'static str,
        v: &[u8],
    ) -> Result<(), EncodeError> {
        // The TLV length byte covers the inner length byte plus the bytes.
        let outer = check_len(v.len() + 1, Prefix::U8, field)?;
        put_u8(out, ty);
        put_u8(out, outer as u8);
        put_opaque(out, Prefix::U8, field, v)
    }
}

impl ForwardingOption {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let option_type = r.u8("ForwardingOption.type")?;
        if option_type == 0 {
            return Err(WireError::InvalidValue {
                field: "ForwardingOptionType",
            });
        }
        let flags = OptionFlags(r.u8("ForwardingOption.flags")?);
        let value = r.opaque(Prefix::U16, "ForwardingOption.length")?.to_vec();
        Ok(ForwardingOption {
            option_type,
            flags,
            value,
        })
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_u8(out, self.option_type);
        put_u8(out, self.flags.0);
        put_opaque(out, Prefix::U16, "ForwardingOption.value", &self.value)
    }
}

/// The header fields read before the lists, with the message's declared length.
pub(crate) struct FixedHeader {
    pub overlay: OverlayHash,
    pub configuration_sequence: u16,
    pub ttl: u8,
    pub fragment: Fragment,
    pub transaction_id: TransactionId,
    pub max_response_length: u32,
    pub via_list_length: u16,
    pub destination_list_length: u16,
    pub options_length: u16,
}

impl FixedHeader {
    /// Reads and validates the fixed 38 bytes. `input_len` is the length of the buffer holding
    /// the message, which must equal the declared length.
    pub(crate) fn decode(
        r: &mut Reader<'_>,
        cfg: &WireConfig,
        input_len: usize,
    ) -> Result<Self, WireError> {
        let token = r.u32("relo_token")?;
        if token != RELO_TOKEN {
            return Err(WireError::BadReloToken(token));
        }
        let overlay = r.u32("overlay")?;
        let configuration_sequence = r.u16("configuration_sequence")?;
        let version = r.u8("version")?;
        let ttl = r.u8("ttl")?;
        let fragment = r.u32("fragment")?;
        let length = r.u32("length")?;
        // §6.6: refuse oversize messages before looking any further.
        if length > cfg.max_message_size || input_len as u64 > u64::from(cfg.max_message_size) {
            return Err(WireError::MessageTooLarge {
                len: u64::from(length).max(input_len as u64),
                max: cfg.max_message_size,
            });
        }
        if version != RELOAD_VERSION {
            return Err(WireError::UnsupportedVersion(version));
        }
        if overlay != cfg.overlay.0 {
            return Err(WireError::WrongOverlay {
                expected: cfg.overlay.0,
                got: overlay,
            });
        }
        // §6.3.2: a TTL above initial-ttl is discarded with Error_TTL_Exceeded.
        if ttl > cfg.initial_ttl {
            return Err(WireError::TtlExceeded(ttl));
        }
        if fragment & Fragment::HIGH == 0 {
            return Err(WireError::BadFragmentField(fragment));
        }
        if (length as usize) > input_len {
            return Err(WireError::Truncated { field: "length" });
        }
        if (length as usize) < input_len {
            return Err(WireError::LengthMismatch { field: "length" });
        }
        Ok(FixedHeader {
            overlay: OverlayHash(overlay),
            configuration_sequence,
            ttl,
            fragment: Fragment(fragment),
            transaction_id: TransactionId(r.u64("transaction_id")?),
            max_response_length: r.u32("max_response_length")?,
            via_list_length: r.u16("via_list_length")?,
            destination_list_length: r.u16("destination_list_length")?,
            options_length: r.u16("options_length")?,
        })
    }
}

impl ForwardingHeader {
    /// Decodes the header at the start of `r`, which holds exactly one message; returns the
    /// header with the message's declared length. Checks token, version, overlay, TTL against
    /// initial-ttl, the fragment high bit, the size limit and the declared length, and the
    /// list rules of §6.3.2.2 (no resource in the via list; a resource only last in the
    /// destination list). An empty destination list is accepted: a response to a request that
    /// arrived with an empty via list goes back over the connection it came from (§6.2.2).
    pub(crate) fn decode(r: &mut Reader<'_>, cfg: &WireConfig) -> Result<Self, WireError> {
        let input_len = r.remaining();
        let fixed = FixedHeader::decode(r, cfg, input_len)?;
        let via_list = r
            .sub(usize::from(fixed.via_list_length), "via_list")?
            .list("via_list", Destination::decode)?;
        if via_list
            .iter()
            .any(|d| matches!(d, Destination::Resource(_)))
        {
            return Err(WireError::InvalidValue { field: "via_list" });
        }
        let destination_list = r
            .sub(
                usize::from(fixed.destination_list_length),
                "destination_list",
            )?
            .list("destination_list", Destination::decode)?;
        if let Some((_, init)) = destination_list.split_last() {
            if init.iter().any(|d| matches!(d, Destination::Resource(_))) {
                return Err(WireError::InvalidValue {
                    field: "destination_list",
                });
            }
        }
        let options = r
            .sub(usize::from(fixed.options_length), "options")?
            .list("options", ForwardingOption::decode)?;
        Ok(ForwardingHeader {
            overlay: fixed.overlay,
            configuration_sequence: fixed.configuration_sequence,
            ttl: fixed.ttl,
            fragment: fixed.fragment,
            transaction_id: fixed.transaction_id,
            max_response_length: fixed.max_response_length,
            via_list,
            destination_list,
            options,
        })
    }

    /// Appends the header with `length` = `body_len` plus the header's own length, where
    /// `body_len` is the number of bytes that will follow it (contents and security block).
    pub(crate) fn encode_into(
        &self,
        out: &mut Vec<u8>,
        body_len: usize,
    ) -> Result<(), EncodeError> {
        let start = out.len();
        put_u32(out, RELO_TOKEN);
        put_u32(out, self.overlay.0);
        put_u16(out, self.configuration_sequence);
        put_u8(out, RELOAD_VERSION);
        put_u8(out, self.ttl);
        put_u32(out, self.fragment.0);
        let length_at = out.len();
        put_u32(out, 0);
        put_u64(out, self.transaction_id.0);
        put_u32(out, self.max_response_length);
        let lengths_at = out.len();
        out.extend_from_slice(&[0u8; 6]);

        let via_start = out.len();
        for d in &self.via_list {
            d.encode_into(out)?;
        }
        let via_len = check_len(out.len() - via_start, Prefix::U16, "via_list")?;
        let dest_start = out.len();
        for d in &self.destination_list {
            d.encode_into(out)?;
        }
        let dest_len = check_len(out.len() - dest_start, Prefix::U16, "destination_list")?;
        let opt_start = out.len();
        for o in &self.options {
            o.encode_into(out)?;
        }
        let opt_len = check_len(out.len() - opt_start, Prefix::U16, "options")?;

        let total = check_len(out.len() - start + body_len, Prefix::U32, "length")?;
        patch(out, length_at, &total.to_be_bytes());
        patch(out, lengths_at, &(via_len as u16).to_be_bytes());
        patch(out, lengths_at + 2, &(dest_len as u16).to_be_bytes());
        patch(out, lengths_at + 4, &(opt_len as u16).to_be_bytes());
        Ok(())
    }

    /// The header of a new request (§6.2.1): unfragmented, empty via list, no options, no
    /// response size limit.
    pub fn new_request(
        overlay: OverlayHash,
        configuration_sequence: u16,
        ttl: u8,
        transaction_id: TransactionId,
        destination_list: Vec<Destination>,
    ) -> Self {
        ForwardingHeader {
            overlay,
            configuration_sequence,
            ttl,
            fragment: Fragment::UNFRAGMENTED,
            transaction_id,
            max_response_length: 0,
            via_list: Vec::new(),
            destination_list,
            options: Vec::new(),
        }
    }

    /// The header of the response to a request with this header: same overlay, configuration
    /// sequence and transaction id; destination list = the request's via list reversed
    /// (§6.2.2); max_response_length 0 (§6.3.2); and the request's RESPONSE_COPY options with
    /// all three flags cleared (§6.3.2.3).
    pub fn response_header(&self, ttl: u8) -> ForwardingHeader {
        ForwardingHeader {
            overlay: self.overlay,
            configuration_sequence: self.configuration_sequence,
            ttl,
            fragment: Fragment::UNFRAGMENTED,
            transaction_id: self.transaction_id,
            max_response_length: 0,
            via_list: Vec::new(),
            destination_list: self.via_list.iter().rev().cloned().collect(),
            options: self
                .options
                .iter()
                .filter(|o| o.flags.response_copy())
                .map(|o| ForwardingOption {
                    option_type: o.option_type,
                    flags: OptionFlags(0),
                    value: o.value.clone(),
                })
                .collect(),
        }
    }

    /// The first option flagged FORWARD_CRITICAL, which a forwarding peer must refuse because it
    /// understands no option (§6.3.2.3).
    pub fn check_forwardable(&self) -> Result<(), WireError> {
        match self.options.iter().find(|o| o.flags.forward_critical()) {
            Some(o) => Err(WireError::UnsupportedForwardingOption(o.option_type)),
            None => Ok(()),
        }
    }

    /// The first option flagged DESTINATION_CRITICAL, which the answering node must refuse
    /// because it understands no option (§6.3.2.3).
    pub fn check_deliverable(&self) -> Result<(), WireError> {
        match self.options.iter().find(|o| o.flags.destination_critical()) {
            Some(o) => Err(WireError::UnsupportedForwardingOption(o.option_type)),
            None => Ok(()),
        }
    }
}

fn patch(out: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(dst) = out.get_mut(at..at + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}
