//! Links and Attach (RFC 6940 §6.5.1) as state transitions of the node.
//!
//! With an address of its own ([`ChordConfig::advertised`](super::ChordConfig)) the node
//! manages its links: it knows which peers it is linked to (a link hello answered,
//! [`Event::LinkUp`](super::Event::LinkUp), or a message received on the link), keeps an
//! address book from the candidates of hellos and Attaches, and turns every message for a
//! peer into one of:
//! - [`Action::Send`] on the link to it;
//! - [`Action::Dial`] to its address, then the message (the runtime queues it after the
//!   hello on the new link);
//! - with no address: an attach_req routed to its Node-ID (§6.5.1.2) through a linked next
//!   hop, and the message held (bounded) until the attach_ans gives the address and the link
//!   is dialled. A peer not reached within `attach_timeout_ms` fails like a link going down
//!   (§10.7.1).
//!
//! A routed attach_req is relayed hop by hop like any request (symmetric recursive routing,
//! §6.2), but only over existing links (a relay never opens a link for it) and answered by
//! its target with its own candidate along the via list. An address that just failed to
//! connect is not dialled again for one update round: the node finds the peer with a routed
//! Attach instead (its address may have changed).
//!
//! Candidates follow "Attach without ICE" as tracker nodes use it: one host candidate, the
//! advertised address, of the link type the runtime uses (TLS-TCP-FH-NO-ICE with security on,
//! the experimental link type of the insecure test mode); no connectivity checks.
//!
//! Without an address of its own the node leaves links to its runtime: every `Send` may open
//! a link (the unit tests that drive single nodes by hand use that).

use super::{Action, ChordNode, Timer};
use crate::overlay::chord::id::NodeId;
use crate::overlay::chord::message::{AttachReqAns, Body, Destination, Message, Request, Response};
use crate::overlay::wire::{CandidateType, IceCandidate, IpAddressPort, OverlayLinkType};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// ICE priority of a host candidate with local preference `65535 - rank` and component 1
/// (RFC 8445 §5.1.2.1 formula): the first advertised address has local preference 65535.
fn host_priority(rank: usize) -> u32 {
    let local = 65535u32.saturating_sub(rank.min(65535) as u32);
    (126 << 24) | (local << 8) | 255
}

/// The Attach body carrying one host candidate per address of `addrs` (preferred first),
/// reached over `link`: the link type actually used (§6.5.1.1): TLS-TCP-FH-NO-ICE with
/// security on, the experimental type (exp-link, §14.10) for the plain TCP of the insecure
/// test mode.
pub fn attach_body(addrs: &[SocketAddr], answer: bool, link: OverlayLinkType) -> AttachReqAns {
    AttachReqAns {
        ufrag: Vec::new(),
        password: Vec::new(),
        // §6.5.1.1: "passive" in requests, "active" in answers.
        role: if answer {
            b"active".to_vec()
        } else {
            b"passive".to_vec()
        },
        candidates: addrs
            .iter()
            .enumerate()
            .map(|(rank, addr)| IceCandidate {
                addr_port: IpAddressPort::Ip(*addr),
                overlay_link: link,
                // RFC 8445 §5.1.1.3: one foundation per base address.
                foundation: (rank + 1).to_string().into_bytes(),
                priority: host_priority(rank),
                candidate_type: CandidateType::Host,
                extensions: Vec::new(),
            })
            .collect(),
        send_update: false,
    }
}

/// The usable IP candidates of an Attach body, highest priority first (ties in the order
/// sent).
pub fn candidate_addrs(body: &AttachReqAns) -> Vec<SocketAddr> {
    let mut found: Vec<(u32, SocketAddr)> = body
        .candidates
        .iter()
        .filter_map(|c| match c.addr_port {
            IpAddressPort::Ip(a) if a.port() != 0 && !a.ip().is_unspecified() => {
                Some((c.priority, a))
            }
            _ => None,
        })
        .collect();
    found.sort_by_key(|c| std::cmp::Reverse(c.0));
    found.into_iter().map(|(_, a)| a).collect()
}

/// The candidate of an Attach body to dial: the highest-priority one of an address family
/// `reachable` accepts (the families this node listens on), else the highest-priority one.
pub fn preferred_candidate(
    body: &AttachReqAns,
    reachable: impl Fn(&SocketAddr) -> bool,
) -> Option<SocketAddr> {
    let all = candidate_addrs(body);
    all.iter()
        .copied()
        .find(|a| reachable(a))
        .or_else(|| all.first().copied())
}

/// The highest-priority IP host candidate of an Attach body.
pub fn candidate_addr(body: &AttachReqAns) -> Option<SocketAddr> {
    candidate_addrs(body).first().copied()
}

/// Messages held for a peer whose address a routed Attach is looking for.
pub(super) struct Attaching {
    transaction_id: u64,
    messages: Vec<Message>,
}

/// The node's link state.
#[derive(Default)]
pub(super) struct Links {
    /// Peers linked to (or being dialled).
    linked: std::collections::BTreeSet<NodeId>,
    /// Peers dialled whose hello has not been answered yet.
    dialling: std::collections::BTreeSet<NodeId>,
    /// Address book: where each peer listens, from its candidates.
    addresses: BTreeMap<NodeId, SocketAddr>,
    /// Addresses whose dial failed, with the time: not dialled again for a round.
    dial_failed: BTreeMap<NodeId, u64>,
    attaching: BTreeMap<NodeId, Attaching>,
    /// Routed attach_req transaction id -> the peer looked for.
    pub(super) attach_tids: BTreeMap<u64, NodeId>,
}

impl ChordNode {
    /// The candidate of an Attach body to dial: the preferred one of an address family this
    /// node advertises (and so listens on), else the preferred one.
    fn reachable_candidate(&self, body: &AttachReqAns) -> Option<SocketAddr> {
        preferred_candidate(body, |a| {
            self.config
                .advertised
                .iter()
                .any(|l| l.is_ipv4() == a.is_ipv4())
        })
    }

    /// True when this node manages its links (it has an address to offer in Attaches).
    pub(super) fn manages_links(&self) -> bool {
        !self.config.advertised.is_empty()
    }

    /// Peers this node holds a link to (or is dialling).
    pub fn linked_peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.links.linked.iter().copied()
    }

    /// Entries of the address book.
    pub fn known_addresses(&self) -> usize {
        self.links.addresses.len()
    }

    /// The address `peer` listens at, as far as this node knows.
    pub fn address_of(&self, peer: NodeId) -> Option<SocketAddr> {
        self.links.addresses.get(&peer).copied()
    }

    /// Records where `node` listens. The book is bounded: when full, addresses of nodes
    /// without a link are forgotten first (they are found again with a routed Attach).
    fn learn_address(&mut self, node: NodeId, addr: SocketAddr) {
        if node == self.table.own {
            return;
        }
        let cap = self.config.max_addresses.max(1);
        let book = &mut self.links.addresses;
        if book.len() >= cap && !book.contains_key(&node) {
            let linked = &self.links.linked;
            book.retain(|n, _| linked.contains(n));
            if book.len() >= cap {
                return;
            }
        }
        book.insert(node, addr);
        self.links.dial_failed.remove(&node);
    }

    /// A hello on a link to `peer` (see [`Event::LinkUp`](super::Event::LinkUp)).
    pub(super) fn link_up(&mut self, peer: NodeId, candidate: Option<SocketAddr>) {
        if peer == self.table.own {
            return;
        }
        self.links.linked.insert(peer);
        self.links.dialling.remove(&peer);
        if let Some(a) = candidate {
            self.learn_address(peer, a);
        }
        self.release_waiting(peer);
    }

    /// A message arrived on the link to `peer`.
    pub(super) fn link_heard(&mut self, peer: NodeId) {
        if peer != self.table.own && self.links.linked.insert(peer) {
            self.release_waiting(peer);
        }
    }

    /// The last link to `peer` went down.
    pub(super) fn link_down(&mut self, peer: NodeId) {
        self.links.linked.remove(&peer);
        if self.links.dialling.remove(&peer) {
            // The address did not answer: find the peer by a routed Attach for a while.
            self.links.dial_failed.insert(peer, self.now);
        }
    }

    /// Sends `message` to `to`: on the link, through a new link to its known address, or
    /// after a routed Attach (see the module documentation).
    pub(super) fn transmit(&mut self, to: NodeId, message: Message) {
        if !self.manages_links() || to == self.table.own || self.links.linked.contains(&to) {
            self.actions.push(Action::Send { to, message });
            return;
        }
        if message.is_attach() {
            // Attaches travel on existing links only.
            return;
        }
        let recent_failure =
            self.links.dial_failed.get(&to).is_some_and(|t| {
                self.now.saturating_sub(*t) < self.config.update_interval_ms.max(1)
            });
        if let Some(addr) = self.links.addresses.get(&to).copied() {
            if !recent_failure {
                self.links.linked.insert(to);
                self.links.dialling.insert(to);
                self.actions.push(Action::Dial {
                    addr,
                    peer: Some(to),
                });
                self.actions.push(Action::Send { to, message });
                return;
            }
        }
        self.hold_for_attach(to, message);
    }

    /// RFC 6940 §6.1.2 for a message this node does not read (see
    /// [`Event::Relay`](super::Event::Relay)): straight to its first destination when that
    /// is a linked node; a request otherwise to the linked peer closest before the target,
    /// never back to a node of its via list or to `from`; a response only straight (its
    /// destination list is the way back).
    pub(super) fn relay_hop(&self, from: NodeId, route: &super::RelayRoute) -> Option<NodeId> {
        match route.target? {
            Destination::Node(n) if n != self.table.own && self.is_linked(n) => Some(n),
            d if route.is_request => {
                let mut exclude = route.via.clone();
                exclude.push(from);
                exclude.push(self.table.own);
                self.linked_next_hop(d.ring(), &exclude)
            }
            _ => None,
        }
    }

    /// The peers on the way to `target` a relay may use: linked ones, excluding `exclude`.
    pub(super) fn linked_next_hop(&self, target: u128, exclude: &[NodeId]) -> Option<NodeId> {
        if !self.manages_links() {
            return self.table.next_hop(target, exclude);
        }
        let mut ex: Vec<NodeId> = exclude.to_vec();
        ex.extend(
            self.table
                .known_peers()
                .into_iter()
                .filter(|p| !self.links.linked.contains(p)),
        );
        self.table.next_hop(target, &ex)
    }

    /// True when `n` is linked (always, for a node that leaves links to its runtime).
    pub(super) fn is_linked(&self, n: NodeId) -> bool {
        !self.manages_links() || self.links.linked.contains(&n)
    }

    /// Holds `message` for `to` and routes an attach_req towards it unless one is in flight.
    fn hold_for_attach(&mut self, to: NodeId, message: Message) {
        if let Some(w) = self.links.attaching.get_mut(&to) {
            if w.messages.len() < self.config.max_waiting_messages {
                w.messages.push(message);
            }
            return;
        }
        let hop = if self.links.attaching.len() >= self.config.max_links {
            None
        } else {
            self.linked_next_hop(to.to_u128(), &[to]).or_else(|| {
                self.links
                    .linked
                    .iter()
                    .copied()
                    .find(|n| *n != to && !self.links.dialling.contains(n))
            })
        };
        let Some(hop) = hop.filter(|_| !self.config.advertised.is_empty()) else {
            // No way to reach it: it fails as a link that cannot be established.
            self.actions.push(Action::SetTimer {
                at: self.now,
                timer: Timer::Attach {
                    peer: to,
                    transaction_id: 0,
                },
            });
            return;
        };
        let transaction_id = self.new_transaction_id();
        let request = Message {
            transaction_id,
            ttl: self.config.initial_ttl,
            via: Vec::new(),
            destinations: vec![Destination::Node(to)],
            sender: self.table.own,
            body: Body::Request(Request::Attach(attach_body(
                &self.config.advertised,
                false,
                self.config.link_type,
            ))),
        };
        self.actions.push(Action::Send {
            to: hop,
            message: request,
        });
        self.links.attach_tids.insert(transaction_id, to);
        self.links.attaching.insert(
            to,
            Attaching {
                transaction_id,
                messages: vec![message],
            },
        );
        self.actions.push(Action::SetTimer {
            at: self.now.saturating_add(self.config.attach_timeout_ms),
            timer: Timer::Attach {
                peer: to,
                transaction_id,
            },
        });
    }

    /// Sends what was held for `to`, now linked.
    fn release_waiting(&mut self, to: NodeId) {
        if let Some(w) = self.links.attaching.remove(&to) {
            self.links.attach_tids.remove(&w.transaction_id);
            for message in w.messages {
                self.actions.push(Action::Send { to, message });
            }
        }
    }

    /// [`Timer::Attach`]: the routed Attach for `peer` went unanswered (or `peer` could not
    /// be reached at all, `transaction_id` 0).
    pub(super) fn attach_timeout(&mut self, peer: NodeId, transaction_id: u64) {
        let expired = match self.links.attaching.get(&peer) {
            Some(w) => w.transaction_id == transaction_id,
            None => transaction_id == 0 && !self.links.linked.contains(&peer),
        };
        if !expired {
            return;
        }
        if let Some(w) = self.links.attaching.remove(&peer) {
            self.links.attach_tids.remove(&w.transaction_id);
        }
        self.peer_failed(peer);
    }

    /// RFC 6940 §6.5.1.2 at the target: remember the requester's address and answer with
    /// ours.
    pub(super) fn on_attach_request(&mut self, sender: NodeId, body: &AttachReqAns) -> Response {
        if let Some(a) = self.reachable_candidate(body) {
            self.learn_address(sender, a);
        }
        if self.config.advertised.is_empty() {
            Response::Error {
                code: crate::overlay::wire::ErrorCode::NotFound,
                info: crate::overlay::chord::message::ErrorInfo::None,
            }
        } else {
            Response::Attach(attach_body(
                &self.config.advertised,
                true,
                self.config.link_type,
            ))
        }
    }

    /// An answer to a routed Attach of ours; false when the transaction is not one.
    pub(super) fn on_attach_answer(&mut self, message: &Message) -> bool {
        let Some(target) = self.links.attach_tids.get(&message.transaction_id).copied() else {
            return false;
        };
        let Body::Response(Response::Attach(body)) = &message.body else {
            // An error: the Attach timer ends the wait.
            return true;
        };
        let addr = self.reachable_candidate(body);
        match addr {
            Some(a) if message.sender == target => {
                self.links.attach_tids.remove(&message.transaction_id);
                self.learn_address(target, a);
                if !self.links.linked.contains(&target) {
                    self.links.linked.insert(target);
                    self.links.dialling.insert(target);
                    self.actions.push(Action::Dial {
                        addr: a,
                        peer: Some(target),
                    });
                }
                self.release_waiting(target);
            }
            _ => {}
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overlay::chord::node::{ChordConfig, Event, LocalRequest};

    fn addr(k: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, k], 6084))
    }

    /// A node on its own ring at 10.0.0.1, linked to `a` (10.0.0.2).
    fn node_linked_to(a: NodeId, max_waiting: usize) -> ChordNode {
        let mut node = ChordNode::new(
            NodeId::from_u128(1 << 100),
            ChordConfig {
                advertised: vec![addr(1)],
                max_waiting_messages: max_waiting,
                ..ChordConfig::default()
            },
            7,
        );
        node.handle(
            Event::Local {
                op: 1,
                request: LocalRequest::CreateOverlay,
            },
            0,
        );
        node.handle(
            Event::LinkUp {
                peer: a,
                candidate: Some(addr(2)),
                dialled: None,
            },
            1,
        );
        node
    }

    fn ping(own: NodeId, to: NodeId, t: u64) -> Message {
        Message {
            transaction_id: t,
            ttl: 100,
            via: Vec::new(),
            destinations: vec![Destination::Node(to)],
            sender: own,
            body: Body::Request(Request::Ping),
        }
    }

    /// Runs `f` inside an event so that its actions can be read.
    fn with_actions(node: &mut ChordNode, f: impl FnOnce(&mut ChordNode)) -> Vec<Action> {
        f(node);
        std::mem::take(&mut node.actions)
    }

    #[test]
    fn an_unknown_address_is_found_by_a_routed_attach_and_held_messages_follow() {
        let (a, b) = (NodeId::from_u128(2 << 100), NodeId::from_u128(3 << 100));
        let mut node = node_linked_to(a, 2);
        let own = node.id();
        let actions = with_actions(&mut node, |n| {
            n.transmit(b, ping(own, b, 11));
            n.transmit(b, ping(own, b, 12));
            // Beyond the bound of two held messages: dropped.
            n.transmit(b, ping(own, b, 13));
        });
        let attach: Vec<&Message> = actions
            .iter()
            .filter_map(|x| match x {
                Action::Send { to, message } if *to == a => Some(message),
                _ => None,
            })
            .collect();
        assert_eq!(
            attach.len(),
            1,
            "one routed Attach, through the linked peer: {actions:?}"
        );
        assert!(matches!(
            attach[0].body,
            Body::Request(Request::Attach(ref body)) if candidate_addr(body) == Some(addr(1))
        ));
        assert_eq!(attach[0].destinations, vec![Destination::Node(b)]);
        // B answers through A.
        let answer = Message {
            transaction_id: attach[0].transaction_id,
            ttl: 99,
            via: vec![b],
            destinations: vec![Destination::Node(own)],
            sender: b,
            body: Body::Response(Response::Attach(attach_body(
                &[addr(3)],
                true,
                OverlayLinkType::EXP_LINK,
            ))),
        };
        let actions = node.handle(
            Event::Received {
                from: a,
                message: answer,
            },
            20,
        );
        assert_eq!(
            actions[0],
            Action::Dial {
                addr: addr(3),
                peer: Some(b)
            }
        );
        let sent: Vec<u64> = actions
            .iter()
            .filter_map(|x| match x {
                Action::Send { to, message } if *to == b => Some(message.transaction_id),
                _ => None,
            })
            .collect();
        assert_eq!(sent, vec![11, 12]);
        assert_eq!(node.address_of(b), Some(addr(3)));
        // Linked now: the next message goes straight.
        let actions = with_actions(&mut node, |n| n.transmit(b, ping(own, b, 14)));
        assert!(matches!(&actions[..], [Action::Send { to, .. }] if *to == b));
    }

    #[test]
    fn an_unanswered_attach_fails_the_peer_and_a_failed_dial_is_not_repeated_at_once() {
        let (a, b, c) = (
            NodeId::from_u128(2 << 100),
            NodeId::from_u128(3 << 100),
            NodeId::from_u128(4 << 100),
        );
        let mut node = node_linked_to(a, 8);
        let own = node.id();
        let actions = with_actions(&mut node, |n| n.transmit(b, ping(own, b, 11)));
        let timer = actions
            .iter()
            .find_map(|x| match x {
                Action::SetTimer { at, timer } => Some((*at, *timer)),
                _ => None,
            })
            .expect("the Attach has a deadline");
        assert_eq!(timer.0, 1 + node.config.attach_timeout_ms);
        node.handle(Event::Timer(timer.1), timer.0);
        assert!(node.failed.contains_key(&b), "unreached peer marked failed");
        assert!(node.links.attaching.is_empty() && node.links.attach_tids.is_empty());

        // C's address is known: dialled; the dial fails; the next message goes by Attach.
        node.learn_address(c, addr(4));
        let actions = with_actions(&mut node, |n| n.transmit(c, ping(own, c, 21)));
        assert_eq!(
            actions[0],
            Action::Dial {
                addr: addr(4),
                peer: Some(c)
            }
        );
        node.handle(Event::LinkDown(c), 7_000);
        let actions = with_actions(&mut node, |n| n.transmit(c, ping(own, c, 22)));
        assert!(
            actions.iter().all(|x| !matches!(x, Action::Dial { .. })),
            "{actions:?}"
        );
        assert!(actions.iter().any(|x| matches!(
            x,
            Action::Send { to, message } if *to == a && message.is_attach()
        )));
        // An Attach is never sent on a link that does not exist.
        let stray = Message {
            body: Body::Request(Request::Attach(attach_body(
                &[addr(1)],
                false,
                OverlayLinkType::EXP_LINK,
            ))),
            ..ping(own, c, 23)
        };
        let actions = with_actions(&mut node, |n| n.transmit(c, stray));
        assert!(actions.is_empty(), "{actions:?}");
    }
}
