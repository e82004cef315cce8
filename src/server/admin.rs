//! The admin listener: `GET /metrics` (Prometheus text), `GET /status` (JSON) and the stats
//! page (`GET /stats`, `GET /stats.json`, see `stats.rs`), on its own
//! thread (a one-worker runtime), served by the same HTTP loop as the front-ends.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use crate::engine::{Engine, MemoryEstimate};
use crate::metrics::{Metrics, ScrapeContext};
use crate::protocol::http::{HttpLimits, Methods, RequestHead};
use crate::runtime::{ConnCtx, RuntimeStats, StreamService, StreamWorker};

use super::http_serve::{Answer, HttpHandler, HttpWorker};

/// The Prometheus text exposition media type.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Limits of admin requests: small GETs only.
pub(crate) const ADMIN_HTTP_LIMITS: HttpLimits = HttpLimits {
    max_head_bytes: 8192,
    max_headers: 64,
    // A signed overlay configuration document (certificate, admission list) fits.
    max_body_bytes: 64 * 1024,
};

/// What the admin endpoints report, filled in once every listener is bound.
pub(crate) struct AdminState {
    pub engine: Arc<Engine>,
    pub metrics: Arc<Metrics>,
    pub started: Instant,
    pub workers: usize,
    pub backend: &'static str,
    /// Connection counters of the tracker's runtime and of the admin runtime itself.
    pub runtimes: OnceLock<Vec<Arc<RuntimeStats>>>,
    /// Every bound listener, by name.
    pub listeners: OnceLock<Vec<(String, SocketAddr)>>,
    /// The RELOAD overlay thread, when `overlay.enabled`.
    pub overlay: Option<Arc<crate::overlay::transport::OverlayHandle>>,
    /// The stats page's last hour, sampled by the admin worker's timer.
    pub history: parking_lot::Mutex<super::stats::History>,
    /// The tracker usage of the overlay, when `overlay.enabled`.
    pub federation: Option<Arc<crate::federation::Federation>>,
    /// The last table memory measurement and when it was taken.
    pub memory: parking_lot::Mutex<Option<(Instant, MemoryEstimate)>>,
    /// `snapshot.path`, when snapshots are on.
    pub snapshot_path: Option<std::path::PathBuf>,
    /// The engine's clock.
    pub clock: super::Clock,
    /// One snapshot written at a time.
    pub snapshot_lock: parking_lot::Mutex<()>,
    /// Wakes the admin worker when an overlay request it left waiting has its answer.
    pub wake: OnceLock<crate::runtime::WakeHandle>,
}

/// Overlay requests of the admin endpoints in flight at once; more are answered 503.
pub const MAX_OVERLAY_JOBS: usize = 8;

/// An `/overlay/value/...` request being served off the admin worker: a helper thread waits
/// for the overlay (at most `overlay.admin_timeout_ms` per step) and hands the answer back;
/// the connection's request stays in place meanwhile, so `/status` and `/metrics` on other
/// connections are answered at once.
struct OverlayJob {
    /// Method, path and body of the request, to match it when it is offered again.
    request: (String, String, Vec<u8>),
    answer: crossbeam::channel::Receiver<crate::overlay::transport::http::HttpAnswer>,
    /// The answer once received, until the request is offered again.
    done: Option<(crate::overlay::transport::http::HttpAnswer, Instant)>,
}

/// How long a table memory measurement is reused by `/metrics`.
pub(crate) const MEMORY_ESTIMATE_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

impl AdminState {
    pub fn metrics_text(&self) -> String {
        let runtimes: Vec<&RuntimeStats> = self
            .runtimes
            .get()
            .map(|r| r.iter().map(Arc::as_ref).collect())
            .unwrap_or_default();
        let memory = self.memory_estimate();
        let mut queues = Vec::new();
        if let Some(f) = &self.federation {
            let (swarms, peers) = f.local().pending();
            queues.push(("federation_pending_swarms", swarms as u64));
            queues.push(("federation_pending_peer_status", peers as u64));
        }
        let mut text = self.metrics.render(&ScrapeContext {
            counts: self.engine.counts(),
            uptime: self.started.elapsed(),
            runtimes: &runtimes,
            memory: Some(memory),
            queues: &queues,
        });
        if let Some(o) = &self.overlay {
            text.push_str(&o.metrics_text());
        }
        if let Some(f) = &self.federation {
            text.push_str(&f.metrics_text());
        }
        text
    }

    /// The tables' heap bytes, measured at most every [`MEMORY_ESTIMATE_EVERY`] (the
    /// measurement walks every swarm, one shard lock at a time).
    pub fn memory_estimate(&self) -> MemoryEstimate {
        let mut cached = self.memory.lock();
        match *cached {
            Some((at, m)) if at.elapsed() < MEMORY_ESTIMATE_EVERY => m,
            _ => {
                let m = self.engine.memory_estimate();
                *cached = Some((Instant::now(), m));
                m
            }
        }
    }

    /// Writes every registration to `snapshot.path` (temporary file, fsync, rename).
    /// Returns the registrations and bytes written; errors name the file.
    pub fn write_snapshot(&self) -> Result<(usize, u64), String> {
        let Some(path) = &self.snapshot_path else {
            return Err("snapshots are off (snapshot.path is empty)".to_owned());
        };
        let _one = self.snapshot_lock.lock();
        let body = crate::snapshot::Body {
            written_unix_ms: crate::snapshot::unix_ms_now(),
            registrations: self.engine.export_registrations(self.clock.now()),
            completions: self.engine.export_completions(),
        };
        let n = body.registrations.len();
        let bytes = crate::snapshot::write(path, &body).map_err(|e| e.to_string())?;
        Ok((n, bytes))
    }

    pub fn status_json(&self) -> serde_json::Value {
        let counts = self.engine.counts();
        let listeners: Vec<serde_json::Value> = self
            .listeners
            .get()
            .map(|l| {
                l.iter()
                    .map(|(name, addr)| serde_json::json!({"name": name, "addr": addr.to_string()}))
                    .collect()
            })
            .unwrap_or_default();
        let mut status = serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": self.started.elapsed().as_secs(),
            "workers": self.workers,
            "backend": self.backend,
            "peers": counts.peers,
            "swarms": counts.swarms,
            "listeners": listeners,
        });
        if let (Some(o), Some(map)) = (&self.overlay, status.as_object_mut()) {
            map.insert("overlay".to_owned(), o.status_json());
        }
        if let (Some(f), Some(map)) = (&self.federation, status.as_object_mut()) {
            map.insert("federation".to_owned(), f.status_json());
        }
        status
    }
}

pub(crate) struct AdminService(pub Arc<AdminState>);

impl StreamService for AdminService {
    fn worker(&self, _worker: usize) -> Box<dyn StreamWorker> {
        Box::new(HttpWorker::new(
            AdminWorker {
                state: self.0.clone(),
                jobs: std::collections::HashMap::new(),
                wait: false,
            },
            ADMIN_HTTP_LIMITS,
        ))
    }
}

struct AdminWorker {
    state: Arc<AdminState>,
    /// Overlay requests in flight, by connection (remote and local address).
    jobs: std::collections::HashMap<(SocketAddr, SocketAddr), OverlayJob>,
    /// The request just served waits for its overlay job.
    wait: bool,
}

impl AdminWorker {
    /// Serves an `/overlay/value/...` request without blocking: starts its job, or answers
    /// from the finished job of this connection, or leaves it waiting.
    fn overlay_value(
        &mut self,
        ctx: &ConnCtx,
        head: &RequestHead<'_>,
        request_body: &[u8],
    ) -> crate::overlay::transport::http::HttpAnswer {
        use crate::overlay::transport::http::{refusal, serve, HttpAnswer};
        let conn = (ctx.peer, ctx.local);
        let request = (
            head.method.to_owned(),
            head.path.to_owned(),
            request_body.to_vec(),
        );
        if let Some(job) = self.jobs.get_mut(&conn) {
            if job.request == request {
                if job.done.is_none() {
                    match job.answer.try_recv() {
                        Ok(a) => job.done = Some((a, Instant::now())),
                        Err(crossbeam::channel::TryRecvError::Empty) => {
                            self.wait = true;
                            return HttpAnswer::empty();
                        }
                        Err(crossbeam::channel::TryRecvError::Disconnected) => {
                            job.done = Some((
                                HttpAnswer::error(500, "overlay request lost"),
                                Instant::now(),
                            ));
                        }
                    }
                }
                if let Some(job) = self.jobs.remove(&conn) {
                    if let Some((a, _)) = job.done {
                        return a;
                    }
                }
            }
            // A finished job whose request is gone (the client sent another): forget it.
            self.jobs.remove(&conn);
        }
        // Answered at once when it needs no overlay (bad name, no overlay, bad method).
        if let Some(a) = refusal(self.state.overlay.is_some(), head.method, head.path) {
            return a;
        }
        let Some(overlay) = self.state.overlay.clone() else {
            return HttpAnswer::error(404, "the overlay is not enabled");
        };
        if self.jobs.len() >= MAX_OVERLAY_JOBS {
            return HttpAnswer::error(503, "too many overlay requests in flight");
        }
        let (tx, rx) = crossbeam::channel::bounded(1);
        let wake = self.state.wake.get().cloned();
        let (method, path, body) = request.clone();
        let spawned = std::thread::Builder::new()
            .name("admin-overlay".to_owned())
            .spawn(move || {
                let answer = serve(Some(&overlay), &method, &path, &body)
                    .unwrap_or_else(|| HttpAnswer::error(404, "not found"));
                let _ = tx.send(answer);
                if let Some(w) = wake {
                    w.wake();
                }
            });
        if spawned.is_err() {
            return HttpAnswer::error(503, "cannot start the overlay request");
        }
        self.jobs.insert(
            conn,
            OverlayJob {
                request,
                answer: rx,
                done: None,
            },
        );
        self.wait = true;
        HttpAnswer::empty()
    }
}

impl HttpHandler for AdminWorker {
    fn allowed_methods(&self, path: &str) -> Option<Methods> {
        const GET_HEAD_PUT: Methods = Methods::new("GET, HEAD, PUT");
        const PUT: Methods = Methods::new("PUT");
        const GET_HEAD: Methods = Methods::new("GET, HEAD");
        const POST: Methods = Methods::new("POST");
        if path.starts_with(crate::overlay::transport::http::VALUE_PREFIX) {
            Some(GET_HEAD_PUT)
        } else if path == crate::overlay::transport::http::CONFIGURATION_PATH {
            Some(PUT)
        } else if matches!(path, "/metrics" | "/status" | "/stats" | "/stats.json") {
            Some(GET_HEAD)
        } else if path == "/snapshot" {
            Some(POST)
        } else {
            None
        }
    }

    fn on_tick(&mut self, now: Instant) {
        let uptime = now
            .saturating_duration_since(self.state.started)
            .as_secs_f64();
        if self.state.history.lock().due(uptime) {
            // Counted outside the history lock: `counts` takes every swarm shard's lock.
            let sample = super::stats::sample(&self.state, now);
            self.state.history.lock().offer(sample);
        }
        // Answers nobody came back for (the connection closed while its job ran).
        for job in self.jobs.values_mut() {
            if job.done.is_none() {
                if let Ok(a) = job.answer.try_recv() {
                    job.done = Some((a, now));
                }
            }
        }
        self.jobs.retain(|_, j| {
            !matches!(&j.done, Some((_, at)) if now.saturating_duration_since(*at).as_secs() >= 60)
        });
    }

    fn take_wait(&mut self) -> bool {
        std::mem::take(&mut self.wait)
    }

    fn fault(&mut self, _status: u16, reason: &str, body: &mut Vec<u8>) -> &'static str {
        body.extend_from_slice(reason.as_bytes());
        body.push(b'\n');
        "text/plain"
    }

    fn serve(
        &mut self,
        ctx: &ConnCtx,
        head: &RequestHead<'_>,
        request_body: &[u8],
        body: &mut Vec<u8>,
    ) -> Answer {
        // Overlay endpoints wait for the overlay: off the admin worker.
        if head
            .path
            .starts_with(crate::overlay::transport::http::VALUE_PREFIX)
            || head.path == crate::overlay::transport::http::CONFIGURATION_PATH
        {
            let a = self.overlay_value(ctx, head, request_body);
            body.extend_from_slice(&a.body);
            return Answer {
                status: a.status,
                content_type: a.content_type,
            };
        }
        match head.path {
            "/metrics" => {
                body.extend_from_slice(self.state.metrics_text().as_bytes());
                Answer {
                    status: 200,
                    content_type: METRICS_CONTENT_TYPE,
                }
            }
            "/stats" => {
                let json = super::stats::stats_json(&self.state, Instant::now());
                body.extend_from_slice(super::stats::stats_html(&json).as_bytes());
                Answer {
                    status: 200,
                    content_type: "text/html; charset=utf-8",
                }
            }
            "/stats.json" => {
                let json = super::stats::stats_json(&self.state, Instant::now());
                // Serializing a `Value` into a vector cannot fail.
                let _ = serde_json::to_writer_pretty(&mut *body, &json);
                body.push(b'\n');
                Answer {
                    status: 200,
                    content_type: "application/json",
                }
            }
            "/snapshot" => {
                let (status, json) = match self.state.write_snapshot() {
                    Ok((registrations, bytes)) => {
                        tracing::info!(registrations, bytes, "snapshot written on request");
                        (
                            200,
                            serde_json::json!({"registrations": registrations, "bytes": bytes}),
                        )
                    }
                    Err(e) => {
                        tracing::error!("snapshot not written: {e}");
                        (500, serde_json::json!({"error": e}))
                    }
                };
                let _ = serde_json::to_writer_pretty(&mut *body, &json);
                body.push(b'\n');
                Answer {
                    status,
                    content_type: "application/json",
                }
            }
            "/status" => {
                // Serializing a `Value` into a vector cannot fail.
                let _ = serde_json::to_writer_pretty(&mut *body, &self.state.status_json());
                body.push(b'\n');
                Answer {
                    status: 200,
                    content_type: "application/json",
                }
            }
            _ => {
                body.extend_from_slice(b"not found\n");
                Answer {
                    status: 404,
                    content_type: "text/plain",
                }
            }
        }
    }
}
