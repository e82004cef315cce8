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
    let cli = Cli::parse();
    let result = match cli
        .command
        .unwrap_or(Command::Serve(ProfileArgs::default()))
    {
        Command::Serve(args) => args.load().and_then(serve),
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

fn init_logging(config: &Config) {
    // RUST_LOG, when set, wins over `[log] level`.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
}

fn serve(config: Config) -> Result<(), String> {
    init_logging(&config);
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
        bt_udp = ?server.bt_udp_addrs(),
        bt_http = ?server.bt_http_addrs(),
        "ppsp-tracker serving"
    );
    for signal in signals.forever() {
        if signal == signal_hook::consts::SIGHUP {
            // SIGHUP re-reads the access list; a bad file keeps the list in force.
            match server.reload_access_list() {
                Ok(entries) => tracing::info!(entries, "access list reloaded"),
                Err(e) => tracing::error!("access list not reloaded, the old one stays: {e}"),
            }
            // And the TLS certificates, keys and peer credentials; open connections stay.
            match server.reload_tls() {
                Ok(()) => tracing::info!("TLS certificates and peer credentials reloaded"),
                Err(e) => tracing::error!("TLS/credentials not reloaded, the old ones stay: {e}"),
            }
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
