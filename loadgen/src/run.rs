//! One load-generation run: build the population, optionally register it (`--populate`), then
//! measure for `--duration` with `--threads` workers, sampling the server's CPU and memory
//! around each phase, and assemble the [`Report`].

use std::io::IsTerminal;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use serde::Serialize;

use crate::driver::{self, WorkerConfig};
use crate::procstat::{self, ProcSample};
use crate::proto::{self, EncodeOptions, Protocol};
use crate::report::{
    LoadgenReport, PhaseReport, PopulationReport, Report, ServerReport, TargetReport, SCHEMA,
    SCHEMA_VERSION,
};
use crate::stats::Recorder;
use crate::workload::{Mix, OpSource, PeerStates, Popularity, Population, PopulationSpec};

/// Options of `ppsp-loadgen run`.
#[derive(Clone, Debug, clap::Args, Serialize)]
pub struct RunArgs {
    /// Protocol to speak.
    #[arg(long, value_enum, default_value_t = Protocol::Ppstp)]
    pub protocol: Protocol,
    /// Server address (default 127.0.0.1:7846 for ppstp, 127.0.0.1:6969 for BitTorrent; [::1]
    /// with --ipv6). Several (repeated or comma-separated) spread the load over the nodes of a
    /// cluster: worker thread `t` talks to target `t % targets` only, and PPSTP peer `p`
    /// belongs to worker `p % threads`, so each simulated peer sticks to one node (its
    /// connection tracker). --threads must then be a multiple of the number of targets; the
    /// report adds per-target figures.
    #[arg(long, value_delimiter = ',')]
    pub target: Vec<SocketAddr>,
    /// Number of swarms in the population.
    #[arg(long, default_value_t = 1000)]
    pub swarms: u32,
    /// Number of simulated peers.
    #[arg(long, default_value_t = 10_000)]
    pub peers: u32,
    /// Swarm popularity: uniform, zipf:S or headtail.
    #[arg(long, default_value = "zipf:1")]
    pub popularity: Popularity,
    /// Request mix as kind=weight,... (ppstp: connect, join, find, leave, stat_report,
    /// keepalive, join_chunk, stat_query; BitTorrent: announce, started, stopped, scrape).
    #[arg(long)]
    pub mix: Option<String>,
    /// Peers asked for per peer list (PPSTP peer_count, BitTorrent numwant).
    #[arg(long, default_value_t = 50)]
    pub peers_wanted: u32,
    /// Fraction of peers that are seeders.
    #[arg(long, default_value_t = 0.2)]
    pub seeder_share: f64,
    /// Use IPv6: target [::1] by default, and PPSTP peers announce IPv6 addresses.
    #[arg(long)]
    pub ipv6: bool,
    /// Register the whole population (CONNECT / announce started) before measuring.
    #[arg(long)]
    pub populate: bool,
    /// PPSTP: the peers are already registered in their swarms (an earlier --populate run
    /// against the same server); without it and without --populate they start unregistered.
    #[arg(long)]
    pub assume_registered: bool,
    /// Seed of every random choice; the same seed repeats the same run.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write the hex swarm ids, one per line, to this file (a whitelist for opentracker).
    #[arg(long)]
    pub write_swarm_ids: Option<PathBuf>,
    /// Build the population (and write swarm ids) without sending anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Sockets (UDP) or connections (HTTP), spread over the threads.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// In-flight requests per socket or connection.
    #[arg(long, default_value_t = 16)]
    pub inflight: usize,
    /// HTTP pipeline depth (overrides --inflight for HTTP protocols).
    #[arg(long)]
    pub pipeline: Option<usize>,
    /// Open-loop rate in requests per second (all threads together); closed loop without it.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Worker threads, each with its own sockets.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Send UDP datagrams from this many loopback source addresses (1..=65535: 127.0.0.1,
    /// 127.0.0.2, ... counting on through 127.0.x.y), so bt-udp peers have up to 64000
    /// distinct (address, port) identities per address: 20M peers need 313 addresses. With
    /// at least as many `--connections` as addresses (per thread), each socket is bound to one
    /// address; with fewer, each socket is bound to the wildcard address and sends from
    /// several, naming each datagram's source (`IP_PKTINFO`).
    #[arg(long, default_value_t = 1)]
    pub source_addrs: u32,
    /// Measured phase length, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Hard cap on requests sent in the measured phase.
    #[arg(long, default_value_t = 200_000_000)]
    pub max_requests: u64,
    /// Longest wait for the populate phase, seconds.
    #[arg(long, default_value_t = 300.0)]
    pub populate_timeout: f64,
    /// A request unanswered after this many milliseconds is a timeout.
    #[arg(long, default_value_t = 2000)]
    pub timeout_ms: u64,
    /// Request path for HTTP protocols (default /ppsp for ppstp, /announce for bt-http).
    #[arg(long)]
    pub path: Option<String>,
    /// HTTP: one request per connection with `Connection: close` (for servers that close after
    /// each reply, such as opentracker's HTTP side).
    #[arg(long)]
    pub no_keepalive: bool,
    /// HTTP: the longest `Retry-After` (RFC 9110 section 10.2.3, in seconds) honoured, in
    /// milliseconds. A connection whose reply carries one (a shed request's 503) sends nothing
    /// until the delay is over, and is reopened only then if the server closed it; requests
    /// due on it meanwhile are not sent and are counted as held back. 0 ignores `Retry-After`.
    #[arg(long, default_value_t = 10_000)]
    pub max_retry_after_ms: u64,
    /// HTTP over TLS (https): every connection does a TLS handshake first (rustls, TLS 1.3 or
    /// 1.2), then carries requests as with plaintext.
    #[arg(long)]
    pub tls: bool,
    /// With --tls: PEM file of the CA certificates that vouch for the server.
    #[arg(long)]
    pub cacert: Option<PathBuf>,
    /// With --tls: the name the server certificate must carry (default: the target IP).
    #[arg(long)]
    pub tls_name: Option<String>,
    /// With --tls: a client certificate chain (PEM) to present, with --key.
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// With --cert: its private key (PEM).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// PPSTP with HTTP Digest peer authentication (RFC 7616, `ppstp.auth.mode = "digest"`):
    /// each peer answers the server's 401 challenge with username = its peer id and this
    /// secret, then reuses the nonce with growing nonce counts until it is refused as stale
    /// (the state lives in each phase's workers: a peer is challenged once per phase).
    #[arg(long)]
    pub digest_secret: Option<String>,
    /// Write the server's credentials file for the population (`peer_id:secret` lines, mode
    /// 0600, the secret of --digest-secret) and continue.
    #[arg(long, requires = "digest_secret")]
    pub write_digest_credentials: Option<PathBuf>,
    /// Server process to sample (CPU from /proc/PID/stat utime+stime, RSS).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Width of a throughput timeline bucket, milliseconds.
    #[arg(long, default_value_t = 100)]
    pub bucket_ms: u64,
    /// Write the JSON report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the latency distribution in HdrHistogram .hgrm format here.
    #[arg(long)]
    pub hgrm: Option<PathBuf>,
    /// Write an SVG plot (latency by percentile, throughput over time) here.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Free-form label copied into the report.
    #[arg(long)]
    pub label: Option<String>,
    /// Never show a progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

/// The TLS client configuration of a `--tls` run.
fn tls_client(
    args: &RunArgs,
    target: SocketAddr,
) -> anyhow::Result<
    Option<(
        Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )>,
> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    if !args.tls {
        return Ok(None);
    }
    let Some(ca) = &args.cacert else {
        anyhow::bail!("--tls needs --cacert (the CA that issued the server certificate)");
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in
        CertificateDer::pem_file_iter(ca).with_context(|| format!("reading {}", ca.display()))?
    {
        roots.add(cert.with_context(|| format!("reading {}", ca.display()))?)?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots);
    let mut config = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .with_context(|| format!("reading {}", cert.display()))?
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("reading {}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("reading {}", key.display()))?;
            builder.with_client_auth_cert(chain, key)?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => anyhow::bail!("--cert and --key go together"),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = match &args.tls_name {
        Some(name) => ServerName::try_from(name.clone())?,
        None => ServerName::from(target.ip()),
    };
    Ok(Some((Arc::new(config), name)))
}

impl RunArgs {
    /// The arguments with every default applied, as a test or a script would pass them.
    pub fn defaults(protocol: Protocol) -> Self {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Wrap {
            #[command(flatten)]
            args: RunArgs,
        }
        let mut a = Wrap::parse_from(["ppsp-loadgen"]).args;
        a.protocol = protocol;
        a
    }

    /// Every target, in order (the default one when none is given).
    pub fn targets(&self) -> Vec<SocketAddr> {
        if self.target.is_empty() {
            vec![self.target()]
        } else {
            self.target.clone()
        }
    }

    /// The first target.
    pub fn target(&self) -> SocketAddr {
        if let Some(t) = self.target.first() {
            return *t;
        }
        let port = match self.protocol {
            Protocol::Ppstp => 7846,
            Protocol::BtUdp | Protocol::BtHttp => 6969,
        };
        let ip: IpAddr = if self.ipv6 {
            IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
        } else {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        };
        SocketAddr::new(ip, port)
    }

    pub fn mix(&self) -> anyhow::Result<Mix> {
        let text = self
            .mix
            .clone()
            .unwrap_or_else(|| self.protocol.default_mix().to_string());
        let mix: Mix = text.parse()?;
        for (k, _) in &mix.weights {
            if !self.protocol.supports(*k) {
                bail!("{} cannot send {k}", self.protocol);
            }
        }
        Ok(mix)
    }

    fn inflight(&self) -> usize {
        match self.protocol {
            Protocol::BtUdp => self.inflight,
            _ if self.no_keepalive => 1,
            _ => self.pipeline.unwrap_or(self.inflight),
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.threads == 0 || self.threads > 256 {
            bail!("--threads must be 1..=256");
        }
        if self.connections == 0 || self.connections > 100_000 {
            bail!("--connections must be 1..=100000");
        }
        if self.inflight() == 0 || self.inflight() > 4096 {
            bail!("--inflight/--pipeline must be 1..=4096");
        }
        if !(self.duration.is_finite() && self.duration >= 0.0 && self.duration <= 86_400.0) {
            bail!("--duration must be 0..=86400 seconds");
        }
        if let Some(r) = self.rate {
            if !(r.is_finite() && r > 0.0) {
                bail!("--rate must be positive");
            }
        }
        if self.source_addrs == 0 || self.source_addrs > MAX_SOURCE_ADDRS {
            bail!("--source-addrs must be 1..={MAX_SOURCE_ADDRS}");
        }
        if self.bucket_ms == 0 {
            bail!("--bucket-ms must be positive");
        }
        let targets = self.targets().len();
        if targets > 1
            && ((self.threads / targets) * targets != self.threads
                || self.connections < self.threads)
        {
            bail!(
                "with {targets} targets, --threads must be a multiple of {targets} and \
                 --connections at least --threads"
            );
        }
        Ok(())
    }
}

/// Most loopback source addresses `--source-addrs` names: 127.0.0.1 through 127.0.255.255.
pub const MAX_SOURCE_ADDRS: u32 = 65_535;

/// UDP source address number `i` (1-based): 127.0.0.0 plus `i`, so 127.0.0.1..=127.0.0.255,
/// then 127.0.1.0 and on (every 127/8 address is a loopback address).
fn source_addr(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x7f00_0000 | (i & 0x00ff_ffff)))
}

/// UDP source addresses: the first N of [`source_addr`] for an IPv4 loopback target.
fn sources(args: &RunArgs, target: SocketAddr) -> anyhow::Result<Vec<IpAddr>> {
    if args.source_addrs <= 1 {
        return Ok(Vec::new());
    }
    match target.ip() {
        IpAddr::V4(v4) if v4.is_loopback() => Ok((1..=args.source_addrs.min(MAX_SOURCE_ADDRS))
            .map(source_addr)
            .collect()),
        _ => bail!("--source-addrs above 1 needs an IPv4 loopback target"),
    }
}

fn sample_server(pid: Option<u32>) -> anyhow::Result<Option<ProcSample>> {
    pid.map(|p| procstat::sample(Some(p)).with_context(|| format!("reading /proc/{p}/stat")))
        .transpose()
}

/// Runs one phase on `threads` workers and returns the merged recorder and its length.
#[allow(clippy::too_many_arguments)]
fn phase(
    args: &RunArgs,
    pop: &Arc<Population>,
    sources_for: &dyn Fn(usize) -> OpSource,
    rate: Option<f64>,
    duration: Duration,
    max_requests: u64,
    label: &str,
    progress_total: Option<u64>,
) -> anyhow::Result<(Recorder, Vec<Recorder>, f64)> {
    let targets = args.targets();
    let target = args.target();
    let srcs = sources(args, target)?;
    let threads = args.threads;
    let start = Instant::now() + Duration::from_millis(5);
    let deadline = start + duration;
    let bucket = Duration::from_millis(args.bucket_ms);
    let max_buckets = (duration.as_millis() as u64 / args.bucket_ms + 2).min(1_000_000) as usize;
    let stop = Arc::new(AtomicBool::new(false));
    let counters: Vec<Arc<AtomicU64>> = (0..threads).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let opts = EncodeOptions {
        peers_wanted: args.peers_wanted,
        host: target.to_string(),
        path: args.path.clone().unwrap_or_else(|| match args.protocol {
            Protocol::BtHttp => "/announce".into(),
            _ => "/ppsp".into(),
        }),
        ipv6: args.ipv6,
        keep_alive: !args.no_keepalive,
        digest_secret: args.digest_secret.clone(),
    };
    let show_progress = !args.no_progress && std::io::stderr().is_terminal();
    let tls = tls_client(args, target)?;
    let mut first_socket = 0;
    let mut configs = Vec::with_capacity(threads);
    for (t, counter) in counters.iter().enumerate() {
        let conns = args.connections / threads + usize::from(t < args.connections % threads);
        configs.push(WorkerConfig {
            target: targets[t % targets.len()],
            conns: conns.max(1),
            inflight: args.inflight(),
            rate: rate.map(|r| r / threads as f64),
            start,
            deadline,
            max_requests: max_requests / threads as u64
                + u64::from((t as u64) < max_requests % threads as u64),
            timeout: Duration::from_millis(args.timeout_ms),
            sources: srcs.clone(),
            workers: threads,
            keep_alive: !args.no_keepalive,
            max_retry_after: Duration::from_millis(args.max_retry_after_ms),
            tls: tls.clone(),
            first_socket,
            peers_wanted: args.peers_wanted,
            progress: counter.clone(),
            stop: stop.clone(),
        });
        first_socket += conns.max(1);
    }

    let results: Vec<anyhow::Result<Recorder>> = std::thread::scope(|scope| {
        let handles: Vec<_> = configs
            .into_iter()
            .enumerate()
            .map(|(t, cfg)| {
                let pop = pop.clone();
                let source = sources_for(t);
                let mut opts = opts.clone();
                opts.host = cfg.target.to_string();
                let protocol = args.protocol;
                scope.spawn(move || -> anyhow::Result<Recorder> {
                    let mut rec = Recorder::new(start, bucket, max_buckets);
                    match proto::http_encoder(protocol, opts) {
                        Some(mut enc) => {
                            driver::tcp::run(&cfg, &pop, source, enc.as_mut(), &mut rec)?
                        }
                        None => driver::udp::run(&cfg, &pop, source, &mut rec)?,
                    }
                    Ok(rec)
                })
            })
            .collect();
        let bar = show_progress.then(|| {
            let bar = match progress_total {
                Some(n) => indicatif::ProgressBar::new(n),
                None => indicatif::ProgressBar::new(duration.as_secs().max(1)),
            };
            let style = indicatif::ProgressStyle::with_template(
                "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_prefix(label.to_string());
            bar
        });
        while !handles.iter().all(|h| h.is_finished()) {
            std::thread::sleep(Duration::from_millis(100));
            if let Some(bar) = &bar {
                let replies: u64 = counters.iter().map(|c| c.load(Ordering::Relaxed)).sum();
                let elapsed = start.elapsed().as_secs_f64().max(1e-3);
                match progress_total {
                    Some(_) => bar.set_position(replies),
                    None => bar.set_position(start.elapsed().as_secs()),
                }
                bar.set_message(format!(
                    "{replies} replies, {:.0}/s",
                    replies as f64 / elapsed
                ));
            }
        }
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("worker thread panicked")))
            })
            .collect()
    });
    let elapsed = start.elapsed().as_secs_f64();
    let mut merged = Recorder::new(start, bucket, max_buckets);
    let mut per_target: Vec<Recorder> = targets
        .iter()
        .map(|_| Recorder::new(start, bucket, max_buckets))
        .collect();
    for (t, r) in results.into_iter().enumerate() {
        let r = r?;
        merged.merge(&r);
        per_target[t % targets.len()].merge(&r);
    }
    // The measured span ends at the deadline unless the cap or the source ended it sooner.
    let span = elapsed.min(duration.as_secs_f64().max(1e-9)).max(1e-9);
    let span = if merged.total_sent() >= max_requests || progress_total.is_some() {
        elapsed.max(1e-9)
    } else {
        span
    };
    Ok((merged, per_target, span))
}

/// Everything a run produced: the report and the measured phase's raw recorder (for the
/// histogram and plot files).
pub struct RunOutput {
    pub report: Report,
    pub measure: Recorder,
}

/// Performs a whole run.
pub fn run(args: &RunArgs) -> anyhow::Result<RunOutput> {
    args.validate()?;
    let mix = args.mix()?;
    let started_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut pop = Population::new(PopulationSpec {
        swarms: args.swarms,
        peers: args.peers,
        popularity: args.popularity,
        seeder_share: args.seeder_share,
        seed: args.seed,
    })?;
    if args.protocol == Protocol::BtUdp {
        pop.addr_slots = sources(args, args.target())?.len().max(1) as u32;
    }
    if args.protocol != Protocol::Ppstp && u64::from(args.peers) > pop.distinct_identities() {
        eprintln!(
            "warning: {} peers share {} distinct (address, port) identities; BitTorrent \
             trackers will merge some of them (raise --source-addrs for bt-udp)",
            args.peers,
            pop.distinct_identities()
        );
    }
    let pop = Arc::new(pop);
    if let Some(path) = &args.write_swarm_ids {
        let f =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        pop.write_swarm_ids(std::io::BufWriter::new(f))?;
    }
    if let (Some(path), Some(secret)) = (&args.write_digest_credentials, &args.digest_secret) {
        use std::os::unix::fs::OpenOptionsExt as _;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("creating {}", path.display()))?;
        pop.write_digest_credentials(std::io::BufWriter::new(f), secret)?;
    }
    let sizes = pop.swarm_sizes();
    let population = PopulationReport {
        swarms: args.swarms,
        peers: args.peers,
        popularity: args.popularity.to_string(),
        nonempty_swarms: sizes.iter().filter(|&&c| c > 0).count() as u32,
        largest_swarm: sizes.iter().copied().max().unwrap_or(0),
        seeders: pop.seeders(),
    };
    // The configuration as run: defaults that depend on other options are filled in.
    let mut resolved = args.clone();
    resolved.target = args.targets();
    resolved.mix = Some(mix.to_string());
    let config = serde_json::to_value(&resolved)?;
    let server0 = sample_server(args.server_pid)?;

    let populate = if args.populate && !args.dry_run {
        let peers = args.peers;
        let threads = args.threads as u32;
        let kind = args.protocol.populate_kind();
        let spread = args.targets().len() > 1;
        let seq = move |t: usize| {
            let t = t as u32;
            if spread {
                // Peer p registers at the node its worker (p % threads) talks to later.
                return OpSource::Sequence {
                    kind,
                    next: t,
                    end: peers,
                    step: threads,
                };
            }
            let lo = (u64::from(peers) * u64::from(t) / u64::from(threads)) as u32;
            let hi = (u64::from(peers) * u64::from(t + 1) / u64::from(threads)) as u32;
            OpSource::Sequence {
                kind,
                next: lo,
                end: hi,
                step: 1,
            }
        };
        let (rec, _, secs) = phase(
            args,
            &pop,
            &seq,
            None,
            Duration::from_secs_f64(args.populate_timeout),
            u64::from(peers),
            "populate",
            Some(u64::from(peers)),
        )?;
        Some(PhaseReport::from_recorder(&rec, secs))
    } else {
        None
    };
    let server1 = sample_server(args.server_pid)?;
    let self1 = procstat::sample(None).ok();

    let duration = if args.dry_run {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(args.duration)
    };
    let seed = args.seed;
    let (peers, workers) = (args.peers, args.threads as u32);
    let stateful = args.protocol == Protocol::Ppstp;
    let populated = populate.is_some() || args.assume_registered;
    let rand_src = move |t: usize| {
        let states = stateful.then(|| PeerStates::new(peers, workers, t as u32, populated));
        OpSource::random(seed, t, mix.clone(), states)
    };
    let (measure, measure_per_target, secs) = phase(
        args,
        &pop,
        &rand_src,
        args.rate,
        duration,
        if args.dry_run { 0 } else { args.max_requests },
        "measure",
        None,
    )?;
    let self2 = procstat::sample(None).ok();
    let server2 = sample_server(args.server_pid)?;
    let measure_report = PhaseReport::from_recorder(&measure, secs);
    let per_target = if measure_per_target.len() > 1 {
        args.targets()
            .iter()
            .zip(&measure_per_target)
            .map(|(t, r)| TargetReport {
                target: t.to_string(),
                measure: PhaseReport::from_recorder(r, secs),
            })
            .collect()
    } else {
        Vec::new()
    };
    let replies = measure_report.replies.max(1) as f64;

    let server = match (args.server_pid, server0, server1, server2) {
        (Some(pid), Some(s0), Some(s1), Some(s2)) => {
            let cpu_measure = s2.cpu_us.saturating_sub(s1.cpu_us);
            let kind = args.protocol.populate_kind().name();
            let registered = populate
                .as_ref()
                .and_then(|p| p.per_type.get(kind))
                .map(|t| t.ok)
                .unwrap_or(0);
            Some(ServerReport {
                pid,
                cpu_us_populate: s1.cpu_us.saturating_sub(s0.cpu_us),
                cpu_us_measure: cpu_measure,
                cpu_us_per_reply: cpu_measure as f64 / replies,
                rss_bytes_start: s0.rss_bytes,
                rss_bytes_after_populate: s1.rss_bytes,
                rss_bytes_end: s2.rss_bytes,
                rss_bytes_per_peer: (registered > 0)
                    .then(|| (s1.rss_bytes as f64 - s0.rss_bytes as f64) / registered as f64),
            })
        }
        _ => None,
    };
    let loadgen = match (self1, self2) {
        (Some(a), Some(b)) => {
            let cpu = b.cpu_us.saturating_sub(a.cpu_us);
            Some(LoadgenReport {
                cpu_us_measure: cpu,
                cpu_us_per_reply: cpu as f64 / replies,
            })
        }
        _ => None,
    };
    Ok(RunOutput {
        report: Report {
            schema: SCHEMA,
            schema_version: SCHEMA_VERSION,
            generator_version: env!("CARGO_PKG_VERSION"),
            started_unix_ms,
            config,
            population,
            populate,
            measure: measure_report,
            per_target,
            server,
            loadgen,
        },
        measure,
    })
}

/// Writes the files the arguments ask for (JSON, hgrm, plot).
pub fn write_outputs(args: &RunArgs, out: &RunOutput) -> anyhow::Result<()> {
    if let Some(p) = &args.json {
        let f = std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?;
        serde_json::to_writer_pretty(std::io::BufWriter::new(f), &out.report)?;
    }
    if let Some(p) = &args.hgrm {
        let f = std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?;
        crate::stats::write_hgrm(&out.measure.all, std::io::BufWriter::new(f))?;
    }
    if let Some(p) = &args.plot {
        let title = args
            .label
            .clone()
            .unwrap_or_else(|| args.protocol.to_string());
        crate::report::write_plot(p, &out.measure, &title, out.report.measure.duration_s)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_validation() {
        let a = RunArgs::defaults(Protocol::BtUdp);
        assert_eq!(a.target(), "127.0.0.1:6969".parse().unwrap());
        assert_eq!(a.mix().unwrap().to_string(), "announce=9,scrape=1");
        let mut p = RunArgs::defaults(Protocol::Ppstp);
        assert_eq!(p.target(), "127.0.0.1:7846".parse().unwrap());
        p.ipv6 = true;
        assert_eq!(p.target(), "[::1]:7846".parse().unwrap());
        p.mix = Some("announce=1".into());
        assert!(p.mix().is_err(), "PPSTP cannot send announces");
        p.mix = None;
        p.pipeline = Some(4);
        assert_eq!(p.inflight(), 4);
        p.no_keepalive = true;
        assert_eq!(p.inflight(), 1);
        p.threads = 0;
        assert!(p.validate().is_err());
        let mut u = RunArgs::defaults(Protocol::BtUdp);
        u.source_addrs = 3;
        assert_eq!(
            sources(&u, u.target()).unwrap(),
            vec![
                IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
                IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)),
                IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)),
            ]
        );
        assert!(sources(&u, "[::1]:1".parse().unwrap()).is_err());
        // Past 255 addresses the third byte counts on: 20M peers get distinct identities.
        u.source_addrs = 313;
        // Fewer sockets than addresses: each socket sends from several.
        u.connections = 8;
        u.validate().unwrap();
        let many = sources(&u, u.target()).unwrap();
        assert_eq!(many.len(), 313);
        assert_eq!(many[254], IpAddr::V4(Ipv4Addr::new(127, 0, 0, 255)));
        assert_eq!(many[255], IpAddr::V4(Ipv4Addr::new(127, 0, 1, 0)));
        assert_eq!(many[312], IpAddr::V4(Ipv4Addr::new(127, 0, 1, 57)));
        let mut distinct = many.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 313);
        assert_eq!(
            source_addr(MAX_SOURCE_ADDRS),
            IpAddr::V4(Ipv4Addr::new(127, 0, 255, 255))
        );
        u.source_addrs = MAX_SOURCE_ADDRS + 1;
        assert!(u.validate().is_err());
        u.source_addrs = 3;
        u.connections = 8;
        u.rate = Some(-1.0);
        assert!(u.validate().is_err());
    }

    #[test]
    fn config_serialises_every_option() {
        let v = serde_json::to_value(RunArgs::defaults(Protocol::BtHttp)).unwrap();
        assert_eq!(v["protocol"], "bt-http");
        assert_eq!(v["popularity"]["kind"], "zipf");
        for key in [
            "swarms",
            "peers",
            "connections",
            "inflight",
            "duration",
            "seed",
            "rate",
        ] {
            assert!(v.get(key).is_some(), "config lacks {key}");
        }
    }
}
