//! A swarm membership in the form a peer list needs, and the stored form of peer ids.
//!
//! A [`Member`] is 36 bytes (4-byte aligned, so that a swarm's member vector holds no
//! padding): the handle of the peer's record (its state's single owner) plus
//! a copy of what a FIND answer lists about the peer (RFC 7846 §5.2 `peer_info`: its id and,
//! when it has exactly one IPv4 address, that address with its descriptors). Listing a peer
//! then reads the swarm's member vector and nothing else; a peer whose copy is incomplete
//! (an IPv6 address, several addresses, a priority other than 1, an ASN, or an id longer than
//! [`MEMBER_ID_BYTES`] in stored form) is read from its record instead. The copy is written
//! when the peer joins the swarm and rewritten in every swarm the peer is in when its
//! addresses change (its id and source address never change); the audit checks that every
//! copy equals what its record gives.
//!
//! Ids are stored packed: an id of lower-case hexadecimal digits of even length (the common
//! form of RFC 7846 peer ids, 40 characters for a SHA-1) is kept as the bytes it spells, half
//! its length; any other id as it is. A flag tells the two forms apart, so the mapping is
//! exact in both directions.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::types::{AddrType, LinkKind, PeerAddr, PeerId, PeerInfo, PeerMode, MAX_ID_BYTES};

/// Stored id bytes a membership holds inline (a 40-character hex id packs to 20).
pub(super) const MEMBER_ID_BYTES: usize = 20;

/// Flag of a stored id length: the id is packed hex.
pub(super) const HEX: u8 = 0x80;

/// An id in stored form: `len & !HEX` bytes of `bytes`, packed hex when `len & HEX`.
#[derive(Clone)]
pub(super) struct StoredId {
    len: u8,
    bytes: [u8; MAX_ID_BYTES],
}

impl StoredId {
    /// The stored form of `id` (at most [`MAX_ID_BYTES`] bytes; longer input is cut).
    pub fn pack(id: &[u8]) -> Self {
        let id = &id[..id.len().min(MAX_ID_BYTES)];
        let mut bytes = [0u8; MAX_ID_BYTES];
        // One pass over the digit pairs through a table, without a branch per digit; an id
        // whose first byte is no digit (most binary ids) is not tried at all.
        let maybe_hex = id.len() % 2 == 0
            && id
                .first()
                .is_some_and(|&b| NIBBLES[usize::from(b)] != NOT_HEX);
        if maybe_hex {
            let mut bad = 0u8;
            for (out, pair) in bytes.iter_mut().zip(id.chunks_exact(2)) {
                if let [hi, lo] = *pair {
                    let (hi, lo) = (NIBBLES[usize::from(hi)], NIBBLES[usize::from(lo)]);
                    bad |= hi | lo;
                    *out = (hi << 4) | (lo & 0x0f);
                }
            }
            if bad & NOT_HEX == 0 {
                return StoredId {
                    len: (id.len() / 2) as u8 | HEX,
                    bytes,
                };
            }
            bytes = [0u8; MAX_ID_BYTES];
        }
        bytes[..id.len()].copy_from_slice(id);
        StoredId {
            len: id.len() as u8,
            bytes,
        }
    }

    /// The stored bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len & !HEX)]
    }

    /// The first `N` bytes of the stored form, zeros after its end: a stored id of at most
    /// `N` bytes compares with another kept so (same length byte) as one fixed-size array.
    pub fn padded<const N: usize>(&self) -> Option<&[u8; N]> {
        self.bytes.first_chunk::<N>()
    }

    /// The length byte: stored length, with [`HEX`] for packed hex.
    pub fn len_flag(&self) -> u8 {
        self.len
    }
}

/// [`NIBBLES`] entry of a byte that is no lower-case hex digit.
const NOT_HEX: u8 = 0x80;

/// The value of each byte as a lower-case hex digit, [`NOT_HEX`] for any other byte.
const NIBBLES: [u8; 256] = {
    let mut t = [NOT_HEX; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = match b as u8 {
            d @ b'0'..=b'9' => d - b'0',
            d @ b'a'..=b'f' => d - b'a' + 10,
            _ => NOT_HEX,
        };
        b += 1;
    }
    t
};

/// The peer id whose stored form is `stored` with length byte `len_flag`.
pub(super) fn unpack(stored: &[u8], len_flag: u8) -> PeerId {
    let mut buf = [0u8; MAX_ID_BYTES];
    PeerId::from_stored(unpack_into(stored, len_flag, &mut buf))
}

/// The bytes of the peer id whose stored form is `stored` with length byte `len_flag`, as the
/// peer announced it (at most [`MAX_ID_BYTES`]): `stored` itself when it was kept as received,
/// else its hex expansion written into `buf`. What [`unpack`] returns, without building a
/// [`PeerId`] (an encoder writes the bytes straight into its output).
pub(super) fn unpack_into<'a>(
    stored: &'a [u8],
    len_flag: u8,
    buf: &'a mut [u8; MAX_ID_BYTES],
) -> &'a [u8] {
    if len_flag & HEX == 0 {
        return &stored[..stored.len().min(MAX_ID_BYTES)];
    }
    let n = stored.len().min(MAX_ID_BYTES / 2);
    crate::hex::expand_into(&stored[..n], &mut buf[..2 * n]);
    &buf[..2 * n]
}

/// Whether `want` (an id as received) is the id stored as `stored` with length byte
/// `len_flag`, without unpacking or packing either.
pub(super) fn stored_eq(stored: &[u8], len_flag: u8, want: &[u8]) -> bool {
    if len_flag & HEX == 0 {
        return stored == want;
    }
    want.len() == 2 * stored.len()
        && stored
            .iter()
            .zip(want.chunks_exact(2))
            .all(|(&b, pair)| crate::hex::pair(b) == pair)
}

/// Stored id bytes a [`CompactId`] holds inline.
const COMPACT_INLINE: usize = 22;

/// An id in stored form ([`StoredId`]) in 24 bytes: inline up to [`COMPACT_INLINE`] stored
/// bytes (a 40-character hex id, a 20-byte binary one), else on the heap. A swarm's slot
/// holds its id this way instead of a 65-byte [`super::types::SwarmId`].
#[derive(Debug)]
pub(super) enum CompactId {
    Inline {
        len_flag: u8,
        bytes: [u8; COMPACT_INLINE],
    },
    Boxed {
        len_flag: u8,
        bytes: Box<[u8]>,
    },
}

impl CompactId {
    /// The compact stored form of `id`.
    pub fn new(id: &[u8]) -> Self {
        let stored = StoredId::pack(id);
        let (b, len_flag) = (stored.bytes(), stored.len_flag());
        if b.len() <= COMPACT_INLINE {
            let mut bytes = [0u8; COMPACT_INLINE];
            bytes[..b.len()].copy_from_slice(b);
            CompactId::Inline { len_flag, bytes }
        } else {
            CompactId::Boxed {
                len_flag,
                bytes: b.into(),
            }
        }
    }

    /// The stored bytes and their length byte.
    fn parts(&self) -> (&[u8], u8) {
        match self {
            CompactId::Inline { len_flag, bytes } => (
                bytes
                    .get(..usize::from(len_flag & !HEX))
                    .unwrap_or(&bytes[..]),
                *len_flag,
            ),
            CompactId::Boxed { len_flag, bytes } => (bytes, *len_flag),
        }
    }

    /// Whether this is the stored form of `want`.
    pub fn matches(&self, want: &[u8]) -> bool {
        let (stored, len_flag) = self.parts();
        stored_eq(stored, len_flag, want)
    }

    /// The id as received.
    pub fn unpack(&self) -> PeerId {
        let (stored, len_flag) = self.parts();
        unpack(stored, len_flag)
    }
}

/// `flags`: the copy is complete (a peer list entry can be written from it alone).
const COMPLETE: u8 = 1;
/// `flags`: the address kind (2 bits) and the link kind (2 bits) start here.
const KIND_SHIFT: u8 = 1;
const LINK_SHIFT: u8 = 3;
/// `flags`: the address says `"peer_protocol": "PPSP-PP"`.
const PPSP_PP: u8 = 1 << 5;
/// `flags` of a reflexive address ([`PeerAddr::reflexive`]: [`addr_flags`] of kind 1, no link
/// kind, no PPSP-PP).
const REFLEXIVE: u8 = 1 << KIND_SHIFT;

/// One membership in a swarm: the handle of the peer's record ([`super::tables::PeerShard::key`]:
/// peer shard, generation, slot) and the copy of its peer-list entry (see the module
/// documentation). 36 bytes: packed to 4-byte alignment (the handle is read and written by
/// value only), so that a 20-byte stored id leaves no padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, packed(4))]
pub(super) struct Member {
    pub key: u64,
    /// The one IPv4 address, network order.
    ip: [u8; 4],
    port: u16,
    /// Length byte of the stored id ([`StoredId::len_flag`]).
    id_len: u8,
    flags: u8,
    /// The stored id (first `id_len & !HEX` bytes), when it fits.
    id: [u8; MEMBER_ID_BYTES],
}

impl Member {
    /// A membership without a copy: a peer list reads the record.
    pub fn keyed(key: u64) -> Self {
        Member {
            key,
            ip: [0; 4],
            port: 0,
            id_len: 0,
            flags: 0,
            id: [0; MEMBER_ID_BYTES],
        }
    }

    /// The membership of the peer with handle `key`, stored id `id`, and the addresses a peer
    /// list gives for it (`announced`, or the reflexive `reflexive` when it announced none).
    pub fn new(
        key: u64,
        id: &[u8],
        id_len: u8,
        announced: Option<&[PeerAddr]>,
        reflexive: SocketAddr,
    ) -> Self {
        let mut m = Member::keyed(key);
        let reflexive = PeerAddr::reflexive(reflexive);
        let addr = match announced {
            None => Some(&reflexive),
            Some([one]) => Some(one),
            Some(_) => None,
        };
        let Some(addr) = addr else {
            return m;
        };
        let SocketAddr::V4(v4) = addr.addr else {
            return m;
        };
        let Some(flags) = addr_flags(addr) else {
            return m;
        };
        if id.len() > MEMBER_ID_BYTES {
            return m;
        }
        m.ip = v4.ip().octets();
        m.port = v4.port();
        m.id_len = id_len;
        m.id[..id.len()].copy_from_slice(id);
        m.flags = COMPLETE | flags;
        m
    }

    /// The membership of the peer with handle `key` and stored id `id` that announced no
    /// address and registered from IPv4 address `ip`, port `port` (most peers): what
    /// [`Member::new`] gives for its reflexive address, without building the address.
    #[inline]
    pub fn reflexive_v4(key: u64, id: &[u8], id_len: u8, ip: [u8; 4], port: u16) -> Self {
        let mut m = Member::keyed(key);
        let Some(stored) = m.id.get_mut(..id.len()) else {
            return m;
        };
        stored.copy_from_slice(id);
        m.ip = ip;
        m.port = port;
        m.id_len = id_len;
        m.flags = COMPLETE | REFLEXIVE;
        m
    }

    /// Whether a peer list entry can be written from the copy alone.
    pub fn is_complete(&self) -> bool {
        self.flags & COMPLETE != 0
    }

    /// The peer list entry of this member in mode `mode`, from the copy; `None` when the copy
    /// is incomplete.
    pub fn peer_info(&self, mode: PeerMode) -> Option<PeerInfo> {
        self.is_complete().then(|| self.entry(mode))
    }

    /// The peer list entry of this member in mode `mode`, from the copy, which the caller
    /// checked is complete ([`Member::is_complete`]): the copy's 28 bytes moved into a
    /// [`ListEntry`] as they are (the id stays in stored form, the IPv4 address in its 4
    /// bytes), nothing unpacked.
    #[inline(always)]
    pub fn entry(&self, mode: PeerMode) -> PeerInfo {
        let [a, b, c, d] = self.ip;
        PeerInfo::compact(
            mode,
            ListEntry {
                id_len: self.id_len,
                flags: self.flags & !COMPLETE,
                port: self.port,
                ip: [a, b, c, d, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                id: self.id,
            },
        )
    }
}

/// The descriptor bits of `addr` (kind, link, PPSP-PP) when a compact form can hold it: a
/// priority of 1 and no ASN (what a reflexive address has, and what most peers announce).
fn addr_flags(addr: &PeerAddr) -> Option<u8> {
    if addr.priority != 1 || addr.asn.is_some() {
        return None;
    }
    let kind = match addr.kind {
        AddrType::Host => 0,
        AddrType::Reflexive => 1,
        AddrType::Proxy => 2,
    };
    let link = match addr.connection {
        None => 0,
        Some(LinkKind::Wired) => 1,
        Some(LinkKind::Wireless) => 2,
    };
    Some((kind << KIND_SHIFT) | (link << LINK_SHIFT) | if addr.ppsp_pp { PPSP_PP } else { 0 })
}

/// `ListEntry::flags`: the address is IPv6 (all 16 bytes of `ip`), else IPv4 (its first 4).
const V6: u8 = 1 << 6;

/// The compact form of a peer list entry ([`PeerInfo`]): a peer with one address (IPv4 or
/// IPv6, priority 1, no ASN) whose id takes at most [`MEMBER_ID_BYTES`] in stored form (see
/// the module documentation). 40 bytes, nothing on the heap; a swarm's copy of a member
/// ([`Member`]) becomes one by a plain copy.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct ListEntry {
    /// Length byte of the stored id ([`StoredId::len_flag`]).
    id_len: u8,
    /// The address's descriptors ([`addr_flags`]) and [`V6`].
    flags: u8,
    port: u16,
    /// The address, network order: IPv4 in the first 4 bytes (the rest zero).
    ip: [u8; 16],
    /// The stored id (first `id_len & !HEX` bytes; the rest zero).
    id: [u8; MEMBER_ID_BYTES],
}

impl ListEntry {
    /// An entry with an empty id: a placeholder that no peer's entry equals.
    pub const VACANT: ListEntry = ListEntry {
        id_len: 0,
        flags: 0,
        port: 0,
        ip: [0; 16],
        id: [0; MEMBER_ID_BYTES],
    };

    /// Whether this is [`ListEntry::VACANT`].
    pub fn is_vacant(&self) -> bool {
        self.id_len & !HEX == 0
    }

    /// The compact entry of a peer with stored id `id` (length byte `id_len`) and addresses
    /// `addrs`, if it has one.
    pub fn of(id: &[u8], id_len: u8, addrs: &[PeerAddr]) -> Option<Self> {
        let [addr] = addrs else {
            return None;
        };
        let flags = addr_flags(addr)?;
        if id.len() > MEMBER_ID_BYTES {
            return None;
        }
        let mut e = ListEntry {
            id_len,
            flags,
            port: addr.addr.port(),
            ip: [0; 16],
            id: [0; MEMBER_ID_BYTES],
        };
        e.id[..id.len()].copy_from_slice(id);
        match addr.addr.ip() {
            IpAddr::V4(v4) => e.ip[..4].copy_from_slice(&v4.octets()),
            IpAddr::V6(v6) => {
                e.ip = v6.octets();
                e.flags |= V6;
            }
        }
        Some(e)
    }

    /// The stored id bytes.
    fn stored(&self) -> &[u8] {
        let n = usize::from(self.id_len & !HEX).min(MEMBER_ID_BYTES);
        self.id.get(..n).unwrap_or(&[])
    }

    /// The id as the peer announced it.
    pub fn peer_id(&self) -> PeerId {
        unpack(self.stored(), self.id_len)
    }

    /// The id's bytes as the peer announced it, expanded into `buf` when stored packed
    /// ([`unpack_into`]).
    pub fn id_bytes<'a>(&'a self, buf: &'a mut [u8; MAX_ID_BYTES]) -> &'a [u8] {
        unpack_into(self.stored(), self.id_len, buf)
    }

    /// Length of the id as the peer announced it, in bytes.
    pub fn id_len(&self) -> usize {
        let n = self.stored().len();
        if self.id_len & HEX == 0 {
            n
        } else {
            2 * n
        }
    }

    /// Whether `want` (an id as received) is this entry's id.
    pub fn has_id(&self, want: &[u8]) -> bool {
        stored_eq(self.stored(), self.id_len, want)
    }

    /// The one address with its descriptors.
    pub fn addr(&self) -> PeerAddr {
        let kind = match (self.flags >> KIND_SHIFT) & 3 {
            0 => AddrType::Host,
            1 => AddrType::Reflexive,
            _ => AddrType::Proxy,
        };
        let connection = match (self.flags >> LINK_SHIFT) & 3 {
            0 => None,
            1 => Some(LinkKind::Wired),
            _ => Some(LinkKind::Wireless),
        };
        let ip = if self.flags & V6 != 0 {
            IpAddr::V6(Ipv6Addr::from(self.ip))
        } else {
            let [a, b, c, d, ..] = self.ip;
            IpAddr::V4(Ipv4Addr::new(a, b, c, d))
        };
        PeerAddr {
            addr: SocketAddr::new(ip, self.port),
            priority: 1,
            kind,
            connection,
            asn: None,
            ppsp_pp: self.flags & PPSP_PP != 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_member_is_36_bytes() {
        assert_eq!(std::mem::size_of::<Member>(), 36);
        assert_eq!(std::mem::align_of::<Member>(), 4);
    }

    #[test]
    fn a_compact_id_is_24_bytes() {
        assert!(std::mem::size_of::<CompactId>() <= 24);
    }

    #[test]
    fn hex_ids_pack_to_half() {
        let id = b"00ff10a9b8c7d6e5f4030201aabbccddeeff0011";
        let s = StoredId::pack(id);
        assert_eq!(s.bytes().len(), 20);
        assert_ne!(s.len_flag() & HEX, 0);
        assert_eq!(unpack(s.bytes(), s.len_flag()).as_bytes(), &id[..]);
        for raw in [&b"ABCD"[..], b"abc", b"xyz0", b"\xab", b"0g"] {
            let s = StoredId::pack(raw);
            assert_eq!(s.len_flag() & HEX, 0, "{raw:?} is kept as it is");
            assert_eq!(s.bytes(), raw);
        }
    }

    fn addr(a: SocketAddr, priority: u32, kind: AddrType, asn: Option<u32>) -> PeerAddr {
        PeerAddr {
            addr: a,
            priority,
            kind,
            connection: Some(LinkKind::Wireless),
            asn,
            ppsp_pp: true,
        }
    }

    #[test]
    fn the_copy_gives_the_records_entry_or_nothing() {
        let v4: SocketAddr = "10.1.2.3:7000".parse().expect("addr");
        let v6: SocketAddr = "[2001:db8::1]:7000".parse().expect("addr");
        let id = StoredId::pack(b"0123456789abcdef0123456789abcdef01234567");
        let m = Member::new(9, id.bytes(), id.len_flag(), None, v4);
        let info = m.peer_info(PeerMode::Seeder).expect("complete");
        assert_eq!(info.addrs().as_slice(), &[PeerAddr::reflexive(v4)]);
        assert_eq!(
            info.peer_id().as_bytes(),
            b"0123456789abcdef0123456789abcdef01234567"
        );
        let one = [addr(v4, 1, AddrType::Proxy, None)];
        let m = Member::new(9, id.bytes(), id.len_flag(), Some(&one), v4);
        assert_eq!(
            m.peer_info(PeerMode::Leech)
                .expect("complete")
                .addrs()
                .as_slice(),
            &one
        );
        for incomplete in [
            vec![addr(v6, 1, AddrType::Host, None)],
            vec![addr(v4, 2, AddrType::Host, None)],
            vec![addr(v4, 1, AddrType::Host, Some(7))],
            vec![addr(v4, 1, AddrType::Host, None); 2],
        ] {
            let m = Member::new(9, id.bytes(), id.len_flag(), Some(&incomplete), v4);
            assert!(m.peer_info(PeerMode::Leech).is_none(), "{incomplete:?}");
        }
        // Entries compare equal to ids made from their bytes (equality reads the whole
        // buffer, so the bytes past the id's length must be zero): a packed hex id, a binary
        // one of the copy's full 20 bytes, and a short one.
        for raw in [
            &b"0123456789abcdef0123456789abcdef01234567"[..],
            b"-LG0001-\x00\xff\x10\x80abcdefgh",
            b"ab",
            b"Z",
        ] {
            let s = StoredId::pack(raw);
            let entry = Member::new(9, s.bytes(), s.len_flag(), None, v4)
                .peer_info(PeerMode::Seeder)
                .expect("complete");
            assert_eq!(entry.peer_id(), PeerId::new(raw).expect("id"), "{raw:?}");
            assert_eq!(entry.addrs().len(), 1);
        }
        let long = StoredId::pack(&[b'x'; 30]);
        assert!(Member::new(9, long.bytes(), long.len_flag(), None, v4)
            .peer_info(PeerMode::Leech)
            .is_none());
        assert!(Member::new(9, id.bytes(), id.len_flag(), None, v6)
            .peer_info(PeerMode::Leech)
            .is_none());
    }

    proptest! {
        /// The reflexive shortcut gives the membership [`Member::new`] gives a peer that
        /// announced no address and registered from IPv4.
        #[test]
        fn a_reflexive_member_is_the_general_one(
            id in prop::collection::vec(any::<u8>(), 1..=64),
            hexy in any::<bool>(),
            ip in any::<[u8; 4]>(),
            port in any::<u16>(),
            key in any::<u64>(),
        ) {
            let id: Vec<u8> = if hexy {
                id.iter().map(|b| b"0123456789abcdef"[usize::from(b & 15)]).collect()
            } else {
                id
            };
            let s = StoredId::pack(&id);
            let source = SocketAddr::from((ip, port));
            let general = Member::new(key, s.bytes(), s.len_flag(), None, source);
            let short = Member::reflexive_v4(key, s.bytes(), s.len_flag(), ip, port);
            prop_assert_eq!(short, general);
            prop_assert_eq!(short.is_complete(), s.bytes().len() <= MEMBER_ID_BYTES);
        }
    }

    #[test]
    fn a_peer_list_entry_is_small() {
        assert!(std::mem::size_of::<PeerInfo>() <= 56);
        assert_eq!(std::mem::size_of::<ListEntry>(), 40);
    }

    proptest! {
        /// A peer list entry gives back the id, mode and addresses it was made from, compact
        /// (one address of either family, priority 1, no ASN, a short or hex id) or not, and
        /// compares equal to an entry made from the same values.
        #[test]
        fn entries_round_trip(
            id in prop::collection::vec(any::<u8>(), 1..=64),
            hexy in any::<bool>(),
            v6 in any::<bool>(),
            port in any::<u16>(),
            priority in 1u32..3,
            asn in prop::option::of(any::<u32>()),
            count in 0usize..3,
            seeder in any::<bool>(),
        ) {
            let id: Vec<u8> = if hexy {
                id.iter().map(|b| b"0123456789abcdef"[usize::from(b & 15)]).collect()
            } else {
                id
            };
            let a: SocketAddr = if v6 {
                SocketAddr::new(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 7, port)), port)
            } else {
                SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 1, (port >> 8) as u8, port as u8)), port)
            };
            let addrs = vec![addr(a, priority, AddrType::Host, asn); count];
            let mode = if seeder { PeerMode::Seeder } else { PeerMode::Leech };
            let peer_id = PeerId::new(&id).expect("id");
            let entry = PeerInfo::new(peer_id, mode, &addrs);
            prop_assert_eq!(entry.peer_id(), peer_id);
            prop_assert_eq!(entry.id_len(), id.len());
            let mut buf = [0u8; MAX_ID_BYTES];
            prop_assert_eq!(entry.id_bytes(&mut buf), &id[..]);
            prop_assert!(entry.has_id(&id));
            prop_assert!(!entry.has_id(&id[..id.len() - 1]));
            prop_assert_eq!(entry.mode, mode);
            let listed = entry.addrs();
            prop_assert_eq!(listed.as_slice(), &addrs[..]);
            prop_assert_eq!(&entry.clone(), &entry);
            let stored = StoredId::pack(&id);
            let again = PeerInfo::from_stored(stored.bytes(), stored.len_flag(), mode, &addrs);
            prop_assert_eq!(&again, &entry);
        }
    }

    proptest! {
        /// Every id maps to one stored form and back.
        #[test]
        fn ids_round_trip(id in prop::collection::vec(any::<u8>(), 1..=64), hexy in any::<bool>()) {
            let id: Vec<u8> = if hexy {
                id.iter().map(|b| b"0123456789abcdef"[usize::from(b & 15)]).collect()
            } else {
                id
            };
            let s = StoredId::pack(&id);
            let back = unpack(s.bytes(), s.len_flag());
            prop_assert_eq!(back.as_bytes(), &id[..]);
            // Packed exactly when every byte is a lower-case hex digit and there are pairs.
            let hex = id.len() % 2 == 0 && id.iter().all(|b| b"0123456789abcdef".contains(b));
            prop_assert_eq!(s.len_flag() & HEX != 0, hex);
            prop_assert_eq!(s.bytes().len(), if hex { id.len() / 2 } else { id.len() });
            let c = CompactId::new(&id);
            let unpacked = c.unpack();
            prop_assert_eq!(unpacked.as_bytes(), &id[..]);
            prop_assert!(c.matches(&id));
            let mut other = id.clone();
            other.push(b'0');
            prop_assert!(!c.matches(&other));
            other.truncate(id.len() - 1);
            prop_assert!(!c.matches(&other));
            let mut flipped = id.clone();
            if let Some(first) = flipped.first_mut() {
                *first ^= 1;
            }
            prop_assert!(!c.matches(&flipped));
            prop_assert!(!CompactId::new(&flipped).matches(&id));
        }
    }
}
