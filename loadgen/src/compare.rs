//! `ppsp-loadgen table`: reads several JSON reports of the same workload against different
//! servers (ppsp-tracker, opentracker, the floor responder) and prints replies per second,
//! server CPU per reply and RSS per registered peer side by side, with ratios to a baseline.

use std::fmt::Write as _;

use anyhow::{bail, Context};

/// The figures compared, read from one report.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub label: String,
    pub replies_per_s: f64,
    pub failed: u64,
    pub p99_us: f64,
    /// Mean peers per successful peer list (shows a server that answers without peers).
    pub peers_per_list: Option<f64>,
    pub cpu_us_per_reply: Option<f64>,
    pub rss_bytes_per_peer: Option<f64>,
}

impl Row {
    /// Reads a row from a report (`label` from `config.label`, else the file name).
    pub fn from_report(v: &serde_json::Value, fallback_label: &str) -> anyhow::Result<Row> {
        if v["schema"] != "ppsp-loadgen-report" {
            bail!("{fallback_label}: not a ppsp-loadgen report");
        }
        if v["schema_version"] != 1 {
            bail!(
                "{fallback_label}: report schema version {} is not 1",
                v["schema_version"]
            );
        }
        let m = &v["measure"];
        Ok(Row {
            label: v["config"]["label"]
                .as_str()
                .unwrap_or(fallback_label)
                .to_string(),
            replies_per_s: m["replies_per_s"].as_f64().unwrap_or(0.0),
            failed: m["failed"].as_u64().unwrap_or(0),
            p99_us: m["latency"]["p99_us"].as_f64().unwrap_or(0.0),
            peers_per_list: m["peers_per_list"].as_f64(),
            cpu_us_per_reply: v["server"]["cpu_us_per_reply"].as_f64(),
            rss_bytes_per_peer: v["server"]["rss_bytes_per_peer"].as_f64(),
        })
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "-".into(),
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "-".into())
}

/// Formats the comparison; ratios are each row's figure divided by the baseline row's.
pub fn table(rows: &[Row], baseline: Option<&str>) -> String {
    let base = baseline
        .and_then(|b| rows.iter().find(|r| r.label == b))
        .or(rows.first());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<14} {:>12} {:>8} {:>10} {:>10} {:>12} {:>12} {:>8} {:>8} {:>8}",
        "server",
        "replies/s",
        "failed",
        "p99 us",
        "peers/list",
        "cpu us/rep",
        "rss B/peer",
        "rate x",
        "cpu x",
        "rss x"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<14} {:>12.0} {:>8} {:>10.1} {:>10} {:>12} {:>12} {:>8} {:>8} {:>8}",
            r.label,
            r.replies_per_s,
            r.failed,
            r.p99_us,
            opt(r.peers_per_list, 1),
            opt(r.cpu_us_per_reply, 3),
            opt(r.rss_bytes_per_peer, 1),
            ratio(Some(r.replies_per_s), base.map(|b| b.replies_per_s)),
            ratio(r.cpu_us_per_reply, base.and_then(|b| b.cpu_us_per_reply)),
            ratio(
                r.rss_bytes_per_peer,
                base.and_then(|b| b.rss_bytes_per_peer)
            ),
        );
    }
    if let Some(b) = base {
        let _ = writeln!(out, "ratios are relative to {}", b.label);
    }
    out
}

/// Reads the report files and formats the table.
pub fn table_from_files(
    paths: &[std::path::PathBuf],
    baseline: Option<&str>,
) -> anyhow::Result<String> {
    let mut rows = Vec::new();
    for p in paths {
        let text = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
        let v: serde_json::Value =
            serde_json::from_slice(&text).with_context(|| format!("parsing {}", p.display()))?;
        let name = p
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        rows.push(Row::from_report(&v, &name)?);
    }
    Ok(table(&rows, baseline))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(label: &str, rate: f64, cpu: Option<f64>) -> serde_json::Value {
        serde_json::json!({
            "schema": "ppsp-loadgen-report",
            "schema_version": 1,
            "config": {"label": label},
            "measure": {"replies_per_s": rate, "failed": 0, "latency": {"p99_us": 80.0}, "peers_per_list": 12.5},
            "server": cpu.map(|c| serde_json::json!({"cpu_us_per_reply": c, "rss_bytes_per_peer": 40.0})),
        })
    }

    #[test]
    fn ratios_are_relative_to_the_baseline() {
        let rows = vec![
            Row::from_report(&report("floor", 200_000.0, Some(2.0)), "a").unwrap(),
            Row::from_report(&report("opentracker", 100_000.0, Some(4.0)), "b").unwrap(),
            Row::from_report(&report("ppsp", 150_000.0, None), "c").unwrap(),
        ];
        let t = table(&rows, Some("opentracker"));
        let floor = t.lines().find(|l| l.starts_with("floor")).unwrap();
        assert!(
            floor.contains("2.00x") && floor.contains("0.50x") && floor.contains("1.00x"),
            "{floor}"
        );
        let ppsp = t.lines().find(|l| l.starts_with("ppsp")).unwrap();
        assert!(ppsp.contains("1.50x") && ppsp.ends_with('-'), "{ppsp}");
        assert!(ppsp.contains(" 12.5 "), "{ppsp}");
        assert!(t.ends_with("ratios are relative to opentracker\n"));
    }

    #[test]
    fn refuses_other_documents() {
        assert!(Row::from_report(&serde_json::json!({"schema": "x"}), "f").is_err());
        let mut v = report("a", 1.0, None);
        v["schema_version"] = 2.into();
        assert!(Row::from_report(&v, "f").is_err());
    }
}
