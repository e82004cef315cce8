//! One RELOAD link over TCP, inside TLS 1.3 (RFC 6940 §6.6.5, TLS-TCP-FH-NO-ICE) unless the
//! overlay runs in the insecure test mode: RFC 6940 §6.6.2 framing (data frames with per-hop sequence
//! numbers, acks with the received bitmap) on a non-blocking stream, with a bounded output
//! queue.
//!
//! - Every data frame received is acknowledged at once (§6.6.2: "the receiver MUST send an
//!   ack for every data frame").
//! - Each data frame sent is remembered with its send time until an ack covers it, either by
//!   `ack_sequence` or by a bit of `received` (bit `N - M` for sequence M, the convention of
//!   [`AckTracker`]).
//! - RFC 6940 §6.6.5 (TLS/TCP with FH, no ICE): the round-trip time is measured from the acks
//!   and an RTO computed as in RFC 6298 §2 (SRTT, RTTVAR, K = 4, at least 1 s); the RTO is not
//!   used to retransmit (TCP does) but to declare the link failed. Following the RFC's advice
//!   to retain a silent connection for a while (30 s recommended) before concluding, a frame
//!   fails the link when it stays unacknowledged longer than `max(RTO, ack_timeout)`.
//! - Output is a queue of frames; queueing a frame that would take it over the byte limit
//!   fails the link instead of buffering more (backpressure: a peer that does not read cannot
//!   grow our memory).
//! - Each frame is handed to the kernel with its own `write` (with `TCP_NODELAY`), so that a
//!   TCP segment normally starts with a frame header. Wireshark's `reload-framing` dissector
//!   (4.0) reads a data frame's length at offset 5 of the segment whatever the frame's
//!   position, so frames packed back to back in one segment decode as malformed there; one
//!   write per frame keeps captures readable at the cost of a syscall per frame, which the
//!   overlay's message rate (control traffic between trackers) affords.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::net::TcpStream;

use crate::overlay::wire::framing::{encode_data_frame, ACK_FRAME_LEN, DATA_FRAME_PREFIX_LEN};
use crate::overlay::wire::{decode_frame, AckTracker, Decoded, FrameRef, NodeId, WireError};

/// Why a link failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("output queue over {0} bytes")]
    Backpressure(usize),
    #[error("no ack within the ack timeout")]
    AckTimeout,
    #[error("closed by the peer")]
    Closed,
    #[error("framing: {0}")]
    Framing(#[from] WireError),
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

/// Limits of one link.
#[derive(Clone, Copy, Debug)]
pub struct LinkLimits {
    /// Largest RELOAD message in a data frame (`max-message-size`).
    pub max_message_size: u32,
    /// Output queue bound in bytes.
    pub max_queued_bytes: usize,
    /// Unacknowledged data frame lifetime, ms.
    pub ack_timeout_ms: u64,
}

/// One TCP link and its framing state.
pub struct Link {
    pub stream: TcpStream,
    pub addr: SocketAddr,
    /// The Node-ID at the other end, once known (from the link-level Attach, or the node we
    /// dialled).
    pub peer: Option<NodeId>,
    /// True when we dialled; false when accepted.
    pub outbound: bool,
    /// True once the link's peer identity is confirmed by its Attach.
    pub identified: bool,
    limits: LinkLimits,
    input: Vec<u8>,
    /// Encoded frames waiting to be written, and how much of the first is already out.
    output: VecDeque<Vec<u8>>,
    written: usize,
    queued: usize,
    next_seq: u32,
    unacked: VecDeque<(u32, u64)>,
    acks: AckTracker,
    /// RFC 6298 smoothed round-trip time and variation (ms), once measured.
    srtt_ms: Option<f64>,
    rttvar_ms: f64,
    /// Data frames sent and received, for metrics.
    pub frames_sent: u64,
    pub frames_received: u64,
    /// When the link was opened (ms, the owner's clock).
    pub opened_at: u64,
    /// The peer closed its side after the messages last returned.
    pub closed: bool,
    /// Some bytes (TLS records or frames) have arrived on this link: the peer is not silent,
    /// even while its handshake is still under way.
    pub heard_from: bool,
    /// The TLS session (rustls, sans-IO) when the link is secured: frames are its plaintext.
    pub tls: Option<rustls::Connection>,
}

const READ_CHUNK: usize = 16 * 1024;

impl Link {
    pub fn new(stream: TcpStream, addr: SocketAddr, outbound: bool, limits: LinkLimits) -> Self {
        Link {
            stream,
            addr,
            peer: None,
            outbound,
            identified: false,
            limits,
            input: Vec::new(),
            output: VecDeque::new(),
            written: 0,
            queued: 0,
            next_seq: 1,
            unacked: VecDeque::new(),
            acks: AckTracker::new(),
            srtt_ms: None,
            rttvar_ms: 0.0,
            frames_sent: 0,
            frames_received: 0,
            heard_from: false,
            opened_at: 0,
            closed: false,
            tls: None,
        }
    }

    /// True when bytes wait to be written: queued frames, or TLS records (handshake, alerts,
    /// encrypted frames) rustls has not handed to the socket yet.
    pub fn wants_flush(&self) -> bool {
        self.queued_bytes() > 0 || self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// Writes `data` (plaintext) to the stream, through TLS when secured. With TLS, what rustls
    /// accepted is encrypted and as much as the socket takes is written.
    fn write_plain(
        stream: &mut TcpStream,
        tls: &mut Option<rustls::Connection>,
        data: &[u8],
    ) -> io::Result<usize> {
        let Some(tls) = tls.as_mut() else {
            return stream.write(data);
        };
        let n = tls.writer().write(data)?;
        Self::drain_tls(tls, stream)?;
        if n == 0 && !data.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    /// Hands rustls's pending records to the socket until it would block.
    fn drain_tls(tls: &mut rustls::Connection, stream: &mut TcpStream) -> io::Result<()> {
        while tls.wants_write() {
            match tls.write_tls(stream) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads plaintext: from the stream, or from TLS records read from it. `Ok(0)` is the end
    /// of the stream.
    fn read_plain(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(tls) = self.tls.as_mut() else {
            let n = self.stream.read(buf)?;
            self.heard_from |= n > 0;
            return Ok(n);
        };
        loop {
            match tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The peer closed without close_notify: the end of the stream.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            match tls.read_tls(&mut self.stream) {
                Ok(0) => return Ok(0),
                Ok(_) => {
                    self.heard_from = true;
                    let state = tls
                        .process_new_packets()
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    // Handshake answers go out at once.
                    if tls.wants_write() {
                        Self::drain_tls(tls, &mut self.stream)?;
                    }
                    if state.peer_has_closed() && state.plaintext_bytes_to_read() == 0 {
                        return Ok(0);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Bytes waiting to be written.
    pub fn queued_bytes(&self) -> usize {
        self.queued - self.written
    }

    /// Data frames sent and not yet acknowledged.
    pub fn unacked_count(&self) -> usize {
        self.unacked.len()
    }

    fn make_room(&mut self, extra: usize) -> Result<(), LinkError> {
        if self.queued_bytes() + extra > self.limits.max_queued_bytes {
            return Err(LinkError::Backpressure(self.limits.max_queued_bytes));
        }
        Ok(())
    }

    /// Queues one RELOAD message as a data frame. Call [`Link::flush`] to write.
    pub fn queue_message(&mut self, message: &[u8], now_ms: u64) -> Result<(), LinkError> {
        if message.len() > self.limits.max_message_size as usize {
            return Err(LinkError::Framing(WireError::MessageTooLarge {
                len: message.len() as u64,
                max: self.limits.max_message_size,
            }));
        }
        self.make_room(DATA_FRAME_PREFIX_LEN + message.len())?;
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let mut frame = Vec::with_capacity(DATA_FRAME_PREFIX_LEN + message.len());
        encode_data_frame(&mut frame, seq, message)
            .map_err(|_| LinkError::Backpressure(self.limits.max_queued_bytes))?;
        self.queued += frame.len();
        self.output.push_back(frame);
        self.unacked.push_back((seq, now_ms));
        self.frames_sent += 1;
        Ok(())
    }

    /// Writes as much queued output as the socket takes. `Ok(true)` when everything is out.
    pub fn flush(&mut self) -> Result<bool, LinkError> {
        while let Some(frame) = self.output.front() {
            let pending = frame.get(self.written..).unwrap_or_default();
            if pending.is_empty() {
                self.queued -= frame.len();
                self.written = 0;
                self.output.pop_front();
                continue;
            }
            match Self::write_plain(&mut self.stream, &mut self.tls, pending) {
                Ok(0) => return Err(LinkError::Closed),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(LinkError::Io(e)),
            }
        }
        if let Some(tls) = self.tls.as_mut() {
            match Self::drain_tls(tls, &mut self.stream) {
                Ok(()) => return Ok(!tls.wants_write()),
                Err(e) => return Err(LinkError::Io(e)),
            }
        }
        Ok(true)
    }

    /// Reads what the socket has, acknowledges every data frame, applies received acks, and
    /// returns the RELOAD messages that arrived (in order). Queued acks still need a flush.
    pub fn read_messages(&mut self, now_ms: u64) -> Result<Vec<Vec<u8>>, LinkError> {
        let mut messages = Vec::new();
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            match self.read_plain(&mut chunk) {
                Ok(0) => {
                    // Deliver what arrived first; `closed` tells the owner to drop the link.
                    if messages.is_empty() {
                        return Err(LinkError::Closed);
                    }
                    self.closed = true;
                    break;
                }
                Ok(n) => {
                    self.input
                        .extend_from_slice(chunk.get(..n).unwrap_or_default());
                    // Frames are taken after every read: the decoder refuses an oversize
                    // length before its body arrives, so the input never holds more than one
                    // maximal frame plus one read.
                    messages.extend(self.take_frames(now_ms)?);
                }
                // WouldBlock, or a dial still in progress.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::NotConnected
                    ) =>
                {
                    break
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(LinkError::Io(e)),
            }
        }
        Ok(messages)
    }

    fn take_frames(&mut self, now_ms: u64) -> Result<Vec<Vec<u8>>, LinkError> {
        let mut messages = Vec::new();
        let mut at = 0;
        let mut acks_to_send = Vec::new();
        loop {
            let rest = self.input.get(at..).unwrap_or_default();
            match decode_frame(rest, self.limits.max_message_size)? {
                Decoded::Incomplete { .. } => break,
                Decoded::Frame { frame, consumed } => {
                    at += consumed;
                    match frame {
                        FrameRef::Data { seq, payload } => {
                            self.frames_received += 1;
                            acks_to_send.push(self.acks.on_data(seq));
                            messages.push(payload.to_vec());
                        }
                        FrameRef::Ack(ack) => {
                            self.apply_ack(ack.ack_seq, ack.received_bitmap, now_ms)
                        }
                    }
                }
            }
        }
        self.input.drain(..at);
        for ack in acks_to_send {
            self.make_room(ACK_FRAME_LEN)?;
            let mut frame = Vec::with_capacity(ACK_FRAME_LEN);
            ack.encode_into(&mut frame);
            self.queued += frame.len();
            self.output.push_back(frame);
        }
        Ok(messages)
    }

    fn apply_ack(&mut self, ack_seq: u32, bitmap: u32, now_ms: u64) {
        if let Some(&(_, sent)) = self.unacked.iter().find(|(seq, _)| *seq == ack_seq) {
            self.rtt_sample(now_ms.saturating_sub(sent) as f64);
        }
        self.unacked.retain(|&(seq, _)| {
            let k = ack_seq.wrapping_sub(seq);
            let covered = k == 0 || (k < 32 && bitmap & (1 << k) != 0);
            !covered
        });
    }

    /// RFC 6298 §2.2 / §2.3 with alpha = 1/8, beta = 1/4.
    fn rtt_sample(&mut self, r: f64) {
        match self.srtt_ms {
            None => {
                self.srtt_ms = Some(r);
                self.rttvar_ms = r / 2.0;
            }
            Some(srtt) => {
                self.rttvar_ms = 0.75 * self.rttvar_ms + 0.25 * (srtt - r).abs();
                self.srtt_ms = Some(0.875 * srtt + 0.125 * r);
            }
        }
    }

    /// The RTO of RFC 6298 §2 (1 s before any measurement, never below 1 s, §2.4), ms.
    pub fn rto_ms(&self) -> u64 {
        match self.srtt_ms {
            None => 1000,
            Some(srtt) => ((srtt + (4.0 * self.rttvar_ms).max(1.0)).ceil() as u64).max(1000),
        }
    }

    /// How long a frame may stay unacknowledged: `max(RTO, ack_timeout)`.
    fn failure_timeout_ms(&self) -> u64 {
        self.rto_ms().max(self.limits.ack_timeout_ms)
    }

    /// True when a data frame has waited for its ack longer than the failure timeout.
    pub fn ack_overdue(&self, now_ms: u64) -> bool {
        let limit = self.failure_timeout_ms();
        self.unacked
            .front()
            .is_some_and(|&(_, sent)| now_ms.saturating_sub(sent) > limit)
    }

    /// Earliest time an unacknowledged frame becomes overdue.
    pub fn ack_deadline(&self) -> Option<u64> {
        let limit = self.failure_timeout_ms();
        self.unacked.front().map(|&(_, sent)| sent + limit + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits() -> LinkLimits {
        LinkLimits {
            max_message_size: 5000,
            max_queued_bytes: 64 * 1024,
            ack_timeout_ms: 1000,
        }
    }

    /// A connected pair over loopback: (dialled side, accepted side).
    fn pair(limits: LinkLimits) -> (Link, Link) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let a = std::net::TcpStream::connect(addr).unwrap();
        let (b, b_addr) = listener.accept().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        (
            Link::new(TcpStream::from_std(a), addr, true, limits),
            Link::new(TcpStream::from_std(b), b_addr, false, limits),
        )
    }

    /// Reads on `link` until `n` messages arrived (bounded number of attempts).
    fn read_n(link: &mut Link, n: usize, now: u64) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        for _ in 0..2000 {
            got.extend(link.read_messages(now).unwrap());
            if got.len() >= n {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        got
    }

    #[test]
    fn messages_cross_in_order_and_are_acked() {
        let (mut a, mut b) = pair(limits());
        for i in 0..10u8 {
            a.queue_message(&[i; 100], 0).unwrap();
        }
        assert_eq!(a.unacked_count(), 10);
        assert!(a.flush().unwrap());
        let got = read_n(&mut b, 10, 0);
        assert_eq!(got.len(), 10);
        for (i, m) in got.iter().enumerate() {
            assert_eq!(m, &vec![i as u8; 100]);
        }
        // b queued one ack per data frame.
        assert_eq!(b.queued_bytes(), 10 * ACK_FRAME_LEN);
        b.flush().unwrap();
        for _ in 0..2000 {
            assert!(a.read_messages(0).unwrap().is_empty());
            if a.unacked_count() == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(a.unacked_count(), 0);
        assert!(!a.ack_overdue(10_000));
    }

    #[test]
    fn a_missing_ack_makes_the_link_overdue() {
        let (mut a, mut b) = pair(limits());
        a.queue_message(b"hello", 100).unwrap();
        a.flush().unwrap();
        // b reads but never sends its ack.
        assert_eq!(read_n(&mut b, 1, 0).len(), 1);
        assert!(!a.ack_overdue(1100));
        assert!(a.ack_overdue(1101));
        assert_eq!(a.ack_deadline(), Some(1101));
    }

    #[test]
    fn the_output_queue_is_bounded() {
        let small = LinkLimits {
            max_queued_bytes: 1000,
            ..limits()
        };
        let (mut a, _b) = pair(small);
        a.queue_message(&[0; 400], 0).unwrap();
        a.queue_message(&[0; 400], 0).unwrap();
        // 2 * 408 queued; another 408 would exceed 1000.
        assert!(matches!(
            a.queue_message(&[0; 400], 0),
            Err(LinkError::Backpressure(1000))
        ));
        assert_eq!(a.queued_bytes(), 816);
    }

    #[test]
    fn a_peer_that_never_reads_hits_the_bound() {
        let (mut a, _b) = pair(limits());
        let mut failed = false;
        // The kernel buffers take some megabytes; the queue bound stops us after that.
        for _ in 0..100_000 {
            match a.queue_message(&[7; 4000], 0) {
                Ok(()) => {
                    a.flush().unwrap();
                }
                Err(LinkError::Backpressure(_)) => {
                    failed = true;
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert!(failed);
        assert!(a.queued_bytes() <= limits().max_queued_bytes);
    }

    #[test]
    fn oversize_and_garbage_input_fail_the_link() {
        let (mut a, mut b) = pair(limits());
        assert!(matches!(
            a.queue_message(&[0; 5001], 0),
            Err(LinkError::Framing(_))
        ));
        // A frame type that is neither data nor ack.
        a.stream.write_all(&[0x42; 16]).unwrap();
        let mut result = Ok(Vec::new());
        for _ in 0..2000 {
            result = b.read_messages(0);
            if result.is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(matches!(result, Err(LinkError::Framing(_))));
    }

    #[test]
    fn close_is_reported() {
        let (a, mut b) = pair(limits());
        drop(a);
        let mut result = Ok(Vec::new());
        for _ in 0..2000 {
            result = b.read_messages(0);
            if result.is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(matches!(result, Err(LinkError::Closed)));
    }

    #[test]
    fn the_rto_follows_rfc_6298_and_never_drops_below_a_second() {
        let (mut a, _b) = pair(LinkLimits {
            ack_timeout_ms: 10,
            ..limits()
        });
        assert_eq!(a.rto_ms(), 1000);
        a.queue_message(b"x", 0).unwrap();
        // First sample R = 400: SRTT = 400, RTTVAR = 200, RTO = 400 + 800 = 1200.
        a.apply_ack(1, 0, 400);
        assert_eq!(a.rto_ms(), 1200);
        assert_eq!(a.unacked_count(), 0);
        // Second sample R = 400: RTTVAR = 150, SRTT = 400, RTO = 1000.
        a.queue_message(b"y", 1000).unwrap();
        a.apply_ack(2, 0, 1400);
        assert_eq!(a.rto_ms(), 1000);
        // The failure timeout is the RTO when the configured floor is lower.
        a.queue_message(b"z", 2000).unwrap();
        assert!(!a.ack_overdue(3000));
        assert!(a.ack_overdue(3001));
    }

    #[test]
    fn acks_cover_earlier_frames_through_the_bitmap() {
        let (mut a, _b) = pair(limits());
        for m in [b"1", b"2", b"3"] {
            a.queue_message(m, 0).unwrap();
        }
        // Ack of 3 with bit 2 set (sequence 1); 2 stays unacknowledged.
        a.apply_ack(3, 1 << 2, 10);
        assert_eq!(a.unacked_count(), 1);
        a.apply_ack(2, 0, 10);
        assert_eq!(a.unacked_count(), 0);
    }

    #[test]
    fn a_message_followed_by_a_close_is_delivered_and_the_close_noted() {
        let (mut a, mut b) = pair(limits());
        a.queue_message(b"last words", 0).unwrap();
        a.flush().unwrap();
        drop(a);
        let mut got = Vec::new();
        for _ in 0..2000 {
            match b.read_messages(0) {
                Ok(m) => got.extend(m),
                Err(LinkError::Closed) => break,
                Err(e) => panic!("{e}"),
            }
            if b.closed {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(got, vec![b"last words".to_vec()]);
    }
}
