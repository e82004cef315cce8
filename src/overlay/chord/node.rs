//! One Chord-RELOAD peer as a sans-IO state machine: events in (a message from a linked peer,
//! a timer, a link going down, a local request), actions out (send a message on a link, arm a
//! timer, complete a local request). Time is an argument in milliseconds; randomness comes from
//! a `SmallRng` seeded per node, so a simulation replays exactly.
//!
//! What it implements, by RFC 6940 section:
//! - §6.1 / §6.2 message receipt and symmetric recursive routing: a relay appends the previous
//!   hop to the via list, a responder answers along `[previous hop] + reversed via list`;
//!   relays decrement the TTL and answer Error_TTL_Exceeded when it is spent (§6.3.2).
//! - §6.2.1 end-to-end retransmission: a request is resent with the same transaction id after
//!   a timeout that doubles each time, a bounded number of times.
//! - §10.3 greedy routing over neighbors and fingers; §10.1 responsibility `(pred, self]`.
//! - §10.4 replication: the responsible peer stores and sends replica Stores to its next two
//!   successors; §10.7.3 migration when the replica set or the responsible range changes.
//! - §10.5 joining through the admitting peer; §10.7 Updates (reactive on any neighbor-table
//!   change, periodic with jitter), §10.7.1 neighbor failure, §10.7.4.2 finger refresh,
//!   §10.7.4.4 partition check, §10.9 leaving.
//!
//! - Failure attribution: only a request sent directly to a peer marks it failed when it goes
//!   unanswered; a retransmission routes around the relay an earlier attempt left through and
//!   checks that relay with a direct Ping.
//! - Application requests (exp_a, protocols.md §3) are delivered to the application
//!   ([`Action::Deliver`]) once per transaction and answered with [`Event::AppAnswer`].
//! - A retransmitted Store is answered from a short cache instead of being applied twice.
//!
//! - §6.5.1 Attach and links (module `links`): links are identified by the peer's Node-ID;
//!   the node keeps the address book, dials known addresses ([`Action::Dial`]), routes an
//!   attach_req to a peer whose address it lacks and holds the messages for it; sockets, TLS
//!   and the link hello's checks are the runtime's job.
//! - §11.4 bootstrap, the kept bootstrap list and the lone node's redialling (module
//!   `bootstrap`).
//!
//! A Ping source-routed through the peer that named a new neighbor stands in
//! for the Attach that §10.6/§10.7.3 require before it enters the neighbor table. After losing
//! every successor (§10.7.1) the peer connects to the nearest live peer clockwise that it still
//! knows and follows the Updates it gets back to its true successor, rather than sending a
//! fresh Join.

use super::id::{distance, finger_range, in_left_open, in_open, NodeId, ResourceId};
use super::message::{
    update_lists, Body, ChordLeaveData, ChordUpdate, ChordUpdateType, Destination, ErrorCode,
    ErrorInfo, Message, Request, Response, INITIAL_TTL,
};
use super::table::{RoutingTable, FINGERS};
use crate::overlay::storage::{
    FetchAns, FetchReq, StatAns, StatReq, Storage, StorageConfig, StorageError, StoreAns,
    StoreKindData, StoreReq,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

mod bootstrap;
mod links;
pub use bootstrap::{BOOTSTRAP_RETRY_MAX_MS, BOOTSTRAP_RETRY_MS};
pub use links::{attach_body, candidate_addr, candidate_addrs, preferred_candidate};

/// Identifies a local request so its outcome can be matched.
pub type OpId = u64;

/// Tunables of one peer. Defaults follow RFC 6940 where it gives one.
#[derive(Clone, Debug)]
pub struct ChordConfig {
    /// Predecessors and successors kept (RFC 6940 §10.7: at least 3).
    pub neighbor_count: usize,
    /// First end-to-end retransmission timeout; doubles per attempt.
    pub request_timeout_ms: u64,
    /// Retransmissions after the first attempt before a request fails.
    pub max_retransmissions: u32,
    /// RFC 6940 §10.7.4.1 chord-update-interval (default 600 s).
    pub update_interval_ms: u64,
    /// RFC 6940 §10.7.4.2 chord-ping-interval (default 3600 s).
    pub finger_interval_ms: u64,
    /// RFC 6940 §10.7.1 successor replacement hold-down before new replicas are made (30 s).
    pub replica_holddown_ms: u64,
    /// How long a failed peer is ignored when others mention it.
    pub failed_memory_ms: u64,
    /// How often expired values are swept.
    pub expiry_interval_ms: u64,
    /// Nodes to (re)join through and to run the partition check (§10.7.4.4) against.
    pub bootstrap: Vec<NodeId>,
    /// RFC 6940 §11.4 bootstrap addresses (`bootstrap-node`), dialled by
    /// [`LocalRequest::Bootstrap`] and again while the node is alone on its ring.
    pub bootstrap_addrs: Vec<SocketAddr>,
    /// How long a bootstrap round waits for a hello answer, and a routed Attach for its
    /// answer, ms.
    pub attach_timeout_ms: u64,
    /// This node's addresses, preferred first, offered as its Attach host candidates (RFC 6940
    /// §6.5.1). With at least one the node manages its links (see the `links` module);
    /// without, its runtime does.
    pub advertised: Vec<SocketAddr>,
    /// The overlay link type of the candidates offered.
    pub link_type: crate::overlay::wire::OverlayLinkType,
    /// Peers at most waited for by routed Attaches at once.
    pub max_links: usize,
    /// Address book entries at most.
    pub max_addresses: usize,
    /// Messages held at most per peer while its routed Attach is answered (more are dropped;
    /// their senders' retransmissions cover them).
    pub max_waiting_messages: usize,
    /// Bound on transactions in flight; beyond it new local requests fail with
    /// Error_In_Progress and internal ones are deferred.
    pub max_pending: usize,
    pub storage: StorageConfig,
    /// The overlay's `initial-ttl` (RFC 6940 §6.3.2, §11.1): the TTL of every message this
    /// node originates, and the most a received message may carry (more is answered
    /// Error_TTL_Exceeded). At most 100 by default.
    pub initial_ttl: u8,
    /// Wall-clock time (ms since the Unix epoch) at local time 0, so that the `time` of a
    /// PingAns is absolute as RFC 6940 §6.5.3.2 defines it while timers run on the local
    /// monotonic clock.
    pub wall_clock_offset_ms: u64,
    /// Largest Fetch or Stat answer this node sends, bytes (the overlay's
    /// `max_message_size`): a larger one is answered Error_Response_Too_Large (RFC 6940
    /// §6.3.3.1), estimated as the values' bytes plus [`VALUE_OVERHEAD_BYTES`] each. The
    /// requester then reads the data in smaller pieces (a Stat for the dictionary keys, then
    /// Fetches of some keys each).
    pub max_answer_bytes: usize,
}

/// Bytes an answer spends per stored value besides its data and key (StoredData framing,
/// storage time, lifetime, and a signature with its signer identity, RFC 6940 §7.1,
/// §6.3.4); the estimate of [`ChordConfig::max_answer_bytes`].
pub const VALUE_OVERHEAD_BYTES: usize = 160;

/// Bytes a Stat answer spends per value (StoredMetaData with a SHA-1 hash, §7.4.3.2) besides
/// its key.
pub const METADATA_BYTES: usize = 48;

/// Bytes of an answer besides its values (forwarding header with a via list, security block
/// with one certificate, message extensions), kept free of values by the estimate.
pub const ANSWER_HEADROOM_BYTES: usize = 1024;

impl Default for ChordConfig {
    fn default() -> Self {
        ChordConfig {
            neighbor_count: 3,
            request_timeout_ms: 3_000,
            max_retransmissions: 3,
            update_interval_ms: 600_000,
            finger_interval_ms: 3_600_000,
            replica_holddown_ms: 30_000,
            failed_memory_ms: 1_200_000,
            expiry_interval_ms: 60_000,
            bootstrap: Vec::new(),
            bootstrap_addrs: Vec::new(),
            attach_timeout_ms: 5_000,
            advertised: Vec::new(),
            link_type: crate::overlay::wire::OverlayLinkType::EXP_LINK,
            max_links: 256,
            max_addresses: 4096,
            max_waiting_messages: 256,
            max_pending: 4096,
            storage: StorageConfig::default(),
            initial_ttl: INITIAL_TTL,
            wall_clock_offset_ms: 0,
            max_answer_bytes: usize::MAX,
        }
    }
}

/// Timers a node arms. A timer that has become meaningless (e.g. a retransmission for an
/// answered request) is ignored when it fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Timer {
    Retransmit {
        transaction_id: u64,
        attempt: u32,
    },
    PeriodicUpdate,
    FingerRefresh,
    ReplicaSync,
    Expire,
    /// A bootstrap deadline (RFC 6940 §11.4); only the latest generation armed acts.
    Bootstrap {
        generation: u64,
    },
    /// The routed Attach `transaction_id` for `peer` is given up (0: `peer` cannot be reached).
    Attach {
        peer: NodeId,
        transaction_id: u64,
    },
}

/// What the application asks of the overlay.
#[derive(Clone, Debug, PartialEq)]
pub enum LocalRequest {
    /// Start a new overlay with this node alone on the ring.
    CreateOverlay,
    /// RFC 6940 §11.4: dial the configured bootstrap addresses and join through the first
    /// that answers, or create the overlay when none answers in the first round; then keep
    /// the bootstrap list (see the `bootstrap` module). Ends with [`LocalOutcome::Joined`]
    /// once the node is on a ring.
    Bootstrap,
    /// RFC 6940 §10.5: join through a bootstrap peer already on the ring, to which the
    /// runtime holds a link.
    Join {
        bootstrap: NodeId,
    },
    /// RFC 6940 §10.9.
    Leave,
    /// Find the peer responsible for a resource (a Ping routed to the Resource-ID).
    Lookup {
        resource: ResourceId,
    },
    Store {
        resource: ResourceId,
        kind_data: Vec<StoreKindData>,
    },
    Fetch(FetchReq),
    Stat(StatReq),
    /// An application request (exp_a) to a node or to the node responsible for a resource;
    /// it ends with [`LocalOutcome::App`] carrying the other application's answer.
    App {
        destination: Destination,
        body: Vec<u8>,
    },
}

/// How a local request ended.
#[derive(Clone, Debug, PartialEq)]
pub enum LocalOutcome {
    Joined,
    Left,
    Lookup { responsible: NodeId },
    Stored(StoreAns),
    Fetched(FetchAns),
    Stat(StatAns),
    App(Vec<u8>),
    Failed { code: ErrorCode, info: ErrorInfo },
}

#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A message arrived on the link to `from`.
    Received {
        from: NodeId,
        message: Message,
    },
    Timer(Timer),
    /// A link to `peer` said hello (its Attach, RFC 6940 §6.5.1). `candidate` is the address
    /// its Attach candidate gave; `dialled` is the address this node dialled when the link is
    /// its own and the hello was answered on it (`None` for links the peer opened).
    LinkUp {
        peer: NodeId,
        candidate: Option<SocketAddr>,
        dialled: Option<SocketAddr>,
    },
    /// The link to a peer failed (or could not be established).
    LinkDown(NodeId),
    Local {
        op: OpId,
        request: LocalRequest,
    },
    /// The application's answer to a [`Action::Deliver`]ed request.
    AppAnswer {
        token: u64,
        body: Vec<u8>,
    },
    /// A message of a method this node does not read (e.g. Probe, AppAttach, Find), not for
    /// this node, arrived from `from`: where it goes next is decided by its forwarding header
    /// alone (RFC 6940 §6.1.2) and answered with [`Action::Relay`] carrying `handle`.
    Relay {
        from: NodeId,
        handle: u64,
        route: RelayRoute,
    },
}

/// What the relay decision of [`Event::Relay`] reads of a forwarding header (RFC 6940
/// §6.3.2): the runtime has already removed this node from the front of the destination
/// list and, for a request, appended the previous hop to the via list.
#[derive(Clone, Debug, PartialEq)]
pub struct RelayRoute {
    pub is_request: bool,
    /// The first destination entry (`None` when it is of a kind this node cannot route, such
    /// as an opaque id).
    pub target: Option<Destination>,
    /// The via list's Node-IDs.
    pub via: Vec<NodeId>,
}

/// Bootstrap peers a node remembers for its partition checks: a bootstrap node reached at one
/// of the configured addresses joins the list (newest kept) and, when this node is alone on
/// its ring, it is contacted at once so that the two rings merge.
pub const MAX_BOOTSTRAP: usize = 16;

#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Send on the link to `to` (establishing it if needed).
    Send { to: NodeId, message: Message },
    /// The decision on an [`Event::Relay`]: pass the message on the link to `to`, or (`None`)
    /// there is no way on: a request is answered Error_Not_Found along its via list, a
    /// response is dropped.
    Relay { handle: u64, to: Option<NodeId> },
    /// Open a link to `addr` and send the link hello (an Attach to the wildcard, RFC 6940
    /// §6.5.1) on it; `peer` is the Node-ID expected there (`None` for a bootstrap address).
    /// The hello's answer comes back as [`Event::LinkUp`]; a link that fails as
    /// [`Event::LinkDown`] (when `peer` is known).
    Dial {
        addr: SocketAddr,
        peer: Option<NodeId>,
    },
    /// Deliver `Event::Timer(timer)` at local time `at` (ms).
    SetTimer { at: u64, timer: Timer },
    /// A local request finished.
    Complete { op: OpId, outcome: LocalOutcome },
    /// An application request for this node: answer with `Event::AppAnswer { token, .. }`.
    /// Unanswered tokens are forgotten after `max_pending` newer ones.
    Deliver {
        token: u64,
        sender: NodeId,
        body: Vec<u8>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Idle,
    Joining,
    Joined,
    Left,
}

/// Why a request of ours is in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    Local(OpId),
    /// A Join, for a local request or (`None`) for the bootstrap.
    Join(Option<OpId>),
    /// Connectivity check before `NodeId` enters the neighbor table (stands in for Attach).
    Verify(NodeId),
    Update(NodeId),
    FingerSearch(usize),
    Replica(NodeId),
    /// RFC 6940 §10.7.4.4, through this bootstrap peer.
    PartitionCheck(NodeId),
    Leave,
    /// Direct check of a relay suspected of losing a request.
    Liveness(NodeId),
}

#[derive(Clone, Debug)]
struct Pending {
    message: Message,
    purpose: Purpose,
    attempt: u32,
    /// The link the latest attempt left on: a timeout says something about a peer only when
    /// the request went to it directly.
    last_hop: Option<NodeId>,
    /// First hops of earlier attempts that went unanswered: retransmissions route around them.
    avoid: Vec<NodeId>,
}

/// One Chord-RELOAD peer.
pub struct ChordNode {
    config: ChordConfig,
    table: RoutingTable,
    storage: Storage,
    rng: SmallRng,
    phase: Phase,
    started_at: u64,
    now: u64,
    pending: BTreeMap<u64, Pending>,
    /// Peers heard from directly, with the time last heard.
    verified: BTreeMap<NodeId, u64>,
    /// Peers found dead, with the time.
    failed: BTreeMap<NodeId, u64>,
    probing: BTreeSet<NodeId>,
    checking: BTreeSet<NodeId>,
    /// Peers owed an Update by the end of the current event.
    updates_due: BTreeSet<NodeId>,
    neighbors_dirty: bool,
    sync_scheduled: bool,
    sync_dirty: bool,
    synced_preds: Vec<NodeId>,
    synced_succs: Vec<NodeId>,
    changed_since_round: bool,
    timers_started: bool,
    fingers_initialized: bool,
    rejoins: u64,
    /// Application requests delivered and not yet answered, by token.
    inbound: BTreeMap<u64, (NodeId, Message)>,
    inbound_index: BTreeMap<(NodeId, u64), u64>,
    /// Answers to recent Stores, by (originator, transaction id), with the time answered.
    answered: BTreeMap<(NodeId, u64), (u64, Response)>,
    next_token: u64,
    actions: Vec<Action>,
    boot: bootstrap::Boot,
    links: links::Links,
}

impl ChordNode {
    pub fn new(id: NodeId, config: ChordConfig, seed: u64) -> Self {
        let storage = Storage::new(config.storage.clone());
        let table = RoutingTable::new(id, config.neighbor_count);
        ChordNode {
            config,
            table,
            storage,
            rng: SmallRng::seed_from_u64(
                seed ^ (id.to_u128() as u64) ^ ((id.to_u128() >> 64) as u64),
            ),
            phase: Phase::Idle,
            started_at: 0,
            now: 0,
            pending: BTreeMap::new(),
            verified: BTreeMap::new(),
            failed: BTreeMap::new(),
            probing: BTreeSet::new(),
            checking: BTreeSet::new(),
            updates_due: BTreeSet::new(),
            neighbors_dirty: false,
            sync_scheduled: false,
            sync_dirty: false,
            synced_preds: Vec::new(),
            synced_succs: Vec::new(),
            changed_since_round: false,
            timers_started: false,
            fingers_initialized: false,
            rejoins: 0,
            inbound: BTreeMap::new(),
            inbound_index: BTreeMap::new(),
            answered: BTreeMap::new(),
            next_token: 1,
            actions: Vec::new(),
            boot: bootstrap::Boot::new(),
            links: links::Links::default(),
        }
    }

    pub fn id(&self) -> NodeId {
        self.table.own
    }
    pub fn table(&self) -> &RoutingTable {
        &self.table
    }
    pub fn storage(&self) -> &Storage {
        &self.storage
    }
    pub fn is_joined(&self) -> bool {
        self.phase == Phase::Joined
    }
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }
    /// How often this peer lost all its successors and went looking for the ring again.
    pub fn rejoins(&self) -> u64 {
        self.rejoins
    }

    /// Process one event at local time `now` (ms) and return the actions it causes.
    pub fn handle(&mut self, event: Event, now: u64) -> Vec<Action> {
        self.now = now;
        if self.phase == Phase::Left {
            return Vec::new();
        }
        match event {
            Event::Received { from, message } => self.on_message(from, message),
            Event::Timer(t) => self.on_timer(t),
            Event::LinkUp {
                peer,
                candidate,
                dialled,
            } => {
                self.verified.insert(peer, now);
                self.link_up(peer, candidate);
                self.boot_link_up(peer, dialled);
            }
            Event::LinkDown(n) => {
                self.link_down(n);
                self.boot_link_down(n);
                self.peer_failed(n);
            }
            Event::Local { op, request } => self.on_local(op, request),
            Event::Relay {
                from,
                handle,
                route,
            } => {
                let to = self.relay_hop(from, &route);
                self.actions.push(Action::Relay { handle, to });
            }
            Event::AppAnswer { token, body } => {
                if let Some((from, request)) = self.inbound.remove(&token) {
                    self.inbound_index
                        .remove(&(request.sender, request.transaction_id));
                    self.respond(from, &request, Response::App(body));
                }
            }
        }
        self.flush_updates();
        std::mem::take(&mut self.actions)
    }

    // ----- local requests -----

    fn on_local(&mut self, op: OpId, request: LocalRequest) {
        match request {
            LocalRequest::CreateOverlay => {
                self.create_overlay();
                self.complete(op, LocalOutcome::Joined);
            }
            LocalRequest::Bootstrap => self.boot_start(op),
            LocalRequest::Join { bootstrap } => {
                if self.phase == Phase::Joined {
                    self.complete(op, LocalOutcome::Joined);
                    return;
                }
                self.begin_join(bootstrap, Some(op));
            }
            LocalRequest::Leave => {
                self.leave();
                self.complete(op, LocalOutcome::Left);
            }
            LocalRequest::Lookup { resource } => {
                self.originate_local(op, resource, Request::Ping);
            }
            LocalRequest::Store {
                resource,
                kind_data,
            } => {
                let req = StoreReq {
                    resource: resource.to_wire(),
                    replica_number: 0,
                    kind_data,
                };
                self.originate_local(op, resource, Request::Store(req));
            }
            LocalRequest::Fetch(req) => match ResourceId::from_wire(&req.resource) {
                Some(r) => self.originate_local(op, r, Request::Fetch(req)),
                None => self.fail(op, ErrorCode::InvalidMessage),
            },
            LocalRequest::App { destination, body } => {
                if self.phase != Phase::Joined {
                    self.fail(op, ErrorCode::NotFound);
                } else if self.pending.len() >= self.config.max_pending {
                    self.fail(op, ErrorCode::InProgress);
                } else {
                    self.originate(vec![destination], Request::App(body), Purpose::Local(op));
                }
            }
            LocalRequest::Stat(req) => match ResourceId::from_wire(&req.resource) {
                Some(r) => self.originate_local(op, r, Request::Stat(req)),
                None => self.fail(op, ErrorCode::InvalidMessage),
            },
        }
    }

    fn create_overlay(&mut self) {
        self.phase = Phase::Joined;
        self.started_at = self.now;
        self.start_timers();
    }

    fn begin_join(&mut self, bootstrap: NodeId, op: Option<OpId>) {
        self.phase = Phase::Joining;
        self.started_at = self.now;
        self.verified.insert(bootstrap, self.now);
        // The Join goes through a peer the caller linked to (RFC 6940 §11.4: the joining
        // node attached to its bootstrap node first).
        self.link_heard(bootstrap);
        // RFC 6940 §10.5: the Join goes to the admitting peer, the one responsible for n+1,
        // through the bootstrap peer.
        let own = self.table.own;
        let dest = vec![
            Destination::Node(bootstrap),
            Destination::Resource(ResourceId(own.to_u128().wrapping_add(1))),
        ];
        self.originate(
            dest,
            Request::Join {
                joining_peer_id: own,
            },
            Purpose::Join(op),
        );
    }

    fn originate_local(&mut self, op: OpId, resource: ResourceId, request: Request) {
        if self.phase != Phase::Joined {
            self.fail(op, ErrorCode::NotFound);
            return;
        }
        if self.pending.len() >= self.config.max_pending {
            self.fail(op, ErrorCode::InProgress);
            return;
        }
        self.originate(
            vec![Destination::Resource(resource)],
            request,
            Purpose::Local(op),
        );
    }

    fn complete(&mut self, op: OpId, outcome: LocalOutcome) {
        self.actions.push(Action::Complete { op, outcome });
    }

    fn fail(&mut self, op: OpId, code: ErrorCode) {
        self.complete(
            op,
            LocalOutcome::Failed {
                code,
                info: ErrorInfo::None,
            },
        );
    }

    // ----- sending -----

    fn new_transaction_id(&mut self) -> u64 {
        loop {
            let t: u64 = self.rng.gen();
            if t != 0 && !self.pending.contains_key(&t) && !self.links.attach_tids.contains_key(&t)
            {
                return t;
            }
        }
    }

    /// Start a request of ours and track it for retransmission.
    fn originate(&mut self, destinations: Vec<Destination>, request: Request, purpose: Purpose) {
        let transaction_id = self.new_transaction_id();
        let message = Message {
            transaction_id,
            ttl: self.config.initial_ttl,
            via: Vec::new(),
            destinations,
            sender: self.table.own,
            body: Body::Request(request),
        };
        self.pending.insert(
            transaction_id,
            Pending {
                message: message.clone(),
                purpose,
                attempt: 0,
                last_hop: None,
                avoid: Vec::new(),
            },
        );
        self.arm_retransmit(transaction_id, 0);
        let hop = self.send_own(message);
        if let Some(p) = self.pending.get_mut(&transaction_id) {
            p.last_hop = hop;
        }
    }

    /// A direct request to a linked peer.
    fn originate_direct(&mut self, to: NodeId, request: Request, purpose: Purpose) {
        if self.pending.len() >= self.config.max_pending {
            if matches!(purpose, Purpose::Replica(_)) {
                self.sync_dirty = true;
            }
            return;
        }
        self.originate(vec![Destination::Node(to)], request, purpose);
    }

    fn arm_retransmit(&mut self, transaction_id: u64, attempt: u32) {
        let timeout = self
            .config
            .request_timeout_ms
            .saturating_mul(1u64 << attempt.min(16));
        self.actions.push(Action::SetTimer {
            at: self.now.saturating_add(timeout),
            timer: Timer::Retransmit {
                transaction_id,
                attempt,
            },
        });
    }

    /// Route a message we originate: consumed locally when it is for us.
    /// Returns the link the message left on (`None`: consumed locally or no route).
    fn send_own(&mut self, message: Message) -> Option<NodeId> {
        self.send_own_avoiding(message, &[])
    }

    /// [`Self::send_own`], routing around `avoid` (hops an earlier attempt was lost on) when
    /// another route exists.
    fn send_own_avoiding(&mut self, mut message: Message, avoid: &[NodeId]) -> Option<NodeId> {
        loop {
            match message.destinations.first().copied() {
                None => return None,
                Some(Destination::Node(n)) if n == self.table.own => {
                    if message.destinations.len() == 1 {
                        self.deliver(self.table.own, message);
                        return None;
                    }
                    message.destinations.remove(0);
                }
                Some(Destination::Resource(r))
                    if self.phase == Phase::Joined && self.table.is_responsible(r.0) =>
                {
                    self.deliver(self.table.own, message);
                    return None;
                }
                Some(d) => {
                    // No route: the retransmission timer retries and finally fails it.
                    let hop = self.next_hop(d, &message, avoid)?;
                    self.transmit(hop, message);
                    return Some(hop);
                }
            }
        }
    }

    /// Next hop toward a destination entry: a linked node by id, else greedy routing, else
    /// (while joining) the bootstrap peer.
    fn next_hop(&self, d: Destination, message: &Message, avoid: &[NodeId]) -> Option<NodeId> {
        if !avoid.is_empty() {
            let mut via = message.via.clone();
            via.extend_from_slice(avoid);
            if let Some(h) = self.next_hop_excluding(d, &via, message.sender, message.sender) {
                if !avoid.contains(&h) {
                    return Some(h);
                }
            }
        }
        self.next_hop_excluding(d, &message.via, message.sender, message.sender)
    }

    fn next_hop_excluding(
        &self,
        d: Destination,
        via: &[NodeId],
        sender: NodeId,
        from: NodeId,
    ) -> Option<NodeId> {
        if let Destination::Node(n) = d {
            if self.verified.contains_key(&n) || self.table.is_known(n) {
                return Some(n);
            }
        }
        let mut exclude: Vec<NodeId> = Vec::with_capacity(via.len() + 2);
        exclude.extend_from_slice(via);
        exclude.push(sender);
        exclude.push(from);
        if let Some(h) = self.table.next_hop(d.ring(), &exclude) {
            return Some(h);
        }
        // Nothing but excluded peers: fall back to any known peer before giving up.
        self.table.next_hop(d.ring(), &[])
    }

    // ----- receiving -----

    fn on_message(&mut self, from: NodeId, mut message: Message) {
        if self.phase == Phase::Idle {
            return;
        }
        self.verified.insert(from, self.now);
        self.failed.remove(&from);
        self.link_heard(from);
        if self.verified.len() > 8 * 1024 {
            self.prune_verified();
        }
        // RFC 6940 §6.3.2: a TTL beyond the initial value is refused.
        if message.ttl > self.config.initial_ttl {
            self.answer_error(from, &message, ErrorCode::TtlExceeded);
            return;
        }
        loop {
            match message.destinations.first().copied() {
                None => {
                    self.answer_error(from, &message, ErrorCode::InvalidMessage);
                    return;
                }
                Some(Destination::Node(n)) if n == self.table.own => {
                    if message.destinations.len() == 1 {
                        self.deliver(from, message);
                        return;
                    }
                    message.destinations.remove(0);
                }
                Some(Destination::Resource(r)) if self.serves_resource(r) => {
                    // RFC 6940 §6.1.1: a Resource-ID must be the last entry.
                    if message.destinations.len() == 1 {
                        self.deliver(from, message);
                    }
                    return;
                }
                Some(d) => {
                    self.forward(from, message, d);
                    return;
                }
            }
        }
    }

    fn serves_resource(&self, r: ResourceId) -> bool {
        self.phase == Phase::Joined && self.table.is_responsible(r.0)
    }

    /// RFC 6940 §6.1.2 / §6.2: relay toward the first destination entry.
    fn forward(&mut self, from: NodeId, mut message: Message, d: Destination) {
        // RFC 6940 §6.3.2: a message with TTL 0 that is not for us goes no further.
        if message.ttl == 0 {
            self.answer_error(from, &message, ErrorCode::TtlExceeded);
            return;
        }
        message.ttl -= 1;
        // Symmetric recursive routing: remember the previous hop in the via list. A request
        // needs it for the way back; on a response it keeps the responder as the first entry
        // (RFC 6940 §6.1.2 leaves responses' via lists to the relay), which is how a receiver
        // of the encoded message learns who answered.
        if message.via.len() >= usize::from(self.config.initial_ttl) {
            self.answer_error(from, &message, ErrorCode::TtlExceeded);
            return;
        }
        message.via.push(from);
        let hop = if message.is_attach() && self.manages_links() {
            // RFC 6940 §6.5.1.2: an Attach goes on existing links only; an answer to the
            // next entry of its destination list directly.
            match d {
                Destination::Node(n) if self.is_linked(n) => Some(n),
                _ if message.is_request() => {
                    let mut exclude = message.via.clone();
                    exclude.push(message.sender);
                    self.linked_next_hop(d.ring(), &exclude)
                }
                _ => None,
            }
        } else {
            self.next_hop_excluding(d, &message.via, message.sender, from)
        };
        // A request may not go back where it came from (that answers Error_Not_Found). A
        // response may not revisit any node on its own path: when the node it is for is gone
        // (e.g. the answer to a Leave), it is dropped here rather than bounced between relays
        // until its TTL runs out; the requester's retransmission timer covers the loss
        // (RFC 6940 §6.2.2).
        let usable = match hop {
            Some(h) if message.is_request() => h != from,
            Some(h) => !message.via.contains(&h),
            None => false,
        };
        match hop {
            Some(hop) if usable => self.transmit(hop, message),
            _ => {
                if message.is_request() {
                    message.via.pop();
                    self.answer_error(from, &message, ErrorCode::NotFound);
                }
            }
        }
    }

    /// Answer a request with an error (responses are never answered).
    fn answer_error(&mut self, from: NodeId, request: &Message, code: ErrorCode) {
        if !request.is_request() {
            return;
        }
        self.respond(
            from,
            request,
            Response::Error {
                code,
                info: ErrorInfo::None,
            },
        );
    }

    /// RFC 6940 §6.2.2: the response leaves with `[previous hop] + reversed via list`.
    fn respond(&mut self, from: NodeId, request: &Message, response: Response) {
        let mut destinations: Vec<Destination> = Vec::with_capacity(request.via.len() + 1);
        if from != self.table.own {
            destinations.push(Destination::Node(from));
        }
        destinations.extend(request.via.iter().rev().map(|n| Destination::Node(*n)));
        if destinations.last() != Some(&Destination::Node(request.sender)) {
            destinations.push(Destination::Node(request.sender));
        }
        let message = Message {
            transaction_id: request.transaction_id,
            ttl: self.config.initial_ttl,
            via: Vec::new(),
            destinations,
            sender: self.table.own,
            body: Body::Response(response),
        };
        self.send_own(message);
    }

    fn deliver(&mut self, from: NodeId, message: Message) {
        if message.is_request() {
            self.on_request(from, message);
        } else {
            self.on_response(message);
        }
    }

    // ----- serving requests -----

    fn on_request(&mut self, from: NodeId, message: Message) {
        let Body::Request(request) = &message.body else {
            return;
        };
        // A retransmitted Store gets the answer the first copy got: applying it again could
        // fail on the generation counter the first copy already moved.
        let store_key = (message.sender, message.transaction_id);
        if matches!(request, Request::Store(_)) {
            if let Some(answer) = self.answered.get(&store_key).map(|(_, a)| a.clone()) {
                self.respond(from, &message, answer);
                return;
            }
        }
        if let Request::App(body) = request {
            let key = (message.sender, message.transaction_id);
            if let Some(token) = self.inbound_index.get(&key).copied() {
                // A retransmission of a request the application already has: answer it along
                // the newest path, deliver it once.
                self.inbound.insert(token, (from, message));
                return;
            }
            let (token, sender, body) = (self.next_token, message.sender, body.clone());
            self.next_token += 1;
            if self.inbound.len() >= self.config.max_pending {
                if let Some((_, (_, old))) = self.inbound.pop_first() {
                    self.inbound_index.remove(&(old.sender, old.transaction_id));
                }
            }
            self.inbound_index.insert(key, token);
            self.inbound.insert(token, (from, message));
            self.actions.push(Action::Deliver {
                token,
                sender,
                body,
            });
            return;
        }
        let response = match request {
            Request::Ping => Response::Ping {
                response_id: self.rng.gen(),
                // RFC 6940 §6.5.3.2: milliseconds since midnight Jan 1, 1970.
                time: self.config.wall_clock_offset_ms.saturating_add(self.now),
            },
            Request::Join { joining_peer_id } => self.on_join(*joining_peer_id, from),
            Request::Update(update) => {
                let update = update.clone();
                self.on_update(message.sender, &update);
                Response::Update
            }
            Request::Leave {
                leaving_peer_id,
                data,
            } => {
                let (l, d) = (*leaving_peer_id, data.clone());
                self.on_leave(l, &d);
                Response::Leave
            }
            Request::RouteQuery {
                send_update,
                destination,
            } => {
                let next_peer = if self.table.is_responsible(destination.ring()) {
                    self.table.own
                } else {
                    self.table
                        .next_hop(destination.ring(), &[])
                        .unwrap_or(self.table.own)
                };
                if *send_update {
                    // RFC 6940 §10.8: a full Update follows the answer.
                    let update = self.update_body(true);
                    let to = message.sender;
                    self.originate(
                        vec![Destination::Node(to)],
                        Request::Update(update),
                        Purpose::Update(to),
                    );
                }
                Response::RouteQuery { next_peer }
            }
            Request::Store(req) => {
                let req = req.clone();
                self.on_store(&req, message.sender)
            }
            Request::Fetch(req) => match self.storage.fetch(req, self.now) {
                Ok(a) if fetch_answer_bytes(&a) > self.answer_budget() => too_large(),
                Ok(a) => Response::Fetch(a),
                Err(e) => storage_error(e),
            },
            Request::Stat(req) => match self.storage.stat(req, self.now) {
                Ok(a) if stat_answer_bytes(&a) > self.answer_budget() => too_large(),
                Ok(a) => Response::Stat(a),
                Err(e) => storage_error(e),
            },
            Request::Attach(body) => {
                let body = body.clone();
                self.on_attach_request(message.sender, &body)
            }
            Request::App(_) => return,
        };
        if matches!(message.body, Body::Request(Request::Store(_))) {
            self.remember_answer(store_key, &response);
        }
        self.respond(from, &message, response);
    }

    /// RFC 6940 §10.5 steps 5-8 at the admitting peer.
    fn on_join(&mut self, joining: NodeId, from: NodeId) -> Response {
        if self.phase != Phase::Joined || joining == self.table.own {
            return Response::Error {
                code: ErrorCode::Forbidden,
                info: ErrorInfo::None,
            };
        }
        let _ = from;
        // The joining peer attached to us before joining (step 2): it is linked.
        self.verified.insert(joining, self.now);
        self.failed.remove(&joining);
        if self.table.insert_neighbor(joining) {
            self.neighbors_dirty = true;
        }
        // Step 6: hand over the data the joining peer is now responsible for.
        let resources: Vec<ResourceId> = self
            .storage
            .resources()
            .filter(|r| !self.table.is_responsible(r.0) && self.view_owner(r.0) == Some(joining))
            .collect();
        for r in resources {
            if let Some(req) = self.storage.export(r, None, 1, self.now) {
                self.send_replica(joining, req);
            }
        }
        // Steps 7-8: the Update to every neighbor (including the joining peer) goes out at the
        // end of this event.
        self.updates_due.insert(joining);
        Response::Join
    }

    /// RFC 6940 §7.4.1 / §10.4: an original store at the responsible peer, or a replica /
    /// migration store from a plausible predecessor.
    fn on_store(&mut self, req: &StoreReq, originator: NodeId) -> Response {
        let Some(rid) = ResourceId::from_wire(&req.resource) else {
            return storage_error(StorageError::InvalidMessage("resource id is not 16 bytes"));
        };
        let r = rid.0;
        if req.replica_number == 0 {
            if !self.serves_resource(rid) {
                return storage_error(StorageError::Forbidden);
            }
        } else if !self.in_replica_window(r) {
            return storage_error(StorageError::Forbidden);
        }
        match self.storage.store_from(req, originator, self.now) {
            Ok(mut ans) => {
                if req.replica_number == 0 {
                    let replicas: Vec<NodeId> =
                        self.table.successors.iter().take(2).copied().collect();
                    for k in &mut ans.kind_responses {
                        k.replicas = replicas.clone();
                    }
                    // RFC 6940 §10.4: replica Stores of the same data to the next two
                    // successors, with the generation counters it now has here (not the whole
                    // resource: a big dictionary would exceed a message at every Store).
                    for (i, s) in replicas.iter().enumerate() {
                        let n = u8::try_from(i + 1).unwrap_or(u8::MAX);
                        let kind_data = req
                            .kind_data
                            .iter()
                            .map(|kd| StoreKindData {
                                kind: kd.kind,
                                generation_counter: ans
                                    .kind_responses
                                    .iter()
                                    .find(|k| k.kind == kd.kind)
                                    .map_or(1, |k| k.generation_counter.max(1)),
                                values: kd.values.clone(),
                            })
                            .collect();
                        let rep = StoreReq {
                            resource: req.resource.clone(),
                            replica_number: n,
                            kind_data,
                        };
                        self.send_replica(*s, rep);
                    }
                }
                Response::Store(ans)
            }
            Err(e) => storage_error(e),
        }
    }

    /// A replica store is plausible when the resource lies within the ranges of this peer and
    /// its nearest predecessors (RFC 6940 §10.4: the sender should be an appropriate
    /// predecessor). With fewer than the full set of predecessors known, anything is accepted.
    fn in_replica_window(&self, r: u128) -> bool {
        let k = self.config.neighbor_count;
        match self.table.predecessors.get(k.saturating_sub(1)) {
            Some(far) if self.table.predecessors.len() >= k => {
                in_left_open(r, far.to_u128(), self.table.own.to_u128())
            }
            _ => true,
        }
    }

    // ----- responses -----

    fn on_response(&mut self, message: Message) {
        if self.on_attach_answer(&message) {
            return;
        }
        let Some(pending) = self.pending.remove(&message.transaction_id) else {
            return; // late duplicate or unknown: nothing to do
        };
        let Body::Response(response) = message.body else {
            return;
        };
        let responder = message.sender;
        match pending.purpose {
            Purpose::Local(op) => {
                let outcome = match response {
                    Response::Ping { .. } => LocalOutcome::Lookup {
                        responsible: responder,
                    },
                    Response::Store(a) => LocalOutcome::Stored(a),
                    Response::Fetch(a) => LocalOutcome::Fetched(a),
                    Response::Stat(a) => LocalOutcome::Stat(a),
                    Response::App(b) => LocalOutcome::App(b),
                    Response::Error { code, info } => LocalOutcome::Failed { code, info },
                    _ => LocalOutcome::Failed {
                        code: ErrorCode::InvalidMessage,
                        info: ErrorInfo::None,
                    },
                };
                self.complete(op, outcome);
            }
            Purpose::Join(op) => match response {
                Response::Join => {
                    self.phase = Phase::Joined;
                    self.verified.insert(responder, self.now);
                    if self.table.insert_neighbor(responder) {
                        self.neighbors_dirty = true;
                    }
                    // RFC 6940 §10.5 step 9: Updates to every neighbor.
                    self.neighbors_dirty = true;
                    self.start_timers();
                    if let Some(op) = op {
                        self.complete(op, LocalOutcome::Joined);
                    }
                    self.boot_joined(true);
                }
                Response::Error { code, info } => {
                    self.phase = Phase::Idle;
                    if let Some(op) = op {
                        self.complete(op, LocalOutcome::Failed { code, info });
                    }
                    self.boot_joined(false);
                }
                _ => {
                    self.phase = Phase::Idle;
                    self.boot_joined(false);
                }
            },
            Purpose::Verify(n) => {
                self.probing.remove(&n);
                if matches!(response, Response::Ping { .. }) {
                    self.verified.insert(n, self.now);
                    self.failed.remove(&n);
                    self.admit(n);
                }
            }
            Purpose::Update(_) | Purpose::Leave => {}
            Purpose::Liveness(n) => {
                self.checking.remove(&n);
            }
            Purpose::FingerSearch(i) => {
                if matches!(response, Response::Ping { .. })
                    && responder != self.table.own
                    && !self.failed.contains_key(&responder)
                {
                    let (start, len) = finger_range(self.table.own.to_u128(), i);
                    let current_valid = self
                        .table
                        .fingers
                        .get(i)
                        .copied()
                        .flatten()
                        .is_some_and(|f| distance(start, f.to_u128()) < len);
                    if distance(start, responder.to_u128()) < len || !current_valid {
                        self.table.set_finger(i, responder);
                    }
                    self.table.consider_finger(responder);
                    if self.table.improves_neighbors(responder) {
                        self.probe(responder, None);
                    }
                }
            }
            Purpose::Replica(_) => {
                if matches!(response, Response::Error { .. }) {
                    // RFC 6940 §7.4.1.1 asks to fetch newer data on Data_Too_Old; here the
                    // replica set is simply pushed again at the next round.
                    self.sync_dirty = true;
                }
            }
            Purpose::PartitionCheck(through) => {
                if matches!(response, Response::Ping { .. }) && responder != self.table.own {
                    // The answer proves the responder alive, whatever it was marked during a
                    // partition; the bootstrap peer relayed it, so it is alive too.
                    self.failed.remove(&responder);
                    self.failed.remove(&through);
                    if self.table.improves_neighbors(responder) {
                        // RFC 6940 §10.7.4.4: a better successor exists (another ring, or a
                        // part of ours we lost); connect to it through the bootstrap peer.
                        self.probe(responder, Some(through));
                    }
                    if self.table.improves_neighbors(through) {
                        self.probe(through, None);
                    }
                }
            }
        }
    }

    // ----- timers -----

    fn on_timer(&mut self, timer: Timer) {
        match timer {
            Timer::Retransmit {
                transaction_id,
                attempt,
            } => self.on_retransmit(transaction_id, attempt),
            Timer::PeriodicUpdate => self.periodic_round(),
            Timer::FingerRefresh => {
                let initial = !std::mem::replace(&mut self.fingers_initialized, true);
                self.refresh_fingers(initial);
                let next = self.jittered(self.config.finger_interval_ms);
                self.actions.push(Action::SetTimer {
                    at: next,
                    timer: Timer::FingerRefresh,
                });
            }
            Timer::ReplicaSync => {
                self.sync_scheduled = false;
                let full = std::mem::take(&mut self.sync_dirty);
                self.sync_replicas(full);
            }
            Timer::Bootstrap { generation } => self.boot_timer(generation),
            Timer::Attach {
                peer,
                transaction_id,
            } => self.attach_timeout(peer, transaction_id),
            Timer::Expire => {
                self.storage.expire(self.now);
                self.actions.push(Action::SetTimer {
                    at: self
                        .now
                        .saturating_add(self.config.expiry_interval_ms.max(1)),
                    timer: Timer::Expire,
                });
            }
        }
    }

    fn on_retransmit(&mut self, transaction_id: u64, attempt: u32) {
        let Some(p) = self.pending.get_mut(&transaction_id) else {
            return;
        };
        if p.attempt != attempt {
            return;
        }
        if attempt < self.config.max_retransmissions {
            p.attempt += 1;
            let message = p.message.clone();
            // The attempt was lost somewhere; if it left through a relay, suspect that relay:
            // route around it and check it (RFC 6940 §10.7.2 finger failure).
            let suspect = p
                .last_hop
                .filter(|h| message.destinations.first() != Some(&Destination::Node(*h)));
            if let Some(h) = suspect {
                if !p.avoid.contains(&h) {
                    p.avoid.push(h);
                }
            }
            let avoid = p.avoid.clone();
            self.arm_retransmit(transaction_id, attempt + 1);
            if let Some(h) = suspect {
                self.check_liveness(h);
            }
            let hop = self.send_own_avoiding(message, &avoid);
            if let Some(p) = self.pending.get_mut(&transaction_id) {
                p.last_hop = hop;
            }
            return;
        }
        let Some(p) = self.pending.remove(&transaction_id) else {
            return;
        };
        match p.purpose {
            Purpose::Local(op) => self.fail(op, ErrorCode::RequestTimeout),
            Purpose::Join(op) => {
                self.phase = Phase::Idle;
                if let Some(op) = op {
                    self.fail(op, ErrorCode::RequestTimeout);
                }
                self.boot_joined(false);
            }
            // RFC 6940 §10.7.1: the failure of a request sent directly to a peer marks it
            // failed; a request that went through other peers says nothing about the target.
            Purpose::Verify(n) => {
                self.probing.remove(&n);
                if p.last_hop == Some(n) {
                    self.peer_failed(n);
                }
            }
            Purpose::Update(n) => {
                if p.last_hop == Some(n) {
                    self.peer_failed(n);
                }
            }
            Purpose::Replica(n) => {
                self.sync_dirty = true;
                if p.last_hop == Some(n) {
                    self.peer_failed(n);
                }
            }
            Purpose::Liveness(n) => {
                self.checking.remove(&n);
                if p.last_hop == Some(n) {
                    self.peer_failed(n);
                }
            }
            Purpose::FingerSearch(_) | Purpose::PartitionCheck(_) | Purpose::Leave => {}
        }
    }

    /// A direct Ping to a peer suspected of having lost a request; its failure removes the
    /// peer from the routing table.
    fn check_liveness(&mut self, n: NodeId) {
        if n == self.table.own || self.checking.contains(&n) || self.failed.contains_key(&n) {
            return;
        }
        if self.pending.len() >= self.config.max_pending {
            return;
        }
        self.checking.insert(n);
        self.originate(
            vec![Destination::Node(n)],
            Request::Ping,
            Purpose::Liveness(n),
        );
    }

    fn jittered(&mut self, interval: u64) -> u64 {
        // RFC 6940 §10.7.4.1: randomly offset so that peers do not update all at once.
        let interval = interval.max(2);
        let jitter = self.rng.gen_range(interval * 3 / 4..=interval * 5 / 4);
        self.now.saturating_add(jitter)
    }

    fn start_timers(&mut self) {
        if self.timers_started {
            return;
        }
        self.timers_started = true;
        let at = self.jittered(self.config.update_interval_ms);
        self.actions.push(Action::SetTimer {
            at,
            timer: Timer::PeriodicUpdate,
        });
        // The first finger search soon after joining, once neighbor checks had time to finish.
        let first = self
            .now
            .saturating_add(self.config.request_timeout_ms / 2 + 1);
        self.actions.push(Action::SetTimer {
            at: first,
            timer: Timer::FingerRefresh,
        });
        self.actions.push(Action::SetTimer {
            at: self
                .now
                .saturating_add(self.config.expiry_interval_ms.max(1)),
            timer: Timer::Expire,
        });
    }

    /// RFC 6940 §10.7.4: one stabilization round.
    fn periodic_round(&mut self) {
        let at = self.jittered(self.config.update_interval_ms);
        self.actions.push(Action::SetTimer {
            at,
            timer: Timer::PeriodicUpdate,
        });
        if self.phase != Phase::Joined {
            return;
        }
        // §10.7.4.1: Update every neighbor (failures show up as timeouts).
        for n in self.table.neighbors() {
            self.updates_due.insert(n);
        }
        // §10.7.1: all successors lost -> behave as if joining.
        if self.table.successors.is_empty() {
            self.rejoin();
        }
        // §10.7.4.4: partition check through a bootstrap peer, also one found dead earlier:
        // the check is how rings split by a partition (or a restarted first node) merge.
        self.partition_check(None);
        // Housekeeping: forget old failures, old links; drop data we are no longer a replica
        // for, but only when the neighbor table has been stable over a whole round.
        let memory = self.config.failed_memory_ms;
        let now = self.now;
        self.failed.retain(|_, t| now.saturating_sub(*t) < memory);
        self.prune_verified();
        if !self.changed_since_round {
            self.drop_foreign_data();
        }
        self.changed_since_round = false;
        if self.sync_dirty && !self.sync_scheduled {
            self.sync_scheduled = true;
            self.actions.push(Action::SetTimer {
                at: self.now,
                timer: Timer::ReplicaSync,
            });
        }
    }

    /// RFC 6940 §10.7.4.4: route a Ping to our own id + 1 through a random bootstrap peer;
    /// the peer answering is our successor in the bootstrap peer's ring, and when it would be
    /// a better neighbor than ours the rings are joined through it.
    fn partition_check(&mut self, through: Option<NodeId>) {
        let own = self.table.own;
        let bootstraps: Vec<NodeId> = self
            .config
            .bootstrap
            .iter()
            .copied()
            .filter(|b| *b != own)
            .collect();
        if bootstraps.is_empty() || self.pending.len() >= self.config.max_pending {
            return;
        }
        let b = through.unwrap_or_else(|| bootstraps[self.rng.gen_range(0..bootstraps.len())]);
        // Sent on the link to it (established anew when needed), not routed by our ring.
        self.verified.insert(b, self.now);
        self.originate(
            vec![
                Destination::Node(b),
                Destination::Resource(ResourceId(own.to_u128().wrapping_add(1))),
            ],
            Request::Ping,
            Purpose::PartitionCheck(b),
        );
    }

    /// The runtime reached bootstrap peer `n` at a configured address (see [`MAX_BOOTSTRAP`]).
    fn bootstrap_found(&mut self, n: NodeId) {
        if n == self.table.own {
            return;
        }
        let list = &mut self.config.bootstrap;
        list.retain(|b| *b != n);
        list.push(n);
        if list.len() > MAX_BOOTSTRAP {
            list.remove(0);
        }
        self.failed.remove(&n);
        self.verified.insert(n, self.now);
        if self.phase == Phase::Joined && self.table.successors.is_empty() {
            // Alone on our ring: merge with the bootstrap peer's at once.
            self.partition_check(None);
            self.probe(n, None);
        }
    }

    fn prune_verified(&mut self) {
        let known: BTreeSet<NodeId> = self.table.known_peers().into_iter().collect();
        let now = self.now;
        let keep = self.config.update_interval_ms.saturating_mul(2);
        self.verified
            .retain(|n, t| known.contains(n) || now.saturating_sub(*t) < keep);
        if self.verified.len() > 4096 {
            self.verified.retain(|n, _| known.contains(n));
        }
    }

    /// RFC 6940 §10.7.4.2 (alternative 1): ping a random id in the range of fingers that are
    /// invalid; at a full refresh (after joining) every such finger, later each with
    /// probability 1/2. Ranges inside the successor list need no finger.
    fn refresh_fingers(&mut self, full: bool) {
        if self.phase != Phase::Joined || self.table.successors.is_empty() {
            return;
        }
        let own = self.table.own.to_u128();
        let reach = self
            .table
            .successors
            .last()
            .map_or(0, |s| distance(own, s.to_u128()));
        for i in 0..FINGERS {
            let (start, len) = finger_range(own, i);
            let range_end = distance(own, start).saturating_add(len - 1);
            if range_end <= reach {
                break;
            }
            let valid = self
                .table
                .fingers
                .get(i)
                .copied()
                .flatten()
                .is_some_and(|f| distance(start, f.to_u128()) < len);
            if valid || (!full && !self.rng.gen_bool(0.5)) {
                continue;
            }
            let target = start.wrapping_add(self.rng.gen_range(0..len));
            self.originate(
                vec![Destination::Resource(ResourceId(target))],
                Request::Ping,
                Purpose::FingerSearch(i),
            );
        }
    }

    // ----- neighbor table maintenance -----

    /// Keep a Store's answer for the originator's retransmission window, bounded in count.
    fn remember_answer(&mut self, key: (NodeId, u64), response: &Response) {
        let window = self
            .config
            .request_timeout_ms
            .saturating_mul(1u64 << (self.config.max_retransmissions.min(16) + 1));
        let now = self.now;
        if self.answered.len() >= self.config.max_pending {
            self.answered
                .retain(|_, (at, _)| now.saturating_sub(*at) < window);
            if self.answered.len() >= self.config.max_pending {
                self.answered.clear();
            }
        }
        self.answered.insert(key, (now, response.clone()));
    }

    /// RFC 6940 §10.7: a `neighbors` Update, or a `full` one with the fingers.
    fn update_body(&self, full: bool) -> ChordUpdate {
        let uptime =
            u32::try_from(self.now.saturating_sub(self.started_at) / 1000).unwrap_or(u32::MAX);
        let predecessors = self.table.predecessors.clone();
        let successors = self.table.successors.clone();
        let update = if full {
            ChordUpdateType::Full {
                predecessors,
                successors,
                fingers: self.table.finger_list(),
            }
        } else {
            ChordUpdateType::Neighbors {
                predecessors,
                successors,
            }
        };
        ChordUpdate { uptime, update }
    }

    /// Send the Updates owed: to every neighbor after a neighbor-table change (RFC 6940
    /// §10.7.1/§10.7.3 reactive recovery) and to peers that should learn about us.
    fn flush_updates(&mut self) {
        if self.phase != Phase::Joined {
            return;
        }
        if std::mem::take(&mut self.neighbors_dirty) {
            for n in self.table.neighbors() {
                self.updates_due.insert(n);
            }
            self.changed_since_round = true;
            if !self.sync_scheduled {
                self.sync_scheduled = true;
                self.actions.push(Action::SetTimer {
                    at: self.now.saturating_add(self.config.replica_holddown_ms),
                    timer: Timer::ReplicaSync,
                });
            }
            if self.table.successors.is_empty() && !self.table.known_peers().is_empty() {
                self.rejoin();
            }
        }
        let due = std::mem::take(&mut self.updates_due);
        if due.is_empty() {
            return;
        }
        let body = self.update_body(false);
        for n in due {
            if n == self.table.own || self.failed.contains_key(&n) {
                continue;
            }
            self.originate_direct(n, Request::Update(body.clone()), Purpose::Update(n));
        }
    }

    /// RFC 6940 §10.7.3: an Update from `sender`.
    fn on_update(&mut self, sender: NodeId, update: &ChordUpdate) {
        self.verified.insert(sender, self.now);
        self.failed.remove(&sender);
        self.admit(sender);
        let own = self.table.own;
        let (predecessors, successors, fingers) = update_lists(update);
        for &c in predecessors.iter().chain(successors).chain(fingers) {
            if c == own || self.recently_failed(c) {
                continue;
            }
            if self.table.improves_neighbors(c) {
                if self.verified.contains_key(&c) {
                    self.admit(c);
                } else {
                    self.probe(c, Some(sender));
                }
            } else {
                // RFC 6940 §10.7.4.2 alternative 2: fingers from what Updates reveal.
                self.table.consider_finger(c);
            }
        }
        // The sender should know us when we belong in its neighbor table: tell it.
        if self.phase == Phase::Joined && !self.failed.contains_key(&sender) {
            let k = self.config.neighbor_count;
            let s = sender.to_u128();
            let misses_succ = !successors.contains(&own)
                && (successors.len() < k
                    || successors
                        .last()
                        .is_some_and(|l| distance(s, own.to_u128()) < distance(s, l.to_u128())));
            let misses_pred = !predecessors.contains(&own)
                && (predecessors.len() < k
                    || predecessors
                        .last()
                        .is_some_and(|l| distance(own.to_u128(), s) < distance(l.to_u128(), s)));
            if misses_succ || misses_pred {
                self.updates_due.insert(sender);
            }
        }
    }

    /// Enter a verified peer into the routing table.
    fn admit(&mut self, n: NodeId) {
        if n == self.table.own || self.failed.contains_key(&n) {
            return;
        }
        if self.table.insert_neighbor(n) {
            self.neighbors_dirty = true;
        }
    }

    /// Check a peer's liveness before it enters the neighbor table. RFC 6940 §10.6: the check
    /// (our stand-in for the Attach) is source-routed through the peer that told us about it,
    /// which is linked to it; without an informant it is routed by id.
    fn probe(&mut self, n: NodeId, informant: Option<NodeId>) {
        if n == self.table.own || self.probing.contains(&n) || self.recently_failed(n) {
            return;
        }
        if self.pending.len() >= self.config.max_pending {
            return;
        }
        self.probing.insert(n);
        let destinations = match informant {
            Some(i)
                if i != n
                    && i != self.table.own
                    && !self.verified.contains_key(&n)
                    && self.verified.contains_key(&i) =>
            {
                vec![Destination::Node(i), Destination::Node(n)]
            }
            _ => vec![Destination::Node(n)],
        };
        self.originate(destinations, Request::Ping, Purpose::Verify(n));
    }

    /// Sends a replica or migration Store (RFC 6940 §10.4, §10.7.3), cut into Stores whose
    /// values fit [`ChordConfig::max_answer_bytes`] by the same estimate as answers: every
    /// part keeps the kind's generation counter, and dictionary and array entries are merged
    /// by the receiver, so the parts together store what the whole would.
    fn send_replica(&mut self, to: NodeId, req: StoreReq) {
        let budget = self.answer_budget();
        let mut parts: Vec<StoreReq> = Vec::new();
        let mut current: Vec<StoreKindData> = Vec::new();
        let mut used = 0usize;
        for kd in req.kind_data {
            let mut values = Vec::new();
            for v in kd.values {
                let cost = stored_bytes(&v) + VALUE_OVERHEAD_BYTES;
                if used + cost > budget && (!values.is_empty() || !current.is_empty()) {
                    if !values.is_empty() {
                        current.push(StoreKindData {
                            kind: kd.kind,
                            generation_counter: kd.generation_counter,
                            values: std::mem::take(&mut values),
                        });
                    }
                    parts.push(StoreReq {
                        resource: req.resource.clone(),
                        replica_number: req.replica_number,
                        kind_data: std::mem::take(&mut current),
                    });
                    used = 0;
                }
                used += cost;
                values.push(v);
            }
            if !values.is_empty() {
                current.push(StoreKindData {
                    kind: kd.kind,
                    generation_counter: kd.generation_counter,
                    values,
                });
            }
        }
        if !current.is_empty() {
            parts.push(StoreReq {
                resource: req.resource,
                replica_number: req.replica_number,
                kind_data: current,
            });
        }
        for part in parts {
            self.originate_direct(to, Request::Store(part), Purpose::Replica(to));
        }
    }

    /// Value bytes an answer may carry (see [`ChordConfig::max_answer_bytes`]).
    fn answer_budget(&self) -> usize {
        self.config
            .max_answer_bytes
            .saturating_sub(ANSWER_HEADROOM_BYTES)
    }

    /// A peer found dead less than one update round ago: peers that name it are not believed
    /// yet. An older failure no longer stops a check (the peer may have come back, or been
    /// unreachable behind a partition that healed); a check that fails again renews the mark,
    /// so a dead peer costs at most one check per round.
    fn recently_failed(&self, n: NodeId) -> bool {
        self.failed
            .get(&n)
            .is_some_and(|t| self.now.saturating_sub(*t) < self.config.update_interval_ms)
    }

    /// RFC 6940 §10.7.1 / §10.7.2: a peer failed.
    fn peer_failed(&mut self, n: NodeId) {
        if n == self.table.own {
            return;
        }
        self.failed.insert(n, self.now);
        self.verified.remove(&n);
        self.probing.remove(&n);
        self.checking.remove(&n);
        if self.table.remove(n) {
            self.neighbors_dirty = true;
        }
    }

    /// RFC 6940 §10.7.1: all successors lost. Find the nearest live peer clockwise among the
    /// peers still known (else a bootstrap peer) and connect to it; Updates from it lead to the
    /// peers between, until the true successor is found.
    fn rejoin(&mut self) {
        let own = self.table.own.to_u128();
        let mut candidates: Vec<NodeId> = self
            .table
            .known_peers()
            .into_iter()
            .chain(self.config.bootstrap.iter().copied())
            .filter(|n| n.to_u128() != own && !self.failed.contains_key(n))
            .collect();
        candidates.sort_by_key(|n| distance(own, n.to_u128()));
        candidates.dedup();
        self.rejoins += 1;
        if let Some(first) = candidates.first().copied() {
            self.probe(first, None);
            // Tell it about us so that it answers with its predecessors.
            self.updates_due.insert(first);
        }
    }

    /// RFC 6940 §10.9: leaving with ChordLeaveData to every neighbor, handing our data to the
    /// successors first.
    fn leave(&mut self) {
        if self.phase == Phase::Joined {
            let succs: Vec<NodeId> = self.table.successors.iter().take(2).copied().collect();
            let resources: Vec<ResourceId> = self
                .storage
                .resources()
                .filter(|r| self.table.is_responsible(r.0))
                .collect();
            for r in resources {
                for (i, s) in succs.iter().enumerate() {
                    let n = u8::try_from(i + 1).unwrap_or(u8::MAX);
                    if let Some(req) = self.storage.export(r, None, n, self.now) {
                        self.send_replica(*s, req);
                    }
                }
            }
            let own = self.table.own;
            for s in self.table.successors.clone() {
                let data = ChordLeaveData::FromPredecessor {
                    predecessors: self.table.predecessors.clone(),
                };
                self.originate_direct(
                    s,
                    Request::Leave {
                        leaving_peer_id: own,
                        data,
                    },
                    Purpose::Leave,
                );
            }
            for p in self.table.predecessors.clone() {
                if self.table.successors.contains(&p) {
                    continue;
                }
                let data = ChordLeaveData::FromSuccessor {
                    successors: self.table.successors.clone(),
                };
                self.originate_direct(
                    p,
                    Request::Leave {
                        leaving_peer_id: own,
                        data,
                    },
                    Purpose::Leave,
                );
            }
        }
        self.phase = Phase::Left;
        self.pending.clear();
    }

    fn on_leave(&mut self, leaving: NodeId, data: &ChordLeaveData) {
        self.peer_failed(leaving);
        let list = match data {
            ChordLeaveData::FromSuccessor { successors } => successors,
            ChordLeaveData::FromPredecessor { predecessors } => predecessors,
        };
        for &c in list {
            if c != self.table.own && self.table.improves_neighbors(c) {
                if self.verified.contains_key(&c) {
                    self.admit(c);
                } else {
                    self.probe(c, None);
                }
            }
        }
    }

    // ----- replication and migration -----

    /// Who is responsible for `r` as far as our neighbor table tells: us, one of our
    /// predecessors, or unknown (beyond our predecessors).
    fn view_owner(&self, r: u128) -> Option<NodeId> {
        if self.table.is_responsible(r) {
            return Some(self.table.own);
        }
        let preds = &self.table.predecessors;
        for (i, p) in preds.iter().enumerate() {
            match preds.get(i + 1) {
                Some(lower) if in_left_open(r, lower.to_u128(), p.to_u128()) => return Some(*p),
                Some(_) => {}
                None => {
                    // Beyond the last known predecessor: only certain when the table is short
                    // because the ring is small (the last predecessor is also a successor).
                    if self.table.successors.contains(p) || preds.len() < self.config.neighbor_count
                    {
                        let ring_next = self.table.successors.last().copied();
                        if ring_next.is_some_and(|s| {
                            in_open(r, s.to_u128(), p.to_u128()) || r == p.to_u128()
                        }) {
                            return Some(*p);
                        }
                    }
                }
            }
        }
        None
    }

    /// RFC 6940 §10.7.3: send data to peers newly in its replica set (and to a new
    /// predecessor that became responsible). `full` pushes to every member.
    fn sync_replicas(&mut self, full: bool) {
        if self.phase != Phase::Joined {
            return;
        }
        let own = self.table.own;
        let preds = self.table.predecessors.clone();
        let succs: Vec<NodeId> = self.table.successors.iter().take(2).copied().collect();
        let grew = match (self.synced_preds.first(), preds.first()) {
            (Some(old), Some(new)) => {
                old != new && in_open(old.to_u128(), new.to_u128(), own.to_u128())
            }
            (Some(_), None) => true,
            (None, _) => true,
        };
        let resources: Vec<ResourceId> = self.storage.resources().collect();
        for r in resources {
            let Some(owner) = self.view_owner(r.0) else {
                continue;
            };
            // The replica set: the owner and the next two peers clockwise.
            let mut chain: Vec<NodeId> = Vec::with_capacity(3);
            if owner == own {
                chain.push(own);
                chain.extend(succs.iter().copied());
            } else {
                let Some(pos) = preds.iter().position(|p| *p == owner) else {
                    continue;
                };
                for i in (0..=pos).rev() {
                    if let Some(p) = preds.get(i) {
                        chain.push(*p);
                    }
                }
                chain.push(own);
                chain.extend(succs.iter().copied());
            }
            chain.truncate(3);
            for (i, target) in chain.iter().enumerate() {
                if *target == own {
                    continue;
                }
                let new_member = if owner == own {
                    !self.synced_succs.contains(target)
                } else {
                    !self.synced_preds.contains(target) && !self.synced_succs.contains(target)
                };
                let push = full || new_member || (owner == own && grew);
                if !push {
                    continue;
                }
                let n = u8::try_from(i.max(1)).unwrap_or(u8::MAX);
                if let Some(req) = self.storage.export(r, None, n, self.now) {
                    self.send_replica(*target, req);
                }
            }
        }
        self.synced_preds = preds;
        self.synced_succs = succs;
    }

    /// RFC 6940 §10.7.3: delete data when three predecessors lie between us and it.
    fn drop_foreign_data(&mut self) {
        let k = self.config.neighbor_count;
        if self.table.predecessors.len() < k {
            return;
        }
        let Some(far) = self.table.predecessors.get(k - 1).copied() else {
            return;
        };
        let own = self.table.own.to_u128();
        let foreign: Vec<ResourceId> = self
            .storage
            .resources()
            .filter(|r| !in_left_open(r.0, far.to_u128(), own))
            .collect();
        for r in foreign {
            self.storage.remove(r);
        }
    }
}

/// Data and key bytes of one stored value.
fn stored_bytes(v: &crate::overlay::storage::StoredData) -> usize {
    match &v.value {
        crate::overlay::storage::StoredDataValue::Single(d) => d.value.len(),
        crate::overlay::storage::StoredDataValue::Array { value, .. } => value.value.len(),
        crate::overlay::storage::StoredDataValue::Dictionary { key, value } => {
            key.len() + value.value.len()
        }
    }
}

/// Estimated encoded size of a FetchAns's values (see [`ChordConfig::max_answer_bytes`]).
pub fn fetch_answer_bytes(a: &FetchAns) -> usize {
    a.kind_responses
        .iter()
        .flat_map(|k| &k.values)
        .map(|v| stored_bytes(v) + VALUE_OVERHEAD_BYTES)
        .sum()
}

/// Estimated encoded size of a StatAns's values.
pub fn stat_answer_bytes(a: &StatAns) -> usize {
    a.kind_responses
        .iter()
        .flat_map(|k| &k.values)
        .map(|v| {
            let key = match &v.metadata {
                crate::overlay::wire::MetaDataValue::Dictionary { key, .. } => key.len(),
                _ => 0,
            };
            key + METADATA_BYTES
        })
        .sum()
}

fn too_large() -> Response {
    Response::Error {
        code: ErrorCode::ResponseTooLarge,
        info: ErrorInfo::None,
    }
}

fn storage_error(e: StorageError) -> Response {
    let info = match &e {
        StorageError::GenerationCounterTooLow(a) => ErrorInfo::Store(a.clone()),
        StorageError::UnknownKind(k) => ErrorInfo::UnknownKinds(k.clone()),
        _ => ErrorInfo::None,
    };
    Response::Error {
        code: e.code(),
        info,
    }
}
