use super::*;
use crate::overlay::wire::{
    Body, DataValue, Destination, ForwardingHeader, Message, OverlayHash, PingReq, StoredDataValue,
    TransactionId,
};

fn identity() -> Identity {
    Identity::generate(NodeIdDigest::Sha256, "test.overlay").unwrap()
}

fn ping() -> Message {
    Message::new(
        ForwardingHeader::new_request(
            OverlayHash::of_name("test.overlay"),
            0,
            100,
            TransactionId(77),
            vec![Destination::Node(NodeId::from_u128(5))],
        ),
        &Body::PingReq(PingReq {
            padding: Vec::new(),
        }),
    )
    .unwrap()
}

#[test]
fn the_node_id_is_the_high_bits_of_the_digest_of_the_public_key() {
    let id = identity();
    let (_, cert) = x509_parser::parse_x509_certificate(id.certificate_der()).unwrap();
    let spki = cert.public_key().raw;
    assert_eq!(
        id.node_id().0.as_slice(),
        &Sha256::digest(spki)[..NODE_ID_LEN]
    );
    // SHA-1 when the overlay says so.
    let sha1 = PeerCert::parse(id.certificate_der(), NodeIdDigest::Sha1).unwrap();
    assert_eq!(
        sha1.node_id.0.as_slice(),
        &Sha1::digest(spki)[..NODE_ID_LEN]
    );
    // The certificate names the Node-ID in its reload:// URI.
    let text = format!("{:?}", cert.subject_alternative_name());
    assert!(text.contains(&id.node_id().to_string()), "{text}");
    // Two identities, two Node-IDs.
    assert_ne!(identity().node_id(), id.node_id());
}

#[test]
fn keys_are_written_0600_read_back_and_never_formatted() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let id = identity();
    let (key, cert) = id.write(&dir.path().join("keys")).unwrap();
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(std::fs::read_to_string(&cert)
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----"));
    let back = Identity::load(&dir.path().join("keys"), NodeIdDigest::Sha256).unwrap();
    assert_eq!(back.node_id(), id.node_id());
    assert_eq!(back.certificate_der(), id.certificate_der());
    // The Debug form names the node, not the key.
    let shown = format!("{back:?}");
    let key_text = std::fs::read_to_string(&key).unwrap();
    let key_b64: String = key_text.lines().nth(1).unwrap().to_owned();
    assert!(!shown.contains(&key_b64[..20]));
    assert!(shown.contains(&id.node_id().to_string()));
    // A key that is not the certificate's is refused.
    let other = identity();
    std::fs::write(
        dir.path().join("keys").join(CERT_FILE),
        pem_encode("CERTIFICATE", other.certificate_der()),
    )
    .unwrap();
    assert!(Identity::load(&dir.path().join("keys"), NodeIdDigest::Sha256).is_err());
}

#[test]
fn a_signed_message_verifies_and_names_its_signer() {
    let id = identity();
    let mut m = ping();
    id.sign_message(&mut m).unwrap();
    let bytes = m.to_bytes().unwrap();
    let back = Message::decode(
        &bytes,
        &crate::overlay::wire::WireConfig::new(m.header.overlay),
    )
    .unwrap();
    let mut certs = CertCache::new(NodeIdDigest::Sha256, 16);
    let signer = certs.verify_message(&back).unwrap();
    assert_eq!(signer.node_id, id.node_id());
    // Relays change TTL and lists, which the signature does not cover.
    let mut relayed = back.clone();
    relayed.header.ttl -= 1;
    relayed
        .header
        .via_list
        .push(Destination::Node(NodeId::from_u128(9)));
    assert!(certs.verify_message(&relayed).is_ok());
}

#[test]
fn tampering_replay_under_another_certificate_and_unsigned_messages_fail() {
    let a = identity();
    let b = identity();
    let mut m = ping();
    a.sign_message(&mut m).unwrap();
    let mut certs = CertCache::new(NodeIdDigest::Sha256, 16);
    // One bit of the signature flipped.
    let mut flipped = m.clone();
    let last = flipped.security.signature.value.len() - 1;
    flipped.security.signature.value[last / 2] ^= 0x01;
    assert!(certs.verify_message(&flipped).is_err());
    // One bit of the contents flipped.
    let mut changed = m.clone();
    changed.header.transaction_id = TransactionId(78);
    assert_eq!(
        certs.verify_message(&changed).unwrap_err(),
        SecurityError::BadSignature
    );
    // A's signature presented with B's certificate and identity.
    let mut replay = m.clone();
    replay.security.certificates = vec![b.generic_certificate()];
    replay.security.signature.identity = b.signer_identity();
    assert_eq!(
        certs.verify_message(&replay).unwrap_err(),
        SecurityError::BadSignature
    );
    // A's identity with no certificate anybody knows.
    let mut fresh = CertCache::new(NodeIdDigest::Sha256, 16);
    let mut bare = m.clone();
    bare.security.certificates.clear();
    assert_eq!(
        fresh.verify_message(&bare).unwrap_err(),
        SecurityError::UnknownSigner
    );
    // The unsigned placeholder.
    assert_eq!(
        certs.verify_message(&ping()).unwrap_err(),
        SecurityError::Unsigned
    );
}

#[test]
fn rsa_pkcs1_sha256_signatures_verify() {
    let key = include_bytes!("testdata/rsa2048.key.pk8");
    let cert = include_bytes!("testdata/rsa2048.crt.der");
    let kp = ring::signature::RsaKeyPair::from_pkcs8(key).unwrap();
    let mut m = ping();
    let pc = PeerCert::parse(cert, NodeIdDigest::Sha256).unwrap();
    m.security.certificates = vec![GenericCertificate {
        cert_type: CERT_X509,
        certificate: cert.to_vec(),
    }];
    m.security.signature.algorithm = RSA_PKCS1_SHA256;
    m.security.signature.identity = SignerIdentity::CertHash {
        hash_alg: HASH_SHA256,
        certificate_hash: pc.hash.to_vec(),
    };
    let input = m.signature_input().unwrap();
    let mut sig = vec![0u8; kp.public().modulus_len()];
    kp.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        &input,
        &mut sig,
    )
    .unwrap();
    m.security.signature.value = sig;
    let mut certs = CertCache::new(NodeIdDigest::Sha256, 16);
    assert_eq!(certs.verify_message(&m).unwrap().node_id, pc.node_id);
    // ECDSA claimed for an RSA key is refused.
    m.security.signature.algorithm = ECDSA_SHA256;
    assert!(certs.verify_message(&m).is_err());
}

#[test]
fn stored_values_are_signed_over_resource_kind_time_value_and_signer() {
    let id = identity();
    let resource = ResourceId::from_u128(1234);
    let kind = KindId(0xf000_0101);
    let mut v = StoredData {
        storage_time: 99,
        lifetime: 60,
        value: StoredDataValue::Dictionary {
            key: id.node_id().0.to_vec(),
            value: DataValue {
                exists: true,
                value: b"peers".to_vec(),
            },
        },
        signature: Signature::placeholder(),
    };
    id.sign_stored(&resource, kind, &mut v).unwrap();
    let mut certs = CertCache::new(NodeIdDigest::Sha256, 16);
    let carried = [id.generic_certificate()];
    assert_eq!(
        certs
            .verify_stored(&resource, kind, &v, &carried)
            .unwrap()
            .node_id,
        id.node_id()
    );
    // Every covered field matters.
    let other_resource = ResourceId::from_u128(1235);
    assert!(certs
        .verify_stored(&other_resource, kind, &v, &carried)
        .is_err());
    assert!(certs
        .verify_stored(&resource, KindId(0xf000_0102), &v, &carried)
        .is_err());
    let mut later = v.clone();
    later.storage_time += 1;
    assert!(certs
        .verify_stored(&resource, kind, &later, &carried)
        .is_err());
    // The lifetime is not covered: a replica hands the value on with less of it left.
    let mut shorter = v.clone();
    shorter.lifetime = 10;
    assert!(certs
        .verify_stored(&resource, kind, &shorter, &carried)
        .is_ok());
    let mut unsigned = v.clone();
    unsigned.signature = Signature::placeholder();
    assert_eq!(
        certs
            .verify_stored(&resource, kind, &unsigned, &carried)
            .unwrap_err(),
        SecurityError::Unsigned
    );
}

#[test]
fn the_certificate_cache_is_bounded() {
    let mut certs = CertCache::new(NodeIdDigest::Sha256, 2);
    for _ in 0..5 {
        certs.get_or_parse(identity().certificate_der()).unwrap();
    }
    assert!(certs.by_hash.len() <= 2);
    assert!(certs.get_or_parse(b"not a certificate").is_err());
}

#[test]
fn the_bad_node_list_overrides_admission() {
    let id = identity();
    let cert = PeerCert::parse(id.certificate_der(), NodeIdDigest::Sha256).unwrap();
    let other = PeerCert::parse(identity().certificate_der(), NodeIdDigest::Sha256).unwrap();
    let mut lists = tls::AdmissionLists::default();
    // No list: every valid certificate.
    assert!(lists.admits(cert.node_id, &cert.hash));
    lists.fingerprints.insert(cert.hash);
    assert!(lists.admits(cert.node_id, &cert.hash));
    assert!(!lists.admits(other.node_id, &other.hash));
    lists.node_ids.insert(other.node_id);
    assert!(lists.admits(other.node_id, &other.hash));
    lists.bad_nodes.insert(cert.node_id);
    assert!(!lists.admits(cert.node_id, &cert.hash));
}
