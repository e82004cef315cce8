//! Bootstrap and rejoin (RFC 6940 §11.4, §10.5, §10.7.4.4) as state transitions of the node.
//!
//! - [`LocalRequest::Bootstrap`](super::LocalRequest::Bootstrap) starts it: every configured
//!   bootstrap address ([`ChordConfig::bootstrap_addrs`](super::ChordConfig)) is dialled
//!   ([`Action::Dial`] with no expected Node-ID); the first link hello answered on one of them
//!   names a bootstrap node ([`Event::LinkUp`](super::Event::LinkUp) with `dialled` set) and the
//!   Join (§10.5) goes through it. When none answers within `attach_timeout_ms` in the first
//!   round (or none is configured) the node creates the overlay alone. A failed Join is retried
//!   through the bootstrap addresses with back-off.
//! - The bootstrap list is kept for the node's whole life. Every bootstrap node reached joins
//!   the list the partition check (§10.7.4.4) runs against every update round, so two rings
//!   formed while the network was split (or by a first node restarted without a bootstrap
//!   list) merge. While the node is alone on its ring, or holds no link to any bootstrap node,
//!   it dials the bootstrap addresses again with back-off ([`BOOTSTRAP_RETRY_MS`] doubling up
//!   to [`BOOTSTRAP_RETRY_MAX_MS`]), forever; being alone is logged once when it starts and
//!   once when it ends.
//!
//! Deadlines are [`Timer::Bootstrap`] timers carrying a generation number: only the latest
//! one armed acts.

use super::{Action, ChordNode, OpId, Phase, Timer};
use crate::overlay::chord::id::NodeId;
use crate::overlay::chord::node::LocalOutcome;
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// First delay between bootstrap rounds (after a failed join, or while alone on the ring), ms;
/// it doubles each round up to [`BOOTSTRAP_RETRY_MAX_MS`].
pub const BOOTSTRAP_RETRY_MS: u64 = 1000;
/// Longest delay between bootstrap rounds, ms.
pub const BOOTSTRAP_RETRY_MAX_MS: u64 = 60_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BootPhase {
    /// Not started: joining is driven by explicit local requests.
    Off,
    /// Dialled the bootstrap addresses at this time; waiting for a hello answer.
    Dialling { since: u64 },
    /// A Join (or the creation of the overlay) is in flight.
    Joining,
    /// Waiting until the time to dial again.
    RetryAt(u64),
    /// On a ring; dialling again only while alone or unlinked to every bootstrap node.
    Done,
}

pub(super) struct Boot {
    pub(super) phase: BootPhase,
    /// The local request that started the bootstrap, completed once the node is on a ring.
    op: Option<OpId>,
    /// Bootstrap rounds dialled so far.
    rounds: u32,
    /// Current delay between bootstrap rounds (back-off), ms.
    delay: u64,
    /// After joining: when the bootstrap addresses are dialled again.
    redial_at: u64,
    /// Alone on the ring since this time (logged once per episode).
    alone_since: Option<u64>,
    /// A failed join was logged in the current bootstrap episode.
    join_failure_logged: bool,
    /// Bootstrap nodes linked to, by the configured address their link was dialled to.
    linked: BTreeMap<SocketAddr, NodeId>,
    /// Generation of the latest [`Timer::Bootstrap`] armed.
    generation: u64,
}

impl Boot {
    pub(super) fn new() -> Self {
        Boot {
            phase: BootPhase::Off,
            op: None,
            rounds: 0,
            delay: BOOTSTRAP_RETRY_MS,
            redial_at: 0,
            alone_since: None,
            join_failure_logged: false,
            linked: BTreeMap::new(),
            generation: 0,
        }
    }
}

impl ChordNode {
    /// [`LocalRequest::Bootstrap`](super::LocalRequest::Bootstrap).
    pub(super) fn boot_start(&mut self, op: OpId) {
        if self.phase == Phase::Joined {
            self.complete(op, LocalOutcome::Joined);
            if self.boot.phase == BootPhase::Off {
                self.boot.phase = BootPhase::Done;
                self.boot_arm();
            }
            return;
        }
        self.boot.op = Some(op);
        if self.boot.phase == BootPhase::Off {
            self.boot.phase = BootPhase::RetryAt(self.now);
            self.boot_step();
        }
    }

    /// A [`Timer::Bootstrap`] fired.
    pub(super) fn boot_timer(&mut self, generation: u64) {
        if generation == self.boot.generation {
            self.boot_step();
        }
    }

    fn boot_step(&mut self) {
        let now = self.now;
        match self.boot.phase {
            BootPhase::RetryAt(t) if t <= now => {
                if self.config.bootstrap_addrs.is_empty() {
                    self.boot_create();
                } else if let Some(b) = self.linked_bootstrap() {
                    // Still linked to a bootstrap node from an earlier round: join through it.
                    self.boot_join(b);
                } else {
                    for addr in self.config.bootstrap_addrs.clone() {
                        self.actions.push(Action::Dial { addr, peer: None });
                    }
                    self.boot.phase = BootPhase::Dialling { since: now };
                    self.boot.rounds += 1;
                }
            }
            BootPhase::Dialling { since }
                if since.saturating_add(self.config.attach_timeout_ms) <= now =>
            {
                if self.phase == Phase::Joined {
                    self.boot.phase = BootPhase::Done;
                } else if self.boot.rounds == 1 {
                    // First round and nobody answered: this node starts the overlay (and
                    // keeps dialling its bootstrap list while alone, see `boot_redial`).
                    self.boot_create();
                } else {
                    let at = now.saturating_add(self.next_boot_delay());
                    self.boot.phase = BootPhase::RetryAt(at);
                }
            }
            BootPhase::Done => self.boot_redial(),
            _ => {}
        }
        self.boot_arm();
    }

    /// Arms the timer of the current deadline (superseding every earlier one).
    fn boot_arm(&mut self) {
        let at = match self.boot.phase {
            BootPhase::RetryAt(t) => Some(t),
            BootPhase::Dialling { since } => {
                Some(since.saturating_add(self.config.attach_timeout_ms))
            }
            BootPhase::Done if !self.config.bootstrap_addrs.is_empty() => Some(self.boot.redial_at),
            _ => None,
        };
        if let Some(at) = at {
            self.boot.generation += 1;
            self.actions.push(Action::SetTimer {
                at: at.max(self.now),
                timer: Timer::Bootstrap {
                    generation: self.boot.generation,
                },
            });
        }
    }

    fn linked_bootstrap(&self) -> Option<NodeId> {
        self.boot.linked.values().next().copied()
    }

    fn boot_create(&mut self) {
        tracing::info!(node_id = %self.table.own, "overlay created (no bootstrap node answered)");
        self.boot.phase = BootPhase::Joining;
        self.create_overlay();
        self.boot_joined(true);
    }

    fn boot_join(&mut self, bootstrap: NodeId) {
        tracing::info!(bootstrap = %bootstrap, "overlay joining");
        self.boot.phase = BootPhase::Joining;
        self.begin_join(bootstrap, None);
    }

    /// The Join (or creation) of the bootstrap ended.
    pub(super) fn boot_joined(&mut self, ok: bool) {
        if self.boot.phase != BootPhase::Joining {
            return;
        }
        if ok {
            tracing::info!(node_id = %self.table.own, "overlay joined");
            self.boot.phase = BootPhase::Done;
            self.boot.join_failure_logged = false;
            self.boot.redial_at = self.now.saturating_add(self.boot.delay);
            if let Some(op) = self.boot.op.take() {
                self.complete(op, LocalOutcome::Joined);
            }
        } else {
            if !std::mem::replace(&mut self.boot.join_failure_logged, true) {
                tracing::warn!(
                    "overlay join failed; retrying with back-off up to {} s (logged once until \
                     a join succeeds)",
                    BOOTSTRAP_RETRY_MAX_MS / 1000
                );
            } else {
                tracing::debug!("overlay join failed again");
            }
            let at = self.now.saturating_add(self.next_boot_delay());
            self.boot.phase = BootPhase::RetryAt(at);
        }
        self.boot_arm();
    }

    /// The delay before the next bootstrap round; doubles the following one.
    fn next_boot_delay(&mut self) -> u64 {
        let d = self.boot.delay;
        self.boot.delay = d.saturating_mul(2).min(BOOTSTRAP_RETRY_MAX_MS);
        d
    }

    /// After joining (or founding an overlay): dial the bootstrap addresses again, with
    /// back-off, while this node is alone on its ring or linked to no bootstrap node; the
    /// hello answers add the bootstrap nodes to the partition check, which merges the rings.
    fn boot_redial(&mut self) {
        if self.config.bootstrap_addrs.is_empty() || self.phase != Phase::Joined {
            return;
        }
        let now = self.now;
        let alone = self.table.successors.is_empty();
        match (alone, self.boot.alone_since) {
            (true, None) => {
                self.boot.alone_since = Some(now);
                tracing::warn!(
                    "overlay alone on its ring: dialling the bootstrap list {:?} again with \
                     back-off up to {} s until another node is found (logged once)",
                    self.config.bootstrap_addrs,
                    BOOTSTRAP_RETRY_MAX_MS / 1000
                );
            }
            (false, Some(since)) => {
                self.boot.alone_since = None;
                tracing::info!(
                    "overlay no longer alone: ring neighbours found after {} s",
                    now.saturating_sub(since) / 1000
                );
            }
            _ => {}
        }
        if now < self.boot.redial_at {
            return;
        }
        if alone || self.linked_bootstrap().is_none() {
            for addr in self.config.bootstrap_addrs.clone() {
                self.actions.push(Action::Dial { addr, peer: None });
            }
            self.boot.redial_at = now.saturating_add(self.next_boot_delay());
        } else {
            self.boot.delay = BOOTSTRAP_RETRY_MS;
            self.boot.redial_at = now.saturating_add(BOOTSTRAP_RETRY_MAX_MS);
        }
    }

    /// A link came up; `dialled` is the address of a link this node dialled whose hello was
    /// answered by `peer`.
    pub(super) fn boot_link_up(&mut self, peer: NodeId, dialled: Option<SocketAddr>) {
        let Some(addr) = dialled.filter(|a| self.config.bootstrap_addrs.contains(a)) else {
            return;
        };
        self.boot.linked.insert(addr, peer);
        // Kept for the partition check; a node alone on its ring merges through it.
        self.bootstrap_found(peer);
        self.boot.delay = BOOTSTRAP_RETRY_MS;
        if matches!(self.boot.phase, BootPhase::Dialling { .. }) {
            self.boot_join(peer);
        }
    }

    pub(super) fn boot_link_down(&mut self, peer: NodeId) {
        self.boot.linked.retain(|_, n| *n != peer);
    }

    /// True while the bootstrap is running and has not reached a ring yet.
    pub fn is_bootstrapping(&self) -> bool {
        !matches!(self.boot.phase, BootPhase::Off | BootPhase::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overlay::chord::node::{ChordConfig, Event, LocalRequest};

    /// Drives a node's timers until `until` (ms); the times it dialled its bootstrap list.
    fn dial_times(node: &mut ChordNode, first: Vec<Action>, until: u64) -> Vec<u64> {
        let mut timers: Vec<(u64, Timer)> = Vec::new();
        let mut dials = Vec::new();
        let mut collect = |actions: Vec<Action>, now: u64, timers: &mut Vec<(u64, Timer)>| {
            for a in actions {
                match a {
                    Action::SetTimer { at, timer } => timers.push((at, timer)),
                    Action::Dial { peer: None, .. } if dials.last() != Some(&now) => {
                        dials.push(now)
                    }
                    _ => {}
                }
            }
        };
        collect(first, 0, &mut timers);
        while let Some(pos) = (0..timers.len()).min_by_key(|i| timers[*i].0) {
            let (at, timer) = timers.swap_remove(pos);
            if at > until {
                break;
            }
            let actions = node.handle(Event::Timer(timer), at);
            collect(actions, at, &mut timers);
        }
        dials
    }

    #[test]
    fn an_unanswered_bootstrap_list_creates_the_overlay_and_is_dialled_with_back_off() {
        let mut node = ChordNode::new(
            NodeId::from_u128(5),
            ChordConfig {
                bootstrap_addrs: vec![SocketAddr::from(([10, 0, 0, 9], 6084))],
                attach_timeout_ms: 2_000,
                ..ChordConfig::default()
            },
            1,
        );
        let first = node.handle(
            Event::Local {
                op: 1,
                request: LocalRequest::Bootstrap,
            },
            0,
        );
        assert!(node.is_bootstrapping());
        let dials = dial_times(&mut node, first, 400_000);
        assert!(
            node.is_joined(),
            "created the overlay after the first round"
        );
        assert!(!node.is_bootstrapping());
        // Round one at 0; created at 2 s; then alone: dialled 1 s later, then 1 s, 2 s, 4 s
        // ... apart, up to 60 s, forever.
        assert!(dials.len() > 10, "{dials:?}");
        let gaps: Vec<u64> = dials.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(dials[0], 0);
        assert_eq!(
            &gaps[..7],
            &[3_000, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000]
        );
        assert!(
            gaps[7..].iter().all(|g| *g == BOOTSTRAP_RETRY_MAX_MS),
            "{gaps:?}"
        );
    }

    #[test]
    fn a_hello_answered_on_a_bootstrap_address_starts_the_join_through_it() {
        let boot = SocketAddr::from(([10, 0, 0, 9], 6084));
        let mut node = ChordNode::new(
            NodeId::from_u128(5),
            ChordConfig {
                bootstrap_addrs: vec![boot],
                ..ChordConfig::default()
            },
            1,
        );
        node.handle(
            Event::Local {
                op: 1,
                request: LocalRequest::Bootstrap,
            },
            0,
        );
        let b = NodeId::from_u128(77);
        let actions = node.handle(
            Event::LinkUp {
                peer: b,
                candidate: Some(boot),
                dialled: Some(boot),
            },
            30,
        );
        let join = actions.iter().find_map(|a| match a {
            Action::Send { to, message } if *to == b => Some(message.clone()),
            _ => None,
        });
        let join = join.expect("a Join through the bootstrap node");
        assert!(matches!(
            join.body,
            crate::overlay::chord::message::Body::Request(
                crate::overlay::chord::message::Request::Join { .. }
            )
        ));
        // It is kept for the partition check.
        assert!(node.config.bootstrap.contains(&b));
        // An inbound link from the same node is not a bootstrap answer.
        let mut other = ChordNode::new(
            NodeId::from_u128(6),
            ChordConfig {
                bootstrap_addrs: vec![boot],
                ..ChordConfig::default()
            },
            1,
        );
        other.handle(
            Event::Local {
                op: 1,
                request: LocalRequest::Bootstrap,
            },
            0,
        );
        let actions = other.handle(
            Event::LinkUp {
                peer: b,
                candidate: Some(boot),
                dialled: None,
            },
            30,
        );
        assert!(actions.iter().all(|a| !matches!(a, Action::Send { .. })));
    }
}
