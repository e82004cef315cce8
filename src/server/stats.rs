//! The operators' stats page on the admin listener: `GET /stats` (a small HTML page for people)
//! and `GET /stats.json` (the same figures for programs).
//!
//! The page shows table sizes, requests per second by front-end, the largest swarms, and peers
//! and swarms over the last hour as an inline SVG plot. It is rendered on the server and carries
//! no script, so it works in any browser and behind strict content-security policies. The hour
//! of history is a ring of [`HISTORY_SAMPLES`] samples taken every [`SAMPLE_INTERVAL`] by the
//! admin worker's timer: fixed memory, nothing on the request path of the tracker's workers.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::engine::SwarmSummary;
use crate::metrics::ProtocolTotals;

use super::admin::AdminState;

/// Time between two history samples.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(10);
/// Samples kept: one hour at [`SAMPLE_INTERVAL`].
pub const HISTORY_SAMPLES: usize = 360;
/// Swarms listed on the page, largest first.
pub const TOP_SWARMS: usize = 20;

/// One point of the history.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Sample {
    /// Seconds since the tracker started.
    pub uptime_seconds: f64,
    pub peers: usize,
    pub swarms: usize,
    /// Requests handled since start, per front-end.
    #[serde(skip)]
    pub totals: ProtocolTotals,
    /// Requests handled since start, all front-ends.
    pub requests: u64,
}

/// The last hour of samples (at most [`HISTORY_SAMPLES`], oldest first).
#[derive(Debug, Default)]
pub struct History {
    samples: VecDeque<Sample>,
}

impl History {
    /// Records `sample` when at least [`SAMPLE_INTERVAL`] has passed since the newest one (or
    /// when there is none); drops the oldest beyond [`HISTORY_SAMPLES`]. Returns whether it
    /// was recorded.
    pub fn offer(&mut self, sample: Sample) -> bool {
        if !self.due(sample.uptime_seconds) {
            return false;
        }
        if self.samples.len() == HISTORY_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
        true
    }

    /// Whether a sample taken at `uptime_seconds` would be recorded (cheap: no counting).
    pub fn due(&self, uptime_seconds: f64) -> bool {
        self.samples.back().map_or(true, |last| {
            uptime_seconds - last.uptime_seconds >= SAMPLE_INTERVAL.as_secs_f64()
        })
    }

    /// The samples, oldest first.
    pub fn samples(&self) -> impl DoubleEndedIterator<Item = &Sample> {
        self.samples.iter()
    }

    fn newest(&self) -> Option<&Sample> {
        self.samples.back()
    }
}

/// Takes a sample of `state` at `now`.
pub(crate) fn sample(state: &AdminState, now: Instant) -> Sample {
    let counts = state.engine.counts();
    let totals = state.metrics.totals();
    Sample {
        uptime_seconds: now.saturating_duration_since(state.started).as_secs_f64(),
        peers: counts.peers,
        swarms: counts.swarms,
        totals,
        requests: totals.all(),
    }
}

/// Requests per second by front-end over `[from, to]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Rates {
    pub ppstp: f64,
    pub bt_udp: f64,
    pub bt_http: f64,
    pub all: f64,
    /// Length of the window the rates are averaged over, seconds.
    pub window_seconds: f64,
}

fn rates(from: &Sample, to: &Sample) -> Rates {
    let window = to.uptime_seconds - from.uptime_seconds;
    if window <= 0.0 {
        return Rates::default();
    }
    let per = |a: u64, b: u64| b.saturating_sub(a) as f64 / window;
    Rates {
        ppstp: per(from.totals.ppstp, to.totals.ppstp),
        bt_udp: per(from.totals.bt_udp, to.totals.bt_udp),
        bt_http: per(from.totals.bt_http, to.totals.bt_http),
        all: per(from.requests, to.requests),
        window_seconds: window,
    }
}

/// A swarm id as people read it: the text when every byte is printable ASCII (PPSTP ids),
/// otherwise lower-case hex (BitTorrent info-hashes).
pub fn swarm_label(id: &[u8]) -> String {
    if !id.is_empty() && id.iter().all(|b| b.is_ascii_graphic()) {
        String::from_utf8_lossy(id).into_owned()
    } else {
        id.iter()
            .fold(String::with_capacity(id.len() * 2), |mut s, b| {
                let _ = write!(s, "{b:02x}");
                s
            })
    }
}

/// The figures of `GET /stats.json` at `now`. Rates are those of the newest completed sample
/// interval (from the newest sample to `now` when that is at least a second), the average
/// since start before the first interval completes.
pub(crate) fn stats_json(state: &AdminState, now: Instant) -> serde_json::Value {
    let current = sample(state, now);
    let history = state.history.lock();
    let start = Sample {
        uptime_seconds: 0.0,
        peers: 0,
        swarms: 0,
        totals: ProtocolTotals::default(),
        requests: 0,
    };
    let from = match history.newest() {
        Some(s) if current.uptime_seconds - s.uptime_seconds >= 1.0 => *s,
        _ => history.samples().rev().nth(1).copied().unwrap_or(start),
    };
    let rates = rates(&from, &current);
    let samples: Vec<Sample> = history.samples().copied().collect();
    drop(history);
    let counts = state.engine.counts();
    let top: Vec<serde_json::Value> = state
        .engine
        .top_swarms(TOP_SWARMS)
        .iter()
        .map(|s: &SwarmSummary| {
            serde_json::json!({
                "swarm_id": swarm_label(s.swarm_id.as_bytes()),
                "peers": s.peers(),
                "seeders": s.seeders,
                "leechers": s.leechers,
            })
        })
        .collect();
    let mut json = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": current.uptime_seconds as u64,
        "peers": counts.peers,
        "swarms": counts.swarms,
        "seeders": counts.seeders,
        "leechers": counts.leechers,
        "requests_total": {
            "ppstp": current.totals.ppstp,
            "bt_udp": current.totals.bt_udp,
            "bt_http": current.totals.bt_http,
            "all": current.requests,
        },
        "requests_per_second": rates,
        "top_swarms": top,
        "history": {
            "interval_seconds": SAMPLE_INTERVAL.as_secs(),
            "samples": samples,
        },
    });
    if let (Some(o), Some(map)) = (&state.overlay, json.as_object_mut()) {
        map.insert("cluster".to_owned(), o.status_json());
    }
    json
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Plot width and height in SVG user units.
const PLOT_W: f64 = 720.0;
const PLOT_H: f64 = 200.0;

/// Polyline points for `values` over the plot area (x: sample time, y: value / max).
fn polyline(times: &[f64], values: &[f64], max: f64) -> String {
    let (t0, t1) = match (times.first(), times.last()) {
        (Some(a), Some(b)) if b > a => (*a, *b),
        (Some(a), _) => (*a, *a + 1.0),
        _ => return String::new(),
    };
    let mut points = String::new();
    for (t, v) in times.iter().zip(values) {
        let x = (t - t0) / (t1 - t0) * PLOT_W;
        let y = PLOT_H - if max > 0.0 { v / max * PLOT_H } else { 0.0 };
        let _ = write!(points, "{x:.1},{y:.1} ");
    }
    points.trim_end().to_owned()
}

/// The HTML page for the figures of [`stats_json`]. Every number shown is taken from `json`,
/// so the page and `/stats.json` always agree.
pub(crate) fn stats_html(json: &serde_json::Value) -> String {
    let num = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let rate = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    let mut h = String::with_capacity(16 * 1024);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{}\">\
         <title>ppsp-tracker stats</title><style>\
         body{{font-family:sans-serif;margin:1.5em;color:#222}}\
         table{{border-collapse:collapse;margin-bottom:1.5em}}\
         td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:right}}\
         th{{background:#f0f0f0}} td.id{{text-align:left;font-family:monospace}}\
         </style></head><body>\n<h1>ppsp-tracker {}</h1>\n",
        SAMPLE_INTERVAL.as_secs(),
        escape(json["version"].as_str().unwrap_or("")),
    );
    let _ = write!(
        h,
        "<table id=\"totals\"><tr><th>uptime (s)</th><th>peers</th><th>swarms</th>\
         <th>seeders</th><th>leechers</th></tr>\n<tr><td id=\"uptime\">{}</td>\
         <td id=\"peers\">{}</td><td id=\"swarms\">{}</td><td id=\"seeders\">{}</td>\
         <td id=\"leechers\">{}</td></tr></table>\n",
        num(&json["uptime_seconds"]),
        num(&json["peers"]),
        num(&json["swarms"]),
        num(&json["seeders"]),
        num(&json["leechers"]),
    );
    let r = &json["requests_per_second"];
    let t = &json["requests_total"];
    let _ = write!(
        h,
        "<h2>Requests</h2>\n<table id=\"requests\"><tr><th></th><th>PPSTP</th>\
         <th>BitTorrent UDP</th><th>BitTorrent HTTP</th><th>all</th></tr>\n\
         <tr><th>per second (last {:.0} s)</th><td id=\"rate-ppstp\">{:.1}</td>\
         <td id=\"rate-bt-udp\">{:.1}</td><td id=\"rate-bt-http\">{:.1}</td>\
         <td id=\"rate-all\">{:.1}</td></tr>\n<tr><th>since start</th>\
         <td id=\"total-ppstp\">{}</td><td id=\"total-bt-udp\">{}</td>\
         <td id=\"total-bt-http\">{}</td><td id=\"total-all\">{}</td></tr></table>\n",
        rate(&r["window_seconds"]),
        rate(&r["ppstp"]),
        rate(&r["bt_udp"]),
        rate(&r["bt_http"]),
        rate(&r["all"]),
        num(&t["ppstp"]),
        num(&t["bt_udp"]),
        num(&t["bt_http"]),
        num(&t["all"]),
    );
    h.push_str(
        "<h2>Largest swarms</h2>\n<table id=\"top-swarms\"><tr><th>swarm</th><th>peers</th>\
         <th>seeders</th><th>leechers</th></tr>\n",
    );
    for s in json["top_swarms"].as_array().into_iter().flatten() {
        let _ = writeln!(
            h,
            "<tr><td class=\"id\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(s["swarm_id"].as_str().unwrap_or("")),
            num(&s["peers"]),
            num(&s["seeders"]),
            num(&s["leechers"]),
        );
    }
    h.push_str("</table>\n");

    let samples = json["history"]["samples"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let times: Vec<f64> = samples.iter().map(|s| rate(&s["uptime_seconds"])).collect();
    let peers: Vec<f64> = samples.iter().map(|s| rate(&s["peers"])).collect();
    let swarms: Vec<f64> = samples.iter().map(|s| rate(&s["swarms"])).collect();
    let max = peers.iter().chain(&swarms).fold(0.0_f64, |a, b| a.max(*b));
    let _ = write!(
        h,
        "<h2>Peers and swarms, last hour</h2>\n\
         <svg id=\"history\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{hh}\" \
         viewBox=\"-50 -10 {vw} {vh}\" role=\"img\" aria-label=\"peers and swarms over time\">\
         <rect x=\"0\" y=\"0\" width=\"{PLOT_W}\" height=\"{PLOT_H}\" fill=\"#fafafa\" stroke=\"#ccc\"/>\
         <text x=\"-6\" y=\"4\" text-anchor=\"end\" font-size=\"11\">{max:.0}</text>\
         <text x=\"-6\" y=\"{PLOT_H}\" text-anchor=\"end\" font-size=\"11\">0</text>\
         <polyline id=\"plot-peers\" fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\" points=\"{pp}\"/>\
         <polyline id=\"plot-swarms\" fill=\"none\" stroke=\"#ff7f0e\" stroke-width=\"2\" points=\"{sp}\"/>\
         <text x=\"0\" y=\"{ly}\" font-size=\"12\" fill=\"#1f77b4\">peers</text>\
         <text x=\"60\" y=\"{ly}\" font-size=\"12\" fill=\"#ff7f0e\">swarms</text>\
         <text x=\"{PLOT_W}\" y=\"{ly}\" text-anchor=\"end\" font-size=\"11\">{n} samples, every {iv} s</text>\
         </svg>\n",
        w = PLOT_W + 60.0,
        hh = PLOT_H + 40.0,
        vw = PLOT_W + 60.0,
        vh = PLOT_H + 40.0,
        pp = polyline(&times, &peers, max),
        sp = polyline(&times, &swarms, max),
        ly = PLOT_H + 20.0,
        n = samples.len(),
        iv = SAMPLE_INTERVAL.as_secs(),
    );
    if let Some(cluster) = json.get("cluster") {
        let _ = write!(
            h,
            "<h2>Cluster</h2>\n<pre id=\"cluster\">{}</pre>\n",
            escape(&serde_json::to_string_pretty(cluster).unwrap_or_default())
        );
    }
    h.push_str(
        "<p>Figures as JSON: <a href=\"stats.json\">stats.json</a>; \
         Prometheus: <a href=\"metrics\">metrics</a>.</p>\n</body></html>\n",
    );
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: f64, requests: u64) -> Sample {
        Sample {
            uptime_seconds: secs,
            peers: secs as usize,
            swarms: 1,
            totals: ProtocolTotals {
                ppstp: requests,
                bt_udp: 0,
                bt_http: 0,
            },
            requests,
        }
    }

    #[test]
    fn history_samples_at_most_every_interval_and_keeps_one_hour() {
        let mut h = History::default();
        assert!(h.offer(at(0.0, 0)));
        assert!(!h.offer(at(5.0, 0)), "too soon");
        assert!(h.offer(at(10.0, 0)));
        for i in 2..(HISTORY_SAMPLES as u64 + 50) {
            assert!(h.offer(at(i as f64 * 10.0, 0)));
        }
        assert_eq!(h.samples().count(), HISTORY_SAMPLES);
        let first = h.samples().next().unwrap().uptime_seconds;
        let last = h.newest().unwrap().uptime_seconds;
        assert_eq!(last - first, (HISTORY_SAMPLES as f64 - 1.0) * 10.0);
    }

    #[test]
    fn rates_are_deltas_over_the_window() {
        let r = rates(&at(10.0, 100), &at(20.0, 600));
        assert_eq!(r.ppstp, 50.0);
        assert_eq!(r.all, 50.0);
        assert_eq!(r.window_seconds, 10.0);
        assert_eq!(rates(&at(10.0, 5), &at(10.0, 9)), Rates::default());
    }

    #[test]
    fn swarm_labels_are_text_or_hex() {
        assert_eq!(swarm_label(b"1111"), "1111");
        assert_eq!(swarm_label(&[0xab, 0x01, 0x20]), "ab0120");
        assert_eq!(swarm_label(b""), "");
    }

    #[test]
    fn the_page_escapes_swarm_ids_and_shows_the_json_figures() {
        let json = serde_json::json!({
            "version": "1.2.3", "uptime_seconds": 42, "peers": 7, "swarms": 3,
            "seeders": 2, "leechers": 5,
            "requests_total": {"ppstp": 10, "bt_udp": 20, "bt_http": 30, "all": 60},
            "requests_per_second": {"ppstp": 1.5, "bt_udp": 2.0, "bt_http": 0.0, "all": 3.5,
                                    "window_seconds": 10.0},
            "top_swarms": [{"swarm_id": "<script>x</script>", "peers": 4, "seeders": 1,
                            "leechers": 3}],
            "history": {"interval_seconds": 10, "samples": [
                {"uptime_seconds": 0.0, "peers": 0, "swarms": 0, "requests": 0},
                {"uptime_seconds": 10.0, "peers": 7, "swarms": 3, "requests": 60}]},
        });
        let page = stats_html(&json);
        assert!(!page.contains("<script"), "{page}");
        assert!(page.contains("&lt;script&gt;x&lt;/script&gt;"));
        assert!(page.contains("<td id=\"peers\">7</td>"));
        assert!(page.contains("<td id=\"rate-all\">3.5</td>"));
        assert!(page.contains("<td id=\"total-bt-http\">30</td>"));
        assert!(page.contains("points=\"0.0,200.0 720.0,0.0\""), "{page}");
    }
}
