//! `[overlay]`: the RELOAD overlay that joins tracker nodes (RFC 6940), disabled by default.
//!
//! Where RFC 6940 §11.1 names a configuration element, the key is that element's name with
//! `_` for `-`; the mapping is in each field's documentation. Keys without an RFC element are
//! this implementation's own (addresses, link limits).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

use crate::overlay::wire::{NodeId, DEFAULT_INITIAL_TTL, DEFAULT_MAX_MESSAGE_SIZE, NODE_ID_LEN};

/// The overlay section of the tracker's configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OverlayConfig {
    /// Start the overlay thread.
    pub enabled: bool,
    /// RFC 6940 §11.1 `instance-name`: the overlay's name; its SHA-1 gives the forwarding
    /// header's overlay hash (§6.3.2), so nodes with different names reject each other.
    pub instance_name: String,
    /// Addresses of the RELOAD TCP listeners (RFC 6940 §6.6.5 framing over TCP), `IP:PORT`
    /// each (IPv6 as `[::1]:6084`; IPv6 sockets are IPv6-only, so list `0.0.0.0:6084` and
    /// `[::]:6084` for both families). A single string is accepted too, comma-separated.
    #[serde(deserialize_with = "list_or_string")]
    pub listen: Vec<String>,
    /// The addresses other nodes connect to, sent as host candidates in Attach (§6.5.1), in
    /// order of preference; empty = the `listen` addresses (with the ports actually bound).
    /// A single string is accepted too, comma-separated.
    #[serde(deserialize_with = "list_or_string")]
    pub advertised: Vec<String>,
    /// RFC 6940 §11.1 `bootstrap-node` elements: `IP:PORT` of nodes to join through. A node
    /// that reaches none of them (or has none) creates the overlay. A single string is
    /// accepted too, comma-separated (`--set overlay.bootstrap=10.0.0.1:6084,10.0.0.2:6084`).
    #[serde(deserialize_with = "list_or_string")]
    pub bootstrap: Vec<String>,
    /// This node's Node-ID, 32 hex digits; empty = derived from `node_id_seed`. Only in the
    /// `insecure-test` security mode: otherwise the Node-ID is the certificate's (§11.3.1).
    pub node_id: String,
    /// NodeId = first 16 bytes of SHA-1(seed) (the Chord-RELOAD hash, §10.2); empty = the
    /// first advertised address as text.
    pub node_id_seed: String,
    /// RFC 6940 §11.1 `chord-update-interval` (§10.7.4.1), seconds.
    pub chord_update_interval_secs: u64,
    /// RFC 6940 §11.1 `chord-ping-interval` (§10.7.4.2, finger refresh), seconds.
    pub chord_ping_interval_secs: u64,
    /// RFC 6940 §11.1 `overlay-reliability-timer` (§6.2.1): first end-to-end retransmission
    /// timeout, milliseconds (doubles per attempt).
    pub overlay_reliability_timer_ms: u64,
    /// End-to-end retransmissions before a request fails (§6.2.1 allows up to 4).
    pub max_retransmissions: u32,
    /// RFC 6940 §10.7.1 hold-down after a successor is replaced before replicas move, ms.
    pub replica_holddown_ms: u64,
    /// RFC 6940 §11.1 `max-message-size`: longer messages and frames are refused.
    pub max_message_size: u32,
    /// RFC 6940 §11.1 `initial-ttl` (§6.3.2).
    pub initial_ttl: u8,
    /// A data frame not acknowledged within `max(RTO, this)` ms fails the link (RFC 6940
    /// §6.6.5: the RTO of RFC 6298 from the framing acks decides, and a silent connection is
    /// retained about 30 s before it is concluded dead).
    pub link_ack_timeout_ms: u64,
    /// Bytes queued for one link beyond which the link is failed instead of buffering more.
    pub max_link_queued_bytes: usize,
    /// Most open links (inbound + outbound). When full, the oldest inbound connection that has
    /// not said hello is closed for a new one; with none, the new one is refused.
    pub max_links: usize,
    /// Most inbound links from one source address (IPv6: one /64); more are refused. 0 = no
    /// cap.
    pub max_links_per_source: usize,
    /// Longest lifetime a value stored at this node keeps, seconds (a longer one asked by
    /// the storing node is cut to it).
    pub max_value_lifetime_secs: u32,
    /// Most resources this node stores; a store for one more is answered
    /// Error_Data_Too_Large.
    pub max_stored_resources: usize,
    /// Most bytes of values this node stores in all (value, key and signature bytes plus 64
    /// per value); a store over it is answered Error_Data_Too_Large.
    pub max_stored_bytes: u64,
    /// Most bytes the original stores of one storing node (one signer, one Node-ID) may
    /// keep here; a store over it is answered Error_Data_Too_Large.
    pub max_stored_bytes_per_node: u64,
    /// How long a routed Attach to learn a peer's address may take before the peer counts
    /// as unreachable, ms.
    pub attach_timeout_ms: u64,
    /// Lifetime of values stored through `PUT /overlay/value/...`, seconds.
    pub value_lifetime_secs: u32,
    /// How long an admin request waits for the overlay's answer, ms.
    pub admin_timeout_ms: u64,
    /// RFC 6940 §6.3.2.1 `sequence` of the overlay configuration: sent in every message's
    /// `configuration_sequence`; a request carrying another value is answered
    /// Error_Config_Too_Old / Error_Config_Too_New (compared modulo 2^16 as in TCP). 65535 is
    /// reserved for ConfigUpdate, so 0..=65534.
    pub configuration_sequence: u16,
    /// `"certificate"` (the default): RFC 6940 certificate-based security in the self-signed
    /// mode (§11.3.1, §13.3): TLS 1.3 links with mutual authentication, every message and
    /// every stored value signed and verified, a node writes only its own dictionary entries.
    /// `"insecure-test"`: plain TCP, unsigned messages, no checks, for tests of framing and
    /// captures only; a warning is logged at every start.
    pub security: String,
    /// Directory holding this node's `node.key` (PKCS#8 PEM, mode 0600) and `node.crt`
    /// (`ppsp-tracker keygen --out DIR` writes them). Empty = a fresh key pair at every start
    /// (a new Node-ID each time; fine for tests, not for admission lists).
    pub key_dir: String,
    /// RFC 6940 §11.1 `self-signed-permitted` digest: `"sha256"` or `"sha1"`, the hash of the
    /// subjectPublicKeyInfo whose high 16 bytes are the Node-ID. All nodes of an overlay must
    /// agree.
    pub node_id_digest: String,
    /// Admission list (RFC 6940 §13.6.2): Node-IDs (32 hex digits) or certificate
    /// fingerprints (`"sha256:"` + 64 hex digits) allowed to link, join and store. Empty =
    /// every node with a valid self-signed certificate.
    #[serde(deserialize_with = "list_or_string")]
    pub admitted: Vec<String>,
    /// Node-IDs refused whatever `admitted` says: their links are refused, their messages
    /// and stores answered Error_Forbidden, and they are dropped from the routing table.
    #[serde(deserialize_with = "list_or_string")]
    pub bad_nodes: Vec<String>,
    /// RFC 6940 §11.1 `configuration-signer`: Node-IDs whose signature makes a configuration
    /// document (pushed with ConfigUpdate, §6.5.4, or `PUT /overlay/configuration`)
    /// acceptable. Empty = no ConfigUpdate is accepted.
    #[serde(deserialize_with = "list_or_string")]
    pub configuration_signers: Vec<String>,
    /// Path of the newest configuration document accepted: read at start when present (it
    /// overrides the sequence, lists, shared secret and signers when its signer is configured
    /// and its sequence not older) and rewritten (mode 0600: it may hold the shared secret) on
    /// every accepted update. Empty = memory only.
    pub configuration_document: String,
    /// RFC 6940 §11.1 `shared-secret` (§13.4 shared-secret admission): each side of a link
    /// proves it in its link hello with an HMAC-SHA256 bound to its certificate (see
    /// `transport::attach`); a link without the proof is refused. Empty = off.
    pub shared_secret: String,
    /// A FIND (or BitTorrent announce) is answered from the local copy alone when it holds at
    /// least this many other peers of the swarm; otherwise the swarm tracker's dictionary is
    /// fetched and merged.
    pub local_find_min: usize,
    /// Local changes are stored at the swarm trackers at most once per this interval, ms.
    pub flush_interval_ms: u64,
    /// Most swarms stored per flush (the rest wait for the next flush).
    pub flush_max_swarms: usize,
    /// Most PEER-STATUS entries stored per flush.
    pub flush_max_peers: usize,
    /// How long a fetched peer list or peer status is reused, ms.
    pub fetch_cache_ms: u64,
    /// How long an answer waits for the overlay before the local copy is answered and a
    /// timeout counted, ms.
    pub fetch_timeout_ms: u64,
    /// Lifetime of stored registrations, seconds; 0 = the engine's track timer plus two flush
    /// intervals. Registrations are rewritten at half their lifetime, so those of a node that
    /// died vanish within one lifetime.
    pub registration_lifetime_secs: u32,
    /// Largest CONTENT-REGISTRATION value (one part of a registration), bytes; must leave
    /// room for the message headers within `max_message_size`.
    pub registration_part_bytes: usize,
}

/// The overlay's security mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecurityMode {
    Certificate,
    InsecureTest,
}

impl Default for OverlayConfig {
    fn default() -> Self {
        OverlayConfig {
            enabled: false,
            instance_name: "ppsp-tracker.overlay".to_owned(),
            listen: vec!["127.0.0.1:6084".to_owned()],
            advertised: Vec::new(),
            bootstrap: Vec::new(),
            node_id: String::new(),
            node_id_seed: String::new(),
            chord_update_interval_secs: 600,
            chord_ping_interval_secs: 3600,
            overlay_reliability_timer_ms: 3000,
            max_retransmissions: 3,
            replica_holddown_ms: 30_000,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            initial_ttl: DEFAULT_INITIAL_TTL,
            link_ack_timeout_ms: 30_000,
            max_link_queued_bytes: 1 << 20,
            max_links: 256,
            attach_timeout_ms: 5000,
            value_lifetime_secs: 86_400,
            max_links_per_source: 16,
            max_value_lifetime_secs: 86_400,
            max_stored_resources: 1 << 20,
            max_stored_bytes: 1 << 30,
            max_stored_bytes_per_node: 64 << 20,
            admin_timeout_ms: 10_000,
            configuration_sequence: 0,
            security: "certificate".to_owned(),
            key_dir: String::new(),
            node_id_digest: "sha256".to_owned(),
            admitted: Vec::new(),
            bad_nodes: Vec::new(),
            configuration_signers: Vec::new(),
            configuration_document: String::new(),
            shared_secret: String::new(),
            local_find_min: 20,
            flush_interval_ms: 1000,
            flush_max_swarms: 1024,
            flush_max_peers: 4096,
            fetch_cache_ms: 2000,
            fetch_timeout_ms: 1000,
            registration_lifetime_secs: 0,
            registration_part_bytes: 4000,
        }
    }
}

impl OverlayConfig {
    /// The listen addresses: at least one.
    pub fn listen_addrs(&self) -> Result<Vec<SocketAddr>, String> {
        if self.listen.is_empty() {
            return Err("overlay.listen: at least one IP:PORT is needed".to_owned());
        }
        parse_addrs(&self.listen, "overlay.listen")
    }

    /// The addresses sent in Attach candidates, preferred first (the listen addresses unless
    /// set).
    pub fn advertised_addrs(&self) -> Result<Vec<SocketAddr>, String> {
        if self.advertised.is_empty() {
            return self.listen_addrs();
        }
        parse_addrs(&self.advertised, "overlay.advertised")
    }

    /// The bootstrap addresses.
    pub fn bootstrap_addrs(&self) -> Result<Vec<SocketAddr>, String> {
        self.bootstrap
            .iter()
            .map(|b| {
                b.parse()
                    .map_err(|_| format!("overlay.bootstrap: \"{b}\" is not IP:PORT"))
            })
            .collect()
    }

    /// This node's Node-ID: `node_id` if set, else SHA-1 of `node_id_seed` (or of the
    /// advertised address) truncated to 16 bytes.
    pub fn node_id(&self) -> Result<NodeId, String> {
        if !self.node_id.is_empty() {
            return parse_node_id(&self.node_id).ok_or_else(|| {
                format!("overlay.node_id: \"{}\" is not 32 hex digits", self.node_id)
            });
        }
        let seed = if self.node_id_seed.is_empty() {
            self.advertised_addrs()?[0].to_string()
        } else {
            self.node_id_seed.clone()
        };
        let digest = Sha1::digest(seed.as_bytes());
        let mut id = [0u8; NODE_ID_LEN];
        id.copy_from_slice(&digest[..NODE_ID_LEN]);
        Ok(NodeId(id))
    }

    /// The security mode `security` names.
    pub fn security_mode(&self) -> Result<SecurityMode, String> {
        match self.security.as_str() {
            "certificate" => Ok(SecurityMode::Certificate),
            "insecure-test" => Ok(SecurityMode::InsecureTest),
            other => Err(format!(
                "overlay.security: \"{other}\" is neither \"certificate\" nor \"insecure-test\""
            )),
        }
    }

    /// The Node-ID digest `node_id_digest` names.
    pub fn digest(&self) -> Result<crate::overlay::security::NodeIdDigest, String> {
        crate::overlay::security::NodeIdDigest::parse(&self.node_id_digest)
            .ok_or_else(|| "overlay.node_id_digest must be \"sha256\" or \"sha1\"".to_owned())
    }

    /// The admission and bad-node lists.
    pub fn admission_lists(&self) -> Result<crate::overlay::security::tls::AdmissionLists, String> {
        admission_lists_from(
            &self.admitted,
            &self.bad_nodes,
            "overlay.admitted",
            "overlay.bad_nodes",
        )
    }

    /// The configuration signers' Node-IDs.
    pub fn configuration_signer_ids(&self) -> Result<Vec<NodeId>, String> {
        self.configuration_signers
            .iter()
            .map(|s| {
                parse_node_id(s).ok_or_else(|| {
                    format!(
                        "overlay.configuration_signers: \"{s}\" is not a Node-ID (32 hex digits)"
                    )
                })
            })
            .collect()
    }

    /// Range and consistency checks; the message starts with the dotted key.
    pub fn validate(&self) -> Result<(), String> {
        let mode = self.security_mode()?;
        self.digest()?;
        self.admission_lists()?;
        self.configuration_signer_ids()?;
        if mode == SecurityMode::Certificate {
            if !self.node_id.is_empty() {
                return Err("overlay.node_id: with overlay.security = \"certificate\" the Node-ID is derived from the certificate; set it only in \"insecure-test\" mode".to_owned());
            }
            if !self.node_id_seed.is_empty() {
                return Err("overlay.node_id_seed: with overlay.security = \"certificate\" the Node-ID is derived from the certificate; set it only in \"insecure-test\" mode".to_owned());
            }
        }
        if self.instance_name.is_empty() {
            return Err("overlay.instance_name must not be empty".to_owned());
        }
        self.listen_addrs()?;
        self.advertised_addrs()?;
        self.bootstrap_addrs()?;
        let id = self.node_id()?;
        if id == NodeId::WILDCARD {
            return Err("overlay.node_id: the all-ones wildcard is not a Node-ID".to_owned());
        }
        let ranges: [(&str, u64, u64, u64); 8] = [
            (
                "overlay.chord_update_interval_secs",
                self.chord_update_interval_secs,
                1,
                86_400,
            ),
            (
                "overlay.chord_ping_interval_secs",
                self.chord_ping_interval_secs,
                1,
                86_400,
            ),
            (
                "overlay.overlay_reliability_timer_ms",
                self.overlay_reliability_timer_ms,
                10,
                600_000,
            ),
            (
                "overlay.max_retransmissions",
                u64::from(self.max_retransmissions),
                0,
                16,
            ),
            (
                "overlay.link_ack_timeout_ms",
                self.link_ack_timeout_ms,
                10,
                600_000,
            ),
            (
                "overlay.attach_timeout_ms",
                self.attach_timeout_ms,
                10,
                600_000,
            ),
            (
                "overlay.admin_timeout_ms",
                self.admin_timeout_ms,
                10,
                600_000,
            ),
            (
                "overlay.replica_holddown_ms",
                self.replica_holddown_ms,
                0,
                86_400_000,
            ),
        ];
        for (key, v, lo, hi) in ranges {
            if !(lo..=hi).contains(&v) {
                return Err(format!("{key} must be {lo}..={hi}"));
            }
        }
        if !(256..=(1 << 24) - 1).contains(&self.max_message_size) {
            return Err("overlay.max_message_size must be 256..=16777215".to_owned());
        }
        if self.initial_ttl == 0 {
            return Err("overlay.initial_ttl must be 1..=255".to_owned());
        }
        if self.max_link_queued_bytes < self.max_message_size as usize + 16 {
            return Err(
                "overlay.max_link_queued_bytes must hold at least one max_message_size frame"
                    .to_owned(),
            );
        }
        if !(2..=65_536).contains(&self.max_links) {
            return Err("overlay.max_links must be 2..=65536".to_owned());
        }
        if self.configuration_sequence == u16::MAX {
            return Err("overlay.configuration_sequence must be 0..=65534".to_owned());
        }
        if self.value_lifetime_secs == 0 {
            return Err("overlay.value_lifetime_secs must be at least 1".to_owned());
        }
        if self.max_value_lifetime_secs == 0 {
            return Err("overlay.max_value_lifetime_secs must be at least 1".to_owned());
        }
        if self.max_stored_resources == 0 {
            return Err("overlay.max_stored_resources must be at least 1".to_owned());
        }
        if self.max_stored_bytes == 0 || self.max_stored_bytes_per_node == 0 {
            return Err(
                "overlay.max_stored_bytes and max_stored_bytes_per_node must be at least 1"
                    .to_owned(),
            );
        }
        for (key, v, lo, hi) in [
            (
                "overlay.flush_interval_ms",
                self.flush_interval_ms,
                1,
                3_600_000,
            ),
            ("overlay.fetch_cache_ms", self.fetch_cache_ms, 0, 3_600_000),
            (
                "overlay.fetch_timeout_ms",
                self.fetch_timeout_ms,
                1,
                600_000,
            ),
            (
                "overlay.flush_max_swarms",
                self.flush_max_swarms as u64,
                1,
                1 << 20,
            ),
            (
                "overlay.flush_max_peers",
                self.flush_max_peers as u64,
                1,
                1 << 20,
            ),
        ] {
            if !(lo..=hi).contains(&v) {
                return Err(format!("{key} must be {lo}..={hi}"));
            }
        }
        if self.registration_part_bytes < 256
            || self.registration_part_bytes + 512 > self.max_message_size as usize
        {
            return Err(
                "overlay.registration_part_bytes must be at least 256 and leave 512 bytes of max_message_size for headers"
                    .to_owned(),
            );
        }
        Ok(())
    }
}

/// Admission lists from `admitted` entries (Node-IDs or `sha256:` fingerprints) and
/// `bad` Node-IDs; errors name `admitted_key` or `bad_key`.
pub fn admission_lists_from(
    admitted: &[String],
    bad: &[String],
    admitted_key: &str,
    bad_key: &str,
) -> Result<crate::overlay::security::tls::AdmissionLists, String> {
    let mut lists = crate::overlay::security::tls::AdmissionLists::default();
    for entry in admitted {
        if let Some(fp) = entry.strip_prefix("sha256:") {
            let bytes = parse_hex(fp)
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| {
                    format!("{admitted_key}: \"{entry}\" is not sha256: and 64 hex digits")
                })?;
            lists.fingerprints.insert(bytes);
        } else {
            let id = parse_node_id(entry).ok_or_else(|| {
                format!("{admitted_key}: \"{entry}\" is not a Node-ID (32 hex digits)")
            })?;
            lists.node_ids.insert(id);
        }
    }
    for entry in bad {
        let id = parse_node_id(entry)
            .ok_or_else(|| format!("{bad_key}: \"{entry}\" is not a Node-ID (32 hex digits)"))?;
        lists.bad_nodes.insert(id);
    }
    Ok(lists)
}

/// A list of strings, or one string of comma-separated items.
fn list_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::Many(v) => v,
        OneOrMany::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

/// Each of `list` as `IP:PORT`; the error names `key`.
fn parse_addrs(list: &[String], key: &str) -> Result<Vec<SocketAddr>, String> {
    list.iter()
        .map(|a| {
            a.parse()
                .map_err(|_| format!("{key}: \"{a}\" is not IP:PORT"))
        })
        .collect()
}

/// 32 hex digits to a Node-ID.
fn parse_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

pub fn parse_node_id(text: &str) -> Option<NodeId> {
    let t = text.trim();
    if t.len() != 2 * NODE_ID_LEN || !t.is_ascii() {
        return None;
    }
    let mut id = [0u8; NODE_ID_LEN];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(t.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(NodeId(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_keys_are_checked() {
        let mut c = OverlayConfig::default();
        assert_eq!(c.security_mode(), Ok(SecurityMode::Certificate));
        c.security = "none".to_owned();
        assert!(c.validate().unwrap_err().starts_with("overlay.security"));
        c.security = "certificate".to_owned();
        c.node_id_seed = "x".to_owned();
        assert!(c
            .validate()
            .unwrap_err()
            .starts_with("overlay.node_id_seed"));
        c.security = "insecure-test".to_owned();
        c.validate().unwrap();
        c.admitted = vec!["00".repeat(16), format!("sha256:{}", "ab".repeat(32))];
        c.bad_nodes = vec!["11".repeat(16)];
        let lists = c.admission_lists().unwrap();
        assert_eq!(lists.node_ids.len(), 1);
        assert_eq!(lists.fingerprints.len(), 1);
        assert_eq!(lists.bad_nodes.len(), 1);
        c.admitted = vec!["sha256:zz".to_owned()];
        assert!(c.validate().unwrap_err().starts_with("overlay.admitted"));
        c.admitted.clear();
        c.node_id_digest = "md5".to_owned();
        assert!(c
            .validate()
            .unwrap_err()
            .starts_with("overlay.node_id_digest"));
    }

    #[test]
    fn defaults_are_valid_and_disabled() {
        let c = OverlayConfig::default();
        assert!(!c.enabled);
        c.validate().unwrap();
        assert_eq!(c.advertised_addrs().unwrap(), c.listen_addrs().unwrap());
    }

    #[test]
    fn node_id_comes_from_hex_then_seed_then_address() {
        let mut c = OverlayConfig::default();
        let from_addr = c.node_id().unwrap();
        c.node_id_seed = "127.0.0.1:6084".to_owned();
        assert_eq!(c.node_id().unwrap(), from_addr);
        c.node_id_seed = "other".to_owned();
        assert_ne!(c.node_id().unwrap(), from_addr);
        c.node_id = "000102030405060708090a0b0c0d0e0f".to_owned();
        assert_eq!(
            c.node_id().unwrap(),
            NodeId([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15])
        );
        c.node_id = "xyz".to_owned();
        assert!(c.validate().unwrap_err().starts_with("overlay.node_id"));
        c.node_id = "ff".repeat(16);
        assert!(c.validate().is_err());
    }

    #[test]
    fn bad_values_name_their_key() {
        let c = OverlayConfig {
            bootstrap: vec!["nowhere".to_owned()],
            ..OverlayConfig::default()
        };
        assert!(c.validate().unwrap_err().starts_with("overlay.bootstrap"));
        let c = OverlayConfig {
            max_link_queued_bytes: 10,
            ..OverlayConfig::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .starts_with("overlay.max_link_queued_bytes"));
        let c = OverlayConfig {
            chord_update_interval_secs: 0,
            ..OverlayConfig::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .starts_with("overlay.chord_update_interval_secs"));
    }

    #[test]
    fn bootstrap_takes_a_list_or_a_comma_separated_string() {
        let c: OverlayConfig = toml::from_str("bootstrap = \"127.0.0.1:1, 127.0.0.1:2\"").unwrap();
        assert_eq!(c.bootstrap, vec!["127.0.0.1:1", "127.0.0.1:2"]);
        let c: OverlayConfig = toml::from_str("bootstrap = [\"127.0.0.1:3\"]").unwrap();
        assert_eq!(c.bootstrap, vec!["127.0.0.1:3"]);
        assert!(toml::from_str::<OverlayConfig>("bootstrap = 5").is_err());
    }
}
