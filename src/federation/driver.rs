//! The federation's driver: turns the local copy's changes into Stores every flush interval,
//! the workers' lookups into Fetches (and, for a peer's status, a request routed to its
//! connection tracker), and the overlay's outcomes back into the shared caches.
//!
//! Reading a big swarm (protocols.md §3): the Fetch of a swarm's whole CONTENT-REGISTRATION
//! dictionary is answered Error_Response_Too_Large (RFC 6940 §6.3.3.1) by the swarm tracker
//! when the answer would exceed `max_message_size` (each signed value also carries its
//! signature, and the answer the certificates of its signers). The driver then sends a Stat of
//! the dictionary (§7.4.3: every key with its value's length, no values) and Fetches the keys
//! in groups whose answers fit ([`super::registrar::stat_key_groups`]); the lookup completes
//! when every group has answered, with the peers of every part that arrived. The Stat answer
//! must itself fit one message: about `max_message_size / 66` parts, i.e. with the
//! `cluster-node` profile (262,144-byte messages, 200,000-byte parts) registrations of many
//! millions of peers, with the default 5,000-byte messages about 75 parts of 4,000 bytes.
//!
//! [`Driver`] is sans-IO (time in, overlay requests out, outcomes in), so the overlay
//! simulation can run it next to each Chord node; [`spawn`] runs it on a thread of its own
//! against the real overlay thread, never on a tracker worker.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::engine::{PeerId, SwarmId, Time};
use crate::overlay::chord::{Destination, LocalOutcome, LocalRequest, NodeId};
use crate::overlay::transport::OverlayHandle;

use super::registrar::{
    remote_peers, stat_key_groups, status_batches, status_fetch, status_trackers, swarm_fetch,
    swarm_fetch_keys, swarm_stat, swarm_stores, STATUS_STORE_BYTES,
};
use super::value::decode_live_status;
use super::{Command, Federation};
use crate::overlay::chord::ErrorCode;
use crate::overlay::storage::FetchAns;

/// Why an overlay request was made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// One Store of a swarm's registration, with the part count it establishes.
    StoreSwarm {
        swarm: SwarmId,
        parts: u16,
    },
    /// A batch of PEER-STATUS Stores, for these peers in order.
    StoreStatusBatch(Vec<PeerId>),
    FetchSwarm(SwarmId),
    /// The Stat of a swarm too big for one Fetch answer.
    StatSwarm(SwarmId),
    /// One group of keys of a swarm too big for one Fetch answer.
    FetchSwarmKeys(SwarmId),
    FetchStatus(PeerId),
    /// The routed live-status request to a connection tracker (remaining candidates after it).
    AskTracker {
        peer: PeerId,
        tracker: NodeId,
        others: Vec<NodeId>,
    },
}

/// A request to hand to the overlay.
#[derive(Clone, Debug, PartialEq)]
pub struct Outgoing {
    pub token: u64,
    pub purpose: Purpose,
    pub request: LocalRequest,
}

/// The sans-IO driver of one node.
#[derive(Debug)]
pub struct Driver {
    next_flush: Time,
    next_refresh: Time,
    next_token: u64,
    /// Last storage time used (ms, wall clock): strictly increasing.
    last_storage_time: u64,
    /// Parts of each swarm's registration as last stored.
    stored_parts: HashMap<SwarmId, u16>,
    in_flight: std::collections::BTreeMap<u64, (Purpose, Time)>,
    /// Stores in flight (counted apart so the window check is O(1)).
    stores_in_flight: usize,
    /// Store tokens by the flush that sent them; each flush's start and its unanswered Stores
    /// (flush latency: from the flush to its last answer).
    store_flush: HashMap<u64, u64>,
    open_flushes: HashMap<u64, (Time, usize)>,
    next_flush_id: u64,
    /// Changes were left marked by the last flush (window or per-flush limits): keep flushing
    /// as Stores are answered instead of waiting for the next interval.
    backlog: bool,
    /// Swarms read by key groups: the groups still in flight and the values received.
    assembling: HashMap<SwarmId, Assembly>,
}

/// A swarm being read in key groups.
#[derive(Debug, Default)]
struct Assembly {
    remaining: usize,
    failed: usize,
    answer: FetchAns,
}

/// Most peers of one swarm kept from the overlay's registrations (all connection trackers
/// together); bounds a lookup's memory.
pub const MAX_REMOTE_PEERS: usize = 65_536;

impl Default for Driver {
    fn default() -> Self {
        Driver::new()
    }
}

impl Driver {
    pub fn new() -> Self {
        Driver {
            next_flush: Time(0),
            next_refresh: Time(0),
            next_token: 1,
            last_storage_time: 0,
            stored_parts: HashMap::new(),
            in_flight: std::collections::BTreeMap::new(),
            stores_in_flight: 0,
            store_flush: HashMap::new(),
            open_flushes: HashMap::new(),
            next_flush_id: 0,
            backlog: false,
            assembling: HashMap::new(),
        }
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    fn out(&mut self, purpose: Purpose, request: LocalRequest, now: Time) -> Outgoing {
        let token = self.next_token;
        self.next_token += 1;
        if is_store(&purpose) {
            self.stores_in_flight += 1;
        }
        self.in_flight.insert(token, (purpose.clone(), now));
        Outgoing {
            token,
            purpose,
            request,
        }
    }

    fn storage_time(&mut self, wall_ms: u64) -> u64 {
        self.last_storage_time = wall_ms.max(self.last_storage_time + 1);
        self.last_storage_time
    }

    /// Runs what is due at `now` (engine time, ms) with `wall_ms` the wall clock for storage
    /// times: the workers' lookups, expiry, and the flush when its interval has passed.
    pub fn poll(&mut self, fed: &Federation, now: Time, wall_ms: u64) -> Vec<Outgoing> {
        let mut out = Vec::new();
        while let Some(c) = fed.take_command() {
            match c {
                Command::FetchSwarm(s) => {
                    fed.stats.fetches.fetch_add(1, Ordering::Relaxed);
                    out.push(self.out(Purpose::FetchSwarm(s), swarm_fetch(&s), now));
                }
                Command::FetchStatus(p) => {
                    fed.stats.fetches.fetch_add(1, Ordering::Relaxed);
                    out.push(self.out(Purpose::FetchStatus(p), status_fetch(&p), now));
                }
            }
        }
        // Requests the overlay never answered count as failed, so no lookup waits for ever.
        let limit = 4 * fed
            .config()
            .fetch_timeout_ms
            .max(fed.config().flush_interval_ms);
        let stale: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, (_, at))| now.saturating_sub(*at) > limit)
            .map(|(t, _)| *t)
            .collect();
        for t in stale {
            out.extend(self.on_outcome(
                fed,
                t,
                LocalOutcome::Failed {
                    code: crate::overlay::chord::ErrorCode::RequestTimeout,
                    info: crate::overlay::chord::message::ErrorInfo::None,
                },
                now,
            ));
        }
        // Flow control: at most `flush_window` Stores in flight. A flush sends what fits;
        // the rest stays marked, coalescing to each swarm's and peer's newest state, and goes
        // out as soon as half the window is free again (not only at the next interval), so a
        // burst drains at the overlay's pace. Without the window a slow overlay receives a
        // flush's worth of Stores every interval, its queue grows, Fetches wait behind it past
        // `fetch_timeout_ms`, and Stores counted failed are sent again.
        let due = now >= self.next_flush;
        if due {
            self.next_flush = now.saturating_add_millis(fed.config().flush_interval_ms);
        }
        let window = fed.config().flush_window.max(1);
        let room = window.saturating_sub(self.stores_in_flight);
        if due && room == 0 {
            fed.stats.flushes_deferred.fetch_add(1, Ordering::Relaxed);
        } else if (due && room > 0) || (self.backlog && room >= window.div_ceil(2)) {
            out.extend(self.flush(fed, now, wall_ms, room, due));
        }
        fed.stats
            .stores_in_flight
            .store(self.stores_in_flight as u64, Ordering::Relaxed);
        out
    }

    /// Stores sent and not yet answered.
    pub fn stores_in_flight(&self) -> usize {
        self.stores_in_flight
    }

    /// Sends up to `room` Stores of the marked changes; `due` says the flush interval has
    /// passed (expiry and the periodic refresh run only then).
    fn flush(
        &mut self,
        fed: &Federation,
        now: Time,
        wall_ms: u64,
        room: usize,
        due: bool,
    ) -> Vec<Outgoing> {
        let cfg = fed.config().clone();
        let own = fed.node_id();
        let mut out = Vec::new();
        // PEER-STATUS entries per Store batch (one request in the window).
        let per_batch = (cfg
            .max_message_bytes
            .saturating_sub(crate::overlay::chord::node::ANSWER_HEADROOM_BYTES)
            / STATUS_STORE_BYTES)
            .clamp(1, crate::overlay::chord::node::MAX_BATCH_STORES);
        let (swarms, statuses, snapshots) = {
            let mut local = fed.local();
            if due {
                local.expire(now);
            }
            if due && now >= self.next_refresh {
                // Rewrite everything at half the values' lifetime so live registrations
                // never lapse at the storing nodes.
                self.next_refresh = now.saturating_add_millis(u64::from(cfg.lifetime_secs) * 500);
                for s in local.swarm_ids() {
                    local.mark_swarm(s);
                }
                for p in local.peer_ids() {
                    local.mark_status(p);
                }
            }
            // Swarms first (a registration may take several Stores, counted as one here), then
            // PEER-STATUS entries in the room left.
            let swarms = local.take_dirty_swarms(cfg.flush_max_swarms.min(room));
            let left = room.saturating_sub(swarms.len());
            let statuses =
                local.take_dirty_status(cfg.flush_max_peers.min(left.saturating_mul(per_batch)));
            let snapshots: Vec<_> = swarms.iter().map(|s| local.registration(s)).collect();
            let pending = local.pending();
            self.backlog = pending.0 + pending.1 > 0;
            (swarms, statuses, snapshots)
        };
        if swarms.is_empty() && statuses.is_empty() {
            return out;
        }
        fed.stats.flushes.fetch_add(1, Ordering::Relaxed);
        fed.stats
            .flushed_entries
            .fetch_add((swarms.len() + statuses.len()) as u64, Ordering::Relaxed);
        let flush_id = self.next_flush_id;
        self.next_flush_id += 1;
        for (swarm, peers) in swarms.into_iter().zip(snapshots) {
            let previous = self.stored_parts.get(&swarm).copied().unwrap_or(0);
            let time = self.storage_time(wall_ms);
            let (requests, parts) = swarm_stores(
                own,
                &swarm,
                &peers,
                previous,
                time,
                cfg.lifetime_secs,
                cfg.part_bytes,
            );
            if parts == 0 {
                self.stored_parts.remove(&swarm);
            } else {
                self.stored_parts.insert(swarm, parts.max(previous));
            }
            for r in requests {
                out.push(self.out(Purpose::StoreSwarm { swarm, parts }, r, now));
            }
        }
        // PEER-STATUS: one resource per peer (protocols.md §3), so the entries go in Store
        // batches that the overlay sends as one message per responsible node.
        let entries: Vec<(PeerId, bool, u64)> = statuses
            .into_iter()
            .map(|(p, present)| (p, present, self.storage_time(wall_ms)))
            .collect();
        let batches = status_batches(own, &entries, cfg.lifetime_secs, cfg.max_message_bytes);
        let mut peers = entries.iter().map(|e| e.0);
        for batch in batches {
            let ids: Vec<PeerId> = peers.by_ref().take(batch.len()).collect();
            out.push(self.out(
                Purpose::StoreStatusBatch(ids),
                LocalRequest::StoreBatch(batch),
                now,
            ));
        }
        for o in &out {
            fed.stats.stores.fetch_add(1, Ordering::Relaxed);
            fed.stats
                .stored_values
                .fetch_add(store_values(&o.request) as u64, Ordering::Relaxed);
            self.store_flush.insert(o.token, flush_id);
        }
        self.open_flushes.insert(flush_id, (now, out.len()));
        out
    }

    /// Counts the answer of Store `token` towards its flush; the flush's latency is recorded
    /// when its last Store is answered.
    fn store_answered(&mut self, fed: &Federation, token: u64, now: Time) {
        self.stores_in_flight = self.stores_in_flight.saturating_sub(1);
        let Some(id) = self.store_flush.remove(&token) else {
            return;
        };
        let Some((started, left)) = self.open_flushes.get_mut(&id) else {
            return;
        };
        *left = left.saturating_sub(1);
        if *left == 0 {
            let latency = now.saturating_sub(*started);
            self.open_flushes.remove(&id);
            let s = &fed.stats;
            s.flush_latency_ms_sum.fetch_add(latency, Ordering::Relaxed);
            s.flush_latency_ms_max.fetch_max(latency, Ordering::Relaxed);
            s.flushes_completed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Takes the outcome of request `token`; may start follow-up requests.
    pub fn on_outcome(
        &mut self,
        fed: &Federation,
        token: u64,
        outcome: LocalOutcome,
        now: Time,
    ) -> Vec<Outgoing> {
        let Some((purpose, started)) = self.in_flight.remove(&token) else {
            return Vec::new();
        };
        let latency = now.saturating_sub(started);
        if is_store(&purpose) {
            self.store_answered(fed, token, now);
        }
        if matches!(
            outcome,
            LocalOutcome::Failed {
                code: ErrorCode::RequestTimeout,
                ..
            }
        ) {
            fed.stats
                .overlay_request_timeouts
                .fetch_add(1, Ordering::Relaxed);
        }
        match purpose {
            Purpose::StoreSwarm { swarm, parts } => {
                fed.stats
                    .store_latency_ms_sum
                    .fetch_add(latency, Ordering::Relaxed);
                fed.stats
                    .store_latency_ms_max
                    .fetch_max(latency, Ordering::Relaxed);
                if matches!(outcome, LocalOutcome::Stored(_)) {
                    if parts > 0 {
                        // Shrinking succeeded: later flushes need not remove the old parts.
                        self.stored_parts.insert(swarm, parts);
                    }
                } else {
                    fed.stats.store_failures.fetch_add(1, Ordering::Relaxed);
                    // The next flush writes the newest state of the swarm.
                    fed.local().mark_swarm(swarm);
                }
                Vec::new()
            }
            Purpose::StoreStatusBatch(peers) => {
                // Each entry that failed is marked again: the next flush writes the peer's
                // newest state (present or removed), never an older one.
                let failed: Vec<PeerId> = match outcome {
                    LocalOutcome::StoredBatch(results) if results.len() == peers.len() => peers
                        .into_iter()
                        .zip(results)
                        .filter(|(_, r)| r.is_err())
                        .map(|(p, _)| p)
                        .collect(),
                    _ => peers,
                };
                if !failed.is_empty() {
                    fed.stats
                        .store_failures
                        .fetch_add(failed.len() as u64, Ordering::Relaxed);
                    let mut local = fed.local();
                    for p in failed {
                        local.mark_status(p);
                    }
                }
                Vec::new()
            }
            Purpose::FetchSwarm(swarm) => {
                match outcome {
                    LocalOutcome::Fetched(ans) => {
                        let peers = remote_peers(&ans, &swarm, fed.node_id(), MAX_REMOTE_PEERS);
                        fed.swarm_fetched(swarm, Some(peers), now);
                    }
                    LocalOutcome::Failed {
                        code: ErrorCode::ResponseTooLarge,
                        ..
                    } if !self.assembling.contains_key(&swarm) => {
                        // Too big for one answer: read its keys, then the values by groups.
                        fed.stats.split_fetches.fetch_add(1, Ordering::Relaxed);
                        return vec![self.out(Purpose::StatSwarm(swarm), swarm_stat(&swarm), now)];
                    }
                    _ => {
                        fed.stats.fetch_failures.fetch_add(1, Ordering::Relaxed);
                        fed.swarm_fetched(swarm, None, now);
                    }
                }
                Vec::new()
            }
            Purpose::StatSwarm(swarm) => {
                let groups = match outcome {
                    LocalOutcome::Stat(ans) => {
                        stat_key_groups(&ans, fed.node_id(), fed.config().max_message_bytes)
                    }
                    _ => {
                        fed.stats.fetch_failures.fetch_add(1, Ordering::Relaxed);
                        fed.swarm_fetched(swarm, None, now);
                        return Vec::new();
                    }
                };
                if groups.is_empty() {
                    fed.swarm_fetched(swarm, Some(Vec::new()), now);
                    return Vec::new();
                }
                self.assembling.insert(
                    swarm,
                    Assembly {
                        remaining: groups.len(),
                        ..Assembly::default()
                    },
                );
                groups
                    .into_iter()
                    .map(|keys| {
                        fed.stats.fetches.fetch_add(1, Ordering::Relaxed);
                        self.out(
                            Purpose::FetchSwarmKeys(swarm),
                            swarm_fetch_keys(&swarm, keys),
                            now,
                        )
                    })
                    .collect()
            }
            Purpose::FetchSwarmKeys(swarm) => {
                let Some(a) = self.assembling.get_mut(&swarm) else {
                    return Vec::new();
                };
                a.remaining = a.remaining.saturating_sub(1);
                match outcome {
                    LocalOutcome::Fetched(ans) => {
                        a.answer.kind_responses.extend(ans.kind_responses)
                    }
                    _ => {
                        a.failed += 1;
                        fed.stats.fetch_failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if a.remaining == 0 {
                    let a = self.assembling.remove(&swarm).unwrap_or_default();
                    let peers = remote_peers(&a.answer, &swarm, fed.node_id(), MAX_REMOTE_PEERS);
                    // Every part that arrived counts; only a lookup that got nothing failed.
                    let got = a.failed == 0 || !peers.is_empty();
                    fed.swarm_fetched(swarm, got.then_some(peers), now);
                }
                Vec::new()
            }
            Purpose::FetchStatus(peer) => match outcome {
                LocalOutcome::Fetched(ans) => {
                    let mut trackers = status_trackers(&ans);
                    trackers.retain(|n| *n != fed.node_id());
                    if trackers.is_empty() {
                        fed.status_fetched(peer, Some(None), now);
                        return Vec::new();
                    }
                    let tracker = trackers.remove(0);
                    vec![self.ask(peer, tracker, trackers, now)]
                }
                _ => {
                    fed.stats.fetch_failures.fetch_add(1, Ordering::Relaxed);
                    fed.status_fetched(peer, None, now);
                    Vec::new()
                }
            },
            Purpose::AskTracker {
                peer,
                tracker,
                mut others,
            } => {
                let answer = match outcome {
                    LocalOutcome::App(body) => decode_live_status(&body).ok(),
                    _ => None,
                };
                match answer {
                    Some(Some(status)) => {
                        fed.status_fetched(peer, Some(Some((tracker, status))), now);
                    }
                    _ if !others.is_empty() => {
                        let next = others.remove(0);
                        return vec![self.ask(peer, next, others, now)];
                    }
                    Some(None) => fed.status_fetched(peer, Some(None), now),
                    None => {
                        fed.stats.fetch_failures.fetch_add(1, Ordering::Relaxed);
                        fed.status_fetched(peer, None, now);
                    }
                }
                Vec::new()
            }
        }
    }

    fn ask(&mut self, peer: PeerId, tracker: NodeId, others: Vec<NodeId>, now: Time) -> Outgoing {
        let request = LocalRequest::App {
            destination: Destination::Node(tracker),
            body: peer.as_bytes().to_vec(),
        };
        self.out(
            Purpose::AskTracker {
                peer,
                tracker,
                others,
            },
            request,
            now,
        )
    }
}

fn is_store(p: &Purpose) -> bool {
    matches!(p, Purpose::StoreSwarm { .. } | Purpose::StoreStatusBatch(_))
}

/// Values a Store request (or Store batch) carries.
fn store_values(r: &LocalRequest) -> usize {
    let kinds = |k: &[crate::overlay::storage::StoreKindData]| -> usize {
        k.iter().map(|k| k.values.len()).sum()
    };
    match r {
        LocalRequest::Store { kind_data, .. } => kinds(kind_data),
        LocalRequest::StoreBatch(stores) => stores.iter().map(|s| kinds(&s.kind_data)).sum(),
        _ => 0,
    }
}

/// A running driver thread.
pub struct DriverThread {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl DriverThread {
    /// Stops the thread and waits for it.
    pub fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for DriverThread {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Runs [`Driver`] on its own thread against `overlay`; `now` gives the engine's time.
pub fn spawn(
    fed: Arc<Federation>,
    overlay: Arc<OverlayHandle>,
    now: impl Fn() -> Time + Send + 'static,
) -> std::io::Result<DriverThread> {
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let thread = std::thread::Builder::new()
        .name("federation".to_owned())
        .spawn(move || {
            let mut driver = Driver::new();
            let mut waiting: Vec<(u64, crossbeam::channel::Receiver<LocalOutcome>)> = Vec::new();
            while !stopping.load(Ordering::Acquire) {
                let t = now();
                let mut outgoing = driver.poll(&fed, t, wall_ms());
                let mut i = 0;
                while i < waiting.len() {
                    match waiting[i].1.try_recv() {
                        Ok(outcome) => {
                            let (token, _) = waiting.swap_remove(i);
                            outgoing.extend(driver.on_outcome(&fed, token, outcome, now()));
                        }
                        Err(crossbeam::channel::TryRecvError::Empty) => i += 1,
                        Err(crossbeam::channel::TryRecvError::Disconnected) => {
                            // The overlay dropped the request; the driver's own timeout
                            // fails it.
                            waiting.swap_remove(i);
                        }
                    }
                }
                for o in outgoing {
                    if let Ok(rx) = overlay.submit(o.request) {
                        waiting.push((o.token, rx));
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })?;
    Ok(DriverThread {
        stop,
        thread: Some(thread),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::federation::FederationConfig;
    use crate::overlay::storage::StoreAns;

    /// Every entry of Store (batch) `o` stored.
    fn ok(o: &Outgoing) -> LocalOutcome {
        match &o.request {
            LocalRequest::StoreBatch(s) => {
                LocalOutcome::StoredBatch(vec![Ok(StoreAns::default()); s.len()])
            }
            _ => LocalOutcome::Stored(StoreAns::default()),
        }
    }

    fn fed() -> Federation {
        Federation::new(
            NodeId::from_u128(7),
            FederationConfig {
                // One PEER-STATUS entry per Store batch, so the window counts entries.
                max_message_bytes: 1300,
                ..crate::federation::tests::config()
            },
        )
    }

    /// No new flush while a whole flush's worth of Stores is unanswered; the changes wait and
    /// go out once the overlay has caught up.
    #[test]
    fn flushes_wait_while_earlier_stores_are_in_flight() {
        let fed = fed();
        let mut d = Driver::new();
        for i in 0..50u32 {
            fed.local()
                .mark_status(PeerId::new(format!("p{i}").as_bytes()).unwrap());
        }
        let first = d.poll(&fed, Time(0), 1);
        assert_eq!(first.len(), 10);
        let second = d.poll(&fed, Time(100), 2);
        assert_eq!(second.len(), 10);
        assert_eq!(d.stores_in_flight(), 20);
        assert!(d.poll(&fed, Time(200), 3).is_empty(), "deferred");
        assert_eq!(fed.stats.flushes_deferred.load(Ordering::Relaxed), 1);
        for o in first.iter().chain(&second) {
            d.on_outcome(&fed, o.token, ok(o), Time(250));
        }
        assert_eq!(d.poll(&fed, Time(300), 4).len(), 10, "resumed");
    }

    /// A burst larger than the window drains as Stores are answered, before the next
    /// interval; a failed Store is sent again; the flush latency
    /// and the values per Store are counted.
    #[test]
    fn a_backlog_drains_within_the_window_and_a_failed_store_is_sent_again() {
        let fed = Federation::new(
            NodeId::from_u128(7),
            FederationConfig {
                flush_max_peers: 1000,
                flush_window: 8,
                ..fed().config().clone()
            },
        );
        let mut d = Driver::new();
        let peers: Vec<PeerId> = (0..20u32)
            .map(|i| PeerId::new(format!("p{i}").as_bytes()).unwrap())
            .collect();
        for p in &peers {
            fed.local().mark_status(*p);
        }
        let first = d.poll(&fed, Time(0), 1);
        assert_eq!(first.len(), 8, "the window bounds the flush");
        assert_eq!(fed.local().pending().1, 12);
        assert!(d.poll(&fed, Time(1), 2).is_empty(), "window full");
        // Half the window answered (one of them failed): the backlog goes on at once.
        for (i, o) in first[..4].iter().enumerate() {
            let outcome = if i == 0 {
                LocalOutcome::Failed {
                    code: ErrorCode::RequestTimeout,
                    info: crate::overlay::chord::message::ErrorInfo::None,
                }
            } else {
                ok(o)
            };
            d.on_outcome(&fed, o.token, outcome, Time(5));
        }
        assert_eq!(
            fed.stats.overlay_request_timeouts.load(Ordering::Relaxed),
            1
        );
        let second = d.poll(&fed, Time(6), 3);
        assert_eq!(second.len(), 4, "drained before the next interval");
        assert_eq!(d.stores_in_flight(), 8);
        // Everything answered: the rest, including the failed entry, goes out.
        for o in first[4..].iter().chain(&second) {
            d.on_outcome(&fed, o.token, ok(o), Time(9));
        }
        let mut rest = d.poll(&fed, Time(10), 4);
        while !rest.is_empty() {
            let more: Vec<Outgoing> = rest
                .iter()
                .flat_map(|o| d.on_outcome(&fed, o.token, ok(o), Time(11)))
                .collect();
            assert!(more.is_empty());
            rest = d.poll(&fed, Time(12), 5);
            if rest.is_empty() {
                break;
            }
        }
        assert_eq!(fed.local().pending(), (0, 0));
        assert_eq!(
            fed.stats.stores.load(Ordering::Relaxed),
            21,
            "20 peers, one resent"
        );
        assert_eq!(fed.stats.stored_values.load(Ordering::Relaxed), 21);
        assert!(fed.stats.flushes_completed.load(Ordering::Relaxed) >= 2);
        assert!(fed.stats.flush_latency_ms_max.load(Ordering::Relaxed) >= 9);
    }

    /// PEER-STATUS entries go out in Store batches that fit the message size; an entry the
    /// overlay refused is marked again with the peer's newest state, the others are done.
    #[test]
    fn peer_status_entries_go_in_batches_and_refused_entries_are_marked_again() {
        let fed = Federation::new(
            NodeId::from_u128(7),
            FederationConfig {
                flush_max_peers: 1000,
                max_message_bytes: 1024 + 10 * STATUS_STORE_BYTES,
                ..fed().config().clone()
            },
        );
        let mut d = Driver::new();
        let peers: Vec<PeerId> = (0..25u32)
            .map(|i| PeerId::new(format!("p{i}").as_bytes()).unwrap())
            .collect();
        for p in &peers {
            fed.local().mark_status(*p);
        }
        let out = d.poll(&fed, Time(0), 1);
        let sizes: Vec<usize> = out
            .iter()
            .map(|o| match &o.request {
                LocalRequest::StoreBatch(s) => s.len(),
                other => panic!("not a batch: {other:?}"),
            })
            .collect();
        assert_eq!(sizes, vec![10, 10, 5]);
        assert_eq!(fed.stats.stored_values.load(Ordering::Relaxed), 25);
        assert_eq!(fed.stats.stores.load(Ordering::Relaxed), 3);
        // The first batch: entry 3 refused; the second lost as a whole; the third stored.
        let results = (0..10)
            .map(|i| {
                if i == 3 {
                    Err(ErrorCode::Forbidden)
                } else {
                    Ok(StoreAns::default())
                }
            })
            .collect();
        d.on_outcome(
            &fed,
            out[0].token,
            LocalOutcome::StoredBatch(results),
            Time(5),
        );
        d.on_outcome(
            &fed,
            out[1].token,
            LocalOutcome::Failed {
                code: ErrorCode::RequestTimeout,
                info: crate::overlay::chord::message::ErrorInfo::None,
            },
            Time(5),
        );
        d.on_outcome(
            &fed,
            out[2].token,
            LocalOutcome::StoredBatch(vec![Ok(StoreAns::default()); 5]),
            Time(5),
        );
        assert_eq!(fed.local().pending().1, 11, "1 refused + 10 lost");
        assert_eq!(fed.stats.store_failures.load(Ordering::Relaxed), 11);
        let again = d.poll(&fed, Time(1000), 2);
        let resent: Vec<PeerId> = again
            .iter()
            .flat_map(|o| match &o.purpose {
                Purpose::StoreStatusBatch(p) => p.clone(),
                _ => Vec::new(),
            })
            .collect();
        assert_eq!(resent.len(), 11);
        assert!(resent.contains(&peers[3]));
    }
}
