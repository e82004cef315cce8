//! Store batches: several original Stores, each for its own resource, carried to the node
//! responsible for all of them in one message, and their replica Stores carried to each
//! successor in one message.
//!
//! Why: a value registered per peer (the tracker's PEER-STATUS kind, protocols.md §3: resource
//! = the peer id) makes a flush of `n` changed peers `n` Stores, and each Store costs its
//! responsible node two replica Stores and three answers, every one of them signed and
//! verified (RFC 6940 §6.3.4). A batch costs one request and one answer per responsible node,
//! and one replica request and answer per successor, whatever `n`; each stored value is still
//! signed by its storing node and verified by every node that keeps it (§7.1).
//!
//! RFC 6940 has no method that stores at several resources, so the batch is carried in the
//! experimental method exp_b (§14.8, message codes 0x25/0x26) with this body, in RFC 6940's
//! presentation language:
//!
//! ```text
//! struct {
//!     StoreReq stores<0..2^32-1>;      /* RFC 6940 §7.4.1.1, each for its own resource */
//! } StoreBatchReq;                      /* exp_b_req */
//!
//! enum { stored(0), failed(1), (255) } StoreBatchStatus;
//! struct {
//!     StoreBatchStatus status;
//!     select (status) {
//!         case stored: StoreAns answer;           /* §7.4.1.2 */
//!         case failed: uint16 error_code;         /* §6.3.3.1 */
//!     };
//! } StoreBatchResult;
//! struct {
//!     StoreBatchResult results<0..2^32-1>;  /* one per store, in order */
//! } StoreBatchAns;                      /* exp_b_ans */
//! ```
//!
//! Rules:
//! - The sender groups its Stores by the node it knows to be responsible: itself, or a node of
//!   its neighbour lists whose range `(previous neighbour, node]` contains the resource. A
//!   resource outside the ranges it knows is stored with an ordinary routed Store.
//! - The receiver applies each original Store (replica number 0) whose resource it is
//!   responsible for exactly as a Store (access control, generation counters, lifetime), and
//!   answers Error_Not_Found for the others (its range moved); the sender then stores those
//!   with routed Stores. A Store for a resource it is responsible for that fails answers that
//!   Store's error. Replica Stores (replica number above 0) in a batch are checked as replica
//!   Stores are (§10.4).
//! - A batch whose message fails (no answer after the retransmissions, or an error for the
//!   whole message such as Error_Forbidden for a value that does not verify) is stored again
//!   with routed Stores, one per resource, so one bad value never costs the others.
//! - At most [`MAX_BATCH_STORES`] Stores per batch; a longer one is refused whole with
//!   Error_Invalid_Message. The message size limit (`max_message_size`) applies as to any
//!   message, so senders cut their batches to fit it.

use super::{ChordNode, Destination, ErrorCode, LocalOutcome, OpId, Purpose, Request, Response};
use crate::overlay::chord::id::in_left_open;
use crate::overlay::chord::{NodeId, ResourceId};
use crate::overlay::storage::{StoreAns, StoreReq};
use crate::overlay::wire::codec::{put_prefixed, put_u16, put_u8, Prefix, Reader};
use crate::overlay::wire::{EncodeError, KindModels, WireError};
use std::collections::BTreeMap;

/// Most Stores one batch may carry.
pub const MAX_BATCH_STORES: usize = 4096;

/// The outcome of one Store of a batch: its answer or the RFC 6940 error it got.
pub type BatchResult = Result<StoreAns, ErrorCode>;

/// A local batch in progress: each Store's outcome once known, and the parts in flight (the
/// indices of the Stores each carries).
#[derive(Debug, Default)]
pub(super) struct LocalBatch {
    results: Vec<Option<BatchResult>>,
    stores: Vec<StoreReq>,
    parts: BTreeMap<u32, (Vec<usize>, bool)>,
    next_part: u32,
}

/// Encodes an exp_b_req body.
pub fn encode_store_batch(stores: &[StoreReq]) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    put_prefixed(&mut out, Prefix::U32, "StoreBatchReq.stores", |out| {
        stores.iter().try_for_each(|s| s.encode_into(out))
    })?;
    Ok(out)
}

/// Decodes an exp_b_req body; every byte must be consumed, at most [`MAX_BATCH_STORES`].
pub fn decode_store_batch(
    bytes: &[u8],
    kinds: &dyn KindModels,
) -> Result<Vec<StoreReq>, WireError> {
    let mut r = Reader::new(bytes);
    let stores = r
        .sub_prefixed(Prefix::U32, "StoreBatchReq.stores")?
        .list("StoreBatchReq.stores", |r| StoreReq::decode(r, kinds))?;
    r.finish("StoreBatchReq")?;
    if stores.len() > MAX_BATCH_STORES {
        return Err(WireError::InvalidValue {
            field: "StoreBatchReq.stores",
        });
    }
    Ok(stores)
}

/// Encodes an exp_b_ans body.
pub fn encode_batch_results(results: &[BatchResult]) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    put_prefixed(&mut out, Prefix::U32, "StoreBatchAns.results", |out| {
        results.iter().try_for_each(|r| match r {
            Ok(a) => {
                put_u8(out, 0);
                a.encode_into(out)
            }
            Err(code) => {
                put_u8(out, 1);
                put_u16(out, code.to_u16());
                Ok(())
            }
        })
    })?;
    Ok(out)
}

/// Decodes an exp_b_ans body; every byte must be consumed.
pub fn decode_batch_results(bytes: &[u8]) -> Result<Vec<BatchResult>, WireError> {
    let mut r = Reader::new(bytes);
    let results = r.sub_prefixed(Prefix::U32, "StoreBatchAns.results")?.list(
        "StoreBatchAns.results",
        |r| match r.u8("StoreBatchResult.status")? {
            0 => Ok(Ok(StoreAns::decode(r)?)),
            1 => Ok(Err(ErrorCode::from_u16(
                r.u16("StoreBatchResult.error_code")?,
            ))),
            _ => Err(WireError::InvalidValue {
                field: "StoreBatchResult.status",
            }),
        },
    )?;
    r.finish("StoreBatchAns")?;
    if results.len() > MAX_BATCH_STORES {
        return Err(WireError::InvalidValue {
            field: "StoreBatchAns.results",
        });
    }
    Ok(results)
}

impl ChordNode {
    /// The node this node knows to be responsible for `r`: itself, or a neighbour whose range
    /// (from the neighbour before it in the chain predecessors, self, successors) holds `r`.
    fn known_responsible(&self, r: ResourceId) -> Option<NodeId> {
        if self.table.is_responsible(r.0) {
            return Some(self.table.own);
        }
        let mut chain: Vec<NodeId> = self.table.predecessors.iter().rev().copied().collect();
        chain.push(self.table.own);
        chain.extend(self.table.successors.iter().copied());
        chain
            .windows(2)
            .find(|w| w[0] != w[1] && in_left_open(r.0, w[0].to_u128(), w[1].to_u128()))
            .map(|w| w[1])
    }

    /// A local request to store `stores` (original Stores, each for its own resource).
    pub(super) fn local_store_batch(&mut self, op: OpId, stores: Vec<StoreReq>) {
        if !self.is_joined() {
            self.fail(op, ErrorCode::NotFound);
            return;
        }
        if self.pending.len() >= self.config.max_pending {
            self.fail(op, ErrorCode::InProgress);
            return;
        }
        if stores.is_empty() {
            self.complete(op, LocalOutcome::StoredBatch(Vec::new()));
            return;
        }
        let mut groups: BTreeMap<NodeId, Vec<usize>> = BTreeMap::new();
        let mut single: Vec<usize> = Vec::new();
        for (i, s) in stores.iter().enumerate() {
            match ResourceId::from_wire(&s.resource).and_then(|r| self.known_responsible(r)) {
                Some(n) => groups.entry(n).or_default().push(i),
                None => single.push(i),
            }
        }
        self.batches.insert(
            op,
            LocalBatch {
                results: vec![None; stores.len()],
                stores,
                ..LocalBatch::default()
            },
        );
        let mut parts: Vec<(Option<NodeId>, Vec<usize>)> = Vec::new();
        for (node, indices) in groups {
            if indices.len() == 1 {
                single.extend(indices);
            } else {
                parts.push((Some(node), indices));
            }
        }
        parts.extend(single.into_iter().map(|i| (None, vec![i])));
        self.dispatch(op, parts);
    }

    /// Sends the parts of local batch `op`: to a node (a batch) or routed by resource (one
    /// Store). Every part is registered before any is sent, since a part for this node is
    /// answered at once.
    fn dispatch(&mut self, op: OpId, parts: Vec<(Option<NodeId>, Vec<usize>)>) {
        let Some(b) = self.batches.get_mut(&op) else {
            return;
        };
        let mut out: Vec<(u32, Destination, Request)> = Vec::new();
        let mut invalid: Vec<u32> = Vec::new();
        for (to, indices) in parts {
            let part = b.next_part;
            b.next_part += 1;
            match to {
                Some(n) => {
                    let stores = indices.iter().map(|i| b.stores[*i].clone()).collect();
                    out.push((part, Destination::Node(n), Request::StoreBatch(stores)));
                    b.parts.insert(part, (indices, true));
                }
                None => {
                    let store = b.stores[indices[0]].clone();
                    match ResourceId::from_wire(&store.resource) {
                        Some(r) => {
                            out.push((part, Destination::Resource(r), Request::Store(store)))
                        }
                        None => invalid.push(part),
                    }
                    b.parts.insert(part, (indices, false));
                }
            }
        }
        for part in invalid {
            self.part_done(op, part, vec![Err(ErrorCode::InvalidMessage)]);
        }
        for (part, to, request) in out {
            self.originate(vec![to], request, Purpose::BatchPart { op, part });
        }
        self.finish_batch(op);
    }

    /// The answer (or the failure, `None`) of one part of local batch `op`.
    pub(super) fn on_batch_part(&mut self, op: OpId, part: u32, response: Option<Response>) {
        let Some((indices, batched)) = self
            .batches
            .get_mut(&op)
            .and_then(|b| b.parts.remove(&part))
        else {
            return;
        };
        let mut retry: Vec<usize> = Vec::new();
        let mut results: Vec<BatchResult> = Vec::with_capacity(indices.len());
        match response {
            Some(Response::StoreBatch(r)) if batched && r.len() == indices.len() => {
                for (i, res) in indices.iter().zip(r) {
                    if res == Err(ErrorCode::NotFound) {
                        retry.push(*i);
                    }
                    results.push(res);
                }
            }
            Some(Response::Store(a)) if !batched => results.push(Ok(a)),
            Some(Response::Error { code, .. }) if !batched => results.push(Err(code)),
            None if !batched => results.push(Err(ErrorCode::RequestTimeout)),
            // A batch that failed as a whole: each Store goes again on its own.
            _ if batched => {
                retry.clone_from(&indices);
                results = vec![Err(ErrorCode::NotFound); indices.len()];
            }
            _ => results.push(Err(ErrorCode::InvalidMessage)),
        }
        if let Some(b) = self.batches.get_mut(&op) {
            for (i, res) in indices.iter().zip(results) {
                b.results[*i] = Some(res);
            }
        }
        if retry.is_empty() {
            self.finish_batch(op);
        } else {
            self.dispatch(op, retry.into_iter().map(|i| (None, vec![i])).collect());
        }
    }

    fn part_done(&mut self, op: OpId, part: u32, results: Vec<BatchResult>) {
        if let Some(b) = self.batches.get_mut(&op) {
            if let Some((indices, _)) = b.parts.remove(&part) {
                for (i, res) in indices.iter().zip(results) {
                    b.results[*i] = Some(res);
                }
            }
        }
    }

    fn finish_batch(&mut self, op: OpId) {
        if self.batches.get(&op).is_some_and(|b| b.parts.is_empty()) {
            if let Some(b) = self.batches.remove(&op) {
                let results = b
                    .results
                    .into_iter()
                    .map(|r| r.unwrap_or(Err(ErrorCode::RequestTimeout)))
                    .collect();
                self.complete(op, LocalOutcome::StoredBatch(results));
            }
        }
    }

    /// Serves a received batch from `originator`: each Store as a Store, Error_Not_Found for
    /// an original Store of a resource outside this node's range; the replica Stores of the
    /// batch go to each successor in batches too.
    pub(super) fn on_store_batch(&mut self, stores: &[StoreReq], originator: NodeId) -> Response {
        if stores.len() > MAX_BATCH_STORES {
            return Response::Error {
                code: ErrorCode::InvalidMessage,
                info: super::ErrorInfo::None,
            };
        }
        let mut replicas: Vec<(NodeId, StoreReq)> = Vec::new();
        let results: Vec<BatchResult> = stores
            .iter()
            .map(|req| {
                let mine = ResourceId::from_wire(&req.resource)
                    .is_some_and(|r| req.replica_number != 0 || self.serves_resource(r));
                if !mine {
                    return Err(ErrorCode::NotFound);
                }
                match self.apply_store(req, originator, &mut replicas) {
                    Response::Store(a) => Ok(a),
                    Response::Error { code, .. } => Err(code),
                    _ => Err(ErrorCode::InvalidMessage),
                }
            })
            .collect();
        let mut by_successor: BTreeMap<NodeId, Vec<StoreReq>> = BTreeMap::new();
        for (to, req) in replicas {
            by_successor.entry(to).or_default().push(req);
        }
        for (to, reqs) in by_successor {
            self.send_replica_batch(to, reqs);
        }
        Response::StoreBatch(results)
    }

    /// Replica Stores for `to`, in batches that fit an answer's budget (a lone Store goes as
    /// an ordinary replica Store, cut into parts when it is large).
    fn send_replica_batch(&mut self, to: NodeId, reqs: Vec<StoreReq>) {
        let budget = self.answer_budget();
        let mut batch: Vec<StoreReq> = Vec::new();
        let mut used = 0usize;
        let flush = |node: &mut ChordNode, batch: &mut Vec<StoreReq>| match batch.len() {
            0 => {}
            1 => {
                let one = batch.pop().expect("one");
                node.send_replica(to, one);
            }
            _ => node.originate_direct(
                to,
                Request::StoreBatch(std::mem::take(batch)),
                Purpose::Replica(to),
            ),
        };
        for req in reqs {
            let cost = store_bytes(&req);
            if !batch.is_empty() && (used + cost > budget || batch.len() >= MAX_BATCH_STORES) {
                flush(self, &mut batch);
                used = 0;
            }
            used += cost;
            batch.push(req);
        }
        flush(self, &mut batch);
    }
}

/// Bytes a Store spends in a message, by the same estimate as answers
/// ([`super::VALUE_OVERHEAD_BYTES`] per value besides its data).
fn store_bytes(req: &StoreReq) -> usize {
    req.resource.0.len()
        + 16
        + req
            .kind_data
            .iter()
            .flat_map(|k| k.values.iter())
            .map(|v| super::stored_bytes(v) + super::VALUE_OVERHEAD_BYTES)
            .sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overlay::storage::{StoreKindResponse, KIND_PEER_STATUS};
    use crate::overlay::wire::{
        DataValue, KindId, NoKinds, ResourceId as WireResourceId, StoreKindData, StoredData,
    };
    use crate::overlay::wire::{Signature, StoredDataValue};

    struct Dict;
    impl KindModels for Dict {
        fn data_model(&self, _: KindId) -> Option<crate::overlay::wire::DataModel> {
            Some(crate::overlay::wire::DataModel::Dictionary)
        }
    }

    fn store(i: u8) -> StoreReq {
        StoreReq {
            resource: WireResourceId(vec![i; 16]),
            replica_number: 0,
            kind_data: vec![StoreKindData {
                kind: KIND_PEER_STATUS,
                generation_counter: 0,
                values: vec![StoredData {
                    storage_time: 7,
                    lifetime: 60,
                    value: StoredDataValue::Dictionary {
                        key: vec![1; 16],
                        value: DataValue {
                            exists: true,
                            value: vec![2; 16],
                        },
                    },
                    signature: Signature::placeholder(),
                }],
            }],
        }
    }

    fn ring(n: usize, seed: u64) -> crate::overlay::sim::Sim {
        use crate::overlay::chord::ChordConfig;
        use crate::overlay::sim::{Sim, SimConfig};
        let mut sim = Sim::new(SimConfig {
            seed,
            min_latency_ms: 2,
            max_latency_ms: 10,
            loss: 0.0,
            link_ack_timeout_ms: 3_000,
            // Every message goes through the byte encoding and back.
            wire_sample: 1,
            chord: ChordConfig {
                request_timeout_ms: 500,
                update_interval_ms: 5_000,
                replica_holddown_ms: 1_000,
                ..ChordConfig::default()
            },
        });
        let first = sim.add_node();
        let op = sim.local(first, super::super::LocalRequest::CreateOverlay);
        assert!(sim.run_until_complete(&[op], 1_000));
        for _ in 1..n {
            let bootstrap = sim.node(0).id();
            let i = sim.add_node();
            let op = sim.local(i, super::super::LocalRequest::Join { bootstrap });
            assert!(sim.run_until_complete(&[op], 10_000));
            sim.run_for(300);
        }
        sim.run_for(15_000);
        assert!(sim.ring_errors(3).is_empty());
        sim
    }

    fn status_store(i: u32, by: NodeId) -> StoreReq {
        let mut s = store(0);
        s.resource = WireResourceId::hash_of(format!("peer-{i}").as_bytes());
        if let StoredDataValue::Dictionary { key, value } = &mut s.kind_data[0].values[0].value {
            *key = by.0.to_vec();
            value.value = by.0.to_vec();
        }
        s
    }

    /// On a 5-node ring every node knows every range: each batch of Stores goes out in one
    /// message per responsible node (plus one replica batch per successor), every Store is
    /// kept on three nodes and gets its answer, and every message survives the byte
    /// encoding; the same Stores one by one cost several times the messages.
    #[test]
    fn a_batch_stores_every_entry_on_three_nodes_in_few_messages() {
        let mut sim = ring(5, 11);
        let by = sim.node(2).id();
        let stores: Vec<StoreReq> = (0..200).map(|i| status_store(i, by)).collect();
        let before = sim.stats().messages_sent;
        // Batches of 20 Stores fit the default 5,000-byte messages.
        let ops: Vec<OpId> = stores
            .chunks(20)
            .map(|c| sim.local(2, super::super::LocalRequest::StoreBatch(c.to_vec())))
            .collect();
        assert!(sim.run_until_complete(&ops, 10_000));
        let batched = sim.stats().messages_sent - before;
        for op in ops {
            let Some(LocalOutcome::StoredBatch(results)) = sim.outcome(op).cloned() else {
                panic!("{:?}", sim.outcome(op));
            };
            assert_eq!(results.len(), 20);
            assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
        }
        sim.run_for(1_000);
        for s in &stores {
            let r = crate::overlay::chord::ResourceId::from_wire(&s.resource).unwrap();
            assert_eq!(sim.holders(r).len(), 3, "{r:?}");
        }
        // Per batch at most one part and its answer per other node, one replica batch and
        // its answer per successor of each responsible node.
        assert!(batched <= 10 * (4 * 2 + 5 * 2 * 2), "{batched} messages");
        let before = sim.stats().messages_sent;
        let ops: Vec<OpId> = (200..400)
            .map(|i| {
                let s = status_store(i, by);
                sim.local(
                    2,
                    super::super::LocalRequest::Store {
                        resource: crate::overlay::chord::ResourceId::from_wire(&s.resource)
                            .unwrap(),
                        kind_data: s.kind_data,
                    },
                )
            })
            .collect();
        assert!(sim.run_until_complete(&ops, 10_000));
        let single = sim.stats().messages_sent - before;
        assert!(single > 3 * batched, "{single} vs {batched}");
        assert_eq!(sim.stats().wire_mismatches, 0);
    }

    /// On a 40-node ring the sender knows few ranges: Stores outside them go routed one by
    /// one, and an entry a receiver is no longer responsible for is stored all the same.
    #[test]
    fn entries_outside_the_known_ranges_are_stored_by_routed_stores() {
        let mut sim = ring(40, 5);
        let by = sim.node(7).id();
        let stores: Vec<StoreReq> = (0..120).map(|i| status_store(i, by)).collect();
        let ops: Vec<OpId> = stores
            .chunks(20)
            .map(|c| sim.local(7, super::super::LocalRequest::StoreBatch(c.to_vec())))
            .collect();
        assert!(sim.run_until_complete(&ops, 20_000));
        for op in ops {
            let Some(LocalOutcome::StoredBatch(results)) = sim.outcome(op).cloned() else {
                panic!("{:?}", sim.outcome(op));
            };
            assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
        }
        assert_eq!(sim.stats().wire_mismatches, 0);
        sim.run_for(2_000);
        for s in &stores {
            let r = crate::overlay::chord::ResourceId::from_wire(&s.resource).unwrap();
            let responsible = sim.responsible(r).unwrap();
            let i = sim.index_of(responsible).unwrap();
            assert!(sim.node(i).storage().contains(r), "{r:?}");
        }
    }

    #[test]
    fn batches_and_results_round_trip_and_bad_bodies_are_refused() {
        let stores: Vec<StoreReq> = (0..5).map(store).collect();
        let bytes = encode_store_batch(&stores).unwrap();
        assert_eq!(decode_store_batch(&bytes, &Dict).unwrap(), stores);
        for cut in [1, bytes.len() / 2, bytes.len() - 1] {
            assert!(
                decode_store_batch(&bytes[..cut], &Dict).is_err(),
                "cut {cut}"
            );
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(decode_store_batch(&long, &Dict).is_err());
        // A Kind without a known data model is refused, as in a Store.
        assert!(decode_store_batch(&bytes, &NoKinds).is_err());

        let results = vec![
            Ok(StoreAns {
                kind_responses: vec![StoreKindResponse {
                    kind: KIND_PEER_STATUS,
                    generation_counter: 3,
                    replicas: vec![NodeId([4; 16])],
                }],
            }),
            Err(ErrorCode::Forbidden),
            Err(ErrorCode::NotFound),
        ];
        let bytes = encode_batch_results(&results).unwrap();
        assert_eq!(decode_batch_results(&bytes).unwrap(), results);
        let mut bad = bytes.clone();
        bad[4] = 9;
        assert!(decode_batch_results(&bad).is_err());
        assert!(decode_batch_results(&bytes[..bytes.len() - 1]).is_err());
    }
}
