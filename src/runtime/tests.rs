//! Runtime tests over real loopback sockets with a small line protocol: each line `n` is
//! answered with `n:` followed by `n` bytes of `x` and a newline; `close` is answered `bye` and
//! closes; anything else is answered `?`.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;

#[derive(Default)]
struct Probe {
    workers_created: AtomicUsize,
    workers_dropped: AtomicUsize,
    ticks: AtomicUsize,
    /// Largest output buffer seen after a service call.
    max_output: AtomicUsize,
}

struct LineService(Arc<Probe>);

struct LineWorker(Arc<Probe>);

impl StreamService for LineService {
    fn worker(&self, _worker: usize) -> Box<dyn StreamWorker> {
        self.0.workers_created.fetch_add(1, Ordering::SeqCst);
        Box::new(LineWorker(self.0.clone()))
    }
}

impl Drop for LineWorker {
    fn drop(&mut self) {
        self.0.workers_dropped.fetch_add(1, Ordering::SeqCst);
    }
}

impl StreamWorker for LineWorker {
    fn on_input(&mut self, ctx: &ConnCtx, input: &[u8], out: &mut Vec<u8>) -> StreamStep {
        let mut consumed = 0;
        let mut close = false;
        let mut served = 0;
        while out.len() < ctx.output_limit && !close && served < ctx.max_requests {
            served += 1;
            let rest = &input[consumed..];
            let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                break;
            };
            let line = std::str::from_utf8(&rest[..nl]).unwrap_or("").trim();
            if line == "panic" {
                panic!("test service asked to panic");
            } else if line == "sleep" {
                // A slow request: the worker falls behind.
                std::thread::sleep(SLOW_REQUEST);
                out.extend_from_slice(b"slept\n");
            } else if line == "close" {
                out.extend_from_slice(b"bye\n");
                close = true;
            } else if let Ok(n) = line.parse::<usize>() {
                out.extend_from_slice(format!("{n}:").as_bytes());
                out.resize(out.len() + n, b'x');
                out.push(b'\n');
            } else {
                out.extend_from_slice(b"?\n");
            }
            consumed += nl + 1;
        }
        self.0.max_output.fetch_max(out.len(), Ordering::SeqCst);
        StreamStep { consumed, close }
    }

    fn on_tick(&mut self, _now: Instant) {
        self.0.ticks.fetch_add(1, Ordering::SeqCst);
    }
}

/// How long the request `sleep` takes to serve.
const SLOW_REQUEST: Duration = Duration::from_millis(150);

fn answer(n: usize) -> Vec<u8> {
    let mut v = format!("{n}:").into_bytes();
    v.resize(v.len() + n, b'x');
    v.push(b'\n');
    v
}

fn start(workers: usize, limits: ConnLimits) -> (Runtime, SocketAddr, Arc<Probe>) {
    let probe = Arc::new(Probe::default());
    let config = RuntimeConfig {
        workers,
        tick: Duration::from_millis(10),
        name: "test-worker".to_owned(),
        ..RuntimeConfig::default()
    };
    let spec = ListenerSpec {
        name: "lines".to_owned(),
        addr: "127.0.0.1:0".parse().unwrap(),
        service: Arc::new(LineService(probe.clone())),
        limits,
    };
    let rt = Runtime::start(&config, vec![spec]).unwrap();
    let addr = rt.local_addrs()[0].1;
    assert_ne!(addr.port(), 0);
    (rt, addr, probe)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

fn read_exact_len(s: &mut TcpStream, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    s.read_exact(&mut buf).unwrap();
    buf
}

/// True once the server closed the connection (EOF or reset).
fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                return false
            }
            Err(e) => panic!("unexpected read error: {e}"),
        }
    }
}

/// Waits (bounded) for a condition the server reaches asynchronously.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A turn that takes longer than `behind_after` (100 ms by default) counts as behind, with its
/// time; the runtime counts it without the service's help.
#[test]
fn a_turn_slower_than_behind_after_is_counted_behind() {
    let (mut rt, addr, _probe) = start(1, ConnLimits::default());
    let stats = rt.stats();
    assert_eq!(stats.behind(), (0, 0));
    let mut c = connect(addr);
    c.write_all(b"sleep\n").unwrap();
    assert_eq!(read_exact_len(&mut c, 6), b"slept\n");
    // The turn is counted when it ends, just after the answer was sent.
    eventually("a turn counted behind", || stats.behind().0 >= 1);
    let (turns, us) = stats.behind();
    assert!(
        us >= turns * 100_000 && us >= SLOW_REQUEST.as_micros() as u64,
        "{turns} turns behind, {us} us"
    );
    rt.shutdown();
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let (mut rt, addr, _probe) = start(1, ConnLimits::default());
    let mut c = connect(addr);
    let sizes: Vec<usize> = (0..200).map(|i| (i * 37) % 300).collect();
    let mut req = String::new();
    let mut want = Vec::new();
    for n in &sizes {
        req.push_str(&format!("{n}\n"));
        want.extend(answer(*n));
    }
    c.write_all(req.as_bytes()).unwrap();
    assert_eq!(read_exact_len(&mut c, want.len()), want);
    rt.shutdown();
}

/// More connections send at once than the io_uring stream buffer ring starts with buffers
/// (their receives run out of buffers and are started again, with a larger ring): every
/// request is answered, in order, on both back-ends.
#[test]
fn many_connections_sending_at_once_are_all_answered() {
    let (mut rt, addr, _) = start(1, ConnLimits::default());
    let mut conns: Vec<TcpStream> = (0..96).map(|_| connect(addr)).collect();
    for round in 0..3 {
        for (i, c) in conns.iter_mut().enumerate() {
            c.write_all(format!("{}\n{}\n", i % 7, round).as_bytes())
                .unwrap();
        }
        for (i, c) in conns.iter_mut().enumerate() {
            let mut want = answer(i % 7);
            want.extend_from_slice(&answer(round));
            assert_eq!(read_exact_len(c, want.len()), want, "connection {i}");
        }
    }
    rt.shutdown();
}

#[test]
fn a_request_split_over_many_writes_is_served_once_complete() {
    let (mut rt, addr, _probe) = start(1, ConnLimits::default());
    let mut c = connect(addr);
    c.set_nodelay(true).unwrap();
    for b in b"12" {
        c.write_all(&[*b]).unwrap();
        c.flush().unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    c.write_all(b"\nnope\n").unwrap();
    let mut want = answer(12);
    want.extend_from_slice(b"?\n");
    assert_eq!(read_exact_len(&mut c, want.len()), want);
    rt.shutdown();
}

#[test]
fn service_close_flushes_the_answer_then_closes() {
    let (mut rt, addr, _probe) = start(1, ConnLimits::default());
    let mut c = connect(addr);
    c.write_all(b"3\nclose\n5\n").unwrap();
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    let mut want = answer(3);
    want.extend_from_slice(b"bye\n");
    assert_eq!(got, want, "nothing after close is served");
    rt.shutdown();
}

#[test]
fn requests_before_a_half_close_are_still_answered() {
    let (mut rt, addr, _probe) = start(1, ConnLimits::default());
    let mut c = connect(addr);
    c.write_all(b"4\n6\n").unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    let mut want = answer(4);
    want.extend(answer(6));
    assert_eq!(got, want);
    rt.shutdown();
}

#[test]
fn backpressure_bounds_pending_output_when_the_client_does_not_read() {
    const LIMIT: usize = 16 * 1024;
    const ANSWER: usize = 50_000;
    const REQUESTS: usize = 200;
    let limits = ConnLimits {
        max_pending_output_bytes: LIMIT,
        ..ConnLimits::default()
    };
    let (mut rt, addr, probe) = start(1, limits);
    let mut c = connect(addr);
    // 200 pipelined requests ask for 10 MB of answers; the client reads none for a while.
    let req = format!("{ANSWER}\n").repeat(REQUESTS);
    c.write_all(req.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let bound = LIMIT + ANSWER + 16;
    let seen = probe.max_output.load(Ordering::SeqCst);
    assert!(
        seen <= bound,
        "pending output grew to {seen} (bound {bound})"
    );
    // Every answer still arrives, in order, once the client reads.
    let one = answer(ANSWER);
    for i in 0..REQUESTS {
        assert_eq!(read_exact_len(&mut c, one.len()), one, "answer {i}");
    }
    let seen = probe.max_output.load(Ordering::SeqCst);
    assert!(
        seen <= bound,
        "pending output grew to {seen} (bound {bound})"
    );
    let stats = rt.stats();
    eventually("bytes out are counted", || {
        stats.listeners[0].totals().bytes_out == (one.len() * REQUESTS) as u64
    });
    assert_eq!(stats.listeners[0].totals().bytes_in, req.len() as u64);
    rt.shutdown();
}

/// Clients that pipeline requests for large answers and never read them neither stall a
/// client that reads nor make the worker hold their answers beyond its budget: on io_uring the
/// answer bytes held in the worker's send chunks stay within its budget plus, per
/// connection, the minimum share and one answer's overshoot, and drop to nothing once those
/// connections close (on epoll they are the connections' pending output, bounded by the test
/// above, and the gauge stays 0).
#[test]
fn clients_that_never_read_neither_stall_a_reader_nor_hold_more_than_the_budget() {
    const STUCK: usize = 24;
    const ANSWER: usize = 3000;
    let limits = ConnLimits {
        // Small kernel buffers, so that the answers back up into the server quickly.
        send_buffer_bytes: 16 * 1024,
        ..ConnLimits::default()
    };
    let (mut rt, addr, _probe) = start(1, limits);
    let stats = rt.stats();
    let req = format!("{ANSWER}\n").repeat(2_000);
    let stuck: Vec<TcpStream> = (0..STUCK)
        .map(|_| {
            let mut c = connect(addr);
            c.write_all(req.as_bytes()).unwrap();
            c
        })
        .collect();
    // Until the answers have backed up: bytes out stop growing (bounded in time).
    let mut last = u64::MAX;
    let settle = Instant::now() + Duration::from_secs(20);
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let out = stats.listeners[0].totals().bytes_out;
        if out == last || Instant::now() > settle {
            break;
        }
        last = out;
    }
    // A client that reads is answered at once, again and again.
    let mut reader = connect(addr);
    for i in 0..20 {
        let asked = Instant::now();
        reader.write_all(b"10\n").unwrap();
        assert_eq!(
            read_exact_len(&mut reader, answer(10).len()),
            answer(10),
            "{i}"
        );
        // Generous (a shared machine): the stuck connections must not make it wait for them.
        assert!(
            asked.elapsed() < Duration::from_secs(5),
            "answer {i} took {:?}",
            asked.elapsed()
        );
    }
    let (_, peak) = stats.send_held();
    let bound = (uring::WORKER_BUDGET_BYTES
        + (STUCK + 1) * (uring::MIN_SHARE_BYTES + 2 * (ANSWER + 8))) as u64;
    assert!(
        peak <= bound,
        "the worker held {peak} answer bytes (bound {bound})"
    );
    if rt.backend() == Backend::IoUring {
        assert!(
            peak > 0,
            "the stuck connections' answers are held on the ring"
        );
    }
    drop(stuck);
    eventually("the stuck connections' chunks go back", || {
        stats.send_held().0 == 0 && stats.listeners[0].totals().open <= 1
    });
    rt.shutdown();
}

/// A client that reads its answers as they come, pipelining requests whose answers go past a
/// connection's share of the worker's send memory (and a close behind them): every answer
/// arrives in order and the connection closes. On io_uring the kernel takes such answers at
/// once (no send completion follows), and what waited for room must still be served.
#[test]
fn answers_past_a_connections_share_arrive_in_order_when_the_client_keeps_reading() {
    const ANSWER: usize = 20_000;
    const REQUESTS: usize = 64;
    let (mut rt, addr, _probe) = start(1, ConnLimits::default());
    for round in 0..3 {
        let mut c = connect(addr);
        let mut req = format!("{ANSWER}\n").repeat(REQUESTS);
        req.push_str("close\n");
        let mut writer = c.try_clone().unwrap();
        let sender = std::thread::spawn(move || writer.write_all(req.as_bytes()));
        let one = answer(ANSWER);
        for i in 0..REQUESTS {
            assert_eq!(
                read_exact_len(&mut c, one.len()),
                one,
                "round {round}, answer {i}"
            );
        }
        assert_eq!(read_exact_len(&mut c, 4), b"bye\n");
        assert!(closed_by_server(&mut c), "round {round}: closed after bye");
        sender.join().unwrap().unwrap();
    }
    let stats = rt.stats();
    eventually("every chunk goes back", || stats.send_held().0 == 0);
    rt.shutdown();
}

#[test]
fn a_client_that_does_not_read_is_not_read_either() {
    let limits = ConnLimits {
        max_pending_output_bytes: 16 * 1024,
        max_input_bytes: 4096,
        ..ConnLimits::default()
    };
    let (mut rt, addr, _probe) = start(1, limits);
    let c = connect(addr);
    c.set_nonblocking(true).unwrap();
    // Requests for 1,000-byte answers, written for as long as the kernel takes them (bounded
    // in bytes and time); the answers are never read.
    let chunk = "1000\n".repeat(13_107).into_bytes();
    let mut written = 0usize;
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut stalls = 0;
    while written < 64 << 20 && Instant::now() < deadline && stalls < 50 {
        match (&c).write(&chunk) {
            Ok(n) => {
                written += n;
                stalls = 0;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                stalls += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("write failed: {e}"),
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let read = rt.stats().listeners[0].totals().bytes_in as usize;
    // The server stops reading once the answers back up: it holds at most its input cap plus
    // what the back-end had already received (the kernel holds the rest, and TCP flow control
    // stops the client).
    let bound = 1 << 20;
    assert!(
        written > read + (1 << 20),
        "the client wrote {written} bytes, the server read {read}: the kernel should hold more"
    );
    assert!(
        read <= bound,
        "the server read {read} bytes (bound {bound})"
    );
    drop(c);
    rt.shutdown();
}

#[test]
fn idle_connections_are_closed() {
    let limits = ConnLimits {
        idle_timeout: Duration::from_millis(100),
        ..ConnLimits::default()
    };
    let (mut rt, addr, _probe) = start(1, limits);
    let mut c = connect(addr);
    c.write_all(b"1\n").unwrap();
    assert_eq!(read_exact_len(&mut c, answer(1).len()), answer(1));
    assert!(closed_by_server(&mut c));
    let stats = rt.stats();
    let totals = stats.listeners[0].totals();
    assert_eq!(totals.closed_idle, 1);
    assert_eq!(totals.open, 0);
    rt.shutdown();
}

#[test]
fn a_full_listener_evicts_the_connection_idle_for_longest() {
    let limits = ConnLimits {
        max_connections: 2,
        ..ConnLimits::default()
    };
    let (mut rt, addr, _probe) = start(1, limits);
    let mut a = connect(addr);
    let mut b = connect(addr);
    for c in [&mut a, &mut b] {
        c.write_all(b"2\n").unwrap();
        assert_eq!(read_exact_len(c, answer(2).len()), answer(2));
        std::thread::sleep(Duration::from_millis(20));
    }
    // `b` is used again, so `a` is the one idle for longest.
    b.write_all(b"1\n").unwrap();
    assert_eq!(read_exact_len(&mut b, answer(1).len()), answer(1));
    let mut third = connect(addr);
    third.write_all(b"3\n").unwrap();
    assert_eq!(read_exact_len(&mut third, answer(3).len()), answer(3));
    assert!(
        closed_by_server(&mut a),
        "the oldest idle connection is evicted"
    );
    let stats = rt.stats();
    assert_eq!(stats.listeners[0].totals().evicted, 1);
    assert_eq!(stats.listeners[0].totals().refused, 0);
    assert_eq!(stats.listeners[0].totals().open, 2);
    b.write_all(b"2\n").unwrap();
    assert_eq!(read_exact_len(&mut b, answer(2).len()), answer(2));
    rt.shutdown();
}

fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let from: SocketAddr = format!("{source}:0").parse().unwrap();
    socket.bind(&from.into()).unwrap();
    socket.connect(&addr.into()).unwrap();
    let s: TcpStream = socket.into();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// The per-source cap counts the connections of every worker: the kernel spreads one
/// source's connections over the workers, and each worker alone would let `cap` in.
#[test]
fn the_per_source_cap_counts_across_workers() {
    let limits = ConnLimits {
        max_connections_per_source: 3,
        ..ConnLimits::default()
    };
    let (mut rt, addr, _probe) = start(4, limits);
    let stats = rt.stats();
    let mut answered = Vec::new();
    for _ in 0..12 {
        let mut c = connect_from("127.0.0.2", addr);
        let _ = c.write_all(b"1\n");
        // Either the whole answer (admitted) or the close (refused).
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while got.len() < answer(1).len() {
            match c.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
                Err(e) => panic!("unexpected read error: {e}"),
            }
        }
        if got == answer(1) {
            answered.push(c);
        }
    }
    assert_eq!(answered.len(), 3, "three open across four workers");
    assert_eq!(stats.listeners[0].totals().refused_per_source, 9);
    let mut other = connect_from("127.0.0.3", addr);
    other.write_all(b"1\n").unwrap();
    assert_eq!(read_exact_len(&mut other, answer(1).len()), answer(1));
    rt.shutdown();
}

#[test]
fn one_source_gets_at_most_its_share_of_connections() {
    let limits = ConnLimits {
        max_connections_per_source: 2,
        ..ConnLimits::default()
    };
    let (mut rt, addr, _probe) = start(1, limits);
    let mut held: Vec<TcpStream> = (0..2).map(|_| connect_from("127.0.0.2", addr)).collect();
    for c in &mut held {
        c.write_all(b"1\n").unwrap();
        assert_eq!(read_exact_len(c, answer(1).len()), answer(1));
    }
    let mut third = connect_from("127.0.0.2", addr);
    let _ = third.write_all(b"1\n");
    assert!(
        closed_by_server(&mut third),
        "a third from the same source is refused"
    );
    let mut other = connect_from("127.0.0.3", addr);
    other.write_all(b"1\n").unwrap();
    assert_eq!(read_exact_len(&mut other, answer(1).len()), answer(1));
    let stats = rt.stats();
    assert_eq!(stats.listeners[0].totals().refused_per_source, 1);
    // Closing one gives the source its place back.
    drop(held.pop());
    eventually("the closed connection is released", || {
        stats.listeners[0].totals().open == 2
    });
    let mut again = connect_from("127.0.0.2", addr);
    again.write_all(b"1\n").unwrap();
    assert_eq!(read_exact_len(&mut again, answer(1).len()), answer(1));
    rt.shutdown();
}

#[test]
fn a_full_listener_refuses_a_newcomer_rather_than_evict_a_connection_not_yet_read() {
    let limits = ConnLimits {
        max_connections: 1,
        ..ConnLimits::default()
    };
    let (mut rt, addr, _probe) = start(1, limits);
    // Admitted, and its request not yet sent: within the grace it may not be evicted.
    let mut first = connect(addr);
    eventually("the first connection is admitted", || {
        rt.stats().listeners[0].totals().open == 1
    });
    let mut newcomer = connect(addr);
    let _ = newcomer.write_all(b"1\n");
    assert!(closed_by_server(&mut newcomer), "the newcomer is refused");
    first.write_all(b"2\n").unwrap();
    assert_eq!(read_exact_len(&mut first, answer(2).len()), answer(2));
    let totals = rt.stats().listeners[0].totals();
    assert_eq!((totals.evicted, totals.refused), (0, 1));
    // Once read, it is the oldest idle connection again, and a newcomer evicts it.
    let mut third = connect(addr);
    third.write_all(b"3\n").unwrap();
    assert_eq!(read_exact_len(&mut third, answer(3).len()), answer(3));
    assert!(
        closed_by_server(&mut first),
        "the idle connection is evicted"
    );
    assert_eq!(rt.stats().listeners[0].totals().evicted, 1);
    rt.shutdown();
}

#[test]
fn the_reserved_slot_is_kept_for_a_new_source() {
    let limits = ConnLimits {
        max_connections: 3,
        reserved_slots: 1,
        ..ConnLimits::default()
    };
    let (mut rt, addr, _probe) = start(1, limits);
    let mut held: Vec<TcpStream> = (0..2).map(|_| connect_from("127.0.0.2", addr)).collect();
    for c in &mut held {
        c.write_all(b"1\n").unwrap();
        assert_eq!(read_exact_len(c, answer(1).len()), answer(1));
    }
    // A third from the same source only gets in by evicting that source's oldest.
    let mut third = connect_from("127.0.0.2", addr);
    third.write_all(b"1\n").unwrap();
    assert_eq!(read_exact_len(&mut third, answer(1).len()), answer(1));
    assert_eq!(rt.stats().listeners[0].totals().evicted, 1);
    assert_eq!(rt.stats().listeners[0].totals().open, 2);
    // A new source takes the reserved slot without evicting anyone.
    let mut probe = connect_from("127.0.0.3", addr);
    probe.write_all(b"1\n").unwrap();
    assert_eq!(read_exact_len(&mut probe, answer(1).len()), answer(1));
    assert_eq!(rt.stats().listeners[0].totals().evicted, 1);
    assert_eq!(rt.stats().listeners[0].totals().open, 3);
    rt.shutdown();
}

#[test]
fn a_request_trickling_in_is_closed_at_its_deadline() {
    let limits = ConnLimits {
        request_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_secs(60),
        ..ConnLimits::default()
    };
    let (mut rt, addr, _probe) = start(1, limits);
    let mut slow = connect(addr);
    slow.set_nodelay(true).unwrap();
    let started = Instant::now();
    // One byte every 50 ms re-arms no timer: the request must be whole within 300 ms.
    let mut closed = false;
    for _ in 0..200 {
        if slow.write_all(b"1").is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        if rt.stats().listeners[0].totals().closed_deadline == 1 {
            closed = true;
            break;
        }
    }
    assert!(closed, "the trickling request was never cut");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(closed_by_server(&mut slow));
    // A connection idle between requests is not subject to the request deadline.
    let mut idle = connect(addr);
    idle.write_all(b"1\n").unwrap();
    assert_eq!(read_exact_len(&mut idle, answer(1).len()), answer(1));
    std::thread::sleep(Duration::from_millis(600));
    idle.write_all(b"2\n").unwrap();
    assert_eq!(read_exact_len(&mut idle, answer(2).len()), answer(2));
    assert_eq!(rt.stats().listeners[0].totals().closed_deadline, 1);
    rt.shutdown();
}

#[test]
fn a_pipelining_connection_is_served_in_bounded_turns() {
    let limits = ConnLimits {
        max_requests_per_turn: 4,
        ..ConnLimits::default()
    };
    let (mut rt, addr, probe) = start(1, limits);
    let mut c = connect(addr);
    let mut req = String::new();
    let mut want = Vec::new();
    for i in 0..400 {
        req.push_str(&format!("{}\n", i % 50));
        want.extend(answer(i % 50));
    }
    c.write_all(req.as_bytes()).unwrap();
    assert_eq!(
        read_exact_len(&mut c, want.len()),
        want,
        "all answered, in order"
    );
    let totals = rt.stats().listeners[0].totals();
    assert!(
        totals.turns_cut >= 400 / 4 / 2,
        "400 requests at 4 a turn take many turns: {}",
        totals.turns_cut
    );
    // No single call produced more than 4 answers (at most 4 * 53 bytes).
    assert!(probe.max_output.load(Ordering::SeqCst) <= 4 * 53);
    rt.shutdown();
}

#[test]
fn input_that_never_completes_a_request_is_capped() {
    let limits = ConnLimits {
        max_input_bytes: 1024,
        ..ConnLimits::default()
    };
    let (mut rt, addr, _probe) = start(1, limits);
    let mut c = connect(addr);
    // No newline: the service can never consume it.
    let _ = c.write_all(&[b'7'; 4096]);
    assert!(closed_by_server(&mut c));
    assert_eq!(rt.stats().listeners[0].totals().closed_overflow, 1);
    rt.shutdown();
}

#[test]
fn workers_share_one_port_and_shutdown_joins_them_all() {
    let (mut rt, addr, probe) = start(3, ConnLimits::default());
    assert_eq!(rt.workers(), 3);
    eventually("every worker created its service half", || {
        probe.workers_created.load(Ordering::SeqCst) == 3
    });
    eventually("the tick runs", || probe.ticks.load(Ordering::SeqCst) > 0);
    let mut clients: Vec<TcpStream> = (0..12).map(|_| connect(addr)).collect();
    for c in &mut clients {
        c.write_all(b"5\n").unwrap();
        assert_eq!(read_exact_len(c, answer(5).len()), answer(5));
    }
    rt.shutdown();
    // Every worker has returned and dropped its service half.
    assert_eq!(probe.workers_dropped.load(Ordering::SeqCst), 3);
    for c in &mut clients {
        assert!(
            closed_by_server(c),
            "open connections are closed at shutdown"
        );
    }
    assert!(TcpStream::connect(addr).is_err(), "listeners are closed");
    rt.shutdown(); // idempotent
}

#[test]
fn bind_failure_names_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let spec = ListenerSpec {
        name: "lines".to_owned(),
        addr,
        service: Arc::new(LineService(Arc::new(Probe::default()))),
        limits: ConnLimits::default(),
    };
    let err = match Runtime::start(&RuntimeConfig::default(), vec![spec]) {
        Ok(_) => panic!("bind on a taken port must fail"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(&addr.to_string()), "{err}");
}

#[test]
fn backend_names_parse() {
    assert_eq!(Backend::parse("epoll"), Ok(Backend::Epoll));
    assert_eq!(Backend::parse("io_uring"), Ok(Backend::IoUring));
    assert_eq!(Backend::parse("auto"), Ok(Backend::Auto));
    let err = Backend::parse("uring").unwrap_err();
    assert!(
        err.contains("\"io_uring\"") && err.contains("\"epoll\""),
        "{err}"
    );
}

/// Answers every byte with `!`, to tell it apart from [`LineService`].
struct Bang;

struct BangWorker;

impl StreamService for Bang {
    fn worker(&self, _worker: usize) -> Box<dyn StreamWorker> {
        Box::new(BangWorker)
    }
}

impl StreamWorker for BangWorker {
    fn on_input(&mut self, _ctx: &ConnCtx, input: &[u8], out: &mut Vec<u8>) -> StreamStep {
        out.resize(out.len() + input.len(), b'!');
        StreamStep {
            consumed: input.len(),
            close: false,
        }
    }
}

#[test]
fn one_runtime_serves_several_listeners_with_their_own_services() {
    let probe = Arc::new(Probe::default());
    let specs = vec![
        ListenerSpec {
            name: "lines".to_owned(),
            addr: "127.0.0.1:0".parse().unwrap(),
            service: Arc::new(LineService(probe.clone())),
            limits: ConnLimits::default(),
        },
        ListenerSpec {
            name: "bang".to_owned(),
            addr: "127.0.0.1:0".parse().unwrap(),
            service: Arc::new(Bang),
            limits: ConnLimits::default(),
        },
    ];
    let config = RuntimeConfig {
        workers: 2,
        ..RuntimeConfig::default()
    };
    let mut rt = Runtime::start(&config, specs).unwrap();
    let addrs = rt.local_addrs();
    assert_eq!(addrs[0].0, "lines");
    assert_eq!(addrs[1].0, "bang");
    assert_ne!(addrs[0].1, addrs[1].1);
    let mut lines = connect(addrs[0].1);
    let mut bang = connect(addrs[1].1);
    lines.write_all(b"3\n").unwrap();
    bang.write_all(b"abc").unwrap();
    assert_eq!(read_exact_len(&mut lines, answer(3).len()), answer(3));
    assert_eq!(read_exact_len(&mut bang, 3), b"!!!");
    let stats = rt.stats();
    assert_eq!(stats.listener("bang").unwrap().totals().accepted, 1);
    assert_eq!(stats.listener("lines").unwrap().totals().bytes_in, 2);
    rt.shutdown();
}

#[test]
fn a_panicking_service_closes_only_that_connection() {
    let (mut rt, addr, _probe) = start(1, ConnLimits::default());
    let mut good = connect(addr);
    good.write_all(b"1\n").unwrap();
    assert_eq!(read_exact_len(&mut good, answer(1).len()), answer(1));
    let mut bad = connect(addr);
    bad.write_all(b"panic\n").unwrap();
    assert!(closed_by_server(&mut bad));
    // The worker survived and still serves its other connection and new ones.
    good.write_all(b"2\n").unwrap();
    assert_eq!(read_exact_len(&mut good, answer(2).len()), answer(2));
    let mut again = connect(addr);
    again.write_all(b"3\n").unwrap();
    assert_eq!(read_exact_len(&mut again, answer(3).len()), answer(3));
    assert_eq!(rt.stats().listeners[0].totals().closed_panic, 1);
    rt.shutdown();
}

#[test]
fn pinned_workers_serve() {
    let probe = Arc::new(Probe::default());
    let config = RuntimeConfig {
        workers: 2,
        pin_cores: true,
        ..RuntimeConfig::default()
    };
    let spec = ListenerSpec {
        name: "lines".to_owned(),
        addr: "127.0.0.1:0".parse().unwrap(),
        service: Arc::new(LineService(probe.clone())),
        limits: ConnLimits::default(),
    };
    let mut rt = Runtime::start(&config, vec![spec]).unwrap();
    for _ in 0..4 {
        let mut c = connect(rt.local_addrs()[0].1);
        c.write_all(b"8\n").unwrap();
        assert_eq!(read_exact_len(&mut c, answer(8).len()), answer(8));
    }
    rt.shutdown();
    assert_eq!(probe.workers_dropped.load(Ordering::SeqCst), 2);
}

/// Answers each datagram with its bytes reversed; `quiet` gets no answer, `panic` panics.
struct Reverse;

struct ReverseWorker;

impl DatagramService for Reverse {
    fn worker(&self, _worker: usize) -> Box<dyn DatagramWorker> {
        Box::new(ReverseWorker)
    }
}

impl DatagramWorker for ReverseWorker {
    fn on_datagram(
        &mut self,
        _ctx: &DatagramCtx,
        _src: SocketAddr,
        packet: &[u8],
        out: &mut Vec<u8>,
    ) -> bool {
        match packet {
            b"quiet" => false,
            b"panic" => panic!("test datagram service asked to panic"),
            _ => {
                out.extend(packet.iter().rev());
                true
            }
        }
    }
}

#[test]
fn datagrams_are_answered_next_to_streams_and_tickers_run() {
    let probe = Arc::new(Probe::default());
    let config = RuntimeConfig {
        workers: 2,
        ..RuntimeConfig::default()
    };
    let streams = vec![ListenerSpec {
        name: "lines".to_owned(),
        addr: "127.0.0.1:0".parse().unwrap(),
        service: Arc::new(LineService(probe.clone())),
        limits: ConnLimits::default(),
    }];
    let datagrams = vec![DatagramSpec {
        name: "reverse".to_owned(),
        addr: "127.0.0.1:0".parse().unwrap(),
        service: Arc::new(Reverse),
    }];
    struct CountTicks(AtomicUsize);
    impl Ticker for CountTicks {
        fn tick(&self, _worker: usize, _now: Instant) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let ticks = Arc::new(CountTicks(AtomicUsize::new(0)));
    let config = RuntimeConfig {
        tick: Duration::from_millis(5),
        udp_buffer_bytes: 1 << 20,
        ..config
    };
    let mut rt = Runtime::start_with(&config, streams, datagrams, vec![ticks.clone()]).unwrap();
    eventually("tickers run", || ticks.0.load(Ordering::SeqCst) > 0);
    let udp_addr = rt.datagram_addrs()[0].1;
    assert_ne!(udp_addr.port(), 0);

    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = [0u8; 100];
    client.send_to(b"quiet", udp_addr).unwrap();
    client.send_to(b"panic", udp_addr).unwrap();
    for i in 0..20u8 {
        let msg = [b'a', b'b', b'0' + (i % 10)];
        client.send_to(&msg, udp_addr).unwrap();
        let (n, from) = client.recv_from(&mut buf).unwrap();
        assert_eq!(from, udp_addr);
        assert_eq!(&buf[..n], &[b'0' + (i % 10), b'b', b'a']);
    }
    // The TCP side of the same workers still serves.
    let mut c = connect(rt.local_addrs()[0].1);
    c.write_all(b"4\n").unwrap();
    assert_eq!(read_exact_len(&mut c, answer(4).len()), answer(4));

    let stats = rt.stats();
    eventually("the last answer is counted", || {
        stats.datagrams[0].totals().sent == 20
    });
    let totals = stats.datagrams[0].totals();
    assert_eq!(totals.unanswered, 1);
    assert_eq!(totals.panics, 1);
    assert_eq!(totals.received, 22);
    assert_eq!(totals.bytes_out, 60);
    rt.shutdown();
}

/// What a datagram worker was handed, in order: `(true, packet)` for a prefetch hint,
/// `(false, packet)` for the datagram itself.
type Handed = Arc<std::sync::Mutex<Vec<(bool, Vec<u8>)>>>;

/// Echoes every datagram and logs prefetch hints and datagrams as they come.
struct LogPrefetch(Handed);

struct LogPrefetchWorker(Handed);

impl DatagramService for LogPrefetch {
    fn worker(&self, _worker: usize) -> Box<dyn DatagramWorker> {
        Box::new(LogPrefetchWorker(self.0.clone()))
    }
}

impl DatagramWorker for LogPrefetchWorker {
    fn prefetch(&self, packet: &[u8]) {
        self.0.lock().unwrap().push((true, packet.to_vec()));
    }

    fn on_datagram(
        &mut self,
        _ctx: &DatagramCtx,
        _src: SocketAddr,
        packet: &[u8],
        out: &mut Vec<u8>,
    ) -> bool {
        self.0.lock().unwrap().push((false, packet.to_vec()));
        out.extend_from_slice(packet);
        true
    }
}

/// Every received datagram is handed to the service's prefetch exactly once, before it is
/// served, whether it arrives alone or in a burst that the back-end receives in batches.
#[test]
fn every_datagram_is_prefetched_once_before_it_is_served() {
    let handed: Handed = Arc::default();
    let config = RuntimeConfig {
        workers: 1,
        udp_buffer_bytes: 1 << 20,
        ..RuntimeConfig::default()
    };
    let datagrams = vec![DatagramSpec {
        name: "log".to_owned(),
        addr: "127.0.0.1:0".parse().unwrap(),
        service: Arc::new(LogPrefetch(handed.clone())),
    }];
    let mut rt = Runtime::start_with(&config, Vec::new(), datagrams, Vec::new()).unwrap();
    let udp_addr = rt.datagram_addrs()[0].1;
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // A burst sent before any answer is read (so that turns find several datagrams), then
    // single datagrams.
    let sent: Vec<Vec<u8>> = (0..70u16).map(|i| i.to_be_bytes().to_vec()).collect();
    for msg in &sent[..64] {
        client.send_to(msg, udp_addr).unwrap();
    }
    let mut buf = [0u8; 16];
    for _ in 0..64 {
        client.recv_from(&mut buf).unwrap();
    }
    for msg in &sent[64..] {
        client.send_to(msg, udp_addr).unwrap();
        let (n, _) = client.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], &msg[..]);
    }
    rt.shutdown();
    let log = handed.lock().unwrap();
    for msg in &sent {
        let at = |prefetch: bool| {
            let hits: Vec<usize> = log
                .iter()
                .enumerate()
                .filter(|(_, (p, m))| *p == prefetch && m == msg)
                .map(|(i, _)| i)
                .collect();
            assert_eq!(
                hits.len(),
                1,
                "{msg:?} handed {hits:?} times (prefetch {prefetch})"
            );
            hits[0]
        };
        assert!(at(true) < at(false), "{msg:?} served before its prefetch");
    }
}
