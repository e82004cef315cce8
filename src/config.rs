//! The tracker's configuration: one TOML schema with complete defaults in code, profiles that
//! override only what they change, and `--set key=value` overrides on top.
//!
//! Loading is layered: defaults <- profile (an embedded name such as `default` or `dedicated`,
//! or a file path) <- overrides. Layers are merged as TOML tables *before* the typed
//! deserialisation, and every layer is checked against the schema first, so an unknown key in a
//! file or in an override is reported with its dotted path (`unknown key "server.wrkers"`)
//! instead of being ignored. Every table denies unknown fields as a second line of defence.
//! [`Config::validate`] then checks ranges and cross-field rules with messages naming the key.

use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::engine::{EngineConfig, MAX_ID_BYTES};

mod access;
mod bt;
mod reload;
mod tls;
pub use access::AccessListConfig;
pub use bt::{BtHttpConfig, BtUdpConfig};
pub use reload::{ConfigDiff, RELOADABLE};
pub use tls::{AuthConfig, AuthMode, TlsConfig};

/// The profile compiled into the binary and used when none is named.
pub const DEFAULT_PROFILE: &str = include_str!("../tuning/default.toml");
/// The dedicated-server profile, also compiled in.
pub const DEDICATED_PROFILE: &str = include_str!("../tuning/dedicated.toml");
/// The one-core, small-memory profile.
pub const SMALL_PROFILE: &str = include_str!("../tuning/small.toml");
/// The profile the benchmarks use.
pub const LOOPBACK_BENCH_PROFILE: &str = include_str!("../tuning/loopback-bench.toml");
/// One node of a cluster joined through the overlay.
pub const CLUSTER_NODE_PROFILE: &str = include_str!("../tuning/cluster-node.toml");

/// Names of the embedded profiles and their text.
pub const EMBEDDED_PROFILES: &[(&str, &str)] = &[
    ("default", DEFAULT_PROFILE),
    ("dedicated", DEDICATED_PROFILE),
    ("small", SMALL_PROFILE),
    ("loopback-bench", LOOPBACK_BENCH_PROFILE),
    ("cluster-node", CLUSTER_NODE_PROFILE),
];

/// The whole configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub ppstp: PpstpConfig,
    pub engine: EngineConfig,
    pub bt_udp: BtUdpConfig,
    pub bt_http: BtHttpConfig,
    pub access_list: AccessListConfig,
    pub admin: AdminConfig,
    pub log: LogConfig,
    pub overlay: crate::overlay::config::OverlayConfig,
    pub snapshot: SnapshotConfig,
}

/// `[snapshot]`: warm restarts (see `crate::snapshot`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotConfig {
    /// The snapshot file; empty turns snapshots off. Written on shutdown (SIGTERM, SIGINT)
    /// and on `ppsp-tracker snapshot`; loaded at start when present and valid.
    pub path: String,
    /// Load the snapshot at start when the file exists.
    pub load_on_start: bool,
    /// Write the snapshot when the server shuts down.
    pub write_on_shutdown: bool,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            path: String::new(),
            load_on_start: true,
            write_on_shutdown: true,
        }
    }
}

impl SnapshotConfig {
    /// The snapshot file, when snapshots are on.
    pub fn file(&self) -> Option<std::path::PathBuf> {
        (!self.path.trim().is_empty()).then(|| std::path::PathBuf::from(self.path.trim()))
    }
}

/// `[server]`: worker threads and the I/O back-end.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Worker threads; 0 means one per available core.
    pub workers: usize,
    /// Pin worker `i` to core `i` (modulo the number of cores).
    pub pin_cores: bool,
    /// I/O back-end: `"auto"` (io_uring where the kernel allows it, else epoll), `"io_uring"`
    /// (start fails without it) or `"epoll"`. The environment variable `PPSP_TRACKER_BACKEND`
    /// overrides it.
    pub backend: String,
    /// Period of each worker's timer tick (expiry, idle sweeps), milliseconds.
    pub tick_ms: u64,
    /// Listen backlog of every TCP listener (the kernel caps it at `net.core.somaxconn`).
    pub listen_backlog: u32,
    /// Readiness events taken from the poller per wake-up.
    pub events_per_poll: usize,
    /// Receive and send buffer of each UDP socket in bytes; 0 keeps the kernel default.
    pub udp_buffer_bytes: usize,
    /// Let the kernel back the heap with transparent huge pages (2 MiB). Off: the process
    /// opts out (`PR_SET_THP_DISABLE`) at start, so resident memory follows what the tables
    /// use in 4 KiB pages instead of growing in 2 MiB steps; on: less CPU per request when the
    /// tables are hundreds of megabytes (measured at 2M peers, `benches/README.md`).
    pub transparent_huge_pages: bool,
    /// A request's head and body must arrive within this many milliseconds of its first byte
    /// on every TCP listener (slow-head / slow-body defence), whatever the idle timeout.
    pub request_timeout_ms: u64,
    /// Open connections per source address (IPv6: per /64) on each tracker TCP listener,
    /// counted across workers; 0 = no cap. When a listener is full, its connection idle or stalled for
    /// longest is closed to admit a new one.
    pub max_connections_per_source: usize,
    /// Requests served per connection per event-loop turn; the rest wait for the next turn.
    pub max_requests_per_turn: usize,
    /// Answer bytes computed per connection per event-loop turn.
    pub max_output_per_turn_bytes: usize,
    /// `SO_SNDBUF` of tracker TCP connections, bytes (the kernel doubles it); 0 = kernel
    /// default with autotuning. Bounds what a client that does not read pins in the kernel.
    pub tcp_send_buffer_bytes: usize,
    /// Descriptors each worker keeps in reserve for when the process runs out (EMFILE).
    pub descriptor_reserve: usize,
    /// Account to switch to once every listener is bound, when started as root (its primary
    /// group too; supplementary groups are dropped). Empty keeps the starting account. Started
    /// by another account, this must be empty or name that account.
    pub user: String,
    /// Overload shedding: a request whose connection (or datagram) has waited in the worker
    /// longer than this many milliseconds since the worker learnt it was ready is answered
    /// with the protocol's overload error (PPSTP 05 with HTTP 503, a BEP 15 error, a
    /// `failure reason`) instead of being served, so a worker that falls behind catches up
    /// at once. 0 = off.
    pub shed_after_ms: u64,
    /// Counters per row of the fixed-size per-source tables shared by the workers (the rate
    /// limiter's and the per-source connection counts); rounded up to a power of two.
    pub source_table_slots: usize,
    /// `[server.rate_limit]`: per-source request rate limit.
    pub rate_limit: RateLimitConfig,
}

/// `[server.rate_limit]`: a request rate and burst per source address (IPv6: per /64) on the
/// tracker front-ends (PPSTP, BitTorrent HTTP and UDP; not the admin listener), applied before
/// a request is decoded. Over the limit: PPSTP 05 with HTTP 503, a BitTorrent HTTP
/// `failure reason`; a BitTorrent UDP datagram is dropped unanswered (an answer would help
/// reflection floods).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    pub enabled: bool,
    /// Sustained requests per second per source.
    pub requests_per_second: u32,
    /// Requests a source may send at once after a quiet period.
    pub burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            enabled: false,
            requests_per_second: 100,
            burst: 200,
        }
    }
}

impl ServerConfig {
    /// The connection limits of a tracker TCP listener from its own keys and the shared
    /// `[server]` fairness keys.
    pub fn conn_limits(
        &self,
        max_input_bytes: usize,
        max_pending_output_bytes: usize,
        max_connections: usize,
        idle_timeout_secs: u64,
    ) -> crate::runtime::ConnLimits {
        crate::runtime::ConnLimits {
            max_input_bytes,
            max_pending_output_bytes,
            max_connections,
            idle_timeout: std::time::Duration::from_secs(idle_timeout_secs),
            request_timeout: std::time::Duration::from_millis(self.request_timeout_ms),
            max_connections_per_source: self.max_connections_per_source,
            reserved_slots: 0,
            max_requests_per_turn: self.max_requests_per_turn,
            max_output_per_turn: self.max_output_per_turn_bytes,
            send_buffer_bytes: self.tcp_send_buffer_bytes,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            workers: 1,
            pin_cores: false,
            backend: "auto".to_owned(),
            tick_ms: 100,
            listen_backlog: 1024,
            events_per_poll: 1024,
            udp_buffer_bytes: 0,
            transparent_huge_pages: false,
            request_timeout_ms: 10_000,
            max_connections_per_source: 256,
            max_requests_per_turn: 16,
            max_output_per_turn_bytes: 64 * 1024,
            tcp_send_buffer_bytes: 64 * 1024,
            descriptor_reserve: 1,
            user: String::new(),
            shed_after_ms: 0,
            source_table_slots: 16_384,
            rate_limit: RateLimitConfig::default(),
        }
    }
}

/// `[ppstp]`: the RFC 7846 HTTP/JSON front-end.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PpstpConfig {
    pub enabled: bool,
    /// Addresses to listen on, `IP:PORT` each (port 0 picks a free one; `[::1]:7846` for
    /// IPv6). IPv6 sockets are IPv6-only, so list `0.0.0.0:7846` and `[::]:7846` for both
    /// families. A single string is accepted for one address.
    #[serde(deserialize_with = "bt::one_or_many")]
    pub listen: Vec<String>,
    /// Largest request body; a larger Content-Length is answered 413 before it is read.
    pub max_body_bytes: usize,
    /// Largest request head (request line + headers); larger is answered 431.
    pub max_head_bytes: usize,
    /// Most header lines in one request.
    pub max_headers: usize,
    /// Open connections per worker; further connections are refused (closed at once).
    pub max_connections: usize,
    /// A connection without any traffic for this long is closed, seconds.
    pub idle_timeout_secs: u64,
    /// Unsent response bytes per connection above which the worker stops reading from it.
    pub max_pending_output_bytes: usize,
    /// `[ppstp.tls]`: PPSTP over TLS (https).
    pub tls: TlsConfig,
    /// `[ppstp.auth]`: peer authentication.
    pub auth: AuthConfig,
}

impl Default for PpstpConfig {
    fn default() -> Self {
        PpstpConfig {
            enabled: true,
            listen: vec!["127.0.0.1:7846".to_owned()],
            max_body_bytes: 16 * 1024,
            max_head_bytes: 8 * 1024,
            max_headers: 32,
            max_connections: 10_000,
            idle_timeout_secs: 300,
            max_pending_output_bytes: 256 * 1024,
            tls: TlsConfig::default(),
            auth: AuthConfig::default(),
        }
    }
}

/// `[admin]`: the metrics and status listener.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub enabled: bool,
    /// Addresses to listen on, `IP:PORT` each (IPv6 as `[::1]:9846`; a single string is
    /// accepted for one address).
    #[serde(deserialize_with = "bt::one_or_many")]
    pub listen: Vec<String>,
    /// Open admin connections; when full, the one idle or stalled for longest is closed to
    /// admit a new one.
    pub max_connections: usize,
    /// Open admin connections per source address (IPv6: per /64); 0 = no cap.
    pub max_connections_per_source: usize,
    /// Slots of `max_connections` kept for sources with no admin connection open (a
    /// monitoring probe gets in while another source holds the rest).
    pub reserved_slots: usize,
    /// Close admin connections silent for this long, seconds.
    pub idle_timeout_secs: u64,
    /// An admin request must arrive whole within this many milliseconds of its first byte.
    pub request_timeout_ms: u64,
    /// Descriptors the admin listener keeps to accept and serve with when the process has
    /// none left (EMFILE), so monitoring still sees the tracker.
    pub descriptor_reserve: usize,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: true,
            listen: vec!["127.0.0.1:9846".to_owned()],
            max_connections: 64,
            max_connections_per_source: 16,
            reserved_slots: 1,
            idle_timeout_secs: 60,
            request_timeout_ms: 5_000,
            descriptor_reserve: 4,
        }
    }
}

impl AdminConfig {
    /// The admin listener's connection limits.
    pub fn conn_limits(&self, max_input_bytes: usize) -> crate::runtime::ConnLimits {
        crate::runtime::ConnLimits {
            max_input_bytes,
            max_pending_output_bytes: 1024 * 1024,
            max_connections: self.max_connections,
            idle_timeout: std::time::Duration::from_secs(self.idle_timeout_secs),
            request_timeout: std::time::Duration::from_millis(self.request_timeout_ms),
            max_connections_per_source: self.max_connections_per_source,
            reserved_slots: self.reserved_slots,
            max_requests_per_turn: 4,
            max_output_per_turn: 1024 * 1024,
            send_buffer_bytes: 0,
        }
    }
}

/// `[log]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter: a level (`error`, `warn`, `info`, `debug`, `trace`) or directives
    /// such as `info,ppsp_tracker::runtime=debug`. `RUST_LOG` overrides it.
    pub level: String,
    /// How each event is written to standard error: `"text"` (one human-readable line) or
    /// `"json"` (one JSON object per line, for log collectors).
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// `log.format`: the shape of each log line on standard error.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event (ANSI colours only on a terminal).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields`.
    Json,
}

/// Why a configuration could not be loaded. The message names the file or key.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl ConfigError {
    fn new(msg: impl Into<String>) -> Self {
        ConfigError(msg.into())
    }
}

/// Where a profile comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProfileSource {
    Embedded(&'static str, &'static str),
    File(String),
}

impl ProfileSource {
    /// An embedded profile by name, otherwise a path.
    pub fn resolve(name_or_path: &str) -> Self {
        match EMBEDDED_PROFILES.iter().find(|(n, _)| *n == name_or_path) {
            Some((name, text)) => ProfileSource::Embedded(name, text),
            None => ProfileSource::File(name_or_path.to_owned()),
        }
    }

    fn label(&self) -> String {
        match self {
            ProfileSource::Embedded(name, _) => format!("embedded profile \"{name}\""),
            ProfileSource::File(path) => path.clone(),
        }
    }

    fn text(&self) -> Result<String, ConfigError> {
        match self {
            ProfileSource::Embedded(_, text) => Ok((*text).to_owned()),
            ProfileSource::File(path) => std::fs::read_to_string(Path::new(path))
                .map_err(|e| ConfigError::new(format!("{path}: cannot read: {e}"))),
        }
    }
}

impl Config {
    /// The tracker usage's tunables from `[overlay]` and the engine's timers.
    pub fn federation_config(&self) -> crate::federation::FederationConfig {
        let o = &self.overlay;
        let track_ms = self.engine.track_timer_secs.saturating_mul(1000);
        let lifetime_secs = if o.registration_lifetime_secs == 0 {
            let secs = self.engine.track_timer_secs + 2 * o.flush_interval_ms.div_ceil(1000);
            u32::try_from(secs).unwrap_or(u32::MAX)
        } else {
            o.registration_lifetime_secs
        };
        crate::federation::FederationConfig {
            local_find_min: o.local_find_min,
            flush_interval_ms: o.flush_interval_ms,
            flush_max_swarms: o.flush_max_swarms,
            flush_max_peers: o.flush_max_peers,
            flush_window: o.flush_window,
            fetch_cache_ms: o.fetch_cache_ms,
            fetch_timeout_ms: o.fetch_timeout_ms,
            lifetime_secs,
            part_bytes: o.registration_part_bytes,
            track_ms,
            max_message_bytes: o.max_message_size as usize,
        }
    }

    /// Loads defaults <- `profile` (embedded `default` when `None`; an embedded name or a path)
    /// <- `overrides` (`dotted.key=value`), then validates.
    pub fn load(profile: Option<&str>, overrides: &[String]) -> Result<Config, ConfigError> {
        Config::load_from(
            &ProfileSource::resolve(profile.unwrap_or("default")),
            overrides,
        )
    }

    /// Loads one file over the defaults, without overrides: what `check-config` does. The
    /// argument is always a path, even if it looks like an embedded profile's name.
    pub fn check_file(path: &str) -> Result<Config, ConfigError> {
        Config::load_from(&ProfileSource::File(path.to_owned()), &[])
    }

    /// Loads defaults <- `source` <- `overrides`, then validates.
    pub fn load_from(source: &ProfileSource, overrides: &[String]) -> Result<Config, ConfigError> {
        let defaults = defaults_table();
        let mut merged = defaults.clone();
        let label = source.label();
        let layer = parse_layer(&source.text()?, &label, &defaults)?;
        merge(&mut merged, layer);
        for spec in overrides {
            apply_override(&mut merged, &defaults, spec)?;
        }
        let config: Config = toml::Value::Table(merged)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::new(format!("{label}: {}", e.message())))?;
        config.validate().map_err(|e| {
            if overrides.is_empty() {
                ConfigError::new(format!("{label}: {e}"))
            } else {
                e
            }
        })?;
        Ok(config)
    }

    /// The effective configuration as TOML (what `print-config` prints).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot print: {e}\n"))
    }

    /// File descriptors the configured limits can use at once: every tracker TCP listener's
    /// `max_connections` and reserve on every worker, the admin listener's, the overlay's
    /// links, one listener or socket per address and worker, and 64 for everything else
    /// (pollers, log, configuration and access-list files).
    pub fn descriptors_needed(&self) -> u64 {
        let workers = self.worker_count() as u64;
        let mut per_worker = self.server.descriptor_reserve as u64 + 2;
        if self.ppstp.enabled {
            let addrs = self.ppstp.listen.len() as u64;
            per_worker += addrs * (self.ppstp.max_connections as u64 + 1);
        }
        if self.bt_http.enabled {
            let addrs = self.bt_http.listen.len() as u64;
            per_worker += addrs * (self.bt_http.max_connections as u64 + 1);
        }
        if self.bt_udp.enabled {
            per_worker += self.bt_udp.listen.len() as u64;
        }
        let mut total = workers * per_worker + 64;
        if self.admin.enabled {
            total += self.admin.max_connections as u64
                + self.admin.descriptor_reserve as u64
                + 2
                + self.admin.listen.len() as u64;
        }
        if self.overlay.enabled {
            total += self.overlay.max_links as u64 + 2;
        }
        total
    }

    /// Range and consistency checks. The message starts with the dotted key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        check(
            s.workers <= 4096,
            "server.workers must be 0..=4096 (0 = all cores)",
        )?;
        if let Err(e) = crate::runtime::Backend::parse(&s.backend) {
            return Err(ConfigError::new(format!("server.backend: {e}")));
        }
        check(
            (1..=60_000).contains(&s.tick_ms),
            "server.tick_ms must be 1..=60000",
        )?;
        check(
            (1..=1_000_000).contains(&s.listen_backlog),
            "server.listen_backlog must be 1..=1000000",
        )?;
        check(
            (16..=1_000_000).contains(&s.events_per_poll),
            "server.events_per_poll must be 16..=1000000",
        )?;
        check(
            s.udp_buffer_bytes <= 1 << 30,
            "server.udp_buffer_bytes must be at most 1073741824",
        )?;
        check(
            s.shed_after_ms <= 3_600_000,
            "server.shed_after_ms must be 0..=3600000 (0 = off)",
        )?;
        check(
            (16..=1 << 24).contains(&s.source_table_slots),
            "server.source_table_slots must be 16..=16777216",
        )?;
        check(
            s.rate_limit.requests_per_second >= 1 && s.rate_limit.burst >= 1,
            "server.rate_limit.requests_per_second and burst must be at least 1",
        )?;
        check(
            (10..=3_600_000).contains(&s.request_timeout_ms),
            "server.request_timeout_ms must be 10..=3600000",
        )?;
        check(
            (1..=1_000_000).contains(&s.max_requests_per_turn),
            "server.max_requests_per_turn must be 1..=1000000",
        )?;
        check(
            s.max_output_per_turn_bytes >= 1024,
            "server.max_output_per_turn_bytes must be at least 1024",
        )?;
        check(
            s.tcp_send_buffer_bytes == 0 || s.tcp_send_buffer_bytes >= 4096,
            "server.tcp_send_buffer_bytes must be 0 or at least 4096",
        )?;
        check(
            s.descriptor_reserve <= 1024,
            "server.descriptor_reserve must be 0..=1024",
        )?;
        let a = &self.admin;
        check(
            (1..=100_000).contains(&a.max_connections),
            "admin.max_connections must be 1..=100000",
        )?;
        check(
            a.reserved_slots < a.max_connections,
            "admin.reserved_slots must be below admin.max_connections",
        )?;
        check(
            (1..=86_400 * 7).contains(&a.idle_timeout_secs),
            "admin.idle_timeout_secs must be 1..=604800",
        )?;
        check(
            (10..=3_600_000).contains(&a.request_timeout_ms),
            "admin.request_timeout_ms must be 10..=3600000",
        )?;
        check(
            a.descriptor_reserve <= 1024,
            "admin.descriptor_reserve must be 0..=1024",
        )?;

        let p = &self.ppstp;
        check_addrs("ppstp.listen", &p.listen, p.enabled)?;
        p.tls.validate("ppstp.tls")?;
        p.auth.validate(&p.tls)?;
        self.bt_http.tls.validate("bt_http.tls")?;
        check(
            (1..=64 * 1024 * 1024).contains(&p.max_body_bytes),
            "ppstp.max_body_bytes must be 1..=67108864",
        )?;
        check(
            (256..=1024 * 1024).contains(&p.max_head_bytes),
            "ppstp.max_head_bytes must be 256..=1048576",
        )?;
        check(
            (1..=1024).contains(&p.max_headers),
            "ppstp.max_headers must be 1..=1024",
        )?;
        check(
            (1..=10_000_000).contains(&p.max_connections),
            "ppstp.max_connections must be 1..=10000000",
        )?;
        check(
            (1..=86_400 * 7).contains(&p.idle_timeout_secs),
            "ppstp.idle_timeout_secs must be 1..=604800",
        )?;
        check(
            p.max_pending_output_bytes >= 4096,
            "ppstp.max_pending_output_bytes must be at least 4096",
        )?;

        let e = &self.engine;
        check(
            (1..=MAX_ID_BYTES).contains(&e.max_id_len),
            "engine.max_id_len must be 1..=64",
        )?;
        check(
            (1..=65_536).contains(&e.shards),
            "engine.shards must be 1..=65536",
        )?;
        check(e.max_swarms >= 1, "engine.max_swarms must be at least 1")?;
        check(e.max_peers >= 1, "engine.max_peers must be at least 1")?;
        check(
            e.max_peers_per_swarm >= 1,
            "engine.max_peers_per_swarm must be at least 1",
        )?;
        check(
            e.max_swarms_per_peer >= 1,
            "engine.max_swarms_per_peer must be at least 1",
        )?;
        check(
            e.max_chunk_ranges >= 1,
            "engine.max_chunk_ranges must be at least 1",
        )?;
        check(
            e.max_addrs_per_peer >= 1,
            "engine.max_addrs_per_peer must be at least 1",
        )?;
        check(
            e.max_peer_count >= 1,
            "engine.max_peer_count must be at least 1",
        )?;
        check(
            e.default_peer_count <= e.max_peer_count,
            "engine.default_peer_count must not exceed engine.max_peer_count",
        )?;
        check(
            e.init_timer_secs >= 1,
            "engine.init_timer_secs must be at least 1",
        )?;
        check(
            e.track_timer_secs >= 1,
            "engine.track_timer_secs must be at least 1",
        )?;
        check(
            e.expiry_budget >= 1,
            "engine.expiry_budget must be at least 1",
        )?;

        self.validate_bt()?;
        self.validate_access_list()?;
        check_addrs("admin.listen", &self.admin.listen, self.admin.enabled)?;
        self.overlay.validate().map_err(ConfigError::new)?;
        if self.log.level.trim().is_empty() {
            return Err(ConfigError::new("log.level must not be empty"));
        }
        if let Err(err) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(ConfigError::new(format!(
                "log.level: invalid filter \"{}\": {err}",
                self.log.level
            )));
        }
        Ok(())
    }

    /// Worker threads to start: `server.workers`, or the number of available cores for 0.
    pub fn worker_count(&self) -> usize {
        match self.server.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// `ppstp.listen` as addresses, in order (validated by [`Config::validate`]).
    pub fn ppstp_addrs(&self) -> Result<Vec<SocketAddr>, ConfigError> {
        parse_addrs("ppstp.listen", &self.ppstp.listen)
    }

    /// `admin.listen` as addresses, in order (validated by [`Config::validate`]).
    pub fn admin_addrs(&self) -> Result<Vec<SocketAddr>, ConfigError> {
        parse_addrs("admin.listen", &self.admin.listen)
    }
}

fn check(ok: bool, msg: &str) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(msg))
    }
}

fn parse_addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        ConfigError::new(format!(
            "{key}: invalid address \"{value}\" (expected IP:PORT, e.g. 127.0.0.1:7846 or [::1]:7846)"
        ))
    })
}

fn parse_addrs(key: &str, values: &[String]) -> Result<Vec<SocketAddr>, ConfigError> {
    values.iter().map(|v| parse_addr(key, v)).collect()
}

/// Every address of a listen list parses, and an enabled listener has at least one.
fn check_addrs(key: &str, values: &[String], enabled: bool) -> Result<(), ConfigError> {
    parse_addrs(key, values)?;
    if enabled && values.is_empty() {
        return Err(ConfigError::new(format!(
            "{key} must name at least one address when the listener is enabled"
        )));
    }
    Ok(())
}

/// The defaults as a TOML table: the schema every layer is checked against. Every field has a
/// value (no `Option`s in the schema), so every valid key is present.
fn defaults_table() -> toml::Table {
    match toml::Value::try_from(Config::default()) {
        Ok(toml::Value::Table(t)) => t,
        // Serialising plain structs of numbers, strings and booleans cannot fail.
        _ => toml::Table::new(),
    }
}

/// Parses one profile layer and checks its keys and types against the schema.
fn parse_layer(text: &str, label: &str, schema: &toml::Table) -> Result<toml::Table, ConfigError> {
    // The typed parse gives line/column and the offending key for type errors.
    if let Err(e) = toml::from_str::<Config>(text) {
        let mut table_err = None;
        if let Ok(table) = text.parse::<toml::Table>() {
            table_err = check_known(&table, schema, "").err();
        }
        return Err(match table_err {
            Some(unknown) => ConfigError::new(format!("{label}: {unknown}")),
            None => ConfigError::new(format!("{label}: {e}")),
        });
    }
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::new(format!("{label}: {e}")))?;
    check_known(&table, schema, "").map_err(|e| ConfigError::new(format!("{label}: {e}")))?;
    Ok(table)
}

/// Fails with the dotted path of the first key of `layer` that the schema does not have.
fn check_known(layer: &toml::Table, schema: &toml::Table, prefix: &str) -> Result<(), String> {
    for (key, value) in layer {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match schema.get(key) {
            None => return Err(format!("unknown key \"{path}\"")),
            Some(toml::Value::Table(sub_schema)) => match value {
                toml::Value::Table(sub) => check_known(sub, sub_schema, &path)?,
                _ => return Err(format!("\"{path}\" must be a table")),
            },
            Some(_) => {
                if value.is_table() {
                    return Err(format!("\"{path}\" is a value, not a table"));
                }
            }
        }
    }
    Ok(())
}

/// Deep merge: tables merge key by key, anything else replaces.
fn merge(base: &mut toml::Table, layer: toml::Table) {
    for (key, value) in layer {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(l)) => merge(b, l),
            (_, v) => {
                base.insert(key, v);
            }
        }
    }
}

/// Applies one `dotted.key=value` override. The value is parsed as a TOML value, falling back
/// to a plain string (so `--set ppstp.listen=0.0.0.0:7846` needs no quotes).
fn apply_override(
    merged: &mut toml::Table,
    schema: &toml::Table,
    spec: &str,
) -> Result<(), ConfigError> {
    let Some((key, raw)) = spec.split_once('=') else {
        return Err(ConfigError::new(format!(
            "--set {spec}: expected key=value (e.g. server.workers=4)"
        )));
    };
    let key = key.trim();
    let raw = raw.trim();
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(ConfigError::new(format!(
            "--set {spec}: invalid key \"{key}\""
        )));
    }
    let value = parse_value(raw);

    // Build the one-key layer and check it like a file layer.
    let mut layer = toml::Table::new();
    let mut cursor = &mut layer;
    for part in &parts[..parts.len() - 1] {
        cursor = match cursor
            .entry((*part).to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        {
            toml::Value::Table(t) => t,
            // The entry was inserted as a table just above.
            _ => {
                return Err(ConfigError::new(format!(
                    "--set {spec}: invalid key \"{key}\""
                )))
            }
        };
    }
    cursor.insert(parts[parts.len() - 1].to_owned(), value);
    check_known(&layer, schema, "").map_err(|e| ConfigError::new(format!("--set {spec}: {e}")))?;

    let mut candidate = merged.clone();
    merge(&mut candidate, layer);
    // Type-check now so the error names this override.
    toml::Value::Table(candidate.clone())
        .try_into::<Config>()
        .map_err(|e| ConfigError::new(format!("--set {spec}: {key}: {}", e.message())))?;
    *merged = candidate;
    Ok(())
}

fn parse_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match doc.parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_owned())),
        Err(_) => toml::Value::String(raw.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(profile: Option<&str>, overrides: &[&str]) -> String {
        let overrides: Vec<String> = overrides.iter().map(|s| (*s).to_owned()).collect();
        match Config::load(profile, &overrides) {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults_are_valid_and_listen_on_the_ppstp_port() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.ppstp.listen, vec!["127.0.0.1:7846".to_owned()]);
        assert_eq!(c.admin.listen, vec!["127.0.0.1:9846".to_owned()]);
        assert_eq!(c.server.backend, "auto");
    }

    #[test]
    fn default_profile_changes_nothing() {
        let c = Config::load(None, &[]).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(
            Config::load(Some("default"), &[]).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn every_profile_in_tuning_loads() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tuning");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) == Some("toml") {
                let p = path.to_str().unwrap();
                Config::load(Some(p), &[]).unwrap_or_else(|e| panic!("{p}: {e}"));
                n += 1;
            }
        }
        assert!(n >= 4, "expected at least four profiles, found {n}");
        // Every profile file is also compiled in under its file name.
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) == Some("toml") {
                let stem = path.file_stem().unwrap().to_str().unwrap().to_owned();
                assert!(
                    EMBEDDED_PROFILES.iter().any(|(n, _)| *n == stem),
                    "tuning/{stem}.toml is not embedded"
                );
            }
        }
        for (name, _) in EMBEDDED_PROFILES {
            Config::load(Some(name), &[]).unwrap();
        }
    }

    #[test]
    fn dedicated_profile_uses_all_cores_pinned_and_larger_tables() {
        let c = Config::load(Some("dedicated"), &[]).unwrap();
        let d = Config::default();
        assert_eq!(c.server.workers, 0);
        assert!(c.server.pin_cores);
        assert!(c.engine.shards > d.engine.shards);
        assert!(c.engine.max_peers > d.engine.max_peers);
        assert!(c.server.listen_backlog > d.server.listen_backlog);
    }

    #[test]
    fn small_profile_is_one_worker_with_smaller_tables() {
        let c = Config::load(Some("small"), &[]).unwrap();
        let d = Config::default();
        assert_eq!(c.worker_count(), 1);
        assert!(c.engine.max_peers < d.engine.max_peers);
        assert!(c.engine.shards < d.engine.shards);
        assert!(c.ppstp.max_connections < d.ppstp.max_connections);
    }

    #[test]
    fn print_config_round_trips() {
        for profile in ["default", "dedicated", "small", "loopback-bench"] {
            let c = Config::load(Some(profile), &[]).unwrap();
            let text = c.to_toml();
            let back: Config = toml::from_str(&text).unwrap();
            assert_eq!(back, c);
            back.validate().unwrap();
        }
    }

    #[test]
    fn overrides_apply_with_dotted_paths_and_string_fallback() {
        let c = Config::load(
            None,
            &[
                "server.workers=3".to_owned(),
                "ppstp.listen=0.0.0.0:1234".to_owned(),
                "engine.max_id_len=20".to_owned(),
                "server.pin_cores=true".to_owned(),
                "log.level=\"debug\"".to_owned(),
            ],
        )
        .unwrap();
        assert_eq!(c.server.workers, 3);
        assert_eq!(c.ppstp.listen, vec!["0.0.0.0:1234".to_owned()]);
        assert_eq!(c.engine.max_id_len, 20);
        assert!(c.server.pin_cores);
        assert_eq!(c.log.level, "debug");
        // Overrides win over the profile.
        let c = Config::load(Some("dedicated"), &["server.workers=2".to_owned()]).unwrap();
        assert_eq!(c.server.workers, 2);
        assert!(c.server.pin_cores);
    }

    #[test]
    fn unknown_key_in_override_names_the_key() {
        let e = err(None, &["server.wrkers=3"]);
        assert!(e.contains("server.wrkers"), "{e}");
        let e = err(None, &["nosuch.table=1"]);
        assert!(e.contains("nosuch"), "{e}");
        let e = err(None, &["engine.shards.x=1"]);
        assert!(e.contains("engine.shards"), "{e}");
    }

    #[test]
    fn wrong_type_in_override_names_the_key() {
        let e = err(None, &["server.workers=many"]);
        assert!(e.contains("server.workers"), "{e}");
        let e = err(None, &["server.workers"]);
        assert!(e.contains("key=value"), "{e}");
    }

    #[test]
    fn unknown_key_in_file_names_the_key_and_the_file() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, b"[server]\nworkers = 2\n\n[engine]\nshardz = 4\n")
            .unwrap();
        let path = f.path().to_str().unwrap().to_owned();
        let e = err(Some(&path), &[]);
        assert!(e.contains("engine.shardz"), "{e}");
        assert!(e.contains(&path), "{e}");
    }

    #[test]
    fn wrong_type_in_file_names_the_key_and_the_file() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, b"[ppstp]\nmax_body_bytes = \"big\"\n").unwrap();
        let path = f.path().to_str().unwrap().to_owned();
        let e = err(Some(&path), &[]);
        assert!(e.contains("max_body_bytes"), "{e}");
        assert!(e.contains(&path), "{e}");
    }

    #[test]
    fn missing_file_is_reported_with_its_path() {
        let e = err(Some("/nonexistent/profile.toml"), &[]);
        assert!(e.contains("/nonexistent/profile.toml"), "{e}");
    }

    #[test]
    fn validation_messages_name_the_key() {
        let cases: &[(&str, &str)] = &[
            ("engine.max_id_len=0", "engine.max_id_len must be 1..=64"),
            ("engine.max_id_len=65", "engine.max_id_len must be 1..=64"),
            ("server.backend=x", "server.backend: unknown back-end \"x\""),
            ("server.tick_ms=0", "server.tick_ms"),
            (
                "ppstp.listen=nowhere",
                "ppstp.listen: invalid address \"nowhere\"",
            ),
            ("admin.listen=1.2.3.4", "admin.listen"),
            ("engine.default_peer_count=500", "engine.default_peer_count"),
            (
                "ppstp.max_pending_output_bytes=10",
                "ppstp.max_pending_output_bytes",
            ),
            ("log.level=\"info,=x=\"", "log.level"),
            (
                "bt_udp.limits.announce_interval_secs=500",
                "bt_udp.limits.announce_interval_secs",
            ),
            ("bt_udp.listen=[\"x\"]", "bt_udp.listen"),
            (
                "bt_http.limits.default_num_want=100",
                "bt_http.limits.default_num_want",
            ),
        ];
        for (set, want) in cases {
            let e = err(None, &[set]);
            assert!(e.contains(want), "--set {set}: {e}");
        }
    }

    #[test]
    fn worker_count_zero_means_all_cores() {
        let mut c = Config::default();
        c.server.workers = 0;
        assert!(c.worker_count() >= 1);
        c.server.workers = 3;
        assert_eq!(c.worker_count(), 3);
    }
}
