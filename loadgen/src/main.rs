//! `ppsp-loadgen`: the bundled load generator for ppsp-tracker.
//!
//! The workload model, protocols and reports arrive with the load-generator work; until then the
//! binary only states that it has no workloads yet and exits with a failure status, so no script
//! mistakes it for a real run.

fn main() {
    eprintln!("ppsp-loadgen: no workloads are implemented yet");
    std::process::exit(2);
}
