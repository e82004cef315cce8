//! Typed RELOAD messages as the Chord-RELOAD node sees them: the routing part of the forwarding
//! header (RFC 6940 §6.3.2: transaction id, TTL, via list, destination list), the sender's
//! Node-ID (what the security block's signer identity gives, §6.3.4), and the message body of
//! the methods the topology and storage layers use.
//!
//! These are values, not bytes: the wire codec (`overlay::wire`) maps them to RFC 6940's binary
//! layout. The simulation passes them as values.

use super::id::{NodeId, ResourceId};
use crate::overlay::storage::{FetchAns, FetchReq, StatAns, StatReq, StoreAns, StoreReq};
pub use crate::overlay::wire::AttachReqAns;

/// RFC 6940 §6.3.2: the initial TTL SHOULD be 100 and MUST NOT exceed it.
pub const INITIAL_TTL: u8 = 100;

/// One entry of a destination list (RFC 6940 §6.3.2.2). Opaque ids (list compression) are not
/// produced by this node: it keeps full via lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    Node(NodeId),
    Resource(ResourceId),
}

impl Destination {
    /// The ring position this entry points at.
    pub fn ring(self) -> u128 {
        match self {
            Destination::Node(n) => n.to_u128(),
            Destination::Resource(r) => r.0,
        }
    }
}

/// RFC 6940 §14.9 error codes (the wire codec's).
pub use crate::overlay::wire::ErrorCode;

/// RFC 6940 §10.7 ChordUpdate and §10.9 ChordLeaveData: the wire codec's types.
pub use crate::overlay::wire::{ChordLeaveData, ChordUpdate, ChordUpdateType};

/// The predecessor, successor and finger lists of an Update (empty where its type has none).
pub fn update_lists(u: &ChordUpdate) -> (&[NodeId], &[NodeId], &[NodeId]) {
    match &u.update {
        ChordUpdateType::PeerReady => (&[], &[], &[]),
        ChordUpdateType::Neighbors {
            predecessors,
            successors,
        } => (predecessors, successors, &[]),
        ChordUpdateType::Full {
            predecessors,
            successors,
            fingers,
        } => (predecessors, successors, fingers),
    }
}

/// Request bodies (RFC 6940 §6.4.2, §6.5.3, §7.4).
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    /// RFC 6940 §6.5.3 Ping; answered by the node responsible for the destination.
    Ping,
    /// RFC 6940 §6.4.2.1 JoinReq: the joining peer's id (overlay-specific data empty).
    Join {
        joining_peer_id: NodeId,
    },
    /// RFC 6940 §6.4.2.3 / §10.7.
    Update(ChordUpdate),
    /// RFC 6940 §6.4.2.2 / §10.9.
    Leave {
        leaving_peer_id: NodeId,
        data: ChordLeaveData,
    },
    /// RFC 6940 §6.4.2.4 / §10.8.
    RouteQuery {
        send_update: bool,
        destination: Destination,
    },
    Store(StoreReq),
    Fetch(FetchReq),
    Stat(StatReq),
    /// An application request carried as RELOAD's experimental method exp_a (protocols.md §3:
    /// a peer's live status read from its connection tracker); delivered to the application
    /// of the destination node.
    App(Vec<u8>),
    /// RFC 6940 §6.5.1.2 AttachReq routed to a Node-ID whose address is unknown: the
    /// requester's candidates (one host candidate, no ICE checks, see `node::links`).
    Attach(AttachReqAns),
}

/// Response bodies.
#[derive(Clone, Debug, PartialEq)]
pub enum Response {
    /// RFC 6940 §6.5.3.2 PingAns (`response_id`, `time`).
    Ping {
        response_id: u64,
        time: u64,
    },
    Join,
    Update,
    Leave,
    /// RFC 6940 §10.8 ChordRouteQueryAns.
    RouteQuery {
        next_peer: NodeId,
    },
    Store(StoreAns),
    Fetch(FetchAns),
    Stat(StatAns),
    /// The application's answer to [`Request::App`] (exp_a_ans).
    App(Vec<u8>),
    /// RFC 6940 §6.5.1 AttachAns: the responder's candidates.
    Attach(AttachReqAns),
    /// RFC 6940 §6.3.3.1 ErrorResponse; `info` carries e.g. the StoreAns of
    /// Error_Generation_Counter_Too_Low.
    Error {
        code: ErrorCode,
        info: ErrorInfo,
    },
}

/// The error_info of an ErrorResponse, typed.
#[derive(Clone, Debug, PartialEq)]
pub enum ErrorInfo {
    None,
    /// Error_Generation_Counter_Too_Low: the current counters (RFC 6940 §7.4.1.2).
    Store(StoreAns),
    /// Error_Unknown_Kind: the unknown kinds.
    UnknownKinds(Vec<crate::overlay::storage::KindId>),
    Text(String),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    Request(Request),
    Response(Response),
}

/// A RELOAD message as routed by the overlay.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub transaction_id: u64,
    pub ttl: u8,
    /// RFC 6940 §6.3.2.2: the nodes the request passed through, originator first.
    pub via: Vec<NodeId>,
    /// RFC 6940 §6.3.2.2: where the message goes; the first entry is the next target.
    pub destinations: Vec<Destination>,
    /// The Node-ID that signed the message (the originator of a request, the responder of a
    /// response).
    pub sender: NodeId,
    pub body: Body,
}

impl Message {
    pub fn is_request(&self) -> bool {
        matches!(self.body, Body::Request(_))
    }

    /// An Attach request or answer (RFC 6940 §6.5.1): sent on existing links only.
    pub fn is_attach(&self) -> bool {
        matches!(
            self.body,
            Body::Request(Request::Attach(_)) | Body::Response(Response::Attach(_))
        )
    }

    /// A short name of the method, for traces and metrics.
    pub fn method_name(&self) -> &'static str {
        match &self.body {
            Body::Request(r) => match r {
                Request::Ping => "ping_req",
                Request::Join { .. } => "join_req",
                Request::Update(_) => "update_req",
                Request::Leave { .. } => "leave_req",
                Request::RouteQuery { .. } => "route_query_req",
                Request::Store(_) => "store_req",
                Request::Fetch(_) => "fetch_req",
                Request::Stat(_) => "stat_req",
                Request::App(_) => "exp_a_req",
                Request::Attach(_) => "attach_req",
            },
            Body::Response(r) => match r {
                Response::Ping { .. } => "ping_ans",
                Response::Join => "join_ans",
                Response::Update => "update_ans",
                Response::Leave => "leave_ans",
                Response::RouteQuery { .. } => "route_query_ans",
                Response::Store(_) => "store_ans",
                Response::Fetch(_) => "fetch_ans",
                Response::Stat(_) => "stat_ans",
                Response::App(_) => "exp_a_ans",
                Response::Attach(_) => "attach_ans",
                Response::Error { .. } => "error",
            },
        }
    }
}
