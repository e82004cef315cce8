//! The JSON shapes PPSTP messages arrive in, as serde types that borrow from the body, and the
//! lenient value types that absorb what RFC 7846's own examples do differently from its
//! schema (protocols.md §1 "Leniency"):
//! - [`OneOrMany`]: an object where an array is specified;
//! - [`Int`]: an integer written as a string;
//! - [`TxId`]: a transaction id written as a number.
//!
//! Unknown members are ignored everywhere (RFC 7846 §4.4), which is serde's default.

use std::borrow::Cow;

use smallvec::SmallVec;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize as DeriveDeserialize;

/// A JSON string, borrowed from the body unless it contains escapes.
#[derive(Debug)]
pub(super) struct Str<'a>(pub Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

impl Str<'_> {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A non-negative integer, written as a JSON number or as a string of decimal digits
/// (RFC 7846's examples write `"concurrent_links": "5"` and `"asn": "45645"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Int(pub u64);

/// Parses `1*DIGIT` into a u64; no sign, no spaces, no overflow.
pub(super) fn parse_digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Int;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a non-negative integer, as a number or a string")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Int, E> {
                Ok(Int(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Int, E> {
                u64::try_from(v)
                    .map(Int)
                    .map_err(|_| E::custom("negative integer"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Int, E> {
                parse_digits(v)
                    .map(Int)
                    .ok_or_else(|| E::custom("not an integer"))
            }
        }
        d.deserialize_any(V)
    }
}

impl Int {
    pub fn to_u32(self) -> Option<u32> {
        u32::try_from(self.0).ok()
    }
    pub fn to_u16(self) -> Option<u16> {
        u16::try_from(self.0).ok()
    }
}

/// A transaction id: a string (borrowed from the body when it has no escapes), or (leniently)
/// a number, kept as its decimal text.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct TxId<'a>(pub Cow<'a, str>);

fn number_text<T: itoa::Integer>(n: T) -> Cow<'static, str> {
    Cow::Owned(itoa::Buffer::new().format(n).to_owned())
}

impl<'de: 'a, 'a> Deserialize<'de> for TxId<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TxId<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a transaction id string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<TxId<'de>, E> {
                Ok(TxId(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TxId<'de>, E> {
                Ok(TxId(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<TxId<'de>, E> {
                Ok(TxId(Cow::Owned(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<TxId<'de>, E> {
                Ok(TxId(number_text(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<TxId<'de>, E> {
                Ok(TxId(number_text(v)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<TxId<'de>, E> {
                Ok(TxId(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_any(V)
    }
}

/// A list that may also be written as its single element (an object where the RFC 7846 schema
/// specifies an array, as in examples E1, E2, E4, E6, E7, E8). Up to two elements are kept
/// inline (no allocation).
#[derive(Debug)]
pub(super) struct OneOrMany<T>(pub SmallVec<[T; 2]>);

impl<T> Default for OneOrMany<T> {
    fn default() -> Self {
        OneOrMany(SmallVec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array or a single object")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = SmallVec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(OneOrMany(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|one| OneOrMany(smallvec::smallvec![one]))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

// ---------------------------------------------------------------------------------------------
// Requests (RFC 7846 §3.3.3, plus the PPSP extension types of protocols.md §1).

#[derive(DeriveDeserialize)]
pub(super) struct RequestEnvelope<'a> {
    #[serde(rename = "PPSPTrackerProtocol", borrow)]
    pub message: RawRequest<'a>,
}

#[derive(Default, DeriveDeserialize)]
pub(super) struct RawRequest<'a> {
    pub version: Option<Int>,
    #[serde(borrow)]
    pub request_type: Option<Str<'a>>,
    #[serde(borrow)]
    pub transaction_id: Option<TxId<'a>>,
    #[serde(borrow)]
    pub peer_id: Option<Str<'a>>,
    #[serde(borrow)]
    pub connect: Option<RawConnect<'a>>,
    #[serde(borrow)]
    pub find: Option<RawFind<'a>>,
    /// FIND's `swarm_id` written at the top level (RFC 7846 example E5).
    #[serde(borrow)]
    pub swarm_id: Option<Str<'a>>,
    /// FIND's `peer_num` written at the top level (RFC 7846 example E5).
    #[serde(borrow)]
    pub peer_num: Option<RawPeerNum<'a>>,
    #[serde(borrow)]
    pub stat_report: Option<RawStatReport<'a>>,
    #[serde(borrow)]
    pub join: Option<RawJoin<'a>>,
    #[serde(borrow)]
    pub leave: Option<RawSwarmRef<'a>>,
    #[serde(borrow)]
    pub disconnect: Option<RawDisconnect<'a>>,
    #[serde(borrow)]
    pub join_chunk: Option<RawJoinChunk<'a>>,
    #[serde(borrow)]
    pub stat_query: Option<RawStatQuery<'a>>,
}

#[derive(DeriveDeserialize)]
pub(super) struct RawPeerNum<'a> {
    pub peer_count: Option<Int>,
    #[serde(borrow)]
    pub ability_nat: Option<Str<'a>>,
    pub concurrent_links: Option<Int>,
    pub online_time: Option<Int>,
    pub upload_bandwidth: Option<Int>,
}

#[derive(DeriveDeserialize)]
pub(super) struct RawIpAddress<'a> {
    #[serde(borrow)]
    pub address_type: Str<'a>,
    #[serde(borrow)]
    pub address: Str<'a>,
}

#[derive(DeriveDeserialize)]
pub(super) struct RawPeerAddr<'a> {
    #[serde(borrow)]
    pub ip_address: RawIpAddress<'a>,
    pub port: Int,
    pub priority: Option<Int>,
    #[serde(rename = "type", borrow)]
    pub kind: Option<Str<'a>>,
    #[serde(borrow)]
    pub connection: Option<Str<'a>>,
    pub asn: Option<Int>,
    #[serde(borrow)]
    pub peer_protocol: Option<Str<'a>>,
}

#[derive(DeriveDeserialize)]
pub(super) struct RawSwarmAction<'a> {
    #[serde(borrow)]
    pub swarm_id: Str<'a>,
    #[serde(borrow)]
    pub action: Str<'a>,
    #[serde(borrow)]
    pub peer_mode: Option<Str<'a>>,
}

#[derive(DeriveDeserialize)]
pub(super) struct RawConnect<'a> {
    #[serde(borrow)]
    pub peer_num: Option<RawPeerNum<'a>>,
    #[serde(borrow, default)]
    pub peer_addr: Option<OneOrMany<RawPeerAddr<'a>>>,
    #[serde(borrow, default)]
    pub swarm_action: Option<OneOrMany<RawSwarmAction<'a>>>,
}

/// An inclusive chunk range `[start, end]`.
pub(super) type RawChunk = (Int, Int);

#[derive(DeriveDeserialize)]
pub(super) struct RawFind<'a> {
    #[serde(borrow)]
    pub swarm_id: Option<Str<'a>>,
    #[serde(borrow)]
    pub peer_num: Option<RawPeerNum<'a>>,
    pub chunks: Option<Vec<RawChunk>>,
}

#[derive(DeriveDeserialize)]
pub(super) struct RawStat<'a> {
    #[serde(borrow)]
    pub swarm_id: Option<Str<'a>>,
    pub uploaded_bytes: Option<Int>,
    pub downloaded_bytes: Option<Int>,
    pub available_bandwidth: Option<Int>,
    pub concurrent_links: Option<Int>,
}

#[derive(DeriveDeserialize)]
pub(super) struct RawStatReport<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Option<Str<'a>>,
    /// RFC 7846 example E7 writes `"Stat"`.
    #[serde(borrow, alias = "Stat", default)]
    pub stat: Option<OneOrMany<RawStat<'a>>>,
}

#[derive(DeriveDeserialize)]
pub(super) struct RawJoin<'a> {
    #[serde(borrow)]
    pub swarm_id: Str<'a>,
    #[serde(borrow)]
    pub peer_mode: Str<'a>,
    #[serde(borrow)]
    pub peer_num: Option<RawPeerNum<'a>>,
}

#[derive(DeriveDeserialize)]
pub(super) struct RawSwarmRef<'a> {
    #[serde(borrow)]
    pub swarm_id: Str<'a>,
}

#[derive(DeriveDeserialize)]
pub(super) struct RawDisconnect<'a> {
    #[serde(borrow)]
    pub swarm_id: Option<Str<'a>>,
}

#[derive(DeriveDeserialize)]
pub(super) struct RawJoinChunk<'a> {
    #[serde(borrow)]
    pub swarm_id: Str<'a>,
    pub chunks: Vec<RawChunk>,
}

#[derive(DeriveDeserialize)]
pub(super) struct RawStatQuery<'a> {
    #[serde(borrow)]
    pub swarm_id: Option<Str<'a>>,
    #[serde(borrow)]
    pub peer_id: Option<Str<'a>>,
}

// ---------------------------------------------------------------------------------------------
// Responses (RFC 7846 §3.3.4, plus our `stat_result`).

#[derive(DeriveDeserialize)]
pub(super) struct ResponseEnvelope<'a> {
    #[serde(rename = "PPSPTrackerProtocol", borrow)]
    pub message: RawResponse<'a>,
}

#[derive(DeriveDeserialize)]
pub(super) struct RawResponse<'a> {
    pub version: Int,
    pub response_type: Int,
    pub error_code: Int,
    #[serde(borrow)]
    pub transaction_id: Option<TxId<'a>>,
    #[serde(borrow)]
    pub peer_addr: Option<RawPeerAddr<'a>>,
    #[serde(borrow, default)]
    pub swarm_result: Option<OneOrMany<RawSwarmResult<'a>>>,
    #[serde(borrow)]
    pub stat_result: Option<RawStatResult<'a>>,
}

#[derive(DeriveDeserialize)]
pub(super) struct RawSwarmResult<'a> {
    #[serde(borrow)]
    pub swarm_id: Str<'a>,
    pub result: Int,
    pub error_code: Option<Int>,
    #[serde(borrow)]
    pub peer_group: Option<RawPeerGroup<'a>>,
}

#[derive(DeriveDeserialize)]
pub(super) struct RawPeerGroup<'a> {
    #[serde(borrow, default)]
    pub peer_info: OneOrMany<RawPeerInfo<'a>>,
}

#[derive(DeriveDeserialize)]
pub(super) struct RawPeerInfo<'a> {
    #[serde(borrow)]
    pub peer_id: Str<'a>,
    #[serde(borrow, default)]
    pub peer_addr: Option<OneOrMany<RawPeerAddr<'a>>>,
}

#[derive(DeriveDeserialize)]
pub(super) struct RawSwarmMode<'a> {
    #[serde(borrow)]
    pub swarm_id: Str<'a>,
    #[serde(borrow)]
    pub peer_mode: Str<'a>,
}

#[derive(DeriveDeserialize)]
pub(super) struct RawStatResult<'a> {
    #[serde(borrow)]
    pub swarm_id: Option<Str<'a>>,
    pub peers: Option<Int>,
    pub seeders: Option<Int>,
    pub leechers: Option<Int>,
    pub completed: Option<Int>,
    pub uploaded_bytes: Option<Int>,
    pub downloaded_bytes: Option<Int>,
    #[serde(borrow)]
    pub peer_id: Option<Str<'a>>,
    #[serde(borrow)]
    pub state: Option<Str<'a>>,
    pub online_time: Option<Int>,
    #[serde(borrow, default)]
    pub peer_addr: Option<OneOrMany<RawPeerAddr<'a>>>,
    #[serde(borrow, default)]
    pub swarms: Option<Vec<RawSwarmMode<'a>>>,
    #[serde(borrow)]
    pub connection_tracker: Option<Str<'a>>,
}

// ---------------------------------------------------------------------------------------------
// Salvage: what can still be read from a request that failed to decode.

/// The `version` and `transaction_id` of a request that failed to decode, as far as they could
/// be read. Filled in while parsing, so values seen before a syntax error are kept.
#[derive(Debug, Default)]
pub(super) struct Salvaged {
    pub version: Option<u64>,
    pub transaction_id: Option<String>,
}

/// Reads `version` and `transaction_id` from the envelope, skipping every other member whatever
/// its type, and keeping what was read even when the JSON turns out to be broken later on.
pub(super) fn salvage(body: &[u8]) -> Salvaged {
    let mut found = Salvaged::default();
    let mut de = serde_json::Deserializer::from_slice(body);
    // The error only says where parsing stopped; `found` holds what was read before.
    let _ = de::DeserializeSeed::deserialize(EnvelopeSeed(&mut found), &mut de);
    found
}

struct EnvelopeSeed<'s>(&'s mut Salvaged);

impl<'de> de::DeserializeSeed<'de> for EnvelopeSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for EnvelopeSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a PPSTP message")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Str>()? {
            if key.as_str() == "PPSPTrackerProtocol" {
                map.next_value_seed(MessageSeed(&mut *self.0))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

struct MessageSeed<'s>(&'s mut Salvaged);

impl<'de> de::DeserializeSeed<'de> for MessageSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for MessageSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a PPSTP message body")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Str>()? {
            match key.as_str() {
                "version" => self.0.version = map.next_value::<Anything>()?.integer,
                "transaction_id" => self.0.transaction_id = map.next_value::<Anything>()?.text,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// Any JSON value; keeps its integer or transaction-id reading when it has one.
struct Anything {
    integer: Option<u64>,
    text: Option<String>,
}

impl<'de> Deserialize<'de> for Anything {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        const NOTHING: Anything = Anything {
            integer: None,
            text: None,
        };
        impl<'de> Visitor<'de> for V {
            type Value = Anything;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Anything, E> {
                Ok(NOTHING)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Anything, E> {
                Ok(NOTHING)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Anything, E> {
                Ok(Anything {
                    integer: Some(v),
                    text: Some(number_text(v).into_owned()),
                })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Anything, E> {
                Ok(Anything {
                    integer: u64::try_from(v).ok(),
                    text: Some(number_text(v).into_owned()),
                })
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Anything, E> {
                Ok(Anything {
                    integer: None,
                    text: Some(v.to_string()),
                })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Anything, E> {
                Ok(Anything {
                    integer: parse_digits(v),
                    text: Some(v.to_owned()),
                })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Anything, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(NOTHING)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Anything, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(NOTHING)
            }
        }
        d.deserialize_any(V)
    }
}
