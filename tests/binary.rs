//! The `ppsp-tracker` binary as an operator runs it: `serve` answers on the configured
//! listeners and shuts down cleanly on SIGTERM and SIGINT.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A server process; killed and reaped when dropped. Standard error is read by a thread so
/// the pipe never fills; [`Running::log`] returns every line once the process has exited.
struct Running {
    child: Child,
    log: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl Running {
    fn id(&self) -> u32 {
        self.child.id()
    }

    /// Every line the process wrote to standard error (call after it exited).
    fn log(&mut self) -> Vec<String> {
        self.log
            .take()
            .map(|h| h.join().unwrap())
            .unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address logged for `key` in the start-up event, text (`ppstp=Some(IP:PORT)`) or JSON
/// (`"ppstp":"Some(IP:PORT)"`).
fn logged_addr(line: &str, key: &str) -> Option<SocketAddr> {
    let after = &line[line
        .find(&format!("{key}="))
        .or_else(|| line.find(&format!("\"{key}\":")))?..];
    let inner = after.split("Some(").nth(1)?.split(')').next()?;
    inner.parse().ok()
}

/// Starts `ppsp-tracker serve` with PPSTP and admin on port 0 and learns the bound addresses
/// from its start-up log line, so concurrent tests never race for a port.
fn serve(extra: &[String]) -> (Running, SocketAddr, SocketAddr) {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_ppsp-tracker"))
        .args([
            "serve",
            "--set",
            "ppstp.listen=127.0.0.1:0",
            "--set",
            "admin.listen=127.0.0.1:0",
            // A bound default port is refused at start: every listener on port 0.
            "--set",
            "bt_udp.listen=127.0.0.1:0",
            "--set",
            "bt_http.listen=127.0.0.1:0",
        ])
        .args(extra)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ppsp-tracker");
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let (ppstp, admin) = loop {
        let Some(Ok(line)) = lines.next() else {
            let _ = child.kill();
            panic!("server exited before serving: {seen:#?}");
        };
        if line.contains("ppsp-tracker serving") {
            let ppstp = logged_addr(&line, "ppstp").expect(&line);
            let admin = logged_addr(&line, "admin").expect(&line);
            seen.push(line);
            break (ppstp, admin);
        }
        seen.push(line);
    };
    let log = std::thread::spawn(move || {
        seen.extend(lines.map_while(Result::ok));
        seen
    });
    (
        Running {
            child,
            log: Some(log),
        },
        ppstp,
        admin,
    )
}

fn wait_exit(child: &mut Running) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.child.try_wait().unwrap() {
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
        unsafe { libc::kill(child.id() as i32, signal) };
        let status = wait_exit(&mut child);
        assert!(
            status.success(),
            "exit status after signal {signal}: {status:?}"
        );
    }
}

/// `THP_enabled` of process `pid` (`/proc/PID/status`, Linux 5.0 and later), if reported.
fn thp_enabled(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("THP_enabled:"))
        .map(|v| v.trim().to_owned())
}

/// `server.transparent_huge_pages`: off by default (the process opted out of transparent huge
/// pages), on when set.
#[test]
fn transparent_huge_pages_follow_the_setting() {
    if thp_enabled(std::process::id()).as_deref() != Some("1") {
        // A kernel before 5.0 (not reported) or without huge pages, or a test run already
        // opted out: the setting cannot show.
        return;
    }
    let (child, _, _) = serve(&[]);
    let default = thp_enabled(child.id()).expect("reported for the test process too");
    assert_eq!(default, "0", "opted out by default");
    drop(child);
    let (child, _, _) = serve(&["--set".into(), "server.transparent_huge_pages=true".into()]);
    assert_eq!(
        thp_enabled(child.id()).as_deref(),
        Some("1"),
        "allowed when set"
    );
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
    assert_eq!(
        parsed["ppstp"]["listen"][0].as_str(),
        Some("127.0.0.1:7846")
    );
    assert_eq!(
        parsed["admin"]["listen"][0].as_str(),
        Some("127.0.0.1:9846")
    );
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
fn keygen_writes_a_private_key_0600_and_prints_only_public_values() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("node-a");
    let run = |force: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ppsp-tracker"));
        cmd.arg("keygen").arg("--out").arg(&out);
        if force {
            cmd.arg("--force");
        }
        cmd.output().expect("run keygen")
    };
    let first = run(false);
    assert!(first.status.success(), "{first:?}");
    let stdout = String::from_utf8(first.stdout).unwrap();
    let key_path = out.join("node.key");
    assert_eq!(
        std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let key = std::fs::read_to_string(&key_path).unwrap();
    let secret_line = key.lines().nth(1).unwrap();
    assert!(!stdout.contains(secret_line), "the key was printed");
    assert!(stdout.contains("node_id = \""), "{stdout}");
    assert!(stdout.contains("fingerprint = \"sha256:"), "{stdout}");
    // An existing key is not replaced without --force.
    let again = run(false);
    assert!(!again.status.success());
    assert_eq!(std::fs::read_to_string(&key_path).unwrap(), key);
    let forced = run(true);
    assert!(forced.status.success());
    assert_ne!(std::fs::read_to_string(&key_path).unwrap(), key);
}

#[test]
fn json_log_format_writes_one_json_object_per_line() {
    let (mut child, _, _) = serve(&["--set".into(), "log.format=\"json\"".into()]);
    // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(wait_exit(&mut child).success());
    let err = child.log().join("\n");
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
            .args([
                "ppstp.listen=127.0.0.1:0",
                "--set",
                "admin.listen=127.0.0.1:0",
            ])
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
    let pid = child.id();
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
