//! The overlay thread's event loop: a mio poll over the RELOAD listener, the links and a waker
//! for commands; a monotonic clock (ms since start) for the Chord node's timers, kept in a
//! `BTreeMap` ordered by deadline.
//!
//! Links and identities (see [`super::attach`] for the link hello):
//! - The Chord node decides where its messages go (`chord::node::links`: address book,
//!   routed Attach, messages held for it): `Action::Dial { addr, peer }` opens a link and
//!   queues the hello on it, `Action::Send { to }` goes on the link to `to`.
//! - Messages whose handler is the Chord node (RFC 6940 §6.3.3 codes of the topology and
//!   storage, and routed Attaches) go to it as `Event::Received { from: link peer }`; the link
//!   hello (an Attach to the wildcard) is answered here and reported as `Event::LinkUp`.
//!   Other methods are forwarded by their header (§6.1.2), to the next hop the Chord node
//!   chooses (`Event::Relay`, `Action::Relay`).
//! - A link that closes, overflows its queue, sends garbage or leaves a frame unacknowledged
//!   past the ack timeout is dropped and, when it was the link to that peer, reported as
//!   `Event::LinkDown`.
//!
//! Bootstrap (RFC 6940 §11.4) is the Chord node's (`LocalRequest::Bootstrap`, see
//! `chord::node::bootstrap`): this loop dials the addresses it names (`Action::Dial`) and
//! reports each link hello as `Event::LinkUp`, with the address it dialled when the hello was
//! answered on a link of ours.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crossbeam::channel::{Receiver, Sender};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::attach::{self, Origin};
use super::link::{Link, LinkError, LinkLimits};
use super::stats::TransportStats;
use super::{Command, WAKER};
use crate::overlay::chord::codec::{from_wire, to_wire};
use crate::overlay::chord::message::{Body as ChordBody, Response};
use crate::overlay::chord::{
    Action, ChordConfig, ChordNode, Event, LocalOutcome, LocalRequest, NodeId, OpId, Timer,
};
use crate::overlay::config::{OverlayConfig, SecurityMode};
use crate::overlay::security::configuration::{self as config_doc, DocumentError};
use crate::overlay::security::tls::{Admission, TlsConfigs};
use crate::overlay::security::{cert_hash, CertCache, Identity, NodeIdDigest};
use crate::overlay::storage::StorageConfig;
use crate::overlay::wire::{
    self, Body, DataModel, Destination, ErrorCode, ErrorResponse, KindId, MessageCode,
    PeekedMessage, WireConfig,
};

/// Token of the first listener; listener `i` has `FIRST_LISTENER + i` (far above any link's).
const FIRST_LISTENER: usize = usize::MAX / 2;
const FIRST_LINK: usize = 2;
/// How long the loop sleeps at most when nothing is due (ms).
const MAX_WAIT_MS: u64 = 500;
/// Local operations in flight at most.
const MAX_OPS: usize = 8192;
/// Address book entries kept per allowed link (the Chord node's book).
const ADDRESSES_PER_LINK: usize = 16;

/// Milliseconds since the Unix epoch (0 if the clock is before it).
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Certificates kept (peers' and the signers' of data held), parsed.
const MAX_CERTS: usize = 4096;

/// The node's security state in the certificate mode (RFC 6940 §13.3, self-signed §11.3.1).
struct Security {
    identity: Identity,
    digest: NodeIdDigest,
    certs: CertCache,
    admission: Arc<Admission>,
    tls: TlsConfigs,
    /// `instance-name` of the overlay (configuration documents must name it).
    instance_name: String,
    /// Current `configuration-signer`s (§11.1).
    signers: Vec<NodeId>,
    /// The signed configuration document in force, when one was accepted (passed on to
    /// nodes that are behind, §6.3.2.1).
    document: Option<Arc<Vec<u8>>>,
    /// Where accepted documents are kept.
    document_path: Option<std::path::PathBuf>,
    /// The shared secret of §13.4 admission, when configured.
    shared_secret: Option<Vec<u8>>,
    /// Links that were sent the current document, with its sequence (once per link and
    /// sequence).
    pushed: HashMap<Token, u16>,
}

/// Why a configuration document is not applied: the RFC 6940 error and a reason.
type Refusal = (ErrorCode, String);

/// Who is waiting for a local operation.
enum OpOwner {
    Reply(Sender<LocalOutcome>),
    Bootstrap,
    /// The Leave sent on shutdown.
    Leave,
}

pub(super) struct NodeLoop {
    poll: Poll,
    /// One listener per `overlay.listen` address.
    listeners: Vec<TcpListener>,
    listen_addrs: Vec<SocketAddr>,
    commands: Receiver<Command>,
    stats: Arc<TransportStats>,
    node: ChordNode,
    origin: Origin,
    wire_cfg: WireConfig,
    kinds: Vec<(KindId, DataModel)>,
    limits: LinkLimits,
    max_links: usize,
    max_links_per_source: usize,
    attach_timeout_ms: u64,
    clock: Instant,
    rng: SmallRng,
    links: HashMap<Token, Link>,
    next_token: usize,
    by_node: HashMap<NodeId, Token>,
    timers: BTreeMap<(u64, u64), Timer>,
    timer_seq: u64,
    ops: HashMap<OpId, OpOwner>,
    next_op: OpId,
    /// Answers application requests (exp_a) addressed to this node.
    app: super::AppHandler,
    /// Events for the Chord node raised while its actions were carried out.
    events: VecDeque<Event>,
    stop: bool,
    /// Certificate mode; `None` in the insecure test mode.
    sec: Option<Security>,
    /// Contents and security block of the messages handed to the Chord node in this round,
    /// by (sender, transaction id, is request): a message the Chord node relays leaves with
    /// its originator's signature.
    relayed: HashMap<(NodeId, u64, bool), (wire::MessageContents, wire::SecurityBlock)>,
    /// Resource of each Fetch this node sent, by transaction id: the values of the answer are
    /// verified against it (§7.1 covers the Resource-ID, which FetchAns does not carry).
    fetches: HashMap<u64, wire::ResourceId>,
    /// Messages of methods the Chord node does not read, waiting for its relay decision, by
    /// handle: (link, previous hop, message, is request).
    relays: HashMap<u64, (Token, NodeId, wire::Message, bool)>,
    next_relay: u64,
}

impl NodeLoop {
    pub(super) fn new(
        config: &OverlayConfig,
        commands: Receiver<Command>,
        stats: Arc<TransportStats>,
        app: super::AppHandler,
    ) -> anyhow::Result<(NodeLoop, Arc<Waker>)> {
        let listen = config.listen_addrs().map_err(|e| anyhow::anyhow!(e))?;
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let mut listeners = Vec::with_capacity(listen.len());
        let mut listen_addrs = Vec::with_capacity(listen.len());
        for (i, addr) in listen.iter().enumerate() {
            // No SO_REUSEPORT: the port is this node's alone.
            let mut listener = crate::runtime::bind_exclusive(*addr, 1024)
                .map(TcpListener::from_std)
                .map_err(|e| {
                    anyhow::anyhow!("overlay.listen {addr} (port {}): {e}", addr.port())
                })?;
            poll.registry().register(
                &mut listener,
                Token(FIRST_LISTENER + i),
                Interest::READABLE,
            )?;
            listen_addrs.push(listener.local_addr()?);
            listeners.push(listener);
        }
        // Without `advertised`: the listen addresses with the ports actually bound (port 0).
        let advertised = if config.advertised.is_empty() {
            listen_addrs.clone()
        } else {
            config.advertised_addrs().map_err(|e| anyhow::anyhow!(e))?
        };
        let mode = config.security_mode().map_err(|e| anyhow::anyhow!(e))?;
        let sec = match mode {
            SecurityMode::InsecureTest => {
                tracing::warn!(
                    "overlay.security = \"insecure-test\": links are plain TCP, messages and \
                     stored values are unsigned and unchecked; any host that reaches the overlay \
                     port can join and overwrite data. For tests only."
                );
                None
            }
            SecurityMode::Certificate => {
                let digest = config.digest().map_err(|e| anyhow::anyhow!(e))?;
                let identity = if config.key_dir.is_empty() {
                    Identity::generate(digest, &config.instance_name)
                } else {
                    Identity::load(std::path::Path::new(&config.key_dir), digest)
                }
                .map_err(|e| anyhow::anyhow!("overlay identity: {e}"))?;
                let lists = config.admission_lists().map_err(|e| anyhow::anyhow!(e))?;
                if lists.node_ids.is_empty() && lists.fingerprints.is_empty() {
                    tracing::info!(
                        "overlay.admitted is empty: any node with a valid self-signed \
                         certificate may join"
                    );
                }
                let admission = Arc::new(Admission::new(lists, stats.links_refused.clone()));
                let tls = TlsConfigs::new(&identity, digest, admission.clone())
                    .map_err(|e| anyhow::anyhow!("overlay TLS: {e}"))?;
                Some(Security {
                    identity,
                    digest,
                    certs: CertCache::new(digest, MAX_CERTS),
                    admission,
                    tls,
                    instance_name: config.instance_name.clone(),
                    signers: config
                        .configuration_signer_ids()
                        .map_err(|e| anyhow::anyhow!(e))?,
                    document: None,
                    document_path: (!config.configuration_document.is_empty())
                        .then(|| std::path::PathBuf::from(&config.configuration_document)),
                    shared_secret: (!config.shared_secret.is_empty())
                        .then(|| config.shared_secret.as_bytes().to_vec()),
                    pushed: HashMap::new(),
                })
            }
        };
        // The Node-ID is the certificate's; in the insecure test mode it defaults to a hash
        // of the advertised address: the one actually bound when the configuration says
        // port 0.
        let own = if let Some(sec) = &sec {
            Ok(sec.identity.node_id())
        } else if config.node_id.is_empty() && config.node_id_seed.is_empty() {
            OverlayConfig {
                node_id_seed: advertised[0].to_string(),
                ..config.clone()
            }
            .node_id()
        } else {
            config.node_id()
        }
        .map_err(|e| anyhow::anyhow!(e))?;
        let storage = StorageConfig {
            max_resources: config.max_stored_resources,
            max_lifetime_secs: config.max_value_lifetime_secs,
            max_bytes: config.max_stored_bytes,
            max_bytes_per_storer: config.max_stored_bytes_per_node,
            ..StorageConfig::default()
        };
        let kinds = storage.kinds.iter().map(|k| (k.id, k.model)).collect();
        let chord = ChordConfig {
            request_timeout_ms: config.overlay_reliability_timer_ms,
            max_retransmissions: config.max_retransmissions,
            update_interval_ms: config.chord_update_interval_secs * 1000,
            finger_interval_ms: config.chord_ping_interval_secs * 1000,
            replica_holddown_ms: config.replica_holddown_ms,
            storage,
            initial_ttl: config.initial_ttl,
            wall_clock_offset_ms: unix_ms(),
            max_answer_bytes: config.max_message_size as usize,
            attach_timeout_ms: config.attach_timeout_ms,
            max_links: config.max_links,
            max_addresses: config.max_links.saturating_mul(ADDRESSES_PER_LINK),
            ..ChordConfig::default()
        };
        // The Chord node's local time 0 is this instant; its wall-clock offset was read just
        // before.
        let clock = Instant::now();
        let seed = rand::thread_rng().gen::<u64>();
        let overlay = wire::OverlayHash::of_name(&config.instance_name);
        let mut wire_cfg = WireConfig::new(overlay);
        wire_cfg.max_message_size = config.max_message_size;
        wire_cfg.initial_ttl = config.initial_ttl;
        let mut chord = chord;
        chord.advertised = advertised.clone();
        chord.link_type = if sec.is_some() {
            wire::OverlayLinkType::TLS_TCP_FH_NO_ICE
        } else {
            wire::OverlayLinkType::EXP_LINK
        };
        chord.bootstrap_addrs = config
            .bootstrap_addrs()
            .map_err(|e| anyhow::anyhow!(e))?
            .into_iter()
            .filter(|a| !advertised.contains(a) && !listen_addrs.contains(a))
            .collect();
        let mut node_loop = NodeLoop {
            poll,
            listeners,
            listen_addrs,
            commands,
            stats,
            node: ChordNode::new(own, chord, seed),
            origin: Origin {
                overlay,
                configuration_sequence: config.configuration_sequence,
                ttl: config.initial_ttl,
                own,
                advertised,
                link_type: if sec.is_some() {
                    wire::OverlayLinkType::TLS_TCP_FH_NO_ICE
                } else {
                    wire::OverlayLinkType::EXP_LINK
                },
            },
            wire_cfg,
            kinds,
            limits: LinkLimits {
                max_message_size: config.max_message_size,
                max_queued_bytes: config.max_link_queued_bytes,
                ack_timeout_ms: config.link_ack_timeout_ms,
            },
            max_links: config.max_links,
            max_links_per_source: config.max_links_per_source,
            attach_timeout_ms: config.attach_timeout_ms,
            clock,
            rng: SmallRng::seed_from_u64(seed),
            links: HashMap::new(),
            next_token: FIRST_LINK,
            by_node: HashMap::new(),
            timers: BTreeMap::new(),
            timer_seq: 0,
            ops: HashMap::new(),
            next_op: 1,
            app,
            events: VecDeque::new(),
            stop: false,
            sec,
            relayed: HashMap::new(),
            fetches: HashMap::new(),
            relays: HashMap::new(),
            next_relay: 0,
        };
        node_loop.load_document(config.configuration_sequence)?;
        // RFC 6940 §11.4: the Chord node dials its bootstrap list and joins (or creates the
        // overlay) on its own.
        let op = node_loop.new_op(OpOwner::Bootstrap);
        node_loop.events.push_back(Event::Local {
            op,
            request: LocalRequest::Bootstrap,
        });
        Ok((node_loop, waker))
    }

    pub(super) fn node_id(&self) -> NodeId {
        self.origin.own
    }

    /// The addresses listened on (ports as bound), in the order configured.
    pub(super) fn listen_addrs(&self) -> Vec<SocketAddr> {
        self.listen_addrs.clone()
    }

    fn now(&self) -> u64 {
        u64::try_from(self.clock.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub(super) fn run(mut self) {
        let mut events = Events::with_capacity(256);
        while !self.stop {
            let now = self.now();
            let wait = self
                .next_deadline()
                .map_or(MAX_WAIT_MS, |d| d.saturating_sub(now).min(MAX_WAIT_MS));
            if let Err(e) = self
                .poll
                .poll(&mut events, Some(std::time::Duration::from_millis(wait)))
            {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!("overlay poll failed: {e}");
                    break;
                }
            }
            for event in events.iter() {
                match event.token() {
                    WAKER => {}
                    Token(t) if t >= FIRST_LISTENER => self.accept_all(t - FIRST_LISTENER),
                    token => self.on_link_ready(token, event.is_writable()),
                }
            }
            self.drain_commands();
            self.fire_due();
            self.process_events();
            self.flush_all();
        }
        tracing::info!("overlay stopped");
    }

    fn next_deadline(&self) -> Option<u64> {
        let timer = self.timers.keys().next().map(|(at, _)| *at);
        let acks = self
            .links
            .values()
            .filter_map(|l| match l.peer {
                None => Some(l.opened_at + self.attach_timeout_ms + 1),
                Some(_) => l.ack_deadline(),
            })
            .min();
        [timer, acks].into_iter().flatten().min()
    }

    // ----- links -----

    fn accept_all(&mut self, listener: usize) {
        loop {
            let Some(accepted) = self.listeners.get(listener).map(|l| l.accept()) else {
                return;
            };
            match accepted {
                Ok((stream, addr)) => {
                    let source = crate::runtime::source_key(addr.ip());
                    let from_source = self
                        .links
                        .values()
                        .filter(|l| {
                            !l.outbound && crate::runtime::source_key(l.addr.ip()) == source
                        })
                        .count();
                    let over_share =
                        self.max_links_per_source > 0 && from_source >= self.max_links_per_source;
                    if over_share
                        || (self.links.len() >= self.max_links && !self.evict_silent_link())
                    {
                        // Refused: closing the stream is the answer.
                        self.stats
                            .link_failures
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        continue;
                    }
                    let _ = self.add_link(stream, addr, false, None);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!("overlay accept: {e}");
                    break;
                }
            }
        }
    }

    /// Closes an inbound link that has not said hello, to make room on a full node: the oldest
    /// of those that never sent a byte, else the oldest of those still in their handshake (a
    /// slow but real node keeps its slot while silent connections come and go). False when
    /// every link is identified (then the new connection is refused).
    fn evict_silent_link(&mut self) -> bool {
        let victim = self
            .links
            .iter()
            .filter(|(_, l)| !l.outbound && l.peer.is_none())
            .min_by_key(|(_, l)| (l.heard_from, l.opened_at))
            .map(|(t, _)| *t);
        match victim {
            Some(t) => {
                self.fail_link(t, "evicted: no hello yet and the node's links are full");
                true
            }
            None => false,
        }
    }

    fn add_link(
        &mut self,
        mut stream: TcpStream,
        addr: SocketAddr,
        outbound: bool,
        peer: Option<NodeId>,
    ) -> Option<Token> {
        let token = Token(self.next_token);
        self.next_token += 1;
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            tracing::warn!("overlay register: {e}");
            return None;
        }
        let _ = stream.set_nodelay(true);
        let tls = match &self.sec {
            None => None,
            Some(sec) => {
                let conn = if outbound {
                    sec.tls.connect()
                } else {
                    sec.tls.accept()
                };
                match conn {
                    Ok(c) => Some(c),
                    Err(e) => {
                        tracing::warn!("overlay TLS session: {e}");
                        let _ = self.poll.registry().deregister(&mut stream);
                        return None;
                    }
                }
            }
        };
        let mut link = Link::new(stream, addr, outbound, self.limits);
        link.tls = tls;
        link.peer = peer;
        link.opened_at = self.now();
        self.links.insert(token, link);
        self.stats
            .links_opened
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(p) = peer {
            self.by_node.entry(p).or_insert(token);
        }
        Some(token)
    }

    /// Dials `addr`, expecting `peer` there (`None` for a bootstrap address), and queues the
    /// hello.
    fn dial(&mut self, addr: SocketAddr, peer: Option<NodeId>) -> Option<Token> {
        if self.links.len() >= self.max_links {
            return None;
        }
        let stream = match TcpStream::connect(addr) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!("overlay dial {addr}: {e}");
                self.stats
                    .link_failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return None;
            }
        };
        let token = self.add_link(stream, addr, true, peer)?;
        let tid = self.rng.gen::<u64>();
        match self.origin.attach_req(tid, NodeId::WILDCARD) {
            Ok(mut hello) => {
                self.add_proof(&mut hello);
                self.seal(&mut hello);
                self.queue_wire(token, &hello);
            }
            Err(_) => self.fail_link(token, "hello not encodable"),
        }
        Some(token)
    }

    fn queue_wire(&mut self, token: Token, message: &wire::Message) {
        match message.to_bytes() {
            Ok(bytes) => {
                self.stats.sent(message.contents.code);
                self.queue_bytes(token, &bytes);
            }
            Err(_) => {
                self.stats
                    .dropped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    fn queue_bytes(&mut self, token: Token, bytes: &[u8]) {
        let now = self.now();
        let Some(link) = self.links.get_mut(&token) else {
            return;
        };
        if let Err(e) = link.queue_message(bytes, now) {
            self.fail_link(token, &e.to_string());
        }
    }

    fn on_link_ready(&mut self, token: Token, writable: bool) {
        let now = self.now();
        let Some(link) = self.links.get_mut(&token) else {
            return;
        };
        if let Ok(Some(e)) | Err(e) = link.stream.take_error() {
            let msg = e.to_string();
            self.fail_link(token, &msg);
            return;
        }
        let result = link.read_messages(now);
        match result {
            Ok(messages) => {
                for m in messages {
                    self.on_message(token, &m);
                    if !self.links.contains_key(&token) {
                        return;
                    }
                }
                if self.links.get(&token).is_some_and(|l| l.closed) {
                    self.fail_link(token, &LinkError::Closed.to_string());
                    return;
                }
            }
            Err(e) => {
                self.fail_link(token, &e.to_string());
                return;
            }
        }
        if writable {
            self.flush_link(token);
        }
    }

    fn flush_link(&mut self, token: Token) {
        let Some(link) = self.links.get_mut(&token) else {
            return;
        };
        if !link.wants_flush() {
            return;
        }
        match link.flush() {
            Ok(_) => {}
            // A dial still in progress.
            Err(LinkError::Io(e)) if e.kind() == io::ErrorKind::NotConnected => {}
            Err(e) => self.fail_link(token, &e.to_string()),
        }
    }

    fn flush_all(&mut self) {
        let now = self.now();
        let tokens: Vec<Token> = self.links.keys().copied().collect();
        for t in tokens {
            let overdue = self.links.get(&t).is_some_and(|l| l.ack_overdue(now));
            if overdue {
                self.fail_link(t, &LinkError::AckTimeout.to_string());
                continue;
            }
            // An accepted connection that never says hello does not keep its slot.
            let silent = self.links.get(&t).is_some_and(|l| {
                l.peer.is_none() && now.saturating_sub(l.opened_at) > self.attach_timeout_ms
            });
            if silent {
                self.fail_link(t, "no hello within the attach timeout");
                continue;
            }
            self.flush_link(t);
        }
    }

    /// Drops a link; reports `LinkDown` when it was the link to its peer and no other link
    /// to that peer remains.
    fn fail_link(&mut self, token: Token, why: &str) {
        let Some(mut link) = self.links.remove(&token) else {
            return;
        };
        if let Some(sec) = self.sec.as_mut() {
            sec.pushed.remove(&token);
        }
        let _ = self.poll.registry().deregister(&mut link.stream);
        self.stats
            .link_failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(addr = %link.addr, "overlay link closed: {why}");
        let Some(peer) = link.peer else {
            return;
        };
        if self.by_node.get(&peer) == Some(&token) {
            self.by_node.remove(&peer);
            let other = self
                .links
                .iter()
                .find(|(_, l)| l.peer == Some(peer))
                .map(|(t, _)| *t);
            match other {
                Some(t) => {
                    self.by_node.insert(peer, t);
                }
                None => self.events.push_back(Event::LinkDown(peer)),
            }
        }
    }

    // ----- receiving -----

    fn on_message(&mut self, token: Token, bytes: &[u8]) {
        let peer = self.links.get(&token).and_then(|l| l.peer);
        let message = match wire::Message::decode(bytes, &self.wire_cfg) {
            Ok(m) => m,
            Err(e) => {
                let code = e.reload_error_code();
                self.stats.error(code);
                self.stats
                    .dropped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if peer.is_none() {
                    // Only a hello may open a link.
                    self.fail_link(token, "undecodable message before the link hello");
                } else if !e.is_silent_drop() {
                    self.answer_undecodable(token, peer, bytes, code);
                }
                return;
            }
        };
        let code = message.contents.code;
        self.stats.received(code);
        // Certificate mode: every message is signed by its originator (RFC 6940 §6.3.4), who
        // must be admitted. A failure is Error_Forbidden for a request, a drop otherwise, and
        // the end of a link that has not said hello.
        let verified = match self.verify_message(&message) {
            Ok(v) => v,
            Err(why) => {
                self.stats.error(ErrorCode::Forbidden);
                self.stats
                    .dropped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if matches!(code, MessageCode::StoreReq | MessageCode::ExpBReq) {
                    self.stats
                        .forbidden_stores
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                if peer.is_none() {
                    self.fail_link(token, &why);
                } else if code.is_request() {
                    self.answer_error(token, peer, &message.header, ErrorCode::Forbidden, &why);
                }
                return;
            }
        };
        if let (Some(_), Some(mismatch)) = (peer, self.config_mismatch(&message)) {
            self.stats.error(mismatch);
            let header = message.header.clone();
            self.answer_error(token, peer, &header, mismatch, "configuration sequence");
            if mismatch == ErrorCode::ConfigTooOld {
                // §6.3.2.1: the requester is behind; send it the configuration.
                self.push_document(token, peer);
            }
            return;
        }
        let hello = matches!(
            message.header.destination_list.first(),
            None | Some(Destination::Node(NodeId::WILDCARD))
        );
        match code {
            MessageCode::AttachReq | MessageCode::AttachAns if hello => {
                self.on_attach(token, peer, message, verified);
            }
            MessageCode::ConfigUpdateReq
                if peer.is_some() && !self.is_for_another(&message.header) =>
            {
                self.on_config_update(token, peer, &message);
            }
            MessageCode::ConfigUpdateAns
                if peer.is_some() && !self.is_for_another(&message.header) => {}
            _ => {
                let Some(from) = peer else {
                    // Nothing but the hello may come before the hello (the sender is unknown).
                    self.stats
                        .dropped
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.fail_link(token, "message before the link hello");
                    return;
                };
                match from_wire(&message, from, &self.kinds) {
                    Ok(mut m) => {
                        if let Some(signer) = verified {
                            if let Err(why) = self.check_chord(&message, &mut m, signer) {
                                self.stats.error(ErrorCode::Forbidden);
                                if code.is_request() {
                                    self.answer_error(
                                        token,
                                        Some(from),
                                        &message.header,
                                        ErrorCode::Forbidden,
                                        &why,
                                    );
                                }
                                return;
                            }
                            // Kept in case the Chord node relays it (see `send_for_node`).
                            self.relayed.insert(
                                (m.sender, m.transaction_id, m.is_request()),
                                (message.contents.clone(), message.security.clone()),
                            );
                        } else if m.is_attach() {
                            // A relayed Attach keeps the identity its originator named.
                            self.relayed.insert(
                                (m.sender, m.transaction_id, m.is_request()),
                                (message.contents.clone(), message.security.clone()),
                            );
                        }
                        if !m.is_request()
                            && m.destinations.len() == 1
                            && m.destinations.first()
                                == Some(&crate::overlay::chord::Destination::Node(self.origin.own))
                        {
                            self.stats.response_hops_sum.fetch_add(
                                m.via.len() as u64 + 1,
                                std::sync::atomic::Ordering::Relaxed,
                            );
                            self.stats
                                .response_hops_count
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        if let ChordBody::Response(Response::Error { code, .. }) = &m.body {
                            self.stats.error(*code);
                        }
                        self.events.push_back(Event::Received { from, message: m });
                    }
                    Err(_) if self.is_for_another(&message.header) => {
                        // RFC 6940 §6.1.2: a relay forwards by the header alone, whatever the
                        // method (Probe, AppAttach, Find... that the Chord node does not read).
                        self.forward(token, from, message, code.is_request());
                    }
                    Err(_)
                        if message.header.destination_list.len() > 1
                            && message.header.destination_list.first()
                                == Some(&Destination::Node(self.origin.own)) =>
                    {
                        // This node is an intermediate entry of the destination list (a
                        // response on its way back, or a source route): pass it on.
                        let mut message = message;
                        message.header.destination_list.remove(0);
                        self.forward(token, from, message, code.is_request());
                    }
                    Err(e) => {
                        self.stats.error(e.code());
                        self.stats
                            .dropped
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if code.is_request() {
                            let info = e.to_string();
                            self.answer_error(token, Some(from), &message.header, e.code(), &info);
                        }
                    }
                }
            }
        }
    }

    /// RFC 6940 §6.3.2.1: a request whose destination is this node must carry this node's
    /// configuration sequence; otherwise the error to answer, Error_Config_Too_Old when the
    /// request's sequence is behind ours (modulo 2^16, as TCP compares sequence numbers) and
    /// Error_Config_Too_New when ahead. A ConfigUpdate with sequence 65535 is exempt.
    fn config_mismatch(&self, message: &wire::Message) -> Option<ErrorCode> {
        let h = &message.header;
        let theirs = h.configuration_sequence;
        let ours = self.origin.configuration_sequence;
        if !message.contents.code.is_request()
            || theirs == ours
            || h.destination_list.len() != 1
            || self.is_for_another(h)
            || (theirs == u16::MAX && message.contents.code == MessageCode::ConfigUpdateReq)
        {
            return None;
        }
        // Serial-number comparison: `theirs` is older when it lies in the half-space behind.
        let behind = ours.wrapping_sub(theirs) < 0x8000;
        Some(if behind {
            ErrorCode::ConfigTooOld
        } else {
            ErrorCode::ConfigTooNew
        })
    }

    /// True when the message's first destination is neither this node, the wildcard, nor a
    /// Resource-ID this node is responsible for.
    fn is_for_another(&self, header: &wire::ForwardingHeader) -> bool {
        match header.destination_list.first() {
            Some(Destination::Node(n)) => *n != self.origin.own && *n != NodeId::WILDCARD,
            Some(Destination::Resource(r)) => r
                .to_u128()
                .is_some_and(|r| !self.node.table().is_responsible(r)),
            _ => false,
        }
    }

    /// Answers a request that could not be decoded, when its header and code can be read
    /// (RFC 6940 §6.3.3.1: the error response goes back along the via list).
    fn answer_undecodable(
        &mut self,
        token: Token,
        peer: Option<NodeId>,
        bytes: &[u8],
        code: ErrorCode,
    ) {
        // A TTL above initial-ttl is what is being answered (Error_TTL_Exceeded, §6.3.2): read
        // the header without that check to find where the answer goes.
        let mut lenient = self.wire_cfg;
        lenient.initial_ttl = u8::MAX;
        let Ok(peeked) = PeekedMessage::peek(bytes, &lenient) else {
            return;
        };
        let rest = peeked.rest();
        let is_request = match (rest.first(), rest.get(1)) {
            (Some(&a), Some(&b)) => MessageCode::from_u16(u16::from_be_bytes([a, b]))
                .is_some_and(MessageCode::is_request),
            _ => false,
        };
        if is_request && peeked.header.fragment.is_last() {
            let header = peeked.header.clone();
            self.answer_error(token, peer, &header, code, "message not understood");
        }
    }

    fn answer_error(
        &mut self,
        token: Token,
        previous_hop: Option<NodeId>,
        request: &wire::ForwardingHeader,
        code: ErrorCode,
        info: &str,
    ) {
        let mut req = request.clone();
        if let Some(hop) = previous_hop {
            req.via_list.push(Destination::Node(hop));
        }
        let body = Body::Error(ErrorResponse {
            error_code: code,
            error_info: info.as_bytes().iter().take(200).copied().collect(),
        });
        if let Ok(mut m) = wire::Message::response(&req, self.origin.ttl, &body) {
            if m.header.destination_list.is_empty() {
                m.header.destination_list = vec![Destination::Node(NodeId::WILDCARD)];
            }
            self.seal(&mut m);
            self.queue_wire(token, &m);
        }
    }

    fn on_attach(
        &mut self,
        token: Token,
        peer: Option<NodeId>,
        message: wire::Message,
        verified: Option<NodeId>,
    ) {
        let is_req = message.contents.code == MessageCode::AttachReq;
        let body = match message.contents.decode_body(&wire::NoKinds) {
            Ok(Body::AttachReq(b)) | Ok(Body::AttachAns(b)) => b,
            _ => {
                self.stats.error(ErrorCode::InvalidMessage);
                if is_req {
                    self.answer_error(
                        token,
                        peer,
                        &message.header,
                        ErrorCode::InvalidMessage,
                        "bad attach",
                    );
                }
                return;
            }
        };
        // The signer: the verified certificate's Node-ID, or in the insecure test mode the
        // identity the message names.
        let signer = if self.sec.is_some() {
            verified
        } else {
            attach::signer(&message)
        };
        let candidate = attach::preferred_candidate(&body, |a| {
            self.listen_addrs.iter().any(|l| l.is_ipv4() == a.is_ipv4())
        });
        self.on_hello(token, peer, &message, is_req, signer, candidate);
    }

    fn on_hello(
        &mut self,
        token: Token,
        peer: Option<NodeId>,
        message: &wire::Message,
        is_req: bool,
        signer: Option<NodeId>,
        candidate: Option<SocketAddr>,
    ) {
        let Some(s) = signer.filter(|s| *s != self.origin.own && *s != NodeId::WILDCARD) else {
            self.stats.error(ErrorCode::Forbidden);
            self.fail_link(token, "hello without a usable Node-ID");
            return;
        };
        if peer.is_some_and(|p| p != s) {
            // We dialled an address expecting another node: the address book was stale.
            self.fail_link(token, "a different node answered");
            return;
        }
        if let Some(sec) = &self.sec {
            // The hello's signer must be the node whose certificate authenticated the link.
            let on_link = self
                .links
                .get(&token)
                .and_then(|l| l.tls.as_ref())
                .and_then(|t| crate::overlay::security::tls::peer_node_id(t, sec.digest));
            if on_link != Some(s) {
                self.stats
                    .links_refused
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.fail_link(
                    token,
                    "hello signed by another node than the link certificate",
                );
                return;
            }
            if let Some(secret) = &sec.shared_secret {
                // §13.4 shared-secret admission (see `attach`): the proof for the certificate
                // that authenticated the link.
                let cert_hash = self
                    .links
                    .get(&token)
                    .and_then(|l| l.tls.as_ref())
                    .and_then(|t| {
                        t.peer_certificates()?
                            .first()
                            .map(|c| cert_hash(c.as_ref()))
                    });
                let proven = match (cert_hash, message.contents.decode_body(&wire::NoKinds)) {
                    (Some(h), Ok(Body::AttachReq(b) | Body::AttachAns(b))) => {
                        attach::has_shared_secret_proof(&b, secret, &sec.instance_name, &h)
                    }
                    _ => false,
                };
                if !proven {
                    self.stats
                        .links_refused
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.fail_link(token, "hello without proof of the overlay's shared secret");
                    return;
                }
            }
        }
        if let Some(link) = self.links.get_mut(&token) {
            link.peer = Some(s);
            link.identified = true;
        }
        self.by_node.entry(s).or_insert(token);
        if is_req {
            match self.origin.attach_ans(&message.header, None) {
                Ok(mut ans) => {
                    self.add_proof(&mut ans);
                    self.seal(&mut ans);
                    self.queue_wire(token, &ans);
                }
                Err(_) => self.stats.error(ErrorCode::InvalidMessage),
            }
        }
        if crate::overlay::security::configuration::is_newer(
            self.origin.configuration_sequence,
            message.header.configuration_sequence,
        ) {
            // A node whose configuration is behind ours (§6.3.2.1): update it.
            self.push_document(token, Some(s));
        }
        // The address this node dialled, when the hello answered is ours (a bootstrap
        // address is recognised by the Chord node).
        let dialled = self
            .links
            .get(&token)
            .filter(|l| !is_req && l.outbound)
            .map(|l| l.addr);
        self.events.push_back(Event::LinkUp {
            peer: s,
            candidate,
            dialled,
        });
    }

    /// Forwards a message not addressed to us (a method the Chord node does not read): the
    /// header is prepared here (a request gets the previous hop appended to its via list and
    /// its TTL checked, §6.3.2; a response has already had this node popped from its
    /// destination list), the next hop is the Chord node's decision (`Event::Relay`, answered
    /// by `Action::Relay`, see [`Self::relay`]).
    fn forward(
        &mut self,
        token: Token,
        previous_hop: NodeId,
        mut message: wire::Message,
        is_request: bool,
    ) {
        if is_request {
            if let Err(e) = message.header.prepare_forward(Some(previous_hop)) {
                let code = e.reload_error_code();
                self.stats.error(code);
                let header = message.header.clone();
                self.answer_error(token, Some(previous_hop), &header, code, "not forwarded");
                return;
            }
        } else if message.header.ttl == 0 {
            self.stats
                .dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return;
        } else {
            message.header.ttl -= 1;
        }
        let target = match message.header.destination_list.first() {
            Some(Destination::Node(n)) => Some(crate::overlay::chord::Destination::Node(*n)),
            Some(Destination::Resource(r)) => crate::overlay::chord::ResourceId::from_wire(r)
                .map(crate::overlay::chord::Destination::Resource),
            _ => None,
        };
        let via = message
            .header
            .via_list
            .iter()
            .filter_map(|d| match d {
                Destination::Node(n) => Some(*n),
                _ => None,
            })
            .collect();
        self.next_relay += 1;
        let handle = self.next_relay;
        self.relays
            .insert(handle, (token, previous_hop, message, is_request));
        self.events.push_back(Event::Relay {
            from: previous_hop,
            handle,
            route: crate::overlay::chord::RelayRoute {
                is_request,
                target,
                via,
            },
        });
    }

    /// The Chord node's decision on a message [`Self::forward`] holds.
    fn relay(&mut self, handle: u64, to: Option<NodeId>) {
        let Some((token, previous_hop, message, is_request)) = self.relays.remove(&handle) else {
            return;
        };
        match to.and_then(|n| self.by_node.get(&n).copied()) {
            Some(t) => {
                self.stats
                    .attach_forwarded
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.queue_wire(t, &message);
            }
            None => {
                self.stats
                    .dropped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if is_request {
                    // No way on: Error_Not_Found back along the via list, whose last entry
                    // (the previous hop, appended above) is where it goes first.
                    self.stats.error(ErrorCode::NotFound);
                    let mut header = message.header.clone();
                    header.via_list.pop();
                    self.answer_error(
                        token,
                        Some(previous_hop),
                        &header,
                        ErrorCode::NotFound,
                        "no route",
                    );
                }
            }
        }
    }

    // ----- sending for the Chord node -----

    fn send_for_node(&mut self, to: NodeId, message: &crate::overlay::chord::Message) {
        let wired = to_wire(message, self.origin.overlay).map(|mut m| {
            m.header.configuration_sequence = self.origin.configuration_sequence;
            m
        });
        let wired = match (wired, self.sec.is_some()) {
            (Ok(mut m), true) if message.sender == self.origin.own => {
                if let ChordBody::Request(crate::overlay::chord::message::Request::Fetch(f)) =
                    &message.body
                {
                    if self.fetches.len() >= MAX_OPS {
                        self.fetches.clear();
                    }
                    self.fetches
                        .insert(message.transaction_id, f.resource.clone());
                }
                self.add_value_certs(&mut m);
                self.seal(&mut m);
                Ok(m)
            }
            (Ok(mut m), true) => {
                // Relayed: the originator's contents and signature go on unchanged.
                match self.relayed.remove(&(
                    message.sender,
                    message.transaction_id,
                    message.is_request(),
                )) {
                    Some((contents, security)) => {
                        m.contents = contents;
                        m.security = security;
                        Ok(m)
                    }
                    None => {
                        self.stats
                            .dropped
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        return;
                    }
                }
            }
            (Ok(mut m), false) if message.is_attach() => {
                if message.sender == self.origin.own {
                    // The identity a link hello names too (see `attach`).
                    attach::sign_as(&mut m, self.origin.own);
                } else if let Some((contents, security)) = self.relayed.remove(&(
                    message.sender,
                    message.transaction_id,
                    message.is_request(),
                )) {
                    m.contents = contents;
                    m.security = security;
                }
                Ok(m)
            }
            (other, _) => other,
        };
        let bytes = match wired.and_then(|m| {
            let code = m.contents.code;
            m.to_bytes().map(|b| (code, b))
        }) {
            Ok(b) => b,
            Err(_) => {
                self.stats
                    .dropped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return;
            }
        };
        let (code, bytes) = bytes;
        if bytes.len() > self.limits.max_message_size as usize {
            // Never queued: a link refuses an over-long message and would be dropped with
            // it. An answer of ours becomes Error_Response_Too_Large (RFC 6940 §6.3.3.1),
            // so the requester reads the data in smaller pieces; anything else is dropped
            // (its originator's retransmissions end in a timeout).
            self.stats
                .dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if message.sender == self.origin.own && !message.is_request() {
                let answer = crate::overlay::chord::Message {
                    body: ChordBody::Response(Response::Error {
                        code: ErrorCode::ResponseTooLarge,
                        info: crate::overlay::chord::message::ErrorInfo::None,
                    }),
                    ..message.clone()
                };
                if !matches!(message.body, ChordBody::Response(Response::Error { .. })) {
                    self.send_for_node(to, &answer);
                }
            } else {
                tracing::debug!(
                    "overlay message of {} bytes exceeds max_message_size; dropped",
                    bytes.len()
                );
            }
            return;
        }
        self.stats.sent(code);
        if to == self.origin.own {
            self.stats
                .dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        if message.is_attach() && message.sender != self.origin.own {
            self.stats
                .attach_forwarded
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        match self.by_node.get(&to) {
            Some(&t) => self.queue_bytes(t, &bytes),
            None => {
                // The link is gone (its LinkDown is on its way to the Chord node, or this
                // tells it).
                self.stats
                    .dropped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if !self.events.contains(&Event::LinkDown(to)) {
                    self.events.push_back(Event::LinkDown(to));
                }
            }
        }
    }

    // ----- the Chord node, timers, commands -----

    fn new_op(&mut self, owner: OpOwner) -> OpId {
        let op = self.next_op;
        self.next_op += 1;
        self.ops.insert(op, owner);
        op
    }

    fn process_events(&mut self) {
        // Bounded per wake-up so that a storm of link failures cannot starve the poll.
        let mut budget = 100_000usize;
        while let Some(event) = self.events.pop_front() {
            budget = budget.saturating_sub(1);
            if budget == 0 {
                break;
            }
            self.handle_event(event);
        }
        if self.events.is_empty() {
            // Every message received has been through the Chord node.
            self.relayed.clear();
            self.relays.clear();
        }
    }

    fn handle_event(&mut self, event: Event) {
        if let Event::Timer(Timer::Retransmit { attempt, .. }) = event {
            if attempt > 0 {
                self.stats
                    .retransmissions
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let now = self.now();
        for action in self.node.handle(event, now) {
            match action {
                Action::Send { to, message } => self.send_for_node(to, &message),
                Action::SetTimer { at, timer } => {
                    self.timer_seq += 1;
                    self.timers.insert((at, self.timer_seq), timer);
                }
                Action::Complete { op, outcome } => self.complete(op, outcome),
                Action::Relay { handle, to } => self.relay(handle, to),
                Action::Dial { addr, peer } => {
                    // A bootstrap address already dialled (and not yet failed) is not dialled
                    // twice.
                    let open =
                        peer.is_none() && self.links.values().any(|l| l.outbound && l.addr == addr);
                    if !open && self.dial(addr, peer).is_none() {
                        if let Some(p) = peer {
                            self.events.push_back(Event::LinkDown(p));
                        }
                    }
                }
                Action::Deliver {
                    token,
                    sender,
                    body,
                } => {
                    // An application request (exp_a, protocols.md §3) for this node.
                    let answer = (self.app)(sender, &body);
                    self.events.push_back(Event::AppAnswer {
                        token,
                        body: answer,
                    });
                }
            }
        }
    }

    fn complete(&mut self, op: OpId, outcome: LocalOutcome) {
        match self.ops.remove(&op) {
            Some(OpOwner::Reply(tx)) => {
                let _ = tx.try_send(outcome);
            }
            // The Chord node logs its bootstrap's progress.
            Some(OpOwner::Bootstrap) => {}
            Some(OpOwner::Leave) | None => {}
        }
    }

    fn fire_due(&mut self) {
        let now = self.now();
        while let Some((&(at, seq), _)) = self.timers.first_key_value() {
            if at > now {
                break;
            }
            if let Some(timer) = self.timers.remove(&(at, seq)) {
                self.events.push_back(Event::Timer(timer));
            }
        }
    }

    fn drain_commands(&mut self) {
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::Local { mut request, reply } => {
                    // Values this node stores are signed here (RFC 6940 §7.1), so callers of
                    // the overlay hand in plain values.
                    if let (
                        Some(sec),
                        LocalRequest::Store {
                            resource,
                            kind_data,
                        },
                    ) = (&self.sec, &mut request)
                    {
                        let r = resource.to_wire();
                        for kd in kind_data.iter_mut() {
                            for v in kd.values.iter_mut() {
                                let _ = sec.identity.sign_stored(&r, kd.kind, v);
                            }
                        }
                    }
                    if let (Some(sec), LocalRequest::StoreBatch(stores)) = (&self.sec, &mut request)
                    {
                        for store in stores.iter_mut() {
                            for kd in store.kind_data.iter_mut() {
                                for v in kd.values.iter_mut() {
                                    let _ = sec.identity.sign_stored(&store.resource, kd.kind, v);
                                }
                            }
                        }
                    }
                    if self.ops.len() >= MAX_OPS {
                        // Callers that gave up leave their op here until the Chord node ends
                        // it; never more than this many.
                        let _ = reply.try_send(LocalOutcome::Failed {
                            code: ErrorCode::InProgress,
                            info: crate::overlay::chord::message::ErrorInfo::None,
                        });
                        continue;
                    }
                    let op = self.new_op(OpOwner::Reply(reply));
                    self.events.push_back(Event::Local { op, request });
                }
                Command::Status { reply } => {
                    let _ = reply.try_send(self.status());
                }
                Command::ConfigUpdate { document, reply } => {
                    let outcome = self
                        .accept_document(document, None)
                        .map_err(|(code, why)| format!("{code:?}: {why}"));
                    let _ = reply.try_send(outcome);
                }
                Command::Shutdown => {
                    // RFC 6940 §10.9: tell the neighbors before going; the Leave messages are
                    // flushed once on the way out (best effort, nobody waits for answers).
                    if self.node.is_joined() {
                        let op = self.new_op(OpOwner::Leave);
                        self.events.push_back(Event::Local {
                            op,
                            request: LocalRequest::Leave,
                        });
                    }
                    self.stop = true;
                }
            }
        }
    }

    // ----- security (certificate mode) -----

    /// Signs a message this node originates (§6.3.4); in the insecure test mode only names
    /// the sender.
    fn seal(&self, m: &mut wire::Message) {
        match &self.sec {
            Some(sec) => {
                if sec.identity.sign_message(m).is_err() {
                    self.stats
                        .dropped
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
            None => attach::sign_as(m, self.origin.own),
        }
    }

    /// The verified signer of a received message; `Ok(None)` in the insecure test mode.
    fn verify_message(&mut self, m: &wire::Message) -> Result<Option<NodeId>, String> {
        let Some(sec) = self.sec.as_mut() else {
            return Ok(None);
        };
        let cert = sec.certs.verify_message(m).map_err(|e| {
            self.stats
                .bad_signatures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            format!("message signature: {e}")
        })?;
        if !sec.admission.admits(&cert) {
            return Err(format!("node {} is not admitted", cert.node_id));
        }
        Ok(Some(cert.node_id))
    }

    /// Certificate-mode checks of a message for the Chord node, signed by `signer`: it speaks
    /// for itself (the sender the via list names, the node a Join or Leave names), its stored
    /// values are signed by their dictionary key's node (USER-NODE-MATCH), and values in an
    /// answer to our Fetch that do not verify are dropped (never served, §7.1).
    fn check_chord(
        &mut self,
        wire_message: &wire::Message,
        m: &mut crate::overlay::chord::Message,
        signer: NodeId,
    ) -> Result<(), String> {
        use crate::overlay::chord::message::{Request, Response};
        if m.sender != signer {
            return Err(format!(
                "sent in the name of {} but signed by {signer}",
                m.sender
            ));
        }
        let carried = &wire_message.security.certificates;
        match &mut m.body {
            ChordBody::Request(Request::Join { joining_peer_id }) if *joining_peer_id != signer => {
                Err("a Join must come from the joining node".to_owned())
            }
            ChordBody::Request(Request::Leave {
                leaving_peer_id, ..
            }) if *leaving_peer_id != signer => {
                Err("a Leave must come from the leaving node".to_owned())
            }
            ChordBody::Request(Request::StoreBatch(reqs)) => {
                let checked = reqs
                    .iter()
                    .try_for_each(|req| self.check_store(req, signer, carried));
                if checked.is_err() {
                    self.stats
                        .forbidden_stores
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                checked
            }
            ChordBody::Request(Request::Store(req)) => {
                let checked = self.check_store(req, signer, carried);
                if checked.is_err() {
                    self.stats
                        .forbidden_stores
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                checked
            }
            ChordBody::Response(Response::Fetch(ans))
                if m.destinations.len() == 1
                    && m.destinations.first()
                        == Some(&crate::overlay::chord::Destination::Node(self.origin.own)) =>
            {
                if let Some(resource) = self.fetches.remove(&m.transaction_id) {
                    self.filter_fetched(&resource, ans, carried);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Why a Store from `signer` is refused, if it is: every value verifies against its
    /// signer's certificate, the signer is admitted, its dictionary key is the signer's
    /// Node-ID, and an original store (replica number 0) holds only the requester's values.
    fn check_store(
        &mut self,
        req: &wire::StoreReq,
        signer: NodeId,
        carried: &[wire::GenericCertificate],
    ) -> Result<(), String> {
        let Some(sec) = self.sec.as_mut() else {
            return Ok(());
        };
        for kd in &req.kind_data {
            for v in &kd.values {
                let cert = sec
                    .certs
                    .verify_stored(&req.resource, kd.kind, v, carried)
                    .map_err(|e| {
                        self.stats
                            .bad_signatures
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        format!("stored value signature: {e}")
                    })?;
                value_policy(&cert, v, &sec.admission)?;
                if req.replica_number == 0 && cert.node_id != signer {
                    return Err("an original Store carries only the requester's values".to_owned());
                }
            }
        }
        Ok(())
    }

    /// Drops the values of a FetchAns for `resource` that do not verify or break the access
    /// policy; synthetic "nothing here" values (§7.4.2.2) stay.
    fn filter_fetched(
        &mut self,
        resource: &wire::ResourceId,
        ans: &mut wire::FetchAns,
        carried: &[wire::GenericCertificate],
    ) {
        let Some(sec) = self.sec.as_mut() else {
            return;
        };
        let mut dropped = 0u64;
        for kr in &mut ans.kind_responses {
            let kind = kr.kind;
            kr.values.retain(|v| {
                if v.signature.is_placeholder() && v.storage_time == 0 && !value_exists(v) {
                    return true;
                }
                let ok = sec
                    .certs
                    .verify_stored(resource, kind, v, carried)
                    .ok()
                    .is_some_and(|cert| value_policy(&cert, v, &sec.admission).is_ok());
                if !ok {
                    dropped += 1;
                }
                ok
            });
        }
        if dropped > 0 {
            self.stats
                .bad_signatures
                .fetch_add(dropped, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Adds to a Store or FetchAns of ours the certificates of the values' signers (§6.3.4:
    /// the block carries every certificate needed to verify the message's signatures).
    fn add_value_certs(&self, m: &mut wire::Message) {
        let Some(sec) = &self.sec else {
            return;
        };
        if !matches!(
            m.contents.code,
            MessageCode::StoreReq | MessageCode::FetchAns | MessageCode::ExpBReq
        ) {
            return;
        }
        let body = match m.contents.decode_body(&self.kinds) {
            Ok(b) => b,
            Err(_) => return,
        };
        let batch = match &body {
            Body::ExpBReq(b) => {
                crate::overlay::chord::node::batch::decode_store_batch(b, &self.kinds)
                    .unwrap_or_default()
            }
            _ => Vec::new(),
        };
        let identities: Vec<&wire::SignerIdentity> = match &body {
            Body::StoreReq(r) => r
                .kind_data
                .iter()
                .flat_map(|k| k.values.iter().map(|v| &v.signature.identity))
                .collect(),
            Body::ExpBReq(_) => batch
                .iter()
                .flat_map(|r| r.kind_data.iter())
                .flat_map(|k| k.values.iter().map(|v| &v.signature.identity))
                .collect(),
            Body::FetchAns(a) => a
                .kind_responses
                .iter()
                .flat_map(|k| k.values.iter().map(|v| &v.signature.identity))
                .collect(),
            _ => return,
        };
        for id in identities {
            let wire::SignerIdentity::CertHash {
                certificate_hash, ..
            } = id
            else {
                continue;
            };
            if certificate_hash.as_slice() == sec.identity.cert_hash() {
                continue;
            }
            if let Some(c) = sec.certs.by_hash(certificate_hash) {
                if !m
                    .security
                    .certificates
                    .iter()
                    .any(|g| g.certificate == c.der)
                {
                    m.security.certificates.push(wire::GenericCertificate {
                        cert_type: crate::overlay::security::CERT_X509,
                        certificate: c.der.clone(),
                    });
                }
            }
        }
    }

    // ----- configuration updates (RFC 6940 §6.5.4, §11.1) -----

    /// Adds the §13.4 shared-secret proof to a link hello (or its answer) of ours.
    fn add_proof(&self, hello: &mut wire::Message) {
        let Some(sec) = &self.sec else {
            return;
        };
        if let Some(secret) = &sec.shared_secret {
            let proof =
                attach::shared_secret_proof(secret, &sec.instance_name, &sec.identity.cert_hash());
            if attach::add_shared_secret_proof(hello, proof).is_err() {
                self.stats.error(ErrorCode::InvalidMessage);
            }
        }
    }

    /// Reads `overlay.configuration_document` at start: a document signed by a configured
    /// signer and not older than `configured` replaces the configured lists.
    fn load_document(&mut self, configured: u16) -> anyhow::Result<()> {
        let Some(path) = self.sec.as_ref().and_then(|s| s.document_path.clone()) else {
            return Ok(());
        };
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => anyhow::bail!("overlay.configuration_document {}: {e}", path.display()),
        };
        // The file's own sequence counts as newer when it equals the configured one.
        self.origin.configuration_sequence = configured.wrapping_sub(1);
        let outcome = self.accept_document(bytes, None);
        match outcome {
            Ok(seq) => {
                tracing::info!(sequence = seq, path = %path.display(), "overlay configuration document loaded");
                Ok(())
            }
            Err((ErrorCode::ConfigTooOld, why)) => {
                self.origin.configuration_sequence = configured;
                tracing::warn!(path = %path.display(), "overlay configuration document ignored: {why}");
                Ok(())
            }
            Err((_, why)) => {
                anyhow::bail!("overlay.configuration_document {}: {why}", path.display())
            }
        }
    }

    /// A ConfigUpdateReq from a neighbour: a `config` document is checked and applied
    /// ([`Self::accept_document`]) and answered ConfigUpdateAns, or the error; `kind` updates
    /// are refused (this overlay has no kind signers, §6.5.4.2).
    fn on_config_update(&mut self, token: Token, peer: Option<NodeId>, message: &wire::Message) {
        let outcome = match message.contents.decode_body(&wire::NoKinds) {
            Ok(Body::ConfigUpdateReq(wire::ConfigUpdateReq::Config(document))) => {
                self.accept_document(document, peer).map(|_| ())
            }
            Ok(Body::ConfigUpdateReq(wire::ConfigUpdateReq::Kinds(_))) => Err((
                ErrorCode::Forbidden,
                "kind updates need a kind-signer; this overlay has none".to_owned(),
            )),
            _ => Err((
                ErrorCode::InvalidMessage,
                "unknown configuration update type".to_owned(),
            )),
        };
        match outcome {
            Ok(()) => {
                let mut req = message.header.clone();
                if let Some(hop) = peer {
                    req.via_list.push(Destination::Node(hop));
                }
                if let Ok(mut ans) =
                    wire::Message::response(&req, self.origin.ttl, &Body::ConfigUpdateAns)
                {
                    ans.header.configuration_sequence = self.origin.configuration_sequence;
                    self.seal(&mut ans);
                    self.queue_wire(token, &ans);
                }
            }
            Err((code, why)) => {
                self.stats.error(code);
                tracing::debug!("ConfigUpdate refused: {why}");
                self.answer_error(token, peer, &message.header, code, &why);
                if code == ErrorCode::ConfigTooOld {
                    self.push_document(token, peer);
                }
            }
        }
    }

    /// Checks a signed configuration document (well-formed, this overlay's, signed by a
    /// current configuration signer, sequence newer than ours) and applies it at once: the
    /// sequence, the admission and bad-node lists, the signers, the shared secret; links to
    /// nodes no longer admitted are closed; then it is passed on to every other neighbour and
    /// kept in `overlay.configuration_document`. `from` is the neighbour that sent it.
    fn accept_document(&mut self, bytes: Vec<u8>, from: Option<NodeId>) -> Result<u16, Refusal> {
        let ours = self.origin.configuration_sequence;
        let Some(sec) = self.sec.as_mut() else {
            return Err((
                ErrorCode::Forbidden,
                "configuration updates need overlay.security = \"certificate\"".to_owned(),
            ));
        };
        let signed = match config_doc::parse_signed(&bytes, &mut sec.certs) {
            Ok(s) => s,
            Err(DocumentError::Malformed(why)) => return Err((ErrorCode::InvalidMessage, why)),
            Err(e @ DocumentError::Signature(_)) => {
                self.stats
                    .bad_signatures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Err((ErrorCode::Forbidden, e.to_string()));
            }
        };
        let doc = signed.document;
        if doc.instance_name != sec.instance_name {
            return Err((
                ErrorCode::Forbidden,
                format!("document for overlay \"{}\"", doc.instance_name),
            ));
        }
        if !sec.signers.contains(&signed.signer) {
            return Err((
                ErrorCode::Forbidden,
                format!("{} is not a configuration signer", signed.signer),
            ));
        }
        if !config_doc::is_newer(doc.sequence, ours) {
            return Err((
                ErrorCode::ConfigTooOld,
                format!("sequence {} is not newer than {ours}", doc.sequence),
            ));
        }
        let lists = doc.lists().map_err(|e| (ErrorCode::InvalidMessage, e))?;
        sec.admission.replace(lists);
        if !doc.signers.is_empty() {
            sec.signers = doc.signers.clone();
        }
        sec.shared_secret = doc.shared_secret.as_ref().map(|s| s.as_bytes().to_vec());
        let bytes = Arc::new(bytes);
        sec.document = Some(bytes.clone());
        sec.pushed.clear();
        if let Some(path) = &sec.document_path {
            if let Err(e) = write_private(path, &bytes) {
                tracing::warn!(path = %path.display(), "overlay configuration document not saved: {e}");
            }
        }
        self.origin.configuration_sequence = doc.sequence;
        tracing::info!(
            sequence = doc.sequence,
            signer = %signed.signer,
            "overlay configuration updated"
        );
        self.enforce_admission();
        // Passed on to every other neighbour (§6.5.4).
        let neighbours: Vec<(NodeId, Token)> = self
            .by_node
            .iter()
            .filter(|(n, _)| Some(**n) != from)
            .map(|(n, t)| (*n, *t))
            .collect();
        for (n, t) in neighbours {
            self.push_document(t, Some(n));
        }
        Ok(doc.sequence)
    }

    /// Closes every link whose certificate the admission lists no longer admit (the Chord node
    /// learns `LinkDown` and drops them from its table; a new link to them fails its TLS
    /// handshake).
    fn enforce_admission(&mut self) {
        let Some(sec) = self.sec.as_mut() else {
            return;
        };
        let mut refused = Vec::new();
        for (t, l) in &self.links {
            let Some(der) = l
                .tls
                .as_ref()
                .and_then(|c| c.peer_certificates()?.first().map(|c| c.as_ref().to_vec()))
            else {
                continue;
            };
            let admitted = sec
                .certs
                .get_or_parse(&der)
                .is_ok_and(|c| sec.admission.admits(&c));
            if !admitted {
                refused.push(*t);
            }
        }
        for t in refused {
            self.stats
                .links_refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.fail_link(t, "no longer admitted by the overlay configuration");
        }
    }

    /// Sends the configuration document in force to the neighbour on `token` in a
    /// ConfigUpdateReq (configuration sequence 65535, accepted whatever the receiver's,
    /// §6.3.2.1), once per link and sequence.
    fn push_document(&mut self, token: Token, peer: Option<NodeId>) {
        let seq = self.origin.configuration_sequence;
        let Some(sec) = self.sec.as_mut() else {
            return;
        };
        let Some(document) = sec.document.clone() else {
            return;
        };
        if sec.pushed.get(&token) == Some(&seq) {
            return;
        }
        sec.pushed.insert(token, seq);
        let destination = peer.unwrap_or(NodeId::WILDCARD);
        let header = wire::ForwardingHeader::new_request(
            self.origin.overlay,
            u16::MAX,
            self.origin.ttl,
            wire::TransactionId(self.rng.gen::<u64>()),
            vec![Destination::Node(destination)],
        );
        let body = Body::ConfigUpdateReq(wire::ConfigUpdateReq::Config(document.to_vec()));
        match wire::Message::new(header, &body) {
            Ok(mut m) => {
                self.seal(&mut m);
                self.queue_wire(token, &m);
            }
            Err(_) => self.stats.error(ErrorCode::InvalidMessage),
        }
    }

    fn status(&self) -> serde_json::Value {
        let table = self.node.table();
        let ids = |v: &[NodeId]| -> Vec<String> { v.iter().map(|n| n.to_string()).collect() };
        let mut link_peers: Vec<String> = self.by_node.keys().map(|n| n.to_string()).collect();
        link_peers.sort();
        serde_json::json!({
            "running": true,
            "node_id": self.origin.own.to_string(),
            "listen": self.listen_addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "advertised": self.origin.advertised.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "joined": self.node.is_joined(),
            "predecessors": ids(&table.predecessors),
            "successors": ids(&table.successors),
            "fingers": ids(&table.finger_list()),
            "stored_resources": self.node.storage().resource_count(),
            "pending_transactions": self.node.pending_count(),
            "links": self.links.len(),
            "link_details": self.links.values().map(|l| serde_json::json!({
                "peer": l.peer.map(|p| p.to_string()),
                "addr": l.addr.to_string(),
                "outbound": l.outbound,
                "rto_ms": l.rto_ms(),
                "unacked_frames": l.unacked_count(),
                "queued_bytes": l.queued_bytes(),
            })).collect::<Vec<_>>(),
            "link_peers": link_peers,
            "known_addresses": self.node.known_addresses(),
            "configuration_sequence": self.origin.configuration_sequence,
        })
    }
}

/// Writes `bytes` to `path` with mode 0600 through a temporary file and a rename, so a
/// reader never sees half a document.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// True when a stored value says it exists.
fn value_exists(v: &wire::StoredData) -> bool {
    match &v.value {
        wire::StoredDataValue::Single(d) => d.exists,
        wire::StoredDataValue::Array { value, .. } => value.exists,
        wire::StoredDataValue::Dictionary { value, .. } => value.exists,
    }
}

/// The access policy of the tracker kinds (protocols.md §3, USER-NODE-MATCH style): dictionary
/// values whose key begins with the signer's Node-ID, written by an admitted node.
fn value_policy(
    cert: &crate::overlay::security::PeerCert,
    v: &wire::StoredData,
    admission: &Admission,
) -> Result<(), String> {
    if !admission.admits(cert) {
        return Err(format!("value signer {} is not admitted", cert.node_id));
    }
    match &v.value {
        // The key begins with the signer's Node-ID: the Node-ID itself, or the Node-ID and a
        // part number (a CONTENT-REGISTRATION stored in parts, `federation::value`).
        wire::StoredDataValue::Dictionary { key, .. } if key.starts_with(&cert.node_id.0) => Ok(()),
        wire::StoredDataValue::Dictionary { .. } => {
            Err("dictionary key is not the signer's Node-ID".to_owned())
        }
        _ => Err("only dictionary values keyed by the signer's Node-ID may be stored".to_owned()),
    }
}
