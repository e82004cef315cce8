//! `/metrics` after real traffic over every front-end: latency histograms per protocol and
//! request type with counts equal to the requests sent, monotone buckets and a sane sum,
//! table sizes and bytes per table, and queue depths.

mod bt_support;
mod common;

use std::collections::HashMap;

use ppsp_tracker::protocol::bt_udp::tracker::AnnounceEvent;

/// Every sample line as (name with labels, value).
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

fn value(s: &HashMap<String, f64>, key: &str) -> f64 {
    *s.get(key)
        .unwrap_or_else(|| panic!("{key} missing from /metrics"))
}

/// Checks one histogram: cumulative buckets never decrease, `+Inf` equals `_count`, which
/// is `want`, and the mean is positive and below one second.
fn check_histogram(s: &HashMap<String, f64>, protocol: &str, kind: &str, want: f64) {
    let labels = format!("protocol=\"{protocol}\",type=\"{kind}\"");
    let count = value(
        s,
        &format!("ppsp_request_duration_seconds_count{{{labels}}}"),
    );
    assert_eq!(count, want, "{protocol} {kind} count");
    let mut buckets: Vec<(f64, f64)> = s
        .iter()
        .filter_map(|(k, v)| {
            let rest = k.strip_prefix(&format!(
                "ppsp_request_duration_seconds_bucket{{{labels},le=\""
            ))?;
            let le = rest.strip_suffix("\"}")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, *v))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(buckets.len() >= 10, "{protocol} {kind}: {buckets:?}");
    for pair in buckets.windows(2) {
        assert!(pair[0].1 <= pair[1].1, "{protocol} {kind}: {buckets:?}");
    }
    assert_eq!(buckets.last().unwrap().1, count);
    let sum = value(s, &format!("ppsp_request_duration_seconds_sum{{{labels}}}"));
    if want > 0.0 {
        assert!(
            sum > 0.0 && sum / count < 1.0,
            "{protocol} {kind}: sum {sum}"
        );
    }
}

#[test]
fn metrics_expose_latency_histograms_table_sizes_and_queue_depths_after_traffic() {
    let server = common::TestServer::start(&[]);
    let s = server.server.as_ref().unwrap();
    let udp = s.bt_udp_addr().unwrap();
    let http = s.bt_http_addr().unwrap();

    // PPSTP: 5 CONNECTs (each joins a swarm) and 7 FINDs, and 2 undecodable bodies.
    for i in 0..5 {
        let r = common::roundtrip(
            server.ppstp,
            &common::ppstp_post(&common::connect_body(
                "1",
                &format!("m{i}"),
                &[("aa", "SEEDER")],
            )),
        );
        assert_eq!(r.status, 200);
    }
    for i in 0..7 {
        let r = common::roundtrip(
            server.ppstp,
            &common::ppstp_post(&common::find_body("2", &format!("m{}", i % 5), "aa", 5)),
        );
        assert_eq!(r.status, 200);
    }
    for _ in 0..2 {
        common::roundtrip(server.ppstp, &common::ppstp_post("{nonsense"));
    }
    // BitTorrent UDP: 3 connects, 3 announces in three swarms.
    let client = bt_support::UdpClient::new(udp);
    for i in 0..3u8 {
        let id = client.connect();
        client.announce(id, [i + 1; 20], 6881, 0, AnnounceEvent::Started);
    }
    // BitTorrent HTTP: 4 announces, 1 scrape, 1 unknown path.
    for i in 0..4u8 {
        let hash = bt_support::url_bytes(&[0x40 + i; 20]);
        let (status, _) = bt_support::http_get(
            http,
            &format!("/announce?info_hash={hash}&peer_id=aaaaaaaaaaaaaaaaaaaa&port=7000&uploaded=0&downloaded=0&left=5&compact=1"),
        );
        assert_eq!(status, 200);
    }
    let hash = bt_support::url_bytes(&[0x40; 20]);
    assert_eq!(
        bt_support::http_get(http, &format!("/scrape?info_hash={hash}")).0,
        200
    );
    bt_support::http_get(http, "/nowhere");

    let text = String::from_utf8(common::http_get(server.admin, "/metrics").body).unwrap();
    let s = samples(&text);
    check_histogram(&s, "ppstp", "connect", 5.0);
    check_histogram(&s, "ppstp", "find", 7.0);
    check_histogram(&s, "ppstp", "undecoded", 2.0);
    check_histogram(&s, "ppstp", "leave", 0.0);
    check_histogram(&s, "bt_udp", "connect", 3.0);
    check_histogram(&s, "bt_udp", "announce", 3.0);
    check_histogram(&s, "bt_http", "announce", 4.0);
    check_histogram(&s, "bt_http", "scrape", 1.0);
    check_histogram(&s, "bt_http", "error", 1.0);

    // Tables: 5 PPSTP peers and one BitTorrent member per swarm and (address, port) (UDP 6881
    // in 3 swarms, HTTP 7000 in 4); 1 + 3 + 4 swarms, 12 memberships.
    assert_eq!(value(&s, "ppsp_table_entries{table=\"peers\"}"), 12.0);
    assert_eq!(value(&s, "ppsp_table_entries{table=\"swarms\"}"), 8.0);
    assert_eq!(
        value(&s, "ppsp_table_entries{table=\"swarm_members\"}"),
        12.0
    );
    for table in ["swarms", "swarm_members", "peers"] {
        let bytes = value(&s, &format!("ppsp_table_bytes{{table=\"{table}\"}}"));
        assert!(
            bytes > 0.0 && bytes < 64.0 * 1024.0 * 1024.0,
            "{table}: {bytes}"
        );
    }
    assert_eq!(
        value(&s, "ppsp_queue_depth{queue=\"bt_udp_deferred\"}"),
        0.0
    );
}
