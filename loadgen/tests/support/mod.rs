//! What the generator's tests against an in-process tracker share: the server on loopback
//! port 0 and the reading of one `/metrics` value. Each test binary uses part of it.
#![allow(dead_code)]

use ppsp_tracker::config::Config;
use ppsp_tracker::server::Server;

/// Starts a tracker with one worker and every listener on 127.0.0.1 port 0 (a bound address
/// is refused at start, so the BitTorrent listeners take port 0 too), plus `extra` settings
/// (`key=value`, as `--set` takes them).
pub fn start_server(extra: &[String]) -> Server {
    let mut sets: Vec<String> = [
        "ppstp.listen=127.0.0.1:0",
        "admin.listen=127.0.0.1:0",
        r#"bt_udp.listen=["127.0.0.1:0"]"#,
        r#"bt_http.listen=["127.0.0.1:0"]"#,
        "server.workers=1",
        "server.pin_cores=false",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    sets.extend_from_slice(extra);
    Server::start(&Config::load(None, &sets).unwrap()).unwrap()
}

/// The value of the `/metrics` sample whose line starts with `series` (name and labels, e.g.
/// `ppsp_connections_accepted_total{listener="ppstp"}`), or `None` when it is absent.
pub fn metric(server: &Server, series: &str) -> Option<u64> {
    server
        .metrics_text()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}
