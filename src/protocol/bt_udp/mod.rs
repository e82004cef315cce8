//! The BitTorrent UDP tracker protocol (BEP 15), sans-IO, and the mapping of BitTorrent
//! announces and scrapes onto the engine that it shares with `protocol::bt_http`.
//!
//! - [`wire`]: the message layouts, typed decode and encode (requests and responses).
//! - [`connection_id`]: stateless connection ids (keyed hash of address and time slot).
//! - [`tracker`]: info-hash = swarm, announce = the engine's `RequestKind::Announce` (peer
//!   list and counts in one call), `stopped` = LEAVE, scrape counts from STAT_QUERY; the
//!   [`TrackerCore`] trait the front-ends call the engine through.
//! - [`front_end`]: [`UdpFrontEnd::handle`], one datagram in, at most one datagram out.
//!
//! The runtime owns the sockets: it draws a [`ConnectionIdSecret`] at start, builds one
//! [`UdpFrontEnd`], and calls `handle` for each received datagram with the current time.

pub mod connection_id;
pub mod front_end;
pub mod tracker;
pub mod wire;

pub use connection_id::{ConnectionIdSecret, ConnectionIds};
pub use front_end::{Dropped, Outcome, Reply, UdpError, UdpFrontEnd};
pub use tracker::{BtLimits, TrackerCore};
