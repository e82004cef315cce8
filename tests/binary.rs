//! The `ppsp-tracker` binary as an operator runs it: `serve` answers on the configured
//! listeners and shuts down cleanly on SIGTERM and SIGINT.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(extra: &[String]) -> (Running, SocketAddr, SocketAddr) {
    let ppstp: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ppsp-tracker"));
    cmd.arg("serve")
        .arg("--set")
        .arg(format!("ppstp.listen={ppstp}"))
        .arg("--set")
        .arg(format!("admin.listen={admin}"))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = Running(cmd.spawn().expect("start ppsp-tracker"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(ppstp).is_err() {
        assert!(
            Instant::now() < deadline,
            "server did not start listening on {ppstp}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, ppstp, admin)
}

fn wait_exit(child: &mut Running) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "server did not exit after the signal"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serve_answers_and_stops_cleanly_on_sigterm_and_sigint() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let (mut child, ppstp, admin) = serve(&["--set".into(), "server.workers=2".into()]);
        let r = roundtrip(
            ppstp,
            &ppstp_post(&connect_body("1", "bin-peer", &[("bin", "SEEDER")])),
        );
        assert_eq!(r.status, 200);
        assert_eq!(
            http_get(admin, "/status").json()["peers"],
            serde_json::json!(1)
        );
        // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
        unsafe { libc::kill(child.0.id() as i32, signal) };
        let status = wait_exit(&mut child);
        assert!(
            status.success(),
            "exit status after signal {signal}: {status:?}"
        );
    }
}

#[test]
fn print_config_shows_the_embedded_default_profile() {
    let out = Command::new(env!("CARGO_BIN_EXE_ppsp-tracker"))
        .arg("print-config")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let parsed: toml::Value = toml::from_str(&text).expect("print-config prints TOML");
    assert_eq!(parsed["ppstp"]["listen"].as_str(), Some("127.0.0.1:7846"));
    assert_eq!(parsed["admin"]["listen"].as_str(), Some("127.0.0.1:9846"));
}

#[test]
fn an_unknown_key_fails_at_start_naming_the_key() {
    let out = Command::new(env!("CARGO_BIN_EXE_ppsp-tracker"))
        .args(["serve", "--set", "engine.max_peerz=5"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max_peerz"), "{err}");
}

#[test]
fn json_log_format_writes_one_json_object_per_line() {
    let ppstp: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut child = Running(
        Command::new(env!("CARGO_BIN_EXE_ppsp-tracker"))
            .args(["serve", "--set", "log.format=\"json\"", "--set"])
            .arg(format!("ppstp.listen={ppstp}"))
            .arg("--set")
            .arg(format!("admin.listen={admin}"))
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ppsp-tracker"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(ppstp).is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    assert!(wait_exit(&mut child).success());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut err).unwrap();
    let events: Vec<serde_json::Value> = err
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let serving = events
        .iter()
        .find(|e| e["fields"]["message"] == "ppsp-tracker serving")
        .unwrap_or_else(|| panic!("no start event in {err}"));
    assert_eq!(serving["level"], "INFO");
    assert!(serving["timestamp"].is_string());
    assert!(events.iter().any(|e| e["fields"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("shutting down")));
}

#[test]
fn an_unknown_log_format_is_refused_naming_the_key() {
    let out = Command::new(env!("CARGO_BIN_EXE_ppsp-tracker"))
        .args(["serve", "--set", "log.format=\"xml\""])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("format") && err.contains("xml"), "{err}");
}

fn uids_of(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap()
        .to_owned()
}

#[test]
fn server_user_switches_from_root_after_binding_or_is_refused_otherwise() {
    let nobody = String::from_utf8(
        Command::new("id")
            .args(["-u", "nobody"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_owned();
    // SAFETY: geteuid(2) has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        // Not root: asking for another account is refused at start, naming it.
        let out = Command::new(env!("CARGO_BIN_EXE_ppsp-tracker"))
            .args(["serve", "--set", "server.user=\"nobody\"", "--set"])
            .arg(format!("ppstp.listen=127.0.0.1:{}", free_port()))
            .arg("--set")
            .arg(format!("admin.listen=127.0.0.1:{}", free_port()))
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("server.user") && err.contains("root"), "{err}");
        return;
    }
    let (mut child, ppstp, admin) = serve(&[
        "--set".into(),
        "server.user=\"nobody\"".into(),
        "--set".into(),
        "server.workers=2".into(),
    ]);
    let pid = child.0.id();
    let want = format!("Uid:\t{nobody}\t{nobody}\t{nobody}\t{nobody}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while uids_of(pid) != want {
        assert!(
            Instant::now() < deadline,
            "still {} (want {want})",
            uids_of(pid)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Every thread switched, not only the main one.
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status =
            std::fs::read_to_string(task.unwrap().path().join("status")).unwrap_or_default();
        if let Some(line) = status.lines().find(|l| l.starts_with("Uid:")) {
            assert_eq!(line, want);
        }
    }
    // It still serves after the switch.
    let r = roundtrip(
        ppstp,
        &ppstp_post(&connect_body("1", "unprivileged", &[("u", "SEEDER")])),
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        http_get(admin, "/status").json()["peers"],
        serde_json::json!(1)
    );
    // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    assert!(wait_exit(&mut child).success());
}
