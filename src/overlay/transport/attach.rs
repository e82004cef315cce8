//! Attach without ICE (RFC 6940 §6.5.1, overlay link type TLS-TCP-FH-NO-ICE), as tracker
//! nodes use it: building and reading the messages; the transport decides when.
//!
//! - **Link hello.** The first message on a link we dialled is an attach_req addressed to the
//!   wildcard Node-ID (§6.1.1: consumed by the node that receives it, never forwarded). Its
//!   security block names the sender: SignerIdentity `cert_hash_node_id` (§6.3.4) whose value
//!   is the sender's 16-byte Node-ID (the certificate hash proper, and the signature, come with
//!   the overlay security work; the signature value is empty). The one candidate is the
//!   sender's advertised address, type host (§6.5.1.1), link type TLS-TCP-FH-NO-ICE. The
//!   accepting side answers attach_ans, also to the wildcard, with its own identity and
//!   candidate. So the accepting side learns who is on the link, and a node dialling a
//!   bootstrap address (§11.4) learns the bootstrap's Node-ID from the answer.
//! - **Routed Attach.** To reach a Node-ID whose address is unknown, an attach_req with
//!   destination list `[that Node-ID]` is routed through the overlay (§6.5.1.2); the target
//!   answers along the via list (§6.2.2) with its candidate, and the requester dials it.
//!
//! Deviation, documented: §11.4 routes the bootstrap Attach to "the Joining Node's Node-ID
//! plus 1"; here the hello answer names the bootstrap node and the Join itself (routed by the
//! Chord node to `own + 1`, §10.5) finds the admitting peer.

use std::net::SocketAddr;

use crate::overlay::wire::{
    AttachReqAns, Body, CandidateType, Destination, ForwardingHeader, IceCandidate, IpAddressPort,
    Message, NodeId, OverlayLinkType, SignerIdentity, TransactionId, NODE_ID_LEN,
};

/// RFC 6940 §6.3.4 / §5.1 style hash algorithm number for the identity: sha1(2) as in TLS.
const IDENTITY_HASH_ALG: u8 = 2;

/// ICE priority of a host candidate with local preference 65535 and component 1
/// (RFC 8445 §5.1.2.1 formula), the only candidate sent.
const HOST_PRIORITY: u32 = (126 << 24) | (65535 << 8) | 255;

/// The Attach body carrying one host candidate at `addr` reached over `link`: the link type
/// actually used (§6.5.1.1): TLS-TCP-FH-NO-ICE with security on, the experimental type
/// (exp-link, §14.10) for the plain TCP of the insecure test mode.
pub fn attach_body(addr: SocketAddr, answer: bool, link: OverlayLinkType) -> AttachReqAns {
    AttachReqAns {
        ufrag: Vec::new(),
        password: Vec::new(),
        // §6.5.1.1: "passive" in requests, "active" in answers.
        role: if answer {
            b"active".to_vec()
        } else {
            b"passive".to_vec()
        },
        candidates: vec![IceCandidate {
            addr_port: IpAddressPort::Ip(addr),
            overlay_link: link,
            foundation: b"1".to_vec(),
            priority: HOST_PRIORITY,
            candidate_type: CandidateType::Host,
            extensions: Vec::new(),
        }],
        send_update: false,
    }
}

/// Sets the sender's identity in the security block.
pub fn sign_as(message: &mut Message, own: NodeId) {
    message.security.signature.identity = SignerIdentity::CertHashNodeId {
        hash_alg: IDENTITY_HASH_ALG,
        certificate_node_id_hash: own.0.to_vec(),
    };
}

/// The Node-ID named by a message's SignerIdentity, when it is `cert_hash_node_id` with 16
/// bytes.
pub fn signer(message: &Message) -> Option<NodeId> {
    match &message.security.signature.identity {
        SignerIdentity::CertHashNodeId {
            certificate_node_id_hash,
            ..
        } => <[u8; NODE_ID_LEN]>::try_from(certificate_node_id_hash.as_slice())
            .ok()
            .map(NodeId),
        _ => None,
    }
}

/// The first IP host candidate of an Attach body.
pub fn candidate_addr(body: &AttachReqAns) -> Option<SocketAddr> {
    body.candidates.iter().find_map(|c| match c.addr_port {
        IpAddressPort::Ip(a) if a.port() != 0 && !a.ip().is_unspecified() => Some(a),
        _ => None,
    })
}

/// The header fields every message of this overlay shares.
#[derive(Clone, Copy, Debug)]
pub struct Origin {
    pub overlay: crate::overlay::wire::OverlayHash,
    /// RFC 6940 §6.3.2.1 configuration sequence stamped on every message.
    pub configuration_sequence: u16,
    pub ttl: u8,
    pub own: NodeId,
    pub advertised: SocketAddr,
    /// The overlay link type of this node's links, advertised in its candidates.
    pub link_type: OverlayLinkType,
}

impl Origin {
    /// An attach_req to `destination` (the wildcard for the link hello).
    pub fn attach_req(
        &self,
        transaction_id: u64,
        destination: NodeId,
    ) -> Result<Message, crate::overlay::wire::EncodeError> {
        let header = ForwardingHeader::new_request(
            self.overlay,
            self.configuration_sequence,
            self.ttl,
            TransactionId(transaction_id),
            vec![Destination::Node(destination)],
        );
        let mut m = Message::new(
            header,
            &Body::AttachReq(attach_body(self.advertised, false, self.link_type)),
        )?;
        sign_as(&mut m, self.own);
        Ok(m)
    }

    /// The attach_ans to a request with header `request` that arrived from `previous_hop`
    /// (`None` on the link hello): routed back along the via list (§6.2.2), or to the
    /// wildcard on the link.
    pub fn attach_ans(
        &self,
        request: &ForwardingHeader,
        previous_hop: Option<NodeId>,
    ) -> Result<Message, crate::overlay::wire::EncodeError> {
        let mut req = request.clone();
        if let Some(hop) = previous_hop {
            req.via_list.push(Destination::Node(hop));
        }
        let mut header = req.response_header(self.ttl);
        if header.destination_list.is_empty() {
            header.destination_list = vec![Destination::Node(NodeId::WILDCARD)];
        }
        let mut m = Message::new(
            header,
            &Body::AttachAns(attach_body(self.advertised, true, self.link_type)),
        )?;
        sign_as(&mut m, self.own);
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overlay::wire::{NoKinds, OverlayHash, WireConfig};

    fn origin(n: u128) -> Origin {
        Origin {
            overlay: OverlayHash::of_name("t"),
            configuration_sequence: 0,
            ttl: 100,
            own: NodeId::from_u128(n),
            advertised: "127.0.0.1:7000".parse().unwrap(),
            link_type: OverlayLinkType::TLS_TCP_FH_NO_ICE,
        }
    }

    #[test]
    fn hello_names_the_sender_and_its_address() {
        let o = origin(5);
        let m = o.attach_req(9, NodeId::WILDCARD).unwrap();
        let bytes = m.to_bytes().unwrap();
        let back = Message::decode(&bytes, &WireConfig::new(o.overlay)).unwrap();
        assert_eq!(signer(&back), Some(NodeId::from_u128(5)));
        let Body::AttachReq(body) = back.contents.decode_body(&NoKinds).unwrap() else {
            panic!("not an attach_req");
        };
        assert_eq!(candidate_addr(&body), Some(o.advertised));
        assert_eq!(body.role, b"passive");
    }

    #[test]
    fn routed_answer_retraces_the_via_list() {
        let o = origin(5);
        let mut req = o.attach_req(9, NodeId::from_u128(7)).unwrap().header;
        req.via_list = vec![Destination::Node(NodeId::from_u128(1))];
        let ans = origin(7)
            .attach_ans(&req, Some(NodeId::from_u128(2)))
            .unwrap();
        assert_eq!(
            ans.header.destination_list,
            vec![
                Destination::Node(NodeId::from_u128(2)),
                Destination::Node(NodeId::from_u128(1))
            ]
        );
        assert_eq!(ans.header.transaction_id, TransactionId(9));
        let hello_ans = origin(7)
            .attach_ans(&o.attach_req(3, NodeId::WILDCARD).unwrap().header, None)
            .unwrap();
        assert_eq!(
            hello_ans.header.destination_list,
            vec![Destination::Node(NodeId::WILDCARD)]
        );
    }
}
