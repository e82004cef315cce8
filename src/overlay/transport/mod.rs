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
    Shutdown,
}

/// Why a request through [`OverlayHandle`] got no outcome.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OverlayError {
    #[error("the overlay thread has stopped")]
    Stopped,
    #[error("no answer within {0} ms")]
    Timeout(u64),
}

/// The running overlay thread.
pub struct OverlayHandle {
    commands: Sender<Command>,
    waker: Arc<mio::Waker>,
    stats: Arc<TransportStats>,
    node_id: NodeId,
    listen_addr: SocketAddr,
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
        let (tx, rx) = channel::bounded(1024);
        let stats = Arc::new(TransportStats::default());
        let (node_loop, waker) = node_loop::NodeLoop::new(config, rx, stats.clone(), app)?;
        let node_id = node_loop.node_id();
        let listen_addr = node_loop.listen_addr();
        let thread = std::thread::Builder::new()
            .name("overlay".to_owned())
            .spawn(move || node_loop.run())?;
        tracing::info!(node_id = %node_id, listen = %listen_addr, "overlay started");
        Ok(OverlayHandle {
            commands: tx,
            waker,
            stats,
            node_id,
            listen_addr,
            admin_timeout: Duration::from_millis(config.admin_timeout_ms),
            value_lifetime_secs: config.value_lifetime_secs,
            thread: Mutex::new(Some(thread)),
            status: Mutex::new(StatusSnapshot::default()),
        })
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The bound RELOAD listener (the real port when configured with port 0).
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen_addr
    }

    fn send(&self, command: Command) -> Result<(), OverlayError> {
        self.commands
            .try_send(command)
            .map_err(|_| OverlayError::Stopped)?;
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

    fn config() -> OverlayConfig {
        OverlayConfig {
            enabled: true,
            listen: "127.0.0.1:0".to_owned(),
            node_id_seed: "unit".to_owned(),
            ..OverlayConfig::default()
        }
    }

    /// Reads frames until a data frame arrives; `None` when the server closes the stream.
    fn read_data_frame(s: &mut std::net::TcpStream) -> Option<Vec<u8>> {
        read_data_frame_into(s, &mut Vec::new())
    }

    /// [`read_data_frame`] keeping what was read beyond the frame in `buf`.
    fn read_data_frame_into(s: &mut std::net::TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
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
            ttl: 100,
            own: NodeId::from_u128(42),
            advertised: "127.0.0.1:1".parse().unwrap(),
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
            ttl: 100,
            own: NodeId::from_u128(42),
            advertised: "127.0.0.1:1".parse().unwrap(),
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
            ttl: 100,
            own: NodeId::from_u128(42),
            advertised: "127.0.0.1:1".parse().unwrap(),
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
