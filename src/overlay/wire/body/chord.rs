//! Chord-RELOAD's overlay-specific bodies (RFC 6940 §10.7 Update, §10.8 RouteQuery answer,
//! §10.9 Leave data).

use crate::overlay::wire::codec::{put_prefixed, put_u32, put_u8, Prefix, Reader};
use crate::overlay::wire::error::{EncodeError, WireError};
use crate::overlay::wire::ids::{NodeId, NODE_ID_LEN};

/// The body of an update_req in Chord-RELOAD (§10.7).
///
/// ```text
/// enum { invalidChordUpdateType(0), peer_ready(1), neighbors(2), full(3), (255) }
///     ChordUpdateType;
/// struct {
///   uint32           uptime;
///   ChordUpdateType  type;
///   select (type) {
///     case peer_ready: ;
///     case neighbors:  NodeId predecessors<0..2^16-1>;
///                      NodeId successors<0..2^16-1>;
///     case full:       NodeId predecessors<0..2^16-1>;
///                      NodeId successors<0..2^16-1>;
///                      NodeId fingers<0..2^16-1>;
///   };
/// } ChordUpdate;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChordUpdate {
    /// Seconds the sending peer has been up.
    pub uptime: u32,
    pub update: ChordUpdateType,
}

/// The `select (type)` arm of a [`ChordUpdate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChordUpdateType {
    /// `peer_ready(1)`: the sender is a peer and can be routed through.
    PeerReady,
    /// `neighbors(2)`: sent to members of the neighbor table.
    Neighbors {
        predecessors: Vec<NodeId>,
        successors: Vec<NodeId>,
    },
    /// `full(3)`: sent on a RouteQuery with send_update; fingers in ascending order.
    Full {
        predecessors: Vec<NodeId>,
        successors: Vec<NodeId>,
        fingers: Vec<NodeId>,
    },
}

/// The body of a route_query_ans in Chord-RELOAD (§10.8).
///
/// ```text
/// struct { NodeId next_peer; } ChordRouteQueryAns;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChordRouteQueryAns {
    pub next_peer: NodeId,
}

/// The `overlay_specific_data` of a Chord-RELOAD leave_req (§10.9).
///
/// ```text
/// enum { invalidChordLeaveType(0), from_succ(1), from_pred(2), (255) } ChordLeaveType;
/// struct {
///   ChordLeaveType type;
///   select (type) {
///     case from_succ: NodeId successors<0..2^16-1>;
///     case from_pred: NodeId predecessors<0..2^16-1>;
///   };
/// } ChordLeaveData;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChordLeaveData {
    /// `from_succ(1)`: sent by a successor of the recipient, with the sender's successors.
    FromSuccessor { successors: Vec<NodeId> },
    /// `from_pred(2)`: sent by a predecessor of the recipient, with the sender's predecessors.
    FromPredecessor { predecessors: Vec<NodeId> },
}

/// `NodeId xs<0..2^16-1>`.
pub(crate) fn decode_node_ids(
    r: &mut Reader<'_>,
    field: &'static str,
) -> Result<Vec<NodeId>, WireError> {
    let sub = r.sub_prefixed(Prefix::U16, field)?;
    if sub.remaining() % NODE_ID_LEN != 0 {
        return Err(WireError::LengthMismatch { field });
    }
    sub.list(field, |r| Ok(NodeId(r.array(field)?)))
}

pub(crate) fn encode_node_ids(
    out: &mut Vec<u8>,
    field: &'static str,
    ids: &[NodeId],
) -> Result<(), EncodeError> {
    put_prefixed(out, Prefix::U16, field, |out| {
        for id in ids {
            out.extend_from_slice(&id.0);
        }
        Ok(())
    })
}

impl ChordUpdate {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let uptime = r.u32("ChordUpdate.uptime")?;
        let update = match r.u8("ChordUpdate.type")? {
            1 => ChordUpdateType::PeerReady,
            2 => ChordUpdateType::Neighbors {
                predecessors: decode_node_ids(r, "ChordUpdate.predecessors")?,
                successors: decode_node_ids(r, "ChordUpdate.successors")?,
            },
            3 => ChordUpdateType::Full {
                predecessors: decode_node_ids(r, "ChordUpdate.predecessors")?,
                successors: decode_node_ids(r, "ChordUpdate.successors")?,
                fingers: decode_node_ids(r, "ChordUpdate.fingers")?,
            },
            _ => {
                return Err(WireError::InvalidValue {
                    field: "ChordUpdateType",
                })
            }
        };
        Ok(ChordUpdate { uptime, update })
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_u32(out, self.uptime);
        match &self.update {
            ChordUpdateType::PeerReady => put_u8(out, 1),
            ChordUpdateType::Neighbors {
                predecessors,
                successors,
            } => {
                put_u8(out, 2);
                encode_node_ids(out, "ChordUpdate.predecessors", predecessors)?;
                encode_node_ids(out, "ChordUpdate.successors", successors)?;
            }
            ChordUpdateType::Full {
                predecessors,
                successors,
                fingers,
            } => {
                put_u8(out, 3);
                encode_node_ids(out, "ChordUpdate.predecessors", predecessors)?;
                encode_node_ids(out, "ChordUpdate.successors", successors)?;
                encode_node_ids(out, "ChordUpdate.fingers", fingers)?;
            }
        }
        Ok(())
    }
}

impl ChordRouteQueryAns {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(ChordRouteQueryAns {
            next_peer: NodeId(r.array("ChordRouteQueryAns.next_peer")?),
        })
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.extend_from_slice(&self.next_peer.0);
        Ok(())
    }
}

impl ChordLeaveData {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        match r.u8("ChordLeaveData.type")? {
            1 => Ok(ChordLeaveData::FromSuccessor {
                successors: decode_node_ids(r, "ChordLeaveData.successors")?,
            }),
            2 => Ok(ChordLeaveData::FromPredecessor {
                predecessors: decode_node_ids(r, "ChordLeaveData.predecessors")?,
            }),
            _ => Err(WireError::InvalidValue {
                field: "ChordLeaveType",
            }),
        }
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            ChordLeaveData::FromSuccessor { successors } => {
                put_u8(out, 1);
                encode_node_ids(out, "ChordLeaveData.successors", successors)
            }
            ChordLeaveData::FromPredecessor { predecessors } => {
                put_u8(out, 2);
                encode_node_ids(out, "ChordLeaveData.predecessors", predecessors)
            }
        }
    }
}
