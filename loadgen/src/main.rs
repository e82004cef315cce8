//! `ppsp-loadgen`: command-line entry point. `run` drives a workload against a tracker;
//! `floor` starts the stateless BEP 15 floor responder; `table` compares reports.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand};
use mimalloc::MiMalloc;
use ppsp_loadgen::run::{self, RunArgs};

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

#[derive(Parser)]
#[command(
    name = "ppsp-loadgen",
    version,
    about = "Load generator for ppsp-tracker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a workload against a tracker and report throughput, errors and latency.
    Run(Box<RunArgs>),
    /// Answer BEP 15 connect/announce/scrape with fixed minimal replies (no state).
    Floor {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:6969")]
        listen: SocketAddr,
        /// Worker threads (SO_REUSEPORT sockets).
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Exit after this many seconds (default: run until killed).
        #[arg(long)]
        duration: Option<f64>,
    },
    /// Compare JSON reports of the same workload against different servers, with ratios.
    Table {
        /// Label of the report the ratios are relative to (default: the first).
        #[arg(long)]
        baseline: Option<String>,
        /// JSON reports written by `run --json`.
        #[arg(required = true)]
        reports: Vec<std::path::PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            let out = run::run(&args)?;
            if args.dry_run {
                println!("{}", ppsp_loadgen::report::population_line(&out.report));
            } else {
                print!("{}", ppsp_loadgen::report::human(&out.report));
            }
            run::write_outputs(&args, &out)?;
        }
        Command::Floor {
            listen,
            threads,
            duration,
        } => {
            let d = duration
                .filter(|d| d.is_finite() && *d >= 0.0)
                .map(Duration::from_secs_f64);
            ppsp_loadgen::floor::run_foreground(listen, threads, d)?;
        }
        Command::Table { baseline, reports } => {
            print!(
                "{}",
                ppsp_loadgen::compare::table_from_files(&reports, baseline.as_deref())?
            );
        }
    }
    Ok(())
}
