//! Runs the generator against a real PPSTP server started in-process on 127.0.0.1 port 0:
//! register a population, then about two seconds of the mixed PPSTP workload over pipelined
//! keep-alive connections, with no error.

use ppsp_loadgen::proto::Protocol;
use ppsp_loadgen::run::{self, RunArgs};
use ppsp_tracker::server::Server;

mod support;
use support::start_server;

#[test]
fn ppstp_mix_against_the_tracker_has_no_errors() {
    let server = start_server(&[]);
    let addr = server.ppstp_addr().unwrap();

    let mut args = RunArgs::defaults(Protocol::Ppstp);
    args.target = vec![addr];
    args.swarms = 200;
    args.peers = 2000;
    args.populate = true;
    args.mix =
        Some("find=8,connect=1,join=1,keepalive=1,stat_report=1,join_chunk=1,stat_query=1".into());
    args.duration = 2.0;
    args.max_requests = 1_000_000;
    args.connections = 4;
    args.pipeline = Some(8);
    args.threads = 2;
    args.no_progress = true;
    // Generous: a loaded machine must not turn a slow reply into an error.
    args.timeout_ms = 10_000;
    let out = run::run(&args).unwrap();
    let engine_peers = server.status();
    server.shutdown();

    let p = out.report.populate.as_ref().unwrap();
    assert_eq!(
        p.per_type["connect"].ok, 2000,
        "populate errors: {:?}",
        p.errors
    );
    let m = &out.report.measure;
    let failed: Vec<(&String, u64)> = m
        .per_type
        .iter()
        .filter(|(_, s)| s.failed > 0)
        .map(|(k, s)| (k, s.failed))
        .collect();
    assert!(m.errors.is_empty(), "errors: {:?} in {failed:?}", m.errors);
    assert!(m.ok > 0 && m.replies_per_s > 0.0);
    // FIND in populated swarms lists peers.
    assert!(
        m.peer_lists > 0 && m.peers_per_list > 1.0,
        "{} peers per list",
        m.peers_per_list
    );
    for kind in [
        "find",
        "connect",
        "join",
        "keepalive",
        "stat_report",
        "join_chunk",
        "stat_query",
    ] {
        assert!(m.per_type[kind].ok > 0, "{kind} never succeeded");
    }
    assert!(engine_peers.is_object());
}

/// Several `--target`s: each simulated peer sticks to one server (its connection tracker), so
/// the stateful PPSTP mix sees no error at either, each server holds its share of the
/// population, and the report gives per-target figures.
#[test]
fn several_targets_each_keep_their_own_peers() {
    let (a, b) = (start_server(&[]), start_server(&[]));
    let mut args = RunArgs::defaults(Protocol::Ppstp);
    args.target = vec![a.ppstp_addr().unwrap(), b.ppstp_addr().unwrap()];
    args.swarms = 50;
    args.peers = 1000;
    args.populate = true;
    args.mix = Some("find=4,join=1,leave=1,keepalive=1,stat_report=1".into());
    args.duration = 1.5;
    args.max_requests = 500_000;
    args.connections = 4;
    args.pipeline = Some(4);
    args.threads = 4;
    args.no_progress = true;
    args.timeout_ms = 10_000;
    let out = run::run(&args).unwrap();
    let peers = |s: &Server| s.status()["peers"].as_u64().unwrap();
    let (pa, pb) = (peers(&a), peers(&b));
    a.shutdown();
    b.shutdown();
    let p = out.report.populate.as_ref().unwrap();
    assert_eq!(p.per_type["connect"].ok, 1000, "{:?}", p.errors);
    assert_eq!((pa, pb), (500, 500), "each server registers its half");
    let m = &out.report.measure;
    assert!(m.errors.is_empty(), "errors: {:?}", m.errors);
    assert_eq!(out.report.per_target.len(), 2);
    for t in &out.report.per_target {
        assert!(t.measure.ok > 0, "{} served nothing", t.target);
    }
    let sum: u64 = out
        .report
        .per_target
        .iter()
        .map(|t| t.measure.replies)
        .sum();
    assert_eq!(sum, m.replies);
    let text = ppsp_loadgen::report::human(&out.report);
    assert!(text.contains("target 127.0.0.1:"), "{text}");
}
