//! Conversion between the topology's typed [`Message`] and the RELOAD wire codec's
//! [`wire::Message`], so a runtime can put the node's messages on TCP links and the simulation
//! can check that every message survives the byte encoding.
//!
//! The forwarding header carries the transaction id, TTL, via list and destination list
//! (RFC 6940 §6.3.2); the message contents carry the typed body (§6.3.3). The sender's Node-ID
//! is not a header field: on receipt it is recovered as the first via-list entry, or the link
//! peer when the via list is empty (relays append the previous hop to the via list of requests
//! and responses alike, so the first entry is always the message's originator). The security
//! block is the wire codec's unsigned placeholder until signing exists.

use super::id::ResourceId;
use super::message::{Body, Destination, ErrorInfo, Message, Request, Response};
use crate::overlay::storage::KindId;
use crate::overlay::wire::{
    self, ErrorCode, ErrorResponse, ForwardingHeader, Fragment, KindModels, MessageCode,
    MessageContents, NodeId, OverlayHash, TransactionId,
};

/// Why a wire message cannot become a topology message; the code is the RELOAD error to answer
/// a request with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FromWireError {
    #[error("wire: {0}")]
    Wire(#[from] wire::WireError),
    #[error("{0}")]
    Unsupported(&'static str),
}

impl FromWireError {
    pub fn code(&self) -> ErrorCode {
        match self {
            FromWireError::Wire(e) => e.reload_error_code(),
            FromWireError::Unsupported(_) => ErrorCode::InvalidMessage,
        }
    }
}

fn dest_to_wire(d: Destination) -> wire::Destination {
    match d {
        Destination::Node(n) => wire::Destination::Node(n),
        Destination::Resource(r) => wire::Destination::Resource(r.to_wire()),
    }
}

fn dest_from_wire(d: &wire::Destination) -> Result<Destination, FromWireError> {
    match d {
        wire::Destination::Node(n) => Ok(Destination::Node(*n)),
        wire::Destination::Resource(r) => ResourceId::from_wire(r)
            .map(Destination::Resource)
            .ok_or(FromWireError::Unsupported("resource id is not 16 bytes")),
        // This node never compresses lists, so it never receives its own opaque ids back.
        wire::Destination::Opaque(_) | wire::Destination::Compressed(_) => {
            Err(FromWireError::Unsupported("opaque destination"))
        }
    }
}

/// RFC 6940 §6.3.3.1: the error_info of Error_Generation_Counter_Too_Low is a StoreAns, that of
/// Error_Unknown_Kind is `KindId unknown_kinds<0..2^8-1>`, otherwise text.
fn error_info_to_wire(info: &ErrorInfo) -> Result<Vec<u8>, wire::EncodeError> {
    Ok(match info {
        ErrorInfo::None => Vec::new(),
        ErrorInfo::Text(t) => t.as_bytes().to_vec(),
        ErrorInfo::Store(ans) => {
            MessageContents::from_body(&wire::Body::StoreAns(ans.clone()))?.body
        }
        ErrorInfo::UnknownKinds(kinds) => {
            let kinds = &kinds[..kinds.len().min(63)];
            let mut out = Vec::with_capacity(1 + 4 * kinds.len());
            out.push(u8::try_from(4 * kinds.len()).unwrap_or(u8::MAX));
            for k in kinds {
                out.extend_from_slice(&k.0.to_be_bytes());
            }
            out
        }
    })
}

fn error_info_from_wire(code: ErrorCode, bytes: Vec<u8>, kinds: &dyn KindModels) -> ErrorInfo {
    if bytes.is_empty() {
        return ErrorInfo::None;
    }
    match code {
        ErrorCode::GenerationCounterTooLow => {
            let contents = MessageContents {
                code: MessageCode::StoreAns,
                body: bytes.clone(),
                extensions: Vec::new(),
            };
            if let Ok(wire::Body::StoreAns(ans)) = contents.decode_body(kinds) {
                return ErrorInfo::Store(ans);
            }
        }
        ErrorCode::UnknownKind => {
            if let Some((&len, rest)) = bytes.split_first() {
                if usize::from(len) == rest.len() && rest.len() % 4 == 0 {
                    let list = rest
                        .chunks_exact(4)
                        .map(|c| KindId(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                        .collect();
                    return ErrorInfo::UnknownKinds(list);
                }
            }
        }
        _ => {}
    }
    match String::from_utf8(bytes) {
        Ok(t) => ErrorInfo::Text(t),
        Err(_) => ErrorInfo::None,
    }
}

fn body_to_wire(body: &Body) -> Result<wire::Body, wire::EncodeError> {
    Ok(match body {
        Body::Request(r) => match r {
            Request::Ping => wire::Body::PingReq(wire::PingReq {
                padding: Vec::new(),
            }),
            Request::Join { joining_peer_id } => wire::Body::JoinReq(wire::JoinReq {
                joining_peer_id: *joining_peer_id,
                overlay_specific_data: Vec::new(),
            }),
            Request::Update(u) => wire::Body::UpdateReq(u.clone()),
            Request::Leave {
                leaving_peer_id,
                data,
            } => wire::Body::LeaveReq(wire::LeaveReq {
                leaving_peer_id: *leaving_peer_id,
                leave_data: data.clone(),
            }),
            Request::RouteQuery {
                send_update,
                destination,
            } => wire::Body::RouteQueryReq(wire::RouteQueryReq {
                send_update: *send_update,
                destination: dest_to_wire(*destination),
                overlay_specific_data: Vec::new(),
            }),
            Request::Store(s) => wire::Body::StoreReq(s.clone()),
            Request::Fetch(f) => wire::Body::FetchReq(f.clone()),
            Request::Stat(s) => wire::Body::StatReq(s.clone()),
            Request::App(b) => wire::Body::ExpAReq(b.clone()),
            Request::Attach(a) => wire::Body::AttachReq(a.clone()),
        },
        Body::Response(r) => match r {
            Response::Ping { response_id, time } => wire::Body::PingAns(wire::PingAns {
                response_id: *response_id,
                time: *time,
            }),
            Response::Join => wire::Body::JoinAns(wire::JoinAns::default()),
            Response::Update => wire::Body::UpdateAns,
            Response::Leave => wire::Body::LeaveAns,
            Response::RouteQuery { next_peer } => {
                wire::Body::RouteQueryAns(wire::ChordRouteQueryAns {
                    next_peer: *next_peer,
                })
            }
            Response::Store(a) => wire::Body::StoreAns(a.clone()),
            Response::Fetch(a) => wire::Body::FetchAns(a.clone()),
            Response::Stat(a) => wire::Body::StatAns(a.clone()),
            Response::App(b) => wire::Body::ExpAAns(b.clone()),
            Response::Attach(a) => wire::Body::AttachAns(a.clone()),
            Response::Error { code, info } => wire::Body::Error(ErrorResponse {
                error_code: *code,
                error_info: error_info_to_wire(info)?,
            }),
        },
    })
}

fn body_from_wire(body: wire::Body, kinds: &dyn KindModels) -> Result<Body, FromWireError> {
    Ok(match body {
        wire::Body::PingReq(_) => Body::Request(Request::Ping),
        wire::Body::JoinReq(j) => Body::Request(Request::Join {
            joining_peer_id: j.joining_peer_id,
        }),
        wire::Body::UpdateReq(u) => Body::Request(Request::Update(u)),
        wire::Body::LeaveReq(l) => Body::Request(Request::Leave {
            leaving_peer_id: l.leaving_peer_id,
            data: l.leave_data,
        }),
        wire::Body::RouteQueryReq(q) => Body::Request(Request::RouteQuery {
            send_update: q.send_update,
            destination: dest_from_wire(&q.destination)?,
        }),
        wire::Body::StoreReq(s) => Body::Request(Request::Store(s)),
        wire::Body::FetchReq(f) => Body::Request(Request::Fetch(f)),
        wire::Body::StatReq(s) => Body::Request(Request::Stat(s)),
        wire::Body::ExpAReq(b) => Body::Request(Request::App(b)),
        wire::Body::AttachReq(a) => Body::Request(Request::Attach(a)),
        wire::Body::PingAns(p) => Body::Response(Response::Ping {
            response_id: p.response_id,
            time: p.time,
        }),
        wire::Body::JoinAns(_) => Body::Response(Response::Join),
        wire::Body::UpdateAns => Body::Response(Response::Update),
        wire::Body::LeaveAns => Body::Response(Response::Leave),
        wire::Body::RouteQueryAns(a) => Body::Response(Response::RouteQuery {
            next_peer: a.next_peer,
        }),
        wire::Body::StoreAns(a) => Body::Response(Response::Store(a)),
        wire::Body::FetchAns(a) => Body::Response(Response::Fetch(a)),
        wire::Body::StatAns(a) => Body::Response(Response::Stat(a)),
        wire::Body::ExpAAns(b) => Body::Response(Response::App(b)),
        wire::Body::AttachAns(a) => Body::Response(Response::Attach(a)),
        wire::Body::Error(e) => Body::Response(Response::Error {
            code: e.error_code,
            info: error_info_from_wire(e.error_code, e.error_info, kinds),
        }),
        _ => {
            return Err(FromWireError::Unsupported(
                "method not handled by the topology",
            ))
        }
    })
}

/// The wire form of a topology message for the overlay `overlay`.
pub fn to_wire(
    message: &Message,
    overlay: OverlayHash,
) -> Result<wire::Message, wire::EncodeError> {
    let header = ForwardingHeader {
        overlay,
        configuration_sequence: 0,
        ttl: message.ttl,
        fragment: Fragment::UNFRAGMENTED,
        transaction_id: TransactionId(message.transaction_id),
        max_response_length: 0,
        via_list: message
            .via
            .iter()
            .map(|n| wire::Destination::Node(*n))
            .collect(),
        destination_list: message
            .destinations
            .iter()
            .map(|d| dest_to_wire(*d))
            .collect(),
        options: Vec::new(),
    };
    wire::Message::new(header, &body_to_wire(&message.body)?)
}

/// The topology message of a decoded wire message that arrived on the link to `link_peer`.
pub fn from_wire(
    message: &wire::Message,
    link_peer: NodeId,
    kinds: &dyn KindModels,
) -> Result<Message, FromWireError> {
    let h = &message.header;
    let via = h
        .via_list
        .iter()
        .map(|d| match d {
            wire::Destination::Node(n) => Ok(*n),
            _ => Err(FromWireError::Unsupported("via entry is not a Node-ID")),
        })
        .collect::<Result<Vec<NodeId>, _>>()?;
    let destinations = h
        .destination_list
        .iter()
        .map(dest_from_wire)
        .collect::<Result<Vec<_>, _>>()?;
    let body = body_from_wire(message.contents.decode_body(kinds)?, kinds)?;
    Ok(Message {
        transaction_id: h.transaction_id.0,
        ttl: h.ttl,
        sender: via.first().copied().unwrap_or(link_peer),
        via,
        destinations,
        body,
    })
}

/// Encode to bytes and decode again, as a link would: the round trip the simulation checks.
pub fn through_bytes(
    message: &Message,
    link_peer: NodeId,
    config: &wire::WireConfig,
    kinds: &dyn KindModels,
) -> Result<Message, FromWireError> {
    let bytes = to_wire(message, config.overlay)
        .and_then(|m| m.to_bytes())
        .map_err(|_| FromWireError::Unsupported("message cannot be encoded"))?;
    let decoded = wire::Message::decode(&bytes, config)?;
    from_wire(&decoded, link_peer, kinds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overlay::chord::message::{ChordLeaveData, ChordUpdate, ChordUpdateType};
    use crate::overlay::storage::{
        DataModel, DataValue, StoreAns, StoreKindData, StoreKindResponse, StoreReq, StoredData,
        StoredDataValue, KIND_CONTENT_REGISTRATION,
    };
    use crate::overlay::wire::{Signature, WireConfig};

    fn n(v: u128) -> NodeId {
        NodeId::from_u128(v)
    }

    fn round_trip(body: Body, via: Vec<NodeId>) {
        let m = Message {
            transaction_id: 0x1234_5678_9abc_def0,
            ttl: 42,
            sender: via.first().copied().unwrap_or(n(1)),
            via,
            destinations: vec![
                Destination::Node(n(9)),
                Destination::Resource(ResourceId(77)),
            ],
            body,
        };
        let cfg = WireConfig::new(OverlayHash::of_name("test.overlay"));
        let kinds = vec![(KIND_CONTENT_REGISTRATION, DataModel::Dictionary)];
        let back = through_bytes(&m, n(1), &cfg, &kinds).expect("decodes");
        assert_eq!(back, m);
    }

    #[test]
    fn every_topology_body_survives_the_wire() {
        let ans = StoreAns {
            kind_responses: vec![StoreKindResponse {
                kind: KIND_CONTENT_REGISTRATION,
                generation_counter: 7,
                replicas: vec![n(3), n(4)],
            }],
        };
        let store = StoreReq {
            resource: ResourceId(77).to_wire(),
            replica_number: 1,
            kind_data: vec![StoreKindData {
                kind: KIND_CONTENT_REGISTRATION,
                generation_counter: 3,
                values: vec![StoredData {
                    storage_time: 99,
                    lifetime: 60,
                    value: StoredDataValue::Dictionary {
                        key: b"k".to_vec(),
                        value: DataValue {
                            exists: true,
                            value: b"v".to_vec(),
                        },
                    },
                    signature: Signature::placeholder(),
                }],
            }],
        };
        let update = ChordUpdate {
            uptime: 5,
            update: ChordUpdateType::Full {
                predecessors: vec![n(2)],
                successors: vec![n(3), n(4)],
                fingers: vec![n(5)],
            },
        };
        let bodies = vec![
            Body::Request(Request::Ping),
            Body::Request(Request::Join {
                joining_peer_id: n(8),
            }),
            Body::Request(Request::Update(update)),
            Body::Request(Request::Leave {
                leaving_peer_id: n(8),
                data: ChordLeaveData::FromPredecessor {
                    predecessors: vec![n(2)],
                },
            }),
            Body::Request(Request::RouteQuery {
                send_update: true,
                destination: Destination::Resource(ResourceId(5)),
            }),
            Body::Request(Request::Store(store)),
            Body::Response(Response::Ping {
                response_id: 1,
                time: 2,
            }),
            Body::Response(Response::Join),
            Body::Response(Response::Update),
            Body::Request(Request::App(b"peer-42".to_vec())),
            Body::Response(Response::App(b"online".to_vec())),
            Body::Response(Response::RouteQuery { next_peer: n(6) }),
            Body::Response(Response::Store(ans.clone())),
            Body::Response(Response::Error {
                code: ErrorCode::GenerationCounterTooLow,
                info: ErrorInfo::Store(ans),
            }),
            Body::Response(Response::Error {
                code: ErrorCode::UnknownKind,
                info: ErrorInfo::UnknownKinds(vec![KindId(5), KindId(6)]),
            }),
            Body::Response(Response::Error {
                code: ErrorCode::TtlExceeded,
                info: ErrorInfo::None,
            }),
        ];
        for b in bodies {
            round_trip(b.clone(), vec![]);
            round_trip(b, vec![n(11), n(12)]);
        }
    }

    #[test]
    fn foreign_destinations_are_refused_with_a_code() {
        let m = Message {
            transaction_id: 1,
            ttl: 10,
            sender: n(1),
            via: vec![],
            destinations: vec![Destination::Node(n(2))],
            body: Body::Request(Request::Ping),
        };
        let mut w = to_wire(&m, OverlayHash(1)).unwrap();
        w.header.destination_list = vec![wire::Destination::Resource(wire::ResourceId(vec![1, 2]))];
        let err = from_wire(&w, n(1), &wire::NoKinds).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidMessage);
    }
}
