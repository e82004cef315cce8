//! The tracker engine: swarm and peer-status tables, the RFC 7846 peer state machine, peer
//! selection, expiry and limits.
//!
//! The engine is sans-IO. Front-ends decode bytes into a [`Request`], call [`Engine::handle`]
//! with the current [`Time`], and encode the returned [`Response`]. The runtime calls
//! [`Engine::expire`] periodically with a work budget so that expiry never stalls requests.
//! Nothing here knows about sockets, JSON or HTTP.

mod types;

pub use types::*;
