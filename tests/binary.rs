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
