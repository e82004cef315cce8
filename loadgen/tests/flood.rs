//! Overload: the generator floods a one-worker PPSTP tracker (in-process, 127.0.0.1 port 0)
//! at several times what it answers at its peak, for a bounded time. The tracker keeps
//! answering, sheds the excess with PPSTP error 05 (HTTP 503, then closing the overloaded
//! connection with the requests pipelined on it) rather than queueing it, answers
//! normally again as soon as the flood stops, and the process's resident memory stays within
//! [`RSS_GROWTH_BOUND_MB`] of what it was before the flood.
//!
//! Whether a flood overloaded the server is read from the server, not from the generator
//! (whose own rate counts late answers, and which shares the two cores): the runtime counts
//! the event-loop turns that took at least the shedding delay
//! (`ppsp_worker_turns_behind_total`), independently of the shedding. Nothing may be shed in
//! a flood that never made the worker fall behind. Turns behind do not by themselves call for
//! a shed: the worker sheds only once its turns have been behind without a break for twice the
//! delay (the CoDel-paced control of `server::http_serve`), which turns behind here and there
//! in a flood of this size may never reach; `tests/flood.rs` of the tracker drives a worker
//! into that state and asserts the shedding and its error 05.
//!
//! Prints `FLOOD peak_ok_per_s=... flood_ok_per_s=... ratio=... shed=... behind=... rss_mb=...`
//! for the record; the rate floors are generous (debug build, shared machine).

use std::time::Duration;

use ppsp_loadgen::proto::Protocol;
use ppsp_loadgen::report::PhaseReport;
use ppsp_loadgen::run::{self, RunArgs};

mod support;
use support::{metric, start_server};

/// Resident memory growth allowed from before the flood to its end (server and generator
/// share this process), MiB.
const RSS_GROWTH_BOUND_MB: u64 = 64;
/// Requests that wait in the worker longer than this are shed (`server.shed_after_ms`).
const SHED_AFTER_MS: u64 = 100;

fn rss_mb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

fn args(target: std::net::SocketAddr) -> RunArgs {
    let mut a = RunArgs::defaults(Protocol::Ppstp);
    a.target = vec![target];
    a.swarms = 100;
    a.peers = 2000;
    // Reads only: a shed request changes nothing, so the generator's idea of each peer's
    // state stays right.
    a.mix = Some("find=8,stat_query=1,keepalive=1".into());
    a.no_progress = true;
    a.timeout_ms = 20_000;
    a.max_requests = 2_000_000;
    a
}

#[test]
fn a_flood_is_shed_with_05_and_the_tracker_recovers_at_once() {
    /// Connections of each flood.
    const FLOOD_CONNECTIONS: usize = 512;
    let server = start_server(&[
        "ppstp.max_connections=2000".into(),
        "server.max_connections_per_source=2000".into(),
        format!("server.shed_after_ms={SHED_AFTER_MS}"),
    ]);
    let addr = server.ppstp_addr().unwrap();

    // Register the peers with a light load (nothing shed), then measure the peak: closed
    // loop over enough connections to keep the worker busy, each turn well under the
    // shedding delay.
    let mut populate = args(addr);
    populate.populate = true;
    populate.duration = 0.5;
    populate.connections = 1;
    populate.pipeline = Some(4);
    let out = run::run(&populate).unwrap();
    let p = out.report.populate.as_ref().unwrap();
    assert_eq!(p.per_type["connect"].ok, 2000, "populate: {:?}", p.errors);

    let mut peak = args(addr);
    peak.assume_registered = true;
    peak.duration = 2.0;
    peak.connections = 64;
    peak.pipeline = Some(16);
    peak.threads = 2;
    let peak = run::run(&peak).unwrap().report.measure;
    let peak_ok = peak.ok_per_s;
    assert!(peak_ok > 0.0);

    // The floods: open loop at two, then four times the peak over many deep pipelines, for
    // 2 s each.
    let rss_before = rss_mb();
    let shed_of = || {
        metric(
            &server,
            r#"ppsp_shed_total{front_end="ppstp",reason="overloaded"}"#,
        )
        .unwrap_or(0)
    };
    let behind_of = || {
        metric(
            &server,
            r#"ppsp_worker_turns_behind_total{runtime="worker"}"#,
        )
        .unwrap_or(0)
    };
    // (factor, report, shed, turns behind) of each flood.
    let mut floods: Vec<(f64, PhaseReport, u64, u64)> = Vec::new();
    // The peak above is measured closed-loop by an in-process generator and can fall short
    // of what the server answers; when neither flood made the worker fall behind, one more,
    // at 8x, is tried.
    for factor in [2.0, 4.0, 8.0] {
        if factor > 4.0 && floods.iter().any(|f| f.3 > 0) {
            break;
        }
        let (shed_before, behind_before) = (shed_of(), behind_of());
        let mut flood = args(addr);
        flood.assume_registered = true;
        flood.duration = 2.0;
        flood.connections = FLOOD_CONNECTIONS;
        flood.pipeline = Some(32);
        flood.threads = 2;
        flood.rate = Some(factor * peak_ok);
        let report = run::run(&flood).unwrap().report.measure;
        floods.push((
            factor,
            report,
            shed_of() - shed_before,
            behind_of() - behind_before,
        ));
    }
    let rss_after = rss_mb();

    // Recovery: right after the flood, requests are served, not shed.
    let mut after = args(addr);
    after.assume_registered = true;
    after.duration = 1.0;
    after.connections = 1;
    after.pipeline = Some(1);
    let after = run::run(&after).unwrap().report.measure;
    let recovery = Duration::from_micros(after.latency.max_us as u64);
    // Shed only when behind: a request is shed once its turn has run for the shedding delay,
    // and such a turn is counted behind when it ends. Over the whole test, as a turn that
    // ends after a flood's counters were read counts in the next window.
    let (shed_total, behind_total) = (shed_of(), behind_of());
    server.shutdown();
    assert!(
        shed_total == 0 || behind_total > 0,
        "{shed_total} shed while the worker never fell behind"
    );

    eprintln!(
        "FLOOD peak_ok_per_s={peak_ok:.0} rss_before_mb={rss_before} rss_after_mb={rss_after}"
    );
    for (factor, flood, shed, behind) in &floods {
        let ratio = flood.ok_per_s / peak_ok;
        eprintln!(
            "FLOOD load={factor}x offered_per_s={:.0} ok_per_s={:.0} ratio={ratio:.2} \
             shed={shed} behind={behind} errors={:?} p99_ms={:.0}",
            factor * peak_ok,
            flood.ok_per_s,
            flood.errors,
            flood.latency.p99_us / 1000.0
        );
        // Shed with the right error, and nothing else went wrong: an overloaded connection
        // gets one error 05 and is closed, so the requests pipelined behind it fail as
        // closed (the generator reconnects).
        for (kind, n) in &flood.errors {
            assert!(
                kind == "ppstp_error_05" || kind == "connection_closed",
                "{n} errors of another kind: {kind}"
            );
        }
        // Every error 05 the generator saw was counted as shed; the server may count a few
        // more, sent as the run ended and never read: at most one per connection, as an
        // overloaded connection is closed after its error 05.
        let seen_05 = flood.errors.get("ppstp_error_05").copied().unwrap_or(0);
        assert!(
            seen_05 <= *shed && *shed - seen_05 <= FLOOD_CONNECTIONS as u64,
            "error 05 seen {seen_05}, shed {shed}"
        );
        // Kept answering: generous, as the machine is shared (the report gives the figure).
        // In-process, the generator's own cost grows with the offered load and takes the
        // same two cores, so the floor is lower at 4x.
        let floor = if *factor > 2.0 { 0.1 } else { 0.25 };
        assert!(
            ratio > floor,
            "answered {ratio:.2} of the peak rate at {factor}x"
        );
    }
    if floods.iter().all(|f| f.3 == 0) {
        eprintln!(
            "FLOOD the generator could not overload the server on this host: nothing to shed"
        );
    }
    assert!(
        rss_after <= rss_before + RSS_GROWTH_BOUND_MB,
        "RSS grew from {rss_before} to {rss_after} MiB"
    );
    eprintln!(
        "FLOOD after: ok={} errors={:?} slowest answer {recovery:?}",
        after.ok, after.errors
    );
    // Recovered at once: the first requests after the flood are served.
    assert!(
        after.ok > 0 && after.errors.is_empty(),
        "{:?}",
        after.errors
    );
    assert!(
        recovery < Duration::from_secs(5),
        "an answer took {recovery:?}"
    );
}
