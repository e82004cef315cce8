//! The admin listener: `GET /metrics` (Prometheus text), `GET /status` (JSON) and the stats
//! page (`GET /stats`, `GET /stats.json`, see `stats.rs`), on its own
//! thread (a one-worker runtime), served by the same HTTP loop as the front-ends.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use crate::engine::Engine;
use crate::metrics::{Metrics, ScrapeContext};
use crate::protocol::http::{HttpLimits, RequestHead};
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
        Box::new(HttpWorker::new(
            AdminWorker(self.0.clone()),
            ADMIN_HTTP_LIMITS,
        ))
    }
}

struct AdminWorker(Arc<AdminState>);

impl HttpHandler for AdminWorker {
    fn allowed_methods(&self, path: &str) -> Option<&'static str> {
        if path.starts_with(crate::overlay::transport::http::VALUE_PREFIX) {
            Some("GET, HEAD, PUT")
        } else if path == crate::overlay::transport::http::CONFIGURATION_PATH {
            Some("PUT")
        } else if matches!(path, "/metrics" | "/status" | "/stats" | "/stats.json") {
            Some("GET, HEAD")
        } else {
            None
        }
    }

    fn on_tick(&mut self, now: Instant) {
        let uptime = now.saturating_duration_since(self.0.started).as_secs_f64();
        if self.0.history.lock().due(uptime) {
            // Counted outside the history lock: `counts` takes every swarm shard's lock.
            let sample = super::stats::sample(&self.0, now);
            self.0.history.lock().offer(sample);
        }
    }

    fn fault(&mut self, _status: u16, reason: &str, body: &mut Vec<u8>) -> &'static str {
        body.extend_from_slice(reason.as_bytes());
        body.push(b'\n');
        "text/plain"
    }

    fn serve(
        &mut self,
        _ctx: &ConnCtx,
        head: &RequestHead<'_>,
        request_body: &[u8],
        body: &mut Vec<u8>,
    ) -> Answer {
        if let Some(a) = crate::overlay::transport::http::serve(
            self.0.overlay.as_deref(),
            head.method,
            head.path,
            request_body,
        ) {
            body.extend_from_slice(&a.body);
            return Answer {
                status: a.status,
                content_type: a.content_type,
            };
        }
        match head.path {
            "/metrics" => {
                body.extend_from_slice(self.0.metrics_text().as_bytes());
                Answer {
                    status: 200,
                    content_type: METRICS_CONTENT_TYPE,
                }
            }
            "/stats" => {
                let json = super::stats::stats_json(&self.0, Instant::now());
                body.extend_from_slice(super::stats::stats_html(&json).as_bytes());
                Answer {
                    status: 200,
                    content_type: "text/html; charset=utf-8",
                }
            }
            "/stats.json" => {
                let json = super::stats::stats_json(&self.0, Instant::now());
                // Serializing a `Value` into a vector cannot fail.
                let _ = serde_json::to_writer_pretty(&mut *body, &json);
                body.push(b'\n');
                Answer {
                    status: 200,
                    content_type: "application/json",
                }
            }
            "/status" => {
                // Serializing a `Value` into a vector cannot fail.
                let _ = serde_json::to_writer_pretty(&mut *body, &self.0.status_json());
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
