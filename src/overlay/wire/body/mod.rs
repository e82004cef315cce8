//! Typed message bodies: one variant per message code (RFC 6940 §6.4.2, §6.5, §7, §10), and
//! the error response (§6.3.3.1).
//!
//! [`Body::decode`] requires the whole `message_body` to be consumed. Bodies are plain
//! (non-recursive) structures, so nesting depth is bounded by the layouts themselves.

pub mod chord;
pub mod link;
pub mod storage;
pub mod topology;

use super::code::MessageCode;
use super::codec::{put_opaque, put_u16, Prefix, Reader};
use super::error::{EncodeError, ErrorCode, WireError};

pub use chord::{ChordLeaveData, ChordRouteQueryAns, ChordUpdate, ChordUpdateType};
pub use link::{
    AppAttachReqAns, AttachReqAns, CandidateType, ConfigUpdateReq, IceCandidate, IceExtension,
    IpAddressPort, OverlayLinkType, PingAns, PingReq,
};
pub use storage::{
    decode_unknown_kinds, encode_unknown_kinds, ArrayRange, DataModel, DataValue, FetchAns,
    FetchKindResponse, FetchReq, FindAns, FindKindData, FindReq, KindModels, MetaData,
    MetaDataValue, ModelSpecifier, NoKinds, StatAns, StatKindResponse, StatReq, StoreAns,
    StoreKindData, StoreKindResponse, StoreReq, StoredData, StoredDataSpecifier, StoredDataValue,
    StoredMetaData,
};
pub use topology::{
    JoinAns, JoinReq, LeaveReq, ProbeAns, ProbeInformation, ProbeInformationType, ProbeReq,
    RouteQueryReq,
};

/// The body of an error response (message code 0xFFFF).
///
/// ```text
/// public struct {
///   uint16  error_code;
///   opaque  error_info<0..2^16-1>;
/// } ErrorResponse;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorResponse {
    pub error_code: ErrorCode,
    /// UTF-8 text unless the code defines a structure (a StoreAns for
    /// Error_Generation_Counter_Too_Low, a Kind-ID list for Error_Unknown_Kind).
    pub error_info: Vec<u8>,
}

impl ErrorResponse {
    /// The answer to a decode failure: its RELOAD code and the error text (or, for unknown
    /// Kinds, the `KindId unknown_kinds<0..2^8-1>` list of §7.4.1.2).
    pub fn from_wire_error(e: &WireError) -> Self {
        let error_info = match e {
            WireError::UnknownKinds(kinds) => {
                let n = kinds.len().min(storage::MAX_REPORTED_UNKNOWN_KINDS);
                encode_unknown_kinds(kinds.get(..n).unwrap_or(&[])).unwrap_or_default()
            }
            other => other.to_string().into_bytes(),
        };
        ErrorResponse {
            error_code: e.reload_error_code(),
            error_info,
        }
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(ErrorResponse {
            error_code: ErrorCode::from_u16(r.u16("ErrorResponse.error_code")?),
            error_info: r.opaque(Prefix::U16, "ErrorResponse.error_info")?.to_vec(),
        })
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_u16(out, self.error_code.to_u16());
        put_opaque(
            out,
            Prefix::U16,
            "ErrorResponse.error_info",
            &self.error_info,
        )
    }
}

/// A typed message body, one variant per message code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    ProbeReq(ProbeReq),
    ProbeAns(ProbeAns),
    AttachReq(AttachReqAns),
    AttachAns(AttachReqAns),
    StoreReq(StoreReq),
    StoreAns(StoreAns),
    FetchReq(FetchReq),
    FetchAns(FetchAns),
    FindReq(FindReq),
    FindAns(FindAns),
    JoinReq(JoinReq),
    JoinAns(JoinAns),
    LeaveReq(LeaveReq),
    /// "LeaveAns is an empty message" (§6.4.2.2).
    LeaveAns,
    /// Chord-RELOAD: the body is a ChordUpdate (§10.7).
    UpdateReq(ChordUpdate),
    /// Success carries no data (§6.4.2.3); encoded as an empty body.
    UpdateAns,
    RouteQueryReq(RouteQueryReq),
    /// Chord-RELOAD: the next peer (§10.8).
    RouteQueryAns(ChordRouteQueryAns),
    PingReq(PingReq),
    PingAns(PingAns),
    StatReq(StatReq),
    StatAns(StatAns),
    AppAttachReq(AppAttachReqAns),
    AppAttachAns(AppAttachReqAns),
    ConfigUpdateReq(ConfigUpdateReq),
    /// `struct { } ConfigUpdateAns;` (§6.5.4.2).
    ConfigUpdateAns,
    /// Experimental methods: opaque bodies defined by their user. The tracker carries peer-id
    /// status reads in exp_a (protocols.md §3).
    ExpAReq(Vec<u8>),
    ExpAAns(Vec<u8>),
    ExpBReq(Vec<u8>),
    ExpBAns(Vec<u8>),
    Error(ErrorResponse),
}

impl Body {
    /// The message code this body is sent under.
    pub fn code(&self) -> MessageCode {
        match self {
            Body::ProbeReq(_) => MessageCode::ProbeReq,
            Body::ProbeAns(_) => MessageCode::ProbeAns,
            Body::AttachReq(_) => MessageCode::AttachReq,
            Body::AttachAns(_) => MessageCode::AttachAns,
            Body::StoreReq(_) => MessageCode::StoreReq,
            Body::StoreAns(_) => MessageCode::StoreAns,
            Body::FetchReq(_) => MessageCode::FetchReq,
            Body::FetchAns(_) => MessageCode::FetchAns,
            Body::FindReq(_) => MessageCode::FindReq,
            Body::FindAns(_) => MessageCode::FindAns,
            Body::JoinReq(_) => MessageCode::JoinReq,
            Body::JoinAns(_) => MessageCode::JoinAns,
            Body::LeaveReq(_) => MessageCode::LeaveReq,
            Body::LeaveAns => MessageCode::LeaveAns,
            Body::UpdateReq(_) => MessageCode::UpdateReq,
            Body::UpdateAns => MessageCode::UpdateAns,
            Body::RouteQueryReq(_) => MessageCode::RouteQueryReq,
            Body::RouteQueryAns(_) => MessageCode::RouteQueryAns,
            Body::PingReq(_) => MessageCode::PingReq,
            Body::PingAns(_) => MessageCode::PingAns,
            Body::StatReq(_) => MessageCode::StatReq,
            Body::StatAns(_) => MessageCode::StatAns,
            Body::AppAttachReq(_) => MessageCode::AppAttachReq,
            Body::AppAttachAns(_) => MessageCode::AppAttachAns,
            Body::ConfigUpdateReq(_) => MessageCode::ConfigUpdateReq,
            Body::ConfigUpdateAns => MessageCode::ConfigUpdateAns,
            Body::ExpAReq(_) => MessageCode::ExpAReq,
            Body::ExpAAns(_) => MessageCode::ExpAAns,
            Body::ExpBReq(_) => MessageCode::ExpBReq,
            Body::ExpBAns(_) => MessageCode::ExpBAns,
            Body::Error(_) => MessageCode::Error,
        }
    }

    /// Decodes `bytes` as the body of a message with `code`. Storage bodies look up each
    /// Kind's data model in `kinds` (see [`storage`]). Every byte must be consumed.
    pub fn decode(
        code: MessageCode,
        bytes: &[u8],
        kinds: &dyn KindModels,
    ) -> Result<Body, WireError> {
        let mut r = Reader::new(bytes);
        let r = &mut r;
        let body = match code {
            MessageCode::ProbeReq => Body::ProbeReq(ProbeReq::decode(r)?),
            MessageCode::ProbeAns => Body::ProbeAns(ProbeAns::decode(r)?),
            MessageCode::AttachReq => Body::AttachReq(AttachReqAns::decode(r)?),
            MessageCode::AttachAns => Body::AttachAns(AttachReqAns::decode(r)?),
            MessageCode::StoreReq => Body::StoreReq(StoreReq::decode(r, kinds)?),
            MessageCode::StoreAns => Body::StoreAns(StoreAns::decode(r)?),
            MessageCode::FetchReq => Body::FetchReq(FetchReq::decode(r, kinds)?),
            MessageCode::FetchAns => Body::FetchAns(FetchAns::decode(r, kinds)?),
            MessageCode::FindReq => Body::FindReq(FindReq::decode(r)?),
            MessageCode::FindAns => Body::FindAns(FindAns::decode(r)?),
            MessageCode::JoinReq => Body::JoinReq(JoinReq::decode(r)?),
            MessageCode::JoinAns => Body::JoinAns(JoinAns::decode(r)?),
            MessageCode::LeaveReq => Body::LeaveReq(LeaveReq::decode(r)?),
            MessageCode::LeaveAns => Body::LeaveAns,
            MessageCode::UpdateReq => Body::UpdateReq(ChordUpdate::decode(r)?),
            MessageCode::UpdateAns => Body::UpdateAns,
            MessageCode::RouteQueryReq => Body::RouteQueryReq(RouteQueryReq::decode(r)?),
            MessageCode::RouteQueryAns => Body::RouteQueryAns(ChordRouteQueryAns::decode(r)?),
            MessageCode::PingReq => Body::PingReq(PingReq::decode(r)?),
            MessageCode::PingAns => Body::PingAns(PingAns::decode(r)?),
            MessageCode::StatReq => Body::StatReq(FetchReq::decode(r, kinds)?),
            MessageCode::StatAns => Body::StatAns(StatAns::decode(r, kinds)?),
            MessageCode::AppAttachReq => Body::AppAttachReq(AppAttachReqAns::decode(r)?),
            MessageCode::AppAttachAns => Body::AppAttachAns(AppAttachReqAns::decode(r)?),
            MessageCode::ConfigUpdateReq => Body::ConfigUpdateReq(ConfigUpdateReq::decode(r)?),
            MessageCode::ConfigUpdateAns => Body::ConfigUpdateAns,
            MessageCode::ExpAReq => Body::ExpAReq(r.bytes(r.remaining(), "exp_a_req")?.to_vec()),
            MessageCode::ExpAAns => Body::ExpAAns(r.bytes(r.remaining(), "exp_a_ans")?.to_vec()),
            MessageCode::ExpBReq => Body::ExpBReq(r.bytes(r.remaining(), "exp_b_req")?.to_vec()),
            MessageCode::ExpBAns => Body::ExpBAns(r.bytes(r.remaining(), "exp_b_ans")?.to_vec()),
            MessageCode::Error => Body::Error(ErrorResponse::decode(r)?),
        };
        r.finish("message_body")?;
        Ok(body)
    }

    /// Appends the encoded body (the contents of `message_body`, without its length).
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            Body::ProbeReq(b) => b.encode_into(out),
            Body::ProbeAns(b) => b.encode_into(out),
            Body::AttachReq(b) | Body::AttachAns(b) => b.encode_into(out),
            Body::StoreReq(b) => b.encode_into(out),
            Body::StoreAns(b) => b.encode_into(out),
            Body::FetchReq(b) | Body::StatReq(b) => b.encode_into(out),
            Body::FetchAns(b) => b.encode_into(out),
            Body::FindReq(b) => b.encode_into(out),
            Body::FindAns(b) => b.encode_into(out),
            Body::JoinReq(b) => b.encode_into(out),
            Body::JoinAns(b) => b.encode_into(out),
            Body::LeaveReq(b) => b.encode_into(out),
            Body::UpdateReq(b) => b.encode_into(out),
            Body::RouteQueryReq(b) => b.encode_into(out),
            Body::RouteQueryAns(b) => b.encode_into(out),
            Body::PingReq(b) => b.encode_into(out),
            Body::PingAns(b) => b.encode_into(out),
            Body::StatAns(b) => b.encode_into(out),
            Body::AppAttachReq(b) | Body::AppAttachAns(b) => b.encode_into(out),
            Body::ConfigUpdateReq(b) => b.encode_into(out),
            Body::LeaveAns | Body::UpdateAns | Body::ConfigUpdateAns => Ok(()),
            Body::ExpAReq(b) | Body::ExpAAns(b) | Body::ExpBReq(b) | Body::ExpBAns(b) => {
                super::codec::check_len(b.len(), Prefix::U32, "message_body")?;
                out.extend_from_slice(b);
                Ok(())
            }
            Body::Error(b) => b.encode_into(out),
        }
    }

    /// The encoded body.
    pub fn to_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        self.encode_into(&mut out)?;
        Ok(out)
    }
}
