//! Store / Fetch / Stat semantics of RFC 6940 §7.4.

use super::*;
use crate::overlay::wire::Signature;

const DICT: KindId = KIND_OPAQUE_VALUE;
const SINGLE: KindId = KindId(7);
const ARRAY: KindId = KindId(8);
const R: ResourceId = ResourceId(42);

fn wire(r: ResourceId) -> crate::overlay::wire::ResourceId {
    r.to_wire()
}

fn storage() -> Storage {
    let mut config = StorageConfig::default();
    config.kinds.push(KindDef {
        id: SINGLE,
        model: DataModel::SingleValue,
        max_count: 1,
        max_size: 16,
        owner_keyed: false,
        syntax: ValueSyntax::Opaque,
    });
    config.kinds.push(KindDef {
        id: ARRAY,
        model: DataModel::Array,
        max_count: 8,
        max_size: 16,
        owner_keyed: false,
        syntax: ValueSyntax::Opaque,
    });
    config.max_resources = 4;
    Storage::new(config)
}

fn dict_value(key: &str, value: &str, storage_time: u64, lifetime: u32) -> StoredData {
    StoredData {
        storage_time,
        lifetime,
        signature: Signature::placeholder(),
        value: StoredDataValue::Dictionary {
            key: key.as_bytes().to_vec(),
            value: DataValue {
                exists: true,
                value: value.as_bytes().to_vec(),
            },
        },
    }
}

fn store_dict(generation: u64, values: Vec<StoredData>) -> StoreReq {
    StoreReq {
        resource: wire(R),
        replica_number: 0,
        kind_data: vec![StoreKindData {
            kind: DICT,
            generation_counter: generation,
            values,
        }],
    }
}

fn fetch_all(s: &Storage, now: u64) -> Vec<StoredData> {
    let ans = s
        .fetch(
            &FetchReq {
                resource: wire(R),
                specifiers: vec![StoredDataSpecifier {
                    kind: DICT,
                    generation: 0,
                    model: ModelSpecifier::Dictionary(Vec::new()),
                }],
            },
            now,
        )
        .unwrap();
    ans.kind_responses[0].values.clone()
}

#[test]
fn dictionary_entries_merge_by_key() {
    let mut s = storage();
    s.store(&store_dict(0, vec![dict_value("a", "1", 100, 60)]), 0)
        .unwrap();
    let ans = s
        .store(&store_dict(0, vec![dict_value("b", "2", 100, 60)]), 0)
        .unwrap();
    assert_eq!(ans.kind_responses[0].generation_counter, 2);
    // Replacing "a" with a newer value keeps "b".
    s.store(&store_dict(0, vec![dict_value("a", "3", 200, 60)]), 0)
        .unwrap();
    let values = fetch_all(&s, 0);
    assert_eq!(
        values,
        vec![dict_value("a", "3", 200, 60), dict_value("b", "2", 100, 60)]
    );
}

#[test]
fn older_storage_time_is_data_too_old_and_changes_nothing() {
    let mut s = storage();
    s.store(&store_dict(0, vec![dict_value("a", "new", 500, 60)]), 0)
        .unwrap();
    let err = s
        .store(
            &store_dict(
                0,
                vec![
                    dict_value("b", "x", 900, 60),
                    dict_value("a", "old", 400, 60),
                ],
            ),
            0,
        )
        .unwrap_err();
    assert_eq!(err, StorageError::DataTooOld);
    assert_eq!(err.code(), ErrorCode::DataTooOld);
    // Atomic: "b" was not stored either.
    assert_eq!(fetch_all(&s, 0), vec![dict_value("a", "new", 500, 60)]);
    // Same time, different content is also too old; same time, same content is a repeat.
    assert!(s
        .store(&store_dict(0, vec![dict_value("a", "other", 500, 60)]), 0)
        .is_err());
    let ans = s
        .store(&store_dict(0, vec![dict_value("a", "new", 500, 60)]), 0)
        .unwrap();
    assert_eq!(ans.kind_responses[0].generation_counter, 1);
}

#[test]
fn generation_counter_must_match_for_original_stores() {
    let mut s = storage();
    let g = s
        .store(&store_dict(0, vec![dict_value("a", "1", 1, 60)]), 0)
        .unwrap();
    assert_eq!(g.kind_responses[0].generation_counter, 1);
    let g = s
        .store(&store_dict(1, vec![dict_value("a", "2", 2, 60)]), 0)
        .unwrap();
    assert_eq!(g.kind_responses[0].generation_counter, 2);
    match s.store(&store_dict(1, vec![dict_value("a", "3", 3, 60)]), 0) {
        Err(StorageError::GenerationCounterTooLow(current)) => {
            assert_eq!(current.kind_responses[0].generation_counter, 2);
            assert!(current.kind_responses[0].replicas.is_empty());
        }
        other => panic!("expected too low, got {other:?}"),
    }
    assert_eq!(fetch_all(&s, 0), vec![dict_value("a", "2", 2, 60)]);
    // Replica stores take the counter from the message and must not use 0.
    let mut replica = store_dict(17, vec![dict_value("a", "4", 4, 60)]);
    replica.replica_number = 1;
    assert_eq!(
        s.store(&replica, 0).unwrap().kind_responses[0].generation_counter,
        17
    );
    replica.kind_data[0].generation_counter = 0;
    assert!(matches!(
        s.store(&replica, 0),
        Err(StorageError::InvalidMessage(_))
    ));
}

#[test]
fn lifetime_expiry_and_export_reduce_lifetime() {
    let mut s = storage();
    s.store(
        &store_dict(
            0,
            vec![dict_value("a", "1", 1, 10), dict_value("b", "2", 1, 100)],
        ),
        1_000,
    )
    .unwrap();
    // Held for 4 s: a migrated copy carries 6 s and 96 s.
    let exported = s.export(R, None, 1, 5_000).unwrap();
    let lifetimes: Vec<u32> = exported.kind_data[0]
        .values
        .iter()
        .map(|v| v.lifetime)
        .collect();
    assert_eq!(lifetimes, vec![6, 96]);
    assert_eq!(exported.replica_number, 1);
    // Fetch answers an expired value as nonexistent even before the sweep.
    let values = fetch_all(&s, 11_000);
    assert_eq!(values.len(), 2);
    assert!(matches!(&values[0].value, StoredDataValue::Dictionary { value, .. } if !value.exists));
    s.expire(11_000);
    assert_eq!(fetch_all(&s, 11_000), vec![dict_value("b", "2", 1, 90)]);
    s.expire(101_000);
    assert!(!s.contains(R));
    assert_eq!(s.resource_count(), 0);
}

#[test]
fn unknown_kind_wrong_model_and_limits() {
    let mut s = storage();
    let mut req = store_dict(0, vec![dict_value("a", "1", 1, 10)]);
    req.kind_data[0].kind = KindId(999);
    assert_eq!(
        s.store(&req, 0),
        Err(StorageError::UnknownKind(vec![KindId(999)]))
    );
    let single = StoreReq {
        resource: wire(R),
        replica_number: 0,
        kind_data: vec![StoreKindData {
            kind: SINGLE,
            generation_counter: 0,
            values: vec![dict_value("a", "1", 1, 10)],
        }],
    };
    assert!(matches!(
        s.store(&single, 0),
        Err(StorageError::InvalidMessage(_))
    ));
    let big = store_dict(0, vec![dict_value("a", &"x".repeat(70_000), 1, 10)]);
    assert_eq!(s.store(&big, 0), Err(StorageError::DataTooLarge));
    // Resource limit: 4 resources.
    for r in 0..4u128 {
        let mut req = store_dict(0, vec![dict_value("a", "1", 1, 10)]);
        req.resource = wire(ResourceId(1000 + r));
        s.store(&req, 0).unwrap();
    }
    let mut req = store_dict(0, vec![dict_value("a", "1", 1, 10)]);
    req.resource = wire(ResourceId(5000));
    assert_eq!(s.store(&req, 0), Err(StorageError::DataTooLarge));
}

#[test]
fn single_and_array_models_and_stat() {
    let mut s = storage();
    let value = |v: &str| DataValue {
        exists: true,
        value: v.as_bytes().to_vec(),
    };
    let req = StoreReq {
        resource: wire(R),
        replica_number: 0,
        kind_data: vec![
            StoreKindData {
                kind: SINGLE,
                generation_counter: 0,
                values: vec![StoredData {
                    storage_time: 1,
                    lifetime: 60,
                    signature: Signature::placeholder(),
                    value: StoredDataValue::Single(value("abc")),
                }],
            },
            StoreKindData {
                kind: ARRAY,
                generation_counter: 0,
                values: vec![
                    StoredData {
                        storage_time: 1,
                        lifetime: 60,
                        signature: Signature::placeholder(),
                        value: StoredDataValue::Array {
                            index: 2,
                            value: value("foo"),
                        },
                    },
                    StoredData {
                        storage_time: 1,
                        lifetime: 60,
                        signature: Signature::placeholder(),
                        value: StoredDataValue::Array {
                            index: ARRAY_APPEND,
                            value: value("bar"),
                        },
                    },
                ],
            },
        ],
    };
    s.store(&req, 0).unwrap();
    let fetch = FetchReq {
        resource: wire(R),
        specifiers: vec![
            StoredDataSpecifier {
                kind: SINGLE,
                generation: 0,
                model: ModelSpecifier::SingleValue,
            },
            StoredDataSpecifier {
                kind: ARRAY,
                generation: 0,
                model: ModelSpecifier::Array(vec![ArrayRange {
                    first: 0,
                    last: ARRAY_APPEND,
                }]),
            },
        ],
    };
    let ans = s.fetch(&fetch, 0).unwrap();
    assert_eq!(ans.kind_responses[0].values.len(), 1);
    let array = &ans.kind_responses[1].values;
    // Indices 0 and 1 are synthetic gaps, 2 is "foo", the append landed at 3.
    assert_eq!(array.len(), 4);
    assert!(matches!(&array[0].value, StoredDataValue::Array { index: 0, value } if !value.exists));
    assert!(
        matches!(&array[3].value, StoredDataValue::Array { index: 3, value } if value.value == b"bar")
    );
    // A fetch with the current generation answers no values.
    let mut same = fetch.clone();
    same.specifiers[1].generation = ans.kind_responses[1].generation;
    assert!(s.fetch(&same, 0).unwrap().kind_responses[1]
        .values
        .is_empty());
    let stat = s.stat(&fetch, 0).unwrap();
    match &stat.kind_responses[0].values[0].metadata {
        MetaDataValue::Single(m) => {
            assert!(m.exists);
            assert_eq!(m.value_length, 3);
            assert_eq!(m.hash_value.len(), 20);
        }
        other => panic!("unexpected {other:?}"),
    }
    // Overlapping ranges answer each index once; ranges past the end are clamped.
    let mut overlapping = fetch.clone();
    overlapping.specifiers[1].model = ModelSpecifier::Array(vec![
        ArrayRange { first: 0, last: 2 },
        ArrayRange {
            first: 1,
            last: 1_000_000,
        },
    ]);
    let ans = s.fetch(&overlapping, 0).unwrap();
    assert_eq!(ans.kind_responses[1].values.len(), 4);
    // Reversed range is refused.
    let mut bad = fetch;
    bad.specifiers[1].model = ModelSpecifier::Array(vec![ArrayRange { first: 3, last: 1 }]);
    assert!(matches!(
        s.fetch(&bad, 0),
        Err(StorageError::InvalidMessage(_))
    ));
}

/// protocols.md §3 / RFC 6940 §7.3: the tracker kinds are keyed by the storing node; values
/// must decode as their kind; a stale store loses to a newer one.
#[test]
fn tracker_kinds_refuse_other_nodes_keys_bad_values_and_stale_stores() {
    use crate::engine::SwarmId;
    use crate::federation::value::{content_key, encode_registration};
    use crate::overlay::wire::NodeId;
    let mut s = Storage::new(StorageConfig::default());
    let a = NodeId([1; 16]);
    let b = NodeId([2; 16]);
    let swarm = SwarmId::new(b"sw").unwrap();
    let good = encode_registration(10, &swarm, &[], 4000).remove(0);
    let store = |key: Vec<u8>, value: Vec<u8>, time: u64| StoreReq {
        resource: wire(R),
        replica_number: 0,
        kind_data: vec![StoreKindData {
            kind: KIND_CONTENT_REGISTRATION,
            generation_counter: 0,
            values: vec![StoredData {
                storage_time: time,
                lifetime: 60,
                signature: Signature::placeholder(),
                value: StoredDataValue::Dictionary {
                    key,
                    value: DataValue {
                        exists: true,
                        value,
                    },
                },
            }],
        }],
    };
    // B may not write A's entry.
    assert_eq!(
        s.store_from(&store(content_key(a, 0), good.clone(), 10), b, 0),
        Err(StorageError::Forbidden)
    );
    assert_eq!(StorageError::Forbidden.code(), ErrorCode::Forbidden);
    assert!(!s.contains(R), "a refused store changes nothing");
    // Truncated, over-long and key-mismatched values are refused and never served.
    let mut long = good.clone();
    long.push(0);
    for bad in [good[..good.len() - 1].to_vec(), long] {
        assert!(matches!(
            s.store_from(&store(content_key(a, 0), bad, 10), a, 0),
            Err(StorageError::InvalidMessage(_))
        ));
    }
    assert!(matches!(
        s.store_from(&store(content_key(a, 1), good.clone(), 10), a, 0),
        Err(StorageError::InvalidMessage(_))
    ));
    assert!(!s.contains(R));
    // A's own entry is accepted; an older one then loses (Error_Data_Too_Old).
    s.store_from(&store(content_key(a, 0), good.clone(), 10), a, 0)
        .unwrap();
    let older = encode_registration(5, &swarm, &[], 4000).remove(0);
    assert_eq!(
        s.store_from(&store(content_key(a, 0), older, 5), a, 0),
        Err(StorageError::DataTooOld)
    );
    assert_eq!(StorageError::DataTooOld.code(), ErrorCode::DataTooOld);
    let fetched = s
        .fetch(
            &FetchReq {
                resource: wire(R),
                specifiers: vec![StoredDataSpecifier {
                    kind: KIND_CONTENT_REGISTRATION,
                    generation: 0,
                    model: ModelSpecifier::Dictionary(Vec::new()),
                }],
            },
            1,
        )
        .unwrap();
    assert_eq!(fetched.kind_responses[0].values.len(), 1);
    assert_eq!(fetched.kind_responses[0].values[0].storage_time, 10);
}

/// What one storing node may keep is bounded in bytes, whatever count and lifetime it asks,
/// and so is everything the node holds; each refusal is Error_Data_Too_Large and changes
/// nothing; replacing, expiring and removing values gives their bytes back.
#[test]
fn bytes_are_bounded_per_storing_node_and_in_all() {
    use crate::overlay::wire::NodeId;
    let value = "v".repeat(1000);
    let cost = value_cost(&dict_value("k000", &value, 1, 60));
    // Room for 5 values per storer and 8 in all.
    let mut s = Storage::new(StorageConfig {
        max_resources: 1000,
        max_bytes_per_storer: 5 * cost,
        max_bytes: 8 * cost,
        ..StorageConfig::default()
    });
    let (a, b) = (NodeId([1; 16]), NodeId([2; 16]));
    let at = |i: u128, key: &str, time: u64| StoreReq {
        resource: wire(ResourceId(i)),
        ..store_dict(0, vec![dict_value(key, &value, time, 4_000_000_000)])
    };
    for i in 0..5 {
        s.store_from(&at(i, "k000", 1), a, 0).unwrap();
    }
    assert_eq!(s.bytes_of(&a.0), 5 * cost);
    let before = s.resource_count();
    assert_eq!(
        s.store_from(&at(5, "k000", 1), a, 0).unwrap_err().code(),
        ErrorCode::DataTooLarge,
        "a sixth value of the same storer"
    );
    assert_eq!(s.resource_count(), before, "nothing changed");
    // Replacing one of its values costs nothing more.
    s.store_from(&at(0, "k000", 2), a, 0).unwrap();
    assert_eq!(s.bytes_of(&a.0), 5 * cost);
    // Another storer has its own budget, up to the node's.
    for i in 10..13 {
        s.store_from(&at(i, "k000", 1), b, 0).unwrap();
    }
    assert_eq!(s.bytes(), 8 * cost);
    assert_eq!(
        s.store_from(&at(13, "k000", 1), b, 0).unwrap_err().code(),
        ErrorCode::DataTooLarge,
        "the node is full"
    );
    // Replica stores count in the node's total.
    let mut replica = at(20, "k000", 1);
    replica.replica_number = 1;
    replica.kind_data[0].generation_counter = 1;
    assert!(s.store(&replica, 0).is_err());
    // Removing and expiring give the bytes back.
    s.remove(ResourceId(10));
    assert_eq!(s.bytes_of(&b.0), 2 * cost);
    assert_eq!(s.bytes(), 7 * cost);
    s.store(&replica, 0).unwrap();
    assert_eq!(s.bytes(), 8 * cost);
    s.expire(u64::MAX);
    assert_eq!(s.bytes(), 0);
    assert_eq!(s.bytes_of(&a.0), 0);
    assert_eq!(s.resource_count(), 0);
}
