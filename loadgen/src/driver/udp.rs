//! The BEP 15 worker: non-blocking UDP sockets polled with mio. A socket is connected and
//! bound to one source address, or, when the worker has more source addresses than sockets,
//! unconnected on the wildcard address and sending from several (each datagram names its
//! source). Each source address of a socket first obtains a connection id (connect), then the
//! socket carries up to `inflight` announces and scrapes at
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

/// One source address's BEP 15 connection on a socket: its connection id and connect state.
struct Source {
    /// The address its datagrams leave from, on a socket shared by several addresses (`None`:
    /// the socket's own bound address).
    ip: Option<Ipv4Addr>,
    connection_id: Option<u64>,
    connection_id_at: Instant,
    /// An outstanding connect: its transaction id and send time.
    connecting: Option<(u32, Instant)>,
    connect_seq: u16,
}

struct UdpConn {
    sock: mio::net::UdpSocket,
    /// The source addresses this socket sends from: one (its bound address) on a connected
    /// socket, several on a shared one.
    sources: Vec<Source>,
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

/// Opens a non-blocking UDP socket bound to `source` (port 0) and connected to `target`; or,
/// with `shared`, bound to the wildcard address and unconnected, for datagrams that each name
/// their loopback source address (see [`SendBatch::push_from`]) and answers to any of them.
pub fn open_socket(
    source: Option<IpAddr>,
    target: SocketAddr,
    shared: bool,
) -> io::Result<std::net::UdpSocket> {
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
    if shared {
        sock.bind(&SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0).into())?;
    } else {
        sock.bind(&SocketAddr::new(bind_ip, 0).into())?;
        sock.connect(&target.into())?;
    }
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
    let n_conns = cfg.conns.max(1);
    // With more source addresses than sockets, each socket carries several: socket `i` sends
    // from addresses `i, i + conns, ...`, naming each datagram's source (IPv4 loopback only).
    let shared = cfg.sources.len() > n_conns;
    if shared && cfg.target.is_ipv6() {
        anyhow::bail!("more source addresses than sockets needs an IPv4 target");
    }
    let mut conns = Vec::with_capacity(n_conns);
    for i in 0..n_conns {
        let src = if cfg.sources.is_empty() || shared {
            None
        } else {
            cfg.sources
                .get((cfg.first_socket + i) % cfg.sources.len())
                .copied()
        };
        let std_sock = open_socket(src, cfg.target, shared)?;
        let mut sock = mio::net::UdpSocket::from_std(std_sock);
        poll.registry()
            .register(&mut sock, Token(i), Interest::READABLE)?;
        let now = Instant::now();
        let source = |ip: Option<Ipv4Addr>| Source {
            ip,
            connection_id: None,
            connection_id_at: now,
            connecting: None,
            connect_seq: 0,
        };
        let sources: Vec<Source> = if shared {
            cfg.sources
                .iter()
                .skip(i)
                .step_by(n_conns)
                .map(|ip| match ip {
                    IpAddr::V4(v4) => source(Some(*v4)),
                    IpAddr::V6(_) => source(None),
                })
                .collect()
        } else {
            vec![source(None)]
        };
        let mut out = SendBatch::default();
        if let (true, SocketAddr::V4(dest)) = (shared, cfg.target) {
            out.set_destination(dest);
        }
        conns.push(UdpConn {
            sock,
            sources,
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
            out,
        });
    }
    let mut events = Events::with_capacity(256);
    let mut schedule = Schedule::new(cfg.start, cfg.rate);
    let mut rbatch = RecvBatch::default();
    let mut pending: Option<Op> = None;
    // The (local socket, source index) pairs that send from each source address slot.
    let slots_n = cfg.sources.len().max(1);
    let mut socket_slots: Vec<Vec<(usize, usize)>> = vec![Vec::new(); slots_n];
    for i in 0..conns.len() {
        if shared {
            for (k, a) in (i..slots_n).step_by(n_conns).enumerate() {
                socket_slots[a].push((i, k));
            }
        } else {
            socket_slots[(cfg.first_socket + i) % slots_n].push((i, 0));
        }
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
            for (k, src) in c.sources.iter_mut().enumerate() {
                let stale = src.connection_id.is_none()
                    || now.saturating_duration_since(src.connection_id_at) > CONNECTION_ID_REFRESH;
                if let Some((_, sent)) = src.connecting {
                    if now.saturating_duration_since(sent) > cfg.timeout {
                        rec.on_failure(OpKind::UdpConnect, ErrorKind::Timeout);
                        src.connecting = None;
                    }
                }
                if issuing && stale && src.connecting.is_none() {
                    src.connect_seq = src.connect_seq.wrapping_add(1);
                    // A shared socket's connects carry their source's index instead of a
                    // sequence number, so the answer finds its source.
                    let tag = if shared { k as u16 } else { src.connect_seq };
                    let tid = (u32::from(tag) << 16) | CONNECT_SLOT;
                    c.out
                        .push_from(src.ip, |out| bt_udp::encode_connect(tid, out));
                    rec.on_sent(OpKind::UdpConnect);
                    src.connecting = Some((tid, now));
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
                let (ci, si) = socket_for(op.peer, pop, &socket_slots, cfg.workers, conns.len());
                let c = &mut conns[ci];
                let src = &c.sources[si];
                let (Some(conn_id), Some(&slot_idx)) = (src.connection_id, c.free.last()) else {
                    pending = Some(op);
                    break;
                };
                let slot = &mut c.slots[slot_idx as usize];
                let seq = slot.seq.wrapping_add(1);
                let tid = (u32::from(seq) << 16) | u32::from(slot_idx);
                c.out.push_from(src.ip, |out| match op.kind {
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

/// The local socket peer `peer` sends from, and the index of its source address on it: one
/// that sends from its address slot when this worker has one (else any), chosen by
/// `peer / workers` so the choice never changes.
fn socket_for(
    peer: u32,
    pop: &Population,
    socket_slots: &[Vec<(usize, usize)>],
    workers: usize,
    n: usize,
) -> (usize, usize) {
    let k = peer as usize / workers.max(1);
    match socket_slots.get(pop.addr_slot(peer) as usize) {
        Some(list) if !list.is_empty() => list[k % list.len()],
        _ => (k % n.max(1), 0),
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
        // On a shared socket the high half names the source; on a connected one it is the
        // connect's sequence number and the socket has one source.
        let k = if c.sources.len() > 1 {
            (tid >> 16) as usize
        } else {
            0
        };
        let Some(src) = c.sources.get_mut(k) else {
            return;
        };
        if let Some((want, sent)) = src.connecting {
            if want == tid {
                src.connecting = None;
                match reply {
                    UdpReply::Connect { connection_id } => {
                        src.connection_id = Some(connection_id);
                        src.connection_id_at = now;
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
