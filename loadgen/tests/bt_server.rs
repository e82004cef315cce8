//! Runs the generator against the tracker's own BitTorrent front-ends, started in-process on
//! loopback port 0: BEP 15 over UDP and BEP 3 over HTTP. Every peer's first announce
//! (`started`) registers it, then a second of re-announces and scrapes runs, with no error
//! (re-announces are the engine's protocol-neutral announce, valid in TRACKING).

use ppsp_loadgen::proto::Protocol;
use ppsp_loadgen::report::PhaseReport;
use ppsp_loadgen::run::{self, RunArgs};
use ppsp_tracker::server::Server;

mod support;
use support::start_server;

/// The measured mix.
const MIX: &str = "announce=8,scrape=1";

fn start() -> Server {
    start_server(&["bt_udp.enabled=true".into(), "bt_http.enabled=true".into()])
}

fn args(protocol: Protocol) -> RunArgs {
    let mut a = RunArgs::defaults(protocol);
    a.swarms = 200;
    a.peers = 1000;
    a.populate = true;
    a.duration = 1.0;
    a.max_requests = 500_000;
    a.connections = 2;
    a.inflight = 8;
    a.no_progress = true;
    // Generous: a loaded machine must not turn a slow reply into an error.
    a.timeout_ms = 10_000;
    a
}

/// The populate phase's figures, after asserting that all 1,000 peers were announced as
/// `started` without an error.
fn populated_all(out: &run::RunOutput) -> &PhaseReport {
    let p = out.report.populate.as_ref().expect("a populate phase ran");
    assert_eq!(
        p.per_type["started"].ok, 1000,
        "populate errors: {:?}",
        p.errors
    );
    p
}

#[test]
fn bt_udp_and_bt_http_against_the_tracker_have_no_errors() {
    let server = start();
    let udp = server.bt_udp_addr().unwrap();

    let mut a = args(Protocol::BtUdp);
    a.target = vec![udp];
    a.mix = Some(MIX.into());
    a.source_addrs = 2;
    let out = run::run(&a).unwrap();
    populated_all(&out);
    let m = &out.report.measure;
    assert!(m.errors.is_empty(), "bt-udp errors: {:?}", m.errors);
    assert!(m.per_type["scrape"].ok > 0);

    server.shutdown();

    // A fresh tracker: the HTTP peers have the same (address, port) identities as the UDP ones.
    let server = start();
    let mut a = args(Protocol::BtHttp);
    a.target = server.bt_http_addr().into_iter().collect();
    a.pipeline = Some(4);
    a.mix = Some(MIX.into());
    let out = run::run(&a).unwrap();
    populated_all(&out);
    let m = &out.report.measure;
    assert!(m.errors.is_empty(), "bt-http errors: {:?}", m.errors);
    assert!(m.per_type["scrape"].ok > 0);
    server.shutdown();
}

/// Two sockets carry five source addresses (each datagram names its source): every source
/// address gets its own connection id, and the tracker sees five sources of 200 peers each,
/// so a limit of 200 peers per source refuses none of the 1,000 (from one address it would
/// refuse 800).
#[test]
fn bt_udp_sockets_shared_by_several_source_addresses() {
    let server = start_server(&[
        "bt_udp.enabled=true".into(),
        "engine.max_peers_per_source=200".into(),
    ]);
    let mut a = args(Protocol::BtUdp);
    a.target = vec![server.bt_udp_addr().unwrap()];
    a.mix = Some(MIX.into());
    a.source_addrs = 5;
    a.connections = 2;
    let out = run::run(&a).unwrap();
    let p = populated_all(&out);
    assert!(p.errors.is_empty(), "populate errors: {:?}", p.errors);
    assert_eq!(
        p.per_type["udp_connect"].ok, 5,
        "one connection id per source"
    );
    let m = &out.report.measure;
    assert!(m.errors.is_empty(), "bt-udp errors: {:?}", m.errors);
    assert!(m.per_type["announce"].ok > 0 && m.per_type["scrape"].ok > 0);
    server.shutdown();
}
