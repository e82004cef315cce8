//! The io_uring back-end: one ring per worker thread, which is the only thing the worker waits
//! on.
//!
//! The ring is created `IORING_SETUP_SINGLE_ISSUER` with `DEFER_TASKRUN` where the kernel has it
//! (6.1), else `COOP_TASKRUN` (5.19), probed at start rather than assumed. Each worker thread
//! creates its own ring (it is the ring's single issuer) before [`super::Runtime::start`]
//! returns, so every setup error is reported by the start. Rings are only ever created on
//! threads that do nothing else (the probe runs on a thread of its own): the kernel tears a
//! ring down by queueing work on every thread that ever used it, which interrupts a blocking
//! socket call with a timeout on that thread (`EINTR`).
//!
//! Datagram sockets are served from the ring alone (`udp.rs`): a multishot `RecvMsg` per socket
//! into a provided-buffer ring, answers queued as `Send` entries from preallocated send
//! slots and submitted together once per loop turn, sockets as registered files; nothing is
//! allocated per datagram. Stream listeners and connections are served from the ring too
//! (`tcp.rs`): a multishot `Accept` per listener, a multishot `Recv` per connection into the
//! worker's stream buffer ring, answers handed to the socket by a non-blocking `sendmsg` once
//! the connection is served and one `SendMsg` per turn for what it did not take, listeners and
//! connections as registered files; the connection table of `epoll.rs` (every limit, deadline,
//! TLS and fairness rule) is driven by these completions. The worker's epoll set now holds only the wake-up
//! `eventfd`; it is watched by a multishot poll on the same ring, so one wait covers all.

mod tcp;
mod udp;

use std::io;
use std::time::Duration;

use io_uring::{opcode, types, IoUring};

pub(crate) use tcp::RingStream;
#[cfg(test)]
pub(crate) use tcp::{MIN_SHARE_BYTES, WORKER_BUDGET_BYTES};
pub(crate) use udp::{StreamEvent, UdpRing};

/// Why io_uring cannot be used here, for the log line of `auto` and the start error of an
/// explicit `io_uring`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unavailable(pub String);

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// How completions are delivered to the issuing thread, as far as the kernel supports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskRun {
    /// `IORING_SETUP_DEFER_TASKRUN` (Linux 6.1): completion work runs only when the worker
    /// asks for completions, never interrupting it.
    Defer,
    /// `IORING_SETUP_COOP_TASKRUN` (Linux 5.19): no interrupt to run completion work.
    Coop,
}

impl TaskRun {
    pub fn name(self) -> &'static str {
        match self {
            TaskRun::Defer => "defer_taskrun",
            TaskRun::Coop => "coop_taskrun",
        }
    }
}

/// Submission queue entries per ring (the completion queue gets twice as many).
pub(crate) const RING_ENTRIES: u32 = 1024;

/// Creates a ring with the best flags this kernel accepts. `SINGLE_ISSUER` (Linux 6.0)
/// is required: a kernel that has it also has every operation the back-end uses (multishot
/// `RecvMsg` and poll, provided-buffer rings, `EXT_ARG` timed waits).
pub(crate) fn build_ring(entries: u32) -> Result<(IoUring, TaskRun), Unavailable> {
    let attempt = |mode: TaskRun| {
        let mut b = IoUring::builder();
        b.setup_single_issuer().setup_cqsize(entries * 2);
        match mode {
            TaskRun::Defer => b.setup_defer_taskrun(),
            TaskRun::Coop => b.setup_coop_taskrun(),
        };
        b.build(entries)
    };
    let (ring, mode) = match attempt(TaskRun::Defer) {
        Ok(ring) => (ring, TaskRun::Defer),
        Err(first) => match attempt(TaskRun::Coop) {
            Ok(ring) => (ring, TaskRun::Coop),
            Err(e) if e.raw_os_error() == first.raw_os_error() => {
                return Err(Unavailable(format!("io_uring_setup failed: {e}")))
            }
            Err(e) => {
                return Err(Unavailable(format!(
                    "io_uring_setup failed: {first} (with DEFER_TASKRUN), {e} (with \
                     COOP_TASKRUN)"
                )))
            }
        },
    };
    if !ring.params().is_feature_ext_arg() {
        return Err(Unavailable(
            "the kernel's io_uring has no timed wait (IORING_FEAT_EXT_ARG)".to_owned(),
        ));
    }
    let mut probe = io_uring::Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| Unavailable(format!("IORING_REGISTER_PROBE failed: {e}")))?;
    for (code, name) in [
        (opcode::RecvMsg::CODE, "RECVMSG"),
        (opcode::SendMsg::CODE, "SENDMSG"),
        (opcode::PollAdd::CODE, "POLL_ADD"),
        (opcode::Accept::CODE, "ACCEPT"),
        (opcode::Recv::CODE, "RECV"),
        (opcode::Send::CODE, "SEND"),
        (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
    ] {
        if !probe.is_supported(code) {
            return Err(Unavailable(format!("the kernel's io_uring has no {name}")));
        }
    }
    Ok((ring, mode))
}

/// Checks that a worker ring can be set up here (the `auto` choice); the error says why not.
/// Runs on a thread of its own (see the module documentation).
pub fn probe() -> Result<TaskRun, Unavailable> {
    match std::thread::Builder::new()
        .name("io_uring-probe".to_owned())
        .spawn(probe_here)
    {
        Ok(handle) => handle
            .join()
            .unwrap_or_else(|_| Err(Unavailable("the io_uring probe panicked".to_owned()))),
        Err(e) => Err(Unavailable(format!("cannot start the io_uring probe: {e}"))),
    }
}

fn probe_here() -> Result<TaskRun, Unavailable> {
    let (ring, mode) = build_ring(8)?;
    // A provided-buffer ring (Linux 5.19) is what the datagram path receives into.
    let mut region = udp::BufRegion::new(8, 8, 64)
        .map_err(|e| Unavailable(format!("cannot map a provided-buffer ring: {e}")))?;
    region
        .register(&ring, 0)
        .map_err(|e| Unavailable(format!("IORING_REGISTER_PBUF_RING failed: {e}")))?;
    let _ = ring.submitter().unregister_buf_ring(0);
    drop(ring);
    Ok(mode)
}

/// Submits what is queued and waits up to `timeout` for at least one completion (not at all
/// when `timeout` is zero). Completion work is run in either case (`GETEVENTS`), as
/// `DEFER_TASKRUN` requires.
pub(crate) fn submit_and_wait(ring: &mut IoUring, timeout: Duration) -> io::Result<()> {
    let result = if timeout.is_zero() {
        let queued = ring.submission().len() as u32;
        // SAFETY: no argument is passed; the flags are a valid combination.
        unsafe {
            ring.submitter().enter::<libc::sigset_t>(
                queued,
                0,
                io_uring::EnterFlags::GETEVENTS.bits(),
                None,
            )
        }
    } else {
        let ts = types::Timespec::from(timeout);
        let args = types::SubmitArgs::new().timespec(&ts);
        ring.submitter().submit_with_args(1, &args)
    };
    match result {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME) | Some(libc::EINTR)) => Ok(()),
        // The completion queue is full: the caller drains it and comes back.
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(()),
        Err(e) => Err(e),
    }
}

/// What the ring's `user_data` of an operation says it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// The multishot receive of datagram socket `i`.
    Recv(usize),
    /// The send from send slot `i`.
    Send(usize),
    /// The multishot poll of the epoll set.
    Epoll,
    /// The multishot accept of stream listener `i`.
    Accept(usize),
    /// The multishot receive of a connection (`(generation << 32) | slot`).
    StreamRecv(usize),
    /// The send of a connection (`(generation << 32) | slot`).
    StreamSend(usize),
    /// A cancel (its completion carries nothing to act on).
    Cancel,
}

const KIND_SHIFT: u32 = 56;

impl Op {
    pub(crate) fn encode(self) -> u64 {
        match self {
            Op::Recv(i) => (1 << KIND_SHIFT) | i as u64,
            Op::Send(i) => (2 << KIND_SHIFT) | i as u64,
            Op::Epoll => 3 << KIND_SHIFT,
            Op::Accept(i) => (4 << KIND_SHIFT) | i as u64,
            Op::StreamRecv(i) => (5 << KIND_SHIFT) | i as u64,
            Op::StreamSend(i) => (6 << KIND_SHIFT) | i as u64,
            Op::Cancel => 7 << KIND_SHIFT,
        }
    }

    pub(crate) fn decode(data: u64) -> Option<Op> {
        let index = (data & ((1 << KIND_SHIFT) - 1)) as usize;
        match data >> KIND_SHIFT {
            1 => Some(Op::Recv(index)),
            2 => Some(Op::Send(index)),
            3 => Some(Op::Epoll),
            4 => Some(Op::Accept(index)),
            5 => Some(Op::StreamRecv(index)),
            6 => Some(Op::StreamSend(index)),
            7 => Some(Op::Cancel),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_round_trip_through_user_data() {
        for op in [
            Op::Recv(0),
            Op::Recv(7),
            Op::Send(4095),
            Op::Epoll,
            Op::Accept(3),
            Op::StreamRecv((65_535 << 32) | 4_000_000),
            Op::StreamSend(1 << 32),
            Op::Cancel,
        ] {
            assert_eq!(Op::decode(op.encode()), Some(op));
        }
        assert_eq!(Op::decode(0), None);
    }
}
