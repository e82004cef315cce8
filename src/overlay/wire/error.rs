//! RELOAD error codes (RFC 6940 §6.3.3.1, IANA table §14.9) and the codec's own error types.
//!
//! Every way a decoder can reject input is a [`WireError`] variant, and every variant maps onto
//! the RELOAD `Error_*` code a node answers with ([`WireError::reload_error_code`]). Encoding can
//! only fail when a value built in memory does not fit the length prefix the RFC gives it
//! ([`EncodeError`]).

use super::ids::KindId;

/// A RELOAD error code, carried in `ErrorResponse.error_code` (RFC 6940 §6.3.3.1, §14.9).
///
/// Codes the registry does not assign are kept in [`ErrorCode::Other`] so that an error response
/// from a newer node still decodes and re-encodes unchanged. [`ErrorCode::from_u16`] never puts
/// an assigned value into `Other`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Error_Forbidden (0x2).
    Forbidden,
    /// Error_Not_Found (0x3).
    NotFound,
    /// Error_Request_Timeout (0x4).
    RequestTimeout,
    /// Error_Generation_Counter_Too_Low (0x5).
    GenerationCounterTooLow,
    /// Error_Incompatible_with_Overlay (0x6).
    IncompatibleWithOverlay,
    /// Error_Unsupported_Forwarding_Option (0x7).
    UnsupportedForwardingOption,
    /// Error_Data_Too_Large (0x8).
    DataTooLarge,
    /// Error_Data_Too_Old (0x9).
    DataTooOld,
    /// Error_TTL_Exceeded (0xA).
    TtlExceeded,
    /// Error_Message_Too_Large (0xB).
    MessageTooLarge,
    /// Error_Unknown_Kind (0xC).
    UnknownKind,
    /// Error_Unknown_Extension (0xD).
    UnknownExtension,
    /// Error_Response_Too_Large (0xE).
    ResponseTooLarge,
    /// Error_Config_Too_Old (0xF).
    ConfigTooOld,
    /// Error_Config_Too_New (0x10).
    ConfigTooNew,
    /// Error_In_Progress (0x11).
    InProgress,
    /// Error_Exp_A (0x12), experimentation only.
    ExpA,
    /// Error_Exp_B (0x13), experimentation only.
    ExpB,
    /// Error_Invalid_Message (0x14).
    InvalidMessage,
    /// Any code the registry does not assign (0x0, 0x1, 0x15.., reserved 0x8000..0xFFFE).
    Other(u16),
}

impl ErrorCode {
    /// The 16-bit wire value.
    pub const fn to_u16(self) -> u16 {
        match self {
            ErrorCode::Forbidden => 0x02,
            ErrorCode::NotFound => 0x03,
            ErrorCode::RequestTimeout => 0x04,
            ErrorCode::GenerationCounterTooLow => 0x05,
            ErrorCode::IncompatibleWithOverlay => 0x06,
            ErrorCode::UnsupportedForwardingOption => 0x07,
            ErrorCode::DataTooLarge => 0x08,
            ErrorCode::DataTooOld => 0x09,
            ErrorCode::TtlExceeded => 0x0a,
            ErrorCode::MessageTooLarge => 0x0b,
            ErrorCode::UnknownKind => 0x0c,
            ErrorCode::UnknownExtension => 0x0d,
            ErrorCode::ResponseTooLarge => 0x0e,
            ErrorCode::ConfigTooOld => 0x0f,
            ErrorCode::ConfigTooNew => 0x10,
            ErrorCode::InProgress => 0x11,
            ErrorCode::ExpA => 0x12,
            ErrorCode::ExpB => 0x13,
            ErrorCode::InvalidMessage => 0x14,
            ErrorCode::Other(v) => v,
        }
    }

    /// The code for a wire value; unassigned values become [`ErrorCode::Other`].
    pub const fn from_u16(v: u16) -> ErrorCode {
        match v {
            0x02 => ErrorCode::Forbidden,
            0x03 => ErrorCode::NotFound,
            0x04 => ErrorCode::RequestTimeout,
            0x05 => ErrorCode::GenerationCounterTooLow,
            0x06 => ErrorCode::IncompatibleWithOverlay,
            0x07 => ErrorCode::UnsupportedForwardingOption,
            0x08 => ErrorCode::DataTooLarge,
            0x09 => ErrorCode::DataTooOld,
            0x0a => ErrorCode::TtlExceeded,
            0x0b => ErrorCode::MessageTooLarge,
            0x0c => ErrorCode::UnknownKind,
            0x0d => ErrorCode::UnknownExtension,
            0x0e => ErrorCode::ResponseTooLarge,
            0x0f => ErrorCode::ConfigTooOld,
            0x10 => ErrorCode::ConfigTooNew,
            0x11 => ErrorCode::InProgress,
            0x12 => ErrorCode::ExpA,
            0x13 => ErrorCode::ExpB,
            0x14 => ErrorCode::InvalidMessage,
            other => ErrorCode::Other(other),
        }
    }

    /// The registry name, e.g. `Error_TTL_Exceeded`.
    pub const fn name(self) -> &'static str {
        match self {
            ErrorCode::Forbidden => "Error_Forbidden",
            ErrorCode::NotFound => "Error_Not_Found",
            ErrorCode::RequestTimeout => "Error_Request_Timeout",
            ErrorCode::GenerationCounterTooLow => "Error_Generation_Counter_Too_Low",
            ErrorCode::IncompatibleWithOverlay => "Error_Incompatible_with_Overlay",
            ErrorCode::UnsupportedForwardingOption => "Error_Unsupported_Forwarding_Option",
            ErrorCode::DataTooLarge => "Error_Data_Too_Large",
            ErrorCode::DataTooOld => "Error_Data_Too_Old",
            ErrorCode::TtlExceeded => "Error_TTL_Exceeded",
            ErrorCode::MessageTooLarge => "Error_Message_Too_Large",
            ErrorCode::UnknownKind => "Error_Unknown_Kind",
            ErrorCode::UnknownExtension => "Error_Unknown_Extension",
            ErrorCode::ResponseTooLarge => "Error_Response_Too_Large",
            ErrorCode::ConfigTooOld => "Error_Config_Too_Old",
            ErrorCode::ConfigTooNew => "Error_Config_Too_New",
            ErrorCode::InProgress => "Error_In_Progress",
            ErrorCode::ExpA => "Error_Exp_A",
            ErrorCode::ExpB => "Error_Exp_B",
            ErrorCode::InvalidMessage => "Error_Invalid_Message",
            ErrorCode::Other(_) => "unassigned",
        }
    }
}

/// Why a decoder rejected its input. Each variant maps to one RELOAD `Error_*` code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The input ended before a field or a declared length was complete.
    #[error("truncated input while reading {field}")]
    Truncated { field: &'static str },
    /// A length field disagrees with the bytes it covers (too short, or bytes left over).
    #[error("length of {field} does not match its contents")]
    LengthMismatch { field: &'static str },
    /// The first four bytes are not 0xd2454c4f ("RELO" with the high bit set), RFC 6940 §6.3.2.
    #[error("bad relo token {0:#010x}")]
    BadReloToken(u32),
    /// The overlay hash names a different overlay instance, RFC 6940 §6.3.2.
    #[error("message for overlay {got:#010x}, this node is in {expected:#010x}")]
    WrongOverlay { expected: u32, got: u32 },
    /// The version byte is not 0x0a (RELOAD 1.0), RFC 6940 §6.3.2.
    #[error("unsupported RELOAD version {0:#04x}")]
    UnsupportedVersion(u8),
    /// TTL above the overlay's initial-ttl on receipt, or exhausted when forwarding (§6.3.2).
    #[error("TTL exceeded (ttl {0})")]
    TtlExceeded(u8),
    /// The message (or a frame) is longer than the configured maximum, RFC 6940 §6.6.
    #[error("message of {len} bytes exceeds the limit of {max}")]
    MessageTooLarge { len: u64, max: u32 },
    /// A forwarding option flagged critical that this node does not understand (§6.3.2.3).
    #[error("unsupported critical forwarding option {0}")]
    UnsupportedForwardingOption(u8),
    /// A critical message extension this node does not understand (§6.3.3).
    #[error("unknown critical extension {0}")]
    UnknownExtension(u16),
    /// Storage bodies name Kind-IDs whose data model this node does not know (§7.4.1.2).
    /// The list goes into the error_info of the Error_Unknown_Kind response.
    #[error("unknown kinds {0:?}")]
    UnknownKinds(Vec<KindId>),
    /// A message code that is unassigned, reserved or invalid (§6.3.3, §14.8).
    #[error("unknown message code {0:#06x}")]
    UnknownMessageCode(u16),
    /// The fragment field lacks the mandatory high bit, RFC 6940 §6.7.
    #[error("fragment field {0:#010x} lacks the mandatory high bit")]
    BadFragmentField(u32),
    /// The message is one fragment of a larger one; this codec decodes whole messages only.
    #[error("fragmented message (offset {offset}, last {last})")]
    Fragmented { offset: u32, last: bool },
    /// An enum or select value the RFC does not allow here, or a field out of its range.
    #[error("invalid value for {field}")]
    InvalidValue { field: &'static str },
    /// The link-layer frame type is neither data (128) nor ack (129), RFC 6940 §6.6.2.
    #[error("unknown frame type {0}")]
    UnknownFrameType(u8),
}

impl WireError {
    /// The RELOAD error code a node answers this rejection with (RFC 6940 §6.3.3.1).
    pub fn reload_error_code(&self) -> ErrorCode {
        match self {
            WireError::Truncated { .. }
            | WireError::LengthMismatch { .. }
            | WireError::BadReloToken(_)
            | WireError::UnknownMessageCode(_)
            | WireError::BadFragmentField(_)
            | WireError::Fragmented { .. }
            | WireError::InvalidValue { .. }
            | WireError::UnknownFrameType(_) => ErrorCode::InvalidMessage,
            WireError::WrongOverlay { .. } | WireError::UnsupportedVersion(_) => {
                ErrorCode::IncompatibleWithOverlay
            }
            WireError::TtlExceeded(_) => ErrorCode::TtlExceeded,
            WireError::MessageTooLarge { .. } => ErrorCode::MessageTooLarge,
            WireError::UnsupportedForwardingOption(_) => ErrorCode::UnsupportedForwardingOption,
            WireError::UnknownExtension(_) => ErrorCode::UnknownExtension,
            WireError::UnknownKinds(_) => ErrorCode::UnknownKind,
        }
    }

    /// True when the RFC says to discard the input without answering: it is not a RELOAD
    /// message at all (§6.3.2), its fragment field is malformed (§6.7), or the link framing is
    /// broken so there is no message to answer.
    pub fn is_silent_drop(&self) -> bool {
        matches!(
            self,
            WireError::BadReloToken(_)
                | WireError::BadFragmentField(_)
                | WireError::UnknownFrameType(_)
        )
    }
}

/// A value built in memory does not fit the length prefix its RFC layout gives it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field} is {len} bytes, its length prefix allows at most {max}")]
pub struct EncodeError {
    /// The field (RFC presentation-language name) that overflowed.
    pub field: &'static str,
    /// Its encoded length.
    pub len: usize,
    /// The largest length its prefix can carry.
    pub max: usize,
}
