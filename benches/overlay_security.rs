//! Cost of RELOAD message and stored-data security per message (RFC 6940 §6.3.4, §7.1):
//! ECDSA P-256 signing and verification of a Ping and of a one-value Store, against the same
//! message encoded and decoded unsigned, so the ratio shows what security costs the overlay's
//! message path. Run with `cargo bench --bench overlay_security`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use ppsp_tracker::overlay::security::{CertCache, Identity, NodeIdDigest};
use ppsp_tracker::overlay::storage::{
    DataValue, StoreKindData, StoreReq, StoredData, StoredDataValue, KIND_CONTENT_REGISTRATION,
};
use ppsp_tracker::overlay::wire::{
    Body, Destination, ForwardingHeader, Message, OverlayHash, PingReq, ResourceId, Signature,
    TransactionId, WireConfig,
};

fn messages(id: &Identity) -> (Message, Message, ResourceId) {
    let overlay = OverlayHash::of_name("bench.overlay");
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
    let ping = Message::new(
        header(1),
        &Body::PingReq(PingReq {
            padding: Vec::new(),
        }),
    )
    .unwrap();
    let mut value = StoredData {
        storage_time: 1,
        lifetime: 600,
        value: StoredDataValue::Dictionary {
            key: id.node_id().0.to_vec(),
            value: DataValue {
                exists: true,
                value: vec![7; 200],
            },
        },
        signature: Signature::placeholder(),
    };
    id.sign_stored(&resource, KIND_CONTENT_REGISTRATION, &mut value)
        .unwrap();
    let store = Message::new(
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
    (ping, store, resource)
}

fn bench(c: &mut Criterion) {
    let id = Identity::generate(NodeIdDigest::Sha256, "bench.overlay").unwrap();
    let (ping, store, resource) = messages(&id);
    let cfg = WireConfig::new(ping.header.overlay);
    let mut g = c.benchmark_group("overlay_security");
    g.bench_function("ping_encode_decode_unsigned", |b| {
        b.iter(|| {
            let bytes = black_box(&ping).to_bytes().unwrap();
            black_box(Message::decode(&bytes, &cfg).unwrap())
        })
    });
    g.bench_function("ping_sign_encode_decode_verify", |b| {
        let mut certs = CertCache::new(NodeIdDigest::Sha256, 16);
        b.iter(|| {
            let mut m = black_box(&ping).clone();
            id.sign_message(&mut m).unwrap();
            let bytes = m.to_bytes().unwrap();
            let back = Message::decode(&bytes, &cfg).unwrap();
            black_box(certs.verify_message(&back).unwrap())
        })
    });
    g.bench_function("sign_message", |b| {
        b.iter(|| {
            let mut m = black_box(&ping).clone();
            id.sign_message(&mut m).unwrap();
            black_box(m)
        })
    });
    let mut signed = ping.clone();
    id.sign_message(&mut signed).unwrap();
    g.bench_function("verify_message", |b| {
        let mut certs = CertCache::new(NodeIdDigest::Sha256, 16);
        b.iter(|| black_box(certs.verify_message(black_box(&signed)).unwrap()))
    });
    let mut signed_store = store.clone();
    id.sign_message(&mut signed_store).unwrap();
    let Ok(Body::StoreReq(req)) = store.contents.decode_body(&vec![(
        KIND_CONTENT_REGISTRATION,
        ppsp_tracker::overlay::wire::DataModel::Dictionary,
    )]) else {
        panic!("store body");
    };
    let value = req.kind_data[0].values[0].clone();
    g.bench_function("verify_store_message_and_value", |b| {
        let mut certs = CertCache::new(NodeIdDigest::Sha256, 16);
        let carried = signed_store.security.certificates.clone();
        b.iter(|| {
            certs.verify_message(black_box(&signed_store)).unwrap();
            black_box(
                certs
                    .verify_stored(&resource, KIND_CONTENT_REGISTRATION, &value, &carried)
                    .unwrap(),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
