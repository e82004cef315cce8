//! The overlay's I/O: one dedicated thread with its own mio loop (never on the tracker's
//! workers) that runs a [`ChordNode`] over real TCP links.
//!
//! - [`link`]: RFC 6940 §6.6.2 framing on one TCP stream, acks, ack timeout, bounded output.
//! - [`attach`]: Attach without ICE (§6.5.1): the link hello that names the node on a link,
//!   and the routed Attach that finds an address for a Node-ID.
//! - [`node_loop`]: the loop: listener, links, the address book, the Chord node's actions
//!   (send, timers on a monotonic clock, completions), bootstrap (§11.4).
//! - [`http`]: the admin endpoints `PUT`/`GET /overlay/value/<name>`.
//!
//! Limits of this transport: links are plain TCP (the TLS of RFC 6940 §6.6.5 and message
//! signatures come with the overlay security work); links stay open until they fail, bounded
//! by `overlay.max_links`; of the methods the Chord node does not handle, only Attach is
//! understood here, others are answered with an error; a node that reaches no bootstrap node
//! in its first round creates its own overlay and does not merge with another later.
//!
//! [`OverlayHandle`] is how the rest of the tracker talks to the thread: local requests and
//! status queries go over a crossbeam channel (the loop is woken by a `mio::Waker`) and come
//! back on a per-request reply channel; counters are read from shared memory so a scrape never
//! waits for the loop.

pub mod attach;
pub mod http;
pub mod link;
mod node_loop;
mod stats;

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam::channel::{self, Sender};
use parking_lot::Mutex;

use crate::overlay::chord::{LocalOutcome, LocalRequest, NodeId};
use crate::overlay::config::OverlayConfig;

pub use stats::TransportStats;

/// Answers an application request (body) from a node; runs on the overlay thread, so it must
/// be quick.
pub type AppHandler = Arc<dyn Fn(NodeId, &[u8]) -> Vec<u8> + Send + Sync>;

/// Token of the loop's waker.
const WAKER: mio::Token = mio::Token(1);

/// What other threads ask of the overlay thread.
pub(crate) enum Command {
    Local {
        request: LocalRequest,
        reply: Sender<LocalOutcome>,
    },
    Status {
        reply: Sender<serde_json::Value>,
    },
    /// A signed configuration document to apply and spread (RFC 6940 §6.5.4).
    ConfigUpdate {
        document: Vec<u8>,
        reply: Sender<Result<u16, String>>,
    },
    Shutdown,
}

/// Why a request through [`OverlayHandle`] got no outcome.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OverlayError {
    #[error("the overlay thread has stopped")]
    Stopped,
    /// The overlay thread's command queue ([`COMMAND_QUEUE`] entries) is full: the request
    /// was refused rather than queued.
    #[error("the overlay is busy: its command queue is full")]
    Busy,
    #[error("no answer within {0} ms")]
    Timeout(u64),
}

/// Commands (local requests, status, configuration) queued for the overlay thread at most;
/// more are refused with [`OverlayError::Busy`].
pub const COMMAND_QUEUE: usize = 1024;

/// The running overlay thread.
pub struct OverlayHandle {
    commands: Sender<Command>,
    waker: Arc<mio::Waker>,
    stats: Arc<TransportStats>,
    node_id: NodeId,
    /// The bound RELOAD listeners, in the order of `overlay.listen`.
    listen_addrs: Vec<SocketAddr>,
    admin_timeout: Duration,
    value_lifetime_secs: u32,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The last status the overlay thread answered, and the request for a newer one.
    status: Mutex<StatusSnapshot>,
}

/// `/status` never waits for the overlay thread: it answers the last snapshot and asks for
/// the next one.
#[derive(Default)]
struct StatusSnapshot {
    last: Option<(serde_json::Value, std::time::Instant)>,
    pending: Option<channel::Receiver<serde_json::Value>>,
}

impl OverlayHandle {
    /// Validates `config`, binds the RELOAD listener and starts the overlay thread, which
    /// dials the bootstrap nodes (or creates the overlay).
    pub fn start(config: &OverlayConfig) -> anyhow::Result<OverlayHandle> {
        // Until the tracker plugs its peer-status answers in, application requests get an
        // empty answer.
        Self::start_with_app(config, Arc::new(|_, _| Vec::new()))
    }

    /// [`OverlayHandle::start`] with the function that answers application requests (exp_a,
    /// protocols.md §3) addressed to this node; it runs on the overlay thread.
    pub fn start_with_app(
        config: &OverlayConfig,
        app: AppHandler,
    ) -> anyhow::Result<OverlayHandle> {
        config.validate().map_err(|e| anyhow::anyhow!(e))?;
        let (tx, rx) = channel::bounded(COMMAND_QUEUE);
        let stats = Arc::new(TransportStats::default());
        let (node_loop, waker) = node_loop::NodeLoop::new(config, rx, stats.clone(), app)?;
        let node_id = node_loop.node_id();
        let listen_addrs = node_loop.listen_addrs();
        let thread = std::thread::Builder::new()
            .name("overlay".to_owned())
            .spawn(move || node_loop.run())?;
        tracing::info!(node_id = %node_id, listen = ?listen_addrs, "overlay started");
        Ok(OverlayHandle {
            commands: tx,
            waker,
            stats,
            node_id,
            listen_addrs,
            admin_timeout: Duration::from_millis(config.admin_timeout_ms),
            value_lifetime_secs: config.value_lifetime_secs,
            thread: Mutex::new(Some(thread)),
            status: Mutex::new(StatusSnapshot::default()),
        })
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The first bound RELOAD listener (the real port when configured with port 0).
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen_addrs[0]
    }

    /// Every bound RELOAD listener, in the order of `overlay.listen` (real ports).
    pub fn listen_addrs(&self) -> &[SocketAddr] {
        &self.listen_addrs
    }

    fn send(&self, command: Command) -> Result<(), OverlayError> {
        self.commands.try_send(command).map_err(|e| match e {
            channel::TrySendError::Full(_) => {
                self.stats
                    .commands_refused
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                OverlayError::Busy
            }
            channel::TrySendError::Disconnected(_) => OverlayError::Stopped,
        })?;
        self.waker.wake().map_err(|_| OverlayError::Stopped)
    }

    /// Runs a local request (Store, Fetch, Lookup...) on the overlay and waits for its outcome
    /// up to `timeout`.
    pub fn request(
        &self,
        request: LocalRequest,
        timeout: Duration,
    ) -> Result<LocalOutcome, OverlayError> {
        let (reply, answer) = channel::bounded(1);
        self.send(Command::Local { request, reply })?;
        answer.recv_timeout(timeout).map_err(|e| match e {
            channel::RecvTimeoutError::Timeout => {
                OverlayError::Timeout(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX))
            }
            channel::RecvTimeoutError::Disconnected => OverlayError::Stopped,
        })
    }

    /// Hands a local request to the overlay thread without waiting: its outcome arrives on the
    /// returned channel (which is dropped without a value if the thread stops).
    pub fn submit(
        &self,
        request: LocalRequest,
    ) -> Result<channel::Receiver<LocalOutcome>, OverlayError> {
        let (reply, answer) = channel::bounded(1);
        self.send(Command::Local { request, reply })?;
        Ok(answer)
    }

    /// The `overlay` member of `/status`: node id, joined, predecessors, successors, fingers,
    /// stored resources, links, as the overlay thread last reported them (`status_age_ms`
    /// old). Never waits for the overlay thread beyond a first snapshot of at most 100 ms: a
    /// thread busy with pending requests delays nothing. `{"running": false}` when the thread
    /// has not answered yet.
    pub fn status_json(&self) -> serde_json::Value {
        let mut snap = self.status.lock();
        if let Some(rx) = &snap.pending {
            let first = snap.last.is_none();
            let got = if first {
                rx.recv_timeout(Duration::from_millis(100)).ok()
            } else {
                rx.try_recv().ok()
            };
            if let Some(v) = got {
                snap.last = Some((v, std::time::Instant::now()));
                snap.pending = None;
            } else if rx.is_empty()
                && matches!(rx.try_recv(), Err(channel::TryRecvError::Disconnected))
            {
                snap.pending = None;
            }
        }
        let mut stopped = false;
        if snap.pending.is_none() {
            let (reply, answer) = channel::bounded(1);
            stopped = self.send(Command::Status { reply }).is_err();
            if !stopped {
                snap.pending = Some(answer);
                if snap.last.is_none() {
                    if let Ok(v) = snap
                        .pending
                        .as_ref()
                        .map_or(Err(channel::RecvTimeoutError::Disconnected), |rx| {
                            rx.recv_timeout(Duration::from_millis(100))
                        })
                    {
                        snap.last = Some((v, std::time::Instant::now()));
                        snap.pending = None;
                    }
                }
            }
        }
        match &snap.last {
            Some((v, at)) => {
                let mut v = v.clone();
                if let Some(map) = v.as_object_mut() {
                    if stopped {
                        map.insert("running".to_owned(), serde_json::json!(false));
                    }
                    map.insert(
                        "status_age_ms".to_owned(),
                        serde_json::json!(
                            u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX)
                        ),
                    );
                }
                v
            }
            None => serde_json::json!({
                "node_id": self.node_id.to_string(),
                "running": false,
            }),
        }
    }

    /// Applies a signed configuration document (RFC 6940 §11.1) at this node and spreads it
    /// through the overlay with ConfigUpdate (§6.5.4): accepted when signed by one of the
    /// node's current configuration signers with a newer sequence. Returns the new sequence,
    /// or why it was refused (or could not be asked, as [`OverlayError`]'s text).
    pub fn update_configuration(&self, document: Vec<u8>) -> Result<u16, String> {
        self.try_update_configuration(document)
            .map_err(|e| e.to_string())?
    }

    /// [`OverlayHandle::update_configuration`] telling the overlay's refusal (`Ok(Err(why))`)
    /// from a request the overlay could not take or answer in time (`Err`: busy, stopped,
    /// `overlay.admin_timeout_ms` passed).
    pub fn try_update_configuration(
        &self,
        document: Vec<u8>,
    ) -> Result<Result<u16, String>, OverlayError> {
        let (reply, answer) = channel::bounded(1);
        self.send(Command::ConfigUpdate { document, reply })?;
        answer.recv_timeout(self.admin_timeout).map_err(|_| {
            OverlayError::Timeout(u64::try_from(self.admin_timeout.as_millis()).unwrap_or(u64::MAX))
        })
    }

    /// The overlay's Prometheus text.
    pub fn metrics_text(&self) -> String {
        self.stats.render()
    }

    /// The counters, for tests.
    pub fn stats(&self) -> &TransportStats {
        &self.stats
    }

    /// Stops the thread and waits for it (links are closed without a Leave).
    pub fn shutdown(&self) {
        let _ = self.send(Command::Shutdown);
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
impl OverlayHandle {
    /// A handle whose overlay thread never takes a command: its command queue holds `queue`
    /// commands, then every request is refused [`OverlayError::Busy`]. The receiving end
    /// and the poll behind the waker are returned to be kept alive.
    pub(crate) fn stalled(queue: usize) -> (OverlayHandle, channel::Receiver<Command>, mio::Poll) {
        let (tx, rx) = channel::bounded(queue);
        let poll = mio::Poll::new().expect("poll");
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).expect("waker"));
        let handle = OverlayHandle {
            commands: tx,
            waker,
            stats: Arc::new(TransportStats::default()),
            node_id: NodeId::from_u128(1),
            listen_addrs: vec!["127.0.0.1:1".parse().expect("address")],
            admin_timeout: Duration::from_millis(50),
            value_lifetime_secs: 60,
            thread: Mutex::new(None),
            status: Mutex::new(StatusSnapshot::default()),
        };
        (handle, rx, poll)
    }
}

impl Drop for OverlayHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overlay::wire::framing::encode_data_frame;
    use crate::overlay::wire::{decode_frame, Decoded, FrameRef, Message, OverlayHash, WireConfig};
    use std::io::{Read, Write};

    /// A node in the insecure test mode: these tests speak plain TCP and unsigned messages
    /// to check framing and header handling; `security_tests` covers the certificate mode.
    fn config() -> OverlayConfig {
        OverlayConfig {
            enabled: true,
            listen: vec!["127.0.0.1:0".to_owned()],
            node_id_seed: "unit".to_owned(),
            security: "insecure-test".to_owned(),
            ..OverlayConfig::default()
        }
    }

    /// Reads frames until a data frame arrives; `None` when the server closes the stream.
    fn read_data_frame(s: &mut std::net::TcpStream) -> Option<Vec<u8>> {
        read_data_frame_into(s, &mut Vec::new())
    }

    /// [`read_data_frame`] keeping what was read beyond the frame in `buf`.
    fn read_data_frame_into(s: &mut impl Read, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
        let mut chunk = [0u8; 4096];
        loop {
            while let Decoded::Frame { frame, consumed } = decode_frame(buf, 1 << 20).ok()? {
                let data = match frame {
                    FrameRef::Data { payload, .. } => Some(payload.to_vec()),
                    FrameRef::Ack(_) => None,
                };
                buf.drain(..consumed);
                if data.is_some() {
                    return data;
                }
            }
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    #[test]
    fn a_hello_is_answered_with_the_nodes_identity_and_the_node_creates_the_overlay() {
        let cfg = config();
        let handle = OverlayHandle::start(&cfg).unwrap();
        let mut s = std::net::TcpStream::connect(handle.listen_addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let overlay = OverlayHash::of_name(&cfg.instance_name);
        let me = attach::Origin {
            overlay,
            configuration_sequence: 0,
            ttl: 100,
            own: NodeId::from_u128(42),
            advertised: vec!["127.0.0.1:1".parse().unwrap()],
            link_type: crate::overlay::wire::OverlayLinkType::EXP_LINK,
        };
        let hello = me
            .attach_req(7, NodeId::WILDCARD)
            .unwrap()
            .to_bytes()
            .unwrap();
        let mut frame = Vec::new();
        encode_data_frame(&mut frame, 1, &hello).unwrap();
        s.write_all(&frame).unwrap();
        let answer = read_data_frame(&mut s).expect("an attach_ans");
        let answer = Message::decode(&answer, &WireConfig::new(overlay)).unwrap();
        assert_eq!(
            answer.contents.code,
            crate::overlay::wire::MessageCode::AttachAns
        );
        assert_eq!(attach::signer(&answer), Some(handle.node_id()));
        assert_eq!(answer.header.transaction_id.0, 7);
        // Alone with no bootstrap node, the node created the overlay and answers for itself.
        let mut joined = false;
        for _ in 0..200 {
            let status = handle.status_json();
            assert_eq!(status["running"], true);
            if status["joined"] == true {
                assert_eq!(status["links"], 1);
                joined = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(joined);
        let outcome = handle
            .request(
                LocalRequest::Lookup {
                    resource: crate::overlay::chord::resource_id(b"x"),
                },
                Duration::from_secs(20),
            )
            .unwrap();
        assert_eq!(
            outcome,
            LocalOutcome::Lookup {
                responsible: handle.node_id()
            }
        );
        assert!(handle.metrics_text().contains("attach_ans"));
        handle.shutdown();
    }

    #[test]
    fn a_message_before_the_hello_garbage_or_silence_closes_the_link() {
        let handle = OverlayHandle::start(&OverlayConfig {
            attach_timeout_ms: 100,
            ..config()
        })
        .unwrap();
        let overlay = OverlayHash::of_name(&config().instance_name);
        let ping = Message::new(
            crate::overlay::wire::ForwardingHeader::new_request(
                overlay,
                0,
                100,
                crate::overlay::wire::TransactionId(1),
                vec![crate::overlay::wire::Destination::Node(handle.node_id())],
            ),
            &crate::overlay::wire::Body::PingReq(crate::overlay::wire::PingReq {
                padding: Vec::new(),
            }),
        )
        .unwrap()
        .to_bytes()
        .unwrap();
        // A valid message that is not a hello, and a truncated one: the sender is unknown,
        // the link closes.
        for payload in [ping.as_slice(), &[0xd2, 0x45, 0x4c, 0x4f, 0, 0]] {
            let mut s = std::net::TcpStream::connect(handle.listen_addr()).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let mut frame = Vec::new();
            encode_data_frame(&mut frame, 1, payload).unwrap();
            s.write_all(&frame).unwrap();
            assert_eq!(read_data_frame(&mut s), None);
        }
        // An unknown frame type.
        let mut s = std::net::TcpStream::connect(handle.listen_addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(&[0x42; 32]).unwrap();
        assert_eq!(read_data_frame(&mut s), None);
        // Silence: an accepted connection without a hello is closed after the attach timeout.
        let mut s = std::net::TcpStream::connect(handle.listen_addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        assert_eq!(read_data_frame(&mut s), None);
        assert_eq!(handle.status_json()["running"], true);
        assert!(
            handle
                .stats()
                .link_failures
                .load(std::sync::atomic::Ordering::Relaxed)
                >= 4
        );
        handle.shutdown();
    }

    #[test]
    fn a_peer_that_never_acks_loses_its_link() {
        let cfg = OverlayConfig {
            link_ack_timeout_ms: 100,
            ..config()
        };
        let handle = OverlayHandle::start(&cfg).unwrap();
        let mut s = std::net::TcpStream::connect(handle.listen_addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let me = attach::Origin {
            overlay: OverlayHash::of_name(&cfg.instance_name),
            configuration_sequence: 0,
            ttl: 100,
            own: NodeId::from_u128(42),
            advertised: vec!["127.0.0.1:1".parse().unwrap()],
            link_type: crate::overlay::wire::OverlayLinkType::EXP_LINK,
        };
        let hello = me
            .attach_req(7, NodeId::WILDCARD)
            .unwrap()
            .to_bytes()
            .unwrap();
        let mut frame = Vec::new();
        encode_data_frame(&mut frame, 1, &hello).unwrap();
        s.write_all(&frame).unwrap();
        // The attach_ans arrives; we never acknowledge it, so the node drops the link.
        assert!(read_data_frame(&mut s).is_some());
        assert_eq!(read_data_frame(&mut s), None);
        assert!(
            handle
                .stats()
                .link_failures
                .load(std::sync::atomic::Ordering::Relaxed)
                >= 1
        );
        handle.shutdown();
    }

    #[test]
    fn nodes_on_port_zero_get_ids_from_their_bound_addresses() {
        let plain = OverlayConfig {
            node_id_seed: String::new(),
            ..config()
        };
        let a = OverlayHandle::start(&plain).unwrap();
        let b = OverlayHandle::start(&plain).unwrap();
        assert_ne!(a.node_id(), b.node_id());
        let expected = OverlayConfig {
            node_id_seed: a.listen_addr().to_string(),
            ..config()
        }
        .node_id()
        .unwrap();
        assert_eq!(a.node_id(), expected);
    }

    #[test]
    fn a_method_for_another_node_with_no_route_is_answered_not_found() {
        use crate::overlay::wire::{Body, Destination, ErrorCode, ForwardingHeader, TransactionId};
        let cfg = config();
        let handle = OverlayHandle::start(&cfg).unwrap();
        let overlay = OverlayHash::of_name(&cfg.instance_name);
        let wire_cfg = WireConfig::new(overlay);
        let mut s = std::net::TcpStream::connect(handle.listen_addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let me = attach::Origin {
            overlay,
            configuration_sequence: 0,
            ttl: 100,
            own: NodeId::from_u128(42),
            advertised: vec!["127.0.0.1:1".parse().unwrap()],
            link_type: crate::overlay::wire::OverlayLinkType::EXP_LINK,
        };
        let mut frames = Vec::new();
        let hello = me
            .attach_req(7, NodeId::WILDCARD)
            .unwrap()
            .to_bytes()
            .unwrap();
        encode_data_frame(&mut frames, 1, &hello).unwrap();
        // A Probe (a method the Chord node does not read) for a node nobody knows.
        let probe = Message::new(
            ForwardingHeader::new_request(
                overlay,
                0,
                100,
                TransactionId(8),
                vec![Destination::Node(NodeId::from_u128(99))],
            ),
            &Body::ProbeReq(crate::overlay::wire::ProbeReq {
                requested_info: Vec::new(),
            }),
        )
        .unwrap()
        .to_bytes()
        .unwrap();
        encode_data_frame(&mut frames, 2, &probe).unwrap();
        s.write_all(&frames).unwrap();
        let mut buf = Vec::new();
        let first =
            Message::decode(&read_data_frame_into(&mut s, &mut buf).unwrap(), &wire_cfg).unwrap();
        assert_eq!(
            first.contents.code,
            crate::overlay::wire::MessageCode::AttachAns
        );
        let second =
            Message::decode(&read_data_frame_into(&mut s, &mut buf).unwrap(), &wire_cfg).unwrap();
        assert_eq!(second.header.transaction_id, TransactionId(8));
        assert_eq!(
            second.header.destination_list,
            vec![Destination::Node(NodeId::from_u128(42))]
        );
        match second
            .contents
            .decode_body(&crate::overlay::wire::NoKinds)
            .unwrap()
        {
            Body::Error(e) => assert_eq!(e.error_code, ErrorCode::NotFound),
            other => panic!("expected an error, got {other:?}"),
        }
        handle.shutdown();
    }

    /// Opens a link to `handle` as Node-ID 42 (the hello, then its answer read) and returns
    /// the stream with the bytes read past the answer.
    fn linked(handle: &OverlayHandle, cfg: &OverlayConfig) -> (std::net::TcpStream, Vec<u8>) {
        let overlay = OverlayHash::of_name(&cfg.instance_name);
        let mut s = std::net::TcpStream::connect(handle.listen_addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let me = attach::Origin {
            overlay,
            configuration_sequence: cfg.configuration_sequence,
            ttl: cfg.initial_ttl,
            own: NodeId::from_u128(42),
            advertised: vec!["127.0.0.1:1".parse().unwrap()],
            link_type: crate::overlay::wire::OverlayLinkType::EXP_LINK,
        };
        let hello = me
            .attach_req(7, NodeId::WILDCARD)
            .unwrap()
            .to_bytes()
            .unwrap();
        let mut frame = Vec::new();
        encode_data_frame(&mut frame, 1, &hello).unwrap();
        s.write_all(&frame).unwrap();
        let mut buf = Vec::new();
        let ans = read_data_frame_into(&mut s, &mut buf).expect("attach_ans");
        let ans = Message::decode(&ans, &WireConfig::new(overlay)).unwrap();
        assert_eq!(
            ans.contents.code,
            crate::overlay::wire::MessageCode::AttachAns
        );
        (s, buf)
    }

    /// Sends a Ping with the given header fields on a linked stream and returns the answer.
    fn ping(
        s: &mut std::net::TcpStream,
        buf: &mut Vec<u8>,
        cfg: &OverlayConfig,
        seq: u32,
        (ttl, config_seq, to): (u8, u16, NodeId),
    ) -> crate::overlay::wire::Body {
        use crate::overlay::wire::{Body, Destination, ForwardingHeader, PingReq, TransactionId};
        let overlay = OverlayHash::of_name(&cfg.instance_name);
        let mut header = ForwardingHeader::new_request(
            overlay,
            config_seq,
            ttl,
            TransactionId(1000 + u64::from(seq)),
            vec![Destination::Node(to)],
        );
        header.ttl = ttl;
        let mut m = Message::new(
            header,
            &Body::PingReq(PingReq {
                padding: Vec::new(),
            }),
        )
        .unwrap();
        attach::sign_as(&mut m, NodeId::from_u128(42));
        let mut frame = Vec::new();
        encode_data_frame(&mut frame, seq, &m.to_bytes().unwrap()).unwrap();
        s.write_all(&frame).unwrap();
        // Large enough for a message whose TTL is above the node's initial-ttl.
        let mut wire_cfg = WireConfig::new(overlay);
        wire_cfg.initial_ttl = 255;
        loop {
            let bytes = read_data_frame_into(s, buf).expect("an answer");
            let answer = Message::decode(&bytes, &wire_cfg).unwrap();
            if answer.header.transaction_id == TransactionId(1000 + u64::from(seq)) {
                return answer
                    .contents
                    .decode_body(&crate::overlay::wire::NoKinds)
                    .unwrap();
            }
        }
    }

    /// Waits (at most 10 s) until the node has created its overlay.
    fn wait_joined(handle: &OverlayHandle) {
        for _ in 0..500 {
            if handle.status_json()["joined"] == true {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the node never created its overlay");
    }

    fn error_code(body: &crate::overlay::wire::Body) -> Option<crate::overlay::wire::ErrorCode> {
        match body {
            crate::overlay::wire::Body::Error(e) => Some(e.error_code),
            _ => None,
        }
    }

    #[test]
    fn ttl_beyond_initial_or_spent_is_answered_ttl_exceeded() {
        use crate::overlay::wire::ErrorCode;
        let cfg = OverlayConfig {
            initial_ttl: 50,
            ..config()
        };
        let handle = OverlayHandle::start(&cfg).unwrap();
        let me = handle.node_id();
        let (mut s, mut buf) = linked(&handle, &cfg);
        // The node has created its overlay, so a Ping to it is answered.
        wait_joined(&handle);
        let ok = ping(&mut s, &mut buf, &cfg, 2, (50, 0, me));
        assert!(
            matches!(ok, crate::overlay::wire::Body::PingAns(_)),
            "{ok:?}"
        );
        // §6.3.2: above initial-ttl.
        let over = ping(&mut s, &mut buf, &cfg, 3, (51, 0, me));
        assert_eq!(error_code(&over), Some(ErrorCode::TtlExceeded));
        // §6.3.2: spent before reaching its destination (another node, reached through us).
        let spent = ping(&mut s, &mut buf, &cfg, 4, (0, 0, NodeId::from_u128(7)));
        assert_eq!(error_code(&spent), Some(ErrorCode::TtlExceeded));
        handle.shutdown();
    }

    #[test]
    fn another_configuration_sequence_is_too_old_or_too_new() {
        use crate::overlay::wire::ErrorCode;
        let cfg = OverlayConfig {
            configuration_sequence: 7,
            ..config()
        };
        let handle = OverlayHandle::start(&cfg).unwrap();
        let me = handle.node_id();
        let (mut s, mut buf) = linked(&handle, &cfg);
        wait_joined(&handle);
        let old = ping(&mut s, &mut buf, &cfg, 2, (100, 6, me));
        assert_eq!(error_code(&old), Some(ErrorCode::ConfigTooOld));
        let new = ping(&mut s, &mut buf, &cfg, 3, (100, 8, me));
        assert_eq!(error_code(&new), Some(ErrorCode::ConfigTooNew));
        // Modulo 2^16: 65534 is behind 7 (it wrapped), 30000 is ahead, 40000 (more than half
        // the space ahead) is behind.
        let wrapped = ping(&mut s, &mut buf, &cfg, 4, (100, 65534, me));
        assert_eq!(error_code(&wrapped), Some(ErrorCode::ConfigTooOld));
        let ahead = ping(&mut s, &mut buf, &cfg, 5, (100, 30000, me));
        assert_eq!(error_code(&ahead), Some(ErrorCode::ConfigTooNew));
        let far = ping(&mut s, &mut buf, &cfg, 7, (100, 40000, me));
        assert_eq!(error_code(&far), Some(ErrorCode::ConfigTooOld));
        let same = ping(&mut s, &mut buf, &cfg, 6, (100, 7, me));
        let crate::overlay::wire::Body::PingAns(ans) = same else {
            panic!("expected a PingAns, got {same:?}");
        };
        // §6.5.3.2: the time is absolute (ms since 1970), not time since the node started.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(
            ans.time <= now && ans.time + 600_000 > now,
            "ping time {} vs now {now}",
            ans.time
        );
        handle.shutdown();
    }

    /// The certificate mode against a peer that plays by the wire rules but not by the
    /// security rules (RFC 6940 §6.3.4, §7.1, §13): each attack is answered Error_Forbidden
    /// or refused at the link, and changes nothing.
    mod security_tests {
        use super::*;
        use crate::overlay::security::tls::{Admission, TlsConfigs};
        use crate::overlay::security::{Identity, NodeIdDigest};
        use crate::overlay::storage::{
            DataModel, DataValue, FetchReq, ModelSpecifier, StoreKindData, StoreReq, StoredData,
            StoredDataSpecifier, StoredDataValue, KIND_OPAQUE_VALUE,
        };
        use crate::overlay::wire::{
            Body, Destination, ErrorCode, ForwardingHeader, JoinReq, Signature, TransactionId,
        };

        fn secure_config() -> OverlayConfig {
            OverlayConfig {
                enabled: true,
                listen: vec!["127.0.0.1:0".to_owned()],
                ..OverlayConfig::default()
            }
        }

        fn identity() -> Identity {
            Identity::generate(NodeIdDigest::Sha256, "ppsp-tracker.overlay").unwrap()
        }

        // The access policy is the same for every kind; the operators' opaque kind checks no
        // value syntax, so the values below can be plain text.
        fn kinds() -> Vec<(crate::overlay::wire::KindId, DataModel)> {
            vec![(KIND_OPAQUE_VALUE, DataModel::Dictionary)]
        }

        /// A peer on a TLS link with its own certificate.
        struct Peer {
            s: rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>,
            buf: Vec<u8>,
            seq: u32,
            overlay: OverlayHash,
        }

        impl Peer {
            fn connect(handle: &OverlayHandle, cert: &Identity) -> Peer {
                let tls = TlsConfigs::new(
                    cert,
                    NodeIdDigest::Sha256,
                    Arc::new(Admission::new(Default::default(), Default::default())),
                )
                .unwrap();
                let rustls::Connection::Client(conn) = tls.connect().unwrap() else {
                    panic!("not a client connection");
                };
                let tcp = std::net::TcpStream::connect(handle.listen_addr()).unwrap();
                tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                Peer {
                    s: rustls::StreamOwned::new(conn, tcp),
                    buf: Vec::new(),
                    seq: 0,
                    overlay: OverlayHash::of_name(&secure_config().instance_name),
                }
            }

            /// Sends `m` as it is (signed or not by the caller).
            fn send(&mut self, m: &Message) -> bool {
                self.seq += 1;
                let mut frame = Vec::new();
                encode_data_frame(&mut frame, self.seq, &m.to_bytes().unwrap()).unwrap();
                self.s.write_all(&frame).is_ok() && self.s.flush().is_ok()
            }

            /// The answer with transaction id `tid`; `None` when the link closes.
            fn answer(&mut self, tid: u64) -> Option<(Message, Body)> {
                let cfg = WireConfig::new(self.overlay);
                loop {
                    let bytes = read_data_frame_into(&mut self.s, &mut self.buf)?;
                    let m = Message::decode(&bytes, &cfg).ok()?;
                    if m.header.transaction_id.0 == tid {
                        let body = m.contents.decode_body(&kinds()).ok()?;
                        return Some((m, body));
                    }
                }
            }

            /// The link hello signed by `signer`; the attach_ans, or `None` when refused.
            fn hello(&mut self, signer: &Identity) -> Option<(Message, Body)> {
                let me = attach::Origin {
                    overlay: self.overlay,
                    configuration_sequence: 0,
                    ttl: 100,
                    own: signer.node_id(),
                    advertised: vec!["127.0.0.1:1".parse().unwrap()],
                    link_type: crate::overlay::wire::OverlayLinkType::TLS_TCP_FH_NO_ICE,
                };
                let mut hello = me.attach_req(1, NodeId::WILDCARD).unwrap();
                signer.sign_message(&mut hello).unwrap();
                if !self.send(&hello) {
                    return None;
                }
                self.answer(1)
            }
        }

        fn request(overlay: OverlayHash, tid: u64, to: Destination, body: &Body) -> Message {
            Message::new(
                ForwardingHeader::new_request(overlay, 0, 100, TransactionId(tid), vec![to]),
                body,
            )
            .unwrap()
        }

        fn value(key: NodeId, text: &[u8], time: u64) -> StoredData {
            StoredData {
                storage_time: time,
                lifetime: 600,
                value: StoredDataValue::Dictionary {
                    key: key.0.to_vec(),
                    value: DataValue {
                        exists: true,
                        value: text.to_vec(),
                    },
                },
                signature: Signature::placeholder(),
            }
        }

        fn store_body(
            resource: &crate::overlay::wire::ResourceId,
            values: Vec<StoredData>,
        ) -> Body {
            Body::StoreReq(StoreReq {
                resource: resource.clone(),
                replica_number: 0,
                kind_data: vec![StoreKindData {
                    kind: KIND_OPAQUE_VALUE,
                    generation_counter: 0,
                    values,
                }],
            })
        }

        fn forbidden(answer: Option<(Message, Body)>) -> bool {
            matches!(answer, Some((_, Body::Error(e))) if e.error_code == ErrorCode::Forbidden)
        }

        fn counter(handle: &OverlayHandle, c: &std::sync::atomic::AtomicU64) -> u64 {
            let _ = handle;
            c.load(std::sync::atomic::Ordering::Relaxed)
        }

        #[test]
        fn a_node_not_admitted_is_refused_at_the_link_and_the_ring_does_not_change() {
            let admitted = identity();
            let outsider = identity();
            let cfg = OverlayConfig {
                admitted: vec![
                    format!(
                        "sha256:{}",
                        admitted
                            .cert_hash()
                            .iter()
                            .map(|b| format!("{b:02x}"))
                            .collect::<String>()
                    ),
                    NodeId::from_u128(1).to_string(),
                ],
                ..secure_config()
            };
            let handle = OverlayHandle::start(&cfg).unwrap();
            wait_joined(&handle);
            // A valid certificate that is not on the list: the handshake fails, no hello is
            // answered, no link or neighbour appears.
            let mut out = Peer::connect(&handle, &outsider);
            assert!(out.hello(&outsider).is_none());
            assert!(counter(&handle, &handle.stats().links_refused) >= 1);
            // The refused connection is dropped (the status is a snapshot the overlay thread
            // refreshes, so it may still show the connection for a moment).
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            let status = loop {
                let status = handle.status_json();
                if status["links"] == 0 || std::time::Instant::now() > deadline {
                    break status;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            };
            assert_eq!(status["links"], 0, "{status}");
            assert_eq!(status["successors"].as_array().map(Vec::len), Some(0));
            assert_eq!(status["link_peers"].as_array().map(Vec::len), Some(0));
            // The admitted certificate (listed by fingerprint) is answered.
            let mut ok = Peer::connect(&handle, &admitted);
            let (ans, _) = ok.hello(&admitted).expect("the admitted node is answered");
            assert_eq!(
                ans.contents.code,
                crate::overlay::wire::MessageCode::AttachAns
            );
            handle.shutdown();
        }

        #[test]
        fn a_node_on_the_bad_node_list_is_refused_at_the_link() {
            let bad = identity();
            let handle = OverlayHandle::start(&OverlayConfig {
                bad_nodes: vec![bad.node_id().to_string()],
                ..secure_config()
            })
            .unwrap();
            wait_joined(&handle);
            let mut p = Peer::connect(&handle, &bad);
            assert!(p.hello(&bad).is_none());
            assert!(counter(&handle, &handle.stats().links_refused) >= 1);
            // Anyone else still links (the list is empty otherwise).
            let good = identity();
            let mut q = Peer::connect(&handle, &good);
            assert!(q.hello(&good).is_some());
            handle.shutdown();
        }

        #[test]
        fn a_hello_or_join_in_another_nodes_name_is_refused() {
            let handle = OverlayHandle::start(&secure_config()).unwrap();
            wait_joined(&handle);
            let a = identity();
            let b = identity();
            // TLS with A's certificate, hello signed (validly) by B: not the link's node.
            let mut p = Peer::connect(&handle, &a);
            assert!(p.hello(&b).is_none());
            assert!(counter(&handle, &handle.stats().links_refused) >= 1);
            // A hello signed by A that names B as its sender identity in the Attach: the
            // signature covers the identity, so it does not verify.
            let mut p = Peer::connect(&handle, &a);
            let me = attach::Origin {
                overlay: p.overlay,
                configuration_sequence: 0,
                ttl: 100,
                own: a.node_id(),
                advertised: vec!["127.0.0.1:1".parse().unwrap()],
                link_type: crate::overlay::wire::OverlayLinkType::TLS_TCP_FH_NO_ICE,
            };
            let mut hello = me.attach_req(1, NodeId::WILDCARD).unwrap();
            a.sign_message(&mut hello).unwrap();
            hello.security.signature.identity = b.signer_identity();
            hello.security.certificates.push(b.generic_certificate());
            p.send(&hello);
            assert!(p.answer(1).is_none());
            // A properly linked A sends a Join naming B: Error_Forbidden, B is not added.
            let mut p = Peer::connect(&handle, &a);
            p.hello(&a).expect("hello answered");
            let mut join = request(
                p.overlay,
                5,
                Destination::Node(handle.node_id()),
                &Body::JoinReq(JoinReq {
                    joining_peer_id: b.node_id(),
                    overlay_specific_data: Vec::new(),
                }),
            );
            a.sign_message(&mut join).unwrap();
            p.send(&join);
            assert!(forbidden(p.answer(5)));
            let status = handle.status_json();
            assert!(
                !status["successors"]
                    .to_string()
                    .contains(&b.node_id().to_string()),
                "{status}"
            );
            handle.shutdown();
        }

        #[test]
        fn forged_foreign_and_unsigned_stores_are_forbidden_and_change_nothing() {
            let handle = OverlayHandle::start(&secure_config()).unwrap();
            wait_joined(&handle);
            let a = identity();
            let b = identity();
            let mut p = Peer::connect(&handle, &a);
            p.hello(&a).expect("hello answered");
            let resource = crate::overlay::chord::resource_id(b"swarm").to_wire();
            let to = Destination::Resource(resource.clone());
            let signed_value = |who: &Identity, key: NodeId, text: &[u8], time: u64| {
                let mut v = value(key, text, time);
                who.sign_stored(&resource, KIND_OPAQUE_VALUE, &mut v)
                    .unwrap();
                v
            };
            // Control: A stores its own entry.
            let mut good = request(
                p.overlay,
                10,
                to.clone(),
                &store_body(&resource, vec![signed_value(&a, a.node_id(), b"mine", 1)]),
            );
            a.sign_message(&mut good).unwrap();
            p.send(&good);
            let (_, ans) = p.answer(10).expect("store answered");
            assert!(matches!(ans, Body::StoreAns(_)), "{ans:?}");

            let attempts: Vec<(&str, Message)> = {
                let overwrite = signed_value(&a, a.node_id(), b"forged", 2);
                // 1. The message signature with one bit flipped.
                let mut flipped = request(
                    p.overlay,
                    11,
                    to.clone(),
                    &store_body(&resource, vec![overwrite.clone()]),
                );
                a.sign_message(&mut flipped).unwrap();
                flipped.security.signature.value[8] ^= 0x01;
                // 2. A's message presented under B's certificate and identity.
                let mut replayed = request(
                    p.overlay,
                    12,
                    to.clone(),
                    &store_body(&resource, vec![overwrite.clone()]),
                );
                a.sign_message(&mut replayed).unwrap();
                replayed.security.certificates = vec![b.generic_certificate()];
                replayed.security.signature.identity = b.signer_identity();
                // 3. A (validly signing everything) writes B's dictionary entry.
                let mut foreign = request(
                    p.overlay,
                    13,
                    to.clone(),
                    &store_body(&resource, vec![signed_value(&a, b.node_id(), b"yours", 3)]),
                );
                a.sign_message(&mut foreign).unwrap();
                // 4. A value signed by B carried in A's original Store.
                let mut smuggled = request(
                    p.overlay,
                    14,
                    to.clone(),
                    &store_body(&resource, vec![signed_value(&b, b.node_id(), b"b", 4)]),
                );
                smuggled.security.certificates = vec![b.generic_certificate()];
                a.sign_message(&mut smuggled).unwrap();
                // 5. An unsigned Store (placeholder security block, unsigned value).
                let unsigned = request(
                    p.overlay,
                    15,
                    to.clone(),
                    &store_body(&resource, vec![value(a.node_id(), b"unsigned", 5)]),
                );
                // 6. A signed message carrying an unsigned value.
                let mut bare_value = request(
                    p.overlay,
                    16,
                    to.clone(),
                    &store_body(&resource, vec![value(a.node_id(), b"bare", 6)]),
                );
                a.sign_message(&mut bare_value).unwrap();
                // 7. A value whose own signature has a flipped bit.
                let mut bad_value = signed_value(&a, a.node_id(), b"tampered", 7);
                bad_value.signature.value[8] ^= 0x01;
                let mut tampered = request(
                    p.overlay,
                    17,
                    to.clone(),
                    &store_body(&resource, vec![bad_value]),
                );
                a.sign_message(&mut tampered).unwrap();
                vec![
                    ("flipped message signature bit", flipped),
                    ("replay under another certificate", replayed),
                    ("store for another node's key", foreign),
                    ("another signer's value in an original store", smuggled),
                    ("unsigned store", unsigned),
                    ("unsigned value", bare_value),
                    ("flipped value signature bit", tampered),
                ]
            };
            for (what, m) in attempts {
                let tid = m.header.transaction_id.0;
                assert!(p.send(&m), "{what}: send");
                assert!(forbidden(p.answer(tid)), "{what}: not Error_Forbidden");
            }
            assert_eq!(counter(&handle, &handle.stats().forbidden_stores), 7);
            assert!(counter(&handle, &handle.stats().bad_signatures) >= 4);
            // Nothing changed: the dictionary holds A's first value only.
            let mut fetch = request(
                p.overlay,
                20,
                to.clone(),
                &Body::FetchReq(FetchReq {
                    resource: resource.clone(),
                    specifiers: vec![StoredDataSpecifier {
                        kind: KIND_OPAQUE_VALUE,
                        generation: 0,
                        model: ModelSpecifier::Dictionary(Vec::new()),
                    }],
                }),
            );
            a.sign_message(&mut fetch).unwrap();
            p.send(&fetch);
            let (_, ans) = p.answer(20).expect("fetch answered");
            let Body::FetchAns(ans) = ans else {
                panic!("expected a FetchAns, got {ans:?}");
            };
            let values = &ans.kind_responses[0].values;
            assert_eq!(values.len(), 1, "{values:?}");
            assert_eq!(ans.kind_responses[0].generation, 1);
            match &values[0].value {
                StoredDataValue::Dictionary { key, value } => {
                    assert_eq!(key.as_slice(), a.node_id().0.as_slice());
                    assert_eq!(value.value, b"mine");
                }
                other => panic!("{other:?}"),
            }
            // The value is served with its signature, and its signer's certificate travels
            // with the answer.
            let mut certs = crate::overlay::security::CertCache::new(NodeIdDigest::Sha256, 8);
            let (answer, _) = {
                p.send(&fetch);
                p.answer(20).unwrap()
            };
            let signer = certs
                .verify_stored(
                    &resource,
                    KIND_OPAQUE_VALUE,
                    &values[0],
                    &answer.security.certificates,
                )
                .unwrap();
            assert_eq!(signer.node_id, a.node_id());
            assert!(handle
                .metrics_text()
                .contains("ppsp_overlay_forbidden_stores_total"));
            handle.shutdown();
        }

        use crate::overlay::security::configuration::ConfigDocument;

        fn document(signer: &Identity, sequence: u16, bad: &[NodeId]) -> Vec<u8> {
            ConfigDocument {
                instance_name: secure_config().instance_name,
                sequence,
                signers: vec![signer.node_id()],
                admitted: Vec::new(),
                bad_nodes: bad.iter().map(NodeId::to_string).collect(),
                shared_secret: None,
            }
            .sign(signer)
            .unwrap()
        }

        fn config_update(overlay: OverlayHash, tid: u64, to: NodeId, doc: Vec<u8>) -> Message {
            let mut m = request(
                overlay,
                tid,
                Destination::Node(to),
                &Body::ConfigUpdateReq(crate::overlay::wire::ConfigUpdateReq::Config(doc)),
            );
            m.header.configuration_sequence = u16::MAX;
            m
        }

        fn error_of(answer: Option<(Message, Body)>) -> Option<ErrorCode> {
            match answer {
                Some((_, Body::Error(e))) => Some(e.error_code),
                _ => None,
            }
        }

        #[test]
        fn config_update_is_applied_once_and_refused_when_unsigned_old_or_not_from_a_signer() {
            let signer = identity();
            let stranger = identity();
            let dir = tempfile::tempdir().unwrap();
            let kept = dir.path().join("overlay-config.xml");
            let config = OverlayConfig {
                configuration_signers: vec![signer.node_id().to_string()],
                configuration_document: kept.display().to_string(),
                ..secure_config()
            };
            let handle = OverlayHandle::start(&config).unwrap();
            wait_joined(&handle);
            let me = handle.node_id();
            let p_id = identity();
            let mut p = Peer::connect(&handle, &p_id);
            p.hello(&p_id).expect("hello answered");
            let victim = identity();
            // Signed by a node that is not a configuration signer: Error_Forbidden.
            let mut m = config_update(p.overlay, 10, me, document(&stranger, 1, &[]));
            p_id.sign_message(&mut m).unwrap();
            p.send(&m);
            assert_eq!(error_of(p.answer(10)), Some(ErrorCode::Forbidden));
            // The signer's document with one byte of the configuration changed: Forbidden.
            let good = document(&signer, 1, &[victim.node_id()]);
            let text = String::from_utf8(good.clone()).unwrap();
            let tampered = text.replace("sequence=\"1\"", "sequence=\"2\"");
            let mut m = config_update(p.overlay, 11, me, tampered.into_bytes());
            p_id.sign_message(&mut m).unwrap();
            p.send(&m);
            assert_eq!(error_of(p.answer(11)), Some(ErrorCode::Forbidden));
            // Not a document at all: Error_Invalid_Message.
            let mut m = config_update(p.overlay, 12, me, b"<overlay/>".to_vec());
            p_id.sign_message(&mut m).unwrap();
            p.send(&m);
            assert_eq!(error_of(p.answer(12)), Some(ErrorCode::InvalidMessage));
            assert_eq!(handle.status_json()["configuration_sequence"], 0);
            // The valid one: ConfigUpdateAns, the sequence moves, the bad node is refused.
            let mut m = config_update(p.overlay, 13, me, good.clone());
            p_id.sign_message(&mut m).unwrap();
            p.send(&m);
            let (_, body) = p.answer(13).expect("answered");
            assert_eq!(body, Body::ConfigUpdateAns);
            let mut v = Peer::connect(&handle, &victim);
            assert!(v.hello(&victim).is_none(), "the new bad node still links");
            // The same document again (not newer): Error_Config_Too_Old, nothing changes.
            let mut m = config_update(p.overlay, 14, me, good);
            p_id.sign_message(&mut m).unwrap();
            p.send(&m);
            assert_eq!(error_of(p.answer(14)), Some(ErrorCode::ConfigTooOld));
            // The sender's own Ping with the old sequence 0 is now Error_Config_Too_Old.
            let mut ping = request(
                p.overlay,
                15,
                Destination::Node(me),
                &Body::PingReq(crate::overlay::wire::PingReq {
                    padding: Vec::new(),
                }),
            );
            p_id.sign_message(&mut ping).unwrap();
            p.send(&ping);
            assert_eq!(error_of(p.answer(15)), Some(ErrorCode::ConfigTooOld));
            // The operator endpoint: a newer document is applied, the same one again is 403.
            let third = document(&signer, 2, &[victim.node_id()]);
            let put = |doc: &[u8]| {
                super::http::serve(Some(&handle), "PUT", super::http::CONFIGURATION_PATH, doc)
                    .unwrap()
            };
            let ok = put(&third);
            assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));
            assert!(String::from_utf8_lossy(&ok.body).contains("\"configuration_sequence\": 2"));
            assert_eq!(put(&third).status, 403);
            let get =
                super::http::serve(Some(&handle), "GET", super::http::CONFIGURATION_PATH, b"");
            assert_eq!(get.unwrap().status, 405);
            handle.shutdown();
            // The accepted document was kept (mode 0600) and a restart starts from it.
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&kept).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "mode {mode:o}");
            let again = OverlayHandle::start(&config).unwrap();
            wait_joined(&again);
            assert_eq!(again.status_json()["configuration_sequence"], 2);
            let mut v = Peer::connect(&again, &victim);
            assert!(v.hello(&victim).is_none(), "the kept bad-node list is lost");
            again.shutdown();
        }

        #[test]
        fn with_a_shared_secret_a_hello_without_its_proof_is_refused() {
            let handle = OverlayHandle::start(&OverlayConfig {
                shared_secret: "overlay secret".to_owned(),
                ..secure_config()
            })
            .unwrap();
            wait_joined(&handle);
            let overlay_name = secure_config().instance_name;
            // A valid, admitted certificate without the secret: refused after its hello.
            let a = identity();
            let mut p = Peer::connect(&handle, &a);
            assert!(p.hello(&a).is_none());
            assert!(counter(&handle, &handle.stats().links_refused) >= 1);
            // b's hello to the node over `p`, carrying a proof made with `secret` for `cert`.
            let b = identity();
            let send_hello = |p: &mut Peer, secret: &[u8], cert: &[u8; 32]| {
                let me = attach::Origin {
                    overlay: p.overlay,
                    configuration_sequence: 0,
                    ttl: 100,
                    own: b.node_id(),
                    advertised: vec!["127.0.0.1:1".parse().unwrap()],
                    link_type: crate::overlay::wire::OverlayLinkType::TLS_TCP_FH_NO_ICE,
                };
                let mut hello = me.attach_req(1, NodeId::WILDCARD).unwrap();
                attach::add_shared_secret_proof(
                    &mut hello,
                    attach::shared_secret_proof(secret, &overlay_name, cert),
                )
                .unwrap();
                b.sign_message(&mut hello).unwrap();
                p.send(&hello);
            };
            // A proof made with another secret, or for another certificate: refused.
            for (secret, cert) in [
                (&b"wrong secret"[..], b.cert_hash()),
                (&b"overlay secret"[..], a.cert_hash()),
            ] {
                let mut p = Peer::connect(&handle, &b);
                send_hello(&mut p, secret, &cert);
                assert!(p.answer(1).is_none());
            }
            // The right proof: answered, and the answer proves the node holds the secret too.
            let mut p = Peer::connect(&handle, &b);
            send_hello(&mut p, b"overlay secret", &b.cert_hash());
            let (_, body) = p.answer(1).expect("the node with the secret is answered");
            let Body::AttachAns(ans) = body else {
                panic!("not an attach_ans: {body:?}");
            };
            let node_cert =
                p.s.conn
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| crate::overlay::security::cert_hash(c.as_ref()))
                    .unwrap();
            assert!(attach::has_shared_secret_proof(
                &ans,
                b"overlay secret",
                &overlay_name,
                &node_cert
            ));
            handle.shutdown();
        }

        /// Four nodes; a configuration document naming one of them a bad node, published at
        /// one node, reaches every node with ConfigUpdate: each drops its links to the removed
        /// node at once (the bound asserted is 30 s of a loaded test machine; one flood takes
        /// one message per link), and the removed node can link to none of them again.
        #[test]
        fn a_node_removed_by_config_update_loses_every_link_and_cannot_rejoin() {
            let signer = identity();
            let removed = identity();
            let dir = tempfile::tempdir().unwrap();
            removed.write(dir.path()).unwrap();
            let base = OverlayConfig {
                configuration_signers: vec![signer.node_id().to_string()],
                chord_update_interval_secs: 1,
                ..secure_config()
            };
            let a = OverlayHandle::start(&base).unwrap();
            wait_joined(&a);
            let boot = vec![a.listen_addr().to_string()];
            let others: Vec<OverlayHandle> = (0..2)
                .map(|_| {
                    OverlayHandle::start(&OverlayConfig {
                        bootstrap: boot.clone(),
                        ..base.clone()
                    })
                    .unwrap()
                })
                .collect();
            let d = OverlayHandle::start(&OverlayConfig {
                bootstrap: boot.clone(),
                key_dir: dir.path().display().to_string(),
                ..base.clone()
            })
            .unwrap();
            assert_eq!(d.node_id(), removed.node_id());
            let nodes: Vec<&OverlayHandle> = std::iter::once(&a).chain(others.iter()).collect();
            let gone = removed.node_id().to_string();
            let linked_to_d = |h: &OverlayHandle| {
                h.status_json()["link_peers"]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|p| p == &serde_json::json!(gone)))
            };
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while !(nodes.iter().all(|h| h.status_json()["joined"] == true)
                && d.status_json()["joined"] == true
                && nodes.iter().filter(|h| linked_to_d(h)).count() >= 2)
            {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the ring did not form: {:?}",
                    nodes.iter().map(|h| h.status_json()).collect::<Vec<_>>()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            let refused_before: u64 = nodes
                .iter()
                .map(|h| counter(h, &h.stats().links_refused))
                .sum();
            // Published at one node (what `PUT /overlay/configuration` does).
            let started = std::time::Instant::now();
            assert_eq!(
                a.update_configuration(document(&signer, 1, &[removed.node_id()])),
                Ok(1)
            );
            let deadline = started + Duration::from_secs(30);
            loop {
                let done = nodes.iter().all(|h| {
                    let st = h.status_json();
                    st["configuration_sequence"] == 1 && !st.to_string().contains(&gone)
                });
                if done {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "not spread in 30 s: {:?}",
                    nodes.iter().map(|h| h.status_json()).collect::<Vec<_>>()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            eprintln!(
                "bad node removed from every node in {} ms",
                started.elapsed().as_millis()
            );
            // It cannot come back: its own certificate is refused at every node's link, and
            // after its own rejoin attempts none of them holds a link or route to it.
            for h in &nodes {
                let mut p = Peer::connect(h, &removed);
                assert!(p.hello(&removed).is_none());
            }
            std::thread::sleep(Duration::from_secs(3));
            for h in &nodes {
                let st = h.status_json();
                assert!(!st.to_string().contains(&gone), "{st}");
            }
            let refused_after: u64 = nodes
                .iter()
                .map(|h| counter(h, &h.stats().links_refused))
                .sum();
            assert!(refused_after > refused_before);
            // The document is refused where it is not newer, so the flood ended.
            assert!(a
                .update_configuration(document(&signer, 1, &[]))
                .unwrap_err()
                .contains("ConfigTooOld"));
            d.shutdown();
            for h in nodes {
                h.shutdown();
            }
        }
    }

    #[test]
    fn value_endpoints_refuse_bad_names_and_methods() {
        let handle = OverlayHandle::start(&config()).unwrap();
        let bad = http::serve(Some(&handle), "GET", "/overlay/value/", b"").unwrap();
        assert_eq!(bad.status, 400);
        let bad = http::serve(Some(&handle), "GET", "/overlay/value/a/b", b"").unwrap();
        assert_eq!(bad.status, 400);
        let bad = http::serve(Some(&handle), "POST", "/overlay/value/a", b"").unwrap();
        assert_eq!(bad.status, 405);
        handle.shutdown();
    }
}
