//! `--digest-secret` against a real PPSTP server in HTTP Digest mode (RFC 7616), started
//! in-process on 127.0.0.1 port 0: every peer answers its first 401 challenge, then reuses the
//! nonce with growing nonce counts (one challenge per peer and phase, not per request), and a
//! wrong secret is refused with error 06.

use ppsp_loadgen::proto::Protocol;
use ppsp_loadgen::run::{self, RunArgs};
use ppsp_tracker::server::Server;

mod support;
use support::{metric, start_server};

fn challenges(server: &Server) -> u64 {
    metric(server, r#"ppsp_errors_total{type="undecoded",code="06"}"#).unwrap_or(0)
}

#[test]
fn digest_peers_answer_the_challenge_and_reuse_their_nonce() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials");
    const PEERS: u32 = 100;
    let mut args = RunArgs::defaults(Protocol::Ppstp);
    args.swarms = 20;
    args.peers = PEERS;
    args.digest_secret = Some("s3cret".into());
    args.write_digest_credentials = Some(creds.clone());
    args.dry_run = true;
    args.no_progress = true;
    run::run(&args).unwrap();
    let text = std::fs::read_to_string(&creds).unwrap();
    assert_eq!(text.lines().count(), PEERS as usize);

    let server = start_server(&[
        "ppstp.auth.mode=\"digest\"".into(),
        format!("ppstp.auth.credentials=\"{}\"", creds.display()),
    ]);
    args.dry_run = false;
    args.write_digest_credentials = None;
    args.target = vec![server.ppstp_addr().unwrap()];
    args.populate = true;
    args.mix = Some("find=8,keepalive=1,stat_report=1".into());
    args.duration = 1.0;
    args.max_requests = 3000;
    args.connections = 2;
    args.pipeline = Some(4);
    args.timeout_ms = 10_000;
    let out = run::run(&args).unwrap();
    let p = out.report.populate.as_ref().unwrap();
    assert_eq!(p.per_type["connect"].ok, u64::from(PEERS), "{:?}", p.errors);
    let m = &out.report.measure;
    assert!(m.errors.is_empty(), "errors: {:?}", m.errors);
    assert!(m.ok >= 300, "only {} replies", m.ok);
    // One challenge per peer and phase (each phase starts its peers afresh: populate, then
    // measure); every later request reuses the nonce.
    let seen = challenges(&server);
    assert!(
        (u64::from(PEERS)..=2 * u64::from(PEERS) + 10).contains(&seen),
        "{seen} challenges for {PEERS} peers and {} requests",
        m.ok + u64::from(PEERS)
    );

    // A wrong secret: the retry is refused again, error 06, and nothing succeeds.
    let mut wrong = args.clone();
    wrong.digest_secret = Some("not the secret".into());
    wrong.populate = false;
    wrong.assume_registered = true;
    wrong.mix = Some("find=1".into());
    wrong.max_requests = 50;
    wrong.duration = 0.5;
    let out = run::run(&wrong).unwrap();
    let m = &out.report.measure;
    assert_eq!(m.ok, 0);
    assert!(
        m.errors.get("ppstp_error_06").is_some_and(|&n| n > 0),
        "{:?}",
        m.errors
    );
    server.shutdown();
}
