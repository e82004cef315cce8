//! `--tls` against a real PPSTP-over-TLS server started in-process on 127.0.0.1 port 0: the
//! populate phase and a short mixed workload complete without error over a few reused TLS
//! connections, and a run without keep-alive does one handshake per request.

use std::os::unix::fs::PermissionsExt;

use ppsp_loadgen::proto::Protocol;
use ppsp_loadgen::run::{self, RunArgs};
use ppsp_tracker::server::Server;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

mod support;
use support::{metric, start_server};

fn accepted(server: &Server) -> u64 {
    metric(
        server,
        r#"ppsp_connections_accepted_total{listener="ppstp"}"#,
    )
    .unwrap_or_else(|| panic!("no accepted counter in\n{}", server.metrics_text()))
}

#[test]
fn ppstp_over_tls_reuses_connections_without_errors() {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "loadgen test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let (ca_path, cert_path, key_path) = (
        dir.path().join("ca.pem"),
        dir.path().join("server.pem"),
        dir.path().join("server.key"),
    );
    std::fs::write(&ca_path, ca.pem()).unwrap();
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();

    let server = start_server(&[
        "ppstp.tls.enabled=true".into(),
        format!("ppstp.tls.cert=\"{}\"", cert_path.display()),
        format!("ppstp.tls.key=\"{}\"", key_path.display()),
    ]);
    let mut args = RunArgs::defaults(Protocol::Ppstp);
    args.target = vec![server.ppstp_addr().unwrap()];
    args.tls = true;
    args.cacert = Some(ca_path.clone());
    args.swarms = 50;
    args.peers = 500;
    args.populate = true;
    args.mix = Some("find=8,connect=1,keepalive=1".into());
    args.duration = 1.0;
    args.connections = 4;
    args.pipeline = Some(8);
    args.threads = 2;
    args.no_progress = true;
    args.timeout_ms = 10_000;
    let out = run::run(&args).unwrap();
    let p = out.report.populate.as_ref().unwrap();
    assert_eq!(
        p.per_type["connect"].ok, 500,
        "populate errors: {:?}",
        p.errors
    );
    let m = &out.report.measure;
    assert!(m.errors.is_empty(), "errors: {:?}", m.errors);
    assert!(m.ok > 0);
    // Connections are reused: a handful of handshakes for hundreds of requests.
    let kept = accepted(&server);
    assert!(kept <= 16, "{kept} connections for {} requests", m.ok + 500);

    // Without keep-alive every request pays a handshake, and still succeeds.
    let mut once = args.clone();
    once.populate = false;
    once.assume_registered = true;
    once.no_keepalive = true;
    // FIND only: every peer is registered, so any error is the transport's.
    once.mix = Some("find=1".into());
    once.duration = 0.5;
    once.max_requests = 200;
    let out = run::run(&once).unwrap();
    let m = &out.report.measure;
    assert!(m.errors.is_empty(), "errors: {:?}", m.errors);
    assert!(m.ok > 0);
    assert!(
        accepted(&server) >= kept + m.ok,
        "one connection per request"
    );
    server.shutdown();
}
