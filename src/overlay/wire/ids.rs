//! Identifiers carried on the RELOAD wire: Node-IDs, Resource-IDs, the overlay hash,
//! transaction ids and Kind-IDs (RFC 6940 §6.3.1.1, §6.3.2, §7).

use sha1::{Digest, Sha1};
use std::fmt;

/// Length in bytes of a Node-ID in this overlay. RFC 6940 §6.3.1.1 lets an overlay choose
/// 16..20; Chord-RELOAD uses 128-bit ids (§10.2), and so do we.
pub const NODE_ID_LEN: usize = 16;

/// A Node-ID: `typedef opaque NodeId[NodeIdLength];` with NodeIdLength = 16, most significant
/// byte first, no length on the wire (RFC 6940 §6.3.1.1). Ordering is the big-endian unsigned
/// order the RFC compares Node-IDs by (§6.5.1.2).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct NodeId(pub [u8; NODE_ID_LEN]);

impl NodeId {
    /// The wildcard Node-ID (all ones): every node is responsible for it, and a message
    /// addressed to it is consumed by the first node that receives it (§6.1.1).
    pub const WILDCARD: NodeId = NodeId([0xff; NODE_ID_LEN]);

    /// The Node-ID as a 128-bit unsigned integer (for ring arithmetic).
    pub const fn to_u128(self) -> u128 {
        u128::from_be_bytes(self.0)
    }

    /// The Node-ID whose big-endian value is `v`.
    pub const fn from_u128(v: u128) -> Self {
        NodeId(v.to_be_bytes())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A Resource-ID: `typedef opaque ResourceId<0..2^8-1>;` (RFC 6940 §6.3.1.1), one length byte
/// then the bytes. Encoding a value longer than 255 bytes is an [`super::EncodeError`].
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ResourceId(pub Vec<u8>);

impl ResourceId {
    /// The Chord-RELOAD Resource-ID of a resource name: SHA-1 of the name truncated to its
    /// first 16 bytes (RFC 6940 §10.2).
    pub fn hash_of(name: &[u8]) -> Self {
        let digest = Sha1::digest(name);
        ResourceId(digest[..NODE_ID_LEN].to_vec())
    }

    /// The Resource-ID as a point on the 128-bit Chord ring, when it is exactly 16 bytes long.
    pub fn as_node_id(&self) -> Option<NodeId> {
        <[u8; NODE_ID_LEN]>::try_from(self.0.as_slice())
            .ok()
            .map(NodeId)
    }
}

impl ResourceId {
    /// The 16-byte Resource-ID whose big-endian value is `v` (a point on the Chord ring).
    pub fn from_u128(v: u128) -> Self {
        ResourceId(v.to_be_bytes().to_vec())
    }

    /// The ring position of a 16-byte Resource-ID.
    pub fn to_u128(&self) -> Option<u128> {
        self.as_node_id().map(NodeId::to_u128)
    }
}

impl From<NodeId> for ResourceId {
    fn from(n: NodeId) -> Self {
        ResourceId(n.0.to_vec())
    }
}

impl fmt::Debug for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResourceId(")?;
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// The forwarding header's `uint32 overlay` field (RFC 6940 §6.3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OverlayHash(pub u32);

impl OverlayHash {
    /// "The lower 32 bits of the SHA-1 hash of the overlay name" (RFC 6940 §6.3.2): the SHA-1
    /// digest read as a 160-bit big-endian integer, keeping its low 32 bits, i.e. the LAST four
    /// bytes of the digest (bytes 16..20) read big-endian. For "overlay.example.org" the digest
    /// is 74b9a543 a333b17c f6972962 2ee7b321 9aa32b8d, giving 0x9aa32b8d.
    pub fn of_name(instance_name: &str) -> Self {
        let digest = Sha1::digest(instance_name.as_bytes());
        let mut low = [0u8; 4];
        low.copy_from_slice(&digest[16..20]);
        OverlayHash(u32::from_be_bytes(low))
    }
}

/// The forwarding header's `uint64 transaction_id` (RFC 6940 §6.3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransactionId(pub u64);

/// `typedef uint32 KindId;` (RFC 6940 §6.5.4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KindId(pub u32);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_hash_is_low_32_bits_of_sha1() {
        assert_eq!(
            OverlayHash::of_name("overlay.example.org"),
            OverlayHash(0x9aa3_2b8d)
        );
    }

    #[test]
    fn resource_id_is_sha1_truncated_to_16_bytes() {
        let r = ResourceId::hash_of(b"test");
        assert_eq!(
            r.0,
            [
                0xa9, 0x4a, 0x8f, 0xe5, 0xcc, 0xb1, 0x9b, 0xa6, 0x1c, 0x4c, 0x08, 0x73, 0xd3, 0x91,
                0xe9, 0x87
            ]
        );
        assert_eq!(
            r.as_node_id().map(NodeId::to_u128),
            Some(0xa94a8fe5ccb19ba61c4c0873d391e987)
        );
    }

    #[test]
    fn node_id_orders_as_big_endian_integer() {
        let a = NodeId::from_u128(1);
        let b = NodeId::from_u128(1 << 120);
        assert!(a < b);
        assert_eq!(b.to_u128(), 1 << 120);
    }
}
