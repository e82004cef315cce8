//! The RELOAD (RFC 6940) wire codec, sans-IO: bytes in, typed values out, and back.
//!
//! - [`Message`] = [`ForwardingHeader`] (§6.3.2) + [`MessageContents`] (§6.3.3) +
//!   [`SecurityBlock`] (§6.3.4). [`Message::decode`] is for the destination;
//!   [`PeekedMessage::peek`] reads only the header, for forwarding (§6.1.2).
//! - [`Body`] types a message body by its [`MessageCode`]: Attach, Join, Leave, Update,
//!   RouteQuery, Probe, Ping, ConfigUpdate, AppAttach, Store, Fetch, Stat, Find, the
//!   experimental methods and the error response, with Chord-RELOAD's overlay-specific bodies
//!   (§10). Storage bodies need each Kind's data model from a [`KindModels`] lookup.
//! - [`framing`]: the per-hop data/ack framing for TCP links (§6.6.2).
//! - Every rejection is a [`WireError`] that maps to the RELOAD [`ErrorCode`] to answer with.
//!
//! All layouts follow the RFC's presentation language (§6.3.1): big-endian integers,
//! vectors prefixed by a length as wide as their range needs. Each type's documentation gives
//! its layout. Decoders never panic, never allocate more than the input holds (a declared
//! length is checked against the bytes present before anything is copied), and the structures
//! are not recursive, so nesting is bounded by the layouts.

pub mod body;
mod code;
pub(crate) mod codec;
mod error;
pub mod forward;
pub mod framing;
mod header;
mod ids;
mod message;
mod security;

#[cfg(test)]
mod strategies;
#[cfg(test)]
mod tests;

pub use body::{
    AppAttachReqAns, ArrayRange, AttachReqAns, Body, CandidateType, ChordLeaveData,
    ChordRouteQueryAns, ChordUpdate, ChordUpdateType, ConfigUpdateReq, DataModel, DataValue,
    ErrorResponse, FetchAns, FetchKindResponse, FetchReq, FindAns, FindKindData, FindReq,
    IceCandidate, IceExtension, IpAddressPort, JoinAns, JoinReq, KindModels, LeaveReq, MetaData,
    MetaDataValue, ModelSpecifier, NoKinds, OverlayLinkType, PingAns, PingReq, ProbeAns,
    ProbeInformation, ProbeInformationType, ProbeReq, RouteQueryReq, StatAns, StatKindResponse,
    StatReq, StoreAns, StoreKindData, StoreKindResponse, StoreReq, StoredData, StoredDataSpecifier,
    StoredDataValue, StoredMetaData,
};
pub use code::MessageCode;
pub use error::{EncodeError, ErrorCode, WireError};
pub use forward::PeekedMessage;
pub use framing::{decode_frame, Ack, AckTracker, Decoded, Frame, FrameRef, FramedData};
pub use header::{
    Destination, ForwardingHeader, ForwardingOption, Fragment, OptionFlags, WireConfig,
    DEFAULT_INITIAL_TTL, DEFAULT_MAX_MESSAGE_SIZE, RELOAD_VERSION, RELO_TOKEN,
};
pub use ids::{KindId, NodeId, OverlayHash, ResourceId, TransactionId, NODE_ID_LEN};
pub use message::{Message, MessageContents, MessageExtension};
pub use security::{
    GenericCertificate, SecurityBlock, Signature, SignatureAndHashAlgorithm, SignerIdentity,
};

impl Message {
    /// A message with the given header and body, no extensions and the placeholder security
    /// block.
    pub fn new(header: ForwardingHeader, body: &Body) -> Result<Self, EncodeError> {
        Ok(Message {
            header,
            contents: MessageContents::from_body(body)?,
            security: SecurityBlock::placeholder(),
        })
    }

    /// The response to a request with header `request`: `body` (an answer or
    /// [`Body::Error`]) under [`ForwardingHeader::response_header`], placeholder security.
    pub fn response(request: &ForwardingHeader, ttl: u8, body: &Body) -> Result<Self, EncodeError> {
        Message::new(request.response_header(ttl), body)
    }
}
