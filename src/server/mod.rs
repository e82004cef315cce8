//! Server assembly: builds the engine, the protocol services and the runtimes from a
//! [`Config`], and hands back a [`Server`] that knows its bound addresses and shuts down
//! cleanly. Used by the binary and, in-process, by integration tests (port 0 works).

mod admin;
mod auth;
mod bittorrent;
mod federated;
mod http_serve;
mod ppstp;
mod stats;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use crossbeam::utils::CachePadded;

use crate::access_list::AccessControl;
use crate::config::Config;
use crate::engine::{Engine, Time};
use crate::metrics::Metrics;
use crate::protocol::http::HttpLimits;
use crate::protocol::ppstp::DecodeLimits;
use crate::runtime::tls::TlsAcceptor;
use crate::runtime::{Backend, ListenerSpec, Runtime, RuntimeConfig, Ticker};

pub use admin::METRICS_CONTENT_TYPE;
use admin::{AdminService, AdminState};
#[doc(hidden)]
pub use auth::digest_credentials_lengths;

/// Name of the PPSTP listener in logs, metrics and status.
pub const PPSTP_LISTENER: &str = "ppstp";
/// Name of the admin listener.
pub const ADMIN_LISTENER: &str = "admin";
/// Name of the BitTorrent HTTP listener.
pub const BT_HTTP_LISTENER: &str = "bt_http";
/// Name of the BitTorrent UDP socket.
pub const BT_UDP_LISTENER: &str = "bt_udp";

/// Runs one bounded expiry step of the engine on every worker at every tick, whichever
/// front-ends are enabled: each worker expires the shards it owns
/// ([`Engine::expire_owned`]), so no two workers walk the same shard.
struct ExpiryTicker {
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    clock: Clock,
    budget: usize,
    /// Each worker's position in its own shards; only that worker writes its entry.
    cursors: Box<[CachePadded<AtomicUsize>]>,
}

impl Ticker for ExpiryTicker {
    fn tick(&self, worker: usize, _now: Instant) {
        let workers = self.cursors.len();
        let Some(slot) = self.cursors.get(worker) else {
            return;
        };
        let mut cursor = slot.load(Ordering::Relaxed);
        let report =
            self.engine
                .expire_owned(worker, workers, &mut cursor, self.clock.now(), self.budget);
        slot.store(cursor, Ordering::Relaxed);
        self.metrics.worker(worker).expiry(report);
    }
}

/// Monotonic clock giving the engine's [`Time`] (milliseconds since the server started, plus
/// any [`Clock::advance`]). Clones share the advance.
#[derive(Clone, Debug)]
pub struct Clock {
    origin: Instant,
    /// Milliseconds added to the elapsed time ([`Server::advance_clock`]).
    advanced_ms: Arc<AtomicU64>,
}

impl Clock {
    pub fn new() -> Self {
        Clock {
            origin: Instant::now(),
            advanced_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn now(&self) -> Time {
        self.at(Instant::now())
    }

    /// The time of `instant` (a clock reading the caller already has, so that one reading
    /// serves both).
    pub fn at(&self, instant: Instant) -> Time {
        let elapsed = instant.saturating_duration_since(self.origin);
        let ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        Time::from_millis(ms.saturating_add(self.advanced_ms.load(Ordering::Relaxed)))
    }

    /// Moves this clock and its clones forward by `by` (never back: time stays monotonic).
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.advanced_ms.fetch_add(ms, Ordering::Relaxed);
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// A running tracker.
pub struct Server {
    /// The federation's driver thread, when `overlay.enabled`.
    driver: Option<crate::federation::driver::DriverThread>,
    runtime: Option<Runtime>,
    admin: Option<Runtime>,
    state: Arc<AdminState>,
    ppstp_addrs: Vec<SocketAddr>,
    admin_addrs: Vec<SocketAddr>,
    bt_http_addrs: Vec<SocketAddr>,
    bt_udp_addrs: Vec<SocketAddr>,
    access: Arc<AccessControl>,
    clock: Clock,
    /// TLS of every TLS listener, for reloads.
    tls_acceptors: Vec<Arc<TlsAcceptor>>,
    peer_auth: Option<Arc<auth::PeerAuth>>,
    /// The configuration in force: the one started with, plus what reloads changed.
    config: parking_lot::Mutex<Config>,
    /// What loading the snapshot at start did: `None` when no snapshot was read.
    snapshot_loaded: Option<Result<crate::engine::ImportReport, String>>,
    write_snapshot_on_stop: bool,
}

/// Loads `snapshot.path` into `engine` when configured and present, re-basing each
/// registration's remaining lifetime by the time the tracker was down. A file refused for any
/// reason leaves the engine empty and is reported.
fn load_snapshot(
    config: &Config,
    engine: &Engine,
    clock: &Clock,
) -> Option<Result<crate::engine::ImportReport, String>> {
    let path = config.snapshot.file()?;
    if !config.snapshot.load_on_start {
        return None;
    }
    let body = match crate::snapshot::read(&path) {
        Ok(None) => {
            tracing::info!(path = %path.display(), "no snapshot to load: starting empty");
            return None;
        }
        Ok(Some(body)) => body,
        Err(e) => {
            let msg = format!("{}: {e}", path.display());
            tracing::error!("snapshot refused, starting empty: {msg}");
            return Some(Err(msg));
        }
    };
    let down_ms = crate::snapshot::unix_ms_now().saturating_sub(body.written_unix_ms);
    let mut registrations = body.registrations;
    for r in &mut registrations {
        let (crate::engine::Registration::Ppstp { remaining_ms, .. }
        | crate::engine::Registration::BitTorrent { remaining_ms, .. }) = r;
        *remaining_ms = remaining_ms.saturating_sub(down_ms);
    }
    let report = engine.import_registrations(&registrations, clock.now());
    let completions = engine.import_completions(&body.completions, clock.now());
    tracing::info!(
        path = %path.display(),
        imported = report.imported,
        swarms_with_completions = completions,
        expired_while_down = report.expired,
        refused = report.refused,
        down_ms,
        "snapshot loaded"
    );
    Some(Ok(report))
}

/// What [`Server::reload`] did.
#[derive(Debug)]
pub struct ReloadReport {
    /// The changed keys, split into those put in force and those that need a restart.
    pub diff: crate::config::ConfigDiff,
    /// Entries of the access list now in force, or why the old list stays.
    pub access_list: Result<usize, String>,
    /// Whether the TLS certificates, keys and peer credentials were re-read, or why the old
    /// ones stay.
    pub tls: Result<(), String>,
}

impl Server {
    /// Validates `config`, builds the engine and starts every enabled listener. Errors name
    /// the key or the address at fault.
    pub fn start(config: &Config) -> anyhow::Result<Server> {
        config.validate()?;
        match crate::runtime::descriptors::raise_soft_limit() {
            Ok(limits) => {
                if let Some(warning) =
                    crate::runtime::descriptors::shortfall(config.descriptors_needed(), limits)
                {
                    tracing::warn!("{warning}");
                }
            }
            Err(e) => tracing::warn!("cannot read RLIMIT_NOFILE: {e}"),
        }
        let backend = Backend::parse(&config.server.backend)
            .map_err(|e| anyhow::anyhow!("server.backend: {e}"))?;
        let workers = config.worker_count();
        let engine = Arc::new(Engine::new(&config.engine));
        let metrics = Arc::new(Metrics::new(workers));
        let clock = Clock::new();
        let snapshot_loaded = load_snapshot(config, &engine, &clock);
        let access = Arc::new(
            AccessControl::new(
                config.access_list.mode,
                config.access_list.path().as_deref(),
            )
            .map_err(|e| anyhow::anyhow!("access_list: {e}"))?,
        );

        let federation = if config.overlay.enabled {
            let own = config.overlay.node_id().map_err(|e| anyhow::anyhow!(e))?;
            Some(Arc::new(crate::federation::Federation::new(
                own,
                config.federation_config(),
            )))
        } else {
            None
        };
        let load = http_serve::LoadControl {
            rate_limit: config.server.rate_limit.enabled.then(|| {
                let r = &config.server.rate_limit;
                Arc::new(crate::runtime::sources::SourceRateLimiter::new(
                    r.requests_per_second,
                    r.burst,
                    config.server.source_table_slots,
                ))
            }),
            shed_after: Duration::from_millis(config.server.shed_after_ms),
        };
        let mut listeners = Vec::new();
        let mut peer_auth = None;
        if config.ppstp.enabled {
            let p = &config.ppstp;
            let auth = Arc::new(
                auth::PeerAuth::new(&p.auth).map_err(|e| anyhow::anyhow!("ppstp.auth: {e}"))?,
            );
            peer_auth = Some(auth.clone());
            let tls = match p.tls.settings(p.auth.client_cert_policy()) {
                None => None,
                Some(settings) => {
                    let acceptor = TlsAcceptor::new(settings)
                        .map_err(|e| anyhow::anyhow!("ppstp.tls: {e}"))?;
                    Some(Arc::new(acceptor))
                }
            };
            let http_limits = HttpLimits {
                max_head_bytes: p.max_head_bytes,
                max_headers: p.max_headers,
                max_body_bytes: p.max_body_bytes,
            };
            let service = Arc::new(ppstp::PpstpService {
                engine: engine.clone(),
                access: access.clone(),
                metrics: metrics.clone(),
                http_limits,
                decode_limits: decode_limits(config),
                clock: clock.clone(),
                auth,
                tls,
                federation: federation.clone(),
                load: load.clone(),
            });
            let streams: Arc<dyn crate::runtime::StreamService> =
                Arc::new(ppstp::PpstpStreams(service));
            for addr in config.ppstp_addrs()? {
                listeners.push(ListenerSpec {
                    name: PPSTP_LISTENER.to_owned(),
                    addr,
                    service: streams.clone(),
                    // Room for the largest request, so that every limit is answered.
                    limits: config.server.conn_limits(
                        http_limits.max_request_bytes(),
                        p.max_pending_output_bytes,
                        p.max_connections,
                        p.idle_timeout_secs,
                    ),
                });
            }
        }
        let mut datagrams = Vec::new();
        bittorrent::add_services(
            config,
            &engine,
            &metrics,
            &access,
            clock.clone(),
            federation.as_ref(),
            &load,
            &mut listeners,
            &mut datagrams,
        )?;
        // Every TLS configuration, once, for reloads.
        let mut tls_acceptors: Vec<Arc<TlsAcceptor>> = Vec::new();
        for acceptor in listeners.iter().filter_map(|l| l.service.tls()) {
            if !tls_acceptors.iter().any(|a| Arc::ptr_eq(a, &acceptor)) {
                tls_acceptors.push(acceptor);
            }
        }
        if listeners.is_empty() && datagrams.is_empty() {
            tracing::warn!("no front-end is enabled: the tracker answers nobody");
        }
        let expiry: Arc<dyn Ticker> = Arc::new(ExpiryTicker {
            engine: engine.clone(),
            metrics: metrics.clone(),
            clock: clock.clone(),
            budget: config.engine.expiry_budget,
            cursors: (0..workers.max(1))
                .map(|_| CachePadded::new(AtomicUsize::new(0)))
                .collect(),
        });
        let runtime_config = RuntimeConfig {
            workers,
            pin_cores: config.server.pin_cores,
            backend,
            tick: Duration::from_millis(config.server.tick_ms),
            listen_backlog: config.server.listen_backlog,
            events_per_poll: config.server.events_per_poll,
            udp_buffer_bytes: config.server.udp_buffer_bytes,
            datagram_batch: config.bt_udp.batch_size,
            name: "worker".to_owned(),
            descriptor_reserve: config.server.descriptor_reserve,
            serve_from_reserve: false,
            source_table_slots: config.server.source_table_slots,
            behind_after: behind_after(config),
            shed_after: Duration::from_millis(config.server.shed_after_ms),
        };
        let runtime = Runtime::start_with(&runtime_config, listeners, datagrams, vec![expiry])
            .context("starting the workers")?;
        let ppstp_addrs = named(&runtime.local_addrs(), PPSTP_LISTENER);
        let bt_http_addrs = named(&runtime.local_addrs(), BT_HTTP_LISTENER);
        let bt_udp_addrs = named(&runtime.datagram_addrs(), BT_UDP_LISTENER);

        let mut driver = None;
        let overlay = match &federation {
            Some(fed) => {
                fed.set_wake(runtime.wake_handle());
                let answering = fed.clone();
                let answer_clock = clock.clone();
                let o = crate::overlay::transport::OverlayHandle::start_with_app(
                    &config.overlay,
                    Arc::new(move |_, body| answering.answer_live_status(body, answer_clock.now())),
                )
                .context("starting the overlay")?;
                let o = Arc::new(o);
                fed.set_node_id(o.node_id());
                driver = Some(
                    crate::federation::driver::spawn(fed.clone(), o.clone(), {
                        let clock = clock.clone();
                        move || clock.now()
                    })
                    .context("starting the federation driver")?,
                );
                Some(o)
            }
            None => None,
        };
        let state = Arc::new(AdminState {
            overlay,
            federation,
            engine,
            metrics,
            started: Instant::now(),
            workers,
            // The back-end that runs (`auto` resolved).
            backend: runtime.backend().name(),
            runtimes: OnceLock::new(),
            listeners: OnceLock::new(),
            history: Default::default(),
            wake: OnceLock::new(),
            memory: Default::default(),
            snapshot_path: config.snapshot.file(),
            clock: clock.clone(),
            snapshot_lock: Default::default(),
        });
        {
            let first = stats::sample(&state, state.started);
            state.history.lock().offer(first);
        }
        let mut all_listeners = runtime.local_addrs();
        all_listeners.extend(runtime.datagram_addrs());
        let mut runtimes = vec![runtime.stats()];

        let admin = if config.admin.enabled {
            let admin_config = RuntimeConfig {
                workers: 1,
                pin_cores: false,
                backend,
                tick: Duration::from_secs(1),
                listen_backlog: 128,
                events_per_poll: 64,
                udp_buffer_bytes: 0,
                datagram_batch: 1,
                name: "admin".to_owned(),
                descriptor_reserve: config.admin.descriptor_reserve,
                serve_from_reserve: true,
                // The admin listener's connection limits are small.
                source_table_slots: 256,
                behind_after: behind_after(config),
                // The admin listener has no datagram socket.
                shed_after: Duration::ZERO,
            };
            let service: Arc<dyn crate::runtime::StreamService> =
                Arc::new(AdminService(state.clone()));
            let specs = config
                .admin_addrs()?
                .into_iter()
                .map(|addr| ListenerSpec {
                    name: ADMIN_LISTENER.to_owned(),
                    addr,
                    service: service.clone(),
                    // Room for the largest request, so that every limit is answered.
                    limits: config
                        .admin
                        .conn_limits(admin::ADMIN_HTTP_LIMITS.max_request_bytes()),
                })
                .collect();
            // On error `runtime` is dropped here, which stops the tracker's workers.
            let admin =
                Runtime::start(&admin_config, specs).context("starting the admin listener")?;
            all_listeners.extend(admin.local_addrs());
            runtimes.push(admin.stats());
            let _ = state.wake.set(admin.wake_handle());
            Some(admin)
        } else {
            None
        };
        let admin_addrs = admin
            .as_ref()
            .map(|a| named(&a.local_addrs(), ADMIN_LISTENER))
            .unwrap_or_default();
        let _ = state.runtimes.set(runtimes);
        let _ = state.listeners.set(all_listeners);

        Ok(Server {
            driver,
            runtime: Some(runtime),
            admin,
            state,
            ppstp_addrs,
            admin_addrs,
            bt_http_addrs,
            bt_udp_addrs,
            access,
            clock,
            tls_acceptors,
            peer_auth,
            config: parking_lot::Mutex::new(config.clone()),
            snapshot_loaded,
            write_snapshot_on_stop: config.snapshot.write_on_shutdown
                && config.snapshot.file().is_some(),
        })
    }

    /// What loading the snapshot at start did: `None` when none was read (snapshots off, or
    /// no file), the import's figures, or the message saying why the file was refused.
    pub fn snapshot_loaded(&self) -> Option<&Result<crate::engine::ImportReport, String>> {
        self.snapshot_loaded.as_ref()
    }

    /// Writes every registration to `snapshot.path` now (what `ppsp-tracker snapshot`
    /// asks for). Returns the registrations and bytes written.
    pub fn write_snapshot(&self) -> Result<(usize, u64), String> {
        self.state.write_snapshot()
    }

    /// The configuration in force (the one started with, plus what reloads changed).
    pub fn config(&self) -> Config {
        self.config.lock().clone()
    }

    /// A configuration reload (what SIGHUP does), without stopping any listener or dropping
    /// any request: `new` is compared with the configuration in force; the reloadable keys
    /// ([`crate::config::RELOADABLE`]) that changed are put in force, the access list file and
    /// every TLS certificate, key and peer credential file are re-read, and every other
    /// changed key is reported in [`ReloadReport::diff`] as needing a restart (its running
    /// value stays). `log.level` is the caller's to apply (it owns the log subscriber). A part
    /// that fails keeps what was in force; the others are still applied.
    pub fn reload(&self, new: &Config) -> ReloadReport {
        let mut running = self.config.lock();
        let diff = running.diff(new);
        let access_changed = diff.reloads("access_list.mode") || diff.reloads("access_list.path");
        let access_list = if access_changed {
            let a = &new.access_list;
            match self.access.reconfigure(a.mode, a.path().as_deref()) {
                Ok(n) => {
                    running.access_list = a.clone();
                    Ok(n)
                }
                Err(e) => Err(e),
            }
        } else {
            self.access.reload()
        };
        if diff.reloads("log.level") {
            running.log.level = new.log.level.clone();
        }
        let tls = self.reload_tls();
        ReloadReport {
            diff,
            access_list,
            tls,
        }
    }

    /// The first bound PPSTP address (the real port when configured with port 0).
    pub fn ppstp_addr(&self) -> Option<SocketAddr> {
        self.ppstp_addrs.first().copied()
    }

    /// Every bound PPSTP address, in `ppstp.listen` order.
    pub fn ppstp_addrs(&self) -> &[SocketAddr] {
        &self.ppstp_addrs
    }

    /// The first bound admin address.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addrs.first().copied()
    }

    /// Every bound admin address, in `admin.listen` order.
    pub fn admin_addrs(&self) -> &[SocketAddr] {
        &self.admin_addrs
    }

    /// The first bound BitTorrent HTTP tracker address, when enabled.
    pub fn bt_http_addr(&self) -> Option<SocketAddr> {
        self.bt_http_addrs.first().copied()
    }

    /// The first bound BitTorrent UDP tracker address, when enabled.
    pub fn bt_udp_addr(&self) -> Option<SocketAddr> {
        self.bt_udp_addrs.first().copied()
    }

    /// The tracker's clock now, as the engine sees it.
    pub fn clock_now(&self) -> Time {
        self.clock.now()
    }

    /// Moves the tracker's clock forward by `by`: every timer (peer expiry, the BEP 15
    /// connection-id lifetime) sees the time `by` later. Lets tests of timed behaviour run
    /// without waiting.
    pub fn advance_clock(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// Re-reads the access list file (what SIGHUP does). On error the old list stays in force.
    /// Returns the number of entries now in force.
    pub fn reload_access_list(&self) -> Result<usize, String> {
        self.access.reload()
    }

    /// Re-reads every TLS certificate chain, key and client-certificate policy, and the peer
    /// authentication files (what SIGHUP does). New connections use the new ones; open
    /// connections keep theirs. On error what is in force stays; the error names the file.
    pub fn reload_tls(&self) -> Result<(), String> {
        for acceptor in &self.tls_acceptors {
            acceptor.reload()?;
        }
        if let Some(auth) = &self.peer_auth {
            auth.reload()?;
        }
        Ok(())
    }

    /// Every bound BitTorrent HTTP tracker address, in `bt_http.listen` order (the real
    /// ports when configured with port 0).
    pub fn bt_http_addrs(&self) -> &[SocketAddr] {
        &self.bt_http_addrs
    }

    /// Every bound BEP 15 UDP address, in `bt_udp.listen` order.
    pub fn bt_udp_addrs(&self) -> &[SocketAddr] {
        &self.bt_udp_addrs
    }

    /// The engine, for tests that inspect tables directly.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.state.engine
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.state.metrics
    }

    /// The Prometheus text the admin listener would answer now.
    pub fn metrics_text(&self) -> String {
        self.state.metrics_text()
    }

    /// The JSON the admin listener answers on `/status`.
    pub fn status(&self) -> serde_json::Value {
        self.state.status_json()
    }

    /// Stops the admin listener and every worker, and waits for them.
    pub fn shutdown(mut self) {
        self.stop();
    }

    /// The tracker usage of the overlay, when enabled.
    pub fn federation(&self) -> Option<&Arc<crate::federation::Federation>> {
        self.state.federation.as_ref()
    }

    /// The overlay, when enabled.
    pub fn overlay(&self) -> Option<&Arc<crate::overlay::transport::OverlayHandle>> {
        self.state.overlay.as_ref()
    }

    fn stop(&mut self) {
        if let Some(mut d) = self.driver.take() {
            d.shutdown();
        }
        if let Some(o) = &self.state.overlay {
            o.shutdown();
        }
        if let Some(mut admin) = self.admin.take() {
            admin.shutdown();
        }
        if let Some(mut runtime) = self.runtime.take() {
            runtime.shutdown();
            // Every worker has stopped: the tables no longer change.
            if self.write_snapshot_on_stop {
                match self.state.write_snapshot() {
                    Ok((registrations, bytes)) => {
                        tracing::info!(registrations, bytes, "snapshot written at shutdown")
                    }
                    Err(e) => tracing::error!("snapshot not written at shutdown: {e}"),
                }
            }
            tracing::info!("tracker stopped");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The addresses of the listeners called `name`, in order.
/// How long an event-loop turn may take before the worker counts as behind
/// (`ppsp_worker_turns_behind_total`): the shedding delay, or 100 ms when shedding is off.
fn behind_after(config: &Config) -> Duration {
    match config.server.shed_after_ms {
        0 => Duration::from_millis(100),
        ms => Duration::from_millis(ms),
    }
}

fn named(addrs: &[(String, SocketAddr)], name: &str) -> Vec<SocketAddr> {
    addrs
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, a)| *a)
        .collect()
}

/// Decoder limits from the engine's configuration (the engine checks them again).
fn decode_limits(config: &Config) -> DecodeLimits {
    let e = &config.engine;
    let defaults = DecodeLimits::default();
    DecodeLimits {
        max_id_len: e.max_id_len,
        max_addrs: e.max_addrs_per_peer,
        // A CONNECT may join every swarm a peer is allowed to be in.
        max_swarm_actions: defaults.max_swarm_actions.max(e.max_swarms_per_peer),
        max_chunk_ranges: e.max_chunk_ranges,
        max_stats: defaults.max_stats,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback_config() -> Config {
        let mut config = Config::default();
        config.ppstp.listen = vec!["127.0.0.1:0".to_owned()];
        config.admin.listen = vec!["127.0.0.1:0".to_owned()];
        config.bt_udp.enabled = false;
        config.bt_http.enabled = false;
        config.server.workers = 2;
        config
    }

    #[test]
    fn start_reports_bound_ports_and_status_lists_them() {
        let server = Server::start(&loopback_config()).unwrap();
        let ppstp = server.ppstp_addr().unwrap();
        let admin = server.admin_addr().unwrap();
        assert_ne!(ppstp.port(), 0);
        assert_ne!(admin.port(), 0);
        assert_ne!(ppstp, admin);
        let status = server.status();
        assert_eq!(status["workers"], 2);
        // `auto` resolves to the back-end that runs, which the status names.
        let expected = crate::runtime::Backend::Auto.resolve().unwrap().name();
        assert_eq!(status["backend"], expected);
        let listeners = status["listeners"].as_array().unwrap();
        assert_eq!(listeners.len(), 2);
        assert_eq!(listeners[0]["name"], PPSTP_LISTENER);
        assert_eq!(listeners[0]["addr"], ppstp.to_string());
        assert_eq!(listeners[1]["addr"], admin.to_string());
        let text = server.metrics_text();
        assert!(
            text.contains("ppsp_connections_open{listener=\"ppstp\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("ppsp_connections_open{listener=\"admin\"} 0"),
            "{text}"
        );
        server.shutdown();
        assert!(std::net::TcpStream::connect(ppstp).is_err());
        assert!(std::net::TcpStream::connect(admin).is_err());
    }

    #[test]
    fn disabled_listeners_are_not_started() {
        let mut config = loopback_config();
        config.admin.enabled = false;
        config.ppstp.enabled = false;
        let server = Server::start(&config).unwrap();
        assert_eq!(server.ppstp_addr(), None);
        assert_eq!(server.admin_addr(), None);
        server.shutdown();
    }

    #[test]
    fn an_address_in_use_fails_naming_it() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut config = loopback_config();
        config.admin.listen = vec![taken.local_addr().unwrap().to_string()];
        let err = match Server::start(&config) {
            Ok(_) => panic!("must fail"),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains(&config.admin.listen[0]), "{err}");
    }

    #[test]
    fn invalid_config_is_refused() {
        let mut config = loopback_config();
        config.engine.max_id_len = 0;
        let err = Server::start(&config).err().unwrap().to_string();
        assert!(err.contains("engine.max_id_len"), "{err}");
    }

    #[test]
    fn clock_is_monotonic() {
        let clock = Clock::new();
        let a = clock.now();
        let b = clock.now();
        assert!(b >= a);
    }

    #[test]
    fn bittorrent_udp_and_http_trackers_share_the_engine() {
        use std::io::{Read, Write};
        let mut config = loopback_config();
        config.bt_udp.enabled = true;
        config.bt_udp.listen = vec!["127.0.0.1:0".to_owned()];
        config.bt_http.enabled = true;
        config.bt_http.listen = vec!["127.0.0.1:0".to_owned()];
        let server = Server::start(&config).unwrap();
        let udp_addr = server.bt_udp_addr().unwrap();
        let http_addr = server.bt_http_addr().unwrap();
        let info_hash = [0xabu8; 20];

        // BEP 15: connect, then announce as a seeder (left = 0).
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut connect = Vec::new();
        connect.extend_from_slice(&0x41727101980u64.to_be_bytes());
        connect.extend_from_slice(&0u32.to_be_bytes());
        connect.extend_from_slice(&7u32.to_be_bytes());
        client.send_to(&connect, udp_addr).unwrap();
        let mut buf = [0u8; 1500];
        let (n, _) = client.recv_from(&mut buf).unwrap();
        assert_eq!(n, 16);
        assert_eq!(&buf[4..8], &7u32.to_be_bytes());
        let connection_id = &buf[8..16].to_vec();
        let mut announce = Vec::new();
        announce.extend_from_slice(connection_id);
        announce.extend_from_slice(&1u32.to_be_bytes());
        announce.extend_from_slice(&8u32.to_be_bytes());
        announce.extend_from_slice(&info_hash);
        announce.extend_from_slice(&[b'u'; 20]);
        announce.extend_from_slice(&0u64.to_be_bytes()); // downloaded
        announce.extend_from_slice(&0u64.to_be_bytes()); // left
        announce.extend_from_slice(&0u64.to_be_bytes()); // uploaded
        announce.extend_from_slice(&2u32.to_be_bytes()); // event: started
        announce.extend_from_slice(&0u32.to_be_bytes()); // ip
        announce.extend_from_slice(&0u32.to_be_bytes()); // key
        announce.extend_from_slice(&(-1i32).to_be_bytes()); // num_want
        announce.extend_from_slice(&6881u16.to_be_bytes());
        client.send_to(&announce, udp_addr).unwrap();
        let (n, _) = client.recv_from(&mut buf).unwrap();
        assert!(n >= 20, "announce answer is {n} bytes");
        assert_eq!(&buf[0..4], &1u32.to_be_bytes(), "action announce");
        assert_eq!(
            &buf[16..20],
            &1u32.to_be_bytes(),
            "one seeder: the client itself"
        );

        // The HTTP tracker sees the UDP peer in the same swarm.
        let hash: String = info_hash.iter().map(|b| format!("%{b:02X}")).collect();
        let mut conn = std::net::TcpStream::connect(http_addr).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        write!(
            conn,
            "GET /announce?info_hash={hash}&peer_id=hhhhhhhhhhhhhhhhhhhh&port=6882&uploaded=0&downloaded=0&left=100&compact=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = Vec::new();
        conn.read_to_end(&mut answer).unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("8:completei1e"), "{answer}");
        assert!(answer.contains("8:interval"), "{answer}");

        let text = server.metrics_text();
        assert!(
            text.contains("ppsp_bt_udp_requests_total{outcome=\"announce\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ppsp_bt_http_requests_total{outcome=\"announce\"} 1"),
            "{text}"
        );
        let status = server.status();
        let names: Vec<&str> = status["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&BT_UDP_LISTENER), "{names:?}");
        assert!(names.contains(&BT_HTTP_LISTENER), "{names:?}");
        server.shutdown();
    }

    #[test]
    fn bittorrent_http_refuses_other_methods_and_bad_framing_with_a_failure_reason() {
        use std::io::{Read, Write};
        let mut config = loopback_config();
        config.bt_http.enabled = true;
        config.bt_http.listen = vec!["127.0.0.1:0".to_owned()];
        let server = Server::start(&config).unwrap();
        let addr = server.bt_http_addr().unwrap();
        for (request, status) in [
            (
                &b"POST /announce HTTP/1.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"[..],
                "405",
            ),
            (&b"\x01\x02 nonsense\r\n\r\n"[..], "400"),
        ] {
            let mut conn = std::net::TcpStream::connect(addr).unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(20)))
                .unwrap();
            conn.write_all(request).unwrap();
            let mut answer = Vec::new();
            conn.read_to_end(&mut answer).unwrap();
            let answer = String::from_utf8_lossy(&answer);
            assert!(
                answer.starts_with(&format!("HTTP/1.1 {status}")),
                "{answer}"
            );
            assert!(answer.contains("14:failure reason"), "{answer}");
        }
        assert!(server
            .metrics_text()
            .contains("ppsp_bt_http_requests_total{outcome=\"http_fault\"} 2"));
        server.shutdown();
    }
}
