//! Admin endpoints that store and fetch through the overlay, for operators and the cluster
//! test. They route like any RELOAD Store/Fetch (RFC 6940 §7.4) from this node.
//!
//! - `PUT /overlay/value/<resource-name>`: the body (any bytes) is stored at Resource-ID
//!   SHA-1(name)[..16] (§10.2) as one entry of the CONTENT-REGISTRATION dictionary kind
//!   (0xf0000101, protocols.md §3) whose key is this node's Node-ID: the same slot a
//!   connection tracker's registration of that swarm would use, so a later PUT from the same
//!   node replaces it and PUTs from several nodes sit side by side. Generation counter 0
//!   (unconditional, §7.4.1.1), lifetime `overlay.value_lifetime_secs`. Answers
//!   `{"resource", "responsible", "replicas"}`.
//! - `GET /overlay/value/<resource-name>`: a Lookup (a Ping routed to the Resource-ID) names
//!   the responsible node, then a Fetch of the whole dictionary. Answers
//!   `{"resource", "answered_by", "values": [{"key", "value", "value_hex"}]}` where
//!   `answered_by` is the responsible node the Lookup reached, `key` is the writer's Node-ID
//!   in hex and `value` the bytes as UTF-8 (lossy).
//!
//! - `PUT /overlay/configuration`: the body is a signed configuration document (RFC 6940
//!   §11.1, `ppsp-tracker sign-config` writes one); this node applies it and spreads it with
//!   ConfigUpdate (§6.5.4). Answers `{"configuration_sequence"}`, or 403 with the reason
//!   (not signed by a configuration signer, not newer, malformed).
//!
//! The name is the path segment as sent (no percent-decoding). [`serve`] waits for the
//! overlay's answer up to `overlay.admin_timeout_ms` per step (a timeout is 504, an overlay
//! error 502); the admin listener runs the overlay endpoints on a helper thread and leaves the
//! request waiting in its connection meanwhile, so the admin worker never waits for them.

use super::OverlayHandle;
use crate::overlay::chord::{resource_id, LocalOutcome, LocalRequest, NodeId};
use crate::overlay::storage::{
    DataValue, FetchReq, ModelSpecifier, StoreKindData, StoredData, StoredDataSpecifier,
    StoredDataValue, KIND_OPAQUE_VALUE,
};
use crate::overlay::wire::Signature;

/// The path prefix of the value endpoints.
pub const VALUE_PREFIX: &str = "/overlay/value/";
const MAX_NAME_LEN: usize = 255;

/// An answer for the admin listener to write.
#[derive(Debug, PartialEq, Eq)]
pub struct HttpAnswer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl HttpAnswer {
    /// An answer with an empty body (a placeholder for an answer that waits).
    pub fn empty() -> Self {
        HttpAnswer {
            status: 200,
            content_type: "text/plain",
            body: Vec::new(),
        }
    }

    /// A JSON error answer `{"error": text}`.
    pub fn error(status: u16, text: &str) -> Self {
        error(status, text)
    }
}

fn json(status: u16, v: &serde_json::Value) -> HttpAnswer {
    let mut body = serde_json::to_vec_pretty(v).unwrap_or_else(|_| b"{}".to_vec());
    body.push(b'\n');
    HttpAnswer {
        status,
        content_type: "application/json",
        body,
    }
}

fn error(status: u16, text: &str) -> HttpAnswer {
    json(status, &serde_json::json!({ "error": text }))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The path of the configuration endpoint.
pub const CONFIGURATION_PATH: &str = "/overlay/configuration";

/// The immediate answer to an overlay endpoint request that needs no overlay: 404 without an
/// overlay, 400 for a bad name, 405 for another method than PUT and GET. `None` when the
/// request is well-formed (or not for an overlay endpoint).
pub fn refusal(overlay_enabled: bool, method: &str, path: &str) -> Option<HttpAnswer> {
    let name = path.strip_prefix(VALUE_PREFIX)?;
    if !overlay_enabled {
        return Some(error(404, "the overlay is not enabled"));
    }
    if name.is_empty() || name.len() > MAX_NAME_LEN || name.contains('/') {
        return Some(error(
            400,
            "resource name must be 1..=255 bytes without '/'",
        ));
    }
    if method != "PUT" && method != "GET" {
        return Some(error(405, "PUT or GET"));
    }
    None
}

/// Serves `method path` when the path is an overlay endpoint; `None` otherwise. Blocks for
/// the overlay (see the module comment).
pub fn serve(
    handle: Option<&OverlayHandle>,
    method: &str,
    path: &str,
    body: &[u8],
) -> Option<HttpAnswer> {
    if path == CONFIGURATION_PATH {
        let Some(handle) = handle else {
            return Some(error(404, "the overlay is not enabled"));
        };
        if method != "PUT" {
            return Some(error(405, "PUT"));
        }
        return Some(match handle.try_update_configuration(body.to_vec()) {
            Ok(Ok(seq)) => json(200, &serde_json::json!({ "configuration_sequence": seq })),
            Ok(Err(why)) => error(403, &why),
            Err(e) => unavailable(&e),
        });
    }
    let name = path.strip_prefix(VALUE_PREFIX)?;
    if let Some(a) = refusal(handle.is_some(), method, path) {
        return Some(a);
    }
    let handle = handle?;
    Some(match method {
        "PUT" => put(handle, name, body),
        _ => get(handle, name),
    })
}

fn ask(handle: &OverlayHandle, request: LocalRequest) -> Result<LocalOutcome, HttpAnswer> {
    match handle.request(request, handle.admin_timeout) {
        Ok(LocalOutcome::Failed { code, info }) => {
            Err(error(502, &format!("overlay error {:?} ({info:?})", code)))
        }
        Ok(o) => Ok(o),
        Err(e) => Err(unavailable(&e)),
    }
}

/// The answer to a request the overlay could not take or answer: 504 after
/// `overlay.admin_timeout_ms`, 503 when its command queue is full ("busy", counted in
/// `ppsp_overlay_commands_refused_total`) or its thread has stopped.
fn unavailable(e: &super::OverlayError) -> HttpAnswer {
    match e {
        super::OverlayError::Timeout(_) => error(504, &e.to_string()),
        _ => error(503, &e.to_string()),
    }
}

fn lookup(handle: &OverlayHandle, name: &str) -> Result<NodeId, HttpAnswer> {
    match ask(
        handle,
        LocalRequest::Lookup {
            resource: resource_id(name.as_bytes()),
        },
    )? {
        LocalOutcome::Lookup { responsible } => Ok(responsible),
        other => Err(error(502, &format!("unexpected outcome {other:?}"))),
    }
}

fn put(handle: &OverlayHandle, name: &str, value: &[u8]) -> HttpAnswer {
    let resource = resource_id(name.as_bytes());
    let responsible = match lookup(handle, name) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let storage_time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let kind_data = vec![StoreKindData {
        kind: KIND_OPAQUE_VALUE,
        generation_counter: 0,
        values: vec![StoredData {
            storage_time,
            lifetime: handle.value_lifetime_secs,
            value: StoredDataValue::Dictionary {
                key: handle.node_id().0.to_vec(),
                value: DataValue {
                    exists: true,
                    value: value.to_vec(),
                },
            },
            signature: Signature::placeholder(),
        }],
    }];
    match ask(
        handle,
        LocalRequest::Store {
            resource,
            kind_data,
        },
    ) {
        Ok(LocalOutcome::Stored(ans)) => {
            let replicas: Vec<String> = ans
                .kind_responses
                .iter()
                .flat_map(|k| k.replicas.iter().map(|n| n.to_string()))
                .collect();
            json(
                200,
                &serde_json::json!({
                    "resource": hex(&resource.to_bytes()),
                    "responsible": responsible.to_string(),
                    "replicas": replicas,
                }),
            )
        }
        Ok(other) => error(502, &format!("unexpected outcome {other:?}")),
        Err(e) => e,
    }
}

fn get(handle: &OverlayHandle, name: &str) -> HttpAnswer {
    let resource = resource_id(name.as_bytes());
    let responsible = match lookup(handle, name) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let request = LocalRequest::Fetch(FetchReq {
        resource: resource.to_wire(),
        specifiers: vec![StoredDataSpecifier {
            kind: KIND_OPAQUE_VALUE,
            generation: 0,
            model: ModelSpecifier::Dictionary(Vec::new()),
        }],
    });
    match ask(handle, request) {
        Ok(LocalOutcome::Fetched(ans)) => {
            let values: Vec<serde_json::Value> = ans
                .kind_responses
                .iter()
                .flat_map(|k| k.values.iter())
                .filter_map(|v| match &v.value {
                    StoredDataValue::Dictionary { key, value } if value.exists => {
                        Some(serde_json::json!({
                            "key": hex(key),
                            "value": String::from_utf8_lossy(&value.value),
                            "value_hex": hex(&value.value),
                        }))
                    }
                    _ => None,
                })
                .collect();
            json(
                200,
                &serde_json::json!({
                    "resource": hex(&resource.to_bytes()),
                    "answered_by": responsible.to_string(),
                    "asked": handle.node_id().to_string(),
                    "values": values,
                }),
            )
        }
        Ok(other) => error(502, &format!("unexpected outcome {other:?}")),
        Err(e) => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full command queue: every overlay endpoint answers 503 "busy" at once, without
    /// waiting, and each refusal is counted.
    #[test]
    fn a_full_command_queue_answers_503_busy_and_counts_it() {
        let (handle, queued, _poll) = OverlayHandle::stalled(1);
        // One request fills the queue; the overlay thread never takes it.
        let _pending = handle
            .submit(LocalRequest::Lookup {
                resource: resource_id(b"first"),
            })
            .unwrap();
        assert_eq!(queued.len(), 1);
        let refused = |n: u64| {
            assert_eq!(
                handle
                    .stats()
                    .commands_refused
                    .load(std::sync::atomic::Ordering::Relaxed),
                n
            );
            assert!(
                handle
                    .metrics_text()
                    .contains(&format!("ppsp_overlay_commands_refused_total {n}\n")),
                "{}",
                handle.metrics_text()
            );
        };
        refused(0);
        let requests: [(&str, &str, &[u8]); 3] = [
            ("GET", "/overlay/value/swarm", b""),
            ("PUT", "/overlay/value/swarm", b"value"),
            ("PUT", CONFIGURATION_PATH, b"document"),
        ];
        for (i, (method, path, body)) in requests.into_iter().enumerate() {
            let a = serve(Some(&handle), method, path, body).unwrap();
            assert_eq!(a.status, 503, "{method} {path}");
            let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
            assert!(
                v["error"].as_str().unwrap().contains("busy"),
                "{method} {path}: {v}"
            );
            refused(i as u64 + 1);
        }
        // Nothing was queued behind the first request.
        assert_eq!(queued.len(), 1);
    }

    #[test]
    fn other_paths_are_not_ours_and_a_disabled_overlay_says_so() {
        assert_eq!(serve(None, "GET", "/status", b""), None);
        let a = serve(None, "GET", "/overlay/value/x", b"").unwrap();
        assert_eq!(a.status, 404);
    }
}
