//! The stats page on the admin listener: `/stats.json` reports what the tracker holds, and
//! `/stats` rendered by a real browser engine (headless Chromium) shows the same figures with
//! no script errors.
//!
//! Without Chromium the browser part fails under `CI=true` (`.ci/run` installs it) and is
//! skipped with a message elsewhere.

mod common;

use std::process::Command;

use common::*;

fn register(server: &TestServer) {
    // "alpha" gets 3 peers (1 seeder), "beta" 2, "gamma" 1.
    let joins: &[(&str, &str, &str)] = &[
        ("s1", "alpha", "SEEDER"),
        ("s2", "alpha", "LEECH"),
        ("s3", "alpha", "LEECH"),
        ("s4", "beta", "LEECH"),
        ("s5", "beta", "SEEDER"),
        ("s6", "gamma", "LEECH"),
    ];
    for (i, (peer, swarm, mode)) in joins.iter().enumerate() {
        let r = roundtrip(
            server.ppstp,
            &ppstp_post(&connect_body(&i.to_string(), peer, &[(swarm, mode)])),
        );
        assert_eq!(r.status, 200);
        assert_eq!(error_code(&r.ppstp()), 0);
    }
}

#[test]
fn stats_json_reports_tables_requests_top_swarms_and_history() {
    let server = TestServer::start(&[]);
    register(&server);
    let r = http_get(server.admin, "/stats.json");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let j = r.json();
    assert_eq!(j["peers"], 6);
    assert_eq!(j["swarms"], 3);
    assert_eq!(j["seeders"], 2);
    assert_eq!(j["leechers"], 4);
    assert!(j["requests_total"]["ppstp"].as_u64().unwrap() >= 6, "{j}");
    let top: Vec<(String, u64, u64, u64)> = j["top_swarms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["swarm_id"].as_str().unwrap().to_owned(),
                s["peers"].as_u64().unwrap(),
                s["seeders"].as_u64().unwrap(),
                s["leechers"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        top,
        vec![
            ("alpha".to_owned(), 3, 1, 2),
            ("beta".to_owned(), 2, 1, 1),
            ("gamma".to_owned(), 1, 0, 1),
        ]
    );
    // The sample taken at start is there; the interval is stated.
    assert_eq!(j["history"]["interval_seconds"], 10);
    assert!(!j["history"]["samples"].as_array().unwrap().is_empty());
    // HEAD gets the headers and no body, as on every admin path.
    let mut conn = server_admin_conn(&server);
    std::io::Write::write_all(
        &mut conn,
        b"HEAD /stats HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut raw = String::new();
    std::io::Read::read_to_string(&mut conn, &mut raw).unwrap();
    assert!(raw.starts_with("HTTP/1.1 200 "), "{raw}");
    assert!(raw.contains("Content-Type: text/html"), "{raw}");
    assert!(raw.ends_with("\r\n\r\n"), "no body after the head: {raw}");
}

fn server_admin_conn(server: &TestServer) -> std::net::TcpStream {
    connect(server.admin)
}

fn chromium() -> Option<&'static str> {
    for candidate in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new(candidate).arg("--version").output().is_ok() {
            return Some(candidate);
        }
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("chromium is missing on CI (.ci/run installs the Debian package chromium)");
    }
    None
}

#[test]
fn the_stats_page_in_a_real_browser_shows_the_json_figures_without_script_errors() {
    let Some(browser) = chromium() else {
        eprintln!("skipped: no chromium on PATH (apt-get install chromium)");
        return;
    };
    let server = TestServer::start(&[]);
    register(&server);
    let profile = tempfile::tempdir().unwrap();
    let shot = profile.path().join("stats.png");
    let url = format!("http://{}/stats", server.admin);
    let run = |extra: &[&str]| {
        let out = Command::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--enable-logging=stderr",
                "--v=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(&url)
            .output()
            .expect("run chromium");
        assert!(out.status.success(), "chromium failed: {out:?}");
        out
    };
    let out = run(&["--dump-dom"]);
    let dom = String::from_utf8_lossy(&out.stdout);
    let log = String::from_utf8_lossy(&out.stderr);
    // The page as the browser built it holds the figures that /stats.json reports now.
    let j = http_get(server.admin, "/stats.json").json();
    for (id, key) in [
        ("peers", "peers"),
        ("swarms", "swarms"),
        ("seeders", "seeders"),
    ] {
        let want = format!("<td id=\"{id}\">{}</td>", j[key]);
        assert!(dom.contains(&want), "{want} not in {dom}");
    }
    for swarm in j["top_swarms"].as_array().unwrap() {
        let row = format!(
            "<tr><td class=\"id\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            swarm["swarm_id"].as_str().unwrap(),
            swarm["peers"],
            swarm["seeders"],
            swarm["leechers"]
        );
        assert!(dom.contains(&row), "{row} not in {dom}");
    }
    assert!(dom.contains("<svg id=\"history\""), "the plot is rendered");
    // Console messages from the page (script errors, failed loads) are logged as CONSOLE.
    assert!(
        !log.contains("CONSOLE") && !log.contains("Uncaught"),
        "browser reported errors: {log}"
    );
    // A screenshot, so the rendered page can be looked at.
    run(&[
        &format!("--screenshot={}", shot.display()),
        "--window-size=900,900",
    ]);
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    if let Ok(dir) = std::env::var("STATS_SCREENSHOT_DIR") {
        let _ = std::fs::copy(&shot, std::path::Path::new(&dir).join("stats.png"));
    }
}
