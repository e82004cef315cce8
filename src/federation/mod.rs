//! One logical tracker over many nodes: the tracker usage of the RELOAD overlay (protocols.md
//! §3, DESIGN.md "The overlay").
//!
//! The node a peer talks to is its *connection tracker*. It answers the peer at once from its
//! engine and records the accepted change in its [`LocalCopy`] (hooked in at the boundary
//! between server and engine: a request and its outcome, nothing inside the engine's tables).
//! The driver thread ([`driver`]) flushes changes every `overlay.flush_interval_ms`: one Store
//! per changed swarm (more only when a registration needs several parts) of this node's
//! CONTENT-REGISTRATION entry at the *swarm tracker*, the node responsible for
//! `hash(swarm id)`, and the PEER-STATUS entry of each peer new here (or gone) at the node
//! responsible for `hash(peer id)`. PEER-STATUS keeps one resource per peer (lookups go by peer
//! id), so a flush hands its entries to the overlay as Store batches, which go as one message
//! per responsible node and one replica batch per successor (`overlay::chord::node::batch`)
//! instead of one signed Store and two replica Stores per peer. At most
//! `overlay.flush_window` Stores are in flight; changes beyond it stay marked, coalescing to
//! each swarm's and peer's newest state, and go out as answers come back. A failed Store (or
//! a refused entry of a batch) leaves its swarm or peer marked, so a later flush writes the
//! newest state, never an older one.
//!
//! Lookups ([`Federation::find_plan`], [`Federation::status_plan`]) never block a worker: they
//! answer at once from the local copy or a fresh cached Fetch, or say [`Lookup::Wait`] after
//! asking the driver for a Fetch; the worker then leaves the request unconsumed (pipelined
//! answers keep their order) and is woken when the Fetch completes. A Fetch that does not
//! complete within `overlay.fetch_timeout_ms` gives [`Lookup::Local`] and counts a timeout.

pub mod driver;
pub mod local;
pub mod registrar;
pub mod value;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crossbeam::channel::{self, Receiver, Sender};
use parking_lot::Mutex;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::engine::{ChunkRange, PeerId, PeerInfo, PeerMode, Request, Response, SwarmId, Time};
use crate::overlay::chord::NodeId;
use crate::runtime::WakeHandle;

pub use local::LocalCopy;
use value::{LiveStatus, PeerListData};

type Hasher = foldhash::fast::RandomState;

/// Most entries of each lookup cache; beyond it a lookup is answered locally.
const MAX_CACHE_ENTRIES: usize = 65_536;

/// Tunables of the tracker usage (from `[overlay]` and the engine's timers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FederationConfig {
    /// A FIND is answered locally when the local copy holds at least this many peers of the
    /// swarm (`overlay.local_find_min`).
    pub local_find_min: usize,
    /// Period of the flush of local changes, ms (`overlay.flush_interval_ms`).
    pub flush_interval_ms: u64,
    /// Most swarms stored per flush; the rest wait for the next (`overlay.flush_max_swarms`).
    pub flush_max_swarms: usize,
    /// Most PEER-STATUS entries stored per flush (`overlay.flush_max_peers`).
    pub flush_max_peers: usize,
    /// Most Stores in flight at once (`overlay.flush_window`): changes beyond it stay marked
    /// (coalescing to their newest state) and go out as earlier Stores are answered.
    pub flush_window: usize,
    /// How long a fetched peer list or peer status is reused, ms (`overlay.fetch_cache_ms`).
    pub fetch_cache_ms: u64,
    /// How long a waiting answer waits for the overlay, ms (`overlay.fetch_timeout_ms`).
    pub fetch_timeout_ms: u64,
    /// Lifetime of stored values, seconds; refreshed at half of it.
    pub lifetime_secs: u32,
    /// Largest CONTENT-REGISTRATION part, bytes (`overlay.registration_part_bytes`).
    pub part_bytes: usize,
    /// The engine's track timer, ms: local peers expire after it.
    pub track_ms: u64,
    /// Largest overlay message, bytes (`overlay.max_message_size`): a swarm whose whole
    /// dictionary does not fit one Fetch answer is read as a Stat of its keys and Fetches of
    /// as many keys as fit this size each (see [`driver`]).
    pub max_message_bytes: usize,
}

/// The outcome of a lookup.
#[derive(Clone, Debug, PartialEq)]
pub enum Lookup<T> {
    /// Answer from the local copy alone.
    Local,
    /// Answer from the local copy merged with this.
    Remote(T),
    /// The overlay was asked; keep the request and try again when woken.
    Wait,
}

/// A cached lookup.
#[derive(Clone, Debug)]
enum Cached<T> {
    Pending { since: Time },
    Ready { value: T, at: Time },
    Failed { at: Time },
}

/// What the workers ask of the driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    FetchSwarm(SwarmId),
    FetchStatus(PeerId),
}

/// Fetched peer lists by swarm.
type SwarmCache = HashMap<SwarmId, Cached<Arc<Vec<PeerListData>>>, Hasher>;

/// A remote peer's status: its connection tracker and what that node answered.
pub type RemoteStatus = Option<(NodeId, LiveStatus)>;

/// Counters of the tracker usage (`/metrics`).
#[derive(Debug, Default)]
pub struct FederationStats {
    pub finds_local: AtomicU64,
    pub finds_remote: AtomicU64,
    pub finds_timeout: AtomicU64,
    pub cache_hits: AtomicU64,
    pub fetches: AtomicU64,
    pub fetch_failures: AtomicU64,
    /// Swarm lookups too big for one Fetch answer, read as a Stat and Fetches by key groups.
    pub split_fetches: AtomicU64,
    pub stores: AtomicU64,
    /// Values carried by those Stores (values per Store = this / stores).
    pub stored_values: AtomicU64,
    pub store_failures: AtomicU64,
    /// Stores in flight at the driver's last poll (a gauge; at most `flush_window`).
    pub stores_in_flight: AtomicU64,
    pub flushes: AtomicU64,
    /// Flushes whose every Store was answered, and their latency from the flush to the last
    /// answer, ms (sum and largest).
    pub flushes_completed: AtomicU64,
    pub flush_latency_ms_sum: AtomicU64,
    pub flush_latency_ms_max: AtomicU64,
    /// Overlay requests of the driver that failed with Error_Request_Timeout (the overlay's
    /// retransmissions ran out, or no answer within four fetch timeouts or flush intervals).
    pub overlay_request_timeouts: AtomicU64,
    /// Flushes put off because the Stores of earlier ones were still in flight.
    pub flushes_deferred: AtomicU64,
    /// Swarms and peers written, summed over flushes (batch size = this / flushes).
    pub flushed_entries: AtomicU64,
    /// Store round trips, ms, summed; and the largest.
    pub store_latency_ms_sum: AtomicU64,
    pub store_latency_ms_max: AtomicU64,
    pub status_remote: AtomicU64,
    pub status_timeout: AtomicU64,
    pub live_status_served: AtomicU64,
}

/// The tracker usage's state shared by the workers, the driver and the overlay thread.
pub struct Federation {
    /// This node's Node-ID as configured; replaced by the overlay's own once it runs (an
    /// overlay on port 0 derives its id from the bound address).
    configured_id: NodeId,
    own: OnceLock<NodeId>,
    config: FederationConfig,
    local: Mutex<LocalCopy>,
    swarms: Mutex<SwarmCache>,
    statuses: Mutex<HashMap<PeerId, Cached<Arc<RemoteStatus>>, Hasher>>,
    commands: Sender<Command>,
    receiver: Receiver<Command>,
    wake: OnceLock<WakeHandle>,
    pub stats: FederationStats,
}

impl Federation {
    pub fn new(own: NodeId, config: FederationConfig) -> Self {
        let (commands, receiver) = channel::bounded(4096);
        Federation {
            configured_id: own,
            own: OnceLock::new(),
            local: Mutex::new(LocalCopy::new(config.track_ms)),
            config,
            swarms: Mutex::new(HashMap::default()),
            statuses: Mutex::new(HashMap::default()),
            commands,
            receiver,
            wake: OnceLock::new(),
            stats: FederationStats::default(),
        }
    }

    pub fn node_id(&self) -> NodeId {
        self.own.get().copied().unwrap_or(self.configured_id)
    }

    /// Sets the Node-ID the running overlay uses.
    pub fn set_node_id(&self, id: NodeId) {
        let _ = self.own.set(id);
    }

    pub fn config(&self) -> &FederationConfig {
        &self.config
    }

    /// Sets how the driver wakes the workers when a lookup completes.
    pub fn set_wake(&self, wake: WakeHandle) {
        let _ = self.wake.set(wake);
    }

    fn wake_workers(&self) {
        if let Some(w) = self.wake.get() {
            w.wake();
        }
    }

    /// Records what the engine accepted (see [`LocalCopy::record`]).
    pub fn record(&self, request: &Request, response: &Response, now: Time) {
        if matches!(response, Response::Ok(_)) {
            self.local.lock().record(request, response, now);
        }
    }

    /// The local copy, for the driver and status.
    pub fn local(&self) -> parking_lot::MutexGuard<'_, LocalCopy> {
        self.local.lock()
    }

    /// How to answer a FIND (or a BitTorrent announce's peer list) from `requester` for
    /// `swarm` at `now`: locally when the local copy holds at least `local_find_min` other
    /// peers of the swarm. `count` says whether the answer is final (counted in the metrics)
    /// or a look ahead.
    pub fn find_plan(
        &self,
        swarm: &SwarmId,
        requester: &PeerId,
        now: Time,
        count: bool,
    ) -> Lookup<Arc<Vec<PeerListData>>> {
        if self.local.lock().count_others(swarm, requester) >= self.config.local_find_min {
            if count {
                self.stats.finds_local.fetch_add(1, Ordering::Relaxed);
            }
            return Lookup::Local;
        }
        let plan = self.cached(&self.swarms, *swarm, Command::FetchSwarm(*swarm), now);
        if !count {
            return plan;
        }
        match &plan {
            Lookup::Local => {
                self.stats.finds_timeout.fetch_add(1, Ordering::Relaxed);
            }
            Lookup::Remote(_) => {
                self.stats.finds_remote.fetch_add(1, Ordering::Relaxed);
            }
            Lookup::Wait => {}
        }
        plan
    }

    /// How to answer a STAT_QUERY for `peer`, which is not registered here.
    pub fn status_plan(&self, peer: &PeerId, now: Time) -> Lookup<Arc<RemoteStatus>> {
        let plan = self.cached(&self.statuses, *peer, Command::FetchStatus(*peer), now);
        match &plan {
            Lookup::Local => {
                self.stats.status_timeout.fetch_add(1, Ordering::Relaxed);
            }
            Lookup::Remote(_) => {
                self.stats.status_remote.fetch_add(1, Ordering::Relaxed);
            }
            Lookup::Wait => {}
        }
        plan
    }

    fn cached<K: std::hash::Hash + Eq + Copy, T: Clone>(
        &self,
        map: &Mutex<HashMap<K, Cached<T>, Hasher>>,
        key: K,
        command: Command,
        now: Time,
    ) -> Lookup<T> {
        let mut map = map.lock();
        let fresh = |at: Time| now.saturating_sub(at) < self.config.fetch_cache_ms;
        match map.get(&key) {
            Some(Cached::Ready { value, at }) if fresh(*at) => {
                self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                return Lookup::Remote(value.clone());
            }
            Some(Cached::Failed { at }) if fresh(*at) => return Lookup::Local,
            Some(Cached::Pending { since }) => {
                return if now.saturating_sub(*since) < self.config.fetch_timeout_ms {
                    Lookup::Wait
                } else {
                    Lookup::Local
                };
            }
            _ => {}
        }
        if map.len() >= MAX_CACHE_ENTRIES {
            map.retain(|_, c| match c {
                Cached::Pending { since } => {
                    now.saturating_sub(*since) < 4 * self.config.fetch_timeout_ms
                }
                Cached::Ready { at, .. } | Cached::Failed { at } => fresh(*at),
            });
            if map.len() >= MAX_CACHE_ENTRIES {
                return Lookup::Local;
            }
        }
        if self.commands.try_send(command).is_err() {
            return Lookup::Local;
        }
        map.insert(key, Cached::Pending { since: now });
        Lookup::Wait
    }

    /// The driver's side: the lookups the workers asked for.
    pub fn take_command(&self) -> Option<Command> {
        self.receiver.try_recv().ok()
    }

    /// The driver's side: waits up to `timeout` for a command.
    pub fn wait_command(&self, timeout: std::time::Duration) -> Option<Command> {
        self.receiver.recv_timeout(timeout).ok()
    }

    /// The driver's side: a swarm Fetch completed (`None`: it failed).
    pub fn swarm_fetched(&self, swarm: SwarmId, peers: Option<Vec<PeerListData>>, now: Time) {
        let entry = match peers {
            Some(p) => Cached::Ready {
                value: Arc::new(p),
                at: now,
            },
            None => Cached::Failed { at: now },
        };
        self.swarms.lock().insert(swarm, entry);
        self.wake_workers();
    }

    /// The driver's side: a status lookup completed (`None`: it failed).
    pub fn status_fetched(&self, peer: PeerId, status: Option<RemoteStatus>, now: Time) {
        let entry = match status {
            Some(s) => Cached::Ready {
                value: Arc::new(s),
                at: now,
            },
            None => Cached::Failed { at: now },
        };
        self.statuses.lock().insert(peer, entry);
        self.wake_workers();
    }

    /// The answer to a routed live-status request (exp_a, body = peer id) from another node.
    pub fn answer_live_status(&self, body: &[u8], now: Time) -> Vec<u8> {
        self.stats
            .live_status_served
            .fetch_add(1, Ordering::Relaxed);
        let status = PeerId::new(body)
            .ok()
            .and_then(|p| self.local.lock().live_status(&p, now));
        value::encode_live_status(status.as_ref())
    }

    /// The `federation` member of `/status`; takes only the local copy's lock.
    pub fn status_json(&self) -> serde_json::Value {
        let (swarms, peers, pending) = {
            let l = self.local.lock();
            (l.swarm_count(), l.peer_count(), l.pending())
        };
        serde_json::json!({
            "local_swarms": swarms,
            "local_peers": peers,
            "pending_swarms": pending.0,
            "pending_peer_status": pending.1,
            "cached_swarms": self.swarms.lock().len(),
        })
    }

    /// Prometheus text of the counters.
    pub fn metrics_text(&self) -> String {
        let s = &self.stats;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::new();
        let _ = writeln!(out, "# TYPE ppsp_federation_finds_total counter");
        for (label, v) in [
            ("local", get(&s.finds_local)),
            ("remote", get(&s.finds_remote)),
            ("timeout", get(&s.finds_timeout)),
        ] {
            let _ = writeln!(out, "ppsp_federation_finds_total{{answer=\"{label}\"}} {v}");
        }
        let counters: [(&str, u64); 18] = [
            (
                "ppsp_federation_flushes_deferred_total",
                get(&s.flushes_deferred),
            ),
            ("ppsp_federation_split_fetches_total", get(&s.split_fetches)),
            ("ppsp_federation_cache_hits_total", get(&s.cache_hits)),
            ("ppsp_federation_fetches_total", get(&s.fetches)),
            (
                "ppsp_federation_fetch_failures_total",
                get(&s.fetch_failures),
            ),
            ("ppsp_federation_stores_total", get(&s.stores)),
            ("ppsp_federation_stored_values_total", get(&s.stored_values)),
            (
                "ppsp_federation_flushes_completed_total",
                get(&s.flushes_completed),
            ),
            (
                "ppsp_federation_flush_latency_ms_sum",
                get(&s.flush_latency_ms_sum),
            ),
            (
                "ppsp_federation_overlay_request_timeouts_total",
                get(&s.overlay_request_timeouts),
            ),
            (
                "ppsp_federation_store_failures_total",
                get(&s.store_failures),
            ),
            ("ppsp_federation_flushes_total", get(&s.flushes)),
            (
                "ppsp_federation_flushed_entries_total",
                get(&s.flushed_entries),
            ),
            (
                "ppsp_federation_store_latency_ms_sum",
                get(&s.store_latency_ms_sum),
            ),
            ("ppsp_federation_status_remote_total", get(&s.status_remote)),
            (
                "ppsp_federation_status_timeouts_total",
                get(&s.status_timeout),
            ),
            (
                "ppsp_federation_live_status_served_total",
                get(&s.live_status_served),
            ),
            (
                "ppsp_federation_overlay_timeouts_total",
                get(&s.finds_timeout) + get(&s.status_timeout),
            ),
        ];
        for (name, v) in counters {
            let _ = writeln!(out, "# TYPE {name} counter\n{name} {v}");
        }
        let pending = self.local.lock().pending();
        for (name, v) in [
            (
                "ppsp_federation_store_latency_ms_max",
                get(&s.store_latency_ms_max),
            ),
            (
                "ppsp_federation_flush_latency_ms_max",
                get(&s.flush_latency_ms_max),
            ),
            ("ppsp_federation_stores_in_flight", get(&s.stores_in_flight)),
            ("ppsp_federation_pending_swarms", pending.0 as u64),
            ("ppsp_federation_pending_peer_status", pending.1 as u64),
        ] {
            let _ = writeln!(out, "# TYPE {name} gauge\n{name} {v}");
        }
        out
    }
}

/// Whether a peer holding `have` holds every range of `wanted`.
fn holds(have: &[ChunkRange], wanted: &[ChunkRange]) -> bool {
    wanted.iter().all(|w| have.iter().any(|h| h.contains(w)))
}

/// Merges remote peers into a local peer list with single-node mode's selection rules: never
/// the requester, no peer twice, only peers holding `chunks` (when given), seeders first for a
/// leech requester, a uniform random sample within each group, at most `limit` peers.
pub fn merge_peers(
    list: &mut Vec<PeerInfo>,
    remote: &[PeerListData],
    requester: &PeerId,
    requester_mode: Option<PeerMode>,
    chunks: &[ChunkRange],
    limit: usize,
    seed: u64,
) {
    let mut seen: std::collections::HashSet<PeerId, Hasher> =
        list.iter().map(|p| p.peer_id()).collect();
    seen.insert(*requester);
    for p in remote {
        if seen.contains(&p.peer_id) || (!chunks.is_empty() && !holds(&p.chunks, chunks)) {
            continue;
        }
        seen.insert(p.peer_id);
        list.push(PeerInfo::new(p.peer_id, p.mode, &p.addrs));
    }
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    list.shuffle(&mut rng);
    if requester_mode != Some(PeerMode::Seeder) {
        // Stable: seeders first, each group still in random order.
        list.sort_by_key(|p| p.mode != PeerMode::Seeder);
    }
    list.truncate(limit);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The configuration the federation's unit tests share (the driver's too).
    pub(in crate::federation) fn config() -> FederationConfig {
        FederationConfig {
            local_find_min: 2,
            flush_interval_ms: 100,
            flush_max_swarms: 10,
            flush_max_peers: 10,
            flush_window: 20,
            fetch_cache_ms: 1000,
            fetch_timeout_ms: 500,
            lifetime_secs: 60,
            part_bytes: 4000,
            track_ms: 60_000,
            max_message_bytes: 5000,
        }
    }

    fn pl(id: &str, mode: PeerMode) -> PeerListData {
        PeerListData {
            peer_id: PeerId::new(id.as_bytes()).unwrap(),
            mode,
            addrs: smallvec::smallvec![],
            chunks: Vec::new(),
        }
    }

    #[test]
    fn a_lookup_waits_once_per_swarm_then_answers_from_the_cache_or_times_out() {
        let f = Federation::new(NodeId([1; 16]), config());
        let s = SwarmId::new(b"s").unwrap();
        let me = PeerId::new(b"me").unwrap();
        assert_eq!(f.find_plan(&s, &me, Time(0), true), Lookup::Wait);
        assert_eq!(f.find_plan(&s, &me, Time(10), true), Lookup::Wait);
        assert_eq!(f.take_command(), Some(Command::FetchSwarm(s)));
        assert_eq!(f.take_command(), None, "one Fetch for both");
        f.swarm_fetched(s, Some(vec![pl("a", PeerMode::Seeder)]), Time(20));
        assert!(matches!(f.find_plan(&s, &me, Time(30), true), Lookup::Remote(v) if v.len() == 1));
        assert_eq!(f.stats.cache_hits.load(Ordering::Relaxed), 1);
        // Stale after fetch_cache_ms: a new Fetch; no answer within the timeout: local.
        assert_eq!(f.find_plan(&s, &me, Time(1100), true), Lookup::Wait);
        assert_eq!(f.find_plan(&s, &me, Time(1700), true), Lookup::Local);
        assert_eq!(f.stats.finds_timeout.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn merge_never_lists_the_requester_twice_or_chunkless_peers_and_puts_seeders_first() {
        let me = PeerId::new(b"me").unwrap();
        let mut list = vec![PeerInfo::new(
            PeerId::new(b"l1").unwrap(),
            PeerMode::Leech,
            &[],
        )];
        let mut with_chunks = pl("r3", PeerMode::Leech);
        with_chunks.chunks = vec![ChunkRange::new(0, 100).unwrap()];
        let remote = vec![
            pl("me", PeerMode::Seeder),
            pl("l1", PeerMode::Seeder),
            pl("r1", PeerMode::Seeder),
            pl("r2", PeerMode::Leech),
            with_chunks,
        ];
        let mut all = list.clone();
        merge_peers(&mut all, &remote, &me, Some(PeerMode::Leech), &[], 10, 1);
        let ids: Vec<_> = all
            .iter()
            .map(|p| p.peer_id().as_bytes().to_vec())
            .collect();
        assert_eq!(all.len(), 4, "{ids:?}");
        assert_eq!(all[0].peer_id().as_bytes(), b"r1");
        assert!(!ids.contains(&b"me".to_vec()));
        merge_peers(
            &mut list,
            &remote,
            &me,
            None,
            &[ChunkRange::new(5, 6).unwrap()],
            10,
            1,
        );
        let ids: Vec<_> = list
            .iter()
            .map(|p| p.peer_id().as_bytes().to_vec())
            .collect();
        assert_eq!(ids.len(), 2, "{ids:?}");
        assert!(ids.contains(&b"r3".to_vec()));
    }
}
