//! The protocol-neutral announce ([`RequestKind::Announce`]): how BitTorrent clients, which
//! re-announce the same swarm every few minutes, map onto the engine.
//!
//! An announce is valid at any time: it adds the peer to the swarm or refreshes its membership
//! (mode change, stamp), and answers a peer list and the swarm's counts. BitTorrent peers live
//! in their own table (`bt_table.rs`), identified by (source IP, announced port) inside their
//! swarm, so an announce takes exactly one lock, that of the swarm's shard, and the peer list
//! is copied from the table's wire-form entries straight into the caller's buffers.
//!
//! The swarm id of an announce is an info-hash (20 bytes). BitTorrent and PPSTP peers of the
//! same id are kept apart: a peer list holds peers of its own protocol only, while swarm
//! statistics (STAT_QUERY, scrape) count both.
//!
//! The engine peer id of a BitTorrent peer, used where a request must name it (a LEAVE for
//! `event=stopped`, a STAT_QUERY made on its behalf), is [`bt_peer_id`]:
//! `00 62 74 34` (`"\0bt4"`) + 4-byte IPv4 address + 2-byte port (10 bytes), or
//! `00 62 74 36` (`"\0bt6"`) + 16-byte IPv6 address + 2-byte port (22 bytes), big-endian. The
//! leading NUL keeps these apart from PPSTP peer ids, which are printable strings.

use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::Ordering;

use parking_lot::Mutex;

use rand::rngs::SmallRng;

use super::bt_table::{
    sample, stamp, Block, BtShard, Entry, Found, InfoHash, Members, SwarmRef, COMPACT_V4_LEN,
    COMPACT_V6_LEN,
};
use super::types::*;
use super::{reserve, source_ip, Engine, ExpiryReport};

/// Prefix of the engine peer id of a BitTorrent peer announcing from IPv4.
pub const BT_PEER_ID_PREFIX_V4: [u8; 4] = *b"\x00bt4";
/// Prefix of the engine peer id of a BitTorrent peer announcing from IPv6.
pub const BT_PEER_ID_PREFIX_V6: [u8; 4] = *b"\x00bt6";

/// An IP address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// The family of `ip` after [`canonical_ip`].
    pub fn of(ip: IpAddr) -> Family {
        match canonical_ip(ip) {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

/// `ip`, with IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) turned into IPv4.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// The engine peer id of the BitTorrent peer at `ip` listening on `port` (layout in the module
/// documentation).
pub fn bt_peer_id(ip: IpAddr, port: u16) -> PeerId {
    let p = port.to_be_bytes();
    match canonical_ip(ip) {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            let [x0, x1, x2, x3] = BT_PEER_ID_PREFIX_V4;
            PeerId::from_array([x0, x1, x2, x3, a, b, c, d, p[0], p[1]])
        }
        IpAddr::V6(v6) => {
            let mut id = [0u8; 22];
            id[..4].copy_from_slice(&BT_PEER_ID_PREFIX_V6);
            id[4..20].copy_from_slice(&v6.octets());
            id[20..].copy_from_slice(&p);
            PeerId::from_array(id)
        }
    }
}

/// The address a [`bt_peer_id`] names, if `id` is one.
pub fn bt_peer_addr(id: &PeerId) -> Option<SocketAddr> {
    let b = id.as_bytes();
    let port = |p: &[u8]| u16::from_be_bytes([p[0], p[1]]);
    match (b.get(..4), b.len()) {
        (Some(p), 10) if p == BT_PEER_ID_PREFIX_V4 => {
            let ip: [u8; 4] = b[4..8].try_into().ok()?;
            Some(SocketAddr::new(Ipv4Addr::from(ip).into(), port(&b[8..])))
        }
        (Some(p), 22) if p == BT_PEER_ID_PREFIX_V6 => {
            let ip: [u8; 16] = b[4..20].try_into().ok()?;
            Some(SocketAddr::new(Ipv6Addr::from(ip).into(), port(&b[20..])))
        }
        _ => None,
    }
}

/// A BitTorrent peer list in wire form, filled by [`Engine::announce_compact`]. Reused between
/// requests, it allocates nothing once grown.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactPeers {
    /// IPv4 peers, 6 bytes each (BEP 23: address, port, big-endian).
    pub v4: Vec<u8>,
    /// IPv6 peers, 18 bytes each (BEP 7).
    pub v6: Vec<u8>,
}

impl CompactPeers {
    pub fn clear(&mut self) {
        self.v4.clear();
        self.v6.clear();
    }

    /// Number of listed peers of both families.
    pub fn len(&self) -> usize {
        self.v4.len() / COMPACT_V4_LEN + self.v6.len() / COMPACT_V6_LEN
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// The listed addresses: IPv4 first, then IPv6.
    pub fn addrs(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        let v4 = self.v4.chunks_exact(COMPACT_V4_LEN).map(wire_addr);
        let v6 = self.v6.chunks_exact(COMPACT_V6_LEN).map(wire_addr);
        v4.chain(v6)
    }

    /// Appends `addr` in wire form to the list of its family.
    pub fn push(&mut self, addr: SocketAddr) {
        match canonical_ip(addr.ip()) {
            IpAddr::V4(ip) => {
                self.v4.extend_from_slice(&ip.octets());
                self.v4.extend_from_slice(&addr.port().to_be_bytes());
            }
            IpAddr::V6(ip) => {
                self.v6.extend_from_slice(&ip.octets());
                self.v6.extend_from_slice(&addr.port().to_be_bytes());
            }
        }
    }
}

/// Which peers a BitTorrent peer list holds, besides the engine's rules (never the requester,
/// never a port-0 member, no seeders for a seeder).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListFamilies {
    /// The family listed first (BEP 15: the family of the request's packet).
    pub first: Family,
    /// Whether peers of the other family fill up the list (BEP 3/7 over HTTP).
    pub fallback: bool,
}

/// The address in a compact wire entry (6 or 18 bytes).
fn wire_addr(w: &[u8]) -> SocketAddr {
    let n = w.len();
    let port = u16::from_be_bytes([w[n - 2], w[n - 1]]);
    let ip: IpAddr = match <[u8; 4]>::try_from(&w[..n - 2]) {
        Ok(v4) => Ipv4Addr::from(v4).into(),
        Err(_) => {
            let mut v6 = [0u8; 16];
            v6.copy_from_slice(&w[..16.min(n - 2)]);
            Ipv6Addr::from(v6).into()
        }
    };
    SocketAddr::new(ip, port)
}

/// Swarms in the BitTorrent table below which [`BtPrefetch`] does nothing: 32,768
/// slots of 48 bytes are 1.5 MiB, which a core's L2 cache holds, so a prefetch would only add
/// work.
pub const PREFETCH_MIN_SWARMS: usize = 32_768;

/// Asks the CPU to bring the cache line at `p` into its caches (x86-64 `prefetcht0`); does
/// nothing on other targets. A prefetch never faults and reads nothing the program sees.
///
/// With the diagnostic feature `prefetch-reads` it reads the byte at `p` instead, so that a
/// cache simulator that ignores prefetch instructions (callgrind's) charges the line's miss
/// to the prefetching function rather than to the code that uses the line: which misses the
/// prefetches take over is then counted, repeatably. Only for profiling a table that does
/// not change under its prefetches (`benches/bt_scale.rs`): a stale address would be read.
#[inline(always)]
pub(super) fn prefetch(p: *const u8) {
    #[cfg(feature = "prefetch-reads")]
    // SAFETY: diagnostic builds only (see above): every address handed here lies in a live
    // allocation of the table, or in a cache line one shares, while the table is unchanged.
    unsafe {
        std::ptr::read_volatile(p);
    }
    #[cfg(all(target_arch = "x86_64", not(feature = "prefetch-reads")))]
    // SAFETY: `prefetcht0` is a hint: it does not fault or change memory, whatever the
    // address (SSE is part of x86-64).
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
    }
    #[cfg(not(any(target_arch = "x86_64", feature = "prefetch-reads")))]
    let _ = p;
}

/// Starts loading every cache line `value` occupies (64-byte lines) into the cache; an object
/// need not start on a line, so its last byte's line is loaded too.
pub(super) fn prefetch_object<T>(value: &T) {
    let p = (value as *const T).cast::<u8>();
    let size = std::mem::size_of::<T>();
    for offset in (0..size).step_by(64) {
        prefetch(p.wrapping_add(offset));
    }
    prefetch(p.wrapping_add(size.saturating_sub(1)));
}

/// What a datagram will do with its swarm, as far as its prefetch can tell from the packet:
/// which lines of the swarm's member block [`BtPrefetch`]'s last step loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BtUse {
    /// The swarm's counts only (a scrape): the slot holds them, no member block is read.
    Counts,
    /// An announce by a peer of `mode` (BEP 15 `left` 0: a seeder) asking for `want` peers
    /// (the count the front end will ask the engine for): the search for the requester in its
    /// part and the entries its peer list will copy.
    Announce { mode: PeerMode, want: usize },
}

/// A staged prefetch of the BitTorrent swarms of the next few datagrams of a batch: each
/// datagram's three dependent loads (index line, swarm slot, member block) are started one
/// datagram apart, each step reading only what the step before it loaded, so that the misses
/// of several datagrams overlap instead of following one another. [`BtPrefetch::push`]
/// notes a datagram's info-hash and what it will do ([`BtUse`]; the back-ends hand
/// datagrams to the prefetch hook `PREFETCH_AHEAD` = 3 datagrams before serving them);
/// [`BtPrefetch::advance`], called as each datagram is served, takes every noted one a step
/// further (index line, then slot, then member block), so a datagram's three steps come in
/// the three services before its own.
///
/// The last step reads only the slot: the member block's place, its length and its seeder
/// count are kept there. For an announce it loads the block's first line, the first two
/// steps of the binary search for the requester in the part of its announced mode, and the
/// entries its peer list will copy: the list is sampled ([`sample`]) from the shard's random
/// generator, so a copy of the generator draws the same positions, unless an announce to
/// another swarm of the shard is served in between (the copy's positions are then wasted
/// loads, nothing else). It assumes a re-announce (the requester in its own part, skipped
/// there); a new member or a changed mode shifts positions by one, mostly inside the same
/// line.
///
/// Changes nothing in the engine; interior mutability, so that a worker's `&self` prefetch
/// hook can keep one. Holds at most [`BtPrefetch::DEPTH`] datagrams (a newer one replaces
/// the oldest).
#[derive(Debug)]
pub struct BtPrefetch {
    /// The datagrams under way; step [`BtPrefetch::DONE`] marks a free place.
    ring: std::cell::Cell<[Noted; BtPrefetch::DEPTH]>,
}

/// One datagram under way in a [`BtPrefetch`].
#[derive(Clone, Copy, Debug)]
struct Noted {
    /// The info-hash's hash (the engine's hasher).
    hash: u64,
    /// The next step: 0 index line, 1 slot, 2 member block, [`BtPrefetch::DONE`].
    step: u8,
    what: BtUse,
}

impl Default for BtPrefetch {
    fn default() -> Self {
        BtPrefetch {
            ring: std::cell::Cell::new(
                [Noted {
                    hash: 0,
                    step: Self::DONE,
                    what: BtUse::Counts,
                }; Self::DEPTH],
            ),
        }
    }
}

impl BtPrefetch {
    /// Datagrams under way at most: three steps and the one just noted.
    pub const DEPTH: usize = 4;
    const DONE: u8 = 3;

    /// Notes `info_hash`'s swarm, to be used as `what` says, for the next steps. Does nothing
    /// while the table is small ([`PREFETCH_MIN_SWARMS`]).
    #[inline]
    pub fn push(&self, engine: &Engine, info_hash: &InfoHash, what: BtUse) {
        if !engine.prefetch_bt_useful() {
            return;
        }
        let hash = engine.bt_hasher.hash_one(info_hash);
        let mut ring = self.ring.get();
        // A free place, or else the oldest datagram (furthest along).
        let at = (0..Self::DEPTH)
            .max_by_key(|&i| ring[i].step)
            .unwrap_or_default();
        ring[at] = Noted {
            hash,
            step: 0,
            what,
        };
        self.ring.set(ring);
    }

    /// Takes every noted datagram a step further (cheap when none is under way).
    #[inline]
    pub fn advance(&self, engine: &Engine) {
        let mut ring = self.ring.get();
        if ring.iter().all(|n| n.step == Self::DONE) {
            return;
        }
        for n in ring.iter_mut() {
            match n.step {
                0 => engine.prefetch_bt_index_line(n.hash),
                1 => engine.prefetch_bt_slot(n.hash),
                2 => engine.prefetch_bt_members(n.hash, n.what),
                _ => continue,
            }
            n.step += 1;
        }
        self.ring.set(ring);
    }
}

/// Blocks of at most this many bytes (eight cache lines) are loaded whole by the staged
/// prefetch: a search and a list in them read most of their lines.
const PREFETCH_WHOLE_BLOCK: usize = 512;

/// Hands `f` an address in each cache line of the `len` bytes from `p` (from the line `p` is
/// on: `p` need not start one).
fn lines(p: *const u8, len: usize, f: &mut impl FnMut(*const u8)) {
    let skew = p as usize % 64;
    for offset in (0..len + skew).step_by(64) {
        f(p.wrapping_sub(skew).wrapping_add(offset));
    }
}

/// The staged prefetch's last step for an announce (see [`BtPrefetch`]): hands `prefetch`
/// the addresses of the lines of `block` that the search for a `requester` of its part and
/// its list of `want` peers will read, drawing the list's positions from a copy of the
/// shard's generator `rng`.
fn prefetch_announce(
    block: &Block,
    requester: PeerMode,
    want: usize,
    rng: &SmallRng,
    mut prefetch: impl FnMut(*const u8),
) {
    let head = block.head();
    if block.bytes() <= PREFETCH_WHOLE_BLOCK {
        lines(head, block.bytes(), &mut prefetch);
        return;
    }
    prefetch(head);
    // The search's first two steps (see `bt_table::search`): the middle, then a quarter or
    // three quarters.
    let (base, n) = block.part(requester);
    if n >= 2 {
        let half = n / 2;
        let h1 = (n - half) / 2;
        prefetch(block.entry(base + half));
        prefetch(block.entry(base + h1));
        prefetch(block.entry(base + half + h1));
    }
    // The list, as `list` samples it (the same parts in the same order, the same draws).
    let mut rng = rng.clone();
    let mut listed = 0;
    for &mode in list_order(requester) {
        if listed >= want {
            break;
        }
        let (base, n) = block.part(mode);
        // A re-announce: the requester is in its own part, which the list skips.
        let skip = (mode == requester && n > 0).then(|| n - 1);
        let m = n - usize::from(skip.is_some());
        let take = (want - listed).min(m);
        if take == m {
            // All of the part (no draw, as in `sample`).
            lines(block.entry(base), n * block.entry_size(), &mut prefetch);
        } else {
            sample(n, skip, want - listed, &mut rng, |i| {
                let p = block.entry(base + i);
                prefetch(p);
                // Past the requester the entry listed is the next one; it starts a new line
                // exactly when this one ends one.
                let next = p.wrapping_add(block.entry_size());
                if next as usize % 64 == 0 && base + i + 1 < block.len {
                    prefetch(next);
                }
            });
        }
        listed += take;
    }
}

/// What an announce did to the requester's membership.
enum Change {
    New,
    Moved(PeerMode),
    Refreshed,
}

impl Engine {
    pub(super) fn bt_shard(&self, hash: u64) -> &Mutex<BtShard> {
        // The high half's top bits pick the shard; the shard's index uses the low half (the
        // home bucket) and bits 32..40 (the tag). `prefetch_bt_index_line` picks alike.
        let n = self.bt_shards.len() as u64;
        &self.bt_shards[(((hash >> 32) * n) >> 32) as usize]
    }

    /// Whether prefetching BitTorrent swarms is worth its work: the table has at least
    /// [`PREFETCH_MIN_SWARMS`] swarms.
    #[inline]
    pub fn prefetch_bt_useful(&self) -> bool {
        self.bt_swarms.load(Ordering::Relaxed) >= PREFETCH_MIN_SWARMS
    }

    /// Starts loading the index bucket that the lookup of `hash` reads first (its home
    /// bucket). Reads only the bucket address the shard's index publishes
    /// ([`super::line_index::Geometry`]): takes no lock and changes nothing.
    #[inline]
    pub fn prefetch_bt_index_line(&self, hash: u64) {
        let n = self.bt_geometry.len() as u64;
        if let Some(g) = self.bt_geometry.get((((hash >> 32) * n) >> 32) as usize) {
            g.prefetch(hash);
        }
    }

    /// The second step: reads the index line (loaded by the first step) and starts loading the
    /// swarm slot it most likely names, without reading the slot. Changes nothing; the
    /// shard's lock is only tried.
    #[inline]
    pub fn prefetch_bt_slot(&self, hash: u64) {
        let Some(shard) = self.bt_shard(hash).try_lock() else {
            return;
        };
        if let Some(slot) = shard.probable_slot(hash) {
            prefetch_object(slot);
        }
    }

    /// The third step: reads the slot (loaded by the second step) and, for an announce,
    /// starts loading the lines of its IPv4 members' heap block (if it has one) that the
    /// announce will read ([`BtPrefetch`]). Changes nothing; the shard's lock is only tried.
    #[inline]
    pub fn prefetch_bt_members(&self, hash: u64, what: BtUse) {
        let BtUse::Announce { mode, want } = what else {
            return;
        };
        let Some(shard) = self.bt_shard(hash).try_lock() else {
            return;
        };
        if let Some(block) = shard.probable_slot(hash).and_then(|s| s.v4.block()) {
            let want = want.min(self.config.max_peer_count as usize);
            prefetch_announce(&block, mode, want, &shard.rng, prefetch);
        }
    }

    /// The info-hash of a swarm id, 01 when it is not 20 bytes.
    pub(super) fn info_hash(swarm_id: &SwarmId) -> Result<InfoHash, ErrorCode> {
        swarm_id
            .as_bytes()
            .try_into()
            .map_err(|_| ErrorCode::BadRequest)
    }

    /// Applies an announce and writes its peer list, in wire form, into `peers` (cleared
    /// first; a reused value makes an announce allocation-free). Returns the swarm's
    /// statistics after the announce (both tables' counts).
    ///
    /// The peer is (source IP, `addr`'s port); `request.peer_id` is not used. The list holds
    /// up to `peer_num.peer_count` (or the default) peers of `families.first`, then, with
    /// `families.fallback`, of the other family; never the requester nor a port-0 member; a
    /// seeder gets leechers only, anyone else seeders first.
    ///
    /// Errors (nothing changed): 01 when `request` is not an announce or its swarm id is not
    /// 20 bytes; 05 when a new member would exceed `max_peers` or `max_peers_per_swarm`, or a
    /// new swarm `max_swarms`.
    pub fn announce_compact(
        &self,
        request: &Request,
        now: Time,
        families: ListFamilies,
        peers: &mut CompactPeers,
    ) -> Result<SwarmStats, ErrorCode> {
        peers.clear();
        self.announce_with(request, now, families, peers)
    }

    /// The announce itself, writing the listed peers to `out`.
    fn announce_with(
        &self,
        request: &Request,
        now: Time,
        families: ListFamilies,
        out: &mut impl ListOut,
    ) -> Result<SwarmStats, ErrorCode> {
        let RequestKind::Announce {
            swarm_id,
            mode,
            addr,
            peer_num,
        } = &request.kind
        else {
            return Err(ErrorCode::BadRequest);
        };
        let info_hash = Self::info_hash(swarm_id)?;
        let mode = *mode;
        let count = self.peer_count(peer_num.as_ref());
        let ip = source_ip(request);
        let port = addr.addr.port();
        let stamp = stamp(now);

        let hash = self.bt_hasher.hash_one(info_hash);
        let mut guard = self.bt_shard(hash).lock();
        let shard = &mut *guard;
        let pos = match shard.find(hash, &info_hash) {
            Some(pos) => pos,
            None => {
                if self.config.max_peers_per_swarm == 0
                    || !reserve(&self.swarms, self.config.max_swarms)
                {
                    return Err(ErrorCode::ServiceUnavailable);
                }
                self.bt_swarms.fetch_add(1, Ordering::Relaxed);
                let pos = shard.insert(&self.bt_hasher, hash, info_hash);
                if let Some(r) = shard.retired.remove(&info_hash) {
                    if let Some(swarm) = shard.swarms.get_mut(pos) {
                        swarm.completed = r.completed;
                    }
                }
                pos
            }
        };
        let BtShard {
            swarms,
            v6: v6_members,
            rng,
            seeders,
            leechers,
            ..
        } = shard;
        let Some(swarm) = swarms.get_mut(pos) else {
            return Err(ErrorCode::InternalError);
        };
        let full = SwarmRef::of(swarm, v6_members).len() >= self.config.max_peers_per_swarm;
        let applied = match ip {
            IpAddr::V4(v4) => {
                let wire = wire4(v4, port);
                self.apply(&mut swarm.v4, ip, wire, mode, stamp, full)
            }
            IpAddr::V6(v6) => {
                let wire = wire6(v6, port);
                let r = self.apply(
                    v6_members.entry(info_hash).or_default(),
                    ip,
                    wire,
                    mode,
                    stamp,
                    full,
                );
                BtShard::settle_v6(v6_members, swarm);
                r
            }
        };
        let (change, found) = match applied {
            Ok(x) => x,
            Err(code) => {
                if swarm.is_empty() {
                    self.drop_bt_swarm(shard, pos, now);
                }
                return Err(code);
            }
        };
        let mut count_mode = |m: PeerMode, d: isize| {
            let c = match m {
                PeerMode::Seeder => &mut *seeders,
                PeerMode::Leech => &mut *leechers,
            };
            *c = c.wrapping_add_signed(d);
        };
        match change {
            Change::New => count_mode(mode, 1),
            Change::Moved(from) => {
                count_mode(from, -1);
                count_mode(mode, 1);
                if from == PeerMode::Leech {
                    // BEP 48 `downloaded`: a leecher that became a seeder.
                    swarm.completed = swarm.completed.saturating_add(1);
                }
            }
            Change::Refreshed => {}
        }

        let own = Family::of(ip);
        let swarm = SwarmRef::of(swarm, v6_members);
        let mut left = count;
        for family in [families.first, other(families.first)] {
            if family != families.first && !families.fallback {
                break;
            }
            let me = (family == own).then_some(found);
            left -= match family {
                Family::V4 => list(&swarm.swarm.v4, family, me, mode, left, rng, out),
                Family::V6 => swarm
                    .v6
                    .map_or(0, |m| list(m, family, me, mode, left, rng, out)),
            };
        }
        Ok(self.swarm_stats_with_bt(swarm_id, Some(bt_stats(swarm))))
    }

    /// Adds, moves or refreshes the member `wire` (announced from `ip`) in `members`. A new
    /// member counts in `max_peers` and in its source's `max_peers_per_source`.
    fn apply<const N: usize>(
        &self,
        members: &mut Members<N>,
        ip: IpAddr,
        wire: [u8; N],
        mode: PeerMode,
        stamp: [u8; 2],
        full: bool,
    ) -> Result<(Change, Found), ErrorCode> {
        let found = if self.prefetch_bt_useful() {
            members.find_prefetching(&wire, mode)
        } else {
            members.find(&wire, mode)
        };
        match found {
            Some(found) if found.mode == mode => {
                members.touch(found, stamp);
                Ok((Change::Refreshed, found))
            }
            Some(found) => {
                members.remove(found);
                let pos = members.insert(wire, mode, stamp);
                Ok((Change::Moved(found.mode), Found { mode, pos }))
            }
            None => {
                if full || !self.admit_peer(ip) {
                    return Err(ErrorCode::ServiceUnavailable);
                }
                let pos = members.insert(wire, mode, stamp);
                Ok((Change::New, Found { mode, pos }))
            }
        }
    }

    /// Deletes the empty swarm at `pos` of `shard`, keeping its completion count (if any) as
    /// a retired count, so that scrapes go on reporting it.
    fn drop_bt_swarm(&self, shard: &mut BtShard, pos: usize, now: Time) {
        if let Some(swarm) = shard.swarms.get(pos) {
            if swarm.completed > 0 && shard.retired.len() < self.retired_per_shard() {
                let retired = super::bt_table::RetiredCompletions {
                    completed: swarm.completed,
                    stamp: stamp(now),
                };
                let info_hash = swarm.info_hash;
                shard.retired.insert(info_hash, retired);
            }
        }
        shard.remove_at(&self.bt_hasher, pos);
        self.swarms.fetch_sub(1, Ordering::Relaxed);
        self.bt_swarms.fetch_sub(1, Ordering::Relaxed);
    }

    /// Most retired completion counts one BitTorrent shard keeps: a quarter of its share of
    /// `engine.max_swarms` (at least 16), so that swarms emptied by a flood of short-lived
    /// members cannot take more memory than a quarter of the swarm table.
    pub(super) fn retired_per_shard(&self) -> usize {
        (self.config.max_swarms / self.bt_shards.len().max(1) / 4).max(16)
    }

    /// Takes the BitTorrent peer at `addr` out of the swarm of `info_hash`; `false` when it
    /// was not in it.
    pub(super) fn bt_leave(&self, info_hash: &InfoHash, addr: SocketAddr, now: Time) -> bool {
        let hash = self.bt_hasher.hash_one(info_hash);
        let mut guard = self.bt_shard(hash).lock();
        let shard = &mut *guard;
        let Some(pos) = shard.find(hash, info_hash) else {
            return false;
        };
        let BtShard {
            swarms,
            v6: v6_members,
            ..
        } = &mut *shard;
        let Some(swarm) = swarms.get_mut(pos) else {
            return false;
        };
        let removed = match canonical_ip(addr.ip()) {
            IpAddr::V4(v4) => {
                let wire = wire4(v4, addr.port());
                swarm
                    .v4
                    .find(&wire, PeerMode::Leech)
                    .and_then(|f| swarm.v4.remove(f).map(|_| f.mode))
            }
            IpAddr::V6(v6) => {
                let wire = wire6(v6, addr.port());
                let r = v6_members.get_mut(info_hash).and_then(|m| {
                    let f = m.find(&wire, PeerMode::Leech)?;
                    m.remove(f).map(|_| f.mode)
                });
                BtShard::settle_v6(v6_members, swarm);
                r
            }
        };
        let emptied = swarm.is_empty();
        if let Some(mode) = removed {
            shard.count(mode, -1);
            self.release_peer(canonical_ip(addr.ip()));
        }
        if emptied {
            self.drop_bt_swarm(shard, pos, now);
        }
        removed.is_some()
    }

    /// Statistics of a swarm over both tables (all zero for an unknown swarm): BitTorrent and
    /// PPSTP members, PPSTP traffic totals, completed downloads of both.
    pub fn swarm_stats(&self, swarm_id: &SwarmId) -> SwarmStats {
        self.swarm_stats_with_bt(swarm_id, None)
    }

    /// Statistics of a swarm over both tables: the BitTorrent part from `bt` (when the caller
    /// holds it) or read under the BitTorrent shard's lock, plus the PPSTP part when any PPSTP
    /// swarm exists.
    pub(super) fn swarm_stats_with_bt(
        &self,
        swarm_id: &SwarmId,
        bt: Option<SwarmStats>,
    ) -> SwarmStats {
        let mut stats = match bt {
            Some(s) => s,
            None => match Self::info_hash(swarm_id) {
                Ok(ih) => {
                    let hash = self.bt_hasher.hash_one(ih);
                    let shard = self.bt_shard(hash).lock();
                    match shard.find(hash, &ih).and_then(|p| shard.swarm_ref(p)) {
                        Some(swarm) => bt_stats(swarm),
                        // A swarm without members reports the downloads it had.
                        None => SwarmStats {
                            completed: shard.retired.get(&ih).map_or(0, |r| r.completed),
                            ..SwarmStats::default()
                        },
                    }
                }
                Err(_) => SwarmStats::default(),
            },
        };
        let ppstp_swarms = self
            .swarms
            .load(Ordering::Relaxed)
            .saturating_sub(self.bt_swarms.load(Ordering::Relaxed));
        if ppstp_swarms > 0 {
            let p = self.ppstp_swarm_stats(swarm_id);
            stats.peers = stats.peers.saturating_add(p.peers);
            stats.seeders = stats.seeders.saturating_add(p.seeders);
            stats.leechers = stats.leechers.saturating_add(p.leechers);
            stats.completed = stats.completed.saturating_add(p.completed);
            stats.uploaded_bytes = stats.uploaded_bytes.saturating_add(p.uploaded_bytes);
            stats.downloaded_bytes = stats.downloaded_bytes.saturating_add(p.downloaded_bytes);
        }
        stats
    }

    /// [`Engine::announce_compact`] as an [`Answer`]: one `SwarmResult` with the peer list
    /// (both families, the requester's first), and the swarm's statistics in `stat`.
    pub(super) fn announce_answer(
        &self,
        request: &Request,
        now: Time,
    ) -> Result<Answer, ErrorCode> {
        let families = ListFamilies {
            first: Family::of(request.source.ip()),
            fallback: true,
        };
        let mut listing = ModedList::default();
        let stats = self.announce_with(request, now, families, &mut listing)?;
        let peers = listing
            .peers()
            .map(|(mode, addr)| {
                PeerInfo::new(
                    bt_peer_id(addr.ip(), addr.port()),
                    mode,
                    &[PeerAddr {
                        kind: AddrType::Host,
                        ..PeerAddr::reflexive(addr)
                    }],
                )
            })
            .collect();
        let RequestKind::Announce { swarm_id, .. } = &request.kind else {
            return Err(ErrorCode::BadRequest);
        };
        Ok(Answer {
            reflexive: None,
            swarm_results: vec![SwarmResult {
                swarm_id: *swarm_id,
                result: ErrorCode::Ok,
                peers: Some(peers),
            }],
            stat: Some(StatAnswer::Swarm(*swarm_id, stats)),
        })
    }

    /// Expires BitTorrent members of the shards `shards` yields, examining about `budget`
    /// members; `next` is the walk's position in that sequence.
    pub(super) fn expire_bt(
        &self,
        owned: &mut dyn Iterator<Item = usize>,
        now: Time,
        budget: usize,
    ) -> ExpiryReport {
        let max_age = self
            .config
            .track_timer_secs
            .min(super::bt_table::MAX_STAMP_AGE_SECS);
        let mut report = ExpiryReport::default();
        for s in owned {
            if report.examined >= budget {
                break;
            }
            let Some(lock) = self.bt_shards.get(s) else {
                break;
            };
            let mut guard = lock.lock();
            let shard = &mut *guard;
            let mut looked = 0;
            while looked < super::EXPIRY_BATCH && report.examined + looked < budget {
                let pos = shard.cursor;
                let BtShard {
                    swarms,
                    v6: v6_members,
                    ..
                } = &mut *shard;
                let Some(swarm) = swarms.get_mut(pos) else {
                    // A whole walk of the shard done: retired counts age out too.
                    shard.cursor = 0;
                    shard.prune_retired(now);
                    break;
                };
                let v6 = if swarm.has_v6() {
                    v6_members.get_mut(&swarm.info_hash)
                } else {
                    None
                };
                looked += (swarm.v4.len() + v6.as_ref().map_or(0, |m| m.len())).max(1);
                let (s4, l4) = swarm.v4.expire(now, max_age, &mut |e| {
                    let ip = Ipv4Addr::new(e.wire[0], e.wire[1], e.wire[2], e.wire[3]);
                    self.sources.release(IpAddr::V4(ip));
                });
                let (s6, l6) = v6.map_or((0, 0), |m| {
                    m.expire(now, max_age, &mut |e| {
                        let mut ip = [0u8; 16];
                        ip.copy_from_slice(&e.wire[..16]);
                        self.sources.release(IpAddr::V6(Ipv6Addr::from(ip)));
                    })
                });
                if swarm.has_v6() {
                    BtShard::settle_v6(v6_members, swarm);
                }
                let emptied = swarm.is_empty();
                let (s, l) = (s4 + s6, l4 + l6);
                shard.count(PeerMode::Seeder, -(s as isize));
                shard.count(PeerMode::Leech, -(l as isize));
                self.peers.fetch_sub(s + l, Ordering::Relaxed);
                report.expired += s + l;
                if emptied {
                    // The last swarm moves into `pos`: look at it next.
                    self.drop_bt_swarm(shard, pos, now);
                } else {
                    shard.cursor = pos + 1;
                }
            }
            report.examined += looked;
        }
        report
    }
}

fn other(f: Family) -> Family {
    match f {
        Family::V4 => Family::V6,
        Family::V6 => Family::V4,
    }
}

fn wire4(ip: Ipv4Addr, port: u16) -> [u8; COMPACT_V4_LEN] {
    let o = ip.octets();
    let p = port.to_be_bytes();
    [o[0], o[1], o[2], o[3], p[0], p[1]]
}

fn wire6(ip: Ipv6Addr, port: u16) -> [u8; COMPACT_V6_LEN] {
    let mut w = [0u8; COMPACT_V6_LEN];
    w[..16].copy_from_slice(&ip.octets());
    w[16..].copy_from_slice(&port.to_be_bytes());
    w
}

fn bt_stats(s: SwarmRef<'_>) -> SwarmStats {
    SwarmStats {
        peers: saturating_u32(s.len()),
        seeders: saturating_u32(s.count(PeerMode::Seeder)),
        leechers: saturating_u32(s.count(PeerMode::Leech)),
        completed: s.swarm.completed,
        ..SwarmStats::default()
    }
}

/// Lists up to `want` members of `members` (of `family`) to `out`: leechers only for a seeder
/// requester, seeders then leechers otherwise; never `me` (the requester's place), never port
/// 0. Returns how many were listed.
fn list<const N: usize>(
    members: &Members<N>,
    family: Family,
    me: Option<Found>,
    requester_mode: PeerMode,
    want: usize,
    rng: &mut rand::rngs::SmallRng,
    out: &mut impl ListOut,
) -> usize {
    let mut listed = 0;
    for &mode in list_order(requester_mode) {
        if listed >= want {
            break;
        }
        let part = members.part(mode);
        let skip = me.filter(|f| f.mode == mode).map(|f| f.pos);
        let n = write_sample(part, skip, want - listed, rng, out.wire(family));
        out.listed(family, mode, n);
        listed += n;
    }
    listed
}

/// The parts a requester of `mode` is listed peers from, in order: a seeder gets leechers
/// only, anyone else seeders first.
fn list_order(mode: PeerMode) -> &'static [PeerMode] {
    match mode {
        PeerMode::Seeder => &[PeerMode::Leech],
        PeerMode::Leech => &[PeerMode::Seeder, PeerMode::Leech],
    }
}

/// Appends the wire form of up to `want` members of `part` sampled by [`sample`] (never position
/// `skip`, never a port-0 member) to `out`; returns how many. The room is reserved once and
/// each entry is one fixed-size copy into it: the whole entry (wire form and stamp, 8 bytes
/// for IPv4), whose stamp the next entry overwrites, or that falls beyond the length at the
/// end; a port-0 member is written and then overwritten by the next.
fn write_sample<const N: usize>(
    part: &[Entry<N>],
    skip: Option<usize>,
    want: usize,
    rng: &mut rand::rngs::SmallRng,
    out: &mut Vec<u8>,
) -> usize {
    let size = std::mem::size_of::<Entry<N>>();
    let room = want.min(part.len()) * N;
    // The last entry's copy runs `size - N` bytes past the room.
    out.reserve(room + size - N);
    let dst = out.spare_capacity_mut().as_mut_ptr().cast::<u8>();
    let mut at = 0;
    sample(part.len(), skip, want, rng, |i| {
        // `at` and `room` are multiples of `N`: below `room`, `N` more bytes fit, and the
        // entry's `size - N` bytes after them in the slack reserved above.
        if let (Some(e), true) = (part.get(i), at < room) {
            // SAFETY: `at + size <= room + size - N`, the spare capacity reserved above; the
            // entry is not inside `out`.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    (e as *const Entry<N>).cast::<u8>(),
                    dst.add(at),
                    size,
                )
            };
            at += usize::from(e.port() != 0) * N;
        }
    });
    // SAFETY: the `at` bytes after the length were written above (each listed entry's `N`
    // bytes, at `at` before it was advanced), within the reserved room.
    unsafe { out.set_len(out.len() + at) };
    at / N
}

/// Where a listing goes: the wire bytes of each family's listed peers.
pub(super) trait ListOut {
    /// The bytes `family`'s listed peers are appended to (6 or 18 a peer).
    fn wire(&mut self, family: Family) -> &mut Vec<u8>;
    /// `n` peers of `mode` were just appended to `family`'s bytes.
    fn listed(&mut self, family: Family, mode: PeerMode, n: usize);
}

impl ListOut for CompactPeers {
    fn wire(&mut self, family: Family) -> &mut Vec<u8> {
        match family {
            Family::V4 => &mut self.v4,
            Family::V6 => &mut self.v6,
        }
    }

    fn listed(&mut self, _: Family, _: PeerMode, _: usize) {}
}

/// A listing with each run's family and mode, for answers that carry the mode of every peer.
#[derive(Default)]
struct ModedList {
    peers: CompactPeers,
    runs: Vec<(Family, PeerMode, usize)>,
}

impl ListOut for ModedList {
    fn wire(&mut self, family: Family) -> &mut Vec<u8> {
        self.peers.wire(family)
    }

    fn listed(&mut self, family: Family, mode: PeerMode, n: usize) {
        self.runs.push((family, mode, n));
    }
}

impl ModedList {
    /// The listed peers in listing order, each with its mode.
    fn peers(&self) -> impl Iterator<Item = (PeerMode, SocketAddr)> + '_ {
        let mut v4 = self.peers.v4.chunks_exact(COMPACT_V4_LEN);
        let mut v6 = self.peers.v6.chunks_exact(COMPACT_V6_LEN);
        let mut runs = Vec::new();
        for &(family, mode, n) in &self.runs {
            let wires: &mut dyn Iterator<Item = &[u8]> = match family {
                Family::V4 => &mut v4,
                Family::V6 => &mut v6,
            };
            runs.extend(wires.take(n).map(|w| (mode, wire_addr(w))));
        }
        runs.into_iter()
    }
}

fn saturating_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::super::{Engine, EngineConfig};
    use super::*;

    fn engine(config: EngineConfig) -> Engine {
        Engine::new(&EngineConfig {
            shards: 4,
            ..config
        })
    }

    fn addr(ip: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, ip], 6881))
    }

    fn swarm(s: &str) -> SwarmId {
        let mut ih = [b'.'; 20];
        ih[..s.len()].copy_from_slice(s.as_bytes());
        SwarmId::new(&ih).expect("test id")
    }

    const V4: ListFamilies = ListFamilies {
        first: Family::V4,
        fallback: false,
    };

    fn announce_from(
        src: SocketAddr,
        swarm_name: &str,
        mode: PeerMode,
        count: Option<u32>,
    ) -> Request {
        Request {
            peer_id: bt_peer_id(src.ip(), src.port()),
            source: SocketAddr::new(src.ip(), 40000),
            kind: RequestKind::Announce {
                swarm_id: swarm(swarm_name),
                mode,
                addr: PeerAddr {
                    kind: AddrType::Host,
                    ..PeerAddr::reflexive(src)
                },
                peer_num: count.map(|c| PeerNum {
                    peer_count: Some(c),
                    ..PeerNum::default()
                }),
            },
        }
    }

    fn announce(peer: u8, swarm_name: &str, mode: PeerMode, count: Option<u32>) -> Request {
        announce_from(addr(peer), swarm_name, mode, count)
    }

    fn run(e: &Engine, r: &Request, now: Time) -> Result<(SwarmStats, Vec<SocketAddr>), ErrorCode> {
        let mut peers = CompactPeers::default();
        let stats = e.announce_compact(r, now, V4, &mut peers)?;
        let mut addrs: Vec<SocketAddr> = peers.addrs().collect();
        addrs.sort();
        Ok((stats, addrs))
    }

    /// A staged prefetch ([`BtPrefetch`]) changes nothing and never waits for a
    /// shard's lock, below and above the size where it starts to act, on inline members and
    /// on a heap block.
    #[test]
    fn prefetch_changes_nothing_and_never_waits() {
        let e = engine(EngineConfig::default());
        let hashes: Vec<InfoHash> = (0..PREFETCH_MIN_SWARMS as u32 + 100)
            .map(|k| {
                let mut ih = [b'.'; 20];
                ih[..10].copy_from_slice(format!("p{k:09}").as_bytes());
                ih
            })
            .collect();
        let uses = [
            BtUse::Counts,
            BtUse::Announce {
                mode: PeerMode::Leech,
                want: 50,
            },
            BtUse::Announce {
                mode: PeerMode::Seeder,
                want: 5,
            },
            BtUse::Announce {
                mode: PeerMode::Leech,
                want: 0,
            },
            BtUse::Announce {
                mode: PeerMode::Leech,
                want: usize::MAX,
            },
        ];
        let prefetch_all = |e: &Engine| {
            let staged = BtPrefetch::default();
            for (k, ih) in hashes.iter().chain([&[0xee; 20]]).enumerate() {
                staged.push(e, ih, uses[k % uses.len()]);
                staged.advance(e);
            }
            for _ in 0..BtPrefetch::DEPTH {
                staged.advance(e);
            }
            assert!(staged.ring.get().iter().all(|s| s.step == BtPrefetch::DONE));
        };
        prefetch_all(&e);
        assert_eq!(e.counts().swarms, 0);
        for (k, ih) in hashes.iter().enumerate() {
            let src = SocketAddr::from(([10, (k >> 16) as u8, (k >> 8) as u8, k as u8], 6881));
            let name = std::str::from_utf8(ih).unwrap();
            run(
                &e,
                &announce_from(src, name, PeerMode::Leech, Some(5)),
                Time(0),
            )
            .unwrap();
        }
        // Swarms with their members in a small heap block (loaded whole) and in a large one
        // (search steps and sampled entries), seeders and leechers; each is prefetched under
        // every use above.
        for (at, members) in [(7, 40u16), (8, 41), (9, 42), (10, 43), (11, 44), (12, 600)] {
            let name = std::str::from_utf8(&hashes[at]).unwrap();
            for k in 0..members {
                let src = SocketAddr::from(([11, 0, (k >> 8) as u8, k as u8], 6881));
                let mode = if k % 3 == 0 {
                    PeerMode::Seeder
                } else {
                    PeerMode::Leech
                };
                run(&e, &announce_from(src, name, mode, Some(5)), Time(0)).unwrap();
            }
        }
        let before = e.audit().unwrap();
        assert_eq!(before.swarms, hashes.len());
        prefetch_all(&e);
        {
            // Every shard locked elsewhere: the prefetch gives up at once.
            let _held: Vec<_> = e.bt_shards.iter().map(|s| s.lock()).collect();
            prefetch_all(&e);
        }
        assert_eq!(e.audit().unwrap(), before);
    }

    /// The staged prefetch's last step loads the lines a re-announce's peer list copies: the
    /// copy of the shard's generator draws the positions the announce draws, for leechers
    /// (seeders listed first, then leechers past the requester) and seeders (leechers only),
    /// for lists of a few, of more than the seeders, and of the whole swarm.
    #[test]
    fn prefetch_draws_the_entries_the_list_copies() {
        let e = engine(EngineConfig {
            max_peer_count: 2_000,
            ..EngineConfig::default()
        });
        let name = "big";
        let src = |k: u16| SocketAddr::from(([12, 0, (k >> 8) as u8, k as u8], 7000 + k));
        let mode = |k: u16| {
            if k % 5 == 0 {
                PeerMode::Seeder
            } else {
                PeerMode::Leech
            }
        };
        let n = 1_000u16;
        for k in 0..n {
            run(&e, &announce_from(src(k), name, mode(k), Some(0)), Time(0)).unwrap();
        }
        let ih: InfoHash = *swarm(name).as_bytes().first_chunk().unwrap();
        let hash = e.bt_hasher.hash_one(ih);
        // The line of each listed member's entry, found by its address.
        let line_of = |a: SocketAddr| {
            let shard = e.bt_shard(hash).lock();
            let swarm = shard
                .swarm_ref(shard.find(hash, &ih).unwrap())
                .unwrap()
                .swarm;
            let IpAddr::V4(ip) = a.ip() else {
                unreachable!("IPv4 members only")
            };
            let found = swarm
                .v4
                .find(&wire4(ip, a.port()), PeerMode::Leech)
                .unwrap();
            let block = swarm.v4.block().unwrap();
            block.entry(block.part(found.mode).0 + found.pos) as usize / 64
        };
        let mut checked = 0;
        for (k, want) in [
            (1u16, 5usize),
            (2, 50),
            (3, 199),
            (5, 50),
            (10, 300),
            (4, 250),
        ]
        .into_iter()
        .chain([(6, 1_000), (15, 1_000), (7, 999)])
        {
            let mut lines = std::collections::HashSet::new();
            {
                let shard = e.bt_shard(hash).lock();
                let swarm = shard
                    .swarm_ref(shard.find(hash, &ih).unwrap())
                    .unwrap()
                    .swarm;
                let block = swarm.v4.block().unwrap();
                prefetch_announce(&block, mode(k), want, &shard.rng, |p| {
                    lines.insert(p as usize / 64);
                });
            }
            let (_, listed) = run(
                &e,
                &announce_from(src(k), name, mode(k), Some(want as u32)),
                Time(1),
            )
            .unwrap();
            let expected = match mode(k) {
                PeerMode::Seeder => (n as usize * 4 / 5).min(want),
                PeerMode::Leech => (n as usize - 1).min(want),
            };
            assert_eq!(listed.len(), expected, "requester {k}, {want} wanted");
            for a in listed {
                assert!(
                    lines.contains(&line_of(a)),
                    "requester {k}, {want} wanted: {a} not prefetched"
                );
                checked += 1;
            }
        }
        assert!(checked > 2_000, "{checked}");
    }

    fn leave(e: &Engine, peer: u8, swarm_name: &str) -> Response {
        e.handle(
            &Request {
                peer_id: bt_peer_id(addr(peer).ip(), 6881),
                source: SocketAddr::new(addr(peer).ip(), 40000),
                kind: RequestKind::Leave {
                    swarm_id: swarm(swarm_name),
                },
            },
            Time(0),
        )
    }

    #[test]
    fn bt_peer_ids_round_trip() {
        for a in ["192.0.2.7:6881", "[2001:db8::1]:1", "10.0.0.1:0"] {
            let a: SocketAddr = a.parse().unwrap();
            assert_eq!(bt_peer_addr(&bt_peer_id(a.ip(), a.port())), Some(a));
        }
        assert_eq!(bt_peer_addr(&PeerId::new(b"peer-1").unwrap()), None);
    }

    #[test]
    fn a_new_peer_is_counted_and_listed_to_others() {
        let e = engine(EngineConfig::default());
        let (stats, peers) = run(&e, &announce(1, "s", PeerMode::Leech, None), Time(0)).unwrap();
        assert_eq!((stats.seeders, stats.leechers, stats.peers), (0, 1, 1));
        assert!(peers.is_empty(), "the requester is never listed");
        let (stats, peers) = run(&e, &announce(2, "s", PeerMode::Seeder, None), Time(1)).unwrap();
        assert_eq!((stats.seeders, stats.leechers), (1, 1));
        assert_eq!(peers, vec![addr(1)]);
        let counts = e.audit().unwrap();
        assert_eq!((counts.peers, counts.swarms, counts.memberships), (2, 1, 2));
    }

    #[test]
    fn a_repeated_announce_refreshes_and_expiry_follows_the_last_one() {
        let config = EngineConfig::default();
        let track_ms = config.track_timer_secs * 1000;
        let e = engine(config);
        let r = announce(1, "s", PeerMode::Leech, None);
        run(&e, &r, Time(0)).unwrap();
        let later = Time(track_ms - 1000);
        let (stats, _) = run(&e, &r, later).unwrap();
        assert_eq!(stats.peers, 1, "a refresh is not a second membership");
        let report = e.expire(Time(track_ms + 10_000), usize::MAX);
        assert_eq!(report.expired, 0, "the refresh moved the deadline");
        let report = e.expire(later.saturating_add_millis(track_ms + 2000), usize::MAX);
        assert_eq!(report.expired, 1);
        let counts = e.audit().unwrap();
        assert_eq!((counts.memberships, counts.swarms, counts.peers), (0, 0, 0));
    }

    #[test]
    fn each_worker_expires_only_the_shards_it_owns() {
        let config = EngineConfig::default();
        let track_ms = config.track_timer_secs * 1000;
        let e = engine(config);
        for i in 0..64u8 {
            run(
                &e,
                &announce(i, &format!("s{i}"), PeerMode::Leech, None),
                Time(0),
            )
            .unwrap();
        }
        let late = Time(track_ms + 5000);
        let mut cursor = 0;
        let mut by_worker0 = 0;
        for _ in 0..8 {
            by_worker0 += e.expire_owned(0, 2, &mut cursor, late, usize::MAX).expired;
        }
        assert!(by_worker0 > 0 && by_worker0 < 64, "{by_worker0}");
        assert_eq!(e.counts().peers, 64 - by_worker0);
        let mut cursor = 0;
        let mut by_worker1 = 0;
        for _ in 0..8 {
            by_worker1 += e.expire_owned(1, 2, &mut cursor, late, usize::MAX).expired;
        }
        assert_eq!(by_worker0 + by_worker1, 64);
        // A worker beyond the shard count owns nothing.
        assert_eq!(e.expire_owned(5, 6, &mut 0, late, usize::MAX).examined, 0);
        let counts = e.audit().unwrap();
        assert_eq!((counts.peers, counts.swarms), (0, 0));
    }

    #[test]
    fn a_mode_change_moves_the_peer_and_a_seeder_gets_leechers_only() {
        let e = engine(EngineConfig::default());
        for p in 1..=3 {
            run(&e, &announce(p, "s", PeerMode::Leech, None), Time(0)).unwrap();
        }
        run(&e, &announce(4, "s", PeerMode::Seeder, None), Time(0)).unwrap();
        let (stats, _) = run(&e, &announce(1, "s", PeerMode::Seeder, None), Time(1)).unwrap();
        assert_eq!((stats.seeders, stats.leechers, stats.peers), (2, 2, 4));
        let (_, peers) = run(&e, &announce(1, "s", PeerMode::Seeder, None), Time(2)).unwrap();
        assert_eq!(peers, vec![addr(2), addr(3)]);
        // A leecher asking for one peer gets a seeder.
        let (_, peers) = run(&e, &announce(2, "s", PeerMode::Leech, Some(1)), Time(2)).unwrap();
        assert!(
            peers == vec![addr(1)] || peers == vec![addr(4)],
            "{peers:?}"
        );
        assert_eq!(e.audit().unwrap().seeders, 2);
    }

    #[test]
    fn same_ip_other_port_is_another_peer_and_port_zero_is_never_listed() {
        let e = engine(EngineConfig::default());
        let a: SocketAddr = "10.0.0.1:1000".parse().unwrap();
        let b: SocketAddr = "10.0.0.1:2000".parse().unwrap();
        let zero: SocketAddr = "10.0.0.9:0".parse().unwrap();
        run(&e, &announce_from(a, "s", PeerMode::Leech, None), Time(0)).unwrap();
        run(
            &e,
            &announce_from(zero, "s", PeerMode::Seeder, None),
            Time(0),
        )
        .unwrap();
        let (stats, peers) =
            run(&e, &announce_from(b, "s", PeerMode::Leech, None), Time(0)).unwrap();
        assert_eq!(stats.peers, 3, "port 0 is counted");
        assert_eq!(peers, vec![a]);
    }

    /// Port-0 members among sampled ones are left out wherever they fall (the written entry
    /// is overwritten by the next), in the compact list and in the answer with modes.
    #[test]
    fn sampled_lists_skip_port_zero_members_and_keep_modes() {
        let e = engine(EngineConfig::default());
        for k in 1..=40u8 {
            let port = if k % 3 == 0 { 0 } else { 6881 };
            let mode = if k <= 20 {
                PeerMode::Seeder
            } else {
                PeerMode::Leech
            };
            let src = SocketAddr::from(([10, 0, 1, k], port));
            run(&e, &announce_from(src, "s", mode, None), Time(0)).unwrap();
        }
        let seeder = |a: &SocketAddr| a.ip() <= std::net::IpAddr::from([10, 0, 1, 20]);
        // 27 members have a port (14 seeders, 13 leechers). A sampled port-0 member makes
        // its part's list one shorter (the next part is asked for the rest).
        for want in [1, 5, 13, 14, 26, 27, 30, 50] {
            let me = SocketAddr::from(([10, 0, 2, 1], 6881));
            let r = announce_from(me, "s", PeerMode::Leech, Some(want));
            let (_, peers) = run(&e, &r, Time(0)).unwrap();
            assert!(peers.len() <= (want as usize).min(27), "want {want}");
            if want >= 40 {
                assert_eq!(peers.len(), 27);
            }
            assert!(peers.iter().all(|a| a.port() != 0), "{peers:?}");
            let mut sorted = peers.clone();
            sorted.dedup();
            assert_eq!(sorted.len(), peers.len());
            let Response::Ok(answer) = e.handle(&r, Time(0)) else {
                panic!("announce refused");
            };
            let listed = answer.swarm_results[0].peers.as_ref().unwrap();
            assert!(listed.len() <= (want as usize).min(27));
            for (i, p) in listed.iter().enumerate() {
                let a = p.addrs()[0].addr;
                assert_ne!(a.port(), 0);
                let mode = if seeder(&a) {
                    PeerMode::Seeder
                } else {
                    PeerMode::Leech
                };
                assert_eq!(p.mode, mode, "{a}");
                // Seeders first.
                assert!(
                    i == 0 || !(mode == PeerMode::Seeder && listed[i - 1].mode == PeerMode::Leech)
                );
            }
        }
    }

    #[test]
    fn families_are_listed_as_asked() {
        let e = engine(EngineConfig::default());
        let v6: SocketAddr = "[2001:db8::1]:6881".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:10.0.0.2]:6881".parse().unwrap();
        run(&e, &announce_from(v6, "s", PeerMode::Seeder, None), Time(0)).unwrap();
        run(
            &e,
            &announce_from(mapped, "s", PeerMode::Seeder, None),
            Time(0),
        )
        .unwrap();
        let mut peers = CompactPeers::default();
        let r = announce(3, "s", PeerMode::Leech, None);
        let stats = e.announce_compact(&r, Time(0), V4, &mut peers).unwrap();
        assert_eq!(stats.seeders, 2);
        assert_eq!(
            peers.addrs().collect::<Vec<_>>(),
            vec![addr(2)],
            "mapped is IPv4"
        );
        let both = ListFamilies {
            first: Family::V4,
            fallback: true,
        };
        e.announce_compact(&r, Time(0), both, &mut peers).unwrap();
        assert_eq!(peers.addrs().collect::<Vec<_>>(), vec![addr(2), v6]);
        // A count of one takes the first family only.
        let r1 = announce(3, "s", PeerMode::Leech, Some(1));
        e.announce_compact(&r1, Time(0), both, &mut peers).unwrap();
        assert_eq!(peers.addrs().collect::<Vec<_>>(), vec![addr(2)]);
        assert!(e.audit().is_ok());
    }

    #[test]
    fn stopped_leaves_and_the_last_member_takes_the_swarm_away() {
        let e = engine(EngineConfig::default());
        run(&e, &announce(1, "s", PeerMode::Leech, None), Time(0)).unwrap();
        run(&e, &announce(2, "s", PeerMode::Leech, None), Time(0)).unwrap();
        assert!(matches!(leave(&e, 1, "s"), Response::Ok(_)));
        assert_eq!(leave(&e, 1, "s"), Response::Err(ErrorCode::Forbidden));
        assert_eq!(e.counts().swarms, 1);
        assert!(matches!(leave(&e, 2, "s"), Response::Ok(_)));
        let counts = e.audit().unwrap();
        assert_eq!((counts.swarms, counts.peers), (0, 0));
    }

    #[test]
    fn limits_refuse_and_change_nothing() {
        let e = engine(EngineConfig {
            max_peers: 1,
            ..EngineConfig::default()
        });
        run(&e, &announce(1, "s", PeerMode::Leech, None), Time(0)).unwrap();
        assert_eq!(
            run(&e, &announce(2, "t", PeerMode::Leech, None), Time(0)),
            Err(ErrorCode::ServiceUnavailable)
        );
        assert_eq!(
            e.audit().unwrap().swarms,
            1,
            "the refused swarm is not kept"
        );

        let e = engine(EngineConfig {
            max_peers_per_swarm: 1,
            ..EngineConfig::default()
        });
        run(&e, &announce(1, "s", PeerMode::Leech, None), Time(0)).unwrap();
        assert_eq!(
            run(&e, &announce(2, "s", PeerMode::Leech, None), Time(0)),
            Err(ErrorCode::ServiceUnavailable)
        );
        // A known member still refreshes in a full swarm.
        assert!(run(&e, &announce(1, "s", PeerMode::Seeder, None), Time(0)).is_ok());
        assert_eq!(e.audit().unwrap().peers, 1);

        let e = engine(EngineConfig {
            max_swarms: 1,
            ..EngineConfig::default()
        });
        run(&e, &announce(1, "a", PeerMode::Leech, None), Time(0)).unwrap();
        assert_eq!(
            run(&e, &announce(1, "b", PeerMode::Leech, None), Time(0)),
            Err(ErrorCode::ServiceUnavailable)
        );
        let mut short = announce(1, "a", PeerMode::Leech, None);
        if let RequestKind::Announce { swarm_id, .. } = &mut short.kind {
            *swarm_id = SwarmId::new(b"not-an-info-hash").unwrap();
        }
        assert_eq!(run(&e, &short, Time(0)), Err(ErrorCode::BadRequest));
        assert_eq!(e.audit().unwrap().memberships, 1);
    }

    #[test]
    fn the_peer_count_is_capped() {
        let e = engine(EngineConfig {
            max_peer_count: 3,
            default_peer_count: 2,
            ..EngineConfig::default()
        });
        for p in 1..=6 {
            run(&e, &announce(p, "s", PeerMode::Leech, None), Time(0)).unwrap();
        }
        let (_, peers) = run(&e, &announce(1, "s", PeerMode::Leech, None), Time(0)).unwrap();
        assert_eq!(peers.len(), 2);
        let (_, peers) = run(&e, &announce(1, "s", PeerMode::Leech, Some(100)), Time(0)).unwrap();
        assert_eq!(peers.len(), 3);
        assert!(!peers.contains(&addr(1)));
    }

    #[test]
    fn a_leecher_turning_seeder_is_one_completion() {
        let e = engine(EngineConfig::default());
        let done = |e: &Engine, peer, mode, t| {
            run(e, &announce(peer, "s", mode, None), Time(t))
                .unwrap()
                .0
                .completed
        };
        assert_eq!(done(&e, 1, PeerMode::Leech, 0), 0);
        assert_eq!(done(&e, 2, PeerMode::Seeder, 1), 0, "joining as a seeder");
        assert_eq!(done(&e, 1, PeerMode::Seeder, 2), 1, "leech -> seeder");
        assert_eq!(
            done(&e, 1, PeerMode::Seeder, 3),
            1,
            "a repeated seeder announce"
        );
        assert_eq!(done(&e, 2, PeerMode::Seeder, 4), 1);
        assert_eq!(done(&e, 3, PeerMode::Leech, 5), 1);
        assert_eq!(done(&e, 3, PeerMode::Seeder, 6), 2);
        // Other swarms keep their own count.
        let other = run(&e, &announce(1, "t", PeerMode::Seeder, None), Time(7)).unwrap();
        assert_eq!(other.0.completed, 0);
        e.audit().unwrap();
    }

    #[test]
    fn members_count_in_their_source_budget_until_they_leave_or_expire() {
        let config = EngineConfig {
            max_peers_per_source: 2,
            ..EngineConfig::default()
        };
        let track_ms = config.track_timer_secs * 1000;
        let e = engine(config);
        let ip = addr(1).ip();
        let from =
            |port: u16, s: &str| announce_from(SocketAddr::new(ip, port), s, PeerMode::Leech, None);
        run(&e, &from(7001, "a"), Time(0)).unwrap();
        run(&e, &from(7002, "b"), Time(0)).unwrap();
        assert_eq!(e.peers_from(ip), 2);
        assert_eq!(
            run(&e, &from(7003, "a"), Time(0)).unwrap_err(),
            ErrorCode::ServiceUnavailable,
            "a third member from the same source"
        );
        // A re-announce of a member is no new member; another source is unaffected.
        run(&e, &from(7001, "a"), Time(1000)).unwrap();
        run(&e, &announce(2, "a", PeerMode::Leech, None), Time(1000)).unwrap();
        // Leaving gives the budget back.
        let leave = Request {
            peer_id: bt_peer_id(ip, 7002),
            source: SocketAddr::new(ip, 40000),
            kind: RequestKind::Leave {
                swarm_id: swarm("b"),
            },
        };
        assert!(matches!(e.handle(&leave, Time(1000)), Response::Ok(_)));
        assert_eq!(e.peers_from(ip), 1);
        run(&e, &from(7003, "a"), Time(1000)).unwrap();
        assert_eq!(e.peers_from(ip), 2);
        // Expiry gives it back too.
        e.expire(Time(1000 + track_ms + 2000), usize::MAX);
        assert_eq!(e.peers_from(ip), 0);
        assert_eq!(e.counts().peers, 0);
        e.audit().unwrap();
    }

    #[test]
    fn through_handle_the_answer_carries_the_list_and_the_counts() {
        let e = engine(EngineConfig::default());
        e.handle(&announce(1, "s", PeerMode::Seeder, None), Time(0));
        match e.handle(&announce(2, "s", PeerMode::Leech, None), Time(0)) {
            Response::Ok(a) => {
                assert_eq!(a.swarm_results.len(), 1);
                let peers = a.swarm_results[0].peers.as_ref().unwrap();
                assert_eq!(peers.len(), 1);
                assert_eq!(peers[0].mode, PeerMode::Seeder);
                assert_eq!(peers[0].addrs()[0].addr, addr(1));
                assert_eq!(peers[0].peer_id(), bt_peer_id(addr(1).ip(), 6881));
                match a.stat {
                    Some(StatAnswer::Swarm(id, s)) => {
                        assert_eq!(id, swarm("s"));
                        assert_eq!((s.seeders, s.leechers), (1, 1));
                    }
                    other => panic!("no counts: {other:?}"),
                }
            }
            other => panic!("announce failed: {other:?}"),
        }
        let not_announce = Request {
            kind: RequestKind::Keepalive,
            ..announce(1, "s", PeerMode::Seeder, None)
        };
        assert_eq!(
            e.announce_compact(&not_announce, Time(0), V4, &mut CompactPeers::default()),
            Err(ErrorCode::BadRequest)
        );
    }
}
