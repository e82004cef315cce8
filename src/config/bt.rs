//! The BitTorrent sections of the configuration: `[bt_udp]` (BEP 15) and `[bt_http]` (BEP 3,
//! 23, 7, 48), each with a listen list and the announce limits shared by both protocols'
//! codecs ([`BtLimits`]).
//!
//! The announce interval follows the engine's track timer unless set: an `announce_interval_secs`
//! of 0 (the default) means three quarters of `engine.track_timer_secs`
//! ([`BtLimits::for_track_timer`]), so that a client announcing on schedule never expires.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{check, parse_addr, Config, ConfigError};
use crate::protocol::bt_udp::BtLimits;

/// A listen list, or one address as a plain string (`--set bt_udp.listen=127.0.0.1:6969`).
pub(super) fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(one) => vec![one],
        OneOrMany::Many(many) => many,
    })
}

/// `BtLimits` as written in a profile: intervals 0 = derived from the track timer.
fn configured_limits() -> BtLimits {
    BtLimits {
        announce_interval_secs: 0,
        min_announce_interval_secs: 0,
        ..BtLimits::default()
    }
}

/// `[bt_udp]`: the BitTorrent UDP tracker (BEP 15).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BtUdpConfig {
    pub enabled: bool,
    /// Addresses to listen on, `IP:PORT` each (port 0 picks a free one). IPv6 sockets are
    /// IPv6-only, so list `0.0.0.0:6969` and `[::]:6969` for both families. A single string
    /// is accepted for one address.
    #[serde(deserialize_with = "one_or_many")]
    pub listen: Vec<String>,
    /// Datagrams received per `recvmmsg` call and answered per `sendmmsg` call (1..=1024).
    pub batch_size: usize,
    pub limits: BtLimits,
}

impl Default for BtUdpConfig {
    fn default() -> Self {
        BtUdpConfig {
            enabled: true,
            listen: vec!["127.0.0.1:6969".to_owned()],
            batch_size: 64,
            limits: configured_limits(),
        }
    }
}

/// `[bt_http]`: the BitTorrent HTTP tracker (`GET /announce`, `GET /scrape`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BtHttpConfig {
    pub enabled: bool,
    /// Addresses to listen on, `IP:PORT` each (or a single string).
    #[serde(deserialize_with = "one_or_many")]
    pub listen: Vec<String>,
    /// Largest request head (request line + headers); a larger one is answered 431.
    pub max_head_bytes: usize,
    pub max_headers: usize,
    /// Open connections per worker.
    pub max_connections: usize,
    /// A connection without traffic for this long is closed, seconds.
    pub idle_timeout_secs: u64,
    /// Unsent answer bytes per connection above which the worker stops reading from it.
    pub max_pending_output_bytes: usize,
    pub limits: BtLimits,
    /// `[bt_http.tls]`: announces over https.
    pub tls: super::TlsConfig,
}

impl Default for BtHttpConfig {
    fn default() -> Self {
        BtHttpConfig {
            enabled: true,
            listen: vec!["127.0.0.1:6969".to_owned()],
            max_head_bytes: 8192,
            max_headers: 32,
            max_connections: 10_000,
            idle_timeout_secs: 60,
            max_pending_output_bytes: 256 * 1024,
            limits: configured_limits(),
            tls: super::TlsConfig::default(),
        }
    }
}

impl Config {
    /// The BitTorrent sections' checks (called by [`Config::validate`]).
    pub(super) fn validate_bt(&self) -> Result<(), ConfigError> {
        let track = self.engine.track_timer_secs;
        for (section, enabled, listen, limits) in [
            (
                "bt_udp",
                self.bt_udp.enabled,
                &self.bt_udp.listen,
                &self.bt_udp.limits,
            ),
            (
                "bt_http",
                self.bt_http.enabled,
                &self.bt_http.listen,
                &self.bt_http.limits,
            ),
        ] {
            for addr in listen {
                parse_addr(&format!("{section}.listen"), addr)?;
            }
            if enabled && listen.is_empty() {
                return Err(ConfigError::new(format!(
                    "{section}.listen must name at least one address when {section}.enabled"
                )));
            }
            let l = limits;
            if l.announce_interval_secs != 0 && u64::from(l.announce_interval_secs) >= track {
                return Err(ConfigError::new(format!(
                    "{section}.limits.announce_interval_secs must be below engine.track_timer_secs \
                     ({track}), or 0 for three quarters of it"
                )));
            }
            check(
                l.min_announce_interval_secs <= l.announce_interval_secs
                    || l.announce_interval_secs == 0,
                &format!(
                    "{section}.limits.min_announce_interval_secs must not exceed announce_interval_secs"
                ),
            )?;
            check(
                l.default_num_want <= l.max_num_want,
                &format!("{section}.limits.default_num_want must not exceed max_num_want"),
            )?;
            check(
                (1..=10_000).contains(&l.max_scrape_hashes),
                &format!("{section}.limits.max_scrape_hashes must be 1..=10000"),
            )?;
        }
        check(
            (1..=1024).contains(&self.bt_udp.batch_size),
            "bt_udp.batch_size must be 1..=1024",
        )?;
        let h = &self.bt_http;
        check(
            (256..=1024 * 1024).contains(&h.max_head_bytes),
            "bt_http.max_head_bytes must be 256..=1048576",
        )?;
        // Every advertised maximum must fit the limits that carry it: a scrape of
        // `max_scrape_hashes` info-hashes, each fully percent-encoded, in the HTTP head limit,
        // and in one UDP receive buffer.
        let needed = crate::protocol::bt_http::scrape_head_bytes(h.limits.max_scrape_hashes);
        if h.enabled && h.max_head_bytes < needed {
            return Err(ConfigError::new(format!(
                "bt_http.max_head_bytes ({}) must hold a scrape of bt_http.limits.max_scrape_hashes \
                 ({}) percent-encoded info-hashes: at least {needed}",
                h.max_head_bytes, h.limits.max_scrape_hashes
            )));
        }
        let udp_scrape = crate::protocol::bt_udp::wire::scrape_request_bytes(
            self.bt_udp.limits.max_scrape_hashes,
        );
        if self.bt_udp.enabled && udp_scrape > crate::runtime::MAX_DATAGRAM_BYTES {
            return Err(ConfigError::new(format!(
                "bt_udp.limits.max_scrape_hashes ({}) makes a {udp_scrape}-byte scrape, over the \
                 {}-byte datagram buffer",
                self.bt_udp.limits.max_scrape_hashes,
                crate::runtime::MAX_DATAGRAM_BYTES
            )));
        }
        // An announce answer of `max_num_want` peers (IPv6, the larger entry) must fit one UDP
        // datagram, and the output a BitTorrent HTTP connection may have pending.
        let udp = &self.bt_udp.limits;
        let udp_answer =
            crate::protocol::bt_udp::wire::announce_response_bytes(udp.max_num_want as usize);
        if self.bt_udp.enabled && udp_answer > crate::protocol::bt_udp::wire::MAX_UDP_PAYLOAD {
            return Err(ConfigError::new(format!(
                "bt_udp.limits.max_num_want ({}) makes a {udp_answer}-byte announce answer, over \
                 the {}-byte UDP payload",
                udp.max_num_want,
                crate::protocol::bt_udp::wire::MAX_UDP_PAYLOAD
            )));
        }
        let http_answer = crate::protocol::bt_http::announce_answer_bytes(h.limits.max_num_want);
        if h.enabled && http_answer > h.max_pending_output_bytes {
            return Err(ConfigError::new(format!(
                "bt_http.limits.max_num_want ({}) makes an announce answer of up to {http_answer} \
                 bytes, over bt_http.max_pending_output_bytes ({})",
                h.limits.max_num_want, h.max_pending_output_bytes
            )));
        }
        check(
            (1..=1024).contains(&h.max_headers),
            "bt_http.max_headers must be 1..=1024",
        )?;
        check(
            (1..=10_000_000).contains(&h.max_connections),
            "bt_http.max_connections must be 1..=10000000",
        )?;
        check(
            (1..=86_400 * 7).contains(&h.idle_timeout_secs),
            "bt_http.idle_timeout_secs must be 1..=604800",
        )?;
        check(
            h.max_pending_output_bytes >= 4096,
            "bt_http.max_pending_output_bytes must be at least 4096",
        )?;
        Ok(())
    }

    /// `bt_udp.listen` as addresses (validated by [`Config::validate`]).
    pub fn bt_udp_addrs(&self) -> Result<Vec<SocketAddr>, ConfigError> {
        self.bt_udp
            .listen
            .iter()
            .map(|a| parse_addr("bt_udp.listen", a))
            .collect()
    }

    /// `bt_http.listen` as addresses (validated by [`Config::validate`]).
    pub fn bt_http_addrs(&self) -> Result<Vec<SocketAddr>, ConfigError> {
        self.bt_http
            .listen
            .iter()
            .map(|a| parse_addr("bt_http.listen", a))
            .collect()
    }

    /// `limits` with the intervals filled in: 0 means derived from `engine.track_timer_secs`.
    pub fn effective_bt_limits(&self, limits: &BtLimits) -> BtLimits {
        let derived = BtLimits::for_track_timer(self.engine.track_timer_secs);
        let mut l = *limits;
        if l.announce_interval_secs == 0 {
            l.announce_interval_secs = derived.announce_interval_secs;
            if l.min_announce_interval_secs == 0 {
                l.min_announce_interval_secs = derived.min_announce_interval_secs;
            }
        }
        l.min_announce_interval_secs = l.min_announce_interval_secs.min(l.announce_interval_secs);
        l
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_listen_on_6969_and_derive_the_interval_from_the_track_timer() {
        let mut c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.bt_udp_addrs().unwrap()[0].port(), 6969);
        assert_eq!(c.bt_http_addrs().unwrap()[0].port(), 6969);
        let l = c.effective_bt_limits(&c.bt_udp.limits);
        assert_eq!(l.announce_interval_secs, 90);
        c.engine.track_timer_secs = 40;
        let l = c.effective_bt_limits(&c.bt_udp.limits);
        assert_eq!(
            (l.announce_interval_secs, l.min_announce_interval_secs),
            (30, 15)
        );
    }

    #[test]
    fn advertised_scrape_maximums_must_fit_the_limits_that_carry_them() {
        let c = Config::default();
        assert!(
            c.bt_http.max_head_bytes
                >= crate::protocol::bt_http::scrape_head_bytes(c.bt_http.limits.max_scrape_hashes)
        );
        let e = Config::load(None, &["bt_http.max_head_bytes=4096".to_owned()]).unwrap_err();
        assert!(
            e.to_string().contains("bt_http.max_head_bytes (4096)")
                && e.to_string().contains("6278"),
            "{e}"
        );
        Config::load(
            None,
            &[
                "bt_http.max_head_bytes=4096".to_owned(),
                "bt_http.limits.max_scrape_hashes=40".to_owned(),
            ],
        )
        .unwrap();
        let e =
            Config::load(None, &["bt_udp.limits.max_scrape_hashes=300".to_owned()]).unwrap_err();
        assert!(
            e.to_string().contains("bt_udp.limits.max_scrape_hashes"),
            "{e}"
        );
    }

    #[test]
    fn advertised_peer_counts_must_fit_a_datagram_and_the_pending_output() {
        Config::load(None, &["bt_udp.limits.max_num_want=3638".to_owned()]).unwrap();
        let e = Config::load(None, &["bt_udp.limits.max_num_want=3639".to_owned()]).unwrap_err();
        assert!(
            e.to_string().contains("bt_udp.limits.max_num_want (3639)"),
            "{e}"
        );
        let e = Config::load(None, &["bt_http.limits.max_num_want=100000".to_owned()]).unwrap_err();
        assert!(
            e.to_string()
                .contains("bt_http.limits.max_num_want (100000)"),
            "{e}"
        );
        Config::load(
            None,
            &[
                "bt_http.limits.max_num_want=100000".to_owned(),
                "bt_http.max_pending_output_bytes=4194304".to_owned(),
            ],
        )
        .unwrap();
    }

    #[test]
    fn listen_lists_limits_and_typos_are_checked() {
        let c = Config::load(
            None,
            &[r#"bt_udp.listen=["127.0.0.1:0", "[::1]:0"]"#.to_owned()],
        )
        .unwrap();
        assert_eq!(c.bt_udp_addrs().unwrap().len(), 2);
        let c = Config::load(None, &["bt_udp.listen=127.0.0.1:7000".to_owned()]).unwrap();
        assert_eq!(c.bt_udp.listen, vec!["127.0.0.1:7000".to_owned()]);
        let e = Config::load(None, &["bt_udp.listen=[\"nowhere\"]".to_owned()]).unwrap_err();
        assert!(e.to_string().contains("bt_udp.listen"), "{e}");
        let e = Config::load(
            None,
            &["bt_http.limits.announce_interval_secs=500".to_owned()],
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("bt_http.limits.announce_interval_secs"),
            "{e}"
        );
        let e = Config::load(None, &["bt_udp.limits.max_num_wnat=5".to_owned()]).unwrap_err();
        assert!(e.to_string().contains("max_num_wnat"), "{e}");
        let c = Config::load(
            None,
            &[
                "bt_http.limits.announce_interval_secs=60".to_owned(),
                "bt_http.limits.min_announce_interval_secs=10".to_owned(),
            ],
        )
        .unwrap();
        let l = c.effective_bt_limits(&c.bt_http.limits);
        assert_eq!(
            (l.announce_interval_secs, l.min_announce_interval_secs),
            (60, 10)
        );
    }
}
