//! Bodies of the forwarding and link management methods (RFC 6940 §6.5): Attach (with ICE
//! candidates), AppAttach, Ping and ConfigUpdate.
//!
//! Tracker nodes only offer host candidates over TLS-TCP-FH-NO-ICE, but every candidate type
//! and address type decodes faithfully.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use crate::overlay::wire::codec::{
    put_bool, put_opaque, put_prefixed, put_u16, put_u32, put_u64, put_u8, Prefix, Reader,
};
use crate::overlay::wire::error::{EncodeError, WireError};

/// ```text
/// enum { invalidAddressType(0), ipv4_address(1), ipv6_address(2), (255) } AddressType;
/// struct { uint32 addr; uint16 port; } IPv4AddrPort;
/// struct { uint128 addr; uint16 port; } IPv6AddrPort;
/// struct {
///   AddressType  type;
///   uint8        length;
///   select (type) {
///     case ipv4_address: IPv4AddrPort v4addr_port;
///     case ipv6_address: IPv6AddrPort v6addr_port;
///   };
/// } IpAddressPort;
/// ```
/// The structure is extensible (§6.3.1.1), so unknown address types are kept raw. An IPv6
/// address's flow info and scope id are not on the wire and decode as zero.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum IpAddressPort {
    Ip(SocketAddr),
    Other { address_type: u8, data: Vec<u8> },
}

/// `OverlayLinkType` (§6.5.1.1, §14.10), one byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OverlayLinkType(pub u8);

impl OverlayLinkType {
    pub const DTLS_UDP_SR: OverlayLinkType = OverlayLinkType(1);
    pub const DTLS_UDP_SR_NO_ICE: OverlayLinkType = OverlayLinkType(3);
    /// TLS over TCP with the framing header, no ICE: what tracker nodes use.
    pub const TLS_TCP_FH_NO_ICE: OverlayLinkType = OverlayLinkType(4);
    pub const EXP_LINK: OverlayLinkType = OverlayLinkType(5);
}

/// ```text
/// struct {
///   opaque  name<0..2^16-1>;
///   opaque  value<0..2^16-1>;
/// } IceExtension;
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IceExtension {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

/// `enum { invalidCandType(0), host(1), srflx(2), /* RESERVED(3) */ relay(4), (255) }
/// CandType;` with the select arm it controls.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CandidateType {
    /// `host(1)`: no related address.
    Host,
    /// `srflx(2)`: server reflexive, with the base address.
    ServerReflexive { rel_addr_port: IpAddressPort },
    /// `relay(4)`: relayed, with the related address.
    Relayed { rel_addr_port: IpAddressPort },
}

/// ```text
/// struct {
///   IpAddressPort    addr_port;
///   OverlayLinkType  overlay_link;
///   opaque           foundation<0..255>;
///   uint32           priority;
///   CandType         type;
///   select (type) {
///     case host:  ;
///     case srflx:
///     case relay: IpAddressPort rel_addr_port;
///   };
///   IceExtension     extensions<0..2^16-1>;
/// } IceCandidate;
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IceCandidate {
    pub addr_port: IpAddressPort,
    pub overlay_link: OverlayLinkType,
    pub foundation: Vec<u8>,
    pub priority: u32,
    pub candidate_type: CandidateType,
    pub extensions: Vec<IceExtension>,
}

/// The body of both attach_req and attach_ans (§6.5.1.1).
///
/// ```text
/// struct {
///   opaque        ufrag<0..2^8-1>;
///   opaque        password<0..2^8-1>;
///   opaque        role<0..2^8-1>;          // "passive" in requests, "active" in answers
///   IceCandidate  candidates<0..2^16-1>;
///   Boolean       send_update;
/// } AttachReqAns;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachReqAns {
    pub ufrag: Vec<u8>,
    pub password: Vec<u8>,
    pub role: Vec<u8>,
    pub candidates: Vec<IceCandidate>,
    pub send_update: bool,
}

/// The body of both app_attach_req and app_attach_ans (§6.5.2).
///
/// ```text
/// struct {
///   opaque        ufrag<0..2^8-1>;
///   opaque        password<0..2^8-1>;
///   uint16        application;
///   opaque        role<0..2^8-1>;
///   IceCandidate  candidates<0..2^16-1>;
/// } AppAttachReq;   /* AppAttachAns has the same layout */
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppAttachReqAns {
    pub ufrag: Vec<u8>,
    pub password: Vec<u8>,
    pub application: u16,
    pub role: Vec<u8>,
    pub candidates: Vec<IceCandidate>,
}

/// ```text
/// struct { opaque<0..2^16-1> padding; } PingReq;
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PingReq {
    pub padding: Vec<u8>,
}

/// ```text
/// struct {
///   uint64  response_id;
///   uint64  time;          // milliseconds since the Unix epoch, like storage_time
/// } PingAns;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PingAns {
    pub response_id: u64,
    pub time: u64,
}

/// ```text
/// enum { invalidConfigUpdateType(0), config(1), kind(2), (255) } ConfigUpdateType;
/// typedef opaque KindDescription<0..2^16-1>;
/// struct {
///   ConfigUpdateType  type;
///   uint32            length;              // of the rest of the message
///   select (type) {
///     case config: opaque           config_data<0..2^24-1>;
///     case kind:   KindDescription  kinds<0..2^24-1>;
///   };
/// } ConfigUpdateReq;
/// ```
/// Unknown types are allowed ("this structure allows for unknown content types") and kept raw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigUpdateReq {
    /// `config(1)`: a whole configuration document.
    Config(Vec<u8>),
    /// `kind(2)`: XML kind-block descriptions.
    Kinds(Vec<Vec<u8>>),
    /// Any type above 2, with the bytes its `length` covers.
    Other { update_type: u8, data: Vec<u8> },
}

impl IpAddressPort {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let address_type = r.u8("IpAddressPort.type")?;
        let mut v = r.sub_prefixed(Prefix::U8, "IpAddressPort.length")?;
        let a = match address_type {
            0 => {
                return Err(WireError::InvalidValue {
                    field: "AddressType",
                })
            }
            1 => {
                let ip = Ipv4Addr::from(v.array::<4>("IPv4AddrPort.addr")?);
                let port = v.u16("IPv4AddrPort.port")?;
                IpAddressPort::Ip(SocketAddr::V4(SocketAddrV4::new(ip, port)))
            }
            2 => {
                let ip = Ipv6Addr::from(v.array::<16>("IPv6AddrPort.addr")?);
                let port = v.u16("IPv6AddrPort.port")?;
                IpAddressPort::Ip(SocketAddr::V6(SocketAddrV6::new(ip, port, 0, 0)))
            }
            other => IpAddressPort::Other {
                address_type: other,
                data: v.bytes(v.remaining(), "IpAddressPort.data")?.to_vec(),
            },
        };
        v.finish("IpAddressPort.length")?;
        Ok(a)
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            IpAddressPort::Ip(SocketAddr::V4(a)) => {
                put_u8(out, 1);
                put_u8(out, 6);
                out.extend_from_slice(&a.ip().octets());
                put_u16(out, a.port());
                Ok(())
            }
            IpAddressPort::Ip(SocketAddr::V6(a)) => {
                put_u8(out, 2);
                put_u8(out, 18);
                out.extend_from_slice(&a.ip().octets());
                put_u16(out, a.port());
                Ok(())
            }
            IpAddressPort::Other { address_type, data } => {
                put_u8(out, *address_type);
                put_opaque(out, Prefix::U8, "IpAddressPort.data", data)
            }
        }
    }
}

impl IceExtension {
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(IceExtension {
            name: r.opaque(Prefix::U16, "IceExtension.name")?.to_vec(),
            value: r.opaque(Prefix::U16, "IceExtension.value")?.to_vec(),
        })
    }

    fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_opaque(out, Prefix::U16, "IceExtension.name", &self.name)?;
        put_opaque(out, Prefix::U16, "IceExtension.value", &self.value)
    }
}

impl IceCandidate {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let addr_port = IpAddressPort::decode(r)?;
        let overlay_link = OverlayLinkType(r.u8("IceCandidate.overlay_link")?);
        if overlay_link.0 == 0 {
            return Err(WireError::InvalidValue {
                field: "OverlayLinkType",
            });
        }
        let foundation = r.opaque(Prefix::U8, "IceCandidate.foundation")?.to_vec();
        let priority = r.u32("IceCandidate.priority")?;
        let candidate_type = match r.u8("IceCandidate.type")? {
            1 => CandidateType::Host,
            2 => CandidateType::ServerReflexive {
                rel_addr_port: IpAddressPort::decode(r)?,
            },
            4 => CandidateType::Relayed {
                rel_addr_port: IpAddressPort::decode(r)?,
            },
            // An unknown arm has no length, so the rest cannot be parsed (§6.3.1.1).
            _ => return Err(WireError::InvalidValue { field: "CandType" }),
        };
        let extensions = r
            .sub_prefixed(Prefix::U16, "IceCandidate.extensions")?
            .list("IceCandidate.extensions", IceExtension::decode)?;
        Ok(IceCandidate {
            addr_port,
            overlay_link,
            foundation,
            priority,
            candidate_type,
            extensions,
        })
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.addr_port.encode_into(out)?;
        put_u8(out, self.overlay_link.0);
        put_opaque(out, Prefix::U8, "IceCandidate.foundation", &self.foundation)?;
        put_u32(out, self.priority);
        match &self.candidate_type {
            CandidateType::Host => put_u8(out, 1),
            CandidateType::ServerReflexive { rel_addr_port } => {
                put_u8(out, 2);
                rel_addr_port.encode_into(out)?;
            }
            CandidateType::Relayed { rel_addr_port } => {
                put_u8(out, 4);
                rel_addr_port.encode_into(out)?;
            }
        }
        put_prefixed(out, Prefix::U16, "IceCandidate.extensions", |out| {
            self.extensions.iter().try_for_each(|e| e.encode_into(out))
        })
    }
}

fn decode_candidates(
    r: &mut Reader<'_>,
    field: &'static str,
) -> Result<Vec<IceCandidate>, WireError> {
    r.sub_prefixed(Prefix::U16, field)?
        .list(field, IceCandidate::decode)
}

fn encode_candidates(
    out: &mut Vec<u8>,
    field: &'static str,
    candidates: &[IceCandidate],
) -> Result<(), EncodeError> {
    put_prefixed(out, Prefix::U16, field, |out| {
        candidates.iter().try_for_each(|c| c.encode_into(out))
    })
}

impl AttachReqAns {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(AttachReqAns {
            ufrag: r.opaque(Prefix::U8, "AttachReqAns.ufrag")?.to_vec(),
            password: r.opaque(Prefix::U8, "AttachReqAns.password")?.to_vec(),
            role: r.opaque(Prefix::U8, "AttachReqAns.role")?.to_vec(),
            candidates: decode_candidates(r, "AttachReqAns.candidates")?,
            send_update: r.boolean("AttachReqAns.send_update")?,
        })
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_opaque(out, Prefix::U8, "AttachReqAns.ufrag", &self.ufrag)?;
        put_opaque(out, Prefix::U8, "AttachReqAns.password", &self.password)?;
        put_opaque(out, Prefix::U8, "AttachReqAns.role", &self.role)?;
        encode_candidates(out, "AttachReqAns.candidates", &self.candidates)?;
        put_bool(out, self.send_update);
        Ok(())
    }
}

impl AppAttachReqAns {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(AppAttachReqAns {
            ufrag: r.opaque(Prefix::U8, "AppAttach.ufrag")?.to_vec(),
            password: r.opaque(Prefix::U8, "AppAttach.password")?.to_vec(),
            application: r.u16("AppAttach.application")?,
            role: r.opaque(Prefix::U8, "AppAttach.role")?.to_vec(),
            candidates: decode_candidates(r, "AppAttach.candidates")?,
        })
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_opaque(out, Prefix::U8, "AppAttach.ufrag", &self.ufrag)?;
        put_opaque(out, Prefix::U8, "AppAttach.password", &self.password)?;
        put_u16(out, self.application);
        put_opaque(out, Prefix::U8, "AppAttach.role", &self.role)?;
        encode_candidates(out, "AppAttach.candidates", &self.candidates)
    }
}

impl PingReq {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(PingReq {
            padding: r.opaque(Prefix::U16, "PingReq.padding")?.to_vec(),
        })
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_opaque(out, Prefix::U16, "PingReq.padding", &self.padding)
    }
}

impl PingAns {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(PingAns {
            response_id: r.u64("PingAns.response_id")?,
            time: r.u64("PingAns.time")?,
        })
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_u64(out, self.response_id);
        put_u64(out, self.time);
        Ok(())
    }
}

impl ConfigUpdateReq {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let update_type = r.u8("ConfigUpdateReq.type")?;
        let mut v = r.sub_prefixed(Prefix::U32, "ConfigUpdateReq.length")?;
        let req = match update_type {
            0 => {
                return Err(WireError::InvalidValue {
                    field: "ConfigUpdateType",
                })
            }
            1 => ConfigUpdateReq::Config(
                v.opaque(Prefix::U24, "ConfigUpdateReq.config_data")?
                    .to_vec(),
            ),
            2 => ConfigUpdateReq::Kinds(
                v.sub_prefixed(Prefix::U24, "ConfigUpdateReq.kinds")?
                    .list("ConfigUpdateReq.kinds", |r| {
                        Ok(r.opaque(Prefix::U16, "KindDescription")?.to_vec())
                    })?,
            ),
            other => ConfigUpdateReq::Other {
                update_type: other,
                data: v.bytes(v.remaining(), "ConfigUpdateReq.data")?.to_vec(),
            },
        };
        v.finish("ConfigUpdateReq.length")?;
        Ok(req)
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let ty = match self {
            ConfigUpdateReq::Config(_) => 1,
            ConfigUpdateReq::Kinds(_) => 2,
            ConfigUpdateReq::Other { update_type, .. } => *update_type,
        };
        put_u8(out, ty);
        put_prefixed(
            out,
            Prefix::U32,
            "ConfigUpdateReq.length",
            |out| match self {
                ConfigUpdateReq::Config(data) => {
                    put_opaque(out, Prefix::U24, "ConfigUpdateReq.config_data", data)
                }
                ConfigUpdateReq::Kinds(kinds) => {
                    put_prefixed(out, Prefix::U24, "ConfigUpdateReq.kinds", |out| {
                        kinds
                            .iter()
                            .try_for_each(|k| put_opaque(out, Prefix::U16, "KindDescription", k))
                    })
                }
                ConfigUpdateReq::Other { data, .. } => {
                    out.extend_from_slice(data);
                    Ok(())
                }
            },
        )
    }
}
