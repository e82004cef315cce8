//! Reports: the human summary, the JSON report (schema `ppsp-loadgen-report`, version
//! [`SCHEMA_VERSION`], documented in `loadgen/REPORT.md`), the `.hgrm` percentile distribution
//! and the SVG plot (latency by percentile, throughput over time).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

use crate::stats::{op_summaries, OpSummary, Percentiles, Recorder};

/// Name of the JSON report schema.
pub const SCHEMA: &str = "ppsp-loadgen-report";
/// Version of the JSON report schema; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// Figures of one phase (populate or measure).
#[derive(Clone, Debug, Serialize)]
pub struct PhaseReport {
    pub duration_s: f64,
    pub sent: u64,
    pub replies: u64,
    pub ok: u64,
    pub failed: u64,
    pub timeouts: u64,
    pub unfinished: u64,
    /// Requests not sent while their connection waited out the server's `Retry-After`.
    pub held_back: u64,
    pub replies_per_s: f64,
    pub ok_per_s: f64,
    pub errors: BTreeMap<String, u64>,
    pub latency: Percentiles,
    pub per_type: BTreeMap<String, OpSummary>,
    pub timeline: Timeline,
    /// Successful replies that carried a peer list (announce, FIND, LEECH join).
    pub peer_lists: u64,
    /// Mean peers per such list (0 when none).
    pub peers_per_list: f64,
}

/// Replies per fixed-width time bucket from the phase start.
#[derive(Clone, Debug, Serialize)]
pub struct Timeline {
    pub bucket_ms: u64,
    pub replies: Vec<u64>,
}

impl PhaseReport {
    pub fn from_recorder(r: &Recorder, duration_s: f64) -> Self {
        let errors: BTreeMap<String, u64> = r.errors.iter().map(|(k, v)| (k.label(), *v)).collect();
        let timeouts = r
            .errors
            .get(&crate::stats::ErrorKind::Timeout)
            .copied()
            .unwrap_or(0);
        let d = duration_s.max(1e-9);
        PhaseReport {
            duration_s,
            sent: r.total_sent(),
            replies: r.replies(),
            ok: r.total_ok(),
            failed: r.failed.iter().sum(),
            timeouts,
            unfinished: r.unfinished,
            held_back: r.held_back,
            replies_per_s: r.replies() as f64 / d,
            ok_per_s: r.total_ok() as f64 / d,
            errors,
            latency: Percentiles::of(&r.all),
            per_type: op_summaries(r),
            timeline: Timeline {
                bucket_ms: r.bucket.as_millis() as u64,
                replies: r.timeline.clone(),
            },
            peer_lists: r.peer_lists,
            peers_per_list: if r.peer_lists == 0 {
                0.0
            } else {
                r.peers_listed as f64 / r.peer_lists as f64
            },
        }
    }
}

/// Server resources measured through `/proc/PID`.
#[derive(Clone, Debug, Serialize)]
pub struct ServerReport {
    pub pid: u32,
    pub cpu_us_populate: u64,
    pub cpu_us_measure: u64,
    /// Server CPU microseconds per reply in the measured phase.
    pub cpu_us_per_reply: f64,
    pub rss_bytes_start: u64,
    pub rss_bytes_after_populate: u64,
    pub rss_bytes_end: u64,
    /// (RSS after populate - RSS at start) / peers registered; null without a populate phase.
    pub rss_bytes_per_peer: Option<f64>,
}

/// The generator's own CPU use.
#[derive(Clone, Debug, Serialize)]
pub struct LoadgenReport {
    pub cpu_us_measure: u64,
    pub cpu_us_per_reply: f64,
}

/// The population as generated.
#[derive(Clone, Debug, Serialize)]
pub struct PopulationReport {
    pub swarms: u32,
    pub peers: u32,
    pub popularity: String,
    pub nonempty_swarms: u32,
    pub largest_swarm: u32,
    pub seeders: u32,
}

/// The whole JSON report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub schema_version: u32,
    pub generator_version: &'static str,
    pub started_unix_ms: u64,
    pub config: serde_json::Value,
    pub population: PopulationReport,
    pub populate: Option<PhaseReport>,
    pub measure: PhaseReport,
    /// With several targets: the measured phase of each (the workers that talked to it).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub per_target: Vec<TargetReport>,
    pub server: Option<ServerReport>,
    pub loadgen: Option<LoadgenReport>,
}

/// The measured phase as seen by the workers of one target.
#[derive(Clone, Debug, Serialize)]
pub struct TargetReport {
    pub target: String,
    pub measure: PhaseReport,
}

fn us(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1}ms", v / 1000.0)
    } else {
        format!("{v:.1}us")
    }
}

fn lat_line(out: &mut String, name: &str, p: &Percentiles) {
    let _ = writeln!(
        out,
        "  {:<12} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
        name,
        p.count,
        us(p.p50_us),
        us(p.p90_us),
        us(p.p99_us),
        us(p.p999_us),
        us(p.max_us)
    );
}

/// One line describing the population.
pub fn population_line(r: &Report) -> String {
    format!(
        "population: {} peers in {} swarms ({}; {} non-empty, largest {}, {} seeders)",
        r.population.peers,
        r.population.swarms,
        r.population.popularity,
        r.population.nonempty_swarms,
        r.population.largest_swarm,
        r.population.seeders
    )
}

/// The human summary printed on stdout.
pub fn human(r: &Report) -> String {
    let mut out = String::new();
    let m = &r.measure;
    let _ = writeln!(out, "{}", population_line(r));
    if let Some(p) = &r.populate {
        let _ = writeln!(
            out,
            "populate:   {} ok replies in {:.2}s ({:.0}/s), {} failed",
            p.ok, p.duration_s, p.ok_per_s, p.failed
        );
    }
    let _ = writeln!(
        out,
        "measure:    {:.2}s, {} sent, {} replies, {} ok, {} failed ({} timeouts), {} unfinished",
        m.duration_s, m.sent, m.replies, m.ok, m.failed, m.timeouts, m.unfinished
    );
    if m.held_back > 0 {
        let _ = writeln!(
            out,
            "held back:  {} requests not sent during the server's Retry-After",
            m.held_back
        );
    }
    let _ = writeln!(
        out,
        "throughput: {:.0} replies/s ({:.0} ok/s)",
        m.replies_per_s, m.ok_per_s
    );
    if m.peer_lists > 0 {
        let _ = writeln!(
            out,
            "peer lists: {} replies listed {:.1} peers on average",
            m.peer_lists, m.peers_per_list
        );
    }
    if !m.errors.is_empty() {
        let list: Vec<String> = m.errors.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(out, "errors:     {}", list.join(" "));
    }
    let _ = writeln!(
        out,
        "latency:    {:<12} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "type", "count", "p50", "p90", "p99", "p99.9", "max"
    );
    lat_line(&mut out, "all", &m.latency);
    for (name, s) in &m.per_type {
        lat_line(&mut out, name, &s.latency);
    }
    for t in &r.per_target {
        let _ = writeln!(
            out,
            "target {}: {:.0} replies/s ({:.0} ok/s), {} failed, p50 {} p99 {}",
            t.target,
            t.measure.replies_per_s,
            t.measure.ok_per_s,
            t.measure.failed,
            us(t.measure.latency.p50_us),
            us(t.measure.latency.p99_us)
        );
    }
    if let Some(s) = &r.server {
        let _ = writeln!(
            out,
            "server:     pid {} cpu {:.3}s in measure = {:.2} us/reply; rss {} -> {} -> {} bytes{}",
            s.pid,
            s.cpu_us_measure as f64 / 1e6,
            s.cpu_us_per_reply,
            s.rss_bytes_start,
            s.rss_bytes_after_populate,
            s.rss_bytes_end,
            s.rss_bytes_per_peer
                .map(|b| format!(" ({b:.1} bytes/peer)"))
                .unwrap_or_default()
        );
    }
    if let Some(l) = &r.loadgen {
        let _ = writeln!(
            out,
            "loadgen:    cpu {:.3}s = {:.2} us/reply",
            l.cpu_us_measure as f64 / 1e6,
            l.cpu_us_per_reply
        );
    }
    out
}

/// Writes the SVG plot: latency by percentile (log-scaled tail) above, replies per second
/// over time below.
/// Timeline buckets after `span_s` (the drain of the last replies) are left out of the plot.
pub fn write_plot(path: &Path, r: &Recorder, title: &str, span_s: f64) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (960, 900)).into_drawing_area();
    root.fill(&WHITE)?;
    let (upper, lower) = root.split_vertically(450);

    // Latency by percentile: x = log10(1 / (1 - q)), so 90% = 1, 99% = 2, 99.9% = 3.
    let mut points = Vec::new();
    if !r.all.is_empty() {
        for v in r.all.iter_quantiles(5) {
            let q = v.quantile_iterated_to();
            if q >= 1.0 {
                break;
            }
            points.push((
                (1.0 / (1.0 - q)).log10(),
                v.value_iterated_to() as f64 / 1e6,
            ));
        }
        points.push((
            points.last().map(|p| p.0 + 0.3).unwrap_or(1.0),
            r.all.max() as f64 / 1e6,
        ));
    }
    let xmax = points.iter().map(|p| p.0).fold(1.0f64, f64::max).ceil();
    let ymax = points.iter().map(|p| p.1).fold(0.001f64, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&upper)
        .caption(
            format!("{title}: latency by percentile"),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_labels(xmax as usize + 1)
        .x_label_formatter(&|x| {
            let p = 100.0 * (1.0 - 10f64.powf(-*x));
            let decimals = (x.round().max(0.0) as usize).saturating_sub(2);
            format!("{p:.decimals$}%")
        })
        .draw()?;
    chart.draw_series(LineSeries::new(points, &BLUE))?;

    // Throughput over time.
    let secs_per_bucket = r.bucket.as_secs_f64().max(1e-3);
    let keep = ((span_s / secs_per_bucket).ceil() as usize).max(1);
    let series: Vec<(f64, f64)> = r
        .timeline
        .iter()
        .take(keep)
        .enumerate()
        .map(|(i, &n)| (i as f64 * secs_per_bucket, n as f64 / secs_per_bucket))
        .collect();
    let tmax = (series.len() as f64 * secs_per_bucket).max(secs_per_bucket);
    let rmax = series.iter().map(|p| p.1).fold(1.0f64, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&lower)
        .caption("replies per second", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..tmax, 0f64..rmax)?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc("replies/s")
        .draw()?;
    chart.draw_series(LineSeries::new(series, &RED))?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Outcome;
    use crate::workload::OpKind;
    use std::time::{Duration, Instant};

    fn sample_report() -> Report {
        let t0 = Instant::now();
        let mut r = Recorder::new(t0, Duration::from_millis(100), 10);
        r.on_sent(OpKind::Find);
        r.on_reply(
            OpKind::Find,
            t0,
            t0 + Duration::from_micros(250),
            Outcome::Ok,
        );
        r.on_sent(OpKind::Leave);
        r.on_failure(OpKind::Leave, crate::stats::ErrorKind::Timeout);
        let phase = PhaseReport::from_recorder(&r, 2.0);
        Report {
            schema: SCHEMA,
            schema_version: SCHEMA_VERSION,
            generator_version: "test",
            started_unix_ms: 1,
            config: serde_json::json!({"protocol": "ppstp"}),
            population: PopulationReport {
                swarms: 1,
                peers: 2,
                popularity: "uniform".into(),
                nonempty_swarms: 1,
                largest_swarm: 2,
                seeders: 0,
            },
            populate: None,
            measure: phase,
            per_target: Vec::new(),
            server: Some(ServerReport {
                pid: 7,
                cpu_us_populate: 0,
                cpu_us_measure: 10_000,
                cpu_us_per_reply: 10_000.0,
                rss_bytes_start: 1,
                rss_bytes_after_populate: 2,
                rss_bytes_end: 3,
                rss_bytes_per_peer: None,
            }),
            loadgen: None,
        }
    }

    /// The documented schema (REPORT.md): every key a consumer reads is present, with the
    /// documented type.
    #[test]
    fn json_report_follows_schema_version_1() {
        let v = serde_json::to_value(sample_report()).unwrap();
        assert_eq!(v["schema"], "ppsp-loadgen-report");
        assert_eq!(v["schema_version"], 1);
        for key in [
            "generator_version",
            "started_unix_ms",
            "config",
            "population",
            "populate",
            "measure",
            "server",
            "loadgen",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        let m = &v["measure"];
        for key in [
            "duration_s",
            "sent",
            "replies",
            "ok",
            "failed",
            "timeouts",
            "unfinished",
            "held_back",
            "replies_per_s",
            "ok_per_s",
            "errors",
            "latency",
            "per_type",
            "timeline",
            "peer_lists",
            "peers_per_list",
        ] {
            assert!(m.get(key).is_some(), "missing measure.{key}");
        }
        assert_eq!(m["sent"], 2);
        assert_eq!(m["replies"], 1);
        assert_eq!(m["failed"], 1);
        assert_eq!(m["timeouts"], 1);
        assert_eq!(m["replies_per_s"], 0.5);
        assert_eq!(m["errors"]["timeout"], 1);
        for key in [
            "count", "min_us", "mean_us", "p50_us", "p90_us", "p99_us", "p999_us", "max_us",
        ] {
            assert!(m["latency"][key].is_number(), "latency.{key}");
        }
        assert!((m["per_type"]["find"]["latency"]["p50_us"].as_f64().unwrap() - 250.0).abs() < 1.0);
        assert_eq!(m["per_type"]["leave"]["failed"], 1);
        assert_eq!(m["timeline"]["bucket_ms"], 100);
        assert_eq!(m["timeline"]["replies"], serde_json::json!([1]));
        assert!(v["populate"].is_null());
        assert!(v["server"]["rss_bytes_per_peer"].is_null());
        assert_eq!(v["server"]["cpu_us_per_reply"], 10_000.0);
    }

    #[test]
    fn human_summary_names_the_key_figures() {
        let text = human(&sample_report());
        assert!(text.contains("throughput: 0 replies/s"));
        assert!(text.contains("errors:     timeout=1"));
        assert!(text.contains("server:     pid 7"));
        assert!(text.contains("  find "));
    }
}
