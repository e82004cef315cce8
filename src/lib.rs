//! ppsp-tracker: a sharded, thread-per-core tracker engine for PPSP (RFC 7846) peers, with a
//! RELOAD (RFC 6940) overlay that joins several tracker nodes into one logical tracker.
//!
//! The crate is layered so that everything with semantics is sans-IO:
//!
//! - [`engine`]: the swarm and peer-status tables, the RFC 7846 peer state machine, expiry and
//!   limits. Time is passed in; no sockets, no clocks.
//! - [`protocol`]: one module per wire format, pure functions from bytes to
//!   [`engine::Request`] and from [`engine::Response`] back to bytes.
//! - [`overlay`]: RELOAD wire codec, the Chord-RELOAD topology and the storage layer.
//! - [`federation`]: the tracker usage of the overlay (content registration and lookup, peer
//!   status), hooked in between the front-ends and the engine.
//! - [`runtime`]: the thread-per-core workers that own sockets and timers; it knows no protocol.
//! - [`config`] and [`metrics`]: profiles and counters.
//! - [`privileges`]: switching from root to `server.user` once the listeners are bound.
//! - [`x509`]: certificate checks shared by the TLS front-ends.

pub mod access_list;
pub mod config;
pub mod engine;
pub mod federation;
pub mod hex;
pub mod metrics;
pub mod overlay;
pub mod privileges;
pub mod protocol;
pub mod runtime;
pub mod server;
pub mod snapshot;
pub mod x509;

/// `a == b` for byte strings, usable where the comparison must run in a constant (slice `==`
/// is not `const`): the method table of [`protocol::http::Methods`] and the metric tables.
pub(crate) const fn const_bytes_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}
