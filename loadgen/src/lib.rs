//! `ppsp-loadgen`: the load generator bundled with ppsp-tracker.
//!
//! It simulates a population of peers spread over swarms ([`workload`]), speaks PPSTP, BEP 15
//! UDP or BitTorrent HTTP to a tracker ([`proto`], [`driver`]), measures throughput, errors and
//! latency without coordinated omission ([`stats`]), samples the server's CPU and memory
//! ([`procstat`]) and writes human, JSON, `.hgrm` and SVG reports ([`report`]). [`floor`] is a
//! stateless BEP 15 responder that serves as the yardstick for the kernel's UDP path.

pub mod compare;
pub mod driver;
pub mod floor;
pub mod procstat;
pub mod proto;
pub mod report;
pub mod run;
pub mod stats;
pub mod workload;
