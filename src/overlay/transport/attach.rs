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
//! - **Shared secret** (§13.4, optional). RFC 6940 keys TLS-PSK or TLS-SRP with the
//!   overlay's shared secret so that a node without it cannot complete a TLS handshake.
//!   rustls implements neither, so the secret is proven inside the mutually authenticated
//!   TLS 1.3 link instead: each side's link hello carries, as the ICE extension
//!   [`SHARED_SECRET_EXTENSION`] of its candidate, [`shared_secret_proof`] = HMAC-SHA256(secret,
//!   label || instance name || SHA-256 of its own certificate). The receiver recomputes it
//!   for the certificate the TLS handshake authenticated and refuses the link when it is
//!   missing or wrong. Bound to a certificate whose private key the handshake proved, a proof
//!   is useless to any other node, and it never leaves TLS. Difference from PSK: a node
//!   without the secret completes the TLS handshake (with an admitted certificate) before its
//!   hello is refused.
//!
//! Deviation, documented: §11.4 routes the bootstrap Attach to "the Joining Node's Node-ID
//! plus 1"; here the hello answer names the bootstrap node and the Join itself (routed by the
//! Chord node to `own + 1`, §10.5) finds the admitting peer.

use std::net::SocketAddr;

use crate::overlay::wire::{
    AttachReqAns, Body, Destination, ForwardingHeader, Message, NodeId, OverlayLinkType,
    SignerIdentity, TransactionId, NODE_ID_LEN,
};

/// RFC 6940 §6.3.4 / §5.1 style hash algorithm number for the identity: sha1(2) as in TLS.
const IDENTITY_HASH_ALG: u8 = 2;

pub use crate::overlay::chord::node::{
    attach_body, candidate_addr, candidate_addrs, preferred_candidate,
};

/// Name of the ICE candidate extension carrying the shared-secret proof.
pub const SHARED_SECRET_EXTENSION: &[u8] = b"reload-shared-secret-proof";
const SHARED_SECRET_LABEL: &[u8] = b"RELOAD shared-secret admission v1\0";

/// HMAC-SHA256(`secret`, label || `instance_name` || 0 || `cert_hash`): what a node holding
/// the shared secret puts in its link hello for its certificate with SHA-256 `cert_hash`.
pub fn shared_secret_proof(secret: &[u8], instance_name: &str, cert_hash: &[u8; 32]) -> Vec<u8> {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(SHARED_SECRET_LABEL);
    ctx.update(instance_name.as_bytes());
    ctx.update(&[0]);
    ctx.update(cert_hash);
    ctx.sign().as_ref().to_vec()
}

/// True when `body` carries the right proof for the certificate with SHA-256 `cert_hash`
/// (compared in constant time).
pub fn has_shared_secret_proof(
    body: &AttachReqAns,
    secret: &[u8],
    instance_name: &str,
    cert_hash: &[u8; 32],
) -> bool {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut input = SHARED_SECRET_LABEL.to_vec();
    input.extend_from_slice(instance_name.as_bytes());
    input.push(0);
    input.extend_from_slice(cert_hash);
    body.candidates
        .iter()
        .flat_map(|c| c.extensions.iter())
        .filter(|e| e.name == SHARED_SECRET_EXTENSION)
        .any(|e| ring::hmac::verify(&key, &input, &e.value).is_ok())
}

/// Adds the shared-secret proof to an Attach message's candidates (before it is signed).
pub fn add_shared_secret_proof(
    message: &mut Message,
    proof: Vec<u8>,
) -> Result<(), crate::overlay::wire::EncodeError> {
    let Ok(body) = message.contents.decode_body(&crate::overlay::wire::NoKinds) else {
        return Ok(());
    };
    let (mut b, answer) = match body {
        Body::AttachReq(b) => (b, false),
        Body::AttachAns(b) => (b, true),
        _ => return Ok(()),
    };
    for c in &mut b.candidates {
        c.extensions.push(crate::overlay::wire::IceExtension {
            name: SHARED_SECRET_EXTENSION.to_vec(),
            value: proof.clone(),
        });
    }
    let body = if answer {
        Body::AttachAns(b)
    } else {
        Body::AttachReq(b)
    };
    message.contents = crate::overlay::wire::MessageContents::from_body(&body)?;
    Ok(())
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

/// The header fields every message of this overlay shares.
#[derive(Clone, Debug)]
pub struct Origin {
    pub overlay: crate::overlay::wire::OverlayHash,
    /// RFC 6940 §6.3.2.1 configuration sequence stamped on every message.
    pub configuration_sequence: u16,
    pub ttl: u8,
    pub own: NodeId,
    /// The addresses sent as host candidates, preferred first.
    pub advertised: Vec<SocketAddr>,
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
            &Body::AttachReq(attach_body(&self.advertised, false, self.link_type)),
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
            &Body::AttachAns(attach_body(&self.advertised, true, self.link_type)),
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
            advertised: vec!["127.0.0.1:7000".parse().unwrap()],
            link_type: OverlayLinkType::TLS_TCP_FH_NO_ICE,
        }
    }

    #[test]
    fn every_advertised_address_is_a_candidate_and_the_reachable_family_is_preferred() {
        let mut o = origin(5);
        let v4: SocketAddr = "192.0.2.1:6084".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:6084".parse().unwrap();
        o.advertised = vec![v4, v6];
        let m = o.attach_req(9, NodeId::WILDCARD).unwrap();
        let bytes = m.to_bytes().unwrap();
        let back = Message::decode(&bytes, &WireConfig::new(o.overlay)).unwrap();
        let Body::AttachReq(body) = back.contents.decode_body(&NoKinds).unwrap() else {
            panic!("not an attach_req");
        };
        assert_eq!(candidate_addrs(&body), vec![v4, v6]);
        assert!(body.candidates[0].priority > body.candidates[1].priority);
        assert_eq!(preferred_candidate(&body, |a| a.is_ipv6()), Some(v6));
        assert_eq!(preferred_candidate(&body, |a| a.is_ipv4()), Some(v4));
        // No family in common: the most preferred.
        assert_eq!(preferred_candidate(&body, |_| false), Some(v4));
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
        assert_eq!(candidate_addr(&body), Some(o.advertised[0]));
        assert_eq!(body.role, b"passive");
    }

    #[test]
    fn the_shared_secret_proof_binds_secret_overlay_and_certificate() {
        let mut m = origin(5).attach_req(9, NodeId::WILDCARD).unwrap();
        let cert = [7u8; 32];
        add_shared_secret_proof(&mut m, shared_secret_proof(b"s3cret", "t", &cert)).unwrap();
        let bytes = m.to_bytes().unwrap();
        let back = Message::decode(&bytes, &WireConfig::new(OverlayHash::of_name("t"))).unwrap();
        let Body::AttachReq(body) = back.contents.decode_body(&NoKinds).unwrap() else {
            panic!("not an attach_req");
        };
        assert!(has_shared_secret_proof(&body, b"s3cret", "t", &cert));
        assert!(!has_shared_secret_proof(&body, b"s3creT", "t", &cert));
        assert!(!has_shared_secret_proof(&body, b"s3cret", "u", &cert));
        assert!(!has_shared_secret_proof(&body, b"s3cret", "t", &[8u8; 32]));
        let plain = attach_body(&[o_addr()], false, OverlayLinkType::TLS_TCP_FH_NO_ICE);
        assert!(!has_shared_secret_proof(&plain, b"s3cret", "t", &cert));
    }

    fn o_addr() -> SocketAddr {
        "127.0.0.1:7000".parse().unwrap()
    }

    /// The routed Attach the Chord node originates, once encoded as the transport encodes it
    /// (configuration sequence, sender identity), is byte for byte the attach_req `Origin`
    /// builds; so is the target's answer.
    #[test]
    fn routed_attach_from_the_chord_node_is_byte_identical() {
        use crate::overlay::chord::codec::{from_wire, to_wire};
        use crate::overlay::chord::message::{Body as CBody, Request as CRequest};
        use crate::overlay::chord::{
            Action, ChordConfig, ChordNode, Event, LocalRequest, Message as CMessage,
        };
        let encode = |m: &CMessage, o: &Origin| {
            let mut w = to_wire(m, o.overlay).unwrap();
            w.header.configuration_sequence = o.configuration_sequence;
            sign_as(&mut w, o.own);
            w.to_bytes().unwrap()
        };
        let (requester, target, relay) = (origin(5), origin(7), NodeId::from_u128(6));
        let request = CMessage {
            transaction_id: 9,
            ttl: 100,
            via: Vec::new(),
            destinations: vec![crate::overlay::chord::Destination::Node(target.own)],
            sender: requester.own,
            body: CBody::Request(CRequest::Attach(attach_body(
                &requester.advertised,
                false,
                requester.link_type,
            ))),
        };
        let wire_req = requester.attach_req(9, target.own).unwrap();
        assert_eq!(encode(&request, &requester), wire_req.to_bytes().unwrap());
        // The target, a Chord node on its ring, gets it through a relay and answers.
        let mut node = ChordNode::new(
            target.own,
            ChordConfig {
                advertised: target.advertised.clone(),
                link_type: target.link_type,
                ..ChordConfig::default()
            },
            1,
        );
        node.handle(
            Event::Local {
                op: 1,
                request: LocalRequest::CreateOverlay,
            },
            0,
        );
        let mut relayed = wire_req.clone();
        relayed.header.prepare_forward(Some(requester.own)).unwrap();
        let arrived = from_wire(&relayed, relay, &crate::overlay::wire::NoKinds).unwrap();
        let actions = node.handle(
            Event::Received {
                from: relay,
                message: arrived,
            },
            10,
        );
        let answer = actions
            .iter()
            .find_map(|a| match a {
                Action::Send { to, message } if *to == relay => Some(message.clone()),
                _ => None,
            })
            .expect("the attach_ans goes back to the relay");
        let expected = target.attach_ans(&relayed.header, Some(relay)).unwrap();
        assert_eq!(encode(&answer, &target), expected.to_bytes().unwrap());
        assert_eq!(
            node.address_of(requester.own),
            Some(requester.advertised[0])
        );
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
