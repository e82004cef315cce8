//! Sans-IO translation between the local copy and RELOAD storage requests: the Stores of one
//! flush (CONTENT-REGISTRATION parts and PEER-STATUS entries) and the reading of Fetch answers
//! (protocols.md §3, RFC 6940 §7.4).

use std::collections::BTreeMap;

use crate::engine::{PeerId, SwarmId};
use crate::overlay::chord::node::{ANSWER_HEADROOM_BYTES, MAX_BATCH_STORES, VALUE_OVERHEAD_BYTES};
use crate::overlay::chord::{resource_id, LocalRequest, NodeId};
use crate::overlay::storage::{
    DataValue, FetchAns, FetchReq, ModelSpecifier, StatAns, StoreKindData, StoreReq, StoredData,
    StoredDataSpecifier, StoredDataValue, KIND_CONTENT_REGISTRATION, KIND_PEER_STATUS,
};
use crate::overlay::wire::{MetaDataValue, Signature};

use super::value::{
    content_key, decode_peer_status, decode_registration, encode_peer_status, encode_registration,
    parse_content_key, PeerListData, MAX_PEERS_PER_VALUE,
};

/// Lifetime of a removal marker (a non-existent value that replaces an entry), seconds.
pub const TOMBSTONE_LIFETIME_SECS: u32 = 600;

fn dictionary(
    key: Vec<u8>,
    value: Option<Vec<u8>>,
    storage_time: u64,
    lifetime: u32,
) -> StoredData {
    let (exists, value, lifetime) = match value {
        Some(v) => (true, v, lifetime),
        None => (
            false,
            Vec::new(),
            TOMBSTONE_LIFETIME_SECS.min(lifetime.max(1)),
        ),
    };
    StoredData {
        storage_time,
        lifetime,
        value: StoredDataValue::Dictionary {
            key,
            value: DataValue { exists, value },
        },
        signature: Signature::placeholder(),
    }
}

/// The Stores that write this node's registration of `swarm` (its local members `peers`),
/// replacing the `previous_parts` parts written before: parts no longer needed are replaced by
/// removal markers. Parts are packed into Stores of at most `part_bytes` value bytes each, so
/// a registration that fits one part is one Store. Returns the requests and the part count
/// now stored (0 when the swarm has no local member any more).
pub fn swarm_stores(
    own: NodeId,
    swarm: &SwarmId,
    peers: &[PeerListData],
    previous_parts: u16,
    storage_time: u64,
    lifetime_secs: u32,
    part_bytes: usize,
) -> (Vec<LocalRequest>, u16) {
    let parts = if peers.is_empty() {
        Vec::new()
    } else {
        encode_registration(storage_time, swarm, peers, part_bytes)
    };
    let count = parts.len() as u16;
    let mut values: Vec<StoredData> = parts
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            dictionary(
                content_key(own, i as u16),
                Some(v),
                storage_time,
                lifetime_secs,
            )
        })
        .collect();
    for stale in count..previous_parts.max(if peers.is_empty() { 1 } else { 0 }) {
        values.push(dictionary(
            content_key(own, stale),
            None,
            storage_time,
            lifetime_secs,
        ));
    }
    let resource = resource_id(swarm.as_bytes());
    let mut requests = Vec::new();
    let mut batch: Vec<StoredData> = Vec::new();
    let mut batch_bytes = 0usize;
    for v in values {
        let len = match &v.value {
            StoredDataValue::Dictionary { value, .. } => value.value.len() + 40,
            _ => 40,
        };
        if !batch.is_empty() && batch_bytes + len > part_bytes {
            requests.push(store(
                resource,
                KIND_CONTENT_REGISTRATION,
                std::mem::take(&mut batch),
            ));
            batch_bytes = 0;
        }
        batch_bytes += len;
        batch.push(v);
    }
    if !batch.is_empty() {
        requests.push(store(resource, KIND_CONTENT_REGISTRATION, batch));
    }
    (requests, count)
}

/// The Store that writes (or, with `present == false`, removes) this node's PEER-STATUS entry
/// for `peer`.
pub fn status_store(
    own: NodeId,
    peer: &PeerId,
    present: bool,
    storage_time: u64,
    lifetime_secs: u32,
) -> LocalRequest {
    let value = present.then(|| encode_peer_status(own));
    store(
        resource_id(peer.as_bytes()),
        KIND_PEER_STATUS,
        vec![dictionary(
            own.0.to_vec(),
            value,
            storage_time,
            lifetime_secs,
        )],
    )
}

/// Bytes one PEER-STATUS Store takes in a Store batch, by the storing node's estimate
/// (resource, kind header, key, value, and a signature with its signer identity).
pub const STATUS_STORE_BYTES: usize = VALUE_OVERHEAD_BYTES + 64;

/// The PEER-STATUS Stores of one flush, `(peer, present, storage time)` each, as batches of
/// original Stores (see `overlay::chord::node::batch`) that each fit `max_message_bytes`
/// ([`STATUS_STORE_BYTES`] each, [`ANSWER_HEADROOM_BYTES`] kept free) and
/// [`MAX_BATCH_STORES`]. The overlay sends each batch as one message per responsible node.
pub fn status_batches(
    own: NodeId,
    entries: &[(PeerId, bool, u64)],
    lifetime_secs: u32,
    max_message_bytes: usize,
) -> Vec<Vec<StoreReq>> {
    let per_batch = (max_message_bytes.saturating_sub(ANSWER_HEADROOM_BYTES) / STATUS_STORE_BYTES)
        .clamp(1, MAX_BATCH_STORES);
    entries
        .chunks(per_batch)
        .map(|chunk| {
            chunk
                .iter()
                .map(|(peer, present, time)| {
                    let LocalRequest::Store {
                        resource,
                        kind_data,
                    } = status_store(own, peer, *present, *time, lifetime_secs)
                    else {
                        unreachable!("status_store makes a Store")
                    };
                    StoreReq {
                        resource: resource.to_wire(),
                        replica_number: 0,
                        kind_data,
                    }
                })
                .collect()
        })
        .collect()
}

fn store(
    resource: crate::overlay::chord::ResourceId,
    kind: crate::overlay::storage::KindId,
    values: Vec<StoredData>,
) -> LocalRequest {
    LocalRequest::Store {
        resource,
        kind_data: vec![StoreKindData {
            kind,
            generation_counter: 0,
            values,
        }],
    }
}

/// The Fetch of a swarm's whole CONTENT-REGISTRATION dictionary.
pub fn swarm_fetch(swarm: &SwarmId) -> LocalRequest {
    fetch(resource_id(swarm.as_bytes()), KIND_CONTENT_REGISTRATION)
}

/// The Stat of a swarm's CONTENT-REGISTRATION dictionary (RFC 6940 §7.4.3): its keys and the
/// length of each value, without the values; read when the whole dictionary does not fit one
/// Fetch answer.
pub fn swarm_stat(swarm: &SwarmId) -> LocalRequest {
    match fetch(resource_id(swarm.as_bytes()), KIND_CONTENT_REGISTRATION) {
        LocalRequest::Fetch(req) => LocalRequest::Stat(req),
        other => other,
    }
}

/// The Fetch of some entries of a swarm's CONTENT-REGISTRATION dictionary, by key.
pub fn swarm_fetch_keys(swarm: &SwarmId, keys: Vec<Vec<u8>>) -> LocalRequest {
    LocalRequest::Fetch(FetchReq {
        resource: resource_id(swarm.as_bytes()).to_wire(),
        specifiers: vec![StoredDataSpecifier {
            kind: KIND_CONTENT_REGISTRATION,
            generation: 0,
            model: ModelSpecifier::Dictionary(keys),
        }],
    })
}

/// The keys of a swarm's Stat answer worth fetching (existing values of other nodes), grouped
/// so that each group's Fetch answer fits `max_message_bytes` by the storing node's estimate
/// (value and key bytes plus [`VALUE_OVERHEAD_BYTES`] each, [`ANSWER_HEADROOM_BYTES`] kept
/// free). A value too large for any answer goes alone in its group (its Fetch then fails and
/// only that part is missing).
pub fn stat_key_groups(ans: &StatAns, own: NodeId, max_message_bytes: usize) -> Vec<Vec<Vec<u8>>> {
    let budget = max_message_bytes.saturating_sub(ANSWER_HEADROOM_BYTES);
    let mut groups: Vec<Vec<Vec<u8>>> = Vec::new();
    let mut current: Vec<Vec<u8>> = Vec::new();
    let mut used = 0usize;
    for k in ans
        .kind_responses
        .iter()
        .filter(|k| k.kind == KIND_CONTENT_REGISTRATION)
    {
        for v in &k.values {
            let MetaDataValue::Dictionary { key, value } = &v.metadata else {
                continue;
            };
            if !value.exists || !parse_content_key(key).is_some_and(|(n, _)| n != own) {
                continue;
            }
            let cost = key.len() + value.value_length as usize + VALUE_OVERHEAD_BYTES;
            if !current.is_empty() && used + cost > budget {
                groups.push(std::mem::take(&mut current));
                used = 0;
            }
            used += cost;
            current.push(key.clone());
        }
    }
    if !current.is_empty() {
        groups.push(current);
    }
    groups
}

/// The Fetch of a peer's PEER-STATUS dictionary.
pub fn status_fetch(peer: &PeerId) -> LocalRequest {
    fetch(resource_id(peer.as_bytes()), KIND_PEER_STATUS)
}

fn fetch(
    resource: crate::overlay::chord::ResourceId,
    kind: crate::overlay::storage::KindId,
) -> LocalRequest {
    LocalRequest::Fetch(FetchReq {
        resource: resource.to_wire(),
        specifiers: vec![StoredDataSpecifier {
            kind,
            generation: 0,
            model: ModelSpecifier::Dictionary(Vec::new()),
        }],
    })
}

/// The peers other connection trackers registered for `swarm`, from a Fetch answer: per
/// node, the parts of its newest version; values that do not decode, name another swarm or
/// come from `own` (the local copy is newer) are skipped. At most `max_peers` peers.
pub fn remote_peers(
    ans: &FetchAns,
    swarm: &SwarmId,
    own: NodeId,
    max_peers: usize,
) -> Vec<PeerListData> {
    // node -> (version, parts by number)
    let mut by_node: BTreeMap<NodeId, (u64, BTreeMap<u16, Vec<PeerListData>>)> = BTreeMap::new();
    for k in ans
        .kind_responses
        .iter()
        .filter(|k| k.kind == KIND_CONTENT_REGISTRATION)
    {
        for v in &k.values {
            let StoredDataValue::Dictionary { key, value } = &v.value else {
                continue;
            };
            if !value.exists {
                continue;
            }
            let Some((node, part)) = parse_content_key(key) else {
                continue;
            };
            if node == own {
                continue;
            }
            let Ok(reg) = decode_registration(&value.value, max_peers.min(MAX_PEERS_PER_VALUE))
            else {
                continue;
            };
            if reg.content_name != *swarm || reg.part != part {
                continue;
            }
            let entry = by_node
                .entry(node)
                .or_insert((reg.version, BTreeMap::new()));
            if reg.version > entry.0 {
                *entry = (reg.version, BTreeMap::new());
            }
            if reg.version == entry.0 {
                entry.1.insert(part, reg.peers);
            }
        }
    }
    let mut out = Vec::new();
    for (_, (_, parts)) in by_node {
        for (_, peers) in parts {
            for p in peers {
                if out.len() >= max_peers {
                    return out;
                }
                out.push(p);
            }
        }
    }
    out
}

/// The connection trackers a PEER-STATUS Fetch answer names, newest entry first.
pub fn status_trackers(ans: &FetchAns) -> Vec<NodeId> {
    let mut found: Vec<(u64, NodeId)> = Vec::new();
    for k in ans
        .kind_responses
        .iter()
        .filter(|k| k.kind == KIND_PEER_STATUS)
    {
        for v in &k.values {
            let StoredDataValue::Dictionary { key, value } = &v.value else {
                continue;
            };
            if !value.exists {
                continue;
            }
            if let Ok(node) = decode_peer_status(&value.value) {
                if node.0 == key.as_slice() {
                    found.push((v.storage_time, node));
                }
            }
        }
    }
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    found.into_iter().map(|(_, n)| n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{AddrType, PeerAddr, PeerMode};
    use crate::overlay::storage::{Storage, StorageConfig, StoreReq};

    fn peer(i: u32) -> PeerListData {
        PeerListData {
            peer_id: PeerId::new(format!("p{i}").as_bytes()).unwrap(),
            mode: PeerMode::Leech,
            addrs: smallvec::smallvec![PeerAddr {
                addr: format!("10.1.{}.{}:{}", i / 250, i % 250, 1000 + i % 5000)
                    .parse()
                    .unwrap(),
                priority: 1,
                kind: AddrType::Host,
                connection: None,
                asn: None,
                ppsp_pp: false,
            }],
            chunks: Vec::new(),
        }
    }

    /// Applies the Stores to one storage as originals (the storing node's view).
    fn apply(storage: &mut Storage, requests: &[LocalRequest], now: u64) {
        for r in requests {
            let LocalRequest::Store {
                resource,
                kind_data,
            } = r
            else {
                panic!("not a store");
            };
            let req = StoreReq {
                resource: resource.to_wire(),
                replica_number: 0,
                kind_data: kind_data.clone(),
            };
            storage.store(&req, now).unwrap();
        }
    }

    fn fetched(storage: &Storage, swarm: &SwarmId, now: u64) -> FetchAns {
        let LocalRequest::Fetch(req) = swarm_fetch(swarm) else {
            unreachable!()
        };
        storage.fetch(&req, now).unwrap()
    }

    #[test]
    fn a_20000_peer_swarm_is_stored_completely_in_parts_and_read_back() {
        let mut storage = Storage::new(StorageConfig::default());
        let swarm = SwarmId::new(&[9; 20]).unwrap();
        let peers: Vec<_> = (0..20_000).map(peer).collect();
        let a = NodeId([1; 16]);
        let (requests, parts) = swarm_stores(a, &swarm, &peers, 0, 1000, 3600, 4000);
        assert!(parts > 100);
        assert_eq!(
            requests.len(),
            parts as usize,
            "one part per Store at this size"
        );
        apply(&mut storage, &requests, 0);
        let back = remote_peers(
            &fetched(&storage, &swarm, 1),
            &swarm,
            NodeId([2; 16]),
            1 << 20,
        );
        assert_eq!(back.len(), 20_000);
        let mut ids: Vec<_> = back.iter().map(|p| p.peer_id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 20_000);

        // Shrinking to 3 peers replaces part 0 and removes every other part.
        let (requests, now_parts) = swarm_stores(a, &swarm, &peers[..3], parts, 2000, 3600, 4000);
        assert_eq!(now_parts, 1);
        apply(&mut storage, &requests, 1);
        let back = remote_peers(
            &fetched(&storage, &swarm, 2),
            &swarm,
            NodeId([2; 16]),
            1 << 20,
        );
        assert_eq!(back, peers[..3].to_vec());
        // A node's own entries are not read back as remote.
        assert!(remote_peers(&fetched(&storage, &swarm, 2), &swarm, a, 100).is_empty());
        // Leaving the swarm removes the entry.
        let (requests, none) = swarm_stores(a, &swarm, &[], now_parts, 3000, 3600, 4000);
        assert_eq!(none, 0);
        apply(&mut storage, &requests, 2);
        assert!(
            remote_peers(&fetched(&storage, &swarm, 3), &swarm, NodeId([2; 16]), 100).is_empty()
        );
    }

    #[test]
    fn entries_of_several_nodes_merge_and_status_names_the_tracker() {
        let mut storage = Storage::new(StorageConfig::default());
        let swarm = SwarmId::new(b"s").unwrap();
        let (ra, _) = swarm_stores(NodeId([1; 16]), &swarm, &[peer(1)], 0, 10, 60, 4000);
        let (rb, _) = swarm_stores(
            NodeId([2; 16]),
            &swarm,
            &[peer(2), peer(3)],
            0,
            10,
            60,
            4000,
        );
        apply(&mut storage, &ra, 0);
        apply(&mut storage, &rb, 0);
        let back = remote_peers(&fetched(&storage, &swarm, 1), &swarm, NodeId([3; 16]), 100);
        assert_eq!(back.len(), 3);
        // Lifetime: the values are gone after 60 s.
        let gone = remote_peers(
            &fetched(&storage, &swarm, 61_000),
            &swarm,
            NodeId([3; 16]),
            100,
        );
        assert!(gone.is_empty());

        let p = PeerId::new(b"peer").unwrap();
        apply(
            &mut storage,
            &[status_store(NodeId([1; 16]), &p, true, 5, 60)],
            0,
        );
        let LocalRequest::Fetch(req) = status_fetch(&p) else {
            unreachable!()
        };
        let ans = storage.fetch(&req, 1).unwrap();
        assert_eq!(status_trackers(&ans), vec![NodeId([1; 16])]);
        apply(
            &mut storage,
            &[status_store(NodeId([1; 16]), &p, false, 6, 60)],
            2,
        );
        let ans = storage.fetch(&req, 3).unwrap();
        assert!(status_trackers(&ans).is_empty());
    }
}
