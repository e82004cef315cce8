//! Runs the generator for about two seconds of BEP 15 traffic against the in-process floor
//! responder on loopback: every request must be answered and the reports must be complete.

use ppsp_loadgen::floor::Floor;
use ppsp_loadgen::proto::Protocol;
use ppsp_loadgen::run::{self, RunArgs};

#[test]
fn bt_udp_against_the_floor_has_no_errors() {
    let floor = Floor::start("127.0.0.1:0".parse().unwrap(), 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut args = RunArgs::defaults(Protocol::BtUdp);
    args.target = vec![floor.local_addr];
    args.swarms = 500;
    args.peers = 2000;
    args.populate = true;
    args.duration = 2.0;
    args.max_requests = 2_000_000;
    args.connections = 4;
    args.inflight = 8;
    args.threads = 2;
    args.source_addrs = 2;
    args.no_progress = true;
    // Generous: a loaded machine must not turn a slow reply into an error.
    args.timeout_ms = 10_000;
    args.json = Some(dir.path().join("r.json"));
    args.hgrm = Some(dir.path().join("r.hgrm"));
    args.plot = Some(dir.path().join("r.svg"));
    args.write_swarm_ids = Some(dir.path().join("ids.txt"));
    let out = run::run(&args).unwrap();
    run::write_outputs(&args, &out).unwrap();
    let floor_addr = floor.local_addr;
    let answered = floor.stop().unwrap();

    let m = &out.report.measure;
    assert!(m.errors.is_empty(), "errors: {:?}", m.errors);
    assert_eq!(m.failed, 0);
    assert!(
        m.ok > 0 && m.replies_per_s > 0.0,
        "rate {}",
        m.replies_per_s
    );
    assert_eq!(m.sent, m.replies + m.unfinished);
    assert!(m.per_type.contains_key("announce") && m.per_type.contains_key("scrape"));
    // The floor lists no peers: every announce reply counts as an empty list.
    assert_eq!(m.peer_lists, m.per_type["announce"].ok);
    assert_eq!(m.peers_per_list, 0.0);
    let p = out.report.populate.as_ref().unwrap();
    assert_eq!(p.per_type["started"].ok, 2000, "every peer registered once");
    assert!(answered >= m.replies + 2000);

    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("r.json")).unwrap()).unwrap();
    assert_eq!(json["schema"], "ppsp-loadgen-report");
    assert_eq!(json["schema_version"], 1);
    assert_eq!(json["config"]["protocol"], "bt-udp");
    assert_eq!(json["config"]["target"][0], floor_addr.to_string());
    assert_eq!(json["config"]["mix"], "announce=9,scrape=1");
    assert!(json["measure"]["latency"]["p99_us"].as_f64().unwrap() > 0.0);
    let hgrm = std::fs::read_to_string(dir.path().join("r.hgrm")).unwrap();
    assert!(hgrm.contains("#[Max"));
    let svg = std::fs::read_to_string(dir.path().join("r.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("polyline"));
    let ids = std::fs::read_to_string(dir.path().join("ids.txt")).unwrap();
    assert_eq!(ids.lines().count(), 500);
}

#[test]
fn open_loop_rate_is_held_against_the_floor() {
    let floor = Floor::start("127.0.0.1:0".parse().unwrap(), 1).unwrap();
    let mut args = RunArgs::defaults(Protocol::BtUdp);
    args.target = vec![floor.local_addr];
    args.swarms = 100;
    args.peers = 1000;
    args.duration = 1.5;
    args.rate = Some(2000.0);
    args.connections = 2;
    args.inflight = 64;
    args.no_progress = true;
    // Generous: a loaded machine must not turn a slow reply into an error.
    args.timeout_ms = 10_000;
    let out = run::run(&args).unwrap();
    floor.stop().unwrap();
    let m = &out.report.measure;
    assert!(m.errors.is_empty(), "errors: {:?}", m.errors);
    // A fixed schedule issues exactly rate x duration requests (plus the connects), however
    // fast or late the generator itself runs.
    let announces = m.per_type["announce"].sent + m.per_type["scrape"].sent;
    assert_eq!(
        announces, 3000,
        "requests at 2000/s for 1.5 s: {:?}",
        m.per_type
    );
}
