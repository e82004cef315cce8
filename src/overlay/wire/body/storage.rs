//! Bodies of the storage methods (RFC 6940 §7): Store, Fetch, Stat and Find, with the stored
//! data structures of the single-value, array and dictionary data models (§7.2).
//!
//! The data model of a value is not on the wire: it comes from the Kind's definition (§7.2,
//! §7.4.2.1). Decoders therefore take a [`KindModels`] lookup; a Kind-ID it does not know makes
//! the whole body fail with [`WireError::UnknownKinds`], listing every unknown Kind-ID (the
//! error_info of Error_Unknown_Kind, §7.4.1.2). The lengths around each Kind's data let the
//! decoder skip unknown Kinds to collect the full list.

use crate::overlay::wire::codec::{
    put_bool, put_opaque, put_prefixed, put_u32, put_u64, put_u8, Prefix, Reader,
};
use crate::overlay::wire::error::{EncodeError, WireError};
use crate::overlay::wire::ids::{KindId, NodeId, ResourceId};
use crate::overlay::wire::security::Signature;

use super::chord::{decode_node_ids, encode_node_ids};

/// The data model of a Kind (§7.2, IANA §14.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataModel {
    SingleValue,
    Array,
    Dictionary,
}

/// Tells storage decoders each Kind's data model.
pub trait KindModels {
    /// The data model of `kind`, or `None` when this node does not know the Kind.
    fn data_model(&self, kind: KindId) -> Option<DataModel>;
}

impl<F: Fn(KindId) -> Option<DataModel>> KindModels for F {
    fn data_model(&self, kind: KindId) -> Option<DataModel> {
        self(kind)
    }
}

impl<const N: usize> KindModels for [(KindId, DataModel); N] {
    fn data_model(&self, kind: KindId) -> Option<DataModel> {
        self.iter().find(|(k, _)| *k == kind).map(|(_, m)| *m)
    }
}

impl KindModels for Vec<(KindId, DataModel)> {
    fn data_model(&self, kind: KindId) -> Option<DataModel> {
        self.iter().find(|(k, _)| *k == kind).map(|(_, m)| *m)
    }
}

/// A lookup that knows no Kinds (for nodes or tests without storage).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoKinds;

impl KindModels for NoKinds {
    fn data_model(&self, _kind: KindId) -> Option<DataModel> {
        None
    }
}

/// ```text
/// struct {
///   Boolean  exists;
///   opaque   value<0..2^32-1>;
/// } DataValue;
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct DataValue {
    pub exists: bool,
    pub value: Vec<u8>,
}

/// ```text
/// struct {
///   select (DataModel) {
///     case single_value: DataValue        single_value_entry;
///     case array:        ArrayEntry       array_entry;      // { uint32 index; DataValue value; }
///     case dictionary:   DictionaryEntry  dictionary_entry; // { DictionaryKey key; DataValue value; }
///   };
/// } StoredDataValue;
/// typedef opaque DictionaryKey<0..2^16-1>;
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum StoredDataValue {
    Single(DataValue),
    Array { index: u32, value: DataValue },
    Dictionary { key: Vec<u8>, value: DataValue },
}

/// ```text
/// struct {
///   uint32           length;        // of the rest of the structure
///   uint64           storage_time;  // milliseconds since the Unix epoch
///   uint32           lifetime;      // seconds
///   StoredDataValue  value;
///   Signature        signature;
/// } StoredData;
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StoredData {
    pub storage_time: u64,
    pub lifetime: u32,
    pub value: StoredDataValue,
    pub signature: Signature,
}

/// ```text
/// struct {
///   KindId      kind;
///   uint64      generation_counter;
///   StoredData  values<0..2^32-1>;
/// } StoreKindData;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreKindData {
    pub kind: KindId,
    pub generation_counter: u64,
    pub values: Vec<StoredData>,
}

/// ```text
/// struct {
///   ResourceId     resource;
///   uint8          replica_number;   // 0 for an original store, 1.. for replicas
///   StoreKindData  kind_data<0..2^32-1>;
/// } StoreReq;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreReq {
    pub resource: ResourceId,
    pub replica_number: u8,
    pub kind_data: Vec<StoreKindData>,
}

/// ```text
/// struct {
///   KindId  kind;
///   uint64  generation_counter;
///   NodeId  replicas<0..2^16-1>;
/// } StoreKindResponse;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreKindResponse {
    pub kind: KindId,
    pub generation_counter: u64,
    pub replicas: Vec<NodeId>,
}

/// ```text
/// struct { StoreKindResponse kind_responses<0..2^16-1>; } StoreAns;
/// ```
/// Also the error_info of Error_Generation_Counter_Too_Low (§7.4.1.2).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct StoreAns {
    pub kind_responses: Vec<StoreKindResponse>,
}

/// ```text
/// struct { int32 first; int32 last; } ArrayRange;
/// ```
/// Carried as unsigned here because the RFC's "final element" marker is 0xffffffff; decoding
/// requires `first <= last` compared unsigned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ArrayRange {
    pub first: u32,
    pub last: u32,
}

/// The `model_specifier` of a [`StoredDataSpecifier`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ModelSpecifier {
    /// single_value: empty.
    SingleValue,
    /// array: `ArrayRange indices<0..2^16-1>;`
    Array(Vec<ArrayRange>),
    /// dictionary: `DictionaryKey keys<0..2^16-1>;` (empty = every key).
    Dictionary(Vec<Vec<u8>>),
}

/// ```text
/// struct {
///   KindId  kind;
///   uint64  generation;
///   uint16  length;              // of model_specifier
///   select (DataModel) {
///     case single_value: ;
///     case array:        ArrayRange     indices<0..2^16-1>;
///     case dictionary:   DictionaryKey  keys<0..2^16-1>;
///   } model_specifier;
/// } StoredDataSpecifier;
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StoredDataSpecifier {
    pub kind: KindId,
    pub generation: u64,
    pub model: ModelSpecifier,
}

/// ```text
/// struct {
///   ResourceId           resource;
///   StoredDataSpecifier  specifiers<0..2^16-1>;
/// } FetchReq;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchReq {
    pub resource: ResourceId,
    pub specifiers: Vec<StoredDataSpecifier>,
}

/// "The Stat request is identical to the Fetch request" (§7.4.3.1).
pub type StatReq = FetchReq;

/// ```text
/// struct {
///   KindId      kind;
///   uint64      generation;
///   StoredData  values<0..2^32-1>;
/// } FetchKindResponse;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchKindResponse {
    pub kind: KindId,
    pub generation: u64,
    pub values: Vec<StoredData>,
}

/// ```text
/// struct { FetchKindResponse kind_responses<0..2^32-1>; } FetchAns;
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct FetchAns {
    pub kind_responses: Vec<FetchKindResponse>,
}

/// ```text
/// struct {
///   Boolean        exists;
///   uint32         value_length;
///   HashAlgorithm  hash_algorithm;      // uint8, from TLS
///   opaque         hash_value<0..255>;
/// } MetaData;
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MetaData {
    pub exists: bool,
    pub value_length: u32,
    pub hash_algorithm: u8,
    pub hash_value: Vec<u8>,
}

/// ```text
/// struct {
///   select (DataModel) {
///     case single_value: MetaData             single_value_entry;
///     case array:        ArrayEntryMeta       array_entry;       // { uint32 index; MetaData value; }
///     case dictionary:   DictionaryEntryMeta  dictionary_entry;  // { DictionaryKey key; MetaData value; }
///   };
/// } MetaDataValue;
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MetaDataValue {
    Single(MetaData),
    Array { index: u32, value: MetaData },
    Dictionary { key: Vec<u8>, value: MetaData },
}

/// ```text
/// struct {
///   uint32         value_length;
///   uint64         storage_time;
///   uint32         lifetime;
///   MetaDataValue  metadata;
/// } StoredMetaData;
/// ```
/// `value_length` is carried as given; the structure is self-delimiting once the data model is
/// known.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StoredMetaData {
    pub value_length: u32,
    pub storage_time: u64,
    pub lifetime: u32,
    pub metadata: MetaDataValue,
}

/// ```text
/// struct {
///   KindId          kind;
///   uint64          generation;
///   StoredMetaData  values<0..2^32-1>;
/// } StatKindResponse;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatKindResponse {
    pub kind: KindId,
    pub generation: u64,
    pub values: Vec<StoredMetaData>,
}

/// ```text
/// struct { StatKindResponse kind_responses<0..2^32-1>; } StatAns;
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct StatAns {
    pub kind_responses: Vec<StatKindResponse>,
}

/// ```text
/// struct {
///   ResourceId  resource;
///   KindId      kinds<0..2^8-1>;     // each at most once
/// } FindReq;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FindReq {
    pub resource: ResourceId,
    pub kinds: Vec<KindId>,
}

/// ```text
/// struct {
///   KindId      kind;
///   ResourceId  closest;     // empty-valued 0 when none is known
/// } FindKindData;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FindKindData {
    pub kind: KindId,
    pub closest: ResourceId,
}

/// ```text
/// struct { FindKindData results<0..2^16-1>; } FindAns;
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct FindAns {
    pub results: Vec<FindKindData>,
}

// ---------------------------------------------------------------------------------------------
// Codec

/// Most unknown Kind-IDs an Error_Unknown_Kind can list: `KindId unknown_kinds<0..2^8-1>`
/// holds 63 four-byte entries.
pub const MAX_REPORTED_UNKNOWN_KINDS: usize = 63;

/// Collects unknown Kind-IDs while a body decodes, so they can be reported at once. At most
/// [`MAX_REPORTED_UNKNOWN_KINDS`] distinct ids are kept, which also keeps the duplicate check
/// cheap whatever the input holds.
#[derive(Default)]
struct UnknownKinds {
    listed: Vec<KindId>,
    any: bool,
}

impl UnknownKinds {
    fn lookup(&mut self, kinds: &dyn KindModels, kind: KindId) -> Option<DataModel> {
        let m = kinds.data_model(kind);
        if m.is_none() {
            self.any = true;
            if self.listed.len() < MAX_REPORTED_UNKNOWN_KINDS && !self.listed.contains(&kind) {
                self.listed.push(kind);
            }
        }
        m
    }

    fn finish<T>(self, v: T) -> Result<T, WireError> {
        if self.any {
            Err(WireError::UnknownKinds(self.listed))
        } else {
            Ok(v)
        }
    }
}

pub(crate) fn decode_resource(
    r: &mut Reader<'_>,
    field: &'static str,
) -> Result<ResourceId, WireError> {
    Ok(ResourceId(r.opaque(Prefix::U8, field)?.to_vec()))
}

pub(crate) fn encode_resource(
    out: &mut Vec<u8>,
    field: &'static str,
    rid: &ResourceId,
) -> Result<(), EncodeError> {
    put_opaque(out, Prefix::U8, field, &rid.0)
}

fn decode_kind(r: &mut Reader<'_>, field: &'static str) -> Result<KindId, WireError> {
    Ok(KindId(r.u32(field)?))
}

impl DataValue {
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(DataValue {
            exists: r.boolean("DataValue.exists")?,
            value: r.opaque(Prefix::U32, "DataValue.value")?.to_vec(),
        })
    }

    fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_bool(out, self.exists);
        put_opaque(out, Prefix::U32, "DataValue.value", &self.value)
    }
}

impl StoredDataValue {
    /// The data model this value belongs to.
    pub fn model(&self) -> DataModel {
        match self {
            StoredDataValue::Single(_) => DataModel::SingleValue,
            StoredDataValue::Array { .. } => DataModel::Array,
            StoredDataValue::Dictionary { .. } => DataModel::Dictionary,
        }
    }

    /// The inner DataValue, whatever the model.
    pub fn data_value(&self) -> &DataValue {
        match self {
            StoredDataValue::Single(v)
            | StoredDataValue::Array { value: v, .. }
            | StoredDataValue::Dictionary { value: v, .. } => v,
        }
    }

    pub(crate) fn decode(r: &mut Reader<'_>, model: DataModel) -> Result<Self, WireError> {
        Ok(match model {
            DataModel::SingleValue => StoredDataValue::Single(DataValue::decode(r)?),
            DataModel::Array => StoredDataValue::Array {
                index: r.u32("ArrayEntry.index")?,
                value: DataValue::decode(r)?,
            },
            DataModel::Dictionary => StoredDataValue::Dictionary {
                key: r.opaque(Prefix::U16, "DictionaryKey")?.to_vec(),
                value: DataValue::decode(r)?,
            },
        })
    }

    /// Appends the encoded value (the `StoredDataValue` input of the data signature, §7.1).
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            StoredDataValue::Single(v) => v.encode_into(out),
            StoredDataValue::Array { index, value } => {
                put_u32(out, *index);
                value.encode_into(out)
            }
            StoredDataValue::Dictionary { key, value } => {
                put_opaque(out, Prefix::U16, "DictionaryKey", key)?;
                value.encode_into(out)
            }
        }
    }
}

impl StoredData {
    pub(crate) fn decode(r: &mut Reader<'_>, model: DataModel) -> Result<Self, WireError> {
        let mut v = r.sub_prefixed(Prefix::U32, "StoredData.length")?;
        let d = StoredData {
            storage_time: v.u64("StoredData.storage_time")?,
            lifetime: v.u32("StoredData.lifetime")?,
            value: StoredDataValue::decode(&mut v, model)?,
            signature: Signature::decode(&mut v)?,
        };
        v.finish("StoredData.length")?;
        Ok(d)
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_prefixed(out, Prefix::U32, "StoredData", |out| {
            put_u64(out, self.storage_time);
            put_u32(out, self.lifetime);
            self.value.encode_into(out)?;
            self.signature.encode_into(out)
        })
    }
}

/// Decodes `StoredData values<0..2^32-1>` of one Kind, or skips it when the Kind is unknown.
fn decode_values(
    r: &mut Reader<'_>,
    kind: KindId,
    kinds: &dyn KindModels,
    unknown: &mut UnknownKinds,
    field: &'static str,
) -> Result<Vec<StoredData>, WireError> {
    let sub = r.sub_prefixed(Prefix::U32, field)?;
    match unknown.lookup(kinds, kind) {
        Some(model) => sub.list(field, |r| StoredData::decode(r, model)),
        None => Ok(Vec::new()),
    }
}

fn encode_values(
    out: &mut Vec<u8>,
    field: &'static str,
    values: &[StoredData],
) -> Result<(), EncodeError> {
    put_prefixed(out, Prefix::U32, field, |out| {
        values.iter().try_for_each(|v| v.encode_into(out))
    })
}

impl StoreReq {
    pub(crate) fn decode(r: &mut Reader<'_>, kinds: &dyn KindModels) -> Result<Self, WireError> {
        let resource = decode_resource(r, "StoreReq.resource")?;
        let replica_number = r.u8("StoreReq.replica_number")?;
        let mut unknown = UnknownKinds::default();
        let kind_data =
            r.sub_prefixed(Prefix::U32, "StoreReq.kind_data")?
                .list("StoreReq.kind_data", |r| {
                    let kind = decode_kind(r, "StoreKindData.kind")?;
                    Ok(StoreKindData {
                        kind,
                        generation_counter: r.u64("StoreKindData.generation_counter")?,
                        values: decode_values(
                            r,
                            kind,
                            kinds,
                            &mut unknown,
                            "StoreKindData.values",
                        )?,
                    })
                })?;
        unknown.finish(StoreReq {
            resource,
            replica_number,
            kind_data,
        })
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        encode_resource(out, "StoreReq.resource", &self.resource)?;
        put_u8(out, self.replica_number);
        put_prefixed(out, Prefix::U32, "StoreReq.kind_data", |out| {
            self.kind_data.iter().try_for_each(|k| {
                put_u32(out, k.kind.0);
                put_u64(out, k.generation_counter);
                encode_values(out, "StoreKindData.values", &k.values)
            })
        })
    }
}

impl StoreAns {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(StoreAns {
            kind_responses: r
                .sub_prefixed(Prefix::U16, "StoreAns.kind_responses")?
                .list("StoreAns.kind_responses", |r| {
                    Ok(StoreKindResponse {
                        kind: decode_kind(r, "StoreKindResponse.kind")?,
                        generation_counter: r.u64("StoreKindResponse.generation_counter")?,
                        replicas: decode_node_ids(r, "StoreKindResponse.replicas")?,
                    })
                })?,
        })
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_prefixed(out, Prefix::U16, "StoreAns.kind_responses", |out| {
            self.kind_responses.iter().try_for_each(|k| {
                put_u32(out, k.kind.0);
                put_u64(out, k.generation_counter);
                encode_node_ids(out, "StoreKindResponse.replicas", &k.replicas)
            })
        })
    }

    /// Decodes the error_info of an Error_Generation_Counter_Too_Low response (§7.4.1.2).
    pub fn from_error_info(info: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(info);
        let a = StoreAns::decode(&mut r)?;
        r.finish("StoreAns")?;
        Ok(a)
    }
}

impl ModelSpecifier {
    /// The data model this specifier is for.
    pub fn model(&self) -> DataModel {
        match self {
            ModelSpecifier::SingleValue => DataModel::SingleValue,
            ModelSpecifier::Array(_) => DataModel::Array,
            ModelSpecifier::Dictionary(_) => DataModel::Dictionary,
        }
    }
}

impl StoredDataSpecifier {
    /// Decodes one specifier; `None` when its Kind is unknown (recorded in `unknown`).
    fn decode(
        r: &mut Reader<'_>,
        kinds: &dyn KindModels,
        unknown: &mut UnknownKinds,
    ) -> Result<Option<Self>, WireError> {
        let kind = decode_kind(r, "StoredDataSpecifier.kind")?;
        let generation = r.u64("StoredDataSpecifier.generation")?;
        let mut v = r.sub_prefixed(Prefix::U16, "StoredDataSpecifier.length")?;
        let Some(model) = unknown.lookup(kinds, kind) else {
            return Ok(None);
        };
        let model = match model {
            DataModel::SingleValue => ModelSpecifier::SingleValue,
            DataModel::Array => ModelSpecifier::Array(
                v.sub_prefixed(Prefix::U16, "StoredDataSpecifier.indices")?
                    .list("StoredDataSpecifier.indices", |r| {
                        let range = ArrayRange {
                            first: r.u32("ArrayRange.first")?,
                            last: r.u32("ArrayRange.last")?,
                        };
                        if range.first > range.last {
                            return Err(WireError::InvalidValue {
                                field: "ArrayRange",
                            });
                        }
                        Ok(range)
                    })?,
            ),
            DataModel::Dictionary => ModelSpecifier::Dictionary(
                v.sub_prefixed(Prefix::U16, "StoredDataSpecifier.keys")?
                    .list("StoredDataSpecifier.keys", |r| {
                        Ok(r.opaque(Prefix::U16, "DictionaryKey")?.to_vec())
                    })?,
            ),
        };
        v.finish("StoredDataSpecifier.length")?;
        Ok(Some(StoredDataSpecifier {
            kind,
            generation,
            model,
        }))
    }

    fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_u32(out, self.kind.0);
        put_u64(out, self.generation);
        put_prefixed(
            out,
            Prefix::U16,
            "StoredDataSpecifier.model_specifier",
            |out| match &self.model {
                ModelSpecifier::SingleValue => Ok(()),
                ModelSpecifier::Array(ranges) => {
                    put_prefixed(out, Prefix::U16, "StoredDataSpecifier.indices", |out| {
                        for r in ranges {
                            put_u32(out, r.first);
                            put_u32(out, r.last);
                        }
                        Ok(())
                    })
                }
                ModelSpecifier::Dictionary(keys) => {
                    put_prefixed(out, Prefix::U16, "StoredDataSpecifier.keys", |out| {
                        keys.iter()
                            .try_for_each(|k| put_opaque(out, Prefix::U16, "DictionaryKey", k))
                    })
                }
            },
        )
    }
}

impl FetchReq {
    pub(crate) fn decode(r: &mut Reader<'_>, kinds: &dyn KindModels) -> Result<Self, WireError> {
        let resource = decode_resource(r, "FetchReq.resource")?;
        let mut unknown = UnknownKinds::default();
        let specifiers = r
            .sub_prefixed(Prefix::U16, "FetchReq.specifiers")?
            .list("FetchReq.specifiers", |r| {
                StoredDataSpecifier::decode(r, kinds, &mut unknown)
            })?;
        unknown.finish(FetchReq {
            resource,
            specifiers: specifiers.into_iter().flatten().collect(),
        })
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        encode_resource(out, "FetchReq.resource", &self.resource)?;
        put_prefixed(out, Prefix::U16, "FetchReq.specifiers", |out| {
            self.specifiers.iter().try_for_each(|s| s.encode_into(out))
        })
    }
}

impl FetchAns {
    pub(crate) fn decode(r: &mut Reader<'_>, kinds: &dyn KindModels) -> Result<Self, WireError> {
        let mut unknown = UnknownKinds::default();
        let kind_responses = r
            .sub_prefixed(Prefix::U32, "FetchAns.kind_responses")?
            .list("FetchAns.kind_responses", |r| {
                let kind = decode_kind(r, "FetchKindResponse.kind")?;
                Ok(FetchKindResponse {
                    kind,
                    generation: r.u64("FetchKindResponse.generation")?,
                    values: decode_values(
                        r,
                        kind,
                        kinds,
                        &mut unknown,
                        "FetchKindResponse.values",
                    )?,
                })
            })?;
        unknown.finish(FetchAns { kind_responses })
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_prefixed(out, Prefix::U32, "FetchAns.kind_responses", |out| {
            self.kind_responses.iter().try_for_each(|k| {
                put_u32(out, k.kind.0);
                put_u64(out, k.generation);
                encode_values(out, "FetchKindResponse.values", &k.values)
            })
        })
    }
}

impl MetaData {
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(MetaData {
            exists: r.boolean("MetaData.exists")?,
            value_length: r.u32("MetaData.value_length")?,
            hash_algorithm: r.u8("MetaData.hash_algorithm")?,
            hash_value: r.opaque(Prefix::U8, "MetaData.hash_value")?.to_vec(),
        })
    }

    fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_bool(out, self.exists);
        put_u32(out, self.value_length);
        put_u8(out, self.hash_algorithm);
        put_opaque(out, Prefix::U8, "MetaData.hash_value", &self.hash_value)
    }
}

impl StoredMetaData {
    fn decode(r: &mut Reader<'_>, model: DataModel) -> Result<Self, WireError> {
        Ok(StoredMetaData {
            value_length: r.u32("StoredMetaData.value_length")?,
            storage_time: r.u64("StoredMetaData.storage_time")?,
            lifetime: r.u32("StoredMetaData.lifetime")?,
            metadata: match model {
                DataModel::SingleValue => MetaDataValue::Single(MetaData::decode(r)?),
                DataModel::Array => MetaDataValue::Array {
                    index: r.u32("ArrayEntryMeta.index")?,
                    value: MetaData::decode(r)?,
                },
                DataModel::Dictionary => MetaDataValue::Dictionary {
                    key: r.opaque(Prefix::U16, "DictionaryKey")?.to_vec(),
                    value: MetaData::decode(r)?,
                },
            },
        })
    }

    fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_u32(out, self.value_length);
        put_u64(out, self.storage_time);
        put_u32(out, self.lifetime);
        match &self.metadata {
            MetaDataValue::Single(m) => m.encode_into(out),
            MetaDataValue::Array { index, value } => {
                put_u32(out, *index);
                value.encode_into(out)
            }
            MetaDataValue::Dictionary { key, value } => {
                put_opaque(out, Prefix::U16, "DictionaryKey", key)?;
                value.encode_into(out)
            }
        }
    }
}

impl StatAns {
    pub(crate) fn decode(r: &mut Reader<'_>, kinds: &dyn KindModels) -> Result<Self, WireError> {
        let mut unknown = UnknownKinds::default();
        let kind_responses = r
            .sub_prefixed(Prefix::U32, "StatAns.kind_responses")?
            .list("StatAns.kind_responses", |r| {
                let kind = decode_kind(r, "StatKindResponse.kind")?;
                let generation = r.u64("StatKindResponse.generation")?;
                let sub = r.sub_prefixed(Prefix::U32, "StatKindResponse.values")?;
                let values = match unknown.lookup(kinds, kind) {
                    Some(model) => sub.list("StatKindResponse.values", |r| {
                        StoredMetaData::decode(r, model)
                    })?,
                    None => Vec::new(),
                };
                Ok(StatKindResponse {
                    kind,
                    generation,
                    values,
                })
            })?;
        unknown.finish(StatAns { kind_responses })
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_prefixed(out, Prefix::U32, "StatAns.kind_responses", |out| {
            self.kind_responses.iter().try_for_each(|k| {
                put_u32(out, k.kind.0);
                put_u64(out, k.generation);
                put_prefixed(out, Prefix::U32, "StatKindResponse.values", |out| {
                    k.values.iter().try_for_each(|v| v.encode_into(out))
                })
            })
        })
    }
}

impl FindReq {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let resource = decode_resource(r, "FindReq.resource")?;
        let sub = r.sub_prefixed(Prefix::U8, "FindReq.kinds")?;
        if sub.remaining() % 4 != 0 {
            return Err(WireError::LengthMismatch {
                field: "FindReq.kinds",
            });
        }
        let kinds = sub.list("FindReq.kinds", |r| decode_kind(r, "FindReq.kinds"))?;
        // §7.4.4.1: each Kind-ID at most once, otherwise the request is rejected.
        for (i, k) in kinds.iter().enumerate() {
            if kinds[..i].contains(k) {
                return Err(WireError::InvalidValue {
                    field: "FindReq.kinds",
                });
            }
        }
        Ok(FindReq { resource, kinds })
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        encode_resource(out, "FindReq.resource", &self.resource)?;
        put_prefixed(out, Prefix::U8, "FindReq.kinds", |out| {
            self.kinds.iter().for_each(|k| put_u32(out, k.0));
            Ok(())
        })
    }
}

impl FindAns {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(FindAns {
            results: r.sub_prefixed(Prefix::U16, "FindAns.results")?.list(
                "FindAns.results",
                |r| {
                    Ok(FindKindData {
                        kind: decode_kind(r, "FindKindData.kind")?,
                        closest: decode_resource(r, "FindKindData.closest")?,
                    })
                },
            )?,
        })
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_prefixed(out, Prefix::U16, "FindAns.results", |out| {
            self.results.iter().try_for_each(|f| {
                put_u32(out, f.kind.0);
                encode_resource(out, "FindKindData.closest", &f.closest)
            })
        })
    }
}

/// Encodes the error_info of Error_Unknown_Kind: `KindId unknown_kinds<0..2^8-1>;` (§7.4.1.2).
pub fn encode_unknown_kinds(kinds: &[KindId]) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    put_prefixed(&mut out, Prefix::U8, "unknown_kinds", |out| {
        kinds.iter().for_each(|k| put_u32(out, k.0));
        Ok(())
    })?;
    Ok(out)
}

/// Decodes the error_info of Error_Unknown_Kind.
pub fn decode_unknown_kinds(info: &[u8]) -> Result<Vec<KindId>, WireError> {
    let mut r = Reader::new(info);
    let sub = r.sub_prefixed(Prefix::U8, "unknown_kinds")?;
    if sub.remaining() % 4 != 0 {
        return Err(WireError::LengthMismatch {
            field: "unknown_kinds",
        });
    }
    let kinds = sub.list("unknown_kinds", |r| decode_kind(r, "unknown_kinds"))?;
    r.finish("unknown_kinds")?;
    Ok(kinds)
}
