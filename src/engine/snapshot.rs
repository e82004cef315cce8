//! Export and import of registrations for warm restarts (`crate::snapshot` writes and reads
//! the file).
//!
//! The unit is a registration as the protocols see it, never a table's internals, so that a
//! snapshot survives a change of table layout: a PPSTP peer (its id, source address,
//! addresses and swarms with their modes) or a BitTorrent peer in one swarm (info-hash,
//! address, seeder or leecher). Each carries the milliseconds left on its timer; an import
//! re-bases them on the importing engine's clock, so every registration keeps its remaining
//! lifetime. Each swarm's completion count ([`SwarmCompletions`]: BEP 48 `downloaded`,
//! STAT_QUERY `completed`) is carried too, since no peer could tell it again; it is restored
//! into the swarms the registrations re-created. Chunk sets (JOIN_CHUNK) and swarm traffic
//! statistics are not carried: peers re-announce them.

use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use super::bt_table::{stamp_age, Members, MAX_STAMP_AGE_SECS};
use super::tables::PeerRecord;
use super::types::*;
use super::Engine;
use super::{CompactPeers, Family, ListFamilies, BT_PEER_ID_PREFIX_V4, BT_PEER_ID_PREFIX_V6};

/// One address of a PPSTP peer (RFC 7846 `peer_addr`), in the snapshot's form.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddrEntry {
    pub addr: SocketAddr,
    pub priority: u32,
    /// 0 host, 1 reflexive, 2 proxy.
    pub kind: u8,
    /// 0 none, 1 wired, 2 wireless.
    pub connection: u8,
    pub asn: Option<u32>,
    pub ppsp_pp: bool,
}

/// A registration as the protocols see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Registration {
    /// A PPSTP peer (RFC 7846): id, the source address it registered from, its addresses and
    /// its swarms (`true` = SEEDER).
    Ppstp {
        peer_id: Vec<u8>,
        source_ip: IpAddr,
        addrs: Vec<AddrEntry>,
        swarms: Vec<(Vec<u8>, bool)>,
        /// Milliseconds left on its init or track timer.
        remaining_ms: u64,
    },
    /// A BitTorrent peer (BEP 3/15) in one swarm, identified by address and port.
    BitTorrent {
        info_hash: Vec<u8>,
        addr: SocketAddr,
        seeder: bool,
        /// Milliseconds left on its track timer.
        remaining_ms: u64,
    },
}

/// A swarm's count of completed downloads (members that turned from leecher to seeder), as a
/// snapshot carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmCompletions {
    /// The swarm id (a BitTorrent info-hash, or a PPSTP swarm id).
    pub swarm_id: Vec<u8>,
    /// The BitTorrent table's swarm (`true`) or the PPSTP table's.
    pub bittorrent: bool,
    pub completed: u32,
}

/// What an import did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Registrations put in the tables.
    pub imported: usize,
    /// Registrations whose lifetime was already over.
    pub expired: usize,
    /// Registrations refused by a limit or as invalid (an id too long, a peer already
    /// registered, a full table).
    pub refused: usize,
}

fn is_bt(peer_id: &[u8]) -> bool {
    peer_id.starts_with(&BT_PEER_ID_PREFIX_V4) || peer_id.starts_with(&BT_PEER_ID_PREFIX_V6)
}

/// The socket address of a compact (BEP 23 / BEP 7) entry.
fn wire_addr(wire: &[u8]) -> SocketAddr {
    match wire.len() {
        6 => SocketAddr::from((
            [wire[0], wire[1], wire[2], wire[3]],
            u16::from_be_bytes([wire[4], wire[5]]),
        )),
        _ => {
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&wire[..16]);
            SocketAddr::from((ip, u16::from_be_bytes([wire[16], wire[17]])))
        }
    }
}

/// Receives one BitTorrent member: its wire bytes, stamp and whether it seeds.
type MemberSink<'a> = dyn FnMut(&[u8], [u8; 2], bool) + 'a;

/// Hands every member of `members` (wire bytes, stamp, seeder) to `push`.
fn export_members<const N: usize>(members: &Members<N>, push: &mut MemberSink<'_>) {
    for (mode, seeder) in [(PeerMode::Seeder, true), (PeerMode::Leech, false)] {
        for e in members.part(mode) {
            push(&e.wire, e.stamp, seeder);
        }
    }
}

fn addr_entry(a: &PeerAddr) -> AddrEntry {
    AddrEntry {
        addr: a.addr,
        priority: a.priority,
        kind: match a.kind {
            AddrType::Host => 0,
            AddrType::Reflexive => 1,
            AddrType::Proxy => 2,
        },
        connection: match a.connection {
            None => 0,
            Some(LinkKind::Wired) => 1,
            Some(LinkKind::Wireless) => 2,
        },
        asn: a.asn,
        ppsp_pp: a.ppsp_pp,
    }
}

fn peer_addr(e: &AddrEntry) -> Option<PeerAddr> {
    Some(PeerAddr {
        addr: e.addr,
        priority: e.priority,
        kind: match e.kind {
            0 => AddrType::Host,
            1 => AddrType::Reflexive,
            2 => AddrType::Proxy,
            _ => return None,
        },
        connection: match e.connection {
            0 => None,
            1 => Some(LinkKind::Wired),
            2 => Some(LinkKind::Wireless),
            _ => return None,
        },
        asn: e.asn,
        ppsp_pp: e.ppsp_pp,
    })
}

impl Engine {
    /// Every registration alive at `now`, with the milliseconds left on its timer. Locks one
    /// peer shard at a time (a registration changing meanwhile is exported either before or
    /// after its change); meant for shutdown and operator requests, not the hot path.
    pub fn export_registrations(&self, now: Time) -> Vec<Registration> {
        let mut out = Vec::with_capacity(self.peers.load(Ordering::Relaxed));
        for lock in self.peer_shards.iter() {
            let shard = lock.lock();
            for record in &shard.records {
                if record.deadline < now {
                    continue;
                }
                let remaining_ms = record.deadline.as_millis() - now.as_millis();
                out.push(Registration::Ppstp {
                    peer_id: shard.peer_id_of(record).as_bytes().to_vec(),
                    source_ip: record.source_ip(),
                    addrs: record.addr_list().iter().map(addr_entry).collect(),
                    swarms: self
                        .swarm_ids_of(&record.swarms)
                        .map(|(s, m)| (s.as_bytes().to_vec(), m == PeerMode::Seeder))
                        .collect(),
                    remaining_ms,
                });
            }
        }
        // The BitTorrent table: a member's lifetime runs from the stamp of its last announce.
        let max_age = self.config.track_timer_secs.min(MAX_STAMP_AGE_SECS);
        for lock in self.bt_shards.iter() {
            let shard = lock.lock();
            for s in shard.swarm_refs() {
                let swarm = s.swarm;
                let mut push = |wire: &[u8], stamp: [u8; 2], seeder: bool| {
                    let age = stamp_age(stamp, now);
                    if age > max_age {
                        return;
                    }
                    let addr = wire_addr(wire);
                    out.push(Registration::BitTorrent {
                        info_hash: swarm.info_hash.to_vec(),
                        addr,
                        seeder,
                        // Stamps are whole seconds: the lifetime left is counted from the
                        // start of the stamp's second, never longer than the real one.
                        remaining_ms: (max_age - age) * 1000
                            - (now.as_millis() % 1000).min((max_age - age) * 1000),
                    });
                };
                export_members(&swarm.v4, &mut push);
                if let Some(v6) = s.v6 {
                    export_members(v6, &mut push);
                }
            }
        }
        out
    }

    /// The completion count of every swarm that has one, in either table.
    pub fn export_completions(&self) -> Vec<SwarmCompletions> {
        let mut out = Vec::new();
        for lock in self.bt_shards.iter() {
            let shard = lock.lock();
            out.extend(
                shard
                    .swarms
                    .iter()
                    .filter(|s| s.completed > 0)
                    .map(|s| SwarmCompletions {
                        swarm_id: s.info_hash.to_vec(),
                        bittorrent: true,
                        completed: s.completed,
                    }),
            );
            out.extend(shard.retired.iter().map(|(h, r)| SwarmCompletions {
                swarm_id: h.to_vec(),
                bittorrent: true,
                completed: r.completed,
            }));
        }
        for lock in self.swarm_shards.iter() {
            let shard = lock.lock();
            out.extend(
                shard
                    .swarms
                    .iter()
                    .filter(|(_, _, s)| s.completed() > 0)
                    .map(|(_, id, s)| SwarmCompletions {
                        swarm_id: id.as_bytes().to_vec(),
                        bittorrent: false,
                        completed: s.completed(),
                    }),
            );
        }
        out
    }

    /// Restores completion counts at `now` (import the registrations first): into the swarms
    /// that exist, and for a BitTorrent swarm without members as a retired count, as a running
    /// tracker keeps it. A PPSTP swarm left without members is gone with its count. A count
    /// is never lowered. Returns how many counts were restored.
    pub fn import_completions(&self, completions: &[SwarmCompletions], now: Time) -> usize {
        let mut restored = 0;
        for c in completions {
            let Ok(swarm_id) = SwarmId::new(&c.swarm_id) else {
                continue;
            };
            let found = if c.bittorrent {
                let Ok(info_hash) = Self::info_hash(&swarm_id) else {
                    continue;
                };
                let hash = self.bt_hasher.hash_one(info_hash);
                let mut shard = self.bt_shard(hash).lock();
                match shard.find(hash, &info_hash) {
                    Some(pos) => shard.swarms.get_mut(pos).map(|s| {
                        s.completed = s.completed.max(c.completed);
                    }),
                    None if c.completed > 0
                        && (shard.retired.len() < self.retired_per_shard()
                            || shard.retired.contains_key(&info_hash)) =>
                    {
                        let r = shard.retired.entry(info_hash).or_insert(
                            super::bt_table::RetiredCompletions {
                                completed: 0,
                                stamp: super::bt_table::stamp(now),
                            },
                        );
                        r.completed = r.completed.max(c.completed);
                        Some(())
                    }
                    None => None,
                }
            } else {
                self.swarm_shard(&swarm_id)
                    .lock()
                    .swarms
                    .get_mut(&swarm_id)
                    .map(|s| s.restore_completed(c.completed))
            };
            restored += usize::from(found.is_some());
        }
        restored
    }

    /// Puts `registrations` into the tables at `now`, each with its `remaining_ms` (a
    /// registration whose `remaining_ms` is 0 counts as expired). Every engine limit applies
    /// as for a live request; what a limit refuses is counted, not half-inserted.
    pub fn import_registrations(&self, registrations: &[Registration], now: Time) -> ImportReport {
        let mut report = ImportReport::default();
        for r in registrations {
            let ok = match r {
                Registration::Ppstp {
                    remaining_ms: 0, ..
                }
                | Registration::BitTorrent {
                    remaining_ms: 0, ..
                } => {
                    report.expired += 1;
                    continue;
                }
                Registration::Ppstp {
                    peer_id,
                    source_ip,
                    addrs,
                    swarms,
                    remaining_ms,
                } => self.import_ppstp(peer_id, *source_ip, addrs, swarms, *remaining_ms, now),
                Registration::BitTorrent {
                    info_hash,
                    addr,
                    seeder,
                    remaining_ms,
                } => self.import_bt(info_hash, *addr, *seeder, *remaining_ms, now),
            };
            if ok {
                report.imported += 1;
            } else {
                report.refused += 1;
            }
        }
        report
    }

    fn import_ppstp(
        &self,
        peer_id: &[u8],
        source_ip: IpAddr,
        addrs: &[AddrEntry],
        swarms: &[(Vec<u8>, bool)],
        remaining_ms: u64,
        now: Time,
    ) -> bool {
        let Ok(peer_id) = PeerId::new(peer_id) else {
            return false;
        };
        if !self.id_ok(&peer_id.0) || is_bt(peer_id.as_bytes()) {
            return false;
        }
        let Some(addrs) = addrs
            .iter()
            .take(self.config.max_addrs_per_peer)
            .map(peer_addr)
            .collect::<Option<smallvec::SmallVec<[PeerAddr; 2]>>>()
        else {
            return false;
        };
        let mut swarm_ids = Vec::with_capacity(swarms.len());
        for (id, seeder) in swarms {
            match SwarmId::new(id) {
                Ok(s) if self.id_ok(&s.0) => swarm_ids.push((
                    s,
                    if *seeder {
                        PeerMode::Seeder
                    } else {
                        PeerMode::Leech
                    },
                )),
                _ => return false,
            }
        }
        let source_ip = source_ip.to_canonical();
        let mut shard = self.peer_shard(&peer_id).lock();
        if shard.find(&peer_id).is_some() || !self.admit_peer(source_ip) {
            return false;
        }
        // The reflexive port is the first address's; the addresses are kept as listed.
        let port = addrs.first().map_or(0, |a| a.addr.port());
        let pos = shard.insert(
            &peer_id,
            PeerRecord::new(
                Some(addrs.iter().copied().collect()),
                SocketAddr::new(source_ip, port),
                now,
            ),
        );
        let member = shard.member_at(pos);
        let Some(record) = shard.records.get_mut(pos) else {
            return false;
        };
        for (swarm_id, mode) in swarm_ids {
            let loc = self.swarm_loc(&swarm_id);
            let mut guard = self.swarm_shards[loc.0].lock();
            // A full swarm refuses this membership only; the peer keeps the others.
            let _ = self.enter_swarm(record, member, loc, &mut guard, swarm_id, mode);
        }
        record.state = if record.swarms.is_empty() {
            PeerState::PeerRegistered
        } else {
            PeerState::Tracking
        };
        shard.set_deadline(pos, now.saturating_add_millis(remaining_ms));
        true
    }

    fn import_bt(
        &self,
        info_hash: &[u8],
        addr: SocketAddr,
        seeder: bool,
        remaining_ms: u64,
        now: Time,
    ) -> bool {
        let Ok(swarm_id) = SwarmId::new(info_hash) else {
            return false;
        };
        let max_age_ms = self.config.track_timer_secs.min(MAX_STAMP_AGE_SECS) * 1000;
        if remaining_ms > max_age_ms {
            return false;
        }
        let request = Request {
            peer_id: super::bt_peer_id(addr.ip(), addr.port()),
            source: addr,
            kind: RequestKind::Announce {
                swarm_id,
                mode: if seeder {
                    PeerMode::Seeder
                } else {
                    PeerMode::Leech
                },
                addr: PeerAddr::reflexive(addr),
                peer_num: Some(PeerNum {
                    peer_count: Some(0),
                    ..PeerNum::default()
                }),
            },
        };
        // The announce stamps the member with the time it was given; a stamp counts seconds
        // modulo 2^16, so the time of the last announce (`now` less the lifetime already
        // used) is given 2^16 seconds later, which stamps the same and never goes below 0.
        let used_ms = max_age_ms - remaining_ms;
        let announced =
            Time::from_millis(now.as_millis() + (1 << 16) * 1000 - used_ms.min((1 << 16) * 1000));
        let families = ListFamilies {
            first: Family::of(addr.ip()),
            fallback: false,
        };
        let mut scratch = CompactPeers::default();
        self.announce_compact(&request, announced, families, &mut scratch)
            .is_ok()
    }

    /// Milliseconds left, at `now`, on the BitTorrent member `addr` of the swarm of
    /// `info_hash` (whole seconds: its stamp's resolution); `None` when it is not a member.
    pub fn bt_remaining_ms(&self, info_hash: &[u8], addr: SocketAddr, now: Time) -> Option<u64> {
        self.export_registrations(now)
            .into_iter()
            .find_map(|r| match r {
                Registration::BitTorrent {
                    info_hash: h,
                    addr: a,
                    remaining_ms,
                    ..
                } if h == info_hash && a == addr => Some(remaining_ms),
                _ => None,
            })
    }

    /// Milliseconds left on the timer of the registration of `peer_id` at `now` (`None`
    /// when it is not registered). For tests and the status page.
    pub fn remaining_ms(&self, peer_id: &PeerId, now: Time) -> Option<u64> {
        let shard = self.peer_shard(peer_id).lock();
        let record = shard.records.get(shard.find(peer_id)?)?;
        Some(record.deadline.as_millis().saturating_sub(now.as_millis()))
    }
}
