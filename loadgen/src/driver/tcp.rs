//! The HTTP/1.1 worker (PPSTP and BitTorrent HTTP): keep-alive connections polled with mio,
//! each carrying up to `inflight` pipelined requests. Replies come back in order (HTTP/1.1
//! pipelining), so each connection keeps a FIFO of what it is waiting for. A peer's requests
//! always travel on the same connection, so the server sees them in the order they were drawn.
//!
//! In closed loop, a drawn request whose connection has its window full waits in that
//! connection's queue (at most `inflight` deep) and drawing goes on for the other connections. The queued requests
//! are sent as soon as the replies that free their places are read, connection by connection,
//! not after every connection's replies: a server that answers many connections per turn
//! then gets each connection's next batch while the generator reads the others' replies,
//! rather than the two sides taking turns to wait for each other (which left both about 70%
//! busy in the PPSTP FIND-heavy run). Without the queue, one full connection would also stop
//! the issue of every request behind it in the draw order.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::{Schedule, WorkerConfig, MAX_POLL_WAIT, TIMEOUT_SCAN};
use crate::proto::http::{frame_reply, Reply};
use crate::proto::HttpEncoder;
use crate::stats::{ErrorKind, Outcome, Recorder};
use crate::workload::{Op, OpKind, OpSource, Population};

/// Wait before reconnecting after a failure, so a dead server is not hammered.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(20);

struct Waiting {
    op: Op,
    kind: OpKind,
    intended: Instant,
    sent: Instant,
    /// Already sent again after an authentication challenge.
    retried: bool,
}

struct HttpConn {
    stream: Option<TcpStream>,
    /// The TLS client state, on a `--tls` run.
    tls: Option<rustls::ClientConnection>,
    established: bool,
    retry_at: Instant,
    /// The server asked this connection to wait until then (`Retry-After`): nothing is sent
    /// on it, and it is not reopened, before this instant.
    hold_until: Instant,
    out: Vec<u8>,
    out_pos: usize,
    inbuf: Vec<u8>,
    waiting: VecDeque<Waiting>,
    /// Drawn requests waiting for a place in the window, in draw order, each with its
    /// intended send time (open loop; closed loop measures from the actual send).
    queued: VecDeque<(Op, Instant)>,
}

impl HttpConn {
    fn usable(&self) -> bool {
        self.stream.is_some() && self.established
    }

    /// Waiting out the server's `Retry-After` at `now`.
    fn holding(&self, now: Instant) -> bool {
        now < self.hold_until
    }

    /// Moves queued requests into the window (encoded into `out`) while it has room; true if
    /// any was.
    fn send_queued(
        &mut self,
        pipeline: usize,
        closed_loop: bool,
        now: Instant,
        encoder: &mut dyn HttpEncoder,
        pop: &Population,
        rec: &mut Recorder,
    ) -> bool {
        let mut any = false;
        while self.waiting.len() < pipeline {
            let Some((op, intended)) = self.queued.pop_front() else {
                break;
            };
            self.send(
                op,
                if closed_loop { now } else { intended },
                now,
                encoder,
                pop,
                rec,
            );
            any = true;
        }
        any
    }

    /// Encodes `op` into the output and waits for its reply.
    fn send(
        &mut self,
        op: Op,
        intended: Instant,
        now: Instant,
        encoder: &mut dyn HttpEncoder,
        pop: &Population,
        rec: &mut Recorder,
    ) {
        encoder.encode(&op, pop, &mut self.out);
        self.waiting.push_back(Waiting {
            op,
            kind: op.kind,
            intended,
            sent: now,
            retried: false,
        });
        rec.on_sent(op.kind);
    }

    /// Drops the connection; every request still waiting fails with `why`.
    fn fail(&mut self, poll: &Poll, why: ErrorKind, now: Instant, rec: &mut Recorder) {
        if let Some(mut s) = self.stream.take() {
            let _ = poll.registry().deregister(&mut s);
        }
        self.tls = None;
        let lost = !self.waiting.is_empty() || why != ErrorKind::ConnectionClosed;
        for w in self.waiting.drain(..) {
            rec.on_failure(w.kind, why);
        }
        self.established = false;
        self.out.clear();
        self.out_pos = 0;
        self.inbuf.clear();
        // A server that closes after answering everything (HTTP/1.0 style) is not failing:
        // reconnect at once. Otherwise back off a little.
        self.retry_at = if lost { now + RECONNECT_BACKOFF } else { now };
        // A server that said when to come back is not asked again before then.
        self.retry_at = self.retry_at.max(self.hold_until);
    }

    /// Writes buffered requests until done or the socket is full. Err means the connection is
    /// broken.
    fn flush(&mut self) -> io::Result<()> {
        let Some(s) = self.stream.as_mut() else {
            return Ok(());
        };
        if let Some(tls) = self.tls.as_mut() {
            // Plaintext into the TLS session (as much as its buffer takes), records out.
            loop {
                if self.out_pos < self.out.len() {
                    self.out_pos += tls.writer().write(&self.out[self.out_pos..])?;
                }
                if !tls.wants_write() {
                    break;
                }
                match tls.write_tls(s) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if self.out_pos >= self.out.len() {
                self.out.clear();
                self.out_pos = 0;
            }
            return Ok(());
        }
        while self.out_pos < self.out.len() {
            match s.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.out_pos = 0;
        Ok(())
    }
}

/// Reads TLS records until the socket would block, appending the plaintext to `inbuf`.
/// Returns true when the connection is over (EOF, TLS alert, socket error).
fn read_tls(
    s: &mut TcpStream,
    tls: &mut rustls::ClientConnection,
    chunk: &mut [u8],
    inbuf: &mut Vec<u8>,
) -> bool {
    loop {
        match tls.read_tls(s) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return true,
        }
        if tls.process_new_packets().is_err() {
            return true;
        }
        loop {
            match tls.reader().read(chunk) {
                Ok(0) => return true,
                Ok(n) => inbuf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return true,
            }
        }
    }
}

/// Runs one HTTP worker until its phase ends.
pub fn run(
    cfg: &WorkerConfig,
    pop: &Population,
    mut source: OpSource,
    encoder: &mut dyn HttpEncoder,
    rec: &mut Recorder,
) -> anyhow::Result<()> {
    let pipeline = cfg.inflight.clamp(1, 4096);
    let mut poll = Poll::new()?;
    let start = Instant::now();
    let mut conns: Vec<HttpConn> = (0..cfg.conns.max(1))
        .map(|_| HttpConn {
            stream: None,
            tls: None,
            established: false,
            retry_at: start,
            hold_until: start,
            out: Vec::with_capacity(4096),
            out_pos: 0,
            inbuf: Vec::with_capacity(16384),
            waiting: VecDeque::with_capacity(pipeline),
            queued: VecDeque::with_capacity(pipeline),
        })
        .collect();
    let mut events = Events::with_capacity(256);
    let mut schedule = Schedule::new(cfg.start, cfg.rate);
    let mut exhausted = false;
    let mut stopped_at: Option<Instant> = None;
    let mut last_scan = Instant::now();
    let mut pending: Option<Op> = None;
    let keep_alive = cfg.keep_alive;
    let mut chunk = vec![0u8; 65536];

    let closed_loop = cfg.rate.is_none();
    loop {
        let now = Instant::now();
        let stopped = cfg.stop.load(Ordering::Relaxed);
        let drawing = !exhausted
            && schedule.active(now, cfg.deadline)
            && schedule.count() < cfg.max_requests
            && !stopped;
        // Queued requests are still sent after drawing ends (the request cap reached, the
        // source exhausted, or open-loop requests owed from before the deadline), but not
        // after a stop, in closed loop after the deadline, or a timeout after the deadline.
        let late = now.saturating_duration_since(cfg.deadline) >= cfg.timeout;
        if !drawing && (stopped || late || (closed_loop && now >= cfg.deadline)) {
            for c in conns.iter_mut() {
                c.queued.clear();
            }
        }
        let queued: usize = conns.iter().map(|c| c.queued.len()).sum();
        let issuing = drawing || queued > 0;
        let busy: usize = conns.iter().map(|c| c.waiting.len()).sum();
        if !issuing {
            let since = *stopped_at.get_or_insert(now);
            if busy == 0 || now.saturating_duration_since(since) > cfg.timeout {
                rec.unfinished += busy as u64;
                break;
            }
        }

        // (Re)connect.
        if issuing {
            for (i, c) in conns.iter_mut().enumerate() {
                if c.stream.is_none() && now >= c.retry_at {
                    match TcpStream::connect(cfg.target) {
                        Ok(mut s) => {
                            let _ = s.set_nodelay(true);
                            poll.registry().register(
                                &mut s,
                                Token(i),
                                Interest::READABLE | Interest::WRITABLE,
                            )?;
                            c.stream = Some(s);
                            c.tls = match &cfg.tls {
                                None => None,
                                Some((config, name)) => Some(rustls::ClientConnection::new(
                                    config.clone(),
                                    name.clone(),
                                )?),
                            };
                            c.established = false;
                            // While connected, `retry_at` marks when the connect started.
                            c.retry_at = now;
                        }
                        Err(_) => {
                            rec.on_error(ErrorKind::ConnectFailed);
                            c.retry_at = now + RECONNECT_BACKOFF;
                        }
                    }
                }
            }
        }

        // Issue what is due. A peer's requests always use the same connection, so they reach
        // the server in the order they were drawn (a LEAVE before the CONNECT that follows it).
        if issuing {
            let n = conns.len();
            let mut touched = false;
            // Requests queued behind full windows go first, in their order.
            for c in conns.iter_mut() {
                if c.usable() && !c.holding(now) {
                    touched |= c.send_queued(pipeline, closed_loop, now, encoder, pop, rec);
                }
            }
            // Closed loop: requests drawn for connections waiting out Retry-After this turn.
            let mut held_in_turn = 0;
            while drawing && schedule.count() < cfg.max_requests {
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
                let c = &mut conns[(op.peer as usize / cfg.workers.max(1)) % n];
                if c.holding(now) {
                    // Its client was told to retry later: the request is not sent. In open
                    // loop its slot of the schedule passes, and the schedule moves on to other
                    // clients (the offered load drops by what the server turned away, as with
                    // real clients). In closed loop nothing is due at a time, so the request is
                    // dropped without counting as issued; a run of them (every connection
                    // waiting) ends the turn until the next poll.
                    rec.held_back += 1;
                    if cfg.rate.is_some() {
                        schedule.issued();
                    } else {
                        held_in_turn += 1;
                        if held_in_turn >= n {
                            break;
                        }
                    }
                    continue;
                }
                if !c.usable() || c.waiting.len() >= pipeline || !c.queued.is_empty() {
                    // Its window is full: in closed loop the request waits in the
                    // connection's queue, and the draw goes on for the others, unless the
                    // queue is full too. In open loop the draw waits (the schedule's offered
                    // load is not queued up in the generator).
                    if !closed_loop || c.queued.len() >= pipeline {
                        pending = Some(op);
                        break;
                    }
                    c.queued.push_back((op, intended));
                } else {
                    c.send(op, intended, now, encoder, pop, rec);
                    touched = true;
                }
                schedule.issued();
            }
            if touched {
                for c in conns.iter_mut() {
                    if c.out_pos < c.out.len() && c.usable() && c.flush().is_err() {
                        c.fail(&poll, ErrorKind::ConnectionClosed, now, rec);
                    }
                }
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
            if c.stream.is_none() {
                continue;
            }
            let now = Instant::now();
            if !c.established && (ev.is_writable() || ev.is_error()) {
                let ok = c
                    .stream
                    .as_ref()
                    .map(|s| s.take_error().ok().flatten().is_none() && s.peer_addr().is_ok())
                    .unwrap_or(false);
                if ok {
                    c.established = true;
                } else {
                    c.fail(&poll, ErrorKind::ConnectFailed, now, rec);
                    rec.on_error(ErrorKind::ConnectFailed);
                    continue;
                }
            }
            if ev.is_writable() && c.flush().is_err() {
                c.fail(&poll, ErrorKind::ConnectionClosed, now, rec);
                continue;
            }
            if ev.is_readable() || ev.is_read_closed() {
                let mut closed = false;
                if let (Some(s), Some(tls)) = (c.stream.as_mut(), c.tls.as_mut()) {
                    closed = read_tls(s, tls, &mut chunk, &mut c.inbuf);
                    // Handshake records (and requests queued behind the handshake) go out.
                    if !closed && c.flush().is_err() {
                        closed = true;
                    }
                } else if let Some(s) = c.stream.as_mut() {
                    loop {
                        match s.read(&mut chunk) {
                            Ok(0) => {
                                closed = true;
                                break;
                            }
                            Ok(n) => c.inbuf.extend_from_slice(&chunk[..n]),
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(_) => {
                                closed = true;
                                break;
                            }
                        }
                    }
                }
                let now = Instant::now();
                let mut used = 0;
                let mut server_close = false;
                let mut resend = false;
                loop {
                    match frame_reply(&c.inbuf[used..]) {
                        Reply::Complete {
                            status,
                            body,
                            consumed,
                            close,
                            www_authenticate,
                            retry_after,
                        } => {
                            used += consumed;
                            // RFC 9110 section 10.2.3: a 503 (or 429) says how long to wait
                            // before the next request; honoured up to the configured bound.
                            if matches!(status, 503 | 429) && !cfg.max_retry_after.is_zero() {
                                if let Some(delay) = retry_after {
                                    let until = now + delay.min(cfg.max_retry_after);
                                    c.hold_until = c.hold_until.max(until);
                                }
                            }
                            match c.waiting.pop_front() {
                                // HTTP Digest: answer the challenge and send the request
                                // again (once), as a client does; the latency counts both.
                                Some(w)
                                    if status == 401
                                        && !w.retried
                                        && keep_alive
                                        && !close
                                        && www_authenticate.is_some_and(|challenge| {
                                            encoder.on_challenge(&w.op, challenge)
                                        }) =>
                                {
                                    encoder.encode(&w.op, pop, &mut c.out);
                                    c.waiting.push_back(Waiting {
                                        sent: now,
                                        retried: true,
                                        ..w
                                    });
                                    resend = true;
                                }
                                Some(w) => {
                                    let outcome = encoder.classify(w.kind, status, body);
                                    if outcome == Outcome::Ok {
                                        if let Some(n) = encoder.peers_listed(w.kind, body) {
                                            rec.on_peer_list(n);
                                        }
                                    }
                                    rec.on_reply(w.kind, w.intended, now, outcome);
                                }
                                None => {
                                    rec.on_error(ErrorKind::Malformed);
                                }
                            }
                            if close || !keep_alive {
                                server_close = true;
                                break;
                            }
                        }
                        Reply::Incomplete => break,
                        Reply::Malformed => {
                            used = c.inbuf.len();
                            if let Some(w) = c.waiting.pop_front() {
                                rec.on_reply(
                                    w.kind,
                                    w.intended,
                                    now,
                                    Outcome::Err(ErrorKind::Malformed),
                                );
                            }
                            server_close = true;
                            break;
                        }
                    }
                }
                c.inbuf.drain(..used.min(c.inbuf.len()));
                // The places the replies freed are taken at once by the requests queued for
                // them, so this connection's next batch reaches the server while the others'
                // replies are still being read (not all connections' batches at the end of the
                // turn, which would keep the server waiting for the generator and then the
                // generator for the server).
                let refilled = issuing
                    && !closed
                    && !server_close
                    && !c.holding(now)
                    && c.send_queued(pipeline, closed_loop, now, encoder, pop, rec);
                // Requests sent again after a challenge go out now, with those.
                if closed || server_close || ((resend || refilled) && c.flush().is_err()) {
                    c.fail(&poll, ErrorKind::ConnectionClosed, now, rec);
                }
            }
        }
        cfg.progress.store(rec.replies(), Ordering::Relaxed);

        let now = Instant::now();
        if now.saturating_duration_since(last_scan) >= TIMEOUT_SCAN {
            last_scan = now;
            for c in conns.iter_mut() {
                let late = c
                    .waiting
                    .front()
                    .map(|w| now.saturating_duration_since(w.sent) > cfg.timeout)
                    .unwrap_or(false);
                let stuck = c.stream.is_some()
                    && !c.established
                    && now.saturating_duration_since(c.retry_at) > cfg.timeout;
                if late {
                    c.fail(&poll, ErrorKind::Timeout, now, rec);
                } else if stuck {
                    c.fail(&poll, ErrorKind::ConnectFailed, now, rec);
                    rec.on_error(ErrorKind::ConnectFailed);
                }
            }
        }
    }
    Ok(())
}
