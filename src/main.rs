//! The `ppsp-tracker` binary: `serve` (the default), `print-config`, `check-config` and
//! `keygen`.

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use mimalloc::MiMalloc;

use ppsp_tracker::config::{Config, LogFormat};
use ppsp_tracker::privileges::Outcome;
use ppsp_tracker::server::Server;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

/// A sharded, thread-per-core tracker for PPSP (RFC 7846) peers.
#[derive(Parser)]
#[command(name = "ppsp-tracker", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the tracker (the default when no subcommand is given).
    Serve(ProfileArgs),
    /// Print the effective configuration as TOML.
    PrintConfig(ProfileArgs),
    /// Ask a running tracker to write its registrations to its `snapshot.path` now (through
    /// its admin listener: `POST /snapshot`).
    Snapshot {
        /// The admin address (default: the first `admin.listen` of the profile).
        #[arg(long, value_name = "IP:PORT")]
        admin: Option<std::net::SocketAddr>,
        #[command(flatten)]
        profile: ProfileArgs,
    },
    /// Check a configuration file (over the defaults) and exit.
    CheckConfig {
        /// The TOML file to check.
        file: String,
    },
    /// Create this node's overlay identity: an ECDSA P-256 key (DIR/node.key, mode 0600) and
    /// a self-signed certificate (DIR/node.crt); prints the Node-ID the certificate yields
    /// (RFC 6940 §11.3.1) and the certificate's SHA-256 fingerprint, for admission lists.
    Keygen {
        /// Directory to write into (created, mode 0700, when missing).
        #[arg(long, value_name = "DIR")]
        out: std::path::PathBuf,
        /// Node-ID digest of the overlay (`overlay.node_id_digest`): sha256 or sha1.
        #[arg(long, default_value = "sha256")]
        digest: String,
        /// Overlay instance name written into the certificate's reload:// URI.
        #[arg(long, default_value = "ppsp-tracker.overlay")]
        instance_name: String,
        /// Replace an existing key.
        #[arg(long)]
        force: bool,
    },
    /// Write a signed overlay configuration document (RFC 6940 §11.1) to stdout: sequence,
    /// configuration signers, admission and bad-node lists, shared secret, signed with the key
    /// in --key-dir (whose Node-ID must be among the nodes' `overlay.configuration_signers`).
    /// Publish it with `curl -X PUT --data-binary @FILE http://ADMIN/overlay/configuration`
    /// on any node; it spreads to every node with ConfigUpdate (§6.5.4).
    SignConfig {
        /// Directory with the signer's node.key and node.crt (from `keygen`).
        #[arg(long, value_name = "DIR")]
        key_dir: std::path::PathBuf,
        /// The overlay's instance name (`overlay.instance_name`).
        #[arg(long, default_value = "ppsp-tracker.overlay")]
        instance_name: String,
        /// Node-ID digest of the overlay: sha256 or sha1.
        #[arg(long, default_value = "sha256")]
        digest: String,
        /// Configuration sequence, newer than the overlay's current one (1..=65534).
        #[arg(long)]
        sequence: u16,
        /// Node-IDs allowed to sign the next document (repeatable or comma-separated);
        /// none = the signers stay as they are.
        #[arg(long = "signer", value_delimiter = ',')]
        signers: Vec<String>,
        /// Admitted Node-IDs or `sha256:` fingerprints (repeatable or comma-separated); none =
        /// every node with a valid certificate.
        #[arg(long = "admit", value_delimiter = ',')]
        admitted: Vec<String>,
        /// Bad Node-IDs (repeatable or comma-separated).
        #[arg(long = "bad-node", value_delimiter = ',')]
        bad_nodes: Vec<String>,
        /// Shared secret for admission (RFC 6940 §13.4); none = off.
        #[arg(long)]
        shared_secret: Option<String>,
    },
}

#[derive(Args, Default)]
struct ProfileArgs {
    /// Profile: an embedded name (`default`, `dedicated`) or a path to a TOML file.
    #[arg(long, value_name = "NAME|PATH")]
    profile: Option<String>,
    /// Override one key, e.g. `--set server.workers=4` (repeatable; the value is TOML, or a
    /// plain string).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

impl ProfileArgs {
    fn load(&self) -> Result<Config, String> {
        Config::load(self.profile.as_deref(), &self.set).map_err(|e| e.to_string())
    }
}

fn main() -> ExitCode {
    // Off until the configuration says otherwise (`server.transparent_huge_pages`), so that
    // nothing allocated while it loads sits in a huge page.
    set_huge_pages(false);
    let cli = Cli::parse();
    let result = match cli
        .command
        .unwrap_or(Command::Serve(ProfileArgs::default()))
    {
        Command::Serve(args) => serve(args),
        Command::Snapshot { admin, profile } => request_snapshot(admin, &profile),
        Command::PrintConfig(args) => args.load().map(|config| print!("{}", config.to_toml())),
        Command::CheckConfig { file } => Config::check_file(&file)
            .map(|_| println!("{file}: ok"))
            .map_err(|e| e.to_string()),
        Command::Keygen {
            out,
            digest,
            instance_name,
            force,
        } => keygen(&out, &digest, &instance_name, force),
        Command::SignConfig {
            key_dir,
            instance_name,
            digest,
            sequence,
            signers,
            admitted,
            bad_nodes,
            shared_secret,
        } => sign_config(
            &key_dir,
            &digest,
            ppsp_tracker::overlay::security::configuration::ConfigDocument {
                instance_name,
                sequence,
                signers: Vec::new(),
                admitted,
                bad_nodes,
                shared_secret,
            },
            &signers,
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ppsp-tracker: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Lets the process use transparent huge pages (`server.transparent_huge_pages`) or opts it
/// out (`PR_SET_THP_DISABLE`): mimalloc advises huge pages for its arenas, and a 2 MiB page
/// that holds a few live blocks is resident in full. Affects page faults from now on, in
/// every mapping. A kernel without the call (before Linux 3.15) keeps its default, silently:
/// memory use is then the only difference.
fn set_huge_pages(on: bool) {
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and changes no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, libc::c_ulong::from(!on), 0, 0, 0);
    }
}

/// `snapshot`: `POST /snapshot` to the admin listener; prints its JSON answer.
fn request_snapshot(
    admin: Option<std::net::SocketAddr>,
    profile: &ProfileArgs,
) -> Result<(), String> {
    use std::io::{Read, Write};
    let addr = match admin {
        Some(a) => a,
        None => *profile
            .load()?
            .admin_addrs()
            .map_err(|e| e.to_string())?
            .first()
            .ok_or("admin.listen is empty: pass --admin IP:PORT")?,
    };
    let timeout = std::time::Duration::from_secs(120);
    let mut conn = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(10))
        .map_err(|e| format!("admin listener {addr}: {e}"))?;
    conn.set_read_timeout(Some(timeout))
        .and_then(|()| conn.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    write!(
        conn,
        "POST /snapshot HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("admin listener {addr}: {e}"))?;
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw)
        .map_err(|e| format!("admin listener {addr}: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    print!("{body}");
    if head.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(format!(
            "snapshot refused: {}",
            head.lines().next().unwrap_or("no answer")
        ))
    }
}

/// `keygen`: writes the key pair and certificate; prints only public values.
fn keygen(
    out: &std::path::Path,
    digest: &str,
    instance_name: &str,
    force: bool,
) -> Result<(), String> {
    use ppsp_tracker::overlay::security::{Identity, NodeIdDigest, KEY_FILE};
    let digest = NodeIdDigest::parse(digest).ok_or("--digest must be sha256 or sha1")?;
    if out.join(KEY_FILE).exists() && !force {
        return Err(format!(
            "{} exists; pass --force to replace it",
            out.join(KEY_FILE).display()
        ));
    }
    let id = Identity::generate(digest, instance_name).map_err(|e| e.to_string())?;
    let (key, cert) = id
        .write(out)
        .map_err(|e| format!("{}: {e}", out.display()))?;
    let fingerprint: String = id.cert_hash().iter().map(|b| format!("{b:02x}")).collect();
    println!("node_id = \"{}\"", id.node_id());
    println!("fingerprint = \"sha256:{fingerprint}\"");
    println!("key = \"{}\"", key.display());
    println!("certificate = \"{}\"", cert.display());
    Ok(())
}

/// `sign-config`: prints a configuration document signed with the key in `key_dir`.
fn sign_config(
    key_dir: &std::path::Path,
    digest: &str,
    mut document: ppsp_tracker::overlay::security::configuration::ConfigDocument,
    signers: &[String],
) -> Result<(), String> {
    use ppsp_tracker::overlay::security::{Identity, NodeIdDigest};
    let digest = NodeIdDigest::parse(digest).ok_or("--digest must be sha256 or sha1")?;
    let id = Identity::load(key_dir, digest).map_err(|e| e.to_string())?;
    document.signers = signers
        .iter()
        .map(|s| {
            ppsp_tracker::overlay::config::parse_node_id(s)
                .ok_or_else(|| format!("--signer \"{s}\" is not a Node-ID (32 hex digits)"))
        })
        .collect::<Result<_, _>>()?;
    let bytes = document.sign(&id)?;
    std::io::Write::write_all(&mut std::io::stdout(), &bytes).map_err(|e| e.to_string())
}

/// Puts a new `log.level` filter in force; `Err` names why it was not.
type SetLevel = Box<dyn Fn(&str) -> Result<(), String>>;

/// Installs the log subscriber; returns how to change its level later (`None` when
/// `RUST_LOG` is set: it wins over `log.level`, on reloads too).
fn init_logging(config: &Config) -> Option<SetLevel> {
    // RUST_LOG, when set, wins over `[log] level`.
    let from_env = tracing_subscriber::EnvFilter::try_from_default_env().ok();
    let env_set = from_env.is_some();
    let filter = from_env
        .or_else(|| tracing_subscriber::EnvFilter::try_new(&config.log.level).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    fn setter<L, S>(handle: tracing_subscriber::reload::Handle<L, S>) -> SetLevel
    where
        L: From<tracing_subscriber::EnvFilter> + 'static,
        S: 'static,
    {
        Box::new(move |level: &str| {
            let filter =
                tracing_subscriber::EnvFilter::try_new(level).map_err(|e| e.to_string())?;
            handle.reload(filter).map_err(|e| e.to_string())
        })
    }
    let set = match config.log.format {
        LogFormat::Text => {
            let b = builder
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_filter_reloading();
            let handle = b.reload_handle();
            b.init();
            setter(handle)
        }
        LogFormat::Json => {
            let b = builder.json().with_ansi(false).with_filter_reloading();
            let handle = b.reload_handle();
            b.init();
            setter(handle)
        }
    };
    (!env_set).then_some(set)
}

/// SIGHUP: re-reads the profile and overrides the server started with and puts the reloadable
/// keys in force; logs the changed keys that need a restart. A profile that no longer loads
/// keeps the running configuration, but the access list and TLS files are still re-read.
fn reload(server: &Server, args: &ProfileArgs, set_level: Option<&SetLevel>) {
    let new = match args.load() {
        Ok(new) => new,
        Err(e) => {
            tracing::error!("configuration not reloaded, the running one stays: {e}");
            server.config()
        }
    };
    let report = server.reload(&new);
    if report.diff.reloads("log.level") {
        match set_level {
            Some(set) => match set(&new.log.level) {
                Ok(()) => tracing::info!(level = %new.log.level, "log.level reloaded"),
                Err(e) => tracing::error!("log.level not reloaded: {e}"),
            },
            None => tracing::warn!("log.level changed, but RUST_LOG is set and wins"),
        }
    }
    if !report.diff.needs_restart.is_empty() {
        tracing::warn!(
            keys = %report.diff.needs_restart.join(", "),
            "configuration keys changed that need a restart; their running values stay"
        );
    }
    if !report.diff.reloadable.is_empty() {
        tracing::info!(keys = %report.diff.reloadable.join(", "), "configuration keys reloaded");
    }
    match report.access_list {
        Ok(entries) => tracing::info!(entries, "access list reloaded"),
        Err(e) => tracing::error!("access list not reloaded, the old one stays: {e}"),
    }
    // TLS certificates, keys and peer credentials; open connections keep theirs.
    match report.tls {
        Ok(()) => tracing::info!("TLS certificates and peer credentials reloaded"),
        Err(e) => tracing::error!("TLS/credentials not reloaded, the old ones stay: {e}"),
    }
}

fn serve(args: ProfileArgs) -> Result<(), String> {
    let config = args.load()?;
    let set_level = init_logging(&config);
    if config.server.transparent_huge_pages {
        set_huge_pages(true);
    }
    // Register the handlers before any worker starts, so no signal is lost in between.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ])
    .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let server = Server::start(&config).map_err(|e| format!("{e:#}"))?;
    match ppsp_tracker::privileges::drop_privileges(&config.server.user) {
        Ok(Outcome::Switched { uid, gid }) => {
            tracing::info!(user = %config.server.user, uid, gid, "switched from root after binding")
        }
        Ok(Outcome::Unchanged { uid: 0 }) => tracing::warn!(
            "running as root: set server.user to an unprivileged account (the listeners are bound first)"
        ),
        Ok(_) => {}
        Err(e) => {
            server.shutdown();
            return Err(e.to_string());
        }
    }
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        ppstp = ?server.ppstp_addr(),
        admin = ?server.admin_addr(),
        ppstp_all = ?server.ppstp_addrs(),
        admin_all = ?server.admin_addrs(),
        bt_udp = ?server.bt_udp_addrs(),
        bt_http = ?server.bt_http_addrs(),
        "ppsp-tracker serving"
    );
    for signal in signals.forever() {
        if signal == signal_hook::consts::SIGHUP {
            reload(&server, &args, set_level.as_ref());
            continue;
        }
        tracing::info!(signal, "shutting down (a second signal exits at once)");
        break;
    }
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            std::process::exit(130);
        }
    });
    server.shutdown();
    Ok(())
}
