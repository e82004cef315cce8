//! Bodies of the topology methods (RFC 6940 §6.4.2): Join, Leave, RouteQuery and Probe.
//! Update's body is Chord-specific and lives in [`super::chord`].

use super::chord::ChordLeaveData;
use crate::overlay::wire::codec::{
    put_bool, put_opaque, put_prefixed, put_u32, put_u8, Prefix, Reader,
};
use crate::overlay::wire::error::{EncodeError, WireError};
use crate::overlay::wire::header::Destination;
use crate::overlay::wire::ids::NodeId;

/// ```text
/// struct {
///   NodeId  joining_peer_id;
///   opaque  overlay_specific_data<0..2^16-1>;
/// } JoinReq;
/// ```
/// Chord-RELOAD defines no overlay-specific data for Join; it is kept as bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinReq {
    pub joining_peer_id: NodeId,
    pub overlay_specific_data: Vec<u8>,
}

/// ```text
/// struct { opaque overlay_specific_data<0..2^16-1>; } JoinAns;
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct JoinAns {
    pub overlay_specific_data: Vec<u8>,
}

/// ```text
/// struct {
///   NodeId  leaving_peer_id;
///   opaque  overlay_specific_data<0..2^16-1>;   // Chord-RELOAD: a ChordLeaveData (§10.9)
/// } LeaveReq;
/// ```
/// Chord-RELOAD requires the data to be a [`ChordLeaveData`], so it is typed here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaveReq {
    pub leaving_peer_id: NodeId,
    pub leave_data: ChordLeaveData,
}

/// ```text
/// struct {
///   Boolean      send_update;
///   Destination  destination;
///   opaque       overlay_specific_data<0..2^16-1>;
/// } RouteQueryReq;
/// ```
/// Chord-RELOAD adds nothing to the request (§10.8); the data is kept as bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteQueryReq {
    pub send_update: bool,
    pub destination: Destination,
    pub overlay_specific_data: Vec<u8>,
}

/// `enum { invalidProbeInformationType(0), responsible_set(1), num_resources(2), uptime(3),
/// (255) } ProbeInformationType;` plus exp-probe (4, §14.13). Other values are allowed in a
/// request (the responder skips what it does not know).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProbeInformationType(pub u8);

impl ProbeInformationType {
    pub const RESPONSIBLE_SET: ProbeInformationType = ProbeInformationType(1);
    pub const NUM_RESOURCES: ProbeInformationType = ProbeInformationType(2);
    pub const UPTIME: ProbeInformationType = ProbeInformationType(3);
    pub const EXP_PROBE: ProbeInformationType = ProbeInformationType(4);
}

/// ```text
/// struct { ProbeInformationType requested_info<0..2^8-1>; } ProbeReq;
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ProbeReq {
    pub requested_info: Vec<ProbeInformationType>,
}

/// One answered probe item.
///
/// ```text
/// struct {
///   ProbeInformationType  type;
///   uint8                 length;
///   select (type) {
///     case responsible_set: uint32 responsible_ppb;
///     case num_resources:   uint32 num_resources;
///     case uptime:          uint32 uptime;
///   };
/// } ProbeInformation;
/// ```
/// Unknown types are allowed ("this structure allows for unknown option types") and kept raw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeInformation {
    /// Fraction of the overlay this peer is responsible for, in parts per billion.
    ResponsibleSet(u32),
    /// Number of resources stored.
    NumResources(u32),
    /// Seconds up.
    Uptime(u32),
    /// Any other type (not 0 and not 1..3).
    Other { info_type: u8, value: Vec<u8> },
}

/// ```text
/// struct { ProbeInformation probe_info<0..2^16-1>; } ProbeAns;
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ProbeAns {
    pub probe_info: Vec<ProbeInformation>,
}

impl JoinReq {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(JoinReq {
            joining_peer_id: NodeId(r.array("JoinReq.joining_peer_id")?),
            overlay_specific_data: r
                .opaque(Prefix::U16, "JoinReq.overlay_specific_data")?
                .to_vec(),
        })
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.extend_from_slice(&self.joining_peer_id.0);
        put_opaque(
            out,
            Prefix::U16,
            "JoinReq.overlay_specific_data",
            &self.overlay_specific_data,
        )
    }
}

impl JoinAns {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(JoinAns {
            overlay_specific_data: r
                .opaque(Prefix::U16, "JoinAns.overlay_specific_data")?
                .to_vec(),
        })
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_opaque(
            out,
            Prefix::U16,
            "JoinAns.overlay_specific_data",
            &self.overlay_specific_data,
        )
    }
}

impl LeaveReq {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let leaving_peer_id = NodeId(r.array("LeaveReq.leaving_peer_id")?);
        let mut data = r.sub_prefixed(Prefix::U16, "LeaveReq.overlay_specific_data")?;
        let leave_data = ChordLeaveData::decode(&mut data)?;
        data.finish("LeaveReq.overlay_specific_data")?;
        Ok(LeaveReq {
            leaving_peer_id,
            leave_data,
        })
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.extend_from_slice(&self.leaving_peer_id.0);
        put_prefixed(out, Prefix::U16, "LeaveReq.overlay_specific_data", |out| {
            self.leave_data.encode_into(out)
        })
    }
}

impl RouteQueryReq {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(RouteQueryReq {
            send_update: r.boolean("RouteQueryReq.send_update")?,
            destination: Destination::decode(r)?,
            overlay_specific_data: r
                .opaque(Prefix::U16, "RouteQueryReq.overlay_specific_data")?
                .to_vec(),
        })
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_bool(out, self.send_update);
        self.destination.encode_into(out)?;
        put_opaque(
            out,
            Prefix::U16,
            "RouteQueryReq.overlay_specific_data",
            &self.overlay_specific_data,
        )
    }
}

impl ProbeReq {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let types = r.opaque(Prefix::U8, "ProbeReq.requested_info")?;
        if types.contains(&0) {
            return Err(WireError::InvalidValue {
                field: "ProbeInformationType",
            });
        }
        Ok(ProbeReq {
            requested_info: types.iter().copied().map(ProbeInformationType).collect(),
        })
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_prefixed(out, Prefix::U8, "ProbeReq.requested_info", |out| {
            out.extend(self.requested_info.iter().map(|t| t.0));
            Ok(())
        })
    }
}

impl ProbeInformation {
    /// The wire value of `type`.
    pub fn info_type(&self) -> u8 {
        match self {
            ProbeInformation::ResponsibleSet(_) => 1,
            ProbeInformation::NumResources(_) => 2,
            ProbeInformation::Uptime(_) => 3,
            ProbeInformation::Other { info_type, .. } => *info_type,
        }
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let info_type = r.u8("ProbeInformation.type")?;
        let mut v = r.sub_prefixed(Prefix::U8, "ProbeInformation.length")?;
        let info = match info_type {
            0 => {
                return Err(WireError::InvalidValue {
                    field: "ProbeInformationType",
                })
            }
            1 => ProbeInformation::ResponsibleSet(v.u32("ProbeInformation.responsible_ppb")?),
            2 => ProbeInformation::NumResources(v.u32("ProbeInformation.num_resources")?),
            3 => ProbeInformation::Uptime(v.u32("ProbeInformation.uptime")?),
            other => ProbeInformation::Other {
                info_type: other,
                value: v.bytes(v.remaining(), "ProbeInformation.value")?.to_vec(),
            },
        };
        v.finish("ProbeInformation.length")?;
        Ok(info)
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_u8(out, self.info_type());
        put_prefixed(out, Prefix::U8, "ProbeInformation.value", |out| {
            match self {
                ProbeInformation::ResponsibleSet(v)
                | ProbeInformation::NumResources(v)
                | ProbeInformation::Uptime(v) => put_u32(out, *v),
                ProbeInformation::Other { value, .. } => out.extend_from_slice(value),
            }
            Ok(())
        })
    }
}

impl ProbeAns {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(ProbeAns {
            probe_info: r
                .sub_prefixed(Prefix::U16, "ProbeAns.probe_info")?
                .list("ProbeAns.probe_info", ProbeInformation::decode)?,
        })
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_prefixed(out, Prefix::U16, "ProbeAns.probe_info", |out| {
            self.probe_info.iter().try_for_each(|p| p.encode_into(out))
        })
    }
}
