//! Wireshark's RELOAD dissector reads what our nodes put on the wire: a capture on `lo` while a
//! 3-node ring forms and stores values decodes as RELOAD framing and RELOAD messages, and
//! nothing in it is malformed.
//!
//! Needs `tshark` and the right to capture on `lo` (root). Without tshark the test is skipped
//! with a printed reason, except under `CI=true`, where a missing tshark is a failure.

mod overlay_support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use overlay_support::*;

fn have_tshark() -> bool {
    Command::new("tshark")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn tshark_read(file: &PathBuf, decode_as: &[String], filter: &str) -> Vec<String> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(file);
    for d in decode_as {
        cmd.arg("-d").arg(d);
    }
    cmd.arg("-Y").arg(filter);
    let out = cmd.output().expect("run tshark -r");
    assert!(
        out.status.success(),
        "tshark -r failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn tshark_decodes_a_ring_forming_and_storing() {
    if !have_tshark() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("tshark is missing on CI (.ci/run installs it)");
        }
        eprintln!("SKIPPED: tshark is not installed (apt-get install tshark)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("ppsp-overlay-tshark-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("ring.pcapng");
    let addrs: Vec<_> = (0..3).map(|_| free_addr()).collect();
    let filter = addrs
        .iter()
        .map(|a| format!("tcp port {}", a.port()))
        .collect::<Vec<_>>()
        .join(" or ");
    let mut capture = Command::new("tshark")
        .args(["-i", "lo", "-f", &filter, "-w"])
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tshark");
    // tshark creates the file once capturing has started.
    let started = std::time::Instant::now();
    while !file.exists() {
        if let Ok(Some(status)) = capture.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = capture.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("tshark cannot capture on lo ({status}): {err}");
            }
            eprintln!("SKIPPED: tshark cannot capture on lo ({status}): {err}");
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "capture never started"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));

    let n0 = start_node(addrs[0], &[]);
    let n1 = start_node(addrs[1], &addrs[..1]);
    let n2 = start_node(addrs[2], &addrs[..1]);
    wait_until(Duration::from_secs(30), "ring of 3 forms", || {
        ring_is_correct(&[&n0, &n1, &n2])
    });
    for k in 0..5 {
        let (status, _) = http(
            n0.admin,
            "PUT",
            &format!("/overlay/value/capture-{k}"),
            format!("v{k}").as_bytes(),
        );
        assert_eq!(status, 200);
        let (status, _) = http(n2.admin, "GET", &format!("/overlay/value/capture-{k}"), b"");
        assert_eq!(status, 200);
    }
    std::thread::sleep(Duration::from_millis(500));
    // SIGINT lets tshark finish the file.
    let _ = Command::new("kill")
        .arg("-INT")
        .arg(capture.id().to_string())
        .status();
    let _ = capture.wait();
    drop((n0, n1, n2));

    let decode_as: Vec<String> = addrs
        .iter()
        .map(|a| format!("tcp.port=={},reload-framing", a.port()))
        .collect();
    let reload = tshark_read(&file, &decode_as, "reload");
    let framing = tshark_read(&file, &decode_as, "reload-framing");
    let malformed = tshark_read(&file, &decode_as, "_ws.malformed");
    eprintln!(
        "{} RELOAD packets, {} framing packets, {} malformed in {}",
        reload.len(),
        framing.len(),
        malformed.len(),
        file.display()
    );
    assert!(reload.len() >= 20, "too few RELOAD packets: {reload:?}");
    assert!(framing.len() >= reload.len());
    assert!(malformed.is_empty(), "malformed packets: {malformed:#?}");
    let _ = std::fs::remove_dir_all(&dir);
}
