//! The `ppsp-tracker` binary: `serve` (the default), `print-config` and `check-config`.

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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ppsp-tracker: error: {e}");
            ExitCode::FAILURE
        }
    }
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
