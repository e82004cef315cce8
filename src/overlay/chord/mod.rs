//! The Chord-RELOAD topology plug-in (RFC 6940 §10) as a sans-IO state machine.
//!
//! - [`id`]: 128-bit ring identifiers and interval arithmetic, `resource_id(name)`.
//! - [`message`]: the typed messages the topology routes (forwarding header fields that matter
//!   for routing, Chord bodies, storage bodies, error codes).
//! - [`table`]: neighbor and finger tables and greedy next-hop choice.
//! - [`node`]: one peer: routing, joining, updates, failure handling, replication.

pub mod codec;
pub mod id;
pub mod message;
pub mod node;
pub mod table;

pub use id::{resource_id, NodeId, ResourceId};
pub use message::{Destination, ErrorCode, Message};
pub use node::{
    Action, ChordConfig, ChordNode, Event, LocalOutcome, LocalRequest, OpId, RelayRoute, Timer,
};
