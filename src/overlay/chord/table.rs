//! The Chord-RELOAD routing table of one peer: the neighbor table (predecessors and successors,
//! nearest first) and the finger table, and greedy next-hop selection over their union
//! (RFC 6940 §10.1, §10.3).

use super::id::{distance, finger_range, in_left_open, in_open, NodeId};

/// Number of finger slots (RFC 6940 §10.7.4.3: up to 128).
pub const FINGERS: usize = 128;

#[derive(Clone, Debug)]
pub struct RoutingTable {
    pub own: NodeId,
    /// Nearest first; never contains `own`.
    pub predecessors: Vec<NodeId>,
    /// Nearest first; never contains `own`.
    pub successors: Vec<NodeId>,
    /// Finger `i` (0-based) is a peer in `[own + 2^(127-i), own + 2^(128-i))` when valid; other
    /// known peers may sit in a slot until a better one is found.
    pub fingers: Vec<Option<NodeId>>,
    /// The distinct peers of `fingers`, kept beside it so routing scans a short list.
    finger_peers: Vec<NodeId>,
    /// How many predecessors and successors to keep.
    pub neighbor_count: usize,
}

impl RoutingTable {
    pub fn new(own: NodeId, neighbor_count: usize) -> Self {
        RoutingTable {
            own,
            predecessors: Vec::new(),
            successors: Vec::new(),
            fingers: vec![None; FINGERS],
            finger_peers: Vec::new(),
            neighbor_count: neighbor_count.max(1),
        }
    }

    /// RFC 6940 §10.1: responsible for `(predecessor, self]`; alone, for everything.
    pub fn is_responsible(&self, id: u128) -> bool {
        match self.predecessors.first() {
            // Alone: everything. With successors but no predecessor yet (early in a join):
            // only its own id, so that requests move on to the successor.
            None => self.successors.is_empty() || id == self.own.to_u128(),
            Some(p) => in_left_open(id, p.to_u128(), self.own.to_u128()),
        }
    }

    pub fn is_neighbor(&self, n: NodeId) -> bool {
        self.predecessors.contains(&n) || self.successors.contains(&n)
    }

    /// Every distinct peer of the neighbor table.
    pub fn neighbors(&self) -> Vec<NodeId> {
        let mut out: Vec<NodeId> = Vec::with_capacity(self.predecessors.len() * 2);
        for n in self.predecessors.iter().chain(self.successors.iter()) {
            if !out.contains(n) {
                out.push(*n);
            }
        }
        out
    }

    /// Would `n` enter the neighbor table (as predecessor or successor)?
    pub fn improves_neighbors(&self, n: NodeId) -> bool {
        if n == self.own || self.is_neighbor(n) {
            return false;
        }
        let succ_ok = self.successors.len() < self.neighbor_count
            || self.successors.last().is_some_and(|l| {
                distance(self.own.to_u128(), n.to_u128())
                    < distance(self.own.to_u128(), l.to_u128())
            });
        let pred_ok = self.predecessors.len() < self.neighbor_count
            || self.predecessors.last().is_some_and(|l| {
                distance(n.to_u128(), self.own.to_u128())
                    < distance(l.to_u128(), self.own.to_u128())
            });
        succ_ok || pred_ok
    }

    /// Insert `n` where it belongs; returns whether the neighbor table changed.
    pub fn insert_neighbor(&mut self, n: NodeId) -> bool {
        if n == self.own {
            return false;
        }
        let own = self.own.to_u128();
        let mut changed = false;
        if !self.successors.contains(&n) {
            let d = distance(own, n.to_u128());
            let pos = self
                .successors
                .iter()
                .position(|s| distance(own, s.to_u128()) > d)
                .unwrap_or(self.successors.len());
            if pos < self.neighbor_count {
                self.successors.insert(pos, n);
                self.successors.truncate(self.neighbor_count);
                changed = true;
            }
        }
        if !self.predecessors.contains(&n) {
            let d = distance(n.to_u128(), own);
            let pos = self
                .predecessors
                .iter()
                .position(|p| distance(p.to_u128(), own) > d)
                .unwrap_or(self.predecessors.len());
            if pos < self.neighbor_count {
                self.predecessors.insert(pos, n);
                self.predecessors.truncate(self.neighbor_count);
                changed = true;
            }
        }
        self.consider_finger(n);
        changed
    }

    /// Put `n` in the finger slot whose range holds it, if that slot is empty or holds an
    /// entry outside its range.
    pub fn consider_finger(&mut self, n: NodeId) {
        if n == self.own {
            return;
        }
        let d = distance(self.own.to_u128(), n.to_u128());
        // Finger i's range is [2^(127-i), 2^(128-i)): i = leading zeros of d.
        let i = d.leading_zeros() as usize;
        if i >= FINGERS {
            return;
        }
        let valid = |f: NodeId| {
            let (start, len) = finger_range(self.own.to_u128(), i);
            distance(start, f.to_u128()) < len
        };
        match self.fingers.get(i).copied().flatten() {
            Some(f) if valid(f) => {}
            _ => {
                if let Some(slot) = self.fingers.get_mut(i) {
                    *slot = Some(n);
                }
                self.reindex_fingers();
            }
        }
    }

    fn reindex_fingers(&mut self) {
        self.finger_peers.clear();
        for f in self.fingers.iter().flatten() {
            if !self.finger_peers.contains(f) {
                self.finger_peers.push(*f);
            }
        }
    }

    /// Set finger `i` to `n` (a search result), even if `n` lies beyond the range.
    pub fn set_finger(&mut self, i: usize, n: NodeId) {
        if n == self.own {
            return;
        }
        if let Some(slot) = self.fingers.get_mut(i) {
            *slot = Some(n);
        }
        self.reindex_fingers();
    }

    /// RFC 6940 §10.7.1 / §10.7.2: forget a failed peer everywhere. Returns whether the
    /// neighbor table changed.
    pub fn remove(&mut self, n: NodeId) -> bool {
        let before = self.predecessors.len() + self.successors.len();
        self.predecessors.retain(|p| *p != n);
        self.successors.retain(|s| *s != n);
        for f in self.fingers.iter_mut() {
            if *f == Some(n) {
                *f = None;
            }
        }
        self.finger_peers.retain(|f| *f != n);
        before != self.predecessors.len() + self.successors.len()
    }

    /// Is `n` anywhere in the routing table?
    pub fn is_known(&self, n: NodeId) -> bool {
        self.is_neighbor(n) || self.finger_peers.contains(&n)
    }

    /// Every distinct known peer (neighbors then fingers).
    pub fn known_peers(&self) -> Vec<NodeId> {
        let mut out = self.neighbors();
        for f in &self.finger_peers {
            if !out.contains(f) {
                out.push(*f);
            }
        }
        out
    }

    /// The fingers in ascending numeric order, distinct (RFC 6940 §10.7 `full` update).
    pub fn finger_list(&self) -> Vec<NodeId> {
        let mut out: Vec<NodeId> = self.fingers.iter().flatten().copied().collect();
        out.sort();
        out.dedup();
        out
    }

    /// RFC 6940 §10.3 greedy routing: a directly known peer with id `k`; otherwise the known
    /// peer with the largest id in `(own, k)`; otherwise the smallest id after `k`. Peers in
    /// `exclude` (the via list: loop avoidance) are skipped.
    pub fn next_hop(&self, k: u128, exclude: &[NodeId]) -> Option<NodeId> {
        let own = self.own.to_u128();
        let mut best_preceding: Option<(u128, NodeId)> = None;
        let mut best_following: Option<(u128, NodeId)> = None;
        let candidates = self
            .predecessors
            .iter()
            .chain(self.successors.iter())
            .chain(self.finger_peers.iter());
        for &c in candidates {
            if c == self.own || exclude.contains(&c) {
                continue;
            }
            if c.to_u128() == k {
                return Some(c);
            }
            if in_open(c.to_u128(), own, k) {
                let d = distance(own, c.to_u128());
                if best_preceding.map_or(true, |(bd, _)| d > bd) {
                    best_preceding = Some((d, c));
                }
            } else {
                let d = distance(k, c.to_u128());
                if best_following.map_or(true, |(bd, _)| d < bd) {
                    best_following = Some((d, c));
                }
            }
        }
        best_preceding.or(best_following).map(|(_, c)| c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(own: u128, peers: &[u128]) -> RoutingTable {
        let mut t = RoutingTable::new(NodeId::from_u128(own), 3);
        for p in peers {
            t.insert_neighbor(NodeId::from_u128(*p));
        }
        t
    }

    #[test]
    fn neighbors_sorted_nearest_first_and_bounded() {
        let t = table(100, &[300, 150, 90, 10, 200, 99, 50]);
        assert_eq!(
            t.successors,
            vec![
                NodeId::from_u128(150),
                NodeId::from_u128(200),
                NodeId::from_u128(300)
            ]
        );
        assert_eq!(
            t.predecessors,
            vec![
                NodeId::from_u128(99),
                NodeId::from_u128(90),
                NodeId::from_u128(50)
            ]
        );
        assert!(t.is_responsible(100));
        assert!(!t.is_responsible(99));
        assert!(!t.is_responsible(101));
        assert!(t.improves_neighbors(NodeId::from_u128(120)));
        assert!(!t.improves_neighbors(NodeId::from_u128(400)));
        assert!(!t.improves_neighbors(NodeId::from_u128(20)));
    }

    #[test]
    fn neighbors_wrap_around_zero() {
        let t = table(5, &[u128::MAX - 1, 7, u128::MAX, 3]);
        assert_eq!(t.successors[0], NodeId::from_u128(7));
        assert_eq!(t.predecessors[0], NodeId::from_u128(3));
        assert_eq!(t.predecessors[1], NodeId::from_u128(u128::MAX));
        assert!(t.is_responsible(4));
        assert!(!t.is_responsible(3));
        assert!(!t.is_responsible(6));
    }

    #[test]
    fn greedy_next_hop() {
        let mut t = table(100, &[150, 200, 90]);
        t.consider_finger(NodeId::from_u128(1000));
        t.consider_finger(NodeId::from_u128(1 << 100));
        // Closest preceding 1100 is 1000.
        assert_eq!(t.next_hop(1100, &[]), Some(NodeId::from_u128(1000)));
        // 170 lies between 150 and 200: closest preceding is 150.
        assert_eq!(t.next_hop(170, &[]), Some(NodeId::from_u128(150)));
        // 120: nothing in (100, 120), so the smallest id after it: 150.
        assert_eq!(t.next_hop(120, &[]), Some(NodeId::from_u128(150)));
        // An exact id is routed to directly.
        assert_eq!(t.next_hop(200, &[]), Some(NodeId::from_u128(200)));
        // Excluded peers are skipped.
        assert_eq!(
            t.next_hop(1100, &[NodeId::from_u128(1000)]),
            Some(NodeId::from_u128(200))
        );
    }

    #[test]
    fn remove_clears_everywhere() {
        let mut t = table(100, &[150, 200, 90]);
        t.consider_finger(NodeId::from_u128(150));
        assert!(t.remove(NodeId::from_u128(150)));
        assert!(!t.known_peers().contains(&NodeId::from_u128(150)));
        assert!(!t.remove(NodeId::from_u128(150)));
    }
}
