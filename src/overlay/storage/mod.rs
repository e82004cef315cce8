//! The RELOAD storage layer of one node (RFC 6940 §7): stored values per resource and kind with
//! their storage time, lifetime and generation counter, and the Store / Fetch / Stat semantics
//! of §7.4, including Error_Data_Too_Old, Error_Generation_Counter_Too_Low, Error_Unknown_Kind and
//! Error_Data_Too_Large.
//!
//! Sans-IO: the local time (milliseconds) is an argument. Lifetimes are counted from the local
//! time at which a value arrived, so that a value handed on to another node (replication,
//! migration) carries its remaining lifetime (RFC 6940 §7.4.1.1). Signatures are not modelled
//! here; the security block is the wire layer's business.
//!
//! Data models: single value, array and dictionary (RFC 6940 §7.2). The tracker's two kinds
//! (protocols.md §3) are dictionaries keyed by the connection tracker's Node-ID.

use crate::overlay::chord::id::ResourceId;
use crate::overlay::wire::ErrorCode;
use sha1::{Digest, Sha1};
use std::collections::BTreeMap;

use crate::overlay::wire::Signature;
pub use crate::overlay::wire::{
    ArrayRange, DataModel, DataValue, FetchAns, FetchKindResponse, FetchReq, KindId, MetaData,
    MetaDataValue, ModelSpecifier, StatAns, StatKindResponse, StatReq, StoreAns, StoreKindData,
    StoreKindResponse, StoreReq, StoredData, StoredDataSpecifier, StoredDataValue, StoredMetaData,
};

/// protocols.md §3: the CONTENT-REGISTRATION kind (dictionary keyed by connection tracker).
pub const KIND_CONTENT_REGISTRATION: KindId = KindId(0xf000_0101);
/// protocols.md §3: the PEER-STATUS kind (dictionary keyed by connection tracker).
pub const KIND_PEER_STATUS: KindId = KindId(0xf000_0102);
/// An opaque dictionary kind for operators' values (`PUT /overlay/value/<name>`, keyed by the
/// storing node's Node-ID there); its values and keys are not interpreted.
pub const KIND_OPAQUE_VALUE: KindId = KindId(0xf000_0100);

/// The syntax a kind's values must have to be stored (a value that does not decode refuses
/// the Store with Error_Invalid_Message and is never served).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueSyntax {
    /// Any bytes.
    Opaque,
    /// A ContentRegistration part whose number matches the dictionary key's
    /// (`federation::value`).
    ContentRegistration,
    /// A PeerStatusIndex naming the node of the dictionary key (`federation::value`).
    PeerStatus,
}

impl ValueSyntax {
    fn accepts(self, key: &[u8], value: &[u8]) -> bool {
        use crate::federation::value;
        match self {
            ValueSyntax::Opaque => true,
            ValueSyntax::ContentRegistration => {
                value::valid_content_registration(key, value, value::MAX_PEERS_PER_VALUE)
            }
            ValueSyntax::PeerStatus => value::valid_peer_status(key, value),
        }
    }
}

/// RFC 6940 §7.4.1.1: the array index that appends.
pub const ARRAY_APPEND: u32 = 0xffff_ffff;

/// What a node knows about a kind (from the overlay configuration, RFC 6940 §11.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KindDef {
    pub id: KindId,
    pub model: DataModel,
    /// Most values of this kind at one resource (`max-count`).
    pub max_count: u32,
    /// Largest value in bytes (`max-size`).
    pub max_size: u32,
    /// RFC 6940 §7.3 access control in the USER-NODE-MATCH style: an original Store may
    /// write only dictionary keys that begin with the storing node's Node-ID.
    pub owner_keyed: bool,
    /// The values' syntax, checked on every Store (existing values only).
    pub syntax: ValueSyntax,
}

fn model_of(v: &StoredDataValue) -> DataModel {
    match v {
        StoredDataValue::Single(_) => DataModel::SingleValue,
        StoredDataValue::Array { .. } => DataModel::Array,
        StoredDataValue::Dictionary { .. } => DataModel::Dictionary,
    }
}

fn data_of(v: &StoredDataValue) -> &DataValue {
    match v {
        StoredDataValue::Single(v) => v,
        StoredDataValue::Array { value, .. } => value,
        StoredDataValue::Dictionary { value, .. } => value,
    }
}

/// The ring position of a wire Resource-ID; Chord-RELOAD ids are exactly 16 bytes.
pub fn ring_resource(r: &crate::overlay::wire::ResourceId) -> Option<ResourceId> {
    r.as_node_id().map(|n| ResourceId(n.to_u128()))
}

/// Why a storage operation failed; each maps onto one RELOAD error code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    #[error("unknown kinds {0:?}")]
    UnknownKind(Vec<KindId>),
    /// Carries the current counters (RFC 6940 §7.4.1.2: the error_info is a StoreAns).
    #[error("generation counter too low")]
    GenerationCounterTooLow(StoreAns),
    #[error("storage time older than the stored value")]
    DataTooOld,
    #[error("value or count over the kind's limit")]
    DataTooLarge,
    #[error("not allowed")]
    Forbidden,
    #[error("malformed request: {0}")]
    InvalidMessage(&'static str),
}

impl StorageError {
    /// The RFC 6940 error code that answers this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            StorageError::UnknownKind(_) => ErrorCode::UnknownKind,
            StorageError::GenerationCounterTooLow(_) => ErrorCode::GenerationCounterTooLow,
            StorageError::DataTooOld => ErrorCode::DataTooOld,
            StorageError::DataTooLarge => ErrorCode::DataTooLarge,
            StorageError::Forbidden => ErrorCode::Forbidden,
            StorageError::InvalidMessage(_) => ErrorCode::InvalidMessage,
        }
    }
}

/// Storage limits of one node.
#[derive(Clone, Debug)]
pub struct StorageConfig {
    pub kinds: Vec<KindDef>,
    /// Most resources this node holds (original and replica). A store that would exceed it is
    /// refused with Error_Data_Too_Large rather than growing without bound.
    pub max_resources: usize,
    /// Longest lifetime a stored value keeps, seconds: a longer lifetime asked by the storing
    /// node is cut to this, so no sender can pin a value for longer.
    pub max_lifetime_secs: u32,
    /// Most bytes this node holds in all ([`value_cost`] summed over every value, original
    /// and replica); a store that would exceed it is refused with Error_Data_Too_Large.
    pub max_bytes: u64,
    /// Most bytes the original stores of one storing node (the Node-ID that sent and signed
    /// them) may hold here; over it, Error_Data_Too_Large. Replica and migration stores
    /// count in [`StorageConfig::max_bytes`] only (the responsible node checked them).
    pub max_bytes_per_storer: u64,
}

/// Bytes a stored value is charged: its value and dictionary key, plus a fixed overhead for
/// its bookkeeping (so that tiny values are not free).
pub fn value_cost(v: &StoredData) -> u64 {
    let key = match &v.value {
        StoredDataValue::Dictionary { key, .. } => key.len(),
        _ => 0,
    };
    (data_of(&v.value).value.len() + key + v.signature.value.len()) as u64 + VALUE_OVERHEAD
}

/// The fixed bookkeeping charge of one stored value, bytes.
pub const VALUE_OVERHEAD: u64 = 64;

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            kinds: vec![
                KindDef {
                    id: KIND_CONTENT_REGISTRATION,
                    model: DataModel::Dictionary,
                    max_count: 4096,
                    max_size: 64 * 1024,
                    owner_keyed: true,
                    syntax: ValueSyntax::ContentRegistration,
                },
                KindDef {
                    id: KIND_PEER_STATUS,
                    model: DataModel::Dictionary,
                    max_count: 64,
                    max_size: 1024,
                    owner_keyed: true,
                    syntax: ValueSyntax::PeerStatus,
                },
                KindDef {
                    id: KIND_OPAQUE_VALUE,
                    model: DataModel::Dictionary,
                    max_count: 4096,
                    max_size: 64 * 1024,
                    owner_keyed: false,
                    syntax: ValueSyntax::Opaque,
                },
            ],
            max_resources: 1 << 20,
            max_lifetime_secs: 86_400,
            max_bytes: 1 << 30,
            max_bytes_per_storer: 64 << 20,
        }
    }
}

/// One stored value and the local time it arrived.
#[derive(Clone, Debug)]
struct Held {
    data: StoredData,
    /// Local time (ms) at which the value expires.
    expires_at: u64,
    /// The node whose original store put it here (`None`: a replica or migration store).
    owner: Option<[u8; 16]>,
    /// [`value_cost`] of `data`.
    cost: u64,
}

impl Held {
    fn remaining_lifetime(&self, now: u64) -> u32 {
        let ms = self.expires_at.saturating_sub(now);
        u32::try_from(ms / 1000).unwrap_or(u32::MAX)
    }
    /// The value as it is handed on or answered: lifetime reduced by the time held.
    fn export(&self, now: u64) -> StoredData {
        StoredData {
            storage_time: self.data.storage_time,
            lifetime: self.remaining_lifetime(now),
            value: self.data.value.clone(),
            signature: self.data.signature.clone(),
        }
    }
}

/// The slot a value occupies within its kind.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Slot {
    Single,
    Index(u32),
    Key(Vec<u8>),
}

#[derive(Clone, Debug, Default)]
struct KindEntry {
    generation: u64,
    values: BTreeMap<Slot, Held>,
}

impl KindEntry {
    fn next_index(&self) -> u32 {
        match self.values.keys().next_back() {
            Some(Slot::Index(i)) => i.saturating_add(1),
            _ => 0,
        }
    }
}

/// The values one node holds.
#[derive(Debug)]
pub struct Storage {
    kinds: BTreeMap<KindId, KindDef>,
    max_resources: usize,
    max_lifetime_secs: u32,
    max_bytes: u64,
    max_bytes_per_storer: u64,
    resources: BTreeMap<ResourceId, BTreeMap<KindId, KindEntry>>,
    /// [`value_cost`] of everything held.
    bytes: u64,
    /// [`value_cost`] held per storing node (original stores); entries at zero are removed,
    /// so it has at most one entry per value held.
    bytes_by_storer: BTreeMap<[u8; 16], u64>,
}

impl Storage {
    pub fn new(config: StorageConfig) -> Self {
        Storage {
            kinds: config.kinds.into_iter().map(|k| (k.id, k)).collect(),
            max_resources: config.max_resources,
            max_lifetime_secs: config.max_lifetime_secs.max(1),
            max_bytes: config.max_bytes,
            max_bytes_per_storer: config.max_bytes_per_storer,
            resources: BTreeMap::new(),
            bytes: 0,
            bytes_by_storer: BTreeMap::new(),
        }
    }

    /// Bytes held in all ([`value_cost`] summed).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Bytes held for the original stores of `storer`.
    pub fn bytes_of(&self, storer: &[u8; 16]) -> u64 {
        self.bytes_by_storer.get(storer).copied().unwrap_or(0)
    }

    /// Forgets the charge of a value leaving the store.
    fn uncharge(bytes: &mut u64, by_storer: &mut BTreeMap<[u8; 16], u64>, held: &Held) {
        *bytes = bytes.saturating_sub(held.cost);
        if let Some(owner) = held.owner {
            if let std::collections::btree_map::Entry::Occupied(mut e) = by_storer.entry(owner) {
                *e.get_mut() = e.get().saturating_sub(held.cost);
                if *e.get() == 0 {
                    e.remove();
                }
            }
        }
    }

    /// RFC 6940 §7.4.1: apply a StoreReq atomically. `replica` is true for stores from other
    /// nodes (replication and migration, replica_number > 0): the generation counter is then
    /// taken from the request instead of being checked.
    ///
    /// A value whose storage_time equals the stored one and whose content is identical is
    /// accepted as a repeat (retransmission, repeated replication) and changes nothing. An
    /// original store with a nonzero generation counter other than the stored one is refused
    /// with Error_Generation_Counter_Too_Low (RFC 6940 §7.4.1.1 requires equality and names no
    /// other error for a counter ahead of the stored one); the error carries the current
    /// counters.
    pub fn store(&mut self, req: &StoreReq, now: u64) -> Result<StoreAns, StorageError> {
        self.store_as(req, None, now)
    }

    /// [`Storage::store`], charging the values of an original store to `owner` (the storing
    /// node) against [`StorageConfig::max_bytes_per_storer`].
    fn store_as(
        &mut self,
        req: &StoreReq,
        owner: Option<[u8; 16]>,
        now: u64,
    ) -> Result<StoreAns, StorageError> {
        let replica = req.replica_number != 0;
        let owner = if replica { None } else { owner };
        // Bytes the store adds in all and to its owner (replaced values are given back).
        let mut added: u64 = 0;
        let mut freed: u64 = 0;
        let mut freed_owner: u64 = 0;
        let Some(rid) = ring_resource(&req.resource) else {
            return Err(StorageError::InvalidMessage("resource id is not 16 bytes"));
        };
        // Checks first; nothing changes until every check passed.
        let unknown: Vec<KindId> = req
            .kind_data
            .iter()
            .map(|k| k.kind)
            .filter(|k| !self.kinds.contains_key(k))
            .collect();
        if !unknown.is_empty() {
            return Err(StorageError::UnknownKind(unknown));
        }
        for (i, kd) in req.kind_data.iter().enumerate() {
            if req.kind_data[..i].iter().any(|o| o.kind == kd.kind) {
                return Err(StorageError::InvalidMessage("kind repeated in one store"));
            }
        }
        if !self.resources.contains_key(&rid) && self.resources.len() >= self.max_resources {
            return Err(StorageError::DataTooLarge);
        }
        let existing = self.resources.get(&rid);
        let mut too_low = false;
        for kd in &req.kind_data {
            let Some(def) = self.kinds.get(&kd.kind) else {
                return Err(StorageError::UnknownKind(vec![kd.kind]));
            };
            let entry = existing.and_then(|r| r.get(&kd.kind));
            let current = entry.map_or(0, |e| e.generation);
            if replica {
                // RFC 6940 §7.4.1.1: replica stores MUST NOT use a generation counter of 0.
                if kd.generation_counter == 0 {
                    return Err(StorageError::InvalidMessage(
                        "replica store with generation 0",
                    ));
                }
            } else if kd.generation_counter != 0 && kd.generation_counter != current {
                too_low = true;
            }
            if def.model == DataModel::SingleValue && kd.values.len() > 1 {
                return Err(StorageError::InvalidMessage(
                    "two values for a single-value kind",
                ));
            }
            let mut new_slots = 0usize;
            for (vi, v) in kd.values.iter().enumerate() {
                if model_of(&v.value) != def.model {
                    return Err(StorageError::InvalidMessage(
                        "value of the wrong data model",
                    ));
                }
                if data_of(&v.value).value.len() > def.max_size as usize {
                    return Err(StorageError::DataTooLarge);
                }
                if let StoredDataValue::Dictionary { key, value } = &v.value {
                    if value.exists && !def.syntax.accepts(key, &value.value) {
                        return Err(StorageError::InvalidMessage(
                            "value does not decode as its kind",
                        ));
                    }
                }
                let slot = match &v.value {
                    StoredDataValue::Single(_) => Some(Slot::Single),
                    StoredDataValue::Array { index, .. } if *index == ARRAY_APPEND => None,
                    StoredDataValue::Array { index, .. } => Some(Slot::Index(*index)),
                    StoredDataValue::Dictionary { key, .. } => Some(Slot::Key(key.clone())),
                };
                let held = slot
                    .as_ref()
                    .and_then(|s| entry.and_then(|e| e.values.get(s)));
                added += value_cost(v);
                match held {
                    Some(h) => {
                        // RFC 6940 §7.4.1.1: the storage time must be greater than that of the
                        // value it replaces.
                        if v.storage_time < h.data.storage_time
                            || (v.storage_time == h.data.storage_time && v.value != h.data.value)
                        {
                            return Err(StorageError::DataTooOld);
                        }
                        freed += h.cost;
                        if owner.is_some() && h.owner == owner {
                            freed_owner += h.cost;
                        }
                    }
                    None => {
                        let repeated = slot.as_ref().is_some_and(|s| {
                            kd.values[..vi]
                                .iter()
                                .any(|o| slot_of(&o.value).as_ref() == Some(s))
                        });
                        if !repeated {
                            new_slots += 1;
                        }
                    }
                }
                if let StoredDataValue::Array { index, .. } = &v.value {
                    // Bound the sparse array so an index cannot claim unbounded space.
                    if *index != ARRAY_APPEND && *index >= def.max_count {
                        return Err(StorageError::DataTooLarge);
                    }
                }
            }
            let held_now = entry.map_or(0, |e| e.values.len());
            if held_now + new_slots > def.max_count as usize {
                return Err(StorageError::DataTooLarge);
            }
        }
        // Byte budgets: the node's, and the storing node's for an original store.
        if added > freed && self.bytes + (added - freed) > self.max_bytes {
            return Err(StorageError::DataTooLarge);
        }
        if let Some(o) = owner {
            if added > freed_owner
                && self.bytes_of(&o) + (added - freed_owner) > self.max_bytes_per_storer
            {
                return Err(StorageError::DataTooLarge);
            }
        }
        if too_low {
            let kind_responses = req
                .kind_data
                .iter()
                .map(|kd| StoreKindResponse {
                    kind: kd.kind,
                    generation_counter: existing
                        .and_then(|r| r.get(&kd.kind))
                        .map_or(0, |e| e.generation),
                    replicas: Vec::new(),
                })
                .collect();
            return Err(StorageError::GenerationCounterTooLow(StoreAns {
                kind_responses,
            }));
        }

        // Apply.
        let resource = self.resources.entry(rid).or_default();
        let mut ans = StoreAns::default();
        for kd in &req.kind_data {
            let entry = resource.entry(kd.kind).or_default();
            let mut changed = false;
            for v in &kd.values {
                let slot = match &v.value {
                    StoredDataValue::Single(_) => Slot::Single,
                    StoredDataValue::Array { index, .. } if *index == ARRAY_APPEND => {
                        Slot::Index(entry.next_index())
                    }
                    StoredDataValue::Array { index, .. } => Slot::Index(*index),
                    StoredDataValue::Dictionary { key, .. } => Slot::Key(key.clone()),
                };
                let mut data = v.clone();
                if let (Slot::Index(i), StoredDataValue::Array { index, .. }) =
                    (&slot, &mut data.value)
                {
                    *index = *i;
                }
                data.lifetime = data.lifetime.min(self.max_lifetime_secs);
                let expires_at = now.saturating_add(u64::from(data.lifetime) * 1000);
                let same = entry.values.get(&slot).is_some_and(|h| h.data == data);
                if !same {
                    changed = true;
                    let cost = value_cost(&data);
                    self.bytes += cost;
                    if let Some(o) = owner {
                        *self.bytes_by_storer.entry(o).or_insert(0) += cost;
                    }
                    if let Some(old) = entry.values.insert(
                        slot,
                        Held {
                            data,
                            expires_at,
                            owner,
                            cost,
                        },
                    ) {
                        Self::uncharge(&mut self.bytes, &mut self.bytes_by_storer, &old);
                    }
                }
            }
            if replica {
                entry.generation = kd.generation_counter;
            } else if changed || entry.generation == 0 {
                // RFC 6940 §7.4.1.1: stored values have a generation counter of 1 or more.
                entry.generation = entry.generation.saturating_add(1);
            }
            ans.kind_responses.push(StoreKindResponse {
                kind: kd.kind,
                generation_counter: entry.generation,
                replicas: Vec::new(),
            });
        }
        resource.retain(|_, e| !e.values.is_empty());
        if resource.is_empty() {
            self.resources.remove(&rid);
        }
        Ok(ans)
    }

    /// [`Storage::store`] for a Store that `originator` sent: an original store (replica
    /// number 0) of an owner-keyed kind may only write dictionary keys that begin with the
    /// originator's Node-ID (RFC 6940 §7.3, protocols.md §3), else Error_Forbidden and
    /// nothing changes. Replica and migration stores carry values the responsible node already
    /// checked.
    pub fn store_from(
        &mut self,
        req: &StoreReq,
        originator: crate::overlay::wire::NodeId,
        now: u64,
    ) -> Result<StoreAns, StorageError> {
        if req.replica_number == 0 {
            for kd in &req.kind_data {
                if !self.kinds.get(&kd.kind).is_some_and(|d| d.owner_keyed) {
                    continue;
                }
                for v in &kd.values {
                    match &v.value {
                        StoredDataValue::Dictionary { key, .. }
                            if key.starts_with(&originator.0) => {}
                        _ => return Err(StorageError::Forbidden),
                    }
                }
            }
        }
        self.store_as(req, Some(originator.0), now)
    }

    /// RFC 6940 §7.4.2: the values a FetchReq asks for. Missing values are answered with
    /// synthetic nonexistent values; a matching generation answers no values.
    pub fn fetch(&self, req: &FetchReq, now: u64) -> Result<FetchAns, StorageError> {
        self.check_kinds(req)?;
        let Some(rid) = ring_resource(&req.resource) else {
            return Err(StorageError::InvalidMessage("resource id is not 16 bytes"));
        };
        let mut ans = FetchAns::default();
        for spec in &req.specifiers {
            let entry = self.resources.get(&rid).and_then(|r| r.get(&spec.kind));
            let generation = entry.map_or(0, |e| e.generation);
            let mut values = Vec::new();
            if spec.generation == 0 || spec.generation != generation {
                for (slot, held) in self.select(entry, &spec.model)? {
                    values.push(match held {
                        Some(h) if h.expires_at > now => h.export(now),
                        _ => synthetic(&slot),
                    });
                }
            }
            ans.kind_responses.push(FetchKindResponse {
                kind: spec.kind,
                generation,
                values,
            });
        }
        Ok(ans)
    }

    /// RFC 6940 §7.4.3: metadata of the values a StatReq names.
    pub fn stat(&self, req: &StatReq, now: u64) -> Result<StatAns, StorageError> {
        let fetched = self.fetch(req, now)?;
        let kind_responses = fetched
            .kind_responses
            .into_iter()
            .map(|k| StatKindResponse {
                kind: k.kind,
                generation: k.generation,
                values: k.values.into_iter().map(metadata_of).collect(),
            })
            .collect();
        Ok(StatAns { kind_responses })
    }

    fn check_kinds(&self, req: &FetchReq) -> Result<(), StorageError> {
        let unknown: Vec<KindId> = req
            .specifiers
            .iter()
            .map(|s| s.kind)
            .filter(|k| !self.kinds.contains_key(k))
            .collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(StorageError::UnknownKind(unknown))
        }
    }

    /// The slots a model specifier selects, with what is held there.
    fn select<'a>(
        &'a self,
        entry: Option<&'a KindEntry>,
        model: &ModelSpecifier,
    ) -> Result<Vec<(Slot, Option<&'a Held>)>, StorageError> {
        let get = |s: &Slot| entry.and_then(|e| e.values.get(s));
        let mut out = Vec::new();
        match model {
            ModelSpecifier::SingleValue => out.push((Slot::Single, get(&Slot::Single))),
            ModelSpecifier::Dictionary(keys) if keys.is_empty() => {
                if let Some(e) = entry {
                    out.extend(e.values.iter().map(|(s, h)| (s.clone(), Some(h))));
                }
            }
            ModelSpecifier::Dictionary(keys) => {
                for k in keys {
                    let s = Slot::Key(k.clone());
                    let h = get(&s);
                    out.push((s, h));
                }
            }
            ModelSpecifier::Array(ranges) => {
                // `0xffffffff` names the last element; ranges are clamped to the array so a
                // request cannot make the answer grow beyond what is stored.
                let len = entry.map_or(0, |e| e.next_index());
                // Overlapping ranges (which the RFC forbids) answer each index once.
                let mut seen = std::collections::BTreeSet::new();
                for r in ranges {
                    if r.first > r.last {
                        return Err(StorageError::InvalidMessage("array range first > last"));
                    }
                    if len == 0 {
                        continue;
                    }
                    let last = r.last.min(len - 1);
                    let mut i = r.first;
                    while i <= last {
                        if seen.insert(i) {
                            let s = Slot::Index(i);
                            let h = get(&s);
                            out.push((s, h));
                        }
                        i += 1;
                    }
                }
            }
        }
        Ok(out)
    }

    /// Drop every value whose lifetime has run out.
    pub fn expire(&mut self, now: u64) {
        let (bytes, by_storer) = (&mut self.bytes, &mut self.bytes_by_storer);
        self.resources.retain(|_, kinds| {
            kinds.retain(|_, e| {
                e.values.retain(|_, h| {
                    let live = h.expires_at > now;
                    if !live {
                        Self::uncharge(bytes, by_storer, h);
                    }
                    live
                });
                !e.values.is_empty()
            });
            !kinds.is_empty()
        });
    }

    /// The resources held, in ring order.
    pub fn resources(&self) -> impl Iterator<Item = ResourceId> + '_ {
        self.resources.keys().copied()
    }

    pub fn resource_count(&self) -> usize {
        self.resources.len()
    }

    pub fn contains(&self, resource: ResourceId) -> bool {
        self.resources.contains_key(&resource)
    }

    /// A replica/migration StoreReq carrying everything held at `resource` (optionally only
    /// some kinds), with lifetimes reduced by the time held (RFC 6940 §7.4.1.1). `None` when
    /// nothing live is held.
    pub fn export(
        &self,
        resource: ResourceId,
        kinds: Option<&[KindId]>,
        replica_number: u8,
        now: u64,
    ) -> Option<StoreReq> {
        let held = self.resources.get(&resource)?;
        let mut kind_data = Vec::new();
        for (kind, entry) in held {
            if kinds.is_some_and(|ks| !ks.contains(kind)) {
                continue;
            }
            let values: Vec<StoredData> = entry
                .values
                .values()
                .filter(|h| h.expires_at > now)
                .map(|h| h.export(now))
                .collect();
            if !values.is_empty() {
                kind_data.push(StoreKindData {
                    kind: *kind,
                    generation_counter: entry.generation.max(1),
                    values,
                });
            }
        }
        if kind_data.is_empty() {
            return None;
        }
        Some(StoreReq {
            resource: resource.to_wire(),
            replica_number: replica_number.max(1),
            kind_data,
        })
    }

    /// Forget everything held at `resource`.
    pub fn remove(&mut self, resource: ResourceId) {
        if let Some(kinds) = self.resources.remove(&resource) {
            for h in kinds.values().flat_map(|e| e.values.values()) {
                Self::uncharge(&mut self.bytes, &mut self.bytes_by_storer, h);
            }
        }
    }

    /// The generation counter of a kind at a resource (0 when nothing is held).
    pub fn generation(&self, resource: ResourceId, kind: KindId) -> u64 {
        self.resources
            .get(&resource)
            .and_then(|r| r.get(&kind))
            .map_or(0, |e| e.generation)
    }
}

fn slot_of(v: &StoredDataValue) -> Option<Slot> {
    match v {
        StoredDataValue::Single(_) => Some(Slot::Single),
        StoredDataValue::Array { index, .. } if *index == ARRAY_APPEND => None,
        StoredDataValue::Array { index, .. } => Some(Slot::Index(*index)),
        StoredDataValue::Dictionary { key, .. } => Some(Slot::Key(key.clone())),
    }
}

/// RFC 6940 §7.4.2.2: the synthetic value answered for a slot that holds nothing.
fn synthetic(slot: &Slot) -> StoredData {
    let none = DataValue {
        exists: false,
        value: Vec::new(),
    };
    StoredData {
        storage_time: 0,
        lifetime: 0,
        signature: Signature::placeholder(),
        value: match slot {
            Slot::Single => StoredDataValue::Single(none),
            Slot::Index(i) => StoredDataValue::Array {
                index: *i,
                value: none,
            },
            Slot::Key(k) => StoredDataValue::Dictionary {
                key: k.clone(),
                value: none,
            },
        },
    }
}

fn metadata_of(d: StoredData) -> StoredMetaData {
    let meta = |v: &DataValue| MetaData {
        exists: v.exists,
        value_length: u32::try_from(v.value.len()).unwrap_or(u32::MAX),
        hash_algorithm: 2,
        hash_value: if v.exists {
            Sha1::digest(&v.value).to_vec()
        } else {
            Vec::new()
        },
    };
    let (value_length, metadata) = match &d.value {
        StoredDataValue::Single(v) => (v.value.len(), MetaDataValue::Single(meta(v))),
        StoredDataValue::Array { index, value } => (
            value.value.len(),
            MetaDataValue::Array {
                index: *index,
                value: meta(value),
            },
        ),
        StoredDataValue::Dictionary { key, value } => (
            value.value.len(),
            MetaDataValue::Dictionary {
                key: key.clone(),
                value: meta(value),
            },
        ),
    };
    StoredMetaData {
        value_length: u32::try_from(value_length).unwrap_or(u32::MAX),
        storage_time: d.storage_time,
        lifetime: d.lifetime,
        metadata,
    }
}

#[cfg(test)]
mod tests;
