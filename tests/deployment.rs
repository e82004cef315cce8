//! The systemd unit in `tuning/` is valid for this binary: `systemd-analyze verify` accepts it
//! with `ExecStart` pointed at the binary under test.

use std::process::Command;

#[test]
fn the_systemd_unit_verifies_and_keeps_its_hardening() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tuning/ppsp-tracker.service"
    ))
    .unwrap();
    for hardening in [
        "NoNewPrivileges=yes",
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(
            unit.lines().any(|l| l == hardening),
            "unit lost {hardening}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ppsp-tracker.service");
    std::fs::write(
        &path,
        unit.replace(
            "/usr/local/bin/ppsp-tracker",
            env!("CARGO_BIN_EXE_ppsp-tracker"),
        ),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian package systemd; .ci/run installs it)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    assert!(
        !stderr.contains(path.file_name().unwrap().to_str().unwrap()),
        "systemd-analyze found problems: {stderr}"
    );
}
