//! 128-bit identifiers on the Chord-RELOAD ring and the modular arithmetic over them.
//!
//! RFC 6940 §10.1: node and resource identifiers are points on a ring of 2^128 positions and all
//! arithmetic is modulo 2^128. RFC 6940 §10.2: a Resource-ID is SHA-1 of the resource name
//! truncated to its most significant 128 bits. A peer is responsible for the ids in
//! `(predecessor, self]`.

use sha1::{Digest, Sha1};
use std::fmt;

/// The identifier of an overlay node: the wire codec's 16-byte Node-ID (RFC 6940 §6.3.1.1),
/// read as a big-endian 128-bit ring position with [`NodeId::to_u128`].
pub use crate::overlay::wire::NodeId;

/// The identifier of a stored resource (RFC 6940 §6.3.1.1 `ResourceId`, 16 bytes here).
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceId(pub u128);

/// The ring point of a node seen as a resource id (the node with id `n` is responsible for
/// resource id `n`).
pub fn node_as_resource(n: NodeId) -> ResourceId {
    ResourceId(n.to_u128())
}

impl ResourceId {
    /// The id as 16 big-endian bytes, the wire form.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }
    /// The id from 16 big-endian bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        ResourceId(u128::from_be_bytes(bytes))
    }
    /// The wire form (a 16-byte `ResourceId<0..2^8-1>`).
    pub fn to_wire(self) -> crate::overlay::wire::ResourceId {
        crate::overlay::wire::ResourceId(self.to_bytes().to_vec())
    }
    /// The ring point of a wire Resource-ID, when it has Chord-RELOAD's 16 bytes.
    pub fn from_wire(r: &crate::overlay::wire::ResourceId) -> Option<Self> {
        r.as_node_id().map(|n| ResourceId(n.to_u128()))
    }
}

impl fmt::Debug for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "R{:032x}", self.0)
    }
}

/// RFC 6940 §10.2 (and protocols.md §3): SHA-1 of the resource name, truncated to the most
/// significant 128 bits.
pub fn resource_id(name: &[u8]) -> ResourceId {
    let digest = Sha1::digest(name);
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    ResourceId::from_bytes(bytes)
}

/// Clockwise distance from `from` to `to` on the ring, modulo 2^128.
#[inline]
pub fn distance(from: u128, to: u128) -> u128 {
    to.wrapping_sub(from)
}

/// `x` lies in the open interval `(a, b)` going clockwise from `a`. When `a == b` the interval
/// is the whole ring except `a`.
#[inline]
pub fn in_open(x: u128, a: u128, b: u128) -> bool {
    if a == b {
        return x != a;
    }
    let dx = distance(a, x);
    dx != 0 && dx < distance(a, b)
}

/// `x` lies in the half-open interval `(a, b]` going clockwise from `a`. When `a == b` the
/// interval is the whole ring (a single node is responsible for everything).
#[inline]
pub fn in_left_open(x: u128, a: u128, b: u128) -> bool {
    if a == b {
        return true;
    }
    let dx = distance(a, x);
    dx != 0 && dx <= distance(a, b)
}

/// Chord finger targets in RFC 6940 §10.5 order: finger `i` (0-based here, RFC's `i+1`) targets
/// `id + 2^(127-i)`, so finger 0 is half way around the ring.
#[inline]
pub fn finger_target(id: u128, i: usize) -> u128 {
    debug_assert!(i < 128);
    id.wrapping_add(1u128 << (127 - (i & 127)))
}

/// The valid range of finger `i` (0-based) of node `id`, RFC 6940 §10.7.4.2:
/// `[id + 2^(127-i), id + 2^(128-i) - 1]`, returned as (start, length).
#[inline]
pub fn finger_range(id: u128, i: usize) -> (u128, u128) {
    let i = i & 127;
    let start = id.wrapping_add(1u128 << (127 - i));
    (start, 1u128 << (127 - i))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u128 = u128::MAX;

    #[test]
    fn distance_wraps() {
        assert_eq!(distance(10, 20), 10);
        assert_eq!(distance(20, 10), MAX - 9);
        assert_eq!(distance(MAX, 0), 1);
        assert_eq!(distance(5, 5), 0);
    }

    #[test]
    fn open_interval_plain_and_wrapping() {
        assert!(in_open(15, 10, 20));
        assert!(!in_open(10, 10, 20));
        assert!(!in_open(20, 10, 20));
        assert!(!in_open(25, 10, 20));
        // Wrap-around: (MAX-5, 5) contains MAX, 0 and 4 but not 5 or 100.
        assert!(in_open(MAX, MAX - 5, 5));
        assert!(in_open(0, MAX - 5, 5));
        assert!(in_open(4, MAX - 5, 5));
        assert!(!in_open(5, MAX - 5, 5));
        assert!(!in_open(100, MAX - 5, 5));
        assert!(!in_open(MAX - 5, MAX - 5, 5));
        // Degenerate: everything but the end point.
        assert!(in_open(3, 7, 7));
        assert!(!in_open(7, 7, 7));
    }

    #[test]
    fn half_open_interval_and_responsibility() {
        // A node 20 with predecessor 10 is responsible for (10, 20].
        assert!(in_left_open(20, 10, 20));
        assert!(in_left_open(11, 10, 20));
        assert!(!in_left_open(10, 10, 20));
        assert!(!in_left_open(21, 10, 20));
        // The first node on the ring (id 5, predecessor MAX-100) covers the wrap.
        assert!(in_left_open(MAX, MAX - 100, 5));
        assert!(in_left_open(0, MAX - 100, 5));
        assert!(in_left_open(5, MAX - 100, 5));
        assert!(!in_left_open(6, MAX - 100, 5));
        assert!(!in_left_open(MAX - 100, MAX - 100, 5));
        // Alone on the ring: responsible for everything.
        assert!(in_left_open(123, 9, 9));
        assert!(in_left_open(9, 9, 9));
    }

    #[test]
    fn fingers_halve_the_ring() {
        assert_eq!(finger_target(0, 0), 1u128 << 127);
        assert_eq!(finger_target(0, 127), 1);
        assert_eq!(finger_target(MAX, 127), 0);
        assert_eq!(finger_target(1u128 << 127, 0), 0);
        let (start, len) = finger_range(100, 1);
        assert_eq!(start, 100 + (1u128 << 126));
        assert_eq!(len, 1u128 << 126);
    }

    proptest::proptest! {
        #[test]
        fn intervals_agree(a: u128, b: u128, x: u128) {
            proptest::prop_assert_eq!(distance(a, b).wrapping_add(distance(b, a)), 0);
            if a != b {
                proptest::prop_assert_eq!(in_left_open(x, a, b), x == b || in_open(x, a, b));
                // (a, b] and (b, a] split the ring.
                proptest::prop_assert!(in_left_open(x, a, b) != in_left_open(x, b, a));
            }
        }

        #[test]
        fn exactly_one_node_is_responsible(mut ids in proptest::collection::vec(proptest::prelude::any::<u128>(), 1..40), r: u128) {
            ids.sort();
            ids.dedup();
            let n = ids.len();
            let responsible: Vec<u128> = (0..n)
                .filter(|&i| in_left_open(r, ids[(i + n - 1) % n], ids[i]))
                .map(|i| ids[i])
                .collect();
            proptest::prop_assert_eq!(responsible.len(), 1);
            // It is the first id at or after r, wrapping to the smallest.
            let expected = ids.iter().copied().find(|&i| i >= r).unwrap_or(ids[0]);
            proptest::prop_assert_eq!(responsible[0], expected);
        }
    }

    #[test]
    fn resource_id_is_truncated_sha1() {
        // SHA-1("abc") = a9993e364706816aba3e25717850c26c9cd0d89d (FIPS 180 test vector).
        let r = resource_id(b"abc");
        assert_eq!(r.0, 0xa9993e364706816aba3e25717850c26c);
        assert_eq!(ResourceId::from_bytes(r.to_bytes()), r);
    }
}
