//! proptest strategies for every wire type, generating only values the RFC layouts can carry
//! (so that decode(encode(x)) == x must hold for each of them).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use proptest::collection::{btree_set, vec};
use proptest::prelude::*;
use proptest::strategy::Union;

use super::*;

/// Kinds the storage strategies use: 1 single value, 2 array, 3 dictionary.
pub(crate) const TEST_KINDS: [(KindId, DataModel); 3] = [
    (KindId(1), DataModel::SingleValue),
    (KindId(2), DataModel::Array),
    (KindId(3), DataModel::Dictionary),
];

pub(crate) fn test_kinds() -> &'static [(KindId, DataModel); 3] {
    &TEST_KINDS
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> + Clone {
    vec(any::<u8>(), 0..=max)
}

pub(crate) fn node_id() -> impl Strategy<Value = NodeId> + Clone {
    any::<[u8; 16]>().prop_map(NodeId)
}

fn node_ids() -> impl Strategy<Value = Vec<NodeId>> + Clone {
    vec(node_id(), 0..5)
}

pub(crate) fn resource_id() -> impl Strategy<Value = ResourceId> + Clone {
    bytes(40).prop_map(ResourceId)
}

fn routable_destination() -> impl Strategy<Value = Destination> + Clone {
    prop_oneof![
        node_id().prop_map(Destination::Node),
        bytes(30).prop_map(Destination::Opaque),
        any::<u16>().prop_map(|v| Destination::Compressed(v | 0x8000)),
    ]
}

pub(crate) fn destination() -> impl Strategy<Value = Destination> + Clone {
    prop_oneof![
        routable_destination(),
        resource_id().prop_map(Destination::Resource),
    ]
}

fn destination_list() -> impl Strategy<Value = Vec<Destination>> {
    (
        vec(routable_destination(), 0..4),
        proptest::option::of(destination()),
    )
        .prop_map(|(mut init, last)| {
            init.extend(last);
            init
        })
}

fn forwarding_option() -> impl Strategy<Value = ForwardingOption> {
    (
        1u8..=255,
        prop_oneof![Just(0u8), Just(OptionFlags::RESPONSE_COPY)],
        bytes(20),
    )
        .prop_map(|(option_type, flags, value)| ForwardingOption {
            option_type,
            flags: OptionFlags(flags),
            value,
        })
}

/// A header for a whole message (unfragmented), with TTL within the default initial-ttl.
pub(crate) fn header() -> impl Strategy<Value = ForwardingHeader> {
    (
        any::<u32>(),
        any::<u16>(),
        0u8..=100,
        any::<u64>(),
        any::<u32>(),
        vec(routable_destination(), 0..4),
        destination_list(),
        vec(forwarding_option(), 0..3),
    )
        .prop_map(
            |(overlay, seq, ttl, tid, max_resp, via_list, destination_list, options)| {
                ForwardingHeader {
                    overlay: OverlayHash(overlay),
                    configuration_sequence: seq,
                    ttl,
                    fragment: Fragment::UNFRAGMENTED,
                    transaction_id: TransactionId(tid),
                    max_response_length: max_resp,
                    via_list,
                    destination_list,
                    options,
                }
            },
        )
}

fn extension() -> impl Strategy<Value = MessageExtension> {
    (1u16..=u16::MAX, bytes(20)).prop_map(|(extension_type, contents)| MessageExtension {
        extension_type,
        critical: false,
        contents,
    })
}

pub(crate) fn extensions() -> impl Strategy<Value = Vec<MessageExtension>> {
    vec(extension(), 0..3)
}

fn signer_identity() -> impl Strategy<Value = SignerIdentity> {
    prop_oneof![
        (any::<u8>(), bytes(32)).prop_map(|(hash_alg, certificate_hash)| {
            SignerIdentity::CertHash {
                hash_alg,
                certificate_hash,
            }
        }),
        (any::<u8>(), bytes(32)).prop_map(|(hash_alg, certificate_node_id_hash)| {
            SignerIdentity::CertHashNodeId {
                hash_alg,
                certificate_node_id_hash,
            }
        }),
        Just(SignerIdentity::None),
        (4u8..=255, bytes(10)).prop_map(|(identity_type, value)| SignerIdentity::Other {
            identity_type,
            value
        }),
    ]
}

pub(crate) fn signature() -> impl Strategy<Value = Signature> {
    (any::<u8>(), any::<u8>(), signer_identity(), bytes(40)).prop_map(
        |(hash, sig, identity, value)| Signature {
            algorithm: SignatureAndHashAlgorithm {
                hash,
                signature: sig,
            },
            identity,
            value,
        },
    )
}

pub(crate) fn security_block() -> impl Strategy<Value = SecurityBlock> {
    (
        vec(
            (any::<u8>(), bytes(40)).prop_map(|(cert_type, certificate)| GenericCertificate {
                cert_type,
                certificate,
            }),
            0..3,
        ),
        signature(),
    )
        .prop_map(|(certificates, signature)| SecurityBlock {
            certificates,
            signature,
        })
}

fn ip_address_port() -> impl Strategy<Value = IpAddressPort> + Clone {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(a, p)| IpAddressPort::Ip(SocketAddr::V4(
            SocketAddrV4::new(Ipv4Addr::from(a), p)
        ))),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(a, p)| IpAddressPort::Ip(SocketAddr::V6(
            SocketAddrV6::new(Ipv6Addr::from(a), p, 0, 0)
        ))),
        (3u8..=255, bytes(20))
            .prop_map(|(address_type, data)| IpAddressPort::Other { address_type, data }),
    ]
}

fn ice_candidate() -> impl Strategy<Value = IceCandidate> {
    (
        ip_address_port(),
        1u8..=255,
        bytes(10),
        any::<u32>(),
        prop_oneof![
            Just(CandidateType::Host),
            ip_address_port()
                .prop_map(|rel_addr_port| CandidateType::ServerReflexive { rel_addr_port }),
            ip_address_port().prop_map(|rel_addr_port| CandidateType::Relayed { rel_addr_port }),
        ],
        vec(
            (bytes(8), bytes(8)).prop_map(|(name, value)| IceExtension { name, value }),
            0..3,
        ),
    )
        .prop_map(
            |(addr_port, link, foundation, priority, candidate_type, extensions)| IceCandidate {
                addr_port,
                overlay_link: OverlayLinkType(link),
                foundation,
                priority,
                candidate_type,
                extensions,
            },
        )
}

fn attach() -> impl Strategy<Value = AttachReqAns> {
    (
        bytes(16),
        bytes(16),
        bytes(8),
        vec(ice_candidate(), 0..3),
        any::<bool>(),
    )
        .prop_map(
            |(ufrag, password, role, candidates, send_update)| AttachReqAns {
                ufrag,
                password,
                role,
                candidates,
                send_update,
            },
        )
}

fn app_attach() -> impl Strategy<Value = AppAttachReqAns> {
    (
        bytes(16),
        bytes(16),
        any::<u16>(),
        bytes(8),
        vec(ice_candidate(), 0..3),
    )
        .prop_map(
            |(ufrag, password, application, role, candidates)| AppAttachReqAns {
                ufrag,
                password,
                application,
                role,
                candidates,
            },
        )
}

fn chord_update() -> impl Strategy<Value = ChordUpdate> {
    (
        any::<u32>(),
        prop_oneof![
            Just(ChordUpdateType::PeerReady),
            (node_ids(), node_ids()).prop_map(|(predecessors, successors)| {
                ChordUpdateType::Neighbors {
                    predecessors,
                    successors,
                }
            }),
            (node_ids(), node_ids(), node_ids()).prop_map(|(predecessors, successors, fingers)| {
                ChordUpdateType::Full {
                    predecessors,
                    successors,
                    fingers,
                }
            }),
        ],
    )
        .prop_map(|(uptime, update)| ChordUpdate { uptime, update })
}

fn chord_leave_data() -> impl Strategy<Value = ChordLeaveData> {
    prop_oneof![
        node_ids().prop_map(|successors| ChordLeaveData::FromSuccessor { successors }),
        node_ids().prop_map(|predecessors| ChordLeaveData::FromPredecessor { predecessors }),
    ]
}

fn probe_information() -> impl Strategy<Value = ProbeInformation> {
    prop_oneof![
        any::<u32>().prop_map(ProbeInformation::ResponsibleSet),
        any::<u32>().prop_map(ProbeInformation::NumResources),
        any::<u32>().prop_map(ProbeInformation::Uptime),
        (4u8..=255, bytes(10))
            .prop_map(|(info_type, value)| ProbeInformation::Other { info_type, value }),
    ]
}

fn config_update() -> impl Strategy<Value = ConfigUpdateReq> {
    prop_oneof![
        bytes(60).prop_map(ConfigUpdateReq::Config),
        vec(bytes(20), 0..4).prop_map(ConfigUpdateReq::Kinds),
        (3u8..=255, bytes(20))
            .prop_map(|(update_type, data)| ConfigUpdateReq::Other { update_type, data }),
    ]
}

fn data_value() -> impl Strategy<Value = DataValue> + Clone {
    (any::<bool>(), bytes(30)).prop_map(|(exists, value)| DataValue { exists, value })
}

/// A stored value of the model `kind` has in [`TEST_KINDS`].
fn stored_data_for(kind: u32) -> BoxedStrategy<StoredData> {
    let value: BoxedStrategy<StoredDataValue> = match kind {
        1 => data_value().prop_map(StoredDataValue::Single).boxed(),
        2 => (any::<u32>(), data_value())
            .prop_map(|(index, value)| StoredDataValue::Array { index, value })
            .boxed(),
        _ => (bytes(16), data_value())
            .prop_map(|(key, value)| StoredDataValue::Dictionary { key, value })
            .boxed(),
    };
    (any::<u64>(), any::<u32>(), value, signature())
        .prop_map(|(storage_time, lifetime, value, signature)| StoredData {
            storage_time,
            lifetime,
            value,
            signature,
        })
        .boxed()
}

fn kind_with_values() -> impl Strategy<Value = (KindId, u64, Vec<StoredData>)> {
    (1u32..=3, any::<u64>()).prop_flat_map(|(kind, generation)| {
        vec(stored_data_for(kind), 0..3).prop_map(move |values| (KindId(kind), generation, values))
    })
}

fn store_req() -> impl Strategy<Value = StoreReq> {
    (resource_id(), any::<u8>(), vec(kind_with_values(), 0..3)).prop_map(
        |(resource, replica_number, kinds)| StoreReq {
            resource,
            replica_number,
            kind_data: kinds
                .into_iter()
                .map(|(kind, generation_counter, values)| StoreKindData {
                    kind,
                    generation_counter,
                    values,
                })
                .collect(),
        },
    )
}

fn store_ans() -> impl Strategy<Value = StoreAns> {
    vec(
        (any::<u32>(), any::<u64>(), node_ids()).prop_map(
            |(kind, generation_counter, replicas)| StoreKindResponse {
                kind: KindId(kind),
                generation_counter,
                replicas,
            },
        ),
        0..3,
    )
    .prop_map(|kind_responses| StoreAns { kind_responses })
}

fn specifier() -> impl Strategy<Value = StoredDataSpecifier> {
    let model = prop_oneof![
        Just((1u32, ModelSpecifier::SingleValue)),
        vec(
            (any::<u32>(), any::<u32>()).prop_map(|(a, b)| ArrayRange {
                first: a.min(b),
                last: a.max(b),
            }),
            0..4
        )
        .prop_map(|r| (2, ModelSpecifier::Array(r))),
        vec(bytes(12), 0..4).prop_map(|k| (3, ModelSpecifier::Dictionary(k))),
    ];
    (model, any::<u64>()).prop_map(|((kind, model), generation)| StoredDataSpecifier {
        kind: KindId(kind),
        generation,
        model,
    })
}

fn fetch_req() -> impl Strategy<Value = FetchReq> {
    (resource_id(), vec(specifier(), 0..4)).prop_map(|(resource, specifiers)| FetchReq {
        resource,
        specifiers,
    })
}

fn fetch_ans() -> impl Strategy<Value = FetchAns> {
    vec(kind_with_values(), 0..3).prop_map(|kinds| FetchAns {
        kind_responses: kinds
            .into_iter()
            .map(|(kind, generation, values)| FetchKindResponse {
                kind,
                generation,
                values,
            })
            .collect(),
    })
}

fn meta_data() -> impl Strategy<Value = MetaData> + Clone {
    (any::<bool>(), any::<u32>(), any::<u8>(), bytes(32)).prop_map(
        |(exists, value_length, hash_algorithm, hash_value)| MetaData {
            exists,
            value_length,
            hash_algorithm,
            hash_value,
        },
    )
}

fn stat_ans() -> impl Strategy<Value = StatAns> {
    let kind_response = (1u32..=3, any::<u64>()).prop_flat_map(|(kind, generation)| {
        let value: BoxedStrategy<MetaDataValue> = match kind {
            1 => meta_data().prop_map(MetaDataValue::Single).boxed(),
            2 => (any::<u32>(), meta_data())
                .prop_map(|(index, value)| MetaDataValue::Array { index, value })
                .boxed(),
            _ => (bytes(12), meta_data())
                .prop_map(|(key, value)| MetaDataValue::Dictionary { key, value })
                .boxed(),
        };
        vec(
            (any::<u32>(), any::<u64>(), any::<u32>(), value).prop_map(
                |(value_length, storage_time, lifetime, metadata)| StoredMetaData {
                    value_length,
                    storage_time,
                    lifetime,
                    metadata,
                },
            ),
            0..3,
        )
        .prop_map(move |values| StatKindResponse {
            kind: KindId(kind),
            generation,
            values,
        })
    });
    vec(kind_response, 0..3).prop_map(|kind_responses| StatAns { kind_responses })
}

fn find_req() -> impl Strategy<Value = FindReq> {
    (resource_id(), btree_set(any::<u32>(), 0..8)).prop_map(|(resource, kinds)| FindReq {
        resource,
        kinds: kinds.into_iter().map(KindId).collect(),
    })
}

fn find_ans() -> impl Strategy<Value = FindAns> {
    vec(
        (any::<u32>(), resource_id()).prop_map(|(kind, closest)| FindKindData {
            kind: KindId(kind),
            closest,
        }),
        0..4,
    )
    .prop_map(|results| FindAns { results })
}

/// Every body variant.
pub(crate) fn body() -> BoxedStrategy<Body> {
    Union::new(vec![
        vec(1u8..=255, 0..5)
            .prop_map(|t| {
                Body::ProbeReq(ProbeReq {
                    requested_info: t.into_iter().map(ProbeInformationType).collect(),
                })
            })
            .boxed(),
        vec(probe_information(), 0..4)
            .prop_map(|probe_info| Body::ProbeAns(ProbeAns { probe_info }))
            .boxed(),
        attach().prop_map(Body::AttachReq).boxed(),
        attach().prop_map(Body::AttachAns).boxed(),
        store_req().prop_map(Body::StoreReq).boxed(),
        store_ans().prop_map(Body::StoreAns).boxed(),
        fetch_req().prop_map(Body::FetchReq).boxed(),
        fetch_ans().prop_map(Body::FetchAns).boxed(),
        find_req().prop_map(Body::FindReq).boxed(),
        find_ans().prop_map(Body::FindAns).boxed(),
        (node_id(), bytes(20))
            .prop_map(|(joining_peer_id, overlay_specific_data)| {
                Body::JoinReq(JoinReq {
                    joining_peer_id,
                    overlay_specific_data,
                })
            })
            .boxed(),
        bytes(20)
            .prop_map(|overlay_specific_data| {
                Body::JoinAns(JoinAns {
                    overlay_specific_data,
                })
            })
            .boxed(),
        (node_id(), chord_leave_data())
            .prop_map(|(leaving_peer_id, leave_data)| {
                Body::LeaveReq(LeaveReq {
                    leaving_peer_id,
                    leave_data,
                })
            })
            .boxed(),
        Just(Body::LeaveAns).boxed(),
        chord_update().prop_map(Body::UpdateReq).boxed(),
        Just(Body::UpdateAns).boxed(),
        (any::<bool>(), destination(), bytes(20))
            .prop_map(|(send_update, destination, overlay_specific_data)| {
                Body::RouteQueryReq(RouteQueryReq {
                    send_update,
                    destination,
                    overlay_specific_data,
                })
            })
            .boxed(),
        node_id()
            .prop_map(|next_peer| Body::RouteQueryAns(ChordRouteQueryAns { next_peer }))
            .boxed(),
        bytes(64)
            .prop_map(|padding| Body::PingReq(PingReq { padding }))
            .boxed(),
        (any::<u64>(), any::<u64>())
            .prop_map(|(response_id, time)| Body::PingAns(PingAns { response_id, time }))
            .boxed(),
        fetch_req().prop_map(Body::StatReq).boxed(),
        stat_ans().prop_map(Body::StatAns).boxed(),
        app_attach().prop_map(Body::AppAttachReq).boxed(),
        app_attach().prop_map(Body::AppAttachAns).boxed(),
        config_update().prop_map(Body::ConfigUpdateReq).boxed(),
        Just(Body::ConfigUpdateAns).boxed(),
        bytes(30).prop_map(Body::ExpAReq).boxed(),
        bytes(30).prop_map(Body::ExpAAns).boxed(),
        bytes(30).prop_map(Body::ExpBReq).boxed(),
        bytes(30).prop_map(Body::ExpBAns).boxed(),
        (any::<u16>(), bytes(30))
            .prop_map(|(code, error_info)| {
                Body::Error(ErrorResponse {
                    error_code: ErrorCode::from_u16(code),
                    error_info,
                })
            })
            .boxed(),
    ])
    .boxed()
}

/// A whole message with any body, header options, extensions and security block.
pub(crate) fn message() -> impl Strategy<Value = Message> {
    (header(), body(), extensions(), security_block()).prop_map(
        |(header, body, extensions, security)| {
            let mut m = Message::new(header, &body).expect("strategy values fit their prefixes");
            m.contents.extensions = extensions;
            m.security = security;
            m
        },
    )
}
