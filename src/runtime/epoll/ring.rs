//! The connection table's side of the io_uring stream path (see `uring/tcp.rs`): accepts,
//! arrivals and send completions reported by the worker's ring are turned into the same
//! admission and `drive` calls that epoll readiness events make, so every limit, deadline and
//! fairness rule of the connection logic holds on both back-ends.

use std::os::fd::FromRawFd;
use std::sync::atomic::Ordering;
use std::time::Instant;

use io_uring::cqueue;

use super::{out_of_descriptors, refill_reserve, EventLoop, Scratch, Stream, StreamEvent};
use crate::runtime::conn::ConnLimits;
use crate::runtime::stats::bump;
use crate::runtime::uring::Op;
use crate::runtime::StreamWorker;

/// Input a ring connection holds in the worker, read and unread, beyond which its receive is
/// paused while it has whole requests waiting to be served: 16 KiB (a turn's budget of
/// pipelined requests and more). Bounds what each connection of a flood of pipelined requests
/// holds, instead of the input cap twice (unread arrivals, and the read requests the turn's
/// budget left).
const HELD_INPUT_BYTES: usize = 16 * 1024;

/// The slot of a connection id (`(generation << 32) | slot`).
fn slot_of(id: usize) -> usize {
    id & 0xffff_ffff
}

impl EventLoop {
    /// Handles the stream completions the ring reported in this turn.
    pub(super) fn serve_ring_streams(
        &mut self,
        workers: &mut [Box<dyn StreamWorker>],
        scratch: &mut Scratch,
        now: Instant,
    ) {
        let Some(ring) = self.ring.as_mut() else {
            return;
        };
        let events = ring.take_events();
        // Every send completion of the turn first, so that the connections served below see
        // the worker's send memory as it is now (their room, see `RingStream::room`).
        for &StreamEvent { op, res, .. } in &events {
            if let Op::StreamSend(id) = op {
                self.on_ring_sent(id, res);
            }
        }
        for &StreamEvent { op, res, flags } in &events {
            match op {
                Op::Accept(listener) => {
                    let refusal = workers.get(listener).map_or(&[][..], |w| w.refusal());
                    self.on_ring_accept(listener, res, refusal, now);
                }
                Op::StreamRecv(id) => self.on_ring_recv(id, res, flags, workers, scratch, now),
                // As a writable event on epoll: pending output moves on, a closing connection
                // closes.
                Op::StreamSend(id) if self.ring_conn(id) => {
                    self.drive(slot_of(id), workers, scratch, res < 0, now);
                }
                _ => {}
            }
        }
        if let Some(ring) = self.ring.as_mut() {
            ring.restore_events(events);
            // Buffers served in this turn go back, accepts that ended start again.
            ring.arm();
        }
    }

    fn on_ring_accept(&mut self, listener: usize, res: i32, refusal: &[u8], now: Instant) {
        if listener >= self.listening.len() {
            if res >= 0 {
                // SAFETY: the accepted descriptor is ours to close.
                drop(unsafe { std::net::TcpStream::from_raw_fd(res) });
            }
            return;
        }
        if res >= 0 {
            // SAFETY: the ring hands over a new descriptor, owned by nothing else.
            let socket = unsafe { std::net::TcpStream::from_raw_fd(res) };
            // The multishot accept does not report the address.
            let Ok(peer) = socket.peer_addr() else {
                return;
            };
            self.end_backoff(listener);
            self.admit(
                listener,
                mio::net::TcpStream::from_std(socket),
                peer,
                refusal,
                now,
            );
            return;
        }
        let e = std::io::Error::from_raw_os_error(-res);
        if out_of_descriptors(&e) {
            // As on epoll: a reserve descriptor takes one queued connection, so that its
            // client learns at once (served on the admin listener, closed elsewhere).
            if self.reserve.pop().is_some() {
                if let Ok((stream, peer)) = self.listening[listener].socket.accept() {
                    if self.serve_from_reserve {
                        self.admit(listener, stream, peer, refusal, now);
                    } else {
                        drop(stream);
                        bump(&self.conn_stats(listener).refused, 1);
                    }
                }
            }
            refill_reserve(&mut self.reserve, self.reserve_target);
        }
        let held = self.ring.as_ref().is_some_and(|r| r.accept_held(listener));
        if held {
            // Resource exhaustion: accepting resumes from the next tick's retry.
            self.start_backoff(listener, &e);
            self.listening[listener].retry_accept = true;
        } else if res != -libc::ECANCELED {
            tracing::debug!(worker = self.index, "multishot accept: {e}");
        }
    }

    fn on_ring_recv(
        &mut self,
        id: usize,
        res: i32,
        flags: u32,
        workers: &mut [Box<dyn StreamWorker>],
        scratch: &mut Scratch,
        now: Instant,
    ) {
        let slot = slot_of(id);
        let bid = cqueue::buffer_select(flags);
        let Some(ring) = self.ring.as_mut() else {
            return;
        };
        let Some(Some(conn)) = self.conns.get_mut(slot) else {
            if let Some(bid) = bid {
                ring.recycle_stream(bid);
            }
            return;
        };
        let Stream::Ring(rs) = &mut conn.stream else {
            return;
        };
        if rs.id() != id {
            // A completion of the slot's previous connection.
            if let Some(bid) = bid {
                ring.recycle_stream(bid);
            }
            return;
        }
        if !cqueue::more(flags) {
            rs.on_recv_ended();
        }
        let listener = conn.listener;
        match res {
            n if n > 0 => {
                let Some(bid) = bid else {
                    return;
                };
                let (data, len) = ring.stream_buffer(bid, n as usize);
                // SAFETY: the buffer stays ours until it is recycled below, after
                // `keep_inbox` copied what was not read.
                unsafe { rs.offer(data, len) };
                self.drive(slot, workers, scratch, false, now);
                if let Some(Some(conn)) = self.conns.get_mut(slot) {
                    if let Stream::Ring(rs) = &mut conn.stream {
                        if rs.id() == id {
                            rs.keep_inbox();
                        }
                    }
                }
                if let Some(ring) = self.ring.as_mut() {
                    ring.recycle_stream(bid);
                }
                // The arrival may have gone over the input cap while the connection was
                // served from its buffer: pause or resume the receive.
                let limits = self.listening[listener].limits;
                self.after_ring_turn(slot, &limits);
            }
            0 => {
                rs.on_eof();
                self.drive(slot, workers, scratch, true, now);
            }
            e if e == -libc::ENOBUFS || e == -libc::ECANCELED => {
                // Out of buffers (re-armed at once: the buffers of this turn are back in the
                // ring, and more of them, before the next submit) or paused.
                if e == -libc::ENOBUFS {
                    ring.grow_stream();
                }
                let limits = self.listening[listener].limits;
                self.after_ring_turn(slot, &limits);
            }
            e => {
                rs.on_error(-e);
                self.drive(slot, workers, scratch, true, now);
            }
        }
    }

    /// Whether `id` is the connection now in its slot (not an earlier one of the slot).
    fn ring_conn(&self, id: usize) -> bool {
        matches!(
            self.conns.get(slot_of(id)),
            Some(Some(conn)) if matches!(&conn.stream, Stream::Ring(rs) if rs.id() == id)
        )
    }

    /// Accounts a send's completion: its chunks go back to the worker's pool (a closed
    /// connection's once its send is over).
    fn on_ring_sent(&mut self, id: usize, res: i32) {
        if !self.ring_conn(id) {
            if let Some(ring) = self.ring.as_mut() {
                ring.release_orphan(Op::StreamSend(id).encode());
            }
            return;
        }
        if let Some(Some(conn)) = self.conns.get_mut(slot_of(id)) {
            if let Stream::Ring(rs) = &mut conn.stream {
                rs.on_sent(res);
            }
        }
    }

    /// After a connection was served: queue its staged answers for the end of the turn, and
    /// pause its receive while its output is backed up or its unread input is at the cap (the
    /// kernel then holds the client's bytes), or resume it.
    pub(super) fn after_ring_turn(&mut self, slot: usize, limits: &ConnLimits) {
        let Some(ring) = self.ring.as_mut() else {
            return;
        };
        let Some(Some(conn)) = self.conns.get_mut(slot) else {
            return;
        };
        let Stream::Ring(rs) = &mut conn.stream else {
            return;
        };
        if rs.needs_send() && !rs.flush_queued {
            // Straight to the socket when it has room, so that the chunks serve the next
            // connection of this turn; the rest goes with the turn's submit.
            let sent = rs.send_now();
            if rs.needs_send() {
                rs.flush_queued = true;
                self.to_flush.push(slot);
            } else if sent > 0
                && !conn.queued
                && (conn.state.has_output()
                    || conn.state.closing()
                    || conn.state.read_closed
                    || conn.state.wants_service(limits)
                    || conn.tls.as_ref().is_some_and(|t| t.wants_write()))
            {
                // No send completion will drive it (the kernel took everything): what waited
                // for room (pending answers, requests held back by its share, a close behind
                // the answers) goes on in the next turn, as after a completion.
                conn.queued = true;
                self.ready.push_back(slot);
            }
        }
        // Input held in the worker: bytes not yet read from the arrivals, and bytes read but
        // not yet served. Up to the input cap while a request is incomplete (it may need them
        // all); past `HELD_INPUT_BYTES` while whole requests wait for a later turn (a flood
        // of pipelined requests), the rest waits in the kernel, as on epoll.
        let held = rs.unread() + conn.state.stashed_input().len();
        let waiting = conn.queued || conn.state.wants_service(limits);
        let pause = conn.state.output_blocked(limits)
            || held >= limits.max_input_bytes.max(1)
            || (waiting && held >= HELD_INPUT_BYTES)
            || conn.state.closing()
            || conn.state.read_closed;
        if pause {
            if rs.begin_cancel_recv() {
                ring.cancel(Op::StreamRecv(rs.id()).encode());
            }
        } else if !rs.recv_armed && !rs.eof() && !rs.broken() {
            let entry = rs.recv_entry(ring.stream_bgid());
            ring.queue(&entry);
        }
    }

    /// Queues one send per ring connection with staged answers: the next wait submits them
    /// all at once.
    pub(super) fn flush_ring_sends(&mut self) {
        let Some(ring) = self.ring.as_mut() else {
            self.to_flush.clear();
            return;
        };
        let (held, peak) = {
            let pool = ring.pool.borrow();
            (pool.held() as u64, pool.peak() as u64)
        };
        let w = &self.stats.workers[self.index];
        if w.send_held_bytes.load(Ordering::Relaxed) != held {
            w.send_held_bytes.store(held, Ordering::Relaxed);
        }
        if w.send_held_peak_bytes.load(Ordering::Relaxed) != peak {
            w.send_held_peak_bytes.store(peak, Ordering::Relaxed);
        }
        if self.to_flush.is_empty() {
            return;
        }
        for &slot in &self.to_flush {
            if let Some(Some(conn)) = self.conns.get_mut(slot) {
                if let Stream::Ring(rs) = &mut conn.stream {
                    if let Some(entry) = rs.send_entry() {
                        ring.queue(&entry);
                    }
                }
            }
        }
        self.to_flush.clear();
    }
}
