//! The BitTorrent HTTP tracker protocol, sans-IO: BEP 3 announce with BEP 23 compact peer
//! lists and BEP 7 `peers6`, and BEP 48 scrape, answered in bencoding.
//!
//! - [`query`]: strict parsing of announce and scrape query strings.
//! - [`front_end`]: [`HttpFrontEnd::handle_get`], called by the shared HTTP layer after it has
//!   framed a `GET` request; it writes the bencoded body and says the status.
//!
//! The mapping onto the engine (info-hash = swarm, peers keyed by source IP and announced port,
//! announce = the engine's protocol-neutral announce, `stopped` = LEAVE) is shared with the UDP tracker and lives in
//! `protocol::bt_udp::tracker`.

pub mod front_end;
pub mod query;

pub use front_end::{
    announce_answer_bytes, HttpAnswer, HttpFailure, HttpFrontEnd, HttpOutcome, CONTENT_TYPE,
};
pub use query::{
    encode_announce, parse_announce, parse_scrape, scrape_head_bytes, AnnounceQuery, Field,
    QueryError,
};
