//! The admin listener: `GET /metrics` (Prometheus text) and `GET /status` (JSON), on its own
//! thread (a one-worker runtime), using the same HTTP framing as the front-ends.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use crate::engine::Engine;
use crate::metrics::{Metrics, ScrapeContext};
use crate::protocol::http::{self, Framed, HttpLimits};
use crate::runtime::{ConnCtx, RuntimeStats, StreamService, StreamStep, StreamWorker};

/// The Prometheus text exposition media type.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Limits of admin requests: small GETs only.
pub(crate) const ADMIN_HTTP_LIMITS: HttpLimits = HttpLimits {
    max_head_bytes: 8192,
    max_headers: 64,
    max_body_bytes: 1024,
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
    /// The tracker usage of the overlay, when `overlay.enabled`.
    pub federation: Option<Arc<crate::federation::Federation>>,
}

impl AdminState {
    pub fn metrics_text(&self) -> String {
        let runtimes: Vec<&RuntimeStats> = self
            .runtimes
            .get()
            .map(|r| r.iter().map(Arc::as_ref).collect())
            .unwrap_or_default();
        let mut text = self.metrics.render(&ScrapeContext {
            counts: self.engine.counts(),
            uptime: self.started.elapsed(),
            runtimes: &runtimes,
        });
        if let Some(o) = &self.overlay {
            text.push_str(&o.metrics_text());
        }
        if let Some(f) = &self.federation {
            text.push_str(&f.metrics_text());
        }
        text
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
        Box::new(AdminWorker(self.0.clone()))
    }
}

struct AdminWorker(Arc<AdminState>);

impl StreamWorker for AdminWorker {
    fn on_input(&mut self, ctx: &ConnCtx, input: &[u8], out: &mut Vec<u8>) -> StreamStep {
        let mut consumed = 0;
        while out.len() < ctx.output_limit {
            let rest = match input.get(consumed..) {
                Some(rest) if !rest.is_empty() => rest,
                _ => break,
            };
            match http::frame_request(rest, &ADMIN_HTTP_LIMITS) {
                Framed::Incomplete => break,
                Framed::Error(e) => {
                    http::write_response(out, e.status(), "text/plain", b"bad request\n", false);
                    return StreamStep {
                        consumed: input.len(),
                        close: true,
                    };
                }
                Framed::Request {
                    head,
                    body,
                    consumed: used,
                } => {
                    if used == 0 || used > rest.len() {
                        return StreamStep {
                            consumed: input.len(),
                            close: true,
                        };
                    }
                    consumed += used;
                    let keep = head.keep_alive;
                    let overlay = crate::overlay::transport::http::serve(
                        self.0.overlay.as_deref(),
                        head.method,
                        head.path,
                        body,
                    );
                    match (head.method, head.path) {
                        _ if overlay.is_some() => {
                            if let Some(a) = overlay {
                                http::write_response(out, a.status, a.content_type, &a.body, keep);
                            }
                        }
                        ("GET", "/metrics") => {
                            let text = self.0.metrics_text();
                            http::write_response(
                                out,
                                200,
                                METRICS_CONTENT_TYPE,
                                text.as_bytes(),
                                keep,
                            );
                        }
                        ("GET", "/status") => {
                            let mut body = serde_json::to_vec_pretty(&self.0.status_json())
                                .unwrap_or_else(|_| b"{}".to_vec());
                            body.push(b'\n');
                            http::write_response(out, 200, "application/json", &body, keep);
                        }
                        (_, "/metrics" | "/status") => {
                            http::write_response(
                                out,
                                405,
                                "text/plain",
                                b"method not allowed\n",
                                keep,
                            );
                        }
                        _ => http::write_response(out, 404, "text/plain", b"not found\n", keep),
                    }
                    if !keep {
                        return StreamStep {
                            consumed,
                            close: true,
                        };
                    }
                }
            }
        }
        StreamStep {
            consumed,
            close: false,
        }
    }
}
