//! The BEP 15 worker: non-blocking connected UDP sockets polled with mio. Each socket first
//! obtains a connection id (connect), then carries up to `inflight` announces and scrapes at
//! once, matched to replies by transaction id (slot index in the low 16 bits, a per-slot
//! sequence in the high 16, so a late reply to a timed-out request is recognised and dropped).
//! Requests issued in one round leave in one `sendmmsg` per socket; replies are read with
//! `recvmmsg`.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol as SockProtocol, Socket, Type};

use super::mmsg::{self, RecvBatch, SendBatch};
use super::{Schedule, WorkerConfig, MAX_POLL_WAIT, TIMEOUT_SCAN};
use crate::proto::bt_udp::{self, UdpReply};
use crate::stats::{ErrorKind, Outcome, Recorder};
use crate::workload::{Op, OpKind, OpSource, Population};

/// BEP 15: a connection id may be used for one minute by the client (the tracker accepts it for
/// two); refresh it after this long.
const CONNECTION_ID_REFRESH: Duration = Duration::from_secs(60);
/// Slot number used for connect requests in the transaction id.
const CONNECT_SLOT: u32 = 0xffff;
/// Upper bound of in-flight requests per socket (slot numbers are 16 bits).
pub const MAX_INFLIGHT: usize = 0xfff0;

#[derive(Clone, Copy)]
struct Slot {
    seq: u16,
    busy: bool,
    kind: OpKind,
    /// Peer and swarm of the request, for the debug output.
    peer: u32,
    swarm: u32,
    intended: Instant,
    sent: Instant,
}

struct UdpConn {
    sock: mio::net::UdpSocket,
    connection_id: Option<u64>,
    connection_id_at: Instant,
    /// An outstanding connect: its transaction id and send time.
    connecting: Option<(u32, Instant)>,
    connect_seq: u16,
    slots: Vec<Slot>,
    free: Vec<u16>,
    /// Requests issued this round, sent together by `sendmmsg`.
    out: SendBatch,
}

impl UdpConn {
    fn busy(&self) -> usize {
        self.slots.len() - self.free.len()
    }
}

/// Opens a non-blocking UDP socket bound to `source` (port 0) and connected to `target`.
pub fn open_socket(source: Option<IpAddr>, target: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let domain = if target.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let sock = Socket::new(domain, Type::DGRAM, Some(SockProtocol::UDP))?;
    // Larger buffers absorb bursts of replies; failure to grow them is not fatal.
    let _ = sock.set_recv_buffer_size(4 << 20);
    let _ = sock.set_send_buffer_size(4 << 20);
    let bind_ip = source.unwrap_or(if target.is_ipv6() {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    });
    sock.bind(&SocketAddr::new(bind_ip, 0).into())?;
    sock.connect(&target.into())?;
    sock.set_nonblocking(true)?;
    Ok(sock.into())
}

/// Runs one BEP 15 worker until its phase ends; returns when every request is answered, timed
/// out or abandoned one timeout after issuing stopped.
pub fn run(
    cfg: &WorkerConfig,
    pop: &Population,
    mut source: OpSource,
    rec: &mut Recorder,
) -> anyhow::Result<()> {
    let inflight = cfg.inflight.clamp(1, MAX_INFLIGHT);
    let mut poll = Poll::new()?;
    let mut conns = Vec::with_capacity(cfg.conns);
    for i in 0..cfg.conns.max(1) {
        let src = if cfg.sources.is_empty() {
            None
        } else {
            cfg.sources
                .get((cfg.first_socket + i) % cfg.sources.len())
                .copied()
        };
        let std_sock = open_socket(src, cfg.target)?;
        let mut sock = mio::net::UdpSocket::from_std(std_sock);
        poll.registry()
            .register(&mut sock, Token(i), Interest::READABLE)?;
        let now = Instant::now();
        conns.push(UdpConn {
            sock,
            connection_id: None,
            connection_id_at: now,
            connecting: None,
            connect_seq: 0,
            slots: vec![
                Slot {
                    seq: 0,
                    busy: false,
                    kind: OpKind::Announce,
                    peer: 0,
                    swarm: 0,
                    intended: now,
                    sent: now,
                };
                inflight
            ],
            free: (0..inflight as u16).rev().collect(),
            out: SendBatch::default(),
        });
    }
    let mut events = Events::with_capacity(256);
    let mut schedule = Schedule::new(cfg.start, cfg.rate);
    let mut buf = Vec::with_capacity(128);
    let mut rbatch = RecvBatch::default();
    let mut pending: Option<Op> = None;
    // The local sockets bound to each source address slot.
    let slots_n = cfg.sources.len().max(1);
    let mut socket_slots: Vec<Vec<usize>> = vec![Vec::new(); slots_n];
    for i in 0..conns.len() {
        socket_slots[(cfg.first_socket + i) % slots_n].push(i);
    }
    let mut exhausted = false;
    let mut stopped_at: Option<Instant> = None;
    let mut last_scan = Instant::now();
    let ipv6 = cfg.target.is_ipv6();

    loop {
        let now = Instant::now();
        let issuing = !exhausted
            && schedule.active(now, cfg.deadline)
            && schedule.count() < cfg.max_requests
            && !cfg.stop.load(Ordering::Relaxed);
        let busy: usize = conns.iter().map(|c| c.busy()).sum();
        if !issuing {
            let since = *stopped_at.get_or_insert(now);
            if busy == 0 || now.saturating_duration_since(since) > cfg.timeout {
                rec.unfinished += busy as u64;
                break;
            }
        }

        // Connection ids: obtain or refresh, and retry lost connects.
        for c in conns.iter_mut() {
            let stale = c.connection_id.is_none()
                || now.saturating_duration_since(c.connection_id_at) > CONNECTION_ID_REFRESH;
            if let Some((_, sent)) = c.connecting {
                if now.saturating_duration_since(sent) > cfg.timeout {
                    rec.on_failure(OpKind::UdpConnect, ErrorKind::Timeout);
                    c.connecting = None;
                }
            }
            if issuing && stale && c.connecting.is_none() {
                c.connect_seq = c.connect_seq.wrapping_add(1);
                let tid = (u32::from(c.connect_seq) << 16) | CONNECT_SLOT;
                buf.clear();
                bt_udp::encode_connect(tid, &mut buf);
                match c.sock.send(&buf) {
                    Ok(_) => {
                        rec.on_sent(OpKind::UdpConnect);
                        c.connecting = Some((tid, now));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => rec.on_failure(OpKind::UdpConnect, ErrorKind::Io),
                }
            }
        }

        // Issue what is due. A peer always sends from the same socket (one bound to its
        // source address slot), so the tracker always sees the same (address, port) for it and
        // its requests in order.
        if issuing {
            while schedule.count() < cfg.max_requests {
                if !schedule.active(now, cfg.deadline) {
                    break;
                }
                let Some(intended) = schedule.due(now) else {
                    break;
                };
                let op = match pending.take().or_else(|| source.next(pop)) {
                    Some(op) => op,
                    None => {
                        exhausted = true;
                        break;
                    }
                };
                let ci = socket_for(op.peer, pop, &socket_slots, cfg.workers, conns.len());
                let c = &mut conns[ci];
                let (Some(conn_id), Some(&slot_idx)) = (c.connection_id, c.free.last()) else {
                    pending = Some(op);
                    break;
                };
                let slot = &mut c.slots[slot_idx as usize];
                let seq = slot.seq.wrapping_add(1);
                let tid = (u32::from(seq) << 16) | u32::from(slot_idx);
                c.out.push(|out| match op.kind {
                    OpKind::Scrape => bt_udp::encode_scrape(conn_id, tid, op.swarm, pop, out),
                    _ => bt_udp::encode_announce(conn_id, tid, &op, pop, cfg.peers_wanted, out),
                });
                *slot = Slot {
                    seq,
                    busy: true,
                    kind: op.kind,
                    peer: op.peer,
                    swarm: op.swarm,
                    intended,
                    sent: now,
                };
                c.free.pop();
                schedule.issued();
                rec.on_sent(op.kind);
            }
        }
        // Send this round's requests, one sendmmsg per socket and batch. What the socket
        // buffer cannot take stays queued for the next round; on a socket error the queued
        // requests are dropped and time out.
        for c in conns.iter_mut() {
            if c.out.pending() > 0 && c.out.flush(c.sock.as_raw_fd()).is_err() {
                rec.on_error(ErrorKind::Io);
                c.out.clear();
            }
        }

        let wait = if issuing {
            schedule.wait(Instant::now(), MAX_POLL_WAIT)
        } else {
            MAX_POLL_WAIT
        };
        poll.poll(&mut events, Some(wait))?;
        for ev in events.iter() {
            let Some(c) = conns.get_mut(ev.token().0) else {
                continue;
            };
            loop {
                let now = Instant::now();
                let fd = c.sock.as_raw_fd();
                // ICMP port unreachable and similar errors end the read; the requests they
                // answer time out.
                let n = rbatch
                    .recv(fd, |pkt| handle_reply(c, pkt, ipv6, now, rec))
                    .unwrap_or(0);
                if n < mmsg::BATCH {
                    break;
                }
            }
        }
        cfg.progress.store(rec.replies(), Ordering::Relaxed);

        let now = Instant::now();
        if now.saturating_duration_since(last_scan) >= TIMEOUT_SCAN {
            last_scan = now;
            for c in conns.iter_mut() {
                for (i, s) in c.slots.iter_mut().enumerate() {
                    if s.busy && now.saturating_duration_since(s.sent) > cfg.timeout {
                        s.busy = false;
                        c.free.push(i as u16);
                        rec.on_failure(s.kind, ErrorKind::Timeout);
                    }
                }
            }
        }
    }
    Ok(())
}

/// The local socket peer `peer` sends from: one bound to its address slot when this worker has
/// one (else any), chosen by `peer / workers` so the choice never changes.
fn socket_for(
    peer: u32,
    pop: &Population,
    socket_slots: &[Vec<usize>],
    workers: usize,
    n: usize,
) -> usize {
    let k = peer as usize / workers.max(1);
    match socket_slots.get(pop.addr_slot(peer) as usize) {
        Some(list) if !list.is_empty() => list[k % list.len()],
        _ => k % n.max(1),
    }
}

fn handle_reply(c: &mut UdpConn, pkt: &[u8], ipv6: bool, now: Instant, rec: &mut Recorder) {
    let Some((tid, reply)) = bt_udp::decode_reply(pkt, ipv6) else {
        if std::env::var_os("PPSP_LOADGEN_DEBUG").is_some() {
            eprintln!(
                "malformed reply ({} bytes): {:02x?}",
                pkt.len(),
                &pkt[..pkt.len().min(48)]
            );
        }
        rec.on_error(ErrorKind::Malformed);
        return;
    };
    let slot_idx = tid & 0xffff;
    if slot_idx == CONNECT_SLOT {
        if let Some((want, sent)) = c.connecting {
            if want == tid {
                c.connecting = None;
                match reply {
                    UdpReply::Connect { connection_id } => {
                        c.connection_id = Some(connection_id);
                        c.connection_id_at = now;
                        rec.on_reply(OpKind::UdpConnect, sent, now, Outcome::Ok);
                    }
                    UdpReply::Error => rec.on_reply(
                        OpKind::UdpConnect,
                        sent,
                        now,
                        Outcome::Err(ErrorKind::BtUdpError),
                    ),
                    _ => rec.on_reply(
                        OpKind::UdpConnect,
                        sent,
                        now,
                        Outcome::Err(ErrorKind::Malformed),
                    ),
                }
            }
        }
        return;
    }
    let Some(slot) = c.slots.get_mut(slot_idx as usize) else {
        return;
    };
    if !slot.busy || u32::from(slot.seq) != tid >> 16 {
        // A reply to a request that already timed out.
        return;
    }
    slot.busy = false;
    c.free.push(slot_idx as u16);
    if matches!(reply, UdpReply::Error | UdpReply::Short)
        && std::env::var_os("PPSP_LOADGEN_DEBUG").is_some()
    {
        eprintln!(
            "{:?} reply to {} of peer {} in swarm {}: {:02x?}",
            reply,
            slot.kind,
            slot.peer,
            slot.swarm,
            &pkt[..pkt.len().min(40)]
        );
    }
    let outcome = match (slot.kind, reply) {
        (_, UdpReply::Error) => Outcome::Err(ErrorKind::BtUdpError),
        (_, UdpReply::Short) => Outcome::Err(ErrorKind::ShortReply),
        (OpKind::Scrape, UdpReply::Scrape) => Outcome::Ok,
        (OpKind::Scrape, _) => Outcome::Err(ErrorKind::Malformed),
        (_, UdpReply::Announce { peers }) => {
            rec.on_peer_list(peers);
            Outcome::Ok
        }
        _ => Outcome::Err(ErrorKind::Malformed),
    };
    rec.on_reply(slot.kind, slot.intended, now, outcome);
}
