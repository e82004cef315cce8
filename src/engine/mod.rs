//! The tracker engine: swarm and peer-status tables, the RFC 7846 peer state machine, peer
//! selection, expiry and limits.
//!
//! The engine is sans-IO. Front-ends decode bytes into a [`Request`], call [`Engine::handle`]
//! with the current [`Time`], and encode the returned [`Response`]. The runtime calls
//! [`Engine::expire`] periodically with a work budget so that expiry never stalls requests.
//! Nothing here knows about sockets, JSON or HTTP.

mod config;
mod types;

pub use config::EngineConfig;
pub use types::*;

/// Sizes of the tables, for metrics and status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableCounts {
    pub peers: usize,
    pub swarms: usize,
    /// Sum over swarms of their member counts.
    pub memberships: usize,
    pub seeders: usize,
    pub leechers: usize,
}

/// What one expiry step did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExpiryReport {
    /// Peers looked at in this step.
    pub examined: usize,
    /// Registrations deleted because their init or track timer ran out.
    pub expired: usize,
}

/// The engine: shared by every worker thread (`Send + Sync`).
///
/// PLACEHOLDER: the real tables replace this body; the signatures are the contract.
pub struct Engine {
    _config: EngineConfig,
}

impl Engine {
    pub fn new(config: &EngineConfig) -> Self {
        Engine {
            _config: config.clone(),
        }
    }

    /// Applies one request at time `now` and returns the answer. Never panics on any input.
    pub fn handle(&self, _request: &Request, _now: Time) -> Response {
        Response::Err(ErrorCode::InternalError)
    }

    /// Examines at most `budget` registrations and deletes those whose timer ran out by `now`.
    pub fn expire(&self, _now: Time, _budget: usize) -> ExpiryReport {
        ExpiryReport::default()
    }

    /// Current table sizes.
    pub fn counts(&self) -> TableCounts {
        TableCounts::default()
    }
}
