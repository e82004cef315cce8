//! A deterministic in-process simulation of a Chord-RELOAD overlay: N sans-IO
//! [`ChordNode`]s, a fake clock, a seeded RNG, per-message latency (FIFO per link, as over
//! TCP), configurable loss and crashes (a node and all its links vanish at once; its linked
//! peers see their links go down), silent crashes (nothing goes down: senders notice missing
//! acknowledgements) and network partitions ([`Sim::partition`], [`Sim::heal`]: nodes on
//! different sides cannot reach each other; a frame sent across the cut is never
//! acknowledged, so the sender's link layer declares the link down after its ack timeout).
//!
//! Messages travel as typed values (`chord::Message`); by default every one of them is also
//! encoded to RELOAD bytes with the wire codec, decoded and converted back
//! ([`crate::overlay::chord::codec::through_bytes`]), and the decoded copy is delivered, so the
//! simulation exercises the codec on real traffic (`SimConfig::wire_sample` thins that out).
//! The same seed gives the same run: every processed event is folded into a trace hash that
//! tests compare.
//!
//! Every node has an address ([`Sim::addr`]): [`Action::Dial`] opens a simulated link to the
//! node at that address when it is alive and on the same side of a partition, and both ends
//! see the link hello as [`Event::LinkUp`] (the dialled end after one latency, the dialler
//! after the round trip); a dial that cannot succeed ends in [`Event::LinkDown`] for an
//! expected peer and in silence for a bootstrap address (the node's bootstrap timer covers
//! it). So the nodes' bootstrap (RFC 6940 §11.4) runs in the simulation as it runs over
//! sockets; [`Sim::restart`] brings a crashed node back with a fresh state.

use crate::overlay::chord::codec;
use crate::overlay::chord::{
    Action, ChordConfig, ChordNode, Event, LocalOutcome, LocalRequest, Message, NodeId, OpId,
    ResourceId, Timer,
};
use crate::overlay::storage::{DataModel, KindId};
use crate::overlay::wire::{OverlayHash, WireConfig};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeSet, BinaryHeap};
use std::net::{Ipv4Addr, SocketAddr};

/// Lookup-only maps (never iterated, so the hasher cannot change the run).
type HashMap<K, V> = hashbrown::HashMap<K, V, foldhash::fast::FixedState>;
use std::hash::{BuildHasher, Hash, Hasher};

/// The trace hasher: fixed seed, so equal runs give equal hashes.
type TraceHasher = foldhash::fast::FoldHasher;

/// Parameters of a simulated network.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    /// One-way latency range per message (ms).
    pub min_latency_ms: u64,
    pub max_latency_ms: u64,
    /// Probability that a message is lost.
    pub loss: f64,
    /// After a node crashed silently, how long a sender's link layer waits for the missing
    /// acknowledgement before it declares the link down.
    pub link_ack_timeout_ms: u64,
    /// Configuration of every node.
    pub chord: ChordConfig,
    /// Pass one message in `wire_sample` through the RELOAD wire codec (encode to bytes,
    /// decode, convert back) and deliver the decoded copy; 1 = every message, 0 = none.
    pub wire_sample: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            min_latency_ms: 5,
            max_latency_ms: 40,
            loss: 0.0,
            link_ack_timeout_ms: 3_000,
            chord: ChordConfig::default(),
            wire_sample: 1,
        }
    }
}

enum SimEvent {
    Deliver {
        to: usize,
        from: NodeId,
        // Boxed: heap entries move on every sift.
        message: Box<Message>,
    },
    Timer {
        node: usize,
        /// The incarnation of the node that armed it (timers die with a restart).
        epoch: u32,
        timer: Timer,
    },
    LinkDown {
        node: usize,
        peer: NodeId,
    },
    LinkUp {
        node: usize,
        peer: NodeId,
        candidate: SocketAddr,
        dialled: Option<SocketAddr>,
    },
}

struct Scheduled {
    at: u64,
    seq: u64,
    event: SimEvent,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

struct SimNode {
    node: ChordNode,
    /// The configuration it was created with (a restart reuses it).
    config: ChordConfig,
    /// Incarnation: bumped by [`Sim::restart`].
    epoch: u32,
    alive: bool,
    /// Crashed without any sign: its links do not go down, messages to it vanish.
    silent: bool,
    /// Side of the current partition (all 0 when the network is whole).
    side: u32,
    links: BTreeSet<usize>,
}

/// An application request a node delivered to its application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub node: usize,
    pub token: u64,
    pub sender: NodeId,
    pub body: Vec<u8>,
}

/// Counters of one run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    pub messages_sent: u64,
    /// Messages passed through the wire codec, and how many came back different or failed.
    pub wire_checked: u64,
    pub wire_mismatches: u64,
    pub messages_lost: u64,
    pub events: u64,
    /// Links dialled (bootstrap addresses and addresses from the address book).
    pub dials: u64,
    /// Routed Attach requests originated (RFC 6940 §6.5.1.2), and Attach messages (requests
    /// and answers) relayed for other nodes.
    pub attaches: u64,
    pub attaches_relayed: u64,
}

/// The simulated overlay.
pub struct Sim {
    config: SimConfig,
    now: u64,
    rng: SmallRng,
    nodes: Vec<SimNode>,
    index: HashMap<NodeId, usize>,
    queue: BinaryHeap<Reverse<Scheduled>>,
    seq: u64,
    /// Last delivery time per directed link, to keep links FIFO.
    link_clock: HashMap<(usize, usize), u64>,
    outcomes: HashMap<OpId, LocalOutcome>,
    next_op: OpId,
    /// Hops taken by tracked requests, by (originator, transaction id).
    hops: HashMap<(NodeId, u64), u32>,
    op_transaction: HashMap<OpId, (NodeId, u64)>,
    trace: TraceHasher,
    stats: SimStats,
    wire_config: WireConfig,
    kind_models: Vec<(KindId, DataModel)>,
    deliveries: Vec<Delivery>,
    /// Decisions of [`Event::Relay`]s handed in by [`Sim::relay`].
    relay_decisions: HashMap<u64, Option<NodeId>>,
}

impl Sim {
    pub fn new(config: SimConfig) -> Self {
        let rng = SmallRng::seed_from_u64(config.seed);
        let kind_models = config
            .chord
            .storage
            .kinds
            .iter()
            .map(|k| (k.id, k.model))
            .collect();
        let mut wire_config = WireConfig::new(OverlayHash::of_name("sim.overlay.invalid"));
        if config.chord.max_answer_bytes != usize::MAX {
            // Messages are checked against the size the nodes answer within.
            wire_config.max_message_size =
                u32::try_from(config.chord.max_answer_bytes).unwrap_or(u32::MAX);
        }
        Sim {
            config,
            now: 0,
            rng,
            nodes: Vec::new(),
            index: HashMap::default(),
            queue: BinaryHeap::new(),
            seq: 0,
            link_clock: HashMap::default(),
            outcomes: HashMap::default(),
            next_op: 1,
            hops: HashMap::default(),
            op_transaction: HashMap::default(),
            trace: foldhash::fast::FixedState::with_seed(0x5eed).build_hasher(),
            stats: SimStats::default(),
            wire_config,
            kind_models,
            deliveries: Vec::new(),
            relay_decisions: HashMap::default(),
        }
    }

    pub fn now(&self) -> u64 {
        self.now
    }
    pub fn stats(&self) -> &SimStats {
        &self.stats
    }
    /// A fingerprint of everything that happened so far.
    pub fn trace_hash(&self) -> u64 {
        self.trace.finish()
    }
    pub fn rng(&mut self) -> &mut SmallRng {
        &mut self.rng
    }
    pub fn len(&self) -> usize {
        self.nodes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
    pub fn node(&self, i: usize) -> &ChordNode {
        &self.nodes[i].node
    }
    pub fn is_alive(&self, i: usize) -> bool {
        self.nodes[i].alive
    }
    pub fn index_of(&self, id: NodeId) -> Option<usize> {
        self.index.get(&id).copied()
    }

    /// The address of node `i` (whether or not it exists yet): 10.0.0.0 + i + 1, port 6084.
    pub fn addr(i: usize) -> SocketAddr {
        let host = 0x0a00_0000u32 | (u32::try_from(i).unwrap_or(0xff_fffe) + 1);
        SocketAddr::from((Ipv4Addr::from(host), 6084))
    }

    fn index_of_addr(&self, addr: SocketAddr) -> Option<usize> {
        match addr {
            SocketAddr::V4(a) if a.port() == 6084 => {
                let host = u32::from(*a.ip());
                (host >> 24 == 10)
                    .then_some((host & 0xff_ffff) as usize)
                    .and_then(|k| k.checked_sub(1))
                    .filter(|i| *i < self.nodes.len())
            }
            _ => None,
        }
    }

    /// Add a node (not yet on the ring) with a random id; returns its index.
    pub fn add_node(&mut self) -> usize {
        loop {
            let id = NodeId::from_u128(self.rng.gen());
            if !self.index.contains_key(&id) {
                return self.add_node_with_id(id);
            }
        }
    }

    pub fn add_node_with_id(&mut self, id: NodeId) -> usize {
        let mut config = self.config.chord.clone();
        if config.bootstrap.is_empty() {
            if let Some(first) = self.nodes.first() {
                config.bootstrap.push(first.node.id());
            }
        }
        self.add_node_with_config(id, config)
    }

    /// Add a node with its own configuration (e.g. its bootstrap addresses, see
    /// [`Sim::addr`]); returns its index.
    pub fn add_node_with_config(&mut self, id: NodeId, mut config: ChordConfig) -> usize {
        let seed = self.rng.gen();
        let i = self.nodes.len();
        // The node manages its links (dials, routed Attaches) as over sockets.
        config.advertised = vec![Sim::addr(i)];
        self.nodes.push(SimNode {
            node: ChordNode::new(id, config.clone(), seed),
            config,
            epoch: 0,
            alive: true,
            silent: false,
            side: 0,
            links: BTreeSet::new(),
        });
        self.index.insert(id, i);
        i
    }

    /// Hand a local request to node `i`; returns the operation id whose outcome
    /// [`Sim::outcome`] reports.
    pub fn local(&mut self, i: usize, request: LocalRequest) -> OpId {
        let op = self.next_op;
        self.next_op += 1;
        let own = self.nodes[i].node.id();
        let actions = self.nodes[i]
            .node
            .handle(Event::Local { op, request }, self.now);
        // The first request the node originates for this operation is the one to follow.
        for a in &actions {
            if let Action::Send { message, .. } = a {
                if message.is_request() && message.sender == own && message.via.is_empty() {
                    let key = (own, message.transaction_id);
                    self.op_transaction.insert(op, key);
                    self.hops.insert(key, 0);
                    break;
                }
            }
        }
        self.apply(i, actions);
        op
    }

    /// Node `i` relays a message of a method it does not read, from `from`, by its header
    /// (see [`Event::Relay`]): the next hop it chose, `None` when there is no way on.
    pub fn relay(
        &mut self,
        i: usize,
        from: NodeId,
        route: crate::overlay::chord::RelayRoute,
    ) -> Option<NodeId> {
        let handle = self.next_op;
        self.next_op += 1;
        let event = Event::Relay {
            from,
            handle,
            route,
        };
        trace_event(&mut self.trace, self.now, i, &event);
        let actions = self.nodes[i].node.handle(event, self.now);
        self.apply(i, actions);
        self.relay_decisions.remove(&handle).flatten()
    }

    /// Application requests delivered since the last call.
    pub fn take_deliveries(&mut self) -> Vec<Delivery> {
        std::mem::take(&mut self.deliveries)
    }

    /// Node `i`'s application answers a delivered request.
    pub fn app_answer(&mut self, i: usize, token: u64, body: Vec<u8>) {
        let event = Event::AppAnswer { token, body };
        trace_event(&mut self.trace, self.now, i, &event);
        let actions = self.nodes[i].node.handle(event, self.now);
        self.apply(i, actions);
    }

    pub fn outcome(&self, op: OpId) -> Option<&LocalOutcome> {
        self.outcomes.get(&op)
    }

    /// Overlay hops the operation's request took (0 when served locally).
    pub fn hops(&self, op: OpId) -> Option<u32> {
        match self.op_transaction.get(&op) {
            Some(key) => self.hops.get(key).copied(),
            None => self.outcomes.contains_key(&op).then_some(0),
        }
    }

    /// Forget per-operation bookkeeping (outcomes and hop counts).
    pub fn clear_operations(&mut self) {
        self.outcomes.clear();
        self.hops.clear();
        self.op_transaction.clear();
    }

    /// Crash node `i`: it stops at once and every peer linked to it sees the link go down.
    pub fn crash(&mut self, i: usize) {
        if !self.nodes[i].alive {
            return;
        }
        self.nodes[i].alive = false;
        let id = self.nodes[i].node.id();
        let links: Vec<usize> = std::mem::take(&mut self.nodes[i].links)
            .into_iter()
            .collect();
        for j in links {
            self.nodes[j].links.remove(&i);
            if self.nodes[j].alive {
                let at = self.now + self.config.min_latency_ms;
                self.schedule(at, SimEvent::LinkDown { node: j, peer: id });
            }
        }
        id.hash(&mut self.trace);
    }

    /// Crash node `i` without any link going down (a hung host, no connection reset): peers
    /// notice when a frame they send is not acknowledged within `link_ack_timeout_ms`, or when
    /// an Update to it times out (RFC 6940 §10.7.1); idle links stay up.
    pub fn crash_silently(&mut self, i: usize) {
        if !self.nodes[i].alive {
            return;
        }
        self.nodes[i].alive = false;
        self.nodes[i].silent = true;
        let id = self.nodes[i].node.id();
        let links: Vec<usize> = std::mem::take(&mut self.nodes[i].links)
            .into_iter()
            .collect();
        for j in links {
            self.nodes[j].links.remove(&i);
        }
        (id, 1u8).hash(&mut self.trace);
    }

    /// Bring crashed node `i` back as a fresh process: same Node-ID, address and
    /// configuration, empty state (start it with a local request, e.g.
    /// [`LocalRequest::Bootstrap`]). Nothing happens to a live node.
    pub fn restart(&mut self, i: usize) {
        let config = self.nodes[i].config.clone();
        self.restart_with(i, config);
    }

    /// [`Sim::restart`] with another configuration (e.g. without a bootstrap list).
    pub fn restart_with(&mut self, i: usize, mut config: ChordConfig) {
        config.advertised = vec![Sim::addr(i)];
        if self.nodes[i].alive {
            return;
        }
        let seed = self.rng.gen();
        let n = &mut self.nodes[i];
        n.node = ChordNode::new(n.node.id(), config.clone(), seed);
        n.config = config;
        n.epoch += 1;
        n.alive = true;
        n.silent = false;
        n.links.clear();
        (0x5e57u32, i).hash(&mut self.trace);
    }

    /// Split the network: node `i` is on side `side_of(i)`; from now on messages between
    /// nodes on different sides are lost (messages already in flight across the cut too),
    /// and a sender learns that a link across the cut is down only when a frame it sends
    /// goes unacknowledged for `link_ack_timeout_ms`. Nodes keep running on both sides.
    pub fn partition(&mut self, side_of: impl Fn(usize) -> u32) {
        for i in 0..self.nodes.len() {
            self.nodes[i].side = side_of(i);
        }
        for i in 0..self.nodes.len() {
            let side = self.nodes[i].side;
            let cut: Vec<usize> = self.nodes[i]
                .links
                .iter()
                .copied()
                .filter(|j| self.nodes[*j].side != side)
                .collect();
            for j in cut {
                self.nodes[i].links.remove(&j);
            }
        }
        (
            0xc07u32,
            self.nodes.iter().map(|n| n.side).collect::<Vec<_>>(),
        )
            .hash(&mut self.trace);
    }

    /// End the partition: every node can reach every other again.
    pub fn heal(&mut self) {
        for n in &mut self.nodes {
            n.side = 0;
        }
        0x4ea1u32.hash(&mut self.trace);
    }

    /// The side of the partition node `i` is on (0 when the network is whole).
    pub fn side(&self, i: usize) -> u32 {
        self.nodes[i].side
    }

    fn schedule(&mut self, at: u64, event: SimEvent) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            event,
        }));
    }

    fn apply(&mut self, i: usize, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Send { to, message } => self.send(i, to, message),
                Action::SetTimer { at, timer } => {
                    let at = at.max(self.now);
                    let epoch = self.nodes[i].epoch;
                    self.schedule(
                        at,
                        SimEvent::Timer {
                            node: i,
                            epoch,
                            timer,
                        },
                    );
                }
                Action::Dial { addr, peer } => self.dial(i, addr, peer),
                Action::Relay { handle, to } => {
                    self.relay_decisions.insert(handle, to);
                }
                Action::Complete { op, outcome } => {
                    self.outcomes.insert(op, outcome);
                }
                Action::Deliver {
                    token,
                    sender,
                    body,
                } => self.deliveries.push(Delivery {
                    node: i,
                    token,
                    sender,
                    body,
                }),
            }
        }
    }

    /// Node `i` opens a link to `addr` expecting `peer` there.
    fn dial(&mut self, i: usize, addr: SocketAddr, peer: Option<NodeId>) {
        self.stats.dials += 1;
        let latency = self
            .rng
            .gen_range(self.config.min_latency_ms..=self.config.max_latency_ms);
        let target = self
            .index_of_addr(addr)
            .filter(|j| *j != i && self.nodes[*j].alive && !self.nodes[*j].silent);
        let reachable = target.filter(|j| self.nodes[*j].side == self.nodes[i].side);
        let Some(j) = reachable.filter(|j| peer.map_or(true, |p| p == self.nodes[*j].node.id()))
        else {
            if let Some(p) = peer {
                // Refused at once by a dead host; across a cut the connect times out.
                let delay = if target.is_some() && reachable.is_none() {
                    self.config.link_ack_timeout_ms
                } else {
                    2 * latency
                };
                self.schedule(self.now + delay, SimEvent::LinkDown { node: i, peer: p });
            }
            return;
        };
        self.nodes[i].links.insert(j);
        self.nodes[j].links.insert(i);
        let (own, own_addr) = (self.nodes[i].node.id(), Sim::addr(i));
        let there = self.nodes[j].node.id();
        // The hello travels the link like any message (FIFO), its answer comes back.
        let clock = self.link_clock.entry((i, j)).or_insert(0);
        let at = (self.now + latency).max(*clock);
        *clock = at;
        self.schedule(
            at,
            SimEvent::LinkUp {
                node: j,
                peer: own,
                candidate: own_addr,
                dialled: None,
            },
        );
        let clock = self.link_clock.entry((j, i)).or_insert(0);
        let back = (at + latency).max(*clock);
        *clock = back;
        self.schedule(
            back,
            SimEvent::LinkUp {
                node: i,
                peer: there,
                candidate: addr,
                dialled: Some(addr),
            },
        );
    }

    fn send(&mut self, i: usize, to: NodeId, message: Message) {
        self.stats.messages_sent += 1;
        let from = self.nodes[i].node.id();
        if message.is_attach() {
            if message.sender != from {
                self.stats.attaches_relayed += 1;
            } else if message.is_request() {
                self.stats.attaches += 1;
            }
        }
        if message.is_request() {
            if let Some(h) = self.hops.get_mut(&(message.sender, message.transaction_id)) {
                *h += 1;
            }
        }
        let latency = self
            .rng
            .gen_range(self.config.min_latency_ms..=self.config.max_latency_ms);
        let target = self.index.get(&to).copied();
        let cut = target.is_some_and(|j| self.nodes[j].side != self.nodes[i].side);
        if cut || target.is_some_and(|j| self.nodes[j].silent) {
            // The frame is never acknowledged: the link layer gives up on the link after its
            // ack timeout (RFC 6940 §6.6.3-style link reliability).
            self.stats.messages_lost += 1;
            let at = self.now + self.config.link_ack_timeout_ms;
            self.schedule(at, SimEvent::LinkDown { node: i, peer: to });
            return;
        }
        let Some(j) = target.filter(|j| self.nodes[*j].alive) else {
            // The link cannot be established: the sender learns it after a round trip.
            let at = self.now + 2 * latency;
            self.schedule(at, SimEvent::LinkDown { node: i, peer: to });
            return;
        };
        self.nodes[i].links.insert(j);
        self.nodes[j].links.insert(i);
        if self.config.loss > 0.0 && self.rng.gen_bool(self.config.loss) {
            self.stats.messages_lost += 1;
            return;
        }
        let message = if self.config.wire_sample > 0
            && self.stats.messages_sent % self.config.wire_sample == 0
        {
            self.stats.wire_checked += 1;
            match codec::through_bytes(&message, from, &self.wire_config, &self.kind_models) {
                Ok(decoded) if decoded == message => decoded,
                _ => {
                    self.stats.wire_mismatches += 1;
                    message
                }
            }
        } else {
            message
        };
        let clock = self.link_clock.entry((i, j)).or_insert(0);
        let at = (self.now + latency).max(*clock);
        *clock = at;
        self.schedule(
            at,
            SimEvent::Deliver {
                to: j,
                from,
                message: Box::new(message),
            },
        );
    }

    /// Run every event due up to and including time `until`.
    pub fn run_until(&mut self, until: u64) {
        while let Some(Reverse(top)) = self.queue.peek() {
            if top.at > until {
                break;
            }
            let Some(Reverse(s)) = self.queue.pop() else {
                break;
            };
            self.now = s.at;
            self.stats.events += 1;
            let (i, event) = match s.event {
                SimEvent::Deliver { to, from, .. }
                    if self
                        .index
                        .get(&from)
                        .is_some_and(|f| self.nodes[*f].side != self.nodes[to].side) =>
                {
                    // In flight when the network split: lost at the cut.
                    self.stats.messages_lost += 1;
                    continue;
                }
                SimEvent::Deliver { to, from, message } => (
                    to,
                    Event::Received {
                        from,
                        message: *message,
                    },
                ),
                SimEvent::Timer { node, epoch, .. } if epoch != self.nodes[node].epoch => {
                    continue;
                }
                SimEvent::Timer { node, timer, .. } => (node, Event::Timer(timer)),
                SimEvent::LinkDown { node, peer } => (node, Event::LinkDown(peer)),
                SimEvent::LinkUp {
                    node,
                    peer,
                    candidate,
                    dialled,
                } => {
                    let linked = self
                        .index
                        .get(&peer)
                        .is_some_and(|p| self.nodes[node].links.contains(p));
                    if !linked {
                        // The link went down (a crash, a cut) before the hello arrived.
                        continue;
                    }
                    (
                        node,
                        Event::LinkUp {
                            peer,
                            candidate: Some(candidate),
                            dialled,
                        },
                    )
                }
            };
            if !self.nodes[i].alive {
                continue;
            }
            trace_event(&mut self.trace, s.at, i, &event);
            let actions = self.nodes[i].node.handle(event, self.now);
            self.apply(i, actions);
        }
        self.now = self.now.max(until);
    }

    pub fn run_for(&mut self, ms: u64) {
        let until = self.now + ms;
        self.run_until(until);
    }

    /// Run until every listed operation has an outcome or `limit_ms` passed.
    pub fn run_until_complete(&mut self, ops: &[OpId], limit_ms: u64) -> bool {
        let deadline = self.now + limit_ms;
        let mut open: Vec<OpId> = ops.to_vec();
        loop {
            open.retain(|op| !self.outcomes.contains_key(op));
            if open.is_empty() {
                return true;
            }
            if self.now >= deadline {
                return false;
            }
            let step = 100.min(deadline - self.now);
            self.run_for(step);
        }
    }

    // ----- ground truth -----

    /// Ids of live nodes on the ring, sorted.
    pub fn live_ids(&self) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|n| n.alive && n.node.is_joined())
            .map(|n| n.node.id())
            .collect();
        ids.sort();
        ids
    }

    /// The live node responsible for `r`: the first id at or after it on the ring.
    pub fn responsible(&self, r: ResourceId) -> Option<NodeId> {
        responsible_among(&self.live_ids(), r)
    }

    /// The responsible node and its next `count - 1` successors for `r`.
    pub fn replica_set(&self, r: ResourceId, count: usize) -> Vec<NodeId> {
        let ids = self.live_ids();
        if ids.is_empty() {
            return Vec::new();
        }
        let pos = ids.partition_point(|n| n.to_u128() < r.0) % ids.len();
        (0..count.min(ids.len()))
            .map(|k| ids[(pos + k) % ids.len()])
            .collect()
    }

    /// Live nodes that hold data at `r`.
    pub fn holders(&self, r: ResourceId) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|n| n.alive && n.node.storage().contains(r))
            .map(|n| n.node.id())
            .collect()
    }

    /// Live joined nodes whose first `depth` successors or predecessors differ from the ring's
    /// true order.
    pub fn ring_errors(&self, depth: usize) -> Vec<NodeId> {
        let ids = self.live_ids();
        let n = ids.len();
        let mut wrong = Vec::new();
        for (pos, id) in ids.iter().enumerate() {
            let Some(&i) = self.index.get(id) else {
                continue;
            };
            let table = self.nodes[i].node.table();
            let d = depth.min(n.saturating_sub(1));
            let succ_ok = (0..d).all(|k| table.successors.get(k) == Some(&ids[(pos + 1 + k) % n]));
            let pred_ok =
                (0..d).all(|k| table.predecessors.get(k) == Some(&ids[(pos + n - 1 - k) % n]));
            if !succ_ok || !pred_ok {
                wrong.push(*id);
            }
        }
        wrong
    }
}

/// The node responsible for `r` among sorted ids: the first id at or after it on the ring.
pub fn responsible_among(sorted_ids: &[NodeId], r: ResourceId) -> Option<NodeId> {
    let pos = sorted_ids.partition_point(|n| n.to_u128() < r.0);
    sorted_ids.get(pos).or(sorted_ids.first()).copied()
}

fn trace_event(h: &mut TraceHasher, at: u64, node: usize, event: &Event) {
    at.hash(h);
    node.hash(h);
    match event {
        Event::Received { from, message } => {
            1u8.hash(h);
            from.hash(h);
            message.transaction_id.hash(h);
            message.method_name().hash(h);
            message.ttl.hash(h);
        }
        Event::Timer(t) => {
            2u8.hash(h);
            t.hash(h);
        }
        Event::LinkDown(p) => {
            3u8.hash(h);
            p.hash(h);
        }
        Event::LinkUp { peer, dialled, .. } => {
            4u8.hash(h);
            peer.hash(h);
            dialled.hash(h);
        }
        Event::Local { op, .. } => {
            5u8.hash(h);
            op.hash(h);
        }
        Event::AppAnswer { token, .. } => {
            6u8.hash(h);
            token.hash(h);
        }
        Event::Relay { from, handle, .. } => {
            7u8.hash(h);
            from.hash(h);
            handle.hash(h);
        }
    }
}
