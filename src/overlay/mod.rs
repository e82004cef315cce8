//! RELOAD (RFC 6940) overlay among tracker nodes: the wire codec, the Chord-RELOAD topology and
//! the storage layer.

pub mod chord;
pub mod config;
pub mod security;
pub mod sim;
pub mod storage;
pub mod transport;
pub mod wire;
