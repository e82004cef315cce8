//! Runs the generator against a real PPSTP server started in-process on 127.0.0.1 port 0:
//! register a population, then about two seconds of the mixed PPSTP workload over pipelined
//! keep-alive connections, with no error.

use ppsp_loadgen::proto::Protocol;
use ppsp_loadgen::run::{self, RunArgs};
use ppsp_tracker::config::Config;
use ppsp_tracker::server::Server;

#[test]
fn ppstp_mix_against_the_tracker_has_no_errors() {
    let sets: Vec<String> = vec![
        "ppstp.listen=127.0.0.1:0".into(),
        "admin.listen=127.0.0.1:0".into(),
        // A bound address is refused at start: the BitTorrent listeners on port 0 too.
        r#"bt_udp.listen=["127.0.0.1:0"]"#.into(),
        r#"bt_http.listen=["127.0.0.1:0"]"#.into(),
        "server.workers=1".into(),
        "server.pin_cores=false".into(),
    ];
    let config = Config::load(None, &sets).unwrap();
    let server = Server::start(&config).unwrap();
    let addr = server.ppstp_addr().unwrap();

    let mut args = RunArgs::defaults(Protocol::Ppstp);
    args.target = Some(addr);
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
