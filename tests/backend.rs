//! The I/O back-end choice of the `ppsp-tracker` binary: `server.backend = "auto"` runs
//! io_uring where the kernel allows it and falls back to epoll (saying so in the log) where a
//! seccomp profile forbids `io_uring_setup`, as container runtimes' default profiles do; an
//! explicit `"io_uring"` that cannot be set up stops the start with a clear message. Both
//! back-ends answer BitTorrent over UDP (BEP 15) and PPSTP.

mod common;

use std::io::BufRead;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// Installs, in the calling process, a seccomp filter under which `io_uring_setup(2)` fails
/// with `EPERM` and every other system call is allowed.
///
/// # Safety
///
/// Meant for the child between `fork` and `exec` (`pre_exec`): it only calls `prctl(2)`.
unsafe fn forbid_io_uring() -> std::io::Result<()> {
    const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const BPF_JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K
    const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
    const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
    let filter = [
        // seccomp_data.nr, at offset 0.
        libc::sock_filter {
            code: BPF_LD_W_ABS,
            jt: 0,
            jf: 0,
            k: 0,
        },
        libc::sock_filter {
            code: BPF_JEQ_K,
            jt: 0,
            jf: 1,
            k: libc::SYS_io_uring_setup as u32,
        },
        libc::sock_filter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: SECCOMP_RET_ERRNO | libc::EPERM as u32,
        },
        libc::sock_filter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: SECCOMP_RET_ALLOW,
        },
    ];
    let program = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if libc::prctl(
        libc::PR_SET_SECCOMP,
        libc::SECCOMP_MODE_FILTER,
        &program as *const libc::sock_fprog,
    ) != 0
    {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A server process, killed and reaped when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What a started server told in its log up to the "serving" line.
struct Started {
    server: Running,
    log: Vec<String>,
    admin: SocketAddr,
    bt_udp: SocketAddr,
}

fn command(backend: &str, seccomp: bool) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ppsp-tracker"));
    cmd.args([
        "serve",
        "--set",
        "ppstp.listen=127.0.0.1:0",
        "--set",
        "admin.listen=127.0.0.1:0",
        "--set",
        "bt_udp.enabled=true",
        "--set",
        "bt_udp.listen=127.0.0.1:0",
        "--set",
        "bt_http.listen=127.0.0.1:0",
        "--set",
        &format!("server.backend={backend}"),
    ])
    // The operator override would hide what this test checks.
    .env_remove("PPSP_TRACKER_BACKEND")
    .env_remove("RUST_LOG")
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    if seccomp {
        // SAFETY: the closure only installs the filter (prctl), as `pre_exec` requires.
        unsafe {
            cmd.pre_exec(|| forbid_io_uring());
        }
    }
    cmd
}

/// The first address inside `key=[...]` or `key=Some(...)` of a log line.
fn logged_addr(line: &str, key: &str) -> Option<SocketAddr> {
    let after = &line[line.find(&format!("{key}="))? + key.len() + 1..];
    let inner = after
        .trim_start_matches("Some(")
        .trim_start_matches('[')
        .split([')', ']', ','])
        .next()?;
    inner.trim().parse().ok()
}

fn start(backend: &str, seccomp: bool) -> Started {
    let mut child = command(backend, seccomp)
        .spawn()
        .expect("start ppsp-tracker");
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let server = Running(child);
    let mut log = Vec::new();
    loop {
        let Some(Ok(line)) = lines.next() else {
            panic!("server exited before serving: {log:#?}");
        };
        if line.contains("ppsp-tracker serving") {
            let admin = logged_addr(&line, "admin").expect(&line);
            let bt_udp = logged_addr(&line, "bt_udp").expect(&line);
            log.push(line);
            // Keep reading so the pipe never fills.
            std::thread::spawn(move || for _ in lines.by_ref() {});
            return Started {
                server,
                log,
                admin,
                bt_udp,
            };
        }
        log.push(line);
    }
}

/// A BEP 15 connect is answered with a connect answer carrying the transaction id.
fn assert_udp_answers(addr: SocketAddr) {
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut request = Vec::new();
    request.extend_from_slice(&0x0417_2710_1980u64.to_be_bytes());
    request.extend_from_slice(&0u32.to_be_bytes());
    request.extend_from_slice(&0x5eed_1234u32.to_be_bytes());
    client.send_to(&request, addr).unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = client.recv_from(&mut buf).unwrap();
    assert_eq!(from, addr);
    assert_eq!(n, 16, "a connect answer is 16 bytes");
    assert_eq!(&buf[..8], &[0, 0, 0, 0, 0x5e, 0xed, 0x12, 0x34]);
}

#[test]
fn auto_falls_back_to_epoll_when_seccomp_forbids_io_uring_and_says_why() {
    let started = start("auto", true);
    let chosen = started
        .log
        .iter()
        .find(|l| l.contains("I/O back-end"))
        .unwrap_or_else(|| panic!("no back-end line: {:#?}", started.log));
    assert!(chosen.contains("I/O back-end: epoll"), "{chosen}");
    assert!(chosen.contains("io_uring is unavailable"), "{chosen}");
    assert!(chosen.contains("Operation not permitted"), "{chosen}");
    let status = http_get(started.admin, "/status").json();
    assert_eq!(status["backend"], "epoll");
    assert_udp_answers(started.bt_udp);
    drop(started.server);
}

#[test]
fn an_explicit_io_uring_that_cannot_be_set_up_stops_the_start() {
    let out = command("io_uring", true)
        .stderr(Stdio::piped())
        .output()
        .expect("run ppsp-tracker");
    assert!(!out.status.success(), "started without io_uring");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("server.backend = \"io_uring\" but io_uring cannot be set up here"),
        "{stderr}"
    );
}

#[test]
fn auto_runs_io_uring_where_the_kernel_has_it_and_both_back_ends_serve() {
    let expected = match ppsp_tracker::runtime::uring::probe() {
        Ok(_) => "io_uring",
        Err(_) => "epoll",
    };
    let started = start("auto", false);
    let status = http_get(started.admin, "/status").json();
    assert_eq!(status["backend"], expected, "{:#?}", started.log);
    assert_udp_answers(started.bt_udp);
    drop(started.server);

    let started = start("epoll", false);
    let status = http_get(started.admin, "/status").json();
    assert_eq!(status["backend"], "epoll");
    assert_udp_answers(started.bt_udp);
}
