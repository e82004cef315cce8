//! Wireshark reads what our nodes put on the wire:
//! - in the insecure test mode (plain TCP), a capture on `lo` while a 3-node ring forms and
//!   stores values decodes as RELOAD framing and RELOAD messages, and nothing is malformed;
//! - with security on (the default), the same ring's links decode as TLS 1.3 and no RELOAD
//!   token appears in clear;
//! - a signed message (certificate, ECDSA signature, cert_hash identity) and a signed Store
//!   decode as RELOAD with their security blocks, nothing malformed (checked from a pcap that
//!   `text2pcap` builds from the encoded bytes, since the links are encrypted).
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

/// False (with the reason printed) when tshark is absent and this is not CI.
fn tshark_or_skip() -> bool {
    if !have_tshark() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("tshark is missing on CI (.ci/run installs it)");
        }
        eprintln!("SKIPPED: tshark is not installed (apt-get install tshark)");
        return false;
    }
    true
}

#[test]
fn tshark_decodes_a_ring_forming_and_storing() {
    if !tshark_or_skip() {
        return;
    }
    capture_ring(false);
}

#[test]
fn tshark_sees_tls_13_on_secured_links() {
    if !tshark_or_skip() {
        return;
    }
    capture_ring(true);
}

/// Captures a 3-node ring forming and storing; checks RELOAD decoding (insecure test mode) or
/// TLS 1.3 (secure).
fn capture_ring(secure: bool) {
    let dir = std::env::temp_dir().join(format!(
        "ppsp-overlay-tshark-{}-{secure}",
        std::process::id()
    ));
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

    let mode: &[&str] = if secure {
        &[]
    } else {
        &["overlay.security=insecure-test"]
    };
    let n0 = start_node_with(addrs[0], &[], mode);
    let n1 = start_node_with(addrs[1], &addrs[..1], mode);
    let n2 = start_node_with(addrs[2], &addrs[..1], mode);
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

    if secure {
        let decode_as: Vec<String> = addrs
            .iter()
            .map(|a| format!("tcp.port=={},tls", a.port()))
            .collect();
        let hellos = tshark_read(&file, &decode_as, "tls.handshake.type == 1");
        let tls13 = tshark_read(
            &file,
            &decode_as,
            "tls.handshake.extensions.supported_version == 0x0304",
        );
        let app = tshark_read(&file, &decode_as, "tls.app_data");
        // The RELO token (d2454c4f) in clear anywhere in a TCP payload.
        let clear = tshark_read(&file, &[], "tcp.payload contains d2:45:4c:4f");
        eprintln!(
            "{} ClientHellos, {} TLS 1.3 handshakes, {} application-data records, {} clear RELOAD in {}",
            hellos.len(),
            tls13.len(),
            app.len(),
            clear.len(),
            file.display()
        );
        assert!(hellos.len() >= 2, "too few TLS handshakes: {hellos:?}");
        assert!(tls13.len() >= hellos.len());
        assert!(app.len() >= 20, "too few TLS records: {app:?}");
        assert!(clear.is_empty(), "RELOAD in clear: {clear:#?}");
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
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

#[test]
fn tshark_decodes_signed_messages_and_stored_values() {
    use ppsp_tracker::overlay::security::{Identity, NodeIdDigest};
    use ppsp_tracker::overlay::storage::{
        DataValue, StoreKindData, StoreReq, StoredData, StoredDataValue, KIND_CONTENT_REGISTRATION,
    };
    use ppsp_tracker::overlay::wire::framing::encode_data_frame;
    use ppsp_tracker::overlay::wire::{
        Body, Destination, ForwardingHeader, Message, OverlayHash, PingReq, ResourceId, Signature,
        TransactionId,
    };
    if !tshark_or_skip() {
        return;
    }
    let id = Identity::generate(NodeIdDigest::Sha256, "ppsp-tracker.overlay").unwrap();
    let overlay = OverlayHash::of_name("ppsp-tracker.overlay");
    let resource = ResourceId::hash_of(b"swarm");
    let header = |tid| {
        ForwardingHeader::new_request(
            overlay,
            0,
            100,
            TransactionId(tid),
            vec![Destination::Resource(resource.clone())],
        )
    };
    let mut ping = Message::new(
        header(1),
        &Body::PingReq(PingReq {
            padding: Vec::new(),
        }),
    )
    .unwrap();
    id.sign_message(&mut ping).unwrap();
    let mut value = StoredData {
        storage_time: 1_700_000_000_000,
        lifetime: 600,
        value: StoredDataValue::Dictionary {
            key: id.node_id().0.to_vec(),
            value: DataValue {
                exists: true,
                value: b"peers".to_vec(),
            },
        },
        signature: Signature::placeholder(),
    };
    id.sign_stored(&resource, KIND_CONTENT_REGISTRATION, &mut value)
        .unwrap();
    let mut store = Message::new(
        header(2),
        &Body::StoreReq(StoreReq {
            resource: resource.clone(),
            replica_number: 0,
            kind_data: vec![StoreKindData {
                kind: KIND_CONTENT_REGISTRATION,
                generation_counter: 0,
                values: vec![value],
            }],
        }),
    )
    .unwrap();
    id.sign_message(&mut store).unwrap();
    let dir = std::env::temp_dir().join(format!("ppsp-overlay-signed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // One hex dump per message (a TCP segment each), in text2pcap's offset format.
    let mut dump = String::new();
    for (seq, m) in [(1u32, &ping), (2, &store)] {
        let mut frame = Vec::new();
        encode_data_frame(&mut frame, seq, &m.to_bytes().unwrap()).unwrap();
        for (i, chunk) in frame.chunks(16).enumerate() {
            dump.push_str(&format!("{:06x}", i * 16));
            for b in chunk {
                dump.push_str(&format!(" {b:02x}"));
            }
            dump.push('\n');
        }
        dump.push('\n');
    }
    let hex = dir.join("signed.txt");
    let pcap = dir.join("signed.pcap");
    std::fs::write(&hex, dump).unwrap();
    let out = Command::new("text2pcap")
        .args(["-T", "40000,6084"])
        .arg(&hex)
        .arg(&pcap)
        .output()
        .expect("run text2pcap (wireshark-common)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decode_as = vec!["tcp.port==6084,reload-framing".to_owned()];
    let reload = tshark_read(&pcap, &decode_as, "reload");
    let signed = tshark_read(&pcap, &decode_as, "reload.signature.identity.type == 1");
    let malformed = tshark_read(
        &pcap,
        &decode_as,
        "_ws.malformed || _ws.expert.severity >= 0x00600000",
    );
    eprintln!("{reload:#?}\n{signed:#?}\n{malformed:#?}");
    assert_eq!(reload.len(), 2, "{reload:?}");
    assert!(!signed.is_empty(), "no cert_hash signer identity decoded");
    assert!(malformed.is_empty(), "malformed: {malformed:#?}");
    let _ = std::fs::remove_dir_all(&dir);
}
