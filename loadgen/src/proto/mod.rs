//! Request encoders and reply classifiers, one per protocol. The drivers know transports
//! (datagrams, HTTP connections); these modules know what goes in a request and how to tell a
//! success from an error. Plugging in another codec means implementing [`HttpEncoder`] or
//! replacing the functions of [`bt_udp`].

pub mod bt_http;
pub mod bt_udp;
pub mod http;
pub mod ppstp;

use std::fmt;

use serde::Serialize;

use crate::stats::Outcome;
use crate::workload::{Op, OpKind, Population};

/// The protocol a run speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// RFC 7846 PPSTP: HTTP/1.1 + JSON, keep-alive, pipelining.
    Ppstp,
    /// BEP 15 BitTorrent UDP tracker protocol.
    BtUdp,
    /// BEP 3 BitTorrent HTTP announce (and BEP 48 scrape).
    BtHttp,
}

impl Protocol {
    /// The request mix used when `--mix` is not given.
    pub fn default_mix(self) -> &'static str {
        match self {
            Protocol::Ppstp => "find=8,connect=1,keepalive=1",
            Protocol::BtUdp | Protocol::BtHttp => "announce=9,scrape=1",
        }
    }

    /// The request that registers one peer in its swarm (the populate phase).
    pub fn populate_kind(self) -> OpKind {
        match self {
            Protocol::Ppstp => OpKind::Connect,
            Protocol::BtUdp | Protocol::BtHttp => OpKind::Started,
        }
    }

    /// Whether the protocol can send `kind`.
    pub fn supports(self, kind: OpKind) -> bool {
        match self {
            Protocol::Ppstp => kind.is_ppstp(),
            Protocol::BtUdp | Protocol::BtHttp => matches!(
                kind,
                OpKind::Announce | OpKind::Started | OpKind::Stopped | OpKind::Scrape
            ),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Ppstp => "ppstp",
            Protocol::BtUdp => "bt-udp",
            Protocol::BtHttp => "bt-http",
        })
    }
}

/// Settings every encoder reads.
#[derive(Clone, Debug)]
pub struct EncodeOptions {
    /// Peers asked for per peer list (PPSTP `peer_count`, BitTorrent `numwant`).
    pub peers_wanted: u32,
    /// `Host` header value for HTTP protocols.
    pub host: String,
    /// Request path for HTTP protocols.
    pub path: String,
    /// Announce IPv6 peer addresses (PPSTP `peer_addr`).
    pub ipv6: bool,
    /// False: every request says `Connection: close` and gets a connection of its own (for
    /// servers that close after each reply without saying so, such as opentracker).
    pub keep_alive: bool,
    /// PPSTP: answer HTTP Digest challenges (RFC 7616) as each peer, username = its peer id,
    /// with this secret.
    pub digest_secret: Option<String>,
}

impl EncodeOptions {
    /// The header lines every HTTP request carries after the request line.
    pub fn common_headers(&self) -> String {
        if self.keep_alive {
            format!("Host: {}\r\n", self.host)
        } else {
            format!("Host: {}\r\nConnection: close\r\n", self.host)
        }
    }
}

/// Builds complete HTTP/1.1 requests for one protocol and classifies its replies.
pub trait HttpEncoder: Send {
    /// Appends one complete HTTP request for `op` to `out`.
    fn encode(&mut self, op: &Op, pop: &Population, out: &mut Vec<u8>);
    /// Classifies a complete reply to a request of kind `kind`.
    fn classify(&self, kind: OpKind, status: u16, body: &[u8]) -> Outcome;
    /// How many peers a successful reply lists, when it carries a peer list.
    fn peers_listed(&self, kind: OpKind, body: &[u8]) -> Option<usize>;
    /// A 401 reply to `op` carried this `WWW-Authenticate` value: true when the encoder now
    /// holds credentials for it and `op` should be sent again (once).
    fn on_challenge(&mut self, op: &Op, challenge: &[u8]) -> bool {
        let _ = (op, challenge);
        false
    }
}

/// The HTTP encoder for `protocol`, or `None` for datagram protocols.
pub fn http_encoder(protocol: Protocol, opts: EncodeOptions) -> Option<Box<dyn HttpEncoder>> {
    match protocol {
        Protocol::Ppstp => Some(Box::new(ppstp::PpstpEncoder::new(opts))),
        Protocol::BtHttp => Some(Box::new(bt_http::BtHttpEncoder::new(opts))),
        Protocol::BtUdp => None,
    }
}
